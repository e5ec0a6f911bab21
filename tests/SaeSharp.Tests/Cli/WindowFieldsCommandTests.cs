using System.Text.Json.Nodes;
using SaeSharp.Saes;
using SaeSharp.Data;
using SaeSharp.Models;

namespace SaeSharp.Tests.Cli;

/// <summary><c>--seqpos-slice</c>, <c>--disable-concat-sequences</c> and <c>--sequence-separator-token</c> on
/// <c>sae train</c>, <c>sae cache</c> and <c>sae eval</c>: a tiny GPT-2 with GPT-2's tokenizer (no SEP token).</summary>
public class WindowFieldsCommandTests : TinyGpt2CliTestBase
{
    [Fact]
    public void The_flags_win_over_the_runner_configs_fields()
    {
        var data = Dataset();
        var config = SaeSharp.Training.TrainingSettings.FromJson("""
            {"seqpos_slice": [1, null], "disable_concat_sequences": true, "sequence_separator_token": null}
            """, "runner.json");
        SaeSharp.Pipelines.ModelDataOptions Read(params string[] args)
        {
            var cli = new SaeSharp.Cli.Commands.ModelDataOptionsCli();
            var command = new System.CommandLine.Command("t");
            cli.AddTo(command);
            return cli.Read(command.Parse(["--model", "builtin", "--dataset", data, "--hook", "blocks.0.hook_resid_post", .. args]), config);
        }
        var fields = Read();
        Assert.Equal((SeqposSlice.Parse("1:"), true, PretokenizeToken.None), (fields.SeqposSlice, fields.DisableConcatSequences, fields.SequenceSeparatorToken));
        var flags = Read("--seqpos-slice", "::2", "--sequence-separator-token", "eos");
        Assert.Equal((SeqposSlice.Parse("::2"), PretokenizeToken.Eos), (flags.SeqposSlice, flags.SequenceSeparatorToken));
        Assert.Equal(PretokenizeToken.None, Read("--sequence-separator-token", "none").SequenceSeparatorToken);
        Assert.Equal(PretokenizeToken.OfId(7), Read("--sequence-separator-token", "7").SequenceSeparatorToken);
    }

    /// <summary>A pre-tokenized dataset's rows are used as they are (SAELens too): the two text-only window fields change
    /// nothing there, and the run says so once on stderr rather than recording them silently.</summary>
    [Fact]
    public void Text_only_window_fields_on_a_pretokenized_dataset_are_named_in_a_warning()
    {
        string model = Model();
        var rng = new Random(2);
        File.WriteAllLines(P("tokens.jsonl"), Enumerable.Range(0, 40).Select(_ => $"{{\"input_ids\": [{string.Join(", ", Enumerable.Range(0, 16).Select(_ => rng.Next(100, 5000)))}]}}"));
        string[] Cache(string output, params string[] extra) =>
            ["cache", "--model", model, "--hook", "blocks.0.hook_resid_post", "--dataset", P("tokens.jsonl"), "--context-size", "16", "--tokens", "64",
             "--out", P(output), .. extra];
        var plain = CliRunner.Run(Cache("c0"));
        Ok(plain);
        Assert.DoesNotContain("pre-tokenized", plain.Err);
        var both = CliRunner.Run(Cache("c1", "--disable-concat-sequences", "--sequence-separator-token", "eos"));
        Ok(both);
        Assert.Contains("is pre-tokenized: disable_concat_sequences and sequence_separator_token apply to text only", both.Err);
        var sep = CliRunner.Run(Cache("c2", "--sequence-separator-token", "none"));
        Ok(sep);
        Assert.Contains("is pre-tokenized: sequence_separator_token apply to text only", sep.Err);
    }

    [Fact]
    public void Bad_values_are_one_line_errors_naming_them()
    {
        string model = Model(), data = Dataset();
        string[] Train(params string[] extra) =>
            ["train", "--model", model, "--hook", "blocks.0.hook_resid_post", "--dataset", data, "--tokens", "256", "--context-size", "16",
             "--arch", "topk", "--k", "2", "--dict-size", "32", "--batch-size", "32", "--out", P("run"), .. extra];
        Assert.Contains("--seqpos-slice abc", OneLineError(CliRunner.Run(Train("--seqpos-slice", "abc"))));
        Assert.Contains("seqpos_slice 5:2", OneLineError(CliRunner.Run(Train("--seqpos-slice", "5:2"))));
        Assert.Contains("--sequence-separator-token cls", OneLineError(CliRunner.Run(Train("--sequence-separator-token", "cls"))));
        Assert.Contains("sequence_separator_token sep: the tokenizer has no SEP token", OneLineError(CliRunner.Run(Train("--sequence-separator-token", "sep"))));
        Assert.Contains("seqpos_slice 20:", OneLineError(CliRunner.Run("cache", "--model", model, "--hook", "blocks.0.hook_resid_post", "--dataset", data,
            "--context-size", "16", "--seqpos-slice", "20:", "--out", P("cache"))));
        // On activation files the windows are fixed by the files: the flags would be ignored.
        Assert.Contains("--seqpos-slice", OneLineError(CliRunner.Run("eval", "--sae", P("nosae"), "--activations", P("x.safetensors"), "--seqpos-slice", "1:")));
    }

    [Fact]
    public void Train_cache_and_eval_use_the_sliced_positions_end_to_end()
    {
        string model = Model(), data = Dataset();
        Ok(CliRunner.Run("train", "--model", model, "--hook", "blocks.0.hook_resid_post", "--dataset", data, "--tokens", "512", "--context-size", "16",
            "--seqpos-slice", "1:", "--sequence-separator-token", "eos", "--arch", "topk", "--k", "2", "--dict-size", "32", "--batch-size", "32",
            "--eval-rows", "60", "--out", P("run")));
        var meta = JsonNode.Parse(File.ReadAllText(P("run", "cfg.json")))!["metadata"]!;
        Assert.Equal("[1,null]", meta["seqpos_slice"]!.ToJsonString());
        Assert.Equal("eos", (string)meta["sequence_separator_token"]!);
        Assert.False((bool)meta["disable_concat_sequences"]!);
        // eval --model reads the SAE's slice: 150 tokens are 10 windows of 15 positions.
        Ok(CliRunner.Run("eval", "--sae", P("run"), "--model", model, "--dataset", data, "--tokens", "150", "--json", P("e.json")));
        var e = JsonNode.Parse(File.ReadAllText(P("e.json")))!;
        Assert.Equal(150, (long)e["token_stats"]!["total_tokens_eval_reconstruction"]!);
        // --seqpos-slice : evaluates every position, as SAELens's run_evals does.
        Ok(CliRunner.Run("eval", "--sae", P("run"), "--model", model, "--dataset", data, "--tokens", "160", "--seqpos-slice", ":", "--json", P("all.json")));
        Assert.Equal(160, (long)JsonNode.Parse(File.ReadAllText(P("all.json")))!["token_stats"]!["total_tokens_eval_reconstruction"]!);
        // cache: SAELens's n_seq_in_dataset = training_tokens / sliced context size. One window per line (13 tokens).
        Assert.Contains("every document is shorter than a window", OneLineError(CliRunner.Run("cache", "--model", model, "--hook", "blocks.0.hook_resid_post",
            "--dataset", data, "--context-size", "16", "--disable-concat-sequences", "--out", P("short"))));
        Ok(CliRunner.Run("cache", "--model", model, "--hook", "blocks.0.hook_resid_post", "--dataset", data, "--context-size", "12", "--tokens", "60",
            "--seqpos-slice", "::4", "--disable-concat-sequences", "--out", P("cache")));
        var m = JsonNode.Parse(File.ReadAllText(P("cache", "manifest.json")))!;
        Assert.Equal(20, (long)m["total_contexts"]!);
        Assert.Equal(60, (long)m["total_rows"]!);
        Assert.Equal("[null,null,4]", m["seqpos_slice"]!.ToJsonString());
        Assert.True((bool)m["disable_concat_sequences"]!);
    }
}
