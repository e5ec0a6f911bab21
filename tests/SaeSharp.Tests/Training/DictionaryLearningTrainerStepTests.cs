using SaeSharp.Kernels;
using System.Text.Json.Nodes;
using SaeSharp.Activations;
using SaeSharp.Saes;
using SaeSharp.Tests.Tokenizers;
using SaeSharp.Training;
using Xunit.Abstractions;
using static TorchSharp.torch;
using static SaeSharp.Tests.Training.TrainerTestKit;

namespace SaeSharp.Tests.Training;

/// <summary>
/// Four training steps of our training forms against dictionary_learning's own trainers (TopKTrainer, BatchTopKTrainer,
/// MatryoshkaBatchTopKTrainer, JumpReluTrainer, GatedSAETrainer), on the numbers those trainers produced
/// (tests/data/recipes/dl_*_steps.json, written by bench/reference/dl_trainer_steps_fixture.py, which states the
/// settings): from the same initial weights and batches, the same loss terms at every step (Adam state, AuxK on the dead
/// latents, the BatchTopK threshold EMA, decoder renormalisation and the sparsity warm-up all in play) and the same
/// weights after every step.
/// <para>The TopK family is stepped here with the training form, our Adam and the trainer's clip-at-1, fed the dead
/// mask dictionary_learning used: its mask at step s counts the firing of step s itself (num_tokens_since_fired is
/// updated before get_auxiliary_loss), ours, like SAELens's and sparsify's, is the mask of the steps before (a
/// deliberate difference, docs/recipes.md "Differences from the reference trainers"), so the whole SaeTrainer cannot
/// reproduce its AuxK step for step. JumpReLU runs through SaeTrainer itself. Gated is stepped with the training form
/// under dictionary_learning's constraint (ConstrainedAdam: parallel gradient removed, decoder columns renormalised;
/// auxiliary reconstruction on a detached decoder), which our "gated" recipe does not apply (it trains as SAELens).</para>
/// <para>Tolerance: the weights are float32 and each side runs the same operations in another order (BLAS blocking,
/// the sparse decode, the fused Adam), so the differences are rounding. Measured max |diff| relative to the quantity (loss
/// terms) or to each tensor's largest entry (weights), over 4 steps (the ITestOutput lines): topk 4.7e-7 / 2.4e-7,
/// batchtopk 2.9e-7 / 9.6e-7, matryoshka 4.0e-7 / 3.7e-7, jumprelu 4.3e-7 / 5.1e-7, gated 1.9e-7 / 2.9e-7. The bound
/// 1e-5 leaves 10× for other BLAS builds and CPUs; a change of convention moves far more (tried: k_aux 2 instead of 4
/// moves topk's AuxK by 22 %, gated's Adam β1 0.9 instead of 0 its W_enc by 1e-3, JumpReLU's ε 0.002 instead of 0.004
/// its thresholds by 1e-3 after the first step).</para>
/// </summary>
public class DictionaryLearningTrainerStepTests(ITestOutputHelper output)
{
    private const double Tol = 1e-5;

    private static JsonNode Fixture(string kind) => JsonNode.Parse(File.ReadAllText(TestPaths.Data("recipes", $"dl_{kind}_steps.json")))!;

    private static void Load(Sae sae, JsonNode weights)
    {
        using var _ = no_grad();
        var ps = sae.named_parameters().ToDictionary(p => p.name, p => p.parameter);
        foreach (var (name, value) in weights.AsObject())
            ps[name].copy_(JsonTensor(value!));
    }

    private double _worstLoss, _worstWeight;

    private void CloseLoss(double expected, Tensor actual, string what) => CloseLoss(expected, actual.item<float>(), what);

    private void CloseLoss(double expected, double actual, string what)
    {
        double rel = Math.Abs(expected - actual) / Math.Max(1e-3, Math.Abs(expected));
        _worstLoss = Math.Max(_worstLoss, rel);
        Assert.True(rel <= Tol, $"{what}: expected {expected:G9}, got {actual:G9} (relative {rel:G3})");
    }

    private void CloseWeights(Sae sae, JsonNode expected, string when)
    {
        var ps = sae.named_parameters().ToDictionary(p => p.name, p => p.parameter);
        foreach (var (name, value) in expected.AsObject())
        {
            using var e = JsonTensor(value!);
            double diff = MaxAbsDiff(e, ps[name].detach());
            double scale = Math.Max(1e-3, e.abs().max().item<float>());
            _worstWeight = Math.Max(_worstWeight, diff / scale);
            Assert.True(diff <= Tol * scale, $"{name} {when}: max |diff| {diff:G3} (scale {scale:G3})");
        }
    }

    private void Report(string kind) => output.WriteLine($"{kind}: worst relative loss diff {_worstLoss:G3}, worst relative weight diff {_worstWeight:G3}");

    /// <summary>One step as SaeTrainer.TrainSlot takes it: forward, backward, the form's pre-step hook, gradient norm clipped
    /// to <paramref name="clip"/> (torch's clip_grad_norm_: scale max/(‖g‖ + 1e-6) when below 1), Adam, the post-step hook.</summary>
    private static SaeTrainOutput Step(Sae sae, AdamOptimizer adam, Tensor x, SaeTrainContext ctx, double lr, double? clip,
        Action? before = null, Action? after = null)
    {
        sae.zero_grad(set_to_none: true);
        var o = sae.TrainingForward(x, x, ctx);
        o.Loss.backward();
        (before ?? (() => sae.BeforeOptimizerStep(ctx)))();
        if (clip is double max)
        {
            using var _ = no_grad();
            var grads = sae.parameters().Select(p => p.grad!).ToList();
            double norm = Math.Sqrt(grads.Sum(g => g.pow(2).sum().item<float>()));
            double scale = max / (norm + 1e-6);
            if (scale < 1)
                foreach (var g in grads) g.mul_(scale);
        }
        adam.Step(lr);
        (after ?? (() => sae.AfterOptimizerStep(ctx)))();
        return o;
    }

    private static AdamOptimizer Adam(Sae sae, double beta1) =>
        new(sae.named_parameters().Select(p => (p.name, p.parameter)), beta1, 0.999, 1e-8);

    private void TopKFamily(string kind, Sae sae)
    {
        using var scope = NewDisposeScope();
        var fx = Fixture(kind);
        Load(sae, fx["initial"]!);
        using var adam = Adam(sae, 0.9);
        double lr = fx["lr"]!.GetValue<double>();
        var steps = fx["steps"]!.AsArray();
        var xs = fx["x"]!.AsArray();
        for (int s = 0; s < steps.Count; s++)
        {
            var st = steps[s]!;
            Assert.Equal(lr, st["lr"]!.GetValue<double>(), 12);
            var dead = JsonTensor(st["dead_mask"]!).to(ScalarType.Bool);
            Assert.True(dead.sum().item<long>() > 0, "the fixture should exercise AuxK at every step");
            var o = Step(sae, adam, JsonTensor(xs[s]!), new SaeTrainContext { Step = s, DeadMask = dead }, lr, clip: 1.0);
            var losses = st["losses"]!;
            double aux = losses["auxk_loss"]!.GetValue<double>();
            CloseLoss(aux, o.Losses["auxiliary_reconstruction_loss"], $"{kind} step {s} auxk_loss");
            CloseLoss(losses["loss"]!.GetValue<double>(), o.Loss, $"{kind} step {s} loss");
            double recon = o.Loss.item<float>() - aux / 32;
            CloseLoss(losses["l2_loss"]!.GetValue<double>(), recon, $"{kind} step {s} l2_loss");
            if (sae is MatryoshkaBatchTopKSae m)
            {
                // dictionary_learning logs each prefix's loss times its group weight (1/5).
                var parts = m.Widths.Select((w, i) => o.Losses[i == m.Widths.Count - 1 ? "mse_loss" : $"inner_mse_loss_{w}"].item<float>() / m.Widths.Count).ToList();
                CloseLoss(losses["min_l2_loss"]!.GetValue<double>(), parts.Min(), $"{kind} step {s} min_l2_loss");
                CloseLoss(losses["max_l2_loss"]!.GetValue<double>(), parts.Max(), $"{kind} step {s} max_l2_loss");
            }
            else
                CloseLoss(losses["l2_loss"]!.GetValue<double>(), o.Losses["mse_loss"], $"{kind} step {s} mse_loss");
            CloseWeights(sae, st["after"]!, $"after step {s}");
            if (sae is BatchTopKSae b)
                CloseLoss(st["threshold_after"]!.GetValue<double>(), b.Threshold[0].item<float>(), $"{kind} threshold after step {s}");
        }
        Report(kind);
    }

    private static SaeConfig TopKConfig(string arch) => new() { Architecture = arch, DIn = 8, DSae = 64, K = 3 };

    /// <summary>Both ways AuxK is computed: through the sparse code of the chosen dead entries, and densely over the dead
    /// latents (<see cref="TopKFamilySae.AuxKDenseMaxRatio"/>; the default picks by density).</summary>
    [Theory]
    [InlineData(0L)]
    [InlineData(1L << 40)]
    public void TopKTrainerStepsAreReproduced(long auxKDenseMaxRatio)
    {
        using var sae = new TopKSae(TopKConfig(SaeArchitectures.TopK)) { AuxKDenseMaxRatio = auxKDenseMaxRatio };
        TopKFamily("topk", sae);
    }

    /// <summary>The documented difference in the dead mask's timing: dictionary_learning counts the step's own firing before
    /// AuxK (12 latents dead at its step 0 with a 32-token window and 32-row batches), SaeTrainer (as SAELens and sparsify)
    /// the steps before, so at step 0 no latent is dead and there is no AuxK term; the reconstruction is the same.</summary>
    [Fact]
    public void SaeTrainerDeadMaskLagsDictionaryLearningsByOneStep()
    {
        using var scope = NewDisposeScope();
        var fx = Fixture("topk");
        var step0 = fx["steps"]![0]!;
        Assert.Equal(12, step0["dead_count"]!.GetValue<int>());
        Assert.True(step0["losses"]!["auxk_loss"]!.GetValue<double>() > 0);
        var sae = new TopKSae(TopKConfig(SaeArchitectures.TopK));
        Load(sae, fx["initial"]!);
        var cfg = new TrainerConfig
        {
            TotalTrainingSteps = 2, TrainBatchSizeTokens = 32, Lr = fx["lr"]!.GetValue<double>(), LrWarmUpSteps = 0,
            LrSchedulerName = LrSchedulers.Constant, LrDecaySteps = 0, MaxGradNorm = 1.0, InitializeWeights = false,
            NormalizeActivations = "none", LogEverySteps = 1, DeadFeatureWindow = 32,
        };
        var progress = new ListProgress();
        using var source = new TensorActivationSource(cat(fx["x"]!.AsArray().Select(n => JsonTensor(n!)).ToList(), 0), shuffle: false, loop: false);
        using var trainer = new SaeTrainer(cfg, source, [new SaeSlot("topk", sae)]) { Progress = progress };
        trainer.Run().Dispose();
        var first = progress.Reports[0].Saes[0].Losses;
        Assert.False(first.ContainsKey("auxiliary_reconstruction_loss"));
        CloseLoss(step0["losses"]!["l2_loss"]!.GetValue<double>(), first["mse_loss"], "topk step 0 l2_loss");
        Assert.True(progress.Reports[1].Saes[0].Losses["auxiliary_reconstruction_loss"] > 0, "from step 1 the latents silent at step 0 are dead");
        sae.Dispose();
    }

    [Fact]
    public void BatchTopKTrainerStepsAreReproducedWithTheThresholdEma()
    {
        using var sae = new BatchTopKSae(TopKConfig(SaeArchitectures.BatchTopK)) { Training = { ThresholdStartStep = 1 }, AuxKDenseMaxRatio = 0 };
        TopKFamily("batchtopk", sae);
    }

    [Fact]
    public void MatryoshkaBatchTopKTrainerStepsAreReproducedWithItsGroupWeights()
    {
        var cfg = TopKConfig(SaeArchitectures.MatryoshkaBatchTopK);
        cfg.MatryoshkaWidths = [4, 8, 16, 32, 64];
        // dictionary_learning: loss = mean_i(g_i · mse_i) with g_i = 1/5, i.e. weights g_i/5 = 1/25 here.
        using var sae = new MatryoshkaBatchTopKSae(cfg)
        {
            Training = { ThresholdStartStep = 1, MatryoshkaLossWeights = Enumerable.Repeat(1.0 / 25, 5).ToArray() },
        };
        TopKFamily("matryoshka", sae);
    }

    [Fact]
    public void JumpReluTrainerStepsAreReproducedBySaeTrainer()
    {
        using var scope = NewDisposeScope();
        var fx = Fixture("jumprelu");
        var steps = fx["steps"]!.AsArray();
        // The fixture's data were chosen so that no pre-activation falls where dictionary_learning's L0 kernel (on f)
        // and ours (on the pre-activations) differ; the kernel does catch entries above θ.
        Assert.All(steps, st => Assert.Equal(0, st!["kernel_entries_below_and_above_threshold"]![0]!.GetValue<int>()));
        Assert.Contains(steps, st => st!["kernel_entries_below_and_above_threshold"]![1]!.GetValue<int>() > 0);
        var sae = new JumpReluSae(new SaeConfig { Architecture = SaeArchitectures.JumpReLU, DIn = 8, DSae = 32, ApplyBDecToInput = false })
        {
            Training = { JumpReluPenalty = JumpReluPenalty.TargetL0, TargetL0 = 8, SparsityCoefficient = 1, Bandwidth = 0.004 },
        };
        Load(sae, fx["initial"]!);
        var x = cat(fx["x"]!.AsArray().Select(n => JsonTensor(n!)).ToList(), 0);
        var cfg = new TrainerConfig
        {
            TotalTrainingSteps = steps.Count, TrainBatchSizeTokens = 32, Lr = fx["lr"]!.GetValue<double>(), LrWarmUpSteps = 0,
            LrSchedulerName = LrSchedulers.Constant, LrDecaySteps = 0, L1WarmUpSteps = 2, MaxGradNorm = 1.0,
            InitializeWeights = false, NormalizeActivations = "none", LogEverySteps = 1, DeadFeatureWindow = 1_000_000,
        };
        var progress = new ListProgress();
        using var source = new TensorActivationSource(x, shuffle: false, loop: false);
        using var trainer = new SaeTrainer(cfg, source, [new SaeSlot("jumprelu", sae)]) { Progress = progress };
        for (int s = 0; s < steps.Count; s++)
        {
            trainer.Run(stopAtStep: s + 1).Dispose();
            var st = steps[s]!;
            var report = progress.Reports[s].Saes[0];
            Assert.Equal(st["sparsity_scale"]!.GetValue<double>(), report.SparsityScale, 12);
            Assert.Equal(st["lr"]!.GetValue<double>(), report.Lr, 12);
            CloseLoss(st["losses"]!["l2_loss"]!.GetValue<double>(), report.Losses["mse_loss"], $"jumprelu step {s} l2_loss");
            CloseLoss(st["losses"]!["loss"]!.GetValue<double>(), report.Losses["overall_loss"], $"jumprelu step {s} loss");
            CloseWeights(sae, st["after"]!, $"after step {s}");
        }
        Report("jumprelu");
        sae.Dispose();
    }

    [Fact]
    public void GatedSaeTrainerStepsAreReproducedUnderItsDecoderConstraint()
    {
        using var scope = NewDisposeScope();
        var fx = Fixture("gated");
        using var sae = new GatedSae(new SaeConfig { Architecture = SaeArchitectures.Gated, DIn = 8, DSae = 32 })
        {
            Training = { SparsityCoefficient = 0.5, GatedAuxDetachDecoder = true },
        };
        Load(sae, fx["initial"]!);
        using var adam = Adam(sae, 0.0);
        double lr = fx["lr"]!.GetValue<double>();
        var steps = fx["steps"]!.AsArray();
        var xs = fx["x"]!.AsArray();
        for (int s = 0; s < steps.Count; s++)
        {
            var st = steps[s]!;
            double scale = Schedules.SparsityScale(2, s);
            Assert.Equal(st["sparsity_scale"]!.GetValue<double>(), scale, 12);
            // ConstrainedAdam: the L1's decoder-norm weight then has no effect (its gradient is parallel to each row, and
            // the rows have unit norm), no gradient clipping.
            var o = Step(sae, adam, JsonTensor(xs[s]!), new SaeTrainContext { Step = s, SparsityScale = scale }, lr, clip: null,
                before: sae.RemoveGradientParallelToDecoderRows, after: () => sae.NormalizeDecoderRows());
            var losses = st["losses"]!;
            CloseLoss(losses["mse_loss"]!.GetValue<double>(), o.Losses["mse_loss"], $"gated step {s} mse_loss");
            CloseLoss(losses["sparsity_loss"]!.GetValue<double>(), o.Losses["l1_loss"], $"gated step {s} sparsity_loss");
            CloseLoss(losses["aux_loss"]!.GetValue<double>(), o.Losses["auxiliary_reconstruction_loss"], $"gated step {s} aux_loss");
            CloseLoss(losses["loss"]!.GetValue<double>(), o.Loss, $"gated step {s} loss");
            CloseWeights(sae, st["after"]!, $"after step {s}");
        }
        Report("gated");
    }
}
