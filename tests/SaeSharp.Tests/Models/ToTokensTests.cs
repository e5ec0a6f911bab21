using System.Text.Json;
using SaeSharp.LanguageModels;
using SaeSharp.Models;
using SaeSharp.Tests.Tokenizers;
using SaeSharp.Tokenizers;
using static TorchSharp.torch;

namespace SaeSharp.Tests.Models;

/// <summary>TransformerLens's <c>to_tokens</c> / <c>to_string</c> / <c>to_str_tokens</c> on a model loaded from a folder.</summary>
public class ToTokensTests : ModelTestBase
{
    private HookedTransformer Gpt2WithTokenizer()
    {
        string dir = TinyModels.WriteGpt2(Sub("gpt2tok"), seed: 3, nLayer: 1, nEmbd: 16, nHead: 4, vocab: 50257, nPositions: 64);
        foreach (var f in new[] { "vocab.json", "merges.txt" }) File.Copy(TestPaths.Data("gpt2-tokenizer", f), Path.Combine(dir, f));
        return ModelLoader.FromPretrained(dir);
    }

    private static long[] Row(Tensor t, int i) => t[i].data<long>().ToArray();

    [Fact]
    public void Gpt2_to_tokens_matches_the_reference_ids_with_endoftext_as_bos()
    {
        using var model = Gpt2WithTokenizer();
        using var doc = JsonDocument.Parse(File.ReadAllText(TestPaths.Data("gpt2-tokenizer", "cases.json")));
        foreach (var c in doc.RootElement.EnumerateArray())
        {
            string text = c.GetProperty("text").GetString()!;
            long[] expected = c.GetProperty("ids").EnumerateArray().Select(e => e.GetInt64()).ToArray();
            using var plain = model.ToTokens(text, prependBos: false);
            Assert.Equal(new long[] { 1, expected.Length }, plain.shape);
            Assert.Equal(expected, Row(plain, 0));
            using var withBos = model.ToTokens(text);
            Assert.Equal([50256L, .. expected], Row(withBos, 0));
            Assert.Equal("<|endoftext|>" + text, model.ToString(withBos));
        }
        Assert.Equal(["<|endoftext|>", "Hello", " world"], model.ToStringTokens("Hello world"));
        using var t = model.ToTokens("Hello world", prependBos: false);
        Assert.Equal(["Hello", " world"], model.ToStringTokens(t));
    }

    [Fact]
    public void Gpt2_batch_is_padded_on_the_chosen_side_with_eos_and_a_mask()
    {
        using var model = Gpt2WithTokenizer();
        using var right = model.ToTokens(["Hello world", "Hello"], out var rightMask);
        using (rightMask)
        {
            Assert.Equal(new long[] { 50256, 15496, 995 }, Row(right, 0));
            Assert.Equal(new long[] { 50256, 15496, 50256 }, Row(right, 1));
            Assert.Equal(new long[] { 1, 1, 0 }, Row(rightMask, 1));
        }
        using var left = model.ToTokens(["Hello world", "Hello"], out var leftMask, paddingSide: PaddingSide.Left);
        using (leftMask)
        {
            Assert.Equal(new long[] { 50256, 50256, 15496 }, Row(left, 1));
            Assert.Equal(new long[] { 0, 1, 1 }, Row(leftMask, 1));
            Assert.Equal(new long[] { 1, 1, 1 }, Row(leftMask, 0));
        }
        Assert.Equal(["<|endoftext|>Hello world", "<|endoftext|>Hello<|endoftext|>"], model.ToStrings(right));
    }

    [Fact]
    public void Builtin_model_to_tokens_is_bos_then_its_tokenizers_encode()
    {
        using var model = BuiltinModel.Load();
        var tok = Tokenizer.FromFolder(BuiltinModel.Folder);
        const string text = "The girl was at the end";
        int[] ids = tok.Encode(text);
        // Word-level with a whitespace split: each word is its id in tokenizer.json's vocab.
        using var json = JsonDocument.Parse(File.ReadAllText(Path.Combine(BuiltinModel.Folder, "tokenizer.json")));
        var vocab = json.RootElement.GetProperty("model").GetProperty("vocab");
        Assert.Equal(text.Split(' ').Select(w => vocab.GetProperty(w).GetInt32()), ids);
        using var tokens = model.ToTokens(text);
        Assert.Equal(0, tok.BosTokenId); // tokenizer_config.json: bos_token <|endoftext|>, id 0 in tokenizer.json
        Assert.Equal([0L, .. ids.Select(i => (long)i)], Row(tokens, 0));
        Assert.Equal(text, model.ToString(model.ToTokens(text, prependBos: false)));
        Assert.Equal(ids.Length + 1, model.ToStringTokens(text).Count);
    }

    [Fact]
    public void A_model_without_tokenizer_files_says_so()
    {
        using var model = Gpt2();
        var e = Assert.Throws<SaeSharpException>(() => model.ToTokens("Hello"));
        Assert.Contains("no tokenizer", e.Message, StringComparison.Ordinal);
        Assert.Contains("vocab.json", e.Message, StringComparison.Ordinal);
        model.Tokenizer = TestPaths.Gpt2;
        using var t = model.ToTokens("Hello world", prependBos: false);
        Assert.Equal(new long[] { 15496, 995 }, Row(t, 0));
    }

    [Fact]
    public void Get_token_position_finds_the_first_or_last_occurrence_counting_bos()
    {
        using var model = Gpt2WithTokenizer();
        // Main Demo cell 85: [<|endoftext|>, "The", " cat", " sat", " on", " the", " mat"]: " cat" at 2.
        Assert.Equal(2, model.GetTokenPosition(" cat", "The cat sat on the mat"));
        Assert.Equal(1, model.GetTokenPosition(" cat", "The cat sat on the mat", prependBos: false));
        // [BOS, "The", " cat", " and", " the", " cat"]: first 2, last 5.
        Assert.Equal(5, model.GetTokenPosition(" cat", "The cat and the cat", last: true));
        Assert.Equal(2, model.GetTokenPosition(" cat", "The cat and the cat"));
        using var tokens = model.ToTokens("The cat and the cat");
        long cat = model.ToSingleToken(" cat");
        Assert.Equal(3797L, cat);                                              // " cat" in GPT-2's vocabulary
        Assert.Equal(5, model.GetTokenPosition(cat, tokens, last: true));
        Assert.Contains("does not occur", Assert.Throws<SaeSharpException>(() => model.GetTokenPosition(" dog", "The cat sat")).Message);
        Assert.Contains("not a single token", Assert.Throws<SaeSharpException>(() => model.GetTokenPosition(" catastrophically", "The cat")).Message);
    }

    [Fact]
    public void Tokenize_find_prints_the_tokens_positions()
    {
        using (Gpt2WithTokenizer()) { }
        string dir = Directory.GetDirectories(Dir, "gpt2tok*").Single();
        var (exit, output, err) = SaeSharp.Tests.Cli.CliRunner.Run("model", "tokenize", "--model", dir, "--prompt", "The cat and the cat", "--find", " cat");
        Assert.True(exit == 0, err);
        Assert.Contains("[464,3797,290,262,3797]", output);
        Assert.Contains("\" cat\" (id 3797) at position 1 first, 4 last", output);
        var (bad, _, badErr) = SaeSharp.Tests.Cli.CliRunner.Run("model", "tokenize", "--model", dir, "--prompt", "The cat", "--find", " catastrophically");
        Assert.NotEqual(0, bad);
        Assert.Contains("--find: ' catastrophically' is not a single token", badErr);
    }
}
