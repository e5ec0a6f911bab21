using System.Text.Json.Nodes;

namespace SaeSharp.Models;

/// <summary>
/// The token ids at which Hugging Face's <c>generate</c> stops for a model folder: <c>generation_config.json</c>'s
/// <c>eos_token_id</c> (an id or a list: Llama 3 Instruct <c>[128001, 128008, 128009]</c>, Gemma 2 <c>[1, 107]</c>), else
/// <c>config.json</c>'s (or its <c>text_config</c>'s), as <c>GenerationConfig.from_model_config</c> falls back. Its sampling
/// defaults (<c>do_sample</c>, <c>temperature</c>, <c>top_p</c>) are not read: generation here follows TransformerLens's
/// <c>HookedTransformer.generate</c>, which ignores them too.
/// </summary>
public sealed record GenerationConfig(IReadOnlyList<long> EosTokenIds, string? Source)
{
    /// <summary>The file Hugging Face's <c>save_pretrained</c> writes beside config.json.</summary>
    public const string FileName = Hub.HfHubClient.GenerationConfigFile;

    /// <summary>No stop ids (a model built in memory, or a folder that declares none).</summary>
    public static GenerationConfig None { get; } = new([], null);

    /// <summary>Reads <paramref name="folder"/>'s <see cref="FileName"/>, else its config.json; <see cref="None"/> when
    /// neither declares an <c>eos_token_id</c>. An id that is not a non-negative integer is an error naming the file.</summary>
    public static GenerationConfig FromFolder(string folder)
    {
        foreach (var name in new[] { FileName, "config.json" })
        {
            var path = Path.Combine(folder, name);
            if (!File.Exists(path)) continue;
            var root = JsonConfig.Read(path).Root;
            var node = root["eos_token_id"] ?? (root["text_config"] as JsonObject)?["eos_token_id"];
            if (node is not null) return new GenerationConfig(Ids(node, path), path);
        }
        return None;
    }

    /// <summary>The ids generation stops at with <paramref name="tokenizerEos"/>, the tokenizer's EOS: these ids, then the
    /// tokenizer's when not among them (a folder that declares none stops at the tokenizer's EOS alone, as before
    /// generation_config.json was read).</summary>
    public IReadOnlyList<long> StopTokenIds(long? tokenizerEos) =>
        tokenizerEos is long t && !EosTokenIds.Contains(t) ? [.. EosTokenIds, t] : EosTokenIds;

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
