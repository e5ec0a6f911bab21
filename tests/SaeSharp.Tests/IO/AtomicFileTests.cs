using SaeSharp.IO;
using SaeSharp.Tests.Activations;

namespace SaeSharp.Tests.IO;

public sealed class AtomicFileTests : IDisposable
{
    private readonly string _root = Path.Combine(Path.GetTempPath(), "saesharp-atomic-" + Guid.NewGuid().ToString("N"));

    public void Dispose()
    {
        if (Directory.Exists(_root)) Directory.Delete(_root, recursive: true);
    }

    /// <summary>A folder as a killed run leaves it: a finished file, one temporary of a dead writer, one of a live one.</summary>
    private (string Dir, string Abandoned, string Live) KilledFolder(string name)
    {
        string dir = Path.Combine(_root, name);
        Directory.CreateDirectory(dir);
        File.WriteAllText(Path.Combine(dir, "summary.json"), "{}");
        string abandoned = Path.Combine(dir, $".features.jsonl.{ActivationCacheFolderTests.DeadPid()}.{Guid.NewGuid():N}.tmp");
        File.WriteAllBytes(abandoned, new byte[1024]);
        string live = Path.Combine(dir, $".tokens.json.{Environment.ProcessId}.{Guid.NewGuid():N}.tmp");
        File.WriteAllBytes(live, [1]);
        return (dir, abandoned, live);
    }

    [Fact]
    public void The_first_atomic_write_into_a_folder_removes_what_dead_writers_left()
    {
        var (dir, abandoned, live) = KilledFolder("features");
        AtomicFile.WriteAllText(Path.Combine(dir, "summary.json"), "{\"n\": 1}");
        Assert.False(File.Exists(abandoned), "a dead process's temporary is still there");
        Assert.True(File.Exists(live), "a running writer's temporary was removed");
        Assert.Equal("{\"n\": 1}", File.ReadAllText(Path.Combine(dir, "summary.json")));
    }

    [Fact]
    public void A_streamed_safetensors_write_cleans_its_folder_too()
    {
        var (dir, abandoned, live) = KilledFolder("cache");
        using (var w = new SafeTensorsStreamWriter(Path.Combine(dir, "shard.safetensors"), [("x", TorchSharp.torch.ScalarType.Float32, [0L, 2L])]))
            w.Commit();
        Assert.False(File.Exists(abandoned));
        Assert.True(File.Exists(live));
        Assert.True(File.Exists(Path.Combine(dir, "shard.safetensors")));
    }
    [Fact]
    public void A_path_that_is_a_folder_or_under_a_file_is_an_error_naming_it_and_changes_nothing()
    {
        string dir = Path.Combine(_root, "out");
        Directory.CreateDirectory(dir);
        string file = Path.Combine(_root, "cfg.json");
        File.WriteAllText(file, "{}");

        var folder = Assert.Throws<SaeSharpException>(() => AtomicFile.WriteAllText(dir, "x"));
        Assert.Contains(dir, folder.Message);
        Assert.Contains("is a folder", folder.Message);
        Assert.Empty(Directory.EnumerateFileSystemEntries(dir));

        string under = Path.Combine(file, "x.json");
        var parent = Assert.Throws<SaeSharpException>(() => AtomicFile.WriteAllText(under, "x"));
        Assert.Contains(under, parent.Message);
        Assert.Contains("could not create its folder", parent.Message);
        Assert.Equal("{}", File.ReadAllText(file));
        Assert.Equal(["cfg.json", "out"], Directory.EnumerateFileSystemEntries(_root).Select(Path.GetFileName).Order(StringComparer.Ordinal));
    }
}
