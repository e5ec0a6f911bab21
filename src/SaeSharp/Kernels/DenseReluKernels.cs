using System.Numerics;
using System.Runtime.CompilerServices;
using static SaeSharp.Kernels.TensorPointers;
using static TorchSharp.torch;

namespace SaeSharp.Kernels;

/// <summary>
/// The two passes over the [N, d_sae] matrix of a dense ReLU training step (<see cref="DenseRelu"/>), each fusing what
/// torch runs as separate operations: forward, f = ReLU(p + b) in place with the per-latent sums Σ_n f_nj and counts of
/// positive entries; backward, g = [f &gt; 0]·(g + c) in place with its per-latent sums (the encoder bias gradient).
/// Rows are split over torch's threads (<see cref="RowRanges"/>); per-latent sums are accumulated in float32 over blocks
/// of <see cref="Block"/> rows and in float64 across blocks and threads.
/// </summary>
internal static unsafe class DenseReluKernels
{
    private const int Block = 64;

    /// <summary>In place on the contiguous float32 CPU matrix <paramref name="p"/> [N, d]: p ← ReLU(p + b) (NaN stays
    /// NaN). Returns Σ_n of the result per column [d] (float64) and the count of positive entries per column [d].</summary>
    public static (double[] ColumnSums, long[] Counts) ReluBias(Tensor p, Tensor b)
    {
        long n = p.shape[0], d = p.shape[1];
        SparseKernels.Check(p, d);
        using var bc = b.contiguous();
        if (bc.numel() != d) throw new ArgumentException($"ReluBias: bias has {bc.numel()} entries, expected {d}");
        float* pp = FloatPtr(p), pb = FloatPtr(bc);
        int parts = RowRanges.Count(n);
        var sums = new double[parts][];
        var counts = new long[parts][];
        RowRanges.For(n, (t, start, end) =>
        {
            var sum = new double[d];
            var count = new long[d];
            var blockSum = new float[d];
            var blockCount = new int[d];
            fixed (float* bs = blockSum)
            fixed (int* bn = blockCount)
            {
                for (long r0 = start; r0 < end; r0 += Block)
                {
                    long r1 = Math.Min(end, r0 + Block);
                    for (long r = r0; r < r1; r++) ReluBiasRow(pp + r * d, pb, bs, bn, d);
                    Flush(blockSum, blockCount, sum, count);
                }
            }
            sums[t] = sum;
            counts[t] = count;
        });
        GC.KeepAlive(p);
        return (SumParts(sums, d), SumParts(counts, d));
    }

    /// <summary>In place on <paramref name="g"/> [N, d]: g ← [f &gt; 0]·(g + c) with c [d] per column; returns Σ_n of the
    /// result per column (float64). <paramref name="f"/> is the [N, d] ReLU output (contiguous float32 CPU, as g).</summary>
    public static double[] MaskedGradient(Tensor g, Tensor f, float[] c)
    {
        long n = g.shape[0], d = g.shape[1];
        SparseKernels.Check(g, d);
        SparseKernels.Check(f, d);
        if (f.shape[0] != n || c.Length != d) throw new ArgumentException($"MaskedGradient: shapes [{n}, {d}], f [{f.shape[0]}, {f.shape[1]}], c [{c.Length}]");
        float* pg = FloatPtr(g), pf = FloatPtr(f);
        int parts = RowRanges.Count(n);
        var sums = new double[parts][];
        RowRanges.For(n, (t, start, end) =>
        {
            var sum = new double[d];
            var blockSum = new float[d];
            fixed (float* bs = blockSum, pc = c)
            {
                for (long r0 = start; r0 < end; r0 += Block)
                {
                    long r1 = Math.Min(end, r0 + Block);
                    for (long r = r0; r < r1; r++) MaskRow(pg + r * d, pf + r * d, pc, bs, d);
                    for (int j = 0; j < d; j++) { sum[j] += blockSum[j]; blockSum[j] = 0; }
                }
            }
            sums[t] = sum;
        });
        GC.KeepAlive(g);
        GC.KeepAlive(f);
        return SumParts(sums, d);
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static void ReluBiasRow(float* row, float* b, float* sum, int* count, long d)
    {
        int w = Vector<float>.Count;
        long j = 0;
        for (; j + w <= d; j += w)
        {
            var v = Unsafe.ReadUnaligned<Vector<float>>(row + j) + Unsafe.ReadUnaligned<Vector<float>>(b + j);
            // ≤ 0 is false for NaN, which therefore passes through (as torch's relu).
            var f = Vector.ConditionalSelect(Vector.LessThanOrEqual(v, Vector<float>.Zero), Vector<float>.Zero, v);
            Unsafe.WriteUnaligned(row + j, f);
            Unsafe.WriteUnaligned(sum + j, Unsafe.ReadUnaligned<Vector<float>>(sum + j) + f);
            Unsafe.WriteUnaligned(count + j, Unsafe.ReadUnaligned<Vector<int>>(count + j) - Vector.GreaterThan(f, Vector<float>.Zero));
        }
        for (; j < d; j++)
        {
            float v = row[j] + b[j];
            float f = v <= 0 ? 0 : v;
            row[j] = f;
            sum[j] += f;
            if (f > 0) count[j]++;
        }
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static void MaskRow(float* g, float* f, float* c, float* sum, long d)
    {
        int w = Vector<float>.Count;
        long j = 0;
        for (; j + w <= d; j += w)
        {
            var active = Vector.GreaterThan(Unsafe.ReadUnaligned<Vector<float>>(f + j), Vector<float>.Zero);
            var v = Vector.ConditionalSelect(active, Unsafe.ReadUnaligned<Vector<float>>(g + j) + Unsafe.ReadUnaligned<Vector<float>>(c + j), Vector<float>.Zero);
            Unsafe.WriteUnaligned(g + j, v);
            Unsafe.WriteUnaligned(sum + j, Unsafe.ReadUnaligned<Vector<float>>(sum + j) + v);
        }
        for (; j < d; j++)
        {
            float v = f[j] > 0 ? g[j] + c[j] : 0;
            g[j] = v;
            sum[j] += v;
        }
    }

    private static void Flush(float[] blockSum, int[] blockCount, double[] sum, long[] count)
    {
        for (int j = 0; j < sum.Length; j++)
        {
            sum[j] += blockSum[j];
            count[j] += blockCount[j];
            blockSum[j] = 0;
            blockCount[j] = 0;
        }
    }

    private static T[] SumParts<T>(T[]?[] parts, long d) where T : INumber<T>
    {
        var total = new T[d];
        foreach (var p in parts)
            if (p is not null)
                for (long j = 0; j < d; j++) total[j] += p[j];
        return total;
    }
}
