using SaeSharp.Kernels;
using SaeSharp.Tests.Training;
using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;

namespace SaeSharp.Tests.Kernels;

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

    /// <summary>Unfused, with decoupled weight decay on one parameter and none on the other: TorchSharp's AdamW (two groups,
    /// as <c>sae lm train</c> had them) bit for bit, over steps at different learning rates; unfused without decay,
    /// TorchSharp's Adam bit for bit (SyntheticModelGeneration's orthogonalisation).</summary>
    [Fact]
    public void UnfusedUpdatesAreTorchSharpsAdamWAndAdamBitForBit()
    {
        using var g = new Generator(11);
        var w0 = randn(64, 33, generator: g);
        var b0 = randn(33, generator: g);
        var (w, b) = (new Parameter(w0.clone()), new Parameter(b0.clone()));
        var (wRef, bRef) = (new Parameter(w0.clone()), new Parameter(b0.clone()));
        using var adamW = new AdamOptimizer([("w", w, 0.1), ("b", b, 0.0)], beta1: 0.9, beta2: 0.95) { Fused = false };
        using var reference = optim.AdamW([
            new AdamW.ParamGroup([wRef], new AdamW.Options { LearningRate = 1e-2, weight_decay = 0.1, beta1 = 0.9, beta2 = 0.95 }),
            new AdamW.ParamGroup([bRef], new AdamW.Options { LearningRate = 1e-2, weight_decay = 0, beta1 = 0.9, beta2 = 0.95 }),
        ], 1e-2);
        var plain = new Parameter(w0.clone());
        var plainRef = new Parameter(w0.clone());
        using var adam = new AdamOptimizer([("p", plain)]) { Fused = false };
        using var adamRef = optim.Adam([plainRef], lr: 3e-3);
        foreach (double lr in new[] { 1e-2, 5e-3, 2e-2, 1e-3 })
        {
            var gw = randn(64, 33, generator: g);
            var gb = randn(33, generator: g);
            (w.grad, wRef.grad, b.grad, bRef.grad) = (gw.clone(), gw.clone(), gb.clone(), gb.clone());
            (plain.grad, plainRef.grad) = (gw.clone(), gw.clone());
            foreach (var group in reference.ParamGroups) group.LearningRate = lr;
            adamW.Step(lr);
            reference.step();
            adam.Step(3e-3);
            adamRef.step();
            Assert.True(w.eq(wRef).all().item<bool>(), $"w at lr {lr}: {TrainerTestKit.MaxAbsDiff(w, wRef)}");
            Assert.True(b.eq(bRef).all().item<bool>(), $"b at lr {lr}: {TrainerTestKit.MaxAbsDiff(b, bRef)}");
            Assert.True(plain.eq(plainRef).all().item<bool>(), $"Adam at step with lr {lr}: {TrainerTestKit.MaxAbsDiff(plain, plainRef)}");
        }
        // A negative weight decay is refused by name.
        var ex = Assert.Throws<SaeSharpException>(() => new AdamOptimizer([("w", new Parameter(zeros(2)), -0.1)]));
        Assert.Contains("weight decay of 'w'", ex.Message);
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
