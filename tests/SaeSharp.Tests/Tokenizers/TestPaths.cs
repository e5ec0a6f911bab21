namespace SaeSharp.Tests.Tokenizers;

/// <summary>Locates ../shared (beside the project or any ancestor of the test binaries) and makes temp folders.</summary>
internal static class TestPaths
{
    public static string Shared(params string[] parts)
    {
        for (var dir = new DirectoryInfo(AppContext.BaseDirectory); dir is not null; dir = dir.Parent)
        {
            string candidate = Path.Combine(dir.FullName, "shared");
            if (Directory.Exists(Path.Combine(candidate, "data")))
                return Path.Combine([candidate, .. parts]);
        }
        throw new DirectoryNotFoundException($"no 'shared/data' folder above {AppContext.BaseDirectory}");
    }

    public static string TempDir()
    {
        string dir = Path.Combine(Path.GetTempPath(), "saesharp-tests", Guid.NewGuid().ToString("N"));
        Directory.CreateDirectory(dir);
        return dir;
    }
}
