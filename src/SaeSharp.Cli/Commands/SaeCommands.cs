using System.CommandLine;
using SaeSharp.Activations;
using SaeSharp.Evaluation;
using SaeSharp.Hub;
using SaeSharp.Interop;
using SaeSharp.IO;
using SaeSharp.Pipelines;
using SaeSharp.Saes;
using SaeSharp.Synthetic;
using static TorchSharp.torch;

namespace SaeSharp.Cli.Commands;

/// <summary><c>sae eval</c>, <c>sae encode</c>, <c>sae synth</c>, <c>sae convert</c>: SAEs applied to activation files.</summary>
internal static class SaeCommands
{
    public static Option<string> SaeOption() => new("--sae")
    {
        Description = "SAE folder or file (SAELens, dictionary_learning ae.pt, Gemma Scope params.npz, Llama Scope, sparsify, OpenAI), RELEASE/SAE_ID (sae releases) or hf:ORG/REPO[/PATH]",
        Required = true,
    };

    /// <summary><c>--arch</c> of the commands that load an SAE: the architecture of a bare dictionary_learning ae.pt.</summary>
    public static Option<string?> ArchOption() => new("--arch")
    {
        Description = "Architecture of a bare dictionary_learning ae.pt (standard, gated, jumprelu, topk, batchtopk, matryoshka_batchtopk); default: from its config.json or its keys",
    };

    public static SaeLoadOptions LoadOptions(ParseResult parse, Option<string?> arch) => new() { Architecture = parse.GetValue(arch) };

    public static Command Eval()
    {
        var sae = new Option<string[]>("--sae")
        {
            Description = "SAE folder or file (any supported format), RELEASE/SAE_ID or hf:ORG/REPO[/PATH]; repeat it to evaluate several SAEs in one pass over a model",
            Required = true,
        };
        var activations = new Option<string?>("--activations") { Description = "Activation file or folder [N, d_in]" };
        var groundTruth = new Option<string?>("--ground-truth") { Description = "features.safetensors of synthetic data (adds mmcs, recovered_fraction and SAELens's synthetic-data metrics: mcc, uniqueness, ...)" };
        var json = new Option<string?>("--json") { Description = "Write the metrics as JSON here" };
        var outputDir = new Option<string?>("--output-dir")
        {
            Description = "With --model: also write SAELens's evals output folder here (per SAE {unique_id}_{context_size}_{dataset}.json, " +
                          "all_eval_results.json, all_eval_results.csv)",
        };
        var saebenchJson = new Option<string?>("--saebench-json")
        {
            Description = "With --model: also evaluate by SAEBench's core procedure (its batches, formulas and defaults: 16 windows of 128 tokens, " +
                          "10 CE/KL batches then 1 batch for the rest) and write its CoreEvalOutput JSON here; several --sae: a _sae<i> suffix per SAE",
        };
        var saebenchConfig = new Option<string?>("--saebench-config")
        {
            Description = "With --saebench-json: SAEBench CoreEvalConfig fields over its defaults, as a JSON object or a file holding one " +
                          "(batch_size_prompts, n_eval_reconstruction_batches, n_eval_sparsity_variance_batches, context_size, " +
                          "exclude_special_tokens_from_reconstruction, compute_featurewise_density_statistics)",
        };
        var histogram = new Option<string?>("--histogram") { Description = "Write the log10 feature-density histogram PNG here (a crosscoder: the relative decoder norm histogram; default: beside --json; several --sae: a _sae<i> suffix per SAE)" };
        var l0Histogram = new Option<string?>("--l0-histogram") { Description = "Write the per-token L0 histogram PNG here (default: beside --json; several --sae: a _sae<i> suffix per SAE)" };
        var maxRows = new Option<long?>("--max-rows") { Description = "Evaluate at most this many rows" }.Positive();
        var arch = ArchOption();
        var diffModel = ModelSource.AtRevision<string?>(new("--diff-model") { Description = "A model-diffing crosscoder with --model: the second (chat) model, run on the same windows (same tokenizer); each model gets its own slots' reconstruction" }, ModelSource.DiffRevision);
        var latentScaling = new Option<bool>("--latent-scaling")
        {
            Description = "A model-diffing crosscoder (slots base, chat): Minder et al.'s Latent Scaling β and ν per latent (JSON, table, a ν^ε vs ν^r PNG beside --json)",
        };
        var latents = new Option<string?>("--latents") { Description = "With --latent-scaling: the latents, e.g. 0-99,123 or all (default: the chat-only band Δnorm > 0.9 and the shared band)" };
        var command = new Command("eval", "Evaluate SAEs on activations (MSE, L0, FVU, dead features) or inside a model (% CE loss recovered, KL)")
        {
            sae, activations, groundTruth, json, outputDir, saebenchJson, saebenchConfig, histogram, l0Histogram, maxRows, arch, latentScaling, latents, diffModel,
        };
        var data = new ModelDataOptionsCli();
        data.Tokens.Description = $"Token budget with --model (default {EvalInModelTokens})";
        data.Hook.Description = "With --model: the hook to evaluate at, for an SAE whose cfg has no hook_name (default: each SAE's cfg hook_name, "
            + "which a different hook may not override)";
        data.AddTo(command, harvestModes: false);
        var cltLoading = new CltLoadingCli();
        cltLoading.AddTo(command);
        Cli.SetAction(command, parse =>
        {
            var saes = parse.GetValue(sae)!;
            if (parse.GetValue(saebenchJson) is null) Cli.RefuseGiven(parse, "only with --saebench-json", saebenchConfig);
            var pngs = new EvalPictures(parse.GetValue(json), parse.GetValue(histogram), parse.GetValue(l0Histogram));
            RefuseReplacingInputs(parse, saes, data, parse.GetValue(activations), parse.GetValue(groundTruth), pngs, parse.GetValue(saebenchJson));
            if (data.Given(parse))
            {
                // The two evaluations take different inputs: a flag of the other one would be silently ignored.
                Cli.RefuseGiven(parse, "evaluation on activation files; with --model the rows come from --dataset (--tokens sets how many)",
                    activations, maxRows, groundTruth);
                if (parse.GetValue(outputDir) is { } evalsDir)
                {
                    // SAELens's file per SAE is named by its release and id: the same SAE twice would write one file twice.
                    // A local SAE by its full path: "sae", "./sae" and "sae/" are one SAE (as files, under other names).
                    static string Key(string s) => File.Exists(s) || Directory.Exists(s) ? Path.GetFullPath(s).TrimEnd(Path.DirectorySeparatorChar) : s;
                    if (saes.GroupBy(Key, StringComparer.Ordinal).FirstOrDefault(g => g.Count() > 1) is { } twice)
                        throw new SaeSharpException(twice.Distinct().Count() == 1
                            ? $"--output-dir: --sae {twice.First()} is given {twice.Count()} times; SAELens's evals output has one file per SAE"
                            : $"--output-dir: {string.Join(" and ", twice.Select(s => $"--sae {s}"))} are the same SAE; SAELens's evals output has one file per SAE");
                    OutputGuard.RefuseReplacingInput("--output-dir", evalsDir, [SaeLensEvalsOutput.CombinedJsonFile, SaeLensEvalsOutput.CsvFile],
                        [.. saes.Select(s => new CommandInput("--sae", s, InputKind.Sae)),
                         .. parse.GetValue(data.Dataset) is { } ds0 ? [new CommandInput("--dataset", ds0, InputKind.Whole)] : Array.Empty<CommandInput>()]);
                }
                if (saes.Length == 1 && CrossCoderFormat.IsCrossCoderPath(saes[0]))
                {
                    Cli.RefuseGiven(parse, "for SAEs; a crosscoder is evaluated per slot and in total, and spliced into each of its models", arch, saebenchJson, outputDir, l0Histogram);
                    if (!parse.GetValue(latentScaling)) Cli.RefuseGiven(parse, "only with --latent-scaling", latents);
                    else if (parse.GetValue(json) is { } scalingJson)
                        OutputGuard.RefuseReplacingInput("--json", CrossCoderCli.LatentScalingPng(scalingJson),
                            [new CommandInput("--sae", saes[0], InputKind.Sae), .. parse.GetValue(data.Dataset) is { } ds ? [new CommandInput("--dataset", ds, InputKind.Whole)] : Array.Empty<CommandInput>()]);
                    return CrossCoderCli.EvalInModel(saes[0], ReadEvalInModel(parse, data), parse.GetValue(diffModel) is { } dm ? ModelSource.Resolve(dm) : null,
                        parse.GetValue(data.Hook), parse.GetValue(json), parse.GetValue(histogram),
                        parse.GetValue(latentScaling) ? new CrossCoderCli.LatentScalingRequest(parse.GetValue(latents)) : null);
                }
                Cli.RefuseGiven(parse, "only for a model-diffing crosscoder", latentScaling, latents);
                Cli.RefuseGiven(parse, "for a model-diffing crosscoder (--sae CROSSCODER)", diffModel);
                return EvalInModel(parse, data, cltLoading, saes, pngs, LoadOptions(parse, arch), parse.GetValue(saebenchJson),
                    parse.GetValue(saebenchConfig), parse.GetValue(outputDir));
            }
            var activationPath = parse.GetValue(activations) ?? throw new SaeSharpException(
                parse.GetValue(data.Dataset) is null ? "give --activations, or --model and --dataset" : "--dataset needs --model, the model to run" + ReleaseModelHint(saes));
            Cli.RefuseGiven(parse, "evaluation inside a model (--model); on activation files --max-rows limits the rows (and the SAE runs on the CPU)",
                [.. data.ModelOnly, data.Tokens, data.Device, diffModel, saebenchJson, outputDir]);
            if (saes.Length != 1) throw new SaeSharpException("evaluation on an activation file takes one --sae");
            if (CrossCoderFormat.IsCrossCoderPath(saes[0]))
            {
                Cli.RefuseGiven(parse, "for SAEs; a crosscoder is evaluated per layer and in total (MSE, explained variance, FVU, L0, dead latents) with its decoder norms", groundTruth, arch, l0Histogram);
                if (!parse.GetValue(latentScaling)) Cli.RefuseGiven(parse, "only with --latent-scaling", latents);
                else if (parse.GetValue(json) is { } scalingJson)
                    OutputGuard.RefuseReplacingInput("--json", CrossCoderCli.LatentScalingPng(scalingJson), new CommandInput("--sae", saes[0], InputKind.Sae),
                        new CommandInput("--activations", activationPath, InputKind.Whole));
                return CrossCoderCli.Eval(saes[0], activationPath, parse.GetValue(maxRows), parse.GetValue(json), parse.GetValue(histogram),
                    parse.GetValue(latentScaling) ? new CrossCoderCli.LatentScalingRequest(parse.GetValue(latents)) : null);
            }
            Cli.RefuseGiven(parse, "only for a model-diffing crosscoder", latentScaling, latents);
            using var model = SaeLoader.Load(saes[0], LoadOptions(parse, arch));
            model.eval();
            // As SAELens's activation store on a cached dataset: rows whose token the SAE's exclude_special_tokens names are
            // dropped when the files store token ids (caches); files without token ids are evaluated whole.
            // A transcoder (cfg d_out) is compared with the files' targets (a sae cache --mode in_to_out folder's), not its input.
            var fileOptions = new ActivationFileSourceOptions
            {
                ExpectedDIn = model.Cfg.DIn, HookName = model.Cfg.Metadata.HookName,
                TargetName = model.Cfg.DOut is null ? null : "targets", ExpectedDOut = model.Cfg.DOut,
            };
            var meta = model.Cfg.Metadata;
            if (ActivationFileSource.StoresTokenIds([activationPath], fileOptions))
                fileOptions = fileOptions with
                {
                    ExcludeTokenIds = ActivationFileExclusion.Resolve(activationPath, meta.ExcludeSpecialTokens, meta.ExcludeTokenIds, $"--sae {saes[0]}: cfg.json metadata", meta.ModelName),
                };
            using var source = ActivationSplit.EvalFiles([activationPath], fileOptions);
            using var features = parse.GetValue(groundTruth) is string gt ? SyntheticDataset.ReadFeatures(gt) : null;
            var result = SaeEvaluator.Evaluate(model, source, parse.GetValue(maxRows) ?? long.MaxValue, groundTruthFeatures: features);
            PrintMetrics(saes[0], result);
            SaveJson(pngs.Json, result.WriteJson);
            SaveHistograms(pngs, 0, 1, result);
            return 0;
        });
        return command;
    }

    /// <summary><c>sae eval</c>'s --json and the pictures it writes beside it unless given their own paths.</summary>
    private sealed record EvalPictures(string? Json, string? Histogram, string? L0Histogram)
    {
        /// <summary>Where SAE <paramref name="i"/> of <paramref name="count"/> gets its density histogram: --histogram, with a
        /// _sae<i>i</i> suffix before the extension when there are several SAEs (as --saebench-json); else beside --json
        /// (<c>NAME[_sae<i>i</i>]_feature_density.png</c>); null: none.</summary>
        public string? DensityPath(int i, int count) => PicturePath(i, count, Histogram, "feature_density");

        /// <summary>Where SAE <paramref name="i"/> of <paramref name="count"/> gets its per-token L0 histogram, by the rule of
        /// <see cref="DensityPath"/> (beside --json: <c>NAME[_sae<i>i</i>]_l0.png</c>).</summary>
        public string? L0Path(int i, int count) => PicturePath(i, count, L0Histogram, "l0");

        /// <summary>Where SAE <paramref name="i"/> of <paramref name="count"/> gets its density vs consistent-activation-heuristic
        /// scatter: beside --json only (<c>NAME[_sae<i>i</i>]_density_vs_cah.png</c>).</summary>
        public string? HeuristicPath(int i, int count) => PicturePath(i, count, null, "density_vs_cah");

        /// <summary>The flag that names <see cref="DensityPath"/> (--json when it is the default).</summary>
        public string DensityFlag => Histogram is null ? "--json" : "--histogram";

        /// <summary>The flag that names <see cref="L0Path"/>.</summary>
        public string L0Flag => L0Histogram is null ? "--json" : "--l0-histogram";

        private string? PicturePath(int i, int count, string? given, string name) =>
            given is not null ? SaeBenchPath(i, count, given, ".png")
            : Json is null ? null : Path.ChangeExtension(Json, null) + (count == 1 ? "" : $"_sae{i}") + $"_{name}.png";
    }

    /// <summary><c>sae eval</c>'s --json and histogram files may not replace its inputs.</summary>
    private static void RefuseReplacingInputs(ParseResult parse, string[] saes, ModelDataOptionsCli data, string? activations, string? groundTruth,
        EvalPictures pngs, string? saebenchJson)
    {
        var inputs = saes.Select(s => new CommandInput("--sae", s, InputKind.Sae)).ToList();
        if (activations is not null) inputs.Add(new("--activations", activations, InputKind.Whole));
        if (groundTruth is not null) inputs.Add(new("--ground-truth", groundTruth, InputKind.Whole));
        if (parse.GetValue(data.Model) is { } modelPath) inputs.Add(new("--model", modelPath, InputKind.Folder));
        if (parse.GetValue(data.Dataset) is { } dataset) inputs.Add(new("--dataset", dataset, InputKind.Whole));
        // Every file the command writes, no two the same (--histogram onto --json wrote the PNG over the JSON before).
        var outputs = new List<(string Flag, string? Path)> { ("--json", pngs.Json) };
        for (int i = 0; i < saes.Length; i++)
            if (saebenchJson is not null) outputs.Add(("--saebench-json", SaeBenchPath(i, saes.Length, saebenchJson)));
        for (int i = 0; i < saes.Length; i++)
        {
            outputs.Add((pngs.DensityFlag, pngs.DensityPath(i, saes.Length)));
            outputs.Add((pngs.L0Flag, pngs.L0Path(i, saes.Length)));
            outputs.Add(("--json", pngs.HeuristicPath(i, saes.Length)));
        }
        OutputGuard.RefuseBadOutputFiles(outputs, [.. inputs]);
    }

    /// <summary>Where SAE <paramref name="i"/> of <paramref name="count"/> gets its SAEBench core output: the path itself for one
    /// SAE, else with a _sae<i>i</i> suffix before the extension.</summary>
    internal static string SaeBenchPath(int i, int count, string path, string defaultExtension = ".json") =>
        count == 1 ? path : Path.ChangeExtension(path, null) + $"_sae{i}" + (Path.GetExtension(path) is { Length: > 0 } ext ? ext : defaultExtension);

    /// <summary>Writes <c>--json</c> (atomically) when it was given, and says where on stdout.</summary>
    private static void SaveJson(string? jsonPath, Action<Stream> write)
    {
        if (jsonPath is null) return;
        AtomicFile.Write(jsonPath, write);
        Console.WriteLine($"metrics JSON: {jsonPath}");
    }

    /// <summary>Writes SAE <paramref name="i"/> of <paramref name="count"/>'s density and per-token L0 histograms (and, for
    /// rows from prompts, the density vs consistent-activation-heuristic scatter) where <paramref name="pngs"/> says, and
    /// says where on stdout.</summary>
    private static void SaveHistograms(EvalPictures pngs, int i, int count, SaeEvalResult result)
    {
        if (pngs.DensityPath(i, count) is { } density)
        {
            result.SaveDensityHistogram(density);
            Console.WriteLine($"feature density histogram: {density}");
        }
        if (pngs.L0Path(i, count) is { } l0)
        {
            result.SaveL0Histogram(l0);
            Console.WriteLine($"per-token L0 histogram: {l0}");
        }
        if (pngs.HeuristicPath(i, count) is { } cah && result.FeatureMetrics is { } fm && DensityHeuristicScatter.Save(cah, fm))
            Console.WriteLine($"density vs consistent activation heuristic: {cah}");
    }

    /// <summary><c>sae eval --model</c>'s token budget when <c>--tokens</c> is not given.</summary>
    private const long EvalInModelTokens = 16384;

    /// <summary>The model and data options of <c>sae eval --model</c> (the token budget <see cref="EvalInModelTokens"/> unless given).</summary>
    private static ModelDataOptions ReadEvalInModel(ParseResult parse, ModelDataOptionsCli data, string[]? saes = null, SaeLoadOptions? saeOptions = null)
    {
        var options = saes is null ? data.Read(parse, hookRequired: false) : data.Read(parse, () => RecordedDataset(saes, saeOptions), () => RecordedRevision(saes, saeOptions));
        return options.Tokens is null ? options with { Tokens = EvalInModelTokens } : options;
    }

    /// <summary>The dataset the SAEs' cfg.json records (<see cref="ModelDataOptions.RecordedDataset"/>) for <c>--model</c>
    /// without <c>--dataset</c>; null when none records one (a whole cross-layer transcoder records none); SAEs recording
    /// different datasets are an error naming both.</summary>
    internal static string? RecordedDataset(IReadOnlyList<string> saes, SaeLoadOptions? options)
    {
        (string Sae, string Dataset)? first = null;
        foreach (var path in saes)
        {
            if (CrossLayerTranscoderLoader.IsCrossLayerTranscoder(path, options?.Hub) || CrossCoderFormat.IsCrossCoderPath(path)) continue;
            using var probe = SaeLoader.Load(path, options);
            if (ModelDataOptions.RecordedDataset(probe.Cfg.Metadata, path) is not { } recorded) continue;
            if (first is { } f && f.Dataset != recorded)
                throw new SaeSharpException($"give --dataset with --model: the SAEs record different datasets ({f.Sae}: {f.Dataset}; {path}: {recorded})");
            first ??= (path, recorded);
        }
        return first?.Dataset;
    }

    /// <summary>The model revision the SAEs' cfg.json records (<c>model_from_pretrained_kwargs</c> <c>revision</c>) and the
    /// first SAE recording it; null when none records one; SAEs recording different revisions are an error naming both.</summary>
    internal static (string Revision, string Sae)? RecordedRevision(IReadOnlyList<string> saes, SaeLoadOptions? options)
    {
        (string Revision, string Sae)? first = null;
        foreach (var path in saes)
        {
            if (CrossLayerTranscoderLoader.IsCrossLayerTranscoder(path, options?.Hub) || CrossCoderFormat.IsCrossCoderPath(path)) continue;
            using var probe = SaeLoader.Load(path, options);
            if (probe.Cfg.Metadata.ModelRevision(path) is not { } recorded) continue;
            if (first is { } f && f.Revision != recorded)
                throw new SaeSharpException($"the SAEs were trained on different revisions of the model ({f.Sae}: {f.Revision}; {path}: {recorded}): evaluate them separately");
            first ??= (recorded, path);
        }
        return first;
    }

    /// <summary>The dictionary_learning README's statistics table plus FVU, KL, L2 ratio and dead fraction, per SAE.</summary>
    private static int EvalInModel(ParseResult parse, ModelDataOptionsCli data, CltLoadingCli cltLoading, string[] saes, EvalPictures pngs,
        SaeLoadOptions saeOptions, string? saebenchJson, string? saebenchConfig, string? outputDir)
    {
        var options = ReadEvalInModel(parse, data, saes, saeOptions);
        // SAEBench's defaults; an explicit --context-size applies too; --saebench-config fields win.
        var coreConfig = saebenchConfig is not null ? SaeBenchCoreConfig.Parse(saebenchConfig, options.ContextSize)
            : new SaeBenchCoreConfig { ContextSize = options.ContextSize ?? 128 };
        if (saes.Any(s => CrossLayerTranscoderLoader.IsCrossLayerTranscoder(s, saeOptions.Hub)))
        {
            if (saes.Length != 1) throw new SaeSharpException("a whole cross-layer transcoder is evaluated alone: give it as the only --sae");
            if (saebenchJson is not null) throw new SaeSharpException("--saebench-json: SAEBench's core eval is per SAE; a whole cross-layer transcoder has no such output");
            if (outputDir is not null) throw new SaeSharpException("--output-dir: SAELens's evals output is per SAE; a whole cross-layer transcoder has no such output");
            if (parse.GetValue(data.Hook) is not null) throw new SaeSharpException("--hook: a cross-layer transcoder reads and writes the hooks its files name");
            if (pngs.L0Histogram is not null) throw new SaeSharpException("--l0-histogram: a whole cross-layer transcoder has an L0 per layer; its JSON holds each layer's l0_distribution");
            return EvalReplacement(saes[0], options, pngs.Json, saeOptions.Hub, cltLoading.Read(parse, options.ModelDtype));
        }
        cltLoading.RefuseForSae(parse, saes[0]);
        string dataset = options.DatasetPath.StartsWith("hf:", StringComparison.Ordinal) ? options.DatasetPath["hf:".Length..] : options.DatasetPath;
        if (outputDir is not null)
        {
            // Two SAEs whose SAELens file names are one file ("/" is "_"): refused before the evaluation, not after it. Each SAE
            // is evaluated on windows of --context-size, else the context_size its cfg records (ModelPipeline.Evaluate).
            var names = saes.Select(path =>
            {
                using var probe = options.ContextSize is null ? SaeLoader.Load(path, saeOptions) : null;
                var (set, id) = ModelPipeline.SaeBenchIds(path);
                return SaeLensEvalsOutput.FileName(new SaeLensEvalRun { SaeSet = set, SaeId = id, Dataset = dataset },
                    options.ContextSize ?? probe?.Cfg.Metadata.ContextSize ?? 128);
            }).ToList();
            SaeLensEvalsOutput.RefuseCollisions(outputDir, names, [.. saes.Select(s => $"--sae {s}")]);
        }
        var results = CliProgress.Run("eval", progress => ModelPipeline.Evaluate(saes, options, saeOptions: saeOptions, progress: progress, hook: parse.GetValue(data.Hook),
            maxCosineSims: false));
        // An SAE at an MoE expert's hook that no evaluated token reached has no metrics: with others it is reported as such
        // (they keep theirs); alone, or with only such SAEs, the run stops naming each.
        if (results.All(m => m.NoRows is not null))
            throw new SaeSharpException(string.Join(Environment.NewLine, results.Select(m => m.NoRows)));
        for (int i = 0; i < results.Count; i++)
        {
            var m = results[i];
            if (m.NoRows is not null)
            {
                Cli.WriteTable(saes[i],
                [
                    .. HookRows(m),
                    ("tokens evaluated", Cli.Integer(m.Tokens)),
                    ("routed tokens", "0: no metrics"),
                ]);
                Cli.ErrorLine($"warning: {m.NoRows}");
                continue;
            }
            Cli.WriteTable(saes[i],
            [
                // README's metrics table first (FVU, MSE, L0, dead share, % CE loss recovered, KL), then the losses and
                // the other quantities they come from.
                .. HookRows(m),
                ("fvu", m.Reconstruction.Fvu.ToString("G5")),
                ("mse", m.Mse.ToString("G5")),
                ("l0", m.L0.ToString("F2")),
                Percent("dead_fraction", m.Reconstruction.DeadFraction, 2),
                Percent("% CE loss recovered (zero ablation)", m.CeLossScore, 2),
                Percent("% CE loss recovered (mean ablation)", m.CeLossScoreMeanAblation, 2),
                ("kl div with SAE", m.KlDivWithSae.ToString("G5")),
                ("ce loss clean", m.CeLossWithoutSae.ToString("F4")),
                ("ce loss with SAE", m.CeLossWithSae.ToString("F4")),
                ("ce loss zero-ablated", m.CeLossWithAblation.ToString("F4")),
                ("ce loss mean-ablated", m.CeLossWithMeanAblation.ToString("F4")),
                ("ce loss with error term", m.CeLossWithErrorTerm.ToString("F4")),
                ("kl div zero-ablated", m.KlDivWithAblation.ToString("G5")),
                ("kl div score", m.KlDivScore.ToString("F4")),
                ("l1", m.L1.ToString("G5")),
                Percent($"% alive over {Cli.Integer(m.Tokens)} tokens", m.AliveFraction, 2),
                ("l2_ratio", m.Reconstruction.L2Ratio.ToString("F4")),
                .. MeanCosineRow(m.FeatureMetrics),
            ]);
            if (m.SmallAblationNote() is { } small) Cli.WriteIndented(Spectre.Console.Markup.Escape(small), 0);
            foreach (var note in m.NonFiniteNotes()) Cli.ErrorLine($"warning: {saes[i]}: {note}");
            SaveHistograms(pngs, i, results.Count, m.Reconstruction);
        }
        SaveJson(pngs.Json, stream =>
            {
                // One SAE: its object; several: an array of them. Streamed: a 65k-feature SAE's five lists are not built as a string.
                using var writer = new System.Text.Json.Utf8JsonWriter(stream, new System.Text.Json.JsonWriterOptions { Indented = true });
                if (results.Count != 1) writer.WriteStartArray();
                foreach (var m in results) m.WriteJson(writer);
                if (results.Count != 1) writer.WriteEndArray();
            });
        if (outputDir is not null)
        {
            // A SAELens release's SAE by its release and id; an SAE of one's own as SAEBench names it (the path as given, custom_sae).
            var written = SaeLensEvalsOutput.Write(outputDir, [.. results.Select((m, i) =>
            {
                var (set, id) = ModelPipeline.SaeBenchIds(saes[i]);
                return (m, new SaeLensEvalRun { SaeSet = set, SaeId = id, Dataset = dataset });
            })]);
            // What SAELens's evals CLI prints at the end.
            Console.WriteLine($"SAELens evals output: {outputDir}");
            Console.WriteLine($"  individual JSONs: {written.Count - 2}");
            Console.WriteLine($"  combined JSON: {written[^2]}");
            Console.WriteLine($"  CSV: {written[^1]}");
        }
        if (saebenchJson is not null)
        {
            // One eval_id for the SAEs of one run, as SAEBench's multiple_evals; a SAELens release's SAE has its decoder norms
            // folded first, as SAEBench's load_and_format_sae does (not an SAE of one's own: SAEBench's custom SAE object).
            string evalId = Guid.NewGuid().ToString();
            var core = CliProgress.Run("SAEBench core eval", progress => ModelPipeline.EvaluateSaeBenchCore(saes, saes.Select(s => SaeReleases.Lookup(s) is not null).ToList(),
                options, coreConfig, saeOptions, progress, parse.GetValue(data.Hook)));
            for (int i = 0; i < core.Count; i++)
            {
                var r = core[i];
                var (release, id) = ModelPipeline.SaeBenchIds(saes[i]);
                var run = new SaeBenchCoreRun
                {
                    ModelName = ModelPipeline.SaeBenchModelName(r.Cfg, options.ModelPath),
                    Dataset = options.DatasetPath,
                    LlmDtype = ModelPipeline.SaeBenchLlmDtype(r.Cfg, options),
                    SaeLensReleaseId = release, SaeLensId = id, EvalId = evalId,
                };
                string path = SaeBenchPath(i, core.Count, saebenchJson);
                AtomicFile.Write(path, stream =>
                {
                    using var writer = new System.Text.Json.Utf8JsonWriter(stream, new System.Text.Json.JsonWriterOptions { Indented = true });
                    SaeBenchCoreOutput.Write(writer, r, run);
                });
                var c = r.Config;
                Console.WriteLine($"SAEBench core output: {path}");
                Console.WriteLine($"  SAEBench procedure, CE/KL: {Cli.Integer((long)c.NEvalReconstructionBatches * c.BatchSizePrompts * c.ContextSize)} tokens " +
                                  $"({Cli.Integer(r.Metrics.ReconstructionPositions)} counted)");
                Console.WriteLine($"  SAEBench procedure, the rest: the next {Cli.Integer((long)c.NEvalSparsityVarianceBatches * c.BatchSizePrompts * c.ContextSize)} " +
                                  $"({Cli.Integer(r.Metrics.SparsityVariancePositions)} counted)");
                Console.WriteLine($"  the table above: {Cli.Integer(results[i].Contexts * results[i].ContextSize)} tokens ({Cli.Integer(results[i].Tokens)} counted)");
            }
        }
        return 0;
    }

    /// <summary>One hook per block l = 0..n−1 written once as <c>blocks.{0..n-1}.NAME</c> (as <c>sae model info</c> writes
    /// per-block names), else the first and the last.</summary>
    internal static string PerBlock(IReadOnlyList<string> hooks)
    {
        var names = hooks.Select((h, l) => h.StartsWith($"blocks.{l}.", StringComparison.Ordinal) ? h[$"blocks.{l}.".Length..] : null).Distinct().ToList();
        return names is [string name] ? $"blocks.{(hooks.Count == 1 ? "0" : $"{{0..{hooks.Count - 1}}}")}.{name}" : $"{hooks[0]} … {hooks[^1]}";
    }

    /// <summary><c>sae eval --model</c> of a whole cross-layer transcoder: the replacement model's CE and KL, and a row per layer;
    /// --json writes <see cref="CrossLayerTranscoderMetrics.ToJson"/> (every number of the tables and more).</summary>
    private static int EvalReplacement(string cltPath, ModelDataOptions options, string? jsonPath, HfHubOptions? hub, CrossLayerTranscoderLoadOptions loading)
    {
        var m = CliProgress.Run("eval", progress => ModelPipeline.EvaluateReplacement(cltPath, options, progress: progress, hub: hub, loading: loading));
        Cli.WriteTable(cltPath + " (replacement model: every layer's output replaced)",
        [
            ("layers", Cli.Integer(m.Layers.Count)),
            ("reads", PerBlock(m.InputHooks)),
            ("replaces", PerBlock(m.OutputHooks)),
            Percent($"% CE loss recovered (zero ablation) over {Cli.Integer(m.Tokens)} tokens", m.CeLossScore, 2),
            Percent("% CE loss recovered (mean ablation)", m.CeLossScoreMeanAblation, 2),
            ("ce loss clean", m.CeLossWithoutSae.ToString("F4")),
            ("ce loss with replacement", m.CeLossWithSae.ToString("F4")),
            ("ce loss zero-ablated", m.CeLossWithAblation.ToString("F4")),
            ("ce loss mean-ablated", m.CeLossWithMeanAblation.ToString("F4")),
            ("ce loss with error terms", m.CeLossWithErrorTerm.ToString("F4")),
            ("kl div with replacement", m.KlDivWithSae.ToString("G5")),
            ("kl div zero-ablated", m.KlDivWithAblation.ToString("G5")),
            ("kl div mean-ablated", m.KlDivWithMeanAblation.ToString("G5")),
            ("kl div with error terms", m.KlDivWithErrorTerm.ToString("G5")),
            ("kl div score", m.KlDivScore.ToString("F4")),
        ]);
        if (m.SmallAblationNote() is { } small) Cli.WriteIndented(Spectre.Console.Markup.Escape(small), 0);
        Cli.WriteTable("per layer (from the clean activations)",
            m.Layers.Select((r, l) => ($"layer {l}", $"fvu {r.Fvu:G5}  l0 {r.L0:F2}  mse {r.Mse:G5}  alive {r.AliveFraction:P1}")).ToList());
        SaveJson(jsonPath, stream =>
            {
                using var writer = new System.Text.Json.Utf8JsonWriter(stream, new System.Text.Json.JsonWriterOptions { Indented = true });
                m.ToJson().WriteTo(writer);
            });
        return 0;
    }

    /// <summary>The hook an SAE reads, and for a transcoder the hook its output replaces (<c>hook_name_out</c>).</summary>
    private static (string, string)[] HookRows(DownstreamMetrics m) =>
        m.OutputHookName is { } output && output != m.HookName
            ? [("hook", m.HookName ?? "-"), ("hook_out (replaced)", output)]
            : [("hook", m.HookName ?? "-")];

    /// <summary>The table row of the mean encoder-decoder cosine over the features where it is defined; none when the SAE
    /// has no cosines (a transcoder with d_out ≠ d_in) or none is defined.</summary>
    private static (string, string)[] MeanCosineRow(FeatureMetrics? features)
    {
        var defined = features?.EncoderDecoderCosineSim?.Where(double.IsFinite).ToList();
        return defined is { Count: > 0 } ? [("encoder-decoder cosine (mean)", defined.Average().ToString("F4"))] : [];
    }

    /// <summary>A name/value row of a percentage (<see cref="Cli.Percent"/>).</summary>
    private static (string, string) Percent(string name, double fraction, int decimals) => (name, Cli.Percent(name, fraction, decimals));

    /// <summary>The metrics of an evaluation on activations as a name/value table (SAELens's metric names).</summary>
    public static void PrintMetrics(string title, SaeEvalResult r)
    {
        List<(string, string)> rows =
        [
            ("fvu", r.Fvu.ToString("G5")),
            ("mse", r.Mse.ToString("G5")),
            ("l0", r.L0.ToString("F2")),
            Percent("dead_fraction", r.DeadFraction, 2),
            ("l1", r.L1.ToString("G5")),
            ("explained_variance", r.ExplainedVariance.ToString("F4")),
            ("cosine", r.Cosine.ToString("F4")),
            ("l2_ratio", r.L2Ratio.ToString("F4")),
            ("relative_reconstruction_bias", r.RelativeReconstructionBias.ToString("F4")),
            .. MeanCosineRow(r.FeatureMetrics),
            Percent("alive_fraction", r.AliveFraction, 2),
            ("rows", Cli.Integer(r.Rows)),
        ];
        if (r.Mmcs is double mmcs) rows.Add(("mmcs", mmcs.ToString("F4")));
        if (r.RecoveredFraction is double rec) rows.Add(Percent("recovered_fraction", rec, 1));
        if (r.TrueL0 is double trueL0) rows.Add(("true_l0", trueL0.ToString("F2")));
        if (r.SaeL0 is double saeL0) rows.Add(("sae_l0", saeL0.ToString("F2")));
        if (r.DeadLatents is int dead) rows.Add(("dead_latents", Cli.Integer(dead)));
        if (r.Shrinkage is double shrinkage) rows.Add(("shrinkage", shrinkage.ToString("F4")));
        if (r.Mcc is double mcc) rows.Add(("mcc", mcc.ToString("F4")));
        if (r.Uniqueness is double uniqueness) rows.Add(("uniqueness", uniqueness.ToString("F4")));
        if (r.ClassificationPrecision is double precision) rows.Add(("classification/precision", precision.ToString("F4")));
        if (r.ClassificationRecall is double recall) rows.Add(("classification/recall", recall.ToString("F4")));
        if (r.ClassificationF1Score is double f1) rows.Add(("classification/f1_score", f1.ToString("F4")));
        if (r.ClassificationAccuracy is double accuracy) rows.Add(("classification/accuracy", accuracy.ToString("F4")));
        Cli.WriteTable(title, rows);
    }

    public static Command Encode()
    {
        var sae = SaeOption();
        var activations = new Option<string>("--activations")
        {
            Description = "Activation file or folder [N, d_in]; a [batch, seq, d_in] tensor (sae model run --hooks) is read position by position", Required = true,
        };
        var tensorName = new Option<string?>("--tensor")
        {
            Description = "The .safetensors tensor to encode (default: 'activations', else the one named as the SAE's hook_name, or its per-prompt H.0, H.1, ..., else the file's only tensor)",
        };
        var output = new Option<string>("--out") { Description = "Output .safetensors with feature_acts [N, d_sae] and sae_out [N, d_out]", Required = true };
        var batchSize = new Option<int>("--batch-size") { Description = "Rows per batch", DefaultValueFactory = _ => 4096 }.Positive();
        var arch = ArchOption();
        var command = new Command("encode", "Encode every row of an activation file: feature activations and reconstructions") { sae, activations, tensorName, output, batchSize, arch };
        Cli.SetAction(command, parse =>
        {
            var inputs = parse.GetValue(activations)!;
            string outPath = parse.GetValue(output)!;
            OutputGuard.RefuseBadOutputFile("--out", outPath,
                new CommandInput("--activations", inputs, InputKind.Whole), new CommandInput("--sae", parse.GetValue(sae)!, InputKind.Sae));
            // The file is safetensors whatever its name: a .npy or .pt name would promise a format it does not hold.
            if (!outPath.EndsWith(".safetensors", StringComparison.OrdinalIgnoreCase))
                throw new SaeSharpException($"--out {outPath}: sae encode writes a .safetensors file (feature_acts, sae_out); name it *.safetensors");
            using var model = SaeLoader.Load(parse.GetValue(sae)!, LoadOptions(parse, arch));
            model.eval();
            if (model.ReadsContext) throw TemporalSae.SequenceRequired($"sae encode of {inputs}");
            using var source = ActivationSplit.EvalFiles([inputs], new ActivationFileSourceOptions
            {
                ExpectedDIn = model.Cfg.DIn, HookName = model.Cfg.Metadata.HookName, InputName = parse.GetValue(tensorName),
            });
            long n = source.Rows ?? throw new SaeSharpException($"{inputs}: row count unknown");
            using var writer = new SafeTensorsStreamWriter(parse.GetValue(output)!,
            [
                ("feature_acts", ScalarType.Float32, [n, model.Cfg.DSae]),
                ("sae_out", ScalarType.Float32, [n, model.Cfg.DOutOrIn]),
            ]);
            long row = 0;
            using (no_grad())
            {
                while (source.Next(parse.GetValue(batchSize)) is { } batch)
                {
                    using var scope = NewDisposeScope();
                    using var _ = batch;
                    var (y, f) = model.Run(batch.Input);
                    writer.WriteRows("feature_acts", row, f);
                    writer.WriteRows("sae_out", row, y);
                    row += batch.Rows;
                }
            }
            if (row != n) throw new SaeSharpException($"{inputs}: read {row} rows, expected {n}");
            writer.Commit();
            Console.WriteLine($"encoded {Cli.Integer(n)} rows into {parse.GetValue(output)}");
            return 0;
        });
        return command;
    }

    /// <summary><c>--from</c> as an input of the output checks: a model folder's files, or the config file itself.</summary>
    private static CommandInput SyntheticModelInput(string source) =>
        new("--from", source, Directory.Exists(source) ? InputKind.Folder : InputKind.Whole,
            Directory.Exists(source) ? [SyntheticModelConfig.FileName, SyntheticModel.WeightsFileName, SyntheticHierarchy.FileName] : null);

    /// <summary>The SAELens SyntheticModel named by <c>--from</c>: a folder written by its save() (or that folder's
    /// config file) is loaded; a config without the saved weights is generated from the config as SAELens would.</summary>
    private static (SyntheticModel Model, string ConfigPath, bool Generated) OpenSyntheticModel(string source, ulong seed)
    {
        string dir = File.Exists(source) ? Path.GetDirectoryName(Path.GetFullPath(source))! : source;
        string config = File.Exists(source) ? source : Path.Combine(dir, SyntheticModelConfig.FileName);
        if (!Directory.Exists(dir)) throw new SaeSharpException($"--from {source}: folder not found");
        bool saved = File.Exists(Path.Combine(dir, SyntheticModel.WeightsFileName)) && Path.GetFileName(config) == SyntheticModelConfig.FileName;
        if (saved) return (SyntheticModel.Load(dir, seed), config, false);
        return (SyntheticModel.FromConfig(SyntheticModelConfig.Load(config), seed), config, true);
    }

    public static Command Synth()
    {
        var defaults = new SyntheticOptions();
        var output = new Option<string?>("--out") { Description = "Output folder (required, except with --from and --save-model, which may only save the model)" };
        var dIn = new Option<int>("--d-in") { Description = "Activation width", DefaultValueFactory = _ => defaults.DIn }.Positive();
        var features = new Option<int>("--features") { Description = "Number of true features (more than d_in: superposition)", DefaultValueFactory = _ => defaults.NFeatures }.Positive();
        var rows = new Option<long>("--rows") { Description = "Training rows", DefaultValueFactory = _ => defaults.TrainRows }.Positive();
        var evalRows = new Option<long>("--eval-rows") { Description = "Evaluation rows (0: no eval.safetensors)", DefaultValueFactory = _ => defaults.EvalRows }.NonNegative();
        var seed = new Option<ulong>("--seed") { Description = "Seed", DefaultValueFactory = _ => defaults.Seed };
        var noise = new Option<double>("--noise") { Description = "Gaussian noise std", DefaultValueFactory = _ => defaults.NoiseStd }.NonNegative();
        var from = new Option<string?>("--from")
        {
            Description = "Sample a SAELens SyntheticModel (SynthSAEBench generator) instead: the folder its save() writes " +
                          "(synthetic_model_config.json, synthetic_model.safetensors, hierarchy.json), or a synthetic_model_config.json " +
                          "alone (the model is then generated from it as SAELens does)",
        };
        var saveModel = new Option<string?>("--save-model")
        {
            Description = "With --from: also save the SyntheticModel in SAELens's layout (synthetic_model_config.json, synthetic_model.safetensors, " +
                          "hierarchy.json), which SAELens's SyntheticModel.load_from_disk reads; without --out only this is done",
        };
        var force = new Option<bool>("--force") { Description = "Write --save-model into a folder that already holds files (its model files are replaced)" };
        var command = new Command("synth", string.Create(System.Globalization.CultureInfo.InvariantCulture,
            $"Write synthetic superposition data with known features: train.safetensors, eval.safetensors (rows, and each row's feature activations) " +
            $"and features.safetensors " +
            $"(the true directions and frequencies). Feature i fires with probability {defaults.MaxFrequency}·(i+1)^−{defaults.FrequencyExponent}, " +
            $"with a magnitude uniform in [{defaults.MagnitudeLow}, {defaults.MagnitudeHigh})"))
            { output, dIn, features, rows, evalRows, seed, noise, from, saveModel, force };
        Cli.SetAction(command, parse =>
        {
            var outDir = parse.GetValue(output);
            var saveDir = parse.GetValue(saveModel);
            // Before anything is generated: a file at --out, or --out onto the --from model's files.
            if (outDir is not null)
                OutputGuard.RefuseReplacingInput("--out", outDir, [SyntheticDataset.TrainFile, SyntheticDataset.EvalFile, SyntheticDataset.FeaturesFile],
                    parse.GetValue(from) is string model ? [SyntheticModelInput(model)] : []);
            if (parse.GetValue(from) is string source)
            {
                Cli.RefuseGiven(parse, "not with --from (the SAELens model fixes the width, the features and the rows' distribution)", dIn, features, noise);
                if (outDir is null && saveDir is null)
                    throw new SaeSharpException("--out is required (or --save-model alone, to only save the SyntheticModel)");
                if (outDir is null) Cli.RefuseGiven(parse, "not without --out (only the model is saved)", rows, evalRows);
                if (saveDir is not null)
                {
                    if (File.Exists(saveDir)) throw new SaeSharpException($"--save-model {saveDir}: exists and is a file; give a folder");
                    OutputGuard.RefuseReplacingInput("--save-model", saveDir, [SyntheticModelConfig.FileName, SyntheticModel.WeightsFileName, SyntheticHierarchy.FileName],
                        SyntheticModelInput(source));
                    if (Directory.Exists(saveDir) && Directory.EnumerateFileSystemEntries(saveDir).Any() && !parse.GetValue(force))
                        throw new SaeSharpException($"--save-model {saveDir}: folder is not empty (use --force to write into it)");
                }
                else Cli.RefuseGiven(parse, "only with --save-model", force);
                var (model, configPath, generated) = OpenSyntheticModel(source, parse.GetValue(seed));
                using var _ = model;
                Console.WriteLine($"SAELens SyntheticModel {(generated ? "generated from " + configPath : source)}: {Cli.Integer(model.NumFeatures)} features in {Cli.Integer(model.HiddenDim)} dimensions" +
                                  (model.CorrelationFactor is null ? "" : $", low-rank correlation (rank {model.CorrelationFactor.shape[1]})") +
                                  (model.Hierarchy is null ? "" : $", hierarchy ({model.Hierarchy.Edges.Count} parent-child pairs, {model.Hierarchy.MutuallyExclusiveGroups.Count} mutually exclusive groups)"));
                if (saveDir is not null)
                {
                    model.Save(saveDir, overwrite: true);
                    Console.WriteLine($"model: {saveDir} (SAELens's layout: {SyntheticModelConfig.FileName}, {SyntheticModel.WeightsFileName}" +
                                      (model.Hierarchy is null ? ")" : $", {SyntheticHierarchy.FileName})"));
                }
                if (outDir is null) return 0;
                var written = SyntheticDataset.WriteFrom(outDir, model, parse.GetValue(rows), parse.GetValue(evalRows), parse.GetValue(seed),
                    File.ReadAllText(configPath));
                Console.WriteLine($"train: {written.TrainPath}");
                if (written.EvalPath is not null) Console.WriteLine($"eval: {written.EvalPath}");
                Console.WriteLine($"features: {written.FeaturesPath}");
                return 0;
            }
            if (saveDir is not null) throw new SaeSharpException("--save-model needs --from (a SAELens SyntheticModel folder or config)");
            Cli.RefuseGiven(parse, "only with --save-model", force);
            if (outDir is null) throw new SaeSharpException("--out is required");
            var files = SyntheticDataset.Write(outDir, defaults with
            {
                DIn = parse.GetValue(dIn), NFeatures = parse.GetValue(features), TrainRows = parse.GetValue(rows),
                EvalRows = parse.GetValue(evalRows), Seed = parse.GetValue(seed), NoiseStd = parse.GetValue(noise),
            });
            Console.WriteLine($"train: {files.TrainPath}");
            if (files.EvalPath is not null) Console.WriteLine($"eval: {files.EvalPath}");
            Console.WriteLine($"features: {files.FeaturesPath}");
            return 0;
        });
        return command;
    }

    /// <summary>" (RELEASE/SAE_ID was trained on MODEL: --model MODEL)" for the first <c>--sae</c> whose release is in
    /// the table, read from the table alone (nothing is downloaded); empty otherwise.</summary>
    internal static string ReleaseModelHint(IEnumerable<string> saes)
    {
        foreach (var spec in saes)
            if (spec.IndexOf('/') is > 0 and var slash && SaeSharp.Hub.SaeReleases.Find(spec[..slash]) is { } release)
                return $" ({spec} was trained on {release.Model}: --model {release.Model})";
        return "";
    }
}
