using System.Text.Json.Nodes;
using SaeSharp.IO;
using SaeSharp.Models;
using SaeSharp.Tests.Tokenizers;
using static TorchSharp.torch;

namespace SaeSharp.Tests.Models;

/// <summary>
/// YaRN rope scaling on the Llama-layout families and the gpt-oss config, weights and hooks. The YaRN frequencies and
/// attention factors are compared with tests/data/rope_yarn_cases.json, written by bench/reference/gpt_oss_fixture.py from
/// its transcription of transformers 5's <c>_compute_yarn_parameters</c> (gpt-oss-20b's own rope, a Qwen3 long-context
/// one, the defaults, DeepSeek's mscale ratio, an explicit attention factor, a factor derived from the positions).
/// The forward (yarn through cos/sin, sinks, experts) is in <see cref="HfTransformersParityTests"/>.
/// </summary>
public class GptOssTests
{
    private static string Folder(string name) => TestPaths.Data("hf_models", name);

    [Fact]
    public void Yarn_frequencies_and_attention_factor_match_transformers()
    {
        var cases = JsonNode.Parse(File.ReadAllText(TestPaths.Data("rope_yarn_cases.json")))!.AsArray();
        Assert.Equal(6, cases.Count);
        foreach (var c in cases)
        {
            int headDim = c!["head_dim"]!.GetValue<int>();
            var root = new JsonObject
            {
                ["model_type"] = "llama", ["hidden_size"] = 4 * headDim, ["num_attention_heads"] = 4, ["head_dim"] = headDim,
                ["num_hidden_layers"] = 1, ["intermediate_size"] = 8, ["vocab_size"] = 10,
                ["rope_theta"] = c["rope_theta"]!.GetValue<double>(), ["max_position_embeddings"] = c["max_position_embeddings"]!.GetValue<int>(),
                ["rope_scaling"] = c["rope_scaling"]!.DeepClone(),
            };
            var s = DecoderSettings.From(new JsonConfig("config.json", root), "llama");
            var expected = c["inv_freq"]!.AsArray().Select(x => x!.GetValue<double>()).ToArray();
            Assert.Equal(expected.Length, s.InvFreq.Length);
            for (int i = 0; i < expected.Length; i++)   // float32 on both sides: equal up to one float32 rounding
                Assert.True(Math.Abs(expected[i] - s.InvFreq[i]) <= 1.2e-7 * expected[i], $"{root["rope_scaling"]!.ToJsonString()}: inv_freq[{i}] {s.InvFreq[i]} vs {expected[i]}");
            Assert.Equal(c["attention_factor"]!.GetValue<double>(), s.RopeAttentionScaling, 12);
        }
    }

    [Fact]
    public void Yarn_scales_cos_and_sin_by_the_attention_factor()
    {
        // gpt-oss-20b's yarn: attention factor 0.1·ln 32 + 1 = 1.3466 multiplies the rotated q and k (hook_rot_q = q rotated
        // by the scaled cos/sin), so |rot_q| = 1.3466·|q| per head (a rotation keeps norms).
        using var scope = NewDisposeScope();
        using var model = ModelLoader.FromPretrained(Folder("gpt_oss"));
        var tokens = tensor(new long[] { 3, 14, 15, 92, 65 }).unsqueeze(0);
        var (_, cache) = model.RunWithCache(tokens, ["blocks.1.attn.hook_q", "blocks.1.attn.hook_rot_q"]);
        using (cache)
        {
            var ratio = cache["blocks.1.attn.hook_rot_q"].norm(-1) / cache["blocks.1.attn.hook_q"].norm(-1);
            double expected = 0.1 * Math.Log(32) + 1;
            Assert.True((ratio - expected).abs().max().item<float>() < 1e-5, $"|rot_q| / |q| = {ratio}, expected {expected}");
        }
    }

    [Fact]
    public void Hub_config_takes_GptOssConfig_defaults()
    {
        // openai/gpt-oss-20b's config.json, trimmed to what it states beyond GptOssConfig's defaults (rope_scaling,
        // layer_types and head_dim left to the defaults must give the same model).
        var root = JsonNode.Parse("""
            {"architectures": ["GptOssForCausalLM"], "model_type": "gpt_oss", "num_hidden_layers": 24, "num_local_experts": 32,
             "experts_per_token": 4, "quantization_config": {"quant_method": "mxfp4"}}
            """)!.AsObject();
        var s = DecoderSettings.From(new JsonConfig("config.json", root), "gpt_oss");
        Assert.Equal((2880, 24, 64, 8, 64, 2880, 201_088, 131_072), (s.Hidden, s.NLayer, s.NHead, s.NKvHead, s.HeadDim, s.Intermediate, s.VocabSize, s.MaxPositions));
        Assert.Equal((32, 4, 1e-5, 150_000.0, 128), (s.NumExperts, s.ExpertsPerToken, s.Eps, s.RopeTheta, s.SlidingWindow!.Value));
        Assert.Equal((true, true, true, false, 7.0, 1.702), (s.GptOss, s.QkvBias, s.OBias, s.TieEmbeddings, s.SwigluLimit, s.SwigluAlpha));
        Assert.Equal(Enumerable.Range(0, 24).Select(i => i % 2 == 0), s.SlidingLayers);
        Assert.Equal(0.1 * Math.Log(32) + 1, s.RopeAttentionScaling, 12);
        // YaRN with truncate false: the ramp starts between dims (not at an integer), the fastest frequency is θ's own.
        Assert.Equal(1.0, s.InvFreq[0], 7);
        Assert.Equal(Math.Pow(150_000, -62.0 / 64) / 32, s.InvFreq[31], 7);
    }

    [Theory]
    [InlineData("quantization_config", """{"quant_method": "bitsandbytes"}""", "quant_method 'bitsandbytes' is not supported")]
    [InlineData("num_experts_per_tok", "5", "num_experts_per_tok=5 must be between 1 and num_local_experts=4")]
    [InlineData("rope_scaling", """{"rope_type": "yarn", "factor": 32.0, "truncate": "no"}""", "'truncate' must be true or false")]
    public void Config_errors_name_the_problem(string key, string value, string message)
    {
        string dir = CopyOf("gpt_oss");
        try
        {
            var config = JsonNode.Parse(File.ReadAllText(Path.Combine(dir, "config.json")))!.AsObject();
            config[key] = JsonNode.Parse(value);
            File.WriteAllText(Path.Combine(dir, "config.json"), config.ToJsonString());
            var e = Assert.Throws<SaeSharpException>(() => ModelLoader.FromPretrained(dir));
            Assert.Contains(message, e.Message);
        }
        finally
        {
            Directory.Delete(dir, true);
        }
    }

    [Fact]
    public void Mxfp4_experts_dequantise_to_the_float_checkpoint()
    {
        // The two fixture folders are one model: gpt_oss holds mxfp4.py's dequantisation of gpt_oss-mxfp4's blocks/scales.
        using var scope = NewDisposeScope();
        using var packed = ModelLoader.FromPretrained(Folder("gpt_oss-mxfp4"));
        using var plain = ModelLoader.FromPretrained(Folder("gpt_oss"));
        var expected = plain.state_dict();
        int experts = 0;
        foreach (var (key, value) in packed.state_dict())
        {
            Assert.True(expected[key].eq(value).all().item<bool>(), $"{key} differs");
            if (key.Contains("experts.", StringComparison.Ordinal)) experts++;
        }
        Assert.Equal(4 * 4, experts);   // 4 layers × gate_up_proj, its bias, down_proj, its bias
    }

    [Fact]
    public void A_NaN_scale_byte_is_an_error_naming_the_weight_and_the_element()
    {
        // E8M0 0xFF is NaN (OCP MX spec): the dequantised weight would be NaN in one 32-value group.
        string dir = CopyOf("gpt_oss-mxfp4");
        try
        {
            var weights = SafeTensors.Load(Path.Combine(dir, "model.safetensors"));
            var scales = weights["model.layers.1.mlp.experts.down_proj_scales"];   // [experts, rows, groups]
            scales[0, 3, 0] = tensor((byte)255);
            SafeTensors.Save(Path.Combine(dir, "model.safetensors"), weights);
            var e = Assert.Throws<SaeSharpException>(() => ModelLoader.FromPretrained(dir));
            Assert.Contains("'model.layers.1.mlp.experts.down_proj' dequantised from 'model.layers.1.mlp.experts.down_proj_blocks' and " +
                            "'model.layers.1.mlp.experts.down_proj_scales' is not finite at [0, 0, 3]", e.Message);   // [expert, in, out]: group 0's first input, row 3
        }
        finally
        {
            Directory.Delete(dir, true);
        }
    }

    [Fact]
    public void A_blocks_tensor_without_its_scales_is_an_error()
    {
        string dir = CopyOf("gpt_oss-mxfp4");
        try
        {
            var weights = SafeTensors.Load(Path.Combine(dir, "model.safetensors"));
            weights.Remove("model.layers.2.mlp.experts.down_proj_scales");
            SafeTensors.Save(Path.Combine(dir, "model.safetensors"), weights);
            var e = Assert.Throws<SaeSharpException>(() => ModelLoader.FromPretrained(dir));
            Assert.Contains("'model.layers.2.mlp.experts.down_proj_blocks' has no 'model.layers.2.mlp.experts.down_proj_scales'", e.Message);
        }
        finally
        {
            Directory.Delete(dir, true);
        }
    }

    [Fact]
    public void Expert_hooks_follow_TransformerLens_GptOssMoE()
    {
        // hook_expert_weights: the top-k softmax scattered over the experts (rows sum to 1, k non-zeros); hook_pre of an
        // expert is its up projection before the clamp (swiglu_limit 1.5 in the fixture: some |values| exceed it), zero at
        // the tokens not routed to it; patching one expert's hook_post to zero changes the output.
        using var scope = NewDisposeScope();
        using var model = ModelLoader.FromPretrained(Folder("gpt_oss"));
        var tokens = tensor(new long[] { 3, 14, 15, 92, 65, 35, 89, 79 }).unsqueeze(0);
        var names = new[] { "blocks.0.mlp.hook_expert_weights", "blocks.0.mlp.hook_expert_indices", "blocks.0.mlp.experts.1.hook_pre", "blocks.0.hook_mlp_out" };
        var (_, cache) = model.RunWithCache(tokens, names);
        using (cache)
        {
            var w = cache[names[0]];
            Assert.Equal(new long[] { 1, 8, 4 }, w.shape);
            Assert.True((w.sum(-1) - 1).abs().max().item<float>() < 1e-6);
            Assert.True(w.gt(0).sum(-1).eq(2).all().item<bool>());
            var routedTo1 = cache[names[1]].eq(1).any(-1);   // [1, 8]
            var pre = cache[names[2]];
            Assert.True(pre.abs().sum(-1).gt(0).eq(routedTo1).all().item<bool>(), "hook_pre is non-zero exactly at the tokens routed to expert 1");
            Assert.True(pre.abs().max().item<float>() > 1.5f, "the pre-clamp values are hooked");
        }
    }

    [Fact]
    public void Router_module_alias_reads_ln2_as_GptOssTopKRouter_does()
    {
        // model.layers.N.mlp.router (HF GptOssTopKRouter) reads the post-attention norm's output: its logits from that
        // input, top-k softmaxed and scattered, are the hook_expert_weights the model routed with. Its output (scores and
        // indices in transformers 4.5x, logits first in 5.x) has no hook, as Mixtral's and Qwen-MoE's mlp.gate.
        using var scope = NewDisposeScope();
        using var model = ModelLoader.FromPretrained(Folder("gpt_oss"));
        string input = model.HookPoints.Resolve("model.layers.1.mlp.router:in");
        Assert.Equal("blocks.1.ln2.hook_normalized", input);
        var e = Assert.Throws<SaeSharpException>(() => model.HookPoints.Resolve("model.layers.1.mlp.router"));
        Assert.Contains("no hook point for its output", e.Message);
        Assert.Throws<SaeSharpException>(() => model.HookPoints.Resolve("model.layers.1.mlp.gate:in"));   // gpt-oss has no mlp.gate
        var w = SafeTensors.Load(Path.Combine(Folder("gpt_oss"), "model.safetensors"));
        var tokens = tensor(new long[] { 3, 14, 15, 92, 65, 35, 89, 79 }).unsqueeze(0);
        var (_, cache) = model.RunWithCache(tokens, [input, "blocks.1.mlp.hook_expert_weights"]);
        using (cache)
        {
            var x = cache[input].to(ScalarType.Float64);
            var logits = x.matmul(w["model.layers.1.mlp.router.weight"].to(ScalarType.Float64).t()) + w["model.layers.1.mlp.router.bias"].to(ScalarType.Float64);
            var (top, idx) = logits.topk(2, -1);
            var expected = zeros_like(logits).scatter_(-1, idx, top.softmax(-1));
            Assert.True((expected - cache["blocks.1.mlp.hook_expert_weights"].to(ScalarType.Float64)).abs().max().item<double>() < 1e-6);
        }
    }

    [Theory]
    [InlineData(0)]   // a sliding layer (window 4)
    [InlineData(1)]   // a full-attention layer
    public void Bf16_attention_softmax_with_sinks_is_in_bf16_as_transformers(int layer)
    {
        // transformers' gpt-oss eager_attention_forward in a bf16 model: scores = q·kᵀ·scaling (bf16), + the mask
        // (finfo(bf16).min where masked), the sink column appended, minus the row max (in bf16: a rounding of its own),
        // F.softmax(..., dtype=bf16), sink column dropped. Written out here from hook_rot_q / hook_rot_k and the sinks;
        // the softmax itself as torch's CPU kernel computes a bf16 one: exp and sum in float32, one rounding to bf16.
        using var scope = NewDisposeScope();
        using var model = ModelLoader.FromPretrained(Folder("gpt_oss"), ScalarType.BFloat16);
        var tokens = tensor(new long[] { 3, 14, 15, 92, 65, 35, 89, 79, 32, 38, 46, 26 }).unsqueeze(0);
        string b = $"blocks.{layer}.attn.";
        var (_, cache) = model.RunWithCache(tokens, [b + "hook_rot_q", b + "hook_rot_k", b + "hook_pattern"]);
        using (cache)
        {
            var q = cache[b + "hook_rot_q"].transpose(1, 2);                          // [1, 4 heads, pos, 16]
            var k = cache[b + "hook_rot_k"].repeat_interleave(2, 2).transpose(1, 2);  // 2 kv heads, each serving 2 heads
            Assert.Equal(ScalarType.BFloat16, q.dtype);
            var sinks = model.state_dict()[$"model.layers.{layer}.self_attn.sinks"];
            long n = tokens.shape[1];
            var back = TorchScalars.Arange(n).unsqueeze(1) - TorchScalars.Arange(n).unsqueeze(0);              // query − key
            var allowed = back.ge(0);
            if (layer == 0) allowed = allowed.logical_and(back.lt(4));
            var mask = where(allowed, zeros(n, n), full(n, n, -3.3895313892515355e38)).to(ScalarType.BFloat16);
            var scores = matmul(q, k.transpose(-1, -2)) * 0.25 + mask;                // scaling 16^-½
            var combined = cat([scores, sinks.view(1, -1, 1, 1).expand(1, -1, n, 1)], -1);
            combined = combined - combined.max(-1, keepdim: true).values;
            var exp = combined.to(ScalarType.Float32).exp();
            var expected = (exp / exp.sum(-1, keepdim: true)).to(ScalarType.BFloat16).narrow(-1, 0, n).to(ScalarType.Float32);
            var pattern = cache[b + "hook_pattern"].to(ScalarType.Float32);
            double ulp = Math.Pow(2, -8);   // bf16's relative spacing: one rounding apart at most
            Assert.True((pattern - expected).abs().le(expected.abs() * ulp + 1e-30).all().item<bool>(),
                $"max |pattern − bf16 reference| = {(pattern - expected).abs().max().item<float>()}");
            // The float32 softmax (SaeSharp's previous computation, still used for float32 models) differs by more than a rounding.
            var s32 = scores.to(ScalarType.Float32);
            var old = cat([s32, sinks.to(ScalarType.Float32).view(1, -1, 1, 1).expand(1, -1, n, 1)], -1).softmax(-1).narrow(-1, 0, n)
                .to(ScalarType.BFloat16).to(ScalarType.Float32);
            Assert.False((pattern - old).abs().le(old.abs() * ulp + 1e-30).all().item<bool>(), "the bf16 and float32 softmaxes agree here: the test does not tell them apart");
        }
    }

    private static string CopyOf(string family)
    {
        string dir = TestPaths.TempDir();
        foreach (var f in Directory.GetFiles(Folder(family)))
            File.Copy(f, Path.Combine(dir, Path.GetFileName(f)));
        return dir;
    }
}
