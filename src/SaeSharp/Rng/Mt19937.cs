namespace SaeSharp.Rng;

/// <summary>
/// The Mersenne Twister MT19937 (Matsumoto and Nishimura's <c>mt19937ar.c</c>) that NumPy's legacy
/// <see cref="Data.NumpyRandomState"/> and CPython's <see cref="PythonRandom"/> both draw from: its two seedings
/// (<c>init_genrand</c>, <c>init_by_array</c>) and its tempered 32-bit outputs (<c>genrand_uint32</c>).
/// </summary>
internal sealed class Mt19937
{
    private const int N = 624, M = 397;
    private readonly uint[] _key = new uint[N];
    private int _pos = N;

    /// <summary><c>init_genrand(s)</c>: the state from one 32-bit seed.</summary>
    public void InitGenrand(uint s)
    {
        for (int i = 0; i < N; i++)
        {
            _key[i] = s;
            s = 1812433253u * (s ^ (s >> 30)) + (uint)(i + 1);
        }
        _pos = N;
    }

    /// <summary><c>init_by_array(init_key)</c>: the state from any number of 32-bit words (at least one).</summary>
    public void InitByArray(IReadOnlyList<uint> initKey)
    {
        ArgumentNullException.ThrowIfNull(initKey);
        if (initKey.Count == 0) throw new ArgumentException("init_by_array needs at least one key word", nameof(initKey));
        InitGenrand(19650218u);
        int i = 1, j = 0;
        for (int k = Math.Max(N, initKey.Count); k > 0; k--)
        {
            _key[i] = (_key[i] ^ ((_key[i - 1] ^ (_key[i - 1] >> 30)) * 1664525u)) + initKey[j] + (uint)j;
            i++;
            j++;
            if (i >= N) { _key[0] = _key[N - 1]; i = 1; }
            if (j >= initKey.Count) j = 0;
        }
        for (int k = N - 1; k > 0; k--)
        {
            _key[i] = (_key[i] ^ ((_key[i - 1] ^ (_key[i - 1] >> 30)) * 1566083941u)) - (uint)i;
            i++;
            if (i >= N) { _key[0] = _key[N - 1]; i = 1; }
        }
        _key[0] = 0x80000000u;
        _pos = N;
    }

    private void Generate()
    {
        const uint Upper = 0x80000000u, Lower = 0x7fffffffu, MatrixA = 0x9908b0dfu;
        int i = 0;
        uint y;
        for (; i < N - M; i++)
        {
            y = (_key[i] & Upper) | (_key[i + 1] & Lower);
            _key[i] = _key[i + M] ^ (y >> 1) ^ ((0u - (y & 1)) & MatrixA);
        }
        for (; i < N - 1; i++)
        {
            y = (_key[i] & Upper) | (_key[i + 1] & Lower);
            _key[i] = _key[i + (M - N)] ^ (y >> 1) ^ ((0u - (y & 1)) & MatrixA);
        }
        y = (_key[N - 1] & Upper) | (_key[0] & Lower);
        _key[N - 1] = _key[M - 1] ^ (y >> 1) ^ ((0u - (y & 1)) & MatrixA);
        _pos = 0;
    }

    /// <summary>The next tempered 32-bit output (<c>genrand_uint32</c>, NumPy's <c>mt19937_next32</c>).</summary>
    public uint NextUInt32()
    {
        if (_pos == N) Generate();
        uint y = _key[_pos++];
        y ^= y >> 11;
        y ^= (y << 7) & 0x9d2c5680u;
        y ^= (y << 15) & 0xefc60000u;
        y ^= y >> 18;
        return y;
    }
}
