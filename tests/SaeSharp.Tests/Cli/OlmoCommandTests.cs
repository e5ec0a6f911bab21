using System.Text.Json.Nodes;
using SaeSharp.IO;
using SaeSharp.Tests.Tokenizers;
using static TorchSharp.torch;

namespace SaeSharp.Tests.Cli;

/// <summary>
/// The CLI on the tiny OLMo (1), OLMo-2, OLMo 3, OLMoE, gpt-oss (MXFP4), DeepSeek-V3 and DeepSeek-V2 checkpoints (tests/data/hf_models/olmo, olmo2, olmo3, olmoe-clip, gpt_oss-mxfp4, deepseek_v3, deepseek_v3-yarn, deepseek_v2, deepseek_v2-group) with a SentencePiece-style
/// tokenizer.json: <c>sae model info</c>, <c>sae model run</c> against the reference logits, and a short
/// <c>sae train --model</c> at blocks.0.hook_resid_post.
/// </summary>
public class OlmoCommandTests : TinyGpt2CliTestBase
{
    private string Model(string family)
    {
        string dir = P(family);
        Directory.CreateDirectory(dir);
        foreach (var f in new[] { "config.json", "model.safetensors" })
            File.Copy(TestPaths.Data("hf_models", family, f), Path.Combine(dir, f));
        SentencePieceTokenizerTests.WriteTokenizer(dir);
        return dir;
    }

    [Theory]
    [InlineData("olmo2", "(olmo2)", "blocks.1.ln2.hook_normalized")]
    [InlineData("olmoe-clip", "clip_qkv=0.5", "blocks.1.mlp.hook_expert_indices")]
    [InlineData("olmo", "(olmo)", "blocks.1.ln1.hook_normalized")]
    [InlineData("olmo3", "sliding_window=5", "blocks.0.attn.hook_pattern")]
    [InlineData("gpt_oss-mxfp4", "sliding_window=4", "blocks.3.mlp.hook_expert_weights")]
    [InlineData("deepseek_v3", "mla(q_lora_rank=20 kv_lora_rank=12", "blocks.1.attn.hook_kv_latent")]
    [InlineData("deepseek_v3-yarn", "n_group=4 topk_group=2 routed_scaling_factor=2.5", "blocks.2.mlp.shared_expert.hook_post")]
    [InlineData("deepseek_v2", "topk_method=greedy routed_scaling_factor=1 softmax_routing", "blocks.1.mlp.hook_expert_indices")]
    [InlineData("deepseek_v2-group", "topk_method=group_limited_greedy n_group=4 topk_group=2", "blocks.0.mlp.hook_expert_weights")]
    public void Info_run_and_train(string family, string inInfo, string hook)
    {
        string model = Model(family);
        var (exit, output, err) = CliRunner.Run("model", "info", "--model", model);
        Assert.True(exit == 0, err);
        Assert.Contains(inInfo, output);
        Assert.Contains(hook, output);

        var reference = Npy.LoadNpz(TestPaths.Data("hf_models", family, "reference.npz"));
        SafeTensors.Save(P("in.safetensors"), new Dictionary<string, Tensor> { ["tokens"] = reference["tokens"] });
        Ok(CliRunner.Run("model", "run", "--model", model, "--input", P("in.safetensors"), "--out", P("out.safetensors"), "--hooks", hook));
        var o = SafeTensors.Load(P("out.safetensors"));
        double diff = SaeSharp.Tests.Models.HfTransformersParityTests.RelativeMaxDifference(reference["logits"], o["logits"], family);
        Assert.True(diff <= 1e-5, $"{family}: sae model run's logits differ from the reference by {diff:G3} of their scale");
        Assert.True(o.ContainsKey(hook));

        var rng = new Random(5);
        string[] words = ["a", "b", "ab", "ba", "aab", "abb"];
        File.WriteAllLines(P("text.txt"), Enumerable.Range(0, 200).Select(_ => string.Join(" ", Enumerable.Range(0, 12).Select(_ => words[rng.Next(words.Length)]))));
        Ok(CliRunner.Run("train", "--model", model, "--hook", "blocks.0.hook_resid_post", "--dataset", P("text.txt"), "--tokens", "256",
            "--context-size", "16", "--arch", "topk", "--k", "2", "--dict-size", "32", "--batch-size", "32", "--eval-rows", "32", "--out", P("run")));
        var cfg = JsonNode.Parse(File.ReadAllText(P("run", "cfg.json")))!;
        Assert.Equal("blocks.0.hook_resid_post", (string?)cfg["metadata"]!["hook_name"]);
        Assert.Equal(32, (int)cfg["d_in"]!);
        Assert.Equal(family, (string?)cfg["metadata"]!["model_name"]);
    }
}
