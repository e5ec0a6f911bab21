using SaeSharp.Analysis;

namespace SaeSharp.Tests.Analysis;

/// <summary>Label scoring at the boundaries the documentation states: negated thresholds and the "at least" shares.</summary>
public class LabelScoreEdgeTests
{
    [Fact]
    public void A_negated_match_reports_its_threshold_in_activation_units_so_that_acts_below_it_are_the_label()
    {
        // A signed unit: −1 on every third token (the label), −0.2 elsewhere. Negated, it fires where a < threshold, so the
        // reported threshold must lie in [−1, −0.2): the label's tokens below it, the others not.
        const int n = 600;
        var tl = Enumerable.Range(0, n).Select(i => i % 3 == 1 ? new[] { 0 } : []).ToArray();
        var fit = Enumerable.Range(0, n).Select(i => i % 2 == 0).ToArray();
        var acts = Enumerable.Range(0, n).Select(i => i % 3 == 1 ? -1f : -0.2f).ToArray();
        var s = LabelScorer.Score(acts, 1, n, tl, ["q"], fit, new LabelScorerOptions { BothSigns = true })[0];
        var b = s.Best!;
        Assert.True(b.Negated);
        Assert.Equal(1.0, b.F1, 12);
        Assert.True(b.Threshold >= -1 && b.Threshold < -0.2, $"threshold {b.Threshold}");
        Assert.All(Enumerable.Range(0, n), i => Assert.Equal(tl[i].Length == 1, acts[i] < b.Threshold));
    }

    [Fact]
    public void Summary_shares_count_an_f1_of_exactly_the_bound_as_reaching_it()
    {
        // Alive units with best F1 0.8, 0.5 and 0.3, and a dead unit: F1 ≥ 0.8 for 1 of 3, F1 ≥ 0.5 for 2 of 3.
        static LabelMatch M(string label, double f1) => new(label, 0.1, f1, f1, f1, 10);
        UnitLabelScore[] scores =
        [
            new(0, true, 0.1, M("a", 0.8)), new(1, true, 0.1, M("b", 0.5)), new(2, true, 0.1, M("a", 0.3)), new(3, false, 0, null),
        ];
        var sum = LabelScorer.Summarise(scores, 2);
        Assert.Equal(3, sum.Alive);
        Assert.Equal(1.0 / 3, sum.ShareF1AtLeast08, 12);
        Assert.Equal(2.0 / 3, sum.ShareF1AtLeast05, 12);
        Assert.Equal(1, sum.LabelsCovered);
        Assert.Equal((0.8 + 0.5 + 0.3) / 3, sum.MeanBestF1, 12);
    }
}
