using SaeSharp.Saes;
using static TorchSharp.torch;
using static SaeSharp.Tests.Saes.SaeTestUtil;

namespace SaeSharp.Tests.Saes;

public class JumpReluSaeTests
{
    // pre-activations [3 rows, 4 latents] and thresholds chosen so that some pre lie within ε/2 of θ
    private static readonly float[] Pre = [0.50f, 0.10f, 0.95f, -0.2f, 0.45f, 0.30f, 1.30f, 0.70f, 0.62f, 0.05f, 1.02f, 0.15f];
    private static readonly float[] Theta = [0.5f, 0.2f, 1.0f, 0.1f];
    private const double Eps = 0.2;

    private static double K(double u) => Math.Abs(u) < 0.5 ? 1 : 0;

    [Fact]
    public void JumpReluStraightThroughGradientMatchesThePaper()
    {
        var pre = tensor(Pre).reshape(3, 4).requires_grad_(true);
        var theta = tensor(Theta).requires_grad_(true);
        var g = randn(3, 4, generator: new Generator(1));
        var f = JumpReluSae.JumpReluSte(pre, theta, Eps);
        (f * g).sum().backward();
        var gs = F(g); var fs = F(f); var gPre = F(pre.grad!); var gTheta = F(theta.grad!);
        for (int j = 0; j < 4; j++)
        {
            double expected = 0;
            for (int n = 0; n < 3; n++)
            {
                int e = n * 4 + j;
                bool on = Pre[e] > Theta[j];
                Assert.Equal(on ? Pre[e] : 0f, fs[e], 6);
                Assert.Equal(on ? gs[e] : 0f, gPre[e], 6);
                expected += -(Theta[j] / Eps) * K((Pre[e] - Theta[j]) / Eps) * gs[e];
            }
            Assert.Equal(expected, gTheta[j], 4);
        }
    }

    [Fact]
    public void StepStraightThroughGradientMatchesThePaper()
    {
        var pre = tensor(Pre).reshape(3, 4).requires_grad_(true);
        var theta = tensor(Theta).requires_grad_(true);
        var g = randn(3, 4, generator: new Generator(2));
        (JumpReluSae.StepSte(pre, theta, Eps) * g).sum().backward();
        var gs = F(g);
        for (int j = 0; j < 4; j++)
        {
            double expected = 0;
            for (int n = 0; n < 3; n++) expected += -(1 / Eps) * K((Pre[n * 4 + j] - Theta[j]) / Eps) * gs[n * 4 + j];
            Assert.Equal(expected, theta.grad![j].item<float>(), 4);
        }
        Assert.True(pre.grad is null || pre.grad.abs().sum().item<float>() == 0);
    }

    [Fact]
    public void FusedJumpReluAndL0HaveThePapersValuesAndGradients()
    {
        var pre = tensor(Pre).reshape(3, 4).requires_grad_(true);
        var theta = tensor(Theta).requires_grad_(true);
        var g = randn(3, 4, generator: new Generator(3));
        const double c = 0.7; // weight of the L0 in the loss
        var (f, l0) = JumpReluSae.JumpReluAndL0(pre, theta, Eps);
        ((f * g).sum() + l0 * c).backward();
        var gs = F(g); var fs = F(f); var gPre = F(pre.grad!); var gTheta = F(theta.grad!);
        double count = 0;
        for (int j = 0; j < 4; j++)
        {
            double expected = 0;
            for (int n = 0; n < 3; n++)
            {
                int e = n * 4 + j;
                bool on = Pre[e] > Theta[j];
                if (on) count++;
                Assert.Equal(on ? Pre[e] : 0f, fs[e], 6);
                Assert.Equal(on ? gs[e] : 0f, gPre[e], 6);
                double k = K((Pre[e] - Theta[j]) / Eps);
                expected += -(Theta[j] / Eps) * k * gs[e] - c / 3 * (1 / Eps) * k;
            }
            Assert.Equal(expected, gTheta[j], 4);
        }
        Assert.Equal(count / 3, l0.item<float>(), 6);
    }

    [Theory]
    [InlineData(JumpReluPenalty.L0)]
    [InlineData(JumpReluPenalty.TargetL0)]
    public void TrainingThresholdGradientCombinesReconstructionAndPenalty(JumpReluPenalty penalty)
    {
        var sae = (JumpReluSae)Make(new SaeConfig { Architecture = "jumprelu", DIn = 3, DSae = 4 }, seed: 5);
        sae.Training.Bandwidth = 0.5;
        sae.Training.SparsityCoefficient = 0.7;
        sae.Training.JumpReluPenalty = penalty;
        sae.Training.TargetL0 = 1.5;
        using (no_grad()) sae.Threshold.copy_(tensor(new[] { 0.05f, 0.1f, 0.02f, 0.2f }));
        var x = randn(6, 3, generator: new Generator(6));
        var o = sae.TrainingForward(x, x, new SaeTrainContext());
        o.Loss.backward();

        using var _ = no_grad();
        var pre = sae.HiddenPre(x);
        var th = sae.Threshold.detach();
        var kern = ((pre - th) / 0.5).abs().lt(0.5).to(ScalarType.Float32);
        var y = o.SaeOut.detach();
        var gF = (2.0 / 6) * (y - x).matmul(sae.WDec.t()); // ∂mse/∂f
        var l0 = pre.gt(th).to(ScalarType.Float32).sum(-1).mean();
        double dPdL0 = penalty == JumpReluPenalty.L0 ? 1.0 : 2 * (l0.item<float>() / 1.5 - 1) / 1.5;
        var expected = (-(th / 0.5) * kern * gF).sum(dim: 0) + 0.7 * dPdL0 * (-(1 / 0.5) * kern).sum(dim: 0) / 6;
        AssertClose(expected, sae.Threshold.grad!, rtol: 1e-4, atol: 1e-5, what: "threshold grad");
    }

    /// <summary>Inference JumpReLU is SAELens's (and Gemma Scope's) ReLU(pre)·[pre &gt; θ]: with a negative θ a
    /// negative pre-activation above it stays zero rather than passing through. BatchTopK's thresholded inference
    /// encoder is the same function (its θ is −1 until estimated).</summary>
    [Theory]
    [InlineData("jumprelu")]
    [InlineData("batchtopk")]
    public void InferenceEncodeWithANegativeThresholdIsReluTimesTheStep(string arch)
    {
        var sae = SaeFactory.Create(new SaeConfig { Architecture = arch, DIn = 3, DSae = 3, K = 1 });
        using (no_grad())
        {
            sae.WEnc.copy_(eye(3));
            var theta = tensor(new[] { -1f, 0.5f, -0.2f });
            if (sae is JumpReluSae j) j.Threshold.copy_(theta);
            else ((BatchTopKSae)sae).Threshold.copy_(theta);
        }
        var x = tensor(new float[,] { { -0.5f, 0.7f, -0.1f }, { 0.3f, 0.4f, -0.3f }, { -2, 0.6f, 0.1f } });
        // pre = x; above θ: row 0 all three (ReLU keeps 0.7), row 1 only the first, row 2 the last two.
        Assert.Equal(new[] { 0, 0.7f, 0, 0.3f, 0, 0, 0, 0.6f, 0.1f }, F(sae.Encode(x)));
    }

    [Fact]
    public void AdamBetasFollowThePaper()
    {
        var sae = new JumpReluSae(new SaeConfig { Architecture = "jumprelu", DIn = 3, DSae = 4 });
        Assert.Equal((0.0, 0.999), sae.DefaultAdamBetas);
        Assert.Equal(7e-5, sae.DefaultLearningRate());
    }
}
