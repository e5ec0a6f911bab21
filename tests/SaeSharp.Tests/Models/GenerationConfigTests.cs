using SaeSharp.LanguageModels;
using SaeSharp.Models;
using SaeSharp.Tests.Cli;
using SaeSharp.Tokenizers;
using static TorchSharp.torch;

namespace SaeSharp.Tests.Models;

/// <summary><see cref="GenerationConfig"/>: generation stops where Hugging Face's <c>generate</c> stops, at any id of
/// generation_config.json's <c>eos_token_id</c> (else config.json's); <see cref="HookedTransformer.StopTokenIds"/> adds the tokenizer's EOS, where TransformerLens stops.</summary>
public class GenerationConfigTests : ModelTestBase
{
    private const int NewTokens = 8;

    /// <summary>The ids as Hugging Face spells them: an id or a list in generation_config.json, which wins over config.json;
    /// config.json's (or its text_config's, Gemma 3) without it; none at all when neither declares one; a bad id names the file.</summary>
    [Fact]
    public void Eos_ids_come_from_generation_config_then_config_json()
    {
        string Folder(string name, string? generation, string config)
        {
            string d = Sub(name);
            Directory.CreateDirectory(d);
            File.WriteAllText(Path.Combine(d, "config.json"), config);
            if (generation is not null) File.WriteAllText(Path.Combine(d, GenerationConfig.FileName), generation);
            return d;
        }
        Assert.Equal([128001L, 128008, 128009], GenerationConfig.FromFolder(
            Folder("list", """{"eos_token_id": [128001, 128008, 128009], "temperature": 0.6}""", """{"eos_token_id": 128001}""")).EosTokenIds);
        Assert.Equal([1L, 107], GenerationConfig.FromFolder(Folder("config", null, """{"eos_token_id": [1, 107]}""")).EosTokenIds);
        Assert.Equal([1L], GenerationConfig.FromFolder(Folder("text", null, """{"text_config": {"eos_token_id": 1}}""")).EosTokenIds);
        // transformers reads generation_config.json alone when there is one: one that declares no eos_token_id stops nowhere.
        Assert.Empty(GenerationConfig.FromFolder(Folder("silent", """{"do_sample": false}""", """{"eos_token_id": 1}""")).EosTokenIds);
        var none = GenerationConfig.FromFolder(Folder("none", null, """{"model_type": "gpt2"}"""));
        Assert.Empty(none.EosTokenIds);
        var bad = Folder("bad", """{"eos_token_id": ["</s>"]}""", "{}");
        var e = Assert.Throws<SaeSharpException>(() => GenerationConfig.FromFolder(bad));
        Assert.Contains(Path.Combine(bad, GenerationConfig.FileName), e.Message);
        Assert.Contains("eos_token_id", e.Message);
    }

    /// <summary>A loaded tiny GPT-2 whose generation_config.json lists two ids stops each row of a batch at the first new
    /// token that is either (read off each row's free greedy run), filling the row with the token it stopped at.</summary>
    [Fact]
    public void Rows_stop_at_any_generation_config_eos_and_repeat_it()
    {
        long[] first = [9, 4, 17], second = [1, 2, 3];
        long[] freeFirst, freeSecond;
        using (var free = Gpt2(seed: 5))
        using (var g = free.Generate(Tokens(first, second), NewTokens))
        {
            freeFirst = g.Tokens[0].data<long>().Skip(3).ToArray();
            freeSecond = g.Tokens[1].data<long>().Skip(3).ToArray();
        }
        // The first id is the first row's second new token; the second, the second row's first other new token.
        long other = freeSecond.FirstOrDefault(t => t != freeFirst[1], -1);
        Assert.True(other >= 0, $"the second row emits only {freeFirst[1]}");
        long[] ids = [freeFirst[1], other];
        string folder = TinyModels.WriteGpt2(Sub("gpt2-stop"), 5, 2, 16, 4, 50, 32);
        File.WriteAllText(Path.Combine(folder, GenerationConfig.FileName), $$"""{"eos_token_id": [{{ids[0]}}, {{ids[1]}}], "do_sample": true, "temperature": 0.6}""");
        using var m = ModelLoader.FromPretrained(folder);
        Assert.Equal(ids, m.GenerationConfig.EosTokenIds);
        using var stopped = m.Generate(Tokens(first, second), NewTokens, new GenerationOptions { EosTokenIds = m.GenerationConfig.EosTokenIds });
        foreach (var (row, free) in new[] { (0, freeFirst), (1, freeSecond) })
        {
            int stop = Array.FindIndex(free, t => ids.Contains(t));
            Assert.InRange(stop, 0, NewTokens - 1);
            var got = stopped.Tokens[row].data<long>().Skip(3).ToArray();
            Assert.Equal(free.Take(stop + 1), got.Take(stop + 1));
            Assert.All(got.Skip(stop + 1), t => Assert.Equal(free[stop], t));
            Assert.Equal(new GenerationRow(3, stop + 1, GenerationStop.Eos), stopped.Rows[row]);
        }
    }

    /// <summary><c>sae model generate</c> on a copy of the built-in model with a generation_config.json listing an id it never
    /// emits and the third new token of its free run stops right after that token; without the file it runs as before.</summary>
    [Fact]
    public void Model_generate_stops_at_the_second_id_of_generation_config()
    {
        const int newTokens = 6; // before the free run's EOS
        string[] args = ["model", "generate", "--prompt", "Mia saw", "--max-new-tokens", $"{newTokens}"];
        string copy = Sub("builtin");
        Directory.CreateDirectory(copy);
        foreach (var f in Directory.GetFiles(BuiltinModel.Folder)) File.Copy(f, Path.Combine(copy, Path.GetFileName(f)));
        var (exit, free, err) = CliRunner.Run([.. args, "--model", copy]);
        Assert.True(exit == 0, err);
        var (exitBuiltin, builtin, _) = CliRunner.Run([.. args, "--model", "builtin"]);
        Assert.Equal(0, exitBuiltin);
        Assert.Equal(builtin, free);

        var tok = Tokenizer.FromFolder(copy);
        var words = free.Trim().Split(' ');
        Assert.True(words.Length == 2 + newTokens, $"the free run stopped early: {free}");
        var newIds = words.Skip(2).Select(w => (long)tok.Encode(w).Single()).ToArray();
        long third = newIds[2];
        long never = Enumerable.Range(1, 300).Select(i => (long)i).First(i => !newIds.Contains(i) && i != tok.EosTokenId);
        File.WriteAllText(Path.Combine(copy, GenerationConfig.FileName), $$"""{"eos_token_id": [{{never}}, {{third}}]}""");
        (exit, var stopped, err) = CliRunner.Run([.. args, "--model", copy]);
        Assert.True(exit == 0, err);
        int at = Array.IndexOf(newIds, third);
        Assert.Equal(string.Join(' ', words.Take(2 + at + 1)), stopped.Trim());
    }
}
