using System.Text.Json;
using SaeSharp.Activations;
using SaeSharp.Evaluation;
using SaeSharp.Interop;
using SaeSharp.IO;
using SaeSharp.Training;
using static TorchSharp.torch;

namespace SaeSharp.Pipelines;

/// <summary>What <see cref="TrainingRun.Run"/> trains and where it writes.</summary>
public sealed class TrainingRunOptions
{
    /// <summary>Output folder: one SAE is written into it directly, several into a sub-folder each (named after the slot).</summary>
    public required string OutDir { get; init; }
    /// <summary>The run's trainer configuration (steps, batch size, schedules, normalisation, checkpoints).</summary>
    public required TrainerConfig Trainer { get; init; }
    /// <summary>The SAEs to train; ignored when resuming (the checkpoint names them).</summary>
    public IReadOnlyList<SaeSlot> Saes { get; init; } = [];
    /// <summary>Training rows (shuffled, resumable).</summary>
    public required IActivationSource TrainSource { get; init; }
    /// <summary>Held-out rows for metrics.json; null skips the evaluation.</summary>
    public IActivationSource? EvalSource { get; init; }
    /// <summary>Held-out rows read from <see cref="EvalSource"/> for metrics.json.</summary>
    public long EvalRows { get; init; } = 65536;
    /// <summary>Fields added to each metrics.json after the metrics, describing the evaluated data (a run from a model:
    /// <c>eval_held_out</c>, <c>eval_contexts</c>, <c>eval_tokens</c>); null adds none.</summary>
    public System.Text.Json.Nodes.JsonObject? EvalRecord { get; init; }
    /// <summary>True feature directions [n_features, d_in] of synthetic data: adds mmcs, recovered_fraction and SAELens's
    /// synthetic-data metrics (with true_l0 and classification/* when the held-out rows' files hold their ground-truth
    /// activations, as <c>sae synth</c> writes them).</summary>
    public Tensor? GroundTruthFeatures { get; init; }
    /// <summary>Continue from the latest checkpoint in OutDir/checkpoints.</summary>
    public bool Resume { get; init; }
    /// <summary>A new run may replace a previous run's outputs in <see cref="OutDir"/> (its checkpoints are deleted
    /// first, so that no later resume takes them for the new run's); without it such a folder is an error.</summary>
    public bool Overwrite { get; init; }
}

/// <summary>One trained SAE as written to disk, with its cfg.json config.</summary>
public sealed record TrainedSaeOutput(string Name, string Directory, SaeEvalResult? Metrics, Saes.SaeConfig Config);

/// <summary>Outcome of <see cref="TrainingRun.Run"/>.</summary>
/// <param name="Status">How the run ended.</param>
/// <param name="Steps">Optimiser steps taken.</param>
/// <param name="Tokens">Training rows (tokens) the optimiser steps consumed.</param>
/// <param name="Saes">The SAEs written (none when cancelled or stopped).</param>
/// <param name="LastCheckpoint">The newest checkpoint folder, if any.</param>
/// <param name="RowsDelivered">Rows the training source handed out (training rows and the initialisation sample).</param>
/// <param name="RowsPerPass">Rows in one pass over the data; null while unknown (a streamed dataset's first pass not ended).</param>
/// <param name="MaxDataPasses">The source's limit on passes (its epochs setting; 0: none).</param>
public sealed record TrainingRunResult(TrainingStatus Status, long Steps, long Tokens, IReadOnlyList<TrainedSaeOutput> Saes, string? LastCheckpoint,
    long RowsDelivered = 0, long? RowsPerPass = null, int MaxDataPasses = 1)
{
    /// <summary>The run's <c>train_log.jsonl</c>; null when it wrote none.</summary>
    public string? LogFile { get; init; }
    /// <summary><c>OUT/training_curves.png</c>, drawn from the whole log when the run ended (finished or stopped);
    /// null when not drawn (see <see cref="CurvesError"/>).</summary>
    public string? CurvesFile { get; init; }
    /// <summary>Why the curves could not be drawn; the run's other outputs are written regardless.</summary>
    public string? CurvesError { get; init; }

    /// <summary>Epochs of the data the source delivered (<see cref="RowsDelivered"/> / <see cref="RowsPerPass"/>); null while unknown.</summary>
    public double? Epochs => RowsPerPass is long p && p > 0 ? (double)RowsDelivered / p : null;
}

/// <summary>
/// A whole training run as <c>sae train</c> does it: train (or resume) with checkpoints in <c>OUT/checkpoints</c> and the
/// log in <c>OUT/train_log.jsonl</c>, then write each SAE in SAELens layout (cfg.json, sae_weights.safetensors,
/// sparsity.safetensors) with metrics.json from the held-out rows, and draw the log into <c>OUT/training_curves.png</c>
/// (<see cref="TrainingCurves"/>). An interrupted run leaves its checkpoint, writes no SAE files, and draws the curves
/// of the steps so far.
/// </summary>
public static class TrainingRun
{
    /// <summary>Sub-folder of the output folder holding the checkpoints.</summary>
    public const string CheckpointFolder = "checkpoints";
    /// <summary>File of the held-out metrics next to each SAE's cfg.json.</summary>
    public const string MetricsFile = "metrics.json";

    /// <summary>Trains (or resumes) as <paramref name="o"/> says and writes the SAEs; a cancelled run leaves its checkpoint.</summary>
    public static TrainingRunResult Run(TrainingRunOptions o, IProgress<TrainingProgress>? progress = null, CancellationToken cancellationToken = default)
    {
        var checkpoints = Path.Combine(o.OutDir, CheckpointFolder);
        // Temporaries that a run killed while writing its outputs left (SAE weights can be large) are removed first.
        AtomicFile.RemoveAbandonedTemporaries(o.OutDir);
        if (Directory.Exists(o.OutDir))
            foreach (var sub in Directory.EnumerateDirectories(o.OutDir)) AtomicFile.RemoveAbandonedTemporaries(sub);
        if (!o.Resume && PreviousRunFiles(o.OutDir) is { Count: > 0 } previous)
        {
            if (!o.Overwrite)
                throw new SaeSharpException($"{o.OutDir} holds a previous training run ({string.Join(", ", previous)}): continue it with --resume, " +
                                            "replace it with --force, or choose another --out");
            if (Directory.Exists(checkpoints)) Directory.Delete(checkpoints, recursive: true);
        }
        bool created = !Directory.Exists(o.OutDir);
        Directory.CreateDirectory(o.OutDir);
        try
        {
            return WithCurves(Train(o, checkpoints, progress, cancellationToken), o.OutDir);
        }
        catch
        {
            // A run that failed before writing anything (bad data, bad settings) leaves no folder it made itself.
            if (created && Directory.EnumerateFiles(o.OutDir, "*", SearchOption.AllDirectories).All(f => new FileInfo(f).Length == 0))
                Directory.Delete(o.OutDir, recursive: true);
            throw;
        }
    }

    private static TrainingRunResult Train(TrainingRunOptions o, string checkpoints, IProgress<TrainingProgress>? progress, CancellationToken cancellationToken)
    {
        SaeTrainer trainer;
        if (o.Resume)
        {
            if (!Directory.Exists(checkpoints))
                throw new SaeSharpException($"--resume: no checkpoints in {checkpoints}");
            trainer = SaeTrainer.Resume(checkpoints, o.TrainSource, o.Trainer.Device);
        }
        else
        {
            var cfg = o.Trainer.Clone();
            cfg.CheckpointPath = checkpoints;
            cfg.LogPath ??= o.OutDir;
            // Per-SAE configs must agree with the run on the folders this method chooses.
            var slots = o.Saes.Select(s => s.Config is null ? s : new SaeSlot(s.Name, s.Sae, WithFolders(s.Config, cfg))).ToList();
            trainer = new SaeTrainer(cfg, o.TrainSource, slots);
        }
        using (trainer)
        {
            trainer.Progress = progress;
            using var result = RunTrainer(trainer, o.OutDir, cancellationToken);
            var src = o.TrainSource;
            TrainingRunResult Result(IReadOnlyList<TrainedSaeOutput> saes) =>
                new(result.Status, result.Steps, result.Tokens, saes, result.LastCheckpoint, src.RowsDelivered, src.RowsPerPass, src.MaxDataPasses)
                    { LogFile = result.LogFile };
            if (result.Status is TrainingStatus.Cancelled or TrainingStatus.Stopped) return Result([]);
            double? epochs = Result([]).Epochs;

            // Ground-truth feature activations of the held-out rows (synthetic files), read before the rows are.
            var truthActs = o.EvalSource is null || o.GroundTruthFeatures is null ? null
                : SaeEvaluator.GroundTruthActivationsFor(o.EvalSource, o.EvalRows, (int)o.GroundTruthFeatures.shape[0]);
            var evalBatches = o.EvalSource is null ? null : ReadAll(o.EvalSource, o.EvalRows);
            try
            {
                // Every output file of the run is replaced together: a failure part-way (a full disk) leaves the
                // previous outputs as they were.
                using var files = new AtomicFileGroup();
                var outputs = new List<TrainedSaeOutput>();
                var trainingForms = trainer.Saes;
                for (int i = 0; i < result.Saes.Count; i++)
                {
                    var trained = result.Saes[i];
                    var dir = result.Saes.Count == 1 ? o.OutDir : Path.Combine(o.OutDir, trained.Name);
                    RecordSparsityCoefficient(trained.Sae, trainingForms[i]);
                    RecordData(trained.Sae, result.Tokens, epochs, src.MaxDataPasses);
                    SaeLensFormat.Save(trained.Sae, dir, trained.Sparsity, files);
                    SaeEvalResult? metrics = null;
                    if (evalBatches is not null)
                    {
                        trained.Sae.eval();
                        // The evaluator disposes what it is given: hand it aliases so every SAE sees the same rows.
                        var views = evalBatches.Select(b => new ActivationBatch(b.Input.alias(), b.HasSeparateTarget ? b.Target.alias() : null));
                        metrics = SaeEvaluator.Evaluate(trained.Sae, views, groundTruthFeatures: o.GroundTruthFeatures, groundTruthActivations: truthActs);
                        files.WriteAllText(Path.Combine(dir, MetricsFile), WithRecord(metrics.ToJson(), o.EvalRecord));
                    }
                    outputs.Add(new TrainedSaeOutput(trained.Name, dir, metrics, trained.Sae.Cfg.Clone()));
                }
                files.Commit();
                return Result(outputs);
            }
            finally
            {
                if (evalBatches is not null) foreach (var b in evalBatches) b.Dispose();
            }
        }
    }

    /// <summary>The metrics' JSON with <paramref name="record"/>'s fields after them.</summary>
    private static string WithRecord(string metricsJson, System.Text.Json.Nodes.JsonObject? record)
    {
        if (record is null) return metricsJson;
        var json = System.Text.Json.Nodes.JsonNode.Parse(metricsJson)!.AsObject();
        foreach (var (key, value) in record) json[key] = value?.DeepClone();
        return json.ToJsonString(new System.Text.Json.JsonSerializerOptions { WriteIndented = true });
    }

    /// <summary>Draws the run's whole log (a resumed run's included) into <see cref="TrainingCurves.FileName"/> in
    /// <paramref name="outDir"/>. A failure to draw does not fail the run: it is reported in
    /// <see cref="TrainingRunResult.CurvesError"/>.</summary>
    private static TrainingRunResult WithCurves(TrainingRunResult r, string outDir)
    {
        if (r.LogFile is null || !File.Exists(r.LogFile)) return r;
        var (png, error) = DrawCurves(r.LogFile, outDir);
        return r with { CurvesFile = png, CurvesError = error };
    }

    private static (string? Png, string? Error) DrawCurves(string log, string outDir)
    {
        try
        {
            return (TrainingCurves.Save(log, Path.Combine(outDir, TrainingCurves.FileName)), null);
        }
        catch (Exception e) when (e is SaeSharpException or IOException or UnauthorizedAccessException or ArgumentException)
        {
            return (null, e.Message);
        }
    }

    /// <summary>Runs the trainer; when it fails after logging steps (a loss that became NaN: the run whose curves matter
    /// most), draws the curves of the steps logged and names them in the error.</summary>
    private static TrainingResult RunTrainer(SaeTrainer trainer, string outDir, CancellationToken cancellationToken)
    {
        var counted = new CountingProgress(trainer.Progress);
        trainer.Progress = counted;
        try
        {
            return trainer.Run(cancellationToken: cancellationToken);
        }
        catch (SaeSharpException e) when (counted.Reports > 0 && trainer.LogFile is { } log && File.Exists(log))
        {
            if (DrawCurves(log, outDir).Png is not { } png) throw;
            // After a space, so that the message's last word (the checkpoint's path) stays a word of its own.
            throw new SaeSharpException($"{e.Message} (training curves of the steps logged before it: {png})", e);
        }
    }

    private sealed class CountingProgress(IProgress<TrainingProgress>? inner) : IProgress<TrainingProgress>
    {
        public int Reports { get; private set; }

        public void Report(TrainingProgress value)
        {
            Reports++;
            inner?.Report(value);
        }
    }

    /// <summary>What a training run writes that <paramref name="dir"/> already holds (paths relative to it): checkpoints,
    /// the log, an SAE's cfg.json or weights (empty files not counted), or a sub-folder's cfg.json (a run of several
    /// SAEs).</summary>
    public static List<string> PreviousRunFiles(string dir)
    {
        var found = new List<string>();
        if (!Directory.Exists(dir)) return found;
        var checkpoints = Path.Combine(dir, CheckpointFolder);
        if (Directory.Exists(checkpoints) && Directory.EnumerateFileSystemEntries(checkpoints).Any()) found.Add(CheckpointFolder + "/");
        foreach (var file in new[] { TrainLog.FileName, SaeLensFormat.CfgFile, SaeLensFormat.WeightsFile })
            if (new FileInfo(Path.Combine(dir, file)) is { Exists: true, Length: > 0 }) found.Add(file);
        foreach (var sub in Directory.EnumerateDirectories(dir).Order(StringComparer.Ordinal))
            if (File.Exists(Path.Combine(sub, SaeLensFormat.CfgFile))) found.Add($"{Path.GetFileName(sub)}/{SaeLensFormat.CfgFile}");
        return found;
    }

    /// <summary>cfg.json of <paramref name="saved"/> records the sparsity coefficient its training form
    /// <paramref name="trained"/> ended with (SAELens's <c>l1_coefficient</c>, or <c>l0_coefficient</c> for JumpReLU; a relu SAE's <c>lp_norm</c> when not 1) and,
    /// with <c>--target-l0</c>, the target it adapted to. The architecture is the one trained: a BatchTopK or Matryoshka SAE
    /// is saved as JumpReLU but trained with no coefficient, so it records none.</summary>
    private static void RecordSparsityCoefficient(Saes.Sae saved, Saes.Sae trained)
    {
        var arch = Saes.SaeArchitectures.TrainsAs(trained.Cfg.Architecture);
        if (arch is not (Saes.SaeArchitectures.Standard or Saes.SaeArchitectures.Gated or Saes.SaeArchitectures.JumpReLU)) return;
        var t = trained.Training;
        var extra = saved.Cfg.Extra ??= new();
        extra[arch == Saes.SaeArchitectures.JumpReLU ? "l0_coefficient" : "l1_coefficient"] = JsonSerializer.SerializeToElement(t.SparsityCoefficient);
        if (arch == Saes.SaeArchitectures.Standard && t.LpNorm != 1) extra["lp_norm"] = JsonSerializer.SerializeToElement(t.LpNorm);
        if (t.AdaptToTargetL0 || (arch == Saes.SaeArchitectures.JumpReLU && t.JumpReluPenalty == Saes.JumpReluPenalty.TargetL0))
            extra["target_l0"] = JsonSerializer.SerializeToElement(t.TargetL0);
    }

    /// <summary>cfg.json records how much data the SAE saw: <c>training_tokens</c> (rows the optimiser steps
    /// consumed, as SAELens's runner names its budget), <c>epochs</c> (the passes the data source was allowed, 0 for no
    /// limit) and <c>epochs_seen</c> (rows the source delivered, initialisation sample included, over rows per pass;
    /// absent when the first pass did not end).</summary>
    private static void RecordData(Saes.Sae sae, long tokens, double? epochsSeen, int maxPasses)
    {
        var extra = sae.Cfg.Extra ??= new();
        extra["training_tokens"] = JsonSerializer.SerializeToElement(tokens);
        extra["epochs"] = JsonSerializer.SerializeToElement(maxPasses);
        if (epochsSeen is double e) extra["epochs_seen"] = JsonSerializer.SerializeToElement(Math.Round(e, 4));
        else extra.Remove("epochs_seen");
    }

    private static TrainerConfig WithFolders(TrainerConfig slot, TrainerConfig run)
    {
        var c = slot.Clone();
        c.CheckpointPath = run.CheckpointPath;
        c.LogPath = run.LogPath;
        return c;
    }

    /// <summary>Reads up to <paramref name="maxRows"/> rows of a source into memory, in batches.</summary>
    public static List<ActivationBatch> ReadAll(IActivationSource source, long maxRows, int batchSize = 4096)
    {
        var batches = new List<ActivationBatch>();
        long rows = 0;
        while (rows < maxRows && source.Next((int)Math.Min(batchSize, maxRows - rows)) is { } batch)
        {
            batches.Add(batch);
            rows += batch.Rows;
        }
        return batches;
    }
}
