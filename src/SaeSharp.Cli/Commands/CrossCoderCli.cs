using System.Globalization;
using System.Text.Json;
using System.Text.Json.Nodes;
using SaeSharp.Activations;
using SaeSharp.Analysis;
using SaeSharp.Evaluation;
using SaeSharp.IO;
using SaeSharp.Interop;
using SaeSharp.Interventions;
using SaeSharp.Models;
using SaeSharp.Pipelines;
using SaeSharp.Saes;
using SaeSharp.Tokenizers;
using SaeSharp.Training;
using static TorchSharp.torch;

namespace SaeSharp.Cli.Commands;

/// <summary>The crosscoder paths of <c>sae train</c>, <c>sae eval</c> and <c>sae info</c> (science-of-finetuning fork format).</summary>
internal static class CrossCoderCli
{
    /// <summary>What <c>sae train --arch crosscoder|batchtopk_crosscoder</c> was given.</summary>
    internal sealed record TrainRequest(string Arch, IReadOnlyList<string> Activations, string Out, bool Force, int? DictSize, int? Expansion,
        int? K, double? L1, double? Lr, int BatchSize, long? Steps, long Seed, long? WarmupSteps, long? EvalRows, IReadOnlyList<string>? Hooks)
    {
        /// <summary>Train from this model run (at <see cref="Hooks"/>) instead of <see cref="Activations"/>.</summary>
        public ModelDataOptions? Model { get; init; }
        /// <summary>Model diffing: this model folder runs on the same windows at the same hooks (slots after the model's).</summary>
        public string? DiffModel { get; init; }
        /// <summary>The hub revision <see cref="DiffModel"/> is at (<c>--diff-revision</c>; null: main).</summary>
        public string? DiffRevision { get; init; }
        /// <summary>Continue from the latest checkpoint in OUT/checkpoints.</summary>
        public bool Resume { get; init; }
        /// <summary>Checkpoint every N steps (default steps/10).</summary>
        public long? CheckpointEvery { get; init; }
        /// <summary>BatchTopK k annealing: k at step 0 (the fork's <c>k_max</c>).</summary>
        public int? KMax { get; init; }
        /// <summary>BatchTopK k annealing: steps from k_max down to k (<c>k_annealing_steps</c>).</summary>
        public long? KAnnealingSteps { get; init; }
        /// <summary>Train with the activation normaliser (statistics of the training rows: <c>activation_mean</c>, <c>activation_std</c>).</summary>
        public bool ActivationNormalizer { get; init; }
        /// <summary>With <see cref="Model"/>: the normaliser's statistics from the dataset's first N tokens (default
        /// <see cref="DefaultNormalizerRows"/>).</summary>
        public long? NormalizerTokens { get; init; }
        /// <summary>The normaliser's <c>target_rms</c> (default 1).</summary>
        public double? TargetRms { get; init; }
        /// <summary><c>code_normalization</c> by its fork name (default CROSSCODER).</summary>
        public string? CodeNormalization { get; init; }
        /// <summary><c>encoder_layers</c>: the slots the encoder reads (default all).</summary>
        public IReadOnlyList<int>? EncoderLayers { get; init; }
    }

    public static bool IsCrossCoderArch(string? arch) => arch is CrossCoder.ArchitectureName or CrossCoder.BatchTopKArchitectureName;

    /// <summary>Slot indices "0,2" of <paramref name="flag"/>.</summary>
    public static IReadOnlyList<int> ParseSlots(string value, string flag) =>
        [.. SplitPaths(value).Select(v => int.TryParse(v, NumberStyles.None, CultureInfo.InvariantCulture, out var i) ? i
            : throw new SaeSharpException($"{flag} {value}: expected comma-separated slot numbers (0-based), got '{v}'"))];

    /// <summary>Activation paths: comma-separated (one [N, d] file per layer) or one [N, L, d] file.</summary>
    public static IReadOnlyList<string> SplitPaths(string value) => value.Split(',', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries);

    public static int Train(TrainRequest r)
    {
        var checkpoints = Path.Combine(r.Out, TrainingRun.CheckpointFolder);
        if (r.Resume)
        {
            if (r.Force) throw new SaeSharpException("give --resume (continue the run in --out) or --force (replace it), not both");
            if (!Directory.Exists(checkpoints)) throw new SaeSharpException($"--resume: no checkpoints in {checkpoints}");
        }
        else if (Directory.Exists(r.Out) && Directory.EnumerateFileSystemEntries(r.Out).Any())
        {
            if (!r.Force) throw new SaeSharpException($"{r.Out} is not empty: continue its run with --resume, or give --force to replace it");
            // The replaced run's checkpoints must not be taken for the new run's by a later --resume.
            if (Directory.Exists(checkpoints)) Directory.Delete(checkpoints, recursive: true);
        }
        bool topK = r.Arch == CrossCoder.BatchTopKArchitectureName;
        if (topK && r.K is null) throw new SaeSharpException("--arch batchtopk_crosscoder needs --k");
        if (!topK && r.K is not null) throw new SaeSharpException("--k is for --arch batchtopk_crosscoder; the L1 crosscoder's sparsity is set by --l1 (l1_penalty)");
        if (topK && r.L1 is not null) throw new SaeSharpException("--l1 is for --arch crosscoder; batchtopk_crosscoder's sparsity is set by --k");
        if (!topK && (r.KMax is not null || r.KAnnealingSteps is not null)) throw new SaeSharpException("--k-max and --k-annealing-steps (k annealing) are for --arch batchtopk_crosscoder");
        if (r.KAnnealingSteps is > 0 && r.KMax is null) throw new SaeSharpException("--k-annealing-steps needs --k-max (the k at step 0)");
        if (r.TargetRms is not null && !r.ActivationNormalizer) throw new SaeSharpException("--target-rms is the activation normaliser's; give --activation-normalizer too");
        if (r.TargetRms is { } rms && !(rms > 0 && double.IsFinite(rms))) throw new SaeSharpException($"--target-rms {rms}: expected a positive, finite number");
        if (r.NormalizerTokens is not null && (!r.ActivationNormalizer || r.Model is null))
            throw new SaeSharpException("--normalizer-tokens is for --activation-normalizer with --model (with --activations the statistics are those of every training row)");
        if (r.Model is not null) return TrainFromModel(r, r.Model, topK);
        using var data = CrossCoderActivations.LoadWithSources(r.Activations);
        var all = data.X;
        long n = all.shape[0];
        int layers = (int)all.shape[1], d = (int)all.shape[2];
        if (r.Hooks is { } hooks && hooks.Count != layers)
            throw new SaeSharpException($"--hooks names {hooks.Count} hooks but the activations have {layers} layers");
        // Held-out rows at the end of the data for metrics.json: --eval-rows (default min(16384, N/10)).
        long evalRows = Math.Min(r.EvalRows ?? 16384, n / 10);
        using var train = all.narrow(0, 0, n - evalRows);
        using var held = all.narrow(0, n - evalRows, evalRows);
        var sources = new CrossCoderSources
        {
            HookNames = r.Hooks ?? (data.Hooks.All(h => h is not null) ? data.Hooks.Select(h => h!).ToList() : null),
            ModelNames = data.Models.All(m => m is not null) ? data.Models.Distinct().Select(m => m!).ToList() is { Count: 1 } one ? one : data.Models.Select(m => m!).ToList() : null,
        };
        long steps = r.Steps ?? 1000;
        return TrainAndSave(r, topK, layers, d, steps, sources, (cc, options, onStep, c, ct) => CrossCoderTrainer.Train(cc, train, options, r.BatchSize, r.Seed, onStep, c, ct),
            evalRows > 0 ? () => held.alias() : null, r.ActivationNormalizer ? () => CrossCoderTrainer.ActivationStatistics(train) : null);
    }

    /// <summary>The rows <c>sae train --model --activation-normalizer</c> takes its statistics from when --normalizer-tokens is
    /// not given: <see cref="TrainerConfig.NBatchesForNormEstimate"/> batches cut to 16,384 rows, as
    /// <see cref="TrainingPlan.InitializationRows"/> cuts SAELens's n_batches_for_norm_estimate for <c>sae train --model</c>.</summary>
    internal static long DefaultNormalizerRows(int batchSize) =>
        (long)Math.Clamp(16384 / batchSize, 1, new TrainerConfig().NBatchesForNormEstimate) * batchSize;

    /// <summary>The first <paramref name="rows"/> crosscoder rows [n, L, d] of the dataset after its first
    /// <paramref name="skipContexts"/> windows (fewer rows if it has fewer), harvested in order (no shuffling, one pass): the
    /// rows of metrics.json (the held-out windows, nothing skipped) and of the normaliser's statistics of a model run (the
    /// training windows: the held-out ones skipped).</summary>
    internal static Tensor FirstRows(ModelDataOptions data, IReadOnlyList<string> hooks, IReadOnlyList<string>? others, long rows, int layers, int d, int skipContexts = 0)
    {
        int positions = ModelPipeline.TrainingContextSize(data.ContextSize ?? 128, data.SeqposSlice);
        using var source = ModelPipeline.OpenCrossCoderSource(data with { Tokens = Math.Max(positions, rows), Epochs = 1, ActivationsMixingFraction = 0 }, hooks, others,
            heldOutContexts: skipContexts);
        var parts = new List<Tensor>();
        while (source.Next(4096) is { } b) parts.Add(b.Input);
        using var x = cat(parts, 0);
        foreach (var p in parts) p.Dispose();
        using var all = x.view(x.shape[0], layers, d);
        return all.narrow(0, 0, Math.Min(rows, all.shape[0])).clone();
    }

    /// <summary><c>sae train --arch crosscoder --model M [--diff-model M2] --hooks A,B --dataset D</c>: streamed from the model
    /// runs through the shuffle buffer (<see cref="ModelPipeline.OpenCrossCoderSource"/>); metrics.json from the dataset's
    /// first windows (--eval-rows tokens, <see cref="ModelPipeline.HeldOutContexts"/>), which training skips in every pass, as
    /// <c>sae train --model</c> holds them out for an SAE.</summary>
    private static int TrainFromModel(TrainRequest r, ModelDataOptions data, bool topK)
    {
        var hooks = r.Hooks!;
        IReadOnlyList<string>? others = r.DiffModel is { } dm ? [dm] : null;
        // --steps, else --tokens / --batch-size, else 1000; the dataset is read again from its start when it runs out
        // before the steps (unless --tokens caps the tokens read).
        long steps = r.Steps ?? (data.Tokens is long t ? Math.Max(1, t / r.BatchSize) : 1000);
        int heldOut = ModelPipeline.HeldOutContexts(data, r.EvalRows, out var holdOutNote);
        if (holdOutNote is not null) Cli.ErrorLine($"note: {holdOutNote}");
        long evalTokens = heldOut * (long)ModelPipeline.TrainingContextSize(data.ContextSize ?? 128, data.SeqposSlice);
        using var source = ModelPipeline.OpenCrossCoderSource(data with { Epochs = 0 }, hooks, others, seed: (ulong)r.Seed, heldOutContexts: heldOut);
        int layers = source.Spec.LayerHooks!.Count, d = source.SlotWidth;
        var modelNames = new List<string> { ModelLoader.NameOf(data.ModelPath) };
        if (r.DiffModel is { } diff) modelNames.Add(ModelLoader.NameOf(diff));
        var modelRevisions = new List<string?> { data.Revision is null or "main" ? null : data.Revision };
        if (r.DiffModel is not null) modelRevisions.Add(r.DiffRevision is null or "main" ? null : r.DiffRevision);
        var sources = new CrossCoderSources
        {
            HookNames = source.Spec.LayerHooks,
            ModelNames = modelNames.Count == 1 ? modelNames : source.Spec.LayerModels!.Select(m => modelNames[m]).ToList(),
            ModelRevisions = modelRevisions.All(v => v is null) ? null
                : modelNames.Count == 1 ? modelRevisions : source.Spec.LayerModels!.Select(m => modelRevisions[m]).ToList(),
        };
        return TrainAndSave(r, topK, layers, d, steps, sources, (cc, options, onStep, c, ct) => CrossCoderTrainer.Train(cc, source, options, r.BatchSize, onStep, c, ct),
            () => FirstRows(data, hooks, others, evalTokens, layers, d),
            r.ActivationNormalizer ? () =>
            {
                // The fork takes the statistics from its caches before the first step; here from the first
                // --normalizer-tokens tokens training reads (after the held-out windows), harvested in order (a pass of its
                // own: the training stream is not consumed).
                long asked = r.NormalizerTokens ?? DefaultNormalizerRows(r.BatchSize);
                using var x = FirstRows(data, hooks, others, asked, layers, d, skipContexts: heldOut);
                if (x.shape[0] < asked)
                    Cli.ErrorLine($"note: the activation normaliser's statistics come from {x.shape[0]} rows, all the training windows of {data.DatasetPath} hold, " +
                                  $"not the {asked} of {(r.NormalizerTokens is null ? "the default" : "--normalizer-tokens")}");
                return CrossCoderTrainer.ActivationStatistics(x);
            } : null, new JsonObject { ["eval_held_out"] = true, ["eval_contexts"] = heldOut, ["eval_tokens"] = evalTokens });
    }

    private static int TrainAndSave(TrainRequest r, bool topK, int layers, int d, long steps, CrossCoderSources sources,
        Func<CrossCoder, CrossCoderTrainerOptions, Action<CrossCoderStepLog>, CrossCoderCheckpointing, CancellationToken, IReadOnlyList<CrossCoderStepLog>> train,
        Func<Tensor>? evalRows, Func<(Tensor Mean, Tensor Std)>? statistics = null, JsonObject? evalRecord = null)
    {
        int dictSize = r.DictSize ?? (r.Expansion ?? 8) * d;
        var cfg = new CrossCoderConfig
        {
            ActivationDim = d, DictSize = dictSize, NumLayers = layers, K = r.K, NormalizerBuffers = statistics is not null, TargetRms = r.TargetRms ?? 1.0,
            CodeNormalization = r.CodeNormalization is { } cn ? CrossCoder.ParseCodeNormalization(cn, "--code-normalization") : Saes.CodeNormalization.Crosscoder,
            EncoderLayers = r.EncoderLayers,
        };
        using var cc = new CrossCoder(cfg);
        double? normInitScale = topK ? 1.0 : null; // the fork's defaults: BatchTopKCrossCoder 1.0, CrossCoder none
        using (var g = new Generator((ulong)r.Seed)) cc.InitializeWeights(g, normInitScale);
        // On --resume the checkpoint holds the normaliser's buffers (they are in the state dict it restores).
        if (statistics is not null && !r.Resume)
        {
            // The fork's trainers build the crosscoder with activation_mean/std; every batch is normalised before the step.
            var (mean, std) = statistics();
            using (mean)
            using (std)
                cc.SetActivationNormalizer(mean, std);
        }
        var options = new CrossCoderTrainerOptions
        {
            Steps = steps, Lr = r.Lr, L1Penalty = r.L1 ?? 0.1,
            WarmupSteps = r.WarmupSteps ?? Math.Min(1000, steps / 10),
            ThresholdStartStep = Math.Min(1000, steps / 2),
            KMax = r.KMax, KAnnealingSteps = r.KAnnealingSteps ?? 0,
        };
        var checkpointing = new CrossCoderCheckpointing
        {
            Path = Path.Combine(r.Out, TrainingRun.CheckpointFolder),
            EverySteps = r.CheckpointEvery ?? Math.Max(1, steps / 10),
            Keep = new TrainerConfig().KeepCheckpoints,
            Resume = r.Resume,
            LogFolder = r.Out,
            LogEverySteps = Math.Clamp(steps / 100, 1, new TrainerConfig().LogEverySteps),
        };
        IReadOnlyList<CrossCoderStepLog> logs;
        int stopExitCode;
        var logFile = Path.Combine(r.Out, TrainLogFile.FileName);
        using (var stop = new StopSignals())
        {
            try
            {
                logs = CliProgress.Run<CrossCoderStepLog, IReadOnlyList<CrossCoderStepLog>>("train", steps,
                    progress => train(cc, options, log => progress?.Report(log), checkpointing, stop.Token),
                    log => (log.Step + 1, steps, string.Create(CultureInfo.InvariantCulture, $"train {r.Arch}: step {log.Step + 1}/{steps}, loss {log.Loss:G4}, L0 {log.L0:F1}")),
                    plainLine: null);
            }
            catch (SaeSharpException e) when (e.Message.StartsWith("crosscoder training step ", StringComparison.Ordinal))
            {
                // A loss that became NaN: the curves of the steps logged before it are the ones that matter.
                if (DrawCurves(logFile, r.Out) is not { } drawn) throw;
                throw new SaeSharpException($"{e.Message} ({drawn})", e);
            }
            stopExitCode = stop.Token.IsCancellationRequested ? stop.ExitCode : 0;
        }
        var curves = DrawCurves(logFile, r.Out);
        long done = logs.Count > 0 ? logs[^1].Step + 1 : StepOf(TrainerCheckpoint.Resolve(checkpointing.Path));
        if (stopExitCode != 0)
        {
            Console.WriteLine($"stopped at step {done}; checkpoint: {TrainerCheckpoint.Resolve(checkpointing.Path)} (continue with --resume)");
            if (curves is not null) Console.WriteLine(curves);
            return stopExitCode;
        }
        if (done == 0) throw new SaeSharpException("crosscoder training: the data gave no batch");
        CrossCoderFormat.Save(cc, r.Out, sources, normInitScale);
        var last = logs.Count > 0 ? logs[^1] : null;
        var rows = new List<(string, string)>
        {
            ("architecture", r.Arch), ("num_layers", layers.ToString(CultureInfo.InvariantCulture)), ("activation_dim", d.ToString(CultureInfo.InvariantCulture)),
            ("dict_size", dictSize.ToString(CultureInfo.InvariantCulture)), ("steps", done.ToString(CultureInfo.InvariantCulture)),
            ("lr", options.Lr?.ToString("G4", CultureInfo.InvariantCulture) ?? "default"),
        };
        if (last is not null)
            rows.AddRange([("final loss", last.Loss.ToString("G5", CultureInfo.InvariantCulture)), ("final L0", last.L0.ToString("F2", CultureInfo.InvariantCulture))]);
        if (evalRows is not null)
        {
            cc.eval();
            using var held = evalRows();
            var m = CrossCoderEvaluator.Evaluate(cc, held);
            var norms = CrossCoderDecoderNorms.Of(cc);
            var json = MetricsJson(m);
            var names = SlotNames(sources, layers);
            foreach (var (key, value) in evalRecord ?? []) json[key] = value?.DeepClone();
            json["decoder_norms"] = NormsJson(norms, names);
            AtomicFile.WriteAllText(Path.Combine(r.Out, "metrics.json"), json.ToJsonString(new JsonSerializerOptions { WriteIndented = true }));
            rows.AddRange(MetricRows(m, names));
            rows.AddRange(NormRows(norms, names));
        }
        Cli.WriteTable($"crosscoder → {r.Out}", rows);
        if (curves is not null) Console.WriteLine(curves);
        return 0;
    }

    /// <summary>The step of a checkpoint folder <c>step_NNNNNNNNN</c>.</summary>
    private static long StepOf(string folder) => long.Parse(Path.GetFileName(folder)["step_".Length..], CultureInfo.InvariantCulture);

    /// <summary>Draws the run's log into training_curves.png; returns the line saying where (or why not), null without a log.</summary>
    private static string? DrawCurves(string logFile, string outDir)
    {
        if (!File.Exists(logFile)) return null;
        try
        {
            return $"training curves: {TrainingCurves.Save(logFile, Path.Combine(outDir, TrainingCurves.FileName))}";
        }
        catch (Exception e) when (e is SaeSharpException or IOException or UnauthorizedAccessException or ArgumentException)
        {
            return $"training curves not drawn: {e.Message}";
        }
    }

    /// <summary>The table rows of the metrics, each slot's named by its index and <see cref="SlotNames"/> ("slot 1 (chat) fvu").</summary>
    private static IEnumerable<(string, string)> MetricRows(CrossCoderEvalResult m, IReadOnlyList<string> names)
    {
        static string F(double v) => v.ToString("G5", CultureInfo.InvariantCulture);
        yield return ("rows", Cli.Integer(m.Rows));
        for (int l = 0; l < m.Layers.Count; l++)
        {
            string slot = names[l] == $"slot {l}" ? names[l] : $"slot {l} ({names[l]})";
            yield return ($"{slot} mse", F(m.Layers[l].Mse));
            yield return ($"{slot} explained_variance", F(m.Layers[l].ExplainedVariance));
            yield return ($"{slot} fvu", F(m.Layers[l].Fvu));
        }
        yield return ("mse", F(m.Total.Mse));
        yield return ("explained_variance", F(m.Total.ExplainedVariance));
        yield return ("fvu", F(m.Total.Fvu));
        yield return ("l0", F(m.L0));
        yield return ("dead_latents", $"{Cli.Integer(m.DeadLatents)} of {Cli.Integer(m.DictSize)}");
    }

    private static JsonObject MetricsJson(CrossCoderEvalResult m)
    {
        var layers = new JsonArray();
        foreach (var l in m.Layers) layers.Add(new JsonObject { ["mse"] = l.Mse, ["explained_variance"] = l.ExplainedVariance, ["fvu"] = l.Fvu });
        return new JsonObject
        {
            ["rows"] = m.Rows, ["mse"] = m.Total.Mse, ["explained_variance"] = m.Total.ExplainedVariance, ["fvu"] = m.Total.Fvu,
            ["l0"] = m.L0, ["dead_latents"] = m.DeadLatents, ["dict_size"] = m.DictSize, ["layers"] = layers,
        };
    }

    /// <summary>A short name per layer slot: the models when the slots differ by model only (model diffing), else the hooks
    /// (with the model when slots differ in both), else "slot j".</summary>
    internal static IReadOnlyList<string> SlotNames(CrossCoderSources sources, int layers)
    {
        var hooks = sources.HookNames is { } h && h.Count == layers ? h : null;
        var models = sources.ModelNames is { } m && m.Count == layers ? m : null;
        return Enumerable.Range(0, layers).Select(l =>
            models is not null && (hooks is null || hooks.Distinct().Count() == 1) ? models[l]
            : models is not null && hooks is not null ? $"{models[l]} {hooks[l]}"
            : hooks?[l] ?? $"slot {l}").ToList();
    }

    /// <summary>The table rows of the decoder-norm numbers: for two slots, the latents in each band of the second slot's
    /// Δnorm (only the first, shared, only the second) and the median decoder cosine of the shared ones; for more slots, the
    /// latents specific to each slot.</summary>
    private static IEnumerable<(string, string)> NormRows(CrossCoderDecoderNorms n, IReadOnlyList<string> names)
    {
        if (n.Bands.Count == 2)
        {
            var b = n.Bands[1];
            yield return ($"only {names[0]} (Δnorm < {CrossCoderDecoderNorms.AbsentBelow})", Cli.Integer(b.Absent));
            yield return ($"shared ({CrossCoderDecoderNorms.SharedFrom} ≤ Δnorm ≤ {CrossCoderDecoderNorms.SharedTo})", Cli.Integer(b.Shared));
            yield return ($"only {names[1]} (Δnorm > {CrossCoderDecoderNorms.SpecificAbove})", Cli.Integer(b.Specific));
            yield return ("other latents", Cli.Integer(b.Other));
            var shared = Enumerable.Range(0, n.Cosine!.Length).Where(i => n.DeltaNorm[1][i] is >= CrossCoderDecoderNorms.SharedFrom and <= CrossCoderDecoderNorms.SharedTo)
                .Select(i => n.Cosine[i]).Order().ToList();
            if (shared.Count > 0) yield return ("decoder cosine of shared (median)", shared[shared.Count / 2].ToString("F3", CultureInfo.InvariantCulture));
        }
        else
            foreach (var b in n.Bands) yield return ($"only {names[b.Slot]} (Δnorm > {CrossCoderDecoderNorms.SpecificAbove})", Cli.Integer(b.Specific));
        if (n.ZeroDecoder > 0) yield return ("zero decoder", Cli.Integer(n.ZeroDecoder));
    }

    private static JsonObject NormsJson(CrossCoderDecoderNorms n, IReadOnlyList<string> names)
    {
        static JsonArray Values(IEnumerable<double> v) => new(v.Select(x => double.IsNaN(x) ? null : (JsonNode)JsonValue.Create(x)).ToArray());
        var bands = new JsonArray();
        foreach (var b in n.Bands)
            bands.Add(new JsonObject { ["slot"] = b.Slot, ["absent"] = b.Absent, ["shared"] = b.Shared, ["specific"] = b.Specific, ["other"] = b.Other });
        return new JsonObject
        {
            ["slots"] = new JsonArray(names.Select(x => (JsonNode)JsonValue.Create(x)).ToArray()),
            ["band_edges"] = new JsonObject
            {
                ["absent_below"] = CrossCoderDecoderNorms.AbsentBelow, ["shared_from"] = CrossCoderDecoderNorms.SharedFrom,
                ["shared_to"] = CrossCoderDecoderNorms.SharedTo, ["specific_above"] = CrossCoderDecoderNorms.SpecificAbove,
            },
            ["bands"] = bands,
            ["zero_decoder"] = n.ZeroDecoder,
            ["relative_norm"] = new JsonArray(n.RelativeNorm.Select(r => (JsonNode)Values(r)).ToArray()),
            ["delta_norm"] = new JsonArray(n.DeltaNorm.Select(r => (JsonNode)Values(r)).ToArray()),
            ["cosine"] = n.Cosine is { } c ? Values(c) : null,
        };
    }

    /// <summary>Writes the last slot's relative-decoder-norm histogram to <paramref name="png"/>.</summary>
    private static void SaveNormHistogram(string png, CrossCoderDecoderNorms n, IReadOnlyList<string> names)
    {
        int last = names.Count - 1;
        string others = names.Count == 2 ? names[0] : "the other slots";
        var bytes = n.RenderHistogram(last, names[last], others);
        AtomicFile.Write(png, st => st.Write(bytes));
        Console.WriteLine($"relative decoder norm histogram: {png}");
    }

    /// <summary><c>sae eval --sae CROSSCODER --activations FILE[,FILE...]</c>: the reconstruction metrics and the decoder-norm
    /// numbers of model diffing (<see cref="CrossCoderDecoderNorms"/>); the histogram PNG goes to <paramref name="histogram"/>,
    /// else beside <paramref name="json"/>.</summary>
    public static int Eval(string saePath, string activations, long? maxRows, string? json, string? histogram = null, LatentScalingRequest? latentScaling = null)
    {
        using var cc = CrossCoderFormat.Load(saePath, out var sources);
        cc.eval();
        using var data = CrossCoderActivations.LoadWithSources(SplitPaths(activations), maxRows);
        var x = data.X;
        if (x.shape[1] != cc.Cfg.NumLayers || x.shape[2] != cc.Cfg.ActivationDim)
            throw new SaeSharpException($"{activations}: activations [{string.Join(", ", x.shape)}] do not fit {saePath} (num_layers {cc.Cfg.NumLayers}, activation_dim {cc.Cfg.ActivationDim})");
        data.CheckSlotsMatch(sources, saePath);
        var m = CrossCoderEvaluator.Evaluate(cc, x);
        var norms = CrossCoderDecoderNorms.Of(cc);
        var names = SlotNames(sources, cc.Cfg.NumLayers);
        var scaling = latentScaling is null ? null : LatentScaling(cc, x, latentScaling);
        if (json is not null)
        {
            var o = MetricsJson(m);
            o["decoder_norms"] = NormsJson(norms, names);
            if (scaling is not null) o["latent_scaling"] = LatentScalingJson(scaling, names);
            AtomicFile.WriteAllText(json, o.ToJsonString(new JsonSerializerOptions { WriteIndented = true }));
        }
        if ((histogram ?? (json is null ? null : Path.ChangeExtension(json, null) + "_relative_decoder_norm.png")) is { } png) SaveNormHistogram(png, norms, names);
        Cli.WriteTable(saePath, MetricRows(m, names).Concat(NormRows(norms, names)));
        if (scaling is not null) WriteLatentScaling(scaling, names, json is null ? null : LatentScalingPng(json));
        return 0;
    }

    /// <summary>Where <c>sae eval --latent-scaling --json F</c> writes its ν^ε vs ν^r scatter: beside F.</summary>
    internal static string LatentScalingPng(string json) => Path.ChangeExtension(json, null) + "_latent_scaling.png";

    /// <summary><c>sae eval --latent-scaling [--latents LIST]</c>: <see cref="LatentScalingRequest.Latents"/> as
    /// <see cref="FeatureSelection.Parse"/> takes it (null: the chat-only and shared bands).</summary>
    internal sealed record LatentScalingRequest(string? Latents);

    /// <summary>Latent Scaling of <paramref name="cc"/> over the rows of <paramref name="x"/> [N, 2, d] (in order).</summary>
    private static CrossCoderLatentScalingResult LatentScaling(CrossCoder cc, Tensor x, LatentScalingRequest request)
    {
        using var source = new TensorActivationSource(x.view(x.shape[0], -1), shuffle: false, name: "--activations");
        return CrossCoderLatentScaling.Compute(cc, source, LatentScalingLatents(cc, request));
    }

    /// <summary>The latents <paramref name="request"/> names (null: the default bands), after checking the slot count.</summary>
    private static IReadOnlyList<int>? LatentScalingLatents(CrossCoder cc, LatentScalingRequest request)
    {
        if (cc.Cfg.NumLayers != 2)
            throw new SaeSharpException($"--latent-scaling needs a model-diffing crosscoder with 2 slots (base, chat); this one has {cc.Cfg.NumLayers}");
        return request.Latents?.Trim() == "all" ? Enumerable.Range(0, cc.Cfg.DictSize).ToList()
            : FeatureSelection.Parse(request.Latents, cc.Cfg.DictSize, "latents");
    }

    private static JsonObject LatentScalingJson(CrossCoderLatentScalingResult r, IReadOnlyList<string> names)
    {
        static JsonNode? V(double v) => double.IsFinite(v) ? JsonValue.Create(v) : null;
        var bands = new JsonArray();
        foreach (var (band, count, nuE, nuR) in r.BandSummary())
            bands.Add(new JsonObject { ["band"] = BandName(band), ["latents"] = count, ["median_nu_error"] = V(nuE), ["median_nu_reconstruction"] = V(nuR) });
        var latents = new JsonArray();
        foreach (var l in r.Latents)
            latents.Add(new JsonObject
            {
                ["latent"] = l.Latent, ["band"] = BandName(l.Band), ["delta_norm"] = V(l.DeltaNorm), ["count_active"] = l.ActiveRows,
                ["beta_activation_base"] = V(l.BetaActivation.Base), ["beta_activation_chat"] = V(l.BetaActivation.Chat),
                ["beta_reconstruction_base"] = V(l.BetaReconstruction.Base), ["beta_reconstruction_chat"] = V(l.BetaReconstruction.Chat),
                ["beta_error_base"] = V(l.BetaError.Base), ["beta_error_chat"] = V(l.BetaError.Chat),
                ["beta_ratio_error"] = V(l.NuError), ["beta_ratio_reconstruction"] = V(l.NuReconstruction), ["beta_activation_ratio"] = V(l.NuActivation),
            });
        return new JsonObject
        {
            ["base_slot"] = 0, ["chat_slot"] = 1, ["base"] = names[0], ["chat"] = names[1], ["rows"] = r.Rows,
            ["bands"] = bands, ["latents"] = latents,
        };
    }

    private static string BandName(CrossCoderLatentBand band) => band switch
    {
        CrossCoderLatentBand.ChatOnly => "chat_only",
        CrossCoderLatentBand.Shared => "shared",
        CrossCoderLatentBand.BaseOnly => "base_only",
        _ => "other",
    };

    /// <summary>The per-band table of median ν and, with <paramref name="png"/>, the ν^ε vs ν^r scatter.</summary>
    private static void WriteLatentScaling(CrossCoderLatentScalingResult r, IReadOnlyList<string> names, string? png)
    {
        static string F(double v) => double.IsFinite(v) ? v.ToString("F3", CultureInfo.InvariantCulture) : "-";
        var rows = new List<(string, string)> { ("rows", Cli.Integer(r.Rows)) };
        foreach (var (band, count, nuE, nuR) in r.BandSummary())
        {
            string label = band switch
            {
                CrossCoderLatentBand.ChatOnly => $"only {names[1]}", CrossCoderLatentBand.BaseOnly => $"only {names[0]}",
                CrossCoderLatentBand.Shared => "shared", _ => "other",
            };
            rows.Add(($"{label}: latents", Cli.Integer(count)));
            rows.Add(($"{label}: median ν^ε", F(nuE)));
            rows.Add(($"{label}: median ν^r", F(nuR)));
        }
        Cli.WriteTable($"latent scaling (ν = β {names[0]} / β {names[1]}; near 0: absent from {names[0]})", rows);
        if (png is null || r.Latents.Count == 0) return;
        var bytes = r.RenderScatter(names[0], names[1]);
        AtomicFile.Write(png, st => st.Write(bytes));
        Console.WriteLine($"latent scaling scatter: {png}");
    }

    /// <summary><c>sae eval --sae CROSSCODER --model M [--diff-model M2] --dataset D</c>: the metrics of <see cref="Eval"/> on the
    /// activations of the model run(s), and per model the CE and KL of splicing the crosscoder's reconstruction into every
    /// hook of its slots (<see cref="ModelPipeline.EvaluateCrossCoder"/>); --json adds the models under <c>models</c>.</summary>
    public static int EvalInModel(string saePath, ModelDataOptions data, string? diffModel, string? hook, string? json, string? histogram,
        LatentScalingRequest? latentScaling = null)
    {
        CrossCoderLatentScalingAccumulator? scalingSums = null;
        CrossCoderDownstreamMetrics m;
        CrossCoderLatentScalingResult? scaling;
        try
        {
            m = CliProgress.Run("eval", progress => ModelPipeline.EvaluateCrossCoder(saePath, data, diffModel, hook is null ? null : [hook], out _, progress,
                latentScaling is null ? null : c =>
                {
                    scalingSums = new CrossCoderLatentScalingAccumulator(c, LatentScalingLatents(c, latentScaling));
                    return scalingSums.Add;
                }));
            scaling = scalingSums?.Result();
        }
        finally
        {
            scalingSums?.Dispose();
        }
        using var cc = CrossCoderFormat.Load(saePath);
        var norms = CrossCoderDecoderNorms.Of(cc);
        var hooks = new string[cc.Cfg.NumLayers];
        var models = new string[cc.Cfg.NumLayers];
        foreach (var r in m.Models)
            for (int i = 0; i < r.Slots.Count; i++) (hooks[r.Slots[i]], models[r.Slots[i]]) = (r.Hooks[i], r.Name);
        var names = SlotNames(new CrossCoderSources { HookNames = hooks, ModelNames = m.Models.Count == 1 ? null : models }, cc.Cfg.NumLayers);
        if (json is not null)
        {
            var o = MetricsJson(m.Reconstruction);
            o["decoder_norms"] = NormsJson(norms, names);
            o["models"] = new JsonArray(m.Models.Select(r => (JsonNode)r.ToJson()).ToArray());
            if (scaling is not null) o["latent_scaling"] = LatentScalingJson(scaling, names);
            AtomicFile.WriteAllText(json, o.ToJsonString(new JsonSerializerOptions { WriteIndented = true }));
        }
        if ((histogram ?? (json is null ? null : Path.ChangeExtension(json, null) + "_relative_decoder_norm.png")) is { } png) SaveNormHistogram(png, norms, names);
        Cli.WriteTable(saePath, MetricRows(m.Reconstruction, names).Concat(NormRows(norms, names)));
        foreach (var r in m.Models)
        {
            static string F(double v) => v.ToString("F4", CultureInfo.InvariantCulture);
            Cli.WriteTable($"{r.Name}: {string.Join(", ", r.Hooks)} replaced by the crosscoder's reconstruction",
            [
                ("% CE loss recovered (zero ablation)", Cli.Percent("% CE loss recovered (zero ablation)", r.CeLossScore, 2)),
                ("% CE loss recovered (mean ablation)", Cli.Percent("% CE loss recovered (mean ablation)", r.CeLossScoreMeanAblation, 2)),
                ("ce loss clean", F(r.CeLossWithoutSae)),
                ("ce loss with crosscoder", F(r.CeLossWithSae)),
                ("ce loss zero-ablated", F(r.CeLossWithAblation)),
                ("ce loss mean-ablated", F(r.CeLossWithMeanAblation)),
                ("ce loss with error term", F(r.CeLossWithErrorTerm)),
                ("kl div with crosscoder", r.KlDivWithSae.ToString("G5", CultureInfo.InvariantCulture)),
                ("kl div zero-ablated", r.KlDivWithAblation.ToString("G5", CultureInfo.InvariantCulture)),
                ("kl div score", F(r.KlDivScore)),
                ("tokens", Cli.Integer(r.Tokens)),
            ]);
        }
        if (scaling is not null) WriteLatentScaling(scaling, names, json is null ? null : LatentScalingPng(json));
        return 0;
    }

    /// <summary>The crosscoder's slots in <paramref name="modelCount"/> models with <paramref name="hookPoints"/>' hooks
    /// (<see cref="ModelPipeline.CrossCoderHooks"/>), and the model of <paramref name="slot"/> (default the last slot) with
    /// its (slot, hook) pairs.</summary>
    private static (HarvestSpec Spec, int Model, List<(int Slot, string Hook)> Slots) SlotsOf(CrossCoder cc, CrossCoderSources sources, string ccPath,
        Hooks.HookPoints hookPoints, int modelCount, int? slot)
    {
        var hooks = ModelPipeline.CrossCoderHooks(cc, sources, ccPath, modelCount, null);
        var spec = HarvestSpec.ForCrossCoder(Enumerable.Repeat(hookPoints, modelCount).ToList(), hooks);
        int j = slot ?? cc.Cfg.NumLayers - 1;
        if (j < 0 || j >= cc.Cfg.NumLayers) throw new SaeSharpException($"--slot {j}: give 0..{cc.Cfg.NumLayers - 1} ({ccPath} has {cc.Cfg.NumLayers} layer slots)");
        int m = spec.LayerModels![j];
        var slots = Enumerable.Range(0, cc.Cfg.NumLayers).Where(k => spec.LayerModels[k] == m).Select(k => (k, spec.LayerHooks![k])).ToList();
        return (spec, m, slots);
    }

    /// <summary><c>sae steer --sae CROSSCODER --model M [--diff-model M2] [--slot J] --feature I --scale A</c>: continues the
    /// prompt with the model of slot J (default the last: the chat model of a diffing pair) with and without
    /// <see cref="CrossCoderInterventions.Steering"/> at every hook of that model's slots (same seeds).</summary>
    public static int Steer(string ccPath, string modelPath, string? diffModel, int? slot, int latent, double scale, string prompt, int maxNew, int runs,
        Func<int, GenerationOptions> options, bool prependBos, string? positionsText = null)
    {
        using var cc = CrossCoderFormat.Load(ccPath, out var sources);
        cc.eval();
        int modelCount = diffModel is null ? 1 : 2;
        // The slots are resolved against the first model's hook points (the models of a diffing pair share an architecture).
        using var first = ModelForSae.Load(modelPath, new WeightProcessingOptions());
        var (_, m, slots) = SlotsOf(cc, sources, ccPath, first.Model.HookPoints, modelCount, slot);
        string path = m == 0 ? modelPath : diffModel!;
        using var other = m == 0 ? null : ModelForSae.Load(path, new WeightProcessingOptions());
        var pm = other ?? first;
        var tok = Tokenizer.FromFolder(path);
        using var scope = NewDisposeScope();
        using var tokens = InterventionCommands.PromptTokens(tok, prompt, prependBos);
        long promptLen = tokens.shape[1];
        long steps = promptLen + maxNew;
        ModelCommands.RefuseGenerationPastContext(pm.Model, promptLen, maxNew, "--max-new-tokens");
        var positions = InterventionCommands.ParsePositions(positionsText, promptLen, steps, $"the prompt ({promptLen} tokens) and its continuation have {steps} tokens");
        var steer = CrossCoderInterventions.Steering(cc, latent, scale, slots, positions);
        var rows = new List<string[]>();
        var notes = new List<string>();
        long longest = 0;
        for (int i = 0; i < runs; i++)
        {
            var o = options(i) with { EosTokenIds = pm.Model.StopTokenIds };
            string Continue(bool steered)
            {
                using var g = pm.Model.Generate(tokens, maxNew, o with { Hooks = [.. pm.Hooks, .. steered ? steer : []] });
                longest = Math.Max(longest, g.Tokens.shape[1]);
                if (InterventionCommands.GenerationNote(g, 0, steered ? positions : null) is string note)
                    notes.Add($"seed {o.Seed}, {(steered ? "steered" : "unsteered")}: {note}");
                return ModelCommands.Continuation(tok, g.Tokens, promptLen);
            }
            rows.Add([o.Seed.ToString()!, Continue(false), Continue(true)]);
        }
        Console.WriteLine($"prompt: {prompt}");
        Cli.WriteColumns($"latent {latent} × {scale.ToString(CultureInfo.InvariantCulture)} at {string.Join(", ", slots.Select(s => $"slot {s.Slot} {s.Hook}"))} of {ModelLoader.NameOf(path)}" +
            (positions is null ? "" : $", position{(positions.Length == 1 ? "" : "s")} {string.Join(",", positions)}"),
            ["seed", "unsteered", "steered"], rows);
        if (ModelCommands.PastContextNote(pm.Model, longest) is { } past) notes.Add(past);
        foreach (var note in notes) Cli.ErrorLine($"note: {note}");
        // As sae steer for an SAE: the tokens the latent's decoder row raises most through the steered model's unembedding,
        // the row of that model's last slot (the chat slot of a diffing pair; sae features takes the last slot's too).
        var (lastSlot, lastHook) = slots[^1];
        using (var slotSae = FeatureAnalysis.SlotSae(cc, lastSlot, lastHook))
            InterventionCommands.WriteFeatureLogits(latent, InterventionCommands.FeatureLogits(pm.Model, slotSae, lastHook, latent, 10, Math.Min(tok.VocabSize, pm.Model.Config.DVocab))
                .Select(e => (tok.TokenText((int)e.Token), e.Logit)));
        return 0;
    }

    /// <summary><c>sae ablate --sae CROSSCODER --model M [--diff-model M2] [--slot J] --features I,...</c>: per batch every model
    /// runs clean, the crosscoder encodes all slots, and the model of slot J (default the last) runs again with the latents
    /// zeroed (or set to their mean over all the batches' tokens) and the error term kept, at every hook of its slots
    /// (<see cref="CrossCoderInterventions.EditLatents"/>); reported as <c>sae ablate</c> reports an SAE's.</summary>
    public static int Ablate(string ccPath, string modelPath, string? diffModel, int? slot, IReadOnlyList<int> latents, string mode,
        IReadOnlyList<(int Feature, double Value)> clamps, string what, List<Tensor> batches, Tokenizers.ITextTokenizer tok, int top)
    {
        using var cc = CrossCoderFormat.Load(ccPath, out var sources);
        cc.eval();
        if (diffModel is not null)
            ModelPipeline.CheckSameTokenizer(tok, ModelLoader.NameOf(modelPath), Tokenizer.FromFolder(diffModel), ModelLoader.NameOf(diffModel));
        var models = new List<ProcessedModel>();
        try
        {
            foreach (var path in (IEnumerable<string>)[modelPath, .. diffModel is null ? [] : new[] { diffModel }])
                models.Add(ModelForSae.Load(path, new WeightProcessingOptions()));
            var (spec, m, slots) = SlotsOf(cc, sources, ccPath, models[0].Model.HookPoints, models.Count, slot);
            var runs = models.Select(p => new CrossCoderModelRun(p.Model, p.Hooks)).ToList();
            Tensor Clean(Tensor batch) => CrossCoderInterventions.CleanInput(runs, spec.LayerHooks!, spec.LayerModels!, batch);
            // Each latent's mean over every token of the batches (as the SAE path's feature means).
            var means = mode == "mean" && latents.Count > 0 ? CrossCoderInterventions.LatentMeans(cc, batches.Select(Clean)).DetachFromDisposeScope() : null;
            try
            {
                var model = models[m];
                var edits = LatentEdits(cc, latents, means, clamps) ?? (f => f.alias());
                InterventionCommands.ReportAblation(batches, batch =>
                {
                    using var edit = CrossCoderInterventions.EditLatents(cc, Clean(batch), slots, edits);
                    var clean = model.Model.Run(batch, new RunOptions { Hooks = model.Hooks }).Logits!;
                    var edited = model.Model.Run(batch, new RunOptions { Hooks = [.. model.Hooks, .. edit.Hooks] }).Logits!;
                    return (clean, edited);
                }, tok, top, $"{what} at {string.Join(", ", slots.Select(s => $"slot {s.Slot} {s.Hook}"))} of {ModelLoader.NameOf(m == 0 ? modelPath : diffModel!)} (error term kept)");
            }
            finally
            {
                means?.Dispose();
            }
            return 0;
        }
        finally
        {
            foreach (var p in models) p.Dispose();
        }
    }

    /// <summary>The ablation of <paramref name="latents"/> (to 0, or to <paramref name="means"/>) first, then each clamp, as
    /// <c>sae ablate</c> and <c>sae model run</c> apply them to an SAE; null when there is nothing to edit.</summary>
    private static Func<Tensor, Tensor>? LatentEdits(CrossCoder cc, IReadOnlyList<int> latents, Tensor? means, IReadOnlyList<(int Feature, double Value)> clamps)
    {
        Func<Tensor, Tensor>? edits = latents.Count > 0 ? CrossCoderInterventions.Ablate(cc, latents, means) : null;
        foreach (var (latent, value) in clamps)
        {
            var before = edits;
            var set = CrossCoderInterventions.Clamp(cc, latent, value);
            edits = before is null ? set : f => set(before(f));
        }
        return edits;
    }

    /// <summary>
    /// <c>sae model run --sae CROSSCODER [--diff-model M2] [--slot J]</c>: every model of the crosscoder runs clean on the
    /// tokens, the crosscoder encodes all slots, and the model of slot J (default the last: the chat model of a diffing pair)
    /// runs with every hook of its slots replaced by the slot's reconstruction (with <c>--error-term</c>, x + D(f') − D(f)),
    /// after <c>--ablate</c>/<c>--clamp</c> edit the latents (<see cref="CrossCoderInterventions.EditLatents"/>) and with
    /// <c>--steer</c> adding a latent's rows (<see cref="CrossCoderInterventions.Steering"/>); its logits and <c>--hooks</c>
    /// are saved as for an SAE, per prompt. With <c>--generate N</c> it also continues each prompt, clean and with the same
    /// splice and edits (<see cref="CrossCoderInterventions.Generate"/>), side by side, greedy or sampled with one seed for both.
    /// </summary>
    internal static int ModelRun(System.CommandLine.ParseResult parse, InterventionCommands.RunEdits edits, string ccPath, string modelPath,
        string? diffModel, int? slot, string dtype, IReadOnlyList<Tensor> prompts, bool savedTokens, string? hookArg, string outPath,
        ModelCommands.GenerationRequest generation)
    {
        int generate = generation.NewTokens;
        // Before anything is written: the continuations are shown as text (the models of a diffing pair share the tokenizer).
        var generationTokenizer = generate > 0 ? Tokenizer.FromFolder(modelPath) : null;
        if ((parse.GetValue(edits.Sae)?.Length ?? 0) > 1)
            throw new SaeSharpException($"--sae {ccPath} is a crosscoder, spliced alone: give it as the only --sae");
        Cli.RefuseGiven(parse, "for several --sae; a crosscoder is spliced alone", edits.SaeIndex);
        using var cc = CrossCoderFormat.Load(ccPath, out var sources);
        cc.eval();
        var paths = new List<string> { modelPath };
        ModelPipeline.CrossCoderHooks(cc, sources, ccPath, diffModel is null ? 1 : 2, null);   // the slots fit the models, before loading any
        if (diffModel is not null)
        {
            paths.Add(diffModel);
            ModelPipeline.CheckSameTokenizer(Tokenizer.FromFolder(modelPath), ModelLoader.NameOf(modelPath), Tokenizer.FromFolder(diffModel), ModelLoader.NameOf(diffModel));
        }
        var models = new List<ProcessedModel>();
        var saved = new List<ModelCommands.SavedRun>();
        try
        {
            foreach (var path in paths) models.Add(ModelForSae.Load(path, new WeightProcessingOptions(), ModelLoader.ParseDtype(dtype, path)));
            var (spec, m, slots) = SlotsOf(cc, sources, ccPath, models[0].Model.HookPoints, models.Count, slot);
            var model = models[m];
            using var scope = NewDisposeScope();
            var runs = models.Select(p => new CrossCoderModelRun(p.Model, p.Hooks)).ToList();
            var ablated = (parse.GetValue(edits.Ablate) ?? []).SelectMany(a => InterventionCommands.FeatureList(a, "--ablate")).ToList();
            var mode = parse.GetValue(edits.AblateMode);
            if (mode is not ("zero" or "mean")) throw new SaeSharpException($"--ablate-mode {mode}: expected zero or mean");
            var clamps = (parse.GetValue(edits.Clamp) ?? []).Select(c => InterventionCommands.FeatureValue(c, "--clamp", "F:V")).ToList();
            bool errorTerm = parse.GetValue(edits.ErrorTerm);
            var steering = (parse.GetValue(edits.Steer) ?? []).Select(st => InterventionCommands.FeatureValue(st, "--steer", "F:S")).ToList();
            var names = hookArg is null ? [] : model.Model.HookPoints.Select(hookArg);
            var notes = new List<string>();
            for (int i = 0; i < prompts.Count && generate > 0; i++)
                ModelCommands.RefuseGenerationPastContext(model.Model, prompts[i].shape[1], generate, "--generate", generation.PromptName(i));
            for (int i = 0; i < prompts.Count; i++)
            {
                var tokens = prompts[i];
                var clean = CrossCoderInterventions.CleanInput(runs, spec.LayerHooks!, spec.LayerModels!, tokens);
                // Mean ablation: each prompt's own means, as for a single prompt.
                var means = mode == "mean" && ablated.Count > 0 ? CrossCoderInterventions.LatentMeans(cc, [clean]) : null;
                var latentEdits = LatentEdits(cc, ablated, means, clamps);
                using var edit = CrossCoderInterventions.EditLatents(cc, clean, slots, latentEdits, errorTerm);
                long length = tokens.shape[1] + generate;   // --generate: the positions of the new tokens count too
                var positions = InterventionCommands.ParsePositions(parse.GetValue(edits.Positions), tokens.shape[1], length,
                    generate == 0 ? $"the input has {tokens.shape[1]} tokens" : $"the prompt ({tokens.shape[1]} tokens) and its continuation have {length} tokens",
                    generation.PromptName(i));
                // The saved run covers the prompt only: positions of new tokens steer the continuation alone.
                var promptPositions = positions?.Where(p => p < tokens.shape[1]).ToArray();
                var hooks = new List<(string Name, Func<Tensor, Tensor?> Fn)>([.. model.Hooks, .. edit.Hooks]);
                if (promptPositions is not { Length: 0 })
                    foreach (var (latent, scale) in steering) hooks.AddRange(CrossCoderInterventions.Steering(cc, latent, scale, slots, promptPositions));
                var (logits, cache) = model.Model.Run(tokens.to(model.Model.Device), new RunOptions { Hooks = hooks, CacheNames = names });
                var run = new ModelCommands.SavedRun(logits!, savedTokens ? tokens : null, names, cache!);
                saved.Add(run);
                // The continuations before the file is written, so that a failing generation (beyond the context length) writes nothing.
                if (generate > 0)
                {
                    var tok = generationTokenizer!;
                    var steer = steering.SelectMany(s => CrossCoderInterventions.Steering(cc, s.Feature, s.Value, slots, positions)).ToList();
                    // One seed for both: the clean and the edited continuation draw the same random numbers at every step.
                    var options = generation.Options(model.Model.StopTokenIds);
                    // Both stop at EOS, as sae steer and sae intervene --generate do.
                    using var plain = model.Model.Generate(tokens, generate, options with { Hooks = model.Hooks });
                    using var edited = CrossCoderInterventions.Generate(cc, runs, spec.LayerHooks!, spec.LayerModels!, slots[0].Slot, latentEdits,
                        tokens, generate, options with { Hooks = steer }, errorTerm);
                    string label = ablated.Count > 0 || clamps.Count > 0 || steering.Count > 0 ? "edited" : "spliced";
                    ModelCommands.KeepContinuations(model.Model, run, tok, tokens.shape[1], plain, edited, label, positions, notes, generation.NotePrefix(i));
                }
            }
            Console.WriteLine($"crosscoder spliced at {string.Join(", ", slots.Select(sl => $"slot {sl.Slot} {sl.Hook}"))} of " +
                $"{ModelLoader.NameOf(paths[m])}{(errorTerm ? " (error term kept)" : "")}");
            ModelCommands.SaveRuns(outPath, saved);
            generation.WriteContinuations(saved, ModelLoader.NameOf(paths[m]));
            foreach (var note in notes) Cli.ErrorLine($"note: {note}");
            return 0;
        }
        finally
        {
            foreach (var r in saved) r.Dispose();
            foreach (var p in models) p.Dispose();
        }
    }

    /// <summary><c>sae info CROSSCODER</c>.</summary>
    public static int Info(string title, string path)
    {
        using var cc = CrossCoderFormat.Load(path, out var sources);
        var c = cc.Cfg;
        Cli.WriteTable(title,
        [
            ("format", "crosscoder (science-of-finetuning dictionary_learning)"),
            ("architecture", $"{c.Architecture} ({c.DictClass})"),
            ("num_layers", c.NumLayers.ToString(CultureInfo.InvariantCulture)),
            ("activation_dim", c.ActivationDim.ToString(CultureInfo.InvariantCulture)),
            ("dict_size", c.DictSize.ToString(CultureInfo.InvariantCulture)),
            ("k", c.K?.ToString(CultureInfo.InvariantCulture) ?? "-"),
            // DECOUPLED: one threshold per slot.
            ("threshold", cc.Threshold is { } t ? string.Join(", ", t.data<float>().ToArray().Select(v => v.ToString("G6", CultureInfo.InvariantCulture))) : "-"),
            ("code_normalization", c.CodeNormalization.ToString().ToUpperInvariant()),
            ("encoder_layers", c.EncoderLayers is { } el ? string.Join(", ", el) : "all"),
            ("num_decoder_layers", c.DecoderLayerCount.ToString(CultureInfo.InvariantCulture)),
            ("activation normaliser", cc.HasActivationNormalizer ? "yes" : "no"),
            ("hooks", sources.HookNames is { } h ? string.Join(", ", h) : "-"),
            ("models", sources.ModelNames is { } ms ? string.Join(", ", ms) : "-"),
            ("parameters", Cli.Integer(cc.parameters().Sum(p => p.numel()))),
        ]);
        return 0;
    }
}
