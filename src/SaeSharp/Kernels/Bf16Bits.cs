using System.Numerics;
using System.Runtime.CompilerServices;

namespace SaeSharp.Kernels;

/// <summary>bfloat16 as bits: a bfloat16 is the high half-word of a float32, so widening is a 16-bit left shift and
/// narrowing rounds the low half-word to nearest even. Positive means 0 &lt; bits ≤ 0x7F80 as a signed word
/// (+∞ included; NaN, zeros and negatives not).</summary>
internal static class Bf16Bits
{
    /// <summary>The float32 bit pattern of a bfloat16 0x7F80 (+∞): positive words above it are NaNs.</summary>
    public const short PositiveInfinity = 0x7F80;

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static float ToFloat(ushort v) => BitConverter.Int32BitsToSingle(v << 16);

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static float ToFloat(short v) => BitConverter.Int32BitsToSingle((ushort)v << 16);

    /// <summary>The float32 rounded to the nearest even bfloat16.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static short Round(float v)
    {
        uint bits = BitConverter.SingleToUInt32Bits(v);
        return (short)((bits + 0x7FFF + ((bits >> 16) & 1)) >> 16);
    }

    /// <summary>float32 bit patterns rounded to the nearest even bfloat16, as the high half-word (then shifted down).</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static Vector<uint> Round(Vector<uint> bits) =>
        (bits + new Vector<uint>(0x7FFF) + ((bits >> 16) & Vector<uint>.One)) >> 16;

    /// <summary>Whether a bfloat16 word is positive and not NaN.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static bool IsPositive(short v) => v > 0 && v <= PositiveInfinity;

    /// <summary>All-ones lanes where the bfloat16 words are positive and not NaN.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static Vector<short> IsPositive(Vector<short> v) =>
        Vector.GreaterThan(v, Vector<short>.Zero) & Vector.LessThanOrEqual(v, new Vector<short>(PositiveInfinity));

    /// <summary>The two float32 halves of a vector of bfloat16 words.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static void Widen(Vector<short> v, out Vector<float> lo, out Vector<float> hi)
    {
        Vector.Widen(Vector.AsVectorUInt16(v), out var l, out var h);
        lo = Vector.AsVectorSingle(l << 16);
        hi = Vector.AsVectorSingle(h << 16);
    }

    /// <summary>Two float32 vectors rounded to nearest even and packed into one vector of bfloat16 words.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static Vector<short> Narrow(Vector<float> lo, Vector<float> hi) =>
        Vector.AsVectorInt16(Vector.Narrow(Round(Vector.AsVectorUInt32(lo)), Round(Vector.AsVectorUInt32(hi))));
}
