using SaeSharp.Models;
using static TorchSharp.torch;

namespace SaeSharp.Interventions;

/// <summary>Which activation <see cref="ActivationPatching"/> patches: TransformerLens's <c>get_act_patch_resid_pre</c>,
/// <c>get_act_patch_resid_mid</c>, <c>get_act_patch_attn_out</c>, <c>get_act_patch_mlp_out</c> (per layer × position) and
/// <c>get_act_patch_attn_head_out_all_pos</c>, <c>get_act_patch_attn_head_v_all_pos</c> and
/// <c>get_act_patch_attn_head_pattern_all_pos</c>, <c>get_act_patch_attn_head_q_all_pos</c>, <c>get_act_patch_attn_head_k_all_pos</c>
/// (<c>hook_z</c>, <c>hook_v</c>, <c>hook_pattern</c>, <c>hook_q</c>, <c>hook_k</c> per layer × head, every position), and with
/// <see cref="ActivationPatching.RunByPosition"/> the heads' <c>get_act_patch_attn_head_*_by_pos</c> (transformer_lens/patching.py).</summary>
public enum PatchedActivation
{
    /// <summary><c>blocks.L.hook_resid_pre</c>, one position at a time.</summary>
    ResidPre,
    /// <summary><c>blocks.L.hook_resid_mid</c> (between the attention and the MLP), one position at a time
    /// (<c>get_act_patch_resid_mid</c>; a parallel attention/MLP block has none).</summary>
    ResidMid,
    /// <summary><c>blocks.L.hook_attn_out</c>, one position at a time.</summary>
    AttnOut,
    /// <summary><c>blocks.L.hook_mlp_out</c>, one position at a time.</summary>
    MlpOut,
    /// <summary><c>blocks.L.attn.hook_z</c>, one head at a time over every position.</summary>
    HeadZ,
    /// <summary><c>blocks.L.attn.hook_v</c>, one key-value head at a time over every position (<c>layer_head_vector_patch_setter</c>;
    /// n_key_value_heads columns in a grouped-query model, as TransformerLens gives them).</summary>
    HeadV,
    /// <summary><c>blocks.L.attn.hook_pattern</c>, one head's whole [query_pos, key_pos] pattern at a time
    /// (<c>layer_head_pattern_patch_setter</c>).</summary>
    HeadPattern,
    /// <summary><c>blocks.L.attn.hook_q</c>, one query head at a time over every position (<c>get_act_patch_attn_head_q_all_pos</c>).</summary>
    HeadQ,
    /// <summary><c>blocks.L.attn.hook_k</c>, one key-value head at a time over every position (<c>get_act_patch_attn_head_k_all_pos</c>;
    /// n_key_value_heads columns in a grouped-query model, as for <see cref="HeadV"/>).</summary>
    HeadK,
}

/// <summary>
/// What <see cref="ActivationPatching"/> found: the metric of the clean and the corrupted run and
/// <see cref="Patched"/> [layer, position] (or [layer, head] for the per-head activations): the metric of the
/// corrupted run with that one activation taken from the clean run. Metrics are means over the batch.
/// </summary>
public sealed record ActivationPatchingResult(PatchedActivation Activation, double Clean, double Corrupted, double[,] Patched)
{
    /// <summary>(patched − corrupted) / (clean − corrupted), as the Exploratory Analysis Demo normalises: 1 where the patch
    /// restores the clean metric, 0 where it changes nothing. NaN everywhere when the two runs' metrics are equal.</summary>
    public double Normalized(int row, int column) => ActivationPatching.Normalize(Patched[row, column], Clean, Corrupted);
}

/// <summary>
/// What <see cref="ActivationPatching.RunByPosition"/> found: <see cref="Patched"/> [layer, position, head], the metric of the
/// corrupted run with one head's activation at one position taken from the clean run (for <c>hook_pattern</c> the head's
/// row of destination position <c>position</c>; TransformerLens orders that result [layer, head, dest_pos]).
/// </summary>
public sealed record ActivationPatchingByPositionResult(PatchedActivation Activation, double Clean, double Corrupted, double[,,] Patched)
{
    /// <summary>(patched − corrupted) / (clean − corrupted), as <see cref="ActivationPatchingResult.Normalized"/>.</summary>
    public double Normalized(int layer, int position, int head) => ActivationPatching.Normalize(Patched[layer, position, head], Clean, Corrupted);
}

/// <summary>
/// What <see cref="ActivationPatching.RunPatternDestSrc"/> found: <see cref="Patched"/> [layer, head, dest_pos, src_pos], the metric
/// of the corrupted run with one entry of one head's attention pattern taken from the clean run (TransformerLens's
/// <c>get_act_patch_attn_head_pattern_dest_src_pos</c> order).
/// </summary>
public sealed record ActivationPatchingDestSrcResult(double Clean, double Corrupted, double[,,,] Patched)
{
    /// <summary>(patched − corrupted) / (clean − corrupted), as <see cref="ActivationPatchingResult.Normalized"/>.</summary>
    public double Normalized(int layer, int head, int dest, int src) => ActivationPatching.Normalize(Patched[layer, head, dest, src], Clean, Corrupted);
}

/// <summary>
/// Activation patching as TransformerLens's <c>patching.py</c> (<c>generic_activation_patch</c>) does it: run the clean
/// tokens with a cache, then for every index (layer × position, layer × head, or layer × position × head) run the corrupted
/// tokens with that slice of the activation replaced by the clean run's (the <c>*_patch_setter</c>s), and take the metric of
/// the patched logits. Clean and corrupted tokens are [batch, pos] of one shape: a batch of prompt pairs, row i of one
/// the counterpart of row i of the other (TransformerLens needs equal token counts too). The metric is the mean over the
/// rows of each row's <see cref="AttributionMetric"/> (one for every row, or one per row: the notebook's
/// <c>logits_to_ave_logit_diff</c> with an answer pair per prompt).
/// </summary>
public static class ActivationPatching
{
    /// <summary>Whether <paramref name="activation"/> is patched one head at a time ([layer, head] results) rather than one position at a time.</summary>
    public static bool IsPerHead(PatchedActivation activation) => activation is PatchedActivation.HeadZ or PatchedActivation.HeadV
        or PatchedActivation.HeadPattern or PatchedActivation.HeadQ or PatchedActivation.HeadK;

    /// <summary>The Exploratory Analysis Demo's <c>normalize_patched_logit_diff</c>: (patched − corrupted) / (clean − corrupted).</summary>
    public static double Normalize(double patched, double clean, double corrupted) => (patched - corrupted) / (clean - corrupted);

    /// <summary>The number of heads <paramref name="activation"/> has per layer: n_key_value_heads for hook_k and hook_v
    /// (as <c>generic_activation_patch</c> counts them), n_heads otherwise.</summary>
    public static int HeadCount(TransformerConfig config, PatchedActivation activation)
    {
        ArgumentNullException.ThrowIfNull(config);
        return activation is PatchedActivation.HeadK or PatchedActivation.HeadV ? config.NKvHeads : config.NHeads;
    }

    /// <summary>Patches <paramref name="activation"/> from <paramref name="clean"/> into <paramref name="corrupted"/> (both
    /// [batch, pos]) at every layer and position (head), one forward pass each; one metric for every row.</summary>
    public static ActivationPatchingResult Run(HookedTransformer model, Tensor clean, Tensor corrupted, PatchedActivation activation,
        AttributionMetric metric) => Run(model, clean, corrupted, activation, [metric]);

    /// <summary>Patches <paramref name="activation"/> from <paramref name="clean"/> into <paramref name="corrupted"/> (both
    /// [batch, pos]) at every layer and position (head), one forward pass each: TransformerLens's <c>get_act_patch_*</c>
    /// (<c>_all_pos</c> for the heads). <paramref name="metrics"/>: one for every row or one per row, averaged over the rows.</summary>
    public static ActivationPatchingResult Run(HookedTransformer model, Tensor clean, Tensor corrupted, PatchedActivation activation,
        IReadOnlyList<AttributionMetric> metrics) => RunEach(model, clean, corrupted, [activation], metrics)[0];

    /// <summary>TransformerLens's <c>get_act_patch_block_every</c>: resid_pre, attn_out and mlp_out, its [3, layer, pos].</summary>
    public static readonly IReadOnlyList<PatchedActivation> BlockEvery = [PatchedActivation.ResidPre, PatchedActivation.AttnOut, PatchedActivation.MlpOut];

    /// <summary>TransformerLens's <c>get_act_patch_attn_head_all_pos_every</c> and <c>get_act_patch_attn_head_by_pos_every</c>,
    /// in their order: z (the head's output), q, k, v, pattern, their [5, layer, head] and [5, layer, pos, head].</summary>
    public static readonly IReadOnlyList<PatchedActivation> HeadEvery =
        [PatchedActivation.HeadZ, PatchedActivation.HeadQ, PatchedActivation.HeadK, PatchedActivation.HeadV, PatchedActivation.HeadPattern];

    /// <summary>
    /// <see cref="Run(HookedTransformer, Tensor, Tensor, PatchedActivation, IReadOnlyList{AttributionMetric})"/> for each of
    /// <paramref name="activations"/> (<see cref="BlockEvery"/>: <c>get_act_patch_block_every</c>; <see cref="HeadEvery"/>:
    /// <c>get_act_patch_attn_head_all_pos_every</c>), sharing one clean run that caches every hook they patch and one
    /// corrupted run. Each part keeps its own width: hook_k and hook_v have n_key_value_heads columns, where TransformerLens
    /// pads them with zeros to n_heads to stack the parts.
    /// </summary>
    public static IReadOnlyList<ActivationPatchingResult> RunEach(HookedTransformer model, Tensor clean, Tensor corrupted,
        IReadOnlyList<PatchedActivation> activations, IReadOnlyList<AttributionMetric> metrics)
    {
        ArgumentNullException.ThrowIfNull(model);
        ArgumentNullException.ThrowIfNull(clean);
        ArgumentNullException.ThrowIfNull(activations);
        var parts = activations.Select(activation =>
        {
            bool heads = IsPerHead(activation);
            int columns = heads ? HeadCount(model.Config, activation) : (int)clean.shape[^1];
            // hook_z, hook_q, hook_k and hook_v [batch, pos, head, d_head]; hook_pattern [batch, head, query_pos, key_pos]; the rest [batch, pos, d_model].
            int dim = heads && activation != PatchedActivation.HeadPattern ? 2 : 1;
            return new Part(activation, columns, k => [(dim, k)]);
        }).ToList();
        var (cleanMetric, corruptedMetric, flat) = Patch(model, clean, corrupted, parts, metrics);
        return [.. parts.Select((part, i) =>
        {
            var patched = new double[model.Config.NLayers, part.Count];
            for (int l = 0; l < patched.GetLength(0); l++)
                for (int k = 0; k < part.Count; k++) patched[l, k] = flat[i][l][k];
            return new ActivationPatchingResult(part.Activation, cleanMetric, corruptedMetric, patched);
        })];
    }

    /// <summary>
    /// TransformerLens's <c>get_act_patch_attn_head_out_by_pos</c>, <c>_q_by_pos</c>, <c>_k_by_pos</c>, <c>_v_by_pos</c>
    /// (<c>layer_pos_head_vector_patch_setter</c>: <c>act[:, pos, head] = clean[:, pos, head]</c>) and
    /// <c>_pattern_by_pos</c> (<c>layer_head_pos_pattern_patch_setter</c>: <c>pattern[:, head, dest_pos, :] = clean[:, head, dest_pos, :]</c>):
    /// one forward pass per layer × position × head. <paramref name="activation"/> is one of the per-head activations.
    /// </summary>
    public static ActivationPatchingByPositionResult RunByPosition(HookedTransformer model, Tensor clean, Tensor corrupted,
        PatchedActivation activation, IReadOnlyList<AttributionMetric> metrics) => RunByPositionEach(model, clean, corrupted, [activation], metrics)[0];

    /// <summary>
    /// <see cref="RunByPosition"/> for each of <paramref name="activations"/> (<see cref="HeadEvery"/>:
    /// <c>get_act_patch_attn_head_by_pos_every</c>, with hook_pattern's [layer, head, dest_pos] turned to [layer, pos, head] as
    /// it does), sharing one clean run and one corrupted run; hook_k and hook_v keep their n_key_value_heads (unpadded).
    /// </summary>
    public static IReadOnlyList<ActivationPatchingByPositionResult> RunByPositionEach(HookedTransformer model, Tensor clean, Tensor corrupted,
        IReadOnlyList<PatchedActivation> activations, IReadOnlyList<AttributionMetric> metrics)
    {
        ArgumentNullException.ThrowIfNull(model);
        ArgumentNullException.ThrowIfNull(clean);
        ArgumentNullException.ThrowIfNull(activations);
        if (activations.Where(a => !IsPerHead(a)).ToList() is [var notHead, ..])
            throw new SaeSharpException($"activation patching by position and head: {notHead} is not a head's activation (use z, q, k, v or pattern)");
        int positions = (int)clean.shape[^1];
        var parts = activations.Select(activation =>
        {
            int heads = HeadCount(model.Config, activation);
            return new Part(activation, positions * heads, k => activation == PatchedActivation.HeadPattern
                ? [(1, k % heads), (1, k / heads)] : [(1, k / heads), (1, k % heads)]);
        }).ToList();
        var (cleanMetric, corruptedMetric, flat) = Patch(model, clean, corrupted, parts, metrics);
        return [.. parts.Select((part, i) =>
        {
            int heads = part.Count / positions;
            var patched = new double[model.Config.NLayers, positions, heads];
            for (int l = 0; l < patched.GetLength(0); l++)
                for (int k = 0; k < part.Count; k++) patched[l, k / heads, k % heads] = flat[i][l][k];
            return new ActivationPatchingByPositionResult(part.Activation, cleanMetric, corruptedMetric, patched);
        })];
    }

    /// <summary>
    /// TransformerLens's <c>get_act_patch_attn_head_pattern_dest_src_pos</c> (<c>layer_head_dest_src_pos_pattern_patch_setter</c>:
    /// <c>pattern[:, head, dest_pos, src_pos] = clean[:, head, dest_pos, src_pos]</c>): one entry of one head's attention pattern at
    /// a time, [layer, head, dest_pos, src_pos]. An entry equal in the clean and the corrupted run in every row (every entry
    /// above the diagonal, which causal attention makes 0 in both) leaves the corrupted run as it is: it gets the corrupted
    /// metric without a forward pass, the value TransformerLens's pass gives it.
    /// </summary>
    public static ActivationPatchingDestSrcResult RunPatternDestSrc(HookedTransformer model, Tensor clean, Tensor corrupted, IReadOnlyList<AttributionMetric> metrics)
    {
        ArgumentNullException.ThrowIfNull(model);
        ArgumentNullException.ThrowIfNull(clean);
        int positions = (int)clean.shape[^1], heads = model.Config.NHeads, square = positions * positions;
        var part = new Part(PatchedActivation.HeadPattern, heads * square,
            k => [(1, k / square), (1, k / positions % positions), (1, k % positions)], SkipEqual: true);
        var (cleanMetric, corruptedMetric, flat) = Patch(model, clean, corrupted, [part], metrics);
        var patched = new double[model.Config.NLayers, heads, positions, positions];
        for (int l = 0; l < patched.GetLength(0); l++)
            for (int k = 0; k < part.Count; k++) patched[l, k / square, k / positions % positions, k % positions] = flat[0][l][k];
        return new ActivationPatchingDestSrcResult(cleanMetric, corruptedMetric, patched);
    }

    /// <summary>The hook <paramref name="activation"/> names at layer <paramref name="layer"/>.</summary>
    private static string Hook(HookedTransformer model, int layer, PatchedActivation activation)
    {
        var b = model.HookPoints.Blocks[layer];
        return activation switch
        {
            PatchedActivation.ResidPre => b.ResidPre,
            PatchedActivation.ResidMid => b.ResidMid,
            PatchedActivation.AttnOut => b.AttnOut,
            PatchedActivation.MlpOut => b.MlpOut,
            PatchedActivation.HeadV => b.V,
            PatchedActivation.HeadQ => b.Q,
            PatchedActivation.HeadK => b.K,
            PatchedActivation.HeadPattern => b.Pattern,
            _ => b.Z,
        };
    }

    /// <summary>The mean over the rows of each row's metric (<see cref="AttributionMetric.EvaluateRows"/>).</summary>
    internal static double MeanMetric(IReadOnlyList<AttributionMetric> metrics, Tensor logits, Tensor tokens) =>
        AttributionMetric.EvaluateRows(metrics, logits, tokens).Average();

    /// <summary>Checks that <paramref name="clean"/> and <paramref name="corrupted"/> are [batch, pos] of one shape and that
    /// <paramref name="metrics"/> has one metric for every row or one per row.</summary>
    internal static void CheckPairs(string what, Tensor clean, Tensor corrupted, IReadOnlyList<AttributionMetric> metrics)
    {
        ArgumentNullException.ThrowIfNull(clean);
        ArgumentNullException.ThrowIfNull(corrupted);
        ArgumentNullException.ThrowIfNull(metrics);
        if (clean.dim() != 2 || !clean.shape.SequenceEqual(corrupted.shape))
            throw new SaeSharpException($"{what}: clean tokens [{string.Join(", ", clean.shape)}] and corrupted tokens " +
                                        $"[{string.Join(", ", corrupted.shape)}] must both be [batch, pos] of the same shape");
        if (metrics.Count != 1 && metrics.Count != clean.shape[0])
            throw new SaeSharpException($"{what}: {metrics.Count} metrics for {clean.shape[0]} prompt pairs: give one for every pair or one per pair");
    }

    /// <summary>One activation to patch in <see cref="Patch"/>: <see cref="Count"/> indices per layer, index k the slice
    /// <see cref="Index"/>(k) (selects (dim, at) applied in turn); with <see cref="SkipEqual"/> a slice equal in both runs is not run.</summary>
    private sealed record Part(PatchedActivation Activation, int Count, Func<int, (int Dim, int At)[]> Index, bool SkipEqual = false);

    /// <summary><c>generic_activation_patch</c> for each of <paramref name="parts"/>: one clean run caching every hook they
    /// patch, one corrupted run, then for every part, layer and index the corrupted run with that slice of the activation
    /// copied from the clean run (the <c>*_patch_setter</c>s). Patched[part][layer][index].</summary>
    private static (double Clean, double Corrupted, double[][][] Patched) Patch(HookedTransformer model, Tensor clean, Tensor corrupted,
        IReadOnlyList<Part> parts, IReadOnlyList<AttributionMetric> metrics)
    {
        CheckPairs("activation patching", clean, corrupted, metrics);
        var c = model.Config;
        using var _ = no_grad();
        using var outer = NewDisposeScope();
        var names = parts.Select(p => Enumerable.Range(0, c.NLayers).Select(l => Hook(model, l, p.Activation)).ToList()).ToList();
        var all = names.SelectMany(n => n).Distinct().ToList();
        if (all.FirstOrDefault(n => !model.HookPoints.Contains(n)) is string missing)
            throw new SaeSharpException($"activation patching: {c.ModelName} has no hook '{missing}' to patch");
        using var run = model.RunWithCache(clean, all);
        double cleanMetric = MeanMetric(metrics, run.Logits!, clean);
        // The corrupted run's activations too where a part skips the slices equal in both runs.
        var skipped = Enumerable.Range(0, parts.Count).Where(i => parts[i].SkipEqual).SelectMany(i => names[i]).Distinct().ToList();
        using var corruptedRun = model.RunWithCache(corrupted, skipped);
        double corruptedMetric = MeanMetric(metrics, corruptedRun.Logits!, corrupted);
        static Tensor Slice(Tensor t, (int Dim, int At)[] at)
        {
            foreach (var (d, i) in at) t = t.select(d, i);
            return t;
        }
        var patched = new double[parts.Count][][];
        for (int i = 0; i < parts.Count; i++)
        {
            var part = parts[i];
            patched[i] = new double[c.NLayers][];
            for (int l = 0; l < c.NLayers; l++)
            {
                string name = names[i][l];
                var source = run.Cache[name];
                patched[i][l] = new double[part.Count];
                for (int k = 0; k < part.Count; k++)
                {
                    using var scope = NewDisposeScope();
                    var at = part.Index(k);
                    if (part.SkipEqual && Slice(source, at).eq(Slice(corruptedRun.Cache[name], at)).all().item<bool>())
                    {
                        patched[i][l][k] = corruptedMetric;
                        continue;
                    }
                    var logits = model.RunWithHooks(corrupted, (name, x =>
                    {
                        var y = x.clone();
                        Slice(y, at).copy_(Slice(source, at));
                        return y;
                    }));
                    patched[i][l][k] = MeanMetric(metrics, logits, corrupted);
                }
            }
        }
        return (cleanMetric, corruptedMetric, patched);
    }
}
