using System.Text.Json;
using System.Text.Json.Nodes;
using SaeSharp.Activations;
using SaeSharp.Corpus;
using SaeSharp.Hooks;
using SaeSharp.Interop;
using SaeSharp.Models;
using SaeSharp.Saes;
using SaeSharp.Tokenizers;
using static TorchSharp.torch;

namespace SaeSharp.Analysis;

/// <summary>Options of <see cref="LabelScoring.Run(Sae, HookedTransformer, IReadOnlyList{ValueTuple{string, Func{Tensor, Tensor}}}, ITextTokenizer, string, LabelScoringOptions)"/> (<c>sae score-labels</c>).</summary>
public sealed record LabelScoringOptions
{
    /// <summary>Labelled tokens to read (BOS positions are not counted); at an MoE expert's hook only those routed to the
    /// expert are scored.</summary>
    public long Tokens { get; init; } = 20_000;
    /// <summary>Tokens per window; null: the SAE's context_size, else 128.</summary>
    public int? ContextSize { get; init; }
    /// <summary>Hook whose dimensions are the "neurons" compared with the features; null: the SAE's own hook.</summary>
    public string? NeuronHook { get; init; }
    /// <summary>Tokenizer folder; null: the model folder.</summary>
    public string? TokenizerPath { get; init; }
    /// <summary>Context windows per model run.</summary>
    public int BatchSize { get; init; } = 8;
    /// <summary>How each unit is scored against a label (minimum support, candidate thresholds, signs).</summary>
    public LabelScorerOptions Scorer { get; init; } = new();
    /// <summary>Tokens run through the model, after each batch.</summary>
    public IProgress<WorkProgress>? Progress { get; init; }
}

/// <summary>Label scores of an SAE's features and of the model's neurons at a hook, on the same tokens.</summary>
public sealed record LabelScoringReport(string Hook, string NeuronHook, long Tokens, IReadOnlyList<string> Labels,
    IReadOnlyDictionary<string, long> LabelCounts, IReadOnlyList<UnitLabelScore> Features, IReadOnlyList<UnitLabelScore> Neurons,
    LabelScoreSummary FeatureSummary, LabelScoreSummary NeuronSummary)
{
    /// <summary>The best feature of each label that is some feature's best label, best F1 first ("feature 117 ≈ cat:colour").</summary>
    public IEnumerable<UnitLabelScore> BestFeaturePerLabel() =>
        Features.Where(f => f.Best is not null).GroupBy(f => f.Best!.Label).Select(g => g.MaxBy(f => f.Best!.F1)!).OrderByDescending(f => f.Best!.F1);

    /// <summary>Writes the report as JSON (summary, then every unit's best label).</summary>
    public void WriteJson(string path)
    {
        static JsonObject Unit(UnitLabelScore s) => new()
        {
            ["index"] = s.Index, ["alive"] = s.Alive, ["fire_rate"] = s.FireRate,
            ["best_label"] = s.Best?.Label, ["f1"] = s.Best?.F1, ["precision"] = s.Best?.Precision, ["recall"] = s.Best?.Recall,
            ["threshold"] = s.Best?.Threshold, ["support"] = s.Best?.Support, ["negated"] = s.Best?.Negated,
        };
        static JsonObject Summary(LabelScoreSummary s) => new()
        {
            ["units"] = s.Units, ["alive"] = s.Alive, ["share_f1_at_least_0_8"] = s.ShareF1AtLeast08, ["share_f1_at_least_0_5"] = s.ShareF1AtLeast05,
            ["mean_best_f1"] = s.MeanBestF1, ["labels_covered_f1_0_8"] = s.LabelsCovered, ["labels_scored"] = s.LabelsScored,
        };
        var root = new JsonObject
        {
            ["hook"] = Hook, ["neuron_hook"] = NeuronHook, ["tokens"] = Tokens,
            ["features_summary"] = Summary(FeatureSummary), ["neurons_summary"] = Summary(NeuronSummary),
            ["label_counts"] = new JsonObject(LabelCounts.Select(kv => KeyValuePair.Create(kv.Key, (JsonNode?)kv.Value))),
            ["features"] = new JsonArray(Features.Select(s => (JsonNode)Unit(s)).ToArray()),
            ["neurons"] = new JsonArray(Neurons.Select(s => (JsonNode)Unit(s)).ToArray()),
        };
        var dir = Path.GetDirectoryName(Path.GetFullPath(path));
        if (dir is not null) Directory.CreateDirectory(dir);
        IO.AtomicFile.WriteAllText(path, root.ToJsonString(new JsonSerializerOptions { WriteIndented = true }));
    }
}

/// <summary>
/// <c>sae score-labels</c>: runs the model on a labelled corpus, encodes the hook's activations with the SAE, and scores
/// every feature and every neuron against the token labels with <see cref="LabelScorer"/> (windows alternate between
/// the fitting and the evaluation half). At an MoE expert's hook the scored tokens are those routed to the expert
/// (<see cref="ModelActivationHarvester.KeepRouted"/>), as <c>sae features</c> counts them.
/// </summary>
public static class LabelScoring
{
    /// <summary>Scores an SAE attached at its cfg's hook of <paramref name="model"/> (with the model's processing hooks).</summary>
    public static LabelScoringReport Run(Sae sae, HookedTransformer model, IReadOnlyList<(string Name, Func<Tensor, Tensor?> Fn)>? modelHooks,
        ITextTokenizer tokenizer, string datasetPath, LabelScoringOptions options)
    {
        using var h = Harvest(sae, model, modelHooks, tokenizer, datasetPath, options);
        int nTok = h.TokenLabels.Count;
        var labelNames = h.LabelNames;
        var features = LabelScorer.Score(SparseColumns.FromRows(h.Features), h.TokenLabels, labelNames, h.Fit, options.Scorer);
        float[] neuronActs;
        using (var scope = NewDisposeScope()) neuronActs = h.Neurons.t().contiguous().data<float>().ToArray(); // unit-major [d, n]: small
        var neurons = LabelScorer.Score(neuronActs, (int)h.Neurons.shape[1], nTok, h.TokenLabels, labelNames, h.Fit, options.Scorer with { BothSigns = true });
        var counts = new long[labelNames.Count];
        foreach (var ls in h.TokenLabels) foreach (int l in ls) counts[l]++;
        int scored = LabelScorer.EligibleLabels(h.TokenLabels, labelNames.Count, h.Fit, options.Scorer.MinSupport).Length;
        return new LabelScoringReport(h.Hook, h.NeuronHook, nTok, labelNames,
            labelNames.Select((l, i) => KeyValuePair.Create(l, counts[i])).OrderByDescending(kv => kv.Value).ToDictionary(),
            features, neurons, LabelScorer.Summarise(features, scored), LabelScorer.Summarise(neurons, scored));
    }

    /// <summary>Runs the model over the labelled windows and keeps, for every labelled token (routed to the expert at an
    /// MoE expert's hook), the SAE's feature activations (their non-zeros, listed batch by batch: never a dense
    /// [tokens, d_sae] copy), the neuron hook's activations, its label ids and its half (even windows fit, odd windows
    /// evaluate).</summary>
    internal static LabelledActivations Harvest(Sae sae, HookedTransformer model, IReadOnlyList<(string Name, Func<Tensor, Tensor?> Fn)>? modelHooks,
        ITextTokenizer tokenizer, string datasetPath, LabelScoringOptions options) =>
        HarvestHooks([sae], model, modelHooks, tokenizer, datasetPath, options)[0].Acts;

    /// <summary><see cref="Harvest(Sae, HookedTransformer, IReadOnlyList{ValueTuple{string, Func{Tensor, Tensor}}}, ITextTokenizer, string, LabelScoringOptions)"/>
    /// for several SAEs, at one hook or several (<see cref="ProbeSaes.HookGroups"/>), in one pass of the model capturing
    /// every hook: per hook the activations, labels and halves are kept once, each of its SAEs' features
    /// (<see cref="LabelledActivations.PerSae"/>, in the group's order) beside them; <paramref name="names"/> name the SAEs
    /// in errors; with <paramref name="artifacts"/> each hook's activations of the windows are kept there, or read from
    /// there (<see cref="ProbeArtifacts"/>; the model runs only when a hook's file is missing).</summary>
    internal static IReadOnlyList<(ProbeSaes.HookGroup Group, LabelledActivations Acts)> HarvestHooks(IReadOnlyList<Sae> saes, HookedTransformer model,
        IReadOnlyList<(string Name, Func<Tensor, Tensor?> Fn)>? modelHooks, ITextTokenizer tokenizer, string datasetPath, LabelScoringOptions options,
        IReadOnlyList<string>? names = null, ProbeArtifacts? artifacts = null)
    {
        var groups = ProbeSaes.HookGroups(model, saes, names);
        if (options.NeuronHook is not null && groups.Count > 1)
            throw new SaeSharpException($"a neuron hook ({options.NeuronHook}) is for SAEs at one hook; these read {string.Join(", ", groups.Select(g => g.Site))}");
        int ctx = ProbeSaes.SharedContextSize(options.ContextSize, saes, names);
        var harvests = groups.Select(g => new HookHarvest(g, model.HookPoints.Resolve(options.NeuronHook ?? g.Hook), model.HookPoints)).ToList();
        // Refused before the data is read or anything written: an artifact file holds one hook's activations at every position.
        foreach (var h in harvests)
            if (artifacts is not null && h.RoutedOnly)
                throw new SaeSharpException($"--artifacts: {h.Group.Hook} is an MoE expert's hook, whose rows are the tokens routed to the expert, " +
                    "which an artifact file does not record; probe it without --artifacts (hook_mlp_out and the layer's other hooks take --artifacts)");
            else if (artifacts is not null && h.NeuronHook != h.Group.Hook)
                throw new SaeSharpException($"--artifacts keeps the activations of the SAE's hook ({h.Group.Hook}) only: not with another neuron hook ({h.NeuronHook})");
        var (windows, labels, labelNames) = LabelledWindows(datasetPath, tokenizer, ctx, options.Tokens);
        int? stopAt = ProbeSaes.StopAtLayer(model, harvests.SelectMany(h => new[] { h.Group.Hook, h.NeuronHook }));
        List<string> cacheNames = [.. harvests.SelectMany(h => h.CacheNames).Distinct()];
        var sources = new List<HookActivations>();
        var progress = new ProgressCounter(options.Progress, "tokens", windows.Sum(w => (long)w.Length));
        try
        {
            foreach (var h in harvests) sources.Add(HookActivations.For(artifacts, "token windows", h.Group.Site, windows, options.BatchSize, model.Device));
            using var _ = no_grad();
            for (int start = 0; start < windows.Count; start += options.BatchSize)
            {
                using var scope = NewDisposeScope();
                var batch = Enumerable.Range(start, Math.Min(options.BatchSize, windows.Count - start)).GroupBy(w => windows[w].Length);
                foreach (var group in batch)
                {
                    var idx = group.ToArray();
                    var tokens = tensor(idx.SelectMany(w => windows[w]).ToArray()).view(idx.Length, -1);
                    // One model run per batch, for every hook whose activations are not read from a file.
                    ActivationCache? cache = null;
                    try
                    {
                        for (int g = 0; g < harvests.Count; g++)
                        {
                            var h = harvests[g];
                            var x = sources[g].Get(idx, tokens.shape[1], () =>
                            {
                                cache ??= model.Run(tokens, new RunOptions { CacheNames = cacheNames, Hooks = modelHooks, StopAtLayer = stopAt }).Cache;
                                return h.Group.Read(cache![h.Group.Hook]);
                            });
                            h.Add(saes, x, cache, idx, labels, model.HookPoints);
                        }
                    }
                    finally
                    {
                        cache?.Dispose();
                    }
                    progress.Add(idx.Sum(w => (long)windows[w].Length));
                }
            }
            foreach (var s in sources) s.Complete();
            var finished = new List<(ProbeSaes.HookGroup Group, LabelledActivations Acts)>();
            try
            {
                foreach (var h in harvests) finished.Add((h.Group, h.Finish(datasetPath, windows.Sum(w => (long)w.Length), labelNames)));
                return finished;
            }
            catch
            {
                foreach (var (_, acts) in finished) acts.Dispose(); // a later hook's error: the earlier hooks' tensors are not returned
                throw;
            }
        }
        finally
        {
            foreach (var s in sources) s.Dispose();
            foreach (var h in harvests) h.Dispose();
        }
    }

    /// <summary>What <see cref="HarvestHooks"/> keeps of one hook's SAEs while the windows run: the labelled tokens' features
    /// per SAE, neuron activations, label ids and halves.</summary>
    private sealed class HookHarvest(ProbeSaes.HookGroup group, string neuronHook, HookPoints hookPoints) : IDisposable
    {
        public ProbeSaes.HookGroup Group { get; } = group;
        public string NeuronHook { get; } = neuronHook;
        // At an MoE expert's hook only the tokens routed to that expert are rows (TransformerLens computes the expert on
        // those only; the others hold zeros): features and neurons are scored on the tokens that are rows of both hooks.
        public List<string> CacheNames { get; } =
            [.. new[] { group.Hook, neuronHook }.Distinct(), .. ModelActivationHarvester.RoutingHooks(hookPoints, [.. new[] { group.Hook, neuronHook }.Distinct()])];
        public bool RoutedOnly => CacheNames.Count > (Group.Hook == NeuronHook ? 1 : 2);
        private readonly List<SparseRows>[] _featRows = [.. group.Saes.Select(_ => new List<SparseRows>())];
        private readonly List<Tensor> _neuronRows = [];
        private readonly List<int[]> _tokenLabels = [];
        private readonly List<bool> _fit = [];

        /// <summary>Keeps the labelled tokens of the windows <paramref name="idx"/>: <paramref name="x"/> the site's activations (a head's slice of a per-head hook),
        /// <paramref name="cache"/> the model's run (null when every hook came from a file).</summary>
        public void Add(IReadOnlyList<Sae> saes, Tensor x, ActivationCache? cache, int[] idx, List<int[]?[]> labels, HookPoints hookPoints)
        {
            string hook = Group.Hook;
            var n = NeuronHook == hook ? x : cache![NeuronHook];
            if (x.dim() != 3) throw new SaeSharpException($"hook '{Group.Site}' gives [{string.Join(", ", x.shape)}]; score-labels needs [batch, pos, d]");
            if (n.dim() != 3) throw new SaeSharpException($"hook '{NeuronHook}' gives [{string.Join(", ", n.shape)}]; score-labels needs [batch, pos, d]");
            var keep = new List<long>();
            long s = x.shape[1];
            var all = ones(idx.Length, s, ScalarType.Bool);
            var rows = (RoutedOnly ? ModelActivationHarvester.KeepRouted(all, hookPoints, [hook, NeuronHook], cache!) : all).reshape(-1).data<bool>().ToArray();
            for (int bi = 0; bi < idx.Length; bi++)
                for (int p = 0; p < s; p++)
                    if (labels[idx[bi]][p] is { } ls && rows[bi * s + p])
                    {
                        keep.Add(bi * s + p);
                        _tokenLabels.Add(ls);
                        _fit.Add(idx[bi] % 2 == 0);
                    }
            var sel = tensor(keep.ToArray());
            for (int si = 0; si < Group.Saes.Length; si++)
            {
                var f = saes[Group.Saes[si]].Run(x).FeatureActs;
                _featRows[si].Add(SparseRows.FromDense(f.reshape(-1, f.shape[^1]).index_select(0, sel)));
            }
            _neuronRows.Add(n.reshape(-1, n.shape[^1]).index_select(0, sel).to(ScalarType.Float32).cpu().DetachFromDisposeScope());
        }

        /// <summary>The hook's labelled activations, after every window ran.</summary>
        public LabelledActivations Finish(string datasetPath, long tokensRead, List<string> labelNames)
        {
            if (_tokenLabels.Count == 0)
                throw new SaeSharpException(RoutedOnly ? $"{datasetPath}: no labelled token of the {tokensRead} read was routed to the expert of {Group.Hook}" +
                                                         (NeuronHook == Group.Hook ? "" : $" and {NeuronHook}") + "; give more tokens (--tokens)"
                                                       : $"{datasetPath}: no labelled tokens");
            using var join = NewDisposeScope();
            return new LabelledActivations(Group.Site, NeuronHook == Group.Hook ? Group.Site : NeuronHook, [.. _featRows.Select(rows => SparseRows.Concat(rows, rows[0].Columns))],
                cat(_neuronRows, 0).DetachFromDisposeScope(), _tokenLabels, [.. _fit], labelNames);
        }

        public void Dispose()
        {
            foreach (var t in _neuronRows) t.Dispose();
            _neuronRows.Clear();
        }
    }

    /// <summary>
    /// Windows of <paramref name="ctx"/> tokens over the labelled documents (each preceded by BOS, or EOS for a tokenizer without
    /// BOS (<see cref="PromptEncoding.PrependedBosId"/>); a window that does not start with it gets one, as SAELens does), with each position's label ids (null at BOS), until
    /// <paramref name="maxTokens"/> labelled tokens. A document whose labels do not align with its tokens is an error.
    /// </summary>
    internal static (List<long[]> Windows, List<int[]?[]> Labels, List<string> LabelNames) LabelledWindows(string datasetPath,
        ITextTokenizer tokenizer, int ctx, long maxTokens)
    {
        if (ctx < 2) throw new SaeSharpException($"context size must be at least 2, got {ctx}");
        int bos = tokenizer.PrependedBosId();   // Qwen's tokenizers (no BOS): its EOS, as TransformerLens
        var names = new List<string>();
        var index = new Dictionary<string, int>(StringComparer.Ordinal);
        var windows = new List<long[]>();
        var labels = new List<int[]?[]>();
        var curIds = new List<long> { bos };
        var curLabels = new List<int[]?> { null };
        long taken = 0;
        int docNo = 0;
        void Emit()
        {
            windows.Add(curIds.ToArray());
            labels.Add(curLabels.ToArray());
            curIds.Clear();
            curLabels.Clear();
            curIds.Add(bos);
            curLabels.Add(null);
        }
        foreach (var row in LabelledCorpus.Read(datasetPath))
        {
            docNo++;
            var ids = tokenizer.Encode(row.Text);
            if (ids.Length != row.Labels.Count)
                throw new SaeSharpException($"{datasetPath} document {docNo}: {row.Labels.Count} label lists but the tokenizer splits its text into {ids.Length} tokens");
            if (curIds.Count > 1)
            {
                curIds.Add(bos);
                curLabels.Add(null);
                if (curIds.Count == ctx) Emit();
            }
            for (int i = 0; i < ids.Length && taken < maxTokens; i++)
            {
                curIds.Add(ids[i]);
                curLabels.Add(row.Labels[i].Select(l =>
                {
                    if (!index.TryGetValue(l, out int li)) { li = names.Count; index[l] = li; names.Add(l); }
                    return li;
                }).Distinct().ToArray());
                taken++;
                if (curIds.Count == ctx) Emit();
            }
            if (taken >= maxTokens) break;
        }
        if (curIds.Count > 1) windows.Add(curIds.ToArray());
        if (curLabels.Count > 1) labels.Add(curLabels.ToArray());
        return (windows, labels, names);
    }
}

/// <summary>Activations of every labelled token read by <see cref="LabelScoring.Harvest(Sae, HookedTransformer, IReadOnlyList{ValueTuple{string, Func{Tensor, Tensor}}}, ITextTokenizer, string, LabelScoringOptions)"/>:
/// each SAE's features [n, d_sae] as non-zeros (<see cref="PerSae"/>, one per SAE harvested) and the neuron hook's
/// activations [n, d] (float32, CPU), each token's label ids and half.</summary>
internal sealed record LabelledActivations(string Hook, string NeuronHook, IReadOnlyList<SparseRows> PerSae, Tensor Neurons, List<int[]> TokenLabels, bool[] Fit,
    List<string> LabelNames) : IDisposable
{
    /// <summary>The first (or only) SAE's features.</summary>
    public SparseRows Features => PerSae[0];

    public void Dispose() => Neurons.Dispose();
}
