using SaeSharp.Training;
using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;

namespace SaeSharp.Tests.Training;

public class AdamOptimizerTests
{
    [Fact]
    public void TwoStepsOnAScalarMatchTheHandFormula()
    {
        var p = new Parameter(tensor(new[] { 1.0f }));
        using var adam = new AdamOptimizer([("p", p)], 0.9, 0.999, 1e-8);
        double expected = 1.0, m = 0, v = 0;
        var grads = new[] { 0.5, -1.0 };
        for (int t = 1; t <= 2; t++)
        {
            p.grad = tensor(new[] { (float)grads[t - 1] });
            adam.Step(0.1);
            m = 0.9 * m + 0.1 * grads[t - 1];
            v = 0.999 * v + 0.001 * grads[t - 1] * grads[t - 1];
            double mHat = m / (1 - Math.Pow(0.9, t)), vHat = v / (1 - Math.Pow(0.999, t));
            expected -= 0.1 * mHat / (Math.Sqrt(vHat) + 1e-8);
            Assert.Equal(expected, p[0].item<float>(), 5);
        }
        Assert.Equal(2, adam.StepCount);
    }

    [Fact]
    public void FusedUpdateOfALargeParameterMatchesTorchSharpAdam()
    {
        // 300 001 elements: split over threads, with a scalar tail after the vector loop.
        using var g = new Generator(5);
        var init = randn(300_001, generator: g);
        var mine = new Parameter(init.clone());
        var theirs = new Parameter(init.clone());
        using var adam = new AdamOptimizer([("w", mine)], 0.0, 0.999, 1e-8);
        var reference = optim.Adam([theirs], lr: 1e-3, beta1: 0.0, beta2: 0.999, eps: 1e-8);
        for (int i = 0; i < 3; i++)
        {
            var grad = randn(300_001, generator: g);
            mine.grad = grad.clone();
            theirs.grad = grad.clone();
            adam.Step(1e-3);
            reference.step();
            Assert.True(mine.allclose(theirs, rtol: 1e-5, atol: 1e-7), $"step {i}: {TrainerTestKit.MaxAbsDiff(mine, theirs)}");
        }
    }

    [Fact]
    public void MatchesTorchSharpAdamOverSeveralSteps()
    {
        using var g = new Generator(3);
        var init = randn(4, 3, generator: g);
        var mine = new Parameter(init.clone());
        var theirs = new Parameter(init.clone());
        using var adam = new AdamOptimizer([("w", mine)], 0.8, 0.99, 1e-8);
        var reference = optim.Adam([theirs], lr: 0.01, beta1: 0.8, beta2: 0.99, eps: 1e-8);
        for (int i = 0; i < 5; i++)
        {
            var grad = randn(4, 3, generator: g);
            mine.grad = grad.clone();
            theirs.grad = grad.clone();
            adam.Step(0.01);
            reference.step();
            Assert.True(mine.allclose(theirs, rtol: 1e-5, atol: 1e-7), $"step {i}: {TrainerTestKit.MaxAbsDiff(mine, theirs)}");
        }
    }

    [Fact]
    public void ResetMomentsZeroesOnlyTheChosenSlices()
    {
        var p = new Parameter(zeros(3, 4));
        using var adam = new AdamOptimizer([("W_enc", p)]);
        p.grad = ones(3, 4);
        adam.Step(0.1);
        adam.ResetMoments("W_enc", 1, tensor(new long[] { 1, 3 }));
        var m = adam.ExpAvg("W_enc");
        var v = adam.ExpAvgSq("W_enc");
        Assert.Equal(new float[] { 0.1f, 0, 0.1f, 0 }, m[0].data<float>().ToArray().Select(x => MathF.Round(x, 6)));
        Assert.Equal(0f, v.index_select(1, tensor(new long[] { 1, 3 })).abs().max().item<float>());
        Assert.True(v.index_select(1, tensor(new long[] { 0, 2 })).gt(0).all().item<bool>());
        Assert.Throws<SaeSharpException>(() => adam.ResetMoments("b_gate", 0, tensor(new long[] { 0 })));
    }
}
