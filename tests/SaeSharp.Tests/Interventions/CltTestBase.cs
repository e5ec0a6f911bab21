using SaeSharp.Interop;
using SaeSharp.Models;
using SaeSharp.Saes;
using SaeSharp.Tests.Models;
using SaeSharp.Tests.Saes;
using TorchSharp;
using static TorchSharp.torch;
using static SaeSharp.Tests.Interventions.CrossLayerAttributionTests;

namespace SaeSharp.Tests.Interventions;

/// <summary>The tiny GPT-2s and random float64 CLTs (circuit-tracer's files, reading ln2's output) that the attribution-graph
/// and CLT-intervention tests share.</summary>
public abstract class CltTestBase : ModelTestBase
{
    protected static readonly Tensor Prompt = tensor(new long[] { 5, 11, 23, 42, 7, 19 }, 1, 6);

    protected string ModelDir(int seed = 3) => TinyModels.WriteGpt2(Sub($"g-{Guid.NewGuid():N}"), seed, Layers, DModel, 4, 50, 32);

    /// <summary>The tiny GPT-2 of <see cref="ModelDir"/>, loaded in float64.</summary>
    protected HookedTransformer Model64(int seed = 3) => ModelLoader.FromPretrained(ModelDir(seed), ScalarType.Float64);

    /// <summary>A random 2-layer CLT (JumpReLU, skip) reading ln2's output, float64, and its reference weights; with
    /// <paramref name="perLayer"/> a transcoder set of the same weights' diagonal.</summary>
    private protected (CrossLayerTranscoder Clt, CltReference Ref) MakeClt(int seed, bool skip = true, bool perLayer = false)
    {
        var r = CltReference.Random(Layers, Features, DModel, seed, threshold: true, skip);
        // Thresholds low enough that several features fire on the tiny model.
        r.ScaleThresholds(0.2);
        string folder = Sub($"clt-{Guid.NewGuid():N}");
        if (perLayer) r.WriteTranscoderSet(folder, threshold: true);
        else r.WriteCircuitTracerLn2(folder);
        return (CrossLayerTranscoderLoader.Load(folder, dtype: ScalarType.Float64), r);
    }

    /// <summary>The model at <paramref name="modelDir"/> and a random thresholded CLT (skip, thresholds scaled by 0.2,
    /// reading ln2's output), written to <paramref name="folder"/>, loaded twice: in float32 and in bfloat16, as <c>--dtype bf16</c> loads them.</summary>
    internal static Bf16Pair LoadInBothDtypes(string modelDir, string folder, int cltSeed)
    {
        var r = CltReference.Random(Layers, Features, DModel, cltSeed, threshold: true, skip: true);
        r.ScaleThresholds(0.2);
        r.WriteCircuitTracerLn2(folder);
        return new Bf16Pair(
            ModelLoader.FromPretrained(modelDir, ScalarType.Float32), ModelLoader.FromPretrained(modelDir, ScalarType.BFloat16),
            CrossLayerTranscoderLoader.Load(folder, dtype: CrossLayerTranscoderLoader.ForModel(ScalarType.Float32)),
            CrossLayerTranscoderLoader.Load(folder, dtype: CrossLayerTranscoderLoader.ForModel(ScalarType.BFloat16)));
    }

    /// <summary>A model and CLT in float32 (<see cref="M32"/>, <see cref="C32"/>) and in bfloat16.</summary>
    internal sealed record Bf16Pair(HookedTransformer M32, HookedTransformer M16, CrossLayerTranscoder C32, CrossLayerTranscoder C16) : IDisposable
    {
        public void Dispose()
        {
            M32.Dispose(); M16.Dispose(); C32.Dispose(); C16.Dispose();
        }
    }
}
