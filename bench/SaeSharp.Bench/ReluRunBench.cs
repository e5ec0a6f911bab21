using System.Diagnostics;
using SaeSharp.Kernels;
using SaeSharp.Saes;
using SaeSharp.Synthetic;
using SaeSharp.Training;
using TorchSharp;
using static TorchSharp.torch;

namespace SaeSharp.Bench;

/// <summary>
/// A ReLU SAE (April 2024 recipe: L1 weighted by decoder norms) over a whole run on synthetic superposition data, where
/// the first steps are dense and the sparse training pass takes over once few pre-activations are positive: time per
/// phase (dense vs sparse steps) and rows/s over the run. <c>--crossover</c> instead times one dense and one sparse step
/// at fixed densities (b_enc shifted), to place <see cref="StandardSae.SparseTrainingDensity"/>.
/// </summary>
internal static class ReluRunBench
{
    public static int Run(string[] argv)
    {
        var a = new BenchArgs(argv, ["--steps", "--d-in", "--d-sae", "--batch", "--l1", "--lr", "--switch", "--pool", "--report"], ["--autocast", "--crossover"]);
        int steps = a.Int("--steps", 1000), dIn = a.Int("--d-in", 512), dSae = a.Int("--d-sae", 8192), batch = a.Int("--batch", 4096);
        int pool = a.Int("--pool", 8), report = a.Int("--report", 100);
        double l1 = double.Parse(a.Value("--l1", "5")), lr = double.Parse(a.Value("--lr", "5e-4"));
        bool autocast = a.Flag("--autocast");
        Console.WriteLine(CpuKernels.Describe());
        using var gen = new SyntheticGenerator(new SyntheticOptions { DIn = dIn, NFeatures = dSae / 2, MaxFrequency = 0.05, Seed = 1 });
        var (_, data) = gen.Sample((long)pool * batch);
        var sae = (StandardSae)SaeFactory.Create(new SaeConfig { Architecture = SaeArchitectures.Standard, DIn = dIn, DSae = dSae });
        sae.InitializeWeights(new Generator(0));
        sae.Training.Autocast = autocast;
        sae.Training.Penalty = SparsityPenalty.L1DecoderNorm;
        sae.Training.SparsityCoefficient = l1;
        if (a.Value("--switch", "") is { Length: > 0 } sw) sae.SparseTrainingDensity = double.Parse(sw);
        if (a.Flag("--crossover")) return Crossover(sae, data.narrow(0, 0, batch), autocast);

        var adam = new AdamOptimizer(sae.named_parameters().Select(p => (p.name, p.parameter)).ToList(), 0.9, 0.999);
        Console.WriteLine($"relu run: d_in {dIn}, d_sae {dSae}, batch {batch}, {steps} steps, λ {l1} (warm-up 5 %), lr {lr}, autocast {autocast}, " +
            $"sparse pass at density ≤ {sae.SparseTrainingDensity:P1}, threads {get_num_threads()}");
        Console.WriteLine($"{"step",6} {"density",8} {"path",6} {"ms",7} {"mse",9}");
        double[] ms = new double[2];
        int[] count = new int[2];
        int firstSparse = -1;
        var total = Stopwatch.StartNew();
        for (int step = 0; step < steps; step++)
        {
            using var scope = NewDisposeScope();
            var x = data.narrow(0, (long)(step % pool) * batch, batch);
            var ctx = new SaeTrainContext { Step = step, SparsityScale = Math.Min(1.0, step / (0.05 * steps)) };
            var t = Stopwatch.StartNew();
            sae.zero_grad(false);
            var o = sae.TrainingForward(x, x, ctx);
            o.Loss.backward();
            sae.BeforeOptimizerStep(ctx);
            adam.Step(lr);
            sae.AfterOptimizerStep(ctx);
            double elapsed = t.Elapsed.TotalMilliseconds;
            // The path the step took: the sparse pass hands back per-latent counts without a dense matrix.
            bool sparse = autocast ? IsSparse(o, batch, dSae, sae.SparseTrainingDensity) : o.ActiveCounts is not null;
            double density = (o.ActiveCounts is { } c ? c.sum().item<long>() : o.FeatureActs.gt(0).sum().item<long>()) / ((double)batch * dSae);
            int phase = sparse ? 1 : 0;
            if (step > 0) { ms[phase] += elapsed; count[phase]++; }
            if (sparse && firstSparse < 0) firstSparse = step;
            if (step % report == 0 || step == steps - 1)
                Console.WriteLine($"{step,6} {density,8:P2} {(sparse ? "sparse" : "dense"),6} {elapsed,7:F0} {o.Losses["mse_loss"].item<float>(),9:F5}");
        }
        double secs = total.Elapsed.TotalSeconds;
        Console.WriteLine($"dense phase: {count[0]} steps, {ms[0] / Math.Max(1, count[0]):F0} ms/step ({batch / (ms[0] / Math.Max(1, count[0]) / 1000):F0} rows/s), {ms[0] / 1000:F1} s = {ms[0] / (ms[0] + ms[1]):P0} of the run");
        Console.WriteLine($"sparse phase: {count[1]} steps from step {firstSparse}, {ms[1] / Math.Max(1, count[1]):F0} ms/step ({batch / (ms[1] / Math.Max(1, count[1]) / 1000):F0} rows/s), {ms[1] / 1000:F1} s");
        Console.WriteLine($"whole run: {secs:F1} s, {(double)batch * steps / secs:F0} rows/s");
        adam.Dispose();
        sae.Dispose();
        return 0;
    }

    /// <summary>With autocast both paths return counts; the sparse one has no dense activations until asked.</summary>
    private static bool IsSparse(SaeTrainOutput o, int batch, int dSae, double threshold) =>
        o.ActiveCounts is { } c && c.sum().item<long>() <= (long)(threshold * batch * dSae);

    /// <summary>ms of a dense and of a sparse training step (forward + backward + Adam) at fixed densities.</summary>
    private static int Crossover(StandardSae sae, Tensor x, bool autocast)
    {
        long n = x.shape[0];
        var adam = new AdamOptimizer(sae.named_parameters().Select(p => (p.name, p.parameter)).ToList(), 0.9, 0.999);
        var b0 = sae.BEnc.detach().clone();
        Console.WriteLine($"crossover: batch {n}, autocast {autocast}; ms per step (best of 3 after a warm-up)");
        Console.WriteLine($"{"density",8} {"dense",8} {"sparse",8} {"sparse/dense",13}");
        foreach (double target in new[] { 0.005, 0.01, 0.02, 0.05, 0.1, 0.2 })
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
