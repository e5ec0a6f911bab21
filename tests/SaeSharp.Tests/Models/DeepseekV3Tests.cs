using System.Text.Json.Nodes;
using SaeSharp.IO;
using SaeSharp.Models;
using SaeSharp.Tests.Tokenizers;
using static TorchSharp.torch;

namespace SaeSharp.Tests.Models;

/// <summary>
/// DeepSeek-V3 (<c>deepseek_v3</c>) beyond the logits parity of <see cref="HfTransformersParityTests"/>: layer 1's hooks
/// against the "hook:" arrays bench/reference/deepseek_fixture.py wrote from its transcription of transformers'
/// modeling_deepseek_v3.py (latents, q/k/v before and after the interleaved or plain rotary, pattern, z, router scores, the
/// experts chosen, the shared expert, the MLP output); the group-limited routing worked by hand on one token; the hook
/// layout of a model whose first layers are dense; configs refused by name.
/// </summary>
public class DeepseekV3Tests
{
    private static string Folder(string name) => TestPaths.Data("hf_models", name);

    [Theory]
    [InlineData("deepseek_v3")]
    [InlineData("deepseek_v3-yarn")]
    public void Layer_hooks_match_the_reference_transcription(string family)
    {
        var names = AssertHooksMatchReference(Folder(family), family);
        Assert.Equal(family == "deepseek_v3" ? 13 : 12, names.Count);   // hook_q_latent only with q_lora_rank
    }

    /// <summary>Runs the model in <paramref name="folder"/> on its reference.npz's tokens and checks every "hook:" array
    /// there (relative max difference ≤ 1e-5; expert indices as sets); returns the hook names checked.</summary>
    internal static IReadOnlyCollection<string> AssertHooksMatchReference(string folder, string family)
    {
        using var scope = NewDisposeScope();
        var r = Npy.LoadNpz(Path.Combine(folder, "reference.npz"));
        var expected = r.Where(kv => kv.Key.StartsWith("hook:", StringComparison.Ordinal)).ToDictionary(kv => kv.Key["hook:".Length..], kv => kv.Value);
        using var model = ModelLoader.FromPretrained(folder);
        var (_, cache) = model.RunWithCache(r["tokens"], [.. expected.Keys]);
        using (cache)
        {
            foreach (var (name, want) in expected)
            {
                var got = cache[name];
                if (name.EndsWith("hook_expert_indices", StringComparison.Ordinal))
                {
                    // the fixture's are sorted per token (transformers' topk(sorted=False) has no order); ours are best first
                    Assert.Equal(want.data<long>().ToArray(), got.sort(-1).Values.data<long>().ToArray());
                    continue;
                }
                double diff = HfTransformersParityTests.RelativeMaxDifference(want, got, $"{family} {name}");
                Assert.True(diff <= 1e-5, $"{family} {name}: differs from the reference by {diff:G3} of its scale");
            }
        }
        return expected.Keys;
    }

    [Fact]
    public void Group_limited_routing_by_hand_on_one_token()
    {
        // 8 experts in 2 groups, topk_group 1, 2 per token, norm_topk_prob, routed_scaling_factor 2.5.
        // Scores:           0.9  0.1  0.2  0.3 | 0.5  0.6  0.7  0.05
        // Bias:             0    0    0    0   | 0.3  0    0    0
        // Biased scores:    0.9  0.1  0.2  0.3 | 0.8  0.6  0.7  0.05
        // Group scores (sum of the two best biased): group 0 = 0.9 + 0.3 = 1.2, group 1 = 0.8 + 0.7 = 1.5 -> group 1 only,
        // so expert 0 (the best score) is out. In group 1 the biased top 2 are experts 4 (0.8) and 6 (0.7), though expert
        // 5's unbiased score (0.6) beats expert 4's (0.5). Weights: the unbiased 0.5 and 0.7, over their sum 1.2, times 2.5:
        // 1.0416667 and 1.4583333.
        using var scope = NewDisposeScope();
        var scores = tensor(new float[] { 0.9f, 0.1f, 0.2f, 0.3f, 0.5f, 0.6f, 0.7f, 0.05f }).unsqueeze(0);
        var bias = tensor(new float[] { 0, 0, 0, 0, 0.3f, 0, 0, 0 });
        var (chosen, weights) = GroupLimitedRouter.Route(scores, bias, new GroupRouting(2, 1, 2.5), 2, normTopK: true);
        Assert.Equal(new long[] { 4, 6 }, chosen.data<long>().ToArray());
        var w = weights.data<float>().ToArray();
        Assert.Equal(2.5 * 0.5 / 1.2, w[0], 5);
        Assert.Equal(2.5 * 0.7 / 1.2, w[1], 5);
        // Without renormalisation: the unbiased scores times 2.5.
        var (_, raw) = GroupLimitedRouter.Route(scores, bias, new GroupRouting(2, 1, 2.5), 2, normTopK: false);
        Assert.Equal(new[] { 1.25, 1.75 }, raw.data<float>().Select(x => Math.Round((double)x, 5)).ToArray());
        // Two groups allowed: expert 0 (0.9) comes back as the best, then expert 4 (0.8 biased).
        var (both, _) = GroupLimitedRouter.Route(scores, bias, new GroupRouting(2, 2, 2.5), 2, normTopK: true);
        Assert.Equal(new long[] { 0, 4 }, both.data<long>().ToArray());
    }

    [Fact]
    public void Dense_first_layers_and_moe_layers_have_their_own_hooks_and_widths()
    {
        using var model = ModelLoader.FromPretrained(Folder("deepseek_v3"));
        var h = model.HookPoints;
        // first_k_dense_replace 1: block 0 is a dense gated MLP, blocks 1 and 2 mixtures of 8 experts with a shared expert (no gate).
        Assert.Contains("blocks.0.mlp.hook_pre", h.Names);
        Assert.Contains("blocks.0.mlp.hook_pre_linear", h.Names);
        Assert.DoesNotContain("blocks.0.mlp.hook_expert_weights", h.Names);
        Assert.Contains("blocks.1.mlp.experts.7.hook_post", h.Names);
        Assert.Contains("blocks.2.mlp.shared_expert.hook_gate", h.Names);
        Assert.DoesNotContain("blocks.1.mlp.hook_shared_expert_gate", h.Names);
        Assert.Contains("blocks.1.attn.hook_kv_latent", h.Names);
        Assert.Contains("blocks.1.attn.hook_q_latent", h.Names);
        var e = Assert.Throws<SaeSharpException>(() => h.Resolve("blocks.1.mlp.hook_pre"));
        Assert.Contains("mixture of 8 experts", e.Message);
        // Hugging Face module paths of the latent attention and the MoE.
        Assert.Equal("blocks.1.attn.hook_kv_latent", h.Resolve("model.layers.1.self_attn.kv_a_layernorm"));
        Assert.Equal("blocks.1.attn.hook_q", h.Resolve("model.layers.1.self_attn.q_b_proj"));
        Assert.Equal("blocks.2.mlp.shared_expert.hook_pre", h.Resolve("model.layers.2.mlp.shared_experts.up_proj"));
        Assert.Equal("blocks.2.mlp.experts.3.hook_gate", h.Resolve("model.layers.2.mlp.experts.3.gate_proj"));
        Assert.Equal("blocks.0.mlp.hook_pre", h.Resolve("model.layers.0.mlp.gate_proj"));
        Assert.Equal("blocks.1.ln2.hook_normalized", h.Resolve("model.layers.1.mlp.gate", SaeSharp.Hooks.HookKind.In));
        // Widths: 4 heads of qk_head_dim 8 + 8 for q and k, of v_head_dim 12 for v and z; the latents; dense 48, experts 16.
        Assert.Equal(64, model.HookWidth("blocks.1.attn.hook_q"));
        Assert.Equal(64, model.HookWidth("blocks.1.attn.hook_rot_k"));
        Assert.Equal(48, model.HookWidth("blocks.1.attn.hook_v"));
        Assert.Equal(48, model.HookWidth("blocks.1.attn.hook_z"));
        Assert.Equal(12, model.HookWidth("blocks.1.attn.hook_kv_latent"));
        Assert.Equal(20, model.HookWidth("blocks.1.attn.hook_q_latent"));
        Assert.Equal(48, model.HookWidth("blocks.0.mlp.hook_post"));
        Assert.Equal(16, model.HookWidth("blocks.1.mlp.experts.0.hook_post"));
        Assert.Equal(16, model.HookWidth("blocks.1.mlp.shared_expert.hook_post"));
        Assert.Equal(8, model.HookWidth("blocks.1.mlp.hook_expert_weights"));
        Assert.Contains("blocks.{0..2}.mlp.experts.{0..7}.hook_gate", h.ValidNamesSummary());
    }

    [Fact]
    public void Bf16_model_keeps_the_router_in_float32_and_stays_near_the_float32_logits()
    {
        // The router's scores and e_score_correction_bias are float32 in a bf16 model (transformers computes the router in
        // float32 and keeps the bias a float32 buffer); the logits stay within bf16 rounding of the float32 reference.
        using var scope = NewDisposeScope();
        var r = Npy.LoadNpz(Path.Combine(Folder("deepseek_v3"), "reference.npz"));
        using var model = ModelLoader.FromPretrained(Folder("deepseek_v3"), ScalarType.BFloat16);
        var bias = model.named_parameters().Single(p => p.name.EndsWith("layers.1.mlp.gate.e_score_correction_bias", StringComparison.Ordinal)).parameter;
        Assert.Equal(ScalarType.Float32, bias.dtype);
        var (logits, cache) = model.RunWithCache(r["tokens"], ["blocks.1.mlp.hook_expert_weights", "blocks.1.attn.hook_z"]);
        using (cache)
        {
            Assert.Equal(ScalarType.Float32, cache["blocks.1.mlp.hook_expert_weights"].dtype);
            Assert.Equal(ScalarType.BFloat16, cache["blocks.1.attn.hook_z"].dtype);
        }
        double diff = HfTransformersParityTests.RelativeMaxDifference(r["logits"], logits!, "bf16 logits");
        Assert.True(diff < 0.05, $"bf16 logits differ from the float32 reference by {diff:G3} of their scale");
    }

    [Fact]
    public void E4m3fn_values_by_bit_pattern()
    {
        // float8_e4m3fn: 0x38 = exponent 7 (bias 7), mantissa 0 -> 1; 0x40 = 2; 0x3c = 1.5; 0xb8 = -1; 0x08 = 2^-6, the smallest
        // normal; 0x01 = 2^-9, the smallest subnormal (1/8 · 2^-6); 0x7e = 1.75 · 2^8 = 448, the largest; 0x7f, 0xff NaN.
        var v = Fp8BlockQuant.E4m3fn;
        Assert.Equal((1f, 2f, 1.5f, -1f, 0.015625f, 0.001953125f, 448f, -448f, 0f), (v[0x38], v[0x40], v[0x3c], v[0xb8], v[0x08], v[0x01], v[0x7e], v[0xfe], v[0x00]));
        Assert.True(float.IsNaN(v[0x7f]) && float.IsNaN(v[0xff]));
        Assert.Equal(254, v.Count(x => !float.IsNaN(x)));
    }

    [Fact]
    public void Fp8_checkpoint_loads_as_its_dequantised_float_copy()
    {
        // deepseek_v3-fp8 stores the linear weights as e4m3 bytes with 8x8 block scales (partial blocks at the edges);
        // deepseek_v3 holds the fixture's fp8 · scale in float32. Every weight must load identical.
        using var scope = NewDisposeScope();
        using var fp8 = ModelLoader.FromPretrained(Folder("deepseek_v3-fp8"));
        using var f32 = ModelLoader.FromPretrained(Folder("deepseek_v3"));
        var expected = f32.named_parameters().ToDictionary(p => p.name, p => p.parameter);
        int n = 0;
        foreach (var (name, p) in fp8.named_parameters())
        {
            Assert.True(expected[name].eq(p).all().item<bool>(), $"{name} differs from the float copy");
            n++;
        }
        Assert.Equal(expected.Count, n);
        // bf16: the float32 product rounded once.
        using var bf16 = ModelLoader.FromPretrained(Folder("deepseek_v3-fp8"), ScalarType.BFloat16);
        var w = bf16.named_parameters().Single(p => p.name.EndsWith("layers.1.self_attn.kv_b_proj.weight", StringComparison.Ordinal)).parameter;
        Assert.True(w.to(ScalarType.Float32).eq(expected[expected.Keys.Single(k => k.EndsWith("layers.1.self_attn.kv_b_proj.weight", StringComparison.Ordinal))].to(ScalarType.BFloat16).to(ScalarType.Float32)).all().item<bool>());
    }

    [Fact]
    public void Fp8_checkpoint_with_wrong_blocks_or_without_quantization_config_is_refused()
    {
        string dir = TestPaths.TempDir();
        try
        {
            foreach (var f in Directory.GetFiles(Folder("deepseek_v3-fp8"))) File.Copy(f, Path.Combine(dir, Path.GetFileName(f)));
            var config = JsonNode.Parse(File.ReadAllText(Path.Combine(dir, "config.json")))!.AsObject();
            config["quantization_config"]!["weight_block_size"] = new JsonArray(16, 16);
            File.WriteAllText(Path.Combine(dir, "config.json"), config.ToJsonString());
            var e = Assert.Throws<SaeSharpException>(() => ModelLoader.FromPretrained(dir));
            Assert.Contains("needs a", e.Message);
            Assert.Contains("weight_scale_inv' of one scale per 16x16 block", e.Message);
            // Without the quantization_config the scales are not applied: the float8 bytes are refused, not read as numbers.
            config.Remove("quantization_config");
            File.WriteAllText(Path.Combine(dir, "config.json"), config.ToJsonString());
            e = Assert.Throws<SaeSharpException>(() => ModelLoader.FromPretrained(dir));
            Assert.Contains("is F8_E4M3 (float8), which is read only where a block scale", e.Message);
        }
        finally
        {
            Directory.Delete(dir, true);
        }
    }

    [Fact]
    public void Fp8_nan_codes_or_nan_scales_are_errors_naming_the_weight()
    {
        string dir = TestPaths.TempDir();
        try
        {
            foreach (var f in Directory.GetFiles(Folder("deepseek_v3-fp8"))) File.Copy(f, Path.Combine(dir, Path.GetFileName(f)));
            string file = Path.Combine(dir, "model.safetensors");
            string key;
            long cols;
            using (var f = SafeTensorsFile.Open(file))
            {
                key = f.Names.First(k => k.EndsWith(".weight_scale_inv", StringComparison.Ordinal))[..^"_scale_inv".Length];
                cols = f.Info(key).Shape[1];
            }
            byte[] clean = File.ReadAllBytes(file);
            // A NaN block scale (float32 [0, 1]): the whole second 8x8 block is NaN; the first element reported is its corner.
            PatchElement(file, key + "_scale_inv", 1, BitConverter.GetBytes(float.NaN));
            var e = Assert.Throws<SaeSharpException>(() => ModelLoader.FromPretrained(dir));
            Assert.Contains($"'{key}' dequantised from '{key}' and '{key}_scale_inv' is not finite at [0, 8]", e.Message);
            // An e4m3 NaN code (0x7f) in one element.
            File.WriteAllBytes(file, clean);
            PatchElement(file, key, 2 * cols + 5, [0x7f]);
            e = Assert.Throws<SaeSharpException>(() => ModelLoader.FromPretrained(dir));
            Assert.Contains($"'{key}' dequantised from '{key}' and '{key}_scale_inv' is not finite at [2, 5]", e.Message);
        }
        finally
        {
            Directory.Delete(dir, true);
        }
    }

    /// <summary>Overwrites element <paramref name="index"/> (flat) of tensor <paramref name="name"/> in a safetensors file.</summary>
    private static void PatchElement(string file, string name, long index, byte[] bytes)
    {
        long begin;
        using (var f = SafeTensorsFile.Open(file)) begin = f.Info(name).Begin;
        using var stream = File.Open(file, FileMode.Open, FileAccess.ReadWrite);
        var length = new byte[8];
        stream.ReadExactly(length);
        stream.Seek(8 + (long)BitConverter.ToUInt64(length) + begin + index * bytes.Length, SeekOrigin.Begin);
        stream.Write(bytes);
    }

    [Fact]
    public void Mtp_layer_weights_are_ignored()
    {
        // The fixture's checkpoint holds an MTP layer (model.layers.3.*, num_nextn_predict_layers 1) past num_hidden_layers 3.
        Assert.Contains(SafeTensorsKeys(Path.Combine(Folder("deepseek_v3"), "model.safetensors")), k => k.StartsWith("model.layers.3.eh_proj", StringComparison.Ordinal));
        using var model = ModelLoader.FromPretrained(Folder("deepseek_v3"));
        Assert.Equal(3, model.Config.NLayers);
    }

    /// <summary>The tensor names in a safetensors header (8 bytes of length, then the JSON).</summary>
    private static List<string> SafeTensorsKeys(string path)
    {
        using var f = File.OpenRead(path);
        var len = new byte[8];
        f.ReadExactly(len);
        var json = new byte[BitConverter.ToInt64(len)];
        f.ReadExactly(json);
        return [.. JsonNode.Parse(json)!.AsObject().Select(kv => kv.Key)];
    }

    [Theory]
    [InlineData("topk_method", "\"group_limited_greedy\"", "topk_method 'group_limited_greedy' is not supported")]
    [InlineData("scoring_func", "\"softmax\"", "scoring_func 'softmax' is not supported")]
    [InlineData("n_group", "3", "n_routed_experts=8 must split into n_group=3 groups")]
    [InlineData("n_group", "8", "groups of at least 2 experts")]
    [InlineData("topk_group", "3", "topk_group=3 must not exceed n_group=2")]
    [InlineData("num_key_value_heads", "2", "num_key_value_heads=2 differs from num_attention_heads=4")]
    [InlineData("moe_layer_freq", "2", "moe_layer_freq=2 is not supported")]
    [InlineData("qk_rope_head_dim", "7", "qk_rope_head_dim=7 must be even")]
    [InlineData("quantization_config", "{\"quant_method\": \"bitsandbytes\"}", "quant_method 'bitsandbytes' (fmt 'e4m3') is not supported")]
    [InlineData("quantization_config", "{\"quant_method\": \"fp8\", \"fmt\": \"e5m2\"}", "(fmt 'e5m2') is not supported")]
    [InlineData("quantization_config", "{\"quant_method\": \"fp8\", \"weight_block_size\": [128]}", "weight_block_size must be two positive integers")]
    [InlineData("rope_scaling", "{\"type\": \"dynamic\", \"factor\": 2.0}", "rope_scaling type 'dynamic' is not supported")]
    public void Unsupported_configs_are_refused_by_name(string key, string json, string message)
    {
        var root = JsonNode.Parse(File.ReadAllText(Path.Combine(Folder("deepseek_v3"), "config.json")))!.AsObject();
        root[key] = JsonNode.Parse(json);
        var e = Assert.Throws<SaeSharpException>(() => DecoderSettings.From(new JsonConfig("config.json", root), "deepseek_v3"));
        Assert.Contains(message, e.Message);
    }

    [Fact]
    public void Config_defaults_are_DeepseekV3Config_s()
    {
        // An almost empty config takes DeepseekV3Config's defaults: DeepSeek-V3's own sizes.
        var s = DecoderSettings.From(new JsonConfig("config.json", new JsonObject { ["model_type"] = "deepseek_v3" }), "deepseek_v3");
        Assert.Equal((7168, 61, 128, 129_280, 18_432, 2048), (s.Hidden, s.NLayer, s.NHead, s.VocabSize, s.Intermediate, s.MoeIntermediate));
        Assert.Equal(new MlaSettings(1536, 512, 128, 64, 128, true), s.Mla);
        Assert.Equal(new GroupRouting(8, 4, 2.5), s.GroupRouting);
        Assert.Equal((256, 8, 3, 2048, true), (s.NumExperts, s.ExpertsPerToken, s.FirstDenseLayers, s.SharedExpertIntermediate, s.NormTopKProb));
        Assert.Equal(1.0 / Math.Sqrt(192), s.AttnScale, 12);   // qk_head_dim 128 + 64, no rope scaling
        // DeepSeek-V3's hub rope_scaling: yarn factor 40, mscale 1, mscale_all_dim 1: softmax scale times (0.1·ln 40 + 1)²,
        // cos/sin times mscale(1)/mscale_all_dim(1) = 1.
        var yarn = DecoderSettings.From(new JsonConfig("config.json", new JsonObject
        {
            ["model_type"] = "deepseek_v3", ["max_position_embeddings"] = 163840,
            ["rope_scaling"] = new JsonObject { ["type"] = "yarn", ["factor"] = 40.0, ["mscale"] = 1.0, ["mscale_all_dim"] = 1.0, ["beta_fast"] = 32.0,
                ["beta_slow"] = 1.0, ["original_max_position_embeddings"] = 4096.0 },
        }), "deepseek_v3");
        double m = 0.1 * Math.Log(40) + 1;
        Assert.Equal(m * m / Math.Sqrt(192), yarn.AttnScale, 12);
        Assert.Equal(1.0, yarn.RopeAttentionScaling, 12);
        Assert.Equal(32, yarn.InvFreq.Length);   // rotary over qk_rope_head_dim 64
    }
}
