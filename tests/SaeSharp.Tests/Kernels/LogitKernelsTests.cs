using SaeSharp.Kernels;
using TorchSharp;
using static TorchSharp.torch;

namespace SaeSharp.Tests.Kernels;

/// <summary>The CE/KL row kernels against float64 log-softmax computed here, on rows that stress them.</summary>
public class LogitKernelsTests
{
    [Fact]
    public void Row_statistics_equal_float64_log_softmax()
    {
        var g = new Generator(3);
        int v = 1003;                                              // not a multiple of any vector width
        var clean = randn(6, v, generator: g) * 3;
        clean[1] = clean[1] * 40;                                  // peaked: a few tokens carry the mass
        clean[2] = clean[2] + 1e4f;                                // large offset: needs the max shift
        clean[3] = full(v, -7f);                                   // uniform
        var variant = clean + randn(6, v, generator: g) * 0.5;
        variant[4] = clean[4].clone();                            // identical row: KL exactly 0
        variant[5] = clean[5] + 1e-4f * randn(v, generator: g);   // tiny change: KL ~ 1e-9, no cancellation noise

        var p = empty_like(clean);
        var (lseC, pSum) = LogitKernels.Clean(clean, p);
        var (lseV, dot) = LogitKernels.Variant(variant, clean, p);

        var lc = clean.to(ScalarType.Float64).log_softmax(1);
        var lv = variant.to(ScalarType.Float64).log_softmax(1);
        var expectKl = (lc.exp() * (lc - lv)).sum(1).data<double>().ToArray();
        var expectLseC = clean.to(ScalarType.Float64).logsumexp(1).data<double>().ToArray();
        var expectLseV = variant.to(ScalarType.Float64).logsumexp(1).data<double>().ToArray();
        for (int r = 0; r < 6; r++)
        {
            Assert.Equal(expectLseC[r], lseC[r], 1e-5 * Math.Max(1, Math.Abs(expectLseC[r])));
            Assert.Equal(expectLseV[r], lseV[r], 1e-5 * Math.Max(1, Math.Abs(expectLseV[r])));
            Assert.Equal(1, pSum[r], 1e-5);
            double kl = dot[r] + (lseV[r] - lseC[r]) * pSum[r];
            Assert.True(Math.Abs(kl - expectKl[r]) <= 1e-6 * Math.Max(1, expectKl[r]) + (r == 5 ? 1e-10 : 2e-6),
                $"row {r}: KL {kl} vs float64 {expectKl[r]}");
        }
        Assert.Equal(0, dot[4] + (lseV[4] - lseC[4]) * pSum[4]);
        AssertClose(lc.exp(), p, 1e-6);

        var (tLse, tP, tSum) = LogitKernels.TorchClean(clean);
        var (tLseV, tDot) = LogitKernels.TorchVariant(variant, clean, tP);
        var tKl = (tDot + (tLseV - tLse) * tSum).data<double>().ToArray();
        for (int r = 0; r < 6; r++) Assert.Equal(expectKl[r], tKl[r], 1e-6 * Math.Max(1, expectKl[r]));
    }

    /// <summary>A row whose largest logit is its last element (in the scalar tail after the vectors: 1003 is not a
    /// multiple of 4, 8 or 16) and 200 above the rest: the shift must be that maximum, or exp(200) overflows float32.
    /// lse = 200 + log(1 + 1002·e^-200) = 200 in float64, and p puts all the mass on that element.</summary>
    [Fact]
    public void A_maximum_in_the_vector_tail_is_the_shift()
    {
        int v = 1003;
        var clean = zeros(2, v);
        clean[0, v - 1] = tensor(200f);
        clean[1, v - 2] = tensor(200f);
        var variant = clean.clone();
        var p = empty_like(clean);
        var (lseC, pSum) = LogitKernels.Clean(clean, p);
        var (lseV, dot) = LogitKernels.Variant(variant, clean, p);
        for (int r = 0; r < 2; r++)
        {
            Assert.Equal(200.0, lseC[r], 1e-9);
            Assert.Equal(200.0, lseV[r], 1e-9);
            Assert.Equal(1.0, pSum[r], 1e-9);
            Assert.Equal(0.0, dot[r]);
        }
        Assert.Equal(1f, p[0, v - 1].item<float>(), 1e-6f);
        Assert.Equal(1f, p[1, v - 2].item<float>(), 1e-6f);
    }

    private static void AssertClose(Tensor a, Tensor b, double atol)
    {
        double d = (a.to(ScalarType.Float64) - b.to(ScalarType.Float64)).abs().max().item<double>();
        Assert.True(d <= atol, $"max |difference| {d}");
    }
}
