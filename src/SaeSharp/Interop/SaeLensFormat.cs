using System.Text.Json;
using System.Text.Json.Nodes;
using SaeSharp.IO;
using SaeSharp.Saes;
using static TorchSharp.torch;

namespace SaeSharp.Interop;

/// <summary>
/// SAELens's on-disk layout: <c>cfg.json</c> + <c>sae_weights.safetensors</c> (+ <c>sparsity.safetensors</c>, key
/// <c>sparsity</c>, log10 of firing fraction + 1e-10). Reads v6 configs and the pre-6.0 flat ones (<c>hook_point</c>,
/// <c>activation_fn_str</c>, boolean <c>normalize_activations</c>); an "expected_average_only_in" scaling factor (the
/// release table's <c>norm_scaling_factor</c>, else <c>activation_scaler.json</c> or the cfg) is folded into the weights on
/// load. A <c>scaling_factor</c> tensor (SAELens before 6.0) is dropped when all ones, as SAELens does, and otherwise,
/// with <c>finetuning_scaling_factor</c> true, folded into the rows of W_dec (the old decode was (f·s)·W_dec). A TopK
/// SAE's <c>rescale_acts_by_decoder_norm</c> is folded into the weights as SAELens folds it.
/// </summary>
public static class SaeLensFormat
{
    /// <summary>File name of the SAE's configuration (<c>cfg.json</c>).</summary>
    public const string CfgFile = "cfg.json";
    /// <summary>File name of the weights (<c>sae_weights.safetensors</c>: W_enc, b_enc, W_dec, b_dec, ...).</summary>
    public const string WeightsFile = "sae_weights.safetensors";

    /// <summary>File name of the per-latent log10 firing frequencies (<c>sparsity.safetensors</c>, tensor <c>sparsity</c>).</summary>
    public const string SparsityFile = "sparsity.safetensors";
    /// <summary>File name of SAELens's activation scaler (<c>activation_scaler.json</c>, <c>scaling_factor</c>).</summary>
    public const string ActivationScalerFile = "activation_scaler.json";

    /// <summary>True when <paramref name="dir"/> holds both <c>cfg.json</c> and <c>sae_weights.safetensors</c>, or is
    /// such a folder's <c>sae_weights.safetensors</c>.</summary>
    public static bool IsSaeLensFolder(string dir)
    {
        string weights = Path.Combine(FolderOf(dir), WeightsFile);
        return File.Exists(weights) && SaeCompanion.HasRequired(CompanionsOf(weights));
    }

    /// <summary>What the loader reads beside <c>sae_weights.safetensors</c>: cfg.json, and sparsity.safetensors and
    /// activation_scaler.json when there; null for a file of another name.</summary>
    internal static IReadOnlyList<SaeCompanion>? CompanionsOf(string file) =>
        SaeCompanion.NameOf(file) == WeightsFile
            ? [SaeCompanion.Needs(SaeCompanion.Beside(file, CfgFile)), SaeCompanion.May(SaeCompanion.Beside(file, SparsityFile)),
               SaeCompanion.May(SaeCompanion.Beside(file, ActivationScalerFile))]
            : null;

    /// <summary>The folder of a path naming its <c>sae_weights.safetensors</c> (as <c>hf:ORG/REPO/.../sae_weights.safetensors</c>
    /// resolves), else the path itself.</summary>
    private static string FolderOf(string path) =>
        File.Exists(path) && Path.GetFileName(path) == WeightsFile ? Path.GetDirectoryName(Path.GetFullPath(path))! : path;

    /// <summary>Writes cfg.json, sae_weights.safetensors and, when given, sparsity.safetensors into the folder
    /// <paramref name="dir"/> (created if absent; an existing file there is a <see cref="SaeSharpException"/>), all
    /// replaced together (a failure part-way leaves the previous files as they were). A disposed SAE is an
    /// <see cref="ObjectDisposedException"/> before anything is written.</summary>
    public static void Save(Sae sae, string dir, Tensor? sparsity = null)
    {
        using var group = new AtomicFileGroup();
        Save(sae, dir, sparsity, group);
        group.Commit();
    }

    /// <summary>Writes the files of <see cref="Save(Sae, string, Tensor?)"/> into <paramref name="group"/>, to be
    /// renamed into place with whatever else its commit replaces.</summary>
    public static void Save(Sae sae, string dir, Tensor? sparsity, AtomicFileGroup group)
    {
        ArgumentNullException.ThrowIfNull(sae);
        ArgumentNullException.ThrowIfNull(dir);
        sae.ThrowIfDisposed(); // a disposed SAE's state_dict is empty: saving it would replace the weights with none
        if (File.Exists(dir))
            throw new SaeSharpException($"{dir}: is a file, but a folder is expected (SAELens format: cfg.json and sae_weights.safetensors in a folder); " +
                "pass a folder path, or remove the file");
        try
        {
            Directory.CreateDirectory(dir);
        }
        catch (IOException e)
        {
            throw new SaeSharpException($"{dir}: cannot create the SAE folder ({e.Message}); a folder path is expected", e);
        }
        var cfg = sae.Cfg.Clone();
        cfg.Metadata.SaeLensVersion ??= SaeMetadata.SaeLensFormatVersion;
        AsSaeLensTranscoder(cfg);
        var dtype = DtypeFromString(cfg.Dtype);
        using (NewDisposeScope())
            SafeTensors.Save(Path.Combine(dir, WeightsFile), sae.state_dict().Select(kv => KeyValuePair.Create(kv.Key, kv.Value.detach().to(dtype))).ToList(), null, group);
        if (sparsity is not null)
            SafeTensors.Save(Path.Combine(dir, SparsityFile), new Dictionary<string, Tensor> { ["sparsity"] = sparsity }, null, group);
        group.WriteAllText(Path.Combine(dir, CfgFile), cfg.ToJson());
    }

    /// <summary>Loads an SAE from a SAELens folder.</summary>
    public static Sae Load(string dir) => Load(dir, null);

    /// <summary>Loads an SAE from a SAELens folder; <paramref name="normScalingFactor"/> is the release table's
    /// <c>norm_scaling_factor</c>, folded in (as <c>SAE.from_pretrained</c> does) when the cfg says
    /// "expected_average_only_in", and <paramref name="normalizeActivations"/> the release's
    /// <c>config_overrides</c> value replacing the cfg's.</summary>
    public static Sae Load(string dir, double? normScalingFactor, string? normalizeActivations = null)
    {
        dir = FolderOf(dir);
        var cfgPath = Path.Combine(dir, CfgFile);
        var cfg = ReadConfig(cfgPath);
        if (normalizeActivations is not null)
        {
            cfg.NormalizeActivations = normalizeActivations;
            cfg.Validate($"{cfgPath} (with the release's config_overrides)");
        }
        var weightsPath = Path.Combine(dir, WeightsFile);
        var weights = SafeTensors.Load(weightsPath);
        Sae sae;
        try
        {
            FoldFinetuningScalingFactor(cfg, weights, cfgPath, weightsPath);
            // d_in and d_sae are checked against the tensors present before the SAE is allocated (a cfg.json
            // declaring d_sae 10^9 is refused in one line).
            SaeWeights.CheckDeclaredSizes(cfg, weights, cfgPath, weightsPath);
            sae = SaeFactory.Create(cfg);
            try
            {
                SaeWeights.Load(sae, weights, weightsPath);
                FoldDecoderNormRescale(sae);
            }
            catch
            {
                sae.Dispose();
                throw;
            }
        }
        finally
        {
            foreach (var w in weights.Values) w.Dispose();
        }
        if (cfg.NormalizeActivations == "expected_average_only_in")
        {
            // Last, a copy of a release SAE whose factor only the release table has, found by the repo path it was downloaded under.
            double? factor = normScalingFactor ?? ReadScalingFactor(dir, cfg) ?? SaeLensConversions.NormScalingFactorAt(null, dir);
            if (factor is null)
            {
                sae.Dispose();
                throw new SaeSharpException($"{cfgPath}: normalize_activations is 'expected_average_only_in' but no scaling factor was found in {ActivationScalerFile}, " +
                    "the cfg or the release table (a copy of a release SAE: load it by release id, or keep the repo's folder names in its path)");
            }
            sae.FoldActivationScale(factor.Value, factor.Value);
            cfg.NormalizeActivations = "none";
        }
        try
        {
            sae.LogFeatureSparsity = ReadLogFeatureSparsity(dir, sae.Cfg.DSae);
        }
        catch
        {
            sae.Dispose();
            throw;
        }
        return sae;
    }

    /// <summary>The <c>sparsity</c> tensor of <paramref name="dir"/>'s <c>sparsity.safetensors</c> as d_sae floats
    /// (SAELens's log feature sparsity), or null when the folder has none; a tensor of another size is an error naming the file.</summary>
    public static float[]? ReadLogFeatureSparsity(string dir, int dSae)
    {
        using var scope = NewDisposeScope();
        if (LoadSparsity(dir) is not { } t) return null;
        if (t.numel() != dSae || t.dim() > 2)
            throw new SaeSharpException($"{Path.Combine(dir, SparsityFile)}: tensor 'sparsity' has shape [{string.Join(", ", t.shape)}], expected [{dSae}] (d_sae)");
        return t.reshape(-1).data<float>().ToArray();
    }

    /// <summary>A SAELens 6 TopK SAE with <c>rescale_acts_by_decoder_norm</c> multiplies the pre-activations by
    /// ‖W_dec[j]‖ before the top-k and divides the features by it before decoding; SAELens's <c>_fold_norm_topk</c>
    /// (b_enc·n, W_enc·n, W_dec/n) gives the same features and output with plain TopK. A false flag (plain TopK already)
    /// stays in the config: a run from the SAE keeps training it with free decoder rows, and a save writes it again.</summary>
    private static void FoldDecoderNormRescale(Sae sae)
    {
        if (sae.Cfg.Architecture != SaeArchitectures.TopK || sae.Cfg.Extra?.TryGetValue("rescale_acts_by_decoder_norm", out var flag) != true) return;
        if (flag.ValueKind == JsonValueKind.False) return;
        sae.Cfg.Extra.Remove("rescale_acts_by_decoder_norm");
        if (flag.ValueKind == JsonValueKind.True) sae.NormalizeDecoderRows(compensateEncoder: true);
    }

    /// <summary>SAELens before 6.0 stored a per-latent <c>scaling_factor</c> [d_sae] multiplying the features before the
    /// decoder. All ones, it is dropped (SAELens's <c>read_sae_components_from_disk</c>); otherwise it needs
    /// <c>finetuning_scaling_factor</c> true and is folded into W_dec's rows.</summary>
    private static void FoldFinetuningScalingFactor(SaeConfig cfg, Dictionary<string, Tensor> weights, string cfgPath, string weightsPath)
    {
        bool finetuning = cfg.Extra?.Remove("finetuning_scaling_factor", out var flag) == true && flag.ValueKind == JsonValueKind.True;
        if (!weights.Remove("scaling_factor", out var scale)) return;
        using var _ = scale;
        if (!scale.shape.SequenceEqual([(long)cfg.DSae]))
            throw new SaeSharpException($"{weightsPath}: tensor 'scaling_factor' has shape [{string.Join(", ", scale.shape)}], expected [{cfg.DSae}] (d_sae)");
        using var scope = NewDisposeScope();
        if (scale.eq(TorchScalars.Of(1)).all().item<bool>()) return;
        if (!finetuning)
            throw new SaeSharpException($"{weightsPath}: 'scaling_factor' is not all ones but {cfgPath} does not set finetuning_scaling_factor");
        if (!weights.TryGetValue("W_dec", out var wDec) || wDec.dim() != 2 || wDec.shape[0] != cfg.DSae)
            return;     // CheckDeclaredSizes names the problem
        weights["W_dec"] = (wDec.to(ScalarType.Float32) * scale.to(ScalarType.Float32).unsqueeze(1)).MoveToOuterDisposeScope();
        wDec.Dispose();
    }

    /// <summary>The <c>sparsity</c> tensor of a SAELens folder, or null when the folder has none.</summary>
    public static Tensor? LoadSparsity(string dir)
    {
        var path = Path.Combine(dir, SparsityFile);
        if (!File.Exists(path)) return null;
        using var f = SafeTensorsFile.Open(path);
        return f.Read("sparsity", ScalarType.Float32);
    }

    private static double? ReadScalingFactor(string dir, SaeConfig cfg)
    {
        var scalerPath = Path.Combine(dir, ActivationScalerFile);
        if (File.Exists(scalerPath))
        {
            JsonNode? node;
            try
            {
                node = IO.StrictJson.Parse(File.ReadAllText(scalerPath));
            }
            catch (JsonException e)
            {
                throw new SaeSharpException($"{scalerPath}: invalid JSON ({e.Message})", e);
            }
            if (node is JsonObject o && o["scaling_factor"] is JsonValue v && v.TryGetValue(out double d)) return d;
        }
        foreach (var key in new[] { "scaling_factor", "norm_scaling_factor", "activation_norm_scaling_factor" })
            if (cfg.Extra?.TryGetValue(key, out var e) == true && e.ValueKind == JsonValueKind.Number) return e.GetDouble();
        return null;
    }

    /// <summary>Reads a SAELens cfg.json of any version into a v6 <see cref="SaeConfig"/>.</summary>
    public static SaeConfig ReadConfig(string cfgPath)
    {
        if (!File.Exists(cfgPath)) throw new SaeSharpException($"{cfgPath}: file not found");
        JsonObject root;
        try
        {
            root = IO.StrictJson.Parse(File.ReadAllText(cfgPath)) as JsonObject ?? throw new SaeSharpException($"{cfgPath}: not a JSON object");
            _ = root.ContainsKey("metadata");       // builds the key index: a repeated key throws here
        }
        catch (JsonException e)
        {
            throw new SaeSharpException($"{cfgPath}: invalid JSON ({e.Message})");
        }
        catch (ArgumentException e)
        {
            throw new SaeSharpException($"{cfgPath}: invalid JSON ({e.Message})");
        }
        if (root["metadata"] is { } m && m is not JsonObject)
            throw new SaeSharpException($"{cfgPath}: 'metadata' should be an object");
        var cfg = root.ContainsKey("metadata") ? ParseV6(root, cfgPath) : ParsePre6(root, cfgPath);
        cfg.Metadata ??= new SaeMetadata();
        cfg.Validate(cfgPath);
        _ = DtypeFromString(cfg.Dtype, cfgPath);
        return cfg;
    }

    /// <summary>Keys a SAELens 6 cfg.json must have: SAELens reads them without a default.</summary>
    private static readonly string[] RequiredV6 = ["architecture", "d_in", "d_sae"];

    private static SaeConfig ParseV6(JsonObject root, string cfgPath)
    {
        foreach (var key in RequiredV6)
            if (root[key] is null)
                throw new SaeSharpException($"{cfgPath}: missing '{key}' (a SAELens 6 cfg.json, with 'metadata', has no default for it)");
        NormalizeBoolean(root);
        if (root["architecture"] is JsonValue av && av.TryGetValue(out string? archName) && UnsupportedSaeLensArchitectures.ContainsKey(archName))
            throw UnsupportedArchitecture(archName, cfgPath);
        FromSaeLensTranscoder(root, cfgPath);
        if (root["metadata"]?["exclude_special_tokens"] is { } exclude && exclude.GetValueKind() is not (JsonValueKind.True or JsonValueKind.False))
            _ = Tokenizers.ExcludedTokens.FromJson(exclude, $"{cfgPath}: metadata exclude_special_tokens");
        try
        {
            return SaeConfig.FromJson(root.ToJsonString(), cfgPath);
        }
        catch (JsonException e)
        {
            // e.Path is "$.k" or "$.metadata.context_size": name the key and its value, not the .NET type.
            string key = (e.Path ?? "$").TrimStart('$').TrimStart('.');
            JsonNode? value = root;
            foreach (var part in key.Split('.', StringSplitOptions.RemoveEmptyEntries)) value = (value as JsonObject)?[part];
            throw new SaeSharpException(key.Length > 0
                ? $"{cfgPath}: '{key}' is {value?.ToJsonString() ?? "null"}, a value of the wrong type for that key"
                : $"{cfgPath}: {e.Message}");
        }
    }

    /// <summary>SAELens's transcoder architectures and the SaeSharp architecture each loads as: a SaeSharp SAE is a
    /// transcoder when its cfg has <c>d_out</c>, so <c>transcoder</c> is <c>standard</c> and <c>jumprelu_transcoder</c> is
    /// <c>jumprelu</c>; <c>skip_transcoder</c> has its own (<see cref="SkipTranscoderSae"/>, with <c>W_skip</c>), and so has
    /// <c>jumprelu_skip_transcoder</c> (SAELens 6.37: <see cref="JumpReluSae"/> with <c>W_skip</c>).</summary>
    public static IReadOnlyDictionary<string, string> SaeLensTranscoders { get; } = new Dictionary<string, string>(StringComparer.Ordinal)
    {
        ["transcoder"] = SaeArchitectures.Standard,
        ["jumprelu_transcoder"] = SaeArchitectures.JumpReLU,
        ["skip_transcoder"] = SaeArchitectures.SkipTranscoder,
        ["jumprelu_skip_transcoder"] = SaeArchitectures.JumpReluSkipTranscoder,
    };

    /// <summary>The architectures SAELens 6.37.6 registers (<c>register_sae_class</c> / <c>register_sae_training_class</c>
    /// in sae_lens/__init__.py) that SaeSharp does not implement, with what they are; a cfg.json or a release naming one is
    /// refused by <see cref="UnsupportedArchitecture"/>.</summary>
    public static IReadOnlyDictionary<string, string> UnsupportedSaeLensArchitectures { get; } = new Dictionary<string, string>(StringComparer.Ordinal)
    {
    };

    /// <summary>The error for an SAE of SAELens architecture <paramref name="architecture"/> (one of
    /// <see cref="UnsupportedSaeLensArchitectures"/>) found in <paramref name="source"/>, naming what SaeSharp loads.</summary>
    public static SaeSharpException UnsupportedArchitecture(string architecture, string source) =>
        new($"{source}: SAELens architecture '{architecture}' is not supported by SaeSharp"
            + (UnsupportedSaeLensArchitectures.TryGetValue(architecture, out var what) ? $" ({what})" : "")
            + $"; SaeSharp loads the SAELens architectures {string.Join(", ", SupportedSaeLensArchitectures)}");

    /// <summary>The SAELens architecture names SaeSharp reads from a cfg.json: its own registered names (SAELens's) and
    /// SAELens's transcoders.</summary>
    public static IReadOnlyList<string> SupportedSaeLensArchitectures =>
        [.. SaeArchitectures.All.Concat(SaeLensTranscoders.Keys).Distinct()];

    /// <summary>SAELens's <c>TranscoderConfig</c> default of <c>d_out</c> when a cfg.json lacks it.</summary>
    private const int SaeLensDefaultDOut = 768;

    /// <summary>Reads a SAELens transcoder cfg as SAELens's <c>TranscoderConfig</c> does: <c>apply_b_dec_to_input</c> must be
    /// false (SAELens raises otherwise, and its default is true), a missing <c>d_out</c> is 768; the architecture becomes
    /// SaeSharp's (<see cref="SaeLensTranscoders"/>). SAELens's transcoders do not map a run-time normalisation back on
    /// decode, unlike SaeSharp's SAEs, so "layer_norm" and "constant_norm_rescale" are refused.</summary>
    private static void FromSaeLensTranscoder(JsonObject root, string cfgPath)
    {
        if (root["architecture"] is not JsonValue a || !a.TryGetValue(out string? arch) || !SaeLensTranscoders.TryGetValue(arch, out var mapped))
            return;
        if (root["apply_b_dec_to_input"] is not JsonValue v || !v.TryGetValue(out bool applyBDec) || applyBDec)
            throw new SaeSharpException($"{cfgPath}: architecture '{arch}' needs apply_b_dec_to_input false (SAELens's TranscoderConfig " +
                $"refuses true, its default), got {root["apply_b_dec_to_input"]?.ToJsonString() ?? "no value"}");
        if (root["normalize_activations"] is JsonValue n && n.TryGetValue(out string? norm) && norm is "layer_norm" or "constant_norm_rescale")
            throw new SaeSharpException($"{cfgPath}: architecture '{arch}' with normalize_activations '{norm}' is not supported " +
                "(SAELens's transcoders leave the output in the normalised scale, SaeSharp's SAEs map it back)");
        root["d_out"] ??= SaeLensDefaultDOut;
        root["architecture"] = mapped;
    }

    /// <summary>The architecture name SAELens loads <paramref name="cfg"/> under, set on it: a transcoder (<c>d_out</c> set,
    /// no b_dec subtraction, no run-time normalisation) of the standard or jumprelu architecture is SAELens's
    /// <c>transcoder</c> / <c>jumprelu_transcoder</c>; a skip transcoder always writes <c>d_out</c> (SAELens's default is 768).</summary>
    private static void AsSaeLensTranscoder(SaeConfig cfg)
    {
        if (cfg.Architecture is SaeArchitectures.SkipTranscoder or SaeArchitectures.JumpReluSkipTranscoder) cfg.DOut ??= cfg.DIn;
        cfg.Architecture = SaeLensArchitecture(cfg);
    }

    /// <summary>The <c>architecture</c> SAELens reads for <paramref name="cfg"/> once saved: <c>transcoder</c> /
    /// <c>jumprelu_transcoder</c> for a standard / jumprelu SAE with <c>d_out</c>, no b_dec subtraction and no run-time
    /// normalisation; else its own name (jumprelu_skip_transcoder, skip_transcoder).</summary>
    public static string SaeLensArchitecture(SaeConfig cfg)
    {
        ArgumentNullException.ThrowIfNull(cfg);
        if (cfg.DOut is null || cfg.ApplyBDecToInput || cfg.NormalizeActivations is "layer_norm" or "constant_norm_rescale") return cfg.Architecture;
        return cfg.Architecture switch
        {
            SaeArchitectures.Standard => "transcoder",
            SaeArchitectures.JumpReLU => "jumprelu_transcoder",
            _ => cfg.Architecture,
        };
    }

    /// <summary>Pre-6.0 SAELens configs are flat: metadata fields at top level, hook_point/activation_fn_str.</summary>
    private static SaeConfig ParsePre6(JsonObject root, string cfgPath)
    {
        NormalizeBoolean(root);
        string? activationFn = root["activation_fn_str"]?.GetValue<string>() ?? root["activation_fn"]?.GetValue<string>();
        int? k = root["activation_fn_kwargs"]?["k"]?.GetValue<int>() ?? (root["k"] is JsonValue kv ? kv.GetValue<int>() : null);
        string architecture = root["architecture"]?.GetValue<string>() ?? (activationFn == "topk" ? SaeArchitectures.TopK : SaeArchitectures.Standard);
        if (architecture == SaeArchitectures.Standard && activationFn == "topk") architecture = SaeArchitectures.TopK;
        if (activationFn is not null and not "relu" and not "topk")
            throw new SaeSharpException($"{cfgPath}: activation_fn_str '{activationFn}' is not supported (relu or topk)");

        int Int(string key) => root[key] is JsonValue v && v.TryGetValue(out int i) ? i
            : throw new SaeSharpException($"{cfgPath}: missing integer '{key}'");
        string? Str(string key) => root[key] is JsonValue v && v.TryGetValue(out string? s) ? s : null;

        var cfg = new SaeConfig
        {
            Architecture = architecture,
            DIn = Int("d_in"),
            DSae = Int("d_sae"),
            Dtype = Str("dtype") ?? "float32",
            Device = Str("device") ?? "cpu",
            ApplyBDecToInput = root["apply_b_dec_to_input"]?.GetValue<bool>() ?? true,
            NormalizeActivations = Str("normalize_activations") ?? "none",
            ReshapeActivations = Str("reshape_activations") ?? ((Str("hook_name") ?? Str("hook_point"))?.Contains("hook_z", StringComparison.Ordinal) == true ? "hook_z" : "none"),
            K = k,
            Metadata = new SaeMetadata
            {
                ModelName = Str("model_name"),
                HookName = Str("hook_name") ?? Str("hook_point"),
                HookHeadIndex = (root["hook_head_index"] ?? root["hook_point_head_index"]) is JsonValue h && h.TryGetValue(out int hi) ? hi : null,
                ContextSize = root["context_size"] is JsonValue c && c.TryGetValue(out int ci) ? ci : null,
                PrependBos = root["prepend_bos"]?.GetValue<bool>() ?? true,
                DatasetPath = Str("dataset_path"),
                ModelClassName = Str("model_class_name") ?? "HookedTransformer",
                ModelFromPretrainedKwargs = root["model_from_pretrained_kwargs"] is JsonObject kw
                    ? JsonSerializer.Deserialize<Dictionary<string, JsonElement>>(kw.ToJsonString()) : null,
                SaeLensTrainingVersion = Str("sae_lens_training_version"),
            },
        };
        foreach (var key in new[] { "scaling_factor", "norm_scaling_factor", "activation_norm_scaling_factor" })
            if (root[key] is JsonValue v && v.TryGetValue(out double d))
                (cfg.Extra ??= new())[key] = JsonSerializer.SerializeToElement(d);
        if (root["finetuning_scaling_factor"] is JsonValue f && f.TryGetValue(out bool ft))
            (cfg.Extra ??= new())["finetuning_scaling_factor"] = JsonSerializer.SerializeToElement(ft);
        return cfg;
    }

    /// <summary>Old SAELens wrote normalize_activations as a boolean (true meaning the expected-average scaling), or null for none.</summary>
    private static void NormalizeBoolean(JsonObject root)
    {
        if (root["normalize_activations"] is JsonValue v && v.TryGetValue(out bool b))
            root["normalize_activations"] = b ? "expected_average_only_in" : "none";
        else if (root.ContainsKey("normalize_activations") && root["normalize_activations"] is null)
            root["normalize_activations"] = "none";
    }

    internal static ScalarType DtypeFromString(string dtype, string? source = null) => dtype.Replace("torch.", "", StringComparison.Ordinal) switch
    {
        "float32" or "float" => ScalarType.Float32,
        "float16" or "half" => ScalarType.Float16,
        "bfloat16" => ScalarType.BFloat16,
        "float64" or "double" => ScalarType.Float64,
        _ => throw new SaeSharpException($"{(source is null ? "" : source + ": ")}unsupported SAE dtype '{dtype}' (float32, float16, bfloat16 or float64)"),
    };
}
