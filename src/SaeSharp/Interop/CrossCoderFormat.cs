using System.Text.Json;
using System.Text.Json.Nodes;
using SaeSharp.IO;
using SaeSharp.Saes;
using TorchSharp;
using static TorchSharp.torch;

namespace SaeSharp.Interop;

/// <summary>Where a crosscoder's activations come from, kept beside its weights (safetensors <c>__metadata__</c>, which the
/// fork ignores): the hook of each layer slot and the model(s).</summary>
public sealed record CrossCoderSources
{
    /// <summary>The hook read into each layer slot (TransformerLens names), when known.</summary>
    public IReadOnlyList<string>? HookNames { get; init; }
    /// <summary>The model of each layer slot (one entry when every slot reads the same model), when known.</summary>
    public IReadOnlyList<string>? ModelNames { get; init; }
    /// <summary>The hub revision of each <see cref="ModelNames"/> entry (null: main), when some model ran at another
    /// (<c>sae train --model M --revision R --diff-model M2 --diff-revision R2</c>); null when all ran at main.</summary>
    public IReadOnlyList<string?>? ModelRevisions { get; init; }
}

/// <summary>
/// Reads and writes crosscoders in the science-of-finetuning dictionary_learning fork's formats:
/// <c>model.safetensors</c> + <c>config.json</c> as <c>PyTorchModelHubMixin.save_pretrained</c> writes them (the
/// Hugging Face checkpoints), and a <c>torch.save</c>d state dict <c>ae.pt</c> (the fork's trainer output, beside a
/// trainer <c>config.json</c>). SaeSharp writes both (<see cref="Save"/>, <see cref="SaveAePt"/>).
/// </summary>
public static class CrossCoderFormat
{
    /// <summary>The weights file of <c>save_pretrained</c>.</summary>
    public const string WeightsFile = "model.safetensors";
    /// <summary>The config file of <c>save_pretrained</c> (and of the fork's trainer, beside <c>ae.pt</c>).</summary>
    public const string ConfigFile = "config.json";
    private const string HooksMetadata = "saesharp.hook_names";
    private const string ModelsMetadata = "saesharp.model_names";
    private const string RevisionsMetadata = "saesharp.model_revisions";

    private static readonly HashSet<string> KnownKeys =
    [
        "encoder.weight", "encoder.bias", "decoder.weight", "decoder.bias", "code_normalization_id", "k", "threshold",
        "target_rms", "activation_mean", "activation_std", "activation_global_scale",
    ];

    private static readonly string[] AePtOrder =
    [
        "target_rms", "activation_mean", "activation_std", "activation_global_scale", "code_normalization_id", "k", "threshold",
        "encoder.weight", "encoder.bias", "decoder.weight", "decoder.bias",
    ];

    private static string? WeightsPath(string path)
    {
        if (File.Exists(path)) return path;
        if (!Directory.Exists(path)) return null;
        foreach (var name in new[] { WeightsFile, DictionaryLearning.WeightsFile })
            if (File.Exists(Path.Combine(path, name))) return Path.Combine(path, name);
        return null;
    }

    /// <summary>True when <paramref name="path"/> (folder, <c>.safetensors</c> or <c>ae.pt</c>) holds a crosscoder: an
    /// <c>encoder.weight</c> of three dimensions.</summary>
    public static bool IsCrossCoderPath(string path)
    {
        var w = WeightsPath(path);
        if (w is null) return false;
        try
        {
            if (w.EndsWith(".safetensors", StringComparison.OrdinalIgnoreCase))
            {
                using var st = SafeTensorsFile.Open(w);
                return st.Tensors.Values.Any(t => StripCompiled(t.Name) == "encoder.weight" && t.Shape.Length == 3);
            }
            if (!Path.GetFileName(w).Equals(DictionaryLearning.WeightsFile, StringComparison.Ordinal) && !w.EndsWith(".pt", StringComparison.Ordinal)) return false;
            using var scope = NewDisposeScope();
            using var ckpt = TorchPickle.Load(w);
            return ckpt.Tensors.Any(kv => StripCompiled(kv.Key) == "encoder.weight" && kv.Value.Dimensions == 3);
        }
        catch (SaeSharpException)
        {
            return false;
        }
    }

    private static string StripCompiled(string key) => key.StartsWith("_orig_mod.", StringComparison.Ordinal) ? key["_orig_mod.".Length..] : key;

    /// <summary>Loads the crosscoder at <paramref name="path"/> (a folder with <c>model.safetensors</c> or <c>ae.pt</c>, or
    /// either file), in float32 on the CPU. Every shape is checked against <c>encoder.weight</c> and config.json.</summary>
    public static CrossCoder Load(string path) => Load(path, out _);

    /// <summary><see cref="Load(string)"/>, also returning the sources SaeSharp recorded when it saved the file.</summary>
    public static CrossCoder Load(string path, out CrossCoderSources sources)
    {
        ArgumentNullException.ThrowIfNull(path);
        var weightsPath = WeightsPath(path) ?? throw new SaeSharpException($"{path}: no {WeightsFile} or {DictionaryLearning.WeightsFile} crosscoder checkpoint found");
        var configPath = Path.Combine(Path.GetDirectoryName(Path.GetFullPath(weightsPath))!, ConfigFile);
        JsonObject? config = File.Exists(configPath) ? ReadConfig(configPath) : null;

        // The state dict is owned here (disposed at the end), not by a dispose scope: the module built from it must outlive this call.
        var sd = new Dictionary<string, Tensor>(StringComparer.Ordinal);
        try
        {
            return Build(weightsPath, configPath, config, sd, out sources);
        }
        finally
        {
            foreach (var t in sd.Values) t.Dispose();
        }
    }

    private static CrossCoder Build(string weightsPath, string configPath, JsonObject? config, Dictionary<string, Tensor> sd, out CrossCoderSources sources)
    {
        IReadOnlyDictionary<string, string> metadata = new Dictionary<string, string>();
        if (weightsPath.EndsWith(".safetensors", StringComparison.OrdinalIgnoreCase))
        {
            using (var st = SafeTensorsFile.Open(weightsPath)) metadata = st.Metadata;
            foreach (var (key, t) in SafeTensors.Load(weightsPath)) sd[StripCompiled(key)] = t.DetachFromDisposeScope();
        }
        else
        {
            using var ckpt = TorchPickle.Load(weightsPath);
            foreach (var (key, t) in ckpt.Tensors) sd[StripCompiled(key)] = t.alias().DetachFromDisposeScope();
        }
        foreach (var key in sd.Keys)
            if (!KnownKeys.Contains(key))
                throw new SaeSharpException($"{weightsPath}: '{key}' is not a crosscoder key (expected {string.Join(", ", KnownKeys)})");
        Tensor Get(string key) => sd.TryGetValue(key, out var t) ? t
            : throw new SaeSharpException($"{weightsPath}: crosscoder checkpoint has no '{key}' (keys: {string.Join(", ", sd.Keys)})");
        var enc = Get("encoder.weight");
        if (enc.Dimensions != 3)
            throw new SaeSharpException($"{weightsPath}: 'encoder.weight' has shape [{string.Join(", ", enc.shape)}], expected [num_layers, activation_dim, dict_size]");
        int encLayers = checked((int)enc.shape[0]), d = checked((int)enc.shape[1]), n = checked((int)enc.shape[2]);
        var decWeight = Get("decoder.weight");
        if (decWeight.Dimensions != 3)
            throw new SaeSharpException($"{weightsPath}: 'decoder.weight' has shape [{string.Join(", ", decWeight.shape)}], expected [num_decoder_layers, dict_size, activation_dim]");
        int decLayers = checked((int)decWeight.shape[0]);

        // The input's slot count: config.json's num_layers, else the normaliser buffers' (num_layers, d), else encoder.weight's.
        int? layersFromConfig = null;
        List<int>? encoderLayers = null;
        int? configDecoderLayers = null;
        if (config is not null)
        {
            layersFromConfig = JsonFields.Int(config, "num_layers", configPath);
            var kwargs = config["dict_class_kwargs"] as JsonObject;
            encoderLayers = IntList(config["encoder_layers"] ?? kwargs?["encoder_layers"], "encoder_layers", configPath);
            configDecoderLayers = IntOrString(config["num_decoder_layers"] ?? kwargs?["num_decoder_layers"], "num_decoder_layers", configPath);
            if ((config["latent_processor"] ?? kwargs?["latent_processor"]) is { } lp && !(lp is JsonValue lv && lv.TryGetValue<string>(out var ls) && ls == "None"))
                throw new SaeSharpException($"{configPath}: latent_processor {lp.ToJsonString()} is a Python function applied between encode and decode; it is not in the checkpoint, so SaeSharp cannot apply it (load the crosscoder without it, or apply it yourself between Encode and Decode)");
        }
        int layers = layersFromConfig
            ?? (sd.TryGetValue("activation_mean", out var am) && am.Dimensions == 2 ? checked((int)am.shape[0]) : (int?)null)
            ?? (encoderLayers is null ? encLayers
                : throw new SaeSharpException($"{weightsPath}: encoder_layers [{string.Join(", ", encoderLayers)}] without num_layers: the input's slot count is unknown (give num_layers in {configPath})"));
        if (encoderLayers is not null && encoderLayers.SequenceEqual(Enumerable.Range(0, layers))) encoderLayers = null;
        if (encoderLayers is null && layersFromConfig is { } lc && lc != encLayers)
            throw new SaeSharpException($"{configPath}: num_layers = {lc}, but the weights have num_layers = {encLayers} (and no encoder_layers are given)");
        if ((encoderLayers?.Count ?? layers) != encLayers)
            throw new SaeSharpException($"{weightsPath}: 'encoder.weight' reads {encLayers} slots, but " +
                (encoderLayers is null ? $"num_layers is {layers} and no encoder_layers are given" : $"encoder_layers [{string.Join(", ", encoderLayers)}] has {encoderLayers.Count}"));
        if (configDecoderLayers is { } cdl && cdl != decLayers)
            throw new SaeSharpException($"{weightsPath}: 'decoder.weight' writes {decLayers} slots, but {configPath}'s num_decoder_layers is {cdl}");

        CodeNormalization? fromConfig = null;
        double alphaSae = 1.0, alphaCc = 0.1, targetRms = 1.0;
        int? configK = null;
        if (config is not null)
        {
            CheckConfigInt(config, "activation_dim", d, configPath);
            CheckConfigInt(config, "dict_size", n, configPath);
            if (JsonFields.Str(config, "code_normalization", configPath) is { } cn) fromConfig = CrossCoder.ParseCodeNormalization(cn, configPath);
            alphaSae = Double(config, "code_normalization_alpha_sae", configPath) ?? alphaSae;
            alphaCc = Double(config, "code_normalization_alpha_cc", configPath) ?? alphaCc;
            targetRms = Double(config, "target_rms", configPath) ?? targetRms;
            configK = JsonFields.Int(config, "k", configPath);
        }

        CodeNormalization norm;
        if (sd.TryGetValue("code_normalization_id", out var idTensor))
        {
            if (idTensor.numel() != 1) throw new SaeSharpException($"{weightsPath}: 'code_normalization_id' must be a scalar");
            long id = ScalarOf(idTensor);
            if (!Enum.IsDefined(typeof(CodeNormalization), (int)id))
                throw new SaeSharpException($"{weightsPath}: unknown code_normalization_id {id} (known: 1..5 = {CrossCoder.KnownNormalizations})");
            norm = (CodeNormalization)id;
            if (fromConfig is { } c && c != norm)
                throw new SaeSharpException($"{weightsPath}: code_normalization_id {id} ({norm.ToString().ToUpperInvariant()}) differs from {configPath}'s code_normalization {c.ToString().ToUpperInvariant()}");
        }
        else
        {
            norm = fromConfig ?? CodeNormalization.Crosscoder; // the fork's from_pretrained assumes CROSSCODER for older files
        }

        int? k = null;
        if (sd.TryGetValue("k", out var kTensor))
        {
            if (kTensor.numel() != 1) throw new SaeSharpException($"{weightsPath}: 'k' must be a scalar");
            k = checked((int)ScalarOf(kTensor));
            if (configK is { } ck && ck != k)
                throw new SaeSharpException($"{weightsPath}: k = {k} differs from {configPath}'s k = {ck}");
            if (!sd.ContainsKey("threshold")) throw new SaeSharpException($"{weightsPath}: BatchTopK crosscoder checkpoint has 'k' but no 'threshold'");
        }
        else if (sd.ContainsKey("threshold"))
        {
            throw new SaeSharpException($"{weightsPath}: 'threshold' without 'k' (a BatchTopKCrossCoder has both)");
        }

        bool normalizer = sd.ContainsKey("activation_mean") || sd.ContainsKey("activation_std");
        var cfg = new CrossCoderConfig
        {
            ActivationDim = d, DictSize = n, NumLayers = layers, CodeNormalization = norm, CodeNormalizationAlphaSae = alphaSae,
            CodeNormalizationAlphaCc = alphaCc, K = k, NormalizerBuffers = normalizer, TargetRms = targetRms,
            EncoderLayers = encoderLayers, NumDecoderLayers = decLayers == layers ? null : decLayers,
        };
        var cc = new CrossCoder(cfg);
        try
        {
            using var _ = no_grad();
            var own = cc.state_dict();
            foreach (var (key, target) in own)
            {
                var source = Get(key);
                bool scalarLike = target.Dimensions == 0 && source.numel() == 1;
                if (!scalarLike && !source.shape.SequenceEqual(target.shape))
                    throw new SaeSharpException($"{weightsPath}: '{key}' has shape [{string.Join(", ", source.shape)}], expected [{string.Join(", ", target.shape)}] for num_layers={layers}, activation_dim={d}, dict_size={n}");
                using var inner = NewDisposeScope();
                target.copy_(scalarLike ? source.reshape([]).to(target.dtype) : source.to(target.dtype));
            }
            foreach (var key in sd.Keys)
                if (!own.ContainsKey(key))
                    throw new SaeSharpException($"{weightsPath}: '{key}' does not belong to a {cfg.DictClass} with these buffers");
            cc.CheckNormalizerFitsDecoder();
            cc.CheckNoDecoupledNormalizer();
        }
        catch
        {
            cc.Dispose();
            throw;
        }
        sources = new CrossCoderSources
        {
            HookNames = metadata.TryGetValue(HooksMetadata, out var h) ? JsonSerializer.Deserialize<string[]>(h) : null,
            ModelNames = metadata.TryGetValue(ModelsMetadata, out var m) ? JsonSerializer.Deserialize<string[]>(m) : null,
            ModelRevisions = metadata.TryGetValue(RevisionsMetadata, out var rv) ? JsonSerializer.Deserialize<string?[]>(rv) : null,
        };
        return cc;
    }

    /// <summary>A list of ints: a JSON array, or the string the fork's trainer config writes for dict_class_kwargs (<c>str(v)</c>: "[0, 2]", "None").</summary>
    private static List<int>? IntList(JsonNode? node, string key, string source)
    {
        if (node is JsonValue v && v.TryGetValue<string>(out var str))
        {
            if (str == "None") return null;
            try { node = StrictJson.Parse(str); }
            catch (JsonException) { throw new SaeSharpException($"{source}: '{key}' must be a list of ints, got \"{str}\""); }
        }
        return node switch
        {
            null => null,
            JsonArray a => a.Select(e => e is JsonValue ev && ev.TryGetValue<int>(out var i) ? i
                : throw new SaeSharpException($"{source}: '{key}' must be a list of ints, got {a.ToJsonString()}")).ToList(),
            _ => throw new SaeSharpException($"{source}: '{key}' must be a list of ints, got {node.ToJsonString()}"),
        };
    }

    /// <summary>An int, or the string of one (dict_class_kwargs' <c>str(v)</c>); "None" and null are null.</summary>
    private static int? IntOrString(JsonNode? node, string key, string source) => node switch
    {
        null => null,
        JsonValue v when v.TryGetValue<int>(out var i) => i,
        JsonValue v when v.TryGetValue<string>(out var str) && (str == "None" || int.TryParse(str, System.Globalization.CultureInfo.InvariantCulture, out _)) =>
            str == "None" ? null : int.Parse(str, System.Globalization.CultureInfo.InvariantCulture),
        _ => throw new SaeSharpException($"{source}: '{key}' must be an int, got {node.ToJsonString()}"),
    };

    private static long ScalarOf(Tensor t)
    {
        using var scope = NewDisposeScope();
        return t.to(ScalarType.Int64).item<long>();
    }

    private static JsonObject ReadConfig(string configPath)
    {
        JsonNode? node;
        try
        {
            node = StrictJson.Parse(File.ReadAllText(configPath));
        }
        catch (JsonException e)
        {
            throw new SaeSharpException($"{configPath}: not valid JSON ({e.Message})");
        }
        if (node is not JsonObject o) throw new SaeSharpException($"{configPath}: expected a JSON object");
        // The fork's trainer writes {"trainer": {...}, "buffer": {...}} beside ae.pt; save_pretrained writes the init arguments.
        return o["trainer"] as JsonObject ?? o;
    }

    private static void CheckConfigInt(JsonObject config, string key, int actual, string source)
    {
        if (JsonFields.Int(config, key, source) is { } v && v != actual)
            throw new SaeSharpException($"{source}: {key} = {v}, but the weights have {key} = {actual}");
    }

    private static double? Double(JsonObject o, string key, string source) => o[key] switch
    {
        null => null,
        JsonValue v when v.TryGetValue<double>(out var x) => x,
        var other => throw new SaeSharpException($"{source}: '{key}' must be a number, got {other.ToJsonString()}"),
    };

    /// <summary>The k buffer's value (the k in effect: k annealing changes it from the crosscoder's configured k).</summary>
    private static int? CurrentK(CrossCoder cc) => cc.KBuffer is { } kb ? checked((int)ScalarOf(kb)) : null;

    /// <summary>
    /// Writes <paramref name="cc"/> into the folder <paramref name="dir"/> as the fork's trainers leave it: <c>ae.pt</c>
    /// (<c>torch.save(ae.state_dict())</c> by <see cref="TorchSave"/>: the fork's keys and dtypes, float32 weights, the
    /// root module's buffers first as <c>state_dict()</c> orders them, <c>_metadata</c> for the root, <c>encoder</c> and
    /// <c>decoder</c>) and <c>config.json</c> (<c>{"trainer": {...}}</c> with the fields of the fork's
    /// <c>CrossCoderTrainer.config</c> or <c>BatchTopKCrossCoderTrainer.config</c>; the training hyperparameters, which
    /// a crosscoder does not carry, are null). The hooks and models of <paramref name="sources"/> have no place in this
    /// form: <c>layer</c>, <c>lm_name</c> and <c>submodule_name</c> are filled from them when every slot reads one model.
    /// </summary>
    public static void SaveAePt(CrossCoder cc, string dir, CrossCoderSources? sources = null)
    {
        ArgumentNullException.ThrowIfNull(cc);
        ArgumentNullException.ThrowIfNull(dir);
        if (File.Exists(dir)) throw new SaeSharpException($"{dir}: is a file; a folder is expected (ae.pt and config.json in a folder).");
        Directory.CreateDirectory(dir);
        var cfg = cc.Cfg;
        var trainer = new JsonObject();
        if (cfg.K is null)
        {
            trainer["dict_class"] = cfg.DictClass;
            trainer["trainer_class"] = "CrossCoderTrainer";
            trainer["activation_dim"] = cfg.ActivationDim;
            trainer["dict_size"] = cfg.DictSize;
            foreach (var key in new[] { "lr", "l1_penalty", "warmup_steps", "resample_steps" }) trainer[key] = null;
            trainer["device"] = "cpu";
        }
        else
        {
            trainer["trainer_class"] = "BatchTopKCrossCoderTrainer";
            trainer["dict_class"] = cfg.DictClass;
            foreach (var key in new[] { "lr", "steps", "auxk_alpha", "warmup_steps", "decay_start", "threshold_beta", "threshold_start_step", "top_k_aux", "seed" })
                trainer[key] = null;
            trainer["activation_dim"] = cfg.ActivationDim;
            trainer["dict_size"] = cfg.DictSize;
            trainer["k"] = CurrentK(cc);
            trainer["k_target"] = cfg.K;
            trainer["k_initial"] = cfg.K;
            trainer["k_annealing_steps"] = null;
        }
        string normalization = "CodeNormalization." + cfg.CodeNormalization.ToString().ToUpperInvariant();
        if (cfg.K is not null)
        {
            trainer["code_normalization"] = normalization;
            trainer["code_normalization_alpha_sae"] = cfg.CodeNormalizationAlphaSae;
            trainer["code_normalization_alpha_cc"] = cfg.CodeNormalizationAlphaCc;
            trainer["device"] = "cpu";
        }
        var hooks = sources?.HookNames;
        var layers = hooks?.Select(h => DictionaryLearning.SubmoduleOf(h).Layer).ToList();
        // One layer for all slots (the fork's usual base-versus-chat crosscoder) as an int, several as a list.
        trainer["layer"] = layers is not { Count: > 0 } || layers.Any(l => l is null) ? null
            : layers.Distinct().Count() == 1 ? layers[0]
            : new JsonArray(layers.Select(l => (JsonNode?)l).ToArray());
        trainer["lm_name"] = sources?.ModelNames is { Count: 1 } models ? models[0] : null;
        trainer["wandb_name"] = cfg.DictClass;
        trainer["submodule_name"] = null;
        if (cfg.K is null)
        {
            trainer["use_mse_loss"] = null;
            trainer["code_normalization"] = normalization;
            trainer["code_normalization_alpha_sae"] = cfg.CodeNormalizationAlphaSae;
            trainer["code_normalization_alpha_cc"] = cfg.CodeNormalizationAlphaCc;
        }
        else
        {
            // The fork's BatchTopK trainer writes str(v) of each dict_class_kwargs value.
            var kwargs = new JsonObject();
            if (cfg.EncoderLayers is { } el) kwargs["encoder_layers"] = "[" + string.Join(", ", el) + "]";
            if (cfg.NumDecoderLayers is { } ndl) kwargs["num_decoder_layers"] = ndl.ToString(System.Globalization.CultureInfo.InvariantCulture);
            trainer["dict_class_kwargs"] = kwargs;
        }
        trainer["target_rms"] = cfg.TargetRms;
        trainer["num_layers"] = cfg.NumLayers;
        if (cfg.K is null && cfg.EncoderLayers is { } encl) trainer["encoder_layers"] = new JsonArray(encl.Select(i => (JsonNode?)i).ToArray());
        if (cfg.K is null && cfg.NumDecoderLayers is { } decl) trainer["num_decoder_layers"] = decl;

        using var group = new AtomicFileGroup();
        using (NewDisposeScope())
        {
            // The fork's state_dict() order: the root module's buffers as registered (NormalizableMixin's, then
            // code_normalization_id, then BatchTopK's k and threshold), then encoder.*, decoder.*.
            var sd = cc.state_dict().OrderBy(kv => Array.IndexOf(AePtOrder, kv.Key) is var i and >= 0 ? i : AePtOrder.Length).ToList();
            TorchSave.SaveStateDict(Path.Combine(dir, DictionaryLearning.WeightsFile), sd, ["", "encoder", "decoder"], group);
        }
        group.WriteAllText(Path.Combine(dir, ConfigFile), new JsonObject { ["trainer"] = trainer }.ToJsonString(new JsonSerializerOptions { WriteIndented = true }));
        group.Commit();
    }

    /// <summary>
    /// Writes <paramref name="cc"/> into the folder <paramref name="dir"/> as <c>save_pretrained</c> does: <c>model.safetensors</c>
    /// (the state dict, float32, the fork's keys) and <c>config.json</c> (the constructor arguments and <c>dict_class</c>).
    /// <paramref name="normInitScale"/> is recorded as config.json's <c>norm_init_scale</c>.
    /// </summary>
    public static void Save(CrossCoder cc, string dir, CrossCoderSources? sources = null, double? normInitScale = null)
    {
        ArgumentNullException.ThrowIfNull(cc);
        ArgumentNullException.ThrowIfNull(dir);
        Directory.CreateDirectory(dir);
        var cfg = cc.Cfg;
        var config = new JsonObject
        {
            ["activation_dim"] = cfg.ActivationDim,
            ["dict_size"] = cfg.DictSize,
            ["num_layers"] = cfg.NumLayers,
        };
        if (CurrentK(cc) is { } k) config["k"] = k;
        config["same_init_for_all_layers"] = false;
        config["norm_init_scale"] = normInitScale;
        config["init_with_transpose"] = cfg.EncoderLayerCount == cfg.DecoderLayerCount;
        config["encoder_layers"] = cfg.EncoderLayers is { } el ? new JsonArray(el.Select(i => (JsonNode?)i).ToArray()) : null;
        config["num_decoder_layers"] = cfg.NumDecoderLayers;
        config["code_normalization"] = cfg.CodeNormalization.ToString().ToUpperInvariant();
        config["code_normalization_alpha_sae"] = cfg.CodeNormalizationAlphaSae;
        config["code_normalization_alpha_cc"] = cfg.CodeNormalizationAlphaCc;
        config["target_rms"] = cfg.TargetRms;
        config["dict_class"] = cfg.DictClass;
        var metadata = new Dictionary<string, string> { ["format"] = "pt" };
        if (sources?.HookNames is { } hooks) metadata[HooksMetadata] = JsonSerializer.Serialize(hooks);
        if (sources?.ModelNames is { } models) metadata[ModelsMetadata] = JsonSerializer.Serialize(models);
        if (sources?.ModelRevisions is { } revisions) metadata[RevisionsMetadata] = JsonSerializer.Serialize(revisions);
        using var group = new AtomicFileGroup();
        SafeTensors.Save(Path.Combine(dir, WeightsFile), cc.state_dict(), metadata, group);
        group.WriteAllText(Path.Combine(dir, ConfigFile), config.ToJsonString(new JsonSerializerOptions { WriteIndented = true }));
        group.Commit();
    }
}
