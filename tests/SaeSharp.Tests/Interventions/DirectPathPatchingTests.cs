using SaeSharp.Analysis;
using SaeSharp.Interventions;
using SaeSharp.Models;
using SaeSharp.Tests.Models;
using SaeSharp.Tests.Tokenizers;
using static TorchSharp.torch;

namespace SaeSharp.Tests.Interventions;

/// <summary>Direct path patching (<see cref="DirectPathPatching"/>, TransformerLens's <c>get_act_patch_direct_path</c>)
/// against hand-written hook runs: the destination's q/k/v set to corrupted + (clean − corrupted z_A·W_O[A]) / ln1 scale
/// (computed from the corrupted resid_pre) · W[B], with W_O and W_Q/K/V cut from the Hugging Face weights; TransformerLens's
/// zeros at and before the source layer, its fold_ln warning, and key/value destinations under grouped-query attention.</summary>
public class DirectPathPatchingTests : ModelTestBase
{
    private static readonly AttributionMetric[] Metric = [AttributionMetric.LogitDiff(3, 5)];

    private HookedTransformer Model(int seed) =>
        ModelLoader.FromPretrained(TinyModels.WriteGpt2(Sub("g"), seed: seed, nLayer: 3, nEmbd: 16, nHead: 4, vocab: 64));

    private static double LogitDiff(Tensor logits) => (logits[0, -1, 3] - logits[0, -1, 5]).item<float>();

    /// <summary>The corrupted run with <paramref name="hook"/>'s head <paramref name="head"/> set to <paramref name="value"/>: the metric.</summary>
    private static double WithHead(HookedTransformer model, Tensor corrupted, string hook, int head, Tensor value)
    {
        using var scope = NewDisposeScope();
        var logits = model.RunWithHooks(corrupted, (hook, x =>
        {
            var y = x.clone();
            y.select(2, head).copy_(value);
            return y;
        }));
        return LogitDiff(logits);
    }

    [Theory]
    [InlineData(false, "q")]
    [InlineData(false, "k")]
    [InlineData(true, "q")]
    [InlineData(true, "v")]
    public void A_cell_is_the_corrupted_run_with_the_hand_computed_delta_added_to_the_destination(bool foldLn, string component)
    {
        using var model = Model(31);
        if (foldLn) Assert.Empty(WeightProcessing.Apply(model, new WeightProcessingOptions { FoldLn = true }).Hooks);   // the same model, processed in place
        using var clean = tensor(new long[] { 5, 9, 3, 12, 40, 7 }).unsqueeze(0);
        using var corrupted = tensor(new long[] { 5, 9, 30, 12, 40, 7 }).unsqueeze(0);
        var input = component switch { "q" => PathReceiverInput.Q, "k" => PathReceiverInput.K, _ => PathReceiverInput.V };
        var r = DirectPathPatching.Run(model, clean, corrupted, new AttentionHead(0, 1), input, Metric);
        Assert.Equal(foldLn, r.Warning is null);   // the tiny model's ln_1 weight is 1 + N(0, 0.1): not folded until fold_ln
        using var scope = NewDisposeScope();
        using var _ = no_grad();
        int d = 16, hd = 4;
        var sd = model.state_dict();
        using var cleanRun = model.RunWithCache(clean, ["blocks.0.attn.hook_z"]);
        var cacheNames = new List<string> { "blocks.0.attn.hook_z" };
        for (int l = 1; l < 3; l++) cacheNames.AddRange([$"blocks.{l}.hook_resid_pre", $"blocks.{l}.attn.hook_{component}"]);
        using var corruptedRun = model.RunWithCache(corrupted, cacheNames);
        var wO = sd["transformer.h.0.attn.c_proj.weight"].narrow(0, 1 * hd, hd);                                  // [d_head, d_model] of head 1
        var delta = (cleanRun.Cache["blocks.0.attn.hook_z"].select(2, 1) - corruptedRun.Cache["blocks.0.attn.hook_z"].select(2, 1)).matmul(wO);
        for (int l = 1; l < 3; l++)
        {
            var x = corruptedRun.Cache[$"blocks.{l}.hook_resid_pre"];
            var centred = x - x.mean([-1], keepdim: true);
            var lnScale = (centred * centred).mean([-1], keepdim: true).add(TorchScalars.Of(1e-5), TorchScalars.One).sqrt();                              // LayerNorm's scale by hand
            int offset = component switch { "q" => 0, "k" => d, _ => 2 * d };
            for (int h = 0; h < 4; h++)
            {
                var w = sd[$"transformer.h.{l}.attn.c_attn.weight"].narrow(1, offset + h * hd, hd);                       // [d_model, d_head] of head h
                var expected = corruptedRun.Cache[$"blocks.{l}.attn.hook_{component}"].select(2, h) + (delta / lnScale).matmul(w);
                Assert.Equal(WithHead(model, corrupted, $"blocks.{l}.attn.hook_{component}", h, expected), r.Patched[l, h], 1e-4);
            }
        }
        for (int h = 0; h < 4; h++)
        {
            Assert.Equal(0.0, r.Patched[0, h]);   // TransformerLens's zeros: no path to the source's own layer
            Assert.True(double.IsNaN(r.Normalized(0, h)));
        }
        Assert.Contains(Enumerable.Range(0, 4), h => Math.Abs(r.Patched[2, h] - r.Corrupted) > 1e-4);
    }

    [Fact]
    public void Last_layer_source_is_all_zero_and_equal_prompts_give_the_baseline_everywhere_after_the_source()
    {
        using var model = Model(32);
        using var clean = tensor(new long[] { 5, 9, 3, 12, 40, 7 }).unsqueeze(0);
        using var corrupted = tensor(new long[] { 5, 9, 30, 12, 40, 7 }).unsqueeze(0);
        var last = DirectPathPatching.Run(model, clean, corrupted, new AttentionHead(2, 0), PathReceiverInput.Q, Metric);
        Assert.All(last.Patched.Cast<double>(), v => Assert.Equal(0.0, v));
        var same = DirectPathPatching.Run(model, corrupted, corrupted, new AttentionHead(0, 0), PathReceiverInput.Q, Metric);
        Assert.Equal(same.Clean, same.Corrupted, 1e-9);
        for (int l = 1; l < 3; l++)
            for (int h = 0; h < 4; h++) Assert.Equal(same.Corrupted, same.Patched[l, h], 1e-5);
        // Every source in turn: the single-source sweeps (get_act_patch_direct_path_all_sources).
        var all = DirectPathPatching.RunAllSources(model, clean, corrupted, PathReceiverInput.K, Metric);
        var one = DirectPathPatching.Run(model, clean, corrupted, new AttentionHead(1, 3), PathReceiverInput.K, Metric);
        for (int l = 0; l < 3; l++)
            for (int h = 0; h < 4; h++) Assert.Equal(one.Patched[l, h], all.Patched[1, 3, l, h], 1e-6);
        Assert.Throws<SaeSharpException>(() => DirectPathPatching.Run(model, clean, corrupted, new AttentionHead(3, 0), PathReceiverInput.Q, Metric));
        Assert.Throws<SaeSharpException>(() => DirectPathPatching.Run(model, clean, corrupted, new AttentionHead(0, 4), PathReceiverInput.Q, Metric));
    }

    [Fact]
    public void Under_grouped_query_attention_the_k_destinations_are_the_key_value_heads()
    {
        // 2 layers, 4 query heads sharing 2 key/value heads, RMSNorm, rotary (hook_k is before the rotation, as TransformerLens's).
        using var model = ModelLoader.FromPretrained(TestPaths.Data("hf_models", "llama3"));
        long v = model.Config.DVocab;
        using var clean = tensor(new long[] { 1, 9 % v, 3, 12 % v, 40 % v, 7 }).unsqueeze(0);
        using var corrupted = tensor(new long[] { 1, 9 % v, 30 % v, 12 % v, 40 % v, 7 }).unsqueeze(0);
        var r = DirectPathPatching.Run(model, clean, corrupted, new AttentionHead(0, 3), PathReceiverInput.K, Metric);
        Assert.Equal(2, r.Patched.GetLength(1));
        using var scope = NewDisposeScope();
        using var _ = no_grad();
        var sd = model.state_dict();
        int hd = model.Config.DHead;
        using var cleanRun = model.RunWithCache(clean, ["blocks.0.attn.hook_z"]);
        using var corruptedRun = model.RunWithCache(corrupted, ["blocks.0.attn.hook_z", "blocks.1.hook_resid_pre", "blocks.1.attn.hook_k"]);
        var wO = sd["model.layers.0.self_attn.o_proj.weight"].narrow(1, 3 * hd, hd).t().to(ScalarType.Float32);      // [d_head, d_model]
        var delta = (cleanRun.Cache["blocks.0.attn.hook_z"].select(2, 3) - corruptedRun.Cache["blocks.0.attn.hook_z"].select(2, 3)).to(ScalarType.Float32).matmul(wO);
        var x = corruptedRun.Cache["blocks.1.hook_resid_pre"].to(ScalarType.Float32);
        var rmsScale = (x * x).mean([-1], keepdim: true).add(TorchScalars.Of(1e-6), TorchScalars.One).sqrt();                                               // RMSNorm's scale by hand
        for (int g = 0; g < 2; g++)
        {
            var wK = sd["model.layers.1.self_attn.k_proj.weight"].narrow(0, g * hd, hd).t().to(ScalarType.Float32);       // [d_model, d_head]
            var expected = corruptedRun.Cache["blocks.1.attn.hook_k"].select(2, g).to(ScalarType.Float32) + (delta / rmsScale).matmul(wK);
            Assert.Equal(WithHead(model, corrupted, "blocks.1.attn.hook_k", g, expected), r.Patched[1, g], 1e-4);
        }
    }
}
