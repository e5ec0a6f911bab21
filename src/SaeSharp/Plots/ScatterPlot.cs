using ScottPlot;
using SkiaSharp;

namespace SaeSharp.Plots;

/// <summary>One group of points of a <see cref="ScatterPlot"/>, drawn in one colour (#rrggbb) and named in the legend.</summary>
public sealed record ScatterGroup(string Label, string Color, IReadOnlyList<double> X, IReadOnlyList<double> Y)
{
    /// <summary>Text written above some points (null, or a null element: none), one element per point.</summary>
    public IReadOnlyList<string?>? PointLabels { get; init; }
}

/// <summary>One panel of <see cref="ScatterPlot.RenderPanels"/>: a title, its groups and optional fixed axis limits.</summary>
public sealed record ScatterPanel(string Title, IReadOnlyList<ScatterGroup> Groups)
{
    /// <summary>(xmin, xmax, ymin, ymax) of the panel; null: the data's.</summary>
    public (double XMin, double XMax, double YMin, double YMax)? Limits { get; init; }
    /// <summary>Grey lines through x = 0 and y = 0 (the axes of the complex plane).</summary>
    public bool ZeroLines { get; init; }
    /// <summary>One unit is as long on x as on y (the limits widened on the longer side of the panel).</summary>
    public bool SquareUnits { get; init; }
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
        AddGroups(plt, groups, markerSize, logY);
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

    private const int Margin = 12;
    private const float TitleSize = 20, LegendSize = 15, LegendRowHeight = 24;

    /// <summary>
    /// A grid of scatter panels (PNG) of <paramref name="width"/> × <paramref name="height"/> pixels, <paramref name="columns"/>
    /// a row: a title line, one legend for the whole picture above the panels (a group's colour is the same in every panel,
    /// named once; left out when every group is named ""), then each panel with its own axes.
    /// </summary>
    public static byte[] RenderPanels(IReadOnlyList<ScatterPanel> panels, string title, string xLabel, string yLabel,
        int width, int height, int columns, float markerSize = 6)
    {
        ArgumentNullException.ThrowIfNull(panels);
        if (panels.Count == 0) throw new ArgumentException("no panels to draw", nameof(panels));
        columns = Math.Clamp(columns, 1, panels.Count);
        int rows = (panels.Count + columns - 1) / columns;
        var legend = panels.SelectMany(p => p.Groups).Where(g => g.Label.Length > 0).GroupBy(g => g.Label).Select(g => (g.Key, g.First().Color)).ToList();
        using var titleFont = new SKFont(PlotFonts.Typeface(bold: true), TitleSize);
        using var legendFont = new SKFont(PlotFonts.Typeface(), LegendSize);
        // The legend's entries left to right, wrapped to the picture's width.
        var placed = new List<(string Label, string Color, float X, int Row)>();
        float x = Margin, room = width - Margin;
        int legendRows = legend.Count > 0 ? 1 : 0;
        foreach (var (label, color) in legend)
        {
            float w = 18 + legendFont.MeasureText(label) + 16;
            if (x + w > room && x > Margin) { x = Margin; legendRows++; }
            placed.Add((label, color, x, legendRows - 1));
            x += w;
        }
        float header = Margin + TitleSize + 8 + legendRows * LegendRowHeight;
        if (width < 200 || height < header + 150 * rows)
            throw new SaeSharpException($"a picture of {width}×{height} pixels is too small for {panels.Count} panels in {rows} rows (at least 200 wide and {Math.Ceiling(header) + 150 * rows} high)");
        using var surface = SKSurface.Create(new SKImageInfo(width, height, SKColorType.Rgba8888, SKAlphaType.Premul))
                            ?? throw new InvalidOperationException($"SkiaSharp could not make a {width}×{height} surface");
        var canvas = surface.Canvas;
        canvas.Clear(SKColors.White);
        using (var ink = new SKPaint { Color = SKColors.Black, IsAntialias = true })
        {
            canvas.DrawText(title, Margin, Margin + TitleSize, SKTextAlign.Left, titleFont, ink);
            foreach (var (label, color, lx, row) in placed)
            {
                float mid = Margin + TitleSize + 8 + row * LegendRowHeight + LegendRowHeight / 2f;
                using var dot = new SKPaint { Color = SKColor.Parse(color), IsAntialias = true, Style = SKPaintStyle.Fill };
                canvas.DrawCircle(lx + 6, mid, 5, dot);
                canvas.DrawText(label, lx + 18, mid + LegendSize * 0.35f, SKTextAlign.Left, legendFont, ink);
            }
        }
        float panelW = (width - Margin) / (float)columns, panelH = (height - header - Margin / 2f) / rows;
        for (int i = 0; i < panels.Count; i++)
        {
            var p = panels[i];
            var plt = new Plot();
            PlotFonts.Apply(plt);
            if (p.ZeroLines)
            {
                plt.Add.HorizontalLine(0, 1, Color.FromHex("#999999"));
                plt.Add.VerticalLine(0, 1, Color.FromHex("#999999"));
            }
            AddGroups(plt, p.Groups, markerSize, logY: false);
            plt.Title(p.Title, size: 16);
            plt.XLabel(xLabel, size: 14);
            plt.YLabel(yLabel, size: 14);
            if (p.Limits is { } l) plt.Axes.SetLimits(l.XMin, l.XMax, l.YMin, l.YMax);
            if (p.SquareUnits) plt.Axes.SquareUnits();
            plt.HideLegend();                                                   // the picture's legend names the groups
            float left = MathF.Round(Margin / 2f + (i % columns) * panelW), top = MathF.Round(header + (i / columns) * panelH);
            float right = MathF.Round(Margin / 2f + (i % columns + 1) * panelW), bottom = MathF.Round(header + (i / columns + 1) * panelH);
            // ScottPlot clears the canvas before drawing a plot: the clip keeps that to the panel's own rectangle.
            canvas.Save();
            canvas.ClipRect(new SKRect(left, top, right, bottom));
            plt.Render(canvas, new PixelRect(new Pixel(left, top), new PixelSize(right - left, bottom - top)));
            canvas.Restore();
        }
        using var image = surface.Snapshot();
        using var data = image.Encode(SKEncodedImageFormat.Png, 100);
        return data.ToArray();
    }

    private static void AddGroups(Plot plt, IReadOnlyList<ScatterGroup> groups, float markerSize, bool logY)
    {
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
    }
}
