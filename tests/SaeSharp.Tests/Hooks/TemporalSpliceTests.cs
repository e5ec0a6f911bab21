using SaeSharp.Analysis;
using SaeSharp.Evaluation;
using SaeSharp.Hooks;
using SaeSharp.Interop;
using SaeSharp.Interventions;
using SaeSharp.Models;
using SaeSharp.Saes;
using SaeSharp.Tests.Models;
using SaeSharp.Tests.Saes;
using TorchSharp;
using static TorchSharp.torch;

namespace SaeSharp.Tests.Hooks;

/// <summary>
/// A temporal SAE (SAELens's TemporalSAE from tests/data/temporal_sae) spliced into a tiny GPT-2 (d_model 8) at
/// blocks.0.hook_resid_post: it sees each run's activation as the sequences [batch, pos, d] they are, with padding kept
/// out of the real tokens' context, and its reconstruction adds the predicted codes back.
/// </summary>
public sealed class TemporalSpliceTests : ModelTestBase
{
    private const string Hook = "blocks.0.hook_resid_post";
    private static readonly long[] Ids = [5, 11, 23, 42, 7, 19, 3, 30, 8, 2, 44, 17];

    private HookedTransformer Model() => ModelLoader.FromPretrained(TinyModels.WriteGpt2(Sub($"g-{Guid.NewGuid():N}"), 4, 2, 8, 2, 50, 32));

    private static TemporalSae Sae(string variant = "untied_relu") => (TemporalSae)SaeLensFormat.Load(TemporalSaeTests.Fixture(variant, "saelens"));

    private static string H(AttachedSae a, string point) => a.HookName(point);

    [Theory]
    [MemberData(nameof(TemporalSaeTests.Variants), MemberType = typeof(TemporalSaeTests))]
    public void Spliced_it_encodes_the_runs_sequences_and_the_error_term_restores_the_logits(string variant)
    {
        using var model = Model();
        using var sae = Sae(variant);
        using var scope = NewDisposeScope();
        var tokens = tensor(Ids).view(2, 6);
        var clean = model.Forward(tokens);
        var hooked = new HookedSaeTransformer(model);
        var a = hooked.AddSae(sae, Hook);
        var (logits, cache) = hooked.RunWithCache(tokens, [Hook, H(a, SaeHookPoints.ActsPost), H(a, SaeHookPoints.Output)]);
        using (cache)
        {
            var x = cache[Hook];                                             // [2, 6, 8], before the splice
            var (novel, pred) = sae.EncodeWithPredictions(x);
            SaeTestUtil.AssertClose(novel, cache[H(a, SaeHookPoints.ActsPost)], rtol: 1e-5, atol: 1e-6, what: "hook_sae_acts_post");
            SaeTestUtil.AssertClose(sae.forward(x), cache[H(a, SaeHookPoints.Output)], rtol: 1e-5, atol: 1e-5, what: "hook_sae_output");
            Assert.False(logits!.allclose(clean, 1e-3, 1e-3), "without the error term the SAE's reconstruction changes the logits");
        }
        hooked.ResetSaes();
        hooked.AddSae(sae, Hook, useErrorTerm: true);
        var withError = hooked.Run(tokens).Logits!;
        SaeTestUtil.AssertClose(clean, withError, rtol: 1e-4, atol: 1e-4, what: "logits with the error term");
    }

    [Fact]
    public void Spliced_it_stays_causal_and_a_row_is_its_own_context()
    {
        using var model = Model();
        using var sae = Sae();
        using var scope = NewDisposeScope();
        var hooked = new HookedSaeTransformer(model);
        hooked.AddSae(sae, Hook);
        var tokens = tensor(Ids).view(2, 6);
        var logits = hooked.Run(tokens).Logits!;
        var changed = tokens.clone();
        changed[0, 4] = tensor(1L);
        var logits2 = hooked.Run(changed).Logits!;
        Assert.True(logits.narrow(1, 0, 4).eq(logits2.narrow(1, 0, 4)).all().item<bool>());
        Assert.False(logits.narrow(1, 4, 2).eq(logits2.narrow(1, 4, 2)).all().item<bool>());
        // Row 1 alone gives what it gave in the batch.
        SaeTestUtil.AssertClose(logits.narrow(0, 1, 1), hooked.Run(tokens.narrow(0, 1, 1)).Logits!, rtol: 1e-5, atol: 1e-5, what: "row 1 alone");
    }

    [Fact]
    public void Left_padding_does_not_reach_the_real_tokens()
    {
        using var model = Model();
        using var sae = Sae();
        using var scope = NewDisposeScope();
        var hooked = new HookedSaeTransformer(model);
        var a = hooked.AddSae(sae, Hook);
        var row = tensor(Ids.Take(6).ToArray()).view(1, 6);
        var padded = tensor(new long[] { 0, 0, 0 }.Concat(Ids.Take(6)).ToArray()).view(1, 9);
        var mask = tensor(new long[] { 0, 0, 0, 1, 1, 1, 1, 1, 1 }).view(1, 9);
        var post = H(a, SaeHookPoints.ActsPost);
        var (alone, c1) = hooked.RunWithCache(row, [post]);
        var (withPads, c2) = hooked.RunWithCache(padded, [post], attentionMask: mask);
        using (c1)
        using (c2)
            SaeTestUtil.AssertClose(c1[post], c2[post].narrow(1, 3, 6), rtol: 1e-4, atol: 1e-5, what: "z_novel of the real tokens");
        SaeTestUtil.AssertClose(alone!, withPads!.narrow(1, 3, 6), rtol: 1e-4, atol: 1e-4, what: "logits of the real tokens");
    }

    [Fact]
    public void Clamping_a_feature_reconstructs_with_the_predicted_codes()
    {
        using var model = Model();
        using var sae = Sae();
        using var scope = NewDisposeScope();
        var hooked = new HookedSaeTransformer(model);
        var a = hooked.AddSae(sae, Hook);
        var tokens = tensor(Ids).view(2, 6);
        var (_, cache) = hooked.RunWithCache(tokens, [Hook, H(a, SaeHookPoints.Recons)], [new Clamp(sae, feature: 3, value: 2.5, hook: Hook)]);
        using (cache)
        {
            var x = cache[Hook];
            var (novel, pred) = sae.EncodeWithPredictions(x);
            novel[TensorIndex.Ellipsis, 3] = tensor(2.5f);
            SaeTestUtil.AssertClose(sae.ReconstructWithPredictions(novel, pred), cache[H(a, SaeHookPoints.Recons)], rtol: 1e-5, atol: 1e-5, what: "hook_sae_recons after the clamp");
        }
    }

    [Fact]
    public void Generation_with_a_temporal_SAE_runs_without_the_KV_cache()
    {
        using var model = Model();
        using var sae = Sae();
        using var scope = NewDisposeScope();
        var hooked = new HookedSaeTransformer(model);
        hooked.AddSae(sae, Hook);
        var prompt = tensor(Ids.Take(4).ToArray()).view(1, 4);
        using var cached = hooked.Generate(prompt, 5, new GenerationOptions { ReturnLogits = true });
        using var full = hooked.Generate(prompt, 5, new GenerationOptions { ReturnLogits = true, UseKvCache = false });
        Assert.True(cached.Tokens.eq(full.Tokens).all().item<bool>());
        SaeTestUtil.AssertClose(full.Logits!, cached.Logits!, rtol: 1e-5, atol: 1e-5, what: "step logits");
        // Each step's logits are those of a plain run over the whole sequence so far.
        var seq = full.Tokens.narrow(1, 0, 8);
        SaeTestUtil.AssertClose(hooked.Run(seq).Logits!.select(1, -1), full.Logits!.select(1, 4), rtol: 1e-5, atol: 1e-5, what: "last step");
    }

    [Fact]
    public void Downstream_evaluation_splices_it_by_sequence()
    {
        using var model = Model();
        using var sae = Sae();
        var windows = Enumerable.Range(0, 4).Select(i => Ids.Skip(i).Take(8).ToArray()).ToList();
        var m = DownstreamEvaluator.Evaluate(model, [new DownstreamTarget(sae, Hook)], windows, new DownstreamEvalOptions { BatchSizePrompts = 2 })[0];
        Assert.True(double.IsFinite(m.CeLossWithSae));
        Assert.Equal(m.CeLossWithoutSae, m.CeLossWithErrorTerm, 4);
        Assert.NotEqual(m.CeLossWithoutSae, m.CeLossWithSae, 4);
        Assert.Equal(32, m.Tokens);
    }

    [Fact]
    public void Feature_statistics_over_model_runs_encode_whole_windows()
    {
        using var model = Model();
        using var sae = Sae();
        using var scope = NewDisposeScope();
        var windows = Enumerable.Range(0, 3).Select(i => Ids.Skip(i).Take(8).ToArray()).ToList();
        var report = FeatureAnalysis.Run(model, sae, windows, new FeatureAnalysisOptions { Hook = Hook, Features = [0, 1, 2, 3, 4, 5] });
        // The maxima are those of z_novel over each window encoded as a sequence.
        var hooked = new HookedSaeTransformer(model);
        var (_, cache) = hooked.RunWithCache(tensor(windows.SelectMany(w => w).ToArray()).view(3, 8), [Hook]);
        using (cache)
        {
            var max = sae.Encode(cache[Hook]).amax([0, 1]);
            foreach (var f in report.Features)
                Assert.Equal(max[f.Feature].item<float>(), f.MaxActivation, 4);
        }
    }

    [Fact]
    public void Attribution_to_z_novel_matches_finite_differences()
    {
        using var model = ModelLoader.FromPretrained(TinyModels.WriteGpt2(Sub($"g-{Guid.NewGuid():N}"), 4, 2, 8, 2, 50, 32), TorchSharp.torch.ScalarType.Float64);
        using var sae = Sae();
        sae.to(TorchSharp.torch.ScalarType.Float64);
        using var scope = NewDisposeScope();
        var hooked = new HookedSaeTransformer(model);
        var a = hooked.AddSae(sae, Hook, useErrorTerm: true);
        var tokens = tensor(Ids).view(2, 6);
        var metric = AttributionMetric.LogitDiff(3, 7);
        using var r = hooked.Attribute(tokens, metric);
        Assert.Equal(metric.Evaluate(model.Forward(tokens), tokens).item<double>(), r.Metric, 9);
        string post = a.HookName(SaeHookPoints.ActsPost);
        const double h = 1e-5;
        var entries = r.Top(8).ToList();
        Assert.NotEmpty(entries);
        foreach (var e in entries)
        {
            long[] idx = [e.Batch, e.Position, e.Feature];
            double fd = (Interventions.AttributionTests.MetricWithScaledEntry(hooked, metric, tokens, post, idx, h)
                - Interventions.AttributionTests.MetricWithScaledEntry(hooked, metric, tokens, post, idx, -h)) / (2 * h);
            Assert.True(Math.Abs(fd - e.Attribution) < 1e-6 * Math.Max(1, Math.Abs(fd)), $"{e}: finite difference {fd}");
        }
    }

    [Fact]
    public void Training_a_temporal_SAE_is_refused()
    {
        var e = Assert.Throws<SaeSharpException>(() => SaeSharp.Training.SaeRecipes.Get("temporal"));
        Assert.Contains("architecture 'temporal' is inference only", e.Message);
    }

    [Fact]
    public void Row_evaluation_is_refused_naming_the_problem()
    {
        using var sae = Sae();
        using var scope = NewDisposeScope();
        var rows = new[] { new SaeSharp.Activations.ActivationBatch(randn(16, 8)) };
        var e = Assert.Throws<SaeSharpException>(() => SaeEvaluator.Evaluate(sae, rows));
        Assert.Contains("temporal SAEs encode a token from the earlier tokens of its context", e.Message);
        Assert.Contains("--model", e.Message);
    }
}
