using SaeSharp.Kernels;
using SaeSharp.Saes;
using SaeSharp.Synthetic;
using SaeSharp.Training;
using static TorchSharp.torch;
using static SaeSharp.Tests.Saes.SaeTestUtil;

namespace SaeSharp.Tests.Saes;

/// <summary><see cref="SaeTrainingOptions.Autocast"/> in the TopK family: candidates ranked on the bfloat16 encoder, the
/// chosen pre-activations recomputed exactly in float32.</summary>
public class TopKAutocastTests
{
    private static TopKFamilySae MakeSae(string arch, int dIn, int dSae, int k, int seed, bool autocast)
    {
        var sae = (TopKFamilySae)Make(new SaeConfig
        {
            Architecture = arch, DIn = dIn, DSae = dSae, K = k,
            MatryoshkaWidths = arch == SaeArchitectures.MatryoshkaBatchTopK ? [dSae / 4, dSae] : null,
        }, seed);
        sae.Training.Autocast = autocast;
        return sae;
    }

    /// <summary>The float32 pre-activations by a plain addmm, and an upper bound of the bfloat16 encoder's error on each:
    /// operands rounded to bfloat16 (relative 2⁻⁹ each) and the product rounded to bfloat16 (2⁻⁹ of |x̃·W|).</summary>
    private static (float[] Pre, float[] ErrBound) Reference(TopKFamilySae sae, Tensor x)
    {
        using var _ = no_grad();
        var xin = x - sae.BDec;
        var pre = addmm(sae.BEnc, xin, sae.WEnc, 1, 1);
        var bound = xin.abs().mm(sae.WEnc.abs()) * (2 * Math.Pow(2, -9) + 1e-6) + (pre - sae.BEnc).abs() * Math.Pow(2, -9);
        return (F(pre), F(bound));
    }

    [Theory]
    [InlineData(1, 256)]
    [InlineData(4, 256)]  // block-maximum path (k ≤ d/64)
    [InlineData(40, 256)] // heap path
    [InlineData(5, 37)]   // d not a multiple of the vector width
    public void Bf16RowTopKEqualsTopKOfTheWidenedMatrixPlusBias(int k, int d)
    {
        var m = (randn(9, d, generator: new Generator(1)) * 3).to(ScalarType.BFloat16);
        m[2] = full(d, 0.5f).to(ScalarType.BFloat16); // all ties
        var bias = randn(d, generator: new Generator(2));
        var (v, i) = TopKSelection.RowTopKBf16(m, bias, k);
        var dense = m.to(ScalarType.Float32) + bias;
        var (tv, _) = dense.topk(k, dim: 1);
        var data = F(dense);
        var vs = F(v);
        var iv = i.data<long>().ToArray();
        for (int r = 0; r < 9; r++)
        {
            Assert.Equal(F(tv[r]), vs.Skip(r * k).Take(k).OrderByDescending(x => x).ToArray());
            Assert.Equal(k, iv.Skip(r * k).Take(k).Distinct().Count());
            for (int e = 0; e < k; e++) Assert.Equal(data[r * d + iv[r * k + e]], vs[r * k + e]);
        }
    }

    /// <summary>Every active entry carries the float32 pre-activation (to 1e-5), exactly k entries per row, and each
    /// chosen latent is a float32 top-k one up to the bfloat16 error: its value plus its error bound reaches the row's
    /// k-th largest minus that one's bound; at least 97% of the entries are the float32 top-k ones.</summary>
    [Theory]
    [InlineData(false)]
    [InlineData(true)]
    public void TopKCodeCarriesExactPreActivationsOfTheTopKUpToBf16Ties(bool chunked)
    {
        const int n = 64, dIn = 64, dSae = 512, k = 8;
        var sae = MakeSae("topk", dIn, dSae, k, seed: 3, autocast: true);
        if (chunked) sae.ChunkElements = 20 * dSae;
        using (no_grad()) sae.BEnc.add_(TorchScalars.Of(4.0), TorchScalars.One); // every pre-activation positive: the feature acts are the pre-activations
        var x = randn(n, dIn, generator: new Generator(4));
        var (pre, bound) = Reference(sae, x);
        var f = F(sae.TrainingForward(x, x, new SaeTrainContext()).FeatureActs);
        int agree = 0;
        for (int r = 0; r < n; r++)
        {
            var order = Enumerable.Range(0, dSae).OrderByDescending(j => pre[r * dSae + j]).ToArray();
            int kth = order[k - 1];
            var topSet = order.Take(k).ToHashSet();
            var active = Enumerable.Range(0, dSae).Where(j => f[r * dSae + j] != 0).ToArray();
            Assert.Equal(k, active.Length);
            foreach (int j in active)
            {
                float exact = pre[r * dSae + j];
                Assert.True(Math.Abs(f[r * dSae + j] - exact) <= 1e-5 * Math.Max(1, Math.Abs(exact)), $"row {r} latent {j}: {f[r * dSae + j]} vs {exact}");
                Assert.True(exact + bound[r * dSae + j] >= pre[r * dSae + kth] - bound[r * dSae + kth], $"row {r} latent {j} is no bf16 near-tie of the top {k}");
                if (topSet.Contains(j)) agree++;
            }
        }
        Assert.True(agree >= 0.97 * n * k, $"only {agree} of {n * k} entries are the float32 top-k");
    }

    /// <summary>BatchTopK (and its Matryoshka form) keeps k·N entries of the batch, at their float32 pre-activations.</summary>
    [Theory]
    [InlineData("batchtopk")]
    [InlineData("matryoshka_batchtopk")]
    public void BatchTopKKeepsKTimesNEntriesAtExactPreActivations(string arch)
    {
        const int n = 32, dIn = 32, dSae = 256, k = 4;
        var sae = MakeSae(arch, dIn, dSae, k, seed: 5, autocast: true);
        using (no_grad()) sae.BEnc.add_(TorchScalars.Of(4.0), TorchScalars.One);
        var x = randn(n, dIn, generator: new Generator(6));
        var (pre, bound) = Reference(sae, x);
        var f = F(sae.TrainingForward(x, x, new SaeTrainContext()).FeatureActs);
        var cut = pre.Select((v, i) => (v, i)).OrderByDescending(p => p.v).ElementAt(k * n - 1);
        int active = 0;
        for (int i = 0; i < f.Length; i++)
        {
            if (f[i] == 0) continue;
            active++;
            Assert.True(Math.Abs(f[i] - pre[i]) <= 1e-5 * Math.Max(1, Math.Abs(pre[i])), $"entry {i}: {f[i]} vs {pre[i]}");
            Assert.True(pre[i] + bound[i] >= cut.v - bound[cut.i], $"entry {i} is no bf16 near-tie of the batch top-{k * n}");
        }
        Assert.Equal(k * n, active); // mean L0 = k
    }

    /// <summary>With pre-activations whose top-k gaps exceed the bfloat16 error, autocast selects what float32 selects
    /// and the loss and every gradient equal the float32 path's (MSE and AuxK, dense and sparse AuxK forms).</summary>
    [Theory]
    [InlineData("topk", false, false)]
    [InlineData("topk", true, false)]
    [InlineData("topk", true, true)]
    [InlineData("batchtopk", true, false)]
    [InlineData("matryoshka_batchtopk", false, false)]
    public void GradientsEqualTheFloat32PathWhenSelectionIsUnambiguous(string arch, bool withAux, bool sparseAux)
    {
        const int n = 12, dIn = 16, dSae = 64, k = 3;
        var x = randn(n, dIn, generator: new Generator(8));
        var target = randn(n, dIn, generator: new Generator(9));
        var dead = TorchScalars.Arange(dSae).remainder(4).eq(1);
        var grads = new List<Dictionary<string, Tensor>>();
        var losses = new List<Tensor>();
        foreach (bool autocast in new[] { false, true })
        {
            var sae = MakeSae(arch, dIn, dSae, k, seed: 7, autocast);
            // b_enc levels 0.5 apart and a small encoder: every row's top-k (and the batch's top-k·N) is the same latents,
            // with gaps far beyond the bfloat16 error.
            using (no_grad())
            {
                sae.BEnc.copy_(randperm(dSae, generator: new Generator(10)).to(ScalarType.Float32) * 0.5f - 20f);
                sae.WEnc.mul_(0.05f);
            }
            if (sparseAux) sae.AuxKDenseMaxRatio = 0;
            sae.Training.AuxKCoefficient = 0.5;
            sae.Training.KAux = 4;
            var (pre, bound) = Reference(sae, x);
            float maxErr = bound.Max();
            for (int r = 0; r < n; r++)
            {
                var row = pre.Skip(r * dSae).Take(dSae).OrderDescending().ToArray();
                Assert.True(row[k - 1] - row[k] > 4 * maxErr, $"row {r}: top-k gap within the bf16 error");
            }
            var all = pre.OrderDescending().ToArray();
            Assert.True(all[k * n - 1] - all[k * n] > 4 * maxErr, "batch top-k·N gap within the bf16 error");
            var o = sae.TrainingForward(x, target, new SaeTrainContext { DeadMask = withAux ? dead : null });
            if (withAux) Assert.True(o.Losses["auxiliary_reconstruction_loss"].item<float>() > 0);
            o.Loss.backward();
            losses.Add(o.Loss.detach());
            grads.Add(sae.named_parameters().ToDictionary(p => p.name, p => p.parameter.grad!.clone()));
        }
        AssertClose(losses[0], losses[1], rtol: 1e-5, atol: 1e-6, what: "loss");
        foreach (var name in new[] { "W_enc", "b_enc", "W_dec", "b_dec" })
            AssertClose(grads[0][name], grads[1][name], rtol: 1e-4, atol: 1e-6, what: name);
    }

    /// <summary>Training on synthetic data with autocast reaches the float32 run's FVU and feature recovery after the
    /// same steps from the same initialisation.</summary>
    [Theory]
    [InlineData("topk")]
    [InlineData("batchtopk")]
    public void TrainingWithAutocastReachesTheFloat32Quality(string arch)
    {
        var fp32 = TrainSynthetic(arch, autocast: false);
        var bf16 = TrainSynthetic(arch, autocast: true);
        Assert.True(fp32.Fvu < 0.3, $"float32 run did not learn: FVU {fp32.Fvu}");
        Assert.True(Math.Abs(bf16.Fvu - fp32.Fvu) <= 0.05 * fp32.Fvu + 0.005, $"FVU {bf16.Fvu} (autocast) vs {fp32.Fvu} (float32)");
        Assert.True(Math.Abs(bf16.Mmcs - fp32.Mmcs) <= 0.02, $"MMCS {bf16.Mmcs} (autocast) vs {fp32.Mmcs} (float32)");
    }

    private static (double Fvu, double Mmcs) TrainSynthetic(string arch, bool autocast)
    {
        using var scope = NewDisposeScope();
        using var gen = new SyntheticGenerator(new SyntheticOptions { DIn = 32, NFeatures = 64, MaxFrequency = 0.1, FrequencyExponent = 0.3, Seed = 11 });
        var sae = MakeSae(arch, 32, 128, 4, seed: 12, autocast);
        sae.InitializeWeights(new Generator(12));
        var (b1, b2) = sae.DefaultAdamBetas;
        using var opt = new AdamOptimizer(sae.named_parameters().Select(p => (p.name, p.parameter)).ToList(), b1, b2);
        for (int step = 0; step < 300; step++)
        {
            using var stepScope = NewDisposeScope();
            var (_, x) = gen.Sample(256);
            var ctx = new SaeTrainContext { Step = step };
            sae.zero_grad();
            sae.TrainingForward(x, x, ctx).Loss.backward();
            sae.BeforeOptimizerStep(ctx);
            opt.Step(sae.DefaultLearningRate());
            sae.AfterOptimizerStep(ctx);
        }
        using var _ = no_grad();
        var (__, xe) = gen.Sample(2048);
        var y = sae.TrainingForward(xe, xe, new SaeTrainContext()).SaeOut;
        double fvu = ((xe - y).pow(2).sum() / (xe - xe.mean([0], keepdim: true)).pow(2).sum()).item<float>();
        double mmcs = FeatureRecovery.Compute(gen.Features, sae.WDec.detach()).Mmcs;
        sae.Dispose();
        return (fvu, mmcs);
    }
}
