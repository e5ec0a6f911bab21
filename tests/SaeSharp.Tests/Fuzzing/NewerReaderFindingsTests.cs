using SaeSharp.Analysis;
using SaeSharp.Interop;
using SaeSharp.Tests.Saes;
using SaeSharp.Tests.Tokenizers;

namespace SaeSharp.Tests.Fuzzing;

/// <summary>
/// The inputs that fuzzing the newer readers found (docs/fuzzing.md, "Newer readers"), each replayed as the shrunk
/// mutation list over the property's own sample file, with the one-line error it must now give.
/// </summary>
public sealed class NewerReaderFindingsTests : IDisposable
{
    private readonly string _dir = Directory.CreateTempSubdirectory("saesharp-fuzz-findings-").FullName;
    public void Dispose() => Directory.Delete(_dir, recursive: true);

    /// <summary>Copies the test-data folder <paramref name="data"/> to a fresh folder (named <paramref name="folderName"/>
    /// when given); returns the path of its <paramref name="file"/>.</summary>
    private string Copy(string[] data, string file, string? folderName = null)
    {
        string folder = Path.Combine(_dir, folderName ?? Guid.NewGuid().ToString("N"));
        Directory.CreateDirectory(folder);
        foreach (var f in Directory.GetFiles(TestPaths.Data(data)))
            File.Copy(f, Path.Combine(folder, Path.GetFileName(f)));
        return Path.Combine(folder, file);
    }

    /// <summary><see cref="Copy"/>, then <paramref name="mutations"/> (FuzzTests' notation, KIND@POS:VALUExLEN, as a failing
    /// property prints them) applied to the file.</summary>
    private string Mutated(string[] data, string file, string mutations, string? folderName = null)
    {
        string path = Copy(data, file, folderName);
        var ms = mutations.Split(' ').Select(m =>
        {
            var p = m.Split('@', ':', 'x');
            return new FuzzTests.Mutation(int.Parse(p[0]), int.Parse(p[1]), int.Parse(p[2]), int.Parse(p[3]));
        }).ToArray();
        File.WriteAllBytes(path, FuzzTests.Apply(File.ReadAllBytes(path), ms));
        return path;
    }

    private static void OneLine(SaeSharpException e, params string[] parts)
    {
        Assert.DoesNotContain('\n', e.Message);
        foreach (var p in parts) Assert.Contains(p, e.Message);
    }

    [Fact]
    public void A_tokens_json_key_that_is_not_a_token_id_is_one_clear_error()
    {
        // Suite case 19 of Feature_folders(tokens.json): a bit flip turned the key "197" into "\xb197".
        string path = Mutated(["neuronpedia", "features"], FeatureReport.TokensFile, "0@76682146:-1x61");
        var e = Assert.Throws<SaeSharpException>(() => FeatureReport.Load(Path.GetDirectoryName(path)!));
        OneLine(e, path, "97\" is not a token id");
    }

    [Theory]
    [InlineData("[1, 2]", "expected a JSON object")]
    [InlineData("{\"198\": 5}", "token 198 is a JSON Number")]
    public void A_tokens_json_of_another_shape_is_one_clear_error(string json, string message)
    {
        string path = Copy(["neuronpedia", "features"], FeatureReport.TokensFile);
        File.WriteAllText(path, json);
        OneLine(Assert.Throws<SaeSharpException>(() => FeatureReport.Load(Path.GetDirectoryName(path)!)), path, message);
    }

    [Theory]
    [InlineData("\"d_sae\": 8,", "\"d_sae\": 99999999999,", "\"d_sae\" is 99999999999")]
    [InlineData("\"tokens\": 360,", "\"tokens\": 1e30,", "\"tokens\" is 1e30")]
    [InlineData("\"windows\": 24,", "\"windows\": -24,", "\"windows\" is -24")]
    public void A_summary_count_out_of_range_is_one_clear_error(string from, string to, string message)
    {
        string path = Copy(["neuronpedia", "features"], FeatureReport.SummaryFile);
        File.WriteAllText(path, File.ReadAllText(TestPaths.Data("neuronpedia", "features", FeatureReport.SummaryFile)).Replace(from, to));
        OneLine(Assert.Throws<SaeSharpException>(() => FeatureReport.Load(Path.GetDirectoryName(path)!)), path, message);
    }

    [Theory]
    [InlineData("exp_factor: 4", "exp_factor: 1e300")]
    [InlineData("exp_factor: 4", "exp_factor: .nan")]
    [InlineData("dimin: 8", "dimin: -8")]
    public void A_temporal_latent_count_that_does_not_fit_is_one_clear_error(string from, string to)
    {
        // Found by reading the code while adding Temporal_conf_yaml: d_in × exp_factor was cast with checked((int)…),
        // an OverflowException for a huge factor (and NaN).
        string path = Copy(["temporal_sae", "tied_topk", "canrager", "layer_3", "temporal"], SaeLensConversions.TemporalConfigFile, Path.Combine(Guid.NewGuid().ToString("N"), "layer_3"));
        File.WriteAllText(path, File.ReadAllText(TestPaths.Data("temporal_sae", "tied_topk", "canrager", "layer_3", "temporal", "conf.yaml")).Replace(from, to));
        OneLine(Assert.Throws<SaeSharpException>(() => SaeLensConversions.LoadTemporal(Path.GetDirectoryName(path)!)), path, "exp_factor");
    }

    [Theory]
    [InlineData("\"context_acts\":[0,0.25,1.0625,0.123456,0]", "\"context_acts\":[0,0.25,1.0625,0.123456]", "5 context_tokens but 4 context_acts")]
    [InlineData("\"index\":2,", "\"index\":5,", "index 5 is not a position of its 5 context tokens")]
    [InlineData("\"index\":2,", "\"index\":-1,", "index -1 is not a position")]
    [InlineData("\"counts\":[5,3,0,1]", "\"counts\":[5,3,0,1,7]", "5 counts but 5 edges")]
    [InlineData("\"density\":0.0123456", "\"density\":1.5", "density 1.5 is not a fraction from 0 to 1")]
    // walk11: a feature index ≥ d_sae (a line from another SAE's folder) was written as a Neuronpedia feature_index and
    // given a dashboard page; a repeated index gave two pages of one name; a missing field said only "The given key was
    // not present in the dictionary."
    [InlineData("{\"feature\":7,", "{\"feature\":8,", "feature 8 is not an index of the SAE's 8 features")]
    [InlineData("{\"feature\":7,", "{\"feature\":-1,", "feature -1 is not an index")]
    [InlineData("{\"feature\":7,", "{\"feature\":4,", "feature 4 again (first on line 3)")]
    [InlineData("\"max_activation\":", "\"max_activatio\":", "no \"max_activation\"")]
    public void A_feature_line_the_pages_would_index_past_is_one_clear_error(string from, string to, string message)
    {
        // Read by the dashboard (TokenLine indexes context_acts by context token; histograms index edges by count) and
        // by the Neuronpedia export: an inconsistent line is refused when the folder is read, naming file and line.
        string path = Copy(["neuronpedia", "features"], FeatureReport.FeaturesFile);
        string text = File.ReadAllText(path);
        int at = text.IndexOf(from, StringComparison.Ordinal);
        Assert.True(at >= 0);
        int line = text[..at].Count(c => c == '\n') + 1;
        File.WriteAllText(path, text[..at] + to + text[(at + from.Length)..]);
        OneLine(Assert.Throws<SaeSharpException>(() => FeatureReport.Load(Path.GetDirectoryName(path)!)), $"{path}:{line}:", message);
    }

    [Fact]
    public void A_temporal_attention_layer_count_unlike_the_weights_is_refused_before_the_layers_are_built()
    {
        // Found by reading the code while adding Temporal_conf_yaml: the SAE built n_attn_layers attention layers before
        // its weights were compared: two billion modules for this file.
        string path = Copy(["temporal_sae", "tied_topk", "canrager", "layer_3", "temporal"], SaeLensConversions.TemporalConfigFile, Path.Combine(Guid.NewGuid().ToString("N"), "layer_3"));
        File.WriteAllText(path, File.ReadAllText(path).Replace("n_attn_layers: 1", "n_attn_layers: 2000000000"));
        OneLine(Assert.Throws<SaeSharpException>(() => SaeLensConversions.LoadTemporal(Path.GetDirectoryName(path)!)), path, "n_attn_layers=2000000000", "holds 1 attention layers");
    }

    [Fact]
    public void A_dictionary_learning_config_that_is_not_an_object_is_one_clear_error()
    {
        // scripts/fuzz.sh 60s, Dictionary_learning(config.json), seed 42-8rVYyZtV1: truncated to "{" and two bits flipped,
        // the file is the JSON number 9, and reading "trainer" from it threw InvalidOperationException.
        string path = Mutated(["dictionary_learning", "AutoEncoderTopK"], DictionaryLearning.ConfigFile,
            "2@909446970:-908354314x36 2@55169479:-2858x4 0@1216883466:-455x43 0@1226052603:30x7");
        OneLine(Assert.Throws<SaeSharpException>(() => DictionaryLearning.Load(Path.GetDirectoryName(path)!)), path, "expected a JSON object");
    }

    [Theory]
    [InlineData("4@24629359:0x5", "llm:\n  : 8\n")]
    [InlineData("1@1329769649:2001818831x40 2@536744727:-40561445x25", "tied_weights: {rue\n")]
    public void Malformed_yaml_that_YamlDotNet_reports_with_other_exceptions_is_one_clear_error(string mutations, string made)
    {
        // scripts/fuzz.sh, Temporal_conf_yaml: seed 5rBJishKNy-1 (deleting "dimin" left "  : 8" under llm:, which
        // YamlDotNet reports with ArgumentException) and, replaying it, seed 3GiCMO9WNLd1 (a flow mapping "{rue" cut off
        // by the end of the file: InvalidOperationException from its scanner). Every YAML reader goes through YamlFields.Load.
        string path = Mutated(["temporal_sae", "tied_topk", "canrager", "layer_3", "temporal"], SaeLensConversions.TemporalConfigFile, mutations);
        Assert.Contains(made, File.ReadAllText(path));
        OneLine(Assert.Throws<SaeSharpException>(() => SaeLensConversions.LoadTemporal(Path.GetDirectoryName(path)!)), path, "invalid YAML");
    }

    [Fact]
    public void A_temporal_scaling_factor_beyond_double_range_is_one_clear_error()
    {
        // scripts/fuzz.sh, Temporal_conf_yaml, seed 8QQifz1TegK1: "1e309" inserted after scaling_factor's 0.5 makes
        // 0.51e309, infinity as a double, which the metadata's JSON could not hold (ArgumentException from JsonSerializer).
        string path = Mutated(["temporal_sae", "tied_topk", "canrager", "layer_3", "temporal"], SaeLensConversions.TemporalConfigFile, "7@21834875:1x50",
            Path.Combine(Guid.NewGuid().ToString("N"), "layer_3"));
        Assert.Contains("scaling_factor: 0.51e309\n", File.ReadAllText(path));
        OneLine(Assert.Throws<SaeSharpException>(() => SaeLensConversions.LoadTemporal(Path.GetDirectoryName(path)!)), path, "sae.scaling_factor", "expected a finite number");
    }

    [Theory]
    [InlineData("7@29784:0x16", null)]                                     // fuzz.sh, seed b1QxmLTmhzo1: 10,000 brackets in "neuronpedia_id"
    [InlineData(null, "\"hook\": \"../../../escaped\"")]                  // by hand: the same name leaving the output folder
    public void A_neuronpedia_folder_name_that_is_not_one_folder_is_one_clear_error(string? mutations, string? hook)
    {
        // The export's folder is named {model_id}_{sae_set}_{hook}_{d_sae} from summary.json: the fuzzed neuronpedia_id
        // gave an SAE set longer than a file name may be (PathTooLongException from Directory.CreateDirectory).
        string path = mutations is null ? Copy(["neuronpedia", "features"], FeatureReport.SummaryFile)
            : Mutated(["neuronpedia", "features"], FeatureReport.SummaryFile, mutations);
        if (hook is not null) File.WriteAllText(path, File.ReadAllText(path).Replace("\"hook\": \"blocks.0.hook_resid_pre\"", hook));
        string outDir = Path.Combine(_dir, "out");
        var e = Assert.Throws<SaeSharpException>(() => NeuronpediaExport.Write(Path.GetDirectoryName(path)!, outDir));
        OneLine(e, path, "is not a single folder name");
        Assert.False(Directory.Exists(outDir));
        Assert.False(Directory.Exists(Path.Combine(_dir, "escaped")));
    }

    /// <summary>A features folder of a model loaded by its Hugging Face path and no Neuronpedia id: the runner would nest
    /// the export under <c>google/</c>; the export asks for Neuronpedia's model id and names the likely one, and with
    /// <c>--model-id</c> it writes one folder.</summary>
    [Fact]
    public void A_hugging_face_model_path_without_a_neuronpedia_id_asks_for_the_model_id()
    {
        string path = Copy(["neuronpedia", "features"], FeatureReport.SummaryFile);
        File.WriteAllText(path, File.ReadAllText(path).Replace("\"model\": \"gpt2\"", "\"model\": \"google/gemma-2-2b\"")
                                                     .Replace("\"neuronpedia_id\": \"gpt2-small/0-res-jb\"", "\"neuronpedia_id\": null"));
        string outDir = Path.Combine(_dir, "out");
        var e = Assert.Throws<SaeSharpException>(() => NeuronpediaExport.Write(Path.GetDirectoryName(path)!, outDir,
            new NeuronpediaExportOptions { NpSetName = "res-test" }));
        OneLine(e, path, "is a Hugging Face path, not a Neuronpedia model id", "--model-id", "\"gemma-2-2b\"");
        Assert.False(Directory.Exists(outDir));

        string written = NeuronpediaExport.Write(Path.GetDirectoryName(path)!, outDir,
            new NeuronpediaExportOptions { ModelId = "gemma-2-2b", NpSetName = "res-test" });
        Assert.Equal(outDir, Path.GetDirectoryName(written));
        Assert.StartsWith("gemma-2-2b_", Path.GetFileName(written), StringComparison.Ordinal);
    }

    [Fact]
    public void A_circuit_tracer_config_yaml_that_YamlDotNet_cannot_scan_is_one_clear_error()
    {
        // scripts/fuzz.sh 60s, Clt_circuit_tracer_config_yaml, seed 81XXGfL_EIW1: "{eature_output_hook: …" (an unclosed
        // flow mapping) made YamlDotNet's scanner throw InvalidOperationException.
        string folder = Path.Combine(_dir, "clt");
        CltReference.Random(layers: 2, features: 3, dModel: 2, seed: 1, threshold: false, skip: false).WriteCircuitTracer(folder, threshold: false);
        string path = Path.Combine(folder, SaeLensConversions.CircuitTracerConfigFile);
        File.WriteAllBytes(path, FuzzTests.Apply("model_name: gpt2\nfeature_input_hook: hook_resid_mid\nfeature_output_hook: hook_mlp_out\nscan: null\n"u8.ToArray(),
            [new FuzzTests.Mutation(1, 1345927, 5, 27)]));
        Assert.Contains("\n{eature_output_hook", File.ReadAllText(path));
        OneLine(Assert.Throws<SaeSharpException>(() => CrossLayerTranscoderLoader.Load(folder)), path, "invalid YAML");
    }

    [Fact]
    public void A_density_beyond_double_range_is_one_clear_error_not_an_endless_density_chart()
    {
        // scripts/fuzz.sh 60s, Feature_folders(features.jsonl), seed ddlkqyx428W1: "1e309" inserted into a density made
        // 0.1e30907, read as infinity; the dashboard's density chart sized its bins by log10 of it (OutOfMemoryException).
        string path = Mutated(["neuronpedia", "features"], FeatureReport.FeaturesFile, "7@362071:-1x18");
        Assert.Contains("\"density\":0.1e30907,", File.ReadAllText(path));
        OneLine(Assert.Throws<SaeSharpException>(() => FeatureReport.Load(Path.GetDirectoryName(path)!)), path + ":", "0.1e30907 is not a finite number");
    }

    [Fact]
    public void A_histogram_edge_beyond_double_range_is_one_clear_error()
    {
        // scripts/fuzz.sh 60s, Feature_folders(features.jsonl), seed cWxOv9iDFOd1: "1e309" inserted into a logit-histogram
        // edge made -0.1e309238095, read as −infinity; the Neuronpedia export's bar positions refused it with
        // ArgumentOutOfRangeException. Every number of a feature line must now be finite.
        string path = Mutated(["neuronpedia", "features"], FeatureReport.FeaturesFile, "7@9393584:1x19");
        Assert.Contains("-0.1e309238095,", File.ReadAllText(path));
        OneLine(Assert.Throws<SaeSharpException>(() => FeatureReport.Load(Path.GetDirectoryName(path)!)), path + ":1:", "-0.1e309238095 is not a finite number");
    }

}
