using SaeSharp.Analysis;
using SaeSharp.Interventions;
using SaeSharp.Models;
using SaeSharp.Tests.Models;
using static TorchSharp.torch;

namespace SaeSharp.Tests.Interventions;

/// <summary>TransformerLens's head ablation (<see cref="HeadAblation"/>, <c>--ablate-head</c>), the per-position loss of Main
/// Demo cell 44 (<see cref="TokenLosses.LossByPosition"/>, <c>--loss-per-position</c>) and its repeated random tokens
/// (<see cref="RepeatedRandomTokens"/>) on a tiny GPT-2.</summary>
public class HeadAblationTests : ModelTestBase
{
    private static Tensor Tokens() => tensor(new long[] { 5, 9, 3, 12, 40, 7, 5, 9, 3, 12, 40, 7 }, [2, 6]);

    private HookedTransformer Model(int seed) =>
        ModelLoader.FromPretrained(TinyModels.WriteGpt2(Sub($"g{seed}"), seed: seed, nLayer: 2, nEmbd: 16, nHead: 4, vocab: 64));

    [Theory]
    [InlineData(HeadAblationKind.Zero)]
    [InlineData(HeadAblationKind.Mean)]
    public void Ablating_a_head_whose_W_O_is_zero_changes_nothing(HeadAblationKind kind)
    {
        using var model = Model(11);
        ActivationPatchingTests.ZeroHeadOutput(model, layer: 1, head: 3);
        using var tokens = Tokens();
        using var clean = model.Forward(tokens);
        using var ablated = model.RunWithHooks(tokens, HeadAblation.Hooks(model, [new AttentionHead(1, 3)], kind));
        Assert.Equal(0, (ablated - clean).abs().max().item<float>(), 1e-5);
        // A live head does change the logits.
        using var live = model.RunWithHooks(tokens, HeadAblation.Hooks(model, [new AttentionHead(1, 0)], kind));
        Assert.True((live - clean).abs().max().item<float>() > 1e-3);
    }

    [Fact]
    public void Zero_ablating_a_head_removes_its_result_from_the_residual_stream()
    {
        using var model = Model(12);
        using var tokens = Tokens();
        var hp = model.HookPoints.Blocks[1];
        using var run = model.RunWithCache(tokens, [hp.Result]);
        using var result = run.Cache[hp.Result].select(2, 2).clone();           // [batch, pos, d_model] of L1H2
        // Independently: the clean run with that head's result taken out of the residual stream right after its layer's attention.
        using var expected = model.RunWithHooks(tokens, (hp.ResidMid, x => x - result));
        using var ablated = model.RunWithHooks(tokens, HeadAblation.Hooks(model, [new AttentionHead(1, 2)], HeadAblationKind.Zero));
        Assert.Equal(0, (ablated - expected).abs().max().item<float>(), 1e-4);
    }

    [Fact]
    public void Mean_ablation_gives_the_head_its_own_mean_z_at_every_position()
    {
        using var model = Model(13);
        using var tokens = Tokens();
        string z = model.HookPoints.Blocks[0].Z;
        using var clean = model.RunWithCache(tokens, [z]);
        double[] mean = clean.Cache[z].select(2, 1).mean([0, 1]).to(ScalarType.Float64).data<double>().ToArray();
        using var ablated = model.RunWithCache(tokens, new RunOptions { CacheNames = [z], Hooks = HeadAblation.Hooks(model, [new AttentionHead(0, 1)], HeadAblationKind.Mean) });
        var after = ablated.Cache[z];
        for (int b = 0; b < 2; b++)
            for (int p = 0; p < 6; p++)
                for (int d = 0; d < mean.Length; d++) Assert.Equal(mean[d], after[b, p, 1, d].item<float>(), 1e-5);
        Assert.Equal(0, (after.select(2, 0) - clean.Cache[z].select(2, 0)).abs().max().item<float>(), 1e-6);
    }

    [Fact]
    public void The_ablated_runs_logit_attribution_sums_to_its_own_logit_difference_and_the_head_gives_nothing()
    {
        using var model = Model(14);
        using var tokens = tensor(new long[] { 5, 9, 3, 12, 40, 7 }).unsqueeze(0);
        var hooks = HeadAblation.Hooks(model, [new AttentionHead(1, 2), new AttentionHead(0, 0)], HeadAblationKind.Zero);
        var r = LogitAttribution.Run(model, [tokens], [(3, 5)], hooks);
        using var logits = model.RunWithHooks(tokens, hooks);
        double own = logits[0, -1, 3].item<float>() - (double)logits[0, -1, 5].item<float>();
        var plain = LogitAttribution.Run(model, [tokens], [(3, 5)]);
        Assert.True(Math.Abs(own - plain.LogitDiff) > 1e-3, "the ablation should move the logit difference");
        Assert.Equal(own, r.LogitDiff, 1e-5);
        Assert.Equal(own, r.PerLayer.Sum(c => c.LogitDiff) + r.Bias, 1e-4);
        Assert.Equal(0, r.PerHead.Single(h => h.Label == "L1H2").LogitDiff, 1e-6);
        Assert.Equal(0, r.PerHead.Single(h => h.Label == "L0H0").LogitDiff, 1e-6);
    }

    [Fact]
    public void Ablating_at_the_last_position_leaves_earlier_positions_unchanged_and_changes_the_last()
    {
        using var model = Model(17);
        using var tokens = Tokens();
        using var clean = model.Forward(tokens);
        var heads = new[] { new AttentionHead(0, 1) };
        using var last = model.RunWithHooks(tokens, HeadAblation.Hooks(model, heads, HeadAblationKind.Zero, positions: [-1]));
        // Attention is causal: positions 0..4 do not see position 5, so their logits are the clean ones.
        Assert.Equal(0, (last.narrow(1, 0, 5) - clean.narrow(1, 0, 5)).abs().max().item<float>(), 1e-6);
        Assert.True((last.select(1, 5) - clean.select(1, 5)).abs().max().item<float>() > 1e-3);
        // At position 2 only: 0 and 1 unchanged, 2..5 changed; -1 and 5 are one position of a 6-token run.
        using var mid = model.RunWithHooks(tokens, HeadAblation.Hooks(model, heads, HeadAblationKind.Zero, positions: [2]));
        Assert.Equal(0, (mid.narrow(1, 0, 2) - clean.narrow(1, 0, 2)).abs().max().item<float>(), 1e-6);
        for (int p = 2; p < 6; p++) Assert.True((mid.select(1, p) - clean.select(1, p)).abs().max().item<float>() > 1e-4, $"position {p}");
        using var five = model.RunWithHooks(tokens, HeadAblation.Hooks(model, heads, HeadAblationKind.Zero, positions: [5]));
        Assert.Equal(0, (five - last).abs().max().item<float>(), 1e-7);
        // Ablating every position equals ablating them all by name.
        using var all = model.RunWithHooks(tokens, HeadAblation.Hooks(model, heads, HeadAblationKind.Zero));
        using var named = model.RunWithHooks(tokens, HeadAblation.Hooks(model, heads, HeadAblationKind.Zero, positions: [0, 1, 2, 3, 4, -1]));
        Assert.Equal(0, (all - named).abs().max().item<float>(), 1e-7);
        var e = Assert.Throws<SaeSharpException>(() => model.RunWithHooks(tokens, HeadAblation.Hooks(model, heads, HeadAblationKind.Zero, "--ablate-head", [6])));
        Assert.Contains("--ablate-head position 6: the input has 6 tokens", e.Message);
        e = Assert.Throws<SaeSharpException>(() => model.RunWithHooks(tokens, HeadAblation.Hooks(model, heads, HeadAblationKind.Zero, "--ablate-head", [-7])));
        Assert.Contains("--ablate-head position -7", e.Message);
    }

    [Fact]
    public void Mean_over_a_reference_set_is_the_hand_computed_mean_z_and_is_what_the_ablation_puts_in()
    {
        using var model = Model(18);
        using var a = tensor(new long[] { 1, 2, 3, 4, 5, 6, 7, 8 }, [2, 4]);
        using var b = tensor(new long[] { 30, 31, 32 }, [1, 3]);
        var head = new AttentionHead(1, 2);
        string z = model.HookPoints.Blocks[1].Z;
        // By hand: the sum of head 2's z over the 8 + 3 positions, divided by 11.
        int dHead = model.Config.DHead;
        var sum = new double[dHead];
        foreach (var t in new[] { a, b })
        {
            using var run = model.RunWithCache(t, [z]);
            var zt = run.Cache[z];
            for (int r = 0; r < t.shape[0]; r++)
                for (int p = 0; p < t.shape[1]; p++)
                    for (int d = 0; d < dHead; d++) sum[d] += zt[r, p, 2, d].item<float>();
        }
        var means = HeadAblation.MeanZ(model, [head, head], [a, b]);
        try
        {
            Assert.Single(means);
            var got = means[head].data<double>().ToArray();
            for (int d = 0; d < dHead; d++) Assert.Equal(sum[d] / 11, got[d], 1e-5);
            // The run on other tokens, head 2 replaced by the reference mean at the last position only.
            using var tokens = Tokens();
            using var ablated = model.RunWithCache(tokens, new RunOptions
            {
                CacheNames = [z], Hooks = HeadAblation.Hooks(model, [head], HeadAblationKind.Mean, positions: [-1], reference: means),
            });
            using var clean = model.RunWithCache(tokens, [z]);
            var after = ablated.Cache[z];
            for (int r = 0; r < 2; r++)
                for (int d = 0; d < dHead; d++) Assert.Equal(sum[d] / 11, after[r, 5, 2, d].item<float>(), 1e-5);
            Assert.Equal(0, (after.narrow(1, 0, 5) - clean.Cache[z].narrow(1, 0, 5)).abs().max().item<float>(), 1e-6);
            Assert.Throws<SaeSharpException>(() => HeadAblation.Hooks(model, [head], HeadAblationKind.Zero, reference: means));
            Assert.Contains("no reference mean", Assert.Throws<SaeSharpException>(() =>
                HeadAblation.Hooks(model, [new AttentionHead(0, 0)], HeadAblationKind.Mean, reference: means)).Message);
        }
        finally
        {
            foreach (var t in means.Values) t.Dispose();
        }
    }

    [Fact]
    public void Heads_parse_as_layer_dot_head_or_TransformerLens_labels_and_out_of_range_heads_are_refused()
    {
        Assert.Equal(new AttentionHead(0, 8), AttentionHead.Parse("0.8"));
        Assert.Equal(new AttentionHead(10, 7), AttentionHead.Parse("L10H7"));
        Assert.Contains("--ablate-head '0-8'", Assert.Throws<SaeSharpException>(() => AttentionHead.Parse("0-8", "--ablate-head")).Message);
        using var model = Model(15);
        Assert.Contains("head 4 is outside", Assert.Throws<SaeSharpException>(() => HeadAblation.Hooks(model, [new AttentionHead(0, 4)], HeadAblationKind.Zero)).Message);
        Assert.Contains("layer 2 is outside", Assert.Throws<SaeSharpException>(() => HeadAblation.Hooks(model, [new AttentionHead(2, 0)], HeadAblationKind.Zero)).Message);
    }

    [Fact]
    public void Loss_by_position_is_the_batch_mean_of_minus_log_softmax_of_the_next_token()
    {
        using var model = Model(16);
        using var tokens = Tokens();
        using var logits = model.Forward(tokens);
        var loss = TokenLosses.LossByPosition(logits, tokens);
        Assert.Equal(5, loss.Length);
        var ids = tokens.data<long>().ToArray();
        for (int t = 0; t < 5; t++)
        {
            double sum = 0;
            for (int b = 0; b < 2; b++)
            {
                var row = logits[b, t].data<float>().Select(v => (double)v).ToArray();
                double max = row.Max(), logZ = max + Math.Log(row.Sum(v => Math.Exp(v - max)));
                sum += logZ - row[ids[b * 6 + t + 1]];
            }
            Assert.Equal(sum / 2, loss[t], 1e-5);
        }
    }

    [Fact]
    public void Repeated_random_tokens_repeat_each_row_once_in_the_notebooks_range()
    {
        using var big = RepeatedRandomTokens.ForVocabulary(3, 7, 50257, seed: 1);
        Assert.Equal([3L, 14], big.shape);
        var ids = big.data<long>().ToArray();
        for (int b = 0; b < 3; b++)
            for (int p = 0; p < 7; p++) Assert.Equal(ids[b * 14 + p], ids[b * 14 + 7 + p]);
        Assert.All(ids, id => Assert.InRange(id, 1000, 9999));
        using var again = RepeatedRandomTokens.ForVocabulary(3, 7, 50257, seed: 1);
        Assert.Equal(ids, again.data<long>().ToArray());
        using var other = RepeatedRandomTokens.ForVocabulary(3, 7, 50257, seed: 2);
        Assert.NotEqual(ids, other.data<long>().ToArray());
        using var small = RepeatedRandomTokens.ForVocabulary(2, 50, 64, seed: 1);
        Assert.All(small.data<long>().ToArray(), id => Assert.InRange(id, 0, 63));
    }

    [Fact]
    public void Run_command_prints_the_loss_clean_and_ablated_overall_and_per_position()
    {
        string dir = TinyModels.WriteGpt2(Sub("tok"), seed: 3, nLayer: 1, nEmbd: 16, nHead: 4, vocab: 50257, nPositions: 64);
        AddGpt2Tokenizer(dir);
        var (exit, output, err) = SaeSharp.Tests.Cli.CliRunner.Run("model", "run", "--model", dir, "--repeated-random", "5", "--batch", "2", "--seed", "3",
            "--loss-per-position", "--ablate-head", "0.1", "--ablate-head-mode", "mean");
        Assert.True(exit == 0, err);
        Assert.Contains("L0H1 mean-ablated", output);
        Assert.Contains("loss per prompt", output);
        Assert.Contains("next-token loss at each position, mean over 2 rows", output);
        Assert.Contains("on the first copy", output);
        var (bad, _, badErr) = SaeSharp.Tests.Cli.CliRunner.Run("model", "run", "--model", dir, "--repeated-random", "5", "--ablate-head", "0.4");
        Assert.NotEqual(0, bad);
        Assert.Contains("--ablate-head 0.4: head 4 is outside", badErr);
        var (noRepeat, _, noRepeatErr) = SaeSharp.Tests.Cli.CliRunner.Run("model", "run", "--model", dir, "--prompt", "Hello world", "--batch", "2", "--loss-per-position");
        Assert.NotEqual(0, noRepeat);
        Assert.Contains("--batch", noRepeatErr);
        var (attrs, attrsOut, attrsErr) = SaeSharp.Tests.Cli.CliRunner.Run("model", "logit-attrs", "--model", dir, "--prompt", "Hello world", "--answer", " world, there",
            "--ablate-head", "L0H2");
        Assert.True(attrs == 0, attrsErr);
        Assert.Contains("the run with L0H2 zero-ablated", attrsOut);
        (attrs, attrsOut, attrsErr) = SaeSharp.Tests.Cli.CliRunner.Run("model", "logit-attrs", "--model", dir, "--prompt", "Hello world", "--answer", " world, there",
            "--png", Sub("dla.png"));
        Assert.True(attrs == 0, attrsErr);
        Assert.Contains($"wrote {Sub("dla.png")}", attrsOut);
        Assert.Equal([0x89, (byte)'P', (byte)'N', (byte)'G'], File.ReadAllBytes(Sub("dla.png")).Take(4));
    }

    [Fact]
    public void Run_command_ablates_heads_at_positions_over_a_reference_mean_and_with_saes_spliced()
    {
        string dir = TinyModels.WriteGpt2(Sub("sae-run"), seed: 4, nLayer: 2, nEmbd: 16, nHead: 4, vocab: 50257, nPositions: 64);
        AddGpt2Tokenizer(dir);
        string hook = "blocks.0.hook_resid_post";
        using (var sae = InterventionTests.RandomSae(hook, 16, 24, 9, encBias: 0.1)) SaeSharp.Interop.SaeLensFormat.Save(sae, Sub("sae"));
        using var tokens = tensor(new long[] { 50256, 464, 3290, 318, 257, 1332, 50256, 40, 588, 257, 3797, 13 }, [2, 6]);
        SaeSharp.IO.SafeTensors.Save(Sub("in.safetensors"), new Dictionary<string, Tensor> { ["tokens"] = tokens });
        using var reference = tensor(new long[] { 50256, 1000, 2000, 3000, 4000 }, [1, 5]);
        SaeSharp.IO.SafeTensors.Save(Sub("ref.safetensors"), new Dictionary<string, Tensor> { ["tokens"] = reference });
        var (exit, output, err) = SaeSharp.Tests.Cli.CliRunner.Run("model", "run", "--model", dir, "--input", Sub("in.safetensors"), "--out", Sub("out.safetensors"),
            "--sae", Sub("sae"), "--ablate-head", "1.2", "--ablate-positions", "-1", "--ablate-head-mode", "mean", "--mean-over", Sub("ref.safetensors"));
        Assert.True(exit == 0, err);
        Assert.Contains($"L1H2 mean-ablated (hook_z at positions -1; mean over {Sub("ref.safetensors")})", output);
        Assert.Contains("SAE+ablated", output);
        // Independently: the SAE's reconstruction at its hook, and head 1.2's z at the last position replaced by its mean z over
        // the reference tokens in the model's own run (no SAE there).
        using var m = ModelLoader.FromPretrained(dir);
        using var s = SaeSharp.Interop.SaeLoader.Load(Sub("sae"));
        string z = m.HookPoints.Blocks[1].Z;
        using var refRun = m.RunWithCache(reference, [z]);
        using var mean = refRun.Cache[z].select(2, 2).mean([0, 1]);
        using var expected = m.RunWithHooks(tokens, (hook, x => s.forward(x)), (z, t =>
        {
            var y = t.clone();
            y[.., -1, 2] = mean;
            return y;
        }));
        var saved = SaeSharp.IO.SafeTensors.Load(Sub("out.safetensors"));
        Assert.True(saved["logits"].allclose(expected, rtol: 1e-4, atol: 1e-4));
        var (bad, _, badErr) = SaeSharp.Tests.Cli.CliRunner.Run("model", "run", "--model", dir, "--input", Sub("in.safetensors"), "--metric", "loss",
            "--ablate-head", "1.2", "--mean-prompt", "Hello");
        Assert.NotEqual(0, bad);
        Assert.Contains("--mean-prompt: the reference set of a mean ablation; give --ablate-head-mode mean", badErr);
        (bad, _, badErr) = SaeSharp.Tests.Cli.CliRunner.Run("model", "run", "--model", dir, "--input", Sub("in.safetensors"), "--metric", "loss",
            "--ablate-head", "1.2", "--ablate-positions", "9");
        Assert.NotEqual(0, bad);
        Assert.Contains("--ablate-head position 9: the input has 6 tokens", badErr);
        (bad, _, badErr) = SaeSharp.Tests.Cli.CliRunner.Run("model", "run", "--model", dir, "--input", Sub("in.safetensors"), "--metric", "loss", "--ablate-positions", "-1");
        Assert.NotEqual(0, bad);
        Assert.Contains("give --ablate-head", badErr);
    }
}
