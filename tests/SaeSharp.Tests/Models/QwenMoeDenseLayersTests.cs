using System.Text.Json.Nodes;
using SaeSharp.IO;
using SaeSharp.Models;
using SaeSharp.Tests.Tokenizers;
using static TorchSharp.torch;

namespace SaeSharp.Tests.Models;

/// <summary>
/// Qwen2-MoE / Qwen3-MoE with dense layers (<c>mlp_only_layers</c>, <c>decoder_sparse_step</c>; transformers'
/// Qwen2MoeDecoderLayer / Qwen3MoeDecoderLayer: layer i is a mixture of experts when i is not in mlp_only_layers and
/// (i + 1) % decoder_sparse_step == 0, else a dense MLP of intermediate_size). Checked against the reference logits that real
/// transformers computed for the dense qwen2 / qwen3 fixtures: their checkpoints rewritten as Qwen-MoE checkpoints whose
/// dense layers keep the dense MLP and whose sparse layer has 4 identical experts, each that layer's dense MLP padded with
/// 32 dead neurons (zero gate, up and down weights: moe_intermediate_size 96, not intermediate_size 64), renormalised
/// top-2 routing with a random router (the chosen weights sum to 1, so the layer computes the dense MLP), and for Qwen2-MoE
/// a shared expert whose down_proj is zero. So the model must equal the dense one.
/// </summary>
public class QwenMoeDenseLayersTests
{
    private static string Folder(string name) => TestPaths.Data("hf_models", name);

    [Theory]
    [InlineData("qwen3", "qwen3_moe", "mlp_only_layers")]
    [InlineData("qwen3", "qwen3_moe", "decoder_sparse_step")]
    [InlineData("qwen2", "qwen2_moe", "mlp_only_layers")]
    [InlineData("qwen2", "qwen2_moe", "decoder_sparse_step")]
    public void Dense_layers_and_a_layer_of_identical_experts_equal_the_dense_model(string dense, string moeType, string how)
    {
        using var scope = NewDisposeScope();
        var config = JsonNode.Parse(File.ReadAllText(Path.Combine(Folder(dense), "config.json")))!.AsObject();
        int nLayer = (int)config["num_hidden_layers"]!, hidden = (int)config["hidden_size"]!, width = (int)config["intermediate_size"]!;
        const int experts = 4, pad = 32;
        config["model_type"] = moeType;
        config["architectures"] = new JsonArray(moeType == "qwen3_moe" ? "Qwen3MoeForCausalLM" : "Qwen2MoeForCausalLM");
        config["num_experts"] = experts;
        config["num_experts_per_tok"] = 2;
        config["norm_topk_prob"] = true;
        config["moe_intermediate_size"] = width + pad;
        if (moeType == "qwen2_moe") config["shared_expert_intermediate_size"] = 8;
        // Only the last layer sparse: mlp_only_layers lists the others, or decoder_sparse_step = nLayer.
        if (how == "mlp_only_layers") config["mlp_only_layers"] = new JsonArray([.. Enumerable.Range(0, nLayer - 1).Select(i => (JsonNode?)i)]);
        else config["decoder_sparse_step"] = nLayer;
        int last = nLayer - 1;

        var weights = new Dictionary<string, Tensor>();
        using (var model = ModelLoader.FromPretrained(Folder(dense)))
            foreach (var (name, p) in model.named_parameters())
                weights[name] = p.detach().clone();
        var g = new TorchSharp.torch.Generator(7);
        string m = $"model.layers.{last}.mlp.";
        Tensor gate = weights[m + "gate_proj.weight"], up = weights[m + "up_proj.weight"], down = weights[m + "down_proj.weight"];
        foreach (var k in new[] { "gate_proj", "up_proj", "down_proj" }) weights.Remove(m + k + ".weight");
        weights[m + "gate.weight"] = randn(experts, hidden, generator: g);
        for (int e = 0; e < experts; e++)
        {
            weights[m + $"experts.{e}.gate_proj.weight"] = cat([gate, zeros(pad, hidden)], 0);
            weights[m + $"experts.{e}.up_proj.weight"] = cat([up, zeros(pad, hidden)], 0);
            weights[m + $"experts.{e}.down_proj.weight"] = cat([down, zeros(hidden, pad)], 1);
        }
        if (moeType == "qwen2_moe")
        {
            weights[m + "shared_expert.gate_proj.weight"] = randn(8, hidden, generator: g);
            weights[m + "shared_expert.up_proj.weight"] = randn(8, hidden, generator: g);
            weights[m + "shared_expert.down_proj.weight"] = zeros(hidden, 8);
            weights[m + "shared_expert_gate.weight"] = randn(1, hidden, generator: g);
        }
        string dir = TestPaths.TempDir();
        File.WriteAllText(Path.Combine(dir, "config.json"), config.ToJsonString());
        SafeTensors.Save(Path.Combine(dir, "model.safetensors"), weights);

        using var moe = ModelLoader.FromPretrained(dir);
        var h = moe.HookPoints;
        Assert.Contains("blocks.0.mlp.hook_pre", h.Names);
        Assert.DoesNotContain("blocks.0.mlp.hook_expert_weights", h.Names);
        Assert.Contains($"blocks.{last}.mlp.experts.3.hook_post", h.Names);
        Assert.Equal(width, moe.HookWidth("blocks.0.mlp.hook_post"));
        Assert.Equal(width + pad, moe.HookWidth($"blocks.{last}.mlp.experts.0.hook_post"));
        Assert.Contains($"moe_d_mlp={width + pad} dense_mlp_layers=0", moe.Config.ToString());
        var r = Npy.LoadNpz(Path.Combine(Folder(dense), "reference.npz"));
        var (logits, cache) = moe.RunWithCache(r["tokens"], [$"blocks.{last}.mlp.hook_expert_weights"]);
        using (cache)
        {
            // the routing is real: the router's softmax is not uniform
            Assert.True(cache[$"blocks.{last}.mlp.hook_expert_weights"].max().item<float>() > 0.5f);
        }
        double diff = HfTransformersParityTests.RelativeMaxDifference(r["logits"], logits!, $"{dense} as {moeType} ({how})");
        Assert.True(diff <= 1e-5, $"{dense} as {moeType} ({how}): logits differ from transformers' dense reference by {diff:G3} of their scale");
    }

    [Fact]
    public void Dense_layers_follow_mlp_only_layers_and_decoder_sparse_step_together()
    {
        // 6 layers, decoder_sparse_step 2 (layers 1, 3, 5 sparse), mlp_only_layers [3]: sparse 1 and 5 only.
        var root = new JsonObject
        {
            ["model_type"] = "qwen3_moe", ["hidden_size"] = 32, ["num_attention_heads"] = 4, ["num_key_value_heads"] = 2, ["head_dim"] = 8,
            ["num_hidden_layers"] = 6, ["vocab_size"] = 64, ["decoder_sparse_step"] = 2, ["mlp_only_layers"] = new JsonArray(3),
            ["num_experts"] = 4, ["num_experts_per_tok"] = 2, ["intermediate_size"] = 40, ["moe_intermediate_size"] = 12,
        };
        var s = DecoderSettings.From(new JsonConfig("config.json", root), "qwen3_moe");
        Assert.Equal(new[] { true, false, true, true, true, false }, s.DenseMlpLayers);
        Assert.Equal((40, 12, 12), (s.Intermediate, s.MoeIntermediate, s.ExpertIntermediate));
        // Without dense layers the experts' width is the MLP width, as before (intermediate_size unused).
        root.Remove("decoder_sparse_step");
        root.Remove("mlp_only_layers");
        var sparse = DecoderSettings.From(new JsonConfig("config.json", root), "qwen3_moe");
        Assert.Null(sparse.DenseMlpLayers);
        Assert.Equal((12, 0), (sparse.Intermediate, sparse.MoeIntermediate));
        // Qwen3MoeConfig's intermediate_size default (6144) for dense layers when the key is absent.
        root.Remove("intermediate_size");
        root["mlp_only_layers"] = new JsonArray(0);
        Assert.Equal(6144, DecoderSettings.From(new JsonConfig("config.json", root), "qwen3_moe").Intermediate);
    }
}
