using System.Text.Json.Nodes;
using SaeSharp.Evaluation;
using SaeSharp.Interop;
using SaeSharp.IO;
using SaeSharp.Saes;
using SaeSharp.Tests.Cli;
using static TorchSharp.torch;

namespace SaeSharp.Tests.Evaluation;

/// <summary>
/// The model-diffing numbers of a crosscoder's decoder (<see cref="CrossCoderDecoderNorms"/>) against values worked out by
/// hand: relative norm n_j / Σ n, Minder et al.'s Δnorm ½((n_j − m)/max(n_j, m) + 1), the slots' cosine, the bands.
/// </summary>
public sealed class CrossCoderDecoderNormsTests : TempDirTestBase
{
    /// <summary>Two slots, d = 2, six latents whose decoder rows (slot 0; slot 1) are:
    /// 0: (3,4); (0,0) · 1: (1,0); (0,2) · 2: (1,1); (1,1) · 3: (0.3,0.4); (0,−6) · 4: zero · 5: (1,0); (−1,0).</summary>
    private static CrossCoder HandMade()
    {
        var cc = new CrossCoder(new CrossCoderConfig { ActivationDim = 2, DictSize = 6, NumLayers = 2 });
        float[] w =
        [
            3, 4, 1, 0, 1, 1, 0.3f, 0.4f, 0, 0, 1, 0,
            0, 0, 0, 2, 1, 1, 0, -6, 0, 0, -1, 0,
        ];
        using (no_grad()) cc.Decoder.Weight.copy_(tensor(w).view(2, 6, 2));
        return cc;
    }

    [Fact]
    public void RelativeNormDeltaNormCosineAndBandsAreTheHandComputedValues()
    {
        using var cc = HandMade();
        var n = CrossCoderDecoderNorms.Of(cc);
        // Slot 1 (the "chat" slot): n1 / (n0 + n1).
        double[] rel1 = [0, 2.0 / 3, 0.5, 6 / 6.5, double.NaN, 0.5];
        // Δnorm: 0: ½(−5/5 + 1) = 0; 1: ½((2 − 1)/2 + 1) = 0.75; 2: ½(0 + 1); 3: ½((6 − 0.5)/6 + 1); 5: ½.
        double[] delta1 = [0, 0.75, 0.5, 0.5 * (5.5 / 6 + 1), double.NaN, 0.5];
        double[] delta0 = [1, 0.25, 0.5, 0.5 * (-5.5 / 6 + 1), double.NaN, 0.5];
        for (int i = 0; i < 6; i++)
        {
            // float32 weights (0.3 and 0.4 are not exact): 7 digits.
            Assert.Equal(rel1[i], n.RelativeNorm[1][i], 7);
            Assert.Equal(delta1[i], n.DeltaNorm[1][i], 7);
            Assert.Equal(delta0[i], n.DeltaNorm[0][i], 7);
            if (!double.IsNaN(rel1[i])) Assert.Equal(1, n.RelativeNorm[0][i] + n.RelativeNorm[1][i], 12);
        }
        // cos: 0 and 1 orthogonal or zero; 2: 1; 3: (0·0.3 − 6·0.4)/(0.5·6) = −0.8; 4: zero rows; 5: −1.
        double[] cos = [0, 0, 1, -0.8, 0, -1];
        for (int i = 0; i < 6; i++) Assert.Equal(cos[i], n.Cosine![i], 6);
        Assert.Equal(new CrossCoderSlotBands(1, Absent: 1, Shared: 2, Specific: 1, Other: 1), n.Bands[1]);
        Assert.Equal(new CrossCoderSlotBands(0, Absent: 1, Shared: 2, Specific: 1, Other: 1), n.Bands[0]);
        Assert.Equal(1, n.ZeroDecoder);
        // The histogram of slot 1 in 10 bins: 0 → bin 0, 2/3 → bin 6, ½ twice → bin 5, 0.923 → bin 9.
        Assert.Equal([1L, 0, 0, 0, 0, 2, 1, 0, 0, 1], n.RelativeNormHistogram(1, 10));
    }

    [Fact]
    public void WithThreeSlotsTheOtherSlotsNormsAreSummedAndNoCosineIsGiven()
    {
        using var cc = new CrossCoder(new CrossCoderConfig { ActivationDim = 1, DictSize = 1, NumLayers = 3 });
        using (no_grad()) cc.Decoder.Weight.copy_(tensor(new float[] { 1, -1, 2 }).view(3, 1, 1));
        var n = CrossCoderDecoderNorms.Of(cc);
        Assert.Null(n.Cosine);
        // Norms 1, 1, 2 (sum 4): slot 2 relative ½, Δ ½((2 − 2)/2 + 1) = ½; slot 0 relative ¼, Δ ½((1 − 3)/3 + 1) = 1/6.
        Assert.Equal(0.5, n.RelativeNorm[2][0], 12);
        Assert.Equal(0.5, n.DeltaNorm[2][0], 12);
        Assert.Equal(0.25, n.RelativeNorm[0][0], 12);
        Assert.Equal(1.0 / 6, n.DeltaNorm[0][0], 12);
        // Δnorm from the relative norm at the band edges: r = 1/6, 4/9, 5/9, 5/6 ↔ 0.1, 0.4, 0.6, 0.9.
        Assert.Equal(0.1, CrossCoderDecoderNorms.DeltaOfRelative(1.0 / 6), 12);
        Assert.Equal(0.4, CrossCoderDecoderNorms.DeltaOfRelative(4.0 / 9), 12);
        Assert.Equal(0.6, CrossCoderDecoderNorms.DeltaOfRelative(5.0 / 9), 12);
        Assert.Equal(0.9, CrossCoderDecoderNorms.DeltaOfRelative(5.0 / 6), 12);
        Assert.Equal(n.DeltaNorm[0][0], CrossCoderDecoderNorms.DeltaOfRelative(n.RelativeNorm[0][0]), 12);
    }

    [Fact]
    public void SaeEvalPrintsTheBandsAndWritesThemWithTheHistogram()
    {
        using (var cc = HandMade())
            CrossCoderFormat.Save(cc, Path.Combine(_dir, "cc"), new CrossCoderSources
            {
                HookNames = ["blocks.1.hook_resid_post", "blocks.1.hook_resid_post"], ModelNames = ["base", "chat"],
            });
        using (var x = randn(40, 2, 2)) Npy.Save(Path.Combine(_dir, "x.npy"), x);
        var json = Path.Combine(_dir, "m.json");
        var (exit, stdout, err) = CliRunner.Run("eval", "--sae", Path.Combine(_dir, "cc"), "--activations", Path.Combine(_dir, "x.npy"), "--json", json);
        Assert.True(exit == 0, err);
        Assert.Matches(@"only base \(Δnorm < 0\.1\)\s+│?\s*1", stdout);
        Assert.Matches(@"shared \(0\.4 ≤ Δnorm ≤ 0\.6\)\s+│?\s*2", stdout);
        Assert.Matches(@"only chat \(Δnorm > 0\.9\)\s+│?\s*1", stdout);
        var norms = JsonNode.Parse(File.ReadAllText(json))!["decoder_norms"]!;
        Assert.Equal(["base", "chat"], norms["slots"]!.AsArray().Select(v => (string)v!));
        Assert.Equal(2, (long)norms["bands"]![1]!["shared"]!);
        Assert.Null(norms["relative_norm"]![1]![4]);
        Assert.Equal(-0.8, (double)norms["cosine"]![3]!, 6);
        var png = Path.Combine(_dir, "m_relative_decoder_norm.png");
        Assert.Equal([0x89, (byte)'P', (byte)'N', (byte)'G'], File.ReadAllBytes(png).Take(4));
    }
}
