using System.Diagnostics;
using System.Text.Json.Nodes;
using SaeSharp.Activations;
using SaeSharp.Evaluation;
using SaeSharp.IO;
using SaeSharp.Kernels;
using SaeSharp.Saes;
using SaeSharp.Synthetic;
using SaeSharp.Training;
using TorchSharp;
using static TorchSharp.torch;

namespace SaeSharp.Bench;

/// <summary>
/// <c>relu-run</c>: a ReLU SAE over a whole run at <c>sae train</c>'s defaults (<see cref="SaeRecipes"/>: the <c>relu</c>
/// recipe, or <c>--arch relu-april</c>) through <see cref="SaeTrainer"/>, where the first steps are dense and the sparse
/// training pass takes over once few pre-activations are positive: ms/step per window of <c>--report</c> steps with the
/// number of dense and sparse steps in it, the time of each phase, rows/s over the whole run, then FVU, L0 and dead share on
/// held-out rows. <c>--arch topk --k 32</c> (or another k-sparse recipe) runs that recipe the same way, without the phases.
/// The rows come from <c>--activations train.npy --eval eval.npy</c>, the files that
/// bench/reference/peer_relu_run.py trains dictionary_learning's StandardTrainer on (and peer_sparsify_run.py sparsify's
/// SparseCoder); <c>--write DIR</c> writes such a pair
/// of synthetic superposition data. <c>--crossover</c> instead times one dense and one sparse step at fixed densities.
/// </summary>
internal static class ReluRunBench
{
    public static int Run(string[] argv)
    {
        var a = BenchArgs.For("relu-run", argv);
        int steps = a.Int("--steps", 1000), dIn = a.Int("--d-in", 256), dSae = a.Int("--d-sae", 4096), batch = a.Int("--batch", 2048);
        int report = a.Int("--report", 100), evalRows = a.Int("--eval-rows", 16384);
        string recipe = a.Value("--arch", "relu");
        bool autocast = a.Flag("--autocast");
        Console.WriteLine(CpuKernels.Describe());
        if (a.Value("--write", "") is { Length: > 0 } dir)
        {
            // Program.cs raised glibc's mmap threshold for the training benches; generating data interleaves a long-lived
            // output with large temporaries, and with the raised threshold 614,400 rows at d_in 512 grew past 24 GB and
            // were killed. glibc's static default (128 KB) keeps it near the output's size.
            NativeRuntime.KeepLargeBlocks(128 * 1024);
            if (a.Value("--from", "") is { Length: > 0 } from)
            {
                WriteFrom(dir, from, evalRows);
                return 0;
            }
            Write(dir, dIn, a.Int("--features", dSae), double.Parse(a.Value("--max-frequency", "0.1")), a.Int("--rows", 262_144), evalRows, a.Int("--seed", 1));
            return 0;
        }
        if (a.Flag("--crossover"))
        {
            using var gen = new SyntheticGenerator(new SyntheticOptions { DIn = dIn, NFeatures = dSae / 2, MaxFrequency = 0.05, Seed = 1 });
            var (_, data) = gen.Sample(batch);
            using var fresh = (StandardSae)SaeFactory.Create(new SaeConfig { Architecture = SaeArchitectures.Standard, DIn = dIn, DSae = dSae });
            fresh.InitializeWeights(new Generator(0));
            fresh.Training.Autocast = autocast;
            return Crossover(fresh, data, autocast, a.List("--densities", ["0.005", "0.01", "0.02", "0.05", "0.1", "0.2"]).Select(double.Parse).ToList());
        }

        string trainPath = a.Value("--activations", ""), evalPath = a.Value("--eval", "");
        if (trainPath.Length == 0 || evalPath.Length == 0)
            throw new BenchUsageException("relu-run needs --activations train.npy --eval eval.npy (write a pair with --write DIR)");
        using var train = new ActivationFileSource(trainPath, new ActivationFileSourceOptions { Seed = 42, Loop = true });
        using var eval = ActivationSplit.EvalFiles([evalPath]);
        dIn = train.DIn;
        var run = new TrainerConfig
        {
            TotalTrainingSteps = steps, TrainBatchSizeTokens = batch, Seed = 42, NormalizeActivations = "expected_average_only_in",
            NBatchesForNormEstimate = Math.Max(1, 16384 / batch), BDecInitRows = 4 * batch, LogEverySteps = report,
        };
        double? l1 = a.Value("--l1", "") is { Length: > 0 } l ? double.Parse(l) : null;
        int? k = a.Value("--k", "") is { Length: > 0 } ks ? int.Parse(ks) : null;
        using var sae = SaeRecipes.Create(recipe, dIn, dSae, k: k, sparsityCoefficient: l1, totalSteps: steps);
        var relu = sae as StandardSae;
        sae.Training.Autocast = autocast;
        if (a.Value("--candidate-pass", "") is { Length: > 0 } cp) sae.Training.CandidatePass = Enum.Parse<CandidatePass>(cp, ignoreCase: true);
        CpuKernels.VerboseLog = Console.WriteLine;
        if (a.Value("--auxk-coefficient", "") is { Length: > 0 } ac) sae.Training.AuxKCoefficient = double.Parse(ac);
        if (a.Value("--switch", "") is { Length: > 0 } sw && relu is not null) relu.SparseTrainingDensity = double.Parse(sw);
        var config = SaeRecipes.RunConfig(recipe, run, dSae);
        if (a.Value("--lr", "") is { Length: > 0 } lr) config.Lr = double.Parse(lr);
        var clock = new StepClock(train, relu);
        using var trainer = new SaeTrainer(run, clock, [new SaeSlot(recipe, sae, config)]);
        clock.Trainer = trainer;
        Console.WriteLine($"{recipe} run (at sae train's defaults): {trainPath}, d_in {dIn}, d_sae {dSae}, batch {batch}, {steps} steps, " +
            (relu is null ? $"k {k}" : $"λ {sae.Training.SparsityCoefficient:G3}") + $", lr {config.Lr:G3}, autocast {autocast}, " +
            (relu is null ? "" : $"switch {relu.SparseTrainingDensity:G3}, ") + $"threads {get_num_threads()}");
        Console.WriteLine($"{"steps",13} {"ms/step",8} {"dense",6} {"sparse",6} {"L0",7} {"FVU (batch)",11} {"dead %",7}");
        int shown = 0;
        trainer.Progress = new SyncProgress(p =>
        {
            // A step is closed at the next step's batch request, so each window ends one step before the logged step.
            var win = clock.Steps.Skip(shown).ToList();
            if (win.Count == 0) return;
            string dense = relu is null ? "-" : $"{win.Count(s => !s.Sparse)}", sparse = relu is null ? "-" : $"{win.Count(s => s.Sparse)}";
            Console.WriteLine($"{shown,6}-{shown + win.Count - 1,6} {win.Average(s => s.Ms),8:F1} {dense,6} {sparse,6} " +
                $"{p.Saes[0].L0,7:F1} {1 - p.Saes[0].ExplainedVariance,11:F4} {p.Saes[0].DeadFraction * 100,7:F1}");
            shown += win.Count;
        });
        var total = Stopwatch.StartNew();
        using var result = trainer.Run();
        double secs = total.Elapsed.TotalSeconds;
        clock.Close();
        var steps_ = clock.Steps;
        var timed = steps_.Skip(1).ToList();
        foreach (bool sparse in relu is null ? [] : new[] { false, true })
        {
            var ph = timed.Where(s => s.Sparse == sparse).ToList();
            double ms = ph.Sum(s => s.Ms);
            int first = steps_.FindIndex(s => s.Sparse == sparse);
            Console.WriteLine($"{(sparse ? "sparse" : "dense"),6} phase: {ph.Count} steps (first at step {first}), {ms / Math.Max(1, ph.Count):F1} ms/step " +
                $"({batch / (ms / Math.Max(1, ph.Count) / 1000):F0} rows/s), {ms / 1000:F1} s = {ms / Math.Max(1e-9, timed.Sum(s => s.Ms)):P0} of steps 1..{steps - 1}");
        }
        Console.WriteLine($"step 0 with the initialisation (norm estimate, b_dec {config.BDecInitMethod}): {steps_[0].Ms:F0} ms");
        Console.WriteLine($"whole run: {secs:F1} s, {(double)batch * steps / secs:F0} rows/s; of it in the data source {clock.SourceMs / 1000:F1} s " +
                          $"({clock.SourceMs / steps:F2} ms/step)");
        Console.WriteLine($"GC: {GC.CollectionCount(0)} gen0, {GC.CollectionCount(1)} gen1, {GC.CollectionCount(2)} gen2 collections, " +
                          $"{GC.GetTotalPauseDuration().TotalMilliseconds:F0} ms paused; peak working set {Environment.WorkingSet / 1048576} MB now");
        var trained = result.Saes[0].Sae;
        var m = SaeEvaluator.Evaluate(trained, eval, evalRows);
        Console.WriteLine($"eval: fvu {m.Fvu:F4}  l0 {m.L0:F1}  dead {m.DeadFraction * 100:F1} %");
        return 0;
    }

    /// <summary>Writes DIR/train.npy and DIR/eval.npy: synthetic superposition rows (<paramref name="features"/> unit
    /// directions in d_in, feature i firing with probability maxFrequency·(i+1)^-½, magnitudes uniform in [0, 1]).</summary>
    private static void Write(string dir, int dIn, int features, double maxFrequency, int rows, int evalRows, int seed)
    {
        Directory.CreateDirectory(dir);
        using var gen = new SyntheticGenerator(new SyntheticOptions { DIn = dIn, NFeatures = features, MaxFrequency = maxFrequency, Seed = (ulong)seed });
        using (var x = gen.SampleActivations(rows)) Npy.Save(Path.Combine(dir, "train.npy"), x);
        using (var x = gen.SampleActivations(evalRows)) Npy.Save(Path.Combine(dir, "eval.npy"), x);
        Console.WriteLine($"wrote {dir}/train.npy ({rows:N0} × {dIn}) and {dir}/eval.npy ({evalRows:N0} × {dIn}): {features} features, " +
            $"expected L0 {Enumerable.Range(1, features).Sum(i => maxFrequency * Math.Pow(i, -0.5)):F1}");
    }

    /// <summary>Writes DIR/train.npy (every row of <paramref name="from"/>, a file or an activation cache folder, but the last
    /// <paramref name="evalRows"/>, in order) and DIR/eval.npy (those last rows).</summary>
    private static void WriteFrom(string dir, string from, int evalRows)
    {
        Directory.CreateDirectory(dir);
        var (train, eval) = ActivationSplit.HoldOutLastRows([from], evalRows, new ActivationFileSourceOptions { Shuffle = false });
        foreach (var (source, name) in new[] { (train, "train.npy"), (eval, "eval.npy") })
            using (source)
            {
                var parts = new List<Tensor>();
                while (source.Next(65536) is { } b) { parts.Add(b.Input.clone()); b.Dispose(); }
                using var all = cat(parts, 0);
                Npy.Save(Path.Combine(dir, name), all);
                Console.WriteLine($"wrote {dir}/{name} ({all.shape[0]:N0} × {all.shape[1]})");
                foreach (var t in parts) t.Dispose();
            }
    }

    /// <summary>Times each training step as the interval between the trainer's first batch requests of consecutive
    /// steps (so a step's resampling and data loading count in it) and records which path its training pass took.</summary>
    private sealed class StepClock(IActivationSource inner, StandardSae? relu) : IActivationSource
    {
        private readonly Stopwatch _clock = Stopwatch.StartNew();
        private long _step = -1;
        private double _start;

        public SaeTrainer? Trainer { get; set; }
        public List<(double Ms, bool Sparse)> Steps { get; } = [];
        public int DIn => inner.DIn;
        public int DOut => inner.DOut;
        public long? Rows => inner.Rows;
        public long RowsDelivered => inner.RowsDelivered;
        public long? RowsPerPass => inner.RowsPerPass;
        public int MaxDataPasses => inner.MaxDataPasses;

        public ActivationBatch? Next(int batchSize)
        {
            long step = Trainer?.Step ?? 0;
            if (step != _step)
            {
                double now = _clock.Elapsed.TotalMilliseconds;
                if (_step >= 0) Steps.Add((now - _start, relu?.LastTrainingPassSparse ?? false));
                (_step, _start) = (step, now);
            }
            double t0 = _clock.Elapsed.TotalMilliseconds;
            var batch = inner.Next(batchSize);
            SourceMs += _clock.Elapsed.TotalMilliseconds - t0;
            return batch;
        }

        /// <summary>Milliseconds spent in the wrapped source's <see cref="Next"/> (reading and shuffling rows).</summary>
        public double SourceMs { get; private set; }

        public void Close() => Steps.Add((_clock.Elapsed.TotalMilliseconds - _start, relu?.LastTrainingPassSparse ?? false));
        public JsonNode SaveState() => inner.SaveState();
        public void LoadState(JsonNode state) => inner.LoadState(state);
        public void Dispose() { }
    }

    private sealed class SyncProgress(Action<TrainingProgress> report) : IProgress<TrainingProgress>
    {
        public void Report(TrainingProgress value) => report(value);
    }

    /// <summary>ms of a dense and of a sparse training step (forward + backward + Adam) at fixed densities.</summary>
    private static int Crossover(StandardSae sae, Tensor x, bool autocast, List<double> densities)
    {
        long n = x.shape[0];
        var adam = new AdamOptimizer(sae.named_parameters().Select(p => (p.name, p.parameter)).ToList(), 0.9, 0.999);
        var b0 = sae.BEnc.detach().clone();
        Console.WriteLine($"crossover: batch {n}, autocast {autocast}; ms per step (best of 3 after a warm-up)");
        Console.WriteLine($"{"density",8} {"dense",8} {"sparse",8} {"sparse/dense",13}");
        foreach (double target in densities)
        {
            using (no_grad())
            using (NewDisposeScope())
            {
                sae.BEnc.copy_(b0);
                var pre = sae.HiddenPre(x);
                var q = pre.kthvalue((long)(n - n * target), 0).values;
                sae.BEnc.sub_(q);
            }
            double Time(double density)
            {
                sae.SparseTrainingDensity = density;
                double best = double.MaxValue;
                for (int i = 0; i < 4; i++)
                {
                    using var scope = NewDisposeScope();
                    var ctx = new SaeTrainContext { Step = i };
                    var sw = Stopwatch.StartNew();
                    sae.zero_grad(false);
                    sae.TrainingForward(x, x, ctx).Loss.backward();
                    adam.Step(0);
                    if (i > 0) best = Math.Min(best, sw.Elapsed.TotalMilliseconds);
                }
                return best;
            }
            double dense = Time(0), sparse = Time(1);
            Console.WriteLine($"{target,8:P1} {dense,8:F0} {sparse,8:F0} {sparse / dense,13:F2}");
        }
        adam.Dispose();
        return 0;
    }
}
