using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;
using static TorchSharp.torch;

namespace SaeSharp.Kernels;

/// <summary>Raw pointers to the storage of contiguous CPU tensors, for the kernels in this folder. The method that takes a
/// pointer holds the tensor until it is done with it on every way out (a <c>using</c> local; a <c>GC.KeepAlive</c> in a
/// <c>finally</c>; or a <c>GC.KeepAlive</c> of it, or a <c>return</c> of the local, after the work with no return, throw or
/// jump out in between; TensorLifetimeSourceTests), whatever dispose scope its caller has. A tensor for which <see cref="CpuKernels.On"/> is false (another
/// device, or <c>SAESHARP_KERNELS=torch</c>) is refused: a kernel reached without that check would otherwise read device
/// memory from the host, and the torch-path tests would not notice a kernel that runs where only torch operations should.</summary>
internal static unsafe class TensorPointers
{
    public static float* FloatPtr(Tensor t) => (float*)Storage(t);

    /// <summary>The storage of a bfloat16 tensor as signed 16-bit words (the sign bit of the bfloat16 is the word's).</summary>
    public static short* ShortPtr(Tensor t) => (short*)Storage(t);

    /// <summary>The storage of a bfloat16 tensor as unsigned 16-bit words (widening to float32 is a 16-bit left shift).</summary>
    public static ushort* UShortPtr(Tensor t) => (ushort*)Storage(t);

    public static long* LongPtr(Tensor t)
    {
        if (t.dtype != ScalarType.Int64) throw new ArgumentException($"kernel needs int64 indices, got {t.dtype}");
        return (long*)Storage(t);
    }

    private static void* Storage(Tensor t)
    {
        if (!CpuKernels.On(t))
            throw new InvalidOperationException($"a custom CPU kernel was given a {t.device_type} tensor with kernel path {CpuKernels.Name(CpuKernels.Path)}: " +
                                                "its caller must check CpuKernels.On and run torch operations instead");
        return Unsafe.AsPointer(ref MemoryMarshal.GetReference(t.bytes));
    }
}
