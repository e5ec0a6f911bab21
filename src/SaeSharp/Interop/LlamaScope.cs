using System.Text.Json;
using System.Text.Json.Nodes;
using TorchSharp;
using SaeSharp.IO;
using SaeSharp.Saes;
using static TorchSharp.torch;

namespace SaeSharp.Interop;

/// <summary>
/// Reads Llama Scope SAEs (OpenMOSS, <c>fnlp/Llama3_1-8B-Base-LX{R,A,M}-{8,32}x</c>): a folder holding
/// <c>hyperparams.json</c> and <c>checkpoints/final.safetensors</c> with <c>encoder.weight</c> [d_sae, d_in],
/// <c>encoder.bias</c> [d_sae], <c>decoder.weight</c> [d_in, d_sae], <c>decoder.bias</c> [d_in] (PyTorch Linear layout,
/// transposed to W_enc [d_in, d_sae] and W_dec [d_sae, d_in]). As SAELens's <c>llama_scope_sae_huggingface_loader</c>:
/// a JumpReLU SAE without b_dec subtraction whose per-latent threshold is the scalar <c>jump_relu_threshold</c> times
/// √d_model / <c>dataset_average_activation_norm.in</c>; hook <c>hook_point_in</c>, model meta-llama/Llama-3.1-8B,
/// dataset cerebras/SlimPajama-627B, context 1024. SAELens marks them "expected_average_only_in" and
/// <c>SAE.from_pretrained</c> folds the release table's <c>norm_scaling_factor</c> (the same s = √d_model /
/// <c>dataset_average_activation_norm.in</c>) into the weights: W_enc·s, W_dec/s, b_dec/s, so that the SAE takes raw
/// activations. That fold is made here too, with s from hyperparams.json; the dataset norms are kept in the metadata as
/// <c>dataset_average_activation_norm</c>.
/// </summary>
public static class LlamaScope
{
    /// <summary>The hyperparameters file in the SAE's folder.</summary>
    public const string HyperparamsFile = "hyperparams.json";

    /// <summary>The weights file, relative to the SAE's folder.</summary>
    public const string WeightsFile = "checkpoints/final.safetensors";

    /// <summary>True for a folder holding <c>hyperparams.json</c> and <c>checkpoints/final.safetensors</c>, or for that
    /// weights file itself.</summary>
    public static bool IsLlamaScopeFolder(string dir)
    {
        dir = FolderOf(dir);
        return Directory.Exists(dir) && File.Exists(Path.Combine(dir, HyperparamsFile)) && File.Exists(Path.Combine(dir, WeightsFile));
    }

    /// <summary>The SAE folder of a path naming its <c>checkpoints/final.safetensors</c>, else the path itself.</summary>
    private static string FolderOf(string path)
    {
        if (!File.Exists(path)) return path;
        string full = Path.GetFullPath(path);
        string suffix = Path.DirectorySeparatorChar + WeightsFile.Replace('/', Path.DirectorySeparatorChar);
        return full.EndsWith(suffix, StringComparison.Ordinal) ? full[..^suffix.Length] : path;
    }

    /// <summary>Loads the Llama Scope SAE in folder <paramref name="dir"/> (or named by its weights file).</summary>
    public static Sae Load(string dir)
    {
        dir = FolderOf(dir);
        string hpPath = Path.Combine(dir, HyperparamsFile), wPath = Path.Combine(dir, WeightsFile);
        if (!File.Exists(hpPath)) throw new SaeSharpException($"{hpPath}: Llama Scope hyperparams.json not found.");
        if (!File.Exists(wPath)) throw new SaeSharpException($"{wPath}: Llama Scope weights file not found.");
        JsonObject hp;
        try
        {
            hp = IO.StrictJson.Parse(File.ReadAllText(hpPath)) as JsonObject ?? throw new SaeSharpException($"{hpPath}: expected a JSON object.");
        }
        catch (JsonException e)
        {
            throw new SaeSharpException($"{hpPath}: invalid JSON ({e.Message}).");
        }
        int dIn = JsonFields.Int(hp, "d_model", hpPath) ?? throw Missing(hpPath, "d_model");
        int dSae = JsonFields.Int(hp, "d_sae", hpPath) ?? throw Missing(hpPath, "d_sae");
        string hook = JsonFields.Str(hp, "hook_point_in", hpPath) ?? throw Missing(hpPath, "hook_point_in");
        string act = JsonFields.Str(hp, "act_fn", hpPath) ?? "jumprelu";
        if (act != "jumprelu")
            throw new SaeSharpException($"{hpPath}: act_fn '{act}' is not supported (Llama Scope SAEs load as JumpReLU, as in SAELens).");
        double threshold = Number(hp, "jump_relu_threshold", hpPath);
        var norms = hp["dataset_average_activation_norm"] as JsonObject ?? throw Missing(hpPath, "dataset_average_activation_norm");
        double normIn = Number(norms, "in", hpPath + " dataset_average_activation_norm");
        if (!(normIn > 0)) throw new SaeSharpException($"{hpPath}: dataset_average_activation_norm.in is {normIn}, expected a positive number.");
        // SAELens: threshold · s with s = √d_in / dataset_average_activation_norm["in"], the norm_scaling_factor folded below.
        double normScalingFactor = Math.Sqrt(dIn) / normIn;
        double scaledThreshold = threshold * normScalingFactor;

        var raw = SafeTensors.Load(wPath);
        try
        {
            Tensor Get(string key, params long[] shape)
            {
                if (!raw.TryGetValue(key, out var t))
                    throw new SaeSharpException($"{wPath}: missing tensor '{key}' (keys: {string.Join(", ", raw.Keys)}).");
                if (!t.shape.SequenceEqual(shape))
                    throw new SaeSharpException($"{wPath}: '{key}' has shape [{string.Join(", ", t.shape)}], expected [{string.Join(", ", shape)}] for d_model={dIn}, d_sae={dSae}.");
                return t;
            }
            var encW = Get("encoder.weight", dSae, dIn);
            var cfg = new SaeConfig
            {
                Architecture = SaeArchitectures.JumpReLU,
                DIn = dIn,
                DSae = dSae,
                Dtype = SaeConfig.DtypeName(encW.dtype),
                ApplyBDecToInput = false,
                NormalizeActivations = "none",
                Metadata = new SaeMetadata
                {
                    ModelName = "meta-llama/Llama-3.1-8B",
                    HookName = hook,
                    ContextSize = 1024,
                    DatasetPath = "cerebras/SlimPajama-627B",
                    PrependBos = true,
                    Extra = new() { ["dataset_average_activation_norm"] = JsonSerializer.SerializeToElement(norms) },
                },
            };
            cfg.Validate(hpPath);
            var bEnc = Get("encoder.bias", dSae);
            var decW = Get("decoder.weight", dIn, dSae);
            var bDec = Get("decoder.bias", dIn);
            var sae = SaeFactory.Create(cfg);
            try
            {
                using var scope = NewDisposeScope();
                using var thresholdValue = scaledThreshold.ToScalar();
                var weights = new Dictionary<string, Tensor>(StringComparer.Ordinal)
                {
                    ["W_enc"] = encW.t(),
                    ["b_enc"] = bEnc,
                    ["W_dec"] = decW.t(),
                    ["b_dec"] = bDec,
                    ["threshold"] = full(dSae, thresholdValue, ScalarType.Float64),
                };
                SaeWeights.Load(sae, weights, wPath);
                sae.FoldActivationScale(normScalingFactor, normScalingFactor);
            }
            catch
            {
                sae.Dispose();
                throw;
            }
            return sae;
        }
        finally
        {
            foreach (var t in raw.Values) t.Dispose();
        }
    }

    private static SaeSharpException Missing(string source, string key) => new($"{source}: missing key '{key}'.");

    private static double Number(JsonObject o, string key, string source) => o[key] switch
    {
        null => throw Missing(source, key),
        JsonValue v when v.TryGetValue(out double d) => d,
        _ => throw new SaeSharpException($"{source}: '{key}' should be a number."),
    };
}
