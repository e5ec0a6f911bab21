using SaeSharp.Analysis;
using static TorchSharp.torch;

namespace SaeSharp.Tests.Analysis;

public class SparseProbingTests
{
    private const int N = 8000;
    private static readonly string[] Labels = ["cat:colour", "ctx:in_quote", "cat:rare"];

    /// <summary>colour on every 4th token, in_quote on a third, rare on 30 tokens; blocks of 100 tokens alternate halves.</summary>
    private static (int[][] TokenLabels, bool[] Fit) Tokens()
    {
        var tl = new int[N][];
        for (int i = 0; i < N; i++)
        {
            var ls = new List<int>();
            if (i % 4 == 0) ls.Add(0);
            if (i % 3 == 1) ls.Add(1);
            if (i % 267 == 5) ls.Add(2);
            tl[i] = [.. ls];
        }
        return (tl, [.. Enumerable.Range(0, N).Select(i => (i / 100) % 2 == 0)]);
    }

    /// <summary>[N, d] random values in [0, 1), seeded.</summary>
    private static Tensor Noise(int d, int seed)
    {
        var rng = new Random(seed);
        return tensor(Enumerable.Range(0, N * d).Select(_ => (float)rng.NextDouble()).ToArray()).view(N, d);
    }

    [Fact]
    public void A_feature_that_is_the_label_gives_top_1_accuracy_one()
    {
        var (tl, fit) = Tokens();
        var rng = new Random(7);
        // 32 features of noise, except feature 9: 1..2 on colour tokens, 0 elsewhere (an SAE latent that is the label).
        var f = new float[N * 32];
        for (int i = 0; i < N; i++)
            for (int j = 0; j < 32; j++)
                f[i * 32 + j] = j == 9 ? (tl[i].Contains(0) ? 1f + (float)rng.NextDouble() : 0f) : (float)rng.NextDouble();
        using var features = tensor(f).view(N, 32);
        using var model = Noise(8, 8);
        var r = SparseProbing.Evaluate(features, model, tl, Labels, fit, new SparseProbingOptions { Labels = ["cat:colour"], KValues = [1, 2, 5] });
        var t = Assert.Single(r.Tasks);
        Assert.Equal("cat:colour", t.Label);
        Assert.Equal(9, t.TopFeatures[0]);
        Assert.Equal(1.0, t.SaeTopK[1]);
        Assert.Equal(1.0, t.SaeTopK[5]);
        // Balanced sets: 1000 colour tokens per half, so 2·1000 training examples and 2·500 test examples.
        Assert.Equal(2000, t.TrainExamples);
        Assert.Equal(1000, t.TestExamples);
        // The model activations are noise: near the majority rate of a balanced set.
        Assert.InRange(t.LlmTestAccuracy, 0.42, 0.58);
        Assert.Equal(1.0, r.Means()["sae_top_1_test_accuracy"]);
    }

    [Fact]
    public void Sae_test_accuracy_is_the_probe_on_every_feature_and_dead_features_change_nothing()
    {
        var (tl, fit) = Tokens();
        // Feature 3 and feature 5 each carry half of the label: colour tokens with an even index fire 3, odd ones 5, so
        // neither alone separates the classes and the probe on all features (top 1 cannot) must use both. Features 0..2
        // are dead (0 everywhere), the others noise.
        var f = new float[N * 12];
        var rng = new Random(3);
        for (int i = 0; i < N; i++)
            for (int j = 3; j < 12; j++)
                f[i * 12 + j] = j == 3 ? (tl[i].Contains(0) && i % 8 == 0 ? 1f : 0f) : j == 5 ? (tl[i].Contains(0) && i % 8 == 4 ? 1f : 0f) : 0.01f * (float)rng.NextDouble();
        using var features = tensor(f).view(N, 12);
        using var model = Noise(4, 8);
        var options = new SparseProbingOptions { Labels = ["cat:colour"], KValues = [1] };
        var t = Assert.Single(SparseProbing.Evaluate(features, model, tl, Labels, fit, options).Tasks);
        Assert.Equal(1.0, t.SaeTestAccuracy);
        Assert.InRange(t.SaeTopK[1], 0.70, 0.80); // one of the two halves: 3/4 right
        Assert.Equal(9, t.SaeProbeFeatures);
        // The same probe fitted by hand on all 12 columns of the same balanced sets (dead ones included) predicts the same.
        var rng2 = new Random(options.Seed);
        var (trainRows, yTrain) = SparseProbing.Balanced(tl, 0, fit, true, options.TrainSetSize, rng2);
        var (testRows, yTest) = SparseProbing.Balanced(tl, 0, fit, false, options.TestSetSize, rng2);
        using var scope = NewDisposeScope();
        var whole = LogisticRegression.Fit(features.index_select(0, tensor(trainRows)), yTrain, 1.0);
        Assert.All(whole.Coef.Take(3), w => Assert.True(Math.Abs(w) < 1e-9, $"a dead feature's weight {w}"));
        Assert.Equal(whole.Accuracy(features.index_select(0, tensor(testRows)), yTest), t.SaeTestAccuracy);
        // Probing leaves no live tensor behind on this thread (every probe's tensors are freed by its scope).
        long live = TorchSharp.DisposeScopeManager.Statistics.ThreadTotalLiveCount;
        SparseProbing.Evaluate(features, model, tl, Labels, fit, options with { KValues = [1, 2] });
        Assert.Equal(live, TorchSharp.DisposeScopeManager.Statistics.ThreadTotalLiveCount);
        // With 6 training examples the (at least 7) firing features outnumber them: the probe is fitted in the examples' span on all 12
        // columns and predicts as primal Newton's on the firing columns of the same balanced sets.
        var wide = options with { TrainSetSize = 6, TestSetSize = 40 };
        var tw = Assert.Single(SparseProbing.Evaluate(features, model, tl, Labels, fit, wide).Tasks);
        Assert.Equal(6, tw.TrainExamples);
        Assert.True(tw.SaeProbeFeatures > 6, $"{tw.SaeProbeFeatures} firing");
        var rng3 = new Random(options.Seed);
        var (trw, ytw) = SparseProbing.Balanced(tl, 0, fit, true, 6, rng3);
        var (tew, yew) = SparseProbing.Balanced(tl, 0, fit, false, 40, rng3);
        var fw = features.index_select(0, tensor(trw));
        var firing = fw.ne(0).any(0L).nonzero().squeeze(1);
        var primal = LogisticRegression.Fit(fw.index_select(1, firing), ytw, 1.0, solver: LogisticSolver.Newton);
        Assert.Equal(primal.Accuracy(features.index_select(0, tensor(tew)).index_select(1, firing), yew), tw.SaeTestAccuracy);
    }

    [Fact]
    public void Random_features_probe_near_the_majority_rate_and_the_model_can_carry_the_label()
    {
        var (tl, fit) = Tokens();
        using var features = Noise(64, 11);
        // The model's dimension 3 is 1 on in_quote tokens and 0 elsewhere, plus noise on every dimension.
        var rng = new Random(12);
        var m = new float[N * 8];
        for (int i = 0; i < N; i++)
            for (int j = 0; j < 8; j++)
                m[i * 8 + j] = 0.3f * (float)rng.NextDouble() + (j == 3 && tl[i].Contains(1) ? 1f : 0f);
        using var model = tensor(m).view(N, 8);
        var r = SparseProbing.Evaluate(features, model, tl, Labels, fit, new SparseProbingOptions());
        // cat:rare has 30 tokens: too few for a task at the default minimum of 50 per half.
        Assert.Equal(["cat:colour", "ctx:in_quote"], r.Tasks.Select(t => t.Label));
        foreach (var t in r.Tasks)
            foreach (var (k, acc) in t.SaeTopK)
                Assert.InRange(acc, 0.42, 0.60);
        var q = r.Tasks[1];
        Assert.Equal(1.0, q.LlmTestAccuracy);
        Assert.Equal(1.0, q.LlmTopK[1]);
        Assert.Equal(["llm_test_accuracy", "llm_top_1_test_accuracy", "llm_top_2_test_accuracy", "llm_top_5_test_accuracy", "llm_top_10_test_accuracy",
                      "llm_top_20_test_accuracy", "llm_top_50_test_accuracy", "sae_test_accuracy", "sae_top_1_test_accuracy", "sae_top_2_test_accuracy", "sae_top_5_test_accuracy",
                      "sae_top_10_test_accuracy", "sae_top_20_test_accuracy", "sae_top_50_test_accuracy"], r.Means().Keys);
    }

    [Fact]
    public void A_label_without_enough_tokens_is_refused_by_name()
    {
        var (tl, fit) = Tokens();
        using var features = Noise(4, 1);
        using var model = Noise(4, 2);
        var e = Assert.Throws<SaeSharpException>(() => SparseProbing.Evaluate(features, model, tl, Labels, fit, new SparseProbingOptions { Labels = ["cat:rare"] }));
        Assert.Contains("cat:rare", e.Message);
        e = Assert.Throws<SaeSharpException>(() => SparseProbing.Evaluate(features, model, tl, Labels, fit, new SparseProbingOptions { Labels = ["cat:nothing"] }));
        Assert.Contains("cat:nothing", e.Message);
        e = Assert.Throws<SaeSharpException>(() => SparseProbing.Evaluate(features, model, tl, Labels, fit, new SparseProbingOptions { Labels = ["cat:colour", "cat:coluor"] }));
        Assert.Contains("label 'cat:coluor' is on no token read (did you mean 'cat:colour'?)", e.Message);
    }
}
