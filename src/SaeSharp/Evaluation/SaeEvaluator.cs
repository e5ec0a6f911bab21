using SaeSharp.Activations;
using SaeSharp.Saes;
using SaeSharp.Synthetic;
using TorchSharp;
using static TorchSharp.torch;

namespace SaeSharp.Evaluation;

/// <summary>Runs an SAE over activation rows and accumulates <see cref="SaeEvalResult"/> metrics batch by batch
/// (streaming sums only; rows are not stored). The reconstruction is compared with each batch's target, which is the
/// input itself for an ordinary SAE.</summary>
public static class SaeEvaluator
{
    /// <summary>Evaluates on up to <paramref name="maxRows"/> rows drawn from <paramref name="source"/> in batches of
    /// <paramref name="batchSize"/>. With <paramref name="groundTruthFeatures"/> ([n_features, d_out]) also reports MMCS and
    /// recovered_fraction of the decoder rows.</summary>
    public static SaeEvalResult Evaluate(Sae sae, IActivationSource source, long maxRows, int batchSize = 4096, Tensor? groundTruthFeatures = null)
    {
        if (maxRows <= 0) throw new SaeSharpException($"evaluation: maxRows must be positive, got {maxRows}");
        if (batchSize <= 0) throw new SaeSharpException($"evaluation: batch size must be positive, got {batchSize}");
        return Evaluate(sae, Batches(source, maxRows, batchSize), maxRows, groundTruthFeatures);
    }

    private static IEnumerable<ActivationBatch> Batches(IActivationSource source, long maxRows, int batchSize)
    {
        long left = maxRows;
        while (left > 0 && source.Next((int)Math.Min(batchSize, left)) is { } batch)
        {
            left -= batch.Rows;
            yield return batch;
        }
    }

    /// <summary>Evaluates on the given batches (each disposed after use), stopping after <paramref name="maxRows"/> rows.</summary>
    public static SaeEvalResult Evaluate(Sae sae, IEnumerable<ActivationBatch> batches, long maxRows = long.MaxValue, Tensor? groundTruthFeatures = null)
    {
        var acc = new SaeMetricsAccumulator(sae.Cfg.DOutOrIn, sae.Cfg.DSae);
        var device = sae.WDec.device;
        using (no_grad())
        {
            foreach (var batch in batches)
            {
                using (batch)
                {
                    long take = Math.Min(batch.Rows, maxRows - acc.Rows);
                    if (take <= 0) break;
                    using var scope = NewDisposeScope();
                    var x = batch.Input.narrow(0, 0, take).to(device);
                    var target = batch.Target.narrow(0, 0, take);
                    var (y, f) = sae.Run(x);
                    acc.Add(target, y, f);
                }
                if (acc.Rows >= maxRows) break;
            }
        }
        var result = acc.Result();
        if (groundTruthFeatures is null) return result;
        var rec = FeatureRecovery.Compute(groundTruthFeatures, sae.WDec);
        return result with { Mmcs = rec.Mmcs, RecoveredFraction = rec.RecoveredFraction };
    }
}
