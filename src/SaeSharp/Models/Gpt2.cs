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
        weights?.ExpectGpt2Layout(c.Path, ("n_layer", s.NLayer), ("n_embd", s.NEmbd), ("n_positions", s.NPositions), ("n_inner", s.NInner),
            s.VocabSize, conv1d: true);
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

/// <summary>HF <c>GPT2MLP</c> (Conv1D layers) / <c>GPTNeoMLP</c> (nn.Linear): <c>c_fc</c>, the activation, <c>c_proj</c>.</summary>
internal sealed class Gpt2Mlp : nn.Module<Tensor, ForwardContext, Tensor>
{
    private readonly nn.Module<Tensor, Tensor> c_fc;
    private readonly nn.Module<Tensor, Tensor> c_proj;
    private readonly Func<Tensor, Tensor> _act;
    private readonly BlockHookNames _names;

    public Gpt2Mlp(nn.Module<Tensor, Tensor> cFc, nn.Module<Tensor, Tensor> cProj, Func<Tensor, Tensor> act, BlockHookNames names) : base("mlp")
    {
        (_act, _names) = (act, names);
        c_fc = cFc;
        c_proj = cProj;
        RegisterComponents();
    }

    public override Tensor forward(Tensor x, ForwardContext ctx) => ResidualBlock.Mlp(x, ctx, _names, c_fc, _act, c_proj);
}

/// <summary>HF <c>GPT2Block</c> / <c>GPTNeoBlock</c> <c>h.{layer}</c>: ln_1, attn, ln_2, mlp in sequence.</summary>
internal sealed class Gpt2Block : nn.Module<Tensor, ForwardContext, Tensor>
{
    private readonly LayerNorm ln_1;
    private readonly nn.Module<Tensor, ForwardContext, Tensor> attn;
    private readonly LayerNorm ln_2;
    private readonly nn.Module<Tensor, ForwardContext, Tensor> mlp;
    private readonly BlockHookNames _names;
    private readonly SplitAttentionInputs.Heads _heads;

    public Gpt2Block(int d, int nHead, double eps, nn.Module<Tensor, ForwardContext, Tensor> attn, nn.Module<Tensor, ForwardContext, Tensor> mlp,
        BlockHookNames names, ScalarType dtype) : base("block")
    {
        (_names, _heads) = (names, new(nHead, nHead));
        ln_1 = new LayerNorm(d, eps, dtype);
        this.attn = attn;
        ln_2 = new LayerNorm(d, eps, dtype);
        this.mlp = mlp;
        RegisterComponents();
    }

    public override Tensor forward(Tensor resid, ForwardContext ctx) =>
        ResidualBlock.Sequential(resid, ctx, _names, _heads, ln_1, x => attn.forward(x, ctx), ln_2, x => mlp.forward(x, ctx));
}

/// <summary>The <c>transformer</c> submodule of HF GPT2LMHeadModel and GPTNeoForCausalLM: wte, wpe, h.{i}, ln_f; the
/// embedding (token + learned position), final norm and tied unembedding of both.</summary>
internal sealed class Gpt2Core : nn.Module
{
    public readonly Embedding wte;
    public readonly Embedding wpe;
    public readonly ModuleList<Gpt2Block> h;
    public readonly LayerNorm ln_f;

    public Gpt2Core(int vocab, int positions, int d, double eps, IEnumerable<Gpt2Block> blocks, ScalarType dtype) : base("transformer")
    {
        wte = new Embedding(vocab, d, dtype);
        wpe = new Embedding(positions, d, dtype);
        h = new ModuleList<Gpt2Block>(blocks.ToArray());
        ln_f = new LayerNorm(d, eps, dtype);
        RegisterComponents();
    }

    public Tensor Embed(Tensor tokens, ForwardContext ctx)
    {
        var e = ctx.Hooks.Fire(HookPoints.Embed, wte.forward(tokens));
        var p = ctx.Hooks.Fire(HookPoints.PosEmbed, wpe.forward(ctx.Positions));
        return e.add(p, TorchScalars.One);
    }

    public Tensor FinalNorm(Tensor resid, ForwardContext ctx) => ctx.Hooks.Fire(HookPoints.LnFinal, ln_f.Forward(resid, ctx.Hooks, HookPoints.LnFinalScale));

    public Tensor Unembed(Tensor x) => matmul(x, wte.Weight.t());
}

/// <summary>
/// GPT-2 (HF <c>GPT2LMHeadModel</c>) with TransformerLens hooks. State-dict keys are the HF ones
/// (<c>transformer.h.0.attn.c_attn.weight</c>, Conv1D [in, out]); the unembedding is tied to <c>transformer.wte</c>.
/// GPT-Neo (HF <c>GPTNeoForCausalLM</c>, <see cref="TransformerConfig.Architecture"/> <c>gpt_neo</c>) is this model with
/// its own attention and nn.Linear MLP layers (see <see cref="GptNeo"/>).
/// </summary>
public sealed class Gpt2Model : HookedTransformer
{
    private readonly Gpt2Core transformer;
    private Linear? lm_head;

    internal Gpt2Model(Gpt2Settings s, string modelName, string configPath, ScalarType dtype)
        : this("GPT2LMHeadModel", new TransformerConfig
        {
            ModelName = modelName, Architecture = "gpt2", NLayers = s.NLayer, DModel = s.NEmbd, NHeads = s.NHead,
            DMlp = s.NInner, DVocab = s.VocabSize, NCtx = s.NPositions, Activation = s.Activation, LayerNormEps = s.Eps, Dtype = dtype,
        }, HfModuleNames.Gpt2, configPath, (i, names, act) => (new Gpt2Attention(s, i, names, dtype),
            new Gpt2Mlp(new Conv1D(s.NEmbd, s.NInner, dtype), new Conv1D(s.NInner, s.NEmbd, dtype), act, names)))
    {
    }

    /// <summary>A model of GPT-2's layout (<see cref="Gpt2Core"/>: wte + wpe, blocks of ln_1, attn, ln_2, mlp, ln_f, the
    /// unembedding tied to wte) whose layer i has the attention and MLP <paramref name="layer"/>(i, its hook names, the
    /// activation) makes; sizes from <paramref name="config"/>.</summary>
    internal Gpt2Model(string hfClass, TransformerConfig config, HfModuleNames hf, string configPath,
        Func<int, BlockHookNames, Func<Tensor, Tensor>, (nn.Module<Tensor, ForwardContext, Tensor> Attn, nn.Module<Tensor, ForwardContext, Tensor> Mlp)> layer)
        : base(hfClass, config, new HookPoints(config.NLayers, hasPosEmbed: true, parallelAttnMlp: false, rotary: false, hf))
    {
        var c = config;
        var act = ActivationFunctions.Get(c.Activation, configPath);
        transformer = new Gpt2Core(c.DVocab, c.NCtx, c.DModel, c.LayerNormEps, Enumerable.Range(0, c.NLayers).Select(i =>
        {
            var (attn, mlp) = layer(i, HookPoints.Blocks[i], act);
            return new Gpt2Block(c.DModel, c.NHeads, c.LayerNormEps, attn, mlp, HookPoints.Blocks[i], c.Dtype);
        }), c.Dtype);
        RegisterComponents();
    }

    private protected override Tensor Embed(Tensor tokens, ForwardContext ctx) => transformer.Embed(tokens, ctx);

    private protected override Tensor RunBlock(int layer, Tensor resid, ForwardContext ctx) => transformer.h[layer].forward(resid, ctx);

    private protected override Tensor FinalNorm(Tensor resid, ForwardContext ctx) => transformer.FinalNorm(resid, ctx);

    private protected override Tensor UnembedNormalized(Tensor x) => lm_head is null ? transformer.Unembed(x) : lm_head.forward(x);

    internal override void UntieEmbeddings()
    {
        if (lm_head is not null) return;
        lm_head = Linear.CopyOf(transformer.wte.Weight);
        register_module("lm_head", lm_head);
    }
}
