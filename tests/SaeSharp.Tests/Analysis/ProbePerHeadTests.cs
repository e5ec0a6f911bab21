using SaeSharp.Analysis;
using SaeSharp.LanguageModels;
using SaeSharp.Models;
using SaeSharp.Saes;
using SaeSharp.Tokenizers;
using static TorchSharp.torch;

namespace SaeSharp.Tests.Analysis;

/// <summary><c>sae probe</c> with SAELens SAEs of one head (<c>hook_head_index</c>) of a per-head hook
/// (<c>blocks.L.attn.hook_z</c>, [batch, pos, head, d_head]): each reads its head's slice, as splicing does, and SAEs of
/// different heads of one hook share one model pass.</summary>
public sealed class ProbePerHeadTests
{
    private const string Z = "blocks.1.attn.hook_z";

    /// <summary>A random ReLU SAE of d_head = 32 inputs at head <paramref name="head"/> of hook_z.</summary>
    private static Sae HeadSae(int head, int dSae, long seed)
    {
        var cfg = new SaeConfig { DIn = 32, DSae = dSae };
        cfg.Metadata.HookName = Z;
        cfg.Metadata.HookHeadIndex = head;
        var sae = SaeFactory.Create(cfg);
        var gen = new Generator((ulong)seed);
        using (no_grad())
        {
            var w = randn(32, dSae, generator: gen);
            sae.WEnc.copy_(w);
            sae.WDec.copy_(w.t());
            sae.BEnc.copy_(randn(dSae, generator: gen).mul_(TorchScalars.Of(0.1)));
        }
        return sae;
    }

    [Fact]
    public void Mean_pooled_features_of_head_saes_are_their_heads_slices_encoded_in_one_pass()
    {
        using var model = BuiltinModel.Load();
        var tok = Tokenizer.FromFolder(BuiltinModel.Folder);
        Assert.Equal(4, model.HeadsAt(Z));
        Sae[] saes = [HeadSae(1, 16, 1), HeadSae(2, 24, 2), HeadSae(1, 8, 3)];
        try
        {
            string[] texts = ["Mia saw a cat", "The dog ran to the park", "Tom and Anna sat on the big mat", "a small bird"];
            var options = new TextProbingOptions { ContextSize = 16, BatchSize = 2 };
            long passes = 0;
            List<(string, Func<Tensor, Tensor?>)> counter = [("hook_embed", t => { passes += t.shape[0]; return null; })];
            var pooled = TextProbing.PoolSparse(saes, model, counter, tok, texts, options);
            try
            {
                // Two sites of one hook (heads 1 and 2), the head-1 SAEs together; the texts ran through the model once.
                Assert.Equal(2, pooled.Count);
                Assert.Equal((Z, (int?)1), (pooled[0].Group.Hook, pooled[0].Group.Head));
                Assert.Equal([0, 2], pooled[0].Group.Saes);
                Assert.Equal((Z, (int?)2), (pooled[1].Group.Hook, pooled[1].Group.Head));
                Assert.Equal([1], pooled[1].Group.Saes);
                Assert.Equal("blocks.1.attn.hook_z head 1", pooled[0].Group.Site);
                Assert.Equal(texts.Length, passes);
                // Independent expectation: each text alone, hook_z captured, head h sliced by hand, encoded, averaged over
                // the positions that are not BOS/EOS/padding.
                for (int t = 0; t < texts.Length; t++)
                {
                    using var scope = NewDisposeScope();
                    var ids = tok.EncodeWithSpecialTokens(texts[t]).Take(16).Select(i => (long)i).ToArray();
                    var (logits, cache) = model.Run(tensor(ids).unsqueeze(0), new RunOptions { CacheNames = [Z] });
                    logits?.Dispose();
                    using (cache!)
                    {
                        var z = cache![Z];
                        Assert.Equal([1L, ids.Length, 4, 32], z.shape);
                        int?[] drop = [tok.BosTokenId, tok.EosTokenId, tok.PadTokenId];
                        var keep = ids.Select(i => !drop.Contains((int)i)).ToArray();
                        Tensor Mean(Tensor x) => x[0].index_select(0, tensor(Enumerable.Range(0, ids.Length).Where(p => keep[p]).Select(p => (long)p).ToArray())).mean([0]);
                        foreach (var p in pooled)
                        {
                            var slice = z[.., .., p.Group.Head!.Value, ..];    // hook_z[:, :, h, :]
                            Assert.True(allclose(Mean(slice), p.Acts[t], 1e-5, 1e-5));
                            for (int j = 0; j < p.Group.Saes.Length; j++)
                            {
                                var expected = Mean(saes[p.Group.Saes[j]].Encode(slice));
                                var actual = p.Features[j].ToDenseFloat32()[t];
                                Assert.True(allclose(expected, actual, 1e-5, 1e-5), $"SAE {p.Group.Saes[j]}, text {t}");
                                Assert.True(actual.count_nonzero().item<long>() > 0);
                            }
                        }
                    }
                }
            }
            finally
            {
                foreach (var p in pooled) p.Dispose();
            }
        }
        finally
        {
            foreach (var s in saes) s.Dispose();
        }
    }

    [Fact]
    public void A_head_outside_the_hook_is_refused_naming_the_sae()
    {
        using var model = BuiltinModel.Load();
        using var sae = HeadSae(7, 8, 1);
        var e = Assert.Throws<SaeSharpException>(() => ProbeSaes.HookGroups(model, [sae], ["far.sae"]));
        Assert.Contains("--sae far.sae", e.Message);
        Assert.Contains("head 7", e.Message);
        Assert.Contains("4 heads (0..3)", e.Message);
    }
}
