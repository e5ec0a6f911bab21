using SaeSharp.Activations;
using SaeSharp.Corpus;
using SaeSharp.Data;
using SaeSharp.Hooks;
using SaeSharp.Models;
using SaeSharp.Saes;
using SaeSharp.Tokenizers;
using TorchSharp;
using static TorchSharp.torch;

namespace SaeSharp.Analysis;

/// <summary>Options of <see cref="TextProbing"/> (<c>sae probe --pooling mean</c>); the defaults are SAEBench's where it has one.</summary>
public sealed record TextProbingOptions
{
    /// <summary>Tokens of each text the model reads, from its beginning (SAEBench's <c>context_length</c>).</summary>
    public int ContextSize { get; init; } = 128;
    /// <summary>Text field (column) of a classification dataset.</summary>
    public string TextField { get; init; } = "text";
    /// <summary>Class field (column) of a classification dataset: strings or integers.</summary>
    public string LabelField { get; init; } = "label";
    /// <summary>Classes of a classification dataset to probe, each against the others (SAEBench's
    /// <c>chosen_classes_per_dataset</c>); null: every class, in order of first appearance.</summary>
    public IReadOnlyList<string>? Classes { get; init; }
    /// <summary>Second column of a classification dataset each class is balanced over, as SAEBench's
    /// <c>get_balanced_dataset</c> does (its <c>column2_name</c>: bias_in_bios <c>gender</c>, amazon reviews <c>rating</c>;
    /// <see cref="TextProbing.FromBalancedClasses"/>); null: each class's texts drawn without regard to another column.</summary>
    public string? BalanceField { get; init; }
    /// <summary>One of SAEBench's sparse-probing datasets that it draws by its own rules, not from a class column:
    /// <c>ag_news</c>, <c>amazon_sentiment</c>, <c>europarl</c> or <c>github_code</c> (the dataset's files or hub repo
    /// as the path; <see cref="Classes"/> default to SAEBench's chosen ones); null: a classification dataset's
    /// <see cref="LabelField"/>.</summary>
    public string? SaeBenchSource { get; init; }
    /// <summary>Documents read from a labelled corpus (SAEBench's 4000 + 1000).</summary>
    public int MaxTexts { get; init; } = 5000;
    /// <summary>A class or label is a task when it has this many texts with it and as many without it in each half (in place
    /// of <see cref="SparseProbingOptions.MinPositives"/>, which counts tokens).</summary>
    public int MinTexts { get; init; } = 20;
    /// <summary>Texts per forward pass.</summary>
    public int BatchSize { get; init; } = 8;
    /// <summary>Receives texts done.</summary>
    public IProgress<WorkProgress>? Progress { get; init; }
}

/// <summary>Mean-pooled activations of texts (float32, CPU): the SAE's features [texts, d_sae] and the hook's activation
/// [texts, d], each the mean over the text's kept positions.</summary>
/// <param name="Hook">The hook read.</param>
/// <param name="Features">Mean of the SAE's feature activations.</param>
/// <param name="Acts">Mean of the model's activations.</param>
public sealed record PooledActivations(string Hook, Tensor Features, Tensor Acts) : IDisposable
{
    /// <summary>Disposes both tensors.</summary>
    public void Dispose()
    {
        Features.Dispose();
        Acts.Dispose();
    }
}

/// <summary>The mean-pooled pass at one hook of several: its SAEs (<see cref="ProbeSaes.HookGroup"/>), their pooled
/// features as non-zeros (in the group's order) and the pooled activations [texts, d] (float32, CPU, owned).</summary>
internal sealed record PooledHook(ProbeSaes.HookGroup Group, IReadOnlyList<SparseRows> Features, Tensor Acts) : IDisposable
{
    public void Dispose() => Acts.Dispose();
}

/// <summary>Texts to probe: each text's class ids, its half (true: training), the class names, and whether each text has
/// exactly one class (a classification dataset) or a set of labels (a labelled corpus).</summary>
internal sealed record ProbeTexts(List<string> Texts, List<int[]> Labels, List<string> Names, bool[] Fit, bool OneClassEach)
{
    /// <summary>How the halves were made: <c>train/test splits</c> (the dataset's own), <c>each class 4:1</c> (one file,
    /// each class's shuffled texts) or <see cref="SpuriousCorrelationRemoval.PositionSplitName"/> (a labelled corpus).</summary>
    public string Split { get; init; } = "";
}

/// <summary>
/// SAEBench's sparse probing on texts (<c>sae_bench/evals/sparse_probing</c>): every text is one example. The model reads
/// its first <see cref="TextProbingOptions.ContextSize"/> tokens as the tokenizer encodes it (Hugging Face's
/// <c>tokenizer(text)</c>: BOS only where the tokenizer adds one); the SAE encodes each token's activation at its hook;
/// both are averaged over the positions that are not BOS, EOS or padding (<see cref="MeanPool"/>, SAEBench's
/// <c>get_bos_pad_eos_mask</c>, <c>create_meaned_model_activations</c> and <c>get_sae_meaned_activations</c>); then
/// <see cref="SparseProbing.Evaluate"/> probes the pooled vectors. Classes come from a classification dataset (one class
/// per text, each class against the others) or from a labelled corpus (a document has a label when one of its tokens does).
/// </summary>
public static class TextProbing
{
    /// <summary>Reads the texts of <paramref name="datasetPath"/>, pools their activations and probes every class.</summary>
    public static SparseProbingReport Run(Sae sae, HookedTransformer model, IReadOnlyList<(string Name, Func<Tensor, Tensor?> Fn)>? modelHooks,
        ITextTokenizer tokenizer, string datasetPath, TextProbingOptions text, SparseProbingOptions options) =>
        Run([sae], model, modelHooks, tokenizer, datasetPath, text, options)[0];

    /// <summary><see cref="Run(Sae, HookedTransformer, IReadOnlyList{ValueTuple{string, Func{Tensor, Tensor}}}, ITextTokenizer, string, TextProbingOptions, SparseProbingOptions)"/>
    /// for several SAEs, at one hook or several: the texts are read and run through the model once (capturing every hook),
    /// per hook the pooled activations and the probes on them shared by its SAEs, each SAE's pooled features probed; one report per SAE, in order (<paramref name="names"/>
    /// name the SAEs in errors; <paramref name="artifacts"/>: see <see cref="ProbeArtifacts"/>).</summary>
    public static IReadOnlyList<SparseProbingReport> Run(IReadOnlyList<Sae> saes, HookedTransformer model, IReadOnlyList<(string Name, Func<Tensor, Tensor?> Fn)>? modelHooks,
        ITextTokenizer tokenizer, string datasetPath, TextProbingOptions text, SparseProbingOptions options, IReadOnlyList<string>? names = null,
        ProbeArtifacts? artifacts = null)
    {
        ArgumentNullException.ThrowIfNull(saes);
        ProbeSaes.HookGroups(model, saes, names);
        var data = Read(datasetPath, text, options.TrainSetSize, options.TestSetSize, options.Seed);
        return Probe(saes, model, modelHooks, tokenizer, data, text, options, names, artifacts);
    }

    /// <summary>SAEBench's sparse probing over several datasets (<c>run_eval_single_sae</c>): every dataset is read first (by
    /// its own rules: <see cref="SparseProbingDataset"/>; one that cannot be read is an error naming it before any model
    /// pass), then each dataset's texts run through the model once for every SAE and hook and are probed as
    /// <see cref="Run(IReadOnlyList{Sae}, HookedTransformer, IReadOnlyList{ValueTuple{string, Func{Tensor, Tensor}}}, ITextTokenizer, string, TextProbingOptions, SparseProbingOptions, IReadOnlyList{string}, ProbeArtifacts)"/>
    /// probes one dataset; one suite report per SAE, in order, its means over datasets <see cref="SparseProbingSuiteReport.Metrics"/>.</summary>
    public static IReadOnlyList<SparseProbingSuiteReport> RunSuite(IReadOnlyList<Sae> saes, HookedTransformer model,
        IReadOnlyList<(string Name, Func<Tensor, Tensor?> Fn)>? modelHooks, ITextTokenizer tokenizer, IReadOnlyList<SparseProbingDataset> datasets,
        TextProbingOptions text, SparseProbingOptions options, Hub.HfHubOptions? hub = null, IReadOnlyList<string>? names = null, ProbeArtifacts? artifacts = null)
    {
        ArgumentNullException.ThrowIfNull(saes);
        ArgumentNullException.ThrowIfNull(datasets);
        ArgumentNullException.ThrowIfNull(text);
        var groups = ProbeSaes.HookGroups(model, saes, names);
        SparseProbingDataset.Check(datasets);
        var data = datasets.Select(ds => Read(ds.Path, ds.Apply(text), options.TrainSetSize, options.TestSetSize, options.Seed, hub)).ToList();
        var runs = saes.Select(_ => new List<SparseProbingRun>()).ToList();
        for (int d = 0; d < datasets.Count; d++)
        {
            var reports = Probe(saes, model, modelHooks, tokenizer, data[d], datasets[d].Apply(text), options, names, artifacts);
            for (int i = 0; i < saes.Count; i++) runs[i].Add(new SparseProbingRun(datasets[d].Name, data[d].Split, reports[i]));
        }
        return [.. runs.Select((r, i) => new SparseProbingSuiteReport(groups.First(g => g.Saes.Contains(i)).Site, r))];
    }

    /// <summary>Pools <paramref name="data"/>'s texts in one pass of the model for every SAE and probes them: one report per SAE.</summary>
    private static SparseProbingReport[] Probe(IReadOnlyList<Sae> saes, HookedTransformer model, IReadOnlyList<(string Name, Func<Tensor, Tensor?> Fn)>? modelHooks,
        ITextTokenizer tokenizer, ProbeTexts data, TextProbingOptions text, SparseProbingOptions options, IReadOnlyList<string>? names, ProbeArtifacts? artifacts)
    {
        var pooled = PoolSparse(saes, model, modelHooks, tokenizer, data.Texts, text, artifacts, names);
        try
        {
            var labels = options.Labels ?? (data.OneClassEach ? data.Names : null);
            var reports = new SparseProbingReport[saes.Count];
            foreach (var p in pooled)
            {
                var evaluated = SparseProbing.EvaluateSparse(p.Features, p.Acts, data.Labels, data.Names, data.Fit,
                    options with { OneVsRestClasses = data.OneClassEach, Labels = labels, MinPositives = text.MinTexts, Examples = "texts" });
                for (int j = 0; j < p.Group.Saes.Length; j++) reports[p.Group.Saes[j]] = evaluated[j] with { Hook = p.Group.Site, Pooling = "mean" };
            }
            return reports;
        }
        finally
        {
            foreach (var p in pooled) p.Dispose();
        }
    }

    /// <summary>Mean of <paramref name="x"/> [batch, pos, d] over the positions where <paramref name="keep"/> [batch, pos] is
    /// true, as float32 [batch, d].</summary>
    public static Tensor MeanPool(Tensor x, Tensor keep)
    {
        if (x.dim() != 3 || keep.dim() != 2 || keep.shape[0] != x.shape[0] || keep.shape[1] != x.shape[1])
            throw new SaeSharpException($"mean pooling: activations [{string.Join(", ", x.shape)}] and mask [{string.Join(", ", keep.shape)}] must be [batch, pos, d] and [batch, pos]");
        using var scope = NewDisposeScope();
        var k = keep.to(ScalarType.Float32).to(x.device);
        var count = k.sum(1, true);
        if (count.eq(TorchScalars.Of(0)).any().item<bool>()) throw new SaeSharpException("mean pooling: a text has no position to average");
        return x.to(ScalarType.Float32).mul(k.unsqueeze(2)).sum(1).div(count).MoveToOuterDisposeScope();
    }

    /// <summary>Positions SAEBench averages over: those whose token is not the tokenizer's BOS, EOS or padding token.</summary>
    internal static bool[] KeepMask(long[] ids, ITextTokenizer tokenizer)
    {
        long?[] drop = [tokenizer.BosTokenId, tokenizer.EosTokenId, tokenizer.PadTokenId];
        return [.. ids.Select(id => !drop.Contains(id))];
    }

    /// <summary>Runs the model over each text's first <see cref="TextProbingOptions.ContextSize"/> tokens and mean-pools the
    /// hook's activations and the SAE's features over the kept positions (<see cref="KeepMask"/>).</summary>
    public static PooledActivations Pool(Sae sae, HookedTransformer model, IReadOnlyList<(string Name, Func<Tensor, Tensor?> Fn)>? modelHooks,
        ITextTokenizer tokenizer, IReadOnlyList<string> texts, TextProbingOptions options)
    {
        Tensor? features = null, acts = null;
        try
        {
            var groups = PoolBatches([sae], model, modelHooks, tokenizer, texts, options, (_, rows, pf) =>
            {
                features ??= zeros(texts.Count, pf.shape[1], ScalarType.Float32).DetachFromDisposeScope();
                using var r = tensor(rows);
                features.index_copy_(0, r, pf);
            }, out var pooled);
            acts = pooled[0];
            var result = new PooledActivations(groups[0].Site, features!, acts);
            features = acts = null;
            return result;
        }
        finally
        {
            features?.Dispose();
            acts?.Dispose();
        }
    }

    /// <summary><see cref="Pool"/> for several SAEs, at one hook or several (<see cref="ProbeSaes.HookGroups"/>), keeping only
    /// the non-zeros of the pooled features, batch by batch: memory follows them, not texts × d_sae. Returns per hook its
    /// SAEs' features (in the group's order) and the pooled activations [texts, d] (float32, CPU). With
    /// <paramref name="artifacts"/> each hook's activations of the texts are kept there, or read from there with no model run.</summary>
    internal static IReadOnlyList<PooledHook> PoolSparse(IReadOnlyList<Sae> saes, HookedTransformer model,
        IReadOnlyList<(string Name, Func<Tensor, Tensor?> Fn)>? modelHooks, ITextTokenizer tokenizer, IReadOnlyList<string> texts, TextProbingOptions options,
        ProbeArtifacts? artifacts = null, IReadOnlyList<string>? names = null)
    {
        var features = new SparseRows?[saes.Count];
        var groups = PoolBatches(saes, model, modelHooks, tokenizer, texts, options, (s, rows, pf) =>
        {
            features[s] ??= new SparseRows(texts.Count, (int)pf.shape[1]);
            features[s]!.SetRows(rows, pf);
        }, out var acts, artifacts, names);
        return [.. groups.Select((g, i) => new PooledHook(g, [.. g.Saes.Select(s => features[s]!)], acts[i]))];
    }

    /// <summary>The pooling pass: texts of equal length batched, the model run once per batch up to the last hook that
    /// <paramref name="saes"/> read (<see cref="ProbeSaes.HookGroups"/>, returned), each SAE run on its hook's
    /// activations, all mean-pooled; <paramref name="features"/> receives each batch's SAE index, text indices and pooled
    /// features [batch, d_sae] (float32, CPU); the pooled activations of each hook come back whole in
    /// <paramref name="acts"/> [texts, d], in the groups' order.</summary>
    private static IReadOnlyList<ProbeSaes.HookGroup> PoolBatches(IReadOnlyList<Sae> saes, HookedTransformer model, IReadOnlyList<(string Name, Func<Tensor, Tensor?> Fn)>? modelHooks,
        ITextTokenizer tokenizer, IReadOnlyList<string> texts, TextProbingOptions options, Action<int, long[], Tensor> features, out Tensor[] acts,
        ProbeArtifacts? artifacts = null, IReadOnlyList<string>? names = null)
    {
        if (options.ContextSize < 1) throw new SaeSharpException($"context size must be positive, got {options.ContextSize}");
        if (texts.Count == 0) throw new SaeSharpException("mean pooling: no texts");
        var groups = ProbeSaes.HookGroups(model, saes, names);
        foreach (var g in groups)
            if (ModelActivationHarvester.RoutingHooks(model.HookPoints, [g.Hook]).Any())
                throw new SaeSharpException($"mean pooling reads every position of a text; {g.Hook} is an MoE expert's hook, which holds only the tokens routed to it");
        int? stopAt = ProbeSaes.StopAtLayer(model, groups.Select(g => g.Hook));
        List<string> cacheNames = [.. groups.Select(g => g.Hook).Distinct()];
        var ids = texts.Select(t => tokenizer.EncodeWithSpecialTokens(t).Take(options.ContextSize).Select(i => (long)i).ToArray()).ToList();
        var keep = ids.Select(s => KeepMask(s, tokenizer)).ToList();
        for (int i = 0; i < ids.Count; i++)
            if (!keep[i].Any(v => v))
                throw new SaeSharpException($"text {i} has no token besides BOS, EOS and padding to average (empty text?): \"{(texts[i].Length > 60 ? texts[i][..60] + "…" : texts[i])}\"");
        var progress = new ProgressCounter(options.Progress, "texts", texts.Count);
        var sources = new List<HookActivations>();
        var pooled = new Tensor?[groups.Count];
        try
        {
            foreach (var g in groups) sources.Add(HookActivations.For(artifacts, "texts", g.Site, ids, options.BatchSize, model.Device));
            using var _ = no_grad();
            // Texts of equal length run together (no padding: each text's positions are exactly its tokens).
            var order = Enumerable.Range(0, ids.Count).OrderBy(i => ids[i].Length).ThenBy(i => i).ToArray();
            for (int start = 0; start < order.Length;)
            {
                int len = ids[order[start]].Length, end = start;
                while (end < order.Length && end - start < options.BatchSize && ids[order[end]].Length == len) end++;
                var idx = order[start..end];
                using var scope = NewDisposeScope();
                var tokens = tensor(idx.SelectMany(i => ids[i]).ToArray()).view(idx.Length, len);
                var mask = tensor(idx.SelectMany(i => keep[i]).ToArray()).view(idx.Length, len);
                var rows = idx.Select(i => (long)i).ToArray();
                using var r = tensor(rows);
                // One model run per batch, for every hook whose activations are not read from a file.
                ActivationCache? cache = null;
                try
                {
                    for (int gi = 0; gi < groups.Count; gi++)
                    {
                        var group = groups[gi];
                        var x = sources[gi].Get(idx, len, () =>
                        {
                            cache ??= model.Run(tokens, new RunOptions { CacheNames = cacheNames, Hooks = modelHooks, StopAtLayer = stopAt }).Cache;
                            return group.Read(cache![group.Hook]);
                        });
                        if (x.dim() != 3) throw new SaeSharpException($"hook '{group.Site}' gives [{string.Join(", ", x.shape)}]; mean pooling needs [batch, pos, d]");
                        var px = MeanPool(x, mask).cpu();
                        pooled[gi] ??= zeros(texts.Count, px.shape[1], ScalarType.Float32).DetachFromDisposeScope();
                        foreach (int s in groups[gi].Saes)
                        {
                            using var saeScope = NewDisposeScope();
                            features(s, rows, MeanPool(saes[s].Run(x).FeatureActs, mask).cpu());
                        }
                        pooled[gi]!.index_copy_(0, r, px);
                    }
                }
                finally
                {
                    cache?.Dispose();
                }
                progress.Add(idx.Length);
                start = end;
            }
            foreach (var s in sources) s.Complete();
            acts = [.. pooled.Select(p => p!)];
            Array.Fill(pooled, null);
            return groups;
        }
        finally
        {
            foreach (var s in sources) s.Dispose();
            foreach (var p in pooled) p?.Dispose();
        }
    }

    /// <summary>Is <paramref name="path"/> a labelled corpus (a .jsonl whose first row has an array field <c>labels</c>, as
    /// <c>sae corpus</c> writes)? Otherwise it is read as a classification dataset.</summary>
    /// <summary>The texts of a labelled corpus (<see cref="FromCorpus"/>) or a classification dataset
    /// (<see cref="FromClasses"/>), as <c>Run</c> and TPP read them. <see cref="TextProbingOptions.Classes"/> on a
    /// labelled corpus is an error: its documents have labels, chosen by <see cref="SparseProbingOptions.Labels"/>.</summary>
    internal static ProbeTexts Read(string path, TextProbingOptions text, int trainSize, int testSize, int seed, Hub.HfHubOptions? hub = null)
    {
        if (text.SaeBenchSource is { } source) return SaeBenchSources.Read(source, path, text.Classes, trainSize, testSize, seed, hub);
        if (!IsLabelledCorpus(path)) return FromClasses(path, text, trainSize, testSize, seed, hub);
        if (text.BalanceField is { } field)
            throw new SaeSharpException($"{path} is a labelled corpus: --balance-field {field} balances the classes of a classification dataset's --label-field by a second column, which a corpus does not have");
        if (text.Classes is { } classes)
            throw new SaeSharpException($"{path} is a labelled corpus: its documents have labels, not classes; choose them with --labels " +
                                        $"{string.Join(",", classes)} (--classes names the classes of a classification dataset's --label-field)");
        return FromCorpus(path, text.MaxTexts, trainSize, testSize);
    }

    internal static bool IsLabelledCorpus(string path) =>
        File.Exists(path) && path.EndsWith(".jsonl", StringComparison.OrdinalIgnoreCase)
        && TextDataset.JsonLines(path).Select(r => r.Element.TryGetProperty("labels", out var l) && l.ValueKind == System.Text.Json.JsonValueKind.Array)
            .FirstOrDefault();

    /// <summary>
    /// A classification dataset's texts. Each chosen class's texts are shuffled (seeded) and split: the first
    /// <paramref name="trainSize"/>/2 train and the next <paramref name="testSize"/>/2 test, SAEBench's per-class sizes;
    /// a class with fewer texts is split in the same 4:1 proportion. A dataset with its own train and test splits
    /// (<see cref="TextDataset.TrainTestFiles"/>, as SAEBench's <c>load_dataset(name)["train"]</c> and <c>["test"]</c>) gives
    /// each class's training texts from its train split and its test texts from its test split, each shuffled, at most
    /// those sizes.
    /// </summary>
    internal static ProbeTexts FromClasses(string path, TextProbingOptions options, int trainSize, int testSize, int seed, Hub.HfHubOptions? hub = null)
    {
        if (options.BalanceField is not null) return FromBalancedClasses(path, options, trainSize, testSize, seed, hub);
        var split = TextDataset.TrainTestFiles(path, hub);
        IEnumerable<(string Text, string Label)> Rows(IEnumerable<string> files) =>
            TextDataset.ReadClassified(files, options.TextField, [options.LabelField], ["--label-field"]).Select(r => (r.Text, r.Labels[0]));
        var halves = split is { } tt ? new[] { (Rows(tt.Train), (bool?)true), (Rows(tt.Test), false) } : [(Rows(TextDataset.ExpandFiles(path)), (bool?)null)];
        var byClass = new Dictionary<string, (List<string> Train, List<string> Test)>(StringComparer.Ordinal);
        var seen = new List<string>();
        foreach (var (rows, train) in halves)
            foreach (var (t, l) in rows)
            {
                if (!byClass.TryGetValue(l, out var lists)) { byClass[l] = lists = ([], []); seen.Add(l); }
                (train == false ? lists.Test : lists.Train).Add(t);
            }
        var chosen = options.Classes ?? seen;
        foreach (var c in chosen)
            if (!byClass.ContainsKey(c))
                throw new SaeSharpException($"{path}: no text has class '{c}' in '{options.LabelField}'{NameSuggestion.WithKnown(c, seen, "classes")}");
        if (chosen.Distinct().Count() < 2)
            throw new SaeSharpException($"{path}: probing needs at least two classes in '{options.LabelField}' (each is probed against the others), got {string.Join(", ", chosen.Distinct())}");
        var texts = new List<string>();
        var labels = new List<int[]>();
        var fit = new List<bool>();
        var names = chosen.Distinct().ToList();
        for (int c = 0; c < names.Count; c++)
        {
            var (trainTexts, testTexts) = byClass[names[c]];
            void Add(IEnumerable<string> part, bool train)
            {
                foreach (var t in part)
                {
                    texts.Add(t);
                    labels.Add([c]);
                    fit.Add(train);
                }
            }
            if (split is not null)
            {
                string[] tr = [.. trainTexts], te = [.. testTexts];
                new Random(seed).Shuffle(tr);
                new Random(seed).Shuffle(te);
                Add(tr.Take(trainSize / 2), true);
                Add(te.Take(testSize / 2), false);
                continue;
            }
            var all = trainTexts.ToArray();
            new Random(seed).Shuffle(all);
            int nTrain = trainSize / 2, nTest = testSize / 2;
            if (all.Length < nTrain + nTest)
            {
                nTest = (int)Math.Round(all.Length * (double)testSize / (trainSize + testSize));
                nTrain = all.Length - nTest;
            }
            Add(all.Take(nTrain), true);
            Add(all.Skip(nTrain).Take(nTest), false);
        }
        return new ProbeTexts(texts, labels, names, [.. fit], OneClassEach: true) { Split = split is null ? EachClassSplitName : "train/test splits" };
    }

    /// <summary>
    /// A classification dataset's texts drawn as SAEBench's <c>get_multi_label_train_test_data</c> draws bias_in_bios and
    /// the amazon reviews: each half (the dataset's train and test splits; one file: 4 in 5 rows by position, as SCR splits
    /// it) goes through <see cref="SaeBenchDraws.Balanced"/> with m = a quarter of its set size (<c>set_size // 4</c>: each
    /// class gets m texts of each value of <see cref="TextProbingOptions.BalanceField"/>, drawn with
    /// <c>RandomState(seed)</c>), then <c>ensure_shared_keys</c> keeps the classes kept in both halves. Classes come in the
    /// train half's order of first appearance, or as <see cref="TextProbingOptions.Classes"/> lists them (SAEBench's
    /// <c>filter_dataset</c>); a listed class that the draw skips is an error naming the half, its groups and their counts.
    /// </summary>
    internal static ProbeTexts FromBalancedClasses(string path, TextProbingOptions options, int trainSize, int testSize, int seed, Hub.HfHubOptions? hub = null)
    {
        string field = options.BalanceField!;
        if (field == options.LabelField)
            throw new SaeSharpException($"--balance-field '{field}' is the class column (--label-field) itself; give the second column (bias_in_bios: gender)");
        if (trainSize < 4 || testSize < 4)
            throw new SaeSharpException($"balanced draw: train and test set sizes must be at least 4 (one text per class and value of '{field}'), got {trainSize} and {testSize}");
        var split = TextDataset.TrainTestFiles(path, hub);
        List<(string Text, string[] Labels)> Read(IEnumerable<string> files) =>
            [.. TextDataset.ReadClassified(files, options.TextField, [options.LabelField, field], ["--label-field", "--balance-field"])];
        List<(string Text, string[] Labels)> train, test;
        if (split is { } tt)
        {
            train = Read(tt.Train);
            test = Read(tt.Test);
        }
        else
        {
            var all = Read(TextDataset.ExpandFiles(path));
            var fitAll = PositionSplit(all.Count, trainSize, testSize);
            train = [.. all.Where((_, i) => fitAll[i])];
            test = [.. all.Where((_, i) => !fitAll[i])];
        }
        if (train.Count == 0 || test.Count == 0)
            throw new SaeSharpException($"{path}: the {(train.Count == 0 ? "train" : "test")} half has no rows");
        (IReadOnlyList<BalancedClass> Kept, IReadOnlyList<SkippedClass> Skipped) Draw(List<(string Text, string[] Labels)> rows, int size) =>
            SaeBenchDraws.Balanced([.. rows.Select(r => r.Labels[0])], [.. rows.Select(r => r.Labels[1])], size / 4, seed, field);
        var (trKept, trSkipped) = Draw(train, trainSize);
        var (teKept, teSkipped) = Draw(test, testSize);
        var teByClass = teKept.ToDictionary(c => c.Class, StringComparer.Ordinal);
        var shared = trKept.Where(c => teByClass.ContainsKey(c.Class)).ToDictionary(c => c.Class, StringComparer.Ordinal);
        string Why(string c)
        {
            var reasons = new List<string>();
            foreach (var (half, kept, skippedList, rows, m) in new[] { ("training", trKept, trSkipped, train, trainSize / 4), ("test", teKept, teSkipped, test, testSize / 4) })
            {
                if (skippedList.FirstOrDefault(x => x.Class == c) is { } sk) reasons.Add($"in the {half} half {sk.Reason}, needs two values with {m} texts each");
                else if (!kept.Any(x => x.Class == c)) reasons.Add($"the {half} half has no text of it");
            }
            return string.Join("; ", reasons);
        }
        var allClasses = train.Concat(test).Select(r => r.Labels[0]).Distinct().ToList();
        var chosen = options.Classes ?? [.. trKept.Select(c => c.Class).Where(shared.ContainsKey)];
        foreach (var c in chosen)
        {
            if (!allClasses.Contains(c))
                throw new SaeSharpException($"{path}: no text has class '{c}' in '{options.LabelField}'{NameSuggestion.WithKnown(c, allClasses, "classes")}");
            if (!shared.ContainsKey(c))
                throw new SaeSharpException($"{path}: class '{c}' cannot be balanced by '{field}' as SAEBench's get_balanced_dataset does: {Why(c)}");
        }
        if (options.Classes is null)
        {
            var left = allClasses.Where(c => !shared.ContainsKey(c)).ToList();
            if (left.Count > 0)
                DatasetWarnings.Report($"{path}: {left.Count} class(es) left out, as SAEBench leaves them out (too few texts to balance by '{field}'): " +
                                       string.Join("; ", left.Select(c => $"'{c}': {Why(c)}")));
        }
        var names = chosen.Distinct().ToList();
        if (names.Count < 2)
            throw new SaeSharpException($"{path}: probing needs at least two classes balanced by '{field}' in '{options.LabelField}', got {(names.Count == 0 ? "none" : string.Join(", ", names))}");
        var texts = new List<string>();
        var labels = new List<int[]>();
        var fit = new List<bool>();
        for (int c = 0; c < names.Count; c++)
            foreach (var (rows, kept, isTrain) in new[] { (train, shared[names[c]], true), (test, teByClass[names[c]], false) })
                foreach (int r in kept.Rows)
                {
                    texts.Add(rows[r].Text);
                    labels.Add([c]);
                    fit.Add(isTrain);
                }
        return new ProbeTexts(texts, labels, names, [.. fit], OneClassEach: true)
        {
            Split = $"{(split is null ? SpuriousCorrelationRemoval.PositionSplitName : "train/test splits")}, each class balanced by '{field}'",
        };
    }

    /// <summary>How <see cref="TppRun.Split"/> names the split of one classification file: each class's shuffled texts 4:1.</summary>
    public const string EachClassSplitName = "each class 4:1";

    /// <summary>A labelled corpus's first <paramref name="maxTexts"/> documents as texts: a document has label L when one of
    /// its tokens has it. Documents split trainSize : testSize (4:1 for SAEBench's sizes) by position: of each five, the
    /// first four train.</summary>
    internal static ProbeTexts FromCorpus(string path, int maxTexts, int trainSize, int testSize)
    {
        var texts = new List<string>();
        var labels = new List<int[]>();
        var names = new List<string>();
        var index = new Dictionary<string, int>(StringComparer.Ordinal);
        foreach (var row in LabelledCorpus.Read(path).Take(maxTexts))
        {
            texts.Add(row.Text);
            labels.Add([.. row.Labels.SelectMany(ls => ls).Distinct().Select(l =>
            {
                if (!index.TryGetValue(l, out int li)) { li = names.Count; index[l] = li; names.Add(l); }
                return li;
            })]);
        }
        if (texts.Count == 0) throw new SaeSharpException($"{path}: no documents");
        return new ProbeTexts(texts, labels, names, PositionSplit(texts.Count, trainSize, testSize), OneClassEach: false) { Split = SpuriousCorrelationRemoval.PositionSplitName };
    }

    /// <summary>Train (true) or test flags of <paramref name="count"/> rows by position: test share testSize / (trainSize +
    /// testSize), spread evenly (row i tests when ⌊(i+1)·share⌋ &gt; ⌊i·share⌋; of each five, the first four train for
    /// SAEBench's 4000 : 1000).</summary>
    internal static bool[] PositionSplit(int count, int trainSize, int testSize)
    {
        double share = (double)testSize / (trainSize + testSize);
        return [.. Enumerable.Range(0, count).Select(i => Math.Floor((i + 1) * share) == Math.Floor(i * share))];
    }
}
