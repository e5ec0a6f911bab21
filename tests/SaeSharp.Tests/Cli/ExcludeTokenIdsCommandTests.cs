using System.Text.Json.Nodes;
using SaeSharp.Models;
using SaeSharp.Pipelines;
using SaeSharp.Tokenizers;

namespace SaeSharp.Tests.Cli;

/// <summary><c>--exclude-token-ids</c> (SAELens's exclude_special_tokens as a list) on <c>sae train</c>, <c>sae cache</c>,
/// <c>sae eval</c> and <c>sae features</c>: a tiny GPT-2 with GPT-2's tokenizer (" the" = 262, "." = 13).</summary>
public class ExcludeTokenIdsCommandTests : TinyGpt2CliTestBase
{
    [Fact]
    public void Train_cache_eval_and_features_leave_out_exactly_the_listed_ids()
    {
        string model = Model(), data = Dataset();
        var tokens = ModelPipeline.Windows(Tokenizer.FromFolder(model), data, 16, true).Take(10).SelectMany(w => w).ToArray();
        Assert.Contains(262L, tokens);
        Assert.Contains(13L, tokens);
        Assert.Contains(50256L, tokens);
        long kept = tokens.Count(t => t is not (262 or 13));

        Ok(CliRunner.Run("train", "--model", model, "--hook", "blocks.0.hook_resid_post", "--dataset", data, "--tokens", "256", "--context-size", "16",
            "--exclude-token-ids", "262,13", "--arch", "topk", "--k", "2", "--dict-size", "32", "--batch-size", "32", "--eval-rows", "60", "--out", P("run")));
        var meta = JsonNode.Parse(File.ReadAllText(P("run", "cfg.json")))!["metadata"]!;
        Assert.Equal("[262,13]", meta["exclude_special_tokens"]!.ToJsonString());

        // eval --model and features read the SAE's list: 160 tokens are 10 windows of 16, less the listed positions.
        Ok(CliRunner.Run("eval", "--sae", P("run"), "--model", model, "--dataset", data, "--tokens", "160", "--json", P("e.json")));
        Assert.Equal(kept, (long)JsonNode.Parse(File.ReadAllText(P("e.json")))!["token_stats"]!["total_tokens_eval_reconstruction"]!);
        Ok(CliRunner.Run("features", "--sae", P("run"), "--model", model, "--dataset", data, "--tokens", "160", "--features", "0-3", "--out", P("f")));
        Assert.Equal(kept, (long)JsonNode.Parse(File.ReadAllText(P("f", "summary.json")))!["tokens"]!);
        // An SAE whose own list does not fit the model's tokenizer: the error names that SAE's metadata.
        Directory.CreateDirectory(P("other"));
        foreach (var f in Directory.GetFiles(P("run"), "*.safetensors")) File.Copy(f, P("other", Path.GetFileName(f)));
        var cfg = JsonNode.Parse(File.ReadAllText(P("run", "cfg.json")))!;
        cfg["metadata"]!["exclude_special_tokens"] = new JsonArray(13, 60000);
        File.WriteAllText(P("other", "cfg.json"), cfg.ToJsonString());
        foreach (string[] command in new[] { new[] { "eval", "--sae", P("run"), "--sae", P("other") }, ["features", "--sae", P("other"), "--features", "0-3", "--out", P("f2")] })
            Assert.Contains($"{P("other")}: cfg.json metadata exclude_special_tokens: token id 60000 is beyond the tokenizer's vocabulary",
                OneLineError(CliRunner.Run([.. command, "--model", model, "--dataset", data, "--tokens", "160"])));

        Ok(CliRunner.Run("cache", "--model", model, "--hook", "blocks.0.hook_resid_post", "--dataset", data, "--context-size", "16", "--tokens", "160",
            "--exclude-token-ids", "262,13", "--out", P("cache")));
        var m = JsonNode.Parse(File.ReadAllText(P("cache", "manifest.json")))!;
        Assert.Equal(kept, (long)m["total_rows"]!);
        Assert.Equal("[13,262]", m["exclude_token_ids"]!.ToJsonString());
        Assert.True((bool)m["exclude_token_ids_listed"]!);
    }

    [Fact]
    public void A_resumed_cache_records_the_ids_as_the_resuming_run_gives_them()
    {
        // GPT-2's special tokens are [50256]: --exclude-special-tokens and --exclude-token-ids 50256 drop the same positions.
        string model = Model(), data = Dataset();
        string[] Cache(string tokens, params string[] exclude) =>
            ["cache", "--model", model, "--hook", "blocks.0.hook_resid_post", "--dataset", data, "--context-size", "16", "--tokens", tokens,
             "--contexts-per-shard", "2", .. exclude, "--out", P("cache")];
        Ok(CliRunner.Run(Cache("64", "--exclude-special-tokens")));
        var m = JsonNode.Parse(File.ReadAllText(P("cache", "manifest.json")))!;
        Assert.Equal("[50256]", m["exclude_token_ids"]!.ToJsonString());
        Assert.False((bool)m["exclude_token_ids_listed"]!);
        long rowsBefore = (long)m["total_rows"]!;

        Ok(CliRunner.Run(Cache("128", "--exclude-token-ids", "50256")));
        m = JsonNode.Parse(File.ReadAllText(P("cache", "manifest.json")))!;
        Assert.True((bool)m["exclude_token_ids_listed"]!);
        Assert.True((long)m["total_rows"]! > rowsBefore);
        // A different list is still refused: the rows would differ.
        Assert.Contains("exclude_token_ids", OneLineError(CliRunner.Run(Cache("192", "--exclude-token-ids", "13"))));
    }

    [Fact]
    public void Bad_values_are_one_line_errors_naming_them()
    {
        string model = Model(), data = Dataset();
        string[] Train(params string[] extra) =>
            ["train", "--model", model, "--hook", "blocks.0.hook_resid_post", "--dataset", data, "--tokens", "256", "--context-size", "16",
             "--arch", "topk", "--k", "2", "--dict-size", "32", "--batch-size", "32", "--out", P("run"), .. extra];
        Assert.Contains("--exclude-token-ids 1,a: expected comma-separated non-negative token ids", OneLineError(CliRunner.Run(Train("--exclude-token-ids", "1,a"))));
        Assert.Contains("--exclude-token-ids 5,-1: expected", OneLineError(CliRunner.Run(Train("--exclude-token-ids", "5,-1"))));
        Assert.Contains("exclude_special_tokens (--exclude-token-ids or the --config file): token id 50257 is beyond the tokenizer's vocabulary (ids 0 to 50256)",
            OneLineError(CliRunner.Run(Train("--exclude-token-ids", "50257"))));
        Assert.Contains("not both", OneLineError(CliRunner.Run(Train("--exclude-token-ids", "13", "--exclude-special-tokens"))));
        Assert.Contains("exclude_special_tokens needs the SaeSharp cache format", OneLineError(CliRunner.Run("cache", "--model", model, "--hook", "blocks.0.hook_resid_post",
            "--dataset", data, "--context-size", "16", "--exclude-token-ids", "13", "--format", "saelens", "--out", P("sl"))));
        File.WriteAllText(P("runner.json"), """{"exclude_special_tokens": [13, "x"]}""");
        Assert.Contains("runner.json: exclude_special_tokens [13,\"x\"]: expected", OneLineError(CliRunner.Run(Train("--config", P("runner.json")))));
        // On activation files the positions are fixed by the files: the flag would be ignored.
        Assert.Contains("--exclude-token-ids", OneLineError(CliRunner.Run("eval", "--sae", P("nosae"), "--activations", P("x.safetensors"), "--exclude-token-ids", "1")));
    }
}
