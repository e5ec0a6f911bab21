using SaeSharp.Plots;
using SkiaSharp;

namespace SaeSharp.Tests.Plots;

/// <summary><see cref="LinePanelsPlot"/>: how long lines are thinned, and the picture's size.</summary>
public class LinePanelsPlotTests
{
    [Fact]
    public void Short_lines_keep_every_finite_point()
    {
        var (x, y) = LinePanelsPlot.Thin([1, 2, 3, 4, 5], [1, double.NaN, 3, double.PositiveInfinity, -5]);
        Assert.Equal([1.0, 3, 5], x);
        Assert.Equal([1.0, 3, -5], y);
        // On a log axis a value ≤ 0 cannot be drawn.
        var (lx, ly) = LinePanelsPlot.Thin([1, 2, 3], [1, 0, 2], positiveOnly: true);
        Assert.Equal([1.0, 3], lx);
        Assert.Equal([1.0, 2], ly);
    }

    /// <summary>100,000 points (a long run's log) come down to about the limit, in order, keeping the first and the last
    /// point, a single-point spike and a single-point dip.</summary>
    [Fact]
    public void Long_lines_keep_their_ends_and_extremes_within_the_limit()
    {
        const int n = 100_000;
        var x = Enumerable.Range(0, n).Select(i => i * 4096.0).ToArray();
        var y = Enumerable.Range(0, n).Select(i => 1 + Math.Sin(i / 500.0)).ToArray();
        y[54_321] = 1e6;
        y[77_777] = -1e6;
        y[^1] = 0.5; // the last point is neither the largest nor the smallest of its stretch
        var (tx, ty) = LinePanelsPlot.Thin(x, y, maxPoints: 1000);
        Assert.InRange(tx.Length, 900, 1002);
        Assert.Equal(x[0], tx[0]);
        Assert.Equal((x[^1], 0.5), (tx[^1], ty[^1]));
        Assert.Contains(54_321 * 4096.0, tx);
        Assert.Contains(77_777 * 4096.0, tx);
        Assert.Equal(1e6, ty.Max());
        Assert.Equal(-1e6, ty.Min());
        for (int i = 1; i < tx.Length; i++) Assert.True(tx[i] > tx[i - 1], $"x out of order at {i}");
        // Every kept point is a point of the line.
        for (int i = 0; i < tx.Length; i++) Assert.Equal(y[(int)(tx[i] / 4096)], ty[i]);
    }

    [Fact]
    public void Tick_labels_read_as_plain_numbers_and_token_counts()
    {
        Assert.Equal("0.001", LinePanelsPlot.FormatNumber(0.001));
        Assert.Equal("2.5e-5", LinePanelsPlot.FormatNumber(2.5e-5));
        Assert.Equal("200", LinePanelsPlot.FormatNumber(200));
        Assert.Equal("0", LinePanelsPlot.FormatCount(0));
        Assert.Equal("500k", LinePanelsPlot.FormatCount(500_000));
        Assert.Equal("1.5M", LinePanelsPlot.FormatCount(1_500_000));
        Assert.Equal("2B", LinePanelsPlot.FormatCount(2e9));
    }

    [Fact]
    public void The_picture_has_the_requested_size_and_a_panel_without_points_still_draws()
    {
        var panels = new[]
        {
            new LinePanel("a", [new LineSeries("s", [0, 1, 2], [3, 2, 1])]),
            new LinePanel("b (log scale)", [new LineSeries("s", [0, 1, 2], [100, 10, 1])]) { LogY = true },
            new LinePanel("empty", [new LineSeries("s", [0, 1], [double.NaN, double.NaN])]) { YMin = 0, YMax = 1 },
        };
        using var png = SKBitmap.Decode(LinePanelsPlot.Render(panels, "title", "training tokens", 900, 400));
        Assert.Equal((900, 400), (png.Width, png.Height));
        Assert.Throws<ArgumentException>(() => LinePanelsPlot.Render([], "t", "x"));
    }
}
