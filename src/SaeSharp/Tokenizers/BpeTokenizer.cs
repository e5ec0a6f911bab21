using System.Collections.Concurrent;
using System.Text;
using System.Text.RegularExpressions;

namespace SaeSharp.Tokenizers;

/// <summary>
/// BPE tokenizers of Hugging Face <c>tokenizer.json</c> files, in two kinds. Byte-level (GPT-2, GPT-NeoX/Pythia,
/// Llama 3, Qwen): text is split by the GPT-2 pattern (or the file's Split regex), each piece's UTF-8 bytes are mapped
/// to GPT-2's printable chars and merged by rank. SentencePiece-style (Llama 2, Mistral, Gemma): spaces become
/// <c>▁</c> (normalizer or Metaspace), each piece starts as its Unicode characters, characters missing from the
/// vocabulary fall back to byte tokens <c>&lt;0x0A&gt;</c> (else <c>unk</c>), then merges by rank; decoding reverses
/// the file's decoder chain. Thread-safe; pieces are cached. Build one with <see cref="Tokenizer"/>.
/// </summary>
public sealed class BpeTokenizer : ITextTokenizer
{
    private readonly Dictionary<string, int> _vocab;
    private readonly string?[] _idToToken;
    private readonly Dictionary<long, (int Rank, int Merged)> _merges;
    private readonly int[] _byteIds = new int[256];
    private readonly AddedToken[] _added;
    private readonly Dictionary<int, AddedToken> _addedById;
    private readonly HashSet<char> _addedFirstChars;
    private readonly IReadOnlyList<NormalizationStep> _normalizer;
    private readonly IReadOnlyList<PreTokenizerStep> _preTokenizer;
    private readonly bool _ignoreMerges;
    private readonly int? _unkId;
    private readonly SentencePieceOptions? _sp;
    private readonly int[]? _byteFallbackIds;
    private readonly ConcurrentDictionary<string, int[]> _cache = new(StringComparer.Ordinal);
    private const int MaxCacheEntries = 200_000;
    private int _cacheAdds;

    internal BpeTokenizer(
        Dictionary<string, int> vocab,
        IReadOnlyList<(string Left, string Right)> merges,
        IReadOnlyList<AddedToken> addedTokens,
        IReadOnlyList<NormalizationStep> normalizer,
        IReadOnlyList<PreTokenizerStep> preTokenizer,
        bool ignoreMerges,
        string? unkToken,
        string source,
        SentencePieceOptions? sentencePiece = null)
    {
        _sp = sentencePiece;
        _vocab = vocab;
        _normalizer = normalizer;
        _preTokenizer = preTokenizer;
        _ignoreMerges = ignoreMerges;
        _added = addedTokens.OrderBy(t => t.Id).ToArray();
        _addedById = new Dictionary<int, AddedToken>();
        foreach (var t in _added) _addedById[t.Id] = t;
        _addedFirstChars = _added.Where(t => t.Content.Length > 0).Select(t => t.Content[0]).ToHashSet();

        _idToToken = Tokenizer.IdTable(vocab, _added, source);

        _merges = new Dictionary<long, (int, int)>(merges.Count, PairKeyComparer.Instance);
        for (int rank = 0; rank < merges.Count; rank++)
        {
            var (l, r) = merges[rank];
            if (!vocab.TryGetValue(l, out int li) || !vocab.TryGetValue(r, out int ri))
                throw new SaeSharpException($"{source}: merge #{rank} '{l} {r}' uses a token that is not in the vocabulary");
            if (!vocab.TryGetValue(l + r, out int mi))
                throw new SaeSharpException($"{source}: merge #{rank} '{l} {r}' produces '{l + r}', which is not in the vocabulary");
            _merges.TryAdd(Key(li, ri), (rank, mi)); // first (lowest) rank wins, as in HF
        }

        if (unkToken is not null && vocab.TryGetValue(unkToken, out int unk)) _unkId = unk;
        for (int b = 0; b < 256; b++)
            _byteIds[b] = vocab.TryGetValue(ByteLevel.ByteToChar[b].ToString(), out int id) ? id : -1;
        if (_sp is { ByteFallback: true })
        {
            _byteFallbackIds = new int[256];
            for (int b = 0; b < 256; b++)
                _byteFallbackIds[b] = vocab.TryGetValue($"<0x{b:X2}>", out int id) ? id : -1;
        }
    }

    /// <summary>True for byte-level BPE (GPT-2 byte mapping); false for SentencePiece-style (▁ and byte fallback).</summary>
    public bool IsByteLevel => _sp is null;

    /// <summary>Whether the model expects BOS first (tokenizer_config.json <c>add_bos_token</c>, else the
    /// post_processor's template), as <c>tokenizer(text)</c> adds it in Hugging Face.</summary>
    public bool AddBosToken { get; internal set; }

    /// <summary>Whether EOS is appended (tokenizer_config.json <c>add_eos_token</c>, else the post_processor's template).</summary>
    public bool AddEosToken { get; internal set; }

    /// <summary>Encodes as Hugging Face's <c>encode(text)</c> with <c>add_special_tokens=True</c>: BOS / EOS added
    /// where <see cref="AddBosToken"/> / <see cref="AddEosToken"/> say.</summary>
    public int[] EncodeWithSpecialTokens(string text)
    {
        var ids = new List<int>();
        if (AddBosToken && BosTokenId is int bos) ids.Add(bos);
        ids.AddRange(Encode(text));
        if (AddEosToken && EosTokenId is int eos) ids.Add(eos);
        return ids.ToArray();
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
    public IReadOnlyList<AddedToken> AddedTokens => _added;

    /// <inheritdoc/>
    public string? IdToToken(int id) => id >= 0 && id < _idToToken.Length ? _idToToken[id] : null;

    /// <inheritdoc/>
    public int? TokenToId(string token)
    {
        if (_vocab.TryGetValue(token, out int id)) return id;
        foreach (var t in _added) if (t.Content == token) return t.Id;
        return null;
    }

    private static long Key(int left, int right) => ((long)left << 32) | (uint)right;

    /// <inheritdoc/>
    public int[] Encode(string text, bool parseSpecialTokens = true)
    {
        ArgumentNullException.ThrowIfNull(text);
        var ids = new List<int>(text.Length / 3 + 4);
        var pieces = new List<string>();
        // Pass 1: added tokens matched on raw text; pass 2: normalised added tokens on normalised gaps.
        bool atStart = true; // the gap begins the text (Metaspace prepend_scheme "first")
        foreach (var (raw, rawToken) in SplitOnAdded(text, normalized: false, parseSpecialTokens))
        {
            if (rawToken is not null) { ids.Add(rawToken.Id); atStart = false; continue; }
            string norm = ByteLevel.Normalize(raw, _normalizer);
            foreach (var (gap, token) in SplitOnAdded(norm, normalized: true, parseSpecialTokens))
            {
                if (token is not null) { ids.Add(token.Id); atStart = false; continue; }
                pieces.Clear();
                pieces.Add(gap);
                foreach (var step in _preTokenizer) step.Apply(pieces, atStart);
                foreach (var piece in pieces) ids.AddRange(EncodePiece(piece));
                atStart = false;
            }
        }
        return ids.ToArray();
    }

    /// <summary>Splits text into (gap, null) and (matched, token) parts, leftmost-longest, like HF's AddedVocabulary.</summary>
    private List<(string Text, AddedToken? Token)> SplitOnAdded(string text, bool normalized, bool parseSpecial)
    {
        var result = new List<(string, AddedToken?)>();
        if (text.Length == 0) return result;
        if (_added.Length == 0) { result.Add((text, null)); return result; }
        int cursor = 0;     // start of the pending gap
        int pos = 0;        // where to search next
        while (pos < text.Length)
        {
            if (!_addedFirstChars.Contains(text[pos])) { pos++; continue; }
            AddedToken? best = null;
            foreach (var t in _added)
            {
                if (t.Normalized != normalized || (t.Special && !parseSpecial) || t.Content.Length == 0) continue;
                if (best is not null && t.Content.Length <= best.Content.Length) continue;
                if (t.Content.Length > text.Length - pos) continue;
                if (string.CompareOrdinal(text, pos, t.Content, 0, t.Content.Length) != 0) continue;
                if (t.SingleWord && !IsSingleWord(text, pos, pos + t.Content.Length)) continue;
                best = t;
            }
            if (best is null) { pos++; continue; }
            int start = pos, end = pos + best.Content.Length;
            if (best.LStrip) while (start > cursor && char.IsWhiteSpace(text[start - 1])) start--;
            if (best.RStrip) while (end < text.Length && char.IsWhiteSpace(text[end])) end++;
            if (start > cursor) result.Add((text.Substring(cursor, start - cursor), null));
            result.Add((best.Content, best));
            cursor = pos = end;
        }
        if (cursor < text.Length) result.Add((text.Substring(cursor), null));
        return result;
    }

    private static bool IsWordChar(char c) => char.IsLetterOrDigit(c) || c == '_';

    private static bool IsSingleWord(string text, int start, int end) =>
        (start == 0 || !IsWordChar(text[start - 1])) && (end == text.Length || !IsWordChar(text[end]));

    private int[] EncodePiece(string piece)
    {
        if (piece.Length == 0) return [];
        if (_cache.TryGetValue(piece, out var cached)) return cached;
        int[] ids = Bpe(piece);
        if (Interlocked.Increment(ref _cacheAdds) > MaxCacheEntries)
        {
            _cache.Clear();
            Interlocked.Exchange(ref _cacheAdds, 0);
        }
        _cache[piece] = ids;
        return ids;
    }

    /// <summary>SentencePiece-style start symbols: one per Unicode character, or its byte tokens, or unk.</summary>
    private List<int> CharSymbols(string piece)
    {
        var symbols = new List<int>(piece.Length);
        bool lastUnk = false;
        Span<byte> buf = stackalloc byte[4];
        foreach (var rune in piece.EnumerateRunes())
        {
            string ch = rune.ToString();
            if (_vocab.TryGetValue(ch, out int id)) { symbols.Add(id); lastUnk = false; continue; }
            if (_byteFallbackIds is not null)
            {
                int n = rune.EncodeToUtf8(buf);
                bool all = true;
                for (int i = 0; i < n; i++) all &= _byteFallbackIds[buf[i]] >= 0;
                if (all)
                {
                    for (int i = 0; i < n; i++) symbols.Add(_byteFallbackIds[buf[i]]);
                    lastUnk = false;
                    continue;
                }
            }
            if (_unkId is not int unk)
                throw new SaeSharpException($"character '{ch}' of '{piece}' is not in the vocabulary and the tokenizer has no unk_token or byte fallback");
            if (!(lastUnk && _sp!.FuseUnk)) symbols.Add(unk);
            lastUnk = true;
        }
        return symbols;
    }

    private int[] Bpe(string piece)
    {
        if (_sp is not null)
        {
            if (_ignoreMerges && _vocab.TryGetValue(piece, out int whole)) return [whole];
            return Merge(CharSymbols(piece));
        }
        byte[] bytes = Encoding.UTF8.GetBytes(piece);
        if (_ignoreMerges)
        {
            string mapped = ByteLevel.MapUtf8(piece);
            if (_vocab.TryGetValue(mapped, out int whole)) return [whole];
        }
        var symbols = new List<int>(bytes.Length);
        foreach (byte b in bytes)
        {
            int id = _byteIds[b];
            if (id < 0)
            {
                if (_unkId is int unk) { symbols.Add(unk); continue; }
                throw new SaeSharpException(
                    $"byte 0x{b:X2} ('{ByteLevel.ByteToChar[b]}') of '{piece}' is not in the vocabulary and the tokenizer has no unk_token");
            }
            symbols.Add(id);
        }
        return Merge(symbols);
    }

    /// <summary>Applies merges by rank (lowest first, leftmost first) to the start symbols.</summary>
    private int[] Merge(List<int> symbols)
    {
        var next = new List<int>(symbols.Count);
        while (symbols.Count > 1)
        {
            int bestRank = int.MaxValue, bestLeft = 0, bestRight = 0, bestMerged = 0;
            for (int i = 0; i + 1 < symbols.Count; i++)
            {
                if (_merges.TryGetValue(Key(symbols[i], symbols[i + 1]), out var m) && m.Rank < bestRank)
                {
                    bestRank = m.Rank; bestLeft = symbols[i]; bestRight = symbols[i + 1]; bestMerged = m.Merged;
                }
            }
            if (bestRank == int.MaxValue) break;
            next.Clear();
            for (int i = 0; i < symbols.Count; i++)
            {
                if (i + 1 < symbols.Count && symbols[i] == bestLeft && symbols[i + 1] == bestRight)
                {
                    next.Add(bestMerged);
                    i++;
                }
                else next.Add(symbols[i]);
            }
            (symbols, next) = (next, symbols);
        }
        return symbols.ToArray();
    }

    /// <summary>tokenizer_config.json <c>clean_up_tokenization_spaces</c>: decoding removes the space before
    /// <c>. ? ! ,</c> and English contractions, as Hugging Face's <c>clean_up_tokenization</c>.</summary>
    public bool CleanUpTokenizationSpaces { get; internal set; }

    /// <inheritdoc/>
    public string Decode(IEnumerable<int> ids, bool skipSpecialTokens = false)
    {
        string text = DecodeRaw(ids, skipSpecialTokens);
        if (!CleanUpTokenizationSpaces) return text;
        foreach (var (from, to) in CleanUps) text = text.Replace(from, to, StringComparison.Ordinal);
        return text;
    }

    private static readonly (string, string)[] CleanUps =
        [(" .", "."), (" ?", "?"), (" !", "!"), (" ,", ","), (" ' ", "'"), (" n't", "n't"), (" 'm", "'m"), (" 's", "'s"), (" 've", "'ve"), (" 're", "'re")];

    private string DecodeRaw(IEnumerable<int> ids, bool skipSpecialTokens)
    {
        ArgumentNullException.ThrowIfNull(ids);
        if (_sp is not null) return DecodeSentencePiece(ids, skipSpecialTokens);
        var bytes = new List<byte>();
        foreach (int id in ids)
        {
            if (_addedById.TryGetValue(id, out var added))
            {
                if (added.Special && skipSpecialTokens) continue;
                bytes.AddRange(Encoding.UTF8.GetBytes(added.Content));
                continue;
            }
            string? tok = IdToToken(id);
            if (tok is null)
                throw new SaeSharpException($"token id {id} is not in the vocabulary (ids are 0..{VocabSize - 1})");
            ByteLevel.AppendTokenBytes(tok, bytes);
        }
        return Encoding.UTF8.GetString(bytes.ToArray());
    }

    /// <summary>The decoder chain of tokenizer.json over token strings (Hugging Face <c>decode_chain</c>).</summary>
    private string DecodeSentencePiece(IEnumerable<int> ids, bool skipSpecialTokens)
    {
        var tokens = new List<string>();
        foreach (int id in ids)
        {
            if (_addedById.TryGetValue(id, out var added) && added.Special && skipSpecialTokens) continue;
            tokens.Add(IdToToken(id) ?? throw new SaeSharpException($"token id {id} is not in the vocabulary (ids are 0..{VocabSize - 1})"));
        }
        foreach (var step in _sp!.Decoder) tokens = step.Apply(tokens);
        return string.Concat(tokens);
    }
}

/// <summary>Settings of a SentencePiece-style (non byte-level) BPE from tokenizer.json.</summary>
internal sealed record SentencePieceOptions(bool ByteFallback, bool FuseUnk, IReadOnlyList<DecoderStep> Decoder);

/// <summary>Hashes (left, right) id pairs packed in a long. The default long hash (low ^ high) clusters
/// badly for small ids, which made merge look-ups crawl.</summary>
internal sealed class PairKeyComparer : IEqualityComparer<long>
{
    public static readonly PairKeyComparer Instance = new();
    public bool Equals(long x, long y) => x == y;
    public int GetHashCode(long key) => (int)(((ulong)key * 0x9E3779B97F4A7C15UL) >> 32);
}
