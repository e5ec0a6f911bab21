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

internal sealed class Gpt2Attention : nn.Module
{
    private readonly Conv1D c_attn;
    private readonly Conv1D c_proj;

    public Gpt2Attention(int d, ScalarType dtype) : base("attn")
    {
        c_attn = new Conv1D(d, 3 * d, dtype);
        c_proj = new Conv1D(d, d, dtype);
        RegisterComponents();
    }

    public Tensor Forward(Tensor x, int layer, int nHead, double scale, ForwardContext ctx, BlockHookNames names)
    {
        long b = x.shape[0], s = x.shape[1], d = x.shape[2];
        var qkv = c_attn.Forward(x).split(d, 2);
        var h = ctx.Hooks;
        var q = h.Fire(names.Q, qkv[0].view(b, s, nHead, -1));
        var k = h.Fire(names.K, qkv[1].view(b, s, nHead, -1));
        var v = h.Fire(names.V, qkv[2].view(b, s, nHead, -1));
        var z = AttentionCore.Attend(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2), layer, scale, ctx, names);
        return c_proj.Forward(z);
    }
}

internal sealed class Gpt2Mlp : nn.Module
{
    private readonly Conv1D c_fc;
    private readonly Conv1D c_proj;

    public Gpt2Mlp(int d, int inner, ScalarType dtype) : base("mlp")
    {
        c_fc = new Conv1D(d, inner, dtype);
        c_proj = new Conv1D(inner, d, dtype);
        RegisterComponents();
    }

    public Tensor Forward(Tensor x, Func<Tensor, Tensor> act, ForwardContext ctx, BlockHookNames names)
    {
        var pre = ctx.Hooks.Fire(names.MlpPre, c_fc.Forward(x));
        var post = ctx.Hooks.Fire(names.MlpPost, act(pre));
        return c_proj.Forward(post);
    }
}

internal sealed class Gpt2Block : nn.Module
{
    private readonly LayerNorm ln_1;
    private readonly Gpt2Attention attn;
    private readonly LayerNorm ln_2;
    private readonly Gpt2Mlp mlp;

    public Gpt2Block(Gpt2Settings s, ScalarType dtype) : base("block")
    {
        ln_1 = new LayerNorm(s.NEmbd, s.Eps, dtype);
        attn = new Gpt2Attention(s.NEmbd, dtype);
        ln_2 = new LayerNorm(s.NEmbd, s.Eps, dtype);
        mlp = new Gpt2Mlp(s.NEmbd, s.NInner, dtype);
        RegisterComponents();
    }

    public Tensor Forward(Tensor resid, int layer, Gpt2Settings s, double scale, Func<Tensor, Tensor> act, ForwardContext ctx, BlockHookNames n)
    {
        var h = ctx.Hooks;
        resid = h.Fire(n.ResidPre, resid);
        var x1 = h.Fire(n.Ln1, ln_1.Forward(resid));
        var attnOut = h.Fire(n.AttnOut, attn.Forward(x1, layer, s.NHead, scale, ctx, n));
        var mid = h.Fire(n.ResidMid, resid + attnOut);
        var x2 = h.Fire(n.Ln2, ln_2.Forward(mid));
        var mlpOut = h.Fire(n.MlpOut, mlp.Forward(x2, act, ctx, n));
        return h.Fire(n.ResidPost, mid + mlpOut);
    }
}

/// <summary>The <c>transformer</c> submodule of HF GPT2LMHeadModel: wte, wpe, h.{i}, ln_f.</summary>
internal sealed class Gpt2Core : nn.Module
{
    public readonly Embedding wte;
    public readonly Embedding wpe;
    public readonly ModuleList<Gpt2Block> h;
    public readonly LayerNorm ln_f;

    public Gpt2Core(Gpt2Settings s, ScalarType dtype) : base("transformer")
    {
        wte = new Embedding(s.VocabSize, s.NEmbd, dtype);
        wpe = new Embedding(s.NPositions, s.NEmbd, dtype);
        h = new ModuleList<Gpt2Block>(Enumerable.Range(0, s.NLayer).Select(_ => new Gpt2Block(s, dtype)).ToArray());
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
    private readonly Gpt2Settings _s;
    private readonly Func<Tensor, Tensor> _act;

    internal Gpt2Model(Gpt2Settings s, string modelName, string configPath, ScalarType dtype)
        : base("GPT2LMHeadModel", new TransformerConfig
        {
            ModelName = modelName, Architecture = "gpt2", NLayers = s.NLayer, DModel = s.NEmbd, NHeads = s.NHead,
            DMlp = s.NInner, DVocab = s.VocabSize, NCtx = s.NPositions, Activation = s.Activation, LayerNormEps = s.Eps, Dtype = dtype,
        }, new HookPoints(s.NLayer, hasPosEmbed: true, parallelAttnMlp: false, rotary: false, HfModuleNames.Gpt2))
    {
        _s = s;
        _act = ActivationFunctions.Get(s.Activation, configPath);
        transformer = new Gpt2Core(s, dtype);
        RegisterComponents();
    }

    private protected override Tensor Embed(Tensor tokens, ForwardContext ctx)
    {
        var e = ctx.Hooks.Fire(HookPoints.Embed, transformer.wte.Forward(tokens));
        var p = ctx.Hooks.Fire(HookPoints.PosEmbed, transformer.wpe.Forward(ctx.Positions));
        return e + p;
    }

    private protected override Tensor RunBlock(int layer, Tensor resid, ForwardContext ctx)
    {
        double scale = _s.ScaleAttnWeights ? 1.0 / Math.Sqrt(_s.NEmbd / _s.NHead) : 1.0;
        if (_s.ScaleByInverseLayerIdx) scale /= layer + 1;
        return transformer.h[layer].Forward(resid, layer, _s, scale, _act, ctx, HookPoints.Blocks[layer]);
    }

    private protected override Tensor FinalNorm(Tensor resid, ForwardContext ctx) =>
        ctx.Hooks.Fire(HookPoints.LnFinal, transformer.ln_f.Forward(resid));

    private protected override Tensor UnembedNormalized(Tensor x) => matmul(x, transformer.wte.Weight.t());
}
