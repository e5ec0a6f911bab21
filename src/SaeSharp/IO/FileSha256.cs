using System.Security.Cryptography;
using System.Text.Json;
using System.Text.Json.Nodes;

namespace SaeSharp.IO;

/// <summary>
/// SHA-256 of files' contents, remembered in a JSON file (<c>{"format": 1, "files": {path: {size, mtime, sha256}}}</c>) so
/// that a file whose size and mtime are unchanged is not read again. A file in a Hugging Face cache (a link to
/// <c>blobs/{64 hex digits}</c>, the name the hub gives a large file: its SHA-256) is taken by that name, unread.
/// </summary>
public sealed class FileSha256
{
    private readonly string? _store;
    private readonly Dictionary<string, (long Size, string Mtime, string Sha256)> _known = new(StringComparer.Ordinal);
    private bool _changed;
    private static readonly JsonSerializerOptions Indented = new() { WriteIndented = true };

    /// <summary>Hashes remembered in <paramref name="store"/> (read now when it exists and is readable: an unreadable one
    /// is only a lost memo and is rewritten by <see cref="Save"/>); null: remembered in this object only.</summary>
    public FileSha256(string? store)
    {
        _store = store;
        if (store is null || !File.Exists(store)) return;
        try
        {
            if (JsonNode.Parse(File.ReadAllText(store)) is not JsonObject { } root || root["format"]?.GetValue<int>() != 1 || root["files"] is not JsonObject files)
                return;
            foreach (var (path, v) in files)
                if (v is JsonObject o && o["size"]?.GetValue<long>() is long size && o["mtime"]?.GetValue<string>() is string mtime
                    && o["sha256"]?.GetValue<string>() is string sha && IsSha256(sha))
                    _known[path] = (size, mtime, sha);
        }
        catch (Exception e) when (e is JsonException or InvalidOperationException or FormatException or IOException) { _known.Clear(); }
    }

    /// <summary>The SHA-256 (lower-case hex) of <paramref name="file"/>'s contents, after links.</summary>
    public string Of(FileInfo file)
    {
        ArgumentNullException.ThrowIfNull(file);
        var target = file.LinkTarget is null ? file : file.ResolveLinkTarget(true) as FileInfo ?? file;
        if (target.Directory?.Name == "blobs" && IsSha256(target.Name)) return target.Name;
        string path = target.FullName, mtime = target.LastWriteTimeUtc.ToString("O");
        if (_known.TryGetValue(path, out var k) && k.Size == target.Length && k.Mtime == mtime) return k.Sha256;
        string sha;
        using (var s = new FileStream(path, FileMode.Open, FileAccess.Read, FileShare.Read, 1 << 20))
            sha = Convert.ToHexStringLower(SHA256.HashData(s));
        _known[path] = (target.Length, mtime, sha);
        _changed = true;
        return sha;
    }

    /// <summary>Writes the remembered hashes to the store (through a temporary file) when any was computed; its folder
    /// must exist.</summary>
    public void Save()
    {
        if (_store is null || !_changed) return;
        var files = new JsonObject();
        foreach (var (path, (size, mtime, sha)) in _known.OrderBy(kv => kv.Key, StringComparer.Ordinal))
            files[path] = new JsonObject { ["size"] = size, ["mtime"] = mtime, ["sha256"] = sha };
        AtomicFile.WriteAllText(_store, new JsonObject { ["format"] = 1, ["files"] = files }.ToJsonString(Indented));
        _changed = false;
    }

    private static bool IsSha256(string s) => s.Length == 64 && s.All(c => c is >= '0' and <= '9' or >= 'a' and <= 'f');
}
