using System.Collections.Concurrent;
using System.Runtime.InteropServices;
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
/// <c>using var s = value.ToScalar();</c> for the duration of the call. TorchSharp methods that make such a Scalar
/// themselves (<c>arange(stop)</c>, <c>linalg.vector_norm</c>, <c>softplus</c>, its optimizers' <c>step</c>; the list in
/// tests/data/torchsharp_scalar_makers.txt) are called through <see cref="Arange(long, ScalarType?, Device?)"/>,
/// <see cref="VectorNorm"/>, <see cref="Softplus"/> and <see cref="Kernels.AdamOptimizer"/> instead.
/// <c>ScalarLifetimeTests</c> checks the source.
/// </summary>
internal static partial class TorchScalars
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

    /// <summary>1 − <paramref name="x"/> (written <c>Of(1) - x</c>, TorchSharp's <c>Scalar - Tensor</c> adds with an alpha of
    /// 1 it makes and drops).</summary>
    public static Tensor OneMinus(Tensor x) => x.neg().add(Of(1L), One);

    /// <summary><c>torch.arange(stop)</c> through the three-Scalar overload with cached 0 and 1 (TorchSharp's one- and
    /// two-Scalar overloads make those two themselves and drop them). Integral <paramref name="stop"/>: int64 unless
    /// <paramref name="dtype"/> says otherwise, as torch.</summary>
    public static Tensor Arange(Scalar stop, ScalarType? dtype = null, Device? device = null) => arange(Of(0L), stop, One, dtype, device);

    /// <inheritdoc cref="Arange(Scalar, ScalarType?, Device?)"/>
    public static Tensor Arange(long stop, ScalarType? dtype = null, Device? device = null)
    {
        using var s = stop.ToScalar();
        return arange(Of(0L), s, One, dtype, device);
    }

    /// <summary><c>torch.linalg.vector_norm(input, ord, dims, keepdim)</c> with its <paramref name="ord"/> Scalar made and freed
    /// here around the call (TorchSharp's <c>linalg.vector_norm</c> makes it and drops it before libtorch reads it).</summary>
    public static unsafe Tensor VectorNorm(Tensor input, double ord, long[] dims, bool keepdim = false)
    {
        ArgumentNullException.ThrowIfNull(input);
        ArgumentNullException.ThrowIfNull(dims);
        torch.InitializeDeviceType(DeviceType.CPU);
        IntPtr o = THSTorch_float64_to_scalar(ord), res;
        try
        {
            fixed (long* pdims = dims)
                res = THSLinalg_vector_norm(input.Handle, o, pdims, dims.Length, keepdim);
        }
        finally { THSTorch_dispose_scalar(o); }
        GC.KeepAlive(input);
        if (res == IntPtr.Zero) torch.CheckForErrors();
        return Tensor.UnsafeCreateTensor(res);
    }

    /// <summary><c>torch.nn.functional.softplus(input, beta, threshold)</c> (log(1 + e^(βx))/β, x where βx &gt; threshold) with
    /// its two Scalars made and freed here around the call (TorchSharp's <c>softplus</c> makes them and drops them).</summary>
    public static Tensor Softplus(Tensor input, double beta = 1, double threshold = 20)
    {
        ArgumentNullException.ThrowIfNull(input);
        torch.InitializeDeviceType(DeviceType.CPU);
        IntPtr b = THSTorch_float64_to_scalar(beta), t = THSTorch_float64_to_scalar(threshold), res;
        try { res = THSTensor_softplus(input.Handle, b, t); }
        finally
        {
            THSTorch_dispose_scalar(b);
            THSTorch_dispose_scalar(t);
        }
        GC.KeepAlive(input);
        if (res == IntPtr.Zero) torch.CheckForErrors();
        return Tensor.UnsafeCreateTensor(res);
    }

    // TorchSharp's own native entry points (LibTorchSharp, loaded by TorchSharp; signatures of TorchSharp 0.107's PInvoke).
    [LibraryImport("LibTorchSharp")]
    private static unsafe partial IntPtr THSLinalg_vector_norm(IntPtr tensor, IntPtr ord, long* dim, int dimLength, [MarshalAs(UnmanagedType.U1)] bool keepdim);

    [LibraryImport("LibTorchSharp")]
    private static partial IntPtr THSTensor_softplus(IntPtr tensor, IntPtr beta, IntPtr threshold);

    [LibraryImport("LibTorchSharp")]
    private static partial IntPtr THSTorch_float64_to_scalar(double value);

    [LibraryImport("LibTorchSharp")]
    private static partial void THSTorch_dispose_scalar(IntPtr handle);
}
