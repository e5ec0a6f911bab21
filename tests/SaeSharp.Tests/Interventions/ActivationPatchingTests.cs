using SaeSharp.Interventions;
using SaeSharp.Models;
using SaeSharp.Tests.Cli;
using SaeSharp.Tests.Models;
using static TorchSharp.torch;

namespace SaeSharp.Tests.Interventions;

/// <summary>TransformerLens's activation patching (<see cref="ActivationPatching"/>, <c>sae model patch</c>) on a tiny
/// GPT-2: patching a run into itself gives its own metric everywhere; at layer 0 the residual stream is the embeddings,
/// so patching the one position where the prompts differ restores the clean metric and any other position changes nothing.</summary>
public class ActivationPatchingTests : ModelTestBase
{
    private static readonly AttributionMetric Metric = AttributionMetric.LogitDiff(3, 5);

    [Fact]
    public void Patching_a_run_into_itself_gives_its_own_metric_everywhere()
    {
        using var model = ModelLoader.FromPretrained(TinyModels.WriteGpt2(Sub("g"), seed: 6, nLayer: 2, nEmbd: 16, nHead: 4, vocab: 64));
        using var tokens = tensor(new long[] { 5, 9, 3, 12, 40, 7 }).unsqueeze(0);
        using var logits = model.Forward(tokens);
        double own = logits[0, -1, 3].item<float>() - (double)logits[0, -1, 5].item<float>();
        foreach (var kind in Enum.GetValues<PatchedActivation>())
        {
            var r = ActivationPatching.Run(model, tokens, tokens, kind, Metric);
            Assert.Equal(own, r.Clean, 1e-5);
            Assert.Equal(own, r.Corrupted, 1e-5);
            Assert.Equal(2, r.Patched.GetLength(0));
            Assert.Equal(ActivationPatching.IsPerHead(kind) ? 4 : 6, r.Patched.GetLength(1));
            foreach (var v in r.Patched) Assert.Equal(own, v, 1e-5);
            if (!ActivationPatching.IsPerHead(kind)) continue;
            var byPos = ActivationPatching.RunByPosition(model, tokens, tokens, kind, [Metric]);
            Assert.Equal(new[] { 2, 6, 4 }, new[] { byPos.Patched.GetLength(0), byPos.Patched.GetLength(1), byPos.Patched.GetLength(2) });
            foreach (var v in byPos.Patched) Assert.Equal(own, v, 1e-5);
        }
    }

    [Fact]
    public void At_layer_0_only_the_position_where_the_prompts_differ_matters_and_it_restores_the_clean_metric()
    {
        using var model = ModelLoader.FromPretrained(TinyModels.WriteGpt2(Sub("g"), seed: 7, nLayer: 2, nEmbd: 16, nHead: 4, vocab: 64));
        using var clean = tensor(new long[] { 5, 9, 3, 12, 40, 7 }).unsqueeze(0);
        using var corrupted = tensor(new long[] { 5, 9, 30, 12, 40, 7 }).unsqueeze(0);
        var r = ActivationPatching.Run(model, clean, corrupted, PatchedActivation.ResidPre, Metric);
        Assert.True(Math.Abs(r.Clean - r.Corrupted) > 1e-3, "the corruption should move the metric");
        for (int p = 0; p < 6; p++)
        {
            Assert.Equal(p == 2 ? r.Clean : r.Corrupted, r.Patched[0, p], 1e-5);
            Assert.Equal(p == 2 ? 1 : 0, r.Normalized(0, p), 1e-3);
        }
        // Before position 2 nothing differs at any layer (causal attention): patching there changes nothing.
        for (int l = 0; l < 2; l++)
            for (int p = 0; p < 2; p++) Assert.Equal(r.Corrupted, r.Patched[l, p], 1e-5);
        // The last layer's MLP output is read only by the unembedding at its own position: patching it anywhere but the
        // last position changes nothing.
        var mlp = ActivationPatching.Run(model, clean, corrupted, PatchedActivation.MlpOut, Metric);
        for (int p = 0; p < 5; p++) Assert.Equal(r.Corrupted, mlp.Patched[1, p], 1e-5);
        Assert.NotEqual(r.Corrupted, mlp.Patched[1, 5], 3);
    }

    [Fact]
    public void A_head_whose_W_O_is_zero_changes_nothing_when_its_z_q_k_v_or_pattern_is_patched_at_every_position_or_by_position()
    {
        using var model = ModelLoader.FromPretrained(TinyModels.WriteGpt2(Sub("g"), seed: 8, nLayer: 2, nEmbd: 16, nHead: 4, vocab: 64));
        ZeroHeadOutput(model, layer: 0, head: 2);
        using var clean = tensor(new long[] { 5, 9, 3, 12, 40, 7 }).unsqueeze(0);
        using var corrupted = tensor(new long[] { 5, 9, 30, 12, 40, 7 }).unsqueeze(0);
        foreach (var kind in new[] { PatchedActivation.HeadZ, PatchedActivation.HeadV, PatchedActivation.HeadPattern, PatchedActivation.HeadQ, PatchedActivation.HeadK })
        {
            var r = ActivationPatching.Run(model, clean, corrupted, kind, Metric);
            Assert.True(Math.Abs(r.Clean - r.Corrupted) > 1e-3, "the corruption should move the metric");
            // The dead head's output is W_O·z = 0 whatever its z, v or pattern: the patched run is the corrupted run.
            Assert.Equal(0, r.Normalized(0, 2), 1e-4);
            // A live head at layer 0 reads the corrupted position (causal attention from the last query): its patch moves the metric.
            Assert.Contains(Enumerable.Range(0, 4).Where(h => h != 2), h => Math.Abs(r.Normalized(0, h)) > 1e-3);
            if (kind == PatchedActivation.HeadV) continue;
            var byPos = ActivationPatching.RunByPosition(model, clean, corrupted, kind, [Metric]);
            for (int p = 0; p < 6; p++)
            {
                Assert.Equal(0, byPos.Normalized(0, p, 2), 1e-4);   // W_O of L0H2 is zero
                // Nothing differs before position 2 (causal attention), and the last layer's z, q or pattern at an earlier
                // position reaches the logits only through its own position, which the metric does not read.
                for (int h = 0; h < 4; h++)
                {
                    if (p < 2) Assert.Equal(0, byPos.Normalized(0, p, h), 1e-4);
                    if (p < 5 && kind != PatchedActivation.HeadK) Assert.Equal(0, byPos.Normalized(1, p, h), 1e-4);
                }
            }
        }
    }

    /// <summary>TransformerLens's <c>layer_pos_head_vector_patch_setter</c> and <c>layer_head_pos_pattern_patch_setter</c>
    /// written out here as plain hooks: act[:, pos, head] (pattern[:, head, dest_pos, :]) from the clean cache.</summary>
    [Fact]
    public void By_position_values_are_those_of_hand_written_hooks()
    {
        using var model = ModelLoader.FromPretrained(TinyModels.WriteGpt2(Sub("g"), seed: 11, nLayer: 2, nEmbd: 16, nHead: 4, vocab: 64));
        using var clean = tensor(new long[] { 5, 9, 3, 12, 40, 7 }).unsqueeze(0);
        using var corrupted = tensor(new long[] { 5, 9, 30, 12, 40, 7 }).unsqueeze(0);
        foreach (var (kind, suffix) in new[] { (PatchedActivation.HeadZ, "attn.hook_z"), (PatchedActivation.HeadV, "attn.hook_v"), (PatchedActivation.HeadPattern, "attn.hook_pattern") })
        {
            var r = ActivationPatching.RunByPosition(model, clean, corrupted, kind, [Metric]);
            foreach (var (l, p, h) in new[] { (0, 2, 1), (1, 5, 3), (1, 3, 0), (0, 4, 2) })
            {
                string name = $"blocks.{l}.{suffix}";
                using var run = model.RunWithCache(clean, [name]);
                var source = run.Cache[name];
                TensorIndex[] at = kind == PatchedActivation.HeadPattern
                    ? [TensorIndex.Colon, TensorIndex.Single(h), TensorIndex.Single(p), TensorIndex.Colon]
                    : [TensorIndex.Colon, TensorIndex.Single(p), TensorIndex.Single(h), TensorIndex.Colon];
                using var logits = model.RunWithHooks(corrupted, (name, x => { var y = x.clone(); y[at] = source[at]; return y; }));
                double expected = logits[0, -1, 3].item<float>() - (double)logits[0, -1, 5].item<float>();
                Assert.Equal(expected, r.Patched[l, p, h], 1e-5);
            }
        }
    }

    /// <summary>The rows of a batch do not interact: patching a batch of two prompt pairs gives the mean of the two pairs
    /// patched alone, each with its own answer pair (<c>logits_to_ave_logit_diff</c>).</summary>
    [Fact]
    public void A_batch_of_prompt_pairs_gives_the_mean_of_the_pairs_alone()
    {
        using var model = ModelLoader.FromPretrained(TinyModels.WriteGpt2(Sub("g"), seed: 12, nLayer: 2, nEmbd: 16, nHead: 4, vocab: 64));
        using var clean = tensor(new long[,] { { 5, 9, 3, 12, 40, 7 }, { 8, 1, 22, 6, 19, 4 } });
        using var corrupted = tensor(new long[,] { { 5, 9, 30, 12, 40, 7 }, { 8, 1, 22, 33, 19, 4 } });
        AttributionMetric[] metrics = [AttributionMetric.LogitDiff(3, 5), AttributionMetric.LogitDiff(10, 2)];
        var both = ActivationPatching.Run(model, clean, corrupted, PatchedActivation.HeadQ, metrics);
        var first = ActivationPatching.Run(model, clean[..1], corrupted[..1], PatchedActivation.HeadQ, metrics[..1]);
        var second = ActivationPatching.Run(model, clean[1..], corrupted[1..], PatchedActivation.HeadQ, metrics[1..]);
        Assert.Equal((first.Clean + second.Clean) / 2, both.Clean, 1e-5);
        Assert.Equal((first.Corrupted + second.Corrupted) / 2, both.Corrupted, 1e-5);
        for (int l = 0; l < 2; l++)
            for (int h = 0; h < 4; h++) Assert.Equal((first.Patched[l, h] + second.Patched[l, h]) / 2, both.Patched[l, h], 1e-5);
        Assert.Throws<SaeSharpException>(() => ActivationPatching.Run(model, clean, corrupted, PatchedActivation.HeadZ, [.. metrics, metrics[0]]));
    }

    /// <summary>The logit difference 3 − 5 at the last token of a hand-written hook run: the corrupted tokens with
    /// <paramref name="hook"/>'s slice <paramref name="at"/> taken from the clean run's cache.</summary>
    private static double HandPatched(HookedTransformer model, Tensor clean, Tensor corrupted, string hook, TensorIndex[] at)
    {
        using var run = model.RunWithCache(clean, [hook]);
        var source = run.Cache[hook];
        using var logits = model.RunWithHooks(corrupted, (hook, x => { var y = x.clone(); y[at] = source[at]; return y; }));
        return logits[0, -1, 3].item<float>() - (double)logits[0, -1, 5].item<float>();
    }

    /// <summary><c>get_act_patch_resid_mid</c>: a cell is the hand-written hook run of <c>layer_pos_patch_setter</c>
    /// (<c>resid_mid[:, pos] = clean[:, pos]</c>); at the last layer's last position resid_mid is the whole residual the
    /// logits read but for the MLP, which reads only that position too: patching it gives the clean run's metric exactly.</summary>
    [Fact]
    public void Resid_mid_cells_are_hand_written_hook_runs_and_the_last_one_restores_the_clean_run()
    {
        using var model = ModelLoader.FromPretrained(TinyModels.WriteGpt2(Sub("g"), seed: 13, nLayer: 2, nEmbd: 16, nHead: 4, vocab: 64));
        using var clean = tensor(new long[] { 5, 9, 3, 12, 40, 7 }).unsqueeze(0);
        using var corrupted = tensor(new long[] { 5, 9, 30, 12, 40, 7 }).unsqueeze(0);
        var r = ActivationPatching.Run(model, clean, corrupted, PatchedActivation.ResidMid, Metric);
        Assert.Equal((2, 6), (r.Patched.GetLength(0), r.Patched.GetLength(1)));
        foreach (var (l, p) in new[] { (0, 2), (0, 5), (1, 4), (1, 1) })
            Assert.Equal(HandPatched(model, clean, corrupted, $"blocks.{l}.hook_resid_mid", [TensorIndex.Colon, TensorIndex.Single(p), TensorIndex.Colon]), r.Patched[l, p], 1e-5);
        Assert.Equal(1, r.Normalized(1, 5), 1e-4);
        Assert.Equal(r.Corrupted, r.Patched[1, 4], 1e-5);   // read only by its own position's MLP, which the metric does not read
        Assert.Equal(r.Corrupted, r.Patched[0, 1], 1e-5);   // before the corrupted position nothing differs
    }

    /// <summary><c>get_act_patch_block_every</c> and <c>get_act_patch_attn_head_all_pos_every</c> / <c>_by_pos_every</c> are
    /// the separate patches stacked: each part equals its own <see cref="ActivationPatching.Run(HookedTransformer, Tensor, Tensor, PatchedActivation, AttributionMetric)"/>.</summary>
    [Fact]
    public void Every_parts_equal_the_separate_runs()
    {
        using var model = ModelLoader.FromPretrained(TinyModels.WriteGpt2(Sub("g"), seed: 14, nLayer: 2, nEmbd: 16, nHead: 4, vocab: 64));
        using var clean = tensor(new long[] { 5, 9, 3, 12, 40 }).unsqueeze(0);
        using var corrupted = tensor(new long[] { 5, 9, 30, 12, 40 }).unsqueeze(0);
        var block = ActivationPatching.RunEach(model, clean, corrupted, ActivationPatching.BlockEvery, [Metric]);
        Assert.Equal([PatchedActivation.ResidPre, PatchedActivation.AttnOut, PatchedActivation.MlpOut], block.Select(b => b.Activation));
        var heads = ActivationPatching.RunEach(model, clean, corrupted, ActivationPatching.HeadEvery, [Metric]);
        Assert.Equal([PatchedActivation.HeadZ, PatchedActivation.HeadQ, PatchedActivation.HeadK, PatchedActivation.HeadV, PatchedActivation.HeadPattern],
            heads.Select(b => b.Activation));
        foreach (var part in block.Concat(heads))
        {
            var alone = ActivationPatching.Run(model, clean, corrupted, part.Activation, Metric);
            Assert.Equal((alone.Clean, alone.Corrupted), (part.Clean, part.Corrupted));
            Assert.Equal(alone.Patched, part.Patched);
        }
        // The full residual stream at layer 0 is the embeddings: patching the corrupted position restores the clean run.
        Assert.Equal(1, block[0].Normalized(0, 2), 1e-4);
        var byPos = ActivationPatching.RunByPositionEach(model, clean, corrupted, ActivationPatching.HeadEvery, [Metric]);
        foreach (var part in byPos)
            Assert.Equal(ActivationPatching.RunByPosition(model, clean, corrupted, part.Activation, [Metric]).Patched, part.Patched);
        Assert.Throws<SaeSharpException>(() => ActivationPatching.RunByPositionEach(model, clean, corrupted, ActivationPatching.BlockEvery, [Metric]));
    }

    /// <summary><c>get_act_patch_attn_head_pattern_dest_src_pos</c>: a cell is the hand-written hook run of
    /// <c>layer_head_dest_src_pos_pattern_patch_setter</c>, including the skipped ones above the diagonal; at destination 0 the
    /// only source is 0, so that entry is the whole row <c>_pattern_by_pos</c> patches.</summary>
    [Fact]
    public void Pattern_dest_src_cells_are_hand_written_hook_runs()
    {
        using var model = ModelLoader.FromPretrained(TinyModels.WriteGpt2(Sub("g"), seed: 15, nLayer: 2, nEmbd: 16, nHead: 4, vocab: 64));
        using var clean = tensor(new long[] { 5, 9, 3, 12, 40 }).unsqueeze(0);
        using var corrupted = tensor(new long[] { 5, 9, 30, 12, 40 }).unsqueeze(0);
        var r = ActivationPatching.RunPatternDestSrc(model, clean, corrupted, [Metric]);
        Assert.Equal(new[] { 2, 4, 5, 5 }, new[] { r.Patched.GetLength(0), r.Patched.GetLength(1), r.Patched.GetLength(2), r.Patched.GetLength(3) });
        foreach (var (l, h, d, src) in new[] { (0, 1, 4, 2), (1, 3, 4, 0), (1, 0, 4, 4), (0, 2, 3, 3), (1, 2, 1, 3), (0, 0, 2, 4) })
        {
            double expected = HandPatched(model, clean, corrupted, $"blocks.{l}.attn.hook_pattern",
                [TensorIndex.Colon, TensorIndex.Single(h), TensorIndex.Single(d), TensorIndex.Single(src)]);
            Assert.Equal(expected, r.Patched[l, h, d, src], 1e-5);
        }
        Assert.Contains(Enumerable.Range(0, 4), h => Math.Abs(r.Normalized(1, h, 4, 2)) > 1e-4);   // the last query reading the corrupted token
        var rows = ActivationPatching.RunByPosition(model, clean, corrupted, PatchedActivation.HeadPattern, [Metric]);
        for (int l = 0; l < 2; l++)
            for (int h = 0; h < 4; h++) Assert.Equal(rows.Patched[l, 0, h], r.Patched[l, h, 0, 0], 1e-5);
    }

    /// <summary>Zeros the rows of W_O (GPT-2's <c>c_proj</c>, Conv1D [n_head·d_head, d_model]) that read <paramref name="head"/>'s z.</summary>
    internal static void ZeroHeadOutput(HookedTransformer model, int layer, int head)
    {
        using var _ = no_grad();
        int dHead = model.Config.DHead;
        model.state_dict()[$"transformer.h.{layer}.attn.c_proj.weight"].narrow(0, head * dHead, dHead).fill_(0.0f);
    }

    [Fact]
    public void Patch_command_refuses_prompts_of_different_lengths()
    {
        string dir = TinyModels.WriteGpt2(Sub("tok"), seed: 3, nLayer: 1, nEmbd: 16, nHead: 4, vocab: 50257, nPositions: 64);
        AddGpt2Tokenizer(dir);
        var (exit, output, err) = CliRunner.Run("model", "patch", "--model", dir, "--clean", "Hello world", "--corrupted", "Hello there",
            "--metric", "logit-diff: world, there");
        Assert.True(exit == 0, err);
        Assert.Contains("metric logit-diff: world, there: clean", output);
        Assert.Contains("\" world\"/\" there\"", output);
        var (bad, _, badErr) = CliRunner.Run("model", "patch", "--model", dir, "--clean", "Hello world", "--corrupted", "Hello big world",
            "--metric", "logit-diff: world, there");
        Assert.NotEqual(0, bad);
        Assert.Contains("--corrupted has 4 tokens and --clean 3", badErr);
        var (v, vOut, vErr) = CliRunner.Run("model", "patch", "--model", dir, "--clean", "Hello world", "--corrupted", "Hello there",
            "--metric", "logit-diff: world, there", "--act", "v");
        Assert.True(v == 0, vErr);
        Assert.Contains("hook_v of each head", vOut);
        Assert.Contains("H3", vOut);
    }

    [Fact]
    public void Patch_commands_take_a_batch_of_pairs_patch_by_position_and_path_patch()
    {
        string dir = TinyModels.WriteGpt2(Sub("tok"), seed: 4, nLayer: 2, nEmbd: 16, nHead: 4, vocab: 50257, nPositions: 64);
        AddGpt2Tokenizer(dir);
        string[] pairs = ["model", "patch", "--model", dir, "--clean", "Hello world", "--corrupted", "Hello there", "--clean", "Good day", "--corrupted", "Good night",
            "--metric", "logit-diff: world, there", "--metric", "logit-diff: day, night"];
        string json = Path.Combine(Sub("out"), "bp.json");
        var (exit, output, err) = CliRunner.Run([.. pairs, "--act", "k", "--by-position", "--top", "3", "--json", json]);
        Assert.True(exit == 0, err);
        Assert.Contains("mean over 2 prompt pairs", output);
        Assert.Contains("hook_k of one head at one position, top 3 of 24", output);   // 2 layers × 3 positions × 4 heads
        var node = System.Text.Json.Nodes.JsonNode.Parse(File.ReadAllText(json))!;
        Assert.Equal(2, node["patched"]!.AsArray().Count);
        Assert.Equal(3, node["patched"]![0]!.AsArray().Count);
        Assert.Equal(4, node["patched"]![0]![0]!.AsArray().Count);
        var (bad, _, badErr) = CliRunner.Run(["model", "patch", "--model", dir, "--clean", "Hello world", "--corrupted", "Hello there", "--clean", "Hello big world",
            "--corrupted", "Hello big there", "--metric", "logit-diff: world, there"]);
        Assert.NotEqual(0, bad);
        Assert.Contains("pair 2 has 4 tokens and pair 1 3", badErr);
        (bad, _, badErr) = CliRunner.Run([.. pairs, "--metric", "loss"]);
        Assert.NotEqual(0, bad);
        Assert.Contains("--metric is given 3 times for 2 prompt pairs: give it once (for every prompt pair) or once per prompt pair", badErr);
        var (notHead, _, notHeadErr) = CliRunner.Run([.. pairs, "--by-position"]);
        Assert.NotEqual(0, notHead);
        Assert.Contains("--by-position: --act resid_pre", notHeadErr);
        var (path, pathOut, pathErr) = CliRunner.Run([.. pairs, "--sender", "0.1", "--receiver", "1.2", "--receiver-input", "k"]);
        Assert.NotEqual(0, path);   // "patch" has no --sender
        pairs[1] = "path-patch";
        (path, pathOut, pathErr) = CliRunner.Run([.. pairs, "--sender", "0.1", "--receiver", "1.2", "--receiver-input", "k"]);
        Assert.True(path == 0, pathErr);
        Assert.Contains("path L0H1 → hook_k_input of L1H2: patched", pathOut);
        (path, pathOut, pathErr) = CliRunner.Run(pairs);
        Assert.True(path == 0, pathErr);
        Assert.Contains("each head's output → the final residual stream", pathOut);
        (path, _, pathErr) = CliRunner.Run([.. pairs, "--receiver-input", "v"]);
        Assert.NotEqual(0, path);
        Assert.Contains("--receiver-input: give --receiver heads too", pathErr);
        (path, _, pathErr) = CliRunner.Run([.. pairs, "--sender", "0.1", "--receiver", "1.7"]);
        Assert.NotEqual(0, path);
        Assert.Contains("--receiver 1.7: head 7 is outside", pathErr);
    }

    /// <summary><c>--png</c> draws the table the command prints: layer × position (resid_pre), layer × head (z, path-patch
    /// over every sender), top heads × position (--by-position), destination × source (--dest-src); where there is no such
    /// table (one --sender) it is refused before the run.</summary>
    [Fact]
    public void Patch_and_path_patch_draw_their_tables_as_heatmaps()
    {
        string dir = TinyModels.WriteGpt2(Sub("tok"), seed: 4, nLayer: 2, nEmbd: 16, nHead: 4, vocab: 50257, nPositions: 64);
        AddGpt2Tokenizer(dir);
        string[] pair = ["model", "patch", "--model", dir, "--clean", "Hello world", "--corrupted", "Hello there", "--metric", "logit-diff: world, there"];
        static void AssertPng(string file, string output)
        {
            Assert.Contains($"wrote {file}", output);
            var bytes = File.ReadAllBytes(file);
            Assert.Equal([0x89, (byte)'P', (byte)'N', (byte)'G'], bytes.Take(4));
            // IHDR: 720 × 560, HeatmapPlot's size.
            Assert.Equal(720, System.Buffers.Binary.BinaryPrimitives.ReadInt32BigEndian(bytes.AsSpan(16)));
            Assert.Equal(560, System.Buffers.Binary.BinaryPrimitives.ReadInt32BigEndian(bytes.AsSpan(20)));
        }
        foreach (var act in new[] { "resid_pre", "z" })
        {
            string png = Path.Combine(Sub("png"), $"{act}.png");
            var (exit, output, err) = CliRunner.Run([.. pair, "--act", act, "--png", png]);
            Assert.True(exit == 0, err);
            AssertPng(png, output);
        }
        // --by-position: the heads of the largest |effect| × position; --dest-src: the top head's destination × source.
        foreach (var extra in new[] { "--by-position", "--dest-src" })
        {
            string png = Path.Combine(Sub("png"), $"pattern{extra}.png");
            var (exit, output, err) = CliRunner.Run([.. pair, "--act", "pattern", extra, "--png", png]);
            Assert.True(exit == 0, err);
            AssertPng(png, output);
        }
        string never = Path.Combine(Sub("png"), "never.png");
        pair[1] = "path-patch";
        string pathPng = Path.Combine(Sub("png"), "path.png");
        var (path, pathOut, pathErr) = CliRunner.Run([.. pair, "--png", pathPng]);
        Assert.True(path == 0, pathErr);
        AssertPng(pathPng, pathOut);
        var (one, _, oneErr) = CliRunner.Run([.. pair, "--sender", "0.1", "--png", never]);
        Assert.NotEqual(0, one);
        Assert.Contains("--sender gives one number", oneErr);
        Assert.False(File.Exists(never));
    }

    /// <summary><c>--act block-every</c> / <c>head-every</c> print a table per part, write --json keyed by part (each the
    /// grid of the part's own run) and one PNG per part named with the part; <c>--dest-src</c> lists [layer, head, dest, src]
    /// cells. Every line fits 80 columns.</summary>
    [Fact]
    public void Patch_command_runs_every_part_and_pattern_entries_at_80_columns()
    {
        string dir = TinyModels.WriteGpt2(Sub("tok"), seed: 5, nLayer: 2, nEmbd: 16, nHead: 4, vocab: 50257, nPositions: 64);
        AddGpt2Tokenizer(dir);
        string[] pair = ["model", "patch", "--model", dir, "--clean", "Hello world", "--corrupted", "Hello there", "--metric", "logit-diff: world, there"];
        (int, string, string) At80(params string[] args)
        {
            SaeSharp.Cli.Cli.TerminalTables.Value = true;
            try { return CliRunner.Run(args); }
            finally { SaeSharp.Cli.Cli.TerminalTables.Value = false; }
        }
        static void Fits(string output) =>
            Assert.All(System.Text.RegularExpressions.Regex.Replace(output, "\u001b\\[[0-9;]*m", "").Split('\n'), l => Assert.True(l.TrimEnd('\r').Length <= 80 || l.StartsWith("./sae", StringComparison.Ordinal) || l.StartsWith("wrote", StringComparison.Ordinal), $"'{l}' is wider than 80 columns"));
        string json = Path.Combine(Sub("out"), "block.json"), png = Path.Combine(Sub("out"), "block.png");
        var (exit, output, err) = At80([.. pair, "--act", "block-every", "--json", json, "--png", png]);
        Assert.True(exit == 0, err);
        Fits(output);
        foreach (var part in new[] { "resid_pre", "attn_out", "mlp_out" })
        {
            Assert.Contains($"hook_{part} at each position", output);
            Assert.True(File.Exists(Path.Combine(Sub("out"), $"block.{part}.png")), part);
        }
        Assert.False(File.Exists(png));
        var node = System.Text.Json.Nodes.JsonNode.Parse(File.ReadAllText(json))!;
        Assert.Equal(["resid_pre", "attn_out", "mlp_out"], node["patched"]!.AsObject().Select(kv => kv.Key));
        (exit, _, err) = CliRunner.Run([.. pair, "--act", "attn_out", "--json", json]);
        Assert.True(exit == 0, err);
        var alone = System.Text.Json.Nodes.JsonNode.Parse(File.ReadAllText(json))!;
        Assert.Equal(alone["patched"]!.ToJsonString(), node["patched"]!["attn_out"]!.ToJsonString());
        (exit, output, err) = At80([.. pair, "--act", "head-every", "--by-position", "--top", "3", "--json", json]);
        Assert.True(exit == 0, err);
        Fits(output);
        foreach (var part in new[] { "z", "q", "k", "v", "pattern" }) Assert.Contains($"hook_{part} of one head at one ", output);
        node = System.Text.Json.Nodes.JsonNode.Parse(File.ReadAllText(json))!;
        Assert.Equal("layer, pos, head", node["patched_axes"]!.GetValue<string>());
        Assert.Equal(3, node["patched"]!["pattern"]![1]!.AsArray().Count);   // 3 positions of 4 heads
        (exit, output, err) = At80([.. pair, "--act", "pattern", "--dest-src", "--top", "4", "--json", json]);
        Assert.True(exit == 0, err);
        Fits(output);
        Assert.Contains("one entry of one head's hook_pattern, top 4 of 48", output);   // 2 layers × 4 heads × (1 + 2 + 3) entries
        node = System.Text.Json.Nodes.JsonNode.Parse(File.ReadAllText(json))!;
        Assert.Equal("layer, head, dest_pos, src_pos", node["patched_axes"]!.GetValue<string>());
        var (bad, _, badErr) = CliRunner.Run([.. pair, "--act", "z", "--dest-src"]);
        Assert.NotEqual(0, bad);
        Assert.Contains("--dest-src patches one entry of an attention pattern: give --act pattern", badErr);
        var (both, _, bothErr) = CliRunner.Run([.. pair, "--act", "pattern", "--dest-src", "--by-position"]);
        Assert.NotEqual(0, both);
        Assert.Contains("--dest-src already patches one destination × source entry at a time: leave out --by-position", bothErr);
        (bad, _, badErr) = CliRunner.Run([.. pair, "--act", "block-every", "--by-position"]);
        Assert.NotEqual(0, bad);
        Assert.Contains("--by-position: --act block-every is already patched one position at a time", badErr);
    }

    /// <summary>In a grouped-query model hook_v has a slice per key/value head, shared by several query heads: the table
    /// says so (KV0, KV1 for a model of 4 query and 2 key/value heads), while hook_z stays per query head.</summary>
    [Fact]
    public void Patching_v_of_a_grouped_query_model_names_key_value_heads()
    {
        string dir = LlamaHubCache.WriteModel(Sub("cache"), "meta-llama/Llama-3.1-8B");
        using (var m = ModelLoader.FromPretrained(dir)) Assert.Equal((4, 2), (m.Config.NHeads, m.Config.NKvHeads));
        string[] common = ["model", "patch", "--model", dir, "--clean", "xab", "--corrupted", "xba", "--metric", "logit-diff:a,b"];
        var (v, vOut, vErr) = CliRunner.Run([.. common, "--act", "v"]);
        Assert.True(v == 0, vErr);
        Assert.Contains("hook_v of each key/value head", vOut);
        Assert.Contains("KV1", vOut);
        Assert.DoesNotContain("KV2", vOut);
        var (k, kOut, kErr) = CliRunner.Run([.. common, "--act", "k"]);
        Assert.True(k == 0, kErr);
        Assert.Contains("hook_k of each key/value head", kOut);
        Assert.DoesNotContain("KV2", kOut);
        var (path, pathOut, pathErr) = CliRunner.Run([.. common, "--receiver", "1.1", "--receiver-input", "k"]);
        Assert.NotEqual(0, path);   // patch has no --receiver
        common[1] = "path-patch";
        (path, pathOut, pathErr) = CliRunner.Run([.. common, "--sender", "0.3", "--receiver", "1.1", "--receiver-input", "k"]);
        Assert.True(path == 0, pathErr);
        Assert.Contains("path L0H3 → hook_k_input of L1H1", pathOut);
        (path, _, pathErr) = CliRunner.Run([.. common, "--sender", "0.3", "--receiver", "1.2", "--receiver-input", "k"]);
        Assert.NotEqual(0, path);
        Assert.Contains("--receiver 1.2: --receiver-input k reads key/value heads", pathErr);
        Assert.Contains("has key/value heads 0..1", pathErr);
        common[1] = "patch";
        var (z, zOut, zErr) = CliRunner.Run([.. common, "--act", "z"]);
        Assert.True(z == 0, zErr);
        Assert.Contains("hook_z of each head", zOut);
        Assert.Contains("H3", zOut);
        // head-every: z, q and pattern per query head, k and v per key/value head (TransformerLens pads those to n_heads).
        string json = Path.Combine(Sub("out"), "every.json");
        var (every, everyOut, everyErr) = CliRunner.Run([.. common, "--act", "head-every", "--json", json]);
        Assert.True(every == 0, everyErr);
        foreach (var part in new[] { "z", "q", "pattern" }) Assert.Contains($"hook_{part} of each head", everyOut);
        foreach (var part in new[] { "k", "v" }) Assert.Contains($"hook_{part} of each key/value head", everyOut);
        var node = System.Text.Json.Nodes.JsonNode.Parse(File.ReadAllText(json))!;
        Assert.Equal(4, node["patched"]!["q"]![0]!.AsArray().Count);
        Assert.Equal(2, node["patched"]!["k"]![0]!.AsArray().Count);
    }
}
