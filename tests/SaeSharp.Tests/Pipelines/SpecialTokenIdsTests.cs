using SaeSharp.Pipelines;
using SaeSharp.Tests.Tokenizers;
using SaeSharp.Tokenizers;

namespace SaeSharp.Tests.Pipelines;

/// <summary>
/// <see cref="ExcludedTokens.SpecialTokenIds"/> follows SAELens 6.18 <c>get_special_token_ids</c>: the ids of the
/// tokens the Hugging Face tokenizer names (every <c>*_token_id</c> and <c>special_tokens_map</c> entry), not every
/// added token marked special. Real families: <c>HubTokenizerTests.SpecialTokenIds_match_SAELens</c>.
/// </summary>
public class SpecialTokenIdsTests
{
    // TinyTokenizerJson: vocab 0..7 ("abc" = 7), added 8 <|endoftext|> (special), 9 "cc" (not special), 10 <m> (special).
    private static ITextTokenizer Tiny(string tokenizerConfig)
    {
        string dir = TestPaths.TempDir();
        File.WriteAllText(Path.Combine(dir, "tokenizer.json"), TokenizerJsonTests.TinyTokenizerJson);
        File.WriteAllText(Path.Combine(dir, "tokenizer_config.json"), tokenizerConfig);
        return Tokenizer.FromFolder(dir);
    }

    [Fact]
    public void A_special_added_token_the_config_does_not_name_is_kept()
    {
        // Llama 3's case: 256 special added tokens, special_tokens_map = {bos, eos}.
        var tok = Tiny("""{"bos_token": "<|endoftext|>", "eos_token": "<|endoftext|>"}""");
        Assert.Equal([8L], ExcludedTokens.SpecialTokenIds(tok));
    }

    [Theory]
    [InlineData("""{"eos_token": "<|endoftext|>", "additional_special_tokens": ["<m>", "not-in-vocab"]}""")]
    [InlineData("""{"eos_token": "<|endoftext|>", "extra_special_tokens": {"image_token": "<m>"}}""")]
    [InlineData("""{"eos_token": "<|endoftext|>", "mask_token": {"content": "<m>", "special": true}}""")]
    [InlineData("""{"eos_token": "<|endoftext|>", "sep_token": "<m>", "cls_token": "<m>"}""")]
    public void Tokens_the_config_names_are_excluded(string config)
    {
        var tok = Tiny(config);
        Assert.Equal([10], tok.NamedSpecialTokenIds);
        Assert.Equal([8L, 10L], ExcludedTokens.SpecialTokenIds(tok));
    }

    [Fact]
    public void Unk_is_excluded_even_when_not_special()
    {
        // SAELens takes unk_token_id like any *_token_id; here UNK names a plain vocabulary token.
        var tok = Tiny("""{"eos_token": "<|endoftext|>", "unk_token": "abc"}""");
        Assert.Equal([7L, 8L], ExcludedTokens.SpecialTokenIds(tok));
    }

    [Fact]
    public void Gpt2_excludes_endoftext_only()
    {
        // GPT-2: bos = eos = unk = <|endoftext|>, no pad (TransformerLens sets pad to eos).
        string dir = TestPaths.TempDir();
        foreach (var f in new[] { "vocab.json", "merges.txt" }) File.Copy(TestPaths.Data("gpt2-tokenizer", f), Path.Combine(dir, f));
        Assert.Equal([50256L], ExcludedTokens.SpecialTokenIds(Tokenizer.FromFolder(dir)));
    }
}
