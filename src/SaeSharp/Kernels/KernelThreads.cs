using System.Diagnostics;
using System.Runtime.ExceptionServices;

namespace SaeSharp.Kernels;

/// <summary>
/// The threads the CPU kernels run their parts on: the calling thread and up to <see cref="RowRanges.Threads"/> − 1
/// dedicated workers that, after a part, spin for <see cref="SpinMicroseconds"/> before they block (as OpenMP runtimes
/// do). A training step calls the kernels a dozen times with torch work between the calls; the .NET thread pool's
/// workers go to sleep in those gaps, and on the 2-core VMs of BENCHMARKS.md waking them cost 60–130 µs a call
/// (section "One fork-join pool for the kernels"). A call made while another call runs (from a second thread, or from
/// inside a part) goes to <see cref="Parallel.For(int, int, Action{int})"/>, as every call did before. The caller takes
/// parts too, so a worker that wakes late only slows a call: every part still runs once.
/// </summary>
internal static class KernelThreads
{
    /// <summary>How long a worker spins for the next call before it blocks (100 µs: longer than most gaps between the
    /// kernel calls of a step, short enough not to hold a core from torch's threads for long).</summary>
    public static double SpinMicroseconds { get; set; } =
        double.TryParse(Environment.GetEnvironmentVariable("SAESHARP_KERNEL_SPIN_US"), out var us) && us >= 0 ? us : 100;

    /// <summary>Off: every call goes to Parallel.For (<c>SAESHARP_KERNEL_POOL=0</c>).</summary>
    public static bool Enabled { get; set; } = Environment.GetEnvironmentVariable("SAESHARP_KERNEL_POOL") != "0";

    private sealed class Job(int parts, int threads, Action<int> body)
    {
        public readonly Action<int> Body = body;
        public readonly int Parts = parts;
        /// <summary>The threads this job runs on, the caller's included (read by the workers: torch's thread count is
        /// the caller's, not theirs, under OpenMP).</summary>
        public readonly int Threads = threads;
        public int Next;
        public int Pending = parts;
        public Exception? Error;

        /// <summary>Claims and runs parts until none is left.</summary>
        public void Work()
        {
            int t;
            while ((t = Interlocked.Increment(ref Next) - 1) < Parts)
            {
                try { Body(t); }
                catch (Exception e) { Interlocked.CompareExchange(ref Error, e, null); }
                finally { Interlocked.Decrement(ref Pending); }
            }
        }
    }

    [System.Diagnostics.CodeAnalysis.SuppressMessage("Design", "CA1001", Justification = "a worker lives as long as the process")]
    private sealed class Worker
    {
        public readonly SemaphoreSlim Wake = new(0);
        public int Sleeping;
    }

    private static readonly List<Worker> Workers = [];
    private static Job? _current;
    private static int _generation;
    private static int _busy;
    [ThreadStatic] private static bool _inPart;

    /// <summary>Runs <paramref name="body"/>(t) for t in [0, <paramref name="parts"/>), the parts taken by the calling
    /// thread and the workers as they come free; returns when all have run. The first exception a part throws is
    /// rethrown here (as itself, not wrapped) once every part has finished.</summary>
    public static void Run(int parts, Action<int> body) => Run(parts, parts <= 1 ? 1 : RowRanges.Threads, body);

    /// <summary><see cref="Run(int, Action{int})"/> on at most <paramref name="threads"/> threads (a kernel given its
    /// thread count, which then needs no torch call).</summary>
    public static void Run(int parts, int threads, Action<int> body)
    {
        if (parts <= 0) return;
        if (parts == 1) { body(0); return; }
        threads = Math.Min(Math.Min(parts, threads), Environment.ProcessorCount);
        if (threads <= 1)
        {
            for (int t = 0; t < parts; t++) body(t);
            return;
        }
        if (!Enabled || _inPart || Interlocked.CompareExchange(ref _busy, 1, 0) != 0)
        {
            try { Parallel.For(0, parts, body); }
            catch (AggregateException e) when (e.InnerExceptions.Count > 0) { ExceptionDispatchInfo.Capture(e.InnerExceptions[0]).Throw(); }
            return;
        }
        try
        {
            EnsureWorkers(threads - 1);
            var job = new Job(parts, threads, body);
            Volatile.Write(ref _current, job);
            Interlocked.Increment(ref _generation);
            for (int w = 0; w < threads - 1; w++)
                if (Interlocked.CompareExchange(ref Workers[w].Sleeping, 0, 1) == 1) Workers[w].Wake.Release();
            _inPart = true;
            try { job.Work(); }
            finally { _inPart = false; }
            var spin = new SpinWait();
            while (Volatile.Read(ref job.Pending) > 0) spin.SpinOnce(sleep1Threshold: -1);
            if (job.Error is { } e) ExceptionDispatchInfo.Capture(e).Throw();
        }
        finally
        {
            Volatile.Write(ref _busy, 0);
        }
    }

    private static void EnsureWorkers(int count)
    {
        while (Workers.Count < count)
        {
            var worker = new Worker();
            int index = Workers.Count;
            Workers.Add(worker);
            new Thread(() => Loop(worker, index)) { IsBackground = true, Name = $"SaeSharp kernel {index + 1}" }.Start();
        }
    }

    /// <summary>A worker: waits for a new generation (spinning, then blocked), then works on the current job if it is one
    /// of the threads that job asked for.</summary>
    private static void Loop(Worker self, int index)
    {
        _inPart = true;
        int seen = Volatile.Read(ref _generation);
        while (true)
        {
            long start = Stopwatch.GetTimestamp();
            while (Volatile.Read(ref _generation) == seen)
            {
                if (Stopwatch.GetElapsedTime(start).TotalMicroseconds < SpinMicroseconds)
                {
                    Thread.SpinWait(20);
                    continue;
                }
                // A full fence (not a plain store, which x86 may let pass the load below): a call that bumped the
                // generation before it saw Sleeping = 1 released nothing, so look again first.
                Interlocked.Exchange(ref self.Sleeping, 1);
                if (Volatile.Read(ref _generation) == seen) self.Wake.Wait();
                else if (Interlocked.CompareExchange(ref self.Sleeping, 0, 1) == 0) self.Wake.Wait(); // a release is on its way
                // Sleeping is 0 again here: the call that released this worker reset it, or the exchange above did.
                start = Stopwatch.GetTimestamp();
            }
            seen = Volatile.Read(ref _generation);
            if (Volatile.Read(ref _current) is { } job && index < job.Threads - 1) job.Work();
        }
    }
}
