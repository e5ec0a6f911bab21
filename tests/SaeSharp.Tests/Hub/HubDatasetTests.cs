using System.Text;
using System.Text.Json.Nodes;
using Parquet;
using Parquet.Schema;
using SaeSharp.Data;
using SaeSharp.Hub;
using SaeSharp.Tests.Cli;
using SaeSharp.Tests.Tokenizers;
using SaeSharp.Models;

namespace SaeSharp.Tests.Hub;

/// <summary><c>--dataset hf:ORG/NAME[:SPLIT]</c> against the local fake hub: split selection, files downloaded one at a
/// time into the dataset cache, errors, and the repo id in cfg.json's dataset_path.</summary>
public sealed class HubDatasetTests : FakeHubTestBase
{
    private byte[] Parquet(params string[] texts)
    {
        string path = Path.Combine(_work, Guid.NewGuid().ToString("N") + ".parquet");
        var text = new DataField<string>("text");
        var meta = new DataField<int>("meta");
        Task.Run(async () =>
        {
            await using var stream = File.Create(path);
            await using var writer = await ParquetWriter.CreateAsync(new ParquetSchema(meta, text), stream);
            using var g = writer.CreateRowGroup();
            await g.WriteAsync(meta, new ReadOnlyMemory<int>(Enumerable.Range(0, texts.Length).ToArray()));
            await g.WriteAsync(text, texts);
        }).GetAwaiter().GetResult();
        return File.ReadAllBytes(path);
    }

    [Theory]
    [InlineData("data/train-00000-of-00001-4746b8785c874cc7.parquet", "train")]
    [InlineData("data/validation-00000-of-00001.parquet", "validation")]
    [InlineData("train/00.jsonl", "train")]
    [InlineData("default/test/0000.parquet", "test")]
    [InlineData("wiki_dev.jsonl.gz", "validation")]
    [InlineData("shards/contest.parquet", null)]
    [InlineData("latest.jsonl", null)]
    // datasets' SPLIT_KEYWORDS (data_files.py): train/training, validation/valid/dev/val, test/testing/eval/evaluation,
    // with one of "-._ 0-9" after the keyword in a file name (and before it, unless it starts the name)
    [InlineData("data/val.jsonl", "validation")]
    [InlineData("eval.jsonl", "test")]
    [InlineData("evaluation/part.parquet", "test")]
    [InlineData("training/part.parquet", "train")]
    [InlineData("data/testing-1.txt", "test")]
    [InlineData("train0.jsonl", "train")]
    [InlineData("data/en train.jsonl", "train")]
    [InlineData("en_val_set/a.jsonl", "validation")]
    [InlineData("data/interval.jsonl", null)]
    [InlineData("data/mysplit-00000-of-00001.parquet", "mysplit")]
    public void Split_is_read_off_the_file_path(string path, string? split) =>
        Assert.Equal(split ?? "train", Assert.Single(HubDataset.SplitFiles([path])).Split);

    [Fact]
    public void Splits_are_chosen_over_all_files_as_datasets_load_dataset_chooses_them()
    {
        // "val" names the validation split: it is not train data (it was read as train, beside train.jsonl).
        Assert.Equal(new[] { ("train", "data/train.jsonl"), ("validation", "data/val.jsonl") },
            HubDataset.SplitFiles(["data/train.jsonl", "data/val.jsonl"]).Select(s => (s.Split, string.Join(",", s.Files))));
        // Sharded names data/{split}-NNNNN-of-NNNNN.* come first and may name any split; other files are not data then.
        Assert.Equal(new[] { ("train", "data/train-00000-of-00001.parquet"), ("extra", "data/extra-00000-of-00002.parquet,data/extra-00001-of-00002.parquet") },
            HubDataset.SplitFiles(["data/extra-00000-of-00002.parquet", "data/extra-00001-of-00002.parquet", "data/notes.jsonl",
                "data/train-00000-of-00001.parquet"]).Select(s => (s.Split, string.Join(",", s.Files))));
        // Split names in folders win over split names in file names: the file outside a split folder is not read.
        Assert.Equal(new[] { ("train", "train/a.jsonl") },
            HubDataset.SplitFiles(["extra_test.jsonl", "train/a.jsonl"]).Select(s => (s.Split, string.Join(",", s.Files))));
        // A file whose name holds two split names is in both.
        Assert.Equal(new[] { ("train", "train_test.jsonl"), ("test", "test.jsonl,train_test.jsonl") },
            HubDataset.SplitFiles(["test.jsonl", "train_test.jsonl"]).Select(s => (s.Split, string.Join(",", s.Files))));
    }

    [Fact]
    public void Parquet_split_streams_file_by_file_from_the_dataset_cache()
    {
        _server.DatasetRepos["NeelNanda/pile-10k"] = new()
        {
            [".gitattributes"] = new("*.parquet filter=lfs"u8.ToArray()),
            ["README.md"] = new("# pile-10k"u8.ToArray()),
            ["data/train-00000-of-00002.parquet"] = new(Parquet("first doc", "second doc"), Lfs: true),
            ["data/train-00001-of-00002.parquet"] = new(Parquet("third doc"), Lfs: true),
            ["data/test-00000-of-00001.parquet"] = new(Parquet("held out")),
        };
        var ds = new HubDataset("hf:NeelNanda/pile-10k", Hub);
        Assert.Equal(("NeelNanda/pile-10k", "train"), (ds.Repo, ds.Split));
        Assert.Equal(new[] { "data/train-00000-of-00002.parquet", "data/train-00001-of-00002.parquet" }, ds.Files());

        // Reading the first document fetches only the first file.
        Assert.Equal("first doc", TextDataset.ReadFiles(ds.LocalFiles()).First());
        Assert.DoesNotContain(_server.Requests, r => r.Path.Contains("train-00001"));
        Assert.Equal(new[] { "first doc", "second doc", "third doc" }, TextDataset.ReadFiles(ds.LocalFiles()).ToList());

        string snapshot = Path.Combine(_cache, "datasets--NeelNanda--pile-10k", "snapshots", _server.Commit);
        Assert.True(File.Exists(Path.Combine(snapshot, "data", "train-00001-of-00002.parquet")));
        Assert.Equal(_server.Commit, File.ReadAllText(Path.Combine(_cache, "datasets--NeelNanda--pile-10k", "refs", "main")));
        Assert.All(_server.Requests.Where(r => r.Path.Contains("/resolve/")), r => Assert.StartsWith("/datasets/NeelNanda/pile-10k/resolve/main/", r.Path));

        Assert.Equal(new[] { "held out" }, TextDataset.ReadFiles(new HubDataset("hf:NeelNanda/pile-10k:test", Hub).LocalFiles()).ToList());
        var e = Assert.Throws<SaeSharpException>(() => new HubDataset("hf:NeelNanda/pile-10k:validation", Hub).Files());
        Assert.Equal("dataset NeelNanda/pile-10k has no split 'validation' (splits: train, test)", e.Message);
    }

    [Fact]
    public void Jsonl_files_without_split_names_are_the_train_split()
    {
        _server.DatasetRepos["org/notes"] = new()
        {
            ["part-b.jsonl"] = new(Encoding.UTF8.GetBytes("{\"body\": \"b1\"}\n")),
            ["part-a.jsonl"] = new(Encoding.UTF8.GetBytes("{\"body\": \"a1\"}\n{\"body\": \"a2\"}\n")),
        };
        var ds = new HubDataset("hf:org/notes", Hub);
        Assert.Equal(new[] { "a1", "a2", "b1" }, TextDataset.ReadFiles(ds.LocalFiles(), "body").ToList());
    }

    [Fact]
    public void Missing_dataset_and_bad_names_fail_with_a_clear_message()
    {
        var e = Assert.Throws<SaeSharpException>(() => new HubDataset("hf:nobody/nothing", Hub).Files());
        Assert.Contains("dataset 'nobody/nothing' not found", e.Message);
        _server.DatasetRepos["org/readme-only"] = new() { ["README.md"] = new("# x"u8.ToArray()) };
        var none = Assert.Throws<SaeSharpException>(() => new HubDataset("hf:org/readme-only", Hub).Files());
        Assert.Contains("has no .parquet, .jsonl or .txt files", none.Message);
        Assert.Throws<SaeSharpException>(() => new HubDataset("hf:pile-10k", Hub));
        Assert.Equal("NeelNanda/pile-10k", HubDataset.RecordedPath("hf:NeelNanda/pile-10k:train"));
        Assert.Equal("local/data.txt", HubDataset.RecordedPath("local/data.txt"));
    }

    [Fact]
    public void Train_on_a_hub_dataset_records_its_repo_id_as_dataset_path()
    {
        var rng = new Random(2);
        string[] words = ["the", "cat", "sat", "on", "a", "mat", "and", "dog", "ran", "far"];
        var docs = Enumerable.Range(0, 3000).Select(_ => string.Join(' ', Enumerable.Range(0, 12).Select(_ => words[rng.Next(words.Length)])) + ".").ToArray();
        _server.DatasetRepos["NeelNanda/pile-10k"] = new() { ["data/train-00000-of-00001.parquet"] = new(Parquet(docs), Lfs: true) };
        string model = TinyModels.WriteGpt2(Path.Combine(_work, "gpt2"), seed: 9, nLayer: 1, nEmbd: 16, nHead: 2, vocab: 50257, nPositions: 64);
        foreach (var f in new[] { "vocab.json", "merges.txt" })
            File.Copy(TestPaths.Data("gpt2-tokenizer", f), Path.Combine(model, f));
        string run = Path.Combine(_work, "run");

        var result = CliRunner.RunWithEnvironment(new Dictionary<string, string> { ["HF_ENDPOINT"] = _server.Endpoint, ["HF_HUB_CACHE"] = _cache },
            "train", "--model", model, "--hook", "blocks.0.hook_resid_post", "--dataset", "hf:NeelNanda/pile-10k",
            "--tokens", "1024", "--context-size", "32", "--arch", "topk", "--k", "4", "--dict-size", "32", "--batch-size", "128",
            "--eval-rows", "128", "--out", run);
        Assert.True(result.Exit == 0, result.Err + result.Out);
        var cfg = JsonNode.Parse(File.ReadAllText(Path.Combine(run, "cfg.json")))!;
        Assert.Equal("NeelNanda/pile-10k", cfg["metadata"]!["dataset_path"]!.GetValue<string>());
        Assert.Contains(_server.Requests, r => r.Path.StartsWith("/api/datasets/NeelNanda/pile-10k/tree/main"));
        // metrics.json is on the stream's first ⌈128 / 32⌉ = 4 windows, held out of training.
        var metrics = JsonNode.Parse(File.ReadAllText(Path.Combine(run, "metrics.json")))!;
        Assert.True(metrics["eval_held_out"]!.GetValue<bool>());
        Assert.Equal((4, 128L), (metrics["eval_contexts"]!.GetValue<int>(), metrics["eval_tokens"]!.GetValue<long>()));
        Assert.Contains("metrics on 128 held-out tokens: the first 4 context windows of the dataset, which training skipped", result.Out);
    }
}

/// <summary>A dataset SAELens's PretokenizeRunner pushed to the hub (<c>data/train-*.parquet</c> + <c>sae_lens.json</c>):
/// read as rows, its sae_lens.json fetched and checked against the run, as SAELens's ActivationsStore fetches it.</summary>
public sealed class HubPretokenizedDatasetTests : FakeHubTestBase
{
    [Fact]
    public void Hub_upload_layout_is_read_and_its_metadata_checked()
    {
        var rows = Enumerable.Range(0, 40).Select(i => new[] { 7, i % 50, (i + 1) % 50, (i + 2) % 50 }).ToList();
        string local = Path.Combine(_work, "upload");
        Pretokenizer.Save(local, rows, new PretokenizeSettings { ContextSize = 4, TokenizerName = "builtin" }, PretokenizedFormat.Parquet);
        _server.DatasetRepos["org/pretok"] = new()
        {
            ["data/train-00000-of-00001.parquet"] = new(File.ReadAllBytes(Path.Combine(local, "data", "train-00000-of-00001.parquet")), Lfs: true),
            ["sae_lens.json"] = new(File.ReadAllBytes(Path.Combine(local, "sae_lens.json"))),
        };
        var env = new Dictionary<string, string> { ["HF_ENDPOINT"] = _server.Endpoint, ["HF_HUB_CACHE"] = _cache };
        string[] cache = ["cache", "--model", "builtin", "--hook", "blocks.0.hook_resid_post", "--dataset", "hf:org/pretok", "--tokens", "64"];
        var ok = CliRunner.RunWithEnvironment(env, [.. cache, "--context-size", "4", "--out", Path.Combine(_work, "c4")]);
        Assert.True(ok.Exit == 0, ok.Err);
        var bad = CliRunner.RunWithEnvironment(env, [.. cache, "--context-size", "8", "--out", Path.Combine(_work, "c8")]);
        Assert.Equal(1, bad.Exit);
        Assert.Contains("sae_lens.json", bad.Err);
        Assert.Contains("context_size 4", bad.Err);
    }
}
