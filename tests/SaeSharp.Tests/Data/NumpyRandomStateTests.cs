using System.Security.Cryptography;
using System.Text.Json;
using SaeSharp.Data;
using SaeSharp.Tests.Tokenizers;

namespace SaeSharp.Tests.Data;

/// <summary>
/// <see cref="NumpyRandomState"/> against NumPy 1.24.2's legacy <c>RandomState</c> (tests/data/numpy_random/numpy_randomstate.json,
/// written by bench/reference/numpy_randomstate_fixture.py): MT19937's outputs, <c>randint</c>, <c>permutation</c>,
/// <c>choice(replace=False)</c>, <c>shuffle</c>, and pandas' <c>group.sample(n, random_state=42)</c>.
/// </summary>
public class NumpyRandomStateTests
{
    private static readonly Lazy<JsonDocument> Fixture = new(() =>
        JsonDocument.Parse(File.ReadAllText(TestPaths.Data("numpy_random", "numpy_randomstate.json"))));

    private static IEnumerable<JsonElement> Entries(string key) => Fixture.Value.RootElement.GetProperty(key).EnumerateArray();

    private static long[] I64(JsonElement e) => [.. e.EnumerateArray().Select(v => v.GetInt64())];

    [Fact]
    public void Fixture_is_numpy_1_24_2_with_pandas_groups()
    {
        Assert.Equal("1.24.2", Fixture.Value.RootElement.GetProperty("numpy").GetString());
        Assert.Equal(4 * 6, Entries("permutations").Count());
        Assert.True(Fixture.Value.RootElement.GetProperty("pandas").GetProperty("groups").GetArrayLength() >= 9);
    }

    [Fact]
    public void Mt19937_outputs_equal_numpys_and_the_reference_first_output()
    {
        // Seed 0's first MT19937 output is 2357136044 in every implementation of init_genrand (Matsumoto & Nishimura).
        Assert.Equal(2357136044u, new NumpyRandomState(0).NextUInt32());
        foreach (var e in Entries("raw"))
        {
            var r = new NumpyRandomState(e.GetProperty("seed").GetInt64());
            Assert.Equal(I64(e.GetProperty("raw")), Enumerable.Range(0, 12).Select(_ => (long)r.NextUInt32()));
        }
    }

    [Fact]
    public void Randint_equals_numpys_legacy_bounded_integers_for_32_and_64_bit_ranges()
    {
        foreach (var e in Entries("randint"))
        {
            var r = new NumpyRandomState(e.GetProperty("seed").GetInt64());
            long low = e.GetProperty("low").GetInt64(), high = e.GetProperty("high").GetInt64();
            Assert.Equal(I64(e.GetProperty("values")), Enumerable.Range(0, 12).Select(_ => r.RandInt(low, high)));
        }
    }

    [Fact]
    public void Permutation_equals_randomstate_permutation()
    {
        foreach (var e in Entries("permutations"))
        {
            int n = e.GetProperty("n").GetInt32();
            var p = new NumpyRandomState(e.GetProperty("seed").GetInt64()).Permutation(n);
            if (e.TryGetProperty("permutation", out var whole))
            {
                Assert.Equal(I64(whole), p);
                continue;
            }
            Assert.Equal(I64(e.GetProperty("head")), p[..16]);
            Assert.Equal(I64(e.GetProperty("tail")), p[^16..]);
            var bytes = new byte[n * 8];
            for (int i = 0; i < n; i++) System.Buffers.Binary.BinaryPrimitives.WriteInt64LittleEndian(bytes.AsSpan(8 * i), p[i]);
            Assert.Equal(e.GetProperty("sha256").GetString(), Convert.ToHexStringLower(SHA256.HashData(bytes)));
        }
    }

    [Fact]
    public void Choice_without_replacement_and_shuffle_equal_numpys()
    {
        foreach (var e in Entries("choices"))
            Assert.Equal(I64(e.GetProperty("choice")),
                new NumpyRandomState(e.GetProperty("seed").GetInt64()).Choice(e.GetProperty("n").GetInt32(), e.GetProperty("size").GetInt32()));
        foreach (var e in Entries("shuffles"))
        {
            var items = Enumerable.Range(0, e.GetProperty("n").GetInt32()).Select(i => $"t{i}").ToList();
            new NumpyRandomState(e.GetProperty("seed").GetInt64()).Shuffle(items);
            Assert.Equal(e.GetProperty("shuffled").EnumerateArray().Select(v => v.GetString()), items);
        }
    }

    [Fact]
    public void Pandas_sample_with_an_int_random_state_is_choice_over_the_groups_rows_in_frame_order()
    {
        var pandas = Fixture.Value.RootElement.GetProperty("pandas");
        int seed = pandas.GetProperty("seed").GetInt32();
        foreach (var g in pandas.GetProperty("groups").EnumerateArray())
        {
            var rows = I64(g.GetProperty("rows"));
            var picked = new NumpyRandomState(seed).Choice(rows.Length, g.GetProperty("n").GetInt32()).Select(i => rows[i]);
            Assert.Equal(I64(g.GetProperty("sampled")), picked);
        }
    }

    [Fact]
    public void Bad_seed_and_sizes_are_refused_as_numpy_refuses_them()
    {
        Assert.Contains("between 0 and 2**32 - 1", Assert.Throws<SaeSharpException>(() => new NumpyRandomState(-1)).Message);
        Assert.Contains("between 0 and 2**32 - 1", Assert.Throws<SaeSharpException>(() => new NumpyRandomState(1L << 32)).Message);
        Assert.Contains("cannot take 4 of 3", Assert.Throws<SaeSharpException>(() => new NumpyRandomState(0).Choice(3, 4)).Message);
    }
}
