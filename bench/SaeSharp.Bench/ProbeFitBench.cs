using System.Diagnostics;
using SaeSharp.Analysis;
using static TorchSharp.torch;

namespace SaeSharp.Bench;

/// <summary>
/// <c>probe-fit</c>: <c>sae probe</c>'s <c>sae_test_accuracy</c> probe (L2 logistic regression, C = 1) on all features of
/// a wide SAE: n training rows × d float32 features, each positive with probability <c>--density</c> (uniform in [0, 2)),
/// labels from the first two columns plus noise. Prints the solver's wall clock, Newton steps, the largest |component| of
/// the objective's gradient at the solution and the process's peak resident memory (from /proc/self/status, so run one
/// density per process to read each peak). Usage: <c>probe-fit [--n 4000] [--d 65536] [--density 0.01]</c>.
/// </summary>
internal static class ProbeFitBench
{
    public static int Run(string[] argv)
    {
        var a = new BenchArgs(argv, ["--n", "--d", "--density"]);
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
        long rssBefore = PeakRssKb();
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
        Console.WriteLine($"  peak RSS {rssBefore / 1024} MB with the data made (x float32: {(long)n * d * 4 / 1_000_000} MB), {rssFit / 1024} MB after the fit");
        return 0;
    }

    private static long PeakRssKb()
    {
        foreach (var line in File.ReadLines("/proc/self/status"))
            if (line.StartsWith("VmHWM:", StringComparison.Ordinal))
                return long.Parse(line.Split(' ', StringSplitOptions.RemoveEmptyEntries)[1]);
        return 0;
    }
}
