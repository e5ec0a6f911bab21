using System.Text;
using System.Text.Json;

namespace SaeSharp.Tokenizers;

/// <summary>
/// Hugging Face <c>WordLevel</c> tokenizer: the pre-tokenizer splits text into words and every word is one id
/// (unknown words become <c>unk_token</c>). Supported pre-tokenizers, as in HF <c>tokenizers</c>:
/// <c>WhitespaceSplit</c> (split on whitespace), <c>Whitespace</c> (regex <c>\w+|[^\w\s]+</c>),
/// <c>Punctuation</c> (each punctuation char isolated) and <c>Sequence</c> of them. Without a decoder, decoding joins
/// tokens with spaces, as HF does. The built-in model's tokenizer is of this kind.
/// </summary>
public sealed class WordLevelTokenizer : ITextTokenizer
{
    private readonly Dictionary<string, int> _vocab;
    private readonly string?[] _idToToken;
    private readonly AddedToken[] _added;
    private readonly HashSet<int> _specialIds;
    private readonly IReadOnlyList<Func<string, IEnumerable<string>>> _pre;
    private readonly int? _unkId;
    private readonly string _source;

    internal WordLevelTokenizer(Dictionary<string, int> vocab, IReadOnlyList<AddedToken> added,
        IReadOnlyList<Func<string, IEnumerable<string>>> preTokenizer, string? unkToken, string source)
    {
        _vocab = vocab;
        _source = source;
        _added = added.OrderByDescending(a => a.Content.Length).ToArray();
        _specialIds = added.Where(a => a.Special).Select(a => a.Id).ToHashSet();
        _pre = preTokenizer;
        _idToToken = Tokenizer.IdTable(vocab, added, source);
        if (unkToken is not null)
            _unkId = vocab.TryGetValue(unkToken, out int u) ? u
                : throw new SaeSharpException($"{source}: unk_token '{unkToken}' is not in model.vocab");
        AddedTokens = added.OrderBy(a => a.Id).ToArray();
    }

    /// <inheritdoc/>
    public int VocabSize => _idToToken.Length;
    /// <inheritdoc/>
    public int? BosTokenId { get; internal set; }
    /// <inheritdoc/>
    public int? EosTokenId { get; internal set; }
    /// <inheritdoc/>
    public int? PadTokenId { get; internal set; }
    /// <inheritdoc/>
    public int? UnkTokenId => _unkId;
    /// <inheritdoc/>
    public IReadOnlyList<int> NamedSpecialTokenIds { get; internal set; } = [];
    /// <inheritdoc/>
    public int? SepTokenId { get; internal set; }
    /// <inheritdoc/>
    public IReadOnlyList<AddedToken> AddedTokens { get; }

    /// <summary>The words of <paramref name="text"/> as the pre-tokenizer splits them (before the vocabulary lookup).</summary>
    public IReadOnlyList<string> PreTokenize(string text)
    {
        IEnumerable<string> pieces = [text];
        foreach (var step in _pre) pieces = pieces.SelectMany(step).ToList();
        return pieces.Where(p => p.Length > 0).ToList();
    }

    /// <inheritdoc/>
    public int[] Encode(string text, bool parseSpecialTokens = true)
    {
        ArgumentNullException.ThrowIfNull(text);
        var ids = new List<int>();
        int start = 0;
        for (int i = 0; i < text.Length;)
        {
            var hit = _added.FirstOrDefault(a => (parseSpecialTokens || !a.Special) && a.Content.Length > 0
                                                 && string.CompareOrdinal(text, i, a.Content, 0, a.Content.Length) == 0);
            if (hit is null)
            {
                i++;
                continue;
            }
            EncodeWords(text[start..i], ids);
            ids.Add(hit.Id);
            i += hit.Content.Length;
            start = i;
        }
        EncodeWords(text[start..], ids);
        return ids.ToArray();
    }

    private void EncodeWords(string text, List<int> ids)
    {
        if (text.Length == 0) return;
        foreach (var w in PreTokenize(text))
        {
            if (_vocab.TryGetValue(w, out int id)) ids.Add(id);
            else ids.Add(_unkId ?? throw new SaeSharpException($"{_source}: word '{w}' is not in the vocabulary and the tokenizer has no unk_token"));
        }
    }

    /// <inheritdoc/>
    public string Decode(IEnumerable<int> ids, bool skipSpecialTokens = false)
    {
        var sb = new StringBuilder();
        foreach (int id in ids)
        {
            if (skipSpecialTokens && _specialIds.Contains(id)) continue;
            if (sb.Length > 0) sb.Append(' ');
            sb.Append(IdToToken(id) ?? "");
        }
        return sb.ToString();
    }

    /// <inheritdoc/>
    public string? IdToToken(int id) => id >= 0 && id < _idToToken.Length ? _idToToken[id] : null;

    /// <inheritdoc/>
    public int? TokenToId(string token) =>
        _vocab.TryGetValue(token, out int id) ? id : _added.FirstOrDefault(a => a.Content == token)?.Id;

    /// <summary>Reads <c>model</c> (type WordLevel), <c>added_tokens</c> and <c>pre_tokenizer</c> of a tokenizer.json.</summary>
    internal static WordLevelTokenizer FromJson(JsonElement root, string src, IReadOnlyList<AddedToken> added)
    {
        var model = root.GetProperty("model");
        var vocab = Tokenizer.ModelVocab(model, src);
        if (root.TryGetProperty("normalizer", out var norm) && norm.ValueKind != JsonValueKind.Null)
            throw new SaeSharpException($"{src}: a normalizer on a WordLevel tokenizer is not supported");
        var pre = new List<Func<string, IEnumerable<string>>>();
        if (root.TryGetProperty("pre_tokenizer", out var preEl)) ParsePre(preEl, pre, src);
        string? unk = model.TryGetProperty("unk_token", out var u) && u.ValueKind == JsonValueKind.String ? u.GetString() : null;
        return new WordLevelTokenizer(vocab, added, pre, unk, src);
    }

    private static void ParsePre(JsonElement e, List<Func<string, IEnumerable<string>>> steps, string src)
    {
        if (e.ValueKind == JsonValueKind.Null) return;
        string? type = e.TryGetProperty("type", out var t) ? t.GetString() : null;
        switch (type)
        {
            case "WhitespaceSplit":
                steps.Add(s => s.Split((char[]?)null, StringSplitOptions.RemoveEmptyEntries));
                break;
            case "Whitespace":
                steps.Add(s => System.Text.RegularExpressions.Regex.Matches(s, @"\w+|[^\w\s]+").Select(m => m.Value));
                break;
            case "Punctuation":
                {
                    string behavior = e.TryGetProperty("behavior", out var b) ? b.GetString() ?? "Isolated" : "Isolated";
                    if (behavior != "Isolated")
                        throw new SaeSharpException($"{src}: Punctuation pre_tokenizer with behavior '{behavior}' is not supported (Isolated is)");
                    steps.Add(SplitPunctuation);
                    break;
                }
            case "Sequence":
                foreach (var sub in e.GetProperty("pretokenizers").EnumerateArray()) ParsePre(sub, steps, src);
                break;
            default:
                throw new SaeSharpException($"{src}: pre_tokenizer type '{type}' is not supported for WordLevel (WhitespaceSplit, Whitespace, Punctuation, Sequence are)");
        }
    }

    /// <summary>HF's <c>is_punc</c>: ASCII punctuation (symbols included, as Rust's <c>is_ascii_punctuation</c>) or Unicode punctuation.</summary>
    private static bool IsPunctuation(char c) =>
        c is >= '!' and <= '/' or >= ':' and <= '@' or >= '[' and <= '`' or >= '{' and <= '~' || char.IsPunctuation(c);

    private static IEnumerable<string> SplitPunctuation(string s)
    {
        int start = 0;
        for (int i = 0; i < s.Length; i++)
        {
            if (!IsPunctuation(s[i])) continue;
            if (i > start) yield return s[start..i];
            yield return s[i].ToString();
            start = i + 1;
        }
        if (start < s.Length) yield return s[start..];
    }

    /// <summary>
    /// Writes a Hugging Face tokenizer.json for a word-level vocabulary (ids in list order): WordLevel model,
    /// WhitespaceSplit then Punctuation pre-tokenizers, the given special tokens as special added tokens.
    /// </summary>
    public static void WriteTokenizerJson(string path, IReadOnlyList<string> vocab, IReadOnlyCollection<string> specialTokens, string unkToken)
    {
        using var stream = new MemoryStream();
        using (var w = new Utf8JsonWriter(stream, new JsonWriterOptions { Indented = true }))
        {
            w.WriteStartObject();
            w.WriteString("version", "1.0");
            w.WriteNull("truncation");
            w.WriteNull("padding");
            w.WriteStartArray("added_tokens");
            for (int i = 0; i < vocab.Count; i++)
            {
                if (!specialTokens.Contains(vocab[i])) continue;
                w.WriteStartObject();
                w.WriteNumber("id", i);
                w.WriteString("content", vocab[i]);
                w.WriteBoolean("single_word", false);
                w.WriteBoolean("lstrip", false);
                w.WriteBoolean("rstrip", false);
                w.WriteBoolean("normalized", false);
                w.WriteBoolean("special", true);
                w.WriteEndObject();
            }
            w.WriteEndArray();
            w.WriteNull("normalizer");
            w.WriteStartObject("pre_tokenizer");
            w.WriteString("type", "Sequence");
            w.WriteStartArray("pretokenizers");
            w.WriteStartObject();
            w.WriteString("type", "WhitespaceSplit");
            w.WriteEndObject();
            w.WriteStartObject();
            w.WriteString("type", "Punctuation");
            w.WriteString("behavior", "Isolated");
            w.WriteEndObject();
            w.WriteEndArray();
            w.WriteEndObject();
            w.WriteNull("post_processor");
            w.WriteNull("decoder");
            w.WriteStartObject("model");
            w.WriteString("type", "WordLevel");
            w.WriteStartObject("vocab");
            for (int i = 0; i < vocab.Count; i++) w.WriteNumber(vocab[i], i);
            w.WriteEndObject();
            w.WriteString("unk_token", unkToken);
            w.WriteEndObject();
            w.WriteEndObject();
        }
        var bytes = stream.ToArray();
        IO.AtomicFile.Write(path, s => s.Write(bytes));
    }
}
