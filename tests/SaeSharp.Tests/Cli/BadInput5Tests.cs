using SaeSharp.IO;
using static TorchSharp.torch;

namespace SaeSharp.Tests.Cli;

/// <summary>
/// Bad input to the newest model commands (<c>head-scores</c>, <c>attention</c>, <c>circuits</c>, <c>tokenize</c>,
/// <c>patch</c>, <c>path-patch</c>) on the builtin model (311 token ids, 3 layers of 4 heads, a word-level tokenizer: BOS +
/// one token a word): one line naming the flag and the file or value, and no output written.
/// </summary>
public class BadInput5Tests : TinyGpt2CliTestBase
{
    private string Tokens(string name, long[] ids, params long[] shape)
    {
        using var t = tensor(ids).reshape(shape);
        SafeTensors.Save(P(name), new Dictionary<string, Tensor> { ["tokens"] = t });
        return P(name);
    }

    private string Json(string name, string text)
    {
        File.WriteAllText(P(name), text);
        return P(name);
    }

    [Fact]
    public void Head_scores_names_the_pattern_file_above_its_diagonal_and_the_prompt_of_another_length()
    {
        // Was "head scores: the detection pattern is not lower triangular", naming neither the file nor the entry.
        string upper = Json("upper.json", "[[1, 0, 0], [1, 1, 0.5], [0, 1, 1]]");
        string err = OneLineError(CliRunner.Run("model", "head-scores", "--model", "builtin", "--prompt", "Tom saw", "--pattern", upper, "--json", P("s.json")));
        Assert.Contains($"--pattern {upper}: row 1 column 2 is 0.5, above the diagonal; a detection pattern is lower triangular", err);
        Assert.False(File.Exists(P("s.json")));

        // "Tom saw" is BOS + 2 = 3 tokens, "Tom saw Anna" 4: was "head scores: a detection pattern of shape [3, 3] for sequences of 4 tokens".
        string three = Json("p3.json", "[[1, 0, 0], [1, 1, 0], [0, 1, 1]]");
        string other = OneLineError(CliRunner.Run("model", "head-scores", "--model", "builtin", "--prompt", "Tom saw", "--prompt", "Tom saw Anna",
            "--pattern", three, "--json", P("s.json")));
        Assert.Contains($"--pattern {three}: a [3, 3] pattern for --prompt 2 of 2 ('Tom saw Anna') of 4 tokens", other);
        Assert.False(File.Exists(P("s.json")));
        Ok(CliRunner.Run("model", "head-scores", "--model", "builtin", "--prompt", "Tom saw", "--prompt", "Anna ran", "--pattern", three, "--json", P("s.json")));
        Assert.True(File.Exists(P("s.json")));

        Directory.CreateDirectory(P("folder"));
        Assert.Contains($"--pattern {P("folder")}: is a folder; give a file",
            OneLineError(CliRunner.Run("model", "head-scores", "--model", "builtin", "--prompt", "Tom saw", "--pattern", P("folder"))));
    }

    [Fact]
    public void Head_scores_refuses_a_json_onto_one_of_its_png_files()
    {
        // --png out.png writes out.previous_token_head.png, ...: the JSON was written over that heatmap.
        string png = P("out.png"), clash = P("out.previous_token_head.png");
        string err = OneLineError(CliRunner.Run("model", "head-scores", "--model", "builtin", "--prompt", "Tom saw Anna", "--png", png, "--json", clash));
        Assert.Contains($"--json {clash}: the same file as --png", err);
        Assert.Empty(Directory.GetFiles(P(), "out*"));

        // patch --act block-every --png out.png writes out.resid_pre.png, out.attn_out.png, out.mlp_out.png.
        string part = P("out.attn_out.png");
        err = OneLineError(CliRunner.Run("model", "patch", "--model", "builtin", "--clean", "Tom saw Anna", "--corrupted", "Anna saw Tom",
            "--metric", "loss", "--act", "block-every", "--png", png, "--json", part));
        Assert.Contains($"--png {part}: the same file as --json", err);
        Assert.Empty(Directory.GetFiles(P(), "out*"));
    }

    [Fact]
    public void Attention_and_head_scores_name_the_input_file_of_an_id_outside_the_vocabulary()
    {
        // Was "token id 99999 is outside the vocabulary 0..310 of builtin", the file unnamed.
        string big = Tokens("big.safetensors", [1, 2, 99999, 4], 1, 4);
        Assert.Contains($"--input {big}: token id 99999 is outside the model's vocabulary 0..310",
            OneLineError(CliRunner.Run("model", "head-scores", "--model", "builtin", "--input", big, "--json", P("s.json"))));
        Assert.False(File.Exists(P("s.json")));
        string negative = Tokens("neg.safetensors", [1, -2, 3, 4], 1, 4);
        Assert.Contains($"--input {negative}: token id -2 is outside the model's vocabulary 0..310",
            OneLineError(CliRunner.Run("model", "attention", "--model", "builtin", "--input", negative, "--layer", "0", "--html", P("a.html"))));
        Assert.False(File.Exists(P("a.html")));
    }

    [Fact]
    public void Circuits_names_a_layer_outside_the_model_as_layer()
    {
        // Was "QK circuit scores: layer 3 is outside 0..2", the flag unnamed.
        foreach (var layer in new[] { "3", "-1" })
        {
            string err = OneLineError(CliRunner.Run("model", "circuits", "--model", "builtin", "--layer", "0", "--layer", layer, "--json", P("c.json")));
            Assert.Contains($"--layer {layer}: the model has layers 0..2", err);
            Assert.False(File.Exists(P("c.json")));
        }
    }

    [Fact]
    public void Tokenize_names_a_missing_file_or_a_folder_given_as_file()
    {
        // Were .NET's "Could not find file '...'" and "Access to the path '...' is denied."
        Assert.Contains($"--file {P("none.txt")}: no such file",
            OneLineError(CliRunner.Run("model", "tokenize", "--model", "builtin", "--file", P("none.txt"))));
        Directory.CreateDirectory(P("folder"));
        Assert.Contains($"--file {P("folder")}: is a folder; give a file",
            OneLineError(CliRunner.Run("model", "tokenize", "--model", "builtin", "--file", P("folder"), "--find", "Tom")));
    }

    [Fact]
    public void Patch_and_path_patch_refuse_a_top_that_lists_nothing()
    {
        string[] pair = ["--model", "builtin", "--clean", "Once there was a boy named Tom . Anna", "--corrupted", "Once there was a boy named Anna . Tom",
            "--metric", "logit-diff:Tom,Anna"];
        // resid_pre prints its whole layer × position table: --top was ignored.
        string patch = OneLineError(CliRunner.Run(["model", "patch", .. pair, "--top", "3", "--json", P("p.json")]));
        Assert.Contains("--top: how many heads are listed; --act resid_pre prints every layer × position", patch);
        Assert.False(File.Exists(P("p.json")));
        // One --sender gives one number: --top was ignored.
        string path = OneLineError(CliRunner.Run(["model", "path-patch", .. pair, "--sender", "0.1", "--top", "3", "--json", P("p.json")]));
        Assert.Contains("--top: how many sender heads are listed when every head is sent in turn", path);
        Assert.False(File.Exists(P("p.json")));
        Ok(CliRunner.Run(["model", "patch", .. pair, "--act", "z", "--top", "3"]));
    }

    [Fact]
    public void A_prompt_past_learned_positions_is_named_by_its_option()
    {
        // The tiny GPT-2 has 64 rows of W_pos; BOS + "the cat" × 50 is 101 tokens.
        string model = Model(), text = string.Join(' ', Enumerable.Repeat("the cat", 50));
        // Was "sequence of 101 tokens exceeds the context length n_ctx=64 of tiny-gpt2": which of the prompts?
        string mean = OneLineError(CliRunner.Run("model", "run", "--model", model, "--prompt", "the cat", "--ablate-head", "0.1",
            "--ablate-head-mode", "mean", "--mean-prompt", text, "--out", P("o.safetensors")));
        Assert.Contains("--mean-prompt \"the cat the cat", mean);
        Assert.Contains("more than the context window of tiny-gpt2 (n_ctx=64, learned positions)", mean);
        Assert.False(File.Exists(P("o.safetensors")));
        string corrupted = OneLineError(CliRunner.Run("model", "patch", "--model", model, "--clean", "the cat", "--corrupted", text,
            "--metric", "logit-diff: cat, the", "--json", P("p.json")));
        Assert.StartsWith("error: --corrupted \"the cat the cat", corrupted);
        Assert.False(File.Exists(P("p.json")));
        Assert.StartsWith("error: --prompt \"the cat",
            OneLineError(CliRunner.Run("model", "attention", "--model", model, "--prompt", text, "--layer", "0", "--html", P("a.html"))));
        Assert.False(File.Exists(P("a.html")));
        // BOS + "the cat" × 31 is 63 tokens: it fits.
        Ok(CliRunner.Run("model", "attention", "--model", model, "--prompt", string.Join(' ', Enumerable.Repeat("the cat", 31)), "--layer", "0", "--html", P("a.html")));
    }

    [Fact]
    public void An_output_file_given_as_a_folder_path_is_refused_before_the_work()
    {
        // A path ending in '/' passed the checks and failed after the work with .NET's "Could not find a part of the path".
        string folder = P("new") + Path.DirectorySeparatorChar;
        Assert.Contains($"--json {folder}: ends in '{Path.DirectorySeparatorChar}', a folder path; give a file path",
            OneLineError(CliRunner.Run("model", "circuits", "--model", "builtin", "--json", folder)));
        Assert.Contains($"--html {folder}: ends in",
            OneLineError(CliRunner.Run("model", "attention", "--model", "builtin", "--prompt", "Tom saw", "--layer", "0", "--html", folder)));
        // head-scores --png FILE.png writes FILE.<head name>.png: here hidden files .induction_head.png, ... in the folder.
        Assert.Contains($"--png {folder}: ends in",
            OneLineError(CliRunner.Run("model", "head-scores", "--model", "builtin", "--prompt", "Tom saw", "--png", folder)));
        Assert.False(Directory.Exists(folder));
    }
}
