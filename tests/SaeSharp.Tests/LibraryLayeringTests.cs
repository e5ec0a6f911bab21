using System.Text.RegularExpressions;

namespace SaeSharp.Tests;

/// <summary>
/// Issue #8 §4: the library's folders form layers and a folder uses only folders of lower layers (docs/architecture.md,
/// "Layers"), so that a lower folder never reaches up. Checked on the source: every <c>using SaeSharp.X</c>, every
/// <c>SaeSharp.X.</c> and every <c>X.Type</c> of a type declared in X, outside comments and strings, per folder of
/// src/SaeSharp.
/// </summary>
public class LibraryLayeringTests
{
    /// <summary>Lowest first. A folder may use the folders of any lower layer, none of its own or a higher one.</summary>
    internal static readonly string[][] Layers =
    [
        ["IO"],
        ["Kernels", "Tokenizers", "Rng"],
        ["Saes", "Plots", "Synthetic"],
        ["Hooks", "Hub"],
        ["Models", "Data", "Interop"],
        ["Activations"],
        ["Corpus", "Evaluation", "Interventions"],
        ["Training", "Analysis"],
        ["LanguageModels"],
        ["Pipelines"],
    ];

    static readonly Regex Reference = new(@"\bSaeSharp\.([A-Z][A-Za-z]+)\b(?=\s*;|\.)", RegexOptions.CultureInvariant);

    /// <summary><c>Folder.Type</c> without <c>SaeSharp.</c>: code in a namespace under SaeSharp reaches a sibling
    /// folder this way with no using. Counted only when Type is declared in Folder (a property named like a folder, such
    /// as an SAE's <c>Training</c> options, is not a reference).</summary>
    static readonly Regex ShortReference = new(@"(?<![\w.])([A-Z][A-Za-z]+)\.([A-Z]\w*)", RegexOptions.CultureInvariant);

    static readonly Regex Declaration = new(@"\b(?:class|record|struct|interface|enum)\s+([A-Z]\w*)", RegexOptions.CultureInvariant);

    /// <summary>String literals (their text is not code) and a trailing // comment.</summary>
    static readonly Regex NotCode = new(@"@?\$?""(?:[^""\\]|\\.)*""|//.*$", RegexOptions.CultureInvariant);

    internal static string RepositoryRoot()
    {
        for (var dir = new DirectoryInfo(AppContext.BaseDirectory); dir is not null; dir = dir.Parent)
            if (File.Exists(Path.Combine(dir.FullName, "SaeSharp.sln"))) return dir.FullName;
        throw new DirectoryNotFoundException($"no SaeSharp.sln above {AppContext.BaseDirectory}");
    }

    [Fact]
    public void Every_folder_uses_only_folders_of_lower_layers()
    {
        string lib = Path.Combine(RepositoryRoot(), "src", "SaeSharp");
        var layerOf = Layers.SelectMany((names, i) => names.Select(n => (n, i))).ToDictionary(p => p.n, p => p.i);
        var folders = Directory.GetDirectories(lib).Select(Path.GetFileName).Where(n => n is not ("bin" or "obj")).ToList();
        foreach (var f in folders) Assert.True(layerOf.ContainsKey(f!), $"folder {f} has no layer: give it one here and in docs/architecture.md");

        var typesOf = folders.ToDictionary(f => f!, f => Directory.EnumerateFiles(Path.Combine(lib, f!), "*.cs", SearchOption.AllDirectories)
            .SelectMany(file => Declaration.Matches(File.ReadAllText(file)).Select(m => m.Groups[1].Value)).ToHashSet());
        var offenders = new List<string>();
        foreach (string folder in folders!)
        foreach (string file in Directory.EnumerateFiles(Path.Combine(lib, folder), "*.cs", SearchOption.AllDirectories))
        {
            var lines = File.ReadAllLines(file);
            for (int i = 0; i < lines.Length; i++)
            {
                string code = lines[i].TrimStart();
                if (code.StartsWith("//", StringComparison.Ordinal)) continue;
                var used = Reference.Matches(code).Select(m => m.Groups[1].Value)
                    .Concat(ShortReference.Matches(NotCode.Replace(code, "")).Where(m => typesOf.TryGetValue(m.Groups[1].Value, out var types)
                        && types.Contains(m.Groups[2].Value)).Select(m => m.Groups[1].Value));
                foreach (string u in used.Distinct())
                {
                    if (u == folder || !layerOf.TryGetValue(u, out int usedLayer)) continue;
                    if (usedLayer >= layerOf[folder])
                        offenders.Add($"{Path.GetRelativePath(lib, file)}:{i + 1}: {folder} (layer {layerOf[folder]}) uses {u} (layer {usedLayer})");
                }
            }
        }
        Assert.True(offenders.Count == 0, "upward or sideways references:\n" + string.Join("\n", offenders));
    }

    [Fact]
    public void The_check_sees_an_upward_reference()
    {
        Assert.Equal("Interventions", Reference.Match("using SaeSharp.Interventions;").Groups[1].Value);
        Assert.Equal("Pipelines", Reference.Match("var x = SaeSharp.Pipelines.ModelForSae.Load(a, b);").Groups[1].Value);
        Assert.DoesNotMatch(Reference, "using SaeSharpX;");
        // Inside namespace SaeSharp.Hub, "Interop.SaeLoader.X" needs no using and no SaeSharp. prefix.
        Assert.Equal("Interop", ShortReference.Match("throw Interop.SaeLoader.HoldsSaes(spec);").Groups[1].Value);
        Assert.DoesNotMatch(ShortReference, NotCode.Replace("var m = \"see Interop.SaeLoader\"; // Interop.SaeLoader", ""));
    }
}
