using SaeSharp.IO;
using SaeSharp.Plots;

namespace SaeSharp.Analysis;

/// <summary>
/// The pictures of SAELens's logit-lens tutorial (<c>logits_lens_with_features.ipynb</c>) from <c>sae logit-stats</c>'s
/// numbers: histograms of the skewness and of log10 kurtosis of each feature's logit weights (cell 10), the skewness vs
/// kurtosis scatter on a log kurtosis axis (cell 11), and the Manhattan plot of token set enrichment
/// (<c>manhattan_plot_enrichment_scores</c>: x the feature index, y −ln(1 − score), a colour per token set, the
/// <see cref="LabelledPerSet"/> highest points above y = 1 of each set labelled with their feature), up to
/// <see cref="SetsPerManhattan"/> sets a picture (the tutorial draws 3 to 5 at a time).
/// </summary>
public static class LogitStatsPlots
{
    /// <summary>File names written by <see cref="Save"/>.</summary>
    public const string SkewnessFile = "skewness.png", KurtosisFile = "log_kurtosis.png", ScatterFile = "skewness_kurtosis.png",
        ManhattanFile = "enrichment_manhattan.png";
    /// <summary>Bars of the two histograms.</summary>
    public const int Bins = 100;
    /// <summary>Token sets per Manhattan plot; more sets are drawn in several, numbered from 1.</summary>
    public const int SetsPerManhattan = 10;
    /// <summary>Points labelled per token set in the Manhattan plot (the tutorial's top_n).</summary>
    public const int LabelledPerSet = 3;
    /// <summary>Size of the histograms in pixels (the tutorial's 800×300, a little taller for the axis titles).</summary>
    public const int HistogramWidth = 800, HistogramHeight = 340;
    /// <summary>Size of the scatter and the Manhattan plot in pixels.</summary>
    public const int ScatterWidth = 800, ScatterHeight = 560, ManhattanWidth = 1200, ManhattanHeight = 560;
    private const string Blue = "#1f77b4";

    /// <summary>Token set colours, in order (Tableau's 10), one per set of a Manhattan plot.</summary>
    private static readonly string[] SetColors =
        ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22", "#17becf"];

    /// <summary>The Manhattan plot's points: one group per set k, x the features' indices, y −ln(1 − scores[k, j]) of
    /// feature <paramref name="features"/>[j], its <see cref="LabelledPerSet"/> highest y above 1 labelled; set k in colour
    /// k mod 10.</summary>
    public static IReadOnlyList<ScatterGroup> ManhattanGroups(IReadOnlyList<string> sets, IReadOnlyList<int> features, double[,] scores)
    {
        ArgumentNullException.ThrowIfNull(sets);
        ArgumentNullException.ThrowIfNull(features);
        ArgumentNullException.ThrowIfNull(scores);
        if (scores.GetLength(0) != sets.Count || scores.GetLength(1) != features.Count)
            throw new ArgumentException($"scores [{scores.GetLength(0)}, {scores.GetLength(1)}] for {sets.Count} sets and {features.Count} features");
        return sets.Select((name, k) =>
        {
            var y = Enumerable.Range(0, features.Count).Select(j => LogitWeightStatistics.NegLogOneMinus(scores[k, j])).ToArray();
            var labelled = Enumerable.Range(0, y.Length).Where(j => y[j] > 1 && double.IsFinite(y[j])).OrderByDescending(j => y[j]).Take(LabelledPerSet).ToHashSet();
            return new ScatterGroup(name, SetColors[k % SetColors.Length], features.Select(f => (double)f).ToArray(), y)
            {
                PointLabels = Enumerable.Range(0, y.Length).Select(j => labelled.Contains(j) ? features[j].ToString(System.Globalization.CultureInfo.InvariantCulture) : null).ToArray(),
            };
        }).ToList();
    }

    /// <summary>Writes the skewness and log kurtosis histograms, the skewness–kurtosis scatter and, with token sets, the
    /// Manhattan plot into <paramref name="dir"/> (created); <paramref name="site"/> names the SAE's hook in the titles.
    /// Returns the files written.</summary>
    public static IReadOnlyList<string> Save(string dir, string site, IReadOnlyList<LogitWeightMoments> moments,
        IReadOnlyList<string> sets, IReadOnlyList<int> enrichedFeatures, double[,] scores)
    {
        ArgumentNullException.ThrowIfNull(moments);
        Directory.CreateDirectory(dir);
        var written = new List<string>();
        void Write(string name, byte[] png)
        {
            string path = Path.Combine(dir, name);
            AtomicFile.Write(path, s => s.Write(png));
            written.Add(path);
        }
        string n = $"{moments.Count(m => double.IsFinite(m.Skewness)):N0} features";
        Write(SkewnessFile, HistogramPlot.Render(HistogramPlot.EqualBins(moments.Select(m => m.Skewness), Bins, Blue),
            $"Skewness of the logit weight distributions ({n}, {site})", "skewness", "features", width: HistogramWidth, height: HistogramHeight));
        Write(KurtosisFile, HistogramPlot.Render(HistogramPlot.EqualBins(moments.Select(m => Math.Log10(m.Kurtosis)), Bins, Blue),
            $"Kurtosis of the logit weight distributions ({n}, {site})", "log10(kurtosis)", "features", width: HistogramWidth, height: HistogramHeight));
        Write(ScatterFile, ScatterPlot.Render([new ScatterGroup("", Blue, moments.Select(m => m.Skewness).ToArray(), moments.Select(m => m.Kurtosis).ToArray())],
            $"Skewness vs kurtosis of the logit weight distributions ({site})", "skewness", "kurtosis (log scale)",
            width: ScatterWidth, height: ScatterHeight, markerSize: 3, logY: true));
        var groups = sets.Count == 0 ? [] : ManhattanGroups(sets, enrichedFeatures, scores);
        int pictures = (groups.Count + SetsPerManhattan - 1) / SetsPerManhattan;
        for (int p = 0; p < pictures; p++)
        {
            var part = groups.Skip(p * SetsPerManhattan).Take(SetsPerManhattan).Select((g, i) => g with { Color = SetColors[i] }).ToList();
            Write(pictures == 1 ? ManhattanFile : ManhattanFile.Replace(".png", $"_{p + 1}.png", StringComparison.Ordinal), ScatterPlot.Render(part,
                $"Token set enrichment of the {enrichedFeatures.Count:N0} most skewed features ({site})", "feature", "-ln(1 - enrichment score)",
                width: ManhattanWidth, height: ManhattanHeight, markerSize: 4, legendRight: true));
        }
        return written;
    }
}
