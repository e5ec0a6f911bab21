using System.Numerics;
using System.Runtime.InteropServices;
using System.Runtime.Intrinsics.Arm;
using SaeSharp;
using SaeSharp.ArmCheck;
using SaeSharp.Kernels;

// Checks SaeSharp's kernels on an Arm64 CPU (run under qemu-aarch64 by ArmCheckTests): the dispatch, the NEON int8
// products against the scalar path and a plain loop over the same bytes, and the Vector<T> kernels every path shares
// against plain loops. Usage: SaeSharp.ArmCheck --dp yes|no (whether the CPU is expected to have the dot-product
// extension). Prints one line per check and "N checks passed, M failed"; exits 1 on any failure.
// Only pointer-level entry points are called: nothing may load native torch (none exists for linux-arm64).

var expectDp = args.Length == 2 && args[0] == "--dp" ? args[1] == "yes" : (bool?)null;
var checks = new Checks();
Console.WriteLine($"arch {RuntimeInformation.ProcessArchitecture}; AdvSimd {AdvSimd.IsSupported}; AdvSimd.Arm64 {AdvSimd.Arm64.IsSupported}; "
    + $"Dp {Dp.IsSupported}; Vector<float>.Count {Vector<float>.Count}");
Console.WriteLine(CpuKernels.Describe());

checks.Run("architecture is Arm64 with AdvSimd.Arm64", () => RuntimeInformation.ProcessArchitecture == Architecture.Arm64 && AdvSimd.Arm64.IsSupported);
if (expectDp is { } dp)
    checks.Run($"Dp.IsSupported is {dp}", () => Dp.IsSupported == dp);
else
    checks.Fail("usage", "pass --dp yes|no");

Dispatch.Run(checks);
Int8Checks.Run(checks, KernelPath.Neon);
VectorChecks.Run(checks);

Console.WriteLine($"{checks.Passed} checks passed, {checks.Failed} failed");
return checks.Failed == 0 ? 0 : 1;

internal static class Dispatch
{
    public static void Run(Checks checks)
    {
        checks.Run("CpuKernels.Best is neon", () => CpuKernels.Best == KernelPath.Neon);
        checks.Expect("CpuKernels.Supported is torch, scalar, neon", () =>
            CpuKernels.Supported.SequenceEqual([KernelPath.Torch, KernelPath.Scalar, KernelPath.Neon])
                ? null : string.Join(", ", CpuKernels.Supported));
        checks.Run("default path is neon", () => CpuKernels.Path == KernelPath.Neon);
        foreach (var p in new[] { KernelPath.Avx2, KernelPath.AvxVnni, KernelPath.Avx512, KernelPath.Avx512Bf16 })
            checks.Expect($"forcing {CpuKernels.Name(p)} is refused", () =>
            {
                try { CpuKernels.Path = p; return $"accepted; path {CpuKernels.Path}"; }
                catch (SaeSharpException e) { return e.Message.Contains("lacks", StringComparison.Ordinal) ? null : e.Message; }
                finally { CpuKernels.ResetPath(); }
            });
        checks.Expect("SAESHARP_KERNELS=avx2 is refused", () =>
        {
            Environment.SetEnvironmentVariable(CpuKernels.EnvironmentVariable, "avx2");
            try { return $"accepted; path {CpuKernels.Path}"; }
            catch (SaeSharpException) { return null; }
            finally { Environment.SetEnvironmentVariable(CpuKernels.EnvironmentVariable, null); }
        });
        checks.Expect("SAESHARP_KERNELS=neon and scalar are taken", () =>
        {
            try
            {
                Environment.SetEnvironmentVariable(CpuKernels.EnvironmentVariable, "neon");
                if (CpuKernels.Path != KernelPath.Neon) return $"neon gave {CpuKernels.Path}";
                Environment.SetEnvironmentVariable(CpuKernels.EnvironmentVariable, "scalar");
                return CpuKernels.Path == KernelPath.Scalar ? null : $"scalar gave {CpuKernels.Path}";
            }
            finally { Environment.SetEnvironmentVariable(CpuKernels.EnvironmentVariable, null); }
        });
        checks.Expect("Describe shows asimd, asimddp iff Dp, and the neon path", () =>
        {
            var d = CpuKernels.Describe();
            bool ok = d.Contains(" asimd", StringComparison.Ordinal) && d.Contains("asimddp", StringComparison.Ordinal) == Dp.IsSupported
                && d.Contains("kernels neon", StringComparison.Ordinal) && !d.Contains("avx", StringComparison.Ordinal);
            return ok ? null : d;
        });
        checks.Run("no bfloat16 matmul claimed on Arm", () => !CpuKernels.HasBf16);
        checks.Run("candidate pass applies on neon for 16k latents only",
            () => CandidateEncoder.Applies(KernelPath.Neon, 32) && !CandidateEncoder.Applies(KernelPath.Neon, 40));
        checks.Run("neon weight levels are 127", () => Int8Gemm.WeightLevels(KernelPath.Neon) == 127);
    }
}

