using SaeSharp.Models;
using static TorchSharp.torch;

namespace SaeSharp.Interventions;

/// <summary>Which activation <see cref="ActivationPatching.Run"/> patches: TransformerLens's <c>get_act_patch_resid_pre</c>,
/// <c>get_act_patch_attn_out</c>, <c>get_act_patch_mlp_out</c> (per layer × position) and
/// <c>get_act_patch_attn_head_out_all_pos</c>, <c>get_act_patch_attn_head_v_all_pos</c> and
/// <c>get_act_patch_attn_head_pattern_all_pos</c> (<c>hook_z</c>, <c>hook_v</c>, <c>hook_pattern</c> per layer × head, every
/// position; transformer_lens/patching.py).</summary>
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
}

/// <summary>
/// What <see cref="ActivationPatching.Run"/> found: the metric of the clean and the corrupted run and
/// <see cref="Patched"/> [layer, position] (or [layer, head] for the per-head activations): the metric of the
/// corrupted run with that one activation taken from the clean run.
/// </summary>
public sealed record ActivationPatchingResult(PatchedActivation Activation, double Clean, double Corrupted, double[,] Patched)
{
    /// <summary>(patched − corrupted) / (clean − corrupted), as the Exploratory Analysis Demo normalises: 1 where the patch
    /// restores the clean metric, 0 where it changes nothing. NaN everywhere when the two runs' metrics are equal.</summary>
    public double Normalized(int row, int column) => (Patched[row, column] - Corrupted) / (Clean - Corrupted);
}

/// <summary>
/// Activation patching as TransformerLens's <c>patching.py</c> (<c>generic_activation_patch</c>) does it: run the clean
/// tokens with a cache, then for every layer and position (or head) run the corrupted tokens with that activation
/// replaced by the clean run's, and take the metric of the patched logits. Clean and corrupted tokens must have the same
/// shape; the metric is an <see cref="AttributionMetric"/> (a logit difference at the last position, summed over the batch).
/// </summary>
public static class ActivationPatching
{
    /// <summary>Whether <paramref name="activation"/> is patched one head at a time ([layer, head] results) rather than one position at a time.</summary>
    public static bool IsPerHead(PatchedActivation activation) =>
        activation is PatchedActivation.HeadZ or PatchedActivation.HeadV or PatchedActivation.HeadPattern;

    /// <summary>Patches <paramref name="activation"/> from <paramref name="clean"/> into <paramref name="corrupted"/> (both
    /// [batch, pos]) at every layer and position (head), one forward pass each.</summary>
    public static ActivationPatchingResult Run(HookedTransformer model, Tensor clean, Tensor corrupted, PatchedActivation activation,
        AttributionMetric metric)
    {
        ArgumentNullException.ThrowIfNull(model);
        ArgumentNullException.ThrowIfNull(clean);
        ArgumentNullException.ThrowIfNull(corrupted);
        ArgumentNullException.ThrowIfNull(metric);
        if (clean.dim() != 2 || !clean.shape.SequenceEqual(corrupted.shape))
            throw new SaeSharpException($"activation patching: clean tokens [{string.Join(", ", clean.shape)}] and corrupted tokens " +
                                        $"[{string.Join(", ", corrupted.shape)}] must both be [batch, pos] of the same shape");
        var c = model.Config;
        using var _ = no_grad();
        using var outer = NewDisposeScope();
        string Hook(int l)
        {
            var b = model.HookPoints.Blocks[l];
            return activation switch
            {
                PatchedActivation.ResidPre => b.ResidPre,
                PatchedActivation.AttnOut => b.AttnOut,
                PatchedActivation.MlpOut => b.MlpOut,
                PatchedActivation.HeadV => b.V,
                PatchedActivation.HeadPattern => b.Pattern,
                _ => b.Z,
            };
        }
        var names = Enumerable.Range(0, c.NLayers).Select(Hook).ToList();
        if (names.FirstOrDefault(n => !model.HookPoints.Contains(n)) is string missing)
            throw new SaeSharpException($"activation patching: {c.ModelName} has no hook '{missing}' to patch");
        using var run = model.RunWithCache(clean, names);
        double cleanMetric = metric.Evaluate(run.Logits!, clean).to(ScalarType.Float64).item<double>();
        double corruptedMetric;
        using (var logits = model.Forward(corrupted)) corruptedMetric = metric.Evaluate(logits, corrupted).to(ScalarType.Float64).item<double>();
        bool heads = IsPerHead(activation);
        int columns = !heads ? (int)clean.shape[1] : activation == PatchedActivation.HeadV ? c.NKvHeads : c.NHeads;
        // hook_z and hook_v [batch, pos, head, d_head]; hook_pattern [batch, head, query_pos, key_pos]; the rest [batch, pos, d_model].
        int dim = activation == PatchedActivation.HeadPattern ? 1 : heads ? 2 : 1;
        var patched = new double[c.NLayers, columns];
        for (int l = 0; l < c.NLayers; l++)
        {
            var source = run.Cache[names[l]];
            for (int k = 0; k < columns; k++)
            {
                using var scope = NewDisposeScope();
                int at = k;
                var logits = model.RunWithHooks(corrupted, (names[l], x =>
                {
                    var y = x.clone();
                    y.select(dim, at).copy_(source.select(dim, at));
                    return y;
                }));
                patched[l, k] = metric.Evaluate(logits, corrupted).to(ScalarType.Float64).item<double>();
            }
        }
        return new ActivationPatchingResult(activation, cleanMetric, corruptedMetric, patched);
    }
}
