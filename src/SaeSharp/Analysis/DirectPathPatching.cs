using SaeSharp.Interventions;
using SaeSharp.Models;
using static TorchSharp.torch;

namespace SaeSharp.Analysis;

/// <summary>What <see cref="DirectPathPatching.Run"/> found: the metric of the clean and the corrupted run (means over the
/// batch), <see cref="Patched"/> [n_layers, destination heads] the metric of the corrupted run with the source head's direct
/// path to each destination patched in (TransformerLens's result; 0 at and before the source's layer, where no forward pass
/// runs), and <see cref="Warning"/>, TransformerLens's warning when ln1 is not folded (null when it is).</summary>
public sealed record DirectPathPatchingResult(double Clean, double Corrupted, double[,] Patched, AttentionHead Source, PathReceiverInput Component, string? Warning)
{
    /// <summary>(patched − corrupted) / (clean − corrupted) of one destination, as activation patching's: 1 where the path
    /// restores all of the clean metric, 0 where it restores nothing; NaN at and before the source's layer (no path).</summary>
    public double Normalized(int layer, int head) =>
        layer <= Source.Layer ? double.NaN : (Patched[layer, head] - Corrupted) / (Clean - Corrupted);
}

/// <summary>
/// Direct path patching as TransformerLens's <c>transformer_lens/tools/analysis/direct_path_patching.py</c>
/// (<c>get_act_patch_direct_path</c>, <c>get_act_patch_direct_path_all_sources</c>; the Exploratory Analysis Demo's cells
/// 88–95): for a source head A in layer s, every destination head B of a later layer gets the corrupted run with
/// (clean − corrupted <c>attn.hook_result</c> of A) / the corrupted run's <c>blocks.L.ln1.hook_scale</c> · W_Q[B] (W_K, W_V
/// with <see cref="PathReceiverInput.K"/>, <see cref="PathReceiverInput.V"/>) added to B's <c>attn.hook_q</c> (hook_k,
/// hook_v) at every position, and the metric of that run is recorded. The linearisation ignores ln1's weight, bias and
/// centring, so it is exact only with fold_ln (and centred writing weights): TransformerLens warns when block 0's ln1 weight
/// is not all ones (within 1e-3), and so does <see cref="DirectPathPatchingResult.Warning"/>. Destinations in layers at or
/// before A's are 0, with no forward pass (TransformerLens's zeros). In a grouped-query model the k and v destinations are
/// the key/value heads (hook_k and hook_v have n_key_value_heads heads; W_K of key/value head g is TransformerLens's
/// <c>_W_K[g]</c>), where TransformerLens would index hook_k past its heads.
/// It lives in Analysis, beside <see cref="AttentionCircuits"/> whose per-head W_Q/K/V it reads; the path patching it
/// complements is <see cref="PathPatching"/>.
/// </summary>
public static class DirectPathPatching
{
    /// <summary>Sweeps the direct path from <paramref name="source"/> to every later head's <paramref name="component"/>,
    /// the corrupted run (<paramref name="corrupted"/>, [batch, pos]) patched towards <paramref name="clean"/>.</summary>
    public static DirectPathPatchingResult Run(HookedTransformer model, Tensor clean, Tensor corrupted, AttentionHead source,
        PathReceiverInput component, IReadOnlyList<AttributionMetric> metrics)
    {
        ArgumentNullException.ThrowIfNull(model);
        ActivationPatching.CheckPairs("direct path patching", clean, corrupted, metrics);
        var c = model.Config;
        if (source.Layer < 0 || source.Layer >= c.NLayers || source.Head < 0 || source.Head >= c.NHeads)
            throw new SaeSharpException($"direct path patching: source {source} is not a head of {c.ModelName} ({c.NLayers} layers of {c.NHeads} heads)");
        using var _ = no_grad();
        using var outer = NewDisposeScope();
        var blocks = model.HookPoints.Blocks;
        int destinations = component == PathReceiverInput.Q ? c.NHeads : c.NKvHeads;
        var patched = new double[c.NLayers, destinations];
        var later = Enumerable.Range(source.Layer + 1, c.NLayers - source.Layer - 1).ToList();
        string result = blocks[source.Layer].Result;
        using var cleanRun = model.RunWithCache(clean, [result]);
        using var corruptedRun = model.RunWithCache(corrupted, [result, .. later.Select(l => blocks[l].Ln1Scale)]);
        double cleanMetric = ActivationPatching.MeanMetric(metrics, cleanRun.Logits!, clean);
        double corruptedMetric = ActivationPatching.MeanMetric(metrics, corruptedRun.Logits!, corrupted);
        string? warning = FoldLnWarning(model);
        if (later.Count == 0) return new DirectPathPatchingResult(cleanMetric, corruptedMetric, patched, source, component, warning);
        // delta_resid = clean_A_result − corrupted_A_result, [batch, pos, d_model] (hook_result is z_A·W_O[A], without b_O).
        var delta = cleanRun.Cache[result].select(2, source.Head).to(ScalarType.Float32) - corruptedRun.Cache[result].select(2, source.Head).to(ScalarType.Float32);
        var weights = AttentionCircuits.Weights(model);
        // [n_layers, heads, d_model, d_head]; W_K and W_V per key/value head: the first query head of its group reads it.
        var w = component switch
        {
            PathReceiverInput.Q => weights.WQ,
            PathReceiverInput.K => weights.WK.index_select(1, KvRepresentatives(c)),
            _ => weights.WV.index_select(1, KvRepresentatives(c)),
        };
        foreach (int l in later)
        {
            using var layerScope = NewDisposeScope();
            var scaled = delta / corruptedRun.Cache[blocks[l].Ln1Scale].to(ScalarType.Float32);   // [batch, pos, d_model] / [batch, pos, 1]
            string hook = component switch { PathReceiverInput.Q => blocks[l].Q, PathReceiverInput.K => blocks[l].K, _ => blocks[l].V };
            for (int h = 0; h < destinations; h++)
            {
                using var scope = NewDisposeScope();
                var add = scaled.matmul(w[l, h]);                                                   // [batch, pos, d_head]
                int head = h;
                var logits = model.RunWithHooks(corrupted, (hook, x =>
                {
                    var y = x.clone();
                    y.select(2, head).add_(add.to(x.dtype), TorchScalars.One);
                    return y;
                }));
                patched[l, h] = ActivationPatching.MeanMetric(metrics, logits, corrupted);
            }
        }
        return new DirectPathPatchingResult(cleanMetric, corruptedMetric, patched, source, component, warning);
    }

    /// <summary>TransformerLens's <c>get_act_patch_direct_path_all_sources</c>: every head as the source in turn,
    /// [source layer, source head, destination layer, destination head] (0 where the destination's layer is not after the source's).</summary>
    public static (double Clean, double Corrupted, double[,,,] Patched, string? Warning) RunAllSources(HookedTransformer model, Tensor clean, Tensor corrupted,
        PathReceiverInput component, IReadOnlyList<AttributionMetric> metrics)
    {
        ArgumentNullException.ThrowIfNull(model);
        var c = model.Config;
        int destinations = component == PathReceiverInput.Q ? c.NHeads : c.NKvHeads;
        var all = new double[c.NLayers, c.NHeads, c.NLayers, destinations];
        DirectPathPatchingResult? any = null;
        for (int sl = 0; sl < c.NLayers; sl++)
            for (int sh = 0; sh < c.NHeads; sh++)
            {
                var r = Run(model, clean, corrupted, new AttentionHead(sl, sh), component, metrics);
                any = r;
                for (int dl = 0; dl < c.NLayers; dl++)
                    for (int dh = 0; dh < destinations; dh++) all[sl, sh, dl, dh] = r.Patched[dl, dh];
            }
        return (any!.Clean, any.Corrupted, all, any.Warning);
    }

    /// <summary>TransformerLens's <c>_check_fold_ln</c>: a warning when block 0's ln1 weight (Gemma's 1 + w) is not all ones
    /// within 1e-3, the case where the linearised delta leaves out ln1's weight; null when it is, or when ln1 has no weight.</summary>
    public static string? FoldLnWarning(HookedTransformer model)
    {
        ArgumentNullException.ThrowIfNull(model);
        var c = model.Config;
        string[] names = c.Architecture switch
        {
            "gpt2" or "gpt_neo" or "gptj" => ["transformer.h.0.ln_1.weight"],
            "gpt_neox" => ["gpt_neox.layers.0.input_layernorm.weight"],
            "opt" => ["model.decoder.layers.0.self_attn_layer_norm.weight"],
            _ => ["model.layers.0.input_layernorm.weight"],
        };
        using var _ = no_grad();
        using var scope = NewDisposeScope();
        var p = model.named_parameters().FirstOrDefault(kv => names.Contains(kv.name)).parameter;
        if (p is null) return null;
        var w = p.to(ScalarType.Float32);
        if (c.Architecture.StartsWith("gemma", StringComparison.Ordinal)) w = w.add(TorchScalars.Of(1.0), TorchScalars.One);
        bool folded = w.sub(TorchScalars.Of(1.0)).abs().max().item<float>() <= 1e-3f;
        return folded ? null
            : $"direct path patching is most accurate when LayerNorm parameters are folded into the weight matrices ({c.ModelName}'s " +
              "blocks.0.ln1 weight is not all ones): fold it first (fold_ln; path-patch --fold-ln); results may be inaccurate with unfolded LayerNorm";
    }

    /// <summary>For each key/value head, the first query head reading it (Hugging Face's repeat_kv groups).</summary>
    private static Tensor KvRepresentatives(TransformerConfig c) =>
        TorchScalars.Arange(c.NKvHeads).mul(TorchScalars.Of((long)(c.NHeads / c.NKvHeads)));
}
