using System.Text.Json.Nodes;
using SaeSharp.Activations;
using SaeSharp.IO;
using SaeSharp.Tests.Models;
using static TorchSharp.torch;

namespace SaeSharp.Tests.Activations;

public class ActivationCacheFolderTests : ModelTestBase
{
    private const long Bos = ModelActivationSourceTests.Bos;

    private static Tensor ShardConcat(string dir, string name) =>
        cat(ActivationCacheManifest.Read(dir).Shards.Select(s => SafeTensors.Load(Path.Combine(dir, s.File))[name]).ToList(), 0);

    [Fact]
    public void Write_then_read_round_trips_rows_targets_and_tokens()
    {
        using var model = Gpt2();
        var windows = ModelActivationSourceTests.Windows(10, 8);
        var spec = HarvestSpec.Resolve(model.HookPoints, "blocks.1.mlp", HarvestMode.InToOut);
        string dir = Sub("cache");
        var m = ActivationCacheFolder.Write(dir, model, spec, windows, new ActivationCacheOptions
        {
            ContextSize = 8, BatchSizePrompts = 2, ContextsPerShard = 3, ExcludeTokenIds = [Bos], DatasetPath = "data.txt",
        });
        Assert.True(m.Complete);
        Assert.Equal(4, m.Shards.Count);
        Assert.Equal(["shard_00000.safetensors", "shard_00001.safetensors", "shard_00002.safetensors", "shard_00003.safetensors"], m.Shards.Select(s => s.File));
        long nonBos = windows.Sum(w => w.Count(t => t != Bos));
        Assert.Equal(nonBos, m.TotalRows);
        Assert.Equal(10, m.TotalContexts);

        // Independent expectation: the full model's cache at non-BOS positions, in window order.
        var tokens = Tokens([.. windows]);
        var (logits, cache) = model.RunWithCache(tokens, [spec.InputHook, spec.TargetHook!]);
        logits?.Dispose();
        var keep = tokens.reshape(-1).ne(Bos).nonzero().squeeze(1);
        AssertAllClose(cache[spec.InputHook].reshape(80, -1).index_select(0, keep), ShardConcat(dir, "activations"), 1e-6, "activations");
        AssertAllClose(cache[spec.TargetHook!].reshape(80, -1).index_select(0, keep), ShardConcat(dir, "targets"), 1e-6, "targets");
        Assert.Equal(tokens.reshape(-1).index_select(0, keep).data<long>().ToArray(), ShardConcat(dir, "token_ids").data<long>().ToArray());
        cache.Dispose();

        var manifest = JsonNode.Parse(File.ReadAllText(Path.Combine(dir, "manifest.json")))!;
        Assert.Equal("blocks.1.ln2.hook_normalized", (string?)manifest["hook"]);
        Assert.Equal(16, (int)manifest["d_in"]!);
        Assert.Equal(24, (long)manifest["rows_per_shard"]!);
        Assert.Equal("data.txt", (string?)manifest["dataset_path"]);

        // Reading: every row exactly once per pass, shuffled across shards, target still paired with its input.
        using var src = new ActivationCacheFolder(dir, new ActivationFileSourceOptions { ChunkRows = 4, BufferRows = 16, Seed = 5 });
        Assert.Equal(nonBos, src.Rows);
        var ins = new List<Tensor>();
        var outs = new List<Tensor>();
        while (src.Next(7) is { } b) { ins.Add(b.Input); outs.Add(b.Target); }
        var gotIn = cat(ins, 0);
        var gotOut = cat(outs, 0);
        var all = ShardConcat(dir, "activations");
        var allT = ShardConcat(dir, "targets");
        var proj = linspace(1.0, 2.0, 16, dtype: ScalarType.Float64);
        var (_, gi) = gotIn.to(ScalarType.Float64).matmul(proj).sort();
        var (_, ei) = all.to(ScalarType.Float64).matmul(proj).sort();
        AssertAllClose(all.index_select(0, ei), gotIn.index_select(0, gi), 0, "rows");
        AssertAllClose(allT.index_select(0, ei), gotOut.index_select(0, gi), 0, "targets paired with inputs");
        Assert.False(gotIn.equal(all).all().item<bool>(), "rows were not shuffled");
    }

    [Fact]
    public void Interrupted_write_resumes_to_the_same_shards_and_other_settings_are_refused()
    {
        using var model = Gpt2();
        var windows = ModelActivationSourceTests.Windows(7, 8);
        var spec = new HarvestSpec("blocks.0.hook_resid_post");
        var opts = new ActivationCacheOptions { ContextSize = 8, BatchSizePrompts = 2, ContextsPerShard = 2, Dtype = ScalarType.Float16 };

        string whole = Sub("whole");
        ActivationCacheFolder.Write(whole, model, spec, windows, opts);

        string part = Sub("part");
        var first = ActivationCacheFolder.Write(part, model, spec, windows, opts with { MaxTokens = 4 * 8 - 3 }); // ⌈29/8⌉ = 4 contexts
        Assert.Equal(4, first.TotalContexts);
        Assert.Equal(2, first.Shards.Count);
        int skipped = 0;
        IEnumerable<long[]> Counting() { foreach (var w in windows) { skipped++; yield return w; } }
        var resumed = ActivationCacheFolder.Write(part, model, spec, Counting(), opts);
        Assert.Equal(7, skipped);
        Assert.True(resumed.Complete);
        Assert.Equal(7, resumed.TotalContexts);
        Assert.Equal(4, resumed.Shards.Count);
        Assert.Equal([2L, 2, 2, 1], resumed.Shards.Select(s => s.Contexts));
        foreach (var s in resumed.Shards)
        {
            var a = SafeTensors.Load(Path.Combine(whole, s.File));
            var b = SafeTensors.Load(Path.Combine(part, s.File));
            Assert.Equal(ScalarType.Float16, b["activations"].dtype);
            Assert.True(a["activations"].equal(b["activations"]).all().item<bool>());
            Assert.Equal(a["token_ids"].data<long>().ToArray(), b["token_ids"].data<long>().ToArray());
        }

        var e = Assert.Throws<SaeSharpException>(() =>
            ActivationCacheFolder.Write(part, model, new HarvestSpec("blocks.1.hook_resid_post"), windows, opts));
        Assert.Contains("hook", e.Message);
        Directory.CreateDirectory(Sub("junk"));
        File.WriteAllText(Path.Combine(Sub("junk"), "x"), "");
        e = Assert.Throws<SaeSharpException>(() => ActivationCacheFolder.Write(Sub("junk"), model, spec, windows, opts));
        Assert.Contains("not empty", e.Message);
    }

    [Fact]
    public void Reader_state_restores_the_exact_next_batches()
    {
        using var model = Gpt2();
        var windows = ModelActivationSourceTests.Windows(6, 8);
        string dir = Sub("c");
        ActivationCacheFolder.Write(dir, model, new HarvestSpec("blocks.0.hook_resid_pre"), windows,
            new ActivationCacheOptions { ContextSize = 8, ContextsPerShard = 2 });
        var ro = new ActivationFileSourceOptions { ChunkRows = 4, BufferRows = 12, Seed = 9, Loop = true };
        using var a = new ActivationCacheFolder(dir, ro);
        for (int i = 0; i < 5; i++) a.Next(5)!.Dispose();
        var state = JsonNode.Parse(a.SaveState().ToJsonString())!;
        using var b = new ActivationCacheFolder(dir, ro);
        b.LoadState(state);
        for (int i = 0; i < 12; i++)
        {
            using var x = a.Next(5)!;
            using var y = b.Next(5)!;
            Assert.True(ModelActivationSourceTests.SameBits(x.Input, y.Input), $"batch {i} differs after restore");
        }
    }

    /// <summary>The pid of a process that has ended (a killed run's pid, as its temporaries carry it).</summary>
    internal static int DeadPid()
    {
        using var p = System.Diagnostics.Process.Start("true")!;
        p.WaitForExit();
        return p.Id;
    }

    [Fact]
    public void A_run_killed_while_writing_its_first_shard_leaves_a_folder_the_rerun_resumes_and_cleans()
    {
        using var model = Gpt2();
        var windows = ModelActivationSourceTests.Windows(4, 8);
        var spec = new HarvestSpec("blocks.0.hook_resid_post");
        var opts = new ActivationCacheOptions { ContextSize = 8, ContextsPerShard = 2 };
        // What kill -9 (or Ctrl-C) during the first shard's write leaves: the folder holding only that shard's temporary.
        string dir = Sub("killed");
        Directory.CreateDirectory(dir);
        string abandoned = Path.Combine(dir, $".shard_00000.safetensors.{DeadPid()}.{Guid.NewGuid():N}.tmp");
        File.WriteAllBytes(abandoned, new byte[4096]);
        // A temporary of a writer still running (this process) is not touched.
        string live = Path.Combine(Sub("other"), $".x.safetensors.{Environment.ProcessId}.{Guid.NewGuid():N}.tmp");
        Directory.CreateDirectory(Sub("other"));
        File.WriteAllBytes(live, [1]);
        Assert.Equal(0, AtomicFile.RemoveAbandonedTemporaries(Sub("other")));
        Assert.True(File.Exists(live));

        var m = ActivationCacheFolder.Write(dir, model, spec, windows, opts);

        Assert.True(m.Complete);
        Assert.Equal(2, m.Shards.Count);
        Assert.False(File.Exists(abandoned), "the killed run's temporary shard is still there");
        Assert.Equal(["manifest.json", "shard_00000.safetensors", "shard_00001.safetensors"],
            Directory.GetFiles(dir).Select(Path.GetFileName).Order(StringComparer.Ordinal));
    }

    [Fact]
    public void A_dataset_without_one_context_window_is_an_error_and_writes_no_manifest()
    {
        using var model = Gpt2();
        string dir = Sub("empty");
        var e = Assert.Throws<SaeSharpException>(() => ActivationCacheFolder.Write(dir, model, new HarvestSpec("blocks.0.hook_resid_post"),
            [], new ActivationCacheOptions { ContextSize = 8 }));
        Assert.Contains(dir, e.Message);
        Assert.Contains("no context window of 8 tokens", e.Message);
        Assert.False(File.Exists(Path.Combine(dir, ActivationCacheFolder.ManifestName)));
    }

    [Fact]
    public void Activations_that_are_not_finite_stop_the_harvest_naming_the_hook_window_and_position()
    {
        using var model = Gpt2();
        using (no_grad())
        {
            foreach (var (_, w) in model.named_parameters()) w.fill_(float.NaN);
        }
        string dir = Sub("nan");
        var e = Assert.Throws<SaeSharpException>(() => ActivationCacheFolder.Write(dir, model, new HarvestSpec("blocks.1.hook_resid_post"),
            ModelActivationSourceTests.Windows(4, 8), new ActivationCacheOptions { ContextSize = 8, ContextsPerShard = 2 }));
        Assert.Contains("blocks.1.hook_resid_post", e.Message);
        Assert.Contains("context window 0, position 0 holds NaN", e.Message);
        Assert.Empty(Directory.GetFiles(dir, "*", SearchOption.AllDirectories));
    }

    [Fact]
    public void Training_files_of_a_cache_are_its_manifest_s_shards_and_a_shard_that_disagrees_with_it_is_an_error()
    {
        using var model = Gpt2();
        string dir = Sub("c");
        ActivationCacheFolder.Write(dir, model, new HarvestSpec("blocks.0.hook_resid_pre"), ModelActivationSourceTests.Windows(6, 8),
            new ActivationCacheOptions { ContextSize = 8, ContextsPerShard = 2 });
        // A stray file beside the shards is not part of the cache.
        File.Copy(Path.Combine(dir, "shard_00000.safetensors"), Path.Combine(dir, "shard_00009.safetensors"));
        Assert.Equal(Enumerable.Range(0, 3).Select(i => Path.Combine(dir, ActivationCacheFolder.ShardName(i))), ActivationFileSource.ExpandPaths([dir]));
        File.Delete(Path.Combine(dir, "shard_00009.safetensors"));

        string manifest = Path.Combine(dir, ActivationCacheFolder.ManifestName);
        string original = File.ReadAllText(manifest);
        var node = JsonNode.Parse(original)!;
        node["shards"]![1]!["rows"] = 999;
        File.WriteAllText(manifest, node.ToJsonString());
        var e = Assert.Throws<SaeSharpException>(() => ActivationSplit.HoldOut([dir], null));
        Assert.Contains("shard_00001.safetensors: holds 16 rows, but manifest.json records 999", e.Message);

        node = JsonNode.Parse(original)!;
        node["d_in"] = 64;
        File.WriteAllText(manifest, node.ToJsonString());
        e = Assert.Throws<SaeSharpException>(() => ActivationSplit.HoldOut([dir], null));
        Assert.Contains("shard_00000.safetensors: activations have width 16, but manifest.json records d_in 64", e.Message);

        File.WriteAllText(manifest, original);
        File.Delete(Path.Combine(dir, "shard_00002.safetensors"));
        e = Assert.Throws<SaeSharpException>(() => ActivationSplit.HoldOut([dir], null));
        Assert.Contains("shard_00002.safetensors: shard listed in manifest.json is missing", e.Message);
    }
}
