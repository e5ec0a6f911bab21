using SaeSharp.Saes;

namespace SaeSharp.Models;

/// <summary>A whole cross-layer transcoder placed in a model: its hooks resolved and checked against the model's blocks.</summary>
public static class CrossLayerTranscoderHooks
{
    /// <summary>Every layer's input and output hook resolved in <paramref name="model"/> (by layer), after checking that the
    /// model has the CLT's layers and width and that both hooks of layer l are in block l.</summary>
    public static (IReadOnlyList<string> Inputs, IReadOnlyList<string> Outputs) Hooks(this CrossLayerTranscoder clt, HookedTransformer model)
    {
        ArgumentNullException.ThrowIfNull(clt);
        ArgumentNullException.ThrowIfNull(model);
        int n = clt.Cfg.NLayers;
        if (n > model.Config.NLayers)
            throw new SaeSharpException($"the cross-layer transcoder spans {n} layers but the model has {model.Config.NLayers}");
        if (clt.Cfg.DModel != model.Config.DModel)
            throw new SaeSharpException($"the cross-layer transcoder has d_model = {clt.Cfg.DModel} but the model's is {model.Config.DModel}");
        var inputs = Enumerable.Range(0, n).Select(l => model.HookPoints.Resolve(clt.InputHook(l))).ToList();
        var outputs = Enumerable.Range(0, n).Select(l => model.HookPoints.Resolve(clt.OutputHook(l))).ToList();
        for (int l = 0; l < n; l++)
            if (model.HookPoints.LayerOf(inputs[l]) != l || model.HookPoints.LayerOf(outputs[l]) != l)
                throw new SaeSharpException($"cross-layer transcoder layer {l}: hooks '{inputs[l]}' → '{outputs[l]}' are not both in block {l}");
        return (inputs, outputs);
    }
}
