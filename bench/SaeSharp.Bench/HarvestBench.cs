using System.Diagnostics;
using SaeSharp.Models;
using TorchSharp;
using static TorchSharp.torch;

namespace SaeSharp.Bench;

/// <summary>
/// Activation-harvest throughput of a Pythia-70m-sized GPT-NeoX (d_model 512, 6 layers, vocab 50304, random
/// weights written by <see cref="TinyModels"/>): tokens/s to cache <c>blocks.3.hook_resid_post</c>, running the
/// whole model versus stopping after block 3 (stopAtLayer 4), and a plain forward for reference.
/// </summary>
public static class HarvestBench
{
    /// <summary>The random Pythia-70m-sized model folder (written once into the temp folder).</summary>
    public static string ModelDir()
    {
        string dir = Path.Combine(Path.GetTempPath(), "saesharp-bench-pythia70m-random");
        if (!File.Exists(Path.Combine(dir, "config.json")))
        {
            Console.WriteLine($"writing a random pythia-70m-sized model to {dir} ...");
            TinyModels.WriteNeoX(dir, seed: 0, nLayer: 6, hiddenSize: 512, nHead: 8, vocab: 50304, maxPositions: 2048,
                rotaryPct: 0.25, parallelResidual: true, intermediateSize: 2048,
                options: new TinyModelOptions { Dtype = ScalarType.Float16, ExtraBuffers = false });
        }
        return dir;
    }

    public static void Run(int batch = 8, int ctx = 128, int iterations = 5)
    {
        string dir = ModelDir();
        using var model = ModelLoader.FromPretrained(dir);
        Console.WriteLine(model.Config);
        Console.WriteLine($"threads: {torch.get_num_threads()}, batch {batch} x ctx {ctx}, {iterations} iterations");
        var tokens = randint(0, 50304, [batch, ctx], dtype: ScalarType.Int64, generator: new Generator(1));
        string[] hook = ["blocks.3.hook_resid_post"];

        Measure("forward (logits)", batch * ctx, iterations, () => model.Forward(tokens).Dispose());
        Measure("cache blocks.3.hook_resid_post, full run", batch * ctx, iterations, () =>
        {
            var (logits, cache) = model.RunWithCache(tokens, hook);
            logits?.Dispose();
            cache.Dispose();
        });
        int? stop = model.HookPoints.StopAtLayerFor(hook);
        Measure($"cache blocks.3.hook_resid_post, stopAtLayer {stop}", batch * ctx, iterations, () =>
        {
            var (_, cache) = model.RunWithCache(tokens, hook, stopAtLayer: stop);
            cache.Dispose();
        });
        HarvestRss(model, ctx, batch, batches: 60);
    }

    /// <summary>Resident memory over a long harvest through the real pipeline (ModelActivationSource, shuffling buffer).</summary>
    private static void HarvestRss(SaeSharp.Models.HookedTransformer model, int ctx, int batch, int batches)
    {
        IEnumerable<long[]> Windows()
        {
            var r = new Random(2);
            while (true) yield return Enumerable.Range(0, ctx).Select(_ => (long)r.Next(50304)).ToArray();
        }
        var spec = SaeSharp.Activations.HarvestSpec.Resolve(model.HookPoints, "blocks.3.hook_resid_post");
        using var src = new SaeSharp.Activations.ModelActivationSource(model, spec, Windows,
            new SaeSharp.Activations.ModelActivationSourceOptions { ContextSize = ctx, BatchSizePrompts = batch, BufferContexts = 64, Seed = 1 });
        var sw = Stopwatch.StartNew();
        Console.WriteLine($"RSS over {batches} batches of 4096 rows through ModelActivationSource (buffer 64 contexts):");
        for (int i = 1; i <= batches; i++)
        {
            using var b = src.Next(4096) ?? throw new InvalidOperationException("source ended");
            if (i % 10 == 0)
            {
                using var proc = Process.GetCurrentProcess();
                Console.WriteLine($"  batch {i,4}: RSS {proc.WorkingSet64 / (1 << 20)} MB, {i * 4096 / sw.Elapsed.TotalSeconds:F0} rows/s");
            }
        }
    }

    private static void Measure(string what, long tokensPerCall, int iterations, Action call)
    {
        call(); // warm-up
        var sw = Stopwatch.StartNew();
        for (int i = 0; i < iterations; i++) call();
        sw.Stop();
        double tps = tokensPerCall * iterations / sw.Elapsed.TotalSeconds;
        Console.WriteLine($"{what,-52} {tps,10:F0} tokens/s  ({sw.Elapsed.TotalMilliseconds / iterations:F1} ms per batch)");
    }
}
