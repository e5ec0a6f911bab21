using SaeSharp.Kernels;
using SaeSharp.Saes;
using TorchSharp;
using static TorchSharp.torch;

namespace SaeSharp.Training;

/// <summary>
/// Resampling of dead latents (Towards Monosemanticity, appendix "Neuron Resampling"): rows of a sample are drawn
/// with probability ∝ (squared reconstruction error)²; a dead latent's decoder row becomes the drawn target minus
/// b_dec, normalised to unit norm; its encoder column the drawn encoder input, normalised, times 0.2 × the mean norm
/// of the alive encoder columns; its b_enc entry 0; and the Adam moments of those slices are zeroed.
/// </summary>
public static class DeadLatentResampler
{
    /// <summary>Scale of a resampled encoder column relative to the mean alive encoder-column norm.</summary>
    public const double EncoderNormFactor = 0.2;

    /// <summary>Resamples the latents of <paramref name="deadMask"/> ([d_sae] bool); returns how many.
    /// <paramref name="input"/> and <paramref name="target"/> are the sample's rows as the SAE sees them in training.</summary>
    public static int Resample(Sae sae, AdamOptimizer? optimizer, Tensor deadMask, Tensor input, Tensor target, Generator generator)
    {
        using var _ = no_grad();
        using var scope = NewDisposeScope();
        var deadIdx = deadMask.nonzero().squeeze(1);
        int nDead = (int)deadIdx.shape[0];
        if (nDead == 0) return 0;

        var recon = sae.forward(input);
        var sqErr = (recon - target).pow(TorchScalars.Of(2)).sum(-1).to(ScalarType.Float64);
        var weights = sqErr.pow(TorchScalars.Of(2));
        if (!(weights.sum().item<double>() > 0) || !weights.isfinite().all().item<bool>()) weights = ones_like(weights);
        bool replacement = nDead > input.shape[0];
        // Drawn on the CPU (the generator's device), so a seed picks the same rows on every device.
        var picks = multinomial(weights.cpu(), nDead, replacement, generator).to(input.device);

        var bDec = sae.BDec.detach();
        var decDir = target.index_select(0, picks) - bDec;
        decDir = decDir / decDir.norm(1, keepdim: true).clamp_min(TorchScalars.Of(1e-8));
        var encIn = sae.Cfg.ApplyBDecToInput ? input.index_select(0, picks) - bDec : input.index_select(0, picks);
        encIn = encIn / encIn.norm(1, keepdim: true).clamp_min(TorchScalars.Of(1e-8));

        var alive = deadMask.logical_not();
        var encNorms = sae.WEnc.detach().norm(0);
        double aliveMean = alive.any().item<bool>() ? encNorms.masked_select(alive).to(ScalarType.Float64).mean().item<double>() : 1.0;

        sae.WDec.index_copy_(0, deadIdx, decDir.to(sae.WDec.dtype));
        using (var encScale = (EncoderNormFactor * aliveMean).ToScalar())
            sae.WEnc.index_copy_(1, deadIdx, (encIn * encScale).t().to(sae.WEnc.dtype));
        sae.BEnc.index_fill_(0, deadIdx, TorchScalars.Of(0));

        if (optimizer is not null)
        {
            optimizer.ResetMoments("W_dec", 0, deadIdx);
            optimizer.ResetMoments("W_enc", 1, deadIdx);
            optimizer.ResetMoments("b_enc", 0, deadIdx);
        }
        return nDead;
    }
}
