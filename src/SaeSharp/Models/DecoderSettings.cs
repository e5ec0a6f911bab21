using System.Text.Json;
using System.Text.Json.Nodes;
using TorchSharp;
using static TorchSharp.torch;

namespace SaeSharp.Models;

/// <summary>
/// Settings of the Llama-layout decoders (HF <c>LlamaForCausalLM</c>, <c>MistralForCausalLM</c>, <c>MixtralForCausalLM</c>, <c>Qwen2ForCausalLM</c>,
/// <c>Qwen2MoeForCausalLM</c>, <c>Qwen3ForCausalLM</c>, <c>Qwen3MoeForCausalLM</c>, <c>OlmoForCausalLM</c>, <c>Olmo2ForCausalLM</c>, <c>Olmo3ForCausalLM</c>, <c>OlmoeForCausalLM</c>, <c>GemmaForCausalLM</c>, <c>Gemma2ForCausalLM</c>, <c>Gemma3ForCausalLM</c>, <c>GptOssForCausalLM</c>, <c>Phi3ForCausalLM</c> and the text model of
/// <c>Gemma3ForConditionalGeneration</c>) read
/// from config.json, with the defaults of each family's HF config class.
/// </summary>
internal sealed partial record DecoderSettings
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
    /// <summary>Rotary frequencies [rotary_dim / 2] after rope_scaling (llama3, linear, yarn); Gemma 3: of the global layers.</summary>
    public required double[] InvFreq { get; init; }
    /// <summary>YaRN's attention factor multiplying cos and sin (HF <c>attention_scaling</c>); 1 for the other rope types.</summary>
    public double RopeAttentionScaling { get; init; } = 1.0;
    /// <summary>The rope_scaling applied to <see cref="InvFreq"/>, its defaults filled in; null for the default rope type.</summary>
    public RopeScaling? RopeScaling { get; init; }
    /// <summary>Phi-3 longrope: the long factors' frequencies used instead of <see cref="InvFreq"/> (the short ones) by a
    /// forward whose largest position is at or past original_max_position_embeddings; null for other rope types.</summary>
    public LongRope? LongRope { get; init; }
    /// <summary>Gemma 3: the sliding-window layers' <see cref="RopeAttentionScaling"/>.</summary>
    public double LocalRopeAttentionScaling { get; init; } = 1.0;
    /// <summary>Gemma 3: θ of the sliding-window layers (<c>rope_local_base_freq</c>).</summary>
    public double? LocalRopeTheta { get; init; }
    /// <summary>Gemma 3: rotary frequencies of the sliding-window layers (never scaled).</summary>
    public double[]? LocalInvFreq { get; init; }
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
    /// <summary>OLMo-2, OLMoE: RMSNorm of q and k over the whole projection (n_heads·head_dim, n_kv_heads·head_dim wide),
    /// not per head, before rotary.</summary>
    public bool QkNormWhole { get; init; }
    /// <summary>OLMo (1), OLMoE <c>clip_qkv</c>: q and k (after their norms, where there are any) and v clamped to [−clip, clip]; null for none.</summary>
    public double? ClipQkv { get; init; }
    /// <summary>OLMo-2: no pre-norms; <c>post_attention_layernorm</c> normalises the attention output and
    /// <c>post_feedforward_layernorm</c> the MLP output before each residual add. Its RMSNorms multiply by the weight in
    /// float32 before the cast back (HF <c>Olmo2RMSNorm</c>).</summary>
    public bool Olmo2 { get; init; }
    /// <summary>OLMo (1): every norm is HF <c>OlmoLayerNorm</c>, a LayerNorm without weight or bias (eps 1e-5, in float32).</summary>
    public bool NonParametricLayerNorm { get; init; }
    /// <summary>Gemma 1/2/3: embeddings × √hidden_size, RMSNorm with (1 + w) in float32.</summary>
    public bool Gemma { get; init; }
    /// <summary>Gemma 2/3: post-norms around attention and MLP (<c>post_attention_layernorm</c> on the attention output,
    /// <c>pre_feedforward_layernorm</c> / <c>post_feedforward_layernorm</c> around the MLP).</summary>
    public bool PostNorms { get; init; }
    /// <summary>Gemma 3 (<c>gemma3_text</c>, <c>gemma3</c>): (1 + w) q_norm/k_norm, <see cref="LocalInvFreq"/>, and the
    /// embedding scale rounded to float32 before the cast to the weights' dtype (HF <c>Gemma3TextScaledWordEmbedding</c>).</summary>
    public bool Gemma3 { get; init; }
    /// <summary>Attention scores are q·k × this (1/√head_dim, Gemma 2 query_pre_attn_scalar^-½).</summary>
    public required double AttnScale { get; init; }
    public double? AttnSoftCap { get; init; }
    public double? FinalSoftCap { get; init; }
    public int? SlidingWindow { get; init; }
    /// <summary>Per layer: true where attention is restricted to <see cref="SlidingWindow"/>.</summary>
    public required bool[] SlidingLayers { get; init; }
    /// <summary>Mixtral, Qwen3-MoE: experts of each layer's sparse MoE block (<c>num_local_experts</c>, <c>num_experts</c>);
    /// 0 for a dense MLP. <see cref="Intermediate"/> is then each expert's width (Qwen3-MoE <c>moe_intermediate_size</c>).</summary>
    public int NumExperts { get; init; }
    /// <summary>Experts each token is routed to (<c>num_experts_per_tok</c>).</summary>
    public int ExpertsPerToken { get; init; }
    /// <summary>The chosen experts' weights are renormalised to sum 1 (Mixtral always; Qwen-MoE <c>norm_topk_prob</c>).</summary>
    public bool NormTopKProb { get; init; }
    /// <summary>Qwen2-MoE: width of the shared expert every token goes through (<c>shared_expert_intermediate_size</c>),
    /// scaled by sigmoid(<c>shared_expert_gate</c>·x); 0 for none.</summary>
    public int SharedExpertIntermediate { get; init; }
    /// <summary>gpt-oss (<c>gpt_oss</c>): attention sinks (<c>self_attn.sinks</c>), the <see cref="GptOssMlp"/> experts.</summary>
    public bool GptOss { get; init; }
    /// <summary>gpt-oss: the experts' gate is clamped above at this, up to ±this (<c>swiglu_limit</c>, 7).</summary>
    public double SwigluLimit { get; init; } = 7.0;
    /// <summary>gpt-oss: glu = gate·σ(alpha·gate) (<c>swiglu_alpha</c>, 1.702).</summary>
    public double SwigluAlpha { get; init; } = 1.702;

    /// <summary>Reads config.json of a <c>llama</c>, <c>mistral</c>, <c>mixtral</c>, <c>qwen2</c>, <c>qwen2_moe</c>, <c>qwen3</c>, <c>qwen3_moe</c>, <c>olmo</c>, <c>olmo2</c>, <c>olmo3</c>, <c>olmoe</c>, <c>gemma</c>, <c>gemma2</c>,
    /// <c>gemma3_text</c>, <c>gemma3</c> or <c>phi3</c> model (for <c>gemma3</c>, its <c>text_config</c>; for <c>phi3</c>, the fused
    /// qkv_proj and gate_up_proj are checked, <see cref="Phi3.SplitFusedOnRead"/> splits them); with <paramref name="weights"/>, checks every
    /// declared size against the tensors present before anything is allocated.</summary>
    public static DecoderSettings From(JsonConfig c, string modelType, Checkpoint? weights = null)
    {
        if (modelType is "deepseek_v3" or "deepseek_v2") return Deepseek(c, weights, modelType);
        bool gemma3 = modelType is "gemma3_text" or "gemma3";
        bool gemma = modelType == "gemma2" || gemma3;   // Gemma 2 and 3; Gemma 1 (gemma1) is a Llama layout with Gemma's norms and scale
        bool gemma1 = modelType == "gemma", mixtral = modelType == "mixtral";
        bool mistral = modelType == "mistral" || mixtral;   // Mixtral's attention is Mistral's
        bool qwen3Moe = modelType == "qwen3_moe";          // Qwen3's attention (q/k norms), a sparse MoE block as mlp
        bool qwen2Moe = modelType == "qwen2_moe";          // Qwen2's attention (q/k/v biases), a sparse MoE block with a shared expert
        bool qwenMoe = qwen3Moe || qwen2Moe;
        // OLMo 3 is OLMo-2's block with layer_types (sliding_window); OLMo (1) a Llama layout with OlmoLayerNorm.
        bool olmo1 = modelType == "olmo", olmo3 = modelType == "olmo3";
        bool olmo2 = modelType == "olmo2" || olmo3, olmoe = modelType == "olmoe";   // q/k norms over the whole projection
        bool sparse = qwenMoe || olmoe;                    // a sparse MoE block as mlp, experts of gate_proj/up_proj/down_proj
        bool gptOss = modelType == "gpt_oss";              // attention sinks; GptOssMLP: router with bias, fused experts with biases
        bool phi3 = modelType == "phi3";                   // fused qkv_proj and gate_up_proj (split on reading), no biases
        if (modelType == "gemma3")
            c = c.Root["text_config"] is JsonObject text ? new JsonConfig($"{c.Path} (text_config)", text)
                : throw new SaeSharpException($"{c.Path}: model_type gemma3 (Gemma3ForConditionalGeneration) needs a 'text_config' object " +
                                              "describing the language model; there is none" + (c.Has("hidden_size") ? " (a top-level hidden_size is not read)" : ""));
        if ((gemma3 || gemma1) && c.Bool("use_bidirectional_attention", false))
            throw new SaeSharpException($"{c.Path}: use_bidirectional_attention=true (an embedding model such as EmbeddingGemma) is not a causal language model; not supported");
        // Gemma 3's hub configs leave out what equals a Gemma3TextConfig default (gemma-3-4b's text_config has no
        // num_attention_heads, vocab_size, head_dim): every size has that class's default there; the other families need them.
        // GptOssConfig has a default for every size too (gpt-oss-20b's, but 36 layers and 128 experts: gpt-oss-120b's).
        int? G3(int gemma3Default, int? gptOssDefault = null) => gemma3 ? gemma3Default : gptOss ? gptOssDefault : null;
        int hidden = c.Int("hidden_size", G3(2304, 2880)), nHead = c.Int("num_attention_heads", G3(8, 64)), nLayer = c.Int("num_hidden_layers", G3(26, 36));
        if (hidden <= 0 || nHead <= 0 || nLayer <= 0)
            throw new SaeSharpException($"{c.Path}: hidden_size, num_attention_heads and num_hidden_layers must be positive");
        // Absent keys take the HF config class defaults: num_key_value_heads 32 for Qwen2/Qwen3, 16 for Gemma, 8 for
        // Mistral/Mixtral and 4 for Gemma 2/3 and Qwen3-MoE, head_dim 128 for Qwen3 and 256 for Gemma 1/2/3 (fixed numbers there, not derived from
        // the other sizes); null (or, for Llama, Mistral's and Qwen3-MoE's head_dim and Qwen2, absent) means num_attention_heads and
        // hidden_size / num_attention_heads. (A JSON null reads as absent through the JsonObject indexer: ContainsKey tells.)
        int? kvDefault = modelType switch { "qwen2" or "qwen3" => 32, "gemma" => 16, "mistral" or "mixtral" => 8, "gemma2" or "gemma3_text" or "gemma3" or "qwen3_moe" => 4, "qwen2_moe" => 16, "gpt_oss" => 8, _ => null };
        int nKv = c.Root.ContainsKey("num_key_value_heads")
            ? c.Root["num_key_value_heads"] is not null ? c.Int("num_key_value_heads") : nHead
            : kvDefault ?? nHead;
        if (nKv <= 0 || nHead % nKv != 0)
            throw new SaeSharpException($"{c.Path}: num_attention_heads={nHead} must be a multiple of num_key_value_heads={nKv}");
        int? headDimDefault = modelType switch { "qwen3" => 128, "gemma" or "gemma2" or "gemma3_text" or "gemma3" => 256, "gpt_oss" => 64, _ => null };
        int headDim = c.Root["head_dim"] is not null ? c.Int("head_dim")
            : !c.Root.ContainsKey("head_dim") && headDimDefault is int fixedHeadDim ? fixedHeadDim
            : hidden % nHead == 0 ? hidden / nHead
            : throw new SaeSharpException($"{c.Path}: hidden_size={hidden} is not a multiple of num_attention_heads={nHead} and there is no head_dim");
        if (headDim <= 0 || headDim % 2 != 0) throw new SaeSharpException($"{c.Path}: head_dim={headDim} must be positive and even");
        int vocab = c.Int("vocab_size", G3(262_208, 201_088));
        // Qwen-MoE experts are moe_intermediate_size wide, its dense layers' MLP intermediate_size (Qwen2MoeConfig 5632,
        // Qwen3MoeConfig 6144); the layer is dense when listed in mlp_only_layers or when not (i + 1) % decoder_sparse_step
        // == 0 (Qwen2MoeDecoderLayer, Qwen3MoeDecoderLayer; num_experts > 0 is checked below).
        bool[]? denseMlp = null;
        if (qwenMoe)
        {
            int step = c.Int("decoder_sparse_step", 1);
            if (step <= 0) throw new SaeSharpException($"{c.Path}: decoder_sparse_step={step} must be positive");
            denseMlp = [.. Enumerable.Range(0, nLayer).Select(i => (i + 1) % step != 0)];
            if (c.Root["mlp_only_layers"] is { } onlyNode && onlyNode.GetValueKind() != JsonValueKind.Null)
            {
                var only = onlyNode as JsonArray ?? throw new SaeSharpException($"{c.Path}: mlp_only_layers must be a list of layer indices, got {onlyNode.ToJsonString()}");
                foreach (var item in only)
                {
                    int i = item is JsonValue v && v.TryGetValue<int>(out int n) ? n
                        : throw new SaeSharpException($"{c.Path}: mlp_only_layers must be a list of layer indices, got {only.ToJsonString()}");
                    if (i < 0 || i >= nLayer) throw new SaeSharpException($"{c.Path}: mlp_only_layers holds {i}; the layers are 0..{nLayer - 1}");
                    denseMlp[i] = true;
                }
            }
            if (!denseMlp.Any(d => d)) denseMlp = null;
        }
        // OLMoE: each expert is intermediate_size wide (OlmoeConfig default 2048). Qwen-MoE without dense layers: the experts'
        // width (intermediate_size is then unused).
        int moeIntermediate = qwenMoe ? c.Int("moe_intermediate_size", qwen3Moe ? 768 : 1408) : 0;
        int intermediate = qwenMoe && denseMlp is null ? moeIntermediate
            : c.Int("intermediate_size", olmoe ? 2048 : qwen3Moe ? 6144 : qwen2Moe ? 5632 : G3(9216, 2880));
        if (weights is not null)
        {
            weights.ExpectLayers(c.Path, "num_hidden_layers", nLayer);
            weights.ExpectShape(c.Path, "model", "embed_tokens.weight", [vocab, hidden], $"vocab_size={vocab}, hidden_size={hidden}");
            if (phi3)
            {
                weights.ExpectShape(c.Path, "model", "layers.0.self_attn.qkv_proj.weight", [(nHead + 2L * nKv) * headDim, hidden],
                    $"num_attention_heads={nHead}, num_key_value_heads={nKv}, head_dim={headDim}, hidden_size={hidden}");
                weights.ExpectShape(c.Path, "model", "layers.0.mlp.gate_up_proj.weight", [2L * intermediate, hidden],
                    $"intermediate_size={intermediate}, hidden_size={hidden}");
            }
            else
            {
                weights.ExpectShape(c.Path, "model", "layers.0.self_attn.q_proj.weight", [(long)nHead * headDim, hidden],
                    $"num_attention_heads={nHead}, head_dim={headDim}, hidden_size={hidden}");
                weights.ExpectShape(c.Path, "model", "layers.0.self_attn.k_proj.weight", [(long)nKv * headDim, hidden],
                    $"num_key_value_heads={nKv}, head_dim={headDim}, hidden_size={hidden}");
                if (!mixtral && !sparse && !gptOss)
                    weights.ExpectShape(c.Path, "model", "layers.0.mlp.gate_proj.weight", [intermediate, hidden],
                        $"intermediate_size={intermediate}, hidden_size={hidden}");
            }
            if (denseMlp is not null)
            {
                int d0 = Array.IndexOf(denseMlp, true);
                if (!weights.Contains($"model.layers.{d0}.mlp.gate_proj.weight") && !weights.Contains($"layers.{d0}.mlp.gate_proj.weight"))
                    throw new SaeSharpException($"{c.Path}: decoder_sparse_step={c.Int("decoder_sparse_step", 1)}, mlp_only_layers=" +
                        $"{c.Root["mlp_only_layers"]?.ToJsonString() ?? "[]"} make layer {d0} a dense MLP, but the checkpoint has no " +
                        $"'model.layers.{d0}.mlp.gate_proj.weight' (its MLP is a mixture of experts there?)");
                weights.ExpectShape(c.Path, "model", $"layers.{d0}.mlp.gate_proj.weight", [intermediate, hidden],
                    $"intermediate_size={intermediate}, hidden_size={hidden} (layer {d0} is dense: mlp_only_layers, decoder_sparse_step)");
            }
        }
        // MixtralConfig: num_local_experts 8, num_experts_per_tok 2, always renormalised; Qwen3MoeConfig: num_experts 128,
        // num_experts_per_tok 8; Qwen2MoeConfig: num_experts 60, num_experts_per_tok 4, shared_expert_intermediate_size
        // 5632; both norm_topk_prob false; OlmoeConfig: num_experts 64, num_experts_per_tok 8, norm_topk_prob false.
        // Router jitter and the router aux loss are training-only.
        string expertsKey = sparse ? "num_experts" : "num_local_experts";
        // GptOssConfig: num_local_experts 128 (num_experts is its alias), num_experts_per_tok 4.
        int experts = mixtral ? c.Int("num_local_experts", 8) : qwenMoe ? c.Int("num_experts", qwen3Moe ? 128 : 60) : olmoe ? c.Int("num_experts", 64)
            : gptOss ? c.Int("num_local_experts", c.Int("num_experts", 128)) : 0;
        int perToken = mixtral ? c.Int("num_experts_per_tok", 2) : qwenMoe ? c.Int("num_experts_per_tok", qwen3Moe ? 8 : 4)
            : olmoe ? c.Int("num_experts_per_tok", 8) : gptOss ? c.Int("num_experts_per_tok", 4) : 0;
        int shared = qwen2Moe ? c.Int("shared_expert_intermediate_size", 5632) : 0;
        if ((mixtral || sparse || gptOss) && (experts <= 0 || perToken <= 0 || perToken > experts))
            throw new SaeSharpException($"{c.Path}: num_experts_per_tok={perToken} must be between 1 and {expertsKey}={experts}");
        if (qwen2Moe && shared <= 0)
            throw new SaeSharpException($"{c.Path}: shared_expert_intermediate_size={shared} must be positive");
        // transformers 4.47's Qwen2-MoE windows every layer in eager attention but only layers >= max_window_layers in its
        // flash path; no hub checkpoint sets use_sliding_window: refused, not guessed.
        if (qwen2Moe && c.Bool("use_sliding_window", false))
            throw new SaeSharpException($"{c.Path}: use_sliding_window=true on a qwen2_moe model is not supported");
        string moe = mixtral ? "block_sparse_moe" : "mlp", w1 = mixtral ? "w1" : "gate_proj";
        if (gptOss)
        {
            // transformers dequantises MXFP4 checkpoints (quant_method mxfp4) on CPU; any other quantisation is not read.
            if (c.Root["quantization_config"] is JsonObject q && q["quant_method"]?.ToString() is { } method && method != "mxfp4")
                throw new SaeSharpException($"{c.Path}: quantization_config.quant_method '{method}' is not supported (gpt-oss checkpoints in float or mxfp4 are)");
            if (weights is not null)
            {
                weights.ExpectShape(c.Path, "model", "layers.0.mlp.router.weight", [experts, hidden], $"num_local_experts={experts}, hidden_size={hidden}");
                weights.ExpectShape(c.Path, "model", "layers.0.mlp.experts.gate_up_proj", [experts, hidden, 2L * intermediate],
                    $"num_local_experts={experts}, hidden_size={hidden}, intermediate_size={intermediate}");
            }
        }
        int firstSparse = denseMlp is null ? 0 : Array.IndexOf(denseMlp, false);
        if ((mixtral || sparse) && weights is not null && firstSparse >= 0)
        {
            int expertWidth = moeIntermediate > 0 ? moeIntermediate : intermediate;
            weights.ExpectShape(c.Path, "model", $"layers.{firstSparse}.{moe}.gate.weight", [experts, hidden], $"{expertsKey}={experts}, hidden_size={hidden}");
            weights.ExpectShape(c.Path, "model", $"layers.{firstSparse}.{moe}.experts.{experts - 1}.{w1}.weight", [expertWidth, hidden],
                $"{expertsKey}={experts}, {(qwenMoe ? "moe_intermediate_size" : "intermediate_size")}={expertWidth}, hidden_size={hidden}");
            if (qwen2Moe)
                weights.ExpectShape(c.Path, "model", $"layers.{firstSparse}.mlp.shared_expert.gate_proj.weight", [shared, hidden],
                    $"shared_expert_intermediate_size={shared}, hidden_size={hidden}");
        }
        // Gemma 3: rope_theta and rope_scaling are the global layers' (transformers 5: rope_parameters.full_attention).
        var rope = RopeParameters(c, gemma3 ? "full_attention" : null);
        // GptOssConfig: YaRN (factor 32 from 4096 positions, beta_fast 32, beta_slow 1, truncate false) when none is given.
        if (gptOss && rope is null)
            rope = new JsonObject { ["rope_type"] = "yarn", ["factor"] = 32.0, ["beta_fast"] = 32.0, ["beta_slow"] = 1.0, ["truncate"] = false,
                                    ["original_max_position_embeddings"] = 4096.0 };
        // transformers 4.47's Gemma and Mistral read rope_theta only (GemmaRotaryEmbedding, MistralRotaryEmbedding take no
        // scaling); later versions apply rope_scaling as Llama does. No hub checkpoint of either has one: refused, not guessed.
        if ((gemma1 || mistral) && rope is not null && (rope["rope_type"] ?? rope["type"])?.GetValue<string>() is { } rt0 && rt0 != "default")
            throw new SaeSharpException($"{c.Path}: rope_scaling of type {rt0} on a {modelType} model is not supported (transformers 4.47 ignores it, later versions apply it)");
        // Phi-3's longrope (Phi-3-*-128k, Phi-3.5, Phi-4-mini; "su" its old name): short and long factors per frequency,
        // switched at original_max_position_embeddings (see LongRope). Phi3Config once turned yarn into longrope too; a
        // phi3 yarn is refused rather than guessed.
        string? ropeType = (rope?["rope_type"] ?? rope?["type"])?.ToString();
        string ropeKey = c.Root["rope_parameters"] is JsonObject ? "rope_parameters" : "rope_scaling";
        if (phi3 && ropeType is not (null or "default" or "longrope" or "su"))
            throw new SaeSharpException($"{c.Path}: {ropeKey} of type '{ropeType}' is not supported on a phi3 model (default and longrope/su are)");
        // OLMo 3: one rotary table, rope_scaling (rope_parameters) applied, for every layer, sliding and full, as the newest
        // transformers modeling_olmo3.py read (5.x: Olmo3Model.rotary_emb, one Olmo3RotaryEmbedding for all layers).
        // transformers 4.57 gave the sliding layers the default rope instead (rotary_embs per layer type), as the OLMo 3
        // authors describe the model (transformers PR #40778); README "Known limits".
        double theta = rope?["rope_theta"] is { } rt ? rt.GetValue<double>() : c.Double("rope_theta", gemma3 || mixtral ? 1_000_000 : olmo3 ? 500_000 : gptOss ? 150_000 : 10000);
        // transformers 5 keeps partial_rotary_factor in rope_parameters (a top-level one is only its default there).
        double partial = rope?["partial_rotary_factor"] is { } prf && prf.GetValueKind() == JsonValueKind.Number
            ? prf.GetValue<double>() : c.Double("partial_rotary_factor", 1.0);
        int rotDim = (int)(headDim * partial);
        if (rotDim <= 0 || rotDim % 2 != 0) throw new SaeSharpException($"{c.Path}: partial_rotary_factor={partial} gives {rotDim} rotary dims of {headDim}; need a positive even number");
        int maxPositions = c.Int("max_position_embeddings", gemma3 || mistral || gptOss ? 131_072 : gemma || gemma1 ? 8192 : modelType is "llama" or "olmo" or "olmo2" or "olmo3" ? 2048
            : olmoe || phi3 ? 4096 : 32768);
        LongRope? longRope = null;
        double[] invFreq;
        double ropeScaling;
        RopeScaling? ropeScalingInfo;
        if (phi3 && ropeType is "longrope" or "su")
        {
            longRope = LongRope.From(c, rope!, ropeKey, rotDim, theta, maxPositions);
            (invFreq, ropeScaling, ropeScalingInfo) = (longRope.ShortInvFreq, longRope.AttentionFactor, longRope.Info);
        }
        else (invFreq, ropeScaling, ropeScalingInfo) = ScaledInvFreq(c, rope, rotDim, theta, maxPositions);
        double? localTheta = null;
        double[]? localInvFreq = null;
        double localRopeScaling = 1.0;
        if (gemma3)
        {
            // transformers 4.5x: rope_local_base_freq with the default rope type (HF copies the config with
            // rope_scaling {"rope_type": "default"}); transformers 5: rope_parameters.sliding_attention.
            var local = RopePerLayerType(c) ? RopeParameters(c, "sliding_attention") : null;
            localTheta = local?["rope_theta"] is { } lt ? lt.GetValue<double>() : c.Double("rope_local_base_freq", 10000);
            (localInvFreq, localRopeScaling, _) = ScaledInvFreq(c, local, rotDim, localTheta.Value, maxPositions);
        }

        // Gemma 1 as transformers 4.47's GemmaMLP: hidden_activation, else gelu_pytorch_tanh; hidden_act is ignored (the hub
        // configs say "gelu" there, but the models were trained with the tanh approximation, JAX's default gelu). transformers
        // 4.48 on reads hidden_act instead (exact GELU for google/gemma-2b); README "Known limits".
        string act = gemma1 ? c.String("hidden_activation") ?? "gelu_pytorch_tanh"
            : gemma ? c.String("hidden_activation") ?? c.String("hidden_act") ?? "gelu_pytorch_tanh"
            : c.String("hidden_act") ?? "silu";
        // OLMoE clip_qkv (OlmoeAttention clamps q, k after their norms and v); OLMo (1): OlmoAttention clamps the q, k, v
        // projections; OLMo-2 and OLMo 3 have none (Olmo2Config deletes it, Olmo3Config has no such key).
        double? clip = (olmoe || olmo1) && c.Root["clip_qkv"] is not null ? c.Double("clip_qkv") : null;   // JSON null reads as absent
        if (clip is <= 0) throw new SaeSharpException($"{c.Path}: clip_qkv={clip} must be positive or null");
        // Mistral has no biases (MistralAttention and MistralMLP build nn.Linear(..., bias=False) whatever the config says).
        // Phi-3 neither (Phi3Attention, Phi3MLP: bias=False).
        bool attnBias = !mistral && !phi3 && c.Bool("attention_bias", gptOss);   // GptOssConfig: attention_bias true
        int layers = nLayer;
        int? window = null;
        var sliding = new bool[layers];
        int? configWindow = c.Root["sliding_window"] is { } swn && swn.GetValueKind() == JsonValueKind.Number ? c.Int("sliding_window")
            : gptOss && !c.Root.ContainsKey("sliding_window") ? 128 : null;   // GptOssConfig: sliding_window 128
        if (mistral)
        {
            // MistralConfig: sliding_window 4096 when absent (MixtralConfig: none), null for none; when set, every layer's
            // attention is windowed (layer_types, which transformers 5 warns about for Mistral, is not read there either).
            int? w = c.Root.ContainsKey("sliding_window") ? c.Root["sliding_window"] is null ? null : c.Int("sliding_window") : mixtral ? null : 4096;
            if (w is not null) Array.Fill(sliding, true);
            configWindow = w;
        }
        else if (phi3)
        {
            // Phi3Model: create_sliding_window_causal_mask for every layer when sliding_window is set (Phi3Config: null).
            if (configWindow is not null) Array.Fill(sliding, true);
        }
        else if (!gemma1 && !olmo1 && c.Root["layer_types"] is JsonArray types) // Gemma 1 and OLMo (1) have no sliding window
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
        else if (gemma3)
        {
            // HF Gemma 3 (4.5x): layer i is local unless i + 1 is a multiple of sliding_window_pattern.
            int pattern = c.Int("sliding_window_pattern", 6);
            if (pattern <= 0) throw new SaeSharpException($"{c.Path}: sliding_window_pattern={pattern} must be positive");
            for (int i = 0; i < layers; i++) sliding[i] = (i + 1) % pattern != 0;
        }
        else if (gemma || gptOss)
            for (int i = 0; i < layers; i++) sliding[i] = i % 2 == 0; // HF Gemma 2, GptOssConfig's layer_types: even layers are local
        else if (olmo3)
            for (int i = 0; i < layers; i++) sliding[i] = (i + 1) % 4 != 0; // Olmo3Config: every fourth layer is full
        else if (modelType is "qwen2" or "qwen3" or "qwen3_moe" && c.Bool("use_sliding_window", false))
        {
            int from = c.Int("max_window_layers", 28);
            for (int i = from; i < layers; i++) sliding[i] = true;
        }
        if (sliding.Any(x => x))
        {
            window = configWindow ?? (gemma || (olmo3 && !c.Root.ContainsKey("sliding_window")) ? 4096 : throw new SaeSharpException($"{c.Path}: sliding-window layers but no sliding_window"));
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
            Intermediate = intermediate, MoeIntermediate = denseMlp is null ? 0 : moeIntermediate, DenseMlpLayers = denseMlp, VocabSize = vocab,
            MaxPositions = maxPositions, RopeAttentionScaling = ropeScaling, RopeScaling = ropeScalingInfo, LongRope = longRope, LocalRopeAttentionScaling = localRopeScaling,
            // OlmoLayerNorm's eps is fixed (1e-5); OlmoConfig has no rms_norm_eps.
            Eps = olmo1 ? 1e-5 : c.Double("rms_norm_eps", mixtral || olmo2 || olmoe || gptOss || phi3 ? 1e-5 : 1e-6), Activation = act, RopeTheta = theta, InvFreq = invFreq,
            LocalRopeTheta = localTheta, LocalInvFreq = localInvFreq,
            TieEmbeddings = c.Bool("tie_word_embeddings", gemma || gemma1),
            QkvBias = modelType == "qwen2" || (qwen2Moe && c.Bool("qkv_bias", true)) || attnBias, OBias = modelType is not ("qwen2" or "qwen2_moe") && attnBias,
            MlpBias = !mistral && !phi3 && !gemma1 && !olmo1 && !olmo2 && !olmoe && !gptOss && c.Bool("mlp_bias", false), QkNorm = modelType is "qwen3" or "qwen3_moe" || gemma3,
            QkNormWhole = olmo2 || olmoe, ClipQkv = clip, Olmo2 = olmo2, NonParametricLayerNorm = olmo1,
            Gemma = gemma || gemma1, PostNorms = gemma, Gemma3 = gemma3,
            AttnScale = gemma ? Math.Pow(c.Double("query_pre_attn_scalar", 256), -0.5) : 1.0 / Math.Sqrt(headDim),
            // Gemma 2 caps by default (50, 30); Gemma 3 does not (null), and its attention never applies
            // attn_logit_softcapping: transformers' Gemma3Attention keeps the value but does not pass it to the attention
            // function (4.51 to 5.0), so a Gemma 3 config's attention cap changes nothing there, nor here.
            AttnSoftCap = gemma && !gemma3 ? Cap("attn_logit_softcapping", 50.0) : null,
            FinalSoftCap = gemma ? Cap("final_logit_softcapping", gemma3 ? null : 30.0) : null,
            SlidingWindow = window, SlidingLayers = sliding, NumExperts = experts, ExpertsPerToken = perToken,
            NormTopKProb = mixtral || (sparse && c.Bool("norm_topk_prob", false)), SharedExpertIntermediate = shared,
            GptOss = gptOss, SwigluLimit = gptOss ? c.Double("swiglu_limit", 7.0) : 7.0, SwigluAlpha = gptOss ? c.Double("swiglu_alpha", 1.702) : 1.702,
        };
    }

    /// <summary>rope_scaling (transformers ≤ 4.x) or rope_parameters (5.x), null when absent. Where transformers 5 nests one
    /// set per layer type, the set of <paramref name="layerType"/> (null when it has none); without a layer type, the sets must agree.</summary>
    private static JsonObject? RopeParameters(JsonConfig c, string? layerType = null)
    {
        foreach (var key in new[] { "rope_parameters", "rope_scaling" })
        {
            var n = c.Root[key];
            if (n is null || n.GetValueKind() == JsonValueKind.Null) continue;
            var o = n as JsonObject ?? throw new SaeSharpException($"{c.Path}: {key} must be an object, got {n.ToJsonString()}");
            // transformers 5 nests one set per layer type ({"full_attention": {...}, "sliding_attention": {...}}) when
            // they differ (Gemma 3); the other families use one set for every layer.
            if (IsPerLayerType(o))
            {
                if (layerType is not null)
                    return o[layerType] is { } set ? set as JsonObject ?? throw new SaeSharpException($"{c.Path}: {key}.{layerType} must be an object") : null;
                var sets = o.Select(kv => kv.Value?.ToJsonString()).Distinct().ToList();
                if (sets.Count > 1)
                    throw new SaeSharpException($"{c.Path}: {key} differ by layer type ({string.Join(", ", o.Select(kv => kv.Key))}); not supported");
                return o.First().Value as JsonObject ?? throw new SaeSharpException($"{c.Path}: {key}.{o.First().Key} must be an object");
            }
            return o;
        }
        return null;
    }

    private static bool IsPerLayerType(JsonObject o) => o.Count > 0 && o.All(kv => kv.Key is "full_attention" or "sliding_attention");

    /// <summary>True when rope_parameters holds one set per layer type (transformers 5's Gemma 3).</summary>
    private static bool RopePerLayerType(JsonConfig c) => c.Root["rope_parameters"] is JsonObject o && IsPerLayerType(o);

    /// <summary>HF <c>ROPE_INIT_FUNCTIONS</c> for rope types default, linear, llama3 and yarn: the frequencies and the
    /// attention scaling that multiplies cos and sin (1 but for yarn), and the parameters as applied (null for default).</summary>
    private static (double[] InvFreq, double AttentionScaling, RopeScaling? Scaling) ScaledInvFreq(JsonConfig c, JsonObject? rope, int dim, double theta, int maxPositions)
    {
        // Float32 as HF computes them, then widened.
        using var scope = NewDisposeScope();
        double[] inv = Rotary.InvFreq(dim, theta).to(ScalarType.Float64).data<double>().ToArray();
        string type = rope?["rope_type"]?.GetValue<string>() ?? rope?["type"]?.GetValue<string>() ?? "default";
        double Num(string key) => rope![key] is { } v && v.GetValueKind() == JsonValueKind.Number
            ? v.GetValue<double>() : throw new SaeSharpException($"{c.Path}: rope_scaling of type {type} needs a number '{key}'");
        double? Opt(string key) => rope![key] is { } v && v.GetValueKind() != JsonValueKind.Null ? Num(key) : null;
        switch (type)
        {
            case "default":
                return (inv, 1.0, null);
            case "linear":
                {
                    double f = Num("factor");
                    return (inv.Select(x => x / f).ToArray(), 1.0, new RopeScaling { Type = type, Factor = f });
                }
            case "llama3":
                {
                    double factor = Num("factor"), low = Num("low_freq_factor"), high = Num("high_freq_factor");
                    double oldCtx = Num("original_max_position_embeddings");
                    double lowWavelen = oldCtx / low, highWavelen = oldCtx / high;
                    return (inv.Select(f =>
                    {
                        double wavelen = 2 * Math.PI / f;
                        if (wavelen < highWavelen) return f;            // high frequencies kept
                        if (wavelen > lowWavelen) return f / factor;    // low frequencies scaled
                        double smooth = (oldCtx / wavelen - low) / (high - low);
                        return (1 - smooth) * f / factor + smooth * f;
                    }).ToArray(), 1.0, new RopeScaling { Type = type, Factor = factor, LowFreqFactor = low, HighFreqFactor = high, OriginalMaxPositionEmbeddings = oldCtx });
                }
            case "yarn":
                return Yarn(c, rope!, dim, theta, maxPositions, Opt);
            default:
                throw new SaeSharpException($"{c.Path}: rope_scaling type '{type}' is not supported (default, linear, llama3, yarn are)");
        }
    }

    /// <summary>
    /// transformers 5's <c>_compute_yarn_parameters</c>, in float32 as there: frequencies ramped between θ-based
    /// extrapolation (fast dims) and interpolation by <c>factor</c> (slow dims) over the correction range of
    /// <c>beta_fast</c> (32) and <c>beta_slow</c> (1) rotations in <c>original_max_position_embeddings</c> (else
    /// max_position_embeddings), floored/ceiled unless <c>truncate</c> is false; the attention factor is
    /// <c>attention_factor</c>, else 0.1·mscale·ln(factor) + 1 (the ratio of two such with <c>mscale</c> and
    /// <c>mscale_all_dim</c>), 1 when factor ≤ 1. A missing factor is max_position_embeddings / original_max_position_embeddings.
    /// (transformers 4.5x instead replaced factor by that ratio whenever original_max_position_embeddings was given.)
    /// </summary>
    private static (double[] InvFreq, double AttentionScaling, RopeScaling Scaling) Yarn(JsonConfig c, JsonObject rope, int dim, double theta, int maxPositions, Func<string, double?> opt)
    {
        double originalMax = opt("original_max_position_embeddings") ?? maxPositions;
        double factor = opt("factor") ?? maxPositions / originalMax;
        if (!(factor > 0) || !(originalMax > 0) || !(theta > 1))
            throw new SaeSharpException($"{c.Path}: rope_scaling yarn needs factor > 0, original_max_position_embeddings > 0 and rope_theta > 1 " +
                                        $"(got {factor}, {originalMax}, {theta})");
        static double MScale(double scale, double m = 1) => scale <= 1 ? 1.0 : 0.1 * m * Math.Log(scale) + 1.0;
        double? mscale = opt("mscale"), mscaleAllDim = opt("mscale_all_dim");
        double attention = opt("attention_factor")
            ?? (mscale is double ms && ms != 0 && mscaleAllDim is double ma && ma != 0 ? MScale(factor, ms) / MScale(factor, ma) : MScale(factor));
        // beta_fast / beta_slow: `get(...) or 32` / `or 1`, so 0 or null takes the default too.
        double betaFast = opt("beta_fast") is double bf && bf != 0 ? bf : 32, betaSlow = opt("beta_slow") is double bs && bs != 0 ? bs : 1;
        bool truncate = rope["truncate"] is { } t && t.GetValueKind() != JsonValueKind.Null
            ? t.GetValueKind() is JsonValueKind.True or JsonValueKind.False ? t.GetValue<bool>()
                : throw new SaeSharpException($"{c.Path}: rope_scaling 'truncate' must be true or false, got {t.ToJsonString()}")
            : true;
        double CorrectionDim(double rotations) => dim * Math.Log(originalMax / (rotations * 2 * Math.PI)) / (2 * Math.Log(theta));
        double low = CorrectionDim(betaFast), high = CorrectionDim(betaSlow);
        if (truncate) (low, high) = (Math.Floor(low), Math.Ceiling(high));
        (low, high) = (Math.Max(low, 0), Math.Min(high, dim - 1));
        if (low == high) high += 0.001;   // HF: prevent singularity

        using var scope = NewDisposeScope();
        using Scalar dimScalar = dim.ToScalar(), factorScalar = factor.ToScalar(), lowScalar = low.ToScalar(), spanScalar = (high - low).ToScalar(),
            halfDim = (dim / 2).ToScalar();
        using var thetaTensor = tensor(theta);
        var posFreqs = pow(thetaTensor, arange(TorchScalars.Of(0), dimScalar, TorchScalars.Of(2), dtype: ScalarType.Int64).to(ScalarType.Float32) / dimScalar);
        var extrapolation = TorchScalars.Of(1.0) / posFreqs;
        var interpolation = TorchScalars.Of(1.0) / (posFreqs * factorScalar);
        var ramp = ((TorchScalars.Arange(halfDim, dtype: ScalarType.Float32) - lowScalar) / spanScalar).clamp(TorchScalars.Of(0), TorchScalars.Of(1));
        var extrapolationFactor = TorchScalars.OneMinus(ramp);
        var inv = (interpolation * TorchScalars.OneMinus(extrapolationFactor)).add(extrapolation * extrapolationFactor, TorchScalars.One);
        return (inv.to(ScalarType.Float64).data<double>().ToArray(), attention, new RopeScaling
        {
            Type = "yarn", Factor = factor, OriginalMaxPositionEmbeddings = originalMax, BetaFast = betaFast, BetaSlow = betaSlow,
            Truncate = truncate, AttentionFactor = attention,
        });
    }
}

/// <summary>
/// transformers' <c>_compute_longrope_parameters</c> (Phi-3-*-128k, Phi-3.5, Phi-4-mini): the frequencies
/// 1 / (ext_factor_i · θ^(2i/dim)) in float32, with <c>short_factor</c> and with <c>long_factor</c> (dim/2 numbers each);
/// the attention factor multiplying cos and sin is <c>attention_factor</c>, else √(1 + ln(factor) / ln(original)) (1 when
/// factor ≤ 1), where factor is max_position_embeddings / original_max_position_embeddings (the config's top-level key,
/// which Phi3Config always has; else rope_scaling's; else 4096, Phi3Config's default). As <c>longrope_frequency_update</c> does, a forward uses the long frequencies when its largest position
/// + 1 exceeds <see cref="OriginalMax"/>, the short ones otherwise (with a KV cache, per step: earlier keys keep theirs).
/// </summary>
internal sealed record LongRope(double[] ShortInvFreq, double[] LongInvFreq, int OriginalMax, double AttentionFactor, RopeScaling Info)
{
    public static LongRope From(JsonConfig c, JsonObject rope, string ropeKey, int dim, double theta, int maxPositions)
    {
        double[] Factors(string key)
        {
            var what = rope[key]?.ToJsonString() ?? "nothing";
            if (rope[key] is not JsonArray a || a.Count != dim / 2
                || a.Any(x => x is not JsonValue v || v.GetValueKind() != JsonValueKind.Number || !(v.GetValue<double>() > 0)))
                throw new SaeSharpException($"{c.Path}: {ropeKey}.{key} must be a list of {dim / 2} positive numbers (rotary_dim / 2), got {what}");
            return [.. a.Select(x => x!.GetValue<double>())];
        }
        double[] shortF = Factors("short_factor"), longF = Factors("long_factor");
        double? Opt(string key) => rope[key] is { } v && v.GetValueKind() == JsonValueKind.Number ? v.GetValue<double>() : null;
        // Phi3Config always has original_max_position_embeddings (4096 by default), so transformers takes factor as
        // max_position_embeddings / original_max_position_embeddings, never rope_scaling's factor.
        int original = c.Int("original_max_position_embeddings", Opt("original_max_position_embeddings") is double o ? (int)o : 4096);
        double factor = (double)maxPositions / original;
        if (original <= 1 || !(theta > 0))
            throw new SaeSharpException($"{c.Path}: longrope needs original_max_position_embeddings > 1 and rope_theta > 0 (got {original}, {theta})");
        double attention = Opt("attention_factor") ?? (factor <= 1 ? 1.0 : Math.Sqrt(1 + Math.Log(factor) / Math.Log(original)));
        return new LongRope(InvFreq(shortF, dim, theta), InvFreq(longF, dim, theta), original, attention,
            new RopeScaling { Type = "longrope", Factor = factor, OriginalMaxPositionEmbeddings = original, AttentionFactor = attention });
    }

    /// <summary>1 / (ext · θ^(arange(0, dim, 2) / dim)) in float32, as HF computes it, then widened.</summary>
    private static double[] InvFreq(double[] ext, int dim, double theta)
    {
        using var scope = NewDisposeScope();
        using var dimScalar = dim.ToScalar();
        using var thetaTensor = tensor(theta);
        var shape = arange(TorchScalars.Of(0), dimScalar, TorchScalars.Of(2), dtype: ScalarType.Int64).to(ScalarType.Float32) / dimScalar;
        var inv = TorchScalars.Of(1.0) / (tensor(ext, dtype: ScalarType.Float32) * pow(thetaTensor, shape));
        return inv.to(ScalarType.Float64).data<double>().ToArray();
    }
}
