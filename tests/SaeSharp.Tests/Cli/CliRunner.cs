using Spectre.Console;

namespace SaeSharp.Tests.Cli;

/// <summary>Runs the <c>sae</c> command line in-process, capturing stdout and stderr.</summary>
internal static class CliRunner
{
    /// <summary>Held while Console.Out/Error are redirected; other tests that capture the console take it too.</summary>
    internal static readonly object Gate = new();

    public static (int Exit, string Out, string Err) Run(params string[] args)
    {
        lock (Gate)
        {
            var (oldOut, oldErr) = (Console.Out, Console.Error);
            var (o, e) = (new StringWriter(), new StringWriter());
            Console.SetOut(o);
            Console.SetError(e);
            // Spectre's AnsiConsole binds to the Console.Out of its first use; rebind it to this run's writer.
            AnsiConsole.Console = AnsiConsole.Create(new AnsiConsoleSettings { Out = new AnsiConsoleOutput(o) });
            try
            {
                int exit = SaeSharp.Cli.Cli.Run(args);
                return (exit, o.ToString(), e.ToString());
            }
            finally
            {
                Console.SetOut(oldOut);
                Console.SetError(oldErr);
            }
        }
    }
}
