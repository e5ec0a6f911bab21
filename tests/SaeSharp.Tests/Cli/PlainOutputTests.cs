using SaeSharp.IO;
using SaeSharp.Tests.Analysis;
using SaeSharp.Tests.Tokenizers;
using static TorchSharp.torch;

namespace SaeSharp.Tests.Cli;

/// <summary>What <c>sae info</c>, <c>sae releases</c>, <c>sae eval</c>, <c>sae ablate</c>, <c>sae features</c> and <c>sae model info</c> print in a
/// pipe: plain lines, no box drawing, integers without digit grouping.</summary>
public sealed class PlainOutputTests : TempDirTestBase
{
    private static readonly string BatchTopK = TestPaths.Data("dictionary_learning", "BatchTopKSAE");

    /// <summary>A copy of the BatchTopKSAE test checkpoint in a folder named <paramref name="name"/>.</summary>
    private string CopyOfBatchTopK(string name)
    {
        string sae = Path.Combine(_dir, name);
        Directory.CreateDirectory(sae);
        foreach (var f in Directory.GetFiles(BatchTopK))
            File.Copy(f, Path.Combine(sae, Path.GetFileName(f)));
        return sae;
    }

    /// <summary>A text file of <paramref name="lines"/> lines of ten words of <see cref="AnalysisFixture.Words"/>.</summary>
    private string Corpus(string name, int lines, int seed)
    {
        string corpus = Path.Combine(_dir, name);
        var rng = new Random(seed);
        File.WriteAllLines(corpus, Enumerable.Range(0, lines).Select(_ =>
            string.Join(" ", Enumerable.Range(0, 10).Select(_ => AnalysisFixture.Words[rng.Next(AnalysisFixture.Words.Length)]))));
        return corpus;
    }

    /// <summary>In a pipe (a child process), <c>sae info</c> prints the SAE it was given, then <c>name&lt;TAB&gt;value</c>
    /// lines; a folder name with brackets (Spectre markup) is printed as it is.</summary>
    [Fact]
    public void Info_in_a_pipe_prints_name_tab_value_lines_and_any_path()
    {
        string sae = CopyOfBatchTopK("[v2] run");
        using var process = new CliProcess("info", sae);
        int exit = process.WaitForExit(TimeSpan.FromMinutes(2));
        var lines = process.Lines;
        Assert.True(exit == 0, string.Join("\n", lines));
        Assert.Equal(sae, lines[0]);
        Assert.Contains("architecture\tbatchtopk", lines);
        Assert.Contains("d_sae\t128", lines);
        Assert.Contains("hook_name\tblocks.3.hook_mlp_out", lines);
        Assert.DoesNotContain(lines, l => l.Contains('│') || l.Contains('─'));
    }

    /// <summary>In a pipe a tab or newline inside a cell is written <c>\t</c> / <c>\n</c> (README, "Output for people and
    /// programs"), so every line keeps its fields: an SAE folder whose name holds a tab and a newline is printed escaped
    /// on the title line, and every other line still has exactly one tab.</summary>
    [Fact]
    public void Info_in_a_pipe_escapes_a_tab_and_a_newline_in_a_cell()
    {
        string sae = CopyOfBatchTopK("tab\there\nrun");
        using var process = new CliProcess("info", sae);
        int exit = process.WaitForExit(TimeSpan.FromMinutes(2));
        var lines = process.Output;
        Assert.True(exit == 0, string.Join("\n", process.Lines));
        Assert.Equal(sae.Replace("\t", "\\t").Replace("\n", "\\n"), lines[0]);
        Assert.All(lines.Skip(1), l => Assert.Single(l, c => c == '\t'));
    }

    private static List<string> RunInAPipe(params string[] args)
    {
        using var process = new CliProcess(args);
        int exit = process.WaitForExit(TimeSpan.FromMinutes(3));
        var lines = process.Lines.ToList();
        Assert.True(exit == 0, string.Join("\n", lines));
        return lines;
    }


    /// <summary>In a pipe, integers in name/value lines are plain digits (a program reads them), not "8,352".
    /// A BatchTopKSAE with d_in 32, d_sae 128 has W_enc, W_dec (32·128 each), b_enc (128), b_dec (32).</summary>
    [Fact]
    public void Info_in_a_pipe_prints_the_parameter_count_without_grouping() =>
        Assert.Contains($"parameters\t{2 * 32 * 128 + 128 + 32}", RunInAPipe("info", BatchTopK));

    [Fact]
    public void Eval_in_a_pipe_prints_the_row_count_without_grouping()
    {
        string acts = Path.Combine(_dir, "acts.safetensors");
        SafeTensors.Save(acts, new Dictionary<string, Tensor> { ["activations"] = randn(1500, 32, generator: new Generator(3)) });
        Assert.Contains("rows\t1500", RunInAPipe("eval", "--sae", BatchTopK, "--activations", acts));
    }

    /// <summary>sae eval in a model, sae ablate and sae features over 2048 tokens (128 windows of 16): the token and position
    /// counts; sae model info's "parameters: N".</summary>
    [Fact]
    public void Model_eval_ablate_features_and_model_info_in_a_pipe_print_counts_without_grouping()
    {
        using var fx = new AnalysisFixture();
        string corpus = Corpus("corpus.txt", 800, seed: 4);
        var failures = new List<string>();
        var inModel = RunInAPipe("eval", "--sae", fx.SaeDir, "--model", fx.ModelDir, "--dataset", corpus, "--tokens", "2048", "--context-size", "16");
        if (!inModel.Any(l => l.StartsWith("% alive over 2048 tokens\t", StringComparison.Ordinal))) failures.Add("eval: " + string.Join(" | ", inModel));
        var ablate = RunInAPipe("ablate", "--model", fx.ModelDir, "--sae", fx.SaeDir, "--features", "2", "--dataset", corpus,
            "--tokens", "2048", "--context-size", "16");
        if (!ablate.Contains("positions\t2048")) failures.Add("ablate: " + string.Join(" | ", ablate.Where(l => l.Contains("positions"))));
        var features = RunInAPipe("features", "--sae", fx.SaeDir, "--model", fx.ModelDir, "--dataset", corpus, "--tokens", "2048",
            "--context-size", "16", "--out", Path.Combine(_dir, "features"));
        if (!features.Any(l => System.Text.RegularExpressions.Regex.IsMatch(l, @"^[0-9]+ features over 2048 tokens \([0-9]+ never fired\)")))
            failures.Add("features: " + string.Join(" | ", features));
        var model = RunInAPipe("model", "info", "--model", fx.ModelDir);
        if (!model.Any(l => System.Text.RegularExpressions.Regex.IsMatch(l, @"^parameters: [0-9]{4,}$")))
            failures.Add("model info: " + string.Join(" | ", model.Where(l => l.StartsWith("parameters"))));
        Assert.True(failures.Count == 0, string.Join("\n", failures));
    }

    /// <summary>sae features asked for more tokens than the dataset holds says so on stderr: 30 lines of ten words give
    /// fewer than 30 windows of 16 (each window 15 words after BOS, the lines concatenated), far from the 4096 tokens (256
    /// windows) asked; the summary line counts the windows' tokens, 16 each.</summary>
    [Fact]
    public void Features_on_a_dataset_shorter_than_tokens_notes_where_it_ran_out()
    {
        using var fx = new AnalysisFixture();
        string corpus = Corpus("short.txt", 30, seed: 6);
        using var process = new CliProcess("features", "--sae", fx.SaeDir, "--model", fx.ModelDir, "--dataset", corpus, "--tokens", "4096",
            "--context-size", "16", "--out", Path.Combine(_dir, "features-short"));
        Assert.True(process.WaitForExit(TimeSpan.FromMinutes(3)) == 0, string.Join("\n", process.Lines));
        var note = Assert.Single(process.Errors, l => l.StartsWith("note: the dataset ran out after ", StringComparison.Ordinal));
        var m = System.Text.RegularExpressions.Regex.Match(note, @"after ([0-9]+) context windows \(([0-9]+) tokens; --tokens 4096\)");
        Assert.True(m.Success, note);
        int windows = int.Parse(m.Groups[1].Value);
        Assert.InRange(windows, 1, 29);
        Assert.Equal(16 * windows, int.Parse(m.Groups[2].Value));
        Assert.Contains(process.Output, l => l.Contains($" features over {16 * windows} tokens "));
    }

    /// <summary>sae eval --model without --tokens evaluates 16,384 tokens (as its help and the README say), on a dataset of
    /// more: 1024 windows of 16.</summary>
    [Fact]
    public void Eval_in_a_model_defaults_to_16384_tokens()
    {
        using var fx = new AnalysisFixture();
        string corpus = Corpus("long.txt", 2400, seed: 5);
        string json = Path.Combine(_dir, "eval-default.json");
        RunInAPipe("eval", "--sae", fx.SaeDir, "--model", fx.ModelDir, "--dataset", corpus, "--context-size", "16", "--json", json);
        var stats = System.Text.Json.Nodes.JsonNode.Parse(File.ReadAllText(json))!["token_stats"]!;
        Assert.Equal(16384, stats["total_tokens_eval_reconstruction"]!.GetValue<long>());
    }

    /// <summary>In a pipe, the rows of <c>sae releases</c> go to stdout and its title (a release's repo, model and format;
    /// how many releases match, even none) to stderr.</summary>
    [Fact]
    public void Releases_in_a_pipe_prints_its_title_on_stderr()
    {
        var (exit, output, err) = CliRunner.Run("releases", "gpt2-small-res-jb", "--search", "blocks.7");
        Assert.True(exit == 0, err);
        if (!Console.IsOutputRedirected) return; // a Spectre table with its title
        Assert.StartsWith("sae_id\thook\tpath\tneuronpedia\tl0", output);
        Assert.Contains("gpt2-small-res-jb: jbloom/GPT2-Small-SAEs-Reformatted (gpt2-small, saelens format)", err);
        // --search also matches a hook that the SAE ids do not spell (Gemma Scope's ids are layer_N/width_.../...).
        (exit, output, err) = CliRunner.Run("releases", "gemma-scope-2b-pt-res-canonical", "--search", "blocks.12.hook_resid_post");
        Assert.True(exit == 0, err);
        var rows = output.Split('\n', StringSplitOptions.RemoveEmptyEntries).Skip(1).ToList();
        Assert.NotEmpty(rows);
        Assert.All(rows, r => Assert.Equal("blocks.12.hook_resid_post", r.Split('\t')[1]));
        // A --model no release has is an error naming it (nothing on stdout for the pipe to read as a table).
        (exit, output, err) = CliRunner.Run("releases", "--model", "no-such-model");
        Assert.NotEqual(0, exit);
        Assert.Equal("", output.Trim());
        Assert.StartsWith("error: --model no-such-model: no release is of a model whose name contains it", err);
    }
}
