using SaeSharp.Models;
using SaeSharp.Tests.Cli;
using SaeSharp.Tests.Tokenizers;
using TorchSharp.Modules;
using static TorchSharp.torch;

namespace SaeSharp.Tests.Models;

/// <summary>
/// TransformerLens's weight processing on the Llama-style decoders (RMSNorm, rotary): fold_ln folds each RMSNorm's weight
/// (Gemma's 1 + w) into its readers and ln_final's into W_U without centring, center_writing_weights is skipped for
/// RMSNorm with a warning (applied for OLMo 1's LayerNorm), center_unembed centres an untied W_U, fold_value_biases moves
/// b_V (per key/value head, repeated over the query heads sharing it) into a b_O. Expectations: the unprocessed model's
/// outputs, norms and folds recomputed here from the checkpoint's tensors, and a fold worked by hand.
/// </summary>
public class DecoderWeightProcessingTests : ModelTestBase
{
    private static readonly long[] Toks = [1, 7, 3, 3, 12, 0, 18, 5, 9];

    private static string Folder(string family) => TestPaths.Data("hf_models", family);

    private static Tensor Tok(HookedTransformer m) => tensor(Toks.Select(t => t % m.Config.DVocab).ToArray()).unsqueeze(0);

    private static Dictionary<string, Tensor> Params(HookedTransformer m) =>
        m.named_parameters().ToDictionary(kv => kv.name, kv => (Tensor)kv.parameter.detach().clone(), StringComparer.Ordinal);

    private static readonly WeightProcessingOptions[] Steps =
    [
        new() { FoldLn = true }, new() { CenterWritingWeights = true }, new() { CenterUnembed = true }, new() { FoldValueBiases = true },
        WeightProcessingOptions.TransformerLensDefaults,
    ];

    [Theory]
    [InlineData("llama3")]
    [InlineData("llama-bias-tied")]
    [InlineData("mistral-window")]
    [InlineData("qwen2")]
    [InlineData("qwen3")]
    [InlineData("gemma")]
    [InlineData("gemma2")]
    [InlineData("gemma3")]
    [InlineData("gemma3-conditional")]
    [InlineData("olmo-clip")]
    [InlineData("phi3")]
    [InlineData("qwen2_moe")]
    [InlineData("olmo2")]
    public void Every_step_keeps_the_next_token_distribution(string family)
    {
        using var raw = ModelLoader.FromPretrained(Folder(family));
        var (l0, c0) = raw.RunWithCache(Tok(raw), n => n.EndsWith("hook_resid_post", StringComparison.Ordinal));
        using var _ = c0;
        var before = Params(raw);
        foreach (var step in Steps)
        {
            using var pm = WeightProcessing.Apply(ModelLoader.FromPretrained(Folder(family)), step);
            var (l1, c1) = pm.Model.RunWithCache(Tok(raw), n => n.EndsWith("hook_resid_post", StringComparison.Ordinal));
            using var __ = c1;
            string what = $"{family} {string.Join(",", step.ToKwargs().Keys)}";
            AssertAllClose(l0!.log_softmax(-1), l1!.log_softmax(-1), 2e-5, what + " log-probs");
            // Nothing but center_unembed (a constant per position) or centring the residual stream changes a logit.
            if (!pm.Options.CenterUnembed) AssertAllClose(l0, l1, 2e-5, what + " logits");
            if (!pm.Options.CenterWritingWeights)
                foreach (var (name, t) in c0) AssertAllClose(t, c1[name], 2e-5, $"{what} {name} (the residual stream is unchanged)");
            // W_E is never changed through a tied W_U.
            if (!pm.Options.CenterWritingWeights)
                AssertAllClose(before["model.embed_tokens.weight"], Params(pm.Model)["model.embed_tokens.weight"], 0, what + " W_E");
        }
    }

    [Theory]
    [InlineData("llama-gqa")]
    [InlineData("qwen3")]
    [InlineData("gemma2")]
    [InlineData("gemma3")]
    public void Fold_ln_leaves_pure_rms_norms_and_folds_their_weights_into_the_readers(string family)
    {
        var spec = LlamaFamilyTests.Spec(family);
        string dir = TinyDecoders.Write(Sub(family), spec);
        using var raw = ModelLoader.FromPretrained(dir);
        var w = Params(raw);
        using var pm = WeightProcessing.Apply(ModelLoader.FromPretrained(dir), new WeightProcessingOptions { FoldLn = true });
        var p = Params(pm.Model);
        bool gemma = spec.Gemma;
        Tensor Scale(string norm) => gemma ? w[norm] + 1 : w[norm];
        for (int l = 0; l < spec.Layers; l++)
        {
            string b = $"model.layers.{l}.";
            foreach (var proj in new[] { "self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj" })
                AssertAllClose(w[b + proj + ".weight"] * Scale(b + "input_layernorm.weight").unsqueeze(0), p[b + proj + ".weight"], 1e-6, $"{family} {b}{proj}");
            string ln2 = gemma ? "pre_feedforward_layernorm" : "post_attention_layernorm";
            foreach (var proj in new[] { "mlp.gate_proj", "mlp.up_proj" })
                AssertAllClose(w[b + proj + ".weight"] * Scale(b + ln2 + ".weight").unsqueeze(0), p[b + proj + ".weight"], 1e-6, $"{family} {b}{proj}");
            // The identity scale: 1, or Gemma's offset 0.
            foreach (var norm in new[] { "input_layernorm", ln2 })
                Assert.True(p[b + norm + ".weight"].sub(gemma ? 0 : 1).abs().max().item<float>() == 0, $"{family} {norm} is the identity");
            if (gemma)   // the post-norms normalise a sublayer's output and stay as they were
                foreach (var post in new[] { "post_attention_layernorm", "post_feedforward_layernorm" })
                    AssertAllClose(w[b + post + ".weight"], p[b + post + ".weight"], 0, $"{family} {post} kept");
        }
        var wu = spec.Tied ? w["model.embed_tokens.weight"] : w["lm_head.weight"];
        AssertAllClose(wu * Scale("model.norm.weight").unsqueeze(0), p["lm_head.weight"], 1e-6, family + " W_U");
        AssertAllClose(w["model.embed_tokens.weight"], p["model.embed_tokens.weight"], 0, family + " W_E untouched");

        // The residual stream is unchanged and each folded norm's hook is the pure RMS normalisation of what it reads.
        string[] names = ["blocks.0.hook_resid_pre", "blocks.0.hook_resid_mid", "blocks.0.ln1.hook_normalized", "blocks.0.ln2.hook_normalized",
            $"blocks.{spec.Layers - 1}.hook_resid_post", "ln_final.hook_normalized", "blocks.0.attn.hook_q", "blocks.0.attn.hook_pattern", "blocks.0.mlp.hook_pre",
            .. gemma ? new[] { "blocks.0.ln1_post.hook_normalized", "blocks.0.ln2_post.hook_normalized" } : []];
        var (l0, c0) = raw.RunWithCache(Tok(raw), names);
        var (l1, c1) = pm.Model.RunWithCache(Tok(raw), names);
        using (c0)
        using (c1)
        {
            AssertAllClose(l0!, l1!, 2e-5, family + " logits");
            foreach (var n in new[] { "blocks.0.hook_resid_pre", "blocks.0.hook_resid_mid", $"blocks.{spec.Layers - 1}.hook_resid_post", "blocks.0.attn.hook_q",
                         "blocks.0.attn.hook_pattern", "blocks.0.mlp.hook_pre" }.Concat(gemma ? ["blocks.0.ln1_post.hook_normalized", "blocks.0.ln2_post.hook_normalized"] : []))
                AssertAllClose(c0[n], c1[n], 2e-5, $"{family} {n} unchanged");
            static Tensor Rms(Tensor x) => x / (x.pow(2).mean([-1L], keepdim: true) + 1e-6).sqrt();
            AssertAllClose(Rms(c1["blocks.0.hook_resid_pre"]), c1["blocks.0.ln1.hook_normalized"], 1e-5, family + " ln1 is RMSPre");
            AssertAllClose(Rms(c1["blocks.0.hook_resid_mid"]), c1["blocks.0.ln2.hook_normalized"], 1e-5, family + " ln2 is RMSPre");
            AssertAllClose(Rms(c1[$"blocks.{spec.Layers - 1}.hook_resid_post"]), c1["ln_final.hook_normalized"], 1e-5, family + " ln_final is RMSPre");
            Assert.True((c0["blocks.0.ln1.hook_normalized"] - c1["blocks.0.ln1.hook_normalized"]).abs().max().item<float>() > 1e-3,
                $"{family}: ln1 had an identity weight already; the test proves nothing");
        }
    }

    [Fact]
    public void Fold_of_a_two_by_two_case_worked_by_hand()
    {
        using var _ = no_grad();
        // w = [2, 3], W = [[1, 2], [3, 4]]: W·diag(w) = [[2, 6], [6, 12]]; a LayerNorm then centres each row: [[-2, 2], [-3, 3]].
        foreach (var (gemma, ln, wValue, expected, identity) in new[]
                 {
                     (false, false, new[] { 2f, 3f }, new[] { 2f, 6f, 6f, 12f }, 1f),
                     (true, false, new[] { 1f, 2f }, new[] { 2f, 6f, 6f, 12f }, 0f),  // Gemma stores w - 1
                     (false, true, new[] { 2f, 3f }, new[] { -2f, 2f, -3f, 3f }, 1f),
                 })
        {
            var p = new Dictionary<string, Parameter>(StringComparer.Ordinal)
            {
                ["norm.weight"] = new Parameter(tensor(wValue), requires_grad: false),
                ["q.weight"] = new Parameter(tensor(new[] { 1f, 2f, 3f, 4f }).view(2, 2), requires_grad: false),
            };
            WeightProcessing.FoldNorm(p, "norm", ["q"], gemma, ln);
            Assert.Equal(expected, p["q.weight"].data<float>().ToArray());
            Assert.Equal([identity, identity], p["norm.weight"].data<float>().ToArray());
        }
    }

    [Fact]
    public void Fold_value_biases_moves_each_key_value_heads_b_v_into_a_new_b_o()
    {
        var spec = LlamaFamilyTests.Spec("qwen2");   // 4 query heads, 2 key/value heads, v_proj with a bias, o_proj without
        string dir = TinyDecoders.Write(Sub("qwen2"), spec);
        using var raw = ModelLoader.FromPretrained(dir);
        var w = Params(raw);
        Assert.DoesNotContain("model.layers.0.self_attn.o_proj.bias", w.Keys);
        using var pm = WeightProcessing.Apply(ModelLoader.FromPretrained(dir), new WeightProcessingOptions { FoldValueBiases = true });
        var p = Params(pm.Model);
        int hd = spec.Hd, group = spec.Heads / spec.KvHeads;
        for (int l = 0; l < spec.Layers; l++)
        {
            string b = $"model.layers.{l}.self_attn.";
            // b_O = Σ_heads b_V[kv head of the query head] · W_O[:, head's columns], head by head.
            var expected = zeros(spec.Hidden);
            for (int head = 0; head < spec.Heads; head++)
            {
                var bv = w[b + "v_proj.bias"].narrow(0, head / group * hd, hd);
                expected += matmul(w[b + "o_proj.weight"].narrow(1, head * hd, hd), bv);
            }
            AssertAllClose(expected, p[b + "o_proj.bias"], 1e-6, $"layer {l} b_O");
            Assert.Equal(0f, p[b + "v_proj.bias"].abs().max().item<float>());
        }
        string[] names = ["blocks.0.attn.hook_v", "blocks.0.hook_attn_out", "blocks.1.hook_resid_post"];
        var (l0, c0) = raw.RunWithCache(Tok(raw), names);
        var (l1, c1) = pm.Model.RunWithCache(Tok(raw), names);
        using (c0)
        using (c1)
        {
            AssertAllClose(l0!, l1!, 2e-5, "logits");
            AssertAllClose(c0["blocks.0.hook_attn_out"], c1["blocks.0.hook_attn_out"], 2e-5, "attn_out (b_O included)");
            // hook_v lost exactly b_V: [batch, pos, kv heads, d_head] minus the bias per key/value head.
            var bias = w["model.layers.0.self_attn.v_proj.bias"].view(spec.KvHeads, hd);
            AssertAllClose(c0["blocks.0.attn.hook_v"] - bias, c1["blocks.0.attn.hook_v"], 1e-5, "hook_v without b_V");
        }
    }

    [Fact]
    public void Center_writing_weights_is_skipped_for_rms_norm_with_one_warning_and_applied_for_olmo_layer_norm()
    {
        var warnings = new List<string>();
        {
            using var pm = WeightProcessing.Apply(ModelLoader.FromPretrained(Folder("llama3")), WeightProcessingOptions.TransformerLensDefaults);
            warnings.AddRange(pm.Warnings);
            Assert.Equal(new WeightProcessingOptions { FoldLn = true, CenterUnembed = true, FoldValueBiases = true }, pm.Options);
            var line = Assert.Single(warnings);
            Assert.StartsWith("center_writing_weights skipped for ", line);
            Assert.Contains("RMSNorm", line);
            warnings.Clear();
            // A mixture of experts: TransformerLens does not fold its norms either.
            using var moe = WeightProcessing.Apply(ModelLoader.FromPretrained(Folder("mixtral")), new WeightProcessingOptions { FoldLn = true });
            warnings.AddRange(moe.Warnings);
            Assert.False(moe.Options.FoldLn);
            Assert.Contains(warnings, x => x.StartsWith("fold_ln skipped for ", StringComparison.Ordinal) && x.Contains("mixture of experts", StringComparison.Ordinal));
            warnings.Clear();
            // OLMo 2's post-norms read no residual stream: fold_ln skipped, as TransformerLens; Gemma 2's final soft cap: center_unembed skipped.
            using var olmo2 = WeightProcessing.Apply(ModelLoader.FromPretrained(Folder("olmo2")), new WeightProcessingOptions { FoldLn = true });
            warnings.AddRange(olmo2.Warnings);
            Assert.False(olmo2.Options.FoldLn);
            Assert.Contains(warnings, x => x.StartsWith("fold_ln skipped for ", StringComparison.Ordinal) && x.Contains("post_attention_layernorm", StringComparison.Ordinal));
            using var gemma2 = WeightProcessing.Apply(ModelLoader.FromPretrained(Folder("gemma2")), new WeightProcessingOptions { CenterUnembed = true });
            warnings.AddRange(gemma2.Warnings);
            Assert.False(gemma2.Options.CenterUnembed);
            Assert.Contains(warnings, x => x.StartsWith("center_unembed skipped for ", StringComparison.Ordinal) && x.Contains("soft cap", StringComparison.Ordinal));
            warnings.Clear();
            // OLMo 1's weightless LayerNorm: both applied, no warning; the residual stream becomes its centred self.
            using var raw = ModelLoader.FromPretrained(Folder("olmo"));
            using var olmo = WeightProcessing.Apply(ModelLoader.FromPretrained(Folder("olmo")), WeightProcessingOptions.TransformerLensDefaults);
            Assert.Empty(olmo.Warnings);
            Assert.Equal(WeightProcessingOptions.TransformerLensDefaults, olmo.Options);
            var (l0, c0) = raw.RunWithCache(Tok(raw), ["blocks.0.hook_resid_post", "blocks.0.ln1.hook_normalized"]);
            var (l1, c1) = olmo.Model.RunWithCache(Tok(raw), ["blocks.0.hook_resid_post", "blocks.0.ln1.hook_normalized"]);
            using (c0)
            using (c1)
            {
                var r = c0["blocks.0.hook_resid_post"];
                AssertAllClose(r - r.mean([-1L], keepdim: true), c1["blocks.0.hook_resid_post"], 2e-5, "olmo resid_post centred");
                Assert.True(r.mean([-1L]).abs().max().item<float>() > 1e-3, "olmo's residual stream was centred already");
                AssertAllClose(c0["blocks.0.ln1.hook_normalized"], c1["blocks.0.ln1.hook_normalized"], 2e-5, "olmo ln1 output");
                AssertAllClose(l0!.log_softmax(-1), l1!.log_softmax(-1), 2e-5, "olmo log-probs");
            }
        }
    }

    [Theory]
    [InlineData("deepseek_v3", "fold_value_biases", "deepseek_v3's multi-head latent attention has no per-head W_V and W_O")]
    [InlineData("gpt_oss", "fold_value_biases", "gpt_oss's attention sinks take part of each softmax")]
    public void Refusals_name_the_model_and_the_reason(string family, string step, string message)
    {
        var options = step == "fold_ln" ? new WeightProcessingOptions { FoldLn = true } : new WeightProcessingOptions { FoldValueBiases = true };
        using var m = ModelLoader.FromPretrained(Folder(family));
        Assert.Contains(message, Assert.Throws<SaeSharpException>(() => WeightProcessing.Apply(m, options)).Message);
    }

    [Fact]
    public void Circuits_with_process_weights_on_a_llama()
    {
        string dir = TinyDecoders.Write(Sub("llama"), LlamaFamilyTests.Spec("llama-gqa"));
        var (exit, output, err) = CliRunner.Run("model", "circuits", "--model", dir, "--process-weights", "--tokens", "10");
        Assert.True(exit == 0, err);
        Assert.Contains("weights: fold_ln, center_unembed, fold_value_biases", output);
        Assert.Contains("Full OV copying score (W_E·W_V·W_O·W_U)", output);
        Assert.Contains("center_writing_weights skipped for ", err);
        var (folded, foldedOut, foldedErr) = CliRunner.Run("model", "circuits", "--model", dir, "--fold-ln", "--layer", "0");
        Assert.True(folded == 0, foldedErr);
        Assert.Contains("weights: fold_ln", foldedOut);
        Assert.DoesNotContain("skipped", foldedErr);
    }
}
