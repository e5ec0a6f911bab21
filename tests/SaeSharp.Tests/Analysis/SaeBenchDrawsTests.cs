using System.Text.Json;
using System.Text.Json.Nodes;
using SaeSharp.Analysis;
using SaeSharp.Data;
using SaeSharp.Pipelines;
using SaeSharp.Tests.Cli;
using SaeSharp.Tests.Tokenizers;
using SaeSharp.Tokenizers;

namespace SaeSharp.Tests.Analysis;

/// <summary>
/// The texts sparse probing, TPP (<see cref="TextProbingOptions.BalanceField"/>) and SCR draw from a two-column
/// classification dataset, against the texts SAEBench's own <c>get_balanced_dataset</c>, <c>ensure_shared_keys</c> and
/// <c>get_spurious_corr_data</c> pick from the same rows (tests/data/saebench_draws/draws.json, written by
/// bench/reference/saebench_draws_fixture.py with pandas 1.5.3 and NumPy 1.24.2).
/// </summary>
public class SaeBenchDrawsTests
{
    private static readonly Lazy<JsonNode> Fixture = new(() => JsonNode.Parse(File.ReadAllText(TestPaths.Data("saebench_draws", "draws.json")))!);

    /// <summary>The fixture's rows as a dataset folder with train and test splits (as load_dataset gives SAEBench).</summary>
    private static string WriteSplits()
    {
        string dir = TestPaths.TempDir();
        foreach (var split in new[] { "train", "test" })
            File.WriteAllLines(Path.Combine(dir, split + ".jsonl"), Fixture.Value[split + "_rows"]!.AsArray().Select(r => r!.ToJsonString()));
        return dir;
    }

    private static readonly TextProbingOptions Bios = new() { TextField = "hard_text", LabelField = "profession", BalanceField = "gender" };

    private static string[] Strings(JsonNode? n) => [.. n!.AsArray().Select(v => v!.GetValue<string>())];

    [Fact]
    public void Balanced_classes_hold_exactly_the_texts_saebench_draws_in_its_order()
    {
        string dir = WriteSplits();
        int trainSize = Fixture.Value["train_set_size"]!.GetValue<int>(), testSize = Fixture.Value["test_set_size"]!.GetValue<int>();
        foreach (var draw in Fixture.Value["balanced"]!.AsArray())
        {
            int seed = draw!["seed"]!.GetValue<int>();
            var d = TextProbing.FromClasses(dir, Bios, trainSize, testSize, seed);
            // Classes 2 (one gender), 3 (4 women in train) and 4 (3 men in test) are left out as SAEBench leaves them out.
            Assert.Equal(["5", "1", "0"], d.Names);
            Assert.Equal(Strings(draw["classes"]), d.Names);
            Assert.Equal("train/test splits, each class balanced by 'gender'", d.Split);
            for (int c = 0; c < d.Names.Count; c++)
            {
                var mine = d.Texts.Select((t, i) => (t, i)).Where(x => d.Labels[x.i][0] == c).ToList();
                Assert.Equal(Strings(draw["train"]![d.Names[c]]), mine.Where(x => d.Fit[x.i]).Select(x => x.t));
                Assert.Equal(Strings(draw["test"]![d.Names[c]]), mine.Where(x => !d.Fit[x.i]).Select(x => x.t));
            }
        }
    }

    [Fact]
    public void Each_class_has_a_quarter_of_the_set_size_of_each_gender_and_the_listed_classes_in_their_order()
    {
        string dir = WriteSplits();
        var d = TextProbing.FromClasses(dir, Bios with { Classes = ["0", "5"] }, 40, 20, 42);
        Assert.Equal(["0", "5"], d.Names);
        // Texts name their cell: "train bio k (profession p, gender g)". 10 + 10 training and 5 + 5 test texts per class;
        // class 5's genders are 2 and 10, sorted as numbers (2 first), as pandas' groupby sorts integers.
        foreach (var (c, genders) in new[] { (0, new[] { "0", "1" }), (1, new[] { "2", "10" }) })
            foreach (var (train, m) in new[] { (true, 10), (false, 5) })
            {
                var texts = d.Texts.Where((_, i) => d.Labels[i][0] == c && d.Fit[i] == train).ToList();
                Assert.Equal(2 * m, texts.Count);
                Assert.Equal(genders.SelectMany(g => Enumerable.Repeat(g, m)), texts.Select(t => t.Split("gender ")[1].TrimEnd(')')));
                Assert.All(texts, t => Assert.StartsWith(train ? "train" : "test", t));
                Assert.Equal(2 * m, texts.Distinct().Count());
            }
        var expected = Fixture.Value["balanced"]![0]!;
        Assert.Equal(Strings(expected["train"]!["5"]), d.Texts.Where((_, i) => d.Labels[i][0] == 1 && d.Fit[i]));
    }

    [Fact]
    public void A_class_saebench_skips_is_an_error_naming_the_half_its_groups_and_counts_or_a_warning_when_not_asked_for()
    {
        string dir = WriteSplits();
        var e = Assert.Throws<SaeSharpException>(() => TextProbing.FromClasses(dir, Bios with { Classes = ["0", "3"] }, 40, 20, 42));
        Assert.Contains("class '3' cannot be balanced by 'gender' as SAEBench's get_balanced_dataset does: " +
                        "in the training half a 'gender' group has fewer than 10 texts (0: 20 texts, 1: 4 texts), needs two values with 10 texts each", e.Message);
        e = Assert.Throws<SaeSharpException>(() => TextProbing.FromClasses(dir, Bios with { Classes = ["2", "0"] }, 40, 20, 42));
        Assert.Contains("class '2' cannot be balanced by 'gender'", e.Message);
        Assert.Contains("in the training half 'gender' has one value (0: 15 texts)", e.Message);
        Assert.Contains("in the test half 'gender' has one value (0: 8 texts)", e.Message);
        e = Assert.Throws<SaeSharpException>(() => TextProbing.FromClasses(dir, Bios with { Classes = ["4", "0"] }, 40, 20, 42));
        Assert.Contains("in the test half a 'gender' group has fewer than 5 texts (0: 3 texts, 1: 8 texts)", e.Message);
        Assert.DoesNotContain("training half", e.Message);
        e = Assert.Throws<SaeSharpException>(() => TextProbing.FromClasses(dir, Bios with { Classes = ["0", "9"] }, 40, 20, 42));
        Assert.Contains("no text has class '9' in 'profession'", e.Message);
        e = Assert.Throws<SaeSharpException>(() => TextProbing.FromClasses(dir, Bios with { BalanceField = "profession" }, 40, 20, 42));
        Assert.Contains("--balance-field 'profession' is the class column", e.Message);
        e = Assert.Throws<SaeSharpException>(() => TextProbing.FromClasses(dir, Bios with { BalanceField = "age" }, 40, 20, 42));
        Assert.Contains("no class field 'age' (--balance-field)", e.Message);
        // Only classes 0 and 1 balance at 15 per quadrant (0: 25/22, 1: 12/24 → class 1 fails): fewer than two classes.
        e = Assert.Throws<SaeSharpException>(() => TextProbing.FromClasses(dir, Bios, 60, 20, 42));
        Assert.Contains("at least two classes balanced by 'gender'", e.Message);
        string corpus = Path.Combine(dir, "corpus.jsonl");
        File.WriteAllLines(corpus, ["""{"text": "a b", "labels": [["x"], []]}"""]);
        e = Assert.Throws<SaeSharpException>(() => TextProbing.Read(corpus, Bios, 40, 20, 42));
        Assert.Contains("is a labelled corpus: --balance-field gender", e.Message);

        var warnings = new List<string>();
        var before = DatasetWarnings.Handler;
        DatasetWarnings.Handler = warnings.Add;
        try
        {
            TextProbing.FromClasses(dir, Bios, 40, 20, 42);
        }
        finally
        {
            DatasetWarnings.Handler = before;
        }
        var w = Assert.Single(warnings);
        Assert.Contains("3 class(es) left out", w);
        Assert.Contains("'2': in the training half 'gender' has one value", w);
        Assert.Contains("'3': in the training half a 'gender' group has fewer than 10 texts", w);
        Assert.Contains("'4': in the test half a 'gender' group has fewer than 5 texts", w);
    }

    [Fact]
    public void More_than_two_groups_is_an_error_and_one_file_splits_four_to_one_by_position()
    {
        string dir = TestPaths.TempDir();
        string three = Path.Combine(dir, "three.jsonl");
        File.WriteAllLines(three, Enumerable.Range(0, 120).Select(i => $$"""{"text": "t{{i}}", "label": "{{(i % 2 == 0 ? "a" : "b")}}", "group": {{i % 3}}}"""));
        var e = Assert.Throws<SaeSharpException>(() => TextProbing.FromClasses(three, new TextProbingOptions { BalanceField = "group" }, 40, 10, 42));
        Assert.Contains("class 'a' has 3 values of 'group' (0: 16 texts, 1: 16 texts, 2: 16 texts)", e.Message);

        // One file: rows 0..99, of each five the first four train (set sizes 24 : 6). Class = i % 2, group = (i / 2) % 2.
        string one = Path.Combine(dir, "one.jsonl");
        File.WriteAllLines(one, Enumerable.Range(0, 100).Select(i => $$"""{"text": "r{{i}}", "label": {{i % 2}}, "group": {{(i / 2) % 2}}}"""));
        var d = TextProbing.FromClasses(one, new TextProbingOptions { BalanceField = "group" }, 24, 6, 42);
        Assert.Equal("4:1 by position, each class balanced by 'group'", d.Split);
        Assert.Equal(["0", "1"], d.Names);
        for (int k = 0; k < d.Texts.Count; k++)
        {
            int row = int.Parse(d.Texts[k][1..], System.Globalization.CultureInfo.InvariantCulture);
            Assert.Equal(row % 5 != 4, d.Fit[k]);
            Assert.Equal(row % 2, d.Labels[k][0]);
        }
        // 6 per group in training (24 / 4), 1 per group in test (6 / 4): the first 6 of class 0, group 0, in training are
        // RandomState(42).choice(its rows, 6), over its training rows in file order.
        var c0g0 = Enumerable.Range(0, 100).Where(i => i % 5 != 4 && i % 2 == 0 && (i / 2) % 2 == 0).ToArray();
        var want = new NumpyRandomState(42).Choice(c0g0.Length, 6).Select(j => $"r{c0g0[j]}");
        Assert.Equal(want, d.Texts.Where((_, i) => d.Labels[i][0] == 0 && d.Fit[i]).Take(6));
    }

    /// <summary>A balance column with a value per row (the text column by mistake) names the first values and how many
    /// more, not every one: the reason stays a line, not a page per class.</summary>
    [Fact]
    public void A_column_with_many_values_names_the_first_four_and_counts_the_rest()
    {
        var column1 = Enumerable.Repeat("a", 500).ToArray();
        var column2 = Enumerable.Range(0, 500).Select(i => $"v{i:D3}").ToArray();
        var (kept, skipped) = SaeBenchDraws.Balanced(column1, column2, 10, 42, "text");
        Assert.Empty(kept);
        var reason = Assert.Single(skipped).Reason;
        Assert.Equal("a 'text' group has fewer than 10 texts (500 values: v000: 1 texts, v001: 1 texts, v002: 1 texts, " +
                     "v003: 1 texts, and 496 more)", reason);
        // Few values are all named, as before.
        var (_, two) = SaeBenchDraws.Balanced(["a", "a", "a"], ["0", "1", "1"], 10, 42, "gender");
        Assert.Equal("a 'gender' group has fewer than 10 texts (0: 1 texts, 1: 2 texts)", Assert.Single(two).Reason);
    }

    [Fact]
    public void Group_order_is_numeric_when_every_key_is_a_number_else_ordinal()
    {
        Assert.Equal(["1", "2", "10"], new[] { "10", "2", "1" }.Order(SaeBenchDraws.GroupOrder(["10", "2", "1"])));
        Assert.Equal(["1", "5"], new[] { "5", "1" }.Order(SaeBenchDraws.GroupOrder(["5", "1"])));
        Assert.Equal(["10", "2", "F"], new[] { "F", "2", "10" }.Order(SaeBenchDraws.GroupOrder(["F", "2", "10"])));
    }

    [Fact]
    public void Scr_sets_hold_exactly_saebenchs_spurious_corr_texts_in_its_shuffled_order()
    {
        string dir = WriteSplits();
        foreach (var draw in Fixture.Value["scr"]!.AsArray())
        {
            var scr = new ScrOptions
            {
                Column1Name = "profession", Column1Mapping = new Dictionary<string, string> { ["accountant"] = "0", ["architect"] = "1" },
                Column2Name = "gender", Column2Vals = ["male", "female"], Column2Mapping = new Dictionary<string, string> { ["male"] = "0", ["female"] = "1" },
                TrainSetSize = Fixture.Value["train_set_size"]!.GetValue<int>(), TestSetSize = Fixture.Value["test_set_size"]!.GetValue<int>(),
                StrictSizes = true, MinTextsPerQuadrant = 1, Seed = draw!["seed"]!.GetValue<int>(),
            };
            var ds = new ScrDataset(dir, "tiny", "hard_text", scr, [["accountant", "architect"]]);
            var data = SpuriousCorrelationRemoval.ReadDataset(ds, int.MaxValue);
            var o = scr with { Column1Vals = ["accountant", "architect"] };
            var (c1, c2) = data.Attributes(o);
            var (train, test) = SpuriousCorrelationRemoval.BuildSets(c1, c2, data.Fit, o, "tiny");
            foreach (var (sets, half) in new[] { (train, "train"), (test, "test") })
            {
                var want = draw[half]!;
                string[] T(int[] rows) => [.. rows.Select(r => data.Texts[r])];
                Assert.Equal(Strings(want["male / female"]), T(sets.Column2Pos));
                Assert.Equal(Strings(want["female_data_only"]), T(sets.Column2Neg));
                Assert.Equal(Strings(want["professor / nurse"]), T(sets.Column1Pos));
                Assert.Equal(Strings(want["nurse_data_only"]), T(sets.Column1Neg));
                Assert.Equal(Strings(want["male_professor / female_nurse"]), T(sets.BiasedPos));
                Assert.Equal(Strings(want["female_nurse_data_only"]), T(sets.BiasedNeg));
            }
        }
    }

    [Fact]
    public void Saebench_tpp_defaults_balance_by_saebenchs_column2_and_the_cli_option_is_refused_where_it_means_nothing()
    {
        Assert.Equal(["gender", "rating"], TppDataset.SaeBenchDefaults().Select(d => d.BalanceField));
        var bad = CliRunner.Run("probe", "--sae", "nowhere", "--model", "builtin", "--dataset", "x.jsonl", "--balance-field", "gender");
        Assert.NotEqual(0, bad.Exit);
        Assert.Contains("--balance-field: need --pooling mean", bad.Err + bad.Out);
        bad = CliRunner.Run("probe", "--sae", "nowhere", "--model", "builtin", "--dataset", "x.jsonl", "--pooling", "mean", "--scr",
            "--classes", "a,b", "--spurious-classes", "c,d", "--balance-field", "gender");
        Assert.NotEqual(0, bad.Exit);
        Assert.Contains("--balance-field: not with --scr", bad.Err + bad.Out);
        bad = CliRunner.Run("probe", "--sae", "nowhere", "--model", "builtin", "--pooling", "mean", "--tpp", "--saebench-defaults", "--balance-field", "gender");
        Assert.NotEqual(0, bad.Exit);
        Assert.Contains("--balance-field: not with --saebench-defaults", bad.Err + bad.Out);
        // An empty column name is named as such (it read as "no class field ''" on the first row).
        bad = CliRunner.Run("probe", "--sae", "nowhere", "--model", "builtin", "--dataset", "x.jsonl", "--pooling", "mean", "--balance-field", " ");
        Assert.NotEqual(0, bad.Exit);
        Assert.Contains("--balance-field: expected a column name, got an empty value", bad.Err + bad.Out);
        bad = CliRunner.Run("probe", "--sae", "nowhere", "--model", "builtin", "--dataset", "x.jsonl", "--pooling", "mean", "--label-field", "");
        Assert.Contains("--label-field: expected a column name, got an empty value", bad.Err + bad.Out);
    }

    [Fact]
    public void Tpp_reads_a_datasets_balance_field_and_leaves_out_a_class_with_one_value()
    {
        using var f = new AnalysisFixture();
        var (sae, pm) = ModelForSae.LoadWithSae(f.SaeDir, f.ModelDir);
        using var _s = sae;
        using var _m = pm;
        var tok = Tokenizer.FromFolder(f.ModelDir);
        // Classes a, b, c (cat, dog, bird); g in m/f, except class c: m only. Train split 240 rows, test 120.
        string dir = TestPaths.TempDir();
        var rng = new Random(3);
        string[] word = ["cat", "dog", "bird"], filler = ["the", "sat", "on", "mat", "ran", "to", "park"];
        foreach (var (split, n) in new[] { ("train", 240), ("test", 120) })
            File.WriteAllLines(Path.Combine(dir, split + ".jsonl"), Enumerable.Range(0, n).Select(i =>
            {
                int c = i % 3;
                bool m = c == 2 || (i / 3) % 2 == 0;
                string text = $" {word[c]} {(m ? "sun" : "moon")} {filler[rng.Next(filler.Length)]} {filler[rng.Next(filler.Length)]}";
                return new JsonObject { ["text"] = text, ["label"] = "abc"[c].ToString(), ["g"] = m ? "m" : "f" }.ToJsonString();
            }));
        long passes = 0;
        var hooks = new List<(string, Func<TorchSharp.torch.Tensor, TorchSharp.torch.Tensor?>)>(pm.Hooks ?? []) { ("hook_embed", t => { passes += t.shape[0]; return null; }) };
        var text = new TextProbingOptions { ContextSize = 8, MinTexts = 5 };
        var probing = new SparseProbingOptions { TrainSetSize = 40, TestSetSize = 20 };
        var warnings = new List<string>();
        var before = DatasetWarnings.Handler;
        DatasetWarnings.Handler = warnings.Add;
        TppSuiteReport suite;
        try
        {
            suite = TargetedProbePerturbation.RunSuite(sae, pm.Model, hooks, tok,
                [new TppDataset(dir, "toy", "text", "label", null) { BalanceField = "g" }], text, probing, new TppOptions { NValues = [1] });
        }
        finally
        {
            DatasetWarnings.Handler = before;
        }
        var run = Assert.Single(suite.Runs);
        Assert.Equal("train/test splits, each class balanced by 'g'", run.Split);
        // a and b: 10 texts of each g in training (40 / 4) and 5 in test (20 / 4): 2 × (20 + 10) texts pooled once each.
        Assert.Equal(60, passes);
        Assert.Equal(["a", "b"], run.Report.Classes.Select(c => c.Class));
        Assert.Contains(warnings, w => w.Contains("'c': in the training half 'g' has one value (m: 80 texts)", StringComparison.Ordinal));
    }
}
