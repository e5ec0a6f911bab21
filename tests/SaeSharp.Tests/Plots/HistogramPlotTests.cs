using SaeSharp.Plots;
using SkiaSharp;

namespace SaeSharp.Tests.Plots;

/// <summary><see cref="HistogramPlot.Render"/> read back as pixels: where each bar is drawn and how tall, measured by its
/// colour (red #ff0000, blue #0000ff, which nothing else in the picture uses).</summary>
public class HistogramPlotTests
{
    private static bool Red(SKColor c) => c.Red > 200 && c.Green < 60 && c.Blue < 60;
    private static bool Blue(SKColor c) => c.Blue > 200 && c.Red < 60 && c.Green < 60;

    /// <summary>The columns and rows [first, last] holding pixels of a colour, or null when there are none.</summary>
    private static (int X0, int X1, int Y0, int Y1)? Extent(SKBitmap png, Func<SKColor, bool> colour)
    {
        int x0 = int.MaxValue, x1 = -1, y0 = int.MaxValue, y1 = -1;
        for (int y = 0; y < png.Height; y++)
            for (int x = 0; x < png.Width; x++)
                if (colour(png.GetPixel(x, y))) { x0 = Math.Min(x0, x); x1 = Math.Max(x1, x); y0 = Math.Min(y0, y); y1 = Math.Max(y1, y); }
        return x1 < 0 ? null : (x0, x1, y0, y1);
    }

    /// <summary>Each bar covers its own bin [lower, upper): equal bins give bars of equal width, side by side, the first
    /// starting at the left of the data (a bar drawn centred on its lower edge would be cut in half by the axis).</summary>
    [Fact]
    public void Bars_cover_their_bins()
    {
        var bars = new[] { new HistogramBar(0, 1, 5, "#ff0000"), new HistogramBar(1, 2, 5, "#0000ff"), new HistogramBar(2, 3, 0, "#00ff00") };
        using var png = SKBitmap.Decode(HistogramPlot.Render(bars, "t", "x", "y"));
        var red = Extent(png, Red)!.Value;
        var blue = Extent(png, Blue)!.Value;
        int wr = red.X1 - red.X0 + 1, wb = blue.X1 - blue.X0 + 1;
        Assert.True(Math.Abs(wr - wb) <= 2, $"bar widths {wr} and {wb} px for bins of one width");
        Assert.True(Math.Abs(blue.X0 - (red.X1 + 1)) <= 2, $"red ends at {red.X1}, blue starts at {blue.X0}");
        // Three bins of one width: the empty third one leaves as much room to the right of blue as each bar takes.
        Assert.InRange(png.Width, blue.X1 + wb, png.Width);
        // Equal counts: equal heights, from one base line.
        Assert.True(Math.Abs(red.Y0 - blue.Y0) <= 1 && Math.Abs(red.Y1 - blue.Y1) <= 1, $"red rows {red.Y0}-{red.Y1}, blue {blue.Y0}-{blue.Y1}");
    }

    /// <summary>On a log axis bars start at a count of ½, so a count of 1 stays visible, and heights are
    /// log10(count) − log10(½): a bar of 1 against a bar of 10 is 0.301 / 1.301 = 0.23 as tall (0.1 on a linear axis).</summary>
    [Fact]
    public void Log_axis_bars_start_at_a_half()
    {
        var bars = new[] { new HistogramBar(0, 1, 1, "#ff0000"), new HistogramBar(1, 2, 10, "#0000ff") };
        using var png = SKBitmap.Decode(HistogramPlot.Render(bars, "t", "x", "y", logY: true));
        var red = Extent(png, Red);
        Assert.True(red is not null, "a bar of count 1 is drawn on a log axis");
        var blue = Extent(png, Blue)!.Value;
        double hr = red!.Value.Y1 - red.Value.Y0 + 1, hb = blue.Y1 - blue.Y0 + 1;
        Assert.InRange(hr / hb, Math.Log10(2) / Math.Log10(20) - 0.03, Math.Log10(2) / Math.Log10(20) + 0.03);
        Assert.True(Math.Abs(red.Value.Y1 - blue.Y1) <= 1, "both bars stand on the count-½ base line");
    }

    /// <summary>On a linear axis heights are proportional to the counts (bars from 0).</summary>
    [Fact]
    public void Linear_axis_heights_are_proportional_to_counts()
    {
        var bars = new[] { new HistogramBar(0, 1, 3, "#ff0000"), new HistogramBar(1, 2, 12, "#0000ff") };
        using var png = SKBitmap.Decode(HistogramPlot.Render(bars, "t", "x", "y"));
        var red = Extent(png, Red)!.Value;
        var blue = Extent(png, Blue)!.Value;
        double hr = red.Y1 - red.Y0 + 1, hb = blue.Y1 - blue.Y0 + 1;
        Assert.InRange(hr / hb, 0.25 - 0.02, 0.25 + 0.02);
    }

    /// <summary>A legend names the colours (its swatches drawn although no bar has the green one) in the upper right, and
    /// no bar reaches it: the tallest bar, right under the legend, ends below the legend's lowest swatch.</summary>
    [Fact]
    public void A_legend_is_drawn_above_every_bar()
    {
        static bool Green(SKColor c) => c.Green > 200 && c.Red < 60 && c.Blue < 60;
        var bars = new[] { new HistogramBar(0, 1, 3, "#ff0000"), new HistogramBar(1, 2, 1000, "#0000ff") };
        using var png = SKBitmap.Decode(HistogramPlot.Render(bars, "t", "x", "y", logY: true,
            legend: [("red", "#ff0000"), ("blue", "#0000ff"), ("green", "#00ff00")]));
        var green = Extent(png, Green);
        Assert.True(green is not null, "the legend's swatch of a colour no bar has is drawn");
        Assert.True(green!.Value.X0 > png.Width / 2, $"legend at x {green.Value.X0} of {png.Width}: the right half");
        // The blue bar (the tallest, at the right) and the blue swatch: the bar's top is below every swatch.
        var barTop = Enumerable.Range(0, png.Height).First(y => Enumerable.Range(0, png.Width / 2).Any(x => Blue(png.GetPixel(png.Width / 2 + x, y))
                                                             && x + png.Width / 2 < green.Value.X0));
        Assert.True(barTop > green.Value.Y1, $"the tallest bar starts at row {barTop}, the legend's last swatch ends at {green.Value.Y1}");

        using var plain = SKBitmap.Decode(HistogramPlot.Render(bars, "t", "x", "y", logY: true));
        Assert.Null(Extent(plain, Green));
    }
}
