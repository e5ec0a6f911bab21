using System.Text.Json.Nodes;
using SaeSharp.Analysis;
using SaeSharp.Tests.Tokenizers;
using static TorchSharp.torch;

namespace SaeSharp.Tests.Analysis;

/// <summary>
/// <see cref="FeatureWeights.NeuronAlignments"/> against SAEDashboard's <c>add_neuron_alignment_data</c> run on the same
/// decoder (tests/data/neuronpedia/w_dec.json → expected/neuron_alignment.json, written by
/// bench/reference/saedashboard_neuronpedia_fixture.py) and against a row worked out by hand.
/// </summary>
public sealed class NeuronAlignmentTests
{
    private static float[][] WDec() => JsonNode.Parse(File.ReadAllText(TestPaths.Data("neuronpedia", "w_dec.json")))!.AsArray()
        .Select(r => r!.AsArray().Select(v => (float)(double)v!).ToArray()).ToArray();

    private static Tensor AsTensor(float[][] rows) => tensor(rows.SelectMany(r => r).ToArray(), [rows.Length, rows[0].Length]);

    [Theory]
    [InlineData("folded", true)]
    [InlineData("raw", false)]
    public void Tables_equal_SAEDashboards_on_the_same_decoder(string key, bool unitNorm)
    {
        var rows = WDec();
        using var w = AsTensor(rows);
        var features = Enumerable.Range(0, rows.Length).ToList();
        var got = FeatureWeights.NeuronAlignments(w, features, unitNorm);
        var want = JsonNode.Parse(File.ReadAllText(TestPaths.Data("neuronpedia", "expected", "neuron_alignment.json")))![key]!.AsArray();
        Assert.Equal(rows.Length, got.Count);
        for (int i = 0; i < rows.Length; i++)
        {
            var e = want[i]!;
            Assert.Equal(e["indices"]!.AsArray().Select(v => (int)v!), got[i].Select(a => a.Neuron));
            var values = e["values"]!.AsArray().Select(v => (float)(double)v!).ToArray();
            var l1 = e["l1"]!.AsArray().Select(v => (float)(double)v!).ToArray();
            for (int c = 0; c < values.Length; c++)
            {
                Assert.Equal(values[c], got[i][c].Value, 1e-6f);             // float32; torch's reductions may differ by an ulp
                Assert.Equal(l1[c], got[i][c].L1, 1e-6f);
            }
        }
    }

    [Fact]
    public void The_largest_signed_entries_and_their_share_of_the_L1_norm_by_hand()
    {
        using var w = AsTensor([[3f, -4f, 1f, 2f], [-1f, -2f, -3f, -4f]]);
        var t = FeatureWeights.NeuronAlignments(w, [1, 0], unitNormRows: true);
        // Row 0 = (3, -4, 1, 2), L2 √30, L1 10: 3, 2, 1 (−4 is the largest in magnitude but not listed).
        Assert.Equal([0, 3, 2], t[1].Select(a => a.Neuron));
        Assert.Equal([3 / MathF.Sqrt(30), 2 / MathF.Sqrt(30), 1 / MathF.Sqrt(30)], t[1].Select(a => a.Value), new FloatTolerance(1e-6f));
        Assert.Equal([0.3f, 0.2f, 0.1f], t[1].Select(a => a.L1), new FloatTolerance(1e-6f));
        // All negative (−1, −2, −3, −4), L1 10: the three closest to 0, first the largest.
        var raw = FeatureWeights.NeuronAlignments(w, [1], unitNormRows: false)[0];
        Assert.Equal([0, 1, 2], raw.Select(a => a.Neuron));
        Assert.Equal([-1f, -2f, -3f], raw.Select(a => a.Value));
        Assert.Equal([0.1f, 0.2f, 0.3f], raw.Select(a => a.L1), new FloatTolerance(1e-6f));
        Assert.Equal(2, FeatureWeights.NeuronAlignments(w.narrow(1, 0, 2), [0], unitNormRows: false)[0].Count);   // d_in 2 < 3 rows
        using var dead = zeros(2, 4);                                             // an all-zero row: 0/0 written as 0
        Assert.All(FeatureWeights.NeuronAlignments(dead, [1], unitNormRows: true)[0], a => Assert.Equal((0f, 0f), (a.Value, a.L1)));
    }

    [Theory]
    [InlineData("standard", true)]
    [InlineData("jumprelu", true)]
    [InlineData("topk", false)]
    [InlineData("temporal", false)]
    public void The_runner_folds_decoder_norms_except_for_topk_and_temporal(string architecture, bool folds) =>
        Assert.Equal(folds, FeatureWeights.RunnerFoldsDecoderNorm(architecture));

    private sealed class FloatTolerance(float tolerance) : IEqualityComparer<float>
    {
        public bool Equals(float x, float y) => Math.Abs(x - y) <= tolerance;
        public int GetHashCode(float obj) => 0;
    }
}
