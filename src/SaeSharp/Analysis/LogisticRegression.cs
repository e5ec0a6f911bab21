using TorchSharp;
using static TorchSharp.torch;

namespace SaeSharp.Analysis;

/// <summary>
/// A binary logistic-regression probe fitted as scikit-learn's <c>LogisticRegression(penalty="l2", C=C)</c> (SAEBench's
/// probe): it minimises ½‖w‖² + C·Σᵢ [log(1 + e^{zᵢ}) − yᵢ·zᵢ] with zᵢ = w·xᵢ + b, the intercept b unpenalised. Solved by
/// Newton's method in float64 with a backtracking line search (at most <c>maxIter</c> steps; the objective is strictly
/// convex in w, so the optimum is sklearn's up to its tolerance). Predicts class 1 where w·x + b &gt; 0.
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

    /// <summary>Fits the probe to rows <paramref name="x"/> [n, d] (any float type) and labels <paramref name="y"/> (true = class 1).
    /// <paramref name="sampleWeight"/> weighs each row's log-loss (sklearn's <c>sample_weight</c>; see <see cref="BalancedWeights"/>).</summary>
    public static LogisticRegression Fit(Tensor x, bool[] y, double c = 1.0, int maxIter = 100, double tolerance = 1e-8, double[]? sampleWeight = null)
    {
        if (sampleWeight is not null && (sampleWeight.Length != y.Length || sampleWeight.Any(v => !(v >= 0) || double.IsInfinity(v))))
            throw new SaeSharpException($"logistic regression: {sampleWeight.Length} sample weights for {y.Length} rows, each finite and ≥ 0");
        if (x.dim() != 2) throw new SaeSharpException($"logistic regression needs [n, d] inputs, got [{string.Join(", ", x.shape)}]");
        if (x.shape[0] != y.Length) throw new SaeSharpException($"logistic regression: {x.shape[0]} rows but {y.Length} labels");
        if (y.Length == 0 || y.All(v => v) || !y.Any(v => v)) throw new SaeSharpException("logistic regression needs examples of both classes");
        if (!(c > 0)) throw new SaeSharpException($"logistic regression: C must be positive, got {c}");
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
            var logLoss = nn.functional.softplus(m).sub(t.mul(m)).mul(sw).sum().mul(cs);
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

    /// <summary>An estimate of the largest eigenvalue of Zᵀ·diag(<paramref name="sw"/>)·Z (30 power iterations from a
    /// fixed start, times 1.1), never above the Frobenius bound max sᵢ·‖Z‖²_F.</summary>
    private static double CurvatureBound(Tensor z, Tensor sw)
    {
        using var scope = NewDisposeScope();
        double frobenius = sw.max().item<double>() * z.pow(TorchScalars.Of(2)).sum().item<double>();
        var v = ones(z.shape[1], ScalarType.Float64);
        double eig = 0;
        for (int i = 0; i < 30; i++)
        {
            var w = z.t().mv(z.mv(v).mul(sw));
            eig = w.norm().item<double>() / v.norm().item<double>();
            if (eig == 0) return frobenius;
            v = w.div(w.norm());
        }
        return Math.Min(frobenius, 1.1 * eig);
    }

    /// <summary>
    /// An L1-regularised probe as SAEBench's absorption eval trains its k-sparse selection probe
    /// (<c>train_sparse_multi_probe</c>): it minimises (1/n)·Σᵢ sᵢ·[log(1 + e^{zᵢ}) − yᵢ·zᵢ] + λ·‖w‖₁ with zᵢ = w·xᵢ + b,
    /// the intercept unpenalised, sᵢ the row weights (SAEBench's <c>pos_weight</c> = negatives / positives on positive rows:
    /// <see cref="PosWeights"/>). SAEBench runs 50 epochs of Adam; this solves the same convex problem to its optimum by
    /// FISTA (accelerated proximal gradient, soft-thresholding each step) in float64 with a backtracking step and adaptive
    /// restart, stopping when no coordinate moves by more than <paramref name="tolerance"/> (relative) in a step.
    /// Columns that are 0 on every row keep weight 0 (their gradient is 0 ≤ λ).
    /// </summary>
    public static LogisticRegression FitL1(Tensor x, bool[] y, double lambda, double[]? sampleWeight = null, int maxIter = 5000, double tolerance = 1e-7)
    {
        if (sampleWeight is not null && (sampleWeight.Length != y.Length || sampleWeight.Any(v => !(v >= 0) || double.IsInfinity(v))))
            throw new SaeSharpException($"L1 logistic regression: {sampleWeight.Length} sample weights for {y.Length} rows, each finite and ≥ 0");
        if (x.dim() != 2) throw new SaeSharpException($"L1 logistic regression needs [n, d] inputs, got [{string.Join(", ", x.shape)}]");
        if (x.shape[0] != y.Length) throw new SaeSharpException($"L1 logistic regression: {x.shape[0]} rows but {y.Length} labels");
        if (y.Length == 0 || y.All(v => v) || !y.Any(v => v)) throw new SaeSharpException("L1 logistic regression needs examples of both classes");
        if (!(lambda >= 0) || double.IsInfinity(lambda)) throw new SaeSharpException($"L1 logistic regression: λ must be finite and ≥ 0, got {lambda}");
        using var scope = NewDisposeScope();
        using var _ = no_grad();
        var one = TorchScalars.One;
        long n = x.shape[0], d = x.shape[1];
        var z = cat([x.to(ScalarType.Float64).cpu(), ones(n, 1, ScalarType.Float64)], 1); // [n, d+1], the last column the intercept
        var t = tensor(y.Select(v => v ? 1.0 : 0.0).ToArray());
        var sw = (sampleWeight is null ? ones(n, ScalarType.Float64) : tensor(sampleWeight)).div(TorchScalars.Of(n));
        var penalised = cat([ones(d, ScalarType.Float64), zeros(1, ScalarType.Float64)]);
        double Smooth(Tensor b)
        {
            using var s = NewDisposeScope();
            var m = z.mv(b);
            return nn.functional.softplus(m).sub(t.mul(m)).mul(sw).sum().item<double>();
        }
        Tensor Grad(Tensor b) => z.t().mv(z.mv(b).sigmoid().sub(t).mul(sw));
        Tensor Prox(Tensor v, double step)
        {
            // soft-threshold the weights by step·λ, leave the intercept
            using var th = (step * lambda).ToScalar();
            var shrunk = v.abs().sub(th).clamp_min(TorchScalars.Of(0)).mul(v.sign());
            return torch.where(penalised.gt(TorchScalars.Of(0)), shrunk, v);
        }
        double L1(Tensor b) => b.narrow(0, 0, d).abs().sum().item<double>() * lambda;
        // Initial step from the smooth part's largest curvature, λ_max(Zᵀ·diag(s)·Z)/4, estimated by power iteration (the
        // backtracking below halves the step wherever the estimate falls short); the Frobenius bound max sᵢ/4 · ‖Z‖²_F is
        // often hundreds of times larger, and FISTA's iterations grow with it.
        double step = 1.0 / Math.Max(1e-12, CurvatureBound(z, sw) / 4);
        var beta = zeros(d + 1, ScalarType.Float64);
        var yk = beta.alias();
        double tk = 1, fPrev = Smooth(beta) + L1(beta);
        int it = 0;
        for (; it < maxIter; it++)
        {
            using var iter = NewDisposeScope();
            var g = Grad(yk);
            double fy = Smooth(yk);
            Tensor next;
            while (true)
            {
                using (var st = step.ToScalar()) next = Prox(yk.sub(g.mul(st)), step);
                var diff = next.sub(yk);
                double quad = fy + g.mul(diff).sum().item<double>() + diff.mul(diff).sum().item<double>() / (2 * step);
                if (Smooth(next) <= quad + 1e-12 * Math.Abs(quad)) break;
                step *= 0.5;
                if (step < 1e-300) break;
            }
            double fNext = Smooth(next) + L1(next);
            double move = next.sub(beta).abs().max().item<double>();
            double scale = Math.Max(1.0, beta.abs().max().item<double>());
            double tNext = (1 + Math.Sqrt(1 + 4 * tk * tk)) / 2;
            Tensor yNext;
            if (fNext > fPrev) { yNext = next.alias(); tNext = 1; } // adaptive restart: drop the momentum when the objective rises
            else
            {
                using var mom = ((tk - 1) / tNext).ToScalar();
                yNext = next.add(next.sub(beta).mul(mom), one);
            }
            beta = next.MoveToOuterDisposeScope();
            yk = yNext.MoveToOuterDisposeScope();
            tk = tNext;
            fPrev = fNext;
            if (move <= tolerance * scale) break;
        }
        var coef = beta.data<double>().ToArray();
        return new LogisticRegression(coef[..^1], coef[^1], it);
    }

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

    /// <summary>w·x + b for each row of <paramref name="x"/> [n, d].</summary>
    public double[] DecisionFunction(Tensor x)
    {
        if (x.dim() != 2 || x.shape[1] != Coef.Length)
            throw new SaeSharpException($"the probe takes [n, {Coef.Length}] inputs, got [{string.Join(", ", x.shape)}]");
        using var scope = NewDisposeScope();
        return x.to(ScalarType.Float64).cpu().mv(tensor(Coef)).data<double>().Select(v => v + Intercept).ToArray();
    }

    /// <summary>Share of rows whose prediction (w·x + b &gt; 0) equals the label.</summary>
    public double Accuracy(Tensor x, bool[] y)
    {
        var s = DecisionFunction(x);
        if (s.Length != y.Length) throw new SaeSharpException($"{s.Length} rows but {y.Length} labels");
        return s.Length == 0 ? 0 : (double)s.Where((v, i) => v > 0 == y[i]).Count() / s.Length;
    }
}
