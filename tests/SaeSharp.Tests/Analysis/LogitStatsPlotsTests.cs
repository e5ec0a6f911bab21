using SaeSharp.Analysis;
using SaeSharp.Plots;

namespace SaeSharp.Tests.Analysis;

/// <summary>The numbers behind <see cref="LogitStatsPlots"/>'s pictures: the Manhattan plot's points and labels, and
/// <see cref="HistogramPlot.EqualBins"/>.</summary>
public class LogitStatsPlotsTests : IDisposable
{
    private readonly string _dir = Directory.CreateTempSubdirectory("logit-plots-").FullName;
    public void Dispose() => Directory.Delete(_dir, true);

    /// <summary>Scores of two sets on features 7 and 3: y = −ln(1 − score) (ln 2, 0; 2, ln 10), x the feature; only points
    /// above y = 1 are labelled, with their feature.</summary>
    [Fact]
    public void Manhattan_points_are_minus_log_one_minus_the_scores_at_each_feature()
    {
        var scores = new double[,] { { 0.5, 0 }, { 1 - Math.Exp(-2), 0.9 } };
        var groups = LogitStatsPlots.ManhattanGroups(["space", "digits"], [7, 3], scores);
        Assert.Equal(["space", "digits"], groups.Select(g => g.Label));
        Assert.All(groups, g => Assert.Equal([7.0, 3.0], g.X));
        Assert.Equal(Math.Log(2), groups[0].Y[0], 12);
        Assert.Equal(0, groups[0].Y[1], 12);
        Assert.Equal(2, groups[1].Y[0], 12);
        Assert.Equal(Math.Log(10), groups[1].Y[1], 12);
        Assert.Equal([null, null], groups[0].PointLabels!);
        Assert.Equal(["7", "3"], groups[1].PointLabels!);
        Assert.Throws<ArgumentException>(() => LogitStatsPlots.ManhattanGroups(["a"], [1, 2, 3], scores));
    }

    /// <summary>Only the <see cref="LogitStatsPlots.LabelledPerSet"/> highest points of a set get a label.</summary>
    [Fact]
    public void Manhattan_labels_only_the_highest_points_of_a_set()
    {
        double[] s = [0.9, 0.99, 0.95, 0.999, 0.8];
        var scores = new double[1, s.Length];
        for (int j = 0; j < s.Length; j++) scores[0, j] = s[j];
        var g = LogitStatsPlots.ManhattanGroups(["a"], [0, 1, 2, 3, 4], scores)[0];
        Assert.Equal([null, "1", "2", "3", null], g.PointLabels!);
    }

    [Fact]
    public void Equal_bins_count_the_finite_values_in_equal_widths()
    {
        var bars = HistogramPlot.EqualBins([0, 1, 2, 10, double.NaN, double.PositiveInfinity], 5, "#000000");
        Assert.Equal([(0.0, 2.0, 2L), (2.0, 4.0, 1L), (4.0, 6.0, 0L), (6.0, 8.0, 0L), (8.0, 10.0, 1L)], bars.Select(b => (b.Lower, b.Upper, b.Count)));
        Assert.Equal([(2.5, 3.5, 3L)], HistogramPlot.EqualBins([3, 3, 3], 10, "#000000").Select(b => (b.Lower, b.Upper, b.Count)));
        Assert.Empty(HistogramPlot.EqualBins([double.NaN], 10, "#000000"));
    }

    /// <summary>More sets than one Manhattan plot takes: numbered pictures of <see cref="LogitStatsPlots.SetsPerManhattan"/>
    /// sets each; the histograms and the scatter always.</summary>
    [Fact]
    public void Many_sets_are_drawn_in_numbered_manhattan_plots()
    {
        var moments = Enumerable.Range(0, 20).Select(i => new LogitWeightMoments(i, 0, 1, i / 10.0 - 1, 3 + i)).ToList();
        var sets = Enumerable.Range(0, 12).Select(k => $"set{k}").ToList();
        var scores = new double[12, 20];
        for (int k = 0; k < 12; k++) for (int j = 0; j < 20; j++) scores[k, j] = (k + j) / 40.0;
        var written = LogitStatsPlots.Save(_dir, "blocks.0.hook_resid_pre", moments, sets, Enumerable.Range(0, 20).ToList(), scores);
        Assert.Equal([LogitStatsPlots.SkewnessFile, LogitStatsPlots.KurtosisFile, LogitStatsPlots.ScatterFile, "enrichment_manhattan_1.png", "enrichment_manhattan_2.png"],
            written.Select(Path.GetFileName));
        Assert.All(written, f => Assert.True(SkiaSharp.SKBitmap.Decode(f) is { Width: > 0 }));
    }
}
