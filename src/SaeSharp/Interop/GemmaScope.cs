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
/// A <c>width_16k</c> component is checked against d_sae. Embedding SAEs (an <c>embedding</c> folder) are rescaled as
/// SAELens rescales them (W_enc / √d_in, W_dec · √d_in) to read <c>hook_embed</c> (× √d_model, as in TransformerLens),
/// the hook a res repository's embedding folder gets.</para>
/// <para>Gemma Scope 2 (Gemma 3 models, SAELens 6.37's <c>gemma_3</c>): <c>params.safetensors</c> with the same arrays
/// spelled <c>w_enc</c>/<c>w_dec</c>, an optional <c>config.json</c>, transcoders and affine (skip) transcoders:
/// <see cref="LoadScope2"/>. The key spelling, shape checks and construction are shared with Gemma Scope 1.</para>
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

    /// <summary>What the loader reads beside an <c>.npz</c> file: nothing; null for a file of another kind.</summary>
    internal static IReadOnlyList<SaeCompanion>? CompanionsOf(string file) =>
        file.EndsWith(".npz", StringComparison.OrdinalIgnoreCase) ? [] : null;

    private static bool AllOnes(Tensor t)
    {
        using var scope = NewDisposeScope();
        return t.eq(TorchScalars.Of(1)).all().item<bool>();
    }

    /// <summary>The note (<see cref="SaeLensConversions.NoteKey"/>) on a <c>params.npz</c> whose path names no Gemma Scope
    /// repo: the model, hook and SAE-or-transcoder come from the repo's name, as in SAELens's release table.</summary>
    public const string NoRepoInPathNote =
        "no gemma-scope-SIZE-pt|it-res|mlp|att|transcoders folder in the path, which gives the model and hook (and tells a transcoder " +
        "from an SAE): read as an SAE with no hook. Keep the repo's name in the path (huggingface-cli download google/gemma-scope-2b-pt-res " +
        "--local-dir DL/gemma-scope-2b-pt-res), load it by release id, or name the hook with --hook";

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
            var w = SaeLensNames(raw, file);
            if (w.Remove("scaling_factor", out var scaling) && !AllOnes(scaling))
                throw new SaeSharpException($"{file}: 'scaling_factor' is not all ones; a fine-tuning scaling factor is not supported.");
            var (dIn, dSae, _) = CheckShapes(w, raw.Keys, file, transcoder: false);
            var cfg = new SaeConfig
            {
                Architecture = SaeArchitectures.JumpReLU,
                DIn = dIn,
                DSae = dSae,
                Dtype = SaeConfig.DtypeName(w["W_enc"].dtype),
                ApplyBDecToInput = false,
                Metadata = new SaeMetadata { ModelClassName = "HookedTransformer" },
            };
            string metadataDir = metadataPath ?? Path.GetDirectoryName(Path.GetFullPath(file))!;
            ApplyPathMetadata(metadataDir, cfg, file);
            if (cfg.Metadata.ModelName is null)
                (cfg.Metadata.Extra ??= [])[SaeLensConversions.NoteKey] = System.Text.Json.JsonSerializer.SerializeToElement(NoRepoInPathNote);
            if (FolderParts(metadataDir).Contains("embedding")) ScaleEmbeddingSae(w, dIn);
            return SaeWeights.Create(cfg, w, file, file);
        }
        finally
        {
            foreach (var t in raw.Values) t.Dispose();
        }
    }

    /// <summary>The tensors of a Gemma Scope file under SAELens's names: <c>w_*</c> spelled <c>W_*</c> (as SAELens's
    /// gemma_2 and gemma_3 loaders do); both spellings, or a non-floating array, are an error.</summary>
    private static Dictionary<string, Tensor> SaeLensNames(IReadOnlyDictionary<string, Tensor> raw, string file)
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
        return w;
    }

    /// <summary>Checks a Gemma Scope JumpReLU's arrays, named as SAELens names them: <c>W_enc</c> [d_in, d_sae],
    /// <c>W_dec</c> [d_sae, d_out], <c>b_enc</c> [d_sae], <c>b_dec</c> [d_out], <c>threshold</c> [d_sae], with d_out = d_in
    /// unless <paramref name="transcoder"/> (then read from W_dec). A missing array is named with the file's keys
    /// (<paramref name="keys"/>, as stored).</summary>
    private static (int DIn, int DSae, int DOut) CheckShapes(Dictionary<string, Tensor> w, IEnumerable<string> keys, string file, bool transcoder)
    {
        string stored = string.Join(", ", keys);
        if (!w.TryGetValue("W_enc", out var wEnc))
            throw new SaeSharpException($"{file}: missing array 'W_enc' (keys: {stored}).");
        if (wEnc.dim() != 2)
            throw new SaeSharpException($"{file}: 'W_enc' has shape [{string.Join(", ", wEnc.shape)}], expected [d_in, d_sae].");
        int dIn = checked((int)wEnc.shape[0]), dSae = checked((int)wEnc.shape[1]);
        int dOut = transcoder && w.TryGetValue("W_dec", out var wDec) && wDec.dim() == 2 ? checked((int)wDec.shape[1]) : dIn;
        void Check(string key, params long[] shape)
        {
            if (!w.TryGetValue(key, out var t))
                throw new SaeSharpException($"{file}: missing array '{key}' (expected shape [{string.Join(", ", shape)}]; keys: {stored}).");
            if (!t.shape.SequenceEqual(shape))
                throw new SaeSharpException($"{file}: '{key}' has shape [{string.Join(", ", t.shape)}], expected [{string.Join(", ", shape)}] for W_enc [{dIn}, {dSae}].");
        }
        Check("W_dec", dSae, dOut);
        Check("b_enc", dSae);
        Check("b_dec", dOut);
        Check("threshold", dSae);
        return (dIn, dSae, dOut);
    }

    /// <summary>SAELens's adjustment of an embedding SAE (<c>embedding/...</c>), trained on the unscaled token embeddings:
    /// W_enc / √d_in and W_dec · √d_in (b_enc, threshold and b_dec as stored), so that it reads <c>hook_embed</c>, which
    /// is × √d_model in TransformerLens (its Gemma <c>W_E</c> holds the factor) and in SaeSharp. In place.</summary>
    private static void ScaleEmbeddingSae(Dictionary<string, Tensor> w, int dIn)
    {
        using var root = Math.Sqrt(dIn).ToScalar();
        w["W_enc"].div_(root);
        w["W_dec"].mul_(root);
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
        if (embedding)
        {
            if (kind == "res") cfg.Metadata.HookName = "hook_embed";   // SAELens: "res" in the repo and "embedding" in the folder
            return;
        }
        if (layer is null) return;
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

    // ---- Gemma Scope 2 (SAELens's gemma_3 conversion) ----

    /// <summary>File name of a Gemma Scope 2 SAE's weights (<c>params.safetensors</c>: w_enc, w_dec, b_enc, b_dec,
    /// threshold, and an affine transcoder's affine_skip_connection).</summary>
    public const string Scope2WeightsFile = "params.safetensors";

    /// <summary>File name of a Gemma Scope 2 SAE's optional config (<c>config.json</c>: architecture "jump_relu",
    /// model_name, hf_hook_point_in, hf_hook_point_out, affine_connection).</summary>
    public const string Scope2ConfigFile = "config.json";

    /// <summary>True for a folder holding <c>params.safetensors</c>, that file itself, or a Gemma Scope 2 cross-layer
    /// transcoder file (a <c>.safetensors</c> in a folder named <c>clt</c>).</summary>
    public static bool IsGemmaScope2Path(string path) =>
        Directory.Exists(path)
            ? File.Exists(Path.Combine(path, Scope2WeightsFile))
            : File.Exists(path) && Scope2CompanionsOf(Path.GetFullPath(path)) is not null;

    /// <summary>What the loader reads beside <c>params.safetensors</c> or a CLT's <c>clt/NAME.safetensors</c>: the
    /// optional config.json (<see cref="Scope2ConfigPath"/>); null for another file.</summary>
    internal static IReadOnlyList<SaeCompanion>? Scope2CompanionsOf(string file) =>
        SaeCompanion.NameOf(file) == Scope2WeightsFile ? [SaeCompanion.May(Scope2ConfigPath(file, clt: false))]
        : file.EndsWith(".safetensors", StringComparison.Ordinal) && SaeCompanion.FolderNameOf(file) == CltFolder
            ? [SaeCompanion.May(Scope2ConfigPath(file, clt: true))]
            : null;

    /// <summary>The folder of a Gemma Scope 2 repo that holds its cross-layer transcoders' files.</summary>
    private const string CltFolder = "clt";

    /// <summary>The config.json SAELens reads for the weights <paramref name="file"/> (<c>f"{folder_name}/config.json"</c>):
    /// beside params.safetensors, and for a CLT file in a folder named after it.</summary>
    private static string Scope2ConfigPath(string file, bool clt) =>
        clt ? SaeCompanion.Beside(file, Path.GetFileNameWithoutExtension(SaeCompanion.NameOf(file)) + "/" + Scope2ConfigFile)
            : SaeCompanion.Beside(file, Scope2ConfigFile);

    /// <summary>SAELens's <c>folder_name</c> of a local Gemma Scope 2 SAE, which its rules read: the kind folder and the
    /// SAE's folder (<c>resid_post/layer_12_width_16k_l0_big</c>), or for a CLT file <c>clt/</c> + its name without
    /// <c>.safetensors</c>.</summary>
    internal static string Scope2FolderName(string weightsFile)
    {
        var full = Path.GetFullPath(weightsFile);
        var parts = FolderParts(Path.GetDirectoryName(full)!);
        return Path.GetFileName(full) == Scope2WeightsFile
            ? string.Join('/', parts.TakeLast(2))
            : parts[^1] + "/" + Path.GetFileNameWithoutExtension(full);
    }

    /// <summary>The HF hooks SAELens's <c>_infer_gemma_3_raw_cfg_dict</c> gives a folder without config.json, as a raw
    /// config: architecture "jump_relu", model_name from the repo id (<c>gemma-scope-2</c> → <c>gemma-3</c>; null when
    /// unknown), hf_hook_point_in (and _out), affine_connection for a transcoder ("affine" in the name).</summary>
    internal static System.Text.Json.Nodes.JsonObject InferScope2RawConfig(string? repoId, string folderName)
    {
        var layer = Regex.Match(folderName, @"layer_(\d+)");
        if (!layer.Success) throw new SaeSharpException($"{folderName}: could not extract the layer number (layer_N) from the folder name");
        int l = int.Parse(layer.Groups[1].Value, System.Globalization.CultureInfo.InvariantCulture);
        bool transcoder = folderName.Contains("transcoder", StringComparison.Ordinal) || folderName.Contains("clt", StringComparison.Ordinal);
        (string In, string? Out) hf =
            transcoder ? ((string, string?)) ($"model.layers.{l}.pre_feedforward_layernorm.output", $"model.layers.{l}.post_feedforward_layernorm.output")
            : folderName.Contains("resid_post", StringComparison.Ordinal) ? ($"model.layers.{l}.output", (string?)null)
            : folderName.Contains("attn_out", StringComparison.Ordinal) ? ($"model.layers.{l}.self_attn.o_proj.input", (string?)null)
            : folderName.Contains("mlp_out", StringComparison.Ordinal) ? ($"model.layers.{l}.post_feedforward_layernorm.output", (string?)null)
            : throw new SaeSharpException($"{folderName}: could not infer the hook type from the folder name (resid_post, attn_out, mlp_out, transcoder or clt)");
        var cfg = new System.Text.Json.Nodes.JsonObject
        {
            ["architecture"] = "jump_relu",
            ["model_name"] = repoId?.Replace("gemma-scope-2", "gemma-3", StringComparison.Ordinal),
            ["hf_hook_point_in"] = hf.In,
        };
        if (transcoder) cfg["affine_connection"] = folderName.Contains("affine", StringComparison.Ordinal);
        if (hf.Out is not null) cfg["hf_hook_point_out"] = hf.Out;
        return cfg;
    }

    /// <summary>The input hook (SaeSharp's TransformerLens name) and, for a transcoder, the output hook that SAELens's
    /// <c>get_gemma_3_config_from_hf</c> gives the SAE at <paramref name="folderName"/>: layer N of the first
    /// <c>layer_N</c>, then by the first kind the name contains: resid_post → <c>blocks.N.hook_resid_post</c>, attn_out →
    /// <c>blocks.N.attn.hook_z</c>, mlp_out → <c>blocks.N.hook_mlp_out</c>, transcoder or clt → the MLP's input to its
    /// output (<see cref="TranscoderHooks"/>: <c>blocks.N.ln2.hook_normalized</c>, the pre-feedforward norm's output,
    /// where SAELens writes <c>blocks.N.hook_mlp_in</c>, TransformerLens's name for ln2's input, before the norm). Null when the
    /// name has no layer or no kind.</summary>
    public static (string In, string? Out)? Scope2Hooks(string folderName)
    {
        ArgumentNullException.ThrowIfNull(folderName);
        var layer = Regex.Match(folderName, @"layer_(\d+)");
        if (!layer.Success) return null;
        int l = int.Parse(layer.Groups[1].Value, System.Globalization.CultureInfo.InvariantCulture);
        if (folderName.Contains("resid_post", StringComparison.Ordinal)) return ($"blocks.{l}.hook_resid_post", null);
        if (folderName.Contains("attn_out", StringComparison.Ordinal)) return ($"blocks.{l}.attn.hook_z", null);
        if (folderName.Contains("mlp_out", StringComparison.Ordinal)) return ($"blocks.{l}.hook_mlp_out", null);
        if (IsScope2Transcoder(folderName)) return TranscoderHooks(l);
        return null;
    }

    /// <summary>Whether SAELens's gemma_3 loader reads <paramref name="folderName"/> as a transcoder ("transcoder" or
    /// "clt" in it).</summary>
    public static bool IsScope2Transcoder(string folderName) =>
        folderName.Contains("transcoder", StringComparison.Ordinal) || folderName.Contains("clt", StringComparison.Ordinal);

    /// <summary>
    /// Loads a Gemma Scope 2 SAE (Gemma 3 models) as SAELens 6.37.6's <c>gemma_3_sae_huggingface_loader</c> does.
    /// <paramref name="path"/> is a folder holding <c>params.safetensors</c> (and, in most repos, <c>config.json</c>), that
    /// file, or a cross-layer transcoder's <c>clt/NAME.safetensors</c>. <paramref name="folderName"/> is SAELens's
    /// <c>folder_name</c> (a release's path; for a local path <see cref="Scope2FolderName"/>) and <paramref name="repoId"/>
    /// the repo (for a local path, a <c>gemma-scope-2-…</c> folder of the path, as the Hugging Face cache names it).
    /// <para>config.json (else <see cref="InferScope2RawConfig"/>) must say architecture "jump_relu"; its model_name,
    /// normalised as SAELens does (<c>google/</c> prefixed, <c>-v3</c> → <c>-3</c>, <c>-pt</c> dropped for 270m), its
    /// hf_hook_point_in/_out (kept as metadata <c>hf_hook_name</c>/<c>hf_hook_name_out</c>) and affine_connection. The
    /// SAE: <c>jumprelu</c>, or for a transcoder (<see cref="IsScope2Transcoder"/>) <c>jumprelu_skip_transcoder</c> when
    /// affine_connection, else <c>jumprelu_transcoder</c>, d_out from w_dec; hooks <see cref="Scope2Hooks"/>; float32,
    /// apply_b_dec_to_input false, dataset monology/pile-uncopyrighted, context 1024. Weights: w_enc → W_enc [d_in, d_sae],
    /// w_dec → W_dec (a CLT's [d_sae, layers, d_out] summed over its second dimension, as SAELens does: for features, not
    /// reconstruction), b_enc, b_dec, threshold, affine_skip_connection → W_skip [d_out, d_in]; other tensors are ignored.</para>
    /// </summary>
    public static Sae LoadScope2(string path, string? folderName = null, string? repoId = null)
    {
        string file = Directory.Exists(path) ? Path.Combine(path, Scope2WeightsFile) : path;
        if (!File.Exists(file)) throw new SaeSharpException($"{file}: Gemma Scope 2 weights file not found.");
        folderName ??= Scope2FolderName(file);
        repoId ??= Scope2RepoId(file);
        bool clt = folderName.Contains("clt", StringComparison.Ordinal);
        string cfgPath = Path.GetFullPath(Scope2ConfigPath(Path.GetFullPath(file), clt));
        System.Text.Json.Nodes.JsonObject raw;
        if (File.Exists(cfgPath))
        {
            try
            {
                raw = IO.StrictJson.Parse(File.ReadAllText(cfgPath)) as System.Text.Json.Nodes.JsonObject
                      ?? throw new SaeSharpException($"{cfgPath}: expected a JSON object");
            }
            catch (System.Text.Json.JsonException e)
            {
                throw new SaeSharpException($"{cfgPath}: invalid JSON ({e.Message})", e);
            }
        }
        else
        {
            cfgPath = file;
            raw = InferScope2RawConfig(repoId, folderName);
        }
        string? Str(string key) => JsonFields.Str(raw, key, cfgPath);
        if (Str("architecture") is var arch && arch != "jump_relu")
            throw new SaeSharpException($"{cfgPath}: unexpected architecture {(arch is null ? "(none)" : $"'{arch}'")} in a Gemma Scope 2 config (SAELens's gemma_3 loader reads only 'jump_relu')");
        var hooks = Scope2Hooks(folderName) ?? throw new SaeSharpException(
            $"{folderName}: no layer_N, or no hook kind (resid_post, attn_out, mlp_out, transcoder or clt), in the Gemma Scope 2 folder name");
        bool transcoder = IsScope2Transcoder(folderName);
        bool affine = transcoder && raw["affine_connection"] is System.Text.Json.Nodes.JsonValue a && a.TryGetValue(out bool af) && af;
        string? model = Str("model_name") is { } named ? Scope2ModelName(named) : null;

        var tensors = IO.SafeTensors.Load(file);
        try
        {
            using var scope = NewDisposeScope();
            var w = SaeLensNames(tensors.Where(kv => kv.Key is "w_enc" or "w_dec" or "b_enc" or "b_dec" or "threshold")
                .ToDictionary(kv => kv.Key, kv => kv.Value), file);
            if (clt && w.TryGetValue("W_dec", out var wDec3))
            {
                if (wDec3.dim() != 3)
                    throw new SaeSharpException($"{file}: a cross-layer transcoder's 'w_dec' has shape [{string.Join(", ", wDec3.shape)}], expected [d_sae, layers, d_out].");
                w["W_dec"] = wDec3.sum(1);
            }
            var (dIn, dSae, dOut) = CheckShapes(w, tensors.Keys, file, transcoder);
            if (tensors.TryGetValue("affine_skip_connection", out var skip)) w["W_skip"] = skip;
            else if (affine)
                throw new SaeSharpException($"{file}: missing tensor 'affine_skip_connection' ({(cfgPath == file ? "the folder name" : cfgPath)} says affine_connection, a jumprelu_skip_transcoder; keys: {string.Join(", ", tensors.Keys)})");
            var cfg = new SaeConfig
            {
                Architecture = !transcoder ? SaeArchitectures.JumpReLU : affine ? SaeArchitectures.JumpReluSkipTranscoder : SaeArchitectures.JumpReLU,
                DIn = dIn,
                DSae = dSae,
                DOut = transcoder ? dOut : null,
                Dtype = "float32",
                ApplyBDecToInput = false,
                Metadata = new SaeMetadata
                {
                    ModelName = model,
                    HookName = hooks.In,
                    HookNameOut = hooks.Out,
                    PrependBos = true,
                    DatasetPath = "monology/pile-uncopyrighted",
                    ContextSize = 1024,
                },
            };
            if (Str("hf_hook_point_in") is { } hfIn) (cfg.Metadata.Extra ??= [])["hf_hook_name"] = System.Text.Json.JsonSerializer.SerializeToElement(hfIn);
            if (transcoder && Str("hf_hook_point_out") is { } hfOut) (cfg.Metadata.Extra ??= [])["hf_hook_name_out"] = System.Text.Json.JsonSerializer.SerializeToElement(hfOut);
            if (clt) (cfg.Metadata.Extra ??= [])[SaeLensConversions.NoteKey] = System.Text.Json.JsonSerializer.SerializeToElement(SaeLensConversions.CltLayerNote);
            return SaeWeights.Create(cfg, w, file, file);
        }
        finally
        {
            foreach (var t in tensors.Values) t.Dispose();
        }
    }

    /// <summary>The Gemma Scope 2 repo a local path lies in: its last <c>gemma-scope-2-…-pt</c>/<c>-it</c> folder (or the Hugging
    /// Face cache's <c>models--google--gemma-scope-2-…</c>) as <c>google/gemma-scope-2-…</c>; null when none.</summary>
    internal static string? Scope2RepoId(string path) =>
        FolderParts(Path.GetFullPath(path)).Select(p => Regex.Match(p, @"^(?:models--google--)?(gemma-scope-2-[0-9a-z.]+-(?:pt|it))$"))
            .LastOrDefault(m => m.Success) is { } r ? "google/" + r.Groups[1].Value : null;

    /// <summary>A Gemma Scope 2 config's model_name as SAELens normalises it: <c>google/</c> prefixed when absent, <c>-v3</c> →
    /// <c>-3</c>, <c>-pt</c> dropped for 270m.</summary>
    internal static string Scope2ModelName(string model)
    {
        if (!model.Contains("google", StringComparison.Ordinal)) model = "google/" + model;
        model = model.Replace("-v3", "-3", StringComparison.Ordinal);
        return model.Contains("270m", StringComparison.Ordinal) ? model.Replace("-pt", "", StringComparison.Ordinal) : model;
    }

    /// <summary>The folder names of <paramref name="path"/> ('/' or the platform's separator).</summary>
    internal static string[] FolderParts(string path) =>
        path.Split([Path.DirectorySeparatorChar, Path.AltDirectorySeparatorChar], StringSplitOptions.RemoveEmptyEntries);

    /// <summary>N of the last <c>layer_N</c> folder among <paramref name="parts"/>, or null.</summary>
    internal static int? FolderLayer(IEnumerable<string> parts) =>
        parts.Select(p => Regex.Match(p, @"^layer_(\d+)$")).LastOrDefault(m => m.Success) is { } m
            ? int.Parse(m.Groups[1].Value, System.Globalization.CultureInfo.InvariantCulture)
            : null;
}
