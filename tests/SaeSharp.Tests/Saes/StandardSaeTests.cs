using SaeSharp.Kernels;
using SaeSharp.Saes;
using static TorchSharp.torch;

namespace SaeSharp.Tests.Saes;

public class StandardSaeTests
{
    private static StandardSae Make(int dIn = 3, int dSae = 4, bool applyBDec = true)
    {
        var sae = new StandardSae(new SaeConfig { DIn = dIn, DSae = dSae, ApplyBDecToInput = applyBDec });
        sae.InitializeWeights(new Generator(1));
        using (no_grad()) { sae.BDec.copy_(tensor(new float[] { 0.1f, -0.2f, 0.3f })); sae.BEnc.copy_(tensor(new float[] { 0.01f, -0.5f, 0.2f, 0f })); }
        return sae;
    }

    [Fact]
    public void StateDictKeysAndShapesAreSaeLens()
    {
        var sd = Make().state_dict();
        Assert.Equal(new[] { "W_dec", "W_enc", "b_dec", "b_enc" }, sd.Keys.OrderBy(k => k, StringComparer.Ordinal));
        Assert.Equal(new long[] { 3, 4 }, sd["W_enc"].shape);
        Assert.Equal(new long[] { 4, 3 }, sd["W_dec"].shape);
    }

    [Fact]
    public void EncodeDecodeMatchElementwiseFormula()
    {
        var sae = Make();
        var x = tensor(new float[] { 1f, 2f, -1f, 0.5f, 0f, 2f }).reshape(2, 3);
        var (y, f) = sae.Run(x);
        var we = sae.WEnc.data<float>().ToArray(); var wd = sae.WDec.data<float>().ToArray();
        var be = sae.BEnc.data<float>().ToArray(); var bd = sae.BDec.data<float>().ToArray();
        var xs = x.data<float>().ToArray();
        for (int n = 0; n < 2; n++)
        {
            var fe = new double[4];
            for (int j = 0; j < 4; j++)
            {
                double pre = be[j];
                for (int i = 0; i < 3; i++) pre += (xs[n * 3 + i] - bd[i]) * we[i * 4 + j];
                fe[j] = Math.Max(0, pre);
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

    [Fact]
    public void L1LossGradientMatchesHandDerivation()
    {
        // loss = mean_n Σ_i (y−x)² + λ·mean_n Σ_j f_j ;  dL/db_enc_j = mean_n [pre_j>0]·(2(y−x)·W_dec[j] + λ)
        var sae = Make();
        sae.Training.SparsityCoefficient = 0.7;
        var x = tensor(new float[] { 1f, 2f, -1f, 0.5f, 0f, 2f }).reshape(2, 3);
        var o = sae.TrainingForward(x, x, new SaeTrainContext());
        o.Loss.backward();
        using var _ = no_grad();
        var pre = sae.HiddenPre(x);
        var y = o.SaeOut;
        var active = pre.gt(0).to(ScalarType.Float32);
        var expected = (active * ((2 * (y - x)).matmul(sae.WDec.t()) + 0.7)).mean([0]);
        Assert.True(sae.BEnc.grad!.allclose(expected, rtol: 1e-4, atol: 1e-6));
    }

    [Fact]
    public void ParallelGradientRemovalLeavesGradientOrthogonalToRows()
    {
        var sae = Make();
        var x = randn(5, 3, generator: new Generator(3));
        sae.TrainingForward(x, x, new SaeTrainContext()).Loss.backward();
        sae.BeforeOptimizerStep(new SaeTrainContext());
        var dots = (sae.WDec.grad! * sae.WDec).sum(1).abs().max().item<float>();
        Assert.True(dots < 1e-6, $"max |<grad,row>| = {dots}");
    }

    [Fact]
    public void FoldingTheScaleGivesIdenticalOutputsOnRawInputs()
    {
        var sae = Make();
        var x = randn(6, 3, generator: new Generator(4)) * 10;
        const double s = 0.37;
        var (yScaled, fScaled) = sae.Run(x * s);
        sae.FoldActivationScale(s, s);
        var (yRaw, fRaw) = sae.Run(x);
        Assert.True(fRaw.allclose(fScaled, rtol: 1e-4, atol: 1e-5));
        Assert.True(yRaw.allclose(yScaled / s, rtol: 1e-4, atol: 1e-4));
    }
}

public class EncoderMatmulGradientTests
{
    [Theory]
    [InlineData("standard")]
    [InlineData("jumprelu")]
    [InlineData("gated")]
    public void PreActivationGradientsAreTheCentredInputForms(string arch)
    {
        using var scope = NewDisposeScope();
        var sae = SaeTestUtil.Make(new SaeConfig { Architecture = arch, DIn = 3, DSae = 5 });
        var x = randn(4, 3, generator: new Generator(7));
        var g = randn(4, 5, generator: new Generator(8));
        var pre = sae.HiddenPre(x);
        (pre * g).sum().backward();
        using var _ = no_grad();
        var xc = x - sae.BDec;
        var w = arch == "gated" ? sae.WEnc * ((GatedSae)sae).RMag.exp() : sae.WEnc.detach();
        var bias = arch == "gated" ? ((GatedSae)sae).BMag.detach() : sae.BEnc.detach();
        SaeTestUtil.AssertClose(xc.matmul(w) + bias, pre.detach(), what: "pre");
        var gW = xc.t().matmul(g);
        SaeTestUtil.AssertClose(arch == "gated" ? gW * ((GatedSae)sae).RMag.exp() : gW, sae.WEnc.grad!, what: "W_enc grad");
        // ∂/∂b_dec of Σ g·((x − b_dec)·w) = −w·Σ_n g_n
        SaeTestUtil.AssertClose(-w.matmul(g.sum(0L)), sae.BDec.grad!, what: "b_dec grad");
    }
}

public class StandardSaeSparsePathTests
{
    /// <summary>The sparse training pass (taken once features are sparse) gives the dense pass's loss and gradients.</summary>
    [Theory]
    [InlineData(SparsityPenalty.L1)]
    [InlineData(SparsityPenalty.L1DecoderNorm)]
    [InlineData(SparsityPenalty.Entropy)]
    public void SparsePassEqualsDensePass(SparsityPenalty penalty)
    {
        var x = randn(7, 5, generator: new Generator(2));
        var target = randn(7, 5, generator: new Generator(3));
        (float Loss, Dictionary<string, Tensor> Grads, Tensor F) RunWith(double density)
        {
            var sae = new StandardSae(new SaeConfig { DIn = 5, DSae = 9 }) { SparseTrainingDensity = density };
            sae.InitializeWeights(new Generator(1));
            using (no_grad()) { sae.BEnc.copy_(randn(9, generator: new Generator(4)) * 0.3 - 0.2); sae.BDec.copy_(randn(5, generator: new Generator(5)) * 0.1); }
            sae.Training.Penalty = penalty;
            sae.Training.SparsityCoefficient = 0.4;
            var o = sae.TrainingForward(x, target, new SaeTrainContext { SparsityScale = 0.5 });
            o.Loss.backward();
            Assert.Equal(density > 0, sae.LastTrainingPassSparse);
            return (o.Loss.item<float>(), sae.named_parameters().ToDictionary(p => p.name, p => p.parameter.grad!.clone()), o.FeatureActs.detach());
        }
        var dense = RunWith(0);
        var sparse = RunWith(1.0);
        Assert.Equal(dense.Loss, sparse.Loss, 4);
        Assert.True(dense.F.allclose(sparse.F, 1e-5, 1e-6), "feature activations differ");
        foreach (var (name, g) in dense.Grads)
            Assert.True(g.allclose(sparse.Grads[name], 1e-4, 1e-5), $"{name}: max diff {(g - sparse.Grads[name]).abs().max().item<float>()}");
    }
}

/// <summary>After a sparse step the next one lists the positive entries from the encoder products plus b_enc
/// (<see cref="StandardSae.ListFromProducts"/>) instead of from written activations: the same entries and values, so
/// the same losses, gradients and weights bit for bit over sparse steps and a switch back to the dense pass. In the
/// serial collection: the setting is process-wide.</summary>
[Collection(SaeSharp.Tests.Training.SerialTorchCollection.Name)]
public class StandardSaeListFromProductsTests
{
    [Theory]
    [InlineData(true)]
    [InlineData(false)]
    public void Listing_from_the_products_changes_no_bit(bool centred)
    {
        var x = randn(64, 24, generator: new Generator(7)) * 2;
        (List<float> Losses, Dictionary<string, Tensor> Weights, List<bool> Sparse) Run(bool fromProducts)
        {
            bool saved = StandardSae.ListFromProducts;
            StandardSae.ListFromProducts = fromProducts;
            try
            {
                var sae = new StandardSae(new SaeConfig { DIn = 24, DSae = 96, ApplyBDecToInput = centred });
                sae.InitializeWeights(new Generator(3));
                using (no_grad()) { sae.BEnc.copy_(randn(96, generator: new Generator(4)) * 0.3 - 0.9); sae.BDec.copy_(randn(24, generator: new Generator(5)) * 0.1); }
                sae.Training.SparsityCoefficient = 0.3;
                using var opt = new AdamOptimizer(sae.named_parameters().Select(np => (np.name, np.parameter)));
                var losses = new List<float>();
                var sparse = new List<bool>();
                for (int step = 0; step < 6; step++)
                {
                    // Sparse for four steps, then dense (the threshold 0), then sparse again.
                    sae.SparseTrainingDensity = step == 4 ? 0 : 1;
                    sae.zero_grad();
                    var o = sae.TrainingForward(x, x, new SaeTrainContext { Step = step });
                    o.Loss.backward();
                    sae.BeforeOptimizerStep(new SaeTrainContext());
                    opt.Step(1e-2);
                    sae.AfterOptimizerStep(new SaeTrainContext());
                    losses.Add(o.Loss.item<float>());
                    sparse.Add(sae.LastTrainingPassSparse);
                }
                return (losses, sae.state_dict().ToDictionary(kv => kv.Key, kv => kv.Value.clone()), sparse);
            }
            finally { StandardSae.ListFromProducts = saved; }
        }
        var listed = Run(fromProducts: true);
        var written = Run(fromProducts: false);
        Assert.Equal([true, true, true, true, false, true], listed.Sparse);
        Assert.Equal(written.Losses, listed.Losses);
        foreach (var (name, w) in written.Weights)
            Assert.True(w.equal(listed.Weights[name]).all().item<bool>(), $"{name} differs");
    }
}

public class SaeShapeTests
{
    [Fact]
    public void HookShapedInputsGiveTheSameResultsAsRows()
    {
        var sae = SaeFactory.Create(new SaeConfig { DIn = 4, DSae = 6 });
        sae.InitializeWeights(new Generator(2));
        var x = randn(2, 3, 4, generator: new Generator(5));
        var (y, f) = sae.Run(x);
        var (yRows, fRows) = sae.Run(x.reshape(6, 4));
        Assert.Equal(new long[] { 2, 3, 6 }, f.shape);
        Assert.True(y.reshape(6, 4).equal(yRows).all().item<bool>());
        Assert.True(f.reshape(6, 6).equal(fRows).all().item<bool>());
        Assert.True(sae.forward(x).equal(y).all().item<bool>());
        var e = Assert.Throws<SaeSharpException>(() => sae.Run(randn(3, 5)));
        Assert.Contains("d_in=4", e.Message);
    }
}
