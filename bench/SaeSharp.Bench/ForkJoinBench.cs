using System.Diagnostics;
using SaeSharp.Kernels;

namespace SaeSharp.Bench;

/// <summary>
/// <c>fork-join</c>: what one parallel kernel call costs beyond its work, through <see cref="Parallel.For(int, int, Action{int})"/>
/// and through <see cref="KernelThreads"/>, when the calls come back to back and when serial work of
/// <c>--gaps</c> microseconds separates them (a training step's torch operations between its kernel calls). Each call
/// runs 8 parts of a few microseconds on 2 threads; the figure is mean wall time per call minus the gap's.
/// Usage: <c>fork-join [--calls 20000] [--gaps 0,100,500]</c>.
/// </summary>
internal static class ForkJoinBench
{
    private static readonly double[] Sink = new double[64];

    public static int Run(string[] argv)
    {
        var a = BenchArgs.For("fork-join", argv);
        int calls = a.Int("--calls", 20000);
        var gaps = a.List("--gaps", ["0", "100", "500"]).Select(double.Parse).ToList();
        Console.WriteLine($"{Environment.ProcessorCount} processors; {calls} calls of 8 parts on 2 threads; kernel pool spin {KernelThreads.SpinMicroseconds} µs");
        Action<int> body = t =>
        {
            double s = 0;
            for (int i = 0; i < 200; i++) s += Math.Sqrt(i + t);
            Sink[t * 8 % 64] = s;
        };
        Console.WriteLine("   gap µs   Parallel.For µs/call   KernelThreads µs/call");
        foreach (double gap in gaps)
        {
            int n = gap == 0 ? calls : Math.Max(100, calls / 10);
            double Time(Action<int, Action<int>> run)
            {
                var sw = Stopwatch.StartNew();
                for (int i = 0; i < n; i++)
                {
                    run(8, body);
                    if (gap > 0) Busy(gap);
                }
                return sw.Elapsed.TotalMicroseconds / n;
            }
            double baseline = 0;
            if (gap > 0)
            {
                var sw = Stopwatch.StartNew();
                for (int i = 0; i < n; i++) Busy(gap);
                baseline = sw.Elapsed.TotalMicroseconds / n;
            }
            Time((p, b) => Parallel.For(0, p, b)); // warm-up of both (the pool's first call starts its worker)
            Time((p, b) => KernelThreads.Run(p, 2, b));
            double pf = Time((p, b) => Parallel.For(0, p, b)) - baseline;
            double pool = Time((p, b) => KernelThreads.Run(p, 2, b)) - baseline;
            Console.WriteLine($"{gap,9:F0} {pf,22:F1} {pool,23:F1}");
        }
        return 0;
    }

    private static void Busy(double microseconds)
    {
        long start = Stopwatch.GetTimestamp();
        while (Stopwatch.GetElapsedTime(start).TotalMicroseconds < microseconds) Thread.SpinWait(10);
    }
}
