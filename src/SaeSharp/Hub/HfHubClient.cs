using System.Net;
using System.Net.Http.Headers;
using System.Text.Json;
using System.Text.RegularExpressions;

namespace SaeSharp.Hub;

/// <summary>
/// Downloads model files from the Hugging Face Hub into the same cache layout as huggingface_hub
/// (<c>file_download.py</c>), so both share one cache:
/// <c>{cache}/models--{org}--{name}/blobs/{etag}</c> (the file contents, named by the normalised
/// <c>X-Linked-Etag</c> or <c>ETag</c>), <c>snapshots/{commit}/{file}</c> (relative symlinks to the blobs, copies where
/// symlinks fail), <c>refs/{revision}</c> (the commit from <c>X-Repo-Commit</c>) and
/// <c>.no_exist/{commit}/{file}</c> (files known to be missing). A file already in the snapshot of the cached
/// ref is used without any request; an interrupted download resumes from <c>blobs/{etag}.incomplete</c> with an
/// HTTP Range request. No cross-process lock is taken.
/// </summary>
public sealed class HfHubClient : IDisposable
{
    private static readonly Regex CommitHash = new("^[0-9a-f]{40}$", RegexOptions.CultureInvariant);

    /// <summary>Files fetched by <see cref="Resolve"/> when none are named; all optional.</summary>
    public static readonly IReadOnlyList<string> TokenizerFiles =
        ["tokenizer.json", "vocab.json", "merges.txt", "tokenizer_config.json", "special_tokens_map.json"];

    /// <summary>The generation settings <c>save_pretrained</c> writes beside config.json (the EOS ids <c>generate</c> stops
    /// at); fetched with a model when the repo has it.</summary>
    public const string GenerationConfigFile = "generation_config.json";

    private readonly HfHubOptions _options;
    private readonly HttpClient _http;
    private readonly bool _ownsHttp;

    /// <summary>A client with the given options (default: <see cref="HfHubOptions.FromEnvironment()"/>).</summary>
    public HfHubClient(HfHubOptions? options = null)
        : this(options ?? HfHubOptions.FromEnvironment(), null) { }

    internal HfHubClient(HfHubOptions options, HttpMessageHandler? handler)
    {
        _options = options;
        handler ??= new SocketsHttpHandler { AllowAutoRedirect = false, AutomaticDecompression = DecompressionMethods.None };
        _http = new HttpClient(handler, disposeHandler: true) { Timeout = Timeout.InfiniteTimeSpan };
        _http.DefaultRequestHeaders.UserAgent.Add(new ProductInfoHeaderValue("SaeSharp", "1.0"));
        _ownsHttp = true;
    }

    /// <summary>The options in use.</summary>
    public HfHubOptions Options => _options;

    /// <summary>
    /// A folder with the model's files. An existing local folder is returned as is. Otherwise
    /// <paramref name="modelIdOrPath"/> is a repo id ("org/name"; a TransformerLens alias such as "gpt2-small" or
    /// "pythia-70m" stands for its repo, <see cref="TransformerLensNames"/>): with no <paramref name="files"/>, downloads
    /// <c>config.json</c>, the weights (<c>model.safetensors</c>, or <c>model.safetensors.index.json</c> and its
    /// shards), whichever tokenizer files exist (<see cref="TokenizerFiles"/>) and <see cref="GenerationConfigFile"/> if it does; with <paramref name="files"/>,
    /// exactly those (all required). Returns the snapshot folder <c>snapshots/{commit}</c>.
    /// </summary>
    public string Resolve(string modelIdOrPath, string revision = "main", params string[] files) =>
        ResolveAsync(modelIdOrPath, revision, files).GetAwaiter().GetResult();

    /// <inheritdoc cref="Resolve"/>
    /// <remarks>With no files, <c>checkConfig</c> is called with the downloaded <c>config.json</c> before the weights are
    /// fetched: it throws to stop the download of a model that could not be loaded anyway.</remarks>
    public async Task<string> ResolveAsync(string modelIdOrPath, string revision = "main",
        IReadOnlyList<string>? files = null, Action<string>? checkConfig = null, CancellationToken cancellationToken = default)
    {
        ArgumentException.ThrowIfNullOrEmpty(modelIdOrPath);
        ArgumentException.ThrowIfNullOrEmpty(revision);
        if (Directory.Exists(modelIdOrPath)) return Path.GetFullPath(modelIdOrPath);
        string repo = TransformerLensNames.OfficialName(modelIdOrPath) ?? modelIdOrPath;
        if (!HubPaths.IsRepoId(repo))
            throw new SaeSharpException($"'{modelIdOrPath}' is neither an existing folder nor a Hugging Face repo id like 'org/name'");

        string? snapshot = null;
        if (files is { Count: > 0 })
        {
            foreach (var f in files)
                snapshot = SnapshotOf(await DownloadFileAsync(repo, f, revision, optional: false, cancellationToken).ConfigureAwait(false), f);
            return snapshot!;
        }

        string config = (await DownloadFileAsync(repo, "config.json", revision, optional: false, cancellationToken).ConfigureAwait(false))!;
        snapshot = SnapshotOf(config, "config.json");
        checkConfig?.Invoke(config);
        // Offline (or with the hub unreachable), an optional file that is not cached counts as absent, as transformers
        // treats huggingface_hub's LocalEntryNotFoundError for optional files: `huggingface-cli download` leaves no
        // .no_exist markers, so a sharded model's model.safetensors or a repo's missing vocab.json is simply not there.
        var (single, singleUnavailable) = await TryOptionalAsync(repo, "model.safetensors", revision, cancellationToken).ConfigureAwait(false);
        if (single is null)
        {
            var (index, indexUnavailable) = await TryOptionalAsync(repo, "model.safetensors.index.json", revision, cancellationToken).ConfigureAwait(false);
            if (index is null)
                throw singleUnavailable ?? indexUnavailable ?? new SaeSharpException(
                    $"{repo} (revision {revision}) has neither model.safetensors nor model.safetensors.index.json");
            foreach (var shard in ShardsOf(index))
                await DownloadFileAsync(repo, shard, revision, optional: false, cancellationToken).ConfigureAwait(false);
        }
        foreach (var f in (string[])[.. TokenizerFiles, GenerationConfigFile])
            await TryOptionalAsync(repo, f, revision, cancellationToken).ConfigureAwait(false);
        return snapshot;
    }

    /// <summary>An optional file: its path, or null with the error when it is not cached and cannot be fetched (offline,
    /// or the hub unreachable), or null alone when the repo lacks it.</summary>
    private async Task<(string? Path, SaeSharpException? Unavailable)> TryOptionalAsync(string repo, string filename, string revision,
        CancellationToken cancellationToken)
    {
        try
        {
            return (await DownloadFileAsync(repo, filename, revision, optional: true, cancellationToken).ConfigureAwait(false), null);
        }
        catch (SaeSharpException e) when (e.Data.Contains(UnavailableKey))
        {
            return (null, e);
        }
    }

    private static string SnapshotOf(string? filePath, string relative)
    {
        string dir = filePath!;
        foreach (var _ in relative.Split('/')) dir = Path.GetDirectoryName(dir)!;
        return dir;
    }

    private static JsonDocument ParseJson(string path)
    {
        try
        {
            return JsonDocument.Parse(File.ReadAllText(path));
        }
        catch (JsonException e)
        {
            throw new SaeSharpException($"{path}: invalid JSON ({e.Message})", e);
        }
    }

    /// <summary>The distinct shard file names in a <c>model.safetensors.index.json</c> weight_map, in first-seen order.</summary>
    internal static List<string> ShardsOf(string indexPath)
    {
        using var doc = ParseJson(indexPath);
        if (doc.RootElement.ValueKind != JsonValueKind.Object
            || !doc.RootElement.TryGetProperty("weight_map", out var map) || map.ValueKind != JsonValueKind.Object)
            throw new SaeSharpException($"{indexPath}: missing object 'weight_map'");
        var shards = new List<string>();
        foreach (var p in map.EnumerateObject())
        {
            string shard = (p.Value.ValueKind == JsonValueKind.String ? p.Value.GetString() : null) ?? throw new SaeSharpException($"{indexPath}: weight_map['{p.Name}'] is not a file name");
            if (!HubPaths.IsRelativePath(shard))
                throw new SaeSharpException($"{indexPath}: weight_map['{p.Name}'] = '{shard}' is not a file inside the repo");
            if (!shards.Contains(shard)) shards.Add(shard);
        }
        return shards;
    }

    /// <summary>
    /// Path of one file of <paramref name="repoId"/> at <paramref name="revision"/> in the cache, downloading it if
    /// needed. A missing file (404) returns null when <paramref name="optional"/>, else throws naming repo, file and revision.
    /// </summary>
    public string? DownloadFile(string repoId, string filename, string revision = "main", bool optional = false) =>
        DownloadFileAsync(repoId, filename, revision, optional).GetAwaiter().GetResult();

    /// <summary>As <see cref="DownloadFile(string, string, string, bool)"/>, for a model or a dataset repo.</summary>
    public string? DownloadFile(string repoId, string filename, string revision, bool optional, HfRepoType repoType) =>
        DownloadFileAsync(repoId, filename, revision, optional, repoType).GetAwaiter().GetResult();

    /// <summary>A file that may be missing, looked up as SAELens looks up <c>sparsity.safetensors</c> (catching
    /// huggingface_hub's EntryNotFoundError, of which LocalEntryNotFoundError is a kind): null when the repo lacks it, and
    /// also when it is not cached and cannot be looked up (offline mode, or the hub unreachable).</summary>
    public string? TryDownloadFile(string repoId, string filename, string revision = "main") =>
        TryOptionalAsync(repoId, filename, revision, CancellationToken.None).GetAwaiter().GetResult().Path;

    /// <summary>Marks (in <see cref="Exception.Data"/>) the errors of a file that is not cached and cannot be fetched.</summary>
    private const string UnavailableKey = "SaeSharp.Hub.Unavailable";

    private static SaeSharpException Unavailable(string message, Exception? inner = null)
    {
        var e = inner is null ? new SaeSharpException(message) : new SaeSharpException(message, inner);
        e.Data[UnavailableKey] = true;
        return e;
    }

    /// <inheritdoc cref="DownloadFile(string, string, string, bool)"/>
    public Task<string?> DownloadFileAsync(string repoId, string filename, string revision = "main",
        bool optional = false, CancellationToken cancellationToken = default) =>
        DownloadFileAsync(repoId, filename, revision, optional, HfRepoType.Model, cancellationToken);

    /// <summary>As <see cref="DownloadFile(string, string, string, bool)"/>, for a model or a dataset repo (cached under
    /// <c>datasets--{org}--{name}</c>, fetched from <c>/datasets/{repo}/resolve/...</c>).</summary>
    public async Task<string?> DownloadFileAsync(string repoId, string filename, string revision, bool optional,
        HfRepoType repoType, CancellationToken cancellationToken = default)
    {
        if (!HubPaths.IsRelativePath(filename))
            throw new SaeSharpException($"'{filename}' is not a file path inside a repo");
        if (!HubPaths.IsRepoId(repoId))
            throw new SaeSharpException($"'{repoId}' is not a Hugging Face repo id like 'org/name'");
        if (!HubPaths.IsRevision(revision))
            throw new SaeSharpException($"'{revision}' is not a usable revision (a branch, tag or commit: no '..', empty parts, backslashes or control characters)");
        string storage = Storage(repoId, repoType);
        string relative = Path.Combine(filename.Split('/'));

        // 1. Cache only: the commit the ref points to, its snapshot file or a recorded absence.
        string? cachedCommit = CommitHash.IsMatch(revision) ? revision : ReadRef(storage, revision);
        if (cachedCommit is not null)
        {
            string pointer = HubPaths.Inside(storage, Path.Combine(storage, "snapshots", cachedCommit, relative));
            if (IsUsableFile(pointer)) return pointer;
            if (File.Exists(Path.Combine(storage, ".no_exist", cachedCommit, relative)))
                return optional ? null : throw NotFound(repoId, filename, revision, "EntryNotFound");
        }
        if (_options.Offline)
            throw Unavailable(OfflineMiss($"{repoId}/{filename} (revision {revision}) is not in the cache", storage,
                WhyNotCached(storage, revision, cachedCommit, relative), repoType, repoId, filename, revision));

        // 2. Metadata: commit, etag, size, final URL.
        string url = $"{_options.Endpoint.TrimEnd('/')}/{UrlPrefix(repoType)}{repoId}/resolve/{Uri.EscapeDataString(revision)}/"
                     + string.Join('/', filename.Split('/').Select(Uri.EscapeDataString));
        var meta = await HeadAsync(url, repoId, filename, revision, storage, relative, cancellationToken).ConfigureAwait(false);
        if (meta is null) return optional ? null : throw NotFound(repoId, filename, revision, "EntryNotFound");

        if (!CommitHash.IsMatch(revision)) WriteRef(storage, revision, meta.Commit);
        string blob = HubPaths.Inside(storage, Path.Combine(storage, "blobs", meta.Etag));
        string pointerPath = HubPaths.Inside(storage, Path.Combine(storage, "snapshots", meta.Commit, relative));
        Directory.CreateDirectory(Path.GetDirectoryName(blob)!);
        Directory.CreateDirectory(Path.GetDirectoryName(pointerPath)!);
        if (IsUsableFile(pointerPath)) return pointerPath;
        if (!File.Exists(blob))
            await DownloadBlobAsync(meta, blob, repoId, filename, revision, cancellationToken).ConfigureAwait(false);
        LinkPointer(blob, pointerPath);
        return pointerPath;
    }

    /// <summary>The offline error of something not cached: <paramref name="what"/>, the repo's cache folder and why
    /// (<see cref="WhyNotCached"/>), the <c>huggingface-cli download</c> line that fetches <paramref name="cliArgs"/>, and
    /// the environment variables that point at another cache.</summary>
    private static string OfflineMiss(string what, string storage, string why, HfRepoType repoType, string repoId, string cliArgs, string revision) =>
        $"{what} and offline mode is on (HF_HUB_OFFLINE): looked in {storage}{why}; download it once online (unset HF_HUB_OFFLINE, or "
        + $"`huggingface-cli download {(repoType == HfRepoType.Dataset ? "--repo-type dataset " : "")}{repoId}{(cliArgs.Length == 0 ? "" : " " + cliArgs)}"
        + $"{(revision == "main" ? "" : " --revision " + revision)}`), or set HF_HUB_CACHE (or HF_HOME) to the cache that holds it";

    /// <summary>Why a file is not in the cache, for the offline error: the repo folder, the ref, the snapshot folder or the
    /// file missing, and any partial downloads (<c>blobs/*.incomplete</c>) left by an interrupted download.</summary>
    private static string WhyNotCached(string storage, string revision, string? commit, string relative)
    {
        if (!Directory.Exists(storage)) return " (no such folder: nothing of this repo is cached)";
        string partial = Directory.Exists(Path.Combine(storage, "blobs"))
            && Directory.GetFiles(Path.Combine(storage, "blobs"), "*.incomplete").Length is int n and > 0
            ? $"; {n} interrupted download{(n == 1 ? "" : "s")} (blobs/*.incomplete) resume when online"
            : "";
        if (commit is null)
            return CommitHash.IsMatch(revision) || File.Exists(Path.Combine(storage, "refs", revision))
                ? $" (refs/{revision} does not hold a commit hash{partial})"
                : $" (no refs/{revision}: revision {revision} was never downloaded{partial})";
        string snapshot = Path.Combine(storage, "snapshots", commit);
        if (!Directory.Exists(snapshot))
            return $" ({(CommitHash.IsMatch(revision) ? "" : $"refs/{revision} points at commit {commit}, which has ")}no snapshots/{commit} folder{partial})";
        string pointer = Path.Combine(snapshot, relative);
        return new FileInfo(pointer).LinkTarget is { } target
            ? $" (snapshots/{commit}/{relative.Replace(Path.DirectorySeparatorChar, '/')} links to {target}, which is missing{partial})"
            : $" (snapshots/{commit} has no {relative.Replace(Path.DirectorySeparatorChar, '/')}{partial})";
    }

    /// <summary>The cache folder of a repo: <c>{cache}/models--org--name</c> or <c>{cache}/datasets--org--name</c>.</summary>
    private string Storage(string repoId, HfRepoType repoType) =>
        HubPaths.Inside(_options.CacheDir, Path.Combine(_options.CacheDir,
            (repoType == HfRepoType.Dataset ? "datasets--" : "models--") + repoId.Replace("/", "--")));

    private static string UrlPrefix(HfRepoType repoType) => repoType == HfRepoType.Dataset ? "datasets/" : "";

    /// <summary>Whether the last <see cref="ListFiles"/> answered from the cached snapshot because the hub could not be reached
    /// (not in offline mode): what it lacks, the repo may hold.</summary>
    public bool LastListingFromUnreachableHub { get; private set; }

    /// <summary>
    /// The files of <paramref name="repoId"/> at <paramref name="revision"/> under <paramref name="folder"/> (the whole
    /// repo when null), recursively, from the hub's tree API (<c>/api/models|datasets/{repo}/tree/{revision}/{folder}</c>,
    /// following its <c>Link: rel="next"</c> pages). Offline, or when the hub cannot be reached, the files of the cached
    /// snapshot of the revision are listed instead (when there is one).
    /// </summary>
    public IReadOnlyList<HfRepoFile> ListFiles(string repoId, string revision = "main", string? folder = null,
        HfRepoType repoType = HfRepoType.Model) =>
        ListFilesAsync(repoId, revision, folder, repoType).GetAwaiter().GetResult();

    /// <inheritdoc cref="ListFiles"/>
    public async Task<IReadOnlyList<HfRepoFile>> ListFilesAsync(string repoId, string revision = "main", string? folder = null,
        HfRepoType repoType = HfRepoType.Model, CancellationToken cancellationToken = default)
    {
        if (!HubPaths.IsRepoId(repoId))
            throw new SaeSharpException($"'{repoId}' is not a Hugging Face repo id like 'org/name'");
        if (!HubPaths.IsRevision(revision))
            throw new SaeSharpException($"'{revision}' is not a usable revision (a branch, tag or commit: no '..', empty parts, backslashes or control characters)");
        folder = string.IsNullOrEmpty(folder) ? null : folder.Trim('/');
        if (folder is not null && !HubPaths.IsRelativePath(folder))
            throw new SaeSharpException($"'{folder}' is not a folder path inside a repo");
        string what = $"{(repoType == HfRepoType.Dataset ? "dataset " : "")}{repoId}{(folder is null ? "" : "/" + folder)} (revision {revision})";
        LastListingFromUnreachableHub = false;
        if (_options.Offline)
        {
            string storage = Storage(repoId, repoType);
            return CachedListing(repoId, revision, folder, repoType)
                   ?? throw Unavailable(OfflineMiss($"cannot list {what}: no snapshot of it is in the cache", storage,
                       WhyNotCached(storage, revision, CommitHash.IsMatch(revision) ? revision : ReadRef(storage, revision),
                           folder is null ? "" : Path.Combine(folder.Split('/'))),
                       repoType, repoId, folder is null ? "" : $"--include \"{folder}/*\"", revision)
                   + (repoType == HfRepoType.Dataset && folder is null
                       ? "; of a large dataset a few data files are enough (`--include` their names: SaeSharp reads a split's files in name order and stops at --tokens)"
                       : ""));
        }

        var files = new List<HfRepoFile>();
        var uri = new Uri($"{_options.Endpoint.TrimEnd('/')}/api/{(repoType == HfRepoType.Dataset ? "datasets" : "models")}/{repoId}/tree/"
                          + Uri.EscapeDataString(revision)
                          + (folder is null ? "" : "/" + string.Join('/', folder.Split('/').Select(Uri.EscapeDataString)))
                          + "?recursive=true&expand=false");
        var origin = uri;
        for (int page = 0; ; page++)
        {
            if (page >= 10_000) throw new SaeSharpException($"listing {what}: the hub sent more than 10000 pages");
            using var request = new HttpRequestMessage(HttpMethod.Get, uri);
            AddAuth(request);
            using var cts = CancellationTokenSource.CreateLinkedTokenSource(cancellationToken);
            cts.CancelAfter(_options.MetadataTimeout);
            HttpResponseMessage response;
            try
            {
                response = await _http.SendAsync(request, HttpCompletionOption.ResponseHeadersRead, cts.Token).ConfigureAwait(false);
            }
            catch (Exception e) when (e is HttpRequestException or TaskCanceledException && !cancellationToken.IsCancellationRequested)
            {
                var cached = CachedListing(repoId, revision, folder, repoType)
                             ?? throw new SaeSharpException($"cannot reach {uri} to list {what}: {e.Message}", e);
                LastListingFromUnreachableHub = true;
                return cached;
            }
            using (response)
            {
                int status = (int)response.StatusCode;
                if (status is 401 or 403 or 404)
                {
                    string code = Header(response, "X-Error-Code") ?? (status == 404 ? "EntryNotFound" : "RepoNotFound");
                    throw code switch
                    {
                        "RepoNotFound" or "GatedRepo" => new SaeSharpException(
                            $"{(repoType == HfRepoType.Dataset ? "dataset" : "repository")} '{repoId}' not found or not accessible (HTTP {status}); check the name, or set HF_TOKEN for private/gated repos"),
                        "RevisionNotFound" => new SaeSharpException($"revision '{revision}' not found in '{repoId}'"),
                        _ => new SaeSharpException($"folder '{folder}' not found in '{repoId}' at revision '{revision}'"),
                    };
                }
                if (!response.IsSuccessStatusCode)
                    throw new SaeSharpException($"listing {what}: GET {uri} returned {status} {response.ReasonPhrase}");
                string body = await ReadListingPage(response, what, cancellationToken).ConfigureAwait(false);
                ParseTree(body, files, what);
                var next = NextPage(response, uri);
                if (next is null) break;
                if (!HubPaths.SameOrigin(origin, next))
                    throw new SaeSharpException($"listing {what}: the hub's next page {HubPaths.Printable(next.ToString())} leaves {origin.GetLeftPart(UriPartial.Authority)}");
                uri = next;
            }
        }
        return files;
    }

    /// <summary>The most bytes one page of a tree listing may hold (the hub's pages of 1,000 entries take about 200 KB).</summary>
    internal const int MaxListingPageBytes = 16 << 20;

    /// <summary>A listing page's body as text, refusing one longer than <see cref="MaxListingPageBytes"/> (whatever its
    /// Content-Length says) before it is all in memory.</summary>
    private static async Task<string> ReadListingPage(HttpResponseMessage response, string what, CancellationToken cancellationToken)
    {
        await using var stream = await response.Content.ReadAsStreamAsync(cancellationToken).ConfigureAwait(false);
        var buffer = new MemoryStream();
        var chunk = new byte[81920];
        int n;
        while ((n = await stream.ReadAsync(chunk, cancellationToken).ConfigureAwait(false)) > 0)
        {
            if (buffer.Length + n > MaxListingPageBytes)
                throw new SaeSharpException($"listing {what}: one page of the hub's answer is larger than {MaxListingPageBytes >> 20} MiB");
            buffer.Write(chunk, 0, n);
        }
        return System.Text.Encoding.UTF8.GetString(buffer.GetBuffer(), 0, (int)buffer.Length);
    }

    /// <summary>Adds the files of one page of the hub's tree listing (a JSON array of entries) to <paramref name="files"/>;
    /// every path must be a relative path inside the repo.</summary>
    internal static void ParseTree(string body, List<HfRepoFile> files, string what)
    {
        JsonDocument doc;
        try
        {
            doc = JsonDocument.Parse(body);
        }
        catch (JsonException e)
        {
            throw new SaeSharpException($"listing {what}: the hub sent invalid JSON ({e.Message})", e);
        }
        using (doc)
        {
            if (doc.RootElement.ValueKind != JsonValueKind.Array)
                throw new SaeSharpException($"listing {what}: expected a JSON array of entries, got {doc.RootElement.ValueKind}");
            foreach (var e in doc.RootElement.EnumerateArray())
            {
                if (e.ValueKind != JsonValueKind.Object
                    || !e.TryGetProperty("type", out var type) || type.ValueKind != JsonValueKind.String
                    || !e.TryGetProperty("path", out var p) || p.ValueKind != JsonValueKind.String)
                    throw new SaeSharpException($"listing {what}: an entry has no string 'type' and 'path'");
                if (type.GetString() != "file") continue;
                string path = p.GetString()!;
                if (!HubPaths.IsRelativePath(path))
                    throw new SaeSharpException($"listing {what}: '{HubPaths.Printable(path)}' is not a file path inside the repo");
                long size = e.TryGetProperty("size", out var sz) && sz.TryGetInt64(out long n) ? n : -1;
                files.Add(new HfRepoFile(path, size));
            }
        }
    }

    /// <summary>The <c>rel="next"</c> target of a <c>Link</c> header, or null.</summary>
    private static Uri? NextPage(HttpResponseMessage response, Uri current)
    {
        if (!response.Headers.TryGetValues("Link", out var links)) return null;
        foreach (var link in links.SelectMany(l => l.Split(',')))
        {
            var m = Regex.Match(link, @"<([^>]*)>\s*;\s*rel=""?next""?", RegexOptions.CultureInvariant);
            if (m.Success)
                return Uri.TryCreate(current, m.Groups[1].Value, out var next) ? next
                    : throw new SaeSharpException($"the hub's next page '{HubPaths.Printable(m.Groups[1].Value)}' is not a URL");
        }
        return null;
    }

    /// <summary>The files of the cached snapshot of <paramref name="revision"/> under <paramref name="folder"/>, or null
    /// when the revision has no cached snapshot.</summary>
    private List<HfRepoFile>? CachedListing(string repoId, string revision, string? folder, HfRepoType repoType)
    {
        string storage = Storage(repoId, repoType);
        string? commit = CommitHash.IsMatch(revision) ? revision : ReadRef(storage, revision);
        if (commit is null) return null;
        string snapshot = Path.Combine(storage, "snapshots", commit);
        string root = folder is null ? snapshot : Path.Combine(snapshot, Path.Combine(folder.Split('/')));
        if (!Directory.Exists(root)) return null;
        return Directory.EnumerateFiles(root, "*", SearchOption.AllDirectories)
            .Where(IsUsableFile)
            .Select(f => new HfRepoFile(Path.GetRelativePath(snapshot, f).Replace(Path.DirectorySeparatorChar, '/'), new FileInfo(f).Length))
            .OrderBy(f => f.Path, StringComparer.Ordinal)
            .ToList();
    }

    private sealed record FileMetadata(string Commit, string Etag, long Size, Uri DownloadUrl, bool KeepAuth);

    private async Task<FileMetadata?> HeadAsync(string url, string repo, string filename, string revision,
        string storage, string relative, CancellationToken ct)
    {
        var uri = new Uri(url);
        for (int hop = 0; ; hop++)
        {
            using var request = new HttpRequestMessage(HttpMethod.Head, uri);
            AddAuth(request);
            request.Headers.AcceptEncoding.ParseAdd("identity");
            using var cts = CancellationTokenSource.CreateLinkedTokenSource(ct);
            cts.CancelAfter(_options.MetadataTimeout);
            HttpResponseMessage response;
            try
            {
                response = await _http.SendAsync(request, HttpCompletionOption.ResponseHeadersRead, cts.Token).ConfigureAwait(false);
            }
            catch (Exception e) when (e is HttpRequestException or TaskCanceledException && !ct.IsCancellationRequested)
            {
                throw Unavailable($"cannot reach {uri} for {repo}/{filename} (revision {revision}): {e.Message}; it is not in the cache "
                                  + $"either (looked in {storage}{WhyNotCached(storage, revision, CommitHash.IsMatch(revision) ? revision : ReadRef(storage, revision), relative)}): "
                                  + "connect to the hub once to download it, or set HF_HUB_CACHE (or HF_HOME) to a cache that holds it, "
                                  + "or give a local folder instead of the hub name (offline, --model builtin needs no download)", e);
            }
            using (response)
            {
                int status = (int)response.StatusCode;
                string? commit = Header(response, "X-Repo-Commit");
                if (status == 404 || status == 401 || status == 403)
                {
                    string? code = Header(response, "X-Error-Code");
                    if (status == 404 && code is null or "EntryNotFound")
                    {
                        if (commit is not null && CommitHash.IsMatch(commit))
                        {
                            string marker = HubPaths.Inside(storage, Path.Combine(storage, ".no_exist", commit, relative));
                            Directory.CreateDirectory(Path.GetDirectoryName(marker)!);
                            File.WriteAllBytes(marker, []);
                            if (!CommitHash.IsMatch(revision)) WriteRef(storage, revision, commit);
                        }
                        return null;
                    }
                    throw NotFound(repo, filename, revision, code ?? (status == 404 ? "EntryNotFound" : "RepoNotFound"), status);
                }
                if (status is >= 300 and < 400 && response.Headers.Location is { } location)
                {
                    var target = location.IsAbsoluteUri ? location : new Uri(uri, location);
                    bool sameOrigin = HubPaths.SameOrigin(uri, target);
                    // A relative redirect (repo renamed) is followed with the token; anything that leaves the origin
                    // (a CDN, or "//host/..." written as relative) is the download URL and gets no token.
                    if (!location.IsAbsoluteUri && sameOrigin && hop < 5) { uri = target; continue; }
                    return Metadata(response, commit, target, repo, filename, revision, keepAuth: sameOrigin);
                }
                if (!response.IsSuccessStatusCode)
                    throw new SaeSharpException(
                        $"{repo}/{filename} (revision {revision}): HEAD {uri} returned {status} {response.ReasonPhrase}");
                return Metadata(response, commit, uri, repo, filename, revision, keepAuth: true);
            }
        }
    }

    private static FileMetadata Metadata(HttpResponseMessage r, string? commit, Uri download, string repo,
        string filename, string revision, bool keepAuth)
    {
        if (commit is null)
            throw new SaeSharpException(
                $"{repo}/{filename} (revision {revision}): the server sent no X-Repo-Commit header; is the endpoint a Hugging Face hub?");
        if (!CommitHash.IsMatch(commit))
            throw new SaeSharpException(
                $"{repo}/{filename} (revision {revision}): the server's X-Repo-Commit '{HubPaths.Printable(commit)}' is not a 40-digit commit hash");
        string? etag = NormalizeEtag(Header(r, "X-Linked-Etag") ?? Header(r, "ETag"));
        if (etag is null || !HubPaths.IsEtag(etag))
            throw new SaeSharpException($"{repo}/{filename} (revision {revision}): the server sent no usable ETag ('{HubPaths.Printable(etag ?? "")}')");
        string? sizeText = Header(r, "X-Linked-Size");
        long? size = sizeText is not null && long.TryParse(sizeText, out long s) ? s : r.Content.Headers.ContentLength;
        if (size is null or < 0)
            throw new SaeSharpException($"{repo}/{filename} (revision {revision}): the server sent no usable X-Linked-Size or Content-Length");
        return new FileMetadata(commit, etag, size.Value, download, keepAuth);
    }

    /// <summary>huggingface_hub's <c>_normalize_etag</c>: drop a weak "W/" prefix and the quotes.</summary>
    internal static string? NormalizeEtag(string? etag)
    {
        if (etag is null) return null;
        if (etag.StartsWith("W/", StringComparison.Ordinal)) etag = etag[2..];
        etag = etag.Trim('"');
        return etag.Length == 0 ? null : etag;
    }

    private async Task DownloadBlobAsync(FileMetadata meta, string blob, string repo, string filename, string revision, CancellationToken ct)
    {
        string incomplete = blob + ".incomplete";
        var uri = meta.DownloadUrl;
        bool keepAuth = meta.KeepAuth, overflow = false;
        await using (var file = new FileStream(incomplete, FileMode.OpenOrCreate, FileAccess.Write, FileShare.None, 1 << 16))
        {
            long resume = file.Seek(0, SeekOrigin.End);
            for (int hop = 0; ; hop++)
            {
                using var request = new HttpRequestMessage(HttpMethod.Get, uri);
                if (keepAuth) AddAuth(request);
                if (resume > 0) request.Headers.Range = new RangeHeaderValue(resume, null);
                HttpResponseMessage response;
                try
                {
                    response = await _http.SendAsync(request, HttpCompletionOption.ResponseHeadersRead, ct).ConfigureAwait(false);
                }
                catch (HttpRequestException e)
                {
                    throw new SaeSharpException($"downloading {repo}/{filename} (revision {revision}) from {uri} failed: {e.Message}", e);
                }
                using (response)
                {
                    int status = (int)response.StatusCode;
                    if (status is >= 300 and < 400 && response.Headers.Location is { } location && hop < 5)
                    {
                        var target = location.IsAbsoluteUri ? location : new Uri(uri, location);
                        keepAuth &= HubPaths.SameOrigin(uri, target);
                        uri = target;
                        continue;
                    }
                    if (status == 416 && resume == meta.Size) break; // already complete
                    if (!response.IsSuccessStatusCode)
                        throw new SaeSharpException(
                            $"downloading {repo}/{filename} (revision {revision}): GET {uri} returned {status} {response.ReasonPhrase}");
                    if (resume > 0 && (status != 206 || response.Content.Headers.ContentRange?.From != resume))
                    {
                        // The server ignored the Range header and sends the whole file: start over.
                        file.SetLength(0);
                        file.Position = 0;
                        resume = 0;
                    }
                    try
                    {
                        await using var body = await response.Content.ReadAsStreamAsync(ct).ConfigureAwait(false);
                        var buffer = new byte[1 << 16];
                        using var stall = CancellationTokenSource.CreateLinkedTokenSource(ct);
                        while (true)
                        {
                            stall.CancelAfter(_options.ReadTimeout);
                            int n = await body.ReadAsync(buffer, stall.Token).ConfigureAwait(false);
                            if (n == 0) break;
                            if (file.Length + n > meta.Size) { overflow = true; break; }
                            await file.WriteAsync(buffer.AsMemory(0, n), ct).ConfigureAwait(false);
                            _options.Progress?.Invoke(filename, file.Length, meta.Size);
                        }
                    }
                    catch (Exception e) when ((e is HttpRequestException or IOException
                                               || (e is OperationCanceledException && !ct.IsCancellationRequested))
                                              && e is not SaeSharpException)
                    {
                        throw new SaeSharpException(
                            $"downloading {repo}/{filename} (revision {revision}) was interrupted after {file.Length} of {meta.Size} bytes; run again to resume ({e.Message})", e);
                    }
                    break;
                }
            }
        }
        if (overflow)
        {
            File.Delete(incomplete);
            throw new SaeSharpException(
                $"downloading {repo}/{filename} (revision {revision}): the server sent more than the {meta.Size} bytes it announced; the partial file was removed");
        }
        long got = new FileInfo(incomplete).Length;
        if (got != meta.Size)
        {
            File.Delete(incomplete);
            throw new SaeSharpException(
                $"downloaded {repo}/{filename} (revision {revision}) has {got} bytes but the hub announced {meta.Size}; the partial file was removed, run again to retry");
        }
        File.Move(incomplete, blob, overwrite: true);
    }

    private static void LinkPointer(string blob, string pointer)
    {
        if (File.Exists(pointer) || new FileInfo(pointer).LinkTarget is not null) File.Delete(pointer);
        try
        {
            File.CreateSymbolicLink(pointer, Path.GetRelativePath(Path.GetDirectoryName(pointer)!, blob));
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException or PlatformNotSupportedException)
        {
            File.Copy(blob, pointer, overwrite: true);
        }
    }

    private static bool IsUsableFile(string path)
    {
        var info = new FileInfo(path);
        if (info.LinkTarget is null) return info.Exists;
        return info.ResolveLinkTarget(returnFinalTarget: true) is { Exists: true };
    }

    private static string? ReadRef(string storage, string revision)
    {
        string path = HubPaths.Inside(storage, Path.Combine(storage, "refs", revision));
        if (!File.Exists(path)) return null;
        string commit = File.ReadAllText(path).Trim();
        return CommitHash.IsMatch(commit) ? commit : null;
    }

    private static void WriteRef(string storage, string revision, string commit)
    {
        string path = HubPaths.Inside(storage, Path.Combine(storage, "refs", revision));
        if (File.Exists(path) && File.ReadAllText(path) == commit) return;
        Directory.CreateDirectory(Path.GetDirectoryName(path)!);
        File.WriteAllText(path, commit); // no trailing newline, as huggingface_hub writes it
    }

    private void AddAuth(HttpRequestMessage request)
    {
        if (_options.Token is { Length: > 0 } token)
            request.Headers.Authorization = new AuthenticationHeaderValue("Bearer", token);
    }

    private static string? Header(HttpResponseMessage r, string name) =>
        r.Headers.TryGetValues(name, out var v) ? v.FirstOrDefault()
        : r.Content.Headers.TryGetValues(name, out var c) ? c.FirstOrDefault() : null;

    private static SaeSharpException NotFound(string repo, string filename, string revision, string code, int status = 404) =>
        code switch
        {
            "RepoNotFound" or "GatedRepo" => new SaeSharpException(
                $"repository '{repo}' not found or not accessible (HTTP {status}) while fetching '{filename}' at revision '{revision}'; check the name, or set HF_TOKEN for private/gated repos"),
            "RevisionNotFound" => new SaeSharpException(
                $"revision '{revision}' not found in repository '{repo}' (fetching '{filename}')"),
            _ => new SaeSharpException($"file '{filename}' not found in repository '{repo}' at revision '{revision}'"),
        };

    /// <summary>Disposes the HTTP client.</summary>
    public void Dispose()
    {
        if (_ownsHttp) _http.Dispose();
    }
}

/// <summary>The kind of a Hugging Face repo: models and datasets live in separate namespaces and cache folders.</summary>
public enum HfRepoType
{
    /// <summary>A model repo (<c>/{org}/{name}</c>, cached as <c>models--org--name</c>).</summary>
    Model,
    /// <summary>A dataset repo (<c>/datasets/{org}/{name}</c>, cached as <c>datasets--org--name</c>).</summary>
    Dataset,
}

/// <summary>A file of a hub repo: its path from the repo root and its size in bytes (-1 when the hub did not say).</summary>
public sealed record HfRepoFile(string Path, long Size);

/// <summary>One-call access to the Hugging Face Hub with options from the environment
/// (HF_ENDPOINT, HF_HOME, HF_HUB_CACHE, HF_TOKEN, HF_HUB_OFFLINE).</summary>
public static class HfHub
{
    /// <summary>A local folder as is, or the cached snapshot folder of a hub repo after downloading its files;
    /// see <see cref="HfHubClient.Resolve"/>.</summary>
    public static string Resolve(string modelIdOrPath, string revision = "main", params string[] files)
    {
        using var client = new HfHubClient(HfHubOptions.FromEnvironment());
        return client.Resolve(modelIdOrPath, revision, files);
    }

    /// <summary>A model's folder as <see cref="Resolve"/> gives it, with <paramref name="checkConfig"/> run on its
    /// <c>config.json</c> before any weights are downloaded (e.g. <c>Models.ModelLoader.CheckSupported</c>).</summary>
    public static string ResolveModel(string modelIdOrPath, Action<string> checkConfig, string revision = "main")
    {
        using var client = new HfHubClient(HfHubOptions.FromEnvironment());
        return client.ResolveAsync(modelIdOrPath, revision, checkConfig: checkConfig).GetAwaiter().GetResult();
    }
}
