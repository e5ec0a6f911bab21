using SaeSharp.Analysis;
using SaeSharp.Tests.Interventions;
using SaeSharp.Tests.Models;
using SaeSharp.Tests.Tokenizers;
using SaeSharp.Tokenizers;
using static TorchSharp.torch;

namespace SaeSharp.Tests.Analysis;

/// <summary>The logit-lens statistics and token set enrichment of SAELens's logits_lens_with_features tutorial, against
/// hand-computed values and a literal transcription of its formulas.</summary>
public class LogitWeightStatisticsTests : ModelTestBase
{
    [Fact]
    public void Moments_of_a_row_are_its_mean_population_std_skewness_and_kurtosis()
    {
        // [−1, 1]: mean 0, std 1, z = ±1: skewness 0, kurtosis 1. [0, 0, 0, 4]: mean 1, var (1+1+1+9)/4 = 3,
        // z = (−1, −1, −1, 3)/√3: skewness (−3 + 27)/(4·3√3) = 2/√3, kurtosis (3 + 81)/(4·9) = 7/3.
        using var x = tensor(new float[] { -1, 1, -1, 1, 0, 0, 0, 4 }).reshape(2, 4);
        using var m = LogitWeightStatistics.Moments(x);
        var v = m.data<double>().ToArray();
        double[] expected = [0, 1, 0, 1, 1, Math.Sqrt(3), 2 / Math.Sqrt(3), 7.0 / 3];
        for (int i = 0; i < 8; i++) Assert.True(Math.Abs(v[i] - expected[i]) < 1e-6, $"[{i}]: {v[i]}, expected {expected[i]}");
    }

    [Fact]
    public void Enrichment_scores_match_the_running_sum_walked_by_hand()
    {
        // Scores ranking tokens 0 > 1 > 2 > 3 > 4. Set {0}: +1 then −1/4 four times: max 1. Set {4}: −1/4 … −1, then 0:
        // max 1. Set {1, 3}: −1/3, +1/6, −1/6, +1/3, 0: max 1/3.
        using var scores = tensor(new float[] { 5, 4, 3, 2, 1 }).unsqueeze(0);
        using var e = LogitWeightStatistics.EnrichmentScores(scores, [new("top", [0]), new("bottom", [4]), new("odd", [1, 3])]);
        Assert.Equal(new long[] { 3, 1 }, e.shape);
        var v = e.data<double>().ToArray();
        Assert.Equal(1, v[0], 12);
        Assert.Equal(1, v[1], 12);
        Assert.Equal(1.0 / 3, v[2], 12);
    }

    [Fact]
    public void Enrichment_scores_equal_the_max_of_tsea_cumulative_sum_on_random_scores()
    {
        // calculate_batch_enrichment_scores transcribed: sort descending, +1/|S| at a hit, −1/(V − |S|) otherwise,
        // cumulative sum, max of its absolute value.
        var gen = manual_seed(5);
        using var scores = randn(7, 50);
        int[][] sets = [[0, 1, 2], [10, 20, 30, 40, 49], [.. Enumerable.Range(5, 30)]];
        using var e = LogitWeightStatistics.EnrichmentScores(scores, sets.Select((s, i) => new TokenSet($"s{i}", s)).ToList());
        var actual = e.data<double>().ToArray();
        var rows = scores.data<float>().ToArray();
        for (int s = 0; s < sets.Length; s++)
            for (int r = 0; r < 7; r++)
            {
                var order = Enumerable.Range(0, 50).OrderByDescending(t => rows[r * 50 + t]).ToList();
                double sum = 0, max = 0;
                foreach (var t in order)
                {
                    sum += sets[s].Contains(t) ? 1.0 / sets[s].Length : -1.0 / (50 - sets[s].Length);
                    max = Math.Max(max, Math.Abs(sum));
                }
                Assert.True(Math.Abs(max - actual[s * 7 + r]) < 1e-9, $"set {s}, row {r}: {actual[s * 7 + r]}, expected {max}");
            }
    }

    [Fact]
    public void An_empty_or_whole_vocabulary_set_is_refused_naming_it()
    {
        using var scores = tensor(new float[] { 3, 2, 1 }).unsqueeze(0);
        var e = Assert.Throws<SaeSharpException>(() => LogitWeightStatistics.EnrichmentScores(scores, [new("nothing", [])]));
        Assert.Contains("'nothing'", e.Message);
        e = Assert.Throws<SaeSharpException>(() => LogitWeightStatistics.EnrichmentScores(scores, [new("all", [0, 1, 2])]));
        Assert.Contains("'all'", e.Message);
        e = Assert.Throws<SaeSharpException>(() => LogitWeightStatistics.EnrichmentScores(scores, [new("far", [7])]));
        Assert.Contains("token id 7", e.Message);
    }

    [Theory]
    [InlineData(false)]
    [InlineData(true)]
    public void Moments_of_every_feature_are_those_of_w_dec_times_the_centred_folded_unembedding(bool cosine)
    {
        // TransformerLens's W_U (fold_ln, center_unembed): U[k, v] = γ_k·wte[v, k] − mean_v(γ_k·wte[v, k]); with cosine,
        // each column over its norm. Logit weights p[i, v] = Σ_k W_dec[i, k]·U[k, v]; moments computed here in doubles.
        using var model = Gpt2();
        string hook = "blocks.0.hook_resid_post";
        using var sae = InterventionTests.RandomSae(hook, 16, 300, 4);          // 300 > one chunk of 256
        var p = model.named_parameters().ToDictionary(x => x.name, x => x.parameter.detach().to(ScalarType.Float64).contiguous().data<double>().ToArray());
        var wte = p["transformer.wte.weight"];
        var gamma = p["transformer.ln_f.weight"];
        int d = gamma.Length, vocab = wte.Length / d;
        var u = new double[d, vocab];
        for (int k = 0; k < d; k++)
        {
            double mean = Enumerable.Range(0, vocab).Average(v => gamma[k] * wte[v * d + k]);
            for (int v = 0; v < vocab; v++) u[k, v] = gamma[k] * wte[v * d + k] - mean;
        }
        if (cosine)
            for (int v = 0; v < vocab; v++)
            {
                double n = Math.Sqrt(Enumerable.Range(0, d).Sum(k => u[k, v] * u[k, v]));
                for (int k = 0; k < d; k++) u[k, v] /= n;
            }
        var dec = sae.WDec.detach().to(ScalarType.Float64).contiguous().data<double>().ToArray();
        using var unembed = LogitWeightStatistics.Unembed(model, cosine);
        var all = LogitWeightStatistics.AllMoments(model, sae, hook, unembed);
        Assert.Equal(300, all.Count);
        foreach (int i in new[] { 0, 17, 255, 256, 299 })
        {
            var row = Enumerable.Range(0, vocab).Select(v => Enumerable.Range(0, d).Sum(k => dec[i * d + k] * u[k, v])).ToArray();
            double mean = row.Average(), std = Math.Sqrt(row.Average(x => (x - mean) * (x - mean)));
            double skew = row.Average(x => Math.Pow((x - mean) / std, 3)), kurt = row.Average(x => Math.Pow((x - mean) / std, 4));
            var m = all[i];
            Assert.Equal(i, m.Feature);
            Assert.True(Math.Abs(m.Mean - mean) < 1e-5 && (cosine || Math.Abs(mean) < 1e-9), $"feature {i} mean {m.Mean}, expected {mean}");
            Assert.True(Math.Abs(m.Std - std) < 1e-5 * std, $"feature {i} std {m.Std}, expected {std}");
            Assert.True(Math.Abs(m.Skewness - skew) < 1e-3, $"feature {i} skewness {m.Skewness}, expected {skew}");
            Assert.True(Math.Abs(m.Kurtosis - kurt) < 1e-3, $"feature {i} kurtosis {m.Kurtosis}, expected {kurt}");
        }
        // The enrichment of features taken in chunks equals that of the same rows computed at once.
        var sets = new List<TokenSet> { new("low", [.. Enumerable.Range(0, 10)]), new("some", [3, 25, 40]) };
        var features = Enumerable.Range(0, 300).Reverse().ToList();
        var chunked = LogitWeightStatistics.Enrichment(model, sae, hook, features, sets, unembed);
        using var once = LogitWeightStatistics.EnrichmentScores(LogitWeightStatistics.Projections(model, sae, hook, features, unembed), sets);
        var o = once.data<double>().ToArray();
        for (int s = 0; s < 2; s++)
            for (int r = 0; r < 300; r++) Assert.Equal(o[s * 300 + r], chunked[s, r], 12);
    }

    [Fact]
    public void Token_sets_follow_the_tutorials_regexes_letters_and_words_on_gpt2s_vocabulary()
    {
        var tok = Tokenizer.FromGpt2Files(TestPaths.Data("gpt2-tokenizer", "vocab.json"), TestPaths.Data("gpt2-tokenizer", "merges.txt"));
        int Id(string t) => tok.TokenToId(t) ?? throw new InvalidOperationException(t);
        var sets = TokenSet.Tutorial(tok).ToDictionary(s => s.Name, s => s.TokenIds.ToHashSet());
        Assert.Equal(26 + 17, sets.Count);
        // (token, set, in it?) as Python's re.match / get_letter_gene_sets decide on these vocabulary strings
        (string Token, string Set, bool In)[] cases =
        [
            ("Ġthe", "starts_with_space", true), ("Ġthe", "starts_with_lower", true), ("Ġthe", "t", true), ("Ġthe", "length_3", true),
            ("The", "starts_with_space", false), ("The", "starts_with_capital", true), ("Ġ1999", "4 digits", true),
            ("Ġ1999", "all_digits", true), ("Ġ1999", "3 digits", false), (".", "is_punctuation", true),
            (").", "contains_close_bracket", true), ("Ġthe", "is_punctuation", false),
        ];
        foreach (var (token, set, inSet) in cases) Assert.True(sets[set].Contains(Id(token)) == inSet, $"{token} in {set}: expected {inSet}");
        // a word of several tokens adds them all
        var words = TokenSet.FromWords(tok, "w", ["the", "Neuroplasticity"]);
        var expected = tok.Encode(" the").Concat(tok.Encode(" Neuroplasticity")).Distinct().Order().ToList();
        Assert.True(expected.Count > 2);
        Assert.Equal(expected, words.TokenIds);
        Assert.Throws<SaeSharpException>(() => TokenSet.FromRegex(tok, "bad", "(["));
        // The error points into the pattern as written (offset 4 of "[abc": the unterminated set), not into a wrapped form.
        var unterminated = Assert.Throws<SaeSharpException>(() => TokenSet.FromRegex(tok, "x", "[abc"));
        Assert.Contains("'[abc' at offset 4", unterminated.Message);
        Assert.DoesNotContain(@"\G", unterminated.Message);
        // A pattern that closes a group it did not open is refused, not read as "match 'a' at the start, or 'b' anywhere".
        Assert.Throws<SaeSharpException>(() => TokenSet.FromRegex(tok, "x", "a)|(b"));
        // Anchored at the start as re.match: "he" does not match "Ġhe" (it starts with Ġ), "Ġhe" does.
        Assert.DoesNotContain(Id("Ġhe"), TokenSet.FromRegex(tok, "he", "he").TokenIds);
        Assert.Contains(Id("Ġhe"), TokenSet.FromRegex(tok, "he", "Ġhe").TokenIds);
    }
}
