using SaeSharp.Hooks;
using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;

namespace SaeSharp.Models;

/// <summary>HF <c>LlamaAttention</c> (and Mistral, Qwen2/3, OLMo, OLMo-2, OLMo 3, OLMoE, Gemma 1/2/3) of one layer: q_proj, k_proj, v_proj (grouped-query), optional
/// q_norm/k_norm (per head; OLMo-2/3, OLMoE: over the whole projection), OLMo's and OLMoE's clip_qkv, rotary (Gemma 3's sliding layers: their own frequencies), o_proj.</summary>
internal sealed class DecoderAttention : nn.Module<Tensor, ForwardContext, Tensor>
{
    private readonly Linear q_proj, k_proj, v_proj, o_proj;
    private readonly RmsNorm? q_norm, k_norm;
    /// <summary>gpt-oss: one learned logit per head, an extra column of the attention softmax.</summary>
    private readonly Parameter? sinks;
    private readonly DecoderSettings _s;
    private readonly int _layer;
    private readonly BlockHookNames _names;

    public DecoderAttention(DecoderSettings s, int layer, BlockHookNames names, ScalarType dtype) : base("self_attn")
    {
        (_s, _layer, _names) = (s, layer, names);
        q_proj = new Linear(s.Hidden, s.NHead * s.HeadDim, s.QkvBias, dtype);
        k_proj = new Linear(s.Hidden, s.NKvHead * s.HeadDim, s.QkvBias, dtype);
        v_proj = new Linear(s.Hidden, s.NKvHead * s.HeadDim, s.QkvBias, dtype);
        o_proj = new Linear(s.NHead * s.HeadDim, s.Hidden, s.OBias, dtype);
        if (s.QkNorm)
        {
            q_norm = new RmsNorm(s.HeadDim, s.Eps, s.Gemma, dtype);
            k_norm = new RmsNorm(s.HeadDim, s.Eps, s.Gemma, dtype);
        }
        else if (s.QkNormWhole)
        {
            q_norm = new RmsNorm(s.NHead * s.HeadDim, s.Eps, false, dtype, weightInFloat32: s.Olmo2);
            k_norm = new RmsNorm(s.NKvHead * s.HeadDim, s.Eps, false, dtype, weightInFloat32: s.Olmo2);
        }
        if (s.GptOss) sinks = new Parameter(zeros(s.NHead, dtype: dtype), requires_grad: false);
        RegisterComponents();
    }

    public override Tensor forward(Tensor x, ForwardContext ctx)
    {
        var st = _s;
        bool sliding = st.SlidingLayers[_layer];
        var (q, k, v) = AttentionCore.SeparateQkv(q_proj, k_proj, v_proj, st.NHead, st.NKvHead, st.HeadDim, x, ctx);
        var z = AttentionCore.AttendHeads(q, k, v, _layer, st.AttnScale, ctx, _names, st.RotaryDim, q_norm, k_norm,
            st.AttnSoftCap, sliding ? st.SlidingWindow : null, localRotary: sliding, normOverHeads: st.QkNormWhole, clip: st.ClipQkv, sinks: sinks);
        return AttentionCore.Project(z, st.NHead, o_proj.InOut, o_proj.forward, ctx, _names);
    }
}

/// <summary>Gated MLP: down(act(gate(x)) · up(x)) (SwiGLU with silu, GeGLU with tanh-GELU).</summary>
internal sealed class GatedMlp : nn.Module<Tensor, ForwardContext, Tensor>
{
    private readonly Linear gate_proj, up_proj, down_proj;
    private readonly Func<Tensor, Tensor> _act;
    private readonly BlockHookNames _names;

    public GatedMlp(DecoderSettings s, Func<Tensor, Tensor> act, BlockHookNames names, ScalarType dtype) : base("mlp")
    {
        (_act, _names) = (act, names);
        gate_proj = new Linear(s.Hidden, s.Intermediate, s.MlpBias, dtype);
        up_proj = new Linear(s.Hidden, s.Intermediate, s.MlpBias, dtype);
        down_proj = new Linear(s.Intermediate, s.Hidden, s.MlpBias, dtype);
        RegisterComponents();
    }

    public override Tensor forward(Tensor x, ForwardContext ctx)
    {
        var h = ctx.Hooks;
        var gate = h.Fire(_names.MlpPre, gate_proj.forward(x));
        var up = h.Fire(_names.MlpPreLinear, up_proj.forward(x));
        var post = h.Fire(_names.MlpPost, _act(gate) * up);
        return down_proj.forward(post);
    }
}

/// <summary>One expert of a sparse MoE block (or Qwen2-MoE's shared expert): down(act(gate·x) · up·x), named as the
/// checkpoint names it (Mixtral's <c>MixtralBlockSparseTop2MLP</c>: w1, w3, w2; Qwen-MoE's <c>Qwen2MoeMLP</c> /
/// <c>Qwen3MoeMLP</c>: gate_proj, up_proj, down_proj).</summary>
internal sealed class MoeExpert : nn.Module
{
    public readonly Linear Gate, Up, Down;

    /// <summary>One expert's gate/up/down projections, <paramref name="width"/> wide; biases on them only when
    /// <paramref name="bias"/> (DeepSeek-V2's shared experts with <c>mlp_bias</c>, a DeepseekV2MLP; routed experts never have
    /// them). <paramref name="s"/> gives the hidden size and model type, <paramref name="dtype"/> the weights' type.</summary>
    public MoeExpert(DecoderSettings s, long width, ScalarType dtype, bool bias = false) : base("expert")
    {
        Gate = new Linear(s.Hidden, width, bias, dtype);
        Up = new Linear(s.Hidden, width, bias, dtype);
        Down = new Linear(width, s.Hidden, bias, dtype);
        bool mixtral = s.ModelType == "mixtral";
        register_module(mixtral ? "w1" : "gate_proj", Gate);
        register_module(mixtral ? "w3" : "up_proj", Up);
        register_module(mixtral ? "w2" : "down_proj", Down);
    }
}

/// <summary>
/// HF <c>MixtralSparseMoeBlock</c> (<c>block_sparse_moe</c>) and <c>Qwen2MoeSparseMoeBlock</c> / <c>Qwen3MoeSparseMoeBlock</c> /
/// <c>OlmoeSparseMoeBlock</c> (<c>mlp</c>): the router <c>gate</c> scores each token against every expert, softmax in float32, the top
/// <c>num_experts_per_tok</c> experts are kept with their weights (renormalised to sum 1: Mixtral, Qwen-MoE's and OLMoE's <c>norm_topk_prob</c>) cast back to the hidden
/// dtype, and the output is the weighted sum of those experts' outputs, added expert by expert as transformers adds them.
/// Qwen2-MoE (<c>Qwen2MoeSparseMoeBlock</c>) adds a shared expert every token goes through, its output scaled by
/// sigmoid(<c>shared_expert_gate</c>·x). Router jitter is training-only and not applied.
/// </summary>
internal sealed class SparseMoeBlock : nn.Module<Tensor, ForwardContext, Tensor>
{
    /// <summary>The router: a <see cref="Linear"/> (softmax routing), or DeepSeek-V3's <see cref="GroupLimitedRouter"/>.</summary>
    private readonly nn.Module gate;
    private readonly ModuleList<MoeExpert> experts;
    private readonly MoeExpert? shared_expert;
    private readonly Linear? shared_expert_gate;
    /// <summary>DeepSeek-V3's shared experts (<c>mlp.shared_experts</c>, n_shared_experts of them fused into one MLP), added ungated.</summary>
    private readonly MoeExpert? shared_experts;
    private readonly Func<Tensor, Tensor> _act;
    private readonly BlockHookNames _names;
    private readonly int _topK;
    private readonly bool _normTopK;
    private readonly GroupRouting? _groupRouting;

    public SparseMoeBlock(DecoderSettings s, Func<Tensor, Tensor> act, BlockHookNames names, ScalarType dtype) : base("moe")
    {
        (_act, _names, _topK, _normTopK, _groupRouting) = (act, names, s.ExpertsPerToken, s.NormTopKProb, s.GroupRouting);
        gate = _groupRouting is null ? new Linear(s.Hidden, s.NumExperts, false, dtype) : new GroupLimitedRouter(s, dtype);
        experts = new ModuleList<MoeExpert>(Enumerable.Range(0, s.NumExperts).Select(_ => new MoeExpert(s, s.ExpertIntermediate, dtype)).ToArray());
        if (s.SharedExpertIntermediate > 0)
        {
            if (_groupRouting is not null) shared_experts = new MoeExpert(s, s.SharedExpertIntermediate, dtype, bias: s.MlpBias);
            else
            {
                shared_expert = new MoeExpert(s, s.SharedExpertIntermediate, dtype);
                shared_expert_gate = new Linear(s.Hidden, 1, false, dtype);
            }
        }
        RegisterComponents();
    }

    public override Tensor forward(Tensor x, ForwardContext ctx)
    {
        var h = ctx.Hooks;
        long b = x.shape[0], s = x.shape[1], d = x.shape[2], n = b * s, nExperts = experts.Count;
        var flat = x.reshape(n, d);
        Tensor weights, chosen;
        if (gate is GroupLimitedRouter router)
        {
            // DeepSeek-V3: the hook holds the sigmoid scores; the weights stay float32 until each expert's product, as
            // transformers 5's DeepseekV3NaiveMoe multiplies them.
            var scores = h.Fire(_names.ExpertWeights, router.Scores(flat).view(b, s, nExperts)).reshape(n, nExperts);
            (chosen, weights) = GroupLimitedRouter.Route(scores, router.e_score_correction_bias, _groupRouting!, _topK, _normTopK);
        }
        else
        {
            var probs = nn.functional.softmax(((Linear)gate).forward(flat), 1, ScalarType.Float32);
            probs = h.Fire(_names.ExpertWeights, probs.view(b, s, nExperts)).reshape(n, nExperts);
            (weights, chosen) = probs.topk(_topK, -1);
            if (_normTopK) weights = weights / weights.sum(-1, keepdim: true);
            weights = weights.to(x.dtype);
        }
        chosen = h.Fire(_names.ExpertIndices, chosen.view(b, s, _topK)).reshape(n, _topK);
        if (h.Wants(_names.ExpertIndices) && chosen.numel() > 0)
        {
            long lo = chosen.min().item<long>(), hi = chosen.max().item<long>();
            if (lo < 0 || hi >= nExperts)
                throw new SaeSharpException($"hook '{_names.ExpertIndices}' gave expert index {(lo < 0 ? lo : hi)}; the experts are 0..{nExperts - 1}");
        }
        var result = zeros(n, d, dtype: x.dtype, device: x.device);
        for (int e = 0; e < nExperts; e++)
        {
            var routed = chosen.eq(TorchScalars.Of(e)).nonzero();   // [tokens routed to e, 2]: token, slot
            var token = routed.select(1, 0);
            var slot = routed.select(1, 1);
            var expert = experts[e];
            var xe = flat.index_select(0, token);
            var (gateName, preName, postName) = _names.Experts[e];
            var g = Routed(h, gateName, expert.Gate.forward(xe), token, b, s);
            var pre = Routed(h, preName, expert.Up.forward(xe), token, b, s);
            var post = Routed(h, postName, _act(g) * pre, token, b, s);
            var w = weights.index_select(0, token).gather(1, slot.unsqueeze(1));   // [tokens, 1]
            result.index_add_(0, token, (expert.Down.forward(post) * w).to(x.dtype), TorchScalars.One);
        }
        if (shared_expert is not null && shared_expert_gate is not null)
        {
            var (gateName, preName, postName) = _names.SharedExpert;
            var g = h.Fire(gateName, shared_expert.Gate.forward(x));
            var pre = h.Fire(preName, shared_expert.Up.forward(x));
            var post = h.Fire(postName, _act(g) * pre);
            var scale = h.Fire(_names.SharedExpertGate, nn.functional.sigmoid(shared_expert_gate.forward(x)));
            result = result.add((scale * shared_expert.Down.forward(post)).reshape(n, d), TorchScalars.One);
        }
        if (shared_experts is not null)
        {
            var (gateName, preName, postName) = _names.SharedExpert;
            var g = h.Fire(gateName, shared_experts.Gate.forward(x));
            var pre = h.Fire(preName, shared_experts.Up.forward(x));
            var post = h.Fire(postName, _act(g) * pre);
            result = result.add(shared_experts.Down.forward(post).reshape(n, d), TorchScalars.One);
        }
        return result.view(b, s, d);
    }

    /// <summary>Fires an expert's hook as [batch, pos, d_mlp] (zero at the tokens not routed to it) when anything reads it,
    /// with <see cref="HookRunner.CurrentRows"/> the routed tokens, and returns the routed tokens' rows of the result.</summary>
    internal static Tensor Routed(HookRunner h, string name, Tensor rows, Tensor token, long b, long s)
    {
        if (!h.Wants(name)) return rows;
        var full = zeros(b * s, rows.shape[1], dtype: rows.dtype, device: rows.device).index_copy_(0, token, rows);
        var outer = HookRunner.CurrentRows;
        HookRunner.CurrentRows = zeros(b * s, dtype: ScalarType.Bool, device: rows.device)
            .index_fill_(0, token, TorchScalars.One).view(b, s);
        try
        {
            return h.Fire(name, full.view(b, s, rows.shape[1])).reshape(b * s, rows.shape[1]).index_select(0, token);
        }
        finally
        {
            HookRunner.CurrentRows = outer;
        }
    }
}

/// <summary>HF decoder layer <c>layers.{layer}</c>: input_layernorm, self_attn, post_attention_layernorm, mlp in sequence
/// (OLMo 1: both norms <see cref="OlmoLayerNorm"/>, without weights; Gemma 2/3: post_attention_layernorm on the attention output, pre/post_feedforward_layernorm around the MLP; OLMo-2:
/// no input_layernorm, post_attention_layernorm on the attention output, post_feedforward_layernorm on the MLP output; OLMo 3 as OLMo-2).</summary>
internal sealed class DecoderLayer : nn.Module<Tensor, ForwardContext, Tensor>
{
    private readonly HookedNorm? input_layernorm;
    private readonly HookedNorm post_attention_layernorm;
    private readonly RmsNorm? pre_feedforward_layernorm;
    private readonly RmsNorm? post_feedforward_layernorm;
    /// <summary>A <see cref="DecoderAttention"/>, or DeepSeek-V3's <see cref="MlaAttention"/>.</summary>
    private readonly nn.Module<Tensor, ForwardContext, Tensor> self_attn;
    /// <summary>A <see cref="GatedMlp"/>, or Qwen-MoE's <see cref="SparseMoeBlock"/>.</summary>
    private readonly nn.Module<Tensor, ForwardContext, Tensor>? mlp;
    /// <summary>Mixtral's <see cref="SparseMoeBlock"/>.</summary>
    private readonly SparseMoeBlock? block_sparse_moe;
    private readonly BlockHookNames _names;
    private readonly SplitAttentionInputs.Heads _heads;

    public DecoderLayer(DecoderSettings s, int layer, Func<Tensor, Tensor> act, BlockHookNames names, ScalarType dtype) : base("layer")
    {
        _names = names;
        _heads = new(s.NHead, s.NKvHead, s.Mla is null ? null
            : "DeepSeek's latent attention projects every head through shared low-rank latents (q_a_proj, kv_a_proj_with_mqa) " +
              "and one shared rotary key, so one head's input has no query, key or value of its own");
        if (!s.Olmo2) input_layernorm = DecoderCore.Norm(s, dtype);
        post_attention_layernorm = DecoderCore.Norm(s, dtype);
        if (s.Olmo2) post_feedforward_layernorm = new RmsNorm(s.Hidden, s.Eps, false, dtype, weightInFloat32: true);
        else if (s.PostNorms)
        {
            pre_feedforward_layernorm = new RmsNorm(s.Hidden, s.Eps, true, dtype);
            post_feedforward_layernorm = new RmsNorm(s.Hidden, s.Eps, true, dtype);
        }
        self_attn = s.Mla is not null ? new MlaAttention(s, layer, names, dtype) : new DecoderAttention(s, layer, names, dtype);
        if (s.ModelType == "mixtral") block_sparse_moe = new SparseMoeBlock(s, act, names, dtype);
        else if (s.IsDenseMlp(layer)) mlp = new GatedMlp(s, act, names, dtype);   // DeepSeek's first_k_dense_replace, Qwen-MoE's mlp_only_layers

        else if (s.GptOss) mlp = new GptOssMlp(s, names, dtype);
        else if (s.NumExperts > 0) mlp = new SparseMoeBlock(s, act, names, dtype);
        else mlp = new GatedMlp(s, act, names, dtype);
        RegisterComponents();
    }

    public override Tensor forward(Tensor resid, ForwardContext ctx)
    {
        Tensor Mlp(Tensor x) => (block_sparse_moe ?? mlp!).forward(x, ctx);
        if (input_layernorm is null)   // OLMo-2
            return ResidualBlock.PostNormOnly(resid, ctx, _names, _heads, x => self_attn.forward(x, ctx), post_attention_layernorm,
                Mlp, post_feedforward_layernorm!);
        // Gemma 2/3: post_attention_layernorm normalises the attention output (ln1_post, as TransformerLens); pre_feedforward_layernorm
        // is ln2, post_feedforward_layernorm ln2_post.
        if (pre_feedforward_layernorm is { } preFf && post_feedforward_layernorm is { } postFf)
            return ResidualBlock.Sequential(resid, ctx, _names, _heads, input_layernorm,
                x => ctx.Hooks.Fire(_names.Ln1Post, post_attention_layernorm.Forward(self_attn.forward(x, ctx), ctx.Hooks, _names.Ln1PostScale)),
                preFf, x => ctx.Hooks.Fire(_names.Ln2Post, postFf.Forward(Mlp(x), ctx.Hooks, _names.Ln2PostScale)));
        return ResidualBlock.Sequential(resid, ctx, _names, _heads, input_layernorm, x => self_attn.forward(x, ctx),
            post_attention_layernorm, Mlp);
    }
}

/// <summary>The <c>model</c> submodule of HF <c>*ForCausalLM</c>: embed_tokens, layers.{i}, norm.</summary>
internal sealed class DecoderCore : nn.Module
{
    public readonly Embedding embed_tokens;
    public readonly ModuleList<DecoderLayer> layers;
    public readonly HookedNorm norm;

    public DecoderCore(DecoderSettings s, Func<Tensor, Tensor> act, HookPoints hooks, ScalarType dtype) : base("model")
    {
        embed_tokens = new Embedding(s.VocabSize, s.Hidden, dtype);
        layers = new ModuleList<DecoderLayer>(Enumerable.Range(0, s.NLayer).Select(i => new DecoderLayer(s, i, act, hooks.Blocks[i], dtype)).ToArray());
        norm = Norm(s, dtype);
        RegisterComponents();
    }

    /// <summary>The family's residual-stream norm: <see cref="OlmoLayerNorm"/> for OLMo 1, else <see cref="RmsNorm"/>
    /// (Gemma's (1 + w), OLMo-2/3's weight applied in float32).</summary>
    internal static HookedNorm Norm(DecoderSettings s, ScalarType dtype) => s.NonParametricLayerNorm
        ? new OlmoLayerNorm(s.Hidden) : new RmsNorm(s.Hidden, s.Eps, s.Gemma, dtype, weightInFloat32: s.Olmo2);
}

/// <summary>
/// Llama-layout decoders with TransformerLens hooks: Llama 2/3.x (TinyLlama, SmolLM2; rope_scaling llama3), Mistral
/// (sliding_window on every layer when set), Mixtral (Mistral's attention and a sparse mixture-of-experts MLP), Qwen2/2.5
/// (q/k/v biases), Qwen2-MoE (Qwen2's attention, a sparse MoE MLP with a shared expert), Qwen3 (per-head q/k RMSNorm),
/// Qwen3-MoE (Qwen3's attention, a sparse MoE MLP), OLMo (weightless LayerNorms, clip_qkv), OLMo-2 (post-norms only,
/// whole-projection q/k norms), OLMo 3 (OLMo-2 with sliding-window layers), OLMoE, Gemma 1 (√d_model
/// embedding scale, (1+w) RMSNorm, GeGLU, multi-query attention, no post-norms, caps or window), Gemma 2 (√d_model embedding scale, (1+w) RMSNorm, post-norms,
/// GeGLU, query_pre_attn_scalar, attention and final soft caps, sliding window on alternating layers) and Gemma 3
/// (as Gemma 2 without default soft caps and never an attention cap, as transformers, plus (1+w) q/k RMSNorm, sliding_window_pattern or layer_types, and a separate
/// RoPE base for the sliding layers; <c>Gemma3ForConditionalGeneration</c> checkpoints load their language model only),
/// and Phi-3 (fused qkv_proj / gate_up_proj split on reading by <see cref="Phi3"/>, partial_rotary_factor, sliding_window on every layer).
/// State-dict keys are the HF ones (<c>model.layers.0.self_attn.q_proj.weight</c>, <c>lm_head.weight</c> when untied).
/// <para><c>hook_embed</c> is what enters the residual stream (for Gemma, already × √d_model, as TransformerLens folds
/// the scale into W_E). With grouped-query attention <c>attn.hook_k/v/rot_k</c> have n_key_value_heads heads; hook_q/k
/// precede Qwen3's and Gemma 3's q/k norms. For Gemma 2/3, <c>hook_attn_out</c> / <c>hook_mlp_out</c> are after the
/// post-norms: exactly what is added to the residual stream, which those norms' outputs <c>ln1_post.hook_normalized</c> /
/// <c>ln2_post.hook_normalized</c> (TransformerLens's names) hold too, with their <c>hook_scale</c>.</para>
/// </summary>
public sealed class LlamaFamilyModel : HookedTransformer
{
    private readonly DecoderCore model;
    private Linear? lm_head;
    private readonly DecoderSettings _s;
    private readonly float[] _invFreq;
    private readonly float[]? _localInvFreq;
    private readonly float[]? _longInvFreq;

    internal LlamaFamilyModel(DecoderSettings s, string modelName, string configPath, ScalarType dtype)
        : base(ArchitectureName(s.ModelType), new TransformerConfig
        {
            ModelName = modelName, Architecture = s.ModelType, NLayers = s.NLayer, DModel = s.Hidden, NHeads = s.NHead,
            NKvHeads = s.NKvHead, DHead = s.HeadDim, DMlp = s.Intermediate, DVocab = s.VocabSize, NCtx = s.MaxPositions,
            Activation = s.Activation, LayerNormEps = s.Eps, RotaryDim = s.RotaryDim, RotaryBase = s.RopeTheta, Dtype = dtype,
            GatedMlp = true, NormalizationType = s.NonParametricLayerNorm ? "LN" : "RMS", AttnScoresSoftCap = s.AttnSoftCap, OutputLogitsSoftCap = s.FinalSoftCap,
            SlidingWindow = s.SlidingWindow, RotaryBaseLocal = s.LocalRopeTheta, ClipQkv = s.ClipQkv, RopeScaling = s.RopeScaling,
            SlidingWindowLayers = [.. Enumerable.Range(0, s.NLayer).Where(i => s.SlidingLayers[i])], AttentionSinks = s.GptOss,
            NumExperts = s.NumExperts, ExpertsPerToken = s.ExpertsPerToken, NormTopKProb = s.NormTopKProb, SharedExpertDMlp = s.SharedExpertIntermediate,
            DHeadQk = s.Mla?.QkHeadDim, QLoraRank = s.Mla?.QLoraRank, KvLoraRank = s.Mla?.KvLoraRank ?? 0, RopeInterleave = s.Mla?.RopeInterleave ?? false,
            MoeDMlp = s.MoeIntermediate > 0 ? s.MoeIntermediate : null, FirstKDenseReplace = s.FirstDenseLayers,
            DenseMlpLayers = s.DenseMlpLayers is { } dense ? [.. Enumerable.Range(0, s.NLayer).Where(i => dense[i])] : [],
            GroupRouting = s.GroupRouting is { } g ? g.TopkMethod == "greedy"
                ? FormattableString.Invariant($"topk_method=greedy routed_scaling_factor={g.RoutedScalingFactor} softmax_routing")
                : FormattableString.Invariant($"{(g.Sigmoid ? "" : "topk_method=group_limited_greedy ")}n_group={g.NGroup} topk_group={g.TopkGroup} routed_scaling_factor={g.RoutedScalingFactor} {(g.Sigmoid ? "sigmoid" : "softmax")}_routing") : null,
        }, new HookPoints(s.NLayer, hasPosEmbed: false, parallelAttnMlp: false, rotary: true,
            s.ModelType == "gemma3" ? HfModuleNames.Gemma3Conditional : s.PostNorms ? HfModuleNames.Gemma2
            : s.ModelType == "mixtral" ? HfModuleNames.Mixtral : s.GptOss ? HfModuleNames.GptOss : s.Olmo2 ? HfModuleNames.Olmo2 : HfModuleNames.Llama,
            gatedMlp: s.NumExperts == 0 || s.DenseMlpLayers is not null, s.NumExperts,
            sharedExpert: s.SharedExpertIntermediate > 0, denseMlpLayers: s.DenseMlpLayers, sharedExpertGate: s.GroupRouting is null,
            qLatent: s.Mla?.QLoraRank is not null, kvLatent: s.Mla is not null, postNorms: s.PostNorms))
    {
        _s = s;
        model = new DecoderCore(s, ActivationFunctions.Get(s.Activation, configPath), HookPoints, dtype);
        if (!s.TieEmbeddings) lm_head = new Linear(s.Hidden, s.VocabSize, false, dtype);
        RegisterComponents();
        _invFreq = s.InvFreq.Select(x => (float)x).ToArray();
        _localInvFreq = s.LocalInvFreq?.Select(x => (float)x).ToArray();
        _longInvFreq = s.LongRope?.LongInvFreq.Select(x => (float)x).ToArray();
    }

    internal static string ArchitectureName(string modelType) => modelType switch
    {
        "mistral" => "MistralForCausalLM",
        "mixtral" => "MixtralForCausalLM",
        "qwen3_moe" => "Qwen3MoeForCausalLM",
        "qwen2_moe" => "Qwen2MoeForCausalLM",
        "qwen2" => "Qwen2ForCausalLM",
        "qwen3" => "Qwen3ForCausalLM",
        "olmo" => "OlmoForCausalLM",
        "olmo2" => "Olmo2ForCausalLM",
        "olmo3" => "Olmo3ForCausalLM",
        "olmoe" => "OlmoeForCausalLM",
        "gemma" => "GemmaForCausalLM",
        "gemma2" => "Gemma2ForCausalLM",
        "gemma3_text" => "Gemma3ForCausalLM",
        "gemma3" => "Gemma3ForConditionalGeneration",
        "gpt_oss" => "GptOssForCausalLM",
        "deepseek_v3" => "DeepseekV3ForCausalLM",
        "deepseek_v2" => "DeepseekV2ForCausalLM",
        "phi3" => "Phi3ForCausalLM",
        _ => "LlamaForCausalLM",
    };

    private protected override Tensor Embed(Tensor tokens, ForwardContext ctx)
    {
        // Phi-3 longrope: the long factors once the pass reaches past original_max_position_embeddings (HF
        // longrope_frequency_update: max(position_ids) + 1 > original).
        var invFreq = _longInvFreq is not null && ctx.Positions.numel() > 0 && ctx.Positions.max().item<long>() + 1 > _s.LongRope!.OriginalMax
            ? _longInvFreq : _invFreq;
        (ctx.RotaryCos, ctx.RotarySin) = Rotary.CosSin(ctx.Positions, tensor(invFreq, device: ctx.Positions.device), Config.Dtype, _s.RopeAttentionScaling);
        if (_localInvFreq is not null)
            ctx.LocalRotary = Rotary.CosSin(ctx.Positions, tensor(_localInvFreq, device: ctx.Positions.device), Config.Dtype, _s.LocalRopeAttentionScaling);
        var e = model.embed_tokens.forward(tokens);
        // HF Gemma 1 and 2: the normaliser √hidden_size is a tensor of the hidden states' dtype; Gemma 3: a float32 tensor
        // cast to the weights' dtype.
        if (_s.Gemma)
            e = e * (_s.Gemma3 ? tensor((float)Math.Sqrt(_s.Hidden)).to(Config.Dtype) : tensor(Math.Sqrt(_s.Hidden), dtype: Config.Dtype));
        return ctx.Hooks.Fire(HookPoints.Embed, e);
    }

    private protected override Tensor RunBlock(int layer, Tensor resid, ForwardContext ctx) => model.layers[layer].forward(resid, ctx);

    private protected override Tensor FinalNorm(Tensor resid, ForwardContext ctx) =>
        ctx.Hooks.Fire(HookPoints.LnFinal, model.norm.Forward(resid, ctx.Hooks, HookPoints.LnFinalScale));

    internal override void UntieEmbeddings()
    {
        if (lm_head is not null) return;
        lm_head = Linear.CopyOf(model.embed_tokens.Weight);
        register_module("lm_head", lm_head);
    }

    private protected override Tensor UnembedNormalized(Tensor x)
    {
        var logits = lm_head is not null ? lm_head.forward(x) : nn.functional.linear(x, model.embed_tokens.Weight);
        if (_s.FinalSoftCap is double cap)
        {
            using var capScalar = cap.ToScalar();
            logits = (logits.to(ScalarType.Float32) / capScalar).tanh() * capScalar;
        }
        return logits;
    }
}
