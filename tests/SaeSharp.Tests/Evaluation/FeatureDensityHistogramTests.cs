using SaeSharp.Evaluation;
using SkiaSharp;

namespace SaeSharp.Tests.Evaluation;

public class FeatureDensityHistogramTests : IDisposable
{
    private readonly string _dir = Directory.CreateTempSubdirectory("png-").FullName;
    public void Dispose() => Directory.Delete(_dir, true);

    [Fact]
    public void BinsLog10Frequencies()
    {
        // 1000 rows: lowest decade −3. Bins of 0.1 decade from −3 to 0 (30 bins).
        var c = FeatureDensityHistogram.Bin([0, 0, 1e-3, 0.5, 1.0, 0.01, 0.0105], 1000);
        Assert.Equal(-3, c.LowestDecade);
        Assert.Equal(30, c.Bins.Length);
        Assert.Equal(2, c.Dead);
        Assert.Equal(1, c.Bins[0]);   // 1e-3
        Assert.Equal(2, c.Bins[10]);  // 0.01 and 0.0105 (log10 = −1.98)
        Assert.Equal(1, c.Bins[26]);  // 0.5 (log10 = −0.30)
        Assert.Equal(1, c.Bins[29]);  // 1.0 in the last bin
        Assert.Equal(7, c.Dead + c.Bins.Sum());
    }

    [Fact]
    public void SavedHistogramIsAPngWithDeadAndLiveBarsAndText()
    {
        var path = Path.Combine(_dir, "density.png");
        var freq = Enumerable.Repeat(0.0, 3).Concat(Enumerable.Repeat(0.01, 10)).Concat(Enumerable.Repeat(0.2, 4)).ToArray();
        FeatureDensityHistogram.Save(path, freq, 1000);
        File.Copy(path, Path.Combine(Analysis.DashboardBrowserTests.ScreenshotDir(), "eval-feature-density.png"), true);
        using var png = SKBitmap.Decode(path);
        Assert.Equal(FeatureDensityHistogram.Width, png.Width);
        Assert.Equal(FeatureDensityHistogram.Height, png.Height);
        int Count(Func<SKColor, bool> p) { int n = 0; for (int y = 0; y < png.Height; y++) for (int x = 0; x < png.Width; x++) if (p(png.GetPixel(x, y))) n++; return n; }
        int red = Count(c => c.Red == 0xd6 && c.Green == 0x27 && c.Blue == 0x28);
        int blue = Count(c => c.Red == 0x1f && c.Green == 0x77 && c.Blue == 0xb4);
        // Bars are as wide as their bins: the dead bar spans 0.6 decade, each live bar 0.1; heights 3, 10 and 4.
        Assert.True(red > 0 && blue > 0, $"red {red}, blue {blue}");
        Assert.InRange(blue / (double)red, 0.6 * 14 / 18, 1.4 * 14 / 18);
        Assert.True(Count(c => c.Red < 90 && c.Green < 90 && c.Blue < 90) > 500, "title, labels and ticks are drawn");
        // Without dead features, no red.
        FeatureDensityHistogram.Save(path, Enumerable.Repeat(0.01, 10).ToArray(), 1000);
        using var png2 = SKBitmap.Decode(path);
        Assert.Equal(0, Enumerable.Range(0, png2.Width * png2.Height).Count(i => png2.GetPixel(i % png2.Width, i / png2.Width) is var c && c.Red == 0xd6 && c.Green == 0x27 && c.Blue == 0x28));
    }
}
