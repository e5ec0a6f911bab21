using System.Text.Json.Nodes;
using SaeSharp.Interop;
using SaeSharp.Models;
using SaeSharp.Data;
using SaeSharp.Saes;
using SaeSharp.Tests.Cli;
using static TorchSharp.torch;

namespace SaeSharp.Tests.Analysis;

/// <summary>
/// walk14: what <c>sae features</c> writes (features.jsonl, summary.json, tokens.json) recomputed by a separate route, as a
/// SAEDashboard user would check it: the tiny NeoX run with <c>Run</c> caching a deep hook, a random ReLU SAE encoding it,
/// and plain C# loops over the windows. (The closed-form hook_embed checks are in <see cref="FeatureStatisticsTests"/>.)
/// </summary>
public class FeatureNumbersTests : IDisposable
{
    private const string Hook = "blocks.1.hook_resid_post";
    private const int DSae = 10, Ctx = 16;
    /// <summary>The JSON writes a float32 activation in its shortest form (5.086495 for the float 5.08649492...), read back
    /// as a double: compared within 1e-5, not by rounding both to 5 places, which parts the two at a rounding boundary.</summary>
    private const double JsonTolerance = 1e-5;
    private readonly AnalysisFixture _fx = new();
    private readonly string _sae;

    public FeatureNumbersTests()
    {
        // A random standard SAE at a layer-1 residual stream; negative encoder biases make the features sparse.
        var cfg = new SaeConfig { DIn = 16, DSae = DSae, ApplyBDecToInput = true };
        cfg.Metadata.HookName = Hook;
        cfg.Metadata.ContextSize = Ctx;
        cfg.Metadata.ModelName = "tiny-neox";
        using var sae = SaeFactory.Create(cfg);
        var rng = new Random(11);
        float[] Gauss(int n, double sd) => Enumerable.Range(0, n).Select(_ => (float)(sd * Math.Sqrt(-2 * Math.Log(1 - rng.NextDouble())) * Math.Cos(2 * Math.PI * rng.NextDouble()))).ToArray();
        using (no_grad())
        {
            sae.WEnc.copy_(tensor(Gauss(16 * DSae, 0.5)).view(16, DSae));
            sae.WDec.copy_(tensor(Gauss(DSae * 16, 0.3)).view(DSae, 16));
            sae.BEnc.copy_(tensor(Enumerable.Range(0, DSae).Select(i => -0.3f * i).ToArray()));
            sae.BDec.copy_(tensor(Gauss(16, 0.1)));
        }
        _sae = Path.Combine(_fx.Dir, "resid-sae");
        SaeLensFormat.Save(sae, _sae);
    }

    public void Dispose() => _fx.Dispose();

    /// <summary>The first <paramref name="n"/> windows and every SAE feature's activation at each of their positions,
    /// [window][position][feature], from a model run per window (no batching) and the SAE's own encoder.</summary>
    private (List<long[]> Windows, float[][][] Acts) Reference(int n)
    {
        var windows = SaeSharp.Pipelines.ModelPipeline.Windows(SaeSharp.Tokenizers.Tokenizer.FromFolder(_fx.ModelDir), _fx.DataPath, Ctx, prependBos: true).Take(n).ToList();
        using var model = ModelLoader.FromPretrained(_fx.ModelDir);
        using var sae = SaeLoader.Load(_sae);
        using var _ = no_grad();
        var acts = new float[windows.Count][][];
        for (int w = 0; w < windows.Count; w++)
        {
            using var scope = NewDisposeScope();
            var (_, cache) = model.Run(tensor(windows[w]).view(1, Ctx), new RunOptions { CacheNames = [Hook] });
            using (cache!)
            {
                var f = sae.Encode(cache![Hook].view(Ctx, 16)).data<float>().ToArray();
                acts[w] = Enumerable.Range(0, Ctx).Select(p => f.Skip(p * DSae).Take(DSae).ToArray()).ToArray();
            }
        }
        return (windows, acts);
    }

    private (int Exit, string Out, string Err, string Dir) Features(string name, params string[] extra)
    {
        string dir = Path.Combine(_fx.Dir, name);
        var (exit, stdout, err) = CliRunner.Run(["features", "--sae", _sae, "--model", _fx.ModelDir, "--dataset", _fx.DataPath, "--out", dir, .. extra]);
        Assert.True(exit == 0, err);
        return (exit, stdout, err, dir);
    }

    private static List<JsonNode> Lines(string dir) =>
        File.ReadAllLines(Path.Combine(dir, "features.jsonl")).Select(l => JsonNode.Parse(l)!).ToList();

    [Fact]
    public void Statistics_and_examples_equal_a_per_window_model_run_looped_in_csharp()
    {
        // --tokens 100: ⌈100 / 16⌉ = 7 whole windows (112 tokens); the BOS positions (id 0) are not counted.
        var (_, stdout, _, dir) = Features("a", "--tokens", "100", "--features", "0-3,7", "--top", "40", "--context", "20",
            "--batch-size", "3", "--exclude-token-ids", "0");
        var (windows, acts) = Reference(7);
        long counted = windows.Sum(w => w.Count(t => t != 0));
        Assert.Contains($"5 features over {counted} tokens", stdout);
        var summary = JsonNode.Parse(File.ReadAllText(Path.Combine(dir, "summary.json")))!;
        Assert.Equal(7, (long)summary["windows"]!);
        Assert.Equal(counted, (long)summary["tokens"]!);
        Assert.Equal(Hook, (string?)summary["hook"]);
        var lines = Lines(dir);
        Assert.Equal([0, 1, 2, 3, 7], lines.Select(l => (int)l["feature"]!));
        var tokenStrings = JsonNode.Parse(File.ReadAllText(Path.Combine(dir, "tokens.json")))!.AsObject();
        var names = _fx.Vocab.ToDictionary(kv => kv.Value, kv => kv.Key);
        int firingSomewhere = 0, fewerThanTop = 0;
        foreach (var line in lines)
        {
            int i = (int)line["feature"]!;
            // Every counted position, best first (activation, then corpus order).
            var all = (from w in Enumerable.Range(0, windows.Count)
                       from p in Enumerable.Range(0, Ctx)
                       where windows[w][p] != 0
                       select (V: acts[w][p][i], W: w, P: p)).ToList();
            var firing = all.Where(x => x.V > 0).OrderByDescending(x => x.V).ThenBy(x => x.W).ThenBy(x => x.P).ToList();
            if (firing.Count > 0) firingSomewhere++;
            Assert.Equal((long)firing.Count, (long)line["firings"]!);
            Assert.Equal((double)firing.Count / counted, (double)line["density"]!, 12);
            Assert.Equal(firing.Count == 0 ? 0 : firing[0].V, (double)line["max_activation"]!, JsonTolerance);
            Assert.Equal(firing.Count == 0 ? 0 : firing.Average(x => (double)x.V), (double)line["mean_nonzero"]!, JsonTolerance);
            var row = summary["features"]!.AsArray().Single(f => (int)f!["feature"]! == i)!;
            Assert.Equal((double)line["density"]!, (double)row["density"]!);
            Assert.Equal((double)line["max_activation"]!, (double)row["max_activation"]!);

            // --top 40: the 40 best; for a feature firing fewer times, all of its firings, in order, each once (the top
            // examples never pad with non-firing tokens).
            var top = line["top_examples"]!.AsArray();
            Assert.Equal(Math.Min(40, firing.Count), top.Count);
            if (firing.Count is > 0 and < 40) fewerThanTop++;
            for (int r = 0; r < top.Count; r++)
            {
                var e = top[r]!;
                int w = (int)e["window"]!, p = (int)e["position"]!;
                Assert.Equal((firing[r].W, firing[r].P), (w, p));
                Assert.Equal(firing[r].V, (double)e["activation"]!, JsonTolerance);
                Assert.Equal(windows[w][p], (long)e["token"]!);
                // --context 20 is more than the window: the whole window of 16, the example at its own position.
                Assert.Equal(windows[w].Select(t => (int)t), e["context_tokens"]!.AsArray().Select(t => (int)t!));
                Assert.Equal(p, (int)e["index"]!);
                var ctxActs = e["context_acts"]!.AsArray().Select(a => (double)a!).ToArray();
                for (int q = 0; q < Ctx; q++) Assert.Equal(acts[w][q][i], ctxActs[q], JsonTolerance);
                // tokens.json names each token as the tokenizer's vocabulary does (Ġ a space; BOS as itself).
                foreach (var t in windows[w])
                    Assert.Equal(names[(int)t].Replace('Ġ', ' '), (string?)tokenStrings[t.ToString(System.Globalization.CultureInfo.InvariantCulture)]);
            }
            // Intervals: each sample lies in its interval and is one of the firing tokens there; counts are exact.
            foreach (var iv in line["intervals"]!.AsArray())
            {
                double lo = (double)iv!["lower"]!, hi = (double)iv["upper"]!;
                var inside = firing.Where(x => x.V >= lo && x.V < hi).ToList();
                Assert.Equal(inside.Count, (long)iv["count"]!);
                var samples = iv["samples"]!.AsArray();
                Assert.Equal(Math.Min(5, inside.Count), samples.Count);
                Assert.All(samples, s => Assert.Contains(inside, x => x.W == (int)s!["window"]! && x.P == (int)s["position"]!));
            }
        }
        Assert.True(fewerThanTop >= 1, "no feature fired fewer times than --top: the case is not exercised");
        Assert.True(firingSomewhere >= 3, $"only {firingSomewhere} of the 5 features fired: the fixture is too sparse to test anything");
    }

    [Fact]
    public void Batch_size_and_a_repeated_seed_change_no_number_and_another_seed_only_the_interval_samples()
    {
        string[] common = ["--tokens", "160", "--top", "6", "--context", "3", "--intervals", "4"];
        var one = Lines(Features("b1", [.. common, "--batch-size", "1", "--seed", "5"]).Dir);
        var five = Lines(Features("b5", [.. common, "--batch-size", "4", "--seed", "5"]).Dir);
        // Numbers computed in float32 from batches of different shapes can differ in the last bits; everything else is equal.
        Assert.Equal(one.Count, five.Count);
        for (int j = 0; j < one.Count; j++)
        {
            foreach (var key in new[] { "feature", "firings", "density", "histogram", "top_logits" })
                Assert.Equal(one[j][key]!.ToJsonString(), five[j][key]!.ToJsonString());
            Assert.Equal((double)one[j]["max_activation"]!, (double)five[j]["max_activation"]!, 5);
            Assert.Equal(Places(one[j]["top_examples"]!), Places(five[j]["top_examples"]!));
            Assert.Equal(one[j]["intervals"]!.AsArray().Select(iv => Places(iv!["samples"]!)), five[j]["intervals"]!.AsArray().Select(iv => Places(iv!["samples"]!)));
        }
        // Another seed: the same statistics, but (somewhere, with enough firings) other interval samples.
        var other = Lines(Features("b7", [.. common, "--batch-size", "4", "--seed", "6"]).Dir);
        Assert.Equal(one.Select(l => l["histogram"]!.ToJsonString()), other.Select(l => l["histogram"]!.ToJsonString()));
        Assert.NotEqual(one.SelectMany(l => l["intervals"]!.AsArray().SelectMany(iv => Places(iv!["samples"]!))),
            other.SelectMany(l => l["intervals"]!.AsArray().SelectMany(iv => Places(iv!["samples"]!))));
    }

    [Fact]
    public void Fold_w_dec_norm_scales_each_feature_by_its_decoder_norm_as_saedashboard_reports_it()
    {
        string[] common = ["--tokens", "64", "--features", "0-4", "--top", "5", "--context", "2"];
        var raw = Lines(Features("raw", common).Dir);
        var dir = Features("folded", [.. common, "--fold-w-dec-norm"]).Dir;
        var folded = Lines(dir);
        Assert.True((bool)JsonNode.Parse(File.ReadAllText(Path.Combine(dir, "summary.json")))!["folded_w_dec_norm"]!);
        Assert.False((bool)JsonNode.Parse(File.ReadAllText(Path.Combine(_fx.Dir, "raw", "summary.json")))!["folded_w_dec_norm"]!);
        // Exported folded, Neuronpedia's scale: no note; unfolded: the note saying so.
        var (npExit, _, npErr) = CliRunner.Run("neuronpedia", "--features", dir, "--out", Path.Combine(_fx.Dir, "np-folded"), "--model-id", "m", "--np-set-name", "s", "--layer-num", "0");
        Assert.True(npExit == 0, npErr);
        Assert.DoesNotContain("note:", npErr);
        (npExit, _, npErr) = CliRunner.Run("neuronpedia", "--features", Path.Combine(_fx.Dir, "raw"), "--out", Path.Combine(_fx.Dir, "np-raw"), "--model-id", "m", "--np-set-name", "s", "--layer-num", "0");
        Assert.True(npExit == 0, npErr);
        Assert.Contains("--fold-w-dec-norm", npErr);
        // ‖W_dec[i]‖ from the weights file; SAELens's fold_W_dec_norm: f'_i = ‖W_dec[i]‖·f_i, the row W_dec[i]/‖W_dec[i]‖.
        var w = SaeSharp.IO.SafeTensors.Load(Path.Combine(_sae, SaeLensFormat.WeightsFile));
        var dec = w["W_dec"].data<float>().ToArray();
        foreach (var t in w.Values) t.Dispose();
        var norms = Enumerable.Range(0, DSae).Select(i => Math.Sqrt(Enumerable.Range(0, 16).Sum(k => (double)dec[i * 16 + k] * dec[i * 16 + k]))).ToArray();
        Assert.Contains(norms, n => Math.Abs(n - 1) > 0.1);                        // not already unit rows
        for (int j = 0; j < raw.Count; j++)
        {
            var (r, f) = (raw[j], folded[j]);
            double n = norms[(int)r["feature"]!];
            Assert.Equal((double)r["density"]!, (double)f["density"]!);            // the same firings
            Assert.Equal((double)r["max_activation"]! * n, (double)f["max_activation"]!, 4);
            Assert.Equal((double)r["mean_nonzero"]! * n, (double)f["mean_nonzero"]!, 4);
            Assert.Equal(Places(r["top_examples"]!), Places(f["top_examples"]!));
            foreach (var (a, b) in r["top_examples"]!.AsArray().Zip(f["top_examples"]!.AsArray()))
                Assert.Equal((double)a!["activation"]! * n, (double)b!["activation"]!, 4);
            // The logit effect of the unit-norm row: the same tokens, values divided by the norm.
            Assert.Equal(r["top_logits"]!.AsArray().Select(t => (int)t!["token"]!), f["top_logits"]!.AsArray().Select(t => (int)t!["token"]!));
            foreach (var (a, b) in r["top_logits"]!.AsArray().Zip(f["top_logits"]!.AsArray()))
                Assert.Equal((double)a!["value"]! / n, (double)b!["value"]!, 4);
        }

        // A TopK SAE cannot be folded (SAELens refuses; the NeuronpediaRunner leaves it raw): refused before anything is written.
        string topk = Path.Combine(_fx.Dir, "topk-sae"), outDir = Path.Combine(_fx.Dir, "topk-out");
        var cfg = new SaeConfig { Architecture = SaeArchitectures.TopK, K = 2, DIn = 16, DSae = DSae };
        cfg.Metadata.HookName = Hook;
        cfg.Metadata.ContextSize = Ctx;
        using (var sae = SaeFactory.Create(cfg)) SaeLensFormat.Save(sae, topk);
        var (exit, _, err) = CliRunner.Run("features", "--sae", topk, "--model", _fx.ModelDir, "--dataset", _fx.DataPath, "--out", outDir, "--fold-w-dec-norm");
        Assert.Equal(1, exit);
        Assert.Contains("--fold-w-dec-norm", err);
        Assert.Contains("topk", err);
        Assert.False(Directory.Exists(outDir));
    }

    [Theory]
    [InlineData(98, 7)]    // 7 × 14 kept positions: exactly the budget
    [InlineData(99, 8)]    // one token more: a whole window more
    public void A_token_budget_reads_whole_windows_of_the_positions_the_seqpos_slice_keeps(int budget, int windows)
    {
        // The SAE was trained on positions 2: of its 16-token windows: --tokens counts those 14 per window.
        string sliced = Path.Combine(_fx.Dir, "sliced-sae");
        using (var sae = SaeLoader.Load(_sae))
        {
            sae.Cfg.Metadata.SetWindowFields(SeqposSlice.Parse("2:"), null, null);
            SaeLensFormat.Save(sae, sliced);
        }
        string dir = Path.Combine(_fx.Dir, $"budget-{budget}");
        var (exit, stdout, err) = CliRunner.Run("features", "--sae", sliced, "--model", _fx.ModelDir, "--dataset", _fx.DataPath, "--out", dir,
            "--tokens", budget.ToString(System.Globalization.CultureInfo.InvariantCulture), "--features", "0", "--top", "100");
        Assert.True(exit == 0, err);
        var summary = JsonNode.Parse(File.ReadAllText(Path.Combine(dir, "summary.json")))!;
        Assert.Equal(windows, (int)summary["windows"]!);
        Assert.Equal(windows * 14, (int)summary["tokens"]!);
        Assert.Contains($"over {windows * 14} tokens", stdout);
        Assert.All(Lines(dir)[0]["top_examples"]!.AsArray(), e => Assert.InRange((int)e!["position"]!, 2, 15));
    }

    private static List<(int, int)> Places(JsonNode examples) =>
        examples.AsArray().Select(e => ((int)e!["window"]!, (int)e["position"]!)).ToList();
}
