using System.Numerics;
using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;
using System.Runtime.Intrinsics;
using System.Runtime.Intrinsics.Arm;
using System.Runtime.Intrinsics.X86;

namespace SaeSharp.Kernels;

/// <summary>
/// int8 products for the candidate pass of <see cref="CandidateEncoder"/>: x ≈ s_n·q_n (per-row scale, q ∈ [−127, 127],
/// stored as q + 128 in unsigned bytes) times w ≈ t_j·p_j (per-column scale, p ∈ [−P, P]), accumulated exactly in int32,
/// written as float32 s_n·t_j·Σ_i q_ni·p_ij + bias_j. The x86 kernels multiply the unsigned bytes and subtract
/// 128·Σ_i p_ij; the NEON kernel flips the bytes back to q (XOR 0x80) and multiplies signed (<c>sdot</c>, or widening
/// multiplies without the dot-product extension), so it needs no correction. P is 63 on the <c>vpmaddubsw</c> paths
/// (AVX2, AVX-512: a pair of products must fit an int16) and 127 on the others. The weights are packed in panels of 16
/// columns, 4 consecutive inputs per column adjacent: [panel][i/4][16 columns][4 bytes].
/// </summary>
internal static unsafe class Int8Gemm
{
    public const int Panel = 16;

    /// <summary>The largest weight level |p| on <paramref name="path"/>.</summary>
    public static int WeightLevels(KernelPath path) => path is KernelPath.Avx2 or KernelPath.Avx512 ? 63 : 127;

    /// <summary>The largest row level |q| on <paramref name="path"/>: 63 where <see cref="Int8GemmAvx2.ShiftWidening"/>
    /// runs the AVX2 products, 127 elsewhere.</summary>
    public static int RowLevels(KernelPath path) => path == KernelPath.Avx2 && Int8GemmAvx2.ShiftWidening ? 63 : 127;

    /// <summary>Whether the micro-kernel of <paramref name="path"/> multiplies the signed q (the NEON kernel on an Arm64
    /// CPU) rather than the stored unsigned q + 128.</summary>
    private static bool SignedKernel(KernelPath path) => path == KernelPath.Neon && AdvSimd.Arm64.IsSupported;

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
        /// <summary>The largest level |q| of the x rows these weights multiply (<see cref="QuantizeRows"/>' levels): 127,
        /// stored as q + 128, or 63, stored as q + 64, for <see cref="Int8GemmAvx2"/>'s shift-widened kernel.</summary>
        public int XLevels { get; init; } = 127;
        /// <summary>Packed bytes per panel: Kp·16 (Kp = K rounded up to 4).</summary>
        public int PanelBytes => Kp * Panel;
        public int Kp => (K + 3) & ~3;

        public void Dispose() => NativeMemory.AlignedFree(Data);
    }

    /// <summary>Quantises and packs <paramref name="w"/> (float32 [cols, k], contiguous rows; cols a multiple of 16), the
    /// panels split over <paramref name="threads"/> threads.</summary>
    public static Weights Pack(float* w, int cols, int k, KernelPath path, int threads) => Pack(w, cols, k, path, threads, vectors: true);

    /// <summary><see cref="Pack(float*, int, int, KernelPath, int)"/>; <paramref name="vectors"/> false packs every column
    /// with the scalar loop (the tests' reference for the vector one); <paramref name="xLevels"/> (63 only on
    /// <see cref="KernelPath.Avx2"/>) replaces <see cref="RowLevels"/>.</summary>
    internal static Weights Pack(float* w, int cols, int k, KernelPath path, int threads, bool vectors, int? xLevels = null)
    {
        if (cols % Panel != 0) throw new ArgumentException($"int8 products need a multiple of {Panel} columns, got {cols}");
        int rowLevels = xLevels ?? RowLevels(path);
        if (rowLevels != 127 && (rowLevels != 63 || path != KernelPath.Avx2))
            throw new ArgumentException($"{rowLevels} row levels on path {CpuKernels.Name(path)}: only avx2 runs 63");
        int levels = WeightLevels(path), kp = (k + 3) & ~3;
        var data = (sbyte*)NativeMemory.AlignedAlloc((nuint)((long)cols * kp), 64);
        var result = new Weights
        {
            K = k, Cols = cols, Path = path, XLevels = rowLevels, Data = data, Scale = new float[cols], Sum = new int[cols],
            QuantNorm = new double[cols], ErrorNorm = new double[cols],
        };
        int panels = cols / Panel;
        threads = Math.Max(1, Math.Min(threads, panels));
        KernelThreads.Run(threads, threads, t =>
        {
            var column = new sbyte[kp];
            fixed (sbyte* q = column)
                for (int panel = (int)((long)panels * t / threads), end = (int)((long)panels * (t + 1) / threads); panel < end; panel++)
                {
                    sbyte* dst = data + (long)panel * kp * Panel;
                    for (int c = 0; c < Panel; c++)
                    {
                        int j = panel * Panel + c;
                        float* row = w + (long)j * k;
                        if (!vectors || !PackColumnVectors(row, k, levels, q, out result.Scale[j], out result.Sum[j], out result.QuantNorm[j], out result.ErrorNorm[j]))
                            PackColumnScalar(row, k, levels, q, out result.Scale[j], out result.Sum[j], out result.QuantNorm[j], out result.ErrorNorm[j]);
                        // Panel layout: groups of four inputs, 16 columns × 4 bytes per group; zeros past k.
                        for (int i = 0; i < kp; i += 4) *(int*)(dst + (i >> 2) * Panel * 4 + c * 4) = *(int*)(q + i);
                    }
                }
        });
        return result;
    }

    /// <summary>One weight column: q = clamp(round(w/t), ±levels) into <paramref name="q"/> (Kp bytes, zeros past k), its
    /// scale t, Σq, ‖t·q‖ and ‖t·q − w‖ in float64.</summary>
    private static void PackColumnScalar(float* row, int k, int levels, sbyte* q, out float scale, out int sum, out double quantNorm, out double errorNorm)
    {
        int kp = (k + 3) & ~3;
        float max = 0;
        for (int i = 0; i < k; i++) max = MathF.Max(max, MathF.Abs(row[i]));
        scale = max > 0 && float.IsFinite(max) ? max / levels : 1f;
        float inv = 1f / scale;
        double qn = 0, en = 0;
        sum = 0;
        for (int i = 0; i < kp; i++)
        {
            int v = 0;
            if (i < k)
            {
                v = Math.Clamp((int)MathF.Round(row[i] * inv), -levels, levels);
                double deq = (double)scale * v;
                qn += deq * deq;
                en += (deq - row[i]) * (deq - row[i]);
            }
            q[i] = (sbyte)v;
            sum += v;
        }
        quantNorm = Math.Sqrt(qn);
        errorNorm = Math.Sqrt(en);
    }

    /// <summary><see cref="PackColumnScalar"/> in vectors for columns whose values are all finite (false, nothing promised,
    /// otherwise): the same scale, bytes and Σq (the same float32 products rounded to nearest even); ‖t·q‖ as t·√Σq²
    /// and ‖t·q − w‖ summed in float64 in another order.</summary>
    private static bool PackColumnVectors(float* row, int k, int levels, sbyte* q, out float scale, out int sum, out double quantNorm, out double errorNorm)
    {
        int w = Vector<float>.Count, kp = (k + 3) & ~3;
        (scale, sum, quantNorm, errorNorm) = (0, 0, 0, 0);
        if (k < 4 * w) return false;
        float max = AbsMax(row, k);
        // Vector.Max may drop a NaN: a non-finite maximum goes to the scalar loop.
        if (!float.IsFinite(max)) return false;
        float s = max > 0 ? max / levels : 1f;
        float inv = 1f / s;
        var vinv = new Vector<float>(inv);
        var lim = new Vector<float>(levels);
        var vs = new Vector<double>(s);
        Vector<double> n0 = default, n1 = default, e0 = default, e1 = default;
        Vector<int> vsum = default, vsq = default;
        int i = 0;
        for (; i + 4 * w <= k; i += 4 * w)
        {
            var b0 = Quantize(row + i, vinv, lim, vs, ref n0, ref n1, ref e0, ref e1);
            var b1 = Quantize(row + i + w, vinv, lim, vs, ref n0, ref n1, ref e0, ref e1);
            var b2 = Quantize(row + i + 2 * w, vinv, lim, vs, ref n0, ref n1, ref e0, ref e1);
            var b3 = Quantize(row + i + 3 * w, vinv, lim, vs, ref n0, ref n1, ref e0, ref e1);
            vsum += (b0 + b1) + (b2 + b3);
            vsq += (b0 * b0 + b1 * b1) + (b2 * b2 + b3 * b3);
            Unsafe.WriteUnaligned(q + i, Vector.Narrow(Vector.Narrow(b0, b1), Vector.Narrow(b2, b3)));
        }
        long sq = 0;
        for (int l = 0; l < w; l++) sq += vsq[l];
        double e = Vector.Sum(e0 + e1);
        int total = Vector.Sum(vsum);
        for (; i < k; i++)
        {
            int v = Math.Clamp((int)MathF.Round(row[i] * inv), -levels, levels);
            q[i] = (sbyte)v;
            total += v;
            sq += (long)v * v;
            double deq = (double)s * v;
            e += (deq - row[i]) * (deq - row[i]);
        }
        for (i = k; i < kp; i++) q[i] = 0;
        (scale, sum, quantNorm, errorNorm) = (s, total, s * Math.Sqrt(sq), Math.Sqrt(e));
        return true;
    }

    /// <summary>Per-row quantisation of float32 [rows, k] x into bytes q + L + 1 ([rows, Kp], padding L + 1), q ∈ [−L, L]
    /// with L = <paramref name="levels"/> (127, or 63 for weights whose <see cref="Weights.XLevels"/> is 63), the scales
    /// s_n = max|x_n|/L, and, in float64, ‖x_n‖ and ‖x̂_n − x_n‖; the rows split over <paramref name="threads"/> threads.</summary>
    public static void QuantizeRows(float* x, int rows, int k, byte* dst, float[] scale, double[] norm, double[] errorNorm, int threads, int levels = 127)
    {
        if (levels is not (127 or 63)) throw new ArgumentException($"row levels are 127 or 63, got {levels}");
        int kp = (k + 3) & ~3;
        threads = Math.Max(1, Math.Min(threads, rows));
        KernelThreads.Run(threads, threads, t =>
        {
            for (int r = (int)((long)rows * t / threads), end = (int)((long)rows * (t + 1) / threads); r < end; r++)
                QuantizeRow(x + (long)r * k, k, kp, levels, dst + (long)r * kp, out scale[r], out norm[r], out errorNorm[r]);
        });
    }

    /// <summary>One row of <see cref="QuantizeRows"/>.</summary>
    private static void QuantizeRow(float* row, int k, int kp, int levels, byte* o, out float scale, out double norm, out double errorNorm)
    {
        if (QuantizeRowVectors(row, k, kp, levels, o, out scale, out norm, out errorNorm)) return;
        float max = 0;
        for (int i = 0; i < k; i++) max = MathF.Max(max, MathF.Abs(row[i]));
        float s = max > 0 && float.IsFinite(max) ? max / levels : 1f;
        float inv = 1f / s;
        double n = 0, e = 0;
        for (int i = 0; i < k; i++)
        {
            int q = Math.Clamp((int)MathF.Round(row[i] * inv), -levels, levels);
            o[i] = (byte)(q + levels + 1);
            double deq = (double)s * q;
            n += (double)row[i] * row[i];
            e += (deq - row[i]) * (deq - row[i]);
        }
        for (int i = k; i < kp; i++) o[i] = (byte)(levels + 1);
        scale = s;
        norm = Math.Sqrt(n);
        errorNorm = float.IsFinite(max) ? Math.Sqrt(e) : double.PositiveInfinity;
    }

    /// <summary><see cref="QuantizeRows"/> of one row in vectors, for rows whose values are all finite (false, nothing
    /// written, otherwise): the same scale and bytes as the scalar loop (the same float32 products rounded to nearest
    /// even), the norms summed in float64 in another order.</summary>
    private static bool QuantizeRowVectors(float* row, int k, int kp, int levels, byte* o, out float scale, out double norm, out double errorNorm)
    {
        int w = Vector<float>.Count;
        (scale, norm, errorNorm) = (0, 0, 0);
        if (k < 4 * w) return false;
        float max = AbsMax(row, k);
        // Vector.Max may drop a NaN: a non-finite maximum or sum sends the row to the scalar loop.
        if (!float.IsFinite(max)) return false;
        float s = max > 0 ? max / levels : 1f;
        float inv = 1f / s;
        var vinv = new Vector<float>(inv);
        var lim = new Vector<float>(levels);
        var off = new Vector<int>(levels + 1);
        var n0 = Vector<double>.Zero;
        var n1 = Vector<double>.Zero;
        var e0 = Vector<double>.Zero;
        var e1 = Vector<double>.Zero;
        var vs = new Vector<double>(s);
        int i = 0;
        for (; i + 4 * w <= k; i += 4 * w)
        {
            var b0 = Quantize(row + i, vinv, lim, vs, ref n0, ref n1, ref e0, ref e1) + off;
            var b1 = Quantize(row + i + w, vinv, lim, vs, ref n0, ref n1, ref e0, ref e1) + off;
            var b2 = Quantize(row + i + 2 * w, vinv, lim, vs, ref n0, ref n1, ref e0, ref e1) + off;
            var b3 = Quantize(row + i + 3 * w, vinv, lim, vs, ref n0, ref n1, ref e0, ref e1) + off;
            var lo = Vector.Narrow(Vector.AsVectorUInt32(b0), Vector.AsVectorUInt32(b1));
            var hi = Vector.Narrow(Vector.AsVectorUInt32(b2), Vector.AsVectorUInt32(b3));
            Unsafe.WriteUnaligned(o + i, Vector.Narrow(lo, hi));
        }
        double n = Vector.Sum(n0 + n1), e = Vector.Sum(e0 + e1);
        for (; i < k; i++)
        {
            int q = Math.Clamp((int)MathF.Round(row[i] * inv), -levels, levels);
            o[i] = (byte)(q + levels + 1);
            double deq = (double)s * q;
            n += (double)row[i] * row[i];
            e += (deq - row[i]) * (deq - row[i]);
        }
        if (!double.IsFinite(n)) return false;
        for (i = k; i < kp; i++) o[i] = (byte)(levels + 1);
        (scale, norm, errorNorm) = (s, Math.Sqrt(n), Math.Sqrt(e));
        return true;
    }

    /// <summary>max |x_i| over k floats in vectors (Vector.Max may drop a NaN: callers check the result is finite and
    /// send non-finite rows to their scalar loop).</summary>
    private static float AbsMax(float* row, int k)
    {
        int w = Vector<float>.Count, i = 0;
        var vmax = Vector<float>.Zero;
        for (; i + w <= k; i += w) vmax = Vector.Max(vmax, Vector.Abs(Unsafe.ReadUnaligned<Vector<float>>(row + i)));
        float max = 0;
        for (int l = 0; l < w; l++) max = MathF.Max(max, vmax[l]);
        for (; i < k; i++) max = MathF.Max(max, MathF.Abs(row[i]));
        return max;
    }

    /// <summary>q = clamp(round(x·inv), ±lim) of one vector of finite x, with Σx² and Σ(s·q − x)² added in float64.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static Vector<int> Quantize(float* p, Vector<float> inv, Vector<float> lim, Vector<double> s,
        ref Vector<double> n0, ref Vector<double> n1, ref Vector<double> e0, ref Vector<double> e1)
    {
        var v = Unsafe.ReadUnaligned<Vector<float>>(p);
        var q = Vector.Min(Vector.Max(Vector.Round(v * inv), -lim), lim);
        Vector.Widen(v, out var x0, out var x1);
        Vector.Widen(q, out var q0, out var q1);
        n0 += x0 * x0;
        n1 += x1 * x1;
        var d0 = s * q0 - x0;
        var d1 = s * q1 - x1;
        e0 += d0 * d0;
        e1 += d1 * d1;
        return Vector.ConvertToInt32(q);
    }

    /// <summary>out [rows, Cols] (row stride <see cref="Weights.Cols"/>) = the dequantised product plus bias, on the
    /// weights' path; the panels are split over the threads.</summary>
    public static void Multiply(byte* xq, float[] xScale, int rows, Weights w, float* bias, float* output, int threads)
    {
        if (Int8GemmAvx2.Applies(w.Path)) Int8GemmAvx2.Multiply(xq, xScale, rows, w, bias, output);
        else if (Int8GemmAvx512.Applies(w.Path)) Int8GemmAvx512.Multiply(xq, xScale, rows, w, bias, output);
        else MultiplyTiles(xq, xScale, rows, w, bias, output, threads);
    }

    /// <summary><see cref="Multiply"/> through <see cref="MicroKernel"/>, 4 rows × 16 columns per call, on any path.</summary>
    internal static void MultiplyTiles(byte* xq, float[] xScale, int rows, Weights w, float* bias, float* output, int threads)
    {
        var scales = w.Scale;
        ForPanels(xq, rows, w, threads, (p, r, tile, acc) =>
        {
            for (int l = 0; l < tile; l++)
            {
                float s = xScale[r + l];
                float* o = output + (long)(r + l) * w.Cols + p * Panel;
                for (int c = 0; c < Panel; c++)
                    o[c] = (float)acc[l * Panel + c] * (s * scales[p * Panel + c]) + bias[p * Panel + c];
            }
        });
    }

    /// <summary>The exact integer products Σ_i q_ni·p_ij into <paramref name="output"/> [rows, Cols], on the weights'
    /// path (the kernels' check against <see cref="KernelPath.Scalar"/>).</summary>
    internal static void Products(byte* xq, int rows, Weights w, int* output, int threads) =>
        ForPanels(xq, rows, w, threads, (p, r, tile, acc) =>
        {
            for (int l = 0; l < tile; l++)
                for (int c = 0; c < Panel; c++) output[(long)(r + l) * w.Cols + p * Panel + c] = acc[l * Panel + c];
        });

    private delegate void TileSink(int panel, int row, int tile, int* acc);

    /// <summary>Runs the micro-kernel over every (panel, tile of ≤ 4 rows), panels split over the threads, and hands
    /// <paramref name="sink"/> acc[l·16 + c] = Σ_i q·p for the tile's rows l and the panel's columns c.</summary>
    private static void ForPanels(byte* xq, int rows, Weights w, int threads, TileSink sink)
    {
        int panels = w.Cols / Panel;
        threads = Math.Max(1, Math.Min(threads, panels));
        var sums = w.Sum;
        bool signed = SignedKernel(w.Path);
        KernelThreads.Run(threads, threads, t =>
        {
            int p0 = (int)((long)panels * t / threads), p1 = (int)((long)panels * (t + 1) / threads);
            var corr = stackalloc int[Panel];
            var acc = stackalloc int[4 * Panel];
            for (int p = p0; p < p1; p++)
            {
                for (int c = 0; c < Panel; c++) corr[c] = signed ? 0 : (w.XLevels + 1) * sums[p * Panel + c];
                sbyte* panel = w.Data + (long)p * w.PanelBytes;
                for (int r = 0; r < rows; r += 4)
                {
                    int tile = Math.Min(4, rows - r);
                    MicroKernel(w.Path, xq + (long)r * w.Kp, w.Kp, tile, panel, acc);
                    for (int l = 0; l < tile; l++)
                        for (int c = 0; c < Panel; c++) acc[l * Panel + c] -= corr[c];
                    sink(p, r, tile, acc);
                }
            }
        });
    }

    /// <summary>The blocked drivers' shared loop (<see cref="Int8GemmAvx2"/>, <see cref="Int8GemmAvx512"/>): each thread takes
    /// a contiguous range of rows and walks it in blocks of <paramref name="blockRows"/> rows against every weight panel,
    /// <paramref name="tileRows"/> rows per call of <paramref name="tile"/> (x, kp, rows in the tile, panel, (L + 1)·Σp, column
    /// scales, bias, row scales, output, output stride), which writes the dequantised tile.</summary>
    internal static void MultiplyBlocked(byte* xq, float[] xScale, int rows, Weights w, float* bias, float* output, int tileRows, int blockRows,
        delegate*<byte*, int, int, sbyte*, int*, float*, float*, float*, float*, int, void> tile)
    {
        int cols = w.Cols, kp = w.Kp, panels = cols / Panel;
        var corr = new int[cols];
        for (int j = 0; j < cols; j++) corr[j] = (w.XLevels + 1) * w.Sum[j];
        var scale = w.Scale;
        nint tilePtr = (nint)tile;
        RowRanges.For(rows, (start, end) =>
        {
            var run = (delegate*<byte*, int, int, sbyte*, int*, float*, float*, float*, float*, int, void>)tilePtr;
            fixed (int* pCorr = corr)
            fixed (float* pScale = scale, pX = xScale)
            {
                for (long b0 = start; b0 < end; b0 += blockRows)
                {
                    long b1 = Math.Min(end, b0 + blockRows);
                    for (int p = 0; p < panels; p++)
                    {
                        sbyte* panel = w.Data + (long)p * w.PanelBytes;
                        int c0 = p * Panel;
                        for (long r = b0; r < b1; r += tileRows)
                            run(xq + r * kp, kp, (int)Math.Min(tileRows, b1 - r), panel, pCorr + c0, pScale + c0, bias + c0,
                                pX + r, output + r * cols + c0, cols);
                    }
                }
            }
        });
    }

    /// <summary>acc[l·16 + c] = Σ_i xq[l, i]·panel[i, c] for the <paramref name="tile"/> (≤ 4) rows of x at
    /// <paramref name="x"/> (stride <paramref name="kp"/>) and one packed panel; with xq − 128 = q in place of xq where
    /// <see cref="SignedKernel"/>.</summary>
    private static void MicroKernel(KernelPath path, byte* x, int kp, int tile, sbyte* panel, int* acc)
    {
        switch (path)
        {
            case KernelPath.Avx512 when Avx512BW.IsSupported: Kernel512(x, kp, tile, panel, acc); return;
            case KernelPath.AvxVnni when AvxVnni.IsSupported: Kernel256(x, kp, tile, panel, acc, vnni: true); return;
            case KernelPath.Avx2 when Avx2.IsSupported: Kernel256(x, kp, tile, panel, acc, vnni: false); return;
            case KernelPath.Neon when Dp.IsSupported && AdvSimd.Arm64.IsSupported: KernelNeonDot(x, kp, tile, panel, acc); return;
            case KernelPath.Neon when AdvSimd.Arm64.IsSupported: KernelNeon(x, kp, tile, panel, acc); return;
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
    /// <summary>Arm64 with the dot-product extension: per 4 inputs, one <c>sdot</c> per (row, 4 columns) adds the four
    /// products q·p of each column to its int32 lane; q = the stored byte XOR 0x80, so no correction.</summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private static void KernelNeonDot(byte* x, int kp, int tile, sbyte* panel, int* acc)
    {
        const int Flip = unchecked((int)0x80808080);
        Vector128<int> a0 = default, a1 = default, a2 = default, a3 = default, b0 = default, b1 = default, b2 = default, b3 = default;
        Vector128<int> c0 = default, c1 = default, c2 = default, c3 = default, d0 = default, d1 = default, d2 = default, d3 = default;
        byte* x0 = x, x1 = x + (tile > 1 ? kp : 0), x2 = x + (tile > 2 ? 2 * kp : 0), x3 = x + (tile > 3 ? 3 * kp : 0);
        for (int i = 0; i < kp; i += 4)
        {
            var w0 = AdvSimd.LoadVector128(panel);
            var w1 = AdvSimd.LoadVector128(panel + 16);
            var w2 = AdvSimd.LoadVector128(panel + 32);
            var w3 = AdvSimd.LoadVector128(panel + 48);
            panel += 64;
            var v = Vector128.Create(*(int*)(x0 + i) ^ Flip).AsSByte();
            a0 = Dp.DotProduct(a0, v, w0); a1 = Dp.DotProduct(a1, v, w1); a2 = Dp.DotProduct(a2, v, w2); a3 = Dp.DotProduct(a3, v, w3);
            v = Vector128.Create(*(int*)(x1 + i) ^ Flip).AsSByte();
            b0 = Dp.DotProduct(b0, v, w0); b1 = Dp.DotProduct(b1, v, w1); b2 = Dp.DotProduct(b2, v, w2); b3 = Dp.DotProduct(b3, v, w3);
            v = Vector128.Create(*(int*)(x2 + i) ^ Flip).AsSByte();
            c0 = Dp.DotProduct(c0, v, w0); c1 = Dp.DotProduct(c1, v, w1); c2 = Dp.DotProduct(c2, v, w2); c3 = Dp.DotProduct(c3, v, w3);
            v = Vector128.Create(*(int*)(x3 + i) ^ Flip).AsSByte();
            d0 = Dp.DotProduct(d0, v, w0); d1 = Dp.DotProduct(d1, v, w1); d2 = Dp.DotProduct(d2, v, w2); d3 = Dp.DotProduct(d3, v, w3);
        }
        a0.Store(acc); a1.Store(acc + 4); a2.Store(acc + 8); a3.Store(acc + 12);
        b0.Store(acc + 16); b1.Store(acc + 20); b2.Store(acc + 24); b3.Store(acc + 28);
        c0.Store(acc + 32); c1.Store(acc + 36); c2.Store(acc + 40); c3.Store(acc + 44);
        d0.Store(acc + 48); d1.Store(acc + 52); d2.Store(acc + 56); d3.Store(acc + 60);
    }

    /// <summary>Arm64 without the dot-product extension, one row at a time: <c>smull</c>/<c>smull2</c> multiply q·p into
    /// int16 (|q·p| ≤ 127²), <c>sadalp</c> adds adjacent pairs into int32 lanes (two per column), and <c>addp</c> joins
    /// each column's two lanes at the end.</summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private static void KernelNeon(byte* x, int kp, int tile, sbyte* panel, int* acc)
    {
        const int Flip = unchecked((int)0x80808080);
        for (int l = 0; l < tile; l++)
        {
            byte* xr = x + (long)l * kp;
            sbyte* pw = panel;
            Vector128<int> s0 = default, s1 = default, s2 = default, s3 = default, s4 = default, s5 = default, s6 = default, s7 = default;
            for (int i = 0; i < kp; i += 4)
            {
                var v = Vector64.Create(*(int*)(xr + i) ^ Flip).AsSByte();
                var w0 = AdvSimd.LoadVector128(pw);
                var w1 = AdvSimd.LoadVector128(pw + 16);
                var w2 = AdvSimd.LoadVector128(pw + 32);
                var w3 = AdvSimd.LoadVector128(pw + 48);
                pw += 64;
                s0 = AdvSimd.AddPairwiseWideningAndAdd(s0, AdvSimd.MultiplyWideningLower(v, w0.GetLower()));
                s1 = AdvSimd.AddPairwiseWideningAndAdd(s1, AdvSimd.MultiplyWideningLower(v, w0.GetUpper()));
                s2 = AdvSimd.AddPairwiseWideningAndAdd(s2, AdvSimd.MultiplyWideningLower(v, w1.GetLower()));
                s3 = AdvSimd.AddPairwiseWideningAndAdd(s3, AdvSimd.MultiplyWideningLower(v, w1.GetUpper()));
                s4 = AdvSimd.AddPairwiseWideningAndAdd(s4, AdvSimd.MultiplyWideningLower(v, w2.GetLower()));
                s5 = AdvSimd.AddPairwiseWideningAndAdd(s5, AdvSimd.MultiplyWideningLower(v, w2.GetUpper()));
                s6 = AdvSimd.AddPairwiseWideningAndAdd(s6, AdvSimd.MultiplyWideningLower(v, w3.GetLower()));
                s7 = AdvSimd.AddPairwiseWideningAndAdd(s7, AdvSimd.MultiplyWideningLower(v, w3.GetUpper()));
            }
            int* o = acc + l * Panel;
            AdvSimd.Arm64.AddPairwise(s0, s1).Store(o);
            AdvSimd.Arm64.AddPairwise(s2, s3).Store(o + 4);
            AdvSimd.Arm64.AddPairwise(s4, s5).Store(o + 8);
            AdvSimd.Arm64.AddPairwise(s6, s7).Store(o + 12);
        }
    }
}
