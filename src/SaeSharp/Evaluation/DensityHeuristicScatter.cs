using SaeSharp.IO;
using SaeSharp.Plots;

namespace SaeSharp.Evaluation;

/// <summary>
/// SAELens's evals tutorial scatter of log10 feature density against log10 consistent-activation heuristic (one point a
/// feature, from <see cref="FeatureMetrics"/>) as a PNG drawn by <see cref="ScatterPlot"/>. Features that never fired
/// (density 0, heuristic NaN) are left out and counted in the title; the tutorial puts them at −10 by adding 1e-10.
/// </summary>
public static class DensityHeuristicScatter
{
    /// <summary>Width of the PNG in pixels.</summary>
    public const int Width = 800;
    /// <summary>Height of the PNG in pixels.</summary>
    public const int Height = 600;

    /// <summary>The points: (log10 density, log10 heuristic) of every feature that fired, with the feature indices; null
    /// when <paramref name="metrics"/> has no heuristic (rows not from prompts).</summary>
    public static (int[] Features, double[] X, double[] Y)? Points(FeatureMetrics metrics)
    {
        ArgumentNullException.ThrowIfNull(metrics);
        if (metrics.ConsistentActivationHeuristic is not { } cah) return null;
        var fired = Enumerable.Range(0, metrics.FeatureDensity.Count).Where(i => metrics.FeatureDensity[i] > 0 && cah[i] > 0).ToArray();
        return (fired, fired.Select(i => Math.Log10(metrics.FeatureDensity[i])).ToArray(), fired.Select(i => Math.Log10(cah[i])).ToArray());
    }

    /// <summary>Renders the scatter as PNG bytes, or null without a heuristic.</summary>
    public static byte[]? Render(FeatureMetrics metrics)
    {
        if (Points(metrics) is not var (features, x, y)) return null;
        int left = metrics.FeatureDensity.Count - features.Length;
        return ScatterPlot.Render([new ScatterGroup("", FeatureDensityHistogram.LiveColor, x, y)],
            $"Log10 feature density vs consistent activation heuristic ({features.Length:N0} features{(left > 0 ? $", {left:N0} dead left out" : "")})",
            "log10(feature density)", "log10(consistent activation heuristic)", width: Width, height: Height, markerSize: 4);
    }

    /// <summary>Writes <see cref="Render"/>'s PNG to <paramref name="path"/> (atomically); false (nothing written) without a heuristic.</summary>
    public static bool Save(string path, FeatureMetrics metrics)
    {
        if (Render(metrics) is not { } bytes) return false;
        AtomicFile.Write(path, s => s.Write(bytes));
        return true;
    }
}
