using System.Text.Json;
using System.Text.Json.Nodes;

namespace SaeSharp.Hub;

/// <summary>One SAE of a pretrained release: SAELens's <c>sae_id</c>, its folder (or file) in the release's repo, the
/// TransformerLens hook it reads, its Neuronpedia id, the L0 the release table quotes and its <c>norm_scaling_factor</c>
/// (folded into the weights of an "expected_average_only_in" SAE on load, as <c>SAE.from_pretrained</c> does).</summary>
public sealed record PretrainedSae(string Id, string Path, string? Hook, string? Neuronpedia, double? L0, double? NormScalingFactor = null);

/// <summary>A pretrained SAE release as SAELens names it (<c>SAE.from_pretrained(release, sae_id)</c>): the Hugging Face
/// repo holding its files, the model it was trained on, SAELens's <c>conversion_func</c> (which on-disk format the files
/// are in; null is the SAELens format) and the config values SAELens overrides when loading it.</summary>
public sealed record SaeRelease(string Release, string RepoId, string Model, string? Conversion,
    JsonObject? ConfigOverrides, IReadOnlyList<PretrainedSae> Saes)
{
    /// <summary>The SAE with this id, or null.</summary>
    public PretrainedSae? Find(string saeId) => Saes.FirstOrDefault(s => s.Id == saeId);
}

/// <summary>
/// The table of pretrained SAE releases, restated from SAELens's <c>sae_lens/pretrained_saes.yaml</c> (see
/// <see cref="Source"/>) and shipped inside the library as <c>Hub/pretrained_saes.json</c>; regenerate it with
/// <c>scripts/update-pretrained-saes.py</c>. The hooks are derived from the SAE ids and paths (the yaml has none); a
/// transcoder's are null here and given, with its output hook, by <c>SaeLensConversions.ReleaseHooks</c>.
/// </summary>
public static class SaeReleases
{
    private static readonly Lazy<(string Source, string Commit, IReadOnlyList<SaeRelease> All)> Table = new(Read);

    /// <summary>Every release, in name order.</summary>
    public static IReadOnlyList<SaeRelease> All => Table.Value.All;

    /// <summary>Where the table's facts come from: SAELens's yaml at a commit.</summary>
    public static string Source => Table.Value.Source;

    /// <summary>The SAELens commit the table was taken from.</summary>
    public static string Commit => Table.Value.Commit;

    /// <summary>The release with this name, or null.</summary>
    public static SaeRelease? Find(string release) => All.FirstOrDefault(r => r.Release == release);

    /// <summary>
    /// Splits <c>RELEASE/SAE_ID</c> at the first '/' (release names have none; SAE ids may, as Gemma Scope's
    /// <c>layer_12/width_16k/average_l0_82</c>) and looks both up. Null when the release is unknown; an unknown SAE id
    /// of a known release is an error listing a few of its ids.
    /// </summary>
    public static (SaeRelease Release, PretrainedSae Sae)? Lookup(string spec)
    {
        int slash = spec.IndexOf('/');
        if (slash <= 0) return null;
        var release = Find(spec[..slash]);
        if (release is null) return null;
        string id = spec[(slash + 1)..];
        var sae = release.Find(id);
        if (sae is null)
        {
            // The ids containing what was typed, else the nearest by edit distance (blocks.8.hook_resid_post → …resid_pre).
            var ids = release.Saes.Select(s => s.Id).ToList();
            var close = ids.Where(s => s.Contains(id, StringComparison.OrdinalIgnoreCase)).Take(8).ToList();
            var shown = close.Count > 0 ? close
                : ids.OrderBy(s => NameSuggestion.EditDistance(id.ToLowerInvariant(), s.ToLowerInvariant())).ThenBy(s => s, StringComparer.Ordinal).Take(8).ToList();
            throw new SaeSharpException(
                $"release '{release.Release}' has no SAE '{id}'{NameSuggestion.For(id, ids)} ({release.Saes.Count} SAEs; nearest: {string.Join(", ", shown)}; `sae releases {release.Release}` lists them)");
        }
        return (release, sae);
    }

    /// <summary><c> (did you mean …?)</c> for a release name not in the table: the releases whose name contains it or is
    /// contained in it (up to five), else the one within two edits; "" when none is close.</summary>
    public static string Suggest(string name)
    {
        var close = All.Where(r => r.Release.Contains(name, StringComparison.OrdinalIgnoreCase)
                                   || name.Contains(r.Release, StringComparison.OrdinalIgnoreCase)).Take(5).ToList();
        return close.Count == 0 ? NameSuggestion.For(name, All.Select(r => r.Release))
            : $" (did you mean {string.Join(", ", close.Select(r => r.Release))}?)";
    }

    /// <summary>Releases whose model contains <paramref name="model"/> and whose name, repo or model contains
    /// <paramref name="search"/> (both case-insensitive; null matches all). A Hugging Face id's organisation
    /// (<c>EleutherAI/pythia-70m-deduped</c>) is not needed by the table's names that have none (<c>pythia-70m-deduped</c>).</summary>
    public static IEnumerable<SaeRelease> Filter(string? model = null, string? search = null) =>
        All.Where(r => (model is null || r.Model.Contains(model, StringComparison.OrdinalIgnoreCase)
                        || (!r.Model.Contains('/') && model.LastIndexOf('/') is int slash and >= 0
                            && r.Model.Contains(model[(slash + 1)..], StringComparison.OrdinalIgnoreCase)))
                       && (search is null
                           || r.Release.Contains(search, StringComparison.OrdinalIgnoreCase)
                           || r.RepoId.Contains(search, StringComparison.OrdinalIgnoreCase)
                           || r.Model.Contains(search, StringComparison.OrdinalIgnoreCase)));

    private static (string, string, IReadOnlyList<SaeRelease>) Read()
    {
        using var stream = typeof(SaeReleases).Assembly.GetManifestResourceStream("SaeSharp.Hub.pretrained_saes.json")
            ?? throw new SaeSharpException("the pretrained SAE table (SaeSharp.Hub.pretrained_saes.json) is missing from the library");
        var root = JsonNode.Parse(stream)!.AsObject();
        var releases = new List<SaeRelease>();
        foreach (var r in root["releases"]!.AsArray())
        {
            var o = r!.AsObject();
            var saes = o["saes"]!.AsArray().Select(s => new PretrainedSae(
                (string)s!["id"]!, (string)s["path"]!, (string?)s["hook"], (string?)s["neuronpedia"], (double?)s["l0"],
                (double?)s["norm_scaling_factor"])).ToList();
            releases.Add(new SaeRelease((string)o["release"]!, (string)o["repo_id"]!, (string)o["model"]!,
                (string?)o["conversion"], o["config_overrides"]?.DeepClone().AsObject(), saes));
        }
        return ((string)root["source"]!, (string)root["commit"]!, releases.OrderBy(r => r.Release, StringComparer.Ordinal).ToList());
    }
}
