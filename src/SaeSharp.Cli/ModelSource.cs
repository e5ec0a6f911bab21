using SaeSharp.Hub;
using SaeSharp.LanguageModels;
using SaeSharp.Models;

namespace SaeSharp.Cli;

/// <summary>Turns a <c>--model</c> argument (<c>builtin</c>, local folder or Hugging Face repo id) into a local model folder.</summary>
internal static class ModelSource
{
    /// <summary><c>builtin</c>: the shipped model; a local folder as is; otherwise config, weights and tokenizer files from the hub cache (downloading what is missing).</summary>
    public static string Resolve(string model) => BuiltinModel.IsBuiltin(model) ? BuiltinModel.Folder : HfHub.Resolve(model);

    public static HookedTransformer LoadModel(string model) => ModelLoader.FromPretrained(Resolve(model));
}
