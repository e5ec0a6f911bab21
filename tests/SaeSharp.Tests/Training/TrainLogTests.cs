using System.Text.Json.Nodes;
using SaeSharp.Training;
using static SaeSharp.Tests.Training.TrainerTestKit;

namespace SaeSharp.Tests.Training;

/// <summary>train_log.jsonl's <c>sparsity_coefficient</c>: λ as the step's loss weighed the penalty (SAELens's
/// <c>details/current_l1_coefficient</c>), only for architectures that have one.</summary>
public class TrainLogTests
{
    private static List<JsonNode> Lines(string dir) =>
        File.ReadAllLines(Path.Combine(dir, TrainLog.FileName)).Select(l => JsonNode.Parse(l)!).Where(n => n["event"] is null).ToList();

    /// <summary>With a λ warm-up of W steps, the step logged as s (s steps done) trained at 0-based step s − 1 with
    /// λ·min(1, (s − 1)/W). A TopK SAE trained beside it logs no coefficient.</summary>
    [Fact]
    public void The_coefficient_follows_the_warm_up_and_topk_logs_none()
    {
        var dir = TempDir();
        try
        {
            using var source = new InMemorySource(SparseData(256, 8, 12, 0.1, seed: 5));
            var cfg = Config(8);
            cfg.LogEverySteps = 1;
            cfg.LogPath = dir;
            cfg.L1WarmUpSteps = 4;
            using var trainer = new SaeTrainer(cfg, source,
                [new SaeSlot("relu", Standard(8, 16, l1: 0.3)), new SaeSlot("topk", SaeRecipes.Create("topk", 8, 16, k: 2, totalSteps: 8))]);
            using var result = trainer.Run();
            var lines = Lines(dir);
            var relu = lines.Where(l => (string)l["sae"]! == "relu").ToList();
            Assert.Equal(Enumerable.Range(1, 8).Select(s => (long)s), relu.Select(l => l["step"]!.GetValue<long>()));
            foreach (var l in relu)
            {
                long s = l["step"]!.GetValue<long>();
                Assert.Equal(0.3 * Math.Min(1, (s - 1) / 4.0), l["sparsity_coefficient"]!.GetValue<double>(), 12);
            }
            Assert.All(lines.Where(l => (string)l["sae"]! == "topk"), l => Assert.Null(l["sparsity_coefficient"]));
        }
        finally { Directory.Delete(dir, true); }
    }

    /// <summary>With a target L0 the controller moves λ every step (from the SAE's starting coefficient) and there is no
    /// warm-up: the first logged coefficient is the starting λ itself.</summary>
    [Fact]
    public void A_target_l0_runs_coefficient_starts_at_its_lambda_and_moves()
    {
        var dir = TempDir();
        try
        {
            using var source = new InMemorySource(SparseData(256, 8, 12, 0.1, seed: 6));
            var cfg = Config(20);
            cfg.LogEverySteps = 1;
            cfg.LogPath = dir;
            cfg.L1WarmUpSteps = 10;
            var sae = Standard(8, 32, l1: 0.3);
            sae.Training.AdaptToTargetL0 = true;
            sae.Training.TargetL0 = 2;
            using var trainer = new SaeTrainer(cfg, source, [new SaeSlot("relu", sae)]);
            using var result = trainer.Run();
            var lambdas = Lines(dir).Select(l => l["sparsity_coefficient"]!.GetValue<double>()).ToList();
            Assert.Equal(20, lambdas.Count);
            Assert.Equal(0.3, lambdas[0], 12);
            Assert.True(lambdas.Distinct().Count() > 10, string.Join(", ", lambdas));
            Assert.All(lambdas, l => Assert.True(l > 0));
        }
        finally { Directory.Delete(dir, true); }
    }
}
