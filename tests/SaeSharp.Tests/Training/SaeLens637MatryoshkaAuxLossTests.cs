using System.Text.Json.Nodes;
using SaeSharp.Saes;
using SaeSharp.Tests.Tokenizers;
using static TorchSharp.torch;
using static SaeSharp.Tests.Training.TrainerTestKit;

namespace SaeSharp.Tests.Training;

/// <summary>
/// SAELens 6.37.6's <c>use_matryoshka_aux_loss</c> against SAELens's own <c>MatryoshkaBatchTopKTrainingSAE</c>
/// (tests/data/recipes/saelens637_matryoshka_aux.json, written by bench/reference/saelens637_matryoshka_aux_fixture.py
/// from upstream 69c4c62b): one float64 decomposition into levels (each level's dead latents, k_aux = min(d_in/2, their
/// count), the residual x − ŷ_level of the prefix through that level) gives SAELens's value with SAELens's term
/// (top-k_aux pre-activations without ReLU, decoded without b_dec, min(n_dead/k_aux, 1)·mean‖ê − e‖²) and SaeSharp's value
/// with SaeSharp's term (the ReLU'd top-k_aux, mean‖e − ê‖² / mean‖e − ē‖², no scale): the same levels, latents and
/// residuals, each library's AuxK form (docs/recipes.md, "Not the same loss in SAELens"). Without the flag, one term on
/// the full residual over all dead latents, in both.
/// </summary>
public class SaeLens637MatryoshkaAuxLossTests
{
    private static readonly JsonNode Fixture = JsonNode.Parse(File.ReadAllText(TestPaths.Data("recipes", "saelens637_matryoshka_aux.json")))!;

    [Theory]
    [InlineData(true)]
    [InlineData(false)]
    public void OneDecompositionGivesSaeLenssValueWithItsTermAndOursWithOurs(bool perLevel)
    {
        using var scope = NewDisposeScope();
        var run = Fixture["runs"]![perLevel ? "true" : "false"]!;
        int[] widths = Fixture["matryoshka_widths"]!.AsArray().Select(w => w!.GetValue<int>()).ToArray();
        var w = Fixture["weights"]!;
        var x = JsonTensor(Fixture["x"]!);
        var deadMask = JsonTensor(Fixture["dead_mask"]!).to(ScalarType.Bool);
        int[] dead = Fixture["dead_mask"]!.AsArray().Select((v, i) => (v!.GetValue<int>(), i)).Where(p => p.Item1 == 1).Select(p => p.i).ToArray();
        int dIn = (int)x.shape[1], dSae = widths[^1];

        var sae = new MatryoshkaBatchTopKSae(new SaeConfig { Architecture = "matryoshka_batchtopk", DIn = dIn, DSae = dSae, K = 2, MatryoshkaWidths = widths });
        using (no_grad())
        {
            sae.WEnc.copy_(JsonTensor(w["W_enc"]!));
            sae.WDec.copy_(JsonTensor(w["W_dec"]!));
            sae.BDec.copy_(JsonTensor(w["b_dec"]!));
            sae.named_parameters().First(p => p.name == "b_enc").parameter.copy_(JsonTensor(w["b_enc"]!));
        }
        sae.Training.UseMatryoshkaAuxLoss = perLevel;
        var o = sae.TrainingForward(x, x, new SaeTrainContext { Step = 0, SparsityScale = 1, DeadMask = deadMask });

        // The same latents fire (SAELens's BatchTopK over the batch), so the levels' reconstructions are the same.
        var fSaeLens = JsonTensor(run["feature_acts"]!).to(ScalarType.Float64);
        Assert.True(MaxAbsDiff(fSaeLens, sae.EncodeBatchTopK(x)) < 1e-5, "feature activations differ from SAELens's");

        var xd = x.to(ScalarType.Float64);
        var wEnc = JsonTensor(w["W_enc"]!).to(ScalarType.Float64);
        var wDec = JsonTensor(w["W_dec"]!).to(ScalarType.Float64);
        var bEnc = JsonTensor(w["b_enc"]!).to(ScalarType.Float64);
        var bDec = JsonTensor(w["b_dec"]!).to(ScalarType.Float64);
        var pre = (xd - bDec).matmul(wEnc) + bEnc;
        int kAux = dIn / 2;

        // The decomposition: (residual, dead latents of the term) per term.
        var terms = new List<(Tensor E, int[] Latents)>();
        int lo = 0;
        foreach (var hi in widths)
        {
            var y = fSaeLens.narrow(1, 0, hi).matmul(wDec.narrow(0, 0, hi)) + bDec;
            var levelDead = dead.Where(i => i >= lo && i < hi).ToArray();
            if (perLevel && levelDead.Length > 0) terms.Add((xd - y, levelDead));
            if (!perLevel && hi == dSae) terms.Add((xd - y, dead));
            lo = hi;
        }
        Assert.Equal(perLevel ? 2 : 1, terms.Count); // level 2 has no dead latent

        double saeLens = 0, ours = 0;
        foreach (var (e, latents) in terms)
        {
            var idx = tensor(latents.Select(i => (long)i).ToArray());
            int k = Math.Min(kAux, latents.Length);
            var p = pre.index_select(1, idx);
            var wd = wDec.index_select(0, idx);
            // SAELens (calculate_topk_aux_acts + act_times_W_dec): top-k of the raw pre-activations, no ReLU.
            var topRaw = p.topk(k, dim: 1);
            var eHatSaeLens = zeros_like(p).scatter(1, topRaw.indexes, topRaw.values).matmul(wd);
            saeLens += Math.Min(latents.Length / (double)kAux, 1.0) * (eHatSaeLens - e).pow(2).sum(-1).mean().item<double>();
            // SaeSharp: top-k of the ReLU'd pre-activations, normalised by the residual's variance.
            var a = nn.functional.relu(p);
            var top = a.topk(k, dim: 1).indexes;
            var eHat = (a * zeros_like(a).scatter(1, top, ones_like(a))).matmul(wd);
            ours += ((e - eHat).pow(2).sum(-1).mean() / (e - e.mean([0], keepdim: true)).pow(2).sum(-1).mean()).item<double>();
        }
        saeLens *= run["aux_loss_coefficient"]!.GetValue<double>();

        double expected = run["losses"]!["auxiliary_reconstruction_loss"]!.GetValue<double>();
        Assert.True(Math.Abs(saeLens - expected) <= 1e-5 * Math.Abs(expected), $"SAELens's AuxK {expected:G9}, its decomposition {saeLens:G9}");
        double got = o.Losses["auxiliary_reconstruction_loss"].item<float>();
        Assert.True(Math.Abs(ours - got) <= 1e-5 * Math.Abs(ours), $"our AuxK {got:G9}, the decomposition with our term {ours:G9}");
    }
}
