using System.Text.RegularExpressions;

namespace SaeSharp.Tests;

/// <summary>
/// Issue #8 §4: the library's folders form layers and a folder uses only folders of lower layers (docs/architecture.md,
/// "Layers"), so that a lower folder never reaches up. Checked on the source: every <c>using SaeSharp.X</c> and every
/// <c>SaeSharp.X.</c> outside comments, per folder of src/SaeSharp.
/// </summary>
public class LibraryLayeringTests
{
    /// <summary>Lowest first. A folder may use the folders of any lower layer, none of its own or a higher one.</summary>
    internal static readonly string[][] Layers =
    [
        ["IO", "Kernels", "Tokenizers", "Rng"],
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

        var offenders = new List<string>();
        foreach (string folder in folders!)
        foreach (string file in Directory.EnumerateFiles(Path.Combine(lib, folder), "*.cs", SearchOption.AllDirectories))
        {
            var lines = File.ReadAllLines(file);
            for (int i = 0; i < lines.Length; i++)
            {
                string code = lines[i].TrimStart();
                if (code.StartsWith("//", StringComparison.Ordinal)) continue;
                foreach (Match m in Reference.Matches(code))
                {
                    string used = m.Groups[1].Value;
                    if (used == folder || !layerOf.TryGetValue(used, out int usedLayer)) continue;
                    if (usedLayer >= layerOf[folder])
                        offenders.Add($"{Path.GetRelativePath(lib, file)}:{i + 1}: {folder} (layer {layerOf[folder]}) uses {used} (layer {usedLayer})");
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
    }
}
