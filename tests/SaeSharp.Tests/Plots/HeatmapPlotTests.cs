using SaeSharp.Plots;
using SkiaSharp;

namespace SaeSharp.Tests.Plots;

/// <summary><see cref="HeatmapPlot"/>: a layer × head table as a PNG, signed values on a blue-white-red map centred at 0.</summary>
public class HeatmapPlotTests
{
    [Fact]
    public void Signed_cells_are_blue_below_zero_and_red_above_with_row_0_at_the_top()
    {
        // One column, two rows: row 0 (top) −1, row 1 (bottom) +1.
        var png = HeatmapPlot.Render(new double[,] { { -1 }, { 1 } }, "t", "layer", "head", "value", width: 400, height: 400);
        using var bmp = SKBitmap.Decode(png);
        Assert.Equal(400, bmp.Width);
        // Scan the middle column of the plot area from top to bottom: the first strongly coloured pixel is blue, the last red.
        var coloured = Enumerable.Range(0, bmp.Height).Select(y => bmp.GetPixel(150, y))
            .Where(c => Math.Abs(c.Red - c.Blue) > 80).ToList();
        Assert.NotEmpty(coloured);
        Assert.True(coloured[0].Blue > coloured[0].Red, "the top row (−1) should be blue");
        Assert.True(coloured[^1].Red > coloured[^1].Blue, "the bottom row (+1) should be red");
    }
}
