using SaeSharp.Analysis;
using static TorchSharp.torch;

namespace SaeSharp.Tests.Analysis;

public class FeatureAbsorptionTests
{
    private const int N = 20000, D = 16;

    /// <summary>
    /// Tokens i with i % 10 == 0 carry cat:colour; of those, i % 50 == 0 are "child" words, child c = (i / 50) % 10.
    /// Model activations and SAE latents are built exactly: a parent token is a·e0 with latent 0 = a; a child token is
    /// a·(e0 + e_{1+c})/√2 with latent 1+c = a (and latent 0 silent when <paramref name="absorbed"/>; in the clean case
    /// child tokens are parent tokens); any other token is a·e_m, m = 11 + i % 5, with latent m = a. W_dec row j is
    /// latent j's unit direction. Blocks of 100 tokens alternate between the halves.
    /// </summary>
    private static (Tensor F, Tensor X, Tensor WDec, int[][] Labels, bool[] Fit) Planted(bool absorbed)
    {
        var rng = new Random(21);
        var f = new float[N * D];
        var x = new float[N * D];
        var tl = new int[N][];
        float s = 1 / MathF.Sqrt(2);
        for (int i = 0; i < N; i++)
        {
            float a = 1f + (float)rng.NextDouble();
            tl[i] = i % 10 == 0 ? [0] : [];
            if (i % 50 == 0 && absorbed)
            {
                int latent = 1 + (i / 50) % 10;
                f[i * D + latent] = a;
                x[i * D] = a * s;
                x[i * D + latent] = a * s;
            }
            else if (i % 10 == 0)
            {
                f[i * D] = a;
                x[i * D] = a;
            }
            else
            {
                int m = 11 + i % 5;
                f[i * D + m] = a;
                x[i * D + m] = a;
            }
        }
        var w = new float[D * D];
        w[0] = 1;
        for (int c = 1; c <= 10; c++) { w[c * D] = s; w[c * D + c] = s; }
        for (int m = 11; m < D; m++) w[m * D + m] = 1;
        return (tensor(f).view(N, D), tensor(x).view(N, D), tensor(w).view(D, D), tl, [.. Enumerable.Range(0, N).Select(i => (i / 100) % 2 == 0)]);
    }

    [Fact]
    public void A_planted_child_latent_that_fires_instead_of_the_parent_is_full_absorption()
    {
        var (f, x, w, tl, fit) = Planted(absorbed: true);
        using (f) using (x) using (w)
        {
            var r = FeatureAbsorption.Evaluate(f, x, w, tl, ["cat:colour"], fit, new AbsorptionOptions { Labels = ["cat:colour"] });
            var l = Assert.Single(r.Labels);
            // The model probe separates the label exactly: every evaluation-half colour token is a true positive.
            var evalColour = Enumerable.Range(0, N).Where(i => !fit[i] && i % 10 == 0).ToArray();
            Assert.Equal(1.0, l.ProbeF1);
            Assert.Equal(evalColour.Length, l.ProbeTruePositives);
            // k = 1 (latent 0) reaches F1 = 2·0.8/1.8; one child latent adds 2 % of recall, less than the 0.03 jump.
            Assert.Equal([0], l.MainLatents);
            Assert.Equal(2 * 0.8 / 1.8, l.SparseF1[0], 9);
            // Each child token: latent 0 silent, its child latent carries all of the probe projection → fraction 1, full.
            // Each parent token: latent 0 carries it all → fraction 0. Rate = child tokens / colour tokens = 1/5.
            int children = evalColour.Count(i => i % 50 == 0);
            Assert.Equal(0.2, (double)children / evalColour.Length, 12);
            Assert.Equal(children, l.FullAbsorptions);
            Assert.Equal(0.2, l.FullAbsorptionRate, 12);
            Assert.Equal(0.2, l.MeanAbsorptionFraction, 12);
            Assert.Equal(0.2, r.MeanFullAbsorptionScore, 12);
            Assert.Equal(1.0, r.MeanNumSplitFeatures);
            // The absorbers are the child latents, each on its own words.
            Assert.All(l.TopAbsorbers, a => Assert.InRange(a.Latent, 1, 10));
            var top = l.TopAbsorbers[0];
            Assert.Equal(evalColour.Count(i => i % 50 == 0 && 1 + (i / 50) % 10 == top.Latent), top.Count);
        }
    }

    [Fact]
    public void A_clean_parent_latent_shows_no_absorption()
    {
        var (f, x, w, tl, fit) = Planted(absorbed: false);
        using (f) using (x) using (w)
        {
            var l = Assert.Single(FeatureAbsorption.Evaluate(f, x, w, tl, ["cat:colour"], fit, new AbsorptionOptions { Labels = ["cat:colour"] }).Labels);
            Assert.Equal([0], l.MainLatents);
            Assert.Equal(1.0, l.SparseF1[0]);
            Assert.Equal(0, l.FullAbsorptions);
            Assert.Equal(0.0, l.MeanAbsorptionFraction);
            Assert.Empty(l.TopAbsorbers);
        }
    }

    [Fact]
    public void Partial_absorption_follows_saebenchs_fraction_formula()
    {
        // Probe projection of the activation 1.0; main latent 0: act 0.5, cos 0.6 → 0.3; latent 1: act 1.0, cos 0.5 → 0.5
        // (an absorber: cos ≥ 0.1); latent 2: act 2, cos 0.05 → 0.1 (cos below 0.1: not an absorber).
        // Absorbers 0.5 ≥ 0.4 of 1.0; unaccounted 1.0 − 0.3 = 0.7; absorbed min(0.5, 0.7) = 0.5; fraction 0.5 / (0.5 + 0.3).
        double[] acts = [0.5, 1.0, 2.0];
        double[] cos = [0.6, 0.5, 0.05];
        var (fraction, full, top) = FeatureAbsorption.Score(acts, cos, 1.0, [0], new AbsorptionOptions());
        Assert.Equal(0.625, fraction, 12);
        Assert.False(full); // the main latent fired
        Assert.Equal(1, top);
        // Main latent silent: full absorption when the top latent holds ≥ 0.4 of the projection (0.5 here).
        (fraction, full, top) = FeatureAbsorption.Score([0, 1.0, 2.0], cos, 1.0, [0], new AbsorptionOptions());
        Assert.Equal(1.0, fraction);
        Assert.True(full);
        // ... and not when it holds less (0.5 of 1.5).
        (_, full, _) = FeatureAbsorption.Score([0, 1.0, 2.0], cos, 1.5, [0], new AbsorptionOptions());
        Assert.False(full);
    }
    [Fact]
    public void Main_latents_are_picked_by_the_L1_probe_not_by_the_difference_of_class_means()
    {
        // Feature 0 is large and overlapping (positives 0..20, negatives 0..16: mean difference 2); feature 1 is small but
        // separates the classes (0.1 on positives, 0 elsewhere: mean difference 0.1); feature 2 is dead. The class-mean
        // order puts 0 first; SAEBench's L1 probe puts its weight on 1.
        var rng = new Random(2);
        int n = 2000;
        var x = new float[n * 3];
        var y = new bool[n];
        for (int i = 0; i < n; i++)
        {
            y[i] = i % 4 == 0;
            x[3 * i] = (float)(rng.NextDouble() * (y[i] ? 20 : 16));
            x[3 * i + 1] = y[i] ? 0.1f : 0f;
        }
        using var t = TorchSharp.torch.tensor(x).view(n, 3);
        Assert.Equal(0, SparseProbing.MeanDifferenceOrder(t, y, absolute: false)[0]);
        Assert.Equal([1, 0, 2], FeatureAbsorption.L1Order(SparseRows.FromDense(t), y, 0.01));
    }
}
