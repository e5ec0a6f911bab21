using System.Collections.Concurrent;
using TorchSharp;
using static TorchSharp.torch;

namespace SaeSharp;

/// <summary>
/// TorchSharp <see cref="Scalar"/>s that outlive the native call they are passed to. A Scalar made by an implicit
/// conversion (<c>x.clamp_min(0)</c>, <c>x * 2.0</c>, <c>index_add_(0, i, s, 1)</c>) is unreachable as soon as its handle
/// has been read, so a garbage collection started by another thread can run its finalizer, which frees the native
/// <c>c10::Scalar</c> while libtorch is still reading it: rarely, a long run dies with
/// "Expected false to be true … toLong" (or reads a wrong value). Every Scalar the library passes is therefore either
/// a cached constant from <see cref="Of(double)"/> / <see cref="Of(long)"/>, or a runtime value held in a
/// <c>using var s = value.ToScalar();</c> for the duration of the call. <c>ScalarLifetimeTests</c> checks the source.
/// </summary>
internal static class TorchScalars
{
    private static readonly ConcurrentDictionary<double, Scalar> Doubles = new();
    private static readonly ConcurrentDictionary<long, Scalar> Longs = new();

    /// <summary>The floating-point Scalar <paramref name="value"/>, made once and kept for the process: for constants
    /// written in the code, not for values computed at run time (each distinct value stays cached).</summary>
    public static Scalar Of(double value) => Doubles.GetOrAdd(value, v => v.ToScalar());

    /// <summary>The integral Scalar <paramref name="value"/> (integer type promotion: <c>long</c> tensors stay <c>long</c>),
    /// made once and kept for the process; for constants written in the code.</summary>
    public static Scalar Of(long value) => Longs.GetOrAdd(value, v => v.ToScalar());

    /// <summary>1, integral: the alpha of <c>a.add(b, TorchScalars.One)</c>, written instead of <c>a + b</c> or
    /// <c>a.add(b)</c>, which pass an alpha of 1 that TorchSharp made and dropped itself.</summary>
    public static Scalar One => Of(1);

    /// <summary>The value of a one-element tensor as float (TorchSharp's <c>ToSingle()</c> reads it through a Scalar it
    /// drops before reading).</summary>
    public static float SingleOf(Tensor t)
    {
        using var s = t.ToScalar();
        return s.ToSingle();
    }
}
