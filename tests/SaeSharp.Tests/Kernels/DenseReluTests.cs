using SaeSharp.Kernels;
using SaeSharp.Saes;
using SaeSharp.Tests.Saes;
using static TorchSharp.torch;

namespace SaeSharp.Tests.Kernels;

/// <summary>The fused dense ReLU training pass (<see cref="DenseRelu"/>) against plain torch autograd written here.</summary>
[Collection(KernelPathCollection.Name)]
public class DenseReluTests
{
    [Fact]
    public void ReluBias_matches_torch_and_counts_per_column()
    {
        // 37 columns: the vector loop and its scalar tail; NaN passes through as in torch's relu.
        var p = randn(9, 37, generator: new Generator(1));
        p[2, 5] = tensor(float.NaN);
        p[4, 36] = tensor(0f);
        var b = randn(37, generator: new Generator(2)) * 0.5;
        b[36] = tensor(0f);
        var expected = nn.functional.relu(p + b);
        var f = p.clone();
        var (sums, counts) = DenseReluKernels.ReluBias(f, b);
        Assert.True(f.isnan()[2, 5].item<bool>());
        Assert.True(expected.allclose(f, 0, 0, equal_nan: true));
        var finite = expected.nan_to_num(0).to(ScalarType.Float64);
        var colSums = finite.sum(0L);
        var colCounts = expected.gt(0).sum(0L);
        for (int j = 0; j < 37; j++)
        {
            if (j != 5) Assert.True(Math.Abs(colSums[j].item<double>() - sums[j]) <= 1e-6 * (1 + Math.Abs(sums[j])), $"column {j}");
            Assert.Equal(colCounts[j].item<long>(), counts[j]);
        }
    }

    [Fact]
    public void MaskedGradient_is_the_relu_mask_of_the_shifted_gradient()
    {
        var f = nn.functional.relu(randn(13, 21, generator: new Generator(3)));
        var g = randn(13, 21, generator: new Generator(4));
        var c = Enumerable.Range(0, 21).Select(j => 0.1f * j - 1).ToArray();
        var expected = f.gt(0).to(ScalarType.Float32) * (g + tensor(c));
        var sums = DenseReluKernels.MaskedGradient(g, f, c);
        SaeTestUtil.AssertClose(expected, g, 1e-6, 1e-6, "masked gradient");
        var colSums = expected.sum(0L);
        for (int j = 0; j < 21; j++) Assert.True(Math.Abs(colSums[j].item<float>() - sums[j]) <= 1e-5 * (1 + Math.Abs(sums[j])), $"column {j}");
    }

    /// <summary>Loss, reconstruction, activations, counts and every gradient of a dense training step equal plain autograd's
    /// (ReLU(x̃·W_enc + b_enc), decoder addmm, mean ‖·‖² + λ·s·L1) for both L1 penalties, with and without input centring,
    /// on the fused kernels with each GEMM provider (<see cref="Blas"/>; at the larger size its output split over threads)
    /// and on the torch fallback (the path of non-CPU devices).</summary>
    [SkippableTheory]
    [InlineData(SparsityPenalty.L1, true, false, "torch")]
    [InlineData(SparsityPenalty.L1DecoderNorm, true, false, "torch")]
    [InlineData(SparsityPenalty.L1, false, false, "torch")]
    [InlineData(SparsityPenalty.L1DecoderNorm, false, true, "auto")]
    [InlineData(SparsityPenalty.L1, true, true, "auto")]
    [InlineData(SparsityPenalty.L1, true, false, "openblas")]
    [InlineData(SparsityPenalty.L1DecoderNorm, false, false, "openblas")]
    [InlineData(SparsityPenalty.L1, true, false, "openblas", 64, 48, 700)]
    [InlineData(SparsityPenalty.L1DecoderNorm, true, false, "torch", 64, 48, 700)]
    public void Dense_step_equals_plain_autograd(SparsityPenalty penalty, bool centred, bool torchOps, string gemm, int n = 11, int dIn = 6, int dSae = 37)
    {
        var provider = Blas.Parse(gemm);
        Skip.If(provider == GemmProvider.OpenBlas && !Blas.Available, "OpenBLAS (libopenblas.so.0) is not installed");
        using var scope = NewDisposeScope();
        var sae = new StandardSae(new SaeConfig { DIn = dIn, DSae = dSae, ApplyBDecToInput = centred }) { SparseTrainingDensity = 0 };
        sae.InitializeWeights(new Generator(1), decoderNorm: 0.7);
        using (no_grad())
        {
            sae.BEnc.copy_(randn(dSae, generator: new Generator(2)) * 0.2);
            sae.BDec.copy_(randn(dIn, generator: new Generator(3)) * 0.3);
            sae.WDec.mul_(rand(dSae, 1, generator: new Generator(9)) + 0.5); // decoder norms differ (the weighted L1)
        }
        sae.Training.Penalty = penalty;
        sae.Training.SparsityCoefficient = 0.3;
        var x = randn(n, dIn, generator: new Generator(5));
        var target = randn(n, dIn, generator: new Generator(6));
        var leaves = SaeTestUtil.Leaves(sae);

        SaeTrainOutput o;
        long blasCalls = Blas.OpenBlasCalls;
        try
        {
            if (torchOps) CpuKernels.Path = KernelPath.Torch;
            Blas.Provider = provider;
            o = sae.TrainingForward(x, target, new SaeTrainContext { SparsityScale = 0.5 });
            o.Loss.backward();
        }
        finally
        {
            CpuKernels.ResetPath();
            Blas.ResetProvider();
        }
        Assert.False(sae.LastTrainingPassSparse);
        if (provider == GemmProvider.OpenBlas) Assert.Equal(5, Blas.OpenBlasCalls - blasCalls); // the five GEMMs of the step
        if (provider == GemmProvider.Torch || torchOps) Assert.Equal(blasCalls, Blas.OpenBlasCalls);

        var (we, be, wd, bd) = (leaves["W_enc"], leaves["b_enc"], leaves["W_dec"], leaves["b_dec"]);
        var pre = (centred ? x - bd : x).matmul(we) + be;
        var f = nn.functional.relu(pre);
        var y = f.matmul(wd) + bd;
        var mse = (y - target).pow(2).sum(-1).mean();
        var l1 = penalty == SparsityPenalty.L1 ? f.sum(-1).mean() : (f * wd.norm(1)).sum(-1).mean();
        var loss = mse + l1 * (0.3 * 0.5);
        loss.backward();

        Assert.Equal(loss.item<float>(), o.Loss.item<float>(), 1e-4 + 1e-6 * Math.Abs(loss.item<float>()));
        Assert.Equal(l1.item<float>(), o.Losses["l1_loss"].item<float>(), 1e-4 + 1e-6 * Math.Abs(l1.item<float>()));
        SaeTestUtil.AssertClose(y.detach(), o.SaeOut.detach(), what: "reconstruction");
        SaeTestUtil.AssertClose(f.detach(), o.FeatureActs.detach(), what: "activations");
        // The fused kernels must count the firings the trainer reads; the torch fallback may leave them to FeatureActs.
        if (!torchOps) Assert.NotNull(o.ActiveCounts);
        if (o.ActiveCounts is { } counts) Assert.Equal(pre.detach().gt(0).sum(0L).data<long>().ToArray(), counts.data<long>().ToArray());
        foreach (var (name, p) in sae.named_parameters())
            SaeTestUtil.AssertClose(leaves[name].grad!, p.grad!, what: $"{name} grad");
    }

    /// <summary>Nothing of the fused pass outlives the step: the live-tensor count returns to where it was.</summary>
    [Fact]
    public void Dense_step_leaks_no_tensors()
    {
        var sae = new StandardSae(new SaeConfig { DIn = 8, DSae = 32 }) { SparseTrainingDensity = 0 };
        sae.InitializeWeights(new Generator(1));
        var x = randn(16, 8, generator: new Generator(2));
        void Step()
        {
            using var scope = NewDisposeScope();
            sae.zero_grad();
            var o = sae.TrainingForward(x, x, new SaeTrainContext());
            o.Loss.backward();
        }
        Step();
        long before = TorchSharp.DisposeScopeManager.Statistics.ThreadTotalLiveCount;
        Step();
        Assert.Equal(before, TorchSharp.DisposeScopeManager.Statistics.ThreadTotalLiveCount);
    }
}
