using SaeSharp.Activations;
using SaeSharp.Hub;
using SaeSharp.LanguageModels;
using SaeSharp.Models;
using SaeSharp.Tokenizers;

namespace SaeSharp.Pipelines;

/// <summary>
/// SAELens's <c>exclude_special_tokens</c> on activation files, as its activation store applies it to a cached dataset
/// (<c>_filter_buffer_acts</c>: the rows whose <c>token_ids</c> entry is excluded are dropped). Decides which token ids an
/// <see cref="ActivationFileSource"/> over the files must drop (<see cref="ActivationFileSourceOptions.ExcludeTokenIds"/>).
/// </summary>
public static class ActivationFileExclusion
{
    /// <summary>
    /// The token ids whose rows are dropped when <paramref name="activations"/> is read for a run with exclude_special_tokens
    /// <paramref name="special"/> or the list <paramref name="ids"/>; null when nothing is dropped: neither is set, or the
    /// rows were harvested with that exclusion already (a SaeSharp cache whose manifest excludes those ids). A list needs no
    /// tokenizer; <c>true</c> takes the special tokens (<see cref="ExcludedTokens.SpecialTokenIds"/>) of the model the files
    /// record (a SaeSharp cache's manifest <c>model</c>, a SAELens cache's <c>model_name</c>), else of
    /// <paramref name="modelName"/>, resolved as <c>--model</c> is (<see cref="ModelPipeline.ResolveModelFolder"/>); a model
    /// that is not recorded or cannot be found is an error naming what was looked for. <paramref name="where"/> starts
    /// messages. Whether the files store token ids is checked when they are opened.
    /// </summary>
    public static IReadOnlyCollection<long>? Resolve(string activations, bool? special, IReadOnlyList<long>? ids, string where, string? modelName = null)
    {
        ArgumentNullException.ThrowIfNull(activations);
        if (ids is null ? special != true : ids.Count == 0) return null;
        ActivationCacheManifest? manifest = File.Exists(Path.Combine(activations, ActivationCacheFolder.ManifestName)) ? ActivationCacheManifest.Read(activations) : null;
        var harvested = manifest?.ExcludeTokenIds ?? [];
        if (ids is not null) return ids.All(harvested.Contains) ? null : ids.Distinct().Order().ToArray();
        // true: rows harvested with exclude_special_tokens true already lack the special tokens.
        if (manifest is { ExcludeTokenIdsListed: false } && harvested.Length > 0) return null;
        string? recorded = manifest?.Model is { Length: > 0 } m ? m : SaeLensActivationCache.IsCache(activations) ? SaeLensActivationCache.Open(activations).ModelName : null;
        string origin = recorded is null ? "model_name of the run" : manifest is not null
            ? $"the model of {Path.Combine(activations, ActivationCacheFolder.ManifestName)}"
            : $"model_name of {Path.Combine(activations, SaeLensActivationCache.ConfigFile)}";
        string? name = recorded ?? modelName;
        if (name is null)
            throw new SaeSharpException($"{where}: exclude_special_tokens true: the special tokens are those of the tokenizer of the model the rows came from, and " +
                                        $"{activations} records no model (a SaeSharp cache's manifest model, a SAELens cache's {SaeLensActivationCache.ConfigFile} model_name) " +
                                        "and the run names none (model_name): give exclude_special_tokens as a list of token ids, e.g. [0, 50256]");
        IReadOnlyCollection<long> special2;
        try
        {
            special2 = ExcludedTokens.SpecialTokenIds(Tokenizer.FromFolder(ModelPipeline.ResolveModelFolder(name)));
        }
        catch (SaeSharpException e)
        {
            throw new SaeSharpException($"{where}: exclude_special_tokens true: the tokenizer of '{name}' ({origin}), which defines the special tokens, cannot be found " +
                                        $"({e.Message}); put the model in the Hugging Face cache (HF_HOME), or give exclude_special_tokens as a list of token ids, e.g. [0, 50256]", e);
        }
        return special2.All(harvested.Contains) ? null : special2.Order().ToArray();
    }
}
