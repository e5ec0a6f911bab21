using System.Text.Json.Nodes;
using SaeSharp.Analysis;
using SaeSharp.Tests.Tokenizers;
using SaeSharp.Tokenizers;

namespace SaeSharp.Tests.Analysis;

/// <summary>
/// <see cref="NeuronpediaExport"/> on the hand-made features folder tests/data/neuronpedia/features (GPT-2 token ids):
/// against SAEDashboard's own converter run on the same folder (tests/data/neuronpedia/expected, written by
/// bench/reference/saedashboard_neuronpedia_fixture.py) and against values worked out by hand.
/// </summary>
public sealed class NeuronpediaExportTests : IDisposable
{
    private const string Folder = "gpt2-small_res-jb_blocks.0.hook_resid_pre_8";
    private readonly string _dir = Directory.CreateTempSubdirectory("neuronpedia-").FullName;
    private static string Input => TestPaths.Data("neuronpedia", "features");
    private static ITextTokenizer Gpt2 => TestPaths.Gpt2;

    public void Dispose() => Directory.Delete(_dir, true);

    private static JsonNode Read(string path) => JsonNode.Parse(File.ReadAllText(path))!;

    private string Export(NeuronpediaExportOptions? options = null, string? input = null) =>
        NeuronpediaExport.Write(input ?? Input, _dir, options ?? new NeuronpediaExportOptions { FeaturesPerBatch = 4, Tokenizer = Gpt2 });

    [Fact]
    public void Batches_equal_what_SAEDashboards_converter_writes_for_the_same_features()
    {
        string dir = Export();
        Assert.Equal(Path.Combine(_dir, Folder), dir);
        string expected = TestPaths.Data("neuronpedia", "expected", Folder);
        foreach (var name in new[] { "batch-0.json", "batch-1.json" })
            AssertSameJson(Read(Path.Combine(expected, name)), Read(Path.Combine(dir, name)), name);
        Assert.False(File.Exists(Path.Combine(dir, "batch-2.json")));
        // skipped_indexes.json: the runner's keys in its order, log_sparsity its default sparsity_threshold (−6).
        AssertSameJson(Read(Path.Combine(expected, NeuronpediaExport.SkippedIndexesFile)), Read(Path.Combine(dir, NeuronpediaExport.SkippedIndexesFile)),
            NeuronpediaExport.SkippedIndexesFile);
    }

    [Fact]
    public void Values_are_rounded_binned_and_named_as_worked_out_by_hand()
    {
        string dir = Export();
        var b0 = Read(Path.Combine(dir, "batch-0.json"));
        Assert.Equal(("gpt2-small", 0, "res-jb"), ((string)b0["model_id"]!, (int)b0["layer"]!, (string)b0["sae_set"]!));   // from gpt2-small/0-res-jb
        Assert.Null(b0["sae_id_suffix"]);
        // 5 features, 4 per batch: np.array_split into ⌈5/4⌉ = 2 parts of 3 and 2 (not 4 and 1).
        Assert.Equal([1, 2, 4], b0["features"]!.AsArray().Select(f => (int)f!["feature_index"]!));
        Assert.Equal([5, 7], Read(Path.Combine(dir, "batch-1.json"))["features"]!.AsArray().Select(f => (int)f!["feature_index"]!));

        var f1 = b0["features"]![0]!;
        Assert.Equal(0.01235, (double)f1["frac_nonzero"]!, 1e-15);               // density 1.23456 % → "1.235%" → 0.01235
        Assert.Equal(24, (int)f1["n_prompts_total"]!);
        Assert.Equal(16, (int)f1["n_tokens_in_prompt"]!);
        Assert.Equal("NeelNanda/pile-10k", (string)f1["dataset"]!);               // hf:NeelNanda/pile-10k:train
        // Vocabulary strings with the runner's HTML_ANOMALIES replaced: "âĢ" (a byte fragment) stays, "âĢĶ" → "—", "Ã©" stays.
        Assert.Equal(["âĢ", "—", "Ã©"], f1["neg_str"]!.AsArray().Select(s => (string)s!));
        Assert.Equal([" the", " cat", "\n"], f1["pos_str"]!.AsArray().Select(s => (string)s!));
        Assert.Equal([-0.71429, -0.5, -0.33333], f1["neg_values"]!.AsArray().Select(v => (double)v!));
        // Bins of width 0.03125 from 0: centres 0.015625, 0.046875, ... to 5 places, ties to even (0.01562, 0.04688).
        Assert.Equal([0.01562, 0.04688, 0.07812, 0.10938], f1["freq_hist_data_bar_values"]!.AsArray().Select(v => (double)v!));
        Assert.Equal([5L, 3, 0, 1], f1["freq_hist_data_bar_heights"]!.AsArray().Select(v => (long)v!));
        // Decoder row 1 of w_dec.json is (3, -4, 1, 2, 0, 0): its largest entries 3, 2, 1 (not -4) over the unit-norm
        // row (÷ √30), each |entry| / L1 10.
        Assert.Equal([0, 3, 2], f1["neuron_alignment_indices"]!.AsArray().Select(v => (int)v!));
        Assert.Equal([0.54772, 0.36515, 0.18257], f1["neuron_alignment_values"]!.AsArray().Select(v => (double)v!));
        Assert.Equal([0.3, 0.2, 0.1], f1["neuron_alignment_l1"]!.AsArray().Select(v => (double)v!));
        foreach (var key in new[] { "correlated_neurons_pearson", "correlated_features_indices", "decoder_weights_dist", "vector" })
            Assert.Empty(f1[key]!.AsArray());

        var acts = f1["activations"]!.AsArray();
        // Two top examples, then the intervals highest first; the interval [0.25, 0.5) has no sample.
        Assert.Equal(4, acts.Count);
        var top = acts[0]!;
        Assert.Equal((-1.0, 1.062, -1.0), ((double)top["bin_min"]!, (double)top["bin_max"]!, (double)top["bin_contains"]!));   // MAX = 1.0625 → "1.062"
        // Window position 0 (the BOS) is left out, as the runner's sequences start at position 1.
        Assert.Equal([" The", " the", " cat", "\n"], top["tokens"]!.AsArray().Select(s => (string)s!));
        Assert.Equal([0.25, 1.0625, 0.1235, 0.0], top["values"]!.AsArray().Select(v => (double)v!));
        Assert.Equal(1, (int)top["qualifying_token_index"]!);
        var second = acts[1]!;                                                   // starts at position 8: nothing left out
        Assert.Equal(4, (int)second["qualifying_token_index"]!);
        Assert.Equal(0.0002, (double)second["values"]![1]!);                     // float32(0.00015) = 0.000150000007 → 0.0002
        var high = acts[2]!;
        Assert.Equal((0.5, 0.75, 0.00278), ((double)high["bin_min"]!, (double)high["bin_max"]!, Math.Round((double)high["bin_contains"]!, 10)));   // 1/360 = 0.278 %
        var low = acts[3]!;
        Assert.Equal((0.0, 0.25, 0.01944), ((double)low["bin_min"]!, (double)low["bin_max"]!, (double)low["bin_contains"]!));                       // 7/360 = 1.944 %

        var dead = b0["features"]![1]!;
        Assert.Equal(0.0, (double)dead["frac_nonzero"]!);
        Assert.Empty(dead["freq_hist_data_bar_values"]!.AsArray());
        Assert.Empty(dead["activations"]!.AsArray());

        var f4 = b0["features"]![2]!["activations"]![0]!;                        // the example's own token is at position 0: kept
        Assert.Equal(["Ã©", "\t", " ", " caf"], f4["tokens"]!.AsArray().Select(s => (string)s!));
        Assert.Equal(0, (int)f4["qualifying_token_index"]!);

        var b1 = Read(Path.Combine(dir, "batch-1.json"));
        Assert.Empty(b1["features"]![0]!["neuron_alignment_indices"]!.AsArray());   // feature 5 has no neuron_alignment (an older features.jsonl)

        var skipped = Read(Path.Combine(dir, NeuronpediaExport.SkippedIndexesFile));
        Assert.Equal([0, 3, 6], skipped["skipped_indexes"]!.AsArray().Select(i => (int)i!));
        Assert.Equal("0", (string)skipped["layer"]!);
        Assert.Equal(16, (int)Read(Path.Combine(dir, NeuronpediaExport.RunSettingsFile))["n_tokens_in_prompt"]!);
    }

    [Fact]
    public void Without_a_tokenizer_the_strings_of_tokens_json_are_written()
    {
        string dir = Export(new NeuronpediaExportOptions { FeaturesPerBatch = 4 });
        var f1 = Read(Path.Combine(dir, "batch-0.json"))["features"]![0]!;
        Assert.Equal(["âĢ", "—", "é"], f1["neg_str"]!.AsArray().Select(s => (string)s!));
    }

    [Fact]
    public void Options_override_the_neuronpedia_id_and_fewer_batches_replace_more()
    {
        string dir = Export(new NeuronpediaExportOptions { FeaturesPerBatch = 1, Tokenizer = Gpt2, ModelId = "gpt2", Layer = 3, NpSetName = "res_post", DatasetPath = "x/y" });
        Assert.Equal(Path.Combine(_dir, "gpt2_res_post_blocks.0.hook_resid_pre_8"), dir);
        Assert.Equal(5, Directory.GetFiles(dir, "batch-*.json").Length);
        var b = Read(Path.Combine(dir, "batch-0.json"));
        Assert.Equal(("gpt2", 3, "res_post", "x/y"), ((string)b["model_id"]!, (int)b["layer"]!, (string)b["sae_set"]!, (string)b["features"]![0]!["dataset"]!));
        File.WriteAllText(Path.Combine(dir, "batch-notes.json"), "{}");
        Export(new NeuronpediaExportOptions { FeaturesPerBatch = 2, Tokenizer = Gpt2, ModelId = "gpt2", Layer = 3, NpSetName = "res_post" });
        Assert.Equal(["batch-0.json", "batch-1.json", "batch-2.json", "batch-notes.json"], Directory.GetFiles(dir, "batch-*.json").Select(Path.GetFileName).Order());
    }

    [Fact]
    public void Helpers_follow_numpy_and_python()
    {
        Assert.Equal([3, 2], NeuronpediaExport.FeatureBatches(5, 4));
        Assert.Equal([4, 3, 3], NeuronpediaExport.FeatureBatches(10, 4));
        Assert.Equal([4, 4], NeuronpediaExport.FeatureBatches(8, 4));
        Assert.Empty(NeuronpediaExport.FeatureBatches(0, 4));
        // format(x, ".3f"): the exact binary value, ties to even.
        Assert.Equal("1.062", NeuronpediaExport.PyFixed(1.0625, 3));
        Assert.Equal("1.188", NeuronpediaExport.PyFixed(1.1875, 3));
        Assert.Equal("2.675", NeuronpediaExport.PyFixed(2.675, 3));
        Assert.Equal("2.67", NeuronpediaExport.PyFixed(2.675, 2));            // 2.675 is 2.67499999… in binary
        Assert.Equal("-0.000", NeuronpediaExport.PyFixed(-0.0001, 3));
        Assert.Equal("0.000", NeuronpediaExport.PyFixed(0, 3));
        Assert.Equal("12", NeuronpediaExport.PyFixed(12.5, 0));
        Assert.Equal("123456789012.50000", NeuronpediaExport.PyFixed(123456789012.5, 5));
        Assert.Equal(0.01562, NeuronpediaExport.NpRound(0.015625, 5));
        Assert.Equal(2.0, NeuronpediaExport.NpRound(2.5, 0));
        Assert.Equal(("gemma-2-2b", 20, "gemmascope-res-16k"), NeuronpediaExport.SplitNeuronpediaId("gemma-2-2b/20-gemmascope-res-16k"));
        Assert.Null(NeuronpediaExport.SplitNeuronpediaId("gpt2-small/res-jb"));
        Assert.Equal(NeuronpediaExport.OutOfRangeToken, NeuronpediaExport.VocabString(Gpt2, 50257));
        Assert.Equal("<|endoftext|>", NeuronpediaExport.VocabString(Gpt2, 50256));
    }

    [Fact]
    public void Bad_input_names_the_file_and_line()
    {
        var empty = Directory.CreateDirectory(Path.Combine(_dir, "empty")).FullName;
        Assert.Contains("no features.jsonl", Assert.Throws<SaeSharpException>(() => Export(input: empty)).Message);

        string Copy(string name)
        {
            string dir = Path.Combine(_dir, name);
            Directory.CreateDirectory(dir);
            foreach (var f in Directory.GetFiles(Input)) File.Copy(f, Path.Combine(dir, Path.GetFileName(f)));
            return dir;
        }
        string badLine = Copy("bad-line");
        var lines = File.ReadAllLines(Path.Combine(badLine, "features.jsonl"));
        lines[2] = "{\"feature\": 4,";
        File.WriteAllLines(Path.Combine(badLine, "features.jsonl"), lines);
        var e = Assert.Throws<SaeSharpException>(() => Export(input: badLine));
        Assert.Contains(Path.Combine(badLine, "features.jsonl") + ":3: not a feature line", e.Message);

        // Feature 7 is on line 6 (after a blank line); its token 3332 (" sat") is removed from tokens.json.
        string missing = Copy("missing-token");
        var tokens = Read(Path.Combine(missing, "tokens.json")).AsObject();
        tokens.Remove("3332");
        File.WriteAllText(Path.Combine(missing, "tokens.json"), tokens.ToJsonString());
        e = Assert.Throws<SaeSharpException>(() => Export(new NeuronpediaExportOptions(), missing));
        Assert.Equal($"{Path.Combine(missing, "features.jsonl")}:6: token 3332 of feature 7 is not in {Path.Combine(missing, "tokens.json")}", e.Message);
        Assert.DoesNotContain('\n', e.Message);
        Assert.False(Directory.Exists(Path.Combine(_dir, Folder)));               // nothing written, not even batch-0

        string noId = Copy("no-id");
        var summary = Read(Path.Combine(noId, "summary.json")).AsObject();
        summary.Remove("neuronpedia_id");
        File.WriteAllText(Path.Combine(noId, "summary.json"), summary.ToJsonString());
        e = Assert.Throws<SaeSharpException>(() => Export(new NeuronpediaExportOptions { Tokenizer = Gpt2 }, noId));
        Assert.Contains("--np-set-name", e.Message);
        // Without the id, the layer comes from the hook and the model from summary.json's model.
        string dir = Export(new NeuronpediaExportOptions { Tokenizer = Gpt2, NpSetName = "res" }, noId);
        Assert.Equal(Path.Combine(_dir, "gpt2_res_blocks.0.hook_resid_pre_8"), dir);
        Assert.Equal(0, (int)Read(Path.Combine(dir, "batch-0.json"))["layer"]!);
    }

    [Fact]
    public void A_release_SAE_names_the_folder_and_skipped_indexes_by_its_release_and_the_batches_by_the_np_set_name()
    {
        // The runner's sae_set is the SAELens release it loaded (folder, skipped_indexes.json); np_set_name goes into
        // the batch files; sae_path is the SAE id.
        string input = Path.Combine(_dir, "release");
        Directory.CreateDirectory(input);
        foreach (var f in Directory.GetFiles(Input)) File.Copy(f, Path.Combine(input, Path.GetFileName(f)));
        var summary = Read(Path.Combine(input, "summary.json")).AsObject();
        summary["sae"] = "gpt2-small-res-jb/blocks.0.hook_resid_pre";
        File.WriteAllText(Path.Combine(input, "summary.json"), summary.ToJsonString());
        string dir = Export(new NeuronpediaExportOptions { Tokenizer = Gpt2, SparsityThreshold = -5 }, input);
        Assert.Equal(Path.Combine(_dir, "gpt2-small_gpt2-small-res-jb_blocks.0.hook_resid_pre_8"), dir);
        Assert.Equal("res-jb", (string)Read(Path.Combine(dir, "batch-0.json"))["sae_set"]!);
        var skipped = Read(Path.Combine(dir, NeuronpediaExport.SkippedIndexesFile));
        Assert.Equal(("gpt2-small-res-jb", -5), ((string)skipped["sae_set"]!, (int)skipped["log_sparsity"]!));
        var settings = Read(Path.Combine(dir, NeuronpediaExport.RunSettingsFile));
        Assert.Equal(("gpt2-small-res-jb", "res-jb", "blocks.0.hook_resid_pre", false, -5),
            ((string)settings["sae_set"]!, (string)settings["np_set_name"]!, (string)settings["sae_path"]!, (bool)settings["from_local_sae"]!, (int)settings["sparsity_threshold"]!));
        // --sae-set overrides it; a local SAE's sae_set is the np set name.
        Assert.Equal(Path.Combine(_dir, "gpt2-small_mine_blocks.0.hook_resid_pre_8"), Export(new NeuronpediaExportOptions { Tokenizer = Gpt2, SaeSet = "mine" }, input));
        Assert.Equal("runs/tiny-gpt2-sae", (string)Read(Path.Combine(Export(), NeuronpediaExport.RunSettingsFile))["sae_path"]!);
    }

    /// <summary>Same keys in the same order, the same strings and the same numbers (compared as doubles: Python writes
    /// 0.0 where .NET writes 0).</summary>
    private static void AssertSameJson(JsonNode? expected, JsonNode? actual, string path)
    {
        switch (expected)
        {
            case null:
                Assert.True(actual is null, $"{path}: expected null, got {actual?.ToJsonString()}");
                break;
            case JsonObject eo:
                var ao = Assert.IsType<JsonObject>(actual);
                Assert.True(eo.Select(p => p.Key).SequenceEqual(ao.Select(p => p.Key)),
                    $"{path}: keys {string.Join(",", ao.Select(p => p.Key))}, expected {string.Join(",", eo.Select(p => p.Key))}");
                foreach (var (k, v) in eo) AssertSameJson(v, ao[k], $"{path}.{k}");
                break;
            case JsonArray ea:
                var aa = Assert.IsType<JsonArray>(actual);
                Assert.True(ea.Count == aa.Count, $"{path}: {aa.Count} items, expected {ea.Count}");
                for (int i = 0; i < ea.Count; i++) AssertSameJson(ea[i], aa[i], $"{path}[{i}]");
                break;
            default:
                var ev = expected.AsValue();
                Assert.NotNull(actual);
                if (ev.TryGetValue(out string? s)) Assert.True(s == (string?)actual, $"{path}: {actual.ToJsonString()}, expected {ev.ToJsonString()}");
                else Assert.True((double)ev == (double)actual, $"{path}: {actual.ToJsonString()}, expected {ev.ToJsonString()}");
                break;
        }
    }
}
