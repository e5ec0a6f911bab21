using SaeSharp.Interop;
using SaeSharp.Interventions;
using SaeSharp.IO;
using SaeSharp.Models;
using SaeSharp.Saes;
using SaeSharp.Tests.Models;
using SaeSharp.Tests.Saes;
using TorchSharp;
using static TorchSharp.torch;

namespace SaeSharp.Tests.Interventions;

/// <summary>
/// Attribution to a whole cross-layer transcoder's features against a replacement run written here with hooks: the features
/// and error nodes fixed tensors, each MLP output replaced by Σ f·W_dec + b_dec + skip + ε, and (frozen) every attention
/// pattern and norm scale replaced by its clean value as a constant; autograd and finite differences through that.
/// </summary>
public class CrossLayerAttributionTests : CltTestBase
{
    internal const int DModel = 16, Features = 12, Layers = 2;
    private static readonly Tensor Toks = tensor(new long[] { 5, 11, 23, 42, 7, 19, 3, 30, 8, 2, 44, 17 }, 2, 6);

    /// <summary><see cref="CltTestBase.MakeClt"/>'s CLT without its reference weights.</summary>
    private CrossLayerTranscoder MakeClt(bool skip = true, int seed = 4) => MakeClt(seed, skip).Clt;

    /// <summary>The clean run's features [b, s, F] and error terms [b, s, d] per layer, and its patterns and norm inputs.</summary>
    internal static (Tensor[] F, Tensor[] Eps, Dictionary<string, Tensor> Cache) Clean(HookedTransformer model, CrossLayerTranscoder clt, Tensor? tokens = null)
    {
        var names = new List<string>();
        for (int l = 0; l < Layers; l++)
            names.AddRange([$"blocks.{l}.ln2.hook_normalized", $"blocks.{l}.hook_mlp_out", $"blocks.{l}.attn.hook_pattern",
                $"blocks.{l}.hook_resid_pre", $"blocks.{l}.hook_resid_mid"]);
        names.Add($"blocks.{Layers - 1}.hook_resid_post");
        var (_, cache) = model.RunWithCache(tokens ?? Toks, names);
        var c = names.ToDictionary(n => n, n => cache[n].clone());
        cache.Dispose();
        var f = new Tensor[Layers];
        var eps = new Tensor[Layers];
        for (int l = 0; l < Layers; l++)
        {
            f[l] = clt.EncodeLayer(c[$"blocks.{l}.ln2.hook_normalized"], l);
            eps[l] = c[$"blocks.{l}.hook_mlp_out"] - clt.DecodeLayer(f, l, c[$"blocks.{l}.ln2.hook_normalized"]);
        }
        return (f, eps, c);
    }

    /// <summary>
    /// The replacement run with the features <paramref name="f"/> and error nodes <paramref name="eps"/> given (not read from
    /// the run): blocks.l.hook_mlp_out := Σ_{i ≤ l} f_i·W_dec[i][:, l − i] + b_dec[l] + x_l·W_skip[l] + ε_l, x_l the run's
    /// ln2 output. With <paramref name="frozen"/> the clean patterns are constants, and ln1, ln2 and ln_f are
    /// (x − mean x)/σ_clean·w + b with σ_clean the clean run's scale (computed here from the cached norm inputs).
    /// <paramref name="x"/>, when given, receives each layer's ln2 output; <paramref name="embed"/>, when given, replaces
    /// hook_embed; <paramref name="tokens"/> default to the two rows used here.
    /// </summary>
    internal static Tensor ReplacementLogits(HookedTransformer model, CrossLayerTranscoder clt, string dir, Tensor[] f, Tensor[] eps,
        Dictionary<string, Tensor> clean, bool frozen, Tensor?[]? x = null, Tensor? embed = null, Tensor? tokens = null)
    {
        bool keep = x is not null;
        x ??= new Tensor?[Layers];
        var hooks = frozen ? FrozenHooks(dir, clean) : [];
        if (embed is not null) hooks.Add(("hook_embed", _ => embed));
        for (int l = 0; l < Layers; l++)
        {
            int layer = l;
            hooks.Add(($"blocks.{l}.ln2.hook_normalized", t => { x[layer] = keep ? t.clone().DetachFromDisposeScope() : t; return null; }));
            hooks.Add(($"blocks.{l}.hook_mlp_out", _ => clt.DecodeLayer(f, layer, x[layer]) + eps[layer]));
        }
        return model.Run(tokens ?? Toks, new RunOptions { Hooks = hooks, Grad = true }).Logits!;
    }

    /// <summary>Hooks that replace every attention pattern by its clean value and ln1, ln2 and ln_f by
    /// (x − mean x)/σ_clean·w + b, σ_clean the clean run's scale computed here from the cached norm inputs.</summary>
    internal static List<(string, Func<Tensor, Tensor?>)> FrozenHooks(string dir, Dictionary<string, Tensor> clean)
    {
        var w = SafeTensors.Load(Path.Combine(dir, "model.safetensors"), ScalarType.Float64);
        var hooks = new List<(string, Func<Tensor, Tensor?>)>();
        var normInput = new Dictionary<string, Tensor>();
        (string Input, string Output, string Weights)[] norms =
        [
            .. Enumerable.Range(0, Layers).SelectMany(l => new[]
            {
                ($"blocks.{l}.hook_resid_pre", $"blocks.{l}.ln1.hook_normalized", $"transformer.h.{l}.ln_1"),
                ($"blocks.{l}.hook_resid_mid", $"blocks.{l}.ln2.hook_normalized", $"transformer.h.{l}.ln_2"),
            }),
            ($"blocks.{Layers - 1}.hook_resid_post", "ln_final.hook_normalized", "transformer.ln_f"),
        ];
        foreach (var (input, output, weights) in norms)
        {
            var c = clean[input];
            var sigma = (c - c.mean([-1L], keepdim: true)).pow(2).mean([-1L], keepdim: true).add(TorchScalars.Of(1e-5), TorchScalars.One).sqrt();
            hooks.Add((input, t => { normInput[input] = t; return null; }));
            hooks.Add((output, _ =>
            {
                var t = normInput[input];
                return (t - t.mean([-1L], keepdim: true)) / sigma * w[weights + ".weight"] + w[weights + ".bias"];
            }));
        }
        for (int l = 0; l < Layers; l++)
        {
            var p = clean[$"blocks.{l}.attn.hook_pattern"];
            hooks.Add(($"blocks.{l}.attn.hook_pattern", _ => p));
        }
        return hooks;
    }

    [Fact]
    public void Freezing_a_plain_run_gives_the_gradient_of_the_model_with_constant_patterns_and_scales()
    {
        // RunOptions.FreezeAttentionAndNorms on its own (no SAE): the gradient of the loss to the token embeddings equals the
        // gradient through the same model with every pattern and norm scale replaced by its clean value as a constant, and
        // differs from the live model's.
        string dir = ModelDir(seed: 11);
        using var model = ModelLoader.FromPretrained(dir, ScalarType.Float64);
        using var clt = MakeClt();
        var (_, _, clean) = Clean(model, clt);
        var (_, embedCache) = model.RunWithCache(Toks, ["hook_embed"]);
        var embed = embedCache["hook_embed"].clone();
        embedCache.Dispose();
        Tensor GradOfEmbed(bool freeze, List<(string, Func<Tensor, Tensor?>)> extra)
        {
            var leaf = embed.clone().requires_grad_(true);
            var logits = model.Run(Toks, new RunOptions { Grad = true, FreezeAttentionAndNorms = freeze, Hooks = [("hook_embed", _ => leaf), .. extra] }).Logits!;
            using (enable_grad()) AttributionMetric.Loss.Evaluate(logits, Toks).backward();
            return leaf.grad!.clone();
        }
        var frozen = GradOfEmbed(true, []);
        AssertAllClose(GradOfEmbed(false, FrozenHooks(dir, clean)), frozen, 1e-12, "frozen gradient");
        Assert.True((GradOfEmbed(false, []) - frozen).abs().max().item<double>() > 1e-6, "freezing changed nothing");
    }

    [Theory]
    [InlineData(true)]
    [InlineData(false)]
    public void Attribution_equals_autograd_through_a_replacement_run_written_with_hooks(bool frozen)
    {
        string dir = ModelDir();
        using var model = ModelLoader.FromPretrained(dir, ScalarType.Float64);
        using var clt = MakeClt();
        foreach (var metric in new[] { AttributionMetric.LogitDiff(3, 7), AttributionMetric.Loss })
        {
            using var r = FeatureAttribution.Run(model, clt, Toks, metric, freezeAttentionAndNorms: frozen);
            Assert.True(r.CrossLayer);
            Assert.Equal(new[] { "blocks.0.hook_mlp_out", "blocks.1.hook_mlp_out" }, r.Hooks);
            Assert.Equal(metric.Evaluate(model.Forward(Toks), Toks).item<double>(), r.Metric, 10);

            var (f, eps, clean) = Clean(model, clt);
            var leaves = f.Select(t => t.detach().requires_grad_(true)).ToArray();
            var errs = eps.Select(t => t.detach().requires_grad_(true)).ToArray();
            var m = metric.Evaluate(ReplacementLogits(model, clt, dir, leaves, errs, clean, frozen), Toks);
            Assert.Equal(r.Metric, m.item<double>(), 10);   // the reference is the clean run too
            m.backward();
            int active = 0;
            for (int l = 0; l < Layers; l++)
            {
                AssertAllClose(f[l], r.FeatureActs[l], 1e-12, $"layer {l} activations");
                AssertAllClose(leaves[l].detach() * leaves[l].grad!, r.Attribution[l], 1e-9, $"{metric} layer {l} feature attribution");
                AssertAllClose((errs[l].detach() * errs[l].grad!).sum(-1), r.ErrorAttribution[l], 1e-9, $"{metric} layer {l} error attribution");
                active += (int)f[l].gt(0).sum().item<long>();
            }
            Assert.True(active >= 20, $"only {active} active features");
            Assert.True(r.Attribution[0].abs().max().item<double>() > 1e-4, "layer 0's features have an effect");
        }
    }

    [Fact]
    public void Attribution_matches_finite_differences_and_frozen_differs_from_live()
    {
        string dir = ModelDir(seed: 5);
        using var model = ModelLoader.FromPretrained(dir, ScalarType.Float64);
        using var clt = MakeClt(seed: 6);
        var metric = AttributionMetric.Loss;
        using var r = FeatureAttribution.Run(model, clt, Toks, metric);
        using var frozen = FeatureAttribution.Run(model, clt, Toks, metric, freezeAttentionAndNorms: true);
        var (f, eps, clean) = Clean(model, clt);
        const double h = 1e-5;
        double MetricWith(int l, long[] idx, double t, bool error)
        {
            using var scope = NewDisposeScope();
            var ff = f.Select(a => a.clone()).ToArray();
            var ee = eps.Select(a => a.clone()).ToArray();
            var target = error ? ee : ff;
            var i = idx.Select(v => (TensorIndex)v).ToArray();
            target[l][i] = target[l][i] * (1 + t);
            using var _ = no_grad();
            return metric.Evaluate(ReplacementLogits(model, clt, dir, ff, ee, clean, frozen: false), Toks).item<double>();
        }
        var entries = r.Top(8).ToList();
        Assert.Equal(8, entries.Count);
        foreach (var e in entries)
        {
            long[] idx = [e.Batch, e.Position, e.Feature];
            double fd = (MetricWith(e.Sae, idx, h, false) - MetricWith(e.Sae, idx, -h, false)) / (2 * h);
            Assert.True(Math.Abs(fd - e.Attribution) < 1e-6 * Math.Max(1, Math.Abs(fd)), $"L{e.Sae}/{e.Feature} at ({e.Batch}, {e.Position}): {e.Attribution} vs finite difference {fd}");
        }
        foreach (var (l, b, p) in new[] { (0, 0, 2), (1, 1, 5), (0, 1, 4) })
        {
            double fd = (MetricWith(l, [b, p], h, true) - MetricWith(l, [b, p], -h, true)) / (2 * h);
            double a = r.ErrorAttribution[l][b, p].item<double>();
            Assert.True(Math.Abs(fd - a) < 1e-6 * Math.Max(1, Math.Abs(fd)), $"error node {l} ({b}, {p}): {a} vs finite difference {fd}");
        }
        // Freezing changes the gradients (attention and norms are nonlinear in the residual), not the activations or metric.
        Assert.Equal(r.Metric, frozen.Metric, 12);
        AssertAllClose(r.FeatureActs[0], frozen.FeatureActs[0], 0, "activations");
        Assert.True((r.Attribution[0] - frozen.Attribution[0]).abs().max().item<double>() > 1e-6, "freezing changed nothing");
    }

    [Fact]
    public void Frozen_attributions_of_a_logit_add_up_to_removing_every_feature_and_error_node()
    {
        // With patterns and norm scales constant and the MLPs replaced, the logits are affine in the features and error
        // nodes: zeroing one of them changes a logit metric by exactly its attribution, and zeroing all of them by the sum.
        string dir = ModelDir(seed: 7);
        using var model = ModelLoader.FromPretrained(dir, ScalarType.Float64);
        using var clt = MakeClt(seed: 8);
        var metric = AttributionMetric.LogitDiff(4, 9);
        using var r = FeatureAttribution.Run(model, clt, Toks, metric, freezeAttentionAndNorms: true);
        var (f, eps, clean) = Clean(model, clt);
        double With(Func<Tensor[], Tensor[]> editF, Func<Tensor[], Tensor[]> editE)
        {
            using var scope = NewDisposeScope();
            using var _ = no_grad();
            return metric.Evaluate(ReplacementLogits(model, clt, dir, editF(f), editE(eps), clean, frozen: true), Toks).item<double>();
        }
        Tensor[] Zeros(Tensor[] a) => a.Select(t => zeros_like(t)).ToArray();
        Tensor[] Same(Tensor[] a) => a;
        double all = r.Metric - With(Zeros, Zeros);
        double sum = r.Attribution.Sum(a => a.sum().item<double>()) + r.ErrorAttribution.Sum(a => a.sum().item<double>());
        Assert.True(Math.Abs(all - sum) < 1e-9 * Math.Max(1, Math.Abs(all)), $"removing every node changes the metric by {all}, the attributions sum to {sum}");
        double features = r.Metric - With(Zeros, Same);
        Assert.Equal(features, r.Attribution.Sum(a => a.sum().item<double>()), 9);
        foreach (var e in r.Top(5))
        {
            double effect = r.Metric - With(a =>
            {
                var z = a.Select(t => t.clone()).ToArray();
                z[e.Sae][e.Batch, e.Position, e.Feature] = 0;
                return z;
            }, Same);
            Assert.Equal(effect, e.Attribution, 9);
        }
    }

    /// <summary>Σ over every layer of the feature attributions.</summary>
    private static double FeatureSum(AttributionResult r) => r.Attribution.Sum(a => a.sum().item<double>());

    /// <summary>The replacement run's metric with the clean error nodes and every feature zero (the far end of the
    /// integrated-gradient path), written with hooks.</summary>
    private static double MetricWithoutFeatures(HookedTransformer model, CrossLayerTranscoder clt, string dir, AttributionMetric metric, bool frozen)
    {
        var (f, eps, clean) = Clean(model, clt);
        using var _ = no_grad();
        return metric.Evaluate(ReplacementLogits(model, clt, dir, f.Select(t => zeros_like(t)).ToArray(), eps, clean, frozen), Toks).item<double>();
    }

    [Fact]
    public void Integrated_gradients_add_up_to_removing_every_feature_up_to_a_riemann_error_that_shrinks_with_the_steps()
    {
        // The live model (attention and norms nonlinear): the path's gradients change with α, so the midpoint rule is exact
        // only in the limit; its error falls as 1/N² (N = 2 → 32: far more than 10 times).
        string dir = ModelDir(seed: 13);
        using var model = ModelLoader.FromPretrained(dir, ScalarType.Float64);
        using var clt = MakeClt(seed: 14);
        foreach (var metric in new[] { AttributionMetric.Loss, AttributionMetric.LogitDiff(4, 9) })
        {
            double total = MetricWithoutFeatures(model, clt, dir, metric, frozen: false);
            using var first = FeatureAttribution.Run(model, clt, Toks, metric);
            total = first.Metric - total;
            double Gap(int steps)
            {
                using var r = FeatureAttribution.Run(model, clt, Toks, metric, steps);
                Assert.Equal(steps, r.IntegratedGradientSteps);
                Assert.Equal(first.Metric, r.Metric, 12);
                for (int l = 0; l < Layers; l++)
                {
                    AssertAllClose(first.FeatureActs[l], r.FeatureActs[l], 0, "activations");
                    AssertAllClose(first.ErrorAttribution[l], r.ErrorAttribution[l], 1e-12, "error attributions stay first-order");
                }
                return Math.Abs(FeatureSum(r) - total);
            }
            double g2 = Gap(2), g32 = Gap(32);
            double firstOrder = Math.Abs(FeatureSum(first) - total);
            Assert.True(firstOrder > 1e-4 * Math.Abs(total), $"{metric}: attribution patching is already complete ({firstOrder} of {total}): the test shows nothing");
            Assert.True(g32 < g2 / 20, $"{metric}: the Riemann error went from {g2} (2 steps) to {g32} (32 steps)");
            Assert.True(g32 < 1e-3 * Math.Abs(total), $"{metric}: 32 steps miss the total {total} by {g32}");
        }
    }

    [Fact]
    public void On_the_frozen_linear_path_integrated_gradients_are_exact_and_equal_attribution_patching()
    {
        string dir = ModelDir(seed: 15);
        using var model = ModelLoader.FromPretrained(dir, ScalarType.Float64);
        using var clt = MakeClt(seed: 16);
        var metric = AttributionMetric.LogitDiff(2, 8);
        using var first = FeatureAttribution.Run(model, clt, Toks, metric, freezeAttentionAndNorms: true);
        using var ig = FeatureAttribution.Run(model, clt, Toks, metric, 3, freezeAttentionAndNorms: true);
        double total = first.Metric - MetricWithoutFeatures(model, clt, dir, metric, frozen: true);
        Assert.True(Math.Abs(total) > 1e-3, $"the features change the metric by only {total}");
        Assert.Equal(total, FeatureSum(ig), 9);
        for (int l = 0; l < Layers; l++) AssertAllClose(first.Attribution[l], ig.Attribution[l], 1e-10, $"layer {l}");
    }

    [Fact]
    public void Integrated_gradients_equal_a_double_precision_hand_loop_over_the_replacement_run()
    {
        // attribution = f · (1/N) Σ_k ∂m/∂f at (α_k·f, ε), α_k = (k − ½)/N, every layer's features scaled together, the
        // error nodes the clean ones; the replacement run written with hooks, not FeatureAttribution's.
        string dir = ModelDir(seed: 17);
        using var model = ModelLoader.FromPretrained(dir, ScalarType.Float64);
        using var clt = MakeClt(seed: 18);
        var metric = AttributionMetric.Loss;
        const int n = 5;
        using var r = FeatureAttribution.Run(model, clt, Toks, metric, n);
        var (f, eps, clean) = Clean(model, clt);
        var sums = f.Select(t => zeros_like(t)).ToArray();
        for (int k = 1; k <= n; k++)
        {
            double alpha = (k - 0.5) / n;
            var leaves = f.Select(t => (t * alpha).detach().requires_grad_(true)).ToArray();
            metric.Evaluate(ReplacementLogits(model, clt, dir, leaves, eps, clean, frozen: false), Toks).backward();
            for (int l = 0; l < Layers; l++) sums[l] += leaves[l].grad!;
        }
        for (int l = 0; l < Layers; l++)
        {
            var expected = f[l] * sums[l] / n;
            AssertAllClose(expected, r.Attribution[l], 1e-10, $"layer {l}");
            Assert.True(expected.abs().max().item<double>() > 1e-4, $"layer {l} has no attribution");
        }
    }

    [Fact]
    public void Integrated_gradients_on_a_one_layer_clt_equal_the_same_transcoders_attribution_as_an_sae()
    {
        // A one-layer CLT is a transcoder: its IG (every layer's features scaled = this one's) must be the SAE path's IG of
        // the same weights spliced from ln2's output to the MLP output with its error term.
        using var model = Gpt2(nLayer: 1, seed: 19);
        var r0 = CltReference.Random(1, Features, DModel, 20, threshold: true, skip: false);
        for (int k = 0; k < Features; k++) r0.Threshold[0][k] *= 0.2;
        using var clt = r0.LoadCircuitTracerLn2(Sub($"clt-{Guid.NewGuid():N}"));
        using var sae = clt.LayerTranscoder(0);
        var hooked = new SaeSharp.Interventions.HookedSaeTransformer(model);
        hooked.AddSae(sae, useErrorTerm: true);
        foreach (var metric in new[] { AttributionMetric.Loss, AttributionMetric.Logit(6) })
        {
            using var viaClt = FeatureAttribution.Run(model, clt, Toks, metric, 6);
            using var viaSae = hooked.Attribute(Toks, metric, 6);
            Assert.Equal(viaSae.Metric, viaClt.Metric, 4);
            AssertAllClose(viaSae.FeatureActs[0], viaClt.FeatureActs[0], 1e-5, $"{metric} activations");
            AssertAllClose(viaSae.Attribution[0], viaClt.Attribution[0], 1e-5, $"{metric} feature attributions");
            AssertAllClose(viaSae.ErrorAttribution[0], viaClt.ErrorAttribution[0], 1e-5, $"{metric} error attributions");
            Assert.True(viaClt.Attribution[0].abs().max().item<float>() > 1e-3, "no feature has an effect");
        }
    }

    [Fact]
    public void Frozen_integrated_gradients_of_an_sae_keep_the_clean_runs_patterns_and_equal_attribution_patching()
    {
        // The SAE path shares the replay: a transcoder replacing the last MLP's output (only ln_final lies between it and
        // the logits). Frozen at the clean run's norm scale, a logit metric is linear in its features, so integrated
        // gradients equal attribution patching exactly; with each step's own scale (a fresh freeze per step) they would
        // not, and unfrozen they do not.
        using var model = Model64(seed: 23);
        using var clt = MakeClt(seed: 24);
        using var sae = clt.LayerTranscoder(1);
        var hooked = new SaeSharp.Interventions.HookedSaeTransformer(model);
        hooked.AddSae(sae, useErrorTerm: true);
        var metric = AttributionMetric.LogitDiff(3, 11);
        using var first = hooked.Attribute(Toks, metric, 0, null, freezeAttentionAndNorms: true);
        using var ig = hooked.Attribute(Toks, metric, 4, null, freezeAttentionAndNorms: true);
        AssertAllClose(first.Attribution[0], ig.Attribution[0], 1e-10, "frozen integrated gradients");
        Assert.True(first.Attribution[0].abs().max().to(ScalarType.Float64).item<double>() > 1e-3, "no feature has an effect");
        using var live = hooked.Attribute(Toks, metric, 0);
        using var liveIg = hooked.Attribute(Toks, metric, 4);
        Assert.True((live.Attribution[0] - liveIg.Attribution[0]).abs().max().to(ScalarType.Float64).item<double>() > 1e-4, "the live path is linear: the test shows nothing");
    }

    [Fact]
    public void Integrated_gradients_on_a_clt_free_every_tensor_they_made() => LiveTensors.OnOwnThread(() =>
    {
        using var model = Gpt2(nLayer: Layers, seed: 2);
        var r0 = CltReference.Random(Layers, Features, DModel, 25, threshold: true, skip: true);
        using var clt = r0.LoadCircuitTracerLn2(Sub($"clt-{Guid.NewGuid():N}"));
        FeatureAttribution.Run(model, clt, Toks, AttributionMetric.Loss, 2, freezeAttentionAndNorms: true).Dispose();
        long before = DisposeScopeManager.Statistics.ThreadTotalLiveCount;
        for (int i = 0; i < 2; i++)
        {
            FeatureAttribution.Run(model, clt, Toks, AttributionMetric.Loss, 3).Dispose();
            FeatureAttribution.Run(model, clt, Toks, AttributionMetric.LogitDiff(1, 2), 2, freezeAttentionAndNorms: true).Dispose();
        }
        Assert.Equal(before, DisposeScopeManager.Statistics.ThreadTotalLiveCount);
    });

    [Fact]
    public void Bf16_attribution_agrees_with_float32_to_bf16_precision()
    {
        // The model and the CLT in bfloat16 (as `sae attribute --dtype bf16` loads them), against both in float32: the
        // same activations and attributions up to bfloat16's rounding through two layers (a relative step of 2⁻⁸ per
        // operation), results in float32.
        using var pair = CltTestBase.LoadInBothDtypes(ModelDir(seed: 21), Sub($"clt-{Guid.NewGuid():N}"), cltSeed: 22);
        var (m32, m16, c32, c16) = pair;
        Assert.Equal(ScalarType.BFloat16, c16.Cfg.Dtype);
        foreach (var (metric, steps) in new[] { (AttributionMetric.LogitDiff(4, 9), 0), (AttributionMetric.Loss, 0), (AttributionMetric.LogitDiff(4, 9), 4) })
        {
            using var a = FeatureAttribution.Run(m32, c32, Toks, metric, steps, freezeAttentionAndNorms: steps == 0);
            using var b = FeatureAttribution.Run(m16, c16, Toks, metric, steps, freezeAttentionAndNorms: steps == 0);
            Assert.True(Math.Abs(a.Metric - b.Metric) < 0.03 * Math.Max(1, Math.Abs(a.Metric)), $"{metric}: metric {b.Metric} vs {a.Metric}");
            for (int l = 0; l < Layers; l++)
            {
                Assert.Equal(ScalarType.Float32, b.Attribution[l].dtype);
                Close(a.FeatureActs[l], b.FeatureActs[l], $"{metric} layer {l} activations");
                Close(a.Attribution[l], b.Attribution[l], $"{metric} ({steps} steps) layer {l} attributions");
                Close(a.ErrorAttribution[l], b.ErrorAttribution[l], $"{metric} ({steps} steps) layer {l} error attributions");
            }
        }

        static void Close(Tensor expected, Tensor actual, string what)
        {
            double scale = expected.abs().max().item<float>();
            double diff = (expected - actual.to(expected.dtype)).abs().max().item<float>();
            Assert.True(scale > 1e-3, $"{what}: all zero");
            Assert.True(diff <= BfTolerance * scale, $"{what}: differ by {diff} of {scale}");
        }
    }

    /// <summary>Bfloat16 against float32 through the tiny two-layer model, relative to the largest value: ten of bfloat16's
    /// steps (2⁻⁸ each; the roundings of the forward and backward accumulate; the largest seen is 1.9%).</summary>
    internal const double BfTolerance = 10.0 / 256;

    [Fact]
    public void Attribution_to_a_clt_frees_every_tensor_it_made() => LiveTensors.OnOwnThread(() =>
    {
        using var model = Gpt2(nLayer: Layers, seed: 2);
        var r0 = CltReference.Random(Layers, Features, DModel, 9, threshold: true, skip: true);
        using var clt = r0.LoadCircuitTracerLn2(Sub($"clt-{Guid.NewGuid():N}"));
        FeatureAttribution.Run(model, clt, Toks, AttributionMetric.Loss, freezeAttentionAndNorms: true).Dispose();
        long before = DisposeScopeManager.Statistics.ThreadTotalLiveCount;
        for (int i = 0; i < 2; i++)
        {
            FeatureAttribution.Run(model, clt, Toks, AttributionMetric.Loss).Dispose();
            FeatureAttribution.Run(model, clt, Toks, AttributionMetric.LogitDiff(1, 2), freezeAttentionAndNorms: true).Dispose();
        }
        Assert.Equal(before, DisposeScopeManager.Statistics.ThreadTotalLiveCount);
    });

    [Fact]
    public void A_clt_whose_hooks_the_model_lacks_is_refused_by_name()
    {
        using var model = Gpt2(nLayer: 1, seed: 2);
        using var clt = MakeClt();
        var e = Assert.Throws<SaeSharpException>(() => FeatureAttribution.Run(model, clt, Toks, AttributionMetric.Loss));
        Assert.Contains("spans 2 layers", e.Message);
    }
}
