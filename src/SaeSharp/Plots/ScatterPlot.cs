using ScottPlot;

namespace SaeSharp.Plots;

/// <summary>One group of points of a <see cref="ScatterPlot"/>, drawn in one colour (#rrggbb) and named in the legend.</summary>
public sealed record ScatterGroup(string Label, string Color, IReadOnlyList<double> X, IReadOnlyList<double> Y);

/// <summary>Scatter pictures (PNG) drawn with ScottPlot 5, in the fonts of <see cref="HistogramPlot"/>: markers only, one
/// colour per group, a legend, optional fixed axis limits (points outside them are not drawn).</summary>
public static class ScatterPlot
{
    /// <summary>Renders the groups as PNG bytes; <paramref name="limits"/> (xmin, xmax, ymin, ymax) fixes the axes.</summary>
    public static byte[] Render(IReadOnlyList<ScatterGroup> groups, string title, string xLabel, string yLabel,
        (double XMin, double XMax, double YMin, double YMax)? limits = null, int width = 720, int height = 600)
    {
        ArgumentNullException.ThrowIfNull(groups);
        var plt = new Plot();
        PlotFonts.Apply(plt);
        foreach (var g in groups)
        {
            if (g.X.Count != g.Y.Count) throw new ArgumentException($"scatter group {g.Label}: {g.X.Count} x values, {g.Y.Count} y values");
            var keep = Enumerable.Range(0, g.X.Count).Where(i => double.IsFinite(g.X[i]) && double.IsFinite(g.Y[i])).ToList();
            if (keep.Count == 0) continue;
            var s = plt.Add.ScatterPoints(keep.Select(i => g.X[i]).ToArray(), keep.Select(i => g.Y[i]).ToArray(), Color.FromHex(g.Color));
            s.MarkerSize = 6;
            s.LegendText = g.Label;
        }
        if (groups.Any(g => g.X.Count > 0))
        {
            plt.Legend.Alignment = Alignment.UpperLeft;
            plt.ShowLegend();
        }
        plt.Title(title);
        plt.XLabel(xLabel);
        plt.YLabel(yLabel);
        if (limits is { } l) plt.Axes.SetLimits(l.XMin, l.XMax, l.YMin, l.YMax);
        return plt.GetImageBytes(width, height, ImageFormat.Png);
    }
}
