using System.Security.Cryptography;
using System.Text.Json.Nodes;
using SaeSharp.IO;

namespace SaeSharp.Tests.IO;

/// <summary><see cref="FileSha256"/>: the hash is the contents' SHA-256 (checked against <see cref="SHA256.HashData(byte[])"/>),
/// remembered by size and mtime in its store (a remembered value is trusted until either changes), a Hugging Face cache's
/// blob taken by its name, and an unreadable store only a lost memo.</summary>
public sealed class FileSha256Tests : TempDirTestBase
{
    private static string Sha(string path) => Convert.ToHexStringLower(SHA256.HashData(File.ReadAllBytes(path)));

    [Fact]
    public void Hashes_contents_and_remembers_them_by_size_and_mtime()
    {
        string a = Path.Combine(_dir, "a.bin"), store = Path.Combine(_dir, "memo.json");
        File.WriteAllBytes(a, [1, 2, 3, 4, 5]);
        var first = new FileSha256(store);
        Assert.Equal(Sha(a), first.Of(new FileInfo(a)));
        Assert.False(File.Exists(store));
        first.Save();
        var saved = JsonNode.Parse(File.ReadAllText(store))!;
        Assert.Equal(Sha(a), saved["files"]![Path.GetFullPath(a)]!["sha256"]!.GetValue<string>());

        // A remembered value is used while size and mtime hold: a planted one shows it was not read again.
        string planted = new('c', 64);
        saved["files"]![Path.GetFullPath(a)]!["sha256"] = planted;
        File.WriteAllText(store, saved.ToJsonString());
        Assert.Equal(planted, new FileSha256(store).Of(new FileInfo(a)));
        // Another mtime: read again.
        File.SetLastWriteTimeUtc(a, new DateTime(2020, 1, 2, 3, 4, 5, DateTimeKind.Utc));
        Assert.Equal(Sha(a), new FileSha256(store).Of(new FileInfo(a)));
    }

    [Theory]
    [InlineData("{ not json")]
    [InlineData("{\"format\": 7, \"files\": {}}")]
    [InlineData("[1, 2]")]
    public void An_unreadable_store_is_a_lost_memo_and_is_rewritten(string content)
    {
        string a = Path.Combine(_dir, "a.bin"), store = Path.Combine(_dir, "memo.json");
        File.WriteAllBytes(a, [9, 8, 7]);
        File.WriteAllText(store, content);
        var hashes = new FileSha256(store);
        Assert.Equal(Sha(a), hashes.Of(new FileInfo(a)));
        hashes.Save();
        Assert.Equal(Sha(a), JsonNode.Parse(File.ReadAllText(store))!["files"]![Path.GetFullPath(a)]!["sha256"]!.GetValue<string>());
    }

    [Fact]
    public void A_link_into_a_hub_caches_blobs_is_named_by_its_hash_and_other_links_are_followed()
    {
        // A hub cache: snapshots/{commit}/model.safetensors -> ../../blobs/{sha256}. The name is taken unread (here on
        // purpose not the contents' hash); a 40-digit (git) blob name and a plain link are hashed.
        string blobs = Directory.CreateDirectory(Path.Combine(_dir, "models--o--m", "blobs")).FullName;
        string snap = Directory.CreateDirectory(Path.Combine(_dir, "models--o--m", "snapshots", "abc")).FullName;
        string name64 = new('e', 64), name40 = new('d', 40);
        File.WriteAllBytes(Path.Combine(blobs, name64), [1]);
        File.WriteAllBytes(Path.Combine(blobs, name40), [2, 3]);
        File.CreateSymbolicLink(Path.Combine(snap, "model.safetensors"), Path.Combine("..", "..", "blobs", name64));
        File.CreateSymbolicLink(Path.Combine(snap, "config.json"), Path.Combine("..", "..", "blobs", name40));
        var hashes = new FileSha256(null);
        Assert.Equal(name64, hashes.Of(new FileInfo(Path.Combine(snap, "model.safetensors"))));
        Assert.Equal(Sha(Path.Combine(blobs, name40)), hashes.Of(new FileInfo(Path.Combine(snap, "config.json"))));
    }
}
