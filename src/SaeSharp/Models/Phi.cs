using System.Text.Json;
using System.Text.Json.Nodes;
using SaeSharp.Hooks;
using TorchSharp;
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

/// <summary>HF <c>PhiAttention</c> of one layer: <c>q_proj</c>, <c>k_proj</c>, <c>v_proj</c> (bias; k/v with
/// num_key_value_heads heads), with qk_layernorm <c>q_layernorm</c> / <c>k_layernorm</c> (LayerNorm over head_dim, per
/// head, after hook_q / hook_k), rotary on the first rotary_dim dims of each head (rotate_half), scores × head_dim^-½,
/// <c>dense</c> (bias).</summary>
internal sealed class PhiAttention : nn.Module<Tensor, ForwardContext, Tensor>
{
    private readonly Linear q_proj, k_proj, v_proj, dense;
    private readonly LayerNorm? q_layernorm, k_layernorm;
    private readonly PhiSettings _s;
    private readonly int _layer;
    private readonly BlockHookNames _names;

    public PhiAttention(PhiSettings s, int layer, BlockHookNames names, ScalarType dtype) : base("self_attn")
    {
        (_s, _layer, _names) = (s, layer, names);
        q_proj = new Linear(s.Hidden, s.NHead * s.HeadDim, true, dtype);
        k_proj = new Linear(s.Hidden, s.NKvHead * s.HeadDim, true, dtype);
        v_proj = new Linear(s.Hidden, s.NKvHead * s.HeadDim, true, dtype);
        dense = new Linear(s.NHead * s.HeadDim, s.Hidden, true, dtype);
        if (s.QkLayerNorm)
        {
            q_layernorm = new LayerNorm(s.HeadDim, s.Eps, dtype);
            k_layernorm = new LayerNorm(s.HeadDim, s.Eps, dtype);
        }
        RegisterComponents();
    }

    public override Tensor forward(Tensor x, ForwardContext ctx)
    {
        long b = x.shape[0], s = x.shape[1];
        var st = _s;
        var (q, k, v) = ctx.SplitInputs is { } split
            ? (SplitAttentionInputs.Project(split.Q, q_proj.InOut.WeightInOut, q_proj.InOut.Bias),
                SplitAttentionInputs.Project(split.K, k_proj.InOut.WeightInOut, k_proj.InOut.Bias),
                SplitAttentionInputs.Project(split.V, v_proj.InOut.WeightInOut, v_proj.InOut.Bias))
            : (q_proj.forward(x).view(b, s, st.NHead, st.HeadDim), k_proj.forward(x).view(b, s, st.NKvHead, st.HeadDim),
                v_proj.forward(x).view(b, s, st.NKvHead, st.HeadDim));
        var z = AttentionCore.AttendHeads(q, k, v, _layer, 1.0 / Math.Sqrt(st.HeadDim), ctx, _names, st.RotaryDim, q_layernorm, k_layernorm);
        return AttentionCore.Project(z, st.NHead, dense.InOut, dense.forward, ctx, _names);
    }
}

/// <summary>HF <c>PhiMLP</c>: <c>fc1</c>, the activation (gelu_new), <c>fc2</c>, all with bias.</summary>
internal sealed class PhiMlp : nn.Module<Tensor, ForwardContext, Tensor>
{
    private readonly Linear fc1, fc2;
    private readonly Func<Tensor, Tensor> _act;
    private readonly BlockHookNames _names;

    public PhiMlp(PhiSettings s, Func<Tensor, Tensor> act, BlockHookNames names, ScalarType dtype) : base("mlp")
    {
        (_act, _names) = (act, names);
        fc1 = new Linear(s.Hidden, s.Intermediate, true, dtype);
        fc2 = new Linear(s.Intermediate, s.Hidden, true, dtype);
        RegisterComponents();
    }

    public override Tensor forward(Tensor x, ForwardContext ctx) => ResidualBlock.Mlp(x, ctx, _names, fc1, _act, fc2);
}

/// <summary>HF <c>PhiDecoderLayer</c> <c>layers.{layer}</c>: one <c>input_layernorm</c> whose output both the attention
/// and the MLP read, their outputs added to the residual together.</summary>
internal sealed class PhiLayer : nn.Module<Tensor, ForwardContext, Tensor>
{
    private readonly LayerNorm input_layernorm;
    private readonly PhiAttention self_attn;
    private readonly PhiMlp mlp;
    private readonly BlockHookNames _names;
    private readonly SplitAttentionInputs.Heads _heads;

    public PhiLayer(PhiSettings s, int layer, Func<Tensor, Tensor> act, BlockHookNames names, ScalarType dtype) : base("layer")
    {
        (_names, _heads) = (names, new(s.NHead, s.NKvHead));
        input_layernorm = new LayerNorm(s.Hidden, s.Eps, dtype);
        self_attn = new PhiAttention(s, layer, names, dtype);
        mlp = new PhiMlp(s, act, names, dtype);
        RegisterComponents();
    }

    /// <summary>resid + attn(ln(resid)) + mlp(ln(resid)): <see cref="ResidualBlock.Parallel"/>.</summary>
    public override Tensor forward(Tensor resid, ForwardContext ctx) =>
        ResidualBlock.Parallel(resid, ctx, _names, _heads, input_layernorm, x => self_attn.forward(x, ctx), x => mlp.forward(x, ctx));
}

/// <summary>The <c>model</c> submodule of HF PhiForCausalLM: embed_tokens, layers.{i}, final_layernorm.</summary>
internal sealed class PhiCore : nn.Module
{
    public readonly Embedding embed_tokens;
    public readonly ModuleList<PhiLayer> layers;
    public readonly LayerNorm final_layernorm;

    public PhiCore(PhiSettings s, Func<Tensor, Tensor> act, HookPoints hooks, ScalarType dtype) : base("model")
    {
        embed_tokens = new Embedding(s.VocabSize, s.Hidden, dtype);
        layers = new ModuleList<PhiLayer>(Enumerable.Range(0, s.NLayer).Select(i => new PhiLayer(s, i, act, hooks.Blocks[i], dtype)).ToArray());
        final_layernorm = new LayerNorm(s.Hidden, s.Eps, dtype);
        RegisterComponents();
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
    private readonly PhiCore model;
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
        model = new PhiCore(s, ActivationFunctions.Get(s.Activation, configPath), HookPoints, dtype);
        lm_head = new Linear(s.Hidden, s.VocabSize, true, dtype);
        RegisterComponents();
    }

    private protected override Tensor Embed(Tensor tokens, ForwardContext ctx)
    {
        (ctx.RotaryCos, ctx.RotarySin) = Rotary.CosSin(ctx.Positions, _s.RotaryDim, _s.RopeTheta, Config.Dtype);
        return ctx.Hooks.Fire(HookPoints.Embed, model.embed_tokens.forward(tokens));
    }

    private protected override Tensor RunBlock(int layer, Tensor resid, ForwardContext ctx) => model.layers[layer].forward(resid, ctx);

    private protected override Tensor FinalNorm(Tensor resid, ForwardContext ctx) =>
        ctx.Hooks.Fire(HookPoints.LnFinal, model.final_layernorm.Forward(resid, ctx.Hooks, HookPoints.LnFinalScale));

    private protected override Tensor UnembedNormalized(Tensor x) => lm_head.forward(x);
}
