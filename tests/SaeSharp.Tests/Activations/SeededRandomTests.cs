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
}
