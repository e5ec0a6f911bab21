using SaeSharp.Saes;
using static TorchSharp.torch;
using static SaeSharp.Tests.Saes.SaeTestUtil;

namespace SaeSharp.Tests.Saes;

public class TopKSaeTests
{
    private static TopKSae MakeTopK(int dIn = 6, int dSae = 12, int k = 3, int seed = 1) =>
        (TopKSae)Make(new SaeConfig { Architecture = "topk", DIn = dIn, DSae = dSae, K = k }, seed);

    [Fact]
    public void EncodeKeepsExactlyTheKLargestPreActivationsPerRow()
    {
        var sae = MakeTopK();
        using (no_grad()) sae.BEnc.fill_(5f); // every pre-activation positive
        var x = randn(7, 6, generator: new Generator(2));
        var f = F(sae.Encode(x));
        var pre = F(sae.HiddenPre(x));
        for (int n = 0; n < 7; n++)
        {
            var row = pre.Skip(n * 12).Take(12).ToArray();
            var kth = row.OrderByDescending(v => v).ElementAt(2);
            for (int j = 0; j < 12; j++)
            {
                float expected = row[j] >= kth ? row[j] : 0f;
                Assert.Equal(expected, f[n * 12 + j], 5);
            }
            Assert.Equal(3, f.Skip(n * 12).Take(12).Count(v => v != 0));
        }
    }

    /// <summary>SAELens and sparsify apply a ReLU to the k selected values: where a row's top k include negative
    /// pre-activations they are zero, for inference and training alike (the test above keeps every pre-activation positive).</summary>
    [Fact]
    public void NegativePreActivationsAmongTheTopKAreZeroed()
    {
        var sae = new TopKSae(new SaeConfig { Architecture = "topk", DIn = 2, DSae = 4, K = 2 });
        using (no_grad())
        {
            sae.WEnc.copy_(tensor(new float[,] { { 1, 0, 0, 0 }, { 0, 1, 0, 0 } }));
            sae.BEnc.copy_(tensor(new float[] { -1, -3, 2, -0.5f }));
            sae.WDec.copy_(tensor(new float[,] { { 1, 0 }, { 0, 1 }, { 0.6f, 0.8f }, { 0.8f, -0.6f } }));
        }
        var x = tensor(new float[,] { { 0, 0 }, { 4, 0 }, { -5, 4 }, { -5, -5 } });
        // pre = x·W_enc + b_enc: [-1,-3,2,-0.5], [3,-3,2,-0.5], [-6,1,2,-0.5], [-6,-8,2,-0.5]; the top 2 of rows 0 and 3
        // hold -0.5, which the ReLU zeroes.
        float[] expected = [0, 0, 2, 0, 3, 0, 2, 0, 0, 1, 2, 0, 0, 0, 2, 0];
        Assert.Equal(expected, F(sae.Encode(x)));
        var o = sae.TrainingForward(x, x, new SaeTrainContext());
        Assert.Equal(expected, F(o.FeatureActs));
        // x̂ = f·W_dec: latent 2 alone decodes to (1.2, 1.6).
        AssertClose(tensor(new float[,] { { 1.2f, 1.6f }, { 4.2f, 1.6f }, { 1.2f, 2.6f }, { 1.2f, 1.6f } }), o.SaeOut.detach(), what: "x̂");
    }

    /// <summary>Encode (and so forward, Run and a spliced SAE in a <c>Grad</c> run) is differentiable as SAELens's
    /// topk + ReLU: the row kernel that selects the k latents returned values without an autograd graph, so the
    /// features of [N, d_in] rows carried no gradient to x or W_enc.</summary>
    [Fact]
    public void EncodeGradientsEqualTorchTopKAutograd()
    {
        var sae = MakeTopK(dIn: 6, dSae: 40, k: 5);
        using var x0 = randn(9, 6, generator: new Generator(4));
        using var w = randn(9, 40, generator: new Generator(5));
        using var x = x0.clone().requires_grad_();
        using var f = sae.Encode(x);
        Assert.True(f.requires_grad);
        using (var loss = (f * w).sum()) loss.backward();
        var gradX = x.grad!.clone();
        var gradW = sae.WEnc.grad!.clone();
        sae.zero_grad();

        // Reference: the same function written with torch.topk.
        using var xr = x0.clone().requires_grad_();
        var pre = (xr - sae.BDec).matmul(sae.WEnc) + sae.BEnc;
        var (vals, idx) = pre.topk(5, dim: -1);
        var fr = zeros_like(pre).scatter(-1, idx, nn.functional.relu(vals));
        AssertClose(fr, f.detach(), what: "features");
        (fr * w).sum().backward();
        AssertClose(xr.grad!, gradX, what: "dL/dx");
        AssertClose(sae.WEnc.grad!, gradW, what: "dL/dW_enc");
    }

    [Fact]
    public void TrainingFeatureActsMatchInferenceEncode()
    {
        var sae = MakeTopK();
        var x = randn(5, 6, generator: new Generator(3));
        var o = sae.TrainingForward(x, x, new SaeTrainContext());
        AssertClose(sae.Encode(x), o.FeatureActs, what: "feature acts");
        AssertClose(sae.forward(x), o.SaeOut.detach(), what: "reconstruction");
        var counts = F(o.FeatureActs).Chunk(12).Aggregate(new long[12], (acc, row) => acc.Select((a, j) => a + (row[j] != 0 ? 1 : 0)).ToArray());
        Assert.Equal(counts, o.ActiveCounts!.data<long>().ToArray());
    }

    /// <summary>The sparse backward equals autograd through the dense formulas (SAELens/dictionary_learning code paths),
    /// for the MSE and for dictionary_learning's normalised AuxK.</summary>
    /// <remarks><paramref name="deadShift"/> is added to b_enc of the dead latents: −1.5 leaves every row at most k_aux
    /// positive dead pre-activations (AuxK takes them without a top-k; asserted), +3 makes them all positive (top-k_aux,
    /// every chosen entry decoded), 0 mixes rows of both kinds.</remarks>
    [Theory]
    [InlineData(false, false, false, 0)]
    [InlineData(true, false, false, 0)]
    [InlineData(true, true, false, 0)]
    [InlineData(true, false, true, 0)]
    [InlineData(true, false, false, -1.5)]
    [InlineData(true, false, true, -1.5)]
    [InlineData(true, false, false, 3)]
    [InlineData(true, false, true, 3)]
    public void SparseGradientsEqualDenseAutograd(bool withAux, bool chunked, bool sparseAux, double deadShift)
    {
        var sae = MakeTopK(seed: 4);
        if (chunked) sae.ChunkElements = 24; // two rows per encoder chunk
        if (sparseAux) sae.AuxKDenseMaxRatio = 0; // AuxK through the sparse code (4 dead latents, k_aux 2: dense otherwise)
        sae.Training.AuxKCoefficient = 0.5;
        sae.Training.KAux = 2;
        var x = randn(9, 6, generator: new Generator(5));
        var target = randn(9, 6, generator: new Generator(6));
        var dead = zeros(12, dtype: ScalarType.Bool);
        dead[tensor(new long[] { 1, 4, 5, 9 })] = tensor(true);
        using (no_grad()) sae.BEnc.add_(dead.to(ScalarType.Float32) * deadShift, TorchScalars.One);
        if (deadShift < 0)
        {
            using var _ = no_grad();
            var positive = ((x - sae.BDec).matmul(sae.WEnc) + sae.BEnc).gt(0).logical_and(dead.unsqueeze(0)).sum(1);
            Assert.True(positive.max().item<long>() <= 2 && positive.sum().item<long>() > 0);
        }
        var o = sae.TrainingForward(x, target, new SaeTrainContext { DeadMask = withAux ? dead : null });
        o.Loss.backward();

        var p = Leaves(sae);
        var pre = (x - p["b_dec"]).matmul(p["W_enc"]) + p["b_enc"];
        var (tv, ti) = pre.topk(3, dim: -1);
        var f = zeros_like(pre).scatter(-1, ti, nn.functional.relu(tv));
        var y = f.matmul(p["W_dec"]) + p["b_dec"];
        var loss = (y - target).pow(2).sum(-1).mean();
        if (withAux)
        {
            var postRelu = nn.functional.relu(pre);
            var masked = where(dead.unsqueeze(0), postRelu, full_like(postRelu, double.NegativeInfinity));
            var (av, ai) = masked.topk(2, dim: -1, sorted: false);
            var auxF = zeros_like(pre).scatter(-1, ai, av);
            var e = (target - y).detach();
            var eHat = auxF.matmul(p["W_dec"]);
            var l2 = (e - eHat).pow(2).sum(-1).mean();
            var denom = (e - e.mean([0], keepdim: true)).pow(2).sum(-1).mean();
            loss = loss + 0.5 * (l2 / denom);
            AssertClose((l2 / denom).detach(), o.Losses["auxiliary_reconstruction_loss"], what: "aux value");
        }
        AssertClose(loss.detach(), o.Loss.detach(), what: "loss");
        loss.backward();
        foreach (var name in new[] { "W_enc", "b_enc", "W_dec", "b_dec" })
        {
            var actual = sae.named_parameters().Single(q => q.name == name).parameter.grad!;
            AssertClose(p[name].grad!, actual, rtol: 1e-4, atol: 1e-5, what: name);
        }
    }

    [Fact]
    public void AuxKGradientReachesTheEncoderColumnsOfDeadLatents()
    {
        var sae = MakeTopK(seed: 7);
        using (no_grad()) sae.BEnc.fill_(3f); // dead latents have positive pre-activations
        sae.Training.AuxKCoefficient = 1.0;
        var x = randn(2, 6, generator: new Generator(8));
        var target = randn(2, 6, generator: new Generator(9));
        var f = sae.Encode(x).detach();
        var dead = f.abs().sum(dim: 0).eq(0); // latents never active in this batch
        Assert.True(dead.any().item<bool>());

        sae.TrainingForward(x, target, new SaeTrainContext { DeadMask = dead }).Loss.backward();
        var deadCols = dead.nonzero().squeeze(1);
        var gDead = sae.WEnc.grad!.index_select(1, deadCols);
        Assert.True(gDead.abs().sum().item<float>() > 1e-6, "AuxK gradient did not reach W_enc of dead latents");
        Assert.True(sae.BEnc.grad!.index_select(0, deadCols).abs().sum().item<float>() > 1e-6);

        sae.zero_grad();
        sae.TrainingForward(x, target, new SaeTrainContext()).Loss.backward();
        var gNoAux = sae.WEnc.grad!.index_select(1, deadCols);
        Assert.Equal(0f, gNoAux.abs().sum().item<float>());
    }

    [Fact]
    public void DecoderRowsStayUnitNormAndGradientIsOrthogonalToThem()
    {
        var sae = MakeTopK();
        var norms = sae.WDec.norm(1);
        AssertClose(ones(12), norms, what: "init norms");
        var x = randn(5, 6, generator: new Generator(10));
        sae.TrainingForward(x, x, new SaeTrainContext()).Loss.backward();
        sae.BeforeOptimizerStep(new SaeTrainContext());
        Assert.True((sae.WDec.grad! * sae.WDec).sum(1).abs().max().item<float>() < 1e-6);
        using (no_grad()) sae.WDec.mul_(3);
        sae.AfterOptimizerStep(new SaeTrainContext());
        AssertClose(ones(12), sae.WDec.norm(1), what: "norms after step");
    }

    [Fact]
    public void LearningRateFollowsTheInverseSquareRootScaling()
    {
        var sae = new TopKSae(new SaeConfig { Architecture = "topk", DIn = 4, DSae = 65536, K = 2 });
        Assert.Equal(1e-4, sae.DefaultLearningRate(), 12); // 2e-4 / sqrt(4)
        Assert.Equal((0.9, 0.999), sae.DefaultAdamBetas);
    }
}
