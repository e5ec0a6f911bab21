using System.CommandLine;
using SaeSharp.Kernels;
using SaeSharp.Pipelines;
using SaeSharp.Saes;
using SaeSharp.Training;
using Spectre.Console;

namespace SaeSharp.Cli.Commands;

/// <summary><c>sae train</c>: trains SAEs on activation files and writes them in SAELens layout.</summary>
internal static class TrainCommand
{
    public static Command Create()
    {
        var activations = new Option<string?>("--activations") { Description = ".safetensors/.npy file or folder of shards, [N, d_in] (tensor 'activations', the only tensor, or a sae model run file's one hook)" };
        var arch = new Option<string?>("--arch") { Description = $"Architecture(s), comma-separated: {string.Join("|", SaeRecipes.AcceptedNames)}; or one crosscoder: {CrossCoder.ArchitectureName}|{CrossCoder.BatchTopKArchitectureName}" };
        var k = new Option<int?>("--k") { Description = "Active latents per row (topk, batchtopk, matryoshka)" }.Positive();
        var l1 = new Option<double?>("--l1", "--l1-coefficient") { Description = "Sparsity coefficient (L1, or L0 for jumprelu; SAELens l1_coefficient); default: the recipe's (docs/recipes.md)" };
        var lpNorm = new Option<double?>("--lp-norm") { Description = "relu, relu-april, skip_transcoder: the p of the sparsity term λ·mean ‖f ⊙ ‖W_dec rows‖‖_p (SAELens lp_norm; default 1, L1)" };
        var targetL0 = new Option<double?>("--target-l0") { Description = "relu, relu-april, gated, jumprelu, skip_transcoder, jumprelu_skip_transcoder: adapt the sparsity coefficient during training to end near this L0" };
        var dictSize = new Option<int?>("--dict-size", "--d-sae") { Description = "Number of latents d_sae (dictionary_learning dict_size)" }.Positive();
        var expansion = new Option<int?>("--expansion", "--expansion-factor") { Description = "d_sae = expansion × d_in (default 8); SAELens's pre-6.0 expansion_factor (SAELens 6 sets d_sae only)" }.Positive();
        var batchSize = new Option<int?>("--batch-size") { Description = "Rows per step (default 4096)" }.Positive();
        var steps = new Option<long?>("--steps") { Description = "Training steps (default 1000)" }.Positive();
        var lr = new Option<double?>("--lr") { Description = "Learning rate (default: the architecture's)" };
        var seed = new Option<long?>("--seed") { Description = "Seed of initialisation and shuffling (default 42)" };
        var output = new Option<string?>("--out") { Description = "Output folder" };
        var config = new Option<string?>("--config") { Description = "JSON file with the same fields under SAELens names (architecture, d_sae, expansion_factor, l1_coefficient, k, steps, ...), SAELens's architecture fields (l0_coefficient, jumprelu_bandwidth, aux_loss_coefficient, matryoshka_widths, matching_pursuit's residual_threshold, max_iterations, ...: docs/recipes.md), trainer fields and the runner config's model/data fields (model_name, hook_name, dataset_path, context_size, d_in, ...: README); flags override it" };
        var resume = new Option<bool>("--resume") { Description = "Continue from the latest checkpoint in OUT/checkpoints (flags given with it must match the checkpoint's run)" };
        var force = new Option<bool>("--force") { Description = "Replace a previous run's outputs in --out (its checkpoints are deleted); without it such a folder is an error" };
        var checkpointEvery = new Option<long?>("--checkpoint-every") { Description = "Checkpoint every N steps (default: steps/10)" }.Positive();
        var evalRows = new Option<long?>("--eval-rows") { Description = "Rows held out of training for metrics.json (default 16384, at most a tenth of the data): the last rows of activation files; with --model the dataset's first ⌈rows / context size⌉ windows" }.Positive();
        var autocast = new Option<bool>("--autocast") { Description = "bfloat16 matmuls in training, float32 weights and accumulation (fast with AVX512-BF16/AMX)" };
        var candidatePass = new Option<string?>("--candidate-pass") { Description = "TopK family: exact top-k from a bounded low-precision candidate pass: auto (where faster than float32 on this CPU), on, off (plain float32)" };
        var deterministic = new Option<bool>("--deterministic") { Description = "No choice made from timings (candidate pass auto runs as off; ReLU's sparse pass from 5 % density): same seed, same weights bit for bit, resumes included" };
        var epochs = new Option<int?>("--epochs") { Description = "Passes over the data before it runs out: N, or 0 for as many as --steps/--tokens need (default: 1 with --model, no limit with --activations)" }.NonNegative();
        var fromPretrained = new Option<string?>("--from-pretrained")
        {
            Description = "Fine-tune this saved SAE instead of a new one (folder or file of any format sae info reads, RELEASE/SAE_ID or hf:ORG/REPO[/PATH]; SAELens from_pretrained_path): its architecture, d_sae, hook and head unless given",
        };
        var hookHeadIndex = new Option<int?>("--hook-head-index") { Description = "With --model: train on this head of an attention hook (attn.hook_z, hook_q, hook_k, hook_v; SAELens hook_head_index)" }.NonNegative();
        var warmupSteps = new Option<long?>("--warmup-steps") { Description = "crosscoder, batchtopk_crosscoder: linear lr warm-up steps (the fork's warmup_steps; default min(1000, steps/10))" }.NonNegative();
        var hooks = new Option<string?>("--hooks") { Description = "crosscoder, batchtopk_crosscoder: the hooks of the layer slots, comma-separated: harvested from --model, or naming the slots of --activations (recorded with the weights)" };
        var diffModel = ModelSource.AtRevision<string?>(new("--diff-model") { Description = "crosscoder, batchtopk_crosscoder with --model: a second model (same tokenizer) run on the same windows at the same hooks: model diffing, slots --model's then --diff-model's" }, ModelSource.DiffRevision);
        var kMax = new Option<int?>("--k-max") { Description = "batchtopk_crosscoder: k annealing, the k at step 0 (the fork's k_max), falling linearly to --k over --k-annealing-steps" }.Positive();
        var kAnnealingSteps = new Option<long?>("--k-annealing-steps") { Description = "batchtopk_crosscoder: steps over which k falls from --k-max to --k (the fork's k_annealing_steps; default 0: --k-max throughout)" }.NonNegative();
        var activationNormalizer = new Option<bool>("--activation-normalizer") { Description = "crosscoder, batchtopk_crosscoder: normalise every slot by the training rows' mean and std (with --model: of the first --normalizer-tokens tokens) as the fork's activation_mean/activation_std do, saved with the weights" };
        var normalizerTokens = new Option<long?>("--normalizer-tokens") { Description = "crosscoder with --model --activation-normalizer: the statistics come from the dataset's first N tokens, harvested in order before training (default min(16384, 100 batches) rows, as SAELens's n_batches_for_norm_estimate cut by sae train --model)" }.Positive();
        var targetRms = new Option<double?>("--target-rms") { Description = "crosscoder, batchtopk_crosscoder with --activation-normalizer: each slot's norm after normalising (the fork's target_rms; default 1)" };
        var codeNormalization = new Option<string?>("--code-normalization") { Description = "crosscoder, batchtopk_crosscoder: how a latent's decoder norms weigh it (the fork's code_normalization): CROSSCODER (default), SAE, MIXED, NONE, DECOUPLED (BatchTopK: per-slot top-k and thresholds)" };
        var encoderLayers = new Option<string?>("--encoder-layers") { Description = "crosscoder, batchtopk_crosscoder: the slots the encoder reads, comma-separated 0-based (the fork's encoder_layers; default all); the decoder still writes every slot" };
        var groundTruth = new Option<string?>("--ground-truth") { Description = "features.safetensors of synthetic data: adds mmcs, recovered_fraction and SAELens's synthetic-data metrics (mcc, uniqueness, classification/*, ...)" };
        var command = new Command("train", "Train sparse autoencoders and write them in SAELens layout")
        {
            activations, arch, k, l1, lpNorm, targetL0, dictSize, expansion, batchSize, steps, lr, seed, output, config, resume, force, checkpointEvery, evalRows, groundTruth, autocast, candidatePass, deterministic, epochs, fromPretrained, hookHeadIndex, warmupSteps, hooks, diffModel,
            kMax, kAnnealingSteps, activationNormalizer, targetRms, codeNormalization, encoderLayers, normalizerTokens,
        };
        var data = new ModelDataOptionsCli();
        data.AddTo(command);
        command.Options.Add(data.BufferBatches);
        command.Options.Add(data.MixingFraction);
        Cli.SetAction(command, parse =>
        {
            if (CrossCoderCli.IsCrossCoderArch(parse.GetValue(arch)))
            {
                // Crosscoders (the science-of-finetuning fork's format) train on activation files with a layer axis, or from a model run.
                Cli.RefuseGiven(parse, "crosscoders train on activation files with a layer axis or from a model run at --hooks (sae train's other features are for SAEs)",
                    [config, lpNorm, targetL0, groundTruth, autocast, candidatePass, deterministic, epochs, fromPretrained, hookHeadIndex]);
                ModelDataOptions? modelData = null;
                IReadOnlyList<string>? slotHooks = parse.GetValue(hooks) is { } h ? CrossCoderCli.SplitPaths(h) : null;
                if (data.Given(parse))
                {
                    Cli.RefuseGiven(parse, "a crosscoder reads the hooks' activations as they are (--mode out) from --model; give --activations or --model", [activations, data.Mode, data.TargetHook]);
                    if (parse.GetValue(data.Hook) is { } one)
                    {
                        if (slotHooks is not null) throw new SaeSharpException("give --hook (one hook, with --diff-model) or --hooks A,B, not both");
                        slotHooks = [one];
                    }
                    if (slotHooks is null) throw new SaeSharpException("give --hooks A,B (the layer slots), or --hook H with --diff-model, with --model");
                    modelData = data.Read(parse, hookRequired: false);
                }
                else
                {
                    Cli.RefuseGiven(parse, "crosscoders train on activation files with a layer axis (--activations [N, L, d], or one [N, d] file per layer, comma-separated), or from --model",
                        [.. data.ModelOnly, data.Tokens, data.MixingFraction, diffModel]);
                }
                var ccOut = parse.GetValue(output) ?? throw new SaeSharpException("give --out");
                RefuseBadOut(ccOut, parse.GetValue(activations), parse.GetValue(config), parse.GetValue(data.Dataset));
                return CrossCoderCli.Train(new CrossCoderCli.TrainRequest(parse.GetValue(arch)!,
                    modelData is not null ? [] : CrossCoderCli.SplitPaths(parse.GetValue(activations) ?? throw new SaeSharpException("give --activations (a crosscoder trains on [N, L, d] activation files) or --model with --hooks")),
                    ccOut, parse.GetValue(force), parse.GetValue(dictSize), parse.GetValue(expansion),
                    parse.GetValue(k), parse.GetValue(l1), parse.GetValue(lr), parse.GetValue(batchSize) ?? 4096, parse.GetValue(steps), parse.GetValue(seed) ?? 42,
                    parse.GetValue(warmupSteps), parse.GetValue(evalRows), slotHooks)
                {
                    Model = modelData,
                    DiffModel = parse.GetValue(diffModel) is { } dm ? ModelSource.Resolve(dm) : null,
                    DiffRevision = ModelSource.RevisionOf(parse, ModelSource.DiffRevision),
                    Resume = parse.GetValue(resume),
                    CheckpointEvery = parse.GetValue(checkpointEvery),
                    KMax = parse.GetValue(kMax),
                    KAnnealingSteps = parse.GetValue(kAnnealingSteps),
                    ActivationNormalizer = parse.GetValue(activationNormalizer),
                    NormalizerTokens = parse.GetValue(normalizerTokens),
                    TargetRms = parse.GetValue(targetRms),
                    CodeNormalization = parse.GetValue(codeNormalization),
                    EncoderLayers = parse.GetValue(encoderLayers) is { } el ? CrossCoderCli.ParseSlots(el, "--encoder-layers") : null,
                });
            }
            Cli.RefuseGiven(parse, "for --arch crosscoder or batchtopk_crosscoder", warmupSteps, hooks, diffModel, kMax, kAnnealingSteps, activationNormalizer, targetRms, codeNormalization, encoderLayers, normalizerTokens);
            var path = parse.GetValue(config);
            var s = path is null ? new TrainingSettings() : TrainingSettings.ReadFile(path);
            s.Activations = parse.GetValue(activations) ?? s.Activations;
            if (parse.GetValue(arch) is { } archFlag) s.Architecture = archFlag;
            s.K = parse.GetValue(k) ?? s.K;
            s.L1Coefficient = parse.GetValue(l1) ?? s.L1Coefficient;
            s.TargetL0 = parse.GetValue(targetL0) ?? s.TargetL0;
            if (parse.GetValue(lpNorm) is double p)
            {
                if (!(p > 0 && double.IsFinite(p))) throw new SaeSharpException($"--lp-norm {p}: expected a positive, finite p (1: the L1 term)");
                s.LpNorm = p;
            }
            s.DSae = parse.GetValue(dictSize) ?? s.DSae;
            s.ExpansionFactor = parse.GetValue(expansion) ?? s.ExpansionFactor;
            s.BatchSize = parse.GetValue(batchSize) ?? s.BatchSize;
            s.Steps = parse.GetValue(steps) ?? s.Steps;
            s.Lr = parse.GetValue(lr) ?? s.Lr;
            s.Seed = parse.GetValue(seed) ?? s.Seed;
            s.Out = parse.GetValue(output) ?? s.Out;
            s.CheckpointEvery = parse.GetValue(checkpointEvery) ?? s.CheckpointEvery;
            s.ActivationsMixingFraction = parse.GetValue(data.MixingFraction) ?? s.ActivationsMixingFraction;
            s.EvalRows = parse.GetValue(evalRows) ?? s.EvalRows;
            s.GroundTruth = parse.GetValue(groundTruth) ?? s.GroundTruth;
            s.Autocast |= parse.GetValue(autocast);
            s.CandidatePass = parse.GetValue(candidatePass) ?? s.CandidatePass;
            s.Deterministic |= parse.GetValue(deterministic);
            s.Epochs = parse.GetValue(epochs) ?? s.Epochs;
            s.FromPretrainedPath = parse.GetValue(fromPretrained) ?? s.FromPretrainedPath;
            s.HookHeadIndex = parse.GetValue(hookHeadIndex) ?? s.HookHeadIndex;
            // One device for the SAEs and, with --model, the harvest: --device, else the config's "device", else the CPU.
            s.Trainer.Device = parse.GetValue(data.Device) ?? s.Trainer.Device;
            var device = ComputeDevice.Parse(s.Trainer.Device, parse.GetValue(data.Device) is null ? "device" : "--device");
            if (s.Out is null) throw new SaeSharpException("give --out (or 'out' in --config)");
            RefuseBadOut(s.Out, s.Activations, path, parse.GetValue(data.Dataset), s.FromPretrainedPath, s.GroundTruth);
            s.Overwrite = parse.GetValue(force);
            if (parse.GetValue(resume))
            {
                if (s.Overwrite) throw new SaeSharpException("give --resume or --force, not both");
                CheckResumeFlags(s.Out, parse.GetValue(arch), parse.GetValue(steps), parse.GetValue(batchSize), parse.GetValue(lr), parse.GetValue(seed),
                    parse.GetValue(dictSize), parse.GetValue(k), parse.GetValue(l1), parse.GetValue(targetL0), parse.GetValue(lpNorm));
            }
            foreach (var note in s.Notes) Cli.ErrorLine($"note: {path}: {note}");
            // --activations without --model: the config's model_name only says which model the files came from.
            if (parse.GetValue(activations) is not null && parse.GetValue(data.Model) is null) (s.ActivationsModelName, s.ModelName) = (s.ActivationsModelName ?? s.ModelName, null);
            // From activation files --tokens is the run's length (SAELens training_tokens: steps = tokens / batch size), as
            // with a model; without this it would be the model's token budget and go unused.
            if (!data.Given(parse, s))
            {
                s.TrainingTokens = parse.GetValue(data.Tokens) ?? s.TrainingTokens;
                Cli.RefuseGiven(parse, "for activations harvested from a model (--model); training on activation files (--activations) takes " +
                                       "the hook and contexts the files were written with", [.. data.ModelOnly.Where(o => o != data.ExcludeSpecial && o != data.ExcludeIds)]);
                // exclude_special_tokens drops the rows of those tokens as the files are read (a flag wins over the --config field).
                var (flagSpecial, flagIds) = data.ReadExclusion(parse);
                if (flagSpecial) (s.ExcludeSpecialTokens, s.ExcludeTokenIds) = (true, null);
                else if (flagIds is not null) (s.ExcludeSpecialTokens, s.ExcludeTokenIds) = (null, flagIds);
            }
            using var plan = data.Given(parse, s)
                ? TrainingPlan.ForModel(s, data.Read(parse, s, hookRequired: s.FromPretrainedPath is null) with { Device = device }, data.HookOf(parse, s), data.ReadMode(parse), parse.GetValue(data.TargetHook), parse.GetValue(resume))
                : TrainingPlan.ForActivations(s, parse.GetValue(resume));
            foreach (var note in plan.Notes) Cli.ErrorLine($"note: {note}");
            if (device.type != TorchSharp.DeviceType.CPU && (s.Autocast || s.ParsedCandidatePass == CandidatePass.On))
                AnsiConsole.MarkupLine($"[yellow]warning:[/] --autocast and --candidate-pass are CPU kernels; on {ComputeDevice.Name(device)} training runs in float32");
            else if (s.Autocast && plan.Options.Saes.Count > 0 && CpuFeatures.AutocastAdvice(plan.Options.Saes[0].Sae.Cfg.DIn, plan.Options.Saes[0].Sae.Cfg.DSae) is { } advice)
                AnsiConsole.MarkupLine($"[yellow]warning:[/] {Markup.Escape(advice)}");
            return Report(TrainWithProgress(plan.Options), plan);
        });
        return command;
    }

    /// <summary>Before anything runs: <c>--out</c> must be a folder path (not an existing file, nor under one) that does not
    /// replace or write into one of the run's inputs (activation files or shard folders, comma-separated for a crosscoder;
    /// the config, the dataset, the ground truth; the files of the SAE it fine-tunes).</summary>
    private static void RefuseBadOut(string outDir, string? activations, string? config, string? dataset, string? fromPretrained = null, string? groundTruth = null)
    {
        var inputs = (activations?.Split(',', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries) ?? [])
            .Select(a => new CommandInput("--activations", a, InputKind.Whole)).ToList();
        if (config is not null) inputs.Add(new CommandInput("--config", config, InputKind.Whole));
        if (dataset is not null) inputs.Add(new CommandInput("--dataset", dataset, InputKind.Whole));
        if (groundTruth is not null) inputs.Add(new CommandInput("--ground-truth", groundTruth, InputKind.Whole));
        if (fromPretrained is not null) inputs.Add(new CommandInput("--from-pretrained", fromPretrained, InputKind.Sae));
        OutputGuard.RefuseReplacingInput("--out", outDir, [], [.. inputs]);
    }

    /// <summary>With <c>--resume</c>: the flags that shape a run, where given, must match the run of the latest checkpoint
    /// in OUT/checkpoints (a resume continues that run as it was configured; a differing flag would be ignored).</summary>
    private static void CheckResumeFlags(string outDir, string? arch, long? steps, int? batchSize, double? lr, long? seed, int? dSae, int? k,
        double? l1 = null, double? targetL0 = null, double? lpNorm = null)
    {
        var root = Path.Combine(outDir, TrainingRun.CheckpointFolder);
        if (!Directory.Exists(root)) throw new SaeSharpException($"--resume: no checkpoints in {root}");
        using var state = TrainerCheckpoint.Load(root);
        var differ = new List<string>();
        void Check<T>(string flag, T? given, IEnumerable<T> had) where T : struct
        {
            var values = had.Distinct().ToList();
            if (given is T g && (values.Count != 1 || !values[0].Equals(g)))
                differ.Add(values.Count == 0 ? $"{flag} {g} (the checkpoint's run has none)"
                                             : $"{flag} {g} (the checkpoint's run: {string.Join(", ", values)})");
        }
        if (arch is not null)
        {
            var given = string.Join(",", arch.Split(',', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries));
            var had = string.Join(",", state.Saes.Select(e => e.Name));
            if (given != had) differ.Add($"--arch {given} (the checkpoint's run: {had})");
        }
        Check("--steps", steps, [state.Config.Steps]);
        Check("--batch-size", batchSize, [state.Config.TrainBatchSizeTokens]);
        Check("--seed", seed, [state.Config.Seed]);
        Check("--lr", lr, state.Saes.Select(e => e.Config.Lr ?? state.Config.Lr ?? double.NaN));
        Check("--dict-size", dSae, state.Saes.Select(e => e.SaeConfig.DSae));
        if (k is not null) Check("--k", k, state.Saes.Where(e => e.SaeConfig.K is not null).Select(e => e.SaeConfig.K!.Value));
        // The sparsity coefficient is the run's own unless --target-l0 adapts it (then the checkpoint holds the adapted value).
        if (state.Saes.Any(e => !e.Training.AdaptToTargetL0))
            Check("--l1", l1, state.Saes.Where(e => !e.Training.AdaptToTargetL0).Select(e => e.Training.SparsityCoefficient));
        static bool HasTarget(TrainerCheckpoint.SaeEntry e) => e.Training.AdaptToTargetL0 || e.Training.JumpReluPenalty == JumpReluPenalty.TargetL0;
        if (targetL0 is not null && !state.Saes.All(HasTarget))
            differ.Add($"--target-l0 {targetL0} (the checkpoint's run has none: its sparsity coefficient is fixed)");
        else Check("--target-l0", targetL0, state.Saes.Select(e => e.Training.TargetL0));
        Check("--lp-norm", lpNorm, state.Saes.Select(e => e.Training.LpNorm));
        if (differ.Count > 0)
            throw new SaeSharpException($"--resume continues the run of {state.Folder} as it was configured; these flags differ from it: " +
                                        string.Join("; ", differ) + ". Drop them, or start a new run with --force or another --out");
    }

    /// <summary>Runs training with a live progress bar (or plain lines when output is redirected); Ctrl-C or SIGTERM
    /// checkpoints and stops, and <c>StopExitCode</c> is then the command's exit code.</summary>
    internal static (TrainingRunResult Result, int StopExitCode) TrainWithProgress(TrainingRunOptions options, string stopAction = StopSignals.SavingACheckpoint) =>
        TrainWithProgress(options.Trainer.Steps, (progress, ct) => TrainingRun.Run(options, progress, ct), stopAction);

    /// <summary>Runs <paramref name="train"/> (a run of <paramref name="steps"/> steps) with the progress bar and the
    /// <see cref="StopSignals"/> of <c>sae train</c>; <paramref name="stopAction"/> is what the stop notice says happens.</summary>
    internal static (TrainingRunResult Result, int StopExitCode) TrainWithProgress(long steps,
        Func<IProgress<TrainingProgress>, CancellationToken, TrainingRunResult> train, string stopAction = StopSignals.SavingACheckpoint)
    {
        // The training loop allocates the same large tensors every step: reuse them instead of page-faulting them in.
        NativeRuntime.KeepLargeBlocks();
        using var stop = new StopSignals(stopAction);
        // A live bar on a terminal; in a pipe or file, one log line per report (so the sink is never null).
        var result = CliProgress.Run<TrainingProgress, TrainingRunResult>("training", steps,
            progress => train(progress!, stop.Token), p => (p.Step, p.TotalSteps, Describe(p, live: true, CliProgress.DescriptionRoom)), p => Describe(p));
        return (result, stop.ExitCode);
    }

    /// <summary>"step 10/300 41,000 rows/s ETA 00:00:12 | topk: loss 73.9 L0 16.0 dead_fraction 0" (a log line); the live
    /// bar's shorter form leaves out a single SAE's name, says "unfired" (the share of latents not fired within the dead
    /// window: not the held-out dead_fraction of the summary) and gives an ETA under an hour as m:ss. A single SAE in fewer
    /// than <paramref name="room"/> characters drops the rate; several drop each one's loss, then its unfired share, then
    /// the rate, so that every SAE's L0 stays on the line ("step 22/73 ETA 0:26 | L0 topk 16.0 relu 85.2").</summary>
    internal static string Describe(TrainingProgress p, bool live = false, int room = int.MaxValue)
    {
        var eta = p.Eta is not TimeSpan t ? "" : live ? $" ETA {CliProgress.Eta(t)}" : $" ETA {t:hh\\:mm\\:ss}";
        string head = $"step {p.Step}/{p.TotalSteps} {p.MeanRowsPerSecond:N0} rows/s{eta} | ";
        string Dead(SaeProgress sae) => Cli.Percent("dead_fraction", sae.DeadFraction, 0);
        string Full(SaeProgress sae) => (live && p.Saes.Count == 1 ? "" : $"{sae.Name}: ") +
            $"loss {sae.Losses.GetValueOrDefault("overall_loss"):G4} L0 {sae.L0:F1} {(live ? "unfired" : "dead_fraction")} {Dead(sae)}";
        string line = head + string.Join(" | ", p.Saes.Select(Full));
        if (!live || line.Length <= room) return line;
        if (p.Saes.Count == 1) return $"step {p.Step}/{p.TotalSteps}{eta} | {Full(p.Saes[0])}";
        line = head + string.Join(" | ", p.Saes.Select(sae => $"{sae.Name} L0 {sae.L0:F1} unfired {Dead(sae)}"));
        if (line.Length <= room) return line;
        line = head + string.Join(" | ", p.Saes.Select(sae => $"{sae.Name} L0 {sae.L0:F1}"));
        return line.Length <= room ? line : $"step {p.Step}/{p.TotalSteps}{eta} | L0 " + string.Join(" ", p.Saes.Select(sae => $"{sae.Name} {sae.L0:F1}"));
    }

    private static int Report((TrainingRunResult Result, int StopExitCode) run, TrainingPlan plan)
    {
        var result = run.Result;
        if (result.Status is TrainingStatus.Cancelled or TrainingStatus.Stopped)
        {
            Console.WriteLine($"stopped at step {result.Steps}; checkpoint: {result.LastCheckpoint} (continue with --resume)");
            PrintCurves(result);
            return run.StopExitCode;
        }
        string passes = (result.Epochs is double e ? $"{e:F2} epochs of the data" : "less than one pass over the data") +
                        (result.MaxDataPasses > 1 ? $", --epochs {result.MaxDataPasses}" : "");
        if (result.Status == TrainingStatus.SourceExhausted)
            Cli.ErrorLine($"warning: the data ran out after {result.Steps} steps ({Cli.Integer(result.Tokens)} tokens, {passes}); " +
                                    "repeat it with --epochs N (or --epochs 0: as many passes as --steps/--tokens need), or ask for fewer steps");
        Console.WriteLine($"trained on {Cli.Integer(result.Tokens)} tokens ({passes})");
        if (plan.HeldOutContexts > 0 && result.Saes.Count > 0)
            Cli.TextLine($"metrics on {Cli.Integer(plan.ModelEvalTokens)} held-out tokens: the first {Cli.Integer(plan.HeldOutContexts)} context " +
                              $"window{(plan.HeldOutContexts == 1 ? "" : "s")} of the dataset, which training skipped");
        // Trained from a model: the held-out evaluation adds % CE loss recovered inside it.
        var downstream = plan.ModelData is null || result.Saes.Count == 0 ? null
            : CliProgress.Run("eval in model", progress => plan.EvaluateInModel(result.Saes, progress));
        for (int i = 0; i < result.Saes.Count; i++)
        {
            var sae = result.Saes[i];
            Console.WriteLine($"{sae.Name}: wrote {sae.Directory}");
            if (downstream?[i].NoRows is { } noRows) Cli.ErrorLine($"warning: {noRows}");
            double? ce = downstream?[i] is { NoRows: null } d ? d.CeLossScore : null;
            if (sae.Metrics is { } m)
            {
                Cli.ItemsLine($"  mse {m.Mse:G4}  fvu {m.Fvu:G4}  l0 {m.L0:F1}  dead_fraction {Cli.Percent("dead_fraction", m.DeadFraction, 1)}" +
                                  (m.Mmcs is double mm ? $"  mmcs {mm:F3}" : "") +
                                  (m.Mcc is double mcc ? $"  mcc {mcc:F3}  uniqueness {m.Uniqueness:F3}" : "") +
                                  (m.ClassificationF1Score is double f1 ? $"  classification/f1_score {f1:F3}" : "") +
                                  (ce is double c ? $"  ce_loss_score {Cli.Percent("ce_loss_score", c, 1)} (kl {downstream![i].KlDivWithSae:G3})" : ""));
                foreach (var w in TrainingWarnings.For(m, sae.Config, result.Steps, ce))
                    Cli.ErrorLine($"warning: {sae.Name}: {w}");
            }
        }
        PrintCurves(result);
        return 0;
    }

    /// <summary>"training curves: OUT/training_curves.png", or a warning saying why they were not drawn.</summary>
    internal static void PrintCurves(TrainingRunResult result)
    {
        if (result.CurvesFile is { } png) Console.WriteLine($"training curves: {png}");
        else if (result.CurvesError is { } e) Cli.ErrorLine($"warning: training curves not drawn: {e}");
    }
}
