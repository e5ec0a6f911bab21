using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;
using System.Runtime.Intrinsics;
using System.Runtime.Intrinsics.X86;

namespace SaeSharp.Kernels;

/// <summary>
/// int8 products for the candidate pass of <see cref="CandidateEncoder"/>: x ≈ s_n·q_n (per-row scale, q ∈ [−127, 127],
/// stored as q + 128 in unsigned bytes) times w ≈ t_j·p_j (per-column scale, p ∈ [−P, P]), accumulated exactly in int32,
/// written as float32 s_n·t_j·(Σ_i (q_ni + 128)·p_ij − 128·Σ_i p_ij) + bias_j. P is 63 on the <c>vpmaddubsw</c> paths
/// (AVX2, AVX-512: a pair of products must fit an int16) and 127 on the others. The weights are packed in panels of 16
/// columns, 4 consecutive inputs per column adjacent: [panel][i/4][16 columns][4 bytes].
/// </summary>
internal static unsafe class Int8Gemm
{
    public const int Panel = 16;

    /// <summary>The largest weight level |p| on <paramref name="path"/>.</summary>
    public static int WeightLevels(KernelPath path) => path is KernelPath.Avx2 or KernelPath.Avx512 ? 63 : 127;

    /// <summary>Packed int8 weights of a float32 [cols, k] matrix (one row per output column), with the per-column
    /// scale t_j, Σ_i p_ij, and the norms the error bound needs: ‖ŵ_j‖ (ŵ = t_j·p_j) and ‖ŵ_j − w_j‖, in float64.</summary>
    public sealed class Weights : IDisposable
    {
        public required int K { get; init; }
        public required int Cols { get; init; }
        public required KernelPath Path { get; init; }
        public required sbyte* Data { get; init; }
        public required float[] Scale { get; init; }
        public required int[] Sum { get; init; }
        public required double[] QuantNorm { get; init; }
        public required double[] ErrorNorm { get; init; }
        /// <summary>Packed bytes per panel: Kp·16 (Kp = K rounded up to 4).</summary>
        public int PanelBytes => Kp * Panel;
        public int Kp => (K + 3) & ~3;

        public void Dispose() => NativeMemory.AlignedFree(Data);
    }

    /// <summary>Quantises and packs <paramref name="w"/> (float32 [cols, k], contiguous rows; cols a multiple of 16).</summary>
    public static Weights Pack(float* w, int cols, int k, KernelPath path)
    {
        if (cols % Panel != 0) throw new ArgumentException($"int8 products need a multiple of {Panel} columns, got {cols}");
        int levels = WeightLevels(path), kp = (k + 3) & ~3;
        var data = (sbyte*)NativeMemory.AlignedAlloc((nuint)((long)cols * kp), 64);
        var result = new Weights
        {
            K = k, Cols = cols, Path = path, Data = data, Scale = new float[cols], Sum = new int[cols],
            QuantNorm = new double[cols], ErrorNorm = new double[cols],
        };
        Parallel.For(0, cols / Panel, panel =>
        {
            sbyte* dst = data + (long)panel * kp * Panel;
            for (int c = 0; c < Panel; c++)
            {
                int j = panel * Panel + c;
                float* row = w + (long)j * k;
                float max = 0;
                for (int i = 0; i < k; i++) max = MathF.Max(max, MathF.Abs(row[i]));
                float scale = max > 0 && float.IsFinite(max) ? max / levels : 1f;
                float inv = 1f / scale;
                double qn = 0, en = 0;
                int sum = 0;
                for (int i = 0; i < kp; i++)
                {
                    int q = 0;
                    if (i < k)
                    {
                        q = (int)MathF.Round(row[i] * inv);
                        q = Math.Clamp(q, -levels, levels);
                        double deq = (double)scale * q;
                        qn += deq * deq;
                        en += (deq - row[i]) * (deq - row[i]);
                    }
                    dst[(i >> 2) * Panel * 4 + c * 4 + (i & 3)] = (sbyte)q;
                    sum += q;
                }
                result.Scale[j] = scale;
                result.Sum[j] = sum;
                result.QuantNorm[j] = Math.Sqrt(qn);
                result.ErrorNorm[j] = Math.Sqrt(en);
            }
        });
        return result;
    }

    /// <summary>Per-row quantisation of float32 [rows, k] x into bytes q + 128 ([rows, Kp], padding 128), the scales s_n,
    /// and, in float64, ‖x_n‖ and ‖x̂_n − x_n‖.</summary>
    public static void QuantizeRows(float* x, int rows, int k, byte* dst, float[] scale, double[] norm, double[] errorNorm)
    {
        int kp = (k + 3) & ~3;
        Parallel.For(0, rows, r =>
        {
            float* row = x + (long)r * k;
            byte* o = dst + (long)r * kp;
            float max = 0;
            for (int i = 0; i < k; i++) max = MathF.Max(max, MathF.Abs(row[i]));
            float s = max > 0 && float.IsFinite(max) ? max / 127f : 1f;
            float inv = 1f / s;
            double n = 0, e = 0;
            for (int i = 0; i < k; i++)
            {
                int q = Math.Clamp((int)MathF.Round(row[i] * inv), -127, 127);
                o[i] = (byte)(q + 128);
                double deq = (double)s * q;
                n += (double)row[i] * row[i];
                e += (deq - row[i]) * (deq - row[i]);
            }
            for (int i = k; i < kp; i++) o[i] = 128;
            scale[r] = s;
            norm[r] = Math.Sqrt(n);
            errorNorm[r] = float.IsFinite(max) ? Math.Sqrt(e) : double.PositiveInfinity;
        });
    }

    /// <summary>out [rows, Cols] (row stride <see cref="Weights.Cols"/>) = the dequantised product plus bias, on the
    /// weights' path; the panels are split over the threads.</summary>
    public static void Multiply(byte* xq, float[] xScale, int rows, Weights w, float* bias, float* output, int threads)
    {
        if (Int8GemmAvx2.Applies(w.Path)) Int8GemmAvx2.Multiply(xq, xScale, rows, w, bias, output);
        else MultiplyTiles(xq, xScale, rows, w, bias, output, threads);
    }

    /// <summary><see cref="Multiply"/> through <see cref="MicroKernel"/>, 4 rows × 16 columns per call, on any path.</summary>
    internal static void MultiplyTiles(byte* xq, float[] xScale, int rows, Weights w, float* bias, float* output, int threads)
    {
        int panels = w.Cols / Panel;
        threads = Math.Max(1, Math.Min(threads, panels));
        var scales = w.Scale;
        var sums = w.Sum;
        Parallel.For(0, threads, t =>
        {
            int p0 = (int)((long)panels * t / threads), p1 = (int)((long)panels * (t + 1) / threads);
            var corr = stackalloc int[Panel];
            var colScale = stackalloc float[Panel];
            var acc = stackalloc int[4 * Panel];
            for (int p = p0; p < p1; p++)
            {
                for (int c = 0; c < Panel; c++) { corr[c] = 128 * sums[p * Panel + c]; colScale[c] = scales[p * Panel + c]; }
                sbyte* panel = w.Data + (long)p * w.PanelBytes;
                for (int r = 0; r < rows; r += 4)
                {
                    int tile = Math.Min(4, rows - r);
                    MicroKernel(w.Path, xq + (long)r * w.Kp, w.Kp, tile, panel, acc);
                    for (int l = 0; l < tile; l++)
                    {
                        float s = xScale[r + l];
                        float* o = output + (long)(r + l) * w.Cols + p * Panel;
                        for (int c = 0; c < Panel; c++)
                            o[c] = (float)(acc[l * Panel + c] - corr[c]) * (s * colScale[c]) + bias[p * Panel + c];
                    }
                }
            }
        });
    }

    /// <summary>acc[l·16 + c] = Σ_i xq[l, i]·panel[i, c] for the <paramref name="tile"/> (≤ 4) rows of x at
    /// <paramref name="x"/> (stride <paramref name="kp"/>) and one packed panel.</summary>
    private static void MicroKernel(KernelPath path, byte* x, int kp, int tile, sbyte* panel, int* acc)
    {
        switch (path)
        {
            case KernelPath.Avx512 when Avx512BW.IsSupported: Kernel512(x, kp, tile, panel, acc); return;
            case KernelPath.AvxVnni when AvxVnni.IsSupported: Kernel256(x, kp, tile, panel, acc, vnni: true); return;
            case KernelPath.Avx2 when Avx2.IsSupported: Kernel256(x, kp, tile, panel, acc, vnni: false); return;
            default: KernelScalar(x, kp, tile, panel, acc); return;
        }
    }

    private static void KernelScalar(byte* x, int kp, int tile, sbyte* panel, int* acc)
    {
        for (int l = 0; l < tile; l++)
            for (int c = 0; c < Panel; c++)
            {
                int s = 0;
                byte* row = x + (long)l * kp;
                for (int i = 0; i < kp; i++) s += row[i] * panel[(i >> 2) * Panel * 4 + c * 4 + (i & 3)];
                acc[l * Panel + c] = s;
            }
    }

    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private static void Kernel256(byte* x, int kp, int tile, sbyte* panel, int* acc, bool vnni)
    {
        var ones = Vector256.Create((short)1);
        Vector256<int> a0 = default, a1 = default, b0 = default, b1 = default, c0 = default, c1 = default, d0 = default, d1 = default;
        byte* x0 = x, x1 = x + (tile > 1 ? kp : 0), x2 = x + (tile > 2 ? 2 * kp : 0), x3 = x + (tile > 3 ? 3 * kp : 0);
        for (int i = 0; i < kp; i += 4)
        {
            var w0 = Avx.LoadVector256(panel).AsSByte();
            var w1 = Avx.LoadVector256(panel + 32).AsSByte();
            panel += 64;
            var v0 = Vector256.Create(*(int*)(x0 + i)).AsByte();
            var v1 = Vector256.Create(*(int*)(x1 + i)).AsByte();
            var v2 = Vector256.Create(*(int*)(x2 + i)).AsByte();
            var v3 = Vector256.Create(*(int*)(x3 + i)).AsByte();
            if (vnni)
            {
                a0 = AvxVnni.MultiplyWideningAndAdd(a0, v0, w0); a1 = AvxVnni.MultiplyWideningAndAdd(a1, v0, w1);
                b0 = AvxVnni.MultiplyWideningAndAdd(b0, v1, w0); b1 = AvxVnni.MultiplyWideningAndAdd(b1, v1, w1);
                c0 = AvxVnni.MultiplyWideningAndAdd(c0, v2, w0); c1 = AvxVnni.MultiplyWideningAndAdd(c1, v2, w1);
                d0 = AvxVnni.MultiplyWideningAndAdd(d0, v3, w0); d1 = AvxVnni.MultiplyWideningAndAdd(d1, v3, w1);
                continue;
            }
            a0 += Avx2.MultiplyAddAdjacent(Avx2.MultiplyAddAdjacent(v0, w0), ones); a1 += Avx2.MultiplyAddAdjacent(Avx2.MultiplyAddAdjacent(v0, w1), ones);
            b0 += Avx2.MultiplyAddAdjacent(Avx2.MultiplyAddAdjacent(v1, w0), ones); b1 += Avx2.MultiplyAddAdjacent(Avx2.MultiplyAddAdjacent(v1, w1), ones);
            c0 += Avx2.MultiplyAddAdjacent(Avx2.MultiplyAddAdjacent(v2, w0), ones); c1 += Avx2.MultiplyAddAdjacent(Avx2.MultiplyAddAdjacent(v2, w1), ones);
            d0 += Avx2.MultiplyAddAdjacent(Avx2.MultiplyAddAdjacent(v3, w0), ones); d1 += Avx2.MultiplyAddAdjacent(Avx2.MultiplyAddAdjacent(v3, w1), ones);
        }
        a0.Store(acc); a1.Store(acc + 8);
        b0.Store(acc + 16); b1.Store(acc + 24);
        c0.Store(acc + 32); c1.Store(acc + 40);
        d0.Store(acc + 48); d1.Store(acc + 56);
    }

    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private static void Kernel512(byte* x, int kp, int tile, sbyte* panel, int* acc)
    {
        var ones = Vector512.Create((short)1);
        Vector512<int> a = default, b = default, c = default, d = default;
        byte* x0 = x, x1 = x + (tile > 1 ? kp : 0), x2 = x + (tile > 2 ? 2 * kp : 0), x3 = x + (tile > 3 ? 3 * kp : 0);
        for (int i = 0; i < kp; i += 4)
        {
            var w = Avx512F.LoadVector512(panel).AsSByte();
            panel += 64;
            a += Avx512BW.MultiplyAddAdjacent(Avx512BW.MultiplyAddAdjacent(Vector512.Create(*(int*)(x0 + i)).AsByte(), w), ones);
            b += Avx512BW.MultiplyAddAdjacent(Avx512BW.MultiplyAddAdjacent(Vector512.Create(*(int*)(x1 + i)).AsByte(), w), ones);
            c += Avx512BW.MultiplyAddAdjacent(Avx512BW.MultiplyAddAdjacent(Vector512.Create(*(int*)(x2 + i)).AsByte(), w), ones);
            d += Avx512BW.MultiplyAddAdjacent(Avx512BW.MultiplyAddAdjacent(Vector512.Create(*(int*)(x3 + i)).AsByte(), w), ones);
        }
        a.Store(acc); b.Store(acc + 16); c.Store(acc + 32); d.Store(acc + 48);
    }
}
