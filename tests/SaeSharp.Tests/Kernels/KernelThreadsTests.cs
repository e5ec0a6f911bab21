using SaeSharp.Kernels;
using SaeSharp.Tests.Training;

namespace SaeSharp.Tests.Kernels;

/// <summary><see cref="KernelThreads"/>: each part runs once, errors come back to the caller, and nested, concurrent and
/// sleeping-worker calls neither lose parts nor hang. These tests change the pool's process-wide settings, so they run
/// alone (<see cref="SerialTorchCollection"/>).</summary>
[Collection(SerialTorchCollection.Name)]
public class KernelThreadsTests
{
    private static readonly TimeSpan Limit = TimeSpan.FromSeconds(60);

    /// <summary>Runs <paramref name="work"/> on a task and fails (instead of hanging the suite) if it does not finish.</summary>
    private static void WithinLimit(Action work)
    {
        var task = Task.Run(work);
        Assert.True(task.Wait(Limit), "a KernelThreads call did not return: a lost wake-up or a part that never ran");
    }

    private static void WithSettings(double spinMicroseconds, bool enabled, Action body)
    {
        double spin = KernelThreads.SpinMicroseconds;
        bool on = KernelThreads.Enabled;
        KernelThreads.SpinMicroseconds = spinMicroseconds;
        KernelThreads.Enabled = enabled;
        try { body(); }
        finally
        {
            KernelThreads.SpinMicroseconds = spin;
            KernelThreads.Enabled = on;
        }
    }

    [Theory]
    [InlineData(100, true)]   // workers spinning between calls
    [InlineData(0, true)]     // workers blocked between calls: every call wakes them
    [InlineData(100, false)]  // Parallel.For
    public void Every_part_runs_exactly_once_over_many_calls(double spin, bool enabled) =>
        WithSettings(spin, enabled, () => WithinLimit(() =>
        {
            var rng = new Random(7);
            for (int call = 0; call < 3000; call++)
            {
                int parts = rng.Next(0, 17);
                var runs = new int[parts];
                KernelThreads.Run(parts, threads: 2, t => Interlocked.Increment(ref runs[t]));
                Assert.All(runs, r => Assert.Equal(1, r));
                if (call % 500 == 0) Thread.Sleep(2); // let the workers block
            }
        }));

    [Fact]
    public void A_failing_part_is_rethrown_unwrapped_and_the_pool_runs_the_other_parts()
    {
        foreach (bool enabled in new[] { true, false })
            WithSettings(100, enabled, () => WithinLimit(() =>
            {
                var runs = new int[8];
                var e = Assert.Throws<InvalidOperationException>(() => KernelThreads.Run(8, threads: 2, t =>
                {
                    Interlocked.Increment(ref runs[t]);
                    if (t == 3) throw new InvalidOperationException("part 3");
                }));
                Assert.Equal("part 3", e.Message);
                if (enabled) Assert.All(runs, r => Assert.Equal(1, r)); // Parallel.For stops starting parts after a throw
                // The pool is usable afterwards.
                var after = new int[8];
                KernelThreads.Run(8, threads: 2, t => Interlocked.Increment(ref after[t]));
                Assert.All(after, r => Assert.Equal(1, r));
            }));
    }

    [Fact]
    public void A_call_from_inside_a_part_runs_all_its_parts()
    {
        WithinLimit(() =>
        {
            var inner = new int[6, 5];
            KernelThreads.Run(6, threads: 2, t => KernelThreads.Run(5, threads: 2, u => Interlocked.Increment(ref inner[t, u])));
            foreach (int r in inner) Assert.Equal(1, r);
        });
    }

    [Fact]
    public void Calls_from_several_threads_at_once_each_run_all_their_parts()
    {
        WithinLimit(() =>
        {
            var sums = new long[4];
            Parallel.For(0, 4, caller =>
            {
                for (int call = 0; call < 500; call++)
                {
                    var runs = new int[9];
                    KernelThreads.Run(9, threads: 2, t => Interlocked.Increment(ref runs[t]));
                    foreach (int r in runs) Assert.Equal(1, r);
                    sums[caller] += runs.Sum();
                }
            });
            Assert.All(sums, s => Assert.Equal(500 * 9, s));
        });
    }

    /// <summary>RowRanges.For over the pool covers every row once, in ranges that do not overlap.</summary>
    [Fact]
    public void RowRanges_cover_every_row_once()
    {
        WithinLimit(() =>
        {
            foreach (long rows in new long[] { 1, 2, 7, 8, 9, 1000 })
            {
                var hits = new int[rows];
                RowRanges.For(rows, (start, end) => { for (long r = start; r < end; r++) Interlocked.Increment(ref hits[r]); });
                Assert.All(hits, h => Assert.Equal(1, h));
            }
        });
    }
}
