using System.Numerics;

namespace SaeSharp.Data;

/// <summary>
/// NumPy's <c>np.random.default_rng(seed)</c> (NumPy 1.17+: a <c>Generator</c> over PCG64 seeded through
/// <c>SeedSequence</c>) for what <c>datasets</c>' <c>Dataset.shuffle(seed=seed)</c> draws: <c>permutation(n)</c>, which
/// shuffles <c>arange(n)</c> with a Fisher–Yates loop of <c>random_interval</c> draws. The same seed gives the same
/// order as NumPy (checked against NumPy 1.24.2's output; SeedSequence, PCG64, <c>random_interval</c> and
/// <c>shuffle</c> are unchanged in NumPy 2's source). NumPy's legacy <c>RandomState</c> (MT19937), which pandas'
/// <c>sample</c> draws with, is <see cref="NumpyRandomState"/>; both share <see cref="NumpyBitGenerator"/>'s draws.
/// </summary>
public sealed class NumpyRandom : NumpyBitGenerator
{
    private static readonly UInt128 Multiplier = new(2549297995355413924UL, 4865540595714422341UL);

    private UInt128 _state;
    private readonly UInt128 _inc;
    private bool _hasUInt32;
    private uint _uinteger;

    /// <summary><c>np.random.default_rng(seed)</c>: PCG64 seeded from <c>SeedSequence(seed).generate_state(4, uint64)</c>.
    /// A negative seed is an error, as in NumPy.</summary>
    public NumpyRandom(BigInteger seed)
    {
        var words = GenerateState(SeedSequencePool(seed), 4);
        var initState = new UInt128(words[0], words[1]);
        var initSeq = new UInt128(words[2], words[3]);
        _inc = (initSeq << 1) | 1;
        _state = 0;
        Step();
        _state += initState;
        Step();
    }

    /// <summary>The 128-bit LCG state (NumPy's <c>PCG64.state["state"]["state"]</c>).</summary>
    public UInt128 State => _state;

    /// <summary>The LCG increment (NumPy's <c>PCG64.state["state"]["inc"]</c>).</summary>
    public UInt128 Increment => _inc;

    /// <summary><c>SeedSequence(entropy).pool</c>: the four 32-bit words the entropy (as 32-bit words, least significant
    /// first) is hashed into.</summary>
    public static uint[] SeedSequencePool(BigInteger entropy)
    {
        if (entropy.Sign < 0) throw new SaeSharpException($"seed {entropy}: expected a non-negative integer (NumPy's SeedSequence refuses a negative one)");
        var words = new List<uint>();
        if (entropy.IsZero) words.Add(0);
        for (var n = entropy; n > 0; n >>= 32) words.Add((uint)(n & uint.MaxValue));
        const uint MultA = 0x931e8875;
        uint hashConst = 0x43b0d7e5;
        uint HashMix(uint value)
        {
            value ^= hashConst;
            hashConst *= MultA;
            value *= hashConst;
            return value ^ (value >> 16);
        }
        static uint Mix(uint x, uint y)
        {
            uint r = 0xca01f9dd * x - 0x4973f715 * y;
            return r ^ (r >> 16);
        }
        var pool = new uint[4];
        for (int i = 0; i < pool.Length; i++) pool[i] = HashMix(i < words.Count ? words[i] : 0);
        for (int src = 0; src < pool.Length; src++)
            for (int dst = 0; dst < pool.Length; dst++)
                if (src != dst) pool[dst] = Mix(pool[dst], HashMix(pool[src]));
        for (int src = pool.Length; src < words.Count; src++)
            for (int dst = 0; dst < pool.Length; dst++)
                pool[dst] = Mix(pool[dst], HashMix(words[src]));
        return pool;
    }

    /// <summary><c>SeedSequence.generate_state(words, np.uint64)</c> from its <paramref name="pool"/>: 2 × <paramref name="words"/>
    /// 32-bit words, paired little-endian.</summary>
    public static ulong[] GenerateState(uint[] pool, int words)
    {
        ArgumentNullException.ThrowIfNull(pool);
        const uint MultB = 0x58f38ded;
        uint hashConst = 0x8b51f9dd;
        var w32 = new uint[2 * words];
        for (int i = 0; i < w32.Length; i++)
        {
            uint v = pool[i % pool.Length] ^ hashConst;
            hashConst *= MultB;
            v *= hashConst;
            w32[i] = v ^ (v >> 16);
        }
        var w64 = new ulong[words];
        for (int i = 0; i < words; i++) w64[i] = w32[2 * i] | (ulong)w32[2 * i + 1] << 32;
        return w64;
    }

    private void Step() => _state = _state * Multiplier + _inc;

    /// <summary>PCG64's next 64-bit output (<c>random_raw</c>, <c>next_uint64</c>): XSL-RR of the advanced state.</summary>
    public override ulong NextUInt64()
    {
        Step();
        ulong hi = (ulong)(_state >> 64), lo = (ulong)_state;
        return ulong.RotateRight(hi ^ lo, (int)(hi >> 58));
    }

    /// <summary>PCG64's <c>next_uint32</c>: the low half of a 64-bit output, then its high half on the next call.</summary>
    public override uint NextUInt32()
    {
        if (_hasUInt32)
        {
            _hasUInt32 = false;
            return _uinteger;
        }
        ulong next = NextUInt64();
        _hasUInt32 = true;
        _uinteger = (uint)(next >> 32);
        return (uint)next;
    }
}
