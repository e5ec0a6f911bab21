using System.Text.Json;
using System.Text.RegularExpressions;

namespace SaeSharp.Tokenizers;

/// <summary>
/// Loads tokenizers from Hugging Face model folders: <c>tokenizer.json</c> (GPT-NeoX/Pythia, Llama 3, Qwen and
/// other byte-level BPEs) or GPT-2's <c>vocab.json</c> + <c>merges.txt</c>. BOS/EOS/PAD come from
/// <c>tokenizer_config.json</c>, then <c>special_tokens_map.json</c>, then <c>config.json</c>
/// (<c>bos_token_id</c>...); without any of them, <c>&lt;|endoftext|&gt;</c> (if present) is both BOS and EOS, as in GPT-2.
/// </summary>
public static class Tokenizer
{
    /// <summary>Loads the tokenizer of a model folder: tokenizer.json if present (byte-level BPE or WordLevel), else vocab.json + merges.txt.</summary>
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
    /// optional "#version" header). <c>&lt;|endoftext|&gt;</c>, when in the vocabulary, is a special added token.
    /// Special-token config files beside vocab.json are honoured.</summary>
    public static ByteLevelBpeTokenizer FromGpt2Files(string vocabJsonPath, string mergesTxtPath)
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
        if (vocab.TryGetValue("<|endoftext|>", out int eot)) added.Add(new AddedToken(eot, "<|endoftext|>"));
        var tok = new ByteLevelBpeTokenizer(vocab, merges, added, [], [new ByteLevelStep(false, true)],
            ignoreMerges: false, unkToken: null, source: mergesTxtPath);
        ApplySpecialTokenConfig(tok, Path.GetDirectoryName(Path.GetFullPath(vocabJsonPath))!);
        return tok;
    }

    /// <summary>A Hugging Face <c>tokenizer.json</c> with a byte-level BPE model: <c>model.vocab</c>,
    /// <c>model.merges</c> ("a b" strings or ["a","b"] pairs), <c>added_tokens</c>, NFC/NFKC/lowercase normalizers,
    /// ByteLevel/Split pre-tokenizers. The post-processor is ignored: encoding never adds BOS/EOS.
    /// Special-token config files beside it are honoured. Note: NFC/NFKC use <see cref="string.Normalize()"/>,
    /// which does nothing to non-ASCII text when the process runs with InvariantGlobalization; text that is not
    /// already NFC can then tokenize differently from Hugging Face.</summary>
    public static ByteLevelBpeTokenizer FromTokenizerJson(string tokenizerJsonPath)
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

        if (!model.TryGetProperty("vocab", out var vocabEl) || vocabEl.ValueKind != JsonValueKind.Object)
            throw new SaeSharpException($"{src}: missing object 'model.vocab'");
        var vocab = new Dictionary<string, int>(StringComparer.Ordinal);
        foreach (var p in vocabEl.EnumerateObject())
        {
            if (p.Value.ValueKind != JsonValueKind.Number || !p.Value.TryGetInt32(out int id))
                throw new SaeSharpException($"{src}: model.vocab['{p.Name}'] is not an integer id");
            vocab[p.Name] = id;
        }

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
        if (root.TryGetProperty("decoder", out var decEl) && HasType(decEl, "ByteLevel")) byteLevel = true;
        if (!byteLevel)
            throw new SaeSharpException(
                $"{src}: not a byte-level BPE (no ByteLevel pre_tokenizer or decoder); only byte-level BPE tokenizers are supported");

        string? unk = model.TryGetProperty("unk_token", out var unkEl) && unkEl.ValueKind == JsonValueKind.String ? unkEl.GetString() : null;
        var tok = new ByteLevelBpeTokenizer(vocab, merges, added, normalizer, pre,
            ignoreMerges: Bool(model, "ignore_merges", false), unkToken: unk, source: src);
        ApplySpecialTokenConfig(tok, Path.GetDirectoryName(Path.GetFullPath(tokenizerJsonPath))!);
        return tok;
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
        var (bos, eos, pad) = SpecialTokenConfig(tok, Path.GetDirectoryName(Path.GetFullPath(tokenizerJsonPath))!);
        (tok.BosTokenId, tok.EosTokenId, tok.PadTokenId) = (bos, eos, pad);
        return tok;
    }

    private static bool Bool(JsonElement e, string name, bool fallback) =>
        e.TryGetProperty(name, out var v) && v.ValueKind is JsonValueKind.True or JsonValueKind.False ? v.GetBoolean() : fallback;

    private static bool HasType(JsonElement e, string type)
    {
        if (e.ValueKind != JsonValueKind.Object) return false;
        if (e.TryGetProperty("type", out var t) && t.GetString() == type) return true;
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
            case "Sequence":
                foreach (var sub in e.GetProperty("normalizers").EnumerateArray()) ParseNormalizer(sub, steps, src);
                break;
            default:
                throw new SaeSharpException($"{src}: normalizer type '{type}' is not supported (NFC, NFD, NFKC, NFKD, Lowercase, Sequence are)");
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
                    if (Bool(e, "invert", false) || behavior is not ("Isolated" or "Removed"))
                        throw new SaeSharpException($"{src}: Split pre_tokenizer with behavior '{behavior}' (invert {Bool(e, "invert", false)}) is not supported (Isolated and Removed are)");
                    steps.Add(new SplitStep(regex, behavior == "Removed"));
                    break;
                }
            case "Sequence":
                foreach (var sub in e.GetProperty("pretokenizers").EnumerateArray()) ParsePreTokenizer(sub, steps, ref byteLevel, src);
                break;
            default:
                throw new SaeSharpException($"{src}: pre_tokenizer type '{type}' is not supported (ByteLevel, Split, Sequence are)");
        }
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

    private static JsonDocument ParseJson(string path)
    {
        RequireFile(path);
        try
        {
            using var stream = File.OpenRead(path);
            return JsonDocument.Parse(stream);
        }
        catch (JsonException e)
        {
            throw new SaeSharpException($"{path}: invalid JSON ({e.Message})", e);
        }
    }

    /// <summary>Sets BOS/EOS/PAD from the config files in <paramref name="dir"/> (see the type's summary).</summary>
    internal static void ApplySpecialTokenConfig(ByteLevelBpeTokenizer tok, string dir)
    {
        (tok.BosTokenId, tok.EosTokenId, tok.PadTokenId) = SpecialTokenConfig(tok, dir);
    }

    private static (int? Bos, int? Eos, int? Pad) SpecialTokenConfig(ITextTokenizer tok, string dir)
    {
        int? bos = null, eos = null, pad = null;
        foreach (var name in new[] { "tokenizer_config.json", "special_tokens_map.json" })
        {
            string path = Path.Combine(dir, name);
            if (!File.Exists(path)) continue;
            using var doc = ParseJson(path);
            if (doc.RootElement.ValueKind != JsonValueKind.Object) continue;
            bos ??= TokenFromConfig(tok, doc.RootElement, "bos_token", path);
            eos ??= TokenFromConfig(tok, doc.RootElement, "eos_token", path);
            pad ??= TokenFromConfig(tok, doc.RootElement, "pad_token", path);
        }
        string configPath = Path.Combine(dir, "config.json");
        if (File.Exists(configPath))
        {
            using var doc = ParseJson(configPath);
            if (doc.RootElement.ValueKind == JsonValueKind.Object)
            {
                bos ??= IdFromConfig(doc.RootElement, "bos_token_id", configPath);
                eos ??= IdFromConfig(doc.RootElement, "eos_token_id", configPath);
                pad ??= IdFromConfig(doc.RootElement, "pad_token_id", configPath);
            }
        }
        if (bos is null && eos is null && tok.TokenToId("<|endoftext|>") is int eot)
        {
            bos = eot;
            eos = eot;
        }
        return (bos, eos, pad);
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
}
