using System.Text.Json.Nodes;
using SaeSharp.Analysis;
using SaeSharp.Hub;
using SaeSharp.IO;
using SaeSharp.Models;
using SaeSharp.Tests.Cli;
using SaeSharp.Tests.Tokenizers;
using static SaeSharp.Tests.Models.TranscriptionReference;
using static TorchSharp.torch;

namespace SaeSharp.Tests.Models;

/// <summary>BLOOM (BloomForCausalLM: bigscience/bloom-560m … bloom-7b1) on the tests/data/hf_models/bloom fixture (6 heads:
/// not a power of two), whose reference.npz holds the TransformerLens hook values of bench/reference/bloom_fixture.py's
/// transcription of transformers' modeling_bloom.py (logits, residual stream, left/right padding and KV-cache generation
/// are in <see cref="HfTransformersParityTests"/>).</summary>
public class BloomTests : TempDirTestBase
{
    private static string Fixture => TestPaths.Data("hf_models", "bloom");

    private string Edited(Action<JsonObject> edit) => EditedCopy(Fixture, edit);

    [Fact]
    public void Hooks_match_the_transcription_of_modeling_bloom()
    {
        using var scope = NewDisposeScope();
        var r = Npy.LoadNpz(Path.Combine(Fixture, "reference.npz"));
        var expected = new Dictionary<string, string>(StringComparer.Ordinal)
        {
            ["hook_embed"] = "hook_embed",   // after word_embeddings_layernorm, as TransformerLens's embed.ln
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
        var scores = Enumerable.Range(0, 3).Select(i => $"blocks.{i}.attn.hook_attn_scores").ToArray();
        var (logits, cache) = model.RunWithCache(r["tokens"], [.. expected.Keys, .. scores]);
        using (cache)
        {
            AssertMatches(r, expected, cache, logits!);
            // The scores TransformerLens's alibi gives (slope · (key − query)), compared where the causal mask lets them be.
            long s = r["tokens"].shape[1];
            var causal = ones(s, s, dtype: ScalarType.Bool).tril();
            for (int i = 0; i < 3; i++)
                Assert.True(RelativeDifference(r[$"hook_attn_scores_{i}"].masked_select(causal), cache[scores[i]].masked_select(causal)) < 1e-5, scores[i]);
        }
        // HF module paths name the same hooks (query_key_value is fused: its input is hook_attn_in's, its output unhooked).
        Assert.Equal("blocks.0.mlp.hook_pre", model.HookPoints.Resolve("transformer.h.0.mlp.dense_h_to_4h"));
        Assert.Equal("blocks.2.hook_mlp_out", model.HookPoints.Resolve("h.2.mlp"));
        Assert.Equal("blocks.1.ln2.hook_normalized", model.HookPoints.Resolve("transformer.h.1.post_attention_layernorm"));
        Assert.Equal("ln_final.hook_normalized", model.HookPoints.Resolve("transformer.ln_f"));
        Assert.Equal("hook_embed", model.HookPoints.Resolve("transformer.word_embeddings_layernorm"));
        Assert.DoesNotContain("hook_pos_embed", model.HookPoints.Names);
    }

    [Theory]
    [InlineData(8, new[] { 1 / 2.0, 1 / 4.0, 1 / 8.0, 1 / 16.0, 1 / 32.0, 1 / 64.0, 1 / 128.0, 1 / 256.0 })]
    // 6 heads: the 4 of a power of two (2^-2, 2^-4, 2^-6, 2^-8), then the odd slopes of 8 heads (2^-1, 2^-3).
    [InlineData(6, new[] { 1 / 4.0, 1 / 16.0, 1 / 64.0, 1 / 256.0, 1 / 2.0, 1 / 8.0 })]
    [InlineData(1, new[] { 1 / 256.0 })]
    [InlineData(3, new[] { 1 / 16.0, 1 / 256.0, 1 / 4.0 })]
    public void Alibi_slopes_follow_build_alibi_tensor(int heads, double[] slopes)
    {
        Assert.Equal(slopes, AttentionCore.AlibiSlopes(heads));
        // And the fixture's transcription (torch's own pow in float32) of its 6 heads.
        using var scope = NewDisposeScope();
        var r = Npy.LoadNpz(Path.Combine(Fixture, "reference.npz"));
        Assert.Equal(r["alibi_slopes"].to(ScalarType.Float64).data<double>().ToArray(), AttentionCore.AlibiSlopes(6));
    }

    [Fact]
    public void Scores_are_the_scaled_dot_product_plus_slope_times_distance_counting_real_tokens()
    {
        // Independent of the transcription: hook_attn_scores − q·kᵀ/√d_head is slope_h · (key − query position), the
        // positions counting real tokens only, so a row left-padded by 2 has the same scores as the unpadded row.
        using var scope = NewDisposeScope();
        using var model = ModelLoader.FromPretrained(Fixture);
        var slopes = tensor(AttentionCore.AlibiSlopes(6), dtype: ScalarType.Float32).view(1, 6, 1, 1);
        var tokens = tensor(new long[,] { { 3, 3, 7, 9, 11, 40, 2 }, { 7, 9, 11, 40, 2, 5, 6 } });
        var mask = tensor(new long[,] { { 0, 0, 1, 1, 1, 1, 1 }, { 1, 1, 1, 1, 1, 1, 1 } });
        string[] hooks = ["blocks.1.attn.hook_q", "blocks.1.attn.hook_k", "blocks.1.attn.hook_attn_scores", "blocks.1.attn.hook_pattern"];
        var (_, cache) = model.RunWithCache(tokens, hooks, attentionMask: mask);
        using (cache)
        {
            var q = cache[hooks[0]].transpose(1, 2);
            var k = cache[hooks[1]].transpose(1, 2);
            var dot = matmul(q, k.transpose(-1, -2)) / Math.Sqrt(8);
            var bias = cache[hooks[2]] - dot;
            var pos = tensor(new float[] { 0, 1, 2, 3, 4, 5, 6 });
            var distance = (pos.view(1, 1, 1, 7) - pos.view(1, 1, 7, 1)) * slopes;   // row 1: positions 0..6
            var causal = ones(7, 7, dtype: ScalarType.Bool).tril();
            Assert.True(bias[1].masked_select(causal).allclose(distance[0].expand(6, 7, 7).masked_select(causal), rtol: 0, atol: 1e-5));
            // Row 0's 5 real tokens (positions 0..4) see the same distances as row 1's first five.
            var real = bias[0].narrow(1, 2, 5).narrow(2, 2, 5);
            var causal5 = ones(5, 5, dtype: ScalarType.Bool).tril();
            Assert.True(real.masked_select(causal5).allclose(distance[0].expand(6, 7, 7).narrow(1, 0, 5).narrow(2, 0, 5).masked_select(causal5), rtol: 0, atol: 1e-5));
            // The padded row's real tokens attend as the same tokens unpadded do.
            var (_, alone) = model.RunWithCache(tokens[0].narrow(0, 2, 5).unsqueeze(0), [hooks[3]]);
            using (alone)
                Assert.True(cache[hooks[3]][0].narrow(1, 2, 5).narrow(2, 2, 5).allclose(alone[hooks[3]][0], rtol: 0, atol: 1e-6));
        }
    }

    [Fact]
    public void Embed_ln_hooks_are_the_scale_and_the_output_of_the_embedding_layer_norm()
    {
        // TransformerLens's post_embedding_ln (embed.ln, a LayerNorm): hook_scale = √(var + eps) of W_E[token] per position,
        // hook_normalized = (x − mean)/scale·w + b (TransformerLens's LayerNorm fires it after the weight and bias), which
        // hook_embed then holds. Worked here in float64.
        using var scope = NewDisposeScope();
        using var model = ModelLoader.FromPretrained(Fixture);
        Assert.Equal(["embed.ln.hook_scale", "embed.ln.hook_normalized", "hook_embed"], model.HookPoints.Names.Take(3));
        var p = model.named_parameters().ToDictionary(kv => kv.name, kv => kv.parameter);
        var tokens = tensor(new long[] { 3, 7, 1, 9, 4, 100 }).unsqueeze(0);
        string[] hooks = ["embed.ln.hook_scale", "embed.ln.hook_normalized", "hook_embed"];
        var (_, cache) = model.RunWithCache(tokens, hooks);
        using (cache)
        {
            var x = p["transformer.word_embeddings.weight"].index_select(0, tokens[0]).to(ScalarType.Float64);   // [pos, d]
            var mean = x.mean([-1L], keepdim: true);
            var variance = (x - mean).pow(2).mean([-1L], keepdim: true);
            var scale = (variance + 1e-5).sqrt();
            Assert.Equal(new long[] { 1, 6, 1 }, cache[hooks[0]].shape);
            Assert.Equal(ScalarType.Float32, cache[hooks[0]].dtype);
            AssertClose(scale, cache[hooks[0]][0], 1e-6, hooks[0]);
            var normalized = (x - mean) / scale;
            var w = p["transformer.word_embeddings_layernorm.weight"].to(ScalarType.Float64);
            var b = p["transformer.word_embeddings_layernorm.bias"].to(ScalarType.Float64);
            Assert.True((normalized - (normalized * w + b)).abs().max().item<double>() > 1e-2, "embed.ln's weight and bias are the identity: the test proves nothing");
            AssertClose(normalized * w + b, cache[hooks[1]][0], 1e-5, hooks[1]);
            AssertClose(normalized * w + b, cache[hooks[2]][0], 1e-5, "hook_embed = the LayerNorm's output");
        }
        // Editing them changes the embedding as the LayerNorm's algebra says: hook_normalized zeroed zeroes hook_embed,
        // hook_scale doubled halves the normalised part.
        var embedOf = new Dictionary<string, Tensor>();
        foreach (var (hook, edit) in new (string, Func<Tensor, Tensor?>)[] { (hooks[1], t => zeros_like(t)), (hooks[0], t => t * 2) })
        {
            var (_, edited) = model.RunWithCache(tokens, new RunOptions { CacheNames = ["hook_embed"], Hooks = [(hook, edit)] });
            using (edited) embedOf[hook] = edited["hook_embed"][0].to(ScalarType.Float64).clone();
        }
        var bias = p["transformer.word_embeddings_layernorm.bias"].to(ScalarType.Float64);
        AssertClose(zeros(6, 48, dtype: ScalarType.Float64), embedOf[hooks[1]], 1e-6, "normalized zeroed");
        {
            var x = p["transformer.word_embeddings.weight"].index_select(0, tokens[0]).to(ScalarType.Float64);
            var centred = x - x.mean([-1L], keepdim: true);
            var halved = centred / (centred.pow(2).mean([-1L], keepdim: true) + 1e-5).sqrt() / 2;
            AssertClose(halved * p["transformer.word_embeddings_layernorm.weight"].to(ScalarType.Float64) + bias, embedOf[hooks[0]], 1e-5, "scale doubled");
        }
    }

    private static void AssertClose(Tensor expected, Tensor actual, double atol, string what)
    {
        Assert.Equal(expected.shape, actual.shape);
        double diff = (expected.to(ScalarType.Float64) - actual.to(ScalarType.Float64)).abs().max().item<double>();
        Assert.True(diff <= atol, $"{what}: max |difference| {diff} > {atol}");
    }

    [Fact]
    public void A_bf16_model_adds_the_alibi_in_bf16_as_transformers_baddbmm()
    {
        // transformers' BloomAttention: alibi = (slope_h · key position) built in float32 and cast to the model's dtype, then
        // baddbmm(alibi, q, kᵀ, α = 1/√d_head) in that dtype. Built here by hand from the bf16 hook_q / hook_k: the
        // scores are bf16 values (the softmax reads them in float32) within one bf16 rounding of the exact sum.
        using var scope = NewDisposeScope();
        using var model = ModelLoader.FromPretrained(Fixture, ScalarType.BFloat16);
        var tokens = tensor(new long[,] { { 3, 3, 7, 9, 11, 40, 2, 5, 6, 8, 10, 12 } });
        var mask = tensor(new long[,] { { 0, 0, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1 } });
        string[] hooks = ["blocks.1.attn.hook_q", "blocks.1.attn.hook_k", "blocks.1.attn.hook_attn_scores"];
        var (_, cache) = model.RunWithCache(tokens, hooks, attentionMask: mask);
        using (cache)
        {
            var q = cache[hooks[0]].transpose(1, 2).to(ScalarType.Float64);      // [1, head, pos, d_head]
            var k = cache[hooks[1]].transpose(1, 2).to(ScalarType.Float64);
            var keyPositions = tensor(new float[] { 0, 0, 0, 1, 2, 3, 4, 5, 6, 7, 8, 9 });   // HF: (cumsum(mask) − 1)·mask
            var slopes = tensor(AttentionCore.AlibiSlopes(6), dtype: ScalarType.Float32).view(6, 1);
            var alibi = (slopes * keyPositions.view(1, 12)).to(ScalarType.BFloat16).to(ScalarType.Float64).view(1, 6, 1, 12);
            var exact = matmul(q, k.transpose(-1, -2)) / Math.Sqrt(8) + alibi;
            var scores = cache[hooks[2]];
            Assert.Equal(ScalarType.Float32, scores.dtype);
            var real = ones(12, 12, dtype: ScalarType.Bool).tril().logical_and(tensor(new[] { false, false, true, true, true, true, true, true, true, true, true, true }).view(1, 12));
            var got = scores[0].masked_select(real).to(ScalarType.Float64);
            var want = exact[0].masked_select(real);
            Assert.True(got.equal(got.to(ScalarType.BFloat16).to(ScalarType.Float64)).all().item<bool>(), "the scores are bf16 values");
            // One bf16 rounding: within 2⁻⁸ of the value (relative), bf16 having 8 significant bits.
            var err = ((got - want).abs() / want.abs().clamp_min(1e-3)).max().item<double>();
            Assert.True(err <= 1.0 / 256, $"relative error {err}");
            // HF's alibi is slope · key position: the last head's slope (2^-3) times position 9 = 1.125 is in the scores, not
            // TransformerLens's slope · (key − query) (0 on the diagonal).
            var diagonal = scores[0, 5].diagonal().narrow(0, 11, 1).to(ScalarType.Float64);
            var dotOnly = (matmul(q, k.transpose(-1, -2)) / Math.Sqrt(8))[0, 5].diagonal().narrow(0, 11, 1);
            Assert.True(Math.Abs((diagonal - dotOnly).item<double>() - 1.125) < 0.05, "slope_h · key position on the diagonal");
        }
    }

    [Fact]
    public void Kv_cache_steps_give_the_uncached_logits()
    {
        // Prompt of 5 (left-padded by 2 in row 0), then 3 greedy steps with the cache; each step's logits equal those of
        // an uncached forward of the whole sequence so far, padding included.
        using var scope = NewDisposeScope();
        using var model = ModelLoader.FromPretrained(Fixture);
        var prompt = tensor(new long[,] { { 3, 3, 7, 9, 11 }, { 5, 7, 9, 11, 40 } });
        var mask = tensor(new long[,] { { 0, 0, 1, 1, 1 }, { 1, 1, 1, 1, 1 } });
        using var gen = model.Generate(prompt, 3, new GenerationOptions { AttentionMask = mask, ReturnLogits = true });
        var seq = gen.Tokens;
        Assert.Equal(8, seq.shape[1]);
        var full = model.Forward(seq, cat([mask, ones(2, 3, dtype: ScalarType.Int64)], 1));
        for (int step = 0; step < 3; step++)
            Assert.True(RelativeDifference(full[.., 4 + step], gen.Logits![.., step]) < 1e-5, $"step {step}");
    }

    [Fact]
    public void Analysis_weights_read_the_fused_heads_and_write_the_hooks()
    {
        // Each head's W_Q / W_K / W_V from query_key_value's [head, (q, k, v), head_dim] rows reproduces hook_q / hook_k /
        // hook_v from ln1.hook_normalized (plus the fused bias); W_O with dense's bias gives hook_attn_out from hook_z;
        // MlpOut gives hook_mlp_out from hook_post; the folded unembedding gives the logits from ln_final's input scale.
        using var scope = NewDisposeScope();
        using var model = ModelLoader.FromPretrained(Fixture);
        var p = model.named_parameters().ToDictionary(kv => kv.name, kv => kv.parameter);
        var w = AttentionCircuits.Weights(model);    // W_Q [layer, head, d_model, d_head], W_O [layer, head, d_head, d_model]
        var blk = model.HookPoints.Blocks[1];
        var tokens = tensor(new long[] { 3, 7, 1, 9, 4, 100 }).unsqueeze(0);
        using var run = model.RunWithCache(tokens, new RunOptions { CacheNames = [blk.Ln1, blk.Q, blk.K, blk.V, blk.Z, blk.AttnOut, blk.MlpPost, blk.MlpOut, "ln_final.hook_normalized"] });
        var c = run.Cache;
        var bias = p["transformer.h.1.self_attention.query_key_value.bias"].view(6, 3, 8);
        var ln1 = c[blk.Ln1][0];
        (Tensor W, string Hook)[] parts = [(w.WQ, blk.Q), (w.WK, blk.K), (w.WV, blk.V)];
        for (int part = 0; part < 3; part++)
        {
            var expected = einsum("pd,hde->phe", ln1, parts[part].W[1]) + bias.select(1, part);
            Assert.True(expected.allclose(c[parts[part].Hook][0], rtol: 0, atol: 1e-4), parts[part].Hook);
        }
        var attnOut = einsum("phe,hed->pd", c[blk.Z][0], w.WO[1]) + p["transformer.h.1.self_attention.dense.bias"];
        Assert.True(attnOut.allclose(c[blk.AttnOut][0], rtol: 0, atol: 1e-4));
        var mlpOut = c[blk.MlpPost].matmul(FeatureWeights.MlpOut(model, 1)) + p["transformer.h.1.mlp.dense_4h_to_h.bias"];
        Assert.True(mlpOut.allclose(c[blk.MlpOut], rtol: 0, atol: 1e-4));
        var gamma = p["transformer.ln_f.weight"];
        var beta = p["transformer.ln_f.bias"];
        var xhat = (c["ln_final.hook_normalized"] - beta) / gamma;
        var logits = xhat.matmul(FeatureWeights.FoldedUnembed(model)) + beta.matmul(p["transformer.word_embeddings.weight"].t());
        Assert.True(RelativeDifference(run.Logits!, logits) < 1e-5);
        Assert.True(AttentionCircuits.Embedding(model).equal(p["transformer.word_embeddings.weight"]).all().item<bool>());
    }

    [Theory]
    [InlineData("apply_residual_connection_post_layernorm", "true", "apply_residual_connection_post_layernorm=true (the residual taken after the LayerNorms) is not supported for bloom")]
    [InlineData("tie_word_embeddings", "false", "tie_word_embeddings=false is not supported for bloom")]
    [InlineData("n_head", "5", "hidden_size=48 must be a positive multiple of n_head=5")]
    [InlineData("hidden_size", "60", "'transformer.word_embeddings.weight' of shape [128, 60] but")]
    [InlineData("vocab_size", "100", "'transformer.word_embeddings.weight' of shape [100, 48] but")]
    [InlineData("n_layer", "2", "n_layer=2 but the weights")]
    public void Bad_config_is_refused_naming_the_key(string key, string value, string message)
    {
        string dir = Edited(c => c[key] = JsonNode.Parse(value));
        var e = Assert.Throws<SaeSharpException>(() => ModelLoader.FromPretrained(dir));
        Assert.Contains(message, e.Message);
        Assert.Contains("config.json", e.Message);
    }

    [Fact]
    public void Found_by_architecture_with_bigscience_keys_and_config_aliases()
    {
        // bigscience/bloom-560m's own files name the weights h.* (BloomModel's state dict), without transformer., and
        // older configs say n_embed / num_attention_heads / num_hidden_layers.
        using var scope = NewDisposeScope();
        var r = Npy.LoadNpz(Path.Combine(Fixture, "reference.npz"));
        var w = SafeTensors.Load(Path.Combine(Fixture, "model.safetensors"));
        string dir = Edited(c =>
        {
            c.Remove("model_type");
            foreach (var (from, to) in new[] { ("hidden_size", "n_embed"), ("n_head", "num_attention_heads"), ("n_layer", "num_hidden_layers") })
            {
                c[to] = c[from]!.DeepClone();
                c.Remove(from);
            }
        });
        SafeTensors.Save(Path.Combine(dir, "model.safetensors"), w.ToDictionary(kv => kv.Key["transformer.".Length..], kv => kv.Value));
        using var model = ModelLoader.FromPretrained(dir);
        Assert.Equal("bloom", model.Config.Architecture);
        Assert.True(RelativeDifference(r["logits"], model.Forward(r["tokens"])) < 1e-5);
        foreach (var (alias, official) in new[] { ("bloom-560m", "bigscience/bloom-560m"), ("BLOOM-7b1", "bigscience/bloom-7b1"), ("bloom-1b7", "bigscience/bloom-1b7") })
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
            "--hooks", "blocks.2.hook_mlp_out,blocks.1.attn.hook_pattern,hook_embed");
        Assert.True(exit == 0, err);
        var o = SafeTensors.Load(output);
        Assert.True(RelativeDifference(r["logits"], o["logits"]) < 1e-5);
        Assert.True(RelativeDifference(r["hook_mlp_out_2"], o["blocks.2.hook_mlp_out"]) < 1e-5);
        Assert.True(RelativeDifference(r["hook_pattern_1"], o["blocks.1.attn.hook_pattern"]) < 1e-5);
        Assert.True(RelativeDifference(r["hook_embed"], o["hook_embed"]) < 1e-5);
        (exit, var info, err) = CliRunner.Run("model", "info", "--model", Fixture);
        Assert.True(exit == 0, err);
        Assert.Contains("(bloom): n_layers=3 d_model=48 n_heads=6", info);
        Assert.Contains("positional_embedding_type=alibi post_embedding_ln", info);
        Assert.Contains("embed.ln.hook_scale", info);
        Assert.Contains("embed.ln.hook_normalized", info);
    }
}
