using SaeSharp.Analysis;
using SaeSharp.Saes;
using static TorchSharp.torch;

namespace SaeSharp.Tests.Analysis;

public class TargetedProbePerturbationTests
{
    /// <summary>Pooled texts: each class's activation is (1 + 0.1·u)·Σ of the unit directions of its latents (u uniform in
    /// [0, 1)), the SAE's features exactly those values, W_dec the identity; 50 texts per class, 40 train and 10 test.</summary>
    private static (Tensor F, Tensor X, Tensor WDec, List<int[]> Labels, bool[] Fit) Planted(int[][] latentsOfType, int[][] labelsOfType, int dSae, int seed)
    {
        var rng = new Random(seed);
        var f = new List<float>();
        var labels = new List<int[]>();
        var fit = new List<bool>();
        for (int t = 0; t < latentsOfType.Length; t++)
            for (int i = 0; i < 50; i++)
            {
                var row = new float[dSae];
                float v = 1 + 0.1f * (float)rng.NextDouble();
                foreach (int k in latentsOfType[t]) row[k] = v;
                f.AddRange(row);
                labels.Add(labelsOfType[t]);
                fit.Add(i < 40);
            }
        var features = tensor(f.ToArray()).view(-1, dSae);
        var wDec = eye(dSae, dtype: ScalarType.Float32);
        return (features, features.matmul(wDec), wDec, labels, [.. fit]);
    }

    [Fact]
    public void One_latent_per_class_destroys_only_its_own_probe_so_the_total_metric_is_at_its_maximum()
    {
        // Classes a, b, c carried by latents 0, 1, 2; class "none" has activation 0 (so every probe must predict 0 as
        // negative, b < 0) and is a negative but no task; latent 3 never fires. Each probe separates its class perfectly
        // (clean 1). Class i's node effects are positive for latent i only (every other latent's mean is higher on the
        // negatives, clamped to 0), so at every n only latent i is ablated: class i's texts go to 0, its probe calls them
        // all negative (accuracy 1/2 on a balanced set) and no other probe changes (their negatives moved to 0, still
        // negative). Intended 1 − 1/2, unintended 0, total 1/2: the largest drop a probe at chance can show.
        var (f, x, w, labels, fit) = Planted([[0], [1], [2], []], [[0], [1], [2], [3]], 4, 1);
        var r = TargetedProbePerturbation.Evaluate(f, x, w, null, labels, ["a", "b", "c", "none"], fit,
            new SparseProbingOptions { OneVsRestClasses = true, MinPositives = 5, Labels = ["a", "b", "c"] }, new TppOptions { NValues = [1, 2, 4] });
        Assert.Equal(["a", "b", "c"], r.Classes.Select(c => c.Class));
        for (int i = 0; i < 3; i++)
        {
            var c = r.Classes[i];
            Assert.Equal(1.0, c.CleanAccuracy);
            foreach (int n in new[] { 1, 2, 4 })
            {
                Assert.Equal([i], c.Ablated[n]);
                for (int j = 0; j < 3; j++) Assert.Equal(j == i ? 0.5 : 1.0, c.AblatedAccuracies[n][j]);
            }
        }
        var m = r.Metrics();
        foreach (int n in new[] { 1, 2, 4 })
        {
            Assert.Equal(0.5, m[$"tpp_threshold_{n}_total_metric"], 12);
            Assert.Equal(0.5, m[$"tpp_threshold_{n}_intended_diff_only"], 12);
            Assert.Equal(0.0, m[$"tpp_threshold_{n}_unintended_diff_only"], 12);
        }
        f.Dispose(); x.Dispose(); w.Dispose();
    }

    [Fact]
    public void One_latent_carrying_two_labels_gives_a_large_unintended_difference()
    {
        // A labelled corpus: documents of type X carry labels a and b, both through latent 0; type Y carries c through
        // latent 1; type W has no label and activation 0. Ablating a's latent (0) sends X to 0: probe a and probe b
        // both fall to 1/2, probe c keeps 1. Class a: intended 1/2, unintended (1/2 + 0)/2 = 1/4, total 1/4; b alike;
        // c: intended 1/2, unintended 0, total 1/2. Means: total 1/3, intended 1/2, unintended 1/6.
        var (f, x, w, labels, fit) = Planted([[0], [1], []], [[0, 1], [2], []], 3, 2);
        var r = TargetedProbePerturbation.Evaluate(f, x, w, null, labels, ["a", "b", "c"], fit,
            new SparseProbingOptions { MinPositives = 5 }, new TppOptions { NValues = [2] });
        Assert.Equal([0], r.Classes[0].Ablated[2]);
        Assert.Equal([0], r.Classes[1].Ablated[2]);
        Assert.Equal([1], r.Classes[2].Ablated[2]);
        Assert.Equal([0.5, 0.5, 1.0], r.Classes[0].AblatedAccuracies[2]);
        Assert.Equal(0.25, r.ClassMetrics(0)["tpp_threshold_2_unintended_diff_only"], 12);
        Assert.Equal(0.25, r.ClassMetrics(1)["tpp_threshold_2_total_metric"], 12);
        Assert.Equal(0.5, r.ClassMetrics(2)["tpp_threshold_2_total_metric"], 12);
        var m = r.Metrics();
        Assert.Equal(1.0 / 3, m["tpp_threshold_2_total_metric"], 12);
        Assert.Equal(0.5, m["tpp_threshold_2_intended_diff_only"], 12);
        Assert.Equal(1.0 / 6, m["tpp_threshold_2_unintended_diff_only"], 12);
        f.Dispose(); x.Dispose(); w.Dispose();
    }

    [Fact]
    public void Node_effects_and_selection_follow_saebench_on_a_hand_example()
    {
        // Positives' mean f = (3, 0.5, 2), negatives' = (0.5, 2, 0.5): difference (2.5, −1.5, 1.5), clamped (2.5, 0, 1.5).
        // W_dec·w with w = (0.5, 1): (0.5, 1, −1.5). Effects (1.25, 0, −2.25).
        using var f = tensor(new float[] { 2, 0, 3, 4, 1, 1, 0, 3, 1, 1, 1, 0 }).view(4, 3);
        using var wDec = tensor(new float[] { 1, 0, 0, 1, 1, -2 }).view(3, 2);
        var e = TargetedProbePerturbation.NodeEffects(f, [true, true, false, false], wDec, [0.5, 1]);
        Assert.Equal(1.25, e[0], 12);
        Assert.Equal(0.0, e[1]);
        Assert.Equal(-2.25, e[2], 12);
        // select_top_n_features: the largest among the non-zero effects, a negative one too when n reaches it.
        Assert.Equal([0], TargetedProbePerturbation.TopNonZero(e, 1));
        Assert.Equal([0, 2], TargetedProbePerturbation.TopNonZero(e, 2));
        Assert.Equal([0, 2], TargetedProbePerturbation.TopNonZero(e, 3));
    }

    [Fact]
    public void Ablation_with_the_error_term_kept_subtracts_exactly_the_ablated_latents_decoder_rows()
    {
        // A standard SAE with random weights: per token, decode(f with S zeroed) + (x − decode(f)) (SAEBench's ablation)
        // equals x − Σ_{k∈S} f_k·W_dec[k]; mean pooling is linear, so ablating the pooled features moves the pooled
        // activation by the mean of those per-token changes.
        using var sae = new StandardSae(new SaeConfig { DIn = 4, DSae = 6 });
        using (no_grad())
        {
            manual_seed(3);
            sae.WDec.copy_(randn(6, 4));
        }
        using var dirs = TargetedProbePerturbation.AblationDirections(sae);
        Assert.True(allclose(dirs, sae.WDec.detach(), 1e-6, 1e-6));
        using var x = randn(5, 4);
        using var f = randn(5, 6).clamp_min(0);
        int[] s = [1, 4];
        using var fAbl = f.clone();
        fAbl.index_fill_(1, tensor(new long[] { 1, 4 }), 0);
        using var saebench = sae.Decode(fAbl).add(x.sub(sae.Decode(f)), TorchScalars.One);
        using var ours = TargetedProbePerturbation.Ablate(x, f, dirs, s);
        var xs = x.data<float>().ToArray();
        var fs = f.data<float>().ToArray();
        var ws = sae.WDec.detach().data<float>().ToArray();
        var o = ours.data<float>().ToArray();
        for (int t = 0; t < 5; t++)
            for (int j = 0; j < 4; j++)
                Assert.Equal(xs[t * 4 + j] - s.Sum(k => (double)fs[t * 6 + k] * ws[k * 4 + j]), o[t * 4 + j], 5);
        Assert.True(allclose(saebench, ours, 1e-5, 1e-5));
        using var poolF = f.mean([0], keepdim: true);
        using var poolX = x.mean([0], keepdim: true);
        using var pooled = TargetedProbePerturbation.Ablate(poolX, poolF, dirs, s);
        Assert.True(allclose(pooled, saebench.mean([0], keepdim: true), 1e-5, 1e-5));
    }

    [Fact]
    public void Bad_thresholds_and_too_few_classes_are_errors_naming_the_problem()
    {
        var (f, x, w, labels, fit) = Planted([[0], [1], [2], []], [[0], [1], [2], [3]], 4, 1);
        var o = new SparseProbingOptions { OneVsRestClasses = true, MinPositives = 5 };
        var names = new[] { "a", "b", "c", "none" };
        Assert.Contains("d_sae = 4", Assert.Throws<SaeSharpException>(() => TargetedProbePerturbation.Evaluate(f, x, w, null, labels, names, fit, o, new TppOptions { NValues = [2, 5] })).Message);
        Assert.Contains("positive", Assert.Throws<SaeSharpException>(() => TargetedProbePerturbation.Evaluate(f, x, w, null, labels, names, fit, o, new TppOptions { NValues = [0] })).Message);
        Assert.Contains("at least two classes", Assert.Throws<SaeSharpException>(() => TargetedProbePerturbation.Evaluate(f, x, w, null, labels, names, fit,
            o with { Labels = ["a"] }, new TppOptions())).Message);
        // Without n values, SAEBench's list up to d_sae: only 2 of 2, 5, 10, … fit 4 latents.
        Assert.Equal([2], TargetedProbePerturbation.Evaluate(f, x, w, null, labels, names, fit, o with { Labels = ["a", "b"] }, new TppOptions()).NValues);
        f.Dispose(); x.Dispose(); w.Dispose();
    }
}
