using System.Text.Json;
using System.Text.Json.Nodes;
using SaeSharp.Hooks;
using TorchSharp.Modules;
using static TorchSharp.torch;

namespace SaeSharp.Models;

/// <summary>Phi (HF <c>PhiConfig</c>: microsoft/phi-1, phi-1_5, phi-2) settings read from a Hugging Face config.json, with
/// <c>PhiConfig</c>'s defaults for missing keys.</summary>
internal sealed record PhiSettings(int Hidden, int NLayer, int NHead, int NKvHead, int Intermediate, int VocabSize, int MaxPositions,
    double Eps, string Activation, double RopeTheta, double PartialRotaryFactor, bool QkLayerNorm = false)
{
    public int HeadDim => Hidden / NHead;

    /// <summary>HF <c>PhiAttention.rotary_ndims</c> and <c>PhiRotaryEmbedding</c>'s dim: int(head_dim · partial_rotary_factor).</summary>
    public int RotaryDim => (int)(HeadDim * PartialRotaryFactor);

    /// <summary>The parallel block of HF <c>PhiDecoderLayer</c>: q/k/v_proj and dense with bias, grouped-query heads,
    /// rotate_half rotary, qk_layernorm when set.</summary>
    public ParallelBlockLayout Layout => new(ParallelBlockNames.Phi, Hidden, NHead, NKvHead, Intermediate, VocabSize, Eps, RotaryDim,
        AttnBias: true, QkLayerNorm: QkLayerNorm);

    /// <summary>Reads the settings; with <paramref name="weights"/>, checks every declared size against the tensors
    /// present before anything is allocated. Refuses tied embeddings and any rope scaling.</summary>
    public static PhiSettings From(JsonConfig c, Checkpoint? weights = null)
    {
        // transformers 5 writes rope_parameters {rope_type, rope_theta, partial_rotary_factor}; 4.x rope_theta,
        // partial_rotary_factor and rope_scaling at the top level.
        var rope = c.Root["rope_parameters"] is { } rpn && rpn.GetValueKind() != JsonValueKind.Null
            ? rpn as JsonObject ?? throw new SaeSharpException($"{c.Path}: rope_parameters must be an object, got {rpn.ToJsonString()}")
            : null;
        double? RopeNumber(string key) => rope?[key] is { } v && v.GetValueKind() == JsonValueKind.Number ? v.GetValue<double>() : null;
        foreach (var key in new[] { "rope_scaling", "rope_parameters" })
            if (c.Root[key] is JsonObject o && (o["rope_type"] ?? o["type"])?.ToString() is { } type && type != "default")
                throw new SaeSharpException($"{c.Path}: {key} of type '{type}' is not supported for phi (default is)");
        int hidden = c.Int("hidden_size", 2048), nHead = c.Int("num_attention_heads", 32);
        int nKv = c.Root["num_key_value_heads"] is not null ? c.Int("num_key_value_heads") : nHead;
        var s = new PhiSettings(hidden, c.Int("num_hidden_layers", 24), nHead, nKv, c.Int("intermediate_size", 8192),
            c.Int("vocab_size", 51200), c.Int("max_position_embeddings", 2048), c.Double("layer_norm_eps", 1e-5),
            c.String("hidden_act") ?? "gelu_new",
            c.Has("rope_theta") ? c.Double("rope_theta") : RopeNumber("rope_theta") ?? 10000,
            c.Has("partial_rotary_factor") ? c.Double("partial_rotary_factor") : RopeNumber("partial_rotary_factor") ?? 0.5,
            c.Bool("qk_layernorm", false));
        if (s.Hidden <= 0 || s.NHead <= 0 || s.NLayer <= 0 || s.Hidden % s.NHead != 0)
            throw new SaeSharpException($"{c.Path}: hidden_size={s.Hidden} must be a positive multiple of num_attention_heads={s.NHead} (and num_hidden_layers positive)");
        if (s.NKvHead <= 0 || s.NHead % s.NKvHead != 0)
            throw new SaeSharpException($"{c.Path}: num_attention_heads={s.NHead} must be a multiple of num_key_value_heads={s.NKvHead}");
        if (s.PartialRotaryFactor is <= 0 or > 1 || s.RotaryDim <= 0 || s.RotaryDim % 2 != 0)
            throw new SaeSharpException($"{c.Path}: partial_rotary_factor={s.PartialRotaryFactor} gives {s.RotaryDim} rotary dims of head_dim={s.HeadDim}; need a positive even number");
        if (c.Bool("tie_word_embeddings", false))
            throw new SaeSharpException($"{c.Path}: tie_word_embeddings=true is not supported for phi (its lm_head has a weight and bias of its own)");
        if (weights is not null)
        {
            weights.ExpectLayers(c.Path, "num_hidden_layers", s.NLayer);
            string dims = $"vocab_size={s.VocabSize}, hidden_size={s.Hidden}";
            weights.ExpectShape(c.Path, "model", "embed_tokens.weight", [s.VocabSize, s.Hidden], dims);
            weights.ExpectShape(c.Path, "", "lm_head.weight", [s.VocabSize, s.Hidden], dims);
            weights.ExpectShape(c.Path, "model", "layers.0.self_attn.q_proj.weight", [s.Hidden, s.Hidden],
                $"num_attention_heads={s.NHead}, hidden_size={s.Hidden}");
            weights.ExpectShape(c.Path, "model", "layers.0.self_attn.k_proj.weight", [(long)s.NKvHead * s.HeadDim, s.Hidden],
                $"num_key_value_heads={s.NKvHead}, head_dim={s.HeadDim}, hidden_size={s.Hidden}");
            weights.ExpectShape(c.Path, "model", "layers.0.mlp.fc1.weight", [s.Intermediate, s.Hidden],
                $"intermediate_size={s.Intermediate}, hidden_size={s.Hidden}");
            if (s.QkLayerNorm)
                foreach (var norm in new[] { "q_layernorm", "k_layernorm" })
                    weights.ExpectShape(c.Path, "model", $"layers.0.self_attn.{norm}.weight", [s.HeadDim],
                        $"qk_layernorm=true, head_dim={s.HeadDim}");
        }
        return s;
    }
}

/// <summary>
/// Phi (HF <c>PhiForCausalLM</c>: microsoft/phi-1, phi-1_5, phi-2) with TransformerLens hooks: token embeddings only
/// (rotary positions on the first int(head_dim · partial_rotary_factor) dims of q and k), a parallel block of one
/// LayerNorm (<c>input_layernorm</c>) feeding attention (q/k/v_proj and <c>dense</c>, all with bias) and a gelu_new MLP
/// (<c>fc1</c>, <c>fc2</c>), <c>final_layernorm</c>, and an untied <c>lm_head</c> with bias. State-dict keys are the HF ones
/// (<c>model.layers.0.self_attn.q_proj.weight</c>, <c>lm_head.bias</c>).
/// </summary>
public sealed class PhiModel : HookedTransformer
{
    private readonly ParallelCore model;
    private readonly Linear lm_head;
    private readonly PhiSettings _s;

    internal PhiModel(PhiSettings s, string modelName, string configPath, ScalarType dtype)
        : base("PhiForCausalLM", new TransformerConfig
        {
            ModelName = modelName, Architecture = "phi", NLayers = s.NLayer, DModel = s.Hidden, NHeads = s.NHead, NKvHeads = s.NKvHead,
            DHead = s.HeadDim, DMlp = s.Intermediate, DVocab = s.VocabSize, NCtx = s.MaxPositions, Activation = s.Activation,
            LayerNormEps = s.Eps, ParallelAttnMlp = true, RotaryDim = s.RotaryDim, RotaryBase = s.RopeTheta, Dtype = dtype,
        }, new HookPoints(s.NLayer, hasPosEmbed: false, parallelAttnMlp: true, rotary: true, HfModuleNames.Phi))
    {
        _s = s;
        model = new ParallelCore(s.Layout, s.NLayer, ActivationFunctions.Get(s.Activation, configPath), HookPoints, dtype);
        lm_head = new Linear(s.Hidden, s.VocabSize, true, dtype);
        RegisterComponents();
    }

    private protected override Tensor Embed(Tensor tokens, ForwardContext ctx)
    {
        (ctx.RotaryCos, ctx.RotarySin) = Rotary.CosSin(ctx.Positions, _s.RotaryDim, _s.RopeTheta, Config.Dtype);
        return ctx.Hooks.Fire(HookPoints.Embed, model.Embed.forward(tokens));
    }

    private protected override Tensor RunBlock(int layer, Tensor resid, ForwardContext ctx) => model.Layers[layer].forward(resid, ctx);

    private protected override Tensor FinalNorm(Tensor resid, ForwardContext ctx) =>
        ctx.Hooks.Fire(HookPoints.LnFinal, model.FinalNorm.Forward(resid, ctx.Hooks, HookPoints.LnFinalScale));

    private protected override Tensor UnembedNormalized(Tensor x) => lm_head.forward(x);
}
