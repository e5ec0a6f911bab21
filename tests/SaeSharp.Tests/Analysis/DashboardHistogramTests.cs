using System.Text.Json.Nodes;
using SaeSharp.Analysis;
using SaeSharp.Tests.Tokenizers;
using static TorchSharp.torch;

namespace SaeSharp.Tests.Analysis;

/// <summary>
/// <see cref="DashboardHistogram.FromData"/> and the export's bar positions against SAEDashboard's
/// <c>HistogramData.from_data</c> run by torch on the same vectors (tests/data/neuronpedia/expected/logit_histograms.json,
/// written by bench/reference/saedashboard_neuronpedia_fixture.py): a normal sample and a narrow range; values on bin
/// edges by hand (torch versions differ there, TorchSharp's libtorch being the newer).
/// </summary>
public sealed class DashboardHistogramTests
{
    [Fact]
    public void Counts_edges_and_bar_values_equal_SAEDashboards_from_data()
    {
        var cases = JsonNode.Parse(File.ReadAllText(TestPaths.Data("neuronpedia", "expected", "logit_histograms.json")))!.AsArray();
        Assert.Equal(2, cases.Count);
        foreach (var c in cases)
        {
            var data = c!["data"]!.AsArray().Select(v => (float)(double)v!).ToArray();
            using var t = tensor(data);
            var h = DashboardHistogram.FromData(t);
            Assert.True(c["bar_heights"]!.AsArray().Select(v => (long)v!).SequenceEqual(h.Counts), $"case {cases.IndexOf(c)}: {string.Join(",", h.Counts)}");
            Assert.Equal(data.Length, h.Counts.Sum());
            // torch 1.13 (the fixture's) and libtorch 2.10 (TorchSharp's) compute linspace's upper half differently
            // (start + i·step against end − (n − i)·step): edges may differ in the last float32 bit.
            var edges = c["bin_edges"]!.AsArray().Select(v => (double)v!).ToArray();
            Assert.Equal(edges.Length, h.Edges.Length);
            for (int i = 0; i < edges.Length; i++) Assert.Equal(edges[i], h.Edges[i], 1e-6);
            Assert.Equal(c["bar_values"]!.AsArray().Select(v => (double)v!), NeuronpediaExport.BarValues(h));
        }
    }

    [Fact]
    public void Fifty_bins_from_min_to_max_the_max_in_the_last()
    {
        using var t = tensor(new float[] { 0, 1, 2, 5 });
        var h = DashboardHistogram.FromData(t);
        Assert.Equal(51, h.Edges.Length);
        Assert.Equal((0.0, 0.1, 5.0), (h.Edges[0], h.Edges[1], h.Edges[50]), new DoubleTuple(1e-6));
        Assert.Equal(1, h.Counts[0]);
        Assert.Equal(1, h.Counts[10]);                                            // 1 = edge 10: bin [1, 1.1)
        Assert.Equal(0, h.Counts[9]);
        Assert.Equal(1, h.Counts[20]);
        Assert.Equal(1, h.Counts[49]);                                            // the max
        Assert.Equal(4, h.Counts.Sum());
        using var empty = zeros(0);
        Assert.Empty(DashboardHistogram.FromData(empty).Counts);
    }

    private sealed class DoubleTuple(double tol) : IEqualityComparer<(double, double, double)>
    {
        public bool Equals((double, double, double) x, (double, double, double) y) =>
            Math.Abs(x.Item1 - y.Item1) <= tol && Math.Abs(x.Item2 - y.Item2) <= tol && Math.Abs(x.Item3 - y.Item3) <= tol;
        public int GetHashCode((double, double, double) obj) => 0;
    }
}
