namespace SaeSharp.Tests.Tokenizers;

/// <summary>Locates ../shared (beside the project or any ancestor of the test binaries) and makes temp folders.</summary>
internal static class TestPaths
{
    public static string Shared(params string[] parts)
    {
        for (var dir = new DirectoryInfo(AppContext.BaseDirectory); dir is not null; dir = dir.Parent)
        {
            string candidate = Path.Combine(dir.FullName, "shared");
            if (Directory.Exists(Path.Combine(candidate, "data")))
                return Path.Combine([candidate, .. parts]);
        }
        throw new DirectoryNotFoundException($"no 'shared/data' folder above {AppContext.BaseDirectory}");
    }

    private static readonly Lazy<SaeSharp.Tokenizers.ByteLevelBpeTokenizer> Gpt2Lazy = new(() =>
        SaeSharp.Tokenizers.Tokenizer.FromGpt2Files(Shared("data", "gpt2-tokenizer", "vocab.json"),
            Shared("data", "gpt2-tokenizer", "merges.txt")));

    /// <summary>GPT-2's tokenizer from ../shared/data/gpt2-tokenizer, loaded once for all tests.</summary>
    public static SaeSharp.Tokenizers.ByteLevelBpeTokenizer Gpt2 => Gpt2Lazy.Value;

    public static string TempDir()
    {
        string dir = Path.Combine(Path.GetTempPath(), "saesharp-tests", Guid.NewGuid().ToString("N"));
        Directory.CreateDirectory(dir);
        return dir;
    }
}
