using System.Text.Json;
using Parquet;
using Parquet.Schema;
using SaeSharp.Analysis;
using SaeSharp.Tests.Hub;
using SaeSharp.Tests.Tokenizers;

namespace SaeSharp.Tests.Analysis;

/// <summary>
/// SAEBench's europarl, github-code, ag_news and amazon-sentiment selections (<see cref="SaeBenchSources"/>) against
/// SAEBench's own functions run in Python on the same rows (tests/data/saebench_sources, written by its make.py): the
/// rows are written here as the hub stores them (Parquet; europarl a folder per language pair with a <c>translation</c>
/// struct), read from a local folder or the fake hub, and every selected text must match in order.
/// </summary>
public sealed class SaeBenchSourcesTests : FakeHubTestBase
{
    private static readonly Lazy<JsonDocument> Fixture = new(() =>
        JsonDocument.Parse(File.ReadAllText(TestPaths.Data("saebench_sources", "saebench_sources.json"))));

    private static JsonElement Part(string name) => Fixture.Value.RootElement.GetProperty(name);

    internal static void Write(string path, ParquetSchema schema, params (DataField Field, Array Values)[] columns)
    {
        Directory.CreateDirectory(Path.GetDirectoryName(path)!);
        Task.Run(async () =>
        {
            await using var stream = File.Create(path);
            await using var writer = await ParquetWriter.CreateAsync(schema, stream);
            using var g = writer.CreateRowGroup();
            foreach (var (field, values) in columns)
                await (values switch
                {
                    string[] t => g.WriteAsync(field, t),
                    long[] l => g.WriteAsync(field, new ReadOnlyMemory<long>(l)),
                    double[] d => g.WriteAsync(field, new ReadOnlyMemory<double>(d)),
                    _ => throw new ArgumentException(values.GetType().Name),
                });
        }).GetAwaiter().GetResult();
    }

    private static string[] Strings(JsonElement rows, string field) => [.. rows.EnumerateArray().Select(r => r.GetProperty(field).GetString()!)];

    /// <summary>Europarl's pair configs as the hub lays them out: <c>{pair}/train-0000i-of-00002.parquet</c>, one struct
    /// column <c>translation</c> {a: text, b: text}; plus a config SAEBench never reads.</summary>
    private string EuroparlFolder()
    {
        string root = Path.Combine(_work, "europarl");
        foreach (var pair in Part("europarl").GetProperty("shards").EnumerateObject())
        {
            var langs = pair.Name.Split('-');
            var shards = pair.Value.EnumerateArray().ToList();
            for (int s = 0; s < shards.Count; s++)
            {
                var st = new StructField("translation", new DataField<string>(langs[0]), new DataField<string>(langs[1]));
                var schema = new ParquetSchema(st);
                Write(Path.Combine(root, pair.Name, $"train-{s:00000}-of-{shards.Count:00000}.parquet"), schema,
                    ((DataField)st.Fields[0], Strings(shards[s], langs[0])), ((DataField)st.Fields[1], Strings(shards[s], langs[1])));
            }
        }
        var other = new StructField("translation", new DataField<string>("en"), new DataField<string>("sv"));
        Write(Path.Combine(root, "en-sv", "train-00000-of-00001.parquet"), new ParquetSchema(other),
            ((DataField)other.Fields[0], new[] { "not read" }), ((DataField)other.Fields[1], new[] { "inte läst" }));
        return root;
    }

    private static void AssertSelection(ProbeTexts data, IReadOnlyList<string> classes, JsonElement train, JsonElement test)
    {
        Assert.Equal(classes, data.Names);
        for (int c = 0; c < classes.Count; c++)
        {
            var mine = Enumerable.Range(0, data.Texts.Count).Where(i => data.Labels[i][0] == c).ToList();
            Assert.Equal(Strings2(train.GetProperty(classes[c])), mine.Where(i => data.Fit[i]).Select(i => data.Texts[i]));
            Assert.Equal(Strings2(test.GetProperty(classes[c])), mine.Where(i => !data.Fit[i]).Select(i => data.Texts[i]));
        }
    }

    private static string[] Strings2(JsonElement list) => [.. list.EnumerateArray().Select(v => v.GetString()!)];

    [Fact]
    public void Europarl_from_a_folder_and_the_hub_equals_saebenchs_selection()
    {
        var e = Part("europarl");
        var expected = e.GetProperty("expected");
        string[] langs = ["en", "fr", "de", "es", "nl"];
        string folder = EuroparlFolder();
        int train = e.GetProperty("train_size").GetInt32(), test = e.GetProperty("test_size").GetInt32();
        var local = SaeBenchSources.Europarl(folder, langs, train, test, 42);
        AssertSelection(local, langs, expected[0], expected[1]);
        // The hub's layout: the same files served; only the chosen pairs' folders are downloaded.
        _server.DatasetRepos["Helsinki-NLP/europarl"] = Directory.EnumerateFiles(folder, "*", SearchOption.AllDirectories)
            .ToDictionary(f => Path.GetRelativePath(folder, f).Replace('\\', '/'), f => new FakeHubServer.FakeFile(File.ReadAllBytes(f), Lfs: true));
        var hub = SaeBenchSources.Europarl("hf:Helsinki-NLP/europarl", langs, train, test, 42, Hub);
        AssertSelection(hub, langs, expected[0], expected[1]);
        Assert.DoesNotContain(Directory.EnumerateFiles(_cache, "*", SearchOption.AllDirectories), f => f.Contains("en-sv"));
        // Another seed shuffles otherwise; a language SAEBench has no pair for is an error naming its pairs.
        Assert.NotEqual(local.Texts, SaeBenchSources.Europarl(folder, langs, train, test, 0).Texts);
        var err = Assert.Throws<SaeSharpException>(() => SaeBenchSources.Europarl(folder, ["en", "sv"], train, test, 42));
        Assert.Contains("'sv'", err.Message);
        Assert.Contains("en from en-fr", err.Message);
    }

    [Fact]
    public void Github_code_equals_saebenchs_selection_skip_length_and_stop_rules_included()
    {
        var g = Part("github_code");
        string folder = Path.Combine(_work, "github-code");
        var shards = g.GetProperty("shards").EnumerateArray().ToList();
        for (int s = 0; s < shards.Count; s++)
        {
            var code = new DataField<string>("code");
            var repo = new DataField<string>("repo_name");
            var language = new DataField<string>("language");
            Write(Path.Combine(folder, "data", $"train-{s:00000}-of-{shards.Count:00000}.parquet"), new ParquetSchema(code, repo, language),
                (code, Strings(shards[s], "code")), (repo, Strings(shards[s], "repo_name")), (language, Strings(shards[s], "language")));
        }
        string[] langs = ["C", "Python", "HTML", "Java", "PHP"];
        var data = SaeBenchSources.GithubCode(folder, langs, g.GetProperty("train_size").GetInt32(), g.GetProperty("test_size").GetInt32(), 42);
        var expected = g.GetProperty("expected");
        AssertSelection(data, langs, expected[0], expected[1]);
        // Every text kept is longer than 534 - 150 code points: the skip cut 150 code points (emoji count once).
        Assert.All(data.Texts, t => Assert.True(SaeBenchDraws.PythonLength(t) > 384));
        Assert.Equal("b", SaeBenchDraws.PythonSliceFrom("\U0001F600ab", 2));
        Assert.Equal(3, SaeBenchDraws.PythonLength("\U0001F600ab"));
    }

    [Fact]
    public void Ag_news_and_amazon_sentiment_equal_saebenchs_per_class_samples()
    {
        var ag = Part("ag_news");
        foreach (var split in new[] { "train", "test" })
        {
            var rows = ag.GetProperty("splits").GetProperty(split);
            var text = new DataField<string>("text");
            var label = new DataField<long>("label");
            Write(Path.Combine(_work, "ag", "data", $"{split}-00000-of-00001.parquet"), new ParquetSchema(text, label),
                (text, Strings(rows, "text")), (label, rows.EnumerateArray().Select(r => r.GetProperty("label").GetInt64()).ToArray()));
        }
        _server.DatasetRepos["fancyzhx/ag_news"] = Directory.EnumerateFiles(Path.Combine(_work, "ag"), "*", SearchOption.AllDirectories)
            .ToDictionary(f => Path.GetRelativePath(Path.Combine(_work, "ag"), f).Replace('\\', '/'), f => new FakeHubServer.FakeFile(File.ReadAllBytes(f)));
        string[] classes = ["0", "1", "2", "3"];
        var agData = SaeBenchSources.AgNews("hf:fancyzhx/ag_news", classes, ag.GetProperty("train_size").GetInt32(), ag.GetProperty("test_size").GetInt32(), 42, Hub);
        AssertSelection(agData, classes, ag.GetProperty("expected")[0], ag.GetProperty("expected")[1]);
        var tooMany = Assert.Throws<SaeSharpException>(() => SaeBenchSources.AgNews(Path.Combine(_work, "ag"), classes, 100, 8, 42));
        Assert.Contains("class '0'", tooMany.Message);

        var am = Part("amazon_sentiment");
        foreach (var split in new[] { "train", "test" })
        {
            var rows = am.GetProperty("splits").GetProperty(split);
            var text = new DataField<string>("text");
            var rating = new DataField<double>("rating");
            var category = new DataField<long>("category");
            Write(Path.Combine(_work, "amazon", "data", $"{split}-00000-of-00001.parquet"), new ParquetSchema(text, rating, category),
                (text, Strings(rows, "text")), (rating, rows.EnumerateArray().Select(r => r.GetProperty("rating").GetDouble()).ToArray()),
                (category, rows.EnumerateArray().Select(r => r.GetProperty("category").GetInt64()).ToArray()));
        }
        int tr = am.GetProperty("train_size").GetInt32(), te = am.GetProperty("test_size").GetInt32();
        // SAEBench's chosen classes 1.0, 5.0 (str of the float ratings), whichever comes first in the file.
        var sentiment = SaeBenchSources.AmazonSentiment(Path.Combine(_work, "amazon"), ["1.0", "5.0"], tr, te, 42);
        AssertSelection(sentiment, ["1.0", "5.0"], am.GetProperty("expected")[0], am.GetProperty("expected")[1]);
        Assert.Equal(["5.0", "1.0"], SaeBenchSources.AmazonSentiment(Path.Combine(_work, "amazon"), null, tr, te, 42).Names);

        // `sae probe --pooling mean --saebench-source NAME`: TextProbing.Read draws the same texts, of SAEBench's chosen
        // classes when --classes is not given (amazon_sentiment: 1.0 then 5.0, not the file's order).
        var viaRead = TextProbing.Read(Path.Combine(_work, "amazon"), new TextProbingOptions { SaeBenchSource = "amazon_sentiment" }, tr, te, 42);
        AssertSelection(viaRead, ["1.0", "5.0"], am.GetProperty("expected")[0], am.GetProperty("expected")[1]);
        var agRead = TextProbing.Read("hf:fancyzhx/ag_news", new TextProbingOptions { SaeBenchSource = "ag_news" },
            ag.GetProperty("train_size").GetInt32(), ag.GetProperty("test_size").GetInt32(), 42, Hub);
        AssertSelection(agRead, classes, ag.GetProperty("expected")[0], ag.GetProperty("expected")[1]);
        var unknown = Assert.Throws<SaeSharpException>(() => TextProbing.Read(Path.Combine(_work, "ag"), new TextProbingOptions { SaeBenchSource = "agnews" }, 8, 4, 42));
        Assert.Equal("--saebench-source agnews: expected one of ag_news, amazon_sentiment, europarl, github_code", unknown.Message);
    }
}
