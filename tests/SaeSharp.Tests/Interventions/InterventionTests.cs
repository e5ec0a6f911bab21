using SaeSharp.Hooks;
using SaeSharp.Interventions;
using SaeSharp.Models;
using SaeSharp.Saes;
using SaeSharp.Tests.Models;
using TorchSharp;
using static TorchSharp.torch;

namespace SaeSharp.Tests.Interventions;

/// <summary>SAEs spliced into models, their hook points, and steering / clamping / ablation against hand-written hooks.</summary>
public class InterventionTests : ModelTestBase
{
    internal static Sae RandomSae(string hook, int dIn, int dSae, int seed, ScalarType dtype = ScalarType.Float32, double encBias = -0.1)
    {
        var cfg = new SaeConfig { DIn = dIn, DSae = dSae, ApplyBDecToInput = true };
        cfg.Metadata.HookName = hook;
        var sae = SaeFactory.Create(cfg);
        using (no_grad())
        {
            var g = new Generator((ulong)seed);
            sae.WEnc.copy_(randn(dIn, dSae, generator: g) * 0.4);
            sae.BEnc.copy_(randn(dSae, generator: g) * 0.1 + encBias);
            sae.WDec.copy_(randn(dSae, dIn, generator: g) * 0.3);
            sae.BDec.copy_(randn(dIn, generator: g) * 0.1);
        }
        if (dtype != ScalarType.Float32) sae.to(dtype);
        return sae;
    }

    /// <summary>f = ReLU((x − b_dec)·W_enc + b_enc) in float64, written out here.</summary>
    internal static Tensor HandFeatures(Sae sae, Tensor x)
    {
        var x64 = x.to(ScalarType.Float64);
        var pre = matmul(x64 - sae.BDec.detach().to(ScalarType.Float64), sae.WEnc.detach().to(ScalarType.Float64)) + sae.BEnc.detach().to(ScalarType.Float64);
        return pre.clamp_min(0);
    }

    internal static Tensor DecoderRow(Sae sae, int f) => tensor(sae.WDec.detach()[f].to(ScalarType.Float64).data<double>().ToArray());

    private static readonly Tensor Toks = tensor(new long[] { 5, 11, 23, 42, 7, 19, 3, 30, 8, 2, 44, 17 }, 2, 6);

    [Fact]
    public void SpliceWithErrorTermEqualsTheCleanRunAtLogitsAndEveryDownstreamHook()
    {
        foreach (var model in AllKinds())
        {
            using (model)
            {
                using var sae0 = RandomSae("blocks.0.hook_resid_post", 16, 32, 1);
                using var sae1 = RandomSae("blocks.1.hook_mlp_out", 16, 24, 2);
                var (clean, cleanCache) = model.RunWithCache(Toks, _ => true); // every hook, the opt-in ones too
                var hooked = new HookedSaeTransformer(model);
                hooked.AddSae(sae0, useErrorTerm: true);
                hooked.AddSae(sae1, useErrorTerm: true);
                var (spliced, cache) = hooked.RunWithCache(Toks, namesFilter: _ => true);
                using (cleanCache)
                using (cache)
                {
                    AssertAllClose(clean!, spliced!, 1e-4, "logits");
                    foreach (var name in model.HookNames)
                        AssertAllClose(cleanCache[name], cache[name], 1e-4, name);
                    // The SAE hook points are in the cache too, and the output equals the input.
                    foreach (var a in hooked.Saes)
                    {
                        foreach (var s in SaeHookPoints.Suffixes) Assert.True(cache.ContainsKey(a.HookName(s)), a.HookName(s));
                        AssertAllClose(cache[a.HookName(SaeHookPoints.Input)], cache[a.HookName(SaeHookPoints.Output)], 1e-5, "output");
                    }
                }
                // Without the error term the reconstruction replaces the activation: the logits move.
                var recon = new HookedSaeTransformer(model);
                recon.AddSae(sae0);
                var diff = (recon.RunWithHooks(Toks) - clean!).abs().max().item<float>();
                Assert.True(diff > 1e-2, $"splicing a random SAE changed the logits by only {diff}");
            }
        }
    }

    [Fact]
    public void SaeHookPointsHoldTheTensorsComputedByHandAndEditsPropagate()
    {
        using var model = Gpt2();
        string hook = "blocks.0.hook_resid_post";
        using var sae = RandomSae(hook, 16, 32, 3);
        var (_, clean) = model.RunWithCache(Toks, [hook]);
        using var cleanCache = clean;
        var x = cleanCache[hook].to(ScalarType.Float64);
        var f = HandFeatures(sae, x);
        var pre = matmul(x - sae.BDec.detach().to(ScalarType.Float64), sae.WEnc.detach().to(ScalarType.Float64)) + sae.BEnc.detach().to(ScalarType.Float64);
        var recons = matmul(f, sae.WDec.detach().to(ScalarType.Float64)) + sae.BDec.detach().to(ScalarType.Float64);

        foreach (bool errorTerm in new[] { true, false })
        {
            var hooked = new HookedSaeTransformer(model);
            var a = hooked.AddSae(sae, "transformer.h.0", errorTerm); // an HF alias of the same hook
            Assert.Equal(hook, a.Hook);
            var (_, cache) = hooked.RunWithCache(Toks);
            using (cache)
            {
                AssertAllClose(x, cache[hook], 1e-6, "hook itself");
                AssertAllClose(x, cache[a.HookName(SaeHookPoints.Input)], 1e-6, "input");
                AssertAllClose(pre, cache[a.HookName(SaeHookPoints.ActsPre)], 1e-5, "acts_pre");
                AssertAllClose(f, cache[a.HookName(SaeHookPoints.ActsPost)], 1e-5, "acts_post");
                AssertAllClose(recons, cache[a.HookName(SaeHookPoints.Recons)], 1e-5, "recons");
                var output = errorTerm ? x : recons;
                AssertAllClose(output, cache[a.HookName(SaeHookPoints.Output)], 1e-5, "output");
                Assert.Equal(errorTerm, cache.ContainsKey(a.HookName(SaeHookPoints.Error)));
                if (errorTerm) AssertAllClose(x - recons, cache[a.HookName(SaeHookPoints.Error)], 1e-5, "error");
                // What the next block reads is the SAE's output.
                AssertAllClose(output, cache["blocks.1.hook_resid_pre"], 1e-5, "downstream");
            }
        }

        // Editing hook_sae_acts_pre reaches acts_post: pre = 0 everywhere gives f = ReLU(0) = 0 and x̂ = b_dec.
        var edit = new HookedSaeTransformer(model);
        var at = edit.AddSae(sae);
        var (_, c2) = edit.Run(Toks, new RunOptions
        {
            Hooks = [(at.HookName(SaeHookPoints.ActsPre), p => zeros_like(p))],
            CacheNames = [at.HookName(SaeHookPoints.ActsPost), at.HookName(SaeHookPoints.Recons)],
        });
        using (c2)
        {
            Assert.Equal(0, c2![at.HookName(SaeHookPoints.ActsPost)].abs().max().item<float>());
            AssertAllClose(sae.BDec.detach().expand(2, 6, 16), c2[at.HookName(SaeHookPoints.Recons)], 1e-6, "recons of zero features");
        }
        Assert.Contains("no SAE is attached", Assert.Throws<SaeSharpException>(() =>
            model.RunWithCache(Toks, ["blocks.1.hook_resid_pre.hook_sae_acts_post"])).Message);
    }

    [Fact]
    public void WithTheErrorTermEditsOfInputAndActsPreChangeTheOutputAsInSaeLens()
    {
        // SAELens SAE.forward with use_error_term: sae_error = x − decode(encode(x)) computed with the SAE's hooks
        // disabled, so an edit at hook_sae_input or hook_sae_acts_pre reaches the output: x̂(edited) + x − x̂(x).
        using var model = Gpt2();
        string hook = "blocks.0.hook_resid_post";
        using var sae = RandomSae(hook, 16, 32, 3);
        var (_, clean) = model.RunWithCache(Toks, [hook]);
        using var cleanCache = clean;
        var x = cleanCache[hook].to(ScalarType.Float64);
        var wDec = sae.WDec.detach().to(ScalarType.Float64);
        var bDec = sae.BDec.detach().to(ScalarType.Float64);
        Tensor Recons(Tensor input) => matmul(HandFeatures(sae, input), wDec) + bDec;
        var error = x - Recons(x);

        foreach (var (point, edit, expected) in new (string, Func<Tensor, Tensor?>, Tensor)[]
        {
            (SaeHookPoints.ActsPre, p => zeros_like(p), bDec.expand(2, 6, 16) + error),   // f = ReLU(0) = 0
            (SaeHookPoints.Input, v => v * 2, Recons(x * 2) + error),
        })
        {
            var hooked = new HookedSaeTransformer(model);
            var at = hooked.AddSae(sae, useErrorTerm: true);
            var (_, cache) = hooked.Run(Toks, new RunOptions
            {
                Hooks = [(at.HookName(point), edit)],
                CacheNames = [at.HookName(SaeHookPoints.Error), at.HookName(SaeHookPoints.Output)],
            });
            using (cache)
            {
                AssertAllClose(error, cache![at.HookName(SaeHookPoints.Error)], 1e-5, $"{point}: error");
                AssertAllClose(expected, cache[at.HookName(SaeHookPoints.Output)], 1e-5, $"{point}: output");
            }
        }
    }

    [Fact]
    public void SteeringAddsTheScaledDecoderRowAsARawHookWould()
    {
        foreach (var model in AllKinds())
        {
            using (model)
            {
                string hook = "blocks.0.hook_resid_post";
                using var sae = RandomSae(hook, 16, 32, 4);
                const int feature = 5;
                const double scale = 3.5;
                var v = (DecoderRow(sae, feature) * scale).to(ScalarType.Float32);
                var expected = model.RunWithHooks(Toks, (hook, x => x + v));

                var plain = new HookedSaeTransformer(model);
                AssertAllClose(expected, plain.RunWithHooks(Toks, [new Steering(sae, feature, scale)]), 1e-5, "raw steering");
                // Through the hook object directly (no wrapper), as generation options take it.
                AssertAllClose(expected, model.RunWithHooks(Toks, new Steering(sae, feature, scale).ToHook(model)), 1e-5, "ToHook");
                var spliced = new HookedSaeTransformer(model);
                spliced.AddSae(sae, useErrorTerm: true);
                AssertAllClose(expected, spliced.RunWithHooks(Toks, [new Steering(sae, feature, scale)]), 1e-4, "steering on hook_sae_output");

                // At given positions only.
                var mask = zeros(2, 6, 1);
                mask[.., 1].fill_(1);
                mask[.., 4].fill_(1);
                var atPositions = model.RunWithHooks(Toks, (hook, x => x + v * mask));
                AssertAllClose(atPositions, plain.RunWithHooks(Toks, [new Steering(sae, feature, scale) { Positions = [1, 4] }]), 1e-5, "positions");
            }
        }
    }

    [Fact]
    public void AblationAndClampWithTheErrorTermFollowTheirFormulas()
    {
        using var model = NeoX(parallel: false);
        string hook = "blocks.0.hook_resid_post";
        using var sae = RandomSae(hook, 16, 32, 5, encBias: 0.1);
        var (_, cache) = model.RunWithCache(Toks, [hook]);
        Tensor f;
        using (cache) f = HandFeatures(sae, cache[hook]);
        int[] feats = [2, 7, 11];
        Assert.True(f.index_select(-1, tensor(feats.Select(i => (long)i).ToArray())).gt(0).sum().item<long>() > 4, "the ablated features fire");
        var hooked = new HookedSaeTransformer(model);
        hooked.AddSae(sae, useErrorTerm: true);

        // Zero ablation: x − Σ f_F·W_dec[F].
        Tensor Delta(Func<int, Tensor> coefficient) =>
            feats.Select(i => coefficient(i).unsqueeze(-1) * DecoderRow(sae, i)).Aggregate((p, q) => p + q);
        var zeroDelta = Delta(i => -f[.., .., i]).to(ScalarType.Float32);
        AssertAllClose(model.RunWithHooks(Toks, (hook, x => x + zeroDelta)),
            hooked.RunWithHooks(Toks, [new Ablation(sae, feats)]), 1e-4, "zero ablation");

        // Mean ablation with given means m: x − Σ (f_F − m_F)·W_dec[F].
        var means = rand(32, generator: new Generator(3));
        var meanDelta = Delta(i => -(f[.., .., i] - means[i].item<float>())).to(ScalarType.Float32);
        AssertAllClose(model.RunWithHooks(Toks, (hook, x => x + meanDelta)),
            hooked.RunWithHooks(Toks, [new Ablation(sae, feats, means)]), 1e-4, "mean ablation");

        // Clamp: x + (V − f_F)·W_dec[F] with the error term ...
        const int cf = 9;
        const double value = 4.0;
        var clampDelta = ((value - f[.., .., cf]).unsqueeze(-1) * DecoderRow(sae, cf)).to(ScalarType.Float32);
        AssertAllClose(model.RunWithHooks(Toks, (hook, x => x + clampDelta)),
            hooked.RunWithHooks(Toks, [new Clamp(sae, cf, value)]), 1e-4, "clamp with error term");
        // ... and the reconstruction of the clamped features without it.
        var fc = f.clone();
        fc[.., .., cf] = value;
        var reconClamped = (matmul(fc, sae.WDec.detach().to(ScalarType.Float64)) + sae.BDec.detach().to(ScalarType.Float64)).to(ScalarType.Float32);
        var noError = new HookedSaeTransformer(model);
        noError.AddSae(sae);
        AssertAllClose(model.RunWithHooks(Toks, (hook, _ => reconClamped)),
            noError.RunWithHooks(Toks, [new Clamp(sae, cf, value)]), 1e-4, "clamp without error term");

        // Several interventions compose in hook order: clamp then ablate the same feature = ablated.
        AssertAllClose(hooked.RunWithHooks(Toks, [new Ablation(sae, [cf])]),
            hooked.RunWithHooks(Toks, [new Clamp(sae, cf, value), new Ablation(sae, [cf])]), 1e-5, "composition");

        // Feature means over a dataset equal the hand-computed mean of f.
        using var fm = Ablation.FeatureMeans(model, sae, [Toks]);
        AssertAllClose(f.mean([0, 1]), fm, 1e-5, "feature means");
        Assert.Contains("splice the SAE", Assert.Throws<SaeSharpException>(() =>
            new HookedSaeTransformer(model).RunWithHooks(Toks, [new Clamp(sae, 1, 1)])).Message);
        Assert.Contains("out of range", Assert.Throws<SaeSharpException>(() => new Steering(sae, 32, 1.0)).Message);
        // A NaN or infinite scale or value used to turn every logit into NaN without a word.
        Assert.Contains("steering scale must be a finite number", Assert.Throws<SaeSharpException>(() => new Steering(sae, 1, double.NaN)).Message);
        Assert.Contains("clamp value must be a finite number", Assert.Throws<SaeSharpException>(() => new Clamp(sae, 1, double.PositiveInfinity)).Message);
    }

    [Fact]
    public void SteeringAndClampingDuringKvCacheGenerationEqualRecomputation()
    {
        foreach (var model in new[] { Gpt2(), NeoX(parallel: true) })
        {
            using (model)
            {
                string hook = "blocks.1.hook_resid_pre";
                using var sae = RandomSae(hook, 16, 32, 6);
                var hooked = new HookedSaeTransformer(model);
                hooked.AddSae(sae, useErrorTerm: true);
                Intervention[] edits = [new Steering(sae, 3, 6.0) { Positions = [2, 6, 7] }, new Clamp(sae, 8, 2.0)];
                var prompt = tensor(new long[] { 5, 11, 23, 42, 7, 19, 3, 30 }, 2, 4);
                foreach (double temperature in new[] { 0.0, 1.0 })
                {
                    var o = new GenerationOptions { Temperature = temperature, Seed = 11, ReturnLogits = true };
                    using var cached = hooked.Generate(prompt, 6, o, edits);
                    using var recomputed = hooked.Generate(prompt, 6, o with { UseKvCache = false }, edits);
                    Assert.Equal(recomputed.Tokens.data<long>().ToArray(), cached.Tokens.data<long>().ToArray());
                    AssertAllClose(recomputed.Logits!, cached.Logits!, 1e-4, "step logits");
                }
                // Steering changes the continuation's logits (it is applied at all).
                using var plain = hooked.Generate(prompt, 6, new GenerationOptions { ReturnLogits = true });
                using var steered = hooked.Generate(prompt, 6, new GenerationOptions { ReturnLogits = true }, [new Steering(sae, 3, 20.0)]);
                Assert.True((plain.Logits! - steered.Logits!).abs().max().item<float>() > 0.1);
            }
        }
    }
    [Fact]
    public void Steering_positions_outside_the_sequence_or_before_its_start_are_errors_not_no_ops()
    {
        using var model = Gpt2();
        string hook = "blocks.0.hook_resid_post";
        using var sae = RandomSae(hook, 16, 32, 4);
        var plain = new HookedSaeTransformer(model);
        var neg = Assert.Throws<SaeSharpException>(() => plain.RunWithHooks(Toks, [new Steering(sae, 5, 2.0) { Positions = [1, -7] }]));
        Assert.Contains("position -7", neg.Message, StringComparison.Ordinal);
        Assert.Contains("6 tokens", neg.Message, StringComparison.Ordinal);

        using var last = plain.RunWithHooks(Toks, [new Steering(sae, 5, 2.0) { Positions = [5] }]); // Toks is [2, 6]: 5 is the last
        var e = Assert.Throws<SaeSharpException>(() => plain.RunWithHooks(Toks, [new Steering(sae, 5, 2.0) { Positions = [1, 6] }]));
        Assert.Contains("position 6", e.Message, StringComparison.Ordinal);
        Assert.Contains("6 token(s)", e.Message, StringComparison.Ordinal);

        // Generation: a 4-token prompt and 2 new tokens reach positions 0..5.
        using var prompt = tensor(new long[] { 5, 11, 23, 42 }, 1, 4);
        using var ok = plain.Generate(prompt, 2, new GenerationOptions(), [new Steering(sae, 5, 2.0) { Positions = [5] }]);
        var g = Assert.Throws<SaeSharpException>(() => plain.Generate(prompt, 2, new GenerationOptions(), [new Steering(sae, 5, 2.0) { Positions = [6] }]));
        Assert.Contains("position 6", g.Message, StringComparison.Ordinal);
    }

    [Fact]
    public void Ablation_with_a_nan_mean_for_an_ablated_feature_names_the_feature()
    {
        using var sae = RandomSae("blocks.0.hook_resid_post", 16, 32, 4);
        using var means = ones(32);
        means[3].fill_(TorchScalars.Of(double.NaN));
        var e = Assert.Throws<SaeSharpException>(() => new Ablation(sae, [1, 3], means));
        Assert.Contains("feature 3", e.Message, StringComparison.Ordinal);
        Assert.Contains("NaN", e.Message, StringComparison.Ordinal);
        _ = new Ablation(sae, [1, 2], means); // a NaN mean of a feature not ablated is never read
    }
}
