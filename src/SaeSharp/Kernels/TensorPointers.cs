using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;
using static TorchSharp.torch;

namespace SaeSharp.Kernels;

/// <summary>Raw pointers to the storage of contiguous CPU tensors, for the kernels in this folder. The caller keeps the
/// tensor alive (and contiguous) while the pointer is used.</summary>
internal static unsafe class TensorPointers
{
    public static float* FloatPtr(Tensor t) => (float*)Unsafe.AsPointer(ref MemoryMarshal.GetReference(t.bytes));

    /// <summary>The storage of a bfloat16 tensor as signed 16-bit words (the sign bit of the bfloat16 is the word's).</summary>
    public static short* ShortPtr(Tensor t) => (short*)Unsafe.AsPointer(ref MemoryMarshal.GetReference(t.bytes));

    /// <summary>The storage of a bfloat16 tensor as unsigned 16-bit words (widening to float32 is a 16-bit left shift).</summary>
    public static ushort* UShortPtr(Tensor t) => (ushort*)Unsafe.AsPointer(ref MemoryMarshal.GetReference(t.bytes));

    public static long* LongPtr(Tensor t)
    {
        if (t.dtype != ScalarType.Int64) throw new ArgumentException($"kernel needs int64 indices, got {t.dtype}");
        return (long*)Unsafe.AsPointer(ref MemoryMarshal.GetReference(t.bytes));
    }
}
