using System.Text.Json;
using SaeSharp.Data;
using SaeSharp.Tokenizers;

namespace SaeSharp.Corpus;

/// <summary>
/// The labelled corpus on disk: one JSON object per line with <c>text</c>, <c>words</c> (the tokens of the text, in
/// order), <c>labels</c> (one array of label strings per token) and <c>choice_nats</c> (per token, the generator's
/// information revealed there; see <see cref="LabelledDocument.ChoiceNats"/>). Any <c>.jsonl</c> with <c>text</c> and
/// token-aligned <c>labels</c> is a labelled corpus; the other fields are optional.
/// </summary>
public static class LabelledCorpus
{
    /// <summary>Special tokens of the built-in tokenizer: id 0 is BOS/EOS/padding, id 1 unknown.</summary>
    public const string EndOfText = "<|endoftext|>", Unknown = "<unk>";

    private static readonly JsonSerializerOptions IndentedJson = new() { WriteIndented = true };

    /// <summary>The built-in tokenizer's vocabulary in id order: the two special tokens, then <see cref="Lexicon.AllWords"/>.</summary>
    public static IReadOnlyList<string> Vocabulary { get; } = [EndOfText, Unknown, .. Lexicon.AllWords];

    /// <summary>Writes the built-in word-level tokenizer (tokenizer.json, tokenizer_config.json) into <paramref name="dir"/>.</summary>
    public static void WriteTokenizer(string dir)
    {
        Directory.CreateDirectory(dir);
        WordLevelTokenizer.WriteTokenizerJson(Path.Combine(dir, "tokenizer.json"), Vocabulary, [EndOfText, Unknown], Unknown);
        IO.AtomicFile.WriteAllText(Path.Combine(dir, "tokenizer_config.json"), JsonSerializer.Serialize(new Dictionary<string, object>
        {
            ["bos_token"] = EndOfText, ["eos_token"] = EndOfText, ["pad_token"] = EndOfText, ["unk_token"] = Unknown,
            ["model_max_length"] = 1_000_000, ["tokenizer_class"] = "PreTrainedTokenizerFast",
        }, IndentedJson));
    }

    /// <summary>Generates <paramref name="documents"/> documents from <paramref name="seed"/> and writes them as .jsonl; returns the token count.</summary>
    public static long Write(string path, ulong seed, int documents)
    {
        if (documents <= 0) throw new SaeSharpException($"document count must be positive, got {documents}");
        long tokens = 0;
        IO.AtomicFile.Write(path, stream =>
        {
            using var w = new Utf8JsonWriter(stream, new JsonWriterOptions { Encoder = System.Text.Encodings.Web.JavaScriptEncoder.UnsafeRelaxedJsonEscaping });
            foreach (var d in CorpusGenerator.Generate(seed, documents))
            {
                w.Reset(stream);
                w.WriteStartObject();
                w.WriteString("text", d.Text);
                w.WriteStartArray("words");
                foreach (var t in d.Tokens) w.WriteStringValue(t);
                w.WriteEndArray();
                w.WriteStartArray("labels");
                foreach (var ls in d.Labels)
                {
                    w.WriteStartArray();
                    foreach (var l in ls) w.WriteStringValue(l);
                    w.WriteEndArray();
                }
                w.WriteEndArray();
                w.WriteStartArray("choice_nats");
                foreach (var n in d.ChoiceNats) w.WriteNumberValue(Math.Round(n, 5));
                w.WriteEndArray();
                w.WriteEndObject();
                w.Flush();
                stream.WriteByte((byte)'\n');
                tokens += d.Tokens.Count;
            }
        });
        return tokens;
    }

    /// <summary>Throws when <paramref name="path"/> is a folder: a corpus is one .jsonl file whose lines have <paramref name="fields"/>.</summary>
    internal static void RefuseFolder(string path, string fields)
    {
        if (Directory.Exists(path))
            throw new SaeSharpException($"{path} is a folder: a labelled corpus is one .jsonl file whose lines have {fields} (as `sae corpus` writes)");
    }

    /// <summary>The <c>choice_nats</c> array of line <paramref name="line"/>, or null when absent; an entry that is not a
    /// number is an error naming the file and line.</summary>
    internal static double[]? ChoiceNats(JsonElement e, string path, long line) =>
        e.TryGetProperty("choice_nats", out var n) && n.ValueKind == JsonValueKind.Array
            ? n.EnumerateArray().Select(x => x.ValueKind == JsonValueKind.Number ? x.GetDouble()
                : throw new SaeSharpException($"{path} line {line}: choice_nats must be numbers, got {x.GetRawText()}")).ToArray()
            : null;

    /// <summary>One document of a labelled .jsonl: its text, per-token labels, and per-token choice nats when present.</summary>
    public sealed record Row(string Text, IReadOnlyList<string[]> Labels, double[]? ChoiceNats);

    /// <summary>Reads a labelled .jsonl (fields <c>text</c>, <c>labels</c>, optional <c>choice_nats</c>).</summary>
    public static IEnumerable<Row> Read(string path)
    {
        RefuseFolder(path, "text and token-aligned labels");
        foreach (var (e, line) in TextDataset.JsonLines(path))
        {
            if (!e.TryGetProperty("text", out var t) || t.ValueKind != JsonValueKind.String)
                throw new SaeSharpException($"{path} line {line}: no string field 'text'");
            if (!e.TryGetProperty("labels", out var ls) || ls.ValueKind != JsonValueKind.Array)
                throw new SaeSharpException($"{path} line {line}: no array field 'labels' (token-aligned label lists)");
            var labels = new List<string[]>();
            foreach (var tok in ls.EnumerateArray())
            {
                if (tok.ValueKind == JsonValueKind.String) labels.Add([tok.GetString()!]);
                else if (tok.ValueKind == JsonValueKind.Array)
                    labels.Add(tok.EnumerateArray().Select(x => x.ValueKind == JsonValueKind.String ? x.GetString()!
                        : throw new SaeSharpException($"{path} line {line}: labels must be strings, got {x}")).ToArray());
                else throw new SaeSharpException($"{path} line {line}: each entry of 'labels' must be a list of strings");
            }
            double[]? nats = ChoiceNats(e, path, line);
            if (nats is not null && nats.Length != labels.Count)
                throw new SaeSharpException($"{path} line {line}: {nats.Length} choice_nats for {labels.Count} labelled tokens");
            yield return new Row(t.GetString()!, labels, nats);
        }
    }
}
