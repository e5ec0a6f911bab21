using SaeSharp.Evaluation;
using SkiaSharp;

namespace SaeSharp.Tests.Evaluation;

/// <summary><see cref="DensityHeuristicScatter"/>: its points are log10 of the feature metrics' lists, dead features left out.</summary>
public class DensityHeuristicScatterTests : IDisposable
{
    private readonly string _dir = Directory.CreateTempSubdirectory("cah-png-").FullName;
    public void Dispose() => Directory.Delete(_dir, true);

    [Fact]
    public void Points_are_log10_density_and_heuristic_of_the_features_that_fired()
    {
        var m = new FeatureMetrics { FeatureDensity = [0.01, 0, 1], ConsistentActivationHeuristic = [10, double.NaN, 1] };
        var (features, x, y) = DensityHeuristicScatter.Points(m)!.Value;
        Assert.Equal([0, 2], features);
        Assert.Equal([-2.0, 0.0], x);
        Assert.Equal([1.0, 0.0], y);
        string path = Path.Combine(_dir, "cah.png");
        Assert.True(DensityHeuristicScatter.Save(path, m));
        using var png = SKBitmap.Decode(path);
        Assert.Equal((DensityHeuristicScatter.Width, DensityHeuristicScatter.Height), (png.Width, png.Height));
        // Rows not from prompts: no heuristic, no picture.
        Assert.Null(DensityHeuristicScatter.Points(new FeatureMetrics { FeatureDensity = [0.5] }));
        Assert.False(DensityHeuristicScatter.Save(Path.Combine(_dir, "none.png"), new FeatureMetrics { FeatureDensity = [0.5] }));
        Assert.False(File.Exists(Path.Combine(_dir, "none.png")));
    }
}
