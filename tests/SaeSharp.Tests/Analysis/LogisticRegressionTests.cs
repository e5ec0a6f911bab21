using SaeSharp.Analysis;
using static TorchSharp.torch;

namespace SaeSharp.Tests.Analysis;

public class LogisticRegressionTests
{
    [Fact]
    public void Separable_data_is_classified_without_error()
    {
        var rng = new Random(3);
        int n = 400;
        var x = new float[n * 2];
        var y = new bool[n];
        for (int i = 0; i < n; i++)
        {
            y[i] = i % 2 == 0;
            x[2 * i] = (float)(y[i] ? 0.5 + rng.NextDouble() : -0.5 - rng.NextDouble()); // a margin of 1 on the first column
            x[2 * i + 1] = (float)(rng.NextDouble() * 4 - 2);
        }
        using var t = tensor(x).view(n, 2);
        var probe = LogisticRegression.Fit(t, y);
        Assert.Equal(1.0, probe.Accuracy(t, y));
        Assert.True(probe.Coef[0] > 0);
    }

    [Fact]
    public void The_one_dimensional_symmetric_case_meets_its_closed_form()
    {
        // n points at x = +1 with y = 1 and n at x = −1 with y = 0. By symmetry b = 0, and ∂/∂w of
        // ½w² + C·Σ log(1 + e^{z}) − y·z is w − 2·C·n·σ(−w) = 0: solved here by bisection.
        const int n = 5;
        const double c = 0.3;
        double lo = 0, hi = 10;
        for (int i = 0; i < 200; i++)
        {
            double mid = 0.5 * (lo + hi);
            if (mid - 2 * c * n / (1 + Math.Exp(mid)) > 0) hi = mid; else lo = mid;
        }
        using var x = tensor(Enumerable.Range(0, 2 * n).Select(i => i < n ? 1f : -1f).ToArray()).view(2 * n, 1);
        var probe = LogisticRegression.Fit(x, [.. Enumerable.Range(0, 2 * n).Select(i => i < n)], c);
        Assert.Equal(lo, probe.Coef[0], 9);
        Assert.Equal(0.0, probe.Intercept, 9);
    }

    [Fact]
    public void Overlapping_classes_match_a_plain_newton_reference_and_zero_the_gradient()
    {
        var rng = new Random(5);
        int n = 60, d = 3;
        var x = new double[n, d];
        var y = new bool[n];
        for (int i = 0; i < n; i++)
        {
            for (int j = 0; j < d; j++) x[i, j] = rng.NextDouble() * 2 - 1;
            y[i] = rng.NextDouble() < 1 / (1 + Math.Exp(-(2 * x[i, 0] - x[i, 1] + 0.3)));
        }
        const double c = 2.0;
        var reference = NewtonReference(x, y, c);
        using var t = tensor(Enumerable.Range(0, n * d).Select(k => (float)x[k / d, k % d]).ToArray()).view(n, d);
        var probe = LogisticRegression.Fit(t, y, c);
        double[] beta = [.. probe.Coef, probe.Intercept];
        // The data reach the probe as float32: compare with the reference on the same rounded values.
        for (int j = 0; j <= d; j++) Assert.Equal(reference[j], beta[j], 5);
        // Optimality: w + C·Σ (σ(z) − y)·x = 0 and Σ (σ(z) − y) = 0.
        var g = Gradient(RoundToSingle(x), y, c, beta);
        Assert.All(g, v => Assert.True(Math.Abs(v) < 1e-5, $"gradient {v}"));
    }

    [Fact]
    public void Integer_sample_weights_fit_as_repeated_rows()
    {
        var rng = new Random(9);
        int n = 50;
        var x = Enumerable.Range(0, 2 * n).Select(_ => (float)(rng.NextDouble() * 2 - 1)).ToArray();
        var y = Enumerable.Range(0, n).Select(i => rng.NextDouble() < 0.5 + 0.4 * x[2 * i]).ToArray();
        var w = Enumerable.Range(0, n).Select(i => (double)(1 + i % 3)).ToArray();
        var rx = new List<float>();
        var ry = new List<bool>();
        for (int i = 0; i < n; i++)
            for (int r = 0; r < w[i]; r++) { rx.Add(x[2 * i]); rx.Add(x[2 * i + 1]); ry.Add(y[i]); }
        using var t = tensor(x).view(n, 2);
        using var repeated = tensor(rx.ToArray()).view(-1, 2);
        var weighted = LogisticRegression.Fit(t, y, sampleWeight: w);
        var plain = LogisticRegression.Fit(repeated, [.. ry]);
        Assert.Equal(plain.Coef[0], weighted.Coef[0], 8);
        Assert.Equal(plain.Coef[1], weighted.Coef[1], 8);
        Assert.Equal(plain.Intercept, weighted.Intercept, 8);
        // class_weight="balanced": each class's weights sum to n / 2.
        var b = LogisticRegression.BalancedWeights([true, false, false, false]);
        Assert.Equal([2.0, 2.0 / 3, 2.0 / 3, 2.0 / 3], b);
    }

    private static double[,] RoundToSingle(double[,] x)
    {
        var r = (double[,])x.Clone();
        for (int i = 0; i < x.GetLength(0); i++) for (int j = 0; j < x.GetLength(1); j++) r[i, j] = (float)x[i, j];
        return r;
    }

    private static double[] Gradient(double[,] x, bool[] y, double c, double[] beta)
    {
        int n = x.GetLength(0), d = x.GetLength(1);
        var g = new double[d + 1];
        for (int j = 0; j < d; j++) g[j] = beta[j];
        for (int i = 0; i < n; i++)
        {
            double z = beta[d];
            for (int j = 0; j < d; j++) z += beta[j] * x[i, j];
            double r = c * (1 / (1 + Math.Exp(-z)) - (y[i] ? 1 : 0));
            for (int j = 0; j < d; j++) g[j] += r * x[i, j];
            g[d] += r;
        }
        return g;
    }

    /// <summary>Newton's method on plain arrays with Gauss–Jordan elimination, 50 full steps from zero.</summary>
    private static double[] NewtonReference(double[,] x0, bool[] y, double c)
    {
        var x = RoundToSingle(x0);
        int n = x.GetLength(0), d = x.GetLength(1), m = d + 1;
        var beta = new double[m];
        for (int it = 0; it < 50; it++)
        {
            var g = Gradient(x, y, c, beta);
            var h = new double[m, m + 1];
            for (int j = 0; j < d; j++) h[j, j] = 1;
            for (int i = 0; i < n; i++)
            {
                double z = beta[d];
                for (int j = 0; j < d; j++) z += beta[j] * x[i, j];
                double p = 1 / (1 + Math.Exp(-z)), w = c * p * (1 - p);
                for (int a = 0; a < m; a++)
                    for (int b = 0; b < m; b++)
                        h[a, b] += w * (a < d ? x[i, a] : 1) * (b < d ? x[i, b] : 1);
            }
            for (int a = 0; a < m; a++) h[a, m] = g[a];
            for (int col = 0; col < m; col++)
            {
                double piv = h[col, col];
                for (int b = 0; b <= m; b++) h[col, b] /= piv;
                for (int r = 0; r < m; r++)
                {
                    if (r == col) continue;
                    double f = h[r, col];
                    for (int b = 0; b <= m; b++) h[r, b] -= f * h[col, b];
                }
            }
            for (int a = 0; a < m; a++) beta[a] -= h[a, m];
        }
        return beta;
    }
    [Theory]
    [InlineData(0.1)]
    [InlineData(0.3)]
    [InlineData(0.6)]
    public void The_L1_probe_meets_the_one_dimensional_soft_threshold_closed_form(double lambda)
    {
        // n points at x = +1 with y = 1 and n at x = −1 with y = 0: b = 0 by symmetry and every row's loss is
        // log(1 + e^{−w}), so the objective is log(1 + e^{−w}) + λ|w|. For λ < ½ its minimum has σ(−w) = λ,
        // w = ln((1 − λ)/λ); for λ ≥ ½ the slope at 0 (−½ + λ) is not negative and w = 0 exactly.
        const int n = 6;
        using var x = tensor(Enumerable.Range(0, 2 * n).Select(i => i < n ? 1f : -1f).ToArray()).view(2 * n, 1);
        bool[] y = [.. Enumerable.Range(0, 2 * n).Select(i => i < n)];
        var probe = LogisticRegression.FitL1(x, y, lambda);
        double expected = lambda < 0.5 ? Math.Log((1 - lambda) / lambda) : 0;
        Assert.Equal(expected, probe.Coef[0], 5);
        Assert.Equal(0, probe.Intercept, 5);
        if (lambda >= 0.5) Assert.Equal(0.0, probe.Coef[0]); // soft-thresholding gives an exact zero
    }

    [Fact]
    public void The_L1_probe_reaches_the_brute_force_minimum_of_a_tiny_problem()
    {
        // 14 rows, 2 columns, positive rows weighted as SAEBench's pos_weight: the objective minimised over a grid of
        // (w1, w2, b) refined around its best point, against FitL1's optimum.
        var rng = new Random(11);
        int n = 14;
        var xs = new double[n, 2];
        var y = new bool[n];
        for (int i = 0; i < n; i++)
        {
            y[i] = i % 3 == 0;
            xs[i, 0] = (y[i] ? 1.0 : 0.0) + rng.NextDouble() * 1.5 - 0.5;
            xs[i, 1] = rng.NextDouble() * 2 - 1;
        }
        var sw = LogisticRegression.PosWeights(y);
        Assert.Equal(9.0 / 5, sw[0], 12); // 5 positives, 9 negatives
        const double lambda = 0.05;
        double F(double w1, double w2, double b)
        {
            double s = 0;
            for (int i = 0; i < n; i++)
            {
                double z = w1 * xs[i, 0] + w2 * xs[i, 1] + b;
                s += sw[i] * (Math.Log(1 + Math.Exp(z)) - (y[i] ? z : 0));
            }
            return s / n + lambda * (Math.Abs(w1) + Math.Abs(w2));
        }
        double c1 = 0, c2 = 0, cb = 0, half = 8, best = F(0, 0, 0);
        for (int level = 0; level < 40; level++)
        {
            double h = half / 10, b1 = c1, b2 = c2, bb = cb;
            for (int i = -10; i <= 10; i++)
                for (int j = -10; j <= 10; j++)
                    for (int k = -10; k <= 10; k++)
                    {
                        double v = F(c1 + i * h, c2 + j * h, cb + k * h);
                        if (v < best) { best = v; b1 = c1 + i * h; b2 = c2 + j * h; bb = cb + k * h; }
                    }
            (c1, c2, cb) = (b1, b2, bb);
            half *= 0.6;
        }
        using var x = tensor(Enumerable.Range(0, n).SelectMany(i => new[] { (float)xs[i, 0], (float)xs[i, 1] }).ToArray()).view(n, 2);
        var probe = LogisticRegression.FitL1(x, y, lambda, LogisticRegression.PosWeights(y));
        // x was rounded to float32 for the probe: compare the objective on the grid's inputs, then the point.
        double got = F(probe.Coef[0], probe.Coef[1], probe.Intercept);
        Assert.InRange(got - best, -1e-6, 1e-6);
        Assert.Equal(c1, probe.Coef[0], 2);
        Assert.Equal(c2, probe.Coef[1], 2);
        Assert.Equal(cb, probe.Intercept, 2);
    }

    [Fact]
    public void The_L1_probe_keeps_the_planted_columns_and_zeroes_the_rest()
    {
        // 30 columns of noise; the label is carried by columns 4 and 17 (logit 4·x4 + 4·x17 − 4); column 25 is 0 everywhere.
        var rng = new Random(5);
        int n = 3000, d = 30;
        var x = new float[n * d];
        var y = new bool[n];
        for (int i = 0; i < n; i++)
        {
            for (int j = 0; j < d; j++) x[i * d + j] = j == 25 ? 0f : (float)rng.NextDouble();
            double logit = 4 * x[i * d + 4] + 4 * x[i * d + 17] - 4;
            y[i] = rng.NextDouble() < 1 / (1 + Math.Exp(-logit));
        }
        using var t = tensor(x).view(n, d);
        var probe = LogisticRegression.FitL1(t, y, 0.01, LogisticRegression.PosWeights(y));
        var top = Enumerable.Range(0, d).OrderByDescending(j => probe.Coef[j]).Take(2).Order().ToArray();
        Assert.Equal([4, 17], top);
        Assert.Equal(0.0, probe.Coef[25]);
        int zeros = Enumerable.Range(0, d).Count(j => j != 4 && j != 17 && probe.Coef[j] == 0);
        Assert.True(zeros >= 20, $"{zeros} of 28 noise columns are exactly 0");
        // Optimality (KKT) of the L1 problem: |∂smooth/∂w_j| ≤ λ where w_j = 0, = −λ·sign(w_j) elsewhere.
        var sw = LogisticRegression.PosWeights(y);
        var grad = new double[d];
        for (int i = 0; i < n; i++)
        {
            double z = probe.Intercept;
            for (int j = 0; j < d; j++) z += probe.Coef[j] * x[i * d + j];
            double r = sw[i] * (1 / (1 + Math.Exp(-z)) - (y[i] ? 1 : 0)) / n;
            for (int j = 0; j < d; j++) grad[j] += r * x[i * d + j];
        }
        for (int j = 0; j < d; j++)
            if (probe.Coef[j] == 0) Assert.True(Math.Abs(grad[j]) <= 0.01 + 1e-5, $"column {j}: |gradient| {Math.Abs(grad[j])} > λ");
            else Assert.Equal(-0.01 * Math.Sign(probe.Coef[j]), grad[j], 4);
    }

    [Fact]
    public void The_L1_probe_on_sparse_rows_meets_the_optimality_conditions_and_leaves_silent_columns_at_zero()
    {
        // SAE-like features held as their non-zeros (5 % of 60 columns; columns 50..59 never fire), SAEBench's pos_weight:
        // FitL1 on the non-zeros must reach the L1 problem's optimum, checked by its KKT conditions with the gradient
        // summed here over the dense rows, and give exactly 0 to the columns with no entry.
        int n = 1500, d = 60;
        var (x, y) = Sparse(n, d, 0.05, 21);
        for (int i = 0; i < n; i++) for (int j = 50; j < d; j++) x[i * d + j] = 0;
        using var t = tensor(x).view(n, d);
        const double lambda = 0.002;
        var sw = LogisticRegression.PosWeights(y);
        var probe = LogisticRegression.FitL1(SparseRows.FromDense(t), y, lambda, sw);
        for (int j = 50; j < d; j++) Assert.Equal(0.0, probe.Coef[j]);
        Assert.True(probe.Coef[0] > 0 && probe.Coef[1] < 0, $"w0 {probe.Coef[0]}, w1 {probe.Coef[1]}: the label is x0 − x1 plus noise");
        var grad = new double[d];
        double gradB = 0;
        for (int i = 0; i < n; i++)
        {
            double z = probe.Intercept;
            for (int j = 0; j < d; j++) z += probe.Coef[j] * x[i * d + j];
            double r = sw[i] * (1 / (1 + Math.Exp(-z)) - (y[i] ? 1 : 0)) / n;
            gradB += r;
            for (int j = 0; j < d; j++) grad[j] += r * x[i * d + j];
        }
        Assert.Equal(0, gradB, 5);
        for (int j = 0; j < d; j++)
            if (probe.Coef[j] == 0) Assert.True(Math.Abs(grad[j]) <= lambda + 1e-5, $"column {j}: |gradient| {Math.Abs(grad[j])} > λ");
            else Assert.Equal(-lambda * Math.Sign(probe.Coef[j]), grad[j], 5);
    }

    /// <summary>Rows [n, d] with about <paramref name="density"/> of the entries non-zero (SAE-like: ≥ 0), and labels that
    /// depend on the first columns plus noise, so the classes overlap.</summary>
    private static (float[] X, bool[] Y) Sparse(int n, int d, double density, int seed)
    {
        var rng = new Random(seed);
        var x = new float[n * d];
        var y = new bool[n];
        for (int i = 0; i < n; i++)
        {
            for (int j = 0; j < d; j++)
                if (rng.NextDouble() < density) x[i * d + j] = (float)(rng.NextDouble() * 2);
            double s = x[i * d] - x[i * d + 1] + 0.5 * (rng.NextDouble() - 0.5);
            y[i] = s > 0 || (s == 0 && i % 2 == 0);
        }
        return (x, y);
    }

    /// <summary>∇ of ½‖w‖² + C·Σᵢ sᵢ[log(1 + e^{zᵢ}) − yᵢzᵢ], zᵢ = w·xᵢ + b, in plain doubles: the largest |component| over w and b.</summary>
    private static double GradientMax(float[] x, bool[] y, int d, double[] w, double b, double c, double[]? sw = null)
    {
        int n = y.Length;
        var g = (double[])w.Clone();
        double gb = 0;
        for (int i = 0; i < n; i++)
        {
            double z = b;
            for (int j = 0; j < d; j++) z += w[j] * x[i * d + j];
            double r = c * (sw?[i] ?? 1) * (1 / (1 + Math.Exp(-z)) - (y[i] ? 1 : 0));
            gb += r;
            for (int j = 0; j < d; j++) g[j] += r * x[i * d + j];
        }
        return Math.Max(Math.Abs(gb), g.Max(Math.Abs));
    }

    [Theory]
    [InlineData(80, 6, 0.7, false)]   // more rows than columns
    [InlineData(40, 90, 1.0, true)]   // more columns than rows, weighted rows
    public void The_representer_solver_meets_the_primal_Newton_optimum(int n, int d, double c, bool weighted)
    {
        var (x, y) = Sparse(n, d, 0.3, 5);
        using var t = tensor(x).view(n, d);
        double[]? sw = weighted ? LogisticRegression.BalancedWeights(y) : null;
        var newton = LogisticRegression.Fit(t, y, c, sampleWeight: sw, solver: LogisticSolver.Newton);
        var rep = LogisticRegression.Fit(t, y, c, sampleWeight: sw, solver: LogisticSolver.Representer);
        for (int j = 0; j < d; j++) Assert.Equal(newton.Coef[j], rep.Coef[j], 1e-6);
        Assert.Equal(newton.Intercept, rep.Intercept, 1e-6);
        Assert.True(GradientMax(x, y, d, rep.Coef, rep.Intercept, c, sw) < 1e-6);
        Assert.True(GradientMax(x, y, d, newton.Coef, newton.Intercept, c, sw) < 1e-6);
    }

    [Fact]
    public void Twenty_thousand_features_on_500_rows_fit_to_a_vanishing_gradient_with_dead_columns_at_zero()
    {
        const int n = 500, d = 20_000;
        var (x, y) = Sparse(n, d, 0.02, 8);
        for (int i = 0; i < n; i++) x[i * d + 7] = 0; // a dead column: its weight is its own gradient, 0 at the optimum
        using var t = tensor(x).view(n, d);
        var probe = LogisticRegression.Fit(t, y); // Auto: d > n takes the representer solver
        Assert.True(probe.Iterations > 0);
        double g = GradientMax(x, y, d, probe.Coef, probe.Intercept, 1.0);
        Assert.True(g < 1e-5, $"gradient {g}");
        Assert.Equal(0.0, probe.Coef[7]);
        // d ≫ n is separable: the training rows are all classified, and the L2 term bounds w (the objective at the optimum
        // is at most its value at w = 0, b = 0, n·log 2, so ½‖w‖² ≤ n·log 2).
        Assert.Equal(1.0, probe.Accuracy(t, y));
        double norm2 = probe.Coef.Sum(v => v * v);
        Assert.True(double.IsFinite(probe.Intercept) && norm2 <= 2 * n * Math.Log(2), $"‖w‖² {norm2}");
    }

    [Fact]
    public void Separable_wide_data_stays_finite_even_with_a_large_C()
    {
        // Two rows per class, 50 columns, each class on its own columns: perfectly separable, so without the L2 term the
        // log-loss would drive ‖w‖ to infinity.
        const int n = 4, d = 50;
        var x = new float[n * d];
        for (int i = 0; i < n; i++)
            for (int j = 0; j < d; j++)
                x[i * d + j] = (i < 2) == (j < 25) ? 1f + 0.1f * i : 0f;
        bool[] y = [true, true, false, false];
        using var t = tensor(x).view(n, d);
        const double c = 1e4;
        var probe = LogisticRegression.Fit(t, y, c, solver: LogisticSolver.Representer);
        Assert.All(probe.Coef, v => Assert.True(double.IsFinite(v)));
        double norm2 = probe.Coef.Sum(v => v * v);
        Assert.True(norm2 <= 2 * c * n * Math.Log(2), $"‖w‖² {norm2}");
        Assert.True(GradientMax(x, y, d, probe.Coef, probe.Intercept, c) < 1e-8 * c * n * 10);
        var newton = LogisticRegression.Fit(t, y, c, solver: LogisticSolver.Newton);
        for (int j = 0; j < d; j++) Assert.Equal(newton.Coef[j], probe.Coef[j], 1e-6);
    }
}
