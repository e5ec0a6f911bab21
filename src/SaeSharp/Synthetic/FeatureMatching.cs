using TorchSharp;
using static TorchSharp.torch;

namespace SaeSharp.Synthetic;

/// <summary>
/// The decoder-only metrics of SAELens 6.37.6's SynthSAEBench evaluation (<c>sae_lens/synthetic/evals.py</c>):
/// <c>mean_correlation_coefficient</c> (mcc), <c>feature_uniqueness</c> and the best-matching ground-truth feature of each
/// latent that <c>ClassificationMetricsCalculator</c> uses. All on |cosine| of the rows, as
/// <see cref="FeatureRecovery.Cosines"/> computes it with SAELens's 1e-8 norm clamp.
/// </summary>
public static class FeatureMatching
{
    /// <summary>MCC (O'Neill et al. 2024, arXiv:2411.13117): the optimal one-to-one matching of the rows of
    /// <paramref name="featuresA"/> [n_a, d] with those of <paramref name="featuresB"/> [n_b, d] that maximises the summed
    /// |cosine| (<see cref="LinearSumAssignment"/>, as SciPy's <c>linear_sum_assignment</c> on 1 − |cos|), and the mean
    /// |cosine| of its min(n_a, n_b) pairs. SAELens calls it with the decoder rows W_dec first.</summary>
    public static double MeanCorrelationCoefficient(Tensor featuresA, Tensor featuresB)
    {
        using var scope = NewDisposeScope();
        var cos = FeatureRecovery.Cosines(featuresA, featuresB).abs().contiguous();
        int n = (int)cos.shape[0], m = (int)cos.shape[1];
        var flat = cos.data<double>().ToArray();
        var cost = new double[n, m];
        for (int i = 0; i < n; i++)
            for (int j = 0; j < m; j++) cost[i, j] = 1 - flat[(long)i * m + j];
        var (rows, cols) = LinearSumAssignment.Solve(cost);
        if (rows.Length == 0) return double.NaN; // torch's mean of an empty tensor
        double sum = 0;
        for (int k = 0; k < rows.Length; k++) sum += flat[(long)rows[k] * m + cols[k]];
        return sum / rows.Length;
    }

    /// <summary>For each row of <paramref name="saeFeatures"/> [d_sae, d], the index of the row of
    /// <paramref name="gtFeatures"/> [n_features, d] with the largest |cosine| (the first on a tie, as torch's argmax).</summary>
    public static long[] BestMatches(Tensor saeFeatures, Tensor gtFeatures)
    {
        using var scope = NewDisposeScope();
        if (saeFeatures.shape[0] == 0) return [];
        return FeatureRecovery.Cosines(saeFeatures, gtFeatures).abs().argmax(1).data<long>().ToArray();
    }

    /// <summary>SAELens's <c>feature_uniqueness</c>: the number of distinct ground-truth features that are some latent's
    /// best match (<see cref="BestMatches"/>), over the number of latents; 1 when every latent tracks a different feature,
    /// 0 for no latents.</summary>
    public static double FeatureUniqueness(Tensor saeFeatures, Tensor gtFeatures)
    {
        if (saeFeatures.shape[0] == 0) return 0.0;
        var best = BestMatches(saeFeatures, gtFeatures);
        return best.Distinct().Count() / (double)saeFeatures.shape[0];
    }
}
