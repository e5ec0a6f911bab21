using System.Text.Json.Nodes;
using SaeSharp.Evaluation;
using SaeSharp.Interop;
using SaeSharp.IO;
using SaeSharp.Models;
using SaeSharp.Tests.Interop;
using TorchSharp;
using static TorchSharp.torch;

namespace SaeSharp.Tests.Models;

/// <summary>Llama, Qwen2, Qwen3 and Gemma 2 checkpoints against <see cref="DecoderReference"/> written from HF's modeling code.</summary>
public class LlamaFamilyTests : ModelTestBase
{
    static readonly long[] Toks = [1, 7, 3, 3, 12, 0, 18, 5, 9];

    static JsonObject Llama3Scaling() => new()
    {
        // head_dim 8, theta 10000: wavelengths 2π, 20π, 200π, 2000π against 16 and 64: one kept, one smoothed, two scaled.
        ["rope_type"] = "llama3", ["factor"] = 8.0, ["low_freq_factor"] = 1.0, ["high_freq_factor"] = 4.0,
        ["original_max_position_embeddings"] = 64.0,
    };

    internal static DecoderSpec Spec(string family) => family switch
    {
        "llama-gqa" => new DecoderSpec { ModelType = "llama", Heads = 4, KvHeads = 2 },
        "llama3-rope-tied" => new DecoderSpec
        {
            ModelType = "llama", Heads = 2, KvHeads = 1, Tied = true, RopeScaling = Llama3Scaling(), AttentionBias = true,
        },
        "qwen2" => new DecoderSpec { ModelType = "qwen2", Heads = 4, KvHeads = 2, RopeTheta = 1000000 },
        "qwen3" => new DecoderSpec { ModelType = "qwen3", Heads = 4, KvHeads = 2, HeadDim = 6, Tied = true },
        "gemma2" => new DecoderSpec
        {
            ModelType = "gemma2", Layers = 3, Heads = 2, KvHeads = 1, HeadDim = 12, Tied = true, AttnSoftCap = 1.5,
            FinalSoftCap = 2.5, SlidingWindow = 3, QueryPreAttnScalar = 20,
        },
        // Layers 0 and 2 local (window 3, RoPE base 10), layer 1 global (base 1e6, linear scaling 4); no soft caps.
        "gemma3" => new DecoderSpec
        {
            ModelType = "gemma3_text", Layers = 3, Heads = 2, KvHeads = 1, HeadDim = 12, Tied = true, SlidingWindow = 3,
            SlidingWindowPattern = 2, QueryPreAttnScalar = 20, RopeTheta = 1e6, RopeLocalBaseFreq = 10,
            RopeScaling = new JsonObject { ["rope_type"] = "linear", ["factor"] = 4.0 },
        },
        _ => throw new ArgumentException(family),
    };

    static double[] InvFreqOf(DecoderSpec p)
    {
        (double, double, double, double)? l3 = p.RopeScaling is { } r
            ? ((double)r["factor"]!, (double)r["low_freq_factor"]!, (double)r["high_freq_factor"]!, (double)r["original_max_position_embeddings"]!)
            : null;
        return DecoderReference.InvFreq(p.Hd, p.RopeTheta, l3);
    }

    (HookedTransformer Model, DecoderReference.Result Expected) LoadWithReference(string family, long[] toks)
    {
        var p = Spec(family);
        var dir = TinyDecoders.Write(Sub(family), p);
        var w = SafeTensors.Load(Path.Combine(dir, "model.safetensors"));
        var expected = DecoderReference.Forward(w, p, toks, InvFreqOf(p));
        return (ModelLoader.FromPretrained(dir), expected);
    }

    [Theory]
    [InlineData("llama-gqa")]
    [InlineData("llama3-rope-tied")]
    [InlineData("qwen2")]
    [InlineData("qwen3")]
    [InlineData("gemma2")]
    public void LogitsAndResidualStreamMatchHfReference(string family)
    {
        var (model, expected) = LoadWithReference(family, Toks);
        using var _ = model;
        var (logits, cache) = model.RunWithCache(tensor(Toks).unsqueeze(0), n => n.EndsWith("hook_resid_post", StringComparison.Ordinal));
        using (cache)
        {
            Reference.AssertClose(expected.Logits, logits![0], 2e-4);
            for (int l = 0; l < model.Config.NLayers; l++)
                Reference.AssertClose(expected.ResidPost[l], cache[$"blocks.{l}.hook_resid_post"][0], 2e-4);
        }
    }

    [Fact]
    public void ReferenceIsSensitiveToGemmaDetailsAndLlama3Rope()
    {
        // Guards against a reference that agrees by accident: dropping the sliding window or the soft caps changes the logits.
        var p = Spec("gemma2");
        var w = SafeTensors.Load(Path.Combine(TinyDecoders.Write(Sub("g"), p), "model.safetensors"));
        var inv = InvFreqOf(p);
        var full = DecoderReference.Forward(w, p, Toks, inv).Logits;
        foreach (var variant in new[] { p with { SlidingWindow = null }, p with { AttnSoftCap = null }, p with { FinalSoftCap = null } })
        {
            var other = DecoderReference.Forward(w, variant, Toks, inv).Logits;
            double diff = full.Zip(other, (a, b) => a.Zip(b, (x, y) => Math.Abs(x - y)).Max()).Max();
            Assert.True(diff > 1e-3, $"variant {variant} changes logits by only {diff}");
        }
        // Likewise llama3 rope scaling against plain rope.
        var l = Spec("llama3-rope-tied");
        var lw = SafeTensors.Load(Path.Combine(TinyDecoders.Write(Sub("l"), l), "model.safetensors"));
        var scaled = DecoderReference.Forward(lw, l, Toks, InvFreqOf(l)).Logits;
        var plain = DecoderReference.Forward(lw, l, Toks, InvFreqOf(l with { RopeScaling = null })).Logits;
        Assert.True(scaled.Zip(plain, (a, b) => a.Zip(b, (x, y) => Math.Abs(x - y)).Max()).Max() > 1e-3);
    }

    [Fact]
    public void ConfigReportsFamilyDetails()
    {
        using var g = ModelLoader.FromPretrained(TinyDecoders.Write(Sub("g"), Spec("gemma2")));
        var c = g.Config;
        Assert.Equal(("gemma2", 12, 2, 1, 3, 1.5, 2.5, "RMS"), (c.Architecture, c.DHead, c.NHeads, c.NKvHeads, c.SlidingWindow, c.AttnScoresSoftCap, c.OutputLogitsSoftCap, c.NormalizationType));
        // State-dict keys are the checkpoint's: tied embeddings, so no lm_head.
        var keys = g.state_dict().Keys.ToList();
        Assert.Contains("model.layers.2.post_feedforward_layernorm.weight", keys);
        Assert.DoesNotContain(keys, k => k.StartsWith("lm_head", StringComparison.Ordinal));
        using var q = ModelLoader.FromPretrained(TinyDecoders.Write(Sub("q"), Spec("qwen2")));
        Assert.Contains("model.layers.0.self_attn.k_proj.bias", q.state_dict().Keys);
        Assert.DoesNotContain("model.layers.0.self_attn.o_proj.bias", q.state_dict().Keys);
    }

    [Theory]
    [InlineData("llama-gqa")]
    [InlineData("qwen3")]
    [InlineData("gemma2")]
    [InlineData("gemma3")]
    public void HooksHaveTransformerLensNamesShapesAndHfAliases(string family)
    {
        var p = Spec(family);
        using var model = ModelLoader.FromPretrained(TinyDecoders.Write(Sub(family), p));
        var hp = model.HookPoints;
        foreach (var n in new[] { "hook_embed", "blocks.1.hook_resid_pre", "blocks.1.hook_resid_mid", "blocks.1.attn.hook_q", "blocks.1.attn.hook_rot_k",
                     "blocks.1.attn.hook_pattern", "blocks.1.attn.hook_z", "blocks.1.mlp.hook_pre", "blocks.1.mlp.hook_pre_linear",
                     "blocks.1.mlp.hook_post", "blocks.1.hook_mlp_out", "ln_final.hook_normalized" })
            Assert.True(hp.Contains(n), n);
        Assert.Equal("blocks.1.hook_resid_post", hp.Resolve("model.layers.1"));
        Assert.Equal("blocks.0.mlp.hook_pre_linear", hp.Resolve("model.layers.0.mlp.up_proj"));
        Assert.Equal("blocks.0.attn.hook_k", hp.Resolve("layers.0.self_attn.k_proj"));
        Assert.Equal("blocks.0.ln2.hook_normalized", hp.Resolve(p.Gemma ? "model.layers.0.pre_feedforward_layernorm" : "model.layers.0.post_attention_layernorm"));
        if (p.Gemma)
        {
            Assert.Equal("blocks.0.hook_attn_out", hp.Resolve("model.layers.0.post_attention_layernorm"));
            Assert.Equal("blocks.0.hook_mlp_out", hp.Resolve("model.layers.0.post_feedforward_layernorm"));
            // The attention module's own output precedes the post-norm: no hook point holds it.
            Assert.Throws<SaeSharpException>(() => hp.Resolve("model.layers.0.self_attn"));
        }
        else Assert.Equal("blocks.0.hook_attn_out", hp.Resolve("model.layers.0.self_attn"));

        var toks = tensor(Toks).unsqueeze(0);
        var (_, cache) = model.RunWithCache(toks);
        using (cache)
        {
            long s = Toks.Length;
            Assert.Equal(new[] { 1, s, p.Heads, p.Hd }, cache["blocks.1.attn.hook_q"].shape);
            Assert.Equal(new[] { 1, s, p.KvHeads, p.Hd }, cache["blocks.1.attn.hook_k"].shape);
            Assert.Equal(new[] { 1, s, p.KvHeads, p.Hd }, cache["blocks.1.attn.hook_v"].shape);
            Assert.Equal(new[] { 1, p.Heads, s, s }, cache["blocks.1.attn.hook_pattern"].shape);
            Assert.Equal(new[] { 1, s, p.Heads, p.Hd }, cache["blocks.1.attn.hook_z"].shape);
            Assert.Equal(new[] { 1, s, (long)p.Intermediate }, cache["blocks.1.mlp.hook_pre_linear"].shape);
            // resid_post = resid_mid + mlp_out; resid_mid = resid_pre + attn_out; hook_embed is block 0's input.
            AssertAllClose(cache["blocks.1.hook_resid_mid"] + cache["blocks.1.hook_mlp_out"], cache["blocks.1.hook_resid_post"], 1e-5, "resid_post");
            AssertAllClose(cache["blocks.1.hook_resid_pre"] + cache["blocks.1.hook_attn_out"], cache["blocks.1.hook_resid_mid"], 1e-5, "resid_mid");
            AssertAllClose(cache["hook_embed"], cache["blocks.0.hook_resid_pre"], 0, "embed");
            // Sliding-window layers (Gemma layer 0, window 3) give no weight beyond the window; layer 1 is global.
            if (p.Gemma)
            {
                var pat = cache["blocks.0.attn.hook_pattern"][0, 0];
                Assert.Equal(0.0, pat[8, 5].item<float>());
                Assert.True(pat[8, 6].item<float>() > 0);
                Assert.True(cache["blocks.1.attn.hook_pattern"][0, 0][8, 0].item<float>() > 0);
            }
        }
    }

    [Theory]
    [InlineData("llama3-rope-tied")]
    [InlineData("qwen3")]
    [InlineData("gemma2")]
    [InlineData("gemma3")]
    public void KvCacheGenerationEqualsRecomputation(string family)
    {
        using var model = ModelLoader.FromPretrained(TinyDecoders.Write(Sub(family), Spec(family)));
        // Left-padded batch; 8 new tokens take the sequence past Gemma's window of 3.
        var prompt = Tokens([0, 0, 4, 9, 1], [3, 8, 8, 2, 6]);
        var mask = Tokens([0, 0, 1, 1, 1], [1, 1, 1, 1, 1]);
        using var cached = model.Generate(prompt, 8, new GenerationOptions { AttentionMask = mask, ReturnLogits = true });
        using var full = model.Generate(prompt, 8, new GenerationOptions { AttentionMask = mask, ReturnLogits = true, UseKvCache = false });
        Assert.Equal(full.Tokens.data<long>().ToArray(), cached.Tokens.data<long>().ToArray());
        AssertAllClose(full.Logits!, cached.Logits!, 1e-4, "step logits");
        // The padded row's logits equal the unpadded row run alone.
        var alone = model.Forward(Tokens([4, 9, 1]));
        AssertAllClose(alone[0, -1], cached.Logits![0, 0], 1e-4, "padded row");
    }

    [Fact]
    public void SlidingWindowLayerCacheKeepsOnlyTheKeysTheNextTokenCanSee()
    {
        // Window w = 3: the next query at position p sees keys p−2..p, so the cache holds the last w − 1 = 2 positions
        // (values 3, 4 of 0..4); the next step returns them followed by its own key. A global layer keeps everything.
        using var scope = NewDisposeScope();
        using var kv = new KvCache(2);
        var first = TorchScalars.Arange(5, dtype: ScalarType.Float32).reshape(1, 1, 5, 1);
        var (k0, _) = kv.Append(0, first, first, keepLast: 2);
        Assert.Equal(new float[] { 0, 1, 2, 3, 4 }, k0.data<float>().ToArray());
        var (k1, v1) = kv.Append(0, full(1, 1, 1, 1, 5f), full(1, 1, 1, 1, 5f), keepLast: 2);
        Assert.Equal(new float[] { 3, 4, 5 }, k1.data<float>().ToArray());
        Assert.Equal(new float[] { 3, 4, 5 }, v1.data<float>().ToArray());
        kv.Append(1, first, first);
        var (g, _) = kv.Append(1, full(1, 1, 1, 1, 5f), full(1, 1, 1, 1, 5f));
        Assert.Equal(6, g.shape[2]);
    }

    [Fact]
    public void Bf16CheckpointShardedLoadsAsBf16OrFloat32()
    {
        var p = Spec("gemma2") with { Dtype = ScalarType.BFloat16, Shards = 3 };
        var dir = TinyDecoders.Write(Sub("bf16"), p);
        Assert.True(File.Exists(Path.Combine(dir, "model.safetensors.index.json")));
        using var bf = ModelLoader.FromPretrained(dir, ScalarType.BFloat16);
        using var f32 = ModelLoader.FromPretrained(dir);
        Assert.All(bf.parameters(), t => Assert.Equal(ScalarType.BFloat16, t.dtype));
        Assert.All(f32.parameters(), t => Assert.Equal(ScalarType.Float32, t.dtype));
        // bf16 weights are exact in float32, so the two differ only by bf16 arithmetic.
        foreach (var ((name, a), (_, b)) in bf.named_parameters().Zip(f32.named_parameters()))
            Assert.True(a.to(ScalarType.Float32).eq(b).all().item<bool>(), name);
        var toks = tensor(Toks).unsqueeze(0);
        var lb = bf.Forward(toks);
        var lf = f32.Forward(toks);
        Assert.Equal(ScalarType.Float32, lb.dtype);
        double diff = (lb - lf).abs().max().item<float>();
        Assert.True(diff > 0 && diff < 0.15, $"bf16 vs f32 logits differ by {diff}");
    }

    [Theory]
    [InlineData("qwen3", 16, 32, 32, 128)]   // transformers Qwen3Config: num_key_value_heads=32, head_dim=128
    [InlineData("gemma2", 16, 4, 4, 256)]    // Gemma2Config: num_key_value_heads=4, head_dim=256
    [InlineData("gemma3_text", 16, 4, 4, 256)] // Gemma3TextConfig: the same
    [InlineData("qwen2", 128, 64, 32, 2)]    // Qwen2Config: num_key_value_heads=32; head_dim is hidden / heads
    [InlineData("llama", 32, 4, 4, 8)]       // LlamaConfig: num_key_value_heads and head_dim follow the heads
    [InlineData("gemma", 16, 16, 16, 256)]   // GemmaConfig: num_key_value_heads=16, head_dim=256
    [InlineData("mistral", 32, 16, 8, 2)]    // MistralConfig: num_key_value_heads=8; head_dim is hidden / heads
    public void MissingHeadDimAndKvHeadsTakeTheHfConfigClassDefaults(string modelType, int hidden, int heads, int kvHeads, int headDim)
    {
        // transformers fills a key absent from config.json with its config class's default, which for Qwen3 and Gemma 2
        // is a fixed number, not hidden_size / num_attention_heads (save_pretrained always writes both keys, so only a
        // hand-written or trimmed config.json lacks them).
        var p = new DecoderSpec { ModelType = modelType, Hidden = hidden, Heads = heads, KvHeads = kvHeads, HeadDim = headDim, Layers = 1 };
        var dir = TinyDecoders.Write(Sub(modelType), p);
        var path = Path.Combine(dir, "config.json");
        var config = JsonNode.Parse(File.ReadAllText(path))!.AsObject();
        config.Remove("head_dim");
        config.Remove("num_key_value_heads");
        File.WriteAllText(path, config.ToJsonString());
        using var model = ModelLoader.FromPretrained(dir);
        Assert.Equal(headDim, model.Config.DHead);
        Assert.Equal(kvHeads, model.Config.NKvHeads);
        using var logits = model.Forward(tensor(Toks).unsqueeze(0));
        Assert.True(logits.isfinite().all().item<bool>());
    }

    [Fact]
    public void Gemma3TextConfigOfTheHubTakesGemma3TextConfigDefaults()
    {
        // The form of gemma-3-4b's config.json (transformers 4.50): text_config gives only what differs from
        // Gemma3TextConfig's defaults, which supply the rest: 8 heads, 4 kv heads, head_dim 256, vocab 262208,
        // query_pre_attn_scalar 256, rope_theta 1e6 (scaled here) and rope_local_base_freq 10000, sliding_window_pattern 6,
        // no soft caps, tied embeddings, 131072 positions.
        string path = Path.Combine(Sub("gemma-3-4b"), "config.json");
        var root = JsonNode.Parse("""
            {"architectures": ["Gemma3ForConditionalGeneration"], "model_type": "gemma3", "mm_tokens_per_image": 256,
             "text_config": {"hidden_size": 2560, "intermediate_size": 10240, "model_type": "gemma3_text", "num_hidden_layers": 34,
                             "rope_scaling": {"factor": 8.0, "rope_type": "linear"}, "sliding_window": 1024},
             "torch_dtype": "bfloat16", "vision_config": {"model_type": "siglip_vision_model", "hidden_size": 1152}}
            """)!.AsObject();
        var s = DecoderSettings.From(new JsonConfig(path, root), "gemma3");
        Assert.Equal((2560, 34, 8, 4, 256, 10240, 262_208, 131_072), (s.Hidden, s.NLayer, s.NHead, s.NKvHead, s.HeadDim, s.Intermediate, s.VocabSize, s.MaxPositions));
        Assert.Equal((1e-6, "gelu_pytorch_tanh", true, true, true), (s.Eps, s.Activation, s.TieEmbeddings, s.QkNorm, s.Gemma3));
        Assert.Equal(1 / 16.0, s.AttnScale, 15);
        Assert.Equal((null, null, 1024), (s.AttnSoftCap, s.FinalSoftCap, s.SlidingWindow));
        Assert.Equal(Enumerable.Range(0, 34).Select(i => (i + 1) % 6 != 0), s.SlidingLayers);
        Assert.Equal((1e6, 10000.0), (s.RopeTheta, s.LocalRopeTheta!.Value));
        Assert.Equal(128, s.InvFreq.Length);
        // Global: 1e6^(-2i/256) / 8; local: 10000^(-2i/256), unscaled. (Float32 frequencies, as HF computes them.)
        Assert.Equal(1.0 / 8, s.InvFreq[0], 7);
        Assert.Equal(Math.Pow(1e6, -2.0 * 64 / 256) / 8, s.InvFreq[64], 7);
        Assert.Equal(1.0, s.LocalInvFreq![0], 7);
        Assert.Equal(Math.Pow(10000, -2.0 * 64 / 256), s.LocalInvFreq[64], 7);
    }

    [Fact]
    public void UnsupportedRopeScalingIsAClearError()
    {
        var p = Spec("llama-gqa") with { RopeScaling = new JsonObject { ["rope_type"] = "longrope", ["factor"] = 4.0 } };
        var ex = Assert.Throws<SaeSharpException>(() => ModelLoader.FromPretrained(TinyDecoders.Write(Sub("y"), p)));
        Assert.Contains("rope_scaling type 'longrope' is not supported", ex.Message);
    }

    [Fact]
    public void GemmaScopeSaeAtResidPostRecoversCeLoss()
    {
        var p = Spec("gemma2");
        using var model = ModelLoader.FromPretrained(TinyDecoders.Write(Sub("g"), p));
        // A Gemma Scope params.npz (JumpReLU) that splits x into its positive and negative parts: x̂ ≈ x.
        int d = p.Hidden;
        var id = eye(d);
        var folder = Path.Combine(Dir, "gemma-scope-2b-pt-res", "layer_1", "width_32", "average_l0_5");
        GemmaScopeTests.WriteNpz(Path.Combine(folder, "params.npz"), new Dictionary<string, Tensor>
        {
            ["W_enc"] = cat([id, -id], 1), ["W_dec"] = cat([id, -id], 0),
            ["b_enc"] = zeros(2 * d), ["b_dec"] = zeros(d), ["threshold"] = full(2 * d, 0.05f),
        });
        using var sae = GemmaScope.Load(folder);
        Assert.Equal("blocks.1.hook_resid_post", sae.Cfg.Metadata.HookName);

        var g = new Generator(5);
        var windows = Enumerable.Range(0, 4).Select(_ => randint(0, p.Vocab, [10], generator: g).data<long>().ToArray()).ToList();
        var m = DownstreamEvaluator.Evaluate(model, [new DownstreamTarget(sae)], windows, new DownstreamEvalOptions { BatchSizePrompts = 2 })[0];

        // Independently: mean next-token CE of the clean run, the run with x → JumpReLU-SAE(x), and with x → 0.
        var toks = tensor(windows.SelectMany(w => w).ToArray()).view(4, 10);
        double Ce(Func<Tensor, Tensor?>? fn)
        {
            var logits = fn is null ? model.Forward(toks) : model.RunWithHooks(toks, ("blocks.1.hook_resid_post", fn));
            var logp = logits.narrow(1, 0, 9).log_softmax(-1);
            return -logp.gather(-1, toks.narrow(1, 1, 9).unsqueeze(-1)).mean().item<float>();
        }
        Tensor JumpRelu(Tensor x)
        {
            var pre = matmul(x, cat([id, -id], 1));
            return matmul(pre * pre.gt(0.05), cat([id, -id], 0));
        }
        double clean = Ce(null), withSae = Ce(JumpRelu), ablated = Ce(x => zeros_like(x));
        Assert.Equal(clean, m.CeLossWithoutSae, 4);
        Assert.Equal(withSae, m.CeLossWithSae, 4);
        Assert.Equal(ablated, m.CeLossWithAblation, 4);
        double recovered = (ablated - withSae) / (ablated - clean);
        Assert.Equal(recovered, m.CeLossScore, 3);
        Assert.True(recovered > 0.9, $"% CE loss recovered {recovered:P1}");
    }
}
