using System.Text.Json.Nodes;
using SaeSharp.Evaluation;

namespace SaeSharp.Analysis;

/// <summary>One dataset of an SCR run (SAEBench's <c>dataset_names</c> entry with its <c>column1_vals_lookup</c> list).</summary>
/// <param name="Path">File, folder or <c>hf:ORG/NAME</c> dataset read.</param>
/// <param name="Name">Name in SAEBench's run names (<c>{dataset_name}_scr_{pos}_{neg}</c>), e.g.
/// <c>LabHC/bias_in_bios_class_set1</c>; the path when not from <see cref="ScrDataset.SaeBenchDefaults"/>.</param>
/// <param name="TextField">Text column (bias_in_bios: <c>hard_text</c>).</param>
/// <param name="Options">Columns, attribute 2's values, mappings, sizes; <see cref="ScrOptions.Column1Vals"/> is replaced by
/// each pair.</param>
/// <param name="Pairs">Attribute 1's (positive, negative) value pairs, each one SCR run.</param>
public sealed record ScrDataset(string Path, string Name, string TextField, ScrOptions Options, IReadOnlyList<IReadOnlyList<string>> Pairs)
{
    /// <summary>SAEBench's SCR datasets and value pairs (<c>ScrAndTppEvalConfig.dataset_names</c>,
    /// <c>column1_vals_lookup</c>, <c>COLUMN2_VALS_LOOKUP</c>, <c>dataset_info.dataset_metadata</c>): bias_in_bios
    /// (<c>hard_text</c>, profession by its id, gender 0/1) and the amazon reviews (category by its id, rating 1/5), read
    /// as <c>load_dataset</c> reads them, train and test splits of the hub repo.</summary>
    public static IReadOnlyList<ScrDataset> SaeBenchDefaults(ScrOptions? sizes = null)
    {
        var o = sizes ?? new ScrOptions();
        static Dictionary<string, string> Ids(params (string Name, int Id)[] m) =>
            m.ToDictionary(x => x.Name, x => x.Id.ToString(System.Globalization.CultureInfo.InvariantCulture), StringComparer.Ordinal);
        var professions = Ids(("professor", 21), ("nurse", 13), ("architect", 1), ("journalist", 11), ("surgeon", 25), ("psychologist", 22),
            ("attorney", 2), ("teacher", 26));
        var categories = Ids(("Books", 24), ("CDs_and_Vinyl", 26), ("Software", 30), ("Electronics", 6), ("Pet_Supplies", 18),
            ("Office_Products", 11), ("Industrial_and_Scientific", 3), ("Toys_and_Games", 1));
        return
        [
            new("hf:LabHC/bias_in_bios", "LabHC/bias_in_bios_class_set1", "hard_text",
                o with { Column1Name = "profession", Column1Mapping = professions, Column2Name = "gender", Column2Vals = ["male", "female"],
                         Column2Mapping = Ids(("male", 0), ("female", 1)) },
                [["professor", "nurse"], ["architect", "journalist"], ["surgeon", "psychologist"], ["attorney", "teacher"]]),
            new("hf:canrager/amazon_reviews_mcauley_1and5", "canrager/amazon_reviews_mcauley_1and5", "text",
                o with { Column1Name = "category", Column1Mapping = categories, Column2Name = "rating", Column2Vals = ["1.0", "5.0"],
                         Column2Mapping = new Dictionary<string, string> { ["1.0"] = "1", ["5.0"] = "5" } },
                [["Books", "CDs_and_Vinyl"], ["Software", "Electronics"], ["Pet_Supplies", "Office_Products"], ["Industrial_and_Scientific", "Toys_and_Games"]]),
        ];
    }

    /// <summary>One dataset per path of <paramref name="paths"/> with its pairs from <paramref name="classes"/> (the
    /// <c>--classes</c> values, each <c>pos,neg</c>): a value <c>DATASET=pos,neg</c> is a pair of that dataset only (SAEBench's
    /// pair list per dataset), a value without a dataset a pair of every dataset. A dataset named that is not in
    /// <paramref name="paths"/> is an error.</summary>
    public static IReadOnlyList<ScrDataset> ForPaths(IReadOnlyList<string> paths, IReadOnlyList<string> classes, string textField, ScrOptions options)
    {
        var tied = classes.Select(c => DatasetTie.Parse(c, paths, "--classes")).ToList();
        return [.. paths.Select(p => new ScrDataset(p, p, textField, options,
            [.. tied.Where(t => t.Dataset is null || t.Dataset == p).Select(t => DatasetTie.List(t.Values))]))];
    }

    /// <summary>Refuses no dataset, a dataset without pairs, a pair given twice for one dataset, and a dataset twice.</summary>
    internal static void Check(IReadOnlyList<ScrDataset> datasets)
    {
        if (datasets.Count == 0) throw new SaeSharpException("SCR: no dataset");
        foreach (var g in datasets.GroupBy(d => d.Name).Where(g => g.Count() > 1))
            throw new SaeSharpException($"SCR: dataset '{g.Key}' is given {g.Count()} times; give each once (its pairs together)");
        foreach (var d in datasets)
        {
            if (d.Pairs.Count == 0) throw new SaeSharpException($"SCR on {d.Name}: no value pair of attribute 1 (--classes)");
            var seen = new HashSet<string>(StringComparer.Ordinal);
            foreach (var p in d.Pairs)
                if (!seen.Add(string.Join("\u0000", p)))
                    throw new SaeSharpException($"SCR on {d.Name}: the pair {string.Join(",", p)} is given twice (--classes)");
        }
    }
}

/// <summary>Option values tied to one dataset, <c>DATASET=values</c> (<c>--classes hf:LabHC/bias_in_bios=professor,nurse</c>).</summary>
internal static class DatasetTie
{
    /// <summary>(the dataset, the values) of <paramref name="value"/> when it starts with one of <paramref name="datasets"/>
    /// followed by <c>=</c> (the longest that does); (null, <paramref name="value"/>) when it has no <c>=</c>. A value whose
    /// text before <c>=</c> is no dataset given is an error naming it and the datasets.</summary>
    internal static (string? Dataset, string Values) Parse(string value, IReadOnlyList<string> datasets, string option)
    {
        foreach (var d in datasets.OrderByDescending(d => d.Length))
            if (value.StartsWith(d + "=", StringComparison.Ordinal)) return (d, value[(d.Length + 1)..]);
        int eq = value.LastIndexOf('=');
        if (eq >= 0)
            throw new SaeSharpException($"{option} {value}: '{value[..eq]}' is not among --dataset ({string.Join(", ", datasets)}); " +
                                        $"{option} DATASET=values gives the values to that dataset only");
        return (null, value);
    }

    /// <summary>Per dataset of <paramref name="paths"/> its class list from the <c>--classes</c> values <paramref name="classes"/>
    /// (TPP, sparse probing: <paramref name="eval"/>): a value <c>DATASET=a,b,c</c> is that dataset's list, a value without a
    /// dataset every other dataset's; null where none applies. Two lists for one dataset are an error.</summary>
    internal static IReadOnlyList<IReadOnlyList<string>?> ClassLists(IReadOnlyList<string> paths, IReadOnlyList<string> classes, string eval) =>
        [.. PerDataset(paths, classes, "--classes", $"{eval} takes one class list per dataset", "a,b,c").Select(v => v is null ? null : List(v))];

    /// <summary>Per dataset of <paramref name="paths"/> its <c>--saebench-source</c> from <paramref name="sources"/>
    /// (<c>DATASET=NAME</c> for one dataset, <c>NAME</c> for the others; null where none applies).</summary>
    internal static IReadOnlyList<string?> SaeBenchSources(IReadOnlyList<string> paths, IReadOnlyList<string> sources) =>
        PerDataset(paths, sources, "--saebench-source", "a dataset is drawn by one source", "NAME");

    /// <summary>Per dataset of <paramref name="paths"/> its value of <paramref name="option"/> from <paramref name="values"/>: a
    /// value <c>DATASET=v</c> is that dataset's, a value without a dataset every other dataset's; null where none applies.
    /// Two values for one dataset, or two without one, are an error (<paramref name="why"/> says what a dataset takes,
    /// <paramref name="example"/> is a value).</summary>
    internal static IReadOnlyList<string?> PerDataset(IReadOnlyList<string> paths, IReadOnlyList<string> values, string option, string why, string example)
    {
        var tied = values.Select(c => Parse(c, paths, option)).ToList();
        foreach (var g in tied.GroupBy(t => t.Dataset).Where(g => g.Count() > 1))
            throw new SaeSharpException(g.Key is null
                ? $"{option} is given {g.Count()} times without a dataset; {why} (name it: {option} DATASET={example})"
                : $"{option} names dataset '{g.Key}' {g.Count()} times; {why}");
        return [.. paths.Select(p => tied.FirstOrDefault(t => t.Dataset == p).Values ?? tied.FirstOrDefault(t => t.Dataset is null).Values)];
    }

    /// <summary>The comma-separated values of <paramref name="s"/>, trimmed, empty ones dropped.</summary>
    internal static IReadOnlyList<string> List(string s) => s.Split(',', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries);
}

/// <summary>One SCR run: one value pair of one dataset.</summary>
/// <param name="DatasetName"><see cref="ScrDataset.Name"/>.</param>
/// <param name="Split">How the texts were split: <c>train/test splits</c> (the dataset's own) or
/// <see cref="SpuriousCorrelationRemoval.PositionSplitName"/>.</param>
/// <param name="Report">The pair's result.</param>
public sealed record ScrRun(string DatasetName, string Split, ScrReport Report) : ISaeBenchProbeRun
{
    /// <summary>SAEBench's run name, <c>{dataset_name}_scr_{pos}_{neg}</c>.</summary>
    public string RunName => $"{DatasetName}_scr_{Report.Column1.Replace(" / ", "_", StringComparison.Ordinal)}";

    IReadOnlyList<int> ISaeBenchProbeRun.NValues => Report.NValues;
    IReadOnlyDictionary<string, double> ISaeBenchProbeRun.Metrics() => Report.Metrics();
    JsonObject ISaeBenchProbeRun.ToJson() => Report.ToJson();
}

/// <summary>Result of <c>SpuriousCorrelationRemoval.RunSuite</c>: every run and SAEBench's means over them.</summary>
/// <param name="Hook">Hook the SAE reads.</param>
/// <param name="Runs">Every (dataset, pair) run, datasets in order, pairs in order.</param>
public sealed record ScrSuiteReport(string Hook, IReadOnlyList<ScrRun> Runs)
{
    /// <summary>SAEBench's <c>eval_result_metrics.scr_metrics</c> (<c>average_results_dictionaries</c>): each metric's mean
    /// over every run that has it, flat over all (dataset, pair) runs, not per dataset first (a dataset with more pairs weighs
    /// more). <c>scr_metric_threshold_{n}</c> is absent from a run whose biased probe is equally good on both sets, so its
    /// mean is over the others.</summary>
    public IReadOnlyDictionary<string, double> Metrics()
    {
        var sums = new Dictionary<string, (double Sum, int Count)>();
        var order = new List<string>();
        foreach (var run in Runs)
            foreach (var (k, v) in run.Report.Metrics())
            {
                if (!sums.TryGetValue(k, out var a)) order.Add(k);
                sums[k] = (a.Sum + v, a.Count + 1);
            }
        return order.ToDictionary(k => k, k => sums[k].Sum / sums[k].Count);
    }

    /// <summary>Writes SAEBench's SCR output (<c>ScrEvalOutput</c>, its JSON schema <c>eval_output_schema_scr.json</c>):
    /// <see cref="SaeBenchEnvelope"/> with <c>eval_type_id</c> "scr", <c>eval_config</c> (<c>dataset_names</c>,
    /// <c>perform_scr</c>, <c>n_values</c>, <c>column1_vals_lookup</c>, the model, and <paramref name="run"/>'s further
    /// fields), <c>eval_result_metrics.scr_metrics</c> (the means) and one <c>eval_result_details</c> entry per run
    /// (<c>dataset_name</c> = <c>{run name}_results</c>, as SAEBench names them); SaeSharp's extras in
    /// <c>eval_result_unstructured</c>: <c>producer</c>, <c>hook</c>, <c>pooling</c> and <c>runs</c> (each run's split, set
    /// sizes, clean accuracies and directions).</summary>
    public void WriteJson(string path, SaeBenchRun? run = null)
    {
        var names = Runs.Select(r => r.DatasetName).Distinct().ToList();
        var config = SaeBenchEnvelope.ProbeConfig(names, true, run, Runs);
        config["column1_vals_lookup"] = new JsonObject(names.Select(n => KeyValuePair.Create(n, (JsonNode?)new JsonArray([.. Runs.Where(r => r.DatasetName == n)
            .Select(r => (JsonNode)new JsonArray([.. r.Report.Column1.Split(" / ").Select(v => (JsonNode)v)]))]))));
        SaeBenchEnvelope.WriteProbeRuns(path, "scr", config, run, Metrics(), Runs, Hook, []);
    }
}
