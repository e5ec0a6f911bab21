using System.Text.Json.Nodes;
using SaeSharp.Activations;
using SaeSharp.Saes;
using SaeSharp.Tests.Tokenizers;
using SaeSharp.Training;
using static TorchSharp.torch;
using static SaeSharp.Tests.Training.TrainerTestKit;

namespace SaeSharp.Tests.Training;

/// <summary>
/// The relu-april recipe's step against dictionary_learning's <c>StandardTrainerAprilUpdate</c>, term by term, on the
/// numbers that trainer produced (tests/data/recipes/april_step.json, written by bench/reference/april_step_fixture.py
/// with PyTorch): the same initial weights and batch give the same loss terms, gradients, clipped Adam steps and
/// decoder norms over three steps, with λ's warm-up running.
/// </summary>
public class StandardTrainerAprilUpdateStepTests
{
    private static readonly JsonNode Fixture = JsonNode.Parse(File.ReadAllText(TestPaths.Data("recipes", "april_step.json")))!;

    private static StandardSae Sae(JsonNode weights)
    {
        var sae = new StandardSae(new SaeConfig { DIn = 8, DSae = 16 })
        {
            Training = { SparsityCoefficient = Fixture["l1_penalty"]!.GetValue<double>(), Penalty = SparsityPenalty.L1DecoderNorm },
        };
        using var _ = no_grad();
        sae.WEnc.copy_(JsonTensor(weights["W_enc"]!));
        sae.BEnc.copy_(JsonTensor(weights["b_enc"]!));
        sae.WDec.copy_(JsonTensor(weights["W_dec"]!));
        sae.BDec.copy_(JsonTensor(weights["b_dec"]!));
        return sae;
    }

    private static void Close(JsonNode expected, Tensor actual, double tol, string what)
    {
        using var e = JsonTensor(expected);
        double diff = MaxAbsDiff(e, actual.detach());
        double scale = Math.Max(1e-3, e.abs().max().item<float>());
        Assert.True(diff <= tol * scale, $"{what}: max |diff| {diff:G3} (scale {scale:G3})");
    }

    [Fact]
    public void LossTermsAndGradientsEqualTheReferenceAtEveryStep()
    {
        using var scope = NewDisposeScope();
        var x = JsonTensor(Fixture["x"]!);
        var steps = Fixture["steps"]!.AsArray();
        for (int s = 0; s < steps.Count; s++)
        {
            var st = steps[s]!;
            using var sae = Sae(s == 0 ? Fixture["initial"]! : steps[s - 1]!["after"]!);
            var o = sae.TrainingForward(x, x, new SaeTrainContext { Step = s, SparsityScale = st["sparsity_scale"]!.GetValue<double>() });
            Assert.Equal(st["mse_loss"]!.GetValue<double>(), o.Losses["mse_loss"].item<float>(), 4);
            Assert.Equal(st["l1_loss"]!.GetValue<double>(), o.Losses["l1_loss"].item<float>(), 5);
            Assert.Equal(st["loss"]!.GetValue<double>(), o.Loss.item<float>(), 4);
            o.Loss.backward();
            var g = st["grad"]!;
            Close(g["W_enc"]!, sae.WEnc.grad!, 1e-5, $"step {s} dL/dW_enc");
            Close(g["b_enc"]!, sae.BEnc.grad!, 1e-5, $"step {s} dL/db_enc");
            Close(g["W_dec"]!, sae.WDec.grad!, 1e-5, $"step {s} dL/dW_dec");
            Close(g["b_dec"]!, sae.BDec.grad!, 1e-5, $"step {s} dL/db_dec");
            double norm = Math.Sqrt(sae.parameters().Sum(p => p.grad!.pow(2).sum().item<float>()));
            Assert.Equal(st["grad_norm_before_clip"]!.GetValue<double>(), norm, 4);
        }
    }

    [Fact]
    public void TrainerStepsEqualTheReferenceWeightsAfterEachStep()
    {
        using var scope = NewDisposeScope();
        var x = JsonTensor(Fixture["x"]!);
        var steps = Fixture["steps"]!.AsArray();
        var sae = Sae(Fixture["initial"]!);
        // The reference run's schedule: constant lr without warm-up, λ warm-up over 2 steps (step/W in both), clip at 1.
        var cfg = new TrainerConfig
        {
            TotalTrainingSteps = steps.Count, TrainBatchSizeTokens = 6, Lr = Fixture["lr"]!.GetValue<double>(), LrWarmUpSteps = 0,
            LrSchedulerName = LrSchedulers.Constant, LrDecaySteps = 0, L1WarmUpSteps = Fixture["sparsity_warmup_steps"]!.GetValue<long>(),
            MaxGradNorm = Fixture["max_grad_norm"]!.GetValue<double>(), InitializeWeights = false, NormalizeActivations = "none",
            LogEverySteps = 1, DeadFeatureWindow = 1_000_000,
        };
        var progress = new ListProgress();
        using var source = new TensorActivationSource(x.clone(), shuffle: false, loop: true);
        using var trainer = new SaeTrainer(cfg, source, [new SaeSlot("relu-april", sae)]) { Progress = progress };
        for (int s = 0; s < steps.Count; s++)
        {
            trainer.Run(stopAtStep: s + 1).Dispose();
            var after = steps[s]!["after"]!;
            Close(after["W_enc"]!, sae.WEnc, 1e-4, $"W_enc after step {s}");
            Close(after["b_enc"]!, sae.BEnc, 1e-4, $"b_enc after step {s}");
            Close(after["W_dec"]!, sae.WDec, 1e-4, $"W_dec after step {s}");
            Close(after["b_dec"]!, sae.BDec, 1e-4, $"b_dec after step {s}");
            Close(steps[s]!["decoder_row_norms_after"]!, sae.WDec.norm(1), 1e-5, $"decoder row norms after step {s}");
        }
        Assert.Equal(steps.Count, progress.Reports.Count);
        for (int s = 0; s < steps.Count; s++)
        {
            Assert.Equal(steps[s]!["lr"]!.GetValue<double>(), progress.Reports[s].Saes[0].Lr, 12);
            Assert.Equal(steps[s]!["mse_loss"]!.GetValue<double>(), progress.Reports[s].Saes[0].Losses["mse_loss"], 4);
        }
        sae.Dispose();
    }
}
