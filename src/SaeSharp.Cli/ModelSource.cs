using SaeSharp.Hub;
using SaeSharp.LanguageModels;
using SaeSharp.Models;

namespace SaeSharp.Cli;

/// <summary>Turns a <c>--model</c> argument (<c>builtin</c>, local folder or Hugging Face repo id) into a local model folder.</summary>
internal static class ModelSource
{
    /// <summary><c>builtin</c>: the shipped model; a local folder as is; otherwise config, weights and tokenizer files from the hub cache (downloading what is missing).</summary>
    public static string Resolve(string model) => Pipelines.ModelPipeline.ResolveModelFolder(model);

    private static readonly System.Collections.Concurrent.ConcurrentDictionary<(string, string, string?, string?), string> Resolved = [];

    /// <summary>The folder of <paramref name="model"/> at <paramref name="revision"/> (null: main), resolved once per process
    /// and hub cache (HF_HUB_CACHE, HF_HOME), again when the folder is gone.</summary>
    public static string Resolve(string model, string? revision)
    {
        if (revision is null) return Resolve(model);
        var key = (model, revision, Environment.GetEnvironmentVariable("HF_HUB_CACHE"), Environment.GetEnvironmentVariable("HF_HOME"));
        if (!Resolved.TryGetValue(key, out var folder) || !Directory.Exists(folder))
            Resolved[key] = folder = Pipelines.ModelPipeline.ResolveModelFolder(model, revision);
        return folder;
    }

    /// <summary><c>--revision</c>: a branch, tag or commit of the <c>--model</c> repo.</summary>
    public static System.CommandLine.Option<string?> RevisionOption() => new("--revision")
    {
        Description = "A branch, tag or commit of the --model repo on the Hugging Face hub (Pythia's training checkpoints: step1000, ...; default main), " +
                      "as TransformerLens's checkpoint_value",
    };

    /// <summary>The <c>--model</c> argument, or with <c>--revision</c> the folder of that revision (so that every later
    /// <see cref="Resolve(string)"/> of it loads that revision). A <c>--model</c> of <see cref="AtRevision"/> is resolved
    /// at its command's <c>--revision</c> already.</summary>
    public static string ModelAt(System.CommandLine.ParseResult parse, System.CommandLine.Option<string> model, System.CommandLine.Option<string?> revision) =>
        parse.GetValue(revision) is { } r && !RevisionAware.TryGetValue(model, out _) ? Resolve(parse.GetValue(model)!, r) : parse.GetValue(model)!;

    /// <summary>The <c>--model</c> options of <see cref="AtRevision"/> (built per command line; weakly held), each with the
    /// name of the revision option beside it (<c>--revision</c>; <c>--diff-revision</c> for <c>--diff-model</c>).</summary>
    private static readonly System.Runtime.CompilerServices.ConditionalWeakTable<System.CommandLine.Option, string> RevisionAware = [];

    /// <summary><c>--diff-revision</c>: a branch, tag or commit of the <c>--diff-model</c> repo.</summary>
    public static System.CommandLine.Option<string?> DiffRevisionOption() => new(DiffRevision)
    {
        Description = "A branch, tag or commit of the --diff-model repo on the Hugging Face hub (default main)",
    };

    /// <summary>The name of <see cref="DiffRevisionOption"/>.</summary>
    public const string DiffRevision = "--diff-revision";

    /// <summary>Makes <paramref name="model"/> (a command's <c>--model</c>, or with <paramref name="revisionOption"/>
    /// <c>--diff-revision</c> its <c>--diff-model</c>) read its value at the command's <paramref name="revisionOption"/>:
    /// given a revision, its value is the folder of the model at that revision (so every use of it, loading, tokenizing,
    /// naming, sees that checkpoint); an unknown revision is a parse error naming the repo and revision. <see cref="AddRevisionOptions"/>
    /// gives every command with such an option its revision option: one place for all commands.</summary>
    public static System.CommandLine.Option<T> AtRevision<T>(System.CommandLine.Option<T> model, string revisionOption = "--revision") where T : class?
    {
        ArgumentNullException.ThrowIfNull(model);
        RevisionAware.AddOrUpdate(model, revisionOption);
        model.CustomParser = result => (T?)(object?)ParseAtRevision(result, revisionOption);
        return model;
    }

    /// <summary>The option's value, or with its revision option given the folder of that revision (an unknown one: a parse error).</summary>
    private static string? ParseAtRevision(System.CommandLine.Parsing.ArgumentResult result, string revisionOption)
    {
        if (result.Tokens.Count == 0) return null;
        string value = result.Tokens[^1].Value;
        if (GivenRevision(result, revisionOption) is not { } revision) return value;
        try
        {
            return Resolve(value, revision);
        }
        catch (SaeSharpException e)
        {
            result.AddError(revisionOption == "--revision" ? e.Message : $"{revisionOption} {revision}: {e.Message}");
            return null;
        }
    }

    /// <summary>The value of the option <paramref name="name"/> (one value) given beside the option <paramref name="result"/> belongs to; null when not given.</summary>
    private static string? GivenRevision(System.CommandLine.Parsing.SymbolResult result, string name)
    {
        for (var r = result.Parent; r is not null; r = r.Parent)
            if (r is System.CommandLine.Parsing.CommandResult command)
                return command.Children.OfType<System.CommandLine.Parsing.OptionResult>()
                    .FirstOrDefault(o => o.Option.Name == name && o.Option.ValueType == typeof(string))?.Tokens is { Count: > 0 } t ? t[^1].Value : null;
        return null;
    }

    /// <summary>The command's <c>--revision</c> (of one value; or <paramref name="name"/>), null when not given or the command has none.</summary>
    public static string? RevisionOf(System.CommandLine.ParseResult parse, string name = "--revision") =>
        parse.CommandResult.Command.Options.FirstOrDefault(o => o.Name == name && o.ValueType == typeof(string)) is System.CommandLine.Option<string> r
            ? parse.GetValue(r) : null;

    /// <summary>Adds <see cref="RevisionOption"/> to every command under <paramref name="root"/> whose <c>--model</c> is
    /// <see cref="AtRevision"/> and that has no <c>--revision</c> of its own, and <see cref="DiffRevisionOption"/> to those
    /// whose <c>--diff-model</c> is.</summary>
    public static void AddRevisionOptions(System.CommandLine.Command root)
    {
        ArgumentNullException.ThrowIfNull(root);
        foreach (var sub in root.Subcommands) AddRevisionOptions(sub);
        foreach (var option in root.Options.ToList())
            if (RevisionAware.TryGetValue(option, out var name) && !root.Options.Any(o => o.Name == name))
            {
                if (name != DiffRevision)
                {
                    root.Options.Add(RevisionOption());
                    continue;
                }
                var revision = DiffRevisionOption();
                root.Options.Add(revision);
                // A --diff-revision of no --diff-model would be dropped unseen.
                root.Validators.Add(result =>
                {
                    if (result.GetResult(revision) is { Implicit: false } && result.GetResult(option) is null)
                        result.AddError($"{DiffRevision} {result.GetValue(revision)}: a revision of --diff-model; give --diff-model too");
                });
            }
    }

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
