using System.Numerics;
using System.Runtime.CompilerServices;
using static SaeSharp.Kernels.TensorPointers;
using static TorchSharp.torch;

namespace SaeSharp.Kernels;

/// <summary>Σ x² of a float32 tensor accumulated in float64, read in place: the trainer's gradient-norm clipping, which
/// otherwise made a float64 copy of every gradient each step.</summary>
internal static unsafe class NormKernels
{
    /// <summary>Whether <see cref="SumOfSquares"/> reads <paramref name="t"/> in place: a float32 CPU tensor, with the custom
    /// kernels on, whose elements fill one block of memory (contiguous, or the transpose of a contiguous matrix, as the
    /// sparse pass leaves W_enc's gradient); elsewhere the caller uses torch operations.</summary>
    public static bool Applies(Tensor t) =>
        t.dtype == ScalarType.Float32 && CpuKernels.On(t) &&
        (t.is_contiguous() || (t.dim() == 2 && t.stride(0) == 1 && t.stride(1) == t.shape[0]));

    /// <summary>Σ x² in float64 (each square exact in float64), split over the threads in ranges summed in range order, so
    /// the result does not depend on thread timing.</summary>
    public static double SumOfSquares(Tensor t)
    {
        long n = t.numel();
        if (n == 0) return 0;
        // A transposed contiguous matrix: its transpose is the same block of memory, read as a contiguous tensor.
        using var block = t.is_contiguous() ? null : t.t();
        var whole = block ?? t;
        float* p = FloatPtr(whole);
        var partial = new double[RowRanges.Count(n)];
        if (n < 1 << 16) partial[0] = Sum(p, n);
        else RowRanges.For(n, (r, start, end) => partial[r] = Sum(p + start, end - start));
        double total = 0;
        GC.KeepAlive(whole);
        foreach (var s in partial) total += s;
        return total;
    }

    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private static double Sum(float* p, long n)
    {
        int w = Vector<float>.Count;
        Vector<double> a0 = default, a1 = default, a2 = default, a3 = default;
        long i = 0;
        for (; i + 2 * w <= n; i += 2 * w)
        {
            Vector.Widen(Unsafe.ReadUnaligned<Vector<float>>(p + i), out var l0, out var h0);
            Vector.Widen(Unsafe.ReadUnaligned<Vector<float>>(p + i + w), out var l1, out var h1);
            a0 += l0 * l0;
            a1 += h0 * h0;
            a2 += l1 * l1;
            a3 += h1 * h1;
        }
        double s = Vector.Sum((a0 + a1) + (a2 + a3));
        for (; i < n; i++) s += (double)p[i] * p[i];
        return s;
    }
}
