using System.Text.Json.Nodes;
using SaeSharp.IO;
using SaeSharp.Models;
using SaeSharp.Tests.Cli;
using SaeSharp.Tests.Tokenizers;
using static SaeSharp.Tests.Models.TranscriptionReference;
using static TorchSharp.torch;

namespace SaeSharp.Tests.Models;

/// <summary>Phi (PhiForCausalLM: phi-1, phi-1_5, phi-2) on the tests/data/hf_models/phi fixture, whose reference.npz holds
/// the TransformerLens hook values of bench/reference/phi_fixture.py's transcription of transformers' modeling_phi.py
/// (logits, residual stream, padding and generation are in <see cref="HfTransformersParityTests"/>).</summary>
public class PhiTests : TempDirTestBase
{
    private static string Fixture => TestPaths.Data("hf_models", "phi");
    private static string QkFixture => TestPaths.Data("hf_models", "phi-qk_layernorm");

    private string Edited(Action<JsonObject> edit) => EditedCopy(Fixture, edit);

    [Theory]
    [InlineData("phi")]
    [InlineData("phi-qk_layernorm")]
    public void Hooks_match_the_transcription_of_modeling_phi(string folder)
    {
        using var scope = NewDisposeScope();
        string fixture = TestPaths.Data("hf_models", folder);
        var r = Npy.LoadNpz(Path.Combine(fixture, "reference.npz"));
        var expected = new Dictionary<string, string>(StringComparer.Ordinal);
        for (int i = 0; i < 3; i++)
        {
            string b = $"blocks.{i}.";
            expected[b + "hook_resid_pre"] = $"hidden_{i}";
            expected[b + "ln1.hook_normalized"] = $"hook_ln1_{i}";
            expected[b + "ln2.hook_normalized"] = $"hook_ln1_{i}";   // TransformerLens ties ln2 to ln1 (one input_layernorm)
            expected[b + "attn.hook_q"] = $"hook_q_{i}";
            expected[b + "attn.hook_k"] = $"hook_k_{i}";
            expected[b + "attn.hook_v"] = $"hook_v_{i}";
            expected[b + "attn.hook_rot_q"] = $"hook_rot_q_{i}";
            expected[b + "attn.hook_rot_k"] = $"hook_rot_k_{i}";
            expected[b + "attn.hook_pattern"] = $"hook_pattern_{i}";
            expected[b + "attn.hook_z"] = $"hook_z_{i}";
            expected[b + "hook_attn_out"] = $"hook_attn_out_{i}";
            expected[b + "mlp.hook_pre"] = $"hook_mlp_pre_{i}";
            expected[b + "mlp.hook_post"] = $"hook_mlp_post_{i}";
            expected[b + "hook_mlp_out"] = $"hook_mlp_out_{i}";
            if (i < 2) expected[b + "hook_resid_post"] = $"hidden_{i + 1}";
        }
        expected["ln_final.hook_normalized"] = "hidden_3";
        using var model = ModelLoader.FromPretrained(fixture);
        var (logits, cache) = model.RunWithCache(r["tokens"], [.. expected.Keys]);
        using (cache)
        {
            AssertMatches(r, expected, cache, logits!);
            // The rotary half: only the first rotary_dim = int(8 · 0.5) = 4 dims of each head turn; the rest pass through
            // (after q_layernorm with qk_layernorm, which hook_q precedes).
            var q = cache["blocks.1.attn.hook_q"];
            var rotQ = cache["blocks.1.attn.hook_rot_q"];
            Assert.Equal(folder == "phi", q.narrow(3, 4, 4).equal(rotQ.narrow(3, 4, 4)).all().item<bool>());
            Assert.False(q.narrow(3, 0, 4).narrow(1, 1, 11).allclose(rotQ.narrow(3, 0, 4).narrow(1, 1, 11), rtol: 0, atol: 1e-3));
            // Parallel block: resid_post = resid_pre + attn_out + mlp_out, both read the same norm of resid_pre.
            var sum = cache["blocks.0.hook_resid_pre"] + cache["blocks.0.hook_attn_out"] + cache["blocks.0.hook_mlp_out"];
            Assert.True(sum.allclose(cache["blocks.0.hook_resid_post"], rtol: 0, atol: 1e-5));
        }
        Assert.Equal(4, model.Config.RotaryDim);
        Assert.True(model.Config.ParallelAttnMlp);
    }

    [Fact]
    public void Lm_head_bias_is_applied()
    {
        // Independent of the transcription: zeroing lm_head.bias moves every logit by exactly minus that bias.
        using var scope = NewDisposeScope();
        var w = SafeTensors.Load(Path.Combine(Fixture, "model.safetensors"));
        var bias = w["lm_head.bias"].clone();
        w["lm_head.bias"] = zeros_like(bias);
        string dir = Edited(_ => { });
        SafeTensors.Save(Path.Combine(dir, "model.safetensors"), w);
        var tokens = tensor(new long[] { 5, 99, 3, 17, 42, 8 }).unsqueeze(0);
        using var withBias = ModelLoader.FromPretrained(Fixture);
        using var without = ModelLoader.FromPretrained(dir);
        var diff = withBias.Forward(tokens) - without.Forward(tokens);
        Assert.True(diff.allclose(bias.expand_as(diff), rtol: 0, atol: 1e-5));
    }

    [Theory]
    [InlineData("tie_word_embeddings", "true", "tie_word_embeddings=true is not supported for phi")]
    [InlineData("rope_scaling", """{"type": "linear", "factor": 2.0}""", "rope_scaling of type 'linear' is not supported for phi")]
    [InlineData("partial_rotary_factor", "0.1", "partial_rotary_factor=0.1 gives 0 rotary dims")]
    [InlineData("num_key_value_heads", "3", "num_attention_heads=4 must be a multiple of num_key_value_heads=3")]
    [InlineData("num_key_value_heads", "2", "'model.layers.0.self_attn.k_proj.weight' of shape [16, 32] but")]
    [InlineData("intermediate_size", "40", "'model.layers.0.mlp.fc1.weight' of shape [40, 32] but")]
    [InlineData("num_hidden_layers", "2", "num_hidden_layers=2 but the weights")]
    public void Bad_config_is_refused_naming_the_key(string key, string value, string message)
    {
        string dir = Edited(c => c[key] = JsonNode.Parse(value));
        var e = Assert.Throws<SaeSharpException>(() => ModelLoader.FromPretrained(dir));
        Assert.Contains(message, e.Message);
        Assert.Contains("config.json", e.Message);
    }

    [Fact]
    public void Qk_layernorm_normalises_each_head_of_q_and_k_before_rotary()
    {
        // Independent of the transcription: with q_layernorm / k_layernorm at weight 1 and bias 0, each head of q and k
        // is centred and scaled to variance v / (v + eps); rotary turns pairs of dims, so after it every head still has
        // squared norm head_dim · v / (v + eps), whatever hook_q was.
        using var scope = NewDisposeScope();
        var w = SafeTensors.Load(Path.Combine(QkFixture, "model.safetensors"));
        foreach (var key in w.Keys.Where(k => k.Contains("_layernorm.", StringComparison.Ordinal) && k.Contains("self_attn", StringComparison.Ordinal)).ToList())
            w[key] = key.EndsWith(".weight", StringComparison.Ordinal) ? ones_like(w[key]) : zeros_like(w[key]);
        string dir = EditedCopy(QkFixture, _ => { });
        SafeTensors.Save(Path.Combine(dir, "model.safetensors"), w);
        var tokens = tensor(new long[] { 5, 99, 3, 17, 42, 8 }).unsqueeze(0);
        using var model = ModelLoader.FromPretrained(dir);
        var (_, cache) = model.RunWithCache(tokens, ["blocks.1.attn.hook_q", "blocks.1.attn.hook_rot_q", "blocks.2.attn.hook_k", "blocks.2.attn.hook_rot_k"]);
        using (cache)
            foreach (var (pre, rot) in new[] { ("blocks.1.attn.hook_q", "blocks.1.attn.hook_rot_q"), ("blocks.2.attn.hook_k", "blocks.2.attn.hook_rot_k") })
            {
                var x = cache[pre].to(ScalarType.Float64);
                var variance = x.var(-1, unbiased: false);
                var expected = 8 * variance / (variance + 1e-5);
                var r = cache[rot].to(ScalarType.Float64);
                var actual = (r * r).sum(-1);
                Assert.True(actual.allclose(expected, rtol: 1e-4, atol: 1e-5), rot);
            }
    }

    [Fact]
    public void Qk_layernorm_true_without_its_weights_is_refused_naming_the_weight()
    {
        string dir = Edited(c => c["qk_layernorm"] = true);
        var e = Assert.Throws<SaeSharpException>(() => ModelLoader.FromPretrained(dir));
        Assert.Contains("model.layers.0.self_attn.q_layernorm.weight", e.Message);
    }

    [Fact]
    public void Found_by_architecture_without_model_type()
    {
        using var scope = NewDisposeScope();
        var r = Npy.LoadNpz(Path.Combine(Fixture, "reference.npz"));
        string dir = Edited(c => c.Remove("model_type"));
        using var model = ModelLoader.FromPretrained(dir);
        Assert.Equal("phi", model.Config.Architecture);
        Assert.True(RelativeDifference(r["logits"], model.Forward(r["tokens"])) < 1e-5);
    }

    [Fact]
    public void Model_run_on_the_cli_writes_the_transcriptions_hooks()
    {
        using var scope = NewDisposeScope();
        var r = Npy.LoadNpz(Path.Combine(Fixture, "reference.npz"));
        string input = Path.Combine(_dir, "in.safetensors"), output = Path.Combine(_dir, "out.safetensors");
        SafeTensors.Save(input, new Dictionary<string, Tensor> { ["tokens"] = r["tokens"] });
        var (exit, _, err) = CliRunner.Run("model", "run", "--model", Fixture, "--input", input, "--out", output,
            "--hooks", "blocks.2.hook_mlp_out,blocks.1.attn.hook_pattern");
        Assert.True(exit == 0, err);
        var o = SafeTensors.Load(output);
        Assert.True(RelativeDifference(r["logits"], o["logits"]) < 1e-5);
        Assert.True(RelativeDifference(r["hook_mlp_out_2"], o["blocks.2.hook_mlp_out"]) < 1e-5);
        Assert.True(RelativeDifference(r["hook_pattern_1"], o["blocks.1.attn.hook_pattern"]) < 1e-5);
        (exit, var info, err) = CliRunner.Run("model", "info", "--model", Fixture);
        Assert.True(exit == 0, err);
        Assert.Contains("parallel_attn_mlp", info);
        Assert.Contains("rotary_dim=4", info);
    }
}
