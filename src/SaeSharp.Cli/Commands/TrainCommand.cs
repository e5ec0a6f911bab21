using System.CommandLine;
using System.Text.Json;
using System.Text.Json.Serialization;
using SaeSharp.Kernels;
using SaeSharp.Activations;
using SaeSharp.Models;
using SaeSharp.Saes;
using SaeSharp.Synthetic;
using SaeSharp.Training;
using Spectre.Console;

namespace SaeSharp.Cli.Commands;

/// <summary>Settings of <c>sae train</c>: the flags, or the same fields (snake_case) in a <c>--config</c> JSON file, which
/// may also hold any trainer field (lr_scheduler_name, lr_warm_up_steps, l1_warm_up_steps, …).</summary>
internal sealed class TrainSettings
{
    [JsonPropertyName("activations")] public string? Activations { get; set; }
    [JsonPropertyName("arch")] public string Arch { get; set; } = "topk";
    [JsonPropertyName("k")] public int? K { get; set; }
    [JsonPropertyName("l1")] public double? L1 { get; set; }
    [JsonPropertyName("target_l0")] public double? TargetL0 { get; set; }
    [JsonPropertyName("dict_size")] public int? DictSize { get; set; }
    [JsonPropertyName("expansion")] public int? Expansion { get; set; }
    [JsonPropertyName("batch_size")] public int BatchSize { get; set; } = 4096;
    [JsonPropertyName("steps")] public long Steps { get; set; } = 1000;
    [JsonPropertyName("lr")] public double? Lr { get; set; }
    [JsonPropertyName("seed")] public long Seed { get; set; } = 42;
    [JsonPropertyName("out")] public string? Out { get; set; }
    /// <summary>Held-out rows; null: <see cref="ActivationSplit.DefaultEvalRowsFor"/> (16384, or a tenth of a small file).</summary>
    [JsonPropertyName("eval_rows")] public long? EvalRows { get; set; }
    [JsonPropertyName("checkpoint_every")] public long CheckpointEvery { get; set; }
    [JsonPropertyName("target_name")] public string? TargetName { get; set; }
    [JsonPropertyName("ground_truth")] public string? GroundTruth { get; set; }
    [JsonPropertyName("autocast")] public bool Autocast { get; set; }
    [JsonPropertyName("candidate_pass")] public string CandidatePass { get; set; } = "auto";
    /// <summary>Passes over the data (0: no limit); null: 1 for text (--model), no limit for activation files.</summary>
    [JsonPropertyName("epochs")] public int? Epochs { get; set; }
    /// <summary>Trainer fields (snake_case) the --config file gives: the recipe's run-length rules leave them alone.</summary>
    [JsonIgnore] public HashSet<string> GivenTrainerFields { get; } = new(StringComparer.Ordinal);
}

/// <summary><c>sae train</c>: trains SAEs on activation files and writes them in SAELens layout.</summary>
internal static class TrainCommand
{
    public static Command Create()
    {
        var activations = new Option<string?>("--activations") { Description = ".safetensors/.npy file or folder of shards, [N, d_in] (tensor 'activations' or the only tensor)" };
        var arch = new Option<string?>("--arch") { Description = $"Architecture(s), comma-separated: {string.Join("|", SaeRecipes.Names)}" };
        var k = new Option<int?>("--k") { Description = "Active latents per row (topk, batchtopk, matryoshka)" };
        var l1 = new Option<double?>("--l1") { Description = "Sparsity coefficient (L1, or L0 for jumprelu); default: the recipe's (docs/recipes.md)" };
        var targetL0 = new Option<double?>("--target-l0") { Description = "relu, relu-april, gated, jumprelu: adapt the sparsity coefficient during training to end near this L0" };
        var dictSize = new Option<int?>("--dict-size") { Description = "Number of latents d_sae" };
        var expansion = new Option<int?>("--expansion") { Description = "d_sae = expansion × d_in (default 8)" };
        var batchSize = new Option<int?>("--batch-size") { Description = "Rows per step (default 4096)" };
        var steps = new Option<long?>("--steps") { Description = "Training steps (default 1000)" };
        var lr = new Option<double?>("--lr") { Description = "Learning rate (default: the architecture's)" };
        var seed = new Option<long?>("--seed") { Description = "Seed of initialisation and shuffling (default 42)" };
        var output = new Option<string?>("--out") { Description = "Output folder" };
        var config = new Option<string?>("--config") { Description = "JSON file with the same fields (snake_case) and trainer fields; flags override it" };
        var resume = new Option<bool>("--resume") { Description = "Continue from the latest checkpoint in OUT/checkpoints" };
        var checkpointEvery = new Option<long?>("--checkpoint-every") { Description = "Checkpoint every N steps (default: steps/10)" };
        var evalRows = new Option<long?>("--eval-rows") { Description = "Rows held out at the end of the data for metrics.json (default 16384, at most a tenth of the data)" };
        var autocast = new Option<bool>("--autocast") { Description = "bfloat16 matmuls in training, float32 weights and accumulation (fast with AVX512-BF16/AMX)" };
        var candidatePass = new Option<string?>("--candidate-pass") { Description = "TopK family: exact top-k from a bounded low-precision candidate pass: auto (where faster than float32 on this CPU), on, off (plain float32)" };
        var epochs = new Option<int?>("--epochs") { Description = "Passes over the data before it runs out: N, or 0 for as many as --steps/--tokens need (default: 1 with --model, no limit with --activations)" };
        var groundTruth = new Option<string?>("--ground-truth") { Description = "features.safetensors of synthetic data: adds mmcs and recovered_fraction" };
        var command = new Command("train", "Train sparse autoencoders and write them in SAELens layout")
        {
            activations, arch, k, l1, targetL0, dictSize, expansion, batchSize, steps, lr, seed, output, config, resume, checkpointEvery, evalRows, groundTruth, autocast, candidatePass, epochs,
        };
        var data = new ModelDataOptionsCli();
        data.AddTo(command);
        Cli.SetAction(command, parse =>
        {
            var (s, trainer) = ReadConfig(parse.GetValue(config));
            s.Activations = parse.GetValue(activations) ?? s.Activations;
            s.Arch = parse.GetValue(arch) ?? s.Arch;
            s.K = parse.GetValue(k) ?? s.K;
            s.L1 = parse.GetValue(l1) ?? s.L1;
            s.TargetL0 = parse.GetValue(targetL0) ?? s.TargetL0;
            s.DictSize = parse.GetValue(dictSize) ?? s.DictSize;
            s.Expansion = parse.GetValue(expansion) ?? s.Expansion;
            s.BatchSize = parse.GetValue(batchSize) ?? s.BatchSize;
            s.Steps = parse.GetValue(steps) ?? s.Steps;
            s.Lr = parse.GetValue(lr) ?? s.Lr;
            s.Seed = parse.GetValue(seed) ?? s.Seed;
            s.Out = parse.GetValue(output) ?? s.Out;
            s.CheckpointEvery = parse.GetValue(checkpointEvery) ?? s.CheckpointEvery;
            s.EvalRows = parse.GetValue(evalRows) ?? s.EvalRows;
            s.GroundTruth = parse.GetValue(groundTruth) ?? s.GroundTruth;
            s.Autocast |= parse.GetValue(autocast);
            s.CandidatePass = parse.GetValue(candidatePass) ?? s.CandidatePass;
            s.Epochs = parse.GetValue(epochs) ?? s.Epochs;
            if (s.Out is null) throw new SaeSharpException("give --out (or 'out' in --config)");
            if (data.Given(parse))
            {
                if (s.Activations is not null) throw new SaeSharpException("give either --activations or --model, not both");
                var options = data.Read(parse) with { Epochs = s.Epochs ?? 1 };
                if (parse.GetValue(steps) is null && options.Tokens is long tokens) s.Steps = Math.Max(1, tokens / s.BatchSize);
                return TrainOnModel(s, trainer, parse.GetValue(resume), options, parse.GetValue(data.Hook)!, data.ReadMode(parse), parse.GetValue(data.TargetHook));
            }
            if (s.Activations is null) throw new SaeSharpException("give --activations (or 'activations' in --config), or --model/--hook/--dataset");
            return Train(s, trainer, parse.GetValue(resume));
        });
        return command;
    }

    private static (TrainSettings, TrainerConfig) ReadConfig(string? path)
    {
        if (path is null) return (new TrainSettings(), new TrainerConfig { NormalizeActivations = "expected_average_only_in" });
        if (!File.Exists(path)) throw new SaeSharpException($"{path}: config file not found");
        var json = File.ReadAllText(path);
        try
        {
            var settings = JsonSerializer.Deserialize<TrainSettings>(json) ?? new TrainSettings();
            var trainer = TrainerConfig.FromJson(json, path);
            if (System.Text.Json.Nodes.JsonNode.Parse(json) is System.Text.Json.Nodes.JsonObject fields)
                foreach (var (key, _) in fields) settings.GivenTrainerFields.Add(key);
            if (!json.Contains("\"normalize_activations\"")) trainer.NormalizeActivations = "expected_average_only_in";
            return (settings, trainer);
        }
        catch (JsonException e)
        {
            throw new SaeSharpException($"{path}: {e.Message}");
        }
    }

    internal static int Train(TrainSettings s, TrainerConfig trainer, bool resume)
    {
        var recipes = s.Arch.Split(',', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries);
        foreach (var r in recipes) SaeRecipes.Architecture(r);
        var metadata = new SaeMetadata { DatasetPath = s.Activations };
        var manifestPath = Path.Combine(s.Activations!, ActivationCacheFolder.ManifestName);
        if (File.Exists(manifestPath))
        {
            var manifest = ActivationCacheManifest.Read(s.Activations!);
            metadata = new SaeMetadata
            {
                ModelName = manifest.Model, HookName = manifest.Hook, ContextSize = manifest.ContextSize, PrependBos = manifest.PrependBos,
                DatasetPath = manifest.DatasetPath, ExcludeSpecialTokens = manifest.ExcludeTokenIds.Length > 0,
                ModelFromPretrainedKwargs = KwargsOf(manifest.ModelFromPretrainedKwargs),
            };
            if (manifest.TargetHook is not null) s.TargetName ??= "targets";
        }
        var fileOptions = new ActivationFileSourceOptions { Seed = (ulong)s.Seed, Epochs = s.Epochs ?? 0, TargetName = s.TargetName };
        var (train, eval) = ActivationSplit.HoldOut([s.Activations!], s.EvalRows, fileOptions);
        s.EvalRows = eval.Rows;
        using (train)
        using (eval)
            return TrainOn(s, trainer, resume, train, eval, metadata);
    }

    private static Dictionary<string, System.Text.Json.JsonElement>? KwargsOf(Dictionary<string, bool> kwargs) =>
        kwargs.Count == 0 ? null : kwargs.ToDictionary(kv => kv.Key, kv => JsonSerializer.SerializeToElement(kv.Value));

    /// <summary>Training on a language model's activations: rows harvested from text through a shuffling buffer; the
    /// held-out metrics come from a second pass over the first contexts of the dataset with another shuffle seed.</summary>
    private static int TrainOnModel(TrainSettings s, TrainerConfig trainer, bool resume, ModelDataOptions data, string hook, HarvestMode mode, string? targetHook)
    {
        // The token budget is for optimiser steps; the normalisation estimate and b_dec sample read their own rows first.
        trainer.NBatchesForNormEstimate = Math.Clamp(16384 / s.BatchSize, 1, trainer.NBatchesForNormEstimate);
        trainer.BDecInitRows = Math.Min(trainer.BDecInitRows, 4 * s.BatchSize);
        long initRows = (trainer.NormalizeActivations == "none" ? 0 : (long)trainer.NBatchesForNormEstimate * s.BatchSize) + trainer.BDecInitRows;
        var trainData = data.Tokens is long budget ? data with { Tokens = budget + initRows } : data;
        using var train = ModelPipeline.OpenSource(trainData, hook, mode, targetHook, seed: (ulong)s.Seed);
        int ctx = data.ContextSize ?? 128;
        using var eval = ModelPipeline.OpenSource(data with { Tokens = Math.Max(ctx, s.EvalRows ?? ActivationSplit.DefaultEvalRows), Epochs = 1 }, hook, mode, targetHook, seed: (ulong)s.Seed + 1);
        var metadata = new SaeMetadata
        {
            ModelName = Path.GetFileName(Path.TrimEndingDirectorySeparator(data.ModelPath)),
            HookName = train.Spec.InputHook,
            ContextSize = ctx,
            PrependBos = data.PrependBos ?? true,
            DatasetPath = data.DatasetPath,
            ExcludeSpecialTokens = data.ExcludeSpecialTokens ?? false,
            ModelFromPretrainedKwargs = KwargsOf(data.Processing.ToKwargs()),
        };
        if (train.Spec.TargetHook is not null) (metadata.Extra ??= new())["hook_name_out"] = JsonSerializer.SerializeToElement(train.Spec.TargetHook);
        return TrainOn(s, trainer, resume, train, eval, metadata);
    }

    private static int TrainOn(TrainSettings s, TrainerConfig trainer, bool resume, IActivationSource train, IActivationSource eval, SaeMetadata metadata)
    {
        var recipes = s.Arch.Split(',', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries);
        {
            int dIn = train.DIn, dOut = train.DOut;
            int dSae = s.DictSize ?? dIn * (s.Expansion ?? 8);
            trainer.TotalTrainingSteps = s.Steps;
            trainer.TrainBatchSizeTokens = s.BatchSize;
            trainer.Seed = s.Seed;
            trainer.Lr = s.Lr ?? trainer.Lr;
            if (s.Lr is not null) s.GivenTrainerFields.Add("lr");
            if (s.TargetL0 is double target)
            {
                if (!(target > 0)) throw new SaeSharpException($"--target-l0 {target}: expected a positive number of active latents");
                foreach (var r in recipes.Where(r => !SaeRecipes.HasSparsityCoefficient(r)))
                    throw new SaeSharpException($"--target-l0 applies to relu, relu-april, gated and jumprelu; '{r}' sets its L0 with --k");
            }
            trainer.CheckpointEverySteps = s.CheckpointEvery > 0 ? s.CheckpointEvery : Math.Max(1, s.Steps / 10);
            trainer.LogEverySteps = (int)Math.Clamp(s.Steps / 100, 1, trainer.LogEverySteps);
            var slots = recipes.Select(r => new SaeSlot(r, CreateSae(r, s, dIn, dSae, dOut, metadata), SaeRecipes.RunConfig(r, trainer, dSae, s.GivenTrainerFields))).ToList();
            var pass = s.CandidatePass.Trim().ToLowerInvariant() switch
            {
                "auto" => CandidatePass.Auto,
                "on" => CandidatePass.On,
                "off" => CandidatePass.Off,
                _ => throw new SaeSharpException($"--candidate-pass {s.CandidatePass}: expected auto, on or off"),
            };
            foreach (var slot in slots) { slot.Sae.Training.Autocast = s.Autocast; slot.Sae.Training.CandidatePass = pass; }
            if (s.Autocast && !CpuFeatures.Bf16MatMul)
                AnsiConsole.MarkupLine("[yellow]warning:[/] --autocast: this CPU has no AVX512-BF16/AMX; bfloat16 matmuls will be slower than float32");
            using var features = s.GroundTruth is null ? null : SyntheticDataset.ReadFeatures(s.GroundTruth);
            var options = new TrainingRunOptions
            {
                OutDir = s.Out!, Trainer = trainer, Saes = slots, TrainSource = train, EvalSource = eval,
                EvalRows = s.EvalRows ?? ActivationSplit.DefaultEvalRows, GroundTruthFeatures = features, Resume = resume,
            };
            var result = TrainWithProgress(options);
            foreach (var slot in slots) slot.Sae.Dispose();
            return Report(result);
        }
    }

    private static Sae CreateSae(string recipe, TrainSettings s, int dIn, int dSae, int dOut, SaeMetadata metadata)
    {
        var sae = SaeRecipes.Create(recipe, dIn, dSae, s.K, s.L1, dOut, metadata, s.Steps);
        if (s.TargetL0 is double target) SaeRecipes.AdaptToTargetL0(sae, target, s.L1);
        return sae;
    }

    /// <summary>Runs training with a live progress bar (or plain lines when output is redirected); Ctrl-C checkpoints and stops.</summary>
    internal static TrainingRunResult TrainWithProgress(TrainingRunOptions options)
    {
        // The training loop allocates the same large tensors every step: reuse them instead of page-faulting them in.
        NativeRuntime.KeepLargeBlocks();
        using var cts = new CancellationTokenSource();
        ConsoleCancelEventHandler onCancel = (_, e) =>
        {
            e.Cancel = true;
            cts.Cancel();
            Console.Error.WriteLine("sae: interrupted; saving a checkpoint ...");
        };
        Console.CancelKeyPress += onCancel;
        try
        {
            if (Console.IsOutputRedirected || !AnsiConsole.Profile.Capabilities.Interactive)
                return TrainingRun.Run(options, cts.Token, new LineProgress());
            TrainingRunResult? result = null;
            AnsiConsole.Progress()
                .Columns(new TaskDescriptionColumn(), new ProgressBarColumn(), new PercentageColumn(), new RemainingTimeColumn(), new SpinnerColumn())
                .Start(ctx =>
                {
                    var task = ctx.AddTask("training", maxValue: options.Trainer.Steps);
                    result = TrainingRun.Run(options, cts.Token, new BarProgress(task));
                });
            return result!;
        }
        finally
        {
            Console.CancelKeyPress -= onCancel;
        }
    }

    internal static string Describe(TrainingProgress p)
    {
        var parts = p.Saes.Select(sae =>
            $"{sae.Name}: loss {sae.Losses.GetValueOrDefault("overall_loss"):G4} L0 {sae.L0:F1} dead {sae.DeadFraction:P0}");
        var eta = p.Eta is TimeSpan t ? $" ETA {t:hh\\:mm\\:ss}" : "";
        return $"step {p.Step}/{p.TotalSteps} {p.RowsPerSecond:N0} rows/s{eta} | {string.Join(" | ", parts)}";
    }

    private sealed class LineProgress : IProgress<TrainingProgress>
    {
        public void Report(TrainingProgress p) => Console.WriteLine(Describe(p));
    }

    private sealed class BarProgress(ProgressTask task) : IProgress<TrainingProgress>
    {
        public void Report(TrainingProgress p)
        {
            task.Value = p.Step;
            task.Description = Markup.Escape(Describe(p));
        }
    }

    private static int Report(TrainingRunResult result)
    {
        if (result.Status is TrainingStatus.Cancelled or TrainingStatus.Stopped)
        {
            Console.WriteLine($"stopped at step {result.Steps}; checkpoint: {result.LastCheckpoint} (continue with --resume)");
            return 130;
        }
        string passes = (result.Epochs is double e ? $"{e:F2} epochs of the data" : "less than one pass over the data") +
                        (result.MaxDataPasses == 0 ? "" : $", --epochs {result.MaxDataPasses}");
        if (result.Status == TrainingStatus.SourceExhausted)
            Console.Error.WriteLine($"warning: the data ran out after {result.Steps} steps ({result.Tokens:N0} tokens, {passes}); " +
                                    "repeat it with --epochs N (or --epochs 0: as many passes as --steps/--tokens need), or ask for fewer steps");
        Console.WriteLine($"trained on {result.Tokens:N0} tokens ({passes})");
        foreach (var sae in result.Saes)
        {
            Console.WriteLine($"{sae.Name}: wrote {sae.Directory}");
            if (sae.Metrics is { } m)
            {
                Console.WriteLine($"  mse {m.Mse:G4}  fvu {m.Fvu:G4}  l0 {m.L0:F1}  dead {m.DeadFraction:P1}" +
                                  (m.Mmcs is double mm ? $"  mmcs {mm:F3}" : ""));
                foreach (var w in TrainingWarnings.For(m, sae.Config, result.Steps))
                    Console.Error.WriteLine($"warning: {sae.Name}: {w}");
            }
        }
        return 0;
    }
}
