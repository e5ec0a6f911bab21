using SaeSharp.Interventions;
using SaeSharp.Models;
using SaeSharp.Tests.Models;
using static TorchSharp.torch;

namespace SaeSharp.Tests.Interventions;

/// <summary>Path patching (<see cref="PathPatching"/>, the IOI paper's definition) on a tiny GPT-2: no receivers is no
/// effect; the final residual stream as receiver of a last-layer head is plain z patching of that head (nothing after it is
/// frozen); a head whose W_O is zero carries nothing.</summary>
public class PathPatchingTests : ModelTestBase
{
    private static readonly AttributionMetric[] Metric = [AttributionMetric.LogitDiff(3, 5)];

    private HookedTransformer Model(int seed) =>
        ModelLoader.FromPretrained(TinyModels.WriteGpt2(Sub("g"), seed: seed, nLayer: 2, nEmbd: 16, nHead: 4, vocab: 64));

    [Fact]
    public void No_receivers_is_no_effect()
    {
        using var model = Model(21);
        using var clean = tensor(new long[] { 5, 9, 3, 12, 40, 7 }).unsqueeze(0);
        using var corrupted = tensor(new long[] { 5, 9, 30, 12, 40, 7 }).unsqueeze(0);
        var r = PathPatching.Run(model, clean, corrupted, [new AttentionHead(0, 1)], [], PathReceiverInput.Q, Metric);
        Assert.True(Math.Abs(r.Clean - r.Corrupted) > 1e-3, "the corruption should move the metric");
        Assert.Equal(r.Clean, r.Patched, 1e-6);
        Assert.Equal(0, r.Normalized, 1e-6);
    }

    [Fact]
    public void To_the_final_residual_a_last_layer_head_is_plain_z_patching_from_corrupted_into_clean()
    {
        using var model = Model(22);
        using var clean = tensor(new long[] { 5, 9, 3, 12, 40, 7 }).unsqueeze(0);
        using var corrupted = tensor(new long[] { 5, 9, 30, 12, 40, 7 }).unsqueeze(0);
        // Activation patching the other way round: the corrupted z of each head patched into the clean run.
        var plain = ActivationPatching.Run(model, corrupted, clean, PatchedActivation.HeadZ, Metric[0]);
        var each = PathPatching.RunEachSender(model, clean, corrupted, null, PathReceiverInput.Q, Metric);
        for (int h = 0; h < 4; h++)
        {
            Assert.Equal(plain.Patched[1, h], PathPatching.Run(model, clean, corrupted, [new AttentionHead(1, h)], null, PathReceiverInput.Q, Metric).Patched, 1e-5);
            Assert.Equal(plain.Patched[1, h], each.Patched[1, h], 1e-5);
        }
        Assert.Contains(Enumerable.Range(0, 4), h => Math.Abs(each.Patched[1, h] - each.Clean) > 1e-4);
    }

    [Fact]
    public void A_sender_whose_W_O_is_zero_carries_nothing()
    {
        using var model = Model(23);
        ActivationPatchingTests.ZeroHeadOutput(model, layer: 0, head: 2);
        using var clean = tensor(new long[] { 5, 9, 3, 12, 40, 7 }).unsqueeze(0);
        using var corrupted = tensor(new long[] { 5, 9, 30, 12, 40, 7 }).unsqueeze(0);
        AttentionHead[] layer1 = [new(1, 0), new(1, 1), new(1, 2), new(1, 3)];
        foreach (var input in Enum.GetValues<PathReceiverInput>())
        {
            var dead = PathPatching.Run(model, clean, corrupted, [new AttentionHead(0, 2)], layer1, input, Metric);
            Assert.Equal(0, dead.Normalized, 1e-5);
        }
        Assert.Equal(0, PathPatching.Run(model, clean, corrupted, [new AttentionHead(0, 2)], null, PathReceiverInput.Q, Metric).Normalized, 1e-5);
        // A live head of layer 0 that reads the corrupted token does reach layer 1's values.
        var live = PathPatching.RunEachSender(model, clean, corrupted, layer1, PathReceiverInput.V, Metric);
        Assert.Contains(new[] { 0, 1, 3 }, h => Math.Abs(live.Patched[0, h] - live.Clean) > 1e-4);
        for (int h = 0; h < 4; h++) Assert.Equal(live.Clean, live.Patched[1, h], 1e-6);   // a receiver's own layer cannot reach it
        Assert.Throws<SaeSharpException>(() => PathPatching.Run(model, clean, corrupted, [new AttentionHead(2, 0)], null, PathReceiverInput.Q, Metric));
    }
}
