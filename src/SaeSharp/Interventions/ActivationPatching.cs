using SaeSharp.Models;
using static TorchSharp.torch;

namespace SaeSharp.Interventions;

/// <summary>Which activation <see cref="ActivationPatching"/> patches: TransformerLens's <c>get_act_patch_resid_pre</c>,
/// <c>get_act_patch_attn_out</c>, <c>get_act_patch_mlp_out</c> (per layer × position) and
/// <c>get_act_patch_attn_head_out_all_pos</c>, <c>get_act_patch_attn_head_v_all_pos</c> and
/// <c>get_act_patch_attn_head_pattern_all_pos</c>, <c>get_act_patch_attn_head_q_all_pos</c>, <c>get_act_patch_attn_head_k_all_pos</c>
/// (<c>hook_z</c>, <c>hook_v</c>, <c>hook_pattern</c>, <c>hook_q</c>, <c>hook_k</c> per layer × head, every position), and with
/// <see cref="ActivationPatching.RunByPosition"/> the heads' <c>get_act_patch_attn_head_*_by_pos</c> (transformer_lens/patching.py).</summary>
public enum PatchedActivation
{
    /// <summary><c>blocks.L.hook_resid_pre</c>, one position at a time.</summary>
    ResidPre,
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
        IReadOnlyList<AttributionMetric> metrics)
    {
        ArgumentNullException.ThrowIfNull(model);
        bool heads = IsPerHead(activation);
        int columns = heads ? HeadCount(model.Config, activation) : (int)clean.shape[^1];
        // hook_z, hook_q, hook_k and hook_v [batch, pos, head, d_head]; hook_pattern [batch, head, query_pos, key_pos]; the rest [batch, pos, d_model].
        int dim = heads && activation != PatchedActivation.HeadPattern ? 2 : 1;
        var (cleanMetric, corruptedMetric, flat) = Patch(model, clean, corrupted, activation, metrics, columns, k => [(dim, k)]);
        var patched = new double[model.Config.NLayers, columns];
        for (int l = 0; l < patched.GetLength(0); l++)
            for (int k = 0; k < columns; k++) patched[l, k] = flat[l][k];
        return new ActivationPatchingResult(activation, cleanMetric, corruptedMetric, patched);
    }

    /// <summary>
    /// TransformerLens's <c>get_act_patch_attn_head_out_by_pos</c>, <c>_q_by_pos</c>, <c>_k_by_pos</c>, <c>_v_by_pos</c>
    /// (<c>layer_pos_head_vector_patch_setter</c>: <c>act[:, pos, head] = clean[:, pos, head]</c>) and
    /// <c>_pattern_by_pos</c> (<c>layer_head_pos_pattern_patch_setter</c>: <c>pattern[:, head, dest_pos, :] = clean[:, head, dest_pos, :]</c>):
    /// one forward pass per layer × position × head. <paramref name="activation"/> is one of the per-head activations.
    /// </summary>
    public static ActivationPatchingByPositionResult RunByPosition(HookedTransformer model, Tensor clean, Tensor corrupted,
        PatchedActivation activation, IReadOnlyList<AttributionMetric> metrics)
    {
        ArgumentNullException.ThrowIfNull(model);
        ArgumentNullException.ThrowIfNull(clean);
        if (!IsPerHead(activation))
            throw new SaeSharpException($"activation patching by position and head: {activation} is not a head's activation (use z, q, k, v or pattern)");
        int positions = (int)clean.shape[^1], heads = HeadCount(model.Config, activation);
        bool pattern = activation == PatchedActivation.HeadPattern;
        var (cleanMetric, corruptedMetric, flat) = Patch(model, clean, corrupted, activation, metrics, positions * heads, k =>
            pattern ? [(1, k % heads), (1, k / heads)] : [(1, k / heads), (1, k % heads)]);
        var patched = new double[model.Config.NLayers, positions, heads];
        for (int l = 0; l < patched.GetLength(0); l++)
            for (int k = 0; k < positions * heads; k++) patched[l, k / heads, k % heads] = flat[l][k];
        return new ActivationPatchingByPositionResult(activation, cleanMetric, corruptedMetric, patched);
    }

    /// <summary>The hook <paramref name="activation"/> names at layer <paramref name="layer"/>.</summary>
    private static string Hook(HookedTransformer model, int layer, PatchedActivation activation)
    {
        var b = model.HookPoints.Blocks[layer];
        return activation switch
        {
            PatchedActivation.ResidPre => b.ResidPre,
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

    /// <summary><c>generic_activation_patch</c>: for every layer and each of <paramref name="count"/> indices, the corrupted run
    /// with the activation's slice <paramref name="index"/> (selects (dim, at) applied in turn) copied from the clean run.</summary>
    private static (double Clean, double Corrupted, double[][] Patched) Patch(HookedTransformer model, Tensor clean, Tensor corrupted,
        PatchedActivation activation, IReadOnlyList<AttributionMetric> metrics, int count, Func<int, (int Dim, int At)[]> index)
    {
        CheckPairs("activation patching", clean, corrupted, metrics);
        var c = model.Config;
        using var _ = no_grad();
        using var outer = NewDisposeScope();
        var names = Enumerable.Range(0, c.NLayers).Select(l => Hook(model, l, activation)).ToList();
        if (names.FirstOrDefault(n => !model.HookPoints.Contains(n)) is string missing)
            throw new SaeSharpException($"activation patching: {c.ModelName} has no hook '{missing}' to patch");
        using var run = model.RunWithCache(clean, names);
        double cleanMetric = MeanMetric(metrics, run.Logits!, clean);
        double corruptedMetric;
        using (var logits = model.Forward(corrupted)) corruptedMetric = MeanMetric(metrics, logits, corrupted);
        static Tensor Slice(Tensor t, (int Dim, int At)[] at)
        {
            foreach (var (d, i) in at) t = t.select(d, i);
            return t;
        }
        var patched = new double[c.NLayers][];
        for (int l = 0; l < c.NLayers; l++)
        {
            var source = run.Cache[names[l]];
            patched[l] = new double[count];
            for (int k = 0; k < count; k++)
            {
                using var scope = NewDisposeScope();
                var at = index(k);
                var logits = model.RunWithHooks(corrupted, (names[l], x =>
                {
                    var y = x.clone();
                    Slice(y, at).copy_(Slice(source, at));
                    return y;
                }));
                patched[l][k] = MeanMetric(metrics, logits, corrupted);
            }
        }
        return (cleanMetric, corruptedMetric, patched);
    }
}
