using SaeSharp.Tests.Tokenizers;

namespace SaeSharp.Tests;

/// <summary>A temporary folder per test (<see cref="TestPaths.TempDir"/>), deleted after it (best effort).</summary>
public abstract class TempDirTestBase : IDisposable
{
    protected readonly string _dir = TestPaths.TempDir();

    public void Dispose()
    {
        try { Directory.Delete(_dir, recursive: true); } catch (IOException) { /* best effort */ }
        GC.SuppressFinalize(this);
    }
}
