using System.Diagnostics;
using System.Text.RegularExpressions;
using SaeSharp.Kernels;
using Xunit.Abstractions;

namespace SaeSharp.Tests.Kernels;

/// <summary>
/// The NEON path on an emulated Arm64 CPU: tests/SaeSharp.ArmCheck, published self-contained for linux-arm64, runs under
/// qemu-aarch64 user-mode emulation with a CPU that has the dot-product extension (<c>-cpu max</c>: the <c>sdot</c>
/// kernel) and one without (<c>-cpu cortex-a57</c>: the widening-multiply kernel), and must pass every check. Correctness
/// only: emulated timings say nothing about Arm hardware. scripts/test.sh publishes the program first and names its folder
/// in <c>SAESHARP_ARMCHECK</c>; without it the test publishes it. qemu and the arm64 C runtime come from
/// scripts/setup-arm64.sh.
/// </summary>
public partial class ArmCheckTests(ITestOutputHelper output)
{
    private const string Sysroot = "/usr/aarch64-linux-gnu";
    private static readonly Lazy<string> Program = new(Publish);

    [Theory]
    [InlineData("max", "yes")]
    [InlineData("cortex-a57", "no")]
    public void The_arm64_kernel_checks_pass_under_qemu(string cpu, string dotProduct)
    {
        string qemu = FindQemu();
        Assert.True(File.Exists(Path.Combine(Sysroot, "lib", "ld-linux-aarch64.so.1")),
            $"{Sysroot} lacks the arm64 C runtime: run scripts/setup-arm64.sh");
        string exe = Path.Combine(Program.Value, "SaeSharp.ArmCheck");
        Assert.True(File.Exists(exe), $"{exe} is missing (dotnet publish tests/SaeSharp.ArmCheck -r linux-arm64 failed?)");

        var psi = new ProcessStartInfo(qemu) { RedirectStandardOutput = true, RedirectStandardError = true };
        foreach (var a in new[] { "-L", Sysroot, "-cpu", cpu, exe, "--dp", dotProduct }) psi.ArgumentList.Add(a);
        foreach (var v in CpuKernels.IsaLimitVariables) psi.Environment.Remove(v); // an x86 cap would be refused on Arm
        var (code, stdout, stderr) = Run(psi, TimeSpan.FromMinutes(3));
        foreach (var line in stdout.Split('\n').Where(l => !l.StartsWith("PASS", StringComparison.Ordinal))) output.WriteLine(line);

        Assert.True(code == 0, $"exit code {code}\n{stdout}\n{stderr}");
        Assert.Contains($"Dp {(dotProduct == "yes" ? "True" : "False")}", stdout, StringComparison.Ordinal);
        Assert.Contains("kernels neon", stdout, StringComparison.Ordinal);
        var m = Summary().Match(stdout);
        Assert.True(m.Success, stdout);
        Assert.True(int.Parse(m.Groups[1].Value) >= 200, $"only {m.Groups[1].Value} checks passed");
        Assert.Equal("0", m.Groups[2].Value);
    }

    [GeneratedRegex(@"^(\d+) checks passed, (\d+) failed$", RegexOptions.Multiline)]
    private static partial Regex Summary();

    private static string FindQemu()
    {
        foreach (var name in new[] { "qemu-aarch64-static", "qemu-aarch64" })
            foreach (var dir in (Environment.GetEnvironmentVariable("PATH") ?? "").Split(':', StringSplitOptions.RemoveEmptyEntries))
                if (File.Exists(Path.Combine(dir, name))) return Path.Combine(dir, name);
        Assert.Fail("qemu-aarch64-static is missing: run scripts/setup-arm64.sh (installs Debian's qemu-user-static)");
        return "";
    }

    /// <summary>The published program's folder: <c>SAESHARP_ARMCHECK</c> (scripts/test.sh), else published here into
    /// .build/armcheck.</summary>
    private static string Publish()
    {
        if (Environment.GetEnvironmentVariable("SAESHARP_ARMCHECK") is { Length: > 0 } given) return given;
        string root = RepoRoot(), dir = Path.Combine(root, ".build", "armcheck");
        var psi = new ProcessStartInfo("dotnet") { RedirectStandardOutput = true, RedirectStandardError = true, WorkingDirectory = root };
        foreach (var a in new[] { "publish", Path.Combine("tests", "SaeSharp.ArmCheck", "SaeSharp.ArmCheck.csproj"), "-c", "Release",
                     "-r", "linux-arm64", "--self-contained", "-nologo", "-o", dir })
            psi.ArgumentList.Add(a);
        var (code, stdout, stderr) = Run(psi, TimeSpan.FromMinutes(10));
        Assert.True(code == 0, $"dotnet publish of the arm64 check failed ({code}):\n{stdout}\n{stderr}");
        return dir;
    }

    private static (int Code, string Stdout, string Stderr) Run(ProcessStartInfo psi, TimeSpan timeout)
    {
        using var p = Process.Start(psi)!;
        var stdout = p.StandardOutput.ReadToEndAsync();
        var stderr = p.StandardError.ReadToEndAsync();
        if (!p.WaitForExit(timeout))
        {
            p.Kill(entireProcessTree: true);
            Assert.Fail($"{psi.FileName} did not finish within {timeout}");
        }
        p.WaitForExit();
        return (p.ExitCode, stdout.Result, stderr.Result);
    }

    private static string RepoRoot()
    {
        for (var dir = new DirectoryInfo(AppContext.BaseDirectory); dir is not null; dir = dir.Parent)
            if (File.Exists(Path.Combine(dir.FullName, "SaeSharp.sln"))) return dir.FullName;
        throw new DirectoryNotFoundException($"no SaeSharp.sln above {AppContext.BaseDirectory}");
    }
}
