using SaeSharp.Hub;
using SaeSharp.Models;

namespace SaeSharp.Cli;

/// <summary>Turns a <c>--model</c> argument (local folder or Hugging Face repo id) into a local model folder.</summary>
internal static class ModelSource
{
    /// <summary>A local folder as is; otherwise config, weights and tokenizer files from the hub cache (downloading what is missing).</summary>
    public static string Resolve(string model) => HfHub.Resolve(model);

    public static HookedTransformer LoadModel(string model) => ModelLoader.FromPretrained(Resolve(model));
}
