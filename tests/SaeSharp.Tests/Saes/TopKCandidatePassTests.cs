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
    public static TheoryData<KernelPath, string> PathsAndArchitectures()
    {
        var data = new TheoryData<KernelPath, string>();
        foreach (var p in CpuKernels.Supported)
            foreach (var a in new[] { SaeArchitectures.TopK, SaeArchitectures.BatchTopK, SaeArchitectures.MatryoshkaBatchTopK })
                data.Add(p, a);
        return data;
    }

    [Theory]
    [MemberData(nameof(PathsAndArchitectures))]
    public void Training_step_selects_the_float32_latents(KernelPath path, string arch)
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
}
