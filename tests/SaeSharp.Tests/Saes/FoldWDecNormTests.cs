using SaeSharp.Saes;
using TorchSharp;
using static TorchSharp.torch;

namespace SaeSharp.Tests.Saes;

/// <summary><c>Sae.FoldWDecNorm</c> (SAELens's <c>fold_W_dec_norm</c>): decoder rows become unit norm, reconstructions do not
/// change, and each feature activation is multiplied by its former decoder norm.</summary>
public class FoldWDecNormTests
{
    private static Sae RandomSae(string arch, int dIn, int dSae, int? dOut, ulong seed)
    {
        var sae = SaeFactory.Create(new SaeConfig { Architecture = arch, DIn = dIn, DSae = dSae, DOut = dOut, ApplyBDecToInput = dOut is null, K = arch.Contains("topk") ? 2 : null });
        var g = new Generator(seed);
        using var _ = no_grad();
        foreach (var (name, p) in sae.named_parameters())
        {
            p.copy_(name switch
            {
                // decoder rows of norms spread over 0.2..3, so the fold is not close to the identity
                "W_dec" => randn(p.shape, generator: g) * (rand(p.shape[0], 1, generator: g) * 2 + 0.2) / Math.Sqrt(p.shape[1]),
                "threshold" => rand(p.shape, generator: g) * 0.3,
                _ => randn(p.shape, generator: g) * 0.5,
            });
        }
        return sae;
    }

    [Theory]
    [InlineData(SaeArchitectures.Standard, null)]
    [InlineData(SaeArchitectures.Standard, 5)]     // a transcoder: W_dec [d_sae, d_out]
    [InlineData(SaeArchitectures.JumpReLU, null)]
    [InlineData(SaeArchitectures.Gated, null)]
    public void ReconstructionIsUnchangedAndActivationsScaleByTheDecoderNorms(string arch, int? dOut)
    {
        using var sae = RandomSae(arch, 6, 12, dOut, seed: 3);
        using var scope = NewDisposeScope();
        var x = randn(40, 6, generator: new Generator(4));
        var norms = sae.WDec.detach().pow(2).sum(1).sqrt().clone();          // ‖W_dec[j]‖ before the fold
        var thresholdBefore = sae is JumpReluSae jr ? jr.Threshold.detach().clone() : null;
        var (y, f) = sae.Run(x);
        Assert.True(f.gt(0).any().item<bool>() && f.eq(0).any().item<bool>(), "some latents fire, some do not");

        sae.FoldWDecNorm();

        var (y2, f2) = sae.Run(x);
        Assert.True(y2.allclose(y, rtol: 1e-5, atol: 1e-5), $"reconstruction moved by {(y2 - y).abs().max().item<float>()}");
        Assert.True(f2.allclose(f * norms, rtol: 1e-5, atol: 1e-6), $"activations off by {(f2 - f * norms).abs().max().item<float>()}");
        Assert.True((sae.WDec.detach().pow(2).sum(1).sqrt() - 1).abs().max().item<float>() < 1e-6, "decoder rows are unit norm");
        if (thresholdBefore is not null)
            Assert.True(((JumpReluSae)sae).Threshold.detach().allclose(thresholdBefore * norms, rtol: 1e-6), "threshold × norm");
    }

    [Theory]
    [InlineData(SaeArchitectures.TopK, "changes which latents are selected")]
    [InlineData(SaeArchitectures.BatchTopK, "ToInferenceSae()")]
    public void TopKFamilyRefusesAsSaeLensDoes(string arch, string expected)
    {
        using var sae = RandomSae(arch, 6, 12, null, seed: 5);
        var e = Assert.Throws<SaeSharpException>(sae.FoldWDecNorm);
        Assert.Contains(expected, e.Message);
    }

    [Fact]
    public void ABatchTopKSaesInferenceFormFolds()
    {
        using var sae = RandomSae(SaeArchitectures.BatchTopK, 6, 12, null, seed: 6);
        using var scope = NewDisposeScope();
        var inference = sae.ToInferenceSae();
        var x = randn(40, 6, generator: new Generator(7));
        var norms = inference.WDec.detach().pow(2).sum(1).sqrt().clone();
        var (y, f) = inference.Run(x);
        inference.FoldWDecNorm();
        var (y2, f2) = inference.Run(x);
        Assert.True(y2.allclose(y, rtol: 1e-5, atol: 1e-5));
        Assert.True(f2.allclose(f * norms, rtol: 1e-5, atol: 1e-6));
        if (!ReferenceEquals(inference, sae)) inference.Dispose();
    }
}
