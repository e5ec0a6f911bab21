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

    /// <summary>
    /// SAELens 6.37.6's use_matryoshka_aux_loss (matryoshka_batchtopk_sae.py, calculate_matryoshka_aux_loss at 69c4c62b):
    /// per level, the dead latents of that level (k_aux = min(d_in/2, their count)) reconstruct the residual x − ŷ_level of
    /// the prefix through that level; a level without dead latents adds nothing; the terms are summed. Each term here is
    /// SaeSharp's AuxK (top-k_aux of the ReLU'd pre-activations, decoded without b_dec, mean‖e − ê‖² / mean‖e − ē‖²).
    /// Written out in float64 from the weights, with its gradients; without the flag, one term on the full residual.
    /// </summary>
    [Theory]
    [InlineData(true)]
    [InlineData(false)]
    public void MatryoshkaAuxLossIsOneAuxKTermPerLevelOnThatLevelsResidual(bool perLevel)
    {
        int[] widths = [4, 10, 24];
        var sae = (MatryoshkaBatchTopKSae)Make(new SaeConfig { Architecture = "matryoshka_batchtopk", DIn = 8, DSae = 24, K = 2, MatryoshkaWidths = widths }, seed: 5);
        sae.Training.UseMatryoshkaAuxLoss = perLevel;
        sae.Training.AuxKCoefficient = 0.25;
        var x = randn(16, 8, generator: new Generator(9));
        int[] dead = [1, 2, 12, 15, 20, 23]; // two in level 1, none in level 2, four in level 3
        var mask = zeros(24, dtype: ScalarType.Bool);
        foreach (var i in dead) mask[i] = tensor(true);
        var o = sae.TrainingForward(x, x, new SaeTrainContext { DeadMask = mask });
        o.Loss.backward();

        var p = Leaves(sae).ToDictionary(kv => kv.Key, kv => kv.Value.detach().to(ScalarType.Float64).requires_grad_(true));
        var xd = x.to(ScalarType.Float64);
        var pre = (xd - p["b_dec"]).matmul(p["W_enc"]) + p["b_enc"];
        var selected = sae.EncodeBatchTopK(x).ne(0);
        var f = nn.functional.relu(pre) * selected.to(ScalarType.Float64);
        Tensor AuxK(Tensor y, int[] latents)
        {
            var e = (xd - y).detach();
            var idx = tensor(latents.Select(i => (long)i).ToArray());
            long kAux = Math.Min(8 / 2, latents.Length);
            var a = nn.functional.relu(pre.index_select(1, idx));
            var top = a.topk((int)kAux, dim: 1).indexes;
            var keep = zeros_like(a).scatter(1, top, ones_like(a));
            var eHat = (a * keep).matmul(p["W_dec"].index_select(0, idx));
            return (e - eHat).pow(2).sum(-1).mean() / (e - e.mean([0], keepdim: true)).pow(2).sum(-1).mean();
        }
        Tensor recon = zeros(1, dtype: ScalarType.Float64).squeeze(0), aux = zeros(1, dtype: ScalarType.Float64).squeeze(0);
        int lo = 0;
        for (int i = 0; i < widths.Length; i++)
        {
            var y = f.narrow(1, 0, widths[i]).matmul(p["W_dec"].narrow(0, 0, widths[i])) + p["b_dec"];
            recon = recon + (y - xd).pow(2).sum(-1).mean();
            var levelDead = dead.Where(d => d >= lo && d < widths[i]).ToArray();
            if (perLevel && levelDead.Length > 0) aux = aux + AuxK(y, levelDead);
            if (!perLevel && i == widths.Length - 1) aux = AuxK(y, dead);
            lo = widths[i];
        }
        AssertClose(aux.detach().to(ScalarType.Float32), o.Losses["auxiliary_reconstruction_loss"], what: "auxiliary_reconstruction_loss");
        var total = recon + aux * 0.25;
        AssertClose(total.detach().to(ScalarType.Float32), o.Loss.detach(), what: "loss");
        total.backward();
        AssertClose(p["W_dec"].grad!.to(ScalarType.Float32), sae.WDec.grad!, what: "W_dec grad");
        AssertClose(p["W_enc"].grad!.to(ScalarType.Float32), sae.WEnc.grad!, what: "W_enc grad");
        AssertClose(p["b_dec"].grad!.to(ScalarType.Float32), sae.BDec.grad!, what: "b_dec grad");
    }

    [Fact]
    public void WidthsAreValidated()
    {
        Assert.Throws<SaeSharpException>(() => new MatryoshkaBatchTopKSae(Cfg([3, 7])));
        Assert.Throws<SaeSharpException>(() => new MatryoshkaBatchTopKSae(Cfg([7, 3, 12])));
        Assert.Throws<SaeSharpException>(() => new MatryoshkaBatchTopKSae(Cfg(null!)));
    }
}
