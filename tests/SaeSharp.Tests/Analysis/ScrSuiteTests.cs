using System.Text;
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

/// <summary>SCR over several value pairs and datasets (SAEBench's <c>run_eval_single_sae</c>): the flat mean over runs,
/// one pooling pass per dataset, the two-column reader, the dataset's own train/test splits, --saebench-defaults.</summary>
public sealed class ScrSuiteTests : FakeHubTestBase
{
    private static void WriteParquet(string path, ParquetSchema schema, Func<ParquetRowGroupWriter, Task> write) => Task.Run(async () =>
    {
        await using var stream = File.Create(path);
        await using var writer = await ParquetWriter.CreateAsync(schema, stream);
        using var grp = writer.CreateRowGroup();
        await write(grp);
    }).GetAwaiter().GetResult();

    private string Jsonl(string name, IEnumerable<(string Text, string Cls, string G)> rows) => ProbeRows.Jsonl(Path.Combine(_work, name), rows);

    private static ScrOptions Small => new() { Column1Name = "label", Column2Name = "g", Column2Vals = ["m", "f"], NValues = [1, 2], TrainSetSize = 80, TestSetSize = 20, MinTextsPerQuadrant = 2 };

    [Fact]
    public void Two_pairs_average_to_the_mean_of_two_single_pair_runs_and_each_text_is_pooled_once()
    {
        using var f = new AnalysisFixture();
        var (sae, pm) = ModelForSae.LoadWithSae(f.SaeDir, f.ModelDir);
        using var _s = sae;
        using var _m = pm;
        var tok = Tokenizer.FromFolder(f.ModelDir);
        string path = Jsonl("scr.jsonl", Rows(400, 1));
        var text = new TextProbingOptions { ContextSize = 8 };
        long passes = 0;
        var hooks = new List<(string, Func<TorchSharp.torch.Tensor, TorchSharp.torch.Tensor?>)>(pm.Hooks ?? []) { ("hook_embed", t => { passes += t.shape[0]; return null; }) };
        ScrReport Single(IReadOnlyList<string> pair) => SpuriousCorrelationRemoval.Run(sae, pm.Model, hooks, tok, path, text, Small with { Column1Vals = pair });
        var ab = Single(["a", "b"]);
        long abPasses = passes;
        passes = 0;
        var ac = Single(["a", "c"]);
        long acPasses = passes;
        passes = 0;
        var suite = SpuriousCorrelationRemoval.RunSuite(sae, pm.Model, hooks, tok, [new ScrDataset(path, "toy", "text", Small, [["a", "b"], ["a", "c"]])], text);
        // A single run pools exactly its own texts; the suite pools the union once: the texts of class a shared by both
        // pairs are not run twice, and nothing beyond classes a, b, c is run.
        Assert.Equal(ab.Texts, abPasses);
        Assert.Equal(ac.Texts, acPasses);
        Assert.True(passes < abPasses + acPasses, $"{passes} texts run for pairs of {abPasses} and {acPasses}");
        Assert.True(passes >= Math.Max(abPasses, acPasses));
        Assert.Equal(["toy_scr_a_b", "toy_scr_a_c"], suite.Runs.Select(r => r.RunName));
        Assert.All(suite.Runs, r => Assert.Equal(SpuriousCorrelationRemoval.PositionSplitName, r.Split));
        var (m1, m2, mean) = (ab.Metrics(), ac.Metrics(), suite.Metrics());
        foreach (var (r, single) in suite.Runs.Zip([m1, m2]))
            Assert.Equal(single.OrderBy(kv => kv.Key), r.Report.Metrics().OrderBy(kv => kv.Key));
        foreach (var key in m1.Keys.Union(m2.Keys))
        {
            double[] have = [.. new[] { m1, m2 }.Where(m => m.ContainsKey(key)).Select(m => m[key])];
            Assert.Equal(have.Average(), mean[key], 12);
        }
        Assert.Contains("scr_dir1_threshold_2", mean.Keys);

        string json = Path.Combine(_work, "suite.json");
        suite.WriteJson(json);
        var root = JsonNode.Parse(File.ReadAllText(json))!;
        Assert.Equal(mean["scr_dir2_threshold_1"], root["eval_result_metrics"]!["scr_metrics"]!["scr_dir2_threshold_1"]!.GetValue<double>(), 12);
        Assert.Equal(["toy_scr_a_b_results", "toy_scr_a_c_results"], root["eval_result_details"]!.AsArray().Select(d => d!["dataset_name"]!.GetValue<string>()));
    }

    [Fact]
    public void The_two_column_reader_agrees_with_two_single_column_reads()
    {
        var rows = Rows(30, 2);
        string jsonl = Jsonl("two.jsonl", rows);
        string parquet = Path.Combine(_work, "two.parquet");
        var t = new DataField<string>("text");
        var l = new DataField<string>("label");
        var g = new DataField<long>("g");
        WriteParquet(parquet, new ParquetSchema(t, l, g), async grp =>
        {
            await grp.WriteAsync(t, rows.Select(r => r.Text).ToArray());
            await grp.WriteAsync(l, rows.Select(r => r.Cls).ToArray());
            await grp.WriteAsync(g, new ReadOnlyMemory<long>([.. rows.Select(r => r.G == "m" ? 0L : 1L)]));
        });
        foreach (var (path, col2) in new[] { (jsonl, "g"), (parquet, "g") })
        {
            var both = TextDataset.ReadClassified(TextDataset.ExpandFiles(path), "text", ["label", col2], ["--label-field", "--spurious-field"]).ToList();
            var first = TextDataset.ReadClassified(path, "text", "label").ToList();
            var second = TextDataset.ReadClassified(path, "text", col2).ToList();
            Assert.Equal(first.Select(r => (r.Text, r.Label)), both.Select(r => (r.Text, r.Labels[0])));
            Assert.Equal(second.Select(r => (r.Text, r.Label)), both.Select(r => (r.Text, r.Labels[1])));
        }
        // Integers as their decimal text, and the values of the source rows.
        Assert.Equal(rows.Select(r => r.G == "m" ? "0" : "1"), TextDataset.ReadClassified(parquet, "text", "g").Select(r => r.Label));
        Assert.Equal(rows.Select(r => r.Cls), TextDataset.ReadClassified(jsonl, "text", "label").Select(r => r.Label));
    }

    [Fact]
    public void A_folder_with_train_and_test_files_uses_its_splits_and_a_file_the_4_to_1_split()
    {
        var train = Rows(12, 3);
        var test = Rows(5, 4);
        string folder = Path.Combine(_work, "split");
        Jsonl("split/test.jsonl", test);
        Jsonl("split/train.jsonl", train);
        var ds = new ScrDataset(folder, "split", "text", Small, [["a", "b"]]);
        var data = SpuriousCorrelationRemoval.ReadDataset(ds, 5000);
        Assert.Equal("train/test splits", data.Split);
        Assert.Equal([.. train.Select(r => r.Text), .. test.Select(r => r.Text)], data.Texts);
        Assert.Equal([.. train.Select(_ => true), .. test.Select(_ => false)], data.Fit);
        var (c1, c2) = data.Attributes(Small with { Column1Vals = ["a", "b"] });
        bool? Want(string v, string pos, string neg) => v == pos ? true : v == neg ? false : null;
        Assert.Equal([.. train.Concat(test).Select(r => Want(r.Cls, "a", "b"))], c1);
        Assert.Equal([.. train.Concat(test).Select(r => Want(r.G, "m", "f"))], c2);

        // One file: 4:1 by position (of each five rows, the fifth tests).
        var one = SpuriousCorrelationRemoval.ReadDataset(ds with { Path = Path.Combine(folder, "train.jsonl") }, 5000);
        Assert.Equal(SpuriousCorrelationRemoval.PositionSplitName, one.Split);
        Assert.Equal([.. Enumerable.Range(0, 12).Select(i => i % 5 != 4)], one.Fit);

        // An empty test split is an error naming it.
        File.WriteAllText(Path.Combine(folder, "test.jsonl"), "");
        var e = Assert.Throws<SaeSharpException>(() => SpuriousCorrelationRemoval.ReadDataset(ds, 5000));
        Assert.Contains("the test split has no rows", e.Message);
    }

    [Fact]
    public void Bad_pairs_are_errors_naming_them()
    {
        string path = Jsonl("bad.jsonl", Rows(50, 5));
        var ds = new ScrDataset(path, "bad", "text", Small, [["a", "b"], ["a", "b"]]);
        var twice = Assert.Throws<SaeSharpException>(() => ScrDataset.Check([ds]));
        Assert.Contains("the pair a,b is given twice", twice.Message);
        var data = SpuriousCorrelationRemoval.ReadDataset(ds, 5000);
        var absent = Assert.Throws<SaeSharpException>(() => data.Attributes(Small with { Column1Vals = ["a", "zebra"] }));
        Assert.Contains("no text has 'zebra' in 'label' (--classes)", absent.Message);
        Assert.Throws<SaeSharpException>(() => ScrDataset.Check([ds with { Pairs = [["a", "b"]] }, ds with { Pairs = [["a", "c"]] }]));
        Assert.Contains("no value pair", Assert.Throws<SaeSharpException>(() => ScrDataset.Check([ds with { Pairs = [] }])).Message);
    }

    [Fact]
    public void Saebench_defaults_are_its_datasets_pairs_and_column_ids_and_are_read_from_the_hub_splits()
    {
        // SAEBench's ScrAndTppEvalConfig (dataset_names, column1_vals_lookup), COLUMN2_VALS_LOOKUP and dataset_info.
        var d = ScrDataset.SaeBenchDefaults();
        Assert.Equal(["LabHC/bias_in_bios_class_set1", "canrager/amazon_reviews_mcauley_1and5"], d.Select(x => x.Name));
        Assert.Equal(["hf:LabHC/bias_in_bios", "hf:canrager/amazon_reviews_mcauley_1and5"], d.Select(x => x.Path));
        Assert.Equal(["professor,nurse", "architect,journalist", "surgeon,psychologist", "attorney,teacher"], d[0].Pairs.Select(p => string.Join(",", p)));
        Assert.Equal(["Books,CDs_and_Vinyl", "Software,Electronics", "Pet_Supplies,Office_Products", "Industrial_and_Scientific,Toys_and_Games"],
            d[1].Pairs.Select(p => string.Join(",", p)));
        Assert.Equal(("hard_text", "profession", "gender", "21", "13", "0", "1"),
            (d[0].TextField, d[0].Options.Column1Name, d[0].Options.Column2Name, d[0].Options.Column1Mapping!["professor"], d[0].Options.Column1Mapping!["nurse"],
             d[0].Options.Column2Mapping!["male"], d[0].Options.Column2Mapping!["female"]));
        Assert.Equal(("category", "rating", "24", "1"), (d[1].Options.Column1Name, d[1].Options.Column2Name, d[1].Options.Column1Mapping!["Books"], d[1].Options.Column1Mapping!["Toys_and_Games"]));

        // Offline: the hub has no such repo, and the error names it.
        var missing = Assert.Throws<SaeSharpException>(() => SpuriousCorrelationRemoval.ReadDataset(d[0], 5000, Hub));
        Assert.Contains("LabHC/bias_in_bios", missing.Message);
        Assert.Contains("not found", missing.Message);

        // A tiny bias_in_bios with its two splits: professions by id, gender 0/1, the text in hard_text.
        byte[] Split(params (string Text, long Prof, long Gender)[] rows)
        {
            string p = Path.Combine(_work, Guid.NewGuid().ToString("N") + ".parquet");
            var t = new DataField<string>("hard_text");
            var pr = new DataField<long>("profession");
            var g = new DataField<long>("gender");
            WriteParquet(p, new ParquetSchema(t, pr, g), async grp =>
            {
                await grp.WriteAsync(t, rows.Select(r => r.Text).ToArray());
                await grp.WriteAsync(pr, new ReadOnlyMemory<long>([.. rows.Select(r => r.Prof)]));
                await grp.WriteAsync(g, new ReadOnlyMemory<long>([.. rows.Select(r => r.Gender)]));
            });
            return File.ReadAllBytes(p);
        }
        _server.DatasetRepos["LabHC/bias_in_bios"] = new()
        {
            ["data/train-00000-of-00001.parquet"] = new(Split(("she nurses", 13, 1), ("he teaches", 21, 0), ("he paints", 14, 0)), Lfs: true),
            ["data/test-00000-of-00001.parquet"] = new(Split(("she teaches", 21, 1))),
        };
        var data = SpuriousCorrelationRemoval.ReadDataset(d[0], 5000, Hub);
        Assert.Equal("train/test splits", data.Split);
        Assert.Equal(["she nurses", "he teaches", "he paints", "she teaches"], data.Texts);
        Assert.Equal([true, true, true, false], data.Fit);
        var (c1, c2) = data.Attributes(d[0].Options with { Column1Vals = ["professor", "nurse"] });
        Assert.Equal([false, true, null, true], c1);
        Assert.Equal([false, true, true, false], c2);
        var absent = Assert.Throws<SaeSharpException>(() => data.Attributes(d[0].Options with { Column1Vals = ["surgeon", "nurse"] }));
        Assert.Contains("'surgeon' (stored as '25')", absent.Message);
    }
}
