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

    public void Dispose()
    {
        foreach (var w in Weights.Values) w.Dispose();
    }
}

/// <summary>
/// Reads SAEs saved by Sam Marks' <c>dictionary_learning</c> library: a folder with <c>ae.pt</c> (a
/// <c>torch.save</c>d state_dict, read without executing anything by <see cref="TorchPickle"/>) and
/// <c>config.json</c> (<c>trainer.dict_class</c>, <c>activation_dim</c>, <c>dict_size</c>, <c>k</c>, <c>lm_name</c>,
/// <c>submodule_name</c>). Classes and their SAELens equivalents:
/// <list type="bullet">
/// <item><c>AutoEncoder</c> → standard: W_enc = encoder.weightᵀ, b_enc = encoder.bias, W_dec = decoder.weightᵀ, b_dec = bias.</item>
/// <item><c>GatedAutoEncoder</c> → gated: W_enc = encoder.weightᵀ, b_gate = gate_bias, r_mag, b_mag = mag_bias,
/// W_dec = decoder.weightᵀ, b_dec = decoder_bias.</item>
/// <item><c>JumpReluAutoEncoder</c> → jumprelu with the same names, apply_b_dec_to_input false.</item>
/// <item><c>AutoEncoderTopK</c> → topk with k from the <c>k</c> buffer (its inference-unused <c>threshold</c> is dropped).</item>
/// <item><c>BatchTopKSAE</c> → batchtopk with k, and the stored scalar <c>threshold</c> broadcast to the per-latent
/// <c>threshold</c> buffer: inference keeps ReLU(pre) where pre exceeds it, as dictionary_learning does.</item>
/// </list>
/// </summary>
public static class DictionaryLearning
{
    public const string WeightsFile = "ae.pt";
    public const string ConfigFile = "config.json";

    /// <summary>True for a folder holding <c>ae.pt</c> and <c>config.json</c>, or an <c>ae.pt</c> file with a
    /// <c>config.json</c> beside it.</summary>
    public static bool IsDictionaryLearningPath(string path)
    {
        var (weights, config) = Files(path);
        return File.Exists(weights) && File.Exists(config);
    }

    /// <summary>Loads the checkpoint at <paramref name="path"/> (folder or <c>ae.pt</c>) into the matching SaeSharp SAE.</summary>
    public static Sae Load(string path)
    {
        using var checkpoint = ReadCheckpoint(path);
        var sae = SaeFactory.Create(checkpoint.Cfg);
        try
        {
            SaeWeights.Load(sae, checkpoint.Weights, Files(path).Weights);
        }
        catch
        {
            sae.Dispose();
            throw;
        }
        return sae;
    }

    /// <summary>Reads and converts the checkpoint without building a module.</summary>
    public static DictionaryLearningCheckpoint ReadCheckpoint(string path)
    {
        var (weightsPath, configPath) = Files(path);
        if (!File.Exists(weightsPath)) throw new SaeSharpException($"{weightsPath}: dictionary_learning weights file not found.");
        if (!File.Exists(configPath)) throw new SaeSharpException($"{configPath}: dictionary_learning config not found (it is written beside ae.pt).");
        var trainer = ReadTrainerConfig(configPath, out var buffer);
        string dictClass = Str(trainer, "dict_class", configPath)
            ?? throw new SaeSharpException($"{configPath}: trainer.dict_class is missing.");
        int dIn = Int(trainer, "activation_dim", configPath) ?? throw new SaeSharpException($"{configPath}: trainer.activation_dim is missing.");
        int dSae = Int(trainer, "dict_size", configPath) ?? throw new SaeSharpException($"{configPath}: trainer.dict_size is missing.");

        using var scope = torch.NewDisposeScope();
        using var ckpt = TorchPickle.Load(weightsPath);
        var sd = ckpt.Entries;
        var cfg = new SaeConfig
        {
            DIn = dIn,
            DSae = dSae,
            Dtype = "float32",
            Metadata = new SaeMetadata
            {
                ModelName = Str(trainer, "lm_name", configPath),
                HookName = HookName(Str(trainer, "submodule_name", configPath), buffer is null ? null : Str(buffer, "io", configPath)),
                ContextSize = buffer is null ? null : Int(buffer, "ctx_len", configPath),
                ModelClassName = null,
            },
        };
        var w = new Dictionary<string, Tensor>(StringComparer.Ordinal);

        Tensor Get(string key, params long[] shape)
        {
            if (!sd.TryGetValue(key, out var v))
                throw new SaeSharpException($"{weightsPath}: {dictClass} checkpoint has no '{key}' (keys: {string.Join(", ", sd.Keys)}).");
            if (v is not Tensor t)
                throw new SaeSharpException($"{weightsPath}: '{key}' is not a tensor.");
            if (!t.shape.SequenceEqual(shape))
                throw new SaeSharpException($"{weightsPath}: '{key}' has shape [{string.Join(", ", t.shape)}], expected [{string.Join(", ", shape)}] for activation_dim={dIn}, dict_size={dSae} in {configPath}.");
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
                known = ["b_dec", "k", "threshold", "encoder.weight", "encoder.bias", "decoder.weight"];
                int k = Get("k").ToInt32();
                int? configK = Int(trainer, "k", configPath);
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
                    w["threshold"] = torch.full(dSae, Get("threshold").ToSingle(), dtype: w["W_enc"].dtype);
                }
                break;
            default:
                throw new SaeSharpException($"{configPath}: dictionary_learning class '{dictClass}' is not supported (AutoEncoder, GatedAutoEncoder, JumpReluAutoEncoder, AutoEncoderTopK, BatchTopKSAE).");
        }
        var unexpected = sd.Keys.Except(known).ToList();
        if (unexpected.Count > 0)
            throw new SaeSharpException($"{weightsPath}: unexpected entries {string.Join(", ", unexpected)} for {dictClass} (expected: {string.Join(", ", known)}).");
        cfg.Validate(configPath);
        foreach (var t in w.Values) t.MoveToOuterDisposeScope();
        return new DictionaryLearningCheckpoint(dictClass, cfg, w);
    }

    /// <summary>TransformerLens hook name for dictionary_learning's submodule names such as
    /// <c>resid_post_layer_3</c> or <c>mlp_out_layer3</c> (outputs only), else null.</summary>
    internal static string? HookName(string? submoduleName, string? io)
    {
        if (submoduleName is null || io is not (null or "out")) return null;
        var m = Regex.Match(submoduleName, @"^(resid_post|resid_pre|mlp_out|attn_out)_layer_?(\d+)$");
        return m.Success ? $"blocks.{m.Groups[2].Value}.hook_{m.Groups[1].Value}" : null;
    }

    static (string Weights, string Config) Files(string path)
    {
        string dir = Directory.Exists(path) ? path : Path.GetDirectoryName(Path.GetFullPath(path))!;
        string weights = Directory.Exists(path) ? Path.Combine(path, WeightsFile) : path;
        return (weights, Path.Combine(dir, ConfigFile));
    }

    static JsonObject ReadTrainerConfig(string configPath, out JsonObject? buffer)
    {
        JsonNode? root;
        try
        {
            root = JsonNode.Parse(File.ReadAllText(configPath));
        }
        catch (JsonException e)
        {
            throw new SaeSharpException($"{configPath}: invalid JSON ({e.Message}).", e);
        }
        buffer = root?["buffer"] as JsonObject;
        return root?["trainer"] as JsonObject
            ?? throw new SaeSharpException($"{configPath}: no 'trainer' object (expected dictionary_learning's config.json).");
    }

}
