using SaeSharp.Cli.Commands;
using SaeSharp.Training;
using Spectre.Console;

namespace SaeSharp.Tests.Cli;

/// <summary>How lines fit a narrow terminal: wrapped lines keep their indent; the live training line is shorter than the
/// logged one and keeps what the log line says.</summary>
public sealed class TerminalLayoutTests
{
    [Fact]
    public void An_indented_line_wraps_at_the_terminal_width_with_every_line_indented()
    {
        var words = Enumerable.Range(0, 30).Select(i => $"word{i}").ToList();
        string output;
        lock (CliRunner.Gate)
        {
            var saved = AnsiConsole.Console;
            var writer = new StringWriter();
            var console = AnsiConsole.Create(new AnsiConsoleSettings
            {
                Out = new AnsiConsoleOutput(writer), Ansi = AnsiSupport.No, ColorSystem = ColorSystemSupport.NoColors,
            });
            console.Profile.Width = 40;
            AnsiConsole.Console = console;
            try { SaeSharp.Cli.Cli.WriteIndented(string.Join(' ', words), 4); }
            finally { AnsiConsole.Console = saved; }
            output = writer.ToString();
        }
        var lines = output.Split('\n').Select(l => l.TrimEnd('\r', ' ')).Where(l => l.Length > 0).ToList();
        Assert.True(lines.Count >= 5, output); // 30 words of 5–6 characters in 36 columns
        Assert.All(lines, l => Assert.StartsWith("    word", l));
        Assert.All(lines, l => Assert.True(l.Length <= 40, $"'{l}' is wider than 40 columns"));
        Assert.Equal(words, lines.SelectMany(l => l.Split(' ', StringSplitOptions.RemoveEmptyEntries)));
    }

    [Fact]
    public void The_live_training_line_is_the_log_line_shortened()
    {
        var p = new TrainingProgress
        {
            Step = 120, TotalSteps = 300, MeanRowsPerSecond = 41_000, Eta = TimeSpan.FromSeconds(75),
            Saes = [new SaeProgress { Name = "topk", Losses = new Dictionary<string, double> { ["overall_loss"] = 5.178 }, L0 = 16, DeadFraction = 0.02 }],
        };
        string log = TrainCommand.Describe(p), live = TrainCommand.Describe(p, live: true);
        Assert.Contains("topk: loss 5.178 L0 16.0 dead_fraction ", log);
        Assert.Contains("ETA 00:01:15", log);
        Assert.Contains("| loss 5.178 L0 16.0 dead ", live);
        Assert.Contains("ETA 1:15", live);
        Assert.True(live.Length < log.Length);
        // With two SAEs each keeps its name.
        var two = new TrainingProgress { Step = p.Step, TotalSteps = p.TotalSteps, Saes = [p.Saes[0], new SaeProgress { Name = "relu", Losses = p.Saes[0].Losses }] };
        Assert.Contains("topk: loss", TrainCommand.Describe(two, live: true));
        Assert.Contains("relu: loss", TrainCommand.Describe(two, live: true));
    }
}
