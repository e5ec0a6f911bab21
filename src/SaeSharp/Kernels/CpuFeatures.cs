using System.Diagnostics;
using static TorchSharp.torch;

namespace SaeSharp.Kernels;

/// <summary>What this CPU offers the kernels, detected once, and the matmul rates measured on it.</summary>
public static class CpuFeatures
{
    /// <summary>Whether this CPU has bfloat16 dot-product instructions (AVX512-BF16 or AMX-BF16). Without them bfloat16
    /// matmuls are emulated and slower than float32. With them they are not always faster: on the Intel Xeon without AMX
    /// (BENCHMARKS.md) libtorch's bfloat16 matmul ran at 0.6–0.7× MKL's float32, so <see cref="Saes.SaeTrainingOptions.Autocast"/>
    /// is checked with <see cref="MatMulGflops"/> (<see cref="AutocastAdvice(int, int)"/>).</summary>
    public static bool Bf16MatMul => CpuKernels.HasBf16;

    /// <summary>GFLOP/s of [<paramref name="rows"/>, <paramref name="dIn"/>]·[<paramref name="dIn"/>, <paramref name="dSae"/>]
    /// on the CPU in <paramref name="dtype"/> (addmm with a bias in float32, mm otherwise, as training runs them): the
    /// best of <paramref name="repeats"/> timed products after a warm-up. <paramref name="product"/> (bias, x, w) replaces
    /// torch's product (the bench times the GEMM libraries with it).</summary>
    public static double MatMulGflops(int rows, int dIn, int dSae, ScalarType dtype, int repeats = 3, Func<Tensor, Tensor, Tensor, Tensor>? product = null)
    {
        using var scope = NewDisposeScope();
        using var _ = no_grad();
        var x = randn(rows, dIn).to(dtype);
        var w = randn(dIn, dSae).to(dtype);
        var b = randn(dSae).to(dtype);
        double best = double.MaxValue;
        for (int i = 0; i <= repeats; i++)
        {
            using var s = NewDisposeScope();
            var sw = Stopwatch.StartNew();
            if (product is not null) product(b, x, w);
            else if (dtype == ScalarType.Float32) addmm(b, x, w, 1, 1);
            else x.mm(w);
            if (i > 0) best = Math.Min(best, sw.Elapsed.TotalSeconds);
        }
        return 2.0 * rows * dIn * dSae / best / 1e9;
    }

    /// <summary>A warning for <c>--autocast</c> given the measured bfloat16 / float32 matmul rate (<paramref name="bf16Speedup"/>)
    /// at the run's shape, or null when bfloat16 is the faster one.</summary>
    public static string? AutocastAdvice(bool bf16Instructions, double bf16Speedup, int dIn, int dSae) =>
        !bf16Instructions
            ? "--autocast: this CPU has no AVX512-BF16/AMX; bfloat16 matmuls will be slower than float32"
            : bf16Speedup < 1
                ? $"--autocast: bfloat16 matmuls ran at {bf16Speedup:F2}× float32's rate on this CPU (measured at d_in {dIn}, d_sae {dSae}); " +
                  "training will be slower than without --autocast"
                : null;

    /// <summary><see cref="AutocastAdvice(bool, double, int, int)"/> for this CPU, measuring the rates (about a tenth of a
    /// second at d_in 512, d_sae 8192) only where it has bfloat16 instructions.</summary>
    public static string? AutocastAdvice(int dIn, int dSae)
    {
        if (!Bf16MatMul) return AutocastAdvice(false, 0, dIn, dSae);
        double ratio = MatMulGflops(1024, dIn, dSae, ScalarType.BFloat16) / MatMulGflops(1024, dIn, dSae, ScalarType.Float32);
        return AutocastAdvice(true, ratio, dIn, dSae);
    }
}
