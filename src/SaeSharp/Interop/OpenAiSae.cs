using System.Text.RegularExpressions;
using SaeSharp.IO;
using SaeSharp.Saes;
using static TorchSharp.torch;

namespace SaeSharp.Interop;

/// <summary>
/// Reads SAEs saved by OpenAI's <c>sparse_autoencoder</c> (<c>Autoencoder.state_dict()</c> written with
/// <c>torch.save</c>, e.g. <c>gpt2-small/resid_post_mlp_v5_32k/autoencoders/6.pt</c>), without executing anything
/// (<see cref="TorchPickle"/>). Entries: <c>pre_bias</c> [d], <c>encoder.weight</c> [n, d], <c>latent_bias</c> [n],
/// <c>decoder.weight</c> [d, n], the statistics buffers <c>stats_last_nonzero</c>, <c>latents_activation_frequency</c>,
/// <c>latents_mean_square</c> (dropped), and the plain values <c>activation</c> (class name, "ReLU" when absent) with
/// <c>activation_state_dict</c> (<c>k</c>, <c>postact_fn</c> for TopK).
/// <para>OpenAI's model: x' = LN(x) = (x − μ)/(σ + 1e-5) (σ unbiased) when normalising, latents =
/// act(encoder(x' − pre_bias) + latent_bias) with TopK keeping the k largest and applying ReLU to them, x̂ =
/// (decoder(latents) + pre_bias)·σ + μ. Its <c>from_state_dict</c> normalises exactly when the activation is TopK; a
/// boolean <c>normalize</c> entry, when present, decides instead. Mapping: TopK(ReLU) → "topk" with k, ReLU →
/// "standard"; W_enc = encoder.weightᵀ, b_enc = latent_bias, W_dec = decoder.weightᵀ, b_dec = pre_bias,
/// apply_b_dec_to_input true, normalize_activations "layer_norm" when normalising (see <see cref="Sae.UsesLayerNorm"/>).</para>
/// <para>Metadata from the path where recognisable: a location folder (<c>resid_post_mlp_v5_32k</c>, ...) and a file
/// named by its layer give the hook as in OpenAI's README (mlp_post_act → <c>blocks.L.mlp.hook_post</c>, resid_delta_attn →
/// <c>hook_attn_out</c>, resid_post_attn → <c>hook_resid_mid</c>, resid_delta_mlp → <c>hook_mlp_out</c>, resid_post_mlp →
/// <c>hook_resid_post</c>); a <c>gpt2-small</c> folder gives the model.</para>
/// </summary>
public static class OpenAiSae
{
    static readonly string[] Buffers = ["stats_last_nonzero", "latents_activation_frequency", "latents_mean_square"];
    static readonly string[] PlainValues = ["activation", "activation_state_dict", "normalize"];

    /// <summary>True for a <c>torch.save</c> zip (or a folder's <c>ae.pt</c>) whose pickle mentions both <c>pre_bias</c>
    /// and <c>latent_bias</c> (only the small pickle entry is read).</summary>
    public static bool IsOpenAiCheckpoint(string path) => TorchPickle.Mentions(CheckpointFile(path), "pre_bias", "latent_bias");

    /// <summary>What the loader reads beside a <c>.pt</c> checkpoint: nothing; null for another file.</summary>
    internal static IReadOnlyList<SaeCompanion>? CompanionsOf(string file) => Path.GetExtension(file) == ".pt" ? [] : null;

    /// <summary>The checkpoint a path names: the file itself, or a folder's <c>ae.pt</c> (the name dictionary_learning
    /// also uses; a folder fetched with <c>hf:ORG/REPO/PATH</c> holds it so).</summary>
    private static string CheckpointFile(string path) =>
        Directory.Exists(path) ? Path.Combine(path, DictionaryLearning.WeightsFile) : path;

    /// <summary>Loads the OpenAI checkpoint at <paramref name="path"/> (a file, or a folder holding it as <c>ae.pt</c>)
    /// into a TopK or standard SAE.</summary>
    public static Sae Load(string path)
    {
        path = CheckpointFile(path);
        using var ckpt = TorchPickle.Load(path);
        var entries = ckpt.Entries;
        string activation = entries.TryGetValue("activation", out var a)
            ? a as string ?? throw new SaeSharpException($"{path}: 'activation' should be a class name string, got {a?.GetType().Name ?? "None"}.")
            : "ReLU";
        var actState = entries.TryGetValue("activation_state_dict", out var asd) ? asd as OrderedDictionary<object, object?> : null;
        if (asd is not null && actState is null)
            throw new SaeSharpException($"{path}: 'activation_state_dict' should be a dictionary.");
        bool normalize = entries.TryGetValue("normalize", out var nv)
            ? nv as bool? ?? throw new SaeSharpException($"{path}: 'normalize' should be True or False.")
            : activation == "TopK";

        var encoderWeight = ckpt.GetTensor("encoder.weight");
        if (encoderWeight.dim() != 2)
            throw new SaeSharpException($"{path}: 'encoder.weight' has shape [{string.Join(", ", encoderWeight.shape)}], expected [n_latents, n_inputs].");
        int n = checked((int)encoderWeight.shape[0]), d = checked((int)encoderWeight.shape[1]);
        Tensor Get(string key, params long[] shape)
        {
            var t = ckpt.GetTensor(key);
            if (!t.shape.SequenceEqual(shape))
                throw new SaeSharpException($"{path}: '{key}' has shape [{string.Join(", ", t.shape)}], expected [{string.Join(", ", shape)}] for encoder.weight [{n}, {d}].");
            return t;
        }
        var unexpected = entries.Keys.Except(["pre_bias", "encoder.weight", "latent_bias", "decoder.weight", .. Buffers, .. PlainValues]).ToList();
        if (unexpected.Count > 0)
            throw new SaeSharpException($"{path}: unexpected entries {string.Join(", ", unexpected)} (a tied decoder or another model is not supported).");
        foreach (var key in Buffers)
            if (entries.ContainsKey(key)) Get(key, n);

        var cfg = new SaeConfig
        {
            DIn = d,
            DSae = n,
            Dtype = SaeConfig.DtypeName(encoderWeight.dtype),
            ApplyBDecToInput = true,
            NormalizeActivations = normalize ? "layer_norm" : "none",
            Metadata = new SaeMetadata { ModelClassName = "HookedTransformer" },
        };
        switch (activation)
        {
            case "TopK":
                {
                    object? kValue = null, post = null;
                    if (actState is null || !actState.TryGetValue("k", out kValue) || kValue is not long k)
                        throw new SaeSharpException($"{path}: TopK activation needs an integer 'k' in activation_state_dict, got {kValue ?? "none"}.");
                    if (actState.TryGetValue("postact_fn", out post) && post is not "ReLU")
                        throw new SaeSharpException($"{path}: TopK postact_fn '{post}' is not supported (only ReLU).");
                    if (k <= 0 || k > n)
                        throw new SaeSharpException($"{path}: TopK k = {k} must be between 1 and n_latents = {n}.");
                    cfg.Architecture = SaeArchitectures.TopK;
                    cfg.K = (int)k;
                    break;
                }
            case "ReLU":
                cfg.Architecture = SaeArchitectures.Standard;
                break;
            default:
                throw new SaeSharpException($"{path}: activation '{activation}' is not supported (TopK, ReLU).");
        }
        ApplyPathMetadata(Path.GetFullPath(path), cfg);
        cfg.Validate(path);

        var decoderWeight = Get("decoder.weight", d, n);
        var wEnc = encoderWeight.t();
        var wDec = decoderWeight.t();
        try
        {
            var w = new Dictionary<string, Tensor>(StringComparer.Ordinal)
            {
                ["W_enc"] = wEnc,
                ["b_enc"] = Get("latent_bias", n),
                ["W_dec"] = wDec,
                ["b_dec"] = Get("pre_bias", d),
            };
            return SaeWeights.Create(cfg, w, path, path);
        }
        finally
        {
            wEnc.Dispose();
            wDec.Dispose();
        }
    }

    /// <summary>Hook and model names from OpenAI's path layout (see the class comment).</summary>
    internal static void ApplyPathMetadata(string file, SaeConfig cfg)
    {
        var parts = file.Split([Path.DirectorySeparatorChar, Path.AltDirectorySeparatorChar], StringSplitOptions.RemoveEmptyEntries);
        if (parts.Contains("gpt2-small")) cfg.Metadata.ModelName = "gpt2-small";
        var layer = Regex.Match(Path.GetFileName(file), @"^(\d+)\.pt$");
        if (!layer.Success) return;
        string l = layer.Groups[1].Value;
        foreach (var part in parts.Reverse().Skip(1))
        {
            var m = Regex.Match(part, @"^(mlp_post_act|resid_delta_attn|resid_post_attn|resid_delta_mlp|resid_post_mlp)(?:_v\d+\w*)?$");
            if (!m.Success) continue;
            cfg.Metadata.HookName = m.Groups[1].Value switch
            {
                "mlp_post_act" => $"blocks.{l}.mlp.hook_post",
                "resid_delta_attn" => $"blocks.{l}.hook_attn_out",
                "resid_post_attn" => $"blocks.{l}.hook_resid_mid",
                "resid_delta_mlp" => $"blocks.{l}.hook_mlp_out",
                _ => $"blocks.{l}.hook_resid_post",
            };
            return;
        }
    }
}
