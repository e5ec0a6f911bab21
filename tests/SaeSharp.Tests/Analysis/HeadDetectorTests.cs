using System.Text.Json.Nodes;
using SaeSharp.Analysis;
using SaeSharp.Models;
using SaeSharp.Tests.Cli;
using SaeSharp.Tests.Models;
using static TorchSharp.torch;

namespace SaeSharp.Tests.Analysis;

/// <summary>TransformerLens's head detector (<see cref="HeadDetector"/>, <c>sae model head-scores</c>): detection patterns
/// written out by hand from transformer_lens/head_detector.py, hand-built attention patterns whose scores are known, and on a
/// tiny model the scores recomputed by plain loops over <c>hook_pattern</c> of a cached run.</summary>
public class HeadDetectorTests : ModelTestBase
{
    private static double[,] Grid(Tensor t)
    {
        var v = t.to(ScalarType.Float64).data<double>().ToArray();
        int n = (int)t.shape[0];
        var g = new double[n, n];
        for (int i = 0; i < n; i++) for (int j = 0; j < n; j++) g[i, j] = v[i * n + j];
        return g;
    }

    private static void AssertOnes(double[,] g, params (int Q, int K)[] ones)
    {
        for (int i = 0; i < g.GetLength(0); i++)
            for (int j = 0; j < g.GetLength(1); j++)
                Assert.True(g[i, j] == (ones.Contains((i, j)) ? 1 : 0), $"[{i}, {j}] = {g[i, j]}");
    }

    [Fact]
    public void Detection_patterns_are_the_ones_TransformerLens_builds()
    {
        long[] tokens = [5, 7, 9, 5, 7, 9];
        using var prev = HeadDetector.DetectionPattern(HeadType.PreviousToken, tokens);
        AssertOnes(Grid(prev), (1, 0), (2, 1), (3, 2), (4, 3), (5, 4));
        using var dup = HeadDetector.DetectionPattern(HeadType.DuplicateToken, tokens);
        AssertOnes(Grid(dup), (3, 0), (4, 1), (5, 2));
        using var ind = HeadDetector.DetectionPattern(HeadType.Induction, tokens);
        AssertOnes(Grid(ind), (3, 1), (4, 2), (5, 3));
        // torch.roll then tril keeps [i, i] when token i−1 equals token i; the duplicate pattern never has its diagonal.
        using var same = HeadDetector.DetectionPattern(HeadType.Induction, [4, 4, 6]);
        AssertOnes(Grid(same), (1, 1));
        using var sameDup = HeadDetector.DetectionPattern(HeadType.DuplicateToken, [4, 4, 6]);
        AssertOnes(Grid(sameDup), (1, 0));
    }

    /// <summary>Head 0 attends to the previous token (position 0 to itself), head 1 uniformly over the causal past.</summary>
    private static Tensor PreviousAndUniform(int n)
    {
        var p = new float[2 * n * n];
        for (int i = 0; i < n; i++)
        {
            p[i * n + Math.Max(0, i - 1)] = 1;
            for (int j = 0; j <= i; j++) p[n * n + i * n + j] = 1f / (i + 1);
        }
        return tensor(p, [2, n, n]);
    }

    [Fact]
    public void A_pure_previous_token_head_scores_one_once_the_bos_column_is_left_out()
    {
        const int n = 8;
        using var patterns = PreviousAndUniform(n);
        using var det = HeadDetector.DetectionPattern(HeadType.PreviousToken, new long[n]);
        // mul: Σ A·D / Σ A; row 0's weight sits on [0, 0], outside the detection pattern.
        var mul = HeadDetector.Similarity(patterns, det);
        Assert.Equal((n - 1.0) / n, mul[0], 1e-12);
        double uniform = Enumerable.Range(1, n - 1).Sum(i => 1.0 / (i + 1)) / n;
        Assert.Equal(uniform, mul[1], 1e-6);   // 1/(i+1) held in float32
        Assert.Equal(1.0, HeadDetector.Similarity(patterns, det, excludeBos: true)[0], 1e-12);
        // Excluding the current token too drops row 0 of the uniform head entirely and the diagonal elsewhere.
        double uniformBoth = Enumerable.Range(2, n - 2).Sum(i => 1.0 / (i + 1)) / Enumerable.Range(2, n - 2).Sum(i => (i - 1.0) / (i + 1));
        Assert.Equal(uniformBoth, HeadDetector.Similarity(patterns, det, excludeBos: true, excludeCurrentToken: true)[1], 1e-6);
        // abs: 1 − round(Σ|A − D| / n, 3); the only difference of head 0 is its [0, 0].
        var abs = HeadDetector.Similarity(patterns, det, HeadErrorMeasure.Abs);
        Assert.Equal(1 - Math.Round(1.0 / n, 3), abs[0], 1e-12);
        Assert.Equal(1.0, HeadDetector.Similarity(patterns, det, HeadErrorMeasure.Abs, excludeBos: true)[0], 1e-12);
    }

    [Fact]
    public void An_exact_induction_pattern_on_a_repeated_sequence_scores_one()
    {
        long[] once = [11, 3, 7, 20, 5];
        long[] tokens = [.. once, .. once];
        int k = once.Length, n = tokens.Length;
        var p = new float[n * n];
        for (int i = 0; i < n; i++) p[i * n + (i < k ? 0 : i - k + 1)] = 1;   // the first copy rests on position 0
        using var pattern = tensor(p, [1, n, n]);
        using var ind = HeadDetector.DetectionPattern(HeadType.Induction, tokens);
        Assert.Equal(1.0, HeadDetector.Similarity(pattern, ind, excludeBos: true)[0], 1e-12);
        Assert.Equal((double)k / n, HeadDetector.Similarity(pattern, ind)[0], 1e-12);
        using var dup = HeadDetector.DetectionPattern(HeadType.DuplicateToken, tokens);
        Assert.Equal(0.0, HeadDetector.Similarity(pattern, dup, excludeBos: true)[0], 1e-12);
    }

    [Fact]
    public void Detect_on_a_tiny_model_equals_the_scores_computed_by_hand_from_hook_pattern()
    {
        using var model = Gpt2(nLayer: 2, seed: 5);
        long[] ids = [3, 8, 1, 3, 8, 1, 9];
        using var tokens = tensor(ids).unsqueeze(0);
        var r = HeadDetector.Detect(model, [tokens], HeadErrorMeasure.Mul, excludeBos: true);
        var abs = HeadDetector.Detect(model, [tokens], HeadErrorMeasure.Abs);
        using var run = model.RunWithCache(tokens, h => h.EndsWith("hook_pattern", StringComparison.Ordinal));
        int n = ids.Length;
        bool Prev(int i, int j) => j == i - 1;
        bool Dup(int i, int j) => j < i && ids[j] == ids[i];
        bool Ind(int i, int j) => j >= 1 && j <= i && ids[j - 1] == ids[i];
        for (int l = 0; l < 2; l++)
            for (int h = 0; h < 4; h++)
            {
                var a = run.Cache["pattern", l][0, h].data<float>().ToArray();
                double Mul(Func<int, int, bool> d)
                {
                    double hit = 0, all = 0;
                    for (int i = 0; i < n; i++)
                        for (int j = 1; j < n; j++)
                        {
                            all += a[i * n + j];
                            if (d(i, j)) hit += a[i * n + j];
                        }
                    return hit / all;
                }
                double Abs(Func<int, int, bool> d)
                {
                    double s = 0;
                    for (int i = 0; i < n; i++) for (int j = 0; j < n; j++) s += Math.Abs(a[i * n + j] - (d(i, j) ? 1 : 0));
                    return 1 - Math.Round(s / n, 3);
                }
                Assert.Equal(Mul(Prev), r.PreviousToken[l, h], 1e-6);
                Assert.Equal(Mul(Dup), r.DuplicateToken[l, h], 1e-6);
                Assert.Equal(Mul(Ind), r.Induction[l, h], 1e-6);
                Assert.Equal(Abs(Prev), abs.PreviousToken[l, h], 1e-6);
                Assert.Equal(Abs(Ind), abs.Induction[l, h], 1e-6);
            }
        // A list of prompts: the mean of each prompt's scores (detect_head of a list of strings).
        using var other = tensor(new long[] { 4, 4, 2, 7 }).unsqueeze(0);
        var both = HeadDetector.Detect(model, [tokens, other]);
        var one = HeadDetector.Detect(model, [tokens]);
        var two = HeadDetector.Detect(model, [other]);
        Assert.Equal((one.Induction[1, 2] + two.Induction[1, 2]) / 2, both.Induction[1, 2], 1e-12);
    }

    [Fact]
    public void Repeated_random_tokens_and_their_stripe_scores_match_loops_over_hook_pattern()
    {
        using var tokens = RepeatedRandomTokens.Generate(3, 6, 10, 50, seed: 7);
        Assert.Equal([3L, 12L], tokens.shape);
        var t = tokens.data<long>().ToArray();
        for (int b = 0; b < 3; b++)
            for (int i = 0; i < 6; i++)
            {
                Assert.Equal(t[b * 12 + i], t[b * 12 + 6 + i]);
                Assert.InRange(t[b * 12 + i], 10, 49);
            }
        using (var again = RepeatedRandomTokens.Generate(3, 6, 10, 50, seed: 7)) Assert.Equal(t, again.data<long>().ToArray());

        using var model = Gpt2(nLayer: 2, seed: 6);
        var r = HeadDetector.RepeatedTokenScores(model, tokens);
        using var run = model.RunWithCache(tokens, h => h.EndsWith("hook_pattern", StringComparison.Ordinal));
        const int len = 6, n = 12;
        for (int l = 0; l < 2; l++)
            for (int h = 0; h < 4; h++)
            {
                var p = run.Cache["pattern", l][.., h].contiguous().data<float>().ToArray();   // [batch, q, k]
                double Stripe(int back)
                {
                    double s = 0;
                    int count = 0;
                    for (int b = 0; b < 3; b++)
                        for (int q = back; q < n; q++, count++) s += p[b * n * n + q * n + q - back];
                    return s / count;
                }
                Assert.Equal(Stripe(1), r.PreviousToken[l, h], 1e-6);
                Assert.Equal(Stripe(len), r.DuplicateToken[l, h], 1e-6);
                Assert.Equal(Stripe(len - 1), r.Induction[l, h], 1e-6);
            }
    }

    /// <summary>A batch larger than one run's chunk (16 sequences) is run chunk by chunk (a --batch of 100000 was killed for
    /// memory): the scores equal the stripe means of one run over the whole batch.</summary>
    [Fact]
    public void Repeated_token_scores_over_several_chunks_equal_one_run_over_the_batch()
    {
        using var tokens = RepeatedRandomTokens.Generate(37, 5, 10, 50, seed: 2);
        using var model = Gpt2(nLayer: 2, seed: 4);
        var r = HeadDetector.RepeatedTokenScores(model, tokens);
        using var run = model.RunWithCache(tokens, h => h.EndsWith("hook_pattern", StringComparison.Ordinal));
        for (int l = 0; l < 2; l++)
        {
            var p = run.Cache["pattern", l].to(ScalarType.Float64);   // [batch, head, q, k]
            var induction = p.diagonal(-4, -2, -1).mean([0, 2]).data<double>().ToArray();
            var previous = p.diagonal(-1, -2, -1).mean([0, 2]).data<double>().ToArray();
            for (int h = 0; h < 4; h++)
            {
                Assert.Equal(induction[h], r.Induction[l, h], 1e-12);
                Assert.Equal(previous[h], r.PreviousToken[l, h], 1e-12);
            }
        }
    }

    /// <summary>--repeated-random too short for the stripes is named with the limit; past a rotary model's context once repeated it runs, noted.</summary>
    [Fact]
    public void Repeated_random_lengths_without_stripes_are_named_and_beyond_a_rotary_context_noted()
    {
        var (one, _, oneErr) = CliRunner.Run("model", "head-scores", "--model", "builtin", "--repeated-random", "1");
        Assert.NotEqual(0, one);
        Assert.Contains("--repeated-random 1: the duplicate and induction stripes need at least 2 random tokens", oneErr);
        // builtin is rotary: past its n_ctx it runs on with a note (a learned-position model refuses: GenerationPastContextTests).
        var (huge, _, hugeErr) = CliRunner.Run("model", "head-scores", "--model", "builtin", "--repeated-random", "129", "--batch", "1");
        Assert.True(huge == 0, hugeErr);
        Assert.Contains("note: 258 tokens exceed n_ctx=256 of builtin", hugeErr.ReplaceLineEndings(" "));
    }

    [Fact]
    public void Head_scores_command_prints_the_tables_and_writes_every_score_to_json()
    {
        string dir = TinyModels.WriteGpt2(Sub("tok"), seed: 3, nLayer: 2, nEmbd: 16, nHead: 4, vocab: 50257, nPositions: 64);
        AddGpt2Tokenizer(dir);
        string json = Path.Combine(Dir, "scores.json");
        var (exit, output, err) = CliRunner.Run("model", "head-scores", "--model", dir, "--repeated-random", "10", "--seed", "3", "--json", json);
        Assert.True(exit == 0, err);
        Assert.Contains("2 × 10 random tokens in [100, 20000) repeated twice (seed 3)", output);
        Assert.Contains("Induction score", output);
        Assert.Contains("Top heads", output);
        var node = JsonNode.Parse(File.ReadAllText(json))!;
        using var model = ModelLoader.FromPretrained(dir);
        using var tokens = RepeatedRandomTokens.Generate(2, 10, 100, 20000, 3);
        var r = HeadDetector.RepeatedTokenScores(model, tokens);
        for (int l = 0; l < 2; l++)
            for (int h = 0; h < 4; h++)
                Assert.Equal(r.Induction[l, h], node["induction_head"]![l]![h]!.GetValue<double>(), 1e-12);

        var (both, _, bothErr) = CliRunner.Run("model", "head-scores", "--model", dir, "--repeated-random", "10", "--prompt", "Hello");
        Assert.NotEqual(0, both);
        Assert.Contains("either --prompt", bothErr);
        var (measure, _, measureErr) = CliRunner.Run("model", "head-scores", "--model", dir, "--repeated-random", "10", "--error-measure", "abs");
        Assert.NotEqual(0, measure);
        Assert.Contains("--error-measure", measureErr);
        var (range, _, rangeErr) = CliRunner.Run("model", "head-scores", "--model", dir, "--repeated-random", "10", "--token-range", "60000,70000");
        Assert.NotEqual(0, range);
        Assert.Contains("--token-range '60000,70000'", rangeErr);
    }

    /// <summary>detect_head with a pattern of one's own (<c>--pattern</c> JSON) equal to the built-in previous-token pattern
    /// gives the previous-token scores; <c>--heads</c> scores those heads only, each equal to its cell of the full run;
    /// <c>--input</c> rows score as the same prompts given as text; <c>--png</c> draws each score.</summary>
    [Fact]
    public void A_pattern_of_ones_own_a_subset_of_heads_and_input_token_ids_score_as_the_built_in_run_does()
    {
        string dir = TinyModels.WriteGpt2(Sub("tok"), seed: 5, nLayer: 2, nEmbd: 16, nHead: 4, vocab: 50257, nPositions: 16);
        AddGpt2Tokenizer(dir);
        const string a = "the cat sat on the mat", b = "a dog ran to the park";
        using var model = ModelLoader.FromPretrained(dir);
        var prompts = new[] { model.ToTokens(a), model.ToTokens(b) };
        Assert.Equal(prompts[0].shape[1], prompts[1].shape[1]);
        int n = (int)prompts[0].shape[1];
        var full = HeadDetector.Detect(model, prompts, HeadErrorMeasure.Abs, excludeBos: true);

        // The previous-token pattern written by hand: 1 at [i, i − 1].
        var rows = Enumerable.Range(0, n).Select(i => Enumerable.Range(0, n).Select(j => j == i - 1 ? 1.0 : 0.0).ToArray()).ToArray();
        using var previous = tensor(rows.SelectMany(r => r).ToArray(), [n, n]);
        var own = HeadDetector.Detect(model, prompts, previous, HeadErrorMeasure.Abs, excludeBos: true);
        for (int l = 0; l < 2; l++)
            for (int h = 0; h < 4; h++) Assert.Equal(full.PreviousToken[l, h], own[l, h], 1e-12);

        string patternFile = Sub("prev.json");
        File.WriteAllText(patternFile, System.Text.Json.JsonSerializer.Serialize(rows));
        string json = Sub("own.json"), png = Sub("own.png");
        var (exit, output, err) = CliRunner.Run("model", "head-scores", "--model", dir, "--prompt", a, "--prompt", b, "--error-measure", "abs", "--exclude-bos",
            "--pattern", patternFile, "--heads", "0.1,1.3", "--json", json, "--png", png);
        Assert.True(exit == 0, err);
        Assert.Contains("Pattern score", output);
        Assert.Contains($"wrote {png}", output);
        Assert.Equal([0x89, (byte)'P', (byte)'N', (byte)'G'], File.ReadAllBytes(png).Take(4));
        var node = JsonNode.Parse(File.ReadAllText(json))!["pattern_score"]!;
        for (int l = 0; l < 2; l++)
            for (int h = 0; h < 4; h++)
                if ((l, h) is (0, 1) or (1, 3)) Assert.Equal(full.PreviousToken[l, h], node[l]![h]!.GetValue<double>(), 1e-12);
                else Assert.Null(node[l]![h]);

        // Built-in scores of a subset in the library: NaN outside it, the full run's cells inside.
        var subset = HeadDetector.Detect(model, prompts, HeadErrorMeasure.Abs, excludeBos: true, heads: [new(1, 0)]);
        Assert.Equal(full.Induction[1, 0], subset.Induction[1, 0], 1e-12);
        Assert.True(double.IsNaN(subset.Induction[0, 0]) && double.IsNaN(subset.DuplicateToken[1, 1]));

        // The same two prompts as token ids, one a row: the same scores; --png gives one picture per built-in score.
        string ids = Sub("ids.safetensors");
        using (var both = cat(prompts, 0)) SaeSharp.IO.SafeTensors.Save(ids, new Dictionary<string, Tensor> { ["tokens"] = both });
        string idsJson = Sub("ids.json"), pngs = Sub("scores.png");
        var (idsExit, idsOut, idsErr) = CliRunner.Run("model", "head-scores", "--model", dir, "--input", ids, "--error-measure", "abs", "--exclude-bos",
            "--json", idsJson, "--png", pngs);
        Assert.True(idsExit == 0, idsErr);
        var scores = JsonNode.Parse(File.ReadAllText(idsJson))!;
        for (int l = 0; l < 2; l++)
            for (int h = 0; h < 4; h++)
                Assert.Equal(full.Induction[l, h], scores["induction_head"]![l]![h]!.GetValue<double>(), 1e-12);
        foreach (var kind in new[] { "previous_token_head", "duplicate_token_head", "induction_head" })
            Assert.Contains($"wrote {Sub($"scores.{kind}.png")}", idsOut);
        foreach (var p in prompts) p.Dispose();
    }

    /// <summary>A prompt past n_ctx, a pattern of the wrong size or not lower triangular, and a head outside the model are
    /// refused naming the option.</summary>
    [Fact]
    public void Head_scores_names_the_option_of_a_prompt_too_long_a_bad_pattern_or_head()
    {
        string dir = TinyModels.WriteGpt2(Sub("tok"), seed: 5, nLayer: 2, nEmbd: 16, nHead: 4, vocab: 50257, nPositions: 8);
        AddGpt2Tokenizer(dir);
        string longPrompt = string.Join(" ", Enumerable.Repeat("cat", 12));
        string upper = Sub("upper.json"), small = Sub("small.json");
        File.WriteAllText(upper, "[[0, 0, 0, 1], [1, 0, 0, 0], [0, 1, 0, 0], [0, 0, 1, 0]]");
        File.WriteAllText(small, "[[0, 0], [1, 0]]");
        foreach (var (args, message) in new (string[], string)[]
        {
            (["--prompt", longPrompt], "--prompt \"cat cat"),
            (["--prompt", "the cat sat", "--pattern", upper], "above the diagonal; a detection pattern is lower triangular"),
            (["--prompt", "the cat sat", "--pattern", small], "a [2, 2] pattern for a --prompt of 4 tokens"),
            (["--prompt", "the cat sat", "--heads", "2.0"], "--heads 2.0: the model has layers 0..1"),
            (["--repeated-random", "3", "--heads", "0.0"], "--heads"),
        })
        {
            var (exit, _, err) = CliRunner.Run(["model", "head-scores", "--model", dir, .. args]);
            Assert.NotEqual(0, exit);
            Assert.Contains(message, err.ReplaceLineEndings(" "));
        }
        var (_, _, tooLong) = CliRunner.Run("model", "head-scores", "--model", dir, "--prompt", longPrompt);
        Assert.Contains("13 tokens, more than the context window", tooLong.ReplaceLineEndings(" "));
    }
}
