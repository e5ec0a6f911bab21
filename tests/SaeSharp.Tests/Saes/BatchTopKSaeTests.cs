using SaeSharp.Saes;
using static TorchSharp.torch;
using static SaeSharp.Tests.Saes.SaeTestUtil;

namespace SaeSharp.Tests.Saes;

public class BatchTopKSaeTests
{
    private static BatchTopKSae MakeBatchTopK(int dIn = 5, int dSae = 16, int k = 2, int seed = 1) =>
        (BatchTopKSae)Make(new SaeConfig { Architecture = "batchtopk", DIn = dIn, DSae = dSae, K = k }, seed);

    /// <summary>The training activations are the k·N largest ReLU'd pre-activations of the batch (sorted in C#).</summary>
    private static void AssertIsBatchTopK(BatchTopKSae sae, Tensor x, int k)
    {
        int n = (int)x.shape[0], d = (int)sae.Cfg.DSae;
        var pre = F(sae.HiddenPre(x)).Select(v => Math.Max(0f, v)).ToArray();
        var cut = pre.OrderByDescending(v => v).ElementAt(k * n - 1);
        var f = F(sae.EncodeBatchTopK(x));
        for (int i = 0; i < n * d; i++)
            Assert.Equal(pre[i] >= cut ? pre[i] : 0f, f[i], 5);
        Assert.Equal(k * n, f.Count(v => v != 0)); // mean L0 = k
    }

    [Fact]
    public void BatchSelectionKeepsTheKTimesNLargestActivations()
    {
        var sae = MakeBatchTopK();
        using (no_grad()) sae.BEnc.fill_(2f);
        AssertIsBatchTopK(sae, randn(6, 5, generator: new Generator(2)), 2);
    }

    [Fact]
    public void BatchSelectionIsExactWhenOneRowHoldsMoreThanItsCandidates()
    {
        var sae = MakeBatchTopK();
        using (no_grad()) sae.BEnc.fill_(2f);
        var x = randn(6, 5, generator: new Generator(3));
        x[0] = x[0] * 200; // row 0 dominates: more than 4k of the batch's top k·N entries are in it
        using (no_grad()) { sae.BDec.zero_(); sae.BEnc.fill_(0.5f); sae.WEnc.abs_(); }
        x[0] = x[0].abs();
        AssertIsBatchTopK(sae, x, 2);
    }

    [Fact]
    public void ThresholdFollowsDictionaryLearningsRunningMinimum()
    {
        var sae = MakeBatchTopK();
        sae.Training.ThresholdStartStep = 1;
        sae.Training.ThresholdMomentum = 0.9;
        var x1 = randn(6, 5, generator: new Generator(4));
        var x2 = randn(6, 5, generator: new Generator(5));
        float MinPositive(Tensor x) => F(sae.EncodeBatchTopK(x)).Where(v => v > 0).Min();

        sae.TrainingForward(x1, x1, new SaeTrainContext { Step = 1 });
        Assert.Equal(-1f, sae.Threshold[0].item<float>());
        float m1 = MinPositive(x1);
        sae.TrainingForward(x1, x1, new SaeTrainContext { Step = 2 });
        Assert.Equal(m1, sae.Threshold[0].item<float>(), 5);
        float m2 = MinPositive(x2);
        sae.TrainingForward(x2, x2, new SaeTrainContext { Step = 3 });
        Assert.Equal(0.9 * m1 + 0.1 * m2, sae.Threshold[5].item<float>(), 5);
    }

    [Fact]
    public void InferenceIsAJumpReluWithTheThresholdAndSavesAsOne()
    {
        var sae = MakeBatchTopK();
        using (no_grad()) sae.Threshold.fill_(0.05f);
        var x = randn(6, 5, generator: new Generator(6));
        var pre = F(sae.HiddenPre(x));
        var f = F(sae.Encode(x));
        for (int i = 0; i < pre.Length; i++) Assert.Equal(pre[i] > 0.05f ? pre[i] : 0f, f[i], 5);

        var inf = sae.ToInferenceSae();
        Assert.IsType<JumpReluSae>(inf);
        Assert.Equal("jumprelu", inf.Cfg.Architecture);
        Assert.Null(inf.Cfg.K);
        AssertClose(sae.Encode(x), inf.Encode(x), what: "encode");
        AssertClose(sae.forward(x), inf.forward(x), what: "forward");
        Assert.Equal(sae.state_dict().Keys.OrderBy(s => s, StringComparer.Ordinal), inf.state_dict().Keys.OrderBy(s => s, StringComparer.Ordinal));
    }

    [Theory]
    [InlineData(false)]
    [InlineData(true)]
    public void SparseGradientsEqualDenseAutograd(bool oneRowDominates)
    {
        var sae = MakeBatchTopK(seed: 3);
        sae.ChunkElements = 32; // two rows per encoder chunk
        var x = randn(7, 5, generator: new Generator(7));
        if (oneRowDominates) x[0] = x[0] * 100; // forces the dense fallback
        var o = sae.TrainingForward(x, x, new SaeTrainContext());
        o.Loss.backward();
        var p = Leaves(sae);
        var pre = (x - p["b_dec"]).matmul(p["W_enc"]) + p["b_enc"];
        var acts = nn.functional.relu(pre).flatten();
        var (tv, ti) = acts.topk(2 * 7);
        var f = zeros_like(acts).scatter(0, ti, tv).reshape(7, 16);
        var loss = (f.matmul(p["W_dec"]) + p["b_dec"] - x).pow(2).sum(-1).mean();
        AssertClose(loss.detach(), o.Loss.detach(), what: "loss");
        loss.backward();
        foreach (var name in new[] { "W_enc", "b_enc", "W_dec", "b_dec" })
            AssertClose(p[name].grad!, sae.named_parameters().Single(q => q.name == name).parameter.grad!, what: name);
    }
}
