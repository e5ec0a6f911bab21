namespace SaeSharp.Data;

/// <summary>
/// What NumPy's <c>Generator</c> (<see cref="NumpyRandom"/>, PCG64) and legacy <c>RandomState</c>
/// (<see cref="NumpyRandomState"/>, MT19937) draw alike from their bit generator's <c>next_uint32</c> and
/// <c>next_uint64</c>: <c>random_interval</c>, the Fisher–Yates <c>shuffle</c> and <c>permutation(n)</c>.
/// </summary>
public abstract class NumpyBitGenerator
{
    /// <summary>The bit generator's <c>next_uint64</c>.</summary>
    public abstract ulong NextUInt64();

    /// <summary>The bit generator's <c>next_uint32</c>.</summary>
    public abstract uint NextUInt32();

    /// <summary>NumPy's <c>random_interval(max)</c>: uniform in [0, <paramref name="max"/>] by masked rejection, drawing
    /// 32-bit words while <paramref name="max"/> fits in 32 bits, else 64-bit words.</summary>
    public ulong RandomInterval(ulong max)
    {
        if (max == 0) return 0;
        ulong mask = max;
        mask |= mask >> 1;
        mask |= mask >> 2;
        mask |= mask >> 4;
        mask |= mask >> 8;
        mask |= mask >> 16;
        mask |= mask >> 32;
        ulong value;
        if (max <= uint.MaxValue)
            while ((value = NextUInt32() & mask) > max) { }
        else
            while ((value = NextUInt64() & mask) > max) { }
        return value;
    }

    /// <summary><c>shuffle</c> of a 1-d sequence, in place: for i from n−1 down to 1, swap i with
    /// <c>random_interval(i)</c> (<c>Generator.shuffle</c> and <c>RandomState.shuffle</c> alike, of an array or a list).</summary>
    public void Shuffle<T>(IList<T> items)
    {
        ArgumentNullException.ThrowIfNull(items);
        for (int i = items.Count - 1; i > 0; i--)
        {
            int j = (int)RandomInterval((ulong)i);
            (items[i], items[j]) = (items[j], items[i]);
        }
    }

    /// <summary><c>permutation(n)</c>: <c>arange(n)</c> shuffled (<see cref="Shuffle{T}"/>).</summary>
    public long[] Permutation(int n)
    {
        ArgumentOutOfRangeException.ThrowIfNegative(n);
        var p = new long[n];
        for (int i = 0; i < n; i++) p[i] = i;
        Shuffle(p);
        return p;
    }
}
