using System.Globalization;
using System.Text.Json;
using System.Text.Json.Nodes;
using SaeSharp.Saes;
using SaeSharp.Training;

namespace SaeSharp.Pipelines;

/// <summary>
/// SAELens's <c>CacheActivationsRunnerConfig</c> (sae_lens/config.py, 6.37.6) as <c>sae cache --config</c> reads it: every
/// field of the dataclass, as <c>asdict(cfg)</c> writes them, is mapped, ignored (it changes nothing in the folder written:
/// <see cref="IgnoredFields"/>) or accepted only at the value SaeSharp implements (<see cref="FixedFields"/>). An unknown
/// key, or a field of the wrong JSON type, is a one-line error naming it.
/// <para>SAELens's <c>shuffle</c> and <c>seed</c> are ignored: <c>CacheActivationsRunner.run</c> writes the folder in harvest
/// order and then calls <c>dataset.shuffle(seed)</c>, which orders only the <c>Dataset</c> it returns and the hub upload;
/// <c>state.json</c> is not rewritten, so <c>load_from_disk</c> (SAELens's <c>use_cached_activations</c>) reads the harvest
/// order, as SaeSharp writes it.</para>
/// </summary>
public sealed record CacheActivationsSettings
{
    /// <summary><c>dataset_path</c> (<c>--dataset</c>; a Hugging Face id ORG/NAME is read as hf:ORG/NAME).</summary>
    public string? DatasetPath { get; init; }
    /// <summary><c>model_name</c> (<c>--model</c>).</summary>
    public string? ModelName { get; init; }
    /// <summary><c>model_batch_size</c>: context windows per model run.</summary>
    public int? ModelBatchSize { get; init; }
    /// <summary><c>hook_name</c> (<c>--hook</c>).</summary>
    public string? HookName { get; init; }
    /// <summary><c>d_in</c>: checked against the width of the activations at the hook.</summary>
    public int? DIn { get; init; }
    /// <summary><c>training_tokens</c> (<c>--tokens</c>).</summary>
    public long? TrainingTokens { get; init; }
    /// <summary><c>context_size</c> (<c>--context-size</c>); null for SAELens's -1 (the rows of a pre-tokenized dataset).</summary>
    public int? ContextSize { get; init; }
    /// <summary><c>new_cached_activations_path</c> (<c>--out</c>); null: SAELens's
    /// <c>activations/{dataset}/{model}/{hook_name}</c> (<see cref="DefaultOutputPath"/>).</summary>
    public string? NewCachedActivationsPath { get; init; }
    /// <summary><c>dtype</c>: the stored activations' type, float32 (default) or float16.</summary>
    public string Dtype { get; init; } = "float32";
    /// <summary><c>device</c> (<c>--device</c>); null when absent.</summary>
    public string? Device { get; init; }
    /// <summary><c>buffer_size_gb</c> (<c>--buffer-size-gb</c>): activation GB per shard of SAELens's folder.</summary>
    public double BufferSizeGb { get; init; } = 2.0;
    /// <summary><c>model_from_pretrained_kwargs</c>: weight processing flags and the model's dtype.</summary>
    public Dictionary<string, JsonElement>? ModelFromPretrainedKwargs { get; init; }
    /// <summary><c>prepend_bos</c> (false: <c>--no-prepend-bos</c>).</summary>
    public bool PrependBos { get; init; } = true;
    /// <summary><c>seqpos_slice</c> (<c>--seqpos-slice</c>).</summary>
    public Saes.SeqposSlice SeqposSlice { get; init; } = Saes.SeqposSlice.All;
    /// <summary>The file read, for messages.</summary>
    public string Source { get; init; } = "--config";
    /// <summary>What the file asked for that this run does not do (one line each), for the command to print.</summary>
    public IReadOnlyList<string> Notes { get; init; } = [];

    /// <summary>The fields read: name, the JSON kinds accepted.</summary>
    private static readonly (string Name, string Expected)[] MappedFields =
    [
        ("dataset_path", "string"), ("model_name", "string"), ("model_batch_size", "int"), ("hook_name", "string"), ("d_in", "int"),
        ("training_tokens", "int"), ("context_size", "int"), ("new_cached_activations_path", "string?"), ("dtype", "string"),
        ("device", "string"), ("buffer_size_gb", "number"), ("model_from_pretrained_kwargs", "object"), ("prepend_bos", "bool"),
        ("seqpos_slice", "array?"),
    ];

    /// <summary>Fields accepted and ignored, with why they change nothing in the folder written.</summary>
    public static readonly IReadOnlyList<(string Name, string Expected, string Why)> IgnoredFields =
    [
        ("shuffle", "bool", "SAELens shuffles only the Dataset run() returns and the hub upload; its folder keeps harvest order"),
        ("seed", "int?", "the seed of that shuffle"),
        ("hf_num_shards", "int?", "hub upload"), ("hf_revision", "string", "hub upload"), ("hf_is_private_repo", "bool", "hub upload"),
        ("compile_llm", "bool", "torch.compile speed setting"), ("llm_compilation_mode", "string?", "torch.compile speed setting"),
        ("streaming", "bool", "dataset files are read as the run reaches them either way"),
        ("dataset_trust_remote_code", "bool?", "no dataset loading script is run"),
    ];

    /// <summary>Fields accepted only at the value SaeSharp implements, with that value.</summary>
    public static readonly IReadOnlyList<(string Name, Func<JsonNode?, bool> Accepts, string Note)> FixedFields =
    [
        ("model_class_name", v => v is JsonValue s && s.TryGetValue(out string? n) && n == "HookedTransformer",
            "\"HookedTransformer\" only (SaeSharp runs Hugging Face models with TransformerLens hook names)"),
        ("model_kwargs", v => v is null || v is JsonObject { Count: 0 }, "{} only: SaeSharp passes no keyword arguments to the model's forward"),
        ("autocast_lm", v => v is JsonValue b && b.TryGetValue(out bool x) && !x, "false only: give the model's dtype in model_from_pretrained_kwargs or --dtype"),
    ];

    /// <summary>Every key of the dataclass, sorted.</summary>
    public static IReadOnlyList<string> Keys { get; } = MappedFields.Select(f => f.Name).Concat(IgnoredFields.Select(f => f.Name))
        .Concat(FixedFields.Select(f => f.Name)).Append("hf_repo_id").Order(StringComparer.Ordinal).ToList();

    /// <summary>SAELens's <c>_default_cached_activations_path</c>: <c>activations/{dataset_path}/{model_name}/{hook_name}</c>,
    /// each '/' of the dataset and model names replaced by '_'.</summary>
    public static string DefaultOutputPath(string datasetPath, string modelName, string hookName) =>
        $"activations/{datasetPath.Replace('/', '_')}/{modelName.Replace('/', '_')}/{hookName}";

    /// <summary>The dtype <see cref="Dtype"/> names.</summary>
    public TorchSharp.torch.ScalarType StoredDtype => Dtype switch
    {
        "float16" or "torch.float16" => TorchSharp.torch.ScalarType.Float16,
        _ => TorchSharp.torch.ScalarType.Float32,
    };

    /// <summary>The model and data fields as <see cref="TrainingSettings"/> carries them for the model and dataset options
    /// the commands share (model_name, hook_name, dataset_path, context_size, prepend_bos, seqpos_slice, model_batch_size as
    /// store_batch_size_prompts, model_from_pretrained_kwargs, d_in).</summary>
    public TrainingSettings ToTrainingSettings() => new()
    {
        ModelName = ModelName, HookName = HookName, DatasetPath = DatasetPath, ContextSize = ContextSize, PrependBos = PrependBos,
        SeqposSlice = SeqposSlice.IsAll ? null : SeqposSlice, StoreBatchSizePrompts = ModelBatchSize,
        ModelFromPretrainedKwargs = ModelFromPretrainedKwargs, DIn = DIn, Source = Source,
    };

    /// <summary>Reads a JSON file of CacheActivationsRunnerConfig fields (see the type's summary).</summary>
    public static CacheActivationsSettings FromJson(string path)
    {
        if (!File.Exists(path)) throw new SaeSharpException($"--config {path}: no such file");
        JsonObject fields;
        try
        {
            fields = JsonNode.Parse(File.ReadAllText(path)) as JsonObject
                     ?? throw new SaeSharpException($"{path}: expected a JSON object of CacheActivationsRunnerConfig fields");
        }
        catch (JsonException e)
        {
            throw new SaeSharpException($"{path}: invalid JSON ({e.Message})", e);
        }
        foreach (var (key, _) in fields)
            if (!Keys.Contains(key))
                throw new SaeSharpException($"{path}: unknown key '{key}' (CacheActivationsRunnerConfig's keys: {string.Join(", ", Keys)})");
        foreach (var (name, expected) in MappedFields.Concat(IgnoredFields.Select(f => (f.Name, f.Expected))).Append(("hf_repo_id", "string?")))
            if (fields.TryGetPropertyValue(name, out var v)) CheckKind(path, name, v, expected);
        var refused = FixedFields.Where(f => fields.ContainsKey(f.Name) && !f.Accepts(fields[f.Name]))
            .Select(f => $"'{f.Name}' {fields[f.Name]?.ToJsonString() ?? "null"} is not supported: {f.Note}").ToList();
        if (fields["model_from_pretrained_kwargs"] is JsonObject kwargs)
        {
            var other = kwargs.Select(kv => kv.Key).Where(k => k is not ("dtype" or Saes.SaeMetadata.RevisionKey) && !Models.WeightProcessingOptions.Keys.Contains(k)).ToList();
            if (other.Count > 0)
                refused.Add($"model_from_pretrained_kwargs {string.Join(", ", other.Select(k => $"'{k}'"))} not supported: SaeSharp reads dtype, revision and " +
                            string.Join(", ", Models.WeightProcessingOptions.Keys));
            if (kwargs[Saes.SaeMetadata.RevisionKey] is { } rev && !(rev is JsonValue rv && rv.TryGetValue(out string? r) && r.Length > 0))
                refused.Add($"model_from_pretrained_kwargs revision {rev.ToJsonString()}: expected a branch, tag or commit of the model's hub repo (a string)");
        }
        if (refused.Count > 0) throw new SaeSharpException($"{path}: {string.Join("; ", refused)}");

        string? Str(string k) => fields[k] is JsonValue v && v.TryGetValue(out string? s) ? s : null;
        long? Long(string k) => fields[k] is JsonValue v ? v.GetValue<long>() : null;
        int? Positive(string k)
        {
            if (Long(k) is not long n) return null;
            if (n <= 0 || n > int.MaxValue) throw new SaeSharpException($"{path}: {k} {n}: expected a positive whole number");
            return (int)n;
        }
        long? tokens = Long("training_tokens");
        if (tokens is <= 0) throw new SaeSharpException($"{path}: training_tokens {tokens}: expected a positive number of tokens");
        int? ctx = null;
        if (Long("context_size") is long c && c != -1)
            ctx = c > 0 && c <= int.MaxValue ? (int)c : throw new SaeSharpException($"{path}: context_size {c}: expected a positive number, or -1 (the rows of a pre-tokenized dataset)");
        if (ctx > tokens)
            throw new SaeSharpException($"{path}: context_size ({ctx}) is greater than training_tokens ({tokens}): reduce context_size or increase training_tokens (as SAELens requires)");
        string dtype = Str("dtype") ?? "float32";
        if (dtype is not ("float32" or "float16" or "torch.float32" or "torch.float16"))
            throw new SaeSharpException($"{path}: dtype \"{dtype}\": a SAELens activation cache stores float32 or float16 (datasets' Array2D has no bfloat16: pyarrow has no such type)");
        double buffer = fields["buffer_size_gb"] is JsonValue b ? b.GetValue<double>() : 2.0;
        if (!(buffer > 0)) throw new SaeSharpException($"{path}: buffer_size_gb {buffer.ToString("R", CultureInfo.InvariantCulture)}: expected a positive number of GB");

        var notes = new List<string>();
        if (Str("hf_repo_id") is { } repo)
            notes.Add($"hf_repo_id \"{repo}\": nothing is uploaded: SaeSharp writes the cache folder only (upload it yourself; its order is the harvest order, not SAELens's shuffled upload)");
        var ignored = IgnoredFields.Where(f => fields.ContainsKey(f.Name)).Select(f => f.Name).ToList();
        if (ignored.Count > 0)
            notes.Add($"ignored (no effect on the folder written; SAELens's shuffle too leaves its folder in harvest order): {string.Join(", ", ignored)}");
        return new CacheActivationsSettings
        {
            DatasetPath = Str("dataset_path"), ModelName = Str("model_name"), ModelBatchSize = Positive("model_batch_size"), HookName = Str("hook_name"),
            DIn = Positive("d_in"), TrainingTokens = tokens, ContextSize = ctx, NewCachedActivationsPath = Str("new_cached_activations_path"),
            Dtype = dtype, Device = Str("device"), BufferSizeGb = buffer,
            ModelFromPretrainedKwargs = fields["model_from_pretrained_kwargs"] is JsonObject o
                ? JsonSerializer.Deserialize<Dictionary<string, JsonElement>>(o.ToJsonString()) : null,
            PrependBos = fields["prepend_bos"] is not JsonValue p || p.GetValue<bool>(),
            SeqposSlice = Saes.SeqposSlice.FromJson(fields["seqpos_slice"], $"{path}: seqpos_slice"),
            Source = path, Notes = notes,
        };
    }

    private static void CheckKind(string path, string name, JsonNode? value, string expected)
    {
        bool nullable = expected.EndsWith('?');
        string kind = expected.TrimEnd('?');
        if (value is null)
        {
            if (nullable) return;
            throw new SaeSharpException($"{path}: {name} null: expected {Describe(kind)}");
        }
        bool ok = kind switch
        {
            "string" => value.GetValueKind() == JsonValueKind.String,
            "bool" => value.GetValueKind() is JsonValueKind.True or JsonValueKind.False,
            "int" => value is JsonValue v && v.GetValueKind() == JsonValueKind.Number && v.TryGetValue(out long _),
            "number" => value.GetValueKind() == JsonValueKind.Number,
            "object" => value is JsonObject,
            "array" => value is JsonArray,
            _ => false,
        };
        if (!ok) throw new SaeSharpException($"{path}: {name} {value.ToJsonString()}: expected {Describe(kind)}{(nullable ? " or null" : "")}");
    }

    private static string Describe(string kind) => kind switch
    {
        "string" => "a string",
        "bool" => "true or false",
        "int" => "a whole number",
        "number" => "a number",
        "object" => "a JSON object",
        _ => "a list such as [1, null]",
    };
}
