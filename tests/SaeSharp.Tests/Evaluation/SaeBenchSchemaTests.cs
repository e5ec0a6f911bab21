using System.Text.Json;
using System.Text.Json.Nodes;
using Json.Schema;
using SaeSharp.Analysis;
using SaeSharp.Evaluation;

namespace SaeSharp.Tests.Evaluation;

/// <summary>SaeSharp's SAEBench-format outputs (sparse probing, SCR, TPP; the core output in
/// <see cref="SaeBenchCoreOutputTests"/>) validated against SAEBench's own JSON schemas (tests/data/saebench_schemas,
/// from SAEBench commit 8042bb3) with JsonSchema.Net, and the envelope's float writing.</summary>
public sealed class SaeBenchSchemaTests : IDisposable
{
    private readonly string _work = Path.Combine(Path.GetTempPath(), "saebench_schema_" + Guid.NewGuid().ToString("N"));

    public SaeBenchSchemaTests() => Directory.CreateDirectory(_work);

    public void Dispose() => Directory.Delete(_work, true);

    /// <summary>The schema errors of <paramref name="json"/> against SAEBench's <c>eval_output_schema_{name}.json</c>
    /// (each "location: message"); empty when it validates.</summary>
    internal static List<string> SchemaErrors(string name, string json)
    {
        // Pydantic 2 writes Draft 2020-12 schemas (without "$schema"), with its own keywords (ui_default_display) beside them.
        var schema = JsonSchema.FromText(File.ReadAllText(SaeSharp.Tests.Tokenizers.TestPaths.Data("saebench_schemas", $"eval_output_schema_{name}.json")),
            new BuildOptions { Dialect = Dialect.Draft202012 });
        using var doc = JsonDocument.Parse(json);
        var result = schema.Evaluate(doc.RootElement, new EvaluationOptions { OutputFormat = OutputFormat.List });
        // The list names the failing branches of an anyOf that another branch passes too: read it only when the whole is invalid.
        if (result.IsValid) return [];
        return ["invalid", .. (result.Details ?? []).Where(d => d.Errors is { Count: > 0 })
            .SelectMany(d => d.Errors!.Select(e => $"{d.InstanceLocation}: {e.Key} {e.Value}"))];
    }

    private static SparseProbingReport Sparse() => new("blocks.0.hook_resid_post", 400, [1, 2],
    [
        new("cat:colour", 80, 20, 1.0, new Dictionary<int, double> { [1] = 0.75, [2] = 0.875 }, new Dictionary<int, double> { [1] = 0.5, [2] = 1.0 }, [3, 1], 0.9, 12),
        new("cat:animal", 80, 20, 0.5, new Dictionary<int, double> { [1] = 0.25, [2] = 0.375 }, new Dictionary<int, double> { [1] = 0.5, [2] = 0.5 }, [0, 2], 0.7, 10),
    ]);

    private static SaeBenchRun Run() => new()
    {
        ModelName = "tiny-gpt2", LlmDtype = "float32", SaeLensReleaseId = "my/sae", SaeLensId = "custom_sae",
        SaeCfgDict = new JsonObject { ["d_in"] = 16, ["d_sae"] = 32 }, EvalConfig = new JsonObject { ["context_length"] = 128 },
    };

    [Fact]
    public void Sparse_probing_output_validates_against_SAEBenchs_schema_with_its_envelope_and_details()
    {
        string path = Path.Combine(_work, "sparse.json");
        Sparse().WriteJson(path, "corpus.jsonl", Run());
        string text = File.ReadAllText(path);
        Assert.Empty(SchemaErrors("sparse_probing", text));
        var root = JsonNode.Parse(text)!;
        Assert.Equal(["eval_type_id", "eval_config", "eval_id", "datetime_epoch_millis", "eval_result_metrics", "eval_result_details",
                      "sae_bench_commit_hash", "sae_lens_id", "sae_lens_release_id", "sae_lens_version", "sae_cfg_dict", "eval_result_unstructured"],
            root.AsObject().Select(kv => kv.Key));
        Assert.Equal("sparse_probing", (string?)root["eval_type_id"]);
        Assert.Equal("tiny-gpt2", (string?)root["eval_config"]!["model_name"]);
        Assert.Equal(128, (int)root["eval_config"]!["context_length"]!);
        Assert.Equal(32, (int)root["sae_cfg_dict"]!["d_sae"]!);
        // SAEBench's one detail per dataset, {dataset}_results, with the means over the labels (hand-computed).
        var detail = Assert.Single(root["eval_result_details"]!.AsArray())!;
        Assert.Equal("corpus.jsonl_results", (string?)detail["dataset_name"]);
        Assert.Equal(0.75, (double)detail["llm_test_accuracy"]!);
        Assert.Equal(0.625, (double)detail["llm_top_2_test_accuracy"]!);
        Assert.Equal(0.8, (double)detail["sae_test_accuracy"]!, 12);
        Assert.Equal(0.75, (double)root["eval_result_metrics"]!["sae"]!["sae_top_2_test_accuracy"]!);
        // Per label under SAEBench's per-class key, with SaeSharp's extras.
        Assert.Equal(1.0, (double)root["eval_result_unstructured"]!["corpus.jsonl_results"]!["cat:colour"]!["sae_top_2_test_accuracy"]!);
        Assert.Equal([3, 1], root["eval_result_unstructured"]!["corpus.jsonl_results"]!["cat:colour"]!["top_features"]!.AsArray().Select(n => (int)n!));
        Assert.Equal("blocks.0.hook_resid_post", (string?)root["eval_result_unstructured"]!["hook"]);
        // Floats written as floats: 1.0, not 1.
        Assert.Contains("\"llm_test_accuracy\": 1.0,", text);
    }

    [Fact]
    public void Scr_output_validates_against_SAEBenchs_schema()
    {
        var n = new Dictionary<int, int[]> { [2] = [1, 4] };
        var report = new ScrReport("blocks.0.hook_resid_post", "bios", 200, [2], "professor / nurse", "male / female", "biased", 20, 5,
            new Dictionary<string, double> { ["professor / nurse"] = 0.9 },
            [new ScrDirection(1, "male / female", "professor / nurse", 0.9, 0.6, n, new Dictionary<int, double> { [2] = 0.75 }),
             new ScrDirection(2, "professor / nurse", "male / female", 0.95, 0.7, n, new Dictionary<int, double> { [2] = 0.7 })]);
        var suite = new ScrSuiteReport("blocks.0.hook_resid_post", [new ScrRun("bios", "train/test splits", report)]);
        string path = Path.Combine(_work, "scr.json");
        suite.WriteJson(path, Run());
        string text = File.ReadAllText(path);
        Assert.Empty(SchemaErrors("scr", text));
        var root = JsonNode.Parse(text)!;
        Assert.Equal("scr", (string?)root["eval_type_id"]);
        Assert.True((bool)root["eval_config"]!["perform_scr"]!);
        Assert.Equal(["professor", "nurse"], root["eval_config"]!["column1_vals_lookup"]!["bios"]![0]!.AsArray().Select(v => (string)v!));
        // dir1: (0.75 − 0.6) / (0.9 − 0.6) = 0.5; the biased probe is worse on dir 1's data (0.6 < 0.7), so the metric is dir 1's.
        Assert.Equal(0.5, (double)root["eval_result_metrics"]!["scr_metrics"]!["scr_metric_threshold_2"]!, 12);
        Assert.Equal("bios_scr_professor_nurse_results", (string?)root["eval_result_details"]![0]!["dataset_name"]);
        Assert.Equal("bios", (string?)root["eval_result_unstructured"]!["runs"]![0]!["dataset_name"]);
    }

    [Fact]
    public void Tpp_output_validates_against_SAEBenchs_schema_with_SAEBenchs_per_class_results()
    {
        var classes = new[] { "a", "b" }.Select((c, i) => new TppClass(c, 40, 10, 0.9,
            new Dictionary<int, int[]> { [2] = [i, 3] }, new Dictionary<int, double[]> { [2] = i == 0 ? [0.5, 0.9] : [0.8, 0.7] })).ToList();
        var suite = new TppSuiteReport("h", [new TppRun("reviews", "train/test splits", new TppReport("h", 100, [2], classes))]);
        string path = Path.Combine(_work, "tpp.json");
        suite.WriteJson(path, Run());
        string text = File.ReadAllText(path);
        Assert.Empty(SchemaErrors("tpp", text));
        var root = JsonNode.Parse(text)!;
        Assert.False((bool)root["eval_config"]!["perform_scr"]!);
        // Class a: intended 0.9 − 0.5 = 0.4, unintended 0.9 − 0.9 = 0; class b: intended 0.2, unintended 0.1.
        Assert.Equal(0.4, (double)root["eval_result_unstructured"]!["reviews"]!["a"]!["tpp_threshold_2_total_metric"]!, 12);
        Assert.Equal(0.25, (double)root["eval_result_metrics"]!["tpp_metrics"]!["tpp_threshold_2_total_metric"]!, 12);
        Assert.Equal("reviews_tpp_results", (string?)root["eval_result_details"]![0]!["dataset_name"]);
        // 0 is written as a float.
        Assert.Contains("\"tpp_threshold_2_unintended_diff_only\": 0.0", text);
    }

    [Fact]
    public void The_schemas_refuse_the_former_probe_output_without_SAEBenchs_envelope()
    {
        // The shape sae probe --json wrote before: means and details, no eval_config, eval_id, ... sae_cfg_dict.
        string old = """{"hook": "h", "eval_result_metrics": {"llm": {"llm_test_accuracy": 1}, "sae": {}}, "eval_result_details": [{"label": "a", "llm_test_accuracy": 1}]}""";
        var errors = SchemaErrors("sparse_probing", old);
        Assert.NotEmpty(errors);
        Assert.Contains(errors, e => e.Contains("eval_config", StringComparison.Ordinal));
        Assert.Contains(errors, e => e.Contains("dataset_name", StringComparison.Ordinal));
    }

    [Fact]
    public void Float_typed_values_are_written_as_python_writes_floats()
    {
        using var stream = new MemoryStream();
        using (var writer = new Utf8JsonWriter(stream))
        {
            writer.WriteStartObject();
            SaeBenchEnvelope.WriteMetric(writer, "l0", 16);
            SaeBenchEnvelope.WriteMetric(writer, "zero", 0);
            SaeBenchEnvelope.WriteMetric(writer, "neg", -3);
            SaeBenchEnvelope.WriteMetric(writer, "half", 0.5);
            SaeBenchEnvelope.WriteMetric(writer, "nan", double.NaN);
            writer.WritePropertyName("node");
            SaeBenchEnvelope.Metric(16).WriteTo(writer);
            writer.WriteEndObject();
        }
        Assert.Equal("""{"l0":16.0,"zero":0.0,"neg":-3.0,"half":0.5,"nan":-1.0,"node":16.0}""", System.Text.Encoding.UTF8.GetString(stream.ToArray()));
        Assert.Equal(16.0, (double)SaeBenchEnvelope.Metric(16));
    }
    /// <summary>A run whose id and time are fixed, so that two writes of the same report are the same bytes.</summary>
    private static SaeBenchRun FixedRun() => Run() with { EvalId = "00000000-0000-0000-0000-000000000001", DatetimeEpochMillis = 1700000000000 };

    /// <summary>The written file with the version-dependent <c>producer</c> replaced by "SaeSharp", lines ended by \n.</summary>
    private static string Pinned(string path) =>
        File.ReadAllText(path).Replace(JsonSerializer.Serialize(SaeBenchEnvelope.Producer), "\"SaeSharp\"", StringComparison.Ordinal).ReplaceLineEndings("\n");

    private static string PinnedData(string name) => File.ReadAllText(SaeSharp.Tests.Tokenizers.TestPaths.Data("saebench_pinned", name)).ReplaceLineEndings("\n");

    private static ScrReport ScrPair(string dataset, string column1, double changed) => new("blocks.0.hook_resid_post", dataset, 200, [2, 5],
        column1, "male / female", "biased", 20, 5, new Dictionary<string, double> { [column1] = 0.9, ["male / female"] = 0.8 },
        [new ScrDirection(1, "male / female", column1, 0.9, 0.6, new Dictionary<int, int[]> { [2] = [1, 4], [5] = [1, 4, 0, 2, 3] },
             new Dictionary<int, double> { [2] = changed, [5] = 0.8 }),
         new ScrDirection(2, column1, "male / female", 0.95, 0.7, new Dictionary<int, int[]> { [2] = [3, 0], [5] = [3, 0, 1, 2, 4] },
             new Dictionary<int, double> { [2] = 0.7, [5] = 0.95 })]);

    [Fact]
    public void Scr_output_of_several_runs_is_pinned_byte_for_byte()
    {
        // Pins the whole file (runs[], details, column1_vals_lookup, metric means) so that a refactoring of the writer is
        // proven not to change it; tests/data/saebench_pinned/scr.json was written by the writer of commit b0974ca.
        var suite = new ScrSuiteReport("blocks.0.hook_resid_post",
        [
            new ScrRun("bios", "train/test splits", ScrPair("bios", "professor / nurse", 0.75)),
            new ScrRun("bios", "train/test splits", ScrPair("bios", "attorney / teacher", 0.6)),
            new ScrRun("amazon", SpuriousCorrelationRemoval.PositionSplitName, ScrPair("amazon", "Books / Toys", 1.0)),
        ]);
        string path = Path.Combine(_work, "scr_pinned.json");
        suite.WriteJson(path, FixedRun());
        string text = Pinned(path);
        Assert.Empty(SchemaErrors("scr", text));
        Assert.Equal(PinnedData("scr.json"), text);
    }

    [Fact]
    public void Tpp_output_of_several_datasets_is_pinned_byte_for_byte()
    {
        // As the SCR test: tests/data/saebench_pinned/tpp.json was written by the writer of commit b0974ca.
        static TppReport Report(string[] names, double shift) => new("h", 100, [2, 4], names.Select((c, i) => new TppClass(c, 40, 10, 0.9,
            new Dictionary<int, int[]> { [2] = [i, 3], [4] = [i, 3, 5, 6] },
            new Dictionary<int, double[]>
            {
                [2] = [.. names.Select((_, j) => j == i ? 0.5 - shift * i : 0.875 - shift * j)],
                [4] = [.. names.Select((_, j) => j == i ? 0.25 : 0.75 + shift)],
            })).ToList());
        var suite = new TppSuiteReport("h",
        [
            new TppRun("reviews", "train/test splits", Report(["a", "b"], 0.125)),
            new TppRun("bios", SpuriousCorrelationRemoval.PositionSplitName, Report(["x", "y", "z"], 0.0625)),
        ]);
        string path = Path.Combine(_work, "tpp_pinned.json");
        suite.WriteJson(path, FixedRun());
        string text = Pinned(path);
        Assert.Empty(SchemaErrors("tpp", text));
        Assert.Equal(PinnedData("tpp.json"), text);
    }
}
