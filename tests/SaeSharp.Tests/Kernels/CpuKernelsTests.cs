using SaeSharp.Kernels;

namespace SaeSharp.Tests.Kernels;

/// <summary><see cref="CpuKernels"/>: path names, forcing, and refusal of paths the CPU lacks.</summary>
[Collection(KernelPathCollection.Name)]
public class CpuKernelsTests
{
    [Fact]
    public void Every_path_name_parses_back()
    {
        foreach (var p in Enum.GetValues<KernelPath>()) Assert.Equal(p, CpuKernels.Parse(CpuKernels.Name(p)));
        Assert.Equal(KernelPath.Avx512Bf16, CpuKernels.Parse(" AVX512BF16 "));
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

/// <summary>Tests that set the process-wide <see cref="CpuKernels.Path"/> run one at a time.</summary>
[CollectionDefinition(Name, DisableParallelization = true)]
public sealed class KernelPathCollection
{
    public const string Name = "kernel path";
}
