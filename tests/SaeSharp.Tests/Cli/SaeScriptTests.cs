using System.Diagnostics;

namespace SaeSharp.Tests.Cli;

/// <summary>The repository's <c>./sae</c> launcher script.</summary>
public class SaeScriptTests
{
    [Fact]
    public void The_launcher_finds_the_repository_through_a_symlink()
    {
        // A user who links ./sae into ~/bin (or a run folder) ran it as the link: the script took the link's folder
        // for the repository and failed with "scripts/setup-native.sh: No such file or directory".
        string script = File.ReadAllText(Path.Combine(LibraryLayeringTests.RepositoryRoot(), "sae"));
        string rootLine = script.Split('\n').Single(l => l.StartsWith("root=", StringComparison.Ordinal));
        string dir = Path.Combine(Path.GetTempPath(), "saesharp-script-" + Guid.NewGuid().ToString("N"));
        try
        {
            string real = Path.Combine(dir, "repo"), elsewhere = Path.Combine(dir, "bin");
            Directory.CreateDirectory(real);
            Directory.CreateDirectory(elsewhere);
            string target = Path.Combine(real, "sae");
            File.WriteAllText(target, "#!/usr/bin/env bash\n" + rootLine + "\necho \"$root\"\n");
            File.CreateSymbolicLink(Path.Combine(elsewhere, "sae"), target);
            var psi = new ProcessStartInfo("bash", [Path.Combine(elsewhere, "sae")]) { RedirectStandardOutput = true, WorkingDirectory = dir };
            using var p = Process.Start(psi)!;
            string output = p.StandardOutput.ReadToEnd().Trim();
            p.WaitForExit();
            Assert.Equal(0, p.ExitCode);
            Assert.Equal(real, output);
        }
        finally { Directory.Delete(dir, recursive: true); }
    }
}
