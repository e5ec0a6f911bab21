using SaeSharp.Models;
using SaeSharp.Pipelines;
using SaeSharp.Tests.Tokenizers;
using static TorchSharp.torch;

namespace SaeSharp.Tests.Models;

/// <summary>A temporary folder for tiny checkpoints, deleted after the test.</summary>
public abstract class ModelTestBase : IDisposable
{
    protected readonly string Dir = Directory.CreateTempSubdirectory("models-").FullName;

    public void Dispose()
    {
        Directory.Delete(Dir, true);
        GC.SuppressFinalize(this);
    }

    protected string Sub(string name) => Path.Combine(Dir, name);

    protected HookedTransformer Gpt2(int nLayer = 2, int seed = 1, TinyModelOptions? o = null, int nPositions = 32) =>
        ModelLoader.FromPretrained(TinyModels.WriteGpt2(Sub($"gpt2-{Guid.NewGuid():N}"), seed, nLayer, 16, 4, 50, nPositions, o));

    protected HookedTransformer NeoX(bool parallel, double rotaryPct = 0.5, int nLayer = 2, int seed = 2, TinyModelOptions? o = null) =>
        ModelLoader.FromPretrained(TinyModels.WriteNeoX(Sub($"neox-{Guid.NewGuid():N}"), seed, nLayer, 16, 2, 50, 64, rotaryPct, parallel, 24, o));

    /// <summary>One model of each kind: GPT-2, NeoX parallel (partial rotary), NeoX sequential (full rotary).</summary>
    protected IEnumerable<HookedTransformer> AllKinds()
    {
        yield return Gpt2();
        yield return NeoX(parallel: true, rotaryPct: 0.5);
        yield return NeoX(parallel: false, rotaryPct: 1.0);
    }

    /// <summary>GPT-2's real tokenizer files in <paramref name="model"/>, with <c>&lt;|endoftext|&gt;</c> as BOS and EOS.</summary>
    protected internal static void AddGpt2Tokenizer(string model)
    {
        File.Copy(TestPaths.Data("gpt2-tokenizer", "vocab.json"), Path.Combine(model, "vocab.json"));
        File.Copy(TestPaths.Data("gpt2-tokenizer", "merges.txt"), Path.Combine(model, "merges.txt"));
        File.WriteAllText(Path.Combine(model, "tokenizer_config.json"), """{"bos_token": "<|endoftext|>", "eos_token": "<|endoftext|>"}""");
    }

    /// <summary>A tiny GPT-2 (2 layers, d_model 16) with GPT-2's real tokenizer, and a small text file of 40 lines
    /// ("Line i: the quick brown fox jumps over the lazy dog number 7i.").</summary>
    protected (string Model, string Data) TinyGpt2WithText()
    {
        string model = TinyModels.WriteGpt2(Sub("m"), seed: 4, nLayer: 2, nEmbd: 16, nHead: 4, vocab: 50257, nPositions: 64);
        AddGpt2Tokenizer(model);
        string data = Path.Combine(Dir, "data.txt");
        File.WriteAllLines(data, Enumerable.Range(0, 40).Select(i => $"Line {i}: the quick brown fox jumps over the lazy dog number {i * 7}."));
        return (model, data);
    }

    /// <summary>Two tiny GPT-2 models with the GPT-2 tokenizer and different weights (model diffing's base and chat), and a
    /// text file.</summary>
    protected (string Base, string Chat, string Data) TwoModelsOneTokenizer()
    {
        string b = TinyModels.WriteGpt2(Sub("base"), seed: 4, nLayer: 2, nEmbd: 16, nHead: 4, vocab: 50257, nPositions: 64);
        string c = TinyModels.WriteGpt2(Sub("chat"), seed: 9, nLayer: 2, nEmbd: 16, nHead: 4, vocab: 50257, nPositions: 64);
        AddGpt2Tokenizer(b);
        AddGpt2Tokenizer(c);
        string data = Sub("data.txt");
        File.WriteAllLines(data, Enumerable.Range(0, 30).Select(i => $"Line {i}: the quick brown fox jumps over the lazy dog number {i * 7}."));
        return (b, c, data);
    }

    /// <summary>Every row a model run's source hands out at <paramref name="hook"/>, in harvest order (mixing fraction 0),
    /// as [rows, d], and the context windows it read.</summary>
    protected static (Tensor Rows, long Contexts) Drain(ModelDataOptions opts, string hook)
    {
        using var src = ModelPipeline.OpenSource(opts with { ActivationsMixingFraction = 0 }, hook, bufferContexts: 2, seed: 1);
        var parts = new List<Tensor>();
        while (src.Next(7) is { } b)
        {
            parts.Add(b.Input.clone().DetachFromDisposeScope());
            b.Dispose();
        }
        var rows = cat(parts, 0);
        foreach (var p in parts) p.Dispose();
        return (rows, src.ContextsConsumed);
    }

    protected static Tensor Tokens(params long[][] rows) =>
        tensor(rows.SelectMany(r => r).ToArray(), rows.Length, rows[0].Length);

    protected static void AssertAllClose(Tensor expected, Tensor actual, double atol = 1e-5, string? what = null)
    {
        Assert.Equal(expected.shape, actual.shape);
        var diff = (expected.to(ScalarType.Float64) - actual.to(ScalarType.Float64)).abs().max().item<double>();
        Assert.True(diff <= atol, $"{what}: max |difference| {diff} > {atol}");
    }
}
