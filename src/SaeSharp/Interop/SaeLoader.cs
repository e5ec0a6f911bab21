using SaeSharp.Saes;

namespace SaeSharp.Interop;

/// <summary>Loads an SAE from any supported on-disk format, detected from the files present.</summary>
public static class SaeLoader
{
    /// <summary>The formats tried, in order: a name and a probe of the path.</summary>
    private static readonly List<(string Name, Func<string, bool> Detect, Func<string, Sae> Load)> Formats =
    [
        ("SAELens", SaeLensFormat.IsSaeLensFolder, SaeLensFormat.Load),
        ("dictionary_learning", DictionaryLearning.IsDictionaryLearningPath, DictionaryLearning.Load),
        ("Gemma Scope", GemmaScope.IsGemmaScopePath, GemmaScope.Load),
        ("sparsify", Sparsify.IsSparsifyPath, Sparsify.Load),
        ("OpenAI sparse_autoencoder", OpenAiSae.IsOpenAiCheckpoint, OpenAiSae.Load),
    ];

    public static Sae Load(string path)
    {
        if (!Directory.Exists(path) && !File.Exists(path))
            throw new SaeSharpException($"{path}: no such SAE file or folder");
        foreach (var (_, detect, load) in Formats)
            if (detect(path)) return load(path);
        throw new SaeSharpException($"{path}: not a recognised SAE (looked for: {string.Join(", ", Formats.Select(f => f.Name))})");
    }

    /// <summary>The name of the format <see cref="Load"/> would use, or null.</summary>
    public static string? DetectFormat(string path) => Formats.FirstOrDefault(f => f.Detect(path)).Name;
}
