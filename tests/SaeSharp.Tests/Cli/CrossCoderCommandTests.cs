using System.Text.Json.Nodes;
using SaeSharp.Interop;
using SaeSharp.IO;
using SaeSharp.Tests.Tokenizers;
using static TorchSharp.torch;

namespace SaeSharp.Tests.Cli;

/// <summary><c>sae train --arch crosscoder|batchtopk_crosscoder</c>, <c>sae eval</c> and <c>sae info</c> on a crosscoder.</summary>
public sealed class CrossCoderCommandTests : IDisposable
{
    private readonly string _dir = TestPaths.TempDir();

    public void Dispose()
    {
        try { Directory.Delete(_dir, recursive: true); } catch (IOException) { /* best effort */ }
    }

    /// <summary>Rows whose two layers share 12 sparse features (each feature a direction in both layers).</summary>
    private string WriteLayers()
    {
        using var scope = NewDisposeScope();
        using var g = new Generator(1);
        var dirs = randn([12, 2, 8], generator: g);
        dirs = dirs / linalg.vector_norm(dirs, 2, [-1], keepdim: true);
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
}
