using SaeSharp.Saes;
using static TorchSharp.torch;
using static SaeSharp.Tests.Saes.SaeTestUtil;

namespace SaeSharp.Tests.Saes;

public class GatedSaeTests
{
    private static GatedSae MakeGated(int seed = 1) =>
        (GatedSae)Make(new SaeConfig { Architecture = "gated", DIn = 3, DSae = 4 }, seed);

    [Fact]
    public void ForwardMatchesElementwiseHandComputation()
    {
        var sae = MakeGated();
        var x = randn(3, 3, generator: new Generator(2));
        var (y, f) = sae.Run(x);
        var we = F(sae.WEnc); var wd = F(sae.WDec); var bd = F(sae.BDec);
        var bg = F(sae.BGate); var rm = F(sae.RMag); var bm = F(sae.BMag); var xs = F(x);
        for (int n = 0; n < 3; n++)
        {
            var fe = new double[4];
            for (int j = 0; j < 4; j++)
            {
                double gate = bg[j], mag = bm[j];
                for (int i = 0; i < 3; i++)
                {
                    double xin = xs[n * 3 + i] - bd[i];
                    gate += xin * we[i * 4 + j];
                    mag += xin * we[i * 4 + j] * Math.Exp(rm[j]);
                }
                fe[j] = gate > 0 ? Math.Max(0, mag) : 0;
                Assert.Equal(fe[j], f[n, j].item<float>(), 5);
            }
            for (int i = 0; i < 3; i++)
            {
                double r = bd[i];
                for (int j = 0; j < 4; j++) r += fe[j] * wd[j * 3 + i];
                Assert.Equal(r, y[n, i].item<float>(), 5);
            }
        }
    }

    [Theory]
    [InlineData(false)]
    [InlineData(true)]
    public void LossAndGradientsMatchSaeLensFormula(bool detach)
    {
        var sae = MakeGated(seed: 3);
        sae.Training.SparsityCoefficient = 0.3;
        sae.Training.GatedAuxDetachDecoder = detach;
        var x = randn(5, 3, generator: new Generator(4));
        var o = sae.TrainingForward(x, x, new SaeTrainContext { SparsityScale = 0.5 });
        o.Loss.backward();

        var p = Leaves(sae);
        var xin = x - p["b_dec"];
        var gate = xin.matmul(p["W_enc"]) + p["b_gate"];
        var mag = xin.matmul(p["W_enc"] * p["r_mag"].exp()) + p["b_mag"];
        var f = gate.gt(0).to(ScalarType.Float32) * nn.functional.relu(mag);
        var mse = (f.matmul(p["W_dec"]) + p["b_dec"] - x).pow(2).sum(-1).mean();
        var l1 = (nn.functional.relu(gate) * p["W_dec"].norm(1)).sum(-1).mean();
        var wd = detach ? p["W_dec"].detach() : p["W_dec"];
        var bd = detach ? p["b_dec"].detach() : p["b_dec"];
        var aux = (nn.functional.relu(gate).matmul(wd) + bd - x).pow(2).sum(-1).mean();
        var loss = mse + 0.3 * 0.5 * l1 + aux;
        AssertClose(loss.detach(), o.Loss.detach(), what: "loss");
        AssertClose(aux.detach(), o.Losses["auxiliary_reconstruction_loss"], what: "aux");
        loss.backward();
        foreach (var name in new[] { "W_enc", "b_gate", "r_mag", "b_mag", "W_dec", "b_dec" })
            AssertClose(p[name].grad!, sae.named_parameters().Single(q => q.name == name).parameter.grad!, what: name);
    }

    [Fact]
    public void HasNoEncoderBias()
    {
        var sae = MakeGated();
        Assert.False(sae.HasEncoderBias);
        Assert.Throws<SaeSharpException>(() => sae.BEnc);
    }
}
