using System.Runtime.CompilerServices;
using TorchSharp;

namespace SaeSharp.Tests;

/// <summary>
/// Tensors the garbage collector finalized, process-wide: a tensor nobody disposed. TorchSharp's <c>~Tensor</c> counts
/// itself in the statistics of the thread it runs on (<c>DisposeScopeManager.Statistics</c> is per thread), and every
/// finalizer runs on the one finalizer thread, so a probe object's finalizer reads the total there.
/// </summary>
internal static class FinalizedTensors
{
    private static long _count;

    private sealed class Probe
    {
        ~Probe()
        {
            var s = DisposeScopeManager.Statistics.TensorStatistics;
            Volatile.Write(ref _count, s.DisposedOutsideScopeCount + s.DisposedInScopeCount);
        }
    }

    [MethodImpl(MethodImplOptions.NoInlining)]
    private static void DropProbe() => _ = new Probe();

    /// <summary>Tensors finalized in this process so far, after a full collection has finalized every tensor that is
    /// already unreachable.</summary>
    public static long Count()
    {
        for (int i = 0; i < 2; i++)
        {
            GC.Collect();
            GC.WaitForPendingFinalizers();
        }
        DropProbe();
        GC.Collect();
        GC.WaitForPendingFinalizers();
        return Volatile.Read(ref _count);
    }
}
