using SaeSharp.Analysis;
using SaeSharp.Evaluation;
using SaeSharp.Interop;
using SaeSharp.Interventions;
using SaeSharp.Models;
using SaeSharp.Saes;
using SaeSharp.Tests.Activations;
using SaeSharp.Tests.Models;
using SaeSharp.Tests.Saes;
using static TorchSharp.torch;

namespace SaeSharp.Tests.Interventions;

/// <summary>
/// A transcoder set (circuit-tracer's per-layer files) as the replacement model of a tiny GPT-2, against the same weights
/// as a whole CLT whose off-diagonal decoders are zero (circuit-tracer's CLT files): the same eval CE and KL, the same
/// feature tables, the same attribution graph.
/// </summary>
public class TranscoderSetReplacementTests : ModelTestBase
{
    private const int DModel = 16, Features = 12, Layers = 2;

    /// <summary>The set and the equivalent CLT, from one random reference with its off-diagonal decoders zeroed.</summary>
    private (CrossLayerTranscoder Set, CrossLayerTranscoder Clt) Pair(int seed, ScalarType dtype = ScalarType.Float32)
    {
        var r = CltReference.Random(Layers, Features, DModel, seed, threshold: true, skip: true).ZeroOffDiagonal();
        r.ScaleThresholds(0.2);
        string set = Sub($"set-{Guid.NewGuid():N}"), clt = Sub($"clt-{Guid.NewGuid():N}");
        r.WriteTranscoderSet(set, threshold: true);
        r.WriteCircuitTracerLn2(clt);
        return (CrossLayerTranscoderLoader.Load(set, dtype: dtype), CrossLayerTranscoderLoader.Load(clt, dtype: dtype));
    }

    [Fact]
    public void Eval_of_a_set_equals_eval_of_the_clt_with_zero_off_diagonal_decoders()
    {
        using var model = Gpt2();
        var windows = ModelActivationSourceTests.Windows(4, 8);
        var (set, clt) = Pair(seed: 5);
        using var _s = set;
        using var _c = clt;
        var options = new DownstreamEvalOptions { BatchSizePrompts = 3 };
        var a = DownstreamEvaluator.EvaluateReplacement(model, set, windows, options);
        var b = DownstreamEvaluator.EvaluateReplacement(model, clt, windows, options);
        Assert.NotEqual(a.CeLossWithoutSae, a.CeLossWithSae);   // not vacuous
        Assert.Equal(b.CeLossWithSae, a.CeLossWithSae, 5);
        Assert.Equal(b.KlDivWithSae, a.KlDivWithSae, 5);
        Assert.Equal(b.CeLossWithAblation, a.CeLossWithAblation, 5);
        Assert.Equal(b.Layers.Select(l => l.L0), a.Layers.Select(l => l.L0));
    }

    [Fact]
    public void Features_of_a_set_equal_the_clts()
    {
        using var model = Gpt2();
        var windows = ModelActivationSourceTests.Windows(5, 8);
        var (set, clt) = Pair(seed: 7);
        using var _s = set;
        using var _c = clt;
        var options = new FeatureAnalysisOptions { BatchSizePrompts = 2, Statistics = new FeatureStatisticsOptions { TopExamples = 3, Context = 2 }, TopLogits = 4, SimilarFeatures = 2 };
        var a = FeatureAnalysis.Run(model, set, windows, options);
        var b = FeatureAnalysis.Run(model, clt, windows, options);
        Assert.Equal(b.Select(x => x.Layer), a.Select(x => x.Layer));
        foreach (var ((_, ra), (_, rb)) in a.Zip(b))
        {
            Assert.Contains(ra.Features, f => f.Firings > 0);
            foreach (var (fa, fb) in ra.Features.Zip(rb.Features))
            {
                Assert.Equal(fb.Firings, fa.Firings);
                Assert.Equal(fb.MaxActivation, fa.MaxActivation, 5);
                Assert.Equal(fb.TopExamples.Select(e => (e.Window, e.Position)), fa.TopExamples.Select(e => (e.Window, e.Position)));
                Assert.Equal(fb.TopLogits.Select(t => t.Token), fa.TopLogits.Select(t => t.Token));
                foreach (var (x, y) in fa.TopLogits.Zip(fb.TopLogits)) Assert.Equal(y.Value, x.Value, 4);
            }
        }
    }

    [Fact]
    public void The_attribution_graph_of_a_set_is_the_clts()
    {
        string dir = TinyModels.WriteGpt2(Sub($"g-{Guid.NewGuid():N}"), 3, Layers, DModel, 4, 50, 32);
        using var model = ModelLoader.FromPretrained(dir, ScalarType.Float64);
        var (set, clt) = Pair(seed: 9, ScalarType.Float64);
        using var _s = set;
        using var _c = clt;
        using var prompt = tensor(new long[] { 5, 11, 23, 42, 7, 19 }, 1, 6);
        var options = new AttributionGraphOptions { MaxLogits = 3, BatchSize = 4 };
        using var a = AttributionGraph.Build(model, set, prompt, options);
        using var b = AttributionGraph.Build(model, clt, prompt, options);
        Assert.Equal(b.ActiveFeatures, a.ActiveFeatures);
        Assert.Equal(b.LogitTokens, a.LogitTokens);
        Assert.True(a.NFeatures >= 5, $"only {a.NFeatures} active features");
        Assert.Equal(b.AdjacencyMatrix.shape, a.AdjacencyMatrix.shape);
        Assert.True(a.AdjacencyMatrix.allclose(b.AdjacencyMatrix, rtol: 1e-9, atol: 1e-12));
        // Feature-to-feature edges exist (through the residual stream), so the comparison is not vacuous.
        Assert.True(a.AdjacencyMatrix.narrow(0, 0, a.NFeatures).narrow(1, 0, a.NFeatures).abs().max().item<double>() > 1e-4);
    }
}
