using System.Text.Json;
using SaeSharp.Analysis;
using SaeSharp.IO;
using SaeSharp.Models;
using SaeSharp.Tests.Tokenizers;
using static TorchSharp.torch;

namespace SaeSharp.Tests.Analysis;

/// <summary>
/// <see cref="LogitAttribution"/> and <see cref="HeadDetector"/> against TransformerLens's own ActivationCache and
/// head_detector.py (v2.12.0; bench/reference/tl_reference_fixture.py wrote tests/data/tl_reference/analysis_*) on the tiny
/// GPT-2 (LayerNorm) and Llama 3 (RMSNorm, grouped-query) checkpoints, processed as from_pretrained processes them (the
/// Exploratory Analysis Demo's setting).
/// </summary>
public class TransformerLensAnalysisReferenceTests
{
    private const double Tolerance = 1e-4;

    [Theory]
    [InlineData("gpt2")]
    [InlineData("llama3")]
    public void Direct_logit_attribution_equals_the_demos_stacks(string family)
    {
        using var scope = NewDisposeScope();
        var r = Npy.LoadNpz(TestPaths.Data("tl_reference", $"analysis_{family}.npz"));
        var labels = JsonSerializer.Deserialize<Dictionary<string, string[]>>(File.ReadAllText(TestPaths.Data("tl_reference", $"analysis_{family}_labels.json")))!;
        using var processed = WeightProcessing.Apply(ModelLoader.FromPretrained(TestPaths.Data("hf_models", family)), WeightProcessingOptions.TransformerLensDefaults);
        var tokens = r["tokens"];
        var answers = r["answers"].data<long>().ToArray();
        var prompts = Enumerable.Range(0, (int)tokens.shape[0]).Select(i => tokens.narrow(0, i, 1)).ToList();
        var result = LogitAttribution.Run(processed.Model, prompts, [(answers[0], answers[1]), (answers[2], answers[3])], processed.Hooks);

        Assert.Equal(r["logit_diff"].data<double>()[0], result.LogitDiff, Tolerance);
        AssertStack("accumulated", result.Accumulated);
        AssertStack("per_head", result.PerHead);
        // decompose_resid: TransformerLens's labels (embed, pos_embed for learned positions, L_attn_out, L_mlp_out).
        AssertStack("per_layer", result.PerLayer);

        void AssertStack(string name, IReadOnlyList<LogitComponent> ours)
        {
            var expected = r[name].data<float>().ToArray();
            Assert.Equal(labels[name], ours.Select(c => c.Label).ToArray());
            for (int i = 0; i < expected.Length; i++)
                Assert.True(Math.Abs(expected[i] - ours[i].LogitDiff) < Tolerance, $"{name} {labels[name][i]}: {ours[i].LogitDiff} against {expected[i]}");
        }
    }

    [Theory]
    [InlineData("gpt2")]
    [InlineData("llama3")]
    public void Head_detector_scores_equal_detect_head(string family)
    {
        using var scope = NewDisposeScope();
        var r = Npy.LoadNpz(TestPaths.Data("tl_reference", $"analysis_{family}.npz"));
        using var processed = WeightProcessing.Apply(ModelLoader.FromPretrained(TestPaths.Data("hf_models", family)), WeightProcessingOptions.TransformerLensDefaults);
        var p = r["detect_prompts"];
        var prompts = Enumerable.Range(0, (int)p.shape[0]).Select(i => p.narrow(0, i, 1)).ToList();
        foreach (var (measure, suffix) in new[] { (HeadErrorMeasure.Mul, "mul"), (HeadErrorMeasure.Abs, "abs") })
        {
            var scores = HeadDetector.Detect(processed.Model, prompts, measure);
            foreach (var (type, name) in new[] { (HeadType.PreviousToken, "previous_token_head"), (HeadType.DuplicateToken, "duplicate_token_head"), (HeadType.Induction, "induction_head") })
            {
                var expected = r[$"detect_{name}_{suffix}"];
                var ours = scores.Of(type);
                Assert.Equal(new long[] { ours.GetLength(0), ours.GetLength(1) }, expected.shape);
                var e = expected.to(ScalarType.Float64).data<double>().ToArray();
                var o = ours.Cast<double>().ToArray();
                // "abs" rounds each prompt's score to 3 decimals before the mean, so a float32 difference can move one step.
                double tolerance = measure == HeadErrorMeasure.Abs ? 1.01e-3 : Tolerance;
                for (int i = 0; i < e.Length; i++)
                    Assert.True(Math.Abs(e[i] - o[i]) < tolerance, $"{name} {suffix} head {i}: {o[i]} against {e[i]}");
            }
        }
    }
}
