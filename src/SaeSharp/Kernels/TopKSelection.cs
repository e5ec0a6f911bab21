using System.Numerics;
using System.Runtime.CompilerServices;
using System.Runtime.Intrinsics;
using TorchSharp;
using static SaeSharp.Kernels.TensorPointers;
using static TorchSharp.torch;

namespace SaeSharp.Kernels;

/// <summary>
/// Per-row top-k selection over float32 matrices, or bfloat16 matrices plus a float32 bias, vectorised and split over
/// threads by <see cref="RowRanges"/>: a block-maximum bound with a radix select when k is small against the row, a
/// radix select over the whole row when the row has at least 2k elements, a size-k min-heap otherwise. NaNs are never
/// selected.
/// </summary>
internal static unsafe class TopKSelection
{
    /// <summary>
    /// Per-row top-k of a contiguous float32 [rows, d] matrix (k ≤ d): values and int64 column indices [rows, k], unsorted.
    /// NaNs are never selected (torch.topk would rank them first); ties are broken arbitrarily, as by torch.topk.
    /// When k ≤ d/64 and d is a multiple of 16 vectors (rows without NaN), the maxima of d/16 blocks of 16 elements give
    /// a lower bound τ on the row's k-th largest value (the k-th largest block maximum: k distinct elements reach it), and
    /// the row's elements ≥ τ, found by a vector scan, enter a size-k min-heap; otherwise
    /// rows of at least 2k elements take a radix select (<see cref="RadixTopK"/>) and shorter rows (or rows with a NaN)
    /// a heap that scans the whole row, skipping vectors that cannot enter it.
    /// </summary>
    public static (Tensor Values, Tensor Indices) RowTopK(Tensor m, int k)
    {
        long d = m.shape[1];
        SparseKernels.Check(m, d);
        var top = TopKRows(FloatPtr(m), null, null, m.shape[0], d, k);
        GC.KeepAlive(m);
        return top;
    }

    /// <summary>
    /// <see cref="RowTopK"/> of m + bias for a contiguous bfloat16 [rows, d] matrix m and a float32 [d] bias, in float32
    /// (bfloat16 → float32 is a 16-bit left shift): each row is widened and the bias added into a per-thread buffer,
    /// which is then ranked as a float32 row; the values returned are those float32 sums.
    /// </summary>
    public static (Tensor Values, Tensor Indices) RowTopKBf16(Tensor m, Tensor bias, int k)
    {
        long d = m.shape[1];
        if (m.dtype != ScalarType.BFloat16 || !m.is_contiguous() || m.device_type != DeviceType.CPU || m.dim() != 2)
            throw new ArgumentException($"bfloat16 top-k needs a contiguous bfloat16 CPU matrix, got {m.dtype} [{string.Join(", ", m.shape)}]");
        if (bias.dtype != ScalarType.Float32 || !bias.is_contiguous() || bias.device_type != DeviceType.CPU || bias.dim() != 1 || bias.shape[0] != d)
            throw new ArgumentException($"bfloat16 top-k needs a contiguous float32 [{d}] bias, got {bias.dtype} [{string.Join(", ", bias.shape)}]");
        var top = TopKRows(null, UShortPtr(m), FloatPtr(bias), m.shape[0], d, k);
        GC.KeepAlive(m);
        GC.KeepAlive(bias);
        return top;
    }

    /// <summary>Top-k of every row of a float32 matrix <paramref name="pm"/>, or, when it is null, of the bfloat16 matrix
    /// <paramref name="pb"/> plus <paramref name="bias"/>.</summary>
    private static (Tensor Values, Tensor Indices) TopKRows(float* pm, ushort* pb, float* bias, long rows, long d, int k)
    {
        if (k <= 0 || k > d) throw new ArgumentException($"top-k needs 0 < k <= {d}, got {k}");
        var values = empty(rows, k, dtype: ScalarType.Float32);
        var indices = empty(rows, k, dtype: ScalarType.Int64);
        if (rows == 0) return (values, indices);
        float* pv = FloatPtr(values);
        long* pi = LongPtr(indices);
        bool blockwise = (long)k * 64 <= d && d % (TopKBlock * Vector<float>.Count) == 0;
        bool radix = UsesRadix(d, k);
        RowRanges.For(rows, (start, end) =>
        {
            var maxima = new float[blockwise ? d / TopKBlock : 0];
            var buffer = new float[pm == null ? d : 0];
            var hist = new int[2 * 257];
            var keys = new uint[radix ? d : 0];
            var positions = new int[radix || blockwise ? d : 0];
            fixed (float* pMax = maxima, pBuf = buffer)
            fixed (int* pHist = hist, pPositions = positions)
            fixed (uint* pKeys = keys)
            {
                for (long r = start; r < end; r++)
                {
                    float* hv = pv + r * k;
                    long* hi = pi + r * k;
                    float* row = pm + r * d;
                    if (pm == null)
                    {
                        WidenBf16(pb + r * d, bias, pBuf, d);
                        row = pBuf;
                    }
                    if (blockwise && BlockMaxima(row, d, pMax)) TopKFromBlocks(row, d, k, pMax, pPositions, hv, hi);
                    else if (!radix || !RadixTopK(row, d, k, pKeys, pHist, pPositions, hv, hi)) HeapTopK(row, d, k, hv, hi);
                }
            }
        });
        return (values, indices);
    }

    /// <summary>dst[j] = float32(src[j]) + bias[j] for a bfloat16 row src.</summary>
    private static void WidenBf16(ushort* src, float* bias, float* dst, long d)
    {
        long j = 0;
        int w = Vector<ushort>.Count, half = Vector<float>.Count;
        for (; j + w <= d; j += w)
        {
            Vector.Widen(Unsafe.ReadUnaligned<Vector<ushort>>(src + j), out var lo, out var hi);
            Unsafe.WriteUnaligned(dst + j, Vector.AsVectorSingle(Vector.ShiftLeft(lo, 16)) + Unsafe.ReadUnaligned<Vector<float>>(bias + j));
            Unsafe.WriteUnaligned(dst + j + half, Vector.AsVectorSingle(Vector.ShiftLeft(hi, 16)) + Unsafe.ReadUnaligned<Vector<float>>(bias + j + half));
        }
        for (; j < d; j++) dst[j] = Bf16Bits.ToFloat(src[j]) + bias[j];
    }

    internal const int TopKBlock = 16;

    /// <summary>The maxima of the S = d/16 blocks of <see cref="RowTopK"/>'s block path (d a multiple of 16 vectors); false
    /// when the row holds a NaN. The row is read as 16 slices of width S; block c is {c, c + S, …, c + 15·S}, so the
    /// block maxima are 15 vector maxima of the slices, without horizontal reductions.</summary>
    internal static bool BlockMaxima(float* row, long d, float* maxima)
    {
        int w = Vector<float>.Count;
        long width = d / TopKBlock;
        var nan = Vector<int>.Zero;
        for (long c = 0; c < width; c += w)
        {
            var acc = Unsafe.ReadUnaligned<Vector<float>>(row + c);
            nan |= ~Vector.Equals(acc, acc);
            for (long o = width + c; o < d; o += width)
            {
                var v = Unsafe.ReadUnaligned<Vector<float>>(row + o);
                nan |= ~Vector.Equals(v, v);
                acc = Vector.Max(acc, v);
            }
            Unsafe.WriteUnaligned(maxima + c, acc);
        }
        return Vector.EqualsAll(nan, Vector<int>.Zero);
    }

    /// <summary>The top-k of a NaN-free row from its block maxima: a lower bound τ on the k-th largest block maximum is a
    /// lower bound on the row's k-th largest value (k distinct elements reach it), so only the row's elements ≥ τ (found
    /// by one vector scan, <see cref="Above"/>) enter a size-k min-heap. τ is <see cref="KthLowerBound"/> of the maxima:
    /// the smallest value of the 16-bit key prefix of the k-th largest (bfloat16 resolution: a few elements more enter the
    /// heap than with the exact k-th maximum, without a branchy heap over all maxima). <paramref name="positions"/>: d
    /// ints of scratch.</summary>
    private static void TopKFromBlocks(float* row, long d, int k, float* maxima, int* positions, float* hv, long* hi)
    {
        long width = d / TopKBlock;
        // The maxima are replaced by their keys.
        float t = KthLowerBound(maxima, width, k, (uint*)maxima);
        int n = Above(row, d, t, positions), filled = 0;
        for (int e = 0; e < n; e++)
        {
            long j = positions[e];
            if (filled < k) Push(row[j], j, hv, hi, filled++);
            else Offer(row[j], j, hv, hi, k);
        }
    }

    /// <summary>A value t at or below the k-th largest of the non-NaN <paramref name="v"/>[0..n) (so at least k of them
    /// reach it), at bfloat16 resolution: the smallest value with the 16-bit prefix of the k-th largest's
    /// order-preserving key. The prefix is found by a binary search, each probe a vector count of the keys at or above
    /// it (16 probes at most; a radix select's histograms cost more on the 512 block maxima of a row).
    /// <paramref name="keys"/>: n entries of scratch (may be <paramref name="v"/> itself).</summary>
    internal static float KthLowerBound(float* v, long n, int k, uint* keys)
    {
        // Signed keys: s = bits ^ ((bits >> 31) & 0x7FFFFFFF) orders as the floats do; key = s ^ 0x80000000 unsigned.
        int* s = (int*)keys;
        int w = Vector<int>.Count;
        var mask = new Vector<int>(0x7FFFFFFF);
        var vmin = new Vector<int>(int.MaxValue);
        var vmax = new Vector<int>(int.MinValue);
        long j = 0;
        for (; j + w <= n; j += w)
        {
            var u = Unsafe.ReadUnaligned<Vector<int>>(v + j);
            var sk = u ^ (Vector.ShiftRightArithmetic(u, 31) & mask);
            Unsafe.WriteUnaligned(s + j, sk);
            vmin = Vector.Min(vmin, sk);
            vmax = Vector.Max(vmax, sk);
        }
        int min = int.MaxValue, max = int.MinValue;
        for (int l = 0; l < w; l++) { min = Math.Min(min, vmin[l]); max = Math.Max(max, vmax[l]); }
        for (; j < n; j++)
        {
            int u = BitConverter.SingleToInt32Bits(v[j]);
            s[j] = u ^ ((u >> 31) & 0x7FFFFFFF);
            min = Math.Min(min, s[j]);
            max = Math.Max(max, s[j]);
        }
        // Every key reaches the smallest's prefix; find the largest prefix that k keys reach.
        uint lo = ((uint)min ^ 0x80000000u) >> 16, hi = ((uint)max ^ 0x80000000u) >> 16;
        while (lo < hi)
        {
            uint mid = lo + (hi - lo + 1) / 2;
            if (CountAtLeast(s, n, (int)((mid << 16) ^ 0x80000000u)) >= k) lo = mid;
            else hi = mid - 1;
        }
        float t = FromSortKey(lo << 16);
        // −∞ as the k-th largest maps to a NaN bit pattern; every non-NaN value reaches −∞.
        return float.IsNaN(t) ? float.NegativeInfinity : t;
    }

    /// <summary>How many of the signed keys <paramref name="s"/>[0..n) are at least <paramref name="t"/>.</summary>
    private static long CountAtLeast(int* s, long n, int t)
    {
        int w = Vector<int>.Count;
        var vt = new Vector<int>(t);
        var acc = Vector<int>.Zero;
        long j = 0, count = 0;
        // A true lane is −1: subtracting the masks counts them (per lane at most n / w, far below 2³¹).
        for (; j + w <= n; j += w) acc -= Vector.GreaterThanOrEqual(Unsafe.ReadUnaligned<Vector<int>>(s + j), vt);
        count += Vector.Sum(acc);
        for (; j < n; j++) if (s[j] >= t) count++;
        return count;
    }

    /// <summary>The positions j &lt; <paramref name="n"/> with v[j] ≥ <paramref name="t"/>, in increasing order, into
    /// <paramref name="dst"/> (room for n); returns their count. Vector comparisons, four vectors per branch, and the
    /// positions taken from the comparison masks bit by bit.</summary>
    internal static int Above(float* v, long n, float t, int* dst)
    {
        int count = 0;
        long j = 0;
        if (Vector256.IsHardwareAccelerated)
        {
            var vt = Vector256.Create(t);
            for (; j + 32 <= n; j += 32)
            {
                ulong mask = Vector256.GreaterThanOrEqual(Vector256.Load(v + j), vt).ExtractMostSignificantBits()
                    | (ulong)Vector256.GreaterThanOrEqual(Vector256.Load(v + j + 8), vt).ExtractMostSignificantBits() << 8
                    | (ulong)Vector256.GreaterThanOrEqual(Vector256.Load(v + j + 16), vt).ExtractMostSignificantBits() << 16
                    | (ulong)Vector256.GreaterThanOrEqual(Vector256.Load(v + j + 24), vt).ExtractMostSignificantBits() << 24;
                for (; mask != 0; mask &= mask - 1) dst[count++] = (int)(j + BitOperations.TrailingZeroCount(mask));
            }
        }
        else if (Vector128.IsHardwareAccelerated)
        {
            var vt = Vector128.Create(t);
            for (; j + 16 <= n; j += 16)
            {
                ulong mask = Vector128.GreaterThanOrEqual(Vector128.Load(v + j), vt).ExtractMostSignificantBits()
                    | (ulong)Vector128.GreaterThanOrEqual(Vector128.Load(v + j + 4), vt).ExtractMostSignificantBits() << 4
                    | (ulong)Vector128.GreaterThanOrEqual(Vector128.Load(v + j + 8), vt).ExtractMostSignificantBits() << 8
                    | (ulong)Vector128.GreaterThanOrEqual(Vector128.Load(v + j + 12), vt).ExtractMostSignificantBits() << 12;
                for (; mask != 0; mask &= mask - 1) dst[count++] = (int)(j + BitOperations.TrailingZeroCount(mask));
            }
        }
        for (; j < n; j++) if (v[j] >= t) dst[count++] = (int)j;
        return count;
    }

    /// <summary>The 16-bit prefix of the k-th largest of <paramref name="n"/> keys, and how many of the k largest have
    /// that prefix (the others' prefixes are larger): <paramref name="hist"/>[0..256) holds the keys' top-byte histogram
    /// on entry, <paramref name="max"/> the largest key (the searches of both bytes start at the largest present, not
    /// at 255); a histogram of the second byte within the top byte's bucket goes to hist[257..514).</summary>
    private static (uint Prefix, int Need) KthPrefix(uint* keys, long n, int k, int* hist, uint max)
    {
        int need = k, top = (int)(max >> 24);
        while (hist[top] < need) need -= hist[top--];
        int* hist2 = hist + 257;
        uint second = 0;
        for (long j = 0; j < n; j++)
        {
            uint key = keys[j];
            if ((key >> 24) != (uint)top) continue;
            uint b = (key >> 16) & 0xFF;
            hist2[b]++;
            second = Math.Max(second, b);
        }
        while (hist2[second] < need) need -= hist2[second--];
        return (((uint)top << 8) | (uint)second, need);
    }

    /// <summary>Rows of at least this many times k elements go through <see cref="RadixTopK"/> when the block path does
    /// not apply; shorter rows through the heap, which then replaces its minimum rarely.</summary>
    internal const int RadixMinRatio = 2;

    /// <summary>Whether a row of <paramref name="d"/> elements takes <see cref="RadixTopK"/> off the block path.</summary>
    internal static bool UsesRadix(long d, int k) => d >= (long)RadixMinRatio * k;

    /// <summary>
    /// The top-k of a row by a two-byte radix select on the order-preserving keys (<see cref="SortKey"/>): a histogram of
    /// the keys' top byte finds the bucket holding the k-th largest, a histogram of the second byte within it the 16-bit
    /// prefix P of the k-th largest. Every element whose key prefix exceeds P is selected; the rest come from the elements
    /// with prefix P (usually a handful) through a min-heap. Three passes over the row, no data-dependent heap work for
    /// most elements. False, with nothing written, when the row holds a NaN (the heap path handles it).
    /// <paramref name="keys"/> and <paramref name="boundary"/>: d entries of scratch; <paramref name="hist"/>: 2 × 257.
    /// </summary>
    internal static bool RadixTopK(float* row, long d, int k, uint* keys, int* hist, int* boundary, float* hv, long* hi)
    {
        new Span<int>(hist, 2 * 257).Clear();
        uint max = 0;
        for (long j = 0; j < d; j++)
        {
            float v = row[j];
            if (float.IsNaN(v)) return false;
            uint key = SortKey(v);
            keys[j] = key;
            hist[key >> 24]++;
            max = Math.Max(max, key);
        }
        var (prefix, need) = KthPrefix(keys, d, k, hist, max);
        // need elements of prefix P complete the k; the k − need above it are all taken.
        int filled = 0, nb = 0;
        for (long j = 0; j < d; j++)
        {
            uint p = keys[j] >> 16;
            if (p > prefix) { hv[filled] = row[j]; hi[filled++] = j; }
            else if (p == prefix) boundary[nb++] = (int)j;
        }
        float* bv = hv + filled;
        long* bi = hi + filled;
        if (nb == need)
        {
            for (int b = 0; b < nb; b++) { bv[b] = row[boundary[b]]; bi[b] = boundary[b]; }
            return true;
        }
        int c = 0;
        for (int b = 0; b < nb; b++)
        {
            long j = boundary[b];
            if (c < need) Push(row[j], j, bv, bi, c++);
            else Offer(row[j], j, bv, bi, need);
        }
        return true;
    }

    /// <summary>An unsigned key ordered as the (non-NaN) floats are: the sign bit set for positives, all bits flipped for
    /// negatives.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static uint SortKey(float v)
    {
        uint u = BitConverter.SingleToUInt32Bits(v);
        return u ^ ((uint)((int)u >> 31) | 0x80000000u);
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static float FromSortKey(uint key) =>
        BitConverter.UInt32BitsToSingle((key & 0x80000000u) != 0 ? key ^ 0x80000000u : ~key);

    /// <summary>Appends (v, j) at position c of a min-heap holding c entries and restores the heap order.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    internal static void Push(float v, long j, float* hv, long* hi, int c)
    {
        hv[c] = v; hi[c] = j;
        while (c > 0)
        {
            int parent = (c - 1) >> 1;
            if (hv[parent] <= hv[c]) break;
            (hv[parent], hv[c]) = (hv[c], hv[parent]);
            (hi[parent], hi[c]) = (hi[c], hi[parent]);
            c = parent;
        }
    }

    private static void HeapTopK(float* row, long d, int k, float* hv, long* hi)
    {
        int filled = 0;
        long j = 0;
        // Fill the heap with the first k non-NaN values.
        for (; j < d && filled < k; j++)
        {
            float v = row[j];
            if (float.IsNaN(v)) continue;
            Push(v, j, hv, hi, filled++);
        }
        if (filled < k)
        {
            // Fewer than k non-NaN values: pad with NaN positions so the result is still k entries.
            for (long z = 0; z < d && filled < k; z++)
                if (float.IsNaN(row[z])) { hv[filled] = float.NaN; hi[filled++] = z; }
            return;
        }
        int w = Vector<float>.Count;
        for (; j < d; )
        {
            if (j + w <= d)
            {
                var block = Unsafe.ReadUnaligned<Vector<float>>(row + j);
                if (!Vector.GreaterThanAny(block, new Vector<float>(hv[0]))) { j += w; continue; }
                for (long e = j + w; j < e; j++) Offer(row[j], j, hv, hi, k);
                continue;
            }
            Offer(row[j], j, hv, hi, k);
            j++;
        }
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    internal static void Offer(float v, long j, float* hv, long* hi, int k)
    {
        if (!(v > hv[0])) return;
        int c = 0;
        while (true)
        {
            int l = 2 * c + 1;
            if (l >= k) break;
            int r = l + 1;
            int s = r < k && hv[r] < hv[l] ? r : l;
            if (hv[s] >= v) break;
            hv[c] = hv[s]; hi[c] = hi[s];
            c = s;
        }
        hv[c] = v; hi[c] = j;
    }
}
