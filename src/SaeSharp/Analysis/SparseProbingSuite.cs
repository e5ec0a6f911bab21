using System.Text.Json.Nodes;
using SaeSharp.Evaluation;

namespace SaeSharp.Analysis;

/// <summary>One dataset of a sparse-probing run over several (<see cref="TextProbing.RunSuite"/>; SAEBench's
/// <c>SparseProbingEvalConfig.dataset_names</c> entry with its reading rules and <c>chosen_classes_per_dataset</c> list).</summary>
/// <param name="Path">File, folder or <c>hf:ORG/NAME</c> dataset read.</param>
/// <param name="Name">Name in SAEBench's output (<c>dataset_names</c>, <c>{name}_results</c>), e.g.
/// <c>LabHC/bias_in_bios_class_set1</c>; the path when not from <see cref="SaeBenchDefaults"/>.</param>
public sealed record SparseProbingDataset(string Path, string Name)
{
    /// <summary>Text column of a classification dataset (<see cref="TextProbingOptions.TextField"/>).</summary>
    public string TextField { get; init; } = "text";
    /// <summary>Class column of a classification dataset (<see cref="TextProbingOptions.LabelField"/>).</summary>
    public string LabelField { get; init; } = "label";
    /// <summary>Classes probed, each against the others (<see cref="TextProbingOptions.Classes"/>); null: every class, or a
    /// <see cref="SaeBenchSource"/>'s chosen ones.</summary>
    public IReadOnlyList<string>? Classes { get; init; }
    /// <summary>Second column each class is balanced over (<see cref="TextProbingOptions.BalanceField"/>).</summary>
    public string? BalanceField { get; init; }
    /// <summary>SAEBench's own draw of this dataset (<see cref="TextProbingOptions.SaeBenchSource"/>).</summary>
    public string? SaeBenchSource { get; init; }

    /// <summary>SAEBench's k values (<c>SparseProbingEvalConfig.k_values</c>), which <c>--saebench-defaults</c> probes with.</summary>
    public static IReadOnlyList<int> SaeBenchKValues { get; } = [1, 2, 5];

    /// <summary>SAEBench's eight sparse-probing datasets (<c>SparseProbingEvalConfig.dataset_names</c>), each read by
    /// SAEBench's rules (<c>get_multi_label_train_test_data</c>) with its <c>chosen_classes_per_dataset</c>: bias_in_bios's
    /// three class sets (<c>hard_text</c>, professions balanced by <c>gender</c>) and the amazon reviews' categories
    /// (balanced by <c>rating</c>) from the hub repos' train and test splits, as <c>get_balanced_dataset</c> draws them;
    /// amazon sentiment, github-code, ag_news and europarl by <see cref="SaeBenchSources"/>. Names are <c>hf:</c> repos,
    /// read through the Hugging Face cache (offline with <c>HF_HUB_OFFLINE=1</c>), as TPP's and SCR's defaults.</summary>
    public static IReadOnlyList<SparseProbingDataset> SaeBenchDefaults()
    {
        const string Bios = "hf:LabHC/bias_in_bios", Amazon = "hf:canrager/amazon_reviews_mcauley_1and5";
        SparseProbingDataset BiosSet(int set, string[] classes) =>
            new(Bios, $"LabHC/bias_in_bios_class_set{set}") { TextField = "hard_text", LabelField = "profession", BalanceField = "gender", Classes = classes };
        SparseProbingDataset Source(string path, string name, string source) =>
            new(path, name) { SaeBenchSource = source, Classes = SaeBenchSources.ChosenClasses[source] };
        return
        [
            BiosSet(1, ["0", "1", "2", "6", "9"]),
            BiosSet(2, ["11", "13", "14", "18", "19"]),
            BiosSet(3, ["20", "21", "22", "25", "26"]),
            new(Amazon, "canrager/amazon_reviews_mcauley_1and5") { LabelField = "category", BalanceField = "rating", Classes = ["1", "2", "3", "5", "6"] },
            Source(Amazon, "canrager/amazon_reviews_mcauley_1and5_sentiment", "amazon_sentiment"),
            Source("hf:codeparrot/github-code", "codeparrot/github-code", "github_code"),
            Source("hf:fancyzhx/ag_news", "fancyzhx/ag_news", "ag_news"),
            Source("hf:Helsinki-NLP/europarl", "Helsinki-NLP/europarl", "europarl"),
        ];
    }

    /// <summary>One dataset per path, read with <paramref name="text"/>'s columns and balance field, its classes from
    /// the <c>--classes</c> values <paramref name="classes"/> (<c>DATASET=a,b,c</c> for one dataset, a list without a dataset
    /// for the others) and its SAEBench source from the <c>--saebench-source</c> values <paramref name="sources"/> in the same
    /// way (<c>DATASET=NAME</c> or <c>NAME</c>; null: <paramref name="text"/>'s for every dataset).</summary>
    public static IReadOnlyList<SparseProbingDataset> ForPaths(IReadOnlyList<string> paths, IReadOnlyList<string> classes, TextProbingOptions text,
        IReadOnlyList<string>? sources = null)
    {
        ArgumentNullException.ThrowIfNull(paths);
        ArgumentNullException.ThrowIfNull(text);
        var lists = DatasetTie.ClassLists(paths, classes, "sparse probing");
        var drawn = sources is null ? [.. paths.Select(_ => text.SaeBenchSource)] : DatasetTie.SaeBenchSources(paths, sources);
        return [.. paths.Select((p, i) => new SparseProbingDataset(p, p)
        {
            TextField = text.TextField, LabelField = text.LabelField, Classes = lists[i], BalanceField = text.BalanceField, SaeBenchSource = drawn[i],
        })];
    }

    /// <summary><paramref name="text"/> with this dataset's reading rules.</summary>
    internal TextProbingOptions Apply(TextProbingOptions text) =>
        text with { TextField = TextField, LabelField = LabelField, Classes = Classes, BalanceField = BalanceField, SaeBenchSource = SaeBenchSource };

    /// <summary>Refuses no dataset and a name twice.</summary>
    internal static void Check(IReadOnlyList<SparseProbingDataset> datasets)
    {
        if (datasets.Count == 0) throw new SaeSharpException("sparse probing: no dataset");
        foreach (var g in datasets.GroupBy(d => d.Name).Where(g => g.Count() > 1))
            throw new SaeSharpException($"sparse probing: dataset '{g.Key}' is given {g.Count()} times; give each once");
    }
}

/// <summary>One dataset's sparse probing in a run over several.</summary>
/// <param name="DatasetName"><see cref="SparseProbingDataset.Name"/>.</param>
/// <param name="Split">How the texts were split into the two halves (e.g. <c>train/test splits</c>).</param>
/// <param name="Report">The dataset's result (one task per class).</param>
public sealed record SparseProbingRun(string DatasetName, string Split, SparseProbingReport Report)
{
    /// <summary>SAEBench's key of this dataset's results, <c>{dataset_name}_results</c>.</summary>
    public string ResultsName => DatasetName + "_results";
}

/// <summary>Result of <see cref="TextProbing.RunSuite"/> for one SAE: every dataset's report and SAEBench's means over them.</summary>
/// <param name="Hook">Hook the SAE reads.</param>
/// <param name="Runs">One run per dataset, in order.</param>
public sealed record SparseProbingSuiteReport(string Hook, IReadOnlyList<SparseProbingRun> Runs)
{
    /// <summary>SAEBench's <c>average_results_dictionaries</c> over the datasets' <see cref="SparseProbingReport.Means"/>: per
    /// metric, the values of the datasets that have it summed in dataset order and divided by their count (each dataset
    /// weighs the same, whatever its number of classes).</summary>
    public IReadOnlyDictionary<string, double> Metrics()
    {
        var values = new Dictionary<string, List<double>>();
        foreach (var run in Runs)
            foreach (var (k, v) in run.Report.Means())
            {
                if (!values.TryGetValue(k, out var list)) values[k] = list = [];
                list.Add(v);
            }
        return values.ToDictionary(kv => kv.Key, kv =>
        {
            double sum = 0;
            foreach (double v in kv.Value) sum += v;
            return sum / kv.Value.Count;
        });
    }

    /// <summary>Writes SAEBench's sparse probing output (<c>SparseProbingEvalOutput</c>, its JSON schema
    /// <c>eval_output_schema_sparse_probing.json</c>): <see cref="SaeBenchEnvelope"/> with <c>eval_type_id</c>
    /// "sparse_probing", <c>eval_config</c> (<c>dataset_names</c>, <c>k_values</c>, the model, and <paramref name="run"/>'s
    /// further fields), <c>eval_result_metrics</c> (<see cref="Metrics"/> in SAEBench's <c>llm</c> and <c>sae</c> groups),
    /// one <c>eval_result_details</c> entry per dataset with tasks (<c>dataset_name</c> = <c>{dataset}_results</c>, its
    /// means), and <c>eval_result_unstructured</c> as SAEBench's per-class dictionary (<c>{dataset}_results</c> → class or
    /// label → its accuracies, here with its set sizes, probe features and top features) with SaeSharp's extras beside it:
    /// <c>producer</c>, <c>hook</c>, <c>pooling</c>, <c>tokens</c> or <c>texts</c> (all datasets'), with several datasets
    /// <c>datasets</c> (each one's texts and split), and with one the <c>absorption</c> of its report.</summary>
    public void WriteJson(string path, SaeBenchRun? run = null)
    {
        if (Runs.Count == 0) throw new SaeSharpException("sparse probing: no dataset to write");
        var kValues = Runs[0].Report.KValues;
        var metrics = Metrics();
        JsonObject Group(string prefix) => SaeBenchEnvelope.Metrics(metrics.Where(kv => kv.Key.StartsWith(prefix, StringComparison.Ordinal)));
        var config = new JsonObject
        {
            ["dataset_names"] = new JsonArray([.. Runs.Select(r => (JsonNode)r.DatasetName)]),
            ["llm_dtype"] = run?.LlmDtype ?? "",
            ["model_name"] = run?.ModelName ?? "",
            ["k_values"] = new JsonArray([.. kValues.Select(k => (JsonNode)k)]),
        };
        var details = new JsonArray([.. Runs.Where(r => r.Report.Tasks.Count > 0).Select(r =>
        {
            var detail = new JsonObject { ["dataset_name"] = r.ResultsName };
            foreach (var (k, v) in r.Report.Means()) detail[k] = SaeBenchEnvelope.Metric(v);
            return (JsonNode)detail;
        })]);
        var unstructured = new JsonObject(Runs.Select(r => KeyValuePair.Create(r.ResultsName, (JsonNode?)PerClass(r.Report))));
        string pooling = Runs[0].Report.Pooling;
        unstructured["producer"] = SaeBenchEnvelope.Producer;
        unstructured["hook"] = Hook;
        unstructured["pooling"] = pooling;
        unstructured[pooling == "mean" ? "texts" : "tokens"] = Runs.Sum(r => r.Report.Tokens);
        if (Runs.Count > 1)
            unstructured["datasets"] = new JsonObject(Runs.Select(r => KeyValuePair.Create(r.DatasetName,
                (JsonNode?)new JsonObject { [pooling == "mean" ? "texts" : "tokens"] = r.Report.Tokens, ["split"] = r.Split })));
        else if (Runs[0].Report.Absorption is { } a) unstructured["absorption"] = a.ToJson();
        SaeBenchEnvelope.WriteFile(path, "sparse_probing", config, run, new JsonObject { ["llm"] = Group("llm_"), ["sae"] = Group("sae_") }, details, unstructured);
    }

    /// <summary>SAEBench's per-class results of one dataset: class → its test accuracies (with SaeSharp's set sizes, probe
    /// features and top features).</summary>
    private static JsonObject PerClass(SparseProbingReport r) => new(r.Tasks.Select(t =>
    {
        var o = new JsonObject { ["train_examples"] = t.TrainExamples, ["test_examples"] = t.TestExamples, ["llm_test_accuracy"] = SaeBenchEnvelope.Metric(t.LlmTestAccuracy) };
        foreach (int k in r.KValues) o[$"llm_top_{k}_test_accuracy"] = SaeBenchEnvelope.Metric(t.LlmTopK[k]);
        o["sae_test_accuracy"] = t.SaeTestAccuracy is { } all ? SaeBenchEnvelope.Metric(all) : null;
        o["sae_probe_features"] = t.SaeProbeFeatures;
        foreach (int k in r.KValues) o[$"sae_top_{k}_test_accuracy"] = SaeBenchEnvelope.Metric(t.SaeTopK[k]);
        o["top_features"] = new JsonArray([.. t.TopFeatures.Select(f => (JsonNode)f)]);
        return KeyValuePair.Create(t.Label, (JsonNode?)o);
    }));
}
