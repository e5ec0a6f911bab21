using SaeSharp.Evaluation;
using SkiaSharp;
using static TorchSharp.torch;

namespace SaeSharp.Tests.Evaluation;

/// <summary>The per-token L0 histogram of <c>sae eval</c> (<see cref="SaeMetricsAccumulator"/>'s <see cref="SaeEvalResult.L0Rows"/>,
/// <see cref="L0Histogram"/>) and its summary (<see cref="L0Distribution"/>).</summary>
public class L0HistogramTests : IDisposable
{
    private readonly string _dir = Directory.CreateTempSubdirectory("l0-png-").FullName;
    public void Dispose() => Directory.Delete(_dir, true);

    /// <summary>Random sparse activations in two batches: L0Rows[l] is the number of rows with exactly l non-zero entries,
    /// counted here element by element; its weighted mean is the result's l0.</summary>
    [Fact]
    public void Accumulator_counts_rows_by_their_number_of_active_features()
    {
        var rng = new Random(3);
        float[] Rows(int n) => Enumerable.Range(0, n * 8).Select(_ => rng.NextDouble() < 0.3 ? (float)rng.NextDouble() + 0.1f : 0f).ToArray();
        var batches = new[] { Rows(50), Rows(37) };
        var expected = new long[9];
        foreach (var b in batches)
            for (int r = 0; r < b.Length / 8; r++) expected[Enumerable.Range(0, 8).Count(j => b[r * 8 + j] != 0)]++;
        var acc = new SaeMetricsAccumulator(2, 8);
        foreach (var b in batches)
        {
            using var f = tensor(b).reshape(-1, 8);
            using var x = randn(f.shape[0], 2);
            acc.Add(x, x, f);
        }
        var result = acc.Result();
        int last = Array.FindLastIndex(expected, c => c > 0);
        Assert.Equal(expected[..(last + 1)], result.L0Rows);
        Assert.Equal(result.L0, result.L0Rows.Select((c, l) => (double)c * l).Sum() / 87, 12);
    }

    /// <summary>Quantiles from counts equal numpy's default (linear) quantile of the expanded sorted values, computed here
    /// from the list; hand values for 0, 1, 1, 2 and for one value.</summary>
    [Fact]
    public void Quantiles_match_numpy_linear_quantiles_of_the_expanded_values()
    {
        long[] counts = [0, 3, 0, 5, 1, 0, 2];
        var sorted = counts.SelectMany((c, l) => Enumerable.Repeat((double)l, (int)c)).ToArray();
        foreach (var q in new[] { 0, 0.1, 0.25, 0.5, 0.75, 0.9, 1 })
        {
            double at = q * (sorted.Length - 1);
            int lo = (int)Math.Floor(at), hi = (int)Math.Ceiling(at);
            Assert.Equal(sorted[lo] + (sorted[hi] - sorted[lo]) * (at - lo), L0Distribution.Quantile(counts, q), 12);
        }
        var d = L0Distribution.FromCounts([1, 2, 1])!;
        double[] got = [d.Min, d.P10, d.P25, d.Median, d.P75, d.P90, d.Max];
        double[] hand = [0, 0.3, 0.75, 1, 1.25, 1.7, 2];
        for (int i = 0; i < hand.Length; i++) Assert.Equal(hand[i], got[i], 12);
        Assert.Equal(Math.Sqrt(0.5), d.Std, 12);
        var one = L0Distribution.FromCounts([0, 0, 0, 4])!;
        Assert.Equal((3, 3, 0), (one.Min, one.Max, one.Std));
        Assert.Null(L0Distribution.FromCounts([]));
    }

    /// <summary>One bar per L0 value centred on it up to <see cref="L0Histogram.MaxBars"/> values; beyond, bars of a whole
    /// width w = ⌈values / MaxBars⌉ holding the sum of their values' counts; no count lost.</summary>
    [Fact]
    public void Bars_are_one_per_value_or_whole_widths_summing_the_counts()
    {
        var bars = L0Histogram.Bars([2, 0, 5]);
        Assert.Equal([(-0.5, 0.5, 2L), (0.5, 1.5, 0L), (1.5, 2.5, 5L)], bars.Select(b => (b.Lower, b.Upper, b.Count)));
        var counts = Enumerable.Range(0, 250).Select(l => (long)l).ToArray();
        var wide = L0Histogram.Bars(counts);
        Assert.Equal(84, wide.Count);   // w = 3: 0-2, 3-5, ..., 249
        Assert.Equal((2.5, 5.5, 3L + 4 + 5), (wide[1].Lower, wide[1].Upper, wide[1].Count));
        Assert.Equal(counts.Sum(), wide.Sum(b => b.Count));
    }

    [Fact]
    public void Saved_histogram_is_a_png_of_the_stated_size()
    {
        var path = Path.Combine(_dir, "l0.png");
        L0Histogram.Save(path, [0, 3, 10, 4]);
        using var png = SKBitmap.Decode(path);
        Assert.Equal((L0Histogram.Width, L0Histogram.Height), (png.Width, png.Height));
        Assert.Throws<SaeSharpException>(() => L0Histogram.Render([0, 0]));
    }
}
