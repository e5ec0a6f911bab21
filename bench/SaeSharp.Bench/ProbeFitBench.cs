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
        var a = BenchArgs.For("probe-fit", argv);
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
        long rssBefore = ProcessMemory.PeakRssKb(), rssNow = ProcessMemory.RssKb();
        bool reset = ProcessMemory.ResetPeak();
        var sw = Stopwatch.StartNew();
        var probe = LogisticRegression.Fit(x, y);
        sw.Stop();
        long rssFit = ProcessMemory.PeakRssKb();
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

    /// <summary>
    /// <c>probe</c>: the whole <c>SparseProbing</c> evaluation (one label; llm probes on a [n, 64] activation, k-sparse
    /// probes, the probe on all features) on n × d synthetic SAE features at <c>--density</c> (uniform in [0, 2)), the label
    /// from the first two columns plus noise, the first 4/5 of the rows the training half. Default: the features made in
    /// row blocks of 256 straight into their non-zeros (<c>SparseRows</c>, as <c>sae probe --pooling mean</c> holds them);
    /// <c>--dense</c>: made whole as a float32 [n, d] tensor and handed to the public <c>SparseProbing.Evaluate</c>. Prints
    /// the wall clock and the peak RSS (VmHWM, reset just before the features are made). Usage:
    /// <c>probe [--n 5000] [--d 65536] [--density 0.01] [--dense]</c>.
    /// </summary>
    public static int RunProbe(string[] argv)
    {
        var a = BenchArgs.For("probe", argv);
        int n = a.Int("--n", 5000), d = a.Int("--d", 65536);
        double density = double.Parse(a.Value("--density", "0.01"), System.Globalization.CultureInfo.InvariantCulture);
        bool dense = a.Flag("--dense");
        manual_seed(1);
        using var acts = rand(n, 64);
        var fit = Enumerable.Range(0, n).Select(i => i % 5 != 4).ToArray();
        bool reset = ProcessMemory.ResetPeak();
        long rssStart = ProcessMemory.RssKb();
        var sw = Stopwatch.StartNew();
        var score = new float[n];
        var sparse = new SparseRows(n, d);
        Tensor? x = dense ? empty(n, d) : null;
        for (long i = 0; i < n; i += 256)
        {
            using var b = NewDisposeScope();
            long len = Math.Min(256, n - i);
            var block = rand(len, d).mul(2).mul(rand(len, d).lt(density));
            block.select(1, 0).sub(block.select(1, 1)).add(rand(len).sub(0.5).mul(0.5)).data<float>().CopyTo(score.AsSpan((int)i, (int)len));
            if (x is not null) x.narrow(0, i, len).copy_(block);
            else sparse.SetRows([.. Enumerable.Range((int)i, (int)len).Select(r => (long)r)], block);
        }
        var labels = score.Select(v => v > 0 ? new[] { 0 } : []).ToList();
        double made = sw.Elapsed.TotalSeconds;
        var options = new SparseProbingOptions();
        var report = x is not null ? SparseProbing.Evaluate(x, acts, labels, ["label"], fit, options)
            : SparseProbing.EvaluateSparse(sparse, acts, labels, ["label"], fit, options);
        double total = sw.Elapsed.TotalSeconds;
        x?.Dispose();
        var t = report.Tasks.SingleOrDefault() ?? throw new BenchUsageException(
            $"--n {n}: the label has fewer than {options.MinPositives} examples of each class in a split, so there is no task; give a larger --n");
        Console.WriteLine($"probe ({(dense ? "dense features" : "non-zeros")}): n {n}, d {d}, density {density}, torch threads {get_num_threads()}; " +
                          $"{t.TrainExamples} train / {t.TestExamples} test examples, {t.SaeProbeFeatures} firing features");
        Console.WriteLine($"  features made in {made:F1} s, evaluated in {total - made:F1} s; sae_test_accuracy {t.SaeTestAccuracy:F4}, " +
                          $"sae_top_k {string.Join(" ", t.SaeTopK.Select(kv => $"{kv.Key}:{kv.Value:F4}"))}, top features {string.Join(",", t.TopFeatures.Take(5))}");
        Console.WriteLine($"  peak RSS {ProcessMemory.PeakRssKb() / 1024} MB (RSS {rssStart / 1024} MB before the features were made{(reset ? "" : "; peak not reset")})");
        return 0;
    }

    /// <summary>
    /// <c>score-labels</c>: <c>sae score-labels</c> (<c>LabelScoring.Run</c>) on the built-in model with a random TopK SAE
    /// (<c>--d-sae</c> latents, k = <c>--k</c>) at its middle hook over <c>--tokens</c> labelled tokens of a generated story
    /// corpus. Default: the features kept as non-zeros and scored column by column (what the command does). <c>--dense</c>:
    /// the computation before that, written out here: the harvested features made into one float32 [tokens, d_sae] tensor
    /// (what <c>Harvest</c> returned), copied unit-major into a float[] and scored with the dense <c>LabelScorer.Score</c>.
    /// Prints the wall clock and the peak RSS (VmHWM, reset just before the run); by default also the time of the features'
    /// scoring alone (column form, then <c>LabelScorer.Score</c>), run again after the peak was read. Usage:
    /// <c>score-labels [--tokens 16000] [--d-sae 32768] [--k 32] [--dense]</c>.
    /// </summary>
    public static int RunScoreLabels(string[] argv)
    {
        var a = BenchArgs.For("score-labels", argv);
        int tokens = a.Int("--tokens", 16000), dSae = a.Int("--d-sae", 32768), k = a.Int("--k", 32);
        bool dense = a.Flag("--dense");
        string dir = Path.Combine(Path.GetTempPath(), "saesharp-bench-score-labels-" + Environment.ProcessId);
        Directory.CreateDirectory(dir);
        try
        {
            string corpus = Path.Combine(dir, "stories.jsonl");
            SaeSharp.Corpus.LabelledCorpus.Write(corpus, 17, Math.Max(10, tokens / 40));
            var cfg = new SaeSharp.Saes.SaeConfig { Architecture = SaeSharp.Saes.SaeArchitectures.TopK, DIn = 128, DSae = dSae, K = k };
            cfg.Metadata.HookName = SaeSharp.LanguageModels.BuiltinModel.MiddleHook;
            using var sae = SaeSharp.Saes.SaeFactory.Create(cfg);
            sae.InitializeWeights(new Generator(1));
            using var model = SaeSharp.LanguageModels.BuiltinModel.Load();
            var tokenizer = SaeSharp.Tokenizers.Tokenizer.FromFolder(SaeSharp.LanguageModels.BuiltinModel.Folder);
            var options = new LabelScoringOptions { Tokens = tokens };
            bool reset = ProcessMemory.ResetPeak();
            long rssStart = ProcessMemory.RssKb();
            var sw = Stopwatch.StartNew();
            UnitLabelScore[] features;
            long n, nnz, peak;
            string featuresOnly = "";
            double seconds;
            if (!dense)
            {
                var report = LabelScoring.Run(sae, model, null, tokenizer, corpus, options);
                features = [.. report.Features];
                n = report.Tokens;
                seconds = sw.Elapsed.TotalSeconds;
                peak = ProcessMemory.PeakRssKb();
                using var h = LabelScoring.Harvest(sae, model, null, tokenizer, corpus, options); // only to count the non-zeros, after the peak was read
                nnz = h.Features.NonZeros;
                sw.Restart(); // the features' scoring alone, again, on the same tokens
                var columns = SparseColumns.FromRows(h.Features);
                double listed = sw.Elapsed.TotalSeconds;
                LabelScorer.Score(columns, h.TokenLabels, h.LabelNames, h.Fit, options.Scorer);
                featuresOnly = $"; the features alone again: {listed:F1} s to the column form, {sw.Elapsed.TotalSeconds - listed:F1} s to score ({h.LabelNames.Count} labels)";
            }
            else
            {
                using var h = LabelScoring.Harvest(sae, model, null, tokenizer, corpus, options);
                n = h.TokenLabels.Count;
                nnz = h.Features.NonZeros;
                float[] unitMajor;
                int[] all = [.. Enumerable.Range(0, dSae)];
                using (var x = zeros(n, dSae)) // the old Harvest's [n, d_sae] float32, filled in row blocks
                {
                    for (int i = 0; i < n; i += 256)
                    {
                        using var b = NewDisposeScope();
                        int len = (int)Math.Min(256, n - i);
                        x.narrow(0, i, len).copy_(h.Features.Select([.. Enumerable.Range(i, len).Select(r => (long)r)]).Dense(all));
                    }
                    using var scope = NewDisposeScope();
                    unitMajor = x.t().contiguous().data<float>().ToArray();
                }
                features = LabelScorer.Score(unitMajor, dSae, (int)n, h.TokenLabels, h.LabelNames, h.Fit, options.Scorer);
                seconds = sw.Elapsed.TotalSeconds;
                peak = ProcessMemory.PeakRssKb();
            }
            var best = features.Where(f => f.Best is not null).MaxBy(f => f.Best!.F1);
            Console.WriteLine($"score-labels ({(dense ? "dense features" : "non-zeros")}): {n} tokens, d_sae {dSae}, k {k} ({nnz} non-zeros), torch threads {get_num_threads()}");
            Console.WriteLine($"  {seconds:F1} s; alive {features.Count(f => f.Alive)}, mean best F1 {features.Where(f => f.Alive).Average(f => f.Best?.F1 ?? 0):F6}, " +
                              $"best feature {best?.Index} ({best?.Best!.Label} F1 {best?.Best!.F1:F4}){featuresOnly}");
            Console.WriteLine($"  peak RSS {peak / 1024} MB (RSS {rssStart / 1024} MB before the run{(reset ? "" : "; peak not reset")})");
            return 0;
        }
        finally
        {
            Directory.Delete(dir, true);
        }
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

    /// <summary>
    /// <c>fit-l1</c>: the L1 probe (<c>LogisticRegression.FitL1</c>, λ = 0.01, SAEBench's pos_weight) as <c>sae probe
    /// --absorption</c> fits it per parent label: n rows × d SAE-like features, each positive with probability
    /// <c>--density</c> (uniform in [0, 2)), labels from the first two columns plus noise; <c>--density 1</c>: dense Gaussian
    /// rows (TPP's and SCR's L1 probes on model activations). Prints the FISTA steps, the wall clock and the process's CPU
    /// time of the fit. Usage: <c>fit-l1 [--n 20000] [--d 256] [--density 0.0625]</c>.
    /// </summary>
    public static int RunFitL1(string[] argv)
    {
        var a = BenchArgs.For("fit-l1", argv);
        int n = a.Int("--n", 20000), d = a.Int("--d", 256);
        double density = double.Parse(a.Value("--density", "0.0625"), System.Globalization.CultureInfo.InvariantCulture);
        manual_seed(1);
        using var scope = NewDisposeScope();
        var x = density >= 1 ? randn(n, d) : rand(n, d).mul(2).mul(rand(n, d).lt(density));
        var score = x.select(1, 0).sub(x.select(1, 1)).add(rand(n).sub(0.5).mul(0.5)).data<float>().ToArray();
        bool[] y = [.. score.Select(v => v > 0)];
        var process = Process.GetCurrentProcess();
        var cpu = process.TotalProcessorTime;
        var sw = Stopwatch.StartNew();
        var probe = LogisticRegression.FitL1(x, y, 0.01, LogisticRegression.PosWeights(y));
        double wall = sw.Elapsed.TotalSeconds;
        process.Refresh();
        double cpuSeconds = (process.TotalProcessorTime - cpu).TotalSeconds;
        Console.WriteLine($"fit-l1: {n} x {d}, density {density}, {probe.Iterations} FISTA steps, {wall:F2} s wall, {cpuSeconds:F2} s CPU, " +
                          $"non-zero weights {probe.Coef.Count(v => v != 0)}");
        return 0;
    }
}
