using System.Collections.Concurrent;
using System.Text;
using System.Text.RegularExpressions;

namespace SaeSharp.Tokenizers;

/// <summary>
/// Byte-level BPE (GPT-2, GPT-NeoX/Pythia and their kin): text is split by the GPT-2 pattern (or the
/// tokenizer.json pre-tokenizer), each piece's UTF-8 bytes are mapped to GPT-2's printable chars and
/// merged by rank. Thread-safe; pieces are cached. Build one with <see cref="Tokenizer"/>.
/// </summary>
public sealed class ByteLevelBpeTokenizer : ITextTokenizer
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
    private readonly ConcurrentDictionary<string, int[]> _cache = new(StringComparer.Ordinal);
    private const int MaxCacheEntries = 200_000;
    private int _cacheAdds;

    internal ByteLevelBpeTokenizer(
        Dictionary<string, int> vocab,
        IReadOnlyList<(string Left, string Right)> merges,
        IReadOnlyList<AddedToken> addedTokens,
        IReadOnlyList<NormalizationStep> normalizer,
        IReadOnlyList<PreTokenizerStep> preTokenizer,
        bool ignoreMerges,
        string? unkToken,
        string source)
    {
        _vocab = vocab;
        _normalizer = normalizer;
        _preTokenizer = preTokenizer;
        _ignoreMerges = ignoreMerges;
        _added = addedTokens.OrderBy(t => t.Id).ToArray();
        _addedById = new Dictionary<int, AddedToken>();
        foreach (var t in _added) _addedById[t.Id] = t;
        _addedFirstChars = _added.Where(t => t.Content.Length > 0).Select(t => t.Content[0]).ToHashSet();

        int maxId = -1;
        foreach (var id in vocab.Values) maxId = Math.Max(maxId, id);
        foreach (var t in _added) maxId = Math.Max(maxId, t.Id);
        _idToToken = new string?[maxId + 1];
        foreach (var (tok, id) in vocab)
        {
            if (id < 0) throw new SaeSharpException($"{source}: token '{tok}' has negative id {id}");
            _idToToken[id] = tok;
        }
        foreach (var t in _added) _idToToken[t.Id] ??= t.Content;

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
        foreach (var (raw, rawToken) in SplitOnAdded(text, normalized: false, parseSpecialTokens))
        {
            if (rawToken is not null) { ids.Add(rawToken.Id); continue; }
            string norm = ByteLevel.Normalize(raw, _normalizer);
            foreach (var (gap, token) in SplitOnAdded(norm, normalized: true, parseSpecialTokens))
            {
                if (token is not null) { ids.Add(token.Id); continue; }
                pieces.Clear();
                pieces.Add(gap);
                foreach (var step in _preTokenizer) step.Apply(pieces);
                foreach (var piece in pieces) ids.AddRange(EncodePiece(piece));
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

    private int[] Bpe(string piece)
    {
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

    /// <inheritdoc/>
    public string Decode(IEnumerable<int> ids, bool skipSpecialTokens = false)
    {
        ArgumentNullException.ThrowIfNull(ids);
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
}

/// <summary>Hashes (left, right) id pairs packed in a long. The default long hash (low ^ high) clusters
/// badly for small ids, which made merge look-ups crawl.</summary>
internal sealed class PairKeyComparer : IEqualityComparer<long>
{
    public static readonly PairKeyComparer Instance = new();
    public bool Equals(long x, long y) => x == y;
    public int GetHashCode(long key) => (int)(((ulong)key * 0x9E3779B97F4A7C15UL) >> 32);
}

/// <summary>One pre-tokenizer step of tokenizer.json, applied to the list of pieces in place.</summary>
internal abstract class PreTokenizerStep
{
    public abstract void Apply(List<string> pieces);
}

/// <summary>tokenizer.json <c>ByteLevel</c>: optional prefix space, optional GPT-2 split.
/// (The byte mapping itself happens in BPE.)</summary>
internal sealed class ByteLevelStep(bool addPrefixSpace, bool useRegex) : PreTokenizerStep
{
    public override void Apply(List<string> pieces)
    {
        var output = new List<string>(pieces.Count * 4);
        foreach (var p in pieces)
        {
            string s = addPrefixSpace && p.Length > 0 && !p.StartsWith(' ') ? " " + p : p;
            if (useRegex) ByteLevel.SplitGpt2(s, output);
            else output.Add(s);
        }
        pieces.Clear();
        pieces.AddRange(output);
    }
}

/// <summary>tokenizer.json <c>Split</c> with behaviour <c>Isolated</c> (matches and gaps kept as
/// separate pieces) or <c>Removed</c> (matches dropped).</summary>
internal sealed class SplitStep(Regex pattern, bool removeMatches) : PreTokenizerStep
{
    public override void Apply(List<string> pieces)
    {
        var output = new List<string>(pieces.Count * 4);
        foreach (var p in pieces)
        {
            int last = 0;
            foreach (Match m in pattern.Matches(p))
            {
                if (m.Length == 0) continue;
                if (m.Index > last) output.Add(p.Substring(last, m.Index - last));
                if (!removeMatches) output.Add(m.Value);
                last = m.Index + m.Length;
            }
            if (last < p.Length) output.Add(p.Substring(last));
        }
        pieces.Clear();
        pieces.AddRange(output);
    }
}
