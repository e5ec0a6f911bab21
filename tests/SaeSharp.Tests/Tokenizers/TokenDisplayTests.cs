using SaeSharp.Analysis;
using SaeSharp.LanguageModels;
using SaeSharp.Tokenizers;

namespace SaeSharp.Tests.Tokenizers;

/// <summary>How tokens read in dashboards: control tokens as themselves, ordinary tokens (and UNK, which stands for a word)
/// with their leading space.</summary>
public class TokenDisplayTests
{
    [Fact]
    public void Word_level_control_tokens_read_as_themselves_and_words_keep_their_space()
    {
        var tok = Tokenizer.FromFolder(BuiltinModel.Folder);
        int eot = tok.TokenToId("<|endoftext|>")!.Value, unk = tok.TokenToId("<unk>")!.Value, the = tok.TokenToId("the")!.Value;
        Assert.Equal("<|endoftext|>", tok.TokenText(eot));
        Assert.Equal(" <unk>", tok.TokenText(unk)); // it stands for a word: decoding puts a space in front of it
        Assert.Equal(" the", tok.TokenText(the)); // word-level decoding joins words with spaces
        string line = DashboardWriter.TokenLine([tok.TokenText(eot), tok.TokenText(the)], [0f, 1f], 1);
        Assert.Contains(">&lt;|endoftext|&gt;</span>", line, StringComparison.Ordinal);
        Assert.DoesNotContain("> &lt;|endoftext|&gt;", line, StringComparison.Ordinal);
        Assert.Contains("> the</span>", line, StringComparison.Ordinal);
    }

    [Fact]
    public void Word_level_tokens_shown_in_a_row_read_as_the_decoded_text_unknown_words_included()
    {
        var tok = Tokenizer.FromFolder(BuiltinModel.Folder);
        int[] ids = tok.Encode("Mia saw a zebra and a xylophone .", parseSpecialTokens: false);
        Assert.Equal(2, ids.Count(i => i == tok.UnkTokenId)); // zebra, xylophone: not in the built-in vocabulary
        // Hugging Face's WordLevel decoding without a decoder joins every token with one space.
        Assert.Equal("Mia saw a <unk> and a <unk> .", tok.Decode(ids));
        Assert.Equal(" Mia saw a <unk> and a <unk> .", string.Concat(ids.Select(tok.TokenText)));
    }

    [Fact]
    public void Gpt2_endoftext_has_no_space_and_the_keeps_its_leading_space()
    {
        var tok = TestPaths.Gpt2;
        Assert.Equal("<|endoftext|>", tok.TokenText(50256));
        Assert.Equal(" the", tok.TokenText(262));   // "Ġthe"
        Assert.Equal("Hello", tok.TokenText(15496));
    }
}
