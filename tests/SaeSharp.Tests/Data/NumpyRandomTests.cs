using System.Numerics;
using System.Security.Cryptography;
using System.Text.Json;
using SaeSharp.Data;
using SaeSharp.Tests.Tokenizers;

namespace SaeSharp.Tests.Data;

/// <summary>
/// <see cref="NumpyRandom"/> against NumPy 1.24.2's own output (tests/data/numpy_random/numpy_random.json, written by
/// bench/reference/numpy_permutation_fixture.py): SeedSequence, PCG64's state and raw outputs, next_uint32's halves,
/// <c>default_rng(seed).permutation(n)</c>, and random_interval's 64-bit draws for bounds above 2³²−1.
/// </summary>
public class NumpyRandomTests
{
    private static readonly Lazy<JsonDocument> Fixture = new(() =>
        JsonDocument.Parse(File.ReadAllText(TestPaths.Data("numpy_random", "numpy_random.json"))));

    private static IEnumerable<JsonElement> Entries(string key) => Fixture.Value.RootElement.GetProperty(key).EnumerateArray();

    /// <summary>A Python int (JSON number, possibly above 2⁶⁴).</summary>
    private static BigInteger Big(JsonElement e) => BigInteger.Parse(e.GetRawText(), System.Globalization.CultureInfo.InvariantCulture);

    private static ulong[] U64(JsonElement e) => e.EnumerateArray().Select(v => v.GetUInt64()).ToArray();

    [Fact]
    public void Fixture_is_numpy_1_24_2_and_covers_seeds_above_64_bits()
    {
        Assert.Equal("1.24.2", Fixture.Value.RootElement.GetProperty("numpy").GetString());
        Assert.Contains(Entries("seed_sequence"), e => Big(e.GetProperty("seed")) > ulong.MaxValue);
        Assert.Equal(8 * 9, Entries("permutations").Count());
    }

    [Fact]
    public void Seed_sequence_pool_and_generate_state_equal_numpys()
    {
        foreach (var e in Entries("seed_sequence"))
        {
            var pool = NumpyRandom.SeedSequencePool(Big(e.GetProperty("seed")));
            Assert.Equal(e.GetProperty("pool").EnumerateArray().Select(v => v.GetUInt32()), pool);
            Assert.Equal(U64(e.GetProperty("state_uint64")), NumpyRandom.GenerateState(pool, 4));
        }
    }

    [Fact]
    public void Pcg64_state_after_seeding_and_raw_outputs_equal_numpys()
    {
        foreach (var e in Entries("pcg64_state"))
        {
            var r = new NumpyRandom(Big(e.GetProperty("seed")));
            Assert.Equal(Big(e.GetProperty("state")), (BigInteger)r.State);
            Assert.Equal(Big(e.GetProperty("inc")), (BigInteger)r.Increment);
        }
        foreach (var e in Entries("random_raw"))
        {
            var r = new NumpyRandom(Big(e.GetProperty("seed")));
            Assert.Equal(U64(e.GetProperty("raw")), Enumerable.Range(0, 12).Select(_ => r.NextUInt64()));
        }
    }

    [Fact]
    public void Next_uint32_hands_out_both_halves_of_a_64_bit_output_across_next_uint64_calls()
    {
        foreach (var e in Entries("mixed"))
        {
            var r = new NumpyRandom(Big(e.GetProperty("seed")));
            foreach (var call in e.GetProperty("calls").EnumerateArray())
            {
                ulong expected = call[1].GetUInt64();
                ulong got = call[0].GetInt32() == 32 ? r.NextUInt32() : r.NextUInt64();
                Assert.Equal(expected, got);
            }
        }
    }

    [Fact]
    public void Permutation_equals_default_rng_permutation()
    {
        foreach (var e in Entries("permutations"))
        {
            var seed = Big(e.GetProperty("seed"));
            int n = e.GetProperty("n").GetInt32();
            var p = new NumpyRandom(seed).Permutation(n);
            if (e.TryGetProperty("permutation", out var whole))
            {
                Assert.Equal(whole.EnumerateArray().Select(v => v.GetInt64()), p);
                continue;
            }
            Assert.Equal(e.GetProperty("head").EnumerateArray().Select(v => v.GetInt64()), p[..16]);
            Assert.Equal(e.GetProperty("tail").EnumerateArray().Select(v => v.GetInt64()), p[^16..]);
            var bytes = new byte[n * 8];
            for (int i = 0; i < n; i++) System.Buffers.Binary.BinaryPrimitives.WriteInt64LittleEndian(bytes.AsSpan(8 * i), p[i]);
            Assert.Equal(e.GetProperty("sha256").GetString(), Convert.ToHexStringLower(SHA256.HashData(bytes)));
        }
    }

    [Fact]
    public void Random_interval_draws_64_bit_words_above_a_32_bit_bound_as_shuffle_does()
    {
        // Generator.shuffle's first swaps on sequences of more than 2^32 items: j = random_interval(i) for i = n-1, n-2, ...
        foreach (var e in Entries("random_interval_64"))
        {
            var r = new NumpyRandom(Big(e.GetProperty("seed")));
            ulong i = e.GetProperty("n").GetUInt64() - 1;
            foreach (var swap in e.GetProperty("swaps").EnumerateArray())
            {
                Assert.Equal(i, swap[0].GetUInt64());
                Assert.Equal(swap[1].GetUInt64(), r.RandomInterval(i));
                i--;
            }
        }
    }

    [Fact]
    public void Shuffle_of_rows_is_rows_taken_in_permutation_order()
    {
        // datasets' shuffle is select(indices=permutation(n)): row k of the result is row permutation[k].
        var rows = Enumerable.Range(0, 500).Select(i => $"row {i}").ToList();
        var perm = new NumpyRandom(42).Permutation(rows.Count);
        var shuffled = rows.ToList();
        new NumpyRandom(42).Shuffle(shuffled);
        Assert.Equal(perm.Select(k => rows[(int)k]), shuffled);
    }

    [Fact]
    public void Negative_seed_is_refused_as_numpy_refuses_it()
    {
        var e = Assert.Throws<SaeSharpException>(() => new NumpyRandom(-1));
        Assert.Contains("seed -1", e.Message);
        Assert.Contains("non-negative", e.Message);
    }
}
