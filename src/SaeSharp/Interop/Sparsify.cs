using System.Text.Json;
using System.Text.Json.Nodes;
using System.Text.RegularExpressions;
using SaeSharp.IO;
using SaeSharp.Saes;
using static TorchSharp.torch;

using static SaeSharp.Interop.JsonFields;

namespace SaeSharp.Interop;

/// <summary>
/// Reads SAEs and transcoders saved by EleutherAI's <c>sparsify</c> (<c>SparseCoder.save_to_disk</c>): a folder with
/// <c>cfg.json</c> (the <c>SparseCoderConfig</c> fields plus <c>d_in</c>) and <c>sae.safetensors</c> holding
/// <c>encoder.weight</c> [d_sae, d_in], <c>encoder.bias</c> [d_sae], <c>W_dec</c> [d_sae, d_in] and <c>b_dec</c> [d_in],
/// with d_sae = <c>num_latents</c> or <c>expansion_factor</c>·d_in.
/// <para>sparsify encodes with top-k of ReLU(F.linear(x − b_dec, encoder.weight, encoder.bias)) — no b_dec subtraction
/// when <c>transcode</c> — and decodes Σ acts·W_dec[idx] + b_dec. That is SAELens's "topk" SAE (ReLU after top-k gives
/// the same activations) with W_enc = encoder.weightᵀ, b_enc = encoder.bias, W_dec and b_dec as stored and
/// apply_b_dec_to_input = !transcode. <c>multi_topk</c> and <c>normalize_decoder</c> only affect training.
/// A skip connection (<c>skip_connection</c>, <c>W_skip</c>), <c>embed_skip</c>, <c>gram_lookup</c> or the
/// <c>groupmax</c> activation change the function and are refused.</para>
/// <para>A training run saves one such folder per hookpoint (<c>layers.6</c>, <c>layers.6.mlp</c>); the run folder
/// itself is refused with the list of them. The hookpoint name gives the hook: <c>layers.N</c> (or <c>h.N</c>, with any
/// <c>gpt_neox.</c>/<c>transformer.</c>/<c>model.</c> prefix) → <c>blocks.N.hook_resid_post</c>, <c>.mlp</c> →
/// <c>hook_mlp_out</c>, <c>.attn</c>/<c>.attention</c>/<c>.self_attn</c> → <c>hook_attn_out</c>; for transcoders
/// the module's input (<c>hook_resid_pre</c>, <c>ln2.hook_normalized</c>, <c>ln1.hook_normalized</c>). Other names
/// are kept as they are (a Hugging Face module path, which SaeSharp's hooks accept as an alias).
/// The run's <c>config.json</c> beside the hookpoint folders gives the model name when it has a <c>model</c> string.</para>
/// </summary>
public static class Sparsify
{
    /// <summary>File name of a hookpoint's configuration (<c>cfg.json</c>: d_in, num_latents, k, ...).</summary>
    public const string ConfigFile = "cfg.json";
    /// <summary>File name of a hookpoint's weights (<c>sae.safetensors</c>: encoder.weight, encoder.bias, W_dec, b_dec).</summary>
    public const string WeightsFile = "sae.safetensors";
    /// <summary>File name of the trainer's config beside a run's hookpoint folders (its <c>model</c>).</summary>
    public const string RunConfigFile = "config.json";

    /// <summary>Options whose true value changes the SAE's function and cannot be represented.</summary>
    static readonly string[] Refused = ["skip_connection", "embed_skip", "gram_lookup", "signed"];

    /// <summary>True for a sparsify hookpoint folder (or its <c>sae.safetensors</c>), or a run folder whose
    /// subfolders are hookpoint folders.</summary>
    public static bool IsSparsifyPath(string path)
    {
        if (File.Exists(path)) return SaeCompanion.HasRequired(CompanionsOf(Path.GetFullPath(path)));
        if (!Directory.Exists(path)) return false;
        return IsHookpointFolder(path) || HookpointFolders(path).Count > 0;
    }

    /// <summary>What the loader reads beside <c>sae.safetensors</c>: its cfg.json, and the run's config.json one folder
    /// up (the model) when there; null for a file of another name.</summary>
    internal static IReadOnlyList<SaeCompanion>? CompanionsOf(string file) =>
        SaeCompanion.NameOf(file) != WeightsFile ? null
        : SaeCompanion.Above(file, RunConfigFile) is { } run
            ? [SaeCompanion.Needs(SaeCompanion.Beside(file, ConfigFile)), SaeCompanion.May(run)]
            : [SaeCompanion.Needs(SaeCompanion.Beside(file, ConfigFile))];

    static bool IsHookpointFolder(string dir) =>
        File.Exists(Path.Combine(dir, WeightsFile)) && SaeCompanion.HasRequired(CompanionsOf(Path.Combine(dir, WeightsFile)));

    /// <summary>The names of the subfolders of a run folder that hold a sparsify SAE, sorted.</summary>
    public static List<string> HookpointFolders(string dir)
    {
        try
        {
            return Directory.EnumerateDirectories(dir).Where(IsHookpointFolder).Select(d => Path.GetFileName(d)!)
                .OrderBy(n => n, StringComparer.Ordinal).ToList();
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            return [];
        }
    }

    /// <summary>Loads the sparsify SAE at <paramref name="path"/> (a hookpoint folder or its <c>sae.safetensors</c>).</summary>
    public static Sae Load(string path)
    {
        string dir = File.Exists(path) ? Path.GetDirectoryName(Path.GetFullPath(path))! : path;
        if (!IsHookpointFolder(dir))
        {
            var subs = HookpointFolders(dir);
            if (subs.Count > 0)
                throw new SaeSharpException($"{dir}: a sparsify run with one SAE per hookpoint; load one of its subfolders: {string.Join(", ", subs)} (e.g. {Path.Combine(dir, subs[0])}).");
            throw new SaeSharpException($"{dir}: not a sparsify SAE folder (expected {ConfigFile} and {WeightsFile}).");
        }
        string cfgPath = Path.Combine(dir, ConfigFile), weightsPath = Path.Combine(dir, WeightsFile);
        var json = ReadJson(cfgPath);

        foreach (var key in Refused)
            if (json[key] is JsonValue v && v.TryGetValue(out bool on) && on)
                throw new SaeSharpException($"{cfgPath}: '{key}' is true; sparsify SAEs with {key.Replace('_', ' ')} are not supported.");
        string activation = Str(json, "activation", cfgPath) ?? "topk";
        if (activation != "topk")
            throw new SaeSharpException($"{cfgPath}: activation '{activation}' is not supported (only 'topk').");
        bool transcode = Bool(json, "transcode", cfgPath) ?? false;
        int dIn = Int(json, "d_in", cfgPath) ?? throw new SaeSharpException($"{cfgPath}: 'd_in' is missing.");
        int numLatents = Int(json, "num_latents", cfgPath) ?? 0;
        int expansion = Int(json, "expansion_factor", cfgPath) ?? 32;
        if (dIn <= 0 || expansion <= 0 || numLatents < 0 || (numLatents == 0 && (long)dIn * expansion > int.MaxValue))
            throw new SaeSharpException($"{cfgPath}: d_in={dIn}, num_latents={numLatents}, expansion_factor={expansion} give no usable latent count.");
        int dSae = numLatents > 0 ? numLatents : dIn * expansion;
        int k = Int(json, "k", cfgPath) ?? 32;

        var weights = SafeTensors.Load(weightsPath);
        Tensor? wEnc = null;
        try
        {
            if (weights.ContainsKey("W_skip"))
                throw new SaeSharpException($"{weightsPath}: holds 'W_skip' (a skip connection), which is not supported.");
            Tensor Get(string key, params long[] shape)
            {
                if (!weights.TryGetValue(key, out var t))
                    throw new SaeSharpException($"{weightsPath}: missing tensor '{key}' (keys: {string.Join(", ", weights.Keys)}).");
                if (!t.shape.SequenceEqual(shape))
                    throw new SaeSharpException($"{weightsPath}: '{key}' has shape [{string.Join(", ", t.shape)}], expected [{string.Join(", ", shape)}] for d_in={dIn}, d_sae={dSae} in {cfgPath}.");
                return t;
            }
            var encoderWeight = Get("encoder.weight", dSae, dIn);
            var w = new Dictionary<string, Tensor>(StringComparer.Ordinal)
            {
                ["W_enc"] = wEnc = encoderWeight.t(),
                ["b_enc"] = Get("encoder.bias", dSae),
                ["W_dec"] = Get("W_dec", dSae, dIn),
                ["b_dec"] = Get("b_dec", dIn),
            };
            var unexpected = weights.Keys.Except(["encoder.weight", "encoder.bias", "W_dec", "b_dec"]).ToList();
            if (unexpected.Count > 0)
                throw new SaeSharpException($"{weightsPath}: unexpected tensors {string.Join(", ", unexpected)} (expected encoder.weight, encoder.bias, W_dec, b_dec).");

            var cfg = new SaeConfig
            {
                Architecture = SaeArchitectures.TopK,
                DIn = dIn,
                DSae = dSae,
                K = k,
                Dtype = SaeConfig.DtypeName(encoderWeight.dtype),
                ApplyBDecToInput = !transcode,
                Metadata = new SaeMetadata
                {
                    HookName = HookName(Path.GetFileName(Path.GetFullPath(dir).TrimEnd(Path.DirectorySeparatorChar)), transcode),
                    ModelName = RunModelName(dir),
                    ModelClassName = "HookedTransformer",
                },
            };
            return SaeWeights.Create(cfg, w, cfgPath, weightsPath);
        }
        finally
        {
            wEnc?.Dispose();
            foreach (var t in weights.Values) t.Dispose();
        }
    }

    /// <summary>The TransformerLens hook of a sparsify hookpoint (see the class comment); the name itself when it is not
    /// recognised (null for a transcoder, whose input side cannot be told from the name).</summary>
    internal static string? HookName(string hookpoint, bool transcode)
    {
        var m = Regex.Match(hookpoint, @"^(?:(?:transformer|gpt_neox|model)\.)?(?:h|layers)\.(\d+)(?:\.(mlp|attn|attention|self_attn))?$");
        if (!m.Success) return transcode ? null : hookpoint;
        string n = m.Groups[1].Value;
        return (m.Groups[2].Value, transcode) switch
        {
            ("", false) => $"blocks.{n}.hook_resid_post",
            ("", true) => $"blocks.{n}.hook_resid_pre",
            ("mlp", false) => $"blocks.{n}.hook_mlp_out",
            ("mlp", true) => $"blocks.{n}.ln2.hook_normalized",
            (_, false) => $"blocks.{n}.hook_attn_out",
            (_, true) => $"blocks.{n}.ln1.hook_normalized",
        };
    }

    /// <summary>The <c>model</c> string of the run's <c>config.json</c> beside the hookpoint folder, if any.</summary>
    static string? RunModelName(string dir)
    {
        var parent = Path.GetDirectoryName(Path.GetFullPath(dir).TrimEnd(Path.DirectorySeparatorChar));
        if (parent is null) return null;
        var path = Path.Combine(parent, RunConfigFile);
        if (!File.Exists(path)) return null;
        try
        {
            return IO.StrictJson.Parse(File.ReadAllText(path)) is JsonObject o && o["model"] is JsonValue v && v.TryGetValue(out string? s) ? s : null;
        }
        catch (JsonException)
        {
            return null;
        }
    }

    static JsonObject ReadJson(string path)
    {
        try
        {
            return IO.StrictJson.Parse(File.ReadAllText(path)) as JsonObject
                ?? throw new SaeSharpException($"{path}: expected a JSON object (sparsify's cfg.json).");
        }
        catch (JsonException e)
        {
            throw new SaeSharpException($"{path}: invalid JSON ({e.Message}).", e);
        }
    }


    static bool? Bool(JsonObject o, string key, string source) => o[key] switch
    {
        null => null,
        JsonValue v when v.TryGetValue(out bool b) => b,
        _ => throw new SaeSharpException($"{source}: '{key}' should be true or false."),
    };
}
