using SaeSharp.Models;
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

    protected static Tensor Tokens(params long[][] rows) =>
        tensor(rows.SelectMany(r => r).ToArray(), rows.Length, rows[0].Length);

    protected static void AssertAllClose(Tensor expected, Tensor actual, double atol = 1e-5, string? what = null)
    {
        Assert.Equal(expected.shape, actual.shape);
        var diff = (expected.to(ScalarType.Float64) - actual.to(ScalarType.Float64)).abs().max().item<double>();
        Assert.True(diff <= atol, $"{what}: max |difference| {diff} > {atol}");
    }
}
