using SaeSharp.Synthetic;
using static TorchSharp.torch;

namespace SaeSharp.Tests.Synthetic;

public class FeatureRecoveryTests
{
    private static readonly float[,] Truth = { { 1, 0, 0 }, { 0, 0.6f, 0.8f }, { 0.6f, -0.8f, 0 } };

    [Fact]
    public void PermutedAndPositivelyScaledDecoderRecoversEverything()
    {
        // Decoder rows: truth rows 2, 0, 1 scaled by 3, 0.5, 7, plus an unrelated row.
        var dec = tensor(new float[,] { { 1.8f, -2.4f, 0 }, { 0.5f, 0, 0 }, { 0, 4.2f, 5.6f }, { 0.3f, 0.3f, 0.3f } });
        var r = FeatureRecovery.Compute(tensor(Truth), dec);
        Assert.Equal(1.0, r.Mmcs, 6);
        Assert.Equal(1.0, r.RecoveredFraction);
    }

    [Fact]
    public void SignFlipsCountOnlyWithAbsoluteCosine()
    {
        var dec = tensor(new float[,] { { -1.8f, 2.4f, 0 }, { 0.5f, 0, 0 }, { 0, 4.2f, 5.6f } });
        var abs = FeatureRecovery.Compute(tensor(Truth), dec, absolute: true);
        Assert.Equal(1.0, abs.Mmcs, 6);
        // Signed: the flipped feature (0.6,−0.8,0) is best matched by (1,0,0) with cosine 0.6.
        var signed = FeatureRecovery.Compute(tensor(Truth), dec);
        Assert.Equal(0.6, signed.MaxCosine[2], 6);
        Assert.Equal((1 + 1 + 0.6) / 3, signed.Mmcs, 6);
        Assert.Equal(2.0 / 3, signed.RecoveredFraction, 12);
    }

    [Fact]
    public void PartialRecoveryHandCase()
    {
        // Truth e1, e2; decoder (1,1) and e2: max cosines 1/√2 and 1.
        var r = FeatureRecovery.Compute(tensor(new float[,] { { 1, 0 }, { 0, 1 } }), tensor(new float[,] { { 1, 1 }, { 0, 2 } }));
        Assert.Equal((1 / Math.Sqrt(2) + 1) / 2, r.Mmcs, 9);
        Assert.Equal(0.5, r.RecoveredFraction);
    }

    /// <summary>A feature counts as recovered when its max cosine is above the threshold, not at it: truth e1 against
    /// the decoder row (3, 4) has cosine 3/5 exactly (the same float64 0.6 as the threshold), truth e2 against it 4/5.</summary>
    [Fact]
    public void A_cosine_at_the_threshold_is_not_above_it()
    {
        var r = FeatureRecovery.Compute(tensor(new float[,] { { 1, 0 }, { 0, 1 } }), tensor(new float[,] { { 3, 4 } }), threshold: 0.6);
        Assert.Equal(0.6, r.MaxCosine[0]);
        Assert.Equal(0.8, r.MaxCosine[1], 15);
        Assert.Equal(0.5, r.RecoveredFraction);
    }

    [Fact]
    public void WidthMismatchIsReported()
    {
        var e = Assert.Throws<SaeSharpException>(() => FeatureRecovery.Compute(zeros(3, 4), zeros(5, 3)));
        Assert.Contains("same d", e.Message);
    }
}
