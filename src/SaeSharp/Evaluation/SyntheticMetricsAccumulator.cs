using SaeSharp.Synthetic;
using TorchSharp;
using static TorchSharp.torch;

namespace SaeSharp.Evaluation;

/// <summary>
/// Streaming counts for the per-row metrics of SAELens 6.37.6's <c>eval_sae_on_synthetic_data</c>
/// (<c>sae_lens/synthetic/evals.py</c>): <c>L0Calculator</c> (true_l0, sae_l0: entries &gt; 0 per row),
/// <c>DeadLatentsCalculator</c> (dead_latents: latents never &gt; 0), <c>ShrinkageCalculator</c> (shrinkage: mean of
/// ‖x̂‖/‖x‖ over rows with ‖x‖ &gt; 1e-6) and <c>ClassificationMetricsCalculator</c> (each latent as a detector of its
/// best-matching ground-truth feature by |cosine| of its decoder row: fires when &gt; 0; per-latent precision, recall, F1
/// and accuracy, 0 where undefined, averaged over all latents). The ground-truth feature activations are optional:
/// without them true_l0 and the classification metrics are left out.
/// </summary>
public sealed class SyntheticMetricsAccumulator
{
    private readonly long[] _bestMatch;
    private readonly long[] _tp, _fp, _fn, _tn;
    private readonly bool[] _everFired;
    private double _trueL0, _saeL0, _shrinkage;
    private long _rows, _trueRows, _shrinkRows;

    /// <summary>Accumulates for an SAE with decoder rows <paramref name="decoderRows"/> [d_sae, d] against the true feature
    /// directions <paramref name="gtFeatures"/> [n_features, d].</summary>
    public SyntheticMetricsAccumulator(Tensor decoderRows, Tensor gtFeatures)
    {
        _bestMatch = FeatureMatching.BestMatches(decoderRows, gtFeatures);
        int n = _bestMatch.Length;
        _tp = new long[n]; _fp = new long[n]; _fn = new long[n]; _tn = new long[n];
        _everFired = new bool[n];
    }

    /// <summary>For each latent, the ground-truth feature it is scored against (largest |cosine| of its decoder row).</summary>
    public IReadOnlyList<long> BestMatches => _bestMatch;

    /// <summary>Adds a batch: <paramref name="x"/> the SAE input [B, d], <paramref name="xHat"/> its reconstruction
    /// [B, d], <paramref name="latents"/> the SAE latents [B, d_sae], and <paramref name="featureActs"/> the rows'
    /// ground-truth feature activations [B, n_features] when known (then it must be given for every batch).</summary>
    public void Add(Tensor x, Tensor xHat, Tensor latents, Tensor? featureActs)
    {
        if (featureActs is null)
        {
            AddMatched(x, xHat, latents, null, 0);
            return;
        }
        using var scope = NewDisposeScope();
        using var _ = no_grad();
        var gt = featureActs.detach().to(CPU);
        AddMatched(x, xHat, latents, gt.index_select(1, tensor(_bestMatch)), gt.gt(TorchScalars.Of(0)).sum().item<long>());
    }

    /// <summary>As <see cref="Add"/>, given for the ground truth only what the metrics use: <paramref name="matchedActs"/>
    /// [B, d_sae], column k the activation of latent k's best-matching feature (<see cref="BestMatches"/>), and
    /// <paramref name="positiveFeatureActs"/>, the number of ground-truth activations &gt; 0 in the batch.</summary>
    public void AddMatched(Tensor x, Tensor xHat, Tensor latents, Tensor? matchedActs, long positiveFeatureActs)
    {
        using var scope = NewDisposeScope();
        using var _ = no_grad();
        long b = x.shape[0];
        if (matchedActs is not null && (matchedActs.shape[0] != b || matchedActs.shape[1] != _bestMatch.Length))
            throw new SaeSharpException($"synthetic evaluation: matched ground-truth activations [{string.Join(", ", matchedActs.shape)}] for a batch of {b} rows and {_bestMatch.Length} latents");
        if (matchedActs is null && _trueRows > 0)
            throw new SaeSharpException("synthetic evaluation: ground-truth activations given for some batches only");
        var f = latents.detach().to(CPU);
        var fires = f.gt(TorchScalars.Of(0));
        _saeL0 += fires.sum().to(ScalarType.Float64).item<double>();
        var fired = fires.any(0).data<bool>().ToArray();
        for (int i = 0; i < fired.Length; i++) _everFired[i] |= fired[i];

        var xd = x.detach().to(ScalarType.Float64, CPU);
        var yd = xHat.detach().to(ScalarType.Float64, CPU);
        var inNorm = xd.norm(1);
        var valid = inNorm.gt(TorchScalars.Of(1e-6));
        _shrinkage += (yd.norm(1) / inNorm).masked_select(valid).sum().item<double>();
        _shrinkRows += valid.sum().item<long>();
        _rows += b;

        if (matchedActs is null) return;
        _trueL0 += positiveFeatureActs;
        _trueRows += b;
        if (_bestMatch.Length == 0) return;
        var gtFires = matchedActs.detach().to(CPU).gt(TorchScalars.Of(0));
        var notSae = fires.logical_not();
        var notGt = gtFires.logical_not();
        Count(fires.logical_and(gtFires), _tp);
        Count(fires.logical_and(notGt), _fp);
        Count(notSae.logical_and(gtFires), _fn);
        Count(notSae.logical_and(notGt), _tn);
    }

    private static void Count(Tensor mask, long[] into)
    {
        var c = mask.sum([0], type: ScalarType.Int64).data<long>().ToArray();
        for (int i = 0; i < into.Length; i++) into[i] += c[i];
    }

    /// <summary>Fills the synthetic-data fields of <paramref name="result"/> (mcc and uniqueness are computed by the
    /// caller from the decoder alone); true_l0 and classification/* only when ground-truth activations were added.</summary>
    public SaeEvalResult AddTo(SaeEvalResult result)
    {
        result = result with
        {
            SaeL0 = _rows == 0 ? 0.0 : _saeL0 / _rows,
            DeadLatents = _everFired.Count(e => !e),
            Shrinkage = _shrinkRows == 0 ? 0.0 : _shrinkage / _shrinkRows,
        };
        if (_trueRows == 0) return result;
        int n = _bestMatch.Length;
        if (n == 0) return result with { TrueL0 = _trueL0 / _trueRows, ClassificationPrecision = 0, ClassificationRecall = 0, ClassificationF1Score = 0, ClassificationAccuracy = 0 };
        double p = 0, r = 0, f1 = 0, acc = 0;
        for (int i = 0; i < n; i++)
        {
            double tp = _tp[i], fp = _fp[i], fn = _fn[i], tn = _tn[i];
            double pi = tp + fp > 0 ? tp / (tp + fp) : 0;
            double ri = tp + fn > 0 ? tp / (tp + fn) : 0;
            p += pi;
            r += ri;
            f1 += pi + ri > 0 ? 2 * pi * ri / (pi + ri) : 0;
            acc += (tp + tn) / Math.Max(tp + fp + fn + tn, 1e-8);
        }
        return result with
        {
            TrueL0 = _trueL0 / _trueRows,
            ClassificationPrecision = p / n,
            ClassificationRecall = r / n,
            ClassificationF1Score = f1 / n,
            ClassificationAccuracy = acc / n,
        };
    }
}
