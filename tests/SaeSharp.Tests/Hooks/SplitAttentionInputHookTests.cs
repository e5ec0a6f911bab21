using SaeSharp;
using SaeSharp.Hooks;
using SaeSharp.Models;
using SaeSharp.Tests.Models;
using SaeSharp.Tests.Tokenizers;
using static TorchSharp.torch;

namespace SaeSharp.Tests.Hooks;

/// <summary>TransformerLens's per-head attention inputs <c>hook_attn_in</c> and <c>hook_q/k/v_input</c>: copies of resid_pre
/// (k/v with the key-value heads), caching them leaving the logits exact, and an edit of head h's copy changing head h's
/// query (key, value) only, as recomputed by hand from the checkpoint's weights.</summary>
public class SplitAttentionInputHookTests : ModelTestBase
{
    private static readonly Tensor Toks = ResultAndMlpInHookTests.Toks;
    private static readonly string[] Fixtures = ResultAndMlpInHookTests.Fixtures;

    private static HookedTransformer Load(string f) => ModelLoader.FromPretrained(TestPaths.Data("hf_models", f));

    private static bool IsInput(string n) => n.EndsWith("hook_attn_in", StringComparison.Ordinal) || n.EndsWith("_input", StringComparison.Ordinal);

    private static Tensor Same(Tensor x) => x.clone();

    /// <summary>A causal pattern that attends uniformly: row i is 1/(i+1) on keys 0..i.</summary>
    private static Tensor UniformCausal(long n) =>
        ones(n, n).tril() / ones(n, n).tril().sum(1, keepdim: true);

    [Fact]
    public void CachedInputsAreResidPrePerHeadAndLeaveTheLogitsExact()
    {
        foreach (var f in Fixtures)
            using (var m = Load(f))
            {
                var plain = m.Forward(Toks);
                var (logits, c) = m.RunWithCache(Toks, n => IsInput(n) || n.EndsWith("hook_resid_pre", StringComparison.Ordinal));
                using (c)
                {
                    Assert.True(plain.equal(logits!).all().item<bool>(), f + " logits");
                    Assert.Equal(5 * m.Config.NLayers, c.Keys.Count());
                    long heads = m.Config.NHeads, kv = m.Config.NKvHeads, d = m.Config.DModel;
                    for (int l = 0; l < m.Config.NLayers; l++)
                    {
                        string b = $"blocks.{l}.";
                        var resid = c[b + "hook_resid_pre"];   // [1, pos, d_model]
                        foreach (var (hook, n) in new[] { ("hook_attn_in", heads), ("hook_q_input", heads), ("hook_k_input", kv), ("hook_v_input", kv) })
                        {
                            var x = c[b + hook];
                            Assert.Equal(new long[] { 1, Toks.shape[1], n, d }, x.shape);
                            for (long h = 0; h < n; h++)
                                Assert.True(x.select(2, h).equal(resid).all().item<bool>(), $"{f} {b}{hook} head {h}");
                            Assert.Equal($"[batch, pos, {n}, {d}]", m.HookShape(b + hook));
                            Assert.Equal((int)(n * d), m.HookWidth(b + hook));
                        }
                    }
                }
            }
    }

    /// <summary>Identity hook functions on the three inputs make every head project its own copy: the logits move by
    /// rounding only. DeepSeek's latent attention refuses an edit there (caching is fine, above).</summary>
    [Fact]
    public void IdentityEditsGiveTheCleanLogits()
    {
        foreach (var f in Fixtures)
            using (var m = Load(f))
            {
                var plain = m.Forward(Toks);
                (string, Func<Tensor, Tensor?>)[] hooks = [.. Enumerable.Range(0, m.Config.NLayers)
                    .SelectMany(l => new[] { "hook_q_input", "hook_k_input", "hook_v_input" }.Select(h => ($"blocks.{l}.{h}", (Func<Tensor, Tensor?>)Same)))];
                if (f == "deepseek_v3")
                {
                    var e = Assert.Throws<SaeSharpException>(() => m.RunWithHooks(Toks, hooks));
                    Assert.Contains("hook 'blocks.0.hook_q_input'", e.Message);
                    Assert.Contains("latent", e.Message);
                    continue;
                }
                AssertAllClose(plain, m.RunWithHooks(Toks, hooks), 1e-4, f);
                if (m.Config.NKvHeads == m.Config.NHeads)
                    AssertAllClose(plain, m.RunWithHooks(Toks, ("blocks.1.hook_attn_in", Same)), 1e-4, f + " attn_in");
            }
    }

    /// <summary>Head 1's query input set to zero: its query is ln1(0)·W_Q[1] + b_Q[1] (a LayerNorm of zeros is its bias, an
    /// RMSNorm's zero), the keys are unchanged, head 1's pattern is the softmax of that query against the clean keys (uniform
    /// when the query is zero), and every other head's z is unchanged.</summary>
    [Theory]
    [InlineData("gpt2")]
    [InlineData("gpt_neox-parallel")]
    [InlineData("llama3")]
    public void ZeroingOneHeadsQueryInputChangesThatHeadOnly(string f)
    {
        using var m = Load(f);
        const int head = 1;
        string[] names = ["blocks.0.attn.hook_q", "blocks.0.attn.hook_k", "blocks.0.attn.hook_z", "blocks.0.attn.hook_pattern", "blocks.0.attn.hook_rot_k"];
        var cacheNames = names.Where(m.HookPoints.Contains).Append("blocks.0.attn.hook_rot_q").Where(m.HookPoints.Contains).ToArray();
        var (_, clean) = m.RunWithCache(Toks, cacheNames);
        var (_, edited) = m.Run(Toks, new RunOptions
        {
            CacheNames = cacheNames,
            Hooks = [("blocks.0.hook_q_input", x => { var e = x.clone(); e[.., .., head] = 0; return e; })],
        });
        using (clean)
        using (edited)
        {
            var sd = m.state_dict();
            long dh = m.Config.DHead, d = m.Config.DModel, n = Toks.shape[1];
            Tensor query = f switch
            {
                "gpt2" => matmul(sd["transformer.h.0.ln_1.bias"], sd["transformer.h.0.attn.c_attn.weight"].narrow(1, head * dh, dh))
                          + sd["transformer.h.0.attn.c_attn.bias"].narrow(0, head * dh, dh),
                // NeoX: per head, rows [q, k, v] of head_size each in the fused weight [3·d_model, d_model].
                "gpt_neox" or "gpt_neox-parallel" => matmul(sd["gpt_neox.layers.0.attention.query_key_value.weight"].narrow(0, head * 3 * dh, dh),
                          sd["gpt_neox.layers.0.input_layernorm.bias"]) + sd["gpt_neox.layers.0.attention.query_key_value.bias"].narrow(0, head * 3 * dh, dh),
                _ => zeros(dh),
            };
            var q = edited!["blocks.0.attn.hook_q"][0];   // [pos, head, d_head]
            AssertAllClose(query.expand(n, dh), q.select(1, head), 1e-5, f + " query of the zeroed head");
            AssertAllClose(clean!["blocks.0.attn.hook_k"], edited["blocks.0.attn.hook_k"], 1e-5, f + " keys");
            for (int h = 0; h < m.Config.NHeads; h++)
                if (h != head) AssertAllClose(clean["blocks.0.attn.hook_z"].select(2, h), edited["blocks.0.attn.hook_z"].select(2, h), 1e-5, $"{f} z of head {h}");
            Assert.False(clean["blocks.0.attn.hook_z"].select(2, head).allclose(edited["blocks.0.attn.hook_z"].select(2, head)), f + " z of the zeroed head unchanged");
            Tensor expected;
            if (f == "llama3") expected = UniformCausal(n);
            else
            {
                // GPT-2: the constant query against the clean keys; NeoX: its rotated query (by position) against the clean rotated keys.
                var qs = f == "gpt2" ? query.expand(n, dh) : edited["blocks.0.attn.hook_rot_q"][0].select(1, head);
                var ks = clean[f == "gpt2" ? "blocks.0.attn.hook_k" : "blocks.0.attn.hook_rot_k"][0].select(1, head);
                var scores = matmul(qs, ks.t()) / Math.Sqrt(dh);
                expected = scores.masked_fill(ones(n, n).tril().logical_not(), float.NegativeInfinity).softmax(-1);
            }
            AssertAllClose(expected, edited["blocks.0.attn.hook_pattern"][0, head], 1e-5, f + " pattern of the zeroed head");
        }
    }

    /// <summary>Key-value head 1's key input set to zero changes exactly the query heads of its group (GQA: heads 2 and 3 of
    /// 4 with 2 key-value heads; GPT-2: head 1 alone), whose keys become one vector for every position, so they attend
    /// uniformly; the other heads' patterns are unchanged.</summary>
    [Theory]
    [InlineData("gpt2")]
    [InlineData("llama3")]
    public void ZeroingOneKeyValueHeadsKeyInputChangesItsGroupOnly(string f)
    {
        using var m = Load(f);
        const int group = 1;
        long perGroup = m.Config.NHeads / m.Config.NKvHeads, n = Toks.shape[1];
        var (_, clean) = m.RunWithCache(Toks, ["blocks.0.attn.hook_pattern"]);
        var (_, edited) = m.Run(Toks, new RunOptions
        {
            CacheNames = ["blocks.0.attn.hook_pattern"],
            Hooks = [("blocks.0.hook_k_input", x => { var e = x.clone(); e[.., .., group] = 0; return e; })],
        });
        using (clean)
        using (edited)
            for (int h = 0; h < m.Config.NHeads; h++)
            {
                var before = clean!["blocks.0.attn.hook_pattern"][0, h];
                var after = edited!["blocks.0.attn.hook_pattern"][0, h];
                if (h / perGroup == group)
                {
                    AssertAllClose(UniformCausal(n), after, 1e-6, $"{f} head {h} of the group");
                    Assert.False(before.allclose(after), $"{f} head {h} unchanged");
                }
                else AssertAllClose(before, after, 1e-5, $"{f} head {h} outside the group");
            }
    }

    /// <summary>A gradient reaches a factor scaling the query input; an attn_in edit is each head's q, k and v input at once
    /// (MHA), refused under GQA and together with an ln1 edit, both errors naming the hooks.</summary>
    [Fact]
    public void EditsCarryGradientAttnInFeedsAllThreeAndConflictsAreRefused()
    {
        foreach (var f in new[] { "gpt2", "gpt_neox-sequential", "llama3" })
            using (var m = Load(f))
            {
                var factor = ones(1, requires_grad: true);
                var logits = m.Run(Toks, new RunOptions { Grad = true, Hooks = [("blocks.1.hook_q_input", x => x * factor)] }).Logits!;
                (logits * logits).sum().backward();
                Assert.True(factor.grad is { } g && g.abs().item<float>() > 0, f + " no gradient through q_input");
            }
        using (var m = Load("gpt2"))
        {
            Func<Tensor, Tensor?> half = x => { var e = x.clone(); e[.., .., 2] *= 0.5; return e; };
            var viaAttnIn = m.RunWithHooks(Toks, ("blocks.0.hook_attn_in", half));
            var viaSplit = m.RunWithHooks(Toks, ("blocks.0.hook_q_input", half), ("blocks.0.hook_k_input", half), ("blocks.0.hook_v_input", half));
            AssertAllClose(viaSplit, viaAttnIn, 1e-5, "attn_in = q, k and v inputs");
            Assert.False(viaAttnIn.allclose(m.Forward(Toks)), "attn_in edit changed nothing");
            var e = Assert.Throws<SaeSharpException>(() => m.RunWithHooks(Toks, ("blocks.0.hook_v_input", Same), ("blocks.0.ln1.hook_normalized", Same)));
            Assert.Contains("'blocks.0.hook_v_input' and 'blocks.0.ln1.hook_normalized'", e.Message);
        }
        using (var m = Load("llama3"))
        {
            var e = Assert.Throws<SaeSharpException>(() => m.RunWithHooks(Toks, ("blocks.0.hook_attn_in", Same)));
            Assert.Contains("'blocks.0.hook_attn_in'", e.Message);
            Assert.Contains("grouped-query", e.Message);
            Assert.Contains("blocks.0.hook_k_input", e.Message);
        }
    }

    /// <summary>Generation with an edited key input (key-value head 0 halved in every block): the KV cache keeps the edited
    /// keys of earlier tokens, so cached steps give the logits of recomputing the whole sequence, and the edit changes them.</summary>
    [Theory]
    [InlineData("gpt_neox-sequential")]
    [InlineData("llama3")]
    public void KvCachedGenerationWithEditedKeyInputsEqualsRecomputation(string f)
    {
        using var m = Load(f);
        Func<Tensor, Tensor?> half = x => { var e = x.clone(); e[.., .., 0] *= 0.5; return e; };
        var o = new GenerationOptions { ReturnLogits = true, Hooks = [.. Enumerable.Range(0, m.Config.NLayers).Select(l => ($"blocks.{l}.hook_k_input", half))] };
        using var cached = m.Generate(Toks, 5, o);
        using var full = m.Generate(Toks, 5, o with { UseKvCache = false });
        using var clean = m.Generate(Toks, 5, new GenerationOptions { ReturnLogits = true });
        Assert.Equal(full.Tokens.data<long>().ToArray(), cached.Tokens.data<long>().ToArray());
        AssertAllClose(full.Logits!, cached.Logits!, 1e-4, f + " step logits");
        Assert.False(clean.Logits!.allclose(cached.Logits!), f + " the edit changed nothing");
    }

    [Fact]
    public void ActNameAndResolveKnowTheInputs()
    {
        Assert.Equal("blocks.2.hook_attn_in", HookPoints.ActName("attn_in", 2));
        Assert.Equal("blocks.0.hook_q_input", HookPoints.ActName("q_input", 0));
        Assert.Equal("blocks.1.hook_k_input", HookPoints.ActName("k_input", 1));
        Assert.Equal("blocks.1.hook_v_input", HookPoints.ActName("v_input", 1));
        using var m = Load("gpt2");
        var names = m.HookNames.ToList();
        Assert.Equal(names.IndexOf("blocks.1.hook_resid_pre") + 1, names.IndexOf("blocks.1.hook_attn_in"));
        Assert.True(names.IndexOf("blocks.1.hook_v_input") < names.IndexOf("blocks.1.ln1.hook_scale"));
        Assert.Equal("blocks.1.hook_q_input", m.HookPoints.Resolve("blocks.1.hook_q_input"));
    }
}
