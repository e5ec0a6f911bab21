using SaeSharp.Evaluation;
using SaeSharp.Models;
using SaeSharp.Saes;
using SaeSharp.Tests.Activations;
using SaeSharp.Tests.Models;
using static TorchSharp.torch;

namespace SaeSharp.Tests.Evaluation;

/// <summary>
/// <see cref="DownstreamEvaluator.EvaluateCrossCoder"/> against hand-run models: every hook of a model replaced by the
/// crosscoder's reconstruction of the clean activations (computed here with <see cref="CrossCoder.forward"/> on the
/// activations of separate clean runs), zeroed, or mean-ablated, and the CE and KL taken from full log-softmaxes in float64.
/// </summary>
public class CrossCoderDownstreamTests : ModelTestBase
{
    private const int D = 16;

    /// <summary>A crosscoder with x̂ = x exactly: latent pair (l, i) reads ±x_l[i] and writes ±e_i to slot l, so
    /// ReLU(x) − ReLU(−x) = x (weights 0 and ±1: every product and sum is exact).</summary>
    internal static CrossCoder Identity(int layers, int d)
    {
        var cc = new CrossCoder(new CrossCoderConfig { ActivationDim = d, DictSize = 2 * layers * d, NumLayers = layers });
        using var _ = no_grad();
        using var enc = zeros(layers, d, 2 * layers * d);
        using var dec = zeros(layers, 2 * layers * d, d);
        for (int l = 0; l < layers; l++)
            for (int i = 0; i < d; i++)
            {
                int pos = 2 * (l * d + i);
                enc[l, i, pos] = tensor(1f);
                enc[l, i, pos + 1] = tensor(-1f);
                dec[l, pos, i] = tensor(1f);
                dec[l, pos + 1, i] = tensor(-1f);
            }
        cc.Encoder.Weight.copy_(enc);
        cc.Decoder.Weight.copy_(dec);
        return cc;
    }

    internal static CrossCoder Random(int layers, int d, int dictSize, int seed)
    {
        var cc = new CrossCoder(new CrossCoderConfig { ActivationDim = d, DictSize = dictSize, NumLayers = layers });
        using (var g = new Generator((ulong)seed)) cc.InitializeWeights(g, null);
        using var _ = no_grad();
        using (var g = new Generator((ulong)seed + 1))
        {
            cc.Encoder.Bias.copy_(rand(dictSize, generator: g).mul(0.2).sub(0.05));
            cc.Decoder.Bias.copy_(randn(layers, d, generator: g).mul(0.1));
        }
        return cc;
    }

    /// <summary>Mean next-token CE over every predicting position and mean KL(clean ‖ variant) over every position, in float64.</summary>
    private static (double Ce, double Kl) HandCeKl(Tensor clean, Tensor variant, Tensor tokens)
    {
        using var scope = NewDisposeScope();
        long s = tokens.shape[1];
        var lc = clean.to(ScalarType.Float64).log_softmax(-1);
        var lv = variant.to(ScalarType.Float64).log_softmax(-1);
        var next = tokens.narrow(1, 1, s - 1).unsqueeze(-1);
        double ce = -lv.narrow(1, 0, s - 1).gather(2, next).mean().item<double>();
        double kl = (lc.exp() * (lc - lv)).sum(-1).mean().item<double>();
        return (ce, kl);
    }

    /// <summary>Each model run clean with its hooks cached; x [tokens, L, d] model-major.</summary>
    private static Tensor CleanX(IReadOnlyList<(HookedTransformer Model, string Hook)> slots, Tensor tokens)
    {
        var parts = new List<Tensor>();
        foreach (var (model, hook) in slots)
        {
            var (logits, cache) = model.RunWithCache(tokens, [hook]);
            logits?.Dispose();
            using (cache) parts.Add(cache[hook].reshape(tokens.numel(), D).clone());
        }
        return stack(parts, 1);
    }

    private static Tensor RunReplacing(HookedTransformer model, Tensor tokens, IEnumerable<(string Hook, Func<Tensor, Tensor> Fn)> hooks) =>
        model.Run(tokens, new RunOptions { Hooks = hooks.Select(h => (h.Hook, (Func<Tensor, Tensor?>)(y => h.Fn(y)))).ToList() }).Logits!;

    [Fact]
    public void Two_hooks_of_one_model_spliced_at_once_match_a_hand_run_and_so_do_the_ablations()
    {
        using var model = Gpt2();
        var windows = ModelActivationSourceTests.Windows(5, 8);
        string[] hooks = ["blocks.0.hook_resid_post", "blocks.1.hook_mlp_out"];
        using var cc = Random(2, D, 24, seed: 3);
        // One batch: the mean ablation's mean is over a batch's counted positions (as the SAE path's).
        var m = DownstreamEvaluator.EvaluateCrossCoder(cc, [new CrossCoderModelRun(model)], hooks, windows, new DownstreamEvalOptions { BatchSizePrompts = 5 });
        var r = Assert.Single(m.Models);
        Assert.Equal([0, 1], r.Slots);
        Assert.Equal(hooks, r.Hooks);

        using var tokens = Tokens([.. windows]);
        using var x = CleanX([(model, hooks[0]), (model, hooks[1])], tokens);
        using var xHat = cc.forward(x);
        using var clean = model.Forward(tokens);
        using var spliced = RunReplacing(model, tokens, hooks.Select((h, l) => (h, (Func<Tensor, Tensor>)(y => xHat.select(1, l).view(y.shape)))));
        using var zeroed = RunReplacing(model, tokens, hooks.Select(h => (h, (Func<Tensor, Tensor>)(y => zeros_like(y)))));
        using var means = x.mean([0]);
        using var meaned = RunReplacing(model, tokens, hooks.Select((h, l) => (h, (Func<Tensor, Tensor>)(y => means[l].expand_as(y)))));
        var (ceClean, _) = HandCeKl(clean, clean, tokens);
        var (ceSpliced, klSpliced) = HandCeKl(clean, spliced, tokens);
        var (ceZero, klZero) = HandCeKl(clean, zeroed, tokens);
        var (ceMean, klMean) = HandCeKl(clean, meaned, tokens);
        Assert.Equal(ceClean, r.CeLossWithoutSae, 1e-5);
        Assert.Equal(ceSpliced, r.CeLossWithSae, 1e-5);
        Assert.Equal(ceZero, r.CeLossWithAblation, 1e-5);
        Assert.Equal(ceMean, r.CeLossWithMeanAblation, 1e-5);
        Assert.Equal(klSpliced, r.KlDivWithSae, 1e-5);
        Assert.Equal(klZero, r.KlDivWithAblation, 1e-5);
        Assert.Equal(klMean, r.KlDivWithMeanAblation, 1e-5);
        Assert.Equal((ceZero - ceSpliced) / (ceZero - ceClean), r.CeLossScore, 1e-4);
        // The error term restores the clean run; the spliced run is not the clean one.
        Assert.Equal(ceClean, r.CeLossWithErrorTerm, 1e-5);
        Assert.True(r.KlDivWithErrorTerm < 1e-6, $"KL with error term {r.KlDivWithErrorTerm}");
        Assert.True(klSpliced > 1e-4, $"the random crosscoder changes the model (KL {klSpliced})");
        Assert.Equal(40, r.Tokens);
        Assert.Equal(35, r.CeTokens);

        // The reconstruction metrics are CrossCoderEvaluator's on the same activations.
        var direct = CrossCoderEvaluator.Evaluate(cc, x);
        Assert.Equal(direct.Rows, m.Reconstruction.Rows);
        for (int l = 0; l < 2; l++)
        {
            Assert.Equal(direct.Layers[l].Mse, m.Reconstruction.Layers[l].Mse, 1e-6);
            Assert.Equal(direct.Layers[l].ExplainedVariance, m.Reconstruction.Layers[l].ExplainedVariance, 1e-6);
        }
        Assert.Equal(direct.L0, m.Reconstruction.L0, 1e-9);
        Assert.Equal(direct.DeadLatents, m.Reconstruction.DeadLatents);
    }

    [Fact]
    public void Model_diffing_splices_each_models_slot_from_an_encoding_of_both_models()
    {
        using var baseModel = Gpt2(seed: 4);
        using var chat = Gpt2(seed: 9);
        var windows = ModelActivationSourceTests.Windows(4, 8);
        const string hook = "blocks.1.hook_resid_post";
        using var cc = Random(2, D, 20, seed: 5);
        var m = DownstreamEvaluator.EvaluateCrossCoder(cc, [new(baseModel, Name: "base"), new(chat, Name: "chat")], [hook], windows,
            new DownstreamEvalOptions { BatchSizePrompts = 3, MeanAblation = false });
        Assert.Equal(["base", "chat"], m.Models.Select(r => r.Name));
        Assert.Equal([1], m.Models[1].Slots);

        using var tokens = Tokens([.. windows]);
        using var x = CleanX([(baseModel, hook), (chat, hook)], tokens);
        using var xHat = cc.forward(x);
        foreach (var (model, slot) in new[] { (baseModel, 0), (chat, 1) })
        {
            var r = m.Models[slot];
            using var clean = model.Forward(tokens);
            using var spliced = RunReplacing(model, tokens, [(hook, y => xHat.select(1, slot).view(y.shape))]);
            using var zeroed = RunReplacing(model, tokens, [(hook, y => zeros_like(y))]);
            var (ceClean, _) = HandCeKl(clean, clean, tokens);
            var (ceSpliced, klSpliced) = HandCeKl(clean, spliced, tokens);
            var (ceZero, _) = HandCeKl(clean, zeroed, tokens);
            Assert.Equal(ceClean, r.CeLossWithoutSae, 1e-5);
            Assert.Equal(ceSpliced, r.CeLossWithSae, 1e-5);
            Assert.Equal(ceZero, r.CeLossWithAblation, 1e-5);
            Assert.Equal(klSpliced, r.KlDivWithSae, 1e-5);
            Assert.True(double.IsNaN(r.CeLossWithMeanAblation));
        }
        Assert.NotEqual(m.Models[0].CeLossWithoutSae, m.Models[1].CeLossWithoutSae);
    }

    [Fact]
    public void An_exact_crosscoder_recovers_all_the_loss_and_a_zero_one_equals_zero_ablation()
    {
        using var model = Gpt2();
        var windows = ModelActivationSourceTests.Windows(4, 8);
        string[] hooks = ["blocks.0.hook_resid_post", "blocks.1.hook_resid_post"];
        using (var exact = Identity(2, D))
        {
            var m = DownstreamEvaluator.EvaluateCrossCoder(exact, [new CrossCoderModelRun(model)], hooks, windows);
            var r = m.Models[0];
            Assert.Equal(r.CeLossWithoutSae, r.CeLossWithSae, 1e-6);
            Assert.True(Math.Abs(r.KlDivWithSae) < 1e-7, $"KL {r.KlDivWithSae}");
            Assert.Equal(1.0, r.CeLossScore, 1e-5);
            Assert.Equal(1.0, r.KlDivScore, 1e-5);
            Assert.All(m.Reconstruction.Layers, l => Assert.Equal(1.0, l.ExplainedVariance, 1e-9));
            Assert.All(m.Reconstruction.Layers, l => Assert.Equal(0.0, l.Mse, 1e-12));
        }
        using var zero = new CrossCoder(new CrossCoderConfig { ActivationDim = D, DictSize = 8, NumLayers = 2 });
        var z = DownstreamEvaluator.EvaluateCrossCoder(zero, [new CrossCoderModelRun(model)], hooks, windows).Models[0];
        Assert.Equal(z.CeLossWithAblation, z.CeLossWithSae, 1e-9);
        Assert.Equal(z.KlDivWithAblation, z.KlDivWithSae, 1e-9);
        Assert.Equal(0.0, z.CeLossScore, 1e-9);
    }

    [Fact]
    public void Excluded_tokens_keep_their_clean_activations_and_do_not_count()
    {
        using var model = Gpt2();
        var windows = ModelActivationSourceTests.Windows(4, 8);
        long bos = windows[0][0];
        string[] hooks = ["blocks.0.hook_resid_post", "blocks.1.hook_resid_post"];
        using var cc = Random(2, D, 24, seed: 7);
        var m = DownstreamEvaluator.EvaluateCrossCoder(cc, [new CrossCoderModelRun(model)], hooks, windows,
            new DownstreamEvalOptions { ExcludeTokenIds = [bos], MeanAblation = false, ErrorTerm = false });
        using var tokens = Tokens([.. windows]);
        using var keep = tokens.ne(bos);
        using var x = CleanX([(model, hooks[0]), (model, hooks[1])], tokens);
        using var xHat = cc.forward(x);
        using var clean = model.Forward(tokens);
        using var spliced = RunReplacing(model, tokens, hooks.Select((h, l) => (h, (Func<Tensor, Tensor>)(y =>
            where(keep.unsqueeze(-1), xHat.select(1, l).view(y.shape), y)))));
        // CE over positions whose own token and next-token prediction count (the position's token is not excluded).
        using var lp = spliced.to(ScalarType.Float64).log_softmax(-1);
        long s = tokens.shape[1];
        using var nll = -lp.narrow(1, 0, s - 1).gather(2, tokens.narrow(1, 1, s - 1).unsqueeze(-1)).squeeze(-1);
        using var counted = keep.narrow(1, 0, s - 1).to(ScalarType.Float64);
        double ce = (nll * counted).sum().item<double>() / counted.sum().item<double>();
        Assert.Equal(ce, m.Models[0].CeLossWithSae, 1e-5);
        Assert.Equal(keep.sum().item<long>(), m.Reconstruction.Rows);
    }

    [Fact]
    public void A_crosscoder_of_other_slots_or_width_is_refused_by_name()
    {
        using var model = Gpt2();
        var windows = ModelActivationSourceTests.Windows(2, 8);
        using var three = new CrossCoder(new CrossCoderConfig { ActivationDim = D, DictSize = 8, NumLayers = 3 });
        Assert.Equal("the crosscoder has 3 layer slots but 1 model(s) × 2 hook(s) give 2",
            Assert.Throws<SaeSharpException>(() => DownstreamEvaluator.EvaluateCrossCoder(three, [new CrossCoderModelRun(model)],
                ["blocks.0.hook_resid_post", "blocks.1.hook_resid_post"], windows)).Message);
        using var wide = new CrossCoder(new CrossCoderConfig { ActivationDim = 64, DictSize = 8, NumLayers = 2 });
        var e = Assert.Throws<SaeSharpException>(() => DownstreamEvaluator.EvaluateCrossCoder(wide, [new CrossCoderModelRun(model)],
            ["blocks.0.hook_resid_post", "blocks.1.hook_resid_post"], windows));
        Assert.StartsWith("crosscoder slot 0 reads 'blocks.0.hook_resid_post' of ", e.Message);
        Assert.EndsWith("16 values per token, but its activation_dim is 64", e.Message);
    }

    [Fact]
    public void Evaluation_and_edits_leave_no_live_tensors()
    {
        using var model = Gpt2();
        var windows = ModelActivationSourceTests.Windows(3, 8);
        string[] hooks = ["blocks.0.hook_resid_post", "blocks.1.hook_resid_post"];
        using var cc = Random(2, D, 24, seed: 3);
        using var tokens = Tokens([.. windows]);
        long leaked = LiveTensors.Leaked(() =>
        {
            DownstreamEvaluator.EvaluateCrossCoder(cc, [new CrossCoderModelRun(model)], hooks, windows, new DownstreamEvalOptions { BatchSizePrompts = 2 });
            using var x = SaeSharp.Interventions.CrossCoderInterventions.CleanInput([new CrossCoderModelRun(model)], hooks, [0, 0], tokens);
            using (var edit = SaeSharp.Interventions.CrossCoderInterventions.EditLatents(cc, x, [(0, hooks[0]), (1, hooks[1])], SaeSharp.Interventions.CrossCoderInterventions.Ablate(cc, [1, 2])))
                model.Run(tokens, new RunOptions { Hooks = [.. edit.Hooks, .. SaeSharp.Interventions.CrossCoderInterventions.Steering(cc, 3, 2.0, [(1, hooks[1])])] }).Logits!.Dispose();
        });
        Assert.Equal(0, leaked);
    }
}
