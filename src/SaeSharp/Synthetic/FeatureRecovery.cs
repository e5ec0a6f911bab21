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
        var cos = Cosines(trueFeatures, decoderRows, 1e-12);
        if (absolute) cos = cos.abs();
        var max = cos.max(1).values.data<double>().ToArray();
        return new FeatureRecoveryResult(max.Average(), max.Count(c => c > threshold) / (double)max.Length, max);
    }

    /// <summary>Cosine similarity of every row of <paramref name="a"/> [n, d] with every row of <paramref name="b"/> [m, d]
    /// as [n, m] float64 on the CPU, each row divided by max(‖row‖, <paramref name="minNorm"/>) so a zero row has cosine 0
    /// (SAELens's <c>sae_lens.util.cosine_similarities</c> clamps at 1e-8).</summary>
    public static Tensor Cosines(Tensor a, Tensor b, double minNorm = 1e-8)
    {
        if (a.dim() != 2 || b.dim() != 2 || a.shape[1] != b.shape[1])
            throw new SaeSharpException($"cosines: rows of [{string.Join(", ", a.shape)}] and [{string.Join(", ", b.shape)}] must be [n, d] and [m, d] with the same d");
        using var scope = NewDisposeScope();
        using var _ = no_grad();
        var x = a.detach().to(ScalarType.Float64, torch.CPU);
        var y = b.detach().to(ScalarType.Float64, torch.CPU);
        x = x / x.norm(1, keepdim: true).clamp_min(TorchScalars.Of(minNorm));
        y = y / y.norm(1, keepdim: true).clamp_min(TorchScalars.Of(minNorm));
        return x.matmul(y.t()).MoveToOuterDisposeScope();
    }
}
