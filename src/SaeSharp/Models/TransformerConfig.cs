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
    /// <summary>Hugging Face <c>model_type</c>: <c>gpt2</c>, <c>gpt_neox</c>, <c>llama</c>, <c>mistral</c>, <c>mixtral</c>, <c>qwen3_moe</c>, <c>qwen2_moe</c>, <c>qwen2</c>, <c>qwen3</c>, <c>olmo</c>, <c>olmo2</c>, <c>olmo3</c>, <c>olmoe</c>, <c>gemma</c>, <c>gemma2</c>,
    /// <c>gemma3_text</c>, <c>gemma3</c> (whose text model is loaded) or <c>gpt_oss</c>.</summary>
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
    /// <summary>Base θ of the rotary frequencies (<c>rope_theta</c> / <c>rotary_emb_base</c>).</summary>
    public double RotaryBase { get; init; } = 10000;
    /// <summary>Base θ of the sliding-window layers' rotary frequencies when they have their own (Gemma 3
    /// <c>rope_local_base_freq</c>, TransformerLens <c>rotary_base_local</c>); <see cref="RotaryBase"/> is then the global layers'.</summary>
    public double? RotaryBaseLocal { get; init; }
    /// <summary>OLMo (1), OLMoE <c>clip_qkv</c>: q and k (after their norms, if any) and v clamped to [−clip_qkv, clip_qkv]; null for none.
    /// (TransformerLens has no such setting.)</summary>
    public double? ClipQkv { get; init; }
    /// <summary>Dtype of the loaded weights.</summary>
    public ScalarType Dtype { get; init; } = ScalarType.Float32;

    /// <summary>One line with the TransformerLens names and values, as <c>sae model info</c> prints it.</summary>
    public override string ToString() =>
        $"{ModelName} ({Architecture}): n_layers={NLayers} d_model={DModel} n_heads={NHeads} d_head={DHead} d_mlp={DMlp} " +
        (NKvHeads != NHeads ? $"n_key_value_heads={NKvHeads} " : "") +
        $"d_vocab={DVocab} n_ctx={NCtx} act={Activation}" + (GatedMlp ? " gated_mlp" : "") + (NormalizationType != "LN" ? $" norm={NormalizationType}" : "") +
        (ParallelAttnMlp ? " parallel_attn_mlp" : "") + (NumExperts > 0 ? $" num_experts={NumExperts} experts_per_token={ExpertsPerToken}" + (NormTopKProb ? " norm_topk_prob" : "")
            + (SharedExpertDMlp > 0 ? $" shared_expert_d_mlp={SharedExpertDMlp}" : "") : "") +
        (AttnScoresSoftCap is { } ac ? $" attn_softcap={ac}" : "") + (OutputLogitsSoftCap is { } oc ? $" logit_softcap={oc}" : "") +
        (SlidingWindow is { } sw ? $" sliding_window={sw}" : "") + (ClipQkv is { } cq ? $" clip_qkv={cq}" : "") +
        (RotaryDim > 0 ? $" rotary_dim={RotaryDim}" : "") + (RotaryBaseLocal is { } rl ? $" rotary_base={RotaryBase} rotary_base_local={rl}" : "") +
        $" dtype={Dtype}";
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
