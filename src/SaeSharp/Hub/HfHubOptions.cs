namespace SaeSharp.Hub;

/// <summary>Where and how <see cref="HfHubClient"/> talks to the Hugging Face Hub and caches files.</summary>
public sealed class HfHubOptions
{
    /// <summary>Hub base URL without a trailing slash (<c>HF_ENDPOINT</c>, default https://huggingface.co).</summary>
    public string Endpoint { get; init; } = "https://huggingface.co";

    /// <summary>The hub cache folder holding <c>models--org--name</c> folders (<c>HF_HUB_CACHE</c>,
    /// else <c>HF_HOME/hub</c>, else <c>~/.cache/huggingface/hub</c>).</summary>
    public string CacheDir { get; init; } = DefaultCacheDir(Environment.GetEnvironmentVariable);

    /// <summary>Access token sent as <c>Authorization: Bearer</c> (<c>HF_TOKEN</c>, else the file <c>huggingface-cli login</c>
    /// wrote: <c>HF_TOKEN_PATH</c> or <c>HF_HOME/token</c>); null for anonymous access.</summary>
    public string? Token { get; init; }

    /// <summary>Use only the cache, never the network (<c>HF_HUB_OFFLINE=1</c>, else <c>TRANSFORMERS_OFFLINE=1</c>).</summary>
    public bool Offline { get; init; }

    /// <summary>Time allowed for each metadata (HEAD) request.</summary>
    public TimeSpan MetadataTimeout { get; init; } = TimeSpan.FromSeconds(30);

    /// <summary>A download fails (and can be resumed later) when no data arrives for this long.</summary>
    public TimeSpan ReadTimeout { get; init; } = TimeSpan.FromSeconds(60);

    /// <summary>Called while a file downloads: (file name, bytes on disk, total bytes).</summary>
    public Action<string, long, long>? Progress { get; init; }

    /// <summary>Options from the environment: HF_ENDPOINT, HF_HOME, HF_HUB_CACHE, HF_TOKEN, HF_HUB_OFFLINE
    /// (and the older HUGGINGFACE_HUB_CACHE / HUGGING_FACE_HUB_TOKEN / TRANSFORMERS_OFFLINE), and the token file of
    /// <c>huggingface-cli login</c> (HF_TOKEN_PATH, else HF_HOME/token), as huggingface_hub reads them.</summary>
    public static HfHubOptions FromEnvironment() => FromEnvironment(Environment.GetEnvironmentVariable);

    internal static HfHubOptions FromEnvironment(Func<string, string?> getenv)
    {
        string? endpoint = NonEmpty(getenv("HF_ENDPOINT"));
        // huggingface_hub: HF_HUB_OFFLINE = _is_true(os.environ.get("HF_HUB_OFFLINE") or os.environ.get("TRANSFORMERS_OFFLINE"))
        string? offline = NonEmpty(getenv("HF_HUB_OFFLINE")) ?? NonEmpty(getenv("TRANSFORMERS_OFFLINE"));
        return new HfHubOptions
        {
            Endpoint = (endpoint ?? "https://huggingface.co").TrimEnd('/'),
            CacheDir = DefaultCacheDir(getenv),
            Token = NonEmpty(getenv("HF_TOKEN")) ?? NonEmpty(getenv("HUGGING_FACE_HUB_TOKEN")) ?? StoredToken(getenv),
            Offline = offline is not null && offline.ToUpperInvariant() is "1" or "ON" or "YES" or "TRUE",
        };
    }

    /// <summary>The token <c>huggingface-cli login</c> stored: the file <c>HF_TOKEN_PATH</c>, else <c>HF_HOME/token</c>
    /// (huggingface_hub's <c>get_token</c> after the environment variables), or null.</summary>
    private static string? StoredToken(Func<string, string?> getenv)
    {
        string path = ExpandHome(NonEmpty(getenv("HF_TOKEN_PATH")) ?? Path.Combine(HfHome(getenv), "token"), getenv);
        try
        {
            return File.Exists(path) ? NonEmpty(File.ReadAllText(path).Trim()) : null;
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            return null;
        }
    }

    private static string HfHome(Func<string, string?> getenv)
    {
        string? hfHome = NonEmpty(getenv("HF_HOME"));
        if (hfHome is null)
        {
            string? xdg = NonEmpty(getenv("XDG_CACHE_HOME"));
            hfHome = Path.Combine(xdg ?? Path.Combine(Home(getenv), ".cache"), "huggingface");
        }
        return ExpandHome(hfHome, getenv);
    }

    internal static string DefaultCacheDir(Func<string, string?> getenv)
    {
        string? hubCache = NonEmpty(getenv("HF_HUB_CACHE")) ?? NonEmpty(getenv("HUGGINGFACE_HUB_CACHE"));
        if (hubCache is not null) return ExpandHome(hubCache, getenv);
        return Path.Combine(HfHome(getenv), "hub");
    }

    private static string Home(Func<string, string?> getenv) =>
        NonEmpty(getenv("HOME")) ?? Environment.GetFolderPath(Environment.SpecialFolder.UserProfile);

    /// <summary>Python's <c>os.path.expandvars(os.path.expanduser(path))</c>, as huggingface_hub reads its paths: a leading
    /// <c>~</c> is the home folder, then each <c>$NAME</c> or <c>${NAME}</c> of a set variable is its value (an unset one
    /// stays as written).</summary>
    private static string ExpandHome(string path, Func<string, string?> getenv)
    {
        path = path == "~" ? Home(getenv) : path.StartsWith("~/", StringComparison.Ordinal) ? Path.Combine(Home(getenv), path[2..]) : path;
        return path.Contains('$') ? EnvironmentVariable.Replace(path, m =>
        {
            string name = m.Groups[1].Success ? m.Groups[1].Value : m.Groups[2].Value;
            return getenv(name) ?? m.Value;
        }) : path;
    }

    // posixpath.expandvars's pattern: \$(\w+|\{[^}]*\}), ASCII word characters.
    private static readonly System.Text.RegularExpressions.Regex EnvironmentVariable = new(@"\$(?:([A-Za-z0-9_]+)|\{([^}]*)\})");

    private static string? NonEmpty(string? s) => string.IsNullOrWhiteSpace(s) ? null : s;
}
