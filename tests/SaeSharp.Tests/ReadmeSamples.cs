using System.Text.RegularExpressions;

namespace SaeSharp.Tests;

/// <summary>
/// The README's C# blocks are test code. Each ```csharp block follows a comment
/// <c>&lt;!-- readme-sample NAME: ... --&gt;</c>, and some test file holds the region of that name between
/// <c>// readme-sample NAME begin</c> and <c>// readme-sample NAME end</c>: the block line for line (leading and
/// trailing blanks ignored) after the test's substitutions (paths to temp files, tiny models, toy sizes). The test that
/// runs a region calls <see cref="AssertBlockIsRegion"/>; <see cref="ReadmeSamplesTests"/> checks that every block is
/// marked and every marked block has its region. The README and the sample files are copied next to the binaries as
/// readme/ (SaeSharp.Tests.csproj).
/// </summary>
public static class ReadmeSamples
{
    private static string Folder => Path.Combine(AppContext.BaseDirectory, "readme");

    public static string Readme => File.ReadAllText(Path.Combine(Folder, "README.md"));

    /// <summary>The sample files copied beside the README: every *SampleTests.cs of the test project.</summary>
    public static IEnumerable<string> SampleFiles => Directory.EnumerateFiles(Folder, "*.cs");

    /// <summary>The marked names, in README order, with the block each marks (null: no ```csharp block follows it).</summary>
    public static IReadOnlyList<(string Name, string? Block)> Blocks()
    {
        string readme = Readme;
        var list = new List<(string, string?)>();
        foreach (Match m in Regex.Matches(readme, @"<!-- readme-sample ([\w-]+):"))
        {
            int open = readme.IndexOf("```", m.Index, StringComparison.Ordinal);
            string? block = null;
            if (open >= 0 && readme.AsSpan(open).StartsWith("```csharp\n"))
            {
                int start = open + "```csharp\n".Length;
                block = readme[start..readme.IndexOf("```", start, StringComparison.Ordinal)];
            }
            list.Add((m.Groups[1].Value, block));
        }
        return list;
    }

    /// <summary>The region <paramref name="name"/> of the sample files: its lines and the file's using directives.</summary>
    public static (IReadOnlyList<string> Lines, string Source)? Region(string name)
    {
        string begin = $"// readme-sample {name} " + "begin", end = $"// readme-sample {name} " + "end";
        foreach (var file in SampleFiles)
        {
            string source = File.ReadAllText(file);
            int b = source.IndexOf(begin, StringComparison.Ordinal);
            if (b < 0) continue;
            b += begin.Length;
            return (Lines(source[b..source.IndexOf(end, b, StringComparison.Ordinal)]).ToList(), source);
        }
        return null;
    }

    /// <summary>The README block marked <paramref name="name"/> is the region of that name after
    /// <paramref name="substitutions"/> (README literal → the test's), and each namespace the block's using lines open
    /// is opened by the region's file (or encloses its namespace).</summary>
    public static void AssertBlockIsRegion(string name, params (string Readme, string Test)[] substitutions)
    {
        var block = Blocks().Where(b => b.Name == name).Select(b => b.Block).FirstOrDefault();
        Assert.True(block is not null, $"README has no ```csharp block marked readme-sample {name}");
        var region = Region(name);
        Assert.True(region is not null, $"no sample file has the region readme-sample {name}");
        var all = Lines(block!).ToList();
        var directives = all.TakeWhile(l => UsingDirectives.IsMatch(l)).ToList();
        var usings = directives.SelectMany(l => l.Split(';', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries)).ToList();
        var readmeLines = all.Skip(directives.Count).Select(l =>
        {
            foreach (var (r, t) in substitutions) l = l.Replace(r, t);
            return l;
        }).ToList();
        Assert.Equal(region!.Value.Lines, readmeLines);
        string ns = Regex.Match(region.Value.Source, @"^namespace ([\w.]+);", RegexOptions.Multiline).Groups[1].Value;
        foreach (var u in usings)
        {
            string opened = u["using ".Length..];
            Assert.True(region.Value.Source.Contains(u + ";", StringComparison.Ordinal) || (ns + ".").StartsWith(opened + ".", StringComparison.Ordinal),
                $"readme-sample {name}: the README's '{u}' is not in the test file");
        }
    }

    /// <summary>A line of using directives (<c>using A.B; using static C.D;</c>), not a using declaration.</summary>
    private static readonly Regex UsingDirectives = new(@"^(using (static )?[\w.]+;\s*)+$");

    private static IEnumerable<string> Lines(string text) =>
        text.Split('\n').Select(l => l.Trim()).Where(l => l.Length > 0);
}

public class ReadmeSamplesTests
{
    [Fact]
    public void Every_csharp_block_of_the_readme_is_a_marked_sample_with_a_region()
    {
        string readme = ReadmeSamples.Readme;
        var blocks = ReadmeSamples.Blocks();
        Assert.Equal(Regex.Matches(readme, "```csharp\n").Count, blocks.Count(b => b.Block is not null));
        Assert.All(blocks, b => Assert.True(b.Block is not null, $"readme-sample {b.Name} is followed by no ```csharp block"));
        Assert.Equal(blocks.Count, blocks.Select(b => b.Name).Distinct().Count());
        Assert.All(blocks, b => Assert.True(ReadmeSamples.Region(b.Name) is not null, $"no test has the region readme-sample {b.Name}"));
    }

    // The CLI's runtime settings (sae.runtimeconfig.json, copied here with the CLI) that a user's own project must repeat
    // are named where such a user reads: the README's "The library" section, before its first sample.
    [Fact]
    public void The_library_section_names_the_clis_runtime_settings_a_users_project_needs()
    {
        var config = System.Text.Json.Nodes.JsonNode.Parse(File.ReadAllText(Path.Combine(AppContext.BaseDirectory, "sae.runtimeconfig.json")))!;
        Assert.Equal(false, (bool?)config["runtimeOptions"]!["configProperties"]!["System.Runtime.TieredCompilation.QuickJitForLoops"]);
        string readme = ReadmeSamples.Readme;
        int start = readme.IndexOf("\n## The library\n", StringComparison.Ordinal);
        int firstSample = readme.IndexOf("```csharp", start, StringComparison.Ordinal);
        Assert.True(start >= 0 && firstSample > start);
        string before = readme[start..firstSample];
        Assert.Contains("<TieredCompilationQuickJitForLoops>false</TieredCompilationQuickJitForLoops>", before, StringComparison.Ordinal);
        Assert.Contains("NativeRuntime.Tune()", before, StringComparison.Ordinal);
    }
}

