using SaeSharp.Evaluation;
using SaeSharp.Saes;
using SaeSharp.Tests.Activations;
using SaeSharp.Tests.Models;
using static TorchSharp.torch;

namespace SaeSharp.Tests.Evaluation;

public class DownstreamEvaluatorTests : ModelTestBase
{
    private const long Bos = ModelActivationSourceTests.Bos;

    private static Sae MakeSae(string hook, int dIn, int dSae, Action<Sae> set, int? dOut = null)
    {
        var cfg = new SaeConfig { DIn = dIn, DSae = dSae, DOut = dOut, ApplyBDecToInput = dOut is null };
        cfg.Metadata.HookName = hook;
        var sae = SaeFactory.Create(cfg);
        using (no_grad()) set(sae);
        return sae;
    }

    /// <summary>d_sae = 2·d_in, W_enc = [I, −I], W_dec = [I; −I], zero biases: ReLU(x) − ReLU(−x) = x exactly.</summary>
    private static Sae Identity(string hook, int d) => MakeSae(hook, d, 2 * d, s =>
    {
        var id = eye(d);
        s.WEnc.copy_(cat([id, -id], 1));
        s.WDec.copy_(cat([id, -id], 0));
    });

    private static Sae Zero(string hook, int d) => MakeSae(hook, d, 8, _ => { });

    private static Sae Random(string hook, int d, int seed) => MakeSae(hook, d, 24, s =>
    {
        var g = new Generator((ulong)seed);
        s.WEnc.copy_(randn(d, 24, generator: g) * 0.3);
        s.BEnc.copy_(randn(24, generator: g) * 0.1);
        s.WDec.copy_(randn(24, d, generator: g) * 0.3);
        s.BDec.copy_(randn(d, generator: g) * 0.1);
    });

    /// <summary>Mean next-token CE by hand: logsumexp(logits[p]) − logits[p, token[p+1]] in double, over positions
    /// whose input token is not excluded.</summary>
    private static double HandCe(Tensor logits, List<long[]> windows, long? exclude)
    {
        var l = logits.to(ScalarType.Float64);
        double sum = 0;
        long n = 0;
        for (int b = 0; b < windows.Count; b++)
            for (int p = 0; p + 1 < windows[b].Length; p++)
            {
                if (exclude is long e && windows[b][p] == e) continue;
                var row = l[b, p].data<double>().ToArray();
                double m = row.Max();
                double lse = m + Math.Log(row.Sum(v => Math.Exp(v - m)));
                sum += lse - row[windows[b][p + 1]];
                n++;
            }
        return sum / n;
    }

    [Fact]
    public void Clean_ce_matches_a_hand_computation_and_kl_of_clean_is_zero()
    {
        using var model = Gpt2();
        var windows = ModelActivationSourceTests.Windows(5, 8);
        var logits = model.Forward(Tokens([.. windows]));
        foreach (long? exclude in new long?[] { null, Bos })
        {
            var r = DownstreamEvaluator.Evaluate(model, [new DownstreamTarget(Identity("blocks.0.hook_resid_post", 16))], windows,
                new DownstreamEvalOptions { BatchSizePrompts = 2, ExcludeTokenIds = exclude is long e ? [e] : null })[0];
            Assert.Equal(HandCe(logits, windows, exclude), r.CeLossWithoutSae, 5);
            // Identity dictionary: spliced run is the clean run, so its KL to clean is zero and it recovers all the loss.
            Assert.Equal(0, r.KlDivWithSae, 6);
            Assert.Equal(1, r.CeLossScore, 4);
            Assert.Equal(1, r.KlDivScore, 4);
            Assert.Equal(1, r.CeLossScoreMeanAblation, 4);
            Assert.True(r.KlDivWithAblation > 1e-3, "zero ablation should change the model");
            Assert.Equal(1, r.ExplainedVariance, 5);
            Assert.Equal(0, r.Mse, 8);
            Assert.Equal(1, r.CosSim, 5);
            Assert.Equal(16, r.L0, 6); // each of the 16 dimensions is nonzero: exactly one of ReLU(x_i), ReLU(−x_i) fires
            long counted = windows.Sum(w => w.LongCount(t => exclude is null || t != exclude));
            Assert.Equal(counted, r.Tokens);
        }
    }

    [Fact]
    public void Metrics_that_come_out_NaN_are_named_with_their_cause()
    {
        var windows = ModelActivationSourceTests.Windows(4, 8);
        using (var model = NeoX(parallel: true))
        {
            var fine = DownstreamEvaluator.Evaluate(model, [new DownstreamTarget(Random("blocks.1.hook_resid_post", 16, 3))], windows)[0];
            Assert.Empty(fine.NonFiniteNotes());
            // The model's own weights hold NaN: its logits, and with them every CE and KL metric, are NaN.
            using (no_grad()) foreach (var (_, w) in model.named_parameters()) w.fill_(float.NaN);
            var r = DownstreamEvaluator.Evaluate(model, [new DownstreamTarget(Random("blocks.1.hook_resid_post", 16, 3))], windows)[0];
            Assert.True(double.IsNaN(r.CeLossWithoutSae));
            var note = Assert.Single(r.NonFiniteNotes());
            Assert.StartsWith("ce loss clean is NaN: the model's own logits are not finite", note);
            Assert.Contains("mse too if the activations at blocks.1.hook_resid_post are not finite", note);
        }
        using (var model = NeoX(parallel: true))
        {
            // An SAE whose weights overflow float32 (as after a diverged run): its reconstruction is not finite.
            var huge = MakeSae("blocks.1.hook_resid_post", 16, 24, s => { s.WEnc.fill_(1e30f); s.WDec.fill_(1e30f); });
            var r = DownstreamEvaluator.Evaluate(model, [new DownstreamTarget(huge)], windows)[0];
            var notes = r.NonFiniteNotes();
            Assert.Contains(notes, n => n.StartsWith("mse and fvu are ", StringComparison.Ordinal) && n.Contains("reconstruction of the activations at blocks.1.hook_resid_post is not finite"));
            Assert.Contains(notes, n => n.StartsWith("ce loss with SAE is NaN", StringComparison.Ordinal));
        }
    }

    [Fact]
    public void Zero_dictionary_recovers_nothing_against_zero_ablation()
    {
        using var model = NeoX(parallel: true);
        var windows = ModelActivationSourceTests.Windows(4, 8);
        var r = DownstreamEvaluator.Evaluate(model, [new DownstreamTarget(Zero("blocks.1.hook_mlp_out", 16))], windows)[0];
        Assert.Equal(0, r.CeLossScore, 10);
        Assert.Equal(0, r.KlDivScore, 10);
        Assert.Equal(r.CeLossWithAblation, r.CeLossWithSae, 10);
        Assert.Equal(8, r.DeadLatents);
        Assert.Equal(0, r.L0);
        Assert.NotEqual(r.CeLossWithoutSae, r.CeLossWithAblation);
    }

    [Fact]
    public void Error_term_restores_the_clean_model_and_mean_ablation_matches_a_manual_run()
    {
        using var model = Gpt2();
        var windows = ModelActivationSourceTests.Windows(4, 8);
        const string hook = "blocks.1.hook_resid_pre";
        var r = DownstreamEvaluator.Evaluate(model, [new DownstreamTarget(Random(hook, 16, 3))], windows,
            new DownstreamEvalOptions { BatchSizePrompts = 4 })[0];
        Assert.Equal(r.CeLossWithoutSae, r.CeLossWithErrorTerm, 5);
        Assert.Equal(0, r.KlDivWithErrorTerm, 6);
        Assert.True(r.KlDivWithSae > 1e-4, "a random SAE should change the outputs");
        Assert.True(r.ExplainedVariance < 0.9);

        // Mean ablation by hand (one batch holds all windows): replace the hook by its mean over every position.
        var tokens = Tokens([.. windows]);
        var (_, cache) = model.RunWithCache(tokens, [hook]);
        var mean = cache[hook].mean([0, 1]);
        var ablated = model.RunWithHooks(tokens, (hook, x => mean.expand_as(x)));
        Assert.Equal(HandCe(ablated, windows, null), r.CeLossWithMeanAblation, 5);
        cache.Dispose();
    }

    [Fact]
    public void Zero_ablation_replaces_excluded_positions_too_and_only_the_saes_head()
    {
        // SAELens's zero-ablation hook zeroes the whole activation (BOS included, whatever exclude_special_tokens says)
        // and, for an SAE on one head, only that head: ce_loss_with_ablation must be that run's CE.
        using var model = Gpt2();
        var windows = ModelActivationSourceTests.Windows(4, 8);
        var tokens = Tokens([.. windows]);
        var o = new DownstreamEvalOptions { BatchSizePrompts = 4, ExcludeTokenIds = [Bos] };
        const string resid = "blocks.1.hook_resid_pre";
        var r = DownstreamEvaluator.Evaluate(model, [new DownstreamTarget(Random(resid, 16, 3))], windows, o)[0];
        var zeroed = model.RunWithHooks(tokens, (resid, x => zeros_like(x)));
        Assert.Equal(HandCe(zeroed, windows, Bos), r.CeLossWithAblation, 5);

        const string z = "blocks.1.attn.hook_z";
        var (_, cache) = model.RunWithCache(tokens, [z]);
        long dHead = cache[z].shape[3];
        cache.Dispose();
        var onHead = Random(z, (int)dHead, 4);
        onHead.Cfg.Metadata.HookHeadIndex = 1;
        var h = DownstreamEvaluator.Evaluate(model, [new DownstreamTarget(onHead)], windows, o)[0];
        var headZeroed = model.RunWithHooks(tokens, (z, x =>
        {
            var heads = x.unbind(2).ToArray();
            heads[1] = zeros_like(heads[1]);
            return stack(heads, 2);
        }));
        Assert.Equal(HandCe(headZeroed, windows, Bos), h.CeLossWithAblation, 5);
        var allZeroed = model.RunWithHooks(tokens, (z, x => zeros_like(x)));
        Assert.NotEqual(HandCe(allZeroed, windows, Bos), h.CeLossWithAblation, 5);
    }

    /// <summary>A transcoder reading one head (hook_head_index) replaces, and so ablates, its whole output hook: the
    /// head picks what it reads, not what it writes.</summary>
    [Fact]
    public void A_transcoder_on_one_head_is_spliced_and_ablated_at_its_whole_output_hook()
    {
        using var model = Gpt2();
        var windows = ModelActivationSourceTests.Windows(3, 8);
        var tokens = Tokens([.. windows]);
        const string z = "blocks.1.attn.hook_z", attnOut = "blocks.1.hook_attn_out";
        int dHead = model.Config.DHead, dModel = model.Config.DModel;
        using var tc = SaeSharp.Tests.Hooks.TranscoderSpliceTests.RandomTranscoder(z, attnOut, dHead, dModel, 24, 6, dtype: ScalarType.Float32);
        tc.Cfg.Metadata.HookHeadIndex = 1;
        var r = DownstreamEvaluator.Evaluate(model, [new DownstreamTarget(tc)], windows)[0];

        using var scope = NewDisposeScope();
        Tensor? head1 = null;
        var byHand = model.RunWithHooks(tokens,
            (z, x => { head1 = x.select(2, 1).detach().clone(); return (Tensor?)null; }),
            (attnOut, _ => (Tensor?)(matmul(nn.functional.relu(matmul(head1!, tc.WEnc) + tc.BEnc), tc.WDec) + tc.BDec)));
        Assert.Equal(HandCe(byHand, windows, null), r.CeLossWithSae, 5);
        Assert.NotEqual(r.CeLossWithoutSae, r.CeLossWithSae, 3);
        var zeroed = model.RunWithHooks(tokens, (attnOut, x => zeros_like(x)));
        Assert.Equal(HandCe(zeroed, windows, null), r.CeLossWithAblation, 5);
    }

    [Fact]
    public void Several_saes_in_one_pass_match_separate_evaluations()
    {
        using var model = Gpt2(nLayer: 3);
        var windows = ModelActivationSourceTests.Windows(6, 8);
        var a = Random("blocks.0.hook_resid_post", 16, 1);
        var b = Random("blocks.2.hook_resid_pre", 16, 2);
        var c = Random("blocks.0.hook_resid_post", 16, 5);
        var o = new DownstreamEvalOptions { BatchSizePrompts = 4, ExcludeTokenIds = [Bos] };
        var together = DownstreamEvaluator.Evaluate(model, [new(a), new(b), new(c)], windows, o);
        var alone = new[] { a, b, c }.Select(s => DownstreamEvaluator.Evaluate(model, [new(s)], windows, o)[0]).ToList();
        for (int i = 0; i < 3; i++)
        {
            Assert.Equal(alone[i].CeLossWithSae, together[i].CeLossWithSae, 10);
            Assert.Equal(alone[i].KlDivWithSae, together[i].KlDivWithSae, 10);
            Assert.Equal(alone[i].CeLossWithAblation, together[i].CeLossWithAblation, 10);
            Assert.Equal(alone[i].ExplainedVariance, together[i].ExplainedVariance, 10);
        }
        Assert.NotEqual(together[0].CeLossWithSae, together[2].CeLossWithSae);
        var json = together[1].ToJson();
        Assert.Equal(together[1].CeLossScore, (double)json["model_performance_preservation"]!["ce_loss_score"]!);
        Assert.Equal(together[1].KlDivScore, (double)json["model_behavior_preservation"]!["kl_div_score"]!);
    }

    [Fact]
    public void Transcoder_is_spliced_at_its_output_hook()
    {
        using var model = Gpt2();
        var windows = ModelActivationSourceTests.Windows(3, 8);
        // A "transcoder" that ignores its input and always outputs zero: spliced = zero ablation of hook_mlp_out.
        var tc = MakeSae("blocks.0.ln2.hook_normalized", 16, 8, _ => { }, dOut: 16);
        var r = DownstreamEvaluator.Evaluate(model, [new DownstreamTarget(tc, OutputHook: "blocks.0.hook_mlp_out")], windows)[0];
        Assert.Equal("blocks.0.hook_mlp_out", r.OutputHookName);
        Assert.Equal(r.CeLossWithAblation, r.CeLossWithSae, 10);
        var tokens = Tokens([.. windows]);
        var zeroed = model.RunWithHooks(tokens, ("blocks.0.hook_mlp_out", x => zeros_like(x)));
        Assert.Equal(HandCe(zeroed, windows, null), r.CeLossWithSae, 5);
    }

    /// <summary>A SAELens skip transcoder read at TransformerLens 3's <c>mlp.hook_in</c> with its <c>hook_name_out</c> in
    /// the metadata (as the mwhanna releases are): the spliced run replaces hook_mlp_out by f·W_dec + b_dec + x·W_skipᵀ of
    /// the MLP's input x (ln2.hook_normalized).</summary>
    [Fact]
    public void Skip_transcoder_at_mlp_hook_in_replaces_hook_mlp_out_with_its_output_skip_term_included()
    {
        using var model = Gpt2();
        var windows = ModelActivationSourceTests.Windows(3, 8);
        var cfg = new SaeConfig { Architecture = SaeArchitectures.SkipTranscoder, DIn = 16, DSae = 24, DOut = 16, ApplyBDecToInput = false };
        cfg.Metadata.HookName = "blocks.0.mlp.hook_in";
        cfg.Metadata.Extra = new() { ["hook_name_out"] = System.Text.Json.JsonSerializer.SerializeToElement("blocks.0.hook_mlp_out") };
        using var tc = (SkipTranscoderSae)SaeFactory.Create(cfg);
        using (no_grad())
        {
            var g = new Generator(4);
            tc.WEnc.copy_(randn(16, 24, generator: g) * 0.3);
            tc.WDec.copy_(randn(24, 16, generator: g) * 0.3);
            tc.BDec.copy_(randn(16, generator: g) * 0.1);
            tc.WSkip.copy_(randn(16, 16, generator: g) * 0.3);
        }
        var r = DownstreamEvaluator.Evaluate(model, [new DownstreamTarget(tc)], windows)[0];
        Assert.Equal("blocks.0.hook_mlp_out", r.OutputHookName);
        using var scope = NewDisposeScope();
        var tokens = Tokens([.. windows]);
        Tensor? mlpIn = null;
        var byHand = model.RunWithHooks(tokens,
            ("blocks.0.ln2.hook_normalized", x => { mlpIn = x.detach().clone(); return (Tensor?)null; }),
            ("blocks.0.hook_mlp_out", _ => (Tensor?)(matmul(nn.functional.relu(matmul(mlpIn!, tc.WEnc) + tc.BEnc), tc.WDec) + tc.BDec + matmul(mlpIn!, tc.WSkip.t()))));
        Assert.Equal(HandCe(byHand, windows, null), r.CeLossWithSae, 5);
        Assert.NotEqual(r.CeLossWithoutSae, r.CeLossWithSae, 3);
    }

    [Fact]
    public void An_sae_without_a_hook_name_is_named_in_the_error_without_a_stray_space()
    {
        var windows = ModelActivationSourceTests.Windows(2, 8);
        using var model = NeoX(parallel: true);
        using var sae = SaeFactory.Create(new SaeConfig { DIn = 16, DSae = 8 });
        Assert.StartsWith("the SAE's cfg.json has no metadata.hook_name (",
            Assert.Throws<SaeSharpException>(() => DownstreamEvaluator.Evaluate(model, [new DownstreamTarget(sae)], windows)).Message);
        Assert.StartsWith("SAE mine: the SAE's cfg.json has no metadata.hook_name (",
            Assert.Throws<SaeSharpException>(() => DownstreamEvaluator.Evaluate(model, [new DownstreamTarget(sae, Name: "mine")], windows)).Message);
    }
    /// <summary>The evaluator splices a transcoder as every model run attached through HookedSaeTransformer does (one
    /// implementation, SaeSplice), and refuses one whose output hook fires before its input hook, naming both.</summary>
    [Fact]
    public void A_transcoder_is_spliced_as_model_runs_splice_it_and_a_backwards_one_is_refused()
    {
        using var model = Gpt2();
        var windows = ModelActivationSourceTests.Windows(3, 8);
        using var tc = SaeSharp.Tests.Hooks.TranscoderSpliceTests.RandomTranscoder("blocks.0.ln2.hook_normalized", "blocks.0.hook_mlp_out", 16, 16, 24, 3,
            dtype: ScalarType.Float32);
        var r = DownstreamEvaluator.Evaluate(model, [new DownstreamTarget(tc)], windows)[0];
        var hooked = new SaeSharp.Interventions.HookedSaeTransformer(model);
        hooked.AddSae(tc);
        var tokens = Tokens([.. windows]);
        Assert.Equal(HandCe(hooked.RunWithHooks(tokens), windows, null), r.CeLossWithSae, 5);
        Assert.NotEqual(r.CeLossWithoutSae, r.CeLossWithSae, 3);
        Assert.Equal(r.CeLossWithoutSae, r.CeLossWithErrorTerm, 5);

        using var backwards = SaeSharp.Tests.Hooks.TranscoderSpliceTests.RandomTranscoder("blocks.0.hook_mlp_out", "blocks.0.ln2.hook_normalized", 16, 16, 8, 4,
            dtype: ScalarType.Float32);
        var ex = Assert.Throws<SaeSharpException>(() => DownstreamEvaluator.Evaluate(model, [new DownstreamTarget(backwards)], windows));
        Assert.Contains("blocks.0.hook_mlp_out", ex.Message);
        Assert.Contains("blocks.0.ln2.hook_normalized", ex.Message);
    }
}
