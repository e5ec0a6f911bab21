using System.Runtime.InteropServices;
using System.Runtime.Intrinsics.Arm;
using System.Runtime.Intrinsics.X86;
using SaeSharp.Kernels;

namespace SaeSharp.Tests.Kernels;

/// <summary><see cref="CpuKernels"/>: path names, forcing, and refusal of paths the CPU lacks.</summary>
[Collection(KernelPathCollection.Name)]
public class CpuKernelsTests
{
    /// <summary>The family and model read from <c>cpuid</c> (which choose the AVX2 int8 widening) are the ones Linux
    /// reports in /proc/cpuinfo.</summary>
    [Fact]
    public void Family_and_model_match_proc_cpuinfo()
    {
        if (!System.Runtime.Intrinsics.X86.X86Base.IsSupported || !File.Exists("/proc/cpuinfo")) return;
        var lines = File.ReadLines("/proc/cpuinfo").TakeWhile(l => l.Length > 0).ToList();
        int Field(string name) => int.Parse(lines.First(l => l.Split(':')[0].Trim() == name).Split(':')[1].Trim());
        Assert.Equal((Field("cpu family"), Field("model")), CpuKernels.FamilyModel);
        var forced = Environment.GetEnvironmentVariable(Int8GemmAvx2.WideningVariable);
        if (string.IsNullOrWhiteSpace(forced))
            Assert.Equal(CpuKernels.Vendor == "AuthenticAMD" && Field("cpu family") == 23 || CpuKernels.Vendor == "HygonGenuine" && Field("cpu family") == 24,
                Int8GemmAvx2.ShiftWidening);
    }

    [Fact]
    public void Every_path_name_parses_back()
    {
        foreach (var p in Enum.GetValues<KernelPath>()) Assert.Equal(p, CpuKernels.Parse(CpuKernels.Name(p)));
        Assert.Equal(KernelPath.Avx512Bf16, CpuKernels.Parse(" AVX512BF16 "));
        Assert.Equal(KernelPath.Neon, CpuKernels.Parse("NEON"));
        var e = Assert.Throws<SaeSharpException>(() => CpuKernels.Parse("neon9"));
        Assert.Contains("SAESHARP_KERNELS=neon9", e.Message);
    }

    [Fact]
    public void Lower_paths_can_be_forced_and_the_default_restored()
    {
        try
        {
            foreach (var p in CpuKernels.Supported)
            {
                CpuKernels.Path = p;
                Assert.Equal(p, CpuKernels.Path);
                Assert.Contains($"kernels {CpuKernels.Name(p)}", CpuKernels.Describe());
            }
            CpuKernels.Path = KernelPath.Scalar;
        }
        finally { CpuKernels.ResetPath(); }
        Assert.Equal(CpuKernels.Best, CpuKernels.Path);
        Assert.Contains(CpuKernels.Best, CpuKernels.Supported);
    }

    [Fact]
    public void A_path_above_the_cpu_is_refused()
    {
        if (CpuKernels.Best == KernelPath.Avx512Bf16) return; // nothing above it to refuse
        Assert.Throws<SaeSharpException>(() => CpuKernels.Path = KernelPath.Avx512Bf16);
    }
}

/// <summary><see cref="CpuKernels.Supported"/> and forcing per architecture, against the CPU's features read here (the
/// Arm64 side runs under qemu: <see cref="ArmCheckTests"/>).</summary>
[Collection(KernelPathCollection.Name)]
public class CpuKernelsArchitectureTests
{
    private static bool X86 => RuntimeInformation.ProcessArchitecture is Architecture.X64 or Architecture.X86;

    [Fact]
    public void Supported_lists_the_paths_of_this_architecture_and_features()
    {
        var expected = new List<KernelPath> { KernelPath.Torch, KernelPath.Scalar };
        if (X86)
        {
            bool avx2 = Avx2.IsSupported && Fma.IsSupported;
            bool avx512 = Avx512F.IsSupported && Avx512BW.IsSupported && Avx512F.VL.IsSupported && Avx512BW.VL.IsSupported;
            if (avx2 || avx512) expected.Add(KernelPath.Avx2);
            if (AvxVnni.IsSupported && (avx2 || avx512)) expected.Add(KernelPath.AvxVnni);
            if (avx512) expected.Add(KernelPath.Avx512);
            if (avx512 && CpuKernels.HasBf16) expected.Add(KernelPath.Avx512Bf16);
        }
        else if (AdvSimd.Arm64.IsSupported) expected.Add(KernelPath.Neon);
        Assert.Equal(expected, CpuKernels.Supported);
        Assert.Equal(expected[^1], CpuKernels.Best);
    }

    [Fact]
    public void The_other_architectures_paths_are_refused()
    {
        if (!X86) return; // the Arm64 side: ArmCheckTests (forcing avx2 refused under qemu)
        Assert.DoesNotContain(KernelPath.Neon, CpuKernels.Supported);
        var e = Assert.Throws<SaeSharpException>(() => CpuKernels.Path = KernelPath.Neon);
        Assert.Contains("neon needs instructions this CPU lacks", e.Message);
        var before = Environment.GetEnvironmentVariable(CpuKernels.EnvironmentVariable);
        try
        {
            Environment.SetEnvironmentVariable(CpuKernels.EnvironmentVariable, "neon");
            Assert.Throws<SaeSharpException>(() => CpuKernels.Path);
        }
        finally { Environment.SetEnvironmentVariable(CpuKernels.EnvironmentVariable, before); }
        Assert.DoesNotContain("asimd", CpuKernels.Describe());
    }
}

/// <summary>Tests that set the process-wide <see cref="CpuKernels.Path"/> run one at a time.</summary>
/// <summary><see cref="CpuFeatures"/>: the matmul-rate probe and the advice <c>sae train --autocast</c> prints from it.</summary>
public class CpuFeaturesTests
{
    /// <summary>The probe's rate is the product's FLOPs over its time: positive and finite in both dtypes, and for float32
    /// below what two cores could do at all (2 × 64 FLOP per cycle × 6 GHz).</summary>
    [Fact]
    public void Matmul_rates_are_positive_and_physically_possible()
    {
        double f32 = CpuFeatures.MatMulGflops(256, 128, 512, TorchSharp.torch.ScalarType.Float32);
        double bf16 = CpuFeatures.MatMulGflops(256, 128, 512, TorchSharp.torch.ScalarType.BFloat16, repeats: 1);
        Assert.InRange(f32, 1e-3, 2 * 64 * 6.0 * Environment.ProcessorCount / 2);
        Assert.True(double.IsFinite(bf16) && bf16 > 0);
    }

    [Theory]
    [InlineData(false, 3.0, "no AVX512-BF16/AMX")]
    [InlineData(true, 0.67, "0.67× float32's rate")]
    [InlineData(true, 0.999, "1.00× float32's rate")]
    [InlineData(true, 1.0, null)]
    [InlineData(true, 2.5, null)]
    public void Autocast_is_advised_against_where_bfloat16_is_not_faster(bool instructions, double speedup, string? expected)
    {
        var advice = CpuFeatures.AutocastAdvice(instructions, speedup, 512, 8192);
        if (expected is null) Assert.Null(advice);
        else
        {
            Assert.NotNull(advice);
            Assert.Contains(expected, advice);
            if (instructions) Assert.Contains("d_in 512, d_sae 8192", advice);
        }
    }
}

[CollectionDefinition(Name, DisableParallelization = true)]
public sealed class KernelPathCollection
{
    public const string Name = "kernel path";
}
