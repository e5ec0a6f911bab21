using System.Diagnostics;
using SaeSharp.Evaluation;
using SaeSharp.Kernels;
using SaeSharp.Models;
using SaeSharp.Saes;
using TorchSharp;
using static TorchSharp.torch;

namespace SaeSharp.Bench;

/// <summary>
/// <c>sae eval --model</c>'s downstream evaluation on a 2-layer GPT-2 with GPT-2's vocabulary (50,257; d_model 256,
/// random weights) and one random ReLU SAE at <c>blocks.1.hook_resid_pre</c>: tokens/s per model pass (clean, SAE
/// spliced, error term, zero and mean ablation: 5 passes) of <see cref="DownstreamEvaluator"/>, against the path it
/// replaced, run here side by side: every pass a full model run to [tokens, vocab] float32 logits, log-softmax per window.
/// </summary>
public static class DownstreamBench
{
    public static int Run(string[] argv)
    {
        var a = BenchArgs.For("downstream", argv);
        int windows = a.Int("--windows", 16), ctx = a.Int("--ctx", 128), batch = a.Int("--batch", 8), repeats = a.Int("--repeats", 2);
        int d = a.Int("--d-model", 256);
        string dir = Path.Combine(Path.GetTempPath(), $"saesharp-bench-gpt2-2l-d{d}-v50257");
        if (!File.Exists(Path.Combine(dir, "config.json")))
            TinyModels.WriteGpt2(dir, seed: 0, nLayer: 2, nEmbd: d, nHead: 4, vocab: 50257, nPositions: Math.Max(ctx, 128));
        using var model = ModelLoader.FromPretrained(dir);
        const string hook = "blocks.1.hook_resid_pre";
        var cfg = new SaeConfig { DIn = d, DSae = 8 * d };
        cfg.Metadata.HookName = hook;
        using var sae = SaeFactory.Create(cfg);
        sae.InitializeWeights(new Generator(3));
        var g = new Random(5);
        var data = Enumerable.Range(0, windows).Select(_ => Enumerable.Range(0, ctx).Select(_ => (long)g.Next(50257)).ToArray()).ToList();
        long passTokens = (long)windows * ctx * 5;
        Console.WriteLine(CpuKernels.Describe());
        Console.WriteLine($"{model.Config.ModelName}: 2 layers, d_model {d}, vocab 50,257; SAE d_sae {8 * d} at {hook}; " +
            $"{windows} windows × {ctx} tokens, batch {batch}; 5 passes; threads {get_num_threads()}");

        if (a.Flag("--profile")) { Profile(model, batch * ctx); return 0; }
        for (int rep = 0; rep < repeats; rep++)
        {
            var sw = Stopwatch.StartNew();
            var m = DownstreamEvaluator.Evaluate(model, [new DownstreamTarget(sae)], data, new DownstreamEvalOptions { BatchSizePrompts = batch })[0];
            double tNew = sw.Elapsed.TotalSeconds;
            sw.Restart();
            var (ceSae, klSae) = FullRecompute(model, sae, hook, data, batch);
            double tOld = sw.Elapsed.TotalSeconds;
            Console.WriteLine($"run {rep + 1}: start at the SAE's block + chunked logits {tNew:F2} s ({passTokens / tNew:N0} tokens/s per pass); " +
                $"full recompute {tOld:F2} s ({passTokens / tOld:N0} tokens/s per pass); {tOld / tNew:F2}×");
            Console.WriteLine($"  CE with SAE {m.CeLossWithSae:F6} vs {ceSae:F6}; KL with SAE {m.KlDivWithSae:F6} vs {klSae:F6}");
        }
        return 0;
    }

    /// <summary>Milliseconds of the unembedding and the softmax work of one batch, whole and in chunks of rows.</summary>
    private static void Profile(HookedTransformer model, int rows)
    {
        using var _ = no_grad();
        var x = randn(rows, model.Config.DModel);
        void T(string what, Action f)
        {
            var best = double.MaxValue;
            for (int i = 0; i < 4; i++)
            {
                using var sc = NewDisposeScope();
                var sw = Stopwatch.StartNew();
                f();
                best = Math.Min(best, sw.Elapsed.TotalMilliseconds);
            }
            Console.WriteLine($"{what,-50} {best,8:F0} ms");
        }
        T($"LogitsOf {rows} rows at once", () => model.LogitsOf(x));
        foreach (int c in new[] { 64, 166, 512 })
            T($"LogitsOf in chunks of {c}", () => { for (int r = 0; r < rows; r += c) model.LogitsOf(x.narrow(0, r, Math.Min(c, rows - r))).Dispose(); });
        var l = model.LogitsOf(x.narrow(0, 0, 166));
        var p = l.softmax(1);
        T("166 rows: logsumexp", () => l.logsumexp(1, keepdim: true));
        T("166 rows: log_softmax", () => l.log_softmax(1));
        T("166 rows: sub + exp", () => (l - 1).exp_());
        T("166 rows: bmm row dot", () => p.unsqueeze(1).bmm(l.unsqueeze(2)));
        T("166 rows: mul + sum", () => (p * l).sum(1));
    }

    /// <summary>The path before: five full runs per batch, each to [b, s, vocab] float32 logits (the mean and error-term
    /// passes are timed, their values not kept). Returns the SAE-spliced CE and KL.</summary>
    private static (double Ce, double Kl) FullRecompute(HookedTransformer model, Sae sae, string hook, List<long[]> data, int batch)
    {
        double ce = 0, kl = 0;
        long n = 0, nCe = 0;
        using var _ = no_grad();
        for (int w0 = 0; w0 < data.Count; w0 += batch)
        {
            using var scope = NewDisposeScope();
            var rows = data.Skip(w0).Take(batch).ToArray();
            int b = rows.Length, s = rows[0].Length;
            var tokens = tensor(rows.SelectMany(r => r).ToArray()).view(b, s);
            var (logits, cache) = model.Run(tokens, new RunOptions { CacheNames = [hook] });
            var logpClean = logits!.log_softmax(-1);
            var act = cache![hook];
            var recon = sae.forward(act.reshape(-1, act.shape[^1])).view(act.shape);
            var mean = act.mean([0, 1]);
            var next = tokens.narrow(1, 1, s - 1).unsqueeze(-1);
            (double, double) Measure(Tensor variant)
            {
                double c = 0, k = 0;
                for (int i = 0; i < b; i++)
                {
                    using var inner = NewDisposeScope();
                    var logp = variant[i].log_softmax(-1);
                    var lc = logpClean[i];
                    c += -logp.narrow(0, 0, s - 1).gather(-1, next[i]).sum().to(ScalarType.Float64).item<double>();
                    k += (lc.exp() * (lc - logp)).sum().to(ScalarType.Float64).item<double>();
                }
                return (c, k);
            }
            var (sc, sk) = Measure(model.RunWithHooks(tokens, (hook, _ => recon)));
            Measure(model.RunWithHooks(tokens, (hook, x => recon + (act - recon))));
            Measure(model.RunWithHooks(tokens, (hook, x => zeros_like(x))));
            Measure(model.RunWithHooks(tokens, (hook, x => mean.expand_as(x))));
            ce += sc;
            kl += sk;
            n += b * s;
            nCe += b * (s - 1);
            cache.Dispose();
        }
        return (ce / nCe, kl / n);
    }
}
