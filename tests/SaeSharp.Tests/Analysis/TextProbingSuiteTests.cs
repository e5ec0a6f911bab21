using System.Text.Json.Nodes;
using Parquet.Schema;
using SaeSharp.Analysis;
using SaeSharp.Evaluation;
using SaeSharp.Models;
using SaeSharp.Pipelines;
using SaeSharp.Saes;
using SaeSharp.Tests.Evaluation;
using SaeSharp.Tests.Hub;
using SaeSharp.Tokenizers;

namespace SaeSharp.Tests.Analysis;

/// <summary>Sparse probing over SAEBench's eight datasets in one call (<see cref="TextProbing.RunSuite"/>,
/// <c>sae probe --pooling mean --saebench-defaults</c>): tiny copies of the five hub repos in their file layouts, served by
/// the fake hub; each dataset's numbers equal a one-dataset call on a local copy, the means are SAEBench's
/// <c>average_results_dictionaries</c>, and a missing dataset is refused before any model pass.</summary>
public sealed class TextProbingSuiteTests : FakeHubTestBase
{
    // SAEBench's sizes scaled down: 8 training and 4 test texts per task (4 and 2 of each class; bias_in_bios: 2 and 1 per gender).
    private static readonly SparseProbingOptions Sizes = new() { TrainSetSize = 8, TestSetSize = 4, KValues = SparseProbingDataset.SaeBenchKValues };
    private static readonly TextProbingOptions Text = new() { ContextSize = 16, MinTexts = 2 };

    private readonly Random _rng = new(5);

    private string Words(int n) => " " + string.Join(" ", Enumerable.Range(0, n).Select(_ => AnalysisFixture.Words[_rng.Next(AnalysisFixture.Words.Length)]));

    /// <summary>Writes one Parquet file per split (<c>data/{split}-00000-of-00001.parquet</c>) under <paramref name="folder"/>.</summary>
    private static void Splits(string folder, Func<string, (DataField Field, Array Values)[]> columns)
    {
        foreach (var split in new[] { "train", "test" })
        {
            var c = columns(split);
            SaeBenchSourcesTests.Write(Path.Combine(folder, "data", $"{split}-00000-of-00001.parquet"), new ParquetSchema([.. c.Select(x => (Field)x.Field)]), c);
        }
    }

    /// <summary>Local copies of the five hub repos SAEBench's eight datasets come from, each in its hub layout; returns
    /// repo → folder.</summary>
    private Dictionary<string, string> Repos()
    {
        var repos = new Dictionary<string, string>();
        string Folder(string repo) => repos[repo] = Path.Combine(_work, "repos", repo.Replace('/', '+'));

        // bias_in_bios: per profession of the three class sets and gender, 3 train and 2 test texts.
        long[] professions = [0, 1, 2, 6, 9, 11, 13, 14, 18, 19, 20, 21, 22, 25, 26];
        Splits(Folder("LabHC/bias_in_bios"), split =>
        {
            var rows = professions.SelectMany(p => new long[] { 0, 1 }.SelectMany(g => Enumerable.Range(0, split == "train" ? 3 : 2).Select(_ => (Words(6), p, g)))).ToList();
            return [(new DataField<string>("hard_text"), rows.Select(r => r.Item1).ToArray()), (new DataField<long>("profession"), rows.Select(r => r.p).ToArray()),
                    (new DataField<long>("gender"), rows.Select(r => r.g).ToArray())];
        });
        // Amazon reviews: per category 1, 2, 3, 5, 6 (and 0, not chosen) and rating 1.0 / 5.0, 3 train and 2 test texts.
        Splits(Folder("canrager/amazon_reviews_mcauley_1and5"), split =>
        {
            var rows = new long[] { 0, 1, 2, 3, 5, 6 }.SelectMany(c => new[] { 1.0, 5.0 }.SelectMany(r => Enumerable.Range(0, split == "train" ? 3 : 2).Select(_ => (Words(6), c, r)))).ToList();
            return [(new DataField<string>("text"), rows.Select(r => r.Item1).ToArray()), (new DataField<long>("category"), rows.Select(r => r.c).ToArray()),
                    (new DataField<double>("rating"), rows.Select(r => r.r).ToArray())];
        });
        // ag_news: labels 0-3, 6 train and 3 test texts each.
        Splits(Folder("fancyzhx/ag_news"), split =>
        {
            var rows = Enumerable.Range(0, split == "train" ? 24 : 12).Select(i => (Words(6), (long)(i % 4))).ToList();
            return [(new DataField<string>("text"), rows.Select(r => r.Item1).ToArray()), (new DataField<long>("label"), rows.Select(r => r.Item2).ToArray())];
        });
        // github-code: one train shard, code of more than 534 characters (the first 150 skipped) in the five languages and one other.
        string[] langs = ["C", "Python", "HTML", "Java", "PHP", "Ruby"];
        var code = Enumerable.Range(0, 48).Select(i => (Code: string.Concat(Enumerable.Range(0, 4).Select(_ => Words(40))), Lang: langs[i % langs.Length])).ToList();
        var codeField = new DataField<string>("code");
        var langField = new DataField<string>("language");
        SaeBenchSourcesTests.Write(Path.Combine(Folder("codeparrot/github-code"), "data", "train-00000-of-00001.parquet"), new ParquetSchema(codeField, langField),
            (codeField, code.Select(c => c.Code).ToArray()), (langField, code.Select(c => c.Lang).ToArray()));
        // europarl: each language's pair config, 8 rows.
        string europarl = Folder("Helsinki-NLP/europarl");
        foreach (var (_, pair) in SaeBenchDraws.EuroparlPairs)
        {
            var l = pair.Split('-');
            var st = new StructField("translation", new DataField<string>(l[0]), new DataField<string>(l[1]));
            SaeBenchSourcesTests.Write(Path.Combine(europarl, pair, "train-00000-of-00001.parquet"), new ParquetSchema(st),
                ((DataField)st.Fields[0], Enumerable.Range(0, 8).Select(_ => Words(6)).ToArray()), ((DataField)st.Fields[1], Enumerable.Range(0, 8).Select(_ => Words(6)).ToArray()));
        }
        return repos;
    }

    private void Serve(IReadOnlyDictionary<string, string> repos, params string[] except)
    {
        foreach (var (repo, folder) in repos.Where(r => !except.Contains(r.Key)))
            _server.DatasetRepos[repo] = Directory.EnumerateFiles(folder, "*", SearchOption.AllDirectories)
                .ToDictionary(f => Path.GetRelativePath(folder, f).Replace('\\', '/'), f => new FakeHubServer.FakeFile(File.ReadAllBytes(f), Lfs: true));
    }

    [Fact]
    public void Saebench_defaults_are_its_eight_datasets_with_their_chosen_classes()
    {
        // SAEBench's SparseProbingEvalConfig.dataset_names and dataset_info.chosen_classes_per_dataset.
        var d = SparseProbingDataset.SaeBenchDefaults();
        Assert.Equal(["LabHC/bias_in_bios_class_set1", "LabHC/bias_in_bios_class_set2", "LabHC/bias_in_bios_class_set3", "canrager/amazon_reviews_mcauley_1and5",
                      "canrager/amazon_reviews_mcauley_1and5_sentiment", "codeparrot/github-code", "fancyzhx/ag_news", "Helsinki-NLP/europarl"], d.Select(x => x.Name));
        Assert.Equal(["11", "13", "14", "18", "19"], d[1].Classes!);
        Assert.Equal(["20", "21", "22", "25", "26"], d[2].Classes!);
        Assert.Equal(["1.0", "5.0"], d[4].Classes!);
        Assert.Equal(["C", "Python", "HTML", "Java", "PHP"], d[5].Classes!);
        Assert.Equal([null, null, null, null, "amazon_sentiment", "github_code", "ag_news", "europarl"], d.Select(x => x.SaeBenchSource));
        Assert.Equal(["gender", "gender", "gender", "rating", null, null, null, null], d.Select(x => x.BalanceField));
        Assert.Equal([1, 2, 5], SparseProbingDataset.SaeBenchKValues);
        // The bias_in_bios and amazon repos are TPP's too: one hub copy serves both evals.
        Assert.Equal(TppDataset.SaeBenchDefaults().Select(t => t.Path), d.Where(x => x.BalanceField is not null).Select(x => x.Path).Distinct());
    }

    [Fact]
    public void Eight_datasets_in_one_call_equal_eight_one_dataset_calls_and_average_as_saebench()
    {
        var repos = Repos();
        Serve(repos);
        using var f = new AnalysisFixture();
        var (sae, pm) = ModelForSae.LoadWithSae(f.SaeDir, f.ModelDir);
        using var _s = sae;
        using var _m = pm;
        using var sae2 = SaeSharp.Interop.SaeLoader.Load(f.SaeDir);
        var tok = Tokenizer.FromFolder(f.ModelDir);
        long passes = 0;
        var hooks = new List<(string, Func<TorchSharp.torch.Tensor, TorchSharp.torch.Tensor?>)>(pm.Hooks ?? []) { ("hook_embed", t => { passes += t.shape[0]; return null; }) };
        var defaults = SparseProbingDataset.SaeBenchDefaults();
        var suites = TextProbing.RunSuite([sae, sae2], pm.Model, hooks, tok, defaults, Text, Sizes, Hub);
        // Per dataset 8 / 2 + 4 / 2 texts per class (SAEBench's train_set_size / 2 and test_set_size / 2; bias_in_bios and the
        // amazon categories 5 classes, sentiment 2, github 5, ag_news 4, europarl 5), each through the model once for both SAEs.
        long[] texts = [30, 30, 30, 30, 12, 30, 24, 30];
        Assert.Equal(texts, suites[0].Runs.Select(r => r.Report.Tokens));
        Assert.Equal(texts.Sum(), passes);
        var suite = suites[0];
        Assert.Equal(defaults.Select(d => d.Name), suite.Runs.Select(r => r.DatasetName));

        // Each dataset as a call of its own on the local copy (the same files): the same numbers, exactly; the second SAE
        // (the same weights) the same as the first.
        for (int i = 0; i < defaults.Count; i++)
        {
            string repo = defaults[i].Path[HubDatasetPrefix.Length..];
            var single = TextProbing.Run(sae, pm.Model, pm.Hooks, tok, repos[repo], defaults[i].Apply(Text), Sizes);
            Assert.Equal(single.Means().OrderBy(kv => kv.Key), suite.Runs[i].Report.Means().OrderBy(kv => kv.Key));
            Assert.Equal(single.Tasks.Select(t => t.Label), suite.Runs[i].Report.Tasks.Select(t => t.Label));
            Assert.Equal(suite.Runs[i].Report.Means().OrderBy(kv => kv.Key), suites[1].Runs[i].Report.Means().OrderBy(kv => kv.Key));
        }
        Assert.Equal(["1.0", "5.0"], suite.Runs[4].Report.Tasks.Select(t => t.Label));

        string json = Path.Combine(_work, "sparse.json");
        suite.WriteJson(json, new SaeBenchRun { ModelName = "tiny", EvalConfig = new JsonObject { ["context_length"] = 16 } });
        string text = File.ReadAllText(json);
        Assert.Empty(SaeBenchSchemaTests.SchemaErrors("sparse_probing", text));
        var root = JsonNode.Parse(text)!;
        Assert.Equal(defaults.Select(d => d.Name), root["eval_config"]!["dataset_names"]!.AsArray().Select(n => (string)n!));
        Assert.Equal([1, 2, 5], root["eval_config"]!["k_values"]!.AsArray().Select(n => (int)n!));
        var details = root["eval_result_details"]!.AsArray();
        Assert.Equal(defaults.Select(d => d.Name + "_results"), details.Select(d => (string)d!["dataset_name"]!));
        // eval_result_metrics: each key's mean over the eight details, summed in order and divided by 8 (average_results_dictionaries).
        var metrics = root["eval_result_metrics"]!;
        string[] keys = ["llm_test_accuracy", "llm_top_1_test_accuracy", "llm_top_5_test_accuracy", "sae_test_accuracy", "sae_top_1_test_accuracy", "sae_top_2_test_accuracy", "sae_top_5_test_accuracy"];
        foreach (var key in keys)
        {
            double sum = 0;
            foreach (var d in details) sum += (double)d![key]!;
            Assert.Equal(sum / 8, (double)metrics[key.StartsWith("llm", StringComparison.Ordinal) ? "llm" : "sae"]![key]!);
        }
        // Per class where SAEBench keeps it: {dataset}_results → class → its accuracies.
        var europarl = root["eval_result_unstructured"]!["Helsinki-NLP/europarl_results"]!.AsObject();
        Assert.Equal(["en", "fr", "de", "es", "nl"], europarl.Select(kv => kv.Key));
        var task = suite.Runs[7].Report.Tasks[1];
        Assert.Equal(task.SaeTopK[2], (double)europarl["fr"]!["sae_top_2_test_accuracy"]!);
        Assert.Equal(30, (int)root["eval_result_unstructured"]!["datasets"]!["LabHC/bias_in_bios_class_set2"]!["texts"]!);
        Assert.Equal(texts.Sum(), (long)root["eval_result_unstructured"]!["texts"]!);
    }

    [Fact]
    public void A_missing_dataset_is_refused_naming_it_before_any_model_pass()
    {
        Serve(Repos(), "Helsinki-NLP/europarl");
        using var f = new AnalysisFixture();
        var (sae, pm) = ModelForSae.LoadWithSae(f.SaeDir, f.ModelDir);
        using var _s = sae;
        using var _m = pm;
        long passes = 0;
        var hooks = new List<(string, Func<TorchSharp.torch.Tensor, TorchSharp.torch.Tensor?>)>(pm.Hooks ?? []) { ("hook_embed", t => { passes += t.shape[0]; return null; }) };
        var e = Assert.Throws<SaeSharpException>(() => (object)TextProbing.RunSuite([sae], pm.Model, hooks, Tokenizer.FromFolder(f.ModelDir),
            SparseProbingDataset.SaeBenchDefaults(), Text, Sizes, Hub));
        Assert.Contains("Helsinki-NLP/europarl", e.Message);
        Assert.Equal(0, passes);
        // A dataset given twice is refused by name.
        var twice = Assert.Throws<SaeSharpException>(() => SparseProbingDataset.Check([new("a.jsonl", "a.jsonl"), new("a.jsonl", "a.jsonl")]));
        Assert.Contains("'a.jsonl' is given 2 times", twice.Message);
    }

    [Fact]
    public void A_saebench_source_tied_to_one_dataset_draws_that_dataset_only()
    {
        var text = new TextProbingOptions();
        // ag_news for the first, europarl for the second: each dataset its own source.
        var both = SparseProbingDataset.ForPaths(["news", "parl"], [], text, ["news=ag_news", "parl=europarl"]);
        Assert.Equal(["ag_news", "europarl"], both.Select(d => d.SaeBenchSource));
        // A source without a dataset is every other dataset's; none given: the options' own for all.
        Assert.Equal(["ag_news", "github_code"], SparseProbingDataset.ForPaths(["news", "code"], [], text, ["github_code", "news=ag_news"]).Select(d => d.SaeBenchSource));
        Assert.Equal(["europarl", "europarl"], SparseProbingDataset.ForPaths(["a", "b"], [], text with { SaeBenchSource = "europarl" }).Select(d => d.SaeBenchSource));
        Assert.Equal(["ag_news", null], SparseProbingDataset.ForPaths(["news", "plain.jsonl"], [], text, ["news=ag_news"]).Select(d => d.SaeBenchSource));
        // Two untied sources, the same dataset twice, or a dataset not given: errors naming the option and the value.
        var e = Assert.Throws<SaeSharpException>(() => SparseProbingDataset.ForPaths(["a", "b"], [], text, ["ag_news", "europarl"]));
        Assert.Equal("--saebench-source is given 2 times without a dataset; a dataset is drawn by one source (name it: --saebench-source DATASET=NAME)", e.Message);
        e = Assert.Throws<SaeSharpException>(() => SparseProbingDataset.ForPaths(["a", "b"], [], text, ["a=ag_news", "a=europarl"]));
        Assert.Equal("--saebench-source names dataset 'a' 2 times; a dataset is drawn by one source", e.Message);
        e = Assert.Throws<SaeSharpException>(() => SparseProbingDataset.ForPaths(["a", "b"], [], text, ["c=ag_news"]));
        Assert.StartsWith("--saebench-source c=ag_news: 'c' is not among --dataset (a, b)", e.Message);
    }

    private const string HubDatasetPrefix = SaeSharp.Data.HubDataset.Prefix;
}
