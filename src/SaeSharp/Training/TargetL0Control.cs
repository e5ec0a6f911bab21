using SaeSharp.Saes;

namespace SaeSharp.Training;

/// <summary>
/// The <c>--target-l0</c> controller on the sparsity coefficient λ. Every step, with ℓ = log(L0 + ½) of the batch
/// (L0 = mean active latents per row) and s the step's set-point:
/// <list type="bullet">
/// <item>m ← smoothed ℓ (EMA, β = <see cref="Smoothing"/>), v ← smoothed per-step change of m (same β);</item>
/// <item>e = (m − log(s + ½)) + H·v, the error predicted H = <see cref="Horizon"/> steps ahead, clamped to ±log 4;</item>
/// <item>λ ← λ·exp(g·e), g = <see cref="Gain"/> (<see cref="TwoSidedGain"/> for JumpReLU's target-L0 penalty).</item>
/// </list>
/// The set-point moves geometrically from <see cref="StartL0"/> (d_sae/2, a random ReLU encoder's L0) to the target over
/// the first <see cref="RampFraction"/> of the run. Both guard against the same failure: L0 answers λ only after tens of
/// steps (the encoder biases move about lr per step), so a controller on the current error alone (the first version, from a
/// tenth of the default λ at gain 0.02) kept raising λ while L0 was already falling, overshot, and killed latents that
/// no gradient revives (relu-april ended at L0 4.0 for a target of 6). The predicted error stops λ's rise as soon as L0
/// falls fast enough; starting from the default λ at half the gain leaves less distance to overshoot.
/// <para>JumpReLU's target-L0 penalty λ·(L0/target − 1)² (dictionary_learning) pulls L0 towards the target from both
/// sides, so there λ grows while L0 is off by more than <see cref="TwoSidedBand"/> either way (e = |e| − log band) and
/// relaxes inside the band; its thresholds start at L0 = <see cref="StartL0"/> = min(d_sae/2, 4·target)
/// (<c>JumpReluSae.InitializeForTargetL0</c>, which also halves the encoder), where the set-point starts.</para>
/// State: λ and the two averages, all in <see cref="SaeTrainingOptions"/> (checkpointed), so <c>--resume</c> continues
/// exactly.
/// </summary>
public static class TargetL0Control
{
    /// <summary>Change of log λ per step per unit of predicted log error (L1 penalties). On the built-in model's
    /// activations relu-april's L0 falls slowly with λ (46 at 0.88, about 15 at 5.9), so 0.01 moved it too slowly for a low target: at N = 12 in 488 steps
    /// it ended at 15.2 (+27 %); 0.02 ends at 13.0 (docs/recipes.md).</summary>
    public const double Gain = 0.02;

    /// <summary>The gain for JumpReLU's two-sided target-L0 penalty (measured with it: docs/recipes.md).</summary>
    public const double TwoSidedGain = 0.01;

    /// <summary>EMA coefficient of the smoothed log L0 and of its per-step change.</summary>
    public const double Smoothing = 0.9;

    /// <summary>Share of the run over which the set-point moves from d_sae/2 to the target.</summary>
    public const double RampFraction = 0.4;

    /// <summary>Relative L0 error within which the two-sided (JumpReLU target-L0) controller lets λ relax.</summary>
    public const double TwoSidedBand = 1.1;

    /// <summary>Where the set-point starts: d_sae/2 (a random ReLU encoder's L0); for JumpReLU's two-sided target-L0
    /// penalty min(d_sae/2, 4·target), where its thresholds are initialised.</summary>
    public static double StartL0(SaeTrainingOptions training, SaeConfig cfg) =>
        IsTwoSided(training, cfg) ? Math.Min(cfg.DSae / 2.0, 4 * training.TargetL0) : cfg.DSae / 2.0;

    /// <summary>Whether the penalty pulls L0 towards the target from both sides (JumpReLU's target-L0 penalty).</summary>
    public static bool IsTwoSided(SaeTrainingOptions training, SaeConfig cfg) =>
        SaeArchitectures.TrainsAs(cfg.Architecture) == SaeArchitectures.JumpReLU && training.JumpReluPenalty == JumpReluPenalty.TargetL0;

    /// <summary>Steps ahead the error is predicted: a tenth of the run, at least 20.</summary>
    public static double Horizon(long totalSteps) => Math.Max(20, totalSteps / 10.0);

    /// <summary>The set-point at <paramref name="step"/>: geometric from <paramref name="start"/> to
    /// <paramref name="target"/> over the first <see cref="RampFraction"/> of <paramref name="totalSteps"/>.</summary>
    public static double SetPoint(double start, double target, long step, long totalSteps)
    {
        double ramp = Math.Max(1, RampFraction * totalSteps);
        double p = Math.Min(1, step / ramp);
        return Math.Exp((1 - p) * Math.Log(Math.Max(start, target)) + p * Math.Log(target));
    }

    /// <summary>Updates <paramref name="training"/>'s λ (and the controller's averages) from one batch's L0.</summary>
    public static void Update(SaeTrainingOptions training, SaeConfig cfg, double l0, long step, long totalSteps)
    {
        double log = Math.Log(l0 + 0.5);
        if (training.TargetL0LogL0 is not double m)
        {
            training.TargetL0LogL0 = log;
            training.TargetL0LogL0Change = 0;
            return;
        }
        double next = Smoothing * m + (1 - Smoothing) * log;
        double change = Smoothing * training.TargetL0LogL0Change + (1 - Smoothing) * (next - m);
        training.TargetL0LogL0 = next;
        training.TargetL0LogL0Change = change;
        double set = SetPoint(StartL0(training, cfg), training.TargetL0, step, totalSteps);
        double e = next - Math.Log(set + 0.5) + Horizon(totalSteps) * change;
        bool twoSided = IsTwoSided(training, cfg);
        if (twoSided) e = Math.Abs(e) - Math.Log(TwoSidedBand);
        training.SparsityCoefficient *= Math.Exp((twoSided ? TwoSidedGain : Gain) * Math.Clamp(e, -Math.Log(4), Math.Log(4)));
    }
}
