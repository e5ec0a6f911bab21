using SaeSharp;
using SaeSharp.Models;
using SaeSharp.Tests.Models;
using static TorchSharp.torch;

namespace SaeSharp.Tests.Hooks;

/// <summary>TransformerLens's <c>attn.hook_attn_scores</c> and <c>ln*.hook_scale</c>: their values recomputed by hand from
/// other hooks and the checkpoint's weights, and edits at them changing what follows as TransformerLens's would.</summary>
public class ScaleAndScoreHookTests : ModelTestBase
{
    private static readonly Tensor Toks = tensor(new long[] { 3, 14, 15, 9, 6, 5, 11 }).unsqueeze(0);

    private HookedTransformer Llama() => ModelLoader.FromPretrained(TinyDecoders.Write(Sub($"llama-{Guid.NewGuid():N}"), LlamaFamilyTests.Spec("llama-gqa")));

    private IEnumerable<HookedTransformer> KindsWithRms()
    {
        foreach (var m in AllKinds()) yield return m;
        yield return Llama();
    }

    private static bool Rms(HookedTransformer m) => m.Config.Architecture == "llama";

    private static (Tensor? Logits, SaeSharp.Hooks.ActivationCache Cache) Run(HookedTransformer m, string[] cached, params (string Name, Func<Tensor, Tensor?> Fn)[] hooks)
    {
        var (logits, cache) = m.Run(Toks, new RunOptions { CacheNames = cached, Hooks = hooks });
        return (logits, cache!);
    }

    /// <summary>The scores are q·k/√d_head of the (rotated) queries and keys, keys after the query at float32's minimum,
    /// and the pattern is their softmax.</summary>
    [Fact]
    public void AttnScoresAreScaledDotProductsOfTheRotatedQueriesAndKeys()
    {
        foreach (var m in KindsWithRms())
            using (m)
            {
                var (_, c) = m.RunWithCache(Toks);
                using (c)
                    for (int l = 0; l < m.Config.NLayers; l++)
                    {
                        string b = $"blocks.{l}.attn.", what = $"{m.Config.Architecture} layer {l}";
                        bool rotary = m.HookPoints.Rotary;
                        var q = c[b + (rotary ? "hook_rot_q" : "hook_q")][0];   // [pos, head, d_head]
                        var k = c[b + (rotary ? "hook_rot_k" : "hook_k")][0];
                        k = k.repeat_interleave(q.shape[1] / k.shape[1], 1);     // grouped-query attention
                        var expected = einsum("qhd,khd->hqk", q, k) / Math.Sqrt(q.shape[2]);
                        var scores = c[b + "hook_attn_scores"][0];
                        long n = Toks.shape[1];
                        var causal = ones(n, n, dtype: ScalarType.Bool).tril();
                        AssertAllClose(expected.masked_fill(causal.logical_not(), 0), scores.masked_fill(causal.logical_not(), 0), 1e-4, what + " scores");
                        Assert.Equal(float.MinValue, scores.masked_fill(causal, float.MinValue).max().item<float>());
                        AssertAllClose(scores.softmax(-1), c[b + "hook_pattern"][0], 1e-6, what + " pattern");
                    }
            }
    }

    /// <summary>Scores set to zero on every allowed key make each query attend uniformly to itself and the keys before it,
    /// so the pattern is 1/(q + 1) and z the running mean of v.</summary>
    [Fact]
    public void EditedScoresReachTheSoftmax()
    {
        foreach (var m in AllKinds())
            using (m)
            {
                long n = Toks.shape[1];
                var causal = ones(n, n, dtype: ScalarType.Bool).tril();
                var (_, c) = Run(m, ["blocks.0.attn.hook_pattern", "blocks.0.attn.hook_v", "blocks.0.attn.hook_z"],
                    ("blocks.0.attn.hook_attn_scores", s => zeros_like(s).masked_fill(causal.logical_not(), float.MinValue)));
                using (c)
                {
                    var uniform = causal.to(ScalarType.Float32) / (TorchScalars.Arange(n, dtype: ScalarType.Float32) + 1).unsqueeze(1);
                    AssertAllClose(uniform.expand(m.Config.NHeads, n, n), c["blocks.0.attn.hook_pattern"][0], 1e-6, m.Config.Architecture);
                    var v = c["blocks.0.attn.hook_v"][0];   // [pos, head, d_head]
                    var runningMean = v.cumsum(0) / (TorchScalars.Arange(n, dtype: ScalarType.Float32) + 1).view(-1, 1, 1);
                    AssertAllClose(runningMean, c["blocks.0.attn.hook_z"][0], 1e-5, m.Config.Architecture + " z");
                }
            }
    }

    /// <summary>hook_scale is √(var + eps) of the norm's input (LayerNorm, biased variance) or √(mean x² + eps) (RMSNorm),
    /// shape [batch, pos, 1], for ln1, ln2 and ln_final.</summary>
    [Fact]
    public void HookScaleIsTheNormsDivisor()
    {
        foreach (var m in KindsWithRms())
            using (m)
            {
                var (_, c) = m.RunWithCache(Toks);
                using (c)
                {
                    double eps = m.Config.LayerNormEps;
                    Tensor Expected(Tensor x)
                    {
                        var centred = Rms(m) ? x : x - x.mean([-1L], keepdim: true);
                        return (centred.pow(2).mean([-1L], keepdim: true) + eps).sqrt();
                    }
                    int last = m.Config.NLayers - 1;
                    for (int l = 0; l <= last; l++)
                    {
                        string b = $"blocks.{l}.";
                        var ln2In = m.HookPoints.ParallelAttnMlp ? c[b + "hook_resid_pre"] : c[b + "hook_resid_mid"];
                        Assert.Equal(new long[] { 1, Toks.shape[1], 1 }, c[b + "ln1.hook_scale"].shape);
                        AssertAllClose(Expected(c[b + "hook_resid_pre"]), c[b + "ln1.hook_scale"], 1e-5, $"{m.Config.Architecture} {b}ln1");
                        AssertAllClose(Expected(ln2In), c[b + "ln2.hook_scale"], 1e-5, $"{m.Config.Architecture} {b}ln2");
                    }
                    AssertAllClose(Expected(c[$"blocks.{last}.hook_resid_post"]), c["ln_final.hook_scale"], 1e-5, m.Config.Architecture + " ln_final");
                }
            }
    }

    /// <summary>Doubling ln1's scale halves the normalised input before the norm's weight (and bias): the norm's output is
    /// recomputed by hand from the checkpoint's weights; the attention reads it.</summary>
    [Fact]
    public void EditedScaleIsWhatTheNormDividesBy()
    {
        foreach (var m in KindsWithRms())
            using (m)
            {
                var sd = m.state_dict();
                string prefix = m.Config.Architecture switch
                {
                    "gpt2" => "transformer.h.0.ln_1",
                    "gpt_neox" => "gpt_neox.layers.0.input_layernorm",
                    _ => "model.layers.0.input_layernorm",
                };
                var w = sd[prefix + ".weight"];
                var (_, clean) = Run(m, ["blocks.0.hook_resid_pre", "blocks.0.ln1.hook_scale", "blocks.0.attn.hook_q"]);
                var (_, edited) = Run(m, ["blocks.0.ln1.hook_normalized", "blocks.0.attn.hook_q"], ("blocks.0.ln1.hook_scale", s => s * 2));
                using (clean)
                using (edited)
                {
                    var x = clean["blocks.0.hook_resid_pre"];
                    var centred = Rms(m) ? x : x - x.mean([-1L], keepdim: true);
                    var expected = centred / (clean["blocks.0.ln1.hook_scale"] * 2) * w;
                    if (!Rms(m)) expected = expected + sd[prefix + ".bias"];
                    AssertAllClose(expected, edited["blocks.0.ln1.hook_normalized"], 1e-5, m.Config.Architecture);
                    Assert.False(clean["blocks.0.attn.hook_q"].allclose(edited["blocks.0.attn.hook_q"]), m.Config.Architecture + " q unchanged");
                }
            }
    }

    /// <summary>Only reading the scales (caching) keeps the fused norms: the logits are bit-identical to a run without hooks,
    /// and a gradient flows through an edited scale.</summary>
    [Fact]
    public void CachedScalesLeaveTheLogitsExactAndEditedScalesCarryGradient()
    {
        foreach (var m in KindsWithRms())
            using (m)
            {
                var plain = m.Forward(Toks);
                var (cached, c) = m.RunWithCache(Toks, n => n.EndsWith(".hook_scale", StringComparison.Ordinal));
                using (c)
                {
                    Assert.Equal(2 * m.Config.NLayers + 1, c.Keys.Count());
                    Assert.True(plain.equal(cached!).all().item<bool>(), m.Config.Architecture);
                }
                var factor = ones(1, requires_grad: true);
                var logits = m.Run(Toks, new RunOptions { Grad = true, Hooks = [("ln_final.hook_scale", s => s * factor)] }).Logits!;
                logits.sum().backward();
                Assert.True(factor.grad is { } g && g.abs().item<float>() > 0, m.Config.Architecture + " no gradient through the scale");
            }
    }
}
