using SaeSharp.Models;
using static TorchSharp.torch;

namespace SaeSharp.Tests.Models;

public class ForwardTests : ModelTestBase
{
    [Fact]
    public void ChangingALaterTokenLeavesEarlierLogitsUnchanged()
    {
        foreach (var m in AllKinds())
            using (m)
            {
                var a = m.Forward(Tokens([5, 9, 2, 7, 1, 3]));
                var b = m.Forward(Tokens([5, 9, 2, 40, 1, 3]));
                Assert.True(a.narrow(1, 0, 3).equal(b.narrow(1, 0, 3)).all().item<bool>(), m.Config.Architecture);
                Assert.False(a.narrow(1, 3, 1).allclose(b.narrow(1, 3, 1)), m.Config.Architecture);
            }
    }

    [Fact]
    public void BatchRowsAreIndependent()
    {
        foreach (var m in AllKinds())
            using (m)
            {
                var both = m.Forward(Tokens([5, 9, 2, 7], [1, 1, 30, 4]));
                AssertAllClose(m.Forward(Tokens([1, 1, 30, 4]))[0], both[1], 1e-5, m.Config.Architecture);
            }
    }

    [Fact]
    public void LeftAndRightPaddingGiveUnpaddedActivationsOnRealTokens()
    {
        const long pad = 0;
        long[] longRow = [5, 9, 2, 7, 11, 3], shortRow = [8, 13, 21];
        foreach (var m in AllKinds())
            using (m)
            {
                var (refLogits, refCache) = m.RunWithCache(Tokens(shortRow), _ => true);
                var (refLong, refLongCache) = m.RunWithCache(Tokens(longRow), _ => true);
                using (refCache)
                using (refLongCache)
                {
                    foreach (bool left in new[] { true, false })
                    {
                        long[] padded = left ? [pad, pad, pad, .. shortRow] : [.. shortRow, pad, pad, pad];
                        var mask = tensor(left ? new long[] { 1, 1, 1, 1, 1, 1, 0, 0, 0, 1, 1, 1 } : new long[] { 1, 1, 1, 1, 1, 1, 1, 1, 1, 0, 0, 0 }).view(2, 6);
                        var (logits, cache) = m.RunWithCache(Tokens(longRow, padded), _ => true, attentionMask: mask);
                        using (cache)
                        {
                            int off = left ? 3 : 0;
                            string what = $"{m.Config.Architecture} {(left ? "left" : "right")}";
                            AssertAllClose(refLogits![0], logits!.select(0, 1).narrow(0, off, 3), 1e-5, what + " logits");
                            AssertAllClose(refLong![0], logits![0], 1e-5, what + " unpadded row");
                            foreach (var name in m.HookNames)
                            {
                                var actual = cache[name].select(0, 1);
                                var expected = refCache[name][0];
                                if (name.EndsWith("hook_attn_scores", StringComparison.Ordinal))
                                {
                                    // [head, q, k]: real queries over real keys as unpadded; padded keys masked.
                                    AssertAllClose(expected, actual.narrow(1, off, 3).narrow(2, off, 3), 1e-5, what + " " + name);
                                    Assert.Equal(float.MinValue, actual.narrow(1, off, 3).narrow(2, left ? 0 : 3, 3).max().item<float>());
                                }
                                else if (name.EndsWith("hook_pattern", StringComparison.Ordinal))
                                {
                                    // [head, q, k]: real queries over real keys; padded keys get no weight.
                                    AssertAllClose(expected, actual.narrow(1, off, 3).narrow(2, off, 3), 1e-5, what + " " + name);
                                    Assert.Equal(0, actual.narrow(1, off, 3).sum().item<float>() - actual.narrow(1, off, 3).narrow(2, off, 3).sum().item<float>(), 4);
                                }
                                else
                                    AssertAllClose(expected, actual.narrow(0, off, 3), 1e-5, what + " " + name);
                            }
                        }
                    }
                }
            }
    }

    [Fact]
    public void StopAtLayerGivesTheFullRunsActivationsAndNoLogits()
    {
        foreach (var m in AllKinds())
            using (m)
            {
                var toks = Tokens([3, 1, 4, 1, 5, 9, 2, 6]);
                var (full, fullCache) = m.RunWithCache(toks);
                var (none, partial) = m.RunWithCache(toks, stopAtLayer: 1);
                using (fullCache)
                using (partial)
                {
                    Assert.NotNull(full);
                    Assert.Null(none);
                    Assert.NotEmpty(partial.Keys);
                    Assert.All(partial.Keys, k => Assert.True(m.HookPoints.LayerOf(k) < 1, k));
                    Assert.Contains("blocks.0.hook_resid_post", partial.Keys);
                    Assert.DoesNotContain("blocks.1.hook_resid_pre", partial.Keys);
                    Assert.DoesNotContain("ln_final.hook_normalized", partial.Keys);
                    foreach (var (k, t) in partial) Assert.True(fullCache[k].equal(t).all().item<bool>(), k);
                }
                // Negative stop counts from the end (TransformerLens): -1 on a 2-layer model = 1.
                var (_, neg) = m.RunWithCache(toks, ["blocks.0.hook_mlp_out"], stopAtLayer: -1);
                using (neg) Assert.Single(neg.Keys);
                var e = Assert.Throws<SaeSharpException>(() => m.RunWithCache(toks, ["blocks.1.hook_resid_pre"], stopAtLayer: 1));
                Assert.Contains("stopAtLayer", e.Message);
                Assert.Throws<SaeSharpException>(() => m.RunWithCache(toks, stopAtLayer: 3));
                Assert.Equal(1, m.HookPoints.StopAtLayerFor(["blocks.0.hook_resid_post", "hook_embed"]));
                Assert.Null(m.HookPoints.StopAtLayerFor(["ln_final.hook_normalized"]));
            }
    }

    [Fact]
    public void KvCacheGenerationEqualsFullRecomputation()
    {
        foreach (var m in AllKinds())
            using (m)
            {
                var prompt = Tokens([7, 3, 3, 12], [2, 48, 6, 1]);
                using var cached = m.Generate(prompt, 6, new GenerationOptions { ReturnLogits = true });
                using var recomputed = m.Generate(prompt, 6, new GenerationOptions { ReturnLogits = true, UseKvCache = false });
                Assert.Equal(new long[] { 2, 10 }, cached.Tokens.shape);
                Assert.True(cached.Tokens.equal(recomputed.Tokens).all().item<bool>());
                AssertAllClose(recomputed.Logits!, cached.Logits!, 1e-5, m.Config.Architecture);
                // The step logits are the logits a plain forward gives on the final sequence, and greedy picks their argmax.
                var fwd = m.Forward(cached.Tokens).narrow(1, 3, 6);
                AssertAllClose(fwd, cached.Logits!, 1e-5, m.Config.Architecture + " forward");
                Assert.True(fwd.argmax(-1).equal(cached.Tokens.narrow(1, 4, 6)).all().item<bool>());
            }
    }

    [Fact]
    public void LeftPaddedPromptsGenerateAsUnpadded()
    {
        foreach (var m in AllKinds())
            using (m)
            {
                using var alone = m.Generate(Tokens([9, 4, 17]), 5, new GenerationOptions { ReturnLogits = true });
                var mask = tensor(new long[] { 1, 1, 1, 1, 1, 0, 0, 1, 1, 1 }).view(2, 5);
                using var batch = m.Generate(Tokens([1, 2, 3, 4, 5], [0, 0, 9, 4, 17]), 5, new GenerationOptions { ReturnLogits = true, AttentionMask = mask });
                Assert.True(alone.Tokens[0].narrow(0, 3, 5).equal(batch.Tokens[1].narrow(0, 5, 5)).all().item<bool>(), m.Config.Architecture);
                AssertAllClose(alone.Logits![0], batch.Logits![1], 1e-5, m.Config.Architecture);
            }
    }

    [Fact]
    public void SamplingIsSeededAndTopK1IsGreedy()
    {
        using var m = NeoX(parallel: true);
        var prompt = Tokens([1, 2, 3]);
        using var greedy = m.Generate(prompt, 8);
        using var k1 = m.Generate(prompt, 8, new GenerationOptions { Temperature = 1.5, TopK = 1, Seed = 3 });
        Assert.True(greedy.Tokens.equal(k1.Tokens).all().item<bool>());
        using var p0 = m.Generate(prompt, 8, new GenerationOptions { Temperature = 1.0, TopP = 1e-6, Seed = 3 });
        Assert.True(greedy.Tokens.equal(p0.Tokens).all().item<bool>());
        var opts = new GenerationOptions { Temperature = 2.0, TopK = 20, TopP = 0.95, Seed = 42 };
        using var s1 = m.Generate(prompt, 8, opts);
        using var s2 = m.Generate(prompt, 8, opts);
        Assert.True(s1.Tokens.equal(s2.Tokens).all().item<bool>());
        using var s3 = m.Generate(prompt, 8, opts with { Seed = 43 });
        using var s4 = m.Generate(prompt, 8, opts with { Seed = 44 });
        Assert.False(s1.Tokens.equal(s3.Tokens).all().item<bool>() && s1.Tokens.equal(s4.Tokens).all().item<bool>());
    }

    [Fact]
    public void TopKSamplesOnlyAmongTheKMostLikely()
    {
        var logits = tensor(new float[] { 0f, 5f, 1f, 4.9f, -3f, 4.8f }).unsqueeze(0).expand(2000, 6).contiguous();
        var ids = Generation.Sample(logits, new GenerationOptions { Temperature = 1, TopK = 3, Seed = 1 }, new Generator(1));
        var seen = ids.data<long>().ToArray().Distinct().OrderBy(x => x).ToArray();
        Assert.Equal(new long[] { 1, 3, 5 }, seen);
        // top_p 0.5 on probabilities (0.5, 0.3, 0.2): only the first reaches it.
        var p = tensor(new float[] { MathF.Log(0.3f), MathF.Log(0.5f), MathF.Log(0.2f) }).unsqueeze(0).expand(500, 3).contiguous();
        var pid = Generation.Sample(p, new GenerationOptions { Temperature = 1, TopP = 0.5 }, new Generator(2));
        Assert.All(pid.data<long>().ToArray(), v => Assert.Equal(1L, v));
        var pid2 = Generation.Sample(p, new GenerationOptions { Temperature = 1, TopP = 0.7 }, new Generator(2));
        Assert.Equal(new long[] { 0, 1 }, pid2.data<long>().ToArray().Distinct().OrderBy(x => x).ToArray());
    }

    [Fact]
    public void EosStopsRowsAndFillsThem()
    {
        using var m = Gpt2();
        using var free = m.Generate(Tokens([4, 5, 6]), 6);
        long eos = free.Tokens[0, 4].item<long>(); // the second generated token
        using var stopped = m.Generate(Tokens([4, 5, 6]), 6, new GenerationOptions { EosTokenId = eos });
        var t = stopped.Tokens[0].data<long>().ToArray();
        int first = Array.IndexOf(t, eos, 3);
        Assert.True(first >= 3 && first <= 4);
        Assert.Equal(first + 1, t.Length); // a single row stops right after its EOS
    }
}
