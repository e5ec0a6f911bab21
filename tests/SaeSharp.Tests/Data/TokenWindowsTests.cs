using SaeSharp.Data;
using SaeSharp.Tests.Tokenizers;
using SaeSharp.Tokenizers;

namespace SaeSharp.Tests.Data;

public class TokenWindowsTests
{
    private static readonly long[][] Docs = [[5, 6, 7], [8, 9], [10, 11, 12, 13, 14, 15, 16]];

    [Fact]
    public void Bos_starts_windows_and_separates_documents_like_saelens()
    {
        // context 4, BOS 0 as begin-batch and separator (SAELens ActivationsStore with prepend_bos):
        // [0 5 6 7] | [0 8 9] + separator fills the window -> [0 8 9 0] | doc 3 continues: [0 10 11 12] [0 13 14 15]
        // | [0 16] is a partial window and is dropped.
        var windows = TokenWindows.ConcatAndBatch(Docs, 4, beginBatchTokenId: 0, sequenceSeparatorTokenId: 0).ToList();
        Assert.Equal(
            new long[][] { [0, 5, 6, 7], [0, 8, 9, 0], [0, 10, 11, 12], [0, 13, 14, 15] },
            windows);
    }

    [Fact]
    public void Without_special_tokens_documents_are_plainly_concatenated()
    {
        var windows = TokenWindows.ConcatAndBatch(Docs, 4).ToList();
        Assert.Equal(new long[][] { [5, 6, 7, 8], [9, 10, 11, 12], [13, 14, 15, 16] }, windows);
    }

    [Fact]
    public void Tokens_already_equal_to_bos_or_separator_are_not_doubled()
    {
        // doc 1 starts with BOS: no second BOS. doc 2 starts with the separator: none inserted.
        // A document that continues into a new window with a BOS token at the cut gets no extra BOS either.
        long[][] docs = [[0, 5], [0, 6, 7, 8, 0, 9]];
        var windows = TokenWindows.ConcatAndBatch(docs, 3, beginBatchTokenId: 0, sequenceSeparatorTokenId: 0).ToList();
        // [0 5] + doc2 -> first token is 0 = separator, no prefix: [0 5 0] | rest 6 7 8 0 9 -> [0 6 7] | [0 8 0]
        // | rest 9 -> [0 9] dropped
        Assert.Equal(new long[][] { [0, 5, 0], [0, 6, 7], [0, 8, 0] }, windows);
        // cut right before a BOS: [0 1 2] | the continuation starts with 0 = BOS, so no BOS is added: [0 3 4]
        long[][] docs2 = [[1, 2, 0, 3, 4]];
        Assert.Equal(new long[][] { [0, 1, 2], [0, 3, 4] }, TokenWindows.ConcatAndBatch(docs2, 3, beginBatchTokenId: 0).ToList());
        // Above, a doubled separator would be cut off at the window's end; mid-window it shows. Separator 0, no BOS:
        // [5 6] + [0 7 8] (starts with the separator: none added) + separator + [9].
        long[][] docs3 = [[5, 6], [0, 7, 8], [9]];
        Assert.Equal(new long[][] { [5, 6, 0, 7, 8, 0, 9] }, TokenWindows.ConcatAndBatch(docs3, 7, sequenceSeparatorTokenId: 0).ToList());
        // Begin-sequence 1: doc [1 5] already starts with it, doc [6] gets it.
        long[][] docs4 = [[1, 5], [6]];
        Assert.Equal(new long[][] { [1, 5, 1, 6] }, TokenWindows.ConcatAndBatch(docs4, 4, beginSequenceTokenId: 1).ToList());
    }

    [Fact]
    public void Begin_sequence_token_marks_each_document()
    {
        // begin-batch 0, begin-sequence 1, separator 2, context 5:
        // doc [5 6]: prefix [0 1] -> [0 1 5 6]; doc [7 8 9]: prefix [2 1] -> [0 1 5 6 2] (sep fits, BOS-of-seq not)
        // then [0 7 8 9] (continuation: no begin-sequence) ... dropped as partial.
        long[][] docs = [[5, 6], [7, 8, 9]];
        var windows = TokenWindows.ConcatAndBatch(docs, 5, 0, 1, 2).ToList();
        Assert.Equal(new long[][] { [0, 1, 5, 6, 2] }, windows);
    }

    [Fact]
    public void Disable_concat_gives_one_window_per_long_enough_document()
    {
        long[][] docs = [[5, 6, 7], [8, 9], [0, 1, 2, 3], [4, 5, 6, 7, 8]];
        var windows = TokenWindows.ConcatAndBatch(docs, 4, beginBatchTokenId: 0, disableConcatSequences: true).ToList();
        // [5 6 7] has 3 = context-1 tokens -> [0 5 6 7]; [8 9] too short; [0 1 2 3] already starts with BOS;
        // [4 5 6 7 8] -> [0 4 5 6]
        Assert.Equal(new long[][] { [0, 5, 6, 7], [0, 1, 2, 3], [0, 4, 5, 6] }, windows);
    }

    [Fact]
    public void Text_documents_are_tokenized_without_bos_and_joined_with_bos()
    {
        var gpt2 = TestPaths.Gpt2;
        // "Hello world" is [15496, 995] (cases.json); three documents, context 4:
        // [B H W] + sep -> [B H W B] | [B H W] + sep -> [B H W B] | [B H W] dropped
        var windows = TokenWindows.TokenizeAndConcatenate(["Hello world", "Hello world", "Hello world"], gpt2, 4).ToList();
        Assert.Equal(new long[][] { [50256, 15496, 995, 50256], [50256, 15496, 995, 50256] }, windows);
        // Without prepend_bos SAELens v6 still separates documents with BOS (sequence_separator_token defaults to "bos",
        // whatever prepend_bos says): [H W] + [B H] | [W] dropped
        var plain = TokenWindows.TokenizeAndConcatenate(["Hello world", "Hello world"], gpt2, 4, prependBos: false).ToList();
        Assert.Equal(new long[][] { [15496, 995, 50256, 15496] }, plain);
    }

    /// <summary>Qwen 3's tokenizer names an EOS (<c>&lt;|im_end|&gt;</c>, 151645) and no BOS. TransformerLens's
    /// <c>set_tokenizer</c> then sets <c>bos_token = eos_token</c>, so SAELens's windows on a Qwen 3 model (prepend_bos true,
    /// separator "bos", e.g. the mwhanna transcoders' configs) start with and separate documents by 151645.</summary>
    [Fact]
    public void A_tokenizer_without_bos_prepends_and_separates_with_its_eos_as_transformer_lens()
    {
        var qwen = Tokenizer.FromFolder(HubTokenizerTests.Qwen3Dir.Value);
        Assert.Null(qwen.BosTokenId);
        const long E = 151645;
        // "Hello, world" is [9707 11 1879] (tests/data/tokenizers/qwen3-ids.json: "Hello, world!" is 9707 11 1879 0).
        // context 5: [E H , W] + separator E → [E H , W E] | [E H , W] dropped (partial)
        Assert.Equal(new long[][] { [E, 9707, 11, 1879, E] },
            TokenWindows.TokenizeAndConcatenate(["Hello, world", "Hello, world"], qwen, 5).ToList());
        // without prepend_bos the separator stays: [H , W E H] | [, W] dropped
        Assert.Equal(new long[][] { [9707, 11, 1879, E, 9707] },
            TokenWindows.TokenizeAndConcatenate(["Hello, world", "Hello, world"], qwen, 5, prependBos: false).ToList());
        // a prompt (TransformerLens's to_tokens with prepend_bos)
        Assert.Equal(new long[] { E, 9707, 11, 1879 }, qwen.EncodePrompt("Hello, world", prependBos: true));
    }

    /// <summary>FromPath passes prepend_bos on: a text file read with it off gives windows that do not start with BOS
    /// (the same windows as TokenizeAndConcatenate above), with it on, windows that do.</summary>
    [Fact]
    public void FromPath_honours_prepend_bos_off()
    {
        string path = Path.Combine(TestPaths.TempDir(), "two.txt");
        File.WriteAllText(path, "Hello world\nHello world\n");
        // "Hello world" is [15496, 995]: [H W] + [B H] | [W] dropped
        Assert.Equal(new long[][] { [15496, 995, 50256, 15496] }, TokenWindows.FromPath(path, TestPaths.Gpt2, 4, prependBos: false).ToList());
        // [B H W] + sep → [B H W B] | [B H W] dropped
        Assert.Equal(new long[][] { [50256, 15496, 995, 50256] }, TokenWindows.FromPath(path, TestPaths.Gpt2, 4, prependBos: true).ToList());
    }

    /// <summary>A .txt of empty lines has rows (datasets reads each as an empty document) but no text: the error says
    /// that, naming the file.</summary>
    [Fact]
    public void A_txt_of_empty_lines_is_an_error_saying_it_has_no_text()
    {
        string path = Path.Combine(TestPaths.TempDir(), "empty-lines.txt");
        File.WriteAllText(path, "\n\n\n");
        var e = Assert.Throws<SaeSharpException>(() => TokenWindows.FromPath(path, TestPaths.Gpt2, 4).ToList());
        Assert.Equal($"dataset file '{path}' has no rows with text or tokens", e.Message);
    }

    /// <summary>A .jsonl whose every row's text is "" (or blank) has rows and a text field but no token: an error naming the
    /// file, the row count and the field, not "no context windows" later. One row with text is enough to make windows.</summary>
    [Fact]
    public void A_jsonl_whose_every_text_is_empty_is_an_error_naming_the_file_and_field()
    {
        string path = Path.Combine(TestPaths.TempDir(), "empty-texts.jsonl");
        File.WriteAllText(path, "{\"text\": \"\"}\n{\"text\": \"  \"}\n{\"text\": \"\"}\n");
        var e = Assert.Throws<SaeSharpException>(() => TokenWindows.FromPath(path, TestPaths.Gpt2, 4).ToList());
        Assert.Equal($"dataset '{path}': the text of all its 3 row(s) is empty (field 'text'); give a dataset with text, or --text-field naming the column that holds it", e.Message);
        File.WriteAllText(path, "{\"text\": \"\"}\n{\"text\": \"Hello world Hello world\"}\n");
        Assert.NotEmpty(TokenWindows.FromPath(path, TestPaths.Gpt2, 4).ToList());
    }

    [Fact]
    public void A_window_with_no_room_after_its_bos_is_an_error_not_endless_bos_only_windows()
    {
        // Context 1 with a BOS: the BOS fills every window and no document token ever fits, so SAELens's loop (and
        // ours was the same) yields [BOS] forever without moving through the data: sae cache --context-size 1 wrote
        // a cache of BOS activations only. It is an error; without a BOS, context 1 is simply one token per window.
        long[][] docs = [[5, 6, 7]];
        var e = Assert.Throws<SaeSharpException>(() => TokenWindows.ConcatAndBatch(docs, 1, beginBatchTokenId: 0).Take(10).ToList());
        Assert.Contains("context size 1", e.Message);
        Assert.Throws<SaeSharpException>(() => TokenWindows.TokenizeAndConcatenate(["Hello world"], TestPaths.Gpt2, 1).Take(10).ToList());
        // begin-batch 0 and begin-sequence 1 leave no room in a window of 2 either
        Assert.Throws<SaeSharpException>(() => TokenWindows.ConcatAndBatch(docs, 2, 0, 1).Take(10).ToList());
        Assert.Equal(new long[][] { [5], [6], [7] }, TokenWindows.ConcatAndBatch(docs, 1).ToList());
        // a document that starts with the BOS needs no prefix and fits: [0] | [5] ... as SAELens gives
        Assert.Equal(new long[][] { [0, 5], [0, 6] }, TokenWindows.ConcatAndBatch([[0, 5, 6]], 2, beginBatchTokenId: 0).ToList());
    }

    [Fact]
    public void Pretokenized_rows_are_cut_to_the_context()
    {
        long[][] rows = [[1, 2, 3, 4, 5], [6, 7, 8]];
        Assert.Equal(new long[][] { [1, 2, 3], [6, 7, 8] }, TokenWindows.FromPretokenized(rows, 3).ToList());
        var e = Assert.Throws<SaeSharpException>(() => TokenWindows.FromPretokenized(rows, 4).ToList());
        Assert.Contains("row 1", e.Message);
    }

    [Fact]
    public void Windows_are_produced_lazily()
    {
        static IEnumerable<long[]> Endless()
        {
            for (long i = 0; ; i++) yield return [i];
        }
        var first = TokenWindows.ConcatAndBatch(Endless(), 2).Take(2).ToList();
        Assert.Equal(new long[][] { [0, 1], [2, 3] }, first);
    }
}
