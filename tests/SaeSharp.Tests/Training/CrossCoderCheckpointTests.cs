using SaeSharp.Activations;
using SaeSharp.Saes;
using SaeSharp.Tests.Activations;
using SaeSharp.Tests.Models;
using SaeSharp.Training;
using static TorchSharp.torch;

namespace SaeSharp.Tests.Training;

/// <summary>
/// Checkpoints, resume, the NaN stop and train_log.jsonl of <see cref="CrossCoderTrainer"/>: a run cancelled after k steps
/// and resumed (into a crosscoder initialised differently, so that only the checkpoint can make them agree) ends with the
/// same weights, bit for bit, as one uninterrupted run of the same seed.
/// </summary>
public sealed class CrossCoderCheckpointTests : ModelTestBase
{
    private string _dir => Sub("run");

    private static CrossCoder NewCrossCoder(int? k, ulong initSeed, int d = 8)
    {
        var cc = new CrossCoder(new CrossCoderConfig { ActivationDim = d, DictSize = 24, NumLayers = 2, K = k });
        using var g = new Generator(initSeed);
        cc.InitializeWeights(g, k is null ? null : 1.0);
        return cc;
    }

    private static CrossCoderTrainerOptions Options(long steps) =>
        // A small dead threshold so that BatchTopK's AuxK and its tokens-since-fired counter take part.
        new() { Steps = steps, Lr = 3e-3, WarmupSteps = 2, ThresholdStartStep = 3, DeadFeatureThreshold = 48, DecayStart = steps > 6 ? steps - 4 : null };

    private static void AssertSameWeights(CrossCoder expected, CrossCoder actual)
    {
        var a = expected.state_dict();
        foreach (var (key, t) in actual.state_dict())
        {
            Assert.Equal(a[key].shape, t.shape);
            Assert.True(t.eq(a[key]).all().item<bool>(), $"{key} differs from the uninterrupted run's");
        }
    }

    [Theory]
    [InlineData(null)]
    [InlineData(3)]
    public void ResumeFromInMemoryRowsEqualsAnUninterruptedRun(int? k)
    {
        using var g = new Generator(5);
        using var data = randn([64, 2, 8], generator: g);
        // 64 rows in batches of 16: 4 steps a pass, so 11 steps cross two reshuffles and step 5 lies in the second pass.
        const long steps = 11;
        using var whole = NewCrossCoder(k, 1);
        CrossCoderTrainer.Train(whole, data, Options(steps), 16, seed: 9);

        var c = new CrossCoderCheckpointing { Path = Path.Combine(_dir, "checkpoints"), LogFolder = _dir, LogEverySteps = 1 };
        using (var first = NewCrossCoder(k, 1))
        using (var cts = new CancellationTokenSource())
        {
            var logs = CrossCoderTrainer.Train(first, data, Options(steps), 16, seed: 9, onStep: l => { if (l.Step == 4) cts.Cancel(); }, checkpointing: c, cancel: cts.Token);
            Assert.Equal(5, logs.Count);
        }
        Assert.True(File.Exists(Path.Combine(_dir, "checkpoints", "step_000000005", TrainerCheckpoint.StateFileName)));

        using var resumed = NewCrossCoder(k, 77);
        var rest = CrossCoderTrainer.Train(resumed, data, Options(steps), 16, seed: 9, checkpointing: c with { Resume = true });
        Assert.Equal(Enumerable.Range(5, 6).Select(i => (long)i), rest.Select(l => l.Step));
        AssertSameWeights(whole, resumed);

        // The log continues as one run: steps 1..11 once each, and it draws.
        var log = TrainLogFile.Read(Path.Combine(_dir, TrainLogFile.FileName));
        Assert.Equal(Enumerable.Range(1, 11).Select(i => (long)i), log.Series("crosscoder", "l0")!.Steps);
        var png = TrainingCurves.Save(_dir, Path.Combine(_dir, TrainingCurves.FileName));
        Assert.Equal([0x89, (byte)'P', (byte)'N', (byte)'G'], File.ReadAllBytes(png)[..4]);
    }

    [Fact]
    public void ByDefaultTheNewestTwoCheckpointsAreKeptAsForAnSaeRun()
    {
        // A checkpoint after every one of 5 steps: only steps 4 and 5 remain (README: "the newest two kept"; an SAE run's
        // keep_checkpoints default is 2 as well).
        using var g = new Generator(3);
        using var data = randn([32, 2, 4], generator: g);
        using var cc = new CrossCoder(new CrossCoderConfig { ActivationDim = 4, DictSize = 6, NumLayers = 2 });
        var c = new CrossCoderCheckpointing { Path = Path.Combine(_dir, "checkpoints"), EverySteps = 1 };
        Assert.Equal(new TrainerConfig().KeepCheckpoints, c.Keep);
        CrossCoderTrainer.Train(cc, data, new CrossCoderTrainerOptions { Steps = 5, Lr = 1e-2, WarmupSteps = 0 }, 16, seed: 1, checkpointing: c);
        Assert.Equal(["step_000000004", "step_000000005"],
            Directory.GetDirectories(c.Path).Select(Path.GetFileName).Order(StringComparer.Ordinal));
    }

    [Theory]
    [InlineData(null, "sparsity_loss", "auxk_loss")]
    [InlineData(2, "auxk_loss", "sparsity_loss")]
    public void TheTrainLogNamesTheSparsityTermOfEachTrainer(int? k, string logged, string absent)
    {
        // The fork's CrossCoderTrainer logs an L1 sparsity term, its BatchTopKCrossCoderTrainer the AuxK loss, which is 0
        // on every line here: no latent can be dead within 3 steps, and it must still be logged under its own name.
        using var g = new Generator(4);
        using var data = randn([32, 2, 4], generator: g);
        using var cc = new CrossCoder(new CrossCoderConfig { ActivationDim = 4, DictSize = 6, NumLayers = 2, K = k });
        var c = new CrossCoderCheckpointing { Path = Path.Combine(_dir, "checkpoints"), LogFolder = _dir, LogEverySteps = 1 };
        CrossCoderTrainer.Train(cc, data, new CrossCoderTrainerOptions { Steps = 3, Lr = 1e-2, WarmupSteps = 0 }, 16, seed: 1, checkpointing: c);
        var log = TrainLogFile.Read(Path.Combine(_dir, TrainLogFile.FileName));
        Assert.Equal([1L, 2, 3], log.Series("crosscoder", "losses/" + logged)!.Steps);
        Assert.Null(log.Series("crosscoder", "losses/" + absent));
        if (k is not null) Assert.All(log.Series("crosscoder", "losses/" + logged)!.Values, v => Assert.Equal(0.0, v));
        // Each line's rows/s over the step since the previous line: a step of 16 rows takes a finite, positive time.
        Assert.All(File.ReadLines(Path.Combine(_dir, TrainLogFile.FileName)),
            line => Assert.True(System.Text.Json.Nodes.JsonNode.Parse(line)!["rows_per_second"]!.GetValue<double>() > 0, line));
    }

    [Fact]
    public void TheTrainLogHasTheExplainedVarianceOfEachStepsReconstruction()
    {
        // Zero weights and biases: step 1 reconstructs x̂ = 0, so its explained variance is 1 − Σx² / Σ(x − mean)².
        double[] x = Enumerable.Range(0, 16 * 2 * 4).Select(i => Math.Sin(0.7 * i) + 0.3 * (i % 5)).ToArray();
        double expected = 1 - x.Sum(v => v * v) / Enumerable.Range(0, 8).Sum(col =>
        {
            var c = Enumerable.Range(0, 16).Select(r => x[r * 8 + col]).ToArray();
            double mean = c.Average();
            return c.Sum(v => (v - mean) * (v - mean));
        });
        using var data = tensor(x.Select(v => (float)v).ToArray()).view(16, 2, 4);
        using var cc = new CrossCoder(new CrossCoderConfig { ActivationDim = 4, DictSize = 6, NumLayers = 2 });
        var c = new CrossCoderCheckpointing { Path = Path.Combine(_dir, "checkpoints"), LogFolder = _dir, LogEverySteps = 1 };
        var logs = CrossCoderTrainer.Train(cc, data, new CrossCoderTrainerOptions { Steps = 3, Lr = 1e-2, WarmupSteps = 0 }, 16, seed: 1, checkpointing: c);
        Assert.Equal(expected, logs[0].ExplainedVariance, 1e-5);
        var series = TrainLogFile.Read(Path.Combine(_dir, TrainLogFile.FileName)).Series("crosscoder", "explained_variance")!;
        Assert.Equal([1L, 2, 3], series.Steps);
        Assert.Equal(expected, series.Values[0], 1e-5);
        Assert.Equal(logs.Select(l => l.ExplainedVariance), series.Values);
        Assert.True(logs[2].ExplainedVariance > logs[0].ExplainedVariance, "training improves the reconstruction");
    }

    [Fact]
    public void ResumeFromAModelRunEqualsAnUninterruptedRun()
    {
        using var model = Gpt2();
        var spec = HarvestSpec.ForCrossCoder([model.HookPoints], ["blocks.0.hook_resid_post", "blocks.1.hook_resid_post"]);
        ModelActivationSource Source() => new(model, spec, () => ModelActivationSourceTests.Windows(12, 8),
            new ModelActivationSourceOptions { ContextSize = 8, BatchSizePrompts = 2, BufferContexts = 4, Seed = 3 });
        const long steps = 9;
        using var whole = NewCrossCoder(3, 1, d: 16);
        using (var src = Source()) Assert.Equal(steps, CrossCoderTrainer.Train(whole, src, Options(steps), 8).Count);

        var c = new CrossCoderCheckpointing { Path = Path.Combine(_dir, "checkpoints") };
        using (var first = NewCrossCoder(3, 1, d: 16))
        using (var src = Source())
        using (var cts = new CancellationTokenSource())
            Assert.Equal(4, CrossCoderTrainer.Train(first, src, Options(steps), 8, l => { if (l.Step == 3) cts.Cancel(); }, c, cts.Token).Count);
        using var resumed = NewCrossCoder(3, 77, d: 16);
        using (var src = Source())
            Assert.Equal(5, CrossCoderTrainer.Train(resumed, src, Options(steps), 8, checkpointing: c with { Resume = true }).Count);
        AssertSameWeights(whole, resumed);
    }

    [Fact]
    public void ANaNInTheDataStopsAtItsStepAndKeepsTheLastGoodCheckpoint()
    {
        using var g = new Generator(2);
        using var rows = randn([160, 16], generator: g);
        // Unshuffled batches of 16 with a NaN injected into the 6th: step 6 is the first whose loss is NaN.
        using var src = new NaNInBatch(new TensorActivationSource(rows, shuffle: false), 6);
        using var cc = NewCrossCoder(null, 1);
        var c = new CrossCoderCheckpointing { Path = Path.Combine(_dir, "checkpoints"), EverySteps = 2 };
        var e = Assert.Throws<SaeSharpException>(() => CrossCoderTrainer.Train(cc, src, Options(10), 16, checkpointing: c));
        var good = TrainerCheckpoint.FolderOf(c.Path, 4);
        Assert.Equal($"crosscoder training step 6 of 10: the loss is NaN or infinite; the last good checkpoint is {good}", e.Message);
        Assert.Equal(good, TrainerCheckpoint.Resolve(c.Path));

        // The checkpoint is whole and finite: resuming from it on the clean rows equals a clean run.
        using var clean = NewCrossCoder(null, 1);
        using (var s = new TensorActivationSource(rows, shuffle: false)) CrossCoderTrainer.Train(clean, s, Options(10), 16);
        using var resumed = NewCrossCoder(null, 77);
        using (var s = new TensorActivationSource(rows, shuffle: false))
            Assert.Equal(6, CrossCoderTrainer.Train(resumed, s, Options(10), 16, checkpointing: c with { Resume = true }).Count);
        AssertSameWeights(clean, resumed);
    }

    [Fact]
    public void ResumeRefusesAnotherShapeOrOtherOptions()
    {
        using var g = new Generator(5);
        using var data = randn([32, 2, 8], generator: g);
        var c = new CrossCoderCheckpointing { Path = Path.Combine(_dir, "checkpoints") };
        using (var cc = NewCrossCoder(null, 1)) CrossCoderTrainer.Train(cc, data, Options(6), 16, seed: 1, checkpointing: c);
        using var topK = NewCrossCoder(3, 1);
        Assert.Contains("the checkpoint is of a crosscoder", Assert.Throws<SaeSharpException>(() =>
            CrossCoderTrainer.Train(topK, data, Options(6), 16, seed: 1, checkpointing: c with { Resume = true })).Message);
        using var l1 = NewCrossCoder(null, 1);
        Assert.Contains("training options", Assert.Throws<SaeSharpException>(() =>
            CrossCoderTrainer.Train(l1, data, Options(6) with { Lr = 1e-2 }, 16, seed: 1, checkpointing: c with { Resume = true })).Message);
        Assert.Contains("data position", Assert.Throws<SaeSharpException>(() =>
            CrossCoderTrainer.Train(l1, data, Options(6), 16, seed: 2, checkpointing: c with { Resume = true })).Message);
    }

    /// <summary>A source that writes NaN into one entry of its <c>batch</c>-th batch (1-based); sources refuse such rows
    /// when they read them, so this stands for a NaN that arises later (a model run's overflow).</summary>
    private sealed class NaNInBatch(IActivationSource inner, int batch) : IActivationSource
    {
        private int _served;
        public int DIn => inner.DIn;
        public int DOut => inner.DOut;
        public long? Rows => inner.Rows;

        public ActivationBatch? Next(int batchSize)
        {
            var b = inner.Next(batchSize);
            if (b is not null && ++_served == batch) b.Input[5, 3] = tensor(float.NaN);
            return b;
        }

        public System.Text.Json.Nodes.JsonNode SaveState() => inner.SaveState();
        public void LoadState(System.Text.Json.Nodes.JsonNode state) => inner.LoadState(state);
        public void Dispose() => inner.Dispose();
    }
}
