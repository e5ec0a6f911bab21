using System.Text.Json;
using SaeSharp.Data;
using SaeSharp.LanguageModels;
using SaeSharp.Tests.Tokenizers;

namespace SaeSharp.Tests.Cli;

/// <summary><c>sae pretokenize</c> end to end with the built-in model: the dataset it writes gives the windows, and the
/// activations, that the same run from the text gives.</summary>
public sealed class PretokenizeCommandTests : CliTempDirTestBase
{
    private static string Ok((int Exit, string Out, string Err) r)
    {
        Assert.True(r.Exit == 0, r.Err);
        return r.Out;
    }

    [Fact]
    public void Pretokenized_dataset_gives_the_windows_and_activations_of_the_text()
    {
        Ok(CliRunner.Run("corpus", "--out", P("c.jsonl"), "--docs", "120", "--seed", "3"));
        // In document order, one map job and batch: the rows SAELens's ActivationsStore cuts from the text at run time
        // (the built-in tokenizer, like GPT-2's, adds no BOS in encode; BOS starts every window and separates documents).
        string output = Ok(CliRunner.Run("pretokenize", "--model", "builtin", "--dataset", P("c.jsonl"), "--context-size", "32",
            "--out", P("ds"), "--no-shuffle", "--num-proc", "1", "--batch-size", "0"));
        var tok = SaeSharp.Tokenizers.Tokenizer.FromFolder(BuiltinModel.Folder);
        var fromText = TokenWindows.FromPath(P("c.jsonl"), tok, 32, prependBos: true).ToList();
        var fromRows = TokenWindows.FromPath(P("ds"), tok, 32, prependBos: true).ToList();
        Assert.Equal(fromText, fromRows);
        Assert.Contains($"wrote {fromText.Count} rows of 32 tokens ({fromText.Count * 32} tokens) from 120 documents", output);
        using (var meta = JsonDocument.Parse(File.ReadAllText(P("ds", "sae_lens.json"))))
        {
            Assert.Equal("builtin", meta.RootElement.GetProperty("tokenizer_name").GetString());
            Assert.Equal(32, meta.RootElement.GetProperty("context_size").GetInt32());
            Assert.False(meta.RootElement.GetProperty("shuffled").GetBoolean());
        }

        // The same activations: a cache harvested from the rows equals one harvested from the text, shard for shard.
        foreach (var (src, name) in new[] { (P("c.jsonl"), "fromText"), (P("ds"), "fromRows") })
            Ok(CliRunner.Run("cache", "--model", "builtin", "--hook", "blocks.0.hook_resid_post", "--dataset", src, "--context-size", "32",
                "--tokens", "1024", "--out", P(name)));
        var shards = Directory.GetFiles(P("fromText"), "shard_*.safetensors").Select(Path.GetFileName).Order(StringComparer.Ordinal).ToList();
        Assert.NotEmpty(shards);
        Assert.Equal(shards, Directory.GetFiles(P("fromRows"), "shard_*.safetensors").Select(Path.GetFileName).Order(StringComparer.Ordinal));
        foreach (var s in shards) Assert.Equal(File.ReadAllBytes(P("fromText", s!)), File.ReadAllBytes(P("fromRows", s!)));

        // And the same SAE: sae train from the rows and from the text, same seed, same weights.
        foreach (var (src, name) in new[] { (P("c.jsonl"), "trainText"), (P("ds"), "trainRows") })
            Ok(CliRunner.Run("train", "--model", "builtin", "--hook", "blocks.0.hook_resid_post", "--dataset", src, "--context-size", "32",
                "--tokens", "2048", "--k", "4", "--dict-size", "64", "--seed", "5", "--epochs", "0", "--out", P(name)));
        Assert.Equal(File.ReadAllBytes(P("trainText", "sae_weights.safetensors")), File.ReadAllBytes(P("trainRows", "sae_weights.safetensors")));

        // A run whose windows are longer than the rows: one error naming sae_lens.json; shorter: a warning.
        var r = CliRunner.Run("cache", "--model", "builtin", "--hook", "blocks.0.hook_resid_post", "--dataset", P("ds"), "--context-size", "64",
            "--tokens", "256", "--out", P("long"));
        Assert.Equal(1, r.Exit);
        Assert.Contains("sae_lens.json", r.Err);
        Assert.Single(r.Err.Trim().Split('\n'));
        r = CliRunner.Run("cache", "--model", "builtin", "--hook", "blocks.0.hook_resid_post", "--dataset", P("ds"), "--context-size", "16",
            "--tokens", "256", "--out", P("short"));
        Assert.True(r.Exit == 0, r.Err);
        Assert.Contains("warning: ", r.Err);
        Assert.Contains("context_size 32", r.Err);
    }

    [Theory]
    [InlineData("42")]
    [InlineData("12345678901234")]
    [InlineData("18446744073709551621")] // 2⁶⁴ + 5: NumPy takes a seed of any size
    public void Seed_gives_the_row_order_of_datasets_shuffle(string seed)
    {
        // 37 documents, each one row (disable_concat_sequences: its first 6 tokens, BOS first), with 3 empty lines among
        // them (documents too, as datasets' text loader reads them; too short for a row).
        var lines = Enumerable.Range(0, 37).Select(i => $"{i} apples and pears in a line of text").ToList();
        foreach (int at in new[] { 5, 20, 30 }) lines.Insert(at, "");
        File.WriteAllText(P("d.txt"), string.Join('\n', lines) + "\n");
        string[] common = ["pretokenize", "--model", "builtin", "--dataset", P("d.txt"), "--context-size", "6", "--disable-concat-sequences"];
        Assert.Contains("wrote 37 rows of 6 tokens (222 tokens) from 40 documents", Ok(CliRunner.Run([.. common, "--no-shuffle", "--out", P("plain")])));
        Ok(CliRunner.Run([.. common, "--seed", seed, "--out", P("shuffled")]));
        var tok = SaeSharp.Tokenizers.Tokenizer.FromFolder(BuiltinModel.Folder);
        var plain = TokenWindows.FromPath(P("plain"), tok, 6, prependBos: true).ToList();
        var shuffled = TokenWindows.FromPath(P("shuffled"), tok, 6, prependBos: true).ToList();
        Assert.True(plain.Select(r => string.Join(',', r)).Distinct().Count() > 30); // distinct enough that the order shows
        // datasets' shuffle(seed) = select(indices=np.random.default_rng(seed).permutation(37)), NumPy 1.24.2's permutation.
        var perm = SaeSharp.Tests.Data.PretokenizerTests.NumpyPermutation(System.Numerics.BigInteger.Parse(seed, System.Globalization.CultureInfo.InvariantCulture), 37);
        Assert.Equal(perm.Select(k => plain[(int)k]), shuffled);
        using var meta = JsonDocument.Parse(File.ReadAllText(P("shuffled", "sae_lens.json")));
        Assert.Equal(seed, meta.RootElement.GetProperty("seed").GetRawText()); // a JSON integer, as Python's json.dumps writes it

        foreach (string bad in new[] { "-1", "1.5", "x" })
        {
            var r = CliRunner.Run([.. common, "--seed", bad, "--out", P("neg")]);
            Assert.NotEqual(0, r.Exit);
            Assert.Contains($"--seed {bad}: expected an integer 0 or more", r.Err);
        }
    }

    [Fact]
    public void Options_config_and_refusals()
    {
        Ok(CliRunner.Run("corpus", "--out", P("c.jsonl"), "--docs", "40", "--seed", "1"));
        File.WriteAllText(P("cfg.json"), $$"""
            {"tokenizer_name": "builtin", "dataset_path": "{{P("c.jsonl").Replace("\\", "\\\\")}}", "context_size": 16, "shuffle": true,
             "seed": 4, "begin_batch_token": null, "sequence_separator_token": "eos", "save_path": "{{P("cfgds").Replace("\\", "\\\\")}}"}
            """);
        Ok(CliRunner.Run("pretokenize", "--config", P("cfg.json"), "--format", "parquet"));
        Assert.True(File.Exists(P("cfgds", "data", "train-00000-of-00001.parquet")));
        using (var meta = JsonDocument.Parse(File.ReadAllText(P("cfgds", "sae_lens.json"))))
        {
            Assert.Equal(JsonValueKind.Null, meta.RootElement.GetProperty("begin_batch_token").ValueKind);
            Assert.Equal("eos", meta.RootElement.GetProperty("sequence_separator_token").GetString());
            Assert.Equal(4, meta.RootElement.GetProperty("seed").GetInt32());
        }
        // The same seed gives the same rows; the rows hold no BOS at their starts (begin_batch_token null) unless the
        // text put one there.
        Ok(CliRunner.Run("pretokenize", "--config", P("cfg.json"), "--out", P("cfgds2")));
        var tok = SaeSharp.Tokenizers.Tokenizer.FromFolder(BuiltinModel.Folder);
        Assert.Equal(TokenWindows.FromPath(P("cfgds"), tok, 16, false).ToList(), TokenWindows.FromPath(P("cfgds2"), tok, 16, false).ToList());

        // Refusals, each one line.
        foreach (var (args, expected) in new (string[], string)[]
                 {
                     (["pretokenize", "--model", "builtin", "--dataset", P("c.jsonl"), "--out", P("cfgds")], "--force"),
                     (["pretokenize", "--model", "builtin", "--dataset", P("cfgds"), "--out", P("again")], "pre-tokenized"),
                     (["pretokenize", "--model", "builtin", "--dataset", P("c.jsonl"), "--out", P("x"), "--begin-batch-token", "cls"], "cls"),
                     (["pretokenize", "--dataset", P("c.jsonl"), "--out", P("x")], "--tokenizer"),
                     (["pretokenize", "--model", "builtin", "--dataset", P("c.jsonl"), "--out", P("c.jsonl")], "c.jsonl"),
                 })
        {
            var r = CliRunner.Run(args);
            Assert.True(r.Exit != 0, string.Join(' ', args));
            Assert.Contains(expected, r.Err);
            Assert.Single(r.Err.Trim().Split('\n'));
        }
        // A hub upload asked for is said to be left undone (it was silently dropped); a data_dir, which would choose other
        // files, is refused.
        string cfg = File.ReadAllText(P("cfg.json"));
        File.WriteAllText(P("hub.json"), cfg.Replace("\"seed\": 4,", "\"seed\": 4, \"hf_repo_id\": \"me/pile-tok\", \"hf_num_shards\": 64,", StringComparison.Ordinal));
        var hub = CliRunner.Run("pretokenize", "--config", P("hub.json"), "--out", P("hubds"));
        Assert.True(hub.Exit == 0, hub.Err);
        Assert.Contains("note: " + P("hub.json") + ": hf_repo_id \"me/pile-tok\": ignored: SaeSharp does not upload to the hub", hub.Err);
        Assert.True(File.Exists(P("hubds", "sae_lens.json")));
        File.WriteAllText(P("dir.json"), cfg.Replace("\"seed\": 4,", "\"seed\": 4, \"data_dir\": \"en\",", StringComparison.Ordinal));
        var dir = CliRunner.Run("pretokenize", "--config", P("dir.json"), "--out", P("dirds"));
        Assert.Equal(1, dir.Exit);
        Assert.Equal($"error: {P("dir.json")}: data_dir \"en\": not supported (SAELens's load_dataset reads only that subfolder of the dataset); " +
                     "give the subfolder's files as dataset_path, or data_dir null", dir.Err.Trim());
        Assert.False(Directory.Exists(P("dirds")));

        // A folder of other things is refused naming why, with or without --force (the message without --force sent the user
        // to --force, which then refused too); its files stay.
        Directory.CreateDirectory(P("notes"));
        File.WriteAllText(P("notes", "keep.txt"), "mine");
        foreach (var withForce in new[] { false, true })
        {
            var r = CliRunner.Run(["pretokenize", "--model", "builtin", "--dataset", P("c.jsonl"), "--out", P("notes"), .. withForce ? new[] { "--force" } : []]);
            Assert.Equal(1, r.Exit);
            Assert.StartsWith($"error: --out {P("notes")}: the folder is not empty and not a dataset", r.Err.Trim());
            Assert.DoesNotContain("use --force", r.Err);
        }
        Assert.Equal(["keep.txt"], Directory.GetFileSystemEntries(P("notes")).Select(Path.GetFileName));
        Assert.Equal("mine", File.ReadAllText(P("notes", "keep.txt")));
        // A token id the tokenizer does not have is refused before anything is written (it was written into every row).
        int vocab = SaeSharp.Tokenizers.Tokenizer.FromFolder(BuiltinModel.Folder).VocabSize;
        var outside = CliRunner.Run("pretokenize", "--model", "builtin", "--dataset", P("c.jsonl"), "--out", P("badid"), "--begin-batch-token", $"{vocab}");
        Assert.Equal(1, outside.Exit);
        Assert.Equal($"error: --begin-batch-token (begin_batch_token) {vocab}: not a token id of the tokenizer (its vocabulary has {vocab} ids, 0 to {vocab - 1})",
            outside.Err.Trim());
        Assert.False(Directory.Exists(P("badid")));
        Ok(CliRunner.Run("pretokenize", "--model", "builtin", "--dataset", P("c.jsonl"), "--out", P("lastid"), "--sequence-separator-token", $"{vocab - 1}"));

        // --force replaces the dataset.
        Ok(CliRunner.Run("pretokenize", "--model", "builtin", "--dataset", P("c.jsonl"), "--out", P("cfgds"), "--force", "--context-size", "8"));
        Assert.True(File.Exists(P("cfgds", "state.json")));
        Assert.False(Directory.Exists(P("cfgds", "data")));
        // A shard alone (no sae_lens.json): rows longer than the windows are cut with SAELens's warning.
        File.Copy(P("cfgds", "data-00000-of-00001.arrow"), P("bare.arrow"));
        var cut = CliRunner.Run("cache", "--model", "builtin", "--hook", "blocks.0.hook_resid_post", "--dataset", P("bare.arrow"), "--context-size", "4",
            "--tokens", "64", "--out", P("bare-cache"));
        Assert.True(cut.Exit == 0, cut.Err);
        Assert.Contains("warning: ", cut.Err);
        Assert.Contains("rows of 8 tokens", cut.Err);
    }
}
