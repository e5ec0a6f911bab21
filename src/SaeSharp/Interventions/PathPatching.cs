using SaeSharp.Models;
using static TorchSharp.torch;

namespace SaeSharp.Interventions;

/// <summary>Which input of the receiver heads <see cref="PathPatching"/> patches: <c>blocks.L.hook_q_input</c>,
/// <c>hook_k_input</c> or <c>hook_v_input</c> (TransformerLens's <c>use_split_qkv_input</c>).</summary>
public enum PathReceiverInput
{
    /// <summary>The queries' input (a query head).</summary>
    Q,
    /// <summary>The keys' input (a key/value head in a grouped-query model).</summary>
    K,
    /// <summary>The values' input (a key/value head in a grouped-query model).</summary>
    V,
}

/// <summary>What <see cref="PathPatching"/> found: the metric of the clean and the corrupted run (means over the batch) and
/// <see cref="Patched"/>, the metric of the path-patched clean run.</summary>
public sealed record PathPatchingResult(double Clean, double Corrupted, double Patched)
{
    /// <summary>(patched − clean) / (clean − corrupted), ARENA's path-patching metric: 0 where the path carries nothing of
    /// the corruption, −1 where it carries all of it.</summary>
    public double Normalized => Normalize(Patched, Clean, Corrupted);

    /// <summary>(patched − clean) / (clean − corrupted).</summary>
    public static double Normalize(double patched, double clean, double corrupted) => (patched - clean) / (clean - corrupted);
}

/// <summary>
/// Path patching as the IOI paper (Wang et al. 2022, §3.1) defines it and ARENA's IOI notebook
/// (<c>get_path_patch_head_to_final_resid_post</c>, <c>get_path_patch_head_to_heads</c>) computes it, the effect of sender heads'
/// output on receivers only, through the residual stream and the MLPs but no other head:
/// <list type="number">
/// <item>Run the clean tokens caching every head's <c>hook_z</c>, and the corrupted tokens caching the senders' <c>hook_z</c>.</item>
/// <item>Run the clean tokens with every head's <c>hook_z</c> frozen at its clean value except the senders', which take their
/// corrupted value (MLPs and norms recompute). With receivers: cache the receivers' inputs (<c>blocks.L.hook_q_input</c>,
/// <c>hook_k_input</c> or <c>hook_v_input</c>, [batch, pos, head, d_model]). Without (the final residual stream as receiver):
/// this run's logits are the patched logits.</item>
/// <item>With receivers: run the clean tokens with only the receiver heads' inputs replaced by those cached in step 2; its logits
/// are the patched logits.</item>
/// </list>
/// A sender can also be an MLP (its <c>hook_mlp_out</c> from the corrupted run in step 2), and step 3 can patch only chosen
/// positions of the receivers' input. TransformerLens's direct path patching (the linear variant run the other way) is
/// <c>SaeSharp.Analysis.DirectPathPatching</c>. The metric is <see cref="ActivationPatching"/>'s: the mean over the batch of each
/// prompt pair's <see cref="AttributionMetric"/>.
/// </summary>
public static class PathPatching
{
    /// <summary>Path-patches the output of <paramref name="senders"/> (layer, head) and of the MLPs of
    /// <paramref name="senderMlps"/> (layers: their <c>hook_mlp_out</c>) from <paramref name="corrupted"/> into
    /// <paramref name="clean"/> (both [batch, pos]), to <paramref name="receivers"/>' <paramref name="input"/> (layer, head:
    /// a key/value head for k and v) or, when <paramref name="receivers"/> is null, to the final residual stream. An empty
    /// receiver list patches nothing. <paramref name="receiverPositions"/> (null: every position; non-negative) limits
    /// step 3 to those positions of the receivers' input (receivers needed).</summary>
    public static PathPatchingResult Run(HookedTransformer model, Tensor clean, Tensor corrupted, IReadOnlyList<AttentionHead> senders,
        IReadOnlyList<AttentionHead>? receivers, PathReceiverInput input, IReadOnlyList<AttributionMetric> metrics,
        IReadOnlyList<int>? senderMlps = null, IReadOnlyList<long>? receiverPositions = null)
    {
        ArgumentNullException.ThrowIfNull(senders);
        var each = Sweep(model, clean, corrupted, [(senders, senderMlps ?? [])], receivers, input, metrics, receiverPositions);
        return new PathPatchingResult(each.Clean, each.Corrupted, each.Patched[0]);
    }

    /// <summary>TransformerLens-style sweep (ARENA's <c>get_path_patch_head_to_*</c>): every head as the one sender in turn,
    /// [layer, head] metrics of the patched runs. Heads at or after the first receiver's layer cannot reach it: their entry
    /// is the clean metric, with no forward pass. <paramref name="receiverPositions"/> as <see cref="Run"/>'s.</summary>
    public static (double Clean, double Corrupted, double[,] Patched) RunEachSender(HookedTransformer model, Tensor clean, Tensor corrupted,
        IReadOnlyList<AttentionHead>? receivers, PathReceiverInput input, IReadOnlyList<AttributionMetric> metrics,
        IReadOnlyList<long>? receiverPositions = null)
    {
        ArgumentNullException.ThrowIfNull(model);
        var c = model.Config;
        var senders = new List<(IReadOnlyList<AttentionHead>, IReadOnlyList<int>)>();
        for (int l = 0; l < c.NLayers; l++)
            for (int h = 0; h < c.NHeads; h++) senders.Add(([new AttentionHead(l, h)], []));
        var each = Sweep(model, clean, corrupted, senders, receivers, input, metrics, receiverPositions);
        var patched = new double[c.NLayers, c.NHeads];
        for (int i = 0; i < senders.Count; i++) patched[i / c.NHeads, i % c.NHeads] = each.Patched[i];
        return (each.Clean, each.Corrupted, patched);
    }

    private static (double Clean, double Corrupted, double[] Patched) Sweep(HookedTransformer model, Tensor clean, Tensor corrupted,
        List<(IReadOnlyList<AttentionHead> Heads, IReadOnlyList<int> Mlps)> senderSets, IReadOnlyList<AttentionHead>? receivers,
        PathReceiverInput input, IReadOnlyList<AttributionMetric> metrics, IReadOnlyList<long>? receiverPositions)
    {
        ArgumentNullException.ThrowIfNull(model);
        ArgumentNullException.ThrowIfNull(senderSets);
        ActivationPatching.CheckPairs("path patching", clean, corrupted, metrics);
        var c = model.Config;
        int receiverHeads = input == PathReceiverInput.Q ? c.NHeads : c.NKvHeads;
        foreach (var l in senderSets.SelectMany(s => s.Mlps))
            if (l < 0 || l >= c.NLayers)
                throw new SaeSharpException($"path patching: sender mlp.{l} is not an MLP of {c.ModelName} (layers 0..{c.NLayers - 1})");
        foreach (var (l, h) in senderSets.SelectMany(s => s.Heads))
            if (l < 0 || l >= c.NLayers || h < 0 || h >= c.NHeads)
                throw new SaeSharpException($"path patching: sender L{l}H{h} is not a head of {c.ModelName} ({c.NLayers} layers of {c.NHeads} heads)");
        foreach (var (l, h) in receivers ?? [])
            if (l < 0 || l >= c.NLayers || h < 0 || h >= receiverHeads)
                throw new SaeSharpException($"path patching: receiver L{l}H{h} is not a{(receiverHeads < c.NHeads ? " key/value" : "")} head of {c.ModelName} " +
                                            $"({c.NLayers} layers of {receiverHeads} {(receiverHeads < c.NHeads ? "key/value " : "")}heads for hook_{input.ToString().ToLowerInvariant()}_input)");
        if (receiverPositions is not null)
        {
            if (receivers is null)
                throw new SaeSharpException("path patching: receiver positions need receiver heads (the final residual stream is read through the frozen run's own logits)");
            foreach (long p in receiverPositions)
                if (p < 0 || p >= clean.shape[1])
                    throw new SaeSharpException($"path patching: receiver position {p} is outside the prompts' {clean.shape[1]} tokens (0..{clean.shape[1] - 1})");
        }
        using var _ = no_grad();
        using var outer = NewDisposeScope();
        var blocks = model.HookPoints.Blocks;
        var zNames = Enumerable.Range(0, c.NLayers).Select(l => blocks[l].Z).ToList();
        var receiverNames = (receivers ?? []).Select(r => r.Layer).Distinct().ToDictionary(l => l, l => input switch
        {
            PathReceiverInput.Q => blocks[l].QInput,
            PathReceiverInput.K => blocks[l].KInput,
            _ => blocks[l].VInput,
        });
        var mlpLayers = senderSets.SelectMany(s => s.Mlps).Distinct().Order().ToList();
        using var cleanRun = model.RunWithCache(clean, zNames);
        using var corruptedRun = model.RunWithCache(corrupted, [.. zNames, .. mlpLayers.Select(l => blocks[l].MlpOut)]);
        double cleanMetric = ActivationPatching.MeanMetric(metrics, cleanRun.Logits!, clean);
        double corruptedMetric = ActivationPatching.MeanMetric(metrics, corruptedRun.Logits!, corrupted);
        int firstReceiver = receivers is null ? c.NLayers : receivers.Count == 0 ? -1 : receivers.Min(r => r.Layer);
        var patched = new double[senderSets.Count];
        for (int i = 0; i < senderSets.Count; i++)
        {
            var (senders, mlps) = senderSets[i];
            var layers = senders.Select(s => s.Layer).Concat(mlps).ToList();
            if (layers.Count == 0 || layers.Min() >= firstReceiver)
            {
                patched[i] = cleanMetric;   // no sender reaches a receiver: the patched run is the clean run
                continue;
            }
            using var scope = NewDisposeScope();
            // Step 2: every head frozen at its clean z, the senders' z and the sender MLPs' hook_mlp_out from the corrupted run.
            var freeze = zNames.Select((name, l) => (name, (Func<Tensor, Tensor?>)(x =>
            {
                var y = cleanRun.Cache[name].clone();
                foreach (var (_, h) in senders.Where(s => s.Layer == l))
                    y.select(2, h).copy_(corruptedRun.Cache[name].select(2, h));
                return y;
            }))).Concat(mlps.Distinct().Select(l => (blocks[l].MlpOut, (Func<Tensor, Tensor?>)(_ => corruptedRun.Cache[blocks[l].MlpOut].clone())))).ToList();
            if (receivers is null)
            {
                var logits = model.RunWithHooks(clean, [.. freeze]);
                patched[i] = ActivationPatching.MeanMetric(metrics, logits, clean);
                continue;
            }
            using var frozen = model.RunWithCache(clean, new RunOptions { Hooks = freeze, CacheNames = receiverNames.Values.ToList() });
            // Step 3: the clean run with only the receivers' inputs from step 2.
            var patch = receiverNames.Select(kv => (kv.Value, (Func<Tensor, Tensor?>)(x =>
            {
                var y = x.clone();
                foreach (var (_, h) in receivers.Where(r => r.Layer == kv.Key))
                {
                    if (receiverPositions is null)
                        y.select(2, h).copy_(frozen.Cache[kv.Value].select(2, h));
                    else
                        foreach (long p in receiverPositions)
                            y.select(2, h).select(1, p).copy_(frozen.Cache[kv.Value].select(2, h).select(1, p));
                }
                return y;
            }))).ToArray();
            var patchedLogits = model.RunWithHooks(clean, patch);
            patched[i] = ActivationPatching.MeanMetric(metrics, patchedLogits, clean);
        }
        return (cleanMetric, corruptedMetric, patched);
    }
}
