using System.CommandLine;
using System.Diagnostics;
using SaeSharp.Activations;
using SaeSharp.Analysis;
using SaeSharp.Pipelines;
using SaeSharp.Models;
using SaeSharp.Synthetic;
using SaeSharp.Training;
using Spectre.Console;

namespace SaeSharp.Cli.Commands;

/// <summary>
/// <c>sae demo</c>: the seeds' flow on the built-in language model (<see cref="DemoRun"/>), printed as it goes: harvest,
/// TopK training, evaluation, label scores of features against neurons, dashboard, prompt view and steering.
/// <c>sae demo --synthetic</c>: synthesises superposition data with known features, trains three architectures on the
/// same batches in one pass, and compares them (MSE, FVU, L0, dead %, MMCS, recovered features).
/// </summary>
internal static class DemoCommand
{
    public static Command Create()
    {
        var output = new Option<string>("--out") { Description = "Output folder", DefaultValueFactory = _ => "runs/demo" };
        var synthetic = new Option<bool>("--synthetic") { Description = "The synthetic-vector demo: TopK, BatchTopK and ReLU SAEs on data with known features" };
        var quick = new Option<bool>("--quick") { Description = "A shortened run (seconds): 40k tokens, d_sae 256, smaller evaluation" };
        var tokens = new Option<long?>("--tokens") { Description = "Training tokens harvested from the model (default 600,000; --quick 40,960)" }.Positive();
        var dSae = new Option<int?>("--d-sae", "--dict-size") { Description = "SAE latents (default 256)" }.Positive();
        var k = new Option<int?>("--k") { Description = "TopK active latents (default 16; --quick 8)" }.Positive();
        var steps = new Option<long?>("--steps") { Description = "Training steps (default: one pass over the tokens; --synthetic 2000)" }.Positive();
        var seed = new Option<ulong>("--seed") { Description = "Seed", DefaultValueFactory = _ => 0UL };
        var command = new Command("demo", "Train a TopK SAE on the built-in language model and show what its features mean (--synthetic: SAEs on synthetic vectors)")
            { output, synthetic, quick, tokens, dSae, k, steps, seed };
        Cli.SetAction(command, parse =>
        {
            if (parse.GetValue(synthetic))
            {
                Cli.RefuseGiven(parse, "for the demo on the built-in language model; --synthetic takes --steps, --seed and --out", quick, tokens, dSae, k);
                return Run(parse.GetValue(output)!, parse.GetValue(steps) ?? 2000, parse.GetValue(seed));
            }
            var o = parse.GetValue(quick) ? DemoOptions.Quick(parse.GetValue(output)!) : new DemoOptions { OutDir = parse.GetValue(output)! };
            o = o with
            {
                TrainTokens = parse.GetValue(tokens) ?? o.TrainTokens, DSae = parse.GetValue(dSae) ?? o.DSae, K = parse.GetValue(k) ?? o.K,
                Steps = parse.GetValue(steps) ?? o.Steps, Seed = parse.GetValue(seed),
            };
            return RunOnModel(o);
        });
        return command;
    }

    /// <summary>The demo on the built-in model, stage by stage.</summary>
    internal static int RunOnModel(DemoOptions options)
    {
        var clock = Stopwatch.StartNew();
        using var demo = new DemoRun(options);
        var o = demo.Options;
        TransformerConfig cfg;
        using (var model = ModelLoader.FromPretrained(demo.ModelPath)) cfg = model.Config;
        AnsiConsole.MarkupLine($"[bold]SaeSharp demo[/]: a TopK SAE on the built-in language model " +
            $"[grey]({Markup.Escape(demo.ModelPath)}: {cfg.NLayers} layers, d_model {cfg.DModel}, vocabulary {cfg.DVocab})[/]");

        Stage(1, $"harvesting activations at {o.Hook} from generated labelled stories");
        var corpus = demo.GenerateCorpus();
        Line($"stories with token labels: {Cli.Integer(corpus.TrainTokens)} tokens for training ({corpus.TrainPath}), {Cli.Integer(corpus.HeldOutTokens)} held out ({corpus.HeldOutPath})");
        var harvest = demo.Harvest();
        Line($"the model runs on {Cli.Integer(harvest.Tokens)} training tokens in windows of {o.ContextSize}; the activations at {harvest.Hook} (d = {harvest.DIn}, " +
             "BOS positions left out) stream through a shuffling buffer of 64 contexts into the trainer");

        Stage(2, $"training a TopK SAE: d_sae {o.DSae}, k {o.K}, {Cli.Integer(harvest.Steps)} steps of {Cli.Integer(o.BatchSize)} tokens");
        var (trained, stopExitCode) = TrainCommand.TrainWithProgress(harvest.Steps, demo.Train, StopAction);
        if (trained.Saes.Count == 0)
        {
            Console.WriteLine(Stopped(trained));
            TrainCommand.PrintCurves(trained);
            return stopExitCode;
        }
        if (trained.Status == SaeSharp.Training.TrainingStatus.SourceExhausted)
            Cli.ErrorLine($"warning: the stories ran out after {trained.Steps} of {harvest.Steps} steps");
        Line($"wrote {demo.SaePath} (SAELens layout: cfg.json, sae_weights.safetensors, metrics.json)");
        if (trained.CurvesFile is { } curves) Line($"training curves: {curves}");
        else if (trained.CurvesError is { } error) Cli.ErrorLine($"warning: training curves not drawn: {error}");

        Stage(3, $"evaluating on {Cli.Integer(o.EvalTokens)} held-out tokens (the SAE spliced into the model)");
        var m = demo.Evaluate();
        Cli.WriteColumns(null, Numbers("FVU", "L0", "dead %", "% CE loss recovered", "KL (nats)", "CE clean", "CE with SAE", "CE zero-ablated"),
        [[
            m.Reconstruction.Fvu.ToString("F3"), m.L0.ToString("F1"), Cli.Percent("dead %", m.Reconstruction.DeadFraction, 1),
            Cli.Percent("% CE loss recovered", m.CeLossScore, 1), m.KlDivWithSae.ToString("F3"),
            m.CeLossWithoutSae.ToString("F3"), m.CeLossWithSae.ToString("F3"), m.CeLossWithAblation.ToString("F3"),
        ]]);

        Stage(4, $"scoring features and neurons against the token labels ({Cli.Integer(o.ScoreTokens)} held-out tokens)");
        var scores = demo.ScoreLabels();
        ScoreLabelsCommand.Print(scores, examples: 6);
        Line($"every unit's scores: {demo.LabelScoresPath}");

        Stage(5, "writing the dashboard");
        var site = demo.WriteDashboard();
        Line($"{site.TopFeatures.Count} best-scoring features ({string.Join(", ", site.TopFeatures)}) and {site.RandomFeatures.Count} random ones ({string.Join(", ", site.RandomFeatures)})");
        AnsiConsole.MarkupLine($"  dashboard: [link]{Markup.Escape(Path.GetFullPath(site.IndexPath))}[/]");

        Stage(6, "prompt view and steering");
        PrintPromptView(demo.InspectPrompt(), scores);
        PrintSteering(demo.Steer());
        Line($"figures: {demo.WriteSummary()}");
        AnsiConsole.MarkupLine($"[bold]done[/] in {clock.Elapsed.TotalSeconds:F0} s");
        return 0;
    }

    /// <summary>What the demo does on Ctrl-C or SIGTERM (<see cref="StopSignals.Notice"/>): the trainer finishes its step and
    /// checkpoints, but the demo has no --resume, so the notice does not promise one.</summary>
    internal const string StopAction = "stopping after this step (the demo does not resume: run it again)";

    /// <summary>"stopped at step N; no SAE written; checkpoint DIR (the demo does not resume it: ...)", the line after a stop.</summary>
    internal static string Stopped(TrainingRunResult r) =>
        $"stopped at step {r.Steps}; no SAE written" +
        (r.LastCheckpoint is { } c ? $"; checkpoint {c} (the demo does not resume it: run the demo again)" : " (run the demo again)");

    private static void Stage(int n, string title) => AnsiConsole.MarkupLine($"\n[bold blue][[{n}/6]][/] [bold]{Markup.Escape(title)}[/]");

    private static void Line(string text) => Cli.WriteIndented(Markup.Escape(text), 2);

    /// <summary>"<paramref name="head"/> w1 w2 …" with as many words as fit in <paramref name="room"/> columns (at least one).</summary>
    private static string FitWords(string head, IEnumerable<string> words, int room)
    {
        var line = head;
        foreach (var (w, i) in words.Select((w, i) => (w, i)))
        {
            if (i > 0 && line.Length + 1 + w.Length > room) break;
            line += " " + w;
        }
        return line;
    }

    private static string LabelOf(UnitLabelScore? u) =>
        u?.Best is { } b ? $"≈ {b.Label}{(b.Negated ? " (negative)" : "")} F1 {b.F1:F2}" : "no label";

    private static void PrintPromptView(DemoPromptView p, LabelScoringReport scores)
    {
        var view = p.View;
        Cli.WriteIndented($"[bold]prompt[/] {Markup.Escape(view.Prompt)} [grey]({Markup.Escape(p.Hook)}, {view.Tokens.Length} tokens)[/]", 2);
        Cli.WriteIndented("[bold]top features[/] [grey](best label on the held-out tokens; top logit tokens)[/]", 2);
        // The label column is as wide as the longest label shown; the logit tokens that fit on the line follow it.
        int labelWidth = view.Features.Select(u => LabelOf(scores.Features[u.Index]).Length).DefaultIfEmpty(0).Max();
        int logitRoom = AnsiConsole.Profile.Width - 4 - "feature ".Length - 6 - labelWidth - 1;
        foreach (var u in view.Features)
        {
            p.Notes.TryGetValue(u.Index, out var note);
            string logits = note is null ? "" : FitWords("logits", note.TopLogits.Select(t => t.Trim()), logitRoom);
            Cli.WriteIndented($"feature {u.Index,-5} {Markup.Escape(LabelOf(scores.Features[u.Index]).PadRight(labelWidth))} [grey]{Markup.Escape(logits)}[/]", 4);
            Cli.WriteIndented(AnalysisCommands.Shaded(view.TokenStrings.Skip(view.SkippedPrefix).ToList(), u.Acts.Skip(view.SkippedPrefix).ToList()), 6);
        }
        Cli.WriteIndented($"[bold]top neurons[/] [grey](dimensions of {Markup.Escape(p.Hook)})[/]", 2);
        foreach (var u in view.Neurons)
        {
            Cli.WriteIndented($"neuron {u.Index,-6} {Markup.Escape(LabelOf(scores.Neurons[u.Index]))}", 4);
            Cli.WriteIndented(AnalysisCommands.Shaded(view.TokenStrings.Skip(view.SkippedPrefix).ToList(), u.Acts.Skip(view.SkippedPrefix).ToList()), 6);
        }
    }

    /// <summary>Right-aligned columns (numbers, so their digits line up, as in every other table).</summary>
    private static Column[] Numbers(params string[] names) => [.. names.Select(n => new Column(n, Right: true))];

    private static void PrintSteering(DemoSteering s)
    {
        string fires = s.FiresOn is { } b ? $"it fires on {b.Label} (F1 {b.F1:F2})" : "no label of its own";
        Cli.WriteIndented("[bold]steering[/] " + Markup.Escape($"with feature {s.Feature}, whose decoder direction raises the logits of {s.Label} words most " +
            $"({string.Join(", ", s.TopWords)}; {fires}): {s.Scale:G3}·W_dec[{s.Feature}] ({s.ScaleInMaxActivations:G3}× its largest activation) " +
            "added from the prompt's last token on, greedy decoding"), 2);
        Cli.WriteColumns(null, ["run", "continuation", new Column($"{s.Label} words", Right: true)],
        [
            ["prompt", s.Prompt, ""],
            ["unsteered", s.Before, s.LabelWordsBefore.ToString()],
            ["steered", s.After, s.LabelWordsAfter.ToString()],
        ]);
    }

    internal static int Run(string outDir, long steps, ulong seed)
    {
        const int dIn = 64, features = 256, dSae = 512, k = 4, batch = 1024;
        var data = Path.Combine(outDir, "data");
        Cli.WriteIndented(Markup.Escape($"synthesising {features} features in {dIn} dimensions (power-law frequencies) into {data} ..."), 0);
        var files = SyntheticDataset.Write(data, new SyntheticOptions
        {
            DIn = dIn, NFeatures = features, TrainRows = 200_000, EvalRows = 10_000, Seed = seed,
        });
        var trainer = new TrainerConfig
        {
            TotalTrainingSteps = steps, TrainBatchSizeTokens = batch, Seed = (long)seed,
            NormalizeActivations = "expected_average_only_in", CheckpointEverySteps = Math.Max(1, steps / 4),
            LogEverySteps = (int)Math.Max(1, steps / 50), LrWarmUpSteps = steps / 20,
        };
        // ReLU's default lr (5e-5, Anthropic's for long runs) is too slow for a short demo: dictionary_learning's 1e-3.
        var reluConfig = trainer.Clone();
        reluConfig.Lr = 1e-3;
        reluConfig.L1WarmUpSteps = steps / 10;
        var slots = new List<SaeSlot>
        {
            new("topk", SaeRecipes.Create("topk", dIn, dSae, k, metadata: Meta(files), totalSteps: steps)),
            new("batchtopk", SaeRecipes.Create("batchtopk", dIn, dSae, k, metadata: Meta(files), totalSteps: steps)),
            new("relu", SaeRecipes.Create("relu-april", dIn, dSae, sparsityCoefficient: 2.0, metadata: Meta(files), totalSteps: steps), reluConfig),
        };
        using var train = new ActivationFileSource(files.TrainPath, new ActivationFileSourceOptions { Seed = seed, Loop = true });
        using var eval = ActivationSplit.EvalFiles([files.EvalPath!]);
        using var truth = SyntheticDataset.ReadFeatures(files.FeaturesPath);
        Cli.WriteIndented(Markup.Escape($"training {string.Join(", ", slots.Select(s => s.Name))} (d_sae {dSae}) for {steps} steps of {batch} rows ..."), 0);
        var (result, stopExitCode) = TrainCommand.TrainWithProgress(new TrainingRunOptions
        {
            OutDir = Path.Combine(outDir, "saes"), Trainer = trainer, Saes = slots, TrainSource = train, EvalSource = eval,
            EvalRows = 10_000, GroundTruthFeatures = truth, Overwrite = true,
        }, StopAction);
        foreach (var slot in slots) slot.Sae.Dispose();
        if (result.Saes.Count == 0)
        {
            Console.WriteLine(Stopped(result));
            TrainCommand.PrintCurves(result);
            return stopExitCode;
        }
        Cli.WriteColumns($"SAEs on synthetic data ({result.Steps} steps, {Cli.Integer(result.Tokens)} rows)",
            ["architecture", .. Numbers("MSE", "FVU", "L0", "dead %", "MCC", "% recovered", "F1")],
            result.Saes.Select(sae => sae.Metrics!).Select((m, i) => new[]
            {
                result.Saes[i].Name, m.Mse.ToString("G3"), m.Fvu.ToString("F3"), m.L0.ToString("F1"), Cli.Percent("dead %", m.DeadFraction, 1),
                (m.Mcc ?? double.NaN).ToString("F3"), Cli.Percent("% recovered", m.RecoveredFraction ?? double.NaN, 0),
                (m.ClassificationF1Score ?? double.NaN).ToString("F3"),
            }));
        // Eight columns fit an 80-column terminal; MMCS (the mean best |cos| of each true feature) stays in metrics.json.
        Cli.WriteIndented(Markup.Escape("MCC: mean |cos| of the one-to-one matching of latents to true features (SAELens); % recovered: true features " +
            "some latent matches at |cos| > 0.9; F1: each latent as a detector of its closest true feature"), 0);
        Cli.WriteIndented(Markup.Escape($"true L0 ≈ {SyntheticExpectedL0(features):F1}; artefacts (SAELens layout, metrics.json, train_log.jsonl): {Path.Combine(outDir, "saes")}"), 0);
        TrainCommand.PrintCurves(result);
        return 0;
    }

    private static Saes.SaeMetadata Meta(SyntheticDatasetFiles files) => new() { DatasetPath = files.TrainPath, ModelName = "synthetic" };

    /// <summary>Expected number of firing features per row under the default power law.</summary>
    private static double SyntheticExpectedL0(int features)
    {
        var o = new SyntheticOptions();
        double sum = 0;
        for (int i = 0; i < features; i++) sum += o.MaxFrequency * Math.Pow(i + 1, -o.FrequencyExponent);
        return sum;
    }
}
