using System.CommandLine;
using SaeSharp.Analysis;
using SaeSharp.Pipelines;
using Spectre.Console;

namespace SaeSharp.Cli.Commands;

/// <summary><c>sae probe</c>: SAEBench's k-sparse probing (and, with <c>--absorption</c>, feature absorption) on token labels;
/// with <c>--pooling mean</c> on texts, and with <c>--tpp</c> SAEBench's TPP.</summary>
internal static class ProbeCommand
{
    public static Command Create()
    {
        var sae = SaeCommands.SaeOption();
        var model = ModelCommands.ModelOption();
        var dataset = new Option<string>("--dataset") { Description = "Labelled .jsonl (text + token-aligned labels), e.g. from `sae corpus`; with --pooling mean also a .jsonl/.parquet classification dataset (text and class columns)", Required = true };
        var pooling = new Option<string>("--pooling") { Description = "token: every labelled token is an example; mean: every text is one, its activations averaged over its tokens (SAEBench's task)", DefaultValueFactory = _ => "token" };
        pooling.AcceptOnlyFromAmong("token", "mean");
        var tokens = new Option<long>("--tokens") { Description = "Labelled tokens to read (half train, half test)", DefaultValueFactory = _ => 40_000 }.Positive();
        var ctx = new Option<int?>("--context-size") { Description = "Tokens per window (default: the SAE's context_size); with --pooling mean, tokens read of each text (default 128, SAEBench's)" }.Positive();
        var textField = new Option<string>("--text-field") { Description = "--pooling mean on a classification dataset: the text column", DefaultValueFactory = _ => "text" };
        var labelField = new Option<string>("--label-field") { Description = "--pooling mean on a classification dataset: the class column (strings or integers)", DefaultValueFactory = _ => "label" };
        var classes = new Option<string?>("--classes") { Description = "--pooling mean on a classification dataset: comma-separated classes, each probed against the others (default: every class)" };
        var texts = new Option<int>("--texts") { Description = "--pooling mean on a labelled corpus: documents to read (4 in 5 train)", DefaultValueFactory = _ => 5000 }.Positive();
        var labels = new Option<string?>("--labels") { Description = "Comma-separated labels to probe (default: every label with 50 tokens with and without it in each half)" };
        var absorption = new Option<bool>("--absorption") { Description = "Also measure feature absorption (SAEBench's absorption eval on parent labels)" };
        var absorptionLabels = new Option<string?>("--absorption-labels") { Description = $"Comma-separated parent labels for --absorption (default: {string.Join(",", AbsorptionOptions.DefaultLabels)})" };
        var tpp = new Option<bool>("--tpp") { Description = "With --pooling mean: SAEBench's TPP (targeted probe perturbation) in place of sparse probing: per class, ablate the latents that most drive its probe and measure every probe's accuracy" };
        var tppN = new Option<string?>("--tpp-n") { Description = $"--tpp: comma-separated numbers of latents to ablate per class (default: {string.Join(",", TppOptions.DefaultNValues)}, those up to d_sae)" };
        var json = new Option<string?>("--json") { Description = "Write the means (SAEBench's key names), every task and the absorption details to this JSON file" };
        var command = new Command("probe", "k-sparse probing of SAE features against token labels, with a probe on the whole activation as baseline (SAEBench's sparse probing; --absorption: feature absorption)")
            { sae, model, dataset, pooling, tokens, ctx, textField, labelField, classes, texts, labels, absorption, absorptionLabels, tpp, tppN, json };
        Cli.SetAction(command, parse =>
        {
            static IReadOnlyList<string>? List(string? s) => s is null ? null : s.Split(',', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries);
            if (parse.GetValue(absorptionLabels) is not null && !parse.GetValue(absorption))
                throw new SaeSharpException("--absorption-labels needs --absorption");
            var absorb = parse.GetValue(absorption) ? new AbsorptionOptions { Labels = List(parse.GetValue(absorptionLabels)) } : null;
            bool mean = parse.GetValue(pooling) == "mean";
            if (mean) Cli.RefuseGiven(parse, "token pooling only (--pooling mean reads whole texts; absorption is measured on tokens)", tokens, absorption, absorptionLabels);
            else Cli.RefuseGiven(parse, "need --pooling mean", textField, labelField, classes, texts, tpp, tppN);
            if (!parse.GetValue(tpp)) Cli.RefuseGiven(parse, "needs --tpp", tppN);
            var text = mean ? new TextProbingOptions
            {
                ContextSize = parse.GetValue(ctx) ?? 128, TextField = parse.GetValue(textField)!, LabelField = parse.GetValue(labelField)!,
                Classes = List(parse.GetValue(classes)), MaxTexts = parse.GetValue(texts),
            } : null;
            if (parse.GetValue(tpp))
            {
                var nValues = List(parse.GetValue(tppN))?.Select(v => int.TryParse(v, System.Globalization.NumberStyles.Integer, System.Globalization.CultureInfo.InvariantCulture, out int n) && n > 0
                    ? n : throw new SaeSharpException($"--tpp-n: '{v}' is not a positive integer")).ToArray();
                var tppReport = CliProgress.Run("tpp", progress => AnalysisPipeline.Tpp(parse.GetValue(sae)!, ModelSource.Resolve(parse.GetValue(model)!),
                    parse.GetValue(dataset)!, text! with { Progress = progress }, new SparseProbingOptions { Labels = List(parse.GetValue(labels)) },
                    new TppOptions { NValues = nValues }));
                PrintTpp(tppReport);
                if (parse.GetValue(json) is { } tppPath)
                {
                    tppReport.WriteJson(tppPath);
                    Console.WriteLine($"wrote {tppPath}");
                }
                return 0;
            }
            var report = CliProgress.Run("probe", progress => AnalysisPipeline.Probe(parse.GetValue(sae)!, ModelSource.Resolve(parse.GetValue(model)!),
                parse.GetValue(dataset)!,
                new LabelScoringOptions { Tokens = parse.GetValue(tokens), ContextSize = parse.GetValue(ctx), Progress = progress },
                new SparseProbingOptions { Labels = List(parse.GetValue(labels)) }, absorb,
                text is null ? null : text with { Progress = progress }));
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

    /// <summary>TPP: per threshold n the three SAEBench metrics (means over classes, in accuracy points ×100), then per class
    /// its probe's clean test accuracy and its total metric at each n.</summary>
    internal static void PrintTpp(TppReport r)
    {
        static string P(double v) => (100 * v).ToString("F1", System.Globalization.CultureInfo.InvariantCulture);
        var m = r.Metrics();
        Cli.WriteColumns($"TPP at {r.Hook}: {r.Classes.Count} classes, {Cli.Integer(r.Texts)} texts (mean-pooled)",
            [new Column("n", Right: true), new Column("total", Right: true), new Column("intended", Right: true), new Column("unintended", Right: true)],
            [.. r.NValues.Select(n => (IReadOnlyList<string>)[n.ToString(System.Globalization.CultureInfo.InvariantCulture),
                P(m[$"tpp_threshold_{n}_total_metric"]), P(m[$"tpp_threshold_{n}_intended_diff_only"]), P(m[$"tpp_threshold_{n}_unintended_diff_only"])])]);
        var columns = new List<Column> { new("class", NoWrap: true), new("clean", Right: true, Heading: "clean\nacc") };
        columns.AddRange(r.NValues.Select(n => new Column($"n={n}", Right: true)));
        Cli.WriteColumns("TPP total metric per class", columns,
            [.. r.Classes.Select((c, i) =>
            {
                var cm = r.ClassMetrics(i);
                return (IReadOnlyList<string>)[c.Class, P(c.CleanAccuracy), .. r.NValues.Select(n => P(cm[$"tpp_threshold_{n}_total_metric"]))];
            })]);
        Cli.WriteIndented(Markup.Escape("(×100; n = latents zero-ablated per class, error term kept; intended = drop of the class's own probe's test accuracy, " +
                                        "unintended = mean drop of the other probes', total = intended − unintended: SAEBench's tpp_threshold_{n}_*; clean acc = the probe's test accuracy in %)"), 2);
    }

    /// <summary>Test accuracy per task (model probe, then SAE top-k probes) in percent with one decimal (four characters at
    /// most, so nine columns and a label fit 80 columns), the mean row, then the absorption table.</summary>
    internal static void Print(SparseProbingReport r)
    {
        static string A(double v) => v.ToString("F3", System.Globalization.CultureInfo.InvariantCulture);
        static string Pct(double v) => Math.Round(100 * v, 1) >= 100 ? "100" : (100 * v).ToString("F1", System.Globalization.CultureInfo.InvariantCulture);
        static string All(double? v) => v is { } x ? Pct(x) : "-";
        var columns = new List<Column> { new("label", NoWrap: true), new("llm", Right: true, Heading: "llm\nall"), new("sae all", Right: true, Heading: "sae\nall") };
        columns.AddRange(r.KValues.Select(k => new Column($"sae top {k}", Right: true, Heading: $"sae\nk={k}")));
        IReadOnlyList<string> Row(string name, double llm, double? saeAll, IEnumerable<double> sae) => [name, Pct(llm), All(saeAll), .. sae.Select(Pct)];
        var rows = r.Tasks.Select(t => Row(t.Label, t.LlmTestAccuracy, t.SaeTestAccuracy, r.KValues.Select(k => t.SaeTopK[k]))).ToList();
        if (r.Tasks.Count > 0)
        {
            var m = r.Means();
            rows.Add(Row("mean", m["llm_test_accuracy"], m.TryGetValue("sae_test_accuracy", out var sa) ? sa : null, r.KValues.Select(k => m[$"sae_top_{k}_test_accuracy"])));
        }
        Cli.WriteColumns($"sparse probing at {r.Hook}: {r.Tasks.Count} labels, {Cli.Integer(r.Tokens)} " +
                         (r.Pooling == "mean" ? "texts (mean-pooled)" : "tokens"), columns, rows);
        Cli.WriteIndented(Markup.Escape("(test accuracy in % on balanced sets; llm all = probe on every dimension of the activation; sae all = probe on every SAE feature (-: more than 2048 fire in the training set); sae k = probe on the top k SAE features, those with the largest difference of class means)"), 2);
        if (r.Absorption is not { } a) return;
        Cli.WriteColumns("feature absorption",
            [new Column("label", NoWrap: true), new Column("probe F1", Right: true, Heading: "probe\nF1"), new Column("main latents", Heading: "main\nlatents"),
             new Column("probe TP", Right: true, Heading: "probe\nTP"), new Column("absorption fraction", Right: true, Heading: "absorp.\nfraction"),
             new Column("full absorption", Right: true, Heading: "full\nabsorp."), new Column("top absorbers", Heading: "top\nabsorbers")],
            [.. a.Labels.Select(l => (IReadOnlyList<string>)[l.Label + (l.Included ? "" : " *"), A(l.ProbeF1), string.Join(" ", l.MainLatents),
                Cli.Integer(l.ProbeTruePositives), A(l.MeanAbsorptionFraction), A(l.FullAbsorptionRate),
                string.Join(" ", l.TopAbsorbers.Take(3).Select(t => $"{t.Latent}×{t.Count}"))])]);
        Cli.WriteIndented(Markup.Escape("(absorp. fraction and full absorp.: SAEBench's scores, averaged over the probe's true positives (TP) among the held-out tokens with the label; " +
                                        "main latents: those of the k-sparse probe up to the last F1 jump; top absorbers: latent×tokens fully absorbed; docs/labels.md)"), 2);
        string Mean(double v) => double.IsNaN(v) ? "n/a" : A(v);
        Cli.WriteIndented(Markup.Escape($"mean over labels with probe F1 > 0.6: absorption fraction {Mean(a.MeanAbsorptionFractionScore)}, " +
                                        $"full absorption {Mean(a.MeanFullAbsorptionScore)}, main latents {Mean(a.MeanNumSplitFeatures)}" +
                                        (a.Labels.Any(l => !l.Included) ? " (* left out)" : "")), 2);
    }
}
