namespace SaeSharp.IO;

/// <summary>Writes files through a temporary sibling renamed into place, so a crash, kill or full disk never
/// leaves a half-written file where a complete one stood.</summary>
public static class AtomicFile
{
    /// <summary>Test seam: wraps the stream each write goes to (e.g. to fail as a full disk would), for the calls made
    /// on this async flow only.</summary>
    internal static readonly AsyncLocal<Func<string, Stream, Stream>?> StreamWrapper = new();

    /// <summary>Writes <paramref name="path"/> atomically; an I/O failure leaves the previous file unchanged and is
    /// reported as a <see cref="SaeSharpException"/> naming the file.</summary>
    public static void Write(string path, Action<Stream> write)
    {
        using var group = new AtomicFileGroup();
        group.Write(path, write);
        group.Commit();
    }

    /// <summary>Writes <paramref name="text"/> as UTF-8 (no BOM) to <paramref name="path"/> atomically.</summary>
    public static void WriteAllText(string path, string text) =>
        Write(path, s => { var bytes = System.Text.Encoding.UTF8.GetBytes(text); s.Write(bytes); });

    /// <summary>Deletes the temporary siblings (<c>.NAME.PID.GUID.tmp</c>) in <paramref name="dir"/> whose writing process
    /// is no longer running: a kill -9 or Ctrl-C during a write leaves them, and a big one (a cache shard, SAE weights)
    /// would otherwise stay on disk for good. Those of running processes, this one included, are kept. Returns how many
    /// were deleted.</summary>
    public static int RemoveAbandonedTemporaries(string dir)
    {
        if (!Directory.Exists(dir)) return 0;
        int removed = 0;
        foreach (var path in Directory.EnumerateFiles(dir, ".*.tmp"))
        {
            var parts = Path.GetFileName(path).Split('.');
            // "", NAME..., PID, GUID, "tmp"
            if (parts.Length < 5 || parts[^2].Length != 32 || !int.TryParse(parts[^3], out int pid)) continue;
            if (pid == Environment.ProcessId || IsRunning(pid)) continue;
            try { File.Delete(path); removed++; } catch (IOException) { }
        }
        return removed;
    }

    private static bool IsRunning(int pid)
    {
        try
        {
            using var p = System.Diagnostics.Process.GetProcessById(pid);
            return !p.HasExited;
        }
        catch (ArgumentException) { return false; }
        catch (InvalidOperationException) { return false; }
    }

    private static readonly System.Collections.Concurrent.ConcurrentDictionary<string, bool> Swept = new(StringComparer.Ordinal);

    /// <summary>The name of a new temporary sibling of <paramref name="fullPath"/> (<c>.NAME.PID.GUID.tmp</c>), its folder
    /// created; the first one in a folder in this process first removes the temporaries dead processes left there
    /// (<see cref="RemoveAbandonedTemporaries"/>), so every command that writes a folder again cleans it.</summary>
    internal static string TemporaryFor(string fullPath)
    {
        var dir = Path.GetDirectoryName(fullPath)!;
        Directory.CreateDirectory(dir);
        if (Swept.TryAdd(dir, true)) RemoveAbandonedTemporaries(dir);
        return Path.Combine(dir, $".{Path.GetFileName(fullPath)}.{Environment.ProcessId}.{Guid.NewGuid():N}.tmp");
    }

    /// <summary>Writes the temporary sibling of <paramref name="path"/> and returns its name (flushed to disk); a path that
    /// is a folder, or whose folder cannot be created (a file on its path), is a <see cref="SaeSharpException"/> naming it.</summary>
    internal static string WriteTemporary(string path, Action<Stream> write)
    {
        var full = Path.GetFullPath(path);
        if (Directory.Exists(full)) throw new SaeSharpException($"{full}: is a folder, not a file; nothing was written");
        string tmp;
        try { tmp = TemporaryFor(full); }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            throw new SaeSharpException($"{full}: could not create its folder ({e.Message}); nothing was written", e);
        }
        try
        {
            using (var file = new FileStream(tmp, FileMode.CreateNew, FileAccess.Write, FileShare.None, 1 << 20))
            {
                var stream = StreamWrapper.Value?.Invoke(full, file) ?? file;
                write(stream);
                stream.Flush();
                file.Flush(flushToDisk: true);
            }
            return tmp;
        }
        catch (Exception e)
        {
            try { File.Delete(tmp); } catch (IOException) { }
            if (e is IOException io) throw new SaeSharpException($"{full}: could not write ({io.Message}); the previous file is unchanged", io);
            throw;
        }
    }
}

/// <summary>Several files replaced together: each is written to a temporary sibling, and only when all are written
/// does <see cref="Commit"/> rename them into place, so a failure part-way (a full disk) leaves every previous file
/// as it was. Disposing without committing deletes the temporaries.</summary>
public sealed class AtomicFileGroup : IDisposable
{
    private readonly List<(string Temporary, string Path)> _pending = [];

    /// <summary>Writes the content of <paramref name="path"/> to its temporary sibling.</summary>
    public void Write(string path, Action<Stream> write) =>
        _pending.Add((AtomicFile.WriteTemporary(path, write), Path.GetFullPath(path)));

    /// <inheritdoc cref="Write"/>
    public void WriteAllText(string path, string text) =>
        Write(path, s => { var bytes = System.Text.Encoding.UTF8.GetBytes(text); s.Write(bytes); });

    /// <summary>Renames every written file into place.</summary>
    public void Commit()
    {
        foreach (var (tmp, path) in _pending) File.Move(tmp, path, overwrite: true);
        _pending.Clear();
    }

    /// <summary>Deletes the temporaries of files written but not committed (the targets stay as they were).</summary>
    public void Dispose()
    {
        foreach (var (tmp, _) in _pending)
        {
            try { File.Delete(tmp); } catch (IOException) { }
        }
        _pending.Clear();
    }
}
