using SaeSharp;
using SaeSharp.Models;
using SaeSharp.Tests.Models;
using SaeSharp.Tests.Tokenizers;
using static TorchSharp.torch;

namespace SaeSharp.Tests.Hooks;

/// <summary>TransformerLens's <c>attn.hook_result</c> and <c>hook_mlp_in</c> in every family: their values recomputed by hand
/// from other hooks and the checkpoint's weights, edits there changing what follows as TransformerLens's would, and caching
/// them leaving the logits bit-identical.</summary>
public class ResultAndMlpInHookTests : ModelTestBase
{
    internal static readonly Tensor Toks = tensor(new long[] { 3, 14, 15, 9, 26, 5, 35 }).unsqueeze(0);

    /// <summary>One tiny Hugging Face checkpoint of each family and block layout (tests/data/hf_models).</summary>
    internal static readonly string[] Fixtures =
        ["gpt2", "gpt_neox-parallel", "gpt_neox-sequential", "llama3", "qwen2", "gemma2", "gemma3", "olmo2", "mixtral", "deepseek_v3", "gpt_oss"];

    private static IEnumerable<HookedTransformer> Families() =>
        Fixtures.Select(f => ModelLoader.FromPretrained(TestPaths.Data("hf_models", f)));

    /// <summary>The checkpoint's output projection of layer <paramref name="l"/> as [head·d_head, d_model] and its bias.</summary>
    private static (Tensor W, Tensor? B) OutputProjection(HookedTransformer m, int l)
    {
        var sd = m.state_dict();
        string key = m.Config.Architecture switch
        {
            "gpt2" => $"transformer.h.{l}.attn.c_proj",
            "gpt_neox" => $"gpt_neox.layers.{l}.attention.dense",
            _ => $"model.layers.{l}.self_attn.o_proj",
        };
        var w = sd[key + ".weight"];
        return (m.Config.Architecture == "gpt2" ? w : w.t(), sd.TryGetValue(key + ".bias", out var b) ? b : null);
    }

    private static bool PostAttentionNorm(HookedTransformer m) => m.Config.Architecture.StartsWith("gemma", StringComparison.Ordinal);

    /// <summary>result_h = z_h·W_O[h] by hand from the cached z and the checkpoint's W_O; summed over the heads plus b_O it is
    /// the attention's output (for Gemma 2/3, hook_attn_out is that after the post-attention RMSNorm, (1 + w) as Gemma's).</summary>
    [Fact]
    public void ResultIsEachHeadsZTimesItsWOAndSumsToTheAttentionOutput()
    {
        foreach (var m in Families())
            using (m)
            {
                var (_, c) = m.RunWithCache(Toks, _ => true);
                using (c)
                    for (int l = 0; l < m.Config.NLayers; l++)
                    {
                        string b = $"blocks.{l}.", what = $"{m.Config.Architecture} layer {l}";
                        var z = c[b + "attn.hook_z"][0];   // [pos, head, d_head]
                        var result = c[b + "attn.hook_result"][0];
                        long heads = z.shape[1], dModel = m.Config.DModel;
                        Assert.Equal(new long[] { Toks.shape[1], heads, dModel }, result.shape);
                        var (w, bias) = OutputProjection(m, l);
                        var byHand = einsum("phd,hdm->phm", z, w.reshape(heads, -1, dModel));
                        AssertAllClose(byHand, result, 1e-5, what + " result");
                        var summed = result.sum(1);
                        if (bias is not null) summed += bias;
                        if (PostAttentionNorm(m))
                        {
                            var g = m.state_dict()[$"model.layers.{l}.post_attention_layernorm.weight"];
                            summed = summed / (summed.pow(2).mean([-1L], keepdim: true) + m.Config.LayerNormEps).sqrt() * (g + 1);
                        }
                        AssertAllClose(c[b + "hook_attn_out"][0], summed, 1e-5, what + " attn_out");
                    }
            }
    }

    /// <summary>hook_mlp_in is the residual stream the MLP reads: resid_mid, or resid_pre where attention and MLP run in
    /// parallel (Pythia), and its norm's input.</summary>
    [Fact]
    public void MlpInIsResidMidOrResidPreInParallelBlocks()
    {
        foreach (var m in Families())
            using (m)
            {
                var (_, c) = m.RunWithCache(Toks, _ => true);
                using (c)
                    for (int l = 0; l < m.Config.NLayers; l++)
                    {
                        string b = $"blocks.{l}.";
                        var expected = c[b + (m.HookPoints.ParallelAttnMlp ? "hook_resid_pre" : "hook_resid_mid")];
                        Assert.True(expected.equal(c[b + "hook_mlp_in"]).all().item<bool>(), $"{m.Config.Architecture} layer {l}");
                        Assert.Equal($"[batch, pos, {m.Config.DModel}]", m.HookShape(b + "hook_mlp_in"));
                        Assert.Equal($"[batch, pos, {m.Config.NHeads}, {m.Config.DModel}]", m.HookShape(b + "attn.hook_result"));
                    }
            }
    }

    /// <summary>Caching both hooks keeps the model's own path (logits bit-identical to a run without hooks); an edit of the
    /// result carries a gradient to the hook's tensors.</summary>
    [Fact]
    public void CachedHooksLeaveTheLogitsExactAndEditedResultsCarryGradient()
    {
        foreach (var m in Families())
            using (m)
            {
                var plain = m.Forward(Toks);
                var (cached, c) = m.RunWithCache(Toks, n => n.EndsWith("attn.hook_result", StringComparison.Ordinal) || n.EndsWith("hook_mlp_in", StringComparison.Ordinal));
                using (c)
                {
                    Assert.Equal(2 * m.Config.NLayers, c.Keys.Count());
                    Assert.True(plain.equal(cached!).all().item<bool>(), m.Config.Architecture);
                }
                var factor = ones(1, requires_grad: true);
                var logits = m.Run(Toks, new RunOptions { Grad = true, Hooks = [("blocks.0.attn.hook_result", r => r * factor)] }).Logits!;
                logits.sum().backward();
                Assert.True(factor.grad is { } g && g.abs().item<float>() > 0, m.Config.Architecture + " no gradient through the result");
            }
    }

    /// <summary>Zeroing head 0's result removes exactly its share: the attention output is the other heads' results plus b_O.</summary>
    [Fact]
    public void ZeroingOneHeadsResultRemovesItFromTheAttentionOutput()
    {
        foreach (var m in Families().Where(m => !PostAttentionNorm(m)))
            using (m)
            {
                var (_, clean) = m.RunWithCache(Toks, ["blocks.0.attn.hook_result"]);
                var (_, edited) = m.Run(Toks, new RunOptions
                {
                    CacheNames = ["blocks.0.hook_attn_out"],
                    Hooks = [("blocks.0.attn.hook_result", r => { var e = r.clone(); e[.., .., 0] = 0; return e; })],
                });
                using (clean)
                using (edited)
                {
                    var others = clean["blocks.0.attn.hook_result"].narrow(2, 1, m.Config.NHeads - 1).sum(2);
                    if (OutputProjection(m, 0).B is { } bias) others += bias;
                    AssertAllClose(others, edited!["blocks.0.hook_attn_out"], 1e-5, m.Config.Architecture);
                }
            }
    }

    /// <summary>An MLP input of zeros reaches the MLP only: the residual stream keeps resid_mid, ln2's output is its bias (a
    /// LayerNorm of zeros) or zero (RMSNorm), and the MLP's output is the same at every position.</summary>
    [Fact]
    public void ZeroMlpInChangesTheMlpsInputOnly()
    {
        foreach (var m in Families())
            using (m)
            {
                string residIn = m.HookPoints.ParallelAttnMlp ? "blocks.0.hook_resid_pre" : "blocks.0.hook_resid_mid";
                string[] names = [residIn, "blocks.0.ln2.hook_normalized", "blocks.0.hook_mlp_out"];
                var (_, clean) = m.RunWithCache(Toks, names);
                var (_, edited) = m.Run(Toks, new RunOptions { CacheNames = names, Hooks = [("blocks.0.hook_mlp_in", x => zeros_like(x))] });
                using (clean)
                using (edited)
                {
                    string what = m.Config.Architecture;
                    Assert.True(clean[residIn].equal(edited![residIn]).all().item<bool>(), what + " residual changed");
                    var mlpOut = edited["blocks.0.hook_mlp_out"][0];
                    AssertAllClose(mlpOut[0].expand(mlpOut.shape), mlpOut, 1e-6, what + " mlp_out varies by position");
                    Assert.False(clean["blocks.0.hook_mlp_out"].allclose(edited["blocks.0.hook_mlp_out"]), what + " mlp_out unchanged");
                    if (m.HookPoints.Hf.PostNormOnly) continue;   // OLMo-2: ln2 normalises the MLP's output
                    var sd = m.state_dict();
                    var ln2Bias = m.Config.Architecture switch
                    {
                        "gpt2" => sd["transformer.h.0.ln_2.bias"],
                        "gpt_neox" => sd["gpt_neox.layers.0.post_attention_layernorm.bias"],
                        _ => zeros(m.Config.DModel),
                    };
                    AssertAllClose(ln2Bias.expand(edited["blocks.0.ln2.hook_normalized"].shape), edited["blocks.0.ln2.hook_normalized"], 1e-6, what + " ln2");
                }
            }
    }

    /// <summary>Gemma 2/3's post-norms have TransformerLens's ln1_post / ln2_post hooks: their output is hook_attn_out /
    /// hook_mlp_out, their scale √(mean x² + eps) of the attention's output (the heads' results summed) and of the MLP's
    /// (down_proj of mlp.hook_post, by hand); caching them keeps the logits exact, and doubling ln2_post's scale halves
    /// hook_mlp_out.</summary>
    [Fact]
    public void GemmaPostNormsHaveTransformerLensLnPostHooks()
    {
        foreach (var f in new[] { "gemma2", "gemma3" })
            using (var m = ModelLoader.FromPretrained(TestPaths.Data("hf_models", f)))
            {
                var plain = m.Forward(Toks);
                var (logits, c) = m.RunWithCache(Toks, _ => true);
                using (c)
                {
                    Assert.True(plain.equal(logits!).all().item<bool>(), f + " logits");
                    double eps = m.Config.LayerNormEps;
                    for (int l = 0; l < m.Config.NLayers; l++)
                    {
                        string b = $"blocks.{l}.";
                        Assert.True(c[b + "hook_attn_out"].equal(c[b + "ln1_post.hook_normalized"]).all().item<bool>(), $"{f} {b}ln1_post");
                        Assert.True(c[b + "hook_mlp_out"].equal(c[b + "ln2_post.hook_normalized"]).all().item<bool>(), $"{f} {b}ln2_post");
                        var attn = c[b + "attn.hook_result"].sum(2);
                        var mlp = matmul(c[b + "mlp.hook_post"], m.state_dict()[$"model.layers.{l}.mlp.down_proj.weight"].t());
                        AssertAllClose((attn.pow(2).mean([-1L], keepdim: true) + eps).sqrt(), c[b + "ln1_post.hook_scale"], 1e-5, $"{f} {b}ln1_post scale");
                        AssertAllClose((mlp.pow(2).mean([-1L], keepdim: true) + eps).sqrt(), c[b + "ln2_post.hook_scale"], 1e-5, $"{f} {b}ln2_post scale");
                    }
                    var (_, edited) = m.Run(Toks, new RunOptions { CacheNames = ["blocks.0.hook_mlp_out"], Hooks = [("blocks.0.ln2_post.hook_scale", x => x * 2)] });
                    using (edited)
                        AssertAllClose(c["blocks.0.hook_mlp_out"] / 2, edited!["blocks.0.hook_mlp_out"], 1e-5, f + " edited scale");
                }
            }
    }
}
