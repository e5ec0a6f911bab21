using System.Text.Json.Nodes;
using SaeSharp.Evaluation;
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
    /// (rows have no prompts). Per row 2, 1, 0 and 1 features fire: l0_distribution holds the spread of 0, 1, 1, 2 (numpy's
    /// linear quantiles: p25 at index 0.75 → 0.75; std √0.5) and the L0 histogram PNG is written beside the JSON.</summary>
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

        var d = json["l0_distribution"]!.AsObject();
        Assert.Equal(["std", "min", "p10", "p25", "median", "p75", "p90", "max"], d.Select(p => p.Key));
        double[] expected = [Math.Sqrt(0.5), 0, 0.3, 0.75, 1, 1.25, 1.7, 2];
        for (int i = 0; i < expected.Length; i++) Assert.Equal(expected[i], d[i]!.GetValue<double>(), 12);
        Assert.Contains($"per-token L0 histogram: {P("eval_l0.png")}", output);
        using var png = SkiaSharp.SKBitmap.Decode(P("eval_l0.png"));
        Assert.Equal((L0Histogram.Width, L0Histogram.Height), (png.Width, png.Height));
        // No prompts, no heuristic: no density vs heuristic scatter.
        Assert.False(File.Exists(P("eval_density_vs_cah.png")));
    }

    /// <summary>Inside the model, two SAEs in one pass (<see cref="AnalysisFixture"/>'s embedding SAE twice: unit encoder
    /// columns, W_dec = W_encᵀ, b_enc 0): an array of two objects, each with the five lists of d_sae = 12 values; norms
    /// and cosines 1, biases 0; every density a whole number of the counted tokens, summing to l0 (each firing token
    /// counted once per feature); the heuristic null exactly where the density is 0, else at least 1.</summary>
    /// <summary><c>sae eval --model</c> and <c>sae features</c> without <c>--dataset</c> read the dataset the SAE's cfg.json
    /// records (metadata dataset_path): the same numbers as with that <c>--dataset</c> given; a <c>--dataset</c> given wins over a
    /// recorded path that does not exist; an SAE recording none is the error naming both options.</summary>
    [Fact]
    public void Eval_and_features_on_a_model_fall_back_to_the_sae_recorded_dataset()
    {
        using var a = new AnalysisFixture();
        string Recording(string name, string? dataset)
        {
            string dir = P(name);
            Directory.CreateDirectory(dir);
            foreach (var f in Directory.GetFiles(a.SaeDir)) File.Copy(f, Path.Combine(dir, Path.GetFileName(f)));
            var cfg = JsonNode.Parse(File.ReadAllText(Path.Combine(dir, "cfg.json")))!;
            cfg["metadata"]!["dataset_path"] = dataset;
            File.WriteAllText(Path.Combine(dir, "cfg.json"), cfg.ToJsonString());
            return dir;
        }
        string recorded = Recording("recorded", a.DataPath), missing = Recording("missing", P("gone.txt")), none = Recording("none", null);
        string[] common = ["--model", a.ModelDir, "--tokens", "64", "--context-size", "16"];

        var (exit, _, err) = CliRunner.Run(["eval", "--sae", recorded, .. common, "--json", P("given.json"), "--dataset", a.DataPath]);
        Assert.True(exit == 0, err);
        (exit, _, err) = CliRunner.Run(["eval", "--sae", recorded, .. common, "--json", P("fallback.json")]);
        Assert.True(exit == 0, err);
        Assert.Equal(JsonNode.Parse(File.ReadAllText(P("given.json")))!["sparsity"]!.ToJsonString(),
            JsonNode.Parse(File.ReadAllText(P("fallback.json")))!["sparsity"]!.ToJsonString());
        Assert.Equal(JsonNode.Parse(File.ReadAllText(P("given.json")))!["model_performance_preservation"]!.ToJsonString(),
            JsonNode.Parse(File.ReadAllText(P("fallback.json")))!["model_performance_preservation"]!.ToJsonString());

        (exit, _, err) = CliRunner.Run(["eval", "--sae", missing, .. common, "--dataset", a.DataPath]);
        Assert.True(exit == 0, err);
        (exit, _, err) = CliRunner.Run(["eval", "--sae", missing, .. common]);
        Assert.NotEqual(0, exit);
        Assert.Contains($"dataset_path {P("gone.txt")}: no such file or folder", err.ReplaceLineEndings(""));
        (exit, _, err) = CliRunner.Run(["eval", "--sae", none, .. common]);
        Assert.NotEqual(0, exit);
        Assert.Contains("give --dataset with --model (the SAE's cfg.json records no dataset_path)", err.ReplaceLineEndings(" "));

        (exit, _, err) = CliRunner.Run("features", "--sae", recorded, "--model", a.ModelDir, "--tokens", "64", "--context-size", "16", "--out", P("f-fallback"));
        Assert.True(exit == 0, err);
        (exit, _, err) = CliRunner.Run("features", "--sae", recorded, "--model", a.ModelDir, "--tokens", "64", "--context-size", "16", "--out", P("f-given"),
            "--dataset", a.DataPath);
        Assert.True(exit == 0, err);
        Assert.Equal(File.ReadAllText(Path.Combine(P("f-given"), "features.jsonl")), File.ReadAllText(Path.Combine(P("f-fallback"), "features.jsonl")));
        (exit, _, err) = CliRunner.Run("features", "--sae", none, "--model", a.ModelDir, "--out", P("f-none"));
        Assert.NotEqual(0, exit);
        Assert.Contains("give --dataset with --model", err);
        Assert.False(Directory.Exists(P("f-none")));
    }

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
