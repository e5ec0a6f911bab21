using SaeSharp.Analysis;
using SaeSharp.Interventions;
using SaeSharp.LanguageModels;
using SaeSharp.Tokenizers;

namespace SaeSharp.Tests.Cli;

/// <summary>Prompts and answer tokens that cannot mean what was asked, on the built-in model (a word-level vocabulary
/// with <c>&lt;unk&gt;</c>): a logit difference of one token with itself, a prompt that gives no token, words the
/// vocabulary does not hold (noted, not silently read as <c>&lt;unk&gt;</c>).</summary>
public class PromptBadInputTests : CliTempDirTestBase
{
    private static readonly ITextTokenizer Builtin = Tokenizer.FromFolder(BuiltinModel.Folder);

    /// <summary>The id of a word the built-in vocabulary holds as one token (checked, so that the tests below rest on it).</summary>
    private static int Id(string text)
    {
        var ids = Builtin.Encode(text);
        Assert.Single(ids);
        Assert.NotEqual(Builtin.UnkTokenId, ids[0]);
        return ids[0];
    }

    private static string Error((int Exit, string Out, string Err) r)
    {
        Assert.True(r.Exit == 1, $"exit {r.Exit}; stdout: {r.Out}; stderr: {r.Err}");
        return r.Err.ReplaceLineEndings(" ");
    }

    /// <summary>logit A − logit A is 0 whatever the run: refused wherever a logit difference is given, by string, by id,
    /// or one of each, naming the option and the value as given.</summary>
    [Fact]
    public void A_logit_difference_of_a_token_with_itself_is_refused()
    {
        int dog = Id(" dog");
        Assert.Contains($"--answer ' dog, dog': A and B are the same token (id {dog})",
            Error(CliRunner.Run("model", "logit-attrs", "--model", "builtin", "--prompt", "the cat", "--answer", " dog, dog")));
        Assert.Contains($"metric 'logit-diff: dog,{dog}': A and B are the same token (id {dog})",
            Error(CliRunner.Run("model", "patch", "--model", "builtin", "--clean", "the cat", "--corrupted", "the dog", "--metric", $"logit-diff: dog,{dog}")));
        Assert.Contains("metric 'logit-diff:5,5': A and B are the same token (id 5)",
            Assert.Throws<SaeSharpException>(() => AttributionMetric.Parse("logit-diff:5,5")).Message);
        Assert.Equal(AttributionMetric.LogitDiff(5, 6), AttributionMetric.Parse("logit-diff:5,6"));
    }

    /// <summary>An empty prompt without BOS gives no token: an error naming the option and the prompt, nothing written. With
    /// BOS it runs on BOS alone, as TransformerLens's <c>model("")</c>.</summary>
    [Fact]
    public void A_prompt_that_gives_no_token_is_named_by_its_option()
    {
        Assert.Contains("--prompt \"\": gives no token",
            Error(CliRunner.Run("model", "run", "--model", "builtin", "--prompt", "", "--no-prepend-bos", "--out", P("run.safetensors"))));
        Assert.False(File.Exists(P("run.safetensors")));
        Assert.Contains("--prompt \"\": gives no token", Error(CliRunner.Run("model", "logit-attrs", "--model", "builtin",
            "--prompt", "the cat", "--prompt", "", "--answer", " cat, dog", "--no-prepend-bos")));
        Assert.Contains("--clean \"\": gives no token", Error(CliRunner.Run("model", "patch", "--model", "builtin",
            "--clean", "", "--corrupted", "", "--metric", "logit: dog", "--no-prepend-bos")));
        Assert.Contains("--prompt \"\": gives no token", Error(CliRunner.Run("model", "head-scores", "--model", "builtin",
            "--prompt", "", "--no-prepend-bos")));
        Assert.Contains("--prompt \"\": gives no token", Error(CliRunner.Run("model", "attention", "--model", "builtin",
            "--prompt", "", "--layer", "0", "--html", P("a.html"), "--no-prepend-bos")));
        Assert.False(File.Exists(P("a.html")));
        var (exit, output, err) = CliRunner.Run("model", "run", "--model", "builtin", "--prompt", "", "--out", P("bos.safetensors"));
        Assert.True(exit == 0, err);
        Assert.Contains("tokens [1, 1]", output);
    }

    /// <summary>With BOS an empty prompt is one token, too few for a next-token loss (which predicts token 1 from token 0) or
    /// for head scores (attention to earlier tokens): refused before any run, naming the option, the prompt and what needs
    /// two tokens, nothing written. Before, the library's "the loss metric needs at least 2 tokens" named no option.</summary>
    [Fact]
    public void A_prompt_of_bos_alone_is_named_where_two_tokens_are_needed()
    {
        Assert.Contains("--prompt \"\": gives 1 token, and --loss-per-position needs at least 2",
            Error(CliRunner.Run("model", "run", "--model", "builtin", "--prompt", "", "--loss-per-position", "--out", P("run.safetensors"))));
        Assert.False(File.Exists(P("run.safetensors")));
        Assert.Contains("--prompt \"\": gives 1 token, and the loss (--ablate-head's default metric) needs at least 2",
            Error(CliRunner.Run("model", "run", "--model", "builtin", "--prompt", "", "--ablate-head", "0.1")));
        Assert.Contains("--prompt \"\": gives 1 token, and --metric loss needs at least 2",
            Error(CliRunner.Run("model", "run", "--model", "builtin", "--prompt", "the cat", "--prompt", "", "--metric", "loss")));
        // A per-prompt metric other than loss takes one token; a loss and a logit are not averaged into a "mean" row.
        var (exit, output, err) = CliRunner.Run("model", "run", "--model", "builtin", "--prompt", "the cat", "--prompt", "", "--metric", "loss", "--metric", "logit:cat");
        Assert.True(exit == 0, err);
        Assert.Contains("logit:", output);
        Assert.DoesNotContain("mean", output);
        Assert.Contains("--clean \"\": gives 1 token, and --metric loss needs at least 2",
            Error(CliRunner.Run("model", "patch", "--model", "builtin", "--clean", "", "--corrupted", "", "--metric", "loss")));
        Assert.Contains("--prompt \"\": gives 1 token, and detect_head needs at least 2",
            Error(CliRunner.Run("model", "head-scores", "--model", "builtin", "--prompt", "")));
        using (var sae = Interventions.InterventionTests.RandomSae("blocks.1.hook_resid_post", 128, 32, 9)) SaeSharp.Interop.SaeLensFormat.Save(sae, P("sae"));
        Assert.Contains("--prompt \"\": gives 1 token, and comparing next-token losses clean and ablated needs at least 2",
            Error(CliRunner.Run("ablate", "--model", "builtin", "--sae", P("sae"), "--features", "1", "--prompt", "")));
    }

    /// <summary>Words the word-level vocabulary lacks become <c>&lt;unk&gt;</c>: the run goes on (as the tokenizer reads the
    /// text) with a note naming each such word once; known words, and <c>&lt;unk&gt;</c> written as such, give none.</summary>
    [Fact]
    public void Words_outside_the_vocabulary_are_noted()
    {
        int unk = Builtin.UnkTokenId!.Value;
        Assert.Equal([unk], Builtin.Encode("zzqx"));
        Assert.Equal([unk], Builtin.Encode("qqq"));
        Assert.Equal(["zzqx", "qqq"], Builtin.UnknownWords("the zzqx cat qqq zzqx <unk>"));
        Assert.Empty(Builtin.UnknownWords("the cat <unk>"));

        var (exit, _, err) = CliRunner.Run("model", "run", "--model", "builtin", "--prompt", "the zzqx cat qqq zzqx", "--out", P("a.safetensors"));
        Assert.True(exit == 0, err);
        Assert.Contains("note: --prompt: 'zzqx', 'qqq' not in the tokenizer's vocabulary: read as <unk>", err.ReplaceLineEndings(" "));
        (exit, _, err) = CliRunner.Run("model", "attention", "--model", "builtin", "--prompt", "the zzqx cat", "--layer", "0", "--html", P("att.html"));
        Assert.True(exit == 0, err);
        Assert.Contains("note: --prompt: 'zzqx' not in", err.ReplaceLineEndings(" "));
        (exit, _, err) = CliRunner.Run("model", "test-prompt", "--model", "builtin", "--prompt", "the zzqx", "--answer", "cat");
        Assert.True(exit == 0, err);
        Assert.Contains("note: --prompt: 'zzqx' not in", err.ReplaceLineEndings(" "));
        (exit, _, err) = CliRunner.Run("model", "run", "--model", "builtin", "--prompt", "the cat", "--out", P("b.safetensors"));
        Assert.True(exit == 0, err);
        Assert.DoesNotContain("note:", err);
    }

    /// <summary><c>--token-words</c>: a word of several tokens adds them all (noted with its tokens); a word the vocabulary
    /// lacks adds nothing, not <c>&lt;unk&gt;</c> (noted as left out).</summary>
    [Fact]
    public void Token_words_not_one_token_are_noted_and_unknown_ones_left_out()
    {
        int cat = Id(" cat"), dot = Id(".");
        var notes = new List<string>();
        var set = TokenSet.FromWords(Builtin, "w", ["cat", "zzqx", "cat."], notes);
        Assert.Equal([.. new[] { cat, dot }.Order()], set.TokenIds);
        Assert.Equal("token set 'w': 'zzqx' is not in the vocabulary, left out", notes[0]);
        Assert.Equal("token set 'w': ' cat.' is not one token: its 2 tokens \" cat\" \" .\" are in the set", notes[1]);
        Assert.Equal(2, notes.Count);
    }
}
