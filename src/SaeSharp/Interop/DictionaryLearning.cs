using System.Text.Json;
using System.Text.Json.Nodes;
using System.Text.RegularExpressions;
using SaeSharp.IO;
using SaeSharp.Saes;
using TorchSharp;
using static TorchSharp.torch;

using static SaeSharp.Interop.JsonFields;

namespace SaeSharp.Interop;

/// <summary>A dictionary_learning checkpoint converted to SaeSharp's layout: a SAELens config and the weights
/// under SAELens names. Disposing it disposes the weights.</summary>
public sealed class DictionaryLearningCheckpoint(string dictClass, SaeConfig cfg, IReadOnlyDictionary<string, Tensor> weights) : IDisposable
{
    /// <summary>The dictionary_learning class the checkpoint was saved from (e.g. <c>AutoEncoderTopK</c>).</summary>
    public string DictClass { get; } = dictClass;

    /// <summary>The equivalent SAELens configuration.</summary>
    public SaeConfig Cfg { get; } = cfg;

    /// <summary>Weights under SAELens names (<c>W_enc</c> [d_in, d_sae], <c>W_dec</c> [d_sae, d_in], ...).</summary>
    public IReadOnlyDictionary<string, Tensor> Weights { get; } = weights;

    /// <summary>Disposes the weight tensors.</summary>
    public void Dispose()
    {
        foreach (var w in Weights.Values) w.Dispose();
    }
}

/// <summary>
/// Reads SAEs saved by Sam Marks' <c>dictionary_learning</c> library: <c>ae.pt</c> (a <c>torch.save</c>d state_dict,
/// read without executing anything by <see cref="TorchPickle"/>) and, when present, <c>config.json</c> beside it
/// (<c>trainer.dict_class</c>, <c>activation_dim</c>, <c>dict_size</c>, <c>k</c>, <c>lm_name</c>, <c>submodule_name</c>).
/// The published zips (folders such as <c>10_32768/</c>) often hold a bare <c>ae.pt</c>: then the sizes come from the
/// tensors and the class from the state_dict's keys (<see cref="InferClass"/>), or from an architecture the caller
/// names. Classes and their SAELens equivalents:
/// <list type="bullet">
/// <item><c>AutoEncoder</c> → standard: W_enc = encoder.weightᵀ, b_enc = encoder.bias, W_dec = decoder.weightᵀ, b_dec = bias.</item>
/// <item><c>AutoEncoderNew</c> → standard with apply_b_dec_to_input false: b_dec = decoder.bias.</item>
/// <item><c>GatedAutoEncoder</c> → gated: W_enc = encoder.weightᵀ, b_gate = gate_bias, r_mag, b_mag = mag_bias,
/// W_dec = decoder.weightᵀ, b_dec = decoder_bias.</item>
/// <item><c>JumpReluAutoEncoder</c> → jumprelu with the same names, apply_b_dec_to_input false.</item>
/// <item><c>AutoEncoderTopK</c> → topk with k from the <c>k</c> buffer (its inference-unused <c>threshold</c> is dropped).</item>
/// <item><c>BatchTopKSAE</c> → batchtopk with k, and the stored scalar <c>threshold</c> broadcast to the per-latent
/// <c>threshold</c> buffer: inference keeps ReLU(pre) where pre exceeds it, as dictionary_learning does.</item>
/// <item><c>MatryoshkaBatchTopKSAE</c> → matryoshka_batchtopk: W_enc, b_enc, W_dec, b_dec as stored, k, the scalar
/// threshold broadcast, <c>matryoshka_widths</c> = cumulative sums of the <c>group_sizes</c> buffer.</item>
/// </list>
/// </summary>
public static partial class DictionaryLearning
{
    /// <summary>File name of the pickled state_dict (<c>ae.pt</c>).</summary>
    public const string WeightsFile = "ae.pt";
    /// <summary>File name of the training config beside it (<c>config.json</c>), optional.</summary>
    public const string ConfigFile = "config.json";

    /// <summary>The dictionary_learning class for each SAELens architecture name accepted as an override.</summary>
    private static readonly Dictionary<string, string> ClassOfArchitecture = new(StringComparer.OrdinalIgnoreCase)
    {
        [SaeArchitectures.Standard] = "AutoEncoder",
        [SaeArchitectures.Gated] = "GatedAutoEncoder",
        [SaeArchitectures.JumpReLU] = "JumpReluAutoEncoder",
        [SaeArchitectures.TopK] = "AutoEncoderTopK",
        [SaeArchitectures.BatchTopK] = "BatchTopKSAE",
        [SaeArchitectures.MatryoshkaBatchTopK] = "MatryoshkaBatchTopKSAE",
    };

    private static readonly string[] Classes =
        ["AutoEncoder", "AutoEncoderNew", "GatedAutoEncoder", "JumpReluAutoEncoder", "AutoEncoderTopK", "BatchTopKSAE", "MatryoshkaBatchTopKSAE"];

    /// <summary>The folder <c>trainSAE(save_steps=...)</c> writes a run's intermediate checkpoints to, beside its
    /// <c>config.json</c>: <c>checkpoints/ae_{step}.pt</c>.</summary>
    public const string CheckpointsFolder = "checkpoints";

    /// <summary>True for a folder holding <c>ae.pt</c>, a file named <c>ae.pt</c> (a <c>config.json</c> beside it is
    /// read when present), or a step checkpoint <c>checkpoints/ae_{step}.pt</c> (the run's <c>config.json</c> one folder
    /// up is read).</summary>
    public static bool IsDictionaryLearningPath(string path)
    {
        if (!Directory.Exists(path) && !string.Equals(Path.GetFileName(path), WeightsFile, StringComparison.Ordinal) && !IsStepCheckpoint(path)) return false;
        var (weights, config) = Files(path);
        // OpenAI's sparse_autoencoder checkpoints are also saved as ae.pt, without a config.json.
        return File.Exists(weights) && (File.Exists(config) || !OpenAiSae.IsOpenAiCheckpoint(weights));
    }

    /// <summary>Loads the checkpoint at <paramref name="path"/> (folder or <c>ae.pt</c>) into the matching SaeSharp SAE.
    /// <paramref name="architecture"/> (a SAELens architecture name or a dictionary_learning class name) overrides the
    /// class named by config.json or inferred from the keys.</summary>
    public static Sae Load(string path, string? architecture)
    {
        using var checkpoint = ReadCheckpoint(path, architecture);
        var files = Files(path);
        return SaeWeights.Create(checkpoint.Cfg, checkpoint.Weights, File.Exists(files.Config) ? files.Config : files.Weights, files.Weights);
    }

    /// <inheritdoc cref="Load(string, string?)"/>
    public static Sae Load(string path) => Load(path, null);

    /// <summary>
    /// The dictionary_learning class a bare state_dict was saved from, read off its keys: <c>group_sizes</c> →
    /// MatryoshkaBatchTopKSAE; <c>gate_bias</c>/<c>r_mag</c>/<c>mag_bias</c> → GatedAutoEncoder; a <c>k</c> buffer →
    /// AutoEncoderTopK (BatchTopKSAE has the same keys: name it with the architecture override); <c>threshold</c> with
    /// <c>W_enc</c> → JumpReluAutoEncoder; <c>encoder.*</c> with <c>bias</c> → AutoEncoder, with <c>decoder.bias</c> →
    /// AutoEncoderNew. Null when none fits.
    /// </summary>
    public static string? InferClass(IReadOnlyCollection<string> keys)
    {
        bool Has(string k) => keys.Contains(k);
        if (Has("group_sizes")) return "MatryoshkaBatchTopKSAE";
        if (Has("gate_bias") || Has("r_mag") || Has("mag_bias")) return "GatedAutoEncoder";
        if (Has("k")) return "AutoEncoderTopK";
        if (Has("threshold") && Has("W_enc")) return "JumpReluAutoEncoder";
        if (Has("encoder.weight") && Has("bias")) return "AutoEncoder";
        if (Has("encoder.weight") && Has("decoder.bias")) return "AutoEncoderNew";
        return null;
    }

    /// <summary>Reads and converts the checkpoint without building a module.</summary>
    public static DictionaryLearningCheckpoint ReadCheckpoint(string path) => ReadCheckpoint(path, null);

    /// <summary>Reads and converts the checkpoint without building a module; <paramref name="architecture"/> as in
    /// <see cref="Load(string, string?)"/>.</summary>
    public static DictionaryLearningCheckpoint ReadCheckpoint(string path, string? architecture)
    {
        var (weightsPath, configPath) = Files(path);
        if (!File.Exists(weightsPath)) throw new SaeSharpException($"{weightsPath}: dictionary_learning weights file not found.");
        JsonObject? trainer = null, buffer = null;
        if (File.Exists(configPath)) trainer = ReadTrainerConfig(configPath, out buffer);

        using var scope = torch.NewDisposeScope();
        using var ckpt = TorchPickle.Load(weightsPath);
        var sd = ckpt.Entries;
        string source = trainer is null ? weightsPath : configPath;
        string dictClass;
        if (architecture is not null)
        {
            dictClass = ClassOfArchitecture.TryGetValue(architecture, out var c) ? c
                : Classes.FirstOrDefault(k => k.Equals(architecture, StringComparison.OrdinalIgnoreCase))
                  ?? throw new SaeSharpException($"--arch {architecture}: not a dictionary_learning architecture (expected one of {string.Join(", ", ClassOfArchitecture.Keys)} or a class name: {string.Join(", ", Classes)})");
            if (dictClass == "AutoEncoder" && !sd.ContainsKey("bias") && sd.ContainsKey("decoder.bias")) dictClass = "AutoEncoderNew";
            if (trainer is not null && Str(trainer, "dict_class", configPath) is { } named && named != dictClass
                && !(named == "AutoEncoder" && dictClass == "AutoEncoderNew"))
                throw new SaeSharpException(
                    $"--arch {architecture} names {dictClass}, but {configPath} says trainer.dict_class is {named}; leave out --arch (it is for an ae.pt without config.json)");
        }
        else if (trainer is not null)
        {
            dictClass = Str(trainer, "dict_class", configPath) ?? throw new SaeSharpException($"{configPath}: trainer.dict_class is missing.");
        }
        else
        {
            dictClass = InferClass(sd.Keys.ToList()) ?? throw new SaeSharpException(
                $"{weightsPath}: no config.json beside it and its keys ({string.Join(", ", sd.Keys)}) match no dictionary_learning class; name the architecture (--arch)");
        }

        // Sizes: from config.json when present, else from the encoder weight (nn.Linear [dict_size, activation_dim] or W_enc [activation_dim, dict_size]).
        int dIn, dSae;
        if (trainer is not null)
        {
            dIn = Int(trainer, "activation_dim", configPath) ?? throw new SaeSharpException($"{configPath}: trainer.activation_dim is missing.");
            dSae = Int(trainer, "dict_size", configPath) ?? throw new SaeSharpException($"{configPath}: trainer.dict_size is missing.");
        }
        else if (sd.GetValueOrDefault("encoder.weight") is Tensor { Dimensions: 2 } enc)
        {
            (dSae, dIn) = (checked((int)enc.shape[0]), checked((int)enc.shape[1]));
        }
        else if (sd.GetValueOrDefault("W_enc") is Tensor { Dimensions: 2 } wEnc)
        {
            (dIn, dSae) = (checked((int)wEnc.shape[0]), checked((int)wEnc.shape[1]));
        }
        else
        {
            throw new SaeSharpException($"{weightsPath}: no 2-D 'encoder.weight' or 'W_enc' to take the sizes from (keys: {string.Join(", ", sd.Keys)}).");
        }

        var cfg = new SaeConfig
        {
            DIn = dIn,
            DSae = dSae,
            Dtype = "float32",
            Metadata = new SaeMetadata
            {
                ModelName = trainer is null ? null : Str(trainer, "lm_name", configPath),
                HookName = trainer is null ? null : HookName(Str(trainer, "submodule_name", configPath), buffer is null ? null : Str(buffer, "io", configPath)),
                ContextSize = buffer is null ? null : Int(buffer, "ctx_len", configPath),
                ModelClassName = null,
            },
        };
        var w = new Dictionary<string, Tensor>(StringComparer.Ordinal);
        string sizes = trainer is null ? $"the sizes of {(sd.ContainsKey("W_enc") ? "W_enc" : "encoder.weight")}" : configPath;

        Tensor Get(string key, params long[] shape)
        {
            if (!sd.TryGetValue(key, out var v))
                throw new SaeSharpException($"{weightsPath}: {dictClass} checkpoint has no '{key}' (keys: {string.Join(", ", sd.Keys)}).");
            if (v is not Tensor t)
                throw new SaeSharpException($"{weightsPath}: '{key}' is not a tensor.");
            if (!t.shape.SequenceEqual(shape))
                throw new SaeSharpException($"{weightsPath}: '{key}' has shape [{string.Join(", ", t.shape)}], expected [{string.Join(", ", shape)}] for activation_dim={dIn}, dict_size={dSae} in {sizes}.");
            return t;
        }

        string[] known;
        switch (dictClass)
        {
            case "AutoEncoder":
                known = ["bias", "encoder.weight", "encoder.bias", "decoder.weight"];
                cfg.Architecture = SaeArchitectures.Standard;
                w["W_enc"] = Get("encoder.weight", dSae, dIn).t().contiguous();
                w["b_enc"] = Get("encoder.bias", dSae).clone();
                w["W_dec"] = Get("decoder.weight", dIn, dSae).t().contiguous();
                w["b_dec"] = Get("bias", dIn).clone();
                break;
            case "AutoEncoderNew":
                known = ["encoder.weight", "encoder.bias", "decoder.weight", "decoder.bias"];
                cfg.Architecture = SaeArchitectures.Standard;
                cfg.ApplyBDecToInput = false;
                w["W_enc"] = Get("encoder.weight", dSae, dIn).t().contiguous();
                w["b_enc"] = Get("encoder.bias", dSae).clone();
                w["W_dec"] = Get("decoder.weight", dIn, dSae).t().contiguous();
                w["b_dec"] = Get("decoder.bias", dIn).clone();
                break;
            case "GatedAutoEncoder":
                known = ["decoder_bias", "r_mag", "gate_bias", "mag_bias", "encoder.weight", "decoder.weight"];
                cfg.Architecture = SaeArchitectures.Gated;
                w["W_enc"] = Get("encoder.weight", dSae, dIn).t().contiguous();
                w["b_gate"] = Get("gate_bias", dSae).clone();
                w["r_mag"] = Get("r_mag", dSae).clone();
                w["b_mag"] = Get("mag_bias", dSae).clone();
                w["W_dec"] = Get("decoder.weight", dIn, dSae).t().contiguous();
                w["b_dec"] = Get("decoder_bias", dIn).clone();
                break;
            case "JumpReluAutoEncoder":
                known = ["W_enc", "b_enc", "W_dec", "b_dec", "threshold"];
                cfg.Architecture = SaeArchitectures.JumpReLU;
                cfg.ApplyBDecToInput = false;
                w["W_enc"] = Get("W_enc", dIn, dSae).clone();
                w["b_enc"] = Get("b_enc", dSae).clone();
                w["W_dec"] = Get("W_dec", dSae, dIn).clone();
                w["b_dec"] = Get("b_dec", dIn).clone();
                w["threshold"] = Get("threshold", dSae).clone();
                break;
            case "AutoEncoderTopK":
            case "BatchTopKSAE":
            {
                known = ["b_dec", "k", "threshold", "encoder.weight", "encoder.bias", "decoder.weight"];
                int k = IntScalar(Get("k"));
                int? configK = trainer is null ? null : Int(trainer, "k", configPath);
                if (configK is not null && configK != k)
                    throw new SaeSharpException($"{weightsPath}: buffer k = {k} disagrees with trainer.k = {configK} in {configPath}.");
                w["W_enc"] = Get("encoder.weight", dSae, dIn).t().contiguous();
                w["b_enc"] = Get("encoder.bias", dSae).clone();
                w["W_dec"] = Get("decoder.weight", dIn, dSae).t().contiguous();
                w["b_dec"] = Get("b_dec", dIn).clone();
                cfg.K = k;
                if (dictClass == "AutoEncoderTopK")
                {
                    cfg.Architecture = SaeArchitectures.TopK;
                }
                else
                {
                    cfg.Architecture = SaeArchitectures.BatchTopK;
                    using var threshold = TorchScalars.SingleOf(Get("threshold")).ToScalar();
                    w["threshold"] = torch.full(dSae, threshold, dtype: w["W_enc"].dtype);
                }
                break;
            }
            case "MatryoshkaBatchTopKSAE":
            {
                known = ["W_enc", "b_enc", "W_dec", "b_dec", "k", "threshold", "group_sizes"];
                cfg.Architecture = SaeArchitectures.MatryoshkaBatchTopK;
                cfg.K = IntScalar(Get("k"));
                var groups = sd.GetValueOrDefault("group_sizes") as Tensor
                    ?? throw new SaeSharpException($"{weightsPath}: MatryoshkaBatchTopKSAE checkpoint has no 'group_sizes' tensor.");
                if (groups.Dimensions != 1)
                    throw new SaeSharpException($"{weightsPath}: 'group_sizes' has shape [{string.Join(", ", groups.shape)}], expected a list of group widths.");
                var widths = new int[groups.shape[0]];
                long sum = 0;
                for (int i = 0; i < widths.Length; i++)
                {
                    long g = groups[i].to_type(ScalarType.Int64).item<long>();
                    if (g <= 0) throw new SaeSharpException($"{weightsPath}: group_sizes[{i}] = {g} is not positive.");
                    sum += g;
                    widths[i] = checked((int)sum);
                }
                if (sum != dSae) throw new SaeSharpException($"{weightsPath}: group_sizes sum to {sum}, but W_enc has dict_size {dSae}.");
                cfg.MatryoshkaWidths = widths;
                w["W_enc"] = Get("W_enc", dIn, dSae).clone();
                w["b_enc"] = Get("b_enc", dSae).clone();
                w["W_dec"] = Get("W_dec", dSae, dIn).clone();
                w["b_dec"] = Get("b_dec", dIn).clone();
                using var threshold = TorchScalars.SingleOf(Get("threshold")).ToScalar();
                w["threshold"] = torch.full(dSae, threshold, dtype: w["W_enc"].dtype);
                break;
            }
            default:
                throw new SaeSharpException($"{source}: dictionary_learning class '{dictClass}' is not supported ({string.Join(", ", Classes)}).");
        }
        var unexpected = sd.Keys.Except(known).ToList();
        if (unexpected.Count > 0)
            throw new SaeSharpException($"{weightsPath}: unexpected entries {string.Join(", ", unexpected)} for {dictClass} (expected: {string.Join(", ", known)}).");
        cfg.Validate(source);
        foreach (var t in w.Values) t.MoveToOuterDisposeScope();
        return new DictionaryLearningCheckpoint(dictClass, cfg, w);
    }

    /// <summary>An integer buffer such as <c>k</c> (saved as int32 or int64) as an int.</summary>
    private static int IntScalar(Tensor t)
    {
        using var l = t.to_type(ScalarType.Int64);
        return checked((int)l.item<long>());
    }

    /// <summary>TransformerLens hook name for dictionary_learning's submodule names such as
    /// <c>resid_post_layer_3</c> or <c>mlp_out_layer3</c> (outputs only), else null.</summary>
    internal static string? HookName(string? submoduleName, string? io)
    {
        if (submoduleName is null || io is not (null or "out")) return null;
        var m = Regex.Match(submoduleName, @"^(resid_post|resid_pre|mlp_out|attn_out)_layer_?(\d+)$");
        return m.Success ? $"blocks.{m.Groups[2].Value}.hook_{m.Groups[1].Value}" : null;
    }

    /// <summary>What the loader reads beside <c>ae.pt</c> or a step checkpoint: the optional config.json
    /// (<see cref="ConfigPathOf"/>); null for another file.</summary>
    internal static IReadOnlyList<SaeCompanion>? CompanionsOf(string file) =>
        SaeCompanion.NameOf(file) == WeightsFile || IsStepCheckpoint(file) ? [SaeCompanion.May(ConfigPathOf(file))] : null;

    static (string Weights, string Config) Files(string path)
    {
        if (Directory.Exists(path)) return (Path.Combine(path, WeightsFile), Path.Combine(path, ConfigFile));
        return (path, ConfigPathOf(Path.GetFullPath(path)));
    }

    /// <summary>True for <c>…/checkpoints/ae_{step}.pt</c> ('/'-separated), a checkpoint <c>trainSAE</c> saves at each of
    /// its <c>save_steps</c> (the state_dict, biases scaled as in ae.pt).</summary>
    internal static bool IsStepCheckpoint(string path)
    {
        var parts = path.Split('/');
        return parts.Length >= 2 && parts[^2] == CheckpointsFolder && StepCheckpointName().IsMatch(parts[^1]);
    }

    /// <summary>The <c>config.json</c> that goes with the weights file at <paramref name="weights"/> ('/'-separated, local
    /// or inside a hub repo): beside it, or for a step checkpoint the run's, one folder up. Relative to the repo root
    /// when <paramref name="weights"/> has no folder.</summary>
    internal static string ConfigPathOf(string weights)
    {
        string folder = weights.Contains('/') ? weights[..weights.LastIndexOf('/')] : "";
        if (IsStepCheckpoint(weights)) folder = folder.Contains('/') ? folder[..folder.LastIndexOf('/')] : "";
        return folder.Length == 0 ? ConfigFile : folder + "/" + ConfigFile;
    }

    [GeneratedRegex(@"^ae_[0-9]+\.pt$")]
    private static partial Regex StepCheckpointName();

    static JsonObject ReadTrainerConfig(string configPath, out JsonObject? buffer)
    {
        JsonObject root;
        try
        {
            root = IO.StrictJson.Parse(File.ReadAllText(configPath)) as JsonObject
                   ?? throw new SaeSharpException($"{configPath}: expected a JSON object (dictionary_learning's config.json).");
        }
        catch (JsonException e)
        {
            throw new SaeSharpException($"{configPath}: invalid JSON ({e.Message}).", e);
        }
        buffer = root["buffer"] as JsonObject;
        return root["trainer"] as JsonObject
            ?? throw new SaeSharpException($"{configPath}: no 'trainer' object (expected dictionary_learning's config.json).");
    }

}
