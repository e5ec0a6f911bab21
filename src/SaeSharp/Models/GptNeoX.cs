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
        double pct = c.Has("rotary_pct") ? c.Double("rotary_pct") : c.Double("partial_rotary_factor", 0.25);
        double theta = c.Has("rotary_emb_base") ? c.Double("rotary_emb_base")
            : c.Has("rope_theta") ? c.Double("rope_theta")
            : c.Root["rope_parameters"]?["rope_theta"] is { } rt ? rt.GetValue<double>() : 10000;
        if (c.Root["rope_scaling"] is { } rs && rs.GetValueKind() != System.Text.Json.JsonValueKind.Null)
            throw new SaeSharpException($"{c.Path}: rope_scaling {rs.ToJsonString()} is not supported");
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

internal sealed class NeoXAttention : nn.Module
{
    private readonly Linear query_key_value;
    private readonly Linear dense;

    public NeoXAttention(NeoXSettings s, ScalarType dtype) : base("attention")
    {
        query_key_value = new Linear(s.Hidden, 3 * s.Hidden, s.AttentionBias, dtype);
        dense = new Linear(s.Hidden, s.Hidden, s.AttentionBias, dtype);
        RegisterComponents();
    }

    public Tensor Forward(Tensor x, int layer, NeoXSettings st, Tensor? cos, Tensor? sin, ForwardContext ctx, BlockHookNames names)
    {
        long b = x.shape[0], s = x.shape[1];
        int hd = st.HeadSize;
        // HF GPTNeoXAttention: per head, q, k, v are consecutive blocks of head_size in the fused output.
        var qkv = query_key_value.Forward(x).view(b, s, st.NHead, 3 * hd);
        var h = ctx.Hooks;
        var q = h.Fire(names.Q, qkv.narrow(3, 0, hd));
        var k = h.Fire(names.K, qkv.narrow(3, hd, hd));
        var v = h.Fire(names.V, qkv.narrow(3, 2 * hd, hd));
        if (cos is not null && sin is not null)
        {
            q = h.Fire(names.RotQ, Rotary.Apply(q, cos, sin, st.RotaryDim));
            k = h.Fire(names.RotK, Rotary.Apply(k, cos, sin, st.RotaryDim));
        }
        var z = AttentionCore.Attend(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2), layer, 1.0 / Math.Sqrt(hd), ctx, names);
        return dense.Forward(z);
    }
}

/// <summary>NeoX rotary embeddings on the first rotary_dim dims of each head, with the rotate_half convention.</summary>
internal static class Rotary
{
    /// <summary>cos, sin: [batch, pos, 1, rotary_dim] for positions [batch, pos].</summary>
    public static (Tensor Cos, Tensor Sin) CosSin(Tensor positions, int rotaryDim, double theta, ScalarType dtype) =>
        CosSin(positions, InvFreq(rotaryDim, theta), dtype);

    /// <summary>HF default rotary frequencies 1 / theta^(2i / rotary_dim), float32 [rotary_dim / 2].</summary>
    public static Tensor InvFreq(int rotaryDim, double theta) =>
        1.0 / pow(theta, arange(0, rotaryDim, 2, dtype: ScalarType.Int64).to(ScalarType.Float32) / rotaryDim);

    /// <summary>cos, sin: [batch, pos, 1, 2·len(invFreq)] for positions [batch, pos] and float32 frequencies.</summary>
    public static (Tensor Cos, Tensor Sin) CosSin(Tensor positions, Tensor invFreq, ScalarType dtype)
    {
        var freqs = positions.to(ScalarType.Float32).unsqueeze(-1) * invFreq; // [b, pos, rot/2]
        var emb = cat([freqs, freqs], -1).unsqueeze(2);                      // [b, pos, 1, rot]
        return (emb.cos().to(dtype), emb.sin().to(dtype));
    }

    /// <summary>x: [batch, pos, head, d_head]; rotates x[..., :rot] as x·cos + rotate_half(x)·sin.</summary>
    public static Tensor Apply(Tensor x, Tensor cos, Tensor sin, int rot)
    {
        long d = x.shape[^1];
        var xr = rot == d ? x : x.narrow(3, 0, rot);
        var x1 = xr.narrow(3, 0, rot / 2);
        var x2 = xr.narrow(3, rot / 2, rot / 2);
        var rotated = xr * cos + cat([x2.neg(), x1], -1) * sin;
        return rot == d ? rotated : cat([rotated, x.narrow(3, rot, d - rot)], -1);
    }
}

internal sealed class NeoXMlp : nn.Module
{
    private readonly Linear dense_h_to_4h;
    private readonly Linear dense_4h_to_h;

    public NeoXMlp(NeoXSettings s, ScalarType dtype) : base("mlp")
    {
        dense_h_to_4h = new Linear(s.Hidden, s.Intermediate, true, dtype);
        dense_4h_to_h = new Linear(s.Intermediate, s.Hidden, true, dtype);
        RegisterComponents();
    }

    public Tensor Forward(Tensor x, Func<Tensor, Tensor> act, ForwardContext ctx, BlockHookNames names)
    {
        var pre = ctx.Hooks.Fire(names.MlpPre, dense_h_to_4h.Forward(x));
        var post = ctx.Hooks.Fire(names.MlpPost, act(pre));
        return dense_4h_to_h.Forward(post);
    }
}

internal sealed class NeoXLayer : nn.Module
{
    private readonly LayerNorm input_layernorm;
    private readonly LayerNorm post_attention_layernorm;
    private readonly NeoXAttention attention;
    private readonly NeoXMlp mlp;

    public NeoXLayer(NeoXSettings s, ScalarType dtype) : base("layer")
    {
        input_layernorm = new LayerNorm(s.Hidden, s.Eps, dtype);
        post_attention_layernorm = new LayerNorm(s.Hidden, s.Eps, dtype);
        attention = new NeoXAttention(s, dtype);
        mlp = new NeoXMlp(s, dtype);
        RegisterComponents();
    }

    public Tensor Forward(Tensor resid, int layer, NeoXSettings s, Tensor? cos, Tensor? sin, Func<Tensor, Tensor> act, ForwardContext ctx, BlockHookNames n)
    {
        var h = ctx.Hooks;
        resid = h.Fire(n.ResidPre, resid);
        var x1 = h.Fire(n.Ln1, input_layernorm.Forward(resid));
        var attnOut = h.Fire(n.AttnOut, attention.Forward(x1, layer, s, cos, sin, ctx, n));
        if (s.ParallelResidual)
        {
            // x + attn(ln1(x)) + mlp(ln2(x))
            var x2 = h.Fire(n.Ln2, post_attention_layernorm.Forward(resid));
            var mlpOut = h.Fire(n.MlpOut, mlp.Forward(x2, act, ctx, n));
            return h.Fire(n.ResidPost, resid + attnOut + mlpOut);
        }
        else
        {
            var mid = h.Fire(n.ResidMid, resid + attnOut);
            var x2 = h.Fire(n.Ln2, post_attention_layernorm.Forward(mid));
            var mlpOut = h.Fire(n.MlpOut, mlp.Forward(x2, act, ctx, n));
            return h.Fire(n.ResidPost, mid + mlpOut);
        }
    }
}

/// <summary>The <c>gpt_neox</c> submodule of HF GPTNeoXForCausalLM: embed_in, layers.{i}, final_layer_norm.</summary>
internal sealed class NeoXCore : nn.Module
{
    public readonly Embedding embed_in;
    public readonly ModuleList<NeoXLayer> layers;
    public readonly LayerNorm final_layer_norm;

    public NeoXCore(NeoXSettings s, ScalarType dtype) : base("gpt_neox")
    {
        embed_in = new Embedding(s.VocabSize, s.Hidden, dtype);
        layers = new ModuleList<NeoXLayer>(Enumerable.Range(0, s.NLayer).Select(_ => new NeoXLayer(s, dtype)).ToArray());
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
    private readonly Func<Tensor, Tensor> _act;

    internal GptNeoXModel(NeoXSettings s, string modelName, string configPath, ScalarType dtype)
        : base("GPTNeoXForCausalLM", new TransformerConfig
        {
            ModelName = modelName, Architecture = "gpt_neox", NLayers = s.NLayer, DModel = s.Hidden, NHeads = s.NHead,
            DMlp = s.Intermediate, DVocab = s.VocabSize, NCtx = s.MaxPositions, Activation = s.Activation, LayerNormEps = s.Eps,
            ParallelAttnMlp = s.ParallelResidual, RotaryDim = s.RotaryDim, RotaryBase = s.RotaryBase, Dtype = dtype,
        }, new HookPoints(s.NLayer, hasPosEmbed: false, parallelAttnMlp: s.ParallelResidual, rotary: s.RotaryDim > 0, HfModuleNames.NeoX))
    {
        _s = s;
        _act = ActivationFunctions.Get(s.Activation, configPath);
        gpt_neox = new NeoXCore(s, dtype);
        embed_out = new Linear(s.Hidden, s.VocabSize, false, dtype);
        RegisterComponents();
    }

    private protected override Tensor Embed(Tensor tokens, ForwardContext ctx)
    {
        if (_s.RotaryDim > 0)
            (ctx.RotaryCos, ctx.RotarySin) = Rotary.CosSin(ctx.Positions, _s.RotaryDim, _s.RotaryBase, Config.Dtype);
        return ctx.Hooks.Fire(HookPoints.Embed, gpt_neox.embed_in.Forward(tokens));
    }

    private protected override Tensor RunBlock(int layer, Tensor resid, ForwardContext ctx) =>
        gpt_neox.layers[layer].Forward(resid, layer, _s, ctx.RotaryCos, ctx.RotarySin, _act, ctx, HookPoints.Blocks[layer]);

    private protected override Tensor FinalNorm(Tensor resid, ForwardContext ctx) =>
        ctx.Hooks.Fire(HookPoints.LnFinal, gpt_neox.final_layer_norm.Forward(resid));

    private protected override Tensor UnembedNormalized(Tensor x) => embed_out.Forward(x);
}
