using SaeSharp.Models;
using TorchSharp;
using static TorchSharp.torch;

namespace SaeSharp.Tests.Models;

/// <summary><see cref="GenerationOptions.RepetitionPenalty"/> (Hugging Face's <c>RepetitionPenaltyLogitsProcessor</c>) and
/// <see cref="GenerationOptions.FreqPenalty"/> (TransformerLens's <c>sample_logits(freq_penalty=...)</c>) against penalised
/// logits computed by hand, and generation against a whole-sequence loop written here that penalises each step by hand.</summary>
public class GenerationPenaltyTests : ModelTestBase
{
    /// <summary>The penalties by hand in TransformerLens's order: a token seen in <paramref name="seen"/> has its logit divided by
    /// <paramref name="rep"/> when positive, multiplied when negative; then ÷ temperature (none when greedy); then
    /// − <paramref name="freq"/> × its count.</summary>
    internal static double[] HandPenalised(float[] logits, IEnumerable<long> seen, double rep, double freq, double temperature)
    {
        var counts = new int[logits.Length];
        foreach (long t in seen) counts[t]++;
        var l = new double[logits.Length];
        for (int i = 0; i < l.Length; i++)
        {
            double x = logits[i];
            if (counts[i] > 0) x = x < 0 ? x * rep : x / rep;
            l[i] = x / (temperature == 0 ? 1 : temperature) - freq * counts[i];
        }
        return l;
    }

    private static double[] Softmax(double[] l)
    {
        var e = l.Select(v => Math.Exp(v - l.Max())).ToArray();
        return e.Select(v => v / e.Sum()).ToArray();
    }

    internal static int ArgMax(double[] l) => Array.IndexOf(l, l.Max());

    /// <summary>Token counts [rows, vocab] of <paramref name="seen"/>, as generation keeps them.</summary>
    private static Tensor Counts(int rows, int vocab, long[] seen)
    {
        var c = new float[rows * vocab];
        for (int r = 0; r < rows; r++)
            foreach (long t in seen) c[r * vocab + t]++;
        return tensor(c, rows, vocab);
    }

    // Logits (3, −1, 0.5, 2); token 0 seen twice, token 1 once.
    private static readonly float[] L = [3f, -1f, 0.5f, 2f];
    private static readonly long[] Seen = [0, 1, 0];

    [Fact]
    public void Repetition_penalty_divides_positive_and_multiplies_negative_logits_of_seen_tokens_only()
    {
        // By hand, p = 2: (3/2, −1·2, 0.5, 2) = (1.5, −2, 0.5, 2): greedy now picks token 3 (argmax 0 before); token 2 (unseen)
        // keeps 0.5 and token 3 keeps 2.
        Assert.Equal(new[] { 1.5, -2, 0.5, 2 }, HandPenalised(L, Seen, 2, 0, 0));
        using var logits = tensor(L).unsqueeze(0);
        using var counts = Counts(1, 4, Seen);
        using (var plain = Generation.Sample(logits, new GenerationOptions(), null)) Assert.Equal(0L, plain.item<long>());
        using (var greedy = Generation.Sample(logits, new GenerationOptions { RepetitionPenalty = 2 }, null, counts))
            Assert.Equal(3L, greedy.item<long>());
        // The sign rule seen in the distribution, at temperature 1: softmax(1.5, −2, 0.5, 2) = (0.328, 0.010, 0.121, 0.541);
        // applying it as a subtraction or to every token would give other frequencies.
        AssertFrequencies(new GenerationOptions { Temperature = 1, RepetitionPenalty = 2 }, Softmax([1.5, -2, 0.5, 2]));
        // p < 1 favours seen tokens: (6, −0.5, 0.5, 2).
        AssertFrequencies(new GenerationOptions { Temperature = 1, RepetitionPenalty = 0.5 }, Softmax([6, -0.5, 0.5, 2]));
    }

    [Fact]
    public void Frequency_penalty_subtracts_count_times_penalty_after_the_temperature()
    {
        // T = 2, f = 0.5: (3, −1, 0.5, 2)/2 − 0.5·(2, 1, 0, 0) = (0.5, −1, 0.25, 1). Before the temperature it would be
        // ((3, −1, 0.5, 2) − (1, 0.5, 0, 0))/2 = (1, −0.75, 0.25, 1): token 0's probability 0.378 instead of 0.274.
        Assert.Equal(new[] { 0.5, -1, 0.25, 1 }, HandPenalised(L, Seen, 1, 0.5, 2));
        AssertFrequencies(new GenerationOptions { Temperature = 2, FreqPenalty = 0.5 }, Softmax([0.5, -1, 0.25, 1]));
        // Both, in TransformerLens's order (repetition, temperature, frequency): (1.5, −2, 0.5, 2)/2 − (1, 0.5, 0, 0).
        AssertFrequencies(new GenerationOptions { Temperature = 2, FreqPenalty = 0.5, RepetitionPenalty = 2 }, Softmax([-0.25, -1.5, 0.25, 1]));
        // Greedy: the raw logits minus f × count: f = 0.6 gives (1.8, −1.6, 0.5, 2) → token 3; f = 0.4 gives (2.2, ...) → token 0.
        using var logits = tensor(L).unsqueeze(0);
        using var counts = Counts(1, 4, Seen);
        using (var g = Generation.Sample(logits, new GenerationOptions { FreqPenalty = 0.6 }, null, counts)) Assert.Equal(3L, g.item<long>());
        using (var g = Generation.Sample(logits, new GenerationOptions { FreqPenalty = 0.4 }, null, counts)) Assert.Equal(0L, g.item<long>());
        // A negative penalty favours repeats (TransformerLens ignores one: `if freq_penalty > 0`): (3, −1, 0.5, 2) + (2, 1, 0, 0).
        AssertFrequencies(new GenerationOptions { Temperature = 1, FreqPenalty = -1 }, Softmax([5, 0, 0.5, 2]));
    }

    /// <summary>20 000 draws from <see cref="L"/> with <see cref="Seen"/> seen: each token's frequency within 0.015 of
    /// <paramref name="p"/> (standard error below 0.004).</summary>
    private static void AssertFrequencies(GenerationOptions o, double[] p)
    {
        const int draws = 20000;
        using var logits = tensor(L).unsqueeze(0).expand(draws, 4).contiguous();
        using var counts = Counts(draws, 4, Seen);
        using var ids = Generation.Sample(logits, o, new Generator(7), counts);
        var n = new int[4];
        foreach (long id in ids.data<long>().ToArray()) n[id]++;
        for (int i = 0; i < 4; i++)
            Assert.True(Math.Abs(n[i] / (double)draws - p[i]) < 0.015, $"token {i}: frequency {n[i] / (double)draws}, expected {p[i]:F3}");
    }

    /// <summary>Greedy by hand: each step a whole-sequence forward of the sequence so far, its last logits penalised by
    /// <see cref="HandPenalised"/> over the prompt's tokens and the new ones.</summary>
    private static long[] HandGreedy(HookedTransformer m, long[] prompt, int n, double rep, double freq)
    {
        var seq = prompt.ToList();
        for (int t = 0; t < n; t++)
        {
            using var scope = NewDisposeScope();
            using var _ = no_grad();
            var last = m.Forward(tensor(seq.ToArray()).unsqueeze(0))[0, -1].to(ScalarType.Float32).data<float>().ToArray();
            seq.Add(ArgMax(HandPenalised(last, seq, rep, freq, 0)));
        }
        return seq.Skip(prompt.Length).ToArray();
    }

    [Fact]
    public void Penalised_greedy_generation_equals_the_whole_sequence_loop_with_and_without_the_kv_cache()
    {
        foreach (var m in AllKinds())
            using (m)
            {
                long[] prompt = [9, 4, 17, 4];
                using var plain = m.Generate(Tokens(prompt), 10, new GenerationOptions());
                foreach (var (rep, freq) in new[] { (1.8, 0.0), (1.0, 0.7), (1.5, 0.4), (0.7, 0.0) })
                {
                    string what = $"{m.Config.Architecture}, repetition {rep}, frequency {freq}";
                    var o = new GenerationOptions { RepetitionPenalty = rep, FreqPenalty = freq, ReturnLogits = true };
                    using var cached = m.Generate(Tokens(prompt), 10, o);
                    using var full = m.Generate(Tokens(prompt), 10, o with { UseKvCache = false });
                    var expected = HandGreedy(m, prompt, 10, rep, freq);
                    Assert.Equal(expected, cached.Tokens[0].narrow(0, 4, 10).data<long>().ToArray());
                    Assert.Equal(expected, full.Tokens[0].narrow(0, 4, 10).data<long>().ToArray());
                    // The returned logits are the model's, before the penalties: those of a forward on the final sequence.
                    AssertAllClose(m.Forward(cached.Tokens).narrow(1, 3, 10), cached.Logits!, 1e-5, what);
                    AssertAllClose(full.Logits!, cached.Logits!, 1e-5, what);
                }
                // The penalties change what a random tiny model repeats.
                using var penalised = m.Generate(Tokens(prompt), 10, new GenerationOptions { RepetitionPenalty = 1.8, FreqPenalty = 0.7 });
                Assert.False(plain.Tokens.equal(penalised.Tokens).all().item<bool>(), m.Config.Architecture);
            }
    }

    [Fact]
    public void Sampled_penalised_generation_is_the_same_with_and_without_the_kv_cache()
    {
        foreach (var m in AllKinds())
            using (m)
            {
                var o = new GenerationOptions { Temperature = 1.3, TopK = 20, TopP = 0.95, Seed = 5, RepetitionPenalty = 1.4, FreqPenalty = 0.5, ReturnLogits = true };
                using var prompt = Tokens([7, 3, 3, 12], [2, 48, 6, 1]);
                using var cached = m.Generate(prompt, 8, o);
                using var full = m.Generate(prompt, 8, o with { UseKvCache = false });
                Assert.True(cached.Tokens.equal(full.Tokens).all().item<bool>(), m.Config.Architecture);
                AssertAllClose(full.Logits!, cached.Logits!, 1e-5, m.Config.Architecture);
            }
    }

    [Fact]
    public void Left_padding_is_not_counted()
    {
        foreach (var m in AllKinds())
            using (m)
            {
                long[] prompt = [9, 4, 17];
                const double rep = 3.0, freq = 1.0;
                var o = new GenerationOptions { RepetitionPenalty = rep, FreqPenalty = freq };
                // Pad with the token the penalised model picks first, twice: were the padding counted, the first step's
                // penalised logits would pick another token.
                var first = HandGreedy(m, prompt, 1, rep, freq)[0];
                using (var scope = NewDisposeScope())
                using (no_grad())
                {
                    var last = m.Forward(Tokens(prompt))[0, -1].to(ScalarType.Float32).data<float>().ToArray();
                    Assert.NotEqual(first, ArgMax(HandPenalised(last, [first, first, .. prompt], rep, freq, 0)));
                }
                using var alone = m.Generate(Tokens(prompt), 6, o);
                using var mask = tensor(new long[] { 1, 1, 1, 1, 1, 0, 0, 1, 1, 1 }).view(2, 5);
                using var batch = m.Generate(Tokens([1, 2, 3, 4, 5], [first, first, .. prompt]), 6, o with { AttentionMask = mask });
                Assert.Equal(HandGreedy(m, prompt, 6, rep, freq), alone.Tokens[0].narrow(0, 3, 6).data<long>().ToArray());
                Assert.Equal(alone.Tokens[0].narrow(0, 3, 6).data<long>().ToArray(), batch.Tokens[1].narrow(0, 5, 6).data<long>().ToArray());
                // The first row, unpadded, as alone.
                Assert.Equal(HandGreedy(m, [1, 2, 3, 4, 5], 6, rep, freq), batch.Tokens[0].narrow(0, 5, 6).data<long>().ToArray());
            }
    }

    [Fact]
    public void Bad_penalties_are_refused_by_name()
    {
        using var m = Gpt2();
        using var prompt = Tokens([1, 2, 3]);
        foreach (var rep in new[] { 0, -1.5, double.NaN, double.PositiveInfinity })
        {
            var e = Assert.Throws<SaeSharpException>(() => m.Generate(prompt, 2, new GenerationOptions { RepetitionPenalty = rep }));
            Assert.Contains("repetition_penalty (RepetitionPenalty) must be finite and > 0", e.Message);
        }
        foreach (var freq in new[] { double.NaN, double.NegativeInfinity })
        {
            var e = Assert.Throws<SaeSharpException>(() => m.Generate(prompt, 2, new GenerationOptions { FreqPenalty = freq }));
            Assert.Contains("freq_penalty (FreqPenalty) must be finite", e.Message);
        }
    }
}
