using System.CommandLine;
using System.Text.Json;
using SaeSharp.Activations;
using SaeSharp.Analysis;
using SaeSharp.Interop;
using SaeSharp.IO;
using SaeSharp.Models;
using SaeSharp.Pipelines;
using SaeSharp.Tokenizers;
using Spectre.Console;
using static TorchSharp.torch;

namespace SaeSharp.Cli.Commands;

/// <summary><c>sae features</c>, <c>sae dashboard</c>, <c>sae inspect</c>: what an SAE's features mean.</summary>
internal static class AnalysisCommands
{
    public static Command Features()
    {
        var sae = SaeCommands.SaeOption();
        var model = ModelCommands.ModelOption(required: false);
        model.Description += " (required; a model-diffing crosscoder: the base model, default the one it records)";
        var diffModel = ModelSource.AtRevision<string?>(new("--diff-model") { Description = "A model-diffing crosscoder's chat model (slot 1), run on the same windows (default: the one it records)" }, ModelSource.DiffRevision);
        var dataset = new Option<string?>("--dataset")
        {
            Description = ".txt, .jsonl, .parquet (or a folder of them), or a hub dataset hf:ORG/NAME[:SPLIT]; pre-tokenized jsonl/parquet detected (default: the SAE's cfg.json dataset_path)",
        };
        var tokens = new Option<long?>("--tokens") { Description = "Token budget (default: the whole dataset)" }.Positive();
        var output = new Option<string>("--out") { Description = "Output folder: features.jsonl, summary.json, tokens.json", Required = true };
        var features = new Option<string>("--features") { Description = "Features to analyse: all, or a list such as 0-99,123", DefaultValueFactory = _ => "all" };
        var top = new Option<int>("--top") { Description = "Top-activating examples per feature", DefaultValueFactory = _ => 20 }.Positive();
        var context = new Option<int>("--context") { Description = "Tokens shown on each side of an example", DefaultValueFactory = _ => 8 }.NonNegative();
        var contextSize = new Option<int?>("--context-size") { Description = "Tokens per context window (default: the SAE's context_size, else 128)" }.Positive();
        var batch = new Option<int>("--batch-size") { Description = "Context windows per model run", DefaultValueFactory = _ => 8 }.Positive();
        var intervals = new Option<int>("--intervals") { Description = "Most activation intervals sampled per feature (even)", DefaultValueFactory = _ => 10 }.Positive().Even();
        var seed = new Option<ulong>("--seed") { Description = "Seed of the interval sampling", DefaultValueFactory = _ => 0 };
        var html = new Option<string?>("--html") { Description = "Also write the HTML dashboard to this folder" };
        var png = new Option<bool>("--png") { Description = "Also write each feature's activation histogram as OUT/histograms/<i>.png" };
        var noBos = new Option<bool>("--no-prepend-bos") { Description = "Do not start every window with BOS (default: the SAE's prepend_bos)" };
        var exclude = new Option<bool>("--exclude-special-tokens") { Description = "Do not count BOS/EOS/pad positions (default: the SAE's setting)" };
        var excludeIds = new Option<string?>("--exclude-token-ids") { Description = "Do not count the positions of these token ids, e.g. 0,50256 (default: the SAE's setting)" };
        var textField = new Option<string?>("--text-field") { Description = "jsonl field / parquet column holding the text (default: as SAELens, tokens/input_ids, else text, else problem)" };
        var layers = new Option<string?>("--layers") { Description = "A whole cross-layer transcoder's layers to analyse, e.g. 0,3 or 0-5 (default: all); each is written to OUT/layer_N" };
        var fold = new Option<bool>("--fold-w-dec-norm") { Description = "Fold the decoder norms first, as SAEDashboard's runners do (activations times ||W_dec[i]||; not for topk/temporal)" };
        var dtype = ModelSource.SaeOrCltDtypeOption();
        var command = new Command("features", "Feature statistics over a corpus: density, max, top examples, interval samples, histograms, logit effects")
        {
            sae, model, diffModel, dataset, tokens, output, features, top, context, contextSize, batch, intervals, seed, html, png, noBos, exclude, excludeIds, textField, layers, fold, dtype,
        };
        var cltLoading = new CltLoadingCli();
        cltLoading.AddTo(command);
        Cli.SetAction(command, parse =>
        {
            string saePath = parse.GetValue(sae)!;
            if (parse.GetValue(dataset) is { } given && !Data.TextDataset.Exists(given)) throw new SaeSharpException($"--dataset {given}: no such file or folder");
            string ds = parse.GetValue(dataset) ?? SaeCommands.RecordedDataset([saePath], null)
                        ?? throw new SaeSharpException("give --dataset with --model (the SAE's cfg.json records no dataset_path)");
            // A model-diffing crosscoder names its two models; anything else needs --model (and takes no --diff-model).
            string? diffDir = null;
            string modelDir;
            CrossCoderSources? ccSources = null;
            if (CrossCoderFormat.IsCrossCoderPath(saePath))
                using (CrossCoderFormat.Load(saePath, out var recorded)) ccSources = recorded;
            if (ccSources is not null && AnalysisPipeline.IsModelDiffing(ccSources))
                (modelDir, diffDir) = AnalysisPipeline.DiffingModels(saePath, ccSources, parse.GetValue(model), parse.GetValue(diffModel));
            else
            {
                Cli.RefuseGiven(parse, $"only for a model-diffing crosscoder (slots from two models); {saePath} reads one model", diffModel);
                modelDir = ModelSource.Resolve(parse.GetValue(model) ?? throw new SaeSharpException("--model is required (only a model-diffing crosscoder can take the models it records)"));
            }
            CommandInput[] inputs =
            [
                new("--sae", saePath, InputKind.Sae), new("--model", modelDir, InputKind.Folder), new("--dataset", ds, InputKind.Whole),
                .. diffDir is null ? Array.Empty<CommandInput>() : [new CommandInput("--diff-model", diffDir, InputKind.Folder)],
            ];
            ScalarType? modelDtype = ModelSource.GivenDtype(parse, dtype, modelDir);
            if (CrossLayerTranscoderLoader.IsCrossLayerTranscoder(saePath, null) || CrossCoderFormat.IsCrossCoderPath(saePath))
                Cli.RefuseGiven(parse, $"only for an SAE; {saePath} is a {(CrossCoderFormat.IsCrossCoderPath(saePath) ? "crosscoder" : "whole cross-layer transcoder")}", fold);
            if (CrossLayerTranscoderLoader.IsCrossLayerTranscoder(saePath, null))
                return CrossLayerFeatures(parse, saePath, cltLoading.Read(parse, modelDtype), model, output, features, html, png, layers, inputs, excludeIds, exclude,
                    new ModelDataOptions
                    {
                        ModelPath = modelDir, DatasetPath = ds, Tokens = parse.GetValue(tokens), ModelDtype = modelDtype,
                        ContextSize = parse.GetValue(contextSize), PrependBos = parse.GetValue(noBos) ? false : null, TextField = parse.GetValue(textField),
                        BatchSizePrompts = parse.GetValue(batch),
                    },
                    new FeatureStatisticsOptions
                    {
                        TopExamples = parse.GetValue(top), Context = parse.GetValue(context), Intervals = parse.GetValue(intervals), Seed = parse.GetValue(seed),
                    });
            if (parse.GetValue(layers) is not null) throw new SaeSharpException($"--layers: {saePath} is one SAE, not a whole cross-layer transcoder");
            cltLoading.RefuseForSae(parse, saePath);
            OutputGuard.RefuseReplacingInput("--out", parse.GetValue(output)!,
                [FeatureReport.FeaturesFile, FeatureReport.SummaryFile, FeatureReport.TokensFile, "histograms"], inputs);
            if (parse.GetValue(html) is { } htmlDir) OutputGuard.RefuseReplacingInput("--html", htmlDir, DashboardWriter.Entries, inputs);
            bool crosscoder = CrossCoderFormat.IsCrossCoderPath(saePath);
            int dSae;
            if (crosscoder)
                using (var probe = CrossCoderFormat.Load(saePath)) dSae = probe.Cfg.DictSize;
            else
                using (var probe = SaeLoader.Load(saePath)) dSae = probe.Cfg.DSae;
            var (excludeSpecial, excludeTokenIds) = ModelDataOptionsCli.ReadExclusion(parse, exclude, excludeIds);
            var data = new ModelDataOptions
            {
                ModelPath = modelDir, DatasetPath = ds, Tokens = parse.GetValue(tokens), ModelDtype = modelDtype,
                ContextSize = parse.GetValue(contextSize), PrependBos = parse.GetValue(noBos) ? false : null,
                ExcludeSpecialTokens = excludeSpecial ? true : null, ExcludeTokenIds = excludeTokenIds, TextField = parse.GetValue(textField),
                BatchSizePrompts = parse.GetValue(batch),
            };
            var options = new FeatureAnalysisOptions
            {
                Features = FeatureSelection.Parse(parse.GetValue(features), dSae),
                Statistics = new FeatureStatisticsOptions
                {
                    TopExamples = parse.GetValue(top), Context = parse.GetValue(context), Intervals = parse.GetValue(intervals), Seed = parse.GetValue(seed),
                },
            };
            var report = crosscoder
                ? CliProgress.Run<FeatureProgress, FeatureReport>("features", null,
                    progress => AnalysisPipeline.CrossCoderFeatures(saePath, data, progress is null ? options : options with { Progress = progress.Report }, diffDir),
                    p => (p.Tokens, p.TotalTokens, CliProgress.Describe("features", new WorkProgress("tokens", p.Tokens, p.TotalTokens, p.Elapsed))), null)
                : RunWithProgress(saePath, data, options, parse.GetValue(fold));
            string outDir = parse.GetValue(output)!;
            report.Save(outDir);
            int dead = report.Features.Count(f => f.Firings == 0);
            // Fewer windows than --tokens asks for (at the window length; a seqpos slice asks for more): the dataset ran out.
            if (ModelPipeline.ContextsFor(data.Tokens, report.Source.ContextSize) is long asked && report.Windows < asked)
                Cli.ErrorLine($"note: the dataset ran out after {Cli.Integer(report.Windows)} context windows ({Cli.Integer(report.Tokens)} tokens; --tokens " +
                              $"{Cli.Integer(data.Tokens!.Value)}): the statistics are over those; a larger dataset gives more");
            Cli.TextLine($"{Cli.Integer(report.Features.Count)} features over {Cli.Integer(report.Tokens)} tokens ({Cli.Integer(dead)} never fired): {Path.Combine(outDir, FeatureReport.FeaturesFile)}");
            if (parse.GetValue(png))
                Console.WriteLine($"{Cli.Integer(FeatureHistograms.Save(report, Path.Combine(outDir, "histograms")))} histogram PNGs: {Path.Combine(outDir, "histograms")}");
            if (parse.GetValue(html) is { } site)
                Console.WriteLine($"dashboard: {CliProgress.Run("dashboard", progress => DashboardWriter.Write(report, site, progress))}");
            return 0;
        });
        return command;
    }

    /// <summary><c>sae features</c> of a whole cross-layer transcoder: one pass, one ordinary features folder per layer
    /// (OUT/layer_N, and with --html a dashboard per layer in HTML/layer_N).</summary>
    private static int CrossLayerFeatures(ParseResult parse, string saePath, CrossLayerTranscoderLoadOptions loading, Option<string> model, Option<string> output, Option<string> features,
        Option<string?> html, Option<bool> png, Option<string?> layers, CommandInput[] inputs, Option<string?> excludeIds, Option<bool> exclude,
        ModelDataOptions data, FeatureStatisticsOptions statistics)
    {
        string outDir = parse.GetValue(output)!;
        // The layer folders are new; a CLT's input folders may not be written into (nor the model or dataset).
        var cltInputs = inputs.Select(i => i.Flag == "--sae" ? new CommandInput("--sae", i.Path, InputKind.Whole) : i).ToArray();
        OutputGuard.RefuseReplacingInput("--out", outDir, [], cltInputs);
        if (parse.GetValue(html) is { } htmlDir) OutputGuard.RefuseReplacingInput("--html", htmlDir, [], cltInputs);
        var (excludeSpecial, excludeTokenIds) = ModelDataOptionsCli.ReadExclusion(parse, exclude, excludeIds);
        data = data with { ExcludeSpecialTokens = excludeSpecial ? true : null, ExcludeTokenIds = excludeTokenIds };
        var options = new FeatureAnalysisOptions { Statistics = statistics };
        var reports = CliProgress.Run<FeatureProgress, IReadOnlyList<(int Layer, FeatureReport Report)>>("features", null,
            progress => AnalysisPipeline.CrossLayerFeatures(saePath, data, progress is null ? options : options with { Progress = progress.Report },
                featureSpec: parse.GetValue(features), layerSpec: parse.GetValue(layers), loading: loading),
            p => (p.Tokens, p.TotalTokens, CliProgress.Describe("features", new WorkProgress("tokens", p.Tokens, p.TotalTokens, p.Elapsed))), null);
        foreach (var (layer, report) in reports)
        {
            string dir = Path.Combine(outDir, FeatureAnalysis.CrossLayerFolder(layer));
            report.Save(dir);
            int dead = report.Features.Count(f => f.Firings == 0);
            Console.WriteLine($"layer {layer} ({report.Source.Hook}): {Cli.Integer(report.Features.Count)} features over {Cli.Integer(report.Tokens)} tokens ({Cli.Integer(dead)} never fired): {Path.Combine(dir, FeatureReport.FeaturesFile)}");
            if (parse.GetValue(png))
                Console.WriteLine($"  {Cli.Integer(FeatureHistograms.Save(report, Path.Combine(dir, "histograms")))} histogram PNGs: {Path.Combine(dir, "histograms")}");
            if (parse.GetValue(html) is { } site)
            {
                string layerSite = Path.Combine(site, FeatureAnalysis.CrossLayerFolder(layer));
                Console.WriteLine($"  dashboard: {CliProgress.Run("dashboard", progress => DashboardWriter.Write(report, layerSite, progress))}");
            }
        }
        return 0;
    }

    private static FeatureReport RunWithProgress(string saePath, ModelDataOptions data, FeatureAnalysisOptions options, bool foldWDecNorm) =>
        CliProgress.Run<FeatureProgress, FeatureReport>("features", null,
            progress => AnalysisPipeline.Features(saePath, data, progress is null ? options : options with { Progress = progress.Report }, foldWDecNorm),
            p => (p.Tokens, p.TotalTokens, CliProgress.Describe("features", new WorkProgress("tokens", p.Tokens, p.TotalTokens, p.Elapsed))), null);

    public static Command Dashboard()
    {
        var features = new Option<string>("--features") { Description = "Folder written by `sae features`", Required = true };
        var output = new Option<string>("--out") { Description = "Site folder (index.html, features/<i>.html, assets/)", Required = true };
        var command = new Command("dashboard", "Write a self-contained HTML dashboard (index + one page per feature) from `sae features` output")
        {
            features, output,
        };
        Cli.SetAction(command, parse =>
        {
            OutputGuard.RefuseReplacingInput("--out", parse.GetValue(output)!, DashboardWriter.Entries,
                new CommandInput("--features", parse.GetValue(features)!, InputKind.Folder, FeatureReport.Files));
            var report = FeatureReport.Load(parse.GetValue(features)!);
            string index = CliProgress.Run("dashboard", progress => DashboardWriter.Write(report, parse.GetValue(output)!, progress));
            Console.WriteLine($"dashboard of {Cli.Integer(report.Features.Count)} features: {index}");
            return 0;
        });
        return command;
    }

    public static Command Neuronpedia()
    {
        var features = new Option<string>("--features") { Description = "Folder written by `sae features`", Required = true };
        var output = new Option<string>("--out") { Description = "Output folder; the files go into its subfolder MODEL_SAESET_HOOK_DSAE, as SAEDashboard's runner names it", Required = true };
        var model = ModelCommands.ModelOption(required: false);
        model.Description = "The model whose vocabulary strings the tokens are written as (builtin, a Hugging Face model id or a local model folder; default: tokens.json's display strings)";
        var modelId = new Option<string?>("--model-id") { Description = "Neuronpedia model id, e.g. gpt2-small (default: from the SAE's neuronpedia_id, else summary.json's model)" };
        var layer = new Option<int?>("--layer-num") { Description = "Layer (default: from the SAE's neuronpedia_id, else the hook's blocks.N)" }.NonNegative();
        var set = new Option<string?>("--np-set-name") { Description = "Neuronpedia SAE set, e.g. res-jb (default: from the SAE's neuronpedia_id MODEL/LAYER-SET)" };
        var saeSet = new Option<string?>("--sae-set") { Description = "The runner's sae_set, naming the subfolder and skipped_indexes.json's sae_set (default: the release of summary.json's sae when it is RELEASE/SAE_ID, else --np-set-name)" };
        var sparsity = new Option<int>("--sparsity-threshold") { Description = "skipped_indexes.json's log_sparsity (the runner's sparsity_threshold)", DefaultValueFactory = _ => -6 };
        var dataset = new Option<string?>("--dataset-path") { Description = "Dataset named in every feature (default: summary.json's dataset)" };
        var perBatch = new Option<int>("--n-features-per-batch") { Description = "Features per batch-N.json (split as np.array_split)", DefaultValueFactory = _ => 128 }.Positive();
        var command = new Command("neuronpedia", "Export `sae features` output as SAEDashboard's NeuronpediaRunner writes it for Neuronpedia: batch-N.json, skipped_indexes.json, run_settings.json")
        {
            features, output, model, modelId, layer, set, saeSet, sparsity, dataset, perBatch,
        };
        Cli.SetAction(command, parse =>
        {
            string featuresDir = parse.GetValue(features)!, outDir = parse.GetValue(output)!;
            // The files go into a new subfolder and none is named as a features-folder file: only an --out that is a file is refused.
            OutputGuard.RefuseReplacingInput("--out", outDir, Array.Empty<string>());
            var options = new NeuronpediaExportOptions
            {
                ModelId = parse.GetValue(modelId), Layer = parse.GetValue(layer), NpSetName = parse.GetValue(set), SaeSet = parse.GetValue(saeSet),
                SparsityThreshold = parse.GetValue(sparsity), DatasetPath = parse.GetValue(dataset), FeaturesPerBatch = parse.GetValue(perBatch),
                Tokenizer = parse.GetValue(model) is { } m ? Tokenizer.FromFolder(ModelSource.Resolve(m)) : null,
            };
            string dir = NeuronpediaExport.Write(featuresDir, outDir, options, out var note);
            if (note is not null) Cli.ErrorLine($"note: {note}");
            int batches = Directory.GetFiles(dir, "batch-*.json").Length;
            Console.WriteLine($"{Cli.Integer(batches)} batch file{(batches == 1 ? "" : "s")}: {dir}");
            return 0;
        });
        return command;
    }

    public static Command Inspect()
    {
        var sae = SaeCommands.SaeOption();
        var model = ModelCommands.ModelOption();
        var prompt = new Option<string[]>("--prompt") { Description = "Prompt text; repeat it to compare prompts", Required = true, AllowMultipleArgumentsPerToken = false };
        var top = new Option<int>("--top") { Description = "Top features (and neurons) shown", DefaultValueFactory = _ => 10 }.Positive();
        var neurons = new Option<bool>("--neurons") { Description = "Also show the top raw dimensions of the hooked activation (an MLP hook's neurons)" };
        var html = new Option<string?>("--html") { Description = "Write the view as a self-contained HTML file" };
        var json = new Option<string?>("--json") { Description = "Write the view as JSON" };
        var stats = new Option<string?>("--stats") { Description = "A `sae features` folder of this SAE, to show each feature's density" };
        var noBos = new Option<bool>("--no-prepend-bos") { Description = "Do not start the prompt with BOS (default: the SAE's prepend_bos)" };
        var dtype = ModelSource.SaeOrCltDtypeOption();
        var command = new Command("inspect", "The top SAE features of a prompt, its tokens shaded by each feature's activation")
        {
            sae, model, prompt, top, neurons, html, json, stats, noBos, dtype,
        };
        var cltLoading = new CltLoadingCli();
        cltLoading.AddTo(command);
        Cli.SetAction(command, parse =>
        {
            string modelDir = ModelSource.Resolve(parse.GetValue(model)!);
            var inspectInputs = new List<CommandInput> { new("--sae", parse.GetValue(sae)!, InputKind.Sae), new("--model", modelDir, InputKind.Folder) };
            if (parse.GetValue(stats) is { } statsDir) inspectInputs.Add(new("--stats", statsDir, InputKind.Whole));
            OutputGuard.RefuseBadOutputFiles([("--json", parse.GetValue(json)), ("--html", parse.GetValue(html))], [.. inspectInputs]);
            ScalarType? modelDtype = ModelSource.GivenDtype(parse, dtype, modelDir);
            if (CrossLayerTranscoderLoader.IsCrossLayerTranscoder(parse.GetValue(sae)!, null))
            {
                if (parse.GetValue(neurons) || parse.GetValue(stats) is not null)
                    throw new SaeSharpException($"{(parse.GetValue(neurons) ? "--neurons" : "--stats")}: not for a whole cross-layer transcoder (its features span layers)");
                return InspectCrossLayer(parse.GetValue(sae)!, modelDir, modelDtype, cltLoading.Read(parse, modelDtype), parse.GetValue(prompt)!, parse.GetValue(top), !parse.GetValue(noBos),
                    parse.GetValue(json), parse.GetValue(html));
            }
            cltLoading.RefuseForSae(parse, parse.GetValue(sae)!);
            var (s, pm) = ModelForSae.LoadWithSae(parse.GetValue(sae)!, modelDir, modelDtype);
            using (s)
            using (pm)
            {
                var tokenizer = Tokenizer.FromFolder(modelDir);
                var inspector = new PromptInspector(pm.Model, s, tokenizer, pm.Hooks, parse.GetValue(noBos) ? false : null);
                var views = parse.GetValue(prompt)!.Select(p => inspector.Inspect(p, parse.GetValue(top), parse.GetValue(neurons))).ToList();
                var report = parse.GetValue(stats) is { } dir ? FeatureReport.Load(dir) : null;
                var notes = inspector.Notes(views.SelectMany(v => v.Features.Select(u => u.Index)), report);
                var cmp = views.Count > 1 ? PromptInspector.Compare(views) : null;
                Print(views, notes, cmp, s.Cfg.Metadata.Site(inspector.Hook));
                if (parse.GetValue(json) is { } jsonPath)
                {
                    var node = views.Count == 1 ? views[0].ToJson() : new System.Text.Json.Nodes.JsonObject
                    {
                        ["prompts"] = new System.Text.Json.Nodes.JsonArray(views.Select(v => (System.Text.Json.Nodes.JsonNode)v.ToJson()).ToArray()),
                        ["shared"] = new System.Text.Json.Nodes.JsonArray(cmp!.Shared.Select(i => (System.Text.Json.Nodes.JsonNode)i).ToArray()),
                        ["specific"] = new System.Text.Json.Nodes.JsonArray(cmp.Specific.Select(l =>
                            (System.Text.Json.Nodes.JsonNode)new System.Text.Json.Nodes.JsonArray(l.Select(i => (System.Text.Json.Nodes.JsonNode)i).ToArray())).ToArray()),
                    };
                    AtomicFile.WriteAllText(jsonPath, node.ToJsonString(new JsonSerializerOptions { WriteIndented = true }));
                }
                if (parse.GetValue(html) is { } htmlPath)
                {
                    DashboardWriter.WritePromptView(htmlPath, views, notes, cmp, inspector.Hook);
                    Console.WriteLine($"prompt view: {htmlPath}");
                }
            }
            return 0;
        });
        return command;
    }

    /// <summary><c>sae inspect</c> of a whole cross-layer transcoder: each prompt's top features over all layers
    /// (<see cref="CrossLayerPromptInspector"/>), labelled L{layer}/{index}; no comparison of prompts, no notes.</summary>
    private static int InspectCrossLayer(string cltPath, string modelDir, ScalarType? modelDtype, CrossLayerTranscoderLoadOptions loading, string[] prompts, int top, bool bos, string? jsonPath, string? htmlPath)
    {
        using var clt = CrossLayerTranscoderLoader.Load(cltPath, loading);
        using var pm = ModelForSae.Load(modelDir, new WeightProcessingOptions(), modelDtype ?? ScalarType.Float32);
        var inspector = new CrossLayerPromptInspector(pm.Model, clt, Tokenizer.FromFolder(modelDir), pm.Hooks, bos);
        var views = prompts.Select(p => inspector.Inspect(p, top)).ToList();
        var notes = new Dictionary<int, FeatureNote>();
        string hooks = SaeCommands.PerBlock(inspector.InputHooks);
        Print(views, notes, null, hooks);
        if (jsonPath is not null)
        {
            var node = views.Count == 1 ? views[0].ToJson() : new System.Text.Json.Nodes.JsonObject
            {
                ["prompts"] = new System.Text.Json.Nodes.JsonArray(views.Select(v => (System.Text.Json.Nodes.JsonNode)v.ToJson()).ToArray()),
            };
            AtomicFile.WriteAllText(jsonPath, node.ToJsonString(new JsonSerializerOptions { WriteIndented = true }));
        }
        if (htmlPath is not null)
        {
            DashboardWriter.WritePromptView(htmlPath, views, notes, null, hooks);
            Console.WriteLine($"prompt view: {htmlPath}");
        }
        return 0;
    }

    /// <summary>The prompt view on the terminal: each unit's line of tokens with an orange background scaled by activation;
    /// a line wider than the terminal wraps between words with its indent.</summary>
    internal static void Print(List<PromptView> views, IReadOnlyDictionary<int, FeatureNote> notes, PromptComparison? cmp, string hook)
    {
        for (int v = 0; v < views.Count; v++)
        {
            var view = views[v];
            AnsiConsole.MarkupLine($"[bold]prompt {v + 1}[/] [grey]({Markup.Escape(hook)}, {view.Tokens.Length} tokens)[/]");
            foreach (var u in view.Features)
            {
                FeatureNote? note = null;
                if (u.Layer is null) notes.TryGetValue(u.Index, out note);   // notes are one SAE's, by index
                // Wrapped here between words, a quoted token (" They") being one word: Spectre would break inside it.
                string head = $"feature {u.Label}";
                var words = new List<string> { $"{head} sum {u.Sum:0.###}" };
                if (note?.Density is double d) words.Add($" density {(Console.IsOutputRedirected ? Cli.Percent("density", d, 2) : DashboardWriter.Percent(d))}");
                if (note is not null) words.AddRange(note.TopLogits.Select(DashboardWriter.Quote).Prepend(" logits"));
                var lines = Cli.WrapWords(words, AnsiConsole.Profile.Width - 2);
                Cli.WriteIndented(string.Join("\n", lines.Select((l, i) => i == 0         // the first line starts with words[0]
                    ? $"[bold]{head}[/]{Markup.Escape(words[0][head.Length..])}[grey]{Markup.Escape(l[words[0].Length..])}[/]"
                    : $"[grey]{Markup.Escape(l)}[/]")), 2);
                Cli.WriteIndented(Shaded(view.TokenStrings, u.Acts), 4);
            }
            if (view.Neurons.Count > 0)
            {
                AnsiConsole.MarkupLine("  [bold]top neurons[/]");
                foreach (var u in view.Neurons)
                {
                    Cli.WriteIndented($"[bold]neuron {u.Index}[/] sum {u.Sum:0.###}", 2);
                    Cli.WriteIndented(Shaded(view.TokenStrings, u.Acts), 4);
                }
            }
        }
        if (cmp is not null)
        {
            AnsiConsole.MarkupLine($"[bold]shared by all prompts:[/] {(cmp.Shared.Count == 0 ? "none" : string.Join(", ", cmp.Shared))}");
            for (int v = 0; v < cmp.Specific.Count; v++)
                AnsiConsole.MarkupLine($"[bold]only prompt {v + 1}:[/] {(cmp.Specific[v].Count == 0 ? "none" : string.Join(", ", cmp.Specific[v]))}");
        }
    }

    /// <summary>Tokens (as they read in running text, <see cref="Tokenizers.TokenDisplay.TokenText"/>) as Spectre markup,
    /// each on an orange background scaled by its activation; without colours (output in a pipe) each active token is
    /// followed by its activation in parentheses instead.</summary>
    internal static string Shaded(IReadOnlyList<string> tokens, IReadOnlyList<float> acts)
    {
        double max = acts.Select(Math.Abs).DefaultIfEmpty(0).Max();
        bool plain = !AnsiConsole.Profile.Capabilities.Ansi || AnsiConsole.Profile.Capabilities.ColorSystem == ColorSystem.NoColors;
        var sb = new System.Text.StringBuilder();
        for (int i = 0; i < tokens.Count; i++)
        {
            string text = Markup.Escape(DashboardWriter.Display(tokens[i]));
            double a = max > 0 ? Math.Clamp(acts[i] / max, 0, 1) : 0;
            if (a <= 0) { sb.Append(text); continue; }
            if (plain) { sb.Append(text).Append(Markup.Escape(FormattableString.Invariant($"({acts[i]:0.#})"))); continue; }
            // Blend white → orange (255, 140 − 60a, 0) by a.
            int g = (int)(255 - a * (255 - (140 - 60 * a))), b = (int)(255 * (1 - a));
            sb.Append($"[black on #FF{g:X2}{b:X2}]{text}[/]");
        }
        return sb.ToString();
    }
}
