using SaeSharp.Activations;
using SaeSharp.IO;
using SaeSharp.Kernels;
using SaeSharp.Tests.Activations;
using SaeSharp.Tests.Kernels;
using SaeSharp.Tests.Models;
using static TorchSharp.torch;

namespace SaeSharp.Tests.Training;

/// <summary>
/// The device-generic path (issue #14 §5): with <c>SAESHARP_KERNELS=torch</c> (<see cref="KernelPath.Torch"/>) no custom
/// CPU kernel runs, exactly as on a CUDA device, so harvesting on CPU in that mode checks the torch fallbacks against the
/// kernels (training: <see cref="DeviceTrainingTests"/>).
/// </summary>
[Collection(KernelPathCollection.Name)]
public class TorchFallbackTests : ModelTestBase
{
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
