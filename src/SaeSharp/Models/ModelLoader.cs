using System.Text.Json.Nodes;
using SaeSharp.IO;
using TorchSharp;
using static TorchSharp.torch;

namespace SaeSharp.Models;

/// <summary>Loads Hugging Face model folders (config.json + model.safetensors or a sharded index) as <see cref="HookedTransformer"/>s.</summary>
public static class ModelLoader
{
    /// <summary>Architectures this loader builds, as config.json <c>model_type</c>.</summary>
    public static IReadOnlyList<string> SupportedModelTypes { get; } = ["gpt2", "gpt_neox"];

    /// <summary>
    /// Builds the model named by config.json (<c>model_type</c>, else <c>architectures</c>) and loads its weights,
    /// converted to <paramref name="dtype"/> (f16 / bf16 checkpoints load into float32 by default).
    /// </summary>
    public static HookedTransformer FromPretrained(string folder, ScalarType dtype = ScalarType.Float32)
    {
        if (!Directory.Exists(folder)) throw new SaeSharpException($"{folder}: model folder not found");
        if (dtype is not (ScalarType.Float32 or ScalarType.Float16 or ScalarType.BFloat16 or ScalarType.Float64))
            throw new SaeSharpException($"model dtype must be float32, float16, bfloat16 or float64, got {dtype}");
        var cfg = JsonConfig.Read(Path.Combine(folder, "config.json"));
        string type = ModelType(cfg);
        string name = cfg.String("_name_or_path") is { Length: > 0 } n ? n : Path.GetFileName(Path.GetFullPath(folder).TrimEnd('/', '\\'));

        HookedTransformer model;
        string prefix;
        string[] ignorableSuffixes;
        switch (type)
        {
            case "gpt2":
                model = new Gpt2Model(Gpt2Settings.From(cfg), name, cfg.Path, dtype);
                prefix = "transformer";
                ignorableSuffixes = [".attn.bias", ".attn.masked_bias"];
                break;
            default:
                model = new GptNeoXModel(NeoXSettings.From(cfg), name, cfg.Path, dtype);
                prefix = "gpt_neox";
                ignorableSuffixes = [".attention.bias", ".attention.masked_bias", ".attention.rotary_emb.inv_freq"];
                break;
        }
        try
        {
            using var ckpt = Checkpoint.Open(folder);
            LoadWeights(model, ckpt, prefix, key =>
                ignorableSuffixes.Any(s => key.EndsWith(s, StringComparison.Ordinal)) || (type == "gpt2" && key == "lm_head.weight"));
        }
        catch
        {
            model.Dispose();
            throw;
        }
        model.eval();
        return model;
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
        }
        throw new SaeSharpException($"{cfg.Path}: no model_type and no known architectures ({string.Join(", ", cfg.Architectures)}); supported: GPT2LMHeadModel, GPTNeoXForCausalLM");
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
            var (file, info) = ckpt.Info(found);
            if (!info.Shape.SequenceEqual(param.shape))
                throw new SaeSharpException($"{file.Path}: weight '{found}' has shape [{string.Join(", ", info.Shape)}] " +
                                            $"but config.json implies [{string.Join(", ", param.shape)}]");
            using var t = file.Read(found, param.dtype);
            param.copy_(t);
            used.Add(found);
        }
        var extra = ckpt.Keys.Where(k => !used.Contains(k) && !ignorable(k)).ToList();
        if (extra.Count > 0)
            throw new SaeSharpException($"{ckpt.Folder}: checkpoint has {extra.Count} unexpected weight(s): {string.Join(", ", extra.Take(5))}" +
                                        (extra.Count > 5 ? ", ..." : "") + " (wrong model_type in config.json?)");
    }
}

/// <summary>The safetensors files of a HF model folder: <c>model.safetensors</c> or the shards of <c>model.safetensors.index.json</c>.</summary>
internal sealed class Checkpoint : IDisposable
{
    private readonly List<SafeTensorsFile> _files;
    private readonly Dictionary<string, SafeTensorsFile> _byKey;

    public string Folder { get; }
    public IEnumerable<string> Keys => _byKey.Keys;

    private Checkpoint(string folder, List<SafeTensorsFile> files, Dictionary<string, SafeTensorsFile> byKey)
    {
        Folder = folder;
        _files = files;
        _byKey = byKey;
    }

    public bool Contains(string key) => _byKey.ContainsKey(key);

    public (SafeTensorsFile File, SafeTensorInfo Info) Info(string key) => (_byKey[key], _byKey[key].Info(key));

    public static Checkpoint Open(string folder)
    {
        string single = Path.Combine(folder, "model.safetensors");
        string index = Path.Combine(folder, "model.safetensors.index.json");
        var files = new List<SafeTensorsFile>();
        var byKey = new Dictionary<string, SafeTensorsFile>(StringComparer.Ordinal);
        try
        {
            if (File.Exists(single))
            {
                var f = SafeTensorsFile.Open(single);
                files.Add(f);
                foreach (var k in f.Names) byKey[k] = f;
            }
            else if (File.Exists(index))
            {
                JsonObject map;
                try
                {
                    map = JsonNode.Parse(File.ReadAllText(index))?["weight_map"] as JsonObject
                          ?? throw new SaeSharpException($"{index}: missing object 'weight_map'");
                }
                catch (System.Text.Json.JsonException e)
                {
                    throw new SaeSharpException($"{index}: invalid JSON ({e.Message})");
                }
                var opened = new Dictionary<string, SafeTensorsFile>(StringComparer.Ordinal);
                foreach (var (key, node) in map)
                {
                    string shard = node?.GetValue<string>() ?? throw new SaeSharpException($"{index}: weight '{key}' has no file");
                    if (shard.Contains('/') || shard.Contains('\\'))
                        throw new SaeSharpException($"{index}: weight '{key}': shard file name '{shard}' must not contain a path");
                    if (!opened.TryGetValue(shard, out var f))
                    {
                        f = SafeTensorsFile.Open(Path.Combine(folder, shard));
                        opened[shard] = f;
                        files.Add(f);
                    }
                    if (!f.Contains(key)) throw new SaeSharpException($"{f.Path}: index {index} places weight '{key}' here but the file has no such tensor");
                    byKey[key] = f;
                }
            }
            else
            {
                bool pickle = File.Exists(Path.Combine(folder, "pytorch_model.bin"));
                throw new SaeSharpException($"{folder}: no model.safetensors or model.safetensors.index.json" +
                                            (pickle ? " (only pytorch_model.bin, which this loader does not read: convert it to safetensors)" : ""));
            }
        }
        catch
        {
            foreach (var f in files) f.Dispose();
            throw;
        }
        return new Checkpoint(folder, files, byKey);
    }

    public void Dispose()
    {
        foreach (var f in _files) f.Dispose();
    }
}
