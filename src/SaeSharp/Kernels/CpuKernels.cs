using System.Runtime.InteropServices;
using System.Runtime.Intrinsics.Arm;
using System.Runtime.Intrinsics.X86;
using static TorchSharp.torch;

namespace SaeSharp.Kernels;

/// <summary>The instruction-set paths of SaeSharp's CPU kernels: <see cref="Torch"/> and <see cref="Scalar"/> on every CPU,
/// then the x86 chain, lowest first, and the Arm path. Each path uses only what its name says, so forcing a lower one on a
/// bigger CPU runs the code a smaller CPU would (not at its speed).</summary>
public enum KernelPath
{
    /// <summary>No custom kernel at all: plain torch operations, as on a non-CPU device (forcing it tests that fallback on CPU).</summary>
    Torch,
    /// <summary>Plain loops; no candidate pass (the TopK family selects on float32 pre-activations).</summary>
    Scalar,
    /// <summary>AVX2 + FMA (e.g. AMD Zen 2): int8 candidate products with <c>vpmaddubsw</c>/<c>vpmaddwd</c> on 256-bit vectors.</summary>
    Avx2,
    /// <summary>AVX2 + AVX-VNNI: int8 candidate products with 256-bit <c>vpdpbusd</c>.</summary>
    AvxVnni,
    /// <summary>AVX-512 F/BW/VL: int8 candidate products with <c>vpmaddubsw</c>/<c>vpmaddwd</c> on 512-bit vectors.</summary>
    Avx512,
    /// <summary>AVX-512 with AVX512-BF16 or AMX-BF16: bfloat16 candidate products through libtorch/oneDNN.</summary>
    Avx512Bf16,
    /// <summary>Arm64 Advanced SIMD (NEON): int8 candidate products with <c>sdot</c> where the CPU has the dot-product
    /// extension (<c>asimddp</c>), else with widening multiplies.</summary>
    Neon,
}

/// <summary>
/// Runtime kernel dispatch: the CPU's features are read once, the best <see cref="KernelPath"/> they allow is chosen,
/// and the environment variable <c>SAESHARP_KERNELS</c> (<c>avx512bf16</c>, <c>avx512</c>, <c>avxvnni</c>, <c>avx2</c>,
/// <c>scalar</c>, <c>torch</c>; <c>neon</c> on Arm64) or <see cref="Path"/> forces a lower one (a path the CPU lacks, or one of
/// the other architecture, is refused). On Arm64 the best path is <see cref="KernelPath.Neon"/>; the
/// <see cref="System.Numerics.Vector{T}"/> kernels, shared by every path, are mapped to NEON by the .NET JIT.
/// </summary>
public static class CpuKernels
{
    /// <summary>Environment variable that forces a lower <see cref="KernelPath"/>.</summary>
    public const string EnvironmentVariable = "SAESHARP_KERNELS";

    private static readonly Lazy<HashSet<string>> CpuFlags = new(ReadCpuFlags);
    private static readonly Lazy<KernelPath> BestPath = new(DetectBest);
    private static KernelPath? _forced;
    private static int _logged;

    /// <summary>The best path this CPU supports.</summary>
    public static KernelPath Best => BestPath.Value;

    /// <summary>The path the kernels take: <see cref="Best"/>, or the lower one forced by <c>SAESHARP_KERNELS</c> or by
    /// setting this property (null restores the default).</summary>
    public static KernelPath Path
    {
        get => _forced ?? FromEnvironment() ?? Best;
        set => _forced = Check(value);
    }

    /// <summary>Whether the custom CPU kernels run for <paramref name="t"/>: it lives on the CPU and the path is not forced
    /// to <see cref="KernelPath.Torch"/>. Every caller of a kernel in this folder checks it and otherwise runs torch operations
    /// (the device-generic path, e.g. CUDA).</summary>
    public static bool On(Tensor t) => t.device_type == TorchSharp.DeviceType.CPU && Path != KernelPath.Torch;

    /// <summary>Resets <see cref="Path"/> to the environment's or the CPU's choice.</summary>
    public static void ResetPath() => _forced = null;

    /// <summary>Every path this CPU can run, lowest first (the paths the tests compare with the reference): torch and
    /// scalar, then on x86 the chain up to <see cref="Best"/> (AVX-VNNI only where present), on Arm64 NEON.</summary>
    public static IReadOnlyList<KernelPath> Supported => SupportedPaths.Value;

    private static readonly Lazy<IReadOnlyList<KernelPath>> SupportedPaths = new(() =>
        Enum.GetValues<KernelPath>().Where(p => p switch
        {
            KernelPath.Torch or KernelPath.Scalar => true,
            KernelPath.Neon => Best == KernelPath.Neon,
            KernelPath.AvxVnni => IsX86 && p <= Best && AvxVnni.IsSupported,
            _ => IsX86 && p <= Best,
        }).ToList());

    private static readonly Lazy<string> VendorId = new(ReadVendor);

    /// <summary>The x86 CPU vendor string from <c>cpuid</c> (<c>GenuineIntel</c>, <c>AuthenticAMD</c>, …), or the process
    /// architecture elsewhere.</summary>
    public static string Vendor => VendorId.Value;

    private static string ReadVendor()
    {
        if (!X86Base.IsSupported) return RuntimeInformation.ProcessArchitecture.ToString();
        var (_, ebx, ecx, edx) = X86Base.CpuId(0, 0);
        Span<byte> id = stackalloc byte[12];
        BitConverter.TryWriteBytes(id, ebx);
        BitConverter.TryWriteBytes(id[4..], edx);
        BitConverter.TryWriteBytes(id[8..], ecx);
        return System.Text.Encoding.ASCII.GetString(id);
    }

    private static bool IsX86 => RuntimeInformation.ProcessArchitecture is Architecture.X64 or Architecture.X86;

    private static readonly Lazy<(int, int)> FamilyModelId = new(ReadFamilyModel);

    /// <summary>The x86 display family and model from <c>cpuid</c> leaf 1 (e.g. 23 and 49 for an AMD EPYC Zen 2), or
    /// (0, 0) elsewhere.</summary>
    public static (int Family, int Model) FamilyModel => FamilyModelId.Value;

    private static (int, int) ReadFamilyModel()
    {
        if (!X86Base.IsSupported) return (0, 0);
        int eax = X86Base.CpuId(1, 0).Eax;
        int family = (eax >> 8) & 0xF, model = (eax >> 4) & 0xF;
        if (family == 0xF) family += (eax >> 20) & 0xFF;
        if (family is 0x6 or >= 0xF) model |= ((eax >> 16) & 0xF) << 4;
        return (family, model);
    }

    private static readonly Lazy<long> L2 = new(ReadL2Bytes);

    /// <summary>The level-2 data cache of one core in bytes (Linux's <c>/sys/devices/system/cpu/cpu0/cache</c>; 512 KiB
    /// where it cannot be read): the sparse kernels size their source blocks by it.</summary>
    public static long L2Bytes => L2.Value;

    private static long ReadL2Bytes()
    {
        const long fallback = 512 * 1024;
        try
        {
            foreach (var dir in Directory.EnumerateDirectories("/sys/devices/system/cpu/cpu0/cache", "index*"))
            {
                if (File.ReadAllText(System.IO.Path.Combine(dir, "level")).Trim() != "2") continue;
                if (File.ReadAllText(System.IO.Path.Combine(dir, "type")).Trim() is not ("Data" or "Unified")) continue;
                var size = File.ReadAllText(System.IO.Path.Combine(dir, "size")).Trim();
                long unit = size.EndsWith('K') ? 1024 : size.EndsWith('M') ? 1024 * 1024 : 1;
                if (long.TryParse(size.TrimEnd('K', 'M'), out var n) && n > 0) return n * unit;
            }
        }
        catch (IOException) { }
        catch (UnauthorizedAccessException) { }
        return fallback;
    }

    /// <summary>Whether the CPU has bfloat16 dot products (AVX512-BF16 or AMX-BF16) and oneDNN may use them
    /// (<c>ONEDNN_MAX_CPU_ISA</c> does not cap it below AVX512_CORE_BF16): oneDNN's bfloat16 matmul then runs at two to three
    /// times the float32 rate; without them bfloat16 matmuls are emulated and slower than float32.</summary>
    public static bool HasBf16 => IsX86 &&
        (CpuFlags.Value.Contains("avx512_bf16") || CpuFlags.Value.Contains("amx_bf16")) && OneDnnAllowsBf16();

    /// <summary>Environment variables that cap the instruction sets of SaeSharp's kernels, the .NET JIT, MKL, oneDNN,
    /// ATen and OpenBLAS (<see cref="Blas"/>) (to run what an AVX2-only CPU would run on a bigger one: BENCHMARKS.md, "AVX2-only proxy").</summary>
    public static readonly string[] IsaLimitVariables =
    [
        EnvironmentVariable, "DOTNET_EnableAVX512", "DOTNET_EnableAVX512F", "DOTNET_EnableAVXVNNI", "MKL_ENABLE_INSTRUCTIONS",
        "ONEDNN_MAX_CPU_ISA", "DNNL_MAX_CPU_ISA", "ATEN_CPU_CAPABILITY", "OPENBLAS_CORETYPE",
    ];

    /// <summary>The instruction-set caps in force (<see cref="IsaLimitVariables"/> that are set), as <c>NAME=value</c>
    /// pairs, or "none".</summary>
    public static string IsaLimits()
    {
        var set = IsaLimitVariables.Select(v => (v, Environment.GetEnvironmentVariable(v)))
            .Where(p => !string.IsNullOrWhiteSpace(p.Item2)).Select(p => $"{p.v}={p.Item2}").ToList();
        return set.Count == 0 ? "none" : string.Join(" ", set);
    }

    private static bool OneDnnAllowsBf16()
    {
        var cap = Environment.GetEnvironmentVariable("ONEDNN_MAX_CPU_ISA") ?? Environment.GetEnvironmentVariable("DNNL_MAX_CPU_ISA");
        if (string.IsNullOrWhiteSpace(cap)) return true;
        cap = cap.Trim().ToUpperInvariant();
        return cap is "ALL" or "DEFAULT" || cap.StartsWith("AVX512_CORE_BF16", StringComparison.Ordinal)
            || cap.StartsWith("AVX512_CORE_FP16", StringComparison.Ordinal) || cap.StartsWith("AVX512_CORE_AMX", StringComparison.Ordinal)
            || cap.StartsWith("AVX10", StringComparison.Ordinal);
    }

    /// <summary>The name <c>SAESHARP_KERNELS</c> takes for a path.</summary>
    public static string Name(KernelPath p) => p.ToString().ToLowerInvariant();

    /// <summary>Parses a <c>SAESHARP_KERNELS</c> value.</summary>
    public static KernelPath Parse(string name) =>
        Enum.GetValues<KernelPath>().FirstOrDefault(p => string.Equals(Name(p), name.Trim(), StringComparison.OrdinalIgnoreCase), (KernelPath)(-1)) is var p && p >= 0
            ? p
            : throw new SaeSharpException($"{EnvironmentVariable}={name}: expected one of {string.Join(", ", Enum.GetValues<KernelPath>().Select(Name))}");

    /// <summary>One line: the CPU model, its vector features, its L2 and the chosen path (logged once by <see cref="LogOnce"/>).</summary>
    public static string Describe()
    {
        var f = CpuFlags.Value;
        string[] shown = ["avx2", "fma", "avx512f", "avx512bw", "avx512vl", "avx512_vnni", "avx_vnni", "avx512_bf16", "amx_bf16", "amx_int8"];
        // On Arm64 the features are the runtime's own view (under user-mode emulation /proc/cpuinfo is the host's).
        var have = IsX86 ? shown.Where(f.Contains).ToList()
            : new[] { ("asimd", AdvSimd.IsSupported), ("asimddp", Dp.IsSupported) }.Where(p => p.Item2).Select(p => p.Item1).ToList();
        string forced = Path != Best ? $" (forced; best {Name(Best)})" : "";
        if (Path == KernelPath.Avx2) forced += Int8GemmAvx2.ShiftWidening ? ", int8 widening shift" : ", int8 widening madd";
        return $"CPU {CpuModel()}; features {(have.Count == 0 ? "none of interest" : string.Join(" ", have))}; L2 {L2Bytes / 1024} KiB per core; kernels {Name(Path)}{forced}; ISA limits {IsaLimits()}";
    }

    /// <summary>Writes <see cref="Describe"/> and the GEMM library in force (<see cref="Blas.Describe"/>) once per process to
    /// <paramref name="write"/> (the CLI's <c>--verbose</c>), and makes <paramref name="write"/> the <see cref="VerboseLog"/>.</summary>
    public static void LogOnce(Action<string> write)
    {
        VerboseLog = write;
        if (Interlocked.Exchange(ref _logged, 1) != 0) return;
        write(Describe());
        write(Blas.Describe());
    }

    /// <summary>Where the kernels' run-time choices are written (the measured choice of <see cref="CandidatePass.Auto"/>);
    /// null (the default) writes nothing.</summary>
    public static Action<string>? VerboseLog { get; set; }

    private static KernelPath? FromEnvironment()
    {
        var v = Environment.GetEnvironmentVariable(EnvironmentVariable);
        return string.IsNullOrWhiteSpace(v) ? null : Check(Parse(v));
    }

    private static KernelPath Check(KernelPath p)
    {
        if (!Supported.Contains(p))
            throw new SaeSharpException($"kernel path {Name(p)} needs instructions this CPU lacks ({RuntimeInformation.ProcessArchitecture}; " +
                $"supported: {string.Join(", ", Supported.Select(Name))}; best: {Name(Best)})");
        return p;
    }

    private static KernelPath DetectBest()
    {
        if (AdvSimd.Arm64.IsSupported) return KernelPath.Neon;
        if (Avx512F.IsSupported && Avx512BW.IsSupported && Avx512F.VL.IsSupported && Avx512BW.VL.IsSupported)
            return HasBf16 ? KernelPath.Avx512Bf16 : KernelPath.Avx512;
        if (Avx2.IsSupported && Fma.IsSupported) return AvxVnni.IsSupported ? KernelPath.AvxVnni : KernelPath.Avx2;
        return KernelPath.Scalar;
    }

    private static HashSet<string> ReadCpuFlags()
    {
        var flags = new HashSet<string>(StringComparer.Ordinal);
        try
        {
            if (!OperatingSystem.IsLinux() || !File.Exists("/proc/cpuinfo")) return flags;
            foreach (var line in File.ReadLines("/proc/cpuinfo"))
            {
                if (!line.StartsWith("flags", StringComparison.Ordinal) && !line.StartsWith("Features", StringComparison.Ordinal)) continue;
                flags.UnionWith(line[(line.IndexOf(':') + 1)..].Split(' ', StringSplitOptions.RemoveEmptyEntries));
                break;
            }
        }
        catch (IOException) { }
        catch (UnauthorizedAccessException) { }
        return flags;
    }

    private static string CpuModel()
    {
        try
        {
            if (IsX86 && OperatingSystem.IsLinux() && File.Exists("/proc/cpuinfo"))
                foreach (var line in File.ReadLines("/proc/cpuinfo"))
                    if (line.StartsWith("model name", StringComparison.Ordinal)) return line[(line.IndexOf(':') + 1)..].Trim();
        }
        catch (IOException) { }
        catch (UnauthorizedAccessException) { }
        return RuntimeInformation.ProcessArchitecture.ToString();
    }
}
