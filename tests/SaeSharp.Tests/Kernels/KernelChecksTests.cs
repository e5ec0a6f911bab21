using SaeSharp.ArmCheck;
using SaeSharp.Kernels;
using Xunit.Abstractions;

namespace SaeSharp.Tests.Kernels;

/// <summary>The checks of the arm64 check program (tests/SaeSharp.ArmCheck/KernelChecks.cs) on this CPU: the int8 products
/// of every int8 path it supports equal, exactly, the scalar kernel's and a plain loop's over the same bytes (adversarial
/// rows, k not a multiple of 4 or 16, row counts not a multiple of 4), and the <see cref="System.Numerics.Vector{T}"/>
/// kernels match plain loops.</summary>
public class KernelChecksTests(ITestOutputHelper output)
{
    public static TheoryData<KernelPath> Int8Paths()
    {
        var data = new TheoryData<KernelPath>();
        foreach (var p in CpuKernels.Supported.Where(p => p == KernelPath.Scalar || CandidateEncoder.Applies(p, Int8Gemm.Panel) && p != KernelPath.Avx512Bf16))
            data.Add(p);
        return data;
    }

    [Theory]
    [MemberData(nameof(Int8Paths))]
    public void Int8_products_equal_the_scalar_kernel_and_a_plain_loop(KernelPath path)
    {
        var checks = new Checks(_ => { });
        Int8Checks.Run(checks, path);
        Assert.True(checks.Failed == 0, string.Join("\n", checks.Failures));
        Assert.True(checks.Passed >= 180, $"only {checks.Passed} checks ran");
        output.WriteLine($"{checks.Passed} checks passed on {CpuKernels.Name(path)}");
    }

    [Fact]
    public void Vector_kernels_match_plain_loops()
    {
        var lines = new List<string>();
        var checks = new Checks(lines.Add);
        VectorChecks.Run(checks);
        foreach (var l in lines.Where(l => !l.StartsWith("PASS", StringComparison.Ordinal))) output.WriteLine(l);
        Assert.True(checks.Failed == 0, string.Join("\n", checks.Failures));
        Assert.True(checks.Passed >= 10, $"only {checks.Passed} checks ran");
    }
}
