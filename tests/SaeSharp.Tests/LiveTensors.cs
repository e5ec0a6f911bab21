using System.Runtime.ExceptionServices;
using TorchSharp;

namespace SaeSharp.Tests;

/// <summary>
/// Leak checks that do not depend on what else runs in the test process. TorchSharp counts live tensors per thread
/// (created minus disposed on that thread). xUnit runs test methods on shared thread-pool threads, and lazily created
/// state (a tensor cached by the first call of some operation in the process) lands on whichever thread gets there
/// first, so a count taken around a first call depends on test order. <see cref="Leaked"/> therefore runs the action
/// once to warm up, then again, on a fresh thread that nothing else uses, and returns the change over the second run.
/// </summary>
internal static class LiveTensors
{
    /// <summary>Live tensors left on a dedicated thread by the second of two runs of <paramref name="action"/>.</summary>
    public static long Leaked(Action action)
    {
        long leaked = 0;
        OnOwnThread(() =>
        {
            action();
            long before = DisposeScopeManager.Statistics.ThreadTotalLiveCount;
            action();
            leaked = DisposeScopeManager.Statistics.ThreadTotalLiveCount - before;
        });
        return leaked;
    }

    /// <summary>Runs <paramref name="test"/> on a fresh thread that nothing else uses (for tests that compare the
    /// thread's live-tensor count at several points themselves, after their own warm-up), rethrowing its failure.</summary>
    public static void OnOwnThread(Action test)
    {
        ExceptionDispatchInfo? error = null;
        var thread = new Thread(() =>
        {
            try
            {
                test();
            }
            catch (Exception e)
            {
                error = ExceptionDispatchInfo.Capture(e);
            }
        }, maxStackSize: 16 << 20);
        thread.Start();
        thread.Join();
        error?.Throw();
    }
}
