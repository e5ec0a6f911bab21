using System.Text.Json.Nodes;
using SaeSharp.Evaluation;
using SaeSharp.Interop;
using SaeSharp.IO;
using SaeSharp.Tests.Tokenizers;
using static TorchSharp.torch;

namespace SaeSharp.Tests.Evaluation;

/// <summary>
/// The per-feature metrics against SAELens 6.37.6's own <c>get_featurewise_weight_based_metrics</c> and
/// <c>get_sparsity_and_variance_metrics</c> (tests/data/feature_metrics, written by
/// bench/reference/feature_metrics_fixture.py: SAEs saved by SAELens's save_model, the lists its evals.py returned, NaN as
/// null). SAELens computes in float32, SaeSharp in float64: agreement to 1e-6.
/// </summary>
public class FeatureMetricsSaeLensTests
{
    private static readonly JsonObject Expected = JsonNode.Parse(File.ReadAllText(TestPaths.Data("feature_metrics", "expected.json")))!.AsObject();

    private static void Near(JsonNode? expected, IReadOnlyList<double>? actual, string what)
    {
        Assert.NotNull(expected);
        Assert.NotNull(actual);
        var e = expected.AsArray();
        Assert.Equal(e.Count, actual.Count);
        for (int i = 0; i < e.Count; i++)
        {
            if (e[i] is null) Assert.True(double.IsNaN(actual[i]), $"{what}[{i}]: SAELens NaN, SaeSharp {actual[i]}");
            else Assert.True(Math.Abs(e[i]!.GetValue<double>() - actual[i]) <= 1e-6, $"{what}[{i}]: SAELens {e[i]}, SaeSharp {actual[i]}");
        }
    }

    private static FeatureMetrics Weights(string name)
    {
        using var sae = SaeLensFormat.Load(TestPaths.Data("feature_metrics", name));
        return new FeatureMetrics { FeatureDensity = new double[sae.Cfg.DSae] }.WithWeights(sae);
    }

    [Theory]
    [InlineData("standard")]
    [InlineData("gated")]
    [InlineData("matching_pursuit")]
    public void Weight_based_metrics_match_saelens(string name)
    {
        var e = Expected["weights"]![name]!.AsObject();
        var m = Weights(name);
        Near(e["encoder_norm"], m.EncoderNorm, $"{name} encoder_norm");
        Near(e["encoder_decoder_cosine_sim"], m.EncoderDecoderCosineSim, $"{name} encoder_decoder_cosine_sim");
        if (e["encoder_bias"] is { } bias) Near(bias, m.EncoderBias, $"{name} encoder_bias");
        else Assert.Null(m.EncoderBias);
        Assert.Equal(e.Select(p => p.Key), m.ToJson().Select(p => p.Key).Skip(1));   // after feature_density, SAELens's keys
    }

    /// <summary>Where SAELens raises, SaeSharp answers as documented: a tied temporal SAE (SAELens: no attribute W_enc)
    /// encodes with W_decᵀ, so its lists are SAELens's matching_pursuit ones on the same W_dec; a transcoder with
    /// d_out ≠ d_in (SAELens: the cosine's shapes do not broadcast) has no cosine list, and the standard SAE's norms
    /// and biases (the same W_enc, b_enc).</summary>
    [Fact]
    public void Where_saelens_raises_saesharp_answers_as_documented()
    {
        var w = Expected["weights"]!;
        Assert.StartsWith("AttributeError", w["temporal_tied"]!["raises"]!.GetValue<string>());
        var temporal = Weights("temporal_tied");
        Near(w["matching_pursuit"]!["encoder_norm"], temporal.EncoderNorm, "temporal_tied encoder_norm");
        Near(w["matching_pursuit"]!["encoder_decoder_cosine_sim"], temporal.EncoderDecoderCosineSim, "temporal_tied cosine");
        Assert.Null(temporal.EncoderBias);

        Assert.StartsWith("RuntimeError", w["transcoder"]!["raises"]!.GetValue<string>());
        var transcoder = Weights("transcoder");
        Near(w["standard"]!["encoder_norm"], transcoder.EncoderNorm, "transcoder encoder_norm");
        Near(w["standard"]!["encoder_bias"], transcoder.EncoderBias, "transcoder encoder_bias");
        Assert.Null(transcoder.EncoderDecoderCosineSim);
    }

    /// <summary>SAELens's feature_density and consistent_activation_heuristic over 2 batches of 3 windows with BOS and pad
    /// tokens excluded, reproduced by feeding the accumulator what <see cref="DownstreamEvaluator"/> feeds it: each batch's
    /// counted positions, their encoding, and each position's window within the batch.</summary>
    [Fact]
    public void Density_and_heuristic_match_saelens_with_excluded_tokens()
    {
        using var sae = SaeLensFormat.Load(TestPaths.Data("feature_metrics", "standard"));
        var data = SafeTensors.Load(TestPaths.Data("feature_metrics", "activations.safetensors"));
        var e = Expected["density"]!;
        var excluded = e["excluded_tokens"]!.AsArray().Select(v => v!.GetValue<long>()).ToArray();
        try
        {
            var tokens = data["tokens"];
            var x = data["x"];
            long batches = tokens.shape[0], windows = tokens.shape[1], positions = tokens.shape[2];
            var acc = new SaeMetricsAccumulator(sae.Cfg.DIn, sae.Cfg.DSae);
            using var _ = no_grad();
            for (long b = 0; b < batches; b++)
            {
                using var scope = NewDisposeScope();
                var ids = tokens[b].data<long>().ToArray();
                var counted = Enumerable.Range(0, ids.Length).Where(i => !excluded.Contains(ids[i])).Select(i => (long)i).ToArray();
                var rows = x[b].reshape(windows * positions, -1).index_select(0, tensor(counted));
                var (y, f) = sae.Run(rows);
                acc.Add(rows, y, f, prompt: tensor(counted.Select(i => i / positions).ToArray()));
            }
            var m = acc.Result().FeatureMetrics!;
            Near(e["feature_density"], m.FeatureDensity, "feature_density");
            Near(e["consistent_activation_heuristic"], m.ConsistentActivationHeuristic, "consistent_activation_heuristic");
        }
        finally
        {
            foreach (var t in data.Values) t.Dispose();
        }
    }
}
