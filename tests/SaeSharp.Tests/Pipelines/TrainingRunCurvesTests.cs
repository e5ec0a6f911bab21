using SaeSharp.IO;
using SaeSharp.Pipelines;
using SaeSharp.Training;
using SkiaSharp;
using static TorchSharp.torch;

namespace SaeSharp.Tests.Pipelines;

/// <summary><see cref="TrainingRun.Run"/> draws OUT/training_curves.png when a run stops (Ctrl-C, SIGTERM: the token
/// fires) as when it finishes, and a resumed run's picture shows the whole run.</summary>
public class TrainingRunCurvesTests : IDisposable
{
    private readonly string _dir = Directory.CreateTempSubdirectory("run-curves-").FullName;
    public void Dispose() => Directory.Delete(_dir, true);

    /// <summary>Cancels the run once a logged step reaches <paramref name="step"/>.</summary>
    private sealed class StopAt(CancellationTokenSource cts, long step) : IProgress<TrainingProgress>
    {
        public void Report(TrainingProgress p)
        {
            if (p.Step >= step) cts.Cancel();
        }
    }

    [Fact]
    public void A_stopped_run_draws_its_steps_so_far_and_the_resumed_run_draws_the_whole_run()
    {
        string data = Path.Combine(_dir, "t.safetensors").Replace("\\", "/"), outDir = Path.Combine(_dir, "run").Replace("\\", "/");
        SafeTensors.Save(data, new Dictionary<string, Tensor> { ["activations"] = randn(2000, 8, generator: new Generator(3)) });
        var s = TrainingSettings.FromJson($$"""
            {"activations": "{{data}}", "architecture": "topk", "k": 2, "d_sae": 16, "steps": 24, "batch_size": 32,
             "eval_rows": 64, "out": "{{outDir}}", "checkpoint_every": 8}
            """);
        using var cts = new CancellationTokenSource();
        TrainingRunResult stopped;
        using (var plan = TrainingPlan.ForActivations(s)) stopped = plan.Run(new StopAt(cts, 10), cts.Token);
        Assert.Equal(TrainingStatus.Cancelled, stopped.Status);
        Assert.Empty(stopped.Saes);
        var png = Path.Combine(outDir, TrainingCurves.FileName);
        Assert.Equal(png, stopped.CurvesFile);
        Assert.NotNull(SKBitmap.Decode(png));
        // A run of 24 steps logs every step (at least 100 reports a run).
        Assert.Equal(Enumerable.Range(1, 10).Select(i => (long)i), TrainLogFile.Read(stopped.LogFile!).Series("topk", "l0")!.Steps);

        File.Delete(png);
        TrainingRunResult resumed;
        using (var plan = TrainingPlan.ForActivations(s, resume: true)) resumed = plan.Run();
        Assert.Equal(TrainingStatus.Completed, resumed.Status);
        Assert.Equal(png, resumed.CurvesFile);
        Assert.NotNull(SKBitmap.Decode(png));
        // The resume continued from the checkpoint of step 10 (the stop's): the log, and the picture's lines, hold every
        // logged step of both parts once.
        var log = TrainLogFile.Read(resumed.LogFile!);
        Assert.Equal(Enumerable.Range(1, 24).Select(i => (long)i), log.Series("topk", "l0")!.Steps);
        var l0 = TrainingCurves.Panels(log).Single(p => p.Title.StartsWith("l0", StringComparison.Ordinal)).Series.Single();
        Assert.Equal(Enumerable.Range(1, 24).Select(i => i * 32.0), l0.X);
    }

    /// <summary>A run whose loss becomes NaN fails naming the step; the curves of the steps logged before it are drawn
    /// and the error names them.</summary>
    [Fact]
    public void A_run_whose_loss_becomes_nan_draws_the_steps_logged_before_and_names_the_picture()
    {
        var outDir = Path.Combine(_dir, "diverged");
        using var inner = new Tests.Training.InMemorySource(Tests.Training.TrainerTestKit.SparseData(256, 8, 12, 0.1, seed: 4));
        // Batches 0 and 1 initialise (normalisation, b_dec); the NaN batch is the sixth training step.
        using var source = new Tests.Training.NanAtBatchSource(inner, nanBatch: 7);
        var cfg = Tests.Training.TrainerTestKit.Config(20);
        cfg.LogEverySteps = 1;
        var slots = new[] { new SaeSlot("relu", Tests.Training.TrainerTestKit.Standard(8, 16)) };
        var e = Assert.Throws<SaeSharpException>(() => TrainingRun.Run(new TrainingRunOptions
            { OutDir = outDir, Trainer = cfg, Saes = slots, TrainSource = source }));
        var png = Path.Combine(outDir, TrainingCurves.FileName);
        Assert.Contains("is NaN or infinite", e.Message);
        Assert.EndsWith($" (training curves of the steps logged before it: {png})", e.Message);
        Assert.NotNull(SKBitmap.Decode(png));
        long failed = long.Parse(System.Text.RegularExpressions.Regex.Match(e.Message, @"training step (\d+) of").Groups[1].Value);
        var steps = TrainLogFile.Read(Path.Combine(outDir, TrainLogFile.FileName)).Series("relu", "l0")!.Steps;
        Assert.Equal(Enumerable.Range(1, (int)failed - 1).Select(i => (long)i), steps);
        foreach (var s in slots) s.Sae.Dispose();
    }
}
