using System.Text.Json.Nodes;
using Parquet;
using Parquet.Schema;
using SaeSharp.Analysis;
using SaeSharp.Data;
using SaeSharp.Models;
using SaeSharp.Pipelines;
using SaeSharp.Tests.Hub;
using SaeSharp.Tokenizers;
using static SaeSharp.Tests.Analysis.ProbeRows;

namespace SaeSharp.Tests.Analysis;

/// <summary>TPP over several datasets (SAEBench's <c>run_eval_single_sae</c> with <c>perform_scr=False</c>), classes and SCR
/// pairs tied to one dataset (<c>--classes DATASET=...</c>), and SAEBench's minimum set sizes (strict: an error; else a
/// warning), each naming the counts.</summary>
public sealed class TppSuiteTests : FakeHubTestBase
{
    private string Jsonl(string name, IEnumerable<(string Text, string Cls, string G)> rows) => ProbeRows.Jsonl(Path.Combine(_work, name), rows);

    /// <summary>Runs <paramref name="action"/> with <see cref="DatasetWarnings.Handler"/> collecting the warnings.</summary>
    private static List<string> Warnings(Action action)
    {
        var list = new List<string>();
        var previous = DatasetWarnings.Handler;
        DatasetWarnings.Handler = list.Add;
        try { action(); }
        finally { DatasetWarnings.Handler = previous; }
        return list;
    }

    [Fact]
    public void Two_datasets_average_to_the_mean_of_two_single_dataset_runs_and_each_dataset_is_pooled_once()
    {
        using var f = new AnalysisFixture();
        var (sae, pm) = ModelForSae.LoadWithSae(f.SaeDir, f.ModelDir);
        using var _s = sae;
        using var _m = pm;
        var tok = Tokenizer.FromFolder(f.ModelDir);
        string p1 = Jsonl("one.jsonl", Rows(400, 1)), p2 = Jsonl("two.jsonl", Rows(300, 2));
        var text = new TextProbingOptions { ContextSize = 8, MinTexts = 5 };
        // SAEBench's per-class sizes scaled down: 40 training and 10 test texts of each class (train_set_size / 2, test_set_size / 2).
        var probing = new SparseProbingOptions { TrainSetSize = 80, TestSetSize = 20 };
        var tpp = new TppOptions { NValues = [1, 3] };
        long passes = 0;
        var hooks = new List<(string, Func<TorchSharp.torch.Tensor, TorchSharp.torch.Tensor?>)>(pm.Hooks ?? []) { ("hook_embed", t => { passes += t.shape[0]; return null; }) };
        var single1 = TargetedProbePerturbation.Run(sae, pm.Model, hooks, tok, p1, text, probing, tpp);
        var single2 = TargetedProbePerturbation.Run(sae, pm.Model, hooks, tok, p2, text, probing, tpp);
        passes = 0;
        var suite = TargetedProbePerturbation.RunSuite(sae, pm.Model, hooks, tok,
            [new TppDataset(p1, "one", "text", "label", null), new TppDataset(p2, "two", "text", "label", null)], text, probing, tpp);
        // Three classes, each 40 + 10 texts, in each file: 150 texts per dataset, each run through the model once.
        Assert.Equal(2 * 3 * 50, passes);
        Assert.Equal([150L, 150L], suite.Runs.Select(r => r.Report.Texts));
        Assert.Equal(["one_tpp", "two_tpp"], suite.Runs.Select(r => r.RunName));
        Assert.All(suite.Runs, r => Assert.Equal(TextProbing.EachClassSplitName, r.Split));
        var (m1, m2, mean) = (single1.Metrics(), single2.Metrics(), suite.Metrics());
        Assert.Equal(m1.OrderBy(kv => kv.Key), suite.Runs[0].Report.Metrics().OrderBy(kv => kv.Key));
        Assert.Equal(m2.OrderBy(kv => kv.Key), suite.Runs[1].Report.Metrics().OrderBy(kv => kv.Key));
        Assert.Equal(6, mean.Count);
        foreach (var key in m1.Keys) Assert.Equal((m1[key] + m2[key]) / 2, mean[key], 12);

        string json = Path.Combine(_work, "tpp.json");
        suite.WriteJson(json);
        var root = JsonNode.Parse(File.ReadAllText(json))!;
        Assert.Equal("tpp", root["eval_type_id"]!.GetValue<string>());
        Assert.Equal(mean["tpp_threshold_3_total_metric"], root["eval_result_metrics"]!["tpp_metrics"]!["tpp_threshold_3_total_metric"]!.GetValue<double>(), 12);
        var details = root["eval_result_details"]!.AsArray();
        Assert.Equal(["one_tpp_results", "two_tpp_results"], details.Select(d => d!["dataset_name"]!.GetValue<string>()));
        Assert.Equal(m2["tpp_threshold_1_intended_diff_only"], details[1]!["tpp_threshold_1_intended_diff_only"]!.GetValue<double>(), 12);
        // Classes in order of first appearance in the file.
        var classes = single1.Classes.Select(c => c.Class).ToList();
        Assert.Equal(["a", "b", "c"], classes.Order());
        Assert.Equal(classes, root["eval_result_unstructured"]!["one"]!.AsObject().Select(kv => kv.Key));
        Assert.Equal(single1.ClassMetrics(classes.IndexOf("b"))["tpp_threshold_1_total_metric"],
            root["eval_result_unstructured"]!["one"]!["b"]!["tpp_threshold_1_total_metric"]!.GetValue<double>(), 12);
        Assert.Equal(classes, root["eval_result_unstructured"]!["runs"]![0]!["eval_result_details"]!.AsArray().Select(c => c!["class"]!.GetValue<string>()));
    }

    [Fact]
    public void A_pair_tied_to_one_dataset_runs_on_that_dataset_only()
    {
        string p1 = Jsonl("d1.jsonl", Rows(60, 3)), p2 = Jsonl("d2.jsonl", Rows(60, 4));
        var o = new ScrOptions { Column1Name = "label", Column2Name = "g", Column2Vals = ["m", "f"] };
        var ds = ScrDataset.ForPaths([p1, p2], [$"{p1}=a,b", "a,c"], "text", o);
        Assert.Equal(["a,b", "a,c"], ds[0].Pairs.Select(p => string.Join(",", p)));
        Assert.Equal(["a,c"], ds[1].Pairs.Select(p => string.Join(",", p)));
        // Without a dataset named, every pair runs on every dataset (the cross product).
        Assert.All(ScrDataset.ForPaths([p1, p2], ["a,b", "a,c"], "text", o), d => Assert.Equal(2, d.Pairs.Count));
        // Tied to a dataset that is not given: an error naming it and the datasets.
        var e = Assert.Throws<SaeSharpException>(() => ScrDataset.ForPaths([p1, p2], ["elsewhere.jsonl=a,b"], "text", o));
        Assert.Contains("'elsewhere.jsonl' is not among --dataset", e.Message);
        Assert.Contains(p2, e.Message);
        // Only p2's pair, a,c: dataset 1 has no pair left, which ScrDataset.Check refuses by name.
        var onlyTwo = ScrDataset.ForPaths([p1, p2], [$"{p2}=a,c"], "text", o);
        Assert.Empty(onlyTwo[0].Pairs);
        Assert.Contains($"SCR on {p1}: no value pair", Assert.Throws<SaeSharpException>(() => ScrDataset.Check(onlyTwo)).Message);

        // TPP: one class list per dataset, a list without a dataset for the others.
        var t = TppDataset.ForPaths([p1, p2], [$"{p2}=b,c", "a,b,c"], "text", "label");
        Assert.Equal(["a", "b", "c"], t[0].Classes!);
        Assert.Equal(["b", "c"], t[1].Classes!);
        Assert.Null(TppDataset.ForPaths([p1], [], "text", "label")[0].Classes);
        Assert.Contains("one class list per dataset", Assert.Throws<SaeSharpException>(() => TppDataset.ForPaths([p1, p2], ["a,b", "b,c"], "text", "label")).Message);
        Assert.Contains("is not among --dataset", Assert.Throws<SaeSharpException>(() => TppDataset.ForPaths([p1], ["x=a,b"], "text", "label")).Message);
    }

    [Fact]
    public void Scr_quadrants_below_saebench_sizes_are_an_error_when_strict_and_a_warning_naming_the_counts_otherwise()
    {
        // Training half: quadrants PP 30, PN 25, NP 40, NN 70; test half PP 11, PN 5, NP 5, NN 11. Set sizes 160 and 20
        // want m = 40 and 5. The agreeing PP needs more than 2m: (30 − 1) / 2 = 14 is its limit, so m = 14 < 40 and PP is
        // named; the test half's limits are (11 − 1) / 2 = 5, 5, 5, 5: m = 5, as wanted.
        var c1 = new List<bool?>();
        var c2 = new List<bool?>();
        var fit = new List<bool>();
        foreach (var (a, b, nTrain, nTest) in new[] { (true, true, 30, 11), (true, false, 25, 5), (false, true, 40, 5), (false, false, 70, 11) })
            for (int i = 0; i < nTrain + nTest; i++)
            {
                c1.Add(a);
                c2.Add(b);
                fit.Add(i < nTrain);
            }
        var o = new ScrOptions { Column1Vals = ["a", "b"], Column2Vals = ["m", "f"], TrainSetSize = 160, TestSetSize = 20, MinTextsPerQuadrant = 2 };
        ScrSets train = null!, test = null!;
        var warnings = Warnings(() => (train, test) = SpuriousCorrelationRemoval.BuildSets(c1, c2, fit, o, "toy"));
        Assert.Equal((14, 5), (train.PerQuadrant, test.PerQuadrant));
        var w = Assert.Single(warnings);
        Assert.Contains("SCR on toy, a / b: 14 training texts per quadrant where SAEBench has 40", w);
        // Each quadrant SAEBench's assertions fail at m = 40 (agreeing > 80, others ≥ 40), b × m (40) not among them.
        Assert.Contains("in the training half 'a' × 'm' has 30, needs more than 2 × 40, 'a' × 'f' has 25, needs 40, 'b' × 'f' has 70, needs more than 2 × 40 (", w);
        Assert.Contains("a × m 30, a × f 25, b × m 40, b × f 70", w);
        var e = Assert.Throws<SaeSharpException>(() => SpuriousCorrelationRemoval.BuildSets(c1, c2, fit, o with { StrictSizes = true }, "toy"));
        Assert.Contains("too few texts: in the training half 'a' × 'm' has 30, needs more than 2 × 40, 'a' × 'f' has 25", e.Message);
        // Enough texts: no warning, no error, strict or not.
        Assert.Empty(Warnings(() => SpuriousCorrelationRemoval.BuildSets(c1, c2, fit, o with { TrainSetSize = 40, StrictSizes = true })));
    }

    [Fact]
    public void Tpp_classes_below_saebench_sizes_are_an_error_when_strict_and_a_warning_naming_the_counts_otherwise()
    {
        // Class a: 30 training texts with it and 30 without (balanced 60 of the wanted 80), 10 + 10 test; b: 40 + 40 and 10 + 10.
        bool[] Y(int pos, int neg) => [.. Enumerable.Repeat(true, pos), .. Enumerable.Repeat(false, neg)];
        (string, bool[], bool[])[] sets = [("a", Y(30, 30), Y(10, 10)), ("b", Y(40, 40), Y(10, 10))];
        var o = new SparseProbingOptions { TrainSetSize = 80, TestSetSize = 20 };
        var warnings = Warnings(() => TargetedProbePerturbation.CheckSizes(sets, o, new TppOptions(), "toy"));
        var w = Assert.Single(warnings);
        Assert.Contains("TPP on toy: 1 of 2 classes have smaller sets than SAEBench's", w);
        Assert.Contains("class 'a' has 60 training texts (30 of it) and 20 test texts (10 of it)", w);
        Assert.Contains("SAEBench's sets are 80 training and 20 test texts per class", w);
        var e = Assert.Throws<SaeSharpException>(() => TargetedProbePerturbation.CheckSizes(sets, o, new TppOptions { StrictSizes = true }, "toy"));
        Assert.Contains("TPP on toy: too few texts: class 'a' has 60 training texts (30 of it) and 20 test texts (10 of it)", e.Message);
        Assert.Empty(Warnings(() => TargetedProbePerturbation.CheckSizes(sets, o with { TrainSetSize = 60 }, new TppOptions { StrictSizes = true }, "toy")));
    }

    private static void WriteParquet(string path, ParquetSchema schema, Func<ParquetRowGroupWriter, Task> write) => Task.Run(async () =>
    {
        await using var stream = File.Create(path);
        await using var writer = await ParquetWriter.CreateAsync(schema, stream);
        using var grp = writer.CreateRowGroup();
        await write(grp);
    }).GetAwaiter().GetResult();

    [Fact]
    public void Saebench_defaults_are_its_tpp_datasets_and_classes_read_from_the_hub_splits()
    {
        // SAEBench's ScrAndTppEvalConfig.dataset_names and dataset_info.chosen_classes_per_dataset.
        var d = TppDataset.SaeBenchDefaults();
        Assert.Equal(["LabHC/bias_in_bios_class_set1", "canrager/amazon_reviews_mcauley_1and5"], d.Select(x => x.Name));
        Assert.Equal(["hf:LabHC/bias_in_bios", "hf:canrager/amazon_reviews_mcauley_1and5"], d.Select(x => x.Path));
        Assert.Equal(["0", "1", "2", "6", "9"], d[0].Classes!);
        Assert.Equal(["1", "2", "3", "5", "6"], d[1].Classes!);
        Assert.Equal(("hard_text", "profession", "text", "category"), (d[0].TextField, d[0].LabelField, d[1].TextField, d[1].LabelField));
        var text = new TextProbingOptions { TextField = d[0].TextField, LabelField = d[0].LabelField, Classes = d[0].Classes };

        // Offline: the hub has no such repo, and the error names it.
        var missing = Assert.Throws<SaeSharpException>(() => TextProbing.Read(d[0].Path, text, 4000, 1000, 42, Hub));
        Assert.Contains("LabHC/bias_in_bios", missing.Message);

        // A tiny bias_in_bios: train split 3 texts of each of professions 0, 1, 2, 6, 9 (and profession 13, not chosen), test 1 each.
        byte[] Split(IEnumerable<(string Text, long Prof)> rows)
        {
            string p = Path.Combine(_work, Guid.NewGuid().ToString("N") + ".parquet");
            var t = new DataField<string>("hard_text");
            var pr = new DataField<long>("profession");
            var list = rows.ToList();
            WriteParquet(p, new ParquetSchema(t, pr), async grp =>
            {
                await grp.WriteAsync(t, list.Select(r => r.Text).ToArray());
                await grp.WriteAsync(pr, new ReadOnlyMemory<long>([.. list.Select(r => r.Prof)]));
            });
            return File.ReadAllBytes(p);
        }
        long[] profs = [0, 1, 2, 6, 9, 13];
        _server.DatasetRepos["LabHC/bias_in_bios"] = new()
        {
            ["data/train-00000-of-00001.parquet"] = new(Split(profs.SelectMany(p => Enumerable.Range(0, 3).Select(i => ($"train {p} {i}", p)))), Lfs: true),
            ["data/test-00000-of-00001.parquet"] = new(Split(profs.Select(p => ($"test {p}", p)))),
        };
        // Sizes 4 and 2: at most 2 training and 1 test text per class, the training ones from the train split only.
        var data = TextProbing.Read(d[0].Path, text, 4, 2, 42, Hub);
        Assert.Equal("train/test splits", data.Split);
        Assert.Equal(["0", "1", "2", "6", "9"], data.Names);
        Assert.Equal(15, data.Texts.Count);
        for (int i = 0; i < data.Texts.Count; i++)
        {
            string prof = data.Names[data.Labels[i][0]];
            Assert.Equal(data.Fit[i] ? $"train {prof} " : $"test {prof}", data.Fit[i] ? data.Texts[i][..^1] : data.Texts[i]);
        }
        Assert.Equal(10, data.Fit.Count(x => x));
    }
}
