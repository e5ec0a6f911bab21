using SaeSharp.Plots;

namespace SaeSharp.Training;

/// <summary>
/// The picture of a run's <c>train_log.jsonl</c> (<c>training_curves.png</c>, what SAELens users watch in Weights &amp;
/// Biases): over training tokens, a panel for each loss term (<c>losses/...</c>), then <c>l0</c>,
/// <c>explained_variance</c> (y up to 1), <c>dead_fraction</c> (0 to 1), <c>lr</c>, <c>sparsity_coefficient</c> (λ as the
/// loss weighed it, SAELens's <c>details/current_l1_coefficient</c>) when it changes during the run (warm-up,
/// <c>--target-l0</c>), <c>rows_per_second</c> (the training pass's throughput, one line: the SAEs of a run share their
/// pass), and the architecture's own <c>metrics/...</c>. Dead-latent resampling (the log's <c>resampled_dead_latents</c>
/// events that resampled any latent) is a dashed vertical line in every panel, in the SAE's colour. A run of several SAEs draws one line per SAE in
/// every panel, with one legend above the panels. Losses, L0 and metrics of positive values spanning at least a decade are
/// drawn on a log axis. A long log's lines are drawn as means of stretches with a min–max band
/// (<see cref="LinePanelsPlot.Thin"/>), ending at the last logged value. The log is read by <see cref="TrainLogFile.Read"/> (missing keys, non-finite values and resumed
/// runs as it says).
/// </summary>
public static class TrainingCurves
{
    /// <summary>The picture's file name in a run's output folder.</summary>
    public const string FileName = "training_curves.png";
    /// <summary>Default width in pixels (three panels a row).</summary>
    public const int DefaultWidth = 1500;

    /// <summary>The panels of <paramref name="log"/>, in the order drawn; each line's x is the training tokens (the step
    /// when some line of the log has no <c>tokens</c>).</summary>
    public static IReadOnlyList<LinePanel> Panels(TrainLogFile log)
    {
        ArgumentNullException.ThrowIfNull(log);
        var panels = new List<LinePanel>();
        foreach (var q in log.Quantities.Where(q => q.StartsWith("losses/", StringComparison.Ordinal)))
            panels.Add(Scaled(q, Lines(log, q)));
        if (Has(log, "l0")) panels.Add(Scaled("l0", Lines(log, "l0")));
        if (Has(log, "explained_variance"))
        {
            var lines = Lines(log, "explained_variance");
            double min = lines.SelectMany(l => l.Y).DefaultIfEmpty(0).Min();
            // A run's first steps can sit far below 0 (a random SAE); the axis stops at −1 so that the end stays readable.
            panels.Add(new LinePanel(min < -1 ? "explained_variance (axis from −1)" : "explained_variance", lines)
                { YMax = 1, YMin = min < -1 ? -1 : null });
        }
        if (Has(log, "dead_fraction")) panels.Add(new LinePanel("dead_fraction", Lines(log, "dead_fraction")) { YMin = 0, YMax = 1 });
        if (Has(log, "lr")) panels.Add(new LinePanel("lr", Lines(log, "lr")) { YMin = 0 });
        if (Has(log, "sparsity_coefficient"))
        {
            var lines = Lines(log, "sparsity_coefficient");
            if (lines.Any(l => l.Y.Count > 0 && l.Y.Max() - l.Y.Min() > 1e-12 * Math.Abs(l.Y.Max())))
                panels.Add(new LinePanel("sparsity_coefficient", lines) { YMin = 0 }); // linear: a warm-up from 0 is no decade
        }
        if (Has(log, "rows_per_second") && Lines(log, "rows_per_second").FirstOrDefault(l => l.Y.Count > 0) is { } pass)
            panels.Add(new LinePanel(log.Saes.Count > 1 ? "rows_per_second (the SAEs' shared pass)" : "rows_per_second",
                    [log.Saes.Count > 1 ? pass with { Shared = true } : pass])
                { YMin = 0, YFormat = LinePanelsPlot.FormatCount });
        foreach (var q in log.Quantities.Where(q => q.StartsWith("metrics/", StringComparison.Ordinal)))
            panels.Add(Scaled(q, Lines(log, q)));
        if (panels.Count == 0)
            throw new SaeSharpException($"{log.Path}: no quantity to draw (no losses, l0, explained_variance, dead_fraction or lr in its lines)");
        var markers = Resamplings(log).Select(e => new LineMarker(LineName(e.Sae), log.EveryLineHasTokens ? e.Tokens : e.Step)).ToList();
        return markers.Count == 0 ? panels : panels.Select(p => p with { Markers = markers }).ToList();
    }

    /// <summary>The events drawn: resamplings that resampled at least one latent.</summary>
    private static IEnumerable<TrainLogEvent> Resamplings(TrainLogFile log) =>
        log.Events.Where(e => e.Name == "resampled_dead_latents" && e.Count > 0);

    private static string LineName(string sae) => sae.Length > 0 ? sae : "(no sae)";

    /// <summary>The PNG of <paramref name="log"/>: <paramref name="width"/> pixels wide, <paramref name="height"/> high
    /// (null: 320 per row of panels, plus the title and legend).</summary>
    public static byte[] Render(TrainLogFile log, int width = DefaultWidth, int? height = null)
    {
        var panels = Panels(log);
        int columns = panels.Count <= 4 ? Math.Min(2, panels.Count) : 3;
        return LinePanelsPlot.Render(panels, Title(log), log.EveryLineHasTokens ? "training tokens" : "training step", width, height, columns);
    }

    /// <summary>The picture's title: the log's path, the SAE's name (or how many SAEs), and the last logged step with its
    /// tokens: "runs/x/train_log.jsonl: topk, step 1,800, 1,843,200 tokens".</summary>
    public static string Title(TrainLogFile log)
    {
        ArgumentNullException.ThrowIfNull(log);
        var ends = log.Saes.SelectMany(s => log.Quantities.Select(q => log.Series(s, q))).OfType<TrainLogSeries>()
            .Select(x => (Step: x.Steps[^1], Tokens: x.Tokens[^1])).ToList();
        long lastStep = ends.Count == 0 ? 0 : ends.Max(e => e.Step);
        double lastTokens = ends.Count == 0 ? double.NaN : ends.Where(e => e.Step == lastStep).Max(e => e.Tokens);
        string who = log.Saes.Count == 1 ? (log.Saes[0].Length > 0 ? log.Saes[0] + ", " : "") : $"{log.Saes.Count} SAEs, ";
        var inv = System.Globalization.CultureInfo.InvariantCulture;
        int resampled = Resamplings(log).Count();
        return $"{log.Path}: {who}step {lastStep.ToString("N0", inv)}" + (double.IsFinite(lastTokens) ? $", {lastTokens.ToString("N0", inv)} tokens" : "") +
               (resampled > 0 ? $"; dashed: dead latents resampled ({resampled}×)" : "") +
               (log.TornLines > 0 ? " (a cut-short last line skipped)" : "");
    }

    /// <summary>Draws the log of <paramref name="runOrLog"/> (a run folder or its log, <see cref="TrainLogFile.Locate"/>)
    /// into <paramref name="png"/> (null: <see cref="FileName"/> beside the log), written atomically; returns its path.</summary>
    public static string Save(string runOrLog, string? png = null, int width = DefaultWidth, int? height = null)
    {
        var path = TrainLogFile.Locate(runOrLog);
        var log = TrainLogFile.Read(path);
        // Beside the log, named as the run was given (relative stays relative), as sae train names it.
        png ??= Path.Combine(Path.GetDirectoryName(path) ?? "", FileName);
        var bytes = Render(log, width, height);
        var dir = Path.GetDirectoryName(Path.GetFullPath(png));
        if (dir is not null) Directory.CreateDirectory(dir);
        IO.AtomicFile.Write(png, s => s.Write(bytes));
        return png;
    }

    private static bool Has(TrainLogFile log, string quantity) => log.Quantities.Contains(quantity);

    /// <summary>One line per SAE that logged <paramref name="quantity"/> (an SAE that logged it only as NaN or ±∞ gets an
    /// empty line, so that its panel is still drawn).</summary>
    private static List<LineSeries> Lines(TrainLogFile log, string quantity)
    {
        var lines = new List<LineSeries>();
        foreach (var sae in log.Saes)
        {
            var s = log.Series(sae, quantity);
            string name = LineName(sae);
            if (s is null) { lines.Add(new LineSeries(name, [], [])); continue; }
            lines.Add(new LineSeries(name, log.EveryLineHasTokens ? s.Tokens : s.Steps.Select(x => (double)x).ToList(), s.Values));
        }
        return lines;
    }

    /// <summary>A panel on a log axis when every value is positive and they span at least a decade, else linear.</summary>
    private static LinePanel Scaled(string title, List<LineSeries> lines)
    {
        var values = lines.SelectMany(l => l.Y).ToList();
        bool log = values.Count > 1 && values.All(v => v > 0) && values.Max() / values.Min() >= 10;
        return new LinePanel(log ? title + " (log scale)" : title, lines) { LogY = log };
    }
}
