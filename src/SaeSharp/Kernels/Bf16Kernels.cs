using System.Numerics;
using System.Runtime.CompilerServices;
using TorchSharp;
using static SaeSharp.Kernels.TensorPointers;
using static TorchSharp.torch;

namespace SaeSharp.Kernels;

/// <summary>
/// Vectorised (<see cref="Vector{T}"/>) single-pass kernels over bfloat16 [N, d] matrices, which libtorch runs slowly or
/// in several passes: ReLU with bias and firing counts, masking by positive entries with column sums (ReLU backward,
/// gating), the JumpReLU forward and backward, and ReLU(p·scale + shift) with its backward. Rows are split over threads
/// by <see cref="RowRanges"/>; per-column counts are accumulated in 16-bit lanes and flushed every 32,767 rows.
/// </summary>
internal static unsafe class Bf16Kernels
{
    private const ScalarType Bf16 = ScalarType.BFloat16;

    /// <summary>[d] int64: per column, the number of rows of a bfloat16 [rows, d] matrix with a positive (non-NaN) entry.</summary>
    public static Tensor PositiveCounts(Tensor m) => ColumnCounts(CheckMatrix(m, "PositiveCounts"), relu: false);

    /// <summary>In place ReLU of a contiguous bfloat16 matrix (entries with the sign bit set, −NaN included, become 0); returns
    /// <see cref="PositiveCounts"/> of the result.</summary>
    public static Tensor ReluInPlace(Tensor m)
    {
        if (!m.is_contiguous()) throw new ArgumentException("ReluInPlace needs a contiguous matrix");
        return ColumnCounts(CheckMatrix(m, "ReluInPlace"), relu: true);
    }

    /// <summary>bfloat16 <paramref name="src"/> where <paramref name="gate"/> is positive (and not NaN), else 0: the
    /// backward pass of a ReLU whose output is <paramref name="gate"/>, or a gating. Written into <paramref name="into"/>
    /// (contiguous, may be <paramref name="src"/>) or a new matrix; with <paramref name="columnSums"/>, also the result's
    /// column sums [d] in float32.</summary>
    public static Tensor WherePositive(Tensor gate, Tensor src, Tensor? into = null, bool columnSums = false) =>
        WherePositive(gate, src, into, columnSums, out _);

    /// <inheritdoc cref="WherePositive(Tensor, Tensor, Tensor?, bool)"/>
    public static Tensor WherePositive(Tensor gate, Tensor src, Tensor? into, bool columnSums, out Tensor? sums)
    {
        using var g = CheckMatrix(gate, "WherePositive").contiguous();
        using var s = CheckMatrix(src, "WherePositive").contiguous();
        if (!g.shape.SequenceEqual(s.shape)) throw new ArgumentException("WherePositive needs matrices of one shape");
        var result = into ?? empty(g.shape, dtype: Bf16);
        if (result.dtype != Bf16 || !result.is_contiguous() || !result.shape.SequenceEqual(g.shape))
            throw new ArgumentException("WherePositive writes into a contiguous bfloat16 matrix of the inputs' shape");
        short* pg = ShortPtr(g), ps = ShortPtr(s), po = ShortPtr(result);
        long rows = g.shape[0];
        int d = checked((int)g.shape[1]), w = Vector<short>.Count;
        var partial = new float[]?[RowRanges.Count(rows)];
        RowRanges.For(rows, (t, start, end) =>
        {
            var acc = columnSums ? new float[d] : null;
            fixed (float* pa = acc)
            {
                for (long r = start; r < end; r++)
                {
                    short* gr = pg + r * d, sr = ps + r * d, or = po + r * d;
                    int j = 0;
                    for (; j + w <= d; j += w)
                    {
                        var o = Unsafe.ReadUnaligned<Vector<short>>(sr + j) & Bf16Bits.IsPositive(Unsafe.ReadUnaligned<Vector<short>>(gr + j));
                        Unsafe.WriteUnaligned(or + j, o);
                        if (pa is null) continue;
                        Bf16Bits.Widen(o, out var lo, out var hi);
                        float* a = pa + j;
                        Unsafe.WriteUnaligned(a, Unsafe.ReadUnaligned<Vector<float>>(a) + lo);
                        a += Vector<float>.Count;
                        Unsafe.WriteUnaligned(a, Unsafe.ReadUnaligned<Vector<float>>(a) + hi);
                    }
                    for (; j < d; j++)
                    {
                        or[j] = Bf16Bits.IsPositive(gr[j]) ? sr[j] : (short)0;
                        if (pa is not null) pa[j] += Bf16Bits.ToFloat(or[j]);
                    }
                }
            }
            partial[t] = acc;
        });
        sums = columnSums ? tensor(RowRanges.Sum(partial, d)) : null;
        return result;
    }

    /// <summary>Encoder pre-activations with the ReLU fused: in place on the bfloat16 product <paramref name="m"/>, adds
    /// the float32 <paramref name="bias"/> [d] (the sum rounded to nearest even) and zeroes entries with the sign bit
    /// set; returns <see cref="PositiveCounts"/> of the result.</summary>
    public static Tensor BiasReluInPlace(Tensor m, Tensor bias)
    {
        if (!m.is_contiguous()) throw new ArgumentException("BiasReluInPlace needs a contiguous matrix");
        CheckMatrix(m, "BiasReluInPlace");
        using var b = bias.detach().to(ScalarType.Float32).contiguous();
        if (b.numel() != m.shape[1]) throw new ArgumentException($"BiasReluInPlace needs a [{m.shape[1]}] bias");
        return ColumnCounts(m, relu: true, FloatPtr(b));
    }

    /// <summary>bfloat16 CPU matrix check shared by the kernels; returns <paramref name="m"/>.</summary>
    public static Tensor CheckMatrix(Tensor m, string what)
    {
        if (m.dtype != Bf16 || m.dim() != 2 || m.device_type != DeviceType.CPU)
            throw new ArgumentException($"{what} needs a bfloat16 CPU matrix, got {m.dtype} [{string.Join(", ", m.shape)}]");
        return m;
    }

    /// <summary>Per-column counts of positive (non-NaN) entries of a bfloat16 matrix; with <paramref name="relu"/>, in
    /// place first: adds <paramref name="bias"/> [d] (float32, the sum rounded to nearest even) when given, then zeroes
    /// entries with the sign bit set.</summary>
    private static Tensor ColumnCounts(Tensor m, bool relu, float* bias = null)
    {
        using var c = m.contiguous();
        long rows = c.shape[0];
        int d = checked((int)c.shape[1]);
        short* p = ShortPtr(c);
        var totals = new long[]?[RowRanges.Count(rows)];
        int w = Vector<short>.Count, wf = Vector<float>.Count;
        RowRanges.For(rows, (t, start, end) =>
        {
            var total = new long[d];
            var acc = new short[d];
            fixed (short* pa = acc)
            {
                for (long r0 = start; r0 < end; r0 += short.MaxValue)
                {
                    long r1 = Math.Min(end, r0 + short.MaxValue);
                    for (long r = r0; r < r1; r++)
                    {
                        short* row = p + r * d;
                        int j = 0;
                        for (; j + w <= d; j += w)
                        {
                            var v = Unsafe.ReadUnaligned<Vector<short>>(row + j);
                            if (bias is not null)
                            {
                                Bf16Bits.Widen(v, out var lo, out var hi);
                                v = Bf16Bits.Narrow(lo + Unsafe.ReadUnaligned<Vector<float>>(bias + j), hi + Unsafe.ReadUnaligned<Vector<float>>(bias + j + wf));
                            }
                            if (relu)
                            {
                                v = Vector.AndNot(v, Vector.LessThan(v, Vector<short>.Zero));
                                Unsafe.WriteUnaligned(row + j, v);
                            }
                            Unsafe.WriteUnaligned(pa + j, Unsafe.ReadUnaligned<Vector<short>>(pa + j) - Bf16Bits.IsPositive(v));
                        }
                        for (; j < d; j++)
                        {
                            if (bias is not null) row[j] = Bf16Bits.Round(Bf16Bits.ToFloat(row[j]) + bias[j]);
                            if (relu && row[j] < 0) row[j] = 0;
                            if (Bf16Bits.IsPositive(row[j])) pa[j]++;
                        }
                    }
                    for (int j = 0; j < d; j++) { total[j] += (ushort)pa[j]; pa[j] = 0; }
                }
            }
            totals[t] = total;
        });
        return tensor(RowRanges.Sum(totals, d));
    }

    /// <summary>
    /// Forward (<paramref name="grad"/> null): <paramref name="into"/> = ReLU(p·scale + shift), the float32 value rounded to
    /// nearest even. Backward (<paramref name="into"/> may be <paramref name="grad"/>): with a = p·scale + shift (recomputed,
    /// rounded) and m = [a &gt; 0]: <paramref name="into"/> = grad·scale·m (rounded), <paramref name="gScale"/> =
    /// Σ_n grad·p·m and <paramref name="gShift"/> = Σ_n grad·m (float32 [d]).
    /// </summary>
    public static void AffineRelu(Tensor p, Tensor scale, Tensor shift, Tensor into, Tensor? grad, out Tensor? gScale, out Tensor? gShift)
    {
        long rows = p.shape[0];
        int d = checked((int)p.shape[1]), w = Vector<short>.Count, wf = Vector<float>.Count;
        if (scale.numel() != d || shift.numel() != d || !into.is_contiguous() || into.dtype != Bf16 || !into.shape.SequenceEqual(p.shape)
            || grad is not null && (!grad.is_contiguous() || grad.dtype != Bf16 || !grad.shape.SequenceEqual(p.shape)))
            throw new ArgumentException("AffineRelu kernel needs contiguous bfloat16 [N, d] matrices and float32 [d] vectors");
        short* pp = ShortPtr(p), po = ShortPtr(into), pg = grad is null ? null : ShortPtr(grad);
        float* psc = FloatPtr(scale), psh = FloatPtr(shift);
        bool backward = grad is not null;
        var partialScale = new float[]?[RowRanges.Count(rows)];
        var partialShift = new float[]?[partialScale.Length];
        RowRanges.For(rows, (t, start, end) =>
        {
            var accScale = backward ? new float[d] : null;
            var accShift = backward ? new float[d] : null;
            fixed (float* pas = accScale, pah = accShift)
            {
                for (long r = start; r < end; r++)
                {
                    short* prow = pp + r * d, orow = po + r * d, grow = backward ? pg + r * d : null;
                    int j = 0;
                    for (; j + w <= d; j += w)
                    {
                        Bf16Bits.Widen(Unsafe.ReadUnaligned<Vector<short>>(prow + j), out var xLo, out var xHi);
                        var sLo = Unsafe.ReadUnaligned<Vector<float>>(psc + j);
                        var sHi = Unsafe.ReadUnaligned<Vector<float>>(psc + j + wf);
                        var a = Bf16Bits.Narrow(xLo * sLo + Unsafe.ReadUnaligned<Vector<float>>(psh + j), xHi * sHi + Unsafe.ReadUnaligned<Vector<float>>(psh + j + wf));
                        var positive = Bf16Bits.IsPositive(a);
                        if (!backward)
                        {
                            Unsafe.WriteUnaligned(orow + j, a & positive);
                            continue;
                        }
                        Bf16Bits.Widen(Unsafe.ReadUnaligned<Vector<short>>(grow + j) & positive, out var gLo, out var gHi);
                        Unsafe.WriteUnaligned(orow + j, Bf16Bits.Narrow(gLo * sLo, gHi * sHi));
                        Unsafe.WriteUnaligned(pas + j, Unsafe.ReadUnaligned<Vector<float>>(pas + j) + gLo * xLo);
                        Unsafe.WriteUnaligned(pas + j + wf, Unsafe.ReadUnaligned<Vector<float>>(pas + j + wf) + gHi * xHi);
                        Unsafe.WriteUnaligned(pah + j, Unsafe.ReadUnaligned<Vector<float>>(pah + j) + gLo);
                        Unsafe.WriteUnaligned(pah + j + wf, Unsafe.ReadUnaligned<Vector<float>>(pah + j + wf) + gHi);
                    }
                    for (; j < d; j++)
                    {
                        float x = Bf16Bits.ToFloat(prow[j]);
                        short a = Bf16Bits.Round(x * psc[j] + psh[j]);
                        bool positive = Bf16Bits.IsPositive(a);
                        if (!backward)
                        {
                            orow[j] = positive ? a : (short)0;
                            continue;
                        }
                        float g = positive ? Bf16Bits.ToFloat(grow[j]) : 0f;
                        orow[j] = Bf16Bits.Round(g * psc[j]);
                        pas[j] += g * x;
                        pah[j] += g;
                    }
                }
            }
            partialScale[t] = accScale;
            partialShift[t] = accShift;
        });
        GC.KeepAlive(p);
        GC.KeepAlive(into);
        GC.KeepAlive(grad);
        GC.KeepAlive(scale);
        GC.KeepAlive(shift);
        gScale = gShift = null;
        if (!backward) return;
        gScale = tensor(RowRanges.Sum(partialScale, d));
        gShift = tensor(RowRanges.Sum(partialShift, d));
    }

    /// <summary>
    /// One pass over bfloat16 pre-activations [N, d] and float32 thresholds θ [d]. Forward (<paramref name="grad"/> null):
    /// <paramref name="into"/> = pre·[pre &gt; θ]; returns the per-column counts of pre &gt; θ and of |pre − θ| &lt; h.
    /// Backward: <paramref name="into"/> (may be <paramref name="grad"/>) = grad·[pre &gt; θ] and
    /// <paramref name="kernelSums"/> = Σ_n grad·[|pre − θ| &lt; h] [d] float32; returns nothing (nulls).
    /// </summary>
    public static (Tensor Active, Tensor Kernel) JumpRelu(Tensor pre, Tensor theta, double h, Tensor into, Tensor? grad, out Tensor? kernelSums)
    {
        CheckMatrix(pre, "JumpRelu");
        long rows = pre.shape[0];
        int d = checked((int)pre.shape[1]), w = Vector<short>.Count, wf = Vector<float>.Count;
        if (!pre.is_contiguous() || theta.dtype != ScalarType.Float32 || theta.numel() != d || !into.is_contiguous() || into.dtype != Bf16
            || grad is not null && (!grad.is_contiguous() || grad.dtype != Bf16))
            throw new ArgumentException("JumpRelu kernel needs contiguous bfloat16 [N, d] matrices and float32 θ [d]");
        short* pp = ShortPtr(pre), po = ShortPtr(into), pg = grad is null ? null : ShortPtr(grad);
        float* pt = FloatPtr(theta);
        bool backward = grad is not null;
        var half = new Vector<float>((float)h);
        int ranges = RowRanges.Count(rows);
        var partialActive = new long[]?[ranges];
        var partialKernel = new long[]?[ranges];
        var partialSums = new float[]?[ranges];
        RowRanges.For(rows, (t, start, end) =>
        {
            var active = backward ? null : new long[d];
            var kernel = backward ? null : new long[d];
            var sums = backward ? new float[d] : null;
            var accA = new short[d];
            var accK = new short[d];
            fixed (short* pa = accA, pk = accK)
            fixed (float* ps = sums)
            {
                for (long r0 = start; r0 < end; r0 += short.MaxValue)
                {
                    long r1 = Math.Min(end, r0 + short.MaxValue);
                    for (long r = r0; r < r1; r++)
                    {
                        short* prow = pp + r * d, orow = po + r * d, grow = backward ? pg + r * d : null;
                        int j = 0;
                        for (; j + w <= d; j += w)
                        {
                            var v = Unsafe.ReadUnaligned<Vector<short>>(prow + j);
                            Bf16Bits.Widen(v, out var fLo, out var fHi);
                            var tLo = Unsafe.ReadUnaligned<Vector<float>>(pt + j);
                            var tHi = Unsafe.ReadUnaligned<Vector<float>>(pt + j + wf);
                            var mask = Vector.Narrow(Vector.GreaterThan(fLo, tLo), Vector.GreaterThan(fHi, tHi));
                            var kLo = Vector.LessThan(Vector.Abs(fLo - tLo), half);
                            var kHi = Vector.LessThan(Vector.Abs(fHi - tHi), half);
                            if (!backward)
                            {
                                Unsafe.WriteUnaligned(orow + j, v & mask);
                                Unsafe.WriteUnaligned(pa + j, Unsafe.ReadUnaligned<Vector<short>>(pa + j) - mask);
                                Unsafe.WriteUnaligned(pk + j, Unsafe.ReadUnaligned<Vector<short>>(pk + j) - Vector.Narrow(kLo, kHi));
                                continue;
                            }
                            var gv = Unsafe.ReadUnaligned<Vector<short>>(grow + j);
                            Unsafe.WriteUnaligned(orow + j, gv & mask);
                            Bf16Bits.Widen(gv, out var gLo, out var gHi);
                            Unsafe.WriteUnaligned(ps + j, Unsafe.ReadUnaligned<Vector<float>>(ps + j) + (gLo & Vector.AsVectorSingle(kLo)));
                            Unsafe.WriteUnaligned(ps + j + wf, Unsafe.ReadUnaligned<Vector<float>>(ps + j + wf) + (gHi & Vector.AsVectorSingle(kHi)));
                        }
                        for (; j < d; j++)
                        {
                            float x = Bf16Bits.ToFloat(prow[j]), th = pt[j];
                            bool m = x > th, k = Math.Abs(x - th) < h;
                            if (!backward)
                            {
                                orow[j] = m ? prow[j] : (short)0;
                                if (m) pa[j]++;
                                if (k) pk[j]++;
                                continue;
                            }
                            short gj = grow[j];
                            orow[j] = m ? gj : (short)0;
                            if (k) ps[j] += Bf16Bits.ToFloat(gj);
                        }
                    }
                    if (backward) continue;
                    for (int j = 0; j < d; j++)
                    {
                        active![j] += (ushort)pa[j]; pa[j] = 0;
                        kernel![j] += (ushort)pk[j]; pk[j] = 0;
                    }
                }
            }
            partialActive[t] = active;
            partialKernel[t] = kernel;
            partialSums[t] = sums;
        });
        GC.KeepAlive(pre);
        GC.KeepAlive(into);
        GC.KeepAlive(grad);
        GC.KeepAlive(theta);
        kernelSums = null;
        if (backward)
        {
            kernelSums = tensor(RowRanges.Sum(partialSums, d));
            return (null!, null!);
        }
        return (tensor(RowRanges.Sum(partialActive, d)), tensor(RowRanges.Sum(partialKernel, d)));
    }
}
