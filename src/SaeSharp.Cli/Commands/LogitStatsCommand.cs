using System.CommandLine;
using System.Globalization;
using System.Text;
using SaeSharp.Analysis;
using SaeSharp.IO;
using SaeSharp.Pipelines;
using SaeSharp.Tokenizers;
using static TorchSharp.torch;

namespace SaeSharp.Cli.Commands;

/// <summary><c>sae logit-stats</c>: the logit weight distribution statistics and token set enrichment of SAELens's
/// <c>logits_lens_with_features</c> tutorial (<see cref="LogitWeightStatistics"/>).</summary>
internal static class LogitStatsCommand
{
    public static Command Create()
    {
        var sae = SaeCommands.SaeOption();
        var model = ModelCommands.ModelOption();
        var cosine = new Option<bool>("--cosine-sim") { Description = "Divide each token's W_U column by its norm (the tutorial's cosine_sim=True)" };
        var sort = new Option<string>("--sort") { Description = "Column the top features are ranked by, descending: skewness, kurtosis or std", DefaultValueFactory = _ => "skewness" };
        sort.AcceptOnlyFromAmong("skewness", "kurtosis", "std");
        var top = new Option<int>("--top") { Description = "Features shown per table", DefaultValueFactory = _ => 10 }.Positive();
        var tutorialSets = new Option<bool>("--tutorial-sets") { Description = "Token sets of the tutorial: its regex_dict and a set per initial letter" };
        var tokenSet = new Option<string[]>("--token-set") { Description = "NAME=REGEX: the tokens whose vocabulary string (Ġ for a space) the regular expression matches at its start; repeatable" };
        var tokenWords = new Option<string[]>("--token-words") { Description = "NAME=WORD,WORD,...: every token of \" WORD\" for each word; repeatable" };
        var enrichFeatures = new Option<int>("--enrichment-features") { Description = "Enrichment of this many features, the most skewed (the tutorial's 5000)", DefaultValueFactory = _ => 5000 }.Positive();
        var csv = new Option<string?>("--csv") { Description = "Write every feature's mean, std, skewness, kurtosis (log_feature_sparsity when the SAE has a sparsity.safetensors, and enrichment scores) as CSV" };
        var plot = new Option<string?>("--plot") { Description = "Write the tutorial's pictures into this folder: skewness and log kurtosis histograms, their scatter, the token set enrichment Manhattan plot" };
        var command = new Command("logit-stats", "Statistics of each feature's logit weights W_dec·W_U (skewness, kurtosis) and token set enrichment")
        {
            sae, model, cosine, sort, top, tutorialSets, tokenSet, tokenWords, enrichFeatures, csv, plot,
        };
        Cli.SetAction(command, parse =>
        {
            string modelDir = ModelSource.Resolve(parse.GetValue(model)!);
            if (SaeSharp.Interop.CrossCoderFormat.IsCrossCoderPath(parse.GetValue(sae)!))
                throw new SaeSharpException($"--sae {parse.GetValue(sae)}: a crosscoder; sae logit-stats takes an SAE (one decoder row per feature at one hook)");
            CommandInput[] inputs = [new("--sae", parse.GetValue(sae)!, InputKind.Sae), new("--model", modelDir, InputKind.Folder)];
            OutputGuard.RefuseBadOutputFiles([("--csv", parse.GetValue(csv))], inputs);
            var plotDir = parse.GetValue(plot);
            if (plotDir is not null)
                OutputGuard.RefuseReplacingInput("--plot", plotDir, [LogitStatsPlots.SkewnessFile, LogitStatsPlots.KurtosisFile, LogitStatsPlots.ScatterFile, LogitStatsPlots.ManhattanFile], inputs);
            var tok = Tokenizer.FromFolder(modelDir);
            var sets = new List<TokenSet>();
            var skipped = new List<string>();
            if (parse.GetValue(tutorialSets))
                foreach (var set in TokenSet.Tutorial(tok))
                    if (set.TokenIds.Count == 0) skipped.Add(set.Name);   // a small vocabulary has no token of some sets
                    else sets.Add(set);
            foreach (var spec in parse.GetValue(tokenSet) ?? [])
            {
                var (name, pattern) = NameValue("--token-set", spec);
                sets.Add(TokenSet.FromRegex(tok, name, pattern));
            }
            var wordNotes = new List<string>();
            foreach (var spec in parse.GetValue(tokenWords) ?? [])
            {
                var (name, words) = NameValue("--token-words", spec);
                sets.Add(TokenSet.FromWords(tok, name, words.Split(',', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries), wordNotes));
            }
            if (sets.GroupBy(s => s.Name).FirstOrDefault(g => g.Count() > 1) is { } twice)
                throw new SaeSharpException($"token set '{twice.Key}' is given twice");
            var (s, pm) = ModelForSae.LoadWithSae(parse.GetValue(sae)!, modelDir);
            using (s)
            using (pm)
            {
                string hook = s.Cfg.Metadata.HookNameOut ?? s.Cfg.Metadata.HookOr(null);
                using var unembed = LogitWeightStatistics.Unembed(pm.Model, parse.GetValue(cosine));
                foreach (var set in sets) set.CheckFor(unembed.shape[1]);   // before any table is printed
                foreach (var note in wordNotes) Cli.ErrorLine($"note: --token-words {note}");
                if (skipped.Count > 0) Cli.ErrorLine($"note: tutorial token sets without a token in this vocabulary, left out: {string.Join(", ", skipped)}");
                var moments = LogitWeightStatistics.AllMoments(pm.Model, s, hook, unembed);
                Func<LogitWeightMoments, double> key = parse.GetValue(sort) switch
                {
                    "kurtosis" => m => m.Kurtosis,
                    "std" => m => m.Std,
                    _ => m => m.Skewness,
                };
                int n = parse.GetValue(top);
                var shown = moments.Where(m => !double.IsNaN(key(m))).OrderByDescending(key).Take(n).ToList();
                Cli.WriteColumns($"W_dec·W_U{(parse.GetValue(cosine) ? " (cosine)" : "")} at {s.Cfg.Metadata.Site(hook)}: top {shown.Count} by {parse.GetValue(sort)}",
                    [new Column("feature", Right: true), new Column("std", Right: true), new Column("skewness", Right: true), new Column("kurtosis", Right: true), new Column("top logits", NoWrap: true)],
                    shown.Select(m => (IReadOnlyList<string>)[m.Feature.ToString(CultureInfo.InvariantCulture), Cli.Significant(m.Std, 3),
                        Cli.Significant(m.Skewness, 3), Cli.Significant(m.Kurtosis, 3), TopTokens(pm, s, hook, m.Feature, unembed, tok)]));

                var bySkew = moments.Where(m => !double.IsNaN(m.Skewness)).OrderByDescending(m => m.Skewness).Take(parse.GetValue(enrichFeatures)).Select(m => m.Feature).ToList();
                var scores = sets.Count == 0 ? new double[0, 0] : LogitWeightStatistics.Enrichment(pm.Model, s, hook, bySkew, sets, unembed);
                for (int k = 0; k < sets.Count; k++)
                {
                    var best = Enumerable.Range(0, bySkew.Count).OrderByDescending(j => scores[k, j]).Take(n).ToList();
                    Cli.WriteColumns($"enrichment: {sets[k].Name} ({sets[k].TokenIds.Count} tokens), top {best.Count} of the {bySkew.Count} most skewed features",
                        [new Column("feature", Right: true), new Column("score", Right: true), new Column("-ln(1-score)", Right: true), new Column("skewness", Right: true)],
                        best.Select(j => (IReadOnlyList<string>)[bySkew[j].ToString(CultureInfo.InvariantCulture), Cli.Significant(scores[k, j], 3),
                            Cli.Significant(LogitWeightStatistics.NegLogOneMinus(scores[k, j]), 3), Cli.Significant(moments[bySkew[j]].Skewness, 3)]));
                }
                if (parse.GetValue(csv) is { } path)
                {
                    var column = bySkew.Select((f, j) => (f, j)).ToDictionary(x => x.f, x => x.j);
                    var logSparsity = s.LogFeatureSparsity;   // SAELens's from_pretrained_with_cfg_and_sparsity, beside the statistics
                    var sb = new StringBuilder("feature,mean,std,skewness,kurtosis");
                    if (logSparsity is not null) sb.Append(",log_feature_sparsity");
                    foreach (var set in sets) sb.Append(',').Append(Csv(set.Name));
                    sb.Append('\n');
                    foreach (var m in moments)
                    {
                        sb.Append(CultureInfo.InvariantCulture, $"{m.Feature},{m.Mean:R},{m.Std:R},{m.Skewness:R},{m.Kurtosis:R}");
                        if (logSparsity is not null) sb.Append(CultureInfo.InvariantCulture, $",{logSparsity[m.Feature]:R}");
                        for (int k = 0; k < sets.Count; k++)
                            sb.Append(',').Append(column.TryGetValue(m.Feature, out int j) ? scores[k, j].ToString("R", CultureInfo.InvariantCulture) : "");
                        sb.Append('\n');
                    }
                    AtomicFile.WriteAllText(path, sb.ToString());
                    Console.WriteLine($"table: {path}");
                }
                if (plotDir is not null)
                {
                    var pngs = LogitStatsPlots.Save(plotDir, s.Cfg.Metadata.Site(hook), moments, sets.Select(t => t.Name).ToList(), bySkew, scores);
                    Console.WriteLine($"{pngs.Count} pictures: {plotDir}");
                }
            }
            return 0;
        });
        return command;
    }

    private static (string Name, string Value) NameValue(string option, string spec)
    {
        int eq = spec.IndexOf('=', StringComparison.Ordinal);
        return eq > 0 && eq < spec.Length - 1 ? (spec[..eq], spec[(eq + 1)..])
            : throw new SaeSharpException($"{option} {spec}: expected NAME=VALUE");
    }

    private static string Csv(string field) => field.IndexOfAny([',', '"', '\n']) < 0 ? field : "\"" + field.Replace("\"", "\"\"", StringComparison.Ordinal) + "\"";

    /// <summary>The feature's 5 largest logit weights' tokens, quoted, as the dashboard shows them.</summary>
    private static string TopTokens(Models.ProcessedModel pm, Saes.Sae sae, string hook, int feature, Tensor unembed, ITextTokenizer tok)
    {
        using var scope = NewDisposeScope();
        var row = LogitWeightStatistics.Projections(pm.Model, sae, hook, [feature], unembed)[0];
        var (_, ids) = row.topk(Math.Min(5, (int)row.shape[0]));
        var words = ids.data<long>().ToArray().Select(i => DashboardWriter.Quote(tok.TokenText((int)i))).ToList();
        // On a terminal, lines broken between tokens (never inside a quoted one) to fit beside the four number columns.
        return Console.IsOutputRedirected ? string.Join(" ", words)
            : string.Join("\n", Cli.WrapWords(words, Math.Max(20, Spectre.Console.AnsiConsole.Profile.Width - 44)));
    }
}
