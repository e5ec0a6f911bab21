using System.Text.Json.Nodes;
using SaeSharp.Hub;
using SaeSharp.IO;
using SaeSharp.Models;
using SaeSharp.Tests.Cli;
using SaeSharp.Tests.Tokenizers;
using static SaeSharp.Tests.Models.TranscriptionReference;
using static TorchSharp.torch;

namespace SaeSharp.Tests.Models;

/// <summary>GPT-J (GPTJForCausalLM: EleutherAI/gpt-j-6B) on the tests/data/hf_models/gptj fixture, whose reference.npz
/// holds the TransformerLens hook values of bench/reference/gptj_fixture.py's transcription of transformers'
/// modeling_gptj.py (logits, residual stream, padding and generation are in <see cref="HfTransformersParityTests"/>).</summary>
public class GptJTests : TempDirTestBase
{
    private static string Fixture => TestPaths.Data("hf_models", "gptj");

    private string Edited(Action<JsonObject> edit) => EditedCopy(Fixture, edit);

    [Fact]
    public void Hooks_match_the_transcription_of_modeling_gptj()
    {
        using var scope = NewDisposeScope();
        var r = Npy.LoadNpz(Path.Combine(Fixture, "reference.npz"));
        var expected = new Dictionary<string, string>(StringComparer.Ordinal);
        for (int i = 0; i < 3; i++)
        {
            string b = $"blocks.{i}.";
            expected[b + "hook_resid_pre"] = $"hidden_{i}";
            expected[b + "ln1.hook_normalized"] = $"hook_ln1_{i}";
            expected[b + "ln2.hook_normalized"] = $"hook_ln1_{i}";   // TransformerLens ties ln2 to ln1 (one ln_1)
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
        using var model = ModelLoader.FromPretrained(Fixture);
        var (logits, cache) = model.RunWithCache(r["tokens"], [.. expected.Keys]);
        using (cache)
        {
            AssertMatches(r, expected, cache, logits!);
            // Parallel block: resid_post = resid_pre + attn_out + mlp_out, both read the same norm of resid_pre.
            var sum = cache["blocks.0.hook_resid_pre"] + cache["blocks.0.hook_attn_out"] + cache["blocks.0.hook_mlp_out"];
            Assert.True(sum.allclose(cache["blocks.0.hook_resid_post"], rtol: 0, atol: 1e-5));
        }
        Assert.Equal(4, model.Config.RotaryDim);
        Assert.True(model.Config.ParallelAttnMlp);
        Assert.True(model.Config.RotaryAdjacentPairs);
        // Hugging Face module paths name the same hooks.
        Assert.Equal("blocks.0.mlp.hook_pre", model.HookPoints.Resolve("transformer.h.0.mlp.fc_in"));
        Assert.Equal("blocks.2.attn.hook_k", model.HookPoints.Resolve("h.2.attn.k_proj"));
        Assert.Equal("blocks.1.hook_attn_out", model.HookPoints.Resolve("transformer.h.1.attn"));
        Assert.Equal("blocks.1.ln1.hook_normalized", model.HookPoints.Resolve("transformer.h.1.ln_1"));
    }

    [Fact]
    public void Rotary_turns_adjacent_pairs_by_hand_computed_angles()
    {
        // Independent of the transcription: with rotary_dim = 4, dims (0, 1) of every head at position p turn by the
        // angle p · 10000^(−0/4) and dims (2, 3) by p · 10000^(−2/4), as 2-d rotations; dims 4..7 pass through.
        using var scope = NewDisposeScope();
        using var model = ModelLoader.FromPretrained(Fixture);
        var tokens = tensor(new long[] { 5, 99, 3, 17, 42, 8, 64 }).unsqueeze(0);
        var (_, cache) = model.RunWithCache(tokens, ["blocks.1.attn.hook_q", "blocks.1.attn.hook_rot_q"]);
        using (cache)
        {
            var q = cache["blocks.1.attn.hook_q"].to(ScalarType.Float64);
            var rot = cache["blocks.1.attn.hook_rot_q"].to(ScalarType.Float64);
            var qd = q.data<double>().ToArray();
            var rd = rot.data<double>().ToArray();
            long pos = q.shape[1], heads = q.shape[2], hd = q.shape[3];
            double worst = 0;
            for (long p = 0; p < pos; p++)
                for (long h = 0; h < heads; h++)
                {
                    long o = (p * heads + h) * hd;
                    for (int pair = 0; pair < 2; pair++)
                    {
                        double angle = p * Math.Pow(10000, -2.0 * pair / 4);
                        double x = qd[o + 2 * pair], y = qd[o + 2 * pair + 1];
                        worst = Math.Max(worst, Math.Abs(x * Math.Cos(angle) - y * Math.Sin(angle) - rd[o + 2 * pair]));
                        worst = Math.Max(worst, Math.Abs(y * Math.Cos(angle) + x * Math.Sin(angle) - rd[o + 2 * pair + 1]));
                    }
                    for (long j = 4; j < hd; j++) Assert.Equal(qd[o + j], rd[o + j]);
                }
            Assert.True(worst < 1e-5, $"rotation off by {worst}");
        }
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
    [InlineData("rotary_dim", "null", "rotary_dim=null is not supported for gptj")]
    [InlineData("rotary_dim", "3", "rotary_dim=3 must be a positive even number of at most the head size n_embd / n_head = 8")]
    [InlineData("rotary_dim", "16", "rotary_dim=16 must be a positive even number")]
    [InlineData("tie_word_embeddings", "true", "tie_word_embeddings=true is not supported for gptj")]
    [InlineData("n_head", "3", "n_embd=32 must be a positive multiple of n_head=3")]
    [InlineData("n_inner", "40", "'transformer.h.0.mlp.fc_in.weight' of shape [40, 32] but")]
    [InlineData("n_layer", "2", "n_layer=2 but the weights")]
    [InlineData("vocab_size", "100", "'transformer.wte.weight' of shape [100, 32] but")]
    public void Bad_config_is_refused_naming_the_key(string key, string value, string message)
    {
        string dir = Edited(c => c[key] = JsonNode.Parse(value));
        var e = Assert.Throws<SaeSharpException>(() => ModelLoader.FromPretrained(dir));
        Assert.Contains(message, e.Message);
        Assert.Contains("config.json", e.Message);
    }

    [Fact]
    public void Found_by_architecture_without_model_type_and_by_its_TransformerLens_names()
    {
        using var scope = NewDisposeScope();
        var r = Npy.LoadNpz(Path.Combine(Fixture, "reference.npz"));
        string dir = Edited(c => c.Remove("model_type"));
        using var model = ModelLoader.FromPretrained(dir);
        Assert.Equal("gptj", model.Config.Architecture);
        Assert.True(RelativeDifference(r["logits"], model.Forward(r["tokens"])) < 1e-5);
        // supported_models.py's MODEL_ALIASES for EleutherAI/gpt-j-6B.
        foreach (var alias in new[] { "gpt-j-6B", "gpt-j", "gptj", "GPT-J" })
            Assert.Equal("EleutherAI/gpt-j-6B", TransformerLensNames.OfficialName(alias));
    }

    [Fact]
    public void Model_run_on_the_cli_writes_the_transcriptions_hooks()
    {
        using var scope = NewDisposeScope();
        var r = Npy.LoadNpz(Path.Combine(Fixture, "reference.npz"));
        string input = Path.Combine(_dir, "in.safetensors"), output = Path.Combine(_dir, "out.safetensors");
        SafeTensors.Save(input, new Dictionary<string, Tensor> { ["tokens"] = r["tokens"] });
        var (exit, _, err) = CliRunner.Run("model", "run", "--model", Fixture, "--input", input, "--out", output,
            "--hooks", "blocks.2.hook_mlp_out,blocks.1.attn.hook_rot_k");
        Assert.True(exit == 0, err);
        var o = SafeTensors.Load(output);
        Assert.True(RelativeDifference(r["logits"], o["logits"]) < 1e-5);
        Assert.True(RelativeDifference(r["hook_mlp_out_2"], o["blocks.2.hook_mlp_out"]) < 1e-5);
        Assert.True(RelativeDifference(r["hook_rot_k_1"], o["blocks.1.attn.hook_rot_k"]) < 1e-5);
        (exit, var info, err) = CliRunner.Run("model", "info", "--model", Fixture);
        Assert.True(exit == 0, err);
        Assert.Contains("parallel_attn_mlp", info);
        Assert.Contains("rotary_dim=4", info);
        Assert.Contains("rotary_adjacent_pairs", info);
    }
}
