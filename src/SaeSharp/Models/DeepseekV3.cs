using System.Text.Json;
using System.Text.Json.Nodes;
using SaeSharp.Hooks;
using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;

namespace SaeSharp.Models;

/// <summary>DeepSeek-V3 multi-head latent attention sizes (HF <c>DeepseekV3Config</c>): q through a rank-<see cref="QLoraRank"/>
/// bottleneck (null: one <c>q_proj</c>), k and v through the rank-<see cref="KvLoraRank"/> latent, each head's q and k
/// <see cref="QkNopeHeadDim"/> dims without rotary followed by <see cref="QkRopeHeadDim"/> rotated ones (k's shared by the heads).
/// <see cref="RopeInterleave"/>: the rotary dims are pairs (0, 1), (2, 3), …; <see cref="RopePairsInPlace"/> (DeepSeek-V2):
/// the rotated pairs stay in that order, else (DeepSeek-V3) they come out de-interleaved (evens, then odds).</summary>
internal sealed record MlaSettings(int? QLoraRank, int KvLoraRank, int QkNopeHeadDim, int QkRopeHeadDim, int VHeadDim, bool RopeInterleave, bool RopePairsInPlace = false)
{
    /// <summary>Dims of each head's q and k (<c>qk_head_dim</c>).</summary>
    public int QkHeadDim => QkNopeHeadDim + QkRopeHeadDim;
}

/// <summary>DeepSeek's routers by <see cref="TopkMethod"/>: <c>noaux_tc</c> (DeepSeek-V3, HF <c>DeepseekV3TopkRouter</c>):
/// sigmoid scores, the experts split into <see cref="NGroup"/> groups of which the <see cref="TopkGroup"/> best (by the sum
/// of their two best biased scores) are eligible, the chosen weights (renormalised when norm_topk_prob) times
/// <see cref="RoutedScalingFactor"/>; <c>greedy</c> (DeepSeek-V2, HF <c>DeepseekV2Moe</c>): softmax over every expert, the
/// top k, times the factor; <c>group_limited_greedy</c> (DeepSeek-V2): as greedy among the experts of the topk_group
/// groups with the highest single score.</summary>
internal sealed record GroupRouting(int NGroup, int TopkGroup, double RoutedScalingFactor, string TopkMethod = "noaux_tc")
{
    /// <summary>Sigmoid scores and the <c>e_score_correction_bias</c> (noaux_tc); else softmax scores and no bias.</summary>
    public bool Sigmoid => TopkMethod == "noaux_tc";
}

internal sealed partial record DecoderSettings
{
    /// <summary>DeepSeek-V2/V3: multi-head latent attention (<see cref="MlaAttention"/>) in place of q/k/v projections.</summary>
    public MlaSettings? Mla { get; init; }
    /// <summary>DeepSeek-V2/V3: DeepSeek's routing (<see cref="GroupLimitedRouter"/>), shared experts without a gate.</summary>
    public GroupRouting? GroupRouting { get; init; }
    /// <summary>Width of each routed expert when it differs from <see cref="Intermediate"/> (DeepSeek-V2/V3, Qwen-MoE with
    /// dense layers: <c>moe_intermediate_size</c>; <see cref="Intermediate"/> is then the dense layers' MLP); 0: <see cref="Intermediate"/>.</summary>
    public int MoeIntermediate { get; init; }
    /// <summary>Per layer of a mixture-of-experts model: true where the layer has a dense MLP of <see cref="Intermediate"/>
    /// instead (DeepSeek <c>first_k_dense_replace</c>; Qwen-MoE <c>mlp_only_layers</c>, <c>decoder_sparse_step</c>); null: none.</summary>
    public bool[]? DenseMlpLayers { get; init; }
    /// <summary>How many leading layers have a dense MLP (DeepSeek's first_k_dense_replace).</summary>
    public int FirstDenseLayers => DenseMlpLayers is null ? 0 : DenseMlpLayers.TakeWhile(d => d).Count();
    /// <summary>True when <paramref name="layer"/> of a mixture-of-experts model has a dense MLP.</summary>
    public bool IsDenseMlp(int layer) => DenseMlpLayers is { } d && d[layer];

    /// <summary>Width of each routed expert.</summary>
    public int ExpertIntermediate => MoeIntermediate > 0 ? MoeIntermediate : Intermediate;

    /// <summary>The block size (<c>weight_block_size</c>, rows × columns) of a DeepSeek-V3 FP8 checkpoint (quantization_config
    /// quant_method <c>fp8</c>, fmt <c>e4m3</c>), null without a quantization_config; any other quantisation is refused.</summary>
    internal static (int Rows, int Cols)? DeepseekFp8Blocks(JsonConfig c)
    {
        if (c.Root["quantization_config"] is not { } node || node.GetValueKind() == JsonValueKind.Null) return null;
        var q = node as JsonObject ?? throw new SaeSharpException($"{c.Path}: quantization_config must be an object");
        string method = q["quant_method"]?.ToString() ?? "?", fmt = q["fmt"]?.ToString() ?? "e4m3";
        if (method != "fp8" || fmt != "e4m3")
            throw new SaeSharpException($"{c.Path}: quantization_config quant_method '{method}' (fmt '{fmt}') is not supported " +
                                        "(deepseek_v3 reads float weights, or fp8 e4m3 with block-wise weight_scale_inv as the hub stores DeepSeek-V3)");
        int[] block = q["weight_block_size"] is JsonArray a && a.Count == 2 && a.All(x => x is JsonValue v && v.TryGetValue<int>(out int n) && n > 0)
            ? [.. a.Select(x => x!.GetValue<int>())]
            : q["weight_block_size"] is null ? [128, 128]
            : throw new SaeSharpException($"{c.Path}: quantization_config weight_block_size must be two positive integers, got {q["weight_block_size"]!.ToJsonString()}");
        return (block[0], block[1]);
    }

    /// <summary>Reads a <c>deepseek_v3</c> config.json (DeepSeek-V3/R1, Kimi-K2, Moonlight) with <c>DeepseekV3Config</c>'s
    /// defaults, or a <c>deepseek_v2</c> one (DeepSeek-V2, V2-Lite, Coder-V2) with <c>DeepseekV2Config</c>'s, checking the
    /// sizes against <paramref name="weights"/>.</summary>
    private static DecoderSettings Deepseek(JsonConfig c, Checkpoint? weights, string modelType)
    {
        bool v2 = modelType == "deepseek_v2";
        int hidden = c.Int("hidden_size", v2 ? 4096 : 7168), nHead = c.Int("num_attention_heads", v2 ? 32 : 128), nLayer = c.Int("num_hidden_layers", v2 ? 32 : 61);
        int vocab = c.Int("vocab_size", v2 ? 32_000 : 129_280), intermediate = c.Int("intermediate_size", v2 ? 11_008 : 18_432);
        int moeIntermediate = c.Int("moe_intermediate_size", v2 ? 1407 : 2048);
        int? OptInt(string key, int fallback) => c.Root.ContainsKey(key) ? c.Root[key] is null ? null : c.Int(key) : fallback;
        int? qLora = OptInt("q_lora_rank", 1536);
        int kvLora = c.Int("kv_lora_rank", 512), rope = c.Int("qk_rope_head_dim", 64), nope = c.Int("qk_nope_head_dim", 128), vHead = c.Int("v_head_dim", 128);
        int nKv = c.Root["num_key_value_heads"] is not null ? c.Int("num_key_value_heads") : nHead;
        int experts = c.Int("n_routed_experts", c.Int("num_local_experts", v2 ? 64 : 256));
        // DeepseekV2Config: num_experts_per_tok, n_group and topk_group have no default (None); n_shared_experts null is none.
        int perToken = v2 ? c.Int("num_experts_per_tok") : c.Int("num_experts_per_tok", 8);
        int shared = c.Root["n_shared_experts"] is null && c.Root.ContainsKey("n_shared_experts") ? 0 : c.Int("n_shared_experts", v2 ? 2 : 1);
        int firstDense = c.Int("first_k_dense_replace", v2 ? 0 : 3);
        double scaling = c.Double("routed_scaling_factor", v2 ? 1.0 : 2.5);
        // DeepSeek-V3 always scores with sigmoid and picks with the bias (noaux_tc); DeepSeek-V2 scores with softmax over
        // every expert and picks greedily, or from the topk_group groups with the highest single score.
        string scoring = v2 ? "softmax" : "sigmoid";
        string topkMethod = c.String("topk_method") ?? (v2 ? "greedy" : "noaux_tc");
        string[] methods = v2 ? ["greedy", "group_limited_greedy"] : ["noaux_tc"];
        if (!methods.Contains(topkMethod))
            throw new SaeSharpException($"{c.Path}: topk_method '{topkMethod}' is not supported ({modelType} routes with {string.Join(" or ", methods)})");
        if (c.String("scoring_func") is { } sf && sf != scoring)
            throw new SaeSharpException($"{c.Path}: scoring_func '{sf}' is not supported ({modelType} routes with {scoring} scores)");
        bool grouped = topkMethod != "greedy";
        int nGroup = grouped ? (v2 ? c.Int("n_group") : c.Int("n_group", 8)) : 1, topkGroup = grouped ? (v2 ? c.Int("topk_group") : c.Int("topk_group", 4)) : 1;
        foreach (var (key, v) in new[] { ("hidden_size", hidden), ("num_attention_heads", nHead), ("num_hidden_layers", nLayer), ("vocab_size", vocab),
                     ("intermediate_size", intermediate), ("moe_intermediate_size", moeIntermediate), ("kv_lora_rank", kvLora),
                     ("qk_rope_head_dim", rope), ("v_head_dim", vHead), ("n_routed_experts", experts), ("num_experts_per_tok", perToken),
                     ("n_group", nGroup), ("topk_group", topkGroup) })
            if (v <= 0) throw new SaeSharpException($"{c.Path}: {key}={v} must be positive");
        if (qLora is <= 0) throw new SaeSharpException($"{c.Path}: q_lora_rank={qLora} must be positive or null");
        if (nope < 0 || shared < 0 || firstDense < 0)
            throw new SaeSharpException($"{c.Path}: qk_nope_head_dim={nope}, n_shared_experts={shared}, first_k_dense_replace={firstDense} must not be negative");
        if (rope % 2 != 0) throw new SaeSharpException($"{c.Path}: qk_rope_head_dim={rope} must be even");
        // The attention's k and v come out of kv_b_proj with num_attention_heads heads; repeat_kv with fewer key-value
        // heads would not match them.
        if (nKv != nHead)
            throw new SaeSharpException($"{c.Path}: num_key_value_heads={nKv} differs from num_attention_heads={nHead}; DeepSeek's latent attention has one key and value per head");
        // transformers' DeepseekV2DecoderLayer makes every layer from first_k_dense_replace on a DeepseekV2Moe and its router
        // never renormalises (route_tokens_to_experts multiplies by routed_scaling_factor): DeepseekV2Config keeps
        // moe_layer_freq and norm_topk_prob but the modeling code never reads them, so neither is read here either (DeepSeek's
        // own modeling_deepseek.py, run with trust_remote_code, does read both). transformers' DeepseekV3DecoderLayer ignores
        // moe_layer_freq as well, but deepseek_v3 still refuses a value other than 1 (no fixture pins that reading yet).
        if (!v2 && c.Int("moe_layer_freq", 1) != 1)
            throw new SaeSharpException($"{c.Path}: moe_layer_freq={c.Int("moe_layer_freq")} is not supported on deepseek_v3 (transformers makes every layer from first_k_dense_replace on a mixture of experts)");
        // mlp_bias (DeepseekV2Config only) gives the dense MLPs and the shared experts (DeepseekV2MLP) biases on
        // gate/up/down; the routed experts and the router have none.
        if (experts % nGroup != 0 || (topkMethod == "noaux_tc" && experts / nGroup < 2))
            throw new SaeSharpException($"{c.Path}: n_routed_experts={experts} must split into n_group={nGroup} groups of " + (topkMethod == "noaux_tc" ? "at least 2 experts" : "equal size"));
        if (topkGroup > nGroup) throw new SaeSharpException($"{c.Path}: topk_group={topkGroup} must not exceed n_group={nGroup}");
        if (perToken > experts) throw new SaeSharpException($"{c.Path}: num_experts_per_tok={perToken} must not exceed n_routed_experts={experts}");
        if (grouped && perToken > topkGroup * (experts / nGroup))
            throw new SaeSharpException($"{c.Path}: num_experts_per_tok={perToken} must not exceed the topk_group={topkGroup} groups' {topkGroup * (experts / nGroup)} experts");
        _ = DeepseekFp8Blocks(c);   // refuses any other quantisation before the weights are read
        string act = c.String("hidden_act") ?? "silu";
        bool bias = c.Bool("attention_bias", false);
        int qkHead = nope + rope;
        if (weights is not null)
        {
            weights.ExpectLayers(c.Path, "num_hidden_layers", nLayer);
            weights.ExpectShape(c.Path, "model", "embed_tokens.weight", [vocab, hidden], $"vocab_size={vocab}, hidden_size={hidden}");
            if (qLora is int r)
                weights.ExpectShape(c.Path, "model", "layers.0.self_attn.q_b_proj.weight", [(long)nHead * qkHead, r],
                    $"num_attention_heads={nHead}, qk_nope_head_dim + qk_rope_head_dim={qkHead}, q_lora_rank={r}");
            else
                weights.ExpectShape(c.Path, "model", "layers.0.self_attn.q_proj.weight", [(long)nHead * qkHead, hidden],
                    $"num_attention_heads={nHead}, qk_nope_head_dim + qk_rope_head_dim={qkHead}, q_lora_rank=null, hidden_size={hidden}");
            weights.ExpectShape(c.Path, "model", "layers.0.self_attn.kv_a_proj_with_mqa.weight", [kvLora + rope, hidden],
                $"kv_lora_rank={kvLora}, qk_rope_head_dim={rope}, hidden_size={hidden}");
            weights.ExpectShape(c.Path, "model", "layers.0.self_attn.kv_b_proj.weight", [(long)nHead * (nope + vHead), kvLora],
                $"num_attention_heads={nHead}, qk_nope_head_dim={nope}, v_head_dim={vHead}, kv_lora_rank={kvLora}");
            if (firstDense > 0)
                weights.ExpectShape(c.Path, "model", "layers.0.mlp.gate_proj.weight", [intermediate, hidden], $"intermediate_size={intermediate}, hidden_size={hidden}");
            if (firstDense < nLayer)
            {
                string m = $"layers.{firstDense}.mlp.";
                weights.ExpectShape(c.Path, "model", m + "gate.weight", [experts, hidden], $"n_routed_experts={experts}, hidden_size={hidden}");
                weights.ExpectShape(c.Path, "model", m + $"experts.{experts - 1}.gate_proj.weight", [moeIntermediate, hidden],
                    $"n_routed_experts={experts}, moe_intermediate_size={moeIntermediate}, hidden_size={hidden}");
                if (shared > 0)
                    weights.ExpectShape(c.Path, "model", m + "shared_experts.gate_proj.weight", [(long)moeIntermediate * shared, hidden],
                        $"moe_intermediate_size × n_shared_experts={moeIntermediate * shared}, hidden_size={hidden}");
            }
        }
        var ropeParams = RopeParameters(c);
        double theta = ropeParams?["rope_theta"] is { } rt ? rt.GetValue<double>() : c.Double("rope_theta", 10000);
        int maxPositions = c.Int("max_position_embeddings", 4096);
        var (invFreq, ropeScaling, ropeInfo) = ScaledInvFreq(c, ropeParams, rope, theta, maxPositions);
        // DeepseekV3Attention: softmax scale qk_head_dim^-½, times mscale² with mscale = yarn_get_mscale(factor,
        // mscale_all_dim) when the rope is scaled and mscale_all_dim is set and non-zero.
        double attnScale = Math.Pow(qkHead, -0.5);
        string ropeType = ropeParams?["rope_type"]?.GetValue<string>() ?? ropeParams?["type"]?.GetValue<string>() ?? "default";
        if (ropeParams is not null && ropeType != "default"
            && ropeParams["mscale_all_dim"] is { } mad && mad.GetValueKind() == JsonValueKind.Number && mad.GetValue<double>() is double all && all != 0)
        {
            double factor = ropeInfo?.Factor ?? throw new SaeSharpException($"{c.Path}: rope_scaling with mscale_all_dim needs a factor");
            double mscale = factor <= 1 ? 1.0 : 0.1 * all * Math.Log(factor) + 1.0;
            attnScale *= mscale * mscale;
        }
        return new DecoderSettings
        {
            ModelType = modelType, Hidden = hidden, NLayer = nLayer, NHead = nHead, NKvHead = nHead, HeadDim = vHead,
            Intermediate = intermediate, MoeIntermediate = moeIntermediate, VocabSize = vocab, MaxPositions = maxPositions,
            Eps = c.Double("rms_norm_eps", 1e-6), Activation = act, MlpBias = v2 && c.Bool("mlp_bias", false), RopeTheta = theta, InvFreq = invFreq,
            RopeAttentionScaling = ropeScaling, RopeScaling = ropeInfo, TieEmbeddings = c.Bool("tie_word_embeddings", false),
            QkvBias = bias, OBias = bias, AttnScale = attnScale, SlidingLayers = new bool[nLayer],
            NumExperts = experts, ExpertsPerToken = perToken, NormTopKProb = !v2 && c.Bool("norm_topk_prob", true),
            SharedExpertIntermediate = moeIntermediate * shared, DenseMlpLayers = [.. Enumerable.Range(0, nLayer).Select(i => i < firstDense)],
            // DeepSeek-V2 always rotates adjacent pairs (transformers' apply_rotary_emb on complex numbers), leaving them in place.
            Mla = new MlaSettings(qLora, kvLora, nope, rope, vHead, v2 || c.Bool("rope_interleave", true), RopePairsInPlace: v2),
            GroupRouting = new GroupRouting(nGroup, topkGroup, scaling, topkMethod),
        };
    }
}

/// <summary>
/// HF <c>DeepseekV3Attention</c> (multi-head latent attention) of one layer: q = q_b_proj(q_a_layernorm(q_a_proj(x)))
/// (or q_proj(x) when q_lora_rank is null); kv_a_proj_with_mqa(x) split into the latent (kv_lora_rank) and one rotary key
/// part (qk_rope_head_dim) shared by every head; kv_b_proj(kv_a_layernorm(latent)) split per head into the non-rotary key
/// and v; rotary on the last qk_rope_head_dim dims of q and k (with rope_interleave, each head's rotary dims de-interleaved
/// first: <c>apply_rotary_pos_emb_interleave</c>); then scaled dot-product attention and o_proj.
/// <para>Hooks: <c>attn.hook_q_latent</c> [batch, pos, q_lora_rank] and <c>attn.hook_kv_latent</c> [batch, pos,
/// kv_lora_rank] (SaeSharp's names: the normalised latents); hook_q, hook_k [batch, pos, head, qk_head_dim] (k's rotary
/// part, before rotation, repeated on every head), hook_v [batch, pos, head, v_head_dim]; hook_rot_q/hook_rot_k after
/// rotary (rotary dims in the de-interleaved order transformers leaves them in); hook_pattern, hook_z as usual.</para>
/// </summary>
internal sealed class MlaAttention : nn.Module<Tensor, ForwardContext, Tensor>
{
    private readonly Linear? q_proj, q_a_proj, q_b_proj;
    private readonly RmsNorm? q_a_layernorm;
    private readonly Linear kv_a_proj_with_mqa, kv_b_proj, o_proj;
    private readonly RmsNorm kv_a_layernorm;
    private readonly DecoderSettings _s;
    private readonly MlaSettings _m;
    private readonly int _layer;
    private readonly BlockHookNames _names;

    public MlaAttention(DecoderSettings s, int layer, BlockHookNames names, ScalarType dtype) : base("self_attn")
    {
        (_s, _m, _layer, _names) = (s, s.Mla!, layer, names);
        long qOut = (long)s.NHead * _m.QkHeadDim;
        // HF builds q_a_layernorm and kv_a_layernorm with DeepseekV3RMSNorm's default eps 1e-6, not rms_norm_eps.
        if (_m.QLoraRank is int r)
        {
            q_a_proj = new Linear(s.Hidden, r, s.QkvBias, dtype);
            q_a_layernorm = new RmsNorm(r, 1e-6, false, dtype);
            q_b_proj = new Linear(r, qOut, false, dtype);
        }
        else q_proj = new Linear(s.Hidden, qOut, false, dtype);
        kv_a_proj_with_mqa = new Linear(s.Hidden, _m.KvLoraRank + _m.QkRopeHeadDim, s.QkvBias, dtype);
        kv_a_layernorm = new RmsNorm(_m.KvLoraRank, 1e-6, false, dtype);
        kv_b_proj = new Linear(_m.KvLoraRank, (long)s.NHead * (_m.QkNopeHeadDim + _m.VHeadDim), false, dtype);
        o_proj = new Linear((long)s.NHead * _m.VHeadDim, s.Hidden, s.OBias, dtype);
        RegisterComponents();
    }

    public override Tensor forward(Tensor x, ForwardContext ctx)
    {
        var h = ctx.Hooks;
        long b = x.shape[0], s = x.shape[1], heads = _s.NHead;
        int nope = _m.QkNopeHeadDim, rope = _m.QkRopeHeadDim, kvLora = _m.KvLoraRank;
        var q = q_proj is not null ? q_proj.forward(x)
            : q_b_proj!.forward(h.Fire(_names.QLatent!, q_a_layernorm!.forward(q_a_proj!.forward(x))));
        var compressed = kv_a_proj_with_mqa.forward(x);
        var latent = h.Fire(_names.KvLatent!, kv_a_layernorm.forward(compressed.narrow(-1, 0, kvLora)));
        var kv = kv_b_proj.forward(latent).view(b, s, heads, nope + _m.VHeadDim);
        var kRope = compressed.narrow(-1, kvLora, rope).unsqueeze(2).expand(b, s, heads, rope);
        q = h.Fire(_names.Q, q.view(b, s, heads, _m.QkHeadDim));
        var k = h.Fire(_names.K, cat([kv.narrow(-1, 0, nope), kRope], -1));
        var v = h.Fire(_names.V, kv.narrow(-1, nope, _m.VHeadDim));
        if (ctx.RotaryCos is { } cos && ctx.RotarySin is { } sin)
        {
            q = h.Fire(_names.RotQ, RotateLast(q, cos, sin));
            k = h.Fire(_names.RotK, RotateLast(k, cos, sin));
        }
        var z = AttentionCore.Attend(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2), _layer, _s.AttnScale, ctx, _names);
        return AttentionCore.Project(z, heads, o_proj.InOut, o_proj.forward, ctx, _names);
    }

    /// <summary>Rotary on the last qk_rope_head_dim dims of [batch, pos, head, qk_head_dim]; with rope_interleave those
    /// dims are first reordered evens-then-odds, as transformers' <c>apply_rotary_pos_emb_interleave</c> does (and, for
    /// DeepSeek-V2, put back in pair order after).</summary>
    private Tensor RotateLast(Tensor t, Tensor cos, Tensor sin)
    {
        int nope = _m.QkNopeHeadDim, rope = _m.QkRopeHeadDim;
        var r = t.narrow(-1, nope, rope);
        long b = t.shape[0], s = t.shape[1], h = t.shape[2];
        // DeepSeek-V2 (transformers' apply_rotary_emb): each pair rotated as one complex number, in place (GPT-J's
        // interleaved rotary); DeepSeek-V3: the same rotation, its dims left de-interleaved.
        if (_m.RopePairsInPlace) r = Rotary.Apply(r, cos, sin, rope, interleaved: true);
        else
        {
            if (_m.RopeInterleave) r = r.reshape(b, s, h, rope / 2, 2).transpose(-1, -2).reshape(b, s, h, rope);
            r = Rotary.Apply(r, cos, sin, rope);
        }
        return nope == 0 ? r : cat([t.narrow(-1, 0, nope), r], -1);
    }
}

/// <summary>The router weights of DeepSeek's mixtures of experts: <c>mlp.gate.weight</c> [experts, hidden] and, for
/// DeepSeek-V3's noaux_tc (HF <c>DeepseekV3TopkRouter</c>), <c>e_score_correction_bias</c> [experts], the bias added to the
/// scores for choosing experts only. DeepSeek-V2 (HF <c>DeepseekV2Moe.gate</c>) has no bias.</summary>
internal sealed class GroupLimitedRouter : nn.Module
{
    public readonly Parameter weight;
    public readonly Parameter? e_score_correction_bias;
    private readonly bool _sigmoid;

    public GroupLimitedRouter(DecoderSettings s, ScalarType dtype) : base("gate")
    {
        _sigmoid = s.GroupRouting!.Sigmoid;
        weight = new Parameter(empty(s.NumExperts, s.Hidden, dtype: dtype), requires_grad: false);
        // a float32 buffer in transformers; a float32 parameter here so the checkpoint fills it
        if (_sigmoid) e_score_correction_bias = new Parameter(zeros(s.NumExperts, dtype: ScalarType.Float32), requires_grad: false);
        RegisterComponents();
    }

    /// <summary>Scores [tokens, experts] in float32 of flattened hidden states [tokens, hidden]: the router logits
    /// (computed in float32) through sigmoid (noaux_tc) or a softmax over the experts (greedy, group_limited_greedy).</summary>
    public Tensor Scores(Tensor flat)
    {
        var logits = nn.functional.linear(flat.to(ScalarType.Float32), weight.to(ScalarType.Float32));
        return _sigmoid ? logits.sigmoid() : nn.functional.softmax(logits, -1, ScalarType.Float32);
    }

    /// <summary>The experts chosen from <paramref name="scores"/> [tokens, experts] by <paramref name="g"/>'s topk_method
    /// and their weights: (indices [tokens, k], weights [tokens, k] float32).
    /// <para>noaux_tc (<c>get_topk_indices</c>): the scores plus the correction bias; per group the sum of its two best; the
    /// topk_group best groups kept, the others' experts set to 0 (not −∞, as transformers); the top k experts of that, best
    /// first. Then their unbiased scores, renormalised (+1e-20) when <paramref name="normTopK"/>, times routed_scaling_factor.</para>
    /// <para>greedy: the top k scores; group_limited_greedy: per group its best score, the topk_group best groups kept and the
    /// other experts' scores set to 0, then the top k; both times routed_scaling_factor, never renormalised (DeepseekV2Moe).</para></summary>
    public static (Tensor Chosen, Tensor Weights) Route(Tensor scores, Tensor? bias, GroupRouting g, int topK, bool normTopK)
    {
        long n = scores.shape[0], e = scores.shape[1];
        using var scale = g.RoutedScalingFactor.ToScalar();
        if (g.TopkMethod == "greedy")
        {
            var (top, idx) = scores.topk(topK, -1);
            return (idx, top * scale);
        }
        var choice = g.Sigmoid && bias is not null ? scores.add(bias.to(scores.device).unsqueeze(0), TorchScalars.One) : scores;
        var grouped = choice.view(n, g.NGroup, e / g.NGroup);
        var groupScores = g.Sigmoid ? grouped.topk(2, -1).values.sum(-1) : grouped.max(-1).values;
        var groupIdx = groupScores.topk(g.TopkGroup, -1).indexes;
        var groupMask = zeros_like(groupScores).scatter_(1, groupIdx, ones(groupIdx.shape, dtype: groupScores.dtype, device: groupScores.device));
        var scoreMask = groupMask.unsqueeze(-1).expand(n, g.NGroup, e / g.NGroup).reshape(n, e);
        choice = choice.masked_fill(scoreMask.eq(TorchScalars.Of(0)), TorchScalars.Of(0.0));
        var (chosenScores, chosen) = choice.topk(topK, -1);
        if (!g.Sigmoid) return (chosen, chosenScores * scale);   // group_limited_greedy: the masked softmax scores themselves
        var weights = scores.gather(1, chosen);
        if (normTopK) weights = weights / weights.sum(-1, keepdim: true).add(TorchScalars.Of(1e-20), TorchScalars.One);
        return (chosen, weights * scale);
    }
}

/// <summary>
/// DeepSeek-V3's FP8 checkpoints (quantization_config fp8): each quantised weight [out, in] is float8_e4m3fn bytes with a
/// float32 <c>weight_scale_inv</c> [⌈out/rows⌉, ⌈in/cols⌉], one scale per block; the weight is fp8 · scale (DeepSeek's
/// <c>weight_dequant</c>, transformers' FP8 <c>dequantize</c>), computed in float32 (exact: an e4m3 value times a float32
/// is one rounding) and cast to the run's dtype. Activations are not quantised (transformers' FP8Linear does on GPUs).
/// </summary>
internal static class Fp8BlockQuant
{
    /// <summary>The 256 float8_e4m3fn values by bit pattern: sign, 4 exponent bits (bias 7), 3 mantissa bits; exponent 0
    /// subnormal; 0x7f and 0xff NaN; no infinities.</summary>
    internal static readonly float[] E4m3fn = [.. Enumerable.Range(0, 256).Select(b =>
    {
        float sign = (b & 0x80) != 0 ? -1f : 1f;
        int e = (b >> 3) & 0xF, m = b & 7;
        return e == 15 && m == 7 ? float.NaN : e == 0 ? sign * m / 8f * MathF.Pow(2, -6) : sign * (1 + m / 8f) * MathF.Pow(2, e - 7);
    })];

    /// <summary>Makes every <c>X.weight</c> with an <c>X.weight_scale_inv</c> read as its dequantisation; mismatched shapes
    /// are errors naming both tensors.</summary>
    public static void DequantizeOnRead(Checkpoint ckpt, int blockRows, int blockCols)
    {
        foreach (var scaleKey in ckpt.Keys.Where(k => k.EndsWith(".weight_scale_inv", StringComparison.Ordinal)).ToList())
        {
            string key = scaleKey[..^"_scale_inv".Length];
            if (!ckpt.Contains(key)) throw new SaeSharpException($"{ckpt.Folder}: block scale '{scaleKey}' has no weight '{key}'");
            var (file, shape) = ckpt.Info(key);
            var (_, scales) = ckpt.Info(scaleKey);
            if (shape.Length != 2 || scales.Length != 2 || scales[0] != (shape[0] + blockRows - 1) / blockRows || scales[1] != (shape[1] + blockCols - 1) / blockCols)
                throw new SaeSharpException($"{file}: FP8 weight '{key}' [{string.Join(", ", shape)}] needs a '{scaleKey}' of one scale per " +
                                            $"{blockRows}x{blockCols} block, [{(shape.Length == 2 ? $"{(shape[0] + blockRows - 1) / blockRows}, {(shape[1] + blockCols - 1) / blockCols}" : "?")}]; " +
                                            $"it is [{string.Join(", ", scales)}]");
            Func<ScalarType, Tensor> readBytes = ckpt.Reader(key), readScales = ckpt.Reader(scaleKey);
            ckpt.Derive(key, file, shape, [key, scaleKey], dtype =>
            {
                using var scope = NewDisposeScope();
                using var bytes = readBytes(ScalarType.Byte);
                using var scale = readScales(ScalarType.Float32);
                return Dequantize(bytes, scale, blockRows, blockCols, dtype).MoveToOuterDisposeScope();
            });
        }
    }

    /// <summary>bytes uint8 [out, in] (e4m3 bit patterns), scale float32 [⌈out/rows⌉, ⌈in/cols⌉] → [out, in] in <paramref name="dtype"/>.</summary>
    public static Tensor Dequantize(Tensor bytes, Tensor scale, int blockRows, int blockCols, ScalarType dtype)
    {
        using var scope = NewDisposeScope();
        long rows = bytes.shape[0], cols = bytes.shape[1];
        var values = tensor(E4m3fn, device: bytes.device).index_select(0, bytes.to(ScalarType.Int64).reshape(-1)).view(rows, cols);
        var full = scale.repeat_interleave(blockRows, 0).narrow(0, 0, rows).repeat_interleave(blockCols, 1).narrow(1, 0, cols);
        return (values * full).to(dtype).MoveToOuterDisposeScope();
    }
}
