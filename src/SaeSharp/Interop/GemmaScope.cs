using System.Text.RegularExpressions;
using SaeSharp.IO;
using SaeSharp.Saes;
using TorchSharp;
using static TorchSharp.torch;

namespace SaeSharp.Interop;

/// <summary>
/// Reads Gemma Scope SAEs (Google DeepMind): a <c>params.npz</c> holding <c>W_enc</c> [d_in, d_sae], <c>W_dec</c>
/// [d_sae, d_in], <c>b_enc</c> [d_sae], <c>b_dec</c> [d_in] and <c>threshold</c> [d_sae] (keys spelled <c>w_*</c> are
/// accepted, as SAELens does). The SAE is JumpReLU without b_dec subtraction (apply_b_dec_to_input false):
/// f = ReLU(pre)·[pre &gt; threshold] with pre = x·W_enc + b_enc, x̂ = f·W_dec + b_dec — the Gemma Scope tutorial's
/// <c>JumpReLUSAE</c> and SAELens's <c>gemma_2_sae_huggingface_loader</c>.
/// <para>Metadata is read from the path where recognisable, as SAELens's <c>get_gemma_2_config_from_hf</c> does: a
/// component naming the repository (<c>gemma-scope-2b-pt-res</c>, also inside a Hugging Face cache folder such as
/// <c>models--google--gemma-scope-9b-it-mlp</c>) gives the model (<c>gemma-2-2b</c>, <c>gemma-2-9b-it</c>), and with
/// <c>layer_12</c> the hook: res → <c>blocks.12.hook_resid_post</c>, mlp → <c>blocks.12.hook_mlp_out</c>, att →
/// <c>blocks.12.attn.hook_z</c> (reshape_activations "hook_z"), transcoders (<c>gemma-scope-2b-pt-transcoders</c>, SAELens's
/// <c>gemma_2_transcoder</c>) → a JumpReLU transcoder (d_out = d_in) from <c>blocks.12.ln2.hook_normalized</c> to
/// <c>metadata.hook_name_out</c> <c>blocks.12.hook_mlp_out</c>; context 1024, dataset monology/pile-uncopyrighted.
/// A <c>width_16k</c> component is checked against d_sae. Embedding SAEs (an <c>embedding</c> folder) load with the
/// weights as stored and no hook name: SAELens rescales them for TransformerLens's unscaled <c>hook_embed</c>, which
/// SaeSharp does not replicate.</para>
/// </summary>
public static class GemmaScope
{
    /// <summary>File name of the weights (<c>params.npz</c>: W_enc, b_enc, W_dec, b_dec, threshold).</summary>
    public const string WeightsFile = "params.npz";

    /// <summary>True for an <c>.npz</c> file or a folder containing <c>params.npz</c>.</summary>
    public static bool IsGemmaScopePath(string path) =>
        Directory.Exists(path)
            ? File.Exists(Path.Combine(path, WeightsFile))
            : File.Exists(path) && path.EndsWith(".npz", StringComparison.OrdinalIgnoreCase);

    private static bool AllOnes(Tensor t)
    {
        using var scope = NewDisposeScope();
        return t.eq(TorchScalars.Of(1)).all().item<bool>();
    }

    /// <summary>Loads the SAE at <paramref name="path"/> (a folder holding <c>params.npz</c>, or the file itself);
    /// its metadata is read from <paramref name="metadataPath"/> (a release's <c>REPO_ID/PATH</c>) when given, else from
    /// the file's folders.</summary>
    public static Sae Load(string path, string? metadataPath = null)
    {
        string file = Directory.Exists(path) ? Path.Combine(path, WeightsFile) : path;
        if (!File.Exists(file)) throw new SaeSharpException($"{file}: Gemma Scope weights file not found.");
        var raw = Npy.LoadNpz(file);
        try
        {
            var w = new Dictionary<string, Tensor>(StringComparer.Ordinal);
            foreach (var (key, t) in raw)
            {
                string name = key.StartsWith("w_", StringComparison.Ordinal) ? "W_" + key[2..] : key;
                if (!w.TryAdd(name, t))
                    throw new SaeSharpException($"{file}: holds both '{name}' and its lower-case spelling.");
                if (!torch.is_floating_point(t))
                    throw new SaeSharpException($"{file}: '{key}' has dtype {t.dtype}, expected a floating-point array.");
            }
            if (w.Remove("scaling_factor", out var scaling) && !AllOnes(scaling))
                throw new SaeSharpException($"{file}: 'scaling_factor' is not all ones; a fine-tuning scaling factor is not supported.");

            if (!w.TryGetValue("W_enc", out var wEnc))
                throw new SaeSharpException($"{file}: missing array 'W_enc' (keys: {string.Join(", ", raw.Keys)}).");
            if (wEnc.dim() != 2)
                throw new SaeSharpException($"{file}: 'W_enc' has shape [{string.Join(", ", wEnc.shape)}], expected [d_in, d_sae].");
            int dIn = checked((int)wEnc.shape[0]), dSae = checked((int)wEnc.shape[1]);
            void Check(string key, params long[] shape)
            {
                if (!w.TryGetValue(key, out var t))
                    throw new SaeSharpException($"{file}: missing array '{key}' (expected shape [{string.Join(", ", shape)}]; keys: {string.Join(", ", raw.Keys)}).");
                if (!t.shape.SequenceEqual(shape))
                    throw new SaeSharpException($"{file}: '{key}' has shape [{string.Join(", ", t.shape)}], expected [{string.Join(", ", shape)}] for W_enc [{dIn}, {dSae}].");
            }
            Check("W_dec", dSae, dIn);
            Check("b_enc", dSae);
            Check("b_dec", dIn);
            Check("threshold", dSae);

            var cfg = new SaeConfig
            {
                Architecture = SaeArchitectures.JumpReLU,
                DIn = dIn,
                DSae = dSae,
                Dtype = SaeLensFormat.DtypeName(wEnc.dtype),
                ApplyBDecToInput = false,
                Metadata = new SaeMetadata { ModelClassName = "HookedTransformer" },
            };
            ApplyPathMetadata(metadataPath ?? Path.GetDirectoryName(Path.GetFullPath(file))!, cfg, file);
            cfg.Validate(file);
            var sae = SaeFactory.Create(cfg);
            try
            {
                SaeWeights.Load(sae, w, file);
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

    /// <summary>Fills model, hook and dataset metadata from Gemma Scope folder names, and checks a <c>width_*</c> claim.</summary>
    internal static void ApplyPathMetadata(string dir, SaeConfig cfg, string source)
    {
        var parts = FolderParts(dir);
        int? layer = FolderLayer(parts);
        bool embedding = false;
        Match? repo = null;
        foreach (var part in parts)
        {
            if (part == "embedding") embedding = true;
            var r = Regex.Match(part, @"gemma-scope-(\d+b)-(pt|it)-(res|mlp|att|transcoders)(?![a-z])");
            if (r.Success) repo = r;
            var width = Regex.Match(part, @"^width_(\d+)([km])$");
            if (width.Success)
            {
                // Gemma Scope names powers of two by their leading digits: width_16k = 16384, width_65k = 65536,
                // width_131k = 131072, width_1m = 1048576.
                long claimed = long.Parse(width.Groups[1].Value, System.Globalization.CultureInfo.InvariantCulture);
                long unit = width.Groups[2].Value == "k" ? 1000 : 1_000_000;
                if (cfg.DSae / unit != claimed)
                    throw new SaeSharpException($"{source}: folder '{part}' claims {claimed}{width.Groups[2].Value} latents ({claimed * unit} to {claimed * unit + unit - 1}) but W_enc holds d_sae = {cfg.DSae}.");
            }
        }
        if (repo is null) return;
        string size = repo.Groups[1].Value, kind = repo.Groups[3].Value;
        cfg.Metadata.ModelName = repo.Groups[2].Value == "it" ? $"gemma-2-{size}-it" : $"gemma-2-{size}";
        cfg.Metadata.ContextSize = 1024;
        cfg.Metadata.DatasetPath = "monology/pile-uncopyrighted";
        cfg.Metadata.PrependBos = true;
        if (embedding || layer is null) return;
        switch (kind)
        {
            case "res":
                cfg.Metadata.HookName = $"blocks.{layer}.hook_resid_post";
                break;
            case "mlp":
                cfg.Metadata.HookName = $"blocks.{layer}.hook_mlp_out";
                break;
            case "att":
                cfg.Metadata.HookName = $"blocks.{layer}.attn.hook_z";
                cfg.ReshapeActivations = "hook_z";
                break;
            case "transcoders":
                cfg.DOut = cfg.DIn;
                (cfg.Metadata.HookName, cfg.Metadata.HookNameOut) = TranscoderHooks(layer.Value);
                break;
        }
    }

    /// <summary>SAELens's <c>gemma_2_transcoder</c> hooks for layer N: a jumprelu_transcoder from the MLP's input,
    /// <c>blocks.N.ln2.hook_normalized</c>, to its output, <c>blocks.N.hook_mlp_out</c>.</summary>
    internal static (string In, string Out) TranscoderHooks(int layer) =>
        ($"blocks.{layer}.ln2.hook_normalized", $"blocks.{layer}.hook_mlp_out");

    /// <summary>The folder names of <paramref name="path"/> ('/' or the platform's separator).</summary>
    internal static string[] FolderParts(string path) =>
        path.Split([Path.DirectorySeparatorChar, Path.AltDirectorySeparatorChar], StringSplitOptions.RemoveEmptyEntries);

    /// <summary>N of the last <c>layer_N</c> folder among <paramref name="parts"/>, or null.</summary>
    internal static int? FolderLayer(IEnumerable<string> parts) =>
        parts.Select(p => Regex.Match(p, @"^layer_(\d+)$")).LastOrDefault(m => m.Success) is { } m
            ? int.Parse(m.Groups[1].Value, System.Globalization.CultureInfo.InvariantCulture)
            : null;
}
