using System.Text.Json.Nodes;
using SaeSharp.Activations;
using SaeSharp.Tests.Models;
using static TorchSharp.torch;

namespace SaeSharp.Tests.Activations;

/// <summary>
/// The model source's shuffle buffer against the definition of SAELens 6.37.6's <c>mixing_buffer</c>
/// (sae_lens/training/mixing_buffer.py at 69c4c62b, <c>activations_mixing_fraction</c>): the buffer is filled one model
/// run at a time until it holds at least B rows, shuffled unless the fraction f is 0, int(B·f) rows are kept back and
/// max(1, ⌊(stored − kept) / batch⌋) whole batches are served; then it is filled again. Every harvested row is
/// identified by matching it to the full model run's cache (window-major order), so the tests can count which rows come
/// out in which round.
/// </summary>
public class MixingBufferTests : ModelTestBase
{
    private const int Ctx = 8, Group = 2, BufferWindows = 10, Batch = 8;
    private const string Hook = "blocks.0.hook_resid_post";

    /// <summary>A tiny GPT-2 with a 1024-token vocabulary, so that windows can start with distinct tokens.</summary>
    private SaeSharp.Models.HookedTransformer Model() =>
        SaeSharp.Models.ModelLoader.FromPretrained(SaeSharp.Models.TinyModels.WriteGpt2(Sub($"gpt2-{Guid.NewGuid():N}"), 1, 2, 16, 4, 1024, 32));

    /// <summary>Windows whose first tokens differ: the model is causal, so every (window, position) row differs from the
    /// others and a handed-out row names the row it came from.</summary>
    private static List<long[]> Windows(int count)
    {
        var r = new Random(7);
        return Enumerable.Range(0, count).Select(i => new[] { (long)i }.Concat(Enumerable.Range(1, Ctx - 1).Select(_ => (long)r.Next(0, 1024))).ToArray()).ToList();
    }

    /// <summary>A drained source: the harvest index of every row handed out, in order, and for every batch the windows
    /// the source had consumed when it was handed out.</summary>
    private sealed record Drained(List<long> Ids, List<long> ConsumedAfterBatch, List<int> BatchRows);

    private Drained Drain(int windows, double fraction, ulong seed = 3, int batch = Batch, int bufferWindows = BufferWindows)
    {
        using var model = Model();
        var w = Windows(windows);
        using var expected = ModelActivationSourceTests.Expected(model, w, Hook, dropBos: false);
        using var src = new ModelActivationSource(model, new HarvestSpec(Hook), () => w,
            new ModelActivationSourceOptions { ContextSize = Ctx, BatchSizePrompts = Group, BufferContexts = bufferWindows, Seed = seed, MixingFraction = fraction });
        var ids = new List<long>();
        var consumed = new List<long>();
        var rows = new List<int>();
        while (src.Next(batch) is { } b)
        {
            using (b)
            {
                // Nearest row of the full run (the harvest stops after the hook's layer: equal up to rounding).
                using var d = (b.Input.unsqueeze(1) - expected.unsqueeze(0)).pow(2).sum(-1).sqrt();
                var (min, arg) = d.min(1);
                Assert.True(min.max().item<float>() < 1e-4f, $"a handed-out row matches no harvested row ({min.max().item<float>()}, {b.Input.shape[0]}x{b.Input.shape[1]} vs {expected.shape[0]}x{expected.shape[1]})");
                ids.AddRange(arg.data<long>().ToArray());
                consumed.Add(src.ContextsConsumed);
                rows.Add((int)b.Rows);
            }
        }
        return new Drained(ids, consumed, rows);
    }

    [Fact]
    public void Mixing_fraction_zero_serves_the_rows_in_harvest_order()
    {
        var d = Drain(23, 0);
        Assert.Equal(Enumerable.Range(0, 23 * Ctx).Select(i => (long)i), d.Ids);
    }

    [Theory]
    [InlineData(0.5)]
    [InlineData(0.3)]
    [InlineData(1.0)]
    public void Rounds_follow_the_mixing_buffer_definition(double fraction)
    {
        const int windows = 60;
        var d = Drain(windows, fraction);
        // Every harvested row comes out exactly once.
        Assert.Equal(Enumerable.Range(0, windows * Ctx).Select(i => (long)i), d.Ids.Order());

        // Replay the definition: a round starts when the previous one is served; the buffer then takes model runs of
        // Group windows (Group·Ctx rows) until it holds at least B rows, keeps int(B·f) and serves whole batches.
        long b = BufferWindows * Ctx, keep = (long)Math.Floor(b * fraction + 1e-12);
        long harvestedWindows = 0, stored = 0;
        int batchIndex = 0;
        bool ended = false;
        while (batchIndex < d.BatchRows.Count)
        {
            while (stored < b && harvestedWindows < windows) { harvestedWindows += Group; stored += Group * Ctx; }
            long servedBatches = stored >= b ? Math.Max(1, (stored - keep) / Batch) : (stored + Batch - 1) / Batch;
            if (stored < b) ended = true;
            Assert.True(servedBatches > 0, "the source hands out batches the definition does not serve");
            long harvestedRows = harvestedWindows * Ctx;
            for (long i = 0; i < servedBatches; i++, batchIndex++)
            {
                Assert.True(batchIndex < d.BatchRows.Count, $"round ending at window {harvestedWindows}: fewer batches than the definition serves");
                Assert.Equal(harvestedWindows, d.ConsumedAfterBatch[batchIndex]); // no model run before the round is served
                int start = d.BatchRows.Take(batchIndex).Sum();
                for (int r = start; r < start + d.BatchRows[batchIndex]; r++)
                    Assert.True(d.Ids[r] < harvestedRows, $"row {d.Ids[r]} served before window {d.Ids[r] / Ctx} was harvested");
            }
            stored -= Math.Min(stored, servedBatches * Batch);
            if (ended) Assert.Equal(0, stored);
        }
        Assert.Equal(d.BatchRows.Count, batchIndex);
    }

    [Theory]
    [InlineData(0.3)]
    [InlineData(0.7)]
    public void The_fraction_of_old_rows_in_each_round_is_the_mixing_fraction(double fraction)
    {
        // SAELens's own check (test_mixing_buffer_mix_fraction_matches_observed_mix_fraction): in steady state a round
        // draws its rows uniformly from a buffer of about B rows of which int(B·f) were kept from earlier rounds. A round
        // is the batches handed out at one count of consumed windows; its old rows are those harvested before that round's
        // model runs, i.e. by the end of the previous round. B = 40 windows is large beside one model run (2 windows), so
        // the overshoot of the fill (less than one run) moves the expected fraction by less than 0.03.
        const int windows = 400;
        var d = Drain(windows, fraction, seed: 11, bufferWindows: 40);
        var oldFractions = new List<double>();
        long previousRound = 0, thisRound = 0;
        int row = 0;
        for (int i = 0; i < d.BatchRows.Count; i++)
        {
            long consumed = d.ConsumedAfterBatch[i];
            if (consumed != thisRound) (previousRound, thisRound) = (thisRound, consumed);
            if (previousRound > 0 && consumed < windows)
                oldFractions.Add(d.Ids.Skip(row).Take(d.BatchRows[i]).Count(id => id < previousRound * Ctx) / (double)d.BatchRows[i]);
            row += d.BatchRows[i];
        }
        Assert.True(oldFractions.Count > 50, $"only {oldFractions.Count} batches in steady state");
        Assert.InRange(oldFractions.Average(), fraction - 0.06, fraction + 0.06);
    }

    [Fact]
    public void A_state_saved_mid_round_resumes_the_same_rows_and_refuses_another_fraction()
    {
        using var model = Model();
        var w = Windows(40);
        var spec = new HarvestSpec(Hook);
        var opts = new ModelActivationSourceOptions { ContextSize = Ctx, BatchSizePrompts = Group, BufferContexts = BufferWindows, Seed = 5, MixingFraction = 0.7 };
        using var a = new ModelActivationSource(model, spec, () => w, opts);
        for (int i = 0; i < 13; i++) a.Next(Batch)!.Dispose();
        Assert.True(a.ServingRows > 0, "the state should be saved inside a round");
        var json = JsonNode.Parse(a.SaveState().ToJsonString())!;
        using var b = new ModelActivationSource(model, spec, () => w, opts);
        b.LoadState(json);
        while (true)
        {
            using var x = a.Next(Batch);
            using var y = b.Next(Batch);
            if (x is null) { Assert.Null(y); break; }
            Assert.True(ModelActivationSourceTests.SameBits(x.Input, y!.Input));
        }
        using var c = new ModelActivationSource(model, spec, () => w, opts with { MixingFraction = 0.5 });
        var e = Assert.Throws<SaeSharpException>(() => c.LoadState(json));
        Assert.Contains("activations_mixing_fraction", e.Message);
    }

    [Theory]
    [InlineData(-0.1)]
    [InlineData(1.5)]
    public void A_fraction_outside_zero_one_is_refused(double fraction)
    {
        var e = Assert.Throws<SaeSharpException>(() => new ModelActivationSourceOptions { ContextSize = 4, MixingFraction = fraction });
        Assert.Contains("[0, 1]", e.Message);
    }
}
