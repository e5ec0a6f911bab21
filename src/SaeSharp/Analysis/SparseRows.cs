using SaeSharp.Kernels;
using static TorchSharp.torch;

namespace SaeSharp.Analysis;

/// <summary>
/// The non-zero entries of an [n, d] matrix row by row (compressed sparse rows: columns ascending within a row, values in
/// float64): how <see cref="SparseProbing"/> holds SAE features, 0.1–5 % non-zero, in 12 bytes an entry instead of 4·d
/// bytes a row.
/// Rows are filled from dense row blocks (<see cref="SetRows"/>), each block copied out of its tensor once and its
/// non-zeros listed on the kernel threads, or made block by block (<see cref="FromDense"/>) and joined (<see cref="Concat"/>)
/// as batches arrive; <see cref="SparseColumns.FromRows"/> turns a row selection into the column form the representer
/// probe and <see cref="LabelScorer"/> need.
/// </summary>
internal sealed class SparseRows
{
    /// <summary>Rows n.</summary>
    public int Rows { get; }
    /// <summary>Columns d.</summary>
    public int Columns { get; }

    /// <summary>Columns of each row's non-zeros, ascending.</summary>
    private readonly int[][] ColumnIndex;
    /// <summary>Values of each row's non-zeros.</summary>
    private readonly double[][] Values;

    /// <summary>An all-zero [<paramref name="rows"/>, <paramref name="columns"/>] matrix, to be filled by <see cref="SetRows"/>.</summary>
    public SparseRows(int rows, int columns)
    {
        if (rows < 0 || columns < 0) throw new SaeSharpException($"sparse rows: [{rows}, {columns}] is not a matrix shape");
        Rows = rows;
        Columns = columns;
        ColumnIndex = new int[rows][];
        Values = new double[rows][];
        Array.Fill(ColumnIndex, []);
        Array.Fill(Values, []);
    }

    private SparseRows(int columns, int[][] columnIndex, double[][] values)
    {
        Rows = columnIndex.Length;
        Columns = columns;
        ColumnIndex = columnIndex;
        Values = values;
    }

    /// <summary>The rows of <paramref name="parts"/> one after the other (sharing their entries): how a harvest joins the
    /// blocks it made batch by batch. Every part must have <paramref name="columns"/> columns.</summary>
    public static SparseRows Concat(IReadOnlyList<SparseRows> parts, int columns)
    {
        long rows = 0;
        foreach (var p in parts)
        {
            if (p.Columns != columns) throw new SaeSharpException($"sparse rows: a block of {p.Columns} columns joined to blocks of {columns}");
            rows += p.Rows;
        }
        if (rows > Array.MaxLength) throw new SaeSharpException($"sparse rows: {rows} rows joined, more than {Array.MaxLength}");
        var cols = new int[rows][];
        var vals = new double[rows][];
        int at = 0;
        foreach (var p in parts)
        {
            Array.Copy(p.ColumnIndex, 0, cols, at, p.Rows);
            Array.Copy(p.Values, 0, vals, at, p.Rows);
            at += p.Rows;
        }
        return new SparseRows(columns, cols, vals);
    }

    /// <summary>Non-zero entries.</summary>
    public long NonZeros => ColumnIndex.Sum(c => (long)c.Length);

    /// <summary>Row <paramref name="i"/>'s columns and values.</summary>
    public (int[] Columns, double[] Values) Row(int i) => (ColumnIndex[i], Values[i]);

    /// <summary>Values per row block read from a tensor (1 M float64: 8 MB).</summary>
    private const long BlockValues = 1 << 20;

    /// <summary>The non-zeros of <paramref name="x"/> [n, d] (any float type, any device), read in float64 row blocks of
    /// about 8 MB: x is never copied whole.</summary>
    public static SparseRows FromDense(Tensor x)
    {
        if (x.dim() != 2) throw new SaeSharpException($"sparse rows need an [n, d] matrix, got [{string.Join(", ", x.shape)}]");
        if (x.shape[0] > int.MaxValue || x.shape[1] > int.MaxValue)
            throw new SaeSharpException($"sparse rows: [{string.Join(", ", x.shape)}] has more than {int.MaxValue} rows or columns");
        int n = (int)x.shape[0], d = (int)x.shape[1];
        var result = new SparseRows(n, d);
        int block = (int)Math.Max(1, BlockValues / Math.Max(1, d));
        for (int i = 0; i < n; i += block)
        {
            using var scope = NewDisposeScope();
            int len = Math.Min(block, n - i);
            result.SetRows([.. Enumerable.Range(i, len).Select(r => (long)r)], x.narrow(0, i, len));
        }
        return result;
    }

    /// <summary>Sets rows <paramref name="rows"/> to the rows of <paramref name="block"/> [rows.Length, d] (any float type,
    /// any device): the block is copied out as float64 on this thread, then its non-zeros are listed on the kernel threads.</summary>
    public void SetRows(ReadOnlySpan<long> rows, Tensor block)
    {
        if (block.dim() != 2 || block.shape[0] != rows.Length || block.shape[1] != Columns)
            throw new SaeSharpException($"sparse rows: a block of [{string.Join(", ", block.shape)}] for {rows.Length} rows of {Columns} columns");
        foreach (long r in rows)
            if (r < 0 || r >= Rows) throw new SaeSharpException($"sparse rows: row {r} is outside [0, {Rows})");
        double[] dense;
        using (var scope = NewDisposeScope()) dense = block.to(ScalarType.Float64).cpu().contiguous().data<double>().ToArray();
        int d = Columns, count = rows.Length;
        var target = rows.ToArray();
        int parts = Math.Max(1, Math.Min(64, (int)((long)count * d / 65536)));
        KernelThreads.Run(parts, p =>
        {
            int from = (int)((long)count * p / parts), to = (int)((long)count * (p + 1) / parts);
            for (int r = from; r < to; r++)
            {
                var row = dense.AsSpan(r * d, d);
                int nz = 0;
                foreach (double v in row) if (v != 0) nz++;
                var cols = new int[nz];
                var vals = new double[nz];
                for (int j = 0, at = 0; j < d; j++)
                    if (row[j] != 0)
                    {
                        cols[at] = j;
                        vals[at++] = row[j];
                    }
                ColumnIndex[target[r]] = cols;
                Values[target[r]] = vals;
            }
        });
    }

    /// <summary>Rows <paramref name="rows"/> (in that order) as a new matrix sharing their entries.</summary>
    public SparseRows Select(IReadOnlyList<long> rows)
    {
        var result = new SparseRows(rows.Count, Columns);
        for (int i = 0; i < rows.Count; i++)
        {
            result.ColumnIndex[i] = ColumnIndex[rows[i]];
            result.Values[i] = Values[rows[i]];
        }
        return result;
    }

    /// <summary>Distinct columns <paramref name="columns"/> (in that order) as a dense float64 [n, columns.Count] tensor.</summary>
    public Tensor Dense(IReadOnlyList<int> columns)
    {
        var slot = new Dictionary<int, int>();
        for (int k = 0; k < columns.Count; k++)
            if (columns[k] < 0 || columns[k] >= Columns || !slot.TryAdd(columns[k], k))
                throw new SaeSharpException($"sparse rows: column {columns[k]} is repeated or outside [0, {Columns})");
        var dense = new double[(long)Rows * columns.Count];
        for (int i = 0; i < Rows; i++)
        {
            var (cols, vals) = (ColumnIndex[i], Values[i]);
            for (int e = 0; e < cols.Length; e++)
                if (slot.TryGetValue(cols[e], out int k)) dense[(long)i * columns.Count + k] = vals[e];
        }
        return tensor(dense, [Rows, columns.Count]);
    }

    /// <summary>The whole matrix as a dense float32 [rows, columns] tensor (the non-zeros came from float32 blocks, so
    /// they round-trip exactly).</summary>
    public Tensor ToDenseFloat32()
    {
        var dense = new float[(long)Rows * Columns];
        for (int i = 0; i < Rows; i++)
        {
            var (cols, vals) = (ColumnIndex[i], Values[i]);
            for (int e = 0; e < cols.Length; e++) dense[(long)i * Columns + cols[e]] = (float)vals[e];
        }
        return tensor(dense, [Rows, Columns]);
    }

    /// <summary>Columns with a non-zero in some row, ascending.</summary>
    public int[] NonZeroColumns()
    {
        var seen = new bool[Columns];
        foreach (var cols in ColumnIndex) foreach (int j in cols) seen[j] = true;
        return [.. Enumerable.Range(0, Columns).Where(j => seen[j])];
    }

    /// <summary>Mean over the rows where <paramref name="y"/> is true − mean over the others, per column, in float64.</summary>
    public double[] MeanDifference(bool[] y)
    {
        if (y.Length != Rows) throw new SaeSharpException($"sparse rows: {y.Length} labels for {Rows} rows");
        var pos = new double[Columns];
        var neg = new double[Columns];
        for (int i = 0; i < Rows; i++)
        {
            var sum = y[i] ? pos : neg;
            var (cols, vals) = (ColumnIndex[i], Values[i]);
            for (int e = 0; e < cols.Length; e++) sum[cols[e]] += vals[e];
        }
        int np = y.Count(v => v), nn = Rows - np;
        return [.. Enumerable.Range(0, Columns).Select(j => pos[j] / np - neg[j] / nn)];
    }

    /// <summary>x·w + b for each row, in float64, over the row's non-zeros in column order (as
    /// <see cref="SparseColumns.RowDots"/> sums a dense row).</summary>
    public double[] RowDots(double[] w, double b)
    {
        if (w.Length != Columns) throw new SaeSharpException($"the probe takes {w.Length} columns, the rows have {Columns}");
        var score = new double[Rows];
        for (int i = 0; i < Rows; i++)
        {
            var (cols, vals) = (ColumnIndex[i], Values[i]);
            double s = b;
            for (int e = 0; e < cols.Length; e++) s += vals[e] * w[cols[e]];
            score[i] = s;
        }
        return score;
    }
}
