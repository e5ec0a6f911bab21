using System.Text.Json;
using System.Text.Json.Nodes;
using SaeSharp.Interop;
using SaeSharp.Interventions;
using SaeSharp.Models;
using SaeSharp.Saes;
using SaeSharp.Tests.Models;
using SaeSharp.Tests.Saes;
using TorchSharp;
using static TorchSharp.torch;
using static SaeSharp.Tests.Interventions.CrossLayerAttributionTests;

namespace SaeSharp.Tests.Interventions;

/// <summary>
/// Attribution graphs of a whole CLT against the frozen replacement run that <see cref="CrossLayerAttributionTests"/> writes
/// with hooks (features, error nodes and embeddings given as fixed tensors, patterns and norm scales the clean ones), and
/// circuit-tracer's pruning on a matrix worked by hand.
/// </summary>
public class AttributionGraphTests : CltTestBase
{
    /// <summary>Every target's value in the frozen replacement run with the nodes given: a feature's x·W_enc row (its
    /// pre-activation without b_enc, from the reference weights as the float32 files hold them), a logit minus the mean logit
    /// at the last position.</summary>
    private static double[] Targets(AttributionGraph g, HookedTransformer model, CrossLayerTranscoder clt, CltReference r, string dir,
        Tensor[] f, Tensor[] eps, Dictionary<string, Tensor> clean, Tensor? embed)
    {
        using var scope = NewDisposeScope();
        using var _ = no_grad();
        var x = new Tensor?[Layers];
        var logits = ReplacementLogits(model, clt, dir, f, eps, clean, frozen: true, x, embed, Prompt);
        var values = new double[g.NNodes];
        for (int i = 0; i < g.NFeatures; i++)
        {
            var node = g.ActiveFeatures[g.SelectedFeatures[i]];
            var row = x[node.Layer]![0, node.Position].data<double>().ToArray();
            values[i] = Enumerable.Range(0, DModel).Sum(e => row[e] * (float)r.WEnc[node.Layer][node.Feature][e]);   // the files hold float32
        }
        var last = logits[0, -1];
        double mean = last.mean().item<double>();
        for (int k = 0; k < g.LogitTokens.Count; k++) values[g.LogitNode(k)] = last[g.LogitTokens[k]].item<double>() - mean;
        return values;
    }

    private static Tensor CleanEmbed(HookedTransformer model)
    {
        var (_, cache) = model.RunWithCache(Prompt, ["hook_embed"]);
        var e = cache["hook_embed"].clone();
        cache.Dispose();
        return e;
    }

    [Fact]
    public void Each_target_row_adds_up_to_its_value_minus_the_run_with_every_node_removed()
    {
        // The frozen replacement model is affine in the nodes: a target with every feature, error node and token embedding
        // at its value minus the same target with all of them zero (what remains: biases, b_dec, position embeddings) is
        // exactly the sum of its row. Batches of 3 rows: several backward passes on one retained graph.
        string dir = ModelDir(seed: 3);
        using var model = ModelLoader.FromPretrained(dir, ScalarType.Float64);
        var (clt, r) = MakeClt(seed: 4);
        using var _c = clt;
        using var g = AttributionGraph.Build(model, clt, Prompt, new AttributionGraphOptions { MaxLogits = 4, LogitProbability = 1, BatchSize = 3 });
        var (f, eps, clean) = Clean(model, clt, Prompt);

        // Nodes: every active feature of the clean run, in (layer, position, feature) order, with its activation.
        var expected = new List<GraphFeature>();
        for (int l = 0; l < Layers; l++)
            for (int p = 0; p < 6; p++)
                for (int k = 0; k < Features; k++)
                    if (f[l][0, p, k].item<double>() is var a && a != 0) expected.Add(new GraphFeature(l, p, k, a));
        Assert.Equal(expected, g.ActiveFeatures);
        Assert.True(expected.Count >= 10, $"only {expected.Count} active features");
        Assert.Equal(expected.Count, g.NFeatures);
        Assert.Equal(g.NFeatures + Layers * 6 + 6 + 4, (int)g.AdjacencyMatrix.shape[0]);
        // Logits: the 4 most probable tokens, their softmax probabilities.
        var probs = softmax(model.Forward(Prompt)[0, -1], 0);
        var (topP, topI) = topk(probs, 4);
        Assert.Equal(topI.data<long>().ToArray(), g.LogitTokens);
        for (int k = 0; k < 4; k++) Assert.Equal(topP[k].item<double>(), g.LogitProbabilities[k], 12);

        var actual = Targets(g, model, clt, r, dir, f, eps, clean, null);
        var none = Targets(g, model, clt, r, dir, f.Select(t => zeros_like(t)).ToArray(), eps.Select(t => zeros_like(t)).ToArray(),
            clean, zeros(1, 6, DModel, dtype: ScalarType.Float64));
        var rowSums = g.AdjacencyMatrix.sum(1).data<double>().ToArray();
        for (int t = 0; t < g.NNodes; t++)
        {
            if (t >= g.NFeatures && t < g.LogitNode(0)) { Assert.Equal(0, rowSums[t]); continue; }   // errors and tokens: no rows
            double change = actual[t] - none[t];
            Assert.True(Math.Abs(change - rowSums[t]) < 1e-9 * Math.Max(1, Math.Abs(change)), $"{g.NodeLabel(t)}: row sums to {rowSums[t]}, removing every node changes it by {change}");
        }
        // A feature target's value plus b_enc is its pre-activation, which is its activation (JumpReLU, active).
        for (int i = 0; i < g.NFeatures; i++)
        {
            var n = g.ActiveFeatures[g.SelectedFeatures[i]];
            Assert.Equal(n.Activation, actual[i] + (float)r.BEnc[n.Layer][n.Feature], 9);
        }
        // Direct effects only: nothing reaches a feature from its own layer or later, or from a later position.
        for (int t = 0; t < g.NFeatures; t++)
            for (int s = 0; s < g.NFeatures; s++)
            {
                var (a, b) = (g.ActiveFeatures[g.SelectedFeatures[t]], g.ActiveFeatures[g.SelectedFeatures[s]]);
                if (b.Layer >= a.Layer || b.Position > a.Position) Assert.Equal(0, g.AdjacencyMatrix[t, s].item<double>());
            }
        Assert.True(g.AdjacencyMatrix.narrow(0, 0, g.NFeatures).narrow(1, 0, g.NFeatures).abs().max().item<double>() > 1e-4, "no feature-to-feature edge");
    }

    [Fact]
    public void Single_edges_equal_an_intervention_on_one_node_with_the_others_held()
    {
        // Scaling one source node by 1 + δ in the frozen replacement run, every other feature and error node held at its
        // value, changes each target by δ·A[t, s]: features, error nodes and token embeddings as sources, logits and
        // features as targets.
        string dir = ModelDir(seed: 5);
        using var model = ModelLoader.FromPretrained(dir, ScalarType.Float64);
        var (clt, r) = MakeClt(seed: 6);
        using var _c = clt;
        using var g = AttributionGraph.Build(model, clt, Prompt, new AttributionGraphOptions { MaxLogits = 2, BatchSize = 64 });
        var (f, eps, clean) = Clean(model, clt, Prompt);
        var embed = CleanEmbed(model);
        var baseline = Targets(g, model, clt, r, dir, f, eps, clean, embed);
        const double delta = 0.5;
        int checkedEdges = 0;

        void Check(int source, Tensor[] ff, Tensor[] ee, Tensor em)
        {
            var after = Targets(g, model, clt, r, dir, ff, ee, clean, em);
            var targets = Enumerable.Range(0, g.NFeatures).Append(g.LogitNode(0)).Append(g.LogitNode(1));
            foreach (int t in targets)
            {
                double a = g.AdjacencyMatrix[t, source].item<double>(), change = after[t] - baseline[t];
                Assert.True(Math.Abs(change - delta * a) < 1e-9 * Math.Max(1, Math.Abs(change)), $"{g.NodeLabel(source)} → {g.NodeLabel(t)}: A = {a}, intervention {change / delta}");
                if (Math.Abs(a) > 1e-6) checkedEdges++;
            }
        }
        // The three strongest feature sources into the top logit, and a layer-1 feature.
        var row = g.AdjacencyMatrix[g.LogitNode(0)].data<double>().ToArray();
        var sources = Enumerable.Range(0, g.NFeatures).OrderByDescending(i => Math.Abs(row[i])).Take(3)
            .Append(Enumerable.Range(0, g.NFeatures).First(i => g.ActiveFeatures[g.SelectedFeatures[i]].Layer == 1)).Distinct();
        foreach (int s in sources)
        {
            var n = g.ActiveFeatures[g.SelectedFeatures[s]];
            var ff = f.Select(t => t.clone()).ToArray();
            ff[n.Layer][0, n.Position, n.Feature] = ff[n.Layer][0, n.Position, n.Feature] * (1 + delta);
            Check(s, ff, eps, embed);
        }
        foreach (var (l, p) in new[] { (0, 2), (1, 5), (0, 5) })
        {
            var ee = eps.Select(t => t.clone()).ToArray();
            ee[l][0, p] = ee[l][0, p] * (1 + delta);
            Check(g.ErrorNode(l, p), f, ee, embed);
        }
        foreach (int p in new[] { 0, 3, 5 })
        {
            var em = embed.clone();
            em[0, p] = em[0, p] * (1 + delta);
            Check(g.TokenNode(p), f, eps, em);
        }
        Assert.True(checkedEdges >= 15, $"only {checkedEdges} nonzero edges checked");
    }

    [Fact]
    public void Bounded_feature_rows_are_the_full_graphs_rows_and_bos_zeroing_drops_position_0()
    {
        using var model = Model64(seed: 7);
        var (clt, _) = MakeClt(seed: 8);
        using var _c = clt;
        using var full = AttributionGraph.Build(model, clt, Prompt, new AttributionGraphOptions { MaxLogits = 3, BatchSize = 4 });
        using var part = AttributionGraph.Build(model, clt, Prompt, new AttributionGraphOptions { MaxLogits = 3, BatchSize = 4, MaxFeatures = 5, UpdateInterval = 1 });
        Assert.Equal(full.ActiveFeatures, part.ActiveFeatures);
        Assert.Equal(5, part.NFeatures);
        Assert.True(part.SelectedFeatures.SequenceEqual(part.SelectedFeatures.Order()), "selected features ascending");
        // Columns of part: its selected features, then the same error, token and logit nodes; rows likewise.
        var map = part.SelectedFeatures.ToList().Concat(Enumerable.Range(full.NFeatures, full.NNodes - full.NFeatures)).ToArray();
        for (int t = 0; t < part.NNodes; t++)
            for (int s = 0; s < part.NNodes; s++)
                Assert.Equal(full.AdjacencyMatrix[map[t], map[s]].item<double>(), part.AdjacencyMatrix[t, s].item<double>(), 10);
        // The first features visited are those the logit rows reach most strongly (the first influence ranking).
        var logitRows = full.AdjacencyMatrix.narrow(0, full.LogitNode(0), 3).abs();
        var normalized = logitRows / logitRows.sum(1, keepdim: true);
        var firstRank = (tensor(full.LogitProbabilities.ToArray()).unsqueeze(0).matmul(normalized))[0].narrow(0, 0, full.NFeatures).data<double>().ToArray();
        var expectedTop = Enumerable.Range(0, full.NFeatures).OrderByDescending(i => firstRank[i]).Take(4).ToHashSet();
        Assert.Subset(part.SelectedFeatures.ToHashSet(), expectedTop);

        using var bos = AttributionGraph.Build(model, clt, Prompt, new AttributionGraphOptions { MaxLogits = 3, ZeroBos = true });
        Assert.Equal(full.ActiveFeatures.Where(a => a.Position != 0), bos.ActiveFeatures);
        for (int l = 0; l < Layers; l++) Assert.Equal(0, bos.AdjacencyMatrix[TensorIndex.Colon, bos.ErrorNode(l, 0)].abs().sum().item<double>());
    }

    /// <summary>Nodes [f0, f1, e0, t0, L0]: f0 ← t0 (2); f1 ← t0 (1), e0 (1); L0 ← f0 (3), f1 (−1); logit weight 1.</summary>
    private static Tensor HandMatrix()
    {
        var a = zeros(5, 5, dtype: ScalarType.Float64);
        a[0, 3] = 2.0; a[1, 3] = 1.0; a[1, 2] = 1.0; a[4, 0] = 3.0; a[4, 1] = -1.0;
        return a;
    }

    [Fact]
    public void Pruning_a_hand_made_graph_keeps_the_nodes_and_edges_worked_out_by_hand()
    {
        // Row-normalised |A|: f0 ← t0 1; f1 ← t0 .5, e0 .5; L0 ← f0 .75, f1 .25. Influence w·Â + w·Â²:
        // f0 .75, f1 .25, e0 .125, t0 .875, L0 0 (total 2).
        using var a = HandMatrix();
        using var w = tensor(new double[] { 0, 0, 0, 0, 1 });
        var p = AttributionGraph.Prune(a, w, nFeatures: 2, nTokens: 1, nLogits: 1, nodeThreshold: 0.8, edgeThreshold: 0.98);
        Assert.Equal(new[] { 0.75, 0.25, 0.125, 0.875, 0 }, p.NodeInfluence);
        // Sorted shares .4375 (t0), .8125 (f0), .9375 (f1), 1 (e0), 1 (L0): 0.8 is reached at f0, so f0 and t0 stay; L0 always.
        Assert.Equal(new[] { 0.8125, 0.9375, 1, 0.4375, 1 }, p.CumulativeScores);
        Assert.Equal(new[] { true, false, false, true, true }, p.NodeMask);
        // Pruned: f0 ← t0 and L0 ← f0, each scored 1 (normalised weight 1 × target influence 1): both kept.
        Assert.Equal(new[] { (0, 3), (4, 0) }, Edges(p.EdgeMask));

        // Node threshold 1 keeps every node; edge scores f0←t0 .75, L0←f0 .75, L0←f1 .25, f1←t0 .125, f1←e0 .125 (total 2):
        // 0.8 of it is reached at L0←f1 (.875), so the three largest stay. e0 then has no outgoing edge, f1 no incoming
        // one: both go, and with f1 its edge to L0.
        var q = AttributionGraph.Prune(a, w, 2, 1, 1, nodeThreshold: 1.0, edgeThreshold: 0.8);
        Assert.Equal(new[] { true, false, false, true, true }, q.NodeMask);
        Assert.Equal(new[] { (0, 3), (4, 0) }, Edges(q.EdgeMask));
        // Edge threshold 0.7 keeps only the two .75 edges (.375, .75): f1 loses its only outgoing edge.
        var e = AttributionGraph.Prune(a, w, 2, 1, 1, nodeThreshold: 1.0, edgeThreshold: 0.7);
        Assert.Equal(new[] { true, false, false, true, true }, e.NodeMask);

        // Scores: replacement = token / (token + error) influence = .875 / 1; completeness = Σ (1 − error share of the row)
        // × (influence + logit weight) / Σ (influence + logit weight) = (.75 + .5·.25 + .125 + .875 + 1) / 3.
        var (replacement, completeness) = AttributionGraph.Scores(a, w, nFeatures: 2, nErrors: 1, nTokens: 1);
        Assert.Equal(0.875, replacement, 12);
        Assert.Equal(2.875 / 3, completeness, 12);
        Assert.Throws<SaeSharpException>(() => AttributionGraph.Prune(a, w, 2, 1, 1, nodeThreshold: 1.5));
        // NaN passes "< 0 or > 1" tests; it is refused as circuit-tracer's range [0, 1] leaves it out.
        var nan = Assert.Throws<SaeSharpException>(() => AttributionGraph.Prune(a, w, 2, 1, 1, edgeThreshold: double.NaN));
        Assert.Equal("edge threshold must be between 0 and 1, got NaN", nan.Message);
        nan = Assert.Throws<SaeSharpException>(() => AttributionGraph.CheckPruneThresholds(double.NaN, 0.98, "--node-threshold", "--edge-threshold"));
        Assert.Equal("--node-threshold must be between 0 and 1, got NaN", nan.Message);
    }

    private static List<(int, int)> Edges(bool[,] mask)
    {
        var list = new List<(int, int)>();
        for (int t = 0; t < mask.GetLength(0); t++) for (int s = 0; s < mask.GetLength(1); s++) if (mask[t, s]) list.Add((t, s));
        return list;
    }

    [Fact]
    public void The_json_is_circuit_tracers_graph_file()
    {
        using var model = Model64(seed: 9);
        var (clt, _) = MakeClt(seed: 10);
        using var _c = clt;
        using var g = AttributionGraph.Build(model, clt, Prompt, new AttributionGraphOptions { MaxLogits = 3 });
        var pruned = g.Prune(0.8, 0.98);
        var json = g.ToJson(pruned, id => id == 11 ? "a\nb" : $"t{id}", "the prompt", "my-graph", "gpt2");
        var meta = json["metadata"]!;
        Assert.Equal("my-graph", (string?)meta["slug"]);
        Assert.Equal("gpt2", (string?)meta["scan"]);
        Assert.Equal("the prompt", (string?)meta["prompt"]);
        Assert.Equal(new[] { "t5", "a⏎b", "t23", "t42", "t7", "t19" }, meta["prompt_tokens"]!.AsArray().Select(n => (string)n!));
        Assert.Equal("both", (string?)json["qParams"]!["linkType"]);
        var nodes = json["nodes"]!.AsArray().Select(n => n!.AsObject()).ToList();
        var ids = nodes.Select(n => (string)n["node_id"]!).ToHashSet();
        Assert.Equal(nodes.Count, ids.Count);
        // Every embedding and logit node; logits at the last position, layer n_layers + 1, the first the target.
        for (int p = 0; p < 6; p++) Assert.Contains($"E_{g.Tokens[p]}_{p}", ids);
        var logits = nodes.Where(n => (string?)n["feature_type"] == "logit").ToList();
        Assert.Equal(g.LogitTokens.Count, logits.Count);
        Assert.Equal($"3_{g.LogitTokens[0]}_5", (string?)logits[0]["node_id"]);
        Assert.True((bool)logits[0]["is_target_logit"]!);
        Assert.Equal($"Output \"t{g.LogitTokens[0]}\" (p={g.LogitProbabilities[0].ToString("F3", System.Globalization.CultureInfo.InvariantCulture)})", (string?)logits[0]["clerp"]);
        // Features: "layer_feature_pos", the kept ones, with activation and cumulative influence.
        foreach (var n in nodes.Where(n => (string?)n["feature_type"] == "cross layer transcoder"))
        {
            var parts = ((string)n["node_id"]!).Split('_').Select(int.Parse).ToArray();
            int i = Enumerable.Range(0, g.NFeatures).Single(i => g.ActiveFeatures[g.SelectedFeatures[i]] is var a && a.Layer == parts[0] && a.Feature == parts[1] && a.Position == parts[2]);
            Assert.True(pruned.NodeMask[i]);
            Assert.Equal(g.ActiveFeatures[g.SelectedFeatures[i]].Activation, (double)n["activation"]!);
            Assert.Equal(pruned.CumulativeScores[i], (double)n["influence"]!);
            Assert.Equal(parts[2], (int)n["ctx_idx"]!);
            long sum = parts[0] + parts[1];
            Assert.Equal(sum * (sum + 1) / 2 + parts[1], (long)n["feature"]!);
        }
        // Error nodes: "{layer}_-1_{pos}", the id the viewer builds itself (featureId = layer_feature_ctx_idx, feature −1).
        // circuit-tracer writes "0_{layer}_{pos}", which is also layer 0 feature {layer}'s id at that position.
        var errors = nodes.Where(n => (string?)n["feature_type"] == "mlp reconstruction error").ToList();
        Assert.NotEmpty(errors);
        foreach (var n in errors)
        {
            Assert.Equal(-1, (long)n["feature"]!);
            Assert.Equal($"{(string)n["layer"]!}_{(long)n["feature"]!}_{(int)n["ctx_idx"]!}", (string?)n["node_id"]);
        }
        // Links: kept edges between listed nodes, with the adjacency matrix's weight.
        var links = json["links"]!.AsArray();
        Assert.NotEmpty(links);
        int kept = 0;
        for (int t = 0; t < g.NNodes; t++) for (int s = 0; s < g.NNodes; s++) if (pruned.EdgeMask[t, s] && pruned.NodeMask[t] && pruned.NodeMask[s]) kept++;
        Assert.Equal(kept, links.Count);
        foreach (var l in links)
        {
            Assert.Contains((string)l!["source"]!, ids);
            Assert.Contains((string)l["target"]!, ids);
        }

        string outDir = Sub("graphs");
        Directory.CreateDirectory(outDir);
        AttributionGraph.WriteGraphFiles(Path.Combine(outDir, "my-graph.json"), json);
        AttributionGraph.WriteGraphFiles(Path.Combine(outDir, "my-graph.json"), json);
        var written = JsonNode.Parse(File.ReadAllText(Path.Combine(outDir, "my-graph.json")))!;
        Assert.Equal(links.Count, written["links"]!.AsArray().Count);
        var index = JsonNode.Parse(File.ReadAllText(Path.Combine(outDir, "graph-metadata.json")))!["graphs"]!.AsArray();
        Assert.Equal("my-graph", (string?)Assert.Single(index)!["slug"]);

        // A graph-metadata.json the graph cannot be added to is an error naming it, found before the graph file is
        // replaced: the folder's earlier graph stays as it was.
        string graphPath = Path.Combine(outDir, "my-graph.json"), metaPath = Path.Combine(outDir, "graph-metadata.json");
        string before = File.ReadAllText(graphPath);
        foreach (var (bad, reason) in new[] { ("{bad", "not JSON"), ("{\"graphs\": 3}", "no 'graphs' list"), ("[]", "no 'graphs' list"),
                     ("{\"graphs\": [1]}", "graphs[0] is not a graph's metadata"), ("{\"graphs\": [{\"slug\": 2}]}", "graphs[0] is not a graph's metadata") })
        {
            File.WriteAllText(metaPath, bad);
            var e = Assert.Throws<SaeSharpException>(() => AttributionGraph.CheckGraphFolder(graphPath));
            Assert.StartsWith($"{metaPath}: {reason}", e.Message);
            e = Assert.Throws<SaeSharpException>(() => AttributionGraph.WriteGraphFiles(graphPath, json));
            Assert.StartsWith($"{metaPath}: {reason}", e.Message);
            Assert.Equal(before, File.ReadAllText(graphPath));
            Assert.Equal(bad, File.ReadAllText(metaPath));
        }
    }

    [Fact]
    public void Attribution_targets_are_circuit_tracers_tokens_differences_and_custom_directions()
    {
        string dir = ModelDir(seed: 21);
        using var model = ModelLoader.FromPretrained(dir, ScalarType.Float64);
        var (clt, r) = MakeClt(seed: 22);
        using var _c = clt;
        long vocab = model.Config.DVocab;
        var probs = softmax(model.Forward(Prompt)[0, -1], 0).data<double>().ToArray();
        using var auto = AttributionGraph.Build(model, clt, Prompt, new AttributionGraphOptions { MaxLogits = 3, LogitProbability = 1 });
        long a = auto.LogitTokens[0], b = auto.LogitTokens[2];
        double[] Row(AttributionGraph g, int k) => g.AdjacencyMatrix[g.LogitNode(k)].data<double>().ToArray();

        // Token targets given in the salient order give the salient graph (circuit-tracer's None vs Sequence[str] test).
        using var same = AttributionGraph.Build(model, clt, Prompt, new AttributionGraphOptions { Targets = auto.LogitTokens.Select(AttributionTarget.Token).ToList() });
        Assert.Equal(auto.LogitTokens, same.LogitTokens);
        Assert.Equal(auto.LogitProbabilities, same.LogitProbabilities);
        for (int k = 0; k < 3; k++) Assert.Equal(Row(auto, k), Row(same, k));

        // A difference, a token in the middle of the list (any token, not only salient ones), a custom direction.
        double[] centredA;
        using (var wu = model.UnembedWeight())
        using (var scope = NewDisposeScope()) centredA = (wu[a] - wu.mean([0L])).data<double>().ToArray();
        var targets = new[]
        {
            AttributionTarget.LogitDifference(a, b, "logit(A)-logit(B)"),
            AttributionTarget.Token(b),
            AttributionTarget.Custom("twice A", 0.25, centredA.Select(v => 2 * v).ToArray()),
        };
        using var g = AttributionGraph.Build(model, clt, Prompt, new AttributionGraphOptions { Targets = targets, BatchSize = 2 });
        Assert.Equal(new[] { vocab + 0, b, vocab + 2 }, g.LogitTokens);
        Assert.Equal(new string?[] { "logit(A)-logit(B)", null, "twice A" }, g.LogitLabels);
        Assert.Equal(Math.Abs(probs[a] - probs[b]), g.LogitProbabilities[0], 12);
        Assert.Equal(probs[b], g.LogitProbabilities[1], 12);
        Assert.Equal(0.25, g.LogitProbabilities[2]);
        Assert.Equal(auto.NNodes, g.NNodes);
        // Linearity: the difference's row is A's row minus B's; twice A's centred row is twice A's row.
        var (rowA, rowB, diff, twice) = (Row(auto, 0), Row(auto, 2), Row(g, 0), Row(g, 2));
        for (int s = 0; s < g.NNodes; s++)
        {
            Assert.True(Math.Abs(diff[s] - (rowA[s] - rowB[s])) < 1e-10, $"{g.NodeLabel(s)}: {diff[s]} vs {rowA[s]} − {rowB[s]}");
            Assert.True(Math.Abs(twice[s] - 2 * rowA[s]) < 1e-10, $"{g.NodeLabel(s)}: {twice[s]} vs 2·{rowA[s]}");
        }
        Assert.Equal(Row(auto, 2), Row(g, 1));
        // Completeness: the difference's row adds up to logit(A) − logit(B) with every node minus with none.
        var (f, eps, clean) = Clean(model, clt, Prompt);
        double LogitDiff(Tensor[] ff, Tensor[] ee, Tensor? embed)
        {
            using var scope = NewDisposeScope();
            using var _ = no_grad();
            var last = ReplacementLogits(model, clt, dir, ff, ee, clean, frozen: true, new Tensor?[Layers], embed, Prompt)[0, -1];
            return last[a].item<double>() - last[b].item<double>();
        }
        double change = LogitDiff(f, eps, null) - LogitDiff(f.Select(t => zeros_like(t)).ToArray(), eps.Select(t => zeros_like(t)).ToArray(), zeros(1, 6, DModel, dtype: ScalarType.Float64));
        Assert.True(Math.Abs(change - diff.Sum()) < 1e-9 * Math.Max(1, Math.Abs(change)), $"row sums to {diff.Sum()}, removing every node changes logit(A) − logit(B) by {change}");
        Assert.NotEqual(0, change);

        // The JSON's logit nodes: virtual ids, the labels circuit-tracer writes, the first the target; pruning and scores run.
        var pruned = g.Prune();
        var (replacement, completeness) = g.Scores();
        Assert.InRange(completeness, 0, 1);
        Assert.InRange(replacement, 0, 1);
        var json = g.ToJson(pruned, id => $"t{id}", "p", "s", "scan");
        var logits = json["nodes"]!.AsArray().Where(n => (string?)n!["feature_type"] == "logit").Select(n => n!.AsObject()).ToList();
        Assert.Equal(new[] { $"3_{vocab}_5", $"3_{b}_5", $"3_{vocab + 2}_5" }, logits.Select(n => (string)n["node_id"]!));
        Assert.Equal(new[] { vocab, b, vocab + 2 }, logits.Select(n => (long)n["feature"]!));
        string P(double v) => v.ToString("F3", System.Globalization.CultureInfo.InvariantCulture);
        Assert.Equal(new[] { $"Output \"logit(A)-logit(B)\" (p={P(g.LogitProbabilities[0])})", $"Output \"t{b}\" (p={P(probs[b])})", "Output \"twice A\" (p=0.250)" },
            logits.Select(n => (string)n["clerp"]!));
        Assert.Equal(new[] { true, false, false }, logits.Select(n => (bool)n["is_target_logit"]!));
        Assert.Equal($"L_{vocab}-5", (string?)logits[0]["jsNodeId"]);
    }

    [Fact]
    public void Target_specs_parse_as_the_cli_reads_them_and_bad_targets_are_refused()
    {
        long Lookup(string t) => t switch { " Austin" => 7, " Dallas" => 9, "42" => 3, _ => throw new SaeSharpException($"'{t}' is not one token") };
        var d = AttributionTarget.Parse("logit-diff: Austin, Dallas", Lookup);
        Assert.Equal((AttributionTargetKind.LogitDifference, 7L, 9L, "logit( Austin)-logit( Dallas)"), (d.Kind, d.TokenId, d.OtherTokenId, d.Label));
        Assert.Equal(AttributionTarget.Token(7), AttributionTarget.Parse(" Austin", Lookup));
        Assert.Equal(AttributionTarget.Token(42), AttributionTarget.Parse("logit:42", Lookup));      // logit:N is an id
        Assert.Equal(AttributionTarget.Token(3), AttributionTarget.Parse("42", Lookup));            // a bare string is a string
        Assert.Equal("logit(5)-logit(6)", AttributionTarget.Parse("logit-diff:5,6").Label);
        Assert.Contains("two tokens", Assert.Throws<SaeSharpException>(() => AttributionTarget.Parse("logit-diff: Austin", Lookup)).Message);
        Assert.Contains("not one token", Assert.Throws<SaeSharpException>(() => AttributionTarget.Parse(" Houston", Lookup)).Message);
        Assert.Contains("tokenizer", Assert.Throws<SaeSharpException>(() => AttributionTarget.Parse(" Austin")).Message);
        Assert.Contains("≥ 0", Assert.Throws<SaeSharpException>(() => AttributionTarget.Custom("x", -1, [1.0])).Message);
        // Targets that can only give 0/0 (a replacement score of NaN) are refused: a token minus itself, a zero direction.
        Assert.Contains("A and B are the same token (7)", Assert.Throws<SaeSharpException>(() => AttributionTarget.Parse("logit-diff: Austin, Austin", Lookup)).Message);
        Assert.Contains("the vector is zero", Assert.Throws<SaeSharpException>(() => AttributionTarget.Custom("z", 1, [0.0, 0.0])).Message);

        using var model = Model64(seed: 3);
        var (clt, _) = MakeClt(seed: 4);
        using var _c = clt;
        AttributionGraph Build(params AttributionTarget[] t) => AttributionGraph.Build(model, clt, Prompt, new AttributionGraphOptions { Targets = t });
        Assert.Contains("empty", Assert.Throws<SaeSharpException>(() => Build()).Message);
        Assert.Contains($"d_model is {DModel}", Assert.Throws<SaeSharpException>(() => Build(AttributionTarget.Custom("v", 1, [1.0, 2.0]))).Message);
        Assert.Contains("outside the vocabulary", Assert.Throws<SaeSharpException>(() => Build(AttributionTarget.Token(model.Config.DVocab))).Message);
        Assert.Contains("outside the vocabulary", Assert.Throws<SaeSharpException>(() => Build(AttributionTarget.LogitDifference(1, -1))).Message);
        var ones = Enumerable.Repeat(1.0, (int)DModel).ToArray();
        Assert.Contains("every target has weight 0", Assert.Throws<SaeSharpException>(() => Build(AttributionTarget.Custom("w0", 0, ones))).Message);
    }

    /// <summary>What circuit-tracer's viewer (frontend/assets: index.html, util.js, attribution_graph/*.js) reads from a
    /// graph file and graph-metadata.json, found by reading its JavaScript; bench/reference/view_graph.sh renders a graph in it.</summary>
    internal static readonly string[] ViewerMetadataFields = ["slug", "scan", "transcoder_list", "prompt_tokens", "prompt", "node_threshold"];
    internal static readonly string[] ViewerQParamsFields = ["pinnedIds", "supernodes", "linkType", "clickedId", "sg_pos"];
    internal static readonly string[] ViewerNodeFields =
        ["node_id", "feature", "layer", "ctx_idx", "feature_type", "token_prob", "is_target_logit", "run_idx", "reverse_ctx_idx", "jsNodeId", "clerp", "influence", "activation"];
    internal static readonly string[] ViewerLinkFields = ["source", "target", "weight"];

    [Fact]
    public void The_json_has_every_field_circuit_tracers_viewer_reads_in_the_form_it_parses()
    {
        using var model = Model64(seed: 9);
        var (clt, _) = MakeClt(seed: 10);
        using var _c = clt;
        using var g = AttributionGraph.Build(model, clt, Prompt, new AttributionGraphOptions { MaxLogits = 3 });
        var pruned = g.Prune(0.8, 0.98);
        var json = g.ToJson(pruned, id => $" t{id}", "the prompt", "my-graph", "gpt2", 0.8);
        foreach (var k in ViewerMetadataFields) Assert.True(json["metadata"]!.AsObject().ContainsKey(k), $"metadata.{k}");
        foreach (var k in ViewerQParamsFields) Assert.True(json["qParams"]!.AsObject().ContainsKey(k), $"qParams.{k}");
        Assert.Equal(JsonValueKind.Number, json["metadata"]!["node_threshold"]!.GetValueKind());   // index.html: typeof === 'number'
        var nodes = json["nodes"]!.AsArray().Select(n => n!.AsObject()).ToList();
        foreach (var n in nodes)
        {
            foreach (var k in ViewerNodeFields) Assert.True(n.ContainsKey(k), $"{n["node_id"]}: no {k}");
            Assert.Equal(JsonValueKind.String, n["layer"]!.GetValueKind());                      // 'E' or a number as text
            Assert.Contains((string)n["feature_type"]!, new[] { "cross layer transcoder", "mlp reconstruction error", "embedding", "logit" });
            Assert.InRange((int)n["ctx_idx"]!, 0, g.NPos - 1);                                     // indexes metadata.prompt_tokens
            if ((string?)n["feature_type"] == "mlp reconstruction error")                          // graph_models.Node.error_node
                Assert.Equal($"{n["layer"]}_{n["ctx_idx"]}-0", (string?)n["jsNodeId"]);
        }
        Assert.Contains(nodes, n => (string?)n["feature_type"] == "mlp reconstruction error");
        // util-cg.js: logitToken = clerp.split('"')[1], logitPct = +clerp.split('(p=')[1].split(')')[0]
        foreach (var (n, k) in nodes.Where(n => (string?)n["feature_type"] == "logit").Select((n, k) => (n, k)))
        {
            string clerp = (string)n["clerp"]!;
            Assert.Equal($" t{g.LogitTokens[k]}", clerp.Split('"')[1]);
            Assert.Equal(Math.Round(g.LogitProbabilities[k], 3), double.Parse(clerp.Split("(p=")[1].Split(')')[0], System.Globalization.CultureInfo.InvariantCulture));
        }
        var ids = nodes.Select(n => (string)n["node_id"]!).ToHashSet();
        foreach (var l in json["links"]!.AsArray().Select(l => l!.AsObject()))
        {
            foreach (var k in ViewerLinkFields) Assert.True(l.ContainsKey(k), $"link without {k}");
            Assert.Contains((string)l["source"]!, ids);                                              // formatData drops dangling links
            Assert.Contains((string)l["target"]!, ids);
        }
    }

    [Fact]
    public void A_graph_in_bfloat16_agrees_with_float32s_to_bfloat16_precision()
    {
        // `sae graph --dtype bf16`: the model and the CLT in bfloat16; the same nodes and logits as float32's, and every
        // edge within ten bfloat16 steps of the largest (the graph's matrix itself is float32). A feature within bfloat16's
        // rounding of its threshold can switch on or off (seed 42 has one); this seed's CLT has none, so the nodes match.
        using var pair = CltTestBase.LoadInBothDtypes(ModelDir(seed: 41), Sub($"clt-{Guid.NewGuid():N}"), cltSeed: 44);
        var (m32, m16, c32, c16) = pair;
        var options = new AttributionGraphOptions { MaxLogits = 3, LogitProbability = 0.99 };
        using var a = AttributionGraph.Build(m32, c32, Prompt, options);
        using var b = AttributionGraph.Build(m16, c16, Prompt, options);
        Assert.Equal(a.ActiveFeatures.Select(f => (f.Layer, f.Position, f.Feature)), b.ActiveFeatures.Select(f => (f.Layer, f.Position, f.Feature)));
        Assert.Equal(a.LogitTokens, b.LogitTokens);
        Assert.Equal(ScalarType.Float32, b.AdjacencyMatrix.dtype);
        double scale = a.AdjacencyMatrix.abs().max().item<float>();
        double diff = (a.AdjacencyMatrix - b.AdjacencyMatrix).abs().max().item<float>();
        Assert.True(a.NFeatures >= 10, $"only {a.NFeatures} feature nodes");
        Assert.True(diff <= 10.0 / 256 * scale, $"edges differ by {diff} of {scale}");
    }

    [Fact]
    public void Building_a_graph_frees_every_tensor_it_made() => LiveTensors.OnOwnThread(() =>
    {
        using var model = Gpt2(nLayer: Layers, seed: 2);
        var r0 = CltReference.Random(Layers, Features, DModel, 9, threshold: true, skip: false);
        using var clt = r0.LoadCircuitTracerLn2(Sub($"clt-{Guid.NewGuid():N}"));
        var options = new AttributionGraphOptions { MaxLogits = 3, BatchSize = 2, MaxFeatures = 3 };
        AttributionGraph.Build(model, clt, Prompt, options).Dispose();
        long before = DisposeScopeManager.Statistics.ThreadTotalLiveCount;
        for (int i = 0; i < 2; i++)
        {
            using var g = AttributionGraph.Build(model, clt, Prompt, options);
            g.Prune();
            g.Scores();
        }
        Assert.Equal(before, DisposeScopeManager.Statistics.ThreadTotalLiveCount);
    });

    [Fact]
    public void Bad_input_is_refused_with_its_reason()
    {
        using var model = Model64(seed: 3);
        var (clt, _) = MakeClt(seed: 4);
        using var _c = clt;
        var e = Assert.Throws<SaeSharpException>(() => AttributionGraph.Build(model, clt, Prompt.expand(2, 6)));
        Assert.Contains("one prompt", e.Message);
        e = Assert.Throws<SaeSharpException>(() => AttributionGraph.Build(model, clt, Prompt, new AttributionGraphOptions { LogitProbability = 0 }));
        Assert.Contains("logit probability", e.Message);
        using var deeper = ModelLoader.FromPretrained(TinyModels.WriteGpt2(Sub("g3"), 3, 3, DModel, 4, 50, 32), ScalarType.Float64);
        e = Assert.Throws<SaeSharpException>(() => AttributionGraph.Build(deeper, clt, Prompt));
        Assert.Contains("spans 2 layers but the model has 3", e.Message);
    }
}
