using System.Text.Json.Nodes;

namespace SaeSharp.Models;

/// <summary>
/// The token ids at which Hugging Face's <c>generate</c> stops for a model folder, exactly as <c>from_pretrained</c> sets
/// <c>model.generation_config</c>: the folder's <c>generation_config.json</c> when it has one (its <c>eos_token_id</c>, an
/// id or a list: Llama 3 Instruct <c>[128001, 128008, 128009]</c>, Gemma 2 <c>[1, 107]</c>; none when the file declares
/// none), else <c>config.json</c>'s (or its <c>text_config</c>'s), as <c>GenerationConfig.from_model_config</c> builds it.
/// The tokenizer's EOS is not among them (transformers does not read it). Its sampling defaults (<c>do_sample</c>,
/// <c>temperature</c>, <c>top_p</c>) are not read: generation here follows TransformerLens's <c>HookedTransformer.generate</c>,
/// which ignores them too.
/// </summary>
public sealed record GenerationConfig(IReadOnlyList<long> EosTokenIds, string? Source)
{
    /// <summary>The file Hugging Face's <c>save_pretrained</c> writes beside config.json.</summary>
    public const string FileName = Hub.HfHubClient.GenerationConfigFile;

    /// <summary>No stop ids (a model built in memory, or a folder that declares none).</summary>
    public static GenerationConfig None { get; } = new([], null);

    /// <summary>Reads <paramref name="folder"/>'s <see cref="FileName"/> when there is one (it alone, as transformers
    /// reads it), else its config.json; <see cref="None"/> when the file read declares no <c>eos_token_id</c>. An id that
    /// is not a non-negative integer is an error naming the file.</summary>
    public static GenerationConfig FromFolder(string folder)
    {
        var generation = Path.Combine(folder, FileName);
        if (File.Exists(generation))
            return JsonConfig.Read(generation).Root["eos_token_id"] is { } eos ? new GenerationConfig(Ids(eos, generation), generation) : None;
        var config = Path.Combine(folder, "config.json");
        if (!File.Exists(config)) return None;
        var root = JsonConfig.Read(config).Root;
        var node = root["eos_token_id"] ?? (root["text_config"] as JsonObject)?["eos_token_id"];
        return node is null ? None : new GenerationConfig(Ids(node, config), config);
    }

    private static List<long> Ids(JsonNode node, string path)
    {
        var items = node is JsonArray a ? a.ToList() : [node];
        var ids = new List<long>();
        foreach (var item in items)
        {
            if (item is JsonValue v && v.TryGetValue(out long id) && id >= 0) { if (!ids.Contains(id)) ids.Add(id); }
            else throw new SaeSharpException($"{path}: eos_token_id must be a token id or a list of them, got {node.ToJsonString()}");
        }
        return ids;
    }
}
