using System.Globalization;

namespace SaeSharp;

/// <summary>The memory this process can still take: what an up-front bound (e.g. <c>sae lm train</c>'s) compares its estimate with.</summary>
public static class HostMemory
{
    /// <summary>Bytes available now: Linux's <c>MemAvailable</c> (/proc/meminfo), capped by the .NET runtime's view
    /// (<see cref="GCMemoryInfo.TotalAvailableMemoryBytes"/>: the container's limit, else the machine's memory), which is
    /// all there is elsewhere.</summary>
    public static long AvailableBytes()
    {
        long total = GC.GetGCMemoryInfo().TotalAvailableMemoryBytes;
        return MemAvailable("/proc/meminfo") is long available ? Math.Min(available, total) : total;
    }

    /// <summary>The <c>MemAvailable:</c> line of a /proc/meminfo file in bytes, or null when the file or the line is missing.</summary>
    internal static long? MemAvailable(string path)
    {
        if (!File.Exists(path)) return null;
        foreach (string line in File.ReadLines(path))
        {
            if (!line.StartsWith("MemAvailable:", StringComparison.Ordinal)) continue;
            var parts = line["MemAvailable:".Length..].Split(' ', StringSplitOptions.RemoveEmptyEntries);
            return parts is [var n, "kB"] && long.TryParse(n, NumberStyles.None, CultureInfo.InvariantCulture, out long kb) ? kb * 1024 : null;
        }
        return null;
    }

    /// <summary>A byte count for a message: <c>512 MB</c>, <c>3.2 GB</c>, <c>48 TB</c> (powers of 1000).</summary>
    public static string Format(double bytes)
    {
        string[] units = ["B", "kB", "MB", "GB", "TB", "PB"];
        int u = 0;
        while (bytes >= 1000 && u < units.Length - 1) { bytes /= 1000; u++; }
        return string.Create(CultureInfo.InvariantCulture, $"{(bytes < 10 && u > 0 ? bytes.ToString("0.0", CultureInfo.InvariantCulture) : bytes.ToString("0", CultureInfo.InvariantCulture))} {units[u]}");
    }
}
