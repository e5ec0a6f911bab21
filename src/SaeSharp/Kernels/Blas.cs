using System.Diagnostics;
using System.Runtime.InteropServices;
using static SaeSharp.Kernels.TensorPointers;
using static TorchSharp.torch;

namespace SaeSharp.Kernels;

/// <summary>Which library runs the float32 GEMMs of the dense ReLU training pass (<see cref="Blas"/>).</summary>
internal enum GemmProvider
{
    /// <summary>A fixed rule, so that runs and resumes are reproducible bit for bit: OpenBLAS on AMD CPUs when its kernels for
    /// this CPU use AVX2 or AVX-512 (libtorch's MKL takes no AVX-512 kernels there), torch everywhere else.</summary>
    Auto,
    /// <summary>Each GEMM shape class is timed once on both libraries at its first use and the faster one kept. The choice
    /// depends on timings, so two runs (or a run and its resume) can differ in the last bits.</summary>
    Measure,
    /// <summary>torch's mm/addmm (libtorch's bundled MKL on x86-64).</summary>
    Torch,
    /// <summary>The system OpenBLAS (libopenblas.so.0), single-threaded per call, the output split over torch's thread count.</summary>
    OpenBlas,
}

/// <summary>
/// Float32 GEMMs for <see cref="DenseRelu"/> through torch (MKL) or the system OpenBLAS, chosen at run time. libtorch's MKL
/// does not take its AVX-512 kernels on AMD CPUs, where OpenBLAS's are faster (BENCHMARKS.md, "float32 GEMM: MKL vs
/// OpenBLAS"); on Intel CPUs MKL is the faster one (there it ran at 5× an OpenBLAS that did not know the CPU). OpenBLAS
/// is loaded with <see cref="NativeLibrary.TryLoad(string, out IntPtr)"/>: when it is missing every GEMM runs through
/// torch. <c>SAESHARP_GEMM</c> (<c>auto</c>, the default; <c>measure</c>; <c>torch</c>; <c>openblas</c>) or
/// <see cref="Provider"/> forces a choice. OpenBLAS runs with one thread per call and the output's
/// longer side is split over <see cref="RowRanges.Threads"/> .NET threads (one part each: every part packs the other
/// operand again): OpenBLAS's own thread pool spins after each call
/// and slows the .NET-parallel kernels that follow. No autograd: the callers run under no_grad or inside their own
/// autograd function. Tensors the custom kernels do not take (<see cref="CpuKernels.On"/>), non-float32 ones and empty
/// shapes always go to torch.
/// </summary>
internal static unsafe class Blas
{
    /// <summary>Environment variable that forces a <see cref="GemmProvider"/>.</summary>
    public const string EnvironmentVariable = "SAESHARP_GEMM";

    private const int RowMajor = 101, NoTrans = 111, Trans = 112;

    private sealed class Library(IntPtr sgemm, IntPtr setThreads, string core)
    {
        public readonly delegate* unmanaged<int, int, int, int, int, int, float, float*, int, float*, int, float, float*, int, void> Sgemm =
            (delegate* unmanaged<int, int, int, int, int, int, float, float*, int, float*, int, float, float*, int, void>)sgemm;
        public readonly delegate* unmanaged<int, void> SetThreads = (delegate* unmanaged<int, void>)setThreads;
        public readonly string Core = core;
    }

    /// <summary>A loaded (or missing) library with the choices measured on it.</summary>
    private sealed class State(string[] names)
    {
        public readonly Lazy<Library?> Library = new(() => Load(names));
        public readonly Dictionary<(bool, bool, int, int, int), bool> Choices = [];
    }

    private static readonly string[] LibraryNames = ["libopenblas.so.0", "libopenblas.0.dylib", "libopenblas.dll"];
    private static readonly State Shared = new(LibraryNames);
    // Overrides for the calling flow only (tests and benches), so that forcing a provider or hiding the library does not
    // change what code running in parallel computes.
    private static readonly AsyncLocal<State?> StateOverride = new();
    private static readonly AsyncLocal<GemmProvider?> Forced = new();

    private static State Current => StateOverride.Value ?? Shared;

    /// <summary>The provider in force: the one set here (for this thread and the tasks it starts), else
    /// <c>SAESHARP_GEMM</c>'s, else <see cref="GemmProvider.Auto"/>.</summary>
    public static GemmProvider Provider
    {
        get => Forced.Value ?? FromEnvironment() ?? GemmProvider.Auto;
        set => Forced.Value = value;
    }

    /// <summary>Resets <see cref="Provider"/> to the environment's or the default choice.</summary>
    public static void ResetProvider() => Forced.Value = null;

    /// <summary>Whether OpenBLAS was loaded.</summary>
    public static bool Available => Current.Library.Value is not null;

    /// <summary>OpenBLAS's core name (the kernels it chose for this CPU), or null when it is missing.</summary>
    public static string? Core => Current.Library.Value?.Core;

    /// <summary>When set, OpenBLAS runs each call on its own thread pool (as many threads as torch) instead of the split
    /// (the bench compares both).</summary>
    internal static bool OwnThreads { get; set; }

    /// <summary>How many GEMMs OpenBLAS has run for calls from this thread (the tests check which library ran).</summary>
    internal static long OpenBlasCalls => _openBlasCalls;

    [ThreadStatic] private static long _openBlasCalls;

    /// <summary>Test hook, for this thread and the tasks it starts: OpenBLAS loaded from <paramref name="names"/> (a name that
    /// does not exist makes it missing) with no measured choices yet; null returns to the process's library and choices.</summary>
    internal static void ReloadFrom(string[]? names) => StateOverride.Value = names is null ? null : new State(names);

    /// <summary><see cref="ReloadFrom"/> with the default library names: a fresh set of choices.</summary>
    internal static void Remeasure() => ReloadFrom(LibraryNames);

    /// <summary>One line for logs: the provider and OpenBLAS's core.</summary>
    public static string Describe() =>
        $"GEMM {Name(Provider)}{(Provider == GemmProvider.Auto ? $" ({(AutoChoice == GemmProvider.OpenBlas ? "OpenBLAS" : "torch")} on {CpuKernels.Vendor})" : "")}; " +
        $"OpenBLAS {(Available ? $"core {Core}" : "not found")}";

    /// <summary>The name <c>SAESHARP_GEMM</c> takes for a provider.</summary>
    public static string Name(GemmProvider p) => p.ToString().ToLowerInvariant();

    /// <summary>Parses a <c>SAESHARP_GEMM</c> value.</summary>
    public static GemmProvider Parse(string name) =>
        Enum.GetValues<GemmProvider>().FirstOrDefault(p => string.Equals(Name(p), name.Trim(), StringComparison.OrdinalIgnoreCase), (GemmProvider)(-1)) is var p && p >= 0
            ? p
            : throw new SaeSharpException($"{EnvironmentVariable}={name}: expected one of {string.Join(", ", Enum.GetValues<GemmProvider>().Select(Name))}");

    /// <summary><paramref name="a"/>·<paramref name="b"/> [m, n] for float32 matrices; either may be a transposed view of a
    /// contiguous one (read in place).</summary>
    public static Tensor Mm(Tensor a, Tensor b) => Gemm(null, a, b);

    /// <summary><paramref name="bias"/> + <paramref name="a"/>·<paramref name="b"/>, the bias broadcast to [m, n] (torch's addmm
    /// with α = β = 1).</summary>
    public static Tensor AddMm(Tensor bias, Tensor a, Tensor b) => Gemm(bias, a, b);

    private static Tensor TorchGemm(Tensor? bias, Tensor a, Tensor b)
    {
        using var parallel = RowRanges.ParallelTorch();
        return bias is null ? a.mm(b) : addmm(bias, a, b, 1, 1);
    }

    private static Tensor Gemm(Tensor? bias, Tensor a, Tensor b)
    {
        var provider = Provider;
        var state = Current;
        if (provider == GemmProvider.Torch || !Fits(bias, a, b) || state.Library.Value is not { } lib) return TorchGemm(bias, a, b);
        if (provider == GemmProvider.OpenBlas) return OpenBlasGemm(lib, bias, a, b);
        if (provider == GemmProvider.Auto) return AutoPicksOpenBlas(lib) ? OpenBlasGemm(lib, bias, a, b) : TorchGemm(bias, a, b);
        var key = (a.is_contiguous(), b.is_contiguous(), Bucket(a.shape[0]), Bucket(b.shape[1]), Bucket(a.shape[1]));
        bool? useBlas;
        lock (state.Choices) useBlas = state.Choices.TryGetValue(key, out var c) ? c : null;
        if (useBlas is { } known) return known ? OpenBlasGemm(lib, bias, a, b) : TorchGemm(bias, a, b);
        return Measure(state, lib, key, bias, a, b);
    }

    /// <summary>OpenBLAS's cores whose float32 GEMM kernels use AVX2 or AVX-512 (an older OpenBLAS that does not know the
    /// CPU falls back to a generic core such as Prescott, at a fraction of MKL's rate).</summary>
    private static readonly string[] VectorCores = ["Haswell", "Zen", "SkylakeX", "Cooperlake", "SapphireRapids"];

    /// <summary>The rule of <see cref="GemmProvider.Auto"/>.</summary>
    internal static bool AutoPicksOpenBlas(string vendor, string? core) =>
        vendor == "AuthenticAMD" && core is not null && VectorCores.Contains(core, StringComparer.OrdinalIgnoreCase);

    private static bool AutoPicksOpenBlas(Library lib) => AutoPicksOpenBlas(CpuKernels.Vendor, lib.Core);

    /// <summary>The library <see cref="GemmProvider.Auto"/> runs on this machine.</summary>
    public static GemmProvider AutoChoice => Current.Library.Value is { } lib && AutoPicksOpenBlas(lib) ? GemmProvider.OpenBlas : GemmProvider.Torch;

    /// <summary>Times both libraries twice, alternated, on this GEMM, keeps the faster for its shape class (the first
    /// measurement of a class wins if two threads race) and returns the kept library's product.</summary>
    private static Tensor Measure(State state, Library lib, (bool, bool, int, int, int) key, Tensor? bias, Tensor a, Tensor b)
    {
        double torchMs = double.MaxValue, blasMs = double.MaxValue;
        Tensor? fromTorch = null, fromBlas = null;
        for (int round = 0; round < 2; round++)
        {
            fromTorch?.Dispose();
            fromBlas?.Dispose();
            var sw = Stopwatch.StartNew();
            fromTorch = TorchGemm(bias, a, b);
            torchMs = Math.Min(torchMs, sw.Elapsed.TotalMilliseconds);
            sw.Restart();
            fromBlas = OpenBlasGemm(lib, bias, a, b);
            blasMs = Math.Min(blasMs, sw.Elapsed.TotalMilliseconds);
        }
        bool useBlas = blasMs < torchMs;
        lock (state.Choices) useBlas = state.Choices.TryAdd(key, useBlas) ? useBlas : state.Choices[key];
        CpuKernels.VerboseLog?.Invoke($"GEMM [{a.shape[0]}, {a.shape[1]}]·[{b.shape[0]}, {b.shape[1]}]{(bias is null ? "" : " + bias")}: " +
                                      $"OpenBLAS ({lib.Core}) {blasMs:F1} ms, torch {torchMs:F1} ms: {(useBlas ? "OpenBLAS" : "torch")}");
        (useBlas ? fromTorch : fromBlas)!.Dispose();
        return useBlas ? fromBlas! : fromTorch!;
    }

    /// <summary>Shapes within a factor of two share a choice.</summary>
    private static int Bucket(long n) => 64 - (int)ulong.LeadingZeroCount((ulong)n);

    private static bool Fits(Tensor? bias, Tensor a, Tensor b)
    {
        if (a.dtype != ScalarType.Float32 || b.dtype != ScalarType.Float32 || !CpuKernels.On(a) || !CpuKernels.On(b)) return false;
        if (a.dim() != 2 || b.dim() != 2 || a.shape[1] != b.shape[0]) return false;
        if (bias is not null && (bias.dtype != ScalarType.Float32 || !CpuKernels.On(bias))) return false;
        long m = a.shape[0], n = b.shape[1], k = a.shape[1];
        return m > 0 && n > 0 && k > 0 && m < int.MaxValue && n < int.MaxValue && k < int.MaxValue;
    }

    /// <summary>A matrix operand as OpenBLAS reads it: a contiguous base (the matrix itself, or the matrix a transposed view
    /// came from) and whether it is transposed; anything else is copied.</summary>
    private static (Tensor Base, bool Transposed) Operand(Tensor t)
    {
        if (t.is_contiguous()) return (t, false);
        var tt = t.t();
        if (tt.is_contiguous()) return (tt, true);
        tt.Dispose();
        return (t.contiguous(), false);
    }

    private static Tensor OpenBlasGemm(Library lib, Tensor? bias, Tensor a, Tensor b)
    {
        using var scope = NewDisposeScope();
        _openBlasCalls++;
        int m = (int)a.shape[0], n = (int)b.shape[1], k = (int)a.shape[1];
        var (ab, ta) = Operand(a);
        var (bb, tb) = Operand(b);
        var c = empty(m, n, dtype: ScalarType.Float32);
        float beta = 0;
        if (bias is not null)
        {
            c.copy_(bias.expand(m, n));
            beta = 1;
        }
        float* pa = FloatPtr(ab), pb = FloatPtr(bb), pc = FloatPtr(c);
        int lda = ta ? m : k, ldb = tb ? k : n, opA = ta ? Trans : NoTrans, opB = tb ? Trans : NoTrans;
        bool rows = m >= n;
        int parts = OwnThreads || (long)m * n * k < 1 << 21 ? 1 : (int)Math.Min(Math.Min(RowRanges.Threads, rows ? m : n), Math.Max(1, (rows ? m : n) / 32));
        lock (lib)
            lib.SetThreads(OwnThreads ? get_num_threads() : 1);
        if (parts == 1) lib.Sgemm(RowMajor, opA, opB, m, n, k, 1, pa, lda, pb, ldb, beta, pc, n);
        else
        {
            int per = ((rows ? m : n) + parts - 1) / parts;
            KernelThreads.Run(parts, t =>
            {
                int s0 = t * per, len = Math.Min(rows ? m : n, s0 + per) - s0;
                if (len <= 0) return;
                if (rows) lib.Sgemm(RowMajor, opA, opB, len, n, k, 1, ta ? pa + s0 : pa + (long)s0 * lda, lda, pb, ldb, beta, pc + (long)s0 * n, n);
                else lib.Sgemm(RowMajor, opA, opB, m, len, k, 1, pa, lda, tb ? pb + (long)s0 * ldb : pb + s0, ldb, beta, pc + s0, n);
            });
        }
        GC.KeepAlive(ab);
        GC.KeepAlive(bb);
        return c.MoveToOuterDisposeScope();
    }

    private static Library? Load(string[] names)
    {
        foreach (var name in names)
        {
            if (!NativeLibrary.TryLoad(name, out var h)) continue;
            if (!NativeLibrary.TryGetExport(h, "cblas_sgemm", out var sgemm) || !NativeLibrary.TryGetExport(h, "openblas_set_num_threads", out var threads))
                continue;
            string core = NativeLibrary.TryGetExport(h, "openblas_get_corename", out var cn)
                ? Marshal.PtrToStringAnsi(((delegate* unmanaged<IntPtr>)cn)()) ?? "?"
                : "?";
            ((delegate* unmanaged<int, void>)threads)(1);
            return new Library(sgemm, threads, core);
        }
        return null;
    }

    private static GemmProvider? FromEnvironment()
    {
        var v = Environment.GetEnvironmentVariable(EnvironmentVariable);
        return string.IsNullOrWhiteSpace(v) ? null : Parse(v);
    }
}
