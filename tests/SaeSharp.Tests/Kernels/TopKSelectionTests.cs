using SaeSharp.Kernels;

namespace SaeSharp.Tests.Kernels;

/// <summary><see cref="TopKSelection.KthLowerBound"/> against its definition worked out here: the smallest float whose
/// order-preserving key has the 16-bit prefix of the k-th largest value's key.</summary>
public class TopKSelectionTests
{
    /// <summary>For x ≥ +0 the key is the bits with the sign bit set, so the smallest value of its 16-bit bucket clears the
    /// low 16 bits; for x ≤ −0 the key is the bits flipped, so the smallest value sets them (a larger magnitude).</summary>
    private static float BucketFloor(float x)
    {
        int bits = BitConverter.SingleToInt32Bits(x);
        return BitConverter.Int32BitsToSingle(bits >= 0 ? bits & ~0xFFFF : bits | 0xFFFF);
    }

    public static TheoryData<string, int, int> Cases() => new()
    {
        { "normal", 512, 32 }, { "normal", 517, 1 }, { "normal", 37, 37 }, { "negative", 512, 32 }, { "mixed-signs", 300, 150 },
        { "ties", 512, 32 }, { "all-equal", 64, 10 }, { "with-infinities", 128, 5 }, { "minus-infinity-kth", 40, 38 },
        { "tiny", 96, 7 },
        // bfloat16-exact values (each its own bucket floor), the k-th largest and the smallest in the scalar tail.
        { "descending-integers", 37, 35 }, { "descending-integers", 37, 37 },
    };

    [Theory]
    [MemberData(nameof(Cases))]
    public unsafe void The_threshold_is_the_floor_of_the_kth_largest_bucket(string kind, int n, int k)
    {
        var rng = new Random(n * 31 + k);
        var v = new float[n];
        for (int j = 0; j < n; j++)
        {
            float g = (float)(rng.NextDouble() * 2 - 1);
            v[j] = kind switch
            {
                "negative" => -1 - 10 * Math.Abs(g),
                "mixed-signs" => 3 * g,
                "ties" => MathF.Round(4 * g, 1),
                "all-equal" => 0.75f,
                "tiny" => g * 1e-40f, // subnormal
                "descending-integers" => n - j,
                _ => 1 + g,
            };
        }
        if (kind == "with-infinities") { v[3] = float.PositiveInfinity; v[70] = float.NegativeInfinity; v[71] = float.PositiveInfinity; }
        if (kind == "minus-infinity-kth") for (int j = 0; j < 5; j++) v[j * 7] = float.NegativeInfinity;
        float kth = v.OrderByDescending(x => x).ElementAt(k - 1);
        float expected = float.IsNegativeInfinity(kth) ? float.NegativeInfinity : BucketFloor(kth);
        var keys = new uint[n];
        float t;
        fixed (float* pv = v)
        fixed (uint* pk = keys)
            t = TopKSelection.KthLowerBound(pv, n, k, pk);
        Assert.Equal(expected, t);
        Assert.True(v.Count(x => x >= t) >= k);
        // In place, as the kernels call it (the keys overwrite the values).
        fixed (float* pv = v)
            Assert.Equal(expected, TopKSelection.KthLowerBound(pv, n, k, (uint*)pv));
    }
}
