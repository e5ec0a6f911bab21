using SaeSharp.Analysis;
using SaeSharp.Tests.Interventions;
using SaeSharp.Tests.Models;
using static TorchSharp.torch;

namespace SaeSharp.Tests.Analysis;

/// <summary>FeatureWeights.Fill for an MLP-output SAE: aligned neurons and the vocabulary limit, against weights read directly.</summary>
public class FeatureWeightsFillTests : ModelTestBase
{
    private static FeatureStatistics Empty(int i) => new()
    {
        Feature = i, Density = 0, MaxActivation = 0, MeanNonzero = 0, Firings = 0, TopExamples = [], Intervals = [], Histogram = new([], []),
    };

    [Fact]
    public void Aligned_neurons_are_the_largest_cosines_between_the_decoder_row_and_each_neurons_output_weights()
    {
        using var model = Gpt2();
        string hook = "blocks.0.hook_mlp_out";
        using var sae = InterventionTests.RandomSae(hook, 16, 32, 8);
        var stats = new[] { Empty(3), Empty(17) };
        FeatureWeights.Fill(stats, model, sae, hook, topLogits: 5, similar: 0, neurons: 4);
        // GPT-2 Conv1D c_proj weight [d_mlp, d_model]: row n is what neuron n writes into the residual stream.
        var wOut = model.named_parameters().First(p => p.name == "transformer.h.0.mlp.c_proj.weight").parameter.detach().to(ScalarType.Float64);
        int dMlp = (int)wOut.shape[0], d = (int)wOut.shape[1];
        var w = wOut.contiguous().data<double>().ToArray();
        var dec = sae.WDec.detach().to(ScalarType.Float64).contiguous().data<double>().ToArray();
        foreach (var f in stats)
        {
            double Cos(int n)
            {
                double ab = 0, aa = 0, bb = 0;
                for (int k = 0; k < d; k++) { ab += dec[f.Feature * d + k] * w[n * d + k]; aa += dec[f.Feature * d + k] * dec[f.Feature * d + k]; bb += w[n * d + k] * w[n * d + k]; }
                return ab / Math.Sqrt(aa * bb);
            }
            var expected = Enumerable.Range(0, dMlp).OrderByDescending(Cos).Take(4).ToList();
            Assert.Equal(expected, f.AlignedNeurons!.Select(x => x.Index));
            foreach (var x in f.AlignedNeurons!) Assert.True(Math.Abs(Cos(x.Index) - x.Cosine) < 1e-5, $"neuron {x.Index}: {x.Cosine}, expected {Cos(x.Index)}");
        }
    }

    [Fact]
    public void Logit_effects_consider_only_the_tokens_below_the_given_vocabulary_size()
    {
        // Pythia pads W_U beyond the tokenizer's vocabulary: with vocabSize 20 of the model's 50 columns, no token ≥ 20
        // may be listed and the histogram counts exactly 20 values.
        using var model = Gpt2();
        string hook = "blocks.0.hook_resid_post";
        using var sae = InterventionTests.RandomSae(hook, 16, 32, 9);
        var stats = Enumerable.Range(0, 32).Select(Empty).ToArray();
        FeatureWeights.Fill(stats, model, sae, hook, topLogits: 5, similar: 0, vocabSize: 20);
        Assert.True(model.Config.DVocab > 20);
        foreach (var f in stats)
        {
            Assert.All(f.TopLogits!.Concat(f.BottomLogits!), t => Assert.InRange(t.Token, 0, 19));
            Assert.Equal(20, f.LogitHistogram!.Counts.Sum());
        }
    }
    [Fact]
    public void Zero_logits_similar_features_and_neurons_leave_those_lists_empty_and_fill_the_histogram()
    {
        using var model = Gpt2();
        string hook = "blocks.0.hook_mlp_out";
        using var sae = InterventionTests.RandomSae(hook, 16, 32, 10);
        var stats = new[] { Empty(0), Empty(31) };
        FeatureWeights.Fill(stats, model, sae, hook, topLogits: 0, similar: 0, neurons: 0);
        foreach (var f in stats)
        {
            Assert.Empty(f.TopLogits);
            Assert.Empty(f.BottomLogits);
            Assert.Empty(f.SimilarFeatures!);
            Assert.Equal(model.Config.DVocab, f.LogitHistogram!.Counts.Sum());
        }
    }
}
