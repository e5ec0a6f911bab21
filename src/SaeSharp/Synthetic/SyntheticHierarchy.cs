using System.Text.Json;
using TorchSharp;
using static TorchSharp.torch;

namespace SaeSharp.Synthetic;

/// <summary>A node of a SAELens feature hierarchy (<c>HierarchyNode</c>): a feature (or an organisational node without
/// one) whose children only fire while it fires.</summary>
/// <param name="FeatureIndex">The feature, or null for an organisational node.</param>
/// <param name="Children">The child nodes.</param>
/// <param name="MutuallyExclusiveChildren">At most one child fires in a row (a random one of those that would).</param>
/// <param name="ScaleChildrenByParent">Children are scaled by parent activation / parent mean magnitude instead of gated.</param>
/// <param name="FeatureId">SAELens's optional identifier.</param>
public sealed record HierarchyNode(int? FeatureIndex, IReadOnlyList<HierarchyNode> Children, bool MutuallyExclusiveChildren,
    bool ScaleChildrenByParent, string? FeatureId);

/// <summary>
/// SAELens 6.37.6's hierarchy modifier (<c>sae_lens/synthetic/hierarchy/modifier.py</c>, dense path), read from the
/// <c>hierarchy.json</c> that <c>SyntheticModel.save()</c> writes (<c>{"roots": [node, ...]}</c>, each node
/// <c>feature_index</c>, <c>mutually_exclusive_children</c>, <c>scale_children_by_parent</c>, <c>feature_id</c>,
/// <c>children</c>). Nodes are visited breadth first; level by level, a child is zeroed where its (nearest featured)
/// parent is ≤ 0 (or, under a parent with <c>scale_children_by_parent</c>, multiplied by parent / mean magnitude of the
/// parent), and then, for each mutually exclusive group whose parent is on that level and fires (or has no feature),
/// one uniformly random winner among the firing children is kept and the others are zeroed, so that their own children
/// are zeroed at the next level.
/// </summary>
public sealed class SyntheticHierarchy : IDisposable
{
    /// <summary>File name SAELens writes the hierarchy to.</summary>
    public const string FileName = "hierarchy.json";

    private sealed record Level(Tensor Features, Tensor Parents, Tensor? Rescale, Tensor MeGroups);

    private readonly List<Level> _levels = [];
    private readonly Tensor _meSiblings;   // [groups, max siblings] int64, padded with -1
    private readonly Tensor _meSizes;      // [groups] int64
    private readonly Tensor _meParents;    // [groups] int64, -1 for none

    /// <summary>The root nodes.</summary>
    public IReadOnlyList<HierarchyNode> Roots { get; }
    /// <summary>(parent, child) feature pairs: the child only fires while the parent fires.</summary>
    public IReadOnlyList<(int Parent, int Child)> Edges { get; }
    /// <summary>Groups of sibling features of which at most one fires in a row (while their parent fires).</summary>
    public IReadOnlyList<int[]> MutuallyExclusiveGroups { get; }
    /// <summary>Parents whose children are scaled by their activation / mean magnitude.</summary>
    public IReadOnlyList<int> RescalingParents { get; }

    /// <summary>Builds the modifier for <paramref name="roots"/> over <paramref name="numFeatures"/> features; feature
    /// indices must be in range and each appear once.</summary>
    public SyntheticHierarchy(IReadOnlyList<HierarchyNode> roots, int numFeatures)
    {
        Roots = roots;
        var seen = new HashSet<int>();
        var info = new List<(int Feature, int Parent, int Level, bool Rescale)>();
        var meGroups = new List<(int Level, int Parent, int[] Children)>();
        var queue = new Queue<(HierarchyNode Node, int Parent, int Level, bool Rescale)>();
        foreach (var r in roots) queue.Enqueue((r, -1, 0, false));
        while (queue.Count > 0)
        {
            var (node, parent, level, rescale) = queue.Dequeue();
            int effective = parent;
            if (node.FeatureIndex is int f)
            {
                if (f < 0 || f >= numFeatures) throw new SaeSharpException($"feature_index {f} is out of range 0..{numFeatures - 1}");
                if (!seen.Add(f)) throw new SaeSharpException($"feature_index {f} appears more than once (each feature belongs to at most one node)");
                info.Add((f, parent, level, rescale));
                effective = f;
            }
            if (node.MutuallyExclusiveChildren)
            {
                if (node.Children.Count < 2) throw new SaeSharpException($"node {Describe(node)}: mutually_exclusive_children needs at least 2 children");
                var kids = node.Children.Where(c => c.FeatureIndex is not null).Select(c => c.FeatureIndex!.Value).ToArray();
                if (kids.Length >= 2) meGroups.Add((level, node.FeatureIndex ?? -1, kids));
            }
            foreach (var c in node.Children) queue.Enqueue((c, effective, level + 1, node.ScaleChildrenByParent));
        }

        int maxLevel = Math.Max(info.Count == 0 ? -1 : info.Max(i => i.Level), meGroups.Count == 0 ? -1 : meGroups.Max(g => g.Level));
        bool anyRescale = info.Any(i => i.Rescale);
        for (int level = 0; level <= maxLevel; level++)
        {
            var with = info.Where(i => i.Level == level && i.Parent >= 0).ToArray();
            var groups = Enumerable.Range(0, meGroups.Count).Where(g => meGroups[g].Level == level).Select(g => (long)g).ToArray();
            _levels.Add(new Level(
                tensor(with.Select(i => (long)i.Feature).ToArray()).DetachFromDisposeScope(),
                tensor(with.Select(i => (long)i.Parent).ToArray()).DetachFromDisposeScope(),
                anyRescale && with.Any(i => i.Rescale) ? tensor(with.Select(i => i.Rescale).ToArray()).DetachFromDisposeScope() : null,
                tensor(groups).DetachFromDisposeScope()));
        }
        int maxSiblings = meGroups.Count == 0 ? 0 : meGroups.Max(g => g.Children.Length);
        var sib = Enumerable.Repeat(-1L, meGroups.Count * maxSiblings).ToArray();
        for (int g = 0; g < meGroups.Count; g++)
            for (int s = 0; s < meGroups[g].Children.Length; s++) sib[g * maxSiblings + s] = meGroups[g].Children[s];
        _meSiblings = tensor(sib, [meGroups.Count, maxSiblings]).DetachFromDisposeScope();
        _meSizes = tensor(meGroups.Select(g => (long)g.Children.Length).ToArray()).DetachFromDisposeScope();
        _meParents = tensor(meGroups.Select(g => (long)g.Parent).ToArray()).DetachFromDisposeScope();

        Edges = info.Where(i => i.Parent >= 0).Select(i => (i.Parent, i.Feature)).ToArray();
        MutuallyExclusiveGroups = meGroups.Select(g => g.Children).ToArray();
        RescalingParents = info.Where(i => i.Rescale && i.Parent >= 0).Select(i => i.Parent).Distinct().Order().ToArray();
    }

    private static string Describe(HierarchyNode n) =>
        n.FeatureIndex is int f ? $"feature_index={f}" : n.FeatureId is { } id ? $"id={id}" : "unnamed node";

    /// <summary>Reads <paramref name="path"/> (SAELens's <c>hierarchy.json</c>); errors name the file and the node.</summary>
    public static SyntheticHierarchy Load(string path, int numFeatures)
    {
        JsonDocument doc;
        try { doc = JsonDocument.Parse(File.ReadAllText(path)); }
        catch (JsonException e) { throw new SaeSharpException($"{path}: not valid JSON ({e.Message})"); }
        using (doc)
        {
            try
            {
                if (doc.RootElement.ValueKind != JsonValueKind.Object || !doc.RootElement.TryGetProperty("roots", out var roots) || roots.ValueKind != JsonValueKind.Array)
                    throw new SaeSharpException("roots: missing or not an array");
                var list = roots.EnumerateArray().Select((r, i) => ParseNode(r, $"roots[{i}]", 0)).ToArray();
                return new SyntheticHierarchy(list, numFeatures);
            }
            catch (SaeSharpException e) { throw new SaeSharpException($"{path}: {e.Message}"); }
        }
    }

    /// <summary>The hierarchy as SAELens's <c>Hierarchy.to_dict()</c> serialises it and <c>SyntheticModel.save()</c> writes
    /// it to <c>hierarchy.json</c> (<c>json.dump(..., indent=2)</c>, byte for byte): <c>{"roots": [node, ...]}</c>, each
    /// node <c>feature_index</c>, <c>mutually_exclusive_children</c>, <c>scale_children_by_parent</c>, <c>feature_id</c>,
    /// <c>children</c>.</summary>
    public string ToSaeLensJson()
    {
        static PythonJson.Object Node(HierarchyNode n) => new()
        {
            { "feature_index", n.FeatureIndex },
            { "mutually_exclusive_children", n.MutuallyExclusiveChildren },
            { "scale_children_by_parent", n.ScaleChildrenByParent },
            { "feature_id", n.FeatureId },
            { "children", n.Children.Select(Node).ToList() },
        };
        return PythonJson.Dump(new PythonJson.Object { { "roots", Roots.Select(Node).ToList() } });
    }

    private static HierarchyNode ParseNode(JsonElement e, string where, int depth)
    {
        if (depth > 1000) throw new SaeSharpException($"{where}: hierarchy deeper than 1000 levels");
        if (e.ValueKind != JsonValueKind.Object) throw new SaeSharpException($"{where}: expected an object");
        int? index = SynthJson.Has(e, "feature_index", out var fi) ? (fi.TryGetInt32(out var v) ? v : throw new SaeSharpException($"{where}.feature_index: expected an integer or null, got {fi}")) : null;
        var children = new List<HierarchyNode>();
        if (SynthJson.Has(e, "children", out var ch))
        {
            if (ch.ValueKind != JsonValueKind.Array) throw new SaeSharpException($"{where}.children: expected an array");
            int k = 0;
            foreach (var c in ch.EnumerateArray()) children.Add(ParseNode(c, $"{where}.children[{k++}]", depth + 1));
        }
        string? id = SynthJson.Has(e, "feature_id", out var fid) ? fid.ToString() : SynthJson.Has(e, "id", out var id2) ? id2.ToString() : null;
        return new HierarchyNode(index, children, SynthJson.Bool(e, "mutually_exclusive_children", where, false),
            SynthJson.Bool(e, "scale_children_by_parent", where, false), id);
    }

    /// <summary>Applies the hierarchy to feature activations <paramref name="acts"/> [rows, n_features] in place (float32,
    /// contiguous). <paramref name="meanMagnitudes"/> scales children of rescaling parents; <paramref name="generator"/>
    /// draws the mutual-exclusion winners.</summary>
    public void Apply(Tensor acts, Tensor meanMagnitudes, Generator? generator)
    {
        using var scope = NewDisposeScope();
        long rows = acts.shape[0];
        foreach (var level in _levels)
        {
            if (level.Features.numel() > 0)
            {
                var parentVals = acts.index_select(1, level.Parents);
                var childVals = acts.index_select(1, level.Features);
                var parentActive = parentVals.gt(TorchScalars.Of(0));
                Tensor factor;
                if (level.Rescale is not null)
                {
                    var scale = where(parentActive, parentVals / meanMagnitudes.index_select(0, level.Parents), zeros_like(parentVals));
                    factor = where(level.Rescale, scale, parentActive.to(ScalarType.Float32));
                }
                else factor = parentActive.to(ScalarType.Float32);
                acts.index_copy_(1, level.Features, childVals * factor);
            }
            if (level.MeGroups.numel() > 0) ApplyMutualExclusion(acts, level.MeGroups, rows, generator);
        }
    }

    private void ApplyMutualExclusion(Tensor acts, Tensor groups, long rows, Generator? generator)
    {
        var parents = _meParents.index_select(0, groups);
        var siblings = _meSiblings.index_select(0, groups);          // [G, S]
        var sizes = _meSizes.index_select(0, groups);
        long g = groups.shape[0], s = siblings.shape[1];
        var hasParent = parents.ge(TorchScalars.Of(0));
        var parentActive = acts.index_select(1, parents.clamp_min(TorchScalars.Of(0))).gt(TorchScalars.Of(0)).logical_or(hasParent.logical_not()); // [B, G]
        var valid = TorchScalars.Arange(TorchScalars.Of(s)).unsqueeze(0).lt(sizes.unsqueeze(1));                                                 // [G, S]
        var active = acts.index_select(1, siblings.clamp_min(TorchScalars.Of(0)).view(-1)).view(rows, g, s).gt(TorchScalars.Of(0))
            .logical_and(valid).logical_and(parentActive.unsqueeze(2));                                            // [B, G, S]
        var conflict = active.sum(2).gt(TorchScalars.One);
        var idx = conflict.nonzero();
        if (idx.shape[0] == 0) return;
        var b = idx.select(1, 0);
        var grp = idx.select(1, 1);
        var conflictActive = active.index(new TensorIndex[] { TensorIndex.Tensor(b), TensorIndex.Tensor(grp) });  // [K, S]
        var scores = rand(idx.shape[0], s, generator: generator).masked_fill(conflictActive.logical_not(), TorchScalars.Of(-1e9));
        var winner = scores.argmax(1);
        var isWinner = zeros(idx.shape[0], s, ScalarType.Bool).scatter_(1, winner.unsqueeze(1), ones(idx.shape[0], 1, ScalarType.Bool));
        var lose = conflictActive.logical_and(isWinner.logical_not()).nonzero();
        if (lose.shape[0] == 0) return;
        var ci = lose.select(1, 0);
        var si = lose.select(1, 1);
        var feature = siblings.index(new TensorIndex[] { TensorIndex.Tensor(grp.index_select(0, ci)), TensorIndex.Tensor(si) });
        acts.index_put_(TorchScalars.Of(0), TensorIndex.Tensor(b.index_select(0, ci)), TensorIndex.Tensor(feature));
    }

    /// <summary>Disposes the index tensors.</summary>
    public void Dispose()
    {
        foreach (var l in _levels)
        {
            l.Features.Dispose();
            l.Parents.Dispose();
            l.Rescale?.Dispose();
            l.MeGroups.Dispose();
        }
        _meSiblings.Dispose();
        _meSizes.Dispose();
        _meParents.Dispose();
    }
}
