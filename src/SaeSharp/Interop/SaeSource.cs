using System.Text.Json;
using SaeSharp.Hub;
using SaeSharp.Saes;

namespace SaeSharp.Interop;

/// <summary>An SAE argument resolved to local files: the path to load, and the release facts when it named one.</summary>
public sealed record ResolvedSae(string Path, SaeRelease? Release = null, PretrainedSae? Sae = null);

/// <summary>
/// Turns what a user passes as an SAE (<c>--sae</c>) into local files, downloading through <see cref="HfHubClient"/>
/// into the Hugging Face cache:
/// <list type="bullet">
/// <item>an existing file or folder: as it is;</item>
/// <item><c>hf:ORG/REPO[@REVISION][/PATH]</c>: a file (<c>.pt</c>, <c>.npz</c>, <c>.safetensors</c>, with its
/// <c>config.json</c>/<c>cfg.json</c> beside it when there is one) or a folder, whose SAE files are picked from the hub's
/// listing (SAELens <c>cfg.json</c> + <c>sae_weights.safetensors</c>, Gemma Scope <c>params.npz</c>, dictionary_learning
/// <c>ae.pt</c>, Gemma Scope 2 <c>params.safetensors</c> (+ <c>config.json</c>), Llama Scope <c>hyperparams.json</c> +
/// <c>checkpoints/final.safetensors</c>, sparsify <c>cfg.json</c> +
/// <c>sae.safetensors</c>), else the one file in it that a format takes by its name with its companions (connor_rob_hook_z,
/// deepseek_r1, goodfire, temporal, llama_scope_r1_distill); a folder that holds none but whose sub-folders do (a sparsify run) is an error naming them, as
/// is a folder of a whole cross-layer transcoder (nothing downloaded: <see cref="CrossLayerTranscoderLoader.Load(string, Hub.HfHubOptions?, TorchSharp.torch.ScalarType)"/>
/// takes those);</item>
/// <item><c>RELEASE/SAE_ID</c> of <see cref="SaeReleases"/> (as <c>SAE.from_pretrained(release, sae_id)</c>): the files
/// SAELens's loader for the release's format downloads (SAELens, gemma_2, dictionary_learning_1, llama_scope, and the
/// conversions of <see cref="SaeLensConversions"/>).</item>
/// </list>
/// </summary>
public static class SaeSource
{
    /// <summary>The prefix of a hub path.</summary>
    public const string HubPrefix = "hf:";

    /// <summary>The files that make one SAE in a folder given as <c>hf:</c>, by format, relative to the folder: all of
    /// the required ones must be listed; the optional ones are downloaded when listed. The release formats' files are
    /// <see cref="FilesOf"/>'s.</summary>
    private static readonly (string[] Required, string[] Optional)[] FolderLayouts =
    [
        ([SaeLensFormat.CfgFile, SaeLensFormat.WeightsFile], [SaeLensFormat.SparsityFile, SaeLensFormat.ActivationScalerFile]), // SAELens (a trainer's output folder)
        FilesOf("gemma_2")!.Value,                          // Gemma Scope
        ([GemmaScope.Scope2WeightsFile], [GemmaScope.Scope2ConfigFile]), // Gemma Scope 2
        ([DictionaryLearning.WeightsFile], [DictionaryLearning.ConfigFile]), // dictionary_learning (bare ae.pt too), OpenAI sparse_autoencoder
        FilesOf("llama_scope")!.Value,                      // Llama Scope: weights nested in checkpoints/
        ([Sparsify.ConfigFile, Sparsify.WeightsFile], []), // sparsify hookpoint folder
    ];

    /// <summary>True when <paramref name="spec"/> is not a local path but names a hub file or a release.</summary>
    public static bool IsRemote(string spec) =>
        !File.Exists(spec) && !Directory.Exists(spec)
        && (spec.StartsWith(HubPrefix, StringComparison.Ordinal) || SaeReleases.Find(spec.Split('/')[0]) is not null);

    /// <summary>Resolves <paramref name="spec"/> (see the class summary) to a local file or folder, downloading what is
    /// missing from the cache. <paramref name="hub"/> defaults to <see cref="HfHubOptions.FromEnvironment()"/>.</summary>
    public static ResolvedSae Resolve(string spec, HfHubOptions? hub = null)
    {
        ArgumentException.ThrowIfNullOrEmpty(spec);
        if (File.Exists(spec) || Directory.Exists(spec)) return new ResolvedSae(spec);
        if (spec.StartsWith(HubPrefix, StringComparison.Ordinal))
        {
            using var client = new HfHubClient(hub ?? HfHubOptions.FromEnvironment());
            return new ResolvedSae(ResolveHub(client, spec));
        }
        if (SaeReleases.Lookup(spec) is { } found)
        {
            using var client = new HfHubClient(hub ?? HfHubOptions.FromEnvironment());
            return new ResolvedSae(ResolveRelease(client, found.Release, found.Sae), found.Release, found.Sae);
        }
        string first = spec.Split('/')[0];
        if (SaeReleases.Find(first) is { } bare)
            throw new SaeSharpException(
                $"{spec}: '{bare.Release}' is a release; name one of its {bare.Saes.Count} SAEs as RELEASE/SAE_ID, e.g. {bare.Release}/{bare.Saes[0].Id} (`sae releases {bare.Release}` lists them)");
        bool looksLikeRelease = spec.Contains('/') && !first.Contains('.') && !System.IO.Path.IsPathRooted(spec);
        throw new SaeSharpException(
            $"{spec}: no such SAE file or folder, nor RELEASE/SAE_ID of a known release{(looksLikeRelease ? $": no release '{first}'{SaeReleases.Suggest(first)}" : "")} (`sae releases` lists them), nor hf:ORG/REPO[/PATH]");
    }

    /// <summary>Parses <c>hf:ORG/REPO[@REVISION][/PATH]</c>.</summary>
    public static (string Repo, string Revision, string? Path) ParseHub(string spec)
    {
        string rest = spec.StartsWith(HubPrefix, StringComparison.Ordinal) ? spec[HubPrefix.Length..] : spec;
        var parts = rest.Split('/', 3);
        if (parts.Length < 2 || parts[0].Length == 0 || parts[1].Length == 0)
            throw new SaeSharpException($"{spec}: expected hf:ORG/REPO[@REVISION][/PATH]");
        string name = parts[1], revision = "main";
        int at = name.IndexOf('@');
        if (at >= 0) (name, revision) = (name[..at], name[(at + 1)..]);
        string repo = parts[0] + "/" + name;
        string? path = parts.Length == 3 && parts[2].Trim('/').Length > 0 ? parts[2].Trim('/') : null;
        if (!HubPaths.IsRepoId(repo)) throw new SaeSharpException($"{spec}: '{repo}' is not a Hugging Face repo id like 'org/name'");
        if (path is not null && !HubPaths.IsRelativePath(path)) throw new SaeSharpException($"{spec}: '{path}' is not a path inside the repo");
        return (repo, revision, path);
    }

    private static string ResolveHub(HfHubClient client, string spec)
    {
        var (repo, revision, path) = ParseHub(spec);
        // A Llama Scope weights file names its SAE's folder, two levels up (hyperparams.json lies there).
        if (path is not null && (path == LlamaScope.WeightsFile || path.EndsWith("/" + LlamaScope.WeightsFile, StringComparison.Ordinal)))
            path = path[..^LlamaScope.WeightsFile.Length].TrimEnd('/') is { Length: > 0 } folder ? folder : null;
        string ext = System.IO.Path.GetExtension(path ?? "").ToLowerInvariant();
        if (path is not null && ext is ".pt" or ".pth" or ".npz" or ".safetensors")
            return DownloadWithCompanions(client, spec, repo, revision, path);
        string prefix = path is null ? "" : path + "/";
        var inFolder = FolderListing(client, repo, revision, path);
        var layouts = FolderLayouts.Where(l => l.Required.All(inFolder.Contains)).ToList();
        if (layouts.Count == 0)
        {
            // One SAE file that a format takes by its name, with its companions listed beside it (a connor_rob_hook_z
            // NAME.pt + NAME_cfg.json, a temporal latest_ckpt.safetensors + conf.yaml, …): downloaded with them, and
            // the folder loaded as a local folder is. Several: an error naming them.
            string rev = revision == "main" ? "" : "@" + revision;
            var listed = inFolder.Select(f => prefix + f).ToHashSet(StringComparer.Ordinal);
            var files = inFolder.Where(f => !f.Contains('/') && System.IO.Path.GetExtension(f).ToLowerInvariant() is ".pt" or ".pth" or ".npz" or ".safetensors")
                .Where(f => SaeLoader.FolderFileFormats(prefix + f).Any(ff => ff.Companions.All(c => !c.Required || c.AnyOf.Any(listed.Contains))))
                .Order(StringComparer.Ordinal).ToList();
            if (files.Count == 1)
                return System.IO.Path.GetDirectoryName(DownloadWithCompanions(client, spec, repo, revision, prefix + files[0]))!;
            // A whole cross-layer transcoder is not one SAE: said from the listing, before anything is downloaded. Checked
            // after the single files, as a local folder is (SaeLoader): a folder of one circuit-tracer layer
            // (W_enc_0 + W_dec_0 + config.yaml, as `huggingface-cli download` of one layer leaves it) is that layer.
            if (CrossLayerTranscoderLoader.FilesOf(inFolder.Where(f => !f.Contains('/'))).Count > 0)
                throw CrossLayerTranscoderLoader.NotASingleSae(spec);
            if (files.Count > 1)
                throw new SaeSharpException($"{spec}: holds {files.Count} SAE files ({string.Join(", ", files.Take(8))}{(files.Count > 8 ? ", …" : "")}), " +
                    $"one SAE each: point at one, e.g. {HubPrefix}{repo}{rev}/{prefix}{files[0]}");
            // Not an SAE itself: name the sub-folders that hold one (a run of several SAEs, a sparsify run), as a local folder does.
            var subs = inFolder.Where(p => p.Contains('/')).Select(p => p[..p.IndexOf('/')]).Distinct().Order(StringComparer.Ordinal).ToList();
            var holding = subs.Where(d => FolderLayouts.Any(l => l.Required.All(r => inFolder.Contains(d + "/" + r)))).ToList();
            if (holding.Count > 0)
                throw SaeLoader.HoldsSaes(spec, holding, d => $"{HubPrefix}{repo}{rev}/{prefix}{d}");
            throw new SaeSharpException(
                $"{spec}: no SAE files ({string.Join(", ", FolderLayouts.Select(l => string.Join(" + ", l.Required)))}) in {(path ?? "the repo root")}"
                + (subs.Count > 0 ? $"; its folders include {string.Join(", ", subs.Take(10))}" : "")
                + (inFolder.Where(f => !f.Contains('/') && f.EndsWith(".pt", StringComparison.OrdinalIgnoreCase)).Order(StringComparer.Ordinal).FirstOrDefault() is { } pt
                    ? $"; a .pt file (an {SaeLoader.OpenAiFormat} N.pt) is loaded by its own path, e.g. {HubPrefix}{repo}{rev}/{prefix}{pt}" : ""));
        }
        string? saeFolder = null;
        foreach (var name in layouts.SelectMany(l => l.Required.Concat(l.Optional.Where(inFolder.Contains))).Distinct())
        {
            string file = client.DownloadFile(repo, prefix + name, revision)!;
            saeFolder ??= SaeFolderOf(file, name);
        }
        // The sparsify trainer's config.json beside the hookpoint folders names the model.
        if (layouts.Any(l => l.Required.Contains(Sparsify.WeightsFile)) && path is not null)
            client.TryDownloadFile(repo, (path.Contains('/') ? path[..path.LastIndexOf('/')] + "/" : "") + Sparsify.RunConfigFile, revision);
        return saeFolder!;
    }

    /// <summary>Downloads the file <paramref name="path"/> with the companions that the formats taking it by its name read
    /// beside it (<see cref="SaeLoader.FileFormats"/>, the lists their detection of a local file checks): of each
    /// format whose required companions the repo's listing (offline, the cached snapshot's) has, those and the optional
    /// ones listed. When the repo lists the file but no format has what it needs, an error names the missing companions,
    /// before anything is downloaded.</summary>
    private static string DownloadWithCompanions(HfHubClient client, string spec, string repo, string revision, string path)
    {
        var formats = SaeLoader.FileFormats(path);
        var paths = formats.SelectMany(f => f.Companions).SelectMany(c => c.AnyOf).ToList();
        if (paths.Count == 0) return client.DownloadFile(repo, path, revision)!;
        // One listing of the folder that holds the file and every companion (they lie beside it, one folder up or down).
        var parts = paths.Append(path).Select(p => p.Split('/')[..^1]).ToList();
        int common = Enumerable.Range(0, parts.Min(p => p.Length)).TakeWhile(i => parts.All(p => p[i] == parts[0][i])).Count();
        var listed = client.ListFiles(repo, revision, common == 0 ? null : string.Join('/', parts[0][..common]))
            .Select(f => f.Path).ToHashSet(StringComparer.Ordinal);
        bool Listed(SaeCompanion c) => c.AnyOf.Any(listed.Contains);
        var usable = formats.Where(f => f.Companions.All(c => !c.Required || Listed(c))).ToList();
        if (usable.Count == 0 && listed.Contains(path))
        {
            // Offline (or with the hub unreachable) the listing is the cached snapshot's: the repo may well hold what the cache lacks.
            bool offline = client.Options.Offline, unreachable = client.LastListingFromUnreachableHub;
            var missing = formats.Select(f => (f.Format, Missing: f.Companions.Where(c => c.Required && !Listed(c)).ToList())).ToList();
            string fetch = string.Join(" ", missing.SelectMany(m => m.Missing).Select(c => c.AnyOf[0]).Distinct());
            throw SaeSharpException.Lines([
                offline ? $"{spec}: the cached snapshot (offline mode is on: HF_HUB_OFFLINE) lacks files its format needs beside it:"
                    : unreachable ? $"{spec}: the hub could not be reached (listed from the cache), and the cached snapshot lacks files its format needs beside it:"
                    : $"{spec}: the repo lacks files its format needs beside it:",
                .. missing.Select(m => $"  {m.Format} needs {string.Join(" and ", m.Missing)}"),
                .. offline ? [$"download them once online (unset HF_HUB_OFFLINE, or `huggingface-cli download {repo} {fetch}" +
                              $"{(revision == "main" ? "" : " --revision " + revision)}`)"]
                    : unreachable ? [$"try again when {client.Options.Endpoint} can be reached"] : Array.Empty<string>()]);
        }
        string file = client.DownloadFile(repo, path, revision)!;
        foreach (var companion in usable.SelectMany(f => f.Companions).Select(c => c.AnyOf.FirstOrDefault(listed.Contains)).OfType<string>().Distinct())
            client.DownloadFile(repo, companion, revision);
        // The formats that take the file alone are told by its keys (OpenAI's, deepseek_r1's .pt), so it is downloaded;
        // when none of them takes it, the error names what the other formats lack in the repo.
        var lacking = formats.Except(usable).ToList();
        if (lacking.Count > 0 && SaeLoader.DetectFormat(file) is null)
            throw SaeSharpException.Lines([$"{spec}: not a recognised SAE: not {string.Join(" nor ", usable.Select(f => f.Format))} by its keys,",
                client.Options.Offline || client.LastListingFromUnreachableHub
                    ? $"and the cached snapshot ({(client.Options.Offline ? "offline mode is on: HF_HUB_OFFLINE" : "the hub could not be reached")}) lacks files the other formats need beside it:"
                    : "and the repo lacks files the other formats need beside it:",
                .. lacking.Select(f => $"  {f.Format} needs {string.Join(" and ", f.Companions.Where(c => c.Required && !Listed(c)))}")]);
        return file;
    }

    /// <summary>The local folder of the whole cross-layer transcoder that <paramref name="spec"/> (<c>hf:ORG/REPO[@REVISION][/PATH]</c>,
    /// a folder) names, downloading into the cache only its files (<see cref="CrossLayerTranscoderLoader.FilesOf"/>).</summary>
    internal static string ResolveCrossLayerTranscoder(string spec, HfHubOptions? hub)
    {
        var (repo, revision, path) = ParseHub(spec);
        using var client = new HfHubClient(hub ?? HfHubOptions.FromEnvironment());
        var files = HubCrossLayerTranscoderFiles(client, spec, repo, revision, path);
        if (files.Count == 0)
            throw new SaeSharpException($"{spec}: no cross-layer transcoder in {path ?? "the repo root"}: expected circuit-tracer's " +
                "W_enc_0.safetensors, W_dec_0.safetensors, … or Gemma Scope 2's params_layer_0.safetensors, … directly in the folder");
        string prefix = path is null ? "" : path + "/";
        return files.Select(name => SaeFolderOf(client.DownloadFile(repo, prefix + name, revision)!, name)).ToList()[0];
    }

    /// <summary>The files of the whole cross-layer transcoder that <paramref name="spec"/> (<c>hf:ORG/REPO[@REVISION][/PATH]</c>, a
    /// folder) names, from the hub's listing (nothing downloaded; offline, the cached snapshot's); empty when the folder
    /// holds a single SAE's files or no CLT, or the spec names a file.</summary>
    internal static IReadOnlyList<string> HubCrossLayerTranscoderFiles(string spec, HfHubOptions? hub)
    {
        var (repo, revision, path) = ParseHub(spec);
        using var client = new HfHubClient(hub ?? HfHubOptions.FromEnvironment());
        return HubCrossLayerTranscoderFiles(client, spec, repo, revision, path);
    }

    private static IReadOnlyList<string> HubCrossLayerTranscoderFiles(HfHubClient client, string spec, string repo, string revision, string? path)
    {
        if (System.IO.Path.GetExtension(path ?? "").ToLowerInvariant() is ".pt" or ".pth" or ".npz" or ".safetensors") return [];
        var inFolder = FolderListing(client, repo, revision, path);
        if (FolderLayouts.Any(l => l.Required.All(inFolder.Contains))) return [];
        return CrossLayerTranscoderLoader.FilesOf(inFolder.Where(f => !f.Contains('/')));
    }

    /// <summary>The hub's files under <paramref name="path"/> (the repo root when null), relative to it.</summary>
    private static HashSet<string> FolderListing(HfHubClient client, string repo, string revision, string? path)
    {
        string prefix = path is null ? "" : path + "/";
        return client.ListFiles(repo, revision, path).Where(f => f.Path.StartsWith(prefix, StringComparison.Ordinal))
            .Select(f => f.Path[prefix.Length..]).ToHashSet(StringComparer.Ordinal);
    }

    /// <summary>The SAE folder of <paramref name="local"/>, the downloaded file at <paramref name="relative"/> inside it.</summary>
    private static string SaeFolderOf(string local, string relative)
    {
        string folder = local;
        for (int i = 0; i <= relative.Count(c => c == '/'); i++) folder = System.IO.Path.GetDirectoryName(folder)!;
        return folder;
    }

    /// <summary>The files SAELens's loader for each <c>conversion_func</c> downloads, relative to the SAE's path; the
    /// last required one lies directly in the SAE's folder (its folder is what is loaded).</summary>
    private static (string[] Required, string[] Optional)? FilesOf(string? conversion) => conversion switch
    {
        null => ([SaeLensFormat.CfgFile, SaeLensFormat.WeightsFile], [SaeLensFormat.SparsityFile]),
        "gemma_2" => ([GemmaScope.WeightsFile], []),
        "dictionary_learning_1" => ([DictionaryLearning.WeightsFile, DictionaryLearning.ConfigFile], []),
        "llama_scope" => ([LlamaScope.WeightsFile, LlamaScope.HyperparamsFile], []),
        _ => null,
    };

    private static string ResolveRelease(HfHubClient client, SaeRelease release, PretrainedSae sae)
    {
        if (release.Conversion is { } c && SaeLensConversions.Unsupported.ContainsKey(c))
            throw SaeLensConversions.UnsupportedRelease(release, sae);
        if (SaeLensConversions.Handles(release.Conversion)) return SaeLensConversions.Download(client, release, sae);
        var files = FilesOf(release.Conversion) ?? throw new SaeSharpException(
            $"{release.Release}/{sae.Id}: the release is in SAELens's '{release.Conversion}' format, which SaeSharp does not load yet "
            + "(it loads releases in the SAELens, Gemma Scope (gemma_2), dictionary_learning (dictionary_learning_1) and Llama Scope (llama_scope) formats, "
            + $"and SAELens's {string.Join(", ", SaeLensConversions.Names)})");
        string? local = null;
        foreach (var f in files.Required) local = client.DownloadFile(release.RepoId, sae.Path + "/" + f);
        foreach (var f in files.Optional) client.TryDownloadFile(release.RepoId, sae.Path + "/" + f);
        return System.IO.Path.GetDirectoryName(local!)!;
    }

    /// <summary>
    /// Completes a loaded SAE's metadata with what the release table says, as SAELens's <c>from_pretrained</c> does:
    /// the release's <c>config_overrides</c> (<c>model_from_pretrained_kwargs</c>, <c>dataset_path</c>), the Neuronpedia
    /// id (<c>metadata.neuronpedia_id</c>), and the hook and model name where the files did not give them. The dtype is
    /// float32, as SAELens 6.37's <c>from_pretrained</c> (its <c>dtype</c> argument, default "float32", overrides the
    /// loaded config's, and the weights are cast to it; 6.18 kept the files' dtype): saved again, the SAE is float32.
    /// </summary>
    public static void ApplyReleaseFacts(SaeConfig cfg, ResolvedSae resolved)
    {
        ArgumentNullException.ThrowIfNull(cfg);
        ArgumentNullException.ThrowIfNull(resolved);
        if (resolved.Release is not { } release || resolved.Sae is not { } sae) return;
        var meta = cfg.Metadata;
        if (release.ConfigOverrides is { } overrides)
        {
            if (overrides["model_from_pretrained_kwargs"] is { } kwargs)
                meta.ModelFromPretrainedKwargs = JsonSerializer.Deserialize<Dictionary<string, JsonElement>>(kwargs.ToJsonString());
            if (overrides["dataset_path"]?.GetValue<string>() is { } dataset) meta.DatasetPath = dataset;
        }
        cfg.Dtype = "float32";
        meta.HookName ??= sae.Hook;
        meta.ModelName ??= release.Model;
        if (sae.Neuronpedia is { } np)
        {
            meta.Extra ??= [];
            meta.Extra["neuronpedia_id"] = JsonSerializer.SerializeToElement(np);
        }
    }
}
