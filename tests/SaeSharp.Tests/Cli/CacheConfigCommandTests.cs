using System.Text.Json.Nodes;
using SaeSharp.Activations;
using SaeSharp.Pipelines;
using SaeSharp.Tests.Tokenizers;
using TorchSharp;

namespace SaeSharp.Tests.Cli;

/// <summary><c>sae cache --config</c> with SAELens 6.37.6's <c>CacheActivationsRunnerConfig</c>, end to end with the built-in
/// model (d_in 128 at blocks.1.hook_resid_post): a config as <c>asdict(cfg)</c> writes it gives the folder the equivalent
/// flags give, byte for byte.</summary>
public sealed class CacheConfigCommandTests : CliTempDirTestBase
{
    private const string Hook = "blocks.1.hook_resid_post";

    private static string Ok((int Exit, string Out, string Err) r)
    {
        Assert.True(r.Exit == 0, $"exit {r.Exit}; stdout: {r.Out}; stderr: {r.Err}");
        return r.Err;
    }

    /// <summary>The error line of a run that failed with exit code 1.</summary>
    private static string OneLineError((int Exit, string Out, string Err) r)
    {
        Assert.True(r.Exit == 1, $"exit {r.Exit}; stdout: {r.Out}; stderr: {r.Err}");
        // The error is one line, after the config's notes, if any.
        var lines = r.Err.Trim().Split('\n');
        Assert.All(lines[..^1], l => Assert.StartsWith("note: ", l));
        Assert.StartsWith("error: ", lines[^1]);
        return lines[^1];
    }

    private string Corpus()
    {
        if (!File.Exists(P("c.jsonl"))) Ok(CliRunner.Run("corpus", "--out", P("c.jsonl"), "--docs", "300", "--seed", "4"));
        return P("c.jsonl");
    }

    /// <summary>Every field of the 6.37.6 dataclass at its default (device "cpu", as on a machine without CUDA), as
    /// <c>json.dumps(asdict(cfg))</c> writes it, with the six required fields and <paramref name="changes"/>.</summary>
    private string Config(string name, string dataset, string output, params (string Key, JsonNode? Value)[] changes)
    {
        var cfg = new JsonObject
        {
            ["dataset_path"] = dataset, ["model_name"] = "builtin", ["model_batch_size"] = 8, ["hook_name"] = Hook, ["d_in"] = 128,
            ["training_tokens"] = 1000, ["context_size"] = -1, ["model_class_name"] = "HookedTransformer", ["new_cached_activations_path"] = output,
            ["shuffle"] = true, ["seed"] = 42, ["dtype"] = "float32", ["device"] = "cpu", ["buffer_size_gb"] = 2.0, ["hf_repo_id"] = null,
            ["hf_num_shards"] = null, ["hf_revision"] = "main", ["hf_is_private_repo"] = false, ["model_kwargs"] = new JsonObject(),
            ["model_from_pretrained_kwargs"] = new JsonObject(), ["compile_llm"] = false, ["llm_compilation_mode"] = null, ["prepend_bos"] = true,
            ["seqpos_slice"] = new JsonArray((JsonNode?)null), ["streaming"] = true, ["autocast_lm"] = false, ["dataset_trust_remote_code"] = null,
        };
        foreach (var (key, value) in changes) cfg[key] = value;
        File.WriteAllText(P(name), cfg.ToJsonString());
        return P(name);
    }

    private static void SameFolder(string a, string b)
    {
        var files = Directory.GetFiles(a).Select(Path.GetFileName).Order(StringComparer.Ordinal).ToList();
        Assert.Equal(files, Directory.GetFiles(b).Select(Path.GetFileName).Order(StringComparer.Ordinal));
        foreach (var f in files.Where(f => f != SaeLensActivationCache.ConfigFile))
            Assert.True(File.ReadAllBytes(Path.Combine(a, f!)).SequenceEqual(File.ReadAllBytes(Path.Combine(b, f!))), $"{f} differs");
    }

    private static torch.Tensor Rows(string dir)
    {
        using var source = new ActivationFileSource(dir, new ActivationFileSourceOptions { Shuffle = false });
        using var batch = source.Next(100_000)!;
        return batch.Input.to(torch.float32).clone();
    }

    [Fact]
    public void A_config_at_saelens_defaults_writes_the_folder_the_flags_write()
    {
        // context_size -1 (the default) takes the length of a pre-tokenized dataset's rows: 32 here.
        Ok(CliRunner.Run("pretokenize", "--model", "builtin", "--dataset", Corpus(), "--context-size", "32", "--no-shuffle", "--out", P("tok")));
        string err = Ok(CliRunner.Run("cache", "--config", Config("cfg.json", P("tok"), P("from-config"))));
        Ok(CliRunner.Run("cache", "--model", "builtin", "--hook", Hook, "--dataset", P("tok"), "--context-size", "32", "--tokens", "1000",
            "--format", "saelens", "--out", P("from-flags")));
        SameFolder(P("from-config"), P("from-flags"));
        // 1,000 tokens: ⌈1000/32⌉ = 32 windows of 32.
        using (var rows = Rows(P("from-config"))) Assert.Equal([1024L, 128L], rows.shape);
        // The runner config written differs only in the folder named.
        var a = JsonNode.Parse(File.ReadAllText(P("from-config", SaeLensActivationCache.ConfigFile)))!.AsObject();
        var b = JsonNode.Parse(File.ReadAllText(P("from-flags", SaeLensActivationCache.ConfigFile)))!.AsObject();
        a.Remove("new_cached_activations_path");
        b.Remove("new_cached_activations_path");
        Assert.Equal(b.ToJsonString(), a.ToJsonString());
        // One note for the fields that change nothing, and no other output on stderr.
        string note = Assert.Single(err.Split('\n', StringSplitOptions.RemoveEmptyEntries));
        Assert.StartsWith($"note: {P("cfg.json")}: ignored", note);
        foreach (var f in new[] { "shuffle", "seed", "hf_num_shards", "hf_revision", "hf_is_private_repo", "compile_llm", "llm_compilation_mode", "streaming", "dataset_trust_remote_code" })
            Assert.Contains(f, note);
    }

    [Fact]
    public void Text_fields_slice_buffer_and_kwargs_of_the_file_give_the_folder_of_their_flags()
    {
        // seqpos_slice [1, null] keeps 31 of 32 positions: ⌈1000/31⌉ = 33 windows. 0.0003 GB holds 585 tokens of 128 float32,
        // rounded down to whole model batches of 8 × 31: 496 tokens, 16 windows a shard: 3 shards.
        var cfg = Config("cfg.json", Corpus(), P("from-config"), ("context_size", 32), ("buffer_size_gb", 0.0003),
            ("seqpos_slice", new JsonArray(1, null)), ("model_from_pretrained_kwargs", new JsonObject { ["fold_ln"] = true }), ("prepend_bos", false));
        Ok(CliRunner.Run("cache", "--config", cfg));
        Ok(CliRunner.Run("cache", "--model", "builtin", "--hook", Hook, "--dataset", Corpus(), "--context-size", "32", "--tokens", "1000",
            "--format", "saelens", "--buffer-size-gb", "0.0003", "--seqpos-slice", "1:", "--fold-ln", "--no-prepend-bos", "--out", P("from-flags")));
        SameFolder(P("from-config"), P("from-flags"));
        Assert.Equal(3, Directory.GetFiles(P("from-config"), "data-*.arrow").Length);
        var written = JsonNode.Parse(File.ReadAllText(P("from-config", SaeLensActivationCache.ConfigFile)))!;
        Assert.Equal("[1,null]", written["seqpos_slice"]!.ToJsonString());
        Assert.False(written["prepend_bos"]!.GetValue<bool>());
        Assert.True(written["model_from_pretrained_kwargs"]!["fold_ln"]!.GetValue<bool>());
    }

    [Fact]
    public void Flags_win_over_the_file_and_format_saesharp_writes_the_same_rows()
    {
        var cfg = Config("cfg.json", P("nowhere.jsonl"), P("not-written"), ("hook_name", "blocks.0.hook_resid_post"), ("context_size", 16),
            ("training_tokens", 500), ("d_in", 128), ("dtype", "float16"));
        Ok(CliRunner.Run("cache", "--config", cfg, "--hook", Hook, "--dataset", Corpus(), "--context-size", "32", "--tokens", "1000", "--out", P("saelens")));
        Assert.False(Directory.Exists(P("not-written")));
        var cache = SaeLensActivationCache.Open(P("saelens"));
        Assert.Equal(new SaeLensCacheColumn(Hook, 32, 128, "float16"), cache.Columns[0]);

        // The file's float16, stored by SAELens's cache and by SaeSharp's: the float32 rows rounded to half precision.
        Ok(CliRunner.Run("cache", "--config", cfg, "--format", "saesharp", "--hook", Hook, "--dataset", Corpus(), "--context-size", "32",
            "--tokens", "1000", "--out", P("saesharp")));
        Assert.Equal(Hook, ActivationCacheManifest.Read(P("saesharp")).Hook);
        Ok(CliRunner.Run("cache", "--model", "builtin", "--hook", Hook, "--dataset", Corpus(), "--context-size", "32", "--tokens", "1000", "--out", P("float32")));
        using var full = Rows(P("float32"));
        using var half = full.to(torch.float16).to(torch.float32);
        using var a = Rows(P("saelens"));
        using var b = Rows(P("saesharp"));
        Assert.Equal([1024L, 128L], a.shape);
        Assert.Equal(half.bytes.ToArray(), a.bytes.ToArray());
        Assert.Equal(half.bytes.ToArray(), b.bytes.ToArray());
    }

    [Theory]
    [InlineData("model_class_name", "\"HookedMamba\"", "'model_class_name' \"HookedMamba\" is not supported: \"HookedTransformer\" only")]
    [InlineData("model_kwargs", "{\"return_type\": null}", "'model_kwargs' {\"return_type\":null} is not supported: {} only")]
    [InlineData("autocast_lm", "true", "'autocast_lm' true is not supported: false only")]
    [InlineData("model_from_pretrained_kwargs", "{\"n_devices\": 2}", "model_from_pretrained_kwargs 'n_devices' not supported")]
    [InlineData("dtype", "\"bfloat16\"", "dtype \"bfloat16\": a SAELens activation cache stores float32 or float16")]
    [InlineData("training_tokens", "\"1000\"", "training_tokens \"1000\": expected a whole number")]
    [InlineData("d_in", "128.5", "d_in 128.5: expected a whole number")]
    [InlineData("shuffle", "\"yes\"", "shuffle \"yes\": expected true or false")]
    [InlineData("hf_num_shards", "\"4\"", "hf_num_shards \"4\": expected a whole number or null")]
    [InlineData("seqpos_slice", "5", "seqpos_slice 5: expected a list such as [1, null] or null")]
    [InlineData("model_batch_size", "0", "model_batch_size 0: expected a positive whole number")]
    [InlineData("context_size", "2000", "context_size (2000) is greater than training_tokens (1000)")]
    [InlineData("buffer_size_gb", "0", "buffer_size_gb 0: expected a positive number of GB")]
    [InlineData("hook_name", "null", "hook_name null: expected a string")]
    public void A_field_saesharp_does_not_implement_or_of_the_wrong_type_is_a_one_line_error_naming_it(string key, string json, string expected)
    {
        var cfg = Config("cfg.json", Corpus(), P("out"), ("context_size", 32), (key, JsonNode.Parse(json)));
        string err = OneLineError(CliRunner.Run("cache", "--config", cfg));
        Assert.Contains($"{P("cfg.json")}: ", err);
        Assert.Contains(expected, err);
        Assert.False(Directory.Exists(P("out")));
    }

    [Fact]
    public void An_unknown_key_is_named_with_the_known_ones()
    {
        var cfg = Config("cfg.json", Corpus(), P("out"), ("context_size", 32), ("store_batch_size_prompts", 8));
        string err = OneLineError(CliRunner.Run("cache", "--config", cfg));
        Assert.Contains("unknown key 'store_batch_size_prompts'", err);
        Assert.Contains("autocast_lm, buffer_size_gb, compile_llm, context_size, d_in, dataset_path", err);
        // 27 keys in 6.37.6's dataclass, all known.
        Assert.Equal(27, CacheActivationsSettings.Keys.Count);
    }

    [Fact]
    public void D_in_is_checked_against_the_hook_before_anything_is_written()
    {
        var cfg = Config("cfg.json", Corpus(), P("out"), ("context_size", 32), ("d_in", 64));
        string err = OneLineError(CliRunner.Run("cache", "--config", cfg));
        Assert.Contains($"{P("cfg.json")}: d_in 64 does not match the model", err);
        Assert.Contains($"at {Hook}, whose width is 128", err);
        Assert.False(Directory.Exists(P("out")));
        // The same with --format saesharp.
        Assert.Contains("d_in 64 does not match", OneLineError(CliRunner.Run("cache", "--config", cfg, "--format", "saesharp")));
    }

    [Fact]
    public void Context_size_minus_one_on_text_is_refused_as_saelens_does()
    {
        var cfg = Config("cfg.json", Corpus(), P("out"));
        string err = OneLineError(CliRunner.Run("cache", "--config", cfg));
        Assert.Contains("context_size -1: ", err);
        Assert.Contains("is not tokenized; give context_size", err);
        // A flag gives it.
        Ok(CliRunner.Run("cache", "--config", cfg, "--context-size", "32"));
        Assert.Equal(32, SaeLensActivationCache.Open(P("out")).Columns[0].ContextSize);
    }

    [Fact]
    public void A_hub_repo_is_a_note_that_nothing_is_uploaded()
    {
        var cfg = Config("cfg.json", Corpus(), P("out"), ("context_size", 32), ("hf_repo_id", "me/acts"));
        string err = Ok(CliRunner.Run("cache", "--config", cfg));
        Assert.Contains($"note: {P("cfg.json")}: hf_repo_id \"me/acts\": nothing is uploaded", err);
        Assert.True(SaeLensActivationCache.IsCache(P("out")));
    }

    [Fact]
    public void The_default_folder_is_saelens_default_cached_activations_path()
    {
        // sae_lens/config.py _default_cached_activations_path: f"activations/{dataset_path.replace('/', '_')}/{model_name.replace('/', '_')}/{hook_name}"
        Assert.Equal("activations/NeelNanda_pile-10k/EleutherAI_pythia-70m/blocks.0.hook_resid_pre",
            CacheActivationsSettings.DefaultOutputPath("NeelNanda/pile-10k", "EleutherAI/pythia-70m", "blocks.0.hook_resid_pre"));
    }
}
