using System.Globalization;
using System.Text.Json;
using System.Text.Json.Nodes;
using System.Text.RegularExpressions;
using SaeSharp.Hub;
using SaeSharp.IO;
using SaeSharp.Saes;
using static TorchSharp.torch;

namespace SaeSharp.Interop;

/// <summary>
/// SAELens's loaders for the releases whose <c>conversion_func</c> (in <c>pretrained_saes.yaml</c>) is one of
/// <see cref="Names"/>, restated from <c>sae_lens/loading/pretrained_sae_loaders.py</c>: the same files, the same
/// state-dict conversion and the same config values (model, hooks, dataset, context size, <c>apply_b_dec_to_input</c>,
/// <c>normalize_activations</c>, <c>model_from_pretrained_kwargs</c>). Where SAELens hard-codes a size (deepseek_r1's
/// 4096 × 65536, gemma_2_transcoder's d_model, goodfire's sizes), it is read from the weights here (the same on the real
/// files). <see cref="Gemma3"/> and <see cref="Goodfire"/> are SAELens 6.37.6's (at 69c4c62b); <see cref="Unsupported"/>
/// names the conversions it has that SaeSharp refuses.
/// SAELens's transcoders are SaeSharp SAEs with <c>d_out</c> and <c>metadata.hook_name_out</c>: <c>transcoder</c> →
/// standard, <c>jumprelu_transcoder</c> → jumprelu (see <see cref="SaeLensFormat.SaeLensTranscoders"/>). These formats
/// load by release name (<c>RELEASE/SAE_ID</c>), as in SAELens, and from a downloaded copy, which <see cref="SaeLoader"/>
/// detects by its files (the <c>Is*Path</c> / <c>Is*File</c> probes) and loads with the same <c>Load*</c> methods.
/// </summary>
public static class SaeLensConversions
{
    /// <summary>qresearch's DeepSeek-R1-Distill-Llama-8B SAE: a <c>.pt</c> state dict in PyTorch Linear layout.</summary>
    public const string DeepSeekR1 = "deepseek_r1";
    /// <summary>Kissane and Krzyzanowski's GPT-2 attention-output SAEs: <c>NAME.pt</c> + <c>NAME_cfg.json</c>, hook_z.</summary>
    public const string ConnorRobHookZ = "connor_rob_hook_z";
    /// <summary>OpenMOSS's Llama Scope R1 Distill: <c>config.json</c> + <c>sae_weights.safetensors</c>, JumpReLU.</summary>
    public const string LlamaScopeR1Distill = "llama_scope_r1_distill";
    /// <summary>Gemma Scope's transcoders: <c>params.npz</c> as Gemma Scope, a JumpReLU transcoder ln2 → hook_mlp_out.</summary>
    public const string Gemma2Transcoder = "gemma_2_transcoder";
    /// <summary>mwhanna's Qwen3 transcoders (circuit-tracer): <c>layer_N.safetensors</c> and the repo's YAML configs.</summary>
    public const string MwhannaTranscoder = "mwhanna_transcoder";
    /// <summary>mntss's cross-layer transcoders, one layer as a transcoder with its decoders summed.</summary>
    public const string MntssCltLayerTranscoder = "mntss_clt_layer_transcoder";
    /// <summary>Gemma Scope 2 (Gemma 3 models): <c>params.safetensors</c> (+ <c>config.json</c>) per SAE folder, JumpReLU
    /// SAEs and transcoders (<see cref="GemmaScope.LoadScope2"/>).</summary>
    public const string Gemma3 = "gemma_3";
    /// <summary>Goodfire's Llama SAEs: a <c>torch.save</c>d state dict in PyTorch Linear layout (<see cref="LoadGoodfire"/>).</summary>
    public const string Goodfire = "goodfire";

    /// <summary>canrager's Temporal SAEs (canrager/temporalSAEs): <c>conf.yaml</c> + <c>latest_ckpt.safetensors</c> per
    /// SAE folder (<see cref="LoadTemporal"/>).</summary>
    public const string Temporal = "temporal";

    /// <summary>The conversion funcs loaded here.</summary>
    public static IReadOnlyList<string> Names { get; } =
        [DeepSeekR1, ConnorRobHookZ, LlamaScopeR1Distill, Gemma2Transcoder, MwhannaTranscoder, MntssCltLayerTranscoder, Gemma3, Goodfire, Temporal];

    /// <summary>SAELens 6.37.6's conversion funcs whose SAEs SaeSharp does not load, with the SAELens architecture each
    /// gives (<see cref="SaeLensFormat.UnsupportedSaeLensArchitectures"/>): a release in one is listed by <c>sae releases</c>
    /// and refused on load by <see cref="UnsupportedRelease"/>.</summary>
    public static IReadOnlyDictionary<string, string> Unsupported { get; } = new Dictionary<string, string>(StringComparer.Ordinal);

    /// <summary>The error for loading an SAE of <paramref name="release"/>, whose conversion is one of <see cref="Unsupported"/>.</summary>
    public static SaeSharpException UnsupportedRelease(SaeRelease release, PretrainedSae sae)
    {
        ArgumentNullException.ThrowIfNull(release);
        ArgumentNullException.ThrowIfNull(sae);
        return SaeLensFormat.UnsupportedArchitecture(Unsupported[release.Conversion!],
            $"{release.Release}/{sae.Id} (SAELens conversion_func '{release.Conversion}')");
    }

    /// <summary>The conversion funcs whose SAEs are transcoders (read <c>hook_name</c>, replace <c>hook_name_out</c>);
    /// some of a <see cref="Gemma3"/> release's are too (<see cref="TranscoderHooks"/>).</summary>
    public static IReadOnlyList<string> Transcoders { get; } = [Gemma2Transcoder, MwhannaTranscoder, MntssCltLayerTranscoder];

    /// <summary>Where a <see cref="MntssCltLayerTranscoder"/> SAE's hooks come from: not its release path but the repo's
    /// <see cref="CircuitTracerConfigFile"/>, read on load.</summary>
    public const string CltHooksSource = "hooks blocks.N.{feature_input_hook} → blocks.N.{feature_output_hook} of the repo's config.yaml, read on load";

    /// <summary>The hook <paramref name="sae"/> of <paramref name="release"/> reads and, for a transcoder, the hook it
    /// replaces, as its loader sets them: <see cref="TranscoderHooks"/> for a transcoder conversion, else the table's
    /// <see cref="PretrainedSae.Hook"/> and no output hook. Null where only loading tells (mntss_clt_layer_transcoder).</summary>
    public static (string? In, string? Out) ReleaseHooks(SaeRelease release, PretrainedSae sae)
    {
        ArgumentNullException.ThrowIfNull(release);
        ArgumentNullException.ThrowIfNull(sae);
        return TranscoderHooks(release.Conversion, sae.Path) is { } t ? (t.In, t.Out) : (sae.Hook, null);
    }

    /// <summary>
    /// The input and output hooks (SAELens's <c>hook_name</c>, <c>hook_name_out</c>) that the loader of
    /// <paramref name="conversion"/> gives the SAE at <paramref name="path"/> (its path in the release table), by the rule
    /// the loader applies: gemma_2_transcoder's from the path's <c>layer_N</c> folder, mwhanna_transcoder's from the file
    /// name, gemma_3's for a transcoder or clt path (<see cref="GemmaScope.Scope2Hooks"/>). Null for other conversions and
    /// paths, for a path the rule reads no layer from, and for mntss_clt_layer_transcoder (<see cref="CltHooksSource"/>).
    /// </summary>
    public static (string In, string Out)? TranscoderHooks(string? conversion, string path) => conversion switch
    {
        Gemma2Transcoder => GemmaScope.FolderLayer(GemmaScope.FolderParts(path)) is { } layer ? GemmaScope.TranscoderHooks(layer) : null,
        MwhannaTranscoder => MwhannaLayer(path) is { } layer ? MwhannaHooks(layer) : null,
        Gemma3 => GemmaScope.Scope2Hooks(path) is ({ } i, { } o) ? (i, o) : null,
        _ => null,
    };

    /// <summary>SAELens's warning on loading a CLT layer, kept in <c>metadata.loading_note</c> of such an SAE.</summary>
    public const string CltLayerNote = "This loads the CLT layer as a single layer transcoder by summing all decoders together. " +
        "This should only be used to find feature activations, not for reconstruction";

    /// <summary>The metadata key of a note on how an SAE was loaded (<see cref="CltLayerNote"/>), shown by <c>sae info</c>.</summary>
    public const string NoteKey = "loading_note";

    /// <summary>Whether <paramref name="conversion"/> is loaded here.</summary>
    public static bool Handles(string? conversion) => conversion is not null && Names.Contains(conversion);

    /// <summary>Downloads the files SAELens's loader for the release's conversion reads; returns the path
    /// <see cref="Load(ResolvedSae)"/> takes (the weights file, or the SAE's folder).</summary>
    internal static string Download(HfHubClient client, SaeRelease release, PretrainedSae sae)
    {
        string repo = release.RepoId, p = sae.Path;
        switch (release.Conversion)
        {
            case DeepSeekR1:
                return client.DownloadFile(repo, p)!;
            case ConnorRobHookZ:
                client.DownloadFile(repo, ConnorCfgPath(p));
                return client.DownloadFile(repo, p)!;
            case LlamaScopeR1Distill:
                client.DownloadFile(repo, p + "/" + R1DistillConfigFile);
                return Path.GetDirectoryName(client.DownloadFile(repo, p + "/" + SaeLensFormat.WeightsFile)!)!;
            case Gemma2Transcoder:
                return Path.GetDirectoryName(client.DownloadFile(repo, p + "/" + GemmaScope.WeightsFile)!)!;
            case MwhannaTranscoder:
                // The typo'd name is SAELens's fallback too; the 14b repos have no config.yaml.
                _ = client.DownloadFile(repo, WandbConfigFiles[0], optional: true)
                    ?? client.DownloadFile(repo, WandbConfigFiles[1], optional: true)
                    ?? throw new SaeSharpException($"{release.Release}/{sae.Id}: repository '{repo}' has neither {WandbConfigFiles[0]} nor {WandbConfigFiles[1]}");
                client.DownloadFile(repo, CircuitTracerConfigFile, optional: true);
                return client.DownloadFile(repo, p)!;
            case MntssCltLayerTranscoder:
                client.DownloadFile(repo, CircuitTracerConfigFile);
                client.DownloadFile(repo, $"W_dec_{p}.safetensors");
                return client.DownloadFile(repo, $"W_enc_{p}.safetensors")!;
            case Gemma3:
                // get_gemma_3_config_from_hf: {path}/config.json when the repo has it; the weights are {path}/params.safetensors,
                // a CLT's {path}.safetensors.
                client.DownloadFile(repo, p + "/" + GemmaScope.Scope2ConfigFile, optional: true);
                return p.Contains("clt", StringComparison.Ordinal)
                    ? client.DownloadFile(repo, p + ".safetensors")!
                    : Path.GetDirectoryName(client.DownloadFile(repo, p + "/" + GemmaScope.Scope2WeightsFile)!)!;
            case Goodfire:
                return client.DownloadFile(repo, p)!;
            case Temporal:
                client.DownloadFile(repo, p + "/" + TemporalConfigFile);
                return Path.GetDirectoryName(client.DownloadFile(repo, p + "/" + TemporalWeightsFile)!)!;
            default:
                throw new SaeSharpException($"{release.Release}: conversion '{release.Conversion}' is not one of {string.Join(", ", Names)}");
        }
    }

    /// <summary>Loads a release SAE downloaded by <see cref="Download"/> (<see cref="SaeSource.Resolve"/>).</summary>
    internal static Sae Load(ResolvedSae resolved)
    {
        var release = resolved.Release ?? throw new ArgumentException("not a release SAE", nameof(resolved));
        var sae = resolved.Sae!;
        return release.Conversion switch
        {
            DeepSeekR1 => LoadDeepSeekR1(resolved.Path),
            ConnorRobHookZ => LoadConnorRobHookZ(resolved.Path),
            LlamaScopeR1Distill => LoadLlamaScopeR1Distill(resolved.Path, sae.NormScalingFactor),
            Gemma2Transcoder => GemmaScope.Load(resolved.Path, metadataPath: release.RepoId + "/" + sae.Path),
            MwhannaTranscoder => LoadMwhannaTranscoder(resolved.Path, release.RepoId),
            MntssCltLayerTranscoder => LoadMntssCltLayer(resolved.Path),
            Gemma3 => GemmaScope.LoadScope2(resolved.Path, sae.Path, release.RepoId),
            Goodfire => LoadGoodfire(resolved.Path, release.RepoId),
            Temporal => LoadTemporal(resolved.Path, sae.Path, release.ConfigOverrides),
            _ => throw new SaeSharpException($"{release.Release}: conversion '{release.Conversion}' is not one of {string.Join(", ", Names)}"),
        };
    }

    // ---- deepseek_r1 ----

    /// <summary>
    /// SAELens's <c>deepseek_r1</c>: a <c>torch.save</c>d state dict with <c>encoder.weight</c> [d_sae, d_in],
    /// <c>encoder.bias</c>, <c>decoder.weight</c> [d_in, d_sae], <c>decoder.bias</c> (W_enc, W_dec transposed; other
    /// entries ignored); standard, apply_b_dec_to_input false, hook <c>blocks.{l}.hook_resid_post</c> with l the first
    /// <c>l(\d+)</c> of the file name, model deepseek-ai/DeepSeek-R1-Distill-Llama-8B, dataset lmsys/lmsys-chat-1m,
    /// context 1024, dtype bfloat16 (the SAE computes in float32).
    /// </summary>
    public static Sae LoadDeepSeekR1(string file)
    {
        var m = Regex.Match(Path.GetFileName(file), @"l(\d+)");
        if (!m.Success)
            throw new SaeSharpException($"{file}: no layer number 'l<N>' in the file name (SAELens's deepseek_r1 loader reads the layer from it)");
        int layer = int.Parse(m.Groups[1].Value, CultureInfo.InvariantCulture);
        return LoadLinearPair(file, "encoder", "decoder", new SaeMetadata
        {
            ModelName = "deepseek-ai/DeepSeek-R1-Distill-Llama-8B",
            HookName = $"blocks.{layer}.hook_resid_post",
            ContextSize = 1024,
            PrependBos = true,
            DatasetPath = "lmsys/lmsys-chat-1m",
        }, dtype: "bfloat16");
    }

    /// <summary>A standard SAE (apply_b_dec_to_input false) from a <c>torch.save</c>d pair of <c>nn.Linear</c> layers:
    /// <c>{encoder}.weight</c> [d_sae, d_in] and <c>{decoder}.weight</c> [d_in, d_sae] transposed into W_enc and W_dec,
    /// their biases b_enc and b_dec; sizes from the weights, other entries ignored (SAELens's deepseek_r1 and goodfire
    /// loaders).</summary>
    private static Sae LoadLinearPair(string file, string encoder, string decoder, SaeMetadata metadata, string? dtype = null)
    {
        var raw = TorchPickle.LoadStateDict(file);
        try
        {
            using var scope = NewDisposeScope();
            var encW = Need(raw, $"{encoder}.weight", file, 2);
            var cfg = new SaeConfig
            {
                Architecture = SaeArchitectures.Standard,
                DIn = checked((int)encW.shape[1]),
                DSae = checked((int)encW.shape[0]),
                ApplyBDecToInput = false,
                Metadata = metadata,
            };
            if (dtype is not null) cfg.Dtype = dtype;
            return SaeWeights.Create(cfg, new Dictionary<string, Tensor>
            {
                ["W_enc"] = encW.t(),
                ["W_dec"] = Need(raw, $"{decoder}.weight", file, 2).t(),
                ["b_enc"] = Need(raw, $"{encoder}.bias", file, 1),
                ["b_dec"] = Need(raw, $"{decoder}.bias", file, 1),
            }, file, file);
        }
        finally
        {
            foreach (var t in raw.Values) t.Dispose();
        }
    }

    // ---- goodfire ----

    /// <summary>SAELens's fixed configs of the two Goodfire repos (<c>get_goodfire_config_from_hf</c>), by file name:
    /// repo, model, hook, d_in, d_sae.</summary>
    private static readonly Dictionary<string, (string Repo, string Model, string Hook, int DIn, int DSae)> GoodfireSaes = new(StringComparer.Ordinal)
    {
        ["Llama-3.3-70B-Instruct-SAE-l50.pt"] = ("Goodfire/Llama-3.3-70B-Instruct-SAE-l50", "meta-llama/Llama-3.3-70B-Instruct", "blocks.50.hook_resid_post", 8192, 65536),
        ["Llama-3.1-8B-Instruct-SAE-l19.pth"] = ("Goodfire/Llama-3.1-8B-Instruct-SAE-l19", "meta-llama/Llama-3.1-8B-Instruct", "blocks.19.hook_resid_post", 4096, 65536),
    };

    /// <summary>
    /// SAELens's <c>goodfire</c>: <c>Llama-3.3-70B-Instruct-SAE-l50.pt</c> or <c>Llama-3.1-8B-Instruct-SAE-l19.pth</c>, a
    /// <c>torch.save</c>d state dict with <c>encoder_linear.weight</c> [d_sae, d_in], <c>encoder_linear.bias</c>,
    /// <c>decoder_linear.weight</c> [d_in, d_sae], <c>decoder_linear.bias</c> (W_enc, W_dec transposed; other entries
    /// ignored). The config is SAELens's fixed one for the file (another name, or a <paramref name="repoId"/> that is not
    /// its repo, is refused as SAELens refuses it): standard, apply_b_dec_to_input false, model
    /// meta-llama/Llama-3.3-70B-Instruct (hook blocks.50.hook_resid_post) or meta-llama/Llama-3.1-8B-Instruct
    /// (blocks.19.hook_resid_post), dataset lmsys/lmsys-chat-1m, float32; d_in and d_sae are read from the weights (8192 or
    /// 4096 and 65536 on the real files).
    /// </summary>
    public static Sae LoadGoodfire(string file, string? repoId = null)
    {
        string name = Path.GetFileName(file);
        if (!GoodfireSaes.TryGetValue(name, out var fixedCfg) || (repoId is not null && repoId != fixedCfg.Repo))
            throw new SaeSharpException($"{(repoId is null ? "" : repoId + "/")}{name}: unsupported Goodfire SAE (SAELens's goodfire loader knows " +
                string.Join(", ", GoodfireSaes.Select(kv => $"{kv.Value.Repo}/{kv.Key}")) + ")");
        return LoadLinearPair(file, "encoder_linear", "decoder_linear", new SaeMetadata
        {
            ModelName = fixedCfg.Model,
            HookName = fixedCfg.Hook,
            DatasetPath = "lmsys/lmsys-chat-1m",
        });
    }

    // ---- connor_rob_hook_z ----

    /// <summary>The config beside a connor_rob_hook_z <c>.pt</c>: its name up to the first <c>.pt</c>, plus <c>_cfg.json</c>
    /// (SAELens: <c>folder_name.split(".pt")[0] + "_cfg.json"</c>).</summary>
    private static string ConnorCfgPath(string pt)
    {
        int slash = Math.Max(pt.LastIndexOf('/'), pt.LastIndexOf(Path.DirectorySeparatorChar));
        string dir = pt[..(slash + 1)], name = pt[(slash + 1)..];
        int dot = name.IndexOf(".pt", StringComparison.Ordinal);
        return dir + (dot < 0 ? name : name[..dot]) + "_cfg.json";
    }

    /// <summary>
    /// SAELens's <c>connor_rob_hook_z</c>: <c>NAME.pt</c>, a state dict of W_enc [d_in, d_sae], W_dec, b_enc, b_dec (as
    /// SAELens names them; nothing else), and <c>NAME_cfg.json</c> with <c>act_size</c> (d_in), <c>dict_size</c> (d_sae)
    /// and <c>act_name</c> (the hook); standard with apply_b_dec_to_input, reshape_activations hook_z (the heads of
    /// <c>attn.hook_z</c> flattened), model gpt2-small, dataset Skylion007/openwebtext, context 128.
    /// </summary>
    public static Sae LoadConnorRobHookZ(string ptFile)
    {
        string cfgPath = ConnorCfgPath(ptFile);
        var json = ReadJson(cfgPath);
        int dIn = JsonFields.Int(json, "act_size", cfgPath) ?? throw Missing(cfgPath, "act_size");
        int dSae = JsonFields.Int(json, "dict_size", cfgPath) ?? throw Missing(cfgPath, "dict_size");
        string hook = JsonFields.Str(json, "act_name", cfgPath) ?? throw Missing(cfgPath, "act_name");
        var cfg = new SaeConfig
        {
            Architecture = SaeArchitectures.Standard,
            DIn = dIn,
            DSae = dSae,
            ApplyBDecToInput = true,
            ReshapeActivations = "hook_z",
            Metadata = new SaeMetadata
            {
                ModelName = "gpt2-small",
                HookName = hook,
                ContextSize = 128,
                PrependBos = true,
                DatasetPath = "Skylion007/openwebtext",
            },
        };
        var raw = TorchPickle.LoadStateDict(ptFile);
        try
        {
            return SaeWeights.Create(cfg, raw, cfgPath, ptFile);
        }
        finally
        {
            foreach (var t in raw.Values) t.Dispose();
        }
    }

    // ---- llama_scope_r1_distill ----

    /// <summary>The config file of a Llama Scope R1 Distill SAE's folder.</summary>
    public const string R1DistillConfigFile = "config.json";

    /// <summary>
    /// SAELens's <c>llama_scope_r1_distill</c>: a folder holding <c>config.json</c> (<c>d_model</c>,
    /// <c>expansion_factor</c>, <c>hook_point_in</c>) and <c>sae_weights.safetensors</c> with <c>encoder.weight</c>
    /// [d_sae, d_in], <c>encoder.bias</c>, <c>decoder.weight</c> [d_in, d_sae], <c>decoder.bias</c> and
    /// <c>log_jumprelu_threshold</c> (threshold = exp of it); JumpReLU, apply_b_dec_to_input false, d_sae = d_model ·
    /// expansion_factor, model meta-llama/Llama-3.1-8B (SAELens's value), dataset cerebras/SlimPajama-627B, context 1024,
    /// normalize_activations "expected_average_only_in": the release table's <paramref name="normScalingFactor"/> s is
    /// folded in as <c>SAE.from_pretrained</c> does (W_enc·s, W_dec/s, b_dec/s), so the SAE takes raw activations.
    /// </summary>
    public static Sae LoadLlamaScopeR1Distill(string folder, double? normScalingFactor)
    {
        string cfgPath = Path.Combine(folder, R1DistillConfigFile), wPath = Path.Combine(folder, SaeLensFormat.WeightsFile);
        var json = ReadJson(cfgPath);
        int dIn = JsonFields.Int(json, "d_model", cfgPath) ?? throw Missing(cfgPath, "d_model");
        int expansion = JsonFields.Int(json, "expansion_factor", cfgPath) ?? throw Missing(cfgPath, "expansion_factor");
        string hook = JsonFields.Str(json, "hook_point_in", cfgPath) ?? throw Missing(cfgPath, "hook_point_in");
        if (normScalingFactor is not { } s)
            throw new SaeSharpException($"{cfgPath}: a Llama Scope R1 Distill SAE is 'expected_average_only_in' and needs the release table's " +
                $"norm_scaling_factor, which its files do not hold: load it by release id ({LlamaScopeR1Distill}/SAE_ID; `sae releases {LlamaScopeR1Distill}` " +
                "lists them), or keep the repo's folder names in the path (…/800M-Slimpajama-0-OpenR1-Math-220k/L0R) so that the release table's entry is found");
        var cfg = new SaeConfig
        {
            Architecture = SaeArchitectures.JumpReLU,
            DIn = dIn,
            DSae = checked(dIn * expansion),
            ApplyBDecToInput = false,
            Metadata = new SaeMetadata
            {
                ModelName = "meta-llama/Llama-3.1-8B",
                HookName = hook,
                ContextSize = 1024,
                PrependBos = true,
                DatasetPath = "cerebras/SlimPajama-627B",
            },
        };
        if (!File.Exists(wPath)) throw new SaeSharpException($"{wPath}: file not found");
        var raw = SafeTensors.Load(wPath);
        try
        {
            using var scope = NewDisposeScope();
            var sae = SaeWeights.Create(cfg, new Dictionary<string, Tensor>
            {
                ["W_enc"] = Need(raw, "encoder.weight", wPath, 2).t(),
                ["W_dec"] = Need(raw, "decoder.weight", wPath, 2).t(),
                ["b_enc"] = Need(raw, "encoder.bias", wPath, 1),
                ["b_dec"] = Need(raw, "decoder.bias", wPath, 1),
                ["threshold"] = Need(raw, "log_jumprelu_threshold", wPath, 1).to(ScalarType.Float32).exp(),
            }, cfgPath, wPath);
            sae.FoldActivationScale(s, s);
            return sae;
        }
        finally
        {
            foreach (var t in raw.Values) t.Dispose();
        }
    }

    // ---- mwhanna_transcoder ----

    /// <summary>The wandb run config of a circuit-tracer transcoder repo, and the misspelt name some repos use.</summary>
    public static IReadOnlyList<string> WandbConfigFiles { get; } = ["wandb-config.yaml", "wanb-config.yaml"];

    /// <summary>The repo-level config of circuit-tracer transcoder repos (<c>model_name</c>, for CLTs the hooks).</summary>
    public const string CircuitTracerConfigFile = "config.yaml";

    /// <summary>
    /// SAELens's <c>mwhanna_transcoder</c>: <c>layer_N.safetensors</c> (layer N = the last <c>_</c>-separated part of the
    /// name) with W_enc stored as [d_sae, d_in] (transposed on load), W_dec [d_sae, d_out], b_enc, b_dec; beside it the
    /// repo's <c>wandb-config.yaml</c> (or <c>wanb-config.yaml</c>) giving <c>d_model.value</c> (d_in = d_out),
    /// <c>d_feature.value</c> (d_sae) and <c>batch_size.value</c> (SAELens's context_size), and <c>config.yaml</c> giving
    /// <c>model_name</c>; without it (the 14b repos) the model is Qwen/Qwen3-{size}B from <c>qwen3-{size}b</c> in
    /// <paramref name="repoId"/> (or the path). A ReLU transcoder (SAELens <c>transcoder</c>) from
    /// <c>blocks.N.mlp.hook_in</c> (= <c>ln2.hook_normalized</c>) to <c>blocks.N.hook_mlp_out</c>, apply_b_dec_to_input
    /// false, dataset monology/pile-uncopyrighted, model_from_pretrained_kwargs {fold_ln: false}.
    /// </summary>
    public static Sae LoadMwhannaTranscoder(string file, string? repoId = null)
    {
        string dir = Path.GetDirectoryName(Path.GetFullPath(file))!;
        int layer = MwhannaLayer(file) ??
            throw new SaeSharpException($"{file}: the file name does not end in _<layer> (SAELens's mwhanna_transcoder loader reads the layer from it)");
        string wandbPath = WandbConfigFiles.Select(f => Path.Combine(dir, f)).FirstOrDefault(File.Exists)
            ?? throw new SaeSharpException($"{dir}: neither {WandbConfigFiles[0]} nor {WandbConfigFiles[1]} beside {Path.GetFileName(file)}");
        string configPath = Path.Combine(dir, CircuitTracerConfigFile);
        string model;
        if (File.Exists(configPath)) model = YamlFields.RequiredStr(YamlFields.Load(configPath), configPath, "model_name");
        else
        {
            string where = repoId ?? Path.GetFullPath(file);
            var size = Regex.Match(where, @"qwen3-(\d+(?:\.\d+)?)b");
            if (!size.Success)
                throw new SaeSharpException($"{configPath}: not found, and '{where}' names no qwen3-<size>b to take the model from " +
                    "(copy the repo's config.yaml beside the file, keep the repo's name in the path, e.g. …/qwen3-14b-transcoders/layer_3.safetensors, " +
                    "or load it by release id, e.g. mwhanna-qwen3-14b-transcoders/layer_3)");
            model = $"Qwen/Qwen3-{size.Groups[1].Value}B";
        }
        var wandb = YamlFields.Load(wandbPath);
        int dModel = YamlFields.RequiredInt(wandb, wandbPath, "d_model", "value");
        var cfg = new SaeConfig
        {
            Architecture = SaeArchitectures.Standard,
            DIn = dModel,
            DOut = dModel,
            DSae = YamlFields.RequiredInt(wandb, wandbPath, "d_feature", "value"),
            ApplyBDecToInput = false,
            Metadata = new SaeMetadata
            {
                ModelName = model,
                ContextSize = YamlFields.RequiredInt(wandb, wandbPath, "batch_size", "value"),
                PrependBos = true,
                DatasetPath = "monology/pile-uncopyrighted",
                ModelFromPretrainedKwargs = new() { ["fold_ln"] = JsonSerializer.SerializeToElement(false) },
            },
        };
        (cfg.Metadata.HookName, cfg.Metadata.HookNameOut) = MwhannaHooks(layer);
        var raw = SafeTensors.Load(file);
        try
        {
            using var scope = NewDisposeScope();
            var weights = new Dictionary<string, Tensor>(raw, StringComparer.Ordinal) { ["W_enc"] = Need(raw, "W_enc", file, 2).t() };
            return SaeWeights.Create(cfg, weights, wandbPath, file);
        }
        finally
        {
            foreach (var t in raw.Values) t.Dispose();
        }
    }

    /// <summary>The layer SAELens's mwhanna_transcoder reads from a file name: its last <c>_</c>-separated part
    /// without <c>.safetensors</c> (<c>layer_12.safetensors</c> → 12); null when that is not a number.</summary>
    private static int? MwhannaLayer(string file) =>
        int.TryParse(Path.GetFileName(file).Replace(".safetensors", "", StringComparison.Ordinal).Split('_')[^1],
            NumberStyles.None, CultureInfo.InvariantCulture, out int layer) ? layer : null;

    private static (string In, string Out) MwhannaHooks(int layer) => ($"blocks.{layer}.mlp.hook_in", $"blocks.{layer}.hook_mlp_out");

    // ---- mntss_clt_layer_transcoder ----

    /// <summary>
    /// SAELens's <c>mntss_clt_layer_transcoder</c>: layer L of a cross-layer transcoder as a single-layer transcoder.
    /// <c>W_enc_L.safetensors</c> holds <c>W_enc_L</c> [d_sae, d_in] (transposed on load), <c>b_enc_L</c> [d_sae] and
    /// <c>b_dec_L</c> [d_in]; <c>W_dec_L.safetensors</c> holds <c>W_dec_L</c> [d_sae, layers written, d_out], summed over
    /// its second dimension — so, as SAELens warns (<see cref="CltLayerNote"/>, kept in <c>metadata.loading_note</c>), the
    /// SAE is for feature activations, not reconstruction. The repo's <c>config.yaml</c> gives <c>model_name</c>,
    /// <c>feature_input_hook</c> and <c>feature_output_hook</c> (hooks <c>blocks.L.{input}</c> → <c>blocks.L.{output}</c>);
    /// d_in = d_out = |b_dec_L|, apply_b_dec_to_input false, model_from_pretrained_kwargs {fold_ln: false}.
    /// </summary>
    public static Sae LoadMntssCltLayer(string encoderFile)
    {
        var m = Regex.Match(Path.GetFileName(encoderFile), @"^W_enc_(.+)\.safetensors$");
        if (!m.Success) throw new SaeSharpException($"{encoderFile}: expected a file named W_enc_<layer>.safetensors");
        string layer = m.Groups[1].Value;
        string dir = Path.GetDirectoryName(Path.GetFullPath(encoderFile))!;
        string decoderFile = Path.Combine(dir, $"W_dec_{layer}.safetensors"), configPath = Path.Combine(dir, CircuitTracerConfigFile);
        var yaml = YamlFields.Load(configPath);
        string model = YamlFields.RequiredStr(yaml, configPath, "model_name");
        string input = YamlFields.RequiredStr(yaml, configPath, "feature_input_hook");
        string output = YamlFields.RequiredStr(yaml, configPath, "feature_output_hook");
        if (!File.Exists(decoderFile)) throw new SaeSharpException($"{decoderFile}: file not found (the decoders of CLT layer {layer})");
        var enc = SafeTensors.Load(encoderFile);
        Dictionary<string, Tensor>? dec = null;
        try
        {
            dec = SafeTensors.Load(decoderFile);
            using var scope = NewDisposeScope();
            var bEnc = Need(enc, $"b_enc_{layer}", encoderFile, 1);
            var bDec = Need(enc, $"b_dec_{layer}", encoderFile, 1);
            int dIn = checked((int)bDec.shape[0]);
            var cfg = new SaeConfig
            {
                Architecture = SaeArchitectures.Standard,
                DIn = dIn,
                DOut = dIn,
                DSae = checked((int)bEnc.shape[0]),
                ApplyBDecToInput = false,
                Metadata = new SaeMetadata
                {
                    ModelName = model,
                    HookName = $"blocks.{layer}.{input}",
                    ModelFromPretrainedKwargs = new() { ["fold_ln"] = JsonSerializer.SerializeToElement(false) },
                    Extra = new()
                    {
                        ["hook_name_out"] = JsonSerializer.SerializeToElement($"blocks.{layer}.{output}"),
                        [NoteKey] = JsonSerializer.SerializeToElement(CltLayerNote),
                    },
                },
            };
            return SaeWeights.Create(cfg, new Dictionary<string, Tensor>
            {
                ["W_enc"] = Need(enc, $"W_enc_{layer}", encoderFile, 2).t(),
                ["b_enc"] = bEnc,
                ["b_dec"] = bDec,
                ["W_dec"] = Need(dec, $"W_dec_{layer}", decoderFile, 3).sum(1),
            }, encoderFile, $"{encoderFile} and {decoderFile}");
        }
        finally
        {
            foreach (var t in enc.Values) t.Dispose();
            if (dec is not null) foreach (var t in dec.Values) t.Dispose();
        }
    }

    // ---- temporal ----

    /// <summary>The config file of a canrager Temporal SAE folder.</summary>
    public const string TemporalConfigFile = "conf.yaml";
    /// <summary>The weights file of a canrager Temporal SAE folder.</summary>
    public const string TemporalWeightsFile = "latest_ckpt.safetensors";

    /// <summary>Whether <paramref name="path"/> is a canrager Temporal SAE folder (<c>conf.yaml</c> and
    /// <c>latest_ckpt.safetensors</c>), or that folder's <c>latest_ckpt.safetensors</c>.</summary>
    public static bool IsTemporalFolder(string path)
    {
        ArgumentNullException.ThrowIfNull(path);
        string weights = File.Exists(path) ? Path.GetFullPath(path) : Path.Combine(path, TemporalWeightsFile);
        return File.Exists(weights) && SaeCompanion.HasRequired(TemporalCompanionsOf(weights));
    }

    /// <summary>What the loader reads beside <c>latest_ckpt.safetensors</c>: conf.yaml; null for another file.</summary>
    internal static IReadOnlyList<SaeCompanion>? TemporalCompanionsOf(string file) =>
        SaeCompanion.NameOf(file) == TemporalWeightsFile ? [SaeCompanion.Needs(SaeCompanion.Beside(file, TemporalConfigFile))] : null;

    /// <summary>
    /// SAELens's <c>temporal</c> (<c>get_temporal_sae_config_from_hf</c>, <c>temporal_sae_huggingface_loader</c>): a
    /// folder holding <c>conf.yaml</c> and <c>latest_ckpt.safetensors</c>, as canrager/temporalSAEs lays out an SAE. The
    /// config: d_in = <c>llm.dimin</c>, d_sae = d_in·<c>sae.exp_factor</c>, <c>sae.{n_heads, n_attn_layers,
    /// bottleneck_factor, sae_diff_type, kval_topk, tied_weights}</c>, dtype <c>data.dtype</c>, normalize_activations
    /// "constant_scalar_rescale" with activation_normalization_factor = <c>sae.scaling_factor</c> (not the release
    /// table's norm_scaling_factor, which SAELens uses only for "expected_average_only_in"), apply_b_dec_to_input true, hook
    /// <c>blocks.N.hook_resid_post</c> with N from the first <c>layer_N</c> of <paramref name="releasePath"/> (the release
    /// table's path; null: the folder's path), then the release's <paramref name="configOverrides"/> (<c>hook_name</c>,
    /// <c>model_name</c>, <c>dataset_path</c>), as SAELens applies them. The weights: <c>D</c> → W_dec, <c>b</c> → b_dec,
    /// <c>E</c> → W_enc (untied only), <c>attn_layers.*</c> as they are; other tensors ignored.
    /// </summary>
    public static Sae LoadTemporal(string folder, string? releasePath = null, JsonObject? configOverrides = null)
    {
        ArgumentNullException.ThrowIfNull(folder);
        if (File.Exists(folder) && Path.GetFileName(folder) == TemporalWeightsFile) folder = Path.GetDirectoryName(Path.GetFullPath(folder))!;
        string cfgPath = Path.Combine(folder, TemporalConfigFile), wPath = Path.Combine(folder, TemporalWeightsFile);
        var yaml = YamlFields.Load(cfgPath);
        int dIn = YamlFields.RequiredInt(yaml, cfgPath, "llm", "dimin");
        string where = releasePath ?? Path.GetFullPath(folder);
        var layer = Regex.Match(where.Replace('\\', '/'), @"layer_(\d+)");
        if (!layer.Success)
            throw new SaeSharpException($"{where}: no layer_<N> in the path (SAELens's temporal loader reads the layer from it)");
        double expFactor = YamlDouble(yaml, cfgPath, "sae", "exp_factor");
        if (!(dIn > 0 && expFactor > 0 && dIn * expFactor <= int.MaxValue))
            throw new SaeSharpException($"{cfgPath}: 'llm.dimin' {dIn} × 'sae.exp_factor' {expFactor.ToString(CultureInfo.InvariantCulture)} " +
                "is not a positive number of latents that fits in an int");
        string? kval = YamlFields.Str(yaml, cfgPath, "sae", "kval_topk");
        string dtype = YamlFields.Str(yaml, cfgPath, "data", "dtype") ?? "float32";
        string tied = YamlFields.RequiredStr(yaml, cfgPath, "sae", "tied_weights");
        if (!bool.TryParse(tied, out bool tiedWeights))
            throw new SaeSharpException($"{cfgPath}: 'sae.tied_weights' is '{tied}', expected true or false");
        var extra = new Dictionary<string, JsonElement>
        {
            ["n_heads"] = JsonSerializer.SerializeToElement(YamlFields.RequiredInt(yaml, cfgPath, "sae", "n_heads")),
            ["n_attn_layers"] = JsonSerializer.SerializeToElement(YamlFields.RequiredInt(yaml, cfgPath, "sae", "n_attn_layers")),
            ["bottleneck_factor"] = JsonSerializer.SerializeToElement(YamlFields.RequiredInt(yaml, cfgPath, "sae", "bottleneck_factor")),
            ["sae_diff_type"] = JsonSerializer.SerializeToElement(YamlFields.RequiredStr(yaml, cfgPath, "sae", "sae_diff_type")),
            ["kval_topk"] = kval is null or "null" or "~" or "" ? JsonSerializer.SerializeToElement<int?>(null)
                : JsonSerializer.SerializeToElement(YamlFields.RequiredInt(yaml, cfgPath, "sae", "kval_topk")),
            ["tied_weights"] = JsonSerializer.SerializeToElement(tiedWeights),
            ["activation_normalization_factor"] = JsonSerializer.SerializeToElement(YamlDouble(yaml, cfgPath, "sae", "scaling_factor")),
        };
        var cfg = new SaeConfig
        {
            Architecture = SaeArchitectures.Temporal,
            DIn = dIn,
            DSae = checked((int)(dIn * expFactor)),
            Dtype = SaeConfig.DtypeName(SaeLensFormat.DtypeFromString(dtype, cfgPath + ": data.dtype")),
            ApplyBDecToInput = true,
            NormalizeActivations = TemporalSae.ConstantScalarRescale,
            Metadata = new SaeMetadata { HookName = $"blocks.{layer.Groups[1].Value}.hook_resid_post" },
            Extra = extra,
        };
        if (configOverrides is not null)
        {
            if (configOverrides["hook_name"]?.GetValue<string>() is { } hook) cfg.Metadata.HookName = hook;
            if (configOverrides["model_name"]?.GetValue<string>() is { } model) cfg.Metadata.ModelName = model;
            if (configOverrides["dataset_path"]?.GetValue<string>() is { } dataset) cfg.Metadata.DatasetPath = dataset;
        }
        if (!File.Exists(wPath)) throw new SaeSharpException($"{wPath}: file not found");
        var raw = SafeTensors.Load(wPath);
        try
        {
            var weights = raw.Where(kv => kv.Key.StartsWith("attn_layers.", StringComparison.Ordinal)).ToDictionary(kv => kv.Key, kv => kv.Value, StringComparer.Ordinal);
            weights["W_dec"] = Need(raw, "D", wPath, 2);
            weights["b_dec"] = Need(raw, "b", wPath, 1);
            if (raw.TryGetValue("E", out var e)) weights["W_enc"] = e;
            return SaeWeights.Create(cfg, weights, cfgPath, wPath);
        }
        finally
        {
            foreach (var t in raw.Values) t.Dispose();
        }
    }

    private static double YamlDouble(YamlDotNet.RepresentationModel.YamlMappingNode yaml, string source, params string[] keys)
    {
        string s = YamlFields.RequiredStr(yaml, source, keys);
        return double.TryParse(s, NumberStyles.Float, CultureInfo.InvariantCulture, out double v) && double.IsFinite(v)
            ? v
            : throw new SaeSharpException($"{source}: '{string.Join(".", keys)}' is '{s}', expected a finite number");
    }

    // ---- from disk ----

    /// <summary>Whether <paramref name="path"/> is a deepseek_r1 file as its repo holds it: a <c>.pt</c> (not
    /// dictionary_learning's <c>ae.pt</c>) named with its layer <c>l&lt;N&gt;</c> whose state dict has
    /// <c>encoder.weight</c>, <c>encoder.bias</c>, <c>decoder.weight</c> and <c>decoder.bias</c>, or a folder holding one
    /// such file.</summary>
    public static bool IsDeepSeekR1Path(string path) => DeepSeekR1File(path) is not null;

    internal static string? DeepSeekR1File(string path) => OneFile(path, f =>
        DeepSeekR1CompanionsOf(f) is not null && TorchPickle.Mentions(f, "encoder.weight", "encoder.bias", "decoder.weight", "decoder.bias"));

    /// <summary>What the deepseek_r1 loader reads beside a <c>.pt</c> (not <c>ae.pt</c>) named with its layer
    /// <c>l&lt;N&gt;</c>: nothing; null for another file.</summary>
    internal static IReadOnlyList<SaeCompanion>? DeepSeekR1CompanionsOf(string file) =>
        Path.GetExtension(file) == ".pt" && SaeCompanion.NameOf(file) != DictionaryLearning.WeightsFile && Regex.IsMatch(SaeCompanion.NameOf(file), @"l\d+")
            ? [] : null;

    /// <summary>Whether <paramref name="path"/> is one of the two Goodfire files under its repo's name (the only names
    /// SAELens's goodfire loader has a config for), or a folder holding one.</summary>
    public static bool IsGoodfirePath(string path) => GoodfireFile(path) is not null;

    internal static string? GoodfireFile(string path) => OneFile(path, f =>
        GoodfireCompanionsOf(f) is not null && TorchPickle.Mentions(f, "encoder_linear.weight", "decoder_linear.weight"));

    /// <summary>What the goodfire loader reads beside one of its two files: nothing; null for another file.</summary>
    internal static IReadOnlyList<SaeCompanion>? GoodfireCompanionsOf(string file) =>
        GoodfireSaes.ContainsKey(SaeCompanion.NameOf(file)) ? [] : null;

    /// <summary>Whether <paramref name="path"/> is a connor_rob_hook_z <c>NAME.pt</c> with its <c>NAME_cfg.json</c> beside
    /// it, or a folder holding one such pair.</summary>
    public static bool IsConnorRobHookZPath(string path) => ConnorRobHookZFile(path) is not null;

    internal static string? ConnorRobHookZFile(string path) => OneFile(path, f => SaeCompanion.HasRequired(ConnorRobHookZCompanionsOf(f)));

    /// <summary>What the connor_rob_hook_z loader reads beside <c>NAME.pt</c>: <c>NAME_cfg.json</c>; null for another file.</summary>
    internal static IReadOnlyList<SaeCompanion>? ConnorRobHookZCompanionsOf(string file) =>
        Path.GetExtension(file) == ".pt" ? [SaeCompanion.Needs(ConnorCfgPath(file))] : null;

    /// <summary>Whether <paramref name="path"/> is a Llama Scope R1 Distill SAE folder (<c>config.json</c> and
    /// <c>sae_weights.safetensors</c>, without SAELens's <c>cfg.json</c>) or that folder's weights file.</summary>
    public static bool IsLlamaScopeR1DistillPath(string path)
    {
        string weights = Path.Combine(FolderOf(path, SaeLensFormat.WeightsFile), SaeLensFormat.WeightsFile);
        return File.Exists(weights) && SaeCompanion.HasRequired(LlamaScopeR1DistillCompanionsOf(weights))
            && !SaeCompanion.HasRequired(SaeLensFormat.CompanionsOf(weights));
    }

    /// <summary>What the llama_scope_r1_distill loader reads beside <c>sae_weights.safetensors</c>: config.json; null
    /// for another file.</summary>
    internal static IReadOnlyList<SaeCompanion>? LlamaScopeR1DistillCompanionsOf(string file) =>
        SaeCompanion.NameOf(file) == SaeLensFormat.WeightsFile ? [SaeCompanion.Needs(SaeCompanion.Beside(file, R1DistillConfigFile))] : null;

    /// <summary>Loads a Llama Scope R1 Distill folder (or its weights file) copied from the repo: the norm_scaling_factor
    /// is <paramref name="normScalingFactor"/> when given (a release SAE), else that of the release SAE whose repo path
    /// the folder's path ends with (<see cref="NormScalingFactorAt"/>).</summary>
    public static Sae LoadLlamaScopeR1DistillPath(string path, double? normScalingFactor = null)
    {
        string folder = FolderOf(path, SaeLensFormat.WeightsFile);
        return LoadLlamaScopeR1Distill(folder, normScalingFactor ?? NormScalingFactorAt(LlamaScopeR1Distill, folder));
    }

    /// <summary>Whether <paramref name="path"/> is an mwhanna_transcoder file: <c>…_N.safetensors</c> with the repo's
    /// <c>wandb-config.yaml</c> (or <c>wanb-config.yaml</c>) beside it. (The repo's folder is a transcoder set.)</summary>
    public static bool IsMwhannaTranscoderFile(string path) =>
        File.Exists(path) && SaeCompanion.HasRequired(MwhannaTranscoderCompanionsOf(Path.GetFullPath(path)));

    /// <summary>What the mwhanna_transcoder loader reads beside <c>…_N.safetensors</c>: the repo's wandb-config.yaml (or
    /// its misspelling), and config.yaml (the model) when there; null for another file.</summary>
    internal static IReadOnlyList<SaeCompanion>? MwhannaTranscoderCompanionsOf(string file) =>
        Path.GetExtension(file) == ".safetensors" && MwhannaLayer(file) is not null
            ? [SaeCompanion.Needs([.. WandbConfigFiles.Select(f => SaeCompanion.Beside(file, f))]),
               SaeCompanion.May(SaeCompanion.Beside(file, CircuitTracerConfigFile))]
            : null;

    /// <summary>Whether <paramref name="path"/> is one layer's encoder file of a circuit-tracer CLT,
    /// <c>W_enc_L.safetensors</c> with <c>W_dec_L.safetensors</c> beside it (SAELens's mntss_clt_layer_transcoder), or a
    /// folder holding one such layer only (a folder of every layer is the whole CLT).</summary>
    public static bool IsMntssCltLayerPath(string path) => MntssCltLayerFile(path) is not null;

    internal static string? MntssCltLayerFile(string path) => OneFile(path, f => SaeCompanion.HasRequired(MntssCltLayerCompanionsOf(f)));

    /// <summary>What the mntss_clt_layer_transcoder loader reads beside <c>W_enc_L.safetensors</c>: the layer's
    /// <c>W_dec_L.safetensors</c> and the repo's config.yaml; null for another file.</summary>
    internal static IReadOnlyList<SaeCompanion>? MntssCltLayerCompanionsOf(string file) =>
        Regex.Match(SaeCompanion.NameOf(file), @"^W_enc_(.+)\.safetensors$") is { Success: true } m
            ? [SaeCompanion.Needs(SaeCompanion.Beside(file, $"W_dec_{m.Groups[1].Value}.safetensors")),
               SaeCompanion.Needs(SaeCompanion.Beside(file, CircuitTracerConfigFile))]
            : null;

    /// <summary>Why <paramref name="path"/>, which looks like one of these conversions' files, was not taken for one: the
    /// file that its loader needs beside it and that is missing; else null.</summary>
    public static string? MissingCompanion(string path)
    {
        ArgumentNullException.ThrowIfNull(path);
        if (!File.Exists(path)) return null;
        string name = Path.GetFileName(path);
        if (Regex.Match(name, @"^W_enc_(.+)\.safetensors$") is { Success: true } m)
            return $"a circuit-tracer CLT layer file ({MntssCltLayerTranscoder}) needs W_dec_{m.Groups[1].Value}.safetensors and the repo's " +
                $"{CircuitTracerConfigFile} beside it";
        if (Path.GetExtension(name) == ".safetensors" && MwhannaLayer(path) is not null && !IsMwhannaTranscoderFile(path))
            return $"an {MwhannaTranscoder} layer file needs the repo's {WandbConfigFiles[0]} (the sizes) and {CircuitTracerConfigFile} " +
                "(the model) beside it; download them with it, or load it by release id (`sae releases --search mwhanna` lists them)";
        return null;
    }

    /// <summary>The release table's <c>norm_scaling_factor</c> for a local copy <paramref name="path"/> of a release SAE in
    /// <paramref name="conversion"/> (null: the SAELens format), found by the SAE's repo path, which the local path must
    /// end with (downloaded with the repo's folder names kept); null when no entry matches or matching entries disagree.</summary>
    public static double? NormScalingFactorAt(string? conversion, string path)
    {
        ArgumentNullException.ThrowIfNull(path);
        string full = Path.GetFullPath(path).Replace('\\', '/').TrimEnd('/');
        var factors = SaeReleases.All.Where(r => r.Conversion == conversion).SelectMany(r => r.Saes)
            .Where(s => s.NormScalingFactor is not null && full.EndsWith("/" + s.Path.Trim('/'), StringComparison.Ordinal))
            .Select(s => s.NormScalingFactor!.Value).Distinct().Take(2).ToList();
        return factors.Count == 1 ? factors[0] : null;
    }

    /// <summary>The file <paramref name="isFile"/> accepts that <paramref name="path"/> names: the path itself, or the only
    /// such file directly in a folder (a repo downloaded whole); null when none or several.</summary>
    private static string? OneFile(string path, Func<string, bool> isFile)
    {
        if (File.Exists(path)) return isFile(path) ? path : null;
        if (!Directory.Exists(path)) return null;
        var files = Directory.EnumerateFiles(path).Where(isFile).Take(2).ToList();
        return files.Count == 1 ? files[0] : null;
    }

    /// <summary>The folder of an SAE given as the folder or as its file <paramref name="fileName"/>.</summary>
    private static string FolderOf(string path, string fileName) =>
        File.Exists(path) && Path.GetFileName(path) == fileName ? Path.GetDirectoryName(Path.GetFullPath(path))! : path;

    // ---- shared ----

    /// <summary><paramref name="raw"/>[<paramref name="key"/>], which must have <paramref name="dims"/> dimensions.</summary>
    internal static Tensor Need(IReadOnlyDictionary<string, Tensor> raw, string key, string source, int dims)
    {
        if (!raw.TryGetValue(key, out var t))
            throw new SaeSharpException($"{source}: missing tensor '{key}' (tensors: {string.Join(", ", raw.Keys)})");
        if (t.dim() != dims)
            throw new SaeSharpException($"{source}: tensor '{key}' has shape [{string.Join(", ", t.shape)}], expected {dims} dimensions");
        return t;
    }

    private static JsonObject ReadJson(string path)
    {
        if (!File.Exists(path)) throw new SaeSharpException($"{path}: file not found");
        try
        {
            return StrictJson.Parse(File.ReadAllText(path)) as JsonObject ?? throw new SaeSharpException($"{path}: expected a JSON object");
        }
        catch (JsonException e)
        {
            throw new SaeSharpException($"{path}: invalid JSON ({e.Message})", e);
        }
    }

    private static SaeSharpException Missing(string source, string key) => new($"{source}: missing key '{key}'");
}
