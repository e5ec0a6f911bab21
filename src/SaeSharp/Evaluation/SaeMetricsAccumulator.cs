using TorchSharp;
using static TorchSharp.torch;

namespace SaeSharp.Evaluation;

/// <summary>
/// Streaming sums for <see cref="SaeEvalResult"/>: batches of (x, x̂, f) are added one at a time and nothing but
/// running totals (in float64) is kept, so any number of rows can be evaluated. The per-dimension mean needed by the
/// FVU is merged across batches with Chan et al.'s pairwise update of the centred sum of squares, which stays exact
/// for data with a large mean (where Σx² − N·x̄² would cancel). Two metrics of SAELens's,
/// <c>explained_variance_legacy</c> (each row's variance is taken about its batch's mean) and its evaluation <c>mse</c>
/// (each row's error over its batch's row count), are per batch by definition, so they depend on how rows are split into
/// the batches given to <see cref="Add"/>.
/// </summary>
public sealed class SaeMetricsAccumulator
{
    private readonly int _dOut;
    private readonly int _dSae;
    private long _n;
    private double _sse, _l1, _l0, _cos, _l2Ratio, _xHatSq, _dot, _l2In, _l2Out, _evLegacy, _batchMse;
    private double _m2;             // Σ over rows and dims of (x − mean)²
    private readonly double[] _mean; // per-dimension mean of x so far
    private readonly long[] _fired;  // per feature: rows with f ≠ 0 (the one firing count: density, alive, L0's per-feature part)
    private readonly long[] _firedPrompts; // per feature: prompts with a row where f ≠ 0 (when rows carry their prompt)
    private bool? _withPrompts;      // whether the batches carried prompt indices (all or none)
    private readonly long[] _l0Rows; // per L0 value 0..d_sae: rows with that many features ≠ 0 (the per-token L0 histogram)

    /// <summary>An empty accumulator for targets of width <paramref name="dOut"/> and <paramref name="dSae"/> latents.</summary>
    public SaeMetricsAccumulator(int dOut, int dSae)
    {
        if (dOut <= 0 || dSae <= 0) throw new ArgumentOutOfRangeException(nameof(dOut), "widths must be positive");
        _dOut = dOut;
        _dSae = dSae;
        _mean = new double[dOut];
        _fired = new long[dSae];
        _firedPrompts = new long[dSae];
        _l0Rows = new long[dSae + 1];
    }

    /// <summary>Rows added so far.</summary>
    public long Rows => _n;

    /// <summary>Adds a batch: <paramref name="x"/> the target [B, d_out], <paramref name="xHat"/> the reconstruction
    /// [B, d_out], <paramref name="f"/> the feature activations [B, d_sae]. <paramref name="prompt"/> (int64 [B]), when the
    /// rows are counted positions of prompts (context windows), is each row's prompt within this batch (0, 1, ...; a prompt's
    /// rows all in one batch): it gives <see cref="FeatureMetrics.ConsistentActivationHeuristic"/>. Either every batch
    /// carries it or none does.</summary>
    public void Add(Tensor x, Tensor xHat, Tensor f, Tensor? prompt = null)
    {
        long b = x.shape[0];
        if (x.dim() != 2 || x.shape[1] != _dOut || !x.shape.SequenceEqual(xHat.shape))
            throw new SaeSharpException($"evaluation: x [{string.Join(", ", x.shape)}] and x̂ [{string.Join(", ", xHat.shape)}] must both be [B, {_dOut}]");
        if (f.dim() != 2 || f.shape[0] != b || f.shape[1] != _dSae)
            throw new SaeSharpException($"evaluation: feature activations [{string.Join(", ", f.shape)}] must be [{b}, {_dSae}]");
        if (prompt is not null && (prompt.dim() != 1 || prompt.shape[0] != b || prompt.dtype != ScalarType.Int64))
            throw new SaeSharpException($"evaluation: prompt indices [{string.Join(", ", prompt.shape)}] ({prompt.dtype}) must be int64 [{b}]");
        if (_withPrompts is bool with && with != prompt is not null)
            throw new SaeSharpException("evaluation: every batch must carry prompt indices, or none");
        _withPrompts = prompt is not null;
        if (b == 0) return;

        using var scope = NewDisposeScope();
        using var _ = no_grad();
        var xd = x.detach().to(ScalarType.Float64, torch.CPU);
        var yd = xHat.detach().to(ScalarType.Float64, torch.CPU);
        var fd = f.detach().to(torch.CPU);

        var err = (xd - yd).pow(TorchScalars.Of(2)).sum(1);
        var xNorm = xd.norm(1);
        var yNorm = yd.norm(1);
        var dot = (xd * yd).sum(1);
        // Cosine: ⟨x, x̂⟩ / max(‖x‖‖x̂‖, 1e-8), so a zero row counts as 0 (torch's cosine_similarity convention).
        var cos = dot / (xNorm * yNorm).clamp_min(TorchScalars.Of(1e-8));
        // l2_ratio: ‖x̂‖/‖x‖ with ‖x‖ < 1e-4 replaced by 1, as SAELens does.
        var ratio = yNorm / torch.where(xNorm < TorchScalars.Of(1e-4), torch.ones_like(xNorm), xNorm);
        var nonzero = fd.ne(TorchScalars.Of(0));

        double batchSse = err.sum().item<double>();
        _sse += batchSse;
        // SAELens's (and SAEBench's) evaluation mse: each row's ‖x−x̂‖² over its batch's row count, summed here.
        _batchMse += batchSse / b;
        _l1 += fd.abs().sum(type: ScalarType.Float64).item<double>();
        var rowL0 = nonzero.sum([1], type: ScalarType.Int64);
        _l0 += rowL0.sum().to(ScalarType.Float64).item<double>();
        foreach (var l in rowL0.data<long>()) _l0Rows[l]++;
        _cos += cos.sum().item<double>();
        _l2Ratio += ratio.sum().item<double>();
        _xHatSq += yNorm.pow(TorchScalars.Of(2)).sum().item<double>();
        _dot += dot.sum().item<double>();
        _l2In += xNorm.sum().item<double>();
        _l2Out += yNorm.sum().item<double>();

        var batchMean = xd.mean([0]);
        var centredSq = (xd - batchMean).pow(TorchScalars.Of(2)).sum(1);
        var batchM2 = centredSq.sum().item<double>();
        // SAELens's explained_variance_legacy: per row 1 − ‖x−x̂‖² / ‖x − x̄_batch‖², summed (IEEE division, as SAELens:
        // a row equal to its batch's mean gives ±∞ or NaN).
        _evLegacy += b - (err / centredSq).sum().item<double>();
        var bm = batchMean.data<double>().ToArray();
        long n = _n + b;
        double deltaSq = 0;
        for (int d = 0; d < _dOut; d++)
        {
            double delta = bm[d] - _mean[d];
            deltaSq += delta * delta;
            _mean[d] += delta * b / n;
        }
        _m2 += batchM2 + deltaSq * _n * (double)b / n;
        _n = n;

        var counts = nonzero.sum([0], type: ScalarType.Int64).data<long>().ToArray();
        for (int i = 0; i < _dSae; i++) _fired[i] += counts[i];
        if (prompt is not null)
        {
            // Per prompt, the features that fired on any of its rows; a prompt counts once for each. One prompt's rows at a
            // time, so nothing wider than [its rows, d_sae] of bools is made (summing the whole batch's firing mask per
            // prompt in int64 would take 512 MB for 8 windows of 128 tokens through a 65k-feature SAE).
            var p = prompt.to(torch.CPU);
            long first = p.min().item<long>(), prompts = p.max().item<long>() + 1;
            if (first < 0) throw new SaeSharpException($"evaluation: prompt index {first} is negative");
            var firedIn = zeros(_dSae, ScalarType.Int64);
            for (long k = 0; k < prompts; k++)
            {
                using var inner = NewDisposeScope();
                using var kScalar = k.ToScalar();
                var rows = p.eq(kScalar).nonzero().squeeze(1);
                if (rows.shape[0] > 0) firedIn.add_(nonzero.index_select(0, rows).any(0), TorchScalars.One);
            }
            var inPrompts = firedIn.data<long>().ToArray();
            for (int i = 0; i < _dSae; i++) _firedPrompts[i] += inPrompts[i];
        }
    }

    /// <summary>The metrics over all rows added so far.</summary>
    public SaeEvalResult Result()
    {
        if (_n == 0) throw new SaeSharpException("evaluation: no rows were evaluated");
        double n = _n;
        double fvu = _m2 > 0 ? _sse / _m2 : double.NaN;
        int alive = _fired.Count(c => c > 0);
        var frequency = _fired.Select(c => c / n).ToArray();
        return new SaeEvalResult
        {
            Mse = _sse / (n * _dOut),
            MseLoss = _sse / n,
            L1 = _l1 / n,
            L0 = _l0 / n,
            Fvu = fvu,
            ExplainedVariance = 1 - fvu,
            Cosine = _cos / n,
            L2Ratio = _l2Ratio / n,
            RelativeReconstructionBias = _dot != 0 ? _xHatSq / _dot : double.NaN,
            L2NormIn = _l2In / n,
            L2NormOut = _l2Out / n,
            ExplainedVarianceLegacy = _evLegacy / n,
            SaeLensEvalMse = _batchMse / n,
            AliveFraction = alive / (double)_dSae,
            DeadFraction = (_dSae - alive) / (double)_dSae,
            Rows = _n,
            FeatureFrequency = frequency,
            L0Rows = _l0Rows[..(Array.FindLastIndex(_l0Rows, c => c > 0) + 1)],
            FeatureMetrics = new FeatureMetrics
            {
                FeatureDensity = frequency,
                // Firing rows over prompts fired in: 0/0 = NaN for a feature that never fired (as SAELens).
                ConsistentActivationHeuristic = _withPrompts == true ? _fired.Zip(_firedPrompts, (r, p) => r / (double)p).ToArray() : null,
            },
        };
    }
}
