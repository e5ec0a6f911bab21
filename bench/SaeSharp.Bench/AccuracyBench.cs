using System.Diagnostics;
using SaeSharp.Kernels;
using SaeSharp.Activations;
using SaeSharp.Evaluation;
using SaeSharp.Saes;
using SaeSharp.Synthetic;
using SaeSharp.Training;
using static TorchSharp.torch;

namespace SaeSharp.Bench;

/// <summary>
/// <c>accuracy</c>: the accuracy cost of <see cref="SaeTrainingOptions.Autocast"/>. Each recipe is trained twice with the
/// same seed, data order and initialisation — float32, then bfloat16 matmuls — on synthetic superposition data at the
/// throughput bench's shape (d_in 512, d_sae 8192, batch 4096), and both are evaluated in float32 on the same held-out
/// rows: FVU, MSE, L0, dead fraction and MMCS against the true features, next to the training time per step.
/// Usage: <c>accuracy [--steps 300] [--arch topk,batchtopk,relu-april] [--d-in 512] [--d-sae 8192] [--features 4096]
/// [--batch 4096] [--k 32] [--rows 262144]</c>.
/// </summary>
internal static class AccuracyBench
{
    public static int Run(string[] args)
    {
        var a = BenchArgs.For("accuracy", args);
        int steps = a.Int("--steps", 300), dIn = a.Int("--d-in", 512), dSae = a.Int("--d-sae", 8192), features = a.Int("--features", 4096);
        int batch = a.Int("--batch", 4096), k = a.Int("--k", 32), rows = a.Int("--rows", 262_144);
        var recipes = a.List("--arch", ["topk", "batchtopk", "relu-april"]);
        Console.WriteLine($"accuracy bench: synthetic data, {features} true features in d_in {dIn}; d_sae {dSae}, batch {batch}, k {k}, "
            + $"{steps} steps on {rows:N0} rows (looped); eval on 16,384 held-out rows; bf16 hardware: {CpuFeatures.Bf16MatMul}");
        using var gen = new SyntheticGenerator(new SyntheticOptions { DIn = dIn, NFeatures = features, Seed = 7, MaxFrequency = 0.05 });
        using var train = gen.SampleActivations(rows);
        using var eval = gen.SampleActivations(16_384);
        Console.WriteLine($"{"recipe",-12} {"matmuls",-8} {"ms/step",8} {"FVU",8} {"MSE",10} {"L0",8} {"dead %",7} {"MMCS",7} {"rec>0.9",8}");
        foreach (var recipe in recipes)
        {
            foreach (bool autocast in new[] { false, true })
            {
                var (ms, m) = TrainAndEvaluate(recipe, autocast, train, eval, gen.Features, dIn, dSae, batch, k, steps);
                Console.WriteLine($"{recipe,-12} {(autocast ? "bf16" : "fp32"),-8} {ms,8:F0} {m.Fvu,8:F4} {m.Mse,10:G4} {m.L0,8:F1} "
                    + $"{m.DeadFraction * 100,7:F1} {m.Mmcs ?? double.NaN,7:F3} {(m.RecoveredFraction ?? double.NaN) * 100,7:F1}%");
            }
        }
        return 0;
    }

    private static (double MsPerStep, SaeEvalResult Metrics) TrainAndEvaluate(string recipe, bool autocast, Tensor train, Tensor eval,
        Tensor truth, int dIn, int dSae, int batch, int k, int steps)
    {
        bool topK = SaeRecipes.Architecture(recipe) is SaeArchitectures.TopK or SaeArchitectures.BatchTopK or SaeArchitectures.MatryoshkaBatchTopK;
        var sae = SaeRecipes.Create(recipe, dIn, dSae, topK ? k : null, totalSteps: steps);
        sae.Training.Autocast = autocast;
        var cfg = new TrainerConfig
        {
            TotalTrainingSteps = steps, TrainBatchSizeTokens = batch, Seed = 1, NormalizeActivations = "expected_average_only_in",
            LrWarmUpSteps = steps / 20, LogEverySteps = Math.Max(1, steps / 10),
            // ReLU's default lr (5e-5, Anthropic's for long runs) barely moves in a few hundred steps: dictionary_learning's 1e-3.
            Lr = topK ? null : 1e-3, L1WarmUpSteps = topK ? 0 : steps / 10,
        };
        using var source = new TensorActivationSource(train.alias(), shuffle: true, loop: true, seed: 3);
        var sw = Stopwatch.StartNew();
        using var trainer = new SaeTrainer(cfg, source, [new SaeSlot(recipe, sae)]);
        using var result = trainer.Run();
        double ms = sw.Elapsed.TotalMilliseconds / steps;
        var trained = result.Saes[0].Sae;
        trained.eval();
        var metrics = SaeEvaluator.Evaluate(trained, [new ActivationBatch(eval.alias(), null)], groundTruthFeatures: truth);
        sae.Dispose();
        return (ms, metrics);
    }
}
