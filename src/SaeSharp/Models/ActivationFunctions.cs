using static TorchSharp.torch;

namespace SaeSharp.Models;

/// <summary>Activation functions named as in Hugging Face <c>ACT2FN</c>.</summary>
internal static class ActivationFunctions
{
    public static readonly string[] Supported = ["gelu_new", "gelu_pytorch_tanh", "gelu_fast", "gelu", "relu", "silu", "swish"];

    public static Func<Tensor, Tensor> Get(string name, string configPath) => name switch
    {
        // 0.5·x·(1 + tanh(√(2/π)·(x + 0.044715·x³))), as HF NewGELUActivation and TransformerLens gelu_new.
        "gelu_new" or "gelu_pytorch_tanh" or "gelu_fast" => GeluTanh,
        "gelu" => x => nn.functional.gelu(x),
        "relu" => x => nn.functional.relu(x),
        "silu" or "swish" => x => nn.functional.silu(x),
        _ => throw new SaeSharpException($"{configPath}: activation '{name}' is not supported (supported: {string.Join(", ", Supported)})"),
    };

    private static readonly double Sqrt2OverPi = Math.Sqrt(2.0 / Math.PI);

    public static Tensor GeluTanh(Tensor x)
    {
        using var scope = NewDisposeScope();
        var inner = x.add(x.pow(TorchScalars.Of(3)) * TorchScalars.Of(0.044715), TorchScalars.One) * TorchScalars.Of(Sqrt2OverPi);
        return (x * TorchScalars.Of(0.5) * inner.tanh().add(TorchScalars.Of(1.0), TorchScalars.One)).MoveToOuterDisposeScope();
    }
}
