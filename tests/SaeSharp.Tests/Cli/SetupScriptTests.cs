using System.Diagnostics;

namespace SaeSharp.Tests.Cli;

/// <summary><c>scripts/setup-openblas.sh</c> run against stand-in <c>ldconfig</c>, <c>dpkg-query</c>, <c>apt-cache</c> and
/// <c>apt-get</c> that record what they are asked: which OpenBLAS a machine ends up with decides the dense ReLU GEMMs'
/// speed and the peers' (Debian 12's 0.3.21 runs SSE3 kernels on recent Intel CPUs; trixie's 0.3.29 does not).</summary>
public class SetupScriptTests : TempDirTestBase
{
    /// <summary>The apt-get calls made by the script on a machine with OpenBLAS <paramref name="installed"/> (null: none),
    /// the saesharp trixie source present or not, and trixie offering 0.3.29+ds-3.</summary>
    private string[] AptGetCalls(string? installed, bool trixieSource)
    {
        string bin = Path.Combine(_dir, "bin"), sources = Path.Combine(_dir, "sources"), log = Path.Combine(_dir, "apt-get.log");
        Directory.CreateDirectory(bin);
        Directory.CreateDirectory(sources);
        if (trixieSource) File.WriteAllText(Path.Combine(sources, "saesharp-trixie.sources"), "Suites: trixie\n");
        void Tool(string name, string body) => File.WriteAllText(Path.Combine(bin, name), "#!/usr/bin/env bash\n" + body + "\n");
        Tool("ldconfig", installed is null ? "echo 'libc.so.6 (libc6,x86-64) => /lib/libc.so.6'" : "echo 'libopenblas.so.0 (libc6,x86-64) => /usr/lib/libopenblas.so.0'");
        Tool("dpkg-query", installed is null ? "exit 1" : $"printf '%s' '{installed}'");
        Tool("apt-cache", "echo 'libopenblas0-pthread | 0.3.29+ds-3 | http://mirror/debian trixie/main amd64 Packages'\n" +
                          "echo 'libopenblas0-pthread | 0.3.21+ds-4 | http://mirror/debian bookworm/main amd64 Packages'");
        Tool("apt-get", $"echo \"$*\" >> '{log}'");
        Tool("id", "echo 0");
        if (!OperatingSystem.IsWindows())
            foreach (var f in Directory.GetFiles(bin)) File.SetUnixFileMode(f, UnixFileMode.UserRead | UnixFileMode.UserWrite | UnixFileMode.UserExecute);

        var psi = new ProcessStartInfo("bash", [Path.Combine(LibraryLayeringTests.RepositoryRoot(), "scripts", "setup-openblas.sh")])
        { RedirectStandardOutput = true, RedirectStandardError = true };
        psi.Environment["PATH"] = bin + ":/usr/bin:/bin";
        psi.Environment["SAESHARP_APT_SOURCES_DIR"] = sources;
        using var p = Process.Start(psi)!;
        p.StandardOutput.ReadToEnd();
        p.StandardError.ReadToEnd();
        p.WaitForExit();
        Assert.Equal(0, p.ExitCode);
        return File.Exists(log) ? File.ReadAllLines(log) : [];
    }

    [Fact]
    public void Debian_12s_OpenBLAS_is_lifted_to_trixies_where_the_trixie_source_is_present()
    {
        var calls = AptGetCalls("0.3.21+ds-4", trixieSource: true);
        Assert.Equal("install -y -qq -t trixie libopenblas0-pthread", Assert.Single(calls));
    }

    [Fact]
    public void Trixies_OpenBLAS_is_left_alone()
        => Assert.Empty(AptGetCalls("0.3.29+ds-3", trixieSource: true));

    [Fact]
    public void Without_the_trixie_source_an_installed_OpenBLAS_is_left_alone()
        => Assert.Empty(AptGetCalls("0.3.21+ds-4", trixieSource: false));

    [Fact]
    public void A_missing_OpenBLAS_is_installed_from_trixie_where_the_source_is_present_else_from_the_distribution()
    {
        Assert.Equal("install -y -qq -t trixie libopenblas0-pthread", Assert.Single(AptGetCalls(null, trixieSource: true)));
        File.Delete(Path.Combine(_dir, "apt-get.log"));
        Directory.Delete(Path.Combine(_dir, "sources"), recursive: true);
        Assert.Equal("install -y -qq libopenblas0-pthread", Assert.Single(AptGetCalls(null, trixieSource: false)));
    }
}
