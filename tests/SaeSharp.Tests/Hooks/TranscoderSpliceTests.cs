using TorchSharp;
using SaeSharp.Hooks;
using SaeSharp.Interventions;
using SaeSharp.Models;
using SaeSharp.Saes;
using SaeSharp.Tests.Models;
using static TorchSharp.torch;

namespace SaeSharp.Tests.Hooks;

/// <summary>
/// A transcoder attached to a model run (AttachedSae / HookedSaeTransformer) reads its input hook and replaces its
/// output hook (hook_name_out), checked against hand-written TransformerLens-style hook pairs: one hook keeps x_in, the
/// other replaces x_out by the transcoder written out here in float64.
/// </summary>
public class TranscoderSpliceTests : ModelTestBase
{
    private static readonly Tensor Toks = tensor(new long[] { 5, 11, 23, 42, 7, 19, 3, 30, 8, 2, 44, 17 }, 2, 6);
    private const string Ln2 = "blocks.0.ln2.hook_normalized";
    private const string MlpOut = "blocks.0.hook_mlp_out";

    private HookedTransformer Model64(int seed = 3) =>
        ModelLoader.FromPretrained(TinyModels.WriteGpt2(Sub($"g{seed}-{Guid.NewGuid():N}"), seed, 2, 16, 4, 50, 32), ScalarType.Float64);

    /// <summary>A float64 transcoder with random weights (SAELens's: no b_dec subtracted from the input).</summary>
    internal static Sae RandomTranscoder(string hookIn, string hookOut, int dIn, int dOut, int dSae, int seed,
        string arch = SaeArchitectures.Standard, ScalarType dtype = ScalarType.Float64)
    {
        var cfg = new SaeConfig { Architecture = arch, DIn = dIn, DOut = dOut, DSae = dSae, ApplyBDecToInput = false };
        cfg.Metadata.HookName = hookIn;
        cfg.Metadata.HookNameOut = hookOut;
        var sae = SaeFactory.Create(cfg);
        using (no_grad())
        {
            var g = new Generator((ulong)seed);
            sae.WEnc.copy_(randn(dIn, dSae, generator: g) * 0.4);
            sae.BEnc.copy_(randn(dSae, generator: g) * 0.1 + 0.1);
            sae.WDec.copy_(randn(dSae, dOut, generator: g) * 0.3);
            sae.BDec.copy_(randn(dOut, generator: g) * 0.1);
            if (sae.HasSkip) sae.WSkip.copy_(randn(dOut, dIn, generator: g) * 0.2);
            if (sae is JumpReluSae j) j.Threshold.copy_(rand(dSae, generator: g) * 0.3 + 0.05);
        }
        sae.to(dtype);
        return sae;
    }

    private static Tensor W(Tensor p) => p.detach().to(ScalarType.Float64);

    /// <summary>f = ReLU(pre), pre = x·W_enc + b_enc, times [pre &gt; threshold] for a JumpReLU one, in float64.</summary>
    internal static Tensor HandFeatures(Sae sae, Tensor x)
    {
        var pre = matmul(x.to(ScalarType.Float64), W(sae.WEnc)) + W(sae.BEnc);
        return sae is JumpReluSae j ? pre.clamp_min(0) * pre.gt(W(j.Threshold)) : pre.clamp_min(0);
    }

    /// <summary>f·W_dec + b_dec (+ x·W_skipᵀ for a skip transcoder, SAELens's SkipTranscoder.forward), in float64.</summary>
    internal static Tensor HandDecode(Sae sae, Tensor f, Tensor x)
    {
        var y = matmul(f, W(sae.WDec)) + W(sae.BDec);
        return sae.HasSkip ? y + matmul(x.to(ScalarType.Float64), W(sae.WSkip).t()) : y;
    }

    /// <summary>Logits of the TransformerLens-style hook pair: x_in kept at <paramref name="hookIn"/>, x_out replaced by
    /// <paramref name="replace"/>(x_in, x_out) at <paramref name="hookOut"/>.</summary>
    internal static Tensor HookPair(HookedTransformer model, Tensor tokens, string hookIn, string hookOut, Func<Tensor, Tensor, Tensor> replace)
    {
        Tensor? xin = null;
        try
        {
            return model.RunWithHooks(tokens,
                (hookIn, x => { xin?.Dispose(); xin = x.detach().clone().DetachFromDisposeScope(); return null; }),
                (hookOut, x => replace(xin!, x).to(x.dtype)));
        }
        finally { xin?.Dispose(); }
    }

    [Fact]
    public void A_transcoder_without_the_error_term_replaces_its_output_hook_and_leaves_its_input_hook_alone()
    {
        using var model = Model64();
        using var tc = RandomTranscoder(Ln2, MlpOut, 16, 16, 24, 1);
        var expected = HookPair(model, Toks, Ln2, MlpOut, (xin, _) => HandDecode(tc, HandFeatures(tc, xin), xin));
        var hooked = new HookedSaeTransformer(model);
        var a = hooked.AddSae(tc);
        Assert.True(a.IsTranscoder);
        Assert.Equal(MlpOut, a.OutputHook);
        var (clean, cleanCache) = model.RunWithCache(Toks, [Ln2]);
        var (logits, cache) = hooked.RunWithCache(Toks, [Ln2, a.HookName(SaeHookPoints.ActsPost), a.HookName(SaeHookPoints.Output)]);
        using (cleanCache)
        using (cache)
        {
            AssertAllClose(expected, logits!, 1e-9, "logits vs the hook pair");
            Assert.True((logits! - clean!).abs().max().item<double>() > 1e-3, "splicing a random transcoder changed nothing");
            // The input hook continues unchanged (the old one-hook splice replaced it by the MLP-output reconstruction).
            AssertAllClose(cleanCache[Ln2], cache[Ln2], 0, "input hook");
            var f = HandFeatures(tc, cleanCache[Ln2]);
            AssertAllClose(f, cache[a.HookName(SaeHookPoints.ActsPost)], 1e-12, "hook_sae_acts_post");
            AssertAllClose(HandDecode(tc, f, cleanCache[Ln2]), cache[a.HookName(SaeHookPoints.Output)], 1e-12, "hook_sae_output");
        }
    }

    [Fact]
    public void With_the_error_term_the_run_is_the_clean_run_and_the_error_is_x_out_minus_the_reconstruction()
    {
        using var model = Model64();
        using var tc = RandomTranscoder(Ln2, MlpOut, 16, 16, 24, 2);
        var hooked = new HookedSaeTransformer(model);
        var a = hooked.AddSae(tc, useErrorTerm: true);
        var (clean, cleanCache) = model.RunWithCache(Toks, [Ln2, MlpOut]);
        var (logits, cache) = hooked.RunWithCache(Toks, [a.HookName(SaeHookPoints.Error), a.HookName(SaeHookPoints.Recons), a.HookName(SaeHookPoints.Output)]);
        using (cleanCache)
        using (cache)
        {
            AssertAllClose(clean!, logits!, 1e-10, "logits");
            var xin = cleanCache[Ln2];
            var recon = HandDecode(tc, HandFeatures(tc, xin), xin);
            AssertAllClose(recon, cache[a.HookName(SaeHookPoints.Recons)], 1e-12, "hook_sae_recons");
            AssertAllClose(cleanCache[MlpOut].to(ScalarType.Float64) - recon, cache[a.HookName(SaeHookPoints.Error)], 1e-12, "hook_sae_error");
            AssertAllClose(cleanCache[MlpOut], cache[a.HookName(SaeHookPoints.Output)], 1e-12, "hook_sae_output = x_out");
        }
    }

    [Fact]
    public void A_transcoder_from_mlp_post_to_mlp_out_with_d_in_not_d_out_splices()
    {
        using var model = Model64();
        int dMlp = model.Config.DMlp;
        Assert.NotEqual(16, dMlp);
        const string post = "blocks.1.mlp.hook_post", output = "blocks.1.hook_mlp_out";
        using var tc = RandomTranscoder(post, output, dMlp, 16, 20, 4);
        var expected = HookPair(model, Toks, post, output, (xin, _) => HandDecode(tc, HandFeatures(tc, xin), xin));
        var hooked = new HookedSaeTransformer(model);
        hooked.AddSae(tc);
        AssertAllClose(expected, hooked.RunWithHooks(Toks), 1e-9, "logits vs the hook pair");
        // The same through RunOptions.Saes, with the output hook given as an alias.
        var viaOptions = model.Run(Toks, new RunOptions { Saes = [new AttachedSae(tc, outputHook: "blocks.1.mlp")] }).Logits!;
        AssertAllClose(expected, viaOptions, 1e-9, "RunOptions.Saes");
    }

    /// <summary>The logits of <paramref name="model"/> with <paramref name="tc"/> spliced in (ln2 → MLP out) are the plain hook
    /// pair's with the hand decode and its skip term, and differ from the same without the skip term.</summary>
    private static void AssertSplicedWithSkipTerm(HookedTransformer model, Sae tc)
    {
        var expected = HookPair(model, Toks, Ln2, MlpOut, (xin, _) => HandDecode(tc, HandFeatures(tc, xin), xin));
        var withoutSkip = HookPair(model, Toks, Ln2, MlpOut,
            (xin, _) => matmul(HandFeatures(tc, xin), W(tc.WDec)) + W(tc.BDec));
        var hooked = new HookedSaeTransformer(model);
        hooked.AddSae(tc);
        var logits = hooked.RunWithHooks(Toks);
        AssertAllClose(expected, logits, 1e-9, "logits vs the hook pair with the skip term");
        Assert.True((logits - withoutSkip).abs().max().item<double>() > 1e-3, "the skip term made no difference");
    }

    /// <summary>SAELens 6.37's jumprelu_skip_transcoder (Gemma Scope 2's affine transcoders): the JumpReLU encoder and the
    /// skip term of the raw x_in.</summary>
    [Fact]
    public void A_jumprelu_skip_transcoder_adds_x_in_times_W_skip_transposed_to_its_JumpReLU_reconstruction()
    {
        using var model = Model64();
        using var tc = RandomTranscoder(Ln2, MlpOut, 16, 16, 24, 16, SaeArchitectures.JumpReluSkipTranscoder);
        AssertSplicedWithSkipTerm(model, tc);
        // The threshold matters: some latents with a positive pre-activation stay off.
        Tensor? xin = null;
        model.RunWithHooks(Toks, (Ln2, x => { xin?.Dispose(); xin = x.detach().clone().DetachFromDisposeScope(); return null; }));
        using var captured = xin!;
        using var scope = NewDisposeScope();
        var pre = matmul(captured.to(ScalarType.Float64), W(tc.WEnc)) + W(tc.BEnc);
        Assert.True(pre.gt(0).logical_and(HandFeatures(tc, captured).eq(0)).any().item<bool>(), "no latent was cut by the threshold");
    }

    [Fact]
    public void A_skip_transcoder_adds_x_in_times_W_skip_transposed()
    {
        using var model = Model64();
        using var tc = RandomTranscoder(Ln2, MlpOut, 16, 16, 24, 5, SaeArchitectures.SkipTranscoder);
        Assert.True(W(((SkipTranscoderSae)tc).WSkip).abs().max().item<double>() > 0.05);
        AssertSplicedWithSkipTerm(model, tc);
    }

    [Fact]
    public void Steering_a_transcoder_adds_the_decoder_row_at_its_output_hook()
    {
        using var model = Model64();
        using var tc = RandomTranscoder(Ln2, MlpOut, 16, 16, 24, 6);
        const int feature = 7;
        const double scale = 3.5;
        var v = W(tc.WDec)[feature] * scale;
        var mask = tensor(new double[] { 0, 1, 0, 1, 0, 0 }).view(1, 6, 1);
        var steering = new Steering(tc, feature, scale) { Positions = [1, 3] };

        // Spliced: x̂ + S·W_dec[F] at positions 1 and 3 replaces hook_mlp_out.
        var spliced = new HookedSaeTransformer(model);
        var a = spliced.AddSae(tc);
        var expected = HookPair(model, Toks, Ln2, MlpOut, (xin, _) => HandDecode(tc, HandFeatures(tc, xin), xin) + v * mask);
        string[] names = [Ln2, a.HookName(SaeHookPoints.Output)];
        var (plain, plainCache) = spliced.RunWithCache(Toks, names);
        var (steered, cache) = spliced.RunWithCache(Toks, names, [steering]);
        using (plainCache)
        using (cache)
        {
            AssertAllClose(expected, steered!, 1e-9, "steered logits vs the hook pair");
            AssertAllClose(plainCache[Ln2], cache[Ln2], 0, "the input hook is not steered");
            AssertAllClose((v * mask).expand(2, 6, 16), cache[a.HookName(SaeHookPoints.Output)] - plainCache[a.HookName(SaeHookPoints.Output)], 1e-12,
                "steered − unsteered output");
        }

        // Not spliced: the vector is added to the raw hook_mlp_out (a direction of x_out, not of the input hook).
        var raw = new HookedSaeTransformer(model).RunWithHooks(Toks, [new Steering(tc, feature, scale)]);
        AssertAllClose(model.RunWithHooks(Toks, (MlpOut, x => x + v)), raw, 1e-10, "unspliced steering");
    }

    [Fact]
    public void Clamping_and_ablating_a_transcoder_edit_f_read_at_the_input_and_change_the_output_hook()
    {
        using var model = Model64();
        using var tc = RandomTranscoder(Ln2, MlpOut, 16, 16, 24, 7);
        const int cf = 5;
        const double value = 2.0;
        var (_, cleanCache) = model.RunWithCache(Toks, [Ln2]);
        Tensor f;
        using (cleanCache) f = HandFeatures(tc, cleanCache[Ln2]);

        // Clamp with the error term: x_out + (V − f_F)·W_dec[F].
        var withError = new HookedSaeTransformer(model);
        withError.AddSae(tc, useErrorTerm: true);
        var delta = (value - f[.., .., cf]).unsqueeze(-1) * W(tc.WDec)[cf];
        Assert.True(delta.abs().max().item<double>() > 1e-2, "the clamp changes nothing");
        AssertAllClose(model.RunWithHooks(Toks, (MlpOut, x => x + delta)), withError.RunWithHooks(Toks, [new Clamp(tc, cf, value)]), 1e-9, "clamp, error term");

        // Zero-ablate features 2 and 9 without the error term: x̂ decoded from f with those zeroed.
        var noError = new HookedSaeTransformer(model);
        noError.AddSae(tc);
        var expected = HookPair(model, Toks, Ln2, MlpOut, (xin, _) =>
        {
            var fe = HandFeatures(tc, xin);
            fe[.., .., 2] = 0.0;
            fe[.., .., 9] = 0.0;
            return HandDecode(tc, fe, xin);
        });
        AssertAllClose(expected, noError.RunWithHooks(Toks, [new Ablation(tc, [2, 9])]), 1e-9, "ablation, no error term");
    }

    private static double MetricWithScaledEntry(HookedSaeTransformer hooked, AttributionMetric metric, string hookName, long[] index, double t) =>
        Interventions.AttributionTests.MetricWithScaledEntry(hooked, metric, Toks, hookName, index, t);

    [Fact]
    public void Attribution_to_a_transcoder_matches_finite_differences_of_its_features_and_output_error()
    {
        using var model = Model64();
        using var tc = RandomTranscoder(Ln2, MlpOut, 16, 16, 24, 8);
        var hooked = new HookedSaeTransformer(model);
        var a = hooked.AddSae(tc, useErrorTerm: true);
        var metric = AttributionMetric.LogitDiff(3, 7);
        using var r = hooked.Attribute(Toks, metric);
        Assert.Equal(metric.Evaluate(model.Forward(Toks), Toks).item<double>(), r.Metric, 9);
        const double h = 1e-5;
        var top = r.Top(6);
        Assert.True(Math.Abs(top[0].Attribution) > 1e-4, $"largest attribution {top[0].Attribution}");
        foreach (var e in top)
        {
            double fd = (MetricWithScaledEntry(hooked, metric, a.HookName(SaeHookPoints.ActsPost), [e.Batch, e.Position, e.Feature], h)
                - MetricWithScaledEntry(hooked, metric, a.HookName(SaeHookPoints.ActsPost), [e.Batch, e.Position, e.Feature], -h)) / (2 * h);
            Assert.True(Math.Abs(fd - e.Attribution) < 1e-6 * Math.Max(1, Math.Abs(fd)), $"{e}: finite difference {fd}");
        }
        // The error node is the output hook's: d/dt m(ε_(b,p)·(1 + t)) = Σ_d ε_d·∂m/∂ε_d, ε = x_out − x̂.
        foreach (var (b, p) in new[] { (0, 5), (1, 2), (1, 5) })
        {
            double fd = (MetricWithScaledEntry(hooked, metric, a.HookName(SaeHookPoints.Error), [b, p], h)
                - MetricWithScaledEntry(hooked, metric, a.HookName(SaeHookPoints.Error), [b, p], -h)) / (2 * h);
            double attr = r.ErrorAttribution[0][b, p].item<double>();
            Assert.True(Math.Abs(fd - attr) < 1e-6 * Math.Max(1, Math.Abs(fd)), $"error node ({b}, {p}): {attr} vs finite difference {fd}");
        }
    }

    [Fact]
    public void A_cross_layer_transcoder_holds_its_encoding_across_blocks_and_a_run_stopping_before_its_output_frees_it()
    {
        using var model = Model64();
        const string input = "blocks.0.hook_resid_mid", output = "blocks.1.hook_resid_post";
        using var tc = RandomTranscoder(input, output, 16, 16, 24, 9);
        var expected = HookPair(model, Toks, input, output, (xin, _) => HandDecode(tc, HandFeatures(tc, xin), xin));
        var a = model.Attach(tc);
        AssertAllClose(expected, model.Run(Toks, new RunOptions { Saes = [a] }).Logits!, 1e-9, "logits vs the hook pair");
        // Stopping at block 1 (as Ablation.FeatureMeans does): the features are read, the output hook never fires.
        var (_, cache) = model.Run(Toks, new RunOptions { Saes = [a], StopAtLayer = 1, CacheNames = [a.HookName(SaeHookPoints.ActsPost), input] });
        using (cache)
            AssertAllClose(HandFeatures(tc, cache![input]), cache[a.HookName(SaeHookPoints.ActsPost)], 1e-12, "acts_post");
        // Its output-side hook points cannot be asked for there.
        var ex = Assert.Throws<SaeSharpException>(() =>
            model.Run(Toks, new RunOptions { Saes = [a], StopAtLayer = 1, CacheNames = [a.HookName(SaeHookPoints.Output)] }));
        Assert.Contains(output, ex.Message);
    }

    /// <summary>SAELens's hook_head_index means the SAE's input is that head's slice of hook_name; a transcoder with one
    /// reads head h of its input hook and replaces its whole output hook. SAELens's hook_head_index_out (one head of the
    /// output hook) is refused, as is a head index on a hook without heads.</summary>
    [Fact]
    public void A_transcoder_with_hook_head_index_reads_that_head_and_replaces_its_whole_output_hook()
    {
        using var model = Model64();
        const string z = "blocks.0.attn.hook_z", attnOut = "blocks.0.hook_attn_out";
        const int head = 2;
        int dHead = model.Config.DHead;
        Assert.Equal(4, dHead);
        using var tc = RandomTranscoder(z, attnOut, dHead, 16, 12, 14);
        tc.Cfg.Metadata.HookHeadIndex = head;
        // z is [batch, pos, head, d_head]: the transcoder sees z[:, :, 2] only, and its output is all of hook_attn_out.
        var expected = HookPair(model, Toks, z, attnOut, (xin, _) => HandDecode(tc, HandFeatures(tc, xin.select(2, head)), xin));
        var hooked = new HookedSaeTransformer(model);
        var a = hooked.AddSae(tc);
        Assert.Equal((z, attnOut, true), (a.Hook, a.OutputHook, a.IsTranscoder));
        var (clean, cleanCache) = model.RunWithCache(Toks, [z]);
        var (logits, cache) = hooked.RunWithCache(Toks, [z, a.HookName(SaeHookPoints.ActsPost)]);
        using (cleanCache)
        using (cache)
        {
            AssertAllClose(expected, logits!, 1e-9, "logits vs the hook pair");
            Assert.True((logits! - clean!).abs().max().item<double>() > 1e-3, "splicing a random transcoder changed nothing");
            AssertAllClose(cleanCache[z], cache[z], 0, "input hook (every head) unchanged");
            AssertAllClose(HandFeatures(tc, cleanCache[z].select(2, head)), cache[a.HookName(SaeHookPoints.ActsPost)], 1e-12, "acts_post of head 2");
        }
        var withError = new HookedSaeTransformer(model);
        withError.AddSae(tc, useErrorTerm: true);
        AssertAllClose(clean!, withError.RunWithHooks(Toks), 1e-10, "with the error term, the clean run");

        tc.Cfg.Metadata.Extra!["hook_head_index_out"] = System.Text.Json.JsonSerializer.SerializeToElement(1);
        var ex = Assert.Throws<SaeSharpException>(() => new HookedSaeTransformer(model).AddSae(tc));
        Assert.Equal($"transcoder reading '{z}' has hook_head_index_out 1: replacing one head of its output hook '{attnOut}' is not supported " +
                     "(SaeSharp replaces the whole output hook; hook_head_index picks the head a transcoder reads)", ex.Message);
        ex = Assert.Throws<SaeSharpException>(() => model.Run(Toks, new RunOptions { Saes = [new AttachedSae(tc)] }));
        Assert.Contains("hook_head_index_out 1", ex.Message);
        // SAELens writes hook_head_index_out: null (gemma_2_transcoder): no head, nothing refused.
        tc.Cfg.Metadata.Extra["hook_head_index_out"] = System.Text.Json.JsonSerializer.SerializeToElement<int?>(null);
        Assert.True(new HookedSaeTransformer(model).AddSae(tc).IsTranscoder);

        // A head index on an input hook without heads (ln2's [batch, pos, d_model]) is named before any run.
        using var onLn2 = RandomTranscoder(Ln2, MlpOut, 16, 16, 8, 15);
        onLn2.Cfg.Metadata.HookHeadIndex = 1;
        ex = Assert.Throws<SaeSharpException>(() => new HookedSaeTransformer(model).AddSae(onLn2));
        Assert.Equal($"SAE at '{Ln2}' reads head 1 (hook_head_index), but '{Ln2}' has no head dimension " +
                     "(hook_head_index picks a head of an attention hook such as attn.hook_z)", ex.Message);
    }

    [Fact]
    public void A_transcoder_whose_output_hook_fires_first_or_is_missing_is_an_error_naming_both_hooks()
    {
        using var model = Model64();
        using var backwards = RandomTranscoder(MlpOut, Ln2, 16, 16, 8, 10);
        var ex = Assert.Throws<SaeSharpException>(() => new HookedSaeTransformer(model).AddSae(backwards));
        Assert.Contains(MlpOut, ex.Message);
        Assert.Contains(Ln2, ex.Message);
        ex = Assert.Throws<SaeSharpException>(() => model.Run(Toks, new RunOptions { Saes = [new AttachedSae(backwards)] }));
        Assert.Contains("fires before", ex.Message);

        using var missing = RandomTranscoder(Ln2, "blocks.7.hook_mlp_out", 16, 16, 8, 11);
        ex = Assert.Throws<SaeSharpException>(() => new HookedSaeTransformer(model).AddSae(missing));
        Assert.Contains(Ln2, ex.Message);
        Assert.Contains("blocks.7.hook_mlp_out", ex.Message);

        // d_out that the output hook does not give.
        using var wide = RandomTranscoder(Ln2, "blocks.0.mlp.hook_post", 16, 16, 8, 12);
        ex = Assert.Throws<SaeSharpException>(() => new HookedSaeTransformer(model).AddSae(wide));
        Assert.Contains("d_out=16", ex.Message);
        Assert.Contains("blocks.0.mlp.hook_post", ex.Message);
    }
    [Fact]
    public void Generation_with_a_spliced_transcoder_matches_the_hook_pair_step_by_step()
    {
        using var model = Model64();
        using var tc = RandomTranscoder(Ln2, MlpOut, 16, 16, 24, 13);
        var hooked = new HookedSaeTransformer(model);
        hooked.AddSae(tc);
        using var prompt = tensor(new long[] { 5, 11, 23, 42 }, 1, 4);
        Tensor? xin = null;
        try
        {
            // With the KV cache each step fires both hooks on its new positions: the pair sees the same x_in.
            using var expected = model.Generate(prompt, 5, new GenerationOptions
            {
                Hooks =
                [
                    (Ln2, x => { xin?.Dispose(); xin = x.detach().clone().DetachFromDisposeScope(); return null; }),
                    (MlpOut, x => HandDecode(tc, HandFeatures(tc, xin!), xin!).to(x.dtype)),
                ],
            });
            using var actual = hooked.Generate(prompt, 5);
            using var plain = model.Generate(prompt, 5);
            Assert.Equal(expected.Tokens.data<long>().ToArray(), actual.Tokens.data<long>().ToArray());
            Assert.NotEqual(plain.Tokens.data<long>().ToArray(), actual.Tokens.data<long>().ToArray());
        }
        finally { xin?.Dispose(); }
    }

    [Fact]
    public void Two_saes_replacing_the_same_hook_are_refused()
    {
        using var model = Model64();
        using var tc = RandomTranscoder(Ln2, MlpOut, 16, 16, 8, 14);
        using var sae = RandomTranscoder(MlpOut, MlpOut, 16, 16, 8, 15);   // hook_name_out = hook_name: an SAE at hook_mlp_out
        Assert.False(model.Attach(sae).IsTranscoder);
        var hooked = new HookedSaeTransformer(model);
        hooked.AddSae(tc);
        var ex = Assert.Throws<SaeSharpException>(() => hooked.AddSae(sae));
        Assert.Contains(MlpOut, ex.Message);
        ex = Assert.Throws<SaeSharpException>(() => model.Run(Toks, new RunOptions { Saes = [new AttachedSae(tc), new AttachedSae(sae)] }));
        Assert.Contains("two SAEs replace", ex.Message);
    }
}
