using SaeSharp.IO;
using SaeSharp.Pipelines;
using SaeSharp.Saes;
using SaeSharp.Training;
using static TorchSharp.torch;

namespace SaeSharp.Tests.Training;

/// <summary>
/// SAELens 6.18's architecture-specific training fields in <c>sae train --config</c> / <see cref="TrainingSettings.FromJson"/>
/// (JumpReLUTrainingSAEConfig, TopKTrainingSAEConfig, BatchTopKTrainingSAEConfig, MatryoshkaBatchTopKTrainingSAEConfig):
/// each one reaches the training form of the recipes that use it and changes what it trains (the loss terms, the
/// threshold gradient, the initial threshold, the warm-up, the prefixes); a field no recipe of the run uses, a field
/// SaeSharp does not implement and a bad value are errors naming the field; a resume given another value is refused.
/// </summary>
public class SaeLensTrainingFieldsTests : IDisposable
{
    private readonly string _dir = Directory.CreateTempSubdirectory("saelens-fields-").FullName;
    public void Dispose() => Directory.Delete(_dir, true);

    private string P(params string[] parts) => Path.Combine([_dir, .. parts]);

    /// <summary>Settings for a run on 600 random rows of width 8 (d_sae 16), with <paramref name="fields"/> added.</summary>
    private TrainingSettings Settings(string arch, string fields, string outName = "run", string source = "fields.json")
    {
        if (!File.Exists(P("a.safetensors")))
            SafeTensors.Save(P("a.safetensors"), new Dictionary<string, Tensor> { ["activations"] = randn(600, 8, generator: new Generator(3)) });
        return TrainingSettings.FromJson($$"""
            {"activations": "{{P("a.safetensors").Replace("\\", "/")}}", "architecture": "{{arch}}", "expansion_factor": 2,
             "steps": 4, "batch_size": 32, "eval_rows": 64, "checkpoint_every": 2, "out": "{{P(outName).Replace("\\", "/")}}"
             {{(fields.Length > 0 ? ", " + fields : "")}} }
            """, source);
    }

    private static Tensor Batch() => randn(32, 8, generator: new Generator(11));

    /// <summary>∂L/∂θ of one training forward on <paramref name="x"/> (no latent dead).</summary>
    private static float[] ThresholdGradient(Sae sae, Tensor x)
    {
        using var scope = NewDisposeScope();
        sae.zero_grad();
        var o = sae.TrainingForward(x, x, new SaeTrainContext { Step = 0 });
        o.Loss.backward();
        return sae.named_parameters().Single(p => p.name == "threshold").parameter.grad!.data<float>().ToArray();
    }

    private static void CopyWeights(Sae from, Sae to)
    {
        using var _ = no_grad();
        var source = from.state_dict();
        foreach (var (k, t) in to.state_dict()) t.copy_(source[k]);
    }

    [Fact]
    public void JumpReluFieldsReachTheTrainingFormAndChangeWhatItTrains()
    {
        var s = Settings("jumprelu", """
            "l0_coefficient": 2, "jumprelu_bandwidth": 0.5, "jumprelu_init_threshold": 0.02, "pre_act_loss_coefficient": 0.1,
            "l0_warm_up_steps": 3, "jumprelu_sparsity_loss_mode": "step"
            """);
        using var plan = TrainingPlan.ForActivations(s);
        var slot = plan.Options.Saes[0];
        var sae = slot.Sae;
        Assert.Equal(3, slot.Config!.L1WarmUpSteps);            // recipe's T/20 would be 0
        Assert.Equal(2, sae.Training.SparsityCoefficient);
        Assert.Equal(0.5, sae.Training.Bandwidth);
        Assert.Equal(0.1, sae.Training.PreActLossCoefficient);

        // jumprelu_init_threshold: the initial θ.
        sae.InitializeWeights(new Generator(5));
        var theta = sae.named_parameters().Single(p => p.name == "threshold").parameter;
        Assert.All(theta.data<float>().ToArray(), v => Assert.Equal(0.02f, v));

        // l0_coefficient weighs the L0 term, pre_act_loss_coefficient adds the dead latents' term.
        using (var scope = NewDisposeScope())
        {
            using var x = Batch();
            using var dead = ones(16, dtype: ScalarType.Bool);
            var o = sae.TrainingForward(x, x, new SaeTrainContext { Step = 0, DeadMask = dead });
            double loss = o.Loss.item<float>(), mse = o.Losses["mse_loss"].item<float>(), l0 = o.Losses["l0_loss"].item<float>();
            double preAct = o.Losses["pre_act_loss"].item<float>();
            Assert.True(preAct > 0);
            Assert.Equal(loss, mse + 2 * l0 + preAct, 3);
        }

        // jumprelu_bandwidth: the threshold's straight-through gradient is the one of ε = 0.5, not of the default 0.001.
        using var x2 = Batch();
        var given = ThresholdGradient(sae, x2);
        using var byHand = SaeRecipes.Create("jumprelu", 8, 16, sparsityCoefficient: 2);
        CopyWeights(sae, byHand);
        byHand.Training.PreActLossCoefficient = 0.1;
        var atDefault = ThresholdGradient(byHand, x2);
        byHand.Training.Bandwidth = 0.5;
        var atHalf = ThresholdGradient(byHand, x2);
        Assert.Equal(atHalf, given);
        Assert.NotEqual(atDefault, given);
    }

    [Fact]
    public void TopKFamilyFieldsReachTheTrainingFormAndChangeWhatItTrains()
    {
        var s = Settings("topk,batchtopk,matryoshka", """
            "k": 2, "aux_loss_coefficient": 0.5, "topk_threshold_lr": 0.05, "matryoshka_widths": [4, 16]
            """);
        using var plan = TrainingPlan.ForActivations(s);
        var saes = plan.Options.Saes.Select(x => x.Sae).ToList();
        Assert.All(saes, sae => Assert.Equal(0.5, sae.Training.AuxKCoefficient));
        Assert.Equal(0.95, saes[1].Training.ThresholdMomentum, 12);
        Assert.Equal(0.95, saes[2].Training.ThresholdMomentum, 12);
        Assert.Equal([4, 16], saes[2].Cfg.MatryoshkaWidths!);

        // aux_loss_coefficient weighs the AuxK term: loss = mse + 0.5·aux (the default weighs it 1/32).
        var topk = saes[0];
        topk.InitializeWeights(new Generator(5));
        using (var scope = NewDisposeScope())
        {
            using var x = Batch();
            using var dead = ones(16, dtype: ScalarType.Bool);
            var o = topk.TrainingForward(x, x, new SaeTrainContext { Step = 0, DeadMask = dead });
            double aux = o.Losses["auxiliary_reconstruction_loss"].item<float>();
            Assert.True(aux > 0);
            Assert.Equal(o.Loss.item<float>(), o.Losses["mse_loss"].item<float>() + 0.5 * aux, 4);
        }

        // matryoshka_widths: the prefixes whose reconstructions the loss sums.
        var matryoshka = saes[2];
        matryoshka.InitializeWeights(new Generator(5));
        using (var scope = NewDisposeScope())
        {
            using var x = Batch();
            var o = matryoshka.TrainingForward(x, x, new SaeTrainContext { Step = 0 });
            Assert.Equal(["inner_mse_loss_4", "mse_loss"], o.Losses.Keys.Order(StringComparer.Ordinal));
        }

        // topk_threshold_lr: θ ← (1 − 0.05)·θ + 0.05·m once the estimate has started.
        var batchTopK = (BatchTopKSae)saes[1];
        batchTopK.InitializeWeights(new Generator(5));
        batchTopK.Training.ThresholdStartStep = 0;
        using (var scope = NewDisposeScope())
        {
            using var x = Batch();
            batchTopK.TrainingForward(x, x, new SaeTrainContext { Step = 1 });
            double first = batchTopK.Threshold[0].item<float>();
            using var y = randn(32, 8, generator: new Generator(12)) * TorchScalars.Of(3);
            var o = batchTopK.TrainingForward(y, y, new SaeTrainContext { Step = 2 });
            using var _ = no_grad();
            var v = o.FeatureActs;
            double m = v.masked_select(v.gt(TorchScalars.Of(0))).min().item<float>();
            Assert.Equal(0.95 * first + 0.05 * m, batchTopK.Threshold[0].item<float>(), 5);
        }
    }

    [Fact]
    public void TheSparsityCoefficientsGoToTheirOwnArchitectures()
    {
        double Lambda(TrainingPlan plan, string name) => plan.Options.Saes.Single(x => x.Name == name).Sae.Training.SparsityCoefficient;
        using (var plan = TrainingPlan.ForActivations(Settings("relu,jumprelu", "\"l1_coefficient\": 1.5, \"l0_coefficient\": 2")))
        {
            Assert.Equal(1.5, Lambda(plan, "relu"));
            Assert.Equal(2, Lambda(plan, "jumprelu"));
        }
        // Without l0_coefficient, l1_coefficient (--l1) still sets jumprelu's λ, as before.
        using (var plan = TrainingPlan.ForActivations(Settings("relu,jumprelu", "\"l1_coefficient\": 1.5", "run2")))
            Assert.Equal(1.5, Lambda(plan, "jumprelu"));
        using (var plan = TrainingPlan.ForActivations(Settings("jumprelu", "\"l0_coefficient\": 3", "run3")))
            Assert.Equal(3, Lambda(plan, "jumprelu"));

        var e = Assert.Throws<SaeSharpException>(() => TrainingPlan.ForActivations(Settings("jumprelu", "\"l1_coefficient\": 1.5, \"l0_coefficient\": 2")));
        Assert.Contains("fields.json", e.Message);
        Assert.Contains("l0_coefficient and l1_coefficient", e.Message);
        // A flag (--l1) over a config's l0_coefficient: the same conflict.
        var s = Settings("jumprelu", "\"l0_coefficient\": 2");
        s.L1Coefficient = 1;
        Assert.Throws<SaeSharpException>(() => TrainingPlan.ForActivations(s));
        e = Assert.Throws<SaeSharpException>(() => TrainingPlan.ForActivations(Settings("jumprelu", "\"l0_warm_up_steps\": 2, \"l1_warm_up_steps\": 1")));
        Assert.Contains("l0_warm_up_steps and l1_warm_up_steps", e.Message);
        using (var plan = TrainingPlan.ForActivations(Settings("relu,jumprelu", "\"l0_warm_up_steps\": 2, \"l1_warm_up_steps\": 1", "run4")))
        {
            Assert.Equal(1, plan.Options.Saes[0].Config!.L1WarmUpSteps);
            Assert.Equal(2, plan.Options.Saes[1].Config!.L1WarmUpSteps);
        }
    }

    [Theory]
    [InlineData("topk", "\"k\": 2, \"l0_coefficient\": 2", "'l0_coefficient' applies to jumprelu")]
    [InlineData("jumprelu", "\"aux_loss_coefficient\": 0.1", "'aux_loss_coefficient' applies to topk, batchtopk, matryoshka")]
    [InlineData("topk", "\"k\": 2, \"topk_threshold_lr\": 0.1", "'topk_threshold_lr' applies to batchtopk, matryoshka")]
    [InlineData("batchtopk", "\"k\": 2, \"matryoshka_widths\": [4, 16]", "'matryoshka_widths' applies to matryoshka")]
    [InlineData("relu,gated", "\"jumprelu_bandwidth\": 0.1", "'jumprelu_bandwidth' applies to jumprelu")]
    [InlineData("relu", "\"rescale_acts_by_decoder_norm\": false", "'rescale_acts_by_decoder_norm' applies to topk, batchtopk, matryoshka")]
    public void AFieldNoArchitectureOfTheRunUsesIsAnError(string arch, string fields, string expected)
    {
        var e = Assert.Throws<SaeSharpException>(() => TrainingPlan.ForActivations(Settings(arch, fields)));
        Assert.Contains("fields.json", e.Message);
        Assert.Contains(expected, e.Message);
        Assert.Contains($"this run trains {arch.Replace(",", ", ")}", e.Message);
    }

    [Theory]
    [InlineData("\"jumprelu_sparsity_loss_mode\": \"tanh\"", "jumprelu_sparsity_loss_mode \"tanh\"", "not supported")]
    [InlineData("\"jumprelu_sparsity_loss_mode\": \"l2\"", "jumprelu_sparsity_loss_mode 'l2'", "expected \"step\"")]
    [InlineData("\"rescale_acts_by_decoder_norm\": \"no\"", "rescale_acts_by_decoder_norm", "true or false")]
    [InlineData("\"jumprelu_bandwidth\": 0", "jumprelu_bandwidth 0", "positive")]
    [InlineData("\"jumprelu_bandwidth\": \"wide\"", "jumprelu_bandwidth \"wide\"", "a number")]
    [InlineData("\"jumprelu_init_threshold\": -1", "jumprelu_init_threshold -1", "positive")]
    [InlineData("\"l0_coefficient\": -1", "l0_coefficient -1", "non-negative")]
    [InlineData("\"pre_act_loss_coefficient\": -0.5", "pre_act_loss_coefficient -0.5", "non-negative")]
    [InlineData("\"l0_warm_up_steps\": 2.5", "l0_warm_up_steps 2.5", "whole number")]
    [InlineData("\"aux_loss_coefficient\": -1", "aux_loss_coefficient -1", "non-negative")]
    [InlineData("\"topk_threshold_lr\": 0", "topk_threshold_lr 0", "(0, 1]")]
    [InlineData("\"topk_threshold_lr\": 1.5", "topk_threshold_lr 1.5", "(0, 1]")]
    [InlineData("\"matryoshka_widths\": [8, 4]", "matryoshka_widths [8, 4]", "strictly increasing")]
    [InlineData("\"decoder_init_norm\": null", "decoder_init_norm null", "give a positive norm")]
    [InlineData("\"matryoshka_widths\": [4, \"x\"]", "matryoshka_widths", "list of whole numbers")]
    public void BadValuesAndUnsupportedFieldsAreErrorsNamingTheFieldAndTheFile(string fields, string field, string expected)
    {
        var e = Assert.Throws<SaeSharpException>(() => TrainingSettings.FromJson("{\"architecture\": \"jumprelu\", " + fields + "}", "jr.json"));
        Assert.StartsWith("jr.json: ", e.Message);
        Assert.Contains(field, e.Message);
        Assert.Contains(expected, e.Message);
        Assert.DoesNotContain("unknown field", e.Message);
    }

    [Fact]
    public void MatryoshkaWidthsEndingBelowDSaeGetALastLevelOfDSaeAsInSaeLens()
    {
        // SAELens's _validate_matryoshka_config appends d_sae (16 here) with a warning; widths past d_sae are an error.
        using (var plan = TrainingPlan.ForActivations(Settings("matryoshka", "\"k\": 2, \"matryoshka_widths\": [4, 8]")))
        {
            var sae = Assert.IsType<MatryoshkaBatchTopKSae>(plan.Options.Saes[0].Sae);
            Assert.Equal([4, 8, 16], sae.Widths);
            Assert.Equal("matryoshka_widths [4, 8] do not end at d_sae 16: a last level of 16 is added, as SAELens does", Assert.Single(plan.Notes));
        }
        using (var plan = TrainingPlan.ForActivations(Settings("matryoshka", "\"k\": 2, \"matryoshka_widths\": [4, 16]")))
            Assert.Empty(plan.Notes);
        var e = Assert.Throws<SaeSharpException>(() => TrainingPlan.ForActivations(Settings("matryoshka", "\"k\": 2, \"matryoshka_widths\": [4, 32]")));
        Assert.Contains("fields.json: matryoshka_widths [4, 32] go past d_sae 16", e.Message);
    }

    [Fact]
    public void UseMatryoshkaAuxLossReachesTheTrainedSaeAndItsCheckpointAndAResumeMustKeepIt()
    {
        // SAELens 6.37.6's use_matryoshka_aux_loss through the plan into the SAE, a run and its checkpoint
        // (dead_feature_window 0: a latent silent for one step is dead, so the per-level AuxK can run in these 4 steps).
        const string fields = "\"k\": 2, \"matryoshka_widths\": [4, 16], \"use_matryoshka_aux_loss\": true, \"dead_feature_window\": 0";
        using (var plan = TrainingPlan.ForActivations(Settings("matryoshka", fields)))
        {
            Assert.True(Assert.IsType<MatryoshkaBatchTopKSae>(plan.Options.Saes[0].Sae).Training.UseMatryoshkaAuxLoss);
            plan.Run();
        }
        using (var checkpoint = TrainerCheckpoint.Load(P("run", TrainingRun.CheckpointFolder)))
            Assert.True(checkpoint.Saes[0].Training.UseMatryoshkaAuxLoss);
        var e = Assert.Throws<SaeSharpException>(() => TrainingPlan.ForActivations(
            Settings("matryoshka", "\"k\": 2, \"matryoshka_widths\": [4, 16], \"use_matryoshka_aux_loss\": false, \"dead_feature_window\": 0"), resume: true));
        Assert.Contains("use_matryoshka_aux_loss False (matryoshka in the checkpoint's run: True)", e.Message);
        using (var plan = TrainingPlan.ForActivations(Settings("matryoshka", fields), resume: true))
            Assert.Equal(4, plan.Run().Steps);
    }

    [Fact]
    public void AResumeGivenAnotherValueIsRefusedAndTheSameValueResumes()
    {
        const string fields = "\"k\": 2, \"aux_loss_coefficient\": 0.25, \"jumprelu_bandwidth\": 0.05, \"l0_coefficient\": 1.5, \"matryoshka_widths\": [4, 16]";
        using (var plan = TrainingPlan.ForActivations(Settings("topk,jumprelu,matryoshka", fields)))
            plan.Run();
        using (var checkpoint = TrainerCheckpoint.Load(P("run", TrainingRun.CheckpointFolder)))
        {
            Assert.Equal(0.25, checkpoint.Saes[0].Training.AuxKCoefficient);
            Assert.Equal(0.05, checkpoint.Saes[1].Training.Bandwidth);
            Assert.Equal(1.5, checkpoint.Saes[1].Training.SparsityCoefficient);
        }
        var changed = Settings("topk,jumprelu,matryoshka", "\"k\": 2, \"aux_loss_coefficient\": 0.5, \"jumprelu_bandwidth\": 0.02, \"l0_coefficient\": 1.5, \"matryoshka_widths\": [8, 16]");
        var e = Assert.Throws<SaeSharpException>(() => TrainingPlan.ForActivations(changed, resume: true));
        Assert.Contains("--resume", e.Message);
        Assert.Contains("aux_loss_coefficient 0.5 (topk in the checkpoint's run: 0.25)", e.Message);
        Assert.Contains("aux_loss_coefficient 0.5 (matryoshka in the checkpoint's run: 0.25)", e.Message);
        Assert.Contains("jumprelu_bandwidth 0.02 (jumprelu in the checkpoint's run: 0.05)", e.Message);
        Assert.Contains("matryoshka_widths [8, 16] (matryoshka in the checkpoint's run: [4, 16])", e.Message);
        Assert.DoesNotContain("l0_coefficient", e.Message);
        e = Assert.Throws<SaeSharpException>(() => TrainingPlan.ForActivations(Settings("topk,jumprelu,matryoshka", "\"k\": 2, \"l0_coefficient\": 3"), resume: true));
        Assert.Contains("l0_coefficient 3 (jumprelu in the checkpoint's run: 1.5)", e.Message);
        using (var plan = TrainingPlan.ForActivations(Settings("topk,jumprelu,matryoshka", fields), resume: true))
            Assert.Equal(4, plan.Run().Steps);
    }
}
