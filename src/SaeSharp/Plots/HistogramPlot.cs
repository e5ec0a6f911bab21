using SaeSharp.IO;
using ScottPlot;

namespace SaeSharp.Plots;

/// <summary>A bar of a <see cref="HistogramPlot"/>: [<paramref name="Lower"/>, <paramref name="Upper"/>) with a count and a colour (#rrggbb).</summary>
public sealed record HistogramBar(double Lower, double Upper, long Count, string Color, string? Label = null);

/// <summary>
/// Histogram pictures (PNG) drawn with ScottPlot 5: title, axis labels, readable fonts (DejaVu Sans when installed, the
/// font Debian's fonts-dejavu-core provides), optional log10 y axis with decade labels.
/// </summary>
public static class HistogramPlot
{
    /// <summary>log10(½): where bars start on a log axis.</summary>
    private static readonly double LogBase = Math.Log10(0.5);

    /// <summary>Renders the bars as PNG bytes. With <paramref name="logY"/> the y axis is log10(count), labelled with counts
    /// at each decade, and bars start at a count of ½ so that a count of 1 stays visible. <paramref name="legend"/> names
    /// what the bar colours mean (upper right).</summary>
    public static byte[] Render(IReadOnlyList<HistogramBar> bars, string title, string xLabel, string yLabel, bool logY = false,
        int width = 640, int height = 360, IReadOnlyList<(string Label, string Color)>? legend = null)
    {
        ArgumentNullException.ThrowIfNull(bars);
        var plt = new Plot();
        PlotFonts.Apply(plt);
        var list = bars.Where(b => b.Count > 0).Select(b => new Bar
        {
            Position = (b.Lower + b.Upper) / 2, Size = b.Upper - b.Lower, Value = logY ? Math.Log10(b.Count) : b.Count,
            ValueBase = logY ? LogBase : 0,
            FillColor = Color.FromHex(b.Color), LineWidth = 0,
        }).ToList();
        if (list.Count > 0) plt.Add.Bars(list);
        foreach (var b in bars.Where(b => b.Label is not null))
        {
            var t = plt.Add.Text(b.Label!, (b.Lower + b.Upper) / 2, logY ? Math.Log10(Math.Max(1, b.Count)) : b.Count);
            t.LabelAlignment = Alignment.LowerCenter;
            t.LabelFontSize = 12;
            t.LabelFontColor = Color.FromHex("#444444");
            t.OffsetY = -2;
        }
        if (legend is { Count: > 0 })
        {
            foreach (var (label, color) in legend)
                plt.Legend.ManualItems.Add(new LegendItem { LabelText = label, FillColor = Color.FromHex(color), LineWidth = 0 });
            plt.Legend.Alignment = Alignment.UpperRight;
            plt.ShowLegend();
        }
        plt.Title(title);
        plt.XLabel(xLabel);
        plt.YLabel(yLabel);
        if (logY) plt.Axes.Left.TickGenerator = DecadeTicks();
        double xmin = bars.Count == 0 ? 0 : bars.Min(b => b.Lower), xmax = bars.Count == 0 ? 1 : bars.Max(b => b.Upper);
        double ymax = list.Count == 0 ? 1 : list.Max(b => b.Value);
        double pad = (xmax - xmin) * 0.02;
        double bottom = logY ? LogBase : 0, top = logY ? Math.Max(1, ymax + 0.15) : Math.Max(1, ymax * 1.08);
        // With a legend in the upper corner, the tallest bar stays below 60 % of the height, so the legend covers no bar.
        if (legend is { Count: > 0 }) top = Math.Max(top, bottom + (ymax - bottom) / 0.6);
        plt.Axes.SetLimits(xmin - pad, xmax + pad, bottom, top);
        return plt.GetImageBytes(width, height, ImageFormat.Png);
    }

    /// <summary>Ticks of a log10 axis: at whole decades, labelled with the number (10, 100, 1,000).</summary>
    private static ScottPlot.TickGenerators.NumericAutomatic DecadeTicks() => new()
    {
        IntegerTicksOnly = true,
        LabelFormatter = y => Math.Pow(10, y).ToString("N0", System.Globalization.CultureInfo.InvariantCulture),
    };

    /// <summary>Bars of <paramref name="bins"/> equal widths from the smallest to the largest finite value (the last bin
    /// holds the largest), each counting its values, in <paramref name="color"/>; non-finite values are left out. All
    /// values equal: one bar of width 1 centred on them; none: no bar.</summary>
    public static IReadOnlyList<HistogramBar> EqualBins(IEnumerable<double> values, int bins, string color)
    {
        ArgumentNullException.ThrowIfNull(values);
        ArgumentOutOfRangeException.ThrowIfLessThan(bins, 1);
        var finite = values.Where(double.IsFinite).ToList();
        if (finite.Count == 0) return [];
        double lo = finite.Min(), hi = finite.Max();
        if (lo == hi) return [new HistogramBar(lo - 0.5, lo + 0.5, finite.Count, color)];
        double w = (hi - lo) / bins;
        var counts = new long[bins];
        foreach (var v in finite) counts[Math.Min(bins - 1, (int)((v - lo) / w))]++;
        return counts.Select((c, i) => new HistogramBar(lo + i * w, i == bins - 1 ? hi : lo + (i + 1) * w, c, color)).ToList();
    }

    /// <summary>Writes <see cref="Render"/>'s PNG to <paramref name="path"/> atomically.</summary>
    public static void Save(string path, IReadOnlyList<HistogramBar> bars, string title, string xLabel, string yLabel, bool logY = false,
        int width = 640, int height = 360)
    {
        var bytes = Render(bars, title, xLabel, yLabel, logY, width, height);
        AtomicFile.Write(path, s => s.Write(bytes));
    }
}
