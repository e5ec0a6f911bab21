namespace SaeSharp.Tests.Tokenizers;

/// <summary>Locates the vendored test data (tests/data, copied next to the test binaries) and makes temp folders.</summary>
internal static class TestPaths
{
    /// <summary>A path under tests/data (see tests/data/README.md for origin and licence of each file).</summary>
    public static string Data(params string[] parts)
    {
        string root = Path.Combine(AppContext.BaseDirectory, "data");
        if (!Directory.Exists(root))
            throw new DirectoryNotFoundException($"no vendored test data at {root} (tests/data is copied there by the build)");
        return Path.Combine([root, .. parts]);
    }

    private static readonly Lazy<SaeSharp.Tokenizers.BpeTokenizer> Gpt2Lazy = new(() =>
        SaeSharp.Tokenizers.Tokenizer.FromGpt2Files(Data("gpt2-tokenizer", "vocab.json"),
            Data("gpt2-tokenizer", "merges.txt")));

    /// <summary>GPT-2's tokenizer from tests/data/gpt2-tokenizer, loaded once for all tests.</summary>
    public static SaeSharp.Tokenizers.BpeTokenizer Gpt2 => Gpt2Lazy.Value;

    public static string TempDir()
    {
        string dir = Path.Combine(Path.GetTempPath(), "saesharp-tests", Guid.NewGuid().ToString("N"));
        Directory.CreateDirectory(dir);
        return dir;
    }
}
