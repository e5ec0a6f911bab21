using System.Text.Json.Nodes;
using SaeSharp.Interop;
using SaeSharp.IO;
using SaeSharp.Pipelines;
using SaeSharp.Saes;
using SaeSharp.Tests.Cli;
using SaeSharp.Training;
using static TorchSharp.torch;

namespace SaeSharp.Tests.Training;

/// <summary>Training SAELens 6.37's matching_pursuit: its runner-config form, the recipe's settings, the metrics in the
/// log, the saved SAE, resume, and the command line on the built-in model (train → eval → features).</summary>
public class MatchingPursuitTrainingTests : IDisposable
{
    private readonly string _dir = Directory.CreateTempSubdirectory("mp-train-").FullName;
    public void Dispose() => Directory.Delete(_dir, true);
    private string P(params string[] parts) => Path.Combine([_dir, .. parts]).Replace("\\", "/");
    private static void Ok((int Exit, string Out, string Err) r) => Assert.True(r.Exit == 0, r.Err + r.Out);

    private string Activations()
    {
        string acts = P("acts.safetensors");
        // Rows that are sparse positive combinations of 32 directions in 16 dimensions.
        var g = new Generator(7);
        var dirs = randn(32, 16, generator: g);
        var coef = rand(3000, 32, generator: g).sub(0.85).clamp_min(0) * 4;
        SafeTensors.Save(acts, new Dictionary<string, Tensor> { ["activations"] = coef.matmul(dirs) + randn(3000, 16, generator: g) * 0.05 });
        return acts;
    }

    private string RunnerConfig(string acts, string outDir, long steps, string extra = "") => $$"""
        {"activations": "{{acts}}", "out": "{{outDir}}", "total_training_steps": {{steps}}, "train_batch_size_tokens": 128,
         "eval_rows": 200, "checkpoint_every": 5,
         "sae": {"architecture": "matching_pursuit", "d_sae": 48, "residual_threshold": 0.5, "max_iterations": 6,
                 "stop_on_duplicate_support": true, "decoder_init_norm": 1.0, "apply_b_dec_to_input": true{{extra}} } }
        """;

    [Fact]
    public void SaeLensRunnerConfigTrainsSavesWithItsFieldsLogsItsMetricsAndResumes()
    {
        string acts = Activations();
        var s = TrainingSettings.FromJson(RunnerConfig(acts, P("run"), 10), "runner.json");
        Assert.Equal(["matching_pursuit"], s.Recipes);
        using (var plan = TrainingPlan.ForActivations(s))
        {
            var slot = Assert.Single(plan.Options.Saes);
            var sae = Assert.IsType<MatchingPursuitSae>(slot.Sae);
            Assert.Equal(0.5, sae.ResidualThreshold);
            Assert.Equal(6, sae.MaxIterations);
            Assert.Equal(1.0, slot.Config!.DecoderInitNorm);
            Assert.Equal(0, slot.Config!.L1WarmUpSteps);
            Assert.Equal("zeros", slot.Config!.BDecInitMethod);
            plan.Run();
        }
        var cfg = JsonNode.Parse(File.ReadAllText(P("run", "cfg.json")))!;
        Assert.Equal("matching_pursuit", (string?)cfg["architecture"]);
        Assert.Equal(6, (int)cfg["max_iterations"]!);
        Assert.True((bool)cfg["stop_on_duplicate_support"]!);
        Assert.Equal("none", (string?)cfg["normalize_activations"]);
        // The run normalised its inputs (E‖x‖ = √d_in); the fold divides the threshold by the same scale as b_dec.
        Assert.True((double)cfg["residual_threshold"]! is > 0 and not 0.5, cfg.ToJsonString());
        using (var w = SafeTensorsFile.Open(P("run", SaeLensFormat.WeightsFile)))
            Assert.Equal(["W_dec", "b_dec"], w.Names.Order(StringComparer.Ordinal));
        var lines = File.ReadAllLines(P("run", "train_log.jsonl")).Select(l => JsonNode.Parse(l)!).Where(l => l["losses"] is not null).ToList();
        Assert.NotEmpty(lines);
        foreach (var l in lines)
        {
            Assert.Equal(["mse_loss", "overall_loss"], l["losses"]!.AsObject().Select(kv => kv.Key).Order(StringComparer.Ordinal));
            var m = l["metrics"]!.AsObject();
            Assert.InRange((double)m["max_l0"]!, 1, 6);
            Assert.InRange((double)m["min_l0"]!, 0, (double)m["max_l0"]!);
            Assert.True((double)m["residual_norm"]! > 0);
            Assert.InRange((double)m["residual_threshold_converged_portion"]!, 0, 1);
        }
        // Reloads and encodes: at most max_iterations latents per row.
        using (var sae = SaeLoader.Load(P("run")))
        using (NewDisposeScope())
        using (no_grad())
        {
            var x = SafeTensors.Load(acts)["activations"].narrow(0, 0, 64);
            var f = sae.Encode(x);
            Assert.True(f.ne(0).sum(1).max().item<long>() <= 6);
            Assert.True(f.ge(0).all().item<bool>());
        }

        // Resume: a run stopped at step 5 and resumed to 10 ends with the same weights as the uninterrupted run.
        var first = TrainingSettings.FromJson(RunnerConfig(acts, P("resumed"), 10), "runner.json");
        using (var plan = TrainingPlan.ForActivations(first))
        using (var cancel = new CancellationTokenSource())
            Assert.Equal(TrainingStatus.Cancelled, plan.Run(new CancelAt(5, cancel), cancel.Token).Status);
        using (var plan = TrainingPlan.ForActivations(TrainingSettings.FromJson(RunnerConfig(acts, P("resumed"), 10), "runner.json"), resume: true))
            plan.Run();
        using (NewDisposeScope())
        {
            var a = SafeTensors.Load(P("run", SaeLensFormat.WeightsFile));
            var b = SafeTensors.Load(P("resumed", SaeLensFormat.WeightsFile));
            foreach (var k in a.Keys) Assert.True(a[k].allclose(b[k], 1e-5, 1e-6), k);
        }
        // A resume that changes a matching_pursuit field is refused naming it.
        var changed = TrainingSettings.FromJson(RunnerConfig(acts, P("resumed"), 12).Replace("\"max_iterations\": 6", "\"max_iterations\": 4"), "runner.json");
        var e = Assert.Throws<SaeSharpException>(() => TrainingPlan.ForActivations(changed, resume: true));
        Assert.Contains("max_iterations 4", e.Message);
    }

    /// <summary>Cancels the run once a report reaches <paramref name="step"/> (synchronously, unlike Progress&lt;T&gt;).</summary>
    private sealed class CancelAt(long step, CancellationTokenSource cancel) : IProgress<TrainingProgress>
    {
        public void Report(TrainingProgress value)
        {
            if (value.Step >= step) cancel.Cancel();
        }
    }

    [Fact]
    public void DecoderInitNormIsForcedToOneWithANoteAndUnusedOrWrongFieldsAreRefused()
    {
        string acts = Activations();
        var s = TrainingSettings.FromJson(RunnerConfig(acts, P("o"), 4).Replace("\"decoder_init_norm\": 1.0", "\"decoder_init_norm\": 0.1"), "runner.json");
        using (var plan = TrainingPlan.ForActivations(s))
        {
            Assert.Equal(1.0, Assert.Single(plan.Options.Saes).Config!.DecoderInitNorm);
            Assert.Contains(plan.Notes, n => n.Contains("decoder_init_norm 0.1", StringComparison.Ordinal) && n.Contains("matching_pursuit", StringComparison.Ordinal));
        }
        var topk = TrainingSettings.FromJson($$"""{"activations": "{{acts}}", "architecture": "topk", "k": 2, "max_iterations": 3, "out": "{{P("t")}}"}""", "runner.json");
        var e = Assert.Throws<SaeSharpException>(() => TrainingPlan.ForActivations(topk));
        Assert.Contains("'max_iterations' applies to matching_pursuit", e.Message);
        var k = TrainingSettings.FromJson($$"""{"activations": "{{acts}}", "architecture": "matching_pursuit", "k": 2, "out": "{{P("k")}}"}""", "runner.json");
        e = Assert.Throws<SaeSharpException>(() => TrainingPlan.ForActivations(k));
        Assert.Contains("--k 2 applies to topk", e.Message);
        Assert.Contains("max_iterations", e.Message);
        var l0 = TrainingSettings.FromJson($$"""{"activations": "{{acts}}", "architecture": "matching_pursuit", "target_l0": 4, "out": "{{P("l")}}"}""", "runner.json");
        e = Assert.Throws<SaeSharpException>(() => TrainingPlan.ForActivations(l0));
        Assert.Contains("'matching_pursuit' sets its L0 with max_iterations", e.Message);
        // No λ: an l1_coefficient (--l1) would change nothing, so it is refused rather than ignored.
        var l1 = TrainingSettings.FromJson($$"""{"activations": "{{acts}}", "architecture": "matching_pursuit", "l1_coefficient": 0.5, "out": "{{P("l1")}}"}""", "runner.json");
        e = Assert.Throws<SaeSharpException>(() => TrainingPlan.ForActivations(l1));
        Assert.Contains("--l1 0.5 (l1_coefficient) applies to relu", e.Message);
        Assert.Contains("matching_pursuit sets its sparsity with max_iterations", e.Message);
        Assert.False(Directory.Exists(P("l1")));
    }

    [Fact]
    public void CommandLineTrainsOnTheBuiltInModelThenEvaluatesAnalysesAndIntervenes()
    {
        string corpus = P("stories.jsonl");
        Ok(CliRunner.Run("corpus", "--out", corpus, "--docs", "60", "--seed", "3"));
        File.WriteAllText(P("mp.json"), """{"max_iterations": 8, "residual_threshold": 0.0}""");
        Ok(CliRunner.Run("train", "--model", "builtin", "--hook", "blocks.1.hook_resid_post", "--dataset", corpus, "--arch", "matching_pursuit",
            "--config", P("mp.json"), "--epochs", "0", "--dict-size", "256", "--steps", "6", "--batch-size", "256", "--context-size", "32", "--eval-rows", "256", "--out", P("run")));
        var cfg = JsonNode.Parse(File.ReadAllText(P("run", "cfg.json")))!;
        Assert.Equal("matching_pursuit", (string?)cfg["architecture"]);
        Assert.Equal(8, (int)cfg["max_iterations"]!);
        Assert.Equal("blocks.1.hook_resid_post", (string?)cfg["metadata"]!["hook_name"]);
        var metrics = JsonNode.Parse(File.ReadAllText(P("run", "metrics.json")))!;
        Assert.InRange((double)metrics["l0"]!, 0.5, 8);
        Ok(CliRunner.Run("eval", "--sae", P("run"), "--model", "builtin", "--dataset", corpus, "--tokens", "256", "--context-size", "32", "--json", P("eval.json")));
        var eval = JsonNode.Parse(File.ReadAllText(P("eval.json")))!.ToJsonString();
        Assert.Contains("ce_loss_score", eval);
        Ok(CliRunner.Run("features", "--sae", P("run"), "--model", "builtin", "--dataset", corpus, "--tokens", "512", "--context-size", "32",
            "--out", P("features")));
        Assert.NotEmpty(Directory.GetFiles(P("features")));
        // Interventions through the splice: steering, ablation and attribution (its features and error node).
        Ok(CliRunner.Run("steer", "--model", "builtin", "--sae", P("run"), "--feature", "3", "--scale", "8", "--prompt", "Once there was a girl named Anna .",
            "--max-new-tokens", "4", "--runs", "1"));
        var ablate = CliRunner.Run("ablate", "--model", "builtin", "--sae", P("run"), "--features", "3,5", "--prompt", "Once there was a girl named Anna .");
        Ok(ablate);
        Assert.Contains("CE loss ablated", ablate.Out);
        var attribute = CliRunner.Run("attribute", "--model", "builtin", "--sae", P("run"), "--metric", "loss", "--prompt", "Once there was a girl named Anna .");
        Ok(attribute);
        Assert.Contains("error node", attribute.Out);
    }
}
