using System.Globalization;
using System.Runtime.InteropServices;

namespace SaeSharp.Tests.Cli;

/// <summary>POSIX signal dispositions (Linux, glibc), for the tests that interrupt a child process.</summary>
internal static partial class Signals
{
    public const int SigInt = 2;

    /// <summary>True when process <paramref name="pid"/> ignores <paramref name="signal"/> (the SigIgn mask of
    /// /proc/PID/status); false where there is no /proc.</summary>
    public static bool Ignores(int pid, int signal)
    {
        var status = $"/proc/{pid}/status";
        if (!File.Exists(status)) return false;
        var line = File.ReadLines(status).FirstOrDefault(l => l.StartsWith("SigIgn:", StringComparison.Ordinal));
        return line is not null && (ulong.Parse(line["SigIgn:".Length..].Trim(), NumberStyles.HexNumber, CultureInfo.InvariantCulture) >> (signal - 1) & 1) == 1;
    }

    /// <summary>This process ignores <paramref name="signal"/> until the result is disposed, as a script's background job
    /// ignores SIGINT; processes started meanwhile inherit that.</summary>
    public static unsafe IDisposable Ignore(int signal)
    {
        // glibc's struct sigaction (152 bytes on x86-64 and arm64) begins with the handler; SIG_IGN is 1.
        var ignore = new byte[256];
        ignore[0] = 1;
        var previous = new byte[256];
        fixed (byte* act = ignore, old = previous)
            if (sigaction(signal, act, old) != 0) throw new InvalidOperationException($"sigaction({signal}) failed: errno {Marshal.GetLastPInvokeError()}");
        return new Restore(signal, previous);
    }

    private sealed class Restore(int signal, byte[] previous) : IDisposable
    {
        public unsafe void Dispose()
        {
            fixed (byte* act = previous)
                if (sigaction(signal, act, null) != 0) throw new InvalidOperationException($"sigaction({signal}) failed: errno {Marshal.GetLastPInvokeError()}");
        }
    }

    [LibraryImport("libc", SetLastError = true)]
    private static unsafe partial int sigaction(int signum, byte* act, byte* oldact);
}
