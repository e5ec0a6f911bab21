using SaeSharp.Kernels;
using System.Text.Json.Nodes;
using System.Text.Json.Serialization;
using SaeSharp.Saes;
using TorchSharp;
using static TorchSharp.torch;

namespace SaeSharp.Training;

/// <summary>Settings of <see cref="CrossCoderTrainer"/>; defaults are the fork's <c>CrossCoderTrainer</c> and
/// <c>BatchTopKCrossCoderTrainer</c> defaults.</summary>
public sealed record CrossCoderTrainerOptions
{
    /// <summary>Total steps (BatchTopK's lr decay runs to this).</summary>
    public required long Steps { get; init; }
    /// <summary>Learning rate; null: 1e-3 for L1, 2e-4/√(dict_size/2¹⁴) for BatchTopK.</summary>
    public double? Lr { get; init; }
    /// <summary>λ of the L1 crosscoder's sparsity term (<c>l1_penalty</c>, default 0.1).</summary>
    public double L1Penalty { get; init; } = 0.1;
    /// <summary>Linear lr warm-up from 0 (<c>warmup_steps</c>, default 1000).</summary>
    public long WarmupSteps { get; init; } = 1000;
    /// <summary>L1 crosscoder: reconstruction term mse (Σ_d squared) instead of l2 (the norm) (<c>use_mse_loss</c>, default false).</summary>
    public bool UseMseLoss { get; init; }
    /// <summary>BatchTopK: weight of the AuxK loss (<c>auxk_alpha</c>, default 1/32).</summary>
    public double AuxkAlpha { get; init; } = 1.0 / 32;
    /// <summary>BatchTopK: linear lr decay to 0 from this step (<c>decay_start</c>, default none).</summary>
    public long? DecayStart { get; init; }
    /// <summary>BatchTopK: EMA factor of the threshold (<c>threshold_beta</c>, default 0.999).</summary>
    public double ThresholdBeta { get; init; } = 0.999;
    /// <summary>BatchTopK: the threshold is updated at steps after this one (<c>threshold_start_step</c>, default 1000).</summary>
    public long ThresholdStartStep { get; init; } = 1000;
    /// <summary>BatchTopK: a latent is dead after this many tokens without firing (default 10 000 000).</summary>
    public long DeadFeatureThreshold { get; init; } = 10_000_000;
    /// <summary>BatchTopK: k at step 0 when annealing (<c>k_max</c>; null: the crosscoder's k throughout).</summary>
    [JsonIgnore(Condition = JsonIgnoreCondition.WhenWritingDefault)]
    public int? KMax { get; init; }
    /// <summary>BatchTopK: steps over which k falls linearly from <see cref="KMax"/> to the crosscoder's k
    /// (<c>k_annealing_steps</c>, default 0: no annealing).</summary>
    [JsonIgnore(Condition = JsonIgnoreCondition.WhenWritingDefault)]
    public long KAnnealingSteps { get; init; }
}

/// <summary>What one step of <see cref="CrossCoderTrainer"/> measured (before the update).</summary>
public sealed record CrossCoderStepLog(long Step, double Lr, double Loss, double L2Loss, double MseLoss, double SparsityLoss, double AuxkLoss, double L0, int DeadLatents)
{
    /// <summary>1 − Σ(x − x̂)² / Σ(x − mean x)² over the batch's rows, every slot and dimension (the mean per slot and
    /// dimension over the batch), of the trained x̂: the SAE trainer's <c>explained_variance</c> on the stacked slots.</summary>
    public double ExplainedVariance { get; init; } = double.NaN;
}

/// <summary>
/// The fork's crosscoder trainers on batches x [batch, L, d] (already through the crosscoder's normaliser).
/// L1 (<c>CrossCoderTrainer</c>): Adam (β 0.9, 0.999) on <see cref="CrossCoder.L1Loss"/>, lr·min(step/warmup, 1); no
/// decoder-norm constraint, no gradient clipping, no resampling (the fork's default <c>resample_steps=None</c>).
/// BatchTopK (<c>BatchTopKCrossCoderTrainer</c>): at step 0 b_dec[l] = the geometric median of the batch's layer-l rows;
/// loss = mean over (batch, layer) of ‖x_l − x̂_l‖ + auxk_alpha·AuxK, where x̂ decodes the batch top-(k·batch) of f·c and
/// AuxK reconstructs the residual from the top-(d/2) dead latents (dead: no firing in DeadFeatureThreshold tokens),
/// normalised by the residual's variance; gradients clipped to norm 1; lr warm-up step/warmup then, from decay_start,
/// (steps − step)/(steps − decay_start); after threshold_start_step the threshold follows the EMA of the smallest
/// positive selected f·c.
/// </summary>
public sealed class CrossCoderTrainer : IDisposable
{
    private readonly CrossCoder _cc;
    private readonly CrossCoderTrainerOptions _o;
    private readonly AdamOptimizer _adam;
    private readonly Tensor? _tokensSinceFired;

    /// <summary>The base learning rate.</summary>
    public double Lr { get; }

    /// <summary>A trainer of <paramref name="cc"/> (initialise its weights first).</summary>
    public CrossCoderTrainer(CrossCoder cc, CrossCoderTrainerOptions options)
    {
        ArgumentNullException.ThrowIfNull(cc);
        ArgumentNullException.ThrowIfNull(options);
        if (options.Steps <= 0) throw new SaeSharpException($"crosscoder training: steps must be positive, got {options.Steps}");
        cc.CheckReconstructsInput("crosscoder training");
        if (options.WarmupSteps < 0) throw new SaeSharpException($"crosscoder training: warmup_steps must be ≥ 0, got {options.WarmupSteps}");
        if (options.DecayStart is { } ds && (ds <= options.WarmupSteps || ds >= options.Steps))
            throw new SaeSharpException($"crosscoder training: decay_start {ds} must lie after warmup_steps ({options.WarmupSteps}) and before steps ({options.Steps})");
        if (options.KMax is { } km)
        {
            if (cc.Cfg.K is null) throw new SaeSharpException("crosscoder training: k_max (k annealing) is for the BatchTopK crosscoder");
            if (km <= 0 || km > cc.Cfg.DictSize) throw new SaeSharpException($"crosscoder training: k_max must be in 1..dict_size ({cc.Cfg.DictSize}), got {km}");
        }
        if (options.KAnnealingSteps < 0) throw new SaeSharpException($"crosscoder training: k_annealing_steps must be ≥ 0, got {options.KAnnealingSteps}");
        if (options.KAnnealingSteps > 0 && options.KMax is null) throw new SaeSharpException("crosscoder training: k_annealing_steps needs k_max (the k to start from)");
        _cc = cc;
        _o = options;
        Lr = options.Lr ?? (cc.Cfg.K is null ? 1e-3 : 2e-4 / Math.Sqrt(cc.Cfg.DictSize / 16384.0));
        _adam = new AdamOptimizer(cc.named_parameters().Select(p => (p.name, p.parameter)), beta1: 0.9, beta2: 0.999);
        if (cc.Cfg.K is not null) _tokensSinceFired = zeros(cc.Cfg.DictSize, ScalarType.Int64, device: cc.Encoder.Weight.device);
    }

    /// <summary>The learning rate of 0-based step <paramref name="step"/> (the fork's LambdaLR factor times the base lr).</summary>
    public double LearningRate(long step)
    {
        double f;
        if (_o.WarmupSteps > 0 && step < _o.WarmupSteps) f = (double)step / _o.WarmupSteps;
        else if (_cc.Cfg.K is not null && _o.DecayStart is { } ds && step >= ds) f = (double)(_o.Steps - step) / (_o.Steps - ds);
        else f = 1.0;
        return Lr * f;
    }

    /// <summary>
    /// BatchTopK's k at 0-based step <paramref name="step"/> (the fork's annealing in <c>BatchTopKCrossCoderTrainer.loss</c>):
    /// with k_annealing_steps A &gt; 0 and k_max ≠ k, max(1, round(k_max − (k_max − k)·step/A)) before step A, k from then on;
    /// without annealing steps, k_max when given (the fork builds its crosscoder with k_max), else k. Rounding is
    /// Python's (half to even).
    /// </summary>
    public int KAt(long step)
    {
        int k = _cc.Cfg.K ?? throw new SaeSharpException("crosscoder: k is for the BatchTopK crosscoder");
        int kInitial = _o.KMax ?? k;
        if (_o.KAnnealingSteps > 0 && kInitial != k)
            return step < _o.KAnnealingSteps
                ? Math.Max(1, (int)Math.Round(kInitial - (kInitial - k) * ((double)step / _o.KAnnealingSteps), MidpointRounding.ToEven))
                : k;
        return kInitial;
    }

    /// <summary>One optimiser step on x [batch, L, d] at 0-based step <paramref name="step"/>.</summary>
    public CrossCoderStepLog Step(long step, Tensor x)
    {
        _cc.CheckInput(x, "training batch");
        using var scope = NewDisposeScope();
        double lr = LearningRate(step);
        _cc.zero_grad();
        CrossCoderStepLog log;
        if (_cc.Cfg.K is null)
        {
            var l = _cc.L1Loss(x, _o.L1Penalty, _o.UseMseLoss);
            l.Loss.backward();
            double l0;
            int dead;
            using (no_grad())
            {
                l0 = l.ScaledLatents.gt(TorchScalars.Of(0)).sum(-1).to(ScalarType.Float64).mean().item<double>();
                dead = (int)l.ScaledLatents.le(TorchScalars.Of(1e-4)).all(0).sum().item<long>();
            }
            log = new CrossCoderStepLog(step, lr, l.Loss.item<float>(), l.L2Loss.item<float>(), l.MseLoss.item<float>(), l.SparsityLoss.item<float>(), 0, l0, dead)
            {
                ExplainedVariance = ExplainedVariance(x, l.XHat),
            };
        }
        else
        {
            int k = KAt(step);
            using (no_grad()) _cc.KBuffer!.fill_(TorchScalars.Of(k));
            if (step == 0)
                using (no_grad()) _cc.Decoder.Bias.copy_(LayerGeometricMedian(x));
            var (f, postRelu, postScaled) = _cc.EncodeBatchTopK(x, k);
            var c = _cc.CodeNormalizationWeights();
            if (step > _o.ThresholdStartStep) UpdateThreshold(f * c);
            var xHat = _cc.DecodeNoBias(f).add(_cc.Decoder.Bias, TorchScalars.One);
            var e = x - xHat;
            var active = f.reshape(-1, _cc.Cfg.DictSize).sum(0L).gt(TorchScalars.Of(0)); // DECOUPLED: fired in any slot
            using (no_grad())
            {
                _tokensSinceFired!.add_(TorchScalars.Of(x.shape[0]), TorchScalars.One);
                _tokensSinceFired.masked_fill_(active, TorchScalars.Of(0));
            }
            var mse = e.pow(TorchScalars.Of(2)).sum(-1).mean();
            var l2 = TorchScalars.VectorNorm(e, 2, [-1]).mean();
            var (auxk, dead) = AuxiliaryLoss(e.detach(), postRelu, postScaled);
            var loss = l2.add(auxk.mul(TorchScalars.Of(_o.AuxkAlpha)), TorchScalars.One);
            loss.backward();
            nn.utils.clip_grad_norm_(_cc.parameters(), 1.0);
            double l0;
            using (no_grad()) l0 = f.gt(TorchScalars.Of(0)).sum(-1).to(ScalarType.Float64).mean().item<double>();
            log = new CrossCoderStepLog(step, lr, loss.item<float>(), l2.item<float>(), mse.item<float>(), 0, auxk.item<float>(), l0, dead)
            {
                ExplainedVariance = ExplainedVariance(x, xHat),
            };
        }
        _adam.Step(lr);
        return log;
    }

    /// <summary><see cref="CrossCoderStepLog.ExplainedVariance"/> of x, x̂ [batch, L, d] (float64, as SaeTrainer's).</summary>
    private static double ExplainedVariance(Tensor x, Tensor xHat)
    {
        using var _ = no_grad();
        using var scope = NewDisposeScope();
        var xd = x.detach().to(ScalarType.Float64);
        var resid = (xHat.detach().to(ScalarType.Float64) - xd).pow(TorchScalars.Of(2)).sum();
        var total = (xd - xd.mean([0], keepdim: true)).pow(TorchScalars.Of(2)).sum();
        return 1 - (resid / total).item<double>();
    }

    private (Tensor Loss, int Dead) AuxiliaryLoss(Tensor residual, Tensor postRelu, Tensor postScaled)
    {
        long b = residual.shape[0];
        var r = residual.reshape(b, -1);
        var deadMask = _tokensSinceFired!.ge(TorchScalars.Of(_o.DeadFeatureThreshold));
        int dead = (int)deadMask.sum().item<long>();
        if (dead == 0) return (zeros([], residual.dtype, residual.device), 0);
        int kAux = Math.Min(_cc.Cfg.ActivationDim / 2, dead);
        Tensor idx;
        using (no_grad())
        {
            var masked = where(deadMask.unsqueeze(0), postScaled, full_like(postScaled, TorchScalars.Of(double.NegativeInfinity)));
            idx = masked.topk(kAux, sorted: false).indexes;
        }
        var aux = zeros_like(postRelu).scatter(-1, idx, postRelu.gather(-1, idx));
        var xAux = _cc.DecodeNoBias(aux).reshape(b, -1);
        var l2Aux = (r - xAux).pow(TorchScalars.Of(2)).sum(-1).mean();
        var denom = (r - r.mean([0], keepdim: true)).pow(TorchScalars.Of(2)).sum(-1).mean();
        return ((l2Aux / denom).nan_to_num(0.0), dead);
    }

    private void UpdateThreshold(Tensor fScaled)
    {
        using var _ = no_grad();
        if (fScaled.Dimensions == 3)
        {
            // update_decoupled_threshold: per slot, the smallest positive f·c of the batch (0 if none), each slot its own EMA.
            var perSlot = fScaled.transpose(0, 1).reshape(_cc.Cfg.NumLayers, -1);
            var mins = where(perSlot.gt(TorchScalars.Of(0)), perSlot, full_like(perSlot, TorchScalars.Of(double.PositiveInfinity))).amin([1]);
            mins = where(mins.isinf(), zeros_like(mins), mins).to(ScalarType.Float32);
            var th = _cc.Threshold!;
            var ema = th.mul(TorchScalars.Of(_o.ThresholdBeta)).add(mins.mul(TorchScalars.Of(1 - _o.ThresholdBeta)), TorchScalars.One);
            th.copy_(where(th.lt(TorchScalars.Of(0)), mins, ema));
            return;
        }
        var positive = fScaled.masked_select(fScaled.gt(TorchScalars.Of(0)));
        float m = positive.numel() == 0 ? 0f : positive.min().to(ScalarType.Float32).item<float>();
        var t = _cc.Threshold!;
        float current = t.item<float>();
        float next = current < 0 ? m : (float)(_o.ThresholdBeta * current + (1 - _o.ThresholdBeta) * m);
        using var nextScalar = next.ToScalar();
        t.fill_(nextScalar);
    }

    /// <summary>
    /// Trains <paramref name="cc"/> on <paramref name="data"/> [N, L, d] for <see cref="CrossCoderTrainerOptions.Steps"/>
    /// steps of <paramref name="batchSize"/> rows, each pass over the rows in a fresh random order (seeded by
    /// <paramref name="seed"/>); rows go through the crosscoder's normaliser first (identity without statistics).
    /// <paramref name="onStep"/> sees each step's log. Stops early, between steps, when <paramref name="cancel"/> fires.
    /// With <paramref name="checkpointing"/>: checkpoints, resume and train_log.jsonl (see the overload's private loop);
    /// a resumed run takes the same batches as an uninterrupted one (the checkpoint records the passes and the row
    /// reached, and the orders are drawn again from the seed).
    /// </summary>
    public static IReadOnlyList<CrossCoderStepLog> Train(CrossCoder cc, Tensor data, CrossCoderTrainerOptions options, int batchSize, long seed,
        Action<CrossCoderStepLog>? onStep = null, CrossCoderCheckpointing? checkpointing = null, CancellationToken cancel = default)
    {
        ArgumentNullException.ThrowIfNull(data);
        ArgumentNullException.ThrowIfNull(cc);
        cc.CheckInput(data, "training activations");
        if (batchSize <= 0) throw new SaeSharpException($"crosscoder training: batch size must be positive, got {batchSize}");
        long n = data.shape[0];
        if (n < batchSize) throw new SaeSharpException($"crosscoder training: {n} rows are fewer than one batch of {batchSize}");
        using var generator = new Generator((ulong)seed);
        Tensor? order = null;
        long next = n, passes = 0;
        void NewPass()
        {
            order?.Dispose();
            order = randperm(n, generator: generator).DetachFromDisposeScope();
            next = 0;
            passes++;
        }
        try
        {
            return Run(cc, options, () =>
            {
                if (next + batchSize > n) NewPass();
                var rows = data.index_select(0, order!.narrow(0, next, batchSize));
                next += batchSize;
                return rows;
            }, onStep, checkpointing, batchSize,
            () => new JsonObject { ["kind"] = "tensor", ["rows"] = n, ["batch_size"] = batchSize, ["seed"] = seed, ["passes"] = passes, ["next"] = next },
            state =>
            {
                if (state["kind"]?.GetValue<string>() != "tensor" || state["rows"]?.GetValue<long>() != n || state["batch_size"]?.GetValue<long>() != batchSize || state["seed"]?.GetValue<long>() != seed)
                    throw new SaeSharpException($"resume: the checkpoint's data position {state.ToJsonString()} is not of this data ({n} rows, batch size {batchSize}, seed {seed})");
                long p = state["passes"]!.GetValue<long>();
                for (long i = 0; i < p; i++) NewPass();
                passes = p;
                next = state["next"]!.GetValue<long>();
            }, cancel);
        }
        finally
        {
            order?.Dispose();
        }
    }

    /// <summary>
    /// Trains <paramref name="cc"/> on batches of <paramref name="batchSize"/> rows from <paramref name="source"/>, whose
    /// rows hold the L layer slots side by side ([L·d], as <see cref="Activations.ModelActivationSource"/> harvests a
    /// crosscoder spec: <see cref="Activations.HarvestSpec.ForCrossCoder"/>), viewed as [batch, L, d]; the source's shuffle
    /// decides the order. Stops after <see cref="CrossCoderTrainerOptions.Steps"/> steps, when the source runs out, or when
    /// <paramref name="cancel"/> fires; the logs say how many steps ran. Otherwise as the in-memory overload; a resume
    /// restores the source's position (<see cref="Activations.IActivationSource.LoadState"/>: give a source constructed with
    /// the same arguments), so it too takes the batches of an uninterrupted run.
    /// </summary>
    public static IReadOnlyList<CrossCoderStepLog> Train(CrossCoder cc, Activations.IActivationSource source, CrossCoderTrainerOptions options, int batchSize,
        Action<CrossCoderStepLog>? onStep = null, CrossCoderCheckpointing? checkpointing = null, CancellationToken cancel = default)
    {
        ArgumentNullException.ThrowIfNull(cc);
        ArgumentNullException.ThrowIfNull(source);
        if (batchSize <= 0) throw new SaeSharpException($"crosscoder training: batch size must be positive, got {batchSize}");
        int layers = cc.Cfg.NumLayers, d = cc.Cfg.ActivationDim;
        if (source.DIn != layers * d)
            throw new SaeSharpException($"crosscoder training: the source's rows have width {source.DIn} but the crosscoder reads {layers} layers × {d} = {layers * d}");
        return Run(cc, options, () =>
        {
            // The batch's tensors belong to the step's dispose scope (Next runs inside it).
            if (source.Next(batchSize) is not { } b) return null;
            return b.Input.view(b.Input.shape[0], layers, d).to(ScalarType.Float32);
        }, onStep, checkpointing, batchSize, source.SaveState, source.LoadState, cancel);
    }

    /// <summary>The step loop of both overloads: <paramref name="nextBatch"/> gives [batch, L, d] rows (null: no more data),
    /// each step in its own dispose scope. With <paramref name="c"/>, as <see cref="SaeTrainer.Run"/>: resume from the latest
    /// checkpoint (weights, Adam, counters and, through <paramref name="restoreData"/>, the data's position), a checkpoint
    /// every <see cref="CrossCoderCheckpointing.EverySteps"/> steps and when the run ends or is cancelled, train_log.jsonl
    /// lines; a NaN or infinite loss throws naming the step and the last good checkpoint, and writes none after it.</summary>
    private static List<CrossCoderStepLog> Run(CrossCoder cc, CrossCoderTrainerOptions options, Func<Tensor?> nextBatch,
        Action<CrossCoderStepLog>? onStep, CrossCoderCheckpointing? c, int batchSize,
        Func<JsonNode> saveData, Action<JsonNode> restoreData, CancellationToken cancel)
    {
        using var trainer = new CrossCoderTrainer(cc, options);
        var logs = new List<CrossCoderStepLog>();
        long start = 0;
        string? lastCheckpoint = null;
        if (c is { Resume: true })
        {
            var state = CrossCoderCheckpoint.Load(c, cc, options, trainer._adam, trainer._tokensSinceFired);
            restoreData(state.Data);
            start = state.Step;
            lastCheckpoint = state.Folder;
        }
        using var log = c?.LogFolder is { } folder ? new TrainLog(folder, tensorBoard: false, c.Resume ? start : null) : null;
        string Save(long steps) => lastCheckpoint = CrossCoderCheckpoint.Save(c!, cc, options, trainer._adam, trainer._tokensSinceFired, steps, steps * batchSize, saveData());
        long step = start, lastLogged = start;
        var reportClock = System.Diagnostics.Stopwatch.StartNew();
        for (; step < options.Steps && !cancel.IsCancellationRequested; step++)
        {
            using var scope = NewDisposeScope();
            if (nextBatch() is not { } rows) break;
            var l = trainer.Step(step, cc.NormalizeActivations(rows));
            if (!double.IsFinite(l.Loss))
                throw new SaeSharpException($"crosscoder training step {step + 1} of {options.Steps}: the loss is NaN or infinite; " +
                                            (lastCheckpoint is null ? "no checkpoint was written" : $"the last good checkpoint is {lastCheckpoint}"));
            logs.Add(l);
            if (log is not null && ((step + 1) % Math.Max(1, c!.LogEverySteps) == 0 || step + 1 == options.Steps))
            {
                // rows_per_second over the steps since the previous line, as the SAE trainer reports it
                double seconds = reportClock.Elapsed.TotalSeconds, rowsPerSecond = seconds > 0 ? (step + 1 - lastLogged) * (double)batchSize / seconds : 0;
                log.Write(Progress(l, options.Steps, batchSize, cc.Cfg.DictSize, cc.Cfg.K is not null, rowsPerSecond));
                lastLogged = step + 1;
                reportClock.Restart();
            }
            onStep?.Invoke(l);
            if (c is { EverySteps: > 0 } && (step + 1) % c.EverySteps == 0) Save(step + 1);
        }
        // The run's end (finished, cancelled or out of data) is checkpointed unless the last checkpoint is of this step.
        if (c is not null && lastCheckpoint != TrainerCheckpoint.FolderOf(c.Path, step)) Save(step);
        return logs;
    }

    /// <summary>A step's log as the SAE trainer's progress, for <see cref="TrainLog"/> (one "crosscoder" entry per line):
    /// the L1 crosscoder's <c>sparsity_loss</c> or BatchTopK's <c>auxk_loss</c> (also at 0, while no latent is dead), as
    /// the fork's two trainers log them.</summary>
    private static TrainingProgress Progress(CrossCoderStepLog l, long totalSteps, int batchSize, int dictSize, bool batchTopK, double rowsPerSecond)
    {
        var losses = new Dictionary<string, double> { ["overall_loss"] = l.Loss, ["l2_loss"] = l.L2Loss, ["mse_loss"] = l.MseLoss };
        if (batchTopK) losses["auxk_loss"] = l.AuxkLoss;
        else losses["sparsity_loss"] = l.SparsityLoss;
        return new TrainingProgress
        {
            Step = l.Step + 1,
            TotalSteps = totalSteps,
            Tokens = (l.Step + 1) * batchSize,
            RowsPerSecond = rowsPerSecond,
            Saes = [new SaeProgress { Name = "crosscoder", Lr = l.Lr, SparsityScale = 1, Losses = losses, L0 = l.L0, DeadFraction = (double)l.DeadLatents / dictSize, ExplainedVariance = l.ExplainedVariance }],
        };
    }

    /// <summary>
    /// The activation normaliser's statistics of <paramref name="data"/> [N, L, d] as the fork's activation caches compute
    /// them (<c>RunningStatWelford</c>: per slot and dimension the mean and the Bessel-corrected std over all rows),
    /// accumulated in float64 and returned as float32 [L, d]; give them to <see cref="CrossCoder.SetActivationNormalizer"/>
    /// before training (the fork's trainers take them as <c>activation_mean</c>, <c>activation_std</c>).
    /// </summary>
    public static (Tensor Mean, Tensor Std) ActivationStatistics(Tensor data)
    {
        ArgumentNullException.ThrowIfNull(data);
        if (data.Dimensions != 3 || data.shape[0] < 2)
            throw new SaeSharpException($"crosscoder normaliser: statistics need [N ≥ 2, L, d] rows, got [{string.Join(", ", data.shape)}]");
        using var _ = no_grad();
        using var scope = NewDisposeScope();
        var x = data.to(ScalarType.Float64);
        var mean = x.mean([0]);
        var std = x.std(0, unbiased: true);
        if (!std.isfinite().all().item<bool>() || !mean.isfinite().all().item<bool>())
            throw new SaeSharpException("crosscoder normaliser: the activations' mean or std is not finite (NaN or infinite values in the data)");
        return (mean.to(ScalarType.Float32).MoveToOuterDisposeScope(), std.to(ScalarType.Float32).MoveToOuterDisposeScope());
    }

    /// <summary>
    /// The fork's <c>BatchTopKCrossCoderTrainer.geometric_median</c> of points [n, L, d] per layer → [L, d]: start at the
    /// mean, Weiszfeld reweighting by 1/‖p − m‖ (no epsilon), at most 100 iterations, stop when every layer's median moves
    /// less than 1e-5. (SAELens's <see cref="GeometricMedian"/> differs: an epsilon and an objective-based stop.)
    /// </summary>
    public static Tensor LayerGeometricMedian(Tensor points)
    {
        using var _ = no_grad();
        using var scope = NewDisposeScope();
        var guess = points.mean([0]);
        for (int i = 0; i < 100; i++)
        {
            var prev = guess;
            var w = TorchScalars.VectorNorm(points - guess, 2, [-1]).reciprocal();
            w = w / w.sum(0, keepdim: true);
            guess = (w.unsqueeze(-1) * points).sum(0L);
            if (TorchScalars.VectorNorm(guess - prev, 2, [-1]).lt(TorchScalars.Of(1e-5)).all().item<bool>()) break;
        }
        return guess.MoveToOuterDisposeScope();
    }

    /// <inheritdoc/>
    public void Dispose()
    {
        _adam.Dispose();
        _tokensSinceFired?.Dispose();
    }
}
