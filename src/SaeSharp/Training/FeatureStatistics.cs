using TorchSharp;
using static TorchSharp.torch;

namespace SaeSharp.Training;

/// <summary>
/// Per-latent firing statistics of one SAE: rows since each latent last fired (for the dead mask) and firing counts
/// over the current feature-sampling window (for the sparsity tensor). All updates are in-place tensor ops; no sync.
/// </summary>
internal sealed class FeatureStatistics : IDisposable
{
    /// <summary>Zero counters for <paramref name="dSae"/> latents on <paramref name="device"/> (the SAE's; null: CPU).</summary>
    public FeatureStatistics(int dSae, long deadWindowTokens, int samplingWindowSteps, Device? device = null)
    {
        DeadWindowTokens = deadWindowTokens;
        SamplingWindowSteps = samplingWindowSteps;
        TokensSinceFired = zeros(dSae, dtype: ScalarType.Int64, device: device ?? CPU).DetachFromDisposeScope();
        ActCounts = zeros(dSae, dtype: ScalarType.Int64, device: device ?? CPU).DetachFromDisposeScope();
    }

    public long DeadWindowTokens { get; }
    public int SamplingWindowSteps { get; }
    /// <summary>[d_sae] int64: training rows seen since the latent last fired (or since the start).</summary>
    public Tensor TokensSinceFired { get; }
    /// <summary>[d_sae] int64: rows on which the latent fired in the current window.</summary>
    public Tensor ActCounts { get; }
    public long WindowRows { get; set; }
    public int WindowSteps { get; set; }

    /// <summary>Adds one batch of feature activations [N, d_sae]. The window restarts lazily, so the counters always
    /// describe the latest (possibly partial, never empty after a step) window.</summary>
    public void Update(Tensor featureActs)
    {
        using var _ = no_grad();
        using var scope = NewDisposeScope();
        UpdateCounts(featureActs.detach().ne(TorchScalars.Of(0)).sum(0L), featureActs.shape[0]);
    }

    /// <summary>[d_sae] int64: in how many rows of [N, d_sae] feature activations each latent is nonzero.</summary>
    public static Tensor ActiveCounts(Tensor featureActs)
    {
        using var _ = no_grad();
        return featureActs.detach().ne(TorchScalars.Of(0)).sum(0L);
    }

    /// <summary>Share of latents that have not fired in the last <paramref name="rows"/> training rows (with rows = the
    /// smaller of the dead window and the rows seen so far: the share the dead mask will show if nothing changes).</summary>
    public double NotFiredWithin(long rows)
    {
        using var _ = no_grad();
        using var scope = NewDisposeScope();
        using var minRows = Math.Max(1, rows).ToScalar();
        return TokensSinceFired.ge(minRows).to(ScalarType.Float64).mean().item<double>();
    }

    /// <summary>Adds one batch given as per-latent counts of rows on which each latent fired ([d_sae] int64) and the
    /// batch's row count: what sparse training passes compute without a dense [N, d_sae] matrix.</summary>
    public void UpdateCounts(Tensor activeCounts, long rows)
    {
        using var _ = no_grad();
        using var scope = NewDisposeScope();
        if (WindowSteps >= SamplingWindowSteps)
        {
            ActCounts.fill_(TorchScalars.Of(0));
            WindowRows = 0;
            WindowSteps = 0;
        }
        ActCounts.add_(activeCounts, TorchScalars.One);
        using (var rowsScalar = rows.ToScalar()) TokensSinceFired.add_(rowsScalar, TorchScalars.One);
        TokensSinceFired.masked_fill_(activeCounts.gt(TorchScalars.Of(0)), TorchScalars.Of(0));
        WindowRows += rows;
        WindowSteps++;
    }

    /// <summary>[d_sae] bool: latents that have not fired for the dead window.</summary>
    public Tensor DeadMask()
    {
        using var window = DeadWindowTokens.ToScalar();
        return TokensSinceFired.ge(window);
    }

    /// <summary>[d_sae] float32 log10(firing fraction + 1e-10) over the current window (SAELens <c>sparsity</c>).</summary>
    public Tensor LogSparsity()
    {
        using var scope = NewDisposeScope();
        using var windowRows = Math.Max(1, WindowRows).ToScalar();
        var frac = ActCounts.to(ScalarType.Float64) / windowRows;
        return frac.add(TorchScalars.Of(1e-10), TorchScalars.One).log10().to(ScalarType.Float32).MoveToOuterDisposeScope();
    }

    public void Dispose()
    {
        TokensSinceFired.Dispose();
        ActCounts.Dispose();
    }
}
