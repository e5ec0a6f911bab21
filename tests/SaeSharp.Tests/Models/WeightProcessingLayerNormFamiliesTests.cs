using SaeSharp.Models;
using SaeSharp.Tests.Cli;
using SaeSharp.Tests.Tokenizers;
using static TorchSharp.torch;

namespace SaeSharp.Tests.Models;

/// <summary>
/// TransformerLens's weight processing on GPT-Neo, GPT-J, OPT and Phi (the HF-format fixtures under tests/data/hf_models):
/// every step keeps the next-token distribution, fold_ln leaves the residual stream as it was and pure LayerNorms reading
/// it, center_writing_weights makes the residual stream its centred self, a parallel block's one norm lands in attention
/// and MLP alike, OPT's tied W_E survives center_unembed. Expectations: the unprocessed model's outputs, and folds worked
/// entry by entry here from the checkpoint's tensors.
/// </summary>
public class WeightProcessingLayerNormFamiliesTests : ModelTestBase
{
    private static readonly long[] Toks = [1, 7, 3, 3, 12, 0, 18, 5, 9, 100];

    private static string Folder(string family) => TestPaths.Data("hf_models", family);

    private static Tensor Tok() => tensor(Toks).unsqueeze(0);

    private static Dictionary<string, Tensor> Params(HookedTransformer m) =>
        m.named_parameters().ToDictionary(kv => kv.name, kv => (Tensor)kv.parameter.detach().clone(), StringComparer.Ordinal);

    private static float[] F(Tensor t) => t.to(ScalarType.Float32).contiguous().data<float>().ToArray();

    private static readonly WeightProcessingOptions[] Steps =
    [
        new() { FoldLn = true }, new() { CenterWritingWeights = true }, new() { CenterUnembed = true }, new() { FoldValueBiases = true },
        WeightProcessingOptions.TransformerLensDefaults,
    ];

    private static bool Resid(string n) => n.EndsWith("hook_resid_pre", StringComparison.Ordinal) || n.EndsWith("hook_resid_post", StringComparison.Ordinal);

    [Theory]
    [InlineData("gpt_neo")]
    [InlineData("gptj")]
    [InlineData("opt")]
    [InlineData("phi")]
    public void Every_step_keeps_the_next_token_distribution_and_the_documented_residual_stream(string family)
    {
        using var raw = ModelLoader.FromPretrained(Folder(family));
        var (l0, c0) = raw.RunWithCache(Tok(), Resid);
        using var _ = c0;
        Assert.Equal(2 * raw.Config.NLayers, c0.Count);
        foreach (var step in Steps)
        {
            using var pm = WeightProcessing.Apply(ModelLoader.FromPretrained(Folder(family)), step);
            Assert.Equal(step, pm.Options);
            Assert.Empty(pm.Warnings);
            var (l1, c1) = pm.Model.RunWithCache(Tok(), new RunOptions { CacheFilter = Resid, Hooks = pm.Hooks });
            using var __ = c1;
            string what = $"{family} {string.Join(",", step.ToKwargs().Keys)}";
            AssertAllClose(l0!.log_softmax(-1), l1!.log_softmax(-1), 2e-5, what + " log-probs");
            // Only center_unembed changes a logit (by a constant per position).
            if (!step.CenterUnembed) AssertAllClose(l0, l1, 2e-5, what + " logits");
            else
            {
                var shift = l0 - l1;
                // (a difference of two float32 differences: twice the tolerance of one)
                AssertAllClose(shift[.., .., 0..1].expand_as(shift), shift, 4e-5, what + " logits move by one constant per position");
            }
            foreach (var (name, t) in c0)
            {
                // TransformerLens: fold_ln leaves hook_resid_* as they were; center_writing_weights makes them mean-zero over d_model.
                var expected = step.CenterWritingWeights ? t - t.mean([-1L], keepdim: true) : t;
                AssertAllClose(expected, c1[name], 2e-5, $"{what} {name}");
                if (step.CenterWritingWeights)
                {
                    Assert.True(t.mean([-1L]).abs().max().item<float>() > 1e-3, $"{family} {name} was centred already: the test proves nothing");
                    Assert.True(c1[name].mean([-1L]).abs().max().item<float>() < 1e-5, $"{what} {name} is mean-zero");
                }
            }
        }
    }

    [Theory]
    [InlineData("gpt_neo")]
    [InlineData("gptj")]
    [InlineData("opt")]
    [InlineData("phi")]
    public void Fold_ln_leaves_pure_layer_norms(string family)
    {
        using var raw = ModelLoader.FromPretrained(Folder(family));
        using var pm = WeightProcessing.Apply(ModelLoader.FromPretrained(Folder(family)), new WeightProcessingOptions { FoldLn = true });
        int last = raw.Config.NLayers - 1;
        string[] names = ["blocks.0.hook_resid_pre", "blocks.0.ln1.hook_normalized", $"blocks.{last}.hook_resid_pre", $"blocks.{last}.ln1.hook_normalized",
            $"blocks.{last}.hook_resid_post", "ln_final.hook_normalized", "blocks.0.attn.hook_pattern", "blocks.0.hook_attn_out", "blocks.0.mlp.hook_post", "blocks.0.hook_mlp_out"];
        var (_, c0) = raw.RunWithCache(Tok(), names);
        var (_, c1) = pm.Model.RunWithCache(Tok(), names);
        using (c0)
        using (c1)
        {
            Tensor Pure(Tensor x) => nn.functional.layer_norm(x, [x.shape[^1]], eps: raw.Config.LayerNormEps);
            foreach (var l in new[] { 0, last })
                AssertAllClose(Pure(c1[$"blocks.{l}.hook_resid_pre"]), c1[$"blocks.{l}.ln1.hook_normalized"], 1e-5, $"{family} blocks.{l}.ln1 is LNPre");
            Assert.True((Pure(c0["blocks.0.hook_resid_pre"]) - c0["blocks.0.ln1.hook_normalized"]).abs().max().item<float>() > 1e-3,
                $"{family}'s ln_1 was the identity already: the test proves nothing");
            // The final norm is folded into W_U and b_U (GPT-Neo's and OPT's tied W_U untied first).
            AssertAllClose(Pure(c1[$"blocks.{last}.hook_resid_post"]), c1["ln_final.hook_normalized"], 1e-5, $"{family} ln_final");
            foreach (var h in new[] { "blocks.0.attn.hook_pattern", "blocks.0.hook_attn_out", "blocks.0.mlp.hook_post", "blocks.0.hook_mlp_out" })
                AssertAllClose(c0[h], c1[h], 2e-5, $"{family} {h}");
        }
    }

    [Fact]
    public void A_parallel_block_s_one_norm_is_folded_into_attention_and_mlp_by_hand()
    {
        // GPT-J: q/k/v_proj have no bias; fold_ln gives them b = W·β, W ← W·diag(γ) with rows centred; fc_in reads the same ln_1.
        using var raw = ModelLoader.FromPretrained(Folder("gptj"));
        var w = Params(raw);
        Assert.DoesNotContain("transformer.h.1.attn.q_proj.bias", w.Keys);
        using var pm = WeightProcessing.Apply(ModelLoader.FromPretrained(Folder("gptj")), new WeightProcessingOptions { FoldLn = true });
        var p = Params(pm.Model);
        int d = raw.Config.DModel;
        float[] gamma = F(w["transformer.h.1.ln_1.weight"]), beta = F(w["transformer.h.1.ln_1.bias"]);
        Assert.Contains(beta, b => Math.Abs(b) > 1e-3);
        foreach (var (layer, row, hadBias) in new[] { ("attn.q_proj", 5, false), ("attn.v_proj", 31, false), ("mlp.fc_in", 17, true) })
        {
            string n = "transformer.h.1." + layer;
            float[] W = F(w[n + ".weight"][row]);
            double bias = hadBias ? F(w[n + ".bias"])[row] : 0, mean = 0;
            for (int j = 0; j < d; j++) { bias += W[j] * beta[j]; mean += W[j] * gamma[j] / d; }
            Assert.Equal(bias, F(p[n + ".bias"])[row], 1e-5);
            float[] folded = F(p[n + ".weight"][row]);
            for (int j = 0; j < d; j++) Assert.Equal(W[j] * gamma[j] - mean, folded[j], 1e-5);
        }
        Assert.All(F(p["transformer.h.1.ln_1.weight"]), x => Assert.Equal(1f, x));
        Assert.All(F(p["transformer.h.1.ln_1.bias"]), x => Assert.Equal(0f, x));
        // ln_f into lm_head (GPT-J's b_U): b_U += W_U·β_f, W_U ← W_U·diag(γ_f) centred over d_model.
        float[] gf = F(w["transformer.ln_f.weight"]), bf = F(w["transformer.ln_f.bias"]), wu = F(w["lm_head.weight"][42]);
        double bu = F(w["lm_head.bias"])[42], mu = 0;
        for (int j = 0; j < d; j++) { bu += wu[j] * bf[j]; mu += wu[j] * gf[j] / d; }
        Assert.Equal(bu, F(p["lm_head.bias"])[42], 1e-5);
        Assert.Equal(wu[3] * gf[3] - mu, F(p["lm_head.weight"][42])[3], 1e-5);
        Assert.Equal(w.Keys.Count + 3 * raw.Config.NLayers, p.Keys.Count);   // a q, k and v bias per layer, HF-named
    }

    [Fact]
    public void Opt_keeps_its_tied_embedding_through_center_unembed_and_centres_every_position_row()
    {
        using var raw = ModelLoader.FromPretrained(Folder("opt"));
        var w = Params(raw);
        Assert.DoesNotContain("lm_head.weight", w.Keys);
        var we = w["model.decoder.embed_tokens.weight"];
        {
            using var pm = WeightProcessing.Apply(ModelLoader.FromPretrained(Folder("opt")), new WeightProcessingOptions { CenterUnembed = true });
            var p = Params(pm.Model);
            AssertAllClose(we, p["model.decoder.embed_tokens.weight"], 0, "W_E unchanged");
            AssertAllClose(we - we.mean([0L], keepdim: true), p["lm_head.weight"], 1e-6, "W_U = W_E centred over the vocabulary");
        }
        {
            using var pm = WeightProcessing.Apply(ModelLoader.FromPretrained(Folder("opt")), new WeightProcessingOptions { CenterWritingWeights = true });
            var p = Params(pm.Model);
            AssertAllClose(we - we.mean([1L], keepdim: true), p["model.decoder.embed_tokens.weight"], 1e-6, "W_E centred over d_model");
            AssertAllClose(we, p["lm_head.weight"], 0, "W_U is still the original W_E");
            var pos = w["model.decoder.embed_positions.weight"];
            AssertAllClose(pos - pos.mean([1L], keepdim: true), p["model.decoder.embed_positions.weight"], 1e-6, "W_pos (offset rows too)");
        }
        {
            // fold_ln: OPT's b_U is created (TransformerLens's zeros) to take ln_final's β.
            using var pm = WeightProcessing.Apply(ModelLoader.FromPretrained(Folder("opt")), new WeightProcessingOptions { FoldLn = true });
            var p = Params(pm.Model);
            AssertAllClose(matmul(we, w["model.decoder.final_layer_norm.bias"]), p["lm_head.bias"], 1e-5, "b_U = W_E·β_final");
            AssertAllClose(we, p["model.decoder.embed_tokens.weight"], 0, "W_E unchanged by fold_ln");
        }
    }

    [Theory]
    [InlineData("opt", "model.decoder.layers.0.self_attn.", "out_proj")]
    [InlineData("phi", "model.layers.0.self_attn.", "dense")]
    public void Fold_value_biases_moves_b_v_into_b_o(string family, string prefix, string outProj)
    {
        using var raw = ModelLoader.FromPretrained(Folder(family));
        var w = Params(raw);
        using var pm = WeightProcessing.Apply(ModelLoader.FromPretrained(Folder(family)), new WeightProcessingOptions { FoldValueBiases = true });
        var p = Params(pm.Model);
        var bv = w[prefix + "v_proj.bias"];
        Assert.True(bv.abs().max().item<float>() > 1e-3, "b_V is zero: the test proves nothing");
        AssertAllClose(w[prefix + outProj + ".bias"] + matmul(w[prefix + outProj + ".weight"], bv), p[prefix + outProj + ".bias"], 1e-5, "b_O + W_O·b_V");
        Assert.All(F(p[prefix + "v_proj.bias"]), x => Assert.Equal(0f, x));
        var (_, c0) = raw.RunWithCache(Tok(), ["blocks.0.attn.hook_v", "blocks.0.hook_attn_out"]);
        var (_, c1) = pm.Model.RunWithCache(Tok(), ["blocks.0.attn.hook_v", "blocks.0.hook_attn_out"]);
        using (c0)
        using (c1)
        {
            AssertAllClose(c0["blocks.0.hook_attn_out"], c1["blocks.0.hook_attn_out"], 2e-5, $"{family} attn_out");
            AssertAllClose(c0["blocks.0.attn.hook_v"] - bv.view(raw.Config.NKvHeads, raw.Config.DHead), c1["blocks.0.attn.hook_v"], 1e-5, $"{family} hook_v without b_V");
        }
    }

    [Fact]
    public void Gptj_gains_an_out_proj_bias_for_its_folded_value_biases()
    {
        // GPT-J's v_proj has a bias only after fold_ln; fold_value_biases then needs a b_O (TransformerLens's zeros).
        using var raw = ModelLoader.FromPretrained(Folder("gptj"));
        var l0 = raw.Run(Tok(), new RunOptions()).Logits;
        using var pm = WeightProcessing.Apply(ModelLoader.FromPretrained(Folder("gptj")), new WeightProcessingOptions { FoldLn = true, FoldValueBiases = true });
        var p = Params(pm.Model);
        Assert.Contains("transformer.h.0.attn.out_proj.bias", p.Keys);
        Assert.True(p["transformer.h.0.attn.out_proj.bias"].abs().max().item<float>() > 1e-4);
        Assert.All(F(p["transformer.h.0.attn.v_proj.bias"]), x => Assert.Equal(0f, x));
        AssertAllClose(l0!, pm.Forward(Tok()), 2e-5, "logits");
    }

    [Fact]
    public void Circuits_with_process_weights_on_gptj()
    {
        var (exit, output, err) = CliRunner.Run("model", "circuits", "--model", Folder("gptj"), "--process-weights", "--tokens", "10");
        Assert.True(exit == 0, err);
        Assert.Contains("weights: fold_ln, center_writing_weights, center_unembed, fold_value_biases", output);
        Assert.Contains("Full OV copying score (W_E·W_V·W_O·W_U)", output);
        Assert.DoesNotContain("skipped", err);
        // OPT (tied W_E, learned positions after its two offset rows) and Phi (final_layernorm) score too.
        var (optExit, optOut, optErr) = CliRunner.Run("model", "circuits", "--model", Folder("opt"), "--process-weights", "--tokens", "10");
        Assert.True(optExit == 0, optErr);
        Assert.Contains("Positional QK previous-token score", optOut);
        var (phiExit, _, phiErr) = CliRunner.Run("model", "circuits", "--model", Folder("phi"), "--process-weights", "--tokens", "10");
        Assert.True(phiExit == 0, phiErr);
    }
}
