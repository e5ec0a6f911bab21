using System.Text.Json.Nodes;
using SaeSharp.Evaluation;
using SaeSharp.IO;
using SaeSharp.Models;
using SaeSharp.Saes;
using SaeSharp.Tests.Activations;
using SaeSharp.Tests.Models;
using SaeSharp.Tests.Tokenizers;
using static TorchSharp.torch;

namespace SaeSharp.Tests.Evaluation;

/// <summary>
/// <see cref="DownstreamEvaluator"/> against SAELens 6.18's own <c>get_downstream_reconstruction_metrics</c> /
/// <c>get_recons_loss</c> (BOS excluded, 2 batches of 3 windows) on an SAE at <c>ln_final.hook_normalized</c> of a tiny
/// GPT-2, where the rest of the model is the unembedding: tests/data/peer_downstream holds the tokens, the clean
/// activation there, W_U, b_U and the SAE, and SAELens's metrics computed from them by
/// bench/reference/peer_eval_fixture.py --downstream (written with SAESHARP_PEER_DOWNSTREAM_OUT set, see the README).
/// </summary>
public class PeerDownstreamTests : ModelTestBase
{
    private const string Hook = "ln_final.hook_normalized";
    private const long Bos = ModelActivationSourceTests.Bos;

    private static List<long[]> Windows()
    {
        var w = ModelActivationSourceTests.Windows(6, 10, seed: 11);
        w[1][4] = Bos;  // an excluded position inside a window
        return w;
    }

    private static Sae MakeSae(int d)
    {
        var cfg = new SaeConfig { DIn = d, DSae = 40 };
        cfg.Metadata.HookName = Hook;
        var sae = SaeFactory.Create(cfg);
        using (no_grad())
        {
            var g = new Generator(5);
            sae.WEnc.copy_(randn(d, 40, generator: g) * 0.4);
            sae.BEnc.copy_(randn(40, generator: g) * 0.1 - 0.1);
            sae.WDec.copy_(sae.WEnc.t() * 0.5 + randn(40, d, generator: g) * 0.05);
            sae.BDec.copy_(randn(d, generator: g) * 0.1);
        }
        return sae;
    }

    private static Tensor Normalized(HookedTransformer model, List<long[]> windows)
    {
        var (_, cache) = model.RunWithCache(Tokens([.. windows]), [Hook]);
        using (cache) return cache[Hook].clone();
    }

    [Fact]
    public void Matches_SAELens_downstream_metrics_computed_by_its_own_code()
    {
        string dir = Environment.GetEnvironmentVariable("SAESHARP_PEER_DOWNSTREAM_OUT") ?? TestPaths.Data("peer_downstream");
        bool write = Environment.GetEnvironmentVariable("SAESHARP_PEER_DOWNSTREAM_OUT") is not null;
        using var model = Gpt2();
        var windows = Windows();
        using var sae = MakeSae(model.Config.DModel);
        using var scope = NewDisposeScope();
        var normalized = Normalized(model, windows);
        if (write)
        {
            Directory.CreateDirectory(dir);
            int d = model.Config.DModel;
            var bU = model.LogitsOf(zeros(1, d));
            Npy.Save(Path.Combine(dir, "tokens.npy"), Tokens([.. windows]));
            Npy.Save(Path.Combine(dir, "normalized.npy"), normalized);
            Npy.Save(Path.Combine(dir, "w_u.npy"), model.LogitsOf(eye(d)) - bU);
            Npy.Save(Path.Combine(dir, "b_u.npy"), bU.squeeze(0));
            foreach (var (name, t) in new[] { ("w_enc", sae.WEnc), ("b_enc", sae.BEnc), ("w_dec", sae.WDec), ("b_dec", sae.BDec) })
                Npy.Save(Path.Combine(dir, name + ".npy"), t.detach());
            return;
        }
        // The model and SAE are the ones the fixture was written from (float32 sums differ by ~1e-6 between CPUs' kernels;
        // another model would differ by O(1)).
        using (var saved = Npy.Load(Path.Combine(dir, "normalized.npy"))) AssertAllClose(saved, normalized, 1e-5, "ln_final.hook_normalized");
        using (var saved = Npy.Load(Path.Combine(dir, "w_dec.npy"))) AssertAllClose(saved, sae.WDec, 0, "W_dec");

        var r = DownstreamEvaluator.Evaluate(model, [new DownstreamTarget(sae)], windows,
            new DownstreamEvalOptions { BatchSizePrompts = 3, ExcludeTokenIds = [Bos] })[0];
        var e = JsonNode.Parse(File.ReadAllText(Path.Combine(dir, "expected.json")))!;
        foreach (var (key, got) in new[]
                 {
                     ("ce_loss_without_sae", r.CeLossWithoutSae), ("ce_loss_with_sae", r.CeLossWithSae), ("ce_loss_with_ablation", r.CeLossWithAblation),
                     ("ce_loss_score", r.CeLossScore), ("kl_div_with_sae", r.KlDivWithSae), ("kl_div_with_ablation", r.KlDivWithAblation),
                     ("kl_div_score", r.KlDivScore),
                 })
        {
            double want = e[key]!.GetValue<double>();
            Assert.True(Math.Abs(want - got) <= 2e-6 + 2e-5 * Math.Abs(want), $"{key}: SAELens {want:R}, SaeSharp {got:R}");
        }
    }
}
