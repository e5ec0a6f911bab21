using static TorchSharp.torch;

namespace SaeSharp.Saes;

/// <summary>Per-step information the trainer hands to an SAE's training form.</summary>
public sealed class SaeTrainContext
{
    /// <summary>0-based optimiser step.</summary>
    public long Step { get; init; }
    /// <summary>Multiplier of the sparsity coefficient (warm-up ramps it from 0 to 1).</summary>
    public double SparsityScale { get; init; } = 1.0;
    /// <summary>[d_sae] bool mask of latents that have not fired for the dead window (for AuxK), or null.</summary>
    public Tensor? DeadMask { get; init; }
}

/// <summary>Result of <see cref="Sae.TrainingForward"/>. <see cref="Losses"/> holds the named parts of <see cref="Loss"/>
/// (e.g. "mse_loss", "l1_loss", "auxiliary_reconstruction_loss"), detached.</summary>
public sealed class SaeTrainOutput
{
    private Tensor? _featureActs;
    private Func<Tensor>? _featureActsFactory;

    /// <summary>The scalar loss to back-propagate.</summary>
    public required Tensor Loss { get; init; }
    /// <summary>The reconstruction ŷ [N, d_out].</summary>
    public required Tensor SaeOut { get; init; }

    /// <summary>[N, d_sae] feature activations. TopK-family SAEs train on a sparse code and build this dense matrix only
    /// when it is first read (in the reader's dispose scope; read it before disposing the scope that holds the output).</summary>
    public Tensor FeatureActs
    {
        get => _featureActs ??= (_featureActsFactory ?? throw new InvalidOperationException("SaeTrainOutput has no feature activations"))();
        init => _featureActs = value;
    }

    /// <summary>Builds <see cref="FeatureActs"/> on first access (for architectures that do not need it densely).</summary>
    public Func<Tensor>? FeatureActsFactory { init => _featureActsFactory = value; }

    /// <summary>The named parts of <see cref="Loss"/>, detached.</summary>
    public Dictionary<string, Tensor> Losses { get; init; } = new();
    /// <summary>Architecture-specific scalar metrics of the step (SAELens's <c>TrainStepOutput.metrics</c>, e.g.
    /// matching_pursuit's "max_l0", "residual_norm"), detached; the trainer logs them at its logging steps.</summary>
    public Dictionary<string, Tensor> Metrics { get; init; } = new();
    /// <summary>[d_sae] int64: in how many rows of the batch each latent is nonzero — what a trainer's firing statistics
    /// need — when the architecture has it cheaply (the sparse training passes); null otherwise: derive it from
    /// <see cref="FeatureActs"/>, which those passes only build on demand (a [N, d_sae] matrix).</summary>
    public Tensor? ActiveCounts { get; init; }
}
