using System.Text.Json.Nodes;
using SaeSharp.Activations;
using SaeSharp.Models;
using SaeSharp.Saes;
using TorchSharp;
using static TorchSharp.torch;

namespace SaeSharp.Evaluation;

/// <summary>
/// What a whole cross-layer transcoder costs when it replaces every covered MLP output (circuit-tracer's replacement
/// model): the CE and KL of the replacement run (the "with SAE" values), per-layer reconstruction metrics on the clean
/// run's activations.
/// </summary>
public sealed class CrossLayerTranscoderMetrics : SpliceLossMetrics
{
    /// <summary>The hook each layer's encoder read (<c>blocks.l.{feature_input_hook}</c>, resolved).</summary>
    public required IReadOnlyList<string> InputHooks { get; init; }
    /// <summary>The hook each layer's reconstruction replaced (<c>blocks.l.{feature_output_hook}</c>, resolved).</summary>
    public required IReadOnlyList<string> OutputHooks { get; init; }
    /// <summary>Per layer: the reconstruction of the clean output from the clean inputs of layers 0..l (FVU about the mean,
    /// MSE, cosine) and the layer's features (L0, L1, alive fraction), over the counted positions.</summary>
    public required IReadOnlyList<SaeEvalResult> Layers { get; init; }
    /// <summary>
    /// Every number, in the groups and names of <see cref="DownstreamMetrics.ToJson()"/> (SAELens's <c>run_evals</c>): the
    /// replacement model's <c>model_behavior_preservation</c> and <c>model_performance_preservation</c> (the "sae" values are
    /// the CLT's, "error_term" the replacement with error terms, "mean_ablation" every covered output mean-ablated),
    /// <c>token_stats</c>, the hooks, and per layer (<c>layers</c>) its hooks and the <c>reconstruction_quality</c>,
    /// <c>shrinkage</c> and <c>sparsity</c> of its reconstruction from the clean activations. NaN is written as null.
    /// What <c>sae eval --json</c> writes for a CLT.
    /// </summary>
    public JsonObject ToJson()
    {
        var layers = new JsonArray();
        for (int l = 0; l < Layers.Count; l++)
        {
            var r = Layers[l];
            layers.Add(new JsonObject
            {
                ["layer"] = l,
                ["hook_name"] = InputHooks[l],
                ["hook_name_out"] = OutputHooks[l],
                ["reconstruction_quality"] = DownstreamMetrics.ReconstructionQualityJson(r),
                ["shrinkage"] = DownstreamMetrics.ShrinkageJson(r),
                ["sparsity"] = DownstreamMetrics.SparsityJson(r, r.FeatureFrequency.LongCount(f => f == 0)),
            });
        }
        return new JsonObject
        {
            ["model_behavior_preservation"] = BehaviorPreservationJson(),
            ["model_performance_preservation"] = PerformancePreservationJson(),
            ["token_stats"] = new JsonObject
            {
                ["total_tokens_eval_reconstruction"] = Tokens,
                ["total_tokens_eval_ce_loss"] = CeTokens,
            },
            ["layers"] = layers,
        };
    }
}

public static partial class DownstreamEvaluator
{
    /// <summary>
    /// Splices the whole <paramref name="clt"/> into <paramref name="model"/> (circuit-tracer's replacement model): in one
    /// run, layer l's encoder reads that run's activation at <see cref="CrossLayerTranscoder.InputHook"/> and the output hook
    /// of every layer l is replaced by Σ_{i ≤ l} f_i·W_dec[i][:, l − i] + b_dec[l] (+ skip) at the counted positions
    /// (<see cref="DownstreamEvalOptions.ExcludeTokenIds"/>, <see cref="DownstreamEvalOptions.SeqposSlice"/>). Reports the CE and
    /// KL of that run against the clean model, zero and mean ablation of every covered output, and (with
    /// <see cref="DownstreamEvalOptions.ErrorTerm"/>) the replacement plus its error terms, which equals the clean run exactly;
    /// per-layer FVU, L0, ... of each layer's reconstruction from the clean activations. The same batching, masks and CE/KL
    /// measurement as <see cref="Evaluate"/>.
    /// </summary>
    public static CrossLayerTranscoderMetrics EvaluateReplacement(HookedTransformer model, CrossLayerTranscoder clt, IEnumerable<long[]> windows,
        DownstreamEvalOptions? options = null)
    {
        ArgumentNullException.ThrowIfNull(model);
        ArgumentNullException.ThrowIfNull(clt);
        ArgumentNullException.ThrowIfNull(windows);
        var o = options ?? new DownstreamEvalOptions();
        if (o.LogitChunkPositions is <= 0) throw new SaeSharpException($"logit chunk must be positive, got {o.LogitChunkPositions}");
        if (o.BatchSizePrompts <= 0) throw new SaeSharpException($"batch size in prompts must be positive, got {o.BatchSizePrompts}");
        int n = clt.Cfg.NLayers;
        var (inputHooks, outputHooks) = clt.Hooks(model);
        List<string> inputs = [.. inputHooks], outputs = [.. outputHooks];
        var exclude = (o.ExcludeTokenIds ?? []).Distinct().ToArray();
        var acc = Enumerable.Range(0, n).Select(_ => new SaeMetricsAccumulator(clt.Cfg.DModel, clt.Cfg.DTranscoder)).ToArray();
        Sums clean = new(), replaced = new(), ablated = new(), meanAblated = new(), withError = new();

        ForEachBatch(windows, o, clean, batch =>
            RunReplacementBatch(model, clt, batch, exclude, inputs, outputs, acc, clean, replaced, ablated, meanAblated, withError, o));
        return new CrossLayerTranscoderMetrics
        {
            InputHooks = inputs, OutputHooks = outputs, Layers = acc.Select(a => a.Result()).ToList(),
            CeLossWithoutSae = clean.MeanCe, CeLossWithSae = replaced.MeanCe, CeLossWithAblation = ablated.MeanCe,
            CeLossWithMeanAblation = o.MeanAblation ? meanAblated.MeanCe : double.NaN,
            CeLossWithErrorTerm = o.ErrorTerm ? withError.MeanCe : double.NaN,
            KlDivWithSae = replaced.MeanKl, KlDivWithAblation = ablated.MeanKl,
            KlDivWithMeanAblation = o.MeanAblation ? meanAblated.MeanKl : double.NaN,
            KlDivWithErrorTerm = o.ErrorTerm ? withError.MeanKl : double.NaN,
            Tokens = clean.Positions, CeTokens = clean.CePositions,
        };
    }

    private static void RunReplacementBatch(HookedTransformer model, CrossLayerTranscoder clt, List<long[]> windows, long[] exclude,
        List<string> inputs, List<string> outputs, SaeMetricsAccumulator[] acc, Sums clean, Sums replaced, Sums ablated, Sums meanAblated,
        Sums withError, DownstreamEvalOptions o)
    {
        int n = clt.Cfg.NLayers;
        using var scope = NewDisposeScope();
        using var _ = no_grad();
        var tokens = BatchTokens(model, windows);
        long b = tokens.shape[0], s = tokens.shape[1];
        var keep = ModelActivationHarvester.KeepMask(tokens, exclude, o.SeqposSlice);   // [b, s]
        var (cleanOut, cache) = model.Run(tokens, new RunOptions
        {
            CacheNames = inputs.Concat(outputs).Distinct().ToList(), Hooks = o.ModelHooks, ReturnNormalized = true,
        });
        using var c = cache!;

        // Per layer, on the clean activations: features, and the reconstruction from layers 0..l (the error term's
        // reference and the per-layer metrics).
        var rows = keep.reshape(-1).nonzero().squeeze(1);
        using var positions = s.ToScalar();
        var prompt = rows.div(positions, rounding_mode: RoundingMode.floor).cpu();
        var cleanFeatures = new List<Tensor>();
        var cleanRecon = new List<Tensor>();
        for (int l = 0; l < n; l++)
        {
            var x = c[inputs[l]];
            cleanFeatures.Add(clt.EncodeLayer(x, l));
            var recon = clt.DecodeLayer(cleanFeatures, l, x);
            cleanRecon.Add(recon);
            var y = c[outputs[l]];
            acc[l].Add(y.reshape(b * s, -1).index_select(0, rows).to(recon.dtype), recon.reshape(b * s, -1).index_select(0, rows),
                cleanFeatures[l].reshape(b * s, -1).index_select(0, rows), prompt);
        }

        var variants = new List<(Sums Sums, Tensor Normalized)>();
        Tensor RunWith(List<(string Name, Func<Tensor, Tensor?> Fn)> hooks) =>
            model.Run(tokens, new RunOptions { Hooks = [.. o.ModelHooks ?? [], .. hooks], ReturnNormalized = true }).Logits!;

        // The replacement (and with error terms): each encoder reads the run's own input; the features outlive the block
        // that made them (later layers decode them), so they leave the run's scopes and are freed here.
        Tensor Replacement(bool errorTerms)
        {
            var features = new Tensor?[n];
            var layerInput = new Tensor?[n];
            try
            {
                var hooks = new List<(string, Func<Tensor, Tensor?>)>();
                for (int l = 0; l < n; l++)
                {
                    int layer = l;
                    hooks.Add((inputs[l], x =>
                    {
                        features[layer] = clt.EncodeLayer(x, layer).DetachFromDisposeScope();
                        layerInput[layer] = x.alias().DetachFromDisposeScope();
                        return null;
                    }));
                    hooks.Add((outputs[l], y =>
                    {
                        var recon = clt.DecodeLayer(features.Take(layer + 1).Select((f, i) => f ?? throw new SaeSharpException(
                            $"cross-layer transcoder: '{outputs[layer]}' fired before layer {i}'s input hook '{inputs[i]}'")).ToList(), layer, layerInput[layer]);
                        // With error terms: clean + (recon − recon of the clean inputs), which is the clean output exactly
                        // while the run's inputs are the clean ones (and they are, layer by layer).
                        var replacement = errorTerms ? c[outputs[layer]].to(recon.dtype).add(recon.add(cleanRecon[layer], TorchScalars.Of(-1.0)), TorchScalars.One) : recon;
                        return Where(keep, replacement.to(y.dtype).view(y.shape), y);
                    }));
                }
                return RunWith(hooks);
            }
            finally
            {
                foreach (var t in features) t?.Dispose();
                foreach (var t in layerInput) t?.Dispose();
            }
        }

        variants.Add((replaced, Replacement(errorTerms: false)));
        if (o.ErrorTerm) variants.Add((withError, Replacement(errorTerms: true)));
        variants.Add((ablated, RunWith(outputs.Select(h => (h, (Func<Tensor, Tensor?>)(y => zeros_like(y)))).ToList())));
        if (o.MeanAblation)
        {
            var k = keep.to(ScalarType.Float32).unsqueeze(-1);
            var means = outputs.ToDictionary(h => h, h =>
            {
                var act = c[h];
                var kk = k.to(act.dtype);
                return (act * kk).sum([0, 1]) / kk.sum().clamp_min(TorchScalars.One);
            }, StringComparer.Ordinal);
            variants.Add((meanAblated, RunWith(outputs.Select(h => (h, (Func<Tensor, Tensor?>)(y => means[h].expand_as(y)))).ToList())));
        }
        Measure(model, tokens, keep, cleanOut!, clean, variants, o.LogitChunkPositions);
    }
}
