using Spectre.Console;

namespace SaeSharp.Tests.Cli;

/// <summary>Runs the <c>sae</c> command line in-process, capturing stdout and stderr.</summary>
internal static class CliRunner
{
    /// <summary>Held while Console.Out/Error are redirected; other tests that capture the console take it too.</summary>
    internal static readonly object Gate = new();

    /// <summary>Runs with environment variables set for the run (e.g. HF_ENDPOINT and HF_HUB_CACHE pointing at a fake
    /// hub), restored afterwards; other CLI runs wait on <see cref="Gate"/> meanwhile.</summary>
    public static (int Exit, string Out, string Err) RunWithEnvironment(IReadOnlyDictionary<string, string> environment, params string[] args)
    {
        lock (Gate)
        {
            var saved = environment.Keys.ToDictionary(k => k, Environment.GetEnvironmentVariable);
            foreach (var (k, v) in environment) Environment.SetEnvironmentVariable(k, v);
            try
            {
                return Run(args);
            }
            finally
            {
                foreach (var (k, v) in saved) Environment.SetEnvironmentVariable(k, v);
            }
        }
    }

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
