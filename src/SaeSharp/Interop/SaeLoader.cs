using SaeSharp.Hub;
using SaeSharp.Saes;

namespace SaeSharp.Interop;

/// <summary>How <see cref="SaeLoader"/> finds and reads an SAE.</summary>
public sealed record SaeLoadOptions
{
    /// <summary>The architecture of a bare dictionary_learning <c>ae.pt</c> (a SAELens architecture name such as
    /// <c>batchtopk</c>, or a class name); null: from its config.json, else inferred from its keys. Given for an SAE of
    /// another format (whose files name its architecture) it is an error.</summary>
    public string? Architecture { get; init; }

    /// <summary>Hub endpoint, cache and token for <c>RELEASE/SAE_ID</c> and <c>hf:</c> paths; null: from the environment.</summary>
    public HfHubOptions? Hub { get; init; }
}

/// <summary>Loads an SAE from any supported on-disk format, detected from the files present, after resolving a
/// pretrained release or hub path to local files (<see cref="SaeSource"/>). Every command's <c>--sae</c> goes through here.</summary>
public static class SaeLoader
{
    /// <summary>Every file name, relative to an SAE's folder, that one of the loaders reads there (SAELens, dictionary_learning
    /// and OpenAI's ae.pt, Gemma Scope 1 and 2, Llama Scope, sparsify).</summary>
    public static IReadOnlyList<string> FileNames { get; } =
    [
        SaeLensFormat.CfgFile, SaeLensFormat.WeightsFile, SaeLensFormat.SparsityFile, SaeLensFormat.ActivationScalerFile,
        DictionaryLearning.WeightsFile, DictionaryLearning.ConfigFile, GemmaScope.WeightsFile, GemmaScope.Scope2WeightsFile,
        LlamaScope.HyperparamsFile, LlamaScope.WeightsFile, Sparsify.WeightsFile,
        SaeLensConversions.TemporalConfigFile, SaeLensConversions.TemporalWeightsFile,
    ];

    /// <summary>The formats tried, in order: a name, the files that show it (for the error when none does), a probe of the
    /// path, the loader (given the options and the release's facts, when the SAE was named by release), and the companions
    /// of a file the format takes by its name (<see cref="SaeCompanion"/>; null: not one; the format's detection of a
    /// local file checks the same list), which <c>hf:ORG/REPO/PATH</c> of a file downloads with it
    /// (<see cref="FileFormats"/>). Llama Scope has none: its weights file names its folder.</summary>
    private static readonly List<(string Name, string Files, Func<string, bool> Detect, Func<string, SaeLoadOptions, ResolvedSae, Sae> Load,
        Func<string, IReadOnlyList<SaeCompanion>?> Companions)> Formats =
    [
        ("SAELens", "cfg.json + sae_weights.safetensors", SaeLensFormat.IsSaeLensFolder, (p, _, r) => SaeLensFormat.Load(p, r.Sae?.NormScalingFactor,
            r.Release?.ConfigOverrides?["normalize_activations"]?.GetValue<string>()), SaeLensFormat.CompanionsOf),
        ("dictionary_learning", "ae.pt (+ config.json)", DictionaryLearning.IsDictionaryLearningPath, (p, o, _) => DictionaryLearning.Load(p, o.Architecture),
            DictionaryLearning.CompanionsOf),
        ("Gemma Scope", "params.npz", GemmaScope.IsGemmaScopePath, (p, _, _) => GemmaScope.Load(p), GemmaScope.CompanionsOf),
        ("Gemma Scope 2", "params.safetensors (+ config.json)", GemmaScope.IsGemmaScope2Path, (p, _, _) => GemmaScope.LoadScope2(p),
            GemmaScope.Scope2CompanionsOf),
        ("Llama Scope", "hyperparams.json + checkpoints/final.safetensors", LlamaScope.IsLlamaScopeFolder, (p, _, _) => LlamaScope.Load(p), _ => null),
        ("sparsify", "cfg.json + sae.safetensors", Sparsify.IsSparsifyPath, (p, _, _) => Sparsify.Load(p), Sparsify.CompanionsOf),
        (OpenAiFormat, "N.pt with pre_bias, latent_bias", OpenAiSae.IsOpenAiCheckpoint, (p, _, _) => OpenAiSae.Load(p), OpenAiSae.CompanionsOf),
        ("canrager temporal", "conf.yaml + latest_ckpt.safetensors", SaeLensConversions.IsTemporalFolder, (p, _, _) => SaeLensConversions.LoadTemporal(p),
            SaeLensConversions.TemporalCompanionsOf),
        // SAELens's conversions whose files a path shows by themselves (gemma_2_transcoder is Gemma Scope's files, gemma_3
        // Gemma Scope 2's, temporal canrager's): the same loaders as by release name.
        (SaeLensConversions.DeepSeekR1, "…l<N>….pt with encoder.weight, decoder.weight", SaeLensConversions.IsDeepSeekR1Path,
            (p, _, _) => SaeLensConversions.LoadDeepSeekR1(SaeLensConversions.DeepSeekR1File(p)!), SaeLensConversions.DeepSeekR1CompanionsOf),
        (SaeLensConversions.Goodfire, "Llama-3.1-8B-Instruct-SAE-l19.pth or Llama-3.3-70B-Instruct-SAE-l50.pt", SaeLensConversions.IsGoodfirePath,
            (p, _, _) => SaeLensConversions.LoadGoodfire(SaeLensConversions.GoodfireFile(p)!), SaeLensConversions.GoodfireCompanionsOf),
        (SaeLensConversions.ConnorRobHookZ, "NAME.pt + NAME_cfg.json", SaeLensConversions.IsConnorRobHookZPath,
            (p, _, _) => SaeLensConversions.LoadConnorRobHookZ(SaeLensConversions.ConnorRobHookZFile(p)!), SaeLensConversions.ConnorRobHookZCompanionsOf),
        (SaeLensConversions.LlamaScopeR1Distill, "config.json + sae_weights.safetensors", SaeLensConversions.IsLlamaScopeR1DistillPath,
            (p, _, r) => SaeLensConversions.LoadLlamaScopeR1DistillPath(p, r.Sae?.NormScalingFactor), SaeLensConversions.LlamaScopeR1DistillCompanionsOf),
        (SaeLensConversions.MwhannaTranscoder, "layer_N.safetensors + wandb-config.yaml", SaeLensConversions.IsMwhannaTranscoderFile,
            (p, _, _) => SaeLensConversions.LoadMwhannaTranscoder(p), SaeLensConversions.MwhannaTranscoderCompanionsOf),
        (SaeLensConversions.MntssCltLayerTranscoder, "W_enc_N.safetensors + W_dec_N.safetensors", SaeLensConversions.IsMntssCltLayerPath,
            (p, _, _) => SaeLensConversions.LoadMntssCltLayer(SaeLensConversions.MntssCltLayerFile(p)!), SaeLensConversions.MntssCltLayerCompanionsOf),
    ];

    /// <summary>The formats that take <paramref name="file"/> (a path, '/'-separated, local or inside a hub repo) by its
    /// name, each with the companions its loader reads beside it (paths spelled as <paramref name="file"/> is).</summary>
    internal static IReadOnlyList<(string Format, IReadOnlyList<SaeCompanion> Companions)> FileFormats(string file) =>
        [.. Formats.Select(f => (f.Name, Companions: f.Companions(file))).Where(f => f.Companions is not null).Select(f => (f.Name, f.Companions!))];

    /// <summary>The formats of <see cref="FileFormats"/> that also take a folder holding the file: all but OpenAI's,
    /// whose checkpoint (any <c>.pt</c>, told by its keys) is read from the file itself or a folder's <c>ae.pt</c>.</summary>
    internal static IReadOnlyList<(string Format, IReadOnlyList<SaeCompanion> Companions)> FolderFileFormats(string file) =>
        [.. FileFormats(file).Where(f => f.Format != OpenAiFormat)];

    /// <summary>The name of OpenAI's sparse_autoencoder format.</summary>
    internal const string OpenAiFormat = "OpenAI sparse_autoencoder";

    /// <summary>Loads the SAE that <paramref name="path"/> names: a local file or folder, <c>RELEASE/SAE_ID</c> or
    /// <c>hf:ORG/REPO[/PATH]</c> (downloaded into the Hugging Face cache first); SAELens <c>SAE.from_pretrained</c> /
    /// <c>load_from_disk</c>. The SAE is the caller's to dispose (<c>using var sae = SaeLoader.Load(...)</c>), also when
    /// loaded inside a dispose scope, which does not free its weights.</summary>
    public static Sae Load(string path, SaeLoadOptions? options = null) =>
        Load(SaeSource.Resolve(path, options?.Hub), options);

    /// <summary>Loads an SAE already resolved to local files by <see cref="SaeSource.Resolve"/>, completing its metadata
    /// with the release's facts.</summary>
    public static Sae Load(ResolvedSae resolved, SaeLoadOptions? options = null)
    {
        ArgumentNullException.ThrowIfNull(resolved);
        options ??= new SaeLoadOptions();
        string local = resolved.Path;
        if (resolved.Release is { } release && SaeLensConversions.Handles(release.Conversion))
        {
            if (options.Architecture is { } a)
                throw new SaeSharpException($"--arch {a} is for a dictionary_learning ae.pt; {release.Release} is in SAELens's '{release.Conversion}' format, whose loader sets the architecture");
            var converted = SaeLensConversions.Load(resolved);
            SaeSource.ApplyReleaseFacts(converted.Cfg, resolved);
            return converted;
        }
        var found = Formats.Where(f => f.Detect(local)).Select(f => f.Name).ToList();
        if (found.Count > 1)
            throw new SaeSharpException($"{local}: holds the files of several SAE formats ({string.Join(", ", found)}); point at one SAE's files (a folder with one format, or the file itself)");
        foreach (var (name, _, detect, load, _) in Formats)
        {
            if (!found.Contains(name)) continue;
            if (options.Architecture is { } arch && name != "dictionary_learning")
                throw new SaeSharpException($"--arch {arch} is for a dictionary_learning ae.pt; {local} is a {name} SAE, whose files name its architecture");
            var sae = load(local, options, resolved);
            SaeSource.ApplyReleaseFacts(sae.Cfg, resolved);
            return sae;
        }
        var inside = Directory.Exists(local)
            ? Directory.EnumerateDirectories(local).Where(d => Formats.Any(f => f.Detect(d))).Select(d => Path.GetFileName(d)).Order(StringComparer.Ordinal).ToList()
            : [];
        if (inside.Count > 0) throw HoldsSaes(local, inside, d => Path.Combine(local, d));
        if (CrossLayerTranscoderLoader.IsCrossLayerTranscoder(local)) throw CrossLayerTranscoderLoader.NotASingleSae(local);
        throw SaeSharpException.Lines(NotRecognised(local).Split('\n'));
    }

    /// <summary>The error for a path no format takes, one fact a line so it reads at 80 columns: the path and what was
    /// found there (<see cref="NotRecognisedHint"/>), then each format tried with the files that show it.</summary>
    private static string NotRecognised(string local) =>
        $"{local}: not a recognised SAE{NotRecognisedHint(local)}\nlooked for (format: files):\n" +
        string.Join("\n", Formats.Select(f => $"  {f.Name}: {f.Files}".Length <= 80 ? $"  {f.Name}: {f.Files}" : $"  {f.Name}: {f.Files.Replace(" or ", "\n    or ", StringComparison.Ordinal)}"));

    /// <summary>Why a path that looks like part of an SAE was not taken for one: a folder with a cfg.json but neither
    /// format's weights beside it, or a <c>.pt</c> file that no format takes; else "".</summary>
    private static string NotRecognisedHint(string local)
    {
        if (Directory.Exists(local) && File.Exists(Path.Combine(local, SaeLensFormat.CfgFile)))
            return $": it has {SaeLensFormat.CfgFile} but no weights beside it\n  ({SaeLensFormat.WeightsFile} for SAELens, {Sparsify.WeightsFile} for sparsify)";
        if (SaeLensConversions.MissingCompanion(local) is { } missing) return ": " + missing;
        if (Directory.Exists(local) && Directory.EnumerateFiles(local, "*.pt").Where(OpenAiSae.IsOpenAiCheckpoint).Order(StringComparer.Ordinal).FirstOrDefault() is { } openAi)
            return $": its {Path.GetFileName(openAi)} is an {OpenAiFormat}\n  checkpoint, loaded by its own path: point at {openAi}";
        if (File.Exists(local) && local.EndsWith(".pt", StringComparison.OrdinalIgnoreCase) && Path.GetFileName(local) != DictionaryLearning.WeightsFile)
            return $": a .pt file is read as\n  dictionary_learning's only under the name {DictionaryLearning.WeightsFile}\n    or as a step checkpoint " +
                $"{DictionaryLearning.CheckpointsFolder}/ae_STEP.pt\n    (rename it, or put it in a folder as " +
                $"{DictionaryLearning.WeightsFile})\n  OpenAI's sparse_autoencoder only when it holds pre_bias and latent_bias\n  " +
                $"{SaeLensConversions.DeepSeekR1}'s when its name has the layer (l<N>) and it holds\n    encoder.weight, encoder.bias, decoder.weight, " +
                $"decoder.bias\n  {SaeLensConversions.ConnorRobHookZ}'s with NAME_cfg.json beside NAME.pt";
        return "";
    }

    /// <summary>The error for a folder <paramref name="where"/> that is not an SAE but whose sub-folders
    /// <paramref name="inside"/> hold SAEs (local, or <c>hf:</c> from the hub's listing); <paramref name="pathOf"/> gives
    /// the path to pass for one of them.</summary>
    internal static SaeSharpException HoldsSaes(string where, IReadOnlyList<string> inside, Func<string, string> pathOf) =>
        new(inside.Count == 1
            ? $"{where}: not an SAE itself, but its folder {inside[0]} holds one: point at {pathOf(inside[0])}"
            : $"{where}: not an SAE itself, but its folders {string.Join(", ", inside.Take(8))}{(inside.Count > 8 ? ", …" : "")} " +
              $"hold SAEs (a run of several SAEs, or a sparsify run with one per hookpoint): point at one, e.g. {pathOf(inside[0])}");

    /// <summary>The name of the format <see cref="Load(ResolvedSae, SaeLoadOptions?)"/> uses for <paramref name="resolved"/>:
    /// SAELens's <c>conversion_func</c> for a release of <see cref="SaeLensConversions"/>, else what the files show (or null).</summary>
    public static string? DetectFormat(ResolvedSae resolved)
    {
        ArgumentNullException.ThrowIfNull(resolved);
        return resolved.Release is { } r && SaeLensConversions.Handles(r.Conversion) ? r.Conversion : DetectFormat(resolved.Path);
    }

    /// <summary>The name of the format <see cref="Load(string, SaeLoadOptions?)"/> would use, or null (a release or hub path is resolved first).</summary>
    public static string? DetectFormat(string path, SaeLoadOptions? options = null)
    {
        if (SaeSource.IsRemote(path)) return DetectFormat(SaeSource.Resolve(path, options?.Hub));
        return Formats.FirstOrDefault(f => f.Detect(path)).Name;
    }
}
