using SaeSharp.Evaluation;
using SaeSharp.Saes;
using SaeSharp.Training;
using static TorchSharp.torch;
using static SaeSharp.Tests.Training.TrainerTestKit;

namespace SaeSharp.Tests.Training;

public class RecipeDefaultsTests
{
    [Theory]
    [InlineData(3_000_000, 4096, 150_000)]        // the 3M-token run of issue #9: a twentieth of it
    [InlineData(1_000_000_000, 4096, 10_000_000)] // long runs keep sparsify's 10M tokens
    [InlineData(5_000, 512, 512)]                 // never below one batch
    public void DeadWindowFollowsTheRunLength(long runTokens, int batch, long expected) =>
        Assert.Equal(expected, TrainerConfig.DefaultDeadFeatureWindow(runTokens, batch));

    [Fact]
    public void TrainerRecordsTheDeadWindowItUsed()
    {
        using var source = new InMemorySource(SparseData(256, 8, 12, 0.1, seed: 2));
        var cfg = Config(100, batch: 32);
        cfg.DeadFeatureWindow = null;
        using var trainer = new SaeTrainer(cfg, source, [new SaeSlot("a", Standard(8, 16))]);
        Assert.Equal(100 * 32 / 20, trainer.Config.DeadFeatureWindow);
    }

    [Fact]
    public void ProgressShowsLatentsThatHaveNotFiredBeforeTheWindowIsReached()
    {
        // Latent 0 always fires; latents 1 (bias −100) and 2 (zero pre-activation) never do. The window (1M rows) is
        // far from reached, so the dead mask is empty, but 2 of 3 latents have not fired in any row so far.
        using var source = new InMemorySource(SparseData(64, 2, 4, 0.5, seed: 3));
        var sae = new StandardSae(new SaeConfig { DIn = 2, DSae = 3, ApplyBDecToInput = false });
        using (no_grad())
        {
            sae.WEnc.zero_();
            sae.BEnc.copy_(tensor(new float[] { 100, -100, 0 }));
            sae.WDec.copy_(eye(3, 2));
        }
        var cfg = Config(3, batch: 16);
        cfg.Lr = 1e-12;
        cfg.InitializeWeights = false;
        cfg.LogEverySteps = 1;
        var progress = new ListProgress();
        using var trainer = new SaeTrainer(cfg, source, [new SaeSlot("a", sae)]) { Progress = progress };
        trainer.Run().Dispose();
        Assert.Equal(3, progress.Reports.Count);
        foreach (var p in progress.Reports) Assert.Equal(2.0 / 3, p.Saes[0].DeadFraction, 12);
    }

    [Fact]
    public void RunConfigScalesThePapersScheduleToTheRun()
    {
        var run = new TrainerConfig { TotalTrainingSteps = 1000, TrainBatchSizeTokens = 512 };
        var c = SaeRecipes.RunConfig("relu-april", run, dSae: 1024);
        Assert.Equal(100, c.LrWarmUpSteps);               // min(1000, T/10)
        Assert.Equal("constant", c.LrSchedulerName);      // linear decay to 0 ...
        Assert.Equal(200, c.LrDecaySteps);                // ... over the last fifth
        Assert.Equal(50, c.L1WarmUpSteps);                // 5 % of the run
        Assert.Equal(1.0, c.MaxGradNorm);
        Assert.Equal("zeros", c.BDecInitMethod);           // dictionary_learning's AutoEncoder (BENCHMARKS.md "Recipes")
        Assert.Equal("zeros", SaeRecipes.RunConfig("relu", run, 1024).BDecInitMethod);
        Assert.Equal("geometric_median", SaeRecipes.RunConfig("gated", run, 1024).BDecInitMethod);
        Assert.Equal(1.0, SaeRecipes.RunConfig("gated", run, 1024).DecoderInitNorm);   // dictionary_learning's GatedAutoEncoder
        Assert.Equal(0.1, c.DecoderInitNorm);
        Assert.Equal(1e-3, c.Lr);                         // dictionary_learning's StandardTrainerAprilUpdate
        Assert.Null(c.ResampleSteps);

        var longRun = new TrainerConfig { TotalTrainingSteps = 200_000, TrainBatchSizeTokens = 4096 };
        var l = SaeRecipes.RunConfig("gated", longRun, dSae: 1024);
        Assert.Equal(1000, l.LrWarmUpSteps);
        Assert.Equal(5e-5, l.Lr);                         // the paper's rate once 1/T is below it
        Assert.Equal(2e-4, SaeRecipes.RunConfig("gated", new TrainerConfig { TotalTrainingSteps = 5000 }, 1024).Lr!.Value, 12);
        Assert.Equal(1e-3, SaeRecipes.RunConfig("relu-april", longRun, 1024).Lr);
        // k-sparse recipes: min(3e-3, 2/T) in short runs, Gao et al.'s 2e-4/√(d_sae/2¹⁴) once that is larger.
        Assert.Equal(2e-3, SaeRecipes.RunConfig("topk", run, 1024).Lr!.Value, 12);
        Assert.Equal(3e-3, SaeRecipes.RunConfig("batchtopk", new TrainerConfig { TotalTrainingSteps = 300 }, 8192).Lr!.Value, 12);
        Assert.Equal(1e-4, SaeRecipes.RunConfig("matryoshka", new TrainerConfig { TotalTrainingSteps = 50_000 }, 65536).Lr!.Value, 12);
        Assert.Equal(8e-4, SaeRecipes.RunConfig("topk", longRun, 1024).Lr!.Value, 12);
        Assert.Equal(0, SaeRecipes.RunConfig("topk", run, 1024).L1WarmUpSteps);
        Assert.Equal(new long[] { 250, 500, 750 }, SaeRecipes.RunConfig("relu", run, 1024).ResampleSteps);
    }

    [Fact]
    public void RunConfigKeepsWhatTheUserGave()
    {
        var run = new TrainerConfig { TotalTrainingSteps = 1000, Lr = 3e-4, LrWarmUpSteps = 7, LrSchedulerName = "cosineannealing" };
        var c = SaeRecipes.RunConfig("gated", run, 1024, new HashSet<string> { "lr", "lr_warm_up_steps", "lr_scheduler_name" });
        Assert.Equal(3e-4, c.Lr);
        Assert.Equal(7, c.LrWarmUpSteps);
        Assert.Equal("cosineannealing", c.LrSchedulerName);
        Assert.Equal(0, c.LrDecaySteps);   // the user's schedule stays whole
        Assert.Equal(50, c.L1WarmUpSteps); // the other rules still apply
    }

    [Fact]
    public void WarningsNameTheProblemAndTheFlag()
    {
        var cfg = new SaeConfig { Architecture = SaeArchitectures.Standard, DIn = 16, DSae = 64 };
        var good = new SaeEvalResult { Fvu = 0.1, L0 = 8, DeadFraction = 0.1 };
        Assert.Empty(TrainingWarnings.For(good, cfg, 1000, ceLossRecovered: 0.9));
        var bad = new SaeEvalResult { Fvu = 0.7, L0 = 20, DeadFraction = 0.6 };
        var w = TrainingWarnings.For(bad, cfg, 1000, ceLossRecovered: 0.3);
        Assert.Equal(4, w.Count);
        Assert.Contains("FVU 0.700", w[0]);
        Assert.Contains("--steps", w[0]);
        Assert.Contains("--arch gated or jumprelu", w[0]); // L1 shrinkage at low L0 (docs/recipes.md, issue #15 §2)
        Assert.Contains("L0 20.0 is above d_in 16", w[1]);
        Assert.Contains("--target-l0", w[1]);
        Assert.Contains("60%", w[2].Replace(" ", ""));
        Assert.Contains("CE loss recovered", w[3]);
        var topk = new SaeConfig { Architecture = SaeArchitectures.TopK, DIn = 16, DSae = 64, K = 4 };
        Assert.Contains("--k", TrainingWarnings.For(bad, topk, 1000)[0]);
        Assert.DoesNotContain("shrinks", TrainingWarnings.For(bad, topk, 1000)[0]);
        // JumpReLU's coefficient is SAELens's l0_coefficient: the advice names it beside --l1, the others' does not.
        var jumprelu = new SaeConfig { Architecture = SaeArchitectures.JumpReLU, DIn = 16, DSae = 64 };
        Assert.All(TrainingWarnings.For(bad, jumprelu, 1000, ceLossRecovered: 0.3), line => Assert.Contains("l0_coefficient", line));
        Assert.DoesNotContain("l0_coefficient", string.Join("\n", w));
        // matching_pursuit has no coefficient: the advice names its fields.
        var pursuit = new SaeConfig { Architecture = SaeArchitectures.MatchingPursuit, DIn = 16, DSae = 64 };
        var mp = string.Join("\n", TrainingWarnings.For(bad, pursuit, 1000, ceLossRecovered: 0.3));
        Assert.Contains("max_iterations", mp);
        Assert.DoesNotContain("--l1", mp);
        Assert.DoesNotContain("--target-l0", mp);
        // What `--lr 1e3` left (FVU 2e13, measured): the cause named is the learning rate, not the steps or sparsity.
        foreach (double fvu in new[] { 2.19e13, double.PositiveInfinity, double.NaN })
        {
            var diverged = TrainingWarnings.For(new SaeEvalResult { Fvu = fvu, L0 = 8, DeadFraction = 0.1 }, topk, 100);
            var only = Assert.Single(diverged);
            Assert.Contains("training diverged", only);
            Assert.Contains("lower --lr", only);
            Assert.DoesNotContain("raise --steps", only);
        }
        // 10 steps of TopK on synthetic rows left FVU 1.12 (measured): too short a run, not a diverged one; a short run
        // far above 1 (or at 1.12 after 100 steps) is still called diverged.
        var early = Assert.Single(TrainingWarnings.For(new SaeEvalResult { Fvu = 1.119, L0 = 8, DeadFraction = 0 }, topk, 10));
        Assert.Contains("after only 10 steps", early);
        Assert.Contains("Raise --steps", early);
        Assert.DoesNotContain("training diverged", early);
        Assert.Contains("training diverged", Assert.Single(TrainingWarnings.For(new SaeEvalResult { Fvu = 1.119, L0 = 8, DeadFraction = 0 }, topk, 100)));
        Assert.Contains("training diverged", Assert.Single(TrainingWarnings.For(new SaeEvalResult { Fvu = 50, L0 = 8, DeadFraction = 0 }, topk, 10)));
    }

    // ---- the recipes on synthetic data: 64 unit directions in 32 dims, about 3 active per row, plus an offset ----

    /// <summary>docs/recipes.md: at defaults (λ = 5·√(32/4096) ≈ 0.44) and 400 steps of 128 rows, the L1 recipes reach
    /// FVU 0.04–0.12 at L0 30–38 of 128 latents (measured); the bounds leave room for other seeds and CPUs. relu-april
    /// starts b_dec at zero (dictionary_learning's AutoEncoder, measured better on the built-in model's activations), and
    /// this data's constant offset (0.5 per coordinate) is then covered by latents for most of the 400 steps: L0 66.</summary>
    [Theory]
    [InlineData("relu", 48)]
    [InlineData("relu-april", 80)]
    [InlineData("gated", 48)]
    public void L1RecipesAtDefaultsReachTheDocumentedFvuAndL0(string recipe, double maxL0)
    {
        var (fvu, l0, _) = TrainRecipe(recipe, 400);
        Assert.True(fvu < 0.2, $"{recipe}: FVU {fvu}");
        Assert.InRange(l0, 2, maxL0);
    }

    [Theory]
    [InlineData("relu")]
    [InlineData("relu-april")]
    [InlineData("gated")]
    public void TargetL0EndsWithinAFifthOfTheTarget(string recipe)
    {
        var (_, l0, lambda) = TrainRecipe(recipe, 400, targetL0: 6);
        Assert.InRange(l0, 4.8, 7.2);
        // λ rose from the default (which ends at L0 30–38 here) to hold a sparser code.
        Assert.True(lambda > 2 * SaeRecipes.DefaultSparsityCoefficient(recipe, 32), $"λ {lambda}");
    }

    /// <summary>JumpReLU under --target-l0: dictionary_learning's penalty λ·(L0/N − 1)² with the two-sided controller,
    /// bandwidth 0.05, a halved encoder and thresholds started from the data at L0 min(d_sae/2, 4N) ends within a fifth of
    /// the target from below (N 20 is denser than this data's own code, L0 ≈ 3) and from above (measured: L0 7.1 and
    /// 20.5, FVU 0.18 and 0.06; the relu controller at N 6 reaches FVU 0.74).</summary>
    [Theory]
    [InlineData(6, 0.25)]
    [InlineData(20, 0.1)]
    public void JumpReluTargetL0EndsWithinAFifthOfTheTarget(double target, double maxFvu)
    {
        var (fvu, l0, lambda) = TrainRecipe("jumprelu", 400, targetL0: target);
        Assert.InRange(l0, 0.8 * target, 1.2 * target);
        Assert.True(fvu < maxFvu, $"FVU {fvu}");
        Assert.True(lambda > 0 && double.IsFinite(lambda), $"λ {lambda}");
    }

    [Fact]
    public void JumpReluTargetL0StartHalvesTheEncoderAndStartsAtTheRequestedL0()
    {
        using var scope = NewDisposeScope();
        var sae = (JumpReluSae)SaeRecipes.Create("jumprelu", 16, 64);
        sae.InitializeWeights(new Generator(3));
        var encoder = sae.WEnc.detach().clone();
        var x = randn(4000, 16, generator: new Generator(4));
        sae.InitializeForTargetL0(x, 8);
        using var _ = no_grad();
        Assert.True(sae.WEnc.allclose(encoder * 0.5), "W_enc halved");
        // Each latent fires on about 8/64 of the rows (its own 7/8 quantile), so the mean L0 is about 8.
        var pre = (x - sae.BDec).matmul(sae.WEnc) + sae.BEnc;
        var firing = pre.gt(sae.Threshold).to(ScalarType.Float32);
        var perLatent = firing.mean([0]);
        Assert.True(perLatent.sub(8.0 / 64).abs().max().item<float>() < 0.01, "every latent fires on an eighth of the rows");
        Assert.Equal(8, firing.sum(1).mean().item<float>(), 0.3);
    }

    [Fact]
    public void TargetL0SetPointMovesGeometricallyToTheTargetOverTheFirstTwoFifths()
    {
        Assert.Equal(64, TargetL0Control.SetPoint(64, 4, 0, 1000), 9);
        Assert.Equal(16, TargetL0Control.SetPoint(64, 4, 200, 1000), 9); // halfway in log space at step 0.4·1000/2
        Assert.Equal(4, TargetL0Control.SetPoint(64, 4, 400, 1000), 9);
        Assert.Equal(4, TargetL0Control.SetPoint(64, 4, 900, 1000), 9);
        Assert.Equal(10, TargetL0Control.SetPoint(4, 10, 0, 1000), 9);   // never below the target
    }


    /// <summary>The pre-activation loss (SAELens's <c>calculate_pre_act_loss</c>) computed by hand: c·mean_n Σ over dead
    /// latents of ReLU(θ_j − pre_nj)·‖W_dec[j]‖, and its gradient on b_enc: −c·‖W_dec[j]‖·(share of rows below θ_j).</summary>
    [Fact]
    public void JumpReluPreActLossIsSaeLensFormulaOnDeadLatentsOnly()
    {
        using var scope = NewDisposeScope();
        var sae = new JumpReluSae(new SaeConfig { Architecture = SaeArchitectures.JumpReLU, DIn = 3, DSae = 4 });
        sae.Training.PreActLossCoefficient = 0.5;
        using (no_grad())
        {
            sae.WEnc.copy_(tensor(new float[] { 1, 0, 0, 1, 0, 1, 0, 0, 0, 0, 1, 0 }).reshape(3, 4));
            sae.BEnc.copy_(tensor(new float[] { 0, -1, 0, 0 }));
            sae.WDec.copy_(tensor(new float[] { 1, 0, 0, 0, 2, 0, 0, 0, 3, 1, 0, 0 }).reshape(4, 3));
            sae.Threshold.copy_(tensor(new float[] { 0.1f, 0.5f, 0.2f, 2 }));
        }
        // Rows: pre = x·W_enc + b_enc. Latents 1 and 3 are dead.
        var x = tensor(new float[] { 1, 0.2f, 0, 0, 1, 0 }).reshape(2, 3);
        var dead = tensor(new[] { false, true, false, true });
        var o = sae.TrainingForward(x, x, new SaeTrainContext { DeadMask = dead });
        // pre[:,1] = x0·0 + x1·1 − 1 = {−0.8, 0}; pre[:,3] = x0 = {1, 0}. θ1 = 0.5, θ3 = 2; ‖W_dec[1]‖ = 2, ‖W_dec[3]‖ = 1.
        // Row 0: (0.5 + 0.8)·2 + (2 − 1)·1 = 3.6; row 1: (0.5 − 0)·2 + 2·1 = 3. Mean 3.3, times 0.5.
        Assert.Equal(1.65, o.Losses["pre_act_loss"].item<float>(), 5);
        sae.zero_grad();
        var only = sae.TrainingForward(x, x, new SaeTrainContext { DeadMask = dead, SparsityScale = 0 });
        (only.Loss - only.Losses["mse_loss"]).backward();
        var g = sae.BEnc.grad!;
        Assert.Equal(-0.5 * 2, g[1].item<float>(), 5);   // both rows below θ1
        Assert.Equal(-0.5 * 1, g[3].item<float>(), 5);   // both rows below θ3
        Assert.Equal(0, g[0].item<float>(), 6);          // alive: no pre-activation loss
        var none = sae.TrainingForward(x, x, new SaeTrainContext { DeadMask = zeros(4, dtype: ScalarType.Bool) });
        Assert.False(none.Losses.ContainsKey("pre_act_loss"));
    }

    /// <summary>Latents made dead at the start (b_enc −5: no row reaches θ) get no gradient from the reconstruction or
    /// the L0 penalty; with the pre-activation loss they fire again within 150 steps, without it they stay dead.</summary>
    [Fact]
    public void JumpReluPreActLossRevivesDeadLatents()
    {
        double with = DeadAfterTraining(0.01), without = DeadAfterTraining(null);
        Assert.True(with < 0.1, $"dead {with} with the pre-activation loss");
        Assert.True(without > 0.45, $"dead {without} without it");
    }

    private static double DeadAfterTraining(double? coefficient)
    {
        using var scope = NewDisposeScope();
        var data = SparseData(2048, 16, 32, 0.1, seed: 4, offset: 0);
        var sae = (JumpReluSae)SaeRecipes.Create("jumprelu", 16, 32);
        sae.Training.PreActLossCoefficient = coefficient;
        sae.InitializeWeights(new Generator(9));
        using (no_grad())
        {
            sae.Threshold.fill_(0.05);
            sae.BEnc.narrow(0, 0, 16).fill_(-5);
        }
        var cfg = Config(150, batch: 64);
        cfg.InitializeWeights = false;
        cfg.Lr = 3e-3;
        cfg.DeadFeatureWindow = 128;
        using var source = new InMemorySource(data.narrow(0, 0, 1536).clone(), seed: 2);
        using var trainer = new SaeTrainer(cfg, source, [new SaeSlot("a", sae)]);
        using var result = trainer.Run();
        using var _ = no_grad();
        var f = result.Saes[0].Sae.Encode(data.narrow(0, 1536, 512));
        return f.ne(0).any(0).logical_not().to(ScalarType.Float32).mean().item<float>();
    }

    internal static (double Fvu, double L0, double Lambda) TrainRecipe(string recipe, int steps, double? targetL0 = null) =>
        TrainRecipe(recipe, steps, targetL0, out _);

    internal static (double Fvu, double L0, double Lambda) TrainRecipe(string recipe, int steps, double? targetL0, out double dead,
        Action<Sae>? configure = null)
    {
        using var scope = NewDisposeScope();
        var all = SparseData(6144, 32, 64, 0.05, seed: 11);
        var train = all.narrow(0, 0, 4096).clone();
        var eval = all.narrow(0, 4096, 2048);
        var sae = SaeRecipes.Create(recipe, 32, 128, k: null, totalSteps: steps);
        if (targetL0 is double t) SaeRecipes.AdaptToTargetL0(sae, t);
        configure?.Invoke(sae);
        var run = new TrainerConfig
        {
            TotalTrainingSteps = steps, TrainBatchSizeTokens = 128, NormalizeActivations = "expected_average_only_in",
            NBatchesForNormEstimate = 8, BDecInitRows = 1024, LogEverySteps = steps, Seed = 5,
        };
        using var source = new InMemorySource(train, seed: 5);
        using var trainer = new SaeTrainer(run, source, [new SaeSlot(recipe, sae, SaeRecipes.RunConfig(recipe, run, 128))]);
        using var result = trainer.Run();
        using var _ = no_grad();
        var (y, f) = result.Saes[0].Sae.Run(eval);
        double fvu = ((y - eval).pow(2).sum() / (eval - eval.mean([0], keepdim: true)).pow(2).sum()).item<float>();
        double l0 = f.ne(0).sum(1).to(ScalarType.Float32).mean().item<float>();
        dead = f.ne(0).any(0).logical_not().to(ScalarType.Float32).mean().item<float>();
        double lambda = result.Saes[0].Sae.Training.SparsityCoefficient;
        sae.Dispose();
        return (fvu, l0, lambda);
    }
}

public class TargetL0ControlDynamicsTests
{
    /// <summary>The controller against a model of the L1 recipes' response: the equilibrium L0 falls as λ^−0.6
    /// (relu-april on the built-in model's activations: L0 46 at λ 0.88, about 15 at λ 5.9) and the batch L0 follows it in
    /// log space with a time constant of 20 steps, from a random encoder's d_sae/2; the lr decay of the last fifth freezes
    /// it. In 488 steps from the default λ 0.88 the run must end within a fifth of targets 12 and 32 without dipping below
    /// half the target on the way. Gain 0.01 ends at 18.6 and 40.8 here (on the real activations it ended at 15.2 for 12).</summary>
    [Theory]
    [InlineData(12)]
    [InlineData(32)]
    public void ControllerReachesALowTargetOnAModelOfTheL1Response(double target)
    {
        var cfg = new SaeSharp.Saes.SaeConfig { Architecture = SaeSharp.Saes.SaeArchitectures.Standard, DIn = 128, DSae = 1024 };
        var training = new SaeSharp.Saes.SaeTrainingOptions { SparsityCoefficient = 0.88, TargetL0 = target, AdaptToTargetL0 = true };
        const long steps = 488;
        double logL0 = Math.Log(512);
        double lowest = double.MaxValue;
        for (long s = 0; s < steps; s++)
        {
            double equilibrium = 46 * Math.Pow(training.SparsityCoefficient / 0.88, -0.6);
            // The lr decays over the last fifth: L0 stops following λ there.
            double rate = s < 0.8 * steps ? 1.0 / 20 : 1.0 / 20 * (steps - s) / (0.2 * steps);
            logL0 += rate * (Math.Log(equilibrium) - logL0);
            TargetL0Control.Update(training, cfg, Math.Exp(logL0), s, steps);
            if (s > steps / 2) lowest = Math.Min(lowest, Math.Exp(logL0));
        }
        double l0 = Math.Exp(logL0);
        Assert.InRange(l0, 0.8 * target, 1.2 * target);
        Assert.True(lowest > 0.5 * target, $"dipped to {lowest}");
    }
}
