using System.Text.Json.Nodes;
using SaeSharp.IO;
using SaeSharp.Synthetic;
using SaeSharp.Tests.Tokenizers;
using TorchSharp;
using static TorchSharp.torch;

namespace SaeSharp.Tests.Synthetic;

/// <summary>
/// <see cref="SyntheticModel.Save"/> writes what SAELens 6.37.6's <c>SyntheticModel.save()</c> writes: for each fixture
/// model (saved by SAELens itself, tests/data/synthetic_model) the loaded-then-saved folder holds the same files with
/// the same bytes, and reloads bit-exactly. SAELens's own <c>load_from_disk</c> reading SaeSharp-saved folders is checked
/// by hand with bench/reference/synthetic_model_fixture.py --check-saved.
/// </summary>
public class SyntheticModelSaveTests : IDisposable
{
    private readonly string _dir = Directory.CreateTempSubdirectory("synthetic-model-save-").FullName;
    public void Dispose() => Directory.Delete(_dir, true);

    public static TheoryData<string> Models => new() { "plain", "correlated", "hierarchy", "hierarchy_rescale" };

    private static string ModelDir(string name) => TestPaths.Data("synthetic_model", name);
    private static readonly string[] SaeLensFiles = [SyntheticModelConfig.FileName, SyntheticModel.WeightsFileName, SyntheticHierarchy.FileName];

    private static bool Same(Tensor a, Tensor b)
    {
        using var scope = NewDisposeScope();
        return a.shape.SequenceEqual(b.shape) && a.dtype == b.dtype && a.eq(b).all().item<bool>();
    }

    private static bool SameOrBothNull(Tensor? a, Tensor? b) => a is null ? b is null : b is not null && Same(a, b);

    private static void AssertSameModel(SyntheticModel expected, SyntheticModel actual)
    {
        Assert.Equal(expected.Config, actual.Config);
        Assert.True(Same(expected.FeatureVectors, actual.FeatureVectors), "feature_vectors");
        Assert.True(Same(expected.Bias, actual.Bias), "bias");
        Assert.True(Same(expected.FiringProbabilities, actual.FiringProbabilities), "firing_probabilities");
        Assert.True(SameOrBothNull(expected.CorrelationFactor, actual.CorrelationFactor), "correlation_factor");
        Assert.True(SameOrBothNull(expected.CorrelationDiag, actual.CorrelationDiag), "correlation_diag");
        Assert.True(Same(expected.MeanMagnitudes, actual.MeanMagnitudes), "mean magnitudes");
        Assert.True(Same(expected.StdMagnitudes, actual.StdMagnitudes), "std magnitudes");
        Assert.True(SameOrBothNull(expected.Thresholds, actual.Thresholds), "thresholds");
        if (expected.Hierarchy is null) Assert.Null(actual.Hierarchy);
        else
        {
            Assert.Equal(expected.Hierarchy.ToSaeLensJson(), actual.Hierarchy!.ToSaeLensJson());
            Assert.Equal(expected.Hierarchy.Edges, actual.Hierarchy.Edges);
            Assert.Equal(expected.Hierarchy.MutuallyExclusiveGroups, actual.Hierarchy.MutuallyExclusiveGroups);
        }
    }

    /// <summary>The folder SaeSharp saves from a SAELens-saved model is SAELens's, file for file and byte for byte
    /// (and so also JSON structurally equal, with the same tensor names, dtypes, shapes and bits).</summary>
    [Theory]
    [MemberData(nameof(Models))]
    public void Saving_a_loaded_model_writes_SAELens_files_byte_for_byte(string name)
    {
        using var model = SyntheticModel.Load(ModelDir(name));
        var dir = Path.Combine(_dir, name);
        model.Save(dir);
        var expectedFiles = SaeLensFiles.Where(f => File.Exists(Path.Combine(ModelDir(name), f))).Order().ToArray();
        Assert.Equal(expectedFiles, Directory.GetFiles(dir).Select(Path.GetFileName).Order().ToArray());
        foreach (var f in expectedFiles)
        {
            if (f.EndsWith(".json", StringComparison.Ordinal))
            {
                // Structural equality first, for a readable failure; then the exact text json.dump(indent=2) wrote.
                var expected = JsonNode.Parse(File.ReadAllText(Path.Combine(ModelDir(name), f)));
                var actual = JsonNode.Parse(File.ReadAllText(Path.Combine(dir, f)));
                Assert.True(JsonNode.DeepEquals(expected, actual), $"{f}:\n{actual}");
            }
            else
            {
                using var expected = SafeTensorsFile.Open(Path.Combine(ModelDir(name), f));
                using var actual = SafeTensorsFile.Open(Path.Combine(dir, f));
                Assert.Equal(expected.Names.Order(), actual.Names.Order());
                foreach (var t in expected.Names)
                {
                    Assert.Equal(expected.Info(t).Dtype, actual.Info(t).Dtype);
                    Assert.Equal(expected.Info(t).Shape, actual.Info(t).Shape);
                    using var a = expected.Read(t);
                    using var b = actual.Read(t);
                    Assert.True(Same(a, b), t);
                }
            }
            Assert.Equal(File.ReadAllBytes(Path.Combine(ModelDir(name), f)), File.ReadAllBytes(Path.Combine(dir, f)));
        }
    }

    [Theory]
    [MemberData(nameof(Models))]
    public void Save_then_load_round_trips_bit_exactly(string name)
    {
        using var model = SyntheticModel.Load(ModelDir(name));
        var dir = Path.Combine(_dir, name);
        model.Save(dir);
        using var reloaded = SyntheticModel.Load(dir);
        AssertSameModel(model, reloaded);
    }

    /// <summary>A model generated from a config alone, saved and loaded back, is the same model: it samples the same
    /// rows from the same seed (a hierarchy, a correlation and folded-normal magnitudes included).</summary>
    [Theory]
    [MemberData(nameof(Models))]
    public void Generated_model_saved_and_loaded_samples_identically(string name)
    {
        var config = SyntheticModelConfig.Load(Path.Combine(ModelDir(name), SyntheticModelConfig.FileName));
        using var generated = SyntheticModel.FromConfig(config);
        var dir = Path.Combine(_dir, name);
        generated.Save(dir);
        // The config written is SAELens's text for the same config.
        Assert.Equal(File.ReadAllText(Path.Combine(ModelDir(name), SyntheticModelConfig.FileName)), File.ReadAllText(Path.Combine(dir, SyntheticModelConfig.FileName)));
        using var loaded = SyntheticModel.Load(dir);
        AssertSameModel(generated, loaded);
        using var g1 = new Generator(77);
        using var g2 = new Generator(77);
        var (h1, a1) = generated.SampleWithFeatures(2000, g1);
        var (h2, a2) = loaded.SampleWithFeatures(2000, g2);
        using (h1) using (a1) using (h2) using (a2)
        {
            Assert.True(Same(a1, a2), "feature activations");
            Assert.True(Same(h1, h2), "hidden activations");
        }
    }

    [Fact]
    public void Config_forms_survive_saving()
    {
        // bias true, magnitudes as generator objects (constant) and numbers, a branching range, an unseeded config,
        // a random firing generator, orthogonalisation defaults filled in as SAELens's from_dict fills them.
        var json = """
            {"num_features": 12, "hidden_dim": 5, "firing_probability": {"generator_name": "random", "max_prob": 0.4},
             "hierarchy": {"total_root_nodes": 2, "branching_factor": [2, 3], "max_depth": 2, "mutually_exclusive_portion": 1},
             "orthogonalization": {"num_steps": 3}, "std_firing_magnitudes": {"generator_name": "constant", "value": 0.25},
             "mean_firing_magnitudes": 2, "bias": true}
            """;
        var config = SyntheticModelConfig.Parse(System.Text.Json.JsonDocument.Parse(json).RootElement);
        var text = config.ToSaeLensJson();
        Assert.Equal("""
            {
              "num_features": 12,
              "hidden_dim": 5,
              "firing_probability": {
                "max_prob": 0.4,
                "min_prob": 0.01,
                "generator_name": "random"
              },
              "hierarchy": {
                "total_root_nodes": 2,
                "branching_factor": [
                  2,
                  3
                ],
                "max_depth": 2,
                "mutually_exclusive_portion": 1.0,
                "mutually_exclusive_min_depth": 0,
                "mutually_exclusive_max_depth": null,
                "compensate_probabilities": false,
                "scale_children_by_parent": false
              },
              "orthogonalization": {
                "num_steps": 3,
                "lr": 0.01,
                "chunk_size": 1024
              },
              "correlation": null,
              "std_firing_magnitudes": {
                "value": 0.25,
                "generator_name": "constant"
              },
              "mean_firing_magnitudes": 2.0,
              "bias": true,
              "dtype": "float32",
              "seed": null
            }
            """.ReplaceLineEndings("\n"), text);
        Assert.Equal(config, SyntheticModelConfig.Parse(System.Text.Json.JsonDocument.Parse(text).RootElement));
    }

    [Theory]
    [InlineData(0.1, "0.1")]
    [InlineData(1.0, "1.0")]
    [InlineData(100.0, "100.0")]
    [InlineData(1e-5, "1e-05")]
    [InlineData(1.5e-5, "1.5e-05")]
    [InlineData(0.0001, "0.0001")]
    [InlineData(1e16, "1e+16")]
    [InlineData(1e15, "1000000000000000.0")]
    [InlineData(123456789012345678.0, "1.2345678901234568e+17")]
    [InlineData(123456789012345.6, "123456789012345.6")]
    [InlineData(2.5e-300, "2.5e-300")]
    [InlineData(5e-324, "5e-324")]
    [InlineData(double.MaxValue, "1.7976931348623157e+308")]
    [InlineData(-0.0, "-0.0")]
    [InlineData(0.30000000000000004, "0.30000000000000004")]
    [InlineData(-2.75, "-2.75")]
    public void Floats_are_written_as_Python_repr(double value, string expected) =>
        Assert.Equal(expected, PythonJson.FloatRepr(value));

    [Fact]
    public void Strings_and_empty_containers_are_written_as_json_dump()
    {
        var o = new PythonJson.Object { { "a", new List<object>() }, { "b", new PythonJson.Object() }, { "h", "é<+'\"\\\n\t\u0001" } };
        Assert.Equal("{\n  \"a\": [],\n  \"b\": {},\n  \"h\": \"\\u00e9<+'\\\"\\\\\\n\\t\\u0001\"\n}", PythonJson.Dump(o));
    }

    [Fact]
    public void A_folder_that_holds_files_is_refused_unless_overwriting()
    {
        using var model = SyntheticModel.Load(ModelDir("hierarchy"));
        var dir = Path.Combine(_dir, "busy");
        Directory.CreateDirectory(dir);
        File.WriteAllText(Path.Combine(dir, "notes.txt"), "mine");
        var e = Assert.Throws<SaeSharpException>(() => model.Save(dir));
        Assert.Contains("not empty", e.Message);
        Assert.Equal(["notes.txt"], Directory.GetFiles(dir).Select(Path.GetFileName));

        var file = Path.Combine(_dir, "a-file");
        File.WriteAllText(file, "x");
        Assert.Contains("is a file", Assert.Throws<SaeSharpException>(() => model.Save(file)).Message);

        // An empty folder is fine; overwriting replaces the model files and keeps the others.
        var empty = Path.Combine(_dir, "empty");
        Directory.CreateDirectory(empty);
        model.Save(empty);
        model.Save(dir, overwrite: true);
        Assert.Equal("mine", File.ReadAllText(Path.Combine(dir, "notes.txt")));
        Assert.True(File.Exists(Path.Combine(dir, SyntheticHierarchy.FileName)));
        // A model without a hierarchy saved over one with: the old hierarchy.json goes (SAELens would load it).
        using var plain = SyntheticModel.Load(ModelDir("plain"));
        plain.Save(dir, overwrite: true);
        Assert.False(File.Exists(Path.Combine(dir, SyntheticHierarchy.FileName)));
        using var reloaded = SyntheticModel.Load(dir);
        AssertSameModel(plain, reloaded);
        Assert.Empty(Directory.GetFiles(dir, ".*.tmp"));
    }
}
