using Spectre.Console;

namespace SaeSharp.Cli;

/// <summary>
/// The one progress display of the CLI: a live Spectre.Console bar (done / total, rate, ETA) on an interactive terminal,
/// nothing when output goes to a pipe or a file (or a caller-given plain line, as <c>sae train</c> logs). Library code
/// reports through <see cref="IProgress{T}"/>; reports arrive synchronously on the working thread.
/// </summary>
internal static class CliProgress
{
    /// <summary>True when a live bar is drawn: standard output is an interactive terminal.</summary>
    public static bool Live => !Console.IsOutputRedirected && AnsiConsole.Profile.Capabilities.Interactive;

    /// <summary>Runs <paramref name="work"/> with a bar titled <paramref name="title"/> fed by <see cref="WorkProgress"/>
    /// reports (null when not <see cref="Live"/>, so nothing is drawn in pipes).</summary>
    public static T Run<T>(string title, Func<IProgress<WorkProgress>?, T> work) =>
        Run<WorkProgress, T>(title, null, work, p => (p.Done, p.Total, Describe(title, p)), null);

    /// <summary>
    /// The general form: <paramref name="view"/> turns a report into the bar's value, maximum (null: unknown) and text;
    /// when not live, <paramref name="plainLine"/> (if given) turns a report into a line for standard output.
    /// </summary>
    public static T Run<TReport, T>(string title, long? total, Func<IProgress<TReport>?, T> work,
        Func<TReport, (long Done, long? Total, string Text)> view, Func<TReport, string?>? plainLine)
    {
        if (!Live)
            return work(plainLine is null ? null : new Sink<TReport>(p => { if (plainLine(p) is { } line) Console.WriteLine(line); }));
        T result = default!;
        // One line at any terminal width: on a narrow terminal a shorter bar and no percentage (the description counts the
        // steps), and the description cut to the room left (wider, it would push the bar out and wrap onto a second line).
        var (barWidth, percentage, room) = Layout(AnsiConsole.Profile.Width);
        ProgressColumn[] columns = percentage
            ? [new TaskDescriptionColumn(), new ProgressBarColumn { Width = barWidth }, new PercentageColumn(), new SpinnerColumn()]
            : [new TaskDescriptionColumn(), new ProgressBarColumn { Width = barWidth }, new SpinnerColumn()];
        _drawing = true;
        try
        {
            AnsiConsole.Progress()
                // The ETA is in the description (from the average rate); Spectre's own remaining-time column would repeat it.
                .Columns(columns)
                .Start(ctx =>
                {
                    var task = ctx.AddTask(Markup.Escape(title), maxValue: total ?? 1);
                    task.IsIndeterminate = total is null;
                    result = work(new Sink<TReport>(p =>
                    {
                        var (done, max, text) = view(p);
                        if (max is long m && m > 0)
                        {
                            task.IsIndeterminate = false;
                            task.MaxValue = m;
                        }
                        task.Value = Math.Min(done, (long)task.MaxValue);
                        task.Description = Markup.Escape(text.Length <= room ? text : text[..(room - 1)] + "…");
                    }));
                    task.Value = task.MaxValue;
                    task.StopTask();
                });
        }
        finally
        {
            _drawing = false;
            foreach (var line in _deferred) Cli.ErrorLine(line);
            _deferred.Clear();
        }
        return result;
    }

    /// <summary>The live bar's layout on a terminal <paramref name="width"/> columns wide: the bar's width, whether a
    /// percentage column fits, and the characters left for the description.</summary>
    private static (int BarWidth, bool Percentage, int Room) Layout(int width)
    {
        int barWidth = Math.Clamp(width - 80, 10, 40);
        bool percentage = width >= 100;
        return (barWidth, percentage, Math.Max(20, width - barWidth - (percentage ? "100% ".Length : 0) - "⣷ ".Length - 2));
    }

    /// <summary>The characters a live bar's description has on this terminal before it is cut with "…".</summary>
    public static int DescriptionRoom => Layout(AnsiConsole.Profile.Width).Room;

    [ThreadStatic] private static bool _drawing;
    private static readonly List<string> _deferred = [];

    /// <summary>Writes a warning line on stderr; while a live bar is drawn, after the bar is done (a line written under
    /// it would be torn by its redraws).</summary>
    public static void Warn(string line)
    {
        if (_drawing) _deferred.Add(line);
        else Cli.ErrorLine(line);
    }

    /// <summary>"eval: 12,288 / 50,000 tokens, 1,830 tokens/s, ETA 0:20" (an ETA of an hour or more as 1:02:05), the live
    /// training line's ETA form.</summary>
    public static string Describe(string title, WorkProgress p) =>
        $"{title}: {p.Done:N0}{(p.Total is long t ? $" / {t:N0}" : "")} {p.Unit}, {p.PerSecond:N0} {p.Unit}/s" +
        (p.Eta is TimeSpan eta ? $", ETA {Eta(eta)}" : "");

    /// <summary>A live line's ETA: m:ss under an hour, h:mm:ss from an hour.</summary>
    public static string Eta(TimeSpan eta) => eta.TotalHours < 1 ? eta.ToString("m\\:ss", System.Globalization.CultureInfo.InvariantCulture)
        : $"{(int)eta.TotalHours}:{eta.ToString("mm\\:ss", System.Globalization.CultureInfo.InvariantCulture)}";

    /// <summary>Reports synchronously on the working thread (System.Progress would post to the thread pool).</summary>
    private sealed class Sink<TReport>(Action<TReport> report) : IProgress<TReport>
    {
        public void Report(TReport value) => report(value);
    }
}
