using System.CommandLine;
using SaeSharp.Activations;
using SaeSharp.Synthetic;
using SaeSharp.Training;
using Spectre.Console;

namespace SaeSharp.Cli.Commands;

/// <summary>
/// <c>sae demo</c>: the built-in default job. Synthesises superposition data with known features, trains three
/// architectures on the same batches in one pass, and compares them (MSE, FVU, L0, dead %, MMCS, recovered features).
/// </summary>
internal static class DemoCommand
{
    public static Command Create()
    {
        var output = new Option<string>("--out") { Description = "Output folder", DefaultValueFactory = _ => "runs/demo" };
        var steps = new Option<long>("--steps") { Description = "Training steps", DefaultValueFactory = _ => 2000 };
        var seed = new Option<ulong>("--seed") { Description = "Seed", DefaultValueFactory = _ => 0UL };
        var command = new Command("demo", "Synthesise data with known features, train TopK, BatchTopK and ReLU SAEs, compare them") { output, steps, seed };
        Cli.SetAction(command, parse => Run(parse.GetValue(output)!, parse.GetValue(steps), parse.GetValue(seed)));
        return command;
    }

    internal static int Run(string outDir, long steps, ulong seed)
    {
        const int dIn = 64, features = 256, dSae = 512, k = 4, batch = 1024;
        var data = Path.Combine(outDir, "data");
        Console.WriteLine($"synthesising {features} features in {dIn} dimensions (power-law frequencies) into {data} ...");
        var files = SyntheticDataset.Write(data, new SyntheticOptions
        {
            DIn = dIn, NFeatures = features, TrainRows = 200_000, EvalRows = 10_000, Seed = seed,
        });
        var trainer = new TrainerConfig
        {
            TotalTrainingSteps = steps, TrainBatchSizeTokens = batch, Seed = (long)seed,
            NormalizeActivations = "expected_average_only_in", CheckpointEverySteps = Math.Max(1, steps / 4),
            LogEverySteps = (int)Math.Max(1, steps / 50), LrWarmUpSteps = steps / 20,
        };
        // ReLU's default lr (5e-5, Anthropic's for long runs) is too slow for a short demo: dictionary_learning's 1e-3.
        var reluConfig = trainer.Clone();
        reluConfig.Lr = 1e-3;
        reluConfig.L1WarmUpSteps = steps / 10;
        var slots = new List<SaeSlot>
        {
            new("topk", SaeRecipes.Create("topk", dIn, dSae, k, metadata: Meta(files), totalSteps: steps)),
            new("batchtopk", SaeRecipes.Create("batchtopk", dIn, dSae, k, metadata: Meta(files), totalSteps: steps)),
            new("relu", SaeRecipes.Create("relu-april", dIn, dSae, sparsityCoefficient: 2.0, metadata: Meta(files), totalSteps: steps), reluConfig),
        };
        using var train = new ActivationFileSource(files.TrainPath, new ActivationFileSourceOptions { Seed = seed, Loop = true });
        using var eval = ActivationSplit.EvalFiles([files.EvalPath!]);
        using var truth = SyntheticDataset.ReadFeatures(files.FeaturesPath);
        Console.WriteLine($"training {string.Join(", ", slots.Select(s => s.Name))} (d_sae {dSae}) for {steps} steps of {batch} rows ...");
        var result = TrainCommand.TrainWithProgress(new TrainingRunOptions
        {
            OutDir = Path.Combine(outDir, "saes"), Trainer = trainer, Saes = slots, TrainSource = train, EvalSource = eval,
            EvalRows = 10_000, GroundTruthFeatures = truth,
        });
        foreach (var slot in slots) slot.Sae.Dispose();
        if (result.Saes.Count == 0)
        {
            Console.WriteLine($"stopped at step {result.Steps}; checkpoint {result.LastCheckpoint}");
            return 130;
        }
        var table = new Table().Title($"SAEs on synthetic data ({result.Steps} steps, {result.Tokens:N0} rows)")
            .AddColumns("architecture", "MSE", "FVU", "L0", "dead %", "MMCS", "recovered > 0.9");
        foreach (var sae in result.Saes)
        {
            var m = sae.Metrics!;
            table.AddRow(sae.Name, m.Mse.ToString("G3"), m.Fvu.ToString("F3"), m.L0.ToString("F1"), m.DeadFraction.ToString("P1"),
                (m.Mmcs ?? double.NaN).ToString("F3"), (m.RecoveredFraction ?? double.NaN).ToString("P0"));
        }
        AnsiConsole.Write(table);
        Console.WriteLine($"true L0 ≈ {SyntheticExpectedL0(features):F1}; artefacts (SAELens layout, metrics.json, train_log.jsonl): {Path.Combine(outDir, "saes")}");
        return 0;
    }

    private static Saes.SaeMetadata Meta(SyntheticDatasetFiles files) => new() { DatasetPath = files.TrainPath, ModelName = "synthetic" };

    /// <summary>Expected number of firing features per row under the default power law.</summary>
    private static double SyntheticExpectedL0(int features)
    {
        var o = new SyntheticOptions();
        double sum = 0;
        for (int i = 0; i < features; i++) sum += o.MaxFrequency * Math.Pow(i + 1, -o.FrequencyExponent);
        return sum;
    }
}
