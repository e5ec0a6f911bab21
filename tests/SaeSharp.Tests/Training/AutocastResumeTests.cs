using SaeSharp.Kernels;
using SaeSharp.Saes;
using SaeSharp.Tests.Kernels;
using SaeSharp.Training;
using static TorchSharp.torch;
using static SaeSharp.Tests.Training.TrainerTestKit;

namespace SaeSharp.Tests.Training;

/// <summary>Issue #9: with <see cref="SaeTrainingOptions.Autocast"/> the bfloat16 kernels reduce per-thread column sums;
/// at three or more threads their order must not depend on thread timing, or resume is not bit-exact.</summary>
[Collection(KernelPathCollection.Name)]
public class AutocastResumeTests
{
    private static SaeSlot[] Slots()
    {
        Sae Make(string arch)
        {
            var sae = SaeFactory.Create(new SaeConfig { Architecture = arch, DIn = 32, DSae = 64, K = arch == SaeArchitectures.TopK ? 4 : null });
            sae.Training.Autocast = true;
            sae.Training.CandidatePass = CandidatePass.On;
            if (arch == SaeArchitectures.Standard) sae.Training.SparsityCoefficient = 0.01;
            return sae;
        }
        return [new("relu", Make(SaeArchitectures.Standard)), new("jumprelu", Make(SaeArchitectures.JumpReLU)), new("topk", Make(SaeArchitectures.TopK))];
    }

    [Fact]
    public void Resume_with_autocast_at_three_threads_is_bit_exact()
    {
        int threads = get_num_threads();
        set_num_threads(3);
        var dirA = TempDir();
        var dirB = TempDir();
        try
        {
            using var data = SparseData(600, 32, 40, 0.1, seed: 11, scale: 2);
            var cfg = Config(12, batch: 150);
            cfg.Seed = 4;
            cfg.CheckpointPath = dirA;
            using var srcA = new InMemorySource(data.clone(), seed: 3);
            using var a = new SaeTrainer(cfg, srcA, Slots());
            using var resA = a.Run();

            cfg.CheckpointPath = dirB;
            using (var srcB = new InMemorySource(data.clone(), seed: 3))
            using (var b1 = new SaeTrainer(cfg, srcB, Slots()))
            using (b1.Run(stopAtStep: 6)) { }
            using var srcB2 = new InMemorySource(data.clone(), seed: 3);
            using var b2 = SaeTrainer.Resume(dirB, srcB2);
            using var resB = b2.Run();
            Assert.Equal(12, resB.Steps);
            for (int s = 0; s < 3; s++)
                foreach (var (k, t) in a.Saes[s].state_dict())
                    Assert.True(BitEqual(t, b2.Saes[s].state_dict()[k]), $"{a.Saes[s].Cfg.Architecture}.{k} differs after resume");
        }
        finally
        {
            set_num_threads(threads);
            Directory.Delete(dirA, true);
            Directory.Delete(dirB, true);
        }
    }
}
