using SaeSharp.Kernels;
using SaeSharp.Tests.Training;
using static TorchSharp.torch;
using static SaeSharp.Tests.Saes.SaeTestUtil;

namespace SaeSharp.Tests.Kernels;

/// <summary>The sparse kernels with their sources taken in blocks (<see cref="SparseKernels.SourceBlock"/>, forced here by
/// a block of a few rows): every destination still receives its entries' float32 additions in input order, so the row
/// sums equal a plain loop over the entries bit for bit, sources ascending within each destination (row-major codes,
/// what training passes) or in any order; and the row dot products equal the one-pass ones. In the serial collection:
/// the block size is process-wide.</summary>
[Collection(SerialTorchCollection.Name)]
public class SparseSourceBlockTests
{
    [Theory]
    [InlineData(5, false)]
    [InlineData(64, true)]
    [InlineData(64, false)]
    [InlineData(259, true)]
    public void Blocked_kernels_give_the_bits_of_a_plain_loop(int d, bool rowMajor)
    {
        const int rows = 23, srcRows = 200, nnz = 3000;
        var src = randn(srcRows, d, generator: new Generator(31)) * 3;
        var dr = randint(0, rows - 3, [nnz], generator: new Generator(32)); // the last rows stay empty
        var sr = randint(0, srcRows, [nnz], generator: new Generator(33));
        if (rowMajor)
        {
            // Sorted by (destination, source), as PositiveEntries lists a code.
            var key = (dr * srcRows + sr).argsort();
            (dr, sr) = (dr.index_select(0, key), sr.index_select(0, key));
        }
        var scale = randn(nnz, generator: new Generator(34));
        var start = randn(rows, d, generator: new Generator(35));
        var other = randn(rows, d, generator: new Generator(36));
        float[] x = F(src), sc = F(scale), st = F(start);
        long[] dri = dr.data<long>().ToArray(), sri = sr.data<long>().ToArray();
        float[] Reference(bool fromStart)
        {
            var y = fromStart ? (float[])st.Clone() : new float[rows * d];
            for (int e = 0; e < nnz; e++)
                for (int j = 0; j < d; j++)
                    y[dri[e] * d + j] = y[dri[e] * d + j] + sc[e] * x[sri[e] * d + j];
            return y;
        }
        long savedBytes = SparseKernels.BlockBytes;
        bool savedOn = SparseKernels.SourceBlocking;
        try
        {
            SparseKernels.SourceBlocking = false;
            var dotsOnePass = F(SparseKernels.RowDots(other, dr, src, sr));
            SparseKernels.SourceBlocking = true;
            SparseKernels.BlockBytes = 16L * d * sizeof(float); // 16 source rows a block: 13 blocks, runs of ~10 entries
            Assert.Equal(16, SparseKernels.SourceBlock(d, srcRows, nnz, rows));
            var zero = Reference(fromStart: false);
            Assert.Equal(zero, F(SparseKernels.SumRows(rows, dr, src, sr, scale)));
            var transposed = F(SparseKernels.SumRowsTransposed(rows, dr, src, sr, scale));
            for (int r = 0; r < rows; r++)
                for (int j = 0; j < d; j++)
                    Assert.Equal(zero[r * d + j], transposed[j * rows + r]);
            var dst = start.clone();
            SparseKernels.ScatterAddRows(dst, dr, src, sr, scale);
            Assert.Equal(Reference(fromStart: true), F(dst));
            Assert.Equal(dotsOnePass, F(SparseKernels.RowDots(other, dr, src, sr)));
            // And against the dense formula (another summation order: close, not equal).
            AssertClose((other.index_select(0, dr) * src.index_select(0, sr)).sum(1), SparseKernels.RowDots(other, dr, src, sr), what: "dots");
        }
        finally
        {
            SparseKernels.BlockBytes = savedBytes;
            SparseKernels.SourceBlocking = savedOn;
        }
    }

    [Fact]
    public void Blocks_are_taken_only_for_long_runs_over_many_blocks()
    {
        long saved = SparseKernels.BlockBytes;
        try
        {
            SparseKernels.BlockBytes = 512 * 1024;
            // The shape at 10 % density: d_in 512 → 256 latents a block, 32 blocks, runs of ~26 entries.
            Assert.Equal(256, SparseKernels.SourceBlock(512, 8192, 3_355_443, 4096));
            // A k = 32 code of 8,192 latents: runs of one entry a block.
            Assert.Equal(0, SparseKernels.SourceBlock(512, 8192, 32 * 4096, 4096));
            // d_in 128, d_sae 2,048: the sources fill two blocks.
            Assert.Equal(0, SparseKernels.SourceBlock(128, 2048, 200_000, 1024));
        }
        finally { SparseKernels.BlockBytes = saved; }
    }
}
