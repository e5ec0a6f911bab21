using System.Runtime.InteropServices;

namespace SaeSharp.Cli;

/// <summary>
/// The graceful stop of a long command: Ctrl-C (SIGINT) or SIGTERM (<c>kill PID</c>, Slurm, <c>docker stop</c>) cancels
/// <see cref="Token"/> instead of ending the process, so the command can finish its step, checkpoint and return
/// <see cref="ExitCode"/>. A repeated signal only repeats the notice (<see cref="Notice"/>: the signal and what the command
/// does now). Disposing restores the default handling.
/// </summary>
internal sealed class StopSignals : IDisposable
{
    private readonly CancellationTokenSource _cts = new();
    private readonly PosixSignalRegistration _sigTerm;
    private readonly Lock _gate = new();
    private int? _exitCode;
    private bool _disposed;

    private readonly string _action;

    /// <summary>What a training command that checkpoints does when stopped.</summary>
    public const string SavingACheckpoint = "saving a checkpoint";

    /// <param name="action">What the command does once stopped, for the notice (default: <see cref="SavingACheckpoint"/>).</param>
    public StopSignals(string action = SavingACheckpoint)
    {
        _action = action;
        Console.CancelKeyPress += OnCancelKeyPress;
        _sigTerm = PosixSignalRegistration.Create(PosixSignal.SIGTERM, context =>
        {
            context.Cancel = true;
            Request(143);
        });
    }

    /// <summary>The line printed on a stop signal: "sae: terminated (SIGTERM); ACTION ..." for exit code 143, else
    /// "sae: interrupted; ACTION ...".</summary>
    internal static string Notice(int exitCode, string action) =>
        (exitCode == 143 ? "sae: terminated (SIGTERM); " : "sae: interrupted; ") + action + " ...";

    /// <summary>Cancelled by the first stop signal.</summary>
    public CancellationToken Token => _cts.Token;

    /// <summary>The exit code of a command this stopped, as a shell reports a command ended by the first signal:
    /// 143 (128 + 15) for SIGTERM, else 130 (128 + 2, SIGINT).</summary>
    public int ExitCode
    {
        get { lock (_gate) return _exitCode ?? 130; }
    }

    private void OnCancelKeyPress(object? sender, ConsoleCancelEventArgs e)
    {
        e.Cancel = true;
        Request(130);
    }

    private void Request(int exitCode)
    {
        lock (_gate)
        {
            // A handler already running when Dispose unregistered it must not touch the disposed source.
            if (_disposed) return;
            _exitCode ??= exitCode;
            _cts.Cancel();
        }
        Console.Error.WriteLine(Notice(exitCode, _action));
    }

    public void Dispose()
    {
        Console.CancelKeyPress -= OnCancelKeyPress;
        _sigTerm.Dispose();
        lock (_gate)
        {
            _disposed = true;
            _cts.Dispose();
        }
    }
}
