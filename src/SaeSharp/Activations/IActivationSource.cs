using System.Text.Json.Nodes;
using static TorchSharp.torch;

namespace SaeSharp.Activations;

/// <summary>A batch of training rows: the SAE's input and its reconstruction target (the same tensor for an
/// ordinary SAE, another activation for a transcoder).</summary>
public sealed class ActivationBatch : IDisposable
{
    /// <summary>Wraps <paramref name="input"/> [B, d_in] and <paramref name="target"/> [B, d_out] (null: the input is the target); the batch owns both.</summary>
    public ActivationBatch(Tensor input, Tensor? target = null)
    {
        Input = input;
        Target = target ?? input;
    }

    /// <summary>[B, d_in], float32.</summary>
    public Tensor Input { get; }
    /// <summary>[B, d_out], float32; the same object as <see cref="Input"/> when there is no separate target.</summary>
    public Tensor Target { get; }
    /// <summary>True when <see cref="Target"/> is a tensor of its own (a transcoder's output activation).</summary>
    public bool HasSeparateTarget => !ReferenceEquals(Input, Target);
    /// <summary>Rows in the batch (B).</summary>
    public long Rows => Input.shape[0];

    /// <summary>Disposes the input and, when separate, the target.</summary>
    public void Dispose()
    {
        if (HasSeparateTarget) Target.Dispose();
        Input.Dispose();
    }
}

/// <summary>
/// Where training rows come from: activation files, a cache folder, or a language model run on text.
/// The trainer knows nothing else about the origin of its rows.
/// </summary>
public interface IActivationSource : IDisposable
{
    /// <summary>Width of <see cref="ActivationBatch.Input"/>.</summary>
    int DIn { get; }
    /// <summary>Width of <see cref="ActivationBatch.Target"/> (equal to <see cref="DIn"/> without a separate target).</summary>
    int DOut { get; }
    /// <summary>Total rows per pass if known.</summary>
    long? Rows { get; }

    /// <summary>Rows handed out by <see cref="Next"/> so far (over all passes; restored with the state).</summary>
    long RowsDelivered => 0;
    /// <summary>Rows in one pass over the data; null while unknown (a streamed dataset whose first pass has not ended).
    /// <see cref="RowsDelivered"/> / this is the number of epochs seen.</summary>
    long? RowsPerPass => Rows;
    /// <summary>Passes over the data the source makes before it is exhausted (its <c>epochs</c> setting); 0: no limit.</summary>
    int MaxDataPasses => 1;
    /// <summary>Where the rows come from as cfg.json metadata (model, hook_name, context_size, dataset, ...), when the source
    /// knows it: a model run opened by <c>ModelPipeline.OpenSource</c>, a <c>sae cache</c> folder. <see cref="Training.SaeTrainer"/>
    /// gives it to an SAE whose metadata names no hook, so an SAE trained from C# records the hook SAELens tools look for.</summary>
    Saes.SaeMetadata? Metadata => null;

    /// <summary>The next <paramref name="batchSize"/> rows, or null when the source is exhausted. Finite sources
    /// start another (shuffled) pass until they have made <see cref="MaxDataPasses"/> passes.</summary>
    [System.Diagnostics.CodeAnalysis.SuppressMessage("Naming", "CA1716", Justification = "Next clashes only with a Visual Basic keyword; every source and caller uses this name")]
    ActivationBatch? Next(int batchSize);

    /// <summary>A JSON snapshot of the position (cursor, shuffle RNG, buffer) such that a new source constructed with the same
    /// arguments and given this state via <see cref="LoadState"/> yields exactly the batches this one would yield next.</summary>
    JsonNode SaveState();
    /// <summary>Restores a position saved by <see cref="SaveState"/> on a source constructed with the same arguments.</summary>
    void LoadState(JsonNode state);
}
