namespace SaeSharp.Tokenizers;

/// <summary>Text to token ids and back, as a language model's tokenizer does.</summary>
public interface ITextTokenizer
{
    /// <summary>Number of ids: one more than the largest id of the vocabulary and added tokens.</summary>
    int VocabSize { get; }

    /// <summary>Beginning-of-sequence token id, or null when the tokenizer has none.</summary>
    int? BosTokenId { get; }

    /// <summary>End-of-sequence token id, or null when the tokenizer has none.</summary>
    int? EosTokenId { get; }

    /// <summary>Padding token id, or null when the tokenizer has none (GPT-2 has none).</summary>
    int? PadTokenId { get; }

    /// <summary>Separator token id (Hugging Face's <c>sep_token_id</c>: <c>sep_token</c> of tokenizer_config.json /
    /// special_tokens_map.json), or null when the tokenizer has none (GPT-2, Llama and Pythia have none).</summary>
    int? SepTokenId => null;

    /// <summary>The id that text outside the vocabulary becomes (<c>unk_token</c>), or null when the tokenizer has none.</summary>
    int? UnkTokenId { get; }

    /// <summary>Tokens added on top of the BPE vocabulary (special or not), in id order.</summary>
    IReadOnlyList<AddedToken> AddedTokens { get; }

    /// <summary>Ids of the other special tokens tokenizer_config.json / special_tokens_map.json name (Hugging Face's
    /// <c>special_tokens_map</c> beyond BOS/EOS/PAD): <c>unk_token</c>, <c>sep_token</c>, <c>cls_token</c>,
    /// <c>mask_token</c>, <c>additional_special_tokens</c> and <c>extra_special_tokens</c>; names outside the
    /// vocabulary are left out. Special added tokens the files do not name (Llama 3's reserved tokens) are not here.</summary>
    IReadOnlyList<int> NamedSpecialTokenIds { get; }

    /// <summary>Encodes text. Added tokens are matched as whole tokens (as Hugging Face tokenizers do);
    /// special ones only when <paramref name="parseSpecialTokens"/> is true, otherwise their text is
    /// tokenized as ordinary text. Never prepends BOS.</summary>
    int[] Encode(string text, bool parseSpecialTokens = true);

    /// <summary>Encodes as Hugging Face's <c>tokenizer(text)</c>: with the BOS / EOS the tokenizer adds
    /// (<see cref="BpeTokenizer.EncodeWithSpecialTokens"/>); a tokenizer that adds none returns <see cref="Encode"/>'s ids.</summary>
    int[] EncodeWithSpecialTokens(string text) => Encode(text);

    /// <summary>Decodes ids to text; invalid UTF-8 becomes U+FFFD. Special tokens are dropped when
    /// <paramref name="skipSpecialTokens"/> is true.</summary>
    string Decode(IEnumerable<int> ids, bool skipSpecialTokens = false);

    /// <summary>The vocabulary string of an id (byte-level chars, e.g. "Ġthe"), or null if unknown.</summary>
    string? IdToToken(int id);

    /// <summary>The id of a vocabulary string (byte-level chars, e.g. "Ġthe"), or null if unknown.</summary>
    int? TokenToId(string token);
}

/// <summary>A token matched as a whole in the input before BPE (tokenizer.json <c>added_tokens</c>).</summary>
/// <param name="Id">Token id.</param>
/// <param name="Content">Text of the token, e.g. <c>&lt;|endoftext|&gt;</c>.</param>
/// <param name="Special">Special tokens are matched only with special-token parsing on and can be skipped in decoding.</param>
/// <param name="SingleWord">Match only when not preceded or followed by a word character.</param>
/// <param name="LStrip">Absorb whitespace to the left of the match.</param>
/// <param name="RStrip">Absorb whitespace to the right of the match.</param>
/// <param name="Normalized">Match against normalised text (true) or raw text (false).</param>
public sealed record AddedToken(int Id, string Content, bool Special = true, bool SingleWord = false,
    bool LStrip = false, bool RStrip = false, bool Normalized = false);

/// <summary>Prompt text as the token ids a model runs on.</summary>
public static class PromptEncoding
{
    /// <summary>
    /// <paramref name="text"/>'s ids with <see cref="PrependedBosId"/> first when <paramref name="prependBos"/>
    /// (TransformerLens's and SAELens's <c>prepend_bos</c>, true by default there).
    /// </summary>
    public static long[] EncodePrompt(this ITextTokenizer tokenizer, string text, bool prependBos)
    {
        ArgumentNullException.ThrowIfNull(tokenizer);
        var ids = tokenizer.Encode(text).Select(i => (long)i);
        if (prependBos) ids = ids.Prepend(tokenizer.PrependedBosId());
        return ids.ToArray();
    }

    /// <summary>
    /// The token <c>prepend_bos</c> puts first: the tokenizer's BOS, or, for a tokenizer that names an EOS and no BOS
    /// (Qwen's), its EOS, as TransformerLens's <c>HookedTransformer.set_tokenizer</c> sets <c>bos_token = eos_token</c>
    /// (so SAELens's windows on Qwen 3 start with <c>&lt;|im_end|&gt;</c>); a tokenizer with neither is an error.
    /// </summary>
    public static int PrependedBosId(this ITextTokenizer tokenizer) =>
        tokenizer.BosOrEosTokenId() ?? throw new SaeSharpException(
            "prepend_bos is set but the tokenizer has neither a BOS nor an EOS token (set bos_token in tokenizer_config.json, or --no-prepend-bos)");

    /// <summary>The id <see cref="PrependedBosId"/> prepends (BOS, else EOS), or null when the tokenizer has neither.</summary>
    public static int? BosOrEosTokenId(this ITextTokenizer tokenizer)
    {
        ArgumentNullException.ThrowIfNull(tokenizer);
        return tokenizer.BosTokenId ?? tokenizer.EosTokenId;
    }
}

/// <summary>How single tokens read where a person looks at them (dashboards, prompt views, tables).</summary>
public static class TokenDisplay
{
    /// <summary>
    /// The text of token <paramref name="id"/> as it reads inside running text: decoded alone, with the space in front
    /// that a tokenizer joining tokens with spaces (word-level) or dropping a word's leading space when decoding it alone
    /// (SentencePiece's ▁, stripped by its decoder) puts there; a token that is a fragment of a multi-byte character
    /// (it decodes to U+FFFD alone) is shown by its <see cref="VocabularyText"/> (<c>&lt;0xE4&gt;</c>; GPT-2's <c>"Ġâ"</c> as
    /// <c>" â"</c>), as SAEDashboard shows it. A lone SentencePiece <c>"▁"</c> reads as the space it stands for. A special token (<c>&lt;|endoftext|&gt;</c>, <c>&lt;s&gt;</c>, <c>&lt;bos&gt;</c>:
    /// a special added token, or the tokenizer's BOS / EOS / PAD) reads as itself, with no space in front, as
    /// SAELens's dashboards show it; GPT-2's <c>" the"</c> keeps its own leading space. The UNK token stands for a word of
    /// the text, so it reads as a word does: a word-level tokenizer's <c>&lt;unk&gt;</c> gets the space its decoding puts
    /// in front of it (<c>"a &lt;unk&gt; and"</c>, not <c>"a&lt;unk&gt; and"</c>).
    /// </summary>
    public static string TokenText(this ITextTokenizer tokenizer, int id)
    {
        ArgumentNullException.ThrowIfNull(tokenizer);
        if (SpecialContent(tokenizer, id) is { } special) return special;
        string alone = tokenizer.Decode([id]);
        if (alone.Length == 0 && id == tokenizer.UnkTokenId && tokenizer.IdToToken(id) is { } unk) alone = unk;
        if (alone.Contains('\uFFFD', StringComparison.Ordinal) && tokenizer.VocabularyText(id) is { } raw) return raw;
        // alone + " " + alone: the decoder dropped the space in front of the first (also when alone is "", a lone "▁")
        return tokenizer.Decode([id, id]) is { Length: > 0 } twice && twice == alone + " " + alone ? " " + alone : alone;
    }

    /// <summary>
    /// The text <paramref name="continuation"/> adds after <paramref name="prompt"/>, as Hugging Face's text-generation
    /// pipeline cuts it: <c>decode(prompt + continuation)</c> after <c>decode(prompt)</c>. Decoded alone, a Llama 2 / Mistral
    /// continuation would lose the space its first <c>▁</c> stands for (their decoder strips it) and a character split
    /// between prompt and continuation would turn into U+FFFD; when the joined text does not start with the prompt's, the
    /// continuation decoded alone.
    /// </summary>
    public static string DecodeContinuation(this ITextTokenizer tokenizer, IReadOnlyList<int> prompt, IReadOnlyList<int> continuation)
    {
        ArgumentNullException.ThrowIfNull(tokenizer);
        if (prompt.Count == 0) return tokenizer.Decode(continuation);
        string head = tokenizer.Decode(prompt), all = tokenizer.Decode(prompt.Concat(continuation));
        return all.StartsWith(head, StringComparison.Ordinal) ? all[head.Length..] : tokenizer.Decode(continuation);
    }

    /// <summary>A token's text (<see cref="TokenText"/>) as shown on its own: <c>\r</c> as ⏎, <c>\n</c> as ↵, <c>\t</c> as ⇥,
    /// other control characters as their Unicode control pictures (U+2400 + c, ␡ for DEL: a raw one breaks a line or a
    /// table's columns), an empty string as ∅.</summary>
    public static string Visible(string token)
    {
        ArgumentNullException.ThrowIfNull(token);
        if (token.Length == 0) return "∅";
        token = token.Replace("\r", "⏎").Replace("\n", "↵").Replace("\t", "⇥");
        return token.Any(char.IsControl)
            ? string.Concat(token.Select(c => c < 0x20 ? (char)(0x2400 + c) : c == 0x7F ? '␡' : c))
            : token;
    }

    /// <summary>Byte-level BPE's stand-ins for characters in vocabulary strings, read back as SAEDashboard reads them
    /// (its <c>HTML_ANOMALIES</c>, applied in this order): <c>Ġ</c> a space, <c>Ċ</c> a newline, <c>ĉ</c> a tab, and
    /// the byte-level spellings of — – “ ” ‘ ’ and the zero-width space (as a space).</summary>
    public static IReadOnlyList<KeyValuePair<string, string>> ByteLevelAnomalies { get; } =
    [
        new("âĢĶ", "—"), new("âĢĵ", "–"), new("âĢľ", "“"), new("âĢĿ", "”"), new("âĢĺ", "‘"), new("âĢĻ", "’"),
        new("âĢĭ", " "), new("Ġ", " "), new("Ċ", "\n"), new("ĉ", "\t"),
    ];

    /// <summary>
    /// The vocabulary string of <paramref name="id"/> (<see cref="ITextTokenizer.IdToToken"/>) with
    /// <see cref="ByteLevelAnomalies"/> read back, as SAEDashboard's dashboards and its NeuronpediaRunner's
    /// <c>vocab_dict</c> show tokens: <c>"Ġthe"</c> → <c>" the"</c>, a byte fragment <c>"ĠðŁĺ"</c> → <c>" ðŁĺ"</c>;
    /// SentencePiece strings unchanged (<c>"▁the"</c>, <c>"&lt;0xE4&gt;"</c>). Null for an id outside the vocabulary.
    /// </summary>
    public static string? VocabularyText(this ITextTokenizer tokenizer, int id)
    {
        ArgumentNullException.ThrowIfNull(tokenizer);
        if (tokenizer.IdToToken(id) is not { } s) return null;
        foreach (var (from, to) in ByteLevelAnomalies) s = s.Replace(from, to, StringComparison.Ordinal);
        return s;
    }

    /// <summary>The words (whitespace-separated pieces) of <paramref name="text"/> that the tokenizer reads, wholly or in
    /// part, as its unknown token (a word-level vocabulary's missing words), in order, each once; empty when it has no
    /// unknown token or none appears. The unknown token written as such ("&lt;unk&gt;") is not counted.</summary>
    public static IReadOnlyList<string> UnknownWords(this ITextTokenizer tokenizer, string text)
    {
        ArgumentNullException.ThrowIfNull(tokenizer);
        ArgumentNullException.ThrowIfNull(text);
        if (tokenizer.UnkTokenId is not int unk || !tokenizer.Encode(text).Contains(unk)) return [];
        string? written = tokenizer.IdToToken(unk);
        return text.Split((char[]?)null, StringSplitOptions.RemoveEmptyEntries)
            .Where(w => w != written && tokenizer.Encode(w).Contains(unk)).Distinct(StringComparer.Ordinal).ToList();
    }

    /// <summary>The content of a control token (BOS, EOS, PAD, another special added token; not UNK unless it is one of
    /// those too), else null.</summary>
    private static string? SpecialContent(ITextTokenizer tokenizer, int id)
    {
        bool control = id == tokenizer.BosTokenId || id == tokenizer.EosTokenId || id == tokenizer.PadTokenId;
        if (!control && id == tokenizer.UnkTokenId) return null;
        foreach (var a in tokenizer.AddedTokens)
            if (a.Id == id) return a.Special ? a.Content : null;
        return control ? tokenizer.IdToToken(id) : null;
    }
}

/// <summary>Single-token lookups (TransformerLens <c>to_single_token</c>).</summary>
public static class SingleTokens
{
    /// <summary>The id of <paramref name="text"/> when it is exactly one token (special tokens parsed as such; the UNK
    /// token only when written as itself); otherwise an error naming <paramref name="what"/> and listing the pieces.</summary>
    public static int SingleToken(this ITextTokenizer tok, string text, string what)
    {
        ArgumentNullException.ThrowIfNull(tok);
        ArgumentNullException.ThrowIfNull(text);
        var ids = tok.Encode(text, parseSpecialTokens: true);
        if (ids.Length == 1 && (ids[0] != tok.UnkTokenId || tok.IdToToken(ids[0]) == text.Trim())) return ids[0];
        string pieces = string.Join(", ", ids.Select(i => $"{i} \"{TokenDisplay.Visible(tok.TokenText(i))}\"" + (i == tok.UnkTokenId ? " (unknown)" : "")));
        throw new SaeSharpException($"{what}: '{text}' is not a single token of this tokenizer: it tokenizes to [{pieces}] (give a single-token string or a token id)");
    }
}
