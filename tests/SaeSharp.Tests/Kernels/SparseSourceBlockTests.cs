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
        var a = randn(rows, d, generator: new Generator(36));
        var b = randn(srcRows, d, generator: new Generator(37));
        var ar = randint(0, rows, [nnz], generator: new Generator(38));
        var br = randint(0, srcRows, [nnz], generator: new Generator(39));
        long savedBytes = SparseKernels.BlockBytes;
        bool savedOn = SparseKernels.SourceBlocking;
        try
        {
            SparseKernels.SourceBlocking = false;
            var dotsOnePass = F(SparseKernels.RowDots(a, ar, b, br));
            SparseKernels.SourceBlocking = true;
            SparseKernels.BlockBytes = 16L * d * sizeof(float); // 16 source rows a block: 13 blocks, runs of ~10 entries
            Assert.Equal(16, SparseKernels.SourceBlock(d, srcRows, nnz, rows));
            SparseKernelsTests.AssertRowSumsMatchAPlainLoop(d, rows, srcRows, nnz, rowMajor, seed: 31);
            Assert.Equal(dotsOnePass, F(SparseKernels.RowDots(a, ar, b, br)));
            // And against the dense formula (another summation order: close, not equal).
            AssertClose((a.index_select(0, ar) * b.index_select(0, br)).sum(1), SparseKernels.RowDots(a, ar, b, br), what: "dots");
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
