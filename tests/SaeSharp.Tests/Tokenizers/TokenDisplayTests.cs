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

    // "x 🦙 龘 naïve\n ☃": 🦙 (F0 9F A6 99), 龘 (E9 BE 98) and ☃ (E2 98 83) are split over byte tokens by every tokenizer.
    private const string SplitText = "x \U0001F999 \u9F98 na\u00EFve\n \u2603";

    [Fact]
    public void Gpt2_byte_fragments_read_as_SAEDashboard_shows_them_with_the_leading_space_and_the_joined_text_intact()
    {
        var tok = TestPaths.Gpt2;
        int[] ids = tok.Encode(SplitText);
        Assert.Equal([87, 12520, 99, 247, 220, 11737, 246, 41492, 198, 34719, 225], ids);
        // "ĠðŁ" (space, F0 9F): its Ġ read as the space, the bytes as their vocabulary characters (SAEDashboard's vocab_dict)
        Assert.Equal(["x", " ðŁ", "¦", "Ļ", " ", "é¾", "ĺ", " naïve", "\n", " âĺ", "ĥ"], ids.Select(tok.TokenText));
        Assert.Equal(SplitText, tok.Decode(ids)); // joined, the characters come back whole
        Assert.Equal(" ðŁ", NeuronpediaExport.VocabString(tok, 12520));
        Assert.Equal(" naÃ¯ve", NeuronpediaExport.VocabString(tok, 41492)); // the runner keeps the vocabulary string
    }

    [Fact]
    public void Qwen3_tokens_read_with_their_spaces_byte_fragments_as_vocabulary_text_and_newlines_visible()
    {
        var tok = Tokenizer.FromFolder(HubTokenizerTests.Qwen3Dir.Value);
        int[] ids = tok.Encode(SplitText);
        Assert.Equal(["x", "ĠðŁ", "¦", "Ļ", "Ġé", "¾", "ĺ", "ĠnaÃ¯", "ve", "Ċ", "Ġâĺ", "ĥ"], ids.Select(i => tok.IdToToken(i)));
        Assert.Equal(["x", " ðŁ", "¦", "Ļ", " é", "¾", "ĺ", " naï", "ve", "\n", " âĺ", "ĥ"], ids.Select(tok.TokenText));
        Assert.Equal(SplitText, tok.Decode(ids));
        Assert.Equal(["x", " ðŁ", "¦", "Ļ", " é", "¾", "ĺ", " naï", "ve", "↵", " âĺ", "ĥ"], ids.Select(i => DashboardWriter.Display(tok.TokenText(i))));
        int eot = tok.TokenToId("<|endoftext|>")!.Value, amp = tok.TokenToId("&")!.Value, quote = tok.TokenToId("Ġ\"")!.Value;
        string line = DashboardWriter.TokenLine([tok.TokenText(eot), tok.TokenText(amp), tok.TokenText(quote)], [0f, 0f, 0f], 1);
        Assert.Contains(">&lt;|endoftext|&gt;</span>", line, StringComparison.Ordinal);
        Assert.Contains(">&amp;</span>", line, StringComparison.Ordinal);
        Assert.Contains("> &quot;</span>", line, StringComparison.Ordinal);
    }

    [SkippableTheory]
    [InlineData("llama2")] // Strip decoder: "▁x" decodes alone to "x", "▁" to ""
    [InlineData("gemma3")] // no Strip: "▁x" decodes alone to " x"
    public void SentencePiece_spaces_read_as_spaces_and_byte_fallback_tokens_as_their_vocabulary_strings(string name)
    {
        var tok = Tokenizer.FromFolder(HubTokenizerTests.NpmTokenizers.Folder(name));
        int[] ids = tok.Encode(SplitText);
        // 🦙 and 龘 are not in either vocabulary: four and three byte-fallback tokens, each after a lone "▁"
        // Llama 2's normaliser puts a ▁ in front of the text: its first token is "▁x", read " x" as in running text
        string[] expected = [name == "llama2" ? " x" : "x", " ", "<0xF0>", "<0x9F>", "<0xA6>", "<0x99>", " ", "<0xE9>", "<0xBE>", "<0x98>"];
        Assert.Equal(expected, ids.Take(expected.Length).Select(tok.TokenText));
        int newline = tok.TokenToId(name == "llama2" ? "<0x0A>" : "\n")!.Value;
        Assert.Equal("↵", DashboardWriter.Display(tok.TokenText(newline)));
        Assert.Equal(" na", tok.TokenText(tok.TokenToId("▁na")!.Value));
        Assert.Equal("▁", NeuronpediaExport.VocabString(tok, tok.TokenToId("▁")!.Value)); // the runner leaves ▁ as it is
        Assert.Equal(SplitText, tok.Decode(ids)); // joined, the characters come back whole
    }

    [SkippableTheory]
    [InlineData("llama2")] // Strip decoder: "▁world" decoded alone loses its space
    [InlineData("gemma3")]
    [InlineData("qwen3")]
    public void A_continuation_reads_as_the_text_after_the_prompt_with_its_leading_space(string name)
    {
        var tok = Tokenizer.FromFolder(name == "qwen3" ? HubTokenizerTests.Qwen3Dir.Value : HubTokenizerTests.NpmTokenizers.Folder(name));
        int[] prompt = tok.EncodeWithSpecialTokens("Hello"), all = tok.EncodeWithSpecialTokens("Hello world, café");
        Assert.Equal(prompt, all.Take(prompt.Length)); // the prompt's tokens start the longer text's
        int[] continuation = all[prompt.Length..];
        Assert.Equal(" world, café", tok.DecodeContinuation(prompt, continuation));
        if (name == "llama2") Assert.Equal("world, café", tok.Decode(continuation)); // what decoding it alone showed
    }

    [Fact]
    public void Whitespace_and_control_tokens_are_visible_on_their_own()
    {
        var tok = TestPaths.Gpt2;
        // GPT-2's "č" (\r), "Ċ" (\n), "ĉ" (\t), "ĕ" (0x15), "Ġ" (a space)
        Assert.Equal(["⏎", "↵", "⇥", "␕", " "], new[] { 201, 198, 197, 209, 220 }.Select(i => TokenDisplay.Visible(tok.TokenText(i))));
        Assert.Equal("∅", TokenDisplay.Visible(""));
    }
}
