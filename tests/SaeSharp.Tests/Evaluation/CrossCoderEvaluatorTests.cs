using SaeSharp.Evaluation;
using SaeSharp.Saes;
using static TorchSharp.torch;

namespace SaeSharp.Tests.Evaluation;

/// <summary>Crosscoder metrics on hand-built crosscoders whose reconstructions are known exactly.</summary>
public class CrossCoderEvaluatorTests
{
    [Fact]
    public void ConstantReconstructionAtTheMeanExplainsNothing()
    {
        // Zero weights, b_dec = each layer's mean: x̂ = mean, so explained variance 0 (about the mean, not zero: SAELens #659),
        // FVU 1, MSE = the population variance; no latent ever fires.
        using var x = tensor(new float[] { 1, 2, 10, 0, 3, 4, 20, 0, 5, 9, 30, 3 }, [3, 2, 2]);
        using var cc = new CrossCoder(new CrossCoderConfig { ActivationDim = 2, DictSize = 3, NumLayers = 2 });
        using (no_grad()) cc.Decoder.Bias.copy_(x.mean([0]));
        var m = CrossCoderEvaluator.Evaluate(cc, x, batchSize: 2);
        // Layer 0: dims (1, 3, 5) and (2, 4, 9): Σ(x − mean)² = 8 + 26 = 34 over 6 entries; layer 1: (10, 20, 30) 200, (0, 0, 3) 6.
        Assert.Equal(34.0 / 6, m.Layers[0].Mse, 5);
        Assert.Equal(206.0 / 6, m.Layers[1].Mse, 4);
        Assert.Equal(0.0, m.Layers[0].ExplainedVariance, 6);
        Assert.Equal(1.0, m.Total.Fvu, 6);
        Assert.Equal(240.0 / 12, m.Total.Mse, 4);
        Assert.Equal(0.0, m.L0);
        Assert.Equal(3, m.DeadLatents);
    }

    [Fact]
    public void AnOffsetReconstructionCountsItsBiasAgainstExplainedVariance()
    {
        // x̂ = mean + 1 in layer 0 (both dims), the mean in layer 1: Σ(x − x̂)² = Σ(x − mean)² + rows·dims·1² = 34 + 6 in
        // layer 0, so explained variance 1 − 40/34 (dictionary_learning's frac_variance_explained, 1 − Σ var(x − x̂) / Σ var(x),
        // would say 0: the residual's constant offset has no variance; docs/metrics.md). Total: 1 − (40 + 206)/(34 + 206).
        using var x = tensor(new float[] { 1, 2, 10, 0, 3, 4, 20, 0, 5, 9, 30, 3 }, [3, 2, 2]);
        using var cc = new CrossCoder(new CrossCoderConfig { ActivationDim = 2, DictSize = 3, NumLayers = 2 });
        using (no_grad()) cc.Decoder.Bias.copy_(x.mean([0]).add(tensor(new float[] { 1, 1, 0, 0 }, [2, 2]), TorchScalars.One));
        var m = CrossCoderEvaluator.Evaluate(cc, x, batchSize: 2);
        Assert.Equal(40.0 / 6, m.Layers[0].Mse, 5);
        Assert.Equal(1 - 40.0 / 34, m.Layers[0].ExplainedVariance, 5);
        Assert.Equal(40.0 / 34, m.Layers[0].Fvu, 5);
        Assert.Equal(0.0, m.Layers[1].ExplainedVariance, 5);
        Assert.Equal(246.0 / 12, m.Total.Mse, 4);
        Assert.Equal(1 - 246.0 / 240, m.Total.ExplainedVariance, 5);
    }

    [Fact]
    public void ExactReconstructionExplainsEverything()
    {
        // One layer, d 2, latents ±e_1, ±e_2: x̂ = ReLU(x) − ReLU(−x) = x. L0 = non-zero entries per row; latent 3 (−e_2) never fires.
        using var x = tensor(new float[] { 1, 2, -3, 0, 0.5f, 4 }, [3, 1, 2]);
        using var cc = new CrossCoder(new CrossCoderConfig { ActivationDim = 2, DictSize = 4, NumLayers = 1 });
        using (no_grad())
        {
            cc.Encoder.Weight.copy_(tensor(new float[] { 1, -1, 0, 0, 0, 0, 1, -1 }, [1, 2, 4]));
            cc.Decoder.Weight.copy_(tensor(new float[] { 1, 0, -1, 0, 0, 1, 0, -1 }, [1, 4, 2]));
        }
        var m = CrossCoderEvaluator.Evaluate(cc, x);
        Assert.Equal(0.0, m.Total.Mse, 10);
        Assert.Equal(1.0, m.Total.ExplainedVariance, 10);
        Assert.Equal(5.0 / 3, m.L0, 10);
        Assert.Equal(1, m.DeadLatents);
    }
}
