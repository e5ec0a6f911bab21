using System.Text.Json.Nodes;
using SaeSharp.Activations;
using SaeSharp.Hooks;
using SaeSharp.Models;
using SaeSharp.Saes;
using TorchSharp;
using static TorchSharp.torch;

namespace SaeSharp.Evaluation;

/// <summary>
/// What splicing a crosscoder into one of its models costs: that model's run with every hook it gives a slot replaced by
/// the slot's reconstruction at once, against its clean run and against every one of those hooks zero- (and mean-) ablated.
/// </summary>
public sealed class CrossCoderModelMetrics : SpliceLossMetrics
{
    /// <summary>The model's display name (<see cref="CrossCoderModelRun.Name"/>).</summary>
    public required string Name { get; init; }
    /// <summary>The crosscoder slots this model's hooks fill (0-based, in slot order).</summary>
    public required IReadOnlyList<int> Slots { get; init; }
    /// <summary>The hook of each of <see cref="Slots"/> (resolved TransformerLens names).</summary>
    public required IReadOnlyList<string> Hooks { get; init; }

    /// <summary>The model, its slots and hooks, and SAELens's <c>model_behavior_preservation</c>,
    /// <c>model_performance_preservation</c> and <c>token_stats</c> groups (NaN written as null).</summary>
    public JsonObject ToJson() => new()
    {
        ["model"] = Name,
        ["slots"] = new JsonArray(Slots.Select(s => (JsonNode)JsonValue.Create(s)).ToArray()),
        ["hook_names"] = new JsonArray(Hooks.Select(h => (JsonNode)JsonValue.Create(h)).ToArray()),
        ["model_behavior_preservation"] = BehaviorPreservationJson(),
        ["model_performance_preservation"] = PerformancePreservationJson(),
        ["token_stats"] = new JsonObject { ["total_tokens_eval_reconstruction"] = Tokens, ["total_tokens_eval_ce_loss"] = CeTokens },
    };
}

/// <summary>A crosscoder evaluated inside its model(s): the reconstruction metrics of the clean activations
/// (<see cref="CrossCoderEvaluator"/>'s) and the CE/KL of splicing it into each model.</summary>
/// <param name="Reconstruction">Per-slot and total MSE, explained variance and FVU, L0 and dead latents over the counted positions.</param>
/// <param name="Models">One entry per model, in the order given.</param>
public sealed record CrossCoderDownstreamMetrics(CrossCoderEvalResult Reconstruction, IReadOnlyList<CrossCoderModelMetrics> Models);

public static partial class DownstreamEvaluator
{
    /// <summary>
    /// Splices crosscoder <paramref name="cc"/> into its models: slot j reads hook <c>hooks[j mod H]</c> of model
    /// ⌊j / H⌋ (H = the number of <paramref name="hooks"/>; model-major as <see cref="HarvestSpec.ForCrossCoder"/> harvests:
    /// several hooks of one model, or one hook of a base and a chat model for model diffing). Per batch every model runs
    /// clean once; the crosscoder encodes x [tokens, L, d] made of the clean activations of all slots (every model's) and
    /// decodes x̂; then each model runs with every hook of its slots replaced by x̂ of that slot at the counted positions
    /// (<see cref="DownstreamEvalOptions.ExcludeTokenIds"/>, <see cref="DownstreamEvalOptions.SeqposSlice"/>), with those
    /// hooks zero-ablated, mean-ablated (the mean over the counted positions) and, with
    /// <see cref="DownstreamEvalOptions.ErrorTerm"/>, with x̂ + (x − x̂) spliced (equal to the clean run). The CE and
    /// KL(clean ‖ variant) are measured as <see cref="Evaluate"/> measures them, per model. Each model's hooks are given with
    /// it (<see cref="CrossCoderModelRun.Hooks"/>), not in <see cref="DownstreamEvalOptions.ModelHooks"/>.
    /// <paramref name="countedRows"/>, when given, receives each batch's x [counted positions, L, d] (the rows the
    /// reconstruction metrics see, in window order; valid only during the call), e.g. a <see cref="CrossCoderLatentScalingAccumulator"/>'s
    /// <see cref="CrossCoderLatentScalingAccumulator.Add"/>.
    /// </summary>
    public static CrossCoderDownstreamMetrics EvaluateCrossCoder(CrossCoder cc, IReadOnlyList<CrossCoderModelRun> models, IReadOnlyList<string> hooks,
        IEnumerable<long[]> windows, DownstreamEvalOptions? options = null, Action<Tensor>? countedRows = null)
    {
        ArgumentNullException.ThrowIfNull(cc);
        cc.CheckReconstructsInput("crosscoder evaluation inside the models");
        ArgumentNullException.ThrowIfNull(models);
        ArgumentNullException.ThrowIfNull(hooks);
        ArgumentNullException.ThrowIfNull(windows);
        var o = options ?? new DownstreamEvalOptions();
        if (o.LogitChunkPositions is <= 0) throw new SaeSharpException($"logit chunk must be positive, got {o.LogitChunkPositions}");
        if (o.BatchSizePrompts <= 0) throw new SaeSharpException($"batch size in prompts must be positive, got {o.BatchSizePrompts}");
        if (o.ModelHooks is { Count: > 0 })
            throw new SaeSharpException("crosscoder evaluation: give each model's hooks with it (CrossCoderModelRun.Hooks), not in DownstreamEvalOptions.ModelHooks");
        var spec = HarvestSpec.ForCrossCoder(models.Select(m => m.Model.HookPoints).ToList(), hooks);
        var slotHooks = spec.LayerHooks!;
        var slotModels = spec.LayerModels!;
        if (slotHooks.Count != cc.Cfg.NumLayers)
            throw new SaeSharpException($"the crosscoder has {cc.Cfg.NumLayers} layer slots but {models.Count} model(s) × {hooks.Count} hook(s) give {slotHooks.Count}");
        for (int j = 0; j < slotHooks.Count; j++)
            if (models[slotModels[j]].Model.HookPoints.ExpertRouting(slotHooks[j]) is not null)
                throw new SaeSharpException($"crosscoder slot {j} reads '{slotHooks[j]}', an MoE expert's hook: a crosscoder's slots are evaluated at every token, and an expert sees only the tokens routed to it");
        var exclude = (o.ExcludeTokenIds ?? []).Distinct().ToArray();
        using var acc = new CrossCoderMetricsAccumulator(cc.Cfg);
        var sums = models.Select(_ => new CrossCoderSums()).ToArray();

        ForEachBatch(windows, o, sums[0].Clean, batch => RunCrossCoderBatch(cc, models, slotHooks, slotModels, batch, exclude, acc, sums, o, countedRows));
        var perModel = models.Select((m, i) =>
        {
            var s = sums[i];
            var slots = Enumerable.Range(0, slotHooks.Count).Where(j => slotModels[j] == i).ToList();
            return new CrossCoderModelMetrics
            {
                Name = m.Name ?? m.Model.Config.ModelName, Slots = slots, Hooks = slots.Select(j => slotHooks[j]).ToList(),
                CeLossWithoutSae = s.Clean.MeanCe, CeLossWithSae = s.Spliced.MeanCe, CeLossWithAblation = s.Ablated.MeanCe,
                CeLossWithMeanAblation = o.MeanAblation ? s.MeanAblated.MeanCe : double.NaN,
                CeLossWithErrorTerm = o.ErrorTerm ? s.ErrorTerm.MeanCe : double.NaN,
                KlDivWithSae = s.Spliced.MeanKl, KlDivWithAblation = s.Ablated.MeanKl,
                KlDivWithMeanAblation = o.MeanAblation ? s.MeanAblated.MeanKl : double.NaN,
                KlDivWithErrorTerm = o.ErrorTerm ? s.ErrorTerm.MeanKl : double.NaN,
                Tokens = s.Clean.Positions, CeTokens = s.Clean.CePositions,
            };
        }).ToList();
        return new CrossCoderDownstreamMetrics(acc.Result(), perModel);
    }

    /// <summary>One model's running sums.</summary>
    private sealed class CrossCoderSums
    {
        public readonly Sums Clean = new(), Spliced = new(), Ablated = new(), MeanAblated = new(), ErrorTerm = new();
    }

    private static void RunCrossCoderBatch(CrossCoder cc, IReadOnlyList<CrossCoderModelRun> models, IReadOnlyList<string> slotHooks, IReadOnlyList<int> slotModels,
        List<long[]> windows, long[] exclude, CrossCoderMetricsAccumulator acc, CrossCoderSums[] sums, DownstreamEvalOptions o, Action<Tensor>? countedRows)
    {
        using var scope = NewDisposeScope();
        using var _ = no_grad();
        var tokens = BatchTokens(models[0].Model, windows);
        long b = tokens.shape[0], s = tokens.shape[1];
        var keep = ModelActivationHarvester.KeepMask(tokens, exclude, o.SeqposSlice);   // [b, s]
        var caches = new ActivationCache?[models.Count];
        try
        {
            // Every model's clean run: the final-normalised residual (no logits yet) and its slots' activations.
            var cleanOut = new Tensor[models.Count];
            for (int m = 0; m < models.Count; m++)
            {
                var names = slotHooks.Where((_, j) => slotModels[j] == m).ToList();
                var (normalized, cache) = models[m].Model.Run(tokens.to(models[m].Model.Device), new RunOptions
                {
                    CacheNames = names, Hooks = models[m].Hooks, ReturnNormalized = true,
                });
                (cleanOut[m], caches[m]) = (normalized!, cache);
            }
            // x [b·s, L, d] from the clean activations of all slots; the crosscoder's reconstruction of every position.
            var device = cc.Encoder.Weight.device;
            var parts = new List<Tensor>();
            for (int j = 0; j < slotHooks.Count; j++)
            {
                var a = caches[slotModels[j]]![slotHooks[j]].reshape(b * s, -1);
                if (a.shape[1] != cc.Cfg.ActivationDim)
                    throw new SaeSharpException($"crosscoder slot {j} reads '{slotHooks[j]}' of {models[slotModels[j]].Name ?? models[slotModels[j]].Model.Config.ModelName}, " +
                                                $"{a.shape[1]} values per token, but its activation_dim is {cc.Cfg.ActivationDim}");
                parts.Add(a.to(ScalarType.Float32, device));
            }
            var x = stack(parts, 1);
            var f = cc.Encode(x);
            var xHat = cc.Decode(f);
            var rows = keep.reshape(-1).nonzero().squeeze(1).to(device);
            if (rows.shape[0] > 0)
            {
                var counted = x.index_select(0, rows);
                acc.Add(counted, xHat.index_select(0, rows), CrossCoder.LatentCodes(f).index_select(0, rows));
                countedRows?.Invoke(counted);
            }

            for (int m = 0; m < models.Count; m++)
            {
                var model = models[m].Model;
                var c = caches[m]!;
                var mk = keep.to(model.Device);
                var mTokens = tokens.to(model.Device);
                var slots = Enumerable.Range(0, slotHooks.Count).Where(j => slotModels[j] == m).ToList();
                Tensor Recon(int j, Tensor y) => xHat.select(1, j).to(y.dtype, y.device).view(y.shape);
                Tensor RunWith(Func<int, Func<Tensor, Tensor?>> replace) => model.Run(mTokens, new RunOptions
                {
                    Hooks = [.. models[m].Hooks ?? [], .. slots.Select(j => (slotHooks[j], replace(j)))], ReturnNormalized = true,
                }).Logits!;

                var variants = new List<(Sums Sums, Tensor Normalized)>
                {
                    (sums[m].Spliced, RunWith(j => y => Where(mk, Recon(j, y), y))),
                };
                if (o.ErrorTerm)
                    variants.Add((sums[m].ErrorTerm, RunWith(j => y =>
                    {
                        var r = Recon(j, y);
                        return Where(mk, r.add(c[slotHooks[j]].to(y.dtype) - r, TorchScalars.One), y);
                    })));
                // Ablation replaces every position (SAELens's zero-ablation hook); the mean is over the counted positions.
                variants.Add((sums[m].Ablated, RunWith(_ => y => zeros_like(y))));
                if (o.MeanAblation)
                {
                    var means = slots.ToDictionary(j => j, j =>
                    {
                        var act = c[slotHooks[j]];
                        var k = mk.to(act.dtype).view(new long[] { b, s }.Concat(Enumerable.Repeat(1L, (int)act.dim() - 2)).ToArray());
                        return (act * k).sum([0, 1]) / k.sum().clamp_min(TorchScalars.One);
                    });
                    variants.Add((sums[m].MeanAblated, RunWith(j => y => means[j].expand_as(y))));
                }
                Measure(model, mTokens, mk, cleanOut[m], sums[m].Clean, variants, o.LogitChunkPositions);
            }
        }
        finally
        {
            foreach (var c in caches) c?.Dispose();
        }
    }
}
