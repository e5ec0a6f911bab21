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

    // cosineannealingwarmrestarts: SAELens's get_lr_scheduler gives PyTorch's CosineAnnealingWarmRestarts(T_0 = M // C,
    // eta_min = lr_end), M = T − W − D, between the LinearLR warm-up and decay of a SequentialLR. Expected values by hand
    // from torch's formula eta_min + (eta_max − eta_min)(1 + cos(π T_cur/T_i))/2 with T_cur = j mod T_0 (T_mult 1), lr 1:
    // (1 + cos(πk/5))/2 = 1, 0.904508, 0.654508, 0.345492, 0.095492; (1 + cos(πk/4))/2 = 1, 0.853553, 0.5, 0.146447;
    // (1 + cos(πk/3))/2 = 1, 0.75, 0.25; each times (1 − 0.1) plus 0.1.
    // The four rows are also what SAELens's own get_lr_scheduler gives under PyTorch 1.13 (Debian python3-torch; optim.py
    // from SAELens HEAD, LRScheduler spelled _LRScheduler), lr read before each step, rounded to 6 places: identical.
    [Theory]
    // T 10, C 2: T_0 = 5, back at lr at step 5.
    [InlineData(10, 0, 0, 2, new[] { 1, 0.914058, 0.689058, 0.410942, 0.185942, 1, 0.914058, 0.689058, 0.410942, 0.185942 })]
    // T 13, warm-up 2 (0.5, 1), C 2 over M 8: T_0 = 4 from step 2, restart at step 6; decay 3 from lr_end: 0.1, 0.1·2/3, 0.1/3.
    [InlineData(13, 2, 3, 2, new[] { 0.5, 1, 1, 0.868198, 0.55, 0.231802, 1, 0.868198, 0.55, 0.231802, 0.1, 0.066667, 0.033333 })]
    // T 7, C 2: T_0 = 7 // 2 = 3; the remainder step 6 starts a third, partial cycle at lr.
    [InlineData(7, 0, 0, 2, new[] { 1, 0.775, 0.325, 1, 0.775, 0.325, 1 })]
    // C 3 with warm-up 1: M 9, T_0 3, restarts at steps 4 and 7.
    [InlineData(10, 1, 0, 3, new[] { 1, 1, 0.775, 0.325, 1, 0.775, 0.325, 1, 0.775, 0.325 })]
    public void CosineAnnealingWarmRestartsMatchesTorchsFormula(long steps, long warmUp, long decay, int cycles, double[] expected)
    {
        Assert.Equal(steps, expected.Length);
        for (int s = 0; s < steps; s++)
            Assert.Equal(expected[s], Schedules.LearningRate("cosineannealingwarmrestarts", 1.0, 0.1, warmUp, decay, steps, s, cycles), 6);
        // Through a config: n_restart_cycles and lr_end's default lr/10 (SAELens).
        var cfg = new TrainerConfig { TotalTrainingSteps = steps, LrWarmUpSteps = warmUp, LrDecaySteps = decay, NRestartCycles = cycles,
                                      LrSchedulerName = "CosineAnnealingWarmRestarts" };
        cfg.Validate();
        for (int s = 0; s < steps; s++)
            Assert.Equal(2 * expected[s], Schedules.LearningRate(cfg, 2.0, s), 5);
    }

    [Fact]
    public void OneRestartCycleIsSaeLensCosineAnnealing()
    {
        for (int s = 0; s < 10; s++)
            Assert.Equal(Schedules.LearningRate("cosineannealing", 1.0, 0.1, 2, 3, 10, s),
                         Schedules.LearningRate("cosineannealingwarmrestarts", 1.0, 0.1, 2, 3, 10, s, 1), 12);
    }

    [Theory]
    [InlineData("cosineannealingwarmrestarts", 0, 0, 0.1, "n_restart_cycles = 0")]
    [InlineData("cosineannealingwarmrestarts", 0, 11, 0.1, "n_restart_cycles 11 is more cycles than the 10 steps")]
    [InlineData("cosineannealingwarmrestarts", 2, 1, 0.0, "cosineannealingwarmrestarts with lr_decay_steps needs lr_end > 0")]
    [InlineData("constant", 0, 3, 0.1, "n_restart_cycles 3 applies to lr_scheduler_name \"cosineannealingwarmrestarts\" only")]
    public void BadRestartCyclesAreRejectedNamingTheField(string scheduler, long decay, int cycles, double lrEnd, string expected)
    {
        var cfg = new TrainerConfig { TotalTrainingSteps = 10, LrSchedulerName = scheduler, LrDecaySteps = decay, NRestartCycles = cycles, LrEnd = lrEnd };
        var e = Assert.Throws<SaeSharpException>(() => cfg.Validate("cfg.json"));
        Assert.StartsWith("cfg.json: ", e.Message);
        Assert.Contains(expected, e.Message);
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
