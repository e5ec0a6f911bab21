using SaeSharp.Saes;
using static TorchSharp.torch;

namespace SaeSharp.Training;

/// <summary>One SAE to train, with a name (used in logs and checkpoints) and optionally its own optimiser, schedule,
/// initialisation and resampling settings (the fields of <see cref="TrainerConfig"/> not in
/// <see cref="TrainerConfig.SharedFields"/>). A null config means the run's config.</summary>
public sealed class SaeSlot
{
    /// <summary>An SAE to train under <paramref name="name"/>, with its own trainer settings or (null) the run's.</summary>
    public SaeSlot(string name, Sae sae, TrainerConfig? config = null)
    {
        if (string.IsNullOrWhiteSpace(name)) throw new SaeSharpException("an SAE slot needs a non-empty name");
        Name = name;
        Sae = sae;
        Config = config;
    }

    /// <summary>Name of the slot (its sub-folder when a run trains several SAEs).</summary>
    public string Name { get; }
    /// <summary>The SAE, trained in place, in its training form: when the run normalises activations
    /// (<see cref="TrainerConfig.NormalizeActivations"/>) its weights stay in the normalised units. The SAE to save and to run
    /// on raw activations is the result's copy (<see cref="TrainingResult.Saes"/>: normalisation folded in, the BatchTopK
    /// family as JumpReLU). The trainer does not dispose this SAE.</summary>
    public Sae Sae { get; }
    /// <summary>This SAE's trainer settings (lr, schedules, resampling); null: the run's.</summary>
    public TrainerConfig? Config { get; }
}

/// <summary>How <see cref="SaeTrainer.Run"/> ended.</summary>
public enum TrainingStatus
{
    /// <summary>All steps were taken.</summary>
    Completed,
    /// <summary>The cancellation token fired; a checkpoint was saved (if checkpoint_path is set).</summary>
    Cancelled,
    /// <summary>The requested stop step was reached; a checkpoint was saved (if checkpoint_path is set).</summary>
    Stopped,
    /// <summary>The activation source ran out of rows before the last step.</summary>
    SourceExhausted,
}

/// <summary>Metrics of one SAE at a logged step.</summary>
public sealed class SaeProgress
{
    /// <summary>Slot name.</summary>
    public required string Name { get; init; }
    /// <summary>Learning rate at this step.</summary>
    public double Lr { get; init; }
    /// <summary>Sparsity-coefficient warm-up factor at this step (0 to 1).</summary>
    public double SparsityScale { get; init; }
    /// <summary>The sparsity coefficient as this step's loss weighed the penalty: λ times <see cref="SparsityScale"/>
    /// (SAELens's <c>details/current_l1_coefficient</c>; with <c>--target-l0</c> the controller's λ). Null for
    /// architectures trained without one (the TopK family, matching_pursuit).</summary>
    public double? SparsityCoefficient { get; init; }
    /// <summary>The total loss and its named parts ("overall_loss", "mse_loss", "l1_loss", …).</summary>
    public required IReadOnlyDictionary<string, double> Losses { get; init; }
    /// <summary>Mean number of non-zero latents per row of the batch.</summary>
    public double L0 { get; init; }
    /// <summary>Fraction of latents that have not fired for dead_feature_window rows.</summary>
    public double DeadFraction { get; init; }
    /// <summary>1 − Σ‖y − ŷ‖² / Σ‖y − ȳ‖² over the batch (variance about the batch mean).</summary>
    public double ExplainedVariance { get; init; }
    /// <summary>The architecture's own metrics of the step (<see cref="Saes.SaeTrainOutput.Metrics"/>: matching_pursuit's
    /// max_l0, min_l0, residual_norm, residual_threshold_converged_portion); empty for most architectures.</summary>
    public IReadOnlyDictionary<string, double> Metrics { get; init; } = new Dictionary<string, double>();
}

/// <summary>Progress of a run, reported every log_every_steps steps.</summary>
public sealed class TrainingProgress
{
    /// <summary>Steps completed.</summary>
    public long Step { get; init; }
    /// <summary>Steps of the whole run.</summary>
    public long TotalSteps { get; init; }
    /// <summary>Training rows (tokens) consumed by optimiser steps.</summary>
    public long Tokens { get; init; }
    /// <summary>Training rows per second since the previous report.</summary>
    public double RowsPerSecond { get; init; }
    /// <summary>Training rows per second since this run (or resume) started: steady where <see cref="RowsPerSecond"/>
    /// swings between reports that include filling the activation buffer and reports that do not.</summary>
    public double MeanRowsPerSecond { get; init; }
    /// <summary>Estimated time to the last step, from the average step time of this run; null before it is known.</summary>
    public TimeSpan? Eta { get; init; }
    /// <summary>Per-SAE figures of this step.</summary>
    public required IReadOnlyList<SaeProgress> Saes { get; init; }
}

/// <summary>A trained SAE ready to save: weights folded so it works on raw activations (<c>normalize_activations</c>
/// "none" in its config), and its SAELens <c>sparsity</c> tensor (log10 of the firing fraction + 1e-10).</summary>
public sealed class TrainedSae : IDisposable
{
    /// <summary>Slot name.</summary>
    public required string Name { get; init; }
    /// <summary>The trained SAE, normalisation folded into its weights.</summary>
    public required Sae Sae { get; init; }
    /// <summary>[d_sae] float32, the SAELens sparsity.safetensors key <c>sparsity</c>.</summary>
    public required Tensor Sparsity { get; init; }
    /// <summary>The effective config this SAE was trained with (resolved lr and betas).</summary>
    public required TrainerConfig Config { get; init; }

    /// <summary>Disposes the SAE and its sparsity tensor.</summary>
    public void Dispose()
    {
        Sparsity.Dispose();
        Sae.Dispose();
    }
}

/// <summary>Outcome of <see cref="SaeTrainer.Run"/>.</summary>
public sealed class TrainingResult : IDisposable
{
    /// <summary>How the run ended.</summary>
    public TrainingStatus Status { get; init; }
    /// <summary>Optimiser steps done.</summary>
    public long Steps { get; init; }
    /// <summary>Rows trained on.</summary>
    public long Tokens { get; init; }
    /// <summary>Input scale used in training (1 without normalisation); already folded into <see cref="Saes"/>.</summary>
    public double ScaleIn { get; init; }
    /// <summary>Target scale used in training (1 without normalisation); already folded into <see cref="Saes"/>.</summary>
    public double ScaleOut { get; init; }
    /// <summary>The trained SAEs, in slot order.</summary>
    public required IReadOnlyList<TrainedSae> Saes { get; init; }
    /// <summary>train_log.jsonl, if written.</summary>
    public string? LogFile { get; init; }
    /// <summary>The last checkpoint folder written, if any.</summary>
    public string? LastCheckpoint { get; init; }
    /// <summary>Metrics of the last logged step of this call (the last step is always logged), for a summary.</summary>
    public TrainingProgress? LastProgress { get; init; }

    /// <summary>Disposes the trained SAEs and their statistics.</summary>
    public void Dispose()
    {
        foreach (var s in Saes) s.Dispose();
    }
}
