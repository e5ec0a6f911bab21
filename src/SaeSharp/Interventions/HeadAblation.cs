using System.Globalization;
using SaeSharp.Models;
using static TorchSharp.torch;

namespace SaeSharp.Interventions;

/// <summary>What an ablated head's <c>hook_z</c> is replaced with.</summary>
public enum HeadAblationKind
{
    /// <summary>Zeros, as TransformerLens's Main Demo (cell 31, <c>hook_v</c>) and Exploratory Analysis Demo (cell 115, <c>hook_z</c>) do.</summary>
    Zero,
    /// <summary>The head's own mean over the run's batch and positions.</summary>
    Mean,
}

/// <summary>One attention head, <c>L.H</c> on the command line, <c>L{layer}H{head}</c> as TransformerLens labels heads.</summary>
public readonly record struct AttentionHead(int Layer, int Head)
{
    /// <summary>Parses <c>L.H</c> (<c>0.8</c>) or TransformerLens's label <c>L0H8</c>; <paramref name="option"/> names the
    /// option in the error.</summary>
    public static AttentionHead Parse(string spec, string option = "head")
    {
        var s = (spec ?? "").Trim();
        var parts = s.StartsWith('L') && s.Contains('H') ? s[1..].Split('H') : s.Split('.');
        if (parts.Length == 2 && int.TryParse(parts[0], NumberStyles.None, CultureInfo.InvariantCulture, out int l)
            && int.TryParse(parts[1], NumberStyles.None, CultureInfo.InvariantCulture, out int h))
            return new AttentionHead(l, h);
        throw new SaeSharpException($"{option} '{spec}': write LAYER.HEAD (0.8) or L0H8");
    }

    /// <summary><c>L0H8</c>.</summary>
    public override string ToString() => $"L{Layer}H{Head}";
}

/// <summary>
/// Head ablation as TransformerLens's demos write it with <c>run_with_hooks</c>: each head's slice of
/// <c>blocks.L.attn.hook_z</c> [batch, pos, head, d_head] replaced at every position, or at chosen positions only (Exploratory
/// Analysis Demo cell 115 ablates the last one); Main Demo cell 31 zeros <c>hook_v</c>, which gives the same z when zeroed;
/// <c>hook_z</c> is per query head in a grouped-query model too. Mean ablation uses the run's own mean, or the head's mean z
/// over a reference set of tokens (<see cref="MeanZ"/>).
/// </summary>
public static class HeadAblation
{
    /// <summary>One hook per layer that replaces the <c>hook_z</c> slice of each of <paramref name="heads"/>; refuses a head
    /// outside the model, naming <paramref name="option"/> (the command line's <c>--ablate-head</c>). <paramref name="positions"/>
    /// (null: every position; negative ones count from the end, -1 the last token) limits where; a position outside the run
    /// is refused when it runs. <paramref name="reference"/> (<see cref="MeanZ"/>, kind <see cref="HeadAblationKind.Mean"/>):
    /// each head's mean z [d_head] to put in, instead of the run's own mean (not owned).</summary>
    public static (string Name, Func<Tensor, Tensor?> Fn)[] Hooks(HookedTransformer model, IReadOnlyList<AttentionHead> heads, HeadAblationKind kind,
        string option = "head", IReadOnlyList<long>? positions = null, IReadOnlyDictionary<AttentionHead, Tensor>? reference = null)
    {
        ArgumentNullException.ThrowIfNull(model);
        ArgumentNullException.ThrowIfNull(heads);
        CheckHeads(model, heads, option);
        if (reference is not null && kind != HeadAblationKind.Mean) throw new SaeSharpException($"{option}: a reference mean is for mean ablation");
        if (reference is not null && heads.FirstOrDefault(h => !reference.ContainsKey(h)) is var missing && heads.Contains(missing))
            throw new SaeSharpException($"{option} {missing.Layer}.{missing.Head}: no reference mean for this head");
        var zero = TorchScalars.Of(0.0);
        return heads.GroupBy(h => h.Layer).OrderBy(g => g.Key).Select(g =>
        {
            int layer = g.Key;
            var indices = g.Select(h => h.Head).Distinct().ToArray();
            string name = model.HookPoints.Blocks[layer].Z;
            if (!model.HookPoints.Contains(name)) throw new SaeSharpException($"head ablation: {model.Config.ModelName} has no hook '{name}'");
            return (name, (Func<Tensor, Tensor?>)(z =>
            {
                long seq = z.shape[1];
                var at = positions?.Select(p => At(p, seq, option)).Distinct().ToArray();
                var y = z.clone();
                foreach (int h in indices)
                {
                    var slice = y.select(2, h);                                   // [batch, pos, d_head]
                    using var value = kind == HeadAblationKind.Zero ? null
                        : reference is not null ? reference[new AttentionHead(layer, h)].to(z.dtype, z.device)
                        : z.select(2, h).mean([0, 1], keepdim: true);
                    foreach (var target in at is null ? [slice] : at.Select(p => slice.narrow(1, p, 1)))
                    {
                        if (value is null) target.fill_(zero);
                        else target.copy_(value.expand_as(target));
                    }
                }
                return y;
            }));
        }).ToArray();
    }

    /// <summary>Each head's mean <c>hook_z</c> [d_head] over every position of every row of <paramref name="tokens"/> (the
    /// reference set of a mean ablation), run with <paramref name="modelHooks"/> (a processed model's own). The caller owns the tensors.</summary>
    public static Dictionary<AttentionHead, Tensor> MeanZ(HookedTransformer model, IReadOnlyList<AttentionHead> heads, IEnumerable<Tensor> tokens,
        IReadOnlyList<(string Name, Func<Tensor, Tensor?> Fn)>? modelHooks = null, string option = "head")
    {
        ArgumentNullException.ThrowIfNull(model);
        ArgumentNullException.ThrowIfNull(heads);
        ArgumentNullException.ThrowIfNull(tokens);
        CheckHeads(model, heads, option);
        var distinct = heads.Distinct().ToList();
        var names = distinct.Select(h => model.HookPoints.Blocks[h.Layer].Z).Distinct().ToList();
        var sums = new Dictionary<AttentionHead, Tensor>();
        long count = 0;
        using var _ = no_grad();
        try
        {
            foreach (var t in tokens)
            {
                using var scope = NewDisposeScope();
                using var run = model.RunWithCache(t, new RunOptions { CacheNames = names, Hooks = modelHooks });
                foreach (var h in distinct)
                {
                    var sum = run.Cache[model.HookPoints.Blocks[h.Layer].Z].select(2, h.Head).to(ScalarType.Float64).sum([0, 1]);
                    if (sums.TryGetValue(h, out var s)) s.add_(sum, TorchScalars.One);
                    else sums[h] = sum.DetachFromDisposeScope();
                }
                count += t.shape[0] * t.shape[1];
            }
            if (count == 0) throw new SaeSharpException($"{option}: the reference set for the mean has no tokens");
            using var n = tensor((double)count, ScalarType.Float64);
            return sums.ToDictionary(kv => kv.Key, kv => kv.Value.div_(n));
        }
        catch
        {
            foreach (var s in sums.Values) s.Dispose();
            throw;
        }
    }

    /// <summary>Refuses a head of <paramref name="heads"/> outside the model, naming <paramref name="option"/> (the command
    /// line's flag) and the layers or heads the model has.</summary>
    public static void CheckHeads(HookedTransformer model, IReadOnlyList<AttentionHead> heads, string option)
    {
        ArgumentNullException.ThrowIfNull(model);
        ArgumentNullException.ThrowIfNull(heads);
        var c = model.Config;
        foreach (var h in heads)
        {
            if (h.Layer < 0 || h.Layer >= c.NLayers)
                throw new SaeSharpException($"{option} {h.Layer}.{h.Head}: layer {h.Layer} is outside {c.ModelName}'s layers 0..{c.NLayers - 1}");
            if (h.Head < 0 || h.Head >= c.NHeads)
                throw new SaeSharpException($"{option} {h.Layer}.{h.Head}: head {h.Head} is outside {c.ModelName}'s heads 0..{c.NHeads - 1}");
        }
    }

    /// <summary>A position of the run (negative: from its end), refused outside its <paramref name="seq"/> tokens.</summary>
    private static long At(long position, long seq, string option)
    {
        long at = Steering.FromPromptEnd(position, seq, $"{option} position {position}", "the input");
        if (at >= seq) throw new SaeSharpException($"{option} position {position}: the input has {seq} tokens (positions 0..{seq - 1})");
        return at;
    }
}
