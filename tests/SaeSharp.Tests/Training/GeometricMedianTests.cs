using SaeSharp.Training;
using static TorchSharp.torch;

namespace SaeSharp.Tests.Training;

public class GeometricMedianTests
{
    [Fact]
    public void IsoscelesTriangleGivesTheFermatPoint()
    {
        // (−1,0), (1,0), (0,3): all angles < 120°, so the median is the point seeing each side under 120°:
        // on the axis at height y with tan 60° = 1/y, i.e. (0, 1/√3) — the mean would be (0, 1).
        var pts = tensor(new float[] { -1, 0, 1, 0, 0, 3 }).reshape(3, 2);
        var m = GeometricMedian.Compute(pts);
        Assert.Equal(0.0, m[0].item<float>(), 4);
        Assert.Equal(1 / Math.Sqrt(3), m[1].item<float>(), 4);
    }

    [Fact]
    public void MajorityAtOnePointPullsTheMedianThere()
    {
        // three points at the origin outweigh the unit pulls (sum of norms ≤ 2 < 3) of the two others
        var pts = tensor(new float[] { 0, 0, 0, 0, 0, 0, 10, 0, 0, 10 }).reshape(5, 2);
        var m = GeometricMedian.Compute(pts);
        Assert.True(m.abs().max().item<float>() < 1e-3, $"median {m[0].item<float>()}, {m[1].item<float>()}");
    }

    [Fact]
    public void EmptyInputIsRejected() =>
        Assert.Throws<SaeSharpException>(() => GeometricMedian.Compute(zeros(0, 3)));
}
