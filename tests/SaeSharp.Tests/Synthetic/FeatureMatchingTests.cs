using SaeSharp.Synthetic;
using static TorchSharp.torch;

namespace SaeSharp.Tests.Synthetic;

public class FeatureMatchingTests
{
    private static readonly float[,] Truth = { { 1, 0, 0 }, { 0, 0.6f, 0.8f }, { 0.6f, -0.8f, 0 } };

    [Fact]
    public void PermutedScaledSignFlippedTruthHasMccAndUniquenessOne()
    {
        // Rows: truth 2 negated ×3, truth 0 ×0.5, truth 1 ×7.
        var dec = tensor(new float[,] { { -1.8f, 2.4f, 0 }, { 0.5f, 0, 0 }, { 0, 4.2f, 5.6f } });
        Assert.Equal(1.0, FeatureMatching.MeanCorrelationCoefficient(dec, tensor(Truth)), 6);
        Assert.Equal(1.0, FeatureMatching.FeatureUniqueness(dec, tensor(Truth)));
        Assert.Equal([2L, 0, 1], FeatureMatching.BestMatches(dec, tensor(Truth)));
    }

    [Fact]
    public void TwoLatentsOnOneFeatureHalveUniquenessAndTheMatchingIsOneToOne()
    {
        // Both rows point at truth 0: each latent's best match is 0 → 1 distinct feature over 2 latents.
        var dec = tensor(new float[,] { { 1, 0, 0 }, { 2, 0.1f, 0 } });
        Assert.Equal(0.5, FeatureMatching.FeatureUniqueness(dec, tensor(Truth)));
        // MCC may use truth 0 once: |cos| matrix row0 = (1, 0, 0.6), row1 = (a, b, c); the best of the two assignments
        // that use different features.
        double n1 = Math.Sqrt(4 + 0.01);
        double[] r1 = [2 / n1, 0.06 / n1, Math.Abs(1.2 - 0.08) / n1];
        double best = new[] { 1 + r1[1], 1 + r1[2], 0 + r1[0], 0 + r1[2], 0.6 + r1[0], 0.6 + r1[1] }.Max() / 2;
        Assert.Equal(best, FeatureMatching.MeanCorrelationCoefficient(dec, tensor(Truth)), 6);
        // Greedy (row 0 takes its best, truth 0) would give (1 + 1.12/n1)/2; the optimum moves row 0 to truth 2.
        Assert.Equal((0.6 + r1[0]) / 2, best, 12);
    }

    [Fact]
    public void MccOfMoreLatentsThanFeaturesAveragesOverTheFeatures()
    {
        // Four latents, three features: the matching has three pairs; the unrelated latent is left out.
        var dec = tensor(new float[,] { { 0.3f, 0.3f, 0.3f }, { 0.6f, -0.8f, 0 }, { 1, 0, 0 }, { 0, 0.6f, 0.8f } });
        Assert.Equal(1.0, FeatureMatching.MeanCorrelationCoefficient(dec, tensor(Truth)), 6);
        Assert.Equal(0.75, FeatureMatching.FeatureUniqueness(dec, tensor(Truth)));
        // Fewer latents than features: the mean over the latents' pairs.
        var two = tensor(new float[,] { { 0, 1, 0 }, { 1, 0, 0 } });
        // |cos|: latent 0 → (0, 0.6, 0.8), latent 1 → (1, 0, 0.6); best = 0.8 + 1.
        Assert.Equal(0.9, FeatureMatching.MeanCorrelationCoefficient(two, tensor(Truth)), 6);
    }

    [Fact]
    public void ZeroLatentsGiveUniquenessZero() =>
        Assert.Equal(0.0, FeatureMatching.FeatureUniqueness(zeros(0, 3), tensor(Truth)));
}
