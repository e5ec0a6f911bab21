using SaeSharp.Activations;
using SaeSharp.Saes;
using SaeSharp.Training;
using TorchSharp;
using static TorchSharp.torch;
using static SaeSharp.Tests.Training.TrainerTestKit;

namespace SaeSharp.Tests.Training;

public class SaeTrainerTests
{
    [Fact]
    public void TrainingOnSyntheticSparseDataLearnsASparseAccurateCode()
    {
        // rows: ~2 of 24 directions active, plus an offset (b_dec from the geometric median takes it)
        using var data = SparseData(1024, 16, 24, 0.08, seed: 1);
        using var source = new InMemorySource(data.clone(), seed: 1);
        var cfg = Config(200, batch: 64);
        cfg.BDecInitMethod = "geometric_median";
        cfg.BDecInitRows = 512;
        using var trainer = new SaeTrainer(cfg, source, [new SaeSlot("a", Standard(16, 48, l1: 0.3))]);
        using var result = trainer.Run();
        Assert.Equal(TrainingStatus.Completed, result.Status);
        Assert.Equal(200, result.Steps);
        Assert.Equal(200 * 64, result.Tokens);

        using var _ = no_grad();
        var (y, f) = result.Saes[0].Sae.Run(data);
        double mse = (y - data).pow(2).sum(1).mean().item<float>();
        double variance = (data - data.mean([0], keepdim: true)).pow(2).sum(1).mean().item<float>();
        double l0 = f.gt(0).sum(1).to(ScalarType.Float32).mean().item<float>();
        Assert.True(mse < 0.15 * variance, $"mse {mse} vs variance about the mean {variance}");
        Assert.True(l0 < 12, $"L0 {l0} of 48 latents"); // a random ReLU encoder fires about half of them
        var logged = result.LastProgress!.Saes[0];
        Assert.InRange(logged.L0, l0 - 3, l0 + 3); // the logged L0 of the last batch is of the same size
        Assert.InRange(logged.ExplainedVariance, 0.8, 1.0);
    }

    /// <summary>A step's logged L0 and explained variance are its batch's (both invariant to the row order): with the
    /// whole data set as the batch and a learning rate too small to move a float32 weight, they equal those of the
    /// trained SAE on the data, computed here directly (the test above only bounds them).</summary>
    [Fact]
    public void LoggedL0AndExplainedVarianceAreThoseOfTheStepsBatch()
    {
        using var data = SparseData(64, 8, 12, 0.2, seed: 3);
        using var source = new InMemorySource(data.clone(), seed: 2);
        var cfg = Config(1, batch: 64);
        cfg.Lr = 1e-30;
        // The April-update penalty: no decoder-norm constraint rescales the rows after the step.
        using var trainer = new SaeTrainer(cfg, source, [new SaeSlot("a", Standard(8, 24, penalty: SparsityPenalty.L1DecoderNorm))]);
        using var result = trainer.Run();
        var logged = result.LastProgress!.Saes[0];

        using var _ = no_grad();
        var (y, f) = result.Saes[0].Sae.Run(data);
        var x = data.to(ScalarType.Float64);
        double sse = (y.to(ScalarType.Float64) - x).pow(2).sum().item<double>();
        double aboutMean = (x - x.mean([0], keepdim: true)).pow(2).sum().item<double>();
        double l0 = f.ne(0).sum().item<long>() / 64.0;
        Assert.True(l0 > 0 && l0 < 24, $"L0 {l0}");
        Assert.Equal(l0, logged.L0, 9);
        Assert.Equal(1 - sse / aboutMean, logged.ExplainedVariance, 5);
    }

    [Fact]
    public void TheMeanRateIsTheRowsOfTheRunOverItsTimeAndTheReportRateIsPerInterval()
    {
        // Bounds independent of the clocks inside: the run's time T_n up to report n covers the report intervals, so
        // mean_n = R_n / T_n ≤ R_n / Σ(rows_i / rate_i); and T_n ends before Run returns, so mean_n ≥ R_n / (wall time of Run).
        using var source = new InMemorySource(SparseData(512, 8, 12, 0.1, seed: 3));
        var cfg = Config(12, batch: 32);
        cfg.LogEverySteps = 3;
        var progress = new ListProgress();
        using var trainer = new SaeTrainer(cfg, source, [new SaeSlot("a", Standard(8, 16))]) { Progress = progress };
        var wall = System.Diagnostics.Stopwatch.StartNew();
        trainer.Run().Dispose();
        double wallSeconds = wall.Elapsed.TotalSeconds;
        Assert.Equal([3L, 6, 9, 12], progress.Reports.Select(r => r.Step));
        double intervals = 0;
        foreach (var r in progress.Reports)
        {
            double rows = 3 * 32, runRows = r.Step * 32;
            Assert.True(r.RowsPerSecond > 0 && r.MeanRowsPerSecond > 0);
            intervals += rows / r.RowsPerSecond;
            Assert.InRange(r.MeanRowsPerSecond, runRows / wallSeconds, runRows / intervals * (1 + 1e-9));
        }
    }

    [Fact]
    public void StandardRecipeKeepsDecoderRowsUnitNormAfterEveryStep()
    {
        using var source = new InMemorySource(SparseData(256, 8, 12, 0.1, seed: 2));
        var sae = Standard(8, 16);
        using var trainer = new SaeTrainer(Config(10), source, [new SaeSlot("a", sae)]);
        for (int k = 1; k <= 5; k++)
        {
            trainer.Run(stopAtStep: k).Dispose();
            Assert.Equal(k, trainer.Step);
            var dev = (sae.WDec.detach().norm(1) - 1).abs().max().item<float>();
            Assert.True(dev < 1e-5, $"after step {k}: max |‖W_dec row‖ − 1| = {dev}");
        }
    }

    [Fact]
    public void SparsityTensorDeadMaskAndWarmUpReachTheSae()
    {
        // Hand-set encoder: latent 0 always fires, latent 1 never, latent 2 fires iff x0 > 0 (16 of 64 rows).
        var x = zeros(64, 2);
        x[TensorIndex.Slice(0, 16), 0] = tensor(1f);
        x[TensorIndex.Slice(16, 64), 0] = tensor(-1f);
        x[TensorIndex.Colon, 1] = tensor(0.5f);
        using var source = new InMemorySource(x);
        var sae = new RecordingSae(new SaeConfig { DIn = 2, DSae = 3, ApplyBDecToInput = false });
        using (no_grad())
        {
            sae.WEnc.copy_(tensor(new float[] { 0, 0, 1, 0, 0, 0 }).reshape(2, 3));
            sae.BEnc.copy_(tensor(new float[] { 100, -100, 0 }));
            sae.WDec.copy_(eye(3, 2));
        }
        var cfg = Config(4);
        cfg.Lr = 1e-12;
        cfg.InitializeWeights = false;
        cfg.DeadFeatureWindow = 64;
        cfg.L1WarmUpSteps = 4;
        using var trainer = new SaeTrainer(cfg, source, [new SaeSlot("r", sae)]);
        using var result = trainer.Run();

        // 4 batches of 32 = two passes over the 64 rows: firing fractions exactly 1, 0, 1/4
        var s = result.Saes[0].Sparsity;
        Assert.Equal(new long[] { 3 }, s.shape);
        Assert.Equal(Math.Log10(1 + 1e-10), s[0].item<float>(), 5);
        Assert.Equal(-10.0, s[1].item<float>(), 4);
        Assert.Equal(Math.Log10(0.25 + 1e-10), s[2].item<float>(), 5);

        // the dead mask handed to the SAE: latent 1 is dead once 64 rows passed without it firing (from step 2 on)
        Assert.Equal(new[] { "000", "000", "010", "010" }, sae.DeadMasks);
        Assert.Equal(new[] { 0.0, 0.25, 0.5, 0.75 }, sae.SparsityScales);
    }

    [Fact]
    public void NormalisationIsFoldedSoTheResultWorksOnRawActivations()
    {
        using var raw = SparseData(256, 8, 12, 0.2, seed: 3, scale: 37, offset: 5);
        using var source = new InMemorySource(raw.clone());
        var cfg = Config(20);
        cfg.NormalizeActivations = "expected_average_only_in";
        cfg.NBatchesForNormEstimate = 8; // 8 × 32 = the whole first pass
        cfg.BDecInitMethod = "mean";
        cfg.BDecInitRows = 256;
        var sae = Standard(8, 16);
        using var trainer = new SaeTrainer(cfg, source, [new SaeSlot("a", sae)]);
        using var result = trainer.Run();

        using var _ = no_grad();
        double expectedScale = Math.Sqrt(8) / raw.norm(1).mean().item<float>();
        Assert.Equal(expectedScale, result.ScaleIn, 4);
        Assert.Equal(result.ScaleIn, result.ScaleOut);
        double s = result.ScaleIn;
        var folded = result.Saes[0].Sae;
        Assert.Equal("none", folded.Cfg.NormalizeActivations);
        Assert.True(sae.BDec.abs().max().item<float>() > 0.1, "b_dec should matter in this test");
        var (yF, fF) = folded.Run(raw);
        var (yT, fT) = sae.Run(raw * s);
        Assert.True(MaxAbsDiff(fF, fT) < 1e-4, $"feature acts differ by {MaxAbsDiff(fF, fT)}");
        Assert.True(MaxAbsDiff(yF, yT / s) < 1e-3, $"reconstructions differ by {MaxAbsDiff(yF, yT / s)}");
        // the trainer's own SAE stays in training space
        Assert.True(MaxAbsDiff(sae.WEnc, folded.WEnc) > 1e-3);
    }

    [Fact]
    public void TranscoderTargetsGetTheirOwnScaleAndFoldBack()
    {
        using var x = SparseData(128, 6, 10, 0.3, seed: 15, scale: 20);
        using var map = randn(6, 4, generator: new Generator(16));
        using var target = x.matmul(map) * 3 + 1;
        using var source = new InMemorySource(x.clone(), target.clone());
        var cfg = Config(15);
        cfg.NormalizeActivations = "expected_average_only_in";
        cfg.NBatchesForNormEstimate = 4; // the whole first pass
        cfg.BDecInitMethod = "mean";
        cfg.BDecInitRows = 128;
        var sae = new StandardSae(new SaeConfig { DIn = 6, DSae = 12, DOut = 4, ApplyBDecToInput = false }) { Training = { SparsityCoefficient = 0.01 } };
        using var trainer = new SaeTrainer(cfg, source, [new SaeSlot("tc", sae)]);
        using var result = trainer.Run();

        using var _ = no_grad();
        Assert.Equal(Math.Sqrt(6) / x.norm(1).mean().item<float>(), result.ScaleIn, 4);
        Assert.Equal(Math.Sqrt(4) / target.norm(1).mean().item<float>(), result.ScaleOut, 4);
        // b_dec was initialised to the mean of the scaled targets (and has moved little since)
        Assert.True(MaxAbsDiff(sae.BDec, target.mean([0]) * result.ScaleOut) < 0.2);
        var folded = result.Saes[0].Sae;
        var yF = folded.forward(x);
        var yT = sae.forward(x * result.ScaleIn) / result.ScaleOut;
        Assert.True(MaxAbsDiff(yF, yT) < 1e-3 * target.abs().max().item<float>(), $"differ by {MaxAbsDiff(yF, yT)}");
    }

    [Fact]
    public void ResamplingRevivesDeadLatentsAndZeroesTheirAdamMoments()
    {
        using var data = SparseData(512, 8, 12, 0.2, seed: 4);
        using var source = new InMemorySource(data.clone());
        var cfg = Config(100);
        cfg.DeadFeatureWindow = 64;
        var sae = Standard(8, 16);
        using var trainer = new SaeTrainer(cfg, source, [new SaeSlot("a", sae)]);
        trainer.Run(stopAtStep: 10).Dispose();
        using (no_grad()) sae.BEnc.index_fill_(0, tensor(new long[] { 0, 1, 2, 3 }), -100); // kill latents 0..3
        trainer.Run(stopAtStep: 20).Dispose();

        var adam = trainer.Optimizer("a");
        using var dead = trainer.Statistics("a").DeadMask();
        Assert.Equal(new[] { true, true, true, true }, dead.narrow(0, 0, 4).data<bool>().ToArray());
        Assert.True(adam.ExpAvgSq("W_dec").narrow(0, 0, 4).abs().sum().item<float>() > 0, "moments of the killed rows should be non-zero before resampling");

        using var _ = no_grad();
        var before = sae.WEnc.detach().clone();
        var vBefore = adam.ExpAvgSq("W_enc").clone();
        var deadIdx = dead.nonzero().squeeze(1);
        var aliveMask = dead.logical_not();
        double aliveMean = before.norm(0).masked_select(aliveMask).mean().item<float>();
        using var gen = new Generator(7);
        int n = DeadLatentResampler.Resample(sae, adam, dead, data, data, gen);
        Assert.Equal((int)deadIdx.shape[0], n);

        foreach (var (name, dim) in new[] { ("W_dec", 0L), ("W_enc", 1L), ("b_enc", 0L) })
        {
            Assert.Equal(0f, adam.ExpAvg(name).index_select(dim, deadIdx).abs().max().item<float>());
            Assert.Equal(0f, adam.ExpAvgSq(name).index_select(dim, deadIdx).abs().max().item<float>());
        }
        // alive columns untouched, dead ones at 0.2 × mean alive norm, b_enc 0, decoder rows unit norm
        var alive = aliveMask.nonzero().squeeze(1);
        Assert.True(BitEqual(sae.WEnc.index_select(1, alive), before.index_select(1, alive)));
        Assert.True(BitEqual(adam.ExpAvgSq("W_enc").index_select(1, alive), vBefore.index_select(1, alive)));
        Assert.True(MaxAbsDiff(sae.WEnc.index_select(1, deadIdx).norm(0), full(n, 0.2 * aliveMean)) < 1e-5);
        Assert.Equal(0f, sae.BEnc.index_select(0, deadIdx).abs().max().item<float>());
        Assert.True(MaxAbsDiff(sae.WDec.index_select(0, deadIdx).norm(1), ones(n)) < 1e-5);
        // each new decoder row is a normalised data row minus b_dec
        var centred = data - sae.BDec;
        var unit = centred / centred.norm(1, keepdim: true);
        var bestCos = sae.WDec.index_select(0, deadIdx).matmul(unit.t()).max(1).values;
        Assert.True(bestCos.min().item<float>() > 0.9999f);
        // revived: each fires on some rows
        var fires = sae.Encode(data).index_select(1, deadIdx).gt(0).any(0);
        Assert.True(fires.all().item<bool>(), "every resampled latent should fire on the data");
    }

    /// <summary>Towards Monosemanticity's resampling draws inputs with probability proportional to the square of the
    /// loss (the squared error) on them, and points both the decoder row and the encoder column of a revived latent along
    /// the drawn input (minus b_dec). An SAE with zero weights reconstructs 0, so the rows e₁ and 2·e₂ have losses 1 and 4
    /// and weights 1 and 16: of 400 dead latents about 400·16/17 ≈ 376 (σ ≈ 4.7) take e₂, against 320 if the loss itself
    /// were the weight.</summary>
    [Fact]
    public void ResamplingDrawsInputsByTheirSquaredLossAndAlignsEncoderAndDecoder()
    {
        using var sae = new StandardSae(new SaeConfig { DIn = 2, DSae = 400 });
        using var x = tensor(new float[,] { { 1, 0 }, { 0, 2 } });
        using var dead = ones(400, dtype: ScalarType.Bool);
        using var gen = new Generator(3);
        Assert.Equal(400, DeadLatentResampler.Resample(sae, null, dead, x, x, gen));
        using var _ = no_grad();
        var wDec = sae.WDec.detach();
        var alongE2 = wDec[.., 1].gt(0.5f).sum().item<long>();
        Assert.InRange(alongE2, 355, 395);
        // Every decoder row is e₁ or e₂; every encoder column is 0.2 (× a mean alive norm of 1: none alive) times it.
        SaeSharp.Tests.Saes.SaeTestUtil.AssertClose(ones(400), wDec.abs().max(1).values, what: "unit decoder rows along an axis");
        SaeSharp.Tests.Saes.SaeTestUtil.AssertClose(wDec.t() * 0.2f, sae.WEnc.detach(), what: "encoder columns along the decoder rows");
        Assert.Equal(0f, sae.BEnc.detach().abs().max().item<float>());
    }

    [Fact]
    public void ConfiguredResampleStepRevivesLatentsDuringTraining()
    {
        using var data = SparseData(512, 8, 12, 0.2, seed: 5);
        using var source = new InMemorySource(data.clone());
        var cfg = Config(40);
        cfg.DeadFeatureWindow = 64;
        cfg.ResampleSteps = [20];
        cfg.ResampleSampleRows = 256;
        cfg.Lr = 1e-3;
        var sae = Standard(8, 16);
        using var trainer = new SaeTrainer(cfg, source, [new SaeSlot("a", sae)]);
        trainer.Run(stopAtStep: 5).Dispose();
        using (no_grad()) sae.BEnc.index_fill_(0, tensor(new long[] { 0, 1, 2 }), -100);
        using var result = trainer.Run();
        using var _ = no_grad();
        var fires = sae.Encode(data).narrow(1, 0, 3).gt(0).any(0);
        Assert.True(fires.all().item<bool>(), "killed latents should fire again after the resample step");
        using var dead = trainer.Statistics("a").DeadMask();
        Assert.False(dead.narrow(0, 0, 3).any().item<bool>());
    }

    [Fact]
    public void ResumeFromCheckpointIsBitExact()
    {
        using var data = SparseData(300, 8, 12, 0.15, seed: 6, scale: 3);
        var cfg = Config(20);
        cfg.NormalizeActivations = "expected_average_only_in";
        cfg.NBatchesForNormEstimate = 3;
        cfg.BDecInitMethod = "geometric_median";
        cfg.BDecInitRows = 64;
        cfg.LrWarmUpSteps = 3;
        cfg.LrSchedulerName = "cosine";
        cfg.L1WarmUpSteps = 5;
        cfg.MaxGradNorm = 0.5;
        cfg.DeadFeatureWindow = 96;
        cfg.ResampleSteps = [13];
        cfg.ResampleSampleRows = 64;
        cfg.LogEverySteps = 5;
        cfg.FeatureSamplingWindow = 7;
        var second = cfg.Clone();
        second.Lr = 3e-3;
        second.LrSchedulerName = "linear";
        second.LrDecaySteps = 6;
        second.ResampleSteps = null;
        second.AdamBeta1 = 0.5;

        SaeSlot[] Slots() => [new("a", Standard(8, 16)), new("b", Standard(8, 12, penalty: SparsityPenalty.L1DecoderNorm), second)];

        var dirA = TempDir();
        var dirB = TempDir();
        try
        {
            cfg.CheckpointPath = dirA;
            second.CheckpointPath = dirA;
            using var srcA = new InMemorySource(data.clone(), seed: 9);
            using var a = new SaeTrainer(cfg, srcA, Slots());
            using var resA = a.Run();

            cfg.CheckpointPath = dirB;
            second.CheckpointPath = dirB;
            using (var srcB = new InMemorySource(data.clone(), seed: 9))
            using (var b1 = new SaeTrainer(cfg, srcB, Slots()))
            using (var partial = b1.Run(stopAtStep: 10))
            {
                Assert.Equal(TrainingStatus.Stopped, partial.Status);
                Assert.EndsWith("step_000000010", partial.LastCheckpoint);
            }
            using var srcB2 = new InMemorySource(data.clone(), seed: 9);
            using var b2 = SaeTrainer.Resume(dirB, srcB2);
            Assert.Equal(10, b2.Step);
            using var resB = b2.Run();
            Assert.Equal(20, resB.Steps);
            Assert.Equal(resA.Tokens, resB.Tokens);
            Assert.Equal(resA.ScaleIn, resB.ScaleIn);

            foreach (var name in new[] { "a", "b" })
            {
                var wa = a.Saes[name == "a" ? 0 : 1].state_dict();
                var wb = b2.Saes[name == "a" ? 0 : 1].state_dict();
                foreach (var (k, t) in wa) Assert.True(BitEqual(t, wb[k]), $"{name}.{k} differs after resume");
                foreach (var (k, t) in a.Optimizer(name).StateTensors())
                    Assert.True(BitEqual(t, b2.Optimizer(name).StateTensors().Single(kv => kv.Key == k).Value), $"{name} adam {k} differs");
                Assert.True(BitEqual(a.Sparsity(name), b2.Sparsity(name)));
            }
            // the log of the resumed run continues the first one without duplicates
            var steps = File.ReadAllLines(Path.Combine(dirB, "train_log.jsonl"))
                .Select(l => System.Text.Json.Nodes.JsonNode.Parse(l)!)
                .Where(n => n["event"] is null)
                .Select(n => n["step"]!.GetValue<long>()).ToArray();
            Assert.Equal(new long[] { 5, 5, 10, 10, 15, 15, 20, 20 }, steps);
        }
        finally
        {
            Directory.Delete(dirA, true);
            Directory.Delete(dirB, true);
        }
    }

    [Fact]
    public void CancellationSavesACheckpointBeforeReturning()
    {
        var dir = TempDir();
        try
        {
            using var source = new InMemorySource(SparseData(128, 8, 12, 0.1, seed: 7));
            var cfg = Config(50);
            cfg.CheckpointPath = dir;
            cfg.LogEverySteps = 3;
            using var cts = new CancellationTokenSource();
            using var trainer = new SaeTrainer(cfg, source, [new SaeSlot("a", Standard(8, 16))])
            {
                Progress = new ListProgress(p => { if (p.Step == 6) cts.Cancel(); }),
            };
            using var result = trainer.Run(cancellationToken: cts.Token);
            Assert.Equal(TrainingStatus.Cancelled, result.Status);
            Assert.Equal(6, result.Steps);
            Assert.True(File.Exists(Path.Combine(dir, "step_000000006", TrainerCheckpoint.StateFileName)));
            Assert.Equal(Path.Combine(dir, "step_000000006"), TrainerCheckpoint.Resolve(dir));
        }
        finally { Directory.Delete(dir, true); }
    }

    [Fact]
    public void NonFiniteLossThrowsNamingStepAndSaeAndKeepsTheLastGoodCheckpoint()
    {
        var dir = TempDir();
        try
        {
            using var inner = new InMemorySource(SparseData(128, 8, 12, 0.1, seed: 8));
            using var source = new NanAtBatchSource(inner, nanBatch: 5);
            var cfg = Config(20);
            cfg.CheckpointPath = dir;
            cfg.CheckpointEverySteps = 2;
            using var trainer = new SaeTrainer(cfg, source, [new SaeSlot("wide", Standard(8, 16))]);
            var e = Assert.Throws<SaeSharpException>(() => trainer.Run());
            Assert.Contains("training step 6 of 20", e.Message); // batch 5 counted from 0 is the sixth step
            Assert.Contains("'wide'", e.Message);
            Assert.Contains("step_000000004", e.Message);
            Assert.False(Directory.Exists(Path.Combine(dir, "step_000000006")));
            Assert.Equal(Path.Combine(dir, "step_000000004"), TrainerCheckpoint.Resolve(dir));
            using var resumed = SaeTrainer.Resume(dir, new InMemorySource(SparseData(128, 8, 12, 0.1, seed: 8)));
            Assert.True(resumed.Saes[0].WDec.isfinite().all().item<bool>());
        }
        finally { Directory.Delete(dir, true); }
    }

    [Fact]
    public void StepsLeaveNoLiveTensorsBehind() => LiveTensors.OnOwnThread(() =>
    {
        using var source = new InMemorySource(SparseData(256, 8, 12, 0.1, seed: 9));
        var cfg = Config(30);
        cfg.LogEverySteps = 2;
        cfg.MaxGradNorm = 1;
        cfg.FeatureSamplingWindow = 3;
        cfg.DeadFeatureWindow = 64;
        using var trainer = new SaeTrainer(cfg, source, [new SaeSlot("a", Standard(8, 16))]);
        trainer.Run(stopAtStep: 3).Dispose();
        long before = DisposeScopeManager.Statistics.ThreadTotalLiveCount;
        trainer.Run(stopAtStep: 9).Dispose();
        long after = DisposeScopeManager.Statistics.ThreadTotalLiveCount;
        Assert.Equal(before, after);
    });

    [Fact]
    public void SeveralSaesTrainOnOnePassWithTheirOwnSchedules()
    {
        using var source = new InMemorySource(SparseData(256, 8, 12, 0.1, seed: 10));
        var cfg = Config(6);
        cfg.LogEverySteps = 3;
        var other = cfg.Clone();
        other.Lr = 1e-3;
        other.LrSchedulerName = "linear";
        other.LrDecaySteps = 2;
        var progress = new ListProgress();
        using var trainer = new SaeTrainer(cfg, source, [new SaeSlot("fast", Standard(8, 16)), new SaeSlot("slow", Standard(8, 32), other)])
        {
            Progress = progress,
        };
        using var result = trainer.Run();
        Assert.Equal(6, source.BatchesServed); // one batch per step, shared
        Assert.Equal(new[] { "fast", "slow" }, result.Saes.Select(s => s.Name));
        var last = progress.Reports[^1];
        Assert.Equal(6, last.Step);
        Assert.Equal(1e-2, last.Saes[0].Lr, 12);
        Assert.Equal(1e-4, last.Saes[1].Lr, 12); // linear decay to lr/10 at the last step
        Assert.Equal(1e-3, progress.Reports[0].Saes[1].Lr, 12);
        Assert.Contains("mse_loss", last.Saes[0].Losses.Keys);
        Assert.Contains("overall_loss", last.Saes[0].Losses.Keys);
    }

    [Fact]
    public void SharedFieldsMustAgreeBetweenSaes()
    {
        using var source = new InMemorySource(SparseData(64, 8, 12, 0.1, seed: 11));
        var cfg = Config(6);
        var other = cfg.Clone();
        other.TrainBatchSizeTokens = 16;
        var e = Assert.Throws<SaeSharpException>(() => new SaeTrainer(cfg, source, [new SaeSlot("a", Standard(8, 16)), new SaeSlot("b", Standard(8, 16), other)]));
        Assert.Contains("train_batch_size_tokens", e.Message);
        Assert.Contains("'b'", e.Message);
    }

    [Fact]
    public void LogsJsonlAndTensorBoardEvents()
    {
        var dir = TempDir();
        try
        {
            using var source = new InMemorySource(SparseData(128, 8, 12, 0.1, seed: 12));
            var cfg = Config(4);
            cfg.LogEverySteps = 2;
            cfg.LogPath = dir;
            cfg.TensorBoard = true;
            using var trainer = new SaeTrainer(cfg, source, [new SaeSlot("a", Standard(8, 16))]);
            using var result = trainer.Run();
            var lines = File.ReadAllLines(Path.Combine(dir, "train_log.jsonl")).Select(l => System.Text.Json.Nodes.JsonNode.Parse(l)!).ToList();
            Assert.Equal(new long[] { 2, 4 }, lines.Select(l => l["step"]!.GetValue<long>()));
            Assert.Equal(128, lines[1]["tokens"]!.GetValue<long>());
            foreach (var key in new[] { "lr", "l0", "dead_fraction", "explained_variance" }) Assert.NotNull(lines[1][key]);
            Assert.NotNull(lines[1]["losses"]!["mse_loss"]);
            var events = Directory.GetFiles(Path.Combine(dir, "tensorboard"), "events.out.tfevents*");
            Assert.Single(events);
            var bytes = File.ReadAllBytes(events[0]);
            // TFRecord framing: u64 length, u32 crc, payload, u32 crc
            long first = BitConverter.ToInt64(bytes, 0);
            Assert.True(first > 0 && first + 16 <= bytes.Length);
            Assert.Contains("a/losses/mse_loss", System.Text.Encoding.UTF8.GetString(bytes));
        }
        finally { Directory.Delete(dir, true); }
    }

    [Fact]
    public void ResumeFromAFolderWithoutCheckpointThrowsNamingIt()
    {
        var dir = TempDir();
        try
        {
            using var source = new InMemorySource(SparseData(64, 8, 12, 0.1, seed: 14));
            var e = Assert.Throws<SaeSharpException>(() => SaeTrainer.Resume(dir, source));
            Assert.Contains(dir, e.Message);
        }
        finally { Directory.Delete(dir, true); }
    }

    [Fact]
    public void MismatchedSourceWidthIsRejected()
    {
        using var source = new InMemorySource(SparseData(64, 8, 12, 0.1, seed: 13));
        var e = Assert.Throws<SaeSharpException>(() => new SaeTrainer(Config(3), source, [new SaeSlot("a", Standard(6, 16))]));
        Assert.Contains("d_in=6", e.Message);
    }
}

/// <summary>A ReLU SAE recording the context the trainer hands it.</summary>
internal sealed class RecordingSae : Sae
{
    public RecordingSae(SaeConfig cfg) : base(cfg) { RegisterComponents(); }

    public List<string> DeadMasks { get; } = new();
    public List<double> SparsityScales { get; } = new();

    public override Tensor Encode(Tensor x)
    {
        using var scope = NewDisposeScope();
        return nn.functional.relu(HiddenPre(x)).MoveToOuterDisposeScope();
    }

    public override SaeTrainOutput TrainingForward(Tensor x, Tensor target, SaeTrainContext ctx)
    {
        DeadMasks.Add(string.Concat(ctx.DeadMask!.data<bool>().ToArray().Select(b => b ? '1' : '0')));
        SparsityScales.Add(ctx.SparsityScale);
        using var scope = NewDisposeScope();
        var f = Encode(x);
        var y = Decode(f);
        var mse = (y - target).pow(2).sum(-1).mean();
        return new SaeTrainOutput
        {
            Loss = mse.MoveToOuterDisposeScope(),
            SaeOut = y.MoveToOuterDisposeScope(),
            FeatureActs = f.MoveToOuterDisposeScope(),
            Losses = { ["mse_loss"] = mse.detach().MoveToOuterDisposeScope() },
        };
    }
}

/// <summary>Passes batches through, replacing the batch with index <c>nanBatch</c> by NaNs.</summary>
internal sealed class NanAtBatchSource(IActivationSource inner, int nanBatch) : IActivationSource
{
    private int _served;
    public int DIn => inner.DIn;
    public int DOut => inner.DOut;
    public long? Rows => inner.Rows;

    public ActivationBatch? Next(int batchSize)
    {
        var b = inner.Next(batchSize);
        if (b is null || _served++ != nanBatch) return b;
        b.Input.fill_(double.NaN);
        return b;
    }

    public System.Text.Json.Nodes.JsonNode SaveState()
    {
        var s = inner.SaveState();
        s["served"] = _served;
        return s;
    }

    public void LoadState(System.Text.Json.Nodes.JsonNode state) => inner.LoadState(state);
    public void Dispose() { }
}
