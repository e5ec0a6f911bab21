using System.Text.Json.Nodes;
using SaeSharp.Interop;
using SaeSharp.IO;
using static TorchSharp.torch;

namespace SaeSharp.Tests.Cli;

/// <summary><c>sae train --arch crosscoder|batchtopk_crosscoder</c>, <c>sae eval</c> and <c>sae info</c> on a crosscoder.</summary>
public sealed class CrossCoderCommandTests : TempDirTestBase
{
    /// <summary>Rows whose two layers share 12 sparse features (each feature a direction in both layers).</summary>
    private string WriteLayers()
    {
        using var scope = NewDisposeScope();
        using var g = new Generator(1);
        var dirs = randn([12, 2, 8], generator: g);
        dirs = dirs / TorchScalars.VectorNorm(dirs, 2, [-1], keepdim: true);
        var coef = rand([3000, 12], generator: g).lt(0.1).to(ScalarType.Float32) * (rand([3000, 12], generator: g) + 0.5);
        var x = einsum("nf,fld->nld", coef, dirs);
        var p0 = Path.Combine(_dir, "l0.npy");
        Npy.Save(p0, x.select(1, 0).contiguous());
        Npy.Save(Path.Combine(_dir, "l1.npy"), x.select(1, 1).contiguous());
        return $"{p0},{Path.Combine(_dir, "l1.npy")}";
    }

    [Fact]
    public void TrainCheckpointsLogsAndResumesToTheSameWeights()
    {
        var acts = WriteLayers();
        var outDir = Path.Combine(_dir, "cc");
        string[] args = ["train", "--arch", "batchtopk_crosscoder", "--activations", acts, "--k", "2", "--d-sae", "32", "--steps", "8",
            "--batch-size", "128", "--checkpoint-every", "3", "--out", outDir];
        var (exit, stdout, err) = CliRunner.Run(args);
        Assert.True(exit == 0, err);
        // Checkpoints after steps 3 and 6 and at the end; the newest two are kept.
        Assert.Equal(["step_000000006", "step_000000008"], Directory.GetDirectories(Path.Combine(outDir, "checkpoints")).Select(Path.GetFileName).Order());
        Assert.Equal(Enumerable.Range(1, 8).Select(i => (long)i),
            SaeSharp.Training.TrainLogFile.Read(Path.Combine(outDir, "train_log.jsonl")).Series("crosscoder", "losses/overall_loss")!.Steps);
        Assert.True(File.Exists(Path.Combine(outDir, "training_curves.png")), stdout);
        var first = SafeTensors.Load(Path.Combine(outDir, CrossCoderFormat.WeightsFile));

        (exit, _, err) = CliRunner.Run(args);
        Assert.NotEqual(0, exit);
        Assert.Contains("continue its run with --resume, or give --force", err);

        // Resume from step 6 (as after a crash before step 8's checkpoint): the same weights as the run straight through.
        Directory.Delete(Path.Combine(outDir, "checkpoints", "step_000000008"), recursive: true);
        (exit, stdout, err) = CliRunner.Run([.. args, "--resume"]);
        Assert.True(exit == 0, err);
        Assert.Equal(Enumerable.Range(1, 8).Select(i => (long)i),
            SaeSharp.Training.TrainLogFile.Read(Path.Combine(outDir, "train_log.jsonl")).Series("crosscoder", "losses/overall_loss")!.Steps);
        var second = SafeTensors.Load(Path.Combine(outDir, CrossCoderFormat.WeightsFile));
        Assert.Equal(first.Keys.Order(), second.Keys.Order());
        foreach (var (key, t) in first)
            Assert.True(t.eq(second[key]).all().item<bool>(), $"{key} differs after --resume");
        foreach (var t in first.Values.Concat(second.Values)) t.Dispose();
    }

    [Fact]
    public void TrainsEvaluatesAndDescribesABatchTopKCrossCoder()
    {
        var acts = WriteLayers();
        var outDir = Path.Combine(_dir, "cc");
        var (exit, stdout, err) = CliRunner.Run("train", "--arch", "batchtopk_crosscoder", "--activations", acts, "--k", "2", "--d-sae", "32",
            "--steps", "300", "--batch-size", "128", "--out", outDir, "--hooks", "blocks.0.hook_resid_post,blocks.1.hook_resid_post");
        Assert.True(exit == 0, err);
        using (var cc = CrossCoderFormat.Load(outDir, out var sources))
        {
            Assert.Equal(2, cc.Cfg.K);
            Assert.Equal(["blocks.0.hook_resid_post", "blocks.1.hook_resid_post"], sources.HookNames);
        }
        var metrics = JsonNode.Parse(File.ReadAllText(Path.Combine(outDir, "metrics.json")))!;
        Assert.Equal(2, metrics["layers"]!.AsArray().Count);
        Assert.True(metrics["explained_variance"]!.GetValue<double>() > 0.5, stdout);

        (exit, stdout, err) = CliRunner.Run("eval", "--sae", outDir, "--activations", acts);
        Assert.True(exit == 0, err);
        Assert.Contains("slot 1 (blocks.1.hook_resid_post) fvu", stdout);
        (exit, stdout, err) = CliRunner.Run("info", outDir);
        Assert.True(exit == 0, err);
        Assert.Contains("BatchTopKCrossCoder", stdout);

        // Bad input named: a model flag, a k for the L1 crosscoder, activations of the wrong layer count.
        (exit, _, err) = CliRunner.Run("train", "--arch", "crosscoder", "--activations", acts, "--out", Path.Combine(_dir, "x"), "--model", "builtin");
        Assert.NotEqual(0, exit);
        Assert.Contains("--model", err);
        (exit, _, err) = CliRunner.Run("train", "--arch", "crosscoder", "--activations", acts, "--out", Path.Combine(_dir, "y"), "--k", "3");
        Assert.Contains("--k is for --arch batchtopk_crosscoder", err);
        var three = $"{acts},{acts.Split(',')[0]}";
        (exit, _, err) = CliRunner.Run("eval", "--sae", outDir, "--activations", three);
        Assert.NotEqual(0, exit);
        Assert.Contains("num_layers 2", err);
    }

    [Fact]
    public void TrainsWithKAnnealingAndTheNormalizerAndResumes()
    {
        var acts = WriteLayers();
        var outDir = Path.Combine(_dir, "cc");
        string[] args = ["train", "--arch", "batchtopk_crosscoder", "--activations", acts, "--k", "2", "--k-max", "6", "--k-annealing-steps", "5",
            "--activation-normalizer", "--target-rms", "2", "--d-sae", "16", "--steps", "9", "--batch-size", "64", "--checkpoint-every", "4", "--out", outDir];
        var (exit, stdout, err) = CliRunner.Run(args);
        Assert.True(exit == 0, err);
        var first = SafeTensors.Load(Path.Combine(outDir, CrossCoderFormat.WeightsFile));
        using (var cc = CrossCoderFormat.Load(outDir))
        {
            Assert.Equal(2, cc.KBuffer!.item<int>()); // annealed from 6 down to k
            Assert.True(cc.HasActivationNormalizer);
            Assert.Equal(2.0, cc.Cfg.TargetRms);
            // The statistics of the training rows: the first 2700 (the last 300, a tenth, are held out for metrics.json).
            using var scope = NewDisposeScope();
            var x = stack(acts.Split(',').Select(p => Npy.Load(p).narrow(0, 0, 2700)).ToArray(), 1);
            Assert.True(first["activation_mean"].allclose(x.mean([0]), rtol: 1e-4, atol: 1e-5), "activation_mean");
            Assert.True(first["activation_std"].allclose(x.std(0, unbiased: true), rtol: 1e-4, atol: 1e-5), "activation_std");
        }
        var config = JsonNode.Parse(File.ReadAllText(Path.Combine(outDir, "config.json")))!;
        Assert.Equal(2, config["k"]!.GetValue<int>());
        Assert.Equal(2.0, config["target_rms"]!.GetValue<double>());

        // Resumed from step 8: the same weights as the run straight through (k annealing and the statistics come back).
        Directory.Delete(Path.Combine(outDir, "checkpoints", "step_000000009"), recursive: true);
        (exit, _, err) = CliRunner.Run([.. args, "--resume"]);
        Assert.True(exit == 0, err);
        var second = SafeTensors.Load(Path.Combine(outDir, CrossCoderFormat.WeightsFile));
        foreach (var (key, t) in first)
            Assert.True(t.eq(second[key]).all().item<bool>(), $"{key} differs after --resume");
        // Resuming with other annealing is refused, naming the options.
        (exit, _, err) = CliRunner.Run([.. args.Select(a => a == "6" ? "5" : a), "--resume"]);
        Assert.NotEqual(0, exit);
        Assert.Contains("KMax", err);
        foreach (var t in first.Values.Concat(second.Values)) t.Dispose();
    }

    [Fact]
    public void TrainsADecoupledCrossCoderOnASubsetOfSlotsAndRefusesMisplacedFlags()
    {
        var acts = WriteLayers();
        var outDir = Path.Combine(_dir, "dec");
        var (exit, _, err) = CliRunner.Run("train", "--arch", "batchtopk_crosscoder", "--activations", acts, "--k", "2", "--d-sae", "16", "--steps", "6",
            "--batch-size", "64", "--code-normalization", "decoupled", "--encoder-layers", "1", "--out", outDir);
        Assert.True(exit == 0, err);
        using (var cc = CrossCoderFormat.Load(outDir))
        {
            Assert.True(cc.DecoupledCodes);
            Assert.Equal(new[] { 1 }, cc.Cfg.EncoderLayers!);
            Assert.Equal([2L], cc.Threshold!.shape);
            Assert.Equal([1L, 8, 16], cc.Encoder.Weight.shape);
        }
        var config = JsonNode.Parse(File.ReadAllText(Path.Combine(outDir, "config.json")))!;
        Assert.Equal("DECOUPLED", config["code_normalization"]!.GetValue<string>());
        Assert.Equal("[1]", config["encoder_layers"]!.ToJsonString());
        (exit, var info, err) = CliRunner.Run("info", outDir);
        Assert.True(exit == 0, err);
        Assert.Contains("DECOUPLED", info);
        Assert.Matches(@"encoder_layers\s+1", info);

        (exit, _, err) = CliRunner.Run("train", "--arch", "crosscoder", "--activations", acts, "--out", Path.Combine(_dir, "a"), "--k-max", "4");
        Assert.NotEqual(0, exit);
        Assert.Contains("--k-max and --k-annealing-steps (k annealing) are for --arch batchtopk_crosscoder", err);
        (exit, _, err) = CliRunner.Run("train", "--arch", "crosscoder", "--activations", acts, "--out", Path.Combine(_dir, "b"), "--target-rms", "2");
        Assert.Contains("give --activation-normalizer too", err);
        (exit, _, err) = CliRunner.Run("train", "--arch", "crosscoder", "--activations", acts, "--out", Path.Combine(_dir, "c"), "--encoder-layers", "0,5");
        Assert.Contains("encoder_layers [0, 5]", err);
        (exit, _, err) = CliRunner.Run("train", "--arch", "batchtopk_crosscoder", "--k", "2", "--activations", acts, "--out", Path.Combine(_dir, "d"),
            "--code-normalization", "DECOUPLED", "--activation-normalizer");
        Assert.Contains("DECOUPLED with an activation normaliser", err);
        (exit, _, err) = CliRunner.Run("train", "--arch", "topk", "--k", "2", "--activations", acts.Split(',')[0], "--out", Path.Combine(_dir, "e"), "--k-max", "4");
        Assert.Contains("--k-max", err);
    }

    [Fact]
    public void EvalRefusesCachesInAnotherOrderThanTheSlotsBeforeWritingAnything()
    {
        using var tokens = tensor(new long[] { 5, 6, 7, 8, 9, 10 });
        using var rows = randn(6, 4);
        string l0 = Path.Combine(_dir, "l0"), l1 = Path.Combine(_dir, "l1"), ccDir = Path.Combine(_dir, "cc");
        SaeSharp.Tests.Activations.CrossCoderActivationsTests.WriteCache(l0, "builtin", "blocks.0.hook_resid_post", rows, tokens);
        SaeSharp.Tests.Activations.CrossCoderActivationsTests.WriteCache(l1, "builtin", "blocks.1.hook_resid_post", rows, tokens);
        using (var cc = new SaeSharp.Saes.CrossCoder(new SaeSharp.Saes.CrossCoderConfig { ActivationDim = 4, DictSize = 8, NumLayers = 2 }))
            CrossCoderFormat.Save(cc, ccDir, new CrossCoderSources { HookNames = ["blocks.0.hook_resid_post", "blocks.1.hook_resid_post"], ModelNames = ["builtin"] });
        var json = Path.Combine(_dir, "m.json");
        var (exit, stdout, err) = CliRunner.Run("eval", "--sae", ccDir, "--activations", $"{l0},{l1}");
        Assert.True(exit == 0, err);
        Assert.Contains("slot 1 (blocks.1.hook_resid_post) fvu", stdout);
        (exit, stdout, err) = CliRunner.Run("eval", "--sae", ccDir, "--activations", $"{l1},{l0}", "--json", json);
        Assert.NotEqual(0, exit);
        Assert.Contains("slot 0: the activations are of hook 'blocks.1.hook_resid_post'", err);
        Assert.Contains("reads 'blocks.0.hook_resid_post' there", err);
        Assert.Equal("", stdout);
        Assert.False(File.Exists(json));
        Assert.False(File.Exists(Path.Combine(_dir, "m_relative_decoder_norm.png")));
    }
}
