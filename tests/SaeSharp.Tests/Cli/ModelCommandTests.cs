using SaeSharp.IO;
using SaeSharp.Models;
using static TorchSharp.torch;

namespace SaeSharp.Tests.Cli;

public class ModelCommandTests : IDisposable
{
    private readonly string _dir = Directory.CreateTempSubdirectory("cli-model-").FullName;
    public void Dispose() => Directory.Delete(_dir, true);

    [Fact]
    public void RunWritesLogitsAndHooksThatSatisfyTheResidualIdentity()
    {
        var model = TinyModels.WriteGpt2(Path.Combine(_dir, "m"), seed: 3, nLayer: 2, nEmbd: 16, nHead: 4, vocab: 64);
        var input = Path.Combine(_dir, "in.safetensors");
        var tokens = tensor(new long[] { 1, 5, 9, 2, 7, 7, 3, 0 }).reshape(2, 4);
        SafeTensors.Save(input, new Dictionary<string, Tensor> { ["tokens"] = tokens });
        var output = Path.Combine(_dir, "out.safetensors");
        var (exit, _, err) = CliRunner.Run("model", "run", "--model", model, "--input", input, "--out", output,
            "--hooks", "blocks.1.hook_resid_pre,blocks.1.hook_attn_out,blocks.1.hook_mlp_out,blocks.1.hook_resid_post");
        Assert.True(exit == 0, err);
        var o = SafeTensors.Load(output);
        Assert.Equal(new long[] { 2, 4, 64 }, o["logits"].shape);
        var sum = o["blocks.1.hook_resid_pre"] + o["blocks.1.hook_attn_out"] + o["blocks.1.hook_mlp_out"];
        Assert.True(sum.allclose(o["blocks.1.hook_resid_post"], rtol: 1e-5, atol: 1e-5));
        using var m = ModelLoader.FromPretrained(model);
        Assert.True(o["logits"].equal(m.Forward(tokens)).all().item<bool>());
    }

    /// <summary>Past n_ctx: learned positions (GPT-2) are refused by name; rotary positions (NeoX) run on, as transformers
    /// runs them, with a note on stderr (TransformerLens refuses them), and equal the library's forward.</summary>
    [Fact]
    public void RunPastTheContextRefusesLearnedPositionsAndNotesRotaryOnes()
    {
        var input = Path.Combine(_dir, "in.safetensors");
        var tokens = (TorchScalars.Arange(70, dtype: ScalarType.Int64) % 50).unsqueeze(0);
        SafeTensors.Save(input, new Dictionary<string, Tensor> { ["tokens"] = tokens });
        var gpt2 = TinyModels.WriteGpt2(Path.Combine(_dir, "g"), seed: 3, nLayer: 1, nEmbd: 16, nHead: 4, vocab: 50, nPositions: 64);
        var (exit, _, err) = CliRunner.Run("model", "run", "--model", gpt2, "--input", input, "--out", Path.Combine(_dir, "g.safetensors"));
        Assert.NotEqual(0, exit);
        Assert.Contains($"--input {input}: 70 tokens, more than the context window of", err);
        Assert.Contains("(n_ctx=64, learned positions)", err);
        Assert.False(File.Exists(Path.Combine(_dir, "g.safetensors")));
        var neox = TinyModels.WriteNeoX(Path.Combine(_dir, "n"), 2, 1, 16, 2, 50, 64, 0.5, true, 24);
        var output = Path.Combine(_dir, "n.safetensors");
        (exit, _, err) = CliRunner.Run("model", "run", "--model", neox, "--input", input, "--out", output);
        Assert.True(exit == 0, err);
        Assert.Contains("note: 70 tokens exceed n_ctx=64", err);
        var o = SafeTensors.Load(output);
        using var m = ModelLoader.FromPretrained(neox);
        Assert.True(o["logits"].equal(m.Forward(tokens)).all().item<bool>());
    }

    [Fact]
    public void UnknownHookIsOneLineErrorListingValidNames()
    {
        var model = TinyModels.WriteGpt2(Path.Combine(_dir, "m"), seed: 3);
        var input = Path.Combine(_dir, "in.safetensors");
        SafeTensors.Save(input, new Dictionary<string, Tensor> { ["tokens"] = zeros(1, 3, dtype: ScalarType.Int64) });
        var (exit, _, err) = CliRunner.Run("model", "run", "--model", model, "--input", input, "--out", Path.Combine(_dir, "o.safetensors"), "--hooks", "blocks.0.hook_nope");
        Assert.Equal(1, exit);
        Assert.StartsWith("error:", err);
        Assert.Contains("blocks.0.hook_nope", err);
        Assert.Contains("hook_resid_pre", err);
        Assert.DoesNotContain("   at ", err);
    }

    [Fact]
    public void DtypeOptionKeepsBf16WeightsOfAGemma2Checkpoint()
    {
        var model = SaeSharp.Tests.Models.TinyDecoders.Write(Path.Combine(_dir, "g"),
            SaeSharp.Tests.Models.LlamaFamilyTests.Spec("gemma2") with { Dtype = ScalarType.BFloat16 });
        var (exit, output, err) = CliRunner.Run("model", "info", "--model", model, "--dtype", "auto");
        Assert.True(exit == 0, err);
        Assert.Contains("gemma2", output);
        Assert.Contains("dtype=BFloat16", output);
        Assert.Contains("blocks.2.mlp.hook_pre_linear", output);
        var input = Path.Combine(_dir, "in.safetensors");
        var tokens = tensor(new long[] { 1, 5, 9, 2, 7, 7, 3, 0 }).reshape(2, 4);
        SafeTensors.Save(input, new Dictionary<string, Tensor> { ["tokens"] = tokens });
        var outPath = Path.Combine(_dir, "out.safetensors");
        (exit, _, err) = CliRunner.Run("model", "run", "--model", model, "--input", input, "--out", outPath, "--dtype", "bf16", "--hooks", "blocks.1.hook_resid_post");
        Assert.True(exit == 0, err);
        var o = SafeTensors.Load(outPath);
        Assert.Equal(ScalarType.BFloat16, o["blocks.1.hook_resid_post"].dtype);
        using var m = ModelLoader.FromPretrained(model, ScalarType.BFloat16);
        Assert.True(o["logits"].equal(m.Forward(tokens)).all().item<bool>());
        (exit, _, err) = CliRunner.Run("model", "info", "--model", model, "--dtype", "int8");
        Assert.Equal(1, exit);
        Assert.Contains("dtype 'int8' is not supported", err);
    }

    [Theory]
    [InlineData("gemma3")]
    [InlineData("gemma3-conditional")]
    public void RunLoadsAGemma3FolderAndGivesTransformersLogits(string family)
    {
        // The transformers-written fixtures (Gemma3ForCausalLM; Gemma3ForConditionalGeneration, whose text model is run).
        string model = SaeSharp.Tests.Tokenizers.TestPaths.Data("hf_models", family);
        var (exit, output, err) = CliRunner.Run("model", "info", "--model", model);
        Assert.True(exit == 0, err);
        Assert.Contains(family == "gemma3" ? "(gemma3_text)" : "(gemma3)", output);
        Assert.Contains("rotary_base_local=100", output);
        Assert.Contains("blocks.3.attn.hook_rot_q", output);
        var reference = Npy.LoadNpz(Path.Combine(model, "reference.npz"));
        var input = Path.Combine(_dir, "in.safetensors");
        SafeTensors.Save(input, new Dictionary<string, Tensor> { ["tokens"] = reference["tokens"] });
        var outPath = Path.Combine(_dir, "out.safetensors");
        (exit, _, err) = CliRunner.Run("model", "run", "--model", model, "--input", input, "--out", outPath, "--hooks", "blocks.2.hook_resid_post");
        Assert.True(exit == 0, err);
        var o = SafeTensors.Load(outPath);
        double diff = SaeSharp.Tests.Models.HfTransformersParityTests.RelativeMaxDifference(reference["logits"], o["logits"], family);
        Assert.True(diff <= 1e-5, $"{family}: sae model run's logits differ from transformers' by {diff:G3} of their scale");
        Assert.Equal(new long[] { 2, 12, 32 }, o["blocks.2.hook_resid_post"].shape);
    }

    /// <summary><c>model generate --prepend-bos</c> starts from BOS (not doubled when the text gives it); an empty prompt is
    /// refused by name without it and is BOS alone with it.</summary>
    [Fact]
    public void GeneratePrependBosStartsFromBosOnceAndAnEmptyPromptIsNamed()
    {
        string bos = SaeSharp.Corpus.LabelledCorpus.EndOfText;
        string[] greedy = ["--max-new-tokens", "3", "--temperature", "0"];
        var (exit, plain, err) = CliRunner.Run(["model", "generate", "--model", "builtin", "--prompt", "Mia saw", .. greedy]);
        Assert.True(exit == 0, err);
        Assert.StartsWith("Mia saw ", plain);
        (exit, var withBos, err) = CliRunner.Run(["model", "generate", "--model", "builtin", "--prompt", "Mia saw", "--prepend-bos", .. greedy]);
        Assert.True(exit == 0, err);
        Assert.StartsWith($"{bos} Mia saw ", withBos);
        (exit, var given, err) = CliRunner.Run(["model", "generate", "--model", "builtin", "--prompt", $"{bos} Mia saw", "--prepend-bos", .. greedy]);
        Assert.True(exit == 0, err);
        Assert.Equal(withBos, given);
        (exit, _, err) = CliRunner.Run(["model", "generate", "--model", "builtin", "--prompt", "", .. greedy]);
        Assert.Equal(1, exit);
        Assert.Contains("--prompt: the prompt gives no token", err);
        (exit, var fromBos, err) = CliRunner.Run(["model", "generate", "--model", "builtin", "--prompt", "", "--prepend-bos", .. greedy]);
        Assert.True(exit == 0, err);
        Assert.Equal(4, fromBos.Trim().Split(' ').Length);
    }

    /// <summary><c>--no-kv-cache</c> reaches <see cref="GenerationOptions.UseKvCache"/> and gives the cached run's tokens,
    /// greedy and sampled (model generate and model run --generate); without generation it is refused by name, and
    /// intervene (whose positions follow the cached passes) does not offer it.</summary>
    [Fact]
    public void NoKvCacheGivesTheCachedTokens()
    {
        var sampling = new SaeSharp.Cli.Commands.ModelCommands.SamplingOptions();
        var command = new System.CommandLine.Command("g");
        sampling.AddTo(command);
        Assert.False(sampling.Options(command.Parse(["--no-kv-cache"]), eos: null).UseKvCache);
        Assert.True(sampling.Options(command.Parse([]), eos: null).UseKvCache);
        foreach (string[] how in new[] { new[] { "--temperature", "0" }, ["--temperature", "0.9", "--seed", "5"] })
        {
            string[] args = ["model", "generate", "--model", "builtin", "--prompt", "Mia saw a", "--max-new-tokens", "10", .. how];
            var (exit, cached, err) = CliRunner.Run(args);
            Assert.True(exit == 0, err);
            (exit, var whole, err) = CliRunner.Run([.. args, "--no-kv-cache"]);
            Assert.True(exit == 0, err);
            Assert.Equal(cached, whole);
        }
        var (code, _, error) = CliRunner.Run("model", "run", "--model", "builtin", "--prompt", "Mia saw a", "--out", Path.Combine(_dir, "o.safetensors"), "--no-kv-cache");
        Assert.Equal(1, code);
        Assert.Contains("--no-kv-cache", error);
        Assert.False(File.Exists(Path.Combine(_dir, "o.safetensors")));
        (code, _, error) = CliRunner.Run("intervene", "--help");
        Assert.DoesNotContain("--no-kv-cache", error);
    }

    /// <summary>Every hook point is listed once, in firing order, with the shape its cached tensor has in a real run
    /// (batch and positions named).</summary>
    [Fact]
    public void InfoListsHookPointsWithTheShapesTheyHold()
    {
        var model = TinyModels.WriteNeoX(Path.Combine(_dir, "n"), seed: 1, hiddenSize: 32, nHead: 4, rotaryPct: 0.5);
        var (exit, output, err) = CliRunner.Run("model", "info", "--model", model);
        Assert.True(exit == 0, err);
        Assert.Contains("gpt_neox", output);
        var lines = output.ReplaceLineEndings("\n").Split('\n').SkipWhile(l => !l.StartsWith("hook points", StringComparison.Ordinal)).Skip(1)
            .Where(l => l.Length > 0).ToList();
        var listed = lines.Select(l => (Name: l.Trim().Split(' ')[0], Shape: l[(l.IndexOf('[', StringComparison.Ordinal))..(l.IndexOf(']', StringComparison.Ordinal) + 1)])).ToList();
        // TransformerLens's opt-in hooks (use_attn_in, use_split_qkv_input, use_attn_result, use_hook_mlp_in), by hand, per block.
        var optIn = Enumerable.Range(0, 2).SelectMany(i => new[] { "hook_attn_in", "hook_q_input", "hook_k_input", "hook_v_input", "attn.hook_result", "hook_mlp_in" }
            .Select(h => $"blocks.{i}.{h}")).Order().ToList();
        Assert.Equal(optIn, lines.Where(l => l.EndsWith("  opt-in", StringComparison.Ordinal)).Select(l => l.Trim().Split(' ')[0]).Order());
        Assert.All(lines, l => Assert.True(l.Length <= 80, l));
        using var m = SaeSharp.Models.ModelLoader.FromPretrained(model);
        Assert.Equal(2, m.Config.NLayers);
        var (_, cache) = m.RunWithCache(tensor(new long[] { 1, 2, 3, 4, 5 }).unsqueeze(0), _ => true);
        using (cache)
        {
            Assert.Equal(m.HookNames, listed.Select(l => l.Name));
            foreach (var (name, shape) in listed)
            {
                var dims = cache[name].shape.Select(d => d.ToString(System.Globalization.CultureInfo.InvariantCulture)).ToArray();
                dims[0] = "batch";
                if (dims.Length == 4 && dims[2] == "5" && dims[3] == "5") (dims[2], dims[3]) = ("query_pos", "key_pos");
                else dims[1] = "pos";
                Assert.Equal($"[{string.Join(", ", dims)}]", shape);
            }
        }
        Assert.Contains(listed, l => l.Name == "blocks.1.attn.hook_q" && l.Shape == "[batch, pos, 4, 8]");
        Assert.Contains(listed, l => l.Name == "ln_final.hook_scale" && l.Shape == "[batch, pos, 1]");
    }
}

public class ModelTextCommandTests : IDisposable
{
    private readonly string _dir = Directory.CreateTempSubdirectory("cli-gpt2-").FullName;
    public void Dispose() => Directory.Delete(_dir, true);

    /// <summary>A tiny random GPT-2 with GPT-2's real vocabulary (50257 ids) and tokenizer files.</summary>
    private string Gpt2WithRealTokenizer()
    {
        var dir = TinyModels.WriteGpt2(Path.Combine(_dir, "g"), seed: 5, nLayer: 1, nEmbd: 8, nHead: 2, vocab: 50257);
        foreach (var f in new[] { "vocab.json", "merges.txt" })
            File.Copy(SaeSharp.Tests.Tokenizers.TestPaths.Data("gpt2-tokenizer", f), Path.Combine(dir, f));
        return dir;
    }

    [Fact]
    public void TokenizeMatchesReferenceIdsAndDecodeInverts()
    {
        var model = Gpt2WithRealTokenizer();
        var (exit, output, err) = CliRunner.Run("model", "tokenize", "--model", model, "--text", "Call me Ishmael.");
        Assert.True(exit == 0, err);
        Assert.Equal("[14134,502,1148,21720,417,13]", output.Trim());
        (exit, output, err) = CliRunner.Run("model", "tokenize", "--model", model, "--decode", "--text", "[14134,502,1148,21720,417,13]");
        Assert.True(exit == 0, err);
        Assert.Equal("Call me Ishmael.", output.Trim());
        // --prompt, as every other command names the text, is the same option.
        (exit, output, err) = CliRunner.Run("model", "tokenize", "--model", model, "--prompt", "Call me Ishmael.");
        Assert.True(exit == 0, err);
        Assert.Equal("[14134,502,1148,21720,417,13]", output.Trim());
        (exit, _, err) = CliRunner.Run("model", "tokenize", "--model", model, "--prompt", "Call", "--file", Path.Combine(_dir, "t.txt"));
        Assert.Equal(1, exit);
        Assert.Contains("--file", err);
    }

    /// <summary>sae corpus: the same --seed writes the same stories, another seed other stories (its help: "the same seed
    /// gives the same corpus"), as the library's LabelledCorpus.Write with that seed.</summary>
    [Fact]
    public void CorpusSeedChoosesTheStories()
    {
        string P(string n) => Path.Combine(_dir, n);
        foreach (var (name, seed) in new[] { ("a.jsonl", "3"), ("b.jsonl", "4") })
        {
            var (exit, _, err) = CliRunner.Run("corpus", "--out", P(name), "--docs", "5", "--seed", seed);
            Assert.True(exit == 0, err);
        }
        SaeSharp.Corpus.LabelledCorpus.Write(P("lib.jsonl"), 3UL, 5);
        Assert.Equal(File.ReadAllText(P("lib.jsonl")), File.ReadAllText(P("a.jsonl")));
        Assert.NotEqual(File.ReadAllText(P("a.jsonl")), File.ReadAllText(P("b.jsonl")));
    }

    [Fact]
    public void GreedyGenerationAppendsTheArgmaxOfRecomputedLogits()
    {
        var model = Gpt2WithRealTokenizer();
        var (exit, output, err) = CliRunner.Run("model", "generate", "--model", model, "--prompt", "Hello there", "--max-new-tokens", "3");
        Assert.True(exit == 0, err);
        // Independent expectation: greedy decoding by full recomputation without a KV cache.
        using var m = ModelLoader.FromPretrained(model);
        var ids = new List<long> { 15496, 612 };
        for (int i = 0; i < 3; i++)
        {
            using var logits = m.Forward(tensor(ids.ToArray()).unsqueeze(0));
            ids.Add(logits[0, -1].argmax().item<long>());
        }
        var tok = SaeSharp.Tokenizers.Tokenizer.FromFolder(model);
        Assert.Equal(tok.Decode(ids.Select(i => (int)i)), output.TrimEnd('\n'));

        // Sampling at temperature 1 from the single most likely token (--top-k 1) is greedy decoding.
        (exit, output, err) = CliRunner.Run("model", "generate", "--model", model, "--prompt", "Hello there", "--max-new-tokens", "3",
            "--temperature", "1", "--top-k", "1", "--seed", "2");
        Assert.True(exit == 0, err);
        Assert.Equal(tok.Decode(ids.Select(i => (int)i)), output.TrimEnd('\n'));

        // Penalised greedy decoding: each step's argmax of the recomputed logits penalised by hand over the prompt and the
        // tokens so far (repetition penalty, then frequency penalty).
        (exit, output, err) = CliRunner.Run("model", "generate", "--model", model, "--prompt", "Hello there", "--max-new-tokens", "6",
            "--repetition-penalty", "2", "--freq-penalty", "1.5");
        Assert.True(exit == 0, err);
        var penalised = new List<long> { 15496, 612 };
        for (int i = 0; i < 6; i++)
        {
            using var logits = m.Forward(tensor(penalised.ToArray()).unsqueeze(0));
            penalised.Add(SaeSharp.Tests.Models.GenerationPenaltyTests.ArgMax(SaeSharp.Tests.Models.GenerationPenaltyTests.HandPenalised(
                logits[0, -1].to(ScalarType.Float32).data<float>().ToArray(), penalised, 2, 1.5, 0)));
        }
        Assert.Equal(tok.Decode(penalised.Select(i => (int)i)), output.TrimEnd('\n'));
        (exit, _, err) = CliRunner.Run("model", "generate", "--model", model, "--prompt", "Hello there", "--repetition-penalty", "0");
        Assert.NotEqual(0, exit);
        Assert.Contains("--repetition-penalty 0: expected a finite number > 0", err);
    }

    /// <summary>A model folder with GPT-2's vocab.json + merges.txt only, whose config.json declares an EOS id and no BOS:
    /// as Hugging Face's GPT2Tokenizer, the tokenizer's BOS is &lt;|endoftext|&gt;, so --prepend-bos starts the prompt with it,
    /// and the tokenizer's EOS (&lt;|endoftext|&gt;) is a stop id beside config.json's.</summary>
    [Fact]
    public void PrependBosWorksWithVocabAndMergesAlone()
    {
        var model = Gpt2WithRealTokenizer();
        string configPath = Path.Combine(model, "config.json");
        var config = System.Text.Json.Nodes.JsonNode.Parse(File.ReadAllText(configPath))!.AsObject();
        config.Remove("bos_token_id");
        config["eos_token_id"] = 13;
        File.WriteAllText(configPath, config.ToJsonString());
        var (exit, output, err) = CliRunner.Run("model", "generate", "--model", model, "--prompt", "Hello there", "--max-new-tokens", "1", "--prepend-bos");
        Assert.True(exit == 0, err);
        Assert.StartsWith("<|endoftext|>Hello there", output);
        using var m = ModelLoader.FromPretrained(model);
        Assert.Contains(50256, m.StopTokenIds);
        Assert.Contains(13, m.StopTokenIds);
    }

    [Fact]
    public void GenerationPastTheContextIsRefusedBeforeItStartsAndIdsPastTheTokenizerAreShown()
    {
        var model = Gpt2WithRealTokenizer();
        using (var m = ModelLoader.FromPretrained(model))
        {
            int ctx = m.Config.NCtx;
            var (exit, _, err) = CliRunner.Run("model", "generate", "--model", model, "--prompt", "Hello there", "--max-new-tokens", $"{ctx}");
            Assert.Equal(1, exit);
            Assert.Contains($"--max-new-tokens {ctx}: the prompt's 2 tokens and {ctx} new ones exceed the context of {ctx} tokens", err);
            Assert.Contains($"(learned positions); ask for at most {ctx - 2}", err.ReplaceLineEndings(" "));
        }
        // A padded embedding row (id ≥ the tokenizer's vocabulary) is written as <id N> between the decoded runs.
        var tok = SaeSharp.Tokenizers.Tokenizer.FromFolder(model);
        int beyond = tok.VocabSize + 3;
        Assert.Equal("Hello<id " + beyond + "> there", SaeSharp.Cli.Commands.ModelCommands.DecodeShowingUnknownIds(tok, [15496, beyond, 612]));
    }

    [Fact]
    public void TokenizeAddsTheBosALlamaStyleTokenizerAddsUnlessAskedNotTo()
    {
        string dir = Directory.CreateTempSubdirectory("tok-bos-").FullName;
        try
        {
            SaeSharp.Tests.Tokenizers.SentencePieceTokenizerTests.WriteTokenizer(dir);
            var tok = (SaeSharp.Tokenizers.BpeTokenizer)SaeSharp.Tokenizers.Tokenizer.FromFolder(dir);
            int bos = tok.BosTokenId!.Value;
            var raw = tok.Encode("hello");
            var (exit, output, err) = CliRunner.Run("model", "tokenize", "--model", dir, "--text", "hello");
            Assert.True(exit == 0, err);
            Assert.Equal(System.Text.Json.JsonSerializer.Serialize(new[] { bos }.Concat(raw)), output.Trim());
            (exit, output, err) = CliRunner.Run("model", "tokenize", "--model", dir, "--text", "hello", "--no-special-tokens");
            Assert.True(exit == 0, err);
            Assert.Equal(System.Text.Json.JsonSerializer.Serialize(raw), output.Trim());
        }
        finally { Directory.Delete(dir, true); }
    }
}
