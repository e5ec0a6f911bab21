using ScottPlot;

namespace SaeSharp.Plots;

/// <summary>Heatmap pictures (PNG) of a table such as layer × head, drawn with ScottPlot 5 in the fonts of
/// <see cref="HistogramPlot"/>: row 0 at the top (as TransformerLens's <c>imshow</c>), rows and columns labelled, a colour
/// bar; signed values on a diverging blue-white-red map centred at 0 (|max| either way), others on a white-to-red map.</summary>
public static class HeatmapPlot
{
    /// <summary>Renders <paramref name="values"/> [rows, columns] as PNG bytes; NaN cells are grey.</summary>
    public static byte[] Render(double[,] values, string title, string rowLabel, string columnLabel, string valueLabel,
        IReadOnlyList<string>? rowNames = null, IReadOnlyList<string>? columnNames = null, int width = 720, int height = 560)
    {
        ArgumentNullException.ThrowIfNull(values);
        int rows = values.GetLength(0), cols = values.GetLength(1);
        if (rows == 0 || cols == 0) throw new ArgumentException("heatmap: no cells");
        var finite = values.Cast<double>().Where(double.IsFinite).DefaultIfEmpty(0).ToList();
        bool signed = finite.Min() < 0;
        double max = Math.Max(finite.Select(Math.Abs).Max(), 1e-12);
        var plt = new Plot();
        PlotFonts.Apply(plt);
        var hm = plt.Add.Heatmap(values);
        hm.Colormap = signed
            ? new ScottPlot.Colormaps.CustomInterpolated([Color.FromHex("#2166ac"), Color.FromHex("#f7f7f7"), Color.FromHex("#b2182b")])
            : new ScottPlot.Colormaps.CustomInterpolated([Color.FromHex("#f7f7f7"), Color.FromHex("#b2182b")]);
        hm.ManualRange = signed ? new ScottPlot.Range(-max, max) : new ScottPlot.Range(Math.Min(0, finite.Min()), max);
        hm.NaNCellColor = Color.FromHex("#bbbbbb");
        var bar = plt.Add.ColorBar(hm);
        bar.Label = valueLabel;
        // Cell (r, c) is centred at x = c, y = rows − 1 − r: row 0 drawn at the top.
        plt.Axes.Bottom.TickGenerator = Ticks(Enumerable.Range(0, cols).Select(c => (double)c), columnNames ?? Numbers(cols), cols);
        // Column names wider than their cells (tokens under positions) are slanted, the axis made tall enough for the longest.
        int longest = (columnNames ?? Numbers(cols)).Max(c => c.Length);
        if (longest * 7 * Math.Min(cols, 24) > width - 200)
        {
            plt.Axes.Bottom.TickLabelStyle.Rotation = 45;
            plt.Axes.Bottom.TickLabelStyle.Alignment = Alignment.MiddleLeft;
            plt.Axes.Bottom.MinimumSize = Math.Min(longest, 24) * 6 + 30;
        }
        plt.Axes.Left.TickGenerator = Ticks(Enumerable.Range(0, rows).Select(r => (double)(rows - 1 - r)), rowNames ?? Numbers(rows), rows);
        plt.Title(title);
        plt.XLabel(columnLabel);
        plt.YLabel(rowLabel);
        plt.Axes.SetLimits(-0.5, cols - 0.5, -0.5, rows - 0.5);
        return plt.GetImageBytes(width, height, ImageFormat.Png);
    }

    private static string[] Numbers(int n) => [.. Enumerable.Range(0, n).Select(i => i.ToString(System.Globalization.CultureInfo.InvariantCulture))];

    /// <summary>A label at each cell centre, every k-th when there are many.</summary>
    private static ScottPlot.TickGenerators.NumericManual Ticks(IEnumerable<double> positions, IReadOnlyList<string> names, int n)
    {
        int step = Math.Max(1, (int)Math.Ceiling(n / 24.0));
        var t = new ScottPlot.TickGenerators.NumericManual();
        int i = 0;
        foreach (var p in positions)
        {
            if (i % step == 0) t.AddMajor(p, names[i]);
            i++;
        }
        return t;
    }
}
