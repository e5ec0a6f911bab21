using SaeSharp.Evaluation;

namespace SaeSharp.Tests.Evaluation;

/// <summary>Non-finite metrics in SAELens's evals output: its <c>replace_nans_with_negative_one</c> turns NaN into the int -1
/// and leaves ±∞, which Python's <c>json.dump</c> writes as the bare tokens <c>Infinity</c> and <c>-Infinity</c>.</summary>
public sealed class SaeLensEvalsNonFiniteTests : TempDirTestBase
{
    /// <summary>The bytes of Python's <c>json.dump(result, f, indent=2)</c> of a result with -inf, NaN and inf (NaN left
    /// as Python writes it before SAELens's replacement), and a string holding the words NaN and Infinity.</summary>
    private const string PythonDump = """
        {
          "unique_id": "set-NaN Infinity",
          "sae_set": "set",
          "sae_id": "NaN Infinity",
          "metrics": {
            "model_performance_preservation": {
              "ce_loss_score": -Infinity,
              "ce_loss_with_sae": NaN
            },
            "reconstruction_quality": {
              "mse": Infinity,
              "cossim": 0.25
            }
          },
          "feature_metrics": {
            "feature_density": [
              0.5,
              Infinity
            ]
          }
        }
        """;

    [Fact]
    public void A_file_python_json_dump_wrote_reads_with_its_infinities_and_nan()
    {
        string path = Path.Combine(_dir, "r.json");
        File.WriteAllText(path, PythonDump);
        var r = Assert.Single(SaeLensEvalsOutput.Read(path));
        Assert.Equal("set-NaN Infinity", r.UniqueId);
        Assert.Equal(double.NegativeInfinity, r.Metrics["model_performance_preservation.ce_loss_score"]);
        Assert.True(double.IsNaN(r.Metrics["model_performance_preservation.ce_loss_with_sae"]));
        Assert.Equal(double.PositiveInfinity, r.Metrics["reconstruction_quality.mse"]);
        Assert.Equal(0.25, r.Metrics["reconstruction_quality.cossim"]);
        Assert.Equal([0.5, double.PositiveInfinity], r.FeatureMetrics["feature_density"]);
        File.WriteAllText(path, "{\"metrics\": Infinit}");
        Assert.Contains(path + ": not a SAELens evals file", Assert.Throws<SaeSharpException>(() => SaeLensEvalsOutput.Read(path)).Message);
    }

    /// <summary>A CE loss score of −1/0 (the SAE raises the loss, zero ablation leaves it: −∞), a KL score of 0/0 (NaN) and an
    /// infinite MSE: the file holds <c>-Infinity</c>, the int -1 and <c>Infinity</c> as SAELens writes them, the CSV
    /// <c>-inf</c> and <c>inf</c> as pandas does, and the file reads back to the same values (NaN as -1).</summary>
    [Fact]
    public void Infinities_are_written_as_python_json_and_read_back()
    {
        var m = new DownstreamMetrics
        {
            Name = "s", HookName = "h", Reconstruction = new SaeEvalResult { Mse = double.PositiveInfinity, Cosine = 0.5 },
            CeLossWithoutSae = 2, CeLossWithSae = 3, CeLossWithAblation = 2, KlDivWithAblation = 0, KlDivWithSae = 0,
            ContextSize = 16, BatchSizePrompts = 2, Contexts = 3,
        };
        Assert.Equal(double.NegativeInfinity, m.CeLossScore);
        Assert.True(double.IsNaN(m.KlDivScore));
        var run = new SaeLensEvalRun { SaeSet = "set", SaeId = "id", Dataset = "org/data" };
        var paths = SaeLensEvalsOutput.Write(Path.Combine(_dir, "out"), [(m, run)]);
        string text = File.ReadAllText(paths[0]);
        Assert.Contains("\"ce_loss_score\": -Infinity,", text);
        Assert.Contains("\"kl_div_score\": -1,", text);
        Assert.Contains("\"mse\": Infinity,", text);
        string csv = File.ReadAllText(paths[^1]);
        var header = csv.Split('\n')[0].Split(',');
        var row = csv.Split('\n')[1].Split(',');
        Assert.Equal("-inf", row[Array.IndexOf(header, "metrics.model_performance_preservation.ce_loss_score")]);
        Assert.Equal("inf", row[Array.IndexOf(header, "metrics.reconstruction_quality.mse")]);
        foreach (var path in new[] { paths[0], paths[^2] })
        {
            var r = Assert.Single(SaeLensEvalsOutput.Read(path));
            Assert.Equal("set-id", r.UniqueId);
            Assert.Equal(double.NegativeInfinity, r.Metrics["model_performance_preservation.ce_loss_score"]);
            Assert.Equal(-1, r.Metrics["model_behavior_preservation.kl_div_score"]);
            Assert.Equal(double.PositiveInfinity, r.Metrics["reconstruction_quality.mse"]);
            Assert.Equal(0.5, r.Metrics["reconstruction_quality.cossim"]);
        }
    }
}
