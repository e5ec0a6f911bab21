using System.Text.Json.Nodes;
using SaeSharp.IO;
using SaeSharp.Synthetic;
using SaeSharp.Tests.Tokenizers;

namespace SaeSharp.Tests.Cli;

/// <summary><c>sae synth --from</c> on a SAELens SyntheticModel folder, end to end through train and eval.</summary>
public class SynthFromCommandTests : IDisposable
{
    private readonly string _dir = Directory.CreateTempSubdirectory("cli-synth-from-").FullName;
    public void Dispose() => Directory.Delete(_dir, true);

    private string P(params string[] parts) => Path.Combine([_dir, .. parts]);

    private static void Ok((int Exit, string Out, string Err) r) => Assert.True(r.Exit == 0, r.Err + r.Out);

    private static JsonNode Json(string path) => JsonNode.Parse(File.ReadAllText(path))!;

    [Fact]
    public void Synth_from_a_SAELens_model_then_train_and_eval_recover_its_features()
    {
        var model = TestPaths.Data("synthetic_model", "plain");
        Ok(CliRunner.Run("synth", "--from", model, "--out", P("data"), "--rows", "60000", "--eval-rows", "4000", "--seed", "1"));
        // The files sae synth always writes, with the model's vectors and probabilities as the ground truth.
        var features = SafeTensors.Load(P("data", "features.safetensors"));
        var weights = SafeTensors.Load(Path.Combine(model, SyntheticModel.WeightsFileName));
        try
        {
            Assert.True(features["features"].equal(weights["feature_vectors"]).all().item<bool>());
            Assert.True(features["frequencies"].equal(weights["firing_probabilities"]).all().item<bool>());
        }
        finally
        {
            foreach (var t in features.Values.Concat(weights.Values)) t.Dispose();
        }
        using (var f = SafeTensorsFile.Open(P("data", "train.safetensors")))
        {
            Assert.Equal(new long[] { 60000, 16 }, f.Info("activations").Shape);
            Assert.True(SparseFeatureActivations.IsIn(f));
        }

        Ok(CliRunner.Run("train", "--activations", P("data", "train.safetensors"), "--arch", "topk", "--k", "3", "--dict-size", "64",
            "--steps", "600", "--batch-size", "512", "--out", P("run"), "--ground-truth", P("data", "features.safetensors"), "--eval-rows", "4000"));
        Ok(CliRunner.Run("train", "--activations", P("data", "train.safetensors"), "--arch", "topk", "--k", "3", "--dict-size", "64",
            "--steps", "1", "--batch-size", "512", "--out", P("untrained"), "--ground-truth", P("data", "features.safetensors"), "--eval-rows", "4000"));
        Ok(CliRunner.Run("eval", "--sae", P("run"), "--activations", P("data", "eval.safetensors"), "--ground-truth", P("data", "features.safetensors"),
            "--json", P("eval.json")));
        var trained = Json(P("run", "metrics.json"));
        var untrained = Json(P("untrained", "metrics.json"));
        var eval = Json(P("eval.json"));
        foreach (var m in new[] { trained, eval })
            foreach (var key in new[] { "true_l0", "sae_l0", "dead_latents", "shrinkage", "mcc", "uniqueness",
                         "classification/precision", "classification/recall", "classification/f1_score", "classification/accuracy" })
                Assert.True(m[key] is JsonValue v && double.IsFinite(v.GetValue<double>()), key + ": " + m.ToJsonString());
        // 64 features in 16 dimensions: trained 600 steps, MCC ≈ 0.81; the same SAE after one step ≈ 0.57 (random
        // directions in 16 dimensions already match some features at |cos| ≈ 0.5).
        double mcc = eval["mcc"]!.GetValue<double>(), random = untrained["mcc"]!.GetValue<double>();
        Assert.True(mcc >= 0.75 && random <= 0.65 && mcc - random >= 0.15, $"mcc {mcc}, untrained {random}");
        Assert.True(eval["classification/f1_score"]!.GetValue<double>() > 2 * untrained["classification/f1_score"]!.GetValue<double>(), eval.ToJsonString());
        // true_l0 of the rows is SAELens's expected number of firing features, Σᵢ rateᵢ from its own 200,000 rows (2.82),
        // within 5 standard errors of a mean of 4000 rows (sd of the count ≈ 1.6).
        double expected = JsonNode.Parse(File.ReadAllText(Path.Combine(model, "stats.json")))!["firing_rate"]!.AsArray().Sum(v => v!.GetValue<double>());
        Assert.InRange(eval["true_l0"]!.GetValue<double>(), expected - 5 * 1.7 / Math.Sqrt(4000), expected + 5 * 1.7 / Math.Sqrt(4000));
    }

    [Fact]
    public void Synth_from_is_seeded_and_refuses_what_it_cannot_do()
    {
        var model = TestPaths.Data("synthetic_model", "hierarchy_rescale");
        Ok(CliRunner.Run("synth", "--from", model, "--out", P("a"), "--rows", "3000", "--eval-rows", "0", "--seed", "4"));
        Ok(CliRunner.Run("synth", "--from", Path.Combine(model, SyntheticModelConfig.FileName), "--out", P("b"), "--rows", "3000", "--eval-rows", "0", "--seed", "4"));
        Assert.Equal(File.ReadAllBytes(P("a", "train.safetensors")), File.ReadAllBytes(P("b", "train.safetensors")));
        Assert.False(File.Exists(P("a", "eval.safetensors")));

        var r = CliRunner.Run("synth", "--from", model, "--out", P("c"), "--d-in", "8");
        Assert.Equal(1, r.Exit);
        Assert.Contains("--d-in: not with --from", r.Err);

        r = CliRunner.Run("synth", "--from", P("nowhere"), "--out", P("d"));
        Assert.Equal(1, r.Exit);
        Assert.Contains("not found", r.Err);
    }

    /// <summary>A config without weights is generated as SAELens generates it: on the correlated model (orthogonalised
    /// vectors, copula) the rows equal those sampled from SAELens's saved model to float rounding, with the same firing
    /// features.</summary>
    [Fact]
    public void Synth_from_a_config_alone_generates_SAELens_model()
    {
        var model = TestPaths.Data("synthetic_model", "correlated");
        Directory.CreateDirectory(P("config-only"));
        File.Copy(Path.Combine(model, SyntheticModelConfig.FileName), P("config-only", SyntheticModelConfig.FileName));
        Ok(CliRunner.Run("synth", "--from", P("config-only"), "--out", P("generated"), "--rows", "3000", "--eval-rows", "0", "--seed", "4"));
        Ok(CliRunner.Run("synth", "--from", model, "--out", P("saved"), "--rows", "3000", "--eval-rows", "0", "--seed", "4"));
        var a = SafeTensors.Load(P("generated", "train.safetensors"));
        var b = SafeTensors.Load(P("saved", "train.safetensors"));
        try
        {
            Assert.True(a[SparseFeatureActivations.IndicesTensor].equal(b[SparseFeatureActivations.IndicesTensor]).all().item<bool>(), "same firing features");
            Assert.True(a[SparseFeatureActivations.IndptrTensor].equal(b[SparseFeatureActivations.IndptrTensor]).all().item<bool>(), "same firing features");
            using var d = a["activations"].sub(b["activations"]).abs().max();
            Assert.True(d.item<float>() < 1e-5, $"rows differ by up to {d.item<float>()}");
        }
        finally
        {
            foreach (var t in a.Values.Concat(b.Values)) t.Dispose();
        }
    }

    /// <summary><c>--save-model</c>: a model generated from a config alone is saved in SAELens's layout (the config as
    /// SAELens writes it), and sampling the saved folder gives the same rows as sampling the config with the same seed.</summary>
    [Fact]
    public void Synth_save_model_writes_a_SAELens_folder_that_samples_as_the_config()
    {
        var model = TestPaths.Data("synthetic_model", "hierarchy");
        Directory.CreateDirectory(P("config-only"));
        File.Copy(Path.Combine(model, SyntheticModelConfig.FileName), P("config-only", SyntheticModelConfig.FileName));
        // Only saving: no --out.
        var r = CliRunner.Run("synth", "--from", P("config-only"), "--save-model", P("saved"));
        Ok(r);
        Assert.Contains("model: ", r.Out);
        Assert.Equal(new[] { "hierarchy.json", "synthetic_model.safetensors", "synthetic_model_config.json" }.Order(StringComparer.Ordinal).ToArray(),
            Directory.GetFiles(P("saved")).Select(Path.GetFileName).Order(StringComparer.Ordinal).ToArray());
        Assert.Equal(File.ReadAllBytes(Path.Combine(model, SyntheticModelConfig.FileName)), File.ReadAllBytes(P("saved", SyntheticModelConfig.FileName)));
        Assert.Equal(File.ReadAllBytes(Path.Combine(model, SyntheticHierarchy.FileName)), File.ReadAllBytes(P("saved", SyntheticHierarchy.FileName)));
        Assert.Equal(new[] { "config-only", "saved" }, Directory.GetDirectories(_dir).Select(Path.GetFileName).Order(StringComparer.Ordinal).ToArray());
        // Saving and writing rows at once, then rows from the saved folder: the same bytes.
        Ok(CliRunner.Run("synth", "--from", P("config-only", SyntheticModelConfig.FileName), "--save-model", P("saved2"), "--out", P("a"),
            "--rows", "2000", "--eval-rows", "0", "--seed", "5"));
        Ok(CliRunner.Run("synth", "--from", P("saved2"), "--out", P("b"), "--rows", "2000", "--eval-rows", "0", "--seed", "5"));
        Assert.Equal(File.ReadAllBytes(P("a", "train.safetensors")), File.ReadAllBytes(P("b", "train.safetensors")));
        Assert.Equal(File.ReadAllBytes(P("saved", SyntheticModel.WeightsFileName)), File.ReadAllBytes(P("saved2", SyntheticModel.WeightsFileName)));
    }

    [Fact]
    public void Synth_save_model_refuses_what_it_should()
    {
        var model = TestPaths.Data("synthetic_model", "plain");
        Directory.CreateDirectory(P("busy"));
        File.WriteAllText(P("busy", "notes.txt"), "mine");
        var r = CliRunner.Run("synth", "--from", model, "--save-model", P("busy"));
        Assert.Equal(1, r.Exit);
        Assert.Contains("not empty (use --force", r.Err);
        Assert.Equal(["notes.txt"], Directory.GetFiles(P("busy")).Select(Path.GetFileName));
        Ok(CliRunner.Run("synth", "--from", model, "--save-model", P("busy"), "--force"));
        Assert.True(File.Exists(P("busy", SyntheticModel.WeightsFileName)));
        Assert.Equal("mine", File.ReadAllText(P("busy", "notes.txt")));

        // Saving over the model being read is refused even with --force.
        Directory.CreateDirectory(P("copy"));
        foreach (var f in Directory.GetFiles(model)) File.Copy(f, P("copy", Path.GetFileName(f)));
        r = CliRunner.Run("synth", "--from", P("copy"), "--save-model", P("copy"), "--force");
        Assert.Equal(1, r.Exit);
        Assert.Contains("which this command reads", r.Err);

        r = CliRunner.Run("synth", "--save-model", P("x"), "--out", P("y"));
        Assert.Equal(1, r.Exit);
        Assert.Contains("--save-model needs --from", r.Err);
        r = CliRunner.Run("synth", "--from", model);
        Assert.Equal(1, r.Exit);
        Assert.Contains("--out is required", r.Err);
        r = CliRunner.Run("synth");
        Assert.Equal(1, r.Exit);
        Assert.Contains("--out is required", r.Err);
        r = CliRunner.Run("synth", "--from", model, "--save-model", P("z"), "--rows", "10");
        Assert.Equal(1, r.Exit);
        Assert.Contains("--rows: not without --out", r.Err);
        Assert.False(Directory.Exists(P("z")));
    }

    [Fact]
    public void Synth_out_that_is_a_file_and_a_negative_noise_name_the_flag_before_writing()
    {
        // --out onto an existing file was .NET's "The file ... already exists."; with --from the model was loaded first.
        File.WriteAllText(P("data.txt"), "mine");
        foreach (var args in new[] { new[] { "synth", "--out", P("data.txt"), "--rows", "10" },
                                     ["synth", "--from", TestPaths.Data("synthetic_model", "plain"), "--out", P("data.txt"), "--rows", "10"] })
        {
            var r = CliRunner.Run(args);
            Assert.Equal(1, r.Exit);
            Assert.Equal($"error: --out {P("data.txt")}: is a file, not a folder; give a folder path (this command writes several files)", r.Err.Trim());
            Assert.Equal("", r.Out);
        }
        Assert.Equal("mine", File.ReadAllText(P("data.txt")));
        // --noise below 0 names the flag (it was "synthetic data: noise_std must be ≥ 0").
        var noise = CliRunner.Run("synth", "--out", P("n"), "--noise", "-1");
        Assert.Equal(1, noise.Exit);
        Assert.StartsWith("error: --noise -1: expected 0 or more", noise.Err.Trim());
        Assert.False(Directory.Exists(P("n")));
    }
}
