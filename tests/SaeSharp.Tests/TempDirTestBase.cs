using SaeSharp.Tests.Tokenizers;

namespace SaeSharp.Tests;

/// <summary>A temporary folder per test (<see cref="TestPaths.TempDir"/>), deleted after it (best effort).</summary>
public abstract class TempDirTestBase : IDisposable
{
    protected readonly string _dir = TestPaths.TempDir();

    /// <summary>A copy, in a new folder under <see cref="_dir"/>, of the model folder <paramref name="folder"/> with its
    /// config.json edited by <paramref name="edit"/>.</summary>
    protected string EditedCopy(string folder, Action<System.Text.Json.Nodes.JsonObject> edit)
    {
        string dir = Path.Combine(_dir, Guid.NewGuid().ToString("N"));
        Directory.CreateDirectory(dir);
        foreach (var f in Directory.GetFiles(folder)) File.Copy(f, Path.Combine(dir, Path.GetFileName(f)));
        var config = System.Text.Json.Nodes.JsonNode.Parse(File.ReadAllText(Path.Combine(dir, "config.json")))!.AsObject();
        edit(config);
        File.WriteAllText(Path.Combine(dir, "config.json"), config.ToJsonString());
        return dir;
    }

    public void Dispose()
    {
        try { Directory.Delete(_dir, recursive: true); } catch (IOException) { /* best effort */ }
        GC.SuppressFinalize(this);
    }
}
