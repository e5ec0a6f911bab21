using SaeSharp.Saes;
using TorchSharp;
using static TorchSharp.torch;

namespace SaeSharp.Evaluation;

/// <summary>Reconstruction metrics of one layer slot of a crosscoder (or, for <see cref="CrossCoderEvalResult.Total"/>, of all).</summary>
/// <param name="Mse">Mean over rows and dimensions of (x − x̂)².</param>
/// <param name="ExplainedVariance">1 − Σ(x − x̂)² / Σ(x − mean x)², the mean taken per dimension over the rows (not about zero).</param>
public sealed record CrossCoderLayerMetrics(double Mse, double ExplainedVariance)
{
    /// <summary>Fraction of variance unexplained, 1 − explained variance.</summary>
    public double Fvu => 1 - ExplainedVariance;
}

/// <summary>A crosscoder's metrics on [N, L, d] activations: per layer, in total, and of its latents.</summary>
/// <param name="Rows">Rows evaluated.</param>
/// <param name="Layers">Per layer slot.</param>
/// <param name="Total">All layers together (sums over every layer's entries).</param>
/// <param name="L0">Mean number of non-zero latents per row.</param>
/// <param name="DeadLatents">Latents never non-zero on these rows.</param>
/// <param name="DictSize">Number of latents.</param>
public sealed record CrossCoderEvalResult(long Rows, IReadOnlyList<CrossCoderLayerMetrics> Layers, CrossCoderLayerMetrics Total, double L0, long DeadLatents, int DictSize);

/// <summary>Evaluates a crosscoder on activations with a layer axis (inference form: BatchTopK with its threshold).</summary>
public static class CrossCoderEvaluator
{
    /// <summary>Metrics of <paramref name="cc"/> on <paramref name="x"/> [N, L, d], in batches of <paramref name="batchSize"/> rows,
    /// accumulated in float64.</summary>
    public static CrossCoderEvalResult Evaluate(CrossCoder cc, Tensor x, int batchSize = 4096)
    {
        ArgumentNullException.ThrowIfNull(cc);
        cc.CheckInput(x, "evaluation activations");
        if (x.shape[0] == 0) throw new SaeSharpException("crosscoder evaluation: no rows");
        using var _ = no_grad();
        using var scope = NewDisposeScope();
        int layers = cc.Cfg.NumLayers;
        long n = x.shape[0];
        // Σ(x − x̂)² per layer, Σx and Σx² per layer and dimension (float64): the variance about the mean from the sums.
        var sse = zeros(layers, ScalarType.Float64);
        var sum = zeros(layers, cc.Cfg.ActivationDim, ScalarType.Float64);
        var sumSq = zeros(layers, cc.Cfg.ActivationDim, ScalarType.Float64);
        var fired = zeros(cc.Cfg.DictSize, ScalarType.Bool);
        double l0 = 0;
        for (long start = 0; start < n; start += batchSize)
        {
            using var inner = NewDisposeScope();
            var xb = x.narrow(0, start, Math.Min(batchSize, n - start)).to(ScalarType.Float32);
            var f = cc.Encode(xb);
            var xHat = cc.Decode(f);
            var xd = xb.to(ScalarType.Float64);
            sse.add_((xd - xHat.to(ScalarType.Float64)).pow(TorchScalars.Of(2)).sum([0, 2]), TorchScalars.One);
            sum.add_(xd.sum(0L), TorchScalars.One);
            sumSq.add_(xd.pow(TorchScalars.Of(2)).sum(0L), TorchScalars.One);
            var active = f.gt(TorchScalars.Of(0));
            l0 += active.sum().to(ScalarType.Float64).item<double>();
            fired.logical_or_(active.any(0L));
        }
        using var nScalar = ((double)n).ToScalar();
        var sst = (sumSq - sum.pow(TorchScalars.Of(2)).div(nScalar)).sum(-1); // Σ(x − mean)² per layer
        double d = cc.Cfg.ActivationDim;
        var perLayer = new List<CrossCoderLayerMetrics>();
        var sseA = sse.data<double>().ToArray();
        var sstA = sst.data<double>().ToArray();
        for (int l = 0; l < layers; l++) perLayer.Add(new CrossCoderLayerMetrics(sseA[l] / (n * d), 1 - sseA[l] / sstA[l]));
        var total = new CrossCoderLayerMetrics(sseA.Sum() / (n * d * layers), 1 - sseA.Sum() / sstA.Sum());
        long dead = cc.Cfg.DictSize - fired.sum().item<long>();
        return new CrossCoderEvalResult(n, perLayer, total, l0 / n, dead, cc.Cfg.DictSize);
    }
}
