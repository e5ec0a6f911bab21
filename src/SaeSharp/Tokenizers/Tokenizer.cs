using System.Text.Json;
using System.Text.RegularExpressions;

namespace SaeSharp.Tokenizers;

/// <summary>
/// Loads tokenizers from Hugging Face model folders: <c>tokenizer.json</c> (byte-level BPEs: GPT-NeoX/Pythia, Llama 3,
/// Qwen; SentencePiece-style BPEs: Llama 2, Mistral, TinyLlama, Gemma) or GPT-2's <c>vocab.json</c> + <c>merges.txt</c>. BOS/EOS/PAD come from
/// <c>tokenizer_config.json</c>, then <c>special_tokens_map.json</c>; <c>config.json</c>'s <c>bos_token_id</c> and
/// <c>eos_token_id</c> count only when those files name neither (a tokenizer that names an EOS and no BOS, as Qwen's,
/// has no BOS), its <c>pad_token_id</c> when they name no PAD; without any of them, <c>&lt;|endoftext|&gt;</c> (if
/// present) is both BOS and EOS, as in GPT-2.
/// </summary>
public static class Tokenizer
{
    /// <summary>Loads the tokenizer of a model folder: tokenizer.json if present (BPE or WordLevel), else vocab.json + merges.txt.</summary>
    public static ITextTokenizer FromFolder(string directory)
    {
        if (!Directory.Exists(directory))
            throw new SaeSharpException($"tokenizer folder '{directory}' does not exist");
        string json = Path.Combine(directory, "tokenizer.json");
        if (File.Exists(json)) return IsWordLevel(json) ? FromWordLevelJson(json) : FromTokenizerJson(json);
        string vocab = Path.Combine(directory, "vocab.json"), merges = Path.Combine(directory, "merges.txt");
        if (File.Exists(vocab) && File.Exists(merges)) return FromGpt2Files(vocab, merges);
        throw new SaeSharpException(
            $"no tokenizer in '{directory}': expected tokenizer.json, or vocab.json and merges.txt");
    }

    /// <summary>GPT-2 style files: <c>vocab.json</c> (token -> id) and <c>merges.txt</c> (one "a b" merge per line,
    /// optional "#version" header). <c>&lt;|endoftext|&gt;</c>, when in the vocabulary, is a special added token and, as
    /// in Hugging Face's <c>GPT2Tokenizer</c> (whose bos_token and eos_token default to it), the BOS and the EOS unless
    /// tokenizer_config.json or special_tokens_map.json name them (a name of null is no such token); config.json's
    /// bos/eos ids are then not read: they are the model's, not the tokenizer's. Special-token config files beside
    /// vocab.json are honoured.</summary>
    public static BpeTokenizer FromGpt2Files(string vocabJsonPath, string mergesTxtPath)
    {
        var vocab = ReadVocab(vocabJsonPath);
        var merges = new List<(string, string)>();
        int lineNo = 0;
        foreach (string line in File.ReadLines(RequireFile(mergesTxtPath)))
        {
            lineNo++;
            if (line.Length == 0 || (lineNo == 1 && line.StartsWith("#version", StringComparison.Ordinal))) continue;
            merges.Add(ParseMerge(line, $"{mergesTxtPath} line {lineNo}"));
        }
        var added = new List<AddedToken>();
        int? eot = vocab.TryGetValue("<|endoftext|>", out int e) ? e : null;
        if (eot is int id) added.Add(new AddedToken(id, "<|endoftext|>"));
        var tok = new BpeTokenizer(vocab, merges, added, [], [new ByteLevelStep(false, true)],
            ignoreMerges: false, unkToken: null, source: mergesTxtPath);
        ApplySpecialTokenConfig(tok, Path.GetDirectoryName(Path.GetFullPath(vocabJsonPath))!, classDefault: eot);
        return tok;
    }

    /// <summary>A Hugging Face <c>tokenizer.json</c> with a BPE model: <c>model.vocab</c>, <c>model.merges</c>
    /// ("a b" strings or ["a","b"] pairs), <c>added_tokens</c>, NFC/NFKC/Lowercase/Prepend/Replace normalizers,
    /// ByteLevel/Split/Metaspace pre-tokenizers; byte-level, or SentencePiece-style with <c>byte_fallback</c> and the
    /// Replace/ByteFallback/Fuse/Strip/Metaspace decoders. <see cref="BpeTokenizer.Encode"/> never adds BOS/EOS; the
    /// post_processor's template (and tokenizer_config.json <c>add_bos_token</c>) sets what
    /// <see cref="BpeTokenizer.EncodeWithSpecialTokens"/> adds.
    /// Special-token config files beside it are honoured. Note: NFC/NFKC use <see cref="string.Normalize()"/>,
    /// which does nothing to non-ASCII text when the process runs with InvariantGlobalization; text that is not
    /// already NFC can then tokenize differently from Hugging Face.</summary>
    public static BpeTokenizer FromTokenizerJson(string tokenizerJsonPath)
    {
        try
        {
            return ReadTokenizerJson(tokenizerJsonPath);
        }
        catch (Exception e) when (e is InvalidOperationException or KeyNotFoundException or ArgumentException && e is not SaeSharpException)
        {
            // a value of another JSON type than the format's (e.g. "type": false), or an invalid regex pattern
            throw new SaeSharpException($"{tokenizerJsonPath}: not a usable tokenizer.json ({e.Message})", e);
        }
    }

    private static BpeTokenizer ReadTokenizerJson(string tokenizerJsonPath)
    {
        using var doc = ParseJson(tokenizerJsonPath);
        var root = doc.RootElement;
        string src = tokenizerJsonPath;
        if (!root.TryGetProperty("model", out var model) || model.ValueKind != JsonValueKind.Object)
            throw new SaeSharpException($"{src}: missing object 'model'");
        if (model.TryGetProperty("type", out var type) && type.GetString() != "BPE")
            throw new SaeSharpException($"{src}: model.type is '{type.GetString()}', expected 'BPE'");
        if (model.TryGetProperty("continuing_subword_prefix", out var csp) && csp.ValueKind == JsonValueKind.String && csp.GetString()!.Length > 0)
            throw new SaeSharpException($"{src}: model.continuing_subword_prefix '{csp.GetString()}' is not supported");
        if (model.TryGetProperty("end_of_word_suffix", out var ews) && ews.ValueKind == JsonValueKind.String && ews.GetString()!.Length > 0)
            throw new SaeSharpException($"{src}: model.end_of_word_suffix '{ews.GetString()}' is not supported");

        var vocab = ModelVocab(model, src);

        var merges = new List<(string, string)>();
        if (model.TryGetProperty("merges", out var mergesEl))
        {
            int i = 0;
            foreach (var m in mergesEl.EnumerateArray())
            {
                string where = $"{src}: model.merges[{i}]";
                if (m.ValueKind == JsonValueKind.String) merges.Add(ParseMerge(m.GetString()!, where));
                else if (m.ValueKind == JsonValueKind.Array && m.GetArrayLength() == 2
                         && m[0].ValueKind == JsonValueKind.String && m[1].ValueKind == JsonValueKind.String)
                    merges.Add((m[0].GetString()!, m[1].GetString()!));
                else throw new SaeSharpException($"{where} is neither \"a b\" nor [\"a\", \"b\"]");
                i++;
            }
        }

        var added = ParseAddedTokens(root, src);

        var normalizer = new List<NormalizationStep>();
        if (root.TryGetProperty("normalizer", out var normEl)) ParseNormalizer(normEl, normalizer, src);

        var pre = new List<PreTokenizerStep>();
        bool byteLevel = false;
        if (root.TryGetProperty("pre_tokenizer", out var preEl)) ParsePreTokenizer(preEl, pre, ref byteLevel, src);
        bool hasDecoder = root.TryGetProperty("decoder", out var decEl) && decEl.ValueKind == JsonValueKind.Object;
        if (hasDecoder && HasType(decEl, "ByteLevel")) byteLevel = true;
        SentencePieceOptions? sp = null;
        if (!byteLevel)
        {
            var decoder = new List<DecoderStep>();
            if (hasDecoder) ParseDecoder(decEl, decoder, src);
            sp = new SentencePieceOptions(Bool(model, "byte_fallback", false), Bool(model, "fuse_unk", false), decoder);
        }

        string? unk = model.TryGetProperty("unk_token", out var unkEl) && unkEl.ValueKind == JsonValueKind.String ? unkEl.GetString() : null;
        var tok = new BpeTokenizer(vocab, merges, added, normalizer, pre,
            ignoreMerges: Bool(model, "ignore_merges", false), unkToken: unk, source: src, sentencePiece: sp);
        (int? Bos, int? Eos)? template = null;
        if (root.TryGetProperty("post_processor", out var postEl)) template = ParseTemplate(postEl, tok, src);
        ApplySpecialTokenConfig(tok, Path.GetDirectoryName(Path.GetFullPath(tokenizerJsonPath))!, template);
        return tok;
    }

    /// <summary>A tokenizer.json's <c>model.vocab</c> (token → id), BPE's and WordLevel's alike; a missing object or a
    /// non-integer id is an error naming <paramref name="src"/>.</summary>
    internal static Dictionary<string, int> ModelVocab(JsonElement model, string src)
    {
        if (!model.TryGetProperty("vocab", out var vocabEl) || vocabEl.ValueKind != JsonValueKind.Object)
            throw new SaeSharpException($"{src}: missing object 'model.vocab'");
        var vocab = new Dictionary<string, int>(StringComparer.Ordinal);
        foreach (var p in vocabEl.EnumerateObject())
        {
            if (p.Value.ValueKind != JsonValueKind.Number || !p.Value.TryGetInt32(out int id))
                throw new SaeSharpException($"{src}: model.vocab['{p.Name}'] is not an integer id");
            vocab[p.Name] = id;
        }
        return vocab;
    }

    private static List<AddedToken> ParseAddedTokens(JsonElement root, string src)
    {
        var added = new List<AddedToken>();
        if (root.TryGetProperty("added_tokens", out var addedEl) && addedEl.ValueKind == JsonValueKind.Array)
        {
            int i = 0;
            foreach (var a in addedEl.EnumerateArray())
            {
                if (!a.TryGetProperty("id", out var idEl) || !idEl.TryGetInt32(out int id)
                    || !a.TryGetProperty("content", out var contentEl) || contentEl.ValueKind != JsonValueKind.String)
                    throw new SaeSharpException($"{src}: added_tokens[{i}] needs an integer 'id' and a string 'content'");
                added.Add(new AddedToken(id, contentEl.GetString()!,
                    Special: Bool(a, "special", false), SingleWord: Bool(a, "single_word", false),
                    LStrip: Bool(a, "lstrip", false), RStrip: Bool(a, "rstrip", false),
                    Normalized: Bool(a, "normalized", !Bool(a, "special", false))));
                i++;
            }
        }
        return added;
    }

    private static bool IsWordLevel(string tokenizerJsonPath)
    {
        using var doc = ParseJson(tokenizerJsonPath);
        return doc.RootElement.ValueKind == JsonValueKind.Object && doc.RootElement.TryGetProperty("model", out var m)
            && m.ValueKind == JsonValueKind.Object && m.TryGetProperty("type", out var t) && t.ValueKind == JsonValueKind.String && t.GetString() == "WordLevel";
    }

    /// <summary>A Hugging Face <c>tokenizer.json</c> with a <c>WordLevel</c> model (see <see cref="WordLevelTokenizer"/>).
    /// Special-token config files beside it are honoured.</summary>
    public static WordLevelTokenizer FromWordLevelJson(string tokenizerJsonPath)
    {
        using var doc = ParseJson(tokenizerJsonPath);
        var root = doc.RootElement;
        if (root.ValueKind != JsonValueKind.Object || !root.TryGetProperty("model", out var model) || model.ValueKind != JsonValueKind.Object)
            throw new SaeSharpException($"{tokenizerJsonPath}: missing object 'model'");
        var tok = WordLevelTokenizer.FromJson(root, tokenizerJsonPath, ParseAddedTokens(root, tokenizerJsonPath));
        var c = SpecialTokenConfig(tok, Path.GetDirectoryName(Path.GetFullPath(tokenizerJsonPath))!, null);
        (tok.BosTokenId, tok.EosTokenId, tok.PadTokenId, tok.NamedSpecialTokenIds, tok.SepTokenId) = (c.Bos, c.Eos, c.Pad, c.Named, c.Sep);
        return tok;
    }

    private static bool Bool(JsonElement e, string name, bool fallback) =>
        e.TryGetProperty(name, out var v) && v.ValueKind is JsonValueKind.True or JsonValueKind.False ? v.GetBoolean() : fallback;

    private static bool HasType(JsonElement e, string type)
    {
        if (e.ValueKind != JsonValueKind.Object) return false;
        if (e.TryGetProperty("type", out var t) && t.ValueKind == JsonValueKind.String && t.GetString() == type) return true;
        foreach (var listName in new[] { "decoders", "pretokenizers" })
            if (e.TryGetProperty(listName, out var list) && list.ValueKind == JsonValueKind.Array)
                foreach (var sub in list.EnumerateArray()) if (HasType(sub, type)) return true;
        return false;
    }

    private static void ParseNormalizer(JsonElement e, List<NormalizationStep> steps, string src)
    {
        if (e.ValueKind == JsonValueKind.Null) return;
        string? type = e.TryGetProperty("type", out var t) ? t.GetString() : null;
        switch (type)
        {
            case "NFC": steps.Add(NormalizationStep.Nfc); break;
            case "NFD": steps.Add(NormalizationStep.Nfd); break;
            case "NFKC": steps.Add(NormalizationStep.Nfkc); break;
            case "NFKD": steps.Add(NormalizationStep.Nfkd); break;
            case "Lowercase": steps.Add(NormalizationStep.Lowercase); break;
            case "Prepend": steps.Add(new NormalizationStep("Prepend", e.GetProperty("prepend").GetString() ?? "")); break;
            case "Replace": steps.Add(new NormalizationStep("Replace", LiteralPattern(e, src, "normalizer"), e.GetProperty("content").GetString() ?? "")); break;
            case "Sequence":
                foreach (var sub in e.GetProperty("normalizers").EnumerateArray()) ParseNormalizer(sub, steps, src);
                break;
            default:
                throw new SaeSharpException($"{src}: normalizer type '{type}' is not supported (NFC, NFD, NFKC, NFKD, Lowercase, Prepend, Replace, Sequence are)");
        }
    }

    private static void ParsePreTokenizer(JsonElement e, List<PreTokenizerStep> steps, ref bool byteLevel, string src)
    {
        if (e.ValueKind == JsonValueKind.Null) return;
        string? type = e.TryGetProperty("type", out var t) ? t.GetString() : null;
        switch (type)
        {
            case "ByteLevel":
                byteLevel = true;
                steps.Add(new ByteLevelStep(Bool(e, "add_prefix_space", false), Bool(e, "use_regex", true)));
                break;
            case "Split":
                {
                    var pattern = e.GetProperty("pattern");
                    Regex regex;
                    if (pattern.TryGetProperty("Regex", out var r)) regex = new Regex(r.GetString()!, RegexOptions.CultureInvariant);
                    else if (pattern.TryGetProperty("String", out var s)) regex = new Regex(Regex.Escape(s.GetString()!), RegexOptions.CultureInvariant);
                    else throw new SaeSharpException($"{src}: Split pre_tokenizer pattern needs 'Regex' or 'String'");
                    string behavior = e.TryGetProperty("behavior", out var b) ? b.GetString() ?? "" : "";
                    if (Bool(e, "invert", false) || !Enum.TryParse<SplitBehavior>(behavior, out var sb))
                        throw new SaeSharpException($"{src}: Split pre_tokenizer with behavior '{behavior}' (invert {Bool(e, "invert", false)}) is not supported (Isolated, Removed, MergedWithPrevious, MergedWithNext are)");
                    steps.Add(new SplitStep(regex, sb));
                    break;
                }
            case "Metaspace":
                {
                    string scheme = e.TryGetProperty("prepend_scheme", out var ps) && ps.ValueKind == JsonValueKind.String ? ps.GetString()!
                        : Bool(e, "add_prefix_space", true) ? "always" : "never";
                    if (scheme is not ("always" or "first" or "never"))
                        throw new SaeSharpException($"{src}: Metaspace prepend_scheme '{scheme}' is not supported (always, first, never are)");
                    steps.Add(new MetaspaceStep(e.TryGetProperty("replacement", out var rp) ? rp.GetString() ?? "\u2581" : "\u2581", scheme, Bool(e, "split", true)));
                    break;
                }
            case "Sequence":
                foreach (var sub in e.GetProperty("pretokenizers").EnumerateArray()) ParsePreTokenizer(sub, steps, ref byteLevel, src);
                break;
            default:
                throw new SaeSharpException($"{src}: pre_tokenizer type '{type}' is not supported (ByteLevel, Split, Metaspace, Sequence are)");
        }
    }

    /// <summary>The literal string of a Replace pattern (<c>{"String": "..."}</c>).</summary>
    private static string LiteralPattern(JsonElement e, string src, string where)
    {
        if (e.TryGetProperty("pattern", out var pattern) && pattern.TryGetProperty("String", out var str) && str.ValueKind == JsonValueKind.String)
            return str.GetString()!;
        throw new SaeSharpException($"{src}: {where} Replace with a non-string pattern is not supported");
    }

    private static void ParseDecoder(JsonElement e, List<DecoderStep> steps, string src)
    {
        if (e.ValueKind == JsonValueKind.Null) return;
        string? type = e.TryGetProperty("type", out var t) ? t.GetString() : null;
        switch (type)
        {
            case "Sequence":
                foreach (var sub in e.GetProperty("decoders").EnumerateArray()) ParseDecoder(sub, steps, src);
                break;
            case "Replace": steps.Add(new ReplaceDecoder(LiteralPattern(e, src, "decoder"), e.GetProperty("content").GetString() ?? "")); break;
            case "ByteFallback": steps.Add(new ByteFallbackDecoder()); break;
            case "Fuse": steps.Add(new FuseDecoder()); break;
            case "Strip":
                {
                    string content = e.GetProperty("content").GetString() ?? " ";
                    if (content.Length != 1) throw new SaeSharpException($"{src}: Strip decoder content '{content}' must be one character");
                    steps.Add(new StripDecoder(content[0], e.GetProperty("start").GetInt32(), e.GetProperty("stop").GetInt32()));
                    break;
                }
            case "Metaspace":
                {
                    string scheme = e.TryGetProperty("prepend_scheme", out var ps) && ps.ValueKind == JsonValueKind.String ? ps.GetString()!
                        : Bool(e, "add_prefix_space", true) ? "always" : "never";
                    steps.Add(new MetaspaceDecoder(e.TryGetProperty("replacement", out var rp) ? rp.GetString() ?? "\u2581" : "\u2581", scheme != "never"));
                    break;
                }
            default:
                throw new SaeSharpException($"{src}: decoder type '{type}' is not supported for a SentencePiece-style BPE (Replace, ByteFallback, Fuse, Strip, Metaspace, Sequence are)");
        }
    }

    /// <summary>BOS / EOS of a <c>TemplateProcessing</c> post-processor: the special tokens before and after <c>$A</c>
    /// in its <c>single</c> template (null: no template).</summary>
    private static (int? Bos, int? Eos)? ParseTemplate(JsonElement e, BpeTokenizer tok, string src)
    {
        if (e.ValueKind != JsonValueKind.Object) return null;
        string? type = e.TryGetProperty("type", out var t) ? t.GetString() : null;
        if (type == "Sequence" && e.TryGetProperty("processors", out var list))
        {
            foreach (var sub in list.EnumerateArray())
                if (ParseTemplate(sub, tok, src) is { } r) return r;
            return null;
        }
        if (type != "TemplateProcessing" || !e.TryGetProperty("single", out var single)) return null;
        int? bos = null, eos = null;
        bool seenA = false;
        foreach (var item in single.EnumerateArray())
        {
            if (item.TryGetProperty("Sequence", out _)) { seenA = true; continue; }
            if (!item.TryGetProperty("SpecialToken", out var st)) continue;
            string name = st.GetProperty("id").GetString() ?? "";
            int id = e.TryGetProperty("special_tokens", out var map) && map.TryGetProperty(name, out var entry)
                     && entry.TryGetProperty("ids", out var ids) && ids.GetArrayLength() > 0
                ? ids[0].GetInt32()
                : tok.TokenToId(name) ?? throw new SaeSharpException($"{src}: post_processor template token '{name}' is not in the vocabulary");
            if (seenA) eos ??= id; else bos ??= id;
        }
        return (bos, eos);
    }

    private static (string, string) ParseMerge(string line, string where)
    {
        var parts = line.Split(' ');
        if (parts.Length != 2 || parts[0].Length == 0 || parts[1].Length == 0)
            throw new SaeSharpException($"{where}: merge '{line}' is not two tokens separated by one space");
        return (parts[0], parts[1]);
    }

    private static Dictionary<string, int> ReadVocab(string path)
    {
        using var doc = ParseJson(path);
        if (doc.RootElement.ValueKind != JsonValueKind.Object)
            throw new SaeSharpException($"{path}: expected a JSON object of token -> id");
        var vocab = new Dictionary<string, int>(StringComparer.Ordinal);
        foreach (var p in doc.RootElement.EnumerateObject())
        {
            if (p.Value.ValueKind != JsonValueKind.Number || !p.Value.TryGetInt32(out int id))
                throw new SaeSharpException($"{path}: value of '{p.Name}' is not an integer id");
            vocab[p.Name] = id;
        }
        return vocab;
    }

    private static string RequireFile(string path) =>
        File.Exists(path) ? path : throw new SaeSharpException($"tokenizer file '{path}' does not exist");

    private static readonly System.Text.UTF8Encoding StrictUtf8 = new(encoderShouldEmitUTF8Identifier: false, throwOnInvalidBytes: true);

    private static JsonDocument ParseJson(string path)
    {
        RequireFile(path);
        try
        {
            byte[] bytes = File.ReadAllBytes(path);
            // JsonDocument checks string contents only when a string is read: check the UTF-8 up front, once.
            _ = StrictUtf8.GetCharCount(bytes);
            int bom = bytes.AsSpan().StartsWith("\uFEFF"u8) ? 3 : 0;
            return JsonDocument.Parse(bytes.AsMemory(bom));
        }
        catch (JsonException e)
        {
            throw new SaeSharpException($"{path}: invalid JSON ({e.Message})", e);
        }
        catch (System.Text.DecoderFallbackException e)
        {
            throw new SaeSharpException($"{path}: not valid UTF-8 ({e.Message})", e);
        }
    }

    /// <summary>Sets BOS/EOS/PAD from the config files in <paramref name="dir"/> (see the type's summary), and whether
    /// BOS / EOS are added: tokenizer_config.json <c>add_bos_token</c> / <c>add_eos_token</c>, else the post-processor
    /// <paramref name="template"/>. <paramref name="classDefault"/>: the BOS and EOS of a tokenizer class whose
    /// constructor defaults them (GPT2Tokenizer's <c>&lt;|endoftext|&gt;</c>), each unless the config files name it.</summary>
    internal static void ApplySpecialTokenConfig(BpeTokenizer tok, string dir, (int? Bos, int? Eos)? template = null, int? classDefault = null)
    {
        var (bos, eos, pad, named, addBos, addEos, cleanUp, sep) = SpecialTokenConfig(tok, dir, template, classDefault);
        if (cleanUp) tok.CleanUpTokenizationSpaces = true;
        tok.BosTokenId = bos;
        tok.EosTokenId = eos;
        tok.PadTokenId = pad;
        tok.NamedSpecialTokenIds = named;
        tok.SepTokenId = sep;
        tok.AddBosToken = (addBos ?? template?.Bos is not null) && bos is not null;
        tok.AddEosToken = (addEos ?? template?.Eos is not null) && eos is not null;
    }

    private static (int? Bos, int? Eos, int? Pad, int[] Named, bool? AddBos, bool? AddEos, bool CleanUp, int? Sep) SpecialTokenConfig(ITextTokenizer tok, string dir,
        (int? Bos, int? Eos)? template, int? classDefault = null)
    {
        int? bos = null, eos = null, pad = null;
        bool bosNamed = false, eosNamed = false;
        var named = new Dictionary<string, JsonElement>();
        bool cleanUp = false;
        bool? addBos = null, addEos = null;
        foreach (var name in new[] { "tokenizer_config.json", "special_tokens_map.json" })
        {
            string path = Path.Combine(dir, name);
            if (!File.Exists(path)) continue;
            using var doc = ParseJson(path);
            if (doc.RootElement.ValueKind != JsonValueKind.Object) continue;
            if (name == "tokenizer_config.json")
            {
                if (doc.RootElement.TryGetProperty("add_bos_token", out var ab) && ab.ValueKind is JsonValueKind.True or JsonValueKind.False) addBos = ab.GetBoolean();
                if (doc.RootElement.TryGetProperty("add_eos_token", out var ae) && ae.ValueKind is JsonValueKind.True or JsonValueKind.False) addEos = ae.GetBoolean();
                if (doc.RootElement.TryGetProperty("clean_up_tokenization_spaces", out var cu) && cu.ValueKind is JsonValueKind.True)
                    cleanUp = true;
            }
            bosNamed |= doc.RootElement.TryGetProperty("bos_token", out _);
            eosNamed |= doc.RootElement.TryGetProperty("eos_token", out _);
            bos ??= TokenFromConfig(tok, doc.RootElement, "bos_token", path);
            eos ??= TokenFromConfig(tok, doc.RootElement, "eos_token", path);
            pad ??= TokenFromConfig(tok, doc.RootElement, "pad_token", path);
            // The first file naming a key wins, as for BOS/EOS/PAD.
            foreach (var key in NamedSpecialKeys)
                if (!named.ContainsKey(key) && doc.RootElement.TryGetProperty(key, out var v)) named[key] = v.Clone();
        }
        if (classDefault is int d)
        {
            if (!bosNamed) bos ??= d;
            if (!eosNamed) eos ??= d;
        }
        string configPath = Path.Combine(dir, "config.json");
        if (File.Exists(configPath))
        {
            using var doc = ParseJson(configPath);
            if (doc.RootElement.ValueKind == JsonValueKind.Object)
            {
                // config.json's ids are the model's generation settings: a tokenizer whose files name an EOS but no BOS
                // (Qwen: bos_token null) has no BOS, whatever bos_token_id says.
                if (bos is null && eos is null)
                {
                    bos = IdFromConfig(doc.RootElement, "bos_token_id", configPath);
                    eos = IdFromConfig(doc.RootElement, "eos_token_id", configPath);
                }
                pad ??= IdFromConfig(doc.RootElement, "pad_token_id", configPath);
            }
        }
        bos ??= template?.Bos;
        if (bos is null && eos is null && tok.TokenToId("<|endoftext|>") is int eot)
        {
            bos = eot;
            eos = eot;
        }
        var namedIds = new SortedSet<int>();
        foreach (var v in named.Values) AddNamedIds(tok, v, namedIds);
        int? sep = null;
        if (named.TryGetValue("sep_token", out var sepValue))
        {
            var sepIds = new SortedSet<int>();
            AddNamedIds(tok, sepValue, sepIds);
            if (sepIds.Count == 1) sep = sepIds.Min;
        }
        return (bos, eos, pad, [.. namedIds], addBos, addEos, cleanUp, sep);
    }

    /// <summary>The config keys besides bos/eos/pad_token that Hugging Face's <c>special_tokens_map</c> holds.</summary>
    private static readonly string[] NamedSpecialKeys =
        ["unk_token", "sep_token", "cls_token", "mask_token", "additional_special_tokens", "extra_special_tokens"];

    /// <summary>Adds the ids of a config value: a token (string or <c>{"content": ...}</c>), or an array / object of them.</summary>
    private static void AddNamedIds(ITextTokenizer tok, JsonElement v, SortedSet<int> ids)
    {
        switch (v.ValueKind)
        {
            case JsonValueKind.String when tok.TokenToId(v.GetString()!) is int id:
                ids.Add(id);
                break;
            case JsonValueKind.Object when v.TryGetProperty("content", out var c):
                AddNamedIds(tok, c, ids);
                break;
            case JsonValueKind.Object:
                foreach (var p in v.EnumerateObject()) AddNamedIds(tok, p.Value, ids);
                break;
            case JsonValueKind.Array:
                foreach (var e in v.EnumerateArray()) AddNamedIds(tok, e, ids);
                break;
        }
    }

    private static int? TokenFromConfig(ITextTokenizer tok, JsonElement root, string key, string path)
    {
        if (!root.TryGetProperty(key, out var v)) return null;
        string? content = v.ValueKind switch
        {
            JsonValueKind.String => v.GetString(),
            JsonValueKind.Object when v.TryGetProperty("content", out var c) && c.ValueKind == JsonValueKind.String => c.GetString(),
            _ => null,
        };
        if (content is null) return null;
        return tok.TokenToId(content)
            ?? throw new SaeSharpException($"{path}: {key} '{content}' is not in the tokenizer's vocabulary");
    }

    private static int? IdFromConfig(JsonElement root, string key, string path)
    {
        if (!root.TryGetProperty(key, out var v)) return null;
        if (v.ValueKind == JsonValueKind.Array && v.GetArrayLength() > 0) v = v[0];
        if (v.ValueKind != JsonValueKind.Number) return null;
        if (!v.TryGetInt32(out int id) || id < 0)
            throw new SaeSharpException($"{path}: {key} {v} is not a non-negative integer");
        return id;
    }

    /// <summary>Ids beyond the tokens a file defines that an id table may span (HF vocabularies are dense; a few
    /// reserved gaps are allowed, a declared id of 10^9 is not).</summary>
    internal const int MaxIdGap = 1 << 20;

    /// <summary>
    /// The id → token table of a vocabulary and its added tokens (added tokens fill only ids the vocabulary leaves
    /// empty). Ids must be non-negative and below the number of tokens plus <see cref="MaxIdGap"/>, checked before
    /// the table is allocated.
    /// </summary>
    internal static string?[] IdTable(IReadOnlyDictionary<string, int> vocab, IReadOnlyCollection<AddedToken> added, string source)
    {
        long bound = (long)vocab.Count + added.Count + MaxIdGap;
        foreach (var (tok, id) in vocab.Select(kv => (kv.Key, kv.Value)).Concat(added.Select(a => (a.Content, a.Id))))
        {
            if (id < 0) throw new SaeSharpException($"{source}: token '{tok}' has negative id {id}");
            if (id >= bound)
                throw new SaeSharpException($"{source}: token '{tok}' has id {id}, far beyond the {vocab.Count + added.Count} tokens the file defines");
        }
        int maxId = Math.Max(vocab.Count == 0 ? -1 : vocab.Values.Max(), added.Count == 0 ? -1 : added.Max(a => a.Id));
        var table = new string?[maxId + 1];
        foreach (var (tok, id) in vocab) table[id] = tok;
        foreach (var a in added) table[a.Id] ??= a.Content;
        return table;
    }
}
