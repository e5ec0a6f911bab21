using System.Text.Json.Nodes;
using SaeSharp.Interop;
using SaeSharp.Models;
using SaeSharp.Tests.Interventions;
using SaeSharp.Tokenizers;
using static TorchSharp.torch;

namespace SaeSharp.Tests.Cli;

/// <summary><c>sae model generate</c> past n_ctx: a model with learned positions (W_pos) refuses, naming the flag; rotary
/// and ALiBi models run on past it, as Hugging Face's generate does, with a note on stderr; <c>sae model run --generate</c>,
/// <c>sae steer</c> and <c>sae model head-scores --repeated-random</c> follow the same rule with the same words.</summary>
public class GenerationPastContextTests : CliTempDirTestBase
{
    private const int NCtx = 6;

    /// <summary>A copy of tests/data/hf_models/<paramref name="fixture"/> whose trained context is cut to <see cref="NCtx"/>
    /// (<paramref name="contextKey"/>: max_position_embeddings, BLOOM's seq_length), without bos/eos ids (nothing stops
    /// the generation early), and a word-level tokenizer of the model's 128 ids: "&lt;unk&gt;", w1 … w127.</summary>
    private string CutContext(string fixture, string contextKey)
    {
        string dir = P(fixture);
        Directory.CreateDirectory(dir);
        string source = Tokenizers.TestPaths.Data("hf_models", fixture);
        foreach (var f in Directory.GetFiles(source).Where(f => !f.EndsWith(".npz", StringComparison.Ordinal)))
            File.Copy(f, Path.Combine(dir, Path.GetFileName(f)));
        var config = JsonNode.Parse(File.ReadAllText(Path.Combine(dir, "config.json")))!.AsObject();
        Assert.Equal(128, (int)config["vocab_size"]!);
        config[contextKey] = NCtx;
        config.Remove("bos_token_id");
        config.Remove("eos_token_id");
        File.WriteAllText(Path.Combine(dir, "config.json"), config.ToJsonString());
        WordLevelTokenizer.WriteTokenizerJson(Path.Combine(dir, "tokenizer.json"),
            ["<unk>", .. Enumerable.Range(1, 127).Select(i => $"w{i}")], ["<unk>"], "<unk>");
        return dir;
    }

    /// <summary>Greedy decoding by full recomputation, no KV cache: each new token is the argmax of the last position's
    /// logits of a forward over the whole sequence so far.</summary>
    private static List<long> GreedyByFullForward(string model, IEnumerable<long> prompt, int newTokens)
    {
        using var m = ModelLoader.FromPretrained(model);
        var ids = prompt.ToList();
        for (int i = 0; i < newTokens; i++)
        {
            using var scope = NewDisposeScope();
            var logits = m.Forward(tensor(ids.ToArray()).unsqueeze(0));
            ids.Add(logits[0, -1].argmax().item<long>());
        }
        return ids;
    }

    [Theory]
    [InlineData("gemma2", "max_position_embeddings", "rotary")]   // rotary, and sliding windows of 4 shorter than the run
    [InlineData("qwen2", "max_position_embeddings", "rotary")]
    [InlineData("bloom", "seq_length", "ALiBi")]
    public void RotaryAndAlibiModelsGeneratePastNCtxAsTheirFullForward(string fixture, string contextKey, string positions)
    {
        string model = CutContext(fixture, contextKey);
        const int New = 8;
        var (exit, output, err) = CliRunner.Run("model", "generate", "--model", model, "--prompt", "w5 w9 w3", "--max-new-tokens", $"{New}");
        Assert.True(exit == 0, err);
        var expected = GreedyByFullForward(model, [5, 9, 3], New);
        Assert.Equal(3 + New, expected.Count);
        Assert.Equal(Tokenizer.FromFolder(model).Decode(expected.Select(i => (int)i)), output.TrimEnd('\n'));
        string note = err.ReplaceLineEndings(" ");
        Assert.Contains($"note: {3 + New} tokens exceed n_ctx={NCtx} of", note);
        Assert.Contains($"{positions} positions run on past it", note);
        Assert.Contains("quality may drop", note);
    }

    [Fact]
    public void WithinNCtxThereIsNoNote()
    {
        string model = CutContext("qwen2", "max_position_embeddings");
        var (exit, _, err) = CliRunner.Run("model", "generate", "--model", model, "--prompt", "w5 w9 w3", "--max-new-tokens", $"{NCtx - 3}");
        Assert.True(exit == 0, err);
        Assert.DoesNotContain("n_ctx", err);
    }

    [Fact]
    public void LearnedPositionModelsRefuseNamingTheFlag()
    {
        string dir = TinyModels.WriteGpt2(P("gpt2"), seed: 2, nLayer: 1, nEmbd: 8, nHead: 2, vocab: 128, nPositions: NCtx);
        WordLevelTokenizer.WriteTokenizerJson(Path.Combine(dir, "tokenizer.json"),
            ["<unk>", .. Enumerable.Range(1, 127).Select(i => $"w{i}")], ["<unk>"], "<unk>");
        var (exit, output, err) = CliRunner.Run("model", "generate", "--model", dir, "--prompt", "w5 w9 w3", "--max-new-tokens", "4");
        Assert.Equal(1, exit);
        Assert.Equal("", output);
        Assert.Contains($"--max-new-tokens 4: the prompt's 3 tokens and 4 new ones exceed the context of {NCtx} tokens", err);
        Assert.Contains($"(learned positions); ask for at most {NCtx - 3}", err.ReplaceLineEndings(" "));
        // The model itself refuses a longer sequence, and the predicate says why.
        using var m = ModelLoader.FromPretrained(dir);
        Assert.True(m.LearnedPositions);
        var e = Assert.Throws<SaeSharpException>(() => m.Forward(tensor(Enumerable.Range(0, NCtx + 1).Select(i => (long)i).ToArray()).unsqueeze(0)).Dispose());
        Assert.Contains($"n_ctx={NCtx}", e.Message);
    }

    /// <summary>The learned-position fixture of <see cref="LearnedPositionModelsRefuseNamingTheFlag"/>.</summary>
    private string LearnedPositionModel()
    {
        string dir = TinyModels.WriteGpt2(P("gpt2"), seed: 2, nLayer: 1, nEmbd: 8, nHead: 2, vocab: 128, nPositions: NCtx);
        WordLevelTokenizer.WriteTokenizerJson(Path.Combine(dir, "tokenizer.json"),
            ["<unk>", .. Enumerable.Range(1, 127).Select(i => $"w{i}")], ["<unk>"], "<unk>");
        return dir;
    }

    /// <summary>A random SAE at blocks.0.hook_resid_post of a model of width <paramref name="dModel"/>, saved in SAELens's format.</summary>
    private string SaeAt(int dModel)
    {
        using var sae = InterventionTests.RandomSae("blocks.0.hook_resid_post", dModel, 16, 3);
        SaeLensFormat.Save(sae, P($"sae{dModel}"));
        return P($"sae{dModel}");
    }

    [Fact]
    public void ModelRunGenerateAndSteerRunPastNCtxOnARotaryModelWithTheNote()
    {
        string model = CutContext("qwen2", "max_position_embeddings");
        string sae = SaeAt(32);
        const int New = 8;
        // The clean continuation is the model's own greedy one, by full forwards: the same tokens past n_ctx.
        var expected = GreedyByFullForward(model, [5, 9, 3], New);
        string clean = Tokenizer.FromFolder(model).Decode(expected.Skip(3).Select(i => (int)i)).Trim();
        var (exit, output, err) = CliRunner.Run("model", "run", "--model", model, "--sae", sae, "--prompt", "w5 w9 w3", "--generate", $"{New}",
            "--out", P("run.safetensors"));
        Assert.True(exit == 0, err);
        Assert.Equal(clean, output.Split('\n').Select(l => l.TrimEnd('\r').Split('\t')).Single(c => c.Length == 2 && c[0] == "clean")[1].Trim());
        string note = err.ReplaceLineEndings(" ");
        Assert.Contains($"note: {3 + New} tokens exceed n_ctx={NCtx} of", note);
        Assert.Contains("rotary positions run on past it", note);
        Assert.True(File.Exists(P("run.safetensors")));

        // sae steer at scale 0: both columns are the model's own greedy continuation, past n_ctx, with the same note.
        (exit, output, err) = CliRunner.Run("steer", "--model", model, "--sae", sae, "--feature", "0", "--scale", "0", "--prompt", "w5 w9 w3",
            "--max-new-tokens", $"{New}", "--runs", "1");
        Assert.True(exit == 0, err);
        var row = output.Split('\n').Select(l => l.TrimEnd('\r').Split('\t')).Single(c => c.Length == 3 && c[0] == "0");
        Assert.Equal(clean, row[1].Trim());
        Assert.Equal(clean, row[2].Trim());
        Assert.Contains($"note: {3 + New} tokens exceed n_ctx={NCtx} of", err.ReplaceLineEndings(" "));
    }

    [Fact]
    public void ModelRunGenerateAndSteerOnLearnedPositionsRefuseNamingTheFlagAndWriteNothing()
    {
        string dir = LearnedPositionModel();
        string sae = SaeAt(8);
        var (exit, output, err) = CliRunner.Run("model", "run", "--model", dir, "--sae", sae, "--prompt", "w5 w9 w3", "--no-prepend-bos", "--generate", "4",
            "--out", P("run.safetensors"));
        Assert.Equal(1, exit);
        Assert.Equal("", output);
        string e = err.ReplaceLineEndings(" ");
        Assert.Contains($"--generate 4: the prompt's 3 tokens and 4 new ones exceed the context of {NCtx} tokens", e);
        Assert.Contains($"(learned positions); ask for at most {NCtx - 3}", e);
        Assert.False(File.Exists(P("run.safetensors")));
        // Within n_ctx it runs, and says nothing of n_ctx.
        (exit, _, err) = CliRunner.Run("model", "run", "--model", dir, "--sae", sae, "--prompt", "w5 w9 w3", "--no-prepend-bos", "--generate", $"{NCtx - 3}",
            "--out", P("run.safetensors"));
        Assert.True(exit == 0, err);
        Assert.DoesNotContain("n_ctx", err);

        (exit, output, err) = CliRunner.Run("steer", "--model", dir, "--sae", sae, "--feature", "0", "--scale", "4", "--prompt", "w5 w9 w3", "--no-prepend-bos",
            "--max-new-tokens", "5", "--runs", "1");
        Assert.Equal(1, exit);
        Assert.Equal("", output);
        e = err.ReplaceLineEndings(" ");
        Assert.Contains($"--max-new-tokens 5: the prompt's 3 tokens and 5 new ones exceed the context of {NCtx} tokens", e);
        Assert.Contains($"(learned positions); ask for at most {NCtx - 3}", e);
    }

    [Fact]
    public void HeadScoresRepeatedRandomRunsPastNCtxOnARotaryModelAndRefusesOnLearnedPositions()
    {
        string rotary = CutContext("qwen2", "max_position_embeddings");
        var (exit, output, err) = CliRunner.Run("model", "head-scores", "--model", rotary, "--repeated-random", "5", "--json", P("scores.json"));
        Assert.True(exit == 0, err);
        Assert.Contains($"note: 10 tokens exceed n_ctx={NCtx} of", err.ReplaceLineEndings(" "));
        // Each score a share of attention: in [0, 1] for each of the 2 layers × heads.
        var json = JsonNode.Parse(File.ReadAllText(P("scores.json")))!.AsObject();
        var induction = json["induction_head"]!.AsArray();
        Assert.Equal(2, induction.Count);
        foreach (var v in induction.SelectMany(l => l!.AsArray())) Assert.InRange((double)v!, 0.0, 1.0);
        Assert.Contains("induction", output);

        var (refused, _, refusedErr) = CliRunner.Run("model", "head-scores", "--model", LearnedPositionModel(), "--repeated-random", "4");
        Assert.Equal(1, refused);
        Assert.Contains($"--repeated-random 4: repeated twice that is 8 tokens, more than the context window of", refusedErr);
        Assert.Contains($"(n_ctx={NCtx}, learned positions); give at most {NCtx / 2}", refusedErr.ReplaceLineEndings(" "));
    }
}
