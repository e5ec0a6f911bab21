using System.Text.Json;
using System.Text.Json.Nodes;
using SaeSharp.Hooks;
using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;

namespace SaeSharp.Models;

/// <summary>
/// Settings of the Llama-layout decoders (HF <c>LlamaForCausalLM</c>, <c>Qwen2ForCausalLM</c>, <c>Qwen3ForCausalLM</c>,
/// <c>Gemma2ForCausalLM</c>) read from config.json, with the defaults of each family's HF config class.
/// </summary>
internal sealed record DecoderSettings
{
    public required string ModelType { get; init; }
    public required int Hidden { get; init; }
    public required int NLayer { get; init; }
    public required int NHead { get; init; }
    public required int NKvHead { get; init; }
    public required int HeadDim { get; init; }
    public required int Intermediate { get; init; }
    public required int VocabSize { get; init; }
    public required int MaxPositions { get; init; }
    public required double Eps { get; init; }
    public required string Activation { get; init; }
    public required double RopeTheta { get; init; }
    /// <summary>Rotary frequencies [rotary_dim / 2] after rope_scaling (llama3, linear).</summary>
    public required double[] InvFreq { get; init; }
    public int RotaryDim => 2 * InvFreq.Length;
    public required bool TieEmbeddings { get; init; }
    /// <summary>Bias on q_proj, k_proj, v_proj (Qwen2, or Llama/Qwen3 <c>attention_bias</c>).</summary>
    public bool QkvBias { get; init; }
    /// <summary>Bias on o_proj (Llama/Qwen3 <c>attention_bias</c>).</summary>
    public bool OBias { get; init; }
    /// <summary>Bias on gate/up/down (Llama <c>mlp_bias</c>).</summary>
    public bool MlpBias { get; init; }
    /// <summary>Per-head RMSNorm of q and k before rotary (Qwen3 <c>q_norm</c>, <c>k_norm</c>).</summary>
    public bool QkNorm { get; init; }
    /// <summary>Gemma: embeddings × √hidden_size, RMSNorm with (1 + w), post-norms around attention and MLP.</summary>
    public bool Gemma { get; init; }
    /// <summary>Attention scores are q·k × this (1/√head_dim, Gemma 2 query_pre_attn_scalar^-½).</summary>
    public required double AttnScale { get; init; }
    public double? AttnSoftCap { get; init; }
    public double? FinalSoftCap { get; init; }
    public int? SlidingWindow { get; init; }
    /// <summary>Per layer: true where attention is restricted to <see cref="SlidingWindow"/>.</summary>
    public required bool[] SlidingLayers { get; init; }

    /// <summary>Reads config.json of a <c>llama</c>, <c>qwen2</c>, <c>qwen3</c> or <c>gemma2</c> model; with
    /// <paramref name="weights"/>, checks every declared size against the tensors present before anything is allocated.</summary>
    public static DecoderSettings From(JsonConfig c, string modelType, Checkpoint? weights = null)
    {
        bool gemma = modelType == "gemma2";
        int hidden = c.Int("hidden_size"), nHead = c.Int("num_attention_heads"), nLayer = c.Int("num_hidden_layers");
        if (hidden <= 0 || nHead <= 0 || nLayer <= 0)
            throw new SaeSharpException($"{c.Path}: hidden_size, num_attention_heads and num_hidden_layers must be positive");
        int nKv = c.Root["num_key_value_heads"] is { } kvn && kvn.GetValueKind() != JsonValueKind.Null ? c.Int("num_key_value_heads") : nHead;
        if (nKv <= 0 || nHead % nKv != 0)
            throw new SaeSharpException($"{c.Path}: num_attention_heads={nHead} must be a multiple of num_key_value_heads={nKv}");
        int headDim = c.Root["head_dim"] is { } hd && hd.GetValueKind() != JsonValueKind.Null ? c.Int("head_dim")
            : hidden % nHead == 0 ? hidden / nHead
            : throw new SaeSharpException($"{c.Path}: hidden_size={hidden} is not a multiple of num_attention_heads={nHead} and there is no head_dim");
        if (headDim <= 0 || headDim % 2 != 0) throw new SaeSharpException($"{c.Path}: head_dim={headDim} must be positive and even");
        int vocab = c.Int("vocab_size"), intermediate = c.Int("intermediate_size");
        if (weights is not null)
        {
            weights.ExpectLayers(c.Path, "num_hidden_layers", nLayer);
            weights.ExpectShape(c.Path, "model", "embed_tokens.weight", [vocab, hidden], $"vocab_size={vocab}, hidden_size={hidden}");
            weights.ExpectShape(c.Path, "model", "layers.0.self_attn.q_proj.weight", [(long)nHead * headDim, hidden],
                $"num_attention_heads={nHead}, head_dim={headDim}, hidden_size={hidden}");
            weights.ExpectShape(c.Path, "model", "layers.0.self_attn.k_proj.weight", [(long)nKv * headDim, hidden],
                $"num_key_value_heads={nKv}, head_dim={headDim}, hidden_size={hidden}");
            weights.ExpectShape(c.Path, "model", "layers.0.mlp.gate_proj.weight", [intermediate, hidden],
                $"intermediate_size={intermediate}, hidden_size={hidden}");
        }
        var rope = RopeParameters(c);
        double theta = rope?["rope_theta"] is { } rt ? rt.GetValue<double>() : c.Double("rope_theta", 10000);
        double partial = c.Double("partial_rotary_factor", 1.0);
        int rotDim = (int)(headDim * partial);
        if (rotDim <= 0 || rotDim % 2 != 0) throw new SaeSharpException($"{c.Path}: partial_rotary_factor={partial} gives {rotDim} rotary dims of {headDim}; need a positive even number");
        double[] invFreq = ScaledInvFreq(c, rope, rotDim, theta);

        string act = gemma
            ? c.String("hidden_activation") ?? c.String("hidden_act") ?? "gelu_pytorch_tanh"
            : c.String("hidden_act") ?? "silu";
        bool attnBias = c.Bool("attention_bias", false);
        int layers = nLayer;
        int? window = null;
        var sliding = new bool[layers];
        int? configWindow = c.Root["sliding_window"] is { } swn && swn.GetValueKind() == JsonValueKind.Number ? c.Int("sliding_window") : null;
        if (c.Root["layer_types"] is JsonArray types)
        {
            if (types.Count != layers) throw new SaeSharpException($"{c.Path}: layer_types has {types.Count} entries for {layers} layers");
            for (int i = 0; i < layers; i++)
            {
                string t = types[i]?.GetValue<string>() ?? "";
                sliding[i] = t switch
                {
                    "sliding_attention" => true,
                    "full_attention" => false,
                    _ => throw new SaeSharpException($"{c.Path}: layer_types[{i}] '{t}' is not supported (sliding_attention, full_attention are)"),
                };
            }
        }
        else if (gemma)
            for (int i = 0; i < layers; i++) sliding[i] = i % 2 == 0; // HF Gemma 2: even layers are local
        else if (modelType is "qwen2" or "qwen3" && c.Bool("use_sliding_window", false))
        {
            int from = c.Int("max_window_layers", 28);
            for (int i = from; i < layers; i++) sliding[i] = true;
        }
        if (sliding.Any(x => x))
        {
            window = configWindow ?? (gemma ? 4096 : throw new SaeSharpException($"{c.Path}: sliding-window layers but no sliding_window"));
            if (window <= 0) throw new SaeSharpException($"{c.Path}: sliding_window={window} must be positive");
        }

        double? Cap(string key, double? fallback)
        {
            var n = c.Root[key];
            if (n is null) return fallback;
            if (n.GetValueKind() == JsonValueKind.Null) return null;
            double v = c.Double(key);
            return v > 0 ? v : throw new SaeSharpException($"{c.Path}: {key}={v} must be positive or null");
        }

        return new DecoderSettings
        {
            ModelType = modelType, Hidden = hidden, NLayer = nLayer, NHead = nHead, NKvHead = nKv, HeadDim = headDim,
            Intermediate = intermediate, VocabSize = vocab,
            MaxPositions = c.Int("max_position_embeddings", gemma ? 8192 : modelType == "llama" ? 2048 : 32768),
            Eps = c.Double("rms_norm_eps", 1e-6), Activation = act, RopeTheta = theta, InvFreq = invFreq,
            TieEmbeddings = c.Bool("tie_word_embeddings", gemma),
            QkvBias = modelType == "qwen2" || attnBias, OBias = modelType != "qwen2" && attnBias,
            MlpBias = c.Bool("mlp_bias", false), QkNorm = modelType == "qwen3", Gemma = gemma,
            AttnScale = gemma ? Math.Pow(c.Double("query_pre_attn_scalar", 256), -0.5) : 1.0 / Math.Sqrt(headDim),
            AttnSoftCap = gemma ? Cap("attn_logit_softcapping", 50.0) : null,
            FinalSoftCap = gemma ? Cap("final_logit_softcapping", 30.0) : null,
            SlidingWindow = window, SlidingLayers = sliding,
        };
    }

    /// <summary>rope_scaling (transformers ≤ 4.x) or rope_parameters (5.x), null when absent.</summary>
    private static JsonObject? RopeParameters(JsonConfig c)
    {
        foreach (var key in new[] { "rope_parameters", "rope_scaling" })
        {
            var n = c.Root[key];
            if (n is null || n.GetValueKind() == JsonValueKind.Null) continue;
            return n as JsonObject ?? throw new SaeSharpException($"{c.Path}: {key} must be an object, got {n.ToJsonString()}");
        }
        return null;
    }

    /// <summary>HF <c>ROPE_INIT_FUNCTIONS</c> for rope types default, linear and llama3.</summary>
    private static double[] ScaledInvFreq(JsonConfig c, JsonObject? rope, int dim, double theta)
    {
        // Float32 as HF computes them, then widened.
        using var scope = NewDisposeScope();
        double[] inv = Rotary.InvFreq(dim, theta).to(ScalarType.Float64).data<double>().ToArray();
        string type = rope?["rope_type"]?.GetValue<string>() ?? rope?["type"]?.GetValue<string>() ?? "default";
        double Num(string key) => rope![key] is { } v && v.GetValueKind() == JsonValueKind.Number
            ? v.GetValue<double>() : throw new SaeSharpException($"{c.Path}: rope_scaling of type {type} needs a number '{key}'");
        switch (type)
        {
            case "default":
                return inv;
            case "linear":
                {
                    double f = Num("factor");
                    return inv.Select(x => x / f).ToArray();
                }
            case "llama3":
                {
                    double factor = Num("factor"), low = Num("low_freq_factor"), high = Num("high_freq_factor");
                    double oldCtx = Num("original_max_position_embeddings");
                    double lowWavelen = oldCtx / low, highWavelen = oldCtx / high;
                    return inv.Select(f =>
                    {
                        double wavelen = 2 * Math.PI / f;
                        if (wavelen < highWavelen) return f;            // high frequencies kept
                        if (wavelen > lowWavelen) return f / factor;    // low frequencies scaled
                        double smooth = (oldCtx / wavelen - low) / (high - low);
                        return (1 - smooth) * f / factor + smooth * f;
                    }).ToArray();
                }
            default:
                throw new SaeSharpException($"{c.Path}: rope_scaling type '{type}' is not supported (default, linear, llama3 are)");
        }
    }
}

internal sealed class DecoderAttention : nn.Module
{
    private readonly Linear q_proj, k_proj, v_proj, o_proj;
    private readonly RmsNorm? q_norm, k_norm;

    public DecoderAttention(DecoderSettings s, ScalarType dtype) : base("self_attn")
    {
        q_proj = new Linear(s.Hidden, s.NHead * s.HeadDim, s.QkvBias, dtype);
        k_proj = new Linear(s.Hidden, s.NKvHead * s.HeadDim, s.QkvBias, dtype);
        v_proj = new Linear(s.Hidden, s.NKvHead * s.HeadDim, s.QkvBias, dtype);
        o_proj = new Linear(s.NHead * s.HeadDim, s.Hidden, s.OBias, dtype);
        if (s.QkNorm)
        {
            q_norm = new RmsNorm(s.HeadDim, s.Eps, false, dtype);
            k_norm = new RmsNorm(s.HeadDim, s.Eps, false, dtype);
        }
        RegisterComponents();
    }

    public Tensor Forward(Tensor x, int layer, DecoderSettings st, ForwardContext ctx, BlockHookNames names)
    {
        long b = x.shape[0], s = x.shape[1];
        var h = ctx.Hooks;
        var q = h.Fire(names.Q, q_proj.Forward(x).view(b, s, st.NHead, st.HeadDim));
        var k = h.Fire(names.K, k_proj.Forward(x).view(b, s, st.NKvHead, st.HeadDim));
        var v = h.Fire(names.V, v_proj.Forward(x).view(b, s, st.NKvHead, st.HeadDim));
        if (q_norm is not null && k_norm is not null)
        {
            q = q_norm.Forward(q);
            k = k_norm.Forward(k);
        }
        q = h.Fire(names.RotQ, Rotary.Apply(q, ctx.RotaryCos!, ctx.RotarySin!, st.RotaryDim));
        k = h.Fire(names.RotK, Rotary.Apply(k, ctx.RotaryCos!, ctx.RotarySin!, st.RotaryDim));
        var z = AttentionCore.Attend(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2), layer, st.AttnScale, ctx, names,
            st.AttnSoftCap, st.SlidingLayers[layer] ? st.SlidingWindow : null);
        return o_proj.Forward(z);
    }
}

/// <summary>Gated MLP: down(act(gate(x)) · up(x)) (SwiGLU with silu, GeGLU with tanh-GELU).</summary>
internal sealed class GatedMlp : nn.Module
{
    private readonly Linear gate_proj, up_proj, down_proj;

    public GatedMlp(DecoderSettings s, ScalarType dtype) : base("mlp")
    {
        gate_proj = new Linear(s.Hidden, s.Intermediate, s.MlpBias, dtype);
        up_proj = new Linear(s.Hidden, s.Intermediate, s.MlpBias, dtype);
        down_proj = new Linear(s.Intermediate, s.Hidden, s.MlpBias, dtype);
        RegisterComponents();
    }

    public Tensor Forward(Tensor x, Func<Tensor, Tensor> act, ForwardContext ctx, BlockHookNames names)
    {
        var h = ctx.Hooks;
        var gate = h.Fire(names.MlpPre, gate_proj.Forward(x));
        var up = h.Fire(names.MlpPreLinear, up_proj.Forward(x));
        var post = h.Fire(names.MlpPost, act(gate) * up);
        return down_proj.Forward(post);
    }
}

internal sealed class DecoderLayer : nn.Module
{
    private readonly RmsNorm input_layernorm;
    private readonly RmsNorm post_attention_layernorm;
    private readonly RmsNorm? pre_feedforward_layernorm;
    private readonly RmsNorm? post_feedforward_layernorm;
    private readonly DecoderAttention self_attn;
    private readonly GatedMlp mlp;

    public DecoderLayer(DecoderSettings s, ScalarType dtype) : base("layer")
    {
        input_layernorm = new RmsNorm(s.Hidden, s.Eps, s.Gemma, dtype);
        post_attention_layernorm = new RmsNorm(s.Hidden, s.Eps, s.Gemma, dtype);
        if (s.Gemma)
        {
            pre_feedforward_layernorm = new RmsNorm(s.Hidden, s.Eps, true, dtype);
            post_feedforward_layernorm = new RmsNorm(s.Hidden, s.Eps, true, dtype);
        }
        self_attn = new DecoderAttention(s, dtype);
        mlp = new GatedMlp(s, dtype);
        RegisterComponents();
    }

    public Tensor Forward(Tensor resid, int layer, DecoderSettings s, Func<Tensor, Tensor> act, ForwardContext ctx, BlockHookNames n)
    {
        var h = ctx.Hooks;
        resid = h.Fire(n.ResidPre, resid);
        var x1 = h.Fire(n.Ln1, input_layernorm.Forward(resid));
        var attn = self_attn.Forward(x1, layer, s, ctx, n);
        if (s.Gemma)
        {
            // Gemma 2: post_attention_layernorm normalises the attention output; pre_feedforward_layernorm is ln2.
            var attnOut = h.Fire(n.AttnOut, post_attention_layernorm.Forward(attn));
            var mid = h.Fire(n.ResidMid, resid + attnOut);
            var x2 = h.Fire(n.Ln2, pre_feedforward_layernorm!.Forward(mid));
            var mlpOut = h.Fire(n.MlpOut, post_feedforward_layernorm!.Forward(mlp.Forward(x2, act, ctx, n)));
            return h.Fire(n.ResidPost, mid + mlpOut);
        }
        else
        {
            var attnOut = h.Fire(n.AttnOut, attn);
            var mid = h.Fire(n.ResidMid, resid + attnOut);
            var x2 = h.Fire(n.Ln2, post_attention_layernorm.Forward(mid));
            var mlpOut = h.Fire(n.MlpOut, mlp.Forward(x2, act, ctx, n));
            return h.Fire(n.ResidPost, mid + mlpOut);
        }
    }
}

/// <summary>The <c>model</c> submodule of HF <c>*ForCausalLM</c>: embed_tokens, layers.{i}, norm.</summary>
internal sealed class DecoderCore : nn.Module
{
    public readonly Embedding embed_tokens;
    public readonly ModuleList<DecoderLayer> layers;
    public readonly RmsNorm norm;

    public DecoderCore(DecoderSettings s, ScalarType dtype) : base("model")
    {
        embed_tokens = new Embedding(s.VocabSize, s.Hidden, dtype);
        layers = new ModuleList<DecoderLayer>(Enumerable.Range(0, s.NLayer).Select(_ => new DecoderLayer(s, dtype)).ToArray());
        norm = new RmsNorm(s.Hidden, s.Eps, s.Gemma, dtype);
        RegisterComponents();
    }
}

/// <summary>
/// Llama-layout decoders with TransformerLens hooks: Llama 2/3.x (TinyLlama, SmolLM2; rope_scaling llama3), Qwen2/2.5
/// (q/k/v biases), Qwen3 (per-head q/k RMSNorm) and Gemma 2 (√d_model embedding scale, (1+w) RMSNorm, post-norms,
/// GeGLU, query_pre_attn_scalar, attention and final soft caps, sliding window on alternating layers).
/// State-dict keys are the HF ones (<c>model.layers.0.self_attn.q_proj.weight</c>, <c>lm_head.weight</c> when untied).
/// <para><c>hook_embed</c> is what enters the residual stream (for Gemma 2, already × √d_model, as TransformerLens folds
/// the scale into W_E). With grouped-query attention <c>attn.hook_k/v/rot_k</c> have n_key_value_heads heads. For Gemma 2,
/// <c>hook_attn_out</c> / <c>hook_mlp_out</c> are after the post-norms: exactly what is added to the residual stream.</para>
/// </summary>
public sealed class LlamaFamilyModel : HookedTransformer
{
    private readonly DecoderCore model;
    private readonly Linear? lm_head;
    private readonly DecoderSettings _s;
    private readonly Func<Tensor, Tensor> _act;
    private readonly float[] _invFreq;

    internal LlamaFamilyModel(DecoderSettings s, string modelName, string configPath, ScalarType dtype)
        : base(ArchitectureName(s.ModelType), new TransformerConfig
        {
            ModelName = modelName, Architecture = s.ModelType, NLayers = s.NLayer, DModel = s.Hidden, NHeads = s.NHead,
            NKvHeads = s.NKvHead, DHead = s.HeadDim, DMlp = s.Intermediate, DVocab = s.VocabSize, NCtx = s.MaxPositions,
            Activation = s.Activation, LayerNormEps = s.Eps, RotaryDim = s.RotaryDim, RotaryBase = s.RopeTheta, Dtype = dtype,
            GatedMlp = true, NormalizationType = "RMS", AttnScoresSoftCap = s.AttnSoftCap, OutputLogitsSoftCap = s.FinalSoftCap,
            SlidingWindow = s.SlidingWindow,
        }, new HookPoints(s.NLayer, hasPosEmbed: false, parallelAttnMlp: false, rotary: true,
            s.Gemma ? HfModuleNames.Gemma2 : HfModuleNames.Llama, gatedMlp: true))
    {
        _s = s;
        _act = ActivationFunctions.Get(s.Activation, configPath);
        model = new DecoderCore(s, dtype);
        if (!s.TieEmbeddings) lm_head = new Linear(s.Hidden, s.VocabSize, false, dtype);
        RegisterComponents();
        _invFreq = s.InvFreq.Select(x => (float)x).ToArray();
    }

    internal static string ArchitectureName(string modelType) => modelType switch
    {
        "qwen2" => "Qwen2ForCausalLM",
        "qwen3" => "Qwen3ForCausalLM",
        "gemma2" => "Gemma2ForCausalLM",
        _ => "LlamaForCausalLM",
    };

    private protected override Tensor Embed(Tensor tokens, ForwardContext ctx)
    {
        (ctx.RotaryCos, ctx.RotarySin) = Rotary.CosSin(ctx.Positions, tensor(_invFreq), Config.Dtype);
        var e = model.embed_tokens.Forward(tokens);
        // HF Gemma: the normaliser √hidden_size is a tensor of the hidden states' dtype.
        if (_s.Gemma) e = e * tensor(Math.Sqrt(_s.Hidden), dtype: Config.Dtype);
        return ctx.Hooks.Fire(HookPoints.Embed, e);
    }

    private protected override Tensor RunBlock(int layer, Tensor resid, ForwardContext ctx) =>
        model.layers[layer].Forward(resid, layer, _s, _act, ctx, HookPoints.Blocks[layer]);

    private protected override Tensor FinalNorm(Tensor resid, ForwardContext ctx) =>
        ctx.Hooks.Fire(HookPoints.LnFinal, model.norm.Forward(resid));

    private protected override Tensor UnembedNormalized(Tensor x)
    {
        var logits = lm_head is not null ? lm_head.Forward(x) : nn.functional.linear(x, model.embed_tokens.Weight);
        if (_s.FinalSoftCap is double cap) logits = (logits.to(ScalarType.Float32) / cap).tanh() * cap;
        return logits;
    }
}
