using SaeSharp.Activations;
using SaeSharp.Evaluation;
using SaeSharp.Saes;
using SaeSharp.Tests.Models;
using TorchSharp;
using static TorchSharp.torch;

namespace SaeSharp.Tests.Activations;

public class PipelineLeakTests : ModelTestBase
{
    [Fact]
    public void Harvesting_restoring_and_evaluating_leave_no_live_tensors()
    {
        using var model = Gpt2();
        var windows = ModelActivationSourceTests.Windows(16, 8);
        var spec = HarvestSpec.Resolve(model.HookPoints, "blocks.0.mlp", HarvestMode.InToOut);
        var opts = new ModelActivationSourceOptions { ContextSize = 8, BatchSizePrompts = 2, BufferContexts = 4, ExcludeTokenIds = [ModelActivationSourceTests.Bos] };
        var cfg = new SaeConfig { DIn = 16, DSae = 8 };
        cfg.Metadata.HookName = "blocks.1.hook_resid_pre";
        using var sae = SaeFactory.Create(cfg);
        // Warm-up (lazy native state), then count.
        DownstreamEvaluator.Evaluate(model, [new DownstreamTarget(sae)], windows.Take(2));
        long before = DisposeScopeManager.Statistics.ThreadTotalLiveCount;

        using (var src = new ModelActivationSource(model, spec, () => windows, opts))
        {
            for (int i = 0; i < 6; i++) src.Next(9)!.Dispose();
            var state = src.SaveState();
            using var other = new ModelActivationSource(model, spec, () => windows, opts);
            other.LoadState(state);
            other.Next(9)!.Dispose();
        }
        DownstreamEvaluator.Evaluate(model, [new DownstreamTarget(sae)], windows.Take(5), new DownstreamEvalOptions { BatchSizePrompts = 2 });
        Assert.Equal(before, DisposeScopeManager.Statistics.ThreadTotalLiveCount);
    }
}
