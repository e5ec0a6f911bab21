using SaeSharp.Saes;
using TorchSharp;

namespace SaeSharp.Training;

/// <summary>
/// The training recipes behind <c>sae train --arch</c>: an architecture plus the training options its paper uses.
/// <list type="bullet">
/// <item><c>relu</c>: ReLU + L1, Towards Monosemanticity (unit-norm decoder rows, parallel gradient removed, dead latents resampled).</item>
/// <item><c>relu-april</c>: ReLU + L1 weighted by decoder-row norms, no norm constraint (Anthropic, April 2024).</item>
/// <item><c>topk</c>, <c>batchtopk</c>, <c>matryoshka</c>: k active latents (per row, per batch, nested prefixes) with AuxK.</item>
/// <item><c>gated</c>, <c>jumprelu</c>: Rajamanoharan et al. 2024.</item>
/// <item><c>skip_transcoder</c>, <c>jumprelu_skip_transcoder</c>: transcoders with a linear skip connection W_skip
/// (Paulo et al. 2025; Gemma Scope 2's affine transcoders), trained as relu-april and jumprelu; transcoders only.</item>
/// <item><c>matching_pursuit</c>: SAELens 6.37's matching-pursuit SAE (tied encoder, latents chosen greedily against the
/// residual), trained on the MSE alone.</item>
/// </list>
/// </summary>
public static class SaeRecipes
{
    // Anthropic's April 2024 λ = 5 at d_in 4096, scaled by √(d_in/4096) (see DefaultSparsityCoefficient).
    private static double AprilLambda(int dIn) => 5.0 * Math.Sqrt(dIn / 4096.0);

    private static readonly List<SaeRecipe> Registered =
    [
        // dictionary_learning's StandardTrainer and StandardTrainerAprilUpdate both default to lr 1e-3. relu-april used
        // Anthropic's 5e-5 (and 1/T in short runs) before: at 1,953 steps on the built-in model's activations that left it
        // 41 % behind StandardTrainerAprilUpdate's FVU at equal L0 (BENCHMARKS.md "Recipes"); at 1e-3 it matches it.
        new("relu", SaeArchitectures.Standard)
        {
            SparsityCoefficient = AprilLambda, PaperLearningRate = 1e-3, ResamplesDeadLatents = true,
            // dictionary_learning's StandardTrainer (AutoEncoder) starts b_dec at zero; from the geometric median relu
            // left 2-3× the dead latents at the same FVU and L0 on the built-in model's activations (BENCHMARKS.md "Recipes").
            BDecInitMethod = "zeros",
        },
        // SAELens's "standard" trainer (StandardTrainingSAE: the L1 of f·‖W_dec‖, lp_norm; no norm constraint, no resampling).
        new("relu-april", SaeArchitectures.Standard)
        {
            Aliases = ["standard"], Penalty = SparsityPenalty.L1DecoderNorm, SparsityCoefficient = AprilLambda, PaperLearningRate = 1e-3,
            // dictionary_learning's AutoEncoder starts b_dec at zero; the geometric median left relu-april 12 % denser at
            // the same FVU than StandardTrainerAprilUpdate at the same λ (BENCHMARKS.md "Recipes").
            BDecInitMethod = "zeros",
        },
        new("topk", SaeArchitectures.TopK),
        new("batchtopk", SaeArchitectures.BatchTopK),
        // Unit-norm decoder rows at the start, as dictionary_learning's GatedAutoEncoder: from 0.1 the same λ left gated 3×
        // denser and, at a chosen L0, twice the FVU (BENCHMARKS.md "Recipes").
        new("gated", SaeArchitectures.Gated) { SparsityCoefficient = AprilLambda, PaperLearningRate = 5e-5, DecoderInitNorm = 1.0 },
        new("jumprelu", SaeArchitectures.JumpReLU) { SparsityCoefficient = _ => 0.5, PaperLearningRate = 7e-5 },
        new("matryoshka", SaeArchitectures.MatryoshkaBatchTopK) { Aliases = ["matryoshka_batchtopk"] },
        // Skip transcoders (Paulo et al. 2025, "Transcoders beat sparse autoencoders for interpretability": sparsify's
        // --transcode with skip_connection, W_skip zero at the start). SkipTranscoderSae holds no decoder-norm constraint,
        // so a plain L1 could be lowered by shrinking the activations and growing the decoder rows; the L1 weighted by the
        // decoder-row norms (Anthropic's April 2024 update, dictionary_learning's StandardTrainerAprilUpdate) is unchanged by
        // that rescaling. So relu-april's recipe: that penalty, its λ, lr 1e-3 and b_dec from zero (the skip term and b_dec
        // both start at zero and are learned at that rate; docs/recipes.md "Skip transcoders").
        new("skip_transcoder", SaeArchitectures.SkipTranscoder)
        {
            Penalty = SparsityPenalty.L1DecoderNorm, SparsityCoefficient = AprilLambda, PaperLearningRate = 1e-3, BDecInitMethod = "zeros",
        },
        // JumpReLU with W_skip (SAELens 6.37's JumpReLUSkipTranscoder, Gemma Scope 2's affine transcoders): jumprelu's
        // recipe, unit-norm decoder rows included (JumpReluSae), and with it --target-l0 and the jumprelu fields of --config.
        new("jumprelu_skip_transcoder", SaeArchitectures.JumpReluSkipTranscoder) { SparsityCoefficient = _ => 0.5, PaperLearningRate = 7e-5 },
        // SAELens 6.37's MatchingPursuitTrainingSAE: MSE only (no sparsity coefficient: its L0 is set by residual_threshold,
        // max_iterations and stop_on_duplicate_support, fields of --config), decoder rows from norm 1 (SAELens forces
        // decoder_init_norm 1.0), b_dec from zero and lr 3e-4 (SAELens's initialize_weights and runner default).
        new("matching_pursuit", SaeArchitectures.MatchingPursuit) { PaperLearningRate = 3e-4, BDecInitMethod = "zeros", DecoderInitNorm = 1.0 },
    ];

    /// <summary>The recipe names, in registration order (aliases not included).</summary>
    public static IReadOnlyList<string> Names
    {
        get { lock (Registered) return Registered.Select(r => r.Name).ToList(); }
    }

    /// <summary>Every name <c>sae train --arch</c> accepts: the recipe names and their aliases.</summary>
    public static IReadOnlyList<string> AcceptedNames
    {
        get { lock (Registered) return Registered.SelectMany(r => r.Aliases.Prepend(r.Name)).ToList(); }
    }

    /// <summary>The recipe named <paramref name="name"/> or one of its aliases, or a <see cref="SaeSharpException"/>
    /// listing the accepted names.</summary>
    public static SaeRecipe Get(string name)
    {
        lock (Registered)
            return Registered.FirstOrDefault(r => r.Name == name) ?? Registered.FirstOrDefault(r => r.Aliases.Contains(name))
                ?? throw (SaeArchitectures.Find(name) is { InferenceOnly: true } a
                    ? new SaeSharpException($"architecture '{a.Name}' is inference only (SAELens has no training form for it either): " +
                        $"load a trained one with --sae; training architectures: {string.Join(", ", AcceptedNames)}")
                    : new SaeSharpException($"unknown architecture '{name}'{NameSuggestion.For(name, AcceptedNames)} (choose from {string.Join(", ", AcceptedNames)})"));
    }

    /// <summary>Registers a recipe of one's own, e.g. for an architecture added with <see cref="SaeArchitectures.Register"/>
    /// (its name and aliases must be new; its architecture must be registered).</summary>
    public static void Register(SaeRecipe recipe)
    {
        SaeArchitectures.Get(recipe.Architecture, "recipe");
        lock (Registered)
        {
            foreach (var n in recipe.Aliases.Prepend(recipe.Name))
                if (Registered.Any(r => r.Name == n || r.Aliases.Contains(n)))
                    throw new SaeSharpException($"recipe name '{n}' is already registered");
            Registered.Add(recipe);
        }
    }

    /// <summary>The cfg.json architecture of a recipe.</summary>
    public static string Architecture(string recipe) => Get(recipe).Architecture;

    /// <summary>
    /// Default sparsity coefficient λ of a recipe for inputs normalised to E‖x‖ = √d_in (0 for the k-sparse recipes). The
    /// L1 recipes take Anthropic's April 2024 λ = 5 at d_in 4096 and scale it by √(d_in/4096): under that normalisation a
    /// latent's magnitude grows as √d_in while the L1 soft threshold is λ/2, so a fixed λ kills every latent of a narrow
    /// model (λ 5 at d_in 32 leaves L0 ≈ 0 on synthetic data). JumpReLU keeps λ 0.5 on its L0 penalty.
    /// </summary>
    public static double DefaultSparsityCoefficient(string recipe, int dIn = 4096) => Get(recipe).SparsityCoefficient?.Invoke(dIn) ?? 0.0;

    /// <summary>Whether the recipe has a sparsity coefficient λ (and so <c>--target-l0</c> adapts it).</summary>
    public static bool HasSparsityCoefficient(string recipe) => Get(recipe).SparsityCoefficient is not null;

    /// <summary>
    /// Default learning rate of a recipe for a run of <paramref name="steps"/> steps. The papers' rates are tuned for runs
    /// of 10⁵ steps and more; Adam moves a weight by at most about lr per step, so a short run of T steps gets a larger
    /// rate, enough for biases and thresholds to travel O(1) in normalised units (E‖x‖ = √d_in) within the run.
    /// TopK family: max(2e-4/√(d_sae/2¹⁴), min(3e-3, 2/T)) (Gao et al. 2024's rate in long runs; in 300–1,000-step runs
    /// the short-run rate is what brought the held-out FVU below sparsify's at equal steps, docs/recipes.md).
    /// Sparsity-coefficient recipes: max(paper lr, min(1e-3, 1/T)) with their reference's rate (relu and relu-april 1e-3,
    /// dictionary_learning's StandardTrainer and StandardTrainerAprilUpdate; gated 5e-5, jumprelu 7e-5).
    /// </summary>
    public static double DefaultLearningRate(string recipe, int dSae, long steps)
    {
        double t = Math.Max(1, steps);
        if (Get(recipe).PaperLearningRate is not double paper) return Math.Max(Sae.ScaledTopKLearningRate(dSae), Math.Min(3e-3, 2.0 / t));
        return Math.Max(paper, Math.Min(1e-3, 1.0 / t));
    }

    /// <summary>
    /// The per-SAE training config of a recipe for a run: <paramref name="run"/> with every field the user did not give
    /// (<paramref name="given"/>, snake_case names; any lr schedule field leaves the whole schedule alone) set by the
    /// recipe's rules, stated with their sources in docs/recipes.md:
    /// lr (<see cref="DefaultLearningRate"/>); lr warm-up min(1000, T/10) steps (dictionary_learning's 1000 steps);
    /// linear decay to 0 over the last T/5 steps (Anthropic April 2024; SAELens "constant" with lr_decay_steps);
    /// sparsity warm-up over the first T/20 steps for the λ recipes (Anthropic April 2024: 5 %); gradient norm clipped to 1
    /// (Anthropic April 2024, dictionary_learning's April, TopK, BatchTopK and JumpReLU trainers); b_dec initialised to the
    /// geometric median of a sample (dictionary_learning's TopK/BatchTopK trainers, SAELens's original default), zeros for
    /// relu, relu-april and skip_transcoder (dictionary_learning's AutoEncoder; <see cref="SaeRecipe.BDecInitMethod"/>); dead-latent
    /// resampling at T/4, T/2 and 3T/4 for <c>relu</c> runs of at least 1000 steps (Towards Monosemanticity resamples 4
    /// times in 10⁵ steps).
    /// </summary>
    public static TrainerConfig RunConfig(string recipe, TrainerConfig run, int dSae, IReadOnlySet<string>? given = null)
    {
        given ??= new HashSet<string>();
        var c = run.Clone();
        long steps = run.Steps;
        if (!given.Contains("lr") && c.Lr is null) c.Lr = DefaultLearningRate(recipe, dSae, steps);
        // A schedule field given by the user leaves the whole lr schedule to the user.
        if (!given.Overlaps(["lr_scheduler_name", "lr_warm_up_steps", "lr_decay_steps", "lr_end", "n_restart_cycles"]))
        {
            c.LrWarmUpSteps = Math.Min(1000, steps / 10);
            c.LrSchedulerName = LrSchedulers.Constant;
            c.LrDecaySteps = steps / 5;
        }
        if (!given.Contains("l1_warm_up_steps") && HasSparsityCoefficient(recipe)) c.L1WarmUpSteps = steps / 20;
        if (!given.Contains("max_grad_norm")) c.MaxGradNorm = 1.0;
        if (!given.Contains("b_dec_init_method")) c.BDecInitMethod = Get(recipe).BDecInitMethod;
        if (!given.Contains("decoder_init_norm") && Get(recipe).DecoderInitNorm is double norm) c.DecoderInitNorm = norm;
        if (!given.Contains("resample_steps") && Get(recipe).ResamplesDeadLatents && steps >= 1000)
            c.ResampleSteps = [steps / 4, steps / 2, 3 * steps / 4];
        return c;
    }

    /// <summary>
    /// Makes the trainer adapt λ so that the run ends near <paramref name="targetL0"/> (<see cref="TargetL0Control"/>),
    /// starting from <paramref name="coefficient"/> or the recipe's default λ. JumpReLU trains with dictionary_learning's
    /// target-L0 penalty λ·(L0/target − 1)², λ from d_in/4 (its λ 1 is negligible against the reconstruction loss of
    /// inputs normalised to E‖x‖ = √d_in), under the two-sided controller, with SAELens's bandwidth 0.05 and thresholds
    /// initialised from the data at L0 = min(d_sae/2, 4·target), and the pre-activation loss on dead latents
    /// (<see cref="TargetL0PreActLossCoefficient"/>; see docs/recipes.md for why each is needed).
    /// </summary>
    public static void AdaptToTargetL0(Sae sae, double targetL0, double? coefficient = null)
    {
        string trainsAs = SaeArchitectures.TrainsAs(sae.Cfg.Architecture);
        if (trainsAs is not (SaeArchitectures.Standard or SaeArchitectures.Gated or SaeArchitectures.JumpReLU))
            throw new SaeSharpException($"a target L0 applies to the architectures with a sparsity coefficient, not to '{sae.Cfg.Architecture}'");
        sae.Training.TargetL0 = targetL0;
        sae.Training.AdaptToTargetL0 = true;
        if (trainsAs == SaeArchitectures.JumpReLU)
        {
            sae.Training.JumpReluPenalty = JumpReluPenalty.TargetL0;
            sae.Training.SparsityCoefficient = coefficient ?? sae.Cfg.DIn / 4.0;
            sae.Training.Bandwidth = TargetL0Bandwidth;
            sae.Training.PreActLossCoefficient ??= TargetL0PreActLossCoefficient;
            return;
        }
        sae.Training.SparsityCoefficient = coefficient ?? sae.Training.SparsityCoefficient;
    }

    /// <summary>JumpReLU under <c>--target-l0</c>: coefficient of the pre-activation loss on dead latents (Anthropic's, as
    /// SAELens computes it), on inputs normalised to E‖x‖ = √d_in. Anthropic's 3e-6 did nothing in a 488-step run (Adam's
    /// second moment still holds the gradients a latent had while alive); 1e-2 halved the latents that never fire at
    /// targets 12 and 32 at the same FVU, larger values cut more at a higher FVU (docs/recipes.md).</summary>
    public const double TargetL0PreActLossCoefficient = 1e-2;

    /// <summary>JumpReLU bandwidth ε under <c>--target-l0</c>: SAELens's current default (dictionary_learning's 0.001 lets
    /// too few pre-activations into the kernel for the thresholds to travel within a short run).</summary>
    public const double TargetL0Bandwidth = 0.05;

    /// <summary>Matryoshka prefix widths: d_sae/16, d_sae/8, d_sae/4, d_sae/2, d_sae (cumulative).</summary>
    public static int[] DefaultMatryoshkaWidths(int dSae)
    {
        var widths = new List<int>();
        for (int div = 16; div >= 1; div /= 2)
            if (dSae / div > 0 && (widths.Count == 0 || widths[^1] != dSae / div)) widths.Add(dSae / div);
        return widths.ToArray();
    }

    /// <summary>Creates an SAE (zero weights; the trainer initialises them) with the recipe's training options.
    /// <paramref name="matryoshkaWidths"/>: a Matryoshka recipe's cumulative prefix widths (null:
    /// <see cref="DefaultMatryoshkaWidths"/>); an error for other recipes. <paramref name="dOut"/>: the width of the
    /// targets of a transcoder (SAELens's <c>d_out</c>; the input is not shifted by b_dec), also when it equals d_in (an
    /// MLP's input to its output); null for an SAE, which reconstructs its input.</summary>
    public static Sae Create(string recipe, int dIn, int dSae, int? k = null, double? sparsityCoefficient = null,
        int? dOut = null, SaeMetadata? metadata = null, long? totalSteps = null, int[]? matryoshkaWidths = null)
    {
        var r = Get(recipe);
        string arch = r.Architecture;
        if (r.TranscoderOnly && dOut is null)
            throw new SaeSharpException($"--arch {recipe} trains a transcoder (its W_skip maps the input to other targets), and this run reconstructs its input: " +
                                        "give --mode in_to_out with --model (e.g. --hook blocks.N.mlp), or activation files with targets (target_name in --config, or a " +
                                        "`sae cache --mode in_to_out` folder)");
        bool topKFamily = r.IsKSparse;
        if (topKFamily && k is null) throw new SaeSharpException($"architecture '{recipe}' needs k, the active latents per row (--k)");
        if (topKFamily && k > dSae)
            throw new SaeSharpException($"{recipe}: k {k} (--k) exceeds d_sae {dSae} (--dict-size, or --expansion × d_in): give k at most d_sae");
        bool transcoder = dOut is not null;
        var cfg = new SaeConfig
        {
            Architecture = arch,
            DIn = dIn,
            DSae = dSae,
            DOut = transcoder ? dOut : null,
            K = topKFamily ? k : null,
            ApplyBDecToInput = !transcoder,
            MatryoshkaWidths = arch == SaeArchitectures.MatryoshkaBatchTopK ? (int[]?)matryoshkaWidths?.Clone() ?? DefaultMatryoshkaWidths(dSae)
                : matryoshkaWidths is null ? null : throw new SaeSharpException($"matryoshka_widths apply to matryoshka, not to '{recipe}'"),
            Metadata = metadata ?? new SaeMetadata(),
        };
        var sae = SaeFactory.Create(cfg);
        ApplyTrainingOptions(sae, r, sparsityCoefficient, totalSteps);
        return sae;
    }

    /// <summary>The recipe that fine-tunes a saved SAE of architecture <paramref name="architecture"/> when the run names
    /// none: the recipe of that architecture; for "standard" relu-april, SAELens's standard trainer (the L1 weighted by the
    /// decoder-row norms, no norm constraint: a saved SAE's decoder rows need not have unit norm). <paramref name="source"/>
    /// names the SAE in the error for an architecture without a recipe.</summary>
    public static string RecipeFor(string architecture, string source)
    {
        if (architecture == SaeArchitectures.Standard) return "relu-april";
        lock (Registered)
            return Registered.FirstOrDefault(r => r.Architecture == architecture)?.Name
                ?? throw new SaeSharpException($"{source}: a '{architecture}' SAE has no training recipe; training architectures: {string.Join(", ", Registered.Select(r => r.Architecture).Distinct())}");
    }

    /// <summary>
    /// The training SAE of <paramref name="recipe"/> that starts from <paramref name="pretrained"/> (SAELens's
    /// <c>from_pretrained_path</c>): its cfg.json fields (shape, k, apply_b_dec_to_input, matryoshka widths, matching
    /// pursuit's fields, reshape_activations) and weights in float32, with <paramref name="metadata"/> (this run's
    /// provenance) and the recipe's training options as <see cref="Create"/> sets them. <paramref name="k"/> and
    /// <paramref name="matryoshkaWidths"/>, when given, replace the SAE's. The recipe's architecture must be the SAE's.
    /// </summary>
    public static Sae CreateFrom(string recipe, Sae pretrained, SaeMetadata metadata, int? k = null, double? sparsityCoefficient = null,
        long? totalSteps = null, int[]? matryoshkaWidths = null)
    {
        ArgumentNullException.ThrowIfNull(pretrained);
        var r = Get(recipe);
        if (r.Architecture != pretrained.Cfg.Architecture)
            throw new SaeSharpException($"recipe '{recipe}' trains '{r.Architecture}' SAEs, not '{pretrained.Cfg.Architecture}'");
        var cfg = pretrained.Cfg.Clone();
        cfg.Metadata = metadata;
        cfg.Dtype = "float32";
        cfg.Device = "cpu";
        // The previous run's records (coefficients, training_tokens, ...): this run writes its own.
        cfg.Extra = null;
        if (k is not null && r.IsKSparse) cfg.K = k;
        if (matryoshkaWidths is not null) cfg.MatryoshkaWidths = (int[])matryoshkaWidths.Clone();
        if (k > cfg.DSae) throw new SaeSharpException($"{recipe}: k {k} (--k) exceeds the pretrained SAE's d_sae {cfg.DSae}: give k at most d_sae");
        cfg.Validate();
        var sae = SaeFactory.Create(cfg);
        try
        {
            using var _ = torch.no_grad();
            var from = pretrained.state_dict();
            var to = sae.state_dict();
            if (!from.Keys.Order(StringComparer.Ordinal).SequenceEqual(to.Keys.Order(StringComparer.Ordinal)))
                throw new SaeSharpException($"the saved SAE holds {string.Join(", ", from.Keys.Order(StringComparer.Ordinal))}; a '{cfg.Architecture}' training SAE of its config holds {string.Join(", ", to.Keys.Order(StringComparer.Ordinal))}");
            foreach (var (name, t) in to) t.copy_(from[name]);
        }
        catch
        {
            sae.Dispose();
            throw;
        }
        ApplyTrainingOptions(sae, r, sparsityCoefficient, totalSteps);
        return sae;
    }

    /// <summary>The recipe's training options on a new training SAE: its sparsity coefficient (given, or the recipe's at the
    /// SAE's d_in), penalty, and BatchTopK's threshold schedule for a run of <paramref name="totalSteps"/>.</summary>
    private static void ApplyTrainingOptions(Sae sae, SaeRecipe r, double? sparsityCoefficient, long? totalSteps)
    {
        sae.Training.SparsityCoefficient = sparsityCoefficient ?? DefaultSparsityCoefficient(r.Name, sae.Cfg.DIn);
        sae.Training.Penalty = r.Penalty;
        // BatchTopK estimates its inference threshold from step 1000 with momentum 0.999 (dictionary_learning), an average
        // over about 1000 steps. Short runs start at a quarter and average over a fifth of the remaining steps, so that the
        // estimate follows the activations of the end of training rather than of the step where it started.
        if (totalSteps is long steps)
        {
            sae.Training.ThresholdStartStep = Math.Min(sae.Training.ThresholdStartStep, steps / 4);
            long estimated = steps - sae.Training.ThresholdStartStep;
            if (estimated > 0) sae.Training.ThresholdMomentum = Math.Min(sae.Training.ThresholdMomentum, Math.Max(0, 1 - 5.0 / estimated));
        }
    }
}
