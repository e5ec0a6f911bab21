using System.Runtime.InteropServices;
using SaeSharp.Kernels;
using static TorchSharp.torch;

namespace SaeSharp.Analysis;

/// <summary>
/// The non-zero entries of an [n, d] matrix by column (compressed sparse columns: rows ascending within a column, values
/// in float64), with where each column's entries of every tile of <see cref="Tile"/> rows begin. The representer probe
/// (<see cref="LogisticRegression"/>) needs of an SAE's feature matrix, 0.1–5 % non-zero, only its Gram matrix X·Xᵀ and
/// products Xᵀα and X·w; from the non-zeros these cost O(n²·d·density²) and O(nnz) instead of O(n²·d) and O(n·d).
/// </summary>
internal sealed class SparseColumns
{
    /// <summary>Rows per tile of the Gram kernel: a Tile × Tile float64 block (512 KB) stays in a core's L2 cache.</summary>
    public const int Tile = 256;

    /// <summary>Rows n.</summary>
    public int Rows { get; }
    /// <summary>Columns d.</summary>
    public int Columns { get; }
    /// <summary>Non-zero entries.</summary>
    public long NonZeros => RowIndex.Length;

    /// <summary>Row of each entry, column after column.</summary>
    private readonly int[] RowIndex;
    /// <summary>Value of each entry.</summary>
    private readonly double[] Values;
    /// <summary>[t · d + j]: the first entry of column j in row tile t or later (t = 0 … tiles; t = tiles is the column's end).</summary>
    private readonly int[] TileStart;

    private int Tiles => (Rows + Tile - 1) / Tile;

    private SparseColumns(int rows, int columns, int[] rowIndex, double[] values, int[] tileStart)
    {
        Rows = rows;
        Columns = columns;
        RowIndex = rowIndex;
        Values = values;
        TileStart = tileStart;
    }

    /// <summary>Values per float64 row block read from a tensor (1 M: 8 MB).</summary>
    private const long BlockValues = 1 << 20;

    /// <summary>Reads <paramref name="x"/> [n, d] (any float type, any device) in float64 row blocks of about 8 MB and
    /// calls <paramref name="action"/> with each block's first row, its rows and its values (row-major).</summary>
    private static void ForEachRowBlock(Tensor x, RowBlockAction action)
    {
        long n = x.shape[0], d = x.shape[1], rows = Math.Max(1, BlockValues / Math.Max(1, d));
        for (long i = 0; i < n; i += rows)
        {
            using var scope = NewDisposeScope();
            int len = (int)Math.Min(rows, n - i);
            using var block = x.narrow(0, i, len).to(ScalarType.Float64).cpu().contiguous();
            action(i, len, MemoryMarshal.Cast<byte, double>(block.bytes));
        }
    }

    private delegate void RowBlockAction(long firstRow, int rows, ReadOnlySpan<double> values);

    /// <summary>The non-zeros of <paramref name="x"/> [n, d], listed in float64 row blocks (<see cref="SparseRows.FromDense"/>);
    /// x itself is never copied whole.</summary>
    public static SparseColumns FromDense(Tensor x) => FromRows(SparseRows.FromDense(x));

    /// <summary>The entries of <paramref name="x"/> by column: counted per (row tile, column), then placed, rows ascending
    /// within each column.</summary>
    public static SparseColumns FromRows(SparseRows x)
    {
        int n = x.Rows, d = x.Columns, tiles = (n + Tile - 1) / Tile;
        // Entries per (tile, column).
        var count = new long[(long)tiles * d];
        for (int i = 0; i < n; i++)
        {
            long offset = (long)(i / Tile) * d;
            foreach (int j in x.Row(i).Columns) count[offset + j]++;
        }
        // Where each (tile, column) begins: columns in order, tiles in order within a column.
        var tileStart = new int[(long)(tiles + 1) * d];
        long nnz = 0;
        for (int j = 0; j < d; j++)
            for (int t = 0; t <= tiles; t++)
            {
                if (nnz > Array.MaxLength)
                    throw new SaeSharpException($"sparse columns: more than {Array.MaxLength} non-zeros in [{n}, {d}]");
                tileStart[(long)t * d + j] = (int)nnz;
                if (t < tiles) nnz += count[(long)t * d + j];
            }
        count = null!;
        var rowIndex = new int[nnz];
        var values = new double[nnz];
        var next = new int[(long)tiles * d];
        Array.Copy(tileStart, next, next.Length);
        for (int i = 0; i < n; i++)
        {
            long offset = (long)(i / Tile) * d;
            var (cols, vals) = x.Row(i);
            for (int e = 0; e < cols.Length; e++)
            {
                int at = next[offset + cols[e]]++;
                rowIndex[at] = i;
                values[at] = vals[e];
            }
        }
        return new SparseColumns(n, d, rowIndex, values, tileStart);
    }

    /// <summary>Column <paramref name="j"/>'s rows (ascending) and values.</summary>
    public (ReadOnlyMemory<int> Rows, ReadOnlyMemory<double> Values) Column(int j)
    {
        if (j < 0 || j >= Columns) throw new SaeSharpException($"sparse columns: column {j} is outside [0, {Columns})");
        int start = TileStart[j], end = TileStart[(long)Tiles * Columns + j];
        return (RowIndex.AsMemory(start, end - start), Values.AsMemory(start, end - start));
    }

    /// <summary>The Gram matrix X·Xᵀ [n, n] in float64, as Σ_j x_j·x_jᵀ over the columns' non-zeros: each of the
    /// tiles(tiles + 1)/2 pairs of row tiles (I ≥ J) is summed in a Tile × Tile buffer, column after column, on the kernel
    /// threads, then written to block (I, J) and its mirror (J, I). Products and sums in float64; the sums differ from the
    /// dense product's only in their order.</summary>
    public Tensor Gram()
    {
        int n = Rows, d = Columns, tiles = Tiles;
        if ((long)n * n > Array.MaxLength) throw new SaeSharpException($"the representer probe's Gram matrix: {n} rows are too many ({n}² entries)");
        var k = new double[(long)n * n]; // the kernel threads touch no tensor: filled here, wrapped at the end
        int pairs = tiles * (tiles + 1) / 2;
        KernelThreads.Run(pairs, p =>
        {
            int bi = (int)((Math.Sqrt(8.0 * p + 1) - 1) / 2); // p = bi(bi + 1)/2 + bj, bj ≤ bi
            while (bi * (bi + 1) / 2 > p) bi--;
            while ((bi + 1) * (bi + 2) / 2 <= p) bi++;
            int bj = p - bi * (bi + 1) / 2;
            int i0 = bi * Tile, j0 = bj * Tile, ni = Math.Min(Tile, n - i0), nj = Math.Min(Tile, n - j0);
            var tile = new double[Tile * Tile];
            long si = (long)bi * d, ei = (long)(bi + 1) * d, sj = (long)bj * d, ej = (long)(bj + 1) * d;
            for (int j = 0; j < d; j++)
            {
                int a0 = TileStart[si + j], a1 = TileStart[ei + j];
                if (a0 == a1) continue;
                int b0 = TileStart[sj + j], b1 = TileStart[ej + j];
                if (b0 == b1) continue;
                for (int a = a0; a < a1; a++)
                {
                    double va = Values[a];
                    int row = (RowIndex[a] - i0) * Tile - j0;
                    for (int b = b0; b < b1; b++) tile[row + RowIndex[b]] += va * Values[b];
                }
            }
            for (int r = 0; r < ni; r++) tile.AsSpan(r * Tile, nj).CopyTo(k.AsSpan((int)((long)(i0 + r) * n + j0), nj));
            if (bi == bj) return;
            for (int r = 0; r < ni; r++)
                for (int s = 0; s < nj; s++) k[(long)(j0 + s) * n + i0 + r] = tile[r * Tile + s];
        });
        return tensor(k, [n, n]);
    }

    /// <summary>Xᵀα [d] in float64: column j's entries against α at their rows, columns split among the kernel threads.</summary>
    public double[] TransposeTimes(ReadOnlySpan<double> alpha)
    {
        if (alpha.Length != Rows) throw new SaeSharpException($"sparse columns: {alpha.Length} row weights for {Rows} rows");
        var a = alpha.ToArray();
        var result = new double[Columns];
        int end = Tiles * Columns, parts = Math.Max(1, Math.Min(64, Columns / 1024));
        KernelThreads.Run(parts, p =>
        {
            int from = (int)((long)Columns * p / parts), to = (int)((long)Columns * (p + 1) / parts);
            for (int j = from; j < to; j++)
            {
                double s = 0;
                for (int e = TileStart[j], stop = TileStart[end + j]; e < stop; e++) s += Values[e] * a[RowIndex[e]];
                result[j] = s;
            }
        });
        return result;
    }

    /// <summary>x·w + b for each row of <paramref name="x"/> [n, d] (any float type, any device), in float64, reading x in
    /// row blocks and skipping its zeros: no float64 copy of x is made whole.</summary>
    public static double[] RowDots(Tensor x, double[] w, double b)
    {
        long n = x.shape[0];
        int d = (int)x.shape[1];
        var score = new double[n];
        ForEachRowBlock(x, (first, rows, v) =>
        {
            for (int r = 0; r < rows; r++)
            {
                var row = v.Slice(r * d, d);
                double s = b;
                for (int j = 0; j < row.Length; j++)
                    if (row[j] != 0) s += row[j] * w[j];
                score[first + r] = s;
            }
        });
        return score;
    }
}
