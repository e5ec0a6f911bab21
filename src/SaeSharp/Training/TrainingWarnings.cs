using SaeSharp.Evaluation;
using SaeSharp.Saes;

namespace SaeSharp.Training;

/// <summary>
/// End-of-training checks of the held-out metrics: each result far from usable gets one line with its likely cause and
/// the flag to change (printed by <c>sae train</c>). The thresholds: FVU above 0.5, L0 above d_in, more than half the
/// latents dead, and, when trained from a model, less than half the CE loss recovered; an FVU above 1 (or not finite)
/// is reported as a diverged run instead, unless the run was short (fewer than 100 steps) and the FVU below 10.
/// </summary>
public static class TrainingWarnings
{
    /// <summary>Fraction of variance unexplained above which a run is flagged.</summary>
    public const double MaxFvu = 0.5;
    /// <summary>FVU above which a run is flagged as diverged: the reconstruction is worse than the data's mean.</summary>
    public const double MaxDivergedFvu = 1;
    /// <summary>Runs shorter than this with an FVU above 1 but below <see cref="MaxEarlyFvu"/> are told to train longer, not
    /// that they diverged (a TopK SAE is still above 1 after its first ten steps).</summary>
    public const long MinStepsForDivergence = 100;
    /// <summary>FVU from which even a short run is reported as diverged.</summary>
    public const double MaxEarlyFvu = 10;
    /// <summary>Share of dead latents above which a run is flagged.</summary>
    public const double MaxDeadFraction = 0.5;
    /// <summary>CE loss recovered below which a run on a model is flagged.</summary>
    public const double MinCeLossRecovered = 0.5;

    /// <summary>The warnings for one trained SAE (empty when none applies).</summary>
    /// <param name="metrics">Held-out metrics.</param>
    /// <param name="cfg">The SAE's config (architecture, d_in, d_sae, k).</param>
    /// <param name="steps">Optimiser steps of the run.</param>
    /// <param name="ceLossRecovered">Share of the CE loss recovered (0–1) when evaluated inside a model, else null.</param>
    public static IReadOnlyList<string> For(SaeEvalResult metrics, SaeConfig cfg, long steps, double? ceLossRecovered = null)
    {
        var warnings = new List<string>();
        string trainsAs = SaeArchitectures.TrainsAs(cfg.Architecture);
        bool topK = trainsAs is SaeArchitectures.TopK or SaeArchitectures.BatchTopK or SaeArchitectures.MatryoshkaBatchTopK;
        // JumpReLU's coefficient is an L0 one: SAELens's config calls it l0_coefficient.
        string l1 = trainsAs == SaeArchitectures.JumpReLU ? "--l1 (l0_coefficient in --config)" : "--l1";
        bool pursuit = trainsAs == SaeArchitectures.MatchingPursuit;
        string sparser = topK ? "lower --k" : pursuit ? "lower max_iterations or raise residual_threshold (--config)" : $"raise {l1}, or give --target-l0";
        string denser = topK ? "raise --k" : pursuit ? "raise max_iterations or lower residual_threshold (--config)" : $"lower {l1}, or give --target-l0";
        if (!(metrics.Fvu <= MaxDivergedFvu) && steps < MinStepsForDivergence && metrics.Fvu < MaxEarlyFvu)
            warnings.Add($"FVU {metrics.Fvu:G4} on held-out rows (above {MaxDivergedFvu}) after only {steps} steps: the SAE does not yet " +
                         "reconstruct better than the data's mean does. Raise --steps (a longer run that stays above 1 has diverged: lower --lr).");
        else if (!(metrics.Fvu <= MaxDivergedFvu))
            warnings.Add($"FVU {metrics.Fvu:G4} on held-out rows (above {MaxDivergedFvu}): the SAE reconstructs worse than the data's mean does, " +
                         "so the training diverged. Likely too high a learning rate: lower --lr (or leave it out for the recipe's).");
        else if (metrics.Fvu > MaxFvu)
            warnings.Add($"FVU {metrics.Fvu:F3} on held-out rows (above {MaxFvu}): the SAE explains less than half the variance. " +
                         $"Likely too few steps ({steps}) or too strong a sparsity: raise --steps, or {denser}." +
                         (trainsAs == SaeArchitectures.Standard
                             ? " At a low L0 the L1 penalty also shrinks every active latent by about λ/2: " +
                               (cfg.Architecture == SaeArchitectures.SkipTranscoder ? "--arch jumprelu_skip_transcoder keeps" : "--arch gated or jumprelu keep") + " the magnitudes."
                             : ""));
        if (metrics.L0 > cfg.DIn)
            warnings.Add($"L0 {metrics.L0:F1} is above d_in {cfg.DIn}: the code is not sparse. " +
                         $"Likely too weak a sparsity for these activations or too few steps for it to take hold: {sparser}, or raise --steps.");
        if (metrics.DeadFraction > MaxDeadFraction)
            warnings.Add($"{metrics.DeadFraction:P0} of the {cfg.DSae} latents never fire on held-out rows. " +
                         (topK || pursuit
                             ? "Likely a dead-latent window too long for the run (dead_feature_window in --config), or more latents than the data needs: lower --dict-size/--expansion, or raise --steps."
                             : $"Likely too strong a sparsity or too high a learning rate: lower {l1} (or give --target-l0) or --lr; for relu, resampling (resample_steps in --config) revives latents."));
        if (ceLossRecovered is double ce && ce < MinCeLossRecovered)
            warnings.Add($"CE loss recovered {ce:P0} (below {MinCeLossRecovered:P0}): splicing the SAE in breaks the model. " +
                         $"Likely too few steps or too sparse a code: raise --steps, or {denser}.");
        return warnings;
    }
}
