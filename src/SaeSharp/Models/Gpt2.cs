using SaeSharp.Hooks;
using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;

namespace SaeSharp.Models;

/// <summary>GPT-2 settings read from a Hugging Face config.json (HF defaults for missing keys).</summary>
internal sealed record Gpt2Settings(int NEmbd, int NLayer, int NHead, int NInner, int NPositions, int VocabSize,
    string Activation, double Eps, bool ScaleAttnWeights, bool ScaleByInverseLayerIdx)
{
    /// <summary>Reads the settings; with <paramref name="weights"/>, checks every declared size against the tensors
    /// present before anything is allocated.</summary>
    public static Gpt2Settings From(JsonConfig c, Checkpoint? weights = null)
    {
        int nEmbd = c.Int("n_embd", 768);
        var s = new Gpt2Settings(
            nEmbd, c.Int("n_layer", 12), c.Int("n_head", 12),
            c.Root["n_inner"] is null ? 4 * nEmbd : c.Int("n_inner"),
            c.Int("n_positions", c.Has("n_ctx") ? c.Int("n_ctx") : 1024),
            c.Int("vocab_size", 50257),
            c.String("activation_function") ?? "gelu_new",
            c.Double("layer_norm_epsilon", 1e-5),
            c.Bool("scale_attn_weights", true),
            c.Bool("scale_attn_by_inverse_layer_idx", false));
        if (s.NEmbd <= 0 || s.NLayer < 0 || s.NHead <= 0 || s.NEmbd % s.NHead != 0)
            throw new SaeSharpException($"{c.Path}: n_embd={s.NEmbd} must be a positive multiple of n_head={s.NHead}");
        if (weights is not null)
        {
            weights.ExpectLayers(c.Path, "n_layer", s.NLayer);
            weights.ExpectShape(c.Path, "transformer", "wte.weight", [s.VocabSize, s.NEmbd], $"vocab_size={s.VocabSize}, n_embd={s.NEmbd}");
            weights.ExpectShape(c.Path, "transformer", "wpe.weight", [s.NPositions, s.NEmbd], $"n_positions={s.NPositions}, n_embd={s.NEmbd}");
            if (s.NLayer > 0)
                weights.ExpectShape(c.Path, "transformer", "h.0.mlp.c_fc.weight", [s.NEmbd, s.NInner], $"n_embd={s.NEmbd}, n_inner={s.NInner}");
        }
        return s;
    }
}

/// <summary>HF <c>GPT2Attention</c> of one layer: fused <c>c_attn</c> (q, k, v), <c>c_proj</c>.</summary>
internal sealed class Gpt2Attention : nn.Module<Tensor, ForwardContext, Tensor>
{
    private readonly Conv1D c_attn;
    private readonly Conv1D c_proj;
    private readonly int _layer, _nHead;
    private readonly double _scale;
    private readonly BlockHookNames _names;

    public Gpt2Attention(Gpt2Settings s, int layer, BlockHookNames names, ScalarType dtype) : base("attn")
    {
        (_layer, _nHead, _names) = (layer, s.NHead, names);
        _scale = s.ScaleAttnWeights ? 1.0 / Math.Sqrt(s.NEmbd / s.NHead) : 1.0;
        if (s.ScaleByInverseLayerIdx) _scale /= layer + 1;
        c_attn = new Conv1D(s.NEmbd, 3 * s.NEmbd, dtype);
        c_proj = new Conv1D(s.NEmbd, s.NEmbd, dtype);
        RegisterComponents();
    }

    public override Tensor forward(Tensor x, ForwardContext ctx)
    {
        long b = x.shape[0], s = x.shape[1], d = x.shape[2];
        Tensor q, k, v;
        if (ctx.SplitInputs is { } split)
        {
            // Each head's own input through its columns of c_attn's q, k and v thirds.
            var (w, bias) = c_attn.InOut;
            Tensor Part(Tensor input, int i) => SplitAttentionInputs.Project(input, w.narrow(1, i * d, d), bias?.narrow(0, i * d, d));
            (q, k, v) = (Part(split.Q, 0), Part(split.K, 1), Part(split.V, 2));
        }
        else
        {
            var qkv = c_attn.forward(x).split(d, 2);
            (q, k, v) = (qkv[0].view(b, s, _nHead, -1), qkv[1].view(b, s, _nHead, -1), qkv[2].view(b, s, _nHead, -1));
        }
        var z = AttentionCore.AttendHeads(q, k, v, _layer, _scale, ctx, _names);
        return AttentionCore.Project(z, _nHead, c_proj.InOut, c_proj.forward, ctx, _names);
    }
}

/// <summary>HF <c>GPT2MLP</c>: <c>c_fc</c>, the activation, <c>c_proj</c>.</summary>
internal sealed class Gpt2Mlp : nn.Module<Tensor, ForwardContext, Tensor>
{
    private readonly Conv1D c_fc;
    private readonly Conv1D c_proj;
    private readonly Func<Tensor, Tensor> _act;
    private readonly BlockHookNames _names;

    public Gpt2Mlp(Gpt2Settings s, Func<Tensor, Tensor> act, BlockHookNames names, ScalarType dtype) : base("mlp")
    {
        (_act, _names) = (act, names);
        c_fc = new Conv1D(s.NEmbd, s.NInner, dtype);
        c_proj = new Conv1D(s.NInner, s.NEmbd, dtype);
        RegisterComponents();
    }

    public override Tensor forward(Tensor x, ForwardContext ctx) => ResidualBlock.Mlp(x, ctx, _names, c_fc, _act, c_proj);
}

/// <summary>HF <c>GPT2Block</c> <c>h.{layer}</c>: ln_1, attn, ln_2, mlp in sequence.</summary>
internal sealed class Gpt2Block : nn.Module<Tensor, ForwardContext, Tensor>
{
    private readonly LayerNorm ln_1;
    private readonly Gpt2Attention attn;
    private readonly LayerNorm ln_2;
    private readonly Gpt2Mlp mlp;
    private readonly BlockHookNames _names;
    private readonly SplitAttentionInputs.Heads _heads;

    public Gpt2Block(Gpt2Settings s, int layer, Func<Tensor, Tensor> act, BlockHookNames names, ScalarType dtype) : base("block")
    {
        (_names, _heads) = (names, new(s.NHead, s.NHead));
        ln_1 = new LayerNorm(s.NEmbd, s.Eps, dtype);
        attn = new Gpt2Attention(s, layer, names, dtype);
        ln_2 = new LayerNorm(s.NEmbd, s.Eps, dtype);
        mlp = new Gpt2Mlp(s, act, names, dtype);
        RegisterComponents();
    }

    public override Tensor forward(Tensor resid, ForwardContext ctx) =>
        ResidualBlock.Sequential(resid, ctx, _names, _heads, ln_1, x => attn.forward(x, ctx), ln_2, x => mlp.forward(x, ctx));
}

/// <summary>The <c>transformer</c> submodule of HF GPT2LMHeadModel: wte, wpe, h.{i}, ln_f.</summary>
internal sealed class Gpt2Core : nn.Module
{
    public readonly Embedding wte;
    public readonly Embedding wpe;
    public readonly ModuleList<Gpt2Block> h;
    public readonly LayerNorm ln_f;

    public Gpt2Core(Gpt2Settings s, Func<Tensor, Tensor> act, HookPoints hooks, ScalarType dtype) : base("transformer")
    {
        wte = new Embedding(s.VocabSize, s.NEmbd, dtype);
        wpe = new Embedding(s.NPositions, s.NEmbd, dtype);
        h = new ModuleList<Gpt2Block>(Enumerable.Range(0, s.NLayer).Select(i => new Gpt2Block(s, i, act, hooks.Blocks[i], dtype)).ToArray());
        ln_f = new LayerNorm(s.NEmbd, s.Eps, dtype);
        RegisterComponents();
    }
}

/// <summary>
/// GPT-2 (HF <c>GPT2LMHeadModel</c>) with TransformerLens hooks. State-dict keys are the HF ones
/// (<c>transformer.h.0.attn.c_attn.weight</c>, Conv1D [in, out]); the unembedding is tied to <c>transformer.wte</c>.
/// </summary>
public sealed class Gpt2Model : HookedTransformer
{
    private readonly Gpt2Core transformer;

    internal Gpt2Model(Gpt2Settings s, string modelName, string configPath, ScalarType dtype)
        : base("GPT2LMHeadModel", new TransformerConfig
        {
            ModelName = modelName, Architecture = "gpt2", NLayers = s.NLayer, DModel = s.NEmbd, NHeads = s.NHead,
            DMlp = s.NInner, DVocab = s.VocabSize, NCtx = s.NPositions, Activation = s.Activation, LayerNormEps = s.Eps, Dtype = dtype,
        }, new HookPoints(s.NLayer, hasPosEmbed: true, parallelAttnMlp: false, rotary: false, HfModuleNames.Gpt2))
    {
        transformer = new Gpt2Core(s, ActivationFunctions.Get(s.Activation, configPath), HookPoints, dtype);
        RegisterComponents();
    }

    private protected override Tensor Embed(Tensor tokens, ForwardContext ctx)
    {
        var e = ctx.Hooks.Fire(HookPoints.Embed, transformer.wte.forward(tokens));
        var p = ctx.Hooks.Fire(HookPoints.PosEmbed, transformer.wpe.forward(ctx.Positions));
        return e.add(p, TorchScalars.One);
    }

    private protected override Tensor RunBlock(int layer, Tensor resid, ForwardContext ctx) => transformer.h[layer].forward(resid, ctx);

    private protected override Tensor FinalNorm(Tensor resid, ForwardContext ctx) =>
        ctx.Hooks.Fire(HookPoints.LnFinal, transformer.ln_f.Forward(resid, ctx.Hooks, HookPoints.LnFinalScale));

    private protected override Tensor UnembedNormalized(Tensor x) => matmul(x, transformer.wte.Weight.t());
}
