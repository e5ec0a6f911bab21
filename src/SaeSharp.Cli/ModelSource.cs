using SaeSharp.Hub;
using SaeSharp.LanguageModels;
using SaeSharp.Models;

namespace SaeSharp.Cli;

/// <summary>Turns a <c>--model</c> argument (<c>builtin</c>, local folder or Hugging Face repo id) into a local model folder.</summary>
internal static class ModelSource
{
    /// <summary><c>builtin</c>: the shipped model; a local folder as is; otherwise config, weights and tokenizer files from the hub cache (downloading what is missing).</summary>
    public static string Resolve(string model) => Pipelines.ModelPipeline.ResolveModelFolder(model);

    private static readonly Dictionary<(string, string), string> Resolved = [];

    /// <summary>The folder of <paramref name="model"/> at <paramref name="revision"/> (null: main), resolved once per process.</summary>
    public static string Resolve(string model, string? revision)
    {
        if (revision is null) return Resolve(model);
        if (!Resolved.TryGetValue((model, revision), out var folder))
            Resolved[(model, revision)] = folder = Pipelines.ModelPipeline.ResolveModelFolder(model, revision);
        return folder;
    }

    /// <summary><c>--revision</c>: a branch, tag or commit of the <c>--model</c> repo.</summary>
    public static System.CommandLine.Option<string?> RevisionOption() => new("--revision")
    {
        Description = "A branch, tag or commit of the --model repo on the Hugging Face hub (Pythia's training checkpoints: step1000, ...; default main), " +
                      "as TransformerLens's checkpoint_value",
    };

    /// <summary>The <c>--model</c> argument, or with <c>--revision</c> the folder of that revision (so that every later
    /// <see cref="Resolve(string)"/> of it loads that revision).</summary>
    public static string ModelAt(System.CommandLine.ParseResult parse, System.CommandLine.Option<string> model, System.CommandLine.Option<string?> revision) =>
        parse.GetValue(revision) is { } r ? Resolve(parse.GetValue(model)!, r) : parse.GetValue(model)!;

    public static HookedTransformer LoadModel(string model) => ModelLoader.FromPretrained(Resolve(model));

    /// <summary>Loads with the weights held in <paramref name="dtype"/> (a <c>--dtype</c> value, see <see cref="ModelLoader.ParseDtype"/>).</summary>
    public static HookedTransformer LoadModel(string model, string dtype)
    {
        var folder = Resolve(model);
        return ModelLoader.FromPretrained(folder, ModelLoader.ParseDtype(dtype, folder));
    }

    /// <summary><c>--dtype</c>: the dtype model weights are held and run in.</summary>
    public static System.CommandLine.Option<string> DtypeOption() => new("--dtype")
    {
        Description = "Model weights' dtype: float32 (default; eval --model and model run --sae: the dtype the SAEs recorded), bfloat16/bf16, float16/f16, or auto (the checkpoint's torch_dtype)",
        DefaultValueFactory = _ => "float32",
    };

    /// <summary><c>--dtype</c> of a command that takes an SAE or a whole CLT (<c>sae features</c>, <c>inspect</c>, <c>attribute</c>,
    /// <c>graph</c>): the model's dtype, and a CLT's weights' (<see cref="Interop.CrossLayerTranscoderLoader.ForModel"/>).</summary>
    public static System.CommandLine.Option<string> SaeOrCltDtypeOption()
    {
        var dtype = DtypeOption();
        dtype.Description = "Model weights' dtype: float32, bfloat16/bf16, float16/f16, or auto (the checkpoint's torch_dtype); default: the dtype the SAE " +
            "recorded, float32 for a CLT or an SAE that records none; a whole CLT's weights are loaded in bfloat16/float16 beside a model in it";
        dtype.DefaultValueFactory = null;
        return dtype;
    }

    /// <summary>The dtype <paramref name="dtype"/> names when given on the command line (of the model in <paramref name="folder"/>,
    /// for <c>auto</c>); null when left at its default, so the caller's own default applies (an SAE's recorded dtype).</summary>
    public static TorchSharp.torch.ScalarType? GivenDtype(System.CommandLine.ParseResult parse, System.CommandLine.Option<string> dtype, string folder) =>
        parse.GetResult(dtype) is { Implicit: false } ? ModelLoader.ParseDtype(parse.GetValue(dtype)!, folder) : null;
}
