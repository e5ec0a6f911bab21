using SaeSharp.IO;
using static TorchSharp.torch;

namespace SaeSharp.Tests.Cli;

/// <summary>
/// Bad input to the model commands of TransformerLens's analyses (<c>logit-attrs</c>, <c>patch</c>, <c>path-patch</c>,
/// <c>model run</c>) on the builtin model (311 token ids, 3 layers of 4 heads): one line naming the flag, the file or the
/// value, before anything is written, and no input file replaced.
/// </summary>
public class ModelCommandBadInputTests : TinyGpt2CliTestBase
{
    private const string Prompt = "Once there was a boy named Tom . Anna";

    /// <summary>A safetensors file of int64 <c>tokens</c> of <paramref name="shape"/>.</summary>
    private string Tokens(string name, long[] ids, params long[] shape)
    {
        using var t = tensor(ids).reshape(shape);
        SafeTensors.Save(P(name), new Dictionary<string, Tensor> { ["tokens"] = t });
        return P(name);
    }

    [Fact]
    public void Logit_attrs_refuses_one_file_for_png_and_json_and_a_png_over_its_mean_over_file()
    {
        // Both were written, the JSON over the PNG.
        string same = OneLineError(CliRunner.Run("model", "logit-attrs", "--model", "builtin", "--prompt", Prompt, "--answer", "Tom,Anna",
            "--png", P("out.x"), "--json", P("out.x")));
        Assert.Contains($"--png {P("out.x")}: the same file as --json", same);
        Assert.False(File.Exists(P("out.x")));

        // The --mean-over tokens were read, then replaced by the heatmap.
        string meanOver = Tokens("mean.safetensors", [1, 2, 3, 4], 1, 4);
        byte[] before = File.ReadAllBytes(meanOver);
        string over = OneLineError(CliRunner.Run("model", "logit-attrs", "--model", "builtin", "--prompt", Prompt, "--answer", "Tom,Anna",
            "--ablate-head", "0.1", "--ablate-head-mode", "mean", "--mean-over", meanOver, "--png", meanOver));
        Assert.Contains($"--png {meanOver}: would replace --mean-over {meanOver}", over);
        Assert.Equal(before, File.ReadAllBytes(meanOver));
    }

    [Fact]
    public void Logit_attrs_names_the_prompt_an_ablation_position_is_outside_of()
    {
        // The builtin word-level tokenizer: BOS + 9 words = 10 tokens, BOS + 3 words = 4.
        string err = OneLineError(CliRunner.Run("model", "logit-attrs", "--model", "builtin", "--prompt", Prompt, "--prompt", "Tom saw Anna",
            "--answer", "Tom,Anna", "--ablate-head", "0.1", "--ablate-positions", "0,6"));
        Assert.Contains("--ablate-positions 6: --prompt 2 of 2 ('Tom saw Anna') has 4 tokens (positions 0..3, or -4..-1 from its end)", err);
        Ok(CliRunner.Run("model", "logit-attrs", "--model", "builtin", "--prompt", Prompt, "--prompt", "Tom saw Anna",
            "--answer", "Tom,Anna", "--ablate-head", "0.1", "--ablate-positions", "0,-4"));
    }

    [Fact]
    public void Mean_over_and_input_ids_outside_the_vocabulary_or_empty_are_named_with_their_file()
    {
        string big = Tokens("big.safetensors", [1, 2, 99999, 3], 1, 4);
        string err = OneLineError(CliRunner.Run("model", "logit-attrs", "--model", "builtin", "--prompt", Prompt, "--answer", "Tom,Anna",
            "--ablate-head", "0.1", "--ablate-head-mode", "mean", "--mean-over", big));
        Assert.Contains($"--mean-over {big}: token id 99999 is outside the model's vocabulary 0..310", err);

        string negative = Tokens("neg.safetensors", [1, -5, 2, 3], 1, 4);
        Assert.Contains($"--input {negative}: token id -5 is outside the model's vocabulary 0..310",
            OneLineError(CliRunner.Run("model", "run", "--model", "builtin", "--input", negative, "--out", P("o.safetensors"))));
        Assert.False(File.Exists(P("o.safetensors")));

        string empty = Tokens("empty.safetensors", [], 1, 0);
        Assert.Contains($"{empty}: 'tokens' is empty ([1, 0])",
            OneLineError(CliRunner.Run("model", "run", "--model", "builtin", "--input", empty, "--out", P("o.safetensors"))));
        Assert.False(File.Exists(P("o.safetensors")));
    }

    [Fact]
    public void Model_run_names_an_input_of_one_token_per_row_for_a_loss()
    {
        string one = Tokens("one.safetensors", [5, 7], 2, 1);
        string metric = OneLineError(CliRunner.Run("model", "run", "--model", "builtin", "--input", one, "--metric", "loss"));
        Assert.Contains($"--input {one}: its rows have 1 token each ('tokens' [2, 1]), and --metric loss needs at least 2", metric);
        string perPosition = OneLineError(CliRunner.Run("model", "run", "--model", "builtin", "--input", one, "--loss-per-position"));
        Assert.Contains("and --loss-per-position needs at least 2", perPosition);
        string ablated = OneLineError(CliRunner.Run("model", "run", "--model", "builtin", "--input", one, "--ablate-head", "0.1"));
        Assert.Contains("and the loss (--ablate-head's default metric) needs at least 2", ablated);
        // A logit metric of one token is fine: it reads the last (only) position.
        Ok(CliRunner.Run("model", "run", "--model", "builtin", "--input", one, "--metric", "logit:5"));
    }

    [Fact]
    public void Model_run_refuses_an_out_over_its_mean_over_file()
    {
        string input = Tokens("in.safetensors", [1, 2, 3, 4], 1, 4);
        string meanOver = Tokens("mean.safetensors", [4, 3, 2, 1], 1, 4);
        byte[] before = File.ReadAllBytes(meanOver);
        string err = OneLineError(CliRunner.Run("model", "run", "--model", "builtin", "--input", input, "--ablate-head", "0.1",
            "--ablate-head-mode", "mean", "--mean-over", meanOver, "--out", meanOver));
        Assert.Contains($"--out {meanOver}: would replace --mean-over {meanOver}", err);
        Assert.Equal(before, File.ReadAllBytes(meanOver));
    }

    [Fact]
    public void Path_patch_refuses_a_sender_that_reaches_no_receiver_and_patch_a_json_folder_before_running()
    {
        string[] pair = ["--model", "builtin", "--clean", "Once there was a boy named Tom . Anna", "--corrupted", "Once there was a boy named Anna . Tom",
            "--metric", "logit-diff:Tom,Anna"];
        // Was a silent effect of exactly 0: a head's output reaches only later layers.
        string later = OneLineError(CliRunner.Run(["model", "path-patch", .. pair, "--sender", "2.0", "--receiver", "1.0"]));
        Assert.Contains("--sender L2H0: layer 2 is not before any --receiver (L1H0)", later);
        string same = OneLineError(CliRunner.Run(["model", "path-patch", .. pair, "--sender", "0.1", "--sender", "1.3", "--receiver", "1.0"]));
        Assert.Contains("--sender L1H3: layer 1 is not before any --receiver (L1H0)", same);
        // A sender before one receiver of several runs.
        Ok(CliRunner.Run(["model", "path-patch", .. pair, "--sender", "1.3", "--receiver", "1.0", "--receiver", "2.1"]));

        Directory.CreateDirectory(P("folder"));
        foreach (var command in new[] { "patch", "path-patch" })
        {
            string json = OneLineError(CliRunner.Run(["model", command, .. pair, "--json", P("folder")]));
            Assert.Contains($"--json {P("folder")}: is a folder", json);
            string both = OneLineError(CliRunner.Run(["model", command, .. pair, "--png", P("both.x"), "--json", P("both.x")]));
            Assert.Contains($"--png {P("both.x")}: the same file as --json", both);
            Assert.False(File.Exists(P("both.x")));
        }
    }

    [Fact]
    public void Induction_loss_past_memory_and_circuits_positions_without_w_pos_are_named()
    {
        // Was libtorch's allocation failure and its stack: 2 × 10⁶ tokens' attention scores are 10¹⁴ bytes.
        string memory = OneLineError(CliRunner.Run("model", "induction-loss", "--model", "builtin", "--subseq-len", "1000000", "--batch", "1"));
        Assert.Contains("--subseq-len 1000000", memory);
        Assert.Contains("attention scores alone need", memory);
        Assert.DoesNotContain("frame #", memory);
        // builtin has rotary positions: --positions was ignored.
        Assert.Contains("positions 8: builtin has no learned position embedding W_pos (rotary positions)",
            OneLineError(CliRunner.Run("model", "circuits", "--model", "builtin", "--positions", "8")));
    }
}
