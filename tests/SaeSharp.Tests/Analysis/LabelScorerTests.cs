using SaeSharp.Analysis;

namespace SaeSharp.Tests.Analysis;

public class LabelScorerTests
{
    private const int N = 4000;
    private static readonly string[] Labels = ["colour", "animal", "in_quote"];

    /// <summary>Tokens: colour on every 5th, animal on every 7th, in_quote on a third; even tokens fit, odd evaluate.</summary>
    private static (int[][] TokenLabels, bool[] Fit) Tokens()
    {
        var tl = new int[N][];
        for (int i = 0; i < N; i++)
        {
            var ls = new List<int>();
            if (i % 5 == 0) ls.Add(0);
            if (i % 7 == 0) ls.Add(1);
            if (i % 3 == 1) ls.Add(2);
            tl[i] = [.. ls];
        }
        return (tl, Enumerable.Range(0, N).Select(i => (i / 10) % 2 == 0).ToArray());
    }

    [Fact]
    public void A_feature_that_is_exactly_a_label_scores_one()
    {
        var (tl, fit) = Tokens();
        var rng = new Random(1);
        // Feature 0: fires (with varying strength) exactly on colour tokens. Feature 1: animal tokens at 0.5..1,
        // but also 0.2 on every in_quote token: the threshold must land between 0.2 and 0.5.
        var acts = new float[2 * N];
        for (int i = 0; i < N; i++)
        {
            acts[i] = tl[i].Contains(0) ? 0.1f + (float)rng.NextDouble() : 0f;
            acts[N + i] = tl[i].Contains(1) ? 0.5f + 0.5f * (float)rng.NextDouble() : tl[i].Contains(2) ? 0.2f : 0f;
        }
        var s = LabelScorer.Score(acts, 2, N, tl, Labels, fit);
        Assert.Equal("colour", s[0].Best!.Label);
        Assert.Equal(1.0, s[0].Best!.F1, 12);
        Assert.Equal(1.0, s[0].Best!.Precision, 12);
        Assert.Equal(1.0, s[0].Best!.Recall, 12);
        Assert.Equal(N / 5 / 2, s[0].Best!.Support); // colour tokens in the evaluation half
        Assert.Equal("animal", s[1].Best!.Label);
        Assert.Equal(1.0, s[1].Best!.F1, 12);
        Assert.InRange(s[1].Best!.Threshold, 0.2, 0.5);
        Assert.True(s[0].Alive);
        Assert.Equal(0.2, s[0].FireRate, 12);
    }

    [Fact]
    public void A_random_feature_scores_near_the_labels_base_rate()
    {
        var (tl, fit) = Tokens();
        var rng = new Random(2);
        var acts = Enumerable.Range(0, N).Select(_ => (float)rng.NextDouble()).ToArray();
        var s = LabelScorer.Score(acts, 1, N, tl, Labels, fit)[0];
        var b = s.Best!;
        double baseRate = Labels.Select((_, l) => tl.Count(t => t.Contains(l)) / (double)N).ToArray()[Array.IndexOf(Labels, b.Label)];
        // Independent of the labels: precision is the base rate, and F1 no better than firing on everything, 2p/(1+p).
        Assert.InRange(b.Precision, baseRate - 0.05, baseRate + 0.05);
        Assert.True(b.F1 <= 2 * baseRate / (1 + baseRate) + 0.05, $"F1 {b.F1} for base rate {baseRate}");
        Assert.True(b.F1 < 0.6);
    }

    [Fact]
    public void Signed_dimensions_may_encode_a_label_by_going_negative()
    {
        var (tl, fit) = Tokens();
        var acts = Enumerable.Range(0, N).Select(i => tl[i].Contains(2) ? -1f : 0.3f).ToArray();
        var pos = LabelScorer.Score(acts, 1, N, tl, Labels, fit)[0];
        var both = LabelScorer.Score(acts, 1, N, tl, Labels, fit, new LabelScorerOptions { BothSigns = true })[0];
        Assert.Equal("in_quote", both.Best!.Label);
        Assert.True(both.Best.Negated);
        Assert.Equal(1.0, both.Best.F1, 12);
        Assert.True(pos.Best!.F1 < 0.9);
    }

    [Fact]
    public void Dead_features_are_left_out_of_the_summary()
    {
        var (tl, fit) = Tokens();
        var acts = new float[3 * N];
        for (int i = 0; i < N; i++)
        {
            acts[i] = tl[i].Contains(0) ? 1 : 0;                 // colour, F1 1
            acts[N + i] = tl[i].Contains(1) || i % 11 == 0 ? 1 : 0; // animal plus noise
        }                                                         // feature 2 dead
        var s = LabelScorer.Score(acts, 3, N, tl, Labels, fit);
        Assert.False(s[2].Alive);
        Assert.Null(s[2].Best);
        // Independent F1 of feature 1 on the evaluation half: fires on animal ∪ {i % 11 == 0}.
        int tp = 0, fired = 0, support = 0;
        for (int i = 0; i < N; i++)
        {
            if (fit[i]) continue;
            bool f = i % 7 == 0 || i % 11 == 0, a = i % 7 == 0;
            if (f) fired++;
            if (a) support++;
            if (f && a) tp++;
        }
        double p = (double)tp / fired, r = (double)tp / support, f1 = 2 * p * r / (p + r);
        Assert.Equal(1.0, r);
        Assert.InRange(f1, 0.5, 0.8); // p ≈ (1/7) / (1/7 + 1/11 − 1/77) ≈ 0.65, so F1 ≈ 0.79
        Assert.Equal("animal", s[1].Best!.Label);
        Assert.Equal(f1, s[1].Best!.F1, 12);
        Assert.Equal(1.0, s[0].Best!.F1, 12);
        var sum = LabelScorer.Summarise(s, 3);
        Assert.Equal(3, sum.Units);
        Assert.Equal(2, sum.Alive);
        // Of the two alive features only colour's reaches F1 0.8; both reach 0.5; colour alone is covered.
        Assert.Equal(0.5, sum.ShareF1AtLeast08);
        Assert.Equal(1.0, sum.ShareF1AtLeast05);
        Assert.Equal((1 + f1) / 2, sum.MeanBestF1, 12);
        Assert.Equal(1, sum.LabelsCovered);
    }
}
