using System.Runtime.InteropServices;
using TorchSharp;
using static TorchSharp.torch;

namespace SaeSharp.Tests;

/// <summary>
/// <see cref="TorchScalars"/>' replacements of TorchSharp members that drop their own Scalars give what those members
/// give (values, dtypes, gradients), and hand-computed values; <see cref="ScalarLifetimeTests"/> shows why they exist.
/// </summary>
public class TorchScalarsTests
{
    [Fact]
    public void VectorNormEqualsTorchSharpsWithItsGradient()
    {
        using var scope = NewDisposeScope();
        using var g = new Generator(4);
        var x = randn([3, 4, 5], generator: g);
        x[0, 1] = zeros(5); // a zero row: the p < 1 gradient there is torch's (0), not NaN
        foreach (double ord in new[] { 2.0, 1.0, 0.5, 3.0, double.PositiveInfinity })
            foreach (long[] dims in new long[][] { [-1], [1], [0, 2] })
                foreach (bool keepdim in new[] { false, true })
                {
                    var a = x.clone().requires_grad_(true);
                    var b = x.clone().requires_grad_(true);
                    var mine = TorchScalars.VectorNorm(a, ord, dims, keepdim);
                    var theirs = linalg.vector_norm(b, ord, dims, keepdim);
                    Assert.Equal(theirs.shape, mine.shape);
                    Assert.True(mine.eq(theirs).all().item<bool>(), $"ord {ord} dims [{string.Join(",", dims)}]");
                    mine.sum().backward();
                    theirs.sum().backward();
                    Assert.True(a.grad!.eq(b.grad!).all().item<bool>(), $"gradient at ord {ord} dims [{string.Join(",", dims)}]");
                }
        // By hand: ‖(3, 4)‖₂ = 5, ‖(3, −4)‖₁ = 7.
        Assert.Equal(5f, TorchScalars.VectorNorm(tensor(new[] { 3f, 4f }), 2, [0]).item<float>());
        Assert.Equal(7f, TorchScalars.VectorNorm(tensor(new[] { 3f, -4f }), 1, [0]).item<float>());
        // libtorch's error comes back as TorchSharp's exception, naming the bad dimension.
        Assert.ThrowsAny<ExternalException>(() => TorchScalars.VectorNorm(x, 2, [7]));
    }

    [Fact]
    public void SoftplusEqualsTorchSharpsOnBothSidesOfTheThreshold()
    {
        using var scope = NewDisposeScope();
        var x = linspace(-30, 30, 121, dtype: ScalarType.Float64);
        foreach (var (beta, threshold) in new[] { (1.0, 20.0), (2.0, 5.0), (0.5, 1.0) })
            Assert.True(TorchScalars.Softplus(x, beta, threshold).eq(nn.functional.softplus(x, beta, threshold)).all().item<bool>(), $"beta {beta}");
        // By hand: softplus(0) = ln 2; above the threshold x itself.
        Assert.Equal(Math.Log(2), TorchScalars.Softplus(zeros(1, dtype: ScalarType.Float64)).item<double>(), 15);
        Assert.Equal(25.0, TorchScalars.Softplus(full(1, 25.0, dtype: ScalarType.Float64)).item<double>());
    }

    [Fact]
    public void ArangeAndOneMinusGiveTorchsValuesAndDtypes()
    {
        using var scope = NewDisposeScope();
        var ints = TorchScalars.Arange(5);
        Assert.Equal(ScalarType.Int64, ints.dtype);
        Assert.Equal(new long[] { 0, 1, 2, 3, 4 }, ints.data<long>().ToArray());
        var floats = TorchScalars.Arange(3, ScalarType.Float32);
        Assert.Equal(new[] { 0f, 1f, 2f }, floats.data<float>().ToArray());
        using var stop = 2.5.ToScalar();
        Assert.Equal(arange(stop).data<float>().ToArray(), TorchScalars.Arange(stop).data<float>().ToArray()); // a float stop: the default dtype
        var u = tensor(new[] { 0f, 0.25f, 1f, -2f });
        Assert.Equal(new[] { 1f, 0.75f, 0f, 3f }, TorchScalars.OneMinus(u).data<float>().ToArray());
    }
}
