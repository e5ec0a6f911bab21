using SaeSharp.Analysis;
using SaeSharp.Pipelines;
using SaeSharp.Tokenizers;
using static TorchSharp.torch;

namespace SaeSharp.Tests.Analysis;

/// <summary>Sparse probing on the features' non-zeros (<see cref="SparseRows"/>) against the dense computation it replaced,
/// written out here on dense tensors.</summary>
public class SparseRowsTests
{
    /// <summary>[n, d] values in (0, 1] at <paramref name="density"/>, else 0, seeded.</summary>
    private static Tensor SparseNoise(int n, int d, double density, int seed)
    {
        var rng = new Random(seed);
        return tensor(Enumerable.Range(0, n * d).Select(_ => rng.NextDouble() < density ? (float)(1 - rng.NextDouble()) : 0f).ToArray()).view(n, d);
    }

    /// <summary>The dense computation of one task, as SparseProbing did it before holding features sparsely: accuracies,
    /// ranking and the all-feature probe.</summary>
    private static (Dictionary<int, double> TopK, int[] Order, double SaeAll, LogisticRegression? Probe) DenseTask(Tensor features,
        long[] trainRows, bool[] yTrain, long[] testRows, bool[] yTest, IReadOnlyList<int> kValues)
    {
        using var scope = NewDisposeScope();
        var fTrain = features.index_select(0, tensor(trainRows));
        var fTest = features.index_select(0, tensor(testRows));
        var order = SparseProbing.MeanDifferenceOrder(fTrain, yTrain, absolute: true);
        var topK = new Dictionary<int, double>();
        foreach (int k in kValues)
        {
            var idx = tensor(order.Take(k).Select(i => (long)i).ToArray());
            topK[k] = LogisticRegression.Fit(fTrain.index_select(1, idx), yTrain).Accuracy(fTest.index_select(1, idx), yTest);
        }
        var firing = fTrain.ne(0).any(0L).nonzero().squeeze(1);
        LogisticRegression probe = firing.shape[0] > trainRows.Length
            ? LogisticRegression.FitRepresenter(fTrain, yTrain, 1.0, 100, 1e-8, null, sparseGram: false) // dense column-block Gram
            : LogisticRegression.Fit(fTrain.index_select(1, firing), yTrain);
        double all = firing.shape[0] > trainRows.Length ? probe.Accuracy(fTest, yTest) : probe.Accuracy(fTest.index_select(1, firing), yTest);
        return (topK, order, all, firing.shape[0] > trainRows.Length ? probe : null);
    }

    private static void AssertSameAsDense(Tensor features, Tensor acts, int[][] labels, string[] names, bool[] fit, SparseProbingOptions options)
    {
        var report = SparseProbing.Evaluate(features, acts, labels, names, fit, options);
        Assert.NotEmpty(report.Tasks);
        var sparse = SparseRows.FromDense(features);
        foreach (var task in report.Tasks)
        {
            int l = Array.IndexOf(names, task.Label);
            var rng = new Random(options.Seed);
            var (trainRows, yTrain) = options.OneVsRestClasses ? SparseProbing.BalancedOneVsRest(labels, l, fit, true, options.TrainSetSize, rng)
                : SparseProbing.Balanced(labels, l, fit, true, options.TrainSetSize, rng);
            var (testRows, yTest) = options.OneVsRestClasses ? SparseProbing.BalancedOneVsRest(labels, l, fit, false, options.TestSetSize, rng)
                : SparseProbing.Balanced(labels, l, fit, false, options.TestSetSize, rng);
            var dense = DenseTask(features, trainRows, yTrain, testRows, yTest, options.KValues);
            Assert.Equal(dense.Order.Take(options.KValues.Max()), task.TopFeatures);
            foreach (int k in options.KValues) Assert.Equal(dense.TopK[k], task.SaeTopK[k], 1e-6);
            Assert.Equal(dense.SaeAll, task.SaeTestAccuracy!.Value, 1e-6);
            if (dense.Probe is { } p)
            {
                // The all-feature probe's weights from the non-zeros equal those from the dense Gram matrix.
                var fromRows = LogisticRegression.FitRepresenter(SparseColumns.FromRows(sparse.Select(trainRows)), yTrain, 1.0);
                Assert.Equal(p.Intercept, fromRows.Intercept, 1e-6);
                for (int j = 0; j < p.Coef.Length; j++) Assert.Equal(p.Coef[j], fromRows.Coef[j], 1e-6);
                Assert.Contains(p.Coef, w => w != 0);
            }
        }
    }

    [Fact]
    public void Rows_hold_exactly_the_non_zeros_and_give_the_dense_gram_matrix()
    {
        using var x = SparseNoise(300, 700, 0.03, 1);
        var rows = SparseRows.FromDense(x);
        Assert.Equal(x.count_nonzero().item<long>(), rows.NonZeros);
        using var back = rows.Dense([.. Enumerable.Range(0, 700)]);
        Assert.Equal(x.data<float>().ToArray(), back.to(ScalarType.Float32).data<float>().ToArray());
        using var some = rows.Dense([5, 3, 699]);
        Assert.Equal(x.index_select(1, tensor(new long[] { 5, 3, 699 })).data<float>().ToArray(), some.to(ScalarType.Float32).data<float>().ToArray());
        var columns = SparseColumns.FromRows(rows.Select([.. Enumerable.Range(0, 300).Select(i => (long)i)]));
        using var x64 = x.to(ScalarType.Float64);
        using var gram = columns.Gram();
        Assert.True(gram.allclose(x64.mm(x64.t()), rtol: 1e-12, atol: 1e-12));
        var diff = rows.MeanDifference([.. Enumerable.Range(0, 300).Select(i => i % 3 == 0)]);
        using var expected = x64.index_select(0, tensor(Enumerable.Range(0, 300).Where(i => i % 3 == 0).Select(i => (long)i).ToArray())).mean([0])
            .sub(x64.index_select(0, tensor(Enumerable.Range(0, 300).Where(i => i % 3 != 0).Select(i => (long)i).ToArray())).mean([0]));
        var e = expected.data<double>().ToArray();
        for (int j = 0; j < 700; j++) Assert.Equal(e[j], diff[j], 1e-12);
        var err = Assert.Throws<SaeSharpException>(() => rows.Dense([1, 1]));
        Assert.Contains("column 1 is repeated", err.Message);
        err = Assert.Throws<SaeSharpException>(() => rows.SetRows([0], x.narrow(0, 0, 2)));
        Assert.Contains("for 1 rows", err.Message);
    }

    [Fact]
    public void Sparse_probing_on_the_non_zeros_equals_the_dense_computation_on_random_data()
    {
        // 1200 rows, 900 features at 2 %: 300 training rows per task, so the all-feature probe takes the representer path
        // (more firing features than rows); a narrow matrix takes the dense slice of the firing columns.
        const int n = 1200;
        var labels = Enumerable.Range(0, n).Select(i => i % 3 == 0 ? new[] { 0 } : i % 5 == 1 ? new[] { 1 } : []).ToArray();
        var fit = Enumerable.Range(0, n).Select(i => (i / 50) % 2 == 0).ToArray();
        // Features that follow label 0 weakly, so the ranking is not arbitrary.
        using var noise = SparseNoise(n, 900, 0.02, 2);
        using var signal = tensor(labels.Select(l => l.Contains(0) ? 1f : 0f).ToArray()).view(n, 1).mul(SparseNoise(1, 900, 0.05, 3));
        using var features = noise.add(signal, TorchScalars.One);
        using var acts = SparseNoise(n, 12, 1.0, 4);
        var options = new SparseProbingOptions { KValues = [1, 2, 5, 10], TrainSetSize = 300, TestSetSize = 200, MinPositives = 20 };
        AssertSameAsDense(features, acts, labels, ["a", "b"], fit, options);
        using var narrow = features.narrow(1, 0, 40).contiguous();
        AssertSameAsDense(narrow, acts, labels, ["a", "b"], fit, options);
    }

    [Fact]
    public void Mean_pooled_probing_on_the_built_in_model_equals_the_dense_computation()
    {
        using var f = new AnalysisFixture();
        var (sae, pm) = ModelForSae.LoadWithSae(f.SaeDir, f.ModelDir);
        using var _s = sae;
        using var _m = pm;
        var tok = Tokenizer.FromFolder(f.ModelDir);
        string[] words = [" cat", " dog", " bird", " fish", " sun", " moon", " red"];
        var rng = new Random(5);
        var texts = Enumerable.Range(0, 160).Select(i => string.Concat(Enumerable.Range(0, 2 + i % 4).Select(_ => words[rng.Next(words.Length)]))).ToArray();
        var labels = texts.Select(t => new[] { t.Contains(" cat") ? 0 : 1 }).ToArray();
        var fit = Enumerable.Range(0, texts.Length).Select(i => i % 5 != 4).ToArray();
        var options = new TextProbingOptions { ContextSize = 8, BatchSize = 4 };
        using var pooled = TextProbing.Pool(sae, pm.Model, pm.Hooks, tok, texts, options);
        var (group, perSae, acts) = Assert.Single(TextProbing.PoolSparse([sae], pm.Model, pm.Hooks, tok, texts, options));
        var sparse = Assert.Single(perSae);
        using var _a = acts;
        Assert.Equal(pooled.Hook, group.Hook);
        Assert.Equal(pooled.Acts.data<float>().ToArray(), acts.data<float>().ToArray());
        using var back = sparse.Dense([.. Enumerable.Range(0, sparse.Columns)]);
        Assert.Equal(pooled.Features.data<float>().ToArray(), back.to(ScalarType.Float32).data<float>().ToArray());
        using var dense32 = sparse.ToDenseFloat32();
        Assert.Equal(pooled.Features.data<float>().ToArray(), dense32.data<float>().ToArray());
        AssertSameAsDense(pooled.Features, pooled.Acts, labels, ["cat", "other"], fit,
            new SparseProbingOptions { KValues = [1, 2], TrainSetSize = 100, TestSetSize = 30, MinPositives = 5, OneVsRestClasses = true });
    }
}
