using SaeSharp.Models;

namespace SaeSharp.Tests.Cli;

/// <summary>CLI tests on a tiny GPT-2 with GPT-2's real tokenizer (no SEP token; " the" = 262, "." = 13) and a text file of
/// 300 random lines of common words, in a temporary folder deleted after the test.</summary>
public abstract class TinyGpt2CliTestBase : CliTempDirTestBase
{
    protected string Model()
    {
        var dir = TinyModels.WriteGpt2(P("gpt2"), seed: 9, nLayer: 2, nEmbd: 16, nHead: 2, vocab: 50257, nPositions: 64);
        foreach (var f in new[] { "vocab.json", "merges.txt" })
            File.Copy(Tokenizers.TestPaths.Data("gpt2-tokenizer", f), Path.Combine(dir, f));
        return dir;
    }

    protected string Dataset()
    {
        var rng = new Random(1);
        string[] words = ["the", "cat", "sat", "on", "a", "mat", "and", "dog", "ran", "far", "away", "from", "home", "in", "rain"];
        File.WriteAllLines(P("data.txt"), Enumerable.Range(0, 300).Select(_ => string.Join(' ', Enumerable.Range(0, 12).Select(_ => words[rng.Next(words.Length)])) + "."));
        return P("data.txt");
    }

    /// <summary>The stderr of a run that failed with exit code 1 and one line "error: ...".</summary>
    protected static string OneLineError((int Exit, string Out, string Err) r)
    {
        Assert.True(r.Exit == 1, $"exit {r.Exit}; stdout: {r.Out}; stderr: {r.Err}");
        string err = r.Err.Trim();
        Assert.StartsWith("error: ", err);
        Assert.DoesNotContain('\n', err);
        return err;
    }

    protected static void Ok((int Exit, string Out, string Err) r) => Assert.True(r.Exit == 0, $"exit {r.Exit}; stdout: {r.Out}; stderr: {r.Err}");
}
