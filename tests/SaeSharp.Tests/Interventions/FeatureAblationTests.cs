using SaeSharp.Interventions;
using SaeSharp.Tests.Models;
using TorchSharp;
using static TorchSharp.torch;

namespace SaeSharp.Tests.Interventions;

/// <summary><see cref="FeatureAblation"/> (per-feature ablation against a metric) and <see cref="ErrorAblation"/> against
/// plain hooks written here (SAELens Hooked_SAE_Transformer_Demo's feature and error-node ablations).</summary>
public class FeatureAblationTests : ModelTestBase
{
    private const string Hook = "blocks.0.hook_resid_post";
    private const int Position = 3, A = 11, B = 40;
    private static readonly Tensor Toks = tensor(new long[] { 5, 11, 23, 42, 7, 19, 3, 30, 8, 2, 44, 17 }, 2, 6);

    /// <summary>logit(A) − logit(B) at the last position, summed over the rows, written out here.</summary>
    private static double LogitDiff(Tensor logits) =>
        (logits[.., -1, A] - logits[.., -1, B]).to(ScalarType.Float64).sum().item<double>();

    [Fact]
    public void EachFeaturesDeltaIsItsContributionRemovedAtThePositionByAPlainHook()
    {
        using var model = NeoX(parallel: false);
        using var sae = InterventionTests.RandomSae(Hook, 16, 32, 5, encBias: 0.1);
        var (clean, cache) = model.RunWithCache(Toks, [Hook]);
        Tensor f;
        using (cache) f = InterventionTests.HandFeatures(sae, cache[Hook]);   // [2, 6, 32] float64
        var hooked = new HookedSaeTransformer(model);
        hooked.AddSae(sae, useErrorTerm: true);
        var metric = AttributionMetric.LogitDiff(A, B);

        var (cleanMetric, effects) = FeatureAblation.Sweep(hooked, sae, Toks, metric, positions: [Position]);
        Assert.Equal(LogitDiff(clean!), cleanMetric, 4);

        // Live: nonzero at the position in some row, by the hand features.
        var live = Enumerable.Range(0, 32).Where(i => f[.., Position, i].abs().max().item<double>() > 0).ToList();
        Assert.True(live.Count is > 2 and < 32, $"{live.Count} live features");
        Assert.Equal(live, effects.Select(e => e.Feature).Order());
        Assert.Equal(effects.Select(e => Math.Abs(e.Delta)).OrderDescending(), effects.Select(e => Math.Abs(e.Delta)));

        foreach (var e in effects.Take(4))
        {
            // x ← x − f_F·W_dec[F] at the position only (the error term keeps the rest of x).
            var delta = zeros(2, 6, 16, ScalarType.Float64);
            delta[.., Position] = -f[.., Position, e.Feature].unsqueeze(-1) * InterventionTests.DecoderRow(sae, e.Feature);
            var d32 = delta.to(ScalarType.Float32);
            double byHand = LogitDiff(model.RunWithHooks(Toks, (Hook, x => x + d32)));
            Assert.Equal(byHand, e.Metric, 3);
            Assert.Equal(byHand - LogitDiff(clean!), e.Delta, 3);
            Assert.Equal(f[.., Position, e.Feature].sum().item<double>(), e.Activation, 4);
            // The table row is the single-feature call's.
            Assert.Equal(FeatureAblation.Metric(hooked, Toks, metric, [new Ablation(sae, [e.Feature]) { Positions = [Position] }]), e.Metric, 5);
        }
        Assert.NotEqual(0, effects[0].Delta);

        // Candidates restricted to some features: the live ones of them; a feature outside d_sae is an error.
        var some = FeatureAblation.Sweep(hooked, sae, Toks, metric, [Position], features: [live[0], live[1]]).Effects;
        Assert.Equal(new[] { live[0], live[1] }, some.Select(e => e.Feature).Order());
        Assert.Throws<SaeSharpException>(() => FeatureAblation.Sweep(hooked, sae, Toks, metric, [Position], features: [32]));
    }

    [Fact]
    public void ErrorAblationIsTheReconstructionAlone()
    {
        using var model = NeoX(parallel: false);
        using var sae = InterventionTests.RandomSae(Hook, 16, 32, 7, encBias: 0.1);
        var withError = new HookedSaeTransformer(model);
        withError.AddSae(sae, useErrorTerm: true);
        var reconsOnly = new HookedSaeTransformer(model);
        reconsOnly.AddSae(sae);
        var ablated = withError.RunWithHooks(Toks, [new ErrorAblation(sae)]);
        AssertAllClose(reconsOnly.RunWithHooks(Toks), ablated, 1e-5, "error node zeroed = reconstruction alone");
        Assert.False(model.RunWithHooks(Toks).allclose(ablated, rtol: 0, atol: 1e-3), "the error node matters");

        // At one position: the reconstruction there, x elsewhere (a plain hook).
        var (_, cache) = model.RunWithCache(Toks, [Hook]);
        Tensor recons;
        using (cache)
        {
            var x = cache[Hook].to(ScalarType.Float64);
            var f = InterventionTests.HandFeatures(sae, cache[Hook]);
            var r = matmul(f, sae.WDec.detach().to(ScalarType.Float64)) + sae.BDec.detach().to(ScalarType.Float64);
            recons = x.clone();
            recons[.., Position] = r[.., Position];
            recons = recons.to(ScalarType.Float32);
        }
        AssertAllClose(model.RunWithHooks(Toks, (Hook, _ => recons)),
            withError.RunWithHooks(Toks, [new ErrorAblation(sae) { Positions = [Position] }]), 1e-4, "error node zeroed at one position");

        var e = Assert.Throws<SaeSharpException>(() => reconsOnly.RunWithHooks(Toks, [new ErrorAblation(sae)]));
        Assert.Contains("error term", e.Message);
    }
}
