using System.Text.Json.Nodes;
using SaeSharp.IO;
using TorchSharp;
using static TorchSharp.torch;

namespace SaeSharp.Models;

/// <summary>Loads Hugging Face model folders (config.json + model.safetensors or a sharded index) as <see cref="HookedTransformer"/>s.</summary>
public static class ModelLoader
{
    /// <summary>Architectures this loader builds, as config.json <c>model_type</c>.</summary>
    public static IReadOnlyList<string> SupportedModelTypes { get; } = ["gpt2", "gpt_neo", "gpt_neox", "llama", "mistral", "mixtral", "qwen2", "qwen2_moe", "qwen3", "qwen3_moe", "olmo", "olmo2", "olmo3", "olmoe", "gemma", "gemma2", "gemma3_text", "gemma3", "gpt_oss", "deepseek_v2", "deepseek_v3", "phi", "phi3", "gptj", "opt", "bloom"];

    /// <summary>
    /// Builds the model in the Hugging Face folder <paramref name="folder"/> (a local path: the CLI's hub ids and
    /// <c>builtin</c> are <c>HfHub.Resolve(id)</c> and <c>BuiltinModel.Folder</c> here) named by config.json
    /// (<c>model_type</c>, else <c>architectures</c>) and loads its weights (safetensors, single or sharded; else
    /// <c>pytorch_model.bin</c>, single or sharded, via the restricted unpickler), converted to <paramref name="dtype"/>
    /// (f16 / bf16 checkpoints load into float32 by default). The caller owns the model and disposes it; its weights
    /// belong to no dispose scope, so a model loaded inside a <c>torch.NewDisposeScope()</c> outlives it.
    /// </summary>
    public static HookedTransformer FromPretrained(string folder, ScalarType dtype = ScalarType.Float32)
    {
        if (!Directory.Exists(folder))
            throw new SaeSharpException($"{folder}: model folder not found (a Hugging Face model folder is expected: for a hub id " +
                "such as gpt2 pass Hub.HfHub.Resolve(id), which downloads it; for the built-in model, LanguageModels.BuiltinModel.Folder)");
        if (dtype is not (ScalarType.Float32 or ScalarType.Float16 or ScalarType.BFloat16 or ScalarType.Float64))
            throw new SaeSharpException($"model dtype must be float32, float16, bfloat16 or float64, got {dtype}");
        var cfg = JsonConfig.Read(Path.Combine(folder, "config.json"));
        string type = ModelType(cfg);
        string name = NameOf(folder, cfg);
        var generation = GenerationConfig.FromFolder(folder);

        // The weights are opened first (headers only for safetensors) so that every size config.json declares is
        // checked against the tensors actually present before the model is allocated: a config declaring a huge
        // model (vocab_size 10^9, n_layer 10^6) is refused in one line instead of allocating gigabytes.
        var ckpt = Checkpoint.Open(folder);
        HookedTransformer? model = null;
        try
        {
            if (type == "gemma3") ckpt.Rename(Gemma3LanguageModelKey);
            if (type == "gpt_oss") Mxfp4.DequantizeOnRead(ckpt);
            // DeepSeek-V3's multi-token-prediction layers (num_nextn_predict_layers, stored as model.layers.{n..}) are not
            // part of the causal LM: transformers ignores them, and so does this.
            if (type is "deepseek_v3" or "deepseek_v2")
            {
                ckpt.Rename(MtpLayerDropper(cfg.Int("num_hidden_layers", 61)));
                if (DecoderSettings.DeepseekFp8Blocks(cfg) is { } block) Fp8BlockQuant.DequantizeOnRead(ckpt, block.Rows, block.Cols);
            }
            string prefix;
            string[] ignorableSuffixes;
            switch (type)
            {
                case "gpt2":
                    model = new Gpt2Model(Gpt2Settings.From(cfg, ckpt), name, cfg.Path, dtype);
                    prefix = "transformer";
                    ignorableSuffixes = [".attn.bias", ".attn.masked_bias"];
                    break;
                case "llama" or "mistral" or "mixtral" or "qwen2" or "qwen2_moe" or "qwen3" or "qwen3_moe" or "olmo" or "olmo2" or "olmo3" or "olmoe" or "gemma" or "gemma2" or "gemma3_text" or "gemma3" or "gpt_oss" or "deepseek_v2" or "deepseek_v3" or "phi3":
                    {
                        var s = DecoderSettings.From(cfg, type, ckpt);
                        if (type == "phi3") Phi3.SplitFusedOnRead(ckpt, s);
                        model = new LlamaFamilyModel(s, name, cfg.Path, dtype);
                        prefix = "model";
                        // Tied checkpoints may still carry lm_head.weight (a copy of embed_tokens); old Llama files carry inv_freq.
                        ignorableSuffixes = s.TieEmbeddings ? [".rotary_emb.inv_freq", "lm_head.weight"] : [".rotary_emb.inv_freq"];
                        break;
                    }
                case "phi":
                    model = new PhiModel(PhiSettings.From(cfg, ckpt), name, cfg.Path, dtype);
                    prefix = "model";
                    ignorableSuffixes = [".rotary_emb.inv_freq"];
                    break;
                case "gptj":
                    model = new GptJModel(GptJSettings.From(cfg, ckpt), name, cfg.Path, dtype);
                    prefix = "transformer";
                    // Older checkpoints (EleutherAI/gpt-j-6B's) carry the causal-mask buffers and the sin/cos table.
                    ignorableSuffixes = [".attn.bias", ".attn.masked_bias", ".attn.embed_positions"];
                    break;
                case "opt":
                    {
                        var s = OptSettings.From(cfg, ckpt);
                        model = new OptModel(s, name, cfg.Path, dtype);
                        prefix = "model";
                        // A tied checkpoint may still carry lm_head.weight (a copy of embed_tokens).
                        ignorableSuffixes = s.TieEmbeddings ? ["lm_head.weight"] : [];
                        break;
                    }
                case "bloom":
                    model = new BloomModel(BloomSettings.From(cfg, ckpt), name, dtype);
                    prefix = "transformer";
                    // lm_head.weight, when a checkpoint carries it, is a copy of word_embeddings.
                    ignorableSuffixes = ["lm_head.weight"];
                    break;
                case "gpt_neo":
                    model = GptNeo.Create(GptNeoSettings.From(cfg, ckpt), name, cfg.Path, dtype);
                    prefix = "transformer";
                    // Old checkpoints carry the causal-mask buffers; lm_head.weight is a copy of wte.
                    ignorableSuffixes = [".attn.attention.bias", ".attn.attention.masked_bias", "lm_head.weight"];
                    break;
                default:
                    model = new GptNeoXModel(NeoXSettings.From(cfg, ckpt), name, cfg.Path, dtype);
                    prefix = "gpt_neox";
                    ignorableSuffixes = [".attention.bias", ".attention.masked_bias", ".attention.rotary_emb.inv_freq"];
                    break;
            }
            LoadWeights(model, ckpt, prefix, key =>
                ignorableSuffixes.Any(s => key.EndsWith(s, StringComparison.Ordinal)) || (type == "gpt2" && key == "lm_head.weight"));
        }
        catch
        {
            model?.Dispose();
            throw;
        }
        finally
        {
            ckpt.Dispose();
        }
        model.eval();
        model.Folder = Path.GetFullPath(folder);
        model.GenerationConfig = generation;
        return OwnedModules.Detach(model);
    }

    /// <summary>The name of the model in <paramref name="folder"/>: config.json's <c>_name_or_path</c>; else, for a snapshot
    /// of the Hugging Face cache (<c>models--org--name/snapshots/COMMIT</c>), the repo id <c>org/name</c>; else the folder's
    /// name.</summary>
    public static string NameOf(string folder)
    {
        var config = Path.Combine(folder, "config.json");
        return NameOf(folder, File.Exists(config) ? JsonConfig.Read(config) : null);
    }

    private static string NameOf(string folder, JsonConfig? cfg)
    {
        if (cfg?.String("_name_or_path") is { Length: > 0 } n) return n;
        var full = Path.GetFullPath(folder).TrimEnd('/', '\\');
        var parent = Path.GetDirectoryName(full);
        var repo = parent is null ? null : Path.GetFileName(Path.GetDirectoryName(parent));
        if (parent is not null && Path.GetFileName(parent) == "snapshots" && repo is not null && repo.StartsWith("models--", StringComparison.Ordinal))
            return repo["models--".Length..].Replace("--", "/", StringComparison.Ordinal);
        return Path.GetFileName(full);
    }

    /// <summary>Builds the model config.json describes without loading weights (parameters uninitialised), for training from scratch.</summary>
    internal static HookedTransformer Create(string folder, ScalarType dtype = ScalarType.Float32)
    {
        var cfg = JsonConfig.Read(Path.Combine(folder, "config.json"));
        string name = NameOf(folder, cfg);
        return ModelType(cfg) switch
        {
            "gpt2" => new Gpt2Model(Gpt2Settings.From(cfg), name, cfg.Path, dtype),
            "gpt_neox" => new GptNeoXModel(NeoXSettings.From(cfg), name, cfg.Path, dtype),
            var t => throw new SaeSharpException($"{cfg.Path}: training from scratch supports gpt2 and gpt_neox, not {t}"),
        };
    }

    /// <summary>
    /// A model dtype by name as the CLI's <c>--dtype</c> takes it: <c>float32</c>/<c>f32</c>, <c>bfloat16</c>/<c>bf16</c>,
    /// <c>float16</c>/<c>f16</c>/<c>half</c>, or <c>auto</c>: the checkpoint's own dtype (config.json <c>torch_dtype</c>, or
    /// <c>dtype</c> in newer files; float32 when absent) read from <paramref name="folder"/>.
    /// </summary>
    public static ScalarType ParseDtype(string name, string? folder = null)
    {
        string n = name.Trim().ToLowerInvariant();
        if (n == "auto")
        {
            if (folder is null) throw new SaeSharpException("--dtype auto needs the model folder");
            var cfg = JsonConfig.Read(Path.Combine(folder, "config.json"));
            string? stored = cfg.String("torch_dtype") ?? cfg.String("dtype");
            return stored is null ? ScalarType.Float32 : ParseDtype(stored);
        }
        return n switch
        {
            "float32" or "f32" or "fp32" or "float" => ScalarType.Float32,
            "bfloat16" or "bf16" => ScalarType.BFloat16,
            "float16" or "f16" or "fp16" or "half" => ScalarType.Float16,
            "float64" or "f64" or "double" => ScalarType.Float64,
            _ => throw new SaeSharpException($"dtype '{name}' is not supported (float32, bfloat16, float16, float64, auto)"),
        };
    }

    /// <summary>Throws <see cref="SaeSharpException"/> unless the config.json at <paramref name="configPath"/> describes a
    /// model this loader builds: a family of <see cref="SupportedModelTypes"/> (or their architectures) with settings it
    /// takes (a <c>rope_scaling</c> type it refuses, a missing size, ...). A download checks it before fetching the weights;
    /// the sizes are checked against the tensors only on loading.</summary>
    public static void CheckSupported(string configPath)
    {
        var cfg = JsonConfig.Read(configPath);
        _ = ModelType(cfg) switch
        {
            "gpt2" => (object)Gpt2Settings.From(cfg),
            "gpt_neo" => GptNeoSettings.From(cfg),
            "gpt_neox" => NeoXSettings.From(cfg),
            "phi" => PhiSettings.From(cfg),
            "gptj" => GptJSettings.From(cfg),
            "opt" => OptSettings.From(cfg),
            "bloom" => BloomSettings.From(cfg),
            var type => DecoderSettings.From(cfg, type),
        };
    }

    private static string ModelType(JsonConfig cfg)
    {
        var mt = cfg.String("model_type");
        if (mt is not null)
        {
            if (SupportedModelTypes.Contains(mt)) return mt;
            throw new SaeSharpException($"{cfg.Path}: model_type '{mt}' is not supported (supported: {string.Join(", ", SupportedModelTypes)})");
        }
        foreach (var a in cfg.Architectures)
        {
            if (a.StartsWith("GPT2", StringComparison.Ordinal)) return "gpt2";
            if (a.StartsWith("GPTNeoX", StringComparison.Ordinal)) return "gpt_neox";
            if (a.StartsWith("GPTNeoFor", StringComparison.Ordinal)) return "gpt_neo";
            if (a.StartsWith("Llama", StringComparison.Ordinal)) return "llama";
            if (a.StartsWith("MistralFor", StringComparison.Ordinal)) return "mistral";
            if (a.StartsWith("MixtralFor", StringComparison.Ordinal)) return "mixtral";
            if (a.StartsWith("Qwen2MoeFor", StringComparison.Ordinal)) return "qwen2_moe";
            if (a.StartsWith("Qwen2", StringComparison.Ordinal)) return "qwen2";
            if (a.StartsWith("Qwen3MoeFor", StringComparison.Ordinal)) return "qwen3_moe";
            if (a.StartsWith("Qwen3", StringComparison.Ordinal)) return "qwen3";
            if (a.StartsWith("Olmo2For", StringComparison.Ordinal)) return "olmo2";
            if (a.StartsWith("Olmo3For", StringComparison.Ordinal)) return "olmo3";
            if (a.StartsWith("OlmoFor", StringComparison.Ordinal)) return "olmo";
            if (a.StartsWith("OlmoeFor", StringComparison.Ordinal)) return "olmoe";
            if (a.StartsWith("GemmaFor", StringComparison.Ordinal)) return "gemma";
            if (a.StartsWith("Gemma2", StringComparison.Ordinal)) return "gemma2";
            if (a.StartsWith("Gemma3ForConditionalGeneration", StringComparison.Ordinal)) return "gemma3";
            if (a.StartsWith("Gemma3", StringComparison.Ordinal)) return "gemma3_text";
            if (a.StartsWith("GptOssFor", StringComparison.Ordinal)) return "gpt_oss";
            if (a.StartsWith("DeepseekV3For", StringComparison.Ordinal)) return "deepseek_v3";
            if (a.StartsWith("DeepseekV2For", StringComparison.Ordinal)) return "deepseek_v2";
            if (a.StartsWith("Phi3For", StringComparison.Ordinal)) return "phi3";
            if (a.StartsWith("PhiFor", StringComparison.Ordinal)) return "phi";
            if (a.StartsWith("GPTJFor", StringComparison.Ordinal)) return "gptj";
            if (a.StartsWith("OPTFor", StringComparison.Ordinal)) return "opt";
            if (a.StartsWith("BloomFor", StringComparison.Ordinal)) return "bloom";
        }
        throw new SaeSharpException($"{cfg.Path}: no model_type and no known architectures ({string.Join(", ", cfg.Architectures)}); supported: GPT2LMHeadModel, " +
                                    "GPTNeoForCausalLM, GPTNeoXForCausalLM, LlamaForCausalLM, MistralForCausalLM, MixtralForCausalLM, Qwen2ForCausalLM, Qwen2MoeForCausalLM, Qwen3ForCausalLM, Qwen3MoeForCausalLM, OlmoForCausalLM, Olmo2ForCausalLM, Olmo3ForCausalLM, OlmoeForCausalLM, GemmaForCausalLM, Gemma2ForCausalLM, Gemma3ForCausalLM, Gemma3ForConditionalGeneration, GptOssForCausalLM, DeepseekV2ForCausalLM, DeepseekV3ForCausalLM, PhiForCausalLM, Phi3ForCausalLM, GPTJForCausalLM, OPTForCausalLM, BloomForCausalLM");
    }

    /// <summary>Drops the keys of layers at or past <paramref name="nLayers"/> (DeepSeek-V3's MTP layers).</summary>
    internal static Func<string, string?> MtpLayerDropper(int nLayers) => key =>
    {
        foreach (var p in new[] { "model.layers.", "layers." })
            if (key.StartsWith(p, StringComparison.Ordinal) && key.IndexOf('.', p.Length) is int dot and > 0
                && int.TryParse(key.AsSpan(p.Length, dot - p.Length), System.Globalization.NumberStyles.None, System.Globalization.CultureInfo.InvariantCulture, out int i)
                && i >= nLayers) return null;
        return key;
    };

    /// <summary>
    /// The language model's weights of a <c>Gemma3ForConditionalGeneration</c> checkpoint under the names of
    /// <c>Gemma3ForCausalLM</c>: <c>language_model.model.*</c> and <c>language_model.lm_head.*</c> (transformers 4.50–4.51,
    /// the Gemma 3 hub checkpoints) or <c>model.language_model.*</c> and <c>lm_head.*</c> (4.52 on) become <c>model.*</c>
    /// and <c>lm_head.*</c>; the vision tower and the multimodal projector are dropped (null); other keys stay.
    /// </summary>
    internal static string? Gemma3LanguageModelKey(string key)
    {
        foreach (var drop in new[] { "vision_tower.", "multi_modal_projector.", "model.vision_tower.", "model.multi_modal_projector." })
            if (key.StartsWith(drop, StringComparison.Ordinal)) return null;
        foreach (var (from, to) in new[] { ("language_model.model.", "model."), ("language_model.lm_head.", "lm_head."), ("model.language_model.", "model.") })
            if (key.StartsWith(from, StringComparison.Ordinal)) return to + key[from.Length..];
        return key;
    }

    /// <summary>
    /// Copies every parameter of <paramref name="model"/> from the checkpoint key of the same name, with or without
    /// the <paramref name="prefix"/>; a missing, mis-shaped or unexpected key is an error.
    /// </summary>
    internal static void LoadWeights(nn.Module model, Checkpoint ckpt, string prefix, Func<string, bool> ignorable)
    {
        var used = new HashSet<string>(StringComparer.Ordinal);
        using var _ = no_grad();
        foreach (var (key, param) in model.named_parameters())
        {
            string? alt = key.StartsWith(prefix + ".", StringComparison.Ordinal) ? key[(prefix.Length + 1)..] : null;
            string found = ckpt.Contains(key) ? key
                : alt is not null && ckpt.Contains(alt) ? alt
                : throw new SaeSharpException($"{ckpt.Folder}: checkpoint has no weight '{key}'{(alt is null ? "" : $" (nor '{alt}')")}; " +
                                              $"the model expects shape [{string.Join(", ", param.shape)}]");
            var (file, shape) = ckpt.Info(found);
            if (!shape.SequenceEqual(param.shape))
                throw new SaeSharpException($"{file}: weight '{found}' has shape [{string.Join(", ", shape)}] " +
                                            $"but config.json implies [{string.Join(", ", param.shape)}]");
            using var t = ckpt.Read(found, param.dtype);
            param.copy_(t);
            used.Add(found);
        }
        var extra = ckpt.Keys.Where(k => !used.Contains(k) && !ignorable(k)).ToList();
        if (extra.Count > 0)
            throw new SaeSharpException($"{ckpt.Folder}: checkpoint has {extra.Count} unexpected weight(s): {string.Join(", ", extra.Take(5))}" +
                                        (extra.Count > 5 ? ", ..." : "") + " (wrong model_type in config.json?)");
    }
}

/// <summary>
/// The weight files of a HF model folder: <c>model.safetensors</c>, the shards of <c>model.safetensors.index.json</c>,
/// or (read in memory by the restricted unpickler) <c>pytorch_model.bin</c> and the shards of <c>pytorch_model.bin.index.json</c>.
/// </summary>
internal sealed class Checkpoint : IDisposable
{
    private readonly List<IDisposable> _files;
    private Dictionary<string, (string Path, long[] Shape, Func<ScalarType, Tensor> Read)> _byKey;

    public string Folder { get; }
    public IEnumerable<string> Keys => _byKey.Keys;

    private Checkpoint(string folder, List<IDisposable> files, Dictionary<string, (string, long[], Func<ScalarType, Tensor>)> byKey)
    {
        Folder = folder;
        _files = files;
        _byKey = byKey;
    }

    public bool Contains(string key) => _byKey.ContainsKey(key);

    /// <summary>Replaces the keys <paramref name="sources"/> by <paramref name="key"/> of <paramref name="shape"/>, read by
    /// <paramref name="read"/> (gpt-oss's MXFP4 experts, DeepSeek-V3's FP8 weights, dequantised on reading); <paramref name="key"/>
    /// may be one of the sources (an FP8 weight keeps its name).</summary>
    public void Derive(string key, string file, long[] shape, string[] sources, Func<ScalarType, Tensor> read)
    {
        if (_byKey.ContainsKey(key) && !sources.Contains(key)) throw new SaeSharpException($"{file}: checkpoint has both '{key}' and its packed form '{sources[0]}'");
        foreach (var k in sources) _byKey.Remove(k);
        _byKey[key] = (file, shape, dtype =>
        {
            var t = read(dtype);
            if (t.is_floating_point() && FirstNonFinite(t) is { } at)
            {
                t.Dispose();
                throw new SaeSharpException($"{file}: '{key}' dequantised from {string.Join(" and ", sources.Select(s => $"'{s}'"))} is not finite at " +
                                            $"[{string.Join(", ", at)}] (a NaN code or a NaN/infinite scale in the quantised weights)");
            }
            return t;
        });
    }

    /// <summary>The index of the first NaN or infinite element of <paramref name="t"/>, or null when all are finite.</summary>
    private static long[]? FirstNonFinite(Tensor t)
    {
        using var scope = torch.NewDisposeScope();
        var bad = t.isfinite().logical_not();
        if (!bad.any().item<bool>()) return null;
        long flat = bad.reshape(-1).to(ScalarType.Byte).argmax().item<long>();
        var at = new long[t.dim()];
        for (int d = at.Length - 1; d >= 0; d--) { at[d] = flat % t.shape[d]; flat /= t.shape[d]; }
        return at;
    }

    /// <summary>Renames every key through <paramref name="map"/>, which drops a key by returning null (a model read out of a
    /// larger checkpoint); two keys given one name are an error.</summary>
    public void Rename(Func<string, string?> map)
    {
        var renamed = new Dictionary<string, (string, long[], Func<ScalarType, Tensor>)>(StringComparer.Ordinal);
        foreach (var (key, entry) in _byKey)
            if (map(key) is { } name && !renamed.TryAdd(name, entry))
                throw new SaeSharpException($"{entry.Path}: weight '{key}' and another one both stand for '{name}'");
        _byKey = renamed;
    }

    /// <summary>Blocks the weights hold: one more than the largest integer part of any key (<c>h.11.…</c>,
    /// <c>model.layers.11.…</c>); 0 when no key has one.</summary>
    public int LayerCount => _byKey.Keys.Select(k => k.Split('.').Select(p => int.TryParse(p, System.Globalization.NumberStyles.None,
        System.Globalization.CultureInfo.InvariantCulture, out int i) ? i : -1).FirstOrDefault(i => i >= 0, -1)).DefaultIfEmpty(-1).Max() + 1;

    /// <summary>Refuses a layer count declared by config.json (<paramref name="configKey"/>) that differs from the
    /// weights', before any layer is built.</summary>
    public void ExpectLayers(string configPath, string configKey, int declared)
    {
        int present = LayerCount;
        if (declared != present)
            throw new SaeSharpException($"{configPath}: {configKey}={declared} but the weights in {Folder} hold {present} layer(s)");
    }

    /// <summary>
    /// Refuses sizes declared by config.json that do not match a tensor of the weights, before the model is built:
    /// <paramref name="key"/> (looked up with and without <paramref name="prefix"/>) must have <paramref name="shape"/>,
    /// which the config keys named in <paramref name="declaredBy"/> imply.
    /// </summary>
    public void ExpectShape(string configPath, string prefix, string key, long[] shape, string declaredBy)
    {
        string full = prefix.Length == 0 ? key : prefix + "." + key;
        string found = Contains(full) ? full : Contains(key) ? key
            : throw new SaeSharpException($"{Folder}: checkpoint has no weight '{full}'{(full == key ? "" : $" (nor '{key}')")}");
        var (file, actual) = Info(found);
        if (!actual.SequenceEqual(shape))
            throw new SaeSharpException($"{configPath}: {declaredBy} imply '{found}' of shape [{string.Join(", ", shape)}] " +
                                        $"but {file} holds [{string.Join(", ", actual)}]");
    }

    /// <summary>Refuses config sizes of GPT-2's layout (GPT-2, GPT-Neo) that the weights contradict: the layer count,
    /// <c>transformer.wte</c> [vocab, d], <c>transformer.wpe</c> [positions, d] and layer 0's <c>mlp.c_fc</c> ([d, inner] as
    /// a Conv1D, [inner, d] as an nn.Linear); each size is given with its config.json key.</summary>
    public void ExpectGpt2Layout(string configPath, (string Key, int Value) layers, (string Key, int Value) d, (string Key, int Value) positions,
        (string Key, int Value) inner, int vocab, bool conv1d)
    {
        ExpectLayers(configPath, layers.Key, layers.Value);
        ExpectShape(configPath, "transformer", "wte.weight", [vocab, d.Value], $"vocab_size={vocab}, {d.Key}={d.Value}");
        ExpectShape(configPath, "transformer", "wpe.weight", [positions.Value, d.Value], $"{positions.Key}={positions.Value}, {d.Key}={d.Value}");
        if (layers.Value > 0)
            ExpectShape(configPath, "transformer", "h.0.mlp.c_fc.weight", conv1d ? [d.Value, inner.Value] : [inner.Value, d.Value],
                conv1d ? $"{d.Key}={d.Value}, {inner.Key}={inner.Value}" : $"{inner.Key}={inner.Value}, {d.Key}={d.Value}");
    }

    /// <summary>The file holding <paramref name="key"/> and the tensor's shape.</summary>
    public (string Path, long[] Shape) Info(string key) => (_byKey[key].Path, _byKey[key].Shape);

    /// <summary>The reader of <paramref name="key"/> (kept by a derived key after <see cref="Derive"/> drops it).</summary>
    public Func<ScalarType, Tensor> Reader(string key) => _byKey[key].Read;

    /// <summary>Reads a tensor converted to <paramref name="dtype"/>; the caller owns it.</summary>
    public Tensor Read(string key, ScalarType dtype) => _byKey[key].Read(dtype);

    public static Checkpoint Open(string folder)
    {
        var files = new List<IDisposable>();
        var byKey = new Dictionary<string, (string, long[], Func<ScalarType, Tensor>)>(StringComparer.Ordinal);
        void AddSafeTensors(SafeTensorsFile f, IEnumerable<string> keys)
        {
            foreach (var k in keys)
            {
                if (!f.Contains(k)) throw new SaeSharpException($"{f.Path}: the index places weight '{k}' here but the file has no such tensor");
                byKey[k] = (f.Path, f.Info(k).Shape, dt => f.Read(k, dt));
            }
        }
        void AddPickle(TorchPickleCheckpoint c, IEnumerable<string>? keys)
        {
            var tensors = c.Tensors;
            foreach (var k in keys ?? tensors.Keys)
            {
                if (!tensors.TryGetValue(k, out var t)) throw new SaeSharpException($"{c.Path}: the index places weight '{k}' here but the file has no such tensor");
                byKey[k] = (c.Path, t.shape, dt => t.to(dt, copy: true));
            }
        }
        try
        {
            string single = Path.Combine(folder, "model.safetensors");
            string index = Path.Combine(folder, "model.safetensors.index.json");
            string bin = Path.Combine(folder, "pytorch_model.bin");
            string binIndex = Path.Combine(folder, "pytorch_model.bin.index.json");
            if (File.Exists(single))
            {
                var f = SafeTensorsFile.Open(single);
                files.Add(f);
                AddSafeTensors(f, f.Names);
            }
            else if (File.Exists(index))
            {
                foreach (var (shard, keys) in ReadIndex(index))
                {
                    var f = SafeTensorsFile.Open(Path.Combine(folder, shard));
                    files.Add(f);
                    AddSafeTensors(f, keys);
                }
            }
            else if (File.Exists(bin))
            {
                var c = TorchPickle.Load(bin);
                files.Add(c);
                AddPickle(c, null);
            }
            else if (File.Exists(binIndex))
            {
                foreach (var (shard, keys) in ReadIndex(binIndex))
                {
                    var c = TorchPickle.Load(Path.Combine(folder, shard));
                    files.Add(c);
                    AddPickle(c, keys);
                }
            }
            else
                throw new SaeSharpException($"{folder}: no model.safetensors, model.safetensors.index.json, pytorch_model.bin or pytorch_model.bin.index.json");
        }
        catch
        {
            foreach (var f in files) f.Dispose();
            throw;
        }
        return new Checkpoint(folder, files, byKey);
    }

    /// <summary>The <c>weight_map</c> of a HF index file, grouped by shard file name.</summary>
    private static IEnumerable<(string Shard, List<string> Keys)> ReadIndex(string index)
    {
        JsonObject map;
        try
        {
            map = (IO.StrictJson.Parse(File.ReadAllText(index)) as JsonObject)?["weight_map"] as JsonObject
                  ?? throw new SaeSharpException($"{index}: missing object 'weight_map'");
        }
        catch (System.Text.Json.JsonException e)
        {
            throw new SaeSharpException($"{index}: invalid JSON ({e.Message})");
        }
        var groups = new Dictionary<string, List<string>>(StringComparer.Ordinal);
        foreach (var (key, node) in map)
        {
            string shard = node is JsonValue v && v.TryGetValue(out string? str) ? str : throw new SaeSharpException($"{index}: weight '{key}' has no file name");
            if (shard.Contains('/') || shard.Contains('\\') || shard.StartsWith('.'))
                throw new SaeSharpException($"{index}: weight '{key}': shard file name '{shard}' must be a plain file name");
            if (!groups.TryGetValue(shard, out var list)) groups[shard] = list = new();
            list.Add(key);
        }
        return groups.Select(g => (g.Key, g.Value));
    }

    public void Dispose()
    {
        foreach (var f in _files) f.Dispose();
    }
}
