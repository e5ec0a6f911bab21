using System.Diagnostics;
using System.Text.Json;
using System.Text.Json.Nodes;
using System.Text.Json.Serialization;
using SaeSharp.Activations;
using SaeSharp.IO;
using SaeSharp.Saes;
using TorchSharp;
using static TorchSharp.torch;

namespace SaeSharp.Training;

/// <summary>
/// Trains one or more SAEs of any architecture on the same stream of batches, each with its own Adam optimiser and
/// schedules. Per step and SAE: <see cref="Sae.TrainingForward"/> (with the sparsity warm-up and the dead mask),
/// backward, <see cref="Sae.BeforeOptimizerStep"/>, optional gradient clipping, Adam, <see cref="Sae.AfterOptimizerStep"/>.
/// Checkpoints (weights, Adam moments, counters, the source's position) are written atomically and
/// <see cref="Resume"/> continues bit-exactly. The result holds copies of the SAEs with the activation
/// normalisation folded into their weights.
/// </summary>
public sealed class SaeTrainer : IDisposable
{
    /// <summary>Checkpoint state file inside a <c>step_NNNNNNNNN (zero-padded step number)</c> folder.</summary>
    public const string StateFileName = "trainer_state.json";
    private const string FormatTag = "saesharp.trainer_checkpoint/1";
    private const string StepFolderPrefix = "step_";

    private static readonly JsonSerializerOptions TrainingJson = new() { Converters = { new JsonStringEnumConverter() } };

    private readonly TrainerConfig _cfg;
    private readonly IActivationSource _source;
    private readonly List<SlotState> _slots = new();
    private TrainLog? _log;
    private bool _resumed;

    public SaeTrainer(TrainerConfig config, IActivationSource source, IEnumerable<SaeSlot> saes)
    {
        config.Validate();
        _cfg = config.Clone();
        _cfg.DeadFeatureWindow ??= _cfg.ResolvedDeadFeatureWindow;
        _source = source;
        var names = new HashSet<string>(StringComparer.Ordinal);
        int index = 0;
        foreach (var slot in saes)
        {
            if (!names.Add(slot.Name)) throw new SaeSharpException($"two SAEs are named '{slot.Name}'; names must be unique in a run");
            var own = slot.Config?.Clone() ?? _cfg.Clone();
            own.DeadFeatureWindow ??= _cfg.DeadFeatureWindow;
            if (slot.Config is not null)
            {
                own.Validate($"SAE '{slot.Name}' config");
                _cfg.CheckSharedFieldsEqual(own, slot.Name);
            }
            var sae = slot.Sae;
            if (own.ResampleSteps is { Length: > 0 } && !SaeContract.SupportsResampling(sae))
                throw new SaeSharpException($"SAE '{slot.Name}': resample_steps applies to the standard (ReLU) recipe, not to architecture '{sae.Cfg.Architecture}'");
            if (sae.Cfg.DIn != source.DIn)
                throw new SaeSharpException($"SAE '{slot.Name}' has d_in={sae.Cfg.DIn} but the activation source gives rows of width {source.DIn}");
            if (sae.Cfg.DOutOrIn != source.DOut)
                throw new SaeSharpException($"SAE '{slot.Name}' reconstructs width {sae.Cfg.DOutOrIn} but the activation source's targets have width {source.DOut}");
            _slots.Add(new SlotState(index++, slot.Name, sae, own, _cfg));
        }
        if (_slots.Count == 0) throw new SaeSharpException("the trainer needs at least one SAE");
    }

    /// <summary>Receives a report every log_every_steps steps, synchronously on the training thread.</summary>
    public IProgress<TrainingProgress>? Progress { get; set; }

    public TrainerConfig Config => _cfg;
    public long TotalSteps => _cfg.Steps;
    /// <summary>Optimiser steps completed.</summary>
    public long Step { get; private set; }
    /// <summary>Training rows consumed by optimiser steps.</summary>
    public long Tokens { get; private set; }
    /// <summary>Input scale applied in training (1 without normalisation).</summary>
    public double ScaleIn { get; private set; } = 1;
    /// <summary>Target scale applied in training (1 without normalisation).</summary>
    public double ScaleOut { get; private set; } = 1;
    /// <summary>Whether initialisation (normalisation estimate, weight init) has run or been restored.</summary>
    public bool Initialized { get; private set; }
    /// <summary>The last checkpoint folder written or resumed from.</summary>
    public string? LastCheckpoint { get; private set; }

    /// <summary>The SAEs being trained (in their training-space, unfolded weights).</summary>
    public IReadOnlyList<Sae> Saes => _slots.Select(s => s.Sae).ToList();

    internal AdamOptimizer Optimizer(string name) => Slot(name).Adam;
    internal FeatureStatistics Statistics(string name) => Slot(name).Stats;

    /// <summary>The current <c>sparsity</c> tensor (log10 firing fraction + 1e-10) of an SAE, [d_sae].</summary>
    public Tensor Sparsity(string name) => Slot(name).Stats.LogSparsity();

    /// <summary>
    /// Trains until the last step, until <paramref name="cancellationToken"/> fires, or until <paramref name="stopAtStep"/>
    /// steps are done. Unless the run completed normally without checkpoint_path, a checkpoint is written before returning.
    /// Throws <see cref="SaeSharpException"/> naming the step and SAE if a loss becomes NaN or infinite (no checkpoint is
    /// written after that step).
    /// </summary>
    public TrainingResult Run(CancellationToken cancellationToken = default, long? stopAtStep = null)
    {
        var logFolder = _cfg.LogPath ?? _cfg.CheckpointPath;
        if (logFolder is not null && _log is null) _log = new TrainLog(logFolder, _cfg.TensorBoard, _resumed ? Step : null);
        foreach (var s in _slots) s.Sae.train();
        if (!Initialized) Initialize();

        TrainingStatus? status = null;
        TrainingProgress? last = null;
        var runClock = Stopwatch.StartNew();
        var reportClock = Stopwatch.StartNew();
        long stepsThisRun = 0, rowsSinceReport = 0;
        while (Step < TotalSteps)
        {
            if (cancellationToken.IsCancellationRequested) { status = TrainingStatus.Cancelled; break; }
            if (stopAtStep is long stop && Step >= stop) { status = TrainingStatus.Stopped; break; }
            ResampleIfDue();
            bool log = (Step + 1) % _cfg.LogEverySteps == 0 || Step + 1 == TotalSteps;
            var metrics = TrainStep(log, out long rows);
            if (metrics is null) { status = TrainingStatus.SourceExhausted; break; }
            stepsThisRun++;
            rowsSinceReport += rows;
            if (log)
            {
                ThrowIfNonFinite();
                double seconds = reportClock.Elapsed.TotalSeconds;
                var progress = new TrainingProgress
                {
                    Step = Step,
                    TotalSteps = TotalSteps,
                    Tokens = Tokens,
                    RowsPerSecond = seconds > 0 ? rowsSinceReport / seconds : 0,
                    Eta = TimeSpan.FromSeconds(runClock.Elapsed.TotalSeconds / stepsThisRun * (TotalSteps - Step)),
                    Saes = metrics,
                };
                last = progress;
                _log?.Write(progress);
                Progress?.Report(progress);
                reportClock.Restart();
                rowsSinceReport = 0;
            }
            if (_cfg.CheckpointEverySteps > 0 && Step % _cfg.CheckpointEverySteps == 0 && _cfg.CheckpointPath is not null)
                SaveCheckpoint();
        }
        status ??= TrainingStatus.Completed;
        ThrowIfNonFinite();
        if (_cfg.CheckpointPath is not null) SaveCheckpoint();
        return new TrainingResult
        {
            Status = status.Value,
            Steps = Step,
            Tokens = Tokens,
            ScaleIn = ScaleIn,
            ScaleOut = ScaleOut,
            Saes = _slots.Select(FoldedResult).ToList(),
            LogFile = _log?.Path,
            LastCheckpoint = LastCheckpoint,
            LastProgress = last,
        };
    }

    // ---------------------------------------------------------------- initialisation

    private void Initialize()
    {
        bool normalize = _cfg.NormalizeActivations == "expected_average_only_in";
        bool needSample = _slots.Any(s => s.Config.InitializeWeights && s.Config.BDecInitMethod != "zeros");
        int normBatches = normalize ? _cfg.NBatchesForNormEstimate : 0;
        var sample = new List<Tensor>();
        long sampleRows = 0, normRows = 0;
        double sumNormIn = 0, sumNormOut = 0;
        bool separateTarget = false;
        try
        {
            for (int b = 0; b < normBatches || (needSample && sampleRows < _cfg.BDecInitRows); b++)
            {
                using var scope = NewDisposeScope();
                using var batch = _source.Next(_cfg.TrainBatchSizeTokens)
                    ?? throw new SaeSharpException($"the activation source ran out after {normRows + sampleRows} rows while reading the initialisation sample");
                CheckBatch(batch);
                separateTarget |= batch.HasSeparateTarget;
                if (b < normBatches)
                {
                    sumNormIn += batch.Input.to(ScalarType.Float64).norm(1).sum().item<double>();
                    sumNormOut += batch.Target.to(ScalarType.Float64).norm(1).sum().item<double>();
                    normRows += batch.Rows;
                }
                if (needSample && sampleRows < _cfg.BDecInitRows)
                {
                    long take = Math.Min(batch.Rows, _cfg.BDecInitRows - sampleRows);
                    sample.Add(batch.Target.narrow(0, 0, take).to(ScalarType.Float32, copy: true).DetachFromDisposeScope());
                    sampleRows += take;
                }
            }
            if (normalize)
            {
                if (!(sumNormIn > 0)) throw new SaeSharpException("cannot normalise activations: the mean input norm of the estimation batches is 0");
                ScaleIn = Math.Sqrt(_source.DIn) / (sumNormIn / normRows);
                bool oneScale = !separateTarget || _slots.Any(s => s.Sae.Cfg.ApplyBDecToInput);
                ScaleOut = oneScale ? ScaleIn : Math.Sqrt(_source.DOut) / (sumNormOut / normRows);
            }

            using var _ = no_grad();
            using var initScope = NewDisposeScope();
            Tensor? points = sample.Count > 0 ? cat(sample, 0) * ScaleOut : null;
            foreach (var slot in _slots)
            {
                var c = slot.Config;
                if (!c.InitializeWeights) continue;
                using var gen = new Generator(MixSeed(_cfg.Seed, slot.Index, 0));
                slot.Sae.InitializeWeights(gen, c.DecoderInitNorm);
                if (!c.InitEncoderAsDecoderTranspose)
                {
                    var e = randn(slot.Sae.Cfg.DIn, slot.Sae.Cfg.DSae, generator: gen);
                    slot.Sae.WEnc.copy_(e / e.norm(0, keepdim: true) * c.DecoderInitNorm);
                }
                if (c.BDecInitMethod == "geometric_median") slot.Sae.BDec.copy_(GeometricMedian.Compute(points!));
                else if (c.BDecInitMethod == "mean") slot.Sae.BDec.copy_(points!.mean([0]));
            }
        }
        finally
        {
            foreach (var t in sample) t.Dispose();
        }
        Initialized = true;
    }

    private void CheckBatch(ActivationBatch batch)
    {
        if (batch.Input.dim() != 2 || batch.Input.shape[1] != _source.DIn)
            throw new SaeSharpException($"the activation source gave an input batch of shape [{string.Join(", ", batch.Input.shape)}], expected [rows, {_source.DIn}]");
        if (batch.Target.dim() != 2 || batch.Target.shape[1] != _source.DOut || batch.Target.shape[0] != batch.Input.shape[0])
            throw new SaeSharpException($"the activation source gave a target batch of shape [{string.Join(", ", batch.Target.shape)}], expected [{batch.Input.shape[0]}, {_source.DOut}]");
    }

    private (Tensor X, Tensor Y) Scaled(ActivationBatch batch)
    {
        var x = ScaleIn == 1 ? batch.Input.alias() : batch.Input * ScaleIn;
        var y = !batch.HasSeparateTarget ? x.alias() : ScaleOut == 1 ? batch.Target.alias() : batch.Target * ScaleOut;
        return (x, y);
    }

    private static ulong MixSeed(long seed, int slot, long step)
    {
        unchecked
        {
            ulong z = (ulong)seed * 0x9E3779B97F4A7C15UL ^ ((ulong)slot + 1) * 0xBF58476D1CE4E5B9UL ^ ((ulong)step + 1) * 0x94D049BB133111EBUL;
            z ^= z >> 31;
            return z & 0x7FFF_FFFF_FFFF_FFFFUL;
        }
    }

    // ---------------------------------------------------------------- one step

    /// <summary>One optimiser step of every SAE on the next batch; metrics when <paramref name="log"/>; null when the source is exhausted.</summary>
    private List<SaeProgress>? TrainStep(bool log, out long rows)
    {
        using var scope = NewDisposeScope();
        rows = 0;
        using var batch = _source.Next(_cfg.TrainBatchSizeTokens);
        if (batch is null) return null;
        CheckBatch(batch);
        rows = batch.Rows;
        var (x, y) = Scaled(batch);
        var metrics = log ? new List<SaeProgress>(_slots.Count) : null;
        foreach (var slot in _slots)
        {
            var m = TrainSlot(slot, x, y, log);
            if (m is not null) metrics!.Add(m);
        }
        Step++;
        Tokens += rows;
        return metrics ?? new List<SaeProgress>();
    }

    private SaeProgress? TrainSlot(SlotState slot, Tensor x, Tensor y, bool log)
    {
        using var scope = NewDisposeScope();
        var sae = slot.Sae;
        var c = slot.Config;
        double lr = Schedules.LearningRate(c, slot.Lr, Step);
        // With a target L0 the controller ramps λ itself: no warm-up on top of it.
        double sparsityScale = sae.Training.AdaptToTargetL0 ? 1.0 : Schedules.SparsityScale(c.L1WarmUpSteps, Step);
        var dead = slot.Stats.DeadMask();
        var ctx = new SaeTrainContext { Step = Step, SparsityScale = sparsityScale, DeadMask = dead };

        sae.zero_grad(false);
        var o = sae.TrainingForward(x, y, ctx);
        o.Loss.backward();
        sae.BeforeOptimizerStep(ctx);
        if (c.MaxGradNorm is > 0) ClipGradNorm(slot, c.MaxGradNorm.Value);
        slot.Adam.Step(lr);
        sae.AfterOptimizerStep(ctx);
        var counts = o.ActiveCounts ?? FeatureStatistics.ActiveCounts(o.FeatureActs);
        slot.Stats.UpdateCounts(counts, x.shape[0]);
        if (sae.Training.AdaptToTargetL0)
            TargetL0Control.Update(sae.Training, counts.sum().item<long>() / (double)x.shape[0], sparsityScale);

        using (no_grad())
        {
            var bad = o.Loss.detach().isfinite().logical_not().logical_and(slot.FirstBadStep.lt(0));
            slot.FirstBadStep.copy_(where(bad, tensor(Step), slot.FirstBadStep));
        }
        if (!log) return null;

        using var _ = no_grad();
        var losses = new Dictionary<string, double>(StringComparer.Ordinal) { ["overall_loss"] = o.Loss.detach().to(ScalarType.Float64).item<double>() };
        foreach (var (k, v) in o.Losses) losses[k] = v.to(ScalarType.Float64).item<double>();
        double l0 = o.ActiveCounts is { } active
            ? active.to(ScalarType.Float64).sum().item<double>() / x.shape[0]
            : o.FeatureActs.detach().ne(0).sum(1).to(ScalarType.Float64).mean().item<double>();
        var yd = y.to(ScalarType.Float64);
        var resid = (o.SaeOut.detach().to(ScalarType.Float64) - yd).pow(2).sum();
        var total = (yd - yd.mean([0], keepdim: true)).pow(2).sum();
        double ev = 1 - (resid / total).item<double>();
        double deadFraction = slot.Stats.NotFiredWithin(Math.Min(slot.Stats.DeadWindowTokens, Tokens + x.shape[0]));
        return new SaeProgress
        {
            Name = slot.Name,
            Lr = lr,
            SparsityScale = sparsityScale,
            Losses = losses,
            L0 = l0,
            DeadFraction = deadFraction,
            ExplainedVariance = ev,
        };
    }

    private static void ClipGradNorm(SlotState slot, double maxNorm)
    {
        using var _ = no_grad();
        using var scope = NewDisposeScope();
        var grads = slot.Sae.parameters().Select(p => p.grad).Where(g => g is not null).Select(g => g!).ToList();
        if (grads.Count == 0) return;
        var norm = stack(grads.Select(g => g.to(ScalarType.Float64).pow(2).sum())).sum().sqrt();
        var coef = (maxNorm / (norm + 1e-6)).clamp_max(1.0).to(grads[0].dtype);
        foreach (var g in grads) g.mul_(coef);
    }

    private void ThrowIfNonFinite()
    {
        foreach (var slot in _slots)
        {
            long bad = slot.FirstBadStep.item<long>();
            if (bad >= 0)
                throw new SaeSharpException(
                    $"training step {bad}: the loss of SAE '{slot.Name}' is NaN or infinite; " +
                    (LastCheckpoint is null ? "no checkpoint was written" : $"the last good checkpoint is {LastCheckpoint}"));
        }
    }

    // ---------------------------------------------------------------- resampling

    private void ResampleIfDue()
    {
        var due = _slots.Where(s => s.ResampleSteps.Contains(Step)).ToList();
        if (due.Count == 0) return;
        using var scope = NewDisposeScope();
        int needed = due.Max(s => s.Config.ResampleSampleRows);
        var xs = new List<Tensor>();
        var ys = new List<Tensor>();
        long have = 0;
        while (have < needed)
        {
            var batch = _source.Next(_cfg.TrainBatchSizeTokens);
            if (batch is null) break;
            CheckBatch(batch);
            var (x, y) = Scaled(batch);
            xs.Add(x);
            ys.Add(y);
            have += batch.Rows;
        }
        if (have == 0) return;
        var xAll = cat(xs, 0);
        var yAll = cat(ys, 0);
        foreach (var slot in due)
        {
            long n = Math.Min(have, slot.Config.ResampleSampleRows);
            using var gen = new Generator(MixSeed(_cfg.Seed, slot.Index, Step + 1));
            var dead = slot.Stats.DeadMask();
            int count = DeadLatentResampler.Resample(slot.Sae, slot.Adam, dead, xAll.narrow(0, 0, n), yAll.narrow(0, 0, n), gen);
            slot.Stats.TokensSinceFired.masked_fill_(dead, 0);
            _log?.Event(Step, slot.Name, "resampled_dead_latents", count);
        }
    }

    // ---------------------------------------------------------------- results

    private TrainedSae FoldedResult(SlotState slot)
    {
        var cfg = slot.Sae.Cfg.Clone();
        cfg.NormalizeActivations = "none";
        var copy = SaeFactory.Create(cfg);
        copy.Training = slot.Sae.Training;
        using (no_grad())
        {
            var src = slot.Sae.state_dict();
            foreach (var (k, t) in copy.state_dict()) t.copy_(src[k]);
        }
        if (ScaleIn != 1 || ScaleOut != 1) copy.FoldActivationScale(ScaleIn, ScaleOut);
        var inference = copy.ToInferenceSae();
        if (!ReferenceEquals(inference, copy)) copy.Dispose();
        inference.eval();
        var config = slot.Config.Clone();
        config.Lr = slot.Lr;
        config.AdamBeta1 = slot.Adam.Beta1;
        config.AdamBeta2 = slot.Adam.Beta2;
        return new TrainedSae { Name = slot.Name, Sae = inference, Sparsity = slot.Stats.LogSparsity().DetachFromDisposeScope(), Config = config };
    }

    // ---------------------------------------------------------------- checkpoints

    /// <summary>Writes a checkpoint folder <c>checkpoint_path/step_NNNNNNNNN (zero-padded step number)</c> (built in a temporary folder and renamed
    /// into place) and deletes checkpoints beyond keep_checkpoints. Returns the folder.</summary>
    public string SaveCheckpoint()
    {
        if (_cfg.CheckpointPath is null) throw new SaeSharpException("cannot checkpoint: checkpoint_path is not set");
        ThrowIfNonFinite();
        var root = Path.GetFullPath(_cfg.CheckpointPath);
        Directory.CreateDirectory(root);
        var final = Path.Combine(root, $"{StepFolderPrefix}{Step:D9}");
        if (final == LastCheckpoint && File.Exists(Path.Combine(final, StateFileName))) return final; // nothing new since
        var tmp = Path.Combine(root, $".tmp_{StepFolderPrefix}{Step:D9}_{Guid.NewGuid():N}");
        Directory.CreateDirectory(tmp);
        try
        {
            var saes = new JsonArray();
            foreach (var slot in _slots)
            {
                var tensors = new List<KeyValuePair<string, Tensor>>();
                foreach (var (k, t) in slot.Sae.state_dict()) tensors.Add(new(k, t));
                foreach (var kv in slot.Adam.StateTensors()) tensors.Add(new($"adam.{kv.Key}", kv.Value));
                tensors.Add(new("stats.tokens_since_fired", slot.Stats.TokensSinceFired));
                tensors.Add(new("stats.act_counts", slot.Stats.ActCounts));
                SafeTensors.Save(Path.Combine(tmp, SlotFile(slot.Index)), tensors);
                saes.Add(new JsonObject
                {
                    ["name"] = slot.Name,
                    ["file"] = SlotFile(slot.Index),
                    ["sae_cfg"] = JsonNode.Parse(slot.Sae.Cfg.ToJson()),
                    ["sae_training"] = JsonSerializer.SerializeToNode(slot.Sae.Training, TrainingJson),
                    ["config"] = JsonSerializer.SerializeToNode(slot.Config, TrainerConfig.JsonOptions),
                    ["adam_step"] = slot.Adam.StepCount,
                    ["window_rows"] = slot.Stats.WindowRows,
                    ["window_steps"] = slot.Stats.WindowSteps,
                });
            }
            var state = new JsonObject
            {
                ["format"] = FormatTag,
                ["step"] = Step,
                ["tokens"] = Tokens,
                ["scale_in"] = ScaleIn,
                ["scale_out"] = ScaleOut,
                ["config"] = JsonSerializer.SerializeToNode(_cfg, TrainerConfig.JsonOptions),
                ["saes"] = saes,
                ["source_state"] = _source.SaveState(),
            };
            AtomicFile.WriteAllText(Path.Combine(tmp, StateFileName), state.ToJsonString(new JsonSerializerOptions { WriteIndented = true }));
            if (Directory.Exists(final)) Directory.Delete(final, recursive: true);
            Directory.Move(tmp, final);
        }
        catch
        {
            try { Directory.Delete(tmp, recursive: true); } catch (IOException) { }
            throw;
        }
        LastCheckpoint = final;
        Prune(root);
        return final;
    }

    private static string SlotFile(int index) => $"sae_{index}.safetensors";

    private void Prune(string root)
    {
        var old = CompleteCheckpoints(root).OrderByDescending(d => d).Skip(_cfg.KeepCheckpoints);
        foreach (var d in old)
        {
            try { Directory.Delete(d, recursive: true); } catch (IOException) { }
        }
    }

    private static IEnumerable<string> CompleteCheckpoints(string root) =>
        Directory.EnumerateDirectories(root, StepFolderPrefix + "*")
            .Where(d => File.Exists(Path.Combine(d, StateFileName)))
            .OrderBy(d => d, StringComparer.Ordinal);

    /// <summary>The checkpoint folder to resume from: <paramref name="path"/> itself if it holds trainer_state.json,
    /// else its latest complete <c>step_*</c> sub-folder.</summary>
    public static string ResolveCheckpoint(string path)
    {
        if (File.Exists(Path.Combine(path, StateFileName))) return Path.GetFullPath(path);
        if (!Directory.Exists(path)) throw new SaeSharpException($"checkpoint folder {path} does not exist");
        return CompleteCheckpoints(path).LastOrDefault()
            ?? throw new SaeSharpException($"{path}: no {StateFileName} and no complete {StepFolderPrefix}* checkpoint inside");
    }

    /// <summary>
    /// Rebuilds a trainer from a checkpoint (a step folder or the checkpoint_path holding them) so that <see cref="Run"/>
    /// continues exactly where it stopped. <paramref name="source"/> must be constructed with the same arguments as the
    /// original; its position is restored with <see cref="IActivationSource.LoadState"/>.
    /// </summary>
    public static SaeTrainer Resume(string checkpoint, IActivationSource source)
    {
        var dir = ResolveCheckpoint(checkpoint);
        var statePath = Path.Combine(dir, StateFileName);
        JsonNode state;
        try { state = JsonNode.Parse(File.ReadAllText(statePath)) ?? throw new SaeSharpException($"{statePath}: empty"); }
        catch (JsonException e) { throw new SaeSharpException($"{statePath}: invalid JSON ({e.Message})", e); }
        if (state["format"]?.GetValue<string>() != FormatTag)
            throw new SaeSharpException($"{statePath}: format is '{state["format"]}', expected '{FormatTag}'");
        var cfg = state["config"].Deserialize<TrainerConfig>(TrainerConfig.JsonOptions)
            ?? throw new SaeSharpException($"{statePath}: missing 'config'");
        var slots = new List<SaeSlot>();
        var entries = state["saes"]?.AsArray() ?? throw new SaeSharpException($"{statePath}: missing 'saes'");
        foreach (var e in entries)
        {
            var name = e!["name"]!.GetValue<string>();
            var saeCfg = SaeConfig.FromJson(e["sae_cfg"]!.ToJsonString(), $"{statePath} sae '{name}'");
            var sae = SaeFactory.Create(saeCfg);
            sae.Training = e["sae_training"].Deserialize<SaeTrainingOptions>(TrainingJson) ?? new SaeTrainingOptions();
            slots.Add(new SaeSlot(name, sae, e["config"].Deserialize<TrainerConfig>(TrainerConfig.JsonOptions)));
        }
        var trainer = new SaeTrainer(cfg, source, slots);
        trainer.Restore(dir, state, entries);
        return trainer;
    }

    private void Restore(string dir, JsonNode state, JsonArray entries)
    {
        Step = state["step"]!.GetValue<long>();
        Tokens = state["tokens"]!.GetValue<long>();
        ScaleIn = state["scale_in"]!.GetValue<double>();
        ScaleOut = state["scale_out"]!.GetValue<double>();
        for (int i = 0; i < _slots.Count; i++)
        {
            var slot = _slots[i];
            var e = entries[i]!;
            var file = Path.Combine(dir, e["file"]!.GetValue<string>());
            var tensors = SafeTensors.Load(file);
            try
            {
                using (no_grad())
                {
                    foreach (var (k, t) in slot.Sae.state_dict()) CopyInto(file, tensors, k, t);
                    CopyInto(file, tensors, "stats.tokens_since_fired", slot.Stats.TokensSinceFired);
                    CopyInto(file, tensors, "stats.act_counts", slot.Stats.ActCounts);
                }
                var adam = tensors.Where(kv => kv.Key.StartsWith("adam.", StringComparison.Ordinal))
                    .ToDictionary(kv => kv.Key["adam.".Length..], kv => kv.Value, StringComparer.Ordinal);
                slot.Adam.LoadStateTensors(adam, file);
            }
            finally
            {
                foreach (var t in tensors.Values) t.Dispose();
            }
            slot.Adam.StepCount = e["adam_step"]!.GetValue<long>();
            slot.Stats.WindowRows = e["window_rows"]!.GetValue<long>();
            slot.Stats.WindowSteps = e["window_steps"]!.GetValue<int>();
        }
        _source.LoadState(state["source_state"] ?? throw new SaeSharpException($"{dir}: missing 'source_state'"));
        Initialized = true;
        _resumed = true;
        LastCheckpoint = dir;
    }

    private static void CopyInto(string file, Dictionary<string, Tensor> tensors, string key, Tensor dst)
    {
        if (!tensors.TryGetValue(key, out var src)) throw new SaeSharpException($"{file}: missing tensor '{key}'");
        if (!src.shape.SequenceEqual(dst.shape))
            throw new SaeSharpException($"{file}: tensor '{key}' has shape [{string.Join(", ", src.shape)}], expected [{string.Join(", ", dst.shape)}]");
        dst.copy_(src);
    }

    private SlotState Slot(string name) =>
        _slots.FirstOrDefault(s => s.Name == name) ?? throw new SaeSharpException($"no SAE named '{name}' in this run");

    public void Dispose()
    {
        _log?.Dispose();
        foreach (var s in _slots) s.Dispose();
    }

    /// <summary>Per-SAE training state.</summary>
    private sealed class SlotState : IDisposable
    {
        public SlotState(int index, string name, Sae sae, TrainerConfig config, TrainerConfig run)
        {
            Index = index;
            Name = name;
            Sae = sae;
            Config = config;
            Lr = config.Lr ?? SaeContract.DefaultLearningRate(sae);
            var (beta1, beta2) = SaeContract.DefaultAdamBetas(sae);
            var parameters = sae.named_parameters().Select(p => (p.name, p.parameter)).ToList();
            Adam = new AdamOptimizer(parameters, config.AdamBeta1 ?? beta1, config.AdamBeta2 ?? beta2, config.AdamEpsilon);
            Stats = new FeatureStatistics(sae.Cfg.DSae, run.ResolvedDeadFeatureWindow, run.FeatureSamplingWindow);
            FirstBadStep = tensor(-1L).DetachFromDisposeScope();
            ResampleSteps = new HashSet<long>(config.ResampleSteps ?? []);
        }

        public int Index { get; }
        public string Name { get; }
        public Sae Sae { get; }
        public TrainerConfig Config { get; }
        public double Lr { get; }
        public AdamOptimizer Adam { get; }
        public FeatureStatistics Stats { get; }
        /// <summary>Scalar int64: first step whose loss was not finite, −1 if none (updated without a sync).</summary>
        public Tensor FirstBadStep { get; }
        public HashSet<long> ResampleSteps { get; }

        public void Dispose()
        {
            Adam.Dispose();
            Stats.Dispose();
            FirstBadStep.Dispose();
        }
    }
}

/// <summary>The trainer's dependencies on per-architecture behaviour beyond the <see cref="Sae"/> contract.</summary>
internal static class SaeContract
{
    public static double DefaultLearningRate(Sae sae) => sae.DefaultLearningRate();

    public static (double Beta1, double Beta2) DefaultAdamBetas(Sae sae) => sae.DefaultAdamBetas;

    /// <summary>Architectures whose latents the Towards Monosemanticity resampling applies to (ReLU encoder with b_enc).</summary>
    public static bool SupportsResampling(Sae sae) => sae.Cfg.Architecture == SaeArchitectures.Standard;
}
