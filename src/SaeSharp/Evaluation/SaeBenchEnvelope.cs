using System.Globalization;
using System.Text.Json;
using System.Text.Json.Nodes;

namespace SaeSharp.Evaluation;

/// <summary>
/// What SAEBench's output files record about a run besides its metrics (<c>BaseEvalOutput</c> of
/// <c>sae_bench/evals/base_eval_output.py</c>): the model, the SAE's identifiers and config, the eval id and time, and the
/// <c>eval_config</c> fields the result itself does not carry.
/// </summary>
public record SaeBenchRun
{
    /// <summary><c>eval_config.model_name</c> ("" when not known: SAEBench's default).</summary>
    public string ModelName { get; init; } = "";
    /// <summary><c>eval_config.llm_dtype</c> ("float32", "bfloat16", ...).</summary>
    public string LlmDtype { get; init; } = "float32";
    /// <summary><c>sae_lens_release_id</c>: the SAELens release, or for an SAE of one's own its path (SAEBench's
    /// "unique id" of a custom SAE).</summary>
    public string? SaeLensReleaseId { get; init; }
    /// <summary><c>sae_lens_id</c>: the SAE id within the release, or "custom_sae" (SAEBench's value for an SAE object).</summary>
    public string? SaeLensId { get; init; }
    /// <summary><c>sae_cfg_dict</c>: the SAE's cfg.json as SAELens writes it; null: written as null (the core output
    /// writes the evaluated SAE's config when this is null).</summary>
    public JsonObject? SaeCfgDict { get; init; }
    /// <summary>Further <c>eval_config</c> fields, written over those the result knows (e.g. <c>context_length</c>).</summary>
    public JsonObject? EvalConfig { get; init; }
    /// <summary><c>eval_id</c> (SAEBench: a UUID per run of its script).</summary>
    public string EvalId { get; init; } = Guid.NewGuid().ToString();
    /// <summary><c>datetime_epoch_millis</c>.</summary>
    public long DatetimeEpochMillis { get; init; } = DateTimeOffset.UtcNow.ToUnixTimeMilliseconds();
}

/// <summary>One run of a probe eval that SAEBench writes several of to one file (SCR's (dataset, value pair), TPP's
/// dataset): what <see cref="SaeBenchEnvelope.WriteProbeRuns"/> needs of it.</summary>
internal interface ISaeBenchProbeRun
{
    /// <summary>SAEBench's run name (its details entry is <c>{RunName}_results</c>).</summary>
    string RunName { get; }
    /// <summary>The dataset's name, as in <c>eval_config.dataset_names</c>.</summary>
    string DatasetName { get; }
    /// <summary>How the texts were split.</summary>
    string Split { get; }
    /// <summary>The thresholds n.</summary>
    IReadOnlyList<int> NValues { get; }
    /// <summary>The run's metrics (its <c>eval_result_details</c> entry).</summary>
    IReadOnlyDictionary<string, double> Metrics();
    /// <summary>The run's full report (its <c>eval_result_unstructured.runs</c> entry, with the run's name, dataset and split
    /// added).</summary>
    JsonObject ToJson();
}

/// <summary>
/// SAEBench's output file (<c>BaseEvalOutput.to_json_file</c>): the keys in its order, <c>eval_type_id</c>,
/// <c>eval_config</c>, <c>eval_id</c>, <c>datetime_epoch_millis</c>, <c>eval_result_metrics</c>, <c>eval_result_details</c>,
/// <c>sae_bench_commit_hash</c>, <c>sae_lens_id</c>, <c>sae_lens_release_id</c>, <c>sae_lens_version</c>,
/// <c>sae_cfg_dict</c>, <c>eval_result_unstructured</c>; metrics as floats (<c>16.0</c>, as Python writes a float, not
/// <c>16</c>), NaN and ±∞ as −1. One writer for the core, sparse probing, SCR and TPP outputs.
/// </summary>
public static class SaeBenchEnvelope
{
    /// <summary>The SAEBench commit whose output format SaeSharp follows (written as <c>sae_bench_commit_hash</c>).</summary>
    public const string SaeBenchCommit = "8042bb3";

    /// <summary>"SaeSharp {version}", written as <c>eval_result_unstructured.producer</c> by every SAEBench-format output.</summary>
    public static string Producer => "SaeSharp " + typeof(SaeBenchEnvelope).Assembly.GetName().Version;

    /// <summary>Writes one output object: <paramref name="writeResults"/> writes <c>eval_result_metrics</c> and
    /// <c>eval_result_details</c> (streamed, for the core output's d_sae rows); <paramref name="saeCfgDict"/> overrides
    /// <see cref="SaeBenchRun.SaeCfgDict"/> when given.</summary>
    public static void Write(Utf8JsonWriter writer, string evalTypeId, JsonObject evalConfig, SaeBenchRun run, Action<Utf8JsonWriter> writeResults,
        JsonNode? unstructured, JsonNode? saeCfgDict = null)
    {
        ArgumentNullException.ThrowIfNull(writer);
        ArgumentNullException.ThrowIfNull(evalConfig);
        ArgumentNullException.ThrowIfNull(run);
        ArgumentNullException.ThrowIfNull(writeResults);
        writer.WriteStartObject();
        writer.WriteString("eval_type_id", evalTypeId);
        writer.WritePropertyName("eval_config");
        var config = (JsonObject)evalConfig.DeepClone();
        foreach (var (k, v) in run.EvalConfig ?? []) config[k] = v?.DeepClone();
        config.WriteTo(writer);
        writer.WriteString("eval_id", run.EvalId);
        writer.WriteNumber("datetime_epoch_millis", run.DatetimeEpochMillis);
        writeResults(writer);
        writer.WriteString("sae_bench_commit_hash", SaeBenchCommit);
        WriteStringOrNull(writer, "sae_lens_id", run.SaeLensId);
        WriteStringOrNull(writer, "sae_lens_release_id", run.SaeLensReleaseId);
        writer.WriteNull("sae_lens_version");
        writer.WritePropertyName("sae_cfg_dict");
        if ((saeCfgDict ?? run.SaeCfgDict) is { } cfg) cfg.WriteTo(writer);
        else writer.WriteNullValue();
        writer.WritePropertyName("eval_result_unstructured");
        if (unstructured is null) writer.WriteNullValue();
        else unstructured.WriteTo(writer);
        writer.WriteEndObject();
    }

    /// <summary>Writes one output file (its folder created, the file replaced atomically) whose metrics and details are
    /// built nodes.</summary>
    public static void WriteFile(string path, string evalTypeId, JsonObject evalConfig, SaeBenchRun? run, JsonNode metrics, JsonArray details,
        JsonNode? unstructured)
    {
        var dir = Path.GetDirectoryName(Path.GetFullPath(path));
        if (dir is not null) Directory.CreateDirectory(dir);
        IO.AtomicFile.Write(path, stream =>
        {
            using var writer = new Utf8JsonWriter(stream, new JsonWriterOptions { Indented = true });
            Write(writer, evalTypeId, evalConfig, run ?? new SaeBenchRun(), w =>
            {
                w.WritePropertyName("eval_result_metrics");
                metrics.WriteTo(w);
                w.WritePropertyName("eval_result_details");
                details.WriteTo(w);
            }, unstructured);
        });
    }

    /// <summary>Writes the output of a probe eval of several runs (SCR, TPP): <paramref name="config"/> (its
    /// <c>dataset_names</c>, ... fields; <see cref="ProbeConfig"/> starts it), <c>eval_result_metrics.{evalTypeId}_metrics</c>
    /// = <paramref name="means"/>, one <c>eval_result_details</c> entry per run (<c>dataset_name</c> = <c>{run name}_results</c>
    /// with its metrics), and <c>eval_result_unstructured</c> = <paramref name="unstructured"/> followed by SaeSharp's
    /// extras: <c>producer</c>, <c>hook</c>, <c>pooling</c> ("mean") and <c>runs</c> (each run's full report with its
    /// <c>run_name</c>, <c>dataset_name</c> and <c>split</c>).</summary>
    internal static void WriteProbeRuns(string path, string evalTypeId, JsonObject config, SaeBenchRun? run, IEnumerable<KeyValuePair<string, double>> means,
        IReadOnlyList<ISaeBenchProbeRun> runs, string hook, JsonObject unstructured)
    {
        var details = new JsonArray([.. runs.Select(r =>
        {
            var d = new JsonObject { ["dataset_name"] = r.RunName + "_results" };
            foreach (var (k, v) in r.Metrics()) d[k] = Metric(v);
            return (JsonNode)d;
        })]);
        unstructured["producer"] = Producer;
        unstructured["hook"] = hook;
        unstructured["pooling"] = "mean";
        unstructured["runs"] = new JsonArray([.. runs.Select(r =>
        {
            var one = r.ToJson();
            one["run_name"] = r.RunName;
            one["dataset_name"] = r.DatasetName;
            one["split"] = r.Split;
            return (JsonNode)one;
        })]);
        WriteFile(path, evalTypeId, config, run, new JsonObject { [evalTypeId + "_metrics"] = Metrics(means) }, details, unstructured);
    }

    /// <summary>The <c>eval_config</c> fields SCR and TPP share (SAEBench's <c>ScrAndTppEvalConfig</c>), in its order:
    /// <c>dataset_names</c>, <c>perform_scr</c>, <c>llm_dtype</c>, <c>model_name</c> and <c>n_values</c> (the first run's).</summary>
    internal static JsonObject ProbeConfig(IEnumerable<string> datasetNames, bool performScr, SaeBenchRun? run, IReadOnlyList<ISaeBenchProbeRun> runs) => new()
    {
        ["dataset_names"] = new JsonArray([.. datasetNames.Select(n => (JsonNode)n)]),
        ["perform_scr"] = performScr,
        ["llm_dtype"] = run?.LlmDtype ?? "",
        ["model_name"] = run?.ModelName ?? "",
        ["n_values"] = new JsonArray([.. (runs.Count > 0 ? runs[0].NValues : []).Select(n => (JsonNode)n)]),
    };

    /// <summary>Each value of <paramref name="values"/> as a plain JSON number (<c>16</c>, not <see cref="Metric"/>'s
    /// <c>16.0</c>), in order: SaeSharp's own report fields.</summary>
    internal static JsonObject Numbers(IEnumerable<KeyValuePair<string, double>> values) =>
        new(values.Select(kv => KeyValuePair.Create(kv.Key, (JsonNode?)kv.Value)));

    /// <summary>A metric value as SAEBench writes it: NaN (and, since JSON has no infinities, ±∞) as −1.</summary>
    public static double Finite(double v) => double.IsFinite(v) ? v : -1;

    /// <summary>A float-typed value as a JSON node that writes as Python writes a float: <c>16.0</c> for an integral
    /// value, NaN and ±∞ as <c>-1.0</c>.</summary>
    public static JsonNode Metric(double v)
    {
        v = Finite(v);
        return IntegralText(v) is { } text ? JsonValue.Create(JsonSerializer.Deserialize<JsonElement>(text))! : JsonValue.Create(v);
    }

    /// <summary>Writes <paramref name="key"/> with a float-typed value as <see cref="Metric"/> does.</summary>
    public static void WriteMetric(Utf8JsonWriter writer, string key, double v)
    {
        ArgumentNullException.ThrowIfNull(writer);
        v = Finite(v);
        writer.WritePropertyName(key);
        if (IntegralText(v) is { } text) writer.WriteRawValue(text, skipInputValidation: true);
        else writer.WriteNumberValue(v);
    }

    /// <summary>Each value of <paramref name="metrics"/> as <see cref="Metric"/>, in order.</summary>
    public static JsonObject Metrics(IEnumerable<KeyValuePair<string, double>> metrics) =>
        new(metrics.Select(kv => KeyValuePair.Create(kv.Key, (JsonNode?)Metric(kv.Value))));

    /// <summary>"16.0" for an integral value below 10¹⁶ (Python's repr; larger ones System.Text.Json writes with an
    /// exponent, a float to any reader); null otherwise.</summary>
    private static string? IntegralText(double v) =>
        Math.Abs(v) < 1e16 && v == Math.Floor(v) ? (v == 0 && double.IsNegative(v) ? "-0.0" : v.ToString("F1", CultureInfo.InvariantCulture)) : null;

    private static void WriteStringOrNull(Utf8JsonWriter writer, string key, string? value)
    {
        if (value is null) writer.WriteNull(key);
        else writer.WriteString(key, value);
    }
}
