using SaeSharp.Hooks;
using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;

namespace SaeSharp.Models;

/// <summary>GPT-NeoX settings read from a Hugging Face config.json (HF defaults for missing keys).</summary>
internal sealed record NeoXSettings(int Hidden, int NLayer, int NHead, int Intermediate, double RotaryPct, double RotaryBase,
    bool ParallelResidual, string Activation, double Eps, int VocabSize, int MaxPositions, bool AttentionBias)
{
    public int HeadSize => Hidden / NHead;
    public int RotaryDim => (int)(HeadSize * RotaryPct);

    /// <summary>Reads the settings; with <paramref name="weights"/>, checks every declared size against the tensors
    /// present before anything is allocated.</summary>
    public static NeoXSettings From(JsonConfig c, Checkpoint? weights = null)
    {
        int hidden = c.Int("hidden_size", 6144);
        // transformers 5 writes rope_parameters {rope_type, rope_theta, partial_rotary_factor} instead of rotary_pct,
        // rotary_emb_base and rope_scaling (its GPTNeoXConfig, fixed by transformers PR #44985, keeps rope_parameters'
        // partial_rotary_factor unless rotary_pct is given).
        var rope = c.Root["rope_parameters"] is { } rpn && rpn.GetValueKind() != System.Text.Json.JsonValueKind.Null
            ? rpn as System.Text.Json.Nodes.JsonObject ?? throw new SaeSharpException($"{c.Path}: rope_parameters must be an object, got {rpn.ToJsonString()}")
            : null;
        double? RopeNumber(string key) => rope?[key] is { } v && v.GetValueKind() == System.Text.Json.JsonValueKind.Number ? v.GetValue<double>() : null;
        double pct = c.Has("rotary_pct") ? c.Double("rotary_pct")
            : c.Has("partial_rotary_factor") ? c.Double("partial_rotary_factor")
            : RopeNumber("partial_rotary_factor") ?? 0.25;
        double theta = c.Has("rotary_emb_base") ? c.Double("rotary_emb_base")
            : c.Has("rope_theta") ? c.Double("rope_theta")
            : RopeNumber("rope_theta") ?? 10000;
        if (c.Root["rope_scaling"] is { } rs && rs.GetValueKind() != System.Text.Json.JsonValueKind.Null)
            throw new SaeSharpException($"{c.Path}: rope_scaling {rs.ToJsonString()} is not supported");
        if (rope?["rope_type"]?.ToString() is { } ropeType && ropeType != "default")
            throw new SaeSharpException($"{c.Path}: rope_parameters of type '{ropeType}' are not supported for gpt_neox (default is)");
        if (c.Bool("tie_word_embeddings", false))
            throw new SaeSharpException($"{c.Path}: tie_word_embeddings=true is not supported for gpt_neox");
        var s = new NeoXSettings(hidden, c.Int("num_hidden_layers", 44), c.Int("num_attention_heads", 64),
            c.Int("intermediate_size", 4 * hidden), pct, theta, c.Bool("use_parallel_residual", true),
            c.String("hidden_act") ?? "gelu", c.Double("layer_norm_eps", 1e-5), c.Int("vocab_size", 50432),
            c.Int("max_position_embeddings", 2048), c.Bool("attention_bias", true));
        if (s.Hidden <= 0 || s.NHead <= 0 || s.Hidden % s.NHead != 0)
            throw new SaeSharpException($"{c.Path}: hidden_size={s.Hidden} must be a positive multiple of num_attention_heads={s.NHead}");
        if (s.RotaryPct is < 0 or > 1 || s.RotaryDim % 2 != 0)
            throw new SaeSharpException($"{c.Path}: rotary_pct={s.RotaryPct} gives {s.RotaryDim} rotary dims of {s.HeadSize}; need an even number");
        if (weights is not null)
        {
            weights.ExpectLayers(c.Path, "num_hidden_layers", s.NLayer);
            string dims = $"vocab_size={s.VocabSize}, hidden_size={s.Hidden}";
            weights.ExpectShape(c.Path, "gpt_neox", "embed_in.weight", [s.VocabSize, s.Hidden], dims);
            weights.ExpectShape(c.Path, "", "embed_out.weight", [s.VocabSize, s.Hidden], dims);
            if (s.NLayer > 0)
                weights.ExpectShape(c.Path, "gpt_neox", "layers.0.mlp.dense_h_to_4h.weight", [s.Intermediate, s.Hidden],
                    $"intermediate_size={s.Intermediate}, hidden_size={s.Hidden}");
        }
        return s;
    }
}

/// <summary>HF <c>GPTNeoXAttention</c> of one layer: fused <c>query_key_value</c> (per head q, k, v), rotary on the first
/// rotary_dim dims, <c>dense</c>.</summary>
internal sealed class NeoXAttention : nn.Module<Tensor, ForwardContext, Tensor>
{
    private readonly Linear query_key_value;
    private readonly Linear dense;
    private readonly NeoXSettings _s;
    private readonly int _layer;
    private readonly BlockHookNames _names;

    public NeoXAttention(NeoXSettings s, int layer, BlockHookNames names, ScalarType dtype) : base("attention")
    {
        (_s, _layer, _names) = (s, layer, names);
        query_key_value = new Linear(s.Hidden, 3 * s.Hidden, s.AttentionBias, dtype);
        dense = new Linear(s.Hidden, s.Hidden, s.AttentionBias, dtype);
        RegisterComponents();
    }

    public override Tensor forward(Tensor x, ForwardContext ctx)
    {
        int hd = _s.HeadSize;
        var (q, k, v) = AttentionCore.PerHeadQkv(query_key_value, _s.NHead, hd, x, ctx);   // HF GPTNeoXAttention's per-head layout
        var z = AttentionCore.AttendHeads(q, k, v, _layer, 1.0 / Math.Sqrt(hd), ctx, _names, _s.RotaryDim);
        return AttentionCore.Project(z, _s.NHead, dense.InOut, dense.forward, ctx, _names);
    }
}

/// <summary>HF <c>GPTNeoXMLP</c>: <c>dense_h_to_4h</c>, the activation, <c>dense_4h_to_h</c>.</summary>
internal sealed class NeoXMlp : nn.Module<Tensor, ForwardContext, Tensor>
{
    private readonly Linear dense_h_to_4h;
    private readonly Linear dense_4h_to_h;
    private readonly Func<Tensor, Tensor> _act;
    private readonly BlockHookNames _names;

    public NeoXMlp(NeoXSettings s, Func<Tensor, Tensor> act, BlockHookNames names, ScalarType dtype) : base("mlp")
    {
        (_act, _names) = (act, names);
        dense_h_to_4h = new Linear(s.Hidden, s.Intermediate, true, dtype);
        dense_4h_to_h = new Linear(s.Intermediate, s.Hidden, true, dtype);
        RegisterComponents();
    }

    public override Tensor forward(Tensor x, ForwardContext ctx) => ResidualBlock.Mlp(x, ctx, _names, dense_h_to_4h, _act, dense_4h_to_h);
}

/// <summary>HF <c>GPTNeoXLayer</c> <c>layers.{layer}</c>: attention and MLP in parallel (use_parallel_residual) or in sequence.</summary>
internal sealed class NeoXLayer : nn.Module<Tensor, ForwardContext, Tensor>
{
    private readonly LayerNorm input_layernorm;
    private readonly LayerNorm post_attention_layernorm;
    private readonly NeoXAttention attention;
    private readonly NeoXMlp mlp;
    private readonly bool _parallel;
    private readonly BlockHookNames _names;
    private readonly SplitAttentionInputs.Heads _heads;

    public NeoXLayer(NeoXSettings s, int layer, Func<Tensor, Tensor> act, BlockHookNames names, ScalarType dtype) : base("layer")
    {
        (_parallel, _names, _heads) = (s.ParallelResidual, names, new(s.NHead, s.NHead));
        input_layernorm = new LayerNorm(s.Hidden, s.Eps, dtype);
        post_attention_layernorm = new LayerNorm(s.Hidden, s.Eps, dtype);
        attention = new NeoXAttention(s, layer, names, dtype);
        mlp = new NeoXMlp(s, act, names, dtype);
        RegisterComponents();
    }

    public override Tensor forward(Tensor resid, ForwardContext ctx)
    {
        var n = _names;
        if (!_parallel)
            return ResidualBlock.Sequential(resid, ctx, n, _heads, input_layernorm, x => attention.forward(x, ctx), post_attention_layernorm, x => mlp.forward(x, ctx));
        // x + attn(ln1(x)) + mlp(ln2(x))
        var h = ctx.Hooks;
        resid = h.Fire(n.ResidPre, resid);
        var split = SplitAttentionInputs.Fire(resid, h, n, _heads, input_layernorm);
        var x1 = h.Fire(n.Ln1, input_layernorm.Forward(resid, h, n.Ln1Scale));
        var attnOut = h.Fire(n.AttnOut, SplitAttentionInputs.Run(ctx, split, x => attention.forward(x, ctx), x1));
        var x2 = h.Fire(n.Ln2, post_attention_layernorm.Forward(h.Fire(n.MlpIn, resid), h, n.Ln2Scale));   // hook_mlp_in: the MLP's copy of resid_pre
        var mlpOut = h.Fire(n.MlpOut, mlp.forward(x2, ctx));
        return h.Fire(n.ResidPost, resid.add(attnOut, TorchScalars.One).add(mlpOut, TorchScalars.One));
    }
}

/// <summary>The <c>gpt_neox</c> submodule of HF GPTNeoXForCausalLM: embed_in, layers.{i}, final_layer_norm.</summary>
internal sealed class NeoXCore : nn.Module
{
    public readonly Embedding embed_in;
    public readonly ModuleList<NeoXLayer> layers;
    public readonly LayerNorm final_layer_norm;

    public NeoXCore(NeoXSettings s, Func<Tensor, Tensor> act, HookPoints hooks, ScalarType dtype) : base("gpt_neox")
    {
        embed_in = new Embedding(s.VocabSize, s.Hidden, dtype);
        layers = new ModuleList<NeoXLayer>(Enumerable.Range(0, s.NLayer).Select(i => new NeoXLayer(s, i, act, hooks.Blocks[i], dtype)).ToArray());
        final_layer_norm = new LayerNorm(s.Hidden, s.Eps, dtype);
        RegisterComponents();
    }
}

/// <summary>
/// GPT-NeoX / Pythia (HF <c>GPTNeoXForCausalLM</c>) with TransformerLens hooks. State-dict keys are the HF ones
/// (<c>gpt_neox.layers.0.attention.query_key_value.weight</c>, per-head interleaved q, k, v; untied <c>embed_out</c>).
/// </summary>
public sealed class GptNeoXModel : HookedTransformer
{
    private readonly NeoXCore gpt_neox;
    private readonly Linear embed_out;
    private readonly NeoXSettings _s;

    internal GptNeoXModel(NeoXSettings s, string modelName, string configPath, ScalarType dtype)
        : base("GPTNeoXForCausalLM", new TransformerConfig
        {
            ModelName = modelName, Architecture = "gpt_neox", NLayers = s.NLayer, DModel = s.Hidden, NHeads = s.NHead,
            DMlp = s.Intermediate, DVocab = s.VocabSize, NCtx = s.MaxPositions, Activation = s.Activation, LayerNormEps = s.Eps,
            ParallelAttnMlp = s.ParallelResidual, RotaryDim = s.RotaryDim, RotaryBase = s.RotaryBase, Dtype = dtype,
        }, new HookPoints(s.NLayer, hasPosEmbed: false, parallelAttnMlp: s.ParallelResidual, rotary: s.RotaryDim > 0, HfModuleNames.NeoX))
    {
        _s = s;
        gpt_neox = new NeoXCore(s, ActivationFunctions.Get(s.Activation, configPath), HookPoints, dtype);
        embed_out = new Linear(s.Hidden, s.VocabSize, false, dtype);
        RegisterComponents();
    }

    private protected override Tensor Embed(Tensor tokens, ForwardContext ctx)
    {
        if (_s.RotaryDim > 0)
            (ctx.RotaryCos, ctx.RotarySin) = Rotary.CosSin(ctx.Positions, _s.RotaryDim, _s.RotaryBase, Config.Dtype);
        return ctx.Hooks.Fire(HookPoints.Embed, gpt_neox.embed_in.forward(tokens));
    }

    private protected override Tensor RunBlock(int layer, Tensor resid, ForwardContext ctx) => gpt_neox.layers[layer].forward(resid, ctx);

    private protected override Tensor FinalNorm(Tensor resid, ForwardContext ctx) =>
        ctx.Hooks.Fire(HookPoints.LnFinal, gpt_neox.final_layer_norm.Forward(resid, ctx.Hooks, HookPoints.LnFinalScale));

    private protected override Tensor UnembedNormalized(Tensor x) => embed_out.forward(x);
}
