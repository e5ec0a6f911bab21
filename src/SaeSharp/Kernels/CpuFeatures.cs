namespace SaeSharp.Kernels;

/// <summary>What this CPU offers the kernels, detected once.</summary>
public static class CpuFeatures
{
    /// <summary>Whether this CPU has bfloat16 dot-product instructions (AVX512-BF16 or AMX-BF16), where libtorch's oneDNN
    /// bfloat16 matmul runs at two to three times the float32 rate. Without them bfloat16 matmuls are emulated and
    /// slower than float32 (so <see cref="Saes.SaeTrainingOptions.Autocast"/> only pays off where this is true).</summary>
    public static bool Bf16MatMul => CpuKernels.HasBf16;
}
