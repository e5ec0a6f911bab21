using SaeSharp.Analysis;
using SaeSharp.Corpus;
using SaeSharp.LanguageModels;
using SaeSharp.Saes;
using SaeSharp.Tests.Saes;
using SaeSharp.Tokenizers;
using static TorchSharp.torch;

namespace SaeSharp.Tests.Analysis;

/// <summary>Token-level <c>sae score-labels</c> and <c>sae probe</c> keep the SAE features as non-zeros: their results are
/// those of the dense computation, written out here from a dense [n, d_sae] tensor of the same tokens.</summary>
public sealed class TokenLevelSparseTests : IDisposable
{
    private readonly string _dir = Path.Combine(Path.GetTempPath(), "saesharp-tokenprobe-" + Guid.NewGuid().ToString("N"));

    public TokenLevelSparseTests() => Directory.CreateDirectory(_dir);

    public void Dispose()
    {
        try { Directory.Delete(_dir, true); } catch (IOException) { }
    }

    private const string Hook = BuiltinModel.MiddleHook;
    private const int Ctx = 32, Batch = 4;

    /// <summary>A random TopK SAE (d_sae 512, k 16) at the built-in model's middle hook.</summary>
    private static Sae RandomTopK()
    {
        var cfg = new SaeConfig { Architecture = SaeArchitectures.TopK, DIn = 128, DSae = 512, K = 16 };
        cfg.Metadata.HookName = Hook;
        cfg.Metadata.ContextSize = Ctx;
        return SaeTestUtil.Make(cfg, seed: 7);
    }

    /// <summary>The dense features [n, d_sae] and activations [n, d] of every labelled token, with its labels and half, computed
    /// here from the model and the SAE directly (the same windows and batches as <c>LabelScoring</c>).</summary>
    private static (Tensor Features, Tensor Acts, List<int[]> Labels, bool[] Fit, List<string> Names) Dense(Sae sae, string corpus, long tokens)
    {
        using var model = BuiltinModel.Load();
        var tokenizer = Tokenizer.FromFolder(BuiltinModel.Folder);
        var (windows, labels, names) = LabelScoring.LabelledWindows(corpus, tokenizer, Ctx, tokens);
        var f = new List<float[]>();
        var a = new List<float[]>();
        var tl = new List<int[]>();
        var fit = new List<bool>();
        using var _ = no_grad();
        foreach (var group in Enumerable.Range(0, windows.Count).Chunk(Batch).SelectMany(c => c.GroupBy(w => windows[w].Length)))
        {
            using var scope = NewDisposeScope();
            var idx = group.ToArray();
            int s = windows[idx[0]].Length;
            var (_, cache) = model.RunWithCache(tensor(idx.SelectMany(w => windows[w]).ToArray()).view(idx.Length, s), [Hook]);
            using var c2 = cache;
            var x = cache[Hook];
            var feats = sae.Run(x).FeatureActs.reshape(idx.Length * s, -1);
            var xs = x.reshape(idx.Length * s, -1);
            for (int bi = 0; bi < idx.Length; bi++)
                for (int p = 0; p < s; p++)
                    if (labels[idx[bi]][p] is { } ls)
                    {
                        f.Add(feats[bi * s + p].data<float>().ToArray());
                        a.Add(xs[bi * s + p].data<float>().ToArray());
                        tl.Add(ls);
                        fit.Add(idx[bi] % 2 == 0);
                    }
        }
        int n = f.Count;
        return (tensor(f.SelectMany(r => r).ToArray()).view(n, -1), tensor(a.SelectMany(r => r).ToArray()).view(n, -1), tl, [.. fit], names);
    }

    private static void AssertSame(IReadOnlyList<UnitLabelScore> expected, IReadOnlyList<UnitLabelScore> actual)
    {
        Assert.Equal(expected.Count, actual.Count);
        for (int u = 0; u < expected.Count; u++)
        {
            var (e, a) = (expected[u], actual[u]);
            Assert.Equal(e.Index, a.Index);
            Assert.Equal(e.Alive, a.Alive);
            Assert.Equal(e.FireRate, a.FireRate, 1e-9);
            Assert.Equal(e.Best is null, a.Best is null);
            if (e.Best is not { } eb) continue;
            var ab = a.Best!;
            Assert.Equal(eb.Label, ab.Label);
            Assert.Equal(eb.Negated, ab.Negated);
            Assert.Equal(eb.Support, ab.Support);
            Assert.Equal(eb.Threshold, ab.Threshold, 1e-6);
            Assert.Equal(eb.Precision, ab.Precision, 1e-9);
            Assert.Equal(eb.Recall, ab.Recall, 1e-9);
            Assert.Equal(eb.F1, ab.F1, 1e-9);
        }
    }

    private static float[] UnitMajor(Tensor rows) => rows.t().contiguous().data<float>().ToArray();

    /// <summary><c>sae score-labels</c> on the built-in model with a random TopK SAE gives, for every feature and every
    /// neuron, the best label, threshold, precision, recall and F1 that the dense <c>LabelScorer.Score</c> gives on the dense
    /// unit-major activations of the same tokens.</summary>
    [Fact]
    public void Score_labels_on_the_builtin_model_equals_the_dense_scores()
    {
        string corpus = Path.Combine(_dir, "c.jsonl");
        LabelledCorpus.Write(corpus, 5, 60);
        const long tokens = 1500;
        using var sae = RandomTopK();
        var options = new LabelScoringOptions { Tokens = tokens, BatchSize = Batch, Scorer = new LabelScorerOptions { MinSupport = 5 } };
        using var model = BuiltinModel.Load();
        var report = LabelScoring.Run(sae, model, null, Tokenizer.FromFolder(BuiltinModel.Folder), corpus, options);

        var (f, x, tl, fit, names) = Dense(sae, corpus, tokens);
        using (f) using (x)
        {
            Assert.Equal(tl.Count, report.Tokens);
            Assert.Equal(names, report.Labels);
            var features = LabelScorer.Score(UnitMajor(f), (int)f.shape[1], tl.Count, tl, names, fit, options.Scorer);
            var neurons = LabelScorer.Score(UnitMajor(x), (int)x.shape[1], tl.Count, tl, names, fit, options.Scorer with { BothSigns = true });
            Assert.Contains(features, s => s.Best is { F1: > 0 });
            AssertSame(features, report.Features);
            AssertSame(neurons, report.Neurons);
        }
    }

    /// <summary><c>sae probe --absorption</c> on the built-in model with a random TopK SAE gives the accuracies, top features
    /// and absorption results of <see cref="SparseProbing.Evaluate"/> and <c>FeatureAbsorption.Evaluate</c> on the
    /// dense features of the same tokens.</summary>
    [Fact]
    public void Probe_on_the_builtin_model_equals_the_dense_probe()
    {
        string corpus = Path.Combine(_dir, "c.jsonl");
        LabelledCorpus.Write(corpus, 9, 120);
        const long tokens = 3000;
        using var sae = RandomTopK();
        var probeOptions = new SparseProbingOptions { KValues = [1, 2, 5], MinPositives = 20, TrainSetSize = 400, TestSetSize = 200 };
        var absorption = new AbsorptionOptions { MinPositives = 20, MaxK = 3 };
        using var model = BuiltinModel.Load();
        var report = SparseProbing.Run(sae, model, null, Tokenizer.FromFolder(BuiltinModel.Folder), corpus,
            new LabelScoringOptions { Tokens = tokens, BatchSize = Batch }, probeOptions, absorption);

        var (f, x, tl, fit, names) = Dense(sae, corpus, tokens);
        using (f) using (x)
        {
            var expected = SparseProbing.Evaluate(f, x, tl, names, fit, probeOptions);
            using var wDec = sae.WDec.detach().to(ScalarType.Float32).cpu();
            var expectedAbsorption = FeatureAbsorption.Evaluate(f, x, wDec, tl, names, fit, absorption);
            Assert.Equal(tl.Count, report.Tokens);
            Assert.NotEmpty(expected.Tasks);
            Assert.Equal(expected.Tasks.Count, report.Tasks.Count);
            foreach (var (e, a) in expected.Tasks.Zip(report.Tasks))
            {
                Assert.Equal(e.Label, a.Label);
                Assert.Equal(e.TrainExamples, a.TrainExamples);
                Assert.Equal(e.LlmTestAccuracy, a.LlmTestAccuracy, 1e-9);
                Assert.Equal(e.SaeTestAccuracy!.Value, a.SaeTestAccuracy!.Value, 1e-9);
                Assert.Equal(e.SaeProbeFeatures, a.SaeProbeFeatures);
                Assert.Equal(e.TopFeatures, a.TopFeatures);
                foreach (int k in probeOptions.KValues) Assert.Equal(e.SaeTopK[k], a.SaeTopK[k], 1e-9);
            }
            var ea = expectedAbsorption.Labels;
            var aa = report.Absorption!.Labels;
            Assert.NotEmpty(ea);
            Assert.Equal(ea.Count, aa.Count);
            foreach (var (e, a) in ea.Zip(aa))
            {
                Assert.Equal(e.Label, a.Label);
                Assert.Equal(e.ProbeF1, a.ProbeF1, 1e-6);
                Assert.Equal(e.MainLatents, a.MainLatents);
                Assert.Equal(e.SparseF1.Count, a.SparseF1.Count);
                foreach (var (p, q) in e.SparseF1.Zip(a.SparseF1)) Assert.Equal(p, q, 1e-6);
                Assert.Equal(e.ProbeTruePositives, a.ProbeTruePositives);
                Assert.Equal(e.MeanAbsorptionFraction, a.MeanAbsorptionFraction, 1e-6);
                Assert.Equal(e.FullAbsorptions, a.FullAbsorptions);
                Assert.Equal(e.TopAbsorbers, a.TopAbsorbers);
            }
        }
    }

    /// <summary>Four tokens, the first two fitting, "a" on tokens 0 and 2, "b" on 1 and 3; features (columns) [2, 0, 3, 0],
    /// [0, 1, 0, 0], zeros, [5, 1, 4, 2]. By hand (candidate thresholds: the fitting values and 0, descending; F1 on the
    /// fitting half = 2·TP / (fired + support)):
    /// feature 0 fires on token 0 at t = 0: "a" with fitting F1 1; on the evaluation half token 2 fires (has "a"), token 3
    /// does not: P = R = F1 = 1; fire rate 2/4.
    /// feature 1 fires on token 1 at t = 0: "b" with fitting F1 1; on the evaluation half nothing fires: P = R = F1 = 0.
    /// feature 2 never fires: dead, no label.
    /// feature 3 at t = 1 fires on token 0 only: "a" with fitting F1 1 (t = 0: 2/3); evaluation: tokens 2 (a) and 3 (b)
    /// both exceed 1: P = 1/2, R = 1, F1 = 2/3; fire rate 1.</summary>
    [Fact]
    public void Sparse_label_scores_of_four_tokens_match_the_hand_computation()
    {
        float[,] x = { { 2, 0, 0, 5 }, { 0, 1, 0, 1 }, { 3, 0, 0, 4 }, { 0, 0, 0, 2 } };
        using var t = tensor(x);
        List<int[]> tl = [[0], [1], [0], [1]];
        bool[] fit = [true, true, false, false];
        var s = LabelScorer.Score(SparseColumns.FromRows(SparseRows.FromDense(t)), tl, ["a", "b"], fit, new LabelScorerOptions { MinSupport = 1 });
        Assert.Equal(4, s.Length);
        Assert.Equal((true, 0.5, "a", 0.0, 1.0, 1.0, 1.0, 1L), (s[0].Alive, s[0].FireRate, s[0].Best!.Label, s[0].Best!.Threshold, s[0].Best!.Precision, s[0].Best!.Recall, s[0].Best!.F1, s[0].Best!.Support));
        Assert.Equal((true, 0.25, "b", 0.0, 0.0, 0.0, 0.0), (s[1].Alive, s[1].FireRate, s[1].Best!.Label, s[1].Best!.Threshold, s[1].Best!.Precision, s[1].Best!.Recall, s[1].Best!.F1));
        Assert.False(s[2].Alive);
        Assert.Null(s[2].Best);
        Assert.Equal(0.0, s[2].FireRate);
        Assert.Equal((true, 1.0, "a", 1.0, 0.5, 1.0), (s[3].Alive, s[3].FireRate, s[3].Best!.Label, s[3].Best!.Threshold, s[3].Best!.Precision, s[3].Best!.Recall));
        Assert.Equal(2.0 / 3, s[3].Best!.F1, 12);
        AssertSame(LabelScorer.Score(UnitMajor(t), 4, 4, tl, ["a", "b"], fit, new LabelScorerOptions { MinSupport = 1 }), s);
    }

    /// <summary>On random features of 600 tokens × 300 units at 3 % density (some units never firing, some with negative
    /// values), scoring from the non-zeros gives every unit the dense scores, also scoring both signs.</summary>
    [Fact]
    public void Sparse_label_scores_equal_the_dense_scores_on_random_features()
    {
        const int n = 600, d = 300;
        var rng = new Random(3);
        var v = new float[n * d];
        for (int i = 0; i < n; i++)
            for (int j = 0; j < d; j++)
                if (j % 10 != 9 && rng.NextDouble() < 0.03 + (j % 7 == 0 ? 0.3 * ((i % 3) == 0 ? 1 : 0) : 0))
                    v[i * d + j] = (float)(rng.NextDouble() * 3 - (j % 5 == 0 ? 1.5 : 0));
        using var t = tensor(v).view(n, d);
        var tl = Enumerable.Range(0, n).Select(i => i % 3 == 0 ? new[] { 0 } : i % 4 == 1 ? new[] { 1, 2 } : []).ToList();
        var fit = Enumerable.Range(0, n).Select(i => (i / 16) % 2 == 0).ToArray();
        string[] names = ["x", "y", "z"];
        var columns = SparseColumns.FromRows(SparseRows.FromDense(t));
        foreach (bool both in new[] { false, true })
        {
            var o = new LabelScorerOptions { BothSigns = both, Candidates = 32 };
            AssertSame(LabelScorer.Score(UnitMajor(t), d, n, tl, names, fit, o), LabelScorer.Score(columns, tl, names, fit, o));
        }
    }

    /// <summary><see cref="SparseRows.Concat"/> of blocks made one by one holds the rows of the whole matrix.</summary>
    [Fact]
    public void Concatenated_blocks_hold_the_rows_of_the_whole_matrix()
    {
        float[,] x = { { 0, 1.5f, 0 }, { 0, 0, 0 }, { -2, 0, 3 }, { 0, 0, 4 } };
        using var t = tensor(x);
        var joined = SparseRows.Concat([SparseRows.FromDense(t.narrow(0, 0, 1)), SparseRows.FromDense(t.narrow(0, 1, 3))], 3);
        Assert.Equal((4, 3, 4L), (joined.Rows, joined.Columns, joined.NonZeros));
        int[][] cols = [[1], [], [0, 2], [2]];
        double[][] vals = [[1.5], [], [-2, 3], [4]];
        for (int i = 0; i < 4; i++)
        {
            Assert.Equal(cols[i], joined.Row(i).Columns);
            Assert.Equal(vals[i], joined.Row(i).Values);
        }
        Assert.Throws<SaeSharpException>(() => SparseRows.Concat([SparseRows.FromDense(t)], 4));
    }
}
