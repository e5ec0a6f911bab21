using System.Runtime.InteropServices;

namespace SaeSharp;

/// <summary>
/// Process set-up for training with libtorch on the CPU (Linux; a no-op elsewhere). The benches call <see cref="Tune"/>
/// and <see cref="SerialTorchInKernelSteps"/> first thing; the <c>sae</c> CLI sets passive OpenMP waits and serial torch
/// steps at start and keeps large blocks when it trains. A training program of your own calls <see cref="Tune"/> once at
/// start, before its first TorchSharp call. Setting SAESHARP_NO_TUNE turns all three off. BENCHMARKS.md has the
/// measurements.
/// </summary>
public static partial class NativeRuntime
{
    private const int MTrimThreshold = -1;
    private const int MMmapThreshold = -3;

    /// <summary>Environment variable that turns <see cref="Tune"/> off (any value), to measure with the defaults.</summary>
    public const string NoTuneVariable = "SAESHARP_NO_TUNE";

    /// <summary><see cref="UsePassiveOpenMpWaits"/>, <see cref="KeepLargeBlocks"/> and, for the calling thread,
    /// <see cref="EnsureSignalStack"/>.</summary>
    public static void Tune()
    {
        UsePassiveOpenMpWaits();
        KeepLargeBlocks();
        EnsureSignalStack();
    }

    [ThreadStatic] private static bool _signalStackChecked;

    /// <summary>Bytes given to a thread's new alternate signal stack: the kernel's minimum frame plus this much for .NET's handler.</summary>
    internal const int SignalHandlerHeadroom = 48 * 1024;

    /// <summary>
    /// Gives the calling thread an alternate signal stack large enough for .NET's signal handler on CPUs with Intel AMX.
    /// .NET turns a null dereference or an integer division by zero into an exception from a signal handler that runs on a
    /// 16 KB alternate stack per thread. Once a thread has run AMX code (libtorch's bfloat16 matrix products do, through
    /// oneDNN, on CPUs with AMX), every signal frame on it carries the 8 KB tile state: the kernel's minimum frame
    /// (<c>AT_MINSIGSTKSZ</c>) is then about 12 KB, the handler overruns what is left, and the process dies with SIGSEGV
    /// instead of throwing <see cref="NullReferenceException"/>. Where the stack is too small for the kernel's minimum plus
    /// 8 KB, this installs one of that minimum plus <see cref="SignalHandlerHeadroom"/> bytes. Once per thread (later calls
    /// are a field read); SaeSharp calls it where its own torch work starts (<see cref="Tune"/>, the CLI, model runs,
    /// training, encoding); call it first on any other thread of yours that runs bfloat16 torch work. Returns whether it
    /// installed a stack. Linux only (SAESHARP_NO_TUNE does not turn it off: it is a fix, not a tuning).
    /// </summary>
    public static bool EnsureSignalStack()
    {
        if (_signalStackChecked) return false;
        _signalStackChecked = true;
        if (!OperatingSystem.IsLinux()) return false;
        try
        {
            ulong minimum = getauxval(AtMinSigStkSz);
            if (minimum == 0) return false;   // the kernel does not say (older than 5.14): no AMX state in its frames either
            StackT old;
            if (sigaltstack(IntPtr.Zero, out old) != 0) return false;
            if ((old.Flags & SsDisable) != 0 || (ulong)old.Size >= minimum + 8 * 1024) return false;
            nuint size = (nuint)((minimum + SignalHandlerHeadroom + 4095) & ~4095UL);
            IntPtr stack = mmap(IntPtr.Zero, size, ProtRead | ProtWrite, MapPrivate | MapAnonymous, -1, 0);
            if (stack == new IntPtr(-1)) return false;
            var replacement = new StackT { Sp = stack, Flags = 0, Size = size };
            if (sigaltstack(in replacement, IntPtr.Zero) == 0) return true;
            _ = munmap(stack, size);
            return false;
        }
        catch (Exception e) when (e is DllNotFoundException or EntryPointNotFoundException)
        {
            return false;
        }
    }

    /// <summary>The calling thread's alternate signal stack size in bytes (0 when it has none or where this is not Linux).</summary>
    public static long SignalStackSize()
    {
        if (!OperatingSystem.IsLinux()) return 0;
        return sigaltstack(IntPtr.Zero, out StackT s) == 0 && (s.Flags & SsDisable) == 0 ? (long)s.Size : 0;
    }

    /// <summary>
    /// Lets <see cref="Training.SaeTrainer"/> run the TopK family's CPU training steps with torch's own operations on one
    /// thread while the kernels keep their threads (<see cref="Kernels.RowRanges.SerialTorch"/>). torch's thread count is
    /// process-wide: call it only in a process whose torch work is that training (the <c>sae</c> CLI and the benches do),
    /// not where other threads run torch operations meanwhile; <see cref="Tune"/> does not call it. Off with
    /// SAESHARP_SERIAL_TORCH=0 or SAESHARP_NO_TUNE.
    /// </summary>
    public static void SerialTorchInKernelSteps() =>
        Kernels.RowRanges.SerialTorchEnabled = Environment.GetEnvironmentVariable(NoTuneVariable) is null
                                                && Environment.GetEnvironmentVariable("SAESHARP_SERIAL_TORCH") != "0";

    private static bool Applies => OperatingSystem.IsLinux() && Environment.GetEnvironmentVariable(NoTuneVariable) is null;

    /// <summary>
    /// Sets OMP_WAIT_POLICY=PASSIVE in the native environment unless the variable is already set. Call it before the first
    /// TorchSharp call: libgomp reads it when loaded. Otherwise libgomp's idle threads spin for milliseconds after every
    /// parallel torch op and take the cores from the .NET-parallel sparse kernels that follow (a TopK training step at
    /// d_sae 8192 on 2 cores: about 20% slower). Returns whether it set the variable.
    /// </summary>
    public static bool UsePassiveOpenMpWaits()
    {
        if (!Applies || Environment.GetEnvironmentVariable("OMP_WAIT_POLICY") is not null) return false;
        try
        {
            return setenv("OMP_WAIT_POLICY", "PASSIVE", 0) == 0;
        }
        catch (Exception e) when (e is DllNotFoundException or EntryPointNotFoundException)
        {
            return false;
        }
    }

    /// <summary>
    /// Sets glibc's mmap and trim thresholds to <paramref name="bytes"/> (1 GiB by default). By default glibc serves every
    /// allocation above 32 MB with a fresh mmap and unmaps it on free, so each [4096, 8192] matrix of a training step is
    /// page-faulted in again: a ReLU over one took about 120 ms instead of 20 here. With the thresholds raised, freed
    /// blocks are reused from the heap. The cost is memory: freed blocks stay with the process, and work that interleaves
    /// large and long-lived allocations (generating a synthetic dataset: 4.5 GB peak instead of 1.2 GB) fragments the heap.
    /// A training loop, which allocates the same sizes every step, stays flat. Returns false where it does not apply (not
    /// glibc, or glibc refused the value); nothing changes then.
    /// </summary>
    public static bool KeepLargeBlocks(int bytes = 1 << 30)
    {
        if (!Applies) return false;
        try
        {
            return mallopt(MMmapThreshold, bytes) == 1 && mallopt(MTrimThreshold, bytes) == 1;
        }
        catch (Exception e) when (e is DllNotFoundException or EntryPointNotFoundException)
        {
            return false;
        }
    }

    private const ulong AtMinSigStkSz = 51;
    private const int SsDisable = 2, ProtRead = 1, ProtWrite = 2, MapPrivate = 0x02, MapAnonymous = 0x20;

    /// <summary>Linux's <c>stack_t</c>.</summary>
    [StructLayout(LayoutKind.Sequential)]
    private struct StackT
    {
        public IntPtr Sp;
        public int Flags;
        public nuint Size;
    }

    [LibraryImport("libc")]
    private static partial ulong getauxval(ulong type);

    [LibraryImport("libc")]
    private static partial int sigaltstack(in StackT ss, IntPtr old);

    [LibraryImport("libc")]
    private static partial int sigaltstack(IntPtr ss, out StackT old);

    [LibraryImport("libc")]
    private static partial IntPtr mmap(IntPtr addr, nuint length, int prot, int flags, int fd, nint offset);

    [LibraryImport("libc")]
    private static partial int munmap(IntPtr addr, nuint length);

    [LibraryImport("libc", StringMarshalling = StringMarshalling.Utf8)]
    private static partial int setenv(string name, string value, int overwrite);

    [LibraryImport("libc")]
    private static partial int mallopt(int param, int value);
}
