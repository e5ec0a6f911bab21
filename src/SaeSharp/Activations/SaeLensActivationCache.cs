using System.Globalization;
using System.Text.Json;
using System.Text.Json.Nodes;
using SaeSharp.Data;

namespace SaeSharp.Activations;

/// <summary>An activation column of a SAELens cache: <c>datasets</c>' <c>Array2D(shape=(context_size, d_in), dtype)</c>
/// named after its hook.</summary>
public sealed record SaeLensCacheColumn(string Name, int ContextSize, int DIn, string Dtype)
{
    /// <summary>Bytes of one stored value (4 for float32, 2 for float16, 8 for float64).</summary>
    public int ItemSize => Dtype switch { "float16" => 2, "float64" => 8, _ => 4 };
}

/// <summary>
/// SAELens's activation cache (<c>CacheActivationsRunner</c>, read back with <c>use_cached_activations</c>): a
/// <c>datasets</c> <c>save_to_disk</c> folder whose rows are context windows, one <c>Array2D(shape=(context_size, d_in))</c>
/// column per hook and a <c>token_ids</c> column (<c>Sequence(Value("int32"), length=context_size)</c>). Each window is
/// <c>context_size</c> activation rows, in dataset order. The Arrow storage of an Array2D value is
/// <c>list&lt;list&lt;T&gt;&gt;</c> (variable-size lists in every <c>datasets</c> version), the field tagged with the
/// extension type <see cref="Array2DExtensionName"/>.
/// </summary>
public sealed class SaeLensActivationCache
{
    /// <summary>The runner config SAELens uploads beside a cache pushed to the hub (<c>asdict(cfg)</c>).</summary>
    public const string ConfigFile = "cache_activations_runner_cfg.json";
    /// <summary>The token id column.</summary>
    public const string TokenIdsColumn = "token_ids";
    /// <summary><c>ARROW:extension:name</c> of an Array2D field (<c>datasets.features.features.Array2DExtensionType</c>).</summary>
    public const string Array2DExtensionName = "datasets.features.features.Array2DExtensionType";
    /// <summary>The value types datasets' Array2D takes that SaeSharp reads (pyarrow has no bfloat16, so datasets cannot
    /// store SAELens's <c>dtype="bfloat16"</c>).</summary>
    public static readonly IReadOnlyList<string> Dtypes = ["float32", "float16", "float64"];

    private SaeLensActivationCache(string dir, IReadOnlyList<SaeLensCacheColumn> columns, bool hasTokenIds, JsonObject? config)
    {
        Directory = dir;
        Columns = columns;
        HasTokenIds = hasTokenIds;
        Config = config;
    }

    /// <summary>The cache folder.</summary>
    public string Directory { get; }
    /// <summary>The activation columns, in dataset_info.json's order.</summary>
    public IReadOnlyList<SaeLensCacheColumn> Columns { get; }
    /// <summary>True when the cache has the <c>token_ids</c> column.</summary>
    public bool HasTokenIds { get; }
    /// <summary><see cref="ConfigFile"/>, when the folder has one (a cache downloaded from the hub), else null.</summary>
    public JsonObject? Config { get; }

    /// <summary>The config's <c>model_name</c>, if known.</summary>
    public string? ModelName => Config?["model_name"] is JsonValue v && v.TryGetValue(out string? s) ? s : null;
    /// <summary>The config's <c>dataset_path</c>, if known.</summary>
    public string? DatasetPath => Config?["dataset_path"] is JsonValue v && v.TryGetValue(out string? s) ? s : null;
    /// <summary>The config's <c>prepend_bos</c> (SAELens's default true when unknown).</summary>
    public bool PrependBos => Config?["prepend_bos"] is not JsonValue v || !v.TryGetValue(out bool b) || b;

    /// <summary>True when <paramref name="dir"/> is a <c>datasets</c> folder (state.json and dataset_info.json).</summary>
    public static bool IsCache(string dir) =>
        HfDiskDataset.IsSavedDataset(dir) && File.Exists(Path.Combine(dir, HfDiskDataset.InfoFile));

    /// <summary>Reads dataset_info.json's features (and <see cref="ConfigFile"/> when present); a folder with no Array2D
    /// column is an error naming its features.</summary>
    public static SaeLensActivationCache Open(string dir)
    {
        string infoPath = Path.Combine(dir, HfDiskDataset.InfoFile);
        if (!File.Exists(infoPath)) throw new SaeSharpException($"{dir}: no {HfDiskDataset.InfoFile}: not a datasets save_to_disk folder");
        var features = ReadJson(infoPath)["features"] as JsonObject
                       ?? throw new SaeSharpException($"{infoPath}: no 'features' object");
        var columns = new List<SaeLensCacheColumn>();
        foreach (var (name, node) in features)
        {
            if (node is not JsonObject f || f["_type"]?.GetValueKind() != JsonValueKind.String || f["_type"]!.GetValue<string>() != "Array2D") continue;
            string dtype = f["dtype"] is JsonValue d && d.TryGetValue(out string? ds) ? ds : "";
            if (f["shape"] is not JsonArray { Count: 2 } shape || !TryInt(shape[0], out int ctx) || !TryInt(shape[1], out int dIn) || ctx <= 0 || dIn <= 0)
                throw new SaeSharpException($"{infoPath}: feature '{name}' has shape {f["shape"]?.ToJsonString() ?? "null"}; expected [context_size, d_in], both positive");
            if (!Dtypes.Contains(dtype))
                throw new SaeSharpException($"{infoPath}: feature '{name}' has dtype '{dtype}'; SaeSharp reads Array2D of {string.Join(", ", Dtypes)}");
            columns.Add(new SaeLensCacheColumn(name, ctx, dIn, dtype));
        }
        if (columns.Count == 0)
            throw new SaeSharpException($"{infoPath}: no Array2D activation column (features: {string.Join(", ", features.Select(kv => kv.Key))}); " +
                                        "a SAELens activation cache (CacheActivationsRunner) has one per hook");
        string cfgPath = Path.Combine(dir, ConfigFile);
        var config = File.Exists(cfgPath) ? ReadJson(cfgPath) : null;
        return new SaeLensActivationCache(dir, columns, features.ContainsKey(TokenIdsColumn), config);
    }

    /// <summary>The column of <paramref name="hook"/>; null: the only activation column (several are an error listing them).</summary>
    public SaeLensCacheColumn Column(string? hook)
    {
        if (hook is not null)
            return Columns.FirstOrDefault(c => c.Name == hook)
                   ?? throw new SaeSharpException($"{Directory}: no activations of hook '{hook}' (columns: {string.Join(", ", Columns.Select(c => c.Name))})");
        if (Columns.Count > 1)
            throw new SaeSharpException($"{Directory}: holds the activations of {Columns.Count} hooks ({string.Join(", ", Columns.Select(c => c.Name))}); name one with hook_name");
        return Columns[0];
    }

    /// <summary>The shard files in state.json's order.</summary>
    public IReadOnlyList<string> DataFiles() => HfDiskDataset.DataFiles(Directory);

    private static JsonObject ReadJson(string path)
    {
        try
        {
            return JsonNode.Parse(File.ReadAllText(path)) as JsonObject ?? throw new SaeSharpException($"{path}: not a JSON object");
        }
        catch (JsonException e)
        {
            throw new SaeSharpException($"{path}: invalid JSON ({e.Message})", e);
        }
    }

    private static bool TryInt(JsonNode? n, out int value)
    {
        value = 0;
        return n is JsonValue v && v.TryGetValue(out value);
    }

    internal static string Format(double v) => v.ToString("R", CultureInfo.InvariantCulture);
}
