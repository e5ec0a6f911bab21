using SaeSharp.Kernels;
using static TorchSharp.torch;

namespace SaeSharp.Tests.Kernels;

/// <summary><see cref="NormKernels"/> against torch's float64 Σ x² (a float64 copy squared and summed), on sizes below
/// and above the threaded split and with a vector tail, and where it does not apply.</summary>
[Collection(KernelPathCollection.Name)]
public class NormKernelsTests
{
    [Theory]
    [InlineData(1)]
    [InlineData(7)]
    [InlineData(1000)]
    [InlineData(65536)]
    [InlineData(262147)]
    public void Sum_of_squares_matches_the_float64_sum(int n)
    {
        using var scope = NewDisposeScope();
        var x = randn(n, generator: new Generator((ulong)n)) * 3;
        double expected = x.to(ScalarType.Float64).pow(2).sum().item<double>();
        Assert.True(NormKernels.Applies(x));
        double actual = NormKernels.SumOfSquares(x);
        Assert.True(Math.Abs(actual - expected) <= 1e-12 * expected, $"{actual} vs {expected}");
        Assert.Equal(0, NormKernels.SumOfSquares(empty(0)));
    }

    [Fact]
    public void Views_other_dtypes_and_the_torch_path_are_left_to_torch()
    {
        using var scope = NewDisposeScope();
        var m = randn(8, 6);
        // The transpose of a contiguous matrix fills one block: read in place.
        Assert.True(NormKernels.Applies(m.t()));
        Assert.Equal(m.to(ScalarType.Float64).pow(2).sum().item<double>(), NormKernels.SumOfSquares(m.t()), 12);
        Assert.False(NormKernels.Applies(randn(8, 12)[.., TensorIndex.Slice(0, 12, 2)]));
        Assert.False(NormKernels.Applies(m.to(ScalarType.Float64)));
        try
        {
            CpuKernels.Path = KernelPath.Torch;
            Assert.False(NormKernels.Applies(m));
        }
        finally { CpuKernels.ResetPath(); }
    }
}
