using System.Numerics;
using System.Text.Json;
using SaeSharp.Rng;
using SaeSharp.Tests.Tokenizers;

namespace SaeSharp.Tests.Rng;

/// <summary>
/// <see cref="PythonRandom"/> against CPython 3.11.2's <c>random.Random</c> (tests/data/python_random/python_random.json,
/// written by tests/data/python_random/make.py): <c>random()</c>, <c>getrandbits</c>, <c>_randbelow</c>, <c>shuffle</c>,
/// <c>sample</c> (both branches) and <c>choice</c>, for seeds 0, 1, 42, −42, 2³²−1, 2³², 2⁴⁰ and 2⁷⁰+3.
/// </summary>
public class PythonRandomTests
{
    private static readonly Lazy<JsonDocument> Fixture = new(() =>
        JsonDocument.Parse(File.ReadAllText(TestPaths.Data("python_random", "python_random.json"))));

    private static IEnumerable<(PythonRandom Fresh, Func<PythonRandom> Make, JsonElement E)> Entries() =>
        Fixture.Value.RootElement.GetProperty("entries").EnumerateArray().Select(e =>
        {
            var seed = BigInteger.Parse(e.GetProperty("seed").GetString()!);
            return (new PythonRandom(seed), (Func<PythonRandom>)(() => new PythonRandom(seed)), e);
        });

    private static int[] Ints(JsonElement e) => [.. e.EnumerateArray().Select(v => v.GetInt32())];

    [Fact]
    public void Fixture_is_cpython_3_11_with_every_seed()
    {
        Assert.StartsWith("3.11", Fixture.Value.RootElement.GetProperty("python").GetString());
        var seeds = Fixture.Value.RootElement.GetProperty("entries").EnumerateArray().Select(e => e.GetProperty("seed").GetString()).ToList();
        Assert.Contains("0", seeds);
        Assert.Contains("42", seeds);
        Assert.Contains("-42", seeds);
        Assert.Contains("1099511627776", seeds);
    }

    [Fact]
    public void Random_equals_cpython_and_the_well_known_first_value_of_seed_42()
    {
        // random.seed(42); random.random() is 0.6394267984578837 in every CPython since 3.2.
        Assert.Equal(0.6394267984578837, new PythonRandom(42).Random());
        // A negative seed is its absolute value (CPython seeds with abs(n)).
        Assert.Equal(new PythonRandom(42).Random(), new PythonRandom(-42).Random());
        foreach (var (r, _, e) in Entries())
            Assert.Equal(e.GetProperty("random").EnumerateArray().Select(v => v.GetDouble()), Enumerable.Range(0, 8).Select(_ => r.Random()));
    }

    [Fact]
    public void Getrandbits_equals_cpython_up_to_1000_bits()
    {
        var ks = Ints(Fixture.Value.RootElement.GetProperty("ks"));
        foreach (var (r, _, e) in Entries())
        {
            var expected = e.GetProperty("bits").EnumerateArray().Select(v => BigInteger.Parse(v.GetString()!)).ToList();
            for (int i = 0; i < ks.Length; i++)
            {
                var got = r.GetRandBits(ks[i]);
                Assert.Equal(expected[i], got);
                Assert.True(got.Sign >= 0 && got < BigInteger.One << ks[i]);
            }
        }
    }

    [Fact]
    public void Randbelow_randint_shuffle_and_choice_equal_cpython()
    {
        int[] bounds = [1, 2, 3, 7, 10, 100, 1000, (1 << 20) + 1, int.MaxValue, 5, 6, 1 << 30];
        foreach (var (r, make, e) in Entries())
        {
            Assert.Equal(Ints(e.GetProperty("randbelow")), bounds.Select(r.RandBelow));
            var x = Enumerable.Range(1, 1000).ToList();
            make().Shuffle(x);
            Assert.Equal(Ints(e.GetProperty("shuffle")), x);
            Assert.Equal(Enumerable.Range(1, 1000), x.Order());
            var ri = make();
            Assert.Equal(Ints(e.GetProperty("randint")), Enumerable.Range(0, 12).Select(_ => ri.RandInt(3, 17)));
            var c = make();
            Assert.Equal(e.GetProperty("choice").EnumerateArray().Select(v => v.GetString()![0]), Enumerable.Range(0, 12).Select(_ => c.Choice("abcdefghij".ToArray())));
        }
    }

    [Fact]
    public void Sample_equals_cpython_from_small_and_large_populations()
    {
        var small = Enumerable.Range(0, 10).ToArray();
        var large = Enumerable.Range(0, 10_000).ToArray();
        foreach (var (_, make, e) in Entries())
        {
            var r = make();
            var expected = e.GetProperty("sample10").EnumerateArray().Select(Ints).ToList();
            int[] ks = [3, 6, 10];
            for (int i = 0; i < ks.Length; i++) Assert.Equal(expected[i], r.Sample(small, ks[i]));
            r = make();
            for (int i = 0; i < ks.Length; i++) Assert.Equal(expected[i], r.Sample(10, ks[i]));   // sample(range(10), k)
            r = make();
            var big = e.GetProperty("sample10000").EnumerateArray().Select(Ints).ToList();
            Assert.Equal(big[0], r.Sample(large, 50));   // set branch: 10,000 > 21 + 4^4
            var pool = r.Sample(large, 1500);             // pool branch: 10,000 ≤ 21 + 4^7
            Assert.Equal(big[1], pool);
            Assert.Equal(1500, pool.Distinct().Count());
        }
    }

    [Fact]
    public void Bad_arguments_are_errors()
    {
        var r = new PythonRandom(0);
        Assert.Throws<SaeSharpException>(() => r.Sample(new[] { 1, 2 }, 3));
        Assert.Throws<SaeSharpException>(() => r.Choice(Array.Empty<int>()));
    }
}
