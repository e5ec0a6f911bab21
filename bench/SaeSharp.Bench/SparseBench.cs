using System.Diagnostics;
using SaeSharp.Kernels;
using static TorchSharp.torch;

namespace SaeSharp.Bench;

/// <summary>
/// <c>sparse</c>: the four sparse kernels of a sparse training step at a given density, with the source blocks of
/// <see cref="SparseKernels.SourceBlock"/> and without (one pass over each destination's entries): the decode
/// Σ f·W_dec rows, the decoder gradient Σ f·g rows, the transposed encoder gradient Σ g_pre·x rows and the row dot
/// products g·W_dec at the code's entries. The code is row-major with each latent positive with probability
/// <c>--densities</c> in each row (the ReLU SAE's sparse pass; 0.4 % is a k = 32 code of 8,192). Both orders must give
/// the same bits; the bench checks that and prints ms per call (best of <c>--repeats</c> calls of each, alternated).
/// Usage: <c>sparse [--d-in 512] [--d-sae 8192] [--batch 4096] [--densities 0.004,0.02,0.05,0.1,0.2] [--repeats 5]</c>.
/// </summary>
internal static class SparseBench
{
    public static int Run(string[] argv)
    {
        var a = BenchArgs.For("sparse", argv);
        int dIn = a.Int("--d-in", 512), dSae = a.Int("--d-sae", 8192), n = a.Int("--batch", 4096), repeats = a.Int("--repeats", 5);
        var densities = a.List("--densities", ["0.004", "0.02", "0.05", "0.1", "0.2"]).Select(double.Parse).ToList();
        Console.WriteLine(CpuKernels.Describe());
        Console.WriteLine($"sparse kernels: d_in {dIn}, d_sae {dSae}, batch {n}, L2 {CpuKernels.L2Bytes / 1024} KiB, torch threads {get_num_threads()}; ms per call, best of {repeats} alternated");
        Console.WriteLine($"{"density",8} {"kernel",-22} {"blocks",6} {"one pass",9} {"blocked",8} {"speed-up",9}");
        manual_seed(1);
        using var wDec = randn(dSae, dIn);
        using var g = randn(n, dIn);
        using var x = randn(n, dIn);
        bool saved = SparseKernels.SourceBlocking;
        try
        {
            foreach (double density in densities)
            {
                using var scope = NewDisposeScope();
                var mask = rand(n, dSae).lt(density);
                var idx = mask.nonzero();
                var rows = idx[.., 0].contiguous();
                var cols = idx[.., 1].contiguous();
                var vals = rand(rows.shape[0]);
                long nnz = rows.shape[0];
                var kernels = new (string Name, long Dst, long Src, Func<Tensor> Call)[]
                {
                    ("decode f·W_dec", n, dSae, () => SparseKernels.SumRows(n, rows, wDec, cols, vals)),
                    ("grad W_dec fᵀ·g", dSae, n, () => SparseKernels.SumRows(dSae, cols, g, rows, vals)),
                    ("grad W_enc (transposed)", dSae, n, () => SparseKernels.SumRowsTransposed(dSae, cols, x, rows, vals)),
                    ("row dots g·W_dec", n, dSae, () => SparseKernels.RowDots(g, rows, wDec, cols)),
                };
                foreach (var (name, dst, src, call) in kernels)
                {
                    long block = SparseKernels.SourceBlock(dIn, src, nnz, dst);
                    // Alternated, best of each: the host's noise moves whole seconds, not single calls.
                    double plain = double.MaxValue, blocked = double.MaxValue;
                    Tensor? plainOut = null, blockedOut = null;
                    for (int r = 0; r < repeats; r++)
                    {
                        SparseKernels.SourceBlocking = false;
                        plainOut?.Dispose();
                        plain = Math.Min(plain, Time(call, out plainOut));
                        SparseKernels.SourceBlocking = true;
                        blockedOut?.Dispose();
                        blocked = Math.Min(blocked, Time(call, out blockedOut));
                    }
                    bool same = plainOut!.eq(blockedOut!).all().item<bool>();
                    plainOut.Dispose();
                    blockedOut!.Dispose();
                    string blocks = block == 0 ? "-" : $"{(src + block - 1) / block}";
                    Console.WriteLine($"{density,8:P1} {name,-22} {blocks,6} {plain,9:F1} {blocked,8:F1} {plain / blocked,8:F2}x{(same ? "" : "  RESULTS DIFFER")}");
                    if (!same) return 1;
                }
            }
        }
        finally { SparseKernels.SourceBlocking = saved; }
        return 0;
    }

    private static double Time(Func<Tensor> call, out Tensor result)
    {
        var sw = Stopwatch.StartNew();
        result = call();
        return sw.Elapsed.TotalMilliseconds;
    }
}
