using System.Text.Json.Nodes;
using SaeSharp.Activations;
using SaeSharp.IO;
using static TorchSharp.torch;

namespace SaeSharp.Tests.Activations;

public class ActivationFileSourceTests : IDisposable
{
    private readonly string _dir = Directory.CreateTempSubdirectory("acts-").FullName;
    public void Dispose() => Directory.Delete(_dir, true);

    /// <summary>A source made inside a caller's dispose scope (as a setup helper would) keeps its buffers: they were
    /// registered in that scope and freed with it ("Tensor invalid -- empty handle" on the next batch).</summary>
    [Fact]
    public void A_source_made_inside_a_dispose_scope_outlives_it()
    {
        var path = WriteShard("a.safetensors", 0, 50, withTarget: true);
        ActivationFileSource src;
        using (NewDisposeScope())
        {
            src = new ActivationFileSource(path, new ActivationFileSourceOptions { Shuffle = false, TargetName = "targets" });
            src.Next(5)!.Dispose();
        }
        using (src)
        using (var b = src.Next(5)!)
            Assert.Equal(new float[] { 5, 6, 7, 8, 9 }, b.Input[.., 0].data<float>().ToArray());
    }

    /// <summary>Rows whose column 0 is the global row number r and column j is r + j/10.</summary>
    private static Tensor Rows(long first, long count, int width) =>
        (arange(TorchScalars.Of(first), TorchScalars.Of(first + count), TorchScalars.One, dtype: ScalarType.Float32).unsqueeze(1) + TorchScalars.Arange(width, dtype: ScalarType.Float32) / 10);

    private string WriteShard(string name, long first, long count, int width = 4, ScalarType dtype = ScalarType.Float32, bool withTarget = false)
    {
        var path = Path.Combine(_dir, name);
        var x = Rows(first, count, width);
        var tensors = new Dictionary<string, Tensor> { ["activations"] = x.to(dtype) };
        if (withTarget) tensors["targets"] = x * 2 + 1;
        SafeTensors.Save(path, tensors);
        return path;
    }

    /// <summary>Three shards of 17, 23 and 10 rows (global rows 0..49) in a folder.</summary>
    private string ThreeShards(bool withTarget = false)
    {
        WriteShard("shard_000.safetensors", 0, 17, withTarget: withTarget);
        WriteShard("shard_001.safetensors", 17, 23, withTarget: withTarget);
        WriteShard("shard_002.safetensors", 40, 10, withTarget: withTarget);
        return _dir;
    }

    private static long[] RowIds(Tensor batch) => batch[.., 0].data<float>().Select(v => (long)Math.Round(v)).ToArray();

    private static List<long> Drain(IActivationSource src, int batchSize, long maxRows = long.MaxValue)
    {
        var ids = new List<long>();
        while (ids.Count < maxRows)
        {
            using var b = src.Next(batchSize);
            if (b is null) break;
            ids.AddRange(RowIds(b.Input));
        }
        return ids;
    }

    [Fact]
    public void SequentialReadingInChunksReturnsEveryRowInFileOrder()
    {
        var dir = ThreeShards();
        using var src = new ActivationFileSource([dir], new() { Shuffle = false, ChunkRows = 7, BufferRows = 7 });
        Assert.Equal(50, src.Rows);
        Assert.Equal(4, src.DIn);
        var batches = new List<Tensor>();
        while (src.Next(8) is { } b) { batches.Add(b.Input); }
        Assert.Equal(new[] { 8, 8, 8, 8, 8, 8, 2 }, batches.Select(b => (int)b.shape[0]));
        var all = cat(batches, 0);
        Assert.True(all.allclose(Rows(0, 50, 4)));
        Assert.Null(src.Next(8));
        Assert.Equal(7, src.LargestRead); // never more than a chunk at a time
    }

    [Fact]
    public void ShuffledPassesArePermutationsMixedAcrossShards()
    {
        var dir = ThreeShards();
        using var src = new ActivationFileSource([dir], new() { ChunkRows = 5, BufferRows = 12, Loop = true, Seed = 3 });
        var ids = Drain(src, 7, 150);
        for (int epoch = 0; epoch < 3; epoch++)
        {
            var pass = ids.Skip(epoch * 50).Take(50).ToList();
            Assert.Equal(Enumerable.Range(0, 50).Select(i => (long)i), pass.Order());
            Assert.NotEqual(Enumerable.Range(0, 50).Select(i => (long)i), pass);
        }
        Assert.NotEqual(ids.Take(50), ids.Skip(50).Take(50));
        // The buffer holds two chunks at first, and the first rows are drawn from both.
        // Chunks of 5 rows restart at each shard (shards begin at rows 0, 17 and 40).
        static long ChunkOf(long r) => r < 17 ? r / 5 : r < 40 ? 100 + (r - 17) / 5 : 200 + (r - 40) / 5;
        Assert.True(ids.Take(10).Select(ChunkOf).Distinct().Count() >= 2, "first rows should mix at least two chunks");
        Assert.Equal(3, src.Epoch);
        Assert.Equal(5, src.LargestRead);
    }

    /// <summary>The options' contract: chunks are read in random order into the shuffle buffer whenever it is less than
    /// half full, so the first batch is drawn from a full buffer of BufferRows rows (here 4 chunks of 5), not from the one
    /// chunk a refill that stops after a chunk would hold, which would never mix rows across chunks in a batch.</summary>
    [Fact]
    public void The_shuffle_buffer_is_filled_with_several_chunks_before_rows_are_drawn()
    {
        WriteShard("one.safetensors", 0, 50);
        using var src = new ActivationFileSource([_dir], new() { ChunkRows = 5, BufferRows = 20, Seed = 4 });
        using (var b = src.Next(1)!) Assert.Equal(1, b.Rows);
        var buffered = src.BufferedRowIds();
        Assert.Equal(19, buffered.Length);
        Assert.Equal(4, buffered.Select(r => r / 5).Distinct().Count());
    }

    [Fact]
    public void EpochsCapThePassesEachAPermutation()
    {
        var dir = ThreeShards();
        using var src = new ActivationFileSource([dir], new() { ChunkRows = 4, BufferRows = 9, Seed = 2, Epochs = 2 });
        Assert.Equal(2, ((IActivationSource)src).MaxDataPasses);
        var ids = new List<long>();
        while (src.Next(16) is { } b) { ids.AddRange(RowIds(b.Input)); b.Dispose(); }
        Assert.Equal(100, ids.Count); // two passes of 50 rows, then the source is exhausted
        Assert.Equal(Enumerable.Range(0, 50).Select(i => (long)i), ids.Take(50).Order());
        Assert.Equal(Enumerable.Range(0, 50).Select(i => (long)i), ids.Skip(50).Order());
        Assert.NotEqual(ids.Take(50), ids.Skip(50)); // each pass its own shuffle
        Assert.Equal(100, ((IActivationSource)src).RowsDelivered);
        Assert.Equal(50, ((IActivationSource)src).RowsPerPass);
        Assert.Null(src.Next(16));
    }

    /// <summary>Training from a <c>sae cache</c> folder for many passes (the soak run of BENCHMARKS.md, "Long runs"):
    /// the buffer refills, the reshuffle at each pass and the file handles closed when more than 16 shards are open
    /// leave no tensor alive, so the live count after four more passes is the count after the first.</summary>
    [Fact]
    public void Many_passes_over_more_shards_than_open_files_leave_no_live_tensors() => LiveTensors.OnOwnThread(() =>
    {
        for (int s = 0; s < 20; s++) WriteShard($"shard_{s:D3}.safetensors", 5L * s, 5, withTarget: true);
        using var src = new ActivationFileSource([_dir], new() { ChunkRows = 3, BufferRows = 8, Seed = 4, Epochs = 0, TargetName = "targets" });
        var ids = new List<long>();
        void Passes(int n)
        {
            for (int i = 0; i < n * 100 / 7; i++)
            {
                using var b = src.Next(7)!; // outside any scope: a tensor Next forgot would stay alive
                using var checks = NewDisposeScope(); // the checks' own temporaries
                ids.AddRange(RowIds(b.Input));
                Assert.True(b.Target.allclose(b.Input * 2 + 1)); // targets stay paired with their rows
            }
        }
        Passes(1);
        long before = TorchSharp.DisposeScopeManager.Statistics.ThreadTotalLiveCount;
        Passes(4);
        Assert.Equal(before, TorchSharp.DisposeScopeManager.Statistics.ThreadTotalLiveCount);
        Assert.Equal(Enumerable.Range(0, 100).Select(i => (long)i), ids.Take(100).Order()); // the first pass: every row once
    });

    [Fact]
    public void WithoutLoopAShuffledPassEndsWithAShortBatchThenNull()
    {
        var dir = ThreeShards();
        using var src = new ActivationFileSource([dir], new() { ChunkRows = 4, BufferRows = 9, Seed = 1 });
        var sizes = new List<long>();
        var ids = new List<long>();
        while (src.Next(16) is { } b) { sizes.Add(b.Rows); ids.AddRange(RowIds(b.Input)); b.Dispose(); }
        Assert.Equal(new long[] { 16, 16, 16, 2 }, sizes);
        Assert.Equal(Enumerable.Range(0, 50).Select(i => (long)i), ids.Order());
    }

    [Fact]
    public void SameSeedSameOrderOtherSeedOtherOrder()
    {
        var dir = ThreeShards();
        List<long> Run(ulong seed)
        {
            using var s = new ActivationFileSource([dir], new() { ChunkRows = 6, BufferRows = 18, Seed = seed });
            return Drain(s, 5);
        }
        Assert.Equal(Run(11), Run(11));
        Assert.NotEqual(Run(11), Run(12));
    }

    [Theory]
    [InlineData(true, 3)]
    [InlineData(true, 9)]   // crosses an epoch boundary before saving
    [InlineData(false, 4)]
    public void SavedStateResumesExactly(bool shuffle, int consumed)
    {
        var dir = ThreeShards(withTarget: true);
        var options = new ActivationFileSourceOptions { TargetName = "targets", ChunkRows = 6, BufferRows = 14, Loop = true, Shuffle = shuffle, Seed = 42 };
        using var original = new ActivationFileSource([dir], options);
        for (int i = 0; i < consumed; i++) original.Next(7)!.Dispose();
        var json = original.SaveState().ToJsonString();

        using var resumed = new ActivationFileSource([dir], options);
        resumed.Next(3)!.Dispose(); // a different position, which LoadState must replace
        resumed.LoadState(JsonNode.Parse(json)!);
        for (int i = 0; i < 12; i++)
        {
            using var a = original.Next(7)!;
            using var b = resumed.Next(7)!;
            Assert.True(a.Input.equal(b.Input).all().item<bool>(), $"batch {i} input differs");
            Assert.True(a.Target.equal(b.Target).all().item<bool>(), $"batch {i} target differs");
        }
        Assert.Equal(original.Epoch, resumed.Epoch);
    }

    [Fact]
    public void StateFromOtherDataIsRefused()
    {
        var dir = ThreeShards();
        using var a = new ActivationFileSource([dir], new() { ChunkRows = 6 });
        using var b = new ActivationFileSource([dir], new() { ChunkRows = 6, RowCount = 30 });
        var e = Assert.Throws<SaeSharpException>(() => b.LoadState(a.SaveState()));
        Assert.Contains("50 rows", e.Message);
    }

    /// <summary>A state saved with one shuffle buffer is refused by a source with another, larger or smaller (a larger one
    /// would take the saved rows and go on shuffling differently from the run that saved them), naming both sizes; the
    /// same buffer is accepted. A state from before the size was recorded is still read.</summary>
    [Fact]
    public void StateFromAnotherBufferSizeIsRefused()
    {
        var dir = ThreeShards();
        using var a = new ActivationFileSource([dir], new() { ChunkRows = 5, BufferRows = 10, Seed = 3 });
        a.Next(4)!.Dispose();
        var state = a.SaveState();
        foreach (int other in new[] { 15, 5 })
        {
            using var b = new ActivationFileSource([dir], new() { ChunkRows = 5, BufferRows = other, Seed = 3 });
            var e = Assert.Throws<SaeSharpException>(() => b.LoadState(JsonNode.Parse(state.ToJsonString())!));
            Assert.Contains($"shuffle buffer of 10 rows but this source has {other}", e.Message);
        }
        using var same = new ActivationFileSource([dir], new() { ChunkRows = 5, BufferRows = 10, Seed = 3 });
        same.LoadState(JsonNode.Parse(state.ToJsonString())!);
        var old = JsonNode.Parse(state.ToJsonString())!.AsObject();
        old.Remove("buffer_rows");
        using var larger = new ActivationFileSource([dir], new() { ChunkRows = 5, BufferRows = 15, Seed = 3 });
        larger.LoadState(old);
    }

    [Fact]
    public void TargetRowsStayPairedWithInputRows()
    {
        var dir = ThreeShards(withTarget: true);
        using var src = new ActivationFileSource([dir], new() { TargetName = "targets", ChunkRows = 5, BufferRows = 10, Seed = 9 });
        Assert.Equal(4, src.DOut);
        while (src.Next(6) is { } b)
        {
            using (b)
            {
                Assert.True(b.HasSeparateTarget);
                Assert.True(b.Target.allclose(b.Input * 2 + 1));
            }
        }
    }

    [Theory]
    [InlineData(ScalarType.Float16)]
    [InlineData(ScalarType.BFloat16)]
    public void HalfPrecisionFilesAreReadAsFloat32(ScalarType dtype)
    {
        var path = WriteShard("half.safetensors", 0, 12, width: 3, dtype: dtype);
        using var src = new ActivationFileSource(path, new() { Shuffle = false, ChunkRows = 5 });
        using var b = src.Next(12)!;
        Assert.Equal(ScalarType.Float32, b.Input.dtype);
        var expected = Rows(0, 12, 3).to(dtype).to(ScalarType.Float32);
        Assert.True(b.Input.equal(expected).all().item<bool>());
    }

    [Fact]
    public void NaNIsReportedWithFileAndRow()
    {
        WriteShard("a.safetensors", 0, 17);
        var bad = Rows(17, 23, 4);
        bad[13, 2] = tensor(float.NaN);
        var badPath = Path.Combine(_dir, "b.safetensors");
        SafeTensors.Save(badPath, new Dictionary<string, Tensor> { ["activations"] = bad });
        using var src = new ActivationFileSource([_dir], new() { ChunkRows = 5, BufferRows = 10, Seed = 2 });
        var e = Assert.Throws<SaeSharpException>(() => Drain(src, 8));
        Assert.Contains(badPath, e.Message);
        Assert.Contains("row 13 ", e.Message);
        Assert.Contains("NaN", e.Message);
    }

    [Fact]
    public void InfIsReportedWithFileAndRow()
    {
        var x = Rows(0, 9, 4);
        x[8, 0] = tensor(float.NegativeInfinity);
        var path = Path.Combine(_dir, "inf.safetensors");
        SafeTensors.Save(path, new Dictionary<string, Tensor> { ["activations"] = x });
        using var src = new ActivationFileSource(path, new() { Shuffle = false, ChunkRows = 4 });
        var e = Assert.Throws<SaeSharpException>(() => Drain(src, 2));
        Assert.Contains($"{path}: tensor 'activations': row 8 holds -Inf", e.Message);
    }

    [Fact]
    public void WidthMismatchNamesTheFile()
    {
        var path = WriteShard("w.safetensors", 0, 5, width: 4);
        var e = Assert.Throws<SaeSharpException>(() => new ActivationFileSource(path, new() { ExpectedDIn = 6 }));
        Assert.Contains(path, e.Message);
        Assert.Contains("width 4", e.Message);
        Assert.Contains("d_in = 6", e.Message);

        var other = WriteShard("x.safetensors", 5, 5, width: 3);
        var e2 = Assert.Throws<SaeSharpException>(() => new ActivationFileSource([path, other]));
        Assert.Contains(other, e2.Message);
    }

    [Fact]
    public void PicksTheActivationsTensorOrTheOnlyOne()
    {
        var two = Path.Combine(_dir, "two.safetensors");
        SafeTensors.Save(two, new Dictionary<string, Tensor> { ["other"] = zeros(3, 2), ["activations"] = ones(3, 2) });
        using (var s = new ActivationFileSource(two, new() { Shuffle = false }))
            Assert.Equal(3f, s.Next(3)!.Input.sum().item<float>() / 2);

        var single = Path.Combine(_dir, "single.safetensors");
        SafeTensors.Save(single, new Dictionary<string, Tensor> { ["blocks.0.hook_resid_pre"] = ones(4, 2) });
        using (var s = new ActivationFileSource(single))
            Assert.Equal(4, s.Rows);

        var ambiguous = Path.Combine(_dir, "amb.safetensors");
        SafeTensors.Save(ambiguous, new Dictionary<string, Tensor> { ["a"] = ones(4, 2), ["b"] = ones(4, 2) });
        var e = Assert.Throws<SaeSharpException>(() => new ActivationFileSource(ambiguous));
        Assert.Contains(ambiguous, e.Message);
        Assert.Contains("a, b", e.Message);

        var notMatrix = Path.Combine(_dir, "vec.safetensors");
        SafeTensors.Save(notMatrix, new Dictionary<string, Tensor> { ["activations"] = ones(4) });
        Assert.Contains("[N, d]", Assert.Throws<SaeSharpException>(() => new ActivationFileSource(notMatrix)).Message);
    }

    /// <summary>A multi-prompt <c>sae model run</c> file holds H.0, H.1, ... ([1, seq_i, d] each): read as H's rows, the
    /// prompts one after another, when H itself is absent; a chunk may span two prompts. Neither: the error lists the file's tensors.</summary>
    [Fact]
    public void A_hook_saved_per_prompt_is_read_from_its_numbered_tensors_in_order()
    {
        const string hook = "blocks.0.hook_resid_post";
        var path = Path.Combine(_dir, "run.safetensors");
        SafeTensors.Save(path, new Dictionary<string, Tensor>
        {
            [hook + ".0"] = Rows(0, 3, 4).unsqueeze(0), [hook + ".1"] = Rows(3, 5, 4).unsqueeze(0), [hook + ".2"] = Rows(8, 2, 4).unsqueeze(0),
            ["logits.0"] = zeros(1, 3, 7), ["logits.1"] = zeros(1, 5, 7), ["logits.2"] = zeros(1, 2, 7),
        });
        foreach (var options in new ActivationFileSourceOptions[] { new() { HookName = hook }, new() { InputName = hook } })
        {
            using var src = new ActivationFileSource(path, options with { Shuffle = false, ChunkRows = 4, BufferRows = 4 });
            Assert.Equal(10, src.Rows);
            Assert.Equal(Enumerable.Range(0, 10).Select(i => (long)i), Drain(src, 3));
        }
        // The file's one hook beside logits: read without a name (sae train --activations).
        using (var src = new ActivationFileSource(path, new() { Shuffle = false }))
            Assert.Equal(Enumerable.Range(0, 10).Select(i => (long)i), Drain(src, 4));
        var twoHooks = Path.Combine(_dir, "run2.safetensors");
        SafeTensors.Save(twoHooks, new Dictionary<string, Tensor> { ["a.0"] = ones(1, 2, 4), ["b.0"] = ones(1, 2, 4), ["logits.0"] = ones(1, 2, 5) });
        Assert.Contains("has: ", Assert.Throws<SaeSharpException>(() => new ActivationFileSource(twoHooks)).Message);
        var e = Assert.Throws<SaeSharpException>(() => new ActivationFileSource(path, new() { HookName = "blocks.1.hook_resid_post" }));
        Assert.Contains("blocks.1.hook_resid_post.0", e.Message);
        Assert.Contains("has: " + hook + ".0", e.Message);
        Assert.Contains("logits.2", e.Message);
    }

    [Fact]
    public void HeldOutSplitKeepsTheLastRowsOutOfTraining()
    {
        var dir = ThreeShards();
        var (train, eval) = ActivationSplit.HoldOutLastRows([dir], 12, new() { ChunkRows = 5, BufferRows = 10, Seed = 5 });
        using (train)
        using (eval)
        {
            Assert.Equal(38, train.Rows);
            Assert.Equal(12, eval.Rows);
            Assert.Equal(Enumerable.Range(0, 38).Select(i => (long)i), Drain(train, 7).Order());
            Assert.Equal(Enumerable.Range(38, 12).Select(i => (long)i), Drain(eval, 5)); // in order: crosses shards 1 and 2
        }
    }

    [Fact]
    public void RowRangeSpanningShardBoundaries()
    {
        var dir = ThreeShards();
        using var src = new ActivationFileSource([dir], new() { RowStart = 15, RowCount = 27, ChunkRows = 4, Shuffle = false });
        Assert.Equal(Enumerable.Range(15, 27).Select(i => (long)i), Drain(src, 10));
    }

    [Fact]
    public void MissingPathAndEmptyFolderAreReported()
    {
        var missing = Path.Combine(_dir, "nope.safetensors");
        Assert.Contains(missing, Assert.Throws<SaeSharpException>(() => new ActivationFileSource(missing)).Message);
        var empty = Directory.CreateDirectory(Path.Combine(_dir, "empty")).FullName;
        Assert.Contains(empty, Assert.Throws<SaeSharpException>(() => new ActivationFileSource(empty)).Message);
    }
}

public class NpyActivationSourceTests : IDisposable
{
    private readonly string _dir = Directory.CreateTempSubdirectory("acts-npy-").FullName;
    public void Dispose() => Directory.Delete(_dir, true);

    private static Tensor Rows(long first, long count, int width) =>
        arange(TorchScalars.Of(first), TorchScalars.Of(first + count), TorchScalars.One, dtype: ScalarType.Float32).unsqueeze(1) + TorchScalars.Arange(width, dtype: ScalarType.Float32) / 10;

    [Fact]
    public void NpyShardsAndSafetensorsShardsFormOneDataset()
    {
        Npy.Save(Path.Combine(_dir, "a.npy"), Rows(0, 11, 3));
        Npy.Save(Path.Combine(_dir, "b.npy"), Rows(11, 9, 3).to(ScalarType.Float16));
        SafeTensors.Save(Path.Combine(_dir, "c.safetensors"), new Dictionary<string, Tensor> { ["activations"] = Rows(20, 5, 3) });
        using var src = new ActivationFileSource([_dir], new() { ChunkRows = 4, BufferRows = 8, Seed = 4 });
        Assert.Equal(25, src.Rows);
        var all = new List<Tensor>();
        while (src.Next(6) is { } b) all.Add(b.Input);
        var x = cat(all, 0);
        var order = x[.., 0].data<float>().Select(v => (int)Math.Round(v)).ToArray();
        Assert.Equal(Enumerable.Range(0, 25), order.Order());
        // Each emitted row equals the stored row (f16 rounding for b.npy).
        var expected = Rows(0, 25, 3);
        expected[11..20] = expected[11..20].to(ScalarType.Float16).to(ScalarType.Float32);
        Assert.True(x.equal(expected.index_select(0, tensor(order.Select(i => (long)i).ToArray()))).all().item<bool>());
    }

    [Fact]
    public void NpyNaNAndWidthErrorsNameTheFile()
    {
        var bad = Rows(0, 10, 3);
        bad[7, 1] = tensor(float.NaN);
        var path = Path.Combine(_dir, "bad.npy");
        Npy.Save(path, bad);
        using (var src = new ActivationFileSource(path, new() { Shuffle = false, ChunkRows = 3, BufferRows = 3 }))
        {
            src.Next(6)!.Dispose();
            var e = Assert.Throws<SaeSharpException>(() => src.Next(6));
            Assert.Contains($"{path}: row 7 holds NaN", e.Message);
        }
        var e2 = Assert.Throws<SaeSharpException>(() => new ActivationFileSource(path, new() { ExpectedDIn = 4 }));
        Assert.Contains($"{path} has width 3, expected d_in = 4", e2.Message);
        var e3 = Assert.Throws<SaeSharpException>(() => new ActivationFileSource(path, new() { TargetName = "targets" }));
        Assert.Contains(path, e3.Message);
    }
}
