using System.Collections.Concurrent;
using System.Diagnostics;

namespace SaeSharp.Tests.Cli;

/// <summary>The <c>sae</c> command line in a child process (the sae.dll built next to the tests), for what an
/// in-process run cannot show: being killed.</summary>
internal sealed class CliProcess : IDisposable
{
    private readonly Process _process;
    private readonly ConcurrentQueue<string> _lines = new();
    private readonly ConcurrentQueue<string> _out = new();
    private readonly ConcurrentQueue<string> _err = new();

    public CliProcess(params string[] args) : this(ignoreSigInt: false, args) { }

    private CliProcess(bool ignoreSigInt, string[] args)
    {
        // A process inherits an ignored SIGINT, and .NET keeps it ignored (Console.CancelKeyPress never fires): the suite
        // started as a script's background job (`dotnet test ... &`) would hand that to every child, and Interrupt would
        // reach nothing. env --default-signal=INT (GNU coreutils 8.31+) starts sae as a terminal starts a foreground
        // command, env --ignore-signal=INT as a script starts a background job.
        var info = new ProcessStartInfo("env") { RedirectStandardOutput = true, RedirectStandardError = true, UseShellExecute = false };
        info.ArgumentList.Add(ignoreSigInt ? "--ignore-signal=INT" : "--default-signal=INT");
        info.ArgumentList.Add("dotnet");
        info.ArgumentList.Add(Path.Combine(AppContext.BaseDirectory, "sae.dll"));
        foreach (var a in args) info.ArgumentList.Add(a);
        _process = new Process { StartInfo = info };
        _process.OutputDataReceived += (_, e) => { if (e.Data is not null) { _lines.Enqueue(e.Data); _out.Enqueue(e.Data); } };
        _process.ErrorDataReceived += (_, e) => { if (e.Data is not null) { _lines.Enqueue(e.Data); _err.Enqueue(e.Data); } };
        _process.Start();
        _process.BeginOutputReadLine();
        _process.BeginErrorReadLine();
    }

    /// <summary>sae started as a script's background job (<c>sae train ... &amp;</c>) is: ignoring SIGINT, so that only
    /// SIGTERM can stop it cleanly.</summary>
    public static CliProcess IgnoringSigInt(params string[] args) => new(ignoreSigInt: true, args);

    /// <summary>Everything printed so far (stdout and stderr).</summary>
    public IReadOnlyList<string> Lines => _lines.ToList();

    /// <summary>The lines printed on stdout so far.</summary>
    public IReadOnlyList<string> Output => _out.ToList();

    /// <summary>The lines printed on stderr so far.</summary>
    public IReadOnlyList<string> Errors => _err.ToList();

    public bool HasExited => _process.HasExited;

    /// <summary>Waits until a printed line satisfies <paramref name="predicate"/> or the process exits; false on timeout.</summary>
    public bool WaitForLine(Func<string, bool> predicate, TimeSpan timeout)
    {
        var clock = Stopwatch.StartNew();
        while (clock.Elapsed < timeout)
        {
            if (_lines.Any(predicate)) return true;
            if (_process.HasExited)
            {
                _process.WaitForExit(); // drains the output handlers
                return _lines.Any(predicate);
            }
            Thread.Sleep(5);
        }
        return false;
    }

    /// <summary>True when sae ignores SIGINT (read from /proc; false where there is none).</summary>
    public bool IgnoresSigInt => Signals.Ignores(_process.Id, Signals.SigInt);

    /// <summary>SIGINT, as Ctrl-C in a terminal sends it: the command's cancel handler runs.</summary>
    public void Interrupt()
    {
        if (IgnoresSigInt)
            throw new InvalidOperationException($"sae (pid {_process.Id}) ignores SIGINT: a Ctrl-C would be lost");
        Send("-INT");
    }

    /// <summary>SIGTERM, as <c>kill PID</c>, Slurm and <c>docker stop</c> send it.</summary>
    public void Terminate() => Send("-TERM");

    private void Send(string signal)
    {
        using var kill = Process.Start("kill", [signal, _process.Id.ToString(System.Globalization.CultureInfo.InvariantCulture)]);
        kill.WaitForExit();
    }

    /// <summary>SIGKILL (kill -9): no handler runs, nothing is flushed.</summary>
    public void Kill()
    {
        try { _process.Kill(entireProcessTree: true); } catch (InvalidOperationException) { }
        _process.WaitForExit();
    }

    public int WaitForExit(TimeSpan timeout)
    {
        if (!_process.WaitForExit(timeout)) { Kill(); throw new TimeoutException("sae did not finish: " + string.Join("\n", Lines)); }
        _process.WaitForExit(); // drains the output handlers
        return _process.ExitCode;
    }

    public void Dispose()
    {
        if (!_process.HasExited) Kill();
        _process.Dispose();
    }
}
