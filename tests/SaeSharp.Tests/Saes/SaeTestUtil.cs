using SaeSharp.Saes;
using static TorchSharp.torch;

namespace SaeSharp.Tests.Saes;

internal static class SaeTestUtil
{
    /// <summary>An SAE of the architecture with random decoder/encoder (base init) and random biases.</summary>
    public static Sae Make(SaeConfig cfg, int seed = 1)
    {
        var sae = SaeFactory.Create(cfg);
        var g = new Generator((ulong)seed);
        sae.InitializeWeights(g);
        using var _ = no_grad();
        foreach (var (name, t) in sae.named_parameters())
        {
            if (name is "b_dec" or "b_enc" or "b_gate" or "b_mag" or "r_mag" or "W_skip")   // W_skip starts at zero: give the skip term a value
                t.copy_(randn(t.shape, generator: g) * 0.1);
        }
        return sae;
    }

    /// <summary>The identity pair: a ReLU SAE with d_sae = 2·d_in, W_enc = [I, −I], W_dec = [I; −I] and zero biases, so
    /// that ReLU(x) − ReLU(−x) = x exactly. <paramref name="cfg"/> gives d_in, the metadata and whether b_dec is applied.</summary>
    public static Sae Identity(SaeConfig cfg)
    {
        cfg.DSae = 2 * cfg.DIn;
        var sae = SaeFactory.Create(cfg);
        using var _ = no_grad();
        using var id = eye(cfg.DIn);
        sae.WEnc.copy_(cat([id, -id], 1));
        sae.WDec.copy_(cat([id, -id], 0));
        sae.BEnc.zero_();
        sae.BDec.zero_();
        return sae;
    }

    public static float[] F(Tensor t) => t.detach().contiguous().data<float>().ToArray();

    public static void AssertClose(Tensor expected, Tensor actual, double rtol = 1e-4, double atol = 1e-5, string what = "")
    {
        Assert.Equal(expected.shape, actual.shape);
        var diff = (expected - actual).abs().max().item<float>();
        Assert.True(expected.allclose(actual, rtol, atol), $"{what}: max |diff| = {diff}");
    }

    /// <summary>Copies of the SAE's parameters as fresh leaves requiring grad (for dense reference computations).</summary>
    public static Dictionary<string, Tensor> Leaves(Sae sae) =>
        sae.named_parameters().ToDictionary(p => p.name, p => p.parameter.detach().clone().requires_grad_(true));
}
