using TorchSharp;
using static TorchSharp.torch;

namespace SaeSharp.Training;

/// <summary>The geometric median (the point minimising the sum of Euclidean distances) by Weiszfeld iterations,
/// as SAELens <c>compute_geometric_median</c>: start at the mean, reweight by 1/max(‖p − m‖, eps), stop when the
/// objective improves by less than ftol·objective or after maxIter iterations.</summary>
public static class GeometricMedian
{
    /// <summary>Median of the rows of <paramref name="points"/> [n, d] → [d], computed in float32, returned in the input dtype.</summary>
    public static Tensor Compute(Tensor points, double eps = 1e-6, int maxIter = 100, double ftol = 1e-20)
    {
        if (points.dim() != 2 || points.shape[0] == 0)
            throw new SaeSharpException($"geometric median needs a non-empty [n, d] tensor, got shape [{string.Join(", ", points.shape)}]");
        using var _ = no_grad();
        using var scope = NewDisposeScope();
        var p = points.to(ScalarType.Float32);
        var median = p.mean([0]);
        double objective = Objective(p, median);
        using var epsScalar = eps.ToScalar();
        for (int i = 0; i < maxIter; i++)
        {
            using var iter = NewDisposeScope();
            double prev = objective;
            var w = TorchScalars.Of(1.0) / (p - median).norm(1).clamp_min(epsScalar);
            var next = (p * w.unsqueeze(1)).sum(0L) / w.sum();
            median.copy_(next);
            objective = Objective(p, median);
            if (Math.Abs(prev - objective) <= ftol * objective) break;
        }
        return median.to(points.dtype).MoveToOuterDisposeScope();
    }

    private static double Objective(Tensor p, Tensor median)
    {
        using var scope = NewDisposeScope();
        return (p - median).norm(1).to(ScalarType.Float64).sum().item<double>();
    }
}
