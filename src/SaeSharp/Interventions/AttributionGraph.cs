using System.Text.Json.Nodes;
using SaeSharp.Hooks;
using SaeSharp.Models;
using SaeSharp.Saes;
using TorchSharp;
using static TorchSharp.torch;

namespace SaeSharp.Interventions;

/// <summary>Settings of <see cref="AttributionGraph.Build"/> (circuit-tracer <c>attribute</c>'s arguments).</summary>
public sealed record AttributionGraphOptions
{
    /// <summary>At most this many logit nodes (circuit-tracer <c>max_n_logits</c>).</summary>
    public int MaxLogits { get; init; } = 10;
    /// <summary>Logit nodes are the most probable next tokens until their cumulative probability reaches this
    /// (circuit-tracer <c>desired_logit_prob</c>).</summary>
    public double LogitProbability { get; init; } = 0.95;
    /// <summary>At most this many feature nodes get a row of the adjacency matrix (all active features stay source columns
    /// until pruned); null: every active feature (circuit-tracer <c>max_feature_nodes</c>). Below the number of active
    /// features they are chosen by their influence on the logits, re-ranked every <see cref="UpdateInterval"/> batches.</summary>
    public int? MaxFeatures { get; init; }
    /// <summary>Target rows per backward pass; the forward runs on this many copies of the prompt (circuit-tracer
    /// <c>batch_size</c>, whose default is 512 on a GPU).</summary>
    public int BatchSize { get; init; } = 32;
    /// <summary>Batches between re-rankings of the features still to visit (circuit-tracer <c>update_interval</c>).</summary>
    public int UpdateInterval { get; init; } = 4;
    /// <summary>Zero the features and error nodes at position 0 (circuit-tracer's <c>zero_bos</c>, which it applies when
    /// the first token is a special token): set when the prompt starts with BOS.</summary>
    public bool ZeroBos { get; init; }
    /// <summary>The logit nodes, in this order (circuit-tracer's <c>attribution_targets</c>); null: the most probable
    /// tokens, by <see cref="MaxLogits"/> and <see cref="LogitProbability"/> (which a target list ignores).</summary>
    public IReadOnlyList<AttributionTarget>? Targets { get; init; }
}

/// <summary>An active feature of an <see cref="AttributionGraph"/>: CLT layer, token position, feature index, activation.</summary>
public readonly record struct GraphFeature(int Layer, int Position, int Feature, double Activation);

/// <summary>Which nodes and edges <see cref="AttributionGraph.Prune(Tensor, Tensor, int, int, int, double, double)"/> keeps
/// (circuit-tracer <c>PruneResult</c>).</summary>
/// <param name="NodeMask">Per node (the adjacency matrix's order), whether it is kept.</param>
/// <param name="EdgeMask">[targets, sources] bool: the kept edges.</param>
/// <param name="CumulativeScores">Per node, the cumulative share of the total influence of the nodes at least as
/// influential (circuit-tracer's <c>cumulative_scores</c>, the JSON's <c>influence</c>).</param>
/// <param name="NodeInfluence">Per node, its influence on the logits (row-normalised |A| propagated from the logits,
/// weighted by their probabilities).</param>
public sealed record GraphPruneResult(bool[] NodeMask, bool[,] EdgeMask, double[] CumulativeScores, double[] NodeInfluence);

/// <summary>
/// circuit-tracer's attribution graph of one prompt for a whole cross-layer transcoder: the direct, linear effects between
/// the active features, the error nodes, the token embeddings and the top logits in the local replacement model (attention
/// patterns and norm scales frozen at their values on the prompt, every MLP output replaced by the CLT's reconstruction plus
/// a frozen error node, so the forward is the clean run). Nodes are ordered as circuit-tracer's <c>Graph</c>:
/// [selected features (in (layer, position, feature) order), error nodes (layer-major, then position), token embeddings
/// (per position), logits (most probable first)]; <see cref="AdjacencyMatrix"/>[t, s] is the direct effect of source s on
/// target t's pre-activation (a feature's encoder input without b_enc, a logit minus the mean logit). Rows of error,
/// embedding and unselected nodes are zero. Build with <see cref="Build"/>, prune with <see cref="Prune(double, double)"/>,
/// write the viewer's JSON with <see cref="ToJson"/>.
/// </summary>
public sealed class AttributionGraph : IDisposable
{
    /// <summary>The prompt's token ids.</summary>
    public required IReadOnlyList<long> Tokens { get; init; }
    /// <summary>Every active feature (activation ≠ 0) in (layer, position, feature) order (circuit-tracer <c>active_features</c>).</summary>
    public required IReadOnlyList<GraphFeature> ActiveFeatures { get; init; }
    /// <summary>Indices into <see cref="ActiveFeatures"/> of the feature nodes, ascending (circuit-tracer <c>selected_features</c>).</summary>
    public required IReadOnlyList<int> SelectedFeatures { get; init; }
    /// <summary>The logit nodes' token ids (most probable first, or in the order of <see cref="AttributionGraphOptions.Targets"/>);
    /// a custom or difference target's is circuit-tracer's virtual index d_vocab + its place in the target list.</summary>
    public required IReadOnlyList<long> LogitTokens { get; init; }
    /// <summary>The logit nodes' probabilities at the last position (a custom target's given weight, a difference's |p(A) − p(B)|).</summary>
    public required IReadOnlyList<double> LogitProbabilities { get; init; }
    /// <summary>Per logit node, the label of a custom or difference target (circuit-tracer's <c>token_str</c>); null for a
    /// vocabulary token, whose text the tokenizer gives. Null: all are tokens.</summary>
    public IReadOnlyList<string?>? LogitLabels { get; init; }
    /// <summary>[nodes, nodes], targets × sources, float32 (float64 for a float64 model) on the CPU.</summary>
    public required Tensor AdjacencyMatrix { get; init; }
    /// <summary>Layers of the CLT (and the model).</summary>
    public required int NLayers { get; init; }

    /// <summary>Token positions.</summary>
    public int NPos => Tokens.Count;
    /// <summary>Number of feature nodes (the first rows and columns).</summary>
    public int NFeatures => SelectedFeatures.Count;
    /// <summary>Number of error nodes (n_layers × positions).</summary>
    public int NErrors => NLayers * NPos;
    /// <summary>All nodes.</summary>
    public int NNodes => NFeatures + NErrors + NPos + LogitTokens.Count;
    /// <summary>Node index of error node (layer, position).</summary>
    public int ErrorNode(int layer, int position) => NFeatures + layer * NPos + position;
    /// <summary>Node index of the embedding of position <paramref name="position"/>.</summary>
    public int TokenNode(int position) => NFeatures + NErrors + position;
    /// <summary>Node index of logit node <paramref name="k"/> (0: the most probable).</summary>
    public int LogitNode(int k) => NFeatures + NErrors + NPos + k;

    /// <summary>The logit weights over all nodes: each logit node's probability, zero elsewhere (float64).</summary>
    public Tensor LogitWeights()
    {
        var w = new double[NNodes];
        for (int k = 0; k < LogitTokens.Count; k++) w[LogitNode(k)] = LogitProbabilities[k];
        return tensor(w);
    }

    /// <summary>
    /// Builds the attribution graph of <paramref name="tokens"/> (one prompt, [pos] or [1, pos]) for the whole CLT
    /// <paramref name="clt"/> (covering every layer of <paramref name="model"/>) as circuit-tracer's <c>attribute</c> does:
    /// one clean run gives the features, error nodes (MLP output − reconstruction) and token embeddings; one gradient run on
    /// <see cref="AttributionGraphOptions.BatchSize"/> copies of the prompt, with attention patterns and norm scales frozen
    /// and each MLP output's gradient stopped (except through the CLT's skip connection), is then differentiated once per
    /// batch of targets: each target injects its encoder row (a logit: its unembedding row minus the mean row) at its input
    /// hook and position, and A[t, s] = (what s writes) · (gradient where s writes it): a feature's decoder rows to every
    /// layer it writes, times its activation; an error node's vector; a token's embedding (<c>hook_embed</c>). Logit rows
    /// come first, then features (by influence when <see cref="AttributionGraphOptions.MaxFeatures"/> bounds them).
    /// <paramref name="modelHooks"/> run first (weight processing's). Memory: the gradient run holds BatchSize copies of
    /// the model's activations, the gradients (n_layers + 1) × BatchSize × pos × d_model, and the matrix nodes² values.
    /// </summary>
    public static AttributionGraph Build(HookedTransformer model, CrossLayerTranscoder clt, Tensor tokens, AttributionGraphOptions? options = null,
        IReadOnlyList<(string Name, Func<Tensor, Tensor?> Fn)>? modelHooks = null, IProgress<WorkProgress>? progress = null)
    {
        ArgumentNullException.ThrowIfNull(model);
        ArgumentNullException.ThrowIfNull(clt);
        ArgumentNullException.ThrowIfNull(tokens);
        options ??= new AttributionGraphOptions();
        Check(options);
        if (!(tokens.dim() == 1 || (tokens.dim() == 2 && tokens.shape[0] == 1)) || tokens.numel() == 0)
            throw new SaeSharpException($"attribution graph: one prompt's tokens, [pos] or [1, pos], expected; got [{string.Join(", ", tokens.shape)}]");
        if (clt.Cfg.NLayers != model.Config.NLayers)
            throw new SaeSharpException($"attribution graph: the cross-layer transcoder spans {clt.Cfg.NLayers} layers but the model has {model.Config.NLayers}; " +
                                        "the graph needs every MLP replaced");
        if (options.Targets is { } targets)
        {
            if (targets.Count == 0) throw new SaeSharpException("attribution graph: the target list is empty (leave it null for the most probable tokens)");
            if (targets.All(t => t.Kind == AttributionTargetKind.Custom && t.Probability == 0))
                throw new SaeSharpException("attribution graph: every target has weight 0, so pruning has nothing to weigh: give one a positive weight (vector:PATH@WEIGHT)");
            foreach (var t in targets)
                if (t.Kind == AttributionTargetKind.Custom && t.Vector!.Count != model.Config.DModel)
                    throw new SaeSharpException($"attribution target '{t.Label}': its vector has {t.Vector.Count} values but d_model is {model.Config.DModel}");
        }
        Tensor prompt;
        using (var scope = NewDisposeScope()) prompt = tokens.reshape(1, -1).to(ScalarType.Int64).cpu().clone().MoveToOuterDisposeScope();
        using var core = new GraphBuilder(model, clt, prompt, options, modelHooks, progress);
        return core.Run();
    }

    private static void Check(AttributionGraphOptions o)
    {
        if (o.MaxLogits < 1) throw new SaeSharpException($"attribution graph: max logits must be at least 1, got {o.MaxLogits}");
        if (!(o.LogitProbability > 0 && o.LogitProbability <= 1)) throw new SaeSharpException($"attribution graph: logit probability must be in (0, 1], got {o.LogitProbability}");
        if (o.BatchSize < 1) throw new SaeSharpException($"attribution graph: batch size must be at least 1, got {o.BatchSize}");
        if (o.UpdateInterval < 1) throw new SaeSharpException($"attribution graph: update interval must be at least 1, got {o.UpdateInterval}");
        if (o.MaxFeatures is < 0) throw new SaeSharpException($"attribution graph: max features must not be negative, got {o.MaxFeatures}");
    }

    /// <summary>Throws unless both pruning thresholds are in [0, 1] (circuit-tracer's <c>prune_graph</c> range; NaN is refused),
    /// naming each as <paramref name="nodeName"/> and <paramref name="edgeName"/> (a CLI gives its option names).</summary>
    public static void CheckPruneThresholds(double nodeThreshold, double edgeThreshold, string nodeName = "node threshold", string edgeName = "edge threshold")
    {
        foreach (var (value, name) in new[] { (nodeThreshold, nodeName), (edgeThreshold, edgeName) })
            if (!(value >= 0 && value <= 1))
                throw new SaeSharpException(FormattableString.Invariant($"{name} must be between 0 and 1, got {value}"));
    }

    /// <summary>circuit-tracer's <c>prune_graph</c> of this graph.</summary>
    public GraphPruneResult Prune(double nodeThreshold = 0.8, double edgeThreshold = 0.98)
    {
        using var w = LogitWeights();
        return Prune(AdjacencyMatrix, w, NFeatures, NPos, LogitTokens.Count, nodeThreshold, edgeThreshold);
    }

    /// <summary>circuit-tracer's <c>compute_graph_scores</c>: the replacement score (share of the token-and-error influence
    /// on the logits that comes from tokens, i.e. flows through features) and the completeness score (influence-weighted
    /// share of each node's normalised inputs that do not come from error nodes).</summary>
    public (double Replacement, double Completeness) Scores()
    {
        using var w = LogitWeights();
        return Scores(AdjacencyMatrix, w, NFeatures, NErrors, NPos);
    }

    /// <summary>|A| with each row divided by its sum (rows of zeros stay zero): circuit-tracer's <c>normalize_matrix</c>, float64.</summary>
    public static Tensor NormalizeMatrix(Tensor adjacency)
    {
        ArgumentNullException.ThrowIfNull(adjacency);
        using var scope = NewDisposeScope();
        var a = adjacency.to(ScalarType.Float64).abs();
        return (a / a.sum(1, keepdim: true).clamp_min(TorchScalars.Of(1e-10))).MoveToOuterDisposeScope();
    }

    /// <summary>w·Â + w·Â² + … (the series ends: Â is a DAG's matrix), float64: circuit-tracer's <c>compute_influence</c>.
    /// <paramref name="logitWeights"/> [nodes] weights the targets.</summary>
    public static Tensor ComputeInfluence(Tensor normalized, Tensor logitWeights, int maxIterations = 1000)
    {
        ArgumentNullException.ThrowIfNull(normalized);
        ArgumentNullException.ThrowIfNull(logitWeights);
        using var scope = NewDisposeScope();
        var a = normalized.to(ScalarType.Float64);
        var current = matmul(logitWeights.to(ScalarType.Float64), a);
        var influence = current.clone();
        for (int i = 0; current.any().item<bool>(); i++)
        {
            if (i >= maxIterations) throw new SaeSharpException($"attribution graph: node influence did not converge after {maxIterations} steps (is the graph acyclic?)");
            current = matmul(current, a);
            influence.add_(current, TorchScalars.One);
        }
        return influence.MoveToOuterDisposeScope();
    }

    /// <summary>The score at which the scores at least as large hold <paramref name="threshold"/> of the total:
    /// circuit-tracer's <c>find_threshold</c>.</summary>
    private static double FindThreshold(double[] scores, double threshold)
    {
        var sorted = scores.OrderByDescending(s => s).ToArray();
        double total = sorted.Sum(), cum = 0;
        int index = 0;
        // searchsorted (left): the first index whose cumulative share is ≥ threshold.
        for (; index < sorted.Length; index++)
        {
            cum += sorted[index];
            if (cum / total >= threshold) break;
        }
        return sorted[Math.Min(index, sorted.Length - 1)];
    }

    /// <summary>
    /// circuit-tracer's <c>prune_graph</c> on an adjacency matrix [targets, sources] ordered [features, errors, tokens,
    /// logits]: node influence (<see cref="ComputeInfluence"/> of the row-normalised |A|), keep the nodes whose influence
    /// reaches the <paramref name="nodeThreshold"/> share (tokens and logits always), then the edges whose score (normalised
    /// weight × target's influence, logits weighted by their probability) reaches the <paramref name="edgeThreshold"/> share;
    /// then, until nothing changes, drop features and errors without a kept outgoing edge and features without a kept
    /// incoming one.
    /// </summary>
    public static GraphPruneResult Prune(Tensor adjacency, Tensor logitWeights, int nFeatures, int nTokens, int nLogits,
        double nodeThreshold = 0.8, double edgeThreshold = 0.98)
    {
        ArgumentNullException.ThrowIfNull(adjacency);
        ArgumentNullException.ThrowIfNull(logitWeights);
        CheckPruneThresholds(nodeThreshold, edgeThreshold);
        int n = (int)adjacency.shape[0];
        if (adjacency.dim() != 2 || adjacency.shape[1] != n || logitWeights.numel() != n)
            throw new SaeSharpException($"attribution graph: adjacency [{string.Join(", ", adjacency.shape)}] must be square and match the {logitWeights.numel()} logit weights");
        using var scope = NewDisposeScope();
        var w = logitWeights.to(ScalarType.Float64);
        var influenceT = ComputeInfluence(NormalizeMatrix(adjacency), w);
        var influence = influenceT.data<double>().ToArray();
        double nodeCut = FindThreshold(influence, nodeThreshold);
        var nodeMask = influence.Select(v => v >= nodeCut).ToArray();
        for (int i = n - nLogits - nTokens; i < n; i++) nodeMask[i] = true;

        var keep = tensor(nodeMask.Select(b => b ? 1.0 : 0.0).ToArray());
        var pruned = adjacency.to(ScalarType.Float64) * keep.unsqueeze(1) * keep.unsqueeze(0);
        var normalizedPruned = NormalizeMatrix(pruned);
        var prunedInfluence = ComputeInfluence(normalizedPruned, w).add(w, TorchScalars.One);
        var edgeScores = (normalizedPruned * prunedInfluence.unsqueeze(1)).contiguous();
        var scores = edgeScores.data<double>().ToArray();
        double edgeCut = FindThreshold(scores, edgeThreshold);
        var edgeMask = new bool[n, n];
        for (int t = 0; t < n; t++) for (int s = 0; s < n; s++) edgeMask[t, s] = scores[t * n + s] >= edgeCut;

        int notTokensOrLogits = n - nLogits - nTokens;
        while (true)
        {
            bool changed = false;
            for (int s = 0; s < notTokensOrLogits; s++)   // features and errors need a kept outgoing edge
            {
                if (!nodeMask[s]) continue;
                bool any = false;
                for (int t = 0; t < n && !any; t++) any = edgeMask[t, s];
                if (!any) { nodeMask[s] = false; changed = true; }
            }
            for (int t = 0; t < nFeatures; t++)            // features need a kept incoming edge
            {
                if (!nodeMask[t]) continue;
                bool any = false;
                for (int s = 0; s < n && !any; s++) any = edgeMask[t, s];
                if (!any) { nodeMask[t] = false; changed = true; }
            }
            if (!changed) break;
            for (int i = 0; i < n; i++)
            {
                if (nodeMask[i]) continue;
                for (int j = 0; j < n; j++) { edgeMask[i, j] = false; edgeMask[j, i] = false; }
            }
        }

        var order = Enumerable.Range(0, n).OrderByDescending(i => influence[i]).ToArray();
        double total = influence.Sum(), cum = 0;
        var cumulative = new double[n];
        foreach (int i in order) { cum += influence[i]; cumulative[i] = cum / total; }
        return new GraphPruneResult(nodeMask, edgeMask, cumulative, influence);
    }

    /// <summary>circuit-tracer's <c>compute_graph_scores</c> on an adjacency matrix ordered [features, errors, tokens, logits].</summary>
    public static (double Replacement, double Completeness) Scores(Tensor adjacency, Tensor logitWeights, int nFeatures, int nErrors, int nTokens)
    {
        ArgumentNullException.ThrowIfNull(adjacency);
        ArgumentNullException.ThrowIfNull(logitWeights);
        using var scope = NewDisposeScope();
        var w = logitWeights.to(ScalarType.Float64);
        var normalized = NormalizeMatrix(adjacency);
        var influence = ComputeInfluence(normalized, w);
        int errorEnd = nFeatures + nErrors, tokenEnd = errorEnd + nTokens;
        double tokenInfluence = influence[TensorIndex.Slice(errorEnd, tokenEnd)].sum().item<double>();
        double errorInfluence = influence[TensorIndex.Slice(nFeatures, errorEnd)].sum().item<double>();
        double replacement = tokenInfluence / (tokenInfluence + errorInfluence);
        var nonError = TorchScalars.OneMinus(normalized[TensorIndex.Colon, TensorIndex.Slice(nFeatures, errorEnd)].sum(-1));
        var output = influence.add(w, TorchScalars.One);
        double completeness = ((nonError * output).sum() / output.sum()).item<double>();
        return (replacement, completeness);
    }

    /// <summary>
    /// The pruned graph as circuit-tracer's <c>create_graph_files</c> writes it for its local viewer and Neuronpedia:
    /// <c>metadata</c> (slug, scan, transcoder_list, prompt_tokens, prompt, node_threshold, schema_version),
    /// <c>qParams</c>, <c>nodes</c> (node_id, feature, layer, ctx_idx, feature_type, token_prob, is_target_logit, run_idx,
    /// reverse_ctx_idx, jsNodeId, clerp, influence, activation) and <c>links</c> (source, target, weight). Nodes are the
    /// kept ones that a kept edge touches, plus every embedding and logit node. <paramref name="tokenText"/> gives a token's
    /// text (newlines, tabs and carriage returns shown as ⏎ → ↵, as circuit-tracer's <c>process_token</c>).
    /// </summary>
    public JsonObject ToJson(GraphPruneResult pruned, Func<long, string> tokenText, string prompt, string slug, string scan,
        double nodeThreshold = 0.8)
    {
        ArgumentNullException.ThrowIfNull(pruned);
        ArgumentNullException.ThrowIfNull(tokenText);
        string Token(long id) => tokenText(id).Replace("\n", "⏎", StringComparison.Ordinal).Replace("\t", "→", StringComparison.Ordinal)
            .Replace("\r", "↵", StringComparison.Ordinal);
        var nodes = new SortedDictionary<int, JsonObject>();
        for (int i = 0; i < NNodes; i++)
            if (pruned.NodeMask[i]) nodes[i] = Node(i, pruned.CumulativeScores[i], Token);
        var links = new JsonArray();
        var connected = new HashSet<int>();
        var a = AdjacencyMatrix.to(ScalarType.Float64).contiguous().data<double>().ToArray();
        // circuit-tracer walks edge_mask.nonzero(): targets (rows) in order, then sources.
        for (int t = 0; t < NNodes; t++)
            for (int s = 0; s < NNodes; s++)
            {
                if (!pruned.EdgeMask[t, s] || !nodes.ContainsKey(s) || !nodes.ContainsKey(t)) continue;
                links.Add(new JsonObject { ["source"] = NodeId(nodes[s]), ["target"] = NodeId(nodes[t]), ["weight"] = Finite(a[t * NNodes + s]) });
                connected.Add(s);
                connected.Add(t);
            }
        var used = new JsonArray();
        foreach (var (i, node) in nodes)
            if (connected.Contains(i) || (string?)node["feature_type"] is "embedding" or "logit") used.Add(node);
        return new JsonObject
        {
            ["metadata"] = new JsonObject
            {
                ["slug"] = slug, ["scan"] = scan, ["transcoder_list"] = new JsonArray(),
                ["prompt_tokens"] = new JsonArray(Tokens.Select(t => (JsonNode)Token(t)).ToArray()),
                ["prompt"] = prompt, ["node_threshold"] = nodeThreshold, ["schema_version"] = 1,
            },
            ["qParams"] = new JsonObject
            {
                ["pinnedIds"] = new JsonArray(), ["supernodes"] = new JsonArray(), ["linkType"] = "both", ["clickedId"] = "", ["sg_pos"] = "",
            },
            ["nodes"] = used,
            ["links"] = links,
        };

        static string NodeId(JsonObject node) => (string)node["node_id"]!;
    }

    /// <summary>
    /// Writes <paramref name="graphJson"/> (<see cref="ToJson"/>) to <paramref name="path"/> and adds its metadata to
    /// <c>graph-metadata.json</c> in the same folder (replacing a graph of the same slug), as circuit-tracer's
    /// <c>create_graph_files</c> and <c>add_graph_metadata</c> do for its local viewer.
    /// </summary>
    public static void WriteGraphFiles(string path, JsonObject graphJson)
    {
        ArgumentNullException.ThrowIfNull(path);
        ArgumentNullException.ThrowIfNull(graphJson);
        if (graphJson["metadata"] is not JsonObject meta || (string?)meta["slug"] is not string slug)
            throw new SaeSharpException("attribution graph JSON: no metadata.slug");
        // The name and the folder's list are checked before anything is written: a bad list loses no graph file.
        CheckGraphFolder(path, slug);
        var graphs = ReadGraphList(path);
        var options = new System.Text.Json.JsonSerializerOptions { WriteIndented = true };
        IO.AtomicFile.WriteAllText(path, graphJson.ToJsonString(options));
        var kept = new JsonArray();
        foreach (var g in graphs)
            if ((string?)g!["slug"] != slug) kept.Add(g.DeepClone());
        kept.Add(meta.DeepClone());
        IO.AtomicFile.WriteAllText(GraphMetadataPath(path), new JsonObject { ["graphs"] = kept }.ToJsonString(options));
    }

    /// <summary>Throws, naming the file, when <see cref="WriteGraphFiles"/> would write a graph circuit-tracer's viewer cannot
    /// open: <paramref name="path"/> not <c>{slug}.json</c> (the viewer loads <c>graph_data/{slug}.json</c>; the slug
    /// defaults to the file name), or a <c>graph-metadata.json</c> beside it that is not a list of graphs to add to (not
    /// JSON, no <c>graphs</c> list, an entry without a <c>slug</c>). A command checks this before its work.</summary>
    public static void CheckGraphFolder(string path, string? slug = null)
    {
        ArgumentNullException.ThrowIfNull(path);
        string name = Path.GetFileName(path);
        if (!name.EndsWith(".json", StringComparison.Ordinal) || name.Length == ".json".Length)
            throw new SaeSharpException($"{path}: circuit-tracer's viewer loads a graph from SLUG.json beside graph-metadata.json: give a .json file name");
        string stem = name[..^".json".Length];
        if (slug is not null && slug != stem)
            throw new SaeSharpException($"{path}: the slug '{slug}' is not the file name: circuit-tracer's viewer would look for {slug}.json; " +
                                        $"name the file {slug}.json or leave the slug as '{stem}'");
        ReadGraphList(path);
    }

    private static string GraphMetadataPath(string graphPath) =>
        Path.Combine(Path.GetDirectoryName(Path.GetFullPath(graphPath))!, "graph-metadata.json");

    /// <summary>The <c>graphs</c> of the <c>graph-metadata.json</c> beside <paramref name="graphPath"/> (empty when there is none).</summary>
    private static JsonArray ReadGraphList(string graphPath)
    {
        string metaPath = GraphMetadataPath(graphPath);
        if (!File.Exists(metaPath)) return [];
        JsonNode? old;
        try { old = JsonNode.Parse(File.ReadAllText(metaPath)); }
        catch (System.Text.Json.JsonException e) { throw new SaeSharpException($"{metaPath}: not JSON ({e.Message}); move it away to start a new one"); }
        if (old is not JsonObject { } root || root["graphs"] is not JsonArray existing)
            throw new SaeSharpException($"{metaPath}: no 'graphs' list; move it away to start a new one");
        for (int i = 0; i < existing.Count; i++)
            if (existing[i] is not JsonObject entry || entry["slug"] is not JsonValue slug || slug.GetValueKind() != System.Text.Json.JsonValueKind.String)
                throw new SaeSharpException($"{metaPath}: graphs[{i}] is not a graph's metadata (an object with a 'slug' string); move the file away to start a new one");
        return existing;
    }

    /// <summary>A JSON number, or null for a missing or non-finite value (an all-zero graph's influence shares are 0/0).</summary>
    private static JsonValue? Finite(double? v) => v is double d && double.IsFinite(d) ? JsonValue.Create(d) : null;

    /// <summary>Node <paramref name="i"/> in the viewer's form (circuit-tracer <c>graph_models.Node</c>).</summary>
    private JsonObject Node(int i, double influence, Func<long, string> token)
    {
        JsonObject Make(string id, long feature, string layer, int ctx, string type, string jsId, double? infl, double? act,
            double prob = 0, bool target = false, string clerp = "") => new()
        {
            ["node_id"] = id, ["feature"] = feature, ["layer"] = layer, ["ctx_idx"] = ctx, ["feature_type"] = type,
            ["token_prob"] = prob, ["is_target_logit"] = target, ["run_idx"] = 0, ["reverse_ctx_idx"] = 0, ["jsNodeId"] = jsId,
            ["clerp"] = clerp, ["influence"] = Finite(infl), ["activation"] = Finite(act),
        };
        if (i < NFeatures)
        {
            var f = ActiveFeatures[SelectedFeatures[i]];
            long cantor = (long)(f.Layer + f.Feature) * (f.Layer + f.Feature + 1) / 2 + f.Feature;
            return Make($"{f.Layer}_{f.Feature}_{f.Position}", cantor, $"{f.Layer}", f.Position, "cross layer transcoder",
                $"{f.Layer}_{f.Feature}-0", influence, f.Activation);
        }
        if (i < NFeatures + NErrors)
        {
            int layer = (i - NFeatures) / NPos, pos = (i - NFeatures) % NPos;
            return Make($"{layer}_-1_{pos}", -1, $"{layer}", pos, "mlp reconstruction error", $"{layer}_{pos}-0", influence, null);
        }
        if (i < NFeatures + NErrors + NPos)
        {
            int pos = i - NFeatures - NErrors;
            long vocab = Tokens[pos];
            return Make($"E_{vocab}_{pos}", pos, "E", pos, "embedding", $"E_{vocab}-{pos}", influence, null);
        }
        int k = i - NFeatures - NErrors - NPos;
        long id = LogitTokens[k];
        double p = LogitProbabilities[k];
        string layerName = $"{NLayers + 1}";
        return Make($"{layerName}_{id}_{NPos - 1}", id, layerName, NPos - 1, "logit", $"L_{id}-{NPos - 1}", null, null, p, k == 0,
            $"Output \"{LogitLabels?[k] ?? token(id)}\" (p={p.ToString("F3", System.Globalization.CultureInfo.InvariantCulture)})");
    }

    /// <summary>A readable label of node <paramref name="i"/>: <c>L1/7@3</c> (feature 7 of layer 1 at position 3),
    /// <c>err L1@3</c>, <c>emb@3</c>, <c>logit 42</c>, <c>target logit( Austin)-logit( Dallas)</c> (a custom target).</summary>
    public string NodeLabel(int i)
    {
        if (i < NFeatures) { var f = ActiveFeatures[SelectedFeatures[i]]; return $"L{f.Layer}/{f.Feature}@{f.Position}"; }
        if (i < NFeatures + NErrors) return $"err L{(i - NFeatures) / NPos}@{(i - NFeatures) % NPos}";
        if (i < NFeatures + NErrors + NPos) return $"emb@{i - NFeatures - NErrors}";
        int k = i - NFeatures - NErrors - NPos;
        return LogitLabels?[k] is string label ? $"target {label}" : $"logit {LogitTokens[k]}";
    }

    /// <inheritdoc/>
    public void Dispose() => AdjacencyMatrix.Dispose();

    /// <summary>The state of one <see cref="Build"/>: the clean run's nodes, the gradient run's live tensors, the row computation.</summary>
    private sealed class GraphBuilder : IDisposable
    {
        private readonly HookedTransformer _model;
        private readonly CrossLayerTranscoder _clt;
        private readonly Tensor _tokens;
        private readonly AttributionGraphOptions _o;
        private readonly IReadOnlyList<(string Name, Func<Tensor, Tensor?> Fn)> _modelHooks;
        private readonly IReadOnlyList<string> _inputs, _outputs;
        private readonly ProgressCounter _counter;
        private readonly int _l, _p, _d;
        private readonly ScalarType _vt;
        private readonly List<Tensor> _owned = [];

        // Clean run (no gradient), in _vt.
        private Tensor _errors = null!;     // [L, P, d]
        private Tensor _embed = null!;      // [P, d]
        private readonly List<GraphFeature> _active = [];
        private long[][] _layerPos = [], _layerFeat = [];   // per source layer: positions, features of its active features
        private int[] _layerStart = [];
        private Tensor[] _layerActs = [];

        // Gradient run.
        private Tensor[] _x = [];           // live input of each layer [R, P, d]
        private Tensor _norm = null!;       // live ln_final output [R, P, d]
        private Tensor _zEmbed = null!;     // zero leaves: their gradients are those at hook_embed and each output hook
        private Tensor[] _zOut = [];

        public GraphBuilder(HookedTransformer model, CrossLayerTranscoder clt, Tensor tokens, AttributionGraphOptions o,
            IReadOnlyList<(string Name, Func<Tensor, Tensor?> Fn)>? modelHooks, IProgress<WorkProgress>? progress)
        {
            _model = model;
            _clt = clt;
            _tokens = Own(tokens);
            _o = o;
            _modelHooks = modelHooks ?? [];
            (_inputs, _outputs) = clt.Hooks(model);
            _l = clt.Cfg.NLayers;
            _p = (int)tokens.shape[1];
            _d = model.Config.DModel;
            _vt = model.Config.Dtype == ScalarType.Float64 ? ScalarType.Float64 : ScalarType.Float32;
            _counter = new ProgressCounter(progress, "targets");
        }

        private Tensor Own(Tensor t)
        {
            var kept = t.DetachFromDisposeScope();
            _owned.Add(kept);
            return kept;
        }

        public AttributionGraph Run()
        {
            var logitsLast = Clean();
            var (logitIds, logitProbs, logitVecs, logitLabels) = _o.Targets is null ? SalientLogits(logitsLast) : GivenTargets(logitsLast, _o.Targets);
            int nActive = _active.Count, nLogits = logitIds.Length;
            int maxFeatures = Math.Min(_o.MaxFeatures ?? nActive, nActive);
            int rowsPerPass = Math.Max(1, Math.Min(_o.BatchSize, Math.Max(nLogits, maxFeatures)));
            _counter.Total = nLogits + maxFeatures;
            GradientRun(rowsPerPass);

            int logitOffset = nActive + (_l + 1) * _p, totalNodes = logitOffset + nLogits;
            using var edge = zeros(maxFeatures + nLogits, totalNodes, dtype: _vt);
            var rowToNode = new int[maxFeatures + nLogits];
            var probs = tensor(logitProbs);
            Own(probs);
            for (int i = 0; i < nLogits; i += rowsPerPass)
            {
                int m = Math.Min(rowsPerPass, nLogits - i);
                using var scope = NewDisposeScope();
                var rows = Rows(Enumerable.Repeat(_l, m).ToArray(), Enumerable.Repeat(_p - 1, m).ToArray(), logitVecs.narrow(0, i, m));
                edge.narrow(0, i, m).narrow(1, 0, logitOffset).copy_(rows);
                for (int k = 0; k < m; k++) rowToNode[i + k] = logitOffset + i + k;
                _counter.Add(m);
            }

            var encoder = EncoderVectors();
            var visited = new bool[nActive];
            int st = nLogits, nVisited = 0;
            while (nVisited < maxFeatures)
            {
                int[] pending;
                if (maxFeatures == nActive) pending = Enumerable.Range(0, nActive).ToArray();
                else
                {
                    using var scope = NewDisposeScope();
                    var infl = PartialInfluences(edge.narrow(0, 0, st), probs, rowToNode.AsSpan(0, st).ToArray()).data<double>().ToArray();
                    int queue = Math.Min(_o.UpdateInterval * rowsPerPass, maxFeatures - nVisited);
                    pending = Enumerable.Range(0, nActive).OrderByDescending(i => infl[i]).Where(i => !visited[i]).Take(queue).ToArray();
                }
                for (int b = 0; b < pending.Length; b += rowsPerPass)
                {
                    var batch = pending.Skip(b).Take(rowsPerPass).ToArray();
                    using var scope = NewDisposeScope();
                    var rows = Rows(batch.Select(i => _active[i].Layer).ToArray(), batch.Select(i => _active[i].Position).ToArray(),
                        encoder.index_select(0, tensor(batch.Select(i => (long)i).ToArray())));
                    edge.narrow(0, st, batch.Length).narrow(1, 0, logitOffset).copy_(rows);
                    for (int k = 0; k < batch.Length; k++) { rowToNode[st + k] = batch[k]; visited[batch[k]] = true; }
                    st += batch.Length;
                    nVisited += batch.Length;
                    _counter.Add(batch.Length);
                }
            }

            using var final = NewDisposeScope();
            var selected = Enumerable.Range(0, nActive).Where(i => visited[i]).ToArray();
            var colRead = tensor(selected.Select(i => (long)i).Concat(Enumerable.Range(nActive, totalNodes - nActive).Select(i => (long)i)).ToArray());
            var byNode = tensor(Enumerable.Range(0, rowToNode.Length).OrderBy(r => rowToNode[r]).Select(r => (long)r).ToArray());
            var sorted = edge.index_select(1, colRead).index_select(0, byNode);
            int n = (int)colRead.shape[0];
            var full = zeros(n, n, dtype: _vt);
            full.narrow(0, 0, maxFeatures).copy_(sorted.narrow(0, 0, maxFeatures));
            full.narrow(0, n - nLogits, nLogits).copy_(sorted.narrow(0, maxFeatures, nLogits));
            return new AttributionGraph
            {
                Tokens = _tokens[0].data<long>().ToArray(), ActiveFeatures = _active, SelectedFeatures = selected,
                LogitTokens = logitIds, LogitProbabilities = logitProbs, LogitLabels = logitLabels, AdjacencyMatrix = full.DetachFromDisposeScope(), NLayers = _l,
            };
        }

        /// <summary>The clean run: features, error nodes and embeddings; returns the last position's logits (float64).</summary>
        private Tensor Clean()
        {
            using var scope = NewDisposeScope();
            using var _ = no_grad();
            var x = new Tensor?[_l];
            var y = new Tensor?[_l];
            Tensor? embed = null;
            var hooks = new List<(string, Func<Tensor, Tensor?>)>(_modelHooks)
            {
                (HookPoints.Embed, e => { embed = e.detach().clone().DetachFromDisposeScope(); return null; }),
            };
            for (int l = 0; l < _l; l++)
            {
                int layer = l;
                hooks.Add((_inputs[l], t => { x[layer] = t.detach().clone().DetachFromDisposeScope(); return null; }));
                hooks.Add((_outputs[l], t => { y[layer] = t.detach().clone().DetachFromDisposeScope(); return null; }));
            }
            try
            {
                return CleanNodes(_model.Run(_tokens, new RunOptions { Hooks = hooks }).Logits!, x, y, embed)
                    .MoveToOuterDisposeScope();
            }
            finally
            {
                foreach (var t in x.Concat(y).Append(embed)) t?.Dispose();
            }
        }

        private Tensor CleanNodes(Tensor logits, Tensor?[] x, Tensor?[] y, Tensor? embed)
        {
            for (int l = 0; l < _l; l++)
                if (x[l] is null || y[l] is null) throw new SaeSharpException($"cross-layer transcoder layer {l}: hook '{_inputs[l]}' or '{_outputs[l]}' did not fire");
            if (embed is null) throw new SaeSharpException($"attribution graph: the model's {HookPoints.Embed} did not fire");
            var feats = new List<Tensor>();
            var errors = new List<Tensor>();
            for (int l = 0; l < _l; l++)
            {
                var xl = x[l]!.reshape(_p, _d);
                feats.Add(_clt.EncodeLayer(xl, l));
                var recon = _clt.DecodeLayer(feats, l, xl);
                errors.Add(y[l]!.reshape(_p, _d).to(recon.dtype) - recon);
            }
            var err = stack(errors, 0).to(_vt);
            if (_o.ZeroBos)
            {
                err[TensorIndex.Colon, 0].fill_(TorchScalars.Of(0.0));
                foreach (var f in feats) f[0].fill_(TorchScalars.Of(0.0));
            }
            _errors = Own(err.clone());
            _embed = Own(embed.reshape(_p, _d).to(_vt).clone());
            _layerPos = new long[_l][];
            _layerFeat = new long[_l][];
            _layerStart = new int[_l];
            _layerActs = new Tensor[_l];
            for (int l = 0; l < _l; l++)
            {
                var f = feats[l].to(ScalarType.Float64);
                var nz = f.nonzero();                     // [n, 2] (position, feature), row-major: circuit-tracer's order
                var idx = nz.data<long>().ToArray();
                int count = (int)nz.shape[0];
                var acts = count == 0 ? Array.Empty<double>() : f.index(new TensorIndex[] { TensorIndex.Tensor(nz[TensorIndex.Colon, 0]), TensorIndex.Tensor(nz[TensorIndex.Colon, 1]) }).data<double>().ToArray();
                _layerStart[l] = _active.Count;
                _layerPos[l] = new long[count];
                _layerFeat[l] = new long[count];
                for (int k = 0; k < count; k++)
                {
                    _layerPos[l][k] = idx[2 * k];
                    _layerFeat[l][k] = idx[2 * k + 1];
                    _active.Add(new GraphFeature(l, (int)idx[2 * k], (int)idx[2 * k + 1], acts[k]));
                }
                _layerActs[l] = Own(tensor(acts).to(_vt));
            }
            return logits[0, -1].to(ScalarType.Float64).clone();
        }

        /// <summary>circuit-tracer's <c>compute_salient_logits</c>: the top tokens until their cumulative probability
        /// reaches the option's, and their unembedding rows minus the mean row (the centred logit's direction).</summary>
        private (long[] Ids, double[] Probs, Tensor Vecs, string?[]? Labels) SalientLogits(Tensor logitsLast)
        {
            using var scope = NewDisposeScope();
            using var logitsOwned = logitsLast;
            var probs = softmax(logitsLast, 0);
            var (topP, topIdx) = topk(probs, Math.Min(_o.MaxLogits, (int)probs.shape[0]));
            var p = topP.data<double>().ToArray();
            double cum = 0;
            int below = 0;
            foreach (var v in p) { cum += v; if (cum < _o.LogitProbability) below++; else break; }
            int cutoff = Math.Min(below + 1, p.Length);
            var ids = topIdx.data<long>().Take(cutoff).ToArray();
            using var wu = _model.UnembedWeight();
            var w = wu.to(_vt);
            var vecs = w.index_select(0, tensor(ids)) - w.mean([0L], keepdim: true);
            return (ids, p.Take(cutoff).ToArray(), Own(vecs), null);
        }

        /// <summary>circuit-tracer's <c>AttributionTargets</c> of a target list: a token's probability and unembedding row
        /// minus the mean row; a custom target's weight and vector as given; a difference's |p(A) − p(B)| (0.5 below 1e-6)
        /// and W_U[A] − W_U[B]. Custom and difference targets get the virtual index d_vocab + their place in the list.</summary>
        private (long[] Ids, double[] Probs, Tensor Vecs, string?[] Labels) GivenTargets(Tensor logitsLast, IReadOnlyList<AttributionTarget> targets)
        {
            using var scope = NewDisposeScope();
            using var logitsOwned = logitsLast;
            long vocab = logitsLast.shape[0];
            var probs = softmax(logitsLast, 0).data<double>().ToArray();
            using var wu = _model.UnembedWeight();
            var w = wu.to(_vt);
            var mean = w.mean([0L]);
            int n = targets.Count;
            var ids = new long[n];
            var p = new double[n];
            var labels = new string?[n];
            var vecs = new List<Tensor>();
            void CheckId(long id, AttributionTarget t)
            {
                if (id < 0 || id >= vocab)
                    throw new SaeSharpException($"attribution target {t.Label ?? id.ToString(System.Globalization.CultureInfo.InvariantCulture)}: token {id} is outside the vocabulary 0..{vocab - 1}");
            }
            for (int k = 0; k < n; k++)
            {
                var t = targets[k];
                switch (t.Kind)
                {
                    case AttributionTargetKind.Token:
                        CheckId(t.TokenId, t);
                        ids[k] = t.TokenId;
                        p[k] = probs[t.TokenId];
                        vecs.Add(w[t.TokenId] - mean);
                        break;
                    case AttributionTargetKind.LogitDifference:
                        CheckId(t.TokenId, t);
                        CheckId(t.OtherTokenId, t);
                        ids[k] = vocab + k;
                        double diff = Math.Abs(probs[t.TokenId] - probs[t.OtherTokenId]);
                        p[k] = diff < 1e-6 ? 0.5 : diff;
                        labels[k] = t.Label;
                        vecs.Add(w[t.TokenId] - w[t.OtherTokenId]);
                        break;
                    default:
                        ids[k] = vocab + k;
                        p[k] = t.Probability;
                        labels[k] = t.Label;
                        vecs.Add(tensor(t.Vector!.ToArray()).to(_vt));
                        break;
                }
            }
            return (ids, p, Own(stack(vecs, 0)), labels);
        }

        /// <summary>Each active feature's encoder row [n_active, d] (its pre-activation minus b_enc is x·row).</summary>
        private Tensor EncoderVectors()
        {
            using var scope = NewDisposeScope();
            var rows = Enumerable.Range(0, _l).Where(l => _layerFeat[l].Length > 0)
                .Select(l => _clt.EncoderRows(l, tensor(_layerFeat[l])).to(_vt)).ToList();
            var all = rows.Count == 0 ? zeros(0, _d, dtype: _vt) : cat(rows, 0);
            return Own(all);
        }

        /// <summary>The gradient run on <paramref name="rows"/> copies of the prompt: frozen patterns and norm scales, each
        /// MLP output = skip + (output − skip) detached, plus a zero leaf whose gradient is the output's; hook_embed plus a zero leaf.</summary>
        private void GradientRun(int rows)
        {
            var dtype = _model.Config.Dtype;
            _zEmbed = Own(zeros(rows, _p, _d, dtype: dtype).requires_grad_(true));
            _zOut = Enumerable.Range(0, _l).Select(_ => Own(zeros(rows, _p, _d, dtype: dtype).requires_grad_(true))).ToArray();
            _x = new Tensor[_l];
            var hooks = new List<(string, Func<Tensor, Tensor?>)>(_modelHooks)
            {
                (HookPoints.Embed, e => e.add(_zEmbed.view(e.shape).to(e.dtype), TorchScalars.One)),
            };
            for (int l = 0; l < _l; l++)
            {
                int layer = l;
                hooks.Add((_inputs[l], t => { _x[layer] = Own(t.alias()); return null; }));
                hooks.Add((_outputs[l], y =>
                {
                    var skip = _clt.Skip(_x[layer], layer)?.to(y.dtype).view(y.shape);
                    var frozen = skip is null ? y.detach() : skip.add(y.sub(skip).detach(), TorchScalars.One);
                    return frozen.add(_zOut[layer].view(y.shape).to(y.dtype), TorchScalars.One);
                }));
            }
            using var scope = NewDisposeScope();
            var expanded = _tokens.expand(rows, _p).contiguous();
            var norm = _model.Run(expanded, new RunOptions { Grad = true, Hooks = hooks, FreezeAttentionAndNorms = true, ReturnNormalized = true }).Logits!;
            _norm = Own(norm.alias());
        }

        /// <summary>
        /// Attribution rows of targets (layer, position, vector) [m ≤ rows of the gradient run]: injects each vector at its
        /// layer's input (layer n_layers: the final norm's output) and position in its own copy of the prompt, one backward,
        /// then A[t, s] for every active feature, error node and token embedding: [m, n_active + (n_layers + 1)·pos].
        /// </summary>
        private Tensor Rows(int[] layers, int[] positions, Tensor vecs)
        {
            int m = layers.Length;
            using var scope = NewDisposeScope();
            Tensor? s = null;
            foreach (int layer in layers.Distinct())
            {
                var rowsOf = Enumerable.Range(0, m).Where(r => layers[r] == layer).ToArray();
                var src = layer == _l ? _norm : _x[layer];
                var rowT = tensor(rowsOf.Select(r => (long)r).ToArray());
                var sel = src.index(new TensorIndex[] { TensorIndex.Tensor(rowT), TensorIndex.Tensor(tensor(rowsOf.Select(r => (long)positions[r]).ToArray())) });
                var term = (sel.to(_vt) * vecs.index_select(0, rowT)).sum();
                s = s is null ? term : s.add(term, TorchScalars.One);
            }
            s!.backward(retain_graph: true);
            Tensor Grad(Tensor leaf) => leaf.grad is { } g ? g.narrow(0, 0, m).to(_vt).clone() : zeros(m, _p, _d, dtype: _vt);
            var gOut = _zOut.Select(Grad).ToArray();
            var gEmbed = Grad(_zEmbed);
            foreach (var leaf in _zOut.Append(_zEmbed)) leaf.grad?.fill_(TorchScalars.Of(0.0));

            var parts = new List<Tensor>();
            long chunk = Math.Max(1, (1L << 24) / ((long)m * _d));
            for (int i = 0; i < _l; i++)
            {
                int n = _layerFeat[i].Length;
                if (n == 0) continue;
                var acc = zeros(m, n, dtype: _vt);
                for (long c0 = 0; c0 < n; c0 += chunk)
                {
                    int c = (int)Math.Min(chunk, n - c0);
                    var pos = tensor(_layerPos[i].AsSpan((int)c0, c).ToArray());
                    var feat = tensor(_layerFeat[i].AsSpan((int)c0, c).ToArray());
                    var part = acc.narrow(1, c0, c);
                    for (int j = i; j <= _clt.LastOutputLayer(i); j++)
                        part.add_((gOut[j].index_select(1, pos) * _clt.DecoderRows(i, j, feat).to(_vt).unsqueeze(0)).sum(-1), TorchScalars.One);
                }
                parts.Add(acc * _layerActs[i].unsqueeze(0));
            }
            for (int l = 0; l < _l; l++) parts.Add((gOut[l] * _errors[l].unsqueeze(0)).sum(-1));
            parts.Add((gEmbed * _embed.unsqueeze(0)).sum(-1));
            return cat(parts, 1).cpu().MoveToOuterDisposeScope();
        }

        /// <summary>circuit-tracer's <c>compute_partial_influences</c>: influence of every node on the logits through the
        /// rows computed so far (<paramref name="rowToNode"/>: each row's node).</summary>
        private static Tensor PartialInfluences(Tensor edge, Tensor logitProbs, int[] rowToNode)
        {
            using var scope = NewDisposeScope();
            var a = edge.to(ScalarType.Float64).abs();
            var normalized = a / a.sum(1, keepdim: true).clamp_min(TorchScalars.Of(1e-8));
            long cols = edge.shape[1];
            var influences = zeros(cols, dtype: ScalarType.Float64);
            var prod = zeros(cols, dtype: ScalarType.Float64);
            prod.narrow(0, cols - logitProbs.shape[0], logitProbs.shape[0]).copy_(logitProbs);
            var index = tensor(rowToNode.Select(i => (long)i).ToArray());
            for (int it = 0; ; it++)
            {
                if (it >= 128) throw new SaeSharpException("attribution graph: feature influence did not converge");
                prod = matmul(prod.index_select(0, index), normalized);
                if (!prod.any().item<bool>()) break;
                influences.add_(prod, TorchScalars.One);
            }
            return influences.MoveToOuterDisposeScope();
        }

        public void Dispose()
        {
            foreach (var t in _owned) t.Dispose();
            _owned.Clear();
        }
    }
}
