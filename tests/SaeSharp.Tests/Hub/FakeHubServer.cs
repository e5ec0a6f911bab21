using System.Collections.Concurrent;
using System.Net;
using System.Net.Sockets;
using System.Security.Cryptography;
using System.Text;

namespace SaeSharp.Tests.Hub;

/// <summary>
/// A tiny HTTP/1.1 server on 127.0.0.1 (random free port) that answers like huggingface.co's
/// <c>/{repo}/resolve/{revision}/{file}</c>: X-Repo-Commit, ETag (git-style, quoted) for small files;
/// a 302 to <c>/cdn/{sha256}</c> with X-Linked-Etag / X-Linked-Size for "LFS" files; 404 with X-Error-Code;
/// Range requests (206) on downloads. Records every request.
/// </summary>
public sealed class FakeHubServer : IDisposable
{
    public sealed record FakeFile(byte[] Content, bool Lfs = false, long? AnnouncedSize = null);
    public sealed record Request(string Method, string Path, string? Range, string? Authorization, long BodyBytesSent, string RawPath = "");

    private readonly TcpListener _listener;
    private readonly CancellationTokenSource _stop = new();
    private readonly Task _loop;

    public FakeHubServer()
    {
        _listener = new TcpListener(IPAddress.Loopback, 0);
        _listener.Start();
        _loop = Task.Run(AcceptLoop);
    }

    public string Endpoint => $"http://127.0.0.1:{((IPEndPoint)_listener.LocalEndpoint).Port}";
    public string Commit { get; set; } = "0123456789abcdef0123456789abcdef01234567";

    /// <summary>Repo id -> file path -> file.</summary>
    public ConcurrentDictionary<string, Dictionary<string, FakeFile>> Repos { get; } = new();

    /// <summary>Dataset repo id -> file path -> file (served under <c>/datasets/</c> and <c>/api/datasets/</c>).</summary>
    public ConcurrentDictionary<string, Dictionary<string, FakeFile>> DatasetRepos { get; } = new();

    /// <summary>Entries per page of the tree API (<c>Link: rel="next"</c> beyond).</summary>
    public int TreePageSize { get; set; } = 1000;

    public ConcurrentQueue<Request> Requests { get; } = new();

    /// <summary>A hostile or broken server: when it returns a response for (method, path), that is sent instead of the normal one.</summary>
    public Func<string, string, (int Status, Dictionary<string, string> Headers, byte[] Body)?>? Intercept { get; set; }

    /// <summary>Answer Range requests with the whole file (200), as some proxies do.</summary>
    public bool IgnoreRange { get; set; }

    /// <summary>When set, GET bodies stop after this many bytes and the connection closes (a dropped download).</summary>
    public int? CutBodyAfter { get; set; }

    public static string Sha256(byte[] b) => Convert.ToHexStringLower(SHA256.HashData(b));
    public static string GitEtag(byte[] b) => Convert.ToHexStringLower(SHA1.HashData(b));

    private async Task AcceptLoop()
    {
        while (!_stop.IsCancellationRequested)
        {
            TcpClient client;
            try { client = await _listener.AcceptTcpClientAsync(_stop.Token); }
            catch { return; }
            _ = Task.Run(() => Handle(client));
        }
    }

    private async Task Handle(TcpClient client)
    {
        using var _ = client;
        var stream = client.GetStream();
        var reader = new StreamReader(stream, Encoding.ASCII, false, 1024, leaveOpen: true);
        string? requestLine = await reader.ReadLineAsync();
        if (requestLine is null) return;
        var headers = new Dictionary<string, string>(StringComparer.OrdinalIgnoreCase);
        string? line;
        while (!string.IsNullOrEmpty(line = await reader.ReadLineAsync()))
        {
            int colon = line.IndexOf(':');
            if (colon > 0) headers[line[..colon].Trim()] = line[(colon + 1)..].Trim();
        }
        var parts = requestLine.Split(' ');
        string method = parts[0], path = Uri.UnescapeDataString(parts[1]);
        headers.TryGetValue("Range", out var range);
        headers.TryGetValue("Authorization", out var auth);

        var (status, responseHeaders, body) = Intercept?.Invoke(method, path) ?? Route(method, path, range);
        bool head = method == "HEAD";
        var sb = new StringBuilder();
        sb.Append($"HTTP/1.1 {status} {(status switch { 200 => "OK", 206 => "Partial Content", 302 => "Found", 404 => "Not Found", _ => "Error" })}\r\n");
        foreach (var (k, v) in responseHeaders) sb.Append($"{k}: {v}\r\n");
        if (!responseHeaders.ContainsKey("Content-Length")) sb.Append($"Content-Length: {body.Length}\r\n");
        sb.Append("Connection: close\r\n\r\n");
        byte[] sent = !head && CutBodyAfter is int cut && cut < body.Length ? body[..cut] : body;
        Requests.Enqueue(new Request(method, path, range, auth, head ? 0 : sent.Length, parts[1]));
        await stream.WriteAsync(Encoding.ASCII.GetBytes(sb.ToString()));
        if (!head) await stream.WriteAsync(sent);
        await stream.FlushAsync();
    }

    private (int, Dictionary<string, string>, byte[]) Route(string method, string path, string? range)
    {
        var h = new Dictionary<string, string>();
        if (path.StartsWith("/cdn/"))
        {
            string sha = path["/cdn/".Length..];
            var file = Repos.Values.Concat(DatasetRepos.Values).SelectMany(r => r.Values).FirstOrDefault(f => f.Lfs && Sha256(f.Content) == sha);
            if (file is null) return (404, h, []);
            return Serve(file.Content, range, h);
        }
        string query = "";
        int q = path.IndexOf('?');
        if (q >= 0) (path, query) = (path[..q], path[(q + 1)..]);
        if (path.StartsWith("/api/")) return Tree(path, query, h);
        var repos = Repos;
        if (path.StartsWith("/datasets/")) (path, repos) = (path["/datasets".Length..], DatasetRepos);
        // /{org}/{name}/resolve/{revision}/{file...}
        var seg = path.TrimStart('/').Split('/');
        if (seg.Length < 5 || seg[2] != "resolve") return (404, h, []);
        string repo = seg[0] + "/" + seg[1], revision = seg[3], filename = string.Join('/', seg[4..]);
        if (!repos.TryGetValue(repo, out var files))
        {
            h["X-Error-Code"] = "RepoNotFound";
            return (404, h, Encoding.UTF8.GetBytes("Repository not found"));
        }
        if (revision != "main" && revision != Commit)
        {
            h["X-Error-Code"] = "RevisionNotFound";
            return (404, h, Encoding.UTF8.GetBytes("Revision not found"));
        }
        h["X-Repo-Commit"] = Commit;
        if (!files.TryGetValue(filename, out var f))
        {
            h["X-Error-Code"] = "EntryNotFound";
            return (404, h, Encoding.UTF8.GetBytes("Entry not found"));
        }
        if (f.Lfs)
        {
            string sha = Sha256(f.Content);
            h["ETag"] = "\"" + GitEtag(Encoding.UTF8.GetBytes("pointer " + sha)) + "\"";
            h["X-Linked-Etag"] = "\"" + sha + "\"";
            h["X-Linked-Size"] = (f.AnnouncedSize ?? f.Content.Length).ToString();
            h["Location"] = $"{Endpoint}/cdn/{sha}";
            return (302, h, []);
        }
        h["ETag"] = "\"" + GitEtag(f.Content) + "\"";
        return Serve(f.Content, range, h);
    }

    /// <summary><c>/api/{models|datasets}/{org}/{name}/tree/{revision}[/{folder}]?recursive=true[&amp;cursor=N]</c>: the
    /// files under the folder (and its sub-folders' directory entries) as the hub's JSON list, paged by <see cref="TreePageSize"/>.</summary>
    private (int, Dictionary<string, string>, byte[]) Tree(string path, string query, Dictionary<string, string> h)
    {
        var seg = path.TrimStart('/').Split('/');
        if (seg.Length < 6 || seg[4] != "tree" || seg[1] is not ("models" or "datasets")) return (404, h, []);
        var repos = seg[1] == "datasets" ? DatasetRepos : Repos;
        string repo = seg[2] + "/" + seg[3], revision = seg[5], folder = string.Join('/', seg[6..]);
        if (!repos.TryGetValue(repo, out var files))
        {
            h["X-Error-Code"] = "RepoNotFound";
            return (404, h, Encoding.UTF8.GetBytes("{\"error\":\"Repository not found\"}"));
        }
        if (revision != "main" && revision != Commit)
        {
            h["X-Error-Code"] = "RevisionNotFound";
            return (404, h, []);
        }
        string prefix = folder.Length == 0 ? "" : folder + "/";
        var entries = new List<string>();
        var dirs = new SortedSet<string>(StringComparer.Ordinal);
        foreach (var (name, f) in files.OrderBy(kv => kv.Key, StringComparer.Ordinal))
        {
            if (!name.StartsWith(prefix, StringComparison.Ordinal)) continue;
            var parts = name.Split('/');
            for (int i = prefix.Count(c => c == '/') + 1; i < parts.Length; i++) dirs.Add(string.Join('/', parts[..i]));
            entries.Add($"{{\"type\":\"file\",\"oid\":\"{GitEtag(f.Content)}\",\"size\":{f.Content.Length},\"path\":{System.Text.Json.JsonSerializer.Serialize(name)}}}");
        }
        if (entries.Count == 0 && folder.Length > 0)
        {
            h["X-Error-Code"] = "EntryNotFound";
            return (404, h, []);
        }
        entries.InsertRange(0, dirs.Select(d => $"{{\"type\":\"directory\",\"oid\":\"0\",\"size\":0,\"path\":{System.Text.Json.JsonSerializer.Serialize(d)}}}"));
        int start = 0;
        foreach (var kv in query.Split('&'))
            if (kv.StartsWith("cursor=")) start = int.Parse(kv["cursor=".Length..]);
        var page = entries.Skip(start).Take(TreePageSize).ToList();
        if (start + TreePageSize < entries.Count)
            h["Link"] = $"<{Endpoint}{path}?recursive=true&expand=false&cursor={start + TreePageSize}>; rel=\"next\"";
        h["Content-Type"] = "application/json";
        return (200, h, Encoding.UTF8.GetBytes("[" + string.Join(",", page) + "]"));
    }

    private (int, Dictionary<string, string>, byte[]) Serve(byte[] content, string? range, Dictionary<string, string> h)
    {
        h["Accept-Ranges"] = "bytes";
        if (range is not null && !IgnoreRange && range.StartsWith("bytes=") && range.EndsWith('-'))
        {
            long start = long.Parse(range["bytes=".Length..^1]);
            if (start >= content.Length)
            {
                h["Content-Range"] = $"bytes */{content.Length}";
                return (416, h, []);
            }
            h["Content-Range"] = $"bytes {start}-{content.Length - 1}/{content.Length}";
            return (206, h, content[(int)start..]);
        }
        return (200, h, content);
    }

    public void Dispose()
    {
        _stop.Cancel();
        _listener.Stop();
        try { _loop.Wait(TimeSpan.FromSeconds(2)); } catch { /* stopped */ }
        _stop.Dispose();
    }
}
