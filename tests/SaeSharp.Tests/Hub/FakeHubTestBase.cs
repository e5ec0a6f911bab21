using SaeSharp.Hub;
using SaeSharp.Tests.Tokenizers;

namespace SaeSharp.Tests.Hub;

/// <summary>A test class's fake hub on 127.0.0.1 with its own cache and work folders, removed after each test.</summary>
public abstract class FakeHubTestBase : IDisposable
{
    protected readonly FakeHubServer _server = new();
    protected readonly string _cache = TestPaths.TempDir();
    protected readonly string _work = TestPaths.TempDir();

    public void Dispose()
    {
        _server.Dispose();
        foreach (var d in new[] { _cache, _work })
            try { Directory.Delete(d, recursive: true); } catch (IOException) { /* best effort */ }
        GC.SuppressFinalize(this);
    }

    /// <summary>Hub options pointing at the fake server and this test's cache.</summary>
    protected HfHubOptions Hub => new() { Endpoint = _server.Endpoint, CacheDir = _cache };

    /// <summary>Serves <paramref name="files"/> of the local <paramref name="folder"/> as <paramref name="repoPath"/>/FILE
    /// in <paramref name="repo"/> (<c>.safetensors</c> files as LFS files).</summary>
    protected void Serve(string repo, string repoPath, string folder, params string[] files)
    {
        if (!_server.Repos.TryGetValue(repo, out var r)) _server.Repos[repo] = r = new();
        foreach (var f in files)
            r[repoPath + "/" + f] = new FakeHubServer.FakeFile(File.ReadAllBytes(Path.Combine(folder, f)), Lfs: f.EndsWith(".safetensors", StringComparison.Ordinal));
    }
}
