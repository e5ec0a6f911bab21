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

    private static double LogitDiff(Tensor logits) => (logits[0, -1, 3] - logits[0, -1, 5]).item<float>();

    [Fact]
    public void An_MLP_sender_is_its_corrupted_hook_mlp_out_with_every_head_frozen_clean_as_a_hand_written_hook_run()
    {
        using var model = Model(24);
        using var clean = tensor(new long[] { 5, 9, 3, 12, 40, 7 }).unsqueeze(0);
        using var corrupted = tensor(new long[] { 5, 9, 30, 12, 40, 7 }).unsqueeze(0);
        using var scope = NewDisposeScope();
        using var _ = no_grad();
        string[] z = ["blocks.0.attn.hook_z", "blocks.1.attn.hook_z"];
        using var cleanRun = model.RunWithCache(clean, z);
        using var corruptedRun = model.RunWithCache(corrupted, ["blocks.0.hook_mlp_out"]);
        (string, Func<Tensor, Tensor?>)[] step2 =
        [
            (z[0], _ => cleanRun.Cache[z[0]].clone()), (z[1], _ => cleanRun.Cache[z[1]].clone()),
            ("blocks.0.hook_mlp_out", _ => corruptedRun.Cache["blocks.0.hook_mlp_out"].clone()),
        ];
        // To the final residual stream: the frozen run's own logits.
        double byHand = LogitDiff(model.RunWithHooks(clean, step2));
        var r = PathPatching.Run(model, clean, corrupted, [], null, PathReceiverInput.Q, Metric, senderMlps: [0]);
        Assert.Equal(byHand, r.Patched, 1e-5);
        Assert.True(Math.Abs(r.Patched - r.Clean) > 1e-4, "MLP 0 reads the corrupted token");
        // To L1H2's queries at position 5 only: step 2's hook_q_input of that head and position, patched alone into a clean run.
        using var frozen = model.RunWithCache(clean, new RunOptions { Hooks = step2, CacheNames = ["blocks.1.hook_q_input"] });
        var patchedAt5 = model.RunWithHooks(clean, ("blocks.1.hook_q_input", x =>
        {
            var y = x.clone();
            y[0, 5, 2].copy_(frozen.Cache["blocks.1.hook_q_input"][0, 5, 2]);
            return y;
        }));
        var at5 = PathPatching.Run(model, clean, corrupted, [], [new AttentionHead(1, 2)], PathReceiverInput.Q, Metric, senderMlps: [0], receiverPositions: [5]);
        Assert.Equal(LogitDiff(patchedAt5), at5.Patched, 1e-5);
        // Every position is the unrestricted patch; positions before the corrupted token (2) see the clean prefix: no effect.
        var every = PathPatching.Run(model, clean, corrupted, [new AttentionHead(0, 1)], [new AttentionHead(1, 2)], PathReceiverInput.V, Metric);
        var listed = PathPatching.Run(model, clean, corrupted, [new AttentionHead(0, 1)], [new AttentionHead(1, 2)], PathReceiverInput.V, Metric,
            receiverPositions: [0, 1, 2, 3, 4, 5]);
        Assert.Equal(every.Patched, listed.Patched, 1e-6);
        var prefix = PathPatching.Run(model, clean, corrupted, [new AttentionHead(0, 1)], [new AttentionHead(1, 2)], PathReceiverInput.V, Metric,
            senderMlps: [0], receiverPositions: [0, 1]);
        Assert.Equal(prefix.Clean, prefix.Patched, 1e-6);
        // An MLP's output reaches later layers only: MLP 1 to layer 1's receivers is the clean run.
        Assert.Equal(r.Clean, PathPatching.Run(model, clean, corrupted, [], [new AttentionHead(1, 0)], PathReceiverInput.Q, Metric, senderMlps: [1]).Patched, 1e-9);
        Assert.Contains("mlp.2", Assert.Throws<SaeSharpException>(() => PathPatching.Run(model, clean, corrupted, [], null, PathReceiverInput.Q, Metric, senderMlps: [2])).Message);
        Assert.Contains("receiver heads", Assert.Throws<SaeSharpException>(() =>
            PathPatching.Run(model, clean, corrupted, [new AttentionHead(0, 1)], null, PathReceiverInput.Q, Metric, receiverPositions: [5])).Message);
        Assert.Contains("position 6", Assert.Throws<SaeSharpException>(() =>
            PathPatching.Run(model, clean, corrupted, [new AttentionHead(0, 1)], [new AttentionHead(1, 2)], PathReceiverInput.Q, Metric, receiverPositions: [6])).Message);
    }
}
