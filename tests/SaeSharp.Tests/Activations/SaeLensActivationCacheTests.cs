using SaeSharp.Activations;
using SaeSharp.Tests.Tokenizers;
using static TorchSharp.torch;

namespace SaeSharp.Tests.Activations;

/// <summary>
/// SAELens's activation cache (CacheActivationsRunner's datasets folder) read through the activation file source, on
/// caches the npm package apache-arrow 21.2.0 wrote by hand from datasets' and SAELens's source
/// (<c>bench/reference/saelens_cache_arrow_js.mjs</c>): tests/data/saelens_cache/js_f32 and js_f16_two_hooks.
/// </summary>
public class SaeLensActivationCacheTests
{
    private static string Fixture(params string[] parts) => TestPaths.Data(["saelens_cache", .. parts]);

    private static float[,] ReadAll(string dir, string? hook = null)
    {
        using var source = new ActivationFileSource(dir, new ActivationFileSourceOptions { Shuffle = false, HookName = hook });
        using var batch = source.Next(1000)!;
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
}
