using System.CommandLine;
using System.Text.Json.Nodes;
using SaeSharp.Analysis;
using SaeSharp.Evaluation;
using SaeSharp.Pipelines;
using Spectre.Console;

namespace SaeSharp.Cli.Commands;

/// <summary><c>sae probe</c>: SAEBench's k-sparse probing (and, with <c>--absorption</c>, feature absorption) on token labels;
/// with <c>--pooling mean</c> on texts, and with <c>--tpp</c> SAEBench's TPP.</summary>
internal static class ProbeCommand
{
    public static Command Create()
    {
        var sae = new Option<string[]>("--sae")
        {
            Description = SaeCommands.SaeOption().Description + "; repeat it to probe several SAEs, at one hook or several, in one pass of the model (--json: a _sae<i> suffix per SAE)",
            Required = true, AllowMultipleArgumentsPerToken = false,
        };
        var model = ModelCommands.ModelOption();
        var dataset = new Option<string[]>("--dataset") { Description = "Labelled .jsonl (text + token-aligned labels), e.g. from `sae corpus`; with --pooling mean also a .jsonl/.parquet classification dataset (text and class columns), a folder or hf:ORG/NAME; --pooling mean (sparse probing, --tpp, --scr): repeat it for several datasets, each read by the same options (SAEBench's means over them in --json)", AllowMultipleArgumentsPerToken = false };
        var pooling = new Option<string>("--pooling") { Description = "token: every labelled token is an example; mean: every text is one, its activations averaged over its tokens (SAEBench's task)", DefaultValueFactory = _ => "token" };
        pooling.AcceptOnlyFromAmong("token", "mean");
        var tokens = new Option<long>("--tokens") { Description = "Labelled tokens to read (half train, half test)", DefaultValueFactory = _ => 40_000 }.Positive();
        var ctx = new Option<int?>("--context-size") { Description = "Tokens per window (default: the SAE's context_size); with --pooling mean, tokens read of each text (default 128, SAEBench's)" }.Positive();
        var textField = new Option<string>("--text-field") { Description = "--pooling mean on a classification dataset: the text column", DefaultValueFactory = _ => "text" };
        var labelField = new Option<string>("--label-field") { Description = "--pooling mean on a classification dataset: the class column (strings or integers)", DefaultValueFactory = _ => "label" };
        var classes = new Option<string[]>("--classes") { Description = "--pooling mean on a classification dataset: comma-separated classes, each probed against the others (default: every class); --scr: attribute 1's positive,negative values, repeat it for several pairs (each a run, on every --dataset); DATASET=values: for that --dataset only", AllowMultipleArgumentsPerToken = false };
        var balanceField = new Option<string?>("--balance-field") { Description = "--pooling mean on a classification dataset (sparse probing, --tpp): balance each class over this second column as SAEBench's get_balanced_dataset does (its column2_name: bias_in_bios gender, amazon reviews rating): a quarter of each set size per class and value, drawn as pandas' sample(random_state=42); classes short of texts are left out" };
        var saebenchSource = new Option<string[]>("--saebench-source") { Description = "--pooling mean sparse probing: draw --dataset as SAEBench draws one of its datasets that has no plain class column: ag_news (fancyzhx/ag_news), amazon_sentiment (canrager/amazon_reviews_mcauley_1and5, rating 1 vs 5), europarl (Helsinki-NLP/europarl, a folder per language pair) or github_code (codeparrot/github-code); --classes default to SAEBench's chosen ones; DATASET=NAME for one of several --dataset (repeat it)" };
        var texts = new Option<int>("--texts") { Description = "--pooling mean on a labelled corpus: documents to read (4 in 5 train)", DefaultValueFactory = _ => 5000 }.Positive();
        var labels = new Option<string?>("--labels") { Description = "Comma-separated labels to probe (default: every label with 50 tokens with and without it in each half)" };
        var absorption = new Option<bool>("--absorption") { Description = "Also measure feature absorption (SAEBench's absorption eval on parent labels)" };
        var absorptionLabels = new Option<string?>("--absorption-labels") { Description = $"Comma-separated parent labels for --absorption (default: {string.Join(",", AbsorptionOptions.DefaultLabels)})" };
        var tpp = new Option<bool>("--tpp") { Description = "With --pooling mean: SAEBench's TPP (targeted probe perturbation) in place of sparse probing: per class, ablate the latents that most drive its probe and measure every probe's accuracy" };
        var tppN = new Option<string?>("--tpp-n") { Description = $"--tpp: comma-separated numbers of latents to ablate per class (default: {string.Join(",", TppOptions.DefaultNValues)}, those up to d_sae)" };
        var scr = new Option<bool>("--scr") { Description = "With --pooling mean: SAEBench's SCR (spurious correlation removal) in place of sparse probing: a probe trained where --classes and --spurious-classes agree; ablating the latents of the spurious attribute's probe should restore its accuracy on balanced data" };
        var spuriousField = new Option<string?>("--spurious-field") { Description = $"--scr on a classification dataset: the column of the spurious attribute (SAEBench's column2_name; default {new ScrOptions().Column2Name}); --label-field is attribute 1's" };
        var spuriousClasses = new Option<string?>("--spurious-classes") { Description = "--scr: the spurious attribute's positive,negative values (SAEBench's column2_vals, e.g. male,female); on a labelled corpus one label (documents with and without it) or two" };
        var scrN = new Option<string?>("--scr-n") { Description = $"--scr: comma-separated numbers of latents to ablate (default: {string.Join(",", TppOptions.DefaultNValues)}, those up to d_sae)" };
        var saebench = new Option<bool>("--saebench-defaults") { Description = "--pooling mean sparse probing: SAEBench's eight datasets (hf:LabHC/bias_in_bios class sets 1-3, hf:canrager/amazon_reviews_mcauley_1and5 categories and sentiment, hf:codeparrot/github-code, hf:fancyzhx/ag_news, hf:Helsinki-NLP/europarl), each drawn by SAEBench's rules with its chosen classes, k = 1, 2, 5; --scr, --tpp: SAEBench's datasets (hf:LabHC/bias_in_bios and hf:canrager/amazon_reviews_mcauley_1and5, their train/test splits) with its value pairs (--scr, four each) or classes (--tpp, five each, balanced by gender / rating as --balance-field does) in place of --dataset, --classes, --balance-field, --spurious-field and --spurious-classes; implies --strict-sizes" };
        var strict = new Option<bool>("--strict-sizes") { Description = "--scr, --tpp: refuse data smaller than SAEBench's sets (SCR: 1000 training and 250 test texts per quadrant; TPP: 2000 and 500 per class) with an error naming the counts, where the sets otherwise shrink to the data with a warning" };
        var artifactsDir = new Option<string?>("--artifacts") { Description = "Folder of the model's activations (SAEBench's artifacts_folder): each pass's are written there, one file per hook, and a later call reading the same tokens of the same model at the same hook reads them instead of running the model" };
        var json = new Option<string?>("--json") { Description = "Write the means (SAEBench's key names), every task and the absorption details to this JSON file" };
        var command = new Command("probe", "k-sparse probing of SAE features against token labels, with a probe on the whole activation as baseline (SAEBench's sparse probing; --absorption: feature absorption)")
            { sae, model, dataset, pooling, tokens, ctx, textField, labelField, classes, balanceField, saebenchSource, texts, labels, absorption, absorptionLabels, tpp, tppN, scr, spuriousField, spuriousClasses, scrN, saebench, strict, artifactsDir, json };
        Cli.SetAction(command, parse =>
        {
            var saes = parse.GetValue(sae)!;
            var artifacts = parse.GetValue(artifactsDir) is { } artifactsPath ? new ProbeArtifacts(artifactsPath) : null;
            if (parse.GetValue(json) is { } jsonOut)
                for (int i = 0; i < saes.Length; i++)
                    OutputGuard.RefuseBadOutputFile("--json", SaeCommands.SaeBenchPath(i, saes.Length, jsonOut), [.. saes.Select(s => new CommandInput("--sae", s, InputKind.Sae)),
                        new CommandInput("--model", parse.GetValue(model)!, InputKind.Folder),
                        .. (parse.GetValue(dataset) ?? []).Select(d => new CommandInput("--dataset", d, InputKind.Whole))]);
            static string? One(string[]? values, string option) => values is null or [] ? null : values is [var v] ? v
                : throw new SaeSharpException($"{option} is given {values.Length} times; only --pooling mean (sparse probing over several --dataset, --tpp, --scr) takes several ({string.Join(" ", values.Select(x => option + " " + x))})");
            static IReadOnlyList<string>? List(string? s) => s is null ? null : s.Split(',', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries);
            if (parse.GetValue(absorptionLabels) is not null && !parse.GetValue(absorption))
                throw new SaeSharpException("--absorption-labels needs --absorption");
            var absorb = parse.GetValue(absorption) ? new AbsorptionOptions { Labels = List(parse.GetValue(absorptionLabels)) } : null;
            bool mean = parse.GetValue(pooling) == "mean";
            if (mean) Cli.RefuseGiven(parse, "token pooling only (--pooling mean reads whole texts; absorption is measured on tokens)", tokens, absorption, absorptionLabels);
            else Cli.RefuseGiven(parse, "need --pooling mean", textField, labelField, classes, balanceField, saebenchSource, texts, tpp, tppN, scr, spuriousField, spuriousClasses, scrN, saebench);
            if (!parse.GetValue(tpp)) Cli.RefuseGiven(parse, "needs --tpp", tppN);
            if (!parse.GetValue(scr) && !parse.GetValue(tpp)) Cli.RefuseGiven(parse, "needs --scr or --tpp", strict);
            // Sparse probing over several datasets: --dataset repeated or SAEBench's eight.
            bool severalSparse = mean && !parse.GetValue(scr) && !parse.GetValue(tpp) && (parse.GetValue(saebench) || parse.GetValue(dataset) is { Length: > 1 });
            var sources = parse.GetValue(saebenchSource) ?? [];
            if (sources.Length > 0)
            {
                Cli.RefuseGiven(parse, "not with --saebench-source (sparse probing only)", tpp, scr);
                Cli.RefuseGiven(parse, "not with --saebench-source (it reads the source's own columns)", textField, labelField, balanceField);
            }
            if (!parse.GetValue(scr)) Cli.RefuseGiven(parse, "need --scr", spuriousField, spuriousClasses, scrN);
            else Cli.RefuseGiven(parse, "not with --scr (SCR trains its own three probes on --classes and --spurious-classes)", tpp, labels);
            if (parse.GetValue(scr)) Cli.RefuseGiven(parse, "not with --scr (its quadrants balance --label-field against --spurious-field)", balanceField);
            foreach (var field in new Option<string?>[] { textField!, labelField!, spuriousField, balanceField })
                if (parse.GetValue(field) is { } name && string.IsNullOrWhiteSpace(name))
                    throw new SaeSharpException($"{field.Name}: expected a column name, got an empty value");
            var text = mean ? new TextProbingOptions
            {
                ContextSize = parse.GetValue(ctx) ?? 128, TextField = parse.GetValue(textField)!, LabelField = parse.GetValue(labelField)!,
                Classes = parse.GetValue(scr) || parse.GetValue(tpp) || severalSparse ? null : List(One(parse.GetValue(classes), "--classes")), MaxTexts = parse.GetValue(texts),
                BalanceField = parse.GetValue(balanceField),
                SaeBenchSource = sources.Length > 0 && !severalSparse && parse.GetValue(dataset) is { Length: 1 } one
                    ? SparseProbingDataset.ForPaths(one, [], new TextProbingOptions(), sources)[0].SaeBenchSource : null,
            } : null;
            static int[]? NValues(string? s, string option) => List(s)?.Select(v => int.TryParse(v, System.Globalization.NumberStyles.Integer, System.Globalization.CultureInfo.InvariantCulture, out int n) && n > 0
                ? n : throw new SaeSharpException($"{option}: '{v}' is not a positive integer")).ToArray();
            if (parse.GetValue(scr))
            {
                var nScr = NValues(parse.GetValue(scrN), "--scr-n");
                IReadOnlyList<ScrDataset> suite;
                if (parse.GetValue(saebench))
                {
                    Cli.RefuseGiven(parse, "not with --saebench-defaults (it names SAEBench's datasets, columns and value pairs)", dataset, classes, spuriousField, spuriousClasses, labelField, textField);
                    suite = [.. ScrDataset.SaeBenchDefaults(new ScrOptions { NValues = nScr, StrictSizes = true })];
                }
                else
                {
                    var paths = parse.GetValue(dataset) is { Length: > 0 } ds ? ds : throw new SaeSharpException("--dataset is required (or --saebench-defaults with --scr)");
                    var pairs = (parse.GetValue(classes) ?? []).Select(c => List(c)!).ToList();
                    if (pairs.Count == 0) throw new SaeSharpException("--scr needs --classes: attribute 1's positive,negative values (SAEBench's column1_vals, e.g. professor,nurse; on a labelled corpus one or two labels); repeat it for several pairs");
                    var c2 = List(parse.GetValue(spuriousClasses)) ?? throw new SaeSharpException("--scr needs --spurious-classes: the spurious attribute's positive,negative values (SAEBench's column2_vals, e.g. male,female; on a labelled corpus one or two labels)");
                    var options = new ScrOptions { Column1Name = parse.GetValue(labelField)!, Column2Vals = c2, NValues = nScr, StrictSizes = parse.GetValue(strict) };
                    if (parse.GetValue(spuriousField) is { } sf) options = options with { Column2Name = sf };
                    suite = ScrDataset.ForPaths(paths, parse.GetValue(classes) ?? [], parse.GetValue(textField)!, options);
                }
                IReadOnlyList<SaeBenchRun> runs = [];
                var scrReports = CliProgress.Run("scr", progress => AnalysisPipeline.ScrSuite(saes, ModelSource.Resolve(parse.GetValue(model)!),
                    suite, text! with { Classes = null, Progress = progress }, loaded: r => runs = r, artifacts: artifacts));
                PrintNotes(artifacts);
                for (int i = 0; i < saes.Length; i++)
                {
                    var scrReport = scrReports[i];
                    SaeHeading(saes, i);
                    if (scrReport.Runs.Count == 1) PrintScr(scrReport.Runs[0].Report, scrReport.Runs[0].Split);
                    else PrintScrSuite(scrReport);
                    if (parse.GetValue(json) is { } scrJson)
                    {
                        var o = suite[0].Options;
                        string scrPath = SaeCommands.SaeBenchPath(i, saes.Length, scrJson);
                        scrReport.WriteJson(scrPath, runs[i] with { EvalConfig = TextConfig(text!, new JsonObject
                        {
                            ["random_seed"] = o.Seed, ["train_set_size"] = o.TrainSetSize, ["test_set_size"] = o.TestSetSize, ["probe_l1_penalty"] = o.ProbeL1Penalty,
                        }) });
                        Console.WriteLine($"wrote {scrPath}");
                    }
                }
                return 0;
            }
            if (parse.GetValue(tpp))
            {
                var nValues = NValues(parse.GetValue(tppN), "--tpp-n");
                IReadOnlyList<TppDataset> suite;
                if (parse.GetValue(saebench))
                {
                    Cli.RefuseGiven(parse, "not with --saebench-defaults (it names SAEBench's datasets, columns and classes)", dataset, classes, labels, labelField, textField, balanceField);
                    suite = TppDataset.SaeBenchDefaults();
                }
                else
                {
                    var paths = parse.GetValue(dataset) is { Length: > 0 } ds ? ds : throw new SaeSharpException("--dataset is required (or --saebench-defaults with --tpp)");
                    suite = TppDataset.ForPaths(paths, parse.GetValue(classes) ?? [], parse.GetValue(textField)!, parse.GetValue(labelField)!);
                }
                var tppOptions = new TppOptions { NValues = nValues, StrictSizes = parse.GetValue(saebench) || parse.GetValue(strict) };
                IReadOnlyList<SaeBenchRun> runs = [];
                var probing = new SparseProbingOptions { Labels = List(parse.GetValue(labels)) };
                var tppReports = CliProgress.Run("tpp", progress => AnalysisPipeline.TppSuite(saes, ModelSource.Resolve(parse.GetValue(model)!),
                    suite, text! with { Progress = progress }, probing, tppOptions, loaded: r => runs = r, artifacts: artifacts));
                PrintNotes(artifacts);
                for (int i = 0; i < saes.Length; i++)
                {
                    var tppReport = tppReports[i];
                    SaeHeading(saes, i);
                    if (tppReport.Runs.Count == 1) PrintTpp(tppReport.Runs[0].Report);
                    else PrintTppSuite(tppReport);
                    if (parse.GetValue(json) is { } tppJson)
                    {
                        string tppPath = SaeCommands.SaeBenchPath(i, saes.Length, tppJson);
                        tppReport.WriteJson(tppPath, runs[i] with { EvalConfig = TextConfig(text!, new JsonObject
                        {
                            ["random_seed"] = probing.Seed, ["train_set_size"] = probing.TrainSetSize, ["test_set_size"] = probing.TestSetSize,
                            ["probe_l1_penalty"] = tppOptions.ProbeL1Penalty,
                        }) });
                        Console.WriteLine($"wrote {tppPath}");
                    }
                }
                return 0;
            }
            var sparse = new SparseProbingOptions { Labels = List(parse.GetValue(labels)) };
            if (severalSparse)
            {
                IReadOnlyList<SparseProbingDataset> datasets;
                if (parse.GetValue(saebench))
                {
                    Cli.RefuseGiven(parse, "not with --saebench-defaults (it names SAEBench's datasets, columns and classes)", dataset, classes, labels, labelField, textField, balanceField, saebenchSource, texts);
                    datasets = SparseProbingDataset.SaeBenchDefaults();
                    sparse = sparse with { KValues = SparseProbingDataset.SaeBenchKValues };
                }
                else datasets = SparseProbingDataset.ForPaths(parse.GetValue(dataset)!, parse.GetValue(classes) ?? [], text!, sources);
                IReadOnlyList<SaeBenchRun> suiteRuns = [];
                var suiteReports = CliProgress.Run("probe", progress => AnalysisPipeline.ProbeSuite(saes, ModelSource.Resolve(parse.GetValue(model)!),
                    datasets, text! with { Progress = progress }, sparse, loaded: r => suiteRuns = r, artifacts: artifacts));
                PrintNotes(artifacts);
                PerSae(saes, parse.GetValue(json), i => PrintSuite(suiteReports[i]),
                    (i, path) => suiteReports[i].WriteJson(path, suiteRuns[i] with { EvalConfig = ProbeConfig(sparse, text!.ContextSize) }));
                if (saes.Length > 1 && suiteReports.All(r => r.Runs.All(x => x.Report.Tasks.Count > 0)))
                    PrintSweep([.. suiteReports.Select(r => (r.Hook, r.Metrics()))], sparse.KValues, $"{datasets.Count} datasets (each its classes' mean)");
                return 0;
            }
            var datasetPath = parse.GetValue(dataset) is { Length: > 0 } given ? One(given, "--dataset")! : throw new SaeSharpException("--dataset is required");
            IReadOnlyList<SaeBenchRun> probeRuns = [];
            var reports = CliProgress.Run("probe", progress => AnalysisPipeline.Probe(saes, ModelSource.Resolve(parse.GetValue(model)!),
                datasetPath,
                new LabelScoringOptions { Tokens = parse.GetValue(tokens), ContextSize = parse.GetValue(ctx), Progress = progress },
                sparse, absorb,
                text is null ? null : text with { Progress = progress }, loaded: r => probeRuns = r, artifacts: artifacts));
            PrintNotes(artifacts);
            PerSae(saes, parse.GetValue(json), i => Print(reports[i]),
                (i, path) => reports[i].WriteJson(path, datasetPath, probeRuns[i] with { EvalConfig = ProbeConfig(sparse, text?.ContextSize ?? parse.GetValue(ctx)) }));
            if (saes.Length > 1) PrintSweep(saes, reports);
            return 0;
        });
        return command;
    }

    /// <summary>--artifacts: one line per model pass, the file its activations came from (no model pass) or went to.</summary>
    private static void PrintNotes(ProbeArtifacts? artifacts)
    {
        foreach (var line in artifacts?.Notes ?? []) Console.WriteLine(line);
    }

    /// <summary>Per SAE: its heading (<see cref="SaeHeading"/>), its tables (<paramref name="print"/>) and, with --json
    /// <paramref name="json"/>, its file (<paramref name="write"/> with the SAE's index and its path, <c>_sae{i}</c> suffixed).</summary>
    private static void PerSae(string[] saes, string? json, Action<int> print, Action<int, string> write)
    {
        for (int i = 0; i < saes.Length; i++)
        {
            SaeHeading(saes, i);
            print(i);
            if (json is null) continue;
            string path = SaeCommands.SaeBenchPath(i, saes.Length, json);
            write(i, path);
            Console.WriteLine($"wrote {path}");
        }
    }

    /// <summary>An accuracy in % with one decimal ("100" when it rounds to 100), as the probe tables print it.</summary>
    private static string Pct(double v) => Math.Round(100 * v, 1) >= 100 ? "100" : (100 * v).ToString("F1", System.Globalization.CultureInfo.InvariantCulture);

    /// <summary>With several --sae, the line naming SAE <paramref name="i"/> above its tables (<c>_sae{i}</c>: its --json suffix).</summary>
    private static void SaeHeading(string[] saes, int i)
    {
        if (saes.Length == 1) return;
        if (i > 0) Console.WriteLine();
        Cli.WriteIndented(Markup.Escape($"SAE {i} (_sae{i}): {saes[i]}"), 0);
    }

    /// <summary>Several SAEs' sparse probing side by side: per SAE (a row) the mean test accuracy of the all-feature probe and
    /// of each top-k probe, in %, under the model's at the SAE's hook (one pass, one probe per hook, shared by its SAEs);
    /// with SAEs at several hooks, the rows of each hook follow its model row (<c>llm (hook h)</c>, the hooks named below).</summary>
    internal static void PrintSweep(string[] saes, IReadOnlyList<SparseProbingReport> reports)
    {
        if (reports.Any(r => r.Tasks.Count == 0)) return;
        PrintSweep([.. reports.Select(r => (r.Hook, r.Means()))], reports[0].KValues, $"{reports[0].Tasks.Count} labels");
    }

    /// <summary><see cref="PrintSweep(string[], IReadOnlyList{SparseProbingReport})"/> of each SAE's hook and means (over
    /// <paramref name="over"/>: its labels, or the datasets of a run over several).</summary>
    internal static void PrintSweep(IReadOnlyList<(string Hook, IReadOnlyDictionary<string, double> Means)> reports, IReadOnlyList<int> kValues, string over)
    {
        var columns = new List<Column> { new("probes on", NoWrap: true), new("all", Right: true) };
        columns.AddRange(kValues.Select(k => new Column($"k={k}", Right: true)));
        var rows = new List<IReadOnlyList<string>>();
        var hooks = reports.Select(r => r.Hook).Distinct().ToList();
        for (int h = 0; h < hooks.Count; h++)
        {
            var at = Enumerable.Range(0, reports.Count).Where(i => reports[i].Hook == hooks[h]).ToList();
            var llm = reports[at[0]].Means;
            rows.Add([hooks.Count == 1 ? "llm (model)" : $"llm (hook {h})", Pct(llm["llm_test_accuracy"]), .. kValues.Select(k => Pct(llm[$"llm_top_{k}_test_accuracy"]))]);
            foreach (int i in at)
            {
                var m = reports[i].Means;
                rows.Add([$"SAE {i}", m.TryGetValue("sae_test_accuracy", out var all) ? Pct(all) : "-", .. kValues.Select(k => Pct(m[$"sae_top_{k}_test_accuracy"]))]);
            }
        }
        Console.WriteLine();
        // The rows are per site: SAEs of two heads of one hook are two sites (two model probes) of one hook, said so.
        int hookCount = hooks.Select(SaeSharp.Saes.SaeMetadata.HookOfSite).Distinct().Count();
        string where = hooks.Count == 1 ? hooks[0] : hookCount == hooks.Count ? $"{hooks.Count} hooks" : $"{hooks.Count} sites of {hookCount} hook{(hookCount == 1 ? "" : "s")}";
        Cli.WriteColumns($"sparse probing means, {reports.Count} SAEs at {where}", columns, rows);
        Cli.WriteIndented(Markup.Escape($"(mean test accuracy in % over {over} of the probes on all features or the top k; " +
                                        (hooks.Count == 1 ? "llm (model): on the model's activation dimensions, one probe shared by every SAE; "
                                                          : "llm (hook h): on the model's activation dimensions at hook h (" +
                                                            string.Join(", ", hooks.Select((hook, h) => $"{h}: {hook}")) + "), one probe shared by the SAEs below it; ") +
                                        "SAE i: --sae number i, its tables above)"), 2);
    }

    /// <summary>Sparse probing's <c>eval_config</c> fields beyond the datasets and k values (SAEBench's
    /// <c>SparseProbingEvalConfig</c>): seed, set sizes and, when known, <c>context_length</c>.</summary>
    private static JsonObject ProbeConfig(SparseProbingOptions sparse, int? contextLength)
    {
        var config = new JsonObject
        {
            ["random_seed"] = sparse.Seed, ["probe_train_set_size"] = sparse.TrainSetSize, ["probe_test_set_size"] = sparse.TestSetSize,
        };
        if (contextLength is int c) config["context_length"] = c;
        return config;
    }

    /// <summary>Sparse probing over several datasets: a row per dataset (its classes' mean test accuracy of the probe on the
    /// model's activation, on all SAE features and on the top k, in %) and the mean over datasets (SAEBench's
    /// eval_result_metrics), then how each dataset was split.</summary>
    internal static void PrintSuite(SparseProbingSuiteReport r)
    {
        static string Cell(IReadOnlyDictionary<string, double> m, string key) => m.TryGetValue(key, out var v) ? Pct(v) : "-";
        var kValues = r.Runs[0].Report.KValues;
        var columns = new List<Column> { new("dataset", NoWrap: false), new("llm", Right: true, Heading: "llm\nall"), new("sae all", Right: true, Heading: "sae\nall") };
        columns.AddRange(kValues.Select(k => new Column($"sae top {k}", Right: true, Heading: $"sae\nk={k}")));
        IReadOnlyList<string> Row(string name, IReadOnlyDictionary<string, double> m) =>
            [name, Cell(m, "llm_test_accuracy"), Cell(m, "sae_test_accuracy"), .. kValues.Select(k => Cell(m, $"sae_top_{k}_test_accuracy"))];
        var rows = r.Runs.Select(x => Row($"{x.DatasetName.Split('/')[^1]} ({x.Report.Tasks.Count})", x.Report.Means())).ToList();
        rows.Add(Row("mean", r.Metrics()));
        Cli.WriteColumns($"sparse probing at {r.Hook}: {r.Runs.Count} datasets, {Cli.Integer(r.Runs.Sum(x => x.Report.Tokens))} texts (mean-pooled)", columns, rows);
        Cli.WriteIndented(Markup.Escape("(per dataset, its class count in brackets: the mean test accuracy in % over its classes, each against the others; llm all = probe on " +
                                        "every dimension of the activation, sae all = on every SAE feature, sae k = on the top k SAE features; mean = SAEBench's " +
                                        "eval_result_metrics, each dataset weighing the same; split: " +
                                        string.Join("; ", r.Runs.Select(x => $"{x.DatasetName}: {x.Split}")) + ")"), 2);
    }

    /// <summary><paramref name="fields"/> with SAEBench's <c>context_length</c>: the tokens read of each text.</summary>
    private static JsonObject TextConfig(TextProbingOptions text, JsonObject fields)
    {
        fields["context_length"] = text.ContextSize;
        return fields;
    }

    /// <summary>SCR: the probes' clean test accuracies, then per threshold n SAEBench's metric and both directions' scores
    /// with the biased probe's ablated accuracy (in %).</summary>
    internal static void PrintScr(ScrReport r, string split)
    {
        static string P(double v) => (100 * v).ToString("F1", System.Globalization.CultureInfo.InvariantCulture);
        static string S(double v) => v.ToString("F3", System.Globalization.CultureInfo.InvariantCulture);
        var m = r.Metrics();
        var (d1, d2) = (r.Directions[0], r.Directions[1]);
        string[] names = [r.Column1, r.Column2, r.Biased], shortNames = ["attr1", "attr2", "biased"];
        string Acc(int p, int q) => P(r.CleanAccuracies[p == q ? names[p] : $"{names[p]} probe on {names[q]} data"]);
        Cli.WriteColumns($"SCR at {r.Hook}: {Cli.Integer(r.Texts)} texts (mean-pooled), {r.TrainPerQuadrant} train and {r.TestPerQuadrant} test texts per quadrant ({split})",
            [new Column("probe", NoWrap: true), .. shortNames.Select(n => new Column("on " + n, Right: true, Heading: "on\n" + n + " data"))],
            [.. Enumerable.Range(0, 3).Select(p => (IReadOnlyList<string>)[shortNames[p], .. Enumerable.Range(0, 3).Select(q => Acc(p, q))])]);
        Cli.WriteIndented(Markup.Escape($"(test accuracy in % of each probe, unablated; attr1 = {r.Column1}, attr2 = {r.Column2} (spurious), biased = {r.Biased}, trained where the two agree)"), 2);
        Cli.WriteColumns("SCR per threshold n",
            [new Column("n", Right: true), new Column("metric", Right: true, Heading: "scr\nmetric"), new Column("dir1", Right: true, Heading: "scr\ndir1"),
             new Column("acc1", Right: true, Heading: "dir1\nacc"), new Column("dir2", Right: true, Heading: "scr\ndir2"), new Column("acc2", Right: true, Heading: "dir2\nacc")],
            [.. r.NValues.Select(n => (IReadOnlyList<string>)[n.ToString(System.Globalization.CultureInfo.InvariantCulture),
                m.TryGetValue($"scr_metric_threshold_{n}", out var v) ? S(v) : "-", S(d1.Score(n)), P(d1.ChangedAccuracy[n]), S(d2.Score(n)), P(d2.ChangedAccuracy[n])])]);
        Cli.WriteIndented(Markup.Escape($"(dir1: the n latents of the attr2 probe zero-ablated (error term kept), the biased probe tested on attr1 data (acc in %); " +
                                        $"score = (acc − {P(d1.OriginalAccuracy)}) / ({P(d1.CleanAccuracy)} − {P(d1.OriginalAccuracy)}): its unablated accuracy there and the attr1 probe's. " +
                                        $"dir2: the reverse, ({P(d2.OriginalAccuracy)}, {P(d2.CleanAccuracy)}). scr metric: the direction whose data the biased probe does worse on. " +
                                        "SAEBench's scr_metric_threshold_{n}, scr_dir1_threshold_{n}, scr_dir2_threshold_{n})"), 2);
    }

    /// <summary>SCR over several runs: SAEBench's scr_metric_threshold_{n} per run (one row each, its dataset and pair) and the
    /// mean over runs (SAEBench's eval_result_metrics), then the mean of both directions.</summary>
    internal static void PrintScrSuite(ScrSuiteReport r)
    {
        static string S(double v) => v.ToString("F3", System.Globalization.CultureInfo.InvariantCulture);
        var nValues = r.Runs[0].Report.NValues;
        var mean = r.Metrics();
        bool oneDataset = r.Runs.Select(x => x.DatasetName).Distinct().Count() == 1;
        static string Pair(string c1) => c1.Split(" / ") is [var p, var n] && n == "not " + p ? p : c1.Replace(" / ", "/", StringComparison.Ordinal);
        string Name(ScrRun x) => (oneDataset ? "" : x.DatasetName.Split('/')[^1] + ": ") + Pair(x.Report.Column1);
        var columns = new List<Column> { new("run", NoWrap: false) };
        columns.AddRange(nValues.Select(n => new Column($"n={n}", Right: true)));
        string Cell(IReadOnlyDictionary<string, double> m, string key) => m.TryGetValue(key, out var v) ? S(v) : "-";
        var rows = r.Runs.Select(x => { var m = x.Report.Metrics(); return (IReadOnlyList<string>)[Name(x), .. nValues.Select(n => Cell(m, $"scr_metric_threshold_{n}"))]; }).ToList();
        rows.Add(["mean", .. nValues.Select(n => Cell(mean, $"scr_metric_threshold_{n}"))]);
        rows.Add(["mean, dir1", .. nValues.Select(n => Cell(mean, $"scr_dir1_threshold_{n}"))]);
        rows.Add(["mean, dir2", .. nValues.Select(n => Cell(mean, $"scr_dir2_threshold_{n}"))]);
        var splits = string.Join("; ", r.Runs.GroupBy(x => x.DatasetName).Select(g => $"{g.Key}: {g.First().Split}"));
        Cli.WriteColumns($"SCR at {r.Hook}: {r.Runs.Count} runs, scr_metric per n", columns, rows);
        Cli.WriteIndented(Markup.Escape($"(a run = one --classes pair on one dataset; n = latents zero-ablated; scr_metric = the direction whose data the biased probe does worse on " +
                                        $"(one pair per call shows both); mean = SAEBench's eval_result_metrics, over all runs; dir1/dir2: scr_dir1/2_threshold_{{n}}; split: {splits})"), 2);
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

    /// <summary>TPP over several datasets: per dataset its total metric per n (×100), then SAEBench's means over the datasets
    /// (eval_result_metrics) of the three metrics.</summary>
    internal static void PrintTppSuite(TppSuiteReport r)
    {
        static string P(double v) => (100 * v).ToString("F1", System.Globalization.CultureInfo.InvariantCulture);
        var nValues = r.Runs[0].Report.NValues;
        var mean = r.Metrics();
        var columns = new List<Column> { new("run", NoWrap: false) };
        columns.AddRange(nValues.Select(n => new Column($"n={n}", Right: true)));
        var rows = r.Runs.Select(x =>
        {
            var m = x.Report.Metrics();
            return (IReadOnlyList<string>)[$"{x.DatasetName.Split('/')[^1]} ({x.Report.Classes.Count})", .. nValues.Select(n => P(m[$"tpp_threshold_{n}_total_metric"]))];
        }).ToList();
        rows.Add(["mean", .. nValues.Select(n => P(mean[$"tpp_threshold_{n}_total_metric"]))]);
        rows.Add(["mean, intended", .. nValues.Select(n => P(mean[$"tpp_threshold_{n}_intended_diff_only"]))]);
        rows.Add(["mean, unintended", .. nValues.Select(n => P(mean[$"tpp_threshold_{n}_unintended_diff_only"]))]);
        var splits = string.Join("; ", r.Runs.Select(x => $"{x.DatasetName}: {x.Split}"));
        Cli.WriteColumns($"TPP at {r.Hook}: {r.Runs.Count} datasets, total metric per n (×100)", columns, rows);
        Cli.WriteIndented(Markup.Escape("(a run = one --dataset, its class count in brackets, each row its classes' mean; n = latents zero-ablated per class, error term kept; " +
                                        "total = intended − unintended drop of the probes' test accuracy: SAEBench's tpp_threshold_{n}_total_metric; mean = SAEBench's " +
                                        $"eval_result_metrics, each dataset weighing the same; split: {splits})"), 2);
    }

    /// <summary>Test accuracy per task (model probe, then SAE top-k probes) in percent with one decimal (four characters at
    /// most, so nine columns and a label fit 80 columns), the mean row, then the absorption table.</summary>
    internal static void Print(SparseProbingReport r)
    {
        static string A(double v) => v.ToString("F3", System.Globalization.CultureInfo.InvariantCulture);
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
        Cli.WriteIndented(Markup.Escape("(test accuracy in % on balanced sets; llm all = probe on every dimension of the activation; sae all = probe on every SAE feature; sae k = probe on the top k SAE features, those with the largest difference of class means)"), 2);
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
