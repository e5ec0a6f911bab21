using SaeSharp.Saes;
using SaeSharp.Training;
using static SaeSharp.Tests.Saes.CrossCoderTests;
using static TorchSharp.torch;

namespace SaeSharp.Tests.Training;

/// <summary>
/// Three steps of <see cref="CrossCoderTrainer"/> against the fork's trainers transcribed in
/// bench/reference/crosscoder_fixture.py (tests/data/crosscoder/reference.json): the same lr schedule, loss and weights
/// after every step, from the same weights and batches. L1: Adam lr 1e-2, warm-up 2. BatchTopK: k 2, warm-up 1, geometric-median
/// b_dec at step 0, AuxK on latents dead after 5 tokens, gradient clipping, threshold EMA from step 1.
/// Tolerance 1e-4 relative to each tensor's largest entry: float32 on both sides, summed in another order.
/// </summary>
public class CrossCoderTrainerTests
{
    private static void CheckParams(CrossCoder cc, System.Text.Json.Nodes.JsonNode expected, string when)
    {
        AssertClose(Saes.CrossCoderTests.Json(expected["encoder.weight"]!), cc.Encoder.Weight, $"{when} encoder.weight", 1e-4);
        AssertClose(Saes.CrossCoderTests.Json(expected["encoder.bias"]!), cc.Encoder.Bias, $"{when} encoder.bias", 1e-4);
        AssertClose(Saes.CrossCoderTests.Json(expected["decoder.weight"]!), cc.Decoder.Weight, $"{when} decoder.weight", 1e-4);
        AssertClose(Saes.CrossCoderTests.Json(expected["decoder.bias"]!), cc.Decoder.Bias, $"{when} decoder.bias", 1e-4);
    }

    [Fact]
    public void L1StepsMatchTheFork()
    {
        var r = Reference;
        var t = r["l1_train"]!;
        using var cc = FromReference(r, CodeNormalization.Crosscoder);
        using var trainer = new CrossCoderTrainer(cc, new CrossCoderTrainerOptions { Steps = 3, Lr = 1e-2, WarmupSteps = 2, L1Penalty = 0.1 });
        var batches = r["train_batches"]!.AsArray();
        for (int s = 0; s < 3; s++)
        {
            var expected = t["steps"]![s]!;
            using var x = Saes.CrossCoderTests.Json(batches[s]!);
            var log = trainer.Step(s, x);
            Assert.Equal(expected["lr"]!.GetValue<double>(), log.Lr, 9);
            Assert.Equal(expected["loss"]!.GetValue<double>(), log.Loss, 4);
            CheckParams(cc, expected["params"]!, $"step {s}");
        }
    }

    [Fact]
    public void BatchTopKStepsMatchTheFork()
    {
        var r = Reference;
        var t = r["batchtopk_train"]!;
        using var cc = FromReference(r, CodeNormalization.Crosscoder, k: 2);
        using var trainer = new CrossCoderTrainer(cc, new CrossCoderTrainerOptions
        {
            Steps = 3, Lr = 1e-2, WarmupSteps = 1, ThresholdStartStep = 0, DeadFeatureThreshold = 5,
        });
        var batches = r["train_batches"]!.AsArray();
        for (int s = 0; s < 3; s++)
        {
            var expected = t["steps"]![s]!;
            using var x = Saes.CrossCoderTests.Json(batches[s]!);
            var log = trainer.Step(s, x);
            Assert.Equal(expected["lr"]!.GetValue<double>(), log.Lr, 9);
            Assert.Equal(expected["dead"]!.GetValue<int>(), log.DeadLatents);
            Assert.Equal(expected["auxk_loss"]!.GetValue<double>(), log.AuxkLoss, 4);
            Assert.Equal(expected["loss"]!.GetValue<double>(), log.Loss, 4);
            Assert.Equal(expected["threshold"]!.GetValue<double>(), cc.Threshold!.item<float>(), 4);
            Assert.Equal(2.0, log.L0, 9); // batch top-k keeps k·batch entries: mean L0 = k
            CheckParams(cc, expected["params"]!, $"step {s}");
        }
    }

    [Fact]
    public void LayerGeometricMedianIsEachLayersMedian()
    {
        // The optimality condition of the geometric median m of points p_i: Σ_i (p_i − m)/‖p_i − m‖ = 0, per layer; the
        // mean (where Weiszfeld starts) does not satisfy it for skewed points.
        using var scope = NewDisposeScope();
        using var g = new Generator(5);
        var p = randn([9, 2, 3], generator: g);
        p[0, 0] = tensor(new float[] { 20, 0, 0 }); // an outlier in layer 0 pulls the mean, not the median
        var m = CrossCoderTrainer.LayerGeometricMedian(p);
        Assert.Equal([2L, 3L], m.shape);
        for (int l = 0; l < 2; l++)
        {
            var d = p.select(1, l) - m[l];
            var pull = (d / TorchScalars.VectorNorm(d, 2, [-1], keepdim: true)).sum(0L);
            Assert.True(TorchScalars.VectorNorm(pull, 2, [0]).item<float>() < 1e-3, $"layer {l}: residual pull {TorchScalars.VectorNorm(pull, 2, [0]).item<float>()}");
        }
        var dm = p.select(1, 0) - p.select(1, 0).mean([0]);
        Assert.True(TorchScalars.VectorNorm((dm / TorchScalars.VectorNorm(dm, 2, [-1], keepdim: true)).sum(0L), 2, [0]).item<float>() > 0.5);
    }

    [Fact]
    public void LearningRateScheduleIsTheForks()
    {
        using var l1 = new CrossCoder(new CrossCoderConfig { ActivationDim = 2, DictSize = 4, NumLayers = 2 });
        using var t1 = new CrossCoderTrainer(l1, new CrossCoderTrainerOptions { Steps = 100, WarmupSteps = 10 });
        Assert.Equal(1e-3, t1.Lr); // CrossCoderTrainer's default lr
        Assert.Equal(0.0, t1.LearningRate(0));
        Assert.Equal(5e-4, t1.LearningRate(5), 12);
        Assert.Equal(1e-3, t1.LearningRate(50));
        using var b = new CrossCoder(new CrossCoderConfig { ActivationDim = 2, DictSize = 4, NumLayers = 2, K = 1 });
        using var t2 = new CrossCoderTrainer(b, new CrossCoderTrainerOptions { Steps = 100, WarmupSteps = 10, DecayStart = 80 });
        Assert.Equal(2e-4 / Math.Sqrt(4 / 16384.0), t2.Lr, 12); // 2e-4/√(dict_size/2¹⁴)
        Assert.Equal(t2.Lr * 20 / 20, t2.LearningRate(80), 12);
        Assert.Equal(t2.Lr * 10 / 20, t2.LearningRate(90), 12);
        Assert.Contains("decay_start", Assert.Throws<SaeSharpException>(() =>
            new CrossCoderTrainer(b, new CrossCoderTrainerOptions { Steps = 100, WarmupSteps = 10, DecayStart = 5 })).Message);
    }
}
