using System.Text.Json.Nodes;
using SaeSharp.Interop;
using SaeSharp.IO;
using SaeSharp.Kernels;
using SaeSharp.Pipelines;
using SaeSharp.Saes;
using SaeSharp.Training;
using SaeSharp.Tests.Tokenizers;
using static TorchSharp.torch;
using static SaeSharp.Tests.Training.TrainerTestKit;

namespace SaeSharp.Tests.Training;

/// <summary>
/// SAELens's <c>rescale_acts_by_decoder_norm</c> false for the TopK family: a plain TopK with free decoder rows (no
/// unit-norm projection, no parallel-gradient removal, no renormalisation). One step of SAELens 6.37.6's TopK, BatchTopK
/// and Matryoshka BatchTopK training SAEs with false, from decoder rows of unequal norms
/// (tests/data/recipes/saelens637_rescale_false.json, bench/reference/saelens637_rescale_false_fixture.py: its forward,
/// backward, clip to norm 1 and Adam step), is reproduced by ours; the loss with AuxK on every training path matches a
/// dense torch computation of SaeSharp's loss; then the field's way in (--config, cfg.json, --from-pretrained, --resume).
/// <para>Tolerance: relative 1e-5 of each quantity's largest entry (float32, the same operations in another order).</para>
/// </summary>
public class RescaleActsByDecoderNormTests() : ActivationFileRunTestBase("rescale-")
{
    private static readonly JsonNode Fixture = JsonNode.Parse(File.ReadAllText(TestPaths.Data("recipes", "saelens637_rescale_false.json")))!;

    private static void Close(Tensor expected, Tensor actual, string what, double tol = 1e-5)
    {
        double diff = MaxAbsDiff(expected, actual.detach());
        double scale = Math.Max(1e-3, expected.abs().max().item<float>());
        Assert.True(diff <= tol * scale, $"{what}: max |diff| {diff:G3} (scale {scale:G3})");
    }

    private static Dictionary<string, TorchSharp.Modules.Parameter> Params(Sae sae) => sae.named_parameters().ToDictionary(p => p.name, p => p.parameter);

    private static TopKFamilySae FixtureSae(string architecture, bool rescale)
    {
        int[] widths = Fixture["matryoshka_widths"]!.AsArray().Select(w => w!.GetValue<int>()).ToArray();
        var sae = (TopKFamilySae)SaeFactory.Create(new SaeConfig
        {
            Architecture = architecture, DIn = 8, DSae = 24, K = Fixture["k"]!.GetValue<int>(),
            MatryoshkaWidths = architecture == SaeArchitectures.MatryoshkaBatchTopK ? widths : null,
        });
        sae.Training.RescaleActsByDecoderNorm = rescale;
        using var _ = no_grad();
        var ps = Params(sae);
        foreach (var (name, value) in Fixture["weights"]!.AsObject()) ps[name].copy_(JsonTensor(value!));
        return sae;
    }

    [Theory]
    [InlineData(SaeArchitectures.TopK)]
    [InlineData(SaeArchitectures.BatchTopK)]
    [InlineData(SaeArchitectures.MatryoshkaBatchTopK)]
    public void One_step_with_it_false_is_SAELenss_step(string architecture)
    {
        using var scope = NewDisposeScope();
        var rec = Fixture["saes"]![architecture]!;
        Assert.False(rec["rescale_acts_by_decoder_norm"]!.GetValue<bool>());
        Assert.Equal(0.0, rec["losses"]!["auxiliary_reconstruction_loss"]!.GetValue<double>());
        using var sae = FixtureSae(architecture, rescale: false);
        var x = JsonTensor(Fixture["x"]!);
        var startNorms = sae.WDec.detach().norm(1).clone();
        Assert.True(startNorms.max().item<float>() - startNorms.min().item<float>() > 0.5);
        var ctx = new SaeTrainContext { Step = 0 };

        var o = sae.TrainingForward(x, x, ctx);
        Close(JsonTensor(rec["feature_acts"]!), o.FeatureActs, $"{architecture} feature_acts");
        foreach (var (term, value) in rec["losses"]!.AsObject().Where(t => t.Key != "auxiliary_reconstruction_loss"))
            Close(tensor(value!.GetValue<float>()), o.Losses[term], $"{architecture} {term}");
        Close(tensor(rec["loss"]!.GetValue<float>()), o.Loss, $"{architecture} loss");

        // The gradient the optimiser sees is autograd's, with nothing removed along the decoder rows.
        o.Loss.backward();
        sae.BeforeOptimizerStep(ctx);
        var ps = Params(sae);
        foreach (var (name, g) in rec["grad"]!.AsObject()) Close(JsonTensor(g!), ps[name].grad!, $"{architecture} dL/d{name}");

        // SAELens's SAETrainer: clip to norm 1, Adam (0.9, 0.999) at lr; then no renormalisation.
        TorchSharp.torch.nn.utils.clip_grad_norm_(sae.parameters(), 1.0);
        using (var adam = new AdamOptimizer(sae.named_parameters(), 0.9, 0.999)) adam.Step(Fixture["lr"]!.GetValue<double>());
        sae.AfterOptimizerStep(ctx);
        foreach (var (name, w) in rec["after"]!.AsObject()) Close(JsonTensor(w!), ps[name], $"{architecture} {name} after the step");
        var norms = sae.WDec.detach().norm(1);
        Assert.False(norms.allclose(ones_like(norms), rtol: 0, atol: 1e-3), "decoder rows were renormalised");
        Assert.False(norms.allclose(startNorms, rtol: 0, atol: 1e-7), "decoder rows did not move");
    }

    [Fact]
    public void With_it_true_the_same_weights_keep_the_unit_norm_training()
    {
        using var scope = NewDisposeScope();
        var rec = Fixture["saes"]!["topk"]!;
        var x = JsonTensor(Fixture["x"]!);
        // SAELens's selection with true differs on these rows (it rescales by the unequal norms); ours with false is SAELens's false.
        Assert.False(JsonTensor(rec["feature_acts_rescale_true"]!).ne(0).equal(JsonTensor(rec["feature_acts"]!).ne(0)).all().item<bool>());

        using var sae = FixtureSae(SaeArchitectures.TopK, rescale: true);
        var ctx = new SaeTrainContext { Step = 0 };
        sae.TrainingForward(x, x, ctx).Loss.backward();
        sae.BeforeOptimizerStep(ctx);
        // With true: the parallel component is removed (each row's gradient is orthogonal to the row) and the rows end at norm 1.
        var along = (sae.WDec.grad! * sae.WDec.detach()).sum(1);
        Assert.True(along.abs().max().item<float>() < 1e-4, $"gradient along the rows {along.abs().max().item<float>():G3}");
        Assert.False(JsonTensor(rec["grad"]!["W_dec"]!).allclose(sae.WDec.grad!, rtol: 1e-3, atol: 1e-4), "true should project SAELens's false gradient");
        sae.AfterOptimizerStep(ctx);
        var norms = sae.WDec.detach().norm(1);
        Assert.True(norms.allclose(ones_like(norms), rtol: 0, atol: 1e-5));
    }

    /// <summary>SAELens's <c>TrainingSAE.initialize_weights</c> with false: rows of norm decoder_init_norm, W_enc = W_decᵀ,
    /// zero biases (<c>_init_weights_topk</c>); with true the norm does not change the function and SaeSharp starts at 1.</summary>
    [Theory]
    [InlineData(false, 0.1)]
    [InlineData(false, 0.7)]
    [InlineData(true, 1.0)]
    public void The_decoder_starts_at_decoder_init_norm_with_it_false(bool rescale, double expected)
    {
        using var scope = NewDisposeScope();
        using var sae = new TopKSae(new SaeConfig { Architecture = SaeArchitectures.TopK, DIn = 8, DSae = 24, K = 3 }) { Training = { RescaleActsByDecoderNorm = rescale } };
        sae.InitializeWeights(new Generator(1), expected == 1.0 ? 0.1 : expected);
        var norms = sae.WDec.detach().norm(1);
        Assert.True(norms.allclose(full_like(norms, expected), rtol: 1e-5, atol: 0), $"norms {norms.min().item<float>()}..{norms.max().item<float>()}");
        Assert.True(sae.WEnc.detach().equal(sae.WDec.detach().t()).all().item<bool>());
        Assert.Equal(0f, sae.BEnc.abs().sum().item<float>());
        Assert.Equal(0f, sae.BDec.abs().sum().item<float>());
    }

    /// <summary>SaeSharp's TopK loss written densely in torch (docs/recipes.md; dictionary_learning's AuxK): mse =
    /// mean_n‖ŷ − x‖², ŷ = TopK_k(ReLU(pre))·W_dec + b_dec with pre = (x − b_dec)·W_enc + b_enc; e = x − ŷ (no gradient),
    /// ê = the ReLU'd top-k_aux dead pre-activations · W_dec, aux = mean_n‖e − ê‖² / mean_n‖e − mean(e)‖².</summary>
    private static Tensor DenseReferenceLoss(Tensor x, Dictionary<string, Tensor> w, int k, Tensor dead, int kAux, double auxCoefficient)
    {
        var pre = (x - w["b_dec"]).mm(w["W_enc"]) + w["b_enc"];
        var top = pre.detach().topk(k, dim: 1).indexes;
        var acts = zeros_like(pre).scatter(1, top, nn.functional.relu(pre.gather(1, top)));
        var y = acts.mm(w["W_dec"]) + w["b_dec"];
        var mse = (y - x).pow(2).sum(1).mean();
        var e = (x - y).detach();
        var deadIdx = dead.nonzero().squeeze(1);
        var deadPre = pre.index_select(1, deadIdx);
        var auxTop = nn.functional.relu(deadPre.detach()).topk(kAux, dim: 1).indexes;
        var auxActs = zeros_like(deadPre).scatter(1, auxTop, nn.functional.relu(deadPre.gather(1, auxTop)));
        var eHat = auxActs.mm(w["W_dec"].index_select(0, deadIdx));
        var aux = (e - eHat).pow(2).sum(1).mean() / (e - e.mean([0], keepdim: true)).pow(2).sum(1).mean();
        return mse + aux * auxCoefficient;
    }

    [Theory]
    [InlineData("candidates off")]
    [InlineData("candidates on")]
    [InlineData("autocast")]
    public void With_free_decoder_norms_AuxK_and_every_training_path_give_the_dense_losss_gradients(string path)
    {
        using var scope = NewDisposeScope();
        using var sae = FixtureSae(SaeArchitectures.TopK, rescale: false);
        sae.Training.CandidatePass = path == "candidates on" ? CandidatePass.On : CandidatePass.Off;
        sae.Training.Autocast = path == "autocast";
        sae.Training.AuxKCoefficient = 0.5;
        var x = JsonTensor(Fixture["x"]!);
        var dead = TorchScalars.Arange(24).ge(14);
        var ctx = new SaeTrainContext { Step = 0, DeadMask = dead };
        var o = sae.TrainingForward(x, x, ctx);
        Assert.True(o.Losses["auxiliary_reconstruction_loss"].item<float>() > 0);
        o.Loss.backward();
        sae.BeforeOptimizerStep(ctx);

        var leaves = Params(sae).ToDictionary(p => p.Key, p => p.Value.detach().clone().requires_grad_());
        var reference = DenseReferenceLoss(x, leaves, sae.K, dead, kAux: 4, auxCoefficient: 0.5);
        reference.backward();
        // bfloat16 selects only; the values are float32 again (TopKFamilySae), so only a near-tie could differ.
        Close(reference.detach(), o.Loss, $"{path} loss");
        foreach (var (name, p) in Params(sae)) Close(leaves[name].grad!, p.grad!, $"{path} dL/d{name}");
    }

    private static Tensor DecoderNorms(string dir)
    {
        using var sae = SaeLoader.Load(dir);
        return sae.WDec.detach().norm(1).clone();
    }

    [Theory]
    [InlineData("topk", "topk")]
    [InlineData("batchtopk", "jumprelu")]
    [InlineData("matryoshka", "jumprelu")]
    public void A_run_with_it_false_trains_free_decoder_rows_and_writes_it_where_SAELens_does(string arch, string saved)
    {
        // Nested under "sae", as SAELens's to_dict() writes it; the decoder starts at decoder_init_norm 0.1 (SAELens's).
        using (var plan = TrainingPlan.ForActivations(Settings($"\"sae\": {{\"architecture\": \"{arch}\", \"k\": 3, \"rescale_acts_by_decoder_norm\": false}}", "run")))
        {
            Assert.False(plan.Options.Saes[0].Sae.Training.RescaleActsByDecoderNorm);
            plan.Run();
        }
        var cfg = JsonNode.Parse(File.ReadAllText(P("run", "cfg.json")))!;
        Assert.Equal(saved, (string)cfg["architecture"]!);
        // SAELens's TopKSAEConfig has the field; its JumpReLU form of BatchTopK has not.
        if (saved == "topk") Assert.False((bool)cfg["rescale_acts_by_decoder_norm"]!);
        else Assert.Null(cfg["rescale_acts_by_decoder_norm"]);
        var norms = DecoderNorms(P("run"));
        Assert.True(norms.max().item<float>() < 0.5, $"decoder norms up to {norms.max().item<float>()}: not free from 0.1");
        Assert.True(norms.max().item<float>() - norms.min().item<float>() > 1e-4, "decoder norms all equal");

        // The saved topk SAE encodes as SAELens's plain TopK would (TopKSAEConfig with false: no rescale), by hand.
        if (saved != "topk") return;
        using var sae = SaeLoader.Load(P("run"));
        using var scope = NewDisposeScope();
        var x = randn(20, 8, generator: new Generator(4));
        var pre = (x - sae.BDec).mm(sae.WEnc) + sae.BEnc;
        var top = pre.topk(3, dim: 1).indexes;
        var expected = zeros_like(pre).scatter(1, top, nn.functional.relu(pre.gather(1, top)));
        Assert.True(sae.Encode(x).allclose(expected, rtol: 1e-5, atol: 1e-6));
    }

    [Fact]
    public void From_pretrained_keeps_the_saved_SAEs_value_and_resume_refuses_a_change()
    {
        using (var plan = TrainingPlan.ForActivations(Settings("\"architecture\": \"topk\", \"k\": 3, \"rescale_acts_by_decoder_norm\": false", "base"))) plan.Run();
        string baseDir = P("base").Replace("\\", "/");
        var baseNorms = DecoderNorms(P("base"));

        // No field: the saved cfg.json's false is kept (as SAELens's runner loads the SAE with its own config), rows free.
        using (var plan = TrainingPlan.ForActivations(Settings($"\"from_pretrained_path\": \"{baseDir}\"", "ft")))
        {
            Assert.Contains(plan.Notes, n => n.StartsWith("rescale_acts_by_decoder_norm false: the SAE at from_pretrained_path has false", StringComparison.Ordinal));
            plan.Run();
        }
        Assert.False((bool)JsonNode.Parse(File.ReadAllText(P("ft", "cfg.json")))!["rescale_acts_by_decoder_norm"]!);
        var ftNorms = DecoderNorms(P("ft"));
        Assert.True(ftNorms.max().item<float>() < 0.5 && !ftNorms.allclose(baseNorms, rtol: 0, atol: 1e-7));

        // true in the config (as every SAELens to_dict() says): ignored with a note, as apply_b_dec_to_input.
        using (var plan = TrainingPlan.ForActivations(Settings($"\"from_pretrained_path\": \"{baseDir}\", \"rescale_acts_by_decoder_norm\": true", "ft2")))
        {
            Assert.Contains(plan.Notes, n => n.Contains("rescale_acts_by_decoder_norm true is ignored: the SAE at from_pretrained_path has false", StringComparison.Ordinal));
            Assert.False(plan.Options.Saes[0].Sae.Training.RescaleActsByDecoderNorm);
        }

        // A plain TopK with unequal norms and no such field in its cfg.json (SAELens's inference default false; its runner's
        // default true): refused unless the run says false, which then trains it as it is.
        var cfgPath = P("base", "cfg.json");
        var cfg = JsonNode.Parse(File.ReadAllText(cfgPath))!.AsObject();
        cfg.Remove("rescale_acts_by_decoder_norm");
        File.WriteAllText(cfgPath, cfg.ToJsonString());
        var e = Assert.Throws<SaeSharpException>(() =>
        {
            using var plan = TrainingPlan.ForActivations(Settings($"\"from_pretrained_path\": \"{baseDir}\"", "ft3"));
        });
        Assert.Contains("decoder rows have norms from", e.Message);
        Assert.Contains("rescale_acts_by_decoder_norm false in --config trains it as it is", e.Message);
        using (var plan = TrainingPlan.ForActivations(Settings($"\"from_pretrained_path\": \"{baseDir}\", \"rescale_acts_by_decoder_norm\": false", "ft3")))
        {
            Assert.False(plan.Options.Saes[0].Sae.Training.RescaleActsByDecoderNorm);
            plan.Run();
        }
        Assert.True(DecoderNorms(P("ft3")).max().item<float>() < 0.5);

        // A run stopped at a checkpoint resumes with its own value; another one given on resume is refused.
        var first = Settings("\"architecture\": \"topk\", \"k\": 3, \"rescale_acts_by_decoder_norm\": false, \"checkpoint_every\": 4", "res");
        first.Steps = 4;
        using (var plan = TrainingPlan.ForActivations(first)) plan.Run();
        e = Assert.Throws<SaeSharpException>(() =>
        {
            using var plan = TrainingPlan.ForActivations(Settings("\"architecture\": \"topk\", \"k\": 3, \"rescale_acts_by_decoder_norm\": true", "res"), resume: true);
        });
        Assert.Contains("rescale_acts_by_decoder_norm true (topk in the checkpoint's run: false)", e.Message);
        using (var plan = TrainingPlan.ForActivations(Settings("\"architecture\": \"topk\", \"k\": 3", "res"), resume: true)) plan.Run();
        Assert.False((bool)JsonNode.Parse(File.ReadAllText(P("res", "cfg.json")))!["rescale_acts_by_decoder_norm"]!);
        Assert.True(DecoderNorms(P("res")).max().item<float>() < 0.5);
    }
}
