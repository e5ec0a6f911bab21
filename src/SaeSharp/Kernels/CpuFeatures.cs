namespace SaeSharp.Kernels;

/// <summary>What this CPU offers the kernels, detected once.</summary>
public static class CpuFeatures
{
    private static readonly Lazy<bool> Bf16 = new(DetectBf16);

    /// <summary>Whether this CPU has bfloat16 dot-product instructions (AVX512-BF16 or AMX-BF16), where libtorch's oneDNN
    /// bfloat16 matmul runs at two to three times the float32 rate. Without them bfloat16 matmuls are emulated and
    /// slower than float32 (so <see cref="Saes.SaeTrainingOptions.Autocast"/> only pays off where this is true).</summary>
    public static bool Bf16MatMul => Bf16.Value;

    private static bool DetectBf16()
    {
        try
        {
            if (!OperatingSystem.IsLinux() || !File.Exists("/proc/cpuinfo")) return false;
            foreach (var line in File.ReadLines("/proc/cpuinfo"))
            {
                if (!line.StartsWith("flags", StringComparison.Ordinal)) continue;
                var flags = line[(line.IndexOf(':') + 1)..].Split(' ', StringSplitOptions.RemoveEmptyEntries);
                return flags.Contains("avx512_bf16") || flags.Contains("amx_bf16");
            }
        }
        catch (IOException) { }
        catch (UnauthorizedAccessException) { }
        return false;
    }
}
