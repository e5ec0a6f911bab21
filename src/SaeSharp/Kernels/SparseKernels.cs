using System.Numerics;
using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;
using TorchSharp;
using static TorchSharp.torch;

namespace SaeSharp.Saes;

/// <summary>
/// CPU kernels over row-indexed float32 matrices for <see cref="SparseLatents"/>: libtorch's sparse·dense product runs
/// its nnz loop on one thread, and a gather-then-reduce formulation materialises nnz·d floats. These work in place,
/// vectorised (<see cref="Vector{T}"/>) and split over torch's thread count.
/// </summary>
internal static unsafe class SparseKernels
{
    /// <summary>dst[dstRow[e]] += scale[e] · src[srcRow[e]] for every entry e (dst, src: contiguous float32 [·, d];
    /// indices int64). See <see cref="SumRows"/>.</summary>
    public static void ScatterAddRows(Tensor dst, Tensor dstRow, Tensor src, Tensor srcRow, Tensor scale) =>
        Scatter(dst, dstRow, src, srcRow, scale, accumulate: true);

    /// <summary>A new [rows, d] matrix whose row r is Σ_{e: dstRow[e] = r} scale[e] · src[srcRow[e]] (zero for rows
    /// without entries). The entries are grouped by destination row (a counting sort), and each thread owns a range of
    /// destination rows holding about the same number of entries: a row is written once, from L1, by one thread, and
    /// the source rows are read whole.</summary>
    public static Tensor SumRows(long rows, Tensor dstRow, Tensor src, Tensor srcRow, Tensor scale)
    {
        var dst = empty(rows, src.shape[1], dtype: ScalarType.Float32);
        Scatter(dst, dstRow, src, srcRow, scale, accumulate: false);
        return dst;
    }

    /// <summary>The transpose of <see cref="SumRows"/>, contiguous [d, rows]: rows are summed in tiles of 16 in a scratch
    /// buffer and written out as 16-float runs (one cache line), so no strided copy follows (the encoder gradient
    /// W_enc [d_in, d_sae] from latent rows).</summary>
    public static Tensor SumRowsTransposed(long rows, Tensor dstRow, Tensor src, Tensor srcRow, Tensor scale)
    {
        var dst = empty(src.shape[1], rows, dtype: ScalarType.Float32);
        Scatter(dst, dstRow, src, srcRow, scale, accumulate: false, transposed: true);
        return dst;
    }

    private const int TransposeTile = 16;

    private static void Scatter(Tensor dst, Tensor dstRow, Tensor src, Tensor srcRow, Tensor scale, bool accumulate, bool transposed = false)
    {
        long d = src.shape[1];
        long dstRows = transposed ? dst.shape[1] : dst.shape[0];
        Check(dst, transposed ? dstRows : d); Check(src, d);
        if (transposed && dst.shape[0] != d) throw new ArgumentException($"transposed sparse kernel needs a [{d}, {dstRows}] output");
        long nnz = dstRow.shape[0];
        long srcRows = src.shape[0];
        if (srcRow.shape[0] != nnz || scale.shape[0] != nnz)
            throw new ArgumentException($"sparse kernel needs {nnz} source rows and scales, got {srcRow.shape[0]} and {scale.shape[0]}");
        if (scale.dtype != ScalarType.Float32) throw new ArgumentException($"sparse kernel needs float32 values, got {scale.dtype}");
        using var dr = dstRow.contiguous();
        using var sr = srcRow.contiguous();
        using var sc = scale.contiguous();
        float* pDst = FloatPtr(dst), pSrc = FloatPtr(src), pScale = FloatPtr(sc);
        long* pDr = LongPtr(dr), pSr = LongPtr(sr);
        // Counting sort of the entries by destination row (stable).
        var offsets = new long[dstRows + 1];
        for (long e = 0; e < nnz; e++)
        {
            long r = pDr[e], s = pSr[e];
            if ((ulong)r >= (ulong)dstRows || (ulong)s >= (ulong)srcRows) throw new IndexOutOfRangeException($"sparse entry {e}: row {r} or {s} out of range");
            offsets[r + 1]++;
        }
        for (long r = 0; r < dstRows; r++) offsets[r + 1] += offsets[r];
        var order = new long[nnz];
        var next = new long[dstRows];
        Array.Copy(offsets, next, dstRows);
        for (long e = 0; e < nnz; e++) order[next[pDr[e]]++] = e;
        int threads = (int)Math.Max(1, Math.Min(get_num_threads(), dstRows));
        // Thread t owns the rows whose entries start in [t·nnz/threads, (t+1)·nnz/threads).
        var bounds = new long[threads + 1];
        bounds[threads] = dstRows;
        for (int t = 1; t < threads; t++)
        {
            long target = nnz * t / threads;
            long lo = bounds[t - 1], hi = dstRows;
            while (lo < hi) { long mid = (lo + hi) >> 1; if (offsets[mid] < target) lo = mid + 1; else hi = mid; }
            bounds[t] = transposed ? Math.Max(bounds[t - 1], lo / TransposeTile * TransposeTile) : lo;
        }
        if (transposed)
        {
            Parallel.For(0, threads, t =>
            {
                var scratch = new float[TransposeTile * d];
                fixed (long* pOff = offsets, pOrder = order)
                fixed (float* pTile = scratch)
                {
                    for (long r0 = bounds[t]; r0 < bounds[t + 1]; r0 += TransposeTile)
                    {
                        int tile = (int)Math.Min(TransposeTile, bounds[t + 1] - r0);
                        new Span<float>(pTile, checked(tile * (int)d)).Clear();
                        for (int l = 0; l < tile; l++)
                        {
                            float* row = pTile + l * d;
                            for (long o = pOff[r0 + l]; o < pOff[r0 + l + 1]; o++)
                            {
                                long e = pOrder[o];
                                Axpy(pScale[e], pSrc + pSr[e] * d, row, 0, d);
                            }
                        }
                        for (long j = 0; j < d; j++)
                        {
                            float* outRun = pDst + j * dstRows + r0;
                            for (int l = 0; l < tile; l++) outRun[l] = pTile[l * d + j];
                        }
                    }
                }
            });
            return;
        }
        Parallel.For(0, threads, t =>
        {
            fixed (long* pOff = offsets, pOrder = order)
            {
                for (long r = bounds[t]; r < bounds[t + 1]; r++)
                {
                    float* row = pDst + r * d;
                    if (!accumulate) new Span<float>(row, checked((int)d)).Clear();
                    for (long o = pOff[r]; o < pOff[r + 1]; o++)
                    {
                        long e = pOrder[o];
                        Axpy(pScale[e], pSrc + pSr[e] * d, row, 0, d);
                    }
                }
            }
        });
    }

    /// <summary>out[e] = ⟨a[aRow[e]], b[bRow[e]]⟩ (a, b: contiguous float32 [·, d]); returns [nnz].</summary>
    public static Tensor RowDots(Tensor a, Tensor aRow, Tensor b, Tensor bRow)
    {
        long d = a.shape[1];
        Check(a, d); Check(b, d);
        long nnz = aRow.shape[0];
        var result = empty(nnz, dtype: ScalarType.Float32);
        if (nnz == 0) return result;
        using var ar = aRow.contiguous();
        using var br = bRow.contiguous();
        float* pa = FloatPtr(a), pb = FloatPtr(b), pOut = FloatPtr(result);
        long* pAr = LongPtr(ar), pBr = LongPtr(br);
        long aRows = a.shape[0], bRows = b.shape[0];
        int threads = Math.Max(1, get_num_threads());
        long per = (nnz + threads - 1) / threads;
        Parallel.For(0, threads, t =>
        {
            long start = t * per, end = Math.Min(nnz, start + per);
            for (long e = start; e < end; e++)
            {
                long r = pAr[e], s = pBr[e];
                if ((ulong)r >= (ulong)aRows || (ulong)s >= (ulong)bRows) throw new IndexOutOfRangeException($"sparse entry {e}: row {r} or {s} out of range");
                pOut[e] = Dot(pa + r * d, pb + s * d, d);
            }
        });
        return result;
    }

    /// <summary>
    /// Per-row top-k of a contiguous float32 [rows, d] matrix (k ≤ d): values and int64 column indices [rows, k], unsorted.
    /// NaNs are never selected (torch.topk would rank them first); ties are broken arbitrarily, as by torch.topk.
    /// When k ≤ d/64 and d is a multiple of 16 vectors (rows without NaN), the maxima of d/16 blocks of 16 elements give
    /// a lower bound τ on the row's k-th largest value (the k-th largest block maximum: k distinct elements reach it), and
    /// only the blocks whose maximum reaches τ are read again, their elements ≥ τ entering a size-k min-heap; otherwise
    /// the heap scans the whole row, skipping vectors that cannot enter it.
    /// </summary>
    public static (Tensor Values, Tensor Indices) RowTopK(Tensor m, int k)
    {
        long d = m.shape[1];
        Check(m, d);
        return TopKRows(FloatPtr(m), null, null, m.shape[0], d, k);
    }

    /// <summary>
    /// <see cref="RowTopK"/> of m + bias for a contiguous bfloat16 [rows, d] matrix m and a float32 [d] bias, in float32
    /// (bfloat16 → float32 is a 16-bit left shift): the block maxima and the re-read blocks widen and add the bias on the
    /// fly (the heap fallback widens the row into a per-thread buffer); the values returned are those float32 sums.
    /// </summary>
    public static (Tensor Values, Tensor Indices) RowTopKBf16(Tensor m, Tensor bias, int k)
    {
        long d = m.shape[1];
        if (m.dtype != ScalarType.BFloat16 || !m.is_contiguous() || m.device_type != DeviceType.CPU || m.dim() != 2)
            throw new ArgumentException($"bfloat16 top-k needs a contiguous bfloat16 CPU matrix, got {m.dtype} [{string.Join(", ", m.shape)}]");
        if (bias.dtype != ScalarType.Float32 || !bias.is_contiguous() || bias.device_type != DeviceType.CPU || bias.dim() != 1 || bias.shape[0] != d)
            throw new ArgumentException($"bfloat16 top-k needs a contiguous float32 [{d}] bias, got {bias.dtype} [{string.Join(", ", bias.shape)}]");
        return TopKRows(null, (ushort*)Unsafe.AsPointer(ref MemoryMarshal.GetReference(m.bytes)), FloatPtr(bias), m.shape[0], d, k);
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
        int threads = Math.Max(1, get_num_threads());
        long per = (rows + threads - 1) / threads;
        // The bfloat16 block maxima are taken 16 columns (one ushort vector) at a time.
        long blockVector = TopKBlock * (pm == null ? Vector<ushort>.Count : Vector<float>.Count);
        bool blockwise = (long)k * 64 <= d && d % blockVector == 0;
        Parallel.For(0, threads, t =>
        {
            long start = t * per, end = Math.Min(rows, start + per);
            if (start >= end) return;
            var maxima = new float[blockwise ? d / TopKBlock : 0];
            var buffer = new float[pm == null ? d : 0];
            var hist = new int[2 * 257];
            fixed (float* pMax = maxima, pBuf = buffer)
            fixed (int* pHist = hist)
            {
                for (long r = start; r < end; r++)
                {
                    float* hv = pv + r * k;
                    long* hi = pi + r * k;
                    if (pm != null)
                    {
                        float* row = pm + r * d;
                        if (!blockwise || !BlockMaxima(row, d, pMax)) HeapTopK(row, d, k, hv, hi);
                        else TopKFromBlocks(row, null, null, d, k, pMax, pHist, hv, hi);
                        continue;
                    }
                    ushort* src = pb + r * d;
                    if (blockwise && BlockMaximaBf16(src, bias, d, pMax))
                    {
                        TopKFromBlocks(null, src, bias, d, k, pMax, pHist, hv, hi);
                        continue;
                    }
                    WidenBf16(src, bias, pBuf, d);
                    HeapTopK(pBuf, d, k, hv, hi);
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
        for (; j < d; j++) dst[j] = Bf16(src[j]) + bias[j];
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static float Bf16(ushort v) => BitConverter.Int32BitsToSingle(v << 16);

    private const int TopKBlock = 16;

    /// <summary>The maxima of the S = d/16 blocks of <see cref="RowTopK"/>'s block path (d a multiple of 16 vectors); false
    /// when the row holds a NaN. The row is read as 16 slices of width S; block c is {c, c + S, …, c + 15·S}, so the
    /// block maxima are 15 vector maxima of the slices, without horizontal reductions.</summary>
    private static bool BlockMaxima(float* row, long d, float* maxima)
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

    /// <summary><see cref="BlockMaxima"/> of the bfloat16 row plus the bias (d a multiple of 16 ushort vectors), widening
    /// on the fly.</summary>
    private static bool BlockMaximaBf16(ushort* row, float* bias, long d, float* maxima)
    {
        int w = Vector<ushort>.Count, half = Vector<float>.Count;
        long width = d / TopKBlock;
        var nan = Vector<int>.Zero;
        for (long c = 0; c < width; c += w)
        {
            var acc0 = new Vector<float>(float.NegativeInfinity);
            var acc1 = acc0;
            for (long o = c; o < d; o += width)
            {
                Vector.Widen(Unsafe.ReadUnaligned<Vector<ushort>>(row + o), out var lo, out var hi);
                var v0 = Vector.AsVectorSingle(Vector.ShiftLeft(lo, 16)) + Unsafe.ReadUnaligned<Vector<float>>(bias + o);
                var v1 = Vector.AsVectorSingle(Vector.ShiftLeft(hi, 16)) + Unsafe.ReadUnaligned<Vector<float>>(bias + o + half);
                nan |= ~Vector.Equals(v0, v0) | ~Vector.Equals(v1, v1);
                acc0 = Vector.Max(acc0, v0);
                acc1 = Vector.Max(acc1, v1);
            }
            Unsafe.WriteUnaligned(maxima + c, acc0);
            Unsafe.WriteUnaligned(maxima + c + half, acc1);
        }
        return Vector.EqualsAll(nan, Vector<int>.Zero);
    }

    /// <summary>The top-k of a NaN-free row from its block maxima: a lower bound τ on the k-th largest block maximum is a
    /// lower bound on the row's k-th largest value (k distinct elements reach it), so only the blocks whose maximum
    /// reaches τ are read, and their elements ≥ τ enter a size-k min-heap. τ is found by a radix select on the maxima's
    /// order-preserving 32-bit keys: their top byte, then their second byte within the bucket that holds the k-th
    /// largest, τ being the smallest value of that 16-bit bucket (bfloat16 resolution: a few blocks more are read than
    /// with the exact k-th maximum, without a branchy heap over all maxima). <paramref name="hist"/>: 2 × 257 ints of
    /// scratch. The row is float32 <paramref name="row"/> or, when that is null, the bfloat16 <paramref name="bf"/> plus
    /// <paramref name="bias"/>.</summary>
    private static void TopKFromBlocks(float* row, ushort* bf, float* bias, long d, int k, float* maxima, int* hist, float* hv, long* hi)
    {
        long width = d / TopKBlock;
        var keys = (uint*)maxima; // the maxima are replaced by their keys
        new Span<int>(hist, 2 * 257).Clear();
        for (long b = 0; b < width; b++)
        {
            uint key = SortKey(maxima[b]);
            keys[b] = key;
            hist[key >> 24]++;
        }
        int need = k, top = 255;
        while (hist[top] < need) need -= hist[top--];
        int* hist2 = hist + 257;
        for (long b = 0; b < width; b++)
        {
            uint key = keys[b];
            hist2[(key >> 24) == (uint)top ? (int)((key >> 16) & 0xFF) : 256]++;
        }
        int second = 255;
        while (hist2[second] < need) need -= hist2[second--];
        uint tauKey = ((uint)top << 24) | ((uint)second << 16);
        float t = FromSortKey(tauKey);
        int filled = 0;
        for (long c = 0; c < width; c++)
        {
            if (keys[c] < tauKey) continue;
            for (long e = c; e < d; e += width)
            {
                float v = row != null ? row[e] : Bf16(bf[e]) + bias[e];
                if (!(v >= t)) continue;
                if (filled < k) Push(v, e, hv, hi, filled++);
                else Offer(v, e, hv, hi, k);
            }
        }
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
    private static void Push(float v, long j, float* hv, long* hi, int c)
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
    private static void Offer(float v, long j, float* hv, long* hi, int k)
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

    /// <summary>
    /// The positive entries of a contiguous float32 [rows, d] matrix in row-major order: row and column indices (int64)
    /// and values, or null when there are more than <paramref name="maxCount"/> (two parallel passes: count, then fill).
    /// </summary>
    public static (Tensor Rows, Tensor Cols, Tensor Values)? PositiveEntries(Tensor m, long maxCount)
    {
        long d = m.shape[1];
        Check(m, d);
        long rows = m.shape[0];
        float* pm = FloatPtr(m);
        var counts = new long[rows];
        int threads = Math.Max(1, get_num_threads());
        long per = (rows + threads - 1) / threads;
        int w = Vector<float>.Count;
        Parallel.For(0, threads, t =>
        {
            long start = t * per, end = Math.Min(rows, start + per);
            for (long r = start; r < end; r++)
            {
                float* row = pm + r * d;
                long c = 0, j = 0;
                for (; j + w <= d; j += w)
                    c -= Vector.Sum(Vector.GreaterThan(Unsafe.ReadUnaligned<Vector<float>>(row + j), Vector<float>.Zero));
                for (; j < d; j++) if (row[j] > 0) c++;
                counts[r] = c;
            }
        });
        var offsets = new long[rows + 1];
        for (long r = 0; r < rows; r++) offsets[r + 1] = offsets[r] + counts[r];
        long total = offsets[rows];
        if (total > maxCount) return null;
        var rowIdx = empty(total, dtype: ScalarType.Int64);
        var colIdx = empty(total, dtype: ScalarType.Int64);
        var values = empty(total, dtype: ScalarType.Float32);
        if (total == 0) return (rowIdx, colIdx, values);
        long* pr = LongPtr(rowIdx), pc = LongPtr(colIdx);
        float* pv = FloatPtr(values);
        Parallel.For(0, threads, t =>
        {
            long start = t * per, end = Math.Min(rows, start + per);
            for (long r = start; r < end; r++)
            {
                float* row = pm + r * d;
                long o = offsets[r];
                for (long j = 0; j < d; j++)
                {
                    float v = row[j];
                    if (v > 0) { pr[o] = r; pc[o] = j; pv[o] = v; o++; }
                }
            }
        });
        return (rowIdx, colIdx, values);
    }

    /// <summary>In place, for every row j: g[j] −= (⟨g[j], w[j]⟩ / ‖w[j]‖²)·w[j] (rows with ‖w[j]‖ ≤ 1e-8 untouched).
    /// Returns false (doing nothing) unless both are contiguous float32 CPU matrices of the same shape.</summary>
    public static bool RemoveParallelRows(Tensor g, Tensor w)
    {
        if (g.dtype != ScalarType.Float32 || w.dtype != ScalarType.Float32 || !g.is_contiguous() || !w.is_contiguous()
            || g.device_type != DeviceType.CPU || w.device_type != DeviceType.CPU || g.dim() != 2 || !g.shape.SequenceEqual(w.shape))
            return false;
        long rows = g.shape[0], d = g.shape[1];
        if (rows == 0 || d == 0) return true;
        float* pg = FloatPtr(g), pw = FloatPtr(w);
        int threads = Math.Max(1, get_num_threads());
        long per = (rows + threads - 1) / threads;
        Parallel.For(0, threads, t =>
        {
            long start = t * per, end = Math.Min(rows, start + per);
            for (long j = start; j < end; j++)
            {
                float* gj = pg + j * d, wj = pw + j * d;
                float ww = Dot(wj, wj, d);
                if (ww <= 1e-16f) continue;
                Axpy(-Dot(gj, wj, d) / ww, wj, gj, 0, d);
            }
        });
        return true;
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static void Axpy(float alpha, float* x, float* y, long lo, long hi)
    {
        long i = lo;
        int w = Vector<float>.Count;
        var va = new Vector<float>(alpha);
        for (; i + 4 * w <= hi; i += 4 * w)
        {
            var x0 = Unsafe.ReadUnaligned<Vector<float>>(x + i);
            var x1 = Unsafe.ReadUnaligned<Vector<float>>(x + i + w);
            var x2 = Unsafe.ReadUnaligned<Vector<float>>(x + i + 2 * w);
            var x3 = Unsafe.ReadUnaligned<Vector<float>>(x + i + 3 * w);
            Unsafe.WriteUnaligned(y + i, Unsafe.ReadUnaligned<Vector<float>>(y + i) + va * x0);
            Unsafe.WriteUnaligned(y + i + w, Unsafe.ReadUnaligned<Vector<float>>(y + i + w) + va * x1);
            Unsafe.WriteUnaligned(y + i + 2 * w, Unsafe.ReadUnaligned<Vector<float>>(y + i + 2 * w) + va * x2);
            Unsafe.WriteUnaligned(y + i + 3 * w, Unsafe.ReadUnaligned<Vector<float>>(y + i + 3 * w) + va * x3);
        }
        for (; i + w <= hi; i += w)
        {
            var vy = Unsafe.ReadUnaligned<Vector<float>>(y + i);
            var vx = Unsafe.ReadUnaligned<Vector<float>>(x + i);
            Unsafe.WriteUnaligned(y + i, vy + va * vx);
        }
        for (; i < hi; i++) y[i] += alpha * x[i];
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static float Dot(float* a, float* b, long d)
    {
        long i = 0;
        int w = Vector<float>.Count;
        var acc0 = Vector<float>.Zero;
        var acc1 = Vector<float>.Zero;
        var acc2 = Vector<float>.Zero;
        var acc3 = Vector<float>.Zero;
        // Four independent accumulators hide the multiply-add latency.
        for (; i + 4 * w <= d; i += 4 * w)
        {
            acc0 += Unsafe.ReadUnaligned<Vector<float>>(a + i) * Unsafe.ReadUnaligned<Vector<float>>(b + i);
            acc1 += Unsafe.ReadUnaligned<Vector<float>>(a + i + w) * Unsafe.ReadUnaligned<Vector<float>>(b + i + w);
            acc2 += Unsafe.ReadUnaligned<Vector<float>>(a + i + 2 * w) * Unsafe.ReadUnaligned<Vector<float>>(b + i + 2 * w);
            acc3 += Unsafe.ReadUnaligned<Vector<float>>(a + i + 3 * w) * Unsafe.ReadUnaligned<Vector<float>>(b + i + 3 * w);
        }
        for (; i + w <= d; i += w)
            acc0 += Unsafe.ReadUnaligned<Vector<float>>(a + i) * Unsafe.ReadUnaligned<Vector<float>>(b + i);
        float sum = Vector.Sum((acc0 + acc1) + (acc2 + acc3));
        for (; i < d; i++) sum += a[i] * b[i];
        return sum;
    }

    private static void Check(Tensor t, long d)
    {
        if (t.dtype != ScalarType.Float32 || !t.is_contiguous() || t.device_type != DeviceType.CPU || t.dim() != 2 || t.shape[1] != d)
            throw new ArgumentException($"sparse kernel needs contiguous float32 CPU [·, {d}] matrices, got {t.dtype} [{string.Join(", ", t.shape)}]");
    }

    private static float* FloatPtr(Tensor t) => (float*)Unsafe.AsPointer(ref MemoryMarshal.GetReference(t.bytes));

    private static long* LongPtr(Tensor t)
    {
        if (t.dtype != ScalarType.Int64) throw new ArgumentException($"sparse kernel needs int64 indices, got {t.dtype}");
        return (long*)Unsafe.AsPointer(ref MemoryMarshal.GetReference(t.bytes));
    }
}
