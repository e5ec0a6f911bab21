using SaeSharp.Activations;
using SaeSharp.Evaluation;
using SaeSharp.Saes;
using SaeSharp.Tests.Models;

namespace SaeSharp.Tests;

/// <summary>Library progress (<see cref="WorkProgress"/> through IProgress): counts only grow and reach the total.</summary>
public class WorkProgressTests : ModelTestBase
{
    private sealed class Recorder : IProgress<WorkProgress>
    {
        public List<WorkProgress> Reports { get; } = [];
        public void Report(WorkProgress value) => Reports.Add(value);
    }

    private static void AssertMonotoneToTotal(List<WorkProgress> reports, string unit, long total)
    {
        Assert.NotEmpty(reports);
        Assert.All(reports, r => Assert.Equal(unit, r.Unit));
        for (int i = 1; i < reports.Count; i++)
        {
            Assert.True(reports[i].Done > reports[i - 1].Done, $"report {i}: {reports[i].Done} after {reports[i - 1].Done}");
            Assert.True(reports[i].Elapsed >= reports[i - 1].Elapsed);
        }
        Assert.Equal(total, reports[^1].Done);
        Assert.All(reports, r => Assert.Equal(total, r.Total));
        Assert.Equal(TimeSpan.Zero, reports[^1].Eta);
    }

    [Fact]
    public void Rate_and_eta_follow_from_done_total_and_elapsed()
    {
        var p = new WorkProgress("tokens", 250, 1000, TimeSpan.FromSeconds(5));
        Assert.Equal(50, p.PerSecond);
        Assert.Equal(TimeSpan.FromSeconds(15), p.Eta); // 750 more at 50/s
        Assert.Null((p with { Total = null }).Eta);
        Assert.Null((p with { Done = 0 }).Eta);
    }

    [Fact]
    public void Downstream_eval_reports_tokens_up_to_the_budget()
    {
        using var model = Gpt2();
        var windows = SaeSharp.Tests.Activations.ModelActivationSourceTests.Windows(11, 8);
        var cfg = new SaeConfig { DIn = 16, DSae = 32 };
        cfg.Metadata.HookName = "blocks.0.hook_resid_post";
        using var sae = SaeFactory.Create(cfg);
        sae.InitializeWeights(new TorchSharp.torch.Generator(1));
        var rec = new Recorder();
        DownstreamEvaluator.Evaluate(model, [new DownstreamTarget(sae)], windows,
            new DownstreamEvalOptions { BatchSizePrompts = 3, MaxContexts = 10, Progress = rec });
        Assert.Equal(4, rec.Reports.Count); // batches of 3, 3, 3, 1 windows
        AssertMonotoneToTotal(rec.Reports, "tokens", 10 * 8);
    }

    [Fact]
    public void Cache_reports_tokens_harvested_up_to_the_budget()
    {
        using var model = Gpt2();
        var windows = SaeSharp.Tests.Activations.ModelActivationSourceTests.Windows(20, 8);
        var rec = new Recorder();
        ActivationCacheFolder.Write(Sub("cache"), model, new HarvestSpec("blocks.1.hook_resid_pre"), windows,
            new ActivationCacheOptions { ContextSize = 8, BatchSizePrompts = 2, ContextsPerShard = 5, MaxTokens = 12 * 8, Progress = rec });
        AssertMonotoneToTotal(rec.Reports, "tokens", 12 * 8);
    }

    [Fact]
    public void Attribution_reports_the_tokens_of_every_pass()
    {
        // One attribution pass plus 3 integrated-gradient passes for each of the 2 SAEs: 7 passes over 2 x 5 tokens.
        using var model = Gpt2();
        var saes = new List<Sae>();
        foreach (var hook in new[] { "blocks.0.hook_resid_post", "blocks.1.hook_resid_post" })
        {
            var cfg = new SaeConfig { DIn = 16, DSae = 32 };
            cfg.Metadata.HookName = hook;
            saes.Add(SaeFactory.Create(cfg));
            saes[^1].InitializeWeights(new TorchSharp.torch.Generator(2));
        }
        try
        {
            var hooked = new SaeSharp.Interventions.HookedSaeTransformer(model);
            foreach (var s in saes) hooked.AddSae(s, useErrorTerm: true);
            using var tokens = TorchSharp.torch.tensor(new long[] { 1, 2, 3, 4, 5, 6, 7, 8, 9, 10 }).reshape(2, 5);
            var rec = new Recorder();
            using var result = hooked.Attribute(tokens, SaeSharp.Interventions.AttributionMetric.Parse("loss", null), 3, rec);
            Assert.Equal(7, rec.Reports.Count);
            AssertMonotoneToTotal(rec.Reports, "tokens", 7 * 10);
        }
        finally
        {
            foreach (var s in saes) s.Dispose();
        }
    }
}
