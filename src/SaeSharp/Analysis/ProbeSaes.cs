using SaeSharp.Models;
using SaeSharp.Saes;
using static TorchSharp.torch;

namespace SaeSharp.Analysis;

/// <summary>The SAEs that <c>sae probe</c> evaluates on one pass of the model, grouped by the hook they read: the model
/// runs once over the data capturing every group's hook, each group's activations (harvested or mean-pooled) are kept
/// once and every SAE of the group encodes them.</summary>
internal static class ProbeSaes
{
    /// <summary>The SAEs of one site: <see cref="Hook"/> (resolved on the model), <see cref="Head"/> (SAELens's
    /// <c>hook_head_index</c> of a per-head hook such as <c>attn.hook_z</c>, else null) and the positions of its SAEs in
    /// the call's list, in order.</summary>
    internal sealed record HookGroup(string Hook, int[] Saes, int? Head = null)
    {
        /// <summary>The site as reports and errors name it: "blocks.0.attn.hook_z head 1", or the hook alone.</summary>
        public string Site => SaeMetadata.SiteOf(Hook, Head);

        /// <summary>What the group's SAEs read of the hook's activation <paramref name="x"/>: the head's slice
        /// [batch, pos, d] of a per-head [batch, pos, head, d] hook, else all of it.</summary>
        public Tensor Read(Tensor x) => SaeSharp.Hooks.SaeSplice.HeadSlice(x, Head);
    }

    /// <summary>The sites <paramref name="saes"/> read (hooks resolved on <paramref name="model"/>, and the head of a per-head
    /// hook an SAE's hook_head_index picks), in the order of their first SAE, each with its SAEs; an SAE of another d_in
    /// than the first of its site is an error naming both (<paramref name="names"/>[i], else "#i+1"). SAEs of different
    /// heads of one hook are different sites of the same model run.</summary>
    internal static IReadOnlyList<HookGroup> HookGroups(HookedTransformer model, IReadOnlyList<Sae> saes, IReadOnlyList<string>? names = null)
    {
        ArgumentNullException.ThrowIfNull(model);
        ArgumentNullException.ThrowIfNull(saes);
        if (saes.Count == 0) throw new SaeSharpException("sae probe: no SAE given");
        var groups = new List<(string Hook, int? Head, List<int> Saes)>();
        for (int i = 0; i < saes.Count; i++)
        {
            string at = model.HookPoints.Resolve(saes[i].Cfg.Metadata.HookOr(null));
            int? head = model.HeadsAt(at) is not null ? saes[i].Cfg.Metadata.HookHeadIndex : null;
            if (head is not null)
            {
                try { model.CheckSaeFits(saes[i], at); }
                catch (SaeSharpException e) { throw new SaeSharpException($"--sae {Name(names, i)}: {e.Message}", e); }
            }
            int g = groups.FindIndex(x => x.Hook == at && x.Head == head);
            if (g < 0) { groups.Add((at, head, [i])); continue; }
            int first = groups[g].Saes[0];
            if (saes[i].Cfg.DIn != saes[first].Cfg.DIn)
                throw new SaeSharpException($"--sae {Name(names, i)} has d_in = {saes[i].Cfg.DIn}, but --sae {Name(names, first)} at the same hook {SaeMetadata.SiteOf(at, head)} has d_in = " +
                                            $"{saes[first].Cfg.DIn}: the SAEs of one hook read the same activations");
            groups[g].Saes.Add(i);
        }
        return [.. groups.Select(g => new HookGroup(g.Hook, [.. g.Saes], g.Head))];
    }

    /// <summary>The layer the model can stop after to have every hook of <paramref name="hooks"/> (null: run it whole).</summary>
    internal static int? StopAtLayer(HookedTransformer model, IEnumerable<string> hooks)
    {
        int stop = hooks.Max(h => model.HookPoints.LayerOf(h)) + 1;
        return stop > model.Config.NLayers ? null : stop;
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
