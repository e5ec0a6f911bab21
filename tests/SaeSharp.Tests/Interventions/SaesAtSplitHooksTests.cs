using SaeSharp.Interventions;
using SaeSharp.Models;
using SaeSharp.Saes;
using SaeSharp.Tests.Hooks;
using SaeSharp.Tests.Models;
using SaeSharp.Tests.Tokenizers;
using static TorchSharp.torch;

namespace SaeSharp.Tests.Interventions;

/// <summary>SAEs at TransformerLens's per-head hooks (one head of <c>hook_q/k/v_input</c> or <c>attn.hook_result</c>, by
/// <c>hook_head_index</c>), at <c>hook_mlp_in</c> and at Gemma 2's post-norms (<c>ln1_post</c>, <c>ln2_post</c>), on tiny GPT-2,
/// parallel NeoX, grouped-query Llama and Gemma 2 checkpoints:
/// attribution patching against finite differences of the metric (plain and frozen), integrated gradients against the
/// ablation of the whole SAE, and KV-cached generation against recomputation.</summary>
public class SaesAtSplitHooksTests : ModelTestBase
{
    private static readonly Tensor Toks = ResultAndMlpInHookTests.Toks;

    private static HookedTransformer Load(string f) => ModelLoader.FromPretrained(TestPaths.Data("hf_models", f), ScalarType.Float64);

    /// <summary>A random float64 SAE reading d_model at <paramref name="hook"/>, head <paramref name="head"/> when given.</summary>
    private static Sae At(HookedTransformer m, string hook, int? head, int seed)
    {
        var sae = InterventionTests.RandomSae(hook, (int)m.Config.DModel, 32, seed, ScalarType.Float64, encBias: 0.0);
        sae.Cfg.Metadata.HookHeadIndex = head;
        return sae;
    }

    /// <summary>The metric with one entry of <paramref name="name"/> scaled by (1 + t), patterns and norm scales replayed from
    /// <paramref name="frozen"/> when given (the frozen replacement model, whose derivative a frozen attribution is).</summary>
    private static double Metric(HookedSaeTransformer hooked, AttributionMetric metric, string name, long[] index, double t, FrozenValues? frozen)
    {
        if (frozen is null) return AttributionTests.MetricWithScaledEntry(hooked, metric, Toks, name, index, t);
        frozen.Replay();
        var logits = hooked.Run(Toks, new RunOptions
        {
            FreezeAttentionAndNorms = true, FrozenValues = frozen,
            Hooks = [(name, a => { var s = ones_like(a); s[index.Select(i => (TensorIndex)i).ToArray()] = 1 + t; return a * s; })],
        }).Logits!;
        return metric.Evaluate(logits, Toks).item<double>();
    }

    /// <summary>d/dt m(f·(1 + t)) at t = 0 is the attribution f·∂m/∂f, for the top features and the error node of every
    /// position. Frozen (circuit-tracer's replacement model): the derivative of the run whose patterns and norm scales are
    /// the clean run's; at hook_v_input each head's copy is normalised by its own frozen scale.</summary>
    [Theory]
    [InlineData("gpt2", "blocks.1.hook_q_input", 1, false)]
    [InlineData("gpt2", "blocks.0.attn.hook_result", 2, false)]
    [InlineData("gpt2", "blocks.1.hook_v_input", 3, true)]
    [InlineData("gpt_neox-parallel", "blocks.1.hook_q_input", 1, false)]
    [InlineData("gpt_neox-parallel", "blocks.1.hook_mlp_in", null, true)]
    [InlineData("gpt_neox-parallel", "blocks.0.hook_v_input", 0, true)]
    [InlineData("llama3", "blocks.1.hook_k_input", 1, false)]
    [InlineData("llama3", "blocks.0.hook_v_input", 1, true)]
    [InlineData("llama3", "blocks.1.hook_q_input", 3, false)]
    [InlineData("llama3", "blocks.0.attn.hook_result", 3, true)]
    [InlineData("gemma2", "blocks.0.ln1_post.hook_normalized", null, false)]
    [InlineData("gemma2", "blocks.1.ln2_post.hook_normalized", null, true)]
    [InlineData("gemma2", "blocks.1.hook_q_input", 1, false)]
    public void AttributionsMatchFiniteDifferences(string f, string hook, int? head, bool frozen)
    {
        using var m = Load(f);
        using var sae = At(m, hook, head, 5);
        var hooked = new HookedSaeTransformer(m);
        var attached = hooked.AddSae(sae, useErrorTerm: true);
        var metric = AttributionMetric.LogitDiff(3, 7);
        using var r = hooked.Attribute(Toks, metric, freezeAttentionAndNorms: frozen);
        Assert.Equal(metric.Evaluate(m.Forward(Toks), Toks).item<double>(), r.Metric, 9);
        using var values = frozen ? new FrozenValues() : null;
        if (values is not null) hooked.Run(Toks, new RunOptions { FreezeAttentionAndNorms = true, FrozenValues = values }).Logits!.Dispose();
        // Llama's and Gemma's RMSNorm runs in float32 (as HF's) even in a float64 model, and Gemma 2's soft-capped logits are
        // float32: a larger step, and a tolerance for their rounding.
        double h = f is "llama3" or "gemma2" ? 1e-3 : 1e-5, tol = f switch { "llama3" => 5e-4, "gemma2" => 2e-3, _ => 1e-6 };
        string acts = attached.HookName(SaeSharp.Hooks.SaeHookPoints.ActsPost), error = attached.HookName(SaeSharp.Hooks.SaeHookPoints.Error);
        var entries = r.Top(6);
        Assert.NotEmpty(entries);
        Assert.True(Math.Abs(entries[0].Attribution) > 1e-6, $"{f} {hook}: every attribution is zero");
        foreach (var e in entries)
        {
            long[] idx = [e.Batch, e.Position, e.Feature];
            double fd = (Metric(hooked, metric, acts, idx, h, values) - Metric(hooked, metric, acts, idx, -h, values)) / (2 * h);
            Assert.True(Math.Abs(fd - e.Attribution) < tol * Math.Max(1, Math.Abs(fd)), $"{f} {hook} {e}: finite difference {fd}");
        }
        for (long p = 0; p < Toks.shape[1]; p += 3)
        {
            double fd = (Metric(hooked, metric, error, [0, p], h, values) - Metric(hooked, metric, error, [0, p], -h, values)) / (2 * h);
            double a = r.ErrorAttribution[0][0, p].item<double>();
            Assert.True(Math.Abs(fd - a) < tol * Math.Max(1, Math.Abs(fd)), $"{f} {hook} error node at {p}: {a} vs finite difference {fd}");
        }
    }

    /// <summary>Integrated gradients at one head's query input add up to the effect of zeroing every feature of the SAE
    /// (error term kept), closer than first-order attributions.</summary>
    [Theory]
    [InlineData("gpt_neox-parallel", "blocks.1.hook_q_input", 1)]
    [InlineData("llama3", "blocks.0.hook_k_input", 0)]
    public void IntegratedGradientsAddUpToAblatingThePerHeadSae(string f, string hook, int head)
    {
        using var m = Load(f);
        using var sae = At(m, hook, head, 8);
        var hooked = new HookedSaeTransformer(m);
        var attached = hooked.AddSae(sae, useErrorTerm: true);
        var metric = AttributionMetric.LogitDiff(3, 7);
        using var ig = hooked.Attribute(Toks, metric, integratedGradientSteps: 32);
        using var first = hooked.Attribute(Toks, metric);
        var ablated = hooked.RunWithHooks(Toks, null, (attached.HookName(SaeSharp.Hooks.SaeHookPoints.ActsPost), a => zeros_like(a)));
        double effect = ig.Metric - metric.Evaluate(ablated, Toks).item<double>();
        double sumIg = ig.Attribution[0].sum().item<double>(), sumFirst = first.Attribution[0].sum().item<double>();
        Assert.True(Math.Abs(effect) > 1e-4, $"{f} {hook}: ablating the SAE changes nothing ({effect})");
        Assert.True(Math.Abs(sumIg - effect) < 0.02 * Math.Abs(effect) + 1e-5, $"{f} {hook}: integrated gradients sum to {sumIg}, ablation effect {effect}");
        Assert.True(Math.Abs(sumIg - effect) <= Math.Abs(sumFirst - effect), $"{f} {hook}: first order {sumFirst} is closer to {effect} than {sumIg}");
    }

    /// <summary>With attention patterns frozen, an SAE at a query or key input reaches nothing: refused, naming the hook.</summary>
    [Theory]
    [InlineData("blocks.1.hook_q_input")]
    [InlineData("blocks.0.hook_k_input")]
    public void FrozenAttributionAtAQueryOrKeyInputIsRefused(string hook)
    {
        using var m = Load("llama3");
        using var sae = At(m, hook, 1, 3);
        var hooked = new HookedSaeTransformer(m);
        hooked.AddSae(sae, useErrorTerm: true);
        var e = Assert.Throws<SaeSharpException>(() => hooked.Attribute(Toks, AttributionMetric.Loss, freezeAttentionAndNorms: true));
        Assert.Contains($"hook '{hook}'", e.Message);
        Assert.Contains("attention pattern", e.Message);
    }

    /// <summary>Generation with an SAE (no error term) spliced at key-value head 1's key input, alone, steering a feature and
    /// clamping one: the KV cache keeps the keys of the SAE's (edited) reconstruction, so cached steps give the tokens and
    /// logits of recomputing the whole sequence each step.</summary>
    [Theory]
    [InlineData("llama3")]
    [InlineData("gpt_neox-parallel")]
    public void KvCachedGenerationWithAnSaeAtOneKeyInputEqualsRecomputation(string f)
    {
        using var m = ModelLoader.FromPretrained(TestPaths.Data("hf_models", f));
        using var sae = InterventionTests.RandomSae("blocks.1.hook_k_input", (int)m.Config.DModel, 32, 4, encBias: 0.0);
        sae.Cfg.Metadata.HookHeadIndex = 1;
        var hooked = new HookedSaeTransformer(m);
        hooked.AddSae(sae);
        var o = new GenerationOptions { ReturnLogits = true };
        using var clean = m.Generate(Toks, 5, o);
        Intervention[][] edits = [[], [new Steering(sae, 3, 8.0)], [new Clamp(sae, 5, 4.0)]];
        foreach (var edit in edits)
        {
            using var cached = hooked.Generate(Toks, 5, o, edit);
            using var full = hooked.Generate(Toks, 5, o with { UseKvCache = false }, edit);
            string what = $"{f} {(edit.Length == 0 ? "SAE" : edit[0].GetType().Name)}";
            Assert.Equal(full.Tokens.data<long>().ToArray(), cached.Tokens.data<long>().ToArray());
            AssertAllClose(full.Logits!, cached.Logits!, 1e-4, what + " step logits");
            Assert.False(clean.Logits!.allclose(cached.Logits!), what + " changed nothing");
        }
    }
}
