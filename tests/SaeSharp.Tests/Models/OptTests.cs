using System.Text.Json.Nodes;
using SaeSharp.Hub;
using SaeSharp.IO;
using SaeSharp.Models;
using SaeSharp.Tests.Cli;
using SaeSharp.Tests.Tokenizers;
using static SaeSharp.Tests.Models.TranscriptionReference;
using static TorchSharp.torch;

namespace SaeSharp.Tests.Models;

/// <summary>OPT (OPTForCausalLM: facebook/opt-125m … opt-66b) on the tests/data/hf_models/opt fixture, whose reference.npz
/// holds the TransformerLens hook values of bench/reference/opt_fixture.py's transcription of transformers'
/// modeling_opt.py (logits, residual stream, padding and generation are in <see cref="HfTransformersParityTests"/>).</summary>
public class OptTests : TempDirTestBase
{
    private static string Fixture => TestPaths.Data("hf_models", "opt");

    private string Edited(Action<JsonObject> edit) => EditedCopy(Fixture, edit);

    [Fact]
    public void Hooks_match_the_transcription_of_modeling_opt()
    {
        using var scope = NewDisposeScope();
        var r = Npy.LoadNpz(Path.Combine(Fixture, "reference.npz"));
        var expected = new Dictionary<string, string>(StringComparer.Ordinal)
        {
            ["hook_embed"] = "hook_embed",
            ["hook_pos_embed"] = "hook_pos_embed",
            ["ln_final.hook_normalized"] = "hidden_3",
        };
        for (int i = 0; i < 3; i++)
        {
            string b = $"blocks.{i}.";
            expected[b + "hook_resid_pre"] = $"hidden_{i}";
            expected[b + "ln1.hook_normalized"] = $"hook_ln1_{i}";
            expected[b + "ln2.hook_normalized"] = $"hook_ln2_{i}";
            expected[b + "attn.hook_q"] = $"hook_q_{i}";
            expected[b + "attn.hook_k"] = $"hook_k_{i}";
            expected[b + "attn.hook_v"] = $"hook_v_{i}";
            expected[b + "attn.hook_pattern"] = $"hook_pattern_{i}";
            expected[b + "attn.hook_z"] = $"hook_z_{i}";
            expected[b + "hook_attn_out"] = $"hook_attn_out_{i}";
            expected[b + "hook_resid_mid"] = $"hook_resid_mid_{i}";
            expected[b + "mlp.hook_pre"] = $"hook_mlp_pre_{i}";
            expected[b + "mlp.hook_post"] = $"hook_mlp_post_{i}";
            expected[b + "hook_mlp_out"] = $"hook_mlp_out_{i}";
            if (i < 2) expected[b + "hook_resid_post"] = $"hidden_{i + 1}";
        }
        using var model = ModelLoader.FromPretrained(Fixture);
        var (logits, cache) = model.RunWithCache(r["tokens"], [.. expected.Keys]);
        using (cache)
        {
            AssertMatches(r, expected, cache, logits!);
        }
        // HF module paths name the same hooks (OPT's MLP has no module: fc1 and fc2 sit in the layer).
        Assert.Equal("blocks.0.mlp.hook_pre", model.HookPoints.Resolve("model.decoder.layers.0.fc1"));
        Assert.Equal("blocks.2.hook_mlp_out", model.HookPoints.Resolve("layers.2.fc2"));
        Assert.Equal("blocks.1.ln2.hook_normalized", model.HookPoints.Resolve("model.decoder.layers.1.final_layer_norm"));
        Assert.Equal("ln_final.hook_normalized", model.HookPoints.Resolve("model.decoder.final_layer_norm"));
        Assert.Equal("hook_pos_embed", model.HookPoints.Resolve("model.decoder.embed_positions"));
    }

    [Fact]
    public void Opt_350m_post_norm_and_projections_match_the_transcription()
    {
        // facebook/opt-350m's layout: do_layer_norm_before false, word_embed_proj_dim 16 ≠ hidden_size 32.
        using var scope = NewDisposeScope();
        string fixture = TestPaths.Data("hf_models", "opt-350m");
        var r = Npy.LoadNpz(Path.Combine(fixture, "reference.npz"));
        var expected = new Dictionary<string, string>(StringComparer.Ordinal)
        {
            ["hook_embed"] = "hook_embed",   // embed_tokens' output, before project_in
            ["hook_pos_embed"] = "hook_pos_embed",
            ["ln_final.hook_normalized"] = "hook_ln_final",   // project_out's output (no final_layer_norm)
        };
        for (int i = 0; i < 3; i++)
        {
            string b = $"blocks.{i}.";
            expected[b + "hook_resid_pre"] = $"hidden_{i}";
            expected[b + "ln1.hook_normalized"] = $"hook_ln1_{i}";
            expected[b + "ln2.hook_normalized"] = $"hook_ln2_{i}";
            expected[b + "attn.hook_q"] = $"hook_q_{i}";
            expected[b + "attn.hook_pattern"] = $"hook_pattern_{i}";
            expected[b + "attn.hook_z"] = $"hook_z_{i}";
            expected[b + "hook_attn_out"] = $"hook_attn_out_{i}";
            expected[b + "hook_resid_mid"] = $"hook_resid_mid_{i}";
            expected[b + "mlp.hook_pre"] = $"hook_mlp_pre_{i}";
            expected[b + "hook_mlp_out"] = $"hook_mlp_out_{i}";
            expected[b + "hook_resid_post"] = $"hook_ln2_{i}";
        }
        using var model = ModelLoader.FromPretrained(fixture);
        var (logits, cache) = model.RunWithCache(r["tokens"], [.. expected.Keys]);
        using (cache)
        {
            AssertMatches(r, expected, cache, logits!);
            Assert.Equal([2L, 12L, 16L], cache["hook_embed"].shape);
            Assert.Equal([2L, 12L, 16L], cache["ln_final.hook_normalized"].shape);
            // Post-norm, independent of the transcription: every residual stream after a layer is a LayerNorm output, so
            // (affine part aside) it is what self_attn_layer_norm makes of resid_pre + attn_out.
            var w = SafeTensors.Load(Path.Combine(fixture, "model.safetensors"));
            var sum = cache["blocks.1.hook_resid_pre"] + cache["blocks.1.hook_attn_out"];
            var ln = nn.functional.layer_norm(sum, [32], w["model.decoder.layers.1.self_attn_layer_norm.weight"],
                w["model.decoder.layers.1.self_attn_layer_norm.bias"], 1e-5);
            Assert.True(ln.allclose(cache["blocks.1.hook_resid_mid"], rtol: 0, atol: 1e-5));
            // The unembedding reads project_out's output with embed_tokens (tied, word_embed_proj_dim wide).
            var unembed = matmul(cache["ln_final.hook_normalized"], w["model.decoder.embed_tokens.weight"].t());
            Assert.True(unembed.allclose(logits!, rtol: 0, atol: 1e-4));
        }
        var e = Assert.Throws<SaeSharpException>(() => WeightProcessing.Apply(ModelLoader.FromPretrained(fixture), new WeightProcessingOptions { FoldLn = true }));
        Assert.Contains("do_layer_norm_before=false", e.Message);
    }

    [Fact]
    public void Opt_350m_weight_processing_refusal_names_the_steps_asked_and_both_reasons()
    {
        using var scope = NewDisposeScope();
        string fixture = TestPaths.Data("hf_models", "opt-350m");
        using var model = ModelLoader.FromPretrained(fixture);
        var before = model.named_parameters().ToDictionary(kv => kv.name, kv => kv.parameter.clone());
        var e = Assert.Throws<SaeSharpException>(() =>
            WeightProcessing.Apply(model, new WeightProcessingOptions { CenterWritingWeights = true, CenterUnembed = true }));
        Assert.StartsWith("weight processing (center_writing_weights) is not supported for ", e.Message, StringComparison.Ordinal);
        Assert.Contains("post-norm", e.Message, StringComparison.Ordinal);
        Assert.Contains("word_embed_proj_dim=16 ≠ hidden_size=32", e.Message, StringComparison.Ordinal);
        Assert.Contains("--center-writing-weights", e.Message, StringComparison.Ordinal);
        Assert.DoesNotContain('\n', e.Message);
        // Refused before anything changed.
        foreach (var (name, p) in model.named_parameters()) Assert.True(p.equal(before[name]).all().item<bool>(), name);
    }

    [Fact]
    public void Opt_350m_logit_attribution_is_refused_for_want_of_a_final_norm()
    {
        using var scope = NewDisposeScope();
        using var model = ModelLoader.FromPretrained(TestPaths.Data("hf_models", "opt-350m"));
        Assert.DoesNotContain("ln_final.hook_scale", model.HookNames);
        var e = Assert.Throws<SaeSharpException>(() => SaeSharp.Analysis.LogitAttribution.Run(model, [tensor(new long[] { 3, 9, 27 })], [(3, 5)]));
        Assert.Contains("ln_final.hook_scale", e.Message, StringComparison.Ordinal);
        Assert.Contains("do_layer_norm_before=false", e.Message, StringComparison.Ordinal);
    }

    [Fact]
    public void Opt_350m_center_unembed_and_fold_value_biases_keep_the_predictions()
    {
        // Neither step needs pre-norm layers or one d_model: center_unembed shifts each position's logits by a constant
        // (log-softmax unchanged), fold_value_biases moves b_V into b_O (the pattern's rows sum to 1).
        using var scope = NewDisposeScope();
        string fixture = TestPaths.Data("hf_models", "opt-350m");
        var tokens = tensor(new long[,] { { 3, 9, 27, 81, 5 } });
        using var plain = ModelLoader.FromPretrained(fixture);
        using var processed = ModelLoader.FromPretrained(fixture);
        var expected = plain.Forward(tokens).log_softmax(-1);
        var pm = WeightProcessing.Apply(processed, new WeightProcessingOptions { CenterUnembed = true, FoldValueBiases = true });
        var logits = pm.Model.Forward(tokens);
        Assert.True(logits.mean([-1L]).abs().max().item<float>() < 1e-5, "centred logits have mean 0 over the vocabulary");
        Assert.True(logits.log_softmax(-1).allclose(expected, rtol: 0, atol: 1e-5));
    }

    [Fact]
    public void Positions_read_embed_positions_two_rows_on_counting_real_tokens()
    {
        // Independent of the transcription: hook_pos_embed at the p-th real token is row p + 2 of embed_positions
        // (OPT's offset), also when the row is left-padded.
        using var scope = NewDisposeScope();
        var w = SafeTensors.Load(Path.Combine(Fixture, "model.safetensors"))["model.decoder.embed_positions.weight"];
        using var model = ModelLoader.FromPretrained(Fixture);
        var tokens = tensor(new long[,] { { 1, 1, 7, 9, 11 }, { 4, 5, 6, 7, 8 } });
        var mask = tensor(new long[,] { { 0, 0, 1, 1, 1 }, { 1, 1, 1, 1, 1 } });
        var (_, cache) = model.RunWithCache(tokens, ["hook_pos_embed"], attentionMask: mask);
        using (cache)
        {
            var pos = cache["hook_pos_embed"];
            for (int p = 0; p < 5; p++)
                Assert.True(pos[1, p].equal(w[p + 2]).all().item<bool>(), $"row 1 position {p}");
            for (int p = 0; p < 3; p++)
                Assert.True(pos[0, p + 2].equal(w[p + 2]).all().item<bool>(), $"row 0 real token {p}");
        }
    }

    [Fact]
    public void Untied_lm_head_is_read_when_tie_word_embeddings_is_false()
    {
        // lm_head.weight = 2 · embed_tokens: every logit doubles.
        using var scope = NewDisposeScope();
        var w = SafeTensors.Load(Path.Combine(Fixture, "model.safetensors"));
        w["lm_head.weight"] = w["model.decoder.embed_tokens.weight"] * 2;
        string dir = Edited(c => c["tie_word_embeddings"] = false);
        SafeTensors.Save(Path.Combine(dir, "model.safetensors"), w);
        var tokens = tensor(new long[] { 5, 99, 3, 17, 42, 8 }).unsqueeze(0);
        using var tied = ModelLoader.FromPretrained(Fixture);
        using var untied = ModelLoader.FromPretrained(dir);
        Assert.True((tied.Forward(tokens) * 2).allclose(untied.Forward(tokens), rtol: 0, atol: 1e-4));
    }

    [Theory]
    [InlineData("word_embed_proj_dim", "16", "'model.decoder.embed_tokens.weight' of shape [128, 16] but")]
    [InlineData("_remove_final_layer_norm", "true", "_remove_final_layer_norm=true is not supported for opt")]
    [InlineData("layer_norm_elementwise_affine", "false", "layer_norm_elementwise_affine=false is not supported for opt")]
    [InlineData("num_attention_heads", "3", "hidden_size=32 must be a positive multiple of num_attention_heads=3")]
    [InlineData("max_position_embeddings", "66", "'model.decoder.embed_positions.weight' of shape [68, 32] but")]
    [InlineData("ffn_dim", "40", "'model.decoder.layers.0.fc1.weight' of shape [40, 32] but")]
    [InlineData("num_hidden_layers", "2", "num_hidden_layers=2 but the weights")]
    public void Bad_config_is_refused_naming_the_key(string key, string value, string message)
    {
        string dir = Edited(c => c[key] = JsonNode.Parse(value));
        var e = Assert.Throws<SaeSharpException>(() => ModelLoader.FromPretrained(dir));
        Assert.Contains(message, e.Message);
        Assert.Contains("config.json", e.Message);
    }

    [Fact]
    public void Found_by_architecture_and_with_facebooks_decoder_keys()
    {
        // facebook/opt-125m's own files name the weights decoder.* (OPTModel's state dict), without model.
        using var scope = NewDisposeScope();
        var r = Npy.LoadNpz(Path.Combine(Fixture, "reference.npz"));
        var w = SafeTensors.Load(Path.Combine(Fixture, "model.safetensors"));
        string dir = Edited(c => c.Remove("model_type"));
        SafeTensors.Save(Path.Combine(dir, "model.safetensors"), w.ToDictionary(kv => kv.Key["model.".Length..], kv => kv.Value));
        using var model = ModelLoader.FromPretrained(dir);
        Assert.Equal("opt", model.Config.Architecture);
        Assert.True(RelativeDifference(r["logits"], model.Forward(r["tokens"])) < 1e-5);
        foreach (var (alias, official) in new[] { ("opt", "facebook/opt-125m"), ("opt-125m", "facebook/opt-125m"), ("opt-xl", "facebook/opt-6.7b") })
            Assert.Equal(official, TransformerLensNames.OfficialName(alias));
    }

    [Fact]
    public void Model_run_on_the_cli_writes_the_transcriptions_hooks()
    {
        using var scope = NewDisposeScope();
        var r = Npy.LoadNpz(Path.Combine(Fixture, "reference.npz"));
        string input = Path.Combine(_dir, "in.safetensors"), output = Path.Combine(_dir, "out.safetensors");
        SafeTensors.Save(input, new Dictionary<string, Tensor> { ["tokens"] = r["tokens"] });
        var (exit, _, err) = CliRunner.Run("model", "run", "--model", Fixture, "--input", input, "--out", output,
            "--hooks", "blocks.2.hook_mlp_out,blocks.1.attn.hook_pattern,hook_pos_embed");
        Assert.True(exit == 0, err);
        var o = SafeTensors.Load(output);
        Assert.True(RelativeDifference(r["logits"], o["logits"]) < 1e-5);
        Assert.True(RelativeDifference(r["hook_mlp_out_2"], o["blocks.2.hook_mlp_out"]) < 1e-5);
        Assert.True(RelativeDifference(r["hook_pattern_1"], o["blocks.1.attn.hook_pattern"]) < 1e-5);
        Assert.True(RelativeDifference(r["hook_pos_embed"], o["hook_pos_embed"]) < 1e-5);
        (exit, var info, err) = CliRunner.Run("model", "info", "--model", Fixture);
        Assert.True(exit == 0, err);
        Assert.Contains("(opt): n_layers=3 d_model=32", info);
        Assert.Contains("act=relu", info);
    }
}
