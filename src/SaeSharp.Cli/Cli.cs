using System.CommandLine;
using System.Globalization;
using SaeSharp.Cli.Commands;
using Spectre.Console;

namespace SaeSharp.Cli;

/// <summary>The <c>sae</c> command line: a thin layer over the SaeSharp library.</summary>
internal static class Cli
{
    public static readonly Option<bool> Verbose = new("--verbose") { Description = "Print the CPU kernel path chosen, and stack traces of errors", Recursive = true };

    public static RootCommand Build()
    {
        var root = new RootCommand("SaeSharp: sparse autoencoders on neural-network activations");
        root.Options.Add(Verbose);
        foreach (var command in new[]
                 {
                     InfoCommand.Create(),
                     ModelCommands.Create(),
                     InterventionCommands.Steer(),
                     InterventionCommands.Ablate(),
                     InterventionCommands.Attribute(),
                     TrainCommand.Create(),
                     SaeCommands.Eval(),
                     SaeCommands.Encode(),
                     SaeCommands.Synth(),
                     ConvertCommand.Create(),
                     CacheCommand.Create(),
                     AnalysisCommands.Features(),
                     AnalysisCommands.Dashboard(),
                     AnalysisCommands.Inspect(),
                     DemoCommand.Create(),
                     CorpusCommand.Create(),
                     LmCommand.Create(),
                     ScoreLabelsCommand.Create(),
                     ReleasesCommand.Create(),
                 })
            root.Subcommands.Add(command);
        return root;
    }

    public static int Run(string[] args)
    {
        // Numbers on the terminal and in the files the commands write read the same on every machine ("0.5", never "0,5").
        CultureInfo.DefaultThreadCurrentCulture = CultureInfo.CurrentCulture = CultureInfo.InvariantCulture;
        return Build().Parse(args).Invoke();
    }

    /// <summary>Runs a command body: a <see cref="SaeSharpException"/> (or other error) becomes one line on stderr and exit code 1.</summary>
    public static void SetAction(Command command, Func<ParseResult, int> body)
    {
        command.SetAction(parse =>
        {
            try
            {
                if (parse.GetValue(Verbose)) Kernels.CpuKernels.LogOnce(line => Console.Error.WriteLine(line));
                return body(parse);
            }
            catch (Exception e) when (e is SaeSharpException or IOException or UnauthorizedAccessException or OperationCanceledException || e.InnerException is SaeSharpException)
            {
                ReportError(parse, e);
                return 1;
            }
            catch (Exception e)
            {
                ReportError(parse, e);
                return 2;
            }
        });
    }

    private static void ReportError(ParseResult parse, Exception e)
    {
        var inner = e is not SaeSharpException && e.InnerException is SaeSharpException s ? s : e;
        Console.Error.WriteLine($"error: {inner.Message}");
        if (parse.GetValue(Verbose)) Console.Error.WriteLine(e.ToString());
    }

    public static void WriteTable(string title, IEnumerable<(string Name, string Value)> rows)
    {
        var table = new Table().Title(title).AddColumn("metric").AddColumn(new TableColumn("value").RightAligned());
        foreach (var (name, value) in rows) table.AddRow(Markup.Escape(name), Markup.Escape(value));
        AnsiConsole.Write(table);
    }
}
