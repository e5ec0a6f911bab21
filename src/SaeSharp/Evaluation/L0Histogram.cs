using System.Text.Json.Serialization;
using SaeSharp.IO;
using SaeSharp.Plots;

namespace SaeSharp.Evaluation;

/// <summary>
/// The spread of the per-token L0 (features ≠ 0 on a row) behind the mean <c>l0</c>: its standard deviation and
/// quantiles, each quantile as numpy's and torch's default (linear interpolation between the sorted values at
/// q·(N − 1)). Built from <see cref="SaeEvalResult.L0Rows"/>; written under <c>l0_distribution</c> in <c>sae eval --json</c>.
/// </summary>
public sealed record L0Distribution
{
    /// <summary>Standard deviation of the per-token L0 (over N, not N − 1).</summary>
    [JsonPropertyName("std")] public double Std { get; init; }
    /// <summary>The smallest per-token L0.</summary>
    [JsonPropertyName("min")] public double Min { get; init; }
    /// <summary>The 10 % quantile.</summary>
    [JsonPropertyName("p10")] public double P10 { get; init; }
    /// <summary>The 25 % quantile.</summary>
    [JsonPropertyName("p25")] public double P25 { get; init; }
    /// <summary>The median.</summary>
    [JsonPropertyName("median")] public double Median { get; init; }
    /// <summary>The 75 % quantile.</summary>
    [JsonPropertyName("p75")] public double P75 { get; init; }
    /// <summary>The 90 % quantile.</summary>
    [JsonPropertyName("p90")] public double P90 { get; init; }
    /// <summary>The largest per-token L0.</summary>
    [JsonPropertyName("max")] public double Max { get; init; }

    /// <summary>The distribution of <paramref name="rows"/> (rows[l]: the rows with L0 = l); null when there are no rows.</summary>
    public static L0Distribution? FromCounts(IReadOnlyList<long> rows)
    {
        ArgumentNullException.ThrowIfNull(rows);
        double n = rows.Sum();
        if (n == 0) return null;
        double mean = rows.Select((c, l) => (double)c * l).Sum() / n;
        double variance = rows.Select((c, l) => c * (l - mean) * (l - mean)).Sum() / n;
        return new L0Distribution
        {
            Std = Math.Sqrt(variance), Min = Quantile(rows, 0), P10 = Quantile(rows, 0.1), P25 = Quantile(rows, 0.25),
            Median = Quantile(rows, 0.5), P75 = Quantile(rows, 0.75), P90 = Quantile(rows, 0.9), Max = Quantile(rows, 1),
        };
    }

    /// <summary>The <paramref name="q"/> quantile of the values whose counts are <paramref name="rows"/> (value l counted
    /// rows[l] times), interpolated linearly between the sorted values at ⌊q(N − 1)⌋ and ⌈q(N − 1)⌉.</summary>
    public static double Quantile(IReadOnlyList<long> rows, double q)
    {
        ArgumentNullException.ThrowIfNull(rows);
        long n = rows.Sum();
        if (n == 0 || q is < 0 or > 1) throw new ArgumentOutOfRangeException(nameof(q), q, $"a quantile in [0, 1] of {n} values (none: no quantile)");
        double at = q * (n - 1);
        long lo = (long)Math.Floor(at), hi = (long)Math.Ceiling(at);
        double a = Sorted(rows, lo), b = Sorted(rows, hi);
        return a + (b - a) * (at - lo);
    }

    /// <summary>The value at index <paramref name="k"/> of the sorted values.</summary>
    private static long Sorted(IReadOnlyList<long> rows, long k)
    {
        long seen = 0;
        for (int l = 0; l < rows.Count; l++)
            if ((seen += rows[l]) > k) return l;
        throw new ArgumentOutOfRangeException(nameof(k), k, $"only {seen} values");
    }
}

/// <summary>
/// Histogram of the per-token L0 (SAELens's basic loading and analysing tutorial, cell 11: <c>px.histogram(l0)</c>) as a
/// PNG drawn by <see cref="HistogramPlot"/>: x the number of features ≠ 0 on a token, y the tokens; one bar per L0 value
/// up to <see cref="MaxBars"/> values, else bars of equal whole widths.
/// </summary>
public static class L0Histogram
{
    /// <summary>Width of the PNG in pixels.</summary>
    public const int Width = 640;
    /// <summary>Height of the PNG in pixels.</summary>
    public const int Height = 360;
    /// <summary>Bars drawn at most.</summary>
    public const int MaxBars = 100;

    /// <summary>The bars: bar k counts the rows with L0 in [k·w, (k + 1)·w), w = ⌈(max L0 + 1) / <see cref="MaxBars"/>⌉, and
    /// spans [k·w − ½, (k + 1)·w − ½) so that a bar of width 1 is centred on its value.</summary>
    public static IReadOnlyList<HistogramBar> Bars(IReadOnlyList<long> rows)
    {
        ArgumentNullException.ThrowIfNull(rows);
        int w = Math.Max(1, (rows.Count + MaxBars - 1) / MaxBars);
        var bars = new List<HistogramBar>();
        for (int start = 0; start < rows.Count; start += w)
        {
            long count = 0;
            for (int l = start; l < Math.Min(rows.Count, start + w); l++) count += rows[l];
            bars.Add(new HistogramBar(start - 0.5, start + w - 0.5, count, FeatureDensityHistogram.LiveColor));
        }
        return bars;
    }

    /// <summary>Renders the histogram of <paramref name="rows"/> (rows[l]: the rows with L0 = l) as PNG bytes.</summary>
    public static byte[] Render(IReadOnlyList<long> rows)
    {
        ArgumentNullException.ThrowIfNull(rows);
        long n = rows.Sum();
        if (n == 0) throw new SaeSharpException("the per-token L0 histogram has no rows to draw");
        double mean = rows.Select((c, l) => (double)c * l).Sum() / n;
        return HistogramPlot.Render(Bars(rows), $"L0 per token over {n:N0} tokens (mean {mean:F1})",
            "L0 (features active on the token)", "tokens", logY: false, Width, Height);
    }

    /// <summary>Writes <see cref="Render"/>'s PNG to <paramref name="path"/> (atomically).</summary>
    public static void Save(string path, IReadOnlyList<long> rows)
    {
        var bytes = Render(rows);
        AtomicFile.Write(path, s => s.Write(bytes));
    }
}
