using System.Diagnostics;
using SaeSharp.Kernels;
using SaeSharp.Saes;
using TorchSharp;
using static TorchSharp.torch;

namespace SaeSharp.Bench;

/// <summary>
/// <c>train --profile</c> for the dense architectures (standard, jumprelu, gated; "standard@1%" shifts b_enc so 1% of
/// pre-activations are positive): per-phase milliseconds of a training step (best of the timed steps), then the step's
/// building blocks in isolation at the same shapes (matmuls in the layouts the training pass uses, elementwise passes
/// over [N, d_sae]), in bfloat16 with <c>--autocast</c>, float32 otherwise.
/// </summary>
internal static class DenseProfile
{
    public static void Run(string name, int dIn, int dSae, int batch, int steps, bool autocast)
    {
        var best = new Dictionary<string, double>();
        void Note(string key, double ms) => best[key] = best.TryGetValue(key, out var b) ? Math.Min(b, ms) : ms;
        using (var bench = BenchSae.Create(name, dIn, dSae, batch, k: 0, autocast)) bench.Profile(steps, best, printSteps: true);
        var dtype = autocast ? ScalarType.BFloat16 : ScalarType.Float32;
        using (no_grad())
        {
            using var scope = NewDisposeScope();
            var xs = randn(batch, dIn).to(dtype);
            var wEncT = randn(dSae, dIn).to(dtype);
            var wDec = randn(dSae, dIn).to(dtype);
            var g = randn(batch, dIn).to(dtype);
            var f = randn(batch, dSae).to(dtype);
            var bias = randn(dSae).to(dtype);
            void Time(string key, Func<Tensor> op)
            {
                for (int rep = 0; rep <= steps; rep++)
                {
                    using var s = NewDisposeScope();
                    var sw = Stopwatch.StartNew();
                    op();
                    if (rep > 0) Note(key, sw.Elapsed.TotalMilliseconds);
                }
            }
            Time("  mm encoder x·W_encᵀᵀ", () => addmm(bias, xs, wEncT.t(), 1, 1));
            Time("  mm decoder f·W_dec", () => f.mm(wDec));
            Time("  mm grad f g·W_decᵀ", () => g.mm(wDec.t()));
            Time("  mm grad W_dec fᵀ·g", () => f.t().mm(g));
            Time("  mm grad W_enc xᵀ·g_pre", () => xs.t().mm(f));
            Time("  relu [N, d_sae]", () => nn.functional.relu(f));
            Time("  relu backward (threshold) [N, d_sae]", () => f.mul(f.gt(0)));
            Time("  column sums [N, d_sae]", () => f.sum(0L));
            if (autocast)
            {
                Time("  positive counts [N, d_sae]", () => Bf16Kernels.PositiveCounts(f));
                var work = f.clone();
                Time("  fused ReLU + counts, in place", () => Bf16Kernels.ReluInPlace(work));
                Time("  fused ReLU backward + column sums, in place", () => Bf16Kernels.WherePositive(f, work, work, true, out var sums) is var r ? sums! : r);
                Time("  fresh [N, d_sae] allocation, first touch", () => empty(batch, dSae, dtype: dtype).fill_(0));
            }
        }
        foreach (var (key, ms) in best) Console.WriteLine($"  {key,-40} {ms,8:F1} ms");
    }
}
