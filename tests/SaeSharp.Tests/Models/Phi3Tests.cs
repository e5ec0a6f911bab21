using System.Text.Json.Nodes;
using SaeSharp.IO;
using SaeSharp.Models;
using SaeSharp.Tests.Tokenizers;
using static TorchSharp.torch;

namespace SaeSharp.Tests.Models;

/// <summary>Phi-3's fused weights and config reading, on the tests/data/hf_models/phi3 fixture (its forward against the
/// transcription of transformers' modeling_phi3.py is in <see cref="HfTransformersParityTests"/>).</summary>
public class Phi3Tests : TempDirTestBase
{
    private static string Fixture => TestPaths.Data("hf_models", "phi3");

    /// <summary>A copy of the fixture with config.json edited by <paramref name="edit"/>.</summary>
    private string Edited(Action<JsonObject> edit) => EditedCopy(Fixture, edit);

    [Fact]
    public void Fused_weights_split_as_a_mistral_with_the_same_separate_weights()
    {
        // Independent check of the split: the fixture's qkv_proj cut here into q (4 heads × 8 rows), k and v (2 heads × 8
        // each), gate_up_proj into gate and up (48 rows each), saved under Mistral's names (windowed every layer, no
        // biases, the same partial rotary) with model_type mistral: the same model, so the same logits and hooks.
        using var scope = NewDisposeScope();
        var w = SafeTensors.Load(Path.Combine(Fixture, "model.safetensors"));
        var split = new Dictionary<string, Tensor>(StringComparer.Ordinal);
        foreach (var (k, t) in w)
        {
            if (k.EndsWith(".self_attn.qkv_proj.weight", StringComparison.Ordinal))
            {
                string stem = k[..^"qkv_proj.weight".Length];
                split[stem + "q_proj.weight"] = t[..32];
                split[stem + "k_proj.weight"] = t[32..48];
                split[stem + "v_proj.weight"] = t[48..];
            }
            else if (k.EndsWith(".mlp.gate_up_proj.weight", StringComparison.Ordinal))
            {
                string stem = k[..^"gate_up_proj.weight".Length];
                split[stem + "gate_proj.weight"] = t[..48];
                split[stem + "up_proj.weight"] = t[48..];
            }
            else split[k] = t;
        }
        string dir = Edited(c => { c["model_type"] = "mistral"; c["architectures"] = new JsonArray("MistralForCausalLM"); });
        SafeTensors.Save(Path.Combine(dir, "model.safetensors"), split);
        using var phi3 = ModelLoader.FromPretrained(Fixture);
        using var mistral = ModelLoader.FromPretrained(dir);
        Assert.Equal("mistral", mistral.Config.Architecture);
        Assert.Equal(mistral.Config.SlidingWindowLayers, phi3.Config.SlidingWindowLayers);
        var tokens = tensor(new long[] { 5, 99, 3, 17, 42, 8, 0, 127, 64, 12 }).unsqueeze(0);
        string[] names = ["blocks.1.attn.hook_q", "blocks.1.attn.hook_k", "blocks.1.attn.hook_v", "blocks.1.attn.hook_z",
            "blocks.2.mlp.hook_pre", "blocks.2.mlp.hook_pre_linear", "blocks.2.hook_resid_post"];
        var (a, ca) = phi3.RunWithCache(tokens, names);
        var (b, cb) = mistral.RunWithCache(tokens, names);
        using (ca)
        using (cb)
        {
            Assert.True(a!.allclose(b!, rtol: 0, atol: 1e-6));
            foreach (var n in names) Assert.True(ca[n].allclose(cb[n], rtol: 0, atol: 1e-6), n);
            // The split is not the identity of a transposed layout: hook_k is the fixture's rows 32..47 applied to ln1's output.
            var ln1 = phi3.RunWithCache(tokens, ["blocks.1.ln1.hook_normalized"]);
            using (ln1.Cache)
            {
                var k = ln1.Cache["blocks.1.ln1.hook_normalized"].matmul(w["model.layers.1.self_attn.qkv_proj.weight"][32..48].t()).view(1, 10, 2, 8);
                Assert.True(k.allclose(ca["blocks.1.attn.hook_k"], rtol: 0, atol: 1e-5));
            }
        }
    }

    [Theory]
    [InlineData("rope_scaling", """{"type": "yarn", "factor": 2.0}""", "rope_scaling of type 'yarn' is not supported on a phi3 model")]
    [InlineData("rope_scaling", """{"type": "longrope", "short_factor": [1, 1], "long_factor": [2, 2, 2]}""", "rope_scaling.short_factor must be a list of 3 positive numbers")]
    [InlineData("rope_scaling", """{"type": "su", "short_factor": [1, 1, 1], "long_factor": [2, 0, 2]}""", "rope_scaling.long_factor must be a list of 3 positive numbers")]
    [InlineData("rope_parameters", """{"rope_type": "longrope", "rope_theta": 10000.0}""", "rope_parameters.short_factor must be a list of 3 positive numbers")]
    [InlineData("num_key_value_heads", "4", "'model.layers.0.self_attn.qkv_proj.weight' of shape [96, 32]")]
    [InlineData("num_key_value_heads", "3", "num_attention_heads=4 must be a multiple of num_key_value_heads=3")]
    [InlineData("intermediate_size", "40", "'model.layers.0.mlp.gate_up_proj.weight' of shape [80, 32]")]
    [InlineData("partial_rotary_factor", "0.1", "partial_rotary_factor=0.1 gives 0 rotary dims")]
    [InlineData("sliding_window", "0", "sliding_window=0 must be positive")]
    public void Bad_config_is_refused_naming_the_key(string key, string value, string message)
    {
        string dir = Edited(c => c[key] = JsonNode.Parse(value));
        var e = Assert.Throws<SaeSharpException>(() => ModelLoader.FromPretrained(dir));
        Assert.Contains(message, e.Message);
        Assert.Contains("config.json", e.Message);
        // CheckSupported (run before a download fetches the weights) refuses the rope types too.
        if (key.StartsWith("rope", StringComparison.Ordinal))
            Assert.Contains(message, Assert.Throws<SaeSharpException>(() => ModelLoader.CheckSupported(Path.Combine(dir, "config.json"))).Message);
    }

    [Fact]
    public void Checkpoint_with_both_fused_and_split_weights_is_refused()
    {
        using var scope = NewDisposeScope();
        var w = SafeTensors.Load(Path.Combine(Fixture, "model.safetensors"));
        w["model.layers.0.self_attn.q_proj.weight"] = zeros(32, 32);
        string dir = Edited(_ => { });
        SafeTensors.Save(Path.Combine(dir, "model.safetensors"), w);
        var e = Assert.Throws<SaeSharpException>(() => ModelLoader.FromPretrained(dir));
        Assert.Contains("'model.layers.0.self_attn.q_proj.weight' and its packed form 'model.layers.0.self_attn.qkv_proj.weight'", e.Message);
    }

    [Fact]
    public void Found_by_architecture_without_model_type_and_default_rope_accepted()
    {
        using var scope = NewDisposeScope();
        var r = Npy.LoadNpz(Path.Combine(Fixture, "reference.npz"));
        string dir = Edited(c =>
        {
            c.Remove("model_type");
            c["rope_scaling"] = JsonNode.Parse("""{"rope_type": "default"}""");
        });
        using var model = ModelLoader.FromPretrained(dir);
        Assert.Equal("phi3", model.Config.Architecture);
        Assert.True(r["logits"].allclose(model.Forward(r["tokens"]), rtol: 0, atol: 1e-4));
    }

    private static string LongRopeFixture => TestPaths.Data("hf_models", "phi3-longrope");

    [Fact]
    public void Longrope_matches_the_transcription_before_and_past_the_original_context()
    {
        // phi3_fixture.py's transcription of _compute_longrope_parameters with original_max_position_embeddings 10:
        // the 12-token forward takes the long factors, the first 8 tokens and the padded batch (positions up to 9) the short ones.
        using var scope = NewDisposeScope();
        var r = Npy.LoadNpz(Path.Combine(LongRopeFixture, "reference.npz"));
        using var model = ModelLoader.FromPretrained(LongRopeFixture);
        var tokens = r["tokens"];
        Assert.True(r["logits"].allclose(model.Forward(tokens), rtol: 0, atol: 1e-5));
        Assert.True(r["short_logits"].allclose(model.Forward(tokens.narrow(1, 0, 8)), rtol: 0, atol: 1e-5));
        var mask = r["padded_mask"];
        var padded = model.Forward(tokens, attentionMask: mask);
        var real = mask.to(ScalarType.Bool).unsqueeze(-1).expand_as(padded);
        Assert.True(r["padded_logits"].masked_select(real).allclose(padded.masked_select(real), rtol: 0, atol: 1e-5));
        // The switch matters: the short factors on all 12 tokens (a model whose original context is 12) differ.
        using var shortOnly = ModelLoader.FromPretrained(EditedCopy(LongRopeFixture, c => c["original_max_position_embeddings"] = 12));
        Assert.False(r["logits"].allclose(shortOnly.Forward(tokens), rtol: 0, atol: 1e-2));
        // factor 64 / 10, attention factor √(1 + ln 6.4 / ln 10), printed by sae model info.
        Assert.Contains($"rope_type=longrope(factor=6.4 original_max_position_embeddings=10 attention_factor={Math.Round(Math.Sqrt(1 + Math.Log(6.4) / Math.Log(10)), 5).ToString(System.Globalization.CultureInfo.InvariantCulture)})",
            model.Config.ToString());
    }

    [Fact]
    public void Longrope_frequencies_are_the_short_and_long_factors_over_the_default_ones()
    {
        // Independent of the fixture: each frequency is the default rope's divided by its factor, and an explicit
        // attention_factor is taken as given; "su" reads as longrope.
        using var scope = NewDisposeScope();
        string dir = Edited(c =>
        {
            c["original_max_position_embeddings"] = 16;
            c["rope_scaling"] = JsonNode.Parse("""{"type": "su", "short_factor": [1.0, 2.0, 4.0], "long_factor": [3.0, 5.0, 7.0], "attention_factor": 1.25}""");
        });
        var s = DecoderSettings.From(JsonConfig.Read(Path.Combine(dir, "config.json")), "phi3");
        double[] plain = [.. Enumerable.Range(0, 3).Select(i => 1 / Math.Pow(10000, 2.0 * i / 6))];
        Assert.Equal(1.25, s.RopeAttentionScaling);
        Assert.Equal(16, s.LongRope!.OriginalMax);
        for (int i = 0; i < 3; i++)
        {
            Assert.Equal(plain[i] / new[] { 1.0, 2.0, 4.0 }[i], s.InvFreq[i], 1e-6 * plain[i]);
            Assert.Equal(plain[i] / new[] { 3.0, 5.0, 7.0 }[i], s.LongRope.LongInvFreq[i], 1e-6 * plain[i]);
        }
    }
}
