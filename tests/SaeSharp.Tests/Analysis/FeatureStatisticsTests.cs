using SaeSharp.Saes;
using SaeSharp.Activations;
using SaeSharp.Analysis;
using SaeSharp.Data;
using SaeSharp.Interop;
using SaeSharp.IO;
using SaeSharp.Models;
using SaeSharp.Pipelines;
using SaeSharp.Tokenizers;
using static TorchSharp.torch;

namespace SaeSharp.Tests.Analysis;

public class FeatureStatisticsTests : IDisposable
{
    private readonly AnalysisFixture _fx = new();

    public void Dispose() => _fx.Dispose();

    private (FeatureReport Report, List<long[]> Windows, double[,] Expected) Analyse(FeatureStatisticsOptions stats, bool excludeBos = false, string features = "all")
    {
        var data = new ModelDataOptions { ModelPath = _fx.ModelDir, DatasetPath = _fx.DataPath, BatchSizePrompts = 3, ExcludeSpecialTokens = excludeBos };
        var report = AnalysisPipeline.Features(_fx.SaeDir, data, new FeatureAnalysisOptions
        {
            Statistics = stats, Features = FeatureSelection.Parse(features, AnalysisFixture.DSae),
        });
        var tok = Tokenizer.FromFolder(_fx.ModelDir);
        var windows = ModelPipeline.Windows(tok, _fx.DataPath, 16, prependBos: true).ToList();
        return (report, windows, _fx.ExpectedActs());
    }

    /// <summary>All counted positions of the corpus with feature i's closed-form value, best first (value, then corpus order).</summary>
    private static List<(double V, long W, int P, int Tok)> BruteForce(List<long[]> windows, double[,] expected, int feature, bool excludeBos)
    {
        var all = new List<(double, long, int, int)>();
        for (int w = 0; w < windows.Count; w++)
            for (int p = 0; p < windows[w].Length; p++)
            {
                int t = (int)windows[w][p];
                if (excludeBos && t == 0) continue;
                all.Add((expected[feature, t], w, p, t));
            }
        return all.OrderByDescending(x => x.Item1).ThenBy(x => x.Item2).ThenBy(x => x.Item3).ToList();
    }

    [Fact]
    public void An_sae_trained_on_a_seqpos_slice_and_separator_is_measured_on_such_windows_at_those_positions()
    {
        // The SAE's cfg.json says it was trained on positions 2: of windows whose documents are joined without a separator.
        string dir = Path.Combine(_fx.Dir, "sliced");
        using (var sae = SaeLoader.Load(_fx.SaeDir))
        {
            sae.Cfg.Metadata.SetWindowFields(SeqposSlice.Parse("2:"), false, PretokenizeToken.None);
            SaeLensFormat.Save(sae, dir);
        }
        var data = new ModelDataOptions { ModelPath = _fx.ModelDir, DatasetPath = _fx.DataPath, BatchSizePrompts = 3 };
        var report = AnalysisPipeline.Features(dir, data, new FeatureAnalysisOptions { Statistics = new FeatureStatisticsOptions { TopExamples = 3 } });
        var windows = ModelPipeline.Windows(Tokenizer.FromFolder(_fx.ModelDir), _fx.DataPath, 16, prependBos: true,
            sequenceSeparatorToken: PretokenizeToken.None).ToList();
        var expected = _fx.ExpectedActs();
        Assert.Equal(windows.Count, report.Windows);
        Assert.Equal(windows.Count * 14L, report.Tokens);
        for (int i = 0; i < AnalysisFixture.DSae; i++)
        {
            var values = windows.SelectMany(w => w.Skip(2)).Select(t => expected[i, t]).ToList();
            Assert.Equal((double)values.Count(v => v > 0) / values.Count, report.Features[i].Density, 12);
            Assert.All(report.Features[i].TopExamples, e => Assert.True(e.Position >= 2));
        }
    }

    [Fact]
    public void Embedding_direction_features_list_exactly_the_largest_projections_with_their_values()
    {
        var (report, windows, expected) = Analyse(new FeatureStatisticsOptions { TopExamples = 7, Context = 3 });
        Assert.Equal(windows.Count, report.Windows);
        Assert.Equal(windows.Count * 16L, report.Tokens);
        Assert.All(windows, w => Assert.Equal(0L, w[0])); // BOS first, as training windows
        Assert.Equal(AnalysisFixture.DSae, report.Features.Count);
        for (int i = 0; i < AnalysisFixture.DSae; i++)
        {
            var f = report.Features[i];
            Assert.Equal(i, f.Feature);
            var bf = BruteForce(windows, expected, i, false);
            var firing = bf.Where(x => x.V > 0).ToList();
            Assert.Equal((double)firing.Count / bf.Count, f.Density, 12);
            Assert.Equal(firing[0].V, f.MaxActivation, 4);
            Assert.Equal(firing.Average(x => x.V), f.MeanNonzero, 4);
            // The chosen word is the top token: its projection is its own norm, the largest of all.
            int chosen = _fx.Vocab["Ġ" + AnalysisFixture.ChosenWords[i]];
            Assert.Equal(chosen, bf[0].Tok);
            Assert.Equal(chosen, f.TopExamples[0].Token);
            Assert.Equal(7, f.TopExamples.Count);
            for (int r = 0; r < 7; r++)
            {
                var e = f.TopExamples[r];
                Assert.Equal(bf[r].V, e.Activation, 4);
                Assert.Equal(expected[i, e.Token], e.Activation, 4);
                Assert.Equal(windows[(int)e.Window][e.Position], e.Token);
                // Context: ±3 tokens of the window, cut at its edges; the feature's value on each of them.
                int lo = Math.Max(0, e.Position - 3), hi = Math.Min(15, e.Position + 3);
                Assert.Equal(windows[(int)e.Window][lo..(hi + 1)].Select(t => (int)t), e.ContextTokens);
                Assert.Equal(e.Position - lo, e.Index);
                Assert.Equal(e.Token, e.ContextTokens[e.Index]);
                Assert.Equal(e.Activation, e.ContextActs[e.Index]);
                for (int q = 0; q < e.ContextTokens.Length; q++) Assert.Equal(expected[i, e.ContextTokens[q]], e.ContextActs[q], 4);
            }
            // Exactly the brute-force positions where the values are distinct from the first left-out one.
            double cut = bf[7].V;
            var mustHave = bf.Take(7).Where(x => x.V > cut + 1e-4).Select(x => (x.W, x.P)).ToHashSet();
            Assert.Subset(f.TopExamples.Select(x => (x.Window, x.Position)).ToHashSet(), mustHave);
            // Ties (the same token, equal values) come in corpus order.
            for (int r = 1; r < 7; r++)
                if (f.TopExamples[r].Token == f.TopExamples[r - 1].Token)
                    Assert.True((f.TopExamples[r - 1].Window, f.TopExamples[r - 1].Position).CompareTo((f.TopExamples[r].Window, f.TopExamples[r].Position)) < 0);
        }
    }

    [Fact]
    public void Histograms_and_interval_samples_match_a_brute_force_pass()
    {
        var (report, windows, expected) = Analyse(new FeatureStatisticsOptions { Intervals = 6, SamplesPerInterval = 3, HistogramBins = 16, TopExamples = 2 }, excludeBos: true);
        Assert.Equal(windows.Sum(w => w.Count(t => t != 0)), report.Tokens);
        foreach (var f in report.Features)
        {
            var values = BruteForce(windows, expected, f.Feature, true).Where(x => x.V > 0).ToList();
            Assert.Equal(values.Count, f.Firings);
            var h = f.Histogram;
            Assert.Equal(0, h.Edges[0]);
            Assert.InRange(h.Counts.Length, 8, 16);           // half to all of the bins: the last one holds the max
            Assert.True(h.Edges[^2] <= f.MaxActivation && f.MaxActivation < h.Edges[^1]);
            for (int b = 0; b < h.Counts.Length; b++)
                Assert.Equal(values.Count(x => x.V >= h.Edges[b] && x.V < h.Edges[b + 1]), h.Counts[b]);
            Assert.InRange(f.Intervals.Count, 3, 6);
            Assert.Equal(1.0, f.Intervals.Sum(iv => iv.Share), 9);
            foreach (var iv in f.Intervals)
            {
                var inside = values.Where(x => x.V >= iv.Lower && x.V < iv.Upper).ToList();
                Assert.Equal(inside.Count, iv.Count);
                Assert.Equal(Math.Min(3, inside.Count), iv.Samples.Count);
                Assert.Equal(iv.Samples.Count, iv.Samples.Select(s => (s.Window, s.Position)).Distinct().Count());
                foreach (var s in iv.Samples)
                {
                    Assert.InRange(s.Activation, iv.Lower, iv.Upper);
                    Assert.Contains(inside, x => x.W == s.Window && x.P == s.Position);
                }
                Assert.Equal(iv.Samples.OrderByDescending(s => s.Activation).Select(s => s.Activation), iv.Samples.Select(s => s.Activation));
            }
        }
    }

    [Fact]
    public void Interval_samples_are_uniform_within_an_interval_and_deterministic()
    {
        // One feature, values 1..1000 spread over windows: the range doubles many times (bins merge), and each value of the
        // first interval must be drawn about equally often across seeds.
        const int n = 512;
        var hits = new int[n];
        for (ulong seed = 0; seed < 200; seed++)
        {
            var c = new FeatureStatisticsCollector(1, null, new FeatureStatisticsOptions { Intervals = 2, SamplesPerInterval = 4, TopExamples = 0, Seed = seed });
            for (int w = 0; w < n / 8; w++)
            {
                var acts = tensor(Enumerable.Range(0, 8).Select(p => (float)(1 + w * 8 + p)).ToArray()).view(1, 8, 1);
                c.Add([Enumerable.Range(0, 8).Select(p => (long)p).ToArray()], acts);
            }
            var f = c.Result()[0];
            Assert.Equal(2, f.Intervals.Count);                           // [0, 512) and [512, 1024)
            Assert.Equal(511, f.Intervals[0].Count);
            foreach (var s in f.Intervals[0].Samples) hits[(int)s.Activation - 1]++;
        }
        // 200 runs × 4 samples over 511 values: 1.57 expected per value; the halves must balance.
        int firstHalf = hits.Take(256).Sum(), secondHalf = hits.Skip(256).Take(255).Sum();
        Assert.Equal(800, firstHalf + secondHalf);
        Assert.InRange(firstHalf, 330, 470);
        // Same seed, same samples.
        FeatureStatistics Run()
        {
            var c = new FeatureStatisticsCollector(1, null, new FeatureStatisticsOptions { Seed = 7 });
            for (int w = 0; w < 20; w++)
                c.Add([[0, 1, 2, 3]], tensor(new float[] { w * 0.37f % 3, w, 0, 2 * w }).view(1, 4, 1));
            return c.Result()[0];
        }
        Assert.Equal(Run().Intervals.SelectMany(i => i.Samples).Select(s => s.Activation), Run().Intervals.SelectMany(i => i.Samples).Select(s => s.Activation));
    }

    [Fact]
    public void Logit_effects_equal_the_decoder_row_times_the_scaled_unembedding()
    {
        var (report, _, _) = Analyse(new FeatureStatisticsOptions { TopExamples = 1 }, features: "2,5-6");
        Assert.Equal([2, 5, 6], report.Features.Select(f => f.Feature));
        var w = SafeTensors.Load(Path.Combine(_fx.ModelDir, "model.safetensors"));
        var s = SafeTensors.Load(Path.Combine(_fx.SaeDir, SaeLensFormat.WeightsFile));
        var wu = w["embed_out.weight"].data<float>().ToArray();                  // [vocab, d]
        var gamma = w["gpt_neox.final_layer_norm.weight"].data<float>().ToArray();
        var dec = s["W_dec"].data<float>().ToArray();                            // [d_sae, d]
        int d = gamma.Length, vocab = wu.Length / d;
        foreach (var f in report.Features)
        {
            var effect = new double[vocab];
            for (int v = 0; v < vocab; v++)
                for (int k = 0; k < d; k++) effect[v] += (double)dec[f.Feature * d + k] * gamma[k] * wu[v * d + k];
            var order = Enumerable.Range(0, vocab).OrderByDescending(v => effect[v]).ToList();
            Assert.Equal(order.Take(10), f.TopLogits.Select(t => t.Token));
            Assert.Equal(Enumerable.Reverse(order).Take(10), f.BottomLogits.Select(t => t.Token));
            foreach (var t in f.TopLogits.Concat(f.BottomLogits)) Assert.Equal(effect[t.Token], t.Value, 4);
            Assert.Equal(vocab, f.LogitHistogram!.Counts.Sum());
            Assert.Equal(effect.Min(), f.LogitHistogram.Edges[0], 4);
            // Similar features: decoder cosine, computed directly.
            double Cos(int a, int b)
            {
                double ab = 0, aa = 0, bb = 0;
                for (int k = 0; k < d; k++) { ab += dec[a * d + k] * dec[b * d + k]; aa += dec[a * d + k] * dec[a * d + k]; bb += dec[b * d + k] * dec[b * d + k]; }
                return ab / Math.Sqrt(aa * bb);
            }
            var sim = Enumerable.Range(0, AnalysisFixture.DSae).Where(j => j != f.Feature).OrderByDescending(j => Cos(f.Feature, j)).Take(5).ToList();
            Assert.Equal(sim, f.SimilarFeatures.Select(x => x.Index));
            foreach (var x in f.SimilarFeatures) Assert.Equal(Cos(f.Feature, x.Index), x.Cosine, 4);
            // Neuron alignment (a standard SAE: the unit-norm row): its 3 largest entries, each |entry| / the row's L1 norm.
            var row = Enumerable.Range(0, d).Select(k => (double)dec[f.Feature * d + k]).ToArray();
            double l2 = Math.Sqrt(row.Sum(x => x * x)), l1 = row.Sum(Math.Abs);
            var top = Enumerable.Range(0, d).OrderByDescending(k => row[k]).Take(3).ToList();
            Assert.Equal(top, f.NeuronAlignment.Select(a => a.Neuron));
            foreach (var a in f.NeuronAlignment)
            {
                Assert.Equal(row[a.Neuron] / l2, a.Value, 5);
                Assert.Equal(Math.Abs(row[a.Neuron]) / l1, a.L1, 5);
            }
        }
        foreach (var t in w.Values.Concat(s.Values)) t.Dispose();
    }

    [Fact]
    public void Report_round_trips_through_features_jsonl_and_summary_json()
    {
        var (report, _, _) = Analyse(new FeatureStatisticsOptions { TopExamples = 3 }, features: "0-3");
        string dir = Path.Combine(_fx.Dir, "out");
        report.Save(dir);
        var lines = File.ReadAllLines(Path.Combine(dir, FeatureReport.FeaturesFile));
        Assert.Equal(4, lines.Length);
        using (var doc = System.Text.Json.JsonDocument.Parse(lines[1]))
        {
            var r = doc.RootElement;
            Assert.Equal(1, r.GetProperty("feature").GetInt32());
            var ex = r.GetProperty("top_examples")[0];
            int index = ex.GetProperty("index").GetInt32();
            Assert.Equal(ex.GetProperty("token").GetInt32(), ex.GetProperty("context_tokens")[index].GetInt32());
            Assert.Equal(ex.GetProperty("activation").GetSingle(), ex.GetProperty("context_acts")[index].GetSingle());
            foreach (var key in new[] { "density", "max_activation", "mean_nonzero", "intervals", "histogram", "top_logits", "bottom_logits", "similar_features" })
                Assert.True(r.TryGetProperty(key, out _), key);
        }
        var summary = System.Text.Json.Nodes.JsonNode.Parse(File.ReadAllText(Path.Combine(dir, FeatureReport.SummaryFile)))!;
        Assert.Equal("hook_embed", (string?)summary["hook"]);
        Assert.Equal(report.Tokens, (long)summary["tokens"]!);
        Assert.Equal("tiny-neox/0-embed", (string?)summary["neuronpedia_id"]);
        Assert.Equal(4, summary["features"]!.AsArray().Count);
        var back = FeatureReport.Load(dir);
        Assert.Equal(report.Features.Select(f => f.MaxActivation), back.Features.Select(f => f.MaxActivation));
        Assert.Equal(report.Features[2].TopExamples.Select(e => e.ContextActs), back.Features[2].TopExamples.Select(e => e.ContextActs));
        Assert.Equal(" cat", back.TokenString(_fx.Vocab["Ġcat"]));
        Assert.Equal(report.Source.Hook, back.Source.Hook);
    }

    [Fact]
    public void A_full_disk_while_saving_a_report_leaves_the_previous_report_whole()
    {
        var (report, _, _) = Analyse(new FeatureStatisticsOptions { TopExamples = 3 }, features: "0-3");
        string dir = Path.Combine(_fx.Dir, "out-full-disk");
        report.Save(dir);
        var names = new[] { FeatureReport.FeaturesFile, FeatureReport.SummaryFile, FeatureReport.TokensFile };
        var before = names.ToDictionary(n => n, n => File.ReadAllBytes(Path.Combine(dir, n)));

        // Another report; the disk fills while summary.json is written, after features.jsonl and tokens.json.
        var (other, _, _) = Analyse(new FeatureStatisticsOptions { TopExamples = 2 }, features: "0-1");
        SaeSharp.IO.AtomicFile.StreamWrapper.Value = (path, s) => path.EndsWith(FeatureReport.SummaryFile, StringComparison.Ordinal) ? new FullDisk() : s;
        SaeSharpException e;
        try { e = Assert.Throws<SaeSharpException>(() => other.Save(dir)); }
        finally { SaeSharp.IO.AtomicFile.StreamWrapper.Value = null; }

        Assert.Contains(FeatureReport.SummaryFile, e.Message);
        foreach (var n in names) Assert.True(before[n].SequenceEqual(File.ReadAllBytes(Path.Combine(dir, n))), $"{n} was changed");
        Assert.Empty(Directory.GetFiles(dir, ".*.tmp"));
    }

    /// <summary>A stream on a full disk: every write fails as ENOSPC does.</summary>
    private sealed class FullDisk : MemoryStream
    {
        public override void Write(byte[] buffer, int offset, int count) => throw new IOException("No space left on device");
        public override void Write(ReadOnlySpan<byte> buffer) => throw new IOException("No space left on device");
    }

    [Fact]
    public void Nan_activations_and_wrong_shapes_are_named_errors()
    {
        var c = new FeatureStatisticsCollector(3, [2, 0]);
        var e = Assert.Throws<SaeSharpException>(() => c.Add([[5, 6]], tensor(new float[] { 1, 0, float.NaN, 2 }).view(1, 2, 2)));
        Assert.Contains("feature 2 has a NaN activation in window 0, position 1", e.Message);
        Assert.Contains("expected [1, 2, 2]", Assert.Throws<SaeSharpException>(() => c.Add([[5, 6]], zeros(1, 2, 3))).Message);
        Assert.Contains("outside 0..2", Assert.Throws<SaeSharpException>(() => new FeatureStatisticsCollector(3, [3])).Message);
    }

    [Fact]
    public void Feature_lists_parse_ranges_and_reject_bad_input()
    {
        Assert.Null(FeatureSelection.Parse("all", 10));
        Assert.Equal([0, 1, 2, 7], FeatureSelection.Parse("0-2,7,1", 10));
        Assert.Contains("outside", Assert.Throws<SaeSharpException>(() => FeatureSelection.Parse("5-10", 10)).Message);
        Assert.Contains("not a feature index", Assert.Throws<SaeSharpException>(() => FeatureSelection.Parse("x", 10)).Message);
    }
}
