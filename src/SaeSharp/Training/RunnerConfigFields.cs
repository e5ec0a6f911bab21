using System.Text.Json;
using System.Text.Json.Nodes;

namespace SaeSharp.Training;

/// <summary>What <see cref="TrainingSettings.FromJson"/> does with a field of SAELens's <c>LanguageModelSAERunnerConfig</c>.</summary>
public enum RunnerFieldUse
{
    /// <summary>Read, with the meaning of the SaeSharp setting or flag it is mapped to.</summary>
    Mapped,
    /// <summary>Accepted and ignored: it cannot change the SAE SaeSharp trains (logging, compilation, memory placement);
    /// the command prints a note naming it.</summary>
    Ignored,
    /// <summary>Accepted only at the value that describes what SaeSharp does (usually SAELens's default); any other value
    /// would change the result in a way SaeSharp does not implement and is refused with the note.</summary>
    Fixed,
}

/// <summary>One field of SAELens's runner config and how <c>sae train --config</c> treats it.</summary>
/// <param name="Name">The field's SAELens name.</param>
/// <param name="Use">Mapped, ignored or accepted at one value only.</param>
/// <param name="Note">Mapped: what it sets; ignored: why it changes nothing; fixed: the value accepted and what to do instead.</param>
/// <param name="Accepts">For <see cref="RunnerFieldUse.Fixed"/>: whether a value is the one SaeSharp implements.</param>
public sealed record RunnerConfigField(string Name, RunnerFieldUse Use, string Note, Func<JsonNode?, bool>? Accepts = null);

/// <summary>
/// The model, data, logging and run fields of SAELens 6's <c>LanguageModelSAERunnerConfig</c> that a <c>--config</c> file
/// may hold beside the SAE and trainer fields: one explicit table (<see cref="All"/>) of what each is mapped to, which are
/// ignored and which are refused unless they hold the value SaeSharp implements. The SAE and trainer fields
/// (architecture, d_sae, k, lr, training_tokens, train_batch_size_tokens, …) are <see cref="TrainingSettings"/>' and
/// <see cref="TrainerConfig"/>'s own.
/// </summary>
public static class RunnerConfigFields
{
    private static bool IsNull(JsonNode? v) => v is null;
    private static bool Is(JsonNode? v, bool value) => v is not null && v.GetValueKind() is JsonValueKind.True or JsonValueKind.False && v.GetValue<bool>() == value;
    private static bool IsString(JsonNode? v, params string[] values) => v is not null && v.GetValueKind() == JsonValueKind.String && values.Contains(v.GetValue<string>());

    /// <summary>Fields that only steer Weights &amp; Biases logging: ignored together with one note.</summary>
    public static readonly IReadOnlySet<string> WandbFields = new HashSet<string>(StringComparer.Ordinal)
    {
        "logger", "log_to_wandb", "wandb_project", "wandb_entity", "wandb_id", "run_name", "wandb_log_frequency",
        "eval_every_n_wandb_logs", "log_optimizer_state_to_wandb", "log_activations_store_to_wandb", "log_weights_to_wandb",
    };

    /// <summary>The table.</summary>
    public static readonly IReadOnlyList<RunnerConfigField> All =
    [
        new("model_name", RunnerFieldUse.Mapped, "--model: a model folder, builtin, or a Hugging Face id (gpt2, EleutherAI/pythia-70m) from the hub cache or downloaded"),
        new("hook_name", RunnerFieldUse.Mapped, "--hook"),
        new("dataset_path", RunnerFieldUse.Mapped, "--dataset: a local file or folder as is; a Hugging Face id ORG/NAME as hf:ORG/NAME"),
        new("context_size", RunnerFieldUse.Mapped, "--context-size"),
        new("seqpos_slice", RunnerFieldUse.Mapped, "--seqpos-slice: the positions of each window trained on ([1, null] is 1:)"),
        new("disable_concat_sequences", RunnerFieldUse.Mapped, "true: --disable-concat-sequences (one window per document)"),
        new("sequence_separator_token", RunnerFieldUse.Mapped, "--sequence-separator-token (null: none)"),
        new("prepend_bos", RunnerFieldUse.Mapped, "false: --no-prepend-bos"),
        new("exclude_special_tokens", RunnerFieldUse.Mapped, "true: --exclude-special-tokens; a list of token ids: --exclude-token-ids"),
        new("d_in", RunnerFieldUse.Mapped, "checked against the width of the activations at the hook"),
        new("store_batch_size_prompts", RunnerFieldUse.Mapped, "context windows per model run"),
        new("n_batches_in_buffer", RunnerFieldUse.Mapped, "--buffer-batches: the shuffle buffer of a run from a model holds n_batches_in_buffer × store_batch_size_prompts context windows"),
        new("activations_mixing_fraction", RunnerFieldUse.Mapped, "--activations-mixing-fraction: the fraction of the shuffle buffer kept back each round (SAELens 6.37's mixing buffer; 0: in order)"),
        new("model_from_pretrained_kwargs", RunnerFieldUse.Mapped, "fold_ln, center_writing_weights, center_unembed, fold_value_biases (--fold-ln, --center-writing-weights) and dtype (--dtype); other keys are refused"),
        new("device", RunnerFieldUse.Mapped, "--device"),
        new("seed", RunnerFieldUse.Mapped, "--seed"),
        new("autocast", RunnerFieldUse.Mapped, "--autocast (bfloat16 matmuls in SAE training)"),
        new("n_checkpoints", RunnerFieldUse.Mapped, "without checkpoint_every: a checkpoint every steps / n_checkpoints steps (SaeSharp always keeps checkpoints)"),
        new("output_path", RunnerFieldUse.Mapped, "--out (out wins when both are given)"),
        new("use_cached_activations", RunnerFieldUse.Mapped, "true: train on cached_activations_path (--activations); the model and data fields then only describe the cache"),
        new("cached_activations_path", RunnerFieldUse.Mapped, "--activations, with use_cached_activations true"),
        new("from_pretrained_path", RunnerFieldUse.Mapped, "--from-pretrained: fine-tune that saved SAE (a folder, RELEASE/SAE_ID or hf:ORG/REPO/PATH)"),
        new("hook_head_index", RunnerFieldUse.Mapped, "--hook-head-index: train on that head of an attention hook (runs from a model)"),

        new("dtype", RunnerFieldUse.Fixed, "SaeSharp trains SAEs in float32: give \"float32\" (bfloat16 matmuls: autocast; the model's dtype: model_from_pretrained_kwargs {\"dtype\": ...} or --dtype)",
            v => IsString(v, "float32", "torch.float32")),
        new("model_class_name", RunnerFieldUse.Fixed, "\"HookedTransformer\" only (SaeSharp runs Hugging Face models with TransformerLens hook names)", v => IsString(v, "HookedTransformer")),
        new("autocast_lm", RunnerFieldUse.Fixed, "false only: give the model's dtype in model_from_pretrained_kwargs or --dtype", v => Is(v, false)),
        new("resume_from_checkpoint", RunnerFieldUse.Fixed, "null only: continue a run with sae train --resume --out OUT", IsNull),
        new("model_kwargs", RunnerFieldUse.Fixed, "{} only: SaeSharp passes no keyword arguments to the model's forward", v => v is null || v is JsonObject { Count: 0 }),

        new("is_dataset_tokenized", RunnerFieldUse.Ignored, "pre-tokenized data (tokens/input_ids) is detected"),
        new("streaming", RunnerFieldUse.Ignored, "dataset files are read as the run reaches them either way"),
        new("dataset_trust_remote_code", RunnerFieldUse.Ignored, "no dataset loading script is run"),
        new("act_store_device", RunnerFieldUse.Ignored, "a memory placement"),
        new("compile_llm", RunnerFieldUse.Ignored, "torch.compile speed setting"),
        new("llm_compilation_mode", RunnerFieldUse.Ignored, "torch.compile speed setting"),
        new("compile_sae", RunnerFieldUse.Ignored, "torch.compile speed setting"),
        new("sae_compilation_mode", RunnerFieldUse.Ignored, "torch.compile speed setting"),
        new("hook_eval", RunnerFieldUse.Ignored, "unused by SAELens too"),
        new("dead_feature_threshold", RunnerFieldUse.Ignored, "declared by SAELens but read nowhere in its trainer or evaluation: no effect there either"),
        new("use_sparse_activations", RunnerFieldUse.Ignored, "a memory setting of SAELens's TopK (the same SAE either way); SaeSharp's TopK training always decodes the sparse code"),
        new("jumprelu_tanh_scale", RunnerFieldUse.Ignored, "it scales only the tanh sparsity loss (jumprelu_sparsity_loss_mode \"tanh\"), which SaeSharp refuses"),
        new("n_eval_batches", RunnerFieldUse.Ignored, "SaeSharp's held-out metrics use eval_rows"),
        new("eval_batch_size_prompts", RunnerFieldUse.Ignored, "an evaluation memory setting"),
        new("checkpoint_path", RunnerFieldUse.Ignored, "sae train keeps its checkpoints in OUT/checkpoints"),
        new("save_final_checkpoint", RunnerFieldUse.Ignored, "the final SAE is always written to out"),
        new("verbose", RunnerFieldUse.Ignored, "output setting"),
        new("sae_lens_version", RunnerFieldUse.Ignored, "provenance"),
        new("sae_lens_training_version", RunnerFieldUse.Ignored, "provenance"),
        .. WandbFields.Order(StringComparer.Ordinal).Select(f => new RunnerConfigField(f, RunnerFieldUse.Ignored, "SaeSharp does not log to Weights & Biases (its logs: train_log.jsonl, tensorboard)")),
    ];

    private static readonly Dictionary<string, RunnerConfigField> ByName = All.ToDictionary(f => f.Name, StringComparer.Ordinal);

    /// <summary>The entry for <paramref name="name"/>, or null.</summary>
    public static RunnerConfigField? Find(string name) => ByName.GetValueOrDefault(name);

    /// <summary>
    /// SAELens's <c>LanguageModelSAERunnerConfig.to_dict()</c> nests the SAE's config under <c>sae</c> (architecture, d_in,
    /// d_sae, k, l1_coefficient, dtype, device, normalize_activations, …, and <c>metadata</c>): its fields are read as if
    /// given at the top level. <c>metadata</c> (provenance, filled in by SAELens when it trains) is dropped; a field given
    /// both there and at the top level with another value is an error naming it.
    /// </summary>
    private static void FlattenSae(JsonObject fields, string source)
    {
        if (!fields.ContainsKey("sae")) return;
        if (fields["sae"] is not JsonObject sae)
            throw new SaeSharpException($"{source}: 'sae' should be SAELens's nested SAE config (an object with architecture, d_sae, …)");
        fields.Remove("sae");
        foreach (var (key, value) in sae.ToList())
        {
            if (key == "metadata") continue;
            if (fields.TryGetPropertyValue(key, out var top))
            {
                if (!JsonNode.DeepEquals(top, value))
                    throw new SaeSharpException($"{source}: '{key}' is {top?.ToJsonString() ?? "null"} at the top level and {value?.ToJsonString() ?? "null"} in 'sae'; give one");
                continue;
            }
            sae.Remove(key);
            fields[key] = value;
        }
    }

    /// <summary>
    /// Applies the table to the fields of a config (<paramref name="source"/> names it in errors): removes the ignored fields
    /// (their names go into <paramref name="notes"/>) and the fixed fields at their accepted value, refuses a fixed field at
    /// another value, and rewrites <c>output_path</c> to <c>out</c> and <c>use_cached_activations</c> /
    /// <c>cached_activations_path</c> to <c>activations</c>. The mapped fields are left for the settings to read.
    /// With <c>use_cached_activations</c> true, <c>model_name</c> and <c>dataset_path</c> only describe the cache: they are
    /// removed (the run is not a run on a model), and the model name is returned, the model the rows came from (read by
    /// exclude_special_tokens true, <see cref="TrainingSettings.ActivationsModelName"/>); otherwise null.
    /// </summary>
    public static string? Apply(JsonObject fields, string source, List<string> notes)
    {
        ArgumentNullException.ThrowIfNull(fields);
        ArgumentNullException.ThrowIfNull(notes);
        FlattenSae(fields, source);
        var refused = new List<string>();
        var ignored = new List<string>();
        var wandb = new List<string>();
        foreach (var (key, value) in fields.ToList())
        {
            if (Find(key) is not { } f || f.Use == RunnerFieldUse.Mapped) continue;
            if (f.Use == RunnerFieldUse.Fixed && !f.Accepts!(value))
            {
                refused.Add($"SAELens's '{key}' {value?.ToJsonString() ?? "null"} is not supported: {f.Note}");
                continue;
            }
            if (f.Use == RunnerFieldUse.Ignored)
                (WandbFields.Contains(key) ? wandb : ignored).Add(value is JsonObject { Count: > 0 } o ? $"{key} ({string.Join(", ", o.Select(kv => kv.Key))})" : key);
            fields.Remove(key);
        }
        if (fields["model_from_pretrained_kwargs"] is JsonObject kwargs)
        {
            var other = kwargs.Select(kv => kv.Key).Where(k => k is not ("dtype" or Saes.SaeMetadata.RevisionKey) && !Models.WeightProcessingOptions.Keys.Contains(k)).ToList();
            if (other.Count > 0)
                refused.Add($"model_from_pretrained_kwargs {string.Join(", ", other.Select(k => $"'{k}'"))} not supported: SaeSharp reads dtype, revision and " +
                            string.Join(", ", Models.WeightProcessingOptions.Keys));
            if (kwargs[Saes.SaeMetadata.RevisionKey] is { } rev && !(rev is JsonValue rv && rv.TryGetValue(out string? r) && r.Length > 0))
                refused.Add($"model_from_pretrained_kwargs revision {rev.ToJsonString()}: expected a branch, tag or commit of the model's hub repo (a string)");
        }
        if (refused.Count > 0) throw new SaeSharpException($"{source}: {string.Join("; ", refused)}");

        if (fields.Remove("output_path", out var output) && !fields.ContainsKey("out")) fields["out"] = output;
        bool cached = fields.Remove("use_cached_activations", out var use) && Is(use, true);
        string? cachedModel = null;
        fields.Remove("cached_activations_path", out var cachePath);
        if (cached)
        {
            if (cachePath is null) throw new SaeSharpException($"{source}: use_cached_activations is true: give cached_activations_path");
            if (fields.ContainsKey("activations")) throw new SaeSharpException($"{source}: give 'activations' or cached_activations_path, not both");
            fields["activations"] = cachePath;
            fields.Remove("model_name", out var model);
            fields.Remove("dataset_path");
            if (model is JsonValue v && v.TryGetValue<string>(out var name)) cachedModel = name;
        }
        if (wandb.Count > 0) notes.Add($"ignored: {string.Join(", ", wandb)} (SaeSharp does not log to Weights & Biases; its logs are train_log.jsonl and tensorboard)");
        if (ignored.Count > 0) notes.Add($"ignored (no effect on the SAE SaeSharp trains): {string.Join(", ", ignored)}");
        return cachedModel;
    }
}
