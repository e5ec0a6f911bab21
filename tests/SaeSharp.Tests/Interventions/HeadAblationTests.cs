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
    }
}
