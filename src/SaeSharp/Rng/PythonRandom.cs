using System.Numerics;

namespace SaeSharp.Rng;

/// <summary>
/// CPython's <c>random.Random</c> (3.11): MT19937 (<see cref="Mt19937"/>) seeded by <c>seed(n)</c> for an integer n, with
/// <c>random()</c>, <c>getrandbits(k)</c>, <c>_randbelow</c>, <c>shuffle</c>, <c>sample</c> and <c>choice</c> as CPython
/// draws them, so that <c>random.seed(42); random.shuffle(x)</c> (SAEBench's europarl and github-code draws) orders
/// <c>x</c> the same here, and SAELens's <c>generate_hierarchy</c> (<c>randint</c>, <c>sample(range(n), k)</c>) draws alike (checked against Python 3.11.2's output, tests/data/python_random).
/// </summary>
public sealed class PythonRandom
{
    private readonly Mt19937 _mt = new();

    /// <summary><c>random.Random(seed)</c>.</summary>
    public PythonRandom(BigInteger seed) => Seed(seed);

    /// <summary><c>seed(n)</c> for an integer n: <c>init_by_array</c> of |n| cut into 32-bit words, lowest first
    /// (one zero word for 0).</summary>
    public void Seed(BigInteger seed)
    {
        var n = BigInteger.Abs(seed);
        var words = new List<uint>();
        do
        {
            words.Add((uint)(n & uint.MaxValue));
            n >>= 32;
        } while (!n.IsZero);
        _mt.InitByArray(words);
    }

    /// <summary><c>random()</c>: a double in [0, 1) from 53 bits of two outputs (27 + 26 bits).</summary>
    public double Random()
    {
        uint a = _mt.NextUInt32() >> 5, b = _mt.NextUInt32() >> 6;
        return (a * 67108864.0 + b) * (1.0 / 9007199254740992.0);
    }

    /// <summary><c>getrandbits(k)</c>: k random bits, 32 per output, lowest word first; the last word keeps its top bits.</summary>
    public BigInteger GetRandBits(int k)
    {
        ArgumentOutOfRangeException.ThrowIfNegative(k);
        if (k <= 32) return k == 0 ? BigInteger.Zero : _mt.NextUInt32() >> (32 - k);
        int words = (k - 1) / 32 + 1;
        var bytes = new byte[words * 4 + 1];
        for (int i = 0; i < words; i++, k -= 32)
        {
            uint r = _mt.NextUInt32();
            if (k < 32) r >>= 32 - k;
            BitConverter.TryWriteBytes(bytes.AsSpan(i * 4, 4), r);
        }
        return new BigInteger(bytes, isUnsigned: true, isBigEndian: false);
    }

    /// <summary><c>_randbelow(n)</c> (<c>_randbelow_with_getrandbits</c>): <c>getrandbits(n.bit_length())</c> until below n.</summary>
    public int RandBelow(int n)
    {
        ArgumentOutOfRangeException.ThrowIfNegativeOrZero(n);
        int k = 32 - BitOperations.LeadingZeroCount((uint)n);
        int r;
        while ((r = (int)(_mt.NextUInt32() >> (32 - k))) >= n) { }
        return r;
    }

    /// <summary><c>randint(a, b)</c>: a + <c>_randbelow(b − a + 1)</c>; an empty range is an error, as in CPython.</summary>
    public int RandInt(int a, int b)
    {
        if (b < a) throw new SaeSharpException($"randint({a}, {b}): empty range (Python's random.randint)");
        return a + RandBelow(b - a + 1);
    }

    /// <summary><c>shuffle(x)</c> in place: for i from n−1 down to 1, swap i with <c>_randbelow(i + 1)</c>.</summary>
    public void Shuffle<T>(IList<T> items)
    {
        ArgumentNullException.ThrowIfNull(items);
        for (int i = items.Count - 1; i > 0; i--)
        {
            int j = RandBelow(i + 1);
            (items[i], items[j]) = (items[j], items[i]);
        }
    }

    /// <summary><c>sample(population, k)</c>: k distinct positions in selection order. A small population (n ≤ 21, or
    /// 21 + 4^⌈log₄ 3k⌉ for k &gt; 5) is drawn from a shrinking pool, a large one by redrawing repeats, as CPython does.</summary>
    public T[] Sample<T>(IReadOnlyList<T> population, int k)
    {
        ArgumentNullException.ThrowIfNull(population);
        int n = population.Count;
        if (k < 0 || k > n) throw new SaeSharpException($"cannot sample {k} of {n} (Python's random.sample: sample larger than population or is negative)");
        var result = new T[k];
        double setSize = 21;
        if (k > 5) setSize += Math.Pow(4, Math.Ceiling(Math.Log(k * 3.0) / Math.Log(4)));
        if (n <= setSize)
        {
            var pool = population.ToArray();
            for (int i = 0; i < k; i++)
            {
                int j = RandBelow(n - i);
                result[i] = pool[j];
                pool[j] = pool[n - i - 1];
            }
        }
        else
        {
            var selected = new HashSet<int>();
            for (int i = 0; i < k; i++)
            {
                int j = RandBelow(n);
                while (!selected.Add(j)) j = RandBelow(n);
                result[i] = population[j];
            }
        }
        return result;
    }

    /// <summary><c>sample(range(n), k)</c>.</summary>
    public int[] Sample(int n, int k)
    {
        ArgumentOutOfRangeException.ThrowIfNegative(n);
        return Sample(Enumerable.Range(0, n).ToArray(), k);
    }

    /// <summary><c>choice(seq)</c>: <c>seq[_randbelow(len(seq))]</c>; an empty sequence is an error.</summary>
    public T Choice<T>(IReadOnlyList<T> items)
    {
        ArgumentNullException.ThrowIfNull(items);
        if (items.Count == 0) throw new SaeSharpException("cannot choose from an empty sequence (Python's random.choice)");
        return items[RandBelow(items.Count)];
    }
}
