using ScottPlot;

namespace SaeSharp.Plots;

/// <summary>One group of points of a <see cref="ScatterPlot"/>, drawn in one colour (#rrggbb) and named in the legend.</summary>
public sealed record ScatterGroup(string Label, string Color, IReadOnlyList<double> X, IReadOnlyList<double> Y)
{
    /// <summary>Text written above some points (null, or a null element: none), one element per point.</summary>
    public IReadOnlyList<string?>? PointLabels { get; init; }
}

/// <summary>Scatter pictures (PNG) drawn with ScottPlot 5, in the fonts of <see cref="HistogramPlot"/>: markers only, one
/// colour per group, a legend (inside, upper left; or right of the data for many groups), optional fixed axis limits
/// (points outside them are not drawn), optional log10 y axis labelled as <see cref="LinePanelsPlot"/>'s.</summary>
public static class ScatterPlot
{
    /// <summary>Renders the groups as PNG bytes; <paramref name="limits"/> (xmin, xmax, ymin, ymax) fixes the axes. With
    /// <paramref name="logY"/> y is drawn as log10 y (y ≤ 0 not drawn; limits in log10 units). <paramref name="legendRight"/>
    /// puts the legend right of the data; a single group named "" has no legend.</summary>
    public static byte[] Render(IReadOnlyList<ScatterGroup> groups, string title, string xLabel, string yLabel,
        (double XMin, double XMax, double YMin, double YMax)? limits = null, int width = 720, int height = 600,
        float markerSize = 6, bool logY = false, bool legendRight = false)
    {
        ArgumentNullException.ThrowIfNull(groups);
        var plt = new Plot();
        PlotFonts.Apply(plt);
        foreach (var g in groups)
        {
            if (g.X.Count != g.Y.Count) throw new ArgumentException($"scatter group {g.Label}: {g.X.Count} x values, {g.Y.Count} y values");
            double Y(int i) => logY ? Math.Log10(g.Y[i]) : g.Y[i];
            var keep = Enumerable.Range(0, g.X.Count).Where(i => double.IsFinite(g.X[i]) && double.IsFinite(Y(i))).ToList();
            if (keep.Count == 0) continue;
            var s = plt.Add.ScatterPoints(keep.Select(i => g.X[i]).ToArray(), keep.Select(Y).ToArray(), Color.FromHex(g.Color));
            s.MarkerSize = markerSize;
            s.LegendText = g.Label;
            foreach (var i in keep.Where(i => g.PointLabels?[i] is not null))
            {
                var t = plt.Add.Text(g.PointLabels![i]!, g.X[i], Y(i));
                t.LabelAlignment = Alignment.LowerCenter;
                t.LabelFontSize = 11;
                t.LabelFontColor = Color.FromHex("#333333");
                t.OffsetY = -3;
            }
        }
        if (groups.Any(g => g.X.Count > 0) && !(groups.Count == 1 && groups[0].Label.Length == 0))
        {
            if (legendRight) plt.ShowLegend(Edge.Right);
            else
            {
                plt.Legend.Alignment = Alignment.UpperLeft;
                plt.ShowLegend();
            }
        }
        if (logY)
        {
            var ys = groups.SelectMany(g => g.Y).Where(v => v > 0 && double.IsFinite(v)).Select(Math.Log10).DefaultIfEmpty(0).ToList();
            double pad = Math.Max(0.05, (ys.Max() - ys.Min()) * 0.05);
            plt.Axes.Left.TickGenerator = LinePanelsPlot.LogTicks(limits?.YMin ?? ys.Min() - pad, limits?.YMax ?? ys.Max() + pad);
        }
        plt.Title(title);
        plt.XLabel(xLabel);
        plt.YLabel(yLabel);
        if (limits is { } l) plt.Axes.SetLimits(l.XMin, l.XMax, l.YMin, l.YMax);
        return plt.GetImageBytes(width, height, ImageFormat.Png);
    }
}
