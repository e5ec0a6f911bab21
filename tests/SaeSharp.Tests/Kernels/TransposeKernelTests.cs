using SaeSharp.Kernels;
using static TorchSharp.torch;

namespace SaeSharp.Tests.Kernels;

/// <summary><see cref="TransposeKernel.Of"/> equals torch's transpose copy element for element, on every kernel path,
/// for shapes with and without whole 8 × 8 tiles and 16-column bands.</summary>
public class TransposeKernelTests
{
    public static TheoryData<KernelPath, int, int> Shapes()
    {
        var data = new TheoryData<KernelPath, int, int>();
        foreach (var p in CpuKernels.Supported)
            foreach (var (r, c) in new[] { (1, 1), (1, 5), (7, 3), (8, 8), (13, 29), (64, 136), (512, 520), (300, 1024) })
                data.Add(p, r, c);
        return data;
    }

    [Theory]
    [MemberData(nameof(Shapes))]
    public void The_copy_is_the_transpose(KernelPath path, int rows, int cols)
    {
        using var scope = NewDisposeScope();
        var src = TorchScalars.Arange(rows * cols, dtype: ScalarType.Float32).reshape(rows, cols) * 0.5 - 7;
        var t = TransposeKernel.Of(src, path);
        Assert.Equal(new long[] { cols, rows }, t.shape);
        Assert.True(t.is_contiguous());
        var got = t.data<float>().ToArray();
        for (int i = 0; i < rows; i++)
            for (int j = 0; j < cols; j++)
                Assert.Equal(i * cols * 0.5f + j * 0.5f - 7, got[j * rows + i]);
    }
}
