using TorchSharp;
using static TorchSharp.torch;

namespace SaeSharp.Analysis;

/// <summary>
/// A binary logistic-regression probe fitted as scikit-learn's <c>LogisticRegression(penalty="l2", C=C)</c> (SAEBench's
/// probe): it minimises ½‖w‖² + C·Σᵢ [log(1 + e^{zᵢ}) − yᵢ·zᵢ] with zᵢ = w·xᵢ + b, the intercept b unpenalised. Solved by
/// Newton's method in float64 with a backtracking line search, on (w, b) or, when there are more columns than rows, in the
/// n-dimensional span of the rows (<see cref="LogisticSolver"/>); at most <c>maxIter</c> steps. The objective is strictly
/// convex in w, so the optimum is sklearn's up to its tolerance. Predicts class 1 where w·x + b &gt; 0.
/// </summary>
public sealed class LogisticRegression
{
    /// <summary>Weights w, one per input column.</summary>
    public double[] Coef { get; }
    /// <summary>Intercept b.</summary>
    public double Intercept { get; }
    /// <summary>Newton steps taken.</summary>
    public int Iterations { get; }

    private LogisticRegression(double[] coef, double intercept, int iterations)
    {
        Coef = coef;
        Intercept = intercept;
        Iterations = iterations;
    }

    /// <summary>Fits the probe to rows <paramref name="x"/> [n, d] (any float type, any device) and labels <paramref name="y"/>
    /// (true = class 1). <paramref name="sampleWeight"/> weighs each row's log-loss (sklearn's <c>sample_weight</c>; see
    /// <see cref="BalancedWeights"/>). <paramref name="solver"/> <see cref="LogisticSolver.Auto"/> takes Newton's method on
    /// (w, b) when d ≤ n and Newton's method in the n-dimensional representer space when d &gt; n; both stop when the
    /// objective's gradient falls below <paramref name="tolerance"/> · max(1, C·n) (see <see cref="LogisticSolver"/>).</summary>
    public static LogisticRegression Fit(Tensor x, bool[] y, double c = 1.0, int maxIter = 100, double tolerance = 1e-8, double[]? sampleWeight = null,
        LogisticSolver solver = LogisticSolver.Auto)
    {
        if (sampleWeight is not null && (sampleWeight.Length != y.Length || sampleWeight.Any(v => !(v >= 0) || double.IsInfinity(v))))
            throw new SaeSharpException($"logistic regression: {sampleWeight.Length} sample weights for {y.Length} rows, each finite and ≥ 0");
        if (x.dim() != 2) throw new SaeSharpException($"logistic regression needs [n, d] inputs, got [{string.Join(", ", x.shape)}]");
        if (x.shape[0] != y.Length) throw new SaeSharpException($"logistic regression: {x.shape[0]} rows but {y.Length} labels");
        if (y.Length == 0 || y.All(v => v) || !y.Any(v => v)) throw new SaeSharpException("logistic regression needs examples of both classes");
        if (!(c > 0)) throw new SaeSharpException($"logistic regression: C must be positive, got {c}");
        bool representer = solver == LogisticSolver.Representer || (solver == LogisticSolver.Auto && x.shape[1] > x.shape[0]);
        return representer ? FitRepresenter(x, y, c, maxIter, tolerance, sampleWeight) : FitNewton(x, y, c, maxIter, tolerance, sampleWeight);
    }

    /// <summary>Newton's method on (w, b) with the (d + 1)² Hessian.</summary>
    private static LogisticRegression FitNewton(Tensor x, bool[] y, double c, int maxIter, double tolerance, double[]? sampleWeight)
    {
        using var scope = NewDisposeScope();
        using var _ = no_grad();
        using var cs = c.ToScalar();
        var one = TorchScalars.One;
        long n = x.shape[0], d = x.shape[1];
        var z = cat([x.to(ScalarType.Float64).cpu(), ones(n, 1, ScalarType.Float64)], 1); // [n, d+1]
        var t = tensor(y.Select(v => v ? 1.0 : 0.0).ToArray());
        var sw = sampleWeight is null ? ones(n, ScalarType.Float64) : tensor(sampleWeight);
        var penalty = cat([ones(d, ScalarType.Float64), zeros(1, ScalarType.Float64)]); // the intercept is not penalised
        var ridge = diag(penalty.add(TorchScalars.Of(1e-10), one));
        var beta = zeros(d + 1, ScalarType.Float64);
        double Objective(Tensor b)
        {
            using var s = NewDisposeScope();
            var m = z.mv(b);
            var logLoss = TorchScalars.Softplus(m).sub(t.mul(m)).mul(sw).sum().mul(cs);
            return penalty.mul(b).mul(b).sum().mul(TorchScalars.Of(0.5)).add(logLoss, one).item<double>();
        }
        double f = Objective(beta);
        int it = 0;
        for (; it < maxIter; it++)
        {
            using var step = NewDisposeScope();
            var p = z.mv(beta).sigmoid();
            var grad = penalty.mul(beta).add(z.t().mv(p.sub(t).mul(sw)).mul(cs), one);
            double gmax = grad.abs().max().item<double>();
            if (gmax < tolerance * Math.Max(1.0, c * n)) break;
            var w = p.sub(p.mul(p)).mul(sw).unsqueeze(1); // weight · p(1 - p)
            var hess = z.t().mm(z.mul(w)).mul(cs).add(ridge, one);
            var dir = linalg.solve(hess, grad.unsqueeze(1)).squeeze(1);
            double slope = grad.mul(dir).sum().item<double>();
            double a = 1.0;
            Tensor next = beta.sub(dir);
            double fNext = Objective(next);
            while (fNext > f - 1e-4 * a * slope && a > 1e-10)
            {
                a *= 0.5;
                using var sa = a.ToScalar();
                next = beta.sub(dir.mul(sa));
                fNext = Objective(next);
            }
            if (fNext >= f) break; // no further decrease is representable
            beta = next.MoveToOuterDisposeScope();
            f = fNext;
        }
        var coef = beta.data<double>().ToArray();
        return new LogisticRegression(coef[..^1], coef[^1], it);
    }

    /// <summary>Columns of <paramref name="x"/> per float64 block: about 8 M values (64 MB) at a time.</summary>
    private static long ColumnBlock(Tensor x) => Math.Max(1, 8_000_000 / Math.Max(1, x.shape[0]));

    /// <summary>Share of non-zero entries up to which the representer solver builds X·Xᵀ, Xᵀα from the non-zeros
    /// (<see cref="SparseColumns"/>, 12 bytes an entry) rather than from dense float64 column blocks: SAE feature matrices
    /// are 0.1–5 % non-zero.</summary>
    internal const double SparseDensity = 0.25;

    /// <summary>
    /// Newton's method in the representer space: at the optimum w = −C·Σᵢ sᵢ(pᵢ − yᵢ)·xᵢ lies in the span of the rows, so
    /// w = Xᵀα and every quantity is a function of the Gram matrix K = X·Xᵀ [n, n], built once: from the non-zeros by
    /// <see cref="SparseColumns.Gram"/> when at most <see cref="SparseDensity"/> of X is non-zero, else from float64 column
    /// blocks of X (<paramref name="sparseGram"/> forces either); X is never copied whole and no d×d matrix is formed. The
    /// Newton step is the primal one, (w, b) ← (w, b) − H⁻¹g with H = [[I + XᵀSX, XᵀS1], [1ᵀSX, 1ᵀS1]],
    /// S = C·diag(sᵢ pᵢ(1 − pᵢ)), solved exactly through Woodbury's identity (I + XᵀSX)⁻¹Xᵀ = Xᵀ(I − S^½ M⁻¹ S^½ K),
    /// M = I + S^½ K S^½ (symmetric positive definite, eigenvalues ≥ 1, so it stays well-conditioned on separable data where
    /// S → 0), and the intercept by its Schur complement. Each step costs O(n³) and holds three n² float64 matrices: K, M
    /// (one workspace rebuilt in place each step) and M's Cholesky factor; the gradient's w part is Xᵀγ with ‖Xᵀγ‖² = γᵀKγ.
    /// Finally w = Xᵀα, from the non-zeros or again by column blocks.
    /// </summary>
    internal static LogisticRegression FitRepresenter(Tensor x, bool[] y, double c, int maxIter, double tolerance, double[]? sampleWeight,
        bool? sparseGram = null)
    {
        long n = x.shape[0], d = x.shape[1], block = ColumnBlock(x);
        bool sparse;
        using (var count = NewDisposeScope()) sparse = sparseGram ?? x.count_nonzero().item<long>() <= SparseDensity * n * d;
        if (sparse) return FitRepresenter(SparseColumns.FromDense(x), y, c, maxIter, tolerance, sampleWeight);
        using var scope = NewDisposeScope();
        var k = zeros(n, n, ScalarType.Float64);
        for (long j = 0; j < d; j += block)
        {
            using var b = NewDisposeScope();
            var xc = x.narrow(1, j, Math.Min(block, d - j)).to(ScalarType.Float64).cpu();
            k.addmm_(xc, xc.t());
        }
        var (alpha, intercept, it) = SolveRepresenter(k, y, c, maxIter, tolerance, sampleWeight);
        var coef = new double[d];
        for (long j = 0; j < d; j += block)
        {
            using var b = NewDisposeScope();
            long len = Math.Min(block, d - j);
            using var a = tensor(alpha);
            x.narrow(1, j, len).to(ScalarType.Float64).cpu().t().mv(a).data<double>().CopyTo(coef.AsSpan((int)j, (int)len));
        }
        return new LogisticRegression(coef, intercept, it);
    }

    /// <summary>The representer fit (<see cref="FitRepresenter(Tensor, bool[], double, int, double, double[], bool?)"/>) of
    /// a matrix given by its non-zeros: K = X·Xᵀ by <see cref="SparseColumns.Gram"/>, w = Xᵀα by
    /// <see cref="SparseColumns.TransposeTimes"/>.</summary>
    internal static LogisticRegression FitRepresenter(SparseColumns x, bool[] y, double c, int maxIter = 100, double tolerance = 1e-8, double[]? sampleWeight = null)
    {
        if (x.Rows != y.Length) throw new SaeSharpException($"logistic regression: {x.Rows} rows but {y.Length} labels");
        if (y.Length == 0 || y.All(v => v) || !y.Any(v => v)) throw new SaeSharpException("logistic regression needs examples of both classes");
        double[] alpha;
        double intercept;
        int it;
        using (var k = x.Gram()) (alpha, intercept, it) = SolveRepresenter(k, y, c, maxIter, tolerance, sampleWeight);
        return new LogisticRegression(x.TransposeTimes(alpha), intercept, it);
    }

    /// <summary>Newton's method in the representer space on the Gram matrix <paramref name="k"/> [n, n] (float64): α and b.</summary>
    private static (double[] Alpha, double Intercept, int Iterations) SolveRepresenter(Tensor k, bool[] y, double c, int maxIter, double tolerance,
        double[]? sampleWeight)
    {
        using var scope = NewDisposeScope();
        using var _ = no_grad();
        using var cs = c.ToScalar();
        var one = TorchScalars.One;
        long n = k.shape[0];
        var t = tensor(y.Select(v => v ? 1.0 : 0.0).ToArray());
        var sw = sampleWeight is null ? ones(n, ScalarType.Float64) : tensor(sampleWeight);
        var alpha = zeros(n, ScalarType.Float64);
        var ka = zeros(n, ScalarType.Float64); // K·α, the margins without the intercept
        double intercept = 0;
        double Objective(Tensor a, Tensor kA, double b0)
        {
            using var s = NewDisposeScope();
            using var bs = b0.ToScalar();
            var m = kA.add(bs, one);
            var logLoss = TorchScalars.Softplus(m).sub(t.mul(m)).mul(sw).sum().mul(cs);
            return a.dot(kA).mul(TorchScalars.Of(0.5)).add(logLoss, one).item<double>();
        }
        double f = Objective(alpha, ka, intercept);
        var mWork = empty(n, n, ScalarType.Float64); // M's workspace, rebuilt in place each step
        var mDiagonal = mWork.diagonal();
        int it = 0;
        for (; it < maxIter; it++)
        {
            using var step = NewDisposeScope();
            using var bs = intercept.ToScalar();
            var p = ka.add(bs, one).sigmoid();
            var r = p.sub(t).mul(sw).mul(cs);   // C·sᵢ(pᵢ − yᵢ)
            var gamma = alpha.add(r, one);      // g_w = Xᵀγ
            var kg = k.mv(gamma);
            double gw = Math.Sqrt(Math.Max(0, gamma.dot(kg).item<double>())), gb = r.sum().item<double>();
            if (Math.Max(gw, Math.Abs(gb)) < tolerance * Math.Max(1.0, c * n)) break;
            var s = p.sub(p.mul(p)).mul(sw).mul(cs);  // diagonal of S
            var sq = s.sqrt();
            mWork.copy_(k).mul_(sq.unsqueeze(1)).mul_(sq.unsqueeze(0));
            mDiagonal.add_(one, one);
            var chol = linalg.cholesky(mWork);
            // A⁻¹Xᵀv = Xᵀ·Inv(v) with Inv(v) = v − S^½ M⁻¹ S^½ K v, for v = γ and v = s (u = XᵀS1 = Xᵀs) at once.
            var v2 = stack([gamma, s], 1);                         // [n, 2]
            var kv2 = stack([kg, k.mv(s)], 1);
            var inv = v2.sub(cholesky_solve(kv2.mul(sq.unsqueeze(1)), chol).mul(sq.unsqueeze(1)));
            chol.Dispose();
            var kinv = k.mm(inv);                                  // X A⁻¹ Xᵀ v
            var invG = inv.select(1, 0); var invS = inv.select(1, 1);
            double sTg = s.dot(kinv.select(1, 0)).item<double>(), sTs = s.dot(kinv.select(1, 1)).item<double>();
            double schur = s.sum().item<double>() - sTs + 1e-10;
            double db = (gb - sTg) / schur;
            using var dbs = db.ToScalar();
            var da = invG.sub(invS.mul(dbs));                 // δα = Inv(γ − s·δb)
            var kda = kinv.select(1, 0).sub(kinv.select(1, 1).mul(dbs));
            double slope = gamma.dot(kda).item<double>() + gb * db;  // g·δ with g_w·δ_w = γᵀKδα
            double a = 1.0;
            Tensor nextA = alpha.sub(da), nextKa = ka.sub(kda);
            double nextB = intercept - db;
            double fNext = Objective(nextA, nextKa, nextB);
            while (fNext > f - 1e-4 * a * slope && a > 1e-10)
            {
                a *= 0.5;
                using var sa = a.ToScalar();
                nextA = alpha.sub(da.mul(sa));
                nextKa = ka.sub(kda.mul(sa));
                nextB = intercept - a * db;
                fNext = Objective(nextA, nextKa, nextB);
            }
            if (fNext >= f) break; // no further decrease is representable
            alpha = nextA.MoveToOuterDisposeScope();
            ka = nextKa.MoveToOuterDisposeScope();
            intercept = nextB;
            f = fNext;
        }
        mWork.Dispose();
        return (alpha.data<double>().ToArray(), intercept, it);
    }

    /// <summary>An estimate of the largest eigenvalue of Zᵀ·diag(<paramref name="sw"/>)·Z, Z = [X, 1] (30 power iterations
    /// from a fixed start, times 1.1), never above the Frobenius bound max sᵢ·‖Z‖²_F.</summary>
    private static double CurvatureBound(RowProducts x, double[] sw)
    {
        double frobenius = sw.Max() * (x.Squares + x.Rows); // the intercept column's ones
        var w = new double[x.Columns];
        double wb = 1, norm = Math.Sqrt(x.Columns + 1.0); // v = 1: w holds v's weights, wb its intercept entry
        Array.Fill(w, 1.0);
        double eig = 0;
        for (int it = 0; it < 30; it++)
        {
            var u = x.Margins(w, wb);
            for (int i = 0; i < u.Length; i++) u[i] *= sw[i];
            w = x.TransposeTimes(u);
            wb = u.Sum();
            double wNorm = Math.Sqrt(w.Sum(v => v * v) + wb * wb);
            eig = wNorm / norm;
            if (eig == 0) return frobenius;
            for (int j = 0; j < w.Length; j++) w[j] /= wNorm;
            wb /= wNorm;
            norm = 1;
        }
        return Math.Min(frobenius, 1.1 * eig);
    }

    /// <summary>The products FISTA needs of X [Rows, Columns]: X·w + b, Xᵀr, and Σ x²; from the non-zeros or a dense
    /// float64 copy.</summary>
    private sealed record RowProducts(int Rows, int Columns, double Squares, Func<double[], double, double[]> Margins, Func<double[], double[]> TransposeTimes);

    /// <summary>
    /// An L1-regularised probe as SAEBench's absorption eval trains its k-sparse selection probe
    /// (<c>train_sparse_multi_probe</c>): it minimises (1/n)·Σᵢ sᵢ·[log(1 + e^{zᵢ}) − yᵢ·zᵢ] + λ·‖w‖₁ with zᵢ = w·xᵢ + b,
    /// the intercept unpenalised, sᵢ the row weights (SAEBench's <c>pos_weight</c> = negatives / positives on positive rows:
    /// <see cref="PosWeights"/>). SAEBench runs 50 epochs of Adam; this solves the same convex problem to its optimum by
    /// FISTA (accelerated proximal gradient, soft-thresholding each step) in float64 with a backtracking step and adaptive
    /// restart, stopping when no coordinate moves by more than <paramref name="tolerance"/> (relative) in a step.
    /// Columns that are 0 on every row keep weight 0 (their gradient is 0 ≤ λ). Each step computes the margins X·w + b
    /// once per point and Xᵀr once: from x's non-zeros when at most <see cref="SparseDensity"/> of it is non-zero
    /// (<see cref="FitL1(SparseRows, bool[], double, double[], int, double)"/>), else by BLAS on one float64 copy of x.
    /// </summary>
    public static LogisticRegression FitL1(Tensor x, bool[] y, double lambda, double[]? sampleWeight = null, int maxIter = 5000, double tolerance = 1e-7)
    {
        if (x.dim() != 2) throw new SaeSharpException($"L1 logistic regression needs [n, d] inputs, got [{string.Join(", ", x.shape)}]");
        if (x.shape[0] != y.Length) throw new SaeSharpException($"L1 logistic regression: {x.shape[0]} rows but {y.Length} labels");
        using var scope = NewDisposeScope();
        using var _ = no_grad();
        if (x.count_nonzero().item<long>() <= SparseDensity * x.shape[0] * x.shape[1])
            return FitL1(SparseRows.FromDense(x), y, lambda, sampleWeight, maxIter, tolerance);
        // Dense rows (model activations): BLAS products on one float64 copy.
        var xd = x.to(ScalarType.Float64).cpu().contiguous();
        double[] Margins(double[] w, double b)
        {
            using var s = NewDisposeScope();
            var m = xd.mv(tensor(w)).data<double>().ToArray();
            for (int i = 0; i < m.Length; i++) m[i] += b;
            return m;
        }
        double[] TransposeTimes(double[] r)
        {
            using var s = NewDisposeScope();
            return xd.t().mv(tensor(r)).data<double>().ToArray();
        }
        return FitL1(new RowProducts(y.Length, (int)x.shape[1], xd.mul(xd).sum().item<double>(), Margins, TransposeTimes), y, lambda, sampleWeight, maxIter, tolerance);
    }

    /// <summary><see cref="FitL1(Tensor, bool[], double, double[], int, double)"/> on a matrix given by its non-zeros: the
    /// margins X·w + b by <see cref="SparseRows.RowDots"/> and the gradient Xᵀr by <see cref="SparseColumns.TransposeTimes"/>,
    /// O(non-zeros) a pass (an SAE's features: k of d_sae a row), two or three passes a step.</summary>
    internal static LogisticRegression FitL1(SparseRows x, bool[] y, double lambda, double[]? sampleWeight = null, int maxIter = 5000, double tolerance = 1e-7)
    {
        if (sampleWeight is not null && (sampleWeight.Length != y.Length || sampleWeight.Any(v => !(v >= 0) || double.IsInfinity(v))))
            throw new SaeSharpException($"L1 logistic regression: {sampleWeight.Length} sample weights for {y.Length} rows, each finite and ≥ 0");
        if (x.Rows != y.Length) throw new SaeSharpException($"L1 logistic regression: {x.Rows} rows but {y.Length} labels");
        if (y.Length == 0 || y.All(v => v) || !y.Any(v => v)) throw new SaeSharpException("L1 logistic regression needs examples of both classes");
        if (!(lambda >= 0) || double.IsInfinity(lambda)) throw new SaeSharpException($"L1 logistic regression: λ must be finite and ≥ 0, got {lambda}");
        var xc = SparseColumns.FromRows(x);
        double squares = 0;
        for (int i = 0; i < x.Rows; i++) foreach (double v in x.Row(i).Values) squares += v * v;
        return FitL1(new RowProducts(x.Rows, x.Columns, squares, x.RowDots, r => xc.TransposeTimes(r)), y, lambda, sampleWeight, maxIter, tolerance);
    }

    /// <summary>FISTA on the products of X (the two public entries' shared solver).</summary>
    private static LogisticRegression FitL1(RowProducts x, bool[] y, double lambda, double[]? sampleWeight, int maxIter, double tolerance)
    {
        int n = x.Rows, d = x.Columns;
        var sw = sampleWeight is null ? Enumerable.Repeat(1.0 / n, n).ToArray() : [.. sampleWeight.Select(v => v / n)];
        // A point is (w, b): d weights and the intercept; its margins are X·w + b.
        double Smooth(double[] m)
        {
            double s = 0;
            for (int i = 0; i < n; i++) s += (Softplus(m[i]) - (y[i] ? m[i] : 0)) * sw[i];
            return s;
        }
        (double[] W, double B) Grad(double[] m)
        {
            var r = new double[n];
            for (int i = 0; i < n; i++) r[i] = (Sigmoid(m[i]) - (y[i] ? 1 : 0)) * sw[i];
            return (x.TransposeTimes(r), r.Sum());
        }
        double L1(double[] w) => w.Sum(Math.Abs) * lambda;
        // Initial step from the smooth part's largest curvature, λ_max(Zᵀ·diag(s)·Z)/4, estimated by power iteration (the
        // backtracking below halves the step wherever the estimate falls short); the Frobenius bound max sᵢ/4 · ‖Z‖²_F is
        // often hundreds of times larger, and FISTA's iterations grow with it.
        double step = 1.0 / Math.Max(1e-12, CurvatureBound(x, sw) / 4);
        var beta = new double[d];
        double betaB = 0;
        var yk = beta;
        double ykB = 0;
        double tk = 1, fPrev = Smooth(x.Margins(beta, betaB)) + L1(beta);
        int it = 0;
        for (; it < maxIter; it++)
        {
            var my = x.Margins(yk, ykB);
            var (g, gB) = Grad(my);
            double fy = Smooth(my);
            double[] next;
            double nextB, smoothNext;
            while (true)
            {
                // soft-threshold the weights of yk − step·g by step·λ, leave the intercept
                double th = step * lambda, quad = fy;
                next = new double[d];
                for (int j = 0; j < d; j++)
                {
                    double v = yk[j] - g[j] * step;
                    next[j] = Math.CopySign(Math.Max(Math.Abs(v) - th, 0), v);
                    double diff = next[j] - yk[j];
                    quad += g[j] * diff + diff * diff / (2 * step);
                }
                nextB = ykB - gB * step;
                double diffB = nextB - ykB;
                quad += gB * diffB + diffB * diffB / (2 * step);
                smoothNext = Smooth(x.Margins(next, nextB));
                if (smoothNext <= quad + 1e-12 * Math.Abs(quad)) break;
                step *= 0.5;
                if (step < 1e-300) break;
            }
            double fNext = smoothNext + L1(next);
            double move = Math.Abs(nextB - betaB), scale = Math.Max(1.0, Math.Abs(betaB));
            for (int j = 0; j < d; j++)
            {
                move = Math.Max(move, Math.Abs(next[j] - beta[j]));
                scale = Math.Max(scale, Math.Abs(beta[j]));
            }
            double tNext = (1 + Math.Sqrt(1 + 4 * tk * tk)) / 2;
            if (fNext > fPrev) { yk = next; ykB = nextB; tNext = 1; } // adaptive restart: drop the momentum when the objective rises
            else
            {
                double mom = (tk - 1) / tNext;
                yk = new double[d];
                for (int j = 0; j < d; j++) yk[j] = next[j] + (next[j] - beta[j]) * mom;
                ykB = nextB + (nextB - betaB) * mom;
            }
            beta = next;
            betaB = nextB;
            tk = tNext;
            fPrev = fNext;
            if (move <= tolerance * scale) break;
        }
        return new LogisticRegression(beta, betaB, it);
    }

    /// <summary>log(1 + e^m) as <c>torch.nn.functional.softplus</c> (m itself above 20), accurate for very negative m.</summary>
    private static double Softplus(double m)
    {
        if (m > 20) return m;
        double u = Math.Exp(m), v = 1 + u;
        return v == 1 ? u : Math.Log(v) * u / (v - 1); // log1p(u) without cancellation
    }

    /// <summary>1 / (1 + e^−m).</summary>
    private static double Sigmoid(double m) => 1 / (1 + Math.Exp(-m));

    /// <summary>SAEBench's <c>pos_weight</c> (absorption probes) as row weights: negatives / positives on positive rows, 1 on
    /// negative rows.</summary>
    public static double[] PosWeights(bool[] y)
    {
        int pos = y.Count(v => v), neg = y.Length - pos;
        return [.. y.Select(v => v ? (double)neg / pos : 1.0)];
    }

    /// <summary>sklearn's <c>class_weight="balanced"</c> as sample weights: n / (2 · rows of the row's class).</summary>
    public static double[] BalancedWeights(bool[] y)
    {
        int pos = y.Count(v => v), neg = y.Length - pos;
        return [.. y.Select(v => y.Length / (2.0 * (v ? pos : neg)))];
    }

    /// <summary>w·x + b for each row of <paramref name="x"/> [n, d], in float64.</summary>
    public double[] DecisionFunction(Tensor x)
    {
        if (x.dim() != 2 || x.shape[1] != Coef.Length)
            throw new SaeSharpException($"the probe takes [n, {Coef.Length}] inputs, got [{string.Join(", ", x.shape)}]");
        return SparseColumns.RowDots(x, Coef, Intercept); // float64 row blocks, zeros skipped: a wide x is never copied whole
    }

    /// <summary>Share of rows whose prediction (w·x + b &gt; 0) equals the label.</summary>
    public double Accuracy(Tensor x, bool[] y) => Accuracy(DecisionFunction(x), y);

    /// <summary>Share of rows whose prediction (w·x + b &gt; 0) on the non-zeros <paramref name="x"/> equals the label.</summary>
    internal double Accuracy(SparseRows x, bool[] y) => Accuracy(x.RowDots(Coef, Intercept), y);

    /// <summary>Share of decision values <paramref name="s"/> whose sign (&gt; 0: class 1) matches the label.</summary>
    private static double Accuracy(double[] s, bool[] y)
    {
        if (s.Length != y.Length) throw new SaeSharpException($"{s.Length} rows but {y.Length} labels");
        return s.Length == 0 ? 0 : (double)s.Where((v, i) => v > 0 == y[i]).Count() / s.Length;
    }
}

/// <summary>How <see cref="LogisticRegression.Fit"/> solves the L2 probe. Both are Newton's method with a backtracking
/// (Armijo) line search from w = 0, b = 0, reach the same optimum, and stop when max(‖g_w‖, |g_b|) of the objective's
/// gradient falls below tolerance · max(1, C·n) (the primal solver takes the largest |component| of g_w, the representer
/// one its Euclidean norm, which is never smaller), when a step no longer lowers the objective, or after maxIter steps.</summary>
public enum LogisticSolver
{
    /// <summary><see cref="Newton"/> when d ≤ n, else <see cref="Representer"/>.</summary>
    Auto,
    /// <summary>Newton on (w, b): O(n·d²) per step and a (d + 1)² Hessian in memory.</summary>
    Newton,
    /// <summary>Newton in the span of the rows (w = Xᵀα): the Gram matrix X·Xᵀ once (O(n²·d)), then O(n³) per step, n²
    /// doubles in memory whatever d is.</summary>
    Representer,
}
