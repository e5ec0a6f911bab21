using SaeSharp.Hooks;
using SaeSharp.Interventions;
using SaeSharp.Models;
using SaeSharp.Tests.Models;
using static TorchSharp.torch;

namespace SaeSharp.Tests.Interventions;

/// <summary>The README's interventions sample, verbatim (<see cref="ReadmeSamples"/>) at toy sizes: it must compile and do what the README says.</summary>
public class ReadmeInterventionSampleTests : ModelTestBase
{
    [Fact]
    public void InterventionsSampleRuns()
    {
        using var model = ModelLoader.FromPretrained(TinyModels.WriteGpt2(Sub("gpt2"), seed: 2, nLayer: 2, nEmbd: 16, nHead: 4, vocab: 3200));
        using var loaded = InterventionTests.RandomSae("blocks.1.hook_resid_pre", 16, 64, 1, encBias: 0.1);
        var tokens = tensor(new long[] { 3, 464, 3139, 286 }).unsqueeze(0);

        // readme-sample interventions begin
        var hooked = new HookedSaeTransformer(model);
        using var once = hooked.RunWithSaes(tokens, [loaded]);           // SAELens run_with_saes: spliced for this call only
        using var onceCached = hooked.RunWithCacheWithSaes(tokens, [loaded], namesFilter: n => n.EndsWith("hook_resid_post", StringComparison.Ordinal));
        var attached = hooked.AddSae(loaded, useErrorTerm: true);         // at loaded.Cfg.Metadata.HookName
        using var saeRun = hooked.RunWithCache(tokens, [attached.HookName(SaeHookPoints.ActsPost)]);
        var (same, saeCache) = saeRun;
        var ablated = hooked.RunWithHooks(tokens, [new Ablation(loaded, [12, 40]), new Clamp(loaded, feature: 7, value: 3.0)]);
        var shapes = new List<long[]>();  // fwd_hooks=[(name, fn)] as in TransformerLens: fn returns the replacement, or null to keep it
        var observed = hooked.RunWithHooks(tokens, (attached.HookName(SaeHookPoints.ActsPost), acts => { shapes.Add(acts.shape); return null; }));
        using var steered = hooked.Generate(tokens, 20, new GenerationOptions { Temperature = 0.7, Seed = 1 },
                                            [new Steering(loaded, feature: 7, scale: 20.0)]);
        using var atLast = hooked.RunWithHooks(tokens, [new Steering(loaded, 7, 20.0) { Positions = [-1] }]);  // -1: each prompt's last token
        // steered.Rows[r]: prompt tokens, new tokens (EOS included), Stop (MaxNewTokens or Eos); Rows[r].Affects(p): steering at p applied
        using var attribution = hooked.Attribute(tokens, AttributionMetric.LogitDiff(3139, 286));
        var top = attribution.Top(10).Select(e => $"pos {e.Position} feature {e.Feature}: {e.Attribution:F3}").ToList();
        // A single intervention as a plain hook, e.g. for model.Generate: new Steering(loaded, 7, 20.0).ToHook(model)
        // Gradients through the model when asked: model.Run(tokens, new RunOptions { Grad = true }); model.SetRequiresGrad(true) for weights.
        // readme-sample interventions end

        Assert.Equal(new long[] { 1, 4, 64 }, saeCache[attached.HookName(SaeHookPoints.ActsPost)].shape);
        Assert.True(same!.allclose(model.Forward(tokens), rtol: 1e-4, atol: 1e-4), "the error term keeps the clean logits");
        // The per-call SAEs: the reconstruction in place of the activation (no error term), and no SAE left attached then.
        using (var hand = model.RunWithHooks(tokens, ("blocks.1.hook_resid_pre", x => loaded.forward(x))))
            Assert.True(hand.allclose(once, rtol: 1e-5, atol: 1e-5) && hand.allclose(onceCached.Logits!, rtol: 1e-5, atol: 1e-5));
        Assert.Equal(["blocks.0.hook_resid_post", "blocks.1.hook_resid_post"], onceCached.Cache.Keys.Order(StringComparer.Ordinal));
        // Steering at -1 is steering at the 4-token prompt's position 3.
        using (var at3 = hooked.RunWithHooks(tokens, [new Steering(loaded, 7, 20.0) { Positions = [3] }]))
            Assert.True(at3.allclose(atLast, rtol: 0, atol: 0));
        Assert.Equal(same!.shape, ablated.shape);
        // The plain hook saw the SAE's features once and, returning null, changed nothing.
        Assert.Equal(new long[] { 1, 4, 64 }, Assert.Single(shapes));
        Assert.True(observed.allclose(same, rtol: 0, atol: 0), "a hook returning null keeps the activation");
        Assert.Equal(new long[] { 1, 24 }, steered.Tokens.shape);
        // The comment's Rows: no EOS is set, so the row ran its 20 new tokens, and steering at the prompt's positions applied.
        Assert.Equal((4L, 20, GenerationStop.MaxNewTokens), (steered.Rows[0].PromptTokens, steered.Rows[0].NewTokens, steered.Rows[0].Stop));
        Assert.True(steered.Rows[0].Affects(3));
        Assert.Equal(10, top.Count);

        // The two calls the sample's last comments name.
        var (name, fn) = new Steering(loaded, 7, 20.0).ToHook(model);
        Assert.Equal("blocks.1.hook_resid_pre", name);
        Assert.NotNull(fn);
        model.SetRequiresGrad(true);
        var (gradLogits, _) = model.Run(tokens, new RunOptions { Grad = true });
        Assert.True(gradLogits!.requires_grad);
    }

    [Fact]
    public void The_readme_block_is_this_sample() => ReadmeSamples.AssertBlockIsRegion("interventions");
}
