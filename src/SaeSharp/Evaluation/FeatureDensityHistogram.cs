using SaeSharp.Plots;
using SaeSharp.IO;

namespace SaeSharp.Evaluation;

/// <summary>
/// Histogram of log10 feature firing frequency (SAELens's "log feature density" plot) as a PNG drawn with ScottPlot
/// (<see cref="HistogramPlot"/>): blue bars of live features in bins of 0.1 decade from log10(1/N) (rounded down) to 0,
/// and a red bar labelled "dead" left of them counting the features that never fired.
/// </summary>
public static class FeatureDensityHistogram
{
    /// <summary>Width of the PNG in pixels.</summary>
    public const int Width = 640;
    /// <summary>Height of the PNG in pixels.</summary>
    public const int Height = 360;
    /// <summary>Bins per decade of frequency.</summary>
    public const int BinsPerDecade = 10;
    /// <summary>Colours of live and dead bars.</summary>
    public const string LiveColor = "#1f77b4", DeadColor = "#d62728";

    /// <summary>The histogram's counts: dead features and live features per bin, with the lowest decade shown.</summary>
    public sealed record Counts(long Dead, long[] Bins, int LowestDecade);

    /// <summary>Bins <paramref name="frequency"/> (per-feature firing fractions over <paramref name="rows"/> rows).
    /// Bin i covers log10 f in [lowest + i/10, lowest + (i+1)/10); f = 1 falls in the last bin.</summary>
    public static Counts Bin(IReadOnlyList<double> frequency, long rows)
    {
        if (rows <= 0) throw new ArgumentOutOfRangeException(nameof(rows), rows, "must be positive");
        int lowest = Math.Min(-1, (int)Math.Floor(Math.Log10(1.0 / rows) + 1e-9));
        var bins = new long[-lowest * BinsPerDecade];
        long dead = 0;
        foreach (var f in frequency)
        {
            if (!(f > 0)) { dead++; continue; }
            int i = (int)Math.Floor((Math.Log10(f) - lowest) * BinsPerDecade + 1e-9);
            bins[Math.Clamp(i, 0, bins.Length - 1)]++;
        }
        return new Counts(dead, bins, lowest);
    }

    /// <summary>The bars drawn: the dead bar (0.6 decade wide, left of the lowest decade) and one bar per live bin.</summary>
    public static IReadOnlyList<HistogramBar> Bars(Counts counts)
    {
        ArgumentNullException.ThrowIfNull(counts);
        double w = 1.0 / BinsPerDecade;
        var bars = new List<HistogramBar> { new(counts.LowestDecade - 0.8, counts.LowestDecade - 0.2, counts.Dead, DeadColor, counts.Dead > 0 ? "dead" : null) };
        for (int i = 0; i < counts.Bins.Length; i++)
            bars.Add(new HistogramBar(counts.LowestDecade + i * w, counts.LowestDecade + (i + 1) * w, counts.Bins[i], LiveColor));
        return bars;
    }

    /// <summary>Renders the histogram as PNG bytes.</summary>
    public static byte[] Render(IReadOnlyList<double> frequency, long rows)
    {
        var counts = Bin(frequency, rows);
        return HistogramPlot.Render(Bars(counts), $"Feature density over {rows:N0} rows ({counts.Dead:N0} dead)",
            "log10(firing frequency)", "features", logY: false, Width, Height);
    }

    /// <summary>Writes the histogram PNG to <paramref name="path"/> (atomically).</summary>
    public static void Save(string path, IReadOnlyList<double> frequency, long rows)
    {
        var bytes = Render(frequency, rows);
        AtomicFile.Write(path, s => s.Write(bytes));
    }
}
