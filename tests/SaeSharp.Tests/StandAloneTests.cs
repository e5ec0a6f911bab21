using System.Text.RegularExpressions;

namespace SaeSharp.Tests;

/// <summary>Issue #9 §5: the repository stands alone. A plain clone has no ../shared (the team's shared data folder)
/// and no /work: no test, script or library file may name a path there (tests read tests/data, see tests/data/README.md;
/// bench/reference's Python scripts take the path of a reference checkout as an argument and are run by hand).</summary>
public class StandAloneTests
{
    static string RepositoryRoot()
    {
        for (var dir = new DirectoryInfo(AppContext.BaseDirectory); dir is not null; dir = dir.Parent)
            if (File.Exists(Path.Combine(dir.FullName, "SaeSharp.sln"))) return dir.FullName;
        throw new DirectoryNotFoundException($"no SaeSharp.sln above {AppContext.BaseDirectory}");
    }

    static readonly Regex Outside = new(@"\.\./shared|\.\.\\shared|/work/|""shared""\s*,\s*""(data|fixtures)""", RegexOptions.CultureInvariant);

    [Fact]
    public void No_test_or_script_reads_outside_the_repository()
    {
        string root = RepositoryRoot();
        string[] extensions = [".cs", ".sh", ".py", ".csproj", ".props", ".targets", ".json"];
        var offenders = new List<string>();
        foreach (string folder in new[] { "tests", "scripts", ".ci", "src" })
        {
            string dir = Path.Combine(root, folder);
            if (!Directory.Exists(dir)) continue;
            foreach (string file in Directory.EnumerateFiles(dir, "*", SearchOption.AllDirectories))
            {
                string rel = Path.GetRelativePath(root, file).Replace('\\', '/');
                if (rel.Contains("/bin/") || rel.Contains("/obj/") || rel.StartsWith("tests/data/", StringComparison.Ordinal)) continue;
                if (!(extensions.Contains(Path.GetExtension(file)) || folder is "scripts" or ".ci")) continue;
                if (rel == "tests/SaeSharp.Tests/StandAloneTests.cs") continue;
                var lines = File.ReadAllLines(file);
                for (int i = 0; i < lines.Length; i++)
                    if (Outside.IsMatch(lines[i])) offenders.Add($"{rel}:{i + 1}: {lines[i].Trim()}");
            }
        }
        Assert.True(offenders.Count == 0, "paths outside the repository:\n" + string.Join("\n", offenders));
    }
}
