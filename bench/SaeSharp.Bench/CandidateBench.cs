using System.Diagnostics;
using System.Runtime.InteropServices;
using System.Runtime.Intrinsics;
using System.Runtime.Intrinsics.X86;
using SaeSharp.Kernels;
using SaeSharp.Saes;
using static TorchSharp.torch;

namespace SaeSharp.Bench;

/// <summary>
/// <c>topk-paths</c>: the TopK encoder selection (4096 rows, d_in 512, d_sae 8192, k 32 by default) per kernel path: the
/// float32 reference (addmm + row top-k), and the exact candidate pass (<see cref="CandidateEncoder"/>) on every path this
/// CPU can run, with the candidates recomputed per row. Forcing a lower path here runs that path's code, not at the
/// speed of a CPU that has only it. Usage: <c>topk-paths [--repeats 3] [--rows 4096] [--d-in 512] [--d-sae 8192] [--k 32] [--chunk 1024]
/// [--threads N] [--select-only]</c>; <c>--select-only</c> times the selection alone (the exact top-k of approximations
/// made once), by CPU time.
/// </summary>
internal static class CandidateBench
{
    public static int Run(string[] args)
    {
        var a = BenchArgs.For("topk-paths", args);
        if (a.Int("--threads", 0) is > 0 and var threads) set_num_threads(threads);
        int repeats = a.Int("--repeats", 3), rows = a.Int("--rows", 4096), dIn = a.Int("--d-in", 512), dSae = a.Int("--d-sae", 8192), k = a.Int("--k", 32);
        Machine.Print();
        int chunk = a.Int("--chunk", 1024);
        Console.WriteLine($"top-k selection: {rows} rows, d_in {dIn}, d_sae {dSae}, k {k}, chunks of {chunk} rows; ms best/median of {repeats}");
        using var scope = NewDisposeScope();
        using var _ = no_grad();
        var (x, w, b, encT) = Machine.RandomEncoder(rows, dIn, dSae);
        Report("fp32 addmm + top-k", repeats, () =>
        {
            for (int r = 0; r < rows; r += chunk)
            {
                using var s = NewDisposeScope();
                TopKFamilySae.RowTopK(addmm(b, x.narrow(0, r, Math.Min(chunk, rows - r)), w, 1, 1), k);
            }
            return "";
        });
        if (a.Flag("--select-only"))
        {
            // The selection alone (TopK on approximations made once), best CPU time: comparable on a busy host.
            foreach (var path in CpuKernels.Supported.Reverse())
            {
                if (!CandidateEncoder.Applies(path, dSae) || path == KernelPath.Scalar) continue;
                using var enc = new CandidateEncoder(encT, b, path);
                var aps = new List<CandidateEncoder.Approximation>();
                for (int r = 0; r < rows; r += chunk) aps.Add(enc.Approximate(x.narrow(0, r, Math.Min(chunk, rows - r))));
                using var proc = Process.GetCurrentProcess();
                double best = double.MaxValue, bestWall = double.MaxValue;
                for (int i = 0; i < repeats + 1; i++)
                {
                    proc.Refresh();
                    var c0 = proc.TotalProcessorTime;
                    var sw = Stopwatch.StartNew();
                    foreach (var ap in aps) { using var s2 = NewDisposeScope(); enc.TopK(ap, k); }
                    bestWall = Math.Min(bestWall, sw.Elapsed.TotalMilliseconds);
                    proc.Refresh();
                    if (i > 0) best = Math.Min(best, (proc.TotalProcessorTime - c0).TotalMilliseconds);
                }
                Console.WriteLine($"selection {CpuKernels.Name(path),-12} CPU {best,6:F1} ms, wall {bestWall,6:F1} ms ({enc.Candidates / (double)enc.Rows:F0} candidates/row)");
                foreach (var ap in aps) ap.Dispose();
            }
            return 0;
        }
        foreach (var path in CpuKernels.Supported.Reverse())
        {
            if (!CandidateEncoder.Applies(path, dSae) && path != KernelPath.Scalar) continue;
            if (path == KernelPath.Scalar) continue; // plain loops: orders of magnitude slower, for tests only
            Report($"candidates {CpuKernels.Name(path)}", repeats, () =>
            {
                using var enc = new CandidateEncoder(encT, b, path);
                double approxMs = 0, selectMs = 0, bf16Ms = 0;
                for (int r = 0; r < rows; r += chunk)
                {
                    using var s = NewDisposeScope();
                    var sw = Stopwatch.StartNew();
                    using var ap = enc.Approximate(x.narrow(0, r, Math.Min(chunk, rows - r)));
                    approxMs += sw.Elapsed.TotalMilliseconds;
                    sw.Restart();
                    enc.TopK(ap, k);
                    selectMs += sw.Elapsed.TotalMilliseconds;
                    if (ap.Pre.dtype != ScalarType.BFloat16) continue;
                    sw.Restart();
                    TopKSelection.RowTopKBf16(ap.Pre, b, k);
                    bf16Ms += sw.Elapsed.TotalMilliseconds;
                }
                return $"  (products {approxMs:F0} ms, bounds + exact top-k {selectMs:F0} ms; {enc.Candidates / (double)enc.Rows:F0} candidates/row{(bf16Ms > 0 ? $"; the bf16 ranking alone {bf16Ms:F0} ms" : "")})";
            });
        }
        return 0;
    }

    private static void Report(string name, int repeats, Func<string> body)
    {
        body(); // warm-up
        var times = new List<double>();
        var cpu = new List<double>();
        string note = "";
        using var process = Process.GetCurrentProcess();
        for (int i = 0; i < repeats; i++)
        {
            process.Refresh();
            var cpu0 = process.TotalProcessorTime;
            var sw = Stopwatch.StartNew();
            note = body();
            times.Add(sw.Elapsed.TotalMilliseconds);
            process.Refresh();
            cpu.Add((process.TotalProcessorTime - cpu0).TotalMilliseconds);
        }
        times.Sort();
        cpu.Sort();
        // CPU time (all threads) is the figure to compare on a busy host: it does not count the time the host took a core away.
        Console.WriteLine($"{name,-26} {times[0],8:F0} {times[times.Count / 2],8:F0} ms, CPU {cpu[0]:F0} ms{note}");
    }
}

/// <summary>What the benches print about the machine first: CPU model and features, the kernel path, the float32 FMA
/// peak of a register-only loop on every torch thread, and the encoder-shaped matmul ceilings.</summary>
internal static class Machine
{
    public static void Print(int n = 4096, int dIn = 512, int dSae = 8192)
    {
        Console.WriteLine(CpuKernels.Describe());
        Console.WriteLine($"libtorch: ATen CPU capability {AtenCapability()}");
        Console.WriteLine($"torch threads {get_num_threads()}; float32 FMA peak {FmaPeak():F0} GFLOP/s (register loop, {get_num_threads()} threads, {(Wide ? 512 : 256)}-bit)");
        // Without bf16 hardware (or with oneDNN capped below it) ATen's bfloat16 mm is a single-threaded scalar loop: minutes
        // at the full shape, so its rate is read on 1/16 of the rows.
        int bf16Rows = CpuKernels.HasBf16 ? n : Math.Max(1, n / 16);
        Console.WriteLine($"matmul ceiling {n}x{dIn}·{dIn}x{dSae}: float32 {Ceiling(n, dIn, dSae, ScalarType.Float32):F0} GFLOP/s, bfloat16 {Ceiling(bf16Rows, dIn, dSae, ScalarType.BFloat16):F0} GFLOP/s{(bf16Rows < n ? $" (on {bf16Rows} rows)" : "")} (bf16 hardware: {CpuKernels.HasBf16})");
        Console.WriteLine($"{Blas.Describe()}{(Blas.Available ? $"; float32 ceiling through OpenBLAS {Ceiling(n, dIn, dSae, ScalarType.Float32, GemmProvider.OpenBlas):F0} GFLOP/s" : "")}");
    }

    /// <summary>The benches' encoder problem (seed 1): x [rows, d_in], W_enc [d_in, d_sae] scaled by 1/√d_in, b_enc
    /// [d_sae] and W_encᵀ (contiguous), in the caller's dispose scope.</summary>
    public static (Tensor X, Tensor W, Tensor B, Tensor EncT) RandomEncoder(int rows, int dIn, int dSae)
    {
        var gen = new Generator(1);
        var x = randn(rows, dIn, generator: gen);
        var w = randn(dIn, dSae, generator: gen) / Math.Sqrt(dIn);
        var b = randn(dSae, generator: gen) * 0.1;
        return (x, w, b, w.t().contiguous());
    }

    /// <summary>GFLOP/s of the encoder-shaped matmul (addmm in float32, mm in bfloat16), best of 3; float32 through
    /// <see cref="Blas"/> when <paramref name="gemm"/> is given.</summary>
    public static double Ceiling(int n, int dIn, int dSae, ScalarType dtype, GemmProvider? gemm = null) =>
        gemm is not { } provider
            ? CpuFeatures.MatMulGflops(n, dIn, dSae, dtype)
            : CpuFeatures.MatMulGflops(n, dIn, dSae, dtype, product: (bias, x, w) =>
            {
                try
                {
                    Blas.Provider = provider;
                    return Blas.AddMm(bias, x, w);
                }
                finally { Blas.ResetProvider(); }
            });

    /// <summary>Float32 FMA rate of 10 independent accumulator chains per thread (widest vectors the CPU has), best of 3.</summary>
    public static double FmaPeak()
    {
        int threads = Math.Max(1, get_num_threads());
        const int iters = 20_000_000;
        double best = 0;
        for (int rep = 0; rep < 3; rep++)
        {
            var sw = Stopwatch.StartNew();
            long flops = 0;
            Parallel.For(0, threads, _ => Interlocked.Add(ref flops, Chains(iters)));
            best = Math.Max(best, flops / sw.Elapsed.TotalSeconds / 1e9);
        }
        return best;
    }

    /// <summary>libtorch's <c>at::get_cpu_capability()</c> ("AVX512", "AVX2", "DEFAULT": the vector kernels ATen dispatches to,
    /// which <c>ATEN_CPU_CAPABILITY</c> caps), called through its C++ symbol; "unknown" where that fails.</summary>
    public static string AtenCapability()
    {
        // A std::string (libstdc++'s C++11 ABI) comes back through a hidden result pointer: { char* data; size_t size; char buf[16] }.
        var s = Marshal.AllocHGlobal(32);
        try
        {
            GetCpuCapability(s);
            long size = Marshal.ReadInt64(s, 8);
            string r = Marshal.PtrToStringAnsi(Marshal.ReadIntPtr(s), (int)size);
            return size <= 15 ? r : r + " (string not freed)";
        }
        catch (Exception e) when (e is DllNotFoundException or EntryPointNotFoundException)
        {
            return "unknown";
        }
        finally
        {
            Marshal.FreeHGlobal(s);
        }
    }

    [DllImport("libtorch_cpu", EntryPoint = "_ZN2at18get_cpu_capabilityB5cxx11Ev")]
    private static extern IntPtr GetCpuCapability(IntPtr result);

    /// <summary>Whether the FMA loop uses 512-bit vectors: the CPU and the JIT have them and the kernel path is not capped
    /// below AVX-512 (the AVX2 proxy measures the 256-bit peak).</summary>
    private static bool Wide => Vector512.IsHardwareAccelerated && Avx512F.IsSupported && CpuKernels.Path >= KernelPath.Avx512;

    private static long Chains(int iters)
    {
        if (Wide)
        {
            var m = Vector512.Create(0.999999f); var c = Vector512.Create(1e-7f);
            Vector512<float> a0 = c, a1 = c, a2 = c, a3 = c, a4 = c, a5 = c, a6 = c, a7 = c, a8 = c, a9 = c;
            for (int i = 0; i < iters; i++)
            {
                a0 = Avx512F.FusedMultiplyAdd(a0, m, c); a1 = Avx512F.FusedMultiplyAdd(a1, m, c); a2 = Avx512F.FusedMultiplyAdd(a2, m, c);
                a3 = Avx512F.FusedMultiplyAdd(a3, m, c); a4 = Avx512F.FusedMultiplyAdd(a4, m, c); a5 = Avx512F.FusedMultiplyAdd(a5, m, c);
                a6 = Avx512F.FusedMultiplyAdd(a6, m, c); a7 = Avx512F.FusedMultiplyAdd(a7, m, c); a8 = Avx512F.FusedMultiplyAdd(a8, m, c);
                a9 = Avx512F.FusedMultiplyAdd(a9, m, c);
            }
            Sink(((a0 + a1) + (a2 + a3) + (a4 + a5) + (a6 + a7) + (a8 + a9)).GetElement(0));
            return 10L * 2 * 16 * iters;
        }
        if (Fma.IsSupported)
        {
            var m = Vector256.Create(0.999999f); var c = Vector256.Create(1e-7f);
            Vector256<float> a0 = c, a1 = c, a2 = c, a3 = c, a4 = c, a5 = c, a6 = c, a7 = c, a8 = c, a9 = c;
            for (int i = 0; i < iters; i++)
            {
                a0 = Fma.MultiplyAdd(a0, m, c); a1 = Fma.MultiplyAdd(a1, m, c); a2 = Fma.MultiplyAdd(a2, m, c);
                a3 = Fma.MultiplyAdd(a3, m, c); a4 = Fma.MultiplyAdd(a4, m, c); a5 = Fma.MultiplyAdd(a5, m, c);
                a6 = Fma.MultiplyAdd(a6, m, c); a7 = Fma.MultiplyAdd(a7, m, c); a8 = Fma.MultiplyAdd(a8, m, c);
                a9 = Fma.MultiplyAdd(a9, m, c);
            }
            Sink(((a0 + a1) + (a2 + a3) + (a4 + a5) + (a6 + a7) + (a8 + a9)).GetElement(0));
            return 10L * 2 * 8 * iters;
        }
        float s = 1e-7f;
        for (int i = 0; i < iters; i++) s = s * 0.999999f + 1e-7f;
        Sink(s);
        return 2L * iters;
    }

    private static float _sink;
    private static void Sink(float v) => _sink += v;
}
