using SaeSharp.Activations;
using SaeSharp.Saes;
using SaeSharp.Synthetic;
using TorchSharp;
using static TorchSharp.torch;

namespace SaeSharp.Evaluation;

/// <summary>Runs an SAE over activation rows and accumulates <see cref="SaeEvalResult"/> metrics batch by batch
/// (streaming sums only; rows are not stored). The reconstruction is compared with each batch's target, which is the
/// input itself for an ordinary SAE. The result's <see cref="SaeEvalResult.FeatureMetrics"/> has the feature density and
/// the SAE's weight-based lists; rows have no prompts, so no consistent-activation heuristic.</summary>
public static class SaeEvaluator
{
    /// <summary>Evaluates on up to <paramref name="maxRows"/> rows drawn from <paramref name="source"/> in batches of
    /// <paramref name="batchSize"/>. With <paramref name="groundTruthFeatures"/> ([n_features, d_out]) also reports MMCS,
    /// recovered_fraction and SAELens's synthetic-data metrics; <paramref name="groundTruthActivations"/> (row i the
    /// ground truth of the i-th row evaluated) adds true_l0 and the classification metrics.</summary>
    public static SaeEvalResult Evaluate(Sae sae, IActivationSource source, long maxRows, int batchSize = 4096, Tensor? groundTruthFeatures = null,
        SparseFeatureActivations? groundTruthActivations = null)
    {
        if (maxRows <= 0) throw new SaeSharpException($"evaluation: maxRows must be positive, got {maxRows}");
        if (batchSize <= 0) throw new SaeSharpException($"evaluation: batch size must be positive, got {batchSize}");
        if (source.DIn != sae.Cfg.DIn || source.DOut != sae.Cfg.DOutOrIn)
            throw new SaeSharpException($"evaluation: the activations have d_in = {source.DIn}, d_out = {source.DOut} but the SAE expects d_in = {sae.Cfg.DIn}, d_out = {sae.Cfg.DOutOrIn}");
        CheckSameHooks(sae.Cfg.Metadata, source.Metadata);
        if (groundTruthFeatures is not null) groundTruthActivations ??= GroundTruthActivationsFor(source, maxRows, (int)groundTruthFeatures.shape[0]);
        return Evaluate(sae, Batches(source, maxRows, batchSize), maxRows, groundTruthFeatures, groundTruthActivations);
    }

    /// <summary>Rows that record their hook (a <c>sae cache</c> folder's manifest) must come from the hook the SAE reads
    /// (cfg.json <c>hook_name</c>), and a transcoder's targets from its <c>hook_name_out</c>: rows of the same width from
    /// another layer would give plausible but meaningless numbers. Either side unrecorded: nothing to check.</summary>
    private static void CheckSameHooks(SaeMetadata sae, SaeMetadata? rows)
    {
        if (rows is null) return;
        if (sae.HookName is { } h && rows.HookName is { } r && h != r)
            throw new SaeSharpException($"evaluation: the activations are of hook '{r}' (the cache's manifest.json), but the SAE reads '{h}' (cfg.json hook_name)");
        if (sae.HookNameOut is { } ho && rows.HookNameOut is { } ro && ho != ro)
            throw new SaeSharpException($"evaluation: the activations' targets are of hook '{ro}' (the cache's manifest.json target_hook), but the transcoder writes '{ho}' (cfg.json hook_name_out)");
    }

    /// <summary>The ground-truth feature activations of the first <paramref name="maxRows"/> rows that
    /// <paramref name="source"/> will deliver, when it is an unshuffled, unread activation-file source over files that
    /// <c>sae synth</c> wrote (<see cref="SparseFeatureActivations"/>); otherwise null (the metrics that need them are
    /// then left out).</summary>
    public static SparseFeatureActivations? GroundTruthActivationsFor(IActivationSource source, long maxRows, int nFeatures)
    {
        if (source is not ActivationFileSource { Options.Shuffle: false } files || files.Rows is not long rows || files.RowsDelivered != 0) return null;
        return SparseFeatureActivations.ReadRows(files.Files, files.Options.RowStart, Math.Min(rows, maxRows), nFeatures);
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

    /// <summary>Evaluates on the given batches (each disposed after use), stopping after <paramref name="maxRows"/> rows; a
    /// batch holding NaN or ±Inf is a <see cref="SaeSharpException"/> naming the row (counted over the batches).</summary>
    public static SaeEvalResult Evaluate(Sae sae, IEnumerable<ActivationBatch> batches, long maxRows = long.MaxValue, Tensor? groundTruthFeatures = null,
        SparseFeatureActivations? groundTruthActivations = null)
    {
        if (groundTruthActivations is not null && groundTruthFeatures is null)
            throw new SaeSharpException("evaluation: ground-truth activations need the ground-truth features too");
        if (groundTruthActivations is not null && groundTruthActivations.NFeatures != groundTruthFeatures!.shape[0])
            throw new SaeSharpException($"evaluation: ground-truth activations of {groundTruthActivations.NFeatures} features, but {groundTruthFeatures.shape[0]} feature directions");
        ArgumentNullException.ThrowIfNull(sae);
        if (sae.ReadsContext) throw TemporalSae.SequenceRequired("evaluation on activation rows");
        var acc = new SaeMetricsAccumulator(sae.Cfg.DOutOrIn, sae.Cfg.DSae);
        var synth = groundTruthFeatures is null ? null : new SyntheticMetricsAccumulator(sae.WDec, groundTruthFeatures);
        var device = sae.WDec.device;
        using (no_grad())
        {
            foreach (var batch in batches)
            {
                using (batch)
                {
                    long take = Math.Min(batch.Rows, maxRows - acc.Rows);
                    if (take <= 0) break;
                    if (batch.Input.dim() != 2 || batch.Input.shape[1] != sae.Cfg.DIn)
                        throw new SaeSharpException($"evaluation: a batch of shape [{string.Join(", ", batch.Input.shape)}] does not fit the SAE's d_in = {sae.Cfg.DIn}");
                    // A transcoder reconstructs its hook_name_out: rows without targets would score it against its own input.
                    if (sae.Cfg.DOut is not null && ReferenceEquals(batch.Target, batch.Input))
                        throw new SaeSharpException($"evaluation: the SAE is a transcoder (d_out = {sae.Cfg.DOut}, hook_name_out {sae.Cfg.Metadata.HookNameOut ?? "unset"}) but the rows have no targets; " +
                                                    "evaluate it on activations with targets (a sae cache --mode in_to_out folder)");
                    using var scope = NewDisposeScope();
                    // Batches from the caller's own code are not checked by a source: a NaN would make every metric NaN.
                    var input = batch.Input.narrow(0, 0, take);
                    var target = batch.Target.narrow(0, 0, take);
                    ActivationRowFile.CheckFinite(input, "evaluation: input", acc.Rows);
                    if (!ReferenceEquals(batch.Target, batch.Input)) ActivationRowFile.CheckFinite(target, "evaluation: target", acc.Rows);
                    var x = input.to(device);
                    var (y, f) = sae.Run(x);
                    if (synth is not null)
                    {
                        if (groundTruthActivations is not null && acc.Rows + take > groundTruthActivations.Rows)
                            throw new SaeSharpException($"evaluation: ground-truth activations cover {groundTruthActivations.Rows} rows, but more are evaluated");
                        // Only the columns the metrics read, not [rows, n_features] (SynthSAEBench has 16,384 features).
                        if (groundTruthActivations is null) synth.Add(target, y, f, null);
                        else synth.AddMatched(target, y, f, groundTruthActivations.Dense(acc.Rows, take, synth.BestMatches),
                            groundTruthActivations.CountPositive(acc.Rows, take));
                    }
                    acc.Add(target, y, f);
                }
                if (acc.Rows >= maxRows) break;
            }
        }
        var result = acc.Result();
        result = result with { FeatureMetrics = result.FeatureMetrics!.WithWeights(sae) };
        if (groundTruthFeatures is null) return result;
        var rec = FeatureRecovery.Compute(groundTruthFeatures, sae.WDec);
        return synth!.AddTo(result) with
        {
            Mmcs = rec.Mmcs, RecoveredFraction = rec.RecoveredFraction,
            Mcc = FeatureMatching.MeanCorrelationCoefficient(sae.WDec, groundTruthFeatures),
            Uniqueness = FeatureMatching.FeatureUniqueness(sae.WDec, groundTruthFeatures),
        };
    }
}
