using SaeSharp.Activations;

namespace SaeSharp.Tests.Activations;

public class SeededRandomTests
{
    [Fact]
    public void StateRoundTripContinuesTheSameStream()
    {
        var a = new SeededRandom(123);
        for (int i = 0; i < 10; i++) a.NextUInt64();
        var b = SeededRandom.FromState(a.GetState());
        for (int i = 0; i < 100; i++) Assert.Equal(a.NextLong(1000), b.NextLong(1000));
    }

    [Fact]
    public void NextLongIsUniformAndPermutationIsValid()
    {
        var r = new SeededRandom(1);
        var counts = new int[7];
        for (int i = 0; i < 70_000; i++) counts[r.NextLong(7)]++;
        // Each bin expects 10000 with sd ≈ 93: allow 5 sd.
        Assert.All(counts, c => Assert.InRange(c, 9535, 10465));
        var p = r.Permutation(50);
        Assert.Equal(Enumerable.Range(0, 50).Select(i => (long)i), p.Order());
        Assert.NotEqual(Enumerable.Range(0, 50).Select(i => (long)i), p);
    }

    /// <summary>A Fisher–Yates shuffle draws j from 0..i inclusive, so each of the n! orders has probability 1/n!,
    /// the identity included. Drawing j from 0..i-1 (Sattolo's algorithm, a classic off-by-one) only makes the
    /// (n-1)! single cycles: for n = 3 it never leaves an element in place.</summary>
    [Fact]
    public void PermutationReachesEveryOrderIncludingTheIdentity()
    {
        var r = new SeededRandom(7);
        var counts = new Dictionary<string, int>();
        for (int i = 0; i < 6000; i++)
        {
            string key = string.Join(",", r.Permutation(3));
            counts[key] = counts.GetValueOrDefault(key) + 1;
        }
        // 6 orders, each expected 1000 times (sd ≈ 29): allow 5 sd.
        Assert.Equal(6, counts.Count);
        Assert.All(counts.Values, c => Assert.InRange(c, 855, 1145));
        Assert.True(counts.ContainsKey("0,1,2"));
    }
}
