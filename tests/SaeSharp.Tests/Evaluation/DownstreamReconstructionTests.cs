using SaeSharp.Evaluation;
using SaeSharp.Saes;
using SaeSharp.Tests.Activations;
using SaeSharp.Tests.Models;
using static TorchSharp.torch;

namespace SaeSharp.Tests.Evaluation;

/// <summary>The downstream evaluator's reconstruction metrics over the counted positions, against a hand computation.</summary>
public class DownstreamReconstructionTests : ModelTestBase
{
    [Fact]
    public void Reconstruction_mse_and_l0_are_over_the_positions_not_excluded_only()
    {
        // BOS (at position 0 of every window and sometimes inside) is excluded: MSE = mean over the other positions and
        // the 16 dims of (x − x̂)², L0 = mean number of f > 0 there, with f = ReLU((x − b_dec)·W_enc + b_enc),
        // x̂ = f·W_dec + b_dec written out here on the clean run's activations.
        using var model = Gpt2();
        const string hook = "blocks.1.hook_resid_pre";
        const long bos = ModelActivationSourceTests.Bos;
        var windows = ModelActivationSourceTests.Windows(4, 8);
        var cfg = new SaeConfig { DIn = 16, DSae = 24, ApplyBDecToInput = true };
        cfg.Metadata.HookName = hook;
        using var sae = SaeFactory.Create(cfg);
        using (no_grad())
        {
            var g = new Generator(3);
            sae.WEnc.copy_(randn(16, 24, generator: g) * 0.3);
            sae.BEnc.copy_(randn(24, generator: g) * 0.1);
            sae.WDec.copy_(randn(24, 16, generator: g) * 0.3);
            sae.BDec.copy_(randn(16, generator: g) * 0.1);
        }
        var r = DownstreamEvaluator.Evaluate(model, [new DownstreamTarget(sae)], windows,
            new DownstreamEvalOptions { BatchSizePrompts = 2, ExcludeTokenIds = [bos] })[0];

        var (_, cache) = model.RunWithCache(Tokens([.. windows]), [hook]);
        Tensor x;
        using (cache) x = cache![hook].to(ScalarType.Float64).clone();
        var wEnc = sae.WEnc.detach().to(ScalarType.Float64);
        var bEnc = sae.BEnc.detach().to(ScalarType.Float64);
        var wDec = sae.WDec.detach().to(ScalarType.Float64);
        var bDec = sae.BDec.detach().to(ScalarType.Float64);
        var f = (matmul(x - bDec, wEnc) + bEnc).clamp_min(0);
        var xHat = matmul(f, wDec) + bDec;
        double sse = 0, l0 = 0;
        long n = 0;
        for (int b = 0; b < windows.Count; b++)
            for (int p = 0; p < windows[b].Length; p++)
            {
                if (windows[b][p] == bos) continue;
                sse += (x[b, p] - xHat[b, p]).pow(2).sum().item<double>();
                l0 += f[b, p].gt(0).sum().item<long>();
                n++;
            }
        Assert.True(n < windows.Count * windows[0].Length, "some positions are excluded");
        double mse = sse / (n * 16);
        Assert.True(Math.Abs(mse - r.Mse) <= 1e-5 * mse, $"mse {r.Mse}, expected {mse}");
        Assert.Equal(l0 / n, r.L0, 9);
    }
}
