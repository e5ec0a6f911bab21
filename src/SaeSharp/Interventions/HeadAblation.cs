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
/// <c>blocks.L.attn.hook_z</c> [batch, pos, head, d_head] replaced at every position (Main Demo cell 31 zeros
/// <c>hook_v</c>, which gives the same z when zeroed; <c>hook_z</c> is per query head in a grouped-query model too).
/// </summary>
public static class HeadAblation
{
    /// <summary>One hook per layer that replaces the <c>hook_z</c> slice of each of <paramref name="heads"/>; refuses a head
    /// outside the model, naming <paramref name="option"/> (the command line's <c>--ablate-head</c>).</summary>
    public static (string Name, Func<Tensor, Tensor?> Fn)[] Hooks(HookedTransformer model, IReadOnlyList<AttentionHead> heads, HeadAblationKind kind,
        string option = "head")
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
        var zero = TorchScalars.Of(0.0);
        return heads.GroupBy(h => h.Layer).OrderBy(g => g.Key).Select(g =>
        {
            var indices = g.Select(h => h.Head).Distinct().ToArray();
            string name = model.HookPoints.Blocks[g.Key].Z;
            if (!model.HookPoints.Contains(name)) throw new SaeSharpException($"head ablation: {c.ModelName} has no hook '{name}'");
            return (name, (Func<Tensor, Tensor?>)(z =>
            {
                var y = z.clone();
                foreach (int h in indices)
                {
                    var slice = y.select(2, h);                                   // [batch, pos, d_head]
                    if (kind == HeadAblationKind.Zero) slice.fill_(zero);
                    else
                    {
                        using var mean = z.select(2, h).mean([0, 1], keepdim: true);
                        slice.copy_(mean.expand_as(slice));
                    }
                }
                return y;
            }));
        }).ToArray();
    }
}
