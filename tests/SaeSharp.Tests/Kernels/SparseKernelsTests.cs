using SaeSharp.Kernels;
using SaeSharp.Saes;
using static TorchSharp.torch;
using static SaeSharp.Tests.Saes.SaeTestUtil;

namespace SaeSharp.Tests.Kernels;

public class SparseKernelsTests
{
    [Theory]
    [InlineData(1, 37)]
    [InlineData(5, 37)]
    [InlineData(37, 37)]
    [InlineData(5, 263)]
    [InlineData(37, 263)]
    [InlineData(263, 263)]
    public void RowTopKSelectsTheLargestValuesOfEachRow(int k, int d)
    {
        var m = randn(6, d, generator: new Generator(1));
        m[2] = full(d, 0.5f); // all ties
        m[3, 4] = tensor(float.NaN);
        var (v, i) = TopKSelection.RowTopK(m, k);
        var data = F(m);
        var vs = F(v);
        var iv = i.data<long>().ToArray();
        for (int r = 0; r < 6; r++)
        {
            var row = data.Skip(r * d).Take(d).Where(x => !float.IsNaN(x)).OrderByDescending(x => x).Take(k).ToArray();
            var got = vs.Skip(r * k).Take(k).OrderByDescending(x => x).ToArray();
            if (k == d && r == 3) { Assert.Contains(float.NaN, got); continue; } // fewer than k non-NaN values
            Assert.Equal(row, got);
            Assert.Equal(k, iv.Skip(r * k).Take(k).Distinct().Count());
            for (int e = 0; e < k; e++) Assert.Equal(data[r * d + iv[r * k + e]], vs[r * k + e]);
        }
    }

    /// <summary>Rows for the block-maximum path (k ≤ d/64, d a multiple of 16 vectors), with the top values crowded
    /// into one block, all ties, a NaN (heap fallback), −∞ and the maximum last.</summary>
    [Theory]
    [InlineData(1)]
    [InlineData(3)]
    [InlineData(4)]
    public void RowTopKBlockPathSelectsTheLargestValuesOfEachRow(int k)
    {
        const int d = 256;
        var m = randn(7, d, generator: new Generator(7));
        m[1, tensor(new long[] { 3, 19, 35, 51, 67 })] = TorchScalars.Arange(5, dtype: ScalarType.Float32) + 10; // top values in one block
        m[2] = full(d, 0.5f);
        m[3, 17] = tensor(float.NaN);
        m[4, TensorIndex.Slice(0, 100)] = tensor(float.NegativeInfinity);
        m[5, 255] = tensor(100f);
        // Row 6: two finite values, the rest −∞, so for k ≥ 3 the k-th largest block maximum is −∞ itself.
        m[6] = full(d, float.NegativeInfinity);
        m[6, 10] = tensor(1f);
        m[6, 200] = tensor(2f);
        AssertRowTopK(m, k);
    }

    /// <summary>CopyRows against index_select/index_copy_: a gather into a new matrix, rows moved within one matrix, the
    /// torch path for a non-contiguous source, and an out-of-range row named in the error.</summary>
    [Fact]
    public void CopyRowsMovesTheNamedRows()
    {
        var src = randn(20, 37, generator: new Generator(21));
        long[] rows = [19, 0, 7, 7, 3];
        var gathered = empty(5, 37);
        SparseKernels.CopyRows(src, rows, gathered, null);
        Assert.Equal(F(src.index_select(0, tensor(rows))), F(gathered));

        var buffer = src.clone();
        long[] from = [15, 16, 17], to = [2, 9, 4];
        SparseKernels.CopyRows(buffer, from, buffer, to);
        var expected = src.clone().index_copy_(0, tensor(to), src.index_select(0, tensor(from)));
        Assert.Equal(F(expected), F(buffer));

        var strided = src.t().contiguous().t(); // same values, not contiguous: the torch path
        var viaTorch = empty(5, 37);
        SparseKernels.CopyRows(strided, rows, viaTorch, null);
        Assert.Equal(F(gathered), F(viaTorch));

        var e = Assert.Throws<SaeSharpException>(() => SparseKernels.CopyRows(src, [3, 20], empty(2, 37), null));
        Assert.Contains("20", e.Message);
    }

    /// <summary>TopKSelection.Above against a scalar filter: lengths around the 32-element step and its vectors,
    /// thresholds inside the data, ±0, ±∞ and ε (the smallest positive float: v ≥ ε exactly when v &gt; 0).</summary>
    [Fact]
    public unsafe void AboveFindsEveryPositionAtOrOverTheThreshold()
    {
        var rng = new Random(5);
        foreach (int n in new[] { 0, 1, 7, 8, 31, 32, 33, 63, 64, 100, 2048 })
        {
            var v = new float[n];
            for (int j = 0; j < n; j++) v[j] = rng.Next(8) switch { 0 => 0f, 1 => -0f, 2 => float.NegativeInfinity, 3 => float.Epsilon, _ => (float)(rng.NextDouble() * 2 - 1) };
            foreach (float t in new[] { 0.3f, -0.5f, 0f, -0f, float.NegativeInfinity, float.PositiveInfinity, float.Epsilon })
            {
                var dst = new int[n];
                int count;
                fixed (float* pv = v)
                fixed (int* pd = dst)
                    count = TopKSelection.Above(pv, n, t, pd);
                var expected = Enumerable.Range(0, n).Where(j => v[j] >= t).ToArray();
                Assert.Equal(expected, dst.Take(count).ToArray());
            }
        }
    }

    /// <summary>Rows for the radix path (not the block path: d = 926, not a multiple of 16 vectors; d ≥ 2k), against a
    /// sort: near-ties that share the 16-bit key prefix of the k-th largest (so the boundary bucket decides), all ties,
    /// all negative, ±0 and ±∞, the k-th largest on a top-byte boundary, and a NaN (heap fallback).</summary>
    [Theory]
    [InlineData(1)]
    [InlineData(64)]
    [InlineData(463)]
    public void RowTopKRadixPathSelectsTheLargestValuesOfEachRow(int k)
    {
        const int d = 926;
        Assert.True(TopKSelection.UsesRadix(d, k));
        var m = randn(8, d, generator: new Generator(12));
        // Row 0: every value 1 + j·2⁻²³ (one ulp apart): all share their top 16 key bits.
        m[0] = 1f + TorchScalars.Arange(d, dtype: ScalarType.Float32) * (float)Math.Pow(2, -23);
        m[1] = full(d, -0.25f);
        m[2] = -(m[2].abs() + 1);
        m[3, TensorIndex.Slice(0, 300)] = tensor(-0f);
        m[3, TensorIndex.Slice(300, 600)] = tensor(0f);
        m[3, 5] = tensor(float.PositiveInfinity);
        m[3, 700] = tensor(float.NegativeInfinity);
        // Row 4: half the values just below 2, half at 2 and above (a change of the key's top byte).
        m[4] = where(TorchScalars.Arange(d).remainder(2).eq(0), full(d, 1.9999999f), 2f + rand(d, generator: new Generator(13)));
        m[5, 17] = tensor(float.NaN);
        m[6] = (randn(d, generator: new Generator(14)) * 1e-30f);
        AssertRowTopK(m, k);
    }

    /// <summary>The radix path over many rows (RowRanges gives each thread range up to 4·threads ranges, so 200 rows put
    /// several rows in one range, sharing its histogram scratch): every row's top-k against a sort, rows of different
    /// scales so that their keys' top bytes differ from row to row.</summary>
    [Fact]
    public void RowTopKRadixPathKeepsNoStateBetweenRows()
    {
        const int d = 926, k = 40;
        Assert.True(TopKSelection.UsesRadix(d, k));
        var scales = pow(10f, TorchScalars.Arange(200, dtype: ScalarType.Float32).remainder(9) - 4).unsqueeze(1);
        var m = randn(200, d, generator: new Generator(21)) * scales;
        AssertRowTopK(m, k);
    }

    /// <summary>RowTopK of every row of m against a sort of its non-NaN values: the same values, k distinct columns, and
    /// each value the one at its column.</summary>
    private static void AssertRowTopK(Tensor m, int k)
    {
        var (v, i) = TopKSelection.RowTopK(m, k);
        int rows = (int)m.shape[0], d = (int)m.shape[1];
        var data = F(m);
        var vs = F(v);
        var iv = i.data<long>().ToArray();
        for (int r = 0; r < rows; r++)
        {
            var row = data.Skip(r * d).Take(d).Where(x => !float.IsNaN(x)).OrderByDescending(x => x).Take(k).ToArray();
            Assert.Equal(row, vs.Skip(r * k).Take(k).OrderByDescending(x => x).ToArray());
            Assert.Equal(k, iv.Skip(r * k).Take(k).Distinct().Count());
            for (int e = 0; e < k; e++) Assert.Equal(data[r * d + iv[r * k + e]], vs[r * k + e]);
        }
    }

    /// <summary>SumRows and its transposed form against a dense product (scaleᵀ-weighted one-hot matrix · src), with
    /// 37 destination rows (not a multiple of the 16-row tile), empty rows and repeated entries; rows of 19 (a vector
    /// and a tail) and 259 (the unrolled loops, then a tail).</summary>
    [Theory]
    [InlineData(19)]
    [InlineData(259)]
    public void SumRowsAndTransposedMatchDenseProduct(int d)
    {
        var src = randn(11, d, generator: new Generator(8));
        var dr = randint(0, 30, [200], generator: new Generator(9));
        var sr = randint(0, 11, [200], generator: new Generator(10));
        var scale = randn(200, generator: new Generator(11));
        var onehot = zeros(37 * 11).index_add_(0, dr * 11 + sr, scale, 1).reshape(37, 11); // [dst, src] weights
        var expected = onehot.matmul(src);
        AssertClose(expected, SparseKernels.SumRows(37, dr, src, sr, scale), what: "sum rows");
        var t = SparseKernels.SumRowsTransposed(37, dr, src, sr, scale);
        Assert.Equal(new long[] { d, 37 }, t.shape);
        AssertClose(expected.t(), t, what: "transposed");
    }

    /// <summary>The row sums add each row's entries in their input order, y ← y + s·x in float32, bit for bit like a plain
    /// loop (the kernel holds eight vectors of a row in registers across the entries): row lengths around the
    /// 8-vector block (64 and 72 floats at 256 bits, 128 at 512) and with tails; starting from zero (SumRows, its
    /// transpose) and from the destination (ScatterAddRows).</summary>
    [Theory]
    [InlineData(5)]
    [InlineData(64)]
    [InlineData(72)]
    [InlineData(128)]
    [InlineData(259)]
    public void Row_sums_add_entries_in_input_order_bit_for_bit(int d) =>
        AssertRowSumsMatchAPlainLoop(d, rows: 23, srcRows: 9, nnz: 300, rowMajor: false, seed: 21);

    /// <summary>SumRows, its transpose and ScatterAddRows on random entries (seeds <paramref name="seed"/> to seed + 4;
    /// <paramref name="rowMajor"/>: sorted by destination, then source, as a code is listed), each bit for bit a plain
    /// loop over the entries in input order; the last three destination rows get no entry.</summary>
    internal static void AssertRowSumsMatchAPlainLoop(int d, int rows, int srcRows, int nnz, bool rowMajor, int seed)
    {
        var src = randn(srcRows, d, generator: new Generator((ulong)seed)) * 3;
        var dr = randint(0, rows - 3, [nnz], generator: new Generator((ulong)seed + 1));
        var sr = randint(0, srcRows, [nnz], generator: new Generator((ulong)seed + 2));
        if (rowMajor)
        {
            var key = (dr * srcRows + sr).argsort();
            (dr, sr) = (dr.index_select(0, key), sr.index_select(0, key));
        }
        var scale = randn(nnz, generator: new Generator((ulong)seed + 3));
        var start = randn(rows, d, generator: new Generator((ulong)seed + 4));
        float[] x = F(src), sc = F(scale), st = F(start);
        long[] dri = dr.data<long>().ToArray(), sri = sr.data<long>().ToArray();
        float[] Reference(bool fromStart)
        {
            var y = fromStart ? (float[])st.Clone() : new float[rows * d];
            for (int e = 0; e < nnz; e++)
                for (int j = 0; j < d; j++)
                {
                    float term = sc[e] * x[sri[e] * d + j];
                    y[dri[e] * d + j] = y[dri[e] * d + j] + term;
                }
            return y;
        }
        var zero = Reference(fromStart: false);
        Assert.Equal(zero, F(SparseKernels.SumRows(rows, dr, src, sr, scale)));
        var transposed = F(SparseKernels.SumRowsTransposed(rows, dr, src, sr, scale));
        for (int r = 0; r < rows; r++)
            for (int j = 0; j < d; j++)
                Assert.Equal(zero[r * d + j], transposed[j * rows + r]);
        var dst = start.clone();
        SparseKernels.ScatterAddRows(dst, dr, src, sr, scale);
        Assert.Equal(Reference(fromStart: true), F(dst));
    }

    [Theory]
    [InlineData(21)]
    [InlineData(261)]
    public void Positive_entries_of_products_plus_a_bias_are_those_of_their_sum(int d)
    {
        var m = randn(9, d, generator: new Generator(16));
        var b = randn(d, generator: new Generator(17)) - 1.5f; // mostly negative: sparse rows
        m[7, 3] = tensor(float.NaN);
        m[8, d - 2] = tensor(float.PositiveInfinity);
        m[8, 0] = -b[0];                                        // p + b = 0 exactly: not positive
        var sum = m + b;                                        // the activations a ReLU would write, before clamping
        var counts = SparseKernels.PositiveCounts(m, b);
        var expected = SparseKernels.PositiveEntries(sum)!.Value;
        Assert.Equal(expected.Rows.shape[0], counts.Sum());
        var (rows, cols, vals) = SparseKernels.ListPositive(m, counts, b);
        Assert.Equal(expected.Rows.data<long>().ToArray(), rows.data<long>().ToArray());
        Assert.Equal(expected.Cols.data<long>().ToArray(), cols.data<long>().ToArray());
        Assert.Equal(F(expected.Values!), F(vals!));
        // Counts of another bias: a clear error, not entries written past the row's slots.
        var other = SparseKernels.PositiveCounts(m, b + 0.5f);
        Assert.Throws<ArgumentException>(() => SparseKernels.ListPositive(m, other, b));
    }

    [Theory]
    [InlineData(19)]
    [InlineData(259)]
    public void ScatterAddRowsAndRowDotsMatchDenseFormulas(int d)
    {
        var dst = randn(4, d, generator: new Generator(2));
        var src = randn(6, d, generator: new Generator(3));
        var dr = tensor(new long[] { 0, 3, 3, 1, 0 });
        var sr = tensor(new long[] { 5, 0, 2, 2, 5 });
        var scale = tensor(new[] { 0.5f, -1f, 2f, 3f, 0.25f });
        var expected = dst.clone();
        for (int e = 0; e < 5; e++) expected[dr[e].item<long>()] += scale[e] * src[sr[e].item<long>()];
        SparseKernels.ScatterAddRows(dst, dr, src, sr, scale);
        AssertClose(expected, dst, what: "scatter");
        var dots = SparseKernels.RowDots(dst, dr, src, sr);
        var expectedDots = (dst.index_select(0, dr) * src.index_select(0, sr)).sum(1);
        AssertClose(expectedDots, dots, what: "dots");
    }

    [Theory]
    [InlineData(21)]
    [InlineData(261)]
    public void PositiveEntriesListsThePositiveValuesInRowMajorOrder(int d)
    {
        var m = randn(7, d, generator: new Generator(6));
        m[5] = m[5] - 2.5f; // a sparse row (under 1 % positive): most vectors hold none
        m[6] = full(d, -1f);
        // Special values inside vector blocks and in the tail: NaN, ±∞, ±0 and the smallest subnormals are positive only
        // when strictly above zero.
        float[] special = [float.NaN, float.PositiveInfinity, float.NegativeInfinity, -0f, 0f, float.Epsilon, -float.Epsilon];
        for (int i = 0; i < special.Length; i++)
        {
            m[6, (i * 3) % d] = tensor(special[i]);
            m[6, d - 1 - i % 3] = tensor(special[(i + 2) % special.Length]);
        }
        var data = F(m);
        var expected = data.Select((v, i) => (v, i)).Where(p => p.v > 0).ToArray();
        var (rows, cols, vals) = SparseKernels.PositiveEntries(m, long.MaxValue)!.Value;
        Assert.Equal(expected.Select(p => (long)(p.i / d)), rows.data<long>().ToArray());
        Assert.Equal(expected.Select(p => (long)(p.i % d)), cols.data<long>().ToArray());
        Assert.Equal(expected.Select(p => p.v), F(vals!));
        Assert.Null(SparseKernels.PositiveEntries(m, expected.Length - 1));
    }

    [Theory]
    [InlineData(13)]
    [InlineData(269)]
    public void ParallelComponentRemovalLeavesRowsOrthogonal(int d)
    {
        var g = randn(5, d, generator: new Generator(4));
        var w = randn(5, d, generator: new Generator(5));
        var expected = g - (g * w).sum(1, keepdim: true) / (w * w).sum(1, keepdim: true) * w;
        Assert.True(SparseKernels.RemoveParallelRows(g, w));
        AssertClose(expected, g, what: "g");
    }
}
