using System.Globalization;
using System.Text.Json;
using System.Text.Json.Nodes;
using SaeSharp.Data;
using SaeSharp.Models;
using SaeSharp.Saes;
using SaeSharp.Tokenizers;
using TorchSharp;
using static TorchSharp.torch;

using SaeSharp.Evaluation;

namespace SaeSharp.Analysis;

/// <summary>Options of <see cref="SpuriousCorrelationRemoval"/> (<c>sae probe --pooling mean --scr</c>); the defaults are
/// SAEBench's (<c>ScrAndTppEvalConfig</c>, its first bias_in_bios pair).</summary>
public sealed record ScrOptions
{
    /// <summary>Column of attribute 1, the one the probes should learn (SAEBench's <c>column1_name</c>); a classification
    /// dataset only.</summary>
    public string Column1Name { get; init; } = "profession";
    /// <summary>Attribute 1's positive and negative value (SAEBench's <c>column1_vals</c>). On a labelled corpus: one label
    /// (positive: documents with it, negative: those without) or two (positive: with the first and not the second).</summary>
    public IReadOnlyList<string> Column1Vals { get; init; } = ["professor", "nurse"];
    /// <summary>Column of attribute 2, the spurious one (SAEBench's <c>column2_name</c>).</summary>
    public string Column2Name { get; init; } = "gender";
    /// <summary>Attribute 2's positive and negative value (SAEBench's <c>column2_vals</c>); on a labelled corpus as
    /// <see cref="Column1Vals"/>.</summary>
    public IReadOnlyList<string> Column2Vals { get; init; } = ["male", "female"];
    /// <summary>Thresholds n (latents zero-ablated); null: SAEBench's <c>n_values</c> up to d_sae.</summary>
    public IReadOnlyList<int>? NValues { get; init; }
    /// <summary>L1 strength of the probes (SAEBench's <c>probe_l1_penalty</c>): mean cross-entropy + λ·‖w‖₁.</summary>
    public double ProbeL1Penalty { get; init; } = 1e-3;
    /// <summary>SAEBench's <c>train_set_size</c>: texts per quadrant of the training half are at most a quarter of it.</summary>
    public int TrainSetSize { get; init; } = 4000;
    /// <summary>SAEBench's <c>test_set_size</c>: texts per quadrant of the test half are at most a quarter of it.</summary>
    public int TestSetSize { get; init; } = 1000;
    /// <summary>Attribute 1's value names → the values stored in its column (SAEBench's <c>column1_mapping</c>, e.g.
    /// professor → 21 in bias_in_bios); null or a name not in it: the name is the stored value.</summary>
    public IReadOnlyDictionary<string, string>? Column1Mapping { get; init; }
    /// <summary>Attribute 2's value names → stored values (SAEBench's <c>column2_mapping</c>), as <see cref="Column1Mapping"/>.</summary>
    public IReadOnlyDictionary<string, string>? Column2Mapping { get; init; }
    /// <summary>Fewest texts per quadrant accepted when a half has fewer than a quarter of its set size in a cell.</summary>
    public int MinTextsPerQuadrant { get; init; } = 20;
    /// <summary>Refuse quadrants smaller than SAEBench's (<c>get_spurious_corr_data</c>'s assertions: every quadrant at least
    /// a quarter of the set size, the two agreeing ones more than twice that) with an error naming each failing quadrant and the
    /// counts; false: shrink m to the data with a warning (<see cref="DatasetWarnings"/>).</summary>
    public bool StrictSizes { get; init; }
    /// <summary>Seed of the sets' order (SAEBench's <c>random_seed</c>): each half's six sets are shuffled in turn by one
    /// <c>np.random.default_rng(seed)</c> (<see cref="NumpyRandom"/>), as <c>get_spurious_corr_data</c> shuffles them.</summary>
    public int Seed { get; init; } = 42;
}

/// <summary>One half's SCR sets as SAEBench's <c>get_spurious_corr_data</c> builds them: row indices of each probe's
/// positives and negatives, m texts per quadrant. With attribute 1 = profession (P: professor, N: nurse) and attribute 2
/// = gender (P: male, N: female), each set in dataset order: column 1 (professor / nurse) = PP[..m] + PN[..m] against
/// NP[..m] + NN[..m]; column 2 (male / female) = PP[..m] + NP[..m] against PN[..m] + NN[..m] (first letter attribute 1,
/// second attribute 2); biased (male_professor / female_nurse) = PP[..2m] against NN[..2m]; each set then shuffled as SAEBench
/// shuffles it (<see cref="SpuriousCorrelationRemoval.BuildSets"/>).</summary>
/// <param name="PerQuadrant">m.</param>
/// <param name="Column1Pos">Attribute 1 positive, attribute 2 balanced.</param>
/// <param name="Column1Neg">Attribute 1 negative, attribute 2 balanced.</param>
/// <param name="Column2Pos">Attribute 2 positive, attribute 1 balanced.</param>
/// <param name="Column2Neg">Attribute 2 negative, attribute 1 balanced.</param>
/// <param name="BiasedPos">Both attributes positive.</param>
/// <param name="BiasedNeg">Both attributes negative.</param>
public sealed record ScrSets(int PerQuadrant, int[] Column1Pos, int[] Column1Neg, int[] Column2Pos, int[] Column2Neg, int[] BiasedPos, int[] BiasedNeg)
{
    /// <summary>Every row used, ascending.</summary>
    public int[] Rows() => [.. Column1Pos.Concat(Column1Neg).Concat(Column2Pos).Concat(Column2Neg).Concat(BiasedPos).Concat(BiasedNeg).Distinct().Order()];

    /// <summary>The same sets with each row index mapped by <paramref name="map"/>.</summary>
    public ScrSets Remap(Func<int, int> map) => new(PerQuadrant, [.. Column1Pos.Select(map)], [.. Column1Neg.Select(map)],
        [.. Column2Pos.Select(map)], [.. Column2Neg.Select(map)], [.. BiasedPos.Select(map)], [.. BiasedNeg.Select(map)]);

    /// <summary>(positives, negatives) of probe 0 (column 1), 1 (column 2) or 2 (biased).</summary>
    internal (int[] Pos, int[] Neg) Probe(int p) => p switch { 0 => (Column1Pos, Column1Neg), 1 => (Column2Pos, Column2Neg), _ => (BiasedPos, BiasedNeg) };
}

/// <summary>One SCR direction: the latents of one attribute's probe ablated, the biased probe tested on the other
/// attribute's balanced test set.</summary>
/// <param name="Dir">1: attribute 2's latents ablated, tested on attribute 1's data; 2: the reverse.</param>
/// <param name="AblatedProbe">The probe whose latents are ablated (SAEBench's <c>ablated_probe_class_id</c>).</param>
/// <param name="EvalData">The test set (SAEBench's <c>eval_data_class_id</c>).</param>
/// <param name="CleanAccuracy">Skyline: that set's own probe on it, unablated (<c>clean_acc</c>).</param>
/// <param name="OriginalAccuracy">Baseline: the biased probe on it, unablated (<c>original_acc</c>).</param>
/// <param name="Ablated">n → latents ablated (largest |effect| first).</param>
/// <param name="ChangedAccuracy">n → the biased probe on it after the ablation (<c>changed_acc</c>).</param>
public sealed record ScrDirection(int Dir, string AblatedProbe, string EvalData, double CleanAccuracy, double OriginalAccuracy,
    IReadOnlyDictionary<int, int[]> Ablated, IReadOnlyDictionary<int, double> ChangedAccuracy)
{
    /// <summary>SAEBench's normalised score at n: (changed − original) / (clean − original), 0 when clean − original &lt; 0.001.</summary>
    public double Score(int n) => CleanAccuracy - OriginalAccuracy < 0.001 ? 0 : (ChangedAccuracy[n] - OriginalAccuracy) / (CleanAccuracy - OriginalAccuracy);
}

/// <summary>Result of <see cref="SpuriousCorrelationRemoval"/>.</summary>
/// <param name="Hook">Hook the SAE reads (empty from <c>SpuriousCorrelationRemoval.Evaluate</c>).</param>
/// <param name="Dataset">Dataset read (empty from <c>SpuriousCorrelationRemoval.Evaluate</c>).</param>
/// <param name="Texts">Distinct texts pooled.</param>
/// <param name="NValues">The thresholds n.</param>
/// <param name="Column1">Attribute 1's probe name, e.g. <c>professor / nurse</c>.</param>
/// <param name="Column2">Attribute 2's probe name, e.g. <c>male / female</c>.</param>
/// <param name="Biased">The biased probe's name, e.g. <c>male_professor / female_nurse</c>.</param>
/// <param name="TrainPerQuadrant">m of the training sets.</param>
/// <param name="TestPerQuadrant">m of the test sets.</param>
/// <param name="CleanAccuracies">SAEBench's <c>llm_clean_accs</c>: each probe on its own test set, and each probe on each
/// other probe's test set (<c>"{probe} probe on {data} data"</c>).</param>
/// <param name="Directions">Directions 1 and 2.</param>
public sealed record ScrReport(string Hook, string Dataset, long Texts, IReadOnlyList<int> NValues, string Column1, string Column2, string Biased,
    int TrainPerQuadrant, int TestPerQuadrant, IReadOnlyDictionary<string, double> CleanAccuracies, IReadOnlyList<ScrDirection> Directions)
{
    /// <summary>The biased probe's unablated accuracy on attribute 1's data (SAEBench's <c>dir1_acc</c>) and on attribute 2's
    /// (<c>dir2_acc</c>).</summary>
    public (double Dir1, double Dir2) BiasedAccuracies => (Directions[0].OriginalAccuracy, Directions[1].OriginalAccuracy);

    /// <summary>SAEBench's <c>get_scr_plotting_dict</c>: per n, <c>scr_dir1_threshold_{n}</c>, <c>scr_dir2_threshold_{n}</c>,
    /// and <c>scr_metric_threshold_{n}</c> = the score of the direction on whose data the biased probe is worse (dir 1 when
    /// dir1_acc &lt; dir2_acc, dir 2 when greater; absent when equal, as in SAEBench).</summary>
    public IReadOnlyDictionary<string, double> Metrics()
    {
        var m = new Dictionary<string, double>();
        var (a1, a2) = BiasedAccuracies;
        foreach (var d in Directions)
            foreach (int n in NValues)
            {
                double s = d.Score(n);
                m[$"scr_dir{d.Dir}_threshold_{n}"] = s;
                if ((d.Dir == 1 && a1 < a2) || (d.Dir == 2 && a1 > a2)) m[$"scr_metric_threshold_{n}"] = s;
            }
        return m;
    }

    /// <summary>Writes SAEBench's SCR output of this one run (<see cref="ScrSuiteReport.WriteJson"/>).</summary>
    public void WriteJson(string path, SaeBenchRun? run = null) =>
        new ScrSuiteReport(Hook, [new ScrRun(Dataset, "", this)]).WriteJson(path, run);

    internal JsonObject ToJson()
    {
        var metrics = Metrics();
        static string N(int n) => n.ToString(CultureInfo.InvariantCulture);
        var detail = new JsonObject { ["dataset_name"] = $"{Dataset}_scr_{Column1.Replace(" / ", "_", StringComparison.Ordinal)}_results" };
        foreach (var (k, v) in metrics) detail[k] = v;
        return new JsonObject
        {
            ["eval_type_id"] = "scr", ["hook"] = Hook, ["pooling"] = "mean", ["dataset"] = Dataset, ["texts"] = Texts,
            ["n_values"] = new JsonArray([.. NValues.Select(n => (JsonNode)n)]),
            ["column1"] = Column1, ["column2"] = Column2, ["biased"] = Biased,
            ["train_samples_per_quadrant"] = TrainPerQuadrant, ["test_samples_per_quadrant"] = TestPerQuadrant,
            ["eval_result_metrics"] = new JsonObject { ["scr_metrics"] = SaeBenchEnvelope.Numbers(metrics) },
            ["eval_result_details"] = new JsonArray(detail),
            ["llm_clean_accs"] = SaeBenchEnvelope.Numbers(CleanAccuracies),
            ["directions"] = new JsonArray([.. Directions.Select(d => (JsonNode)new JsonObject
            {
                ["dir"] = d.Dir, ["ablated_probe"] = d.AblatedProbe, ["eval_data"] = d.EvalData,
                ["clean_acc"] = d.CleanAccuracy, ["original_acc"] = d.OriginalAccuracy,
                ["ablated_latents"] = new JsonObject(NValues.Select(n => KeyValuePair.Create(N(n), (JsonNode?)new JsonArray([.. d.Ablated[n].Select(f => (JsonNode)f)])))),
                ["changed_acc"] = new JsonObject(NValues.Select(n => KeyValuePair.Create(N(n), (JsonNode?)d.ChangedAccuracy[n]))),
            })]),
        };
    }
}

/// <summary>
/// SAEBench's SCR, spurious correlation removal (<c>sae_bench/evals/scr_and_tpp</c> with <c>perform_scr=True</c>), on
/// mean-pooled texts (<see cref="TextProbing.Pool"/>). Three L1 probes on the model's pooled activation: attribute 1
/// (balanced in attribute 2), attribute 2 (balanced in attribute 1) and a biased one trained where the two agree
/// (<see cref="ScrSets"/>). Each attribute probe's latents are ranked by |(Δ mean f_k) · (W_dec[k] · w)|; the top n of one
/// attribute are zero-ablated with the error term kept (<see cref="TargetedProbePerturbation.Ablate"/>), and the biased
/// probe is tested on the other attribute's balanced data: its accuracy gain, normalised by the gap between that
/// attribute's own probe (skyline) and the unablated biased probe (baseline), is the score. See docs/labels.md.
/// </summary>
public static class SpuriousCorrelationRemoval
{
    /// <summary>Reads <paramref name="datasetPath"/> (a classification dataset with columns <see cref="ScrOptions.Column1Name"/>
    /// and <see cref="ScrOptions.Column2Name"/>, or a labelled corpus whose document labels play the two attributes), builds
    /// the sets, pools the texts they use and runs <c>Evaluate</c>: <c>RunSuite</c> on one dataset and one pair.</summary>
    public static ScrReport Run(Sae sae, HookedTransformer model, IReadOnlyList<(string Name, Func<Tensor, Tensor?> Fn)>? modelHooks,
        ITextTokenizer tokenizer, string datasetPath, TextProbingOptions text, ScrOptions scr) =>
        RunSuite(sae, model, modelHooks, tokenizer, [new ScrDataset(datasetPath, datasetPath, text.TextField, scr, [scr.Column1Vals])], text).Runs[0].Report;

    /// <summary>SAEBench's SCR over several datasets, each with several attribute-1 value pairs (<c>run_eval_single_sae</c>
    /// with <c>perform_scr=True</c>): each dataset is read once, the texts of all its pairs' sets pooled in one pass of the
    /// model (<see cref="TextProbing.Pool"/>, each text once), then every pair evaluated on those pooled vectors.</summary>
    public static ScrSuiteReport RunSuite(Sae sae, HookedTransformer model, IReadOnlyList<(string Name, Func<Tensor, Tensor?> Fn)>? modelHooks,
        ITextTokenizer tokenizer, IReadOnlyList<ScrDataset> datasets, TextProbingOptions text, Hub.HfHubOptions? hub = null) =>
        RunSuite([sae], model, modelHooks, tokenizer, datasets, text, hub)[0];

    /// <summary><see cref="RunSuite(Sae, HookedTransformer, IReadOnlyList{ValueTuple{string, Func{Tensor, Tensor}}}, ITextTokenizer, IReadOnlyList{ScrDataset}, TextProbingOptions, Hub.HfHubOptions?)"/>
    /// for several SAEs, at one hook or several: each dataset's texts run through the model once (capturing every hook),
    /// per hook their pooled activations and the three probes of each pair shared by its SAEs, each SAE's pooled latents (kept as non-zeros, made dense one SAE at a time) ranked
    /// and ablated; one suite report per SAE, in order (<paramref name="names"/> name the SAEs in errors; <paramref name="artifacts"/>: see <see cref="ProbeArtifacts"/>).</summary>
    public static IReadOnlyList<ScrSuiteReport> RunSuite(IReadOnlyList<Sae> saes, HookedTransformer model, IReadOnlyList<(string Name, Func<Tensor, Tensor?> Fn)>? modelHooks,
        ITextTokenizer tokenizer, IReadOnlyList<ScrDataset> datasets, TextProbingOptions text, Hub.HfHubOptions? hub = null, IReadOnlyList<string>? names = null,
        ProbeArtifacts? artifacts = null)
    {
        ArgumentNullException.ThrowIfNull(saes);
        var groups = ProbeSaes.HookGroups(model, saes, names);
        foreach (var sae in saes) TargetedProbePerturbation.CheckAblatable(sae, "SCR");
        ScrDataset.Check(datasets);
        using var scope = NewDisposeScope();
        var decoders = new List<(Tensor WDec, Tensor Decoder)>();
        using (no_grad())
            foreach (var sae in saes) decoders.Add((sae.WDec.detach().to(ScalarType.Float32).cpu(), TargetedProbePerturbation.AblationDirections(sae)));
        var runs = saes.Select(_ => new List<ScrRun>()).ToList();
        foreach (var ds in datasets)
        {
            var data = ReadDataset(ds, text.MaxTexts, hub);
            var sets = ds.Pairs.Select(pair =>
            {
                var scr = ds.Options with { Column1Vals = pair };
                var (c1, c2) = data.Attributes(scr);
                var (train, test) = BuildSets(c1, c2, data.Fit, scr, ds.Name);
                return (scr, train, test);
            }).ToList();
            var used = sets.SelectMany(x => x.train.Rows().Concat(x.test.Rows())).Distinct().Order().ToArray();
            var at = used.Select((r, i) => (r, i)).ToDictionary(t => t.r, t => t.i);
            var pooled = TextProbing.PoolSparse(saes, model, modelHooks, tokenizer, [.. used.Select(r => data.Texts[r])], text, artifacts, names);
            try
            {
                foreach (var p in pooled)
                {
                    using var dsScope = NewDisposeScope();
                    var dense = p.Features.Select((f, j) => (f.ToDenseFloat32(), decoders[p.Group.Saes[j]].WDec, (Tensor?)decoders[p.Group.Saes[j]].Decoder)).ToList();
                    foreach (var (scr, train, test) in sets)
                    {
                        var trainRows = train.Remap(r => at[r]);
                        var testRows = test.Remap(r => at[r]);
                        var rows = trainRows.Rows().Concat(testRows.Rows()).Distinct().Count();
                        var reports = Evaluate(dense, p.Acts, trainRows, testRows, scr);
                        for (int j = 0; j < p.Group.Saes.Length; j++)
                            runs[p.Group.Saes[j]].Add(new ScrRun(ds.Name, data.Split, reports[j] with { Hook = p.Group.Site, Dataset = ds.Path, Texts = rows }));
                    }
                }
            }
            finally
            {
                foreach (var p in pooled) p.Dispose();
            }
        }
        return [.. runs.Select((r, i) => new ScrSuiteReport(groups.First(g => g.Saes.Contains(i)).Site, r))];
    }

    /// <summary>A dataset's texts read once for all its pairs: the training flags (its own train/test splits when it has
    /// them, <see cref="TextDataset.TrainTestFiles"/>; else 4:1 by position) and, per pair, both attributes of each text.</summary>
    internal sealed record ScrData(List<string> Texts, bool[] Fit, string Split, Func<ScrOptions, (bool?[] C1, bool?[] C2)> Attributes);

    internal static ScrData ReadDataset(ScrDataset ds, int maxTexts, Hub.HfHubOptions? hub = null)
    {
        var scr = ds.Options;
        if (TextProbing.IsLabelledCorpus(ds.Path))
        {
            var corpus = TextProbing.FromCorpus(ds.Path, maxTexts, scr.TrainSetSize, scr.TestSetSize);
            return new ScrData(corpus.Texts, corpus.Fit, PositionSplitName, o => CorpusAttributes(ds.Path, corpus, o));
        }
        string[] fields = [scr.Column1Name, scr.Column2Name], options = ["--label-field", "--spurious-field"];
        var rows = new List<(string Text, string[] Labels)>();
        bool[] fit;
        string split;
        if (TextDataset.TrainTestFiles(ds.Path, hub) is { } tt)
        {
            rows.AddRange(TextDataset.ReadClassified(tt.Train, ds.TextField, fields, options));
            int nTrain = rows.Count;
            rows.AddRange(TextDataset.ReadClassified(tt.Test, ds.TextField, fields, options));
            if (nTrain == 0 || rows.Count == nTrain)
                throw new SaeSharpException($"{ds.Path}: the {(nTrain == 0 ? "train" : "test")} split has no rows");
            fit = [.. Enumerable.Range(0, rows.Count).Select(i => i < nTrain)];
            split = "train/test splits";
        }
        else
        {
            rows.AddRange(TextDataset.ReadClassified(TextDataset.ExpandFiles(ds.Path), ds.TextField, fields, options));
            if (rows.Count == 0) throw new SaeSharpException($"{ds.Path}: no rows");
            fit = TextProbing.PositionSplit(rows.Count, scr.TrainSetSize, scr.TestSetSize);
            split = PositionSplitName;
        }
        var texts = rows.Select(r => r.Text).ToList();
        var col1 = rows.Select(r => r.Labels[0]).ToList();
        var col2 = rows.Select(r => r.Labels[1]).ToList();
        return new ScrData(texts, fit, split, o => ClassAttributes(ds.Path, col1, col2, o));
    }

    /// <summary>How <see cref="ScrRun.Split"/> names the 4:1 split by position.</summary>
    public const string PositionSplitName = "4:1 by position";

    /// <summary>A classification dataset's texts with attribute 1 and 2 of each: true for the positive value, false for
    /// the negative, null for any other. A value that no row has is an error listing the column's values.</summary>
    internal static (List<string> Texts, bool?[] Column1, bool?[] Column2) FromClasses(string path, string textField, ScrOptions scr)
    {
        var rows = TextDataset.ReadClassified(TextDataset.ExpandFiles(path), textField, [scr.Column1Name, scr.Column2Name], ["--label-field", "--spurious-field"]).ToList();
        var (c1, c2) = ClassAttributes(path, [.. rows.Select(r => r.Labels[0])], [.. rows.Select(r => r.Labels[1])], scr);
        return ([.. rows.Select(r => r.Text)], c1, c2);
    }

    private static (bool?[] C1, bool?[] C2) ClassAttributes(string path, IReadOnlyList<string> col1, IReadOnlyList<string> col2, ScrOptions scr)
    {
        foreach (var (vals, what) in new[] { (scr.Column1Vals, "attribute 1"), (scr.Column2Vals, "attribute 2") })
            if (vals.Count != 2 || vals[0] == vals[1])
                throw new SaeSharpException($"SCR: {what} needs two different values (positive, negative), got [{string.Join(", ", vals)}]");
        if (scr.Column1Name == scr.Column2Name && scr.Column1Vals.ToHashSet(StringComparer.Ordinal).SetEquals(scr.Column2Vals))
            throw new SaeSharpException($"SCR: the spurious attribute ({scr.Column2Name}: {string.Join(",", scr.Column2Vals)}) is attribute 1 itself: " +
                                        "give another column (--spurious-field) or other values (--spurious-classes)");
        bool?[] Attribute(IReadOnlyList<string> values, IReadOnlyList<string> vals, IReadOnlyDictionary<string, string>? mapping, string column, string option)
        {
            var stored = vals.Select(v => mapping is not null && mapping.TryGetValue(v, out var s) ? s : v).ToArray();
            var present = values.ToHashSet(StringComparer.Ordinal);
            for (int i = 0; i < vals.Count; i++)
                if (!present.Contains(stored[i]))
                {
                    var seen = values.Distinct().ToList();
                    string v = vals[i] == stored[i] ? $"'{vals[i]}'" : $"'{vals[i]}' (stored as '{stored[i]}')";
                    throw new SaeSharpException($"{path}: no text has {v} in '{column}' ({option}){NameSuggestion.WithKnown(stored[i], seen, "values")}");
                }
            return [.. values.Select(v => v == stored[0] ? true : v == stored[1] ? (bool?)false : null)];
        }
        return (Attribute(col1, scr.Column1Vals, scr.Column1Mapping, scr.Column1Name, "--classes"),
            Attribute(col2, scr.Column2Vals, scr.Column2Mapping, scr.Column2Name, "--spurious-classes"));
    }

    /// <summary>A labelled corpus's first <paramref name="maxTexts"/> documents with the two attributes read from their
    /// labels: one label L gives true where a document has L and false elsewhere; two (L, M) give true with L and not M,
    /// false with M and not L, null otherwise. A label no document has is an error.</summary>
    internal static (List<string> Texts, bool?[] Column1, bool?[] Column2) FromCorpus(string path, int maxTexts, ScrOptions scr)
    {
        var data = TextProbing.FromCorpus(path, maxTexts, scr.TrainSetSize, scr.TestSetSize);
        var (c1, c2) = CorpusAttributes(path, data, scr);
        return (data.Texts, c1, c2);
    }

    private static (bool?[] C1, bool?[] C2) CorpusAttributes(string path, ProbeTexts data, ScrOptions scr)
    {
        if (scr.Column1Vals.ToHashSet(StringComparer.Ordinal).SetEquals(scr.Column2Vals))
            throw new SaeSharpException($"SCR: the spurious attribute (--spurious-classes {string.Join(",", scr.Column2Vals)}) is attribute 1 itself " +
                                        $"(--classes {string.Join(",", scr.Column1Vals)}): give a different label");
        bool?[] Attribute(IReadOnlyList<string> vals, string what, string option)
        {
            if (vals.Count is < 1 or > 2 || vals.Distinct().Count() != vals.Count)
                throw new SaeSharpException($"SCR on a labelled corpus: {what} ({option}) is one label or two different ones, got [{string.Join(", ", vals)}]");
            var ids = vals.Select(v => data.Names.IndexOf(v) is >= 0 and var i ? i
                : throw new SaeSharpException($"{path}: no document of the first {data.Texts.Count} has label '{v}' ({option}){NameSuggestion.WithKnown(v, data.Names, "labels")}")).ToArray();
            return [.. data.Labels.Select(ls =>
            {
                bool p = ls.Contains(ids[0]);
                if (ids.Length == 1) return p;
                bool q = ls.Contains(ids[1]);
                return p && !q ? true : q && !p ? (bool?)false : null;
            })];
        }
        return (Attribute(scr.Column1Vals, "attribute 1", "--classes"), Attribute(scr.Column2Vals, "attribute 2", "--spurious-classes"));
    }

    /// <summary>
    /// SAEBench's <c>get_spurious_corr_data</c> on each half (<paramref name="fit"/>: true = training): the rows of the four
    /// quadrants in dataset order, m = a quarter of the half's set size, and the six sets of <see cref="ScrSets"/>, each
    /// shuffled as SAEBench shuffles it (<see cref="ScrOptions.Seed"/>): on the same rows and seed, the same texts in the same
    /// order. SAEBench
    /// asserts that every quadrant has m texts and the two agreeing ones more than 2m; here m shrinks to what the half holds
    /// (an error below <see cref="ScrOptions.MinTextsPerQuadrant"/>, naming every quadrant that fails with its count), with a warning naming the
    /// counts, or an error with <see cref="ScrOptions.StrictSizes"/>. <paramref name="dataset"/> names the data in both.
    /// </summary>
    public static (ScrSets Train, ScrSets Test) BuildSets(IReadOnlyList<bool?> column1, IReadOnlyList<bool?> column2, IReadOnlyList<bool> fit, ScrOptions scr,
        string? dataset = null)
    {
        if (column1.Count != column2.Count || column1.Count != fit.Count)
            throw new SaeSharpException($"SCR: {column1.Count} attribute-1 values, {column2.Count} attribute-2 values and {fit.Count} split flags must agree");
        if (scr.TrainSetSize < 4 || scr.TestSetSize < 4)
            throw new SaeSharpException($"SCR: train and test set sizes must be at least 4 (one text per quadrant), got {scr.TrainSetSize} and {scr.TestSetSize}");
        if (scr.MinTextsPerQuadrant < 1)
            throw new SaeSharpException($"SCR: the fewest texts per quadrant must be positive, got {scr.MinTextsPerQuadrant}");
        string V(IReadOnlyList<string> vals, bool pos) => pos ? vals[0] : vals.Count > 1 ? vals[1] : "not " + vals[0];
        ScrSets Half(bool train)
        {
            int want = (train ? scr.TrainSetSize : scr.TestSetSize) / 4;
            string half = train ? "training" : "test";
            var cell = new Dictionary<(bool, bool), List<int>> { [(true, true)] = [], [(true, false)] = [], [(false, true)] = [], [(false, false)] = [] };
            for (int i = 0; i < fit.Count; i++)
                if (fit[i] == train && column1[i] is { } a && column2[i] is { } b) cell[(a, b)].Add(i);
            // m limits: every quadrant ≥ m, the agreeing quadrants > 2m (SAEBench's assertions).
            var limits = cell.Select(kv => (kv.Key, Limit: kv.Key.Item1 == kv.Key.Item2 ? (kv.Value.Count - 1) / 2 : kv.Value.Count)).ToList();
            int m = Math.Min(want, limits.Min(l => l.Limit));
            string Name((bool, bool) q) => $"'{V(scr.Column1Vals, q.Item1)}' × '{V(scr.Column2Vals, q.Item2)}'";
            // Each quadrant that fails SAEBench's assertion for q texts per quadrant, with its count and what it needs.
            string Failing(int q) => string.Join(", ", cell.Where(kv => kv.Key.Item1 == kv.Key.Item2 ? kv.Value.Count <= 2 * q : kv.Value.Count < q)
                .Select(kv => $"{Name(kv.Key)} has {kv.Value.Count}, needs {(kv.Key.Item1 == kv.Key.Item2 ? $"more than 2 × {q}" : q.ToString(CultureInfo.InvariantCulture))}"));
            string Sizes() => "quadrant sizes " + string.Join(", ", cell.Select(kv => $"{V(scr.Column1Vals, kv.Key.Item1)} × {V(scr.Column2Vals, kv.Key.Item2)} {kv.Value.Count}"));
            if (m < scr.MinTextsPerQuadrant)
                throw new SaeSharpException($"SCR: too few texts in the {half} half: {Failing(scr.MinTextsPerQuadrant)} " +
                                            $"({scr.MinTextsPerQuadrant} texts per quadrant, the agreeing quadrants twice that for the biased probe; {Sizes()}); read more texts");
            if (m < want)
            {
                string on = $"SCR{(dataset is null ? "" : " on " + dataset)}, {V(scr.Column1Vals, true)} / {V(scr.Column1Vals, false)}";
                string msg = $"in the {half} half {Failing(want)} ({want} per quadrant, a quarter of {(train ? "train_set_size" : "test_set_size")} " +
                             $"{(train ? scr.TrainSetSize : scr.TestSetSize)}, the agreeing quadrants twice that for the biased probe; {Sizes()})";
                if (scr.StrictSizes)
                    throw new SaeSharpException($"{on}: too few texts: {msg}; read more texts, or leave out --strict-sizes to shrink the quadrants to the data");
                DatasetWarnings.Report($"{on}: {m} {half} texts per quadrant where SAEBench has {want}: {msg}");
            }
            int[] Take(bool a, bool b, int k) => [.. cell[(a, b)].Take(k)];
            int[] column1Pos = [.. Take(true, true, m), .. Take(true, false, m)], column1Neg = [.. Take(false, true, m), .. Take(false, false, m)];
            int[] column2Pos = [.. Take(true, true, m), .. Take(false, true, m)], column2Neg = [.. Take(true, false, m), .. Take(false, false, m)];
            int[] biasedPos = Take(true, true, 2 * m), biasedNeg = Take(false, false, 2 * m);
            // SAEBench's order: combined_pos (attribute 2 positive), combined_neg, pos_combined (attribute 1 positive),
            // neg_combined, pos_pos, neg_neg, each shuffled in turn by one default_rng(random_seed) per half.
            var rng = new NumpyRandom(scr.Seed);
            foreach (var set in new[] { column2Pos, column2Neg, column1Pos, column1Neg, biasedPos, biasedNeg }) rng.Shuffle(set);
            return new ScrSets(m, column1Pos, column1Neg, column2Pos, column2Neg, biasedPos, biasedNeg);
        }
        return (Half(true), Half(false));
    }

    /// <summary>
    /// SCR on pooled activations: <paramref name="features"/> [n, d_sae] (mean SAE latents per text), <paramref name="acts"/>
    /// [n, d] (mean activation per text), <paramref name="wDec"/> [d_sae, d] (the decoder the probe directions are read
    /// through), <paramref name="decoder"/> [d_sae, d] (what zeroing one unit of a latent removes; null: <paramref name="wDec"/>),
    /// and the sets of both halves (<see cref="BuildSets"/>) as row indices.
    /// </summary>
    public static ScrReport Evaluate(Tensor features, Tensor acts, Tensor wDec, Tensor? decoder, ScrSets train, ScrSets test, ScrOptions scr) =>
        Evaluate([(features, wDec, decoder)], acts, train, test, scr)[0];

    /// <summary><see cref="Evaluate(Tensor, Tensor, Tensor, Tensor?, ScrSets, ScrSets, ScrOptions)"/> for several SAEs'
    /// features of the same texts (each with its W_dec and ablation directions): the three probes on the model's activations
    /// and their clean accuracies are made once, then each SAE's latents are ranked and ablated; one report per SAE.</summary>
    internal static IReadOnlyList<ScrReport> Evaluate(IReadOnlyList<(Tensor Features, Tensor WDec, Tensor? Decoder)> saes, Tensor acts, ScrSets train, ScrSets test, ScrOptions scr)
    {
        long n = acts.shape[0];
        var nValuesPer = new List<IReadOnlyList<int>>();
        foreach (var (features, wDec, decoderGiven) in saes)
        {
            if (features.dim() != 2 || acts.dim() != 2 || features.shape[0] != n)
                throw new SaeSharpException($"SCR: features [{string.Join(", ", features.shape)}] and activations [{string.Join(", ", acts.shape)}] must be [texts, d_sae] and [texts, d]");
            var decoder = decoderGiven ?? wDec;
            long dSae = features.shape[1], d = acts.shape[1];
            foreach (var (w, what) in new[] { (wDec, "W_dec"), (decoder, "the ablation directions") })
                if (w.dim() != 2 || w.shape[0] != dSae || w.shape[1] != d)
                    throw new SaeSharpException($"SCR: {what} is [{string.Join(", ", w.shape)}]; expected [d_sae={dSae}, d={d}]");
            nValuesPer.Add(TargetedProbePerturbation.NValuesFor(scr.NValues, dSae, "SCR"));
        }
        if (!(scr.ProbeL1Penalty >= 0) || double.IsInfinity(scr.ProbeL1Penalty))
            throw new SaeSharpException($"SCR: the probe L1 penalty must be finite and ≥ 0, got {scr.ProbeL1Penalty}");
        foreach (var s in new[] { train, test })
            for (int p = 0; p < 3; p++)
            {
                var (pos, neg) = s.Probe(p);
                if (pos.Length == 0 || neg.Length == 0 || pos.Concat(neg).Any(r => r < 0 || r >= n))
                    throw new SaeSharpException($"SCR: every set needs rows in 0..{n - 1} of both classes");
            }
        string V(IReadOnlyList<string> vals, bool pos) => pos ? vals[0] : vals.Count > 1 ? vals[1] : "not " + vals[0];
        string c1 = $"{V(scr.Column1Vals, true)} / {V(scr.Column1Vals, false)}", c2 = $"{V(scr.Column2Vals, true)} / {V(scr.Column2Vals, false)}";
        string biased = $"{V(scr.Column2Vals, true)}_{V(scr.Column1Vals, true)} / {V(scr.Column2Vals, false)}_{V(scr.Column1Vals, false)}";
        string[] names = [c1, c2, biased];
        using var scope = NewDisposeScope();
        using var _ = no_grad();
        var x32 = acts.to(ScalarType.Float32).cpu();
        static (Tensor Rows, bool[] Y) Set(ScrSets s, int p)
        {
            var (pos, neg) = s.Probe(p);
            return (tensor(pos.Concat(neg).Select(r => (long)r).ToArray()), [.. pos.Select(_ => true), .. neg.Select(_ => false)]);
        }
        var probes = Enumerable.Range(0, 3).Select(p =>
        {
            var (rows, y) = Set(train, p);
            return LogisticRegression.FitL1(x32.index_select(0, rows), y, scr.ProbeL1Penalty);
        }).ToArray();
        double Acc(Tensor x, int probe, int data)
        {
            var (rows, y) = Set(test, data);
            return probes[probe].Accuracy(x.index_select(0, rows), y);
        }
        var clean = new Dictionary<string, double>();
        for (int p = 0; p < 3; p++) clean[names[p]] = Acc(x32, p, p);
        for (int p = 0; p < 3; p++)
            for (int q = 0; q < 3; q++)
                if (p != q) clean[$"{names[p]} probe on {names[q]} data"] = Acc(x32, p, q);
        var reports = new List<ScrReport>();
        for (int si = 0; si < saes.Count; si++)
        {
            using var saeScope = NewDisposeScope();
            var (f32, w32, dec32) = TargetedProbePerturbation.Float32Cpu(saes[si]);
            var nValues = nValuesPer[si];
            var directions = new List<ScrDirection>();
            // Dir 1: attribute 2's probe's latents ablated, the biased probe on attribute 1's data; dir 2 the reverse.
            foreach (var (dir, ablatedProbe, evalData) in new[] { (1, 1, 0), (2, 0, 1) })
            {
                using var iter = NewDisposeScope();
                var (rows, y) = Set(train, ablatedProbe);
                var effects = TargetedProbePerturbation.NodeEffects(f32.index_select(0, rows), y, w32, probes[ablatedProbe].Coef, performScr: true);
                var ablated = new SortedDictionary<int, int[]>();
                var changed = new SortedDictionary<int, double>();
                foreach (int k in nValues)
                {
                    ablated[k] = TargetedProbePerturbation.TopNonZero(effects, k);
                    using var ab = TargetedProbePerturbation.Ablate(x32, f32, dec32, ablated[k]);
                    changed[k] = Acc(ab, 2, evalData);
                }
                directions.Add(new ScrDirection(dir, names[ablatedProbe], names[evalData], clean[names[evalData]],
                    clean[$"{biased} probe on {names[evalData]} data"], ablated, changed));
            }
            reports.Add(new ScrReport("", "", n, nValues, c1, c2, biased, train.PerQuadrant, test.PerQuadrant, new Dictionary<string, double>(clean), directions));
        }
        return reports;
    }
}
