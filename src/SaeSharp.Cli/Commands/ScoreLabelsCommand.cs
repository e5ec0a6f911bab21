using System.CommandLine;
using SaeSharp.Analysis;
using SaeSharp.Pipelines;
using Spectre.Console;

namespace SaeSharp.Cli.Commands;

/// <summary><c>sae score-labels</c>: label-based interpretability scores of an SAE's features against the model's neurons.</summary>
internal static class ScoreLabelsCommand
{
    public static Command Create()
    {
        var sae = SaeCommands.SaeOption();
        var model = ModelCommands.ModelOption();
        var dataset = new Option<string>("--dataset") { Description = "Labelled .jsonl (text + token-aligned labels), e.g. from `sae corpus`", Required = true };
        var tokens = new Option<long>("--tokens") { Description = "Labelled tokens to score", DefaultValueFactory = _ => 20_000 }.Positive();
        var neuronHook = new Option<string?>("--neuron-hook") { Description = "Hook whose dimensions are compared (default: the SAE's hook)" };
        var ctx = new Option<int?>("--context-size") { Description = "Tokens per window (default: the SAE's context_size)" }.Positive();
        var json = new Option<string?>("--json") { Description = "Write every unit's scores to this JSON file" };
        var command = new Command("score-labels", "Score SAE features and model neurons against token labels (precision, recall, F1 per best label)")
            { sae, model, dataset, tokens, neuronHook, ctx, json };
        Cli.SetAction(command, parse =>
        {
            if (parse.GetValue(json) is { } jsonPath)
                OutputGuard.RefuseBadOutputFile("--json", jsonPath, new CommandInput("--sae", parse.GetValue(sae)!, InputKind.Sae),
                    new CommandInput("--model", parse.GetValue(model)!, InputKind.Folder), new CommandInput("--dataset", parse.GetValue(dataset)!, InputKind.Whole));
            var report = CliProgress.Run("score-labels", progress => AnalysisPipeline.ScoreLabels(parse.GetValue(sae)!, ModelSource.Resolve(parse.GetValue(model)!),
                parse.GetValue(dataset)!,
                new LabelScoringOptions { Tokens = parse.GetValue(tokens), NeuronHook = parse.GetValue(neuronHook), ContextSize = parse.GetValue(ctx), Progress = progress }));
            Print(report);
            if (parse.GetValue(json) is { } path)
            {
                report.WriteJson(path);
                Console.WriteLine($"wrote {path}");
            }
            return 0;
        });
        return command;
    }

    /// <summary>The summary table (features vs neurons) and the best-scoring features with their labels.</summary>
    internal static void Print(LabelScoringReport r, int examples = 8)
    {
        string[] Row(string name, LabelScoreSummary s) =>
        [
            name, Cli.Integer(s.Alive), Cli.Integer(s.Units), Cli.Percent("% F1 ≥ 0.8", s.ShareF1AtLeast08, 1),
            Cli.Percent("% F1 ≥ 0.5", s.ShareF1AtLeast05, 1), s.MeanBestF1.ToString("F3"), Cli.Integer(s.LabelsCovered), Cli.Integer(s.LabelsScored),
        ];
        Cli.WriteColumns($"label scores at {r.Hook}: {Cli.Integer(r.Tokens)} labelled tokens, {r.FeatureSummary.LabelsScored} labels",
            [new Column("units", NoWrap: true), new Column("alive", Right: true), new Column("of", Right: true),
             new Column("% F1 ≥ 0.8", Right: true, Heading: "% F1\n≥ 0.8"), new Column("% F1 ≥ 0.5", Right: true, Heading: "% F1\n≥ 0.5"),
             new Column("mean F1", Right: true, Heading: "mean\nF1"), new Column("labels covered", Right: true, Heading: "labels\ncovered"),
             new Column("of labels", Right: true, Heading: "of\nlabels")],
            [Row("SAE features", r.FeatureSummary), Row(r.NeuronHook == r.Hook ? "dimensions (±)" : $"{r.NeuronHook} (±)", r.NeuronSummary)]);
        Cli.WriteIndented(Markup.Escape("(F1 = best label's F1 of each alive unit, on the held-out half of the tokens; labels covered = labels some unit reaches with F1 ≥ 0.8; ± = both signs of a dimension)"), 2);
        foreach (var line in Examples(r, examples)) Cli.WriteHanging(line, 2);
    }

    /// <summary>"feature 117 ≈ cat:colour (F1 0.97, P 0.98, R 0.96)" for the best feature of each of the best-captured labels.</summary>
    internal static IEnumerable<string> Examples(LabelScoringReport r, int count)
    {
        foreach (var f in r.BestFeaturePerLabel().Take(count))
        {
            var neuron = r.Neurons.Where(n => n.Best?.Label == f.Best!.Label).MaxBy(n => n.Best!.F1);
            yield return $"feature {f.Index} ≈ {f.Best!.Label} (F1 {f.Best.F1:F2}, P {f.Best.Precision:F2}, R {f.Best.Recall:F2})" +
                         (neuron is null ? "; no neuron's best label" : $"; best neuron for it: {neuron.Index}{(neuron.Best!.Negated ? " (negative)" : "")} F1 {neuron.Best.F1:F2}");
        }
    }
}
