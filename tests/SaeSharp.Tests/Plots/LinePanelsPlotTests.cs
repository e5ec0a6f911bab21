using SaeSharp.Plots;
using SkiaSharp;

namespace SaeSharp.Tests.Plots;

/// <summary><see cref="LinePanelsPlot"/>: how long lines are thinned, and the picture's size.</summary>
public class LinePanelsPlotTests
{
    [Fact]
    public void Short_lines_keep_every_finite_point()
    {
        var t = LinePanelsPlot.Thin([1, 2, 3, 4, 5], [1, double.NaN, 3, double.PositiveInfinity, -5]);
        Assert.Equal([1.0, 3, 5], t.X);
        Assert.Equal([1.0, 3, -5], t.Y);
        Assert.Null(t.Low);
        // On a log axis a value ≤ 0 cannot be drawn.
        var l = LinePanelsPlot.Thin([1, 2, 3], [1, 0, 2], positiveOnly: true);
        Assert.Equal([1.0, 3], l.X);
        Assert.Equal([1.0, 2], l.Y);
    }

    /// <summary>100,000 points (a long run's log) come down to the limit plus the two ends, in order: the first and the
    /// last point as logged, a single-point spike and dip inside the band, and on a straight line y = x every drawn
    /// point on that line (a stretch's mean x and mean y are equal).</summary>
    [Fact]
    public void Long_lines_keep_their_ends_and_extremes_within_the_limit()
    {
        const int n = 100_000;
        var x = Enumerable.Range(0, n).Select(i => i * 4096.0).ToArray();
        var y = Enumerable.Range(0, n).Select(i => 1 + 0.5 * ((i * 7919) % 13 - 6) / 6.0).ToArray(); // noise in [0.5, 1.5]
        y[54_321] = 1e6;
        y[77_777] = -1e6;
        y[^1] = 0.25;
        var t = LinePanelsPlot.Thin(x, y, maxPoints: 500);
        Assert.Equal(502, t.X.Length);
        Assert.Equal((x[0], y[0]), (t.X[0], t.Y[0]));
        Assert.Equal((x[^1], 0.25), (t.X[^1], t.Y[^1]));
        Assert.Equal(1e6, t.High!.Max());
        Assert.Equal(-1e6, t.Low!.Min());
        for (int i = 1; i < t.X.Length; i++) Assert.True(t.X[i] > t.X[i - 1], $"x out of order at {i}");
        for (int i = 0; i < t.X.Length; i++) Assert.InRange(t.Y[i], t.Low![i], t.High![i]);
        // Away from the spike and dip, the band is the noise's range and the mean line is near its mean (1).
        Assert.Equal((0.5, 1.5), (t.Low![10], t.High![10]));
        Assert.InRange(t.Y[10], 0.95, 1.05);

        var ramp = LinePanelsPlot.Thin(x, x, maxPoints: 500);
        for (int i = 0; i < ramp.X.Length; i++) Assert.Equal(ramp.X[i], ramp.Y[i], 6);
        // A log axis averages log10 y: the mean of 1 and 100 in a stretch is 10.
        var logged = LinePanelsPlot.Thin([0, 1, 2, 3, 4, 5], [7, 1, 100, 1, 100, 3], maxPoints: 2, positiveOnly: true);
        Assert.Equal([0, 1, 4, 5], logged.X);
        Assert.Equal(7, logged.Y[0]);
        Assert.Equal(Math.Pow(10, (Math.Log10(7) + 0 + 2) / 3), logged.Y[1], 12);
        Assert.Equal(Math.Pow(10, (0 + 2 + Math.Log10(3)) / 3), logged.Y[2], 12);
        Assert.Equal(3, logged.Y[3]);
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

    [Theory]
    // An AuxK loss between 0.9998 and 1.0043 (a real demo run): ticks 0.0005 apart must not read 1.004 twice.
    [InlineData(0.9998, 1.0043, 0.0005, "1.0005")]
    [InlineData(0.3, 1.0, 0.05, "0.35")]        // explained variance
    [InlineData(14.5, 17.5, 0.5, "16.5")]      // L0 of a TopK run
    [InlineData(0, 12345, 2000, "12000")]
    public void Linear_tick_labels_differ_wherever_ticks_do(double lo, double hi, double step, string expected)
    {
        var label = LinePanelsPlot.LinearTickLabels(hi - lo);
        var ticks = Enumerable.Range(0, (int)Math.Floor((hi - lo) / step) + 1).Select(i => Math.Ceiling(lo / step) * step + i * step).Where(v => v <= hi).ToList();
        var labels = ticks.Select(label).ToList();
        Assert.Equal(labels.Count, labels.Distinct().Count());
        Assert.Contains(expected, labels);
        Assert.Equal("0", label(1e-17));   // a tick at zero computed as a rounding residue
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
