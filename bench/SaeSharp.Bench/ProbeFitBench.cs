using System.Diagnostics;
using SaeSharp.Analysis;
using static TorchSharp.torch;

namespace SaeSharp.Bench;

/// <summary>
/// <c>probe-fit</c>: <c>sae probe</c>'s <c>sae_test_accuracy</c> probe (L2 logistic regression, C = 1) on all features of
/// a wide SAE: n training rows × d float32 features, each positive with probability <c>--density</c> (uniform in [0, 2)),
/// labels from the first two columns plus noise. Prints the solver's wall clock, Newton steps, the largest |component| of
/// the objective's gradient at the solution and the process's peak resident memory (from /proc/self/status, so run one
/// density per process to read each peak; the peak is reset through /proc/self/clear_refs just before the fit, so the
/// fit's own peak is read, not the data's). <c>--gram</c> times only the Gram matrix X·Xᵀ three ways instead: from the
/// non-zeros (<c>SparseColumns.Gram</c>, what the fit uses), dense float64 column blocks (the fit's path for dense X) and
/// torch's sparse COO × COO product. Usage: <c>probe-fit [--n 4000] [--d 65536] [--density 0.01] [--gram]</c>.
/// </summary>
internal static class ProbeFitBench
{
    public static int Run(string[] argv)
    {
        var a = new BenchArgs(argv, ["--n", "--d", "--density"], ["--gram"]);
        int n = a.Int("--n", 4000), d = a.Int("--d", 65536);
        double density = double.Parse(a.Value("--density", "0.01"), System.Globalization.CultureInfo.InvariantCulture);
        manual_seed(1);
        using var x = empty(n, d);
        for (long i = 0; i < n; i += 256) // row blocks: no whole-size temporaries before the fit
        {
            using var b = NewDisposeScope();
            long len = Math.Min(256, n - i);
            x.narrow(0, i, len).copy_(rand(len, d).mul(2).mul(rand(len, d).lt(density)));
        }
        var s = x.select(1, 0).sub(x.select(1, 1)).add(rand(n).sub(0.5).mul(0.5)).data<float>().ToArray();
        var y = s.Select(v => v > 0).ToArray();
        if (a.Flag("--gram")) return Gram(x);
        long rssBefore = PeakRssKb(), rssNow = RssKb("VmRSS:");
        bool reset = ResetPeak();
        var sw = Stopwatch.StartNew();
        var probe = LogisticRegression.Fit(x, y);
        sw.Stop();
        long rssFit = PeakRssKb();
        // The gradient of ½‖w‖² + Σ log(1 + e^z) − y·z at the solution, in float64.
        using var scope = NewDisposeScope();
        var x64 = x.to(ScalarType.Float64);
        var z = x64.mv(tensor(probe.Coef)).add(probe.Intercept);
        var r = z.sigmoid().sub(tensor(y.Select(v => v ? 1.0 : 0.0).ToArray()));
        double g = Math.Max(tensor(probe.Coef).add(x64.t().mv(r)).abs().max().item<double>(), Math.Abs(r.sum().item<double>()));
        Console.WriteLine($"probe-fit: n {n}, d {d}, density {density} ({x.count_nonzero().item<long>()} non-zeros), torch threads {get_num_threads()}");
        Console.WriteLine($"  fit {sw.Elapsed.TotalSeconds:F1} s, {probe.Iterations} Newton steps, max |gradient| {g:E2}, train accuracy {probe.Accuracy(x, y):F3}");
        Console.WriteLine($"  peak RSS {rssBefore / 1024} MB with the data made (x float32: {(long)n * d * 4 / 1_000_000} MB), {rssFit / 1024} MB after the fit" +
                          (reset ? $"; RSS {rssNow / 1024} MB just before the fit, so the fit's own peak is {(rssFit - rssNow) / 1024} MB" : " (peak not reset)"));
        return 0;
    }

    private static int Gram(Tensor x)
    {
        var sw = Stopwatch.StartNew();
        var columns = SparseColumns.FromDense(x);
        double build = sw.Elapsed.TotalSeconds;
        using var k = columns.Gram();
        double gram = sw.Elapsed.TotalSeconds - build;
        Console.WriteLine($"gram: n {x.shape[0]}, d {x.shape[1]}, {columns.NonZeros} non-zeros; SparseColumns: {build:F2} s to list the non-zeros, {gram:F2} s for X·Xᵀ");
        {
            using var scope = NewDisposeScope();
            sw.Restart();
            var xs = x.to_sparse().to(ScalarType.Float64);
            double conv = sw.Elapsed.TotalSeconds;
            var ks = xs.mm(xs.t()).to_dense();
            Console.WriteLine($"  torch COO × COO: {conv:F2} s to convert, {sw.Elapsed.TotalSeconds - conv:F2} s for X·Xᵀ; max |difference| {ks.sub(k).abs().max().item<double>():E2}");
        }
        {
            using var scope = NewDisposeScope();
            long n = x.shape[0], d = x.shape[1], block = Math.Max(1, 8_000_000 / n);
            sw.Restart();
            var kd = zeros(n, n, ScalarType.Float64);
            for (long j = 0; j < d; j += block)
            {
                using var b = NewDisposeScope();
                var xc = x.narrow(1, j, Math.Min(block, d - j)).to(ScalarType.Float64);
                kd.addmm_(xc, xc.t());
            }
            Console.WriteLine($"  dense float64 column blocks: {sw.Elapsed.TotalSeconds:F2} s; max |difference| {kd.sub(k).abs().max().item<double>():E2}");
        }
        return 0;
    }

    /// <summary>Resets the process's peak resident memory (VmHWM) to its current size (Linux: "5" to /proc/self/clear_refs).</summary>
    private static bool ResetPeak()
    {
        try { File.WriteAllText("/proc/self/clear_refs", "5"); return true; }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException) { return false; }
    }

    private static long PeakRssKb() => RssKb("VmHWM:");

    private static long RssKb(string field)
    {
        foreach (var line in File.ReadLines("/proc/self/status"))
            if (line.StartsWith(field, StringComparison.Ordinal))
                return long.Parse(line.Split(' ', StringSplitOptions.RemoveEmptyEntries)[1]);
        return 0;
    }
}
