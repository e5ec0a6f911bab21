using SaeSharp.Models;

namespace SaeSharp.LanguageModels;

/// <summary>
/// The small GPT-NeoX-layout model SaeSharp ships (repository folder <c>models/builtin</c>, copied next to the
/// binaries): trained by <c>sae lm train</c> on the labelled story corpus of <c>sae corpus</c>. Anywhere a model is
/// named, <c>builtin</c> names it.
/// </summary>
public static class BuiltinModel
{
    /// <summary>The name that selects the built-in model.</summary>
    public const string Name = "builtin";

    /// <summary>Hook the demo and the recipes use: the residual stream after the middle block.</summary>
    public const string MiddleHook = "blocks.1.hook_resid_post";

    /// <summary>True for <c>builtin</c> (any case).</summary>
    public static bool IsBuiltin(string model) => string.Equals(model, Name, StringComparison.OrdinalIgnoreCase);

    /// <summary>The model folder: <c>models/builtin</c> beside the binaries, else in the repository above them.</summary>
    public static string Folder
    {
        get
        {
            for (var dir = new DirectoryInfo(AppContext.BaseDirectory); dir is not null; dir = dir.Parent)
            {
                string candidate = Path.Combine(dir.FullName, "models", "builtin");
                if (File.Exists(Path.Combine(candidate, "config.json")) && File.Exists(Path.Combine(candidate, "model.safetensors"))) return candidate;
            }
            throw new SaeSharpException($"the built-in model (models/builtin with config.json and model.safetensors) was not found beside {AppContext.BaseDirectory} or above it");
        }
    }

    /// <summary><c>builtin</c> becomes <see cref="Folder"/>; anything else is returned unchanged.</summary>
    public static string Resolve(string model) => IsBuiltin(model) ? Folder : model;

    /// <summary>Loads the built-in model.</summary>
    public static HookedTransformer Load() => ModelLoader.FromPretrained(Folder);
}
