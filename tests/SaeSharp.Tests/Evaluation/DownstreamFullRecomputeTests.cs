using SaeSharp.Evaluation;
using SaeSharp.Kernels;
using SaeSharp.Tests.Kernels;
using SaeSharp.Models;
using SaeSharp.Saes;
using SaeSharp.Tests.Models;
using TorchSharp;
using static TorchSharp.torch;

namespace SaeSharp.Tests.Evaluation;

/// <summary>
/// The evaluator (clean pass shared, variant runs starting at the SAE's block, CE and KL from chunked logits) against a
/// reference written here: every variant is a full model run with hooks, CE and KL from the whole float64 logits.
/// </summary>
[Collection(KernelPathCollection.Name)]
public class DownstreamFullRecomputeTests : ModelTestBase
{
    private static Sae RandomSae(string hook, int d, int seed)
    {
        var cfg = new SaeConfig { DIn = d, DSae = 3 * d };
        cfg.Metadata.HookName = hook;
        var sae = SaeFactory.Create(cfg);
        using (no_grad())
        {
            var g = new Generator((ulong)seed);
            sae.WEnc.copy_(randn(d, 3 * d, generator: g) * 0.3);
            sae.BEnc.copy_(randn(3 * d, generator: g) * 0.1);
            sae.WDec.copy_(randn(3 * d, d, generator: g) * 0.3);
            sae.BDec.copy_(randn(d, generator: g) * 0.1);
        }
        return sae;
    }

    private static List<long[]> Windows(int count, int ctx, long vocab, long bos, int seed)
    {
        var r = new Random(seed);
        return Enumerable.Range(0, count).Select(_ =>
        {
            var w = Enumerable.Range(0, ctx).Select(_ => (long)r.Next(0, (int)vocab)).ToArray();
            w[0] = bos;
            return w;
        }).ToList();
    }

    /// <summary>Sums of CE over predicting kept positions and KL(clean ‖ variant) over kept positions, in float64.</summary>
    private static (double Ce, double Kl) Reference(Tensor cleanLogits, Tensor logits, Tensor tokens, Tensor keep)
    {
        var lc = cleanLogits.to(ScalarType.Float64).log_softmax(-1);
        var lv = logits.to(ScalarType.Float64).log_softmax(-1);
        long s = tokens.shape[1];
        var next = tokens.narrow(1, 1, s - 1).unsqueeze(-1);
        var ce = -lv.narrow(1, 0, s - 1).gather(-1, next).squeeze(-1);
        var kl = (lc.exp() * (lc - lv)).sum(-1);
        var k = keep.to(ScalarType.Float64);
        return ((ce * k.narrow(1, 0, s - 1)).sum().item<double>(), (kl * k).sum().item<double>());
    }

    private static Tensor Where(Tensor keep, Tensor a, Tensor x) =>
        torch.where(keep.view(keep.shape.Concat(Enumerable.Repeat(1L, (int)x.dim() - 2)).ToArray()), a, x);

    private void Check(HookedTransformer model, string[] hooks, int seed)
    {
        long vocab = model.Config.DVocab, bos = 1;
        int d = model.Config.DModel;
        var windows = Windows(5, 9, vocab, bos, seed);
        var saes = hooks.Select((h, i) => RandomSae(h, d, seed + i)).ToList();
        // A model hook before every SAE's block and one on the residual stream a spliced run starts from: each must act once.
        var shift = full(d, 0.25f);
        var modelHooks = new List<(string, Func<Tensor, Tensor?>)>
        {
            ("blocks.0.hook_resid_post", x => x + shift),
            ("blocks.1.hook_resid_pre", x => x * 1.5),
        };
        var o = new DownstreamEvalOptions
        {
            BatchSizePrompts = 2, ExcludeTokenIds = [bos], ModelHooks = modelHooks, LogitChunkPositions = 7,
        };
        var got = DownstreamEvaluator.Evaluate(model, saes.Select(s => new DownstreamTarget(s)).ToList(), windows, o);

        // Reference: per batch of 2 windows, full runs with every hook.
        var sums = new double[hooks.Length, 5, 2];        // [sae, clean/sae/zero/mean/error, ce/kl]
        double ceCount = 0, klCount = 0;
        for (int w0 = 0; w0 < windows.Count; w0 += 2)
        {
            using var scope = NewDisposeScope();
            var batch = windows.Skip(w0).Take(2).ToArray();
            var tokens = Tokens(batch);
            var keep = tokens.ne(bos);
            ceCount += keep.narrow(1, 0, tokens.shape[1] - 1).sum().item<long>();
            klCount += keep.sum().item<long>();
            var cleanLogits = model.RunWithHooks(tokens, [.. modelHooks]);
            var (_, cache) = model.Run(tokens, new RunOptions { Hooks = modelHooks, CacheNames = hooks });
            for (int i = 0; i < hooks.Length; i++)
            {
                var act = cache![hooks[i]];
                var rows = act.reshape(-1, d);
                var recon = saes[i].forward(rows).view(act.shape);
                var k = keep.to(act.dtype).unsqueeze(-1);
                var mean = (act * k).sum([0, 1]) / k.sum();
                var variants = new Func<Tensor, Tensor>?[]
                {
                    // Ablations replace every position, the excluded BOS too (SAELens's zero-ablation hook); the SAE only counted ones.
                    null, x => Where(keep, recon, x), x => zeros_like(x), x => mean.expand_as(x),
                    x => Where(keep, recon + (act - recon), x),
                };
                for (int v = 0; v < variants.Length; v++)
                {
                    var logits = variants[v] is { } f ? model.RunWithHooks(tokens, [.. modelHooks, (hooks[i], x => f(x))]) : cleanLogits;
                    var (ce, kl) = Reference(cleanLogits, logits, tokens, keep);
                    sums[i, v, 0] += ce;
                    sums[i, v, 1] += kl;
                }
            }
            cache!.Dispose();
        }

        for (int i = 0; i < hooks.Length; i++)
        {
            var r = got[i];
            var expectCe = new[] { r.CeLossWithoutSae, r.CeLossWithSae, r.CeLossWithAblation, r.CeLossWithMeanAblation, r.CeLossWithErrorTerm };
            var expectKl = new[] { 0, r.KlDivWithSae, r.KlDivWithAblation, r.KlDivWithMeanAblation, r.KlDivWithErrorTerm };
            for (int v = 0; v < 5; v++)
            {
                double ce = sums[i, v, 0] / ceCount, kl = sums[i, v, 1] / klCount;
                Assert.True(Math.Abs(ce - expectCe[v]) <= 1e-5 * Math.Max(1, Math.Abs(ce)), $"{model.Config.Architecture} {hooks[i]} variant {v}: CE {expectCe[v]} vs full recompute {ce}");
                Assert.True(Math.Abs(kl - expectKl[v]) <= 2e-6 + 1e-5 * kl, $"{model.Config.Architecture} {hooks[i]} variant {v}: KL {expectKl[v]} vs full recompute {kl}");
            }
            Assert.True(r.KlDivWithSae > 1e-4, "a random SAE should change the outputs");
            Assert.Equal((long)klCount, r.Tokens);
            Assert.Equal((long)ceCount, r.CeTokens);
        }
        foreach (var s in saes) s.Dispose();
    }

    [Theory]
    [InlineData(false)]
    [InlineData(true)]
    public void Gpt2_equals_full_recompute(bool torchOps)
    {
        using var model = Gpt2(nLayer: 3);
        try
        {
            if (torchOps) CpuKernels.Path = KernelPath.Torch;    // the row kernels' torch fallback (non-CPU devices)
            Check(model, ["blocks.1.hook_resid_pre", "blocks.2.hook_mlp_out", "blocks.0.hook_attn_out", "blocks.2.hook_resid_post"], 11);
        }
        finally { CpuKernels.ResetPath(); }
    }

    [Fact]
    public void NeoX_equals_full_recompute()
    {
        using var model = NeoX(parallel: true);
        Check(model, ["blocks.1.hook_attn_out", "blocks.1.hook_resid_post"], 21);
    }

    [Fact]
    public void Llama_and_gemma2_equal_full_recompute()
    {
        using (var llama = ModelLoader.FromPretrained(TinyDecoders.Write(Sub("llama"), LlamaFamilyTests.Spec("llama-gqa"))))
            Check(llama, ["blocks.1.hook_resid_pre", "blocks.1.hook_mlp_out"], 31);
        // Gemma 2: a final logit soft cap in the chunked unembedding, and ln_final's layer (n_layers) as a site.
        using var gemma = ModelLoader.FromPretrained(TinyDecoders.Write(Sub("gemma"), LlamaFamilyTests.Spec("gemma2")));
        Check(gemma, ["ln_final.hook_normalized", "blocks.1.hook_resid_pre"], 41);
    }
}
