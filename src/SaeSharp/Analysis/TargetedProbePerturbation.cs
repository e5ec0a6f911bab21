using System.Text.Json;
using System.Text.Json.Nodes;
using SaeSharp.Evaluation;
using SaeSharp.Models;
using SaeSharp.Saes;
using SaeSharp.Tokenizers;
using TorchSharp;
using static TorchSharp.torch;

namespace SaeSharp.Analysis;

/// <summary>Options of <see cref="TargetedProbePerturbation"/> (<c>sae probe --pooling mean --tpp</c>); the defaults are
/// SAEBench's (<c>ScrAndTppEvalConfig</c>).</summary>
public sealed record TppOptions
{
    /// <summary>SAEBench's <c>n_values</c>: latents zero-ablated per class, each value one threshold.</summary>
    public static IReadOnlyList<int> DefaultNValues { get; } = [2, 5, 10, 20, 50, 100, 500];
    /// <summary>Thresholds n; null: <see cref="DefaultNValues"/> up to d_sae (an n given larger than d_sae is an error, as in
    /// SAEBench).</summary>
    public IReadOnlyList<int>? NValues { get; init; }
    /// <summary>L1 strength of the model-activation probes (SAEBench's <c>probe_l1_penalty</c>): each minimises mean
    /// binary cross-entropy + λ·‖w‖₁.</summary>
    public double ProbeL1Penalty { get; init; } = 1e-3;
    /// <summary>Refuse sets smaller than SAEBench's (<see cref="SparseProbingOptions.TrainSetSize"/> and
    /// <see cref="SparseProbingOptions.TestSetSize"/> texts per class, half of it) with an error naming the class and its
    /// counts; false: shrink them to the data with a warning (<see cref="Data.DatasetWarnings"/>).</summary>
    public bool StrictSizes { get; init; }
}

/// <summary>One class of <see cref="TargetedProbePerturbation"/>: its probe's clean test accuracy, and per threshold n the
/// latents ablated for it and every probe's test accuracy after that ablation.</summary>
/// <param name="Class">The class (its probe: this class against the others).</param>
/// <param name="TrainExamples">Balanced training texts of its probe.</param>
/// <param name="TestExamples">Balanced test texts of its probe.</param>
/// <param name="CleanAccuracy">Test accuracy of its probe on the unablated activations.</param>
/// <param name="Ablated">n → latents zero-ablated for this class (largest effect first).</param>
/// <param name="AblatedAccuracies">n → test accuracy of every class's probe (in class order) after ablating
/// <see cref="Ablated"/>[n].</param>
public sealed record TppClass(string Class, int TrainExamples, int TestExamples, double CleanAccuracy,
    IReadOnlyDictionary<int, int[]> Ablated, IReadOnlyDictionary<int, double[]> AblatedAccuracies);

/// <summary>Result of <see cref="TargetedProbePerturbation"/>: every class and SAEBench's TPP metrics.</summary>
/// <param name="Hook">Hook the SAE reads (empty when <c>TargetedProbePerturbation.Evaluate</c> was given the activations).</param>
/// <param name="Texts">Texts read (both halves).</param>
/// <param name="NValues">The thresholds n.</param>
/// <param name="Classes">One entry per class, in order.</param>
public sealed record TppReport(string Hook, long Texts, IReadOnlyList<int> NValues, IReadOnlyList<TppClass> Classes)
{
    /// <summary>SAEBench's per-class metrics of class <paramref name="i"/> (<c>create_tpp_plotting_dict</c>): per n,
    /// <c>tpp_threshold_{n}_intended_diff_only</c> = its probe's clean − ablated accuracy,
    /// <c>tpp_threshold_{n}_unintended_diff_only</c> = the mean of the same over the other probes, and
    /// <c>tpp_threshold_{n}_total_metric</c> = intended − unintended.</summary>
    public IReadOnlyDictionary<string, double> ClassMetrics(int i)
    {
        var m = new Dictionary<string, double>();
        var c = Classes[i];
        foreach (int n in NValues)
        {
            var acc = c.AblatedAccuracies[n];
            double intended = c.CleanAccuracy - acc[i];
            double unintended = Enumerable.Range(0, Classes.Count).Where(j => j != i).Average(j => Classes[j].CleanAccuracy - acc[j]);
            m[$"tpp_threshold_{n}_total_metric"] = intended - unintended;
            m[$"tpp_threshold_{n}_intended_diff_only"] = intended;
            m[$"tpp_threshold_{n}_unintended_diff_only"] = unintended;
        }
        return m;
    }

    /// <summary>SAEBench's <c>tpp_metrics</c>: each per-class metric averaged over the classes.</summary>
    public IReadOnlyDictionary<string, double> Metrics()
    {
        var per = Enumerable.Range(0, Classes.Count).Select(ClassMetrics).ToList();
        return per.Count == 0 ? new Dictionary<string, double>() : per[0].Keys.ToDictionary(k => k, k => per.Average(p => p[k]));
    }

    /// <summary>Writes SAEBench's TPP output of this one dataset, named <paramref name="datasetName"/>
    /// (<see cref="TppSuiteReport.WriteJson"/>).</summary>
    public void WriteJson(string path, string datasetName, SaeBenchRun? run = null) =>
        new TppSuiteReport(Hook, [new TppRun(datasetName, "", this)]).WriteJson(path, run);

    internal JsonObject ToJson()
    {
        return new JsonObject
        {
            ["eval_type_id"] = "tpp", ["hook"] = Hook, ["pooling"] = "mean", ["texts"] = Texts,
            ["n_values"] = new JsonArray([.. NValues.Select(n => (JsonNode)n)]),
            ["eval_result_metrics"] = new JsonObject { ["tpp_metrics"] = SaeBenchEnvelope.Numbers(Metrics()) },
            ["eval_result_details"] = new JsonArray([.. Classes.Select((c, i) =>
            {
                var o = SaeBenchEnvelope.Numbers(ClassMetrics(i));
                o["class"] = c.Class;
                o["train_examples"] = c.TrainExamples;
                o["test_examples"] = c.TestExamples;
                o["clean_test_accuracy"] = c.CleanAccuracy;
                o["ablated_latents"] = new JsonObject(NValues.Select(n => KeyValuePair.Create(n.ToString(System.Globalization.CultureInfo.InvariantCulture),
                    (JsonNode?)new JsonArray([.. c.Ablated[n].Select(f => (JsonNode)f)]))));
                o["ablated_test_accuracies"] = new JsonObject(NValues.Select(n => KeyValuePair.Create(n.ToString(System.Globalization.CultureInfo.InvariantCulture),
                    (JsonNode?)new JsonObject(Classes.Select((d, j) => KeyValuePair.Create(d.Class, (JsonNode?)c.AblatedAccuracies[n][j]))))));
                return (JsonNode)o;
            })]),
        };
    }
}

/// <summary>One dataset of a TPP run (SAEBench's <c>dataset_names</c> entry with its <c>chosen_classes_per_dataset</c> list).</summary>
/// <param name="Path">File, folder or <c>hf:ORG/NAME</c> dataset read (a classification dataset or a labelled corpus).</param>
/// <param name="Name">Name in SAEBench's run names (<c>{dataset_name}_tpp</c>), e.g. <c>LabHC/bias_in_bios_class_set1</c>;
/// the path when not from <see cref="TppDataset.SaeBenchDefaults"/>.</param>
/// <param name="TextField">Text column of a classification dataset (bias_in_bios: <c>hard_text</c>).</param>
/// <param name="LabelField">Class column of a classification dataset (bias_in_bios: <c>profession</c>).</param>
/// <param name="Classes">Classes probed, each against the others, as stored in the column (bias_in_bios: ids such as
/// <c>0</c>); null: every class. A labelled corpus takes <see cref="SparseProbingOptions.Labels"/> instead.</param>
public sealed record TppDataset(string Path, string Name, string TextField, string LabelField, IReadOnlyList<string>? Classes)
{
    /// <summary>Second column each class is balanced over (SAEBench's <c>column2_name</c>, <see cref="TextProbingOptions.BalanceField"/>);
    /// null: <see cref="TextProbingOptions.BalanceField"/> of the run.</summary>
    public string? BalanceField { get; init; }

    /// <summary>SAEBench's TPP datasets and classes (<c>ScrAndTppEvalConfig.dataset_names</c>,
    /// <c>dataset_info.chosen_classes_per_dataset</c>): bias_in_bios (<c>hard_text</c>, professions 0, 1, 2, 6, 9:
    /// accountant, architect, attorney, dentist, dietitian) and the amazon reviews (categories 1, 2, 3, 5, 6: Toys_and_Games,
    /// Cell_Phones_and_Accessories, Industrial_and_Scientific, Musical_Instruments, Electronics), each from its train and
    /// test splits; classes named by their stored ids, as SAEBench names them. Each class is balanced over SAEBench's
    /// <c>column2_name</c> (<see cref="BalanceField"/>: bias_in_bios <c>gender</c>, amazon <c>rating</c>) as
    /// <c>get_balanced_dataset</c> draws it.</summary>
    public static IReadOnlyList<TppDataset> SaeBenchDefaults() =>
    [
        new("hf:LabHC/bias_in_bios", "LabHC/bias_in_bios_class_set1", "hard_text", "profession", ["0", "1", "2", "6", "9"]) { BalanceField = "gender" },
        new("hf:canrager/amazon_reviews_mcauley_1and5", "canrager/amazon_reviews_mcauley_1and5", "text", "category", ["1", "2", "3", "5", "6"]) { BalanceField = "rating" },
    ];

    /// <summary>One dataset per path of <paramref name="paths"/> with the classes of <paramref name="classes"/> (the
    /// <c>--classes</c> values): a value <c>DATASET=a,b,c</c> is that dataset's list, a value without a dataset every other
    /// dataset's; at most one list per dataset. A dataset named that is not in <paramref name="paths"/> is an error.</summary>
    public static IReadOnlyList<TppDataset> ForPaths(IReadOnlyList<string> paths, IReadOnlyList<string> classes, string textField, string labelField)
    {
        var lists = DatasetTie.ClassLists(paths, classes, "TPP");
        return [.. paths.Select((p, i) => new TppDataset(p, p, textField, labelField, lists[i]))];
    }

    /// <summary>Refuses no dataset and a dataset twice.</summary>
    internal static void Check(IReadOnlyList<TppDataset> datasets)
    {
        if (datasets.Count == 0) throw new SaeSharpException("TPP: no dataset");
        foreach (var g in datasets.GroupBy(d => d.Name).Where(g => g.Count() > 1))
            throw new SaeSharpException($"TPP: dataset '{g.Key}' is given {g.Count()} times; give each once");
    }
}

/// <summary>One TPP run: one dataset's classes.</summary>
/// <param name="DatasetName"><see cref="TppDataset.Name"/>.</param>
/// <param name="Split">How the texts were split into the two halves (<see cref="ProbeTexts.Split"/>).</param>
/// <param name="Report">The dataset's result.</param>
public sealed record TppRun(string DatasetName, string Split, TppReport Report) : ISaeBenchProbeRun
{
    /// <summary>SAEBench's run name, <c>{dataset_name}_tpp</c>.</summary>
    public string RunName => $"{DatasetName}_tpp";

    IReadOnlyList<int> ISaeBenchProbeRun.NValues => Report.NValues;
    IReadOnlyDictionary<string, double> ISaeBenchProbeRun.Metrics() => Report.Metrics();
    JsonObject ISaeBenchProbeRun.ToJson() => Report.ToJson();
}

/// <summary>Result of <c>TargetedProbePerturbation.RunSuite</c>: every dataset's run and SAEBench's means over them.</summary>
/// <param name="Hook">Hook the SAE reads.</param>
/// <param name="Runs">One run per dataset, in order.</param>
public sealed record TppSuiteReport(string Hook, IReadOnlyList<TppRun> Runs)
{
    /// <summary>SAEBench's <c>eval_result_metrics.tpp_metrics</c> (<c>average_results_dictionaries</c> over the datasets):
    /// each metric's mean over the datasets' <see cref="TppReport.Metrics"/>, flat over datasets (each dataset weighs the
    /// same, whatever its number of classes).</summary>
    public IReadOnlyDictionary<string, double> Metrics()
    {
        var per = Runs.Select(r => r.Report.Metrics()).ToList();
        return per.Count == 0 ? new Dictionary<string, double>() : per[0].Keys.ToDictionary(k => k, k => per.Average(p => p[k]));
    }

    /// <summary>Writes SAEBench's TPP output (<c>TppEvalOutput</c>, its JSON schema <c>eval_output_schema_tpp.json</c>):
    /// <see cref="SaeBenchEnvelope"/> with <c>eval_type_id</c> "tpp", <c>eval_config</c> (<c>dataset_names</c>,
    /// <c>perform_scr</c> false, <c>n_values</c>, the model, and <paramref name="run"/>'s further fields),
    /// <c>eval_result_metrics.tpp_metrics</c> (the means), one <c>eval_result_details</c> entry per dataset
    /// (<c>dataset_name</c> = <c>{dataset}_tpp_results</c> with its metrics), and <c>eval_result_unstructured</c> as SAEBench
    /// writes it (dataset → class → its metrics) with SaeSharp's extras beside the datasets: <c>producer</c>, <c>hook</c>,
    /// <c>pooling</c> and <c>runs</c> (each run's full report).</summary>
    public void WriteJson(string path, SaeBenchRun? run = null) =>
        SaeBenchEnvelope.WriteProbeRuns(path, "tpp", SaeBenchEnvelope.ProbeConfig(Runs.Select(r => r.DatasetName), false, run, Runs), run, Metrics(), Runs, Hook,
            new JsonObject(Runs.Select(r => KeyValuePair.Create(r.DatasetName,
                (JsonNode?)new JsonObject(r.Report.Classes.Select((c, i) => KeyValuePair.Create(c.Class, (JsonNode?)SaeBenchEnvelope.Metrics(r.Report.ClassMetrics(i)))))))));
}

/// <summary>
/// SAEBench's TPP, targeted probe perturbation (<c>sae_bench/evals/scr_and_tpp</c> with <c>perform_scr=False</c>), on
/// mean-pooled texts (<see cref="TextProbing.Pool"/>). Per class i: a linear probe on the model's pooled activation (class
/// i against the others, balanced as <c>prepare_probe_data</c>); each latent's effect on it,
/// max(0, mean over class-i training texts of f − mean over the negatives) · (W_dec[k] · w_i) (<c>get_effects_per_class_precomputed_acts</c>);
/// the n latents of largest non-zero effect zero-ablated with the SAE's error term kept (x ← x − Σ_k f_k·W_dec[k], only those
/// latents change); every probe's test accuracy on the ablated, re-pooled activations. See docs/labels.md.
/// </summary>
public static class TargetedProbePerturbation
{
    /// <summary>Reads the texts of <paramref name="datasetPath"/> (a classification dataset or a labelled corpus, as
    /// <c>TextProbing.Run</c>), pools their activations and runs TPP over its classes: <c>RunSuite</c> on one
    /// dataset.</summary>
    public static TppReport Run(Sae sae, HookedTransformer model, IReadOnlyList<(string Name, Func<Tensor, Tensor?> Fn)>? modelHooks,
        ITextTokenizer tokenizer, string datasetPath, TextProbingOptions text, SparseProbingOptions options, TppOptions tpp) =>
        RunSuite(sae, model, modelHooks, tokenizer, [new TppDataset(datasetPath, datasetPath, text.TextField, text.LabelField, text.Classes)], text, options, tpp).Runs[0].Report;

    /// <summary>SAEBench's TPP over several datasets (<c>run_eval_single_sae</c> with <c>perform_scr=False</c>): each
    /// dataset read (its own train/test splits when it has them), its texts pooled in one pass of the model, TPP run on its
    /// classes; the means over datasets are <see cref="TppSuiteReport.Metrics"/>.</summary>
    public static TppSuiteReport RunSuite(Sae sae, HookedTransformer model, IReadOnlyList<(string Name, Func<Tensor, Tensor?> Fn)>? modelHooks,
        ITextTokenizer tokenizer, IReadOnlyList<TppDataset> datasets, TextProbingOptions text, SparseProbingOptions options, TppOptions tpp,
        Hub.HfHubOptions? hub = null) =>
        RunSuite([sae], model, modelHooks, tokenizer, datasets, text, options, tpp, hub)[0];

    /// <summary><see cref="RunSuite(Sae, HookedTransformer, IReadOnlyList{ValueTuple{string, Func{Tensor, Tensor}}}, ITextTokenizer, IReadOnlyList{TppDataset}, TextProbingOptions, SparseProbingOptions, TppOptions, Hub.HfHubOptions?)"/>
    /// for several SAEs, at one hook or several: each dataset's texts run through the model once (capturing every hook),
    /// per hook their pooled activations and the class probes on them shared by its SAEs, each SAE's pooled latents (kept as non-zeros, made dense one SAE at a time) ranked and
    /// ablated; one suite report per SAE, in order (<paramref name="names"/> name the SAEs in errors; <paramref name="artifacts"/>: see <see cref="ProbeArtifacts"/>).</summary>
    public static IReadOnlyList<TppSuiteReport> RunSuite(IReadOnlyList<Sae> saes, HookedTransformer model, IReadOnlyList<(string Name, Func<Tensor, Tensor?> Fn)>? modelHooks,
        ITextTokenizer tokenizer, IReadOnlyList<TppDataset> datasets, TextProbingOptions text, SparseProbingOptions options, TppOptions tpp,
        Hub.HfHubOptions? hub = null, IReadOnlyList<string>? names = null, ProbeArtifacts? artifacts = null)
    {
        ArgumentNullException.ThrowIfNull(saes);
        var groups = ProbeSaes.HookGroups(model, saes, names);
        foreach (var sae in saes) CheckAblatable(sae, "TPP");
        TppDataset.Check(datasets);
        using var scope = NewDisposeScope();
        var decoders = new List<(Tensor WDec, Tensor Decoder)>();
        using (no_grad())
            foreach (var sae in saes) decoders.Add((sae.WDec.detach().to(ScalarType.Float32).cpu(), AblationDirections(sae)));
        var runs = saes.Select(_ => new List<TppRun>()).ToList();
        foreach (var ds in datasets)
        {
            var dsText = text with { TextField = ds.TextField, LabelField = ds.LabelField, Classes = ds.Classes, BalanceField = ds.BalanceField ?? text.BalanceField };
            var data = TextProbing.Read(ds.Path, dsText, options.TrainSetSize, options.TestSetSize, options.Seed, hub);
            var pooled = TextProbing.PoolSparse(saes, model, modelHooks, tokenizer, data.Texts, dsText, artifacts, names);
            try
            {
                foreach (var p in pooled)
                {
                    using var dsScope = NewDisposeScope();
                    var dense = p.Features.Select((f, j) => (f.ToDenseFloat32(), decoders[p.Group.Saes[j]].WDec, (Tensor?)decoders[p.Group.Saes[j]].Decoder)).ToList();
                    var reports = Evaluate(dense, p.Acts, data.Labels, data.Names, data.Fit,
                        options with { OneVsRestClasses = data.OneClassEach, MinPositives = text.MinTexts, Examples = "texts", Labels = options.Labels ?? (data.OneClassEach ? data.Names : null) },
                        tpp, ds.Name);
                    for (int j = 0; j < p.Group.Saes.Length; j++) runs[p.Group.Saes[j]].Add(new TppRun(ds.Name, data.Split, reports[j] with { Hook = p.Group.Site }));
                }
            }
            finally
            {
                foreach (var p in pooled) p.Dispose();
            }
        }
        return [.. runs.Select((r, i) => new TppSuiteReport(groups.First(g => g.Saes.Contains(i)).Site, r))];
    }

    /// <summary>The thresholds n of TPP or SCR (<paramref name="eval"/>): <paramref name="given"/>, or SAEBench's
    /// <c>n_values</c> up to <paramref name="dSae"/>; an n below 1 or above d_sae is an error.</summary>
    internal static IReadOnlyList<int> NValuesFor(IReadOnlyList<int>? given, long dSae, string eval)
    {
        var nValues = given ?? [.. TppOptions.DefaultNValues.Where(v => v <= dSae)];
        if (nValues.Count == 0 || nValues.Any(v => v < 1))
            throw new SaeSharpException($"{eval}: thresholds n must be positive, got [{string.Join(", ", nValues)}]");
        if (nValues.FirstOrDefault(v => v > dSae) is > 0 and var big)
            throw new SaeSharpException($"{eval}: n = {big} latents to ablate, but the SAE has d_sae = {dSae}");
        return nValues;
    }

    /// <summary>Refuses SAEs whose latents cannot be ablated on mean-pooled activations (<paramref name="eval"/>: TPP or SCR):
    /// transcoders, and SAEs that normalise each token at run time.</summary>
    internal static void CheckAblatable(Sae sae, string eval)
    {
        if (sae.Cfg.Metadata.HookNameOut is not null)
            throw new SaeSharpException($"{eval} ablates latents at the hook the probes read; a transcoder writes another hook (hook_name_out) than it reads");
        if (sae.UsesRunTimeNormalization)
            throw new SaeSharpException($"{eval} ablates mean-pooled latents, which is exact only when the decoder is affine in them; this SAE normalises each token at run time (normalize_activations = {sae.Cfg.NormalizeActivations})");
    }

    /// <summary>Row k: the change of <see cref="Sae.Decode"/> per unit of latent k, Decode(e_k) − Decode(0) (float32, CPU) —
    /// W_dec for most SAEs, scaled where the decoder divides by a constant. Decode is affine in the latents, so zeroing f_k
    /// on every token moves the pooled activation by −mean(f_k)·row k, and the error term x − x̂ is unchanged.</summary>
    internal static Tensor AblationDirections(Sae sae)
    {
        using var scope = NewDisposeScope();
        using var _ = no_grad();
        int dSae = sae.Cfg.DSae;
        var dtype = sae.WDec.dtype;
        var dev = sae.WDec.device;
        var zero = sae.Decode(zeros(1, dSae, dtype, dev));
        var rows = new List<Tensor>();
        for (int s = 0; s < dSae; s += 1024)
        {
            int len = Math.Min(1024, dSae - s);
            var basis = zeros(len, dSae, dtype, dev);
            basis.narrow(1, s, len).copy_(eye(len, dtype: dtype, device: dev));
            rows.Add(sae.Decode(basis).sub(zero).to(ScalarType.Float32).cpu());
        }
        return cat(rows, 0).MoveToOuterDisposeScope();
    }

    /// <summary>
    /// TPP on pooled activations: <paramref name="features"/> [n, d_sae] (mean SAE latents per text), <paramref name="acts"/>
    /// [n, d] (mean activation per text), <paramref name="wDec"/> [d_sae, d] (the decoder whose rows the probe direction is
    /// read through, SAEBench's <c>sae.W_dec</c>), <paramref name="decoder"/> [d_sae, d] (what zeroing one unit of latent k
    /// removes from the activation; null: <paramref name="wDec"/>), <paramref name="labels"/>[i] the class ids of text i,
    /// <paramref name="fit"/>[i] true for the training half; <paramref name="dataset"/> names the data in size warnings and
    /// errors (<see cref="TppOptions.StrictSizes"/>).
    /// </summary>
    public static TppReport Evaluate(Tensor features, Tensor acts, Tensor wDec, Tensor? decoder, IReadOnlyList<int[]> labels,
        IReadOnlyList<string> names, bool[] fit, SparseProbingOptions options, TppOptions tpp, string? dataset = null) =>
        Evaluate([(features, wDec, decoder)], acts, labels, names, fit, options, tpp, dataset)[0];

    /// <summary>One SAE of the several-SAE TPP evaluation (and SCR's) in float32 on the CPU: its features, W_dec, and the
    /// directions an ablation removes (W_dec when it has no decoder of its own).</summary>
    internal static (Tensor Features, Tensor WDec, Tensor Decoder) Float32Cpu((Tensor Features, Tensor WDec, Tensor? Decoder) sae) =>
        (sae.Features.to(ScalarType.Float32).cpu(), sae.WDec.to(ScalarType.Float32).cpu(), (sae.Decoder ?? sae.WDec).to(ScalarType.Float32).cpu());

    /// <summary><see cref="Evaluate(Tensor, Tensor, Tensor, Tensor?, IReadOnlyList{int[]}, IReadOnlyList{string}, bool[], SparseProbingOptions, TppOptions, string?)"/>
    /// for several SAEs' features of the same texts (each with its W_dec and ablation directions): the balanced sets and the
    /// probes on the model's activations are made once, then each SAE's latents are ranked and ablated; one report per SAE.</summary>
    internal static IReadOnlyList<TppReport> Evaluate(IReadOnlyList<(Tensor Features, Tensor WDec, Tensor? Decoder)> saes, Tensor acts, IReadOnlyList<int[]> labels,
        IReadOnlyList<string> names, bool[] fit, SparseProbingOptions options, TppOptions tpp, string? dataset = null)
    {
        int n = labels.Count;
        var nValuesPer = new List<IReadOnlyList<int>>();
        foreach (var (features, wDec, decoderGiven) in saes)
        {
            if (features.dim() != 2 || acts.dim() != 2 || features.shape[0] != n || acts.shape[0] != n || fit.Length != n)
                throw new SaeSharpException($"TPP: features [{string.Join(", ", features.shape)}], activations [{string.Join(", ", acts.shape)}], " +
                                            $"{fit.Length} split flags and {n} label lists must agree on the number of texts");
            var decoder = decoderGiven ?? wDec;
            long dSae = features.shape[1], d = acts.shape[1];
            foreach (var (w, what) in new[] { (wDec, "W_dec"), (decoder, "the ablation directions") })
                if (w.dim() != 2 || w.shape[0] != dSae || w.shape[1] != d)
                    throw new SaeSharpException($"TPP: {what} is [{string.Join(", ", w.shape)}]; expected [d_sae={dSae}, d={d}]");
            nValuesPer.Add(NValuesFor(tpp.NValues, dSae, "TPP"));
        }
        if (!(tpp.ProbeL1Penalty >= 0) || double.IsInfinity(tpp.ProbeL1Penalty))
            throw new SaeSharpException($"TPP: the probe L1 penalty must be finite and ≥ 0, got {tpp.ProbeL1Penalty}");
        var classes = SparseProbing.TaskLabels(labels, names, fit, options.MinPositives, options.Labels, options.Examples);
        if (classes.Length < 2)
            throw new SaeSharpException($"TPP needs at least two classes with {options.MinPositives} texts with and without them in each half; found {classes.Length}" +
                                        (classes.Length == 1 ? $" ({names[classes[0]]})" : ""));
        using var scope = NewDisposeScope();
        using var _ = no_grad();
        var x32 = acts.to(ScalarType.Float32).cpu();
        var split = classes.Select(l =>
        {
            var rng = new Random(options.Seed);
            var train = options.OneVsRestClasses ? SparseProbing.BalancedOneVsRest(labels, l, fit, true, options.TrainSetSize, rng)
                : SparseProbing.Balanced(labels, l, fit, true, options.TrainSetSize, rng);
            var test = options.OneVsRestClasses ? SparseProbing.BalancedOneVsRest(labels, l, fit, false, options.TestSetSize, rng)
                : SparseProbing.Balanced(labels, l, fit, false, options.TestSetSize, rng);
            return (Train: train, Test: test);
        }).ToArray();
        CheckSizes([.. split.Select((s, j) => (names[classes[j]], s.Train.Y, s.Test.Y))], options, tpp, dataset);
        var probes = split.Select(s => LogisticRegression.FitL1(x32.index_select(0, tensor(s.Train.Rows)), s.Train.Y, tpp.ProbeL1Penalty)).ToArray();
        double[] Accuracies(Tensor x) => [.. split.Select((s, j) => probes[j].Accuracy(x.index_select(0, tensor(s.Test.Rows)), s.Test.Y))];
        var clean = Accuracies(x32);
        var reports = new List<TppReport>();
        for (int si = 0; si < saes.Count; si++)
        {
            using var saeScope = NewDisposeScope();
            var (f32, w32, dec32) = Float32Cpu(saes[si]);
            var nValues = nValuesPer[si];
            var result = new List<TppClass>();
            for (int i = 0; i < classes.Length; i++)
            {
                using var iter = NewDisposeScope();
                var effects = NodeEffects(f32.index_select(0, tensor(split[i].Train.Rows)), split[i].Train.Y, w32, probes[i].Coef);
                var ablated = new SortedDictionary<int, int[]>();
                var accs = new SortedDictionary<int, double[]>();
                foreach (int k in nValues)
                {
                    var top = TopNonZero(effects, k);
                    ablated[k] = top;
                    using var ab = Ablate(x32, f32, dec32, top);
                    accs[k] = Accuracies(ab);
                }
                result.Add(new TppClass(names[classes[i]], split[i].Train.Rows.Length, split[i].Test.Rows.Length, clean[i], ablated, accs));
            }
            reports.Add(new TppReport("", n, nValues, result));
        }
        return reports;
    }

    /// <summary>SAEBench's sizes (<c>get_bias_in_bios_or_amazon_product_dataset</c>, <c>prepare_probe_data</c>): each class's
    /// balanced sets hold <see cref="SparseProbingOptions.TrainSetSize"/> training and <see cref="SparseProbingOptions.TestSetSize"/>
    /// test texts, half with the class. Smaller sets are an error naming the class and its counts with
    /// <see cref="TppOptions.StrictSizes"/>, else one warning (<see cref="Data.DatasetWarnings"/>) naming the smallest.</summary>
    internal static void CheckSizes(IReadOnlyList<(string Class, bool[] Train, bool[] Test)> sets, SparseProbingOptions options, TppOptions tpp, string? dataset)
    {
        int wantTrain = options.TrainSetSize / 2 * 2, wantTest = options.TestSetSize / 2 * 2;
        var small = sets.Where(s => s.Train.Length < wantTrain || s.Test.Length < wantTest).OrderBy(s => s.Train.Length + s.Test.Length).ToList();
        if (small.Count == 0) return;
        string on = dataset is null ? "TPP" : $"TPP on {dataset}";
        static string Sizes((string Class, bool[] Train, bool[] Test) s) =>
            $"class '{s.Class}' has {s.Train.Length} training texts ({s.Train.Count(y => y)} of it) and {s.Test.Length} test texts ({s.Test.Count(y => y)} of it)";
        string need = $"SAEBench's sets are {wantTrain} training and {wantTest} test texts per class, half of it (train_set_size, test_set_size)";
        string more = small.Count > 1 ? $" ({small.Count} of {sets.Count} classes are short; this one most)" : "";
        if (tpp.StrictSizes)
            throw new SaeSharpException($"{on}: too few texts: {Sizes(small[0])}{more}; {need}; read more texts, or leave out --strict-sizes to shrink the sets to the data");
        Data.DatasetWarnings.Report($"{on}: {small.Count} of {sets.Count} classes have smaller sets than SAEBench's, the smallest: {Sizes(small[0])}; {need}");
    }

    /// <summary>SAEBench's node effect of every latent on a probe with weights <paramref name="probeW"/>
    /// (<c>get_effects_per_class_precomputed_acts</c>): TPP's max(0, mean f over positives − mean f over negatives) · (W_dec[k] · w);
    /// with <paramref name="performScr"/>, SCR's |(mean f over positives − mean f over negatives) · (W_dec[k] · w)|.</summary>
    internal static double[] NodeEffects(Tensor f, bool[] y, Tensor wDec, double[] probeW, bool performScr = false)
    {
        using var scope = NewDisposeScope();
        var pos = tensor(y.Select((v, i) => (v, i)).Where(t => t.v).Select(t => (long)t.i).ToArray());
        var neg = tensor(y.Select((v, i) => (v, i)).Where(t => !t.v).Select(t => (long)t.i).ToArray());
        var f64 = f.to(ScalarType.Float64);
        var diff = f64.index_select(0, pos).mean([0]).sub(f64.index_select(0, neg).mean([0]));
        if (!performScr) diff = diff.clamp_min(TorchScalars.Of(0));
        var effects = diff.mul(wDec.to(ScalarType.Float64).mv(tensor(probeW)));
        return (performScr ? effects.abs() : effects).data<double>().ToArray();
    }

    /// <summary>SAEBench's <c>select_top_n_features</c>: the <paramref name="n"/> latents of largest effect among those whose
    /// effect is not 0 (fewer when fewer are), largest first; ties by index.</summary>
    internal static int[] TopNonZero(double[] effects, int n) =>
        [.. Enumerable.Range(0, effects.Length).Where(k => effects[k] != 0).OrderByDescending(k => effects[k]).ThenBy(k => k).Take(n)];

    /// <summary>Pooled activations with <paramref name="latents"/> zero-ablated and the error term kept:
    /// x − Σ_k f_k·directions[k] over the ablated latents (SAEBench's <c>decode(f ablated) + (x − decode(f))</c>).</summary>
    public static Tensor Ablate(Tensor acts, Tensor features, Tensor directions, IReadOnlyList<int> latents)
    {
        if (latents.Count == 0) return acts.clone();
        using var scope = NewDisposeScope();
        var idx = tensor(latents.Select(k => (long)k).ToArray());
        var delta = features.index_select(1, idx).to(acts.dtype).matmul(directions.index_select(0, idx).to(acts.dtype));
        return acts.sub(delta).MoveToOuterDisposeScope();
    }
}
