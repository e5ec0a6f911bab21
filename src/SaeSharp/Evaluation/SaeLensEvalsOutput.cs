using System.Globalization;
using System.Text;
using System.Text.Json;
using System.Text.Json.Nodes;
using SaeSharp.IO;
using SaeSharp.Synthetic;

namespace SaeSharp.Evaluation;

/// <summary>Who an evaluated SAE is in SAELens's eval output: its <c>sae_set</c> (the release) and <c>sae_id</c>, the
/// dataset evaluated on, and the producing library's version and git hash (<c>eval_cfg.library_version</c>,
/// <c>eval_cfg.git_hash</c>).</summary>
public sealed record SaeLensEvalRun
{
    /// <summary>SAELens's <c>sae_set</c>: the release name (<c>gpt2-small-res-jb</c>).</summary>
    public required string SaeSet { get; init; }
    /// <summary>SAELens's <c>sae_id</c> within the release (<c>blocks.8.hook_resid_pre</c>).</summary>
    public required string SaeId { get; init; }
    /// <summary><c>eval_cfg.dataset</c>: the dataset's name or path (<c>Skylion007/openwebtext</c>).</summary>
    public required string Dataset { get; init; }
    /// <summary><c>eval_cfg.library_version</c>; SAELens writes its package version, SaeSharp "SaeSharp {version}".</summary>
    public string LibraryVersion { get; init; } = SaeBenchEnvelope.Producer;
    /// <summary><c>eval_cfg.git_hash</c>; "unknown", as SAELens writes when it has none.</summary>
    public string GitHash { get; init; } = "unknown";
    /// <summary>SAELens's <c>unique_id</c>: <c>{sae_set}-{sae_id}</c>.</summary>
    public string UniqueId => $"{SaeSet}-{SaeId}";
}

/// <summary>
/// The output folder of SAELens's evals CLI (<c>python -m sae_lens.evals ... --output_dir D</c>; <c>process_results</c> in
/// sae_lens/evals.py): per SAE <c>{unique_id}_{context_size}_{dataset}.json</c> ("/" replaced by "_"), all results in
/// <see cref="CombinedJsonFile"/>, and <see cref="CsvFile"/>, the results as <c>pandas.json_normalize(...).to_csv(index=False)</c>
/// writes them (dotted column names such as <c>metrics.sparsity.l0</c>). Each result holds <c>unique_id</c>, <c>sae_set</c>,
/// <c>sae_id</c>, <c>eval_cfg</c>, <c>metrics</c> (<see cref="DownstreamMetrics.ToJson()"/>'s groups), <c>feature_metrics</c>
/// and <c>sae_cfg</c>, in that order, as <c>multiple_evals</c> builds it; NaN is written as -1, as SAELens's
/// <c>replace_nans_with_negative_one</c> does, and ±∞ (which it leaves) as Python's <c>json.dump(indent=2)</c> writes them,
/// <c>Infinity</c> and <c>-Infinity</c> (<c>inf</c> in the CSV). <see cref="Read"/> reads such files back.
/// </summary>
public static class SaeLensEvalsOutput
{
    /// <summary>The file holding every result as a JSON list.</summary>
    public const string CombinedJsonFile = "all_eval_results.json";
    /// <summary>The results as a CSV table, one row per SAE.</summary>
    public const string CsvFile = "all_eval_results.csv";

    /// <summary>SAELens's per-SAE file name: <c>{unique_id}_{context_size}_{dataset}.json</c> with every "/" replaced by "_".</summary>
    public static string FileName(DownstreamMetrics metrics, SaeLensEvalRun run)
    {
        ArgumentNullException.ThrowIfNull(metrics);
        ArgumentNullException.ThrowIfNull(run);
        return FileName(run, metrics.ContextSize);
    }

    /// <summary>The per-SAE file name of <paramref name="run"/> evaluated on windows of <paramref name="contextSize"/> tokens.</summary>
    public static string FileName(SaeLensEvalRun run, int contextSize)
    {
        ArgumentNullException.ThrowIfNull(run);
        return $"{run.UniqueId}_{contextSize.ToString(CultureInfo.InvariantCulture)}_{run.Dataset}.json".Replace('/', '_');
    }

    /// <summary>Throws when two of <paramref name="names"/> (per-SAE file names, in the order of <paramref name="saes"/>) are
    /// one file, or one is <see cref="CombinedJsonFile"/>: checked before an evaluation as well as before writing.</summary>
    public static void RefuseCollisions(string outputDir, IReadOnlyList<string> names, IReadOnlyList<string>? saes = null)
    {
        ArgumentNullException.ThrowIfNull(names);
        foreach (var group in Enumerable.Range(0, names.Count).GroupBy(i => names[i], StringComparer.Ordinal).Where(g => g.Count() > 1))
            throw new SaeSharpException($"SAELens eval output {outputDir}: {(saes is null ? $"{group.Count()} SAEs" : string.Join(" and ", group.Select(i => saes[i])))} " +
                                        $"would write {group.Key} (the same sae_set, sae_id, context size and dataset once \"/\" is \"_\"): evaluate each SAE once" +
                                        (saes is null ? "" : " or give them separate --output-dir folders"));
        if (names.FirstOrDefault(n => n is CombinedJsonFile) is { } clash)
            throw new SaeSharpException($"SAELens eval output {outputDir}: an SAE's file would be {clash}");
    }

    /// <summary>Writes the per-SAE files, <see cref="CombinedJsonFile"/> and <see cref="CsvFile"/> into
    /// <paramref name="outputDir"/> (created if missing; files of the same names replaced, all of them together or none)
    /// and returns their paths in that order. Two results with the same file name are refused before anything is written.</summary>
    public static IReadOnlyList<string> Write(string outputDir, IReadOnlyList<(DownstreamMetrics Metrics, SaeLensEvalRun Run)> results)
    {
        ArgumentNullException.ThrowIfNull(outputDir);
        ArgumentNullException.ThrowIfNull(results);
        if (results.Count == 0) throw new SaeSharpException($"SAELens eval output {outputDir}: no results to write");
        if (File.Exists(outputDir)) throw new SaeSharpException($"SAELens eval output folder {outputDir} is a file");
        var names = results.Select(r => FileName(r.Metrics, r.Run)).ToList();
        RefuseCollisions(outputDir, names);
        var dicts = results.Select(r => Result(r.Metrics, r.Run)).ToList();
        Directory.CreateDirectory(outputDir);
        var paths = names.Select(n => Path.Combine(outputDir, n)).Append(Path.Combine(outputDir, CombinedJsonFile))
            .Append(Path.Combine(outputDir, CsvFile)).ToList();
        using var files = new AtomicFileGroup();
        for (int i = 0; i < dicts.Count; i++) files.WriteAllText(paths[i], PythonJson.Dump(dicts[i]));
        files.WriteAllText(paths[^2], PythonJson.Dump(dicts));
        files.WriteAllText(paths[^1], Csv(dicts));
        files.Commit();
        return paths;
    }

    /// <summary>One result as SAELens's <c>multiple_evals</c> builds it, NaN already -1 (±∞ kept).</summary>
    internal static PythonJson.Object Result(DownstreamMetrics m, SaeLensEvalRun run)
    {
        long batches = m.BatchSizePrompts > 0 ? (m.Contexts + m.BatchSizePrompts - 1) / m.BatchSizePrompts : 0;
        // eval_cfg: the four keys multiple_evals sets first, then EvalConfig's fields (its update keeps library_version and
        // git_hash where they are). SaeSharp evaluates every metric on the same windows: one batch count for both.
        var evalCfg = new PythonJson.Object
        {
            { "context_size", (long)m.ContextSize },
            { "dataset", run.Dataset },
            { "library_version", run.LibraryVersion },
            { "git_hash", run.GitHash },
            { "batch_size_prompts", (long)m.BatchSizePrompts },
            { "n_eval_reconstruction_batches", batches },
            { "compute_kl", true },
            { "compute_ce_loss", true },
            { "n_eval_sparsity_variance_batches", batches },
            { "compute_l2_norms", true },
            { "compute_sparsity_metrics", true },
            { "compute_variance_metrics", true },
            { "compute_featurewise_density_statistics", m.FeatureMetrics is not null },
            { "compute_featurewise_weight_based_metrics", m.FeatureMetrics?.EncoderNorm is not null },
        };
        var metrics = new PythonJson.Object();
        foreach (var (key, value) in m.ToJson(keepNonFinite: true))
            if (value is JsonObject group)
                metrics.Add(key, FromJson(group, nullAs: -1L));
        var features = new PythonJson.Object();
        if (m.FeatureMetrics is { } f)
            foreach (var (key, values) in f.Lists()) features.Add(key, values.Select(v => Finite(v)).ToList());
        return new PythonJson.Object
        {
            { "unique_id", run.UniqueId },
            { "sae_set", run.SaeSet },
            { "sae_id", run.SaeId },
            { "eval_cfg", evalCfg },
            { "metrics", metrics },
            { "feature_metrics", features },
            { "sae_cfg", m.Cfg is { } cfg ? FromJson(JsonNode.Parse(cfg.ToJson()), nullAs: null) : new PythonJson.Object() },
        };
    }

    /// <summary>A number as SAELens leaves it after <c>replace_nans_with_negative_one</c>: the int -1 for NaN; ±∞ as they are.</summary>
    private static object Finite(double v) => double.IsNaN(v) ? MinusOne : v;

    private static readonly object MinusOne = -1L;

    /// <summary>A number written from a float32 (its text is that float's shortest form), widened to double as torch's
    /// <c>.item()</c> gives it to Python; a double such as a standard deviation keeps all its digits.</summary>
    private static bool IsFloat32(JsonValue v, out float s) =>
        v.TryGetValue(out s) && s.ToString(CultureInfo.InvariantCulture) == v.ToJsonString();

    /// <summary>A JSON tree as PythonJson values: integers as long, other numbers as double, NaN as -1.</summary>
    private static object? FromJson(JsonNode? node, object? nullAs) => node switch
    {
        null => nullAs,
        JsonObject o => o.Aggregate(new PythonJson.Object(), (acc, kv) => { acc.Add(kv.Key, FromJson(kv.Value, nullAs)); return acc; }),
        JsonArray a => a.Select(e => FromJson(e, nullAs)).ToList(),
        JsonValue v when v.TryGetValue(out double d) && !double.IsFinite(d) => Finite(d),   // DownstreamMetrics.ToJson(keepNonFinite)
        JsonValue v => v.GetValueKind() switch
        {
            JsonValueKind.String => v.GetValue<string>(),
            JsonValueKind.True => true,
            JsonValueKind.False => false,
            JsonValueKind.Number => v.TryGetValue<int>(out int i) ? i : v.TryGetValue<long>(out long l) ? l
                : IsFloat32(v, out float s) ? Finite(s) : Finite(v.GetValue<double>()),
            _ => nullAs,
        },
        _ => nullAs,
    };

    /// <summary>Reads a SAELens evals file (a per-SAE <c>{unique_id}_..._{dataset}.json</c>: one result; <see cref="CombinedJsonFile"/>:
    /// a list of them) as Python's <c>json.load</c> does: the bare tokens <c>NaN</c>, <c>Infinity</c> and <c>-Infinity</c> are
    /// numbers. Each result's <c>metrics</c> come flattened under dotted names (<c>sparsity.l0</c>), its
    /// <c>feature_metrics</c> as lists. Not JSON, or a result without <c>metrics</c>, is an error naming the file.</summary>
    public static IReadOnlyList<SaeLensEvalFileResult> Read(string path)
    {
        ArgumentNullException.ThrowIfNull(path);
        JsonNode? root;
        try
        {
            root = JsonNode.Parse(QuoteNamedLiterals(File.ReadAllText(path)));
        }
        catch (JsonException e)
        {
            throw new SaeSharpException($"{path}: not a SAELens evals file (invalid JSON: {e.Message})", e);
        }
        var results = root is JsonArray list ? list.ToList() : [root];
        return results.Select((r, i) =>
        {
            string where = root is JsonArray ? $"{path} result {i}" : path;
            if (r is not JsonObject o || o["metrics"] is not JsonObject metrics)
                throw new SaeSharpException($"{where}: no 'metrics' object (a SAELens evals file holds unique_id, sae_set, sae_id, eval_cfg, metrics, ...)");
            var flat = new Dictionary<string, double>(StringComparer.Ordinal);
            void Flatten(JsonObject g, string prefix)
            {
                foreach (var (key, value) in g)
                {
                    string name = prefix.Length == 0 ? key : prefix + "." + key;
                    if (value is JsonObject nested) Flatten(nested, name);
                    else if (Number(value) is double d) flat[name] = d;
                }
            }
            Flatten(metrics, "");
            var features = new Dictionary<string, IReadOnlyList<double>>(StringComparer.Ordinal);
            if (o["feature_metrics"] is JsonObject fm)
                foreach (var (key, value) in fm)
                    if (value is JsonArray a)
                        features[key] = a.Select(e => Number(e) ?? throw new SaeSharpException($"{where}: feature_metrics {key}: {e?.ToJsonString() ?? "null"} is not a number")).ToList();
            return new SaeLensEvalFileResult
            {
                UniqueId = o["unique_id"]?.GetValueKind() == JsonValueKind.String ? o["unique_id"]!.GetValue<string>() : null,
                Metrics = flat, FeatureMetrics = features,
            };
        }).ToList();
    }

    /// <summary>A leaf as a number: a JSON number, or one of the named literals <see cref="QuoteNamedLiterals"/> marked; else null.</summary>
    private static double? Number(JsonNode? node) => node switch
    {
        JsonValue v when v.GetValueKind() == JsonValueKind.Number => v.GetValue<double>(),
        JsonValue v when v.GetValueKind() == JsonValueKind.String => v.GetValue<string>() switch
        {
            NamedLiteralMark + "NaN" => double.NaN,
            NamedLiteralMark + "Infinity" => double.PositiveInfinity,
            NamedLiteralMark + "-Infinity" => double.NegativeInfinity,
            _ => null,
        },
        _ => null,
    };

    /// <summary>Starts the string a named literal becomes (a NUL, which no string of such a file holds unescaped).</summary>
    private const string NamedLiteralMark = "\0";

    /// <summary>Python json's bare <c>NaN</c>, <c>Infinity</c>, <c>-Infinity</c> (outside strings) as marked JSON strings.</summary>
    private static string QuoteNamedLiterals(string text)
    {
        var sb = new StringBuilder(text.Length);
        bool inString = false;
        for (int i = 0; i < text.Length; i++)
        {
            char c = text[i];
            if (inString)
            {
                sb.Append(c);
                if (c == '\\' && i + 1 < text.Length) sb.Append(text[++i]);
                else if (c == '"') inString = false;
                continue;
            }
            if (c == '"') inString = true;
            string? literal = string.CompareOrdinal(text, i, "-Infinity", 0, 9) == 0 ? "-Infinity"
                : string.CompareOrdinal(text, i, "Infinity", 0, 8) == 0 ? "Infinity"
                : string.CompareOrdinal(text, i, "NaN", 0, 3) == 0 ? "NaN" : null;
            if (literal is null) sb.Append(c);
            else
            {
                sb.Append("\"\\u0000").Append(literal).Append('"');
                i += literal.Length - 1;
            }
        }
        return sb.ToString();
    }

    /// <summary><c>pandas.json_normalize(results).to_csv(index=False)</c>: per result, its top-level plain values first, then
    /// its nested objects flattened depth first under dotted names (an empty object gives no column; a list stays one
    /// value); the columns in order of first appearance over the results; a column typed as pandas infers it (integers
    /// alone: int; integers and floats, or a missing value among numbers: float, written as Python's repr, <c>128.0</c>);
    /// lists as Python's <c>str</c> (<c>[0.5, 1e-05]</c>), booleans <c>True</c>/<c>False</c>, missing values empty; fields
    /// holding a comma, quote or line break quoted, lines ended by "\n".</summary>
    internal static string Csv(IReadOnlyList<PythonJson.Object> results)
    {
        var rows = results.Select(Normalize).ToList();
        var columns = new List<string>();
        var seen = new HashSet<string>(StringComparer.Ordinal);
        foreach (var row in rows)
            foreach (var key in row.Keys)
                if (seen.Add(key)) columns.Add(key);
        var sb = new StringBuilder();
        sb.AppendJoin(',', columns.Select(Quote)).Append('\n');
        var cells = columns.Select(c => ColumnCells(rows.Select(r => r.TryGetValue(c, out var v) ? v : null).ToList())).ToList();
        for (int r = 0; r < rows.Count; r++)
            sb.AppendJoin(',', cells.Select(c => Quote(c[r]))).Append('\n');
        return sb.ToString();
    }

    /// <summary>pandas's <c>_normalise_json_ordered</c>: top-level non-dict values, then the dicts flattened with ".".</summary>
    private static OrderedDictionary<string, object?> Normalize(PythonJson.Object result)
    {
        var flat = new OrderedDictionary<string, object?>(StringComparer.Ordinal);
        foreach (var (key, value) in result)
            if (value is not PythonJson.Object) flat[key] = value;
        foreach (var (key, value) in result)
            if (value is PythonJson.Object nested) Flatten(nested, key, flat);
        return flat;

        static void Flatten(PythonJson.Object o, string prefix, OrderedDictionary<string, object?> into)
        {
            foreach (var (key, value) in o)
            {
                string name = prefix + "." + key;
                if (value is PythonJson.Object nested) Flatten(nested, name, into);
                else into[name] = value;
            }
        }
    }

    /// <summary>One column's cells as <c>to_csv</c> writes the dtype pandas infers for <paramref name="values"/> (null: missing).</summary>
    private static string[] ColumnCells(List<object?> values)
    {
        var present = values.Where(v => v is not null).ToList();
        bool numeric = present.Count > 0 && present.All(v => v is int or long or double);
        bool floatColumn = numeric && (present.Count < values.Count || present.Any(v => v is double));
        return values.Select(v => v is null ? "" : floatColumn ? PyStr(Convert.ToDouble(v, CultureInfo.InvariantCulture)) : PyStr(v)).ToArray();
    }

    /// <summary>Python's <c>str(value)</c>.</summary>
    private static string PyStr(object? value) => value switch
    {
        string s => s,
        _ => PyRepr(value),
    };

    /// <summary>Python's <c>repr(value)</c> (as <c>str</c> of a list writes its elements).</summary>
    private static string PyRepr(object? value) => value switch
    {
        null => "None",
        bool b => b ? "True" : "False",
        int i => i.ToString(CultureInfo.InvariantCulture),
        long l => l.ToString(CultureInfo.InvariantCulture),
        double d => double.IsNaN(d) ? "nan" : double.IsInfinity(d) ? (d > 0 ? "inf" : "-inf") : PythonJson.FloatRepr(d),
        string s => s.Contains('\'', StringComparison.Ordinal) && !s.Contains('"', StringComparison.Ordinal)
            ? "\"" + s.Replace("\\", "\\\\", StringComparison.Ordinal) + "\""
            : "'" + s.Replace("\\", "\\\\", StringComparison.Ordinal).Replace("'", "\\'", StringComparison.Ordinal) + "'",
        PythonJson.Object o => "{" + string.Join(", ", o.Select(kv => PyRepr(kv.Key) + ": " + PyRepr(kv.Value))) + "}",
        System.Collections.IEnumerable list => "[" + string.Join(", ", list.Cast<object?>().Select(PyRepr)) + "]",
        _ => throw new ArgumentException($"no Python repr for {value.GetType()}"),
    };

    /// <summary>Python's csv QUOTE_MINIMAL: quoted when holding the delimiter, the quote or a line break; quotes doubled.</summary>
    private static string Quote(string field) =>
        field.AsSpan().IndexOfAny(",\"\r\n") >= 0 ? "\"" + field.Replace("\"", "\"\"", StringComparison.Ordinal) + "\"" : field;
}

/// <summary>One result of a SAELens evals file (<see cref="SaeLensEvalsOutput.Read"/>).</summary>
public sealed record SaeLensEvalFileResult
{
    /// <summary><c>unique_id</c> (<c>{sae_set}-{sae_id}</c>), if the result has one.</summary>
    public string? UniqueId { get; init; }
    /// <summary>The <c>metrics</c> under dotted names (<c>model_behavior_preservation.kl_div_score</c>, <c>sparsity.l0</c>);
    /// NaN as SAELens writes it is -1, ±∞ are infinities.</summary>
    public required IReadOnlyDictionary<string, double> Metrics { get; init; }
    /// <summary>The <c>feature_metrics</c> lists (<c>feature_density</c>, ...).</summary>
    public required IReadOnlyDictionary<string, IReadOnlyList<double>> FeatureMetrics { get; init; }
}
