namespace SaeSharp.Bench;

/// <summary>This process's resident memory from <c>/proc/self/status</c> (Linux), in KiB.</summary>
internal static class ProcessMemory
{
    /// <summary>Resets the peak resident memory (VmHWM) to the current size ("5" to /proc/self/clear_refs); false when refused.</summary>
    public static bool ResetPeak()
    {
        try { File.WriteAllText("/proc/self/clear_refs", "5"); return true; }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException) { return false; }
    }

    /// <summary>Peak resident memory since start or the last <see cref="ResetPeak"/> (VmHWM).</summary>
    public static long PeakRssKb() => Field("VmHWM:");

    /// <summary>Current resident memory (VmRSS).</summary>
    public static long RssKb() => Field("VmRSS:");

    private static long Field(string field)
    {
        foreach (var line in File.ReadLines("/proc/self/status"))
            if (line.StartsWith(field, StringComparison.Ordinal))
                return long.Parse(line.Split(' ', StringSplitOptions.RemoveEmptyEntries)[1]);
        return 0;
    }
}
