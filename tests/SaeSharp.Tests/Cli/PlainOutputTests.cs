using SaeSharp.Tests.Tokenizers;

namespace SaeSharp.Tests.Cli;

/// <summary>What <c>sae info</c> and <c>sae releases</c> print in a pipe: plain lines, no box drawing.</summary>
public sealed class PlainOutputTests : IDisposable
{
    private readonly string _dir = TestPaths.TempDir();

    public void Dispose()
    {
        try { Directory.Delete(_dir, recursive: true); } catch (IOException) { /* best effort */ }
    }

    /// <summary>In a pipe (a child process), <c>sae info</c> prints the SAE it was given, then <c>name&lt;TAB&gt;value</c>
    /// lines; a folder name with brackets (Spectre markup) is printed as it is.</summary>
    [Fact]
    public void Info_in_a_pipe_prints_name_tab_value_lines_and_any_path()
    {
        string sae = Path.Combine(_dir, "[v2] run");
        Directory.CreateDirectory(sae);
        foreach (var f in Directory.GetFiles(TestPaths.Data("dictionary_learning", "BatchTopKSAE")))
            File.Copy(f, Path.Combine(sae, Path.GetFileName(f)));
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
        (exit, output, err) = CliRunner.Run("releases", "--model", "no-such-model");
        Assert.True(exit == 0, err);
        Assert.Equal("release\trepo\tmodel\tformat\tsaes", output.Trim());
        Assert.StartsWith("0 releases", err);
    }
}
