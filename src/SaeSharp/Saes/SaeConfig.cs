using static TorchSharp.torch;
using System.Text.Json;
using System.Text.Json.Nodes;
using System.Text.Json.Serialization;

namespace SaeSharp.Saes;

/// <summary>Where an SAE's activations come from: SAELens <c>cfg.json</c> "metadata".</summary>
public sealed class SaeMetadata
{
    /// <summary>The SAELens release whose file formats SaeSharp writes (cfg.json, <c>sae_lens.json</c>): the
    /// <see cref="SaeLensVersion"/> of a cfg.json that no SAELens wrote. SAELens's loader reads that key only to tell a v6
    /// cfg (≥ 6.0.0-rc.0) from an older one, which it converts.</summary>
    public const string SaeLensFormatVersion = "6.37.6";

    /// <summary>Model the activations came from (SAELens <c>model_name</c>).</summary>
    [JsonPropertyName("model_name")] public string? ModelName { get; set; }
    /// <summary>TransformerLens hook the SAE reads, e.g. <c>blocks.8.hook_resid_pre</c>.</summary>
    [JsonPropertyName("hook_name")] public string? HookName { get; set; }

    /// <summary><paramref name="hook"/> if given, else <see cref="HookName"/>; with neither, an error that says where the hook
    /// is missing (an SAE trained on activation files records none) and how to name it.</summary>
    public string HookOr(string? hook) => hook ?? HookName ?? throw new SaeSharpException(NoHook);

    internal const string NoHook =
        "the SAE's cfg.json has no metadata.hook_name (an SAE trained on activation files records none): name the hook it reads " +
        "with --hook where the command takes one, or write hook_name into its cfg.json (in C#: the hook argument)";
    /// <summary>Attention head of a per-head hook, or null.</summary>
    [JsonPropertyName("hook_head_index")] public int? HookHeadIndex { get; set; }
    /// <summary>Tokens per context window in training.</summary>
    [JsonPropertyName("context_size")] public int? ContextSize { get; set; }
    /// <summary>Whether windows started with BOS in training.</summary>
    [JsonPropertyName("prepend_bos")] public bool PrependBos { get; set; } = true;
    /// <summary>Dataset the activations were harvested from.</summary>
    [JsonPropertyName("dataset_path")] public string? DatasetPath { get; set; }
    /// <summary>SAELens model class; "HookedTransformer".</summary>
    [JsonPropertyName("model_class_name")] public string? ModelClassName { get; set; } = "HookedTransformer";
    /// <summary>TransformerLens weight processing the model was loaded with (fold_ln, center_writing_weights, ...).</summary>
    [JsonPropertyName("model_from_pretrained_kwargs")] public Dictionary<string, JsonElement>? ModelFromPretrainedKwargs { get; set; }
    /// <summary>Whether BOS/EOS/PAD positions were left out in training (SAELens <c>exclude_special_tokens: true</c>);
    /// null when absent or when it is a list (<see cref="ExcludeTokenIds"/>).</summary>
    [JsonIgnore] public bool? ExcludeSpecialTokens { get; set; }
    /// <summary>SAELens <c>exclude_special_tokens</c> as a list of token ids: exactly those positions were left out in
    /// training; null when it is a boolean or absent. Written in place of <see cref="ExcludeSpecialTokens"/> when set.</summary>
    [JsonIgnore] public long[]? ExcludeTokenIds { get; set; }

    [JsonInclude, JsonPropertyName("exclude_special_tokens")]
    private JsonElement? ExcludeSpecialTokensJson
    {
        get => Tokenizers.ExcludedTokens.ToJson(ExcludeSpecialTokens, ExcludeTokenIds);
        set
        {
            (ExcludeSpecialTokens, ExcludeTokenIds) = value switch
            {
                null or { ValueKind: JsonValueKind.Null } => (null, null),
                { ValueKind: JsonValueKind.True } => (true, null),
                { ValueKind: JsonValueKind.False } => (false, (long[]?)null),
                { } v => ((bool?)null, Tokenizers.ExcludedTokens.FromJson(JsonNode.Parse(v.GetRawText()), "cfg.json metadata exclude_special_tokens")),
            };
        }
    }
    /// <summary>SAELens version that wrote the file, when it did; a file SaeSharp writes anew has <see cref="SaeLensFormatVersion"/>.</summary>
    [JsonPropertyName("sae_lens_version")] public string? SaeLensVersion { get; set; }
    /// <summary>SAELens version that trained the SAE, when it did.</summary>
    [JsonPropertyName("sae_lens_training_version")] public string? SaeLensTrainingVersion { get; set; }
    /// <summary>Keys this class does not model, kept so a round trip loses nothing.</summary>
    [JsonExtensionData] public Dictionary<string, JsonElement>? Extra { get; set; }

    /// <summary>A transcoder's output hook (SAELens <c>hook_name_out</c>, e.g. <c>blocks.8.hook_mlp_out</c>): the hook whose
    /// activation its output replaces. Kept in <see cref="Extra"/> (as cfg.json writes it); null when absent.</summary>
    [JsonIgnore]
    public string? HookNameOut
    {
        get => Extra?.TryGetValue("hook_name_out", out var v) == true && v.ValueKind == JsonValueKind.String ? v.GetString() : null;
        set
        {
            if (value is null) Extra?.Remove("hook_name_out");
            else (Extra ??= [])["hook_name_out"] = JsonSerializer.SerializeToElement(value);
        }
    }

    /// <summary><paramref name="hook"/> as outputs name this SAE's site: "blocks.1.hook_k_input head 1" for an SAE of one head
    /// (<see cref="HookHeadIndex"/>), else the hook alone.</summary>
    public string Site(string hook) => SiteOf(hook, HookHeadIndex);

    /// <summary>"<paramref name="hook"/> head <paramref name="head"/>", or the hook alone without a head.</summary>
    public static string SiteOf(string hook, int? head) => head is int h ? $"{hook} head {h.ToString(System.Globalization.CultureInfo.InvariantCulture)}" : hook;

    /// <summary>The hook of a site <see cref="SiteOf"/> wrote: "blocks.0.attn.hook_z head 1" → "blocks.0.attn.hook_z"; a hook alone as it is.</summary>
    public static string HookOfSite(string site) =>
        System.Text.RegularExpressions.Regex.Match(site, @"^(.+) head \d+$") is { Success: true } m ? m.Groups[1].Value : site;

    /// <summary>SAELens's <c>hook_head_index_out</c>: the head of a transcoder's output hook it would replace, kept in
    /// <see cref="Extra"/>; null when absent or null. Splicing such a transcoder is refused (<c>AttachedSae</c>).</summary>
    [JsonIgnore]
    public int? HookHeadIndexOut =>
        Extra?.TryGetValue("hook_head_index_out", out var v) == true && v.ValueKind == JsonValueKind.Number && v.TryGetInt32(out int h) ? h : null;
    /// <summary>A transcoder's <c>hook_name_out</c> (the hook whose activation its output replaces), when it has one.</summary>
    internal SaeMetadata WithOutputHook(string? targetHook)
    {
        if (targetHook is not null) (Extra ??= new())["hook_name_out"] = JsonSerializer.SerializeToElement(targetHook);
        return this;
    }

    /// <summary>cfg.json's <c>model_from_pretrained_kwargs</c>: the weight processing flags, for a model run in another
    /// dtype than float32 TransformerLens's <c>dtype</c> keyword, and for a model at a hub revision other than main the
    /// <c>revision</c> keyword (which TransformerLens hands to Hugging Face's from_pretrained); null when there is none.</summary>
    internal static Dictionary<string, JsonElement>? FromPretrainedKwargs(IReadOnlyDictionary<string, bool>? flags, string? dtype, string? revision = null)
    {
        var kwargs = (flags ?? new Dictionary<string, bool>()).ToDictionary(kv => kv.Key, kv => JsonSerializer.SerializeToElement(kv.Value));
        if (dtype is not null) kwargs["dtype"] = JsonSerializer.SerializeToElement(dtype);
        if (revision is not null) kwargs[RevisionKey] = JsonSerializer.SerializeToElement(revision);
        return kwargs.Count == 0 ? null : kwargs;
    }

    /// <summary>The <c>model_from_pretrained_kwargs</c> key of the model's hub revision (a branch, tag or commit).</summary>
    public const string RevisionKey = "revision";

    /// <summary>The hub revision <paramref name="kwargs"/> (<c>model_from_pretrained_kwargs</c>) records; null: none (main).
    /// A <c>revision</c> that is not a non-empty string is an error naming it.</summary>
    public static string? RevisionOf(IReadOnlyDictionary<string, JsonElement>? kwargs, string source)
    {
        if (kwargs is null || !kwargs.TryGetValue(RevisionKey, out var v) || v.ValueKind == JsonValueKind.Null) return null;
        return v.ValueKind == JsonValueKind.String && v.GetString() is { Length: > 0 } r ? r
            : throw new SaeSharpException($"{source}: model_from_pretrained_kwargs revision {v.GetRawText()}: expected a branch, tag or commit of the model's hub repo (a string)");
    }

    /// <summary>The hub revision of the model these SAEs were trained on (<see cref="RevisionOf"/> of <see cref="ModelFromPretrainedKwargs"/>).</summary>
    public string? ModelRevision(string source) => RevisionOf(ModelFromPretrainedKwargs, source);
}

/// <summary>
/// An SAE's shape and inference behaviour, serialised as SAELens v6 <c>cfg.json</c>.
/// A transcoder (reconstructing another activation) has <see cref="DOut"/> different from <see cref="DIn"/>.
/// </summary>
public sealed class SaeConfig
{
    private string _architecture = SaeArchitectures.Standard;

    /// <summary>The architecture's registered name (<see cref="SaeArchitectures"/>); an alias is read as its name.</summary>
    [JsonPropertyName("architecture")]
    public string Architecture { get => _architecture; set => _architecture = SaeArchitectures.Find(value)?.Name ?? value; }
    /// <summary>Input width d_in.</summary>
    [JsonPropertyName("d_in")] public int DIn { get; set; }
    /// <summary>Number of latents d_sae.</summary>
    [JsonPropertyName("d_sae")] public int DSae { get; set; }
    /// <summary>Width of the reconstruction target; null means <see cref="DIn"/>.</summary>
    [JsonPropertyName("d_out")] [JsonIgnore(Condition = JsonIgnoreCondition.WhenWritingNull)] public int? DOut { get; set; }
    /// <summary>The SAELens dtype name of a floating-point tensor dtype (also TransformerLens's <c>dtype</c> keyword).</summary>
    public static string DtypeName(ScalarType dtype) => dtype switch
    {
        ScalarType.Float16 => "float16",
        ScalarType.BFloat16 => "bfloat16",
        ScalarType.Float64 => "float64",
        _ => "float32",
    };

    /// <summary>dtype of the weights ("float32", "bfloat16", ...).</summary>
    [JsonPropertyName("dtype")] public string Dtype { get; set; } = "float32";
    /// <summary>Device of the weights ("cpu").</summary>
    [JsonPropertyName("device")] public string Device { get; set; } = "cpu";
    /// <summary>Subtract b_dec from the input before encoding (SAELens default true; false for transcoders).</summary>
    [JsonPropertyName("apply_b_dec_to_input")] public bool ApplyBDecToInput { get; set; } = true;
    /// <summary>"none", "expected_average_only_in" (scaling factor kept in the cfg), "constant_norm_rescale" or "layer_norm".</summary>
    [JsonPropertyName("normalize_activations")] public string NormalizeActivations { get; set; } = "none";
    /// <summary>SAELens <c>reshape_activations</c> ("none"; "hook_z" flattens attention heads).</summary>
    [JsonPropertyName("reshape_activations")] public string ReshapeActivations { get; set; } = "none";
    /// <summary>Active latents per row for TopK and BatchTopK.</summary>
    [JsonPropertyName("k")] [JsonIgnore(Condition = JsonIgnoreCondition.WhenWritingNull)] public int? K { get; set; }
    /// <summary>Matryoshka prefix sizes (cumulative widths of the nested groups).</summary>
    [JsonPropertyName("matryoshka_widths")] [JsonIgnore(Condition = JsonIgnoreCondition.WhenWritingNull)] public int[]? MatryoshkaWidths { get; set; }
    /// <summary>matching_pursuit (SAELens <c>residual_threshold</c>): a row stops once its residual's norm falls below this
    /// (0 or less: never on the residual); null: SAELens's default 1e-2.</summary>
    [JsonPropertyName("residual_threshold")] [JsonIgnore(Condition = JsonIgnoreCondition.WhenWritingNull)] public double? ResidualThreshold { get; set; }
    /// <summary>matching_pursuit (SAELens <c>max_iterations</c>): the most latents a row selects; null: d_in.</summary>
    [JsonPropertyName("max_iterations")] [JsonIgnore(Condition = JsonIgnoreCondition.WhenWritingNull)] public int? MaxIterations { get; set; }
    /// <summary>matching_pursuit (SAELens <c>stop_on_duplicate_support</c>): a row stops once an iteration leaves its set of
    /// active latents unchanged; null: SAELens's default true.</summary>
    [JsonPropertyName("stop_on_duplicate_support")] [JsonIgnore(Condition = JsonIgnoreCondition.WhenWritingNull)] public bool? StopOnDuplicateSupport { get; set; }
    /// <summary>Where the activations came from.</summary>
    [JsonPropertyName("metadata")] public SaeMetadata Metadata { get; set; } = new();
    /// <summary>Keys this class does not model, kept so a round trip loses nothing.</summary>
    [JsonExtensionData] public Dictionary<string, JsonElement>? Extra { get; set; }

    /// <summary><see cref="DOut"/> or, for an autoencoder, <see cref="DIn"/>.</summary>
    [JsonIgnore] public int DOutOrIn => DOut ?? DIn;

    /// <summary>Indented JSON, as cfg.json is written.</summary>
    public static readonly JsonSerializerOptions JsonOptions = new() { WriteIndented = true };

    /// <summary>cfg.json text.</summary>
    public string ToJson() => JsonSerializer.Serialize(this, JsonOptions);

    /// <summary>Reads cfg.json text; <paramref name="source"/> names it in errors.</summary>
    public static SaeConfig FromJson(string json, string source = "cfg.json") =>
        JsonSerializer.Deserialize<SaeConfig>(json, JsonOptions)
        ?? throw new SaeSharpException($"{source}: empty SAE config");

    /// <summary>A deep copy.</summary>
    public SaeConfig Clone() => FromJson(ToJson());

    /// <summary>Checks the fields every architecture needs, then the architecture's own
    /// (<see cref="SaeArchitecture.Validate"/>); throws naming the field.</summary>
    public void Validate(string source = "cfg.json")
    {
        var arch = SaeArchitectures.Get(Architecture, source);
        if (DIn <= 0) throw new SaeSharpException($"{source}: d_in must be positive, got {DIn}");
        if (DSae <= 0) throw new SaeSharpException($"{source}: d_sae must be positive, got {DSae}");
        if (DOut is <= 0) throw new SaeSharpException($"{source}: d_out must be positive, got {DOut}");
        if (NormalizeActivations is not ("none" or "expected_average_only_in" or "constant_norm_rescale" or "layer_norm")
            && !arch.OtherNormalizations.Contains(NormalizeActivations))
            throw new SaeSharpException($"{source}: normalize_activations must be none, expected_average_only_in, constant_norm_rescale or layer_norm" +
                string.Concat(arch.OtherNormalizations.Select(n => $" or {n}")) + $", got '{NormalizeActivations}'");
        if (arch.NeedsK && K is not > 0)
            throw new SaeSharpException($"{source}: architecture '{Architecture}' needs a positive k, got {K?.ToString(System.Globalization.CultureInfo.InvariantCulture) ?? "none"}");
        if (K is > 0 && K > DSae) throw new SaeSharpException($"{source}: k={K} exceeds d_sae={DSae}");
        if (DOut is not null && DOut != DIn && ApplyBDecToInput)
            throw new SaeSharpException($"{source}: apply_b_dec_to_input needs d_out == d_in (a transcoder has d_in={DIn}, d_out={DOut})");
        arch.Validate?.Invoke(this, source);
    }
}
