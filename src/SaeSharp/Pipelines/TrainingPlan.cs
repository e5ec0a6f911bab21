using System.Text.Json;
using SaeSharp.Activations;
using SaeSharp.Data;
using SaeSharp.Interop;
using SaeSharp.Models;
using SaeSharp.Saes;
using SaeSharp.Synthetic;
using SaeSharp.Training;
using static TorchSharp.torch;

namespace SaeSharp.Pipelines;

/// <summary>
/// A training run prepared from <see cref="TrainingSettings"/> exactly as <c>sae train</c> prepares it: the sources opened
/// (activation files with a held-out tail, or a model harvested on text with a second pass for the metrics), the SAEs
/// created by their recipes, and the run's policies applied: the token budget (<see cref="InitializationRows"/>), the
/// checkpoint and log cadence (<see cref="ApplyCadence"/>), the provenance written into cfg.json
/// (<see cref="MetadataOf(ActivationCacheManifest)"/>), the recipes' schedules, resampling and normalisation
/// (<see cref="SaeRecipes.RunConfig"/>). <see cref="Run"/> trains and writes the SAEs; disposing closes the sources and SAEs.
/// </summary>
public sealed class TrainingPlan : IDisposable
{
    private readonly List<IDisposable> _owned = [];

    /// <summary>What <see cref="TrainingRun.Run"/> is given.</summary>
    public TrainingRunOptions Options { get; }

    private readonly List<string> _notes = [];

    /// <summary>What the plan changed in the settings it was given, for the user to read (e.g. a matryoshka level added).</summary>
    public IReadOnlyList<string> Notes => _notes;

    /// <summary>The model and text the SAEs are trained from (<see cref="ForModel"/>), else null.</summary>
    public ModelDataOptions? ModelData { get; private init; }

    /// <summary>Tokens of the end-of-training evaluation inside the model: the positions kept of the
    /// <see cref="HeldOutContexts"/> windows.</summary>
    public long ModelEvalTokens { get; private init; }

    /// <summary>A run from a model (<see cref="ForModel"/>): the first context windows of the dataset, held out of training
    /// (in every pass) and evaluated for metrics.json (<see cref="ModelPipeline.HeldOutContexts"/>); 0 otherwise.</summary>
    public int HeldOutContexts { get; private init; }

    /// <summary>What metrics.json records of the evaluated data of a run from a model: <c>eval_held_out</c> true,
    /// <c>eval_contexts</c> (the dataset's first windows, skipped by training) and <c>eval_tokens</c> (their positions kept by
    /// the seqpos_slice; <c>n_rows</c> counts the rows left after excluded tokens).</summary>
    private static System.Text.Json.Nodes.JsonObject HeldOutRecord(int contexts, long tokens) => new()
    {
        ["eval_held_out"] = true, ["eval_contexts"] = contexts, ["eval_tokens"] = tokens,
    };

    private TrainingPlan(TrainingSettings s, TrainerConfig trainer, bool resume, IActivationSource train, IActivationSource eval, long? evalRows,
        SaeMetadata metadata, long steps, bool transcoder, Sae? pretrained = null, System.Text.Json.Nodes.JsonObject? evalRecord = null)
    {
        // transcoder: the source's targets are another activation than its inputs (an output hook, or target files),
        // whatever their widths. pretrained: the SAE loaded from s.FromPretrainedPath, disposed here once copied.
        _owned.Add(train);
        _owned.Add(eval);
        try
        {
            IReadOnlyList<string> recipes;
            if (pretrained is not null)
            {
                recipes = [PretrainedRecipe(s, pretrained)];
                CheckPretrained(s, trainer, pretrained, train, transcoder, metadata, _notes);
                if (resume) CheckResumedPretrained(s, Path.Combine(s.Out ?? "", TrainingRun.CheckpointFolder));
            }
            else recipes = s.Recipes;
            CheckReshape(s, s.ReshapeActivations, metadata);
            // lr 0 runs a saved SAE through the training loop unchanged (its losses logged, metrics.json written).
            if (s.Lr is double lr && !((lr > 0 || (lr == 0 && pretrained is not null)) && double.IsFinite(lr)))
                throw new SaeSharpException($"--lr {lr}: expected a positive, finite learning rate (0 only with --from-pretrained)");
            if (s.L1Coefficient is double l1 && !(l1 >= 0 && double.IsFinite(l1)))
                throw new SaeSharpException($"--l1 {l1}: expected a non-negative, finite sparsity coefficient");
            int dIn = train.DIn, dSae = pretrained?.Cfg.DSae ?? s.DSaeFor(dIn);
            int? dOut = transcoder || train.DOut != dIn ? train.DOut : null;
            if (s.DSae is int asked && s.ExpansionFactor is int factor && asked != factor * dIn)
                throw new SaeSharpException($"--dict-size {asked} and --expansion {factor} disagree at d_in {dIn} ({factor} × {dIn} = {factor * dIn}): give one");
            if (s.K is int k && recipes.All(r => !SaeRecipes.Get(r).IsKSparse))
                throw new SaeSharpException($"--k {k} applies to topk, batchtopk and matryoshka; {SparsitySetBy(recipes)}");
            // A run none of whose recipes has a sparsity coefficient (topk family, matching_pursuit) would ignore λ.
            if (s.L1Coefficient is double l1Given && !recipes.Any(SaeRecipes.HasSparsityCoefficient))
                throw new SaeSharpException($"--l1 {l1Given} (l1_coefficient) applies to " +
                                            $"{string.Join(", ", SaeRecipes.Names.Where(SaeRecipes.HasSparsityCoefficient))}; {SparsitySetBy(recipes)}");
            trainer.TotalTrainingSteps = steps;
            trainer.TrainBatchSizeTokens = s.BatchSize;
            // SAELens's dead_feature_window W counts steps (dead when more than W steps without firing); the trainer counts
            // rows (dead when at least R rows without firing): R = (W + 1) · batch size is the same test.
            if (s.DeadFeatureWindowSteps is long deadSteps) trainer.DeadFeatureWindow = checked((deadSteps + 1) * s.BatchSize);
            trainer.Seed = s.Seed;
            trainer.Lr = s.Lr ?? trainer.Lr;
            var given = new HashSet<string>(s.GivenTrainerFields, StringComparer.Ordinal);
            if (s.Lr is not null) given.Add("lr");
            if (s.TargetL0 is double target)
            {
                if (!(target > 0)) throw new SaeSharpException($"--target-l0 {target}: expected a positive number of active latents");
                foreach (var r in recipes.Where(r => !SaeRecipes.HasSparsityCoefficient(r)))
                    throw new SaeSharpException($"--target-l0 applies to {string.Join(", ", SaeRecipes.Names.Where(SaeRecipes.HasSparsityCoefficient))}; '{r}' sets its L0 with " +
                                                SparsityKnobs(r));
            }
            ApplyCadence(trainer, steps, s.CheckpointEvery > 0 ? s.CheckpointEvery : s.NCheckpoints is int n and > 0 ? Math.Max(1, steps / n) : 0);
            var pass = s.ParsedCandidatePass;
            if (s.Deterministic && pass == Kernels.CandidatePass.Auto) pass = Kernels.CandidatePass.Off;
            s.CheckArchitectureFields(recipes);
            var matryoshkaWidths = s.MatryoshkaWidths;
            if (matryoshkaWidths is { Length: > 0 } widths && widths[^1] != dSae)
            {
                if (widths[^1] > dSae)
                    throw new SaeSharpException($"{s.Source ?? "training settings"}: matryoshka_widths [{string.Join(", ", widths)}] go past d_sae {dSae}");
                // SAELens's _validate_matryoshka_config: a last level narrower than d_sae gets d_sae added, with a warning.
                matryoshkaWidths = [.. widths, dSae];
                _notes.Add($"matryoshka_widths [{string.Join(", ", widths)}] do not end at d_sae {dSae}: a last level of {dSae} is added, as SAELens does");
            }
            var slots = new List<SaeSlot>();
            foreach (var r in recipes)
            {
                bool matryoshka = SaeRecipes.Architecture(r) == SaeArchitectures.MatryoshkaBatchTopK;
                var sae = pretrained is null
                    ? SaeRecipes.Create(r, dIn, dSae, s.K, s.SparsityCoefficientFor(r), dOut, metadata, steps, matryoshka ? matryoshkaWidths : null)
                    : SaeRecipes.CreateFrom(r, pretrained, metadata, s.K, s.SparsityCoefficientFor(r), steps, matryoshka && s.MatryoshkaWidths is not null ? matryoshkaWidths : null);
                _owned.Add(sae);
                if (pretrained is null || s.ReshapeActivations != "none") sae.Cfg.ReshapeActivations = s.ReshapeActivations;
                if (s.ApplyBDecToInput is bool apply && pretrained is not null)
                {
                    // SAELens's runner loads the saved SAE with its own config, whatever the runner's sae fields say.
                    if (apply != pretrained.Cfg.ApplyBDecToInput)
                        _notes.Add($"apply_b_dec_to_input {(apply ? "true" : "false")} is ignored: the SAE at from_pretrained_path has {(apply ? "false" : "true")}, which the run keeps (as SAELens loads it)");
                }
                else if (s.ApplyBDecToInput is bool applyGiven)
                {
                    if (applyGiven && transcoder)
                        throw new SaeSharpException($"{s.Source ?? "training settings"}: apply_b_dec_to_input true: a transcoder's b_dec is its output's bias, not its input's (SAELens refuses it for transcoders too)");
                    sae.Cfg.ApplyBDecToInput = applyGiven;
                }
                if (s.TargetL0 is double t) SaeRecipes.AdaptToTargetL0(sae, t, s.SparsityCoefficientFor(r));
                sae.Training.Autocast = s.Autocast;
                sae.Training.CandidatePass = pass;
                if (s.Deterministic && sae is StandardSae relu && double.IsNaN(relu.SparseTrainingDensity)) relu.SparseTrainingDensity = SparsePassSwitch.PriorDensity;
                var config = SaeRecipes.RunConfig(r, trainer, dSae, given);
                if (sae is MatchingPursuitSae && config.DecoderInitNorm != 1.0)
                {
                    // SAELens's MatchingPursuitTrainingSAEConfig sets decoder_init_norm to 1.0 with a warning; so does the SAE's init.
                    _notes.Add($"decoder_init_norm {config.DecoderInitNorm}: matching_pursuit starts its decoder rows at norm 1, as SAELens sets it (decoder_init_norm must be 1.0 for matching pursuit)");
                    config.DecoderInitNorm = 1.0;
                }
                s.ApplyArchitectureFields(sae, config);
                if (pretrained is not null && sae is TopKFamilySae)
                {
                    // As apply_b_dec_to_input: SAELens's runner loads the saved SAE with its own cfg.json's value.
                    bool rescale = PretrainedRescale(s, pretrained);
                    if (s.RescaleActsByDecoderNorm is bool rescaleGiven && rescaleGiven != rescale)
                        _notes.Add($"rescale_acts_by_decoder_norm {(rescaleGiven ? "true" : "false")} is ignored: the SAE at from_pretrained_path has {(rescale ? "true" : "false")}, which the run keeps (as SAELens loads it)");
                    else if (s.RescaleActsByDecoderNorm is null && !rescale)
                        _notes.Add("rescale_acts_by_decoder_norm false: the SAE at from_pretrained_path has false (free decoder rows), which the run keeps (as SAELens loads it)");
                    sae.Training.RescaleActsByDecoderNorm = rescale;
                }
                if (pretrained is not null) config.FromPretrainedPath = s.FromPretrainedPath;
                if (sae.Training.LpNorm != 1 && s.Autocast)
                    _notes.Add($"{r}: lp_norm {sae.Training.LpNorm} trains on dense float32 torch operations; --autocast does not apply to it");
                slots.Add(new SaeSlot(r, sae, config));
            }
            if (resume) CheckResumedArchitectureFields(s, slots, Path.Combine(s.Out ?? "", TrainingRun.CheckpointFolder));
            var features = s.GroundTruth is null ? null : SyntheticDataset.ReadFeatures(s.GroundTruth);
            if (features is not null) _owned.Add(features);
            Options = new TrainingRunOptions
            {
                OutDir = s.Out ?? throw new SaeSharpException("give --out (or 'out' in --config)"),
                Trainer = trainer, Saes = slots, TrainSource = train, EvalSource = eval,
                EvalRows = evalRows ?? ActivationSplit.DefaultEvalRows, GroundTruthFeatures = features, Resume = resume,
                Overwrite = s.Overwrite, EvalRecord = evalRecord,
            };
        }
        catch
        {
            Dispose();
            throw;
        }
        finally
        {
            pretrained?.Dispose();
        }
    }

    /// <summary>The SAE of <see cref="TrainingSettings.FromPretrainedPath"/> (any path <see cref="SaeLoader"/> loads, a
    /// release included), or null.</summary>
    /// <summary>What sets a recipe's sparsity, for the messages that refuse a flag it does not use.</summary>
    private static string SparsityKnobs(string recipe) =>
        SaeRecipes.Get(recipe).IsKSparse ? "--k"
        : SaeRecipes.HasSparsityCoefficient(recipe) ? "--l1 or --target-l0"
        : "max_iterations, residual_threshold and stop_on_duplicate_support (--config)";

    /// <summary>"relu sets its sparsity with --l1 or --target-l0", one clause per recipe of the run.</summary>
    private static string SparsitySetBy(IReadOnlyList<string> recipes) =>
        string.Join("; ", recipes.Select(r => $"{r} sets its sparsity with {SparsityKnobs(r)}"));

    private static Sae? LoadPretrained(TrainingSettings s) => s.FromPretrainedPath is { } path ? SaeLoader.Load(path) : null;

    private static string PretrainedName(TrainingSettings s) => $"--from-pretrained {s.FromPretrainedPath}";

    /// <summary>A run from a saved SAE that gives no normalize_activations trains on the activations as they are, the
    /// scale its weights work in (SAELens fine-tunes its saved SAEs, whose cfg says "none", so).</summary>
    private static void UsePretrainedNormalization(TrainingSettings s, TrainerConfig trainer)
    {
        if (s.FromPretrainedPath is not null && !s.GivenTrainerFields.Contains("normalize_activations")) trainer.NormalizeActivations = "none";
    }

    /// <summary>The recipe that fine-tunes <paramref name="p"/>: the one the settings name, which must train its
    /// architecture, else the recipe of its architecture (<see cref="SaeRecipes.RecipeFor"/>). One SAE per run.</summary>
    private static string PretrainedRecipe(TrainingSettings s, Sae p)
    {
        string arch = p.Cfg.Architecture, name = PretrainedName(s);
        if (!s.ArchitectureGiven) return SaeRecipes.RecipeFor(arch, name);
        var recipes = s.Recipes;
        if (recipes.Count != 1)
            throw new SaeSharpException($"{name}: a run from a saved SAE trains that one SAE; this run names {string.Join(", ", recipes)} (--arch / architecture): give one");
        if (SaeRecipes.Architecture(recipes[0]) != arch)
        {
            bool savedAsJumpRelu = arch == SaeArchitectures.JumpReLU && SaeRecipes.Architecture(recipes[0]) is SaeArchitectures.BatchTopK or SaeArchitectures.MatryoshkaBatchTopK;
            throw new SaeSharpException($"{name}: the SAE is a '{arch}' SAE, and --arch {recipes[0]} trains '{SaeRecipes.Architecture(recipes[0])}' SAEs: " +
                                        $"give --arch {SaeRecipes.RecipeFor(arch, name)} or leave it out" +
                                        (savedAsJumpRelu ? " (a BatchTopK or Matryoshka SAE is saved in its JumpReLU inference form; continue its own run with --resume)" : ""));
        }
        return recipes[0];
    }

    private static readonly string[] InitializationFields = ["b_dec_init_method", "decoder_init_norm", "init_encoder_as_decoder_transpose"];

    /// <summary>SAELens's defaults of <c>decoder_init_norm</c> and <c>jumprelu_init_threshold</c>, which its
    /// <c>to_dict()</c> writes into every config.</summary>
    private const double SaeLensDecoderInitNorm = 0.1, SaeLensJumpReluInitThreshold = 0.01;

    /// <summary>The saved SAE must fit the run: d_in, d_sae, autoencoder or transcoder, hook and head; the fields that
    /// initialise a new SAE are refused (its weights are the start), unless at SAELens's defaults (ignored, noted in
    /// <paramref name="notes"/>). Each misfit is an error naming both values.</summary>
    private static void CheckPretrained(TrainingSettings s, TrainerConfig trainer, Sae p, IActivationSource train, bool transcoder, SaeMetadata metadata, List<string> notes)
    {
        string name = PretrainedName(s);
        var c = p.Cfg;
        if (c.NormalizeActivations != "none")
            throw new SaeSharpException($"{name}: the SAE normalises its input at run time (normalize_activations \"{c.NormalizeActivations}\"); SaeSharp trains SAEs without run-time normalisation");
        string where = metadata.HookName is { } h ? $"the activations at {h}" : "the activations";
        if (c.DIn != train.DIn)
            throw new SaeSharpException($"{name}: the SAE has d_in {c.DIn}, and {where} have width {train.DIn}");
        if (s.DSae is int d && d != c.DSae)
            throw new SaeSharpException($"{name}: the SAE has d_sae {c.DSae}, and this run asks for d_sae {d} (--dict-size): give {c.DSae} or leave it out");
        if (s.ExpansionFactor is int f && (long)f * train.DIn != c.DSae)
            throw new SaeSharpException($"{name}: the SAE has d_sae {c.DSae}, and --expansion {f} asks for {(long)f * train.DIn} at d_in {train.DIn}: leave it out");
        if ((c.DOut is not null) != transcoder)
            throw new SaeSharpException($"{name}: the SAE is {(c.DOut is null ? "an autoencoder (it reconstructs its input)" : $"a transcoder (d_out {c.DOut})")}, " +
                                        $"and this run trains {(transcoder ? "a transcoder" : "an autoencoder")}");
        if (c.DOutOrIn != train.DOut)
            throw new SaeSharpException($"{name}: the SAE reconstructs width {c.DOutOrIn}, and this run's targets have width {train.DOut}");
        if (metadata.HookName is { } hook && c.Metadata.HookName is { } saeHook && hook != saeHook)
            throw new SaeSharpException($"{name}: the SAE reads {saeHook}, and this run trains at {hook}: give --hook {saeHook} (hook_name) or leave it out");
        if (metadata.HookHeadIndex != c.Metadata.HookHeadIndex)
            throw new SaeSharpException($"{name}: the SAE reads {Head(c.Metadata.HookHeadIndex)}, and this run trains on {Head(metadata.HookHeadIndex)}: " +
                                        (c.Metadata.HookHeadIndex is int saeHead ? $"give --hook-head-index {saeHead} or leave it out" : "leave --hook-head-index out"));
        if (p is TopKFamilySae && PretrainedRescale(s, p))
        {
            using var scope = NewDisposeScope();
            var norms = p.WDec.detach().norm(1);
            double min = norms.min().item<float>(), max = norms.max().item<float>();
            if (max - min > 1e-4 * max)
                throw new SaeSharpException($"{name}: the SAE's decoder rows have norms from {min:G4} to {max:G4}; SaeSharp's {c.Architecture} training holds them at " +
                                            "one norm, and rescaling each latent by its own norm would change which latents are selected " +
                                            "(rescale_acts_by_decoder_norm false in --config trains it as it is, with free decoder rows)");
        }
        var init = InitializationFields.Where(s.GivenTrainerFields.Contains).ToList();
        if (s.JumpReluInitThreshold is not null) init.Add("jumprelu_init_threshold");
        // SAELens's to_dict() writes its defaults of these; its runner ignores them with from_pretrained_path.
        var ignored = init.Where(f => f switch
        {
            "decoder_init_norm" => trainer.DecoderInitNorm == SaeLensDecoderInitNorm,
            "jumprelu_init_threshold" => s.JumpReluInitThreshold == SaeLensJumpReluInitThreshold,
            _ => false,
        }).ToList();
        if (ignored.Count > 0)
            notes.Add($"{name}: ignored: {string.Join(", ", ignored)} (SAELens's default{(ignored.Count == 1 ? "" : "s")}, which initialise{(ignored.Count == 1 ? "s" : "")} a new SAE; the run starts from the saved SAE's weights)");
        init.RemoveAll(ignored.Contains);
        if (init.Count > 0)
            throw new SaeSharpException($"{name}: {string.Join(", ", init)} set{(init.Count == 1 ? "s" : "")} how a new SAE is initialised; the run starts from the saved SAE's weights: leave {(init.Count == 1 ? "it" : "them")} out");
        static string Head(int? head) => head is int i ? $"head {i} (hook_head_index)" : "the whole hook";
    }

    /// <summary><c>rescale_acts_by_decoder_norm</c> in the cfg.json of a saved SAE (SaeLensFormat keeps a false one), or null.</summary>
    private static bool? SavedRescale(Sae p) =>
        p.Cfg.Extra?.TryGetValue("rescale_acts_by_decoder_norm", out var v) == true && v.ValueKind is System.Text.Json.JsonValueKind.True or System.Text.Json.JsonValueKind.False
            ? v.GetBoolean() : null;

    /// <summary>Whether a run from the saved SAE <paramref name="p"/> trains with rescale_acts_by_decoder_norm: the value its
    /// cfg.json holds (SAELens's runner loads the SAE with its own config), else the settings', else true.</summary>
    private static bool PretrainedRescale(TrainingSettings s, Sae p) => SavedRescale(p) ?? s.RescaleActsByDecoderNorm ?? true;

    /// <summary>With <c>--resume</c> and <c>--from-pretrained</c>: the checkpoint's run must have started from the same
    /// saved SAE (its weights are in the checkpoint; the path only says which run this is).</summary>
    private static void CheckResumedPretrained(TrainingSettings s, string checkpoints)
    {
        if (!Directory.Exists(checkpoints)) return;
        using var state = TrainerCheckpoint.Load(checkpoints);
        var had = state.Saes.Select(e => e.Config.FromPretrainedPath).Distinct().ToList();
        if (had.Count != 1 || had[0] != s.FromPretrainedPath)
            throw new SaeSharpException($"{PretrainedName(s)}: --resume continues the run of {state.Folder}, which started from " +
                                        (had.All(p => p is null) ? "a new SAE" : string.Join(", ", had.Where(p => p is not null))) +
                                        ": leave --from-pretrained out (the checkpoint holds the weights), or start a new run with --force or another --out");
    }

    /// <summary>SAELens's <c>reshape_activations</c>: "none", or "hook_z" for an SAE on a hook_z (SAELens's check: the hook
    /// name ends in "_z"), whose heads are flattened, and not with one head (hook_head_index).</summary>
    private static void CheckReshape(TrainingSettings s, string reshape, SaeMetadata metadata)
    {
        string source = s.Source ?? "training settings";
        if (reshape is not ("none" or "hook_z"))
            throw new SaeSharpException($"{source}: reshape_activations \"{reshape}\": expected \"none\" or \"hook_z\" (SAELens's values)");
        if (reshape != "hook_z") return;
        if (metadata.HookName is { } hook && !hook.EndsWith("_z", StringComparison.Ordinal))
            throw new SaeSharpException($"{source}: reshape_activations \"hook_z\" describes an SAE on attn.hook_z, whose heads are flattened; {hook} is not a hook_z " +
                                        "(give \"none\", or hook_name blocks.N.attn.hook_z)");
        if (metadata.HookHeadIndex is int head)
            throw new SaeSharpException($"{source}: reshape_activations \"hook_z\" flattens every head of the hook, and hook_head_index {head} trains on one: give one of them");
    }

    /// <summary>With <c>--resume</c>: the architecture fields the settings give (<see cref="TrainingSettings.ArchitectureFields"/>)
    /// must hold the values the checkpoint's run trains with (a resume continues that run as configured; a differing value
    /// would be ignored). A coefficient that <c>target_l0</c> adapts is not compared.</summary>
    private static void CheckResumedArchitectureFields(TrainingSettings s, List<SaeSlot> slots, string checkpoints)
    {
        if ((s.GivenArchitectureFields.Count == 0 && s.ApplyBDecToInput is null) || !Directory.Exists(checkpoints)) return;
        using var state = TrainerCheckpoint.Load(checkpoints);
        var differ = new List<string>();
        foreach (var slot in slots)
        {
            var had = state.Saes.FirstOrDefault(e => e.Name == slot.Name);
            if (had is null) continue;
            var now = slot.Sae.Training;
            if (s.ApplyBDecToInput is bool apply && apply != had.SaeConfig.ApplyBDecToInput)
                differ.Add($"apply_b_dec_to_input {(apply ? "true" : "false")} ({slot.Name} in the checkpoint's run: {(apply ? "false" : "true")})");
            void Check(string field, object? given, object? run)
            {
                if (given is null || !s.GivenArchitectureFields.Contains(field)) return;
                if (!Equals(given, run)) differ.Add($"{field} {Format(given)} ({slot.Name} in the checkpoint's run: {Format(run)})");
            }
            switch (SaeArchitectures.TrainsAs(slot.Sae.Cfg.Architecture))
            {
                case SaeArchitectures.JumpReLU:
                    if (!had.Training.AdaptToTargetL0) Check("l0_coefficient", s.L0Coefficient, had.Training.SparsityCoefficient);
                    Check("l0_warm_up_steps", s.L0WarmUpSteps, had.Config.L1WarmUpSteps);
                    Check("jumprelu_bandwidth", now.Bandwidth, had.Training.Bandwidth);
                    Check("jumprelu_init_threshold", now.InitialThreshold, had.Training.InitialThreshold);
                    Check("pre_act_loss_coefficient", now.PreActLossCoefficient, had.Training.PreActLossCoefficient ?? 0.0);
                    break;
                case SaeArchitectures.Standard:
                    Check("lp_norm", now.LpNorm, had.Training.LpNorm);
                    break;
                case SaeArchitectures.MatchingPursuit:
                    Check("residual_threshold", slot.Sae.Cfg.ResidualThreshold, had.SaeConfig.ResidualThreshold);
                    Check("max_iterations", slot.Sae.Cfg.MaxIterations, had.SaeConfig.MaxIterations);
                    Check("stop_on_duplicate_support", slot.Sae.Cfg.StopOnDuplicateSupport, had.SaeConfig.StopOnDuplicateSupport);
                    break;
                case SaeArchitectures.TopK or SaeArchitectures.BatchTopK or SaeArchitectures.MatryoshkaBatchTopK:
                    Check("aux_loss_coefficient", now.AuxKCoefficient, had.Training.AuxKCoefficient);
                    if (s.RescaleActsByDecoderNorm is not null && now.RescaleActsByDecoderNorm != had.Training.RescaleActsByDecoderNorm)
                        differ.Add($"rescale_acts_by_decoder_norm {(now.RescaleActsByDecoderNorm ? "true" : "false")} ({slot.Name} in the checkpoint's run: {(had.Training.RescaleActsByDecoderNorm ? "true" : "false")})");
                    // Compared as the momentum the run keeps (1 − rate), shown as rates.
                    if (slot.Sae.Cfg.Architecture != SaeArchitectures.TopK && s.TopKThresholdLr is double rate && now.ThresholdMomentum != had.Training.ThresholdMomentum)
                        differ.Add($"topk_threshold_lr {Format(rate)} ({slot.Name} in the checkpoint's run: {Format(1 - had.Training.ThresholdMomentum)})");
                    if (s.MatryoshkaWidths is not null && slot.Sae.Cfg.MatryoshkaWidths is { } widths && had.SaeConfig.MatryoshkaWidths is { } runWidths && !widths.SequenceEqual(runWidths))
                        differ.Add($"matryoshka_widths [{string.Join(", ", widths)}] ({slot.Name} in the checkpoint's run: [{string.Join(", ", runWidths)}])");
                    if (slot.Sae.Cfg.Architecture == SaeArchitectures.MatryoshkaBatchTopK)
                        Check("use_matryoshka_aux_loss", now.UseMatryoshkaAuxLoss, had.Training.UseMatryoshkaAuxLoss);
                    break;
            }
        }
        if (differ.Count > 0)
            throw new SaeSharpException($"{s.Source ?? "training settings"}: --resume continues the run of {state.Folder} as it was configured; these fields differ from it: " +
                                        string.Join("; ", differ) + ". Drop them, or start a new run with --force or another --out");
        static string Format(object? v) => v switch { double d => d.ToString("R", System.Globalization.CultureInfo.InvariantCulture), null => "off", _ => Convert.ToString(v, System.Globalization.CultureInfo.InvariantCulture)! };
    }

    /// <summary>Trains on activation files (<see cref="TrainingSettings.Activations"/>): the last
    /// <see cref="TrainingSettings.EvalRows"/> rows are held out for metrics.json; a <c>sae cache</c> folder gives the SAEs
    /// its model, hook and dataset as cfg.json metadata, and its targets (transcoders).</summary>
    public static TrainingPlan ForActivations(TrainingSettings s, bool resume = false)
    {
        if (s.Activations is null) throw new SaeSharpException("give --activations (or 'activations' in --config), or --model/--hook/--dataset");
        _ = s.Recipes;
        var metadata = new SaeMetadata { DatasetPath = s.Activations };
        string? targetName = s.TargetName;
        if (File.Exists(Path.Combine(s.Activations, ActivationCacheFolder.ManifestName)))
        {
            var manifest = ActivationCacheManifest.Read(s.Activations);
            metadata = MetadataOf(manifest);
            if (manifest.TargetHook is not null) targetName ??= "targets";
        }
        string? cacheHook = null;
        if (SaeLensActivationCache.IsCache(s.Activations))
        {
            var cache = SaeLensActivationCache.Open(s.Activations);
            var column = cache.Column(s.HookName);
            // As SAELens's load_cached_activation_dataset: the run's context_size must be the cache's window.
            // (A cache of sliced windows also takes the runner config's context_size, the windows before the slice.)
            if (s.ContextSize is int ctx && ctx != column.ContextSize && ctx != cache.ContextSize)
                throw new SaeSharpException($"{s.Source ?? "training settings"}: context_size {ctx} does not match the SAELens activation cache {s.Activations}, " +
                                            $"whose {column.Name} windows are [{column.ContextSize}, {column.DIn}] (context_size, d_in)");
            cacheHook = column.Name;
            metadata = MetadataOf(cache, column);
        }
        RefuseWindowFieldsTheRowsLack(s, metadata, SaeLensActivationCache.IsCache(s.Activations) ? $"the SAELens activation cache {s.Activations}"
            : File.Exists(Path.Combine(s.Activations, ActivationCacheFolder.ManifestName)) ? $"the cache {s.Activations}" : $"the activation files {s.Activations}");
        // exclude_special_tokens: the rows of the excluded tokens are dropped as they are read (SAELens filters a cache's rows
        // by their token_ids), and cfg.json records the run's setting as a run on a model does.
        // The run's model (a cached run's model_name) stands in for files that record none, as in SAELens, which takes the
        // special tokens from the run's model.
        string? runModel = s.ActivationsModelName ?? s.ModelName;
        var excluded = ActivationFileExclusion.Resolve(s.Activations, s.ExcludeSpecialTokens, s.ExcludeTokenIds, s.Source ?? "training settings", runModel);
        metadata.ModelName ??= runModel;
        if (s.ExcludeTokenIds is { Length: > 0 } listed) (metadata.ExcludeSpecialTokens, metadata.ExcludeTokenIds) = (null, [.. listed]);
        else if (s.ExcludeSpecialTokens == true) (metadata.ExcludeSpecialTokens, metadata.ExcludeTokenIds) = (true, null);
        // SAELens reads a cache in order through the same mixing buffer as a model's activations: fraction 0 is that order;
        // the file source's own buffer (uniform draws, refilled when half empty) stands for SAELens's default 0.5 only.
        if (s.ActivationsMixingFraction is double f && f != 0 && f != 0.5)
            throw new SaeSharpException($"{s.Source ?? "training settings"}: activations_mixing_fraction {f} applies to runs from a model (model_name / --model); " +
                                        "a run on activation files takes 0 (rows in file order) or 0.5 (SaeSharp's file buffer, SAELens's default)");
        if (s.HookHeadIndex is int head)
            throw new SaeSharpException($"{s.Source ?? "training settings"}: hook_head_index {head} applies to runs from a model (--model), which harvest that head; " +
                                        "activation files hold the activations as they were written");
        var fileOptions = new ActivationFileSourceOptions
        {
            Seed = (ulong)s.Seed, Epochs = s.Epochs ?? 0, TargetName = targetName, Shuffle = s.ActivationsMixingFraction != 0, HookName = cacheHook ?? s.HookName, ExcludeTokenIds = excluded,
        };
        var pretrained = LoadPretrained(s);
        ActivationFileSource? train = null, eval = null;
        try
        {
            (train, eval) = ActivationSplit.HoldOut([s.Activations], s.EvalRows, fileOptions);
            s.CheckDIn(train.DIn, metadata.HookName is { } h ? $"the activations at {h} in {s.Activations}" : $"the activations in {s.Activations}");
            // Activation files say nothing of a head, plain files nothing of their hook: the saved SAE's then describe them
            // (its d_in is checked against their width).
            if (pretrained is not null && (metadata.HookName is null || metadata.HookName == pretrained.Cfg.Metadata.HookName))
            {
                metadata.HookName ??= pretrained.Cfg.Metadata.HookName;
                metadata.HookHeadIndex = pretrained.Cfg.Metadata.HookHeadIndex;
            }
        }
        catch
        {
            train?.Dispose();
            eval?.Dispose();
            pretrained?.Dispose();
            throw;
        }
        var trainer = s.Trainer.Clone();
        UsePretrainedNormalization(s, trainer);
        return new TrainingPlan(s, trainer, resume, train, eval, eval.Rows, metadata, s.RunSteps ?? 1000, transcoder: targetName is not null, pretrained);
    }

    /// <summary>A run on activation files takes the stored windows as they are: a config's <c>seqpos_slice</c>,
    /// <c>disable_concat_sequences</c> true or <c>sequence_separator_token</c> other than "bos" that the rows were not
    /// harvested with (<paramref name="recorded"/>: a cache's manifest or SAELens runner config; nothing for plain files) is
    /// refused, naming the field, rather than ignored. SAELens's defaults ([null], false, "bos"), which its <c>to_dict()</c>
    /// always writes, pass. (exclude_special_tokens is applied to the rows as they are read: <see cref="ActivationFileExclusion"/>.)</summary>
    private static void RefuseWindowFieldsTheRowsLack(TrainingSettings s, SaeMetadata recorded, string rows)
    {
        string where = s.Source ?? "training settings";
        var have = recorded.SeqposSlice() ?? Saes.SeqposSlice.All;
        if (s.SeqposSlice is { IsAll: false } slice && (slice.Start ?? 0, slice.Stop, slice.Step ?? 1) != (have.Start ?? 0, have.Stop, have.Step ?? 1))
            throw new SaeSharpException($"{where}: seqpos_slice {slice.ToJson().ToJsonString()}: {rows} holds {(have.IsAll ? "every position of its windows" : $"the positions {have} of its windows")}; " +
                                        "give its slice, or harvest with this one (sae cache --seqpos-slice)");
        if (s.DisableConcatSequences == true && recorded.DisableConcatSequences() != true)
            throw new SaeSharpException($"{where}: disable_concat_sequences true: {rows} holds windows of documents packed together; " +
                                        "give false, or harvest with it (sae cache --disable-concat-sequences)");
        if (s.SequenceSeparatorToken is { } sep && sep != Data.PretokenizeToken.Bos && sep != recorded.SequenceSeparatorToken())
            throw new SaeSharpException($"{where}: sequence_separator_token {(sep == Data.PretokenizeToken.None ? "null" : sep.ToString())}: {rows} " +
                                        $"was harvested with {(recorded.SequenceSeparatorToken() is { } r2 ? (r2 == Data.PretokenizeToken.None ? "null" : r2.ToString()) : "an unknown separator")}; " +
                                        "give that, or harvest with this one (sae cache --sequence-separator-token)");
    }

    /// <summary>Trains on a language model's activations at <paramref name="hook"/>, harvested from text through a shuffling
    /// buffer; the metrics come from a second pass over the first contexts of the dataset with another shuffle seed, which
    /// the training source skips in every pass (<see cref="HeldOutContexts"/>, <see cref="ModelPipeline.HeldOutContexts"/>).
    /// Without <see cref="TrainingSettings.Steps"/> a token budget sets the steps (tokens / batch size) and the data is read
    /// as far as they need; the budget is for optimiser steps: the rows read first for the normalisation estimate and the
    /// b_dec sample come on top. With both, the budget caps the data read (plus those rows).</summary>
    public static TrainingPlan ForModel(TrainingSettings s, ModelDataOptions data, string? hook, HarvestMode mode = HarvestMode.Out,
        string? targetHook = null, bool resume = false)
    {
        if (s.Activations is not null) throw new SaeSharpException("give either --activations or --model, not both");
        _ = s.Recipes;
        var pretrained = LoadPretrained(s);
        try
        {
            return ForModelFrom(s, data, hook, mode, targetHook, resume, pretrained);
        }
        catch
        {
            pretrained?.Dispose();
            throw;
        }
    }

    /// <summary><see cref="ForModel(TrainingSettings, ModelDataOptions, string?, HarvestMode, string?, bool)"/> with the saved
    /// SAE it starts from, whose hook and head are the run's unless given (it is disposed by the plan, or by the caller
    /// when this throws before the plan is made).</summary>
    private static TrainingPlan ForModelFrom(TrainingSettings s, ModelDataOptions data, string? hook, HarvestMode mode, string? targetHook, bool resume, Sae? pretrained)
    {
        hook ??= pretrained?.Cfg.Metadata.HookName ?? throw new SaeSharpException("give --hook (or hook_name in --config) with --model");
        int? head = s.HookHeadIndex ?? pretrained?.Cfg.Metadata.HookHeadIndex;
        // SAELens's training_tokens is the harvest budget as --tokens is.
        if (data.Tokens is null && s.Steps is null && s.TrainingTokens is long runTokens) data = data with { Tokens = runTokens };
        // SAELens's n_batches_in_buffer sizes the shuffle buffer as --buffer-batches does (the flag wins).
        if (data.BufferBatches is null && s.NBatchesInBuffer is int bufferBatches) data = data with { BufferBatches = bufferBatches };
        // SAELens's activations_mixing_fraction likewise (--activations-mixing-fraction wins).
        if (data.ActivationsMixingFraction is null && s.ActivationsMixingFraction is double mixing) data = data with { ActivationsMixingFraction = mixing };
        // SAELens's seqpos_slice, disable_concat_sequences and sequence_separator_token likewise (the flags win).
        data = data with
        {
            SeqposSlice = data.SeqposSlice ?? s.SeqposSlice, DisableConcatSequences = data.DisableConcatSequences ?? s.DisableConcatSequences,
            SequenceSeparatorToken = data.SequenceSeparatorToken ?? s.SequenceSeparatorToken,
        };
        long steps = s.RunSteps ?? (data.Tokens is long tokens ? Math.Max(1, tokens / s.BatchSize) : 1000);
        var trainer = s.Trainer.Clone();
        UsePretrainedNormalization(s, trainer);
        long initRows = InitializationRows(trainer, s.BatchSize);
        // A budget that sets the steps counts trained rows, as SAELens's training_tokens does: the trainer stops at the
        // steps, and the windows are not capped (a cap of budget / context size falls short of rows where special tokens
        // are left out). A budget beside --steps caps the data read: the initialisation rows come on top.
        var trainData = (s.RunSteps is null ? data with { Tokens = null }
                         : data.Tokens is long budget ? data with { Tokens = budget + initRows } : data) with { Epochs = s.Epochs ?? data.Epochs };
        // The first windows of the dataset are held out for the end-of-run evaluation: training skips them in every pass.
        int heldOut = ModelPipeline.HeldOutContexts(data, s.EvalRows, out var holdOutNote);
        long evalTokens = heldOut * (long)ModelPipeline.TrainingContextSize(data.ContextSize ?? 128, data.SeqposSlice);
        var train = ModelPipeline.OpenSource(trainData, hook, mode, targetHook, seed: (ulong)s.Seed, hookHeadIndex: head, heldOutContexts: heldOut);
        ModelActivationSource? eval = null;
        try
        {
            s.CheckDIn(train.DIn, $"the model {ModelLoader.NameOf(data.ModelPath)} at {train.Spec.InputHook}");
            // The saved SAE's hook as this model names it (a module path or alias becomes the TransformerLens name).
            if (pretrained?.Cfg.Metadata.HookName is { } saeHook)
            {
                try { pretrained.Cfg.Metadata.HookName = train.HookPoints.Resolve(saeHook); }
                catch (SaeSharpException) { }
            }
            // Every row of the held-out windows (the positions the slice keeps, less excluded tokens).
            eval = ModelPipeline.OpenSource(data with { Tokens = evalTokens, Epochs = 1 }, hook, mode, targetHook,
                seed: (ulong)s.Seed + 1, hookHeadIndex: head);
            var metadata = MetadataOf(data, train.Spec.InputHook, train.Spec.TargetHook);
            metadata.HookHeadIndex = train.Spec.HeadIndex;
            var plan = new TrainingPlan(s, trainer, resume, train, eval, evalTokens, metadata, steps,
                transcoder: train.Spec.TargetHook is not null, pretrained, HeldOutRecord(heldOut, evalTokens))
            {
                ModelData = data, ModelEvalTokens = evalTokens, HeldOutContexts = heldOut,
            };
            if (holdOutNote is not null) plan._notes.Add(holdOutNote);
            return plan;
        }
        catch
        {
            eval?.Dispose();
            train.Dispose();
            throw;
        }
    }

    /// <summary>For a plan trained from a model, the held-out evaluation inside it (<see cref="EvaluateInModel(IReadOnlyList{TrainedSaeOutput}, ModelDataOptions, long, IProgress{WorkProgress})"/>
    /// over <see cref="ModelEvalTokens"/> tokens); null otherwise or when no SAE was written.</summary>
    public IReadOnlyList<Evaluation.DownstreamMetrics>? EvaluateInModel(IReadOnlyList<TrainedSaeOutput> saes, IProgress<WorkProgress>? progress = null) =>
        ModelData is null || saes.Count == 0 ? null : EvaluateInModel(saes, ModelData, ModelEvalTokens, progress);

    /// <summary>
    /// The end-of-training evaluation inside the model the SAEs were trained on (<c>sae train --model</c>): % CE loss
    /// recovered and KL over <paramref name="tokens"/> tokens of <paramref name="data"/> with each SAE spliced in at its
    /// hook (<see cref="ModelPipeline.Evaluate"/>), added to each SAE's metrics.json as <c>ce_loss_score</c>,
    /// <c>ce_loss_with_sae</c>, <c>ce_loss_without_sae</c>, <c>ce_loss_with_ablation</c>, <c>kl_div_with_sae</c> and
    /// <c>ce_eval_tokens</c> (SAELens's names), or <c>no_rows</c> (<see cref="Evaluation.DownstreamMetrics.NoRows"/>) for an SAE
    /// at an MoE expert's hook no evaluated token was routed to. Returns the metrics in the order of <paramref name="saes"/>;
    /// <paramref name="progress"/> counts the tokens evaluated.
    /// </summary>
    public static IReadOnlyList<Evaluation.DownstreamMetrics> EvaluateInModel(IReadOnlyList<TrainedSaeOutput> saes, ModelDataOptions data, long tokens,
        IProgress<WorkProgress>? progress = null)
    {
        ArgumentNullException.ThrowIfNull(saes);
        ArgumentNullException.ThrowIfNull(data);
        var metrics = ModelPipeline.Evaluate(saes.Select(s => s.Directory).ToList(), data with { Tokens = tokens }, meanAblation: false, progress: progress);
        for (int i = 0; i < saes.Count; i++)
        {
            var path = Path.Combine(saes[i].Directory, TrainingRun.MetricsFile);
            var json = File.Exists(path) ? System.Text.Json.Nodes.JsonNode.Parse(File.ReadAllText(path))!.AsObject() : new System.Text.Json.Nodes.JsonObject();
            var m = metrics[i];
            if (m.NoRows is not null)
            {
                // An SAE at an MoE expert's hook that no evaluated token reached: no metric, and why.
                json["no_rows"] = m.NoRows;
                IO.AtomicFile.WriteAllText(path, json.ToJsonString(new System.Text.Json.JsonSerializerOptions { WriteIndented = true }));
                continue;
            }
            json["ce_loss_score"] = m.CeLossScore;
            json["ce_loss_with_sae"] = m.CeLossWithSae;
            json["ce_loss_without_sae"] = m.CeLossWithoutSae;
            json["ce_loss_with_ablation"] = m.CeLossWithAblation;
            json["kl_div_with_sae"] = m.KlDivWithSae;
            json["ce_eval_tokens"] = m.CeTokens;
            IO.AtomicFile.WriteAllText(path, json.ToJsonString(new System.Text.Json.JsonSerializerOptions { WriteIndented = true }));
        }
        return metrics;
    }


    /// <summary>Trains and writes the SAEs (<see cref="TrainingRun.Run"/>).</summary>
    public TrainingRunResult Run(IProgress<TrainingProgress>? progress = null, CancellationToken cancellationToken = default) =>
        TrainingRun.Run(Options, progress, cancellationToken);

    /// <summary>Checkpoints every <paramref name="checkpointEvery"/> steps (0: a tenth of the run, at least 1) and logs at
    /// least 100 times per run (every min(log_every_steps, steps/100) steps, at least 1).</summary>
    public static void ApplyCadence(TrainerConfig trainer, long steps, long checkpointEvery = 0)
    {
        trainer.CheckpointEverySteps = checkpointEvery > 0 ? checkpointEvery : Math.Max(1, steps / 10);
        trainer.LogEverySteps = (int)Math.Clamp(steps / 100, 1, trainer.LogEverySteps);
    }

    /// <summary>Rows a run reads before its first step, for a model source whose token budget is for the steps: the
    /// normalisation estimate (n_batches_for_norm_estimate batches, cut to 16384 rows) unless normalize_activations is
    /// "none", and the b_dec sample (b_dec_init_rows, cut to 4 batches). Cuts <paramref name="trainer"/>'s two fields.</summary>
    public static long InitializationRows(TrainerConfig trainer, int batchSize)
    {
        trainer.NBatchesForNormEstimate = Math.Clamp(16384 / batchSize, 1, trainer.NBatchesForNormEstimate);
        trainer.BDecInitRows = Math.Min(trainer.BDecInitRows, 4 * batchSize);
        return (trainer.NormalizeActivations == "none" ? 0 : (long)trainer.NBatchesForNormEstimate * batchSize) + trainer.BDecInitRows;
    }

    /// <summary>cfg.json metadata of SAEs trained on a <c>sae cache</c> folder: its model, hook, context size, BOS,
    /// dataset, special-token exclusion, window fields (seqpos_slice, disable_concat_sequences, sequence_separator_token)
    /// and weight processing (and, for a transcoder cache, <c>hook_name_out</c> = its target hook).</summary>
    public static SaeMetadata MetadataOf(ActivationCacheManifest manifest)
    {
        ArgumentNullException.ThrowIfNull(manifest);
        return manifest.ToSaeMetadata();
    }

    /// <summary>cfg.json metadata of SAEs trained on <paramref name="column"/> of a SAELens activation cache: hook and context
    /// size from its features, exclude_special_tokens false (every position is stored); model, dataset, prepend_bos, weight
    /// processing, model dtype, context_size and seqpos_slice from its runner config when it has one; its windows packed
    /// with BOS between documents (the runner has no other setting).</summary>
    public static SaeMetadata MetadataOf(SaeLensActivationCache cache, SaeLensCacheColumn column)
    {
        ArgumentNullException.ThrowIfNull(cache);
        ArgumentNullException.ThrowIfNull(column);
        var metadata = new SaeMetadata
        {
            ModelName = cache.ModelName, HookName = column.Name, ContextSize = cache.ContextSize ?? column.ContextSize, PrependBos = cache.PrependBos, ExcludeSpecialTokens = false,
            DatasetPath = cache.DatasetPath is { } d ? Data.HubDataset.RecordedPath(d) : cache.Directory,
            ModelFromPretrainedKwargs = SaeMetadata.FromPretrainedKwargs(cache.ModelFromPretrainedKwargs, cache.ModelDtype, cache.ModelRevision),
        };
        // SAELens's cache runner packs documents with BOS between them; its seqpos_slice says which positions it kept.
        metadata.SetWindowFields(cache.SeqposSlice, false, Data.PretokenizeToken.Bos);
        return metadata;
    }

    /// <summary>cfg.json metadata of SAEs trained on a model's activations at <paramref name="inputHook"/> (and, for
    /// transcoders, <c>hook_name_out</c> = <paramref name="targetHook"/>).</summary>
    public static SaeMetadata MetadataOf(ModelDataOptions data, string inputHook, string? targetHook = null)
    {
        var metadata = new SaeMetadata
        {
            ModelName = ModelLoader.NameOf(data.ModelPath),
            HookName = inputHook,
            ContextSize = data.ContextSize ?? 128,
            PrependBos = data.PrependBos ?? true,
            DatasetPath = Data.HubDataset.RecordedPath(data.DatasetPath),
            ExcludeSpecialTokens = data.ExcludeTokenIds is null ? data.ExcludeSpecialTokens ?? false : null,
            ExcludeTokenIds = data.ExcludeTokenIds is { } ids ? [.. ids] : null,
            ModelFromPretrainedKwargs = SaeMetadata.FromPretrainedKwargs(data.Processing.ToKwargs(),
                data.ModelDtype is { } dtype && dtype != ScalarType.Float32 ? SaeConfig.DtypeName(dtype) : null, data.Revision),
        };
        metadata.SetWindowFields(data.SeqposSlice, data.DisableConcatSequences, data.SequenceSeparatorToken);
        return metadata.WithOutputHook(targetHook);
    }

    /// <summary>Closes the sources, the SAEs and the ground-truth features.</summary>
    public void Dispose()
    {
        for (int i = _owned.Count - 1; i >= 0; i--) _owned[i].Dispose();
        _owned.Clear();
    }
}
