using SaeSharp.Tokenizers;

namespace SaeSharp.Tests.Tokenizers;

public sealed class WordLevelTokenizerTests : IDisposable
{
    private readonly string _dir = Directory.CreateTempSubdirectory("wordlevel").FullName;

    public void Dispose() => Directory.Delete(_dir, recursive: true);

    private ITextTokenizer Load(string json)
    {
        File.WriteAllText(Path.Combine(_dir, "tokenizer.json"), json);
        return Tokenizer.FromFolder(_dir);
    }

    // As Hugging Face tokenizers serialises WordLevel(vocab, unk_token="[UNK]") with pre_tokenizer Whitespace().
    private const string WhitespaceJson = """
        {"version":"1.0","truncation":null,"padding":null,
         "added_tokens":[{"id":0,"content":"[UNK]","single_word":false,"lstrip":false,"rstrip":false,"normalized":false,"special":true}],
         "normalizer":null,"pre_tokenizer":{"type":"Whitespace"},"post_processor":null,"decoder":null,
         "model":{"type":"WordLevel","vocab":{"[UNK]":0,"hello":1,",":2,"world":3,"!":4,",!":5},"unk_token":"[UNK]"}}
        """;

    [Fact]
    public void Whitespace_pre_tokenizer_groups_punctuation_runs_like_hf()
    {
        var tok = Load(WhitespaceJson);
        // \w+|[^\w\s]+ : "hello,!" is "hello" then ",!".
        Assert.Equal([1, 5, 3, 4], tok.Encode("hello,! world!"));
        Assert.Equal([1, 0, 3], tok.Encode("hello there world"));
        Assert.Equal("hello , world !", tok.Decode([1, 2, 3, 4]));
        Assert.Equal("hello world", tok.Decode([0, 1, 3], skipSpecialTokens: true));
        Assert.Equal(6, tok.VocabSize);
    }

    [Fact]
    public void Encoding_with_special_tokens_adds_none()
    {
        // ITextTokenizer's tokenizer(text): a word-level tokenizer adds no BOS/EOS, so the ids are Encode's.
        ITextTokenizer tok = Load(WhitespaceJson);
        Assert.Equal(tok.Encode("hello world!"), tok.EncodeWithSpecialTokens("hello world!"));
    }

    [Fact]
    public void WhitespaceSplit_then_Punctuation_isolates_each_mark()
    {
        var tok = Load("""
            {"added_tokens":[{"id":0,"content":"<|endoftext|>","special":true},{"id":1,"content":"<unk>","special":true}],
             "normalizer":null,
             "pre_tokenizer":{"type":"Sequence","pretokenizers":[{"type":"WhitespaceSplit"},{"type":"Punctuation","behavior":"Isolated"}]},
             "model":{"type":"WordLevel","vocab":{"<|endoftext|>":0,"<unk>":1,"at":2,"7":3,":":4,"30":5,"\"":6,"hi":7,",":8},"unk_token":"<unk>"}}
            """);
        Assert.Equal([2, 3, 4, 5], tok.Encode("at 7:30"));
        Assert.Equal([6, 7, 8, 6], tok.Encode("\"hi,\""));
        Assert.Equal([7, 0, 7], tok.Encode("hi<|endoftext|>hi"));
        Assert.Equal([7, 1, 1, 1, 1, 1, 7], tok.Encode("hi <|endoftext|> hi", parseSpecialTokens: false)); // < | endoftext | > split as text
    }

    [Fact]
    public void Unknown_word_without_unk_token_is_a_clear_error()
    {
        var tok = Load("""{"model":{"type":"WordLevel","vocab":{"a":0}},"pre_tokenizer":{"type":"WhitespaceSplit"}}""");
        Assert.Equal([0, 0], tok.Encode("a a"));
        var e = Assert.Throws<SaeSharpException>(() => tok.Encode("a b"));
        Assert.Contains("'b'", e.Message);
        Assert.Throws<SaeSharpException>(() => Load("""{"model":{"type":"WordLevel","vocab":{"a":0}},"pre_tokenizer":{"type":"Metaspace"}}"""));
    }
}
