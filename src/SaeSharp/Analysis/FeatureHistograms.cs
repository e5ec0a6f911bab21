using SaeSharp.IO;
using SaeSharp.Plots;

namespace SaeSharp.Analysis;

/// <summary>Per-feature activation histograms as PNG files (<c>sae features --png</c>), drawn by <see cref="HistogramPlot"/>.</summary>
public static class FeatureHistograms
{
    /// <summary>A feature's activation histogram (log-density y axis) as PNG bytes.</summary>
    public static byte[] Render(FeatureStatistics f, int width = 640, int height = 360)
    {
        ArgumentNullException.ThrowIfNull(f);
        var h = f.Histogram;
        var bars = Enumerable.Range(0, h.Counts.Length).Select(i => new HistogramBar(h.Edges[i], h.Edges[i + 1], h.Counts[i], "#e0720b")).ToList();
        return HistogramPlot.Render(bars, $"Feature {f.Feature}: activations (density {DashboardWriter.Percent(f.Density)})", "activation", "tokens (log scale)", logY: true, width, height);
    }

    /// <summary>Writes <c>&lt;feature&gt;.png</c> (<see cref="Render"/>) for every feature of the report that fired, and
    /// deletes the <c>&lt;feature&gt;.png</c> of other features left by an earlier run.</summary>
    public static int Save(FeatureReport report, string dir)
    {
        ArgumentNullException.ThrowIfNull(report);
        Directory.CreateDirectory(dir);
        var fired = report.Features.Where(f => f.Firings > 0).ToList();
        foreach (var f in fired)
        {
            var bytes = Render(f);
            AtomicFile.Write(Path.Combine(dir, $"{f.Feature}.png"), s => s.Write(bytes));
        }
        FeatureFiles.RemoveStale(dir, ".png", fired.Select(f => f.Feature));
        return fired.Count;
    }
}
