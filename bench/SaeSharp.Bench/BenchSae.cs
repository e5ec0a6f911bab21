using System.Diagnostics;
using SaeSharp.Kernels;
using SaeSharp.Saes;
using SaeSharp.Training;
using TorchSharp;
using static TorchSharp.torch;

namespace SaeSharp.Bench;

/// <summary>
/// An SAE, its Adam and a fixed random batch, as the training benches time them. Names are architectures, optionally
/// with "+auxk" (a tenth of the latents dead, so AuxK runs) or "@1%" (b_enc shifted so about 1% of the pre-activations
/// are positive: a trained ReLU SAE's sparsity, where its sparse training pass applies).
/// </summary>
internal sealed class BenchSae : IDisposable
{
    public required Sae Sae { get; init; }
    public required string Arch { get; init; }
    public required Tensor X { get; init; }
    public Tensor? DeadMask { get; init; }
    private AdamOptimizer Adam { get; init; } = null!;

    /// <summary>The TopK family's selection (<c>--candidate-pass</c> of the train bench).</summary>
    public static SaeSharp.Kernels.CandidatePass CandidatePass { get; set; } = SaeSharp.Kernels.CandidatePass.Auto;

    public static BenchSae Create(string name, int dIn, int dSae, int batch, int k, bool autocast)
    {
        bool auxk = name.EndsWith("+auxk", StringComparison.Ordinal);
        bool sparseRelu = name.EndsWith("@1%", StringComparison.Ordinal);
        string arch = auxk ? name[..^5] : sparseRelu ? name[..^3] : name;
        var sae = SaeFactory.Create(new SaeConfig
        {
            Architecture = arch, DIn = dIn, DSae = dSae,
            K = arch.Contains("topk", StringComparison.Ordinal) ? k : null,
            MatryoshkaWidths = arch == SaeArchitectures.MatryoshkaBatchTopK ? [dSae / 16, dSae / 4, dSae] : null,
            // matching_pursuit picks at most k latents per row (SAELens's default, d_in, takes minutes per step).
            MaxIterations = arch == SaeArchitectures.MatchingPursuit ? k : null,
        });
        sae.InitializeWeights(new Generator(0));
        sae.Training.Autocast = autocast;
        sae.Training.CandidatePass = CandidatePass;
        var (b1, b2) = sae.DefaultAdamBetas;
        var x = randn(batch, dIn, generator: new Generator(1));
        if (sparseRelu)
        {
            using var _ = no_grad();
            using var s = NewDisposeScope();
            var q = sae.HiddenPre(x).kthvalue(batch - batch / 100, 0).values;
            sae.BEnc.sub_(q);
        }
        return new BenchSae
        {
            Sae = sae, Arch = arch, X = x,
            DeadMask = auxk ? arange(dSae).remainder(10).eq(0) : null,
            Adam = new AdamOptimizer(sae.named_parameters().Select(p => (p.name, p.parameter)).ToList(), b1, b2),
        };
    }

    /// <summary>One training step (zero grad, forward, backward, decoder hooks, Adam); the milliseconds from its start to
    /// the end of each phase: forward, backward, pre-step hook, Adam, post-step hook.</summary>
    public double[] Step(long step)
    {
        using var scope = NewDisposeScope();
        var ctx = new SaeTrainContext { Step = step, DeadMask = DeadMask };
        // As SaeTrainer steps.
        using var serial = Sae.SmallTorchSteps ? RowRanges.SerialTorch() : null;
        var sw = Stopwatch.StartNew();
        var t = new double[5];
        Sae.zero_grad(false);
        var o = Sae.TrainingForward(X, X, ctx);
        t[0] = sw.Elapsed.TotalMilliseconds;
        using (Sae.TorchHeavyBackward ? RowRanges.ParallelTorch() : null)
            o.Loss.backward();
        t[1] = sw.Elapsed.TotalMilliseconds;
        Sae.BeforeOptimizerStep(ctx);
        t[2] = sw.Elapsed.TotalMilliseconds;
        Adam.Step(Sae.DefaultLearningRate());
        t[3] = sw.Elapsed.TotalMilliseconds;
        Sae.AfterOptimizerStep(ctx);
        t[4] = sw.Elapsed.TotalMilliseconds;
        return t;
    }

    /// <summary>Runs 1 warm-up and <paramref name="steps"/> timed steps, noting each phase's best time in
    /// <paramref name="best"/> (keys forward, backward, remove-parallel, adam, normalise, step).</summary>
    public void Profile(int steps, Dictionary<string, double> best, bool printSteps = false)
    {
        void Note(string key, double ms) => best[key] = best.TryGetValue(key, out var b) ? Math.Min(b, ms) : ms;
        for (int step = 0; step <= steps; step++)
        {
            var t = Step(step);
            if (printSteps) Console.WriteLine($"  step {step}: {t[4]:F0} ms (forward {t[0]:F0}, backward {t[1] - t[0]:F0})");
            if (step == 0) continue;
            Note("forward", t[0]); Note("backward", t[1] - t[0]); Note("remove-parallel", t[2] - t[1]); Note("adam", t[3] - t[2]);
            Note("normalise", t[4] - t[3]); Note("step", t[4]);
        }
    }

    public void Dispose()
    {
        Adam.Dispose();
        DeadMask?.Dispose();
        X.Dispose();
        Sae.Dispose();
    }
}
