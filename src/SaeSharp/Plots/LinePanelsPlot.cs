using System.Globalization;
using SaeSharp.IO;
using ScottPlot;
using ScottPlot.TickGenerators;
using SkiaSharp;

namespace SaeSharp.Plots;

/// <summary>One line of a <see cref="LinePanel"/>: points (x, y) in order of x, drawn in the colour of its name (the same
/// name has the same colour in every panel). Points with a non-finite x or y are not drawn, nor, on a log axis, y ≤ 0.</summary>
public sealed record LineSeries(string Name, IReadOnlyList<double> X, IReadOnlyList<double> Y)
{
    /// <summary>A line common to all the named lines (a run's shared throughput): drawn in dark grey, not in the legend.</summary>
    public bool Shared { get; init; }
}

/// <summary>A vertical dashed line across a panel at <see cref="X"/>, in the colour of the line called <see cref="Name"/>
/// (an event of that line's run, such as resampling).</summary>
public sealed record LineMarker(string Name, double X);

/// <summary>One panel of a <see cref="LinePanelsPlot"/>: a title and its lines, on a linear or log10 y axis, with optional
/// fixed y limits (a fraction from 0 to 1). Without limits the y axis spans the data.</summary>
public sealed record LinePanel(string Title, IReadOnlyList<LineSeries> Series)
{
    /// <summary>Vertical dashed lines drawn behind the data (a marker outside the x range of the lines is not drawn).</summary>
    public IReadOnlyList<LineMarker> Markers { get; init; } = [];
    /// <summary>A log10 y axis, labelled at decades (and at 2× and 5× when the data spans less than two).</summary>
    public bool LogY { get; init; }
    /// <summary>The bottom of the y axis; null: the smallest value drawn.</summary>
    public double? YMin { get; init; }
    /// <summary>The top of the y axis; null: the largest value drawn.</summary>
    public double? YMax { get; init; }
    /// <summary>The y tick labels of a linear axis (e.g. <see cref="LinePanelsPlot.FormatCount"/> for a rate); null:
    /// numbers with as many decimals as the span needs.</summary>
    public Func<double, string>? YFormat { get; init; }
}

/// <summary>
/// A grid of line panels over one x axis (PNG), drawn with ScottPlot 5: a title line, one legend for the whole picture
/// above the panels (so that it covers no line; left out when there is one line name), and every panel on the same x
/// range with the x axis labelled. Lines longer than <see cref="MaxPointsPerLine"/> points are drawn as the means of as
/// many stretches with a band from each stretch's smallest to its largest value (<see cref="Thin"/>), from the first to
/// the last point as logged.
/// </summary>
public static class LinePanelsPlot
{
    /// <summary>Points drawn per line at most, beside the first and the last (about one per pixel column of a panel of
    /// the default width).</summary>
    public const int MaxPointsPerLine = 500;
    /// <summary>Panel height in pixels when the picture's height is left to the plot.</summary>
    public const int PanelHeight = 320;
    private const int Margin = 12;
    private const float TitleSize = 20, LegendSize = 16, LegendRowHeight = 26, PanelTitleSize = 17;

    /// <summary>Lines of up to this many points are drawn with a marker at each point (one logged step is a dot).</summary>
    private const int MarkerPoints = 30;

    /// <summary>The colour of a <see cref="LineSeries.Shared"/> line.</summary>
    private static readonly Color SharedColor = new(0x44, 0x44, 0x44);

    /// <summary>The PNG: <paramref name="columns"/> panels a row, width <paramref name="width"/>, height
    /// <paramref name="height"/> (null: <see cref="PanelHeight"/> a row plus the title and legend).
    /// <paramref name="xFormat"/> writes the x tick labels (null: numbers with k, M, B suffixes).</summary>
    public static byte[] Render(IReadOnlyList<LinePanel> panels, string title, string xLabel, int width = 1500, int? height = null,
        int columns = 3, Func<double, string>? xFormat = null)
    {
        ArgumentNullException.ThrowIfNull(panels);
        if (panels.Count == 0) throw new ArgumentException("no panels to draw", nameof(panels));
        columns = Math.Clamp(columns, 1, panels.Count);
        int rows = (panels.Count + columns - 1) / columns;
        var names = panels.SelectMany(p => p.Series.Where(s => !s.Shared).Select(s => s.Name).Concat(p.Markers.Select(m => m.Name))).Distinct().ToList();
        var palette = new ScottPlot.Palettes.Category10();
        var colors = names.Select((n, i) => (n, palette.GetColor(i))).ToDictionary(p => p.n, p => p.Item2);

        using var titleFont = new SKFont(PlotFonts.Typeface(bold: true), TitleSize);
        using var legendFont = new SKFont(PlotFonts.Typeface(), LegendSize);
        var legendRows = names.Count > 1 ? LegendLayout(names, legendFont, width - 2 * Margin) : [];
        float header = Margin + TitleSize + 8 + legendRows.Count * LegendRowHeight;
        int h = height ?? (int)Math.Ceiling(header + rows * PanelHeight + Margin / 2);
        if (width < 200 || h < header + 100) throw new SaeSharpException($"a picture of {width}×{h} pixels is too small for {panels.Count} panels (at least 200 wide and {Math.Ceiling(header) + 100} high)");

        var (xMin, xMax) = XRange(panels);
        using var surface = SKSurface.Create(new SKImageInfo(width, h, SKColorType.Rgba8888, SKAlphaType.Premul))
                            ?? throw new InvalidOperationException($"SkiaSharp could not make a {width}×{h} surface");
        var canvas = surface.Canvas;
        canvas.Clear(SKColors.White);
        using (var ink = new SKPaint { Color = SKColors.Black, IsAntialias = true })
            canvas.DrawText(title, Margin, Margin + TitleSize, SKTextAlign.Left, titleFont, ink);
        DrawLegend(canvas, legendRows, colors, legendFont, Margin + TitleSize + 8);

        float panelW = (width - Margin) / (float)columns, panelH = (h - header - Margin / 2f) / rows;
        for (int i = 0; i < panels.Count; i++)
        {
            var plot = PanelPlot(panels[i], colors, xLabel, xMin, xMax, xFormat ?? FormatCount, panelW);
            float left = MathF.Round(Margin / 2f + (i % columns) * panelW), top = MathF.Round(header + (i / columns) * panelH);
            float right = MathF.Round(Margin / 2f + (i % columns + 1) * panelW), bottom = MathF.Round(header + (i / columns + 1) * panelH);
            // ScottPlot clears the canvas before drawing a plot: the clip keeps that to the panel's own rectangle.
            canvas.Save();
            canvas.ClipRect(new SKRect(left, top, right, bottom));
            plot.Render(canvas, new PixelRect(new Pixel(left, top), new PixelSize(right - left, bottom - top)));
            canvas.Restore();
        }
        using var image = surface.Snapshot();
        using var data = image.Encode(SKEncodedImageFormat.Png, 100);
        return data.ToArray();
    }

    /// <summary>Writes <see cref="Render"/>'s PNG to <paramref name="path"/> atomically.</summary>
    public static void Save(string path, IReadOnlyList<LinePanel> panels, string title, string xLabel, int width = 1500, int? height = null,
        int columns = 3, Func<double, string>? xFormat = null)
    {
        var bytes = Render(panels, title, xLabel, width, height, columns, xFormat);
        AtomicFile.Write(path, s => s.Write(bytes));
    }

    /// <summary>A line as drawn: points (<see cref="X"/>, <see cref="Y"/>) and, where the line was thinned, the smallest
    /// and largest value each drawn point stands for (<see cref="Low"/>, <see cref="High"/>; null when every point is
    /// drawn).</summary>
    public sealed record ThinLine(double[] X, double[] Y, double[]? Low, double[]? High);

    /// <summary>The points of a line as drawn: finite x and y only (and y &gt; 0 with <paramref name="positiveOnly"/>). Up to
    /// <paramref name="maxPoints"/> points are drawn as they are; a longer line is cut into <paramref name="maxPoints"/>
    /// stretches of equal count, each drawn as its mean point with its smallest and largest value as a band (spikes
    /// stay visible, noise does not fill the panel), and the first and the last point are added as they are, so the
    /// line ends at the last logged value.</summary>
    public static ThinLine Thin(IReadOnlyList<double> x, IReadOnlyList<double> y, int maxPoints = MaxPointsPerLine, bool positiveOnly = false)
    {
        if (x.Count != y.Count) throw new ArgumentException($"a line of {x.Count} x values and {y.Count} y values");
        var idx = new List<int>(x.Count);
        for (int i = 0; i < x.Count; i++)
            if (double.IsFinite(x[i]) && double.IsFinite(y[i]) && (!positiveOnly || y[i] > 0)) idx.Add(i);
        if (idx.Count <= Math.Max(2, maxPoints))
            return new ThinLine(idx.Select(i => x[i]).ToArray(), idx.Select(i => y[i]).ToArray(), null, null);
        int stretches = Math.Max(1, maxPoints);
        var (xs, ys, lows, highs) = (new List<double>(stretches + 2), new List<double>(stretches + 2), new List<double>(stretches + 2), new List<double>(stretches + 2));
        void Add(double px, double py, double lo, double hi) { xs.Add(px); ys.Add(py); lows.Add(lo); highs.Add(hi); }
        Add(x[idx[0]], y[idx[0]], y[idx[0]], y[idx[0]]);
        for (int b = 0; b < stretches; b++)
        {
            int lo = (int)((long)b * idx.Count / stretches), hi = (int)((long)(b + 1) * idx.Count / stretches);
            double sx = 0, sy = 0, min = double.PositiveInfinity, max = double.NegativeInfinity;
            for (int j = lo; j < hi; j++)
            {
                double v = y[idx[j]];
                sx += x[idx[j]];
                // On a log axis the mean is the geometric one (the mean of log10 y), as the eye reads the line there.
                sy += positiveOnly ? Math.Log10(v) : v;
                min = Math.Min(min, v);
                max = Math.Max(max, v);
            }
            int n = hi - lo;
            Add(sx / n, positiveOnly ? Math.Pow(10, sy / n) : sy / n, min, max);
        }
        Add(x[idx[^1]], y[idx[^1]], y[idx[^1]], y[idx[^1]]);
        return new ThinLine(xs.ToArray(), ys.ToArray(), lows.ToArray(), highs.ToArray());
    }

    private static Plot PanelPlot(LinePanel panel, Dictionary<string, Color> colors, string xLabel, double xMin, double xMax, Func<double, string> xFormat,
        float panelWidth)
    {
        var order = colors.Keys.Select((n, i) => (n, i)).ToDictionary(p => p.n, p => p.i);
        var plt = new Plot();
        PlotFonts.Apply(plt);
        // A title wider than its panel (a long loss name in a small picture) is set smaller, not cut: it is centred over the
        // data area, which the y tick labels push right, so it has the panel less about twice their width.
        using (var measure = new SKFont(PlotFonts.Typeface(), PanelTitleSize))
            plt.Title(panel.Title, size: Math.Max(9, Math.Min(PanelTitleSize, PanelTitleSize * (panelWidth - 100) / measure.MeasureText(panel.Title))));
        plt.XLabel(xLabel, size: 15);
        foreach (var m in panel.Markers.Where(m => double.IsFinite(m.X) && m.X >= xMin && m.X <= xMax))
        {
            var v = plt.Add.VerticalLine(m.X, 1.25f, colors[m.Name].WithAlpha(0.7));
            v.LinePattern = LinePattern.Dashed;
        }
        double lo = double.PositiveInfinity, hi = double.NegativeInfinity;
        foreach (var s in panel.Series)
        {
            var thin = Thin(s.X, s.Y, positiveOnly: panel.LogY);
            if (thin.X.Length == 0) continue;
            var color = s.Shared ? SharedColor : colors[s.Name];
            double[] Axis(double[] v) => panel.LogY ? v.Select(Math.Log10).ToArray() : v;
            var (xs, ys) = (thin.X, Axis(thin.Y));
            if (thin.Low is { } low && thin.High is { } high)
            {
                var (l, h) = (Axis(low), Axis(high));
                var band = plt.Add.FillY(xs, l, h);
                band.FillColor = color.WithAlpha(0.25);
                band.LineWidth = 0;
                lo = Math.Min(lo, l.Min());
                hi = Math.Max(hi, h.Max());
            }
            lo = Math.Min(lo, ys.Min());
            hi = Math.Max(hi, ys.Max());
            var line = plt.Add.ScatterLine(xs, ys, color);
            // Earlier lines wider, so that SAEs logging the same values (two TopK SAEs' L0, one lr schedule) all show.
            line.LineWidth = s.Shared ? 1.75f : 1.75f + 1f * (colors.Count - 1 - order[s.Name]);
            line.MarkerSize = xs.Length <= MarkerPoints ? 7 : 0;
            line.MarkerShape = MarkerShape.FilledCircle;
        }
        bool empty = double.IsInfinity(lo);
        if (empty)
        {
            var note = plt.Add.Annotation("no finite values", Alignment.MiddleCenter);
            note.LabelFontSize = 15;
            (lo, hi) = panel.LogY ? (-1, 0) : (panel.YMin ?? 0, panel.YMax ?? 1);
        }
        if (panel.LogY)
        {
            if (panel.YMin is double a && a > 0) lo = Math.Log10(a);
            if (panel.YMax is double b && b > 0) hi = Math.Log10(b);
        }
        else
        {
            lo = panel.YMin ?? lo;
            hi = panel.YMax ?? hi;
        }
        double span = hi - lo;
        double pad = span > 0 ? span * 0.05 : Math.Max(Math.Abs(hi) * 0.1, panel.LogY ? 0.5 : 1e-12);
        if (span <= 0 && !panel.LogY && Math.Abs(hi) == 0) pad = 1;
        plt.Axes.SetLimitsY(lo - pad, hi + pad);
        double xPad = xMax > xMin ? (xMax - xMin) * 0.02 : Math.Max(1, Math.Abs(xMax) * 0.1);
        plt.Axes.SetLimitsX(xMin - xPad, xMax + xPad);

        plt.Axes.Bottom.TickGenerator = new NumericAutomatic { LabelFormatter = xFormat, TickDensity = 0.8 };
        // One notation for every label of an axis: 0.0005 beside 0.001, not 5e-4.
        bool scientific = Math.Max(Math.Abs(lo), Math.Abs(hi)) is var top && top > 0 && (top < 1e-3 || top >= 1e5);
        plt.Axes.Left.TickGenerator = panel.LogY ? LogTicks(lo - pad, hi + pad)
            : new NumericAutomatic { LabelFormatter = panel.YFormat ?? (scientific ? Scientific : LinearTickLabels(hi - lo + 2 * pad)) };
        foreach (var axis in new IAxis[] { plt.Axes.Bottom, plt.Axes.Left })
        {
            axis.TickLabelStyle.FontSize = 14;
        }
        return plt;
    }

    /// <summary>Ticks of a log10 axis from <paramref name="lo"/> to <paramref name="hi"/> (log10 units): labels at decades,
    /// and at 2× and 5× when fewer than three decades are in range; minor ticks at 2×…9×.</summary>
    internal static NumericManual LogTicks(double lo, double hi)
    {
        var ticks = new NumericManual();
        int first = (int)Math.Floor(lo), last = (int)Math.Ceiling(hi);
        int decadesIn = Enumerable.Range(first, last - first + 1).Count(d => d >= lo && d <= hi);
        // Many decades: label every second or third one so that the labels do not run together.
        int every = Math.Max(1, (int)Math.Ceiling(decadesIn / 6.0));
        for (int d = first; d <= last; d++)
            for (int m = 1; m <= 9; m++)
            {
                double v = d + Math.Log10(m);
                if (v < lo || v > hi) continue;
                bool labelled = m == 1 ? (d - first) % every == 0 : decadesIn < 3 && (m == 2 || m == 5);
                if (labelled) ticks.AddMajor(v, FormatNumber(m * Math.Pow(10, d)));
                else ticks.AddMinor(v);
            }
        return ticks;
    }

    /// <summary>A tick label: up to 4 significant digits, plain from 0.001 to 9,999, else as 2.5e-5.</summary>
    public static string FormatNumber(double v)
    {
        if (v == 0) return "0";
        double a = Math.Abs(v);
        if (a >= 1e-3 && a < 1e4) return Math.Round(v, 12).ToString("G4", CultureInfo.InvariantCulture);
        return Scientific(v);
    }

    /// <summary>Tick labels of a linear axis spanning <paramref name="axisSpan"/>: as many decimals as ticks a twentieth of
    /// the span apart need to differ (1.0005 beside 1.001 on a loss that moves in the fourth decimal, not 1.001 twice),
    /// trailing zeros left out; a value within 1e-6 of the span of 0 is 0.</summary>
    public static Func<double, string> LinearTickLabels(double axisSpan)
    {
        int decimals = axisSpan > 0 && double.IsFinite(axisSpan) ? Math.Clamp((int)Math.Ceiling(-Math.Log10(axisSpan / 20)), 0, 12) : 4;
        string format = decimals == 0 ? "0" : "0." + new string('#', decimals);
        return v => (Math.Abs(v) < 1e-6 * axisSpan ? 0 : Math.Round(v, decimals)).ToString(format, CultureInfo.InvariantCulture);
    }

    private static string Scientific(double v) => v == 0 ? "0" : v.ToString("0.###e0", CultureInfo.InvariantCulture);

    /// <summary>A count on an axis: 0, 500, 20k, 1.5M, 2B.</summary>
    public static string FormatCount(double v)
    {
        double a = Math.Abs(v);
        string Scaled(double d, string suffix) => (v / d).ToString("0.##", CultureInfo.InvariantCulture) + suffix;
        return a >= 1e9 ? Scaled(1e9, "B") : a >= 1e6 ? Scaled(1e6, "M") : a >= 1e3 ? Scaled(1e3, "k") : v.ToString("0.##", CultureInfo.InvariantCulture);
    }

    private static (double Min, double Max) XRange(IReadOnlyList<LinePanel> panels)
    {
        double lo = double.PositiveInfinity, hi = double.NegativeInfinity;
        foreach (var s in panels.SelectMany(p => p.Series))
            foreach (var x in s.X)
                if (double.IsFinite(x)) { lo = Math.Min(lo, x); hi = Math.Max(hi, x); }
        return double.IsInfinity(lo) ? (0, 1) : (lo, hi);
    }

    /// <summary>The legend's entries in rows that fit <paramref name="room"/> pixels.</summary>
    private static List<List<string>> LegendLayout(List<string> names, SKFont font, float room)
    {
        var rows = new List<List<string>> { new() };
        float used = 0;
        foreach (var n in names)
        {
            float w = LegendEntryWidth(n, font);
            if (rows[^1].Count > 0 && used + w > room) { rows.Add(new()); used = 0; }
            rows[^1].Add(n);
            used += w;
        }
        return rows;
    }

    private const float SwatchWidth = 28, EntryGap = 28;

    private static float LegendEntryWidth(string name, SKFont font) => SwatchWidth + 6 + font.MeasureText(name) + EntryGap;

    private static void DrawLegend(SKCanvas canvas, List<List<string>> rows, Dictionary<string, Color> colors, SKFont font, float top)
    {
        using var ink = new SKPaint { Color = SKColors.Black, IsAntialias = true };
        for (int r = 0; r < rows.Count; r++)
        {
            float x = Margin, mid = top + r * LegendRowHeight + LegendRowHeight / 2;
            foreach (var n in rows[r])
            {
                using var pen = new SKPaint { Color = colors[n].ToSKColor(), StrokeWidth = 4, IsAntialias = true, Style = SKPaintStyle.Stroke };
                canvas.DrawLine(x, mid, x + SwatchWidth, mid, pen);
                canvas.DrawText(n, x + SwatchWidth + 6, mid + LegendSize * 0.35f, SKTextAlign.Left, font, ink);
                x += LegendEntryWidth(n, font);
            }
        }
    }
}
