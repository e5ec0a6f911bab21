using SaeSharp.Rng;

namespace SaeSharp.Data;

/// <summary>
/// NumPy's legacy <c>np.random.RandomState(seed)</c> (MT19937 seeded by a 32-bit integer, <c>init_genrand</c>), as far as
/// pandas' <c>DataFrame.sample(n, random_state=seed)</c> draws with it: <c>choice(len, n, replace=False)</c>, which is
/// <c>permutation(len)[:n]</c>, and the legacy bounded integers of <c>randint</c>. The same seed gives NumPy's numbers
/// (checked against NumPy 1.24.2's output; the legacy stream is frozen by NumPy's compatibility policy).
/// </summary>
public sealed class NumpyRandomState : NumpyBitGenerator
{
    private readonly Mt19937 _mt = new();

    /// <summary><c>np.random.RandomState(seed)</c>; a seed outside 0 … 2³²−1 is an error, as in NumPy.</summary>
    public NumpyRandomState(long seed)
    {
        if (seed is < 0 or > uint.MaxValue)
            throw new SaeSharpException($"seed {seed}: NumPy's RandomState takes a seed between 0 and 2**32 - 1");
        _mt.InitGenrand((uint)seed);
    }

    /// <summary>MT19937's next tempered 32-bit output (<c>mt19937_next32</c>).</summary>
    public override uint NextUInt32() => _mt.NextUInt32();

    /// <summary><c>mt19937_next64</c>: two 32-bit outputs, the first the high half.</summary>
    public override ulong NextUInt64() => (ulong)NextUInt32() << 32 | NextUInt32();

    /// <summary><c>randint(low, high)</c> (int64): <paramref name="low"/> + a legacy masked bounded draw over
    /// high − 1 − low (<see cref="NumpyBitGenerator.RandomInterval"/>'s words and mask).</summary>
    public long RandInt(long low, long high)
    {
        if (high <= low) throw new SaeSharpException($"randint: low ({low}) must be below high ({high})");
        return low + (long)RandomInterval((ulong)(high - 1 - low));
    }

    /// <summary><c>choice(n, size, replace=False)</c>: the first <paramref name="size"/> entries of
    /// <c>permutation(n)</c>, in that order. A size above <paramref name="n"/> is an error, as in NumPy.</summary>
    public long[] Choice(int n, int size)
    {
        ArgumentOutOfRangeException.ThrowIfNegative(size);
        if (size > n) throw new SaeSharpException($"cannot take {size} of {n} without replacement (NumPy's choice with replace=False)");
        return Permutation(n)[..size];
    }
}
