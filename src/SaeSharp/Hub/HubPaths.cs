using System.Text.RegularExpressions;

namespace SaeSharp.Hub;

/// <summary>
/// Checks on every path part that comes from a user (repo id, revision, file name) or a server (commit, ETag)
/// before it becomes part of a cache path, and the resolve-and-compare test that keeps every write under the
/// cache root.
/// </summary>
internal static class HubPaths
{
    private static readonly Regex RepoIdPattern =
        new(@"^[A-Za-z0-9][A-Za-z0-9._-]*(/[A-Za-z0-9][A-Za-z0-9._-]*)?$", RegexOptions.CultureInvariant);
    private static readonly Regex EtagPattern = new("^[A-Za-z0-9_-][A-Za-z0-9._-]{0,127}$", RegexOptions.CultureInvariant);

    /// <summary>"org/name" or "name" (the hub's own rule), with no "..".</summary>
    public static bool IsRepoId(string id) => id.Length <= 200 && RepoIdPattern.IsMatch(id) && !id.Contains("..");

    /// <summary>A relative '/'-separated path with no empty, "." or ".." parts, no backslash and no control characters.</summary>
    public static bool IsRelativePath(string path) =>
        path.Length is > 0 and <= 1000 && !path.Any(c => char.IsControl(c) || c == '\\')
        && path.Split('/').All(p => p is not ("" or "." or ".."));

    /// <summary>A branch, tag, "refs/pr/N" or commit: the same rule as a relative path (it becomes refs/{revision}).</summary>
    public static bool IsRevision(string revision) => revision.Length <= 255 && IsRelativePath(revision);

    /// <summary>A normalised ETag that can name a blob file: letters, digits, '.', '_', '-', not starting with '.'.</summary>
    public static bool IsEtag(string etag) => EtagPattern.IsMatch(etag);

    /// <summary>Same scheme, host and port: the only redirects that may carry the token.</summary>
    public static bool SameOrigin(Uri a, Uri b) =>
        string.Equals(a.Scheme, b.Scheme, StringComparison.OrdinalIgnoreCase)
        && string.Equals(a.IdnHost, b.IdnHost, StringComparison.OrdinalIgnoreCase)
        && a.Port == b.Port;

    /// <summary>
    /// <paramref name="path"/> made absolute, after checking that it and its existing ancestors, with symbolic links
    /// resolved, lie under <paramref name="root"/> (also resolved); otherwise a <see cref="SaeSharpException"/>.
    /// </summary>
    public static string Inside(string root, string path)
    {
        string full = Path.GetFullPath(path);
        string realRoot = RealPath(Path.GetFullPath(root));
        string real = RealPath(full);
        if (!IsUnder(Path.GetFullPath(root), full))
            throw new SaeSharpException($"refusing to write '{Printable(path)}': it is outside the hub cache {root}");
        if (!IsUnder(realRoot, real))
            throw new SaeSharpException($"refusing to write '{Printable(path)}': a link in the hub cache leads outside it to '{real}'");
        return full;
    }

    private static bool IsUnder(string root, string path)
    {
        string r = Path.TrimEndingDirectorySeparator(root);
        return path.Length > r.Length && path.StartsWith(r, StringComparison.Ordinal) && path[r.Length] == Path.DirectorySeparatorChar;
    }

    /// <summary>The path with every existing symbolic link among its parts resolved (parts that do not exist yet kept as they are).</summary>
    private static string RealPath(string full)
    {
        string current = Path.GetPathRoot(full)!;
        var parts = full[current.Length..].Split(Path.DirectorySeparatorChar, StringSplitOptions.RemoveEmptyEntries);
        for (int i = 0; i < parts.Length; i++)
        {
            string next = Path.Combine(current, parts[i]);
            FileSystemInfo info = Directory.Exists(next) ? new DirectoryInfo(next) : new FileInfo(next);
            if (info.LinkTarget is not null)
            {
                var target = info.ResolveLinkTarget(returnFinalTarget: true);
                next = target is null ? next : Path.GetFullPath(target.FullName);
            }
            current = next;
        }
        return current;
    }

    /// <summary>A server-supplied string shortened and stripped of control characters for an error message.</summary>
    public static string Printable(string s)
    {
        var t = new string(s.Take(80).Select(c => char.IsControl(c) ? '?' : c).ToArray());
        return s.Length > 80 ? t + "…" : t;
    }
}
