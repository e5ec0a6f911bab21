using static TorchSharp.torch;

namespace SaeSharp.Kernels;

/// <summary>The one way the kernels split rows over threads: one contiguous range of rows per torch thread (at most one
/// range per row). Range t is [t·per, min(rows, (t+1)·per)); per-range partial results are stored at index t and
/// reduced in range order, so a reduction does not depend on thread timing.</summary>
internal static class RowRanges
{
    /// <summary>The number of ranges <see cref="For(long, Action{int, long, long})"/> runs for <paramref name="rows"/> rows.</summary>
    public static int Count(long rows) => (int)Math.Max(1, Math.Min(get_num_threads(), rows));

    /// <summary>Runs <paramref name="body"/>(t, start, end) for each of the <see cref="Count"/> ranges, in parallel.</summary>
    public static void For(long rows, Action<int, long, long> body)
    {
        int threads = Count(rows);
        long per = (rows + threads - 1) / threads;
        Parallel.For(0, threads, t => body(t, Math.Min(rows, t * per), Math.Min(rows, (t + 1) * per)));
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
