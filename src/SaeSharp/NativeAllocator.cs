using System.Runtime.InteropServices;

namespace SaeSharp;

/// <summary>
/// glibc malloc tuning for libtorch's CPU tensors. By default glibc serves every allocation above 32 MB with a fresh
/// mmap and unmaps it on free, so each [4096, 8192] activation matrix of a training step is page-faulted in again:
/// a ReLU over one took about 120 ms instead of 20 on the project's machine (BENCHMARKS.md). Raising the mmap and trim
/// thresholds lets freed blocks be reused from the heap. The cost is that up to <c>bytes</c> of freed memory stay with
/// the process instead of going back to the system. The <c>sae</c> CLI and the benches call it at start; library
/// users call it once themselves.
/// </summary>
public static partial class NativeAllocator
{
    private const int MTrimThreshold = -1;
    private const int MMmapThreshold = -3;

    /// <summary>Sets glibc's mmap and trim thresholds to <paramref name="bytes"/> (1 GiB by default). Returns false where it
    /// does not apply (not Linux, not glibc, or glibc refused the value); nothing changes then.</summary>
    public static bool KeepLargeBlocks(int bytes = 1 << 30)
    {
        if (!OperatingSystem.IsLinux()) return false;
        try
        {
            return mallopt(MMmapThreshold, bytes) == 1 && mallopt(MTrimThreshold, bytes) == 1;
        }
        catch (Exception e) when (e is DllNotFoundException or EntryPointNotFoundException)
        {
            return false;
        }
    }

    [LibraryImport("libc", EntryPoint = "mallopt")]
    private static partial int mallopt(int param, int value);
}
