using System.Text.Json;
using SaeSharp.Tokenizers;

namespace SaeSharp.Tests.Tokenizers;

public class Gpt2TokenizerTests
{
    private static readonly Lazy<BpeTokenizer> Gpt2 = new(() => TestPaths.Gpt2);

    public static TheoryData<int> CaseIndices()
    {
        var data = new TheoryData<int>();
        for (int i = 0; i < LoadCases().Count; i++) data.Add(i);
        return data;
    }

    private static List<(string Text, int[] Ids)> LoadCases()
    {
        using var doc = JsonDocument.Parse(File.ReadAllText(TestPaths.Data("gpt2-tokenizer", "cases.json")));
        return doc.RootElement.EnumerateArray()
            .Select(c => (c.GetProperty("text").GetString()!, c.GetProperty("ids").EnumerateArray().Select(x => x.GetInt32()).ToArray()))
            .ToList();
    }

    [Theory]
    [MemberData(nameof(CaseIndices))]
    public void Encode_matches_reference_case(int index)
    {
        var (text, ids) = LoadCases()[index];
        Assert.Equal(ids, Gpt2.Value.Encode(text, parseSpecialTokens: false));
        Assert.Equal(text, Gpt2.Value.Decode(ids));
    }

    [Theory]
    [InlineData("café naïve über 日本語")]
    [InlineData("emoji 😀👍🏽 family 👨‍👩‍👧 flags 🇫🇷")]
    [InlineData("astral letters 𠀀𝔘𝔫𝔦 and combining e\u0301")]
    [InlineData("  \t\n\r\n  mixed   whitespace \u00A0nbsp\u3000ideographic  ")]
    [InlineData("\n\n\n")]
    [InlineData("x")]
    [InlineData("'s 'S 'll DON'T")]
    public void Decode_inverts_encode(string text)
    {
        var tok = Gpt2.Value;
        int[] ids = tok.Encode(text);
        Assert.All(ids, id => Assert.InRange(id, 0, 50255));
        Assert.Equal(text, tok.Decode(ids));
    }

    [Fact]
    public void Special_token_is_matched_only_when_parsing_is_on()
    {
        var tok = Gpt2.Value;
        int[] parsed = tok.Encode("Hello<|endoftext|>world");
        // The special token splits the text: the halves are encoded on their own around id 50256.
        Assert.Equal([.. tok.Encode("Hello"), 50256, .. tok.Encode("world")], parsed);
        int[] plain = tok.Encode("<|endoftext|>", parseSpecialTokens: false);
        Assert.DoesNotContain(50256, plain);
        Assert.True(plain.Length > 1);
        Assert.Equal("<|endoftext|>", tok.Decode(plain));
        Assert.Equal("Helloworld", tok.Decode(parsed, skipSpecialTokens: true));
    }

    [Fact]
    public void Gpt2_special_ids_and_sizes()
    {
        var tok = Gpt2.Value;
        Assert.Equal(50257, tok.VocabSize);
        Assert.Equal(50256, tok.BosTokenId);
        Assert.Equal(50256, tok.EosTokenId);
        Assert.Null(tok.PadTokenId);
        Assert.Equal("Ġthe", tok.IdToToken(262));
        Assert.Equal(262, tok.TokenToId("Ġthe"));
    }

    [Fact]
    public void Partial_utf8_decodes_to_replacement_char()
    {
        var tok = Gpt2.Value;
        int[] ids = tok.Encode("😀");
        Assert.True(ids.Length > 1); // the emoji's 4 bytes are not one GPT-2 token
        Assert.Contains('\uFFFD', tok.Decode(ids[..1]));
    }

    [Fact]
    public void Unknown_id_is_a_clear_error()
    {
        var e = Assert.Throws<SaeSharpException>(() => Gpt2.Value.Decode([50257]));
        Assert.Contains("50257", e.Message);
    }

    [Fact]
    public void FromFolder_uses_vocab_and_merges_when_no_tokenizer_json()
    {
        string dir = TestPaths.TempDir();
        File.Copy(TestPaths.Data("gpt2-tokenizer", "vocab.json"), Path.Combine(dir, "vocab.json"));
        File.Copy(TestPaths.Data("gpt2-tokenizer", "merges.txt"), Path.Combine(dir, "merges.txt"));
        var tok = Tokenizer.FromFolder(dir);
        Assert.Equal(new[] { 15496, 995 }, tok.Encode("Hello world"));
    }

    /// <summary>A folder of GPT-2's vocab.json and merges.txt only, with <paramref name="files"/> (name, JSON) beside them.</summary>
    private static string VocabAndMergesFolder(params (string Name, string Json)[] files)
    {
        string dir = TestPaths.TempDir();
        File.Copy(TestPaths.Data("gpt2-tokenizer", "vocab.json"), Path.Combine(dir, "vocab.json"));
        File.Copy(TestPaths.Data("gpt2-tokenizer", "merges.txt"), Path.Combine(dir, "merges.txt"));
        foreach (var (name, json) in files) File.WriteAllText(Path.Combine(dir, name), json);
        return dir;
    }

    /// <summary>Hugging Face's GPT2Tokenizer(vocab_file, merges_file) defaults bos_token and eos_token to
    /// "&lt;|endoftext|&gt;" (id 50256 in GPT-2's vocabulary) and never reads a model's config.json: a model folder whose
    /// config.json declares other ids (or only an EOS) still has &lt;|endoftext|&gt; as the tokenizer's BOS and EOS.</summary>
    [Fact]
    public void Vocab_and_merges_alone_default_bos_and_eos_to_endoftext_as_GPT2Tokenizer()
    {
        var alone = Tokenizer.FromFolder(VocabAndMergesFolder());
        Assert.Equal((50256, 50256), (alone.BosTokenId, alone.EosTokenId));
        var withConfig = Tokenizer.FromFolder(VocabAndMergesFolder(("config.json", """{"model_type": "gpt2", "eos_token_id": 13}""")));
        Assert.Equal((50256, 50256), (withConfig.BosTokenId, withConfig.EosTokenId));
        Assert.Equal(50256, withConfig.BosOrEosTokenId());
        var otherIds = Tokenizer.FromFolder(VocabAndMergesFolder(("config.json", """{"bos_token_id": 11, "eos_token_id": 13}""")));
        Assert.Equal((50256, 50256), (otherIds.BosTokenId, otherIds.EosTokenId));
    }

    /// <summary>tokenizer_config.json / special_tokens_map.json override the defaults key by key, as keyword arguments of
    /// GPT2Tokenizer: naming only eos_token keeps the default BOS; a name of null is no such token.</summary>
    [Fact]
    public void Vocab_and_merges_defaults_give_way_key_by_key_to_the_config_files()
    {
        var eosOnly = Tokenizer.FromFolder(VocabAndMergesFolder(("tokenizer_config.json", """{"eos_token": "."}""")));
        Assert.Equal((50256, 13), (eosOnly.BosTokenId, eosOnly.EosTokenId));
        var noBos = Tokenizer.FromFolder(VocabAndMergesFolder(("special_tokens_map.json", """{"bos_token": null}""")));
        Assert.Equal(((int?)null, 50256), (noBos.BosTokenId, noBos.EosTokenId));
    }

    /// <summary>Without &lt;|endoftext|&gt; in the vocabulary there is no default: config.json's ids count, as before.</summary>
    [Fact]
    public void Vocab_without_endoftext_has_no_default()
    {
        string dir = TestPaths.TempDir();
        File.WriteAllText(Path.Combine(dir, "vocab.json"), """{"a": 0, "b": 1, "ab": 2}""");
        File.WriteAllText(Path.Combine(dir, "merges.txt"), "#version: 0.2\na b\n");
        Assert.Equal(((int?)null, (int?)null), (Tokenizer.FromFolder(dir).BosTokenId, Tokenizer.FromFolder(dir).EosTokenId));
        File.WriteAllText(Path.Combine(dir, "config.json"), """{"bos_token_id": 1, "eos_token_id": 2}""");
        var tok = Tokenizer.FromFolder(dir);
        Assert.Equal((1, 2), (tok.BosTokenId, tok.EosTokenId));
        Assert.Equal([2], tok.Encode("ab"));
    }

    [Fact]
    public void FromFolder_without_tokenizer_files_names_what_it_expected()
    {
        string dir = TestPaths.TempDir();
        var e = Assert.Throws<SaeSharpException>(() => Tokenizer.FromFolder(dir));
        Assert.Contains("tokenizer.json", e.Message);
        Assert.Contains("merges.txt", e.Message);
    }

    /// <summary>GPT-2's bytes_to_unicode keeps the printable bytes '!'..'~', 0xA1..0xAC and 0xAE..0xFF as themselves
    /// and maps the other 68 (0x00..0x20, 0x7F..0xA0 and the soft hyphen 0xAD, the last of them) to U+0100 onwards,
    /// so 0xAD becomes U+0143 'Ń': the last single-byte token, id 255 in GPT-2's own encoder.json. The soft hyphen
    /// U+00AD is UTF-8 C2 AD, 'Â' + 'Ń', which GPT-2's merges join into "ÂŃ" (id 3907), and "ĠÂŃ" (id 22020).</summary>
    [Fact]
    public void Soft_hyphen_byte_is_mapped_as_in_gpt2_bytes_to_unicode()
    {
        var tok = Gpt2.Value;
        Assert.Equal(255, tok.TokenToId("\u0143"));
        Assert.Equal(new[] { 3907 }, tok.Encode("\u00AD"));
        Assert.Equal(new[] { 22020 }, tok.Encode(" \u00AD"));
        Assert.Equal("co\u00ADop", tok.Decode(tok.Encode("co\u00ADop")));
    }

    /// <summary>tokenizer_config.json clean_up_tokenization_spaces: decoding applies transformers'
    /// clean_up_tokenization, which replaces " ." " ?" " !" " ," " ' " " n't" " 'm" " 's" " 've" " 're" by the text
    /// without the leading space (tokenization_utils_base.py); without the flag the text comes back unchanged.</summary>
    [Fact]
    public void Clean_up_tokenization_spaces_removes_the_spaces_transformers_removes()
    {
        string dir = TestPaths.TempDir();
        File.Copy(TestPaths.Data("gpt2-tokenizer", "vocab.json"), Path.Combine(dir, "vocab.json"));
        File.Copy(TestPaths.Data("gpt2-tokenizer", "merges.txt"), Path.Combine(dir, "merges.txt"));
        const string raw = "a . b ? c ! d , e ' f do n't I 'm he 's we 've they 're";
        Assert.Equal(raw, Tokenizer.FromFolder(dir).Decode(Tokenizer.FromFolder(dir).Encode(raw)));
        File.WriteAllText(Path.Combine(dir, "tokenizer_config.json"), """{"clean_up_tokenization_spaces": true}""");
        var tok = Tokenizer.FromFolder(dir);
        Assert.Equal("a. b? c! d, e'f don't I'm he's we've they're", tok.Decode(tok.Encode(raw)));
    }
}
