namespace SaeSharp.Activations;

/// <summary>
/// xoshiro256** generator (Blackman and Vigna) seeded through SplitMix64. Unlike <see cref="System.Random"/>, its
/// whole state is four integers, so a shuffling position can be saved and restored exactly, and its output is the
/// same on every platform and .NET version.
/// </summary>
internal sealed class SeededRandom
{
    private ulong _s0, _s1, _s2, _s3;

    public SeededRandom(ulong seed)
    {
        ulong x = seed;
        _s0 = SplitMix64(ref x);
        _s1 = SplitMix64(ref x);
        _s2 = SplitMix64(ref x);
        _s3 = SplitMix64(ref x);
    }

    private SeededRandom(ulong[] state)
    {
        if (state.Length != 4 || state.All(s => s == 0))
            throw new SaeSharpException("random state must be four integers, not all zero");
        (_s0, _s1, _s2, _s3) = (state[0], state[1], state[2], state[3]);
    }

    private static ulong SplitMix64(ref ulong x)
    {
        ulong z = x += 0x9E3779B97F4A7C15UL;
        z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9UL;
        z = (z ^ (z >> 27)) * 0x94D049BB133111EBUL;
        return z ^ (z >> 31);
    }

    public ulong NextUInt64()
    {
        ulong result = ulong.RotateLeft(_s1 * 5, 7) * 9;
        ulong t = _s1 << 17;
        _s2 ^= _s0;
        _s3 ^= _s1;
        _s1 ^= _s2;
        _s0 ^= _s3;
        _s2 ^= t;
        _s3 = ulong.RotateLeft(_s3, 45);
        return result;
    }

    /// <summary>Uniform integer in [0, <paramref name="n"/>), without modulo bias (Lemire's method).</summary>
    public long NextLong(long n)
    {
        if (n <= 0) throw new ArgumentOutOfRangeException(nameof(n), n, "must be positive");
        ulong un = (ulong)n;
        ulong threshold = (0 - un) % un;
        while (true)
        {
            ulong r = NextUInt64();
            UInt128 m = (UInt128)r * un;
            if ((ulong)m >= threshold) return (long)(ulong)(m >> 64);
        }
    }

    /// <summary>Uniform double in [0, 1) with 53 random bits.</summary>
    public double NextDouble() => (NextUInt64() >> 11) * (1.0 / (1UL << 53));

    /// <summary>A uniformly random permutation of 0..n-1 (Fisher–Yates).</summary>
    public long[] Permutation(long n)
    {
        var p = new long[n];
        for (long i = 0; i < n; i++) p[i] = i;
        for (long i = n - 1; i > 0; i--)
        {
            long j = NextLong(i + 1);
            (p[i], p[j]) = (p[j], p[i]);
        }
        return p;
    }

    public ulong[] GetState() => [_s0, _s1, _s2, _s3];

    public static SeededRandom FromState(ulong[] state) => new(state);
}
