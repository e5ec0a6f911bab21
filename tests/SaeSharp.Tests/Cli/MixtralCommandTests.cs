using System.Text.Json.Nodes;
using SaeSharp.Interop;
using SaeSharp.IO;
using SaeSharp.Models;
using SaeSharp.Saes;
using SaeSharp.Tests.Tokenizers;
using static TorchSharp.torch;

namespace SaeSharp.Tests.Cli;

/// <summary>
/// The CLI on a mixture-of-experts model: the transformers-written tiny Mixtral (tests/data/hf_models/mixtral, 4 experts,
/// top 2; some tests also Qwen3-MoE, qwen3_moe: 6 experts of width 24, top 2, and Qwen2-MoE, qwen2_moe, with its shared
/// expert) with a SentencePiece-style tokenizer.json, through <c>sae model info/run/generate</c>, <c>sae train --model</c>,
/// <c>sae eval --model</c>, <c>sae features</c> and <c>sae cache</c>, at hook_mlp_out and at one expert's hook_post.
/// </summary>
public class MixtralCommandTests : TinyGpt2CliTestBase
{
    private string Mixtral(string family = "mixtral")
    {
        string dir = P(family);
        Directory.CreateDirectory(dir);
        foreach (var f in new[] { "config.json", "generation_config.json", "model.safetensors" })
            File.Copy(TestPaths.Data("hf_models", family, f), Path.Combine(dir, f));
        SentencePieceTokenizerTests.WriteTokenizer(dir);
        return dir;
    }

    private string Text()
    {
        var rng = new Random(5);
        string[] words = ["a", "b", "ab", "ba", "aab", "abb"];
        File.WriteAllLines(P("text.txt"), Enumerable.Range(0, 300).Select(_ => string.Join(" ", Enumerable.Range(0, 12).Select(_ => words[rng.Next(words.Length)]))));
        return P("text.txt");
    }

    /// <summary>The identity pair (W_enc = [I, −I], W_dec = [I; −I], ReLU) at <paramref name="hook"/>: an exact reconstruction.</summary>
    private string IdentitySae(string hook, int dIn)
    {
        var cfg = new SaeConfig { Architecture = SaeArchitectures.Standard, DIn = dIn, ApplyBDecToInput = false };
        cfg.Metadata.HookName = hook;
        cfg.Metadata.ContextSize = 16;
        string dir = P("identity-" + hook);
        using var sae = SaeSharp.Tests.Saes.SaeTestUtil.Identity(cfg);
        SaeLensFormat.Save(sae, dir);
        return dir;
    }

    [Fact]
    public void Info_run_and_generate()
    {
        string model = Mixtral();
        var (exit, output, err) = CliRunner.Run("model", "info", "--model", model);
        Assert.True(exit == 0, err);
        Assert.Contains("(mixtral)", output);
        Assert.Contains("num_experts=4 experts_per_token=2", output);
        Assert.Contains("blocks.1.mlp.hook_expert_weights", output);
        // Each expert hook of a block once for all experts; the listing is otherwise the model's own hook names, in order.
        Assert.Matches(@"\n  blocks\.1\.mlp\.experts\.\{0\.\.3\}\.hook_post +\[batch, pos, \d+\]\n", output.ReplaceLineEndings("\n"));
        Assert.DoesNotContain("blocks.1.mlp.experts.3.hook_post", output);
        var listed = output.ReplaceLineEndings("\n").Split('\n').SkipWhile(l => !l.StartsWith("hook points", StringComparison.Ordinal)).Skip(1).Where(l => l.Length > 0).Select(l => l.Trim().Split(' ')[0]).ToList();
        using (var m = SaeSharp.Models.ModelLoader.FromPretrained(model))
        {
            var names = m.HookNames.ToList();
            Assert.Equal(names.Count - 2 * 3 * 3, listed.Count); // 2 layers × 3 expert hooks: 4 lines become 1
            Assert.Equal(names.Where(n => !n.Contains(".experts.", StringComparison.Ordinal)), listed.Where(n => !n.Contains(".experts.", StringComparison.Ordinal)));
        }

        // model run gives transformers' logits and the MoE hooks: router softmax (float32), chosen experts (int64).
        var reference = Npy.LoadNpz(TestPaths.Data("hf_models", "mixtral", "reference.npz"));
        SafeTensors.Save(P("in.safetensors"), new Dictionary<string, Tensor> { ["tokens"] = reference["tokens"] });
        Ok(CliRunner.Run("model", "run", "--model", model, "--input", P("in.safetensors"), "--out", P("out.safetensors"),
            "--hooks", "blocks.0.mlp.hook_expert_weights,blocks.0.mlp.hook_expert_indices,blocks.0.mlp.experts.1.hook_post"));
        var o = SafeTensors.Load(P("out.safetensors"));
        double diff = SaeSharp.Tests.Models.HfTransformersParityTests.RelativeMaxDifference(reference["logits"], o["logits"], "mixtral");
        Assert.True(diff <= 1e-5, $"sae model run's logits differ from transformers' by {diff:G3} of their scale");
        Assert.Equal([2L, 12, 4], o["blocks.0.mlp.hook_expert_weights"].shape);
        Assert.Equal(ScalarType.Int64, o["blocks.0.mlp.hook_expert_indices"].dtype);
        Assert.Equal([2L, 12, 2], o["blocks.0.mlp.hook_expert_indices"].shape);
        Assert.Equal([2L, 12, 48], o["blocks.0.mlp.experts.1.hook_post"].shape);

        (exit, output, err) = CliRunner.Run("model", "generate", "--model", model, "--prompt", "a b ab", "--max-new-tokens", "4");
        Assert.True(exit == 0, err);
        Assert.False(string.IsNullOrWhiteSpace(output));
    }

    [Theory]
    [InlineData("mixtral")]
    [InlineData("qwen3_moe")]
    [InlineData("qwen2_moe")]
    public void Train_eval_features_and_cache_with_the_model(string family)
    {
        string model = Mixtral(family), data = Text();
        Ok(CliRunner.Run("train", "--model", model, "--hook", "blocks.1.hook_mlp_out", "--dataset", data, "--tokens", "256", "--context-size", "16",
            "--arch", "topk", "--k", "2", "--dict-size", "32", "--batch-size", "32", "--eval-rows", "32", "--out", P("run")));
        var cfg = JsonNode.Parse(File.ReadAllText(P("run", "cfg.json")))!;
        Assert.Equal("blocks.1.hook_mlp_out", (string?)cfg["metadata"]!["hook_name"]);
        Assert.Equal(32, (int)cfg["d_in"]!);

        Ok(CliRunner.Run("eval", "--sae", P("run"), "--model", model, "--dataset", data, "--tokens", "64", "--json", P("e.json")));
        Assert.Equal(64, (long)JsonNode.Parse(File.ReadAllText(P("e.json")))!["token_stats"]!["total_tokens_eval_reconstruction"]!);
        Ok(CliRunner.Run("features", "--sae", P("run"), "--model", model, "--dataset", data, "--tokens", "64", "--features", "0-3", "--out", P("f")));
        Assert.Equal(64, (long)JsonNode.Parse(File.ReadAllText(P("f", "summary.json")))!["tokens"]!);

        // An expert's hook_post: only the tokens routed to the expert are rows (exactly which: ExpertRoutingTests), of the 64
        // read; 2 of 4 or 6 experts per token leave rows out of every such cache but this tiny one's chance.
        Ok(CliRunner.Run("cache", "--model", model, "--hook", "blocks.0.mlp.experts.2.hook_post", "--dataset", data, "--context-size", "16",
            "--tokens", "64", "--out", P("cache")));
        var manifest = JsonNode.Parse(File.ReadAllText(P("cache", "manifest.json")))!;
        Assert.Equal(4, (long)manifest["total_contexts"]!);
        Assert.InRange((long)manifest["total_rows"]!, 1, 63);
        Assert.Contains("expert", OneLineError(CliRunner.Run("cache", "--model", model, "--hook", "blocks.0.mlp.experts.2.hook_post", "--dataset", data,
            "--context-size", "16", "--tokens", "64", "--format", "saelens", "--out", P("saelens"))));
        Ok(CliRunner.Run("train", "--model", model, "--hook", "blocks.0.mlp.experts.2.hook_post", "--dataset", data, "--tokens", "512", "--context-size", "16",
            "--epochs", "0", "--arch", "topk", "--k", "2", "--dict-size", "32", "--batch-size", "16", "--eval-rows", "16", "--out", P("expert-run")));
    }

    [Theory]
    [InlineData("blocks.1.hook_mlp_out", 32)]
    [InlineData("blocks.0.mlp.experts.2.hook_post", 48)]
    [InlineData("blocks.1.mlp.experts.5.hook_post", 24, "qwen3_moe")]
    [InlineData("blocks.1.mlp.shared_expert.hook_post", 40, "qwen2_moe")]
    public void Eval_splices_an_exact_SAE_at_an_MoE_hook_without_changing_the_model(string hook, int dIn, string family = "mixtral")
    {
        // The identity SAE reconstructs its hook exactly, so spliced in it leaves the logits as they were: CE loss score 1, KL 0.
        string model = Mixtral(family), data = Text();
        Ok(CliRunner.Run("eval", "--sae", IdentitySae(hook, dIn), "--model", model, "--dataset", data, "--tokens", "64", "--context-size", "16", "--json", P("e.json")));
        var r = JsonNode.Parse(File.ReadAllText(P("e.json")))!;
        Assert.True(Math.Abs((double)r["model_performance_preservation"]!["ce_loss_score"]! - 1) < 1e-4, r.ToJsonString());
        Assert.True((double)r["model_behavior_preservation"]!["kl_div_with_sae"]! < 1e-5, r.ToJsonString());
    }

    /// <summary><c>sae probe --artifacts</c> at an expert's hook is refused naming the hook and what to do, before the
    /// dataset is read (this one does not even match the tokenizer) and before anything is written under the folder.</summary>
    [Fact]
    public void Probe_artifacts_at_an_expert_hook_are_refused_before_anything_is_read_or_written()
    {
        string model = Mixtral(), hook = "blocks.0.mlp.experts.2.hook_post";
        File.WriteAllText(P("labels.jsonl"), "{\"text\": \"a b\", \"words\": [\"a\", \"b\"], \"labels\": [[\"x\"]]}\n");
        string error = OneLineError(CliRunner.Run("probe", "--model", model, "--sae", IdentitySae(hook, 48), "--dataset", P("labels.jsonl"),
            "--artifacts", P("art")));
        Assert.Contains($"--artifacts: {hook} is an MoE expert's hook", error);
        Assert.Contains("without --artifacts", error);
        Assert.True(!Directory.Exists(P("art")) || Directory.GetFileSystemEntries(P("art")).Length == 0, "something was written under --artifacts");
    }

    [Fact]
    public void A_dense_MLP_hook_is_a_one_line_error_naming_the_MoE_hooks()
    {
        string model = Mixtral(), data = Text();
        string err = OneLineError(CliRunner.Run("train", "--model", model, "--hook", "blocks.0.mlp.hook_post", "--dataset", data, "--tokens", "256",
            "--context-size", "16", "--arch", "topk", "--k", "2", "--dict-size", "32", "--out", P("run")));
        Assert.Contains("mixture of 4 experts", err);
        Assert.Contains("blocks.0.mlp.hook_expert_weights", err);
    }
}
