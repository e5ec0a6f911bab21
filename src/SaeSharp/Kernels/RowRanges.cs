using static TorchSharp.torch;

namespace SaeSharp.Kernels;

/// <summary>The one way the kernels split rows over threads: with several torch threads, <see cref="PerThread"/> contiguous
/// ranges of rows per thread (at most one range per row), taken by the threads as they come free. Range t is
/// [t·rows/R, (t+1)·rows/R) for R = <see cref="Count"/>; per-range partial results are stored at index t and reduced in
/// range order, so a reduction does not depend on thread timing.</summary>
internal static class RowRanges
{
    /// <summary>Ranges per thread. With one range per thread a call waited for the slowest thread's half of the rows;
    /// on a host that deschedules a core (a busy or virtualised machine: the 2-core VMs of BENCHMARKS.md lost one core
    /// for milliseconds at a time) that cost up to the whole of the other half. With four, the free threads take the
    /// ranges the late one has not started.</summary>
    public const int PerThread = 4;

    private static int _kernelThreads;

    /// <summary>The kernels' degree of parallelism: torch's intra-op thread count, or inside <see cref="SerialTorch"/> the
    /// count in force when it lowered torch's to one.</summary>
    public static int Threads => _kernelThreads > 0 ? _kernelThreads : Math.Max(1, get_num_threads());

    /// <summary>Whether <see cref="SerialTorch"/> acts (off by default: torch's thread count is process-wide, so a process
    /// that trains beside other torch work must not lower it; <see cref="NativeRuntime.SerialTorchInKernelSteps"/> turns it
    /// on for a process that trains alone, as the <c>sae</c> CLI and the benches do).</summary>
    internal static bool SerialTorchEnabled { get; set; }

    /// <summary>
    /// Until disposed, torch's own operations run on one thread while the kernels keep <see cref="Threads"/> (ranges on
    /// .NET threads); null (nothing to dispose) when not enabled, when torch already runs one thread, or when nested.
    /// For training steps whose large work is the kernels' (the TopK family on the CPU): their torch operations are small
    /// (about 30 a step, 17 in the backward pass), and each parallel one woke libgomp's second thread and waited for its
    /// static half, which on a busy or virtualised 2-core host cost more than the operation (BENCHMARKS.md, "Torch's own
    /// threads"). Large torch operations inside the scope run under <see cref="ParallelTorch"/>.
    /// </summary>
    public static IDisposable? SerialTorch()
    {
        if (!SerialTorchEnabled || _kernelThreads > 0) return null;
        int threads = get_num_threads();
        if (threads <= 1) return null;
        _kernelThreads = threads;
        set_num_threads(1);
        return new Restore(() => { set_num_threads(threads); _kernelThreads = 0; });
    }

    /// <summary>Inside <see cref="SerialTorch"/>, gives torch back the kernels' threads until disposed (a large torch
    /// operation: a bfloat16 product, AuxK's dense form); null outside it.</summary>
    public static IDisposable? ParallelTorch()
    {
        if (_kernelThreads <= 0 || get_num_threads() == _kernelThreads) return null;
        set_num_threads(_kernelThreads);
        return new Restore(() => set_num_threads(1));
    }

    private sealed class Restore(Action undo) : IDisposable
    {
        private Action? _undo = undo;

        public void Dispose()
        {
            _undo?.Invoke();
            _undo = null;
        }
    }

    /// <summary>The number of ranges <see cref="For(long, Action{int, long, long})"/> runs for <paramref name="rows"/> rows.</summary>
    public static int Count(long rows) => (int)Math.Max(1, Math.Min(Threads == 1 ? 1 : (long)Threads * PerThread, rows));

    /// <summary>The first row of range <paramref name="t"/> of <paramref name="ranges"/> over <paramref name="rows"/> rows
    /// (range t ends where range t + 1 starts).</summary>
    public static long Start(long rows, int ranges, int t) => rows * t / ranges;

    /// <summary>Runs <paramref name="body"/>(t, start, end) for each of the <see cref="Count"/> ranges, in parallel (on the
    /// calling thread alone when there is one range).</summary>
    public static void For(long rows, Action<int, long, long> body)
    {
        int ranges = Count(rows);
        if (ranges == 1) { body(0, 0, rows); return; }
        KernelThreads.Run(ranges, t => body(t, Start(rows, ranges, t), Start(rows, ranges, t + 1)));
    }

    /// <summary><see cref="For(long, Action{int, long, long})"/> without the range index.</summary>
    public static void For(long rows, Action<long, long> body) => For(rows, (_, start, end) => body(start, end));

    /// <summary>Σ over the partial arrays, in index order (null entries skipped).</summary>
    public static float[] Sum(float[]?[] partial, int d)
    {
        var total = new float[d];
        foreach (var p in partial)
            if (p is not null)
                for (int j = 0; j < d; j++) total[j] += p[j];
        return total;
    }

    /// <inheritdoc cref="Sum(float[][], int)"/>
    public static long[] Sum(long[]?[] partial, int d)
    {
        var total = new long[d];
        foreach (var p in partial)
            if (p is not null)
                for (int j = 0; j < d; j++) total[j] += p[j];
        return total;
    }
}
