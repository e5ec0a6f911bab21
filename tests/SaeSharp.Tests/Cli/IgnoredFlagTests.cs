using SaeSharp.IO;
using SaeSharp.Tests.Analysis;
using static TorchSharp.torch;

namespace SaeSharp.Tests.Cli;

/// <summary>
/// A flag that would have no effect in the mode a command runs in (one of the other mode's, or one qualifying a flag
/// that is not given) is refused: exit 1 and one line naming the flags and what applies instead, before anything runs.
/// </summary>
public class IgnoredFlagTests : IDisposable
{
    private readonly AnalysisFixture _fx = new();
    public void Dispose() => _fx.Dispose();

    private string P(string name) => Path.Combine(_fx.Dir, name);

    /// <summary>Exit code 1 and one line "error: ..." naming every flag of <paramref name="flags"/>, returned.</summary>
    private static string Refused((int Exit, string Out, string Err) r, params string[] flags)
    {
        Assert.True(r.Exit == 1, $"exit {r.Exit}; stdout: {r.Out}; stderr: {r.Err}");
        string err = r.Err.Trim();
        Assert.StartsWith("error: ", err);
        Assert.DoesNotContain('\n', err);
        Assert.StartsWith($"error: {string.Join(", ", flags)}: ", err);
        return err;
    }

    private string Tokens()
    {
        string input = P("ids.safetensors");
        using var ids = tensor(new long[] { 0, 1, 2, 3, 4 }).unsqueeze(0);
        SafeTensors.Save(input, [new("tokens", ids)]);
        return input;
    }

    [Fact]
    public void Ablate_over_a_prompt_refuses_the_dataset_flags()
    {
        string err = Refused(CliRunner.Run("ablate", "--model", _fx.ModelDir, "--sae", _fx.SaeDir, "--features", "1", "--prompt", "the cat",
            "--dataset", _fx.DataPath, "--tokens", "64", "--context-size", "8"), "--dataset", "--tokens", "--context-size");
        Assert.Contains("--prompt", err);
        Refused(CliRunner.Run("ablate", "--model", _fx.ModelDir, "--sae", _fx.SaeDir, "--features", "1", "--tokens", "64"), "--tokens");
        // Over the dataset they apply.
        var ok = CliRunner.Run("ablate", "--model", _fx.ModelDir, "--sae", _fx.SaeDir, "--features", "1", "--dataset", _fx.DataPath, "--tokens", "64", "--context-size", "8");
        Assert.True(ok.Exit == 0, ok.Err);
    }

    [Fact]
    public void Attribute_refuses_input_with_a_prompt_and_bos_flag_with_input()
    {
        string input = Tokens();
        Refused(CliRunner.Run("attribute", "--model", _fx.ModelDir, "--sae", _fx.SaeDir, "--prompt", "the cat", "--input", input, "--metric", "loss"), "--input");
        string err = Refused(CliRunner.Run("attribute", "--model", _fx.ModelDir, "--sae", _fx.SaeDir, "--input", input, "--metric", "loss", "--no-prepend-bos"),
            "--no-prepend-bos");
        Assert.Contains("--prompt", err);
    }

    [Fact]
    public void Greedy_generation_refuses_the_sampling_flags()
    {
        string err = Refused(CliRunner.Run("model", "generate", "--model", _fx.ModelDir, "--prompt", "the cat", "--top-k", "5", "--seed", "3"), "--top-k", "--seed");
        Assert.Contains("--temperature 0", err);
        Refused(CliRunner.Run("model", "generate", "--model", _fx.ModelDir, "--prompt", "the cat", "--temperature", "0", "--top-p", "0.9"), "--top-p");
        Refused(CliRunner.Run("steer", "--model", _fx.ModelDir, "--sae", _fx.SaeDir, "--feature", "1", "--scale", "2", "--prompt", "the cat",
            "--temperature", "0", "--top-p", "0.5", "--seed", "2"), "--top-p", "--seed");
        var ok = CliRunner.Run("model", "generate", "--model", _fx.ModelDir, "--prompt", "the cat", "--max-new-tokens", "2", "--temperature", "1", "--top-k", "5", "--seed", "3");
        Assert.True(ok.Exit == 0, ok.Err);
    }

    [Fact]
    public void Tokenize_refuses_a_second_text_and_encoding_flags_when_decoding()
    {
        File.WriteAllText(P("t.txt"), "the dog");
        string err = Refused(CliRunner.Run("model", "tokenize", "--model", _fx.ModelDir, "--text", "the cat", "--file", P("t.txt")), "--file");
        Assert.Contains("--text", err);
        Refused(CliRunner.Run("model", "tokenize", "--model", _fx.ModelDir, "--text", "[1, 2]", "--decode", "--no-special-tokens"), "--no-special-tokens");
    }

    [Fact]
    public void Model_run_refuses_intervention_flags_without_the_intervention()
    {
        string input = Tokens();
        string[] Run(params string[] more) => ["model", "run", "--model", _fx.ModelDir, "--input", input, "--out", P("o.safetensors"), .. more];
        Refused(CliRunner.Run(Run("--error-term")), "--error-term");
        Refused(CliRunner.Run(Run("--sae", _fx.SaeDir, "--ablate-mode", "mean")), "--ablate-mode");
        Refused(CliRunner.Run(Run("--sae", _fx.SaeDir, "--clamp", "1:2", "--positions", "1")), "--positions");
        Refused(CliRunner.Run(Run("--sae", _fx.SaeDir, "--sae-index", "0")), "--sae-index");
        Assert.False(File.Exists(P("o.safetensors")));
    }

    [Fact]
    public void Synthetic_demo_refuses_the_flags_of_the_model_demo()
    {
        string err = Refused(CliRunner.Run("demo", "--synthetic", "--quick", "--d-sae", "64", "--out", P("demo")), "--quick", "--d-sae");
        Assert.Contains("--steps", err);
        Assert.False(Directory.Exists(P("demo")));
    }

    [Fact]
    public void Releases_of_one_release_refuse_the_model_filter()
    {
        string err = Refused(CliRunner.Run("releases", "gpt2-small-res-jb", "--model", "gemma"), "--model");
        Assert.Contains("--search", err);
    }

    [Fact]
    public void Lm_train_refuses_validation_flags_that_another_one_overrides()
    {
        File.WriteAllText(P("c.jsonl"), "");
        Refused(CliRunner.Run("lm", "train", "--corpus", P("c.jsonl"), "--out", P("lm"), "--val-seed", "1", "--val-corpus", P("c.jsonl")), "--val-corpus");
        Refused(CliRunner.Run("lm", "train", "--corpus", P("c.jsonl"), "--out", P("lm"), "--val-corpus", P("c.jsonl"), "--val-docs", "10"), "--val-docs");
        Assert.False(Directory.Exists(P("lm")));
    }
}
