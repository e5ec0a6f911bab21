using SaeSharp.Evaluation;

namespace SaeSharp.Tests.Evaluation;

public class SpliceLossMetricsTests
{
    private sealed class Losses : SpliceLossMetrics;

    private static Losses Of(double clean, double ablated, double withSae) =>
        new() { CeLossWithoutSae = clean, CeLossWithAblation = ablated, CeLossWithSae = withSae };

    /// <summary>hook_mlp_in of the parallel built-in model: zero ablation moves CE by ~0.3 %, so a reconstruction a hair
    /// better than clean scores 108.7 %; the note names both losses and the share. A 1 % gap or more: no note.</summary>
    [Fact]
    public void A_tiny_ablation_gap_is_noted_with_both_losses()
    {
        var tiny = Of(2.0, 2.006, 1.99948);
        Assert.Equal((2.006 - 1.99948) / 0.006, tiny.CeLossScore, 9);   // 1.0867: outside [0, 1]
        Assert.Equal("note: zero ablation barely changes the loss (CE clean 2.0000, zero-ablated 2.0060, 0.30 % of clean), " +
                     "so % CE loss recovered divides by a tiny difference: read it with the KL", tiny.SmallAblationNote());
        Assert.NotNull(Of(2.0, 1.99, 2.0).SmallAblationNote());        // ablation that lowers the loss a little
        Assert.Null(Of(2.0, 2.02, 2.01).SmallAblationNote());          // exactly 1 %
        Assert.Null(Of(2.0, 5.0, 2.1).SmallAblationNote());
        Assert.Null(Of(2.0, 2.0, 2.0).SmallAblationNote());            // no gap at all: NaN score, NonFiniteNotes says why
        Assert.Null(Of(double.NaN, 2.0, 2.0).SmallAblationNote());
    }
}
