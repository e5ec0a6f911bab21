using System.Text;
using SaeSharp.Hub;
using SaeSharp.Tests.Tokenizers;

namespace SaeSharp.Tests.Hub;

/// <summary>
/// A hostile hub endpoint (or a hostile user argument) must never make the client write outside the cache root or
/// send the token to another origin. Each test runs a server on 127.0.0.1 that lies in one way.
/// </summary>
public sealed class HubContainmentTests : IDisposable
{
    private readonly FakeHubServer _server = new();
    private readonly string _root = TestPaths.TempDir();
    private readonly byte[] _weights = Encoding.UTF8.GetBytes(new string('w', 3000));

    public HubContainmentTests()
    {
        _server.Repos["org/tiny"] = new()
        {
            ["config.json"] = new(Encoding.UTF8.GetBytes("{}")),
            ["model.safetensors"] = new(_weights, Lfs: true),
        };
    }

    public void Dispose()
    {
        _server.Dispose();
        try { Directory.Delete(_root, recursive: true); } catch (IOException) { /* best effort */ }
    }

    private string Cache => Path.Combine(_root, "cache");

    private HfHubClient Client() => new(new HfHubOptions { Endpoint = _server.Endpoint, CacheDir = Cache, Token = "hf_secret" });

    /// <summary>Everything below the temp root except the cache folder itself: must stay empty.</summary>
    private string[] OutsideCache() =>
        Directory.GetFileSystemEntries(_root, "*", SearchOption.AllDirectories)
            .Where(p => p != Cache && !p.StartsWith(Cache + Path.DirectorySeparatorChar, StringComparison.Ordinal)).ToArray();

    private void HeadersOnResolve(Action<Dictionary<string, string>> edit)
    {
        _server.Intercept = (method, path) =>
        {
            if (!path.StartsWith("/org/tiny/resolve/", StringComparison.Ordinal)) return null;
            var content = Encoding.UTF8.GetBytes("{}");
            var h = new Dictionary<string, string>
            {
                ["X-Repo-Commit"] = _server.Commit,
                ["ETag"] = "\"" + FakeHubServer.GitEtag(content) + "\"",
            };
            edit(h);
            return (200, h, content);
        };
    }

    [Theory]
    [InlineData("../../../escaped")]
    [InlineData("../../../../../../../../tmp/saesharp-escape")]
    [InlineData("0123456789abcdef0123456789abcdef0123456/")]
    [InlineData("/abs")]
    public void A_commit_header_that_is_not_a_hash_is_refused_and_nothing_is_written_outside(string commit)
    {
        HeadersOnResolve(h => h["X-Repo-Commit"] = commit);
        using var client = Client();
        var e = Assert.Throws<SaeSharpException>(() => client.DownloadFile("org/tiny", "config.json"));
        Assert.Contains("X-Repo-Commit", e.Message);
        Assert.Empty(OutsideCache());
        Assert.False(Directory.Exists(Path.Combine(Cache, "models--org--tiny", "snapshots")));
    }

    [Fact]
    public void A_404_with_a_hostile_commit_records_no_absence_marker()
    {
        _server.Intercept = (method, path) => (404, new Dictionary<string, string>
            { ["X-Repo-Commit"] = "../../../../x", ["X-Error-Code"] = "EntryNotFound" }, []);
        using var client = Client();
        Assert.Null(client.DownloadFile("org/tiny", "absent.json", optional: true));
        Assert.Empty(OutsideCache());
        Assert.False(Directory.Exists(Path.Combine(Cache, "models--org--tiny", ".no_exist")));
    }

    [Theory]
    [InlineData("../../../blob")]
    [InlineData("..")]
    [InlineData("a/b")]
    [InlineData(".hidden")]
    public void An_etag_that_is_not_a_plain_name_is_refused(string etag)
    {
        HeadersOnResolve(h => h["ETag"] = "\"" + etag + "\"");
        using var client = Client();
        var e = Assert.Throws<SaeSharpException>(() => client.DownloadFile("org/tiny", "config.json"));
        Assert.Contains("ETag", e.Message);
        Assert.Empty(OutsideCache());
    }

    [Theory]
    [InlineData("../../../outside")]
    [InlineData("..")]
    [InlineData("main/../../x")]
    [InlineData("/etc")]
    [InlineData("a\\..\\..\\b")]
    [InlineData("main\n")]
    public void A_hostile_revision_is_refused_before_any_request(string revision)
    {
        using var client = Client();
        var e = Assert.Throws<SaeSharpException>(() => client.DownloadFile("org/tiny", "config.json", revision));
        Assert.Contains("revision", e.Message);
        Assert.Empty(_server.Requests);
        Assert.Empty(OutsideCache());
    }

    [Theory]
    [InlineData("../org")]
    [InlineData("org/../../x")]
    [InlineData("/abs/x")]
    [InlineData("org/name/extra")]
    public void A_hostile_repo_id_is_refused_before_any_request(string repo)
    {
        using var client = Client();
        Assert.Throws<SaeSharpException>(() => client.DownloadFile(repo, "config.json"));
        Assert.Empty(_server.Requests);
        Assert.Empty(OutsideCache());
    }

    [Theory]
    [InlineData("../config.json")]
    [InlineData("a//b")]
    [InlineData("/etc/passwd")]
    [InlineData("a\\..\\b")]
    [InlineData("x\0y")]
    public void A_hostile_file_name_is_refused_before_any_request(string file)
    {
        using var client = Client();
        Assert.Throws<SaeSharpException>(() => client.DownloadFile("org/tiny", file));
        Assert.Empty(_server.Requests);
    }

    [Fact]
    public void A_branch_like_refs_pr_stays_a_nested_ref_inside_the_cache()
    {
        HeadersOnResolve(_ => { });
        using var client = Client();
        string path = client.DownloadFile("org/tiny", "config.json", "refs/pr/1")!;
        Assert.StartsWith(Cache + Path.DirectorySeparatorChar, path);
        Assert.Equal(_server.Commit, File.ReadAllText(Path.Combine(Cache, "models--org--tiny", "refs", "refs", "pr", "1")));
        // the revision travels as one escaped path segment, as huggingface_hub's hf_hub_url sends it
        // (quote(revision, safe="")): refs%2Fpr%2F1 on the wire, refs/pr/1 once the server unescapes it
        Assert.Contains(_server.Requests, r => r.Method == "HEAD" && r.Path == "/org/tiny/resolve/refs/pr/1/config.json");
        Assert.Contains(_server.Requests, r => r.Method == "HEAD" && r.RawPath == "/org/tiny/resolve/refs%2Fpr%2F1/config.json");
    }

    [Fact]
    public void A_symlink_in_the_cache_that_leads_outside_is_not_written_through()
    {
        string elsewhere = Path.Combine(_root, "elsewhere");
        Directory.CreateDirectory(elsewhere);
        string storage = Path.Combine(Cache, "models--org--tiny");
        Directory.CreateDirectory(storage);
        Directory.CreateSymbolicLink(Path.Combine(storage, "blobs"), elsewhere);

        using var client = Client();
        var e = Assert.Throws<SaeSharpException>(() => client.DownloadFile("org/tiny", "model.safetensors"));
        Assert.Contains("outside", e.Message);
        Assert.Empty(Directory.GetFileSystemEntries(elsewhere));
    }

    [Fact]
    public void The_token_is_not_sent_to_another_host_on_a_redirect()
    {
        using var other = new FakeHubServer();
        other.Repos["org/tiny"] = _server.Repos["org/tiny"];
        string sha = FakeHubServer.Sha256(_weights);
        var lfsHeaders = new Dictionary<string, string>
        {
            ["X-Repo-Commit"] = _server.Commit, ["X-Linked-Etag"] = "\"" + sha + "\"", ["X-Linked-Size"] = _weights.Length.ToString(),
        };
        // a redirect to another port is another origin, and so is "//host:port/..." written as a relative location
        foreach (string location in new[] { $"{other.Endpoint}/cdn/{sha}", $"//127.0.0.1:{new Uri(other.Endpoint).Port}/cdn/{sha}" })
        {
            _server.Intercept = (method, path) => path.Contains("/resolve/")
                ? (302, new Dictionary<string, string>(lfsHeaders) { ["Location"] = location }, [])
                : null;
            string cache = Path.Combine(_root, "c" + Guid.NewGuid().ToString("N"));
            using var client = new HfHubClient(new HfHubOptions { Endpoint = _server.Endpoint, CacheDir = cache, Token = "hf_secret" });
            string file = client.DownloadFile("org/tiny", "model.safetensors")!;
            Assert.Equal(_weights, File.ReadAllBytes(file));
        }
        Assert.All(_server.Requests, r => Assert.Equal("Bearer hf_secret", r.Authorization));
        Assert.Equal(2, other.Requests.Count(r => r.Method == "GET"));
        Assert.All(other.Requests, r => Assert.Null(r.Authorization));
    }

    [Fact]
    public void Same_origin_means_same_scheme_host_and_port()
    {
        var a = new Uri("https://huggingface.co/org/x/resolve/main/f");
        Assert.True(HubPaths.SameOrigin(a, new Uri("https://HuggingFace.co/api/other")));
        Assert.False(HubPaths.SameOrigin(a, new Uri("http://huggingface.co/org/x/resolve/main/f"))); // downgrade
        Assert.False(HubPaths.SameOrigin(a, new Uri("https://huggingface.co:8443/f")));
        Assert.False(HubPaths.SameOrigin(a, new Uri("https://cdn-lfs.huggingface.co/f")));
        Assert.False(HubPaths.SameOrigin(a, new Uri(a, "//evil.example/f")));
    }

    [Fact]
    public void A_server_sending_more_than_it_announced_is_cut_off_and_the_partial_file_removed()
    {
        string sha = FakeHubServer.Sha256(_weights);
        _server.Intercept = (method, path) => path.Contains("/resolve/")
            ? (302, new Dictionary<string, string>
            {
                ["X-Repo-Commit"] = _server.Commit, ["X-Linked-Etag"] = "\"" + sha + "\"", ["X-Linked-Size"] = "100",
                ["Location"] = $"{_server.Endpoint}/cdn/{sha}",
            }, [])
            : null;
        using var client = Client();
        var e = Assert.Throws<SaeSharpException>(() => client.DownloadFile("org/tiny", "model.safetensors"));
        Assert.Contains("more than the 100 bytes", e.Message);
        Assert.Empty(Directory.GetFiles(Path.Combine(Cache, "models--org--tiny", "blobs")));
    }

    private void TreeAnswer(string json, Dictionary<string, string>? headers = null) =>
        _server.Intercept = (method, path) => path.StartsWith("/api/models/org/tiny/tree/", StringComparison.Ordinal)
            ? (200, headers ?? new Dictionary<string, string> { ["Content-Type"] = "application/json" }, Encoding.UTF8.GetBytes(json))
            : null;

    [Theory]
    [InlineData("../../../escaped.json")]
    [InlineData("/etc/passwd")]
    [InlineData("a/../../b")]
    [InlineData("a\\..\\b")]
    public void A_listing_naming_a_path_outside_the_repo_is_refused(string hostile)
    {
        TreeAnswer($$"""[{"type":"file","oid":"0","size":2,"path":{{System.Text.Json.JsonSerializer.Serialize(hostile)}}}]""");
        using var client = Client();
        var e = Assert.Throws<SaeSharpException>(() => client.ListFiles("org/tiny"));
        Assert.Contains("is not a file path inside the repo", e.Message);
        Assert.Empty(OutsideCache());
    }

    [Fact]
    public void A_listing_whose_next_page_is_on_another_host_is_not_followed()
    {
        using var other = new FakeHubServer();
        TreeAnswer("""[{"type":"file","oid":"0","size":2,"path":"config.json"}]""", new Dictionary<string, string>
        {
            ["Content-Type"] = "application/json",
            ["Link"] = $"<{other.Endpoint}/api/models/org/tiny/tree/main?cursor=1>; rel=\"next\"",
        });
        using var client = Client();
        var e = Assert.Throws<SaeSharpException>(() => client.ListFiles("org/tiny"));
        Assert.Contains("leaves", e.Message);
        Assert.Empty(other.Requests);
    }

    [Fact]
    public void A_listing_with_a_next_link_that_is_not_a_url_is_a_clear_error()
    {
        TreeAnswer("[]", new Dictionary<string, string> { ["Link"] = "<http://[::1>; rel=\"next\"" });
        using var client = Client();
        var e = Assert.Throws<SaeSharpException>(() => client.ListFiles("org/tiny"));
        Assert.Contains("is not a URL", e.Message);
    }

    [Fact]
    public void A_listing_page_larger_than_the_bound_is_refused_whatever_it_announces()
    {
        // 17 MiB of one JSON string, announced as such: over the 16 MiB page bound
        string big = "[\"" + new string('x', 17 << 20) + "\"]";
        TreeAnswer(big);
        using var client = Client();
        var e = Assert.Throws<SaeSharpException>(() => client.ListFiles("org/tiny"));
        Assert.Contains("larger than 16 MiB", e.Message);
    }
}
