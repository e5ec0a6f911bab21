using System.Text.Json;
using SaeSharp.Activations;
using SaeSharp.Data;
using SaeSharp.IO;
using SaeSharp.Tests.Tokenizers;
using TorchSharp;

namespace SaeSharp.Tests.Cli;

/// <summary><c>sae cache --format saelens</c> and <c>--activations</c> on SAELens's activation cache, end to end with the
/// built-in model: the cache holds the rows and tokens of SaeSharp's own cache of the same run, and training on either
/// gives the same SAE.</summary>
public sealed class SaeLensCacheCommandTests : CliTempDirTestBase
{
    private static string Ok((int Exit, string Out, string Err) r)
    {
        Assert.True(r.Exit == 0, r.Err);
        return r.Out;
    }

    private static string Fails((int Exit, string Out, string Err) r)
    {
        Assert.NotEqual(0, r.Exit);
        return r.Err;
    }

    private static string[] Cache(string dataset, string output, params string[] more) =>
        ["cache", "--model", "builtin", "--hook", "blocks.1.hook_resid_post", "--dataset", dataset, "--context-size", "32",
         "--tokens", "1000", "--out", output, .. more];

    private static torch.Tensor Rows(string dir)
    {
        using var source = new ActivationFileSource(dir, new ActivationFileSourceOptions { Shuffle = false });
        using var batch = source.Next(100_000)!;
        return batch.Input.clone();
    }

    [Fact]
    public void Saelens_cache_holds_the_rows_of_the_saesharp_cache_and_trains_the_same_sae()
    {
        Ok(CliRunner.Run("corpus", "--out", P("c.jsonl"), "--docs", "300", "--seed", "4"));
        // 1,000 tokens: ⌈1000/32⌉ = 32 windows. d_in 128 float32 is 16,384 bytes a window; 0.0003 GB holds 18 windows,
        // rounded down to whole model batches (8): 16 windows a shard, as --contexts-per-shard 16 gives SaeSharp's shards.
        Ok(CliRunner.Run(Cache(P("c.jsonl"), P("saesharp"), "--contexts-per-shard", "16", "--fold-ln")));
        string output = Ok(CliRunner.Run(Cache(P("c.jsonl"), P("saelens"), "--format", "saelens", "--buffer-size-gb", "0.0003", "--fold-ln")));
        Assert.Contains("wrote 1024 rows of blocks.1.hook_resid_post (d_in 128, 32 windows of 32)", output);
        Assert.Contains("as a SAELens activation cache (2 shards)", output);
        Assert.Equal(["cache_activations_runner_cfg.json", "data-00000-of-00002.arrow", "data-00001-of-00002.arrow", "dataset_info.json", "state.json"],
            Directory.GetFileSystemEntries(P("saelens")).Select(Path.GetFileName).Order(StringComparer.Ordinal));

        // The same activations, bit for bit, in the same order.
        using (var a = Rows(P("saesharp")))
        using (var b = Rows(P("saelens")))
        {
            Assert.Equal([1024L, 128L], b.shape);
            Assert.Equal(a.bytes.ToArray(), b.bytes.ToArray());
        }
        // The same tokens: each shard's token_ids column against the SaeSharp shard's token_ids.
        for (int s = 0; s < 2; s++)
        {
            var ids = HfDiskDataset.ReadTokenRows(P("saelens", $"data-0000{s}-of-00002.arrow"), SaeLensActivationCache.TokenIdsColumn).SelectMany(r => r).ToArray();
            using var st = SafeTensorsFile.Open(P("saesharp", $"shard_0000{s}.safetensors"));
            using var expected = st.ReadRows("token_ids", 0, 512);
            Assert.Equal(expected.data<long>().ToArray(), ids);
        }
        using (var info = JsonDocument.Parse(File.ReadAllText(P("saelens", "dataset_info.json"))))
        {
            var f = info.RootElement.GetProperty("features").GetProperty("blocks.1.hook_resid_post");
            Assert.Equal("[32,128]", f.GetProperty("shape").GetRawText().Replace(" ", "").Replace("\n", ""));
            Assert.Equal("Array2D", f.GetProperty("_type").GetString());
        }

        // Training on either cache, same seed (--deterministic: bit-reproducible reductions): the same SAE; cfg.json records
        // the hook, model and context size.
        foreach (var name in new[] { "saesharp", "saelens" })
            Ok(CliRunner.Run("train", "--activations", P(name), "--arch", "topk", "--k", "4", "--dict-size", "64", "--steps", "6",
                "--batch-size", "64", "--eval-rows", "128", "--seed", "3", "--deterministic", "--out", P("train-" + name)));
        Assert.Equal(File.ReadAllBytes(P("train-saesharp", "sae_weights.safetensors")), File.ReadAllBytes(P("train-saelens", "sae_weights.safetensors")));
        using (var cfg = JsonDocument.Parse(File.ReadAllText(P("train-saelens", "cfg.json"))))
        {
            var m = cfg.RootElement.GetProperty("metadata");
            Assert.Equal("blocks.1.hook_resid_post", m.GetProperty("hook_name").GetString());
            Assert.Equal("builtin", m.GetProperty("model_name").GetString());
            Assert.Equal(32, m.GetProperty("context_size").GetInt32());
            Assert.True(m.GetProperty("model_from_pretrained_kwargs").GetProperty("fold_ln").GetBoolean());
        }
        // cfg.json's metadata is the one SaeSharp's cache gives (dataset_path from the runner config: the same file).
        using (var a = JsonDocument.Parse(File.ReadAllText(P("train-saesharp", "cfg.json"))))
        using (var b = JsonDocument.Parse(File.ReadAllText(P("train-saelens", "cfg.json"))))
            Assert.Equal(a.RootElement.GetProperty("metadata").ToString(), b.RootElement.GetProperty("metadata").ToString());

        // sae eval and sae encode read it too, at the SAE's hook: the same numbers as on SaeSharp's cache.
        var evals = new[] { "saesharp", "saelens" }.Select(name =>
        {
            Ok(CliRunner.Run("eval", "--sae", P("train-saesharp"), "--activations", P(name), "--json", P($"eval-{name}.json")));
            return File.ReadAllText(P($"eval-{name}.json"));
        }).ToList();
        Assert.Equal(evals[0], evals[1]);
        foreach (var name in new[] { "saesharp", "saelens" })
            Ok(CliRunner.Run("encode", "--sae", P("train-saesharp"), "--activations", P(name), "--out", P($"enc-{name}.safetensors")));
        Assert.Equal(File.ReadAllBytes(P("enc-saesharp.safetensors")), File.ReadAllBytes(P("enc-saelens.safetensors")));

        // A cache is written to an empty folder only; the SaeSharp cache's shard flag is not the SAELens layout's.
        Assert.Contains("folder is not empty", Fails(CliRunner.Run(Cache(P("c.jsonl"), P("saelens"), "--format", "saelens"))));
        Assert.Contains("--buffer-size-gb does", Fails(CliRunner.Run(Cache(P("c.jsonl"), P("x"), "--format", "saelens", "--contexts-per-shard", "4"))));
        // A model run in bfloat16: the runner config records TransformerLens's dtype, and the SAE's cfg.json takes it.
        Ok(CliRunner.Run(Cache(P("c.jsonl"), P("bf16"), "--format", "saelens", "--dtype", "bfloat16")));
        using (var runner = JsonDocument.Parse(File.ReadAllText(P("bf16", SaeLensActivationCache.ConfigFile))))
            Assert.Equal("bfloat16", runner.RootElement.GetProperty("model_from_pretrained_kwargs").GetProperty("dtype").GetString());
        Ok(CliRunner.Run("train", "--activations", P("bf16"), "--arch", "topk", "--k", "4", "--dict-size", "64", "--steps", "2",
            "--batch-size", "64", "--eval-rows", "64", "--out", P("train-bf16")));
        using (var cfg = JsonDocument.Parse(File.ReadAllText(P("train-bf16", "cfg.json"))))
            Assert.Equal("bfloat16", cfg.RootElement.GetProperty("metadata").GetProperty("model_from_pretrained_kwargs").GetProperty("dtype").GetString());
        Assert.Contains("holds no model batch", Fails(CliRunner.Run(Cache(P("c.jsonl"), P("y"), "--format", "saelens", "--buffer-size-gb", "0.0001"))));
        // One hook's full windows per column: transcoder targets and left-out special tokens need SaeSharp's format.
        Assert.Contains("needs the SaeSharp cache format", Fails(CliRunner.Run("cache", "--model", "builtin", "--hook", "blocks.0.mlp", "--mode", "in_to_out",
            "--dataset", P("c.jsonl"), "--context-size", "32", "--tokens", "64", "--format", "saelens", "--out", P("z"))));
        Assert.Contains("exclude_special_tokens needs the SaeSharp cache format",
            Fails(CliRunner.Run(Cache(P("c.jsonl"), P("w"), "--format", "saelens", "--exclude-special-tokens"))));
    }

    /// <summary>SAELens's CacheActivationsRunner applies <c>seqpos_slice</c>: each row holds the kept positions (Array2D
    /// [sliced context, d_in], token_ids as long), the config keeps context_size and the slice. The rows equal SaeSharp's
    /// sliced cache of the same run, and an SAE trained on it records the slice as one trained on SaeSharp's cache does.
    /// The window fields its runner config lacks are refused.</summary>
    [Fact]
    public void A_sliced_saelens_cache_holds_the_kept_positions_and_records_the_slice()
    {
        Ok(CliRunner.Run("corpus", "--out", P("c.jsonl"), "--docs", "300", "--seed", "4"));
        // 1,000 kept tokens at 30 of 32 positions (2:): ⌈1000/30⌉ = 34 windows, 1,020 rows.
        Ok(CliRunner.Run(Cache(P("c.jsonl"), P("saesharp"), "--seqpos-slice", "2:")));
        Ok(CliRunner.Run(Cache(P("c.jsonl"), P("saelens"), "--format", "saelens", "--seqpos-slice", "2:")));
        using (var a = Rows(P("saesharp")))
        using (var b = Rows(P("saelens")))
        {
            Assert.Equal([1020L, 128L], b.shape);
            Assert.Equal(a.bytes.ToArray(), b.bytes.ToArray());
        }
        using (var info = JsonDocument.Parse(File.ReadAllText(P("saelens", "dataset_info.json"))))
        {
            var features = info.RootElement.GetProperty("features");
            Assert.Equal("[30,128]", new string(features.GetProperty("blocks.1.hook_resid_post").GetProperty("shape").GetRawText().Where(c => !char.IsWhiteSpace(c)).ToArray()));
            Assert.Equal(30, features.GetProperty("token_ids").GetProperty("length").GetInt32());
        }
        using (var cfg = JsonDocument.Parse(File.ReadAllText(P("saelens", "cache_activations_runner_cfg.json"))))
        {
            Assert.Equal(32, cfg.RootElement.GetProperty("context_size").GetInt32());
            Assert.Equal("[2,null]", new string(cfg.RootElement.GetProperty("seqpos_slice").GetRawText().Where(c => !char.IsWhiteSpace(c)).ToArray()));
            Assert.Equal(1020, cfg.RootElement.GetProperty("training_tokens").GetInt64());
        }
        // Every window's kept tokens: the unsliced cache's positions 2..31.
        Ok(CliRunner.Run("cache", "--model", "builtin", "--hook", "blocks.1.hook_resid_post", "--dataset", P("c.jsonl"), "--context-size", "32",
            "--tokens", "1088", "--out", P("full"), "--format", "saelens"));
        var full = Directory.GetFiles(P("full"), "data-*.arrow").Order(StringComparer.Ordinal)
            .SelectMany(f => HfDiskDataset.ReadTokenRows(f, SaeLensActivationCache.TokenIdsColumn)).ToList();
        var sliced = Directory.GetFiles(P("saelens"), "data-*.arrow").Order(StringComparer.Ordinal)
            .SelectMany(f => HfDiskDataset.ReadTokenRows(f, SaeLensActivationCache.TokenIdsColumn)).ToList();
        Assert.Equal(34, sliced.Count);
        Assert.Equal(full.Select(r => r[2..]), sliced);

        foreach (var name in new[] { "saesharp", "saelens" })
            Ok(CliRunner.Run("train", "--activations", P(name), "--arch", "topk", "--k", "4", "--dict-size", "64", "--steps", "4",
                "--batch-size", "64", "--eval-rows", "128", "--seed", "3", "--out", P("train-" + name)));
        using (var a = JsonDocument.Parse(File.ReadAllText(P("train-saesharp", "cfg.json"))))
        using (var b = JsonDocument.Parse(File.ReadAllText(P("train-saelens", "cfg.json"))))
        {
            var m = b.RootElement.GetProperty("metadata");
            Assert.Equal("[2,null]", new string(m.GetProperty("seqpos_slice").GetRawText().Where(c => !char.IsWhiteSpace(c)).ToArray()));
            Assert.Equal(32, m.GetProperty("context_size").GetInt32());
            Assert.Equal(a.RootElement.GetProperty("metadata").ToString(), m.ToString());
        }

        Assert.Contains("SaeSharp cache format", Fails(CliRunner.Run(Cache(P("c.jsonl"), P("x1"), "--format", "saelens", "--disable-concat-sequences"))));
        Assert.Contains("SaeSharp cache format", Fails(CliRunner.Run(Cache(P("c.jsonl"), P("x2"), "--format", "saelens", "--sequence-separator-token", "eos"))));
    }

    [Fact]
    public void Config_hook_and_context_size_are_checked_against_the_cache()
    {
        // SAELens's use_cached_activations runner config: hook_name picks the column, context_size and d_in must match it.
        string cache = TestPaths.Data("saelens_cache", "js_f16_two_hooks");
        string Config(string name, string hook, int ctx, int dIn)
        {
            string path = P(name + ".json");
            File.WriteAllText(path, JsonSerializer.Serialize(new Dictionary<string, object>
            {
                ["use_cached_activations"] = true, ["cached_activations_path"] = cache, ["model_name"] = "gpt2", ["hook_name"] = hook,
                ["context_size"] = ctx, ["d_in"] = dIn, ["architecture"] = "standard", ["d_sae"] = 8, ["train_batch_size_tokens"] = 2,
            }));
            return path;
        }
        Ok(CliRunner.Run("train", "--config", Config("ok", "blocks.1.hook_mlp_out", 2, 3), "--steps", "2", "--eval-rows", "2", "--out", P("ok")));
        using (var cfg = JsonDocument.Parse(File.ReadAllText(P("ok", "cfg.json"))))
            Assert.Equal("blocks.1.hook_mlp_out", cfg.RootElement.GetProperty("metadata").GetProperty("hook_name").GetString());
        Assert.Contains("context_size 4 does not match the SAELens activation cache",
            Fails(CliRunner.Run("train", "--config", Config("ctx", "blocks.1.hook_mlp_out", 4, 3), "--steps", "2", "--out", P("ctx"))));
        Assert.Contains("d_in 5 does not match",
            Fails(CliRunner.Run("train", "--config", Config("din", "blocks.1.hook_mlp_out", 2, 5), "--steps", "2", "--out", P("din"))));
        Assert.Contains("no activations of hook 'blocks.3.hook_resid_post'",
            Fails(CliRunner.Run("train", "--config", Config("hook", "blocks.3.hook_resid_post", 2, 3), "--steps", "2", "--out", P("hook"))));
        Assert.Contains("name one with hook_name",
            Fails(CliRunner.Run("train", "--activations", cache, "--steps", "2", "--out", P("two"))));
    }
    [Fact]
    public void Config_window_fields_the_rows_were_not_harvested_with_are_refused_not_ignored()
    {
        // Before, each of these trained on the cache's rows as stored and wrote the cache's values into cfg.json, so the
        // config's window fields were silently dropped.
        string cache = TestPaths.Data("saelens_cache", "js_f16_two_hooks");
        string Config(string name, string field, object value)
        {
            string path = P(name + ".json");
            var fields = new Dictionary<string, object?>
            {
                ["use_cached_activations"] = true, ["cached_activations_path"] = cache, ["model_name"] = "gpt2", ["hook_name"] = "blocks.1.hook_mlp_out",
                ["context_size"] = 2, ["d_in"] = 3, ["architecture"] = "standard", ["d_sae"] = 8, ["train_batch_size_tokens"] = 2,
                // SAELens's to_dict() defaults, which every runner config holds: accepted.
                ["exclude_special_tokens"] = false, ["seqpos_slice"] = new object?[] { null }, ["disable_concat_sequences"] = false,
                ["sequence_separator_token"] = "bos", ["prepend_bos"] = true,
            };
            fields[field] = value;
            File.WriteAllText(path, JsonSerializer.Serialize(fields));
            return path;
        }
        string[] Train(string config, string name) => ["train", "--config", config, "--steps", "2", "--eval-rows", "2", "--out", P(name)];
        Ok(CliRunner.Run(Train(Config("defaults", "prepend_bos", true), "defaults")));
        foreach (var (field, value, message) in new (string, object, string)[]
                 {
                     ("seqpos_slice", new object?[] { 1, null }, "seqpos_slice [1,null]: the SAELens activation cache"),
                     ("disable_concat_sequences", true, "disable_concat_sequences true: the SAELens activation cache"),
                     ("sequence_separator_token", "eos", "sequence_separator_token eos: the SAELens activation cache"),
                 })
        {
            string err = Fails(CliRunner.Run(Train(Config(field, field, value), field)));
            Assert.Contains(message, err);
            Assert.False(Directory.Exists(P(field, "cfg.json")));
        }

        // exclude_special_tokens drops the rows of the excluded tokens by the cache's token_ids (ExcludeTokensOnActivationFilesTests);
        // this cache has no token_ids column, so it cannot be filtered and is refused rather than trained on whole.
        Assert.Contains("data-00000-of-00001.arrow: stores no token id per row, so the rows of token ids 0 (exclude_special_tokens) cannot be dropped",
            Fails(CliRunner.Run(Train(Config("excl0", "exclude_special_tokens", new[] { 0 }), "excl0"))));
        // true takes the special tokens of the tokenizer of the model the rows came from: this cache records none, so the
        // config's model_name names them, as SAELens takes them from the run's model (here builtin, found offline); the
        // cache still cannot be filtered.
        string excludeTrue = Config("excl_true", "exclude_special_tokens", true);
        File.WriteAllText(excludeTrue, File.ReadAllText(excludeTrue).Replace("\"model_name\":\"gpt2\"", "\"model_name\":\"builtin\""));
        string special = string.Join(", ", SaeSharp.Tokenizers.ExcludedTokens.SpecialTokenIds(SaeSharp.Tokenizers.Tokenizer.FromFolder(SaeSharp.LanguageModels.BuiltinModel.Folder)).Order());
        Assert.Contains($"data-00000-of-00001.arrow: stores no token id per row, so the rows of token ids {special} (exclude_special_tokens) cannot be dropped",
            Fails(CliRunner.Run(Train(excludeTrue, "excl_true"))));

        // A SaeSharp cache harvested with the ids takes the same list (in any order) as it is, and another list filters it.
        Ok(CliRunner.Run("corpus", "--out", P("c.jsonl"), "--docs", "100", "--seed", "4"));
        Ok(CliRunner.Run(Cache(P("c.jsonl"), P("excl"), "--exclude-token-ids", "0,5")));
        string Own(string name, object ids)
        {
            string path = P(name + ".json");
            File.WriteAllText(path, JsonSerializer.Serialize(new Dictionary<string, object>
            {
                ["use_cached_activations"] = true, ["cached_activations_path"] = P("excl"), ["architecture"] = "topk", ["k"] = 4,
                ["d_sae"] = 32, ["train_batch_size_tokens"] = 64, ["exclude_special_tokens"] = ids,
            }));
            return path;
        }
        Ok(CliRunner.Run("train", "--config", Own("same", new[] { 5, 0 }), "--steps", "2", "--eval-rows", "64", "--out", P("same")));
        using (var cfg = JsonDocument.Parse(File.ReadAllText(P("same", "cfg.json"))))
            // As a run on a model, cfg.json records the run's list as given.
            Assert.Equal([5L, 0L], cfg.RootElement.GetProperty("metadata").GetProperty("exclude_special_tokens").EnumerateArray().Select(e => e.GetInt64()));
        Ok(CliRunner.Run("train", "--config", Own("other", new[] { 0, 7 }), "--steps", "2", "--eval-rows", "64", "--out", P("other")));
        using (var cfg = JsonDocument.Parse(File.ReadAllText(P("other", "cfg.json"))))
            Assert.Equal([0L, 7L], cfg.RootElement.GetProperty("metadata").GetProperty("exclude_special_tokens").EnumerateArray().Select(e => e.GetInt64()));
    }
}
