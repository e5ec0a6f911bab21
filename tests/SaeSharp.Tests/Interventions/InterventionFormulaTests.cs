using SaeSharp.Interventions;
using SaeSharp.Tests.Models;
using static TorchSharp.torch;

namespace SaeSharp.Tests.Interventions;

/// <summary>Intervention and attribution formulas in cases where a plausible slip gives a different answer.</summary>
public class InterventionFormulaTests : ModelTestBase
{
    private static readonly Tensor Toks = tensor(new long[] { 5, 11, 23, 42, 7, 19, 3, 30, 8, 2, 44, 17 }, 2, 6);

    [Fact]
    public void Clamping_to_a_negative_value_sets_the_feature_after_the_activation_function_not_before()
    {
        // SAELens clamps hook_sae_acts_post: the feature takes the value V even where the activation function could not
        // produce it. Clamping acts_pre instead would give ReLU(−2) = 0, i.e. a zero ablation of the feature.
        using var model = Gpt2();
        string hook = "blocks.0.hook_resid_post";
        using var sae = InterventionTests.RandomSae(hook, 16, 32, 5, encBias: 0.1);
        var (_, cache) = model.RunWithCache(Toks, [hook]);
        Tensor f;
        using (cache) f = InterventionTests.HandFeatures(sae, cache[hook]);
        const int cf = 9;
        const double value = -2.0;
        var hooked = new HookedSaeTransformer(model);
        hooked.AddSae(sae, useErrorTerm: true);
        // With the error term the output is x + (V − f)·W_dec[F].
        var delta = ((value - f[.., .., cf]).unsqueeze(-1) * InterventionTests.DecoderRow(sae, cf)).to(ScalarType.Float32);
        AssertAllClose(model.RunWithHooks(Toks, (hook, x => x + delta)),
            hooked.RunWithHooks(Toks, [new Clamp(sae, cf, value)]), 1e-4, "clamp to a negative value");
    }

    [Fact]
    public void The_loss_metric_is_the_mean_cross_entropy_of_each_position_against_the_next_token()
    {
        // Logits [1, 3, 4] and tokens [1, 3]: positions 0 and 1 predict tokens[1] = 2 and tokens[2] = 0; position 2
        // predicts nothing. CE = mean(lse(l_0) − l_0[2], lse(l_1) − l_1[0]), written out in doubles.
        double[][] l = [[0.5, -1.0, 2.0, 0.0], [1.5, 0.25, -0.5, 3.0], [9.0, -9.0, 0.0, 0.0]];
        using var logits = tensor(l.SelectMany(r => r).ToArray(), 1, 3, 4);
        using var tokens = tensor(new long[] { 3, 2, 0 }, 1, 3);
        static double Lse(double[] r) => Math.Log(r.Sum(Math.Exp));
        double expected = ((Lse(l[0]) - l[0][2]) + (Lse(l[1]) - l[1][0])) / 2;
        using var m = AttributionMetric.Loss.Evaluate(logits, tokens);
        Assert.Equal(expected, m.item<double>(), 12);
    }

    [Fact]
    public void Steering_an_sae_on_one_head_adds_the_decoder_row_to_that_head_only()
    {
        // An SAE with hook_head_index h reads hook_z[:, :, h, :]; steering it without splicing adds scale·W_dec[f] to
        // that head's z and leaves the other heads alone.
        using var model = Gpt2();
        string hook = "blocks.0.attn.hook_z";
        int dHead = model.Config.DHead;
        const int head = 2, feature = 3;
        const double scale = 5.0;
        using var sae = InterventionTests.RandomSae(hook, dHead, 8, 7);
        sae.Cfg.Metadata.HookHeadIndex = head;
        var v = (InterventionTests.DecoderRow(sae, feature) * scale).to(ScalarType.Float32);
        var expected = model.RunWithHooks(Toks, (hook, z =>
        {
            var edited = z.clone();
            edited[.., .., head] += v;
            return edited;
        }));
        var plain = new HookedSaeTransformer(model);
        AssertAllClose(expected, plain.RunWithHooks(Toks, [new Steering(sae, feature, scale)]), 1e-5, "steering head 2");
    }

    [Fact]
    public void Top_attributions_rank_by_magnitude_so_a_large_negative_attribution_comes_first()
    {
        // attribution [1, 2, 3]: the largest magnitude is −5 at (batch 0, position 1, feature 0), then 2 at (0, 0, 2).
        using var attr = tensor(new double[] { 0.5, -1.0, 2.0, -5.0, 0.25, 1.5 }, 1, 2, 3);
        using var acts = tensor(new double[] { 1, 2, 3, 4, 5, 6 }, 1, 2, 3);
        using var err = zeros(1, 2, dtype: ScalarType.Float64);
        using var r = new AttributionResult
        {
            MetricSpec = AttributionMetric.Logit(0), Metric = 0, Hooks = ["h"], Attribution = [attr.clone()],
            ErrorAttribution = [err.clone()], FeatureActs = [acts.clone()],
        };
        var top = r.Top(3);
        Assert.Equal(new AttributionEntry(0, 0, 1, 0, -5.0, 4.0), top[0]);
        Assert.Equal(new AttributionEntry(0, 0, 0, 2, 2.0, 3.0), top[1]);
        Assert.Equal(new AttributionEntry(0, 0, 1, 2, 1.5, 6.0), top[2]);
    }

    /// <summary>Every attribution cell of the HTML view is readable: WCAG 2 contrast (relative luminance of sRGB) of its
    /// text (the page's #222 unless the cell sets a colour) on its background at least 4.5:1, from the faintest to the
    /// largest attribution of either sign.</summary>
    [Fact]
    public void Attribution_html_cells_keep_their_text_readable_on_every_background()
    {
        var values = Enumerable.Range(-20, 41).Select(i => i / 20.0).ToArray();   // −1 … 1 of the largest |attribution|
        using var attr = tensor(values, 1, values.Length, 1);
        using var acts = ones(1, values.Length, 1, dtype: ScalarType.Float64);
        using var err = zeros(1, values.Length, dtype: ScalarType.Float64);
        using var r = new AttributionResult
        {
            MetricSpec = AttributionMetric.Logit(0), Metric = 0, Hooks = ["h"], Attribution = [attr.clone()],
            ErrorAttribution = [err.clone()], FeatureActs = [acts.clone()],
        };
        string dir = Directory.CreateTempSubdirectory("attr-html-").FullName;
        try
        {
            string path = Path.Combine(dir, "a.html");
            AttributionHtml.Write(path, r, [values.Select((_, i) => $"t{i}").ToList()], top: 1);
            var cells = System.Text.RegularExpressions.Regex.Matches(File.ReadAllText(path),
                @"<td style=""background:rgb\((\d+),(\d+),(\d+)\)(?:;color:#([0-9a-f]{3}))?""");
            Assert.True(cells.Count >= values.Length, $"{cells.Count} coloured cells");
            static double Lum(double r, double g, double b)
            {
                static double Lin(double c) { c /= 255; return c <= 0.03928 ? c / 12.92 : Math.Pow((c + 0.055) / 1.055, 2.4); }
                return 0.2126 * Lin(r) + 0.7152 * Lin(g) + 0.0722 * Lin(b);
            }
            foreach (System.Text.RegularExpressions.Match c in cells)
            {
                double bg = Lum(double.Parse(c.Groups[1].Value), double.Parse(c.Groups[2].Value), double.Parse(c.Groups[3].Value));
                double fg = !c.Groups[4].Success ? Lum(0x22, 0x22, 0x22)
                    : Lum(Convert.ToInt32(c.Groups[4].Value[..1], 16) * 17, Convert.ToInt32(c.Groups[4].Value[1..2], 16) * 17, Convert.ToInt32(c.Groups[4].Value[2..], 16) * 17);
                double ratio = (Math.Max(bg, fg) + 0.05) / (Math.Min(bg, fg) + 0.05);
                Assert.True(ratio >= 4.5, $"{c.Value}: contrast {ratio:F2}");
            }
        }
        finally { Directory.Delete(dir, true); }
    }

    [Fact]
    public void Integrated_gradients_of_each_of_two_saes_add_up_to_zeroing_that_sae_alone()
    {
        // Completeness per SAE: SAE i's integrated-gradient attributions sum to m(clean) − m(SAE i's features zeroed, the
        // other SAE and both error terms as in the clean run), up to the midpoint rule's quadrature error. Scaling the
        // other SAE's features along the path too would make them sum to the effect of zeroing both.
        using var model = Gpt2(nLayer: 2, seed: 6);
        using var sae0 = InterventionTests.RandomSae("blocks.0.hook_resid_post", 16, 32, 8, encBias: 0.0);
        using var sae1 = InterventionTests.RandomSae("blocks.1.hook_resid_pre", 16, 32, 9, encBias: 0.0);
        var hooked = new HookedSaeTransformer(model);
        hooked.AddSae(sae0, useErrorTerm: true);
        hooked.AddSae(sae1, useErrorTerm: true);
        var metric = AttributionMetric.LogitDiff(3, 7);
        using var ig = hooked.Attribute(Toks, metric, integratedGradientSteps: 24);
        double Zeroed(params int[] saes)
        {
            var hooks = saes.Select(i => (hooked.Saes[i].HookName(SaeSharp.Hooks.SaeHookPoints.ActsPost), (Func<Tensor, Tensor?>)(a => zeros_like(a)))).ToArray();
            return metric.Evaluate(hooked.RunWithHooks(Toks, null, hooks), Toks).item<float>();
        }
        double both = ig.Metric - Zeroed(0, 1);
        for (int i = 0; i < 2; i++)
        {
            double effect = ig.Metric - Zeroed(i);
            double sum = ig.Attribution[i].sum().item<float>();
            Assert.True(Math.Abs(sum - effect) < 0.02 * Math.Abs(effect) + 1e-3, $"SAE {i}: integrated gradients sum to {sum}, its ablation effect {effect}");
        }
        // The check means something for the upstream SAE: zeroing both differs from zeroing SAE 0 alone. (Not for SAE 1,
        // which replaces the whole residual stream entering block 1 by b_dec plus its clean error when zeroed.)
        double effect0 = ig.Metric - Zeroed(0);
        Assert.True(Math.Abs(both - effect0) > 0.1 * Math.Abs(effect0) + 1e-2, $"zeroing both SAEs ({both}) is not distinguishable from zeroing SAE 0 ({effect0})");
    }
}
