using SaeSharp.Training;

namespace SaeSharp.Tests.Training;

public class SchedulesTests
{
    [Theory]
    [InlineData(0, 2.5e-4)]
    [InlineData(1, 5e-4)]
    [InlineData(3, 1e-3)]
    [InlineData(9, 1e-3)]
    public void ConstantWithWarmUpRampsLinearlyFromOneOverW(long step, double expected) =>
        Assert.Equal(expected, Schedules.LearningRate("constant", 1e-3, 0, 4, 0, 10, step), 12);

    [Theory]
    [InlineData(5, 1.0)]      // before the last 4 steps
    [InlineData(6, 0.775)]    // p = 1/4: 1 + (0.1 − 1)/4
    [InlineData(7, 0.55)]
    [InlineData(9, 0.1)]      // p = 1: lr_end
    public void LinearDecaysToLrEndOverTheLastDecaySteps(long step, double expected) =>
        Assert.Equal(expected, Schedules.LearningRate("linear", 1.0, 0.1, 0, 4, 10, step), 12);

    [Theory]
    [InlineData(0, 0.5)]                 // warm-up 1/2
    [InlineData(1, 1.0)]                 // warm-up 2/2
    [InlineData(2, 0.9619397662556434)]  // p = 1/8: (1 + cos(π/8))/2
    [InlineData(5, 0.5)]                 // p = 1/2
    [InlineData(9, 0.0)]                 // p = 1
    public void CosineWithoutDecayStepsDecaysOverEverythingAfterWarmUp(long step, double expected) =>
        Assert.Equal(expected, Schedules.LearningRate("cosine", 1.0, 0.0, 2, 0, 10, step), 12);

    [Fact]
    public void LrEndDefaultsToATenthOfLr()
    {
        var cfg = new TrainerConfig { TotalTrainingSteps = 10, LrSchedulerName = "linear", LrDecaySteps = 2 };
        Assert.Equal(0.2, Schedules.LearningRate(cfg, 2.0, 9), 12);
    }

    [Theory]
    [InlineData(0, 0.0)]
    [InlineData(2, 0.5)]
    [InlineData(3, 0.75)]
    [InlineData(4, 1.0)]
    [InlineData(100, 1.0)]
    public void SparsityWarmUpRampsFromZeroToOne(long step, double expected) =>
        Assert.Equal(expected, Schedules.SparsityScale(4, step), 12);

    [Fact]
    public void NoSparsityWarmUpMeansFullCoefficient() => Assert.Equal(1.0, Schedules.SparsityScale(0, 0));

    // Expected values: SAELens's get_lr_scheduler (sae_lens/training/optim.py) run under PyTorch 1.13 with lr 1 and T 10,
    // reading the optimiser's lr before each optimizer.step()/scheduler.step() pair.
    [Theory]
    [InlineData(0, 4, new[] { 1.0, 1, 1, 1, 1, 1, 1, 0.75, 0.5, 0.25 })]   // decay: the first decay step still at lr
    [InlineData(2, 4, new[] { 0.5, 1, 1, 1, 1, 1, 1, 0.75, 0.5, 0.25 })]
    [InlineData(4, 0, new[] { 0.25, 0.5, 0.75, 1, 1, 1, 1, 1, 1, 1 })]
    public void ConstantMatchesSaeLensIgnoringLrEnd(long warmUp, long decay, double[] expected)
    {
        for (int s = 0; s < 10; s++)
            Assert.Equal(expected[s], Schedules.LearningRate("constant", 1.0, 0.1, warmUp, decay, 10, s), 12);
    }

    [Theory]
    [InlineData(2, 0, 0.1, new[] { 0.5, 1, 1, 0.965746, 0.868198, 0.722208, 0.55, 0.377792, 0.231802, 0.134254 })]
    [InlineData(2, 3, 0.1, new[] { 0.5, 1, 1, 0.914058, 0.689058, 0.410942, 0.185942, 0.1, 0.066667, 0.033333 })]
    [InlineData(0, 0, 0.0, new[] { 1, 0.975528, 0.904508, 0.793893, 0.654508, 0.5, 0.345492, 0.206107, 0.095492, 0.024472 })]
    public void CosineAnnealingMatchesSaeLens(long warmUp, long decay, double lrEnd, double[] expected)
    {
        for (int s = 0; s < 10; s++)
            Assert.Equal(expected[s], Schedules.LearningRate("cosineannealing", 1.0, lrEnd, warmUp, decay, 10, s), 6);
    }

    [Fact]
    public void CosineAnnealingDecayToZeroFromZeroIsRejectedAsInSaeLens()
    {
        var cfg = new TrainerConfig { TotalTrainingSteps = 10, LrSchedulerName = "cosineannealing", LrDecaySteps = 2, LrEnd = 0 };
        var e = Assert.Throws<SaeSharpException>(() => cfg.Validate());
        Assert.Contains("lr_end", e.Message);
    }

    [Fact]
    public void SaeLensNamesAreNotAliasesOfSaeSharpsCosine() =>
        Assert.NotEqual(Schedules.LearningRate("cosine", 1.0, 0.1, 2, 0, 10, 3), Schedules.LearningRate("cosineannealing", 1.0, 0.1, 2, 0, 10, 3), 6);

    [Fact]
    public void WarmUpPlusDecayLongerThanTheRunIsRejectedNamingTheFields()
    {
        var cfg = new TrainerConfig { TotalTrainingSteps = 10, LrWarmUpSteps = 6, LrDecaySteps = 6, LrSchedulerName = "cosine" };
        var e = Assert.Throws<SaeSharpException>(() => cfg.Validate());
        Assert.Contains("lr_warm_up_steps", e.Message);
        Assert.Contains("lr_decay_steps", e.Message);
    }

    [Fact]
    public void ConfigRoundTripsThroughSnakeCaseJson()
    {
        var cfg = new TrainerConfig { Lr = 4e-4, AdamBeta1 = 0, L1WarmUpSteps = 7, ResampleSteps = [5, 9], NormalizeActivations = "expected_average_only_in", TotalTrainingSteps = 3 };
        var json = cfg.ToJson();
        Assert.Contains("\"l1_warm_up_steps\": 7", json);
        Assert.Contains("\"adam_beta1\": 0", json);
        var back = TrainerConfig.FromJson(json);
        Assert.Equal(json, back.ToJson());
    }
}
