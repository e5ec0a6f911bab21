using System.Text.Json;
using Apache.Arrow.Ipc;
using SaeSharp.Activations;
using SaeSharp.Data;
using SaeSharp.Tests.Tokenizers;
using static TorchSharp.torch;

namespace SaeSharp.Tests.Activations;

/// <summary>
/// SAELens's activation cache (CacheActivationsRunner's datasets folder) read through the activation file source, on
/// caches the npm package apache-arrow 21.2.0 wrote by hand from datasets' and SAELens's source
/// (<c>bench/reference/saelens_cache_arrow_js.mjs</c>): tests/data/saelens_cache/js_f32 and js_f16_two_hooks; and what
/// SaeSharp writes (saesharp_written_f32, saesharp_written_f16) as apache-arrow read it (saesharp_written_*.js.json).
/// </summary>
public class SaeLensActivationCacheTests
{
    private static string Fixture(params string[] parts) => TestPaths.Data(["saelens_cache", .. parts]);

    private static float[,] ReadAll(string dir, string? hook = null)
    {
        using var source = new ActivationFileSource(dir, new ActivationFileSourceOptions { Shuffle = false, HookName = hook });
        using var batch = source.Next(100_000)!;
        Assert.Null(source.Next(1));
        var rows = batch.Input;
        var result = new float[rows.shape[0], rows.shape[1]];
        var flat = rows.data<float>().ToArray();
        for (int i = 0; i < result.GetLength(0); i++)
            for (int j = 0; j < result.GetLength(1); j++) result[i, j] = flat[i * result.GetLength(1) + j];
        return result;
    }

    [Fact]
    public void Float32_cache_reads_window_rows_in_dataset_order()
    {
        // js_f32: 5 windows of [3, 4] over two shards (record batches of 2 | 2 and 1); value [w, p, j] = w*100 + p*10 + j + 0.25.
        var rows = ReadAll(Fixture("js_f32"));
        Assert.Equal(15, rows.GetLength(0));
        Assert.Equal(4, rows.GetLength(1));
        for (int w = 0; w < 5; w++)
            for (int p = 0; p < 3; p++)
                for (int j = 0; j < 4; j++)
                    Assert.Equal(w * 100 + p * 10 + j + 0.25f, rows[w * 3 + p, j]);
        var cache = SaeLensActivationCache.Open(Fixture("js_f32"));
        Assert.Equal(new SaeLensCacheColumn("blocks.0.hook_resid_post", 3, 4, "float32"), Assert.Single(cache.Columns));
        Assert.True(cache.HasTokenIds);
    }

    [Fact]
    public void Chunked_reads_across_batches_and_shards_give_the_same_rows()
    {
        // Chunks of 2 rows cut windows (3 rows) and record batches apart; shuffled reads hand out every row once.
        using var source = new ActivationFileSource(Fixture("js_f32"), new ActivationFileSourceOptions { ChunkRows = 2, BufferRows = 4, Seed = 5 });
        var seen = new List<float>();
        while (source.Next(4) is { } batch)
            using (batch) seen.AddRange(batch.Input[.., 0].data<float>().ToArray());
        var expected = Enumerable.Range(0, 5).SelectMany(w => Enumerable.Range(0, 3).Select(p => w * 100 + p * 10 + 0.25f));
        Assert.Equal(expected.Order(), seen.Order());
    }

    [Fact]
    public void Float16_cache_with_two_hooks_reads_the_named_column()
    {
        // value [w, p, j] = w*16 + p*4 + j + 0.5, +1000 in the second hook; exact in float16.
        foreach (var (hook, add) in new[] { ("blocks.0.hook_resid_post", 0f), ("blocks.1.hook_mlp_out", 1000f) })
        {
            var rows = ReadAll(Fixture("js_f16_two_hooks"), hook);
            Assert.Equal((4, 3), (rows.GetLength(0), rows.GetLength(1)));
            for (int w = 0; w < 2; w++)
                for (int p = 0; p < 2; p++)
                    for (int j = 0; j < 3; j++)
                        Assert.Equal(w * 16 + p * 4 + j + 0.5f + add, rows[w * 2 + p, j]);
        }
        var e = Assert.Throws<SaeSharpException>(() => ReadAll(Fixture("js_f16_two_hooks")));
        Assert.Contains("2 hooks (blocks.0.hook_resid_post, blocks.1.hook_mlp_out)", e.Message);
        e = Assert.Throws<SaeSharpException>(() => ReadAll(Fixture("js_f16_two_hooks"), "blocks.2.hook_resid_post"));
        Assert.Contains("no activations of hook 'blocks.2.hook_resid_post' (columns: blocks.0.hook_resid_post, blocks.1.hook_mlp_out)", e.Message);
    }

    /// <summary>Window w of the written fixtures: [p, j] = w*100 + p*10 + j + 0.25 (exact in float16 below 2048), tokens w*10 + p.</summary>
    private static IEnumerable<(Tensor, long[])> HandWindows(int count, int ctx, int d, ScalarType dtype) =>
        Enumerable.Range(0, count).Select(w => (
            tensor(Enumerable.Range(0, ctx * d).Select(i => w * 100 + i / d * 10 + i % d + 0.25f).ToArray(), [ctx, d]).to(dtype),
            Enumerable.Range(0, ctx).Select(p => (long)(w * 10 + p)).ToArray()));

    [Theory]
    [InlineData("float32")]
    [InlineData("float16")]
    public void Written_cache_is_the_fixture_apache_arrow_read(string dtype)
    {
        // SAESHARP_SAELENS_CACHE_FIXTURE_OUT=tests/data/saelens_cache regenerates the fixtures (after deleting them).
        string name = dtype == "float32" ? "saesharp_written_f32" : "saesharp_written_f16";
        string dir = Path.Combine(Environment.GetEnvironmentVariable("SAESHARP_SAELENS_CACHE_FIXTURE_OUT") ?? TestPaths.TempDir(), name);
        var column = new SaeLensCacheColumn("blocks.0.hook_resid_post", 3, 2, dtype);
        // 5 windows, 2 a shard: shards of 2, 2 and 1 windows.
        long written = SaeLensActivationCache.WriteFolder(dir, column, 2, HandWindows(5, 3, 2, dtype == "float16" ? ScalarType.Float16 : ScalarType.Float32), null);
        Assert.Equal(5, written);
        string[] files = ["data-00000-of-00003.arrow", "data-00001-of-00003.arrow", "data-00002-of-00003.arrow", HfDiskDataset.InfoFile, HfDiskDataset.StateFile];
        Assert.Equal(files.Order(StringComparer.Ordinal), Directory.GetFileSystemEntries(dir).Select(Path.GetFileName).Order(StringComparer.Ordinal));
        foreach (var f in files) Assert.Equal(File.ReadAllBytes(Fixture(name, f)), File.ReadAllBytes(Path.Combine(dir, f)));

        // What apache-arrow read from those bytes: datasets' schema (Array2D extension field metadata, list<list<T>>,
        // fixed_size_list<int32>[3] token_ids, the huggingface features) and the hand values.
        using var js = JsonDocument.Parse(File.ReadAllText(Fixture(name + ".js.json")));
        var shards = js.RootElement.GetProperty("shards").EnumerateArray().ToList();
        Assert.Equal([2, 2, 1], shards.Select(sh => sh.GetProperty("batch_rows").EnumerateArray().Single().GetInt32()));
        int w = 0;
        foreach (var shard in shards)
        {
            var fields = shard.GetProperty("fields").EnumerateArray().ToList();
            Assert.Equal(("blocks.0.hook_resid_post", dtype == "float32" ? "List<List<Float32>>" : "List<List<Float16>>", true),
                (fields[0].GetProperty("name").GetString(), fields[0].GetProperty("type").GetString(), fields[0].GetProperty("nullable").GetBoolean()));
            var meta = fields[0].GetProperty("metadata");
            Assert.Equal("datasets.features.features.Array2DExtensionType", meta.GetProperty("ARROW:extension:name").GetString());
            Assert.Equal($"[[3, 2], \"{dtype}\"]", meta.GetProperty("ARROW:extension:metadata").GetString());
            Assert.Equal(("token_ids", "FixedSizeList[3]<Int32>"), (fields[1].GetProperty("name").GetString(), fields[1].GetProperty("type").GetString()));
            Assert.Equal("{\"info\": {\"features\": {\"blocks.0.hook_resid_post\": {\"shape\": [3, 2], \"dtype\": \"" + dtype + "\", \"_type\": \"Array2D\"}, " +
                         "\"token_ids\": {\"feature\": {\"dtype\": \"int32\", \"_type\": \"Value\"}, \"length\": 3, \"_type\": \"Sequence\"}}}}",
                shard.GetProperty("metadata").GetProperty("huggingface").GetString());
            var cols = shard.GetProperty("columns");
            var acts = cols.GetProperty("blocks.0.hook_resid_post").EnumerateArray().ToList();
            var toks = cols.GetProperty("token_ids").EnumerateArray().ToList();
            for (int k = 0; k < acts.Count; k++, w++)
            {
                var m = acts[k].EnumerateArray().Select(r => r.EnumerateArray().Select(v => v.GetDouble()).ToArray()).ToArray();
                for (int p = 0; p < 3; p++)
                    for (int j = 0; j < 2; j++) Assert.Equal(w * 100 + p * 10 + j + 0.25, m[p][j]);
                Assert.Equal([w * 10, w * 10 + 1, w * 10 + 2], toks[k].EnumerateArray().Select(t => t.GetInt32()));
            }
        }
        Assert.Equal(5, w);
        using var info = JsonDocument.Parse(File.ReadAllText(Path.Combine(dir, HfDiskDataset.InfoFile)));
        Assert.Equal(["citation", "description", "features", "homepage", "license"], info.RootElement.EnumerateObject().Select(p => p.Name));
        using var state = JsonDocument.Parse(File.ReadAllText(Path.Combine(dir, HfDiskDataset.StateFile)));
        Assert.Equal(JsonValueKind.Null, state.RootElement.GetProperty("_format_type").ValueKind);

        // And SaeSharp reads its own cache back: 15 rows, float16 values exact.
        var rows = ReadAll(dir);
        for (int r = 0; r < 15; r++)
            for (int j = 0; j < 2; j++) Assert.Equal(r / 3 * 100 + r % 3 * 10 + j + 0.25f, rows[r, j]);
    }

    [Fact]
    public void Shards_hold_record_batches_of_1000_windows()
    {
        // datasets writes a shard's rows in record batches of DEFAULT_MAX_BATCH_SIZE (1,000).
        string dir = Path.Combine(TestPaths.TempDir(), "c");
        var column = new SaeLensCacheColumn("blocks.0.hook_resid_post", 1, 1, "float32");
        SaeLensActivationCache.WriteFolder(dir, column, 2003, HandWindows(2003, 1, 1, ScalarType.Float32), null);
        using (var stream = File.OpenRead(Path.Combine(dir, "data-00000-of-00001.arrow")))
        using (var reader = new ArrowStreamReader(stream))
        {
            var sizes = new List<int>();
            while (reader.ReadNextRecordBatch() is { } b) using (b) sizes.Add(b.Length);
            Assert.Equal([1000, 1000, 3], sizes);
        }
        var rows = ReadAll(dir);
        Assert.Equal(Enumerable.Range(0, 2003).Select(i => i * 100 + 0.25f), Enumerable.Range(0, 2003).Select(i => rows[i, 0]));
    }

    private string CopyFixture(string name)
    {
        string dir = Path.Combine(TestPaths.TempDir(), name);
        Directory.CreateDirectory(dir);
        foreach (var f in Directory.GetFiles(Fixture(name))) File.Copy(f, Path.Combine(dir, Path.GetFileName(f)));
        return dir;
    }

    private static string OneLineError(string dir, string? hook = null)
    {
        var e = Assert.Throws<SaeSharpException>(() => ReadAll(dir, hook));
        Assert.DoesNotContain('\n', e.Message);
        return e.Message;
    }

    [Fact]
    public void Truncated_or_corrupt_shards_wrong_shapes_and_missing_columns_are_one_line_errors()
    {
        string shard = "data-00001-of-00002.arrow";
        // Truncated: the copy stops mid-stream (an interrupted download or copy).
        string dir = CopyFixture("js_f32");
        var bytes = File.ReadAllBytes(Path.Combine(dir, shard));
        File.WriteAllBytes(Path.Combine(dir, shard), bytes[..(bytes.Length - 200)]);
        Assert.Contains($"{shard}: ", OneLineError(dir));

        // Cut at a message boundary: no end-of-stream marker.
        File.WriteAllBytes(Path.Combine(dir, shard), bytes[..(bytes.Length - 8)]);
        Assert.Contains("no end-of-stream marker: the file is truncated", OneLineError(dir));

        // A flipped length in the first message's metadata.
        var corrupt = (byte[])bytes.Clone();
        corrupt[7] = 0x7f;
        File.WriteAllBytes(Path.Combine(dir, shard), corrupt);
        Assert.Contains("past the file's end", OneLineError(dir));

        // dataset_info.json declares d_in 5 where the shards hold 4 values a row.
        dir = CopyFixture("js_f32");
        string info = Path.Combine(dir, HfDiskDataset.InfoFile);
        File.WriteAllText(info, File.ReadAllText(info).Replace("\"shape\": [\n        3,\n        4\n      ]", "\"shape\": [3, 5]"));
        Assert.Contains("[3, 5]", File.ReadAllText(info));
        Assert.Contains("dataset_info.json declares shape [3, 5] (context_size, d_in)", OneLineError(dir));

        // dataset_info.json names a hook column the shards do not have.
        dir = CopyFixture("js_f32");
        info = Path.Combine(dir, HfDiskDataset.InfoFile);
        File.WriteAllText(info, File.ReadAllText(info).Replace("blocks.0.hook_resid_post", "blocks.5.hook_resid_post"));
        Assert.Contains("no column 'blocks.5.hook_resid_post' (columns: blocks.0.hook_resid_post, token_ids)", OneLineError(dir));

        // No Array2D column at all: a pretokenized dataset is not an activation cache.
        Assert.Contains("no Array2D activation column (features: input_ids)", OneLineError(TestPaths.Data("pretokenize", "js_written")));

        // A shard state.json lists is gone.
        dir = CopyFixture("js_f32");
        File.Delete(Path.Combine(dir, shard));
        Assert.Contains($"lists {shard}, which is missing", OneLineError(dir));
    }
}
