using System.Diagnostics;
using SaeSharp.Activations;
using SaeSharp.Kernels;
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
/// Everything trains on one <see cref="Device"/> (<see cref="TrainerConfig.Device"/>): the SAEs are moved there, the
/// optimiser state, statistics and every tensor of a step are created there, and each batch of the CPU activation source
/// is copied there; checkpoints and results are written from CPU copies. Off the CPU (or with
/// <c>SAESHARP_KERNELS=torch</c>) the custom CPU kernels give way to torch operations (<see cref="Kernels.CpuKernels.On"/>).
/// </summary>
public sealed class SaeTrainer : IDisposable
{
    private readonly TrainerConfig _cfg;
    private readonly IActivationSource _source;
    private readonly List<SlotState> _slots = new();
    private TrainLog? _log;
    private bool _resumed;

    /// <summary>A trainer of <paramref name="saes"/> on batches of <paramref name="source"/>, run as <paramref name="config"/> says.</summary>
    public SaeTrainer(TrainerConfig config, IActivationSource source, IEnumerable<SaeSlot> saes)
    {
        config.Validate();
        _cfg = config.Clone();
        _cfg.DeadFeatureWindow ??= _cfg.ResolvedDeadFeatureWindow;
        _source = source;
        var list = saes.ToList();
        Device = ResolveDevice(_cfg, list);
        _cfg.Device = ComputeDevice.Name(Device);
        var names = new HashSet<string>(StringComparer.Ordinal);
        int index = 0;
        foreach (var slot in list)
        {
            if (!names.Add(slot.Name)) throw new SaeSharpException($"two SAEs are named '{slot.Name}'; names must be unique in a run");
            var own = slot.Config?.Clone() ?? _cfg.Clone();
            own.DeadFeatureWindow ??= _cfg.DeadFeatureWindow;
            own.Device ??= _cfg.Device;
            if (slot.Config is not null)
            {
                own.Validate($"SAE '{slot.Name}' config");
                _cfg.CheckSharedFieldsEqual(own, slot.Name);
            }
            var sae = slot.Sae;
            if (own.ResampleSteps is { Length: > 0 } && !sae.SupportsResampling)
                throw new SaeSharpException($"SAE '{slot.Name}': resample_steps applies to the standard (ReLU) recipe, not to architecture '{sae.Cfg.Architecture}'");
            if (sae.Cfg.DIn != source.DIn)
                throw new SaeSharpException($"SAE '{slot.Name}' has d_in={sae.Cfg.DIn} but the activation source gives rows of width {source.DIn}");
            if (sae.Cfg.DOutOrIn != source.DOut)
                throw new SaeSharpException($"SAE '{slot.Name}' reconstructs width {sae.Cfg.DOutOrIn} but the activation source's targets have width {source.DOut}");
            // Before the optimiser takes the parameters: moving a module replaces its Parameter objects.
            if (sae.parameters().Concat(sae.buffers()).Any(t => !ComputeDevice.Holds(Device, t.device))) sae.to(Device);
            sae.Cfg.Device = _cfg.Device;
            // An SAE made without metadata (SaeRecipes.Create from C#) records where its rows come from, when the source knows.
            if (sae.Cfg.Metadata.HookName is null && source.Metadata is { HookName: not null } provenance) sae.Cfg.Metadata = provenance;
            _slots.Add(new SlotState(index++, slot.Name, sae, own, _cfg, Device));
        }
        if (_slots.Count == 0) throw new SaeSharpException("the trainer needs at least one SAE");
    }

    /// <summary>The device named by <paramref name="cfg"/>, or when it names none the one device every SAE is on.</summary>
    private static Device ResolveDevice(TrainerConfig cfg, IReadOnlyList<SaeSlot> saes)
    {
        if (cfg.Device is not null) return ComputeDevice.Parse(cfg.Device, "device");
        var on = saes.Select(s => s.Sae.WDec.device).ToList();
        if (on.Count == 0) return CPU;
        if (on.Any(d => !ComputeDevice.Holds(on[0], d) || !ComputeDevice.Holds(d, on[0])))
            throw new SaeSharpException($"the SAEs are on different devices ({string.Join(", ", on.Select(ComputeDevice.Name).Distinct())}); " +
                                        "set the trainer config's device to train them all on one");
        return on[0];
    }

    /// <summary>Where the SAEs train (<see cref="TrainerConfig.Device"/>).</summary>
    public Device Device { get; }

    /// <summary>Receives a report every log_every_steps steps, synchronously on the training thread.</summary>
    public IProgress<TrainingProgress>? Progress { get; set; }

    /// <summary>The run's configuration.</summary>
    public TrainerConfig Config => _cfg;
    /// <summary>Optimiser steps of the run.</summary>
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
    /// <summary>train_log.jsonl, once <see cref="Run"/> has opened it; null without a log folder.</summary>
    public string? LogFile => _log?.Path;

    /// <summary>The last checkpoint folder written or resumed from.</summary>
    public string? LastCheckpoint { get; private set; }

    /// <summary>The SAEs being trained (in their training-space, unfolded weights).</summary>
    public IReadOnlyList<Sae> Saes => _slots.Select(s => s.Sae).ToList();

    internal AdamOptimizer Optimizer(string name) => Slot(name).Adam;
    internal FeatureStatistics Statistics(string name) => Slot(name).Stats;

    /// <summary>The current <c>sparsity</c> tensor (log10 firing fraction + 1e-10) of an SAE, [d_sae].</summary>
    public Tensor Sparsity(string name) => Slot(name).Stats.LogSparsity();

    /// <summary>
    /// Trains until the last step, until <paramref name="cancellationToken"/> fires, until <paramref name="stopAtStep"/>
    /// steps are done, or until the source runs out (<see cref="TrainingStatus.SourceExhausted"/>, not an exception: a
    /// <see cref="Activations.TensorActivationSource"/> made without <c>loop: true</c> ends after one pass over its rows;
    /// check <see cref="TrainingResult.Status"/> and <see cref="TrainingResult.Steps"/>). Unless the run completed normally
    /// without checkpoint_path, a checkpoint is written before returning. Throws <see cref="SaeSharpException"/> naming the step and SAE if a loss becomes NaN or infinite (no checkpoint is
    /// written after that step).
    /// </summary>
    public TrainingResult Run(long? stopAtStep = null, CancellationToken cancellationToken = default)
    {
        NativeRuntime.EnsureSignalStack();
        var logFolder = _cfg.LogPath ?? _cfg.CheckpointPath;
        if (logFolder is not null && _log is null) _log = new TrainLog(logFolder, _cfg.TensorBoard, _resumed ? Step : null);
        foreach (var s in _slots) s.Sae.train();
        if (!Initialized) Initialize();

        TrainingStatus? status = null;
        TrainingProgress? last = null;
        var runClock = Stopwatch.StartNew();
        var reportClock = Stopwatch.StartNew();
        long stepsThisRun = 0, rowsSinceReport = 0, rowsThisRun = 0;
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
            rowsThisRun += rows;
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
                    MeanRowsPerSecond = runClock.Elapsed.TotalSeconds > 0 ? rowsThisRun / runClock.Elapsed.TotalSeconds : 0,
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
        (ScaleIn, ScaleOut) = TrainingInitialization.Run(_cfg, _source,
            _slots.Select(s => new TrainingInitialization.Target(s.Index, s.Sae, s.Config)).ToList(), Device);
        Initialized = true;
    }

    /// <summary>Throws unless <paramref name="batch"/> has the widths <paramref name="source"/> declares.</summary>
    internal static void CheckBatch(IActivationSource source, ActivationBatch batch)
    {
        if (batch.Input.dim() != 2 || batch.Input.shape[1] != source.DIn)
            throw new SaeSharpException($"the activation source gave an input batch of shape [{string.Join(", ", batch.Input.shape)}], expected [rows, {source.DIn}]");
        if (batch.Target.dim() != 2 || batch.Target.shape[1] != source.DOut || batch.Target.shape[0] != batch.Input.shape[0])
            throw new SaeSharpException($"the activation source gave a target batch of shape [{string.Join(", ", batch.Target.shape)}], expected [{batch.Input.shape[0]}, {source.DOut}]");
    }

    /// <summary>The batch on the training device, scaled.</summary>
    private (Tensor X, Tensor Y) Scaled(ActivationBatch batch)
    {
        var input = ComputeDevice.To(batch.Input, Device);
        using var scaleIn = ScaleIn.ToScalar();
        var x = ScaleIn == 1 ? input : input * scaleIn;
        if (!batch.HasSeparateTarget) return (x, x.alias());
        var target = ComputeDevice.To(batch.Target, Device);
        using var scaleOut = ScaleOut.ToScalar();
        return (x, ScaleOut == 1 ? target : target * scaleOut);
    }

    // ---------------------------------------------------------------- one step

    /// <summary>One optimiser step of every SAE on the next batch; metrics when <paramref name="log"/>; null when the source is exhausted.</summary>
    private List<SaeProgress>? TrainStep(bool log, out long rows)
    {
        using var scope = NewDisposeScope();
        rows = 0;
        using var batch = _source.Next(_cfg.TrainBatchSizeTokens);
        if (batch is null) return null;
        CheckBatch(_source, batch);
        rows = batch.Rows;
        var (x, y) = Scaled(batch);
        var metrics = log ? new List<SaeProgress>(_slots.Count) : null;
        using (_slots.All(s => s.Sae.SmallTorchSteps) ? RowRanges.SerialTorch() : null)
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

        sae.zero_grad(set_to_none: true);
        var o = sae.TrainingForward(x, y, ctx);
        using (sae.TorchHeavyBackward ? RowRanges.ParallelTorch() : null)
            o.Loss.backward();
        sae.BeforeOptimizerStep(ctx);
        if (c.MaxGradNorm is > 0) ClipGradNorm(slot, c.MaxGradNorm.Value);
        slot.Adam.Step(lr);
        sae.AfterOptimizerStep(ctx);
        var counts = o.ActiveCounts ?? FeatureStatistics.ActiveCounts(o.FeatureActs);
        slot.Stats.UpdateCounts(counts, x.shape[0]);
        // λ·s as this step's loss weighed the penalty, before the target-L0 controller moves λ for the next step.
        double? sparsityCoefficient = sae.WeighsSparsityPenalty ? sae.Training.SparsityCoefficient * sparsityScale : null;
        if (sae.Training.AdaptToTargetL0)
            TargetL0Control.Update(sae.Training, sae.Cfg, counts.sum().item<long>() / (double)x.shape[0], Step, c.Steps);

        using (no_grad())
        {
            var bad = o.Loss.detach().isfinite().logical_not().logical_and(slot.FirstBadStep.lt(TorchScalars.Of(0)));
            using var step = Step.ToScalar();
            slot.FirstBadStep.masked_fill_(bad, step);
        }
        if (!log) return null;

        using var _ = no_grad();
        var losses = new Dictionary<string, double>(StringComparer.Ordinal) { ["overall_loss"] = o.Loss.detach().to(ScalarType.Float64).item<double>() };
        foreach (var (k, v) in o.Losses) losses[k] = v.to(ScalarType.Float64).item<double>();
        var architectureMetrics = o.Metrics.ToDictionary(kv => kv.Key, kv => kv.Value.to(ScalarType.Float64).item<double>(), StringComparer.Ordinal);
        double l0 = o.ActiveCounts is { } active
            ? active.to(ScalarType.Float64).sum().item<double>() / x.shape[0]
            : o.FeatureActs.detach().ne(TorchScalars.Of(0)).sum(1).to(ScalarType.Float64).mean().item<double>();
        var yd = y.to(ScalarType.Float64);
        var resid = (o.SaeOut.detach().to(ScalarType.Float64) - yd).pow(TorchScalars.Of(2)).sum();
        var total = (yd - yd.mean([0], keepdim: true)).pow(TorchScalars.Of(2)).sum();
        double ev = 1 - (resid / total).item<double>();
        double deadFraction = slot.Stats.NotFiredWithin(Math.Min(slot.Stats.DeadWindowTokens, Tokens + x.shape[0]));
        return new SaeProgress
        {
            Name = slot.Name,
            Lr = lr,
            SparsityScale = sparsityScale,
            SparsityCoefficient = sparsityCoefficient,
            Losses = losses,
            L0 = l0,
            DeadFraction = deadFraction,
            ExplainedVariance = ev,
            Metrics = architectureMetrics,
        };
    }

    private static void ClipGradNorm(SlotState slot, double maxNorm)
    {
        using var _ = no_grad();
        using var scope = NewDisposeScope();
        var grads = slot.Sae.parameters().Select(p => p.grad).Where(g => g is not null).Select(g => g!).ToList();
        if (grads.Count == 0) return;
        if (grads.All(NormKernels.Applies))
        {
            double squares = grads.Sum(NormKernels.SumOfSquares);
            double scale = maxNorm / (Math.Sqrt(squares) + 1e-6);
            if (scale < 1)
            {
                using var scaleScalar = scale.ToScalar();
                foreach (var g in grads) g.mul_(scaleScalar);
            }
            return;
        }
        var norm = stack(grads.Select(g => g.to(ScalarType.Float64).pow(TorchScalars.Of(2)).sum())).sum().sqrt();
        using var maxNormScalar = maxNorm.ToScalar();
        var coef = (maxNormScalar / norm.add(TorchScalars.Of(1e-6), TorchScalars.One)).clamp_max(TorchScalars.Of(1.0)).to(grads[0].dtype);
        foreach (var g in grads) g.mul_(coef);
    }

    private void ThrowIfNonFinite()
    {
        foreach (var slot in _slots)
        {
            long bad = slot.FirstBadStep.item<long>();
            if (bad >= 0)
                throw new SaeSharpException(
                    $"training step {bad + 1} of {TotalSteps}: the loss of SAE '{slot.Name}' is NaN or infinite; " +
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
            CheckBatch(_source, batch);
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
            using var gen = new Generator(TrainingInitialization.MixSeed(_cfg.Seed, slot.Index, Step + 1));
            var dead = slot.Stats.DeadMask();
            int count = DeadLatentResampler.Resample(slot.Sae, slot.Adam, dead, xAll.narrow(0, 0, n), yAll.narrow(0, 0, n), gen);
            slot.Stats.TokensSinceFired.masked_fill_(dead, TorchScalars.Of(0));
            _log?.Event(Step, slot.Name, "resampled_dead_latents", count);
        }
    }

    // ---------------------------------------------------------------- results

    /// <summary>A copy of the slot's SAE with the normalisation folded in, built on the CPU and then moved to the training
    /// device (where <see cref="TrainingResult"/>'s SAEs live; writers copy them to the CPU).</summary>
    private TrainedSae FoldedResult(SlotState slot)
    {
        var cfg = slot.Sae.Cfg.Clone();
        cfg.NormalizeActivations = "none";
        cfg.Device = _cfg.Device!;
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
        // SAELens writes its training value into a topk cfg.json (its JumpReLU form of BatchTopK has no such field); true is
        // left out, the rows then being at unit norm, where plain TopK (the inference default) is the same function.
        if (inference.Cfg.Architecture == SaeArchitectures.TopK && !slot.Sae.Training.RescaleActsByDecoderNorm)
            (inference.Cfg.Extra ??= [])["rescale_acts_by_decoder_norm"] = System.Text.Json.JsonSerializer.SerializeToElement(false);
        if (Device.type != DeviceType.CPU) inference.to(Device);
        inference.eval();
        var config = slot.Config.Clone();
        config.Lr = slot.Lr;
        config.AdamBeta1 = slot.Adam.Beta1;
        config.AdamBeta2 = slot.Adam.Beta2;
        return new TrainedSae { Name = slot.Name, Sae = inference, Sparsity = slot.Stats.LogSparsity().DetachFromDisposeScope(), Config = config };
    }

    // ---------------------------------------------------------------- checkpoints

    /// <summary>Writes a <see cref="TrainerCheckpoint"/> into checkpoint_path and deletes checkpoints beyond
    /// keep_checkpoints. Returns the folder.</summary>
    public string SaveCheckpoint()
    {
        if (_cfg.CheckpointPath is null) throw new SaeSharpException("cannot checkpoint: checkpoint_path is not set");
        ThrowIfNonFinite();
        var folder = TrainerCheckpoint.FolderOf(_cfg.CheckpointPath, Step);
        if (folder == LastCheckpoint && File.Exists(Path.Combine(folder, TrainerCheckpoint.StateFileName))) return folder; // nothing new since
        var checkpoint = new TrainerCheckpoint
        {
            Step = Step,
            Tokens = Tokens,
            ScaleIn = ScaleIn,
            ScaleOut = ScaleOut,
            Config = _cfg,
            SourceState = _source.SaveState(),
            Saes = _slots.Select(slot =>
            {
                var tensors = new Dictionary<string, Tensor>(StringComparer.Ordinal);
                foreach (var (k, t) in slot.Sae.state_dict()) tensors[k] = t;
                foreach (var kv in slot.Adam.StateTensors()) tensors[$"adam.{kv.Key}"] = kv.Value;
                tensors["stats.tokens_since_fired"] = slot.Stats.TokensSinceFired;
                tensors["stats.act_counts"] = slot.Stats.ActCounts;
                return new TrainerCheckpoint.SaeEntry
                {
                    Name = slot.Name,
                    SaeConfig = slot.Sae.Cfg,
                    Training = slot.Sae.Training,
                    Config = slot.Config,
                    AdamStep = slot.Adam.StepCount,
                    WindowRows = slot.Stats.WindowRows,
                    WindowSteps = slot.Stats.WindowSteps,
                    Tensors = tensors,
                };
            }).ToList(),
        };
        LastCheckpoint = checkpoint.Save(_cfg.CheckpointPath, _cfg.KeepCheckpoints);
        return LastCheckpoint;
    }

    /// <summary>
    /// Rebuilds a trainer from a checkpoint (a step folder or the checkpoint_path holding them) so that <see cref="Run"/>
    /// continues exactly where it stopped. <paramref name="source"/> must be constructed with the same arguments as the
    /// original; its position is restored with <see cref="IActivationSource.LoadState"/>. The run continues on
    /// <paramref name="device"/> (<see cref="TrainerConfig.Device"/>'s names), or with null on the device the checkpoint recorded.
    /// </summary>
    public static SaeTrainer Resume(string checkpoint, IActivationSource source, string? device = null)
    {
        using var state = TrainerCheckpoint.Load(checkpoint);
        if (Path.GetDirectoryName(state.Folder) is { } root) TrainerCheckpoint.RemoveInterruptedWrites(root);
        var config = state.Config.Clone();
        if (device is not null) config.Device = device;
        var slots = new List<SaeSlot>();
        foreach (var e in state.Saes)
        {
            var sae = SaeFactory.Create(e.SaeConfig);
            sae.Training = e.Training;
            var own = e.Config.Clone();
            own.Device = config.Device;
            slots.Add(new SaeSlot(e.Name, sae, own));
        }
        var trainer = new SaeTrainer(config, source, slots);
        trainer.Restore(state);
        return trainer;
    }

    private void Restore(TrainerCheckpoint state)
    {
        Step = state.Step;
        Tokens = state.Tokens;
        ScaleIn = state.ScaleIn;
        ScaleOut = state.ScaleOut;
        for (int i = 0; i < _slots.Count; i++)
        {
            var slot = _slots[i];
            var e = state.Saes[i];
            var file = state.FileOf(i);
            using (no_grad())
            {
                foreach (var (k, t) in slot.Sae.state_dict()) t.copy_(e.Get(k, t.shape, file));
                slot.Stats.TokensSinceFired.copy_(e.Get("stats.tokens_since_fired", slot.Stats.TokensSinceFired.shape, file));
                slot.Stats.ActCounts.copy_(e.Get("stats.act_counts", slot.Stats.ActCounts.shape, file));
            }
            var adam = e.Tensors.Where(kv => kv.Key.StartsWith("adam.", StringComparison.Ordinal))
                .ToDictionary(kv => kv.Key["adam.".Length..], kv => kv.Value, StringComparer.Ordinal);
            slot.Adam.LoadStateTensors(adam, file);
            slot.Adam.StepCount = e.AdamStep;
            slot.Stats.WindowRows = e.WindowRows;
            slot.Stats.WindowSteps = e.WindowSteps;
        }
        _source.LoadState(state.SourceState);
        Initialized = true;
        _resumed = true;
        LastCheckpoint = state.Folder;
    }

    private SlotState Slot(string name) =>
        _slots.FirstOrDefault(s => s.Name == name) ?? throw new SaeSharpException($"no SAE named '{name}' in this run");

    /// <summary>Releases the optimiser state and the trainer's tensors (not the SAEs or the source).</summary>
    public void Dispose()
    {
        _log?.Dispose();
        foreach (var s in _slots) s.Dispose();
    }

    /// <summary>Per-SAE training state.</summary>
    private sealed class SlotState : IDisposable
    {
        public SlotState(int index, string name, Sae sae, TrainerConfig config, TrainerConfig run, Device device)
        {
            Index = index;
            Name = name;
            Sae = sae;
            Config = config;
            Lr = config.Lr ?? sae.DefaultLearningRate();
            var (beta1, beta2) = sae.DefaultAdamBetas;
            var parameters = sae.named_parameters().Select(p => (p.name, p.parameter)).ToList();
            Adam = new AdamOptimizer(parameters, config.AdamBeta1 ?? beta1, config.AdamBeta2 ?? beta2, config.AdamEpsilon);
            Stats = new FeatureStatistics(sae.Cfg.DSae, run.ResolvedDeadFeatureWindow, run.FeatureSamplingWindow, device);
            FirstBadStep = tensor(-1L, device: device).DetachFromDisposeScope();
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
