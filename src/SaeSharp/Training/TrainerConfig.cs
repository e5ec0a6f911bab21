using System.Text.Json;
using System.Text.Json.Nodes;
using System.Text.Json.Serialization;

namespace SaeSharp.Training;

/// <summary>Learning-rate schedule names (<c>lr_scheduler_name</c>).</summary>
public static class LrSchedulers
{
    /// <summary>SAELens: lr after warm-up; lr_decay_steps &gt; 0 decays linearly from lr to 0 over the last steps.</summary>
    public const string Constant = "constant";
    /// <summary>SAELens: cosine from lr to lr_end between warm-up and decay, then linear from lr_end to 0 over lr_decay_steps.</summary>
    public const string CosineAnnealing = "cosineannealing";
    /// <summary>SAELens: cosine from lr to lr_end restarting n_restart_cycles times between warm-up and decay (PyTorch's
    /// CosineAnnealingWarmRestarts), then linear from lr_end to 0 over lr_decay_steps.</summary>
    public const string CosineAnnealingWarmRestarts = "cosineannealingwarmrestarts";
    /// <summary>SaeSharp: linear decay from lr to lr_end over the last lr_decay_steps (all after warm-up when 0).</summary>
    public const string Linear = "linear";
    /// <summary>SaeSharp: half-cosine decay from lr to lr_end over the last lr_decay_steps (all after warm-up when 0).</summary>
    public const string Cosine = "cosine";

    /// <summary>Every schedule name, in the order above.</summary>
    public static readonly IReadOnlyList<string> All = [Constant, CosineAnnealing, CosineAnnealingWarmRestarts, Linear, Cosine];

    /// <summary>SAELens's schedules (<c>get_lr_scheduler</c> in sae_lens/training/optim.py), computed as SAELens does.</summary>
    public static readonly IReadOnlyList<string> SaeLens = [Constant, CosineAnnealing, CosineAnnealingWarmRestarts];
}

/// <summary>
/// Hyperparameters of a training run, serialised with SAELens <c>LanguageModelSAERunnerConfig</c> names where they exist.
/// Fields marked "per SAE" may differ between the SAEs of one run (give each <see cref="SaeSlot"/> its own config);
/// the others describe the shared pass over the data and must agree.
/// </summary>
public sealed class TrainerConfig
{
    // ---- per SAE: optimiser and schedule ----

    /// <summary>Adam learning rate (per SAE); null means the architecture default; 0 leaves the weights as they start.</summary>
    [JsonPropertyName("lr")] public double? Lr { get; set; }
    /// <summary>Learning rate at the end of the decay (per SAE); null means lr/10 (SAELens).</summary>
    [JsonPropertyName("lr_end")] public double? LrEnd { get; set; }
    /// <summary>"constant", "cosineannealing" or "cosineannealingwarmrestarts" (SAELens's schedules, exactly), or SaeSharp's
    /// "linear" or "cosine" (per SAE);
    /// see <see cref="Schedules.LearningRate(string, double, double, long, long, long, long)"/>.</summary>
    [JsonPropertyName("lr_scheduler_name")] public string LrSchedulerName { get; set; } = LrSchedulers.Constant;
    /// <summary>Linear warm-up: step s &lt; W uses lr·(s+1)/W (per SAE).</summary>
    [JsonPropertyName("lr_warm_up_steps")] public long LrWarmUpSteps { get; set; }
    /// <summary>Length of the final decay; for linear/cosine 0 means every step after warm-up (per SAE).</summary>
    [JsonPropertyName("lr_decay_steps")] public long LrDecaySteps { get; set; }
    /// <summary>Cosine cycles of "cosineannealingwarmrestarts" between warm-up and decay (SAELens; per SAE): each lasts
    /// (steps − lr_warm_up_steps − lr_decay_steps) // n_restart_cycles steps. Other schedules take only 1.</summary>
    [JsonPropertyName("n_restart_cycles")] public int NRestartCycles { get; set; } = 1;
    /// <summary>Adam β1 (per SAE); null means the architecture default.</summary>
    [JsonPropertyName("adam_beta1")] public double? AdamBeta1 { get; set; }
    /// <summary>Adam β2 (per SAE); null means the architecture default.</summary>
    [JsonPropertyName("adam_beta2")] public double? AdamBeta2 { get; set; }
    /// <summary>Adam ε (per SAE).</summary>
    [JsonPropertyName("adam_epsilon")] public double AdamEpsilon { get; set; } = 1e-8;
    /// <summary>Sparsity warm-up: step s &lt; N uses SparsityScale s/N (per SAE; SAELens's L1 scheduler).</summary>
    [JsonPropertyName("l1_warm_up_steps")] public long L1WarmUpSteps { get; set; }
    /// <summary>Clip the SAE's total gradient norm to this value; null or 0 means no clipping (per SAE).</summary>
    [JsonPropertyName("max_grad_norm")] public double? MaxGradNorm { get; set; }

    // ---- per SAE: initialisation ----

    /// <summary>Initialise weights before training (per SAE); false trains the SAE from its current weights.</summary>
    [JsonPropertyName("initialize_weights")] public bool InitializeWeights { get; set; } = true;
    /// <summary>"geometric_median", "mean" or "zeros" (per SAE), computed on the initial sample of targets.</summary>
    [JsonPropertyName("b_dec_init_method")] public string BDecInitMethod { get; set; } = "zeros";
    /// <summary>Norm of the random decoder rows at initialisation (per SAE).</summary>
    [JsonPropertyName("decoder_init_norm")] public double DecoderInitNorm { get; set; } = 0.1;
    /// <summary>W_enc = W_decᵀ at initialisation (per SAE); false draws encoder columns independently.</summary>
    [JsonPropertyName("init_encoder_as_decoder_transpose")] public bool InitEncoderAsDecoderTranspose { get; set; } = true;
    /// <summary>SAELens's <c>from_pretrained_path</c> (per SAE): the SAE holds the weights of this saved SAE, which work on
    /// the activations as they are. It is not initialised, and under <see cref="NormalizeActivations"/>
    /// "expected_average_only_in" its weights are rescaled into the training scale once the scale is estimated (the
    /// inverse of the fold applied to the result), so that it starts as the same function. Kept in checkpoints.</summary>
    [JsonPropertyName("from_pretrained_path")] public string? FromPretrainedPath { get; set; }

    // ---- per SAE: dead-latent resampling (Towards Monosemanticity) ----

    /// <summary>Steps (0-based, before which the resampling happens) at which dead latents are resampled (per SAE).</summary>
    [JsonPropertyName("resample_steps")] public long[]? ResampleSteps { get; set; }
    /// <summary>Rows drawn from the source to choose resampling inputs (per SAE).</summary>
    [JsonPropertyName("resample_sample_rows")] public int ResampleSampleRows { get; set; } = 16384;

    // ---- shared by every SAE of a run ----

    /// <summary>Number of optimiser steps; with null, training_tokens / train_batch_size_tokens.</summary>
    [JsonPropertyName("total_training_steps")] public long? TotalTrainingSteps { get; set; }
    /// <summary>Token budget of the run (SAELens <c>training_tokens</c>); gives the steps when <see cref="TotalTrainingSteps"/> is null.</summary>
    [JsonPropertyName("training_tokens")] public long? TrainingTokens { get; set; }
    /// <summary>Rows per batch.</summary>
    [JsonPropertyName("train_batch_size_tokens")] public int TrainBatchSizeTokens { get; set; } = 4096;
    /// <summary>Seed of the weight initialisation and the resampling draws, mixed with the SAE's slot index (SAELens <c>seed</c>); the activation source has its own.</summary>
    [JsonPropertyName("seed")] public long Seed { get; set; } = 42;
    /// <summary>"none" or "expected_average_only_in" (scale so E‖x‖ = √d_in during training; folded into the weights of the result).</summary>
    [JsonPropertyName("normalize_activations")] public string NormalizeActivations { get; set; } = "none";
    /// <summary>Batches read at the start to estimate the normalisation factor.</summary>
    [JsonPropertyName("n_batches_for_norm_estimate")] public int NBatchesForNormEstimate { get; set; } = 100;
    /// <summary>Rows read at the start for the b_dec initialisation (geometric median or mean).</summary>
    [JsonPropertyName("b_dec_init_rows")] public int BDecInitRows { get; set; } = 8192;
    /// <summary>A latent is dead after this many training rows (tokens) without firing; null means
    /// <see cref="DefaultDeadFeatureWindow"/> of the run (the trainer records the value it used).</summary>
    [JsonPropertyName("dead_feature_window")] public long? DeadFeatureWindow { get; set; }
    /// <summary>Steps over which firing counts are accumulated for the sparsity statistics.</summary>
    [JsonPropertyName("feature_sampling_window")] public int FeatureSamplingWindow { get; set; } = 2000;
    /// <summary>Folder for checkpoints (step_NNNNNNNNN (zero-padded step number) sub-folders); null means no checkpoints.</summary>
    [JsonPropertyName("checkpoint_path")] public string? CheckpointPath { get; set; }
    /// <summary>Checkpoint every N steps; 0 means only when the run ends, is cancelled or stopped.</summary>
    [JsonPropertyName("checkpoint_every_steps")] public long CheckpointEverySteps { get; set; }
    /// <summary>Most recent checkpoints kept; older ones are deleted.</summary>
    [JsonPropertyName("keep_checkpoints")] public int KeepCheckpoints { get; set; } = 2;
    /// <summary>Metrics are computed, logged and reported every N steps.</summary>
    [JsonPropertyName("log_every_steps")] public int LogEverySteps { get; set; } = 100;
    /// <summary>Folder for train_log.jsonl (and TensorBoard events); null means checkpoint_path, and no file log if both are null.</summary>
    [JsonPropertyName("log_path")] public string? LogPath { get; set; }
    /// <summary>Also write TensorBoard event files under log_path/tensorboard.</summary>
    [JsonPropertyName("tensorboard")] public bool TensorBoard { get; set; }
    /// <summary>Where the SAEs train (SAELens <c>device</c>): <c>cpu</c>, <c>cuda</c> or <c>cuda:N</c> (<see cref="ComputeDevice.Parse"/>;
    /// CUDA needs a build with <c>-p:TorchBackend=cuda</c>). The trainer moves the SAEs there, creates its optimiser state
    /// and statistics there and moves each batch of the (CPU) activation source there. Null: the device the SAEs are on
    /// (new SAEs are on the CPU); the trainer records the device it used.</summary>
    [JsonPropertyName("device")] public string? Device { get; set; }

    /// <summary>Names of the fields that must be equal for every SAE of one run.</summary>
    public static readonly IReadOnlyList<string> SharedFields =
    [
        "total_training_steps", "training_tokens", "train_batch_size_tokens", "seed", "normalize_activations",
        "n_batches_for_norm_estimate", "b_dec_init_rows", "dead_feature_window", "feature_sampling_window",
        "checkpoint_path", "checkpoint_every_steps", "keep_checkpoints", "log_every_steps", "log_path", "tensorboard", "device",
    ];

    internal static readonly JsonSerializerOptions JsonOptions = new() { WriteIndented = true };

    /// <summary>The config as indented JSON with the SAELens field names.</summary>
    public string ToJson() => JsonSerializer.Serialize(this, JsonOptions);

    /// <summary>Reads a config written by <see cref="ToJson"/>; <paramref name="source"/> names it in errors.</summary>
    public static TrainerConfig FromJson(string json, string source = "trainer config") =>
        JsonSerializer.Deserialize<TrainerConfig>(json, JsonOptions)
        ?? throw new SaeSharpException($"{source}: empty trainer config");

    /// <summary>A deep copy (through JSON).</summary>
    public TrainerConfig Clone() => FromJson(ToJson());

    /// <summary>Steps of the run.</summary>
    [JsonIgnore]
    public long Steps => TotalTrainingSteps ?? (TrainingTokens is long t ? t / TrainBatchSizeTokens : 0);

    /// <summary>
    /// The dead-latent window of a run of <paramref name="runTokens"/> training rows when none is given:
    /// min(10M, max(one batch, run/20)). sparsify's and dictionary_learning's 10M tokens assume runs of hundreds of
    /// millions of tokens; in a shorter run that window is never reached, AuxK never starts and no latent ever counts
    /// as dead. A twentieth of the run lets AuxK work for 95 % of it and calls dead only latents that fire less than
    /// once in a twentieth of the run.
    /// </summary>
    public static long DefaultDeadFeatureWindow(long runTokens, int batchRows) =>
        Math.Min(10_000_000, Math.Max(batchRows, runTokens / 20));

    /// <summary>The dead-latent window in rows: the given one, or <see cref="DefaultDeadFeatureWindow"/> of this run.</summary>
    [JsonIgnore]
    public long ResolvedDeadFeatureWindow => DeadFeatureWindow ?? DefaultDeadFeatureWindow(Steps * TrainBatchSizeTokens, TrainBatchSizeTokens);

    /// <summary>Checks ranges and names; throws naming the field and value.</summary>
    public void Validate(string source = "trainer config")
    {
        if (TrainBatchSizeTokens <= 0) throw Bad("train_batch_size_tokens", TrainBatchSizeTokens, "a positive row count");
        if (TotalTrainingSteps is null && TrainingTokens is null)
            throw new SaeSharpException($"{source}: set total_training_steps or training_tokens");
        if (Steps <= 0) throw Bad("total_training_steps", Steps, "a positive step count");
        if (Lr is < 0 || Lr is double l && !double.IsFinite(l)) throw Bad("lr", Lr, "a non-negative, finite learning rate (0 leaves the weights as they are)");
        if (LrEnd is < 0) throw Bad("lr_end", LrEnd, "a non-negative learning rate");
        if (!LrSchedulers.All.Contains(NormalizedScheduler))
            throw Bad("lr_scheduler_name", LrSchedulerName, string.Join("|", LrSchedulers.All));
        if (LrWarmUpSteps < 0) throw Bad("lr_warm_up_steps", LrWarmUpSteps, "≥ 0");
        if (LrDecaySteps < 0) throw Bad("lr_decay_steps", LrDecaySteps, "≥ 0");
        bool cosineAnnealing = NormalizedScheduler is LrSchedulers.CosineAnnealing or LrSchedulers.CosineAnnealingWarmRestarts;
        if (LrWarmUpSteps + LrDecaySteps > Steps || (cosineAnnealing && LrWarmUpSteps + LrDecaySteps >= Steps))
            throw new SaeSharpException($"{source}: lr_warm_up_steps ({LrWarmUpSteps}) + lr_decay_steps ({LrDecaySteps}) leave no steps of the {Steps} training steps for the schedule");
        if (cosineAnnealing && LrDecaySteps > 0 && LrEnd == 0)
            throw new SaeSharpException($"{source}: {NormalizedScheduler} with lr_decay_steps needs lr_end > 0 (the decay runs from lr_end to 0, as in SAELens)");
        if (NRestartCycles <= 0) throw Bad("n_restart_cycles", NRestartCycles, "a positive number of cycles");
        if (NormalizedScheduler == LrSchedulers.CosineAnnealingWarmRestarts && (Steps - LrWarmUpSteps - LrDecaySteps) / NRestartCycles <= 0)
            throw new SaeSharpException($"{source}: n_restart_cycles {NRestartCycles} is more cycles than the {Steps - LrWarmUpSteps - LrDecaySteps} steps between warm-up and decay (each cycle lasts (steps − lr_warm_up_steps − lr_decay_steps) // n_restart_cycles steps, as in SAELens)");
        if (NRestartCycles != 1 && NormalizedScheduler != LrSchedulers.CosineAnnealingWarmRestarts)
            throw new SaeSharpException($"{source}: n_restart_cycles {NRestartCycles} applies to lr_scheduler_name \"cosineannealingwarmrestarts\" only, not \"{LrSchedulerName}\": drop the field (1) or use that schedule");
        if (AdamBeta1 is < 0 or >= 1) throw Bad("adam_beta1", AdamBeta1, "in [0, 1)");
        if (AdamBeta2 is < 0 or >= 1) throw Bad("adam_beta2", AdamBeta2, "in [0, 1)");
        if (AdamEpsilon <= 0) throw Bad("adam_epsilon", AdamEpsilon, "positive");
        if (L1WarmUpSteps < 0) throw Bad("l1_warm_up_steps", L1WarmUpSteps, "≥ 0");
        if (MaxGradNorm is < 0) throw Bad("max_grad_norm", MaxGradNorm, "≥ 0");
        if (BDecInitMethod is not ("geometric_median" or "mean" or "zeros"))
            throw Bad("b_dec_init_method", BDecInitMethod, "geometric_median|mean|zeros");
        if (DecoderInitNorm <= 0) throw Bad("decoder_init_norm", DecoderInitNorm, "positive");
        if (ResampleSteps is { } rs && rs.Any(s => s < 0)) throw Bad("resample_steps", string.Join(",", rs), "non-negative steps");
        if (ResampleSampleRows <= 0) throw Bad("resample_sample_rows", ResampleSampleRows, "positive");
        if (NormalizeActivations is not ("none" or "expected_average_only_in"))
            throw Bad("normalize_activations", NormalizeActivations, "none|expected_average_only_in");
        if (NBatchesForNormEstimate <= 0) throw Bad("n_batches_for_norm_estimate", NBatchesForNormEstimate, "positive");
        if (BDecInitRows <= 0) throw Bad("b_dec_init_rows", BDecInitRows, "positive");
        if (DeadFeatureWindow is <= 0) throw Bad("dead_feature_window", DeadFeatureWindow, "a positive token count");
        if (FeatureSamplingWindow <= 0) throw Bad("feature_sampling_window", FeatureSamplingWindow, "a positive step count");
        if (CheckpointEverySteps < 0) throw Bad("checkpoint_every_steps", CheckpointEverySteps, "≥ 0");
        if (KeepCheckpoints <= 0) throw Bad("keep_checkpoints", KeepCheckpoints, "positive");
        if (LogEverySteps <= 0) throw Bad("log_every_steps", LogEverySteps, "positive");

        SaeSharpException Bad(string field, object? value, string expected) =>
            new($"{source}: {field} = {value?.ToString() ?? "null"} is invalid, expected {expected}");
    }

    [JsonIgnore]
    internal string NormalizedScheduler => LrSchedulerName.ToLowerInvariant();

    /// <summary>Throws naming the first shared field that differs between this run config and an SAE's own config.</summary>
    internal void CheckSharedFieldsEqual(TrainerConfig other, string saeName)
    {
        var a = JsonSerializer.SerializeToNode(this, JsonOptions)!.AsObject();
        var b = JsonSerializer.SerializeToNode(other, JsonOptions)!.AsObject();
        foreach (var f in SharedFields)
        {
            if (!JsonNode.DeepEquals(a[f], b[f]))
                throw new SaeSharpException(
                    $"SAE '{saeName}': {f} = {b[f]?.ToJsonString() ?? "null"} differs from the run's {a[f]?.ToJsonString() ?? "null"}; it must be shared by every SAE of one run");
        }
    }
}
