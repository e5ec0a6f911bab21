using System.Text.Json.Nodes;
using SaeSharp.Interop;
using SaeSharp.IO;
using SaeSharp.Saes;
using SaeSharp.Tests.Analysis;
using static TorchSharp.torch;

namespace SaeSharp.Tests.Cli;

/// <summary><c>sae eval --json</c> writes SAELens's <c>feature_metrics</c> beside the scalar metrics, on activation files
/// and inside a model (one SAE: an object; several: an array of objects, each with its own lists).</summary>
public sealed class EvalFeatureMetricsCommandTests : IDisposable
{
    private readonly string _dir = Directory.CreateTempSubdirectory("eval-feature-metrics-").FullName;

    public void Dispose()
    {
        try { Directory.Delete(_dir, recursive: true); } catch (IOException) { /* best effort */ }
    }

    private string P(string name) => Path.Combine(_dir, name);

    private static double[] Doubles(JsonNode list) => list.AsArray().Select(v => v!.GetValue<double>()).ToArray();

    /// <summary>On rows: an SAE with W_enc columns (3,4), (0,0), (1,−1), W_dec rows (4,3), (1,0), (−2,2), b_enc (0.5, −1, 0.25)
    /// on rows (1,0), (0,1), (−1,0), (0,−1): f = relu(x·W_enc + b_enc) fires feature 0 on the first two rows, feature 2 on the
    /// first and last, feature 1 never. Norms 5, 0, √2; cosines 24/25, NaN ("NaN", as the file's scalars), −1; no heuristic
    /// (rows have no prompts).</summary>
    [Fact]
    public void Eval_on_activations_writes_feature_metrics_after_the_scalars()
    {
        var cfg = new SaeConfig { DIn = 2, DSae = 3, ApplyBDecToInput = false };
        using (var sae = SaeFactory.Create(cfg))
        {
            using (no_grad())
            {
                sae.WEnc.copy_(tensor(new float[,] { { 3, 0, 1 }, { 4, 0, -1 } }));
                sae.WDec.copy_(tensor(new float[,] { { 4, 3 }, { 1, 0 }, { -2, 2 } }));
                sae.BEnc.copy_(tensor(new float[] { 0.5f, -1, 0.25f }));
            }
            SaeLensFormat.Save(sae, P("sae"));
        }
        using (var x = tensor(new float[,] { { 1, 0 }, { 0, 1 }, { -1, 0 }, { 0, -1 } }))
            SafeTensors.Save(P("rows.safetensors"), new Dictionary<string, TorchSharp.torch.Tensor> { ["activations"] = x });
        var (exit, output, err) = CliRunner.Run("eval", "--sae", P("sae"), "--activations", P("rows.safetensors"), "--json", P("eval.json"));
        Assert.True(exit == 0, err);
        Assert.Contains("encoder-decoder cosine (mean)", output);

        var json = JsonNode.Parse(File.ReadAllText(P("eval.json")))!.AsObject();
        Assert.Equal(4, json["n_rows"]!.GetValue<long>());
        Assert.Equal("feature_metrics", json.Last().Key);
        var fm = json["feature_metrics"]!.AsObject();
        Assert.Equal(["feature_density", "encoder_norm", "encoder_decoder_cosine_sim", "encoder_bias"], fm.Select(p => p.Key));
        Assert.Equal([0.5, 0, 0.5], Doubles(fm["feature_density"]!));
        var norms = Doubles(fm["encoder_norm"]!);
        Assert.Equal(5, norms[0], 12);
        Assert.Equal(0, norms[1]);
        Assert.Equal(Math.Sqrt(2), norms[2], 6);
        var cos = fm["encoder_decoder_cosine_sim"]!.AsArray();
        Assert.Equal(0.96, cos[0]!.GetValue<double>(), 6);
        Assert.Equal("NaN", cos[1]!.GetValue<string>());
        Assert.Equal(-1, cos[2]!.GetValue<double>(), 6);
        Assert.Equal([0.5, -1, 0.25], Doubles(fm["encoder_bias"]!));
    }

    /// <summary>Inside the model, two SAEs in one pass (<see cref="AnalysisFixture"/>'s embedding SAE twice: unit encoder
    /// columns, W_dec = W_encᵀ, b_enc 0): an array of two objects, each with the five lists of d_sae = 12 values; norms
    /// and cosines 1, biases 0; every density a whole number of the counted tokens, summing to l0 (each firing token
    /// counted once per feature); the heuristic null exactly where the density is 0, else at least 1.</summary>
    [Fact]
    public void Eval_in_the_model_writes_feature_metrics_for_each_sae()
    {
        using var a = new AnalysisFixture();
        var (exit, _, err) = CliRunner.Run("eval", "--sae", a.SaeDir, "--sae", a.SaeDir, "--model", a.ModelDir, "--dataset", a.DataPath,
            "--tokens", "64", "--context-size", "16", "--json", P("two.json"));
        Assert.True(exit == 0, err);
        var all = JsonNode.Parse(File.ReadAllText(P("two.json")))!.AsArray();
        Assert.Equal(2, all.Count);
        foreach (var node in all)
        {
            var json = node!.AsObject();
            Assert.Equal("feature_metrics", json.Last().Key);
            long tokens = json["token_stats"]!["total_tokens_eval_reconstruction"]!.GetValue<long>();
            var fm = json["feature_metrics"]!.AsObject();
            Assert.Equal(["feature_density", "consistent_activation_heuristic", "encoder_norm", "encoder_decoder_cosine_sim", "encoder_bias"],
                fm.Select(p => p.Key));
            Assert.All(fm, p => Assert.Equal(AnalysisFixture.DSae, p.Value!.AsArray().Count));
            Assert.All(Doubles(fm["encoder_norm"]!), v => Assert.Equal(1, v, 6));
            Assert.All(Doubles(fm["encoder_decoder_cosine_sim"]!), v => Assert.Equal(1, v, 6));
            Assert.All(Doubles(fm["encoder_bias"]!), v => Assert.Equal(0, v));
            var density = Doubles(fm["feature_density"]!);
            Assert.All(density, v => Assert.Equal(Math.Round(v * tokens), v * tokens, 6));
            Assert.Equal(json["sparsity"]!["l0"]!.GetValue<double>(), density.Sum(), 9);
            var cah = fm["consistent_activation_heuristic"]!.AsArray();
            for (int i = 0; i < AnalysisFixture.DSae; i++)
            {
                if (density[i] == 0) Assert.Null(cah[i]);
                else Assert.True(cah[i]!.GetValue<double>() >= 1, $"feature {i}: heuristic {cah[i]} below 1");
            }
            Assert.Contains(density, v => v > 0);
        }
    }
}
