using TorchSharp;
using static TorchSharp.torch;

namespace SaeSharp.Synthetic;

/// <summary>How well a dictionary recovers known feature directions (Sharkey et al. 2022, "Taking features out of
/// superposition with sparse autoencoders").</summary>
public sealed record FeatureRecoveryResult(double Mmcs, double RecoveredFraction, double[] MaxCosine);

/// <summary>Mean max cosine similarity (MMCS) and the fraction of recovered true features.</summary>
public static class FeatureRecovery
{
    /// <summary>The max-cosine threshold above which a true feature counts as recovered.</summary>
    public const double DefaultThreshold = 0.9;

    /// <summary>
    /// For each true feature (row of <paramref name="trueFeatures"/>, [n_features, d]) the largest cosine similarity with
    /// any row of <paramref name="decoderRows"/> ([d_sae, d], e.g. W_dec); MMCS is their mean and recovered_fraction the
    /// fraction above <paramref name="threshold"/>. Cosines are signed: a decoder row pointing the opposite way does not
    /// recover a feature whose activations are non-negative. <paramref name="absolute"/> uses |cos| instead.
    /// </summary>
    public static FeatureRecoveryResult Compute(Tensor trueFeatures, Tensor decoderRows, double threshold = DefaultThreshold, bool absolute = false)
    {
        if (trueFeatures.dim() != 2 || decoderRows.dim() != 2 || trueFeatures.shape[1] != decoderRows.shape[1])
            throw new SaeSharpException($"feature recovery: true features [{string.Join(", ", trueFeatures.shape)}] and decoder rows [{string.Join(", ", decoderRows.shape)}] must be [n, d] and [m, d] with the same d");
        using var scope = NewDisposeScope();
        using var _ = no_grad();
        var t = trueFeatures.detach().to(ScalarType.Float64, torch.CPU);
        var d = decoderRows.detach().to(ScalarType.Float64, torch.CPU);
        t = t / t.norm(1, keepdim: true).clamp_min(TorchScalars.Of(1e-12));
        d = d / d.norm(1, keepdim: true).clamp_min(TorchScalars.Of(1e-12));
        var cos = t.matmul(d.t());
        if (absolute) cos = cos.abs();
        var max = cos.max(1).values.data<double>().ToArray();
        return new FeatureRecoveryResult(max.Average(), max.Count(c => c > threshold) / (double)max.Length, max);
    }
}
