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
        cc.CheckReconstructsInput("crosscoder evaluation");
        cc.CheckInput(x, "evaluation activations");
        if (x.shape[0] == 0) throw new SaeSharpException("crosscoder evaluation: no rows");
        using var _ = no_grad();
        using var acc = new CrossCoderMetricsAccumulator(cc.Cfg);
        long n = x.shape[0];
        for (long start = 0; start < n; start += batchSize)
        {
            using var inner = NewDisposeScope();
            var xb = x.narrow(0, start, Math.Min(batchSize, n - start)).to(ScalarType.Float32);
            var f = cc.Encode(xb);
            acc.Add(xb, cc.Decode(f), CrossCoder.LatentCodes(f));
        }
        return acc.Result();
    }
}

/// <summary>Running sums of <see cref="CrossCoderEvaluator"/>'s metrics over batches of rows (float64): Σ(x − x̂)² per layer,
/// Σx and Σx² per layer and dimension (the variance about the mean from the sums), Σ L0 and the latents that fired.</summary>
internal sealed class CrossCoderMetricsAccumulator : IDisposable
{
    private readonly CrossCoderConfig _cfg;
    private readonly Tensor _sse, _sum, _sumSq, _fired;
    private double _l0;
    private long _rows;

    public CrossCoderMetricsAccumulator(CrossCoderConfig cfg)
    {
        _cfg = cfg;
        _sse = zeros(cfg.NumLayers, ScalarType.Float64).DetachFromDisposeScope();
        _sum = zeros(cfg.NumLayers, cfg.ActivationDim, ScalarType.Float64).DetachFromDisposeScope();
        _sumSq = zeros(cfg.NumLayers, cfg.ActivationDim, ScalarType.Float64).DetachFromDisposeScope();
        _fired = zeros(cfg.DictSize, ScalarType.Bool).DetachFromDisposeScope();
    }

    /// <summary>Rows added so far.</summary>
    public long Rows => _rows;

    /// <summary>Adds rows x [n, L, d], their reconstruction x̂ [n, L, d] and latents f [n, dict_size].</summary>
    public void Add(Tensor x, Tensor xHat, Tensor f)
    {
        using var scope = NewDisposeScope();
        var xd = x.to(ScalarType.Float64).cpu();
        _sse.add_((xd - xHat.to(ScalarType.Float64).cpu()).pow(TorchScalars.Of(2)).sum([0, 2]), TorchScalars.One);
        _sum.add_(xd.sum(0L), TorchScalars.One);
        _sumSq.add_(xd.pow(TorchScalars.Of(2)).sum(0L), TorchScalars.One);
        var active = f.gt(TorchScalars.Of(0)).cpu();
        _l0 += active.sum().to(ScalarType.Float64).item<double>();
        _fired.logical_or_(active.any(0L));
        _rows += x.shape[0];
    }

    public CrossCoderEvalResult Result()
    {
        if (_rows == 0) throw new SaeSharpException("crosscoder evaluation: no rows");
        using var scope = NewDisposeScope();
        long n = _rows;
        using var nScalar = ((double)n).ToScalar();
        var sst = (_sumSq - _sum.pow(TorchScalars.Of(2)).div(nScalar)).sum(-1); // Σ(x − mean)² per layer
        double d = _cfg.ActivationDim;
        var sseA = _sse.data<double>().ToArray();
        var sstA = sst.data<double>().ToArray();
        var perLayer = new List<CrossCoderLayerMetrics>();
        for (int l = 0; l < _cfg.NumLayers; l++) perLayer.Add(new CrossCoderLayerMetrics(sseA[l] / (n * d), 1 - sseA[l] / sstA[l]));
        var total = new CrossCoderLayerMetrics(sseA.Sum() / (n * d * _cfg.NumLayers), 1 - sseA.Sum() / sstA.Sum());
        long dead = _cfg.DictSize - _fired.sum().item<long>();
        return new CrossCoderEvalResult(n, perLayer, total, _l0 / n, dead, _cfg.DictSize);
    }

    public void Dispose()
    {
        _sse.Dispose();
        _sum.Dispose();
        _sumSq.Dispose();
        _fired.Dispose();
    }
}
