using System.Text.Json.Nodes;
using SaeSharp.Activations;
using SaeSharp.Evaluation;
using SaeSharp.Saes;
using static TorchSharp.torch;

namespace SaeSharp.Tests.Evaluation;

public class SaeMetricsTests
{
    private static Tensor T(float[,] v) => tensor(v);

    [Fact]
    public void HandComputedMetrics()
    {
        // x = [[3,4],[1,0]], x̂ = [[3,0],[2,0]], f = [[1,0,-2],[0,0,0.5]]
        var x = T(new float[,] { { 3, 4 }, { 1, 0 } });
        var y = T(new float[,] { { 3, 0 }, { 2, 0 } });
        var f = T(new float[,] { { 1, 0, -2 }, { 0, 0, 0.5f } });
        var acc = new SaeMetricsAccumulator(2, 3);
        acc.Add(x, y, f);
        var r = acc.Result();
        // Squared errors per row: 16 and 1 (total 17).
        Assert.Equal(17.0 / 4, r.Mse, 12);
        Assert.Equal(17.0 / 2, r.MseLoss, 12);
        Assert.Equal((3 + 0.5) / 2, r.L1, 12);
        Assert.Equal(1.5, r.L0, 12);
        // Per-dimension mean [2, 2]; centred rows [1,2] and [-1,-2]: total variance 10.
        Assert.Equal(1.7, r.Fvu, 12);
        Assert.Equal(-0.7, r.ExplainedVariance, 12);
        // cos: 9/(5·3) = 0.6 and 2/(1·2) = 1.
        Assert.Equal(0.8, r.Cosine, 12);
        // ratios 3/5 and 2/1.
        Assert.Equal(1.3, r.L2Ratio, 12);
        // Σ‖x̂‖² = 13, Σ⟨x,x̂⟩ = 11.
        Assert.Equal(13.0 / 11, r.RelativeReconstructionBias, 12);
        Assert.Equal(new[] { 0.5, 0, 1 }, r.FeatureFrequency);
        Assert.Equal(2.0 / 3, r.AliveFraction, 12);
        Assert.Equal(1.0 / 3, r.DeadFraction, 12);
        Assert.Equal(2, r.Rows);
    }

    [Fact]
    public void SaelensNormsAndLegacyExplainedVarianceByHand()
    {
        // Batch A: x = [[0,0],[2,0]], x̂ = [[0,1],[2,0]]; batch B: x = [[0,0],[0,4]], x̂ = [[0,0],[0,2]].
        var xa = T(new float[,] { { 0, 0 }, { 2, 0 } });
        var ya = T(new float[,] { { 0, 1 }, { 2, 0 } });
        var xb = T(new float[,] { { 0, 0 }, { 0, 4 } });
        var yb = T(new float[,] { { 0, 0 }, { 0, 2 } });
        var acc = new SaeMetricsAccumulator(2, 1);
        acc.Add(xa, ya, zeros(2, 1));
        acc.Add(xb, yb, zeros(2, 1));
        var r = acc.Result();
        // ‖x‖: 0, 2, 0, 4; ‖x̂‖: 1, 2, 0, 2.
        Assert.Equal(1.5, r.L2NormIn, 12);
        Assert.Equal(1.25, r.L2NormOut, 12);
        // Batch means [1,0] and [0,2]: ‖x − x̄_b‖² = 1, 1, 4, 4; squared errors 1, 0, 0, 4 → per row 0, 1, 1, 0.
        Assert.Equal(0.5, r.ExplainedVarianceLegacy, 12);

        // The same rows as one batch: mean [0.5, 1], ‖x − x̄‖² = 1.25, 3.25, 1.25, 9.25 → per row 0.2, 1, 1, 1 − 4/9.25.
        var one = new SaeMetricsAccumulator(2, 1);
        one.Add(cat([xa, xb]), cat([ya, yb]), zeros(4, 1));
        var r1 = one.Result();
        Assert.Equal((0.2 + 1 + 1 + (1 - 4 / 9.25)) / 4, r1.ExplainedVarianceLegacy, 12);
        Assert.Equal(r.L2NormIn, r1.L2NormIn, 12);
        Assert.Equal(r.L2NormOut, r1.L2NormOut, 12);
        // Not 1 − fvu: Σ err = 5 over Σ‖x − x̄‖² = 15.
        Assert.Equal(1 - 5 / 15.0, r1.ExplainedVariance, 12);
    }

    /// <summary>Rows whose target has (nearly) zero norm: SAELens divides ‖x̂‖ by 1 where ‖x‖ &lt; 1e-4, and torch's
    /// cosine_similarity divides by max(‖x‖‖x̂‖, 1e-8), so a zero row has cosine 0 and neither metric becomes infinite.</summary>
    [Fact]
    public void L2RatioAndCosineOfNearZeroTargetRows()
    {
        var x = T(new float[,] { { 0, 0 }, { 3e-5f, 4e-5f }, { 3, 4 } });
        var y = T(new float[,] { { 1, 0 }, { 0, 2 }, { 3, 0 } });
        var acc = new SaeMetricsAccumulator(2, 1);
        acc.Add(x, y, zeros(3, 1));
        var r = acc.Result();
        // ratios: 1/1 (zero row), 2/1 (‖x‖ = 5e-5 < 1e-4), 3/5.
        Assert.Equal((1 + 2 + 0.6) / 3, r.L2Ratio, 6);
        // cosines: 0 (‖x‖‖x̂‖ = 0 < 1e-8), 8e-5/(5e-5·2) = 0.8, 9/(5·3) = 0.6.
        Assert.Equal((0 + 0.8 + 0.6) / 3, r.Cosine, 5);
    }

    /// <summary>The four scores from hand-picked losses, each against its own ablation (a perfect SAE scores 1 whatever
    /// the denominator, so the evaluator tests cannot tell them apart).</summary>
    [Fact]
    public void DownstreamScoresUseTheirOwnAblation()
    {
        var m = new DownstreamMetrics
        {
            Name = "s", HookName = "h", Reconstruction = new SaeEvalResult(),
            CeLossWithoutSae = 2.0, CeLossWithSae = 2.5, CeLossWithAblation = 4.0, CeLossWithMeanAblation = 3.0,
            KlDivWithSae = 0.2, KlDivWithAblation = 1.0, KlDivWithMeanAblation = 0.5,
        };
        Assert.Equal((4.0 - 2.5) / (4.0 - 2.0), m.CeLossScore, 12);
        Assert.Equal((3.0 - 2.5) / (3.0 - 2.0), m.CeLossScoreMeanAblation, 12);
        Assert.Equal((1.0 - 0.2) / 1.0, m.KlDivScore, 12);
        Assert.Equal((0.5 - 0.2) / 0.5, m.KlDivScoreMeanAblation, 12);
        var json = m.ToJson();
        Assert.Equal(0.75, json["model_performance_preservation"]!["ce_loss_score"]!.GetValue<double>(), 12);
        Assert.Equal(0.5, json["model_performance_preservation"]!["ce_loss_score_mean_ablation"]!.GetValue<double>(), 12);
        Assert.Equal(0.8, json["model_behavior_preservation"]!["kl_div_score"]!.GetValue<double>(), 12);
        Assert.Equal(0.6, json["model_behavior_preservation"]!["kl_div_score_mean_ablation"]!.GetValue<double>(), 12);
    }

    [Fact]
    public void FvuUsesThePerDimensionMeanNotZero()
    {
        // Large offsets (1000, 2000): variance about the mean is 10, about zero ~2e7 (SAELens #659).
        var x = T(new float[,] { { 1001, 2000 }, { 999, 2002 }, { 1000, 1998 }, { 1000, 2000 } });
        var e = T(new float[,] { { 0.5f, 0 }, { 0, -0.5f }, { 0, 0 }, { 0.5f, 0.5f } });
        var acc = new SaeMetricsAccumulator(2, 1);
        // Added in two batches, so the mean is merged across batches.
        acc.Add(x[..1], (x + e)[..1], zeros(1, 1));
        acc.Add(x[1..], (x + e)[1..], zeros(3, 1));
        var r = acc.Result();
        Assert.Equal(1.0 / 10, r.Fvu, 9);
        Assert.Equal(0.9, r.ExplainedVariance, 9);
        double aboutZero = 1.0 / (1001.0 * 1001 + 2000.0 * 2000 + 999.0 * 999 + 2002.0 * 2002 + 1000.0 * 1000 + 1998.0 * 1998 + 1000.0 * 1000 + 2000.0 * 2000);
        Assert.True(Math.Abs(r.Fvu - aboutZero) > 0.09);
    }

    [Fact]
    public void FvuOfHugeMeanDataMatchesTwoPassLoop()
    {
        var g = new Generator(5);
        var x = randn(300, 6, generator: g) + 1e4f;
        var y = x + randn(300, 6, generator: g) * 0.3f;
        var acc = new SaeMetricsAccumulator(6, 2);
        foreach (var (s, n) in new[] { (0, 1), (1, 120), (121, 179) })
            acc.Add(x.narrow(0, s, n), y.narrow(0, s, n), zeros(n, 2));
        var xs = x.data<float>().ToArray();
        var ys = y.data<float>().ToArray();
        var mean = new double[6];
        for (int i = 0; i < 300; i++) for (int d = 0; d < 6; d++) mean[d] += xs[i * 6 + d] / 300.0;
        double sse = 0, tv = 0;
        for (int i = 0; i < 300; i++)
            for (int d = 0; d < 6; d++)
            {
                sse += Math.Pow((double)xs[i * 6 + d] - ys[i * 6 + d], 2);
                tv += Math.Pow(xs[i * 6 + d] - mean[d], 2);
            }
        Assert.Equal(sse / tv, acc.Result().Fvu, 9);
    }

    [Fact]
    public void StreamedEqualsSingleBatch()
    {
        var g = new Generator(3);
        var x = randn(20, 5, generator: g) * 2 + 3;
        var y = x + randn(20, 5, generator: g) * 0.5f;
        var f = nn.functional.relu(randn(20, 7, generator: g) - 0.5f);
        f[.., 6] = tensor(0f); // a dead feature
        var one = new SaeMetricsAccumulator(5, 7);
        one.Add(x, y, f);
        var many = new SaeMetricsAccumulator(5, 7);
        int start = 0;
        foreach (int n in new[] { 3, 7, 1, 9 })
        {
            many.Add(x.narrow(0, start, n), y.narrow(0, start, n), f.narrow(0, start, n));
            start += n;
        }
        var a = one.Result();
        var b = many.Result();
        foreach (var (p, q) in new[] { (a.Mse, b.Mse), (a.MseLoss, b.MseLoss), (a.L1, b.L1), (a.L0, b.L0), (a.Fvu, b.Fvu), (a.Cosine, b.Cosine), (a.L2Ratio, b.L2Ratio), (a.RelativeReconstructionBias, b.RelativeReconstructionBias), (a.AliveFraction, b.AliveFraction) })
            Assert.Equal(p, q, 10);
        Assert.Equal(a.FeatureFrequency, b.FeatureFrequency);
        Assert.Equal(6.0 / 7, a.AliveFraction, 12);
    }

    [Fact]
    public void JsonKeysAreTheDocumentedNames()
    {
        var acc = new SaeMetricsAccumulator(2, 2);
        acc.Add(T(new float[,] { { 1, 2 } }), T(new float[,] { { 1, 2 } }), T(new float[,] { { 1, 0 } }));
        var obj = JsonNode.Parse(acc.Result().ToJson())!.AsObject();
        Assert.Equal(new[] { "alive_fraction", "cosine", "dead_fraction", "explained_variance", "explained_variance_legacy", "fvu", "l0", "l0_distribution", "l1", "l2_norm_in", "l2_norm_out", "l2_ratio", "mse", "mse_loss", "n_rows", "relative_reconstruction_bias" },
            obj.Select(kv => kv.Key).Order(StringComparer.Ordinal));
        // One row: variance about the mean is zero, so fvu is undefined and written as NaN.
        Assert.Equal("NaN", obj["fvu"]!.GetValue<string>());
        var withTruth = acc.Result() with { Mmcs = 0.5, RecoveredFraction = 0.25 };
        var obj2 = JsonNode.Parse(withTruth.ToJson())!.AsObject();
        Assert.Equal(0.5, obj2["mmcs"]!.GetValue<double>());
        Assert.Equal(0.25, obj2["recovered_fraction"]!.GetValue<double>());
    }

    [Fact]
    public void InModelJsonGroupsTheSaelensNormsAndLegacyAsSaelensRunEvals()
    {
        var r = new SaeEvalResult { L2NormIn = 1.5, L2NormOut = 1.25, ExplainedVarianceLegacy = 0.5 };
        var json = new DownstreamMetrics { Name = "s", HookName = "h", Reconstruction = r }.ToJson();
        // SAELens run_evals: l2_norm_in/out under shrinkage, explained_variance_legacy under reconstruction_quality.
        Assert.Equal(1.5, json["shrinkage"]!["l2_norm_in"]!.GetValue<double>());
        Assert.Equal(1.25, json["shrinkage"]!["l2_norm_out"]!.GetValue<double>());
        Assert.Equal(0.5, json["reconstruction_quality"]!["explained_variance_legacy"]!.GetValue<double>());
    }

    /// <summary>An SAE that reconstructs exactly: features relu(x_i) and relu(−x_i), decoder rows ±e_i.</summary>
    private static StandardSae SignSplittingSae()
    {
        var sae = new StandardSae(new SaeConfig { DIn = 2, DSae = 4 });
        using (no_grad())
        {
            var w = T(new float[,] { { 1, -1, 0, 0 }, { 0, 0, 1, -1 } });
            sae.WEnc.copy_(w);
            sae.WDec.copy_(w.t());
        }
        return sae;
    }

    [Fact]
    public void EvaluatesAnSaeOverASourceInBatches()
    {
        using var sae = SignSplittingSae();
        var x = T(new float[,] { { 1, -2 }, { 3, 0 }, { 5, 5 } });
        using var src = new TensorActivationSource(x, shuffle: false);
        var r = SaeEvaluator.Evaluate(sae, src, maxRows: 2, batchSize: 1);
        Assert.Equal(2, r.Rows);
        Assert.Equal(0, r.Mse, 12);
        Assert.Equal(0, r.Fvu, 12);
        Assert.Equal(1, r.Cosine, 6);
        Assert.Equal(1, r.L2Ratio, 6);
        Assert.Equal(1, r.RelativeReconstructionBias, 12);
        // f rows: [1,0,0,2] and [3,0,0,0].
        Assert.Equal(1.5, r.L0, 12);
        Assert.Equal(3, r.L1, 12);
        Assert.Equal(new[] { 1.0, 0, 0, 0.5 }, r.FeatureFrequency);
        Assert.Equal(0.5, r.DeadFraction, 12);
    }

    [Fact]
    public void GroundTruthAddsRecoveryMetrics()
    {
        using var sae = SignSplittingSae();
        var truth = T(new float[,] { { 0, 3 }, { 1, 1 } });
        var batches = new[] { new ActivationBatch(T(new float[,] { { 1, 2 }, { -1, 0 } })) };
        var r = SaeEvaluator.Evaluate(sae, batches, groundTruthFeatures: truth);
        // (0,3) is decoder row 2 exactly; (1,1)/√2 has cosine 1/√2 with rows 0 and 2.
        Assert.Equal((1 + 1 / Math.Sqrt(2)) / 2, r.Mmcs!.Value, 9);
        Assert.Equal(0.5, r.RecoveredFraction!.Value, 12);
    }

    [Fact]
    public void TranscoderIsComparedWithTheTarget()
    {
        using var sae = SignSplittingSae();
        var x = T(new float[,] { { 1, 2 } });
        var target = T(new float[,] { { 1, 4 } });
        var r = SaeEvaluator.Evaluate(sae, new[] { new ActivationBatch(x, target) });
        Assert.Equal(4.0 / 2, r.Mse, 12); // reconstruction (1,2) vs target (1,4)
    }

    /// <summary>Batches from the caller's own code: a NaN is named by its row (counted over the batches), as the
    /// activation sources name it, instead of every metric coming out NaN.</summary>
    [Fact]
    public void A_nan_in_the_given_batches_is_named_by_its_row()
    {
        using var sae = SignSplittingSae();
        var first = T(new float[,] { { 1, 2 }, { 3, 4 } });
        var second = T(new float[,] { { 1, 2 }, { 3, float.NaN } });
        var e = Assert.Throws<SaeSharpException>(() => SaeEvaluator.Evaluate(sae, new[] { new ActivationBatch(first), new ActivationBatch(second) }));
        Assert.Equal("evaluation: input: row 3 holds NaN (column 1); activations must be finite", e.Message);
        var target = T(new float[,] { { float.PositiveInfinity, 0 } });
        e = Assert.Throws<SaeSharpException>(() => SaeEvaluator.Evaluate(sae, new[] { new ActivationBatch(T(new float[,] { { 1, 2 } }), target) }));
        Assert.Contains("evaluation: target: row 0 holds +Inf", e.Message);
    }

    [Fact]
    public void EvaluationLeavesNoLiveTensors()
    {
        using var sae = SignSplittingSae();
        var x = randn(40, 2);
        var truth = randn(3, 2);
        using var src = new TensorActivationSource(x, loop: true);
        Assert.Equal(0, LiveTensors.Leaked(() => SaeEvaluator.Evaluate(sae, src, maxRows: 30, batchSize: 4, groundTruthFeatures: truth)));
    }

    [Fact]
    public void WidthMismatchIsReported()
    {
        using var sae = SignSplittingSae();
        using var src = new TensorActivationSource(randn(5, 3));
        var e = Assert.Throws<SaeSharpException>(() => SaeEvaluator.Evaluate(sae, src, maxRows: 5));
        Assert.Contains("d_in = 3", e.Message);
        Assert.Contains("expects d_in = 2", e.Message);
    }
}
