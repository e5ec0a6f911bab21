using SaeSharp.IO;
using SaeSharp.Models;
using static TorchSharp.torch;

namespace SaeSharp.Tests.Models;

/// <summary>Logits against hand-written double-precision forward passes (Reference), independent of the model code.</summary>
public class ReferenceForwardTests : ModelTestBase
{
    [Fact]
    public void Gpt2OneLayerDModel4MatchesHandComputedForward()
    {
        var dir = TinyModels.WriteGpt2(Sub("g"), seed: 5, nLayer: 1, nEmbd: 4, nHead: 2, vocab: 7, nPositions: 8);
        var w = SafeTensors.Load(Path.Combine(dir, "model.safetensors"));
        long[] toks = [3, 0, 6, 2, 2];
        var expected = Reference.Gpt2(w, 1, 2, toks, Reference.GeluNew);
        using var model = ModelLoader.FromPretrained(dir);
        var logits = model.Forward(tensor(toks).unsqueeze(0));
        Assert.Equal(new long[] { 1, 5, 7 }, logits.shape);
        Assert.Equal(ScalarType.Float32, logits.dtype);
        Reference.AssertClose(expected, logits[0], 1e-4);
    }

    [Fact]
    public void Gpt2TwoLayersMatchesReference()
    {
        var dir = TinyModels.WriteGpt2(Sub("g2"), seed: 9, nLayer: 2, nEmbd: 8, nHead: 2, vocab: 11, nPositions: 16);
        var w = SafeTensors.Load(Path.Combine(dir, "model.safetensors"));
        long[] toks = [1, 10, 4, 4, 0, 7];
        using var model = ModelLoader.FromPretrained(dir);
        Reference.AssertClose(Reference.Gpt2(w, 2, 2, toks, Reference.GeluNew), model.Forward(tensor(toks).unsqueeze(0))[0], 1e-4);
    }

    [Fact]
    public void ModuleCallRunsTheTorchSharpForwardAndFiresModuleHooks()
    {
        var dir = TinyModels.WriteNeoX(Sub("call"), seed: 4, nLayer: 2);
        var w = SafeTensors.Load(Path.Combine(dir, "model.safetensors"));
        long[] toks = [2, 7, 1, 8];
        using var model = ModelLoader.FromPretrained(dir);
        int fired = 0;
        long[]? seenShape = null;
        var handle = model.register_forward_hook((_, input, output) =>
        {
            fired++;
            seenShape = output.shape;
            return output;
        });
        var logits = model.call(tensor(toks).unsqueeze(0));
        handle.remove();
        Assert.Equal(1, fired);
        Assert.Equal(logits.shape, seenShape);
        Reference.AssertClose(Reference.NeoX(w, 2, 2, 0.25, true, toks, Reference.GeluErf), logits[0], 2e-4);
    }

    [Theory]
    [InlineData(true, 0.5)]
    [InlineData(false, 0.5)]
    [InlineData(true, 1.0)]
    [InlineData(false, 1.0)]
    [InlineData(true, 0.25)]
    public void NeoXMatchesReference(bool parallel, double rotaryPct)
    {
        // head_dim 8: rotary_pct 0.25 rotates 2 dims, 0.5 rotates 4, 1.0 all 8.
        var dir = TinyModels.WriteNeoX(Sub("n"), seed: 4, nLayer: 2, hiddenSize: 16, nHead: 2, vocab: 13, maxPositions: 32,
            rotaryPct: rotaryPct, parallelResidual: parallel, intermediateSize: 20);
        var w = SafeTensors.Load(Path.Combine(dir, "model.safetensors"));
        long[] toks = [12, 3, 3, 0, 5, 9, 1];
        using var model = ModelLoader.FromPretrained(dir);
        Assert.Equal(parallel, model.Config.ParallelAttnMlp);
        Assert.Equal((int)(8 * rotaryPct), model.Config.RotaryDim);
        Reference.AssertClose(Reference.NeoX(w, 2, 2, rotaryPct, parallel, toks, Reference.GeluErf), model.Forward(tensor(toks).unsqueeze(0))[0], 2e-4);
    }

    [Fact]
    public void ActivationFunctionsFollowConfig()
    {
        var dir = TinyModels.WriteGpt2(Sub("relu"), seed: 3, nLayer: 1, nEmbd: 8, nHead: 2, vocab: 9, nPositions: 8,
            options: new TinyModelOptions { Activation = "relu" });
        var w = SafeTensors.Load(Path.Combine(dir, "model.safetensors"));
        long[] toks = [1, 2, 3];
        using var model = ModelLoader.FromPretrained(dir);
        Reference.AssertClose(Reference.Gpt2(w, 1, 2, toks, x => Math.Max(0, x)), model.Forward(tensor(toks).unsqueeze(0))[0], 1e-4);
    }
}
