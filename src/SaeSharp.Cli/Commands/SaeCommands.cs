using System.CommandLine;
using SaeSharp.Activations;
using SaeSharp.Evaluation;
using SaeSharp.Interop;
using SaeSharp.IO;
using SaeSharp.Synthetic;
using static TorchSharp.torch;

namespace SaeSharp.Cli.Commands;

/// <summary><c>sae eval</c>, <c>sae encode</c>, <c>sae synth</c>, <c>sae convert</c>: SAEs applied to activation files.</summary>
internal static class SaeCommands
{
    public static Option<string> SaeOption() => new("--sae")
    {
        Description = "SAE folder or file (SAELens, dictionary_learning ae.pt, Gemma Scope params.npz, sparsify, OpenAI)",
        Required = true,
    };

    public static Command Eval()
    {
        var sae = SaeOption();
        var activations = new Option<string>("--activations") { Description = "Activation file or folder [N, d_in]", Required = true };
        var groundTruth = new Option<string?>("--ground-truth") { Description = "features.safetensors of synthetic data (adds mmcs, recovered_fraction)" };
        var json = new Option<string?>("--json") { Description = "Write the metrics as JSON here" };
        var histogram = new Option<string?>("--histogram") { Description = "Write the log10 feature-density histogram PNG here (default: beside --json)" };
        var maxRows = new Option<long?>("--max-rows") { Description = "Evaluate at most this many rows" };
        var command = new Command("eval", "Evaluate an SAE on activations: MSE, L0, FVU, dead features, ...") { sae, activations, groundTruth, json, histogram, maxRows };
        Cli.SetAction(command, parse =>
        {
            using var model = SaeLoader.Load(parse.GetValue(sae)!);
            model.eval();
            using var source = ActivationSplit.EvalFiles([parse.GetValue(activations)!], new ActivationFileSourceOptions { ExpectedDIn = model.Cfg.DIn });
            using var features = parse.GetValue(groundTruth) is string gt ? SyntheticDataset.ReadFeatures(gt) : null;
            var result = SaeEvaluator.Evaluate(model, source, parse.GetValue(maxRows) ?? long.MaxValue, groundTruthFeatures: features);
            PrintMetrics(parse.GetValue(sae)!, result);
            var jsonPath = parse.GetValue(json);
            if (jsonPath is not null) AtomicFile.WriteAllText(jsonPath, result.ToJson());
            var png = parse.GetValue(histogram) ?? (jsonPath is null ? null : Path.ChangeExtension(jsonPath, null) + "_feature_density.png");
            if (png is not null)
            {
                FeatureDensityHistogram.Save(png, result.FeatureFrequency, result.Rows);
                Console.WriteLine($"feature density histogram: {png}");
            }
            return 0;
        });
        return command;
    }

    public static void PrintMetrics(string title, SaeEvalResult r)
    {
        var rows = new List<(string, string)>
        {
            ("mse", r.Mse.ToString("G5")),
            ("l1", r.L1.ToString("G5")),
            ("l0", r.L0.ToString("F2")),
            ("fvu", r.Fvu.ToString("G5")),
            ("explained_variance", r.ExplainedVariance.ToString("F4")),
            ("cosine", r.Cosine.ToString("F4")),
            ("l2_ratio", r.L2Ratio.ToString("F4")),
            ("relative_reconstruction_bias", r.RelativeReconstructionBias.ToString("F4")),
            ("alive_fraction", r.AliveFraction.ToString("P2")),
            ("dead_fraction", r.DeadFraction.ToString("P2")),
            ("rows", r.Rows.ToString("N0")),
        };
        if (r.Mmcs is double mmcs) rows.Add(("mmcs", mmcs.ToString("F4")));
        if (r.RecoveredFraction is double rec) rows.Add(("recovered_fraction", rec.ToString("P1")));
        Cli.WriteTable(title, rows);
    }

    public static Command Encode()
    {
        var sae = SaeOption();
        var activations = new Option<string>("--activations") { Description = "Activation file or folder [N, d_in]", Required = true };
        var output = new Option<string>("--out") { Description = "Output .safetensors with feature_acts [N, d_sae] and sae_out [N, d_out]", Required = true };
        var batchSize = new Option<int>("--batch-size") { Description = "Rows per batch", DefaultValueFactory = _ => 4096 };
        var command = new Command("encode", "Encode every row of an activation file: feature activations and reconstructions") { sae, activations, output, batchSize };
        Cli.SetAction(command, parse =>
        {
            using var model = SaeLoader.Load(parse.GetValue(sae)!);
            model.eval();
            var inputs = parse.GetValue(activations)!;
            using var source = ActivationSplit.EvalFiles([inputs], new ActivationFileSourceOptions { ExpectedDIn = model.Cfg.DIn });
            long n = source.Rows ?? throw new SaeSharpException($"{inputs}: row count unknown");
            using var writer = new SafeTensorsStreamWriter(parse.GetValue(output)!,
            [
                ("feature_acts", ScalarType.Float32, [n, model.Cfg.DSae]),
                ("sae_out", ScalarType.Float32, [n, model.Cfg.DOutOrIn]),
            ]);
            long row = 0;
            using (no_grad())
            {
                while (source.Next(parse.GetValue(batchSize)) is { } batch)
                {
                    using var scope = NewDisposeScope();
                    using var _ = batch;
                    var (y, f) = model.Run(batch.Input);
                    writer.WriteRows("feature_acts", row, f);
                    writer.WriteRows("sae_out", row, y);
                    row += batch.Rows;
                }
            }
            if (row != n) throw new SaeSharpException($"{inputs}: read {row} rows, expected {n}");
            writer.Commit();
            Console.WriteLine($"encoded {n:N0} rows into {parse.GetValue(output)}");
            return 0;
        });
        return command;
    }

    public static Command Synth()
    {
        var output = new Option<string>("--out") { Description = "Output folder", Required = true };
        var dIn = new Option<int>("--d-in") { Description = "Activation width", DefaultValueFactory = _ => 64 };
        var features = new Option<int>("--features") { Description = "Number of true features (more than d_in: superposition)", DefaultValueFactory = _ => 256 };
        var rows = new Option<long>("--rows") { Description = "Training rows", DefaultValueFactory = _ => 100_000 };
        var evalRows = new Option<long>("--eval-rows") { Description = "Evaluation rows", DefaultValueFactory = _ => 10_000 };
        var seed = new Option<ulong>("--seed") { Description = "Seed", DefaultValueFactory = _ => 0UL };
        var noise = new Option<double>("--noise") { Description = "Gaussian noise std", DefaultValueFactory = _ => 0.0 };
        var command = new Command("synth", "Write synthetic superposition data with known features") { output, dIn, features, rows, evalRows, seed, noise };
        Cli.SetAction(command, parse =>
        {
            var files = SyntheticDataset.Write(parse.GetValue(output)!, new SyntheticOptions
            {
                DIn = parse.GetValue(dIn), NFeatures = parse.GetValue(features), TrainRows = parse.GetValue(rows),
                EvalRows = parse.GetValue(evalRows), Seed = parse.GetValue(seed), NoiseStd = parse.GetValue(noise),
            });
            Console.WriteLine($"train: {files.TrainPath}");
            if (files.EvalPath is not null) Console.WriteLine($"eval: {files.EvalPath}");
            Console.WriteLine($"features: {files.FeaturesPath}");
            return 0;
        });
        return command;
    }
}
