using SaeSharp.Tokenizers;
using System.Text.Json.Nodes;
using SaeSharp.Models;
using SaeSharp.Tests.Models;
using static TorchSharp.torch;

namespace SaeSharp.Tests.Tokenizers;

/// <summary>A hand-written SentencePiece-style tokenizer.json (Llama 2 layout) with hand-computed ids, and the README's Gemma 2 sample.</summary>
public class SentencePieceTokenizerTests : ModelTestBase
{
    /// <summary>Llama 2's tokenizer.json shape: Prepend ▁ + Replace " "→▁ normalizer, no pre-tokenizer, byte fallback,
    /// &lt;s&gt; template, Replace/ByteFallback/Fuse/Strip decoder.</summary>
    internal static void WriteTokenizer(string dir)
    {
        Directory.CreateDirectory(dir);
        var vocab = new JsonObject { ["<unk>"] = 0, ["<s>"] = 1, ["</s>"] = 2, ["▁"] = 3, ["a"] = 4, ["b"] = 5, ["▁a"] = 6, ["ab"] = 7, ["▁ab"] = 8, ["<0x0A>"] = 9, ["<0xC3>"] = 10, ["<0xA9>"] = 11 };
        JsonObject Special(int id, string c) => new() { ["id"] = id, ["content"] = c, ["single_word"] = false, ["lstrip"] = false, ["rstrip"] = false, ["normalized"] = false, ["special"] = true };
        var json = new JsonObject
        {
            ["version"] = "1.0",
            ["added_tokens"] = new JsonArray(Special(0, "<unk>"), Special(1, "<s>"), Special(2, "</s>")),
            ["normalizer"] = new JsonObject
            {
                ["type"] = "Sequence",
                ["normalizers"] = new JsonArray(new JsonObject { ["type"] = "Prepend", ["prepend"] = "▁" },
                    new JsonObject { ["type"] = "Replace", ["pattern"] = new JsonObject { ["String"] = " " }, ["content"] = "▁" }),
            },
            ["pre_tokenizer"] = null,
            ["post_processor"] = new JsonObject
            {
                ["type"] = "TemplateProcessing",
                ["single"] = new JsonArray(new JsonObject { ["SpecialToken"] = new JsonObject { ["id"] = "<s>", ["type_id"] = 0 } },
                    new JsonObject { ["Sequence"] = new JsonObject { ["id"] = "A", ["type_id"] = 0 } }),
                ["special_tokens"] = new JsonObject { ["<s>"] = new JsonObject { ["id"] = "<s>", ["ids"] = new JsonArray(1), ["tokens"] = new JsonArray("<s>") } },
            },
            ["decoder"] = new JsonObject
            {
                ["type"] = "Sequence",
                ["decoders"] = new JsonArray(
                    new JsonObject { ["type"] = "Replace", ["pattern"] = new JsonObject { ["String"] = "▁" }, ["content"] = " " },
                    new JsonObject { ["type"] = "ByteFallback" }, new JsonObject { ["type"] = "Fuse" },
                    new JsonObject { ["type"] = "Strip", ["content"] = " ", ["start"] = 1, ["stop"] = 0 }),
            },
            ["model"] = new JsonObject
            {
                ["type"] = "BPE", ["unk_token"] = "<unk>", ["fuse_unk"] = true, ["byte_fallback"] = true,
                ["vocab"] = vocab, ["merges"] = new JsonArray("▁ a", "a b", "▁a b"),
            },
        };
        File.WriteAllText(Path.Combine(dir, "tokenizer.json"), json.ToJsonString());
        File.WriteAllText(Path.Combine(dir, "tokenizer_config.json"), """{"bos_token": "<s>", "eos_token": "</s>", "add_bos_token": true}""");
    }

    [Fact]
    public void MetaspaceByteFallbackAndMergesByRank()
    {
        WriteTokenizer(Dir);
        var tok = (SaeSharp.Tokenizers.BpeTokenizer)SaeSharp.Tokenizers.Tokenizer.FromFolder(Dir);
        Assert.False(tok.IsByteLevel);
        // "ab\nab" → "▁ab\nab": ▁+a (rank 0), a+b (rank 1), ▁a+b (rank 2); "\n" → <0x0A> by byte fallback.
        Assert.Equal(new[] { 8, 9, 7 }, tok.Encode("ab\nab"));
        Assert.Equal("ab\nab", tok.Decode([8, 9, 7]));
        // "é" is two byte tokens; "z" has neither a token nor all its byte tokens: unk, and runs of unk fuse.
        Assert.Equal(new[] { 3, 10, 11, 0 }, tok.Encode("éz"));
        Assert.Equal(new[] { 3, 0, 6 }, tok.Encode("zz a")); // ▁ z z ▁ a → ▁, unk (fused), ▁a
        // Special tokens split the text and each gap gets the dummy prefix, as in Hugging Face (legacy Llama).
        Assert.Equal(new[] { 6, 1, 8 }, tok.Encode("a<s>ab"));
        Assert.Equal(new[] { 1, 8 }, tok.EncodeWithSpecialTokens("ab"));
        Assert.Equal((1, 2, true), (tok.BosTokenId, tok.EosTokenId, tok.AddBosToken));
        Assert.Equal("<s> ab", tok.Decode([1, 8]));
        Assert.Equal("ab", tok.Decode([1, 8], skipSpecialTokens: true));
    }

    [Fact]
    public void ReadmeGemma2Sample()
    {
        var folder = TinyDecoders.Write(Sub("gemma-2-2b"), LlamaFamilyTests.Spec("gemma2") with { Dtype = ScalarType.BFloat16 });
        WriteTokenizer(folder);
        using var model = ModelLoader.FromPretrained(folder, ModelLoader.ParseDtype("bf16"));
        var tok = SaeSharp.Tokenizers.Tokenizer.FromFolder(folder);   // the README's line: ITextTokenizer, no cast
        using var tokens = tensor(tok.EncodeWithSpecialTokens("ab ab\na").Select(i => (long)i).ToArray()).unsqueeze(0);
        var (logits, cache) = model.RunWithCache(tokens, ["blocks.1.hook_resid_post"]);
        using (cache)
        {
            Assert.Equal(ScalarType.BFloat16, cache["blocks.1.hook_resid_post"].dtype);
            Assert.Equal(new long[] { 1, tokens.shape[1], 19 }, logits!.shape);
        }
    }

    [Fact]
    public void A_token_alone_reads_as_in_running_text()
    {
        string dir = Path.Combine(Dir, "sp-display");
        WriteTokenizer(dir);
        var tok = SaeSharp.Tokenizers.Tokenizer.FromFolder(dir);
        // "▁ab" decoded alone loses its ▁ to the Strip decoder; in running text it begins a word: " ab".
        Assert.Equal("ab", tok.Decode([8]));
        Assert.Equal(" ab", tok.TokenText(8));
        Assert.Equal("b", tok.TokenText(5));                        // inside a word: no space
        Assert.Equal("<0xC3>", tok.TokenText(10));                  // half of "é": its vocabulary string, not U+FFFD
        Assert.Equal("ab ab", string.Concat(new[] { 8, 8 }.Select(tok.TokenText)).Trim());
        // Control characters are drawn as control pictures, so a table's columns stay in place.
        Assert.Equal("␎x␡↵", SaeSharp.Analysis.DashboardWriter.Display("\u000Ex\u007F\n"));
    }
}
