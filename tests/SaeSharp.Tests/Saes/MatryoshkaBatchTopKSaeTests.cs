using SaeSharp.Saes;
using static TorchSharp.torch;
using static SaeSharp.Tests.Saes.SaeTestUtil;

namespace SaeSharp.Tests.Saes;

public class MatryoshkaBatchTopKSaeTests
{
    private static SaeConfig Cfg(int[] widths) =>
        new() { Architecture = "matryoshka_batchtopk", DIn = 5, DSae = 12, K = 2, MatryoshkaWidths = widths };

    [Fact]
    public void PrefixLossesMatchManualNestedReconstructions()
    {
        var sae = (MatryoshkaBatchTopKSae)Make(Cfg([3, 7, 12]), seed: 2);
        sae.Training.MatryoshkaLossWeights = [0.5, 2.0, 1.5];
        var x = randn(6, 5, generator: new Generator(3));
        var o = sae.TrainingForward(x, x, new SaeTrainContext());
        o.Loss.backward();

        var f = sae.EncodeBatchTopK(x);
        var p = Leaves(sae);
        double[] w = [0.5, 2.0, 1.5];
        int[] widths = [3, 7, 12];
        Tensor? total = null;
        for (int i = 0; i < 3; i++)
        {
            var yi = f.narrow(1, 0, widths[i]).matmul(p["W_dec"].narrow(0, 0, widths[i])) + p["b_dec"];
            var mse = (yi - x).pow(2).sum(-1).mean();
            var key = i == 2 ? "mse_loss" : $"inner_mse_loss_{widths[i]}";
            AssertClose(mse.detach(), o.Losses[key], what: key);
            total = total is null ? mse * w[i] : total + mse * w[i];
        }
        AssertClose(total!.detach(), o.Loss.detach(), what: "loss");
        total!.backward();
        AssertClose(p["W_dec"].grad!, sae.WDec.grad!, what: "W_dec grad");
    }

    [Fact]
    public void WidthsAreValidated()
    {
        Assert.Throws<SaeSharpException>(() => new MatryoshkaBatchTopKSae(Cfg([3, 7])));
        Assert.Throws<SaeSharpException>(() => new MatryoshkaBatchTopKSae(Cfg([7, 3, 12])));
        Assert.Throws<SaeSharpException>(() => new MatryoshkaBatchTopKSae(Cfg(null!)));
    }
}
