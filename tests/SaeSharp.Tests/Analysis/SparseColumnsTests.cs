using SaeSharp.Analysis;
using static TorchSharp.torch;

namespace SaeSharp.Tests.Analysis;

/// <summary>The representer probe's sparse products (<see cref="SparseColumns"/>) against plain double loops over the
/// dense matrix, and the probe fitted through them against the dense-block path.</summary>
public class SparseColumnsTests
{
    /// <summary>n × d values, each non-zero with probability <paramref name="density"/> (signed, in (−2, 2)), rows in
    /// <paramref name="emptyRows"/> and columns in <paramref name="deadColumns"/> all zero.</summary>
    private static double[] Random(int n, int d, double density, int seed, int[] emptyRows, int[] deadColumns)
    {
        var rng = new Random(seed);
        var x = new double[n * d];
        for (int i = 0; i < n; i++)
            for (int j = 0; j < d; j++)
                if (rng.NextDouble() < density) x[i * d + j] = (float)(rng.NextDouble() * 4 - 2);
        foreach (int i in emptyRows) Array.Clear(x, i * d, d);
        foreach (int j in deadColumns) for (int i = 0; i < n; i++) x[i * d + j] = 0;
        return x;
    }

    [Theory]
    [InlineData(600, 700, 0.03, ScalarType.Float32)]   // three row tiles, the last one partial
    [InlineData(257, 90, 0.4, ScalarType.Float64)]     // one row past a tile
    [InlineData(5, 3000, 0.001, ScalarType.Float32)]   // very sparse: most columns empty
    public void The_sparse_Gram_and_products_equal_plain_double_loops(int n, int d, double density, ScalarType dtype)
    {
        int[] emptyRows = [0, n / 2, n - 1], deadColumns = [1, d / 3, d - 1];
        var x = Random(n, d, density, 11, emptyRows, deadColumns);
        using var t = tensor(x).view(n, d).to(dtype);
        var columns = SparseColumns.FromDense(t);
        Assert.Equal(x.LongCount(v => v != 0), columns.NonZeros);
        using var k = columns.Gram();
        Assert.Equal(new long[] { n, n }, k.shape);
        var kv = k.data<double>().ToArray();
        for (int i = 0; i < n; i++)
            for (int l = 0; l < n; l++)
            {
                double exact = 0, scale = 0;
                for (int j = 0; j < d; j++)
                {
                    exact += x[i * d + j] * x[l * d + j];
                    scale += Math.Abs(x[i * d + j] * x[l * d + j]);
                }
                double got = kv[i * n + l];
                Assert.True(Math.Abs(got - exact) <= 1e-12 * scale, $"K[{i}, {l}] = {got}, loops {exact}");
                if (emptyRows.Contains(i) || emptyRows.Contains(l)) Assert.Equal(0.0, got);
            }
        var alpha = Enumerable.Range(0, n).Select(i => Math.Sin(i + 1.0)).ToArray();
        var xta = columns.TransposeTimes(alpha);
        var w = Enumerable.Range(0, d).Select(j => Math.Cos(j + 0.5)).ToArray();
        var xw = SparseColumns.RowDots(t, w, 0.25);
        for (int j = 0; j < d; j++)
        {
            double exact = 0, scale = 0;
            for (int i = 0; i < n; i++) { exact += x[i * d + j] * alpha[i]; scale += Math.Abs(x[i * d + j] * alpha[i]); }
            Assert.True(Math.Abs(xta[j] - exact) <= 1e-12 * scale, $"(Xᵀα)[{j}] = {xta[j]}, loops {exact}");
            if (deadColumns.Contains(j)) Assert.Equal(0.0, xta[j]);
        }
        for (int i = 0; i < n; i++)
        {
            double exact = 0.25, scale = 0.25;
            for (int j = 0; j < d; j++) { exact += x[i * d + j] * w[j]; scale += Math.Abs(x[i * d + j] * w[j]); }
            Assert.True(Math.Abs(xw[i] - exact) <= 1e-12 * scale, $"(Xw + b)[{i}] = {xw[i]}, loops {exact}");
        }
    }

    [Theory]
    [InlineData(300, 2000, 0.02, false)]
    [InlineData(120, 400, 0.1, true)]
    public void The_probe_fitted_from_the_non_zeros_equals_the_dense_block_fit(int n, int d, double density, bool weighted)
    {
        var x = Random(n, d, density, 5, [3, 7], [0, 10]);
        var y = new bool[n];
        for (int i = 0; i < n; i++) y[i] = x[i * d + 2] - x[i * d + 3] + 0.3 * Math.Sin(i) > 0;
        using var t = tensor(x).view(n, d).to(ScalarType.Float32);
        double[]? sw = weighted ? LogisticRegression.BalancedWeights(y) : null;
        var sparse = LogisticRegression.FitRepresenter(t, y, 1.0, 100, 1e-8, sw, sparseGram: true);
        var dense = LogisticRegression.FitRepresenter(t, y, 1.0, 100, 1e-8, sw, sparseGram: false);
        for (int j = 0; j < d; j++) Assert.Equal(dense.Coef[j], sparse.Coef[j], 1e-6);
        Assert.Equal(dense.Intercept, sparse.Intercept, 1e-6);
        Assert.Equal(0.0, sparse.Coef[0]);
        Assert.Equal(0.0, sparse.Coef[10]);
        // Auto takes the sparse path here (density ≤ 25 %) and the decision function skips zeros: the same scores as w·x + b.
        var auto = LogisticRegression.Fit(t, y, sampleWeight: sw);
        for (int j = 0; j < d; j++) Assert.Equal(sparse.Coef[j], auto.Coef[j], 12);
        var scores = auto.DecisionFunction(t);
        for (int i = 0; i < n; i++)
        {
            double z = auto.Intercept;
            for (int j = 0; j < d; j++) z += auto.Coef[j] * (float)x[i * d + j];
            Assert.Equal(z, scores[i], 1e-9);
        }
    }
}
