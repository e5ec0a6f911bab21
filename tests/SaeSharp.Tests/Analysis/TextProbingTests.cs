using SaeSharp.Analysis;
using SaeSharp.Models;
using SaeSharp.Pipelines;
using SaeSharp.Tests.Tokenizers;
using SaeSharp.Tokenizers;
using static TorchSharp.torch;

namespace SaeSharp.Tests.Analysis;

public class TextProbingTests
{
    [Fact]
    public void Mean_pool_averages_the_kept_positions_only()
    {
        // Two texts of 3 positions, d = 2; the first keeps positions 1 and 2, the second only position 0.
        using var x = tensor(new float[] { 100, -100, 1, 2, 3, 6, 5, 7, 9, 9, 9, 9 }).view(2, 3, 2);
        using var keep = tensor(new[] { false, true, true, true, false, false }).view(2, 3);
        using var m = TextProbing.MeanPool(x, keep);
        Assert.Equal(new float[] { 2, 4, 5, 7 }, m.data<float>().ToArray());
        using var none = tensor(new[] { false, false, false, true, true, true }).view(2, 3);
        Assert.Contains("no position", Assert.Throws<SaeSharpException>(() => TextProbing.MeanPool(x, none)).Message);
    }

    [Fact]
    public void Pooled_features_are_the_closed_form_means_over_the_tokens_that_are_not_bos_eos_or_padding()
    {
        // The fixture's SAE reads hook_embed, where feature i on token u is relu(E[u]·E[t_i]/|E[t_i]|) in closed form and
        // the activation is E[u]. "<|endoftext|>" (id 0, the tokenizer's BOS/EOS) is left out of the mean, as SAEBench's
        // get_bos_pad_eos_mask leaves it out; a context of 3 tokens keeps the first 3.
        using var f = new AnalysisFixture();
        var (sae, pm) = ModelForSae.LoadWithSae(f.SaeDir, f.ModelDir);
        using var _s = sae;
        using var _m = pm;
        var tok = Tokenizer.FromFolder(f.ModelDir);
        Assert.True(tok.BosTokenId == 0 || tok.EosTokenId == 0);
        string[] texts = ["<|endoftext|> cat dog<|endoftext|>", " bird bird fish sun moon", " red"];
        using var pooled = TextProbing.Pool(sae, pm.Model, pm.Hooks, tok, texts, new TextProbingOptions { ContextSize = 4, BatchSize = 2 });
        Assert.Equal("hook_embed", pooled.Hook);
        int[][] kept = [[f.Vocab["Ġcat"], f.Vocab["Ġdog"]], [f.Vocab["Ġbird"], f.Vocab["Ġbird"], f.Vocab["Ġfish"], f.Vocab["Ġsun"]], [f.Vocab["Ġred"]]];
        var expected = f.ExpectedActs();
        var e = f.Embedding();
        var feats = pooled.Features.data<float>().ToArray();
        var acts = pooled.Acts.data<float>().ToArray();
        Assert.Equal([3, AnalysisFixture.DSae], pooled.Features.shape);
        for (int t = 0; t < texts.Length; t++)
        {
            for (int i = 0; i < AnalysisFixture.DSae; i++)
                Assert.Equal(kept[t].Average(u => expected[i, u]), feats[t * AnalysisFixture.DSae + i], 4);
            for (int k = 0; k < 16; k++)
                Assert.Equal(kept[t].Average(u => (double)e[u, k]), acts[t * 16 + k], 4);
        }
        var err = Assert.Throws<SaeSharpException>(() => { using var p = TextProbing.Pool(sae, pm.Model, pm.Hooks, tok, [" cat", "<|endoftext|>"], new TextProbingOptions()); });
        Assert.Contains("text 1 has no token besides BOS, EOS and padding", err.Message);
    }

    [Fact]
    public void A_class_carried_by_one_features_mean_gives_top_1_accuracy_one()
    {
        // Three classes of 60 texts (48 train, 12 test each); 16 features of noise per token. Feature 5 is 1 on every
        // kept token of class "b" and 0 on the others' — but position 0 (BOS, masked) holds 0..10 at random on every
        // text, which would blur the classes if it were averaged in.
        var rng = new Random(4);
        var classes = new List<int[]>();
        var fit = new List<bool>();
        var pooledRows = new List<Tensor>();
        for (int c = 0; c < 3; c++)
            for (int i = 0; i < 60; i++)
            {
                int len = 6 + rng.Next(5);
                var a = new float[len * 16];
                for (int p = 0; p < len; p++)
                    for (int j = 0; j < 16; j++)
                        a[p * 16 + j] = j == 5 ? (p == 0 ? (float)(10 * rng.NextDouble()) : c == 1 ? 1f : 0f) : (float)rng.NextDouble();
                using var x = tensor(a).view(1, len, 16);
                using var keep = tensor(Enumerable.Range(0, len).Select(p => p > 0).ToArray()).view(1, len);
                pooledRows.Add(TextProbing.MeanPool(x, keep));
                classes.Add([c]);
                fit.Add(i < 48);
            }
        using var features = cat(pooledRows, 0);
        foreach (var t in pooledRows) t.Dispose();
        using var model = rand(180, 4, generator: new TorchSharp.torch.Generator(1));
        var options = new SparseProbingOptions { KValues = [1, 2], MinPositives = 10, OneVsRestClasses = true };
        var r = SparseProbing.Evaluate(features, model, classes, ["a", "b", "c"], [.. fit], options);
        Assert.Equal(["a", "b", "c"], r.Tasks.Select(t => t.Label));
        var b = r.Tasks[1];
        Assert.Equal(5, b.TopFeatures[0]);
        Assert.Equal(1.0, b.SaeTopK[1]);
        Assert.Equal(96, b.TrainExamples); // 48 positives and 48 negatives
        Assert.Equal(24, b.TestExamples);
    }

    [Fact]
    public void One_vs_rest_negatives_are_drawn_evenly_from_the_other_classes()
    {
        // Class 0 has 30 training texts, classes 1, 2 and 3 have 100 each: ⌈30/3⌉ = 10 from each, all 30 kept.
        var classes = new List<int[]>();
        foreach (var (c, n) in new[] { (0, 30), (1, 100), (2, 100), (3, 100) })
            for (int i = 0; i < n; i++) classes.Add([c]);
        var fit = Enumerable.Repeat(true, classes.Count).ToArray();
        var (rows, y) = SparseProbing.BalancedOneVsRest(classes, 0, fit, true, 4000, new Random(1));
        Assert.Equal(60, rows.Length);
        Assert.Equal(30, y.Count(v => v));
        Assert.All(rows.Where((_, i) => y[i]), r => Assert.Equal(0, classes[(int)r][0]));
        var negClasses = rows.Where((_, i) => !y[i]).GroupBy(r => classes[(int)r][0]).ToDictionary(g => g.Key, g => g.Count());
        Assert.Equal(new Dictionary<int, int> { [1] = 10, [2] = 10, [3] = 10 }, negClasses);
        Assert.Equal(60, rows.Distinct().Count());
        // With 4 positives, ⌈4/3⌉ = 2 from each other class (6), then 4 of those at random.
        var (rows2, y2) = SparseProbing.BalancedOneVsRest(classes, 0, fit, true, 8, new Random(1));
        Assert.Equal(8, rows2.Length);
        Assert.Equal(4, y2.Count(v => !v));
    }

    [Fact]
    public void Classification_datasets_split_each_class_by_saebenchs_sizes_and_corpora_four_to_one()
    {
        string dir = TestPaths.TempDir();
        string path = Path.Combine(dir, "news.jsonl");
        File.WriteAllLines(path, Enumerable.Range(0, 300).Select(i => $$"""{"text": "story {{i}}", "label": {{i % 3}}}"""));
        // 100 texts per class: 40 train + 10 test each with sizes 80/20; a class of 100 with sizes 400/100 splits 80/20 too.
        var d = TextProbing.FromClasses(path, new TextProbingOptions { Classes = ["2", "0"] }, 80, 20, 42);
        Assert.Equal(["2", "0"], d.Names);
        Assert.Equal(100, d.Texts.Count);
        Assert.Equal(80, d.Fit.Count(v => v));
        Assert.All(d.Texts.Where((_, i) => d.Labels[i][0] == 0), t => Assert.Equal(2, int.Parse(t.Split(' ')[1]) % 3));
        var big = TextProbing.FromClasses(path, new TextProbingOptions(), 400, 100, 42);
        Assert.Equal(300, big.Texts.Count);
        Assert.Equal(240, big.Fit.Count(v => v));
        Assert.Equal(300, big.Texts.Distinct().Count());
        var e = Assert.Throws<SaeSharpException>(() => TextProbing.FromClasses(path, new TextProbingOptions { Classes = ["0", "7"] }, 80, 20, 42));
        Assert.Contains("no text has class '7'", e.Message);
        File.WriteAllLines(Path.Combine(dir, "named.jsonl"), ["""{"text": "a", "label": "sports"}""", """{"text": "b", "label": "world"}"""]);
        e = Assert.Throws<SaeSharpException>(() => TextProbing.FromClasses(Path.Combine(dir, "named.jsonl"), new TextProbingOptions { Classes = ["sprots", "world"] }, 80, 20, 42));
        Assert.Contains("no text has class 'sprots' in 'label' (did you mean 'sports'?)", e.Message);
        e = Assert.Throws<SaeSharpException>(() => TextProbing.FromClasses(path, new TextProbingOptions { Classes = ["1"] }, 80, 20, 42));
        Assert.Contains("at least two classes", e.Message);
        e = Assert.Throws<SaeSharpException>(() => TextProbing.FromClasses(path, new TextProbingOptions { LabelField = "topic" }, 80, 20, 42));
        Assert.Contains("no class field 'topic'", e.Message);

        string corpus = Path.Combine(dir, "c.jsonl");
        SaeSharp.Corpus.LabelledCorpus.Write(corpus, 3, 50);
        Assert.True(TextProbing.IsLabelledCorpus(corpus));
        Assert.False(TextProbing.IsLabelledCorpus(path));
        // --classes names a classification dataset's classes; on a labelled corpus it is an error, never silently ignored.
        e = Assert.Throws<SaeSharpException>(() => TextProbing.Read(corpus, new TextProbingOptions { Classes = ["tense:pats"], MaxTexts = 40 }, 4000, 1000, 42));
        Assert.Contains("is a labelled corpus: its documents have labels, not classes; choose them with --labels tense:pats", e.Message);
        Assert.Equal(40, TextProbing.Read(corpus, new TextProbingOptions { MaxTexts = 40 }, 4000, 1000, 42).Texts.Count);
        var c = TextProbing.FromCorpus(corpus, 40, 4000, 1000);
        Assert.Equal(40, c.Texts.Count);
        Assert.Equal(32, c.Fit.Count(v => v));
        Assert.All(Enumerable.Range(0, 40), i => Assert.Equal(i % 5 != 4, c.Fit[i]));
        // A document has a label when one of its tokens has it.
        var rows = SaeSharp.Corpus.LabelledCorpus.Read(corpus).Take(40).ToList();
        for (int i = 0; i < 40; i++)
            Assert.Equal(rows[i].Labels.SelectMany(l => l).Distinct().Order(StringComparer.Ordinal), c.Labels[i].Select(l => c.Names[l]).Order(StringComparer.Ordinal));
    }
}
