using SaeSharp.Saes;

namespace SaeSharp.Training;

/// <summary>
/// The <c>--target-l0</c> controller: after the sparsity warm-up, every step multiplies the sparsity coefficient λ by
/// ((L0 + ½)/(target + ½))^<see cref="Gain"/>, with L0 the batch's mean active latents per row (an integral controller
/// on log λ: λ grows while the SAE is denser than the target and shrinks while it is sparser). The ratio is clamped to
/// [¼, 4], so λ changes by at most 2^(2·gain) per step. Its only state is λ itself, which checkpoints hold.
/// </summary>
public static class TargetL0Control
{
    /// <summary>Exponent of the per-step correction: a run 2× off target changes λ by 2^0.02 ≈ 1.4 % per step, a factor
    /// 4 in 100 steps.</summary>
    public const double Gain = 0.02;

    /// <summary>Updates <paramref name="training"/>'s sparsity coefficient from one batch's L0; no change while a
    /// sparsity warm-up is ramping (<paramref name="sparsityScale"/> &lt; 1).</summary>
    public static void Update(SaeTrainingOptions training, double l0, double sparsityScale)
    {
        if (sparsityScale < 1) return;
        double ratio = Math.Clamp((l0 + 0.5) / (training.TargetL0 + 0.5), 0.25, 4);
        training.SparsityCoefficient *= Math.Pow(ratio, Gain);
    }
}
