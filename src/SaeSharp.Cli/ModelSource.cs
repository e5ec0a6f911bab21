using SaeSharp.Models;

namespace SaeSharp.Cli;

/// <summary>Turns a <c>--model</c> argument (local folder or hub id) into a local model folder.</summary>
internal static class ModelSource
{
    public static string Resolve(string model)
    {
        if (Directory.Exists(model)) return model;
        throw new SaeSharpException($"--model {model}: no such local folder");
    }

    public static HookedTransformer LoadModel(string model) => ModelLoader.FromPretrained(Resolve(model));
}
