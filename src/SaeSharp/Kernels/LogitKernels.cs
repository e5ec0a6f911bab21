using System.Numerics;
using TorchSharp;
using static TorchSharp.torch;

namespace SaeSharp.Kernels;

/// <summary>
/// Row statistics of [rows, vocab] float32 logits for next-token CE and KL(clean ‖ variant), a row at a time while the row
/// is in cache (a few passes over 4·vocab bytes instead of a dozen elementwise torch passes over the whole chunk), with
/// float64 sums. For clean logits l_c: lse_c = log Σ exp(l_c) and p_c = exp(l_c − lse_c); for a variant l_v: lse_v and
/// Σ_i p_c,i·(l_c,i − l_v,i), so that KL = Σ p_c·(l_c − l_v) + (lse_v − lse_c)·Σ p_c without cancellation between
/// entropies. <see cref="TorchClean"/> and <see cref="TorchVariant"/> computes the same with torch operations (any device or dtype).
/// </summary>
internal static unsafe class LogitKernels
{
    /// <summary>Whether the row kernels apply (contiguous float32 CPU tensors) rather than <see cref="TorchClean"/> and <see cref="TorchVariant"/>.</summary>
    public static bool Applies(Tensor logits) =>
        logits.device_type == DeviceType.CPU && logits.dtype == ScalarType.Float32 && CpuKernels.Path != KernelPath.Torch;

    /// <summary>Clean rows: writes p_c into <paramref name="probs"/> (same shape), returns lse_c and Σ p_c per row.</summary>
    public static (double[] Lse, double[] ProbSum) Clean(Tensor logits, Tensor probs)
    {
        long rows = logits.shape[0];
        int v = (int)logits.shape[1];
        var lse = new double[rows];
        var psum = new double[rows];
        using var l = logits.contiguous();
        float* lp = TensorPointers.FloatPtr(l), pp = TensorPointers.FloatPtr(probs);
        RowRanges.For(rows, (start, end) =>
        {
            for (long r = start; r < end; r++)
            {
                var row = new Span<float>(lp + r * v, v);
                var p = new Span<float>(pp + r * v, v);
                float m = Max(row);
                double s = ExpShifted(row, m, p);
                lse[r] = m + Math.Log(s);
                float inv = (float)(1 / s);
                psum[r] = Scale(p, inv);
            }
        });
        GC.KeepAlive(probs);
        return (lse, psum);
    }

    /// <summary>Variant rows: lse_v and Σ p_c·(l_c − l_v) per row.</summary>
    public static (double[] Lse, double[] Dot) Variant(Tensor logits, Tensor cleanLogits, Tensor cleanProbs)
    {
        long rows = logits.shape[0];
        int v = (int)logits.shape[1];
        var lse = new double[rows];
        var dot = new double[rows];
        using var l = logits.contiguous();
        using var lc = cleanLogits.contiguous();
        float* lp = TensorPointers.FloatPtr(l), cp = TensorPointers.FloatPtr(lc), pp = TensorPointers.FloatPtr(cleanProbs);
        RowRanges.For(rows, (start, end) =>
        {
            for (long r = start; r < end; r++)
            {
                var row = new ReadOnlySpan<float>(lp + r * v, v);
                float m = Max(row);
                var (s, d) = ExpSumAndDot(row, m, new ReadOnlySpan<float>(cp + r * v, v), new ReadOnlySpan<float>(pp + r * v, v));
                lse[r] = m + Math.Log(s);
                dot[r] = d;
            }
        });
        GC.KeepAlive(cleanProbs);
        return (lse, dot);
    }

    /// <summary>The same statistics with torch operations (float64), for devices and dtypes the row kernels do not take.</summary>
    public static (Tensor Lse, Tensor Probs, Tensor ProbSum) TorchClean(Tensor logits)
    {
        var l = logits.to(ScalarType.Float64);
        var lse = l.logsumexp(1);
        var p = (l - lse.unsqueeze(1)).exp();
        return (lse, p, p.sum(1));
    }

    /// <inheritdoc cref="TorchClean"/>
    public static (Tensor Lse, Tensor Dot) TorchVariant(Tensor logits, Tensor cleanLogits, Tensor cleanProbs)
    {
        var l = logits.to(ScalarType.Float64);
        return (l.logsumexp(1), (cleanProbs * (cleanLogits.to(ScalarType.Float64) - l)).sum(1));
    }

    private static float Max(ReadOnlySpan<float> x)
    {
        int w = Vector<float>.Count, i = 0;
        var mv = new Vector<float>(float.NegativeInfinity);
        for (; i + w <= x.Length; i += w) mv = Vector.Max(mv, new Vector<float>(x[i..]));
        float m = float.NegativeInfinity;
        for (int j = 0; j < w; j++) m = Math.Max(m, mv[j]);
        for (; i < x.Length; i++) m = Math.Max(m, x[i]);
        return m;
    }

    /// <summary>e = exp(x − m) into <paramref name="e"/>; returns Σ e in float64.</summary>
    private static double ExpShifted(ReadOnlySpan<float> x, float m, Span<float> e)
    {
        int w = Vector<float>.Count, i = 0;
        var mv = new Vector<float>(m);
        var acc = Vector<double>.Zero;
        for (; i + w <= x.Length; i += w)
        {
            var ev = Vector.Exp(new Vector<float>(x[i..]) - mv);
            ev.CopyTo(e[i..]);
            Vector.Widen(ev, out var lo, out var hi);
            acc += lo + hi;
        }
        double s = Vector.Sum(acc);
        for (; i < x.Length; i++) s += e[i] = MathF.Exp(x[i] - m);
        return s;
    }

    /// <summary>p ·= inv; returns Σ p in float64.</summary>
    private static double Scale(Span<float> p, float inv)
    {
        int w = Vector<float>.Count, i = 0;
        var iv = new Vector<float>(inv);
        var acc = Vector<double>.Zero;
        for (; i + w <= p.Length; i += w)
        {
            var pv = new Vector<float>(p[i..]) * iv;
            pv.CopyTo(p[i..]);
            Vector.Widen(pv, out var lo, out var hi);
            acc += lo + hi;
        }
        double s = Vector.Sum(acc);
        for (; i < p.Length; i++) s += p[i] *= inv;
        return s;
    }

    /// <summary>Σ exp(x − m) and Σ p·(c − x), both in float64, in one pass.</summary>
    private static (double ExpSum, double Dot) ExpSumAndDot(ReadOnlySpan<float> x, float m, ReadOnlySpan<float> c, ReadOnlySpan<float> p)
    {
        int w = Vector<float>.Count, i = 0;
        var mv = new Vector<float>(m);
        Vector<double> es = Vector<double>.Zero, ds = Vector<double>.Zero;
        for (; i + w <= x.Length; i += w)
        {
            var xv = new Vector<float>(x[i..]);
            Vector.Widen(Vector.Exp(xv - mv), out var elo, out var ehi);
            es += elo + ehi;
            // c − x is exact for close values (Sterbenz); the product is exact in float64.
            Vector.Widen(new Vector<float>(c[i..]) - xv, out var dlo, out var dhi);
            Vector.Widen(new Vector<float>(p[i..]), out var plo, out var phi);
            ds += dlo * plo + dhi * phi;
        }
        double s = Vector.Sum(es), d = Vector.Sum(ds);
        for (; i < x.Length; i++)
        {
            s += MathF.Exp(x[i] - m);
            d += (double)p[i] * (c[i] - x[i]);
        }
        return (s, d);
    }
}
