using System.Text.Json.Nodes;
using SaeSharp.IO;
using SaeSharp.Models;
using static TorchSharp.torch;

namespace SaeSharp.Tests.Cli;

/// <summary>
/// Bad input round 6: <c>--diff-revision</c> (the <c>--diff-model</c> repo's revision) and <c>sae pretokenize --revision</c>
/// on a hub cache (<c>refs/REVISION</c> → <c>snapshots/COMMIT</c>) of two checkpoints; flags named instead of the library's
/// TransformerLens argument names (induction-loss, circuits, path-patch); a <c>sae model run --prompt</c> past learned
/// positions; generation stopping exactly where transformers' <c>generate</c> stops. Every refusal is one line naming the
/// flag and value, with nothing written.
/// </summary>
public class BadInput6Tests : TinyGpt2CliTestBase
{
    private const string Repo = "tiny-org/tiny-gpt2";

    /// <summary>The snapshot of <paramref name="commit"/>, named by <c>refs/<paramref name="revision"/></c>: a tiny GPT-2 of
    /// <paramref name="seed"/> with GPT-2's tokenizer, or with <paramref name="builtinTokenizer"/> the builtin model's
    /// word-level one (other token ids for the same text).</summary>
    private string Snapshot(string cache, string revision, string commit, int seed, bool builtinTokenizer = false)
    {
        string storage = Path.Combine(cache, "models--" + Repo.Replace("/", "--", StringComparison.Ordinal));
        Directory.CreateDirectory(Path.Combine(storage, "refs"));
        File.WriteAllText(Path.Combine(storage, "refs", revision), commit);
        string snapshot = Path.Combine(storage, "snapshots", commit);
        TinyModels.WriteGpt2(snapshot, seed: seed, nLayer: 1, nEmbd: 16, nHead: 2, vocab: 50257, nPositions: 64);
        if (builtinTokenizer)
            foreach (var f in new[] { "tokenizer.json", "tokenizer_config.json" })
                File.Copy(Path.Combine(SaeSharp.LanguageModels.BuiltinModel.Folder, f), Path.Combine(snapshot, f));
        else
            foreach (var f in new[] { "vocab.json", "merges.txt" })
                File.Copy(Tokenizers.TestPaths.Data("gpt2-tokenizer", f), Path.Combine(snapshot, f));
        return snapshot;
    }

    private Dictionary<string, string> Hub(out string step, bool builtinTokenizerAtStep = false)
    {
        string hub = P("hub");
        Snapshot(hub, "main", new string('1', 40), seed: 1);
        step = Snapshot(hub, "step1000", new string('2', 40), seed: 2, builtinTokenizerAtStep);
        return new Dictionary<string, string> { ["HF_HUB_CACHE"] = hub, ["HF_HUB_OFFLINE"] = "1" };
    }

    /// <summary>The weights and metadata of a crosscoder folder.</summary>
    private static (Dictionary<string, Tensor> Weights, Dictionary<string, string> Metadata) CrossCoderFiles(string dir) =>
        (SafeTensors.Load(Path.Combine(dir, "model.safetensors")), Metadata(Path.Combine(dir, "model.safetensors")));

    private static Dictionary<string, string> Metadata(string path)
    {
        using var file = SafeTensorsFile.Open(path);
        return new(file.Metadata);
    }

    [Fact]
    public void Diff_revision_trains_the_second_model_at_that_checkpoint_and_records_it()
    {
        var env = Hub(out string step);
        string data = Dataset();
        string[] Train(string outDir, params string[] diff) =>
            ["train", "--arch", "crosscoder", "--model", Repo, .. diff, "--hook", "blocks.0.hook_resid_post", "--dataset", data, "--tokens", "512",
             "--context-size", "16", "--dict-size", "32", "--batch-size", "32", "--eval-rows", "32", "--seed", "3", "--out", outDir];
        // --diff-model REPO --diff-revision step1000 trains exactly as the step1000 folder given directly; main differs.
        Ok(CliRunner.RunWithEnvironment(env, Train(P("at-step"), "--diff-model", Repo, "--diff-revision", "step1000")));
        Ok(CliRunner.RunWithEnvironment(env, Train(P("direct"), "--diff-model", step)));
        Ok(CliRunner.RunWithEnvironment(env, Train(P("at-main"), "--diff-model", Repo)));
        var (atStep, stepMeta) = CrossCoderFiles(P("at-step"));
        var (direct, _) = CrossCoderFiles(P("direct"));
        var (atMain, mainMeta) = CrossCoderFiles(P("at-main"));
        foreach (var key in atStep.Keys)
            Assert.True(atStep[key].allclose(direct[key], rtol: 0, atol: 0), $"{key}: --diff-revision step1000 should train on the step1000 checkpoint");
        Assert.False(atStep["decoder.weight"].allclose(atMain["decoder.weight"], rtol: 1e-4, atol: 1e-4), "main and step1000 should give different crosscoders");
        // Recorded beside the model names, one entry per slot (null: main); nothing recorded when every model ran at main.
        Assert.Equal("[null,\"step1000\"]", stepMeta["saesharp.model_revisions"]);
        Assert.Equal("[\"tiny-gpt2\",\"tiny-gpt2\"]", stepMeta["saesharp.model_names"]);   // config.json's _name_or_path
        Assert.False(mainMeta.ContainsKey("saesharp.model_revisions"));
        foreach (var t in atStep.Values.Concat(direct.Values).Concat(atMain.Values)) t.Dispose();

        // An unknown revision names the flag, the repo and the revision before anything is written.
        string err = OneLineError(CliRunner.RunWithEnvironment(env, Train(P("bad"), "--diff-model", Repo, "--diff-revision", "step2000")));
        Assert.StartsWith("error: --diff-revision step2000: ", err);
        Assert.Contains(Repo, err);
        Assert.False(Directory.Exists(P("bad")));
        // A --diff-revision with no --diff-model would be dropped unseen.
        Assert.Contains("--diff-revision step1000: a revision of --diff-model; give --diff-model too",
            OneLineError(CliRunner.RunWithEnvironment(env, Train(P("none"), "--diff-revision", "step1000"))));
        Assert.False(Directory.Exists(P("none")));
        // Every command with --diff-model takes it.
        foreach (var command in new[] { new[] { "eval" }, ["features"], ["steer"], ["ablate"], ["model", "run"] })
        {
            var (_, help, _) = CliRunner.Run([.. command, "--help"]);
            Assert.Contains("--diff-revision", help);
        }
    }

    [Fact]
    public void Pretokenize_revision_tokenizes_with_that_checkpoint_and_records_it()
    {
        var env = Hub(out string step, builtinTokenizerAtStep: true);
        File.WriteAllLines(P("docs.txt"), Enumerable.Range(0, 40).Select(i => $"Tom saw Anna and the cat ran home {i % 7}"));
        string[] Pretokenize(string outDir, params string[] tokenizer) =>
            ["pretokenize", .. tokenizer, "--dataset", P("docs.txt"), "--context-size", "8", "--no-shuffle", "--out", outDir];
        Ok(CliRunner.RunWithEnvironment(env, Pretokenize(P("at-step"), "--model", Repo, "--revision", "step1000")));
        Ok(CliRunner.RunWithEnvironment(env, Pretokenize(P("direct"), "--tokenizer", step)));
        Ok(CliRunner.RunWithEnvironment(env, Pretokenize(P("at-main"), "--model", Repo)));
        static byte[] Rows(string dir) => File.ReadAllBytes(Directory.GetFiles(dir, "*.arrow").Single());
        Assert.Equal(Rows(P("direct")), Rows(P("at-step")));
        Assert.NotEqual(Rows(P("at-main")), Rows(P("at-step")));
        var meta = JsonNode.Parse(File.ReadAllText(P("at-step", "sae_lens.json")))!;
        Assert.Equal(Repo, (string?)meta["tokenizer_name"]);
        Assert.Equal("step1000", (string?)meta["tokenizer_revision"]);
        Assert.Null(JsonNode.Parse(File.ReadAllText(P("at-main", "sae_lens.json")))!.AsObject()["tokenizer_revision"]);

        string err = OneLineError(CliRunner.RunWithEnvironment(env, Pretokenize(P("bad"), "--model", Repo, "--revision", "step2000")));
        Assert.Contains("step2000", err);
        Assert.Contains(Repo, err);
        Assert.False(Directory.Exists(P("bad")));
    }

    [Fact]
    public void Model_run_names_a_prompt_or_input_past_learned_positions()
    {
        // The tiny GPT-2 has 64 rows of W_pos; "the cat" × 50 is 100 tokens (no BOS: GPT-2's tokenizer prepends none here).
        string model = Model(), text = string.Join(' ', Enumerable.Repeat("the cat", 50));
        // Was "sequence of 100 tokens exceeds the context length n_ctx=64 of tiny-gpt2".
        string err = OneLineError(CliRunner.Run("model", "run", "--model", model, "--prompt", "the cat", "--prompt", text, "--out", P("o.safetensors")));
        Assert.Matches("^error: --prompt \"the cat the cat[^\"]*\\.\\.\\.\": 10[01] tokens, more than the context window of tiny-gpt2 \\(n_ctx=64, learned positions\\); give a shorter prompt$", err);
        Assert.False(File.Exists(P("o.safetensors")));
        using (var t = tensor(Enumerable.Range(0, 70).Select(i => (long)i).ToArray(), [1, 70]))
            SafeTensors.Save(P("long.safetensors"), new Dictionary<string, Tensor> { ["tokens"] = t });
        Assert.Contains($"--input {P("long.safetensors")}: 70 tokens, more than the context window of tiny-gpt2 (n_ctx=64, learned positions); give shorter rows",
            OneLineError(CliRunner.Run("model", "run", "--model", model, "--input", P("long.safetensors"), "--out", P("o.safetensors"))));
        Assert.False(File.Exists(P("o.safetensors")));
    }

    [Fact]
    public void Induction_loss_circuits_and_path_patch_name_their_flags()
    {
        string model = Model();
        // Was "induction loss: 2 × 40 tokens exceed n_ctx=64 of tiny-gpt2" (subseq_len unnamed).
        Assert.Contains("--subseq-len 40: repeated twice that is 80 tokens, more than the context window of tiny-gpt2 (n_ctx=64, learned positions); give at most 32",
            OneLineError(CliRunner.Run("model", "induction-loss", "--model", model, "--subseq-len", "40")));
        // Was "QK circuit scores: positions 100: more than the 64 rows of W_pos".
        Assert.Contains("--positions 100: tiny-gpt2 has 64 rows of W_pos (n_ctx); give at most 64",
            OneLineError(CliRunner.Run("model", "circuits", "--model", model, "--positions", "100", "--json", P("c.json"))));
        Assert.False(File.Exists(P("c.json")));
        // The builtin model has rotary positions: no W_pos at all.
        Assert.Contains("--positions 8: builtin has no learned position embedding W_pos (rotary positions), so no positional QK pattern; leave out --positions",
            OneLineError(CliRunner.Run("model", "circuits", "--model", "builtin", "--positions", "8", "--json", P("c.json"))));
        Assert.False(File.Exists(P("c.json")));
        // Was "path patching: sender L5H0 is not a head of builtin (3 layers of 4 heads)".
        string[] pair = ["model", "path-patch", "--model", "builtin", "--clean", "Tom saw Anna", "--corrupted", "Anna saw Tom", "--metric", "logit-diff:Tom,Anna", "--json", P("p.json")];
        Assert.Contains("--sender 5.0: layer 5 is outside builtin's layers 0..2", OneLineError(CliRunner.Run([.. pair, "--sender", "5.0"])));
        Assert.Contains("--sender 0.9: head 9 is outside builtin's heads 0..3", OneLineError(CliRunner.Run([.. pair, "--sender", "0.9"])));
        Assert.Contains("--receiver 2.7: head 7 is outside builtin's heads 0..3", OneLineError(CliRunner.Run([.. pair, "--sender", "0.1", "--receiver", "2.7"])));
        Assert.False(File.Exists(P("p.json")));
    }

    /// <summary>A tiny GPT-2 with GPT-2's tokenizer (EOS <c>&lt;|endoftext|&gt;</c>) whose greedy choice is always <paramref name="forced"/>: the final norm's
    /// scale is 0 and its bias is that token's (enlarged) embedding row, so every position's logits are W_E·b, largest at
    /// <paramref name="forced"/>. config.json declares <paramref name="configEos"/>; <paramref name="generationConfig"/>,
    /// when given, is written as generation_config.json.</summary>
    private string ForcedModel(string name, long forced, long configEos, string? generationConfig)
    {
        string dir = TinyModels.WriteGpt2(P(name), seed: 4, nLayer: 1, nEmbd: 16, nHead: 2, vocab: 50257, nPositions: 64);
        foreach (var f in new[] { "vocab.json", "merges.txt" })
            File.Copy(Tokenizers.TestPaths.Data("gpt2-tokenizer", f), Path.Combine(dir, f));
        File.WriteAllText(Path.Combine(dir, "tokenizer_config.json"), """{"bos_token": "<|endoftext|>", "eos_token": "<|endoftext|>"}""");
        string weightsPath = Path.Combine(dir, "model.safetensors");
        var w = SafeTensors.Load(weightsPath);
        using (var scope = NewDisposeScope())
        using (no_grad())
        {
            var row = w["transformer.wte.weight"][forced];
            row.mul_(TorchScalars.Of(10.0));
            w["transformer.ln_f.weight"].zero_();
            w["transformer.ln_f.bias"].copy_(row);
        }
        SafeTensors.Save(weightsPath, w);
        foreach (var t in w.Values) t.Dispose();
        string configPath = Path.Combine(dir, "config.json");
        var config = JsonNode.Parse(File.ReadAllText(configPath))!;
        config["eos_token_id"] = configEos;
        File.WriteAllText(configPath, config.ToJsonString());
        if (generationConfig is not null) File.WriteAllText(Path.Combine(dir, "generation_config.json"), generationConfig);
        return dir;
    }

    [Fact]
    public void Generation_stops_where_transformers_and_transformer_lens_generate_stop()
    {
        const long Eot = 50256, Period = 13;   // GPT-2's tokenizer EOS <|endoftext|>, and "."
        int Emitted(string model, out string err, string piece = "<|endoftext|>")
        {
            var (exit, stdout, stderr) = CliRunner.Run("model", "generate", "--model", model, "--prompt", "the cat", "--max-new-tokens", "5");
            Assert.True(exit == 0, stderr);
            err = stderr;
            Assert.StartsWith("the cat", stdout.Trim());
            string text = stdout.Trim()["the cat".Length..];
            return (text.Length - text.Replace(piece, "", StringComparison.Ordinal).Length) / piece.Length;
        }
        // No generation_config.json: config.json's eos_token_id stops it after its first new token.
        Assert.Equal(1, Emitted(ForcedModel("config", Eot, Eot, null), out var note));
        Assert.Contains("note: ", note);
        // config.json declares another id: the tokenizer's EOS stops it too, as TransformerLens's generate(stop_at_eos=True).
        Assert.Equal(1, Emitted(ForcedModel("tokenizer-only", Eot, Period, null), out _));
        // Neither stop id is ever chosen: all five new tokens.
        Assert.Equal(5, Emitted(ForcedModel("period", Period, Period + 1, null), out _, "."));
        // generation_config.json's list wins over config.json.
        Assert.Equal(1, Emitted(ForcedModel("list", Eot, Period, $$"""{"eos_token_id": [{{Period}}, {{Eot}}]}"""), out _));
        // A generation_config.json that declares no eos_token_id is read alone, as transformers reads it: config.json's id
        // (".") does not stop it where the tokenizer's EOS is never chosen.
        Assert.Equal(5, Emitted(ForcedModel("silent", Period, Period, """{"do_sample": false}"""), out _, "."));
    }
}
