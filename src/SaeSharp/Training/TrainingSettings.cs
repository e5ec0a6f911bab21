using System.Text.Json;
using System.Text.Json.Nodes;
using System.Text.Json.Serialization;
using SaeSharp.Kernels;

namespace SaeSharp.Training;

/// <summary>
/// What to train, as <c>sae train</c> takes it: its flags, or the same fields in a JSON file (<c>--config</c>) under
/// SAELens's names (<c>architecture</c>, <c>d_sae</c>, <c>expansion_factor</c>, <c>l1_coefficient</c>; the older
/// <c>arch</c>, <c>dict_size</c>, <c>expansion</c>, <c>l1</c> are still read), which may also hold any
/// <see cref="TrainerConfig"/> field (lr_scheduler_name, l1_warm_up_steps, resample_steps, …).
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
    /// <summary>Recipe(s), comma-separated: <see cref="SaeRecipes.Names"/> (<c>--arch</c>).</summary>
    [JsonPropertyName("architecture")] public string Architecture { get; set; } = "topk";
    /// <summary>Active latents per row (TopK family).</summary>
    [JsonPropertyName("k")] public int? K { get; set; }
    /// <summary>Sparsity coefficient λ (<c>--l1</c>); null: the recipe's (<see cref="SaeRecipes.DefaultSparsityCoefficient"/>).</summary>
    [JsonPropertyName("l1_coefficient")] public double? L1Coefficient { get; set; }
    /// <summary>Adapt λ during training to end near this L0 (relu, relu-april, gated, jumprelu).</summary>
    [JsonPropertyName("target_l0")] public double? TargetL0 { get; set; }
    /// <summary>Latents d_sae (<c>--dict-size</c>); null: <see cref="ExpansionFactor"/> × d_in.</summary>
    [JsonPropertyName("d_sae")] public int? DSae { get; set; }
    /// <summary>d_sae = expansion_factor × d_in when <see cref="DSae"/> is not given (<c>--expansion</c>; default 8).</summary>
    [JsonPropertyName("expansion_factor")] public int? ExpansionFactor { get; set; }
    /// <summary>Rows per optimiser step (default 4096).</summary>
    [JsonPropertyName("batch_size")] public int BatchSize { get; set; } = 4096;
    /// <summary>Training steps (SAELens: <c>total_training_steps</c>); null: <see cref="TrainingTokens"/> / batch size, else
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
    /// <summary>features.safetensors of synthetic data: adds mmcs and recovered_fraction to metrics.json.</summary>
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
    /// A field of neither kind is an error (a misspelt name would otherwise leave its default in force).
    /// Without <c>normalize_activations</c> the run normalises (<see cref="DefaultNormalizeActivations"/>).</summary>
    public static TrainingSettings FromJson(string json, string source = "training settings")
    {
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
            var normalized = fields.ToJsonString();
            var settings = JsonSerializer.Deserialize<TrainingSettings>(normalized) ?? new TrainingSettings();
            settings.Trainer = TrainerConfig.FromJson(normalized, source);
            foreach (var (key, _) in fields) settings.GivenTrainerFields.Add(key);
            if (!fields.ContainsKey("normalize_activations")) settings.Trainer.NormalizeActivations = DefaultNormalizeActivations;
            return settings;
        }
        catch (JsonException e)
        {
            throw new SaeSharpException($"{source}: {e.Message}");
        }
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

    /// <summary><see cref="FromJson"/> of a file.</summary>
    public static TrainingSettings ReadFile(string path)
    {
        if (!File.Exists(path)) throw new SaeSharpException($"{path}: config file not found");
        return FromJson(File.ReadAllText(path), path);
    }
}
