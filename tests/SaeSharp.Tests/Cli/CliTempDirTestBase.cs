namespace SaeSharp.Tests.Cli;

/// <summary>A CLI test's temporary folder, deleted (best effort) after the test; <see cref="P"/> names files in it.</summary>
public abstract class CliTempDirTestBase : IDisposable
{
    private readonly string _dir = Tokenizers.TestPaths.TempDir();

    public void Dispose()
    {
        try { Directory.Delete(_dir, recursive: true); } catch (IOException) { /* best effort */ }
        GC.SuppressFinalize(this);
    }

    protected string P(params string[] parts) => Path.Combine([_dir, .. parts]);
}
