using SaeSharp.Tokenizers;

namespace SaeSharp.Tests.Tokenizers;

public class TokenizerJsonTests
{
    // Vocabulary a b c Ġ(space) and four merges, ranked: Ġ+a, a+b, Ġa+b, ab+c (mixed "a b" / ["a","b"] forms).
    internal const string TinyTokenizerJson = """
    {
      "version": "1.0",
      "added_tokens": [
        {"id": 8, "content": "<|endoftext|>", "single_word": false, "lstrip": false, "rstrip": false, "normalized": false, "special": true},
        {"id": 9, "content": "cc", "single_word": false, "lstrip": false, "rstrip": false, "normalized": true, "special": false},
        {"id": 10, "content": "<m>", "single_word": false, "lstrip": true, "rstrip": false, "normalized": false, "special": true}
      ],
      "normalizer": {"type": "NFC"},
      "pre_tokenizer": {"type": "ByteLevel", "add_prefix_space": false, "trim_offsets": true, "use_regex": true},
      "post_processor": {"type": "ByteLevel", "add_prefix_space": false, "trim_offsets": true},
      "decoder": {"type": "ByteLevel", "add_prefix_space": false, "trim_offsets": true},
      "model": {
        "type": "BPE", "dropout": null, "unk_token": null, "continuing_subword_prefix": null,
        "end_of_word_suffix": null, "fuse_unk": false, "byte_fallback": false,
        "vocab": {"a": 0, "b": 1, "c": 2, "Ġ": 3, "ab": 4, "Ġa": 5, "Ġab": 6, "abc": 7},
        "merges": ["Ġ a", ["a", "b"], "Ġa b", ["ab", "c"]]
      }
    }
    """;

    private static string WriteTiny(string? tokenizerConfig = null, string? configJson = null)
    {
        string dir = TestPaths.TempDir();
        File.WriteAllText(Path.Combine(dir, "tokenizer.json"), TinyTokenizerJson);
        if (tokenizerConfig is not null) File.WriteAllText(Path.Combine(dir, "tokenizer_config.json"), tokenizerConfig);
        if (configJson is not null) File.WriteAllText(Path.Combine(dir, "config.json"), configJson);
        return dir;
    }

    [Theory]
    // "abc": a b c -> (a,b) rank 1 -> ab c -> (ab,c) rank 3 -> abc
    [InlineData("abc", new[] { 7 })]
    // " ab": Ġ a b -> (Ġ,a) rank 0 -> Ġa b -> (Ġa,b) rank 2 -> Ġab
    [InlineData(" ab", new[] { 6 })]
    // " cab": Ġ c a b -> only (a,b) -> Ġ c ab
    [InlineData(" cab", new[] { 3, 2, 4 })]
    // " abc": Ġ a b c -> Ġa b c -> Ġab c; no (Ġab,c) merge, so never "abc"
    [InlineData(" abc", new[] { 6, 2 })]
    // the GPT-2 split gives "abc", " ab", " cab", " abc"
    [InlineData("abc ab cab abc", new[] { 7, 6, 3, 2, 4, 6, 2 })]
    // "  a": whitespace run keeps one space back for the word: " " then " a"
    [InlineData("  a", new[] { 3, 5 })]
    public void Bpe_follows_merge_ranks(string text, int[] expected)
    {
        var tok = Tokenizer.FromFolder(WriteTiny());
        Assert.Equal(expected, tok.Encode(text));
        Assert.Equal(text, tok.Decode(expected));
    }

    [Fact]
    public void Added_tokens_are_matched_whole()
    {
        var tok = Tokenizer.FromFolder(WriteTiny());
        // "abc" | <|endoftext|> | "cc" (non-special added) | "ab"
        Assert.Equal(new[] { 7, 8, 9, 4 }, tok.Encode("abc<|endoftext|>ccab"));
        // non-special added tokens are matched even with special-token parsing off
        Assert.Equal(new[] { 9, 4 }, tok.Encode("ccab", parseSpecialTokens: false));
        // <m> has lstrip: it absorbs the space before it; " c" is then Ġ c
        Assert.Equal(new[] { 4, 10, 3, 2 }, tok.Encode("ab <m> c"));
        Assert.Equal("abc ab<|endoftext|>cc", tok.Decode([7, 6, 8, 9]));
        Assert.Equal("abc abcc", tok.Decode([7, 6, 8, 9], skipSpecialTokens: true));
        Assert.Equal(11, tok.VocabSize);
        Assert.Equal(3, tok.AddedTokens.Count);
    }

    /// <summary>Hugging Face AddedToken rstrip: the token's match takes in the whitespace on its right, which then
    /// belongs to no other piece (lstrip is the same on the left, tested above).</summary>
    [Fact]
    public void Added_token_with_rstrip_absorbs_the_space_after_it()
    {
        string dir = TestPaths.TempDir();
        File.WriteAllText(Path.Combine(dir, "tokenizer.json"),
            TinyTokenizerJson.Replace("\"lstrip\": true, \"rstrip\": false", "\"lstrip\": false, \"rstrip\": true", StringComparison.Ordinal));
        var tok = Tokenizer.FromFolder(dir);
        // "ab " before <m> keeps its space (GPT-2 split: "ab", " " → 4, Ġ 3); the space after <m> is taken by it,
        // so "c" follows without a Ġ: 2, not Ġ c (3, 2).
        Assert.Equal(new[] { 4, 3, 10, 2 }, tok.Encode("ab <m> c"));
    }

    [Fact]
    public void Special_ids_come_from_config_files()
    {
        var tok = Tokenizer.FromFolder(WriteTiny(
            tokenizerConfig: """{"bos_token": "<|endoftext|>", "eos_token": {"content": "<m>", "special": true}}""",
            configJson: """{"bos_token_id": 0, "eos_token_id": 0, "pad_token_id": 9}"""));
        Assert.Equal(8, tok.BosTokenId);   // tokenizer_config.json wins over config.json
        Assert.Equal(10, tok.EosTokenId);
        Assert.Equal(9, tok.PadTokenId);   // only config.json names a pad token
    }

    [Fact]
    public void A_tokenizer_naming_an_eos_and_no_bos_has_no_bos_whatever_config_json_says()
    {
        // Qwen's layout: tokenizer_config.json "bos_token": null, config.json "bos_token_id" a model setting.
        var tok = Tokenizer.FromFolder(WriteTiny(
            tokenizerConfig: """{"bos_token": null, "eos_token": "<|endoftext|>"}""",
            configJson: """{"bos_token_id": 0, "eos_token_id": 0, "pad_token_id": 9}"""));
        Assert.Null(tok.BosTokenId);
        Assert.Equal(8, tok.EosTokenId);
        Assert.Equal(9, tok.PadTokenId);
        // A bare vocabulary with no special tokens named takes config.json's.
        tok = Tokenizer.FromFolder(WriteTiny(configJson: """{"bos_token_id": 3, "eos_token_id": 4}"""));
        Assert.Equal(3, tok.BosTokenId);
        Assert.Equal(4, tok.EosTokenId);
    }

    [Fact]
    public void Without_config_endoftext_is_bos_and_eos()
    {
        var tok = Tokenizer.FromFolder(WriteTiny());
        Assert.Equal(8, tok.BosTokenId);
        Assert.Equal(8, tok.EosTokenId);
        Assert.Null(tok.PadTokenId);
    }

    [Fact]
    public void Text_outside_the_vocabulary_is_a_clear_error()
    {
        var tok = Tokenizer.FromFolder(WriteTiny());
        var e = Assert.Throws<SaeSharpException>(() => tok.Encode("abz"));
        Assert.Contains("0x7A", e.Message);
    }

    [Fact]
    public void Bad_merge_names_the_file_and_merge()
    {
        string dir = WriteTiny();
        File.WriteAllText(Path.Combine(dir, "tokenizer.json"), TinyTokenizerJson.Replace("\"Ġa b\"", "\"Ġa q\""));
        var e = Assert.Throws<SaeSharpException>(() => Tokenizer.FromFolder(dir));
        Assert.Contains("tokenizer.json", e.Message);
        Assert.Contains("merge #2", e.Message);
    }

    [Fact]
    public void Non_bpe_model_is_rejected()
    {
        string dir = WriteTiny();
        File.WriteAllText(Path.Combine(dir, "tokenizer.json"), TinyTokenizerJson.Replace("\"type\": \"BPE\"", "\"type\": \"Unigram\""));
        var e = Assert.Throws<SaeSharpException>(() => Tokenizer.FromFolder(dir));
        Assert.Contains("Unigram", e.Message);
    }

    private static BpeTokenizer FromJson(string json)
    {
        string dir = TestPaths.TempDir();
        File.WriteAllText(Path.Combine(dir, "tokenizer.json"), json);
        return Tokenizer.FromTokenizerJson(Path.Combine(dir, "tokenizer.json"));
    }

    [Fact]
    public void Normalizer_runs_before_bpe()
    {
        // Sequence [NFC, Lowercase]: "AB" becomes "ab", which merges to one token.
        var tok = FromJson("""
            {"normalizer": {"type": "Sequence", "normalizers": [{"type": "NFC"}, {"type": "Lowercase"}]},
             "pre_tokenizer": {"type": "ByteLevel", "add_prefix_space": false}, "decoder": {"type": "ByteLevel"},
             "model": {"type": "BPE", "vocab": {"a": 0, "b": 1, "ab": 2}, "merges": ["a b"]}}
            """);
        Assert.Equal(new[] { 2 }, tok.Encode("AB"));
    }

    [Fact]
    public void Split_pre_tokenizer_isolates_matches()
    {
        // Llama-3 style: Split (Isolated) then ByteLevel without its own regex. Each digit is its own piece,
        // so the merge "1 2" never applies.
        const string json = """
            {"pre_tokenizer": {"type": "Sequence", "pretokenizers": [
               {"type": "Split", "pattern": {"Regex": "[0-9]"}, "behavior": "Isolated", "invert": false},
               {"type": "ByteLevel", "add_prefix_space": false, "use_regex": false}]},
             "decoder": {"type": "ByteLevel"},
             "model": {"type": "BPE", "vocab": {"1": 0, "2": 1, "3": 2, "12": 3, "a": 4, "aa": 5}, "merges": ["1 2", "a a"]}}
            """;
        var tok = FromJson(json);
        Assert.Equal(new[] { 0, 1, 2, 5 }, tok.Encode("123aa"));
        var joined = FromJson(json.Replace("\"[0-9]\"", "\"x\""));
        Assert.Equal(new[] { 3, 2, 5 }, joined.Encode("123aa"));
    }
}
