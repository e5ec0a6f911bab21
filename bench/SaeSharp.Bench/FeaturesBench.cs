using System.Diagnostics;
using SaeSharp.Analysis;
using SaeSharp.Models;
using SaeSharp.Saes;
using TorchSharp;
using static TorchSharp.torch;

namespace SaeSharp.Bench;

/// <summary>
/// Throughput and memory of <c>sae features</c> (<see cref="FeatureAnalysis"/>) on a Pythia-70m-sized random GPT-NeoX
/// (the <see cref="HarvestBench"/> model) at <c>blocks.3.hook_resid_post</c> with d_sae 16,384, all features selected:
/// a random ReLU SAE (about half of the features fire on every token: the collector's worst case) and a TopK SAE with
/// k = 64 (a trained SAE's sparsity). Prints tokens/s of the streaming pass, the time of the weight-based effects
/// (logit effects over the 50,304-token vocabulary, similar features) and the peak RSS.
/// </summary>
public static class FeaturesBench
{
    public static int Run(string[] args)
    {
        int batches = BenchArgs.For("features", args).Int("--batches", 24), batch = 8, ctx = 128;
        string dir = HarvestBench.ModelDir();
        using var model = ModelLoader.FromPretrained(dir);
        Console.WriteLine(model.Config);
        Console.WriteLine($"threads: {get_num_threads()}, batch {batch} x ctx {ctx}, {batches} batches ({batches * batch * ctx:N0} tokens), d_sae 16384, all features, top 20, context ±8");
        foreach (var (name, cfg) in new[]
                 {
                     ("relu (random, ~50% density)", new SaeConfig { Architecture = SaeArchitectures.Standard, DIn = 512, DSae = 16384 }),
                     ("topk k=64", new SaeConfig { Architecture = SaeArchitectures.TopK, DIn = 512, DSae = 16384, K = 64 }),
                 })
        {
            cfg.Metadata.HookName = "blocks.3.hook_resid_post";
            using var sae = SaeFactory.Create(cfg);
            sae.InitializeWeights(new Generator(3));
            Measure(name, model, sae, batches, batch, ctx);
        }
        return 0;
    }

    private static void Measure(string name, HookedTransformer model, Sae sae, int batches, int batch, int ctx)
    {
        IEnumerable<long[]> Windows()
        {
            var r = new Random(2);
            while (true) yield return Enumerable.Range(0, ctx).Select(_ => (long)r.Next(50277)).ToArray();
        }
        GC.Collect();
        long peak = 0;
        double streamSeconds = 0;
        using var proc = Process.GetCurrentProcess();
        long before = Rss(proc);
        var cpu0 = proc.TotalProcessorTime;
        TimeSpan cpuStream = default;
        var sw = Stopwatch.StartNew();
        var report = FeatureAnalysis.Run(model, sae, Windows(), new FeatureAnalysisOptions
        {
            BatchSizePrompts = batch, MaxContexts = batches * batch, VocabSize = 50277,
            Progress = p =>
            {
                peak = Math.Max(peak, Rss(proc));
                streamSeconds = p.Elapsed.TotalSeconds;
                proc.Refresh();
                cpuStream = proc.TotalProcessorTime - cpu0;
            },
        });
        double total = sw.Elapsed.TotalSeconds;
        peak = Math.Max(peak, Rss(proc));
        double density = report.Features.Average(f => f.Density);
        proc.Refresh();
        double cpuTotal = (proc.TotalProcessorTime - cpu0).TotalSeconds;
        Console.WriteLine($"{name,-30} stream {report.Tokens / streamSeconds,8:F0} tokens/s wall ({streamSeconds:F1} s; {report.Tokens / cpuStream.TotalSeconds:F0} tokens per CPU-second), " +
                          $"weight effects {total - streamSeconds:F1} s wall / {cpuTotal - cpuStream.TotalSeconds:F1} CPU-s, " +
                          $"mean density {density:P1}, RSS {before >> 20} MB before, peak {peak >> 20} MB");
    }

    private static long Rss(Process p)
    {
        p.Refresh();
        return p.WorkingSet64;
    }
}
