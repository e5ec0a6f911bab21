using SaeSharp.Rng;
using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;

namespace SaeSharp.Synthetic;

public sealed partial class SyntheticModel
{
    /// <summary>
    /// Builds a model from a config alone, as SAELens 6.37.6's <c>SyntheticModel(cfg)</c> does, in its order and with its
    /// seed offsets: the hierarchy (<c>generate_hierarchy</c>, Python's <c>random.Random(seed + 3)</c>, reproduced
    /// exactly), the low-rank correlation (randn from a generator seeded seed + 4, rows capped so the diagonal stays ≥
    /// 0.01), the feature dictionary (randn vectors and bias from a generator seeded with the seed, unit rows, the bias
    /// scaled to its norm; then, if configured, SAELens's Adam orthogonalisation), the firing probabilities (with the
    /// hierarchy's compensation factors if configured, clamped at 1) and the magnitudes. TorchSharp's CPU generator gives
    /// torch's draws for the same seed, so the random parts agree with SAELens's for a seeded config, up to float
    /// rounding (the orthogonalisation's many Adam steps can drift by more; tests bound it). A config without a seed
    /// draws from a generator seeded with <paramref name="seed"/> (SAELens would draw from torch's global state).
    /// </summary>
    public static SyntheticModel FromConfig(SyntheticModelConfig config, ulong seed = 0)
    {
        int n = config.NumFeatures, h = config.HiddenDim;
        using var fallback = new Generator(seed);
        var owned = new List<IDisposable>();
        try
        {
            SyntheticHierarchy? hierarchy = null;
            if (config.Hierarchy is { } hc)
            {
                var rng = new PythonRandom(config.Seed is long s ? s + 3 : (long)(seed & 0x7fffffffffffffff));
                hierarchy = new SyntheticHierarchy(GenerateHierarchy(n, hc, rng), n);
                owned.Add(hierarchy);
            }
            Tensor? factor = null, diag = null;
            if (config.Correlation is { } cc)
            {
                (factor, diag) = LowRankCorrelation(n, cc.Rank, cc.CorrelationScale, config.Seed + 4, fallback);
                owned.Add(factor);
                owned.Add(diag);
            }
            var (vectors, bias) = FeatureDictionary(config, fallback);
            owned.Add(vectors);
            owned.Add(bias);
            var probs = config.FiringProbability.Generate(n, config.Seed).DetachFromDisposeScope();
            owned.Add(probs);
            if (hierarchy is not null && config.Hierarchy!.CompensateProbabilities)
            {
                using var scope = NewDisposeScope();
                var corrected = probs.mul(tensor(CorrectionFactors(hierarchy.Roots, probs.data<float>().ToArray()))).clamp_max(TorchScalars.One);
                probs.copy_(corrected);
            }
            return new SyntheticModel(config, vectors, bias, probs, factor, diag, hierarchy, fallback);
        }
        catch
        {
            foreach (var d in owned) d.Dispose();
            throw;
        }
    }

    private sealed class NodeBuilder(int feature)
    {
        public readonly int Feature = feature;
        public List<NodeBuilder> Children = [];
        public bool MutuallyExclusive, Scale;
        public HierarchyNode Build() => new(Feature, Children.Select(c => c.Build()).ToArray(), MutuallyExclusive, Scale, null);
    }

    /// <summary>SAELens's <c>generate_hierarchy</c>: roots on features 0.., then breadth first each parent above
    /// <c>max_depth</c> gets <c>branching_factor</c> children (fixed, or <c>randint(min, max)</c>) on the next free
    /// features; <c>int(eligible · portion)</c> of the parents with ≥ 2 children in the depth range, chosen by
    /// <c>random.sample</c>, get mutually exclusive children.</summary>
    internal static HierarchyNode[] GenerateHierarchy(int numFeatures, SyntheticHierarchyConfig cfg, PythonRandom rng)
    {
        int next = 0;
        var roots = new List<NodeBuilder>();
        var parents = new List<(NodeBuilder Node, int Depth)>();
        for (int r = 0; r < cfg.TotalRootNodes && next < numFeatures; r++)
        {
            var node = new NodeBuilder(next++);
            roots.Add(node);
            parents.Add((node, 0));
        }
        var level = roots.Select(r => (Node: r, Depth: 0)).ToList();
        while (level.Count > 0)
        {
            var nextLevel = new List<(NodeBuilder Node, int Depth)>();
            foreach (var (parent, depth) in level)
            {
                if (depth >= cfg.MaxDepth) continue;
                int branching = cfg.BranchingIsRange ? rng.RandInt(cfg.BranchingMin, cfg.BranchingMax) : cfg.BranchingMin;
                var children = new List<NodeBuilder>();
                for (int b = 0; b < branching && next < numFeatures; b++)
                {
                    var child = new NodeBuilder(next++);
                    if (depth + 1 < cfg.MaxDepth)
                    {
                        nextLevel.Add((child, depth + 1));
                        parents.Add((child, depth + 1));
                    }
                    children.Add(child);
                }
                parent.Children = children;
            }
            level = nextLevel;
        }
        var eligible = parents.Where(p => p.Depth >= cfg.MutuallyExclusiveMinDepth
                                          && (cfg.MutuallyExclusiveMaxDepth is not int max || p.Depth <= max)
                                          && p.Node.Children.Count >= 2).ToArray();
        int numMe = (int)(eligible.Length * cfg.MutuallyExclusivePortion);
        if (numMe > 0)
            foreach (var i in rng.Sample(eligible.Length, numMe)) eligible[i].Node.MutuallyExclusive = true;
        if (cfg.ScaleChildrenByParent)
            foreach (var (p, _) in parents) p.Scale = true;
        return roots.Select(r => r.Build()).ToArray();
    }

    /// <summary>SAELens's <c>Hierarchy.compute_probability_correction_factors</c>: 1 / p(parent) for every child, times
    /// 1 + Σ(other siblings' p) / p(parent) in a mutually exclusive group (Python floats, stored in float32).</summary>
    internal static float[] CorrectionFactors(IReadOnlyList<HierarchyNode> roots, float[] p)
    {
        var cf = Enumerable.Repeat(1f, p.Length).ToArray();
        void Traverse(HierarchyNode node, double parentProb)
        {
            double nodeProb;
            if (node.FeatureIndex is int f)
            {
                if (parentProb > 0) cf[f] = (float)(1.0 / parentProb);
                nodeProb = p[f];
            }
            else nodeProb = parentProb;
            foreach (var c in node.Children) Traverse(c, nodeProb);
            if (node.MutuallyExclusiveChildren && node.Children.Count >= 2)
            {
                var kids = node.Children.Where(c => c.FeatureIndex is not null).Select(c => (Index: c.FeatureIndex!.Value, P: (double)p[c.FeatureIndex!.Value])).ToArray();
                if (kids.Length >= 2 && nodeProb > 0)
                {
                    double total = 0;
                    foreach (var k in kids) total += k.P;
                    foreach (var k in kids) cf[k.Index] *= (float)(1.0 + Math.Max(0.0, total - k.P) / nodeProb);
                }
            }
        }
        foreach (var r in roots) Traverse(r, 1.0);
        return cf;
    }

    /// <summary>SAELens's <c>generate_random_low_rank_correlation_matrix</c>.</summary>
    private static (Tensor Factor, Tensor Diag) LowRankCorrelation(int n, int rank, double scale, long? seed, Generator fallback)
    {
        using var scope = NewDisposeScope();
        using var g = seed is long s ? new Generator((ulong)s) : null;
        using var scaleScalar = scale.ToScalar();
        var two = TorchScalars.Of(2);
        var factor = randn(n, rank, ScalarType.Float32, generator: g ?? fallback).mul(scaleScalar);
        var sq = factor.pow(two).sum(1);
        var mask = sq.neg().add(TorchScalars.One, TorchScalars.One).lt(TorchScalars.Of(0.01));
        if (mask.any().item<bool>())
        {
            var rescale = sq.index(mask).reciprocal().mul(TorchScalars.Of(0.99)).sqrt().unsqueeze(1);
            factor.index_put_(factor.index(mask).mul(rescale), mask);
            sq = factor.pow(two).sum(1);
        }
        var diag = sq.neg().add(TorchScalars.One, TorchScalars.One);
        return (factor.MoveToOuterDisposeScope(), diag.MoveToOuterDisposeScope());
    }

    /// <summary>SAELens's <c>FeatureDictionary</c>: unit randn rows, a randn bias scaled to its norm (from the same
    /// generator, seeded with the config's seed), then the orthogonalisation if configured.</summary>
    private static (Tensor Vectors, Tensor Bias) FeatureDictionary(SyntheticModelConfig config, Generator fallback)
    {
        using var scope = NewDisposeScope();
        using var g = config.Seed is long s ? new Generator((ulong)s) : null;
        var e = randn(config.NumFeatures, config.HiddenDim, ScalarType.Float32, generator: g ?? fallback);
        e = e.div(e.norm(1, true, 2).clamp_min(TorchScalars.Of(1e-8)));
        Tensor bias;
        if (config.BiasNorm != 0)
        {
            var b = randn(config.HiddenDim, ScalarType.Float32, generator: g ?? fallback);
            using var norm = config.BiasNorm.ToScalar();
            bias = b.div(b.norm().clamp_min(TorchScalars.Of(1e-8))).mul(norm);
        }
        else bias = zeros(config.HiddenDim);
        if (config.Orthogonalization is { } o) e = Orthogonalize(e, o.NumSteps, o.Lr, o.ChunkSize);
        return (e.MoveToOuterDisposeScope(), bias.MoveToOuterDisposeScope());
    }

    /// <summary>SAELens's <c>orthogonalize_embeddings</c>: Adam (lr, betas 0.9/0.999) on Σ_{i≠j} (eᵢ·eⱼ)² + n·Σᵢ (eᵢ·eᵢ − 1)²,
    /// accumulated over row chunks, from unit rows; unit rows at the end.</summary>
    internal static Tensor Orthogonalize(Tensor embeddings, int numSteps, double lr, int chunkSize)
    {
        using var scope = NewDisposeScope();
        long n = embeddings.shape[0];
        var start = embeddings.detach().clone();
        start = start.div(start.norm(1, true, 2).clamp_min(TorchScalars.Of(1e-8)));
        using var p = new Parameter(start, requires_grad: true);
        using var adam = new Kernels.AdamOptimizer([("embeddings", p)]) { Fused = false }; // torch.optim.Adam's defaults, op for op
        for (int step = 0; step < numSteps; step++)
        {
            p.grad?.fill_(TorchScalars.Of(0));
            for (long i = 0; i < n; i += chunkSize)
            {
                using var inner = NewDisposeScope();
                long len = Math.Min(chunkSize, n - i);
                var chunk = p.narrow(0, i, len);
                var dots = chunk.matmul(p.t());
                var rows = tensor(Enumerable.Range(0, (int)len).Select(r => (long)r).ToArray());
                var cols = tensor(Enumerable.Range(0, (int)len).Select(r => r + i).ToArray());
                var offDiag = ones_like(dots, ScalarType.Bool);
                offDiag.index_put_(zeros(len, ScalarType.Bool), rows, cols);
                var two = TorchScalars.Of(2);
                var offLoss = dots.masked_select(offDiag).pow(two).sum();
                var diagLoss = dots.index(rows, cols).add(TorchScalars.Of(-1), TorchScalars.One).pow(two).sum();
                offLoss.add(diagLoss, TorchScalars.Of(n)).backward();
            }
            adam.Step(lr);
        }
        using (no_grad())
        {
            var result = p.div(p.norm(1, true, 2).clamp_min(TorchScalars.Of(1e-8))).detach().clone();
            return result.MoveToOuterDisposeScope();
        }
    }
}
