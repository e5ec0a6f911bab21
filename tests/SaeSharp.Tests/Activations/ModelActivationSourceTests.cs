using System.Text.Json.Nodes;
using SaeSharp.Activations;
using SaeSharp.Models;
using SaeSharp.Tests.Models;
using static TorchSharp.torch;

namespace SaeSharp.Tests.Activations;

public class ModelActivationSourceTests : ModelTestBase
{
    internal const long Bos = 49;

    /// <summary>Deterministic windows over a 50-token vocabulary, BOS at position 0 and sometimes inside.</summary>
    internal static List<long[]> Windows(int count, int ctx, int seed = 7)
    {
        var r = new Random(seed);
        var list = new List<long[]>();
        for (int i = 0; i < count; i++)
        {
            var w = new long[ctx];
            for (int j = 0; j < ctx; j++) w[j] = r.Next(0, 49);
            w[0] = Bos;
            if (i % 3 == 1) w[ctx / 2] = Bos;
            list.Add(w);
        }
        return list;
    }

    /// <summary>Full-model (no stop-at-layer) cache rows of <paramref name="hook"/> at positions whose token is not BOS.</summary>
    internal static Tensor Expected(HookedTransformer model, List<long[]> windows, string hook, bool dropBos)
    {
        var tokens = Tokens([.. windows]);
        var (logits, cache) = model.RunWithCache(tokens, [hook]);
        using (cache)
        {
            logits?.Dispose();
            var rows = cache[hook].reshape(tokens.numel(), -1);
            if (!dropBos) return rows.clone();
            var keep = tokens.reshape(-1).ne(Bos).nonzero().squeeze(1);
            return rows.index_select(0, keep);
        }
    }

    private static List<ActivationBatch> Drain(IActivationSource src, int batch)
    {
        var list = new List<ActivationBatch>();
        while (src.Next(batch) is { } b) list.Add(b);
        return list;
    }

    [Fact]
    public void Buffer_excludes_bos_and_yields_a_shuffled_permutation_of_the_harvested_rows()
    {
        using var model = Gpt2();
        var windows = Windows(10, 8);
        const string hook = "blocks.0.hook_resid_post";
        using var src = new ModelActivationSource(model, new HarvestSpec(hook), () => windows,
            new ModelActivationSourceOptions { ContextSize = 8, BatchSizePrompts = 2, BufferContexts = 4, ExcludeTokenIds = [Bos], Seed = 3 });
        var batches = Drain(src, 7);
        var got = cat(batches.Select(b => b.Input).ToList(), 0);
        var expected = Expected(model, windows, hook, dropBos: true);
        long bosCount = windows.Sum(w => w.Count(t => t == Bos));
        Assert.Equal(10 * 8 - bosCount, expected.shape[0]);
        Assert.Equal(expected.shape, got.shape);
        // Each got row equals exactly one expected row and the matching is one-to-one.
        // Same multiset of rows: sort both by a projection and compare; the order must have been shuffled.
        var proj = linspace(1.0, 2.0, got.shape[1], dtype: ScalarType.Float64);
        var (_, gi) = got.to(ScalarType.Float64).matmul(proj).sort();
        var (_, ei) = expected.to(ScalarType.Float64).matmul(proj).sort();
        AssertAllClose(expected.index_select(0, ei), got.index_select(0, gi), 1e-6, "sorted rows");
        Assert.False(got.allclose(expected), "rows were not shuffled");
        foreach (var b in batches) b.Dispose();
    }

    [Fact]
    public void Stop_at_layer_harvest_equals_full_run_cache_in_order_without_shuffle()
    {
        using var model = Gpt2(nLayer: 3);
        var windows = Windows(5, 8);
        const string hook = "blocks.1.hook_mlp_out";
        using var src = new ModelActivationSource(model, new HarvestSpec(hook), () => windows,
            new ModelActivationSourceOptions { ContextSize = 8, BatchSizePrompts = 2, BufferContexts = 2, Shuffle = false });
        var got = cat(Drain(src, 16).Select(b => b.Input).ToList(), 0);
        AssertAllClose(Expected(model, windows, hook, dropBos: false), got, 1e-6, "harvest vs full run");
    }

    [Fact]
    public void In_to_out_targets_are_the_module_output_hook()
    {
        using var model = NeoX(parallel: false);
        var spec = HarvestSpec.Resolve(model.HookPoints, "gpt_neox.layers.1.mlp", HarvestMode.InToOut);
        Assert.Equal("blocks.1.ln2.hook_normalized", spec.InputHook);
        Assert.Equal("blocks.1.hook_mlp_out", spec.TargetHook);
        var windows = Windows(4, 6);
        using var src = new ModelActivationSource(model, spec, () => windows,
            new ModelActivationSourceOptions { ContextSize = 6, BatchSizePrompts = 2, BufferContexts = 2, Shuffle = false });
        var batches = Drain(src, 5);
        Assert.All(batches, b => Assert.True(b.HasSeparateTarget));
        AssertAllClose(Expected(model, windows, spec.InputHook, false), cat(batches.Select(b => b.Input).ToList(), 0), 1e-6, "input");
        AssertAllClose(Expected(model, windows, spec.TargetHook!, false), cat(batches.Select(b => b.Target).ToList(), 0), 1e-6, "target");
    }

    [Fact]
    public void Restored_source_yields_exactly_the_same_next_batches()
    {
        using var model = Gpt2();
        var windows = Windows(24, 8);
        int enumerations = 0;
        IEnumerable<long[]> Stream() { enumerations++; foreach (var w in windows) yield return w; }
        var spec = HarvestSpec.Resolve(model.HookPoints, "blocks.0.mlp", HarvestMode.InToOut);
        var opts = new ModelActivationSourceOptions { ContextSize = 8, BatchSizePrompts = 3, BufferContexts = 6, ExcludeTokenIds = [Bos], Seed = 11 };
        using var a = new ModelActivationSource(model, spec, Stream, opts);
        for (int i = 0; i < 5; i++) a.Next(9)!.Dispose();
        var json = JsonNode.Parse(a.SaveState().ToJsonString())!;

        using var b = new ModelActivationSource(model, spec, Stream, opts);
        b.LoadState(json);
        Assert.Equal(a.ContextsConsumed, b.ContextsConsumed);
        int count = 0;
        while (true)
        {
            using var x = a.Next(9);
            using var y = b.Next(9);
            if (x is null) { Assert.Null(y); break; }
            Assert.NotNull(y);
            Assert.True(SameBits(x.Input, y!.Input), $"input of batch {count} differs after restore: {x.Input.shape[0]} vs {y.Input.shape[0]} rows, max diff {(x.Input.shape[0] == y.Input.shape[0] ? (x.Input - y.Input).abs().max().item<float>() : -1)}");
            Assert.True(SameBits(x.Target, y.Target), $"target of batch {count} differs after restore");
            count++;
        }
        Assert.True(count > 5, "the test should cross several refills");
        Assert.Equal(2, enumerations); // one pass for a, one for the restore (which then continues on it)
    }

    [Fact]
    public void Epochs_repeat_the_dataset_and_the_budget_counts_windows_over_all_passes()
    {
        using var model = Gpt2();
        var windows = Windows(4, 8);
        const string hook = "blocks.0.hook_resid_post";
        var once = Expected(model, windows, hook, dropBos: false); // 32 rows in harvest order
        ModelActivationSource Open(int epochs, long? maxContexts, Func<IEnumerable<long[]>>? stream = null) =>
            new(model, new HarvestSpec(hook), stream ?? (() => windows),
                new ModelActivationSourceOptions { ContextSize = 8, BatchSizePrompts = 2, BufferContexts = 2, Shuffle = false, Epochs = epochs, MaxContexts = maxContexts });

        using (var three = Open(3, null))
        {
            var got = cat(Drain(three, 5).Select(b => b.Input).ToList(), 0);
            AssertAllClose(cat([once, once, once], 0), got, 1e-6, "three passes");
            Assert.Equal(3, three.DataPass);
            Assert.Equal(12, three.ContextsConsumed);
            Assert.Equal(96, three.RowsDelivered);
            Assert.Equal(32, three.RowsPerPass);
        }
        using (var once1 = Open(1, null))
        {
            Assert.Equal(32, Drain(once1, 5).Sum(b => b.Rows)); // the default reads the dataset once
            Assert.Equal(1, once1.DataPass);
        }
        using (var budget = Open(0, 10))
        {
            var got = cat(Drain(budget, 7).Select(b => b.Input).ToList(), 0);
            // 10 windows: two whole passes and the first two windows of a third.
            AssertAllClose(cat([once, once, once.narrow(0, 0, 16)], 0), got, 1e-6, "budget of 10 windows");
            Assert.Equal(3, budget.DataPass);
            Assert.Equal(80, budget.RowsDelivered);
            Assert.Equal(32, budget.RowsPerPass);
        }
        using (var empty = Open(0, null, () => []))
            Assert.Null(empty.Next(4)); // no windows: no endless loop
    }

    [Fact]
    public void Restore_across_a_pass_boundary_yields_the_same_next_batches()
    {
        using var model = Gpt2();
        var windows = Windows(5, 8);
        var spec = new HarvestSpec("blocks.1.hook_resid_pre");
        var opts = new ModelActivationSourceOptions { ContextSize = 8, BatchSizePrompts = 2, BufferContexts = 4, Seed = 5, Epochs = 0, MaxContexts = 17 };
        using var a = new ModelActivationSource(model, spec, () => windows, opts);
        while (a.ContextsConsumed <= 6) a.Next(9)!.Dispose(); // into the second pass
        Assert.Equal(2, a.DataPass);
        var json = JsonNode.Parse(a.SaveState().ToJsonString())!;
        using var b = new ModelActivationSource(model, spec, () => windows, opts);
        b.LoadState(json);
        Assert.Equal(2, b.DataPass);
        Assert.Equal(a.RowsDelivered, b.RowsDelivered);
        Assert.Equal(a.RowsPerPass, b.RowsPerPass);
        long rows = 0;
        while (true)
        {
            using var x = a.Next(9);
            using var y = b.Next(9);
            if (x is null) { Assert.Null(y); break; }
            Assert.True(SameBits(x.Input, y!.Input));
            rows += x.Rows;
        }
        Assert.Equal(4, a.DataPass); // 17 windows of 5 per pass
        Assert.True(rows > 0);
        Assert.Equal(17 * 8, a.RowsDelivered);
        Assert.Equal(17 * 8, b.RowsDelivered);
        Assert.Equal(5 * 8, b.RowsPerPass);
    }

    internal static bool SameBits(Tensor a, Tensor b) => a.shape.SequenceEqual(b.shape) && a.eq(b).all().item<bool>();

    [Fact]
    public void Context_budget_limits_the_rows()
    {
        using var model = Gpt2();
        var windows = Windows(10, 8);
        using var src = new ModelActivationSource(model, new HarvestSpec("blocks.0.hook_resid_pre"), () => windows,
            new ModelActivationSourceOptions { ContextSize = 8, BatchSizePrompts = 4, BufferContexts = 4, MaxContexts = 5 });
        Assert.Equal(40, Drain(src, 6).Sum(b => b.Rows));
        Assert.Equal(5, src.ContextsConsumed);
    }

    [Fact]
    public void Bad_options_and_states_are_reported()
    {
        using var model = Gpt2();
        var windows = Windows(4, 8);
        Assert.Throws<SaeSharpException>(() => HarvestSpec.Resolve(model.HookPoints, "blocks.0.hook_mlp_out", HarvestMode.InToOut));
        Assert.Throws<SaeSharpException>(() => HarvestSpec.ParseMode("sideways"));
        using var src = new ModelActivationSource(model, new HarvestSpec("blocks.0.hook_resid_pre"), () => windows,
            new ModelActivationSourceOptions { ContextSize = 8, BatchSizePrompts = 2, BufferContexts = 2 });
        src.Next(3)!.Dispose();
        var state = src.SaveState();
        using var other = new ModelActivationSource(model, new HarvestSpec("blocks.1.hook_resid_pre"), () => windows,
            new ModelActivationSourceOptions { ContextSize = 8, BatchSizePrompts = 2, BufferContexts = 2 });
        var e = Assert.Throws<SaeSharpException>(() => other.LoadState(state));
        Assert.Contains("hook", e.Message);
        // Another shuffle buffer (--buffer-batches) would shuffle the rest of the run differently: refused, naming both.
        using var otherBuffer = new ModelActivationSource(model, new HarvestSpec("blocks.0.hook_resid_pre"), () => windows,
            new ModelActivationSourceOptions { ContextSize = 8, BatchSizePrompts = 2, BufferContexts = 4 });
        e = Assert.Throws<SaeSharpException>(() => otherBuffer.LoadState(JsonNode.Parse(state.ToJsonString())!));
        Assert.Contains("shuffle buffer of 2 context windows but this source has 4", e.Message);
        using var wrongLength = new ModelActivationSource(model, new HarvestSpec("blocks.0.hook_resid_pre"), () => windows,
            new ModelActivationSourceOptions { ContextSize = 6, BatchSizePrompts = 2, BufferContexts = 2 });
        Assert.Throws<SaeSharpException>(() => wrongLength.Next(3));
    }
}
