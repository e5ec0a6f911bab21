using SaeSharp.Models;
using SaeSharp.Saes;

namespace SaeSharp.Analysis;

/// <summary>The SAEs that <c>sae probe</c> evaluates on one pass of the model: every one reads the same hook with the
/// same d_in, so the model's activations (harvested or mean-pooled) are computed once and each SAE encodes them.</summary>
internal static class ProbeSaes
{
    /// <summary>The hook all of <paramref name="saes"/> read (resolved on <paramref name="model"/>); an SAE at another hook
    /// or of another d_in than the first is an error naming it (<paramref name="names"/>[i], else "SAE i+1").</summary>
    internal static string SharedHook(HookedTransformer model, IReadOnlyList<Sae> saes, IReadOnlyList<string>? names = null)
    {
        ArgumentNullException.ThrowIfNull(model);
        ArgumentNullException.ThrowIfNull(saes);
        if (saes.Count == 0) throw new SaeSharpException("sae probe: no SAE given");
        string hook = model.HookPoints.Resolve(saes[0].Cfg.Metadata.HookOr(null));
        for (int i = 1; i < saes.Count; i++)
        {
            string at = model.HookPoints.Resolve(saes[i].Cfg.Metadata.HookOr(null));
            if (at != hook)
                throw new SaeSharpException($"--sae {Name(names, i)} reads {at}, but --sae {Name(names, 0)} reads {hook}: the SAEs of one sae probe call share " +
                                            "one pass of the model at one hook; probe the SAEs of another hook in another call");
            if (saes[i].Cfg.DIn != saes[0].Cfg.DIn)
                throw new SaeSharpException($"--sae {Name(names, i)} has d_in = {saes[i].Cfg.DIn}, but --sae {Name(names, 0)} at the same hook {hook} has d_in = " +
                                            $"{saes[0].Cfg.DIn}: the SAEs of one call read the same activations");
        }
        return hook;
    }

    /// <summary>The context size the SAEs read windows of: <paramref name="given"/>, else their cfg context_size (SAEs that
    /// record different ones are an error naming them), else 128.</summary>
    internal static int SharedContextSize(int? given, IReadOnlyList<Sae> saes, IReadOnlyList<string>? names = null)
    {
        if (given is int c) return c;
        var sizes = saes.Select(s => s.Cfg.Metadata.ContextSize).ToList();
        if (sizes.Distinct().Count() > 1)
            throw new SaeSharpException("the SAEs record different context sizes (" + string.Join(", ", sizes.Select((s, i) => $"--sae {Name(names, i)}: {s?.ToString(System.Globalization.CultureInfo.InvariantCulture) ?? "none"}")) +
                                        "): they share one pass over the same windows; give --context-size");
        return sizes.Count > 0 ? sizes[0] ?? 128 : 128;
    }

    private static string Name(IReadOnlyList<string>? names, int i) => names is not null && i < names.Count ? names[i] : $"#{i + 1}";
}
