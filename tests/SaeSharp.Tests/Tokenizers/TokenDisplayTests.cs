using SaeSharp.Analysis;
using SaeSharp.LanguageModels;
using SaeSharp.Tokenizers;

namespace SaeSharp.Tests.Tokenizers;

/// <summary>How tokens read in dashboards: special tokens as themselves, ordinary tokens with their leading space.</summary>
public class TokenDisplayTests
{
    [Fact]
    public void Word_level_special_tokens_read_as_themselves_and_words_keep_their_space()
    {
        var tok = Tokenizer.FromFolder(BuiltinModel.Folder);
        int eot = tok.TokenToId("<|endoftext|>")!.Value, unk = tok.TokenToId("<unk>")!.Value, the = tok.TokenToId("the")!.Value;
        Assert.Equal("<|endoftext|>", tok.TokenText(eot));
        Assert.Equal("<unk>", tok.TokenText(unk));
        Assert.Equal(" the", tok.TokenText(the)); // word-level decoding joins words with spaces
        string line = DashboardWriter.TokenLine([tok.TokenText(eot), tok.TokenText(the)], [0f, 1f], 1);
        Assert.Contains(">&lt;|endoftext|&gt;</span>", line, StringComparison.Ordinal);
        Assert.DoesNotContain("> &lt;|endoftext|&gt;", line, StringComparison.Ordinal);
        Assert.Contains("> the</span>", line, StringComparison.Ordinal);
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
