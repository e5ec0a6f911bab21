using SaeSharp.Interventions;
using SaeSharp.Models;
using SaeSharp.Tests.Models;
using static TorchSharp.torch;

namespace SaeSharp.Tests.Interventions;

/// <summary>SAELens's per-call SAEs (<c>run_with_saes</c>, <c>run_with_cache_with_saes</c>), TransformerLens's
/// <c>names_filter</c> on the hooked model, the disposable <see cref="SaeSharp.Hooks.CachedRun"/>, and steering at positions counted from
/// the prompt's end, each against a hand-built reference.</summary>
public class HookedSaeTransformerCallTests : ModelTestBase
{
    private const string H0 = "blocks.0.hook_resid_post", H1 = "blocks.1.hook_mlp_out";
    private static readonly Tensor Toks = tensor(new long[] { 5, 11, 23, 42, 7, 19, 3, 30, 8, 2, 44, 17 }, 2, 6);

    private static void Close(Tensor expected, Tensor actual, string what) =>
        Assert.True(expected.allclose(actual, rtol: 1e-5, atol: 1e-5), $"{what}: max diff {(expected - actual).abs().max().item<float>()}");

    [Fact]
    public void Run_with_saes_splices_them_for_the_call_only_as_hand_written_splice_hooks_do()
    {
        using var model = Gpt2();
        using var sae0 = InterventionTests.RandomSae(H0, 16, 32, 1);
        using var other0 = InterventionTests.RandomSae(H0, 16, 24, 3);
        using var sae1 = InterventionTests.RandomSae(H1, 16, 24, 2);
        var hooked = new HookedSaeTransformer(model);
        var kept = hooked.AddSae(sae0);

        // An added SAE joins the attached one: the SAEs' reconstructions in place of both activations.
        using var both = hooked.RunWithSaes(Toks, [sae1]);
        Assert.Same(kept, Assert.Single(hooked.Saes));
        using (var hand = model.RunWithHooks(Toks, (H0, x => sae0.forward(x)), (H1, x => sae1.forward(x))))
            Close(hand, both, "sae0 attached + sae1 for the call");
        // One at an attached SAE's hook takes its place for the call (SAELens's saes() context), then the attached one is back.
        using var replaced = hooked.RunWithSaes(Toks, [other0]);
        using (var hand = model.RunWithHooks(Toks, (H0, x => other0.forward(x))))
            Close(hand, replaced, "other0 in place of sae0");
        Assert.Same(kept, Assert.Single(hooked.Saes));
        using (var attachedOnly = hooked.RunWithHooks(Toks))
        using (var hand = model.RunWithHooks(Toks, (H0, x => sae0.forward(x))))
            Close(hand, attachedOnly, "after the calls, sae0 alone");

        // The cached form: the SAE's features at its hook point are its encoding of the activation entering it.
        using (var run = hooked.RunWithCacheWithSaes(Toks, [sae1], [H1, H1 + ".hook_sae_acts_post"]))
        {
            var (logits, cache) = run;
            Close(both, logits!, "cached run's logits");
            using var f = InterventionTests.HandFeatures(sae1, cache[H1]);
            Close(f.to(ScalarType.Float32), cache[H1 + ".hook_sae_acts_post"], "hook_sae_acts_post");
        }
        Assert.Same(kept, Assert.Single(hooked.Saes));
    }

    [Fact]
    public void The_attached_saes_are_restored_when_the_call_throws()
    {
        using var model = Gpt2();
        using var sae0 = InterventionTests.RandomSae(H0, 16, 32, 1);
        using var sae1 = InterventionTests.RandomSae(H1, 16, 24, 2);
        var hooked = new HookedSaeTransformer(model);
        var kept = hooked.AddSae(sae0);
        // Inside a hook (after the SAEs were spliced), in the cached form, and while splicing (the same SAE twice).
        Assert.Throws<InvalidOperationException>(() => hooked.RunWithSaes(Toks, [sae1], hooks: ("blocks.1.hook_resid_post", _ => throw new InvalidOperationException("boom"))));
        Assert.Same(kept, Assert.Single(hooked.Saes));
        var e = Assert.Throws<SaeSharpException>(() => hooked.RunWithCacheWithSaes(Toks, [sae1], interventions: [new Steering(sae1, 2, 1.0) { Positions = [9] }]));
        Assert.Contains("position 9", e.Message, StringComparison.Ordinal);
        Assert.Same(kept, Assert.Single(hooked.Saes));
        Assert.Throws<SaeSharpException>(() => hooked.RunWithSaes(Toks, [sae1, sae1]));
        Assert.Same(kept, Assert.Single(hooked.Saes));
    }

    [Fact]
    public void Run_with_cache_takes_a_names_filter_and_the_result_frees_logits_and_cache()
    {
        using var model = Gpt2();
        var hooked = new HookedSaeTransformer(model);
        var run = hooked.RunWithCache(Toks, namesFilter: n => n.EndsWith("hook_resid_post", StringComparison.Ordinal));
        var (logits, cache) = run;
        Assert.Equal(["blocks.0.hook_resid_post", "blocks.1.hook_resid_post"], cache.Keys.Order(StringComparer.Ordinal));
        Assert.Equal(new long[] { 2, 6, model.Config.DVocab }, logits!.shape);
        run.Dispose();
        Assert.True(logits.IsInvalid);
        Assert.Empty(cache);
        Assert.Throws<SaeSharpException>(() => hooked.RunWithCache(Toks, [H0], namesFilter: _ => true));
    }

    [Fact]
    public void Negative_steering_positions_equal_the_positive_ones_of_each_prompt()
    {
        using var model = Gpt2();
        using var sae = InterventionTests.RandomSae(H0, 16, 32, 4);
        var hooked = new HookedSaeTransformer(model);
        long[][] prompts = [[5, 11, 23, 42], [7, 19, 3, 30, 8, 2]];
        Steering At(params long[] p) => new(sae, 5, 8.0) { Positions = p };
        var alone = new List<Tensor>();
        foreach (var p in prompts)
        {
            long n = p.Length;
            using var t = tensor(p).unsqueeze(0);
            var last = hooked.RunWithHooks(t, [At(n - 1)]);
            alone.Add(last);
            using (var neg = hooked.RunWithHooks(t, [At(-1)])) Assert.True(last.allclose(neg, rtol: 0, atol: 0), $"-1 vs {n - 1}");
            using (var neg = hooked.RunWithHooks(t, [At(0, -2)]))
            using (var pos = hooked.RunWithHooks(t, [At(0, n - 2)])) Assert.True(pos.allclose(neg, rtol: 0, atol: 0), $"0,-2 vs 0,{n - 2}");
            using (var clean = hooked.RunWithHooks(t)) Assert.False(clean.allclose(last), "steering changed the run");
            // Generation: -1 stays the prompt's last token while new tokens are added.
            using var g1 = hooked.Generate(t, 3, new GenerationOptions { ReturnLogits = true }, [At(-1)]);
            using var g2 = hooked.Generate(t, 3, new GenerationOptions { ReturnLogits = true }, [At(n - 1)]);
            Assert.True(g1.Tokens.allclose(g2.Tokens, rtol: 0, atol: 0) && g1.Logits!.allclose(g2.Logits!, rtol: 0, atol: 0), $"generation: -1 vs {n - 1}");
        }
        // One right-padded batch of both: -1 is each row's own last token (4 − 1 in row 0, 6 − 1 in row 1).
        using var batch = tensor(new long[] { 5, 11, 23, 42, 0, 0, 7, 19, 3, 30, 8, 2 }, 2, 6);
        using var mask = tensor(new long[] { 1, 1, 1, 1, 0, 0, 1, 1, 1, 1, 1, 1 }, 2, 6);
        using var batched = hooked.Run(batch, new RunOptions { AttentionMask = mask }, [At(-1)]).Logits!;
        Close(alone[0][0], batched[0].narrow(0, 0, 4), "row 0");
        Close(alone[1][0], batched[1], "row 1");
        var e = Assert.Throws<SaeSharpException>(() => hooked.RunWithHooks(tensor(prompts[0]).unsqueeze(0), [At(-5)]));
        Assert.Contains("-5", e.Message, StringComparison.Ordinal);
        Assert.Contains("4 tokens", e.Message, StringComparison.Ordinal);
        Assert.Equal(3, Steering.FromPromptEnd(-1, 4));
        Assert.Equal(2, Steering.FromPromptEnd(2, 4));
        foreach (var t in alone) t.Dispose();
    }
}
