using SaeSharp.Kernels;
using SaeSharp.Saes;
using SaeSharp.Tests.Kernels;
using static TorchSharp.torch;
using static SaeSharp.Tests.Saes.SaeTestUtil;

namespace SaeSharp.Tests.Saes;

/// <summary>The TopK family's training step through the candidate pass, on every kernel path this CPU runs: the active
/// latents (AuxK's dead-latent choice included) and the losses are those of the plain float32 step.</summary>
[Collection(KernelPathCollection.Name)]
public class TopKCandidatePassTests
{
    public static TheoryData<KernelPath, string, float> PathsAndArchitectures()
    {
        var data = new TheoryData<KernelPath, string, float>();
        foreach (var p in CpuKernels.Supported)
            foreach (var a in new[] { SaeArchitectures.TopK, SaeArchitectures.BatchTopK, SaeArchitectures.MatryoshkaBatchTopK })
                foreach (float shift in new[] { 0f, -3f })
                    data.Add(p, a, shift);
        return data;
    }

    /// <remarks><paramref name="deadShift"/> is added to b_enc of the dead latents: at 0 about half their pre-activations
    /// are positive (more than k_aux per row: AuxK ranks them), at −3 a few per row (AuxK takes every positive one).</remarks>
    [Theory]
    [MemberData(nameof(PathsAndArchitectures))]
    public void Training_step_selects_the_float32_latents(KernelPath path, string arch, float deadShift)
    {
        const int dIn = 256, dSae = 1024, k = 16, n = 96;
        using var scope = NewDisposeScope();
        var x = randn(n, dIn, generator: new Generator(5)) * 2;
        var target = x + randn(n, dIn, generator: new Generator(6)) * 0.1;
        var dead = zeros(dSae, dtype: ScalarType.Bool);
        dead[TensorIndex.Slice(0, dSae, 3)] = true; // a third dead: AuxK runs through the sparse form too
        (float[] Acts, Dictionary<string, float> Losses) Step(CandidatePass mode)
        {
            using var s = NewDisposeScope();
            var sae = (TopKFamilySae)Make(new SaeConfig
            {
                Architecture = arch, DIn = dIn, DSae = dSae, K = k,
                MatryoshkaWidths = arch == SaeArchitectures.MatryoshkaBatchTopK ? [dSae / 4, dSae] : null,
            }, seed: 7);
            sae.Training.CandidatePass = mode;
            using (no_grad()) sae.BEnc.add_(dead.to(ScalarType.Float32) * deadShift, TorchScalars.One);
            sae.AuxKDenseMaxRatio = path == KernelPath.Scalar ? 100 : 1; // both AuxK forms
            var o = sae.TrainingForward(x, target, new SaeTrainContext { DeadMask = dead });
            var acts = F(o.FeatureActs);
            var losses = o.Losses.ToDictionary(kv => kv.Key, kv => kv.Value.item<float>());
            sae.Dispose();
            return (acts, losses);
        }
        var (plainActs, plainLosses) = Step(CandidatePass.Off);
        try
        {
            CpuKernels.Path = path;
            var (acts, losses) = Step(CandidatePass.On);
            for (int e = 0; e < acts.Length; e++)
            {
                Assert.Equal(plainActs[e] != 0, acts[e] != 0);
                Assert.Equal(plainActs[e], acts[e], 1e-4f);
            }
            Assert.Equal(plainLosses.Keys.Order(), losses.Keys.Order());
            foreach (var (name, v) in plainLosses) Assert.Equal(v, losses[name], Math.Abs(v) * 1e-4 + 1e-6);
        }
        finally { CpuKernels.ResetPath(); }
    }

    /// <summary>PositiveAmong lists exactly the entries of the chosen columns whose float32 pre-activation is positive
    /// (against a dense float32 product; exact zeros are not), and gives up when a row has more than the limit.</summary>
    [Theory]
    [MemberData(nameof(Paths))]
    public void PositiveAmong_lists_the_positive_float32_entries(KernelPath path)
    {
        const int dIn = 64, dSae = 256, n = 40;
        using var scope = NewDisposeScope();
        var x = randn(n, dIn, generator: new Generator(21));
        var encT = randn(dSae, dIn, generator: new Generator(22)) / Math.Sqrt(dIn);
        var bEnc = randn(dSae, generator: new Generator(23)) - 2.5;
        var columns = arange(3, dSae, 5, dtype: ScalarType.Int64);
        // Row 0 is zero and eight chosen columns have no bias: those pre-activations are exactly 0, not positive.
        x[0] = 0;
        bEnc.index_fill_(0, columns[..8], 0);
        var exact = (x.matmul(encT.t()) + bEnc).index_select(1, columns);
        var expected = exact.gt(0);
        long most = expected.sum(1).max().item<long>();
        Assert.True(most > 0);
        try
        {
            CpuKernels.Path = path;
            using var enc = new CandidateEncoder(encT.contiguous(), bEnc, path);
            using var approx = enc.Approximate(x);
            var (rows, local, values) = enc.PositiveAmong(approx, columns, (int)most)!.Value;
            var got = zeros(n, columns.shape[0], dtype: ScalarType.Bool).index_put_(tensor(true), rows, local);
            Assert.True(got.eq(expected).all().item<bool>());
            AssertClose(exact.index(rows, local), values, rtol: 1e-5, atol: 1e-5, what: "values");
            Assert.Null(enc.PositiveAmong(approx, columns, (int)most - 1));
        }
        finally { CpuKernels.ResetPath(); }
    }

    public static TheoryData<KernelPath> Paths()
    {
        var data = new TheoryData<KernelPath>();
        foreach (var p in CpuKernels.Supported.Where(p => p != KernelPath.Torch)) data.Add(p); // the torch path has no candidate pass
        return data;
    }
}
