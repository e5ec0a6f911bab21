using System.Diagnostics;
using SaeSharp.Kernels;
using static TorchSharp.torch;

namespace SaeSharp.Bench;

/// <summary>
/// <c>gemm</c>: the five GEMMs of a dense ReLU training step (<see cref="DenseRelu"/>: p = x̃·W_enc, ŷ = f·W_dec + b_dec,
/// ∂f = ∂ŷ·W_decᵀ, ∂W_enc = x̃ᵀ·∂p, ∂W_dec = fᵀ·∂ŷ) through torch (MKL), OpenBLAS split over .NET threads (what
/// <see cref="Blas"/> runs) and OpenBLAS on its own thread pool, rotated round by round in one process; after the first
/// GEMM the .NET-parallel ReLU pass (<see cref="DenseReluKernels.ReluBias"/>) is timed too, to show a spinning thread pool.
/// Prints <c>measure</c>'s trial of each GEMM first (what <c>SAESHARP_GEMM=measure</c> would keep; <c>auto</c>'s rule is in
/// the second line), then median [min–max] ms per GEMM and for the five together.
/// </summary>
internal static class GemmBench
{
    public static int Run(string[] argv)
    {
        var a = BenchArgs.For("gemm", argv);
        int d = a.Int("--d-in", 512), s = a.Int("--d-sae", 8192), n = a.Int("--batch", 4096), rounds = a.Int("--rounds", 9);
        Console.WriteLine(CpuKernels.Describe());
        Console.WriteLine($"{Blas.Describe()}; torch threads {get_num_threads()}");
        if (!Blas.Available) return 1;
        manual_seed(1);
        var x = randn(n, d);
        var wEnc = randn(d, s) * 0.05f;
        var wDec = randn(s, d) * 0.05f;
        var bDec = randn(d);
        var f = randn(n, s).clamp_min(0);
        var gy = randn(n, d);
        var gp = randn(n, s);
        var bEnc = randn(s);
        var pre = f.clone();
        string[] names = ["p = x·W_enc", "y = f·W_dec + b", "∂f = ∂y·W_decᵀ", "∂W_enc = xᵀ·∂p", "∂W_dec = fᵀ·∂y"];
        Func<Tensor>[] gemms = [() => Blas.Mm(x, wEnc), () => Blas.AddMm(bDec, f, wDec), () => Blas.Mm(gy, wDec.t()), () => Blas.Mm(x.t(), gp), () => Blas.Mm(f.t(), gy)];
        (string Name, GemmProvider Provider, bool Own)[] providers =
            [("torch (MKL)", GemmProvider.Torch, false), ("OpenBLAS split", GemmProvider.OpenBlas, false), ("OpenBLAS own pool", GemmProvider.OpenBlas, true)];
        var log = CpuKernels.VerboseLog;
        try
        {
            CpuKernels.VerboseLog = line => Console.WriteLine($"measure's trial: {line}");
            Blas.Provider = GemmProvider.Measure;
            foreach (var g in gemms) g().Dispose();
        }
        finally
        {
            CpuKernels.VerboseLog = log;
            Blas.ResetProvider();
        }
        var times = new List<double>[providers.Length, gemms.Length + 2];
        for (int p = 0; p < providers.Length; p++)
            for (int g = 0; g < gemms.Length + 2; g++) times[p, g] = [];
        try
        {
            for (int r = 0; r <= rounds; r++)
                for (int i = 0; i < providers.Length; i++)
                {
                    int p = (i + r) % providers.Length;
                    Blas.Provider = providers[p].Provider;
                    Blas.OwnThreads = providers[p].Own;
                    double total = 0;
                    for (int g = 0; g < gemms.Length; g++)
                    {
                        var sw = Stopwatch.StartNew();
                        gemms[g]().Dispose();
                        double ms = sw.Elapsed.TotalMilliseconds;
                        total += ms;
                        if (r > 0) times[p, g].Add(ms);
                        if (g != 0) continue;
                        sw.Restart();
                        DenseReluKernels.ReluBias(pre, bEnc);
                        if (r > 0) times[p, gemms.Length + 1].Add(sw.Elapsed.TotalMilliseconds);
                    }
                    if (r > 0) times[p, gemms.Length].Add(total);
                }
        }
        finally
        {
            Blas.ResetProvider();
            Blas.OwnThreads = false;
        }
        double flops = 2.0 * n * d * s;
        Console.WriteLine($"d_in {d}, d_sae {s}, batch {n}: {rounds} rounds, providers rotated; ms median [min–max], GFLOP/s of the median");
        for (int g = 0; g < gemms.Length + 2; g++)
        {
            Console.Write($"{(g < gemms.Length ? names[g] : g == gemms.Length ? "5 GEMMs" : "ReLU pass after")}".PadRight(18));
            for (int p = 0; p < providers.Length; p++)
            {
                var o = times[p, g].Order().ToArray();
                double med = o[o.Length / 2];
                Console.Write($" | {providers[p].Name} {med,6:F1} [{o[0]:F1}–{o[^1]:F1}]{(g < gemms.Length ? $" ({flops / med / 1e6:F0})" : "")}");
            }
            Console.WriteLine();
        }
        return 0;
    }
}
