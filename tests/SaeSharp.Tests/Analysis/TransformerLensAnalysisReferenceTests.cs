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
        var (r, labels, result) = Attribution(family, neurons: false);
        Assert.Equal(r["logit_diff"].data<double>()[0], result.LogitDiff, Tolerance);
        AssertStack(r, labels, "accumulated", result.Accumulated);
        AssertStack(r, labels, "per_head", result.PerHead);
        // decompose_resid: TransformerLens's labels (embed, pos_embed for learned positions, L_attn_out, L_mlp_out).
        AssertStack(r, labels, "per_layer", result.PerLayer);
    }

    /// <summary>The family's reference, its stacks' labels, and <see cref="LogitAttribution.Run"/> on the processed model for
    /// the reference rows and answers.</summary>
    private static (IReadOnlyDictionary<string, Tensor> Reference, Dictionary<string, string[]> Labels, LogitAttributionResult Result) Attribution(string family, bool neurons)
    {
        var r = Npy.LoadNpz(TestPaths.Data("tl_reference", $"analysis_{family}.npz"));
        var labels = JsonSerializer.Deserialize<Dictionary<string, string[]>>(File.ReadAllText(TestPaths.Data("tl_reference", $"analysis_{family}_labels.json")))!;
        using var processed = WeightProcessing.Apply(ModelLoader.FromPretrained(TestPaths.Data("hf_models", family)), WeightProcessingOptions.TransformerLensDefaults);
        var tokens = r["tokens"];
        var answers = r["answers"].data<long>().ToArray();
        var prompts = Enumerable.Range(0, (int)tokens.shape[0]).Select(i => tokens.narrow(0, i, 1)).ToList();
        return (r, labels, LogitAttribution.Run(processed.Model, prompts, [(answers[0], answers[1]), (answers[2], answers[3])], processed.Hooks, neurons: neurons));
    }

    /// <summary>Our stack has TransformerLens's labels in its order and each value within <see cref="Tolerance"/>.</summary>
    private static void AssertStack(IReadOnlyDictionary<string, Tensor> r, Dictionary<string, string[]> labels, string name, IReadOnlyList<LogitComponent> ours)
    {
        var expected = r[name].data<float>().ToArray();
        Assert.Equal(labels[name], ours.Select(c => c.Label).ToArray());
        for (int i = 0; i < expected.Length; i++)
            Assert.True(Math.Abs(expected[i] - ours[i].LogitDiff) < Tolerance, $"{name} {labels[name][i]}: {ours[i].LogitDiff} against {expected[i]}");
    }

    /// <summary>Neuron-level direct logit attribution: TransformerLens's <c>cache.stack_neuron_results(n_layers)</c> (each
    /// neuron's <c>hook_post</c> times its W_out row) and each layer's b_out, through <c>apply_ln_to_stack</c> and onto the
    /// logit-difference direction, against <see cref="LogitAttribution.Run"/> with neurons (PerNeuron, MlpBias).</summary>
    [Theory]
    [InlineData("gpt2")]
    [InlineData("llama3")]
    public void Neuron_attribution_equals_stack_neuron_results(string family)
    {
        using var scope = NewDisposeScope();
        var (r, labels, result) = Attribution(family, neurons: true);
        AssertStack(r, labels, "per_neuron", result.PerNeuron);
        AssertStack(r, labels, "mlp_bias", result.MlpBias);
    }

    /// <summary>TransformerLens's <c>model(tokens, return_type="loss", loss_per_token=True)</c> (<c>loss_fn(per_token=True)</c>):
    /// −log p(next token) [batch, pos − 1], against <see cref="TokenLosses.NextTokenLoss"/> and its batch mean
    /// <see cref="TokenLosses.LossByPosition"/>.</summary>
    [Theory]
    [InlineData("gpt2")]
    [InlineData("llama3")]
    public void Per_token_loss_equals_loss_fn(string family)
    {
        using var scope = NewDisposeScope();
        var r = Npy.LoadNpz(TestPaths.Data("tl_reference", $"analysis_{family}.npz"));
        using var processed = WeightProcessing.Apply(ModelLoader.FromPretrained(TestPaths.Data("hf_models", family)), WeightProcessingOptions.TransformerLensDefaults);
        var tokens = r["tokens"];
        var expected = r["loss_per_token"].to(ScalarType.Float64);
        var logits = processed.Forward(tokens);
        var ours = TokenLosses.NextTokenLoss(TokenLosses.LogProbs(logits), tokens);
        Assert.Equal(expected.shape, ours.shape);
        Assert.True((expected - ours).abs().max().item<double>() < Tolerance, "per-token loss differs from loss_fn(per_token=True)");
        var mean = expected.mean([0]).data<double>().ToArray();
        var byPosition = TokenLosses.LossByPosition(logits, tokens);
        for (int t = 0; t < mean.Length; t++)
            Assert.Equal(mean[t], byPosition[t], Tolerance);
    }

    /// <summary>TransformerLens's <c>evals.induction_loss</c> (its random ids given: 2 rows of 10, repeated, BOS 1 first)
    /// against <see cref="InductionLoss.FromLogits"/> on the same tokens built here.</summary>
    [Theory]
    [InlineData("gpt2")]
    [InlineData("llama3")]
    public void Induction_loss_equals_evals_induction_loss(string family)
    {
        using var scope = NewDisposeScope();
        var r = Npy.LoadNpz(TestPaths.Data("tl_reference", $"analysis_{family}.npz"));
        using var processed = WeightProcessing.Apply(ModelLoader.FromPretrained(TestPaths.Data("hf_models", family)), WeightProcessingOptions.TransformerLensDefaults);
        var half = r["induction_half"];
        var tokens = cat([half, half], 1);
        tokens[TensorIndex.Colon, 0] = tensor(1L);
        Assert.Equal(r["induction_loss"].data<double>()[0], InductionLoss.FromLogits(processed.Forward(tokens), tokens), Tolerance);
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
