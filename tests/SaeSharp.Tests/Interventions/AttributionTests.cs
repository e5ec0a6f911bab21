using SaeSharp.Interventions;
using SaeSharp.IO;
using SaeSharp.Models;
using SaeSharp.Saes;
using SaeSharp.Tests.Models;
using Xunit.Abstractions;
using static TorchSharp.torch;

namespace SaeSharp.Tests.Interventions;

/// <summary>Attribution patching to features against finite differences, plain autograd on a hand-written model, and real ablations.</summary>
public class AttributionTests(ITestOutputHelper output) : ModelTestBase
{
    private static readonly Tensor Toks = tensor(new long[] { 5, 11, 23, 42, 7, 19, 3, 30, 8, 2, 44, 17 }, 2, 6);

    private static Sae Sae64(string hook, int seed, double encBias = 0.0) =>
        InterventionTests.RandomSae(hook, 16, 32, seed, ScalarType.Float64, encBias);

    private static double MetricWithScaledEntry(HookedSaeTransformer hooked, AttributionMetric metric, string hookName, long[] index, double t) =>
        MetricWithScaledEntry(hooked, metric, Toks, hookName, index, t);

    /// <summary>The metric on <paramref name="toks"/> with a hook multiplying one entry of an SAE hook point by (1 + t).</summary>
    internal static double MetricWithScaledEntry(HookedSaeTransformer hooked, AttributionMetric metric, Tensor toks, string hookName, long[] index, double t)
    {
        var logits = hooked.RunWithHooks(toks, null, (hookName, a =>
        {
            var scale = ones_like(a);
            scale[index.Select(i => (TensorIndex)i).ToArray()] = 1 + t;
            return a * scale;
        }));
        return metric.Evaluate(logits, toks).item<double>();
    }

    [Fact]
    public void AttributionsMatchFiniteDifferencesThroughTwoSaes()
    {
        using var model = ModelLoader.FromPretrained(TinyModels.WriteGpt2(Sub("g"), 3, 2, 16, 4, 50, 32), ScalarType.Float64);
        using var sae0 = Sae64("blocks.0.hook_resid_post", 1);
        using var sae1 = Sae64("blocks.1.hook_resid_mid", 2);
        var hooked = new HookedSaeTransformer(model);
        hooked.AddSae(sae0, useErrorTerm: true);
        hooked.AddSae(sae1, useErrorTerm: true);
        foreach (var metric in new[] { AttributionMetric.LogitDiff(3, 7), AttributionMetric.Loss })
        {
            using var r = hooked.Attribute(Toks, metric);
            // The metric is the clean model's.
            Assert.Equal(metric.Evaluate(model.Forward(Toks), Toks).item<double>(), r.Metric, 9);
            const double h = 1e-5;
            // d/dt m(f_i·(1 + t)) at t = 0 is f_i·∂m/∂f_i: the attribution itself.
            var entries = r.Top(6).Concat(r.Top(40).Where((_, i) => i % 7 == 3)).ToList();
            foreach (var e in entries)
            {
                string name = hooked.Saes[e.Sae].HookName(SaeSharp.Hooks.SaeHookPoints.ActsPost);
                long[] idx = [e.Batch, e.Position, e.Feature];
                double fd = (MetricWithScaledEntry(hooked, metric, name, idx, h) - MetricWithScaledEntry(hooked, metric, name, idx, -h)) / (2 * h);
                Assert.True(Math.Abs(fd - e.Attribution) < 1e-6 * Math.Max(1, Math.Abs(fd)), $"{metric} {e}: finite difference {fd}");
            }
            // Error nodes: d/dt m(ε_(b,p)·(1 + t)) = Σ_d ε_d·∂m/∂ε_d.
            for (int s = 0; s < 2; s++)
            {
                string name = hooked.Saes[s].HookName(SaeSharp.Hooks.SaeHookPoints.Error);
                foreach (var (b, p) in new[] { (0, 5), (1, 2) })
                {
                    double fd = (MetricWithScaledEntry(hooked, metric, name, [b, p], h) - MetricWithScaledEntry(hooked, metric, name, [b, p], -h)) / (2 * h);
                    double a = r.ErrorAttribution[s][b, p].item<double>();
                    Assert.True(Math.Abs(fd - a) < 1e-6 * Math.Max(1, Math.Abs(fd)), $"{metric} error node {s} ({b}, {p}): {a} vs finite difference {fd}");
                }
            }
        }
    }

    [Theory]
    [InlineData(false)]
    [InlineData(true)]
    public void AttributionsEqualPlainAutogradOnAnExplicitlyWrittenModel(bool frozen)
    {
        // One GPT-2 block after the SAE at resid_mid, written out here: x' = f·W_dec + b_dec + ε, then
        // x' + MLP(LN2(x')), LN_f and the tied unembedding. Frozen (circuit-tracer's replacement model): each LayerNorm's
        // σ = √(var + eps) is a constant, taken from the values of the run.
        string dir = TinyModels.WriteGpt2(Sub("g1"), 5, 1, 16, 4, 50, 32);
        using var model = ModelLoader.FromPretrained(dir, ScalarType.Float64);
        string hook = "blocks.0.hook_resid_mid";
        using var sae = Sae64(hook, 3);
        var hooked = new HookedSaeTransformer(model);
        hooked.AddSae(sae);
        var metric = AttributionMetric.LogitDiff(4, 9);
        using var r = hooked.Attribute(Toks, metric, freezeAttentionAndNorms: frozen);

        var w = SafeTensors.Load(Path.Combine(dir, "model.safetensors"), ScalarType.Float64);
        var (_, cache) = model.RunWithCache(Toks, [hook]);
        Tensor x;
        using (cache) x = cache[hook].clone();
        var f = InterventionTests.HandFeatures(sae, x).requires_grad_(true);
        var wDec = sae.WDec.detach();
        var bDec = sae.BDec.detach();
        var eps = (x - (matmul(f.detach(), wDec) + bDec)).requires_grad_(true);
        var xs = matmul(f, wDec) + bDec + eps;
        Tensor Ln(Tensor t, string n)
        {
            if (!frozen) return nn.functional.layer_norm(t, [16], w[n + ".weight"], w[n + ".bias"], 1e-5);
            var c = t.detach();
            var sigma = (c - c.mean([-1L], keepdim: true)).pow(2).mean([-1L], keepdim: true).add(TorchScalars.Of(1e-5), TorchScalars.One).sqrt();
            return (t - t.mean([-1L], keepdim: true)) / sigma * w[n + ".weight"] + w[n + ".bias"];
        }
        var hidden = matmul(Ln(xs, "transformer.h.0.ln_2"), w["transformer.h.0.mlp.c_fc.weight"]) + w["transformer.h.0.mlp.c_fc.bias"];
        var gelu = hidden * 0.5 * (((hidden + hidden.pow(3) * 0.044715) * Math.Sqrt(2 / Math.PI)).tanh() + 1);
        var resid = xs + matmul(gelu, w["transformer.h.0.mlp.c_proj.weight"]) + w["transformer.h.0.mlp.c_proj.bias"];
        var logits = matmul(Ln(resid, "transformer.ln_f"), w["transformer.wte.weight"].t());
        var m = (logits[.., -1, 4] - logits[.., -1, 9]).sum();
        m.backward();

        Assert.Equal(m.item<double>(), r.Metric, 9);
        AssertAllClose(f.detach() * f.grad!, r.Attribution[0], 1e-9, "feature attribution");
        AssertAllClose((eps.detach() * eps.grad!).sum(-1), r.ErrorAttribution[0], 1e-9, "error attribution");
        AssertAllClose(f.detach(), r.FeatureActs[0], 1e-9, "feature activations");
    }

    [Fact]
    public void AttributionEqualsTheAblationEffectExactlyWhereTheMetricIsLinear()
    {
        // An SAE on ln_final.hook_normalized: the logits are linear in its features, so zero-ablating one feature at one
        // position (error term kept) changes a logit metric by exactly minus its attribution.
        using var model = Gpt2(nLayer: 1, seed: 4);
        string hook = "ln_final.hook_normalized";
        using var sae = InterventionTests.RandomSae(hook, 16, 32, 7, encBias: 0.2);
        var hooked = new HookedSaeTransformer(model);
        hooked.AddSae(sae, useErrorTerm: true);
        var metric = AttributionMetric.LogitDiff(2, 13);
        using var r = hooked.Attribute(Toks, metric);
        using var ig = hooked.Attribute(Toks, metric, integratedGradientSteps: 3);
        AssertAllClose(r.Attribution[0], ig.Attribution[0], 1e-4, "integrated gradients = first order on a linear metric");

        string post = hooked.Saes[0].HookName(SaeSharp.Hooks.SaeHookPoints.ActsPost);
        var f = r.FeatureActs[0];
        int checkedActive = 0;
        foreach (var (b, p) in new[] { (0, 5), (1, 5), (0, 2) })
        {
            for (int feat = 0; feat < 32; feat++)
            {
                bool active = f[b, p, feat].item<float>() > 0;
                if (!active && feat % 8 != 0) continue;
                var logits = hooked.RunWithHooks(Toks, null, (post, a =>
                {
                    var z = a.clone();
                    z[b, p, feat] = 0;
                    return z;
                }));
                double effect = r.Metric - metric.Evaluate(logits, Toks).item<float>();
                double attribution = r.Attribution[0][b, p, feat].item<float>();
                Assert.True(Math.Abs(effect - attribution) < 1e-4, $"({b}, {p}, {feat}): ablation effect {effect} vs attribution {attribution}");
                if (p != 5) Assert.Equal(0, attribution, 6);
                if (active && p == 5) checkedActive++;
            }
        }
        Assert.True(checkedActive >= 4, $"only {checkedActive} active features at the last position");
    }

    [Fact]
    public void AttributionTracksRealAblationsOnATinyModel()
    {
        // Features whose decoder rows are small next to the residual stream: the regime where attribution patching is
        // meant to hold. Each active (position, feature) is zero-ablated on its own, the error term kept.
        using var model = Gpt2(nLayer: 2, seed: 6);
        string hook = "blocks.0.hook_resid_post";
        using var sae = InterventionTests.RandomSae(hook, 16, 32, 8, encBias: 0.0);
        using (no_grad()) sae.WDec.mul_(0.2);
        var hooked = new HookedSaeTransformer(model);
        hooked.AddSae(sae, useErrorTerm: true);
        var metric = AttributionMetric.LogitDiff(3, 7);
        var row = Toks.narrow(0, 0, 1);
        using var r = hooked.Attribute(row, metric);
        string post = hooked.Saes[0].HookName(SaeSharp.Hooks.SaeHookPoints.ActsPost);

        var effects = new List<double>();
        var linear = new List<double>();
        var f = r.FeatureActs[0];
        for (int p = 0; p < 6; p++)
        {
            for (int feat = 0; feat < 32; feat++)
            {
                if (f[0, p, feat].item<float>() <= 0) continue;
                var logits = hooked.RunWithHooks(row, null, (post, a =>
                {
                    var z = a.clone();
                    z[0, p, feat] = 0;
                    return z;
                }));
                effects.Add(r.Metric - metric.Evaluate(logits, row).item<float>());
                linear.Add(r.Attribution[0][0, p, feat].item<float>());
            }
        }
        double correlation = Pearson(linear, effects);
        output.WriteLine($"{effects.Count} active (position, feature) pairs: correlation of attribution patching with the zero-ablation effect {correlation:F4}");
        Assert.True(effects.Count >= 30, $"only {effects.Count} active features");
        Assert.True(correlation > 0.9, $"attribution patching correlates {correlation} with real ablations");
    }

    [Fact]
    public void IntegratedGradientsAddUpToZeroAblatingTheWholeSae()
    {
        // Completeness: the integrated-gradient attributions of an SAE sum to m(clean) − m(all its features zeroed, the
        // error term kept), up to the quadrature error of the N-step midpoint rule; first-order attributions need not.
        using var model = Gpt2(nLayer: 2, seed: 6);
        string hook = "blocks.0.hook_resid_post";
        using var sae = InterventionTests.RandomSae(hook, 16, 32, 8, encBias: 0.0);
        var hooked = new HookedSaeTransformer(model);
        hooked.AddSae(sae, useErrorTerm: true);
        var metric = AttributionMetric.LogitDiff(3, 7);
        using var ig = hooked.Attribute(Toks, metric, integratedGradientSteps: 24);
        using var first = hooked.Attribute(Toks, metric);
        var ablated = hooked.RunWithHooks(Toks, null, (hooked.Saes[0].HookName(SaeSharp.Hooks.SaeHookPoints.ActsPost), a => zeros_like(a)));
        double effect = ig.Metric - metric.Evaluate(ablated, Toks).item<float>();
        double sumIg = ig.Attribution[0].sum().item<float>(), sumFirst = first.Attribution[0].sum().item<float>();
        output.WriteLine($"whole-SAE ablation effect {effect:F4}; sum of attributions: integrated gradients {sumIg:F4}, first order {sumFirst:F4}");
        Assert.True(Math.Abs(sumIg - effect) < 0.02 * Math.Abs(effect) + 1e-3, $"integrated gradients sum to {sumIg}, ablation effect {effect}");
        Assert.True(Math.Abs(sumIg - effect) < Math.Abs(sumFirst - effect), "integrated gradients are closer to the ablation than first order");
    }

    /// <summary>Marks et al.'s integrated gradients (<c>_pe_ig</c> with a zero patch: features and error term scaled
    /// together): one SAE's feature and error attributions sum to m(clean) − m(its hook's activation replaced by b_dec),
    /// the model run here without any SAE (96 midpoint steps: the path from b_dec bends more than the features-only one);
    /// where m is linear in the error term the error attribution equals the first-order
    /// one; without integrated-gradient steps it is refused.</summary>
    [Fact]
    public void IntegratedErrorsAddUpToReplacingTheHookByBDec()
    {
        using var model = Gpt2(nLayer: 2, seed: 6);
        string hook = "blocks.0.hook_resid_post";
        using var sae = InterventionTests.RandomSae(hook, 16, 32, 8, encBias: 0.0);
        var hooked = new HookedSaeTransformer(model);
        hooked.AddSae(sae, useErrorTerm: true);
        var metric = AttributionMetric.LogitDiff(3, 7);
        using var ig = hooked.Attribute(Toks, metric, integratedGradientSteps: 96, integrateErrors: true);
        Assert.True(ig.IntegratedErrors);
        var atBDec = model.RunWithHooks(Toks, (hook, x => sae.BDec.expand_as(x).clone()));
        double effect = ig.Metric - metric.Evaluate(atBDec, Toks).item<float>();
        double features = ig.Attribution[0].sum().item<float>(), error = ig.ErrorAttribution[0].sum().item<float>();
        output.WriteLine($"activation → b_dec effect {effect:F4}; integrated features {features:F4} + error {error:F4}");
        Assert.True(Math.Abs(features + error - effect) < 0.01 * Math.Abs(effect) + 1e-3, $"features {features} + error {error} vs effect {effect}");
        using var heldErrors = hooked.Attribute(Toks, metric, integratedGradientSteps: 24);
        Assert.False(heldErrors.Attribution[0].allclose(ig.Attribution[0], rtol: 1e-3, atol: 1e-5), "scaling the error changes the path");

        // On ln_final.hook_normalized a logit metric is linear in the error term: integrated = first order.
        using var model1 = Gpt2(nLayer: 1, seed: 4);
        using var last = InterventionTests.RandomSae("ln_final.hook_normalized", 16, 32, 7, encBias: 0.2);
        var linear = new HookedSaeTransformer(model1);
        linear.AddSae(last, useErrorTerm: true);
        using var first = linear.Attribute(Toks, metric);
        using var integrated = linear.Attribute(Toks, metric, integratedGradientSteps: 3, integrateErrors: true);
        AssertAllClose(first.ErrorAttribution[0], integrated.ErrorAttribution[0], 1e-4, "error attribution");
        AssertAllClose(first.Attribution[0], integrated.Attribution[0], 1e-4, "feature attribution");
        Assert.Contains("integrated-gradient steps", Assert.Throws<SaeSharpException>(() => linear.Attribute(Toks, metric, integrateErrors: true)).Message);
    }

    private static double Pearson(IReadOnlyList<double> a, IReadOnlyList<double> b)
    {
        double ma = a.Average(), mb = b.Average();
        double cov = a.Zip(b).Sum(z => (z.First - ma) * (z.Second - mb));
        return cov / Math.Sqrt(a.Sum(v => (v - ma) * (v - ma)) * b.Sum(v => (v - mb) * (v - mb)));
    }
}
