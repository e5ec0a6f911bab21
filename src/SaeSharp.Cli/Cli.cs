using System.CommandLine;
using System.CommandLine.Parsing;
using System.Globalization;
using System.Numerics;
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

    /// <summary>Refuses zero and negative values of <paramref name="option"/> when the command line is parsed, before the
    /// command runs: <c>--batch-size 0: expected a positive number</c>.</summary>
    public static Option<T> Positive<T>(this Option<T> option) where T : struct, INumber<T> =>
        Check(option, v => v is T x && x <= T.Zero, "a positive number");

    /// <inheritdoc cref="Positive{T}(Option{T})"/>
    public static Option<T?> Positive<T>(this Option<T?> option) where T : struct, INumber<T> =>
        Check(option, v => v is T x && x <= T.Zero, "a positive number");

    /// <summary>Refuses negative values of <paramref name="option"/> when the command line is parsed: <c>--ig-steps -1: expected 0 or more</c>.</summary>
    public static Option<T> NonNegative<T>(this Option<T> option) where T : struct, INumber<T> =>
        Check(option, v => v is T x && x < T.Zero, "0 or more");

    /// <inheritdoc cref="NonNegative{T}(Option{T})"/>
    public static Option<T?> NonNegative<T>(this Option<T?> option) where T : struct, INumber<T> =>
        Check(option, v => v is T x && x < T.Zero, "0 or more");

    private static Option<TValue> Check<TValue>(Option<TValue> option, Func<TValue?, bool> bad, string expected)
    {
        option.Validators.Add(result =>
        {
            if (result.Implicit || result.Tokens.Count == 0) return; // the default value
            TValue? value;
            try { value = result.GetValueOrDefault<TValue>(); }
            catch (InvalidOperationException) { return; } // not a number: the parser reports it
            if (bad(value))
                result.AddError($"{option.Name} {string.Format(CultureInfo.InvariantCulture, "{0}", value)}: expected {expected}");
        });
        return option;
    }

    /// <summary>An integer for a <see cref="WriteTable"/> row: digit-grouped on a terminal (<c>1,234,567</c>); in a pipe,
    /// where the value is read by programs, plain digits (<c>1234567</c>).</summary>
    public static string Integer(long value) =>
        value.ToString(Console.IsOutputRedirected ? "D" : "N0", CultureInfo.InvariantCulture);

    /// <summary>Name/value rows under a title: a Spectre table on a terminal; in a pipe, the title line, then one
    /// <c>name&lt;TAB&gt;value</c> line per row (for grep and cut). Integers in either go through <see cref="Integer"/>.</summary>
    public static void WriteTable(string title, IEnumerable<(string Name, string Value)> rows)
    {
        if (Console.IsOutputRedirected)
        {
            Console.WriteLine(title);
            foreach (var (name, value) in rows) Console.WriteLine($"{name}\t{value}");
            return;
        }
        var table = new Table().Title(Markup.Escape(title)).AddColumn("metric").AddColumn(new TableColumn("value").RightAligned());
        foreach (var (name, value) in rows) table.AddRow(Markup.Escape(name), Markup.Escape(value));
        AnsiConsole.Write(table);
    }
}
