using System.Text.Json.Nodes;
using SaeSharp.Hooks;
using SaeSharp.IO;
using SaeSharp.Models;
using SaeSharp.Tests.Tokenizers;
using static TorchSharp.torch;

namespace SaeSharp.Tests.Models;

/// <summary>
/// The OLMo families beyond the parity with the reference forward (HfTransformersParityTests): where OLMo-2's hooks sit
/// (TransformerLens's wiring of a post-norm-only block), its Hugging Face module aliases, that its q/k norms span
/// all heads of a position; OLMo 1's weightless LayerNorm and clip_qkv; OLMo 3's sliding layers and config defaults.
/// Expected values are computed here from the checkpoint's own tensors.
/// </summary>
public class OlmoTests : ModelTestBase
{
    private static string Folder(string family) => TestPaths.Data("hf_models", family);

    /// <summary>RMS-normalises the last dimension in float64 and multiplies by <paramref name="w"/>.</summary>
    private static Tensor Rms(Tensor x, Tensor w, double eps)
    {
        var x64 = x.to(ScalarType.Float64);
        return x64 * (x64.pow(2).mean([-1L], keepdim: true) + eps).rsqrt() * w.to(ScalarType.Float64);
    }

    [Fact]
    public void Olmo2_hooks_sit_where_TransformerLens_puts_them()
    {
        // TransformerLens (TransformerBlock, Olmo2ForCausalLM): hook_attn_out / hook_mlp_out are the sublayer outputs
        // before their post-norms; ln1 / ln2 are post_attention_layernorm / post_feedforward_layernorm, and their
        // hook_normalized is what is added to the residual stream. Attention reads resid_pre itself (no pre-norm).
        using var scope = NewDisposeScope();
        using var m = ModelLoader.FromPretrained(Folder("olmo2"));
        var w = SafeTensors.Load(Path.Combine(Folder("olmo2"), "model.safetensors"));
        var tokens = Npy.LoadNpz(Path.Combine(Folder("olmo2"), "reference.npz"))["tokens"];
        string[] hooks = ["hook_resid_pre", "hook_attn_out", "ln1.hook_normalized", "hook_resid_mid", "hook_mlp_out", "ln2.hook_normalized", "hook_resid_post", "attn.hook_q"];
        var (_, cache) = m.RunWithCache(tokens, hooks.Select(h => "blocks.1." + h).ToList());
        using var _ = cache;
        Tensor C(string h) => cache["blocks.1." + h].to(ScalarType.Float64);
        AssertAllClose(Rms(C("hook_attn_out"), w["model.layers.1.post_attention_layernorm.weight"], 1e-6), C("ln1.hook_normalized"), 1e-5, "ln1");
        AssertAllClose(C("hook_resid_pre") + C("ln1.hook_normalized"), C("hook_resid_mid"), 1e-5, "resid_mid");
        AssertAllClose(Rms(C("hook_mlp_out"), w["model.layers.1.post_feedforward_layernorm.weight"], 1e-6), C("ln2.hook_normalized"), 1e-5, "ln2");
        AssertAllClose(C("hook_resid_mid") + C("ln2.hook_normalized"), C("hook_resid_post"), 1e-5, "resid_post");
        // hook_q is q_proj of resid_pre itself.
        var q = C("hook_resid_pre").matmul(w["model.layers.1.self_attn.q_proj.weight"].to(ScalarType.Float64).t());
        AssertAllClose(q.view(C("attn.hook_q").shape), C("attn.hook_q"), 1e-5, "hook_q");
        foreach (var t in w.Values) t.Dispose();
    }

    [Fact]
    public void Olmo2_module_paths_name_the_post_norms_ln1_and_ln2()
    {
        using var m = ModelLoader.FromPretrained(Folder("olmo2"));
        var hp = m.HookPoints;
        Assert.Equal("blocks.0.ln1.hook_normalized", hp.Resolve("model.layers.0.post_attention_layernorm"));
        Assert.Equal("blocks.0.hook_attn_out", hp.Resolve("model.layers.0.post_attention_layernorm", HookKind.In));
        Assert.Equal("blocks.1.ln2.hook_normalized", hp.Resolve("model.layers.1.post_feedforward_layernorm"));
        Assert.Equal("blocks.1.hook_mlp_out", hp.Resolve("model.layers.1.post_feedforward_layernorm", HookKind.In));
        Assert.Equal("blocks.1.hook_attn_out", hp.Resolve("model.layers.1.self_attn"));
        Assert.Equal("blocks.1.hook_resid_pre", hp.Resolve("model.layers.1.self_attn", HookKind.In));
        Assert.Equal("blocks.1.hook_resid_mid", hp.Resolve("model.layers.1.mlp", HookKind.In));
        Assert.Equal("blocks.1.hook_resid_mid", hp.Resolve("blocks.1.mlp", HookKind.In));
        Assert.Equal("blocks.1.hook_attn_out", hp.Resolve("blocks.1.ln1", HookKind.In));
        Assert.Throws<SaeSharpException>(() => hp.Resolve("model.layers.0.input_layernorm"));
    }

    [Theory]
    [InlineData("olmo2", 1e-6)]
    [InlineData("olmoe", 1e-5)]
    public void Q_and_k_norms_span_every_head_of_a_position(string family, double eps)
    {
        // Rotary turns pairs of dims, so each position's summed square over all heads of hook_rot_q equals that of the
        // normalised q before rotary: RMSNorm over the whole projection (q_norm is n_heads·d_head wide), not per head.
        using var scope = NewDisposeScope();
        using var m = ModelLoader.FromPretrained(Folder(family));
        var w = SafeTensors.Load(Path.Combine(Folder(family), "model.safetensors"));
        var tokens = Npy.LoadNpz(Path.Combine(Folder(family), "reference.npz"))["tokens"];
        var (_, cache) = m.RunWithCache(tokens, ["blocks.0.attn.hook_q", "blocks.0.attn.hook_rot_q", "blocks.0.attn.hook_k", "blocks.0.attn.hook_rot_k"]);
        using var _ = cache;
        foreach (var x in new[] { "q", "k" })
        {
            var raw = cache[$"blocks.0.attn.hook_{x}"];
            var normed = Rms(raw.flatten(2), w[$"model.layers.0.self_attn.{x}_norm.weight"], eps);
            var expected = normed.pow(2).sum(-1);
            var actual = cache[$"blocks.0.attn.hook_rot_{x}"].to(ScalarType.Float64).flatten(2).pow(2).sum(-1);
            AssertAllClose(expected, actual, 1e-4, $"{family} {x}");
        }
        foreach (var t in w.Values) t.Dispose();
    }

    /// <summary>(x − mean) / √(var + 1e-5) over the last dimension in float64, var the biased variance.</summary>
    private static Tensor LayerNormByHand(Tensor x)
    {
        var x64 = x.to(ScalarType.Float64);
        var centred = x64 - x64.mean([-1L], keepdim: true);
        return centred / (centred.pow(2).mean([-1L], keepdim: true) + 1e-5).sqrt();
    }

    [Theory]
    [InlineData("olmo")]
    [InlineData("olmo-clip")]
    public void Olmo1_norms_are_layer_norms_without_weights(string family)
    {
        // OlmoLayerNorm: LayerNorm with no weight or bias, eps 1e-5. TransformerLens loads OLMo 1 as normalization_type
        // LN with w = 1, b = 0, so ln1/ln2/ln_final.hook_normalized are the normalised residual stream itself.
        using var scope = NewDisposeScope();
        using var m = ModelLoader.FromPretrained(Folder(family));
        Assert.Equal("LN", m.Config.NormalizationType);
        Assert.Equal(1e-5, m.Config.LayerNormEps);
        var w = SafeTensors.Load(Path.Combine(Folder(family), "model.safetensors"));
        Assert.DoesNotContain(w.Keys, k => k.Contains("norm"));   // nothing to load
        var tokens = Npy.LoadNpz(Path.Combine(Folder(family), "reference.npz"))["tokens"];
        string[] hooks = ["blocks.1.hook_resid_pre", "blocks.1.ln1.hook_normalized", "blocks.1.hook_resid_mid", "blocks.1.ln2.hook_normalized",
            "blocks.1.hook_resid_post", "ln_final.hook_normalized", "blocks.1.attn.hook_q", "blocks.1.mlp.hook_pre"];
        var (_, cache) = m.RunWithCache(tokens, hooks);
        using var _ = cache;
        Tensor C(string h) => cache[h].to(ScalarType.Float64);
        AssertAllClose(LayerNormByHand(C("blocks.1.hook_resid_pre")), C("blocks.1.ln1.hook_normalized"), 1e-5, "ln1");
        AssertAllClose(LayerNormByHand(C("blocks.1.hook_resid_mid")), C("blocks.1.ln2.hook_normalized"), 1e-5, "ln2");
        AssertAllClose(LayerNormByHand(C("blocks.1.hook_resid_post")), C("ln_final.hook_normalized"), 1e-5, "ln_final");
        // No bias: each position of hook_normalized has mean 0.
        var n = C("blocks.1.ln1.hook_normalized");
        AssertAllClose(zeros_like(n.mean([-1L])), n.mean([-1L]), 1e-6, "mean");
        // hook_q is q_proj of the normalised stream, before clip_qkv (TransformerLens has no clip); the MLP reads ln2.
        var q = C("blocks.1.ln1.hook_normalized").matmul(w["model.layers.1.self_attn.q_proj.weight"].to(ScalarType.Float64).t());
        AssertAllClose(q.view(C("blocks.1.attn.hook_q").shape), C("blocks.1.attn.hook_q"), 1e-5, "hook_q");
        var gate = C("blocks.1.ln2.hook_normalized").matmul(w["model.layers.1.mlp.gate_proj.weight"].to(ScalarType.Float64).t());
        AssertAllClose(gate, C("blocks.1.mlp.hook_pre"), 1e-5, "hook_pre");
        if (family == "olmo-clip")
            Assert.True(C("blocks.1.attn.hook_q").abs().max().item<double>() > 0.4, "the fixture's clip_qkv 0.4 must bite");
        foreach (var t in w.Values) t.Dispose();
    }

    [Fact]
    public void Olmo1_module_paths_are_llamas()
    {
        using var m = ModelLoader.FromPretrained(Folder("olmo"));
        var hp = m.HookPoints;
        Assert.Equal("blocks.0.ln1.hook_normalized", hp.Resolve("model.layers.0.input_layernorm"));
        Assert.Equal("blocks.0.ln2.hook_normalized", hp.Resolve("model.layers.0.post_attention_layernorm"));
        Assert.Equal("ln_final.hook_normalized", hp.Resolve("model.norm"));
    }

    [Fact]
    public void Olmo3_sliding_layers_see_only_the_window()
    {
        // The fixture's layer_types: layer 0 sliding (window 5), layer 1 full. A query sees keys 0..4 positions back.
        using var scope = NewDisposeScope();
        using var m = ModelLoader.FromPretrained(Folder("olmo3"));
        var tokens = Npy.LoadNpz(Path.Combine(Folder("olmo3"), "reference.npz"))["tokens"];
        var (_, cache) = m.RunWithCache(tokens, ["blocks.0.attn.hook_pattern", "blocks.1.attn.hook_pattern"]);
        using var _ = cache;
        long s = tokens.shape[1];
        var back = TorchScalars.Arange(s).unsqueeze(1) - TorchScalars.Arange(s).unsqueeze(0);   // query − key
        var p0 = cache["blocks.0.attn.hook_pattern"];
        var p1 = cache["blocks.1.attn.hook_pattern"];
        Assert.Equal(0.0, p0.masked_select(back.ge(5).expand_as(p0)).abs().max().item<float>());
        Assert.True(p0.masked_select(back.eq(4).expand_as(p0)).min().item<float>() > 0, "the window's oldest key is seen");
        Assert.True(p1.masked_select(back.ge(5).expand_as(p1)).min().item<float>() > 0, "the full layer sees every earlier key");
    }

    [Fact]
    public void Olmo3_rope_scaling_rotates_every_layer_with_the_scaled_table()
    {
        // The newest transformers modeling_olmo3.py (5.x) builds one Olmo3RotaryEmbedding from rope_parameters and passes
        // its cos/sin to every layer, sliding or full. With YaRN (factor 4 from 1024 positions, θ 5e5, 8 rotary dims):
        // hook_rot_q of both layers is q_norm(q) rotated by the table written out here in float64 from the YaRN formula.
        using var scope = NewDisposeScope();
        string dir = Path.Combine(Dir, "olmo3-yarn");
        Directory.CreateDirectory(dir);
        foreach (var f in Directory.GetFiles(Folder("olmo3"))) File.Copy(f, Path.Combine(dir, Path.GetFileName(f)));
        var config = JsonNode.Parse(File.ReadAllText(Path.Combine(dir, "config.json")))!.AsObject();
        config["rope_scaling"] = JsonNode.Parse("""{"rope_type": "yarn", "factor": 4.0, "original_max_position_embeddings": 1024}""");
        File.WriteAllText(Path.Combine(dir, "config.json"), config.ToJsonString());
        using var m = ModelLoader.FromPretrained(dir);
        Assert.Equal("yarn(factor=4 original_max_position_embeddings=1024 beta_fast=32 beta_slow=1 truncate=true attention_factor=1.13863)",
            m.Config.RopeScaling!.ToString());

        // YaRN by hand: correction dims d·ln(1024 / (2π·β)) / (2·ln θ) for β = 32, 1 are 0.496 and 1.553, floored / ceiled
        // to 0 and 2; the ramp over dims 0..3 is 0, ½, 1, 1: dim 0 keeps θ's frequency, dim 1 the mean of it and it / 4,
        // dims 2-3 are divided by 4. cos and sin are multiplied by 0.1·ln 4 + 1.
        const int dim = 8;
        double theta = 500_000, factor = 4, attention = 0.1 * Math.Log(4) + 1;
        double[] ramp = [0, 0.5, 1, 1];
        var inv = Enumerable.Range(0, dim / 2).Select(i =>
        {
            double extrapolation = Math.Pow(theta, -2.0 * i / dim);
            return extrapolation / factor * ramp[i] + extrapolation * (1 - ramp[i]);
        }).ToArray();
        var tokens = Npy.LoadNpz(Path.Combine(Folder("olmo3"), "reference.npz"))["tokens"];
        long n = tokens.shape[1];
        var freqs = TorchScalars.Arange(n, dtype: ScalarType.Float64).unsqueeze(1) * tensor(inv).unsqueeze(0);   // [pos, 4]
        var emb = cat([freqs, freqs], -1).view(1, n, 1, dim);
        var (cos, sin) = (emb.cos() * attention, emb.sin() * attention);
        var defaultEmb = TorchScalars.Arange(n, dtype: ScalarType.Float64).unsqueeze(1) * tensor(Enumerable.Range(0, dim / 2).Select(i => Math.Pow(theta, -2.0 * i / dim)).ToArray()).unsqueeze(0);
        defaultEmb = cat([defaultEmb, defaultEmb], -1).view(1, n, 1, dim);
        static Tensor Rotate(Tensor x, Tensor cos, Tensor sin) =>
            x * cos + cat([x.narrow(-1, dim / 2, dim / 2).neg(), x.narrow(-1, 0, dim / 2)], -1) * sin;

        var w = SafeTensors.Load(Path.Combine(dir, "model.safetensors"));
        var (_, cache) = m.RunWithCache(tokens, ["blocks.0.attn.hook_q", "blocks.0.attn.hook_rot_q", "blocks.1.attn.hook_q", "blocks.1.attn.hook_rot_q"]);
        using var _ = cache;
        for (int layer = 0; layer < 2; layer++)   // layer 0 sliding, layer 1 full
        {
            var q = cache[$"blocks.{layer}.attn.hook_q"];
            var normed = Rms(q.flatten(2), w[$"model.layers.{layer}.self_attn.q_norm.weight"], 1e-6).view(q.shape);
            var rotQ = cache[$"blocks.{layer}.attn.hook_rot_q"].to(ScalarType.Float64);
            double err = (rotQ - Rotate(normed, cos, sin)).abs().max().item<double>();
            Assert.True(err < 1e-5, $"layer {layer}: |hook_rot_q − YaRN rotation| = {err}");
            double fromDefault = (rotQ - Rotate(normed, defaultEmb.cos(), defaultEmb.sin())).abs().max().item<double>();
            Assert.True(fromDefault > 1e-2, $"layer {layer}: the default table gives nearly the same ({fromDefault})");
        }
    }

    private static DecoderSettings Settings(string modelType, string json) =>
        DecoderSettings.From(new JsonConfig("config.json", (JsonObject)JsonNode.Parse(json)!), modelType);

    [Fact]
    public void Olmo3_config_defaults_are_Olmo3Configs()
    {
        // Olmo3Config without layer_types: every fourth layer full, the rest sliding; sliding_window 4096; rope_theta 5e5;
        // rms_norm_eps 1e-5; max_position_embeddings 2048.
        var s = Settings("olmo3", """{"hidden_size": 32, "num_attention_heads": 4, "num_hidden_layers": 8, "vocab_size": 16, "intermediate_size": 8}""");
        Assert.Equal([true, true, true, false, true, true, true, false], s.SlidingLayers);
        Assert.Equal(4096, s.SlidingWindow);
        Assert.Equal(500_000, s.RopeTheta);
        Assert.Equal(1e-5, s.Eps);
        Assert.Equal(2048, s.MaxPositions);
        Assert.True(s.Olmo2 && s.QkNormWhole);
        Assert.Null(s.ClipQkv);
        // OlmoConfig: no sliding window whatever layer_types says, eps fixed at 1e-5 (OlmoLayerNorm), rope_theta 1e4.
        var o = Settings("olmo", """{"hidden_size": 32, "num_attention_heads": 4, "num_hidden_layers": 2, "vocab_size": 16, "intermediate_size": 8, "rms_norm_eps": 0.1, "layer_types": ["sliding_attention", "sliding_attention"], "clip_qkv": 8.0}""");
        Assert.Equal([false, false], o.SlidingLayers);
        Assert.Equal(1e-5, o.Eps);
        Assert.Equal(10_000, o.RopeTheta);
        Assert.Equal(8.0, o.ClipQkv);
        Assert.True(o.NonParametricLayerNorm && !o.QkNormWhole && !o.Olmo2);
    }

    [Theory]
    [InlineData("olmo3", "\"sliding_window\": null", "sliding-window layers but no sliding_window")]
    [InlineData("olmo3", "\"layer_types\": [\"full_attention\"]", "layer_types has 1 entries for 2 layers")]
    [InlineData("olmo", "\"clip_qkv\": 0", "clip_qkv=0 must be positive")]
    public void Olmo_config_errors_name_the_problem(string modelType, string extra, string message)
    {
        var e = Assert.Throws<SaeSharpException>(() => Settings(modelType,
            "{\"hidden_size\": 32, \"num_attention_heads\": 4, \"num_hidden_layers\": 2, \"vocab_size\": 16, \"intermediate_size\": 8, " + extra + "}"));
        Assert.Contains(message, e.Message);
        Assert.Contains("config.json", e.Message);
    }

    [Fact]
    public void Olmoe_refuses_a_bad_clip_qkv_and_expert_count()
    {
        string dir = Path.Combine(TestPaths.TempDir(), "olmoe");
        Directory.CreateDirectory(dir);
        try
        {
            foreach (var f in Directory.GetFiles(Folder("olmoe")))
                File.Copy(f, Path.Combine(dir, Path.GetFileName(f)));
            var path = Path.Combine(dir, "config.json");
            string original = File.ReadAllText(path);
            File.WriteAllText(path, original.Replace("\"clip_qkv\": null", "\"clip_qkv\": -1.0"));
            Assert.Contains("clip_qkv=-1 must be positive", Assert.Throws<SaeSharpException>(() => ModelLoader.FromPretrained(dir)).Message);
            File.WriteAllText(path, original.Replace("\"num_experts_per_tok\": 3", "\"num_experts_per_tok\": 7"));
            Assert.Contains("num_experts_per_tok=7 must be between 1 and num_experts=6", Assert.Throws<SaeSharpException>(() => ModelLoader.FromPretrained(dir)).Message);
        }
        finally
        {
            Directory.Delete(Path.GetDirectoryName(dir)!, true);
        }
    }
}
