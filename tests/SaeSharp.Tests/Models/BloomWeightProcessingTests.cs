using SaeSharp.Models;
using SaeSharp.Tests.Cli;
using SaeSharp.Tests.Tokenizers;
using static TorchSharp.torch;

namespace SaeSharp.Tests.Models;

/// <summary>
/// TransformerLens's weight processing on BLOOM (tests/data/hf_models/bloom: 3 layers, d_model 48, 6 heads of 8) and its
/// <c>embed.ln</c> hooks. TransformerLens's Embed keeps word_embeddings_layernorm a full LayerNorm (w, b) whatever the
/// processing: fold_ln folds ln1, ln2 and ln_final only; center_writing_weights centres W_E (which that LayerNorm reads, so
/// nothing changes) but not the LayerNorm's output, so hook_embed stays as it was and the residual stream is not centred,
/// only moved by a constant per position. Expectations: the unprocessed model's outputs, and folds worked entry by entry
/// here from the checkpoint's tensors.
/// </summary>
public class BloomWeightProcessingTests : ModelTestBase
{
    private static readonly long[] Toks = [1, 7, 3, 3, 12, 0, 18, 5, 9, 100];

    private static string Fixture => TestPaths.Data("hf_models", "bloom");

    private static Tensor Tok() => tensor(Toks).unsqueeze(0);

    private static Dictionary<string, Tensor> Params(HookedTransformer m) =>
        m.named_parameters().ToDictionary(kv => kv.name, kv => (Tensor)kv.parameter.detach().clone(), StringComparer.Ordinal);

    private static double[] D(Tensor t) => t.to(ScalarType.Float64).contiguous().data<double>().ToArray();

    private static readonly WeightProcessingOptions[] Steps =
    [
        new() { FoldLn = true }, new() { CenterWritingWeights = true }, new() { CenterUnembed = true }, new() { FoldValueBiases = true },
        WeightProcessingOptions.TransformerLensDefaults,
    ];

    private static bool Resid(string n) => n == "hook_embed" || n.EndsWith("hook_resid_pre", StringComparison.Ordinal) || n.EndsWith("hook_resid_post", StringComparison.Ordinal);

    [Fact]
    public void Every_step_keeps_the_next_token_distribution_and_moves_the_residual_stream_by_a_constant_per_position()
    {
        using var raw = ModelLoader.FromPretrained(Fixture);
        var (l0, c0) = raw.RunWithCache(Tok(), Resid);
        using var _ = c0;
        Assert.Equal(1 + 2 * raw.Config.NLayers, c0.Count);
        foreach (var step in Steps)
        {
            using var pm = WeightProcessing.Apply(ModelLoader.FromPretrained(Fixture), step);
            Assert.Equal(step, pm.Options);
            Assert.Empty(pm.Warnings);
            var (l1, c1) = pm.Model.RunWithCache(Tok(), new RunOptions { CacheFilter = Resid, Hooks = pm.Hooks });
            using var __ = c1;
            string what = $"bloom {string.Join(",", step.ToKwargs().Keys)}";
            // (float32 folds of logits up to ~10 in size: a few ulps)
            AssertAllClose(l0!.log_softmax(-1), l1!.log_softmax(-1), 4e-5, what + " log-probs");
            if (!step.CenterUnembed) AssertAllClose(l0, l1, 4e-5, what + " logits");
            else
            {
                var shift = l0 - l1;
                AssertAllClose(shift[.., .., 0..1].expand_as(shift), shift, 4e-5, what + " logits move by one constant per position");
            }
            // hook_embed is embed.ln's output, which TransformerLens never folds nor centres.
            AssertAllClose(c0["hook_embed"], c1["hook_embed"], 1e-5, what + " hook_embed");
            foreach (var (name, t) in c0)
            {
                Tensor Centred(Tensor x) => x - x.mean([-1L], keepdim: true);
                if (!step.CenterWritingWeights) AssertAllClose(t, c1[name], 2e-5, $"{what} {name}");
                else AssertAllClose(Centred(t), Centred(c1[name]), 2e-5, $"{what} {name} up to its mean");
            }
            if (step.CenterWritingWeights)
            {
                // Not centred: embed.ln's bias and weight still write a mean into every position.
                Assert.True(c1["blocks.2.hook_resid_post"].mean([-1L]).abs().max().item<float>() > 1e-3, what + " resid_post is not mean-zero");
                Assert.True(c0["blocks.2.hook_resid_post"].mean([-1L]).sub(c1["blocks.2.hook_resid_post"].mean([-1L])).abs().max().item<float>() > 1e-4,
                    what + ": the writers' means were zero already; the test proves nothing");
            }
        }
    }

    [Fact]
    public void Fold_ln_folds_ln1_ln2_and_ln_final_by_hand_and_leaves_embed_ln()
    {
        using var raw = ModelLoader.FromPretrained(Fixture);
        var w = Params(raw);
        using var pm = WeightProcessing.Apply(ModelLoader.FromPretrained(Fixture), new WeightProcessingOptions { FoldLn = true });
        var p = Params(pm.Model);
        const int d = 48, hd = 8;
        string b = "transformer.h.1.";
        double[] gamma = D(w[b + "input_layernorm.weight"]), beta = D(w[b + "input_layernorm.bias"]);
        Assert.Contains(beta, x => Math.Abs(x) > 1e-3);
        Assert.Contains(gamma, x => Math.Abs(x - 1) > 1e-3);
        // The fused query_key_value's rows are [head, (q, k, v), head_dim]: TransformerLens's W_Q[h][:, e] is row h·24 + e,
        // W_V[h][:, e] row h·24 + 16 + e. Folded: W ← diag(γ)·W centred over d_model, b ← b + β·W.
        foreach (var (layer, row) in new[] { ("self_attention.query_key_value", 2 * 3 * hd + 0 * hd + 5), ("self_attention.query_key_value", 4 * 3 * hd + 2 * hd + 7),
                     ("self_attention.query_key_value", 0 * 3 * hd + 1 * hd + 3) })
        {
            string n = b + layer;
            double[] W = D(w[n + ".weight"][row]);
            double bias = D(w[n + ".bias"])[row], mean = 0;
            for (int j = 0; j < d; j++) { bias += W[j] * beta[j]; mean += W[j] * gamma[j] / d; }
            Assert.Equal(bias, D(p[n + ".bias"])[row], 1e-5);
            double[] folded = D(p[n + ".weight"][row]);
            for (int j = 0; j < d; j++) Assert.Equal(W[j] * gamma[j] - mean, folded[j], 1e-5);
        }
        {
            double[] g2 = D(w[b + "post_attention_layernorm.weight"]), b2 = D(w[b + "post_attention_layernorm.bias"]);
            double[] W = D(w[b + "mlp.dense_h_to_4h.weight"][17]);
            double bias = D(w[b + "mlp.dense_h_to_4h.bias"])[17], mean = 0;
            for (int j = 0; j < d; j++) { bias += W[j] * b2[j]; mean += W[j] * g2[j] / d; }
            Assert.Equal(bias, D(p[b + "mlp.dense_h_to_4h.bias"])[17], 1e-5);
            Assert.Equal(W[9] * g2[9] - mean, D(p[b + "mlp.dense_h_to_4h.weight"][17])[9], 1e-5);
        }
        foreach (var ln in new[] { b + "input_layernorm", b + "post_attention_layernorm", "transformer.ln_f" })
        {
            Assert.All(D(p[ln + ".weight"]), x => Assert.Equal(1.0, x));
            Assert.All(D(p[ln + ".bias"]), x => Assert.Equal(0.0, x));
        }
        // ln_f into the untied lm_head, which gains TransformerLens's b_U: b_U = W_E·β_f, W_U ← W_E·diag(γ_f) centred over d_model.
        var we = w["transformer.word_embeddings.weight"];
        double[] gf = D(w["transformer.ln_f.weight"]), bf = D(w["transformer.ln_f.bias"]), wu = D(we[42]);
        double bu = 0, mu = 0;
        for (int j = 0; j < d; j++) { bu += wu[j] * bf[j]; mu += wu[j] * gf[j] / d; }
        Assert.Equal(bu, D(p["lm_head.bias"])[42], 1e-5);
        Assert.Equal(wu[3] * gf[3] - mu, D(p["lm_head.weight"][42])[3], 1e-5);
        // W_E and word_embeddings_layernorm (TransformerLens's embed.ln) are as they were.
        foreach (var n in new[] { "transformer.word_embeddings.weight", "transformer.word_embeddings_layernorm.weight", "transformer.word_embeddings_layernorm.bias" })
            AssertAllClose(w[n], p[n], 0, n);
        Assert.Equal(w.Keys.Count + 2, p.Keys.Count);   // lm_head.weight and lm_head.bias
    }

    [Fact]
    public void Fold_ln_leaves_pure_layer_norms_and_embed_ln_as_it_was()
    {
        using var raw = ModelLoader.FromPretrained(Fixture);
        using var pm = WeightProcessing.Apply(ModelLoader.FromPretrained(Fixture), new WeightProcessingOptions { FoldLn = true });
        string[] names = ["embed.ln.hook_normalized", "hook_embed", "blocks.0.hook_resid_pre", "blocks.0.ln1.hook_normalized", "blocks.2.hook_resid_mid",
            "blocks.2.ln2.hook_normalized", "blocks.2.hook_resid_post", "ln_final.hook_normalized", "blocks.1.attn.hook_pattern", "blocks.1.hook_mlp_out"];
        var (_, c0) = raw.RunWithCache(Tok(), names);
        var (_, c1) = pm.Model.RunWithCache(Tok(), names);
        using (c0)
        using (c1)
        {
            Tensor Pure(Tensor x) => nn.functional.layer_norm(x, [x.shape[^1]], eps: 1e-5);
            AssertAllClose(Pure(c1["blocks.0.hook_resid_pre"]), c1["blocks.0.ln1.hook_normalized"], 1e-5, "ln1 is LNPre");
            AssertAllClose(Pure(c1["blocks.2.hook_resid_mid"]), c1["blocks.2.ln2.hook_normalized"], 1e-5, "ln2 is LNPre");
            AssertAllClose(Pure(c1["blocks.2.hook_resid_post"]), c1["ln_final.hook_normalized"], 1e-5, "ln_final is LNPre");
            Assert.True((Pure(c0["blocks.0.hook_resid_pre"]) - c0["blocks.0.ln1.hook_normalized"]).abs().max().item<float>() > 1e-3,
                "ln1 was the identity already: the test proves nothing");
            foreach (var h in new[] { "embed.ln.hook_normalized", "hook_embed", "blocks.1.attn.hook_pattern", "blocks.1.hook_mlp_out" })
                AssertAllClose(c0[h], c1[h], 2e-5, h);
        }
    }

    [Fact]
    public void Center_writing_weights_centres_w_e_and_the_writers_and_unties_the_unembedding()
    {
        using var raw = ModelLoader.FromPretrained(Fixture);
        var w = Params(raw);
        using var pm = WeightProcessing.Apply(ModelLoader.FromPretrained(Fixture), new WeightProcessingOptions { CenterWritingWeights = true });
        var p = Params(pm.Model);
        var we = w["transformer.word_embeddings.weight"];
        AssertAllClose(we - we.mean([1L], keepdim: true), p["transformer.word_embeddings.weight"], 1e-6, "W_E centred over d_model");
        AssertAllClose(we, p["lm_head.weight"], 0, "W_U is still the original W_E");
        foreach (var layer in new[] { "transformer.h.0.self_attention.dense", "transformer.h.2.mlp.dense_4h_to_h" })
        {
            var W = w[layer + ".weight"];                              // [d_model, in]: each column centred over d_model
            AssertAllClose(W - W.mean([0L], keepdim: true), p[layer + ".weight"], 1e-6, layer);
            var bias = w[layer + ".bias"];
            AssertAllClose(bias - bias.mean(), p[layer + ".bias"], 1e-6, layer + " bias");
        }
        foreach (var n in new[] { "transformer.word_embeddings_layernorm.weight", "transformer.word_embeddings_layernorm.bias" })
            AssertAllClose(w[n], p[n], 0, n + " (embed.ln) untouched");
    }

    [Fact]
    public void Fold_value_biases_moves_the_fused_b_v_into_dense()
    {
        using var raw = ModelLoader.FromPretrained(Fixture);
        var w = Params(raw);
        using var pm = WeightProcessing.Apply(ModelLoader.FromPretrained(Fixture), new WeightProcessingOptions { FoldValueBiases = true });
        var p = Params(pm.Model);
        string b = "transformer.h.0.self_attention.";
        var fused = w[b + "query_key_value.bias"].view(6, 3, 8);
        var bv = fused.select(1, 2);                                  // [head, d_head], TransformerLens's b_V
        Assert.True(bv.abs().max().item<float>() > 1e-3, "b_V is zero: the test proves nothing");
        AssertAllClose(w[b + "dense.bias"] + matmul(w[b + "dense.weight"], bv.reshape(-1)), p[b + "dense.bias"], 1e-5, "b_O + W_O·b_V");
        var after = p[b + "query_key_value.bias"].view(6, 3, 8);
        Assert.All(D(after.select(1, 2)), x => Assert.Equal(0.0, x));
        AssertAllClose(fused.narrow(1, 0, 2), after.narrow(1, 0, 2), 0, "b_Q and b_K unchanged");
        var (l0, c0) = raw.RunWithCache(Tok(), ["blocks.0.attn.hook_v", "blocks.0.hook_attn_out"]);
        var (l1, c1) = pm.Model.RunWithCache(Tok(), ["blocks.0.attn.hook_v", "blocks.0.hook_attn_out"]);
        using (c0)
        using (c1)
        {
            AssertAllClose(c0["blocks.0.hook_attn_out"], c1["blocks.0.hook_attn_out"], 2e-5, "attn_out");
            AssertAllClose(c0["blocks.0.attn.hook_v"] - bv, c1["blocks.0.attn.hook_v"], 1e-5, "hook_v without b_V");
            AssertAllClose(l0!, l1!, 2e-5, "logits");
        }
    }

    [Fact]
    public void Circuits_and_the_processing_flags_work_on_bloom()
    {
        var (exit, output, err) = CliRunner.Run("model", "circuits", "--model", Fixture, "--process-weights", "--tokens", "10");
        Assert.True(exit == 0, err);
        Assert.Contains("weights: fold_ln, center_writing_weights, center_unembed, fold_value_biases", output);
        Assert.Contains("Full OV copying score (W_E·W_V·W_O·W_U)", output);
        Assert.DoesNotContain("skipped", err);
        var (foldExit, foldOut, foldErr) = CliRunner.Run("model", "circuits", "--model", Fixture, "--fold-ln", "--tokens", "10");
        Assert.True(foldExit == 0, foldErr);
        Assert.Contains("weights: fold_ln", foldOut);
        Assert.Contains("No positional QK score: bloom has ALiBi positions, no W_pos", foldOut);
    }
}
