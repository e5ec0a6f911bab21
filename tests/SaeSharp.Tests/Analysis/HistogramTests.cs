using SaeSharp.Analysis;

namespace SaeSharp.Tests.Analysis;

/// <summary>Histogram.Of (the logit-effect histogram) against counts made by hand.</summary>
public class HistogramTests
{
    [Fact]
    public void Each_value_falls_in_the_bin_whose_half_open_interval_holds_it_and_the_max_in_the_last()
    {
        // min 0, max 4, 4 bins of width 1: [0,1) [1,2) [2,3) [3,4]. 0.6 and 0 → bin 0, 1.2 → 1, 2.9 → 2, 3.0 and 4 → 3.
        float[] values = [0.6f, 1.2f, 2.9f, 4f, 0f, 3f];
        var h = Histogram.Of(values, 4);
        Assert.Equal([0.0, 1.0, 2.0, 3.0, 4.0], h.Edges);
        Assert.Equal([2L, 1L, 1L, 2L], h.Counts);
    }

    [Fact]
    public void The_edges_span_exactly_from_the_minimum_to_the_maximum()
    {
        // For min −1.38f, max 2.32f and 7 bins, min + 7·((max − min) / 7) rounds to 4.4e-16 below the max, which would
        // leave the max outside the last bin's interval: the last edge is set to the max itself.
        float[] values = [2.32f, 0.5f, -1.38f, 1f];
        var h = Histogram.Of(values, 7);
        Assert.Equal(8, h.Edges.Length);
        Assert.Equal((double)-1.38f, h.Edges[0]);
        Assert.Equal((double)2.32f, h.Edges[^1]);
        Assert.Equal(values.Length, h.Counts.Sum());
    }
}
