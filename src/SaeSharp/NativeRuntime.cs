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

    /// <summary><see cref="UsePassiveOpenMpWaits"/> and <see cref="KeepLargeBlocks"/>.</summary>
    public static void Tune()
    {
        UsePassiveOpenMpWaits();
        KeepLargeBlocks();
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

    [LibraryImport("libc", StringMarshalling = StringMarshalling.Utf8)]
    private static partial int setenv(string name, string value, int overwrite);

    [LibraryImport("libc")]
    private static partial int mallopt(int param, int value);
}
