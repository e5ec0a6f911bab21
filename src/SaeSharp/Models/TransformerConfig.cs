using System.Text.Json.Nodes;
using static TorchSharp.torch;

namespace SaeSharp.Models;

/// <summary>
/// Summary of a loaded transformer in TransformerLens terms (n_layers, d_model, d_vocab, n_ctx, ...),
/// whatever the Hugging Face architecture it came from.
/// </summary>
public sealed record TransformerConfig
{
    /// <summary>Name of the model: config.json <c>_name_or_path</c>, else the folder name.</summary>
    public required string ModelName { get; init; }
    /// <summary>Hugging Face <c>model_type</c>: <c>gpt2</c>, <c>gpt_neo</c>, <c>gpt_neox</c>, <c>llama</c>, <c>mistral</c>, <c>mixtral</c>, <c>qwen3_moe</c>, <c>qwen2_moe</c>, <c>qwen2</c>, <c>qwen3</c>, <c>olmo</c>, <c>olmo2</c>, <c>olmo3</c>, <c>olmoe</c>, <c>gemma</c>, <c>gemma2</c>,
    /// <c>gemma3_text</c>, <c>gemma3</c> (whose text model is loaded), <c>gpt_oss</c>, <c>deepseek_v2</c>, <c>deepseek_v3</c> or <c>phi3</c>.</summary>
    public required string Architecture { get; init; }
    /// <summary>Transformer blocks (TransformerLens <c>n_layers</c>).</summary>
    public required int NLayers { get; init; }
    /// <summary>Residual stream width (<c>d_model</c>).</summary>
    public required int DModel { get; init; }
    /// <summary>Attention (query) heads (<c>n_heads</c>).</summary>
    public required int NHeads { get; init; }
    private readonly int _dHead;
    /// <summary>Width of one attention head: config.json <c>head_dim</c> where given (Gemma, Qwen3), else d_model / n_heads.</summary>
    public int DHead { get => _dHead > 0 ? _dHead : DModel / NHeads; init => _dHead = value; }
    private readonly int _nKvHeads;
    /// <summary>Key/value heads (<c>num_key_value_heads</c>, grouped-query attention); n_heads when not grouped.</summary>
    public int NKvHeads { get => _nKvHeads > 0 ? _nKvHeads : NHeads; init => _nKvHeads = value; }
    /// <summary>Gated MLP (Llama SwiGLU, Gemma GeGLU): hook_pre is the gate, <c>mlp.hook_pre_linear</c> the up projection.</summary>
    public bool GatedMlp { get; init; }
    /// <summary>Normalisation: <c>LN</c> (LayerNorm) or <c>RMS</c> (RMSNorm).</summary>
    public string NormalizationType { get; init; } = "LN";
    /// <summary>Attention-score soft cap (Gemma 2 <c>attn_logit_softcapping</c>): scores become cap·tanh(scores/cap).</summary>
    public double? AttnScoresSoftCap { get; init; }
    /// <summary>Attention scores are divided by √d_head (TransformerLens <c>use_attn_scale</c>); false for GPT-Neo, whose
    /// scores are the raw q·k.</summary>
    public bool UseAttnScale { get; init; } = true;
    /// <summary>Final-logit soft cap (Gemma 2 <c>final_logit_softcapping</c>).</summary>
    public double? OutputLogitsSoftCap { get; init; }
    /// <summary>Sliding-window length of the local-attention layers (Gemma 2/3; Mistral: every layer), null when every layer is global.</summary>
    public int? SlidingWindow { get; init; }
    /// <summary>Experts of each mixture-of-experts MLP (TransformerLens <c>num_experts</c>, Mixtral <c>num_local_experts</c>, Qwen3-MoE <c>num_experts</c>); 0 for a dense MLP.</summary>
    public int NumExperts { get; init; }
    /// <summary>Experts each token is routed to (TransformerLens <c>experts_per_token</c>, Mixtral <c>num_experts_per_tok</c>).</summary>
    public int ExpertsPerToken { get; init; }
    /// <summary>The chosen experts' router weights are renormalised to sum 1 (TransformerLens <c>norm_topk_prob</c>; Mixtral
    /// always, Qwen3-MoE as its config says).</summary>
    public bool NormTopKProb { get; init; }
    /// <summary>Width of a mixture of experts' shared expert (Qwen2-MoE <c>shared_expert_intermediate_size</c>); 0 for none.</summary>
    public int SharedExpertDMlp { get; init; }
    /// <summary>MLP hidden width (<c>d_mlp</c>; of each expert in a mixture of experts).</summary>
    public required int DMlp { get; init; }
    /// <summary>Rows of the unembedding (may exceed the tokenizer's vocabulary, as in Pythia).</summary>
    public required int DVocab { get; init; }
    /// <summary>Maximum context length (<c>n_positions</c> / <c>max_position_embeddings</c>).</summary>
    public required int NCtx { get; init; }
    /// <summary>Activation function name as written in config.json.</summary>
    public required string Activation { get; init; }
    /// <summary>Epsilon of the layer norms (<c>layer_norm_epsilon</c> / <c>rms_norm_eps</c>).</summary>
    public required double LayerNormEps { get; init; }
    /// <summary>Attention and MLP read the same residual (GPT-J / NeoX <c>use_parallel_residual</c>).</summary>
    public bool ParallelAttnMlp { get; init; }
    /// <summary>Dimensions of each head rotated by rotary embeddings (0 = learned absolute positions).</summary>
    public int RotaryDim { get; init; }
    /// <summary>GPT-J's rotary (TransformerLens <c>rotary_adjacent_pairs</c>, HF <c>rotate_every_two</c>): adjacent dims
    /// (0, 1), (2, 3), … of the rotary part turn as pairs, not the two halves as NeoX's rotate_half.</summary>
    public bool RotaryAdjacentPairs { get; init; }
    /// <summary>ALiBi biases on the attention scores instead of position embeddings (BLOOM; TransformerLens
    /// <c>positional_embedding_type="alibi"</c>).</summary>
    public bool Alibi { get; init; }
    /// <summary>A LayerNorm after the token embedding, before the blocks (BLOOM's <c>word_embeddings_layernorm</c>;
    /// TransformerLens <c>post_embedding_ln</c>).</summary>
    public bool PostEmbeddingLn { get; init; }
    /// <summary>Base θ of the rotary frequencies (<c>rope_theta</c> / <c>rotary_emb_base</c>).</summary>
    public double RotaryBase { get; init; } = 10000;
    /// <summary>Base θ of the sliding-window layers' rotary frequencies when they have their own (Gemma 3
    /// <c>rope_local_base_freq</c>, TransformerLens <c>rotary_base_local</c>); <see cref="RotaryBase"/> is then the global layers'.</summary>
    public double? RotaryBaseLocal { get; init; }
    /// <summary>The rope_scaling (transformers 5: rope_parameters) the rotary frequencies were computed with, its defaults
    /// filled in; null for the default rope type (or no rotary). Gemma 3: the global layers' (the sliding ones take the
    /// default rope with <see cref="RotaryBaseLocal"/>).</summary>
    public RopeScaling? RopeScaling { get; init; }
    /// <summary>The layers whose attention is restricted to <see cref="SlidingWindow"/> (HF <c>layer_types</c>
    /// <c>sliding_attention</c>); empty when every layer is global.</summary>
    public IReadOnlyList<int> SlidingWindowLayers { get; init; } = [];
    /// <summary>gpt-oss: each head has a learned logit (<c>self_attn.sinks</c>), an extra column of its attention softmax
    /// whose probability is dropped (TransformerLens has no such setting).</summary>
    public bool AttentionSinks { get; init; }
    /// <summary>OLMo (1), OLMoE <c>clip_qkv</c>: q and k (after their norms, if any) and v clamped to [−clip_qkv, clip_qkv]; null for none.
    /// (TransformerLens has no such setting.)</summary>
    public double? ClipQkv { get; init; }
    /// <summary>OPT's <c>word_embed_proj_dim</c> where it differs from d_model (facebook/opt-350m: 512): the width of
    /// <c>hook_embed</c> (embed_tokens' output, before project_in) and of <c>ln_final.hook_normalized</c> (project_out's
    /// output, the unembedding's input); null otherwise. (TransformerLens has no such setting.)</summary>
    public int? WordEmbedProjDim { get; init; }
    /// <summary>Dtype of the loaded weights.</summary>
    public ScalarType Dtype { get; init; } = ScalarType.Float32;
    /// <summary>DeepSeek-V3 multi-head latent attention (TransformerLens has none): q and k heads are
    /// <c>qk_nope_head_dim + qk_rope_head_dim</c> wide (<see cref="DHead"/> is then v's and z's <c>v_head_dim</c>), the
    /// last <see cref="RotaryDim"/> of them rotated; null for other attention.</summary>
    public int? DHeadQk { get; init; }
    /// <summary>DeepSeek-V3: rank of q's low-rank projection (<c>q_lora_rank</c>, <c>attn.hook_q_latent</c>'s width); null when q is one projection.</summary>
    public int? QLoraRank { get; init; }
    /// <summary>DeepSeek-V3: rank of the key-value latent (<c>kv_lora_rank</c>, <c>attn.hook_kv_latent</c>'s width); 0 for other attention.</summary>
    public int KvLoraRank { get; init; }
    /// <summary>DeepSeek-V3 <c>rope_interleave</c>: each head's rotary dims are de-interleaved (evens, then odds) before rotation.</summary>
    public bool RopeInterleave { get; init; }
    /// <summary>DeepSeek-V3: width of each routed expert (<c>moe_intermediate_size</c>) when it differs from <see cref="DMlp"/>
    /// (then the dense layers' MLP); null otherwise.</summary>
    public int? MoeDMlp { get; init; }
    /// <summary>DeepSeek-V2/V3: the first this many layers have a dense MLP (<c>first_k_dense_replace</c>).</summary>
    public int FirstKDenseReplace { get; init; }
    /// <summary>The layers of a mixture-of-experts model with a dense MLP of <see cref="DMlp"/> (DeepSeek's first
    /// first_k_dense_replace; Qwen-MoE's <c>mlp_only_layers</c> and those <c>decoder_sparse_step</c> skips); empty otherwise.</summary>
    public IReadOnlyList<int> DenseMlpLayers { get; init; } = [];
    /// <summary>DeepSeek's routing as <c>sae model info</c> prints it (topk_method, n_group, topk_group,
    /// routed_scaling_factor, sigmoid or softmax scores); null for the other mixtures of experts.</summary>
    public string? GroupRouting { get; init; }

    /// <summary>One line with the TransformerLens names and values, as <c>sae model info</c> prints it.</summary>
    public override string ToString() =>
        $"{ModelName} ({Architecture}): n_layers={NLayers} d_model={DModel} n_heads={NHeads} d_head={DHead} d_mlp={DMlp} " +
        (NKvHeads != NHeads ? $"n_key_value_heads={NKvHeads} " : "") +
        $"d_vocab={DVocab} n_ctx={NCtx} act={Activation}" + (GatedMlp ? " gated_mlp" : "") + (NormalizationType != "LN" ? $" norm={NormalizationType}" : "") +
        (ParallelAttnMlp ? " parallel_attn_mlp" : "") + (UseAttnScale ? "" : " use_attn_scale=false") + (NumExperts > 0 ? $" num_experts={NumExperts} experts_per_token={ExpertsPerToken}" + (NormTopKProb ? " norm_topk_prob" : "")
            + (SharedExpertDMlp > 0 ? $" shared_expert_d_mlp={SharedExpertDMlp}" : "")
            + (MoeDMlp is { } md ? $" moe_d_mlp={md} " + (GroupRouting is not null ? $"first_k_dense_replace={FirstKDenseReplace}"
                : $"dense_mlp_layers={string.Join(",", DenseMlpLayers)}") : "") + (GroupRouting is { } gr ? " " + gr : "") : "") +
        (DHeadQk is { } dq ? $" mla(q_lora_rank={QLoraRank?.ToString(System.Globalization.CultureInfo.InvariantCulture) ?? "null"} kv_lora_rank={KvLoraRank} qk_head_dim={dq} qk_rope_head_dim={RotaryDim} v_head_dim={DHead}{(RopeInterleave ? " rope_interleave" : "")})" : "") +
        (AttnScoresSoftCap is { } ac ? $" attn_softcap={ac}" : "") + (OutputLogitsSoftCap is { } oc ? $" logit_softcap={oc}" : "") +
        (SlidingWindow is { } sw ? $" sliding_window={sw}" + SlidingLayersText() : "") + (AttentionSinks ? " attn_sinks" : "") +
        (ClipQkv is { } cq ? $" clip_qkv={Num(cq)}" : "") + (WordEmbedProjDim is { } we ? $" word_embed_proj_dim={we}" : "") +
        (RotaryDim > 0 ? $" rotary_dim={RotaryDim} rotary_base={Num(RotaryBase)} rope_type={RopeScaling?.ToString() ?? "default"}" : "") +
        (RotaryAdjacentPairs ? " rotary_adjacent_pairs" : "") + (Alibi ? " positional_embedding_type=alibi" : "") +
        (PostEmbeddingLn ? " post_embedding_ln" : "") +
        (RotaryBaseLocal is { } rl ? $" rotary_base_local={Num(rl)}" : "") +
        $" dtype={Dtype}";

    private static string Num(double x) => x.ToString(System.Globalization.CultureInfo.InvariantCulture);

    /// <summary>" sliding_layers=..." or, where shorter, " full_attention_layers=..." (the others being sliding): "all",
    /// an arithmetic run as "0,2,...,22", else ranges "0-2,4-6".</summary>
    private string SlidingLayersText()
    {
        if (SlidingWindowLayers.Count == 0) return "";
        if (SlidingWindowLayers.Count == NLayers) return " sliding_layers=all";
        var full = Enumerable.Range(0, NLayers).Except(SlidingWindowLayers).ToList();
        string s = Layers(SlidingWindowLayers), f = Layers(full);
        return f.Length < s.Length ? $" full_attention_layers={f}" : $" sliding_layers={s}";
    }

    private static string Layers(IReadOnlyList<int> layers)
    {
        int step = layers.Count > 1 ? layers[1] - layers[0] : 0;
        if (layers.Count >= 4 && step > 1 && layers.Zip(layers.Skip(1)).All(p => p.Second - p.First == step))
            return $"{layers[0]},{layers[1]},...,{layers[^1]}";
        var parts = new List<string>();
        for (int i = 0; i < layers.Count;)
        {
            int j = i;
            while (j + 1 < layers.Count && layers[j + 1] == layers[j] + 1) j++;
            parts.Add(j == i ? $"{layers[i]}" : $"{layers[i]}-{layers[j]}");
            i = j + 1;
        }
        return string.Join(",", parts);
    }
}

/// <summary>
/// A rotary model's <c>rope_scaling</c> (transformers 5: <c>rope_parameters</c>) as SaeSharp applied it, with its
/// defaults filled in: <see cref="Type"/> <c>linear</c> (<see cref="Factor"/>), <c>llama3</c> (factor, low/high frequency
/// factors, original context) or <c>yarn</c> (factor, original context, beta_fast/beta_slow, truncate, the attention
/// factor multiplying cos and sin).
/// </summary>
public sealed record RopeScaling
{
    /// <summary>HF <c>rope_type</c>: <c>linear</c>, <c>llama3</c> or <c>yarn</c>.</summary>
    public required string Type { get; init; }
    /// <summary><c>factor</c>: how many times the original context the frequencies are stretched to.</summary>
    public double Factor { get; init; }
    /// <summary><c>original_max_position_embeddings</c> (llama3, yarn; yarn without it: max_position_embeddings).</summary>
    public double? OriginalMaxPositionEmbeddings { get; init; }
    /// <summary>llama3 <c>low_freq_factor</c>.</summary>
    public double? LowFreqFactor { get; init; }
    /// <summary>llama3 <c>high_freq_factor</c>.</summary>
    public double? HighFreqFactor { get; init; }
    /// <summary>yarn <c>beta_fast</c> (32 when absent).</summary>
    public double? BetaFast { get; init; }
    /// <summary>yarn <c>beta_slow</c> (1 when absent).</summary>
    public double? BetaSlow { get; init; }
    /// <summary>yarn <c>truncate</c>: the correction range floored and ceiled to whole dims (true when absent).</summary>
    public bool? Truncate { get; init; }
    /// <summary>yarn: the factor multiplying cos and sin (<c>attention_factor</c>, else derived from factor / mscale); 1 otherwise.</summary>
    public double AttentionFactor { get; init; } = 1.0;

    /// <summary>As <c>sae model info</c> prints it: <c>yarn(factor=32 original_max_position_embeddings=4096 beta_fast=32
    /// beta_slow=1 truncate=false attention_factor=1.34657)</c>.</summary>
    public override string ToString()
    {
        static string N(double x) => double.Parse(x.ToString("G6", System.Globalization.CultureInfo.InvariantCulture),
            System.Globalization.CultureInfo.InvariantCulture).ToString(System.Globalization.CultureInfo.InvariantCulture);
        var parts = new List<string> { $"factor={N(Factor)}" };
        if (LowFreqFactor is { } lo) parts.Add($"low_freq_factor={N(lo)}");
        if (HighFreqFactor is { } hi) parts.Add($"high_freq_factor={N(hi)}");
        if (OriginalMaxPositionEmbeddings is { } om) parts.Add($"original_max_position_embeddings={N(om)}");
        if (BetaFast is { } bf) parts.Add($"beta_fast={N(bf)}");
        if (BetaSlow is { } bs) parts.Add($"beta_slow={N(bs)}");
        if (Truncate is { } t) parts.Add($"truncate={(t ? "true" : "false")}");
        if (Type is "yarn" or "longrope") parts.Add($"attention_factor={N(AttentionFactor)}");
        return $"{Type}({string.Join(" ", parts)})";
    }
}

/// <summary>Typed reads from a config.json object, with errors naming the file and key.</summary>
internal sealed class JsonConfig(string path, JsonObject root)
{
    public string Path { get; } = path;
    public JsonObject Root { get; } = root;

    public static JsonConfig Read(string path)
    {
        if (!File.Exists(path)) throw new SaeSharpException($"{path}: file not found (a Hugging Face model folder needs config.json)");
        try
        {
            var root = IO.StrictJson.Parse(File.ReadAllText(path)) as JsonObject ?? throw new SaeSharpException($"{path}: not a JSON object");
            _ = root.ContainsKey("model_type"); // builds the key index: a repeated key throws here, not at a later read
            return new JsonConfig(path, root);
        }
        catch (Exception e) when (e is System.Text.Json.JsonException or ArgumentException)
        {
            throw new SaeSharpException($"{path}: invalid JSON ({e.Message})");
        }
    }

    public bool Has(string key) => Root[key] is not null;

    public int Int(string key, int? fallback = null)
    {
        var n = Root[key];
        if (n is null) return fallback ?? throw new SaeSharpException($"{Path}: missing key '{key}'");
        try { return n.GetValue<int>(); }
        catch (Exception e) when (e is FormatException or InvalidOperationException)
        {
            throw new SaeSharpException($"{Path}: key '{key}' must be an integer, got {n.ToJsonString()}");
        }
    }

    public double Double(string key, double? fallback = null)
    {
        var n = Root[key];
        if (n is null) return fallback ?? throw new SaeSharpException($"{Path}: missing key '{key}'");
        try { return n.GetValue<double>(); }
        catch (Exception e) when (e is FormatException or InvalidOperationException)
        {
            throw new SaeSharpException($"{Path}: key '{key}' must be a number, got {n.ToJsonString()}");
        }
    }

    public bool Bool(string key, bool fallback)
    {
        var n = Root[key];
        if (n is null) return fallback;
        try { return n.GetValue<bool>(); }
        catch (Exception e) when (e is FormatException or InvalidOperationException)
        {
            throw new SaeSharpException($"{Path}: key '{key}' must be true or false, got {n.ToJsonString()}");
        }
    }

    public string? String(string key)
    {
        var n = Root[key];
        if (n is null) return null;
        try { return n.GetValue<string>(); }
        catch (Exception e) when (e is FormatException or InvalidOperationException)
        {
            throw new SaeSharpException($"{Path}: key '{key}' must be a string, got {n.ToJsonString()}");
        }
    }

    public IReadOnlyList<string> Architectures =>
        Root["architectures"] is JsonArray a ? a.Select(x => x?.ToString() ?? "").ToList() : [];
}
