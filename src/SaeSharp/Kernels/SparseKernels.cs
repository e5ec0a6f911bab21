using System.Buffers;
using System.Numerics;
using System.Runtime.CompilerServices;
using System.Runtime.Intrinsics;
using TorchSharp;
using static SaeSharp.Kernels.TensorPointers;
using static TorchSharp.torch;

namespace SaeSharp.Kernels;

/// <summary>
/// CPU kernels over row-indexed float32 matrices for <see cref="SparseLatents"/>: libtorch's sparse·dense product runs
/// its nnz loop on one thread, and a gather-then-reduce formulation materialises nnz·d floats. These work in place,
/// vectorised (<see cref="Vector{T}"/>) and split over torch's thread count. Where <see cref="CpuKernels.On"/> is false
/// (another device, or <c>SAESHARP_KERNELS=torch</c>) each entry point computes the same result with torch operations,
/// in chunks of <see cref="TorchChunk"/> entries.
/// </summary>
internal static unsafe class SparseKernels
{
    /// <summary>dst[dstRow[e]] += scale[e] · src[srcRow[e]] for every entry e (dst, src: contiguous float32 [·, d];
    /// indices int64). See <see cref="SumRows"/>.</summary>
    public static void ScatterAddRows(Tensor dst, Tensor dstRow, Tensor src, Tensor srcRow, Tensor scale)
    {
        if (!CpuKernels.On(dst) || !CpuKernels.On(src)) TorchScatterAdd(dst, dstRow, src, srcRow, scale);
        else Scatter(dst, dstRow, src, srcRow, scale, accumulate: true);
    }

    /// <summary>dst[dstRows[i]] = src[srcRows[i]] for every i (rows of float32 [·, d] matrices; <paramref name="dstRows"/>
    /// null: dst[i]), by plain row copies on the calling thread: no temporary and no threads to wake for a few hundred
    /// kilobytes (torch's index_select/index_copy_ where <see cref="CpuKernels.On"/> is false or a matrix is not
    /// contiguous float32). Within one matrix the source and destination rows must be disjoint.</summary>
    public static void CopyRows(Tensor src, long[] srcRows, Tensor dst, long[]? dstRows)
    {
        long d = src.shape[1];
        if (dstRows is not null && dstRows.Length != srcRows.Length)
            throw new ArgumentException($"row copy needs as many destination rows as source rows, got {dstRows.Length} and {srcRows.Length}");
        if (srcRows.Length == 0) return;
        bool plain = CpuKernels.On(src) && CpuKernels.On(dst) && src.dtype == ScalarType.Float32 && dst.dtype == ScalarType.Float32
                     && src.is_contiguous() && dst.is_contiguous() && dst.dim() == 2 && dst.shape[1] == d;
        if (!plain)
        {
            using var scope = NewDisposeScope();
            var rows = src.index_select(0, tensor(srcRows, device: src.device));
            if (dstRows is null) dst.narrow(0, 0, srcRows.Length).copy_(rows);
            else dst.index_copy_(0, tensor(dstRows, device: dst.device), rows);
            return;
        }
        long srcCount = src.shape[0], dstCount = dst.shape[0];
        try
        {
            float* ps = FloatPtr(src), pd = FloatPtr(dst);
            long bytes = d * sizeof(float);
            for (int i = 0; i < srcRows.Length; i++)
            {
                long r = srcRows[i], t = dstRows is null ? i : dstRows[i];
                if ((ulong)r >= (ulong)srcCount || (ulong)t >= (ulong)dstCount) throw new SaeSharpException($"row copy {i}: row {r} → {t} out of range");
                Buffer.MemoryCopy(ps + r * d, pd + t * d, bytes, bytes);
            }
        }
        finally
        {
            GC.KeepAlive(src);
            GC.KeepAlive(dst);
        }
    }

    /// <summary>Entries per chunk of the torch fallbacks (bounds their nnz·d temporaries).</summary>
    internal const long TorchChunk = 1 << 16;

    /// <summary>dst[dstRow[e]] += scale[e]·src[srcRow[e]] with index_add_, chunk by chunk.</summary>
    private static void TorchScatterAdd(Tensor dst, Tensor dstRow, Tensor src, Tensor srcRow, Tensor scale)
    {
        long nnz = dstRow.shape[0];
        for (long s = 0; s < nnz; s += TorchChunk)
        {
            using var scope = NewDisposeScope();
            long len = Math.Min(TorchChunk, nnz - s);
            var rows = src.index_select(0, srcRow.narrow(0, s, len)).mul_(scale.narrow(0, s, len).unsqueeze(1));
            dst.index_add_(0, dstRow.narrow(0, s, len), rows, TorchScalars.Of(1));
        }
    }

    /// <summary>A new [rows, d] matrix whose row r is Σ_{e: dstRow[e] = r} scale[e] · src[srcRow[e]] (zero for rows
    /// without entries). The entries are grouped by destination row (a counting sort), and each thread owns a range of
    /// destination rows holding about the same number of entries: a row is written once, from L1, by one thread, and
    /// the source rows are read whole.</summary>
    public static Tensor SumRows(long rows, Tensor dstRow, Tensor src, Tensor srcRow, Tensor scale)
    {
        if (!CpuKernels.On(src))
        {
            var sum = zeros(rows, src.shape[1], dtype: src.dtype, device: src.device);
            TorchScatterAdd(sum, dstRow, src, srcRow, scale);
            return sum;
        }
        var dst = empty(rows, src.shape[1], dtype: ScalarType.Float32);
        Scatter(dst, dstRow, src, srcRow, scale, accumulate: false);
        return dst;
    }

    /// <summary>The transpose of <see cref="SumRows"/>, contiguous [d, rows]: rows are summed in tiles of 16 in a scratch
    /// buffer and written out as 16-float runs (one cache line), so no strided copy follows (the encoder gradient
    /// W_enc [d_in, d_sae] from latent rows).</summary>
    public static Tensor SumRowsTransposed(long rows, Tensor dstRow, Tensor src, Tensor srcRow, Tensor scale)
    {
        if (!CpuKernels.On(src))
        {
            using var sum = SumRows(rows, dstRow, src, srcRow, scale);
            return sum.t().contiguous();
        }
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
        // Counting sort of the entries by destination row (stable). The scratch comes from the shared pool: arrays of nnz
        // longs are large objects (from about 10,000 entries), and allocating them every step set off a full garbage
        // collection every few training steps (BENCHMARKS.md, "AMD EPYC Zen 5").
        var pool = ArrayPool<long>.Shared;
        var offsets = pool.Rent(checked((int)dstRows + 1));
        var order = pool.Rent(checked((int)Math.Max(1, nnz)));
        var next = pool.Rent(checked((int)dstRows));
        try
        {
            ScatterSorted(dstRows, d, srcRows, nnz, pDst, pSrc, pScale, pDr, pSr, offsets, order, next, accumulate, transposed);
        }
        finally
        {
            pool.Return(offsets);
            pool.Return(order);
            pool.Return(next);
        }
        GC.KeepAlive(dst);
        GC.KeepAlive(src);
    }

    /// <summary><see cref="Scatter"/> with its counting-sort scratch: <paramref name="offsets"/> (dstRows + 1),
    /// <paramref name="order"/> (nnz) and <paramref name="next"/> (dstRows), any contents.</summary>
    private static void ScatterSorted(long dstRows, long d, long srcRows, long nnz, float* pDst, float* pSrc, float* pScale,
        long* pDr, long* pSr, long[] offsets, long[] order, long[] next, bool accumulate, bool transposed)
    {
        Array.Clear(offsets, 0, (int)dstRows + 1);
        for (long e = 0; e < nnz; e++)
        {
            long r = pDr[e], s = pSr[e];
            if ((ulong)r >= (ulong)dstRows || (ulong)s >= (ulong)srcRows) throw new SaeSharpException($"sparse entry {e}: row {r} or {s} out of range");
            offsets[r + 1]++;
        }
        for (long r = 0; r < dstRows; r++) offsets[r + 1] += offsets[r];
        Array.Copy(offsets, next, dstRows);
        for (long e = 0; e < nnz; e++) order[next[pDr[e]]++] = e;
        int threads = RowRanges.Count(dstRows);
        // Part t owns the rows whose entries start in [t·nnz/parts, (t+1)·nnz/parts).
        var bounds = new long[threads + 1];
        bounds[threads] = dstRows;
        for (int t = 1; t < threads; t++)
        {
            long target = nnz * t / threads;
            long lo = bounds[t - 1], hi = dstRows;
            while (lo < hi) { long mid = (lo + hi) >> 1; if (offsets[mid] < target) lo = mid + 1; else hi = mid; }
            bounds[t] = transposed ? Math.Max(bounds[t - 1], lo / TransposeTile * TransposeTile) : lo;
        }
        long block = SourceBlock(d, srcRows, nnz, dstRows);
        if (transposed)
        {
            KernelThreads.Run(threads, t =>
            {
                long r0 = bounds[t], r1 = bounds[t + 1];
                // Blocked: the part's rows summed first (untransposed), then written out tile by tile.
                long scratchRows = block > 0 ? r1 - r0 : TransposeTile;
                var scratch = ArrayPool<float>.Shared.Rent(checked((int)Math.Max(1, scratchRows * d)));
                try
                {
                    fixed (long* pOff = offsets, pOrder = order)
                    fixed (float* pScratch = scratch)
                    {
                        if (block > 0) AccumulateBlocked(pScratch - r0 * d, d, r0, r1, srcRows, block, pOff, pOrder, pScale, pSrc, pSr, accumulate: false);
                        for (long t0 = r0; t0 < r1; t0 += TransposeTile)
                        {
                            int tile = (int)Math.Min(TransposeTile, r1 - t0);
                            float* pTile = block > 0 ? pScratch + (t0 - r0) * d : pScratch;
                            if (block == 0)
                                for (int l = 0; l < tile; l++)
                                    AccumulateRow(pTile + l * d, d, pOrder, pOff[t0 + l], pOff[t0 + l + 1], pScale, pSrc, pSr, accumulate: false);
                            for (long j = 0; j < d; j++)
                            {
                                float* outRun = pDst + j * dstRows + t0;
                                for (int l = 0; l < tile; l++) outRun[l] = pTile[l * d + j];
                            }
                        }
                    }
                }
                finally { ArrayPool<float>.Shared.Return(scratch); }
            });
            return;
        }
        KernelThreads.Run(threads, t =>
        {
            fixed (long* pOff = offsets, pOrder = order)
            {
                if (block > 0)
                    AccumulateBlocked(pDst, d, bounds[t], bounds[t + 1], srcRows, block, pOff, pOrder, pScale, pSrc, pSr, accumulate);
                else
                    for (long r = bounds[t]; r < bounds[t + 1]; r++)
                        AccumulateRow(pDst + r * d, d, pOrder, pOff[r], pOff[r + 1], pScale, pSrc, pSr, accumulate);
            }
        });
    }

    /// <summary>Blocks of source rows for the scatters and <see cref="RowDots"/> (off: <c>SAESHARP_SPARSE_BLOCKS=0</c>).</summary>
    internal static bool SourceBlocking { get; set; } = Environment.GetEnvironmentVariable("SAESHARP_SPARSE_BLOCKS") != "0";

    /// <summary>A destination's run of entries within one source block averages at least this many entries before the
    /// blocked order pays for re-reading and re-writing the destination row once per block.</summary>
    internal const long MinBlockRun = 4;

    /// <summary>Bytes of source rows per block: half of the core's L2 (<see cref="CpuKernels.L2Bytes"/>; the tests set
    /// it smaller).</summary>
    internal static long BlockBytes { get; set; } = CpuKernels.L2Bytes / 2;

    /// <summary>Fewer blocks than this (sources within about twice L2) gain nothing: one pass then reads them from L2 or
    /// near it (d_in 128, d_sae 2,048: two blocks, and the blocked dot products were slower).</summary>
    internal const long MinBlocks = 4;

    /// <summary>Source rows per block (as many rows of d floats as fill <see cref="BlockBytes"/>, so that a block stays in L2 while
    /// every destination takes its entries from it), or 0 for one pass over each destination's entries: when the
    /// sources span fewer than <see cref="MinBlocks"/> blocks, or when runs would average fewer than
    /// <see cref="MinBlockRun"/> entries (a k-sparse code of 32 latents in 8,192).</summary>
    internal static long SourceBlock(long d, long srcRows, long nnz, long dstRows)
    {
        if (!SourceBlocking || d == 0) return 0;
        long block = Math.Max(1, BlockBytes / (d * sizeof(float)));
        long blocks = (srcRows + block - 1) / block;
        if (blocks < MinBlocks) return 0;
        return nnz >= MinBlockRun * Math.Max(1, dstRows) * blocks ? block : 0;
    }

    /// <summary>Rows [r0, r1) of <paramref name="dst"/> as <see cref="AccumulateRow"/> over all their entries, the sources
    /// taken a block of <paramref name="block"/> rows at a time: each row consumes its entries in their order (a cursor
    /// per row advances while the source lies below the block's end), so every row receives the same float32 additions
    /// in the same order as in one pass, through memory between blocks. With sources ascending within each row (row-major
    /// codes) a block's rows are read from L2 by every destination in turn instead of from L3 by one.</summary>
    private static void AccumulateBlocked(float* dst, long d, long r0, long r1, long srcRows, long block, long* pOff, long* pOrder,
        float* pScale, float* pSrc, long* pSr, bool accumulate)
    {
        var cursor = ArrayPool<long>.Shared.Rent(checked((int)Math.Max(1, r1 - r0)));
        try
        {
            for (long r = r0; r < r1; r++) cursor[r - r0] = pOff[r];
            for (long end = block; ; end += block)
            {
                bool first = end == block, last = end >= srcRows;
                for (long r = r0; r < r1; r++)
                {
                    long o0 = cursor[r - r0], stop = pOff[r + 1], o1 = o0;
                    if (last) o1 = stop;
                    else while (o1 < stop && pSr[pOrder[o1]] < end) o1++;
                    if (o1 > o0 || (first && !accumulate))
                        AccumulateRow(dst + r * d, d, pOrder, o0, o1, pScale, pSrc, pSr, accumulate || !first);
                    cursor[r - r0] = o1;
                }
                if (last) break;
            }
        }
        finally { ArrayPool<long>.Shared.Return(cursor); }
    }

    /// <summary>out[e] = ⟨a[aRow[e]], b[bRow[e]]⟩ (a, b: contiguous float32 [·, d]); returns [nnz].</summary>
    public static Tensor RowDots(Tensor a, Tensor aRow, Tensor b, Tensor bRow)
    {
        if (!CpuKernels.On(a) || !CpuKernels.On(b))
        {
            long count = aRow.shape[0];
            var dots = empty(count, dtype: a.dtype, device: a.device);
            for (long s = 0; s < count; s += TorchChunk)
            {
                using var scope = NewDisposeScope();
                long len = Math.Min(TorchChunk, count - s);
                dots.narrow(0, s, len).copy_((a.index_select(0, aRow.narrow(0, s, len)) * b.index_select(0, bRow.narrow(0, s, len))).sum(1L));
            }
            return dots;
        }
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
        long block = SourceBlock(d, bRows, nnz, aRows);
        RowRanges.For(nnz, (start, end) =>
        {
            for (long e = start; e < end; e++)
            {
                long r = pAr[e], s = pBr[e];
                if ((ulong)r >= (ulong)aRows || (ulong)s >= (ulong)bRows) throw new SaeSharpException($"sparse entry {e}: row {r} or {s} out of range");
                if (block == 0) pOut[e] = Dot(pa + r * d, pb + s * d, d);
            }
            if (block > 0) DotsBlocked(pa, pb, d, pAr, pBr, pOut, start, end, (bRows + block - 1) / block, block);
        });
        GC.KeepAlive(a);
        GC.KeepAlive(b);
        return result;
    }

    /// <summary><see cref="RowDots"/> of entries [start, end) taken a block of b's rows at a time (a counting sort of
    /// the entries by block, stable): a block stays in L2 while the entries that read it run, and entries of one a-row
    /// follow each other within a block (row-major codes), so that row stays in L1. Each dot product is the same.</summary>
    private static void DotsBlocked(float* pa, float* pb, long d, long* pAr, long* pBr, float* pOut, long start, long end, long blocks, long block)
    {
        var pool = ArrayPool<long>.Shared;
        var offsets = pool.Rent(checked((int)blocks + 1));
        var order = pool.Rent(checked((int)(end - start)));
        try
        {
            Array.Clear(offsets, 0, (int)blocks + 1);
            for (long e = start; e < end; e++) offsets[pBr[e] / block + 1]++;
            for (long k = 0; k < blocks; k++) offsets[k + 1] += offsets[k];
            for (long e = start; e < end; e++) order[offsets[pBr[e] / block]++] = e;
            // offsets[k] is now the end of block k's entries.
            long o = 0;
            for (long k = 0; k < blocks; k++)
                for (; o < offsets[k]; o++)
                {
                    long e = order[o];
                    pOut[e] = Dot(pa + pAr[e] * d, pb + pBr[e] * d, d);
                }
        }
        finally
        {
            pool.Return(offsets);
            pool.Return(order);
        }
    }

    /// <summary>
    /// The positive (non-NaN) entries of a contiguous float32 or bfloat16 [rows, d] CPU matrix in row-major order: row and
    /// column indices (int64) and, with <paramref name="values"/>, the values (float32), or null when there are more
    /// than <paramref name="maxCount"/> (two parallel passes: count, then fill).
    /// </summary>
    public static (Tensor Rows, Tensor Cols, Tensor? Values)? PositiveEntries(Tensor m, long maxCount = long.MaxValue, bool values = true)
    {
        if (!CpuKernels.On(m))
        {
            using var scope = NewDisposeScope();
            var active = m.gt(TorchScalars.Of(0));
            if (active.sum().item<long>() > maxCount) return null;
            var idx = active.nonzero();
            var v = values ? m.masked_select(active).to(ScalarType.Float32).MoveToOuterDisposeScope() : null;
            return (idx[.., 0].contiguous().MoveToOuterDisposeScope(), idx[.., 1].contiguous().MoveToOuterDisposeScope(), v);
        }
        if (m.dtype == ScalarType.BFloat16) Bf16Kernels.CheckMatrix(m, "PositiveEntries");
        using var c = m.contiguous();
        var counts = PositiveCounts(c);
        return counts.Sum() > maxCount ? null : ListPositive(c, counts, values: values);
    }

    /// <summary>Per row of the contiguous float32 or bfloat16 CPU matrix <paramref name="m"/> [rows, d], how many entries
    /// are positive; with <paramref name="bias"/> (float32 [d], float32 m only), how many of m + bias are (the products
    /// of a ReLU encoder before its bias: no pass writes the activations).</summary>
    public static long[] PositiveCounts(Tensor m, Tensor? bias = null)
    {
        bool bf16 = m.dtype == ScalarType.BFloat16;
        long rows = m.shape[0], d = m.shape[1];
        if (!bf16) Check(m, d);
        using var bc = PositiveBias(bias, bf16, d);
        float* pm = bf16 ? null : FloatPtr(m), pBias = bc is null ? null : FloatPtr(bc);
        short* pb = bf16 ? ShortPtr(m) : null;
        var counts = new long[rows];
        RowRanges.For(rows, (start, end) =>
        {
            for (long r = start; r < end; r++)
                counts[r] = bf16 ? CountPositive(pb + r * d, d) : CountPositive(pm + r * d, pBias, d);
        });
        GC.KeepAlive(m);
        return counts;
    }

    /// <summary>The positive entries of <paramref name="m"/> (+ <paramref name="bias"/>) whose per-row counts are
    /// <paramref name="counts"/> (<see cref="PositiveCounts"/> of the same matrix and bias), as
    /// <see cref="PositiveEntries"/> lists them; the values are m + bias, the float32 sums a ReLU would keep. A row with
    /// more or fewer positive entries than its count is an ArgumentException raised before anything is written past the
    /// row's slots (a row counted 0 is skipped unread).</summary>
    public static (Tensor Rows, Tensor Cols, Tensor? Values) ListPositive(Tensor m, long[] counts, Tensor? bias = null, bool values = true)
    {
        bool bf16 = m.dtype == ScalarType.BFloat16;
        long rows = m.shape[0], d = m.shape[1];
        if (!bf16) Check(m, d);
        if (counts.Length != rows) throw new ArgumentException($"ListPositive: {counts.Length} row counts for {rows} rows");
        using var bc = PositiveBias(bias, bf16, d);
        var offsets = new long[rows + 1];
        for (long r = 0; r < rows; r++) offsets[r + 1] = offsets[r] + counts[r];
        long total = offsets[rows];
        var rowIdx = empty(total, dtype: ScalarType.Int64);
        var colIdx = empty(total, dtype: ScalarType.Int64);
        var vals = values ? empty(total, dtype: ScalarType.Float32) : null;
        if (total == 0) return (rowIdx, colIdx, vals);
        // The pointers are taken after the early return: from here every way out reads m again (GC.KeepAlive below).
        float* pm = bf16 ? null : FloatPtr(m), pBias = bc is null ? null : FloatPtr(bc);
        short* pb = bf16 ? ShortPtr(m) : null;
        long* pr = LongPtr(rowIdx), pc = LongPtr(colIdx);
        float* pv = vals is null ? null : FloatPtr(vals);
        RowRanges.For(rows, (start, end) =>
        {
            for (long r = start; r < end; r++)
            {
                if (counts[r] == 0) continue;
                long o = offsets[r], stop = offsets[r + 1];
                if (bf16)
                {
                    short* row = pb + r * d;
                    long j = 0;
                    for (int w = Vector<short>.Count; j + w <= d; j += w)
                    {
                        for (ulong bits = MostSignificantBits(Bf16Bits.IsPositive(Unsafe.ReadUnaligned<Vector<short>>(row + j))); bits != 0; bits &= bits - 1)
                        {
                            long jj = j + BitOperations.TrailingZeroCount(bits);
                            if (o == stop) throw CountMismatch(r, counts[r]);
                            pr[o] = r; pc[o] = jj;
                            if (pv != null) pv[o] = Bf16Bits.ToFloat(row[jj]);
                            o++;
                        }
                    }
                    for (; j < d; j++)
                    {
                        if (!Bf16Bits.IsPositive(row[j])) continue;
                        if (o == stop) throw CountMismatch(r, counts[r]);
                        pr[o] = r; pc[o] = j;
                        if (pv != null) pv[o] = Bf16Bits.ToFloat(row[j]);
                        o++;
                    }
                }
                else
                {
                    float* row = pm + r * d;
                    long j = 0;
                    // A vector's positive lanes as a bit mask, taken bit by bit: no branch per element (2–4× faster
                    // than testing each element at 0.5–20 % density).
                    for (int w = PositiveMaskWidth; j + w <= d; j += w)
                    {
                        for (uint bits = PositiveMask(row + j, pBias == null ? null : pBias + j); bits != 0; bits &= bits - 1)
                        {
                            long jj = j + BitOperations.TrailingZeroCount(bits);
                            if (o == stop) throw CountMismatch(r, counts[r]);
                            pr[o] = r; pc[o] = jj;
                            if (pv != null) pv[o] = pBias == null ? row[jj] : row[jj] + pBias[jj];
                            o++;
                        }
                    }
                    for (; j < d; j++)
                    {
                        float v = pBias == null ? row[j] : row[j] + pBias[j];
                        if (!(v > 0)) continue;
                        if (o == stop) throw CountMismatch(r, counts[r]);
                        pr[o] = r; pc[o] = j;
                        if (pv != null) pv[o] = v;
                        o++;
                    }
                }
                if (o != stop) throw CountMismatch(r, counts[r]);
            }
        });
        GC.KeepAlive(m);
        return (rowIdx, colIdx, vals);
    }

    private static ArgumentException CountMismatch(long row, long count) =>
        new($"ListPositive: row {row}'s positive entries differ from its count {count} (counts of another matrix or bias?)");

    /// <summary>The bias of <see cref="PositiveCounts"/> and <see cref="ListPositive"/> as a contiguous float32 [d] tensor
    /// (null without one).</summary>
    private static Tensor? PositiveBias(Tensor? bias, bool bf16, long d)
    {
        if (bias is null) return null;
        if (bf16 || bias.dtype != ScalarType.Float32 || bias.numel() != d)
            throw new ArgumentException($"the positive entries' bias must be float32 [{d}] over a float32 matrix, got {bias.dtype} [{bias.numel()}]");
        return bias.detach().contiguous();
    }

    /// <summary>Floats per <see cref="PositiveMask"/>: the widest hardware vector (16, 8 or 4).</summary>
    private static readonly int PositiveMaskWidth = Vector512.IsHardwareAccelerated ? 16 : Vector256.IsHardwareAccelerated ? 8 : 4;

    /// <summary>Bit l set when lane l of the all-ones-or-zero mask <paramref name="m"/> is set.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static ulong MostSignificantBits(Vector<short> m) => Vector<short>.Count switch
    {
        32 => Vector512.ExtractMostSignificantBits(m.AsVector512()),
        16 => Vector256.ExtractMostSignificantBits(m.AsVector256()),
        _ => Vector128.ExtractMostSignificantBits(m.AsVector128()),
    };

    /// <summary>Bit l set when p[l] (+ bias[l]) &gt; 0 (NaN not), for l below <see cref="PositiveMaskWidth"/>.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static uint PositiveMask(float* p, float* bias)
    {
        if (Vector512.IsHardwareAccelerated)
        {
            var v = bias == null ? Vector512.Load(p) : Vector512.Load(p) + Vector512.Load(bias);
            return (uint)Vector512.ExtractMostSignificantBits(Vector512.GreaterThan(v, Vector512<float>.Zero));
        }
        if (Vector256.IsHardwareAccelerated)
        {
            var v = bias == null ? Vector256.Load(p) : Vector256.Load(p) + Vector256.Load(bias);
            return Vector256.ExtractMostSignificantBits(Vector256.GreaterThan(v, Vector256<float>.Zero));
        }
        var u = bias == null ? Vector128.Load(p) : Vector128.Load(p) + Vector128.Load(bias);
        return Vector128.ExtractMostSignificantBits(Vector128.GreaterThan(u, Vector128<float>.Zero));
    }

    private static long CountPositive(float* row, float* bias, long d)
    {
        long c = 0, j = 0;
        int w = Vector<float>.Count;
        if (bias == null)
        {
            for (; j + w <= d; j += w)
                c -= Vector.Sum(Vector.GreaterThan(Unsafe.ReadUnaligned<Vector<float>>(row + j), Vector<float>.Zero));
            for (; j < d; j++) if (row[j] > 0) c++;
            return c;
        }
        for (; j + w <= d; j += w)
            c -= Vector.Sum(Vector.GreaterThan(Unsafe.ReadUnaligned<Vector<float>>(row + j) + Unsafe.ReadUnaligned<Vector<float>>(bias + j), Vector<float>.Zero));
        for (; j < d; j++) if (row[j] + bias[j] > 0) c++;
        return c;
    }

    private static long CountPositive(short* row, long d)
    {
        long c = 0, j = 0;
        int w = Vector<short>.Count;
        for (; j + w <= d; j += w)
            c -= Vector.Sum(Bf16Bits.IsPositive(Unsafe.ReadUnaligned<Vector<short>>(row + j)));
        for (; j < d; j++) if (Bf16Bits.IsPositive(row[j])) c++;
        return c;
    }

    /// <summary>In place, for every row j: g[j] −= (⟨g[j], w[j]⟩ / ‖w[j]‖²)·w[j] (rows with ‖w[j]‖ ≤ 1e-8 untouched).
    /// Returns false (doing nothing) unless both are contiguous float32 CPU matrices of the same shape.</summary>
    public static bool RemoveParallelRows(Tensor g, Tensor w)
    {
        if (g.dtype != ScalarType.Float32 || w.dtype != ScalarType.Float32 || !g.is_contiguous() || !w.is_contiguous()
            || !CpuKernels.On(g) || !CpuKernels.On(w) || g.dim() != 2 || !g.shape.SequenceEqual(w.shape))
            return false;
        long rows = g.shape[0], d = g.shape[1];
        if (rows == 0 || d == 0) return true;
        float* pg = FloatPtr(g), pw = FloatPtr(w);
        RowRanges.For(rows, (start, end) =>
        {
            for (long j = start; j < end; j++)
            {
                float* gj = pg + j * d, wj = pw + j * d;
                float ww = Dot(wj, wj, d);
                if (ww <= 1e-16f) continue;
                Axpy(-Dot(gj, wj, d) / ww, wj, gj, 0, d);
            }
        });
        GC.KeepAlive(g);
        GC.KeepAlive(w);
        return true;
    }

    /// <summary>row (+)= Σ_{o in [o0, o1)} scale[e]·src[srcRow[e]] with e = order[o], added in that order (as repeated
    /// <see cref="Axpy"/> calls would, bit for bit), eight vectors of the row held in registers across the entries.</summary>
    private static void AccumulateRow(float* row, long d, long* order, long o0, long o1, float* scale, float* src, long* srcRow, bool accumulate)
    {
        int w = Vector<float>.Count;
        long j = 0;
        for (; j + 8 * w <= d; j += 8 * w)
        {
            float* y = row + j;
            Vector<float> a0, a1, a2, a3, a4, a5, a6, a7;
            if (accumulate)
            {
                a0 = Unsafe.ReadUnaligned<Vector<float>>(y); a1 = Unsafe.ReadUnaligned<Vector<float>>(y + w);
                a2 = Unsafe.ReadUnaligned<Vector<float>>(y + 2 * w); a3 = Unsafe.ReadUnaligned<Vector<float>>(y + 3 * w);
                a4 = Unsafe.ReadUnaligned<Vector<float>>(y + 4 * w); a5 = Unsafe.ReadUnaligned<Vector<float>>(y + 5 * w);
                a6 = Unsafe.ReadUnaligned<Vector<float>>(y + 6 * w); a7 = Unsafe.ReadUnaligned<Vector<float>>(y + 7 * w);
            }
            else a0 = a1 = a2 = a3 = a4 = a5 = a6 = a7 = Vector<float>.Zero;
            for (long o = o0; o < o1; o++)
            {
                long e = order[o];
                var va = new Vector<float>(scale[e]);
                float* x = src + srcRow[e] * d + j;
                a0 += va * Unsafe.ReadUnaligned<Vector<float>>(x); a1 += va * Unsafe.ReadUnaligned<Vector<float>>(x + w);
                a2 += va * Unsafe.ReadUnaligned<Vector<float>>(x + 2 * w); a3 += va * Unsafe.ReadUnaligned<Vector<float>>(x + 3 * w);
                a4 += va * Unsafe.ReadUnaligned<Vector<float>>(x + 4 * w); a5 += va * Unsafe.ReadUnaligned<Vector<float>>(x + 5 * w);
                a6 += va * Unsafe.ReadUnaligned<Vector<float>>(x + 6 * w); a7 += va * Unsafe.ReadUnaligned<Vector<float>>(x + 7 * w);
            }
            Unsafe.WriteUnaligned(y, a0); Unsafe.WriteUnaligned(y + w, a1);
            Unsafe.WriteUnaligned(y + 2 * w, a2); Unsafe.WriteUnaligned(y + 3 * w, a3);
            Unsafe.WriteUnaligned(y + 4 * w, a4); Unsafe.WriteUnaligned(y + 5 * w, a5);
            Unsafe.WriteUnaligned(y + 6 * w, a6); Unsafe.WriteUnaligned(y + 7 * w, a7);
        }
        for (; j + w <= d; j += w)
        {
            var a = accumulate ? Unsafe.ReadUnaligned<Vector<float>>(row + j) : Vector<float>.Zero;
            for (long o = o0; o < o1; o++)
            {
                long e = order[o];
                a += new Vector<float>(scale[e]) * Unsafe.ReadUnaligned<Vector<float>>(src + srcRow[e] * d + j);
            }
            Unsafe.WriteUnaligned(row + j, a);
        }
        for (; j < d; j++)
        {
            float a = accumulate ? row[j] : 0f;
            for (long o = o0; o < o1; o++)
            {
                long e = order[o];
                a += scale[e] * src[srcRow[e] * d + j];
            }
            row[j] = a;
        }
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
    internal static float Dot(float* a, float* b, long d)
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

    /// <summary>Contiguous float32 CPU [·, d] matrix check shared by the float32 kernels.</summary>
    internal static void Check(Tensor t, long d)
    {
        if (t.dtype != ScalarType.Float32 || !t.is_contiguous() || t.device_type != DeviceType.CPU || t.dim() != 2 || t.shape[1] != d)
            throw new ArgumentException($"sparse kernel needs contiguous float32 CPU [·, {d}] matrices, got {t.dtype} [{string.Join(", ", t.shape)}]");
    }
}
