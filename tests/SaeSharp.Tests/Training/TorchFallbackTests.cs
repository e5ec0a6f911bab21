using SaeSharp.Activations;
using SaeSharp.IO;
using SaeSharp.Kernels;
using SaeSharp.Saes;
using SaeSharp.Tests.Activations;
using SaeSharp.Tests.Kernels;
using SaeSharp.Tests.Models;
using SaeSharp.Training;
using static TorchSharp.torch;
using static SaeSharp.Tests.Training.TrainerTestKit;

namespace SaeSharp.Tests.Training;

/// <summary>
/// The device-generic path (issue #14 §5): with <c>SAESHARP_KERNELS=torch</c> (<see cref="KernelPath.Torch"/>) no custom
/// CPU kernel runs, exactly as on a CUDA device, so training and harvesting on CPU in that mode check the torch fallbacks
/// against the kernels.
/// </summary>
[Collection(KernelPathCollection.Name)]
public class TorchFallbackTests : ModelTestBase
{
    private static SaeSlot[] Slots()
    {
        StandardSae Relu(double density) => new(new SaeConfig { DIn = 24, DSae = 96 })
        {
            SparseTrainingDensity = density,
            Training = { SparsityCoefficient = 0.05 },
        };
        var april = Relu(1.0);
        april.Training.Penalty = SparsityPenalty.L1DecoderNorm;
        return
        [
            new("relu-dense", Relu(0)),
            new("relu-sparse", april),
            new("topk", SaeFactory.Create(new SaeConfig { Architecture = SaeArchitectures.TopK, DIn = 24, DSae = 96, K = 5 })),
        ];
    }

    private static List<Dictionary<string, Tensor>> Train(bool torchOps)
    {
        try
        {
            if (torchOps) CpuKernels.Path = KernelPath.Torch;
            using var data = SparseData(640, 24, 60, 0.08, seed: 5, scale: 2);
            var cfg = Config(12, batch: 64);
            cfg.Seed = 9;
            using var src = new InMemorySource(data.clone(), seed: 2);
            using var trainer = new SaeTrainer(cfg, src, Slots());
            using var result = trainer.Run();
            return trainer.Saes.Select(s => s.state_dict().ToDictionary(kv => kv.Key, kv => kv.Value.detach().clone())).ToList();
        }
        finally { CpuKernels.ResetPath(); }
    }

    [Fact]
    public void Training_on_torch_operations_matches_the_cpu_kernels()
    {
        var kernels = Train(torchOps: false);
        var torchOps = Train(torchOps: true);
        // (BatchTopK runs the same sparse functions as TopK; its choice across the batch can flip a near-tie on a rounding
        // difference, which Adam then turns into an lr-sized change, so it is not compared here.)
        string[] names = ["relu-dense", "relu-sparse", "topk"];
        for (int s = 0; s < names.Length; s++)
            foreach (var (key, t) in kernels[s])
            {
                double diff = MaxAbsDiff(t, torchOps[s][key]);
                Assert.True(diff < 1e-4 * (1 + t.abs().max().item<float>()), $"{names[s]}.{key}: max |diff| {diff}");
            }
    }

    [Fact]
    public void Harvesting_on_torch_operations_writes_the_same_cache()
    {
        using var model = Gpt2();
        var windows = ModelActivationSourceTests.Windows(6, 8);
        var spec = new HarvestSpec("blocks.1.hook_resid_pre");
        var opts = new ActivationCacheOptions { ContextSize = 8, BatchSizePrompts = 2, ContextsPerShard = 3 };
        ActivationCacheFolder.Write(Sub("kernels"), model, spec, windows, opts);
        try
        {
            CpuKernels.Path = KernelPath.Torch;
            ActivationCacheFolder.Write(Sub("torch"), model, spec, windows, opts);
        }
        finally { CpuKernels.ResetPath(); }
        var a = ActivationCacheManifest.Read(Sub("kernels"));
        var b = ActivationCacheManifest.Read(Sub("torch"));
        Assert.Equal(a.Shards.Count, b.Shards.Count);
        for (int i = 0; i < a.Shards.Count; i++)
        {
            var x = SafeTensors.Load(Path.Combine(Sub("kernels"), a.Shards[i].File))["activations"];
            var y = SafeTensors.Load(Path.Combine(Sub("torch"), b.Shards[i].File))["activations"];
            Assert.True(x.allclose(y, 1e-5, 1e-6), $"shard {i} differs");
        }
    }
}
