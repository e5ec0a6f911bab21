using System.Text.Json;
using System.Text.Json.Nodes;
using System.Text.Json.Serialization;
using SaeSharp.Kernels;
using SaeSharp.Saes;

namespace SaeSharp.Training;

/// <summary>
/// What to train, as <c>sae train</c> takes it: its flags, or the same fields in a JSON file (<c>--config</c>) under
/// SAELens's names (<c>architecture</c>, <c>d_sae</c>, <c>l1_coefficient</c>; SAELens's pre-6.0 <c>expansion_factor</c>
/// and the older <c>arch</c>, <c>dict_size</c>, <c>expansion</c>, <c>l1</c> are still read), which may also hold any
/// <see cref="TrainerConfig"/> field (lr_scheduler_name, l1_warm_up_steps, resample_steps, …) and the model and data fields
/// of SAELens's runner config (model_name, hook_name, dataset_path, context_size, d_in, …; <see cref="RunnerConfigFields"/>).
/// <see cref="Pipelines.TrainingPlan"/> turns the settings into a run with the defaults the command uses.
/// <code>
/// var s = new TrainingSettings { Activations = "acts.safetensors", Architecture = "topk", K = 32, ExpansionFactor = 8, Out = "runs/topk" };
/// using var plan = TrainingPlan.ForActivations(s);
/// var result = plan.Run();
/// </code>
/// </summary>
public sealed class TrainingSettings
{
    /// <summary><c>normalize_activations</c> of a run whose config does not name one: SAELens's
    /// <c>expected_average_only_in</c> (inputs scaled to E‖x‖ = √d_in, folded back into the saved weights).</summary>
    public const string DefaultNormalizeActivations = "expected_average_only_in";

    /// <summary>Activation file (.safetensors/.npy, [N, d_in]), folder of shards, or <c>sae cache</c> folder.</summary>
    [JsonPropertyName("activations")] public string? Activations { get; set; }
    /// <summary>Recipe(s), comma-separated: <see cref="SaeRecipes.Names"/> (<c>--arch</c>). Not set: topk, or with
    /// <see cref="FromPretrainedPath"/> the recipe of the loaded SAE's architecture (<see cref="SaeRecipes.RecipeFor"/>).</summary>
    [JsonPropertyName("architecture")]
    public string Architecture
    {
        get => _architecture;
        set
        {
            _architecture = value;
            ArchitectureGiven = true;
        }
    }
    private string _architecture = "topk";

    /// <summary>Whether <see cref="Architecture"/> was set (in the file, by a flag or in code).</summary>
    [JsonIgnore] public bool ArchitectureGiven { get; private set; }

    /// <summary>SAELens's <c>from_pretrained_path</c> (<c>--from-pretrained</c>): fine-tune this saved SAE (any path
    /// <see cref="Interop.SaeLoader"/> loads: a folder or file of a supported format, <c>RELEASE/SAE_ID</c>,
    /// <c>hf:ORG/REPO[/PATH]</c>) instead of initialising one. Its architecture, d_sae, hook and head are the run's
    /// unless given, and must agree when given; one SAE per run.</summary>
    [JsonPropertyName("from_pretrained_path")] public string? FromPretrainedPath { get; set; }
    /// <summary>SAELens's <c>hook_head_index</c> (<c>--hook-head-index</c>): train on this head of an attention hook
    /// [batch, pos, n_heads, d_head] (attn.hook_z, hook_q, hook_k, hook_v), d_in = d_head; recorded in cfg.json's
    /// metadata. Runs from a model only.</summary>
    [JsonPropertyName("hook_head_index")] public int? HookHeadIndex { get; set; }
    /// <summary>SAELens's <c>reshape_activations</c>: "none" (default), or "hook_z" for an SAE on <c>attn.hook_z</c> with its
    /// heads flattened to n_heads·d_head (as SaeSharp always trains a hook with heads); written to cfg.json. A run from a
    /// saved SAE keeps the SAE's unless this is "hook_z".</summary>
    [JsonPropertyName("reshape_activations")] public string ReshapeActivations { get; set; } = "none";
    /// <summary>SAELens's <c>apply_b_dec_to_input</c>: whether the encoder sees x − b_dec (true, the default of SAEs) or x
    /// (false); written to cfg.json. Null: true, and false for transcoders, which SAELens refuses it for. A run from a saved
    /// SAE keeps the SAE's; a resumed run the checkpoint's.</summary>
    [JsonPropertyName("apply_b_dec_to_input")] public bool? ApplyBDecToInput { get; set; }
    /// <summary>Active latents per row (TopK family).</summary>
    [JsonPropertyName("k")] public int? K { get; set; }
    /// <summary>Sparsity coefficient λ (<c>--l1</c>); null: the recipe's (<see cref="SaeRecipes.DefaultSparsityCoefficient"/>).</summary>
    [JsonPropertyName("l1_coefficient")] public double? L1Coefficient { get; set; }
    /// <summary>Adapt λ during training to end near this L0 (the recipes with a sparsity coefficient: relu, relu-april, gated, jumprelu and the skip transcoders).</summary>
    [JsonPropertyName("target_l0")] public double? TargetL0 { get; set; }
    /// <summary>Latents d_sae (<c>--dict-size</c>); null: <see cref="ExpansionFactor"/> × d_in.</summary>
    [JsonPropertyName("d_sae")] public int? DSae { get; set; }
    /// <summary>d_sae = expansion_factor × d_in when <see cref="DSae"/> is not given (<c>--expansion</c>; default 8).</summary>
    [JsonPropertyName("expansion_factor")] public int? ExpansionFactor { get; set; }
    /// <summary>Rows per optimiser step (default 4096).</summary>
    [JsonPropertyName("batch_size")] public int BatchSize { get; set; } = 4096;
    /// <summary>Training steps (SAELens's <c>total_training_steps</c> property, also read under that name); null: <see cref="TrainingTokens"/> / batch size, else
    /// the token budget / batch size when training on a model with one, else 1000.</summary>
    [JsonPropertyName("steps")] public long? Steps { get; set; }
    /// <summary>SAELens's run length in tokens (rows): <see cref="Steps"/> = training_tokens / batch size when no step
    /// count is given.</summary>
    [JsonPropertyName("training_tokens")] public long? TrainingTokens { get; set; }
    /// <summary>Learning rate; null: the recipe's (<see cref="SaeRecipes.DefaultLearningRate"/>).</summary>
    [JsonPropertyName("lr")] public double? Lr { get; set; }
    /// <summary>Seed of initialisation and shuffling (default 42).</summary>
    [JsonPropertyName("seed")] public long Seed { get; set; } = 42;
    /// <summary>Output folder.</summary>
    [JsonPropertyName("out")] public string? Out { get; set; }
    /// <summary>Held-out rows; null: <see cref="Activations.ActivationSplit.DefaultEvalRowsFor"/> (16384, or a tenth of a small file).</summary>
    [JsonPropertyName("eval_rows")] public long? EvalRows { get; set; }
    /// <summary>Checkpoint every N steps; 0: a tenth of the run.</summary>
    [JsonPropertyName("checkpoint_every")] public long CheckpointEvery { get; set; }
    /// <summary>Tensor holding the targets in the activation files (transcoders); a cache with a target hook names it "targets".</summary>
    [JsonPropertyName("target_name")] public string? TargetName { get; set; }
    /// <summary>features.safetensors of synthetic data: adds mmcs, recovered_fraction and SAELens 6.37.6's synthetic-data metrics (mcc, uniqueness, ...; docs/metrics.md) to metrics.json.</summary>
    [JsonPropertyName("ground_truth")] public string? GroundTruth { get; set; }
    /// <summary>bfloat16 matmuls in training (<see cref="Saes.SaeTrainingOptions.Autocast"/>).</summary>
    [JsonPropertyName("autocast")] public bool Autocast { get; set; }
    /// <summary>TopK family: auto, on or off (<see cref="Saes.SaeTrainingOptions.CandidatePass"/>).</summary>
    [JsonPropertyName("candidate_pass")] public string CandidatePass { get; set; } = "auto";
    /// <summary>No choice made from timings (<c>--deterministic</c>): the candidate pass's <c>auto</c> runs as <c>off</c>, and
    /// ReLU SAEs switch to their sparse pass at a fixed density (<see cref="Saes.SparsePassSwitch.PriorDensity"/>), so that
    /// two runs with the same seed, and a run and its resume, give the same weights bit for bit.</summary>
    [JsonPropertyName("deterministic")] public bool Deterministic { get; set; }
    /// <summary>Passes over the data before it runs out (<c>--epochs</c>); 0: as many as the run needs. Null: 1 for text
    /// (<see cref="Pipelines.TrainingPlan.ForModel"/>), no limit for activation files (<see cref="Pipelines.TrainingPlan.ForActivations"/>).</summary>
    [JsonPropertyName("epochs")] public int? Epochs { get; set; }

    /// <summary>SAELens's <c>l0_coefficient</c>: the sparsity coefficient λ of the jumprelu recipes (jumprelu, jumprelu_skip_transcoder: their L0 penalty). In a run
    /// of several architectures <see cref="L1Coefficient"/> then sets the others' λ only; without it
    /// <see cref="L1Coefficient"/> sets jumprelu's too. Null: the recipe's (0.5).</summary>
    [JsonPropertyName("l0_coefficient")] public double? L0Coefficient { get; set; }
    /// <summary>SAELens's <c>l0_warm_up_steps</c>: jumprelu's λ warm-up in steps (the jumprelu SAE's
    /// <see cref="TrainerConfig.L1WarmUpSteps"/>); null: the recipe's (T/20), or <c>l1_warm_up_steps</c> when given.</summary>
    [JsonPropertyName("l0_warm_up_steps")] public long? L0WarmUpSteps { get; set; }
    /// <summary>SAELens's <c>aux_loss_coefficient</c>: the coefficient of the TopK family's AuxK term
    /// (<see cref="Saes.SaeTrainingOptions.AuxKCoefficient"/>; topk, batchtopk, matryoshka). SaeSharp's AuxK term is
    /// normalised by the residual's variance (OpenAI, dictionary_learning), SAELens's is not, so the same number is not the
    /// same weight. Null: 1/32.</summary>
    [JsonPropertyName("aux_loss_coefficient")] public double? AuxLossCoefficient { get; set; }
    /// <summary>SAELens's <c>topk_threshold_lr</c>: the rate of the running BatchTopK inference threshold
    /// θ ← (1 − r)·θ + r·m (batchtopk, matryoshka; <see cref="Saes.SaeTrainingOptions.ThresholdMomentum"/> = 1 − r).
    /// Null: the recipe's (1 − 0.999, raised in short runs).</summary>
    [JsonPropertyName("topk_threshold_lr")] public double? TopKThresholdLr { get; set; }
    /// <summary>SAELens's <c>matryoshka_widths</c>: cumulative prefix widths of the matryoshka recipe, strictly increasing,
    /// the last equal to d_sae. Null: d_sae/16, /8, /4, /2, d_sae.</summary>
    [JsonPropertyName("matryoshka_widths")] public int[]? MatryoshkaWidths { get; set; }
    /// <summary>SAELens 6.37's <c>use_matryoshka_aux_loss</c>: true gives each matryoshka level its own AuxK term, in which
    /// that level's dead latents reconstruct the residual of the prefix through it
    /// (<see cref="Saes.SaeTrainingOptions.UseMatryoshkaAuxLoss"/>). Null: false (SAELens's default).</summary>
    [JsonPropertyName("use_matryoshka_aux_loss")] public bool? UseMatryoshkaAuxLoss { get; set; }
    /// <summary>SAELens's <c>rescale_acts_by_decoder_norm</c> (topk, batchtopk, matryoshka;
    /// <see cref="Saes.SaeTrainingOptions.RescaleActsByDecoderNorm"/>): false trains a plain TopK with free decoder rows
    /// (from <c>decoder_init_norm</c>) and writes false to a topk cfg.json. Null: true (unit-norm decoder rows). A run from
    /// a saved SAE keeps the value its cfg.json holds, if any (as SAELens loads it); a resumed run the checkpoint's.</summary>
    [JsonPropertyName("rescale_acts_by_decoder_norm")] public bool? RescaleActsByDecoderNorm { get; set; }
    /// <summary>SAELens's <c>jumprelu_bandwidth</c>: the straight-through bandwidth ε of jumprelu
    /// (<see cref="Saes.SaeTrainingOptions.Bandwidth"/>). Null: 0.001 (0.05 with <see cref="TargetL0"/>).</summary>
    [JsonPropertyName("jumprelu_bandwidth")] public double? JumpReluBandwidth { get; set; }
    /// <summary>SAELens's <c>jumprelu_init_threshold</c>: jumprelu's initial threshold θ (with <see cref="TargetL0"/>, the
    /// floor of the thresholds set from the data; <see cref="Saes.SaeTrainingOptions.InitialThreshold"/>). Null: 0.001.</summary>
    [JsonPropertyName("jumprelu_init_threshold")] public double? JumpReluInitThreshold { get; set; }
    /// <summary>SAELens's <c>jumprelu_sparsity_loss_mode</c>: only <c>"step"</c> (the L0 penalty, which jumprelu uses) is
    /// implemented; Anthropic's <c>"tanh"</c> is refused.</summary>
    [JsonPropertyName("jumprelu_sparsity_loss_mode")] public string? JumpReluSparsityLossMode { get; set; }
    /// <summary>SAELens's <c>pre_act_loss_coefficient</c>: jumprelu's pre-activation loss on dead latents
    /// (<see cref="Saes.SaeTrainingOptions.PreActLossCoefficient"/>; 0 turns it off). Null: off (1e-2 with
    /// <see cref="TargetL0"/>).</summary>
    [JsonPropertyName("pre_act_loss_coefficient")] public double? PreActLossCoefficient { get; set; }

    /// <summary>SAELens's <c>lp_norm</c> (relu, relu-april; <c>--lp-norm</c>): the sparsity term is λ·mean_n ‖f_n ⊙ w‖_p
    /// with w the decoder-row norms (relu-april; relu holds them at 1), any p &gt; 0. Null: 1, the L1 term (fused kernels,
    /// sparse pass and autocast; p ≠ 1 trains on dense float32 torch operations).</summary>
    [JsonPropertyName("lp_norm")] public double? LpNorm { get; set; }

    /// <summary>SAELens's <c>residual_threshold</c> (matching_pursuit): a row's pursuit stops once its residual norm falls
    /// below it, in the training scale (inputs normalised to E‖x‖ = √d_in unless normalize_activations says otherwise);
    /// 0: no residual stop. Null: 1e-2.</summary>
    [JsonPropertyName("residual_threshold")] public double? ResidualThreshold { get; set; }
    /// <summary>SAELens's <c>max_iterations</c> (matching_pursuit): the most latents a row selects. Null: d_in.</summary>
    [JsonPropertyName("max_iterations")] public int? MaxIterations { get; set; }
    /// <summary>SAELens's <c>stop_on_duplicate_support</c> (matching_pursuit): stop a row once an iteration leaves its active
    /// latents unchanged. Null: true.</summary>
    [JsonPropertyName("stop_on_duplicate_support")] public bool? StopOnDuplicateSupport { get; set; }

    /// <summary>SAELens's <c>model_name</c>: the model to harvest from, as <c>--model</c> takes it (a model folder,
    /// <c>builtin</c>, or a Hugging Face id such as <c>gpt2</c> or <c>EleutherAI/pythia-70m</c>, from the hub cache or
    /// downloaded). Null: train on <see cref="Activations"/>.</summary>
    [JsonPropertyName("model_name")] public string? ModelName { get; set; }
    /// <summary>The model activation files were harvested from, for a run that names one but trains on the files: SAELens's
    /// <c>model_name</c> in a runner config with <c>use_cached_activations</c> true, or beside <c>--activations</c>. Unlike
    /// <see cref="ModelName"/> it does not make the run a run on a model: only exclude_special_tokens true reads it (the
    /// special tokens of files that record no model, <see cref="Pipelines.ActivationFileExclusion"/>), and cfg.json records it
    /// as model_name where the files name no model.</summary>
    [JsonIgnore] public string? ActivationsModelName { get; set; }
    /// <summary>SAELens's <c>hook_name</c> (<c>--hook</c>).</summary>
    [JsonPropertyName("hook_name")] public string? HookName { get; set; }
    /// <summary>SAELens's <c>dataset_path</c> (<c>--dataset</c>): a local file or folder, or a Hugging Face dataset id
    /// <c>ORG/NAME</c> read as <c>hf:ORG/NAME</c> (<see cref="DatasetSpec"/>).</summary>
    [JsonPropertyName("dataset_path")] public string? DatasetPath { get; set; }
    /// <summary>SAELens's <c>context_size</c> (<c>--context-size</c>).</summary>
    [JsonPropertyName("context_size")] public int? ContextSize { get; set; }
    /// <summary>SAELens's <c>prepend_bos</c> (false: <c>--no-prepend-bos</c>).</summary>
    [JsonPropertyName("prepend_bos")] public bool? PrependBos { get; set; }
    /// <summary>SAELens's <c>exclude_special_tokens</c> as a boolean (<c>--exclude-special-tokens</c>); null when absent or a
    /// list (<see cref="ExcludeTokenIds"/>).</summary>
    [JsonPropertyName("exclude_special_tokens")] public bool? ExcludeSpecialTokens { get; set; }
    /// <summary>SAELens's <c>exclude_special_tokens</c> as a list of token ids (<c>--exclude-token-ids</c>): exactly those
    /// positions are dropped.</summary>
    [JsonIgnore] public long[]? ExcludeTokenIds { get; set; }
    /// <summary>SAELens's <c>seqpos_slice</c> (<c>--seqpos-slice</c>): the positions of each window trained on, e.g.
    /// <c>[1, null]</c>; null: all.</summary>
    [JsonPropertyName("seqpos_slice")] public Saes.SeqposSlice? SeqposSlice { get; set; }
    /// <summary>SAELens's <c>disable_concat_sequences</c> (<c>--disable-concat-sequences</c>): one window per document.</summary>
    [JsonPropertyName("disable_concat_sequences")] public bool? DisableConcatSequences { get; set; }
    /// <summary>SAELens's <c>sequence_separator_token</c> (<c>--sequence-separator-token</c>): "bos", "eos", "sep", a token
    /// id, or null in the file (<see cref="Data.PretokenizeToken.None"/>); absent: "bos".</summary>
    [JsonPropertyName("sequence_separator_token")] public Data.PretokenizeToken? SequenceSeparatorToken { get; set; }
    /// <summary>SAELens's <c>d_in</c>: checked against the width of the activations at the hook.</summary>
    [JsonPropertyName("d_in")] public int? DIn { get; set; }
    /// <summary>SAELens's <c>store_batch_size_prompts</c>: context windows per model run
    /// (<see cref="Pipelines.ModelDataOptions.BatchSizePrompts"/>).</summary>
    [JsonPropertyName("store_batch_size_prompts")] public int? StoreBatchSizePrompts { get; set; }
    /// <summary>SAELens's <c>model_from_pretrained_kwargs</c>: the weight processing flags (fold_ln,
    /// center_writing_weights, center_unembed, fold_value_biases; <c>--fold-ln</c>, <c>--center-writing-weights</c>) and
    /// <c>dtype</c>, the dtype the model runs in (<c>--dtype</c>). Other keys are refused.</summary>
    [JsonPropertyName("model_from_pretrained_kwargs")] public Dictionary<string, JsonElement>? ModelFromPretrainedKwargs { get; set; }
    /// <summary>SAELens's <c>n_batches_in_buffer</c>: in a run from a model, the shuffle buffer holds n_batches_in_buffer ×
    /// store_batch_size_prompts context windows (<see cref="Pipelines.ModelDataOptions.BufferBatches"/>, <c>--buffer-batches</c>).</summary>
    [JsonPropertyName("n_batches_in_buffer")] public int? NBatchesInBuffer { get; set; }
    /// <summary>SAELens 6.37's <c>activations_mixing_fraction</c>: the fraction of the shuffle buffer kept back each round to
    /// mix with new activations (<see cref="Activations.ModelActivationSourceOptions.MixingFraction"/>,
    /// <c>--activations-mixing-fraction</c>); 0 serves the activations in order. Null: 0.5 (SAELens's default). A run on
    /// activation files takes 0 (file order) or 0.5 only.</summary>
    [JsonPropertyName("activations_mixing_fraction")] public double? ActivationsMixingFraction { get; set; }
    /// <summary>SAELens's <c>dead_feature_window</c>, in training steps: a latent is dead once it has not fired for more than
    /// this many steps (SAELens's <c>n_forward_passes_since_fired &gt; dead_feature_window</c>, the mask of its AuxK and
    /// pre-activation losses). The plan sets the trainer's window, which counts rows
    /// (<see cref="TrainerConfig.DeadFeatureWindow"/>), to (dead_feature_window + 1) × batch size: the same test at a fixed
    /// batch size. Null: <see cref="TrainerConfig.DefaultDeadFeatureWindow"/>, or a window set on <see cref="Trainer"/> in code.</summary>
    [JsonPropertyName("dead_feature_window")] public long? DeadFeatureWindowSteps { get; set; }
    /// <summary>SAELens's <c>n_checkpoints</c>: without <see cref="CheckpointEvery"/>, checkpoint every steps / n steps.</summary>
    [JsonPropertyName("n_checkpoints")] public int? NCheckpoints { get; set; }

    /// <summary>One line per group of runner-config fields that <see cref="FromJson"/> accepted but that have no effect in
    /// SaeSharp (<see cref="RunnerConfigFields"/>, <see cref="RunnerFieldUse.Ignored"/>), for the command to print.</summary>
    [JsonIgnore] public List<string> Notes { get; } = [];

    /// <summary>Where the settings were read from (<see cref="FromJson"/>'s source, e.g. the config file), for errors;
    /// null for settings built in code.</summary>
    [JsonIgnore] public string? Source { get; set; }

    /// <summary>The run may replace a previous run's outputs in <see cref="Out"/> (<c>--force</c>;
    /// <see cref="Pipelines.TrainingRunOptions.Overwrite"/>).</summary>
    [JsonIgnore] public bool Overwrite { get; set; }

    /// <summary>The trainer fields of the run (schedules, normalisation, resampling, …). The plan sets the run length,
    /// batch size, seed and cadence; the recipes fill every field not in <see cref="GivenTrainerFields"/>.</summary>
    [JsonIgnore] public TrainerConfig Trainer { get; set; } = new() { NormalizeActivations = DefaultNormalizeActivations };

    /// <summary>Trainer fields (snake_case) the user gave: the recipes' run-length rules leave them alone.</summary>
    [JsonIgnore] public HashSet<string> GivenTrainerFields { get; } = new(StringComparer.Ordinal);

    /// <summary>Older field names and the SAELens names that replace them.</summary>
    public static readonly IReadOnlyList<(string Old, string Name)> Aliases =
        [("arch", "architecture"), ("dict_size", "d_sae"), ("expansion", "expansion_factor"), ("l1", "l1_coefficient")];

    /// <summary>SAELens's architecture-specific training fields that the settings read, each with the cfg.json
    /// architectures (<see cref="SaeArchitectures"/>) whose recipes use it. A run none of whose recipes uses a given field
    /// is refused (<see cref="CheckArchitectureFields"/>).</summary>
    public static readonly IReadOnlyList<(string Field, string[] Architectures)> ArchitectureFields =
    [
        ("l0_coefficient", [SaeArchitectures.JumpReLU]),
        ("l0_warm_up_steps", [SaeArchitectures.JumpReLU]),
        ("jumprelu_bandwidth", [SaeArchitectures.JumpReLU]),
        ("jumprelu_init_threshold", [SaeArchitectures.JumpReLU]),
        ("jumprelu_sparsity_loss_mode", [SaeArchitectures.JumpReLU]),
        ("pre_act_loss_coefficient", [SaeArchitectures.JumpReLU]),
        ("aux_loss_coefficient", [SaeArchitectures.TopK, SaeArchitectures.BatchTopK, SaeArchitectures.MatryoshkaBatchTopK]),
        ("topk_threshold_lr", [SaeArchitectures.BatchTopK, SaeArchitectures.MatryoshkaBatchTopK]),
        ("matryoshka_widths", [SaeArchitectures.MatryoshkaBatchTopK]),
        ("use_matryoshka_aux_loss", [SaeArchitectures.MatryoshkaBatchTopK]),
        ("rescale_acts_by_decoder_norm", [SaeArchitectures.TopK, SaeArchitectures.BatchTopK, SaeArchitectures.MatryoshkaBatchTopK]),
        ("lp_norm", [SaeArchitectures.Standard]),
        ("residual_threshold", [SaeArchitectures.MatchingPursuit]),
        ("max_iterations", [SaeArchitectures.MatchingPursuit]),
        ("stop_on_duplicate_support", [SaeArchitectures.MatchingPursuit]),
    ];

    /// <summary>The <see cref="ArchitectureFields"/> these settings give (non-null), in that order.</summary>
    [JsonIgnore]
    public IReadOnlyList<string> GivenArchitectureFields
    {
        get
        {
            var given = new List<string>();
            void Add(string name, object? value) { if (value is not null) given.Add(name); }
            Add("l0_coefficient", L0Coefficient);
            Add("l0_warm_up_steps", L0WarmUpSteps);
            Add("jumprelu_bandwidth", JumpReluBandwidth);
            Add("jumprelu_init_threshold", JumpReluInitThreshold);
            Add("jumprelu_sparsity_loss_mode", JumpReluSparsityLossMode);
            Add("pre_act_loss_coefficient", PreActLossCoefficient);
            Add("aux_loss_coefficient", AuxLossCoefficient);
            Add("topk_threshold_lr", TopKThresholdLr);
            Add("matryoshka_widths", MatryoshkaWidths);
            Add("use_matryoshka_aux_loss", UseMatryoshkaAuxLoss);
            Add("rescale_acts_by_decoder_norm", RescaleActsByDecoderNorm);
            Add("lp_norm", LpNorm);
            Add("residual_threshold", ResidualThreshold);
            Add("max_iterations", MaxIterations);
            Add("stop_on_duplicate_support", StopOnDuplicateSupport);
            return given;
        }
    }

    private string SourceName => Source ?? "training settings";

    /// <summary>Checks the ranges of the architecture fields (<see cref="ArchitectureFields"/>); throws naming the field and
    /// <see cref="Source"/>.</summary>
    public void ValidateArchitectureFields()
    {
        void Check(string field, double? value, bool ok, string expected)
        {
            if (value is double v && !(ok && double.IsFinite(v)))
                throw new SaeSharpException($"{SourceName}: {field} {v}: expected {expected}");
        }
        Check("l0_coefficient", L0Coefficient, L0Coefficient >= 0, "a non-negative, finite sparsity coefficient");
        Check("l0_warm_up_steps", L0WarmUpSteps, L0WarmUpSteps >= 0, "a non-negative step count");
        Check("jumprelu_bandwidth", JumpReluBandwidth, JumpReluBandwidth > 0, "a positive, finite bandwidth");
        Check("jumprelu_init_threshold", JumpReluInitThreshold, JumpReluInitThreshold > 0, "a positive, finite threshold");
        Check("pre_act_loss_coefficient", PreActLossCoefficient, PreActLossCoefficient >= 0, "a non-negative, finite coefficient (0: off)");
        Check("aux_loss_coefficient", AuxLossCoefficient, AuxLossCoefficient >= 0, "a non-negative, finite coefficient (0: no AuxK)");
        Check("topk_threshold_lr", TopKThresholdLr, TopKThresholdLr is > 0 and <= 1, "a rate in (0, 1]");
        Check("lp_norm", LpNorm, LpNorm > 0, "a positive, finite p (SAELens's p-norm of the relu sparsity term; 1: L1)");
        Check("residual_threshold", ResidualThreshold, true, "a finite number (0: no residual stop)");
        Check("max_iterations", MaxIterations, MaxIterations >= 1, "at least 1 iteration (null: d_in)");
        if (JumpReluSparsityLossMode is { } mode && mode != "step")
            throw new SaeSharpException(mode == "tanh"
                ? $"{SourceName}: jumprelu_sparsity_loss_mode \"tanh\" (Anthropic's sparsity loss) is not supported: SaeSharp's jumprelu trains with the \"step\" L0 loss (or, with target_l0, dictionary_learning's target-L0 form)"
                : $"{SourceName}: jumprelu_sparsity_loss_mode '{mode}': expected \"step\" (SAELens's \"tanh\" is not supported)");
        if (MatryoshkaWidths is { } widths)
        {
            if (widths.Length == 0) throw new SaeSharpException($"{SourceName}: matryoshka_widths: give at least one width");
            for (int i = 0; i < widths.Length; i++)
                if (widths[i] <= 0 || (i > 0 && widths[i] <= widths[i - 1]))
                    throw new SaeSharpException($"{SourceName}: matryoshka_widths [{string.Join(", ", widths)}]: expected positive, strictly increasing cumulative widths ending at d_sae");
        }
    }

    /// <summary>
    /// Refuses an architecture field (<see cref="ArchitectureFields"/>) that none of <paramref name="recipes"/> uses (it
    /// would change nothing), naming the field and the architectures that take it, and a sparsity coefficient given twice:
    /// <c>l0_coefficient</c> sets jumprelu's λ and <c>l1_coefficient</c> the other recipes', so a run whose only
    /// λ recipes are jumprelu takes one of them. Likewise <c>l0_warm_up_steps</c> and <c>l1_warm_up_steps</c>.
    /// </summary>
    public void CheckArchitectureFields(IReadOnlyList<string> recipes)
    {
        ValidateArchitectureFields();
        var archs = recipes.Select(r => SaeRecipes.Get(r).TrainsAs).ToHashSet(StringComparer.Ordinal);
        var unused = new List<string>();
        foreach (var field in GivenArchitectureFields)
        {
            var takes = ArchitectureFields.First(f => f.Field == field).Architectures;
            if (!takes.Any(archs.Contains))
                unused.Add($"'{field}'{(field == "lp_norm" ? " (--lp-norm)" : "")} applies to {string.Join(", ", takes.Select(RecipeNameOf))}");
        }
        if (unused.Count > 0)
            throw new SaeSharpException($"{SourceName}: {string.Join("; ", unused)}; this run trains {string.Join(", ", recipes)}: drop {(unused.Count == 1 ? "it" : "them")} or add the architecture");
        bool othersHaveCoefficient = recipes.Any(r => SaeRecipes.HasSparsityCoefficient(r) && SaeRecipes.Get(r).TrainsAs != SaeArchitectures.JumpReLU);
        if (L0Coefficient is not null && L1Coefficient is not null && !othersHaveCoefficient)
            throw new SaeSharpException($"{SourceName}: l0_coefficient and l1_coefficient (--l1) both set jumprelu's sparsity coefficient in a run of {string.Join(", ", recipes)}: give one");
        if (L0WarmUpSteps is not null && GivenTrainerFields.Contains("l1_warm_up_steps") && !othersHaveCoefficient)
            throw new SaeSharpException($"{SourceName}: l0_warm_up_steps and l1_warm_up_steps both set jumprelu's sparsity warm-up in a run of {string.Join(", ", recipes)}: give one");
    }

    /// <summary>The recipe names that train as a cfg.json architecture (matryoshka_batchtopk → matryoshka; jumprelu →
    /// jumprelu, jumprelu_skip_transcoder), for messages.</summary>
    private static string RecipeNameOf(string architecture) =>
        SaeRecipes.Names.Where(r => SaeRecipes.Get(r).TrainsAs == architecture).ToList() is { Count: > 0 } names ? string.Join(", ", names) : architecture;

    /// <summary>The sparsity coefficient these settings give <paramref name="recipe"/>: <see cref="L0Coefficient"/> for
    /// jumprelu when given, else <see cref="L1Coefficient"/>; null: the recipe's default.</summary>
    public double? SparsityCoefficientFor(string recipe) =>
        SaeRecipes.Get(recipe).TrainsAs == SaeArchitectures.JumpReLU ? L0Coefficient ?? L1Coefficient : L1Coefficient;

    /// <summary>Applies the architecture fields that <paramref name="sae"/>'s architecture uses to its training options and
    /// to its trainer config <paramref name="config"/> (jumprelu's <c>l0_warm_up_steps</c>). Call after the recipe and
    /// <c>target_l0</c> have set their values: a given field wins. <c>matryoshka_widths</c> and the sparsity coefficient are
    /// set when the SAE is created (<see cref="SaeRecipes.Create"/>).</summary>
    public void ApplyArchitectureFields(Sae sae, TrainerConfig config)
    {
        ArgumentNullException.ThrowIfNull(sae);
        ArgumentNullException.ThrowIfNull(config);
        var t = sae.Training;
        switch (SaeArchitectures.TrainsAs(sae.Cfg.Architecture))
        {
            case SaeArchitectures.JumpReLU:
                if (JumpReluBandwidth is double bandwidth) t.Bandwidth = bandwidth;
                if (JumpReluInitThreshold is double theta) t.InitialThreshold = theta;
                if (PreActLossCoefficient is double preAct) t.PreActLossCoefficient = preAct;
                if (L0WarmUpSteps is long warmUp) config.L1WarmUpSteps = warmUp;
                break;
            case SaeArchitectures.Standard:
                if (LpNorm is double p) t.LpNorm = p;
                break;
            case SaeArchitectures.MatchingPursuit:
                // cfg.json fields: the saved SAE encodes with them.
                if (ResidualThreshold is double threshold) sae.Cfg.ResidualThreshold = threshold;
                if (MaxIterations is int iterations) sae.Cfg.MaxIterations = iterations;
                if (StopOnDuplicateSupport is bool stop) sae.Cfg.StopOnDuplicateSupport = stop;
                sae.Cfg.Validate();
                break;
            case SaeArchitectures.TopK or SaeArchitectures.BatchTopK or SaeArchitectures.MatryoshkaBatchTopK:
                if (AuxLossCoefficient is double aux) t.AuxKCoefficient = aux;
                if (TopKThresholdLr is double rate && sae.Cfg.Architecture != SaeArchitectures.TopK) t.ThresholdMomentum = 1 - rate;
                if (UseMatryoshkaAuxLoss is bool perLevel && sae.Cfg.Architecture == SaeArchitectures.MatryoshkaBatchTopK) t.UseMatryoshkaAuxLoss = perLevel;
                if (RescaleActsByDecoderNorm is bool rescale) t.RescaleActsByDecoderNorm = rescale;
                break;
        }
    }

    /// <summary>The recipes of <see cref="Architecture"/>, each checked.</summary>
    public IReadOnlyList<string> Recipes
    {
        get
        {
            var recipes = Architecture.Split(',', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries);
            if (recipes.Length == 0) throw new SaeSharpException("architecture: give at least one of " + string.Join(", ", SaeRecipes.AcceptedNames));
            foreach (var r in recipes) SaeRecipes.Get(r);
            return recipes;
        }
    }

    /// <summary>The run's steps when given: <see cref="Steps"/>, else <see cref="TrainingTokens"/> / <see cref="BatchSize"/>
    /// (at least 1), else null.</summary>
    [JsonIgnore] public long? RunSteps => Steps ?? (TrainingTokens is long t ? Math.Max(1, t / BatchSize) : null);

    /// <summary>d_sae for inputs of width <paramref name="dIn"/>: <see cref="DSae"/>, else <see cref="ExpansionFactor"/> (8) × d_in.</summary>
    public int DSaeFor(int dIn) => DSae ?? dIn * (ExpansionFactor ?? 8);

    /// <summary><see cref="CandidatePass"/> as the option.</summary>
    public CandidatePass ParsedCandidatePass => CandidatePass.Trim().ToLowerInvariant() switch
    {
        "auto" => Kernels.CandidatePass.Auto,
        "on" => Kernels.CandidatePass.On,
        "off" => Kernels.CandidatePass.Off,
        _ => throw new SaeSharpException($"--candidate-pass {CandidatePass}: expected auto, on or off"),
    };

    /// <summary>Settings from a JSON object (<paramref name="source"/> names it in errors): the fields above under their
    /// SAELens or older names, and the trainer fields, which are recorded in <see cref="GivenTrainerFields"/>. SAELens's
    /// <c>train_batch_size_tokens</c> and <c>total_training_steps</c> set <see cref="BatchSize"/> and <see cref="Steps"/>.
    /// SAELens's architecture fields (<see cref="ArchitectureFields"/>) are read and checked (<see cref="ValidateArchitectureFields"/>;
    /// the plan refuses one that no recipe of the run uses); the other fields of SAELens's runner config are mapped,
    /// ignored with a note or refused at values SaeSharp does not implement (<see cref="RunnerConfigFields"/>).
    /// A field of none of these kinds is an error (a misspelt name would otherwise leave its default in force).
    /// Without <c>normalize_activations</c> the run normalises (<see cref="DefaultNormalizeActivations"/>).</summary>
    public static TrainingSettings FromJson(string json, string source = "training settings")
    {
        string? normalized = null;
        try
        {
            if (JsonNode.Parse(json) is not JsonObject fields) throw new SaeSharpException($"{source}: expected a JSON object");
            foreach (var (old, name) in Aliases)
            {
                if (!fields.ContainsKey(old)) continue;
                if (fields.ContainsKey(name)) throw new SaeSharpException($"{source}: give '{name}' or its older name '{old}', not both");
                var value = fields[old];
                fields.Remove(old);
                fields[name] = value;
            }
            var notes = new List<string>();
            string? cachedModel = RunnerConfigFields.Apply(fields, source, notes);
            var unknown = fields.Select(f => f.Key).Where(key => !KnownFields.Value.Contains(key)).ToList();
            if (unknown.Count > 0)
                throw new SaeSharpException($"{source}: unknown field{(unknown.Count > 1 ? "s" : "")} " +
                                            string.Join(", ", unknown.Select(key => $"'{key}'{Suggestion(key)}")));
            // SAELens's names for the batch and the run length.
            foreach (var (saeLens, name) in new[] { ("train_batch_size_tokens", "batch_size"), ("total_training_steps", "steps") })
            {
                if (!fields.ContainsKey(saeLens)) continue;
                if (fields.ContainsKey(name) && fields[name]?.ToJsonString() != fields[saeLens]?.ToJsonString())
                    throw new SaeSharpException($"{source}: '{name}' and '{saeLens}' differ ({fields[name]} and {fields[saeLens]}); give one");
                fields[name] = fields[saeLens]?.DeepClone();
            }
            if (fields.ContainsKey("training_tokens") && fields.ContainsKey("steps"))
                throw new SaeSharpException($"{source}: give the run's length as steps ('steps' or 'total_training_steps') or as 'training_tokens', not both");
            CheckArchitectureFieldTypes(fields, source);
            if (fields.TryGetPropertyValue("decoder_init_norm", out var decoderInitNorm) && decoderInitNorm is null)
                throw new SaeSharpException($"{source}: decoder_init_norm null (in SAELens: W_dec and W_enc keep their own Kaiming-uniform " +
                                            "initialisation, untied) is not supported: give a positive norm (SAELens's default 0.1)");
            // null in the file is SAELens's None (no separator); absent is its default "bos".
            Data.PretokenizeToken? separator = fields.TryGetPropertyValue("sequence_separator_token", out var separatorNode)
                ? Data.PretokenizeToken.FromJson(separatorNode, $"{source}: sequence_separator_token") : null;
            long[]? excludeIds = fields.TryGetPropertyValue("exclude_special_tokens", out var excludeNode) && excludeNode is not null
                                 && excludeNode.GetValueKind() is not (JsonValueKind.True or JsonValueKind.False)
                ? Tokenizers.ExcludedTokens.FromJson(excludeNode, $"{source}: exclude_special_tokens") : null;
            if (excludeIds is not null) fields.Remove("exclude_special_tokens");
            normalized = fields.ToJsonString();
            var settings = JsonSerializer.Deserialize<TrainingSettings>(normalized) ?? new TrainingSettings();
            settings.SequenceSeparatorToken = separator;
            settings.ExcludeTokenIds = excludeIds;
            settings.ActivationsModelName = cachedModel;
            settings.Source = source;
            settings.Notes.AddRange(notes);
            settings.ValidateArchitectureFields();
            if (settings.NBatchesInBuffer is <= 0)
                throw new SaeSharpException($"{source}: n_batches_in_buffer {settings.NBatchesInBuffer}: expected a positive number of model runs");
            if (settings.ActivationsMixingFraction is double mixing && !(mixing >= 0 && mixing <= 1))
                throw new SaeSharpException($"{source}: activations_mixing_fraction {mixing}: expected a fraction in [0, 1] (as SAELens's mix_fraction)");
            settings.Trainer = TrainerConfig.FromJson(normalized, source);
            // dead_feature_window is SAELens's, in steps (DeadFeatureWindowSteps); the plan converts it to the trainer's rows.
            settings.Trainer.DeadFeatureWindow = null;
            if (settings.DeadFeatureWindowSteps is < 0)
                throw new SaeSharpException($"{source}: dead_feature_window {settings.DeadFeatureWindowSteps}: expected a non-negative number of training steps (SAELens's)");
            foreach (var (key, _) in fields) settings.GivenTrainerFields.Add(key);
            if (!fields.ContainsKey("normalize_activations")) settings.Trainer.NormalizeActivations = DefaultNormalizeActivations;
            return settings;
        }
        catch (JsonException e)
        {
            throw new SaeSharpException(WrongType(e, normalized, source) ?? $"{source}: {e.Message}");
        }
    }

    /// <summary>"FILE: steps "x": expected a whole number" for a top-level field of <paramref name="json"/> whose JSON type
    /// does not fit its property (System.Text.Json's own message names the CLR type); null for other errors.</summary>
    private static string? WrongType(JsonException e, string? json, string source)
    {
        if (json is null || e.Path is not { } path || !path.StartsWith("$.", StringComparison.Ordinal)) return null;
        string field = path[2..];
        var type = typeof(TrainingSettings).GetProperties().Concat(typeof(TrainerConfig).GetProperties())
            .FirstOrDefault(p => p.GetCustomAttributes(typeof(JsonPropertyNameAttribute), false) is [JsonPropertyNameAttribute a, ..] && a.Name == field)?.PropertyType;
        if (type is null || JsonNode.Parse(json) is not JsonObject fields || !fields.ContainsKey(field)) return null;
        type = Nullable.GetUnderlyingType(type) ?? type;
        string? expected = type == typeof(int) || type == typeof(long) ? "a whole number"
            : type == typeof(double) || type == typeof(float) ? "a number"
            : type == typeof(bool) ? "true or false"
            : type == typeof(string) ? "a string"
            : null;
        return expected is null ? null : $"{source}: {field} {fields[field]?.ToJsonString() ?? "null"}: expected {expected}";
    }

    /// <summary>The JSON types of the architecture fields: numbers (a whole one for the step count), a string, a list of
    /// whole numbers; throws naming the field and <paramref name="source"/>.</summary>
    private static void CheckArchitectureFieldTypes(JsonObject fields, string source)
    {
        foreach (var (field, _) in ArchitectureFields)
        {
            if (!fields.TryGetPropertyValue(field, out var node) || node is null) continue;
            bool ok = field switch
            {
                "jumprelu_sparsity_loss_mode" => node.GetValueKind() == JsonValueKind.String,
                "use_matryoshka_aux_loss" or "stop_on_duplicate_support" or "rescale_acts_by_decoder_norm" => node.GetValueKind() is JsonValueKind.True or JsonValueKind.False,
                "l0_warm_up_steps" or "max_iterations" => IsWhole(node),
                "matryoshka_widths" => node is JsonArray a && a.All(w => w is not null && IsWhole(w)),
                _ => node.GetValueKind() == JsonValueKind.Number,
            };
            if (!ok)
                throw new SaeSharpException($"{source}: {field} {node.ToJsonString()}: expected " + field switch
                {
                    "jumprelu_sparsity_loss_mode" => "a string (\"step\")",
                    "use_matryoshka_aux_loss" or "stop_on_duplicate_support" or "rescale_acts_by_decoder_norm" => "true or false",
                    "l0_warm_up_steps" => "a whole number of steps",
                    "max_iterations" => "a whole number of iterations (or null: d_in)",
                    "matryoshka_widths" => "a list of whole numbers",
                    _ => "a number",
                });
        }
        static bool IsWhole(JsonNode n) => n.GetValueKind() == JsonValueKind.Number && n.AsValue().TryGetValue<long>(out _);
    }

    /// <summary>The field names <see cref="FromJson"/> reads: these settings', the older aliases and <see cref="TrainerConfig"/>'s.</summary>
    private static readonly Lazy<HashSet<string>> KnownFields = new(() =>
    {
        var names = new HashSet<string>(Aliases.Select(a => a.Old), StringComparer.Ordinal);
        foreach (var type in new[] { typeof(TrainingSettings), typeof(TrainerConfig) })
            foreach (var property in type.GetProperties())
                if (property.GetCustomAttributes(typeof(JsonPropertyNameAttribute), false) is [JsonPropertyNameAttribute a, ..]) names.Add(a.Name);
        return names;
    });

    /// <summary>" (did you mean 'x'?)" for the known field nearest <paramref name="key"/> within two edits, else "".</summary>
    private static string Suggestion(string key) => NameSuggestion.For(key, KnownFields.Value);

    /// <summary>A <c>dataset_path</c> as <c>--dataset</c> takes it: an existing file or folder, or a <c>hf:</c> name, as is;
    /// a Hugging Face dataset id <c>ORG/NAME</c> (SAELens's form) as <c>hf:ORG/NAME</c>; anything else, and a missing file
    /// named with a dataset extension (.jsonl, .txt, .parquet), as is (the reader reports it missing).</summary>
    public static string DatasetSpec(string datasetPath)
    {
        ArgumentException.ThrowIfNullOrEmpty(datasetPath);
        if (File.Exists(datasetPath) || Directory.Exists(datasetPath) || datasetPath.StartsWith(Data.HubDataset.Prefix, StringComparison.Ordinal))
            return datasetPath;
        return Hub.HubPaths.IsRepoId(datasetPath) && datasetPath.Contains('/') && !Path.IsPathRooted(datasetPath) && !datasetPath.StartsWith('.')
               && Data.TextDataset.KindOf(datasetPath) == Data.TextDataset.FileKind.Unknown
            ? Data.HubDataset.Prefix + datasetPath : datasetPath;
    }

    /// <summary>Throws when <see cref="DIn"/> is given and differs from <paramref name="width"/>, the width of the
    /// activations at <paramref name="where"/> (a hook, or the activation files).</summary>
    public void CheckDIn(int width, string where)
    {
        if (DIn is int d && d != width)
            throw new SaeSharpException($"{SourceName}: d_in {d} does not match {where}, whose width is {width}: give d_in {width} or drop the field");
    }

    /// <summary><see cref="FromJson"/> of a file.</summary>
    public static TrainingSettings ReadFile(string path)
    {
        if (!File.Exists(path)) throw new SaeSharpException($"{path}: config file not found");
        return FromJson(File.ReadAllText(path), path);
    }
}
