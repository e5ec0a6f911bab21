using System.Text.Json;
using System.Text.Json.Nodes;
using SaeSharp.Evaluation;
using SaeSharp.Models;
using SaeSharp.Saes;
using SaeSharp.Tokenizers;
using TorchSharp;
using static TorchSharp.torch;

namespace SaeSharp.Analysis;

/// <summary>Options of <see cref="SparseProbing"/> (<c>sae probe</c>); the defaults are SAEBench's where it has one.</summary>
public sealed record SparseProbingOptions
{
    /// <summary>Numbers of features (or model dimensions) each sparse probe sees (SAEBench's original list; its current
    /// default is 1, 2, 5).</summary>
    public IReadOnlyList<int> KValues { get; init; } = [1, 2, 5, 10, 20, 50];
    /// <summary>Balanced training examples per task, half positive (SAEBench's <c>probe_train_set_size</c>).</summary>
    public int TrainSetSize { get; init; } = 4000;
    /// <summary>Balanced test examples per task, half positive (SAEBench's <c>probe_test_set_size</c>).</summary>
    public int TestSetSize { get; init; } = 1000;
    /// <summary>A label is a task when it has at least this many tokens (and as many without it) in each half.</summary>
    public int MinPositives { get; init; } = 50;
    /// <summary>Seed of the class balancing draws (SAEBench's <c>random_seed</c>).</summary>
    public int Seed { get; init; } = 42;
    /// <summary>Inverse L2 strength of every probe (sklearn's <c>C</c>, SAEBench's 1.0).</summary>
    public double C { get; init; } = 1.0;
    /// <summary>Labels to probe; null: every label with enough positives.</summary>
    public IReadOnlyList<string>? Labels { get; init; }
    /// <summary>Each example has exactly one class (a classification dataset): a task's negatives are drawn evenly from the
    /// other classes, as SAEBench's <c>prepare_probe_data</c> does — ⌈positives / other classes⌉ at random from each, then
    /// as many as the positives at random from those. False: from every example without the label.</summary>
    public bool OneVsRestClasses { get; init; }
    /// <summary>What an example is, for messages: "tokens", or "texts" when mean-pooled.</summary>
    internal string Examples { get; init; } = "tokens";
}

/// <summary>One binary task of <see cref="SparseProbing"/>: test accuracies of the probes for one label.</summary>
/// <param name="Label">The label (positives: tokens carrying it).</param>
/// <param name="TrainExamples">Balanced training examples.</param>
/// <param name="TestExamples">Balanced test examples.</param>
/// <param name="LlmTestAccuracy">Probe on the whole model activation at the hook.</param>
/// <param name="LlmTopK">k → probe on the k model dimensions with the largest |difference of class means|.</param>
/// <param name="SaeTopK">k → probe on the k SAE features with the largest |difference of class means|.</param>
/// <param name="TopFeatures">SAE features by |difference of class means| on the training split, largest first (max k of them).</param>
/// <param name="SaeTestAccuracy">SAEBench's <c>sae_test_accuracy</c>: the probe on all SAE features (at any width:
/// <see cref="LogisticSolver"/>).</param>
/// <param name="SaeProbeFeatures">Features that fire in the training set (the columns that probe is fitted on).</param>
public sealed record SparseProbingTask(string Label, int TrainExamples, int TestExamples, double LlmTestAccuracy,
    IReadOnlyDictionary<int, double> LlmTopK, IReadOnlyDictionary<int, double> SaeTopK, IReadOnlyList<int> TopFeatures,
    double? SaeTestAccuracy = null, int SaeProbeFeatures = 0);

/// <summary>Result of <see cref="SparseProbing"/>: every task and the means SAEBench reports.</summary>
/// <param name="Hook">Hook the SAE reads (empty when <see cref="SparseProbing.Evaluate"/> was given the activations).</param>
/// <param name="Tokens">Labelled tokens harvested (both halves).</param>
/// <param name="KValues">The k list.</param>
/// <param name="Tasks">One entry per label probed.</param>
/// <param name="Absorption">Feature absorption, when it was asked for.</param>
/// <param name="Pooling">"token": every labelled token is an example (<see cref="Tokens"/> counts them); "mean": every
/// text is one, its activations mean-pooled (<see cref="TextProbing"/>; <see cref="Tokens"/> counts the texts).</param>
public sealed record SparseProbingReport(string Hook, long Tokens, IReadOnlyList<int> KValues, IReadOnlyList<SparseProbingTask> Tasks,
    AbsorptionReport? Absorption = null, string Pooling = "token")
{
    /// <summary>Mean over tasks under SAEBench's key names: <c>llm_test_accuracy</c>, <c>llm_top_{k}_test_accuracy</c>,
    /// <c>sae_top_{k}_test_accuracy</c>.</summary>
    public IReadOnlyDictionary<string, double> Means()
    {
        var m = new Dictionary<string, double>();
        if (Tasks.Count == 0) return m;
        m["llm_test_accuracy"] = Tasks.Average(t => t.LlmTestAccuracy);
        foreach (int k in KValues) m[$"llm_top_{k}_test_accuracy"] = Tasks.Average(t => t.LlmTopK[k]);
        if (Tasks.All(t => t.SaeTestAccuracy is not null)) m["sae_test_accuracy"] = Tasks.Average(t => t.SaeTestAccuracy!.Value);
        foreach (int k in KValues) m[$"sae_top_{k}_test_accuracy"] = Tasks.Average(t => t.SaeTopK[k]);
        return m;
    }

    /// <summary>Writes SAEBench's sparse probing output (<c>SparseProbingEvalOutput</c>, its JSON schema
    /// <c>eval_output_schema_sparse_probing.json</c>): <see cref="SaeBenchEnvelope"/> with <c>eval_type_id</c>
    /// "sparse_probing", <c>eval_config</c> (<c>dataset_names</c> [<paramref name="datasetName"/>], <c>k_values</c>, the
    /// model, and <paramref name="run"/>'s further fields), <c>eval_result_metrics</c> (the means in SAEBench's <c>llm</c>
    /// and <c>sae</c> groups), one <c>eval_result_details</c> entry (<c>dataset_name</c> = <c>{dataset}_results</c>, the
    /// means), and <c>eval_result_unstructured</c> as SAEBench's per-class dictionary (<c>{dataset}_results</c> → label → its
    /// accuracies, here with its set sizes, probe features and top features) with SaeSharp's extras beside it:
    /// <c>producer</c>, <c>hook</c>, <c>pooling</c>, <c>tokens</c> or <c>texts</c>, and <c>absorption</c>
    /// (<see cref="SparseProbingSuiteReport.WriteJson"/> of this one dataset).</summary>
    public void WriteJson(string path, string datasetName, SaeBenchRun? run = null)
    {
        ArgumentNullException.ThrowIfNull(datasetName);
        new SparseProbingSuiteReport(Hook, [new SparseProbingRun(datasetName, "", this)]).WriteJson(path, run);
    }
}

/// <summary>
/// SAEBench's k-sparse probing on token labels (<c>sae probe</c>). For each label with enough positives, a balanced
/// training set (from the fitting half) and test set (from the evaluation half); the k SAE features with the largest
/// |mean over positives − mean over negatives| on the training set; a <see cref="LogisticRegression"/> probe on those k
/// features; its test accuracy. Baselines: the same on the model's activation dimensions, and a probe on the whole
/// activation (SAEBench's <c>llm_test_accuracy</c>). Tasks are tokens, not mean-pooled texts. See docs/labels.md.
/// </summary>
public static class SparseProbing
{
    /// <summary>Runs the model over <paramref name="datasetPath"/>'s labelled tokens, encodes the hook's activations
    /// with the SAE, and probes every label (and measures absorption when <paramref name="absorption"/> is given).</summary>
    public static SparseProbingReport Run(Sae sae, HookedTransformer model, IReadOnlyList<(string Name, Func<Tensor, Tensor?> Fn)>? modelHooks,
        ITextTokenizer tokenizer, string datasetPath, LabelScoringOptions harvest, SparseProbingOptions options, AbsorptionOptions? absorption = null) =>
        Run([sae], model, modelHooks, tokenizer, datasetPath, harvest, options, absorption)[0];

    /// <summary><see cref="Run(Sae, HookedTransformer, IReadOnlyList{ValueTuple{string, Func{Tensor, Tensor}}}, ITextTokenizer, string, LabelScoringOptions, SparseProbingOptions, AbsorptionOptions)"/>
    /// for several SAEs, at one hook or several, in one pass of the model capturing every hook: per hook the model's
    /// activations (and the probes on them) are shared by its SAEs, each SAE gets its report, in order. SAEs at one hook of
    /// different d_in are an error naming them (<paramref name="names"/>, else their position). <paramref name="artifacts"/>: see <see cref="ProbeArtifacts"/>.</summary>
    public static IReadOnlyList<SparseProbingReport> Run(IReadOnlyList<Sae> saes, HookedTransformer model, IReadOnlyList<(string Name, Func<Tensor, Tensor?> Fn)>? modelHooks,
        ITextTokenizer tokenizer, string datasetPath, LabelScoringOptions harvest, SparseProbingOptions options, AbsorptionOptions? absorption = null,
        IReadOnlyList<string>? names = null, ProbeArtifacts? artifacts = null)
    {
        ArgumentNullException.ThrowIfNull(saes);
        var harvested = LabelScoring.HarvestHooks(saes, model, modelHooks, tokenizer, datasetPath, harvest with { NeuronHook = null }, names, artifacts);
        try
        {
            var reports = new SparseProbingReport[saes.Count];
            foreach (var (group, h) in harvested)
            {
                var evaluated = EvaluateSparse(h.PerSae, h.Neurons, h.TokenLabels, h.LabelNames, h.Fit, options);
                for (int j = 0; j < group.Saes.Length; j++)
                {
                    int i = group.Saes[j];
                    var report = evaluated[j] with { Hook = h.Hook };
                    if (absorption is not null)
                    {
                        using var scope = NewDisposeScope();
                        var wDec = saes[i].WDec.detach().to(ScalarType.Float32).cpu();
                        report = report with { Absorption = FeatureAbsorption.EvaluateSparse(h.PerSae[j], h.Neurons, wDec, h.TokenLabels, h.LabelNames, h.Fit, absorption) };
                    }
                    reports[i] = report;
                }
            }
            return reports;
        }
        finally
        {
            foreach (var (_, h) in harvested) h.Dispose();
        }
    }

    /// <summary>
    /// Probes every label on given activations: <paramref name="features"/> [n, d_sae] (SAE features), <paramref name="modelActs"/>
    /// [n, d] (the activation they encode), <paramref name="tokenLabels"/>[i] the label ids of token i, <paramref name="fit"/>[i]
    /// true for the training half.
    /// </summary>
    public static SparseProbingReport Evaluate(Tensor features, Tensor modelActs, IReadOnlyList<int[]> tokenLabels, IReadOnlyList<string> labelNames,
        bool[] fit, SparseProbingOptions options)
    {
        if (features.dim() != 2) throw new SaeSharpException($"sparse probing: features must be [n, d_sae], got [{string.Join(", ", features.shape)}]");
        if (features.shape[0] != tokenLabels.Count) throw Disagree($"features [{string.Join(", ", features.shape)}]", modelActs, fit, tokenLabels.Count);
        return EvaluateSparse(SparseRows.FromDense(features), modelActs, tokenLabels, labelNames, fit, options);
    }

    private static SaeSharpException Disagree(string features, Tensor modelActs, bool[] fit, int n) =>
        new($"sparse probing: {features}, activations [{string.Join(", ", modelActs.shape)}], " +
            $"{fit.Length} split flags and {n} label lists must agree on the number of tokens");

    /// <summary><see cref="Evaluate(Tensor, Tensor, IReadOnlyList{int[]}, IReadOnlyList{string}, bool[], SparseProbingOptions)"/>
    /// on the features' non-zeros: each task selects its rows from them, ranks features by class-mean difference over the
    /// non-zeros, fits the k-sparse probes on dense [n, k] slices and the all-feature probe on the non-zeros (or on the
    /// dense slice of the firing columns when they are no more than the rows), so memory follows the non-zeros, not n × d_sae.</summary>
    internal static SparseProbingReport EvaluateSparse(SparseRows features, Tensor modelActs, IReadOnlyList<int[]> tokenLabels, IReadOnlyList<string> labelNames,
        bool[] fit, SparseProbingOptions options) => EvaluateSparse([features], modelActs, tokenLabels, labelNames, fit, options)[0];

    /// <summary><see cref="EvaluateSparse(SparseRows, Tensor, IReadOnlyList{int[]}, IReadOnlyList{string}, bool[], SparseProbingOptions)"/>
    /// for several SAEs' features of the same examples: each task's balanced sets and the probes on the model's activations
    /// are made once and shared by every SAE's report (one per entry of <paramref name="perSae"/>, in order).</summary>
    internal static IReadOnlyList<SparseProbingReport> EvaluateSparse(IReadOnlyList<SparseRows> perSae, Tensor modelActs, IReadOnlyList<int[]> tokenLabels,
        IReadOnlyList<string> labelNames, bool[] fit, SparseProbingOptions options)
    {
        int n = tokenLabels.Count;
        foreach (var features in perSae)
            if (modelActs.dim() != 2 || features.Rows != n || modelActs.shape[0] != n || fit.Length != n)
                throw Disagree($"features [{features.Rows}, {features.Columns}]", modelActs, fit, n);
        if (options.KValues.Count == 0 || options.KValues.Any(k => k < 1))
            throw new SaeSharpException($"sparse probing: k values must be positive, got [{string.Join(", ", options.KValues)}]");
        var tasks = perSae.Select(_ => new List<SparseProbingTask>()).ToList();
        foreach (int l in TaskLabels(tokenLabels, labelNames, fit, options.MinPositives, options.Labels, options.Examples))
        {
            var rng = new Random(options.Seed);
            var (trainRows, yTrain) = options.OneVsRestClasses ? BalancedOneVsRest(tokenLabels, l, fit, true, options.TrainSetSize, rng)
                : Balanced(tokenLabels, l, fit, true, options.TrainSetSize, rng);
            var (testRows, yTest) = options.OneVsRestClasses ? BalancedOneVsRest(tokenLabels, l, fit, false, options.TestSetSize, rng)
                : Balanced(tokenLabels, l, fit, false, options.TestSetSize, rng);
            using var scope = NewDisposeScope();
            var tr = tensor(trainRows);
            var te = tensor(testRows);
            var xTrain = modelActs.index_select(0, tr);
            var xTest = modelActs.index_select(0, te);
            double llm = LogisticRegression.Fit(xTrain, yTrain, options.C).Accuracy(xTest, yTest);
            var llmOrder = MeanDifferenceOrder(xTrain, yTrain, absolute: true);
            var llmTop = new SortedDictionary<int, double>();
            foreach (int k in options.KValues) llmTop[k] = TopKAccuracy(xTrain, yTrain, xTest, yTest, llmOrder, k, options.C);
            for (int s = 0; s < perSae.Count; s++)
            {
                var fTrain = perSae[s].Select(trainRows);
                var fTest = perSae[s].Select(testRows);
                var saeOrder = MeanDifferenceOrder(fTrain.MeanDifference(yTrain), absolute: true);
                var saeTop = new SortedDictionary<int, double>();
                foreach (int k in options.KValues)
                {
                    using var kScope = NewDisposeScope();
                    var top = saeOrder.Take(k).ToArray();
                    saeTop[k] = LogisticRegression.Fit(fTrain.Dense(top), yTrain, options.C).Accuracy(fTest.Dense(top), yTest);
                }
                // The probe on all SAE features: a feature that is 0 on every training row gets weight 0 at the optimum (its
                // gradient is its own penalty term), so fitting on the columns that fire gives the same probe. When more fire
                // than there are training rows the fit runs in the rows' span (LogisticSolver.Representer) on the non-zeros,
                // where a column of zeros adds nothing to X·Xᵀ and gets weight exactly 0; otherwise on the dense slice of the
                // firing columns.
                var firing = fTrain.NonZeroColumns();
                int nFiring = firing.Length;
                double? saeAll;
                using var allScope = NewDisposeScope();
                if (nFiring == 0) saeAll = TestMajority(yTrain, yTest);
                else if (nFiring > trainRows.Length)
                    saeAll = LogisticRegression.FitRepresenter(SparseColumns.FromRows(fTrain), yTrain, options.C).Accuracy(fTest, yTest);
                else
                {
                    var probe = LogisticRegression.Fit(fTrain.Dense(firing), yTrain, options.C);
                    saeAll = probe.Accuracy(fTest.Dense(firing), yTest);
                }
                tasks[s].Add(new SparseProbingTask(labelNames[l], trainRows.Length, testRows.Length, llm, llmTop, saeTop,
                    saeOrder.Take(options.KValues.Max()).ToArray(), saeAll, nFiring));
            }
        }
        return [.. tasks.Select(t => new SparseProbingReport("", n, options.KValues, t))];
    }

    /// <summary>Test accuracy of a probe with no inputs (w empty): b alone predicts the training majority, or class 0 on a tie
    /// (b = 0 on a balanced set: w·x + b &gt; 0 never holds).</summary>
    private static double TestMajority(bool[] yTrain, bool[] yTest)
    {
        int pos = yTrain.Count(v => v);
        bool predict = pos > yTrain.Length - pos;
        return yTest.Length == 0 ? 0 : (double)yTest.Count(v => v == predict) / yTest.Length;
    }

    private static double TopKAccuracy(Tensor train, bool[] yTrain, Tensor test, bool[] yTest, int[] order, int k, double c)
    {
        using var scope = NewDisposeScope();
        var idx = tensor(order.Take(k).Select(i => (long)i).ToArray());
        return LogisticRegression.Fit(train.index_select(1, idx), yTrain, c).Accuracy(test.index_select(1, idx), yTest);
    }

    /// <summary>Labels probed: those asked for (each must exist), else every label with <paramref name="minPositives"/>
    /// tokens with and without it in each half, in order of first appearance.</summary>
    internal static int[] TaskLabels(IReadOnlyList<int[]> tokenLabels, IReadOnlyList<string> labelNames, bool[] fit, int minPositives,
        IReadOnlyList<string>? asked, string examples = "tokens")
    {
        long fitN = fit.Count(f => f), evalN = fit.Length - fitN;
        var pf = new long[labelNames.Count];
        var pe = new long[labelNames.Count];
        for (int i = 0; i < tokenLabels.Count; i++)
            foreach (int l in tokenLabels[i]) (fit[i] ? pf : pe)[l]++;
        bool Enough(int l) => Math.Min(Math.Min(pf[l], fitN - pf[l]), Math.Min(pe[l], evalN - pe[l])) >= minPositives;
        if (asked is null) return [.. Enumerable.Range(0, labelNames.Count).Where(Enough)];
        var result = new List<int>();
        foreach (var name in asked)
        {
            int l = labelNames.ToList().IndexOf(name);
            if (l < 0) throw new SaeSharpException($"label '{name}' is on no {(examples == "tokens" ? "token" : "text")} read{NameSuggestion.For(name, labelNames)}; labels seen: {string.Join(", ", labelNames.Order(StringComparer.Ordinal))}");
            if (!Enough(l))
                throw new SaeSharpException($"label '{name}' has {pf[l]} {examples} in the training half and {pe[l]} in the test half (and {fitN - pf[l]} / {evalN - pe[l]} without it); " +
                                            $"each of the four must be at least {minPositives}: read more {examples}");
            result.Add(l);
        }
        return [.. result];
    }

    /// <summary>SAEBench's class balancing: from the tokens of one half, min(positives, negatives, size/2) positives and as
    /// many negatives, drawn at random, then shuffled together.</summary>
    internal static (long[] Rows, bool[] Y) Balanced(IReadOnlyList<int[]> tokenLabels, int label, bool[] fit, bool half, int size, Random rng)
    {
        var pos = new List<long>();
        var neg = new List<long>();
        for (int i = 0; i < tokenLabels.Count; i++)
            if (fit[i] == half) (tokenLabels[i].Contains(label) ? pos : neg).Add(i);
        int m = Math.Min(Math.Min(pos.Count, neg.Count), size / 2);
        var p = pos.ToArray();
        var q = neg.ToArray();
        rng.Shuffle(p);
        rng.Shuffle(q);
        var rows = p.Take(m).Select(r => (r, true)).Concat(q.Take(m).Select(r => (r, false))).ToArray();
        rng.Shuffle(rows);
        return ([.. rows.Select(r => r.r)], [.. rows.Select(r => r.Item2)]);
    }

    /// <summary>SAEBench's <c>prepare_probe_data</c> for one class of a dataset whose examples have one class each: from one
    /// half, the class's examples (at most size/2, at random) as positives; ⌈positives / other classes⌉ drawn at random
    /// from each other class, then as many as the positives drawn at random from those as negatives (when the other classes
    /// hold fewer, the positives are cut to match); shuffled together.</summary>
    internal static (long[] Rows, bool[] Y) BalancedOneVsRest(IReadOnlyList<int[]> classes, int label, bool[] fit, bool half, int size, Random rng)
    {
        var byClass = new SortedDictionary<int, List<long>>();
        for (int i = 0; i < classes.Count; i++)
        {
            if (fit[i] != half) continue;
            if (classes[i].Length != 1) throw new SaeSharpException($"one-vs-rest probing needs one class per example; example {i} has {classes[i].Length}");
            if (!byClass.TryGetValue(classes[i][0], out var list)) byClass[classes[i][0]] = list = [];
            list.Add(i);
        }
        var pos = byClass.GetValueOrDefault(label)?.ToArray() ?? [];
        rng.Shuffle(pos);
        int m = Math.Min(pos.Length, size / 2);
        var others = byClass.Where(kv => kv.Key != label).ToArray();
        var pool = new List<long>();
        if (others.Length > 0)
        {
            int perClass = (m + others.Length - 1) / others.Length;
            foreach (var (_, rows) in others)
            {
                var r = rows.ToArray();
                rng.Shuffle(r);
                pool.AddRange(r.Take(perClass));
            }
        }
        var neg = pool.ToArray();
        rng.Shuffle(neg);
        m = Math.Min(m, neg.Length);
        var all = pos.Take(m).Select(r => (r, true)).Concat(neg.Take(m).Select(r => (r, false))).ToArray();
        rng.Shuffle(all);
        return ([.. all.Select(r => r.r)], [.. all.Select(r => r.Item2)]);
    }

    /// <summary>Columns of <paramref name="x"/> ordered by mean over positives − mean over negatives (its absolute value when
    /// <paramref name="absolute"/>), largest first; ties by column index.</summary>
    internal static int[] MeanDifferenceOrder(Tensor x, bool[] y, bool absolute)
    {
        using var scope = NewDisposeScope();
        var pos = tensor(y.Select((v, i) => (v, i)).Where(t => t.v).Select(t => (long)t.i).ToArray());
        var neg = tensor(y.Select((v, i) => (v, i)).Where(t => !t.v).Select(t => (long)t.i).ToArray());
        var x64 = x.to(ScalarType.Float64);
        return MeanDifferenceOrder(x64.index_select(0, pos).mean([0]).sub(x64.index_select(0, neg).mean([0])).data<double>().ToArray(), absolute);
    }

    /// <summary>Columns ordered by their class-mean difference <paramref name="diff"/> (its absolute value when
    /// <paramref name="absolute"/>), largest first; ties by column index.</summary>
    internal static int[] MeanDifferenceOrder(double[] diff, bool absolute) =>
        [.. Enumerable.Range(0, diff.Length).OrderByDescending(j => absolute ? Math.Abs(diff[j]) : diff[j]).ThenBy(j => j)];
}
