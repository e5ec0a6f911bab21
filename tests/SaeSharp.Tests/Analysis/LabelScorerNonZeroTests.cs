using SaeSharp.Analysis;
using static TorchSharp.torch;

namespace SaeSharp.Tests.Analysis;

/// <summary>
/// <c>LabelScorer.Score</c> from the non-zeros (SparseColumns) against the public dense <c>LabelScorer.Score(float[] …)</c>
/// on the same matrix, the reference: on random sparse matrices built to hit the edges of the zeros' tie block (all-zero
/// columns, columns whose non-zeros are all negative, ties among the non-zeros, labels only on the rows where a column is
/// zero, columns firing on every row, infinities, NaN, one row), every unit gets the same alive flag, fire rate, label,
/// sign, threshold, precision, recall and F1, bit for bit.
/// </summary>
public class LabelScorerNonZeroTests
{
    private const int Kinds = 12;

    /// <summary>Column j of an [n, d] matrix of kind j % <see cref="Kinds"/>; label 3 marks the rows where kind 6 is zero,
    /// label 0 the rows where kind 7 fires.</summary>
    private static float[] Matrix(int n, int d, List<int[]> tl, Random rng)
    {
        var v = new float[n * d];
        float[] ties = [0.5f, 1f, 1f, 2.5f];
        for (int j = 0; j < d; j++)
            for (int i = 0; i < n; i++)
            {
                bool fires = rng.NextDouble() < 0.08;
                float r = (float)(rng.NextDouble() * 3 + 0.01);
                v[i * d + j] = (j % Kinds) switch
                {
                    0 => 0f,                                                       // never fires
                    1 => fires ? r : 0f,                                           // sparse, positive
                    2 => fires ? -r : 0f,                                          // sparse, all negative
                    3 => fires ? (rng.Next(2) == 0 ? r : -r) : 0f,                 // sparse, both signs
                    4 => fires || rng.NextDouble() < 0.2 ? ties[rng.Next(ties.Length)] : 0f, // ties among the non-zeros
                    5 => ties[rng.Next(ties.Length)] + (rng.Next(3) == 0 ? 0 : r), // fires on every row
                    6 => tl[i].Contains(3) ? 0f : rng.NextDouble() < 0.3 ? r : 0f, // zero on every row with label 3
                    7 => tl[i].Contains(0) ? 1f + (float)rng.NextDouble() : 0f,    // exactly label 0
                    8 => fires ? (rng.Next(3) switch { 0 => float.PositiveInfinity, 1 => float.NegativeInfinity, _ => r }) : 0f,
                    9 => fires ? 1e-40f * (1 + rng.Next(3)) : 0f,                  // subnormal non-zeros, tied
                    10 => fires && rng.Next(4) == 0 ? float.NaN : fires ? r : 0f,  // a NaN among the non-zeros
                    _ => rng.NextDouble() < 0.7 ? -r : 0f,                          // mostly negative, dense
                };
            }
        return v;
    }

    /// <summary>Random labels (0–2 per token, label 3 on about a fifth; with <paramref name="duplicates"/>, some lists
    /// repeat a label) and a random split.</summary>
    private static (List<int[]> Labels, bool[] Fit) Tokens(int n, Random rng, bool duplicates)
    {
        var tl = new List<int[]>();
        for (int i = 0; i < n; i++)
        {
            var ls = new List<int>();
            for (int l = 0; l < 3; l++)
                if (rng.NextDouble() < 0.25 + 0.1 * l) ls.Add(l);
            if (rng.NextDouble() < 0.2) ls.Add(3);
            if (duplicates && ls.Count > 0 && rng.Next(4) == 0) ls.Add(ls[0]);
            tl.Add([.. ls]);
        }
        return (tl, Enumerable.Range(0, n).Select(_ => rng.Next(2) == 0).ToArray());
    }

    private static UnitLabelScore[] FromNonZeros(float[] rowMajor, int n, int d, List<int[]> tl, string[] names, bool[] fit, LabelScorerOptions o)
    {
        using var t = tensor(rowMajor).view(n, d);
        return LabelScorer.Score(SparseColumns.FromRows(SparseRows.FromDense(t)), tl, names, fit, o);
    }

    private static float[] UnitMajor(float[] rowMajor, int n, int d)
    {
        var u = new float[n * d];
        for (int i = 0; i < n; i++)
            for (int j = 0; j < d; j++) u[j * n + i] = rowMajor[i * d + j];
        return u;
    }

    private static void AssertSame(UnitLabelScore[] expected, UnitLabelScore[] actual, string what)
    {
        Assert.Equal(expected.Length, actual.Length);
        for (int u = 0; u < expected.Length; u++)
        {
            var (e, a) = (expected[u], actual[u]);
            string at = $"{what}, unit {u} (kind {u % Kinds})";
            Assert.True(e.Index == a.Index && e.Alive == a.Alive && e.FireRate.Equals(a.FireRate), $"{at}: {e} vs {a}");
            Assert.True((e.Best is null) == (a.Best is null), $"{at}: {e} vs {a}");
            if (e.Best is not { } eb) continue;
            var ab = a.Best!;
            // Precision and recall are ratios of the integer counts: equal doubles mean equal counts. The threshold is compared
            // bit for bit (a negated zero threshold is −0 × −1 = +0 in the dense scorer).
            Assert.True(eb.Label == ab.Label && eb.Negated == ab.Negated && eb.Support == ab.Support && BitConverter.DoubleToInt64Bits(eb.Threshold) == BitConverter.DoubleToInt64Bits(ab.Threshold)
                        && eb.Precision.Equals(ab.Precision) && eb.Recall.Equals(ab.Recall), $"{at}: {eb} vs {ab}");
            Assert.True(eb.F1.Equals(ab.F1) || Math.Abs(eb.F1 - ab.F1) <= 1e-12, $"{at}: F1 {eb.F1} vs {ab.F1}");
        }
    }

    public static TheoryData<int, int, bool> Cases() => new()
    {
        // n, seed, duplicated labels
        { 1, 1, false }, { 2, 2, false }, { 7, 3, true }, { 40, 4, false }, { 257, 5, true }, { 1200, 6, false },
    };

    [Theory]
    [MemberData(nameof(Cases))]
    public void Scores_from_the_non_zeros_equal_the_dense_scores(int n, int seed, bool duplicates)
    {
        const int d = 3 * Kinds;
        var rng = new Random(seed);
        var (tl, fit) = Tokens(n, rng, duplicates);
        fit[0] = true; // the dense scorer needs a fitting token once a label qualifies (minimum support 0)
        var x = Matrix(n, d, tl, rng);
        var dense = UnitMajor(x, n, d);
        string[] names = ["a", "b", "c", "zero-rows"];
        foreach (int minSupport in new[] { 0, 1, 10 })
            foreach (int candidates in new[] { 1, 4, 256, 5000 })
                foreach (bool both in new[] { false, true })
                {
                    var o = new LabelScorerOptions { MinSupport = minSupport, Candidates = candidates, BothSigns = both };
                    AssertSame(LabelScorer.Score(dense, d, n, tl, names, fit, o), FromNonZeros(x, n, d, tl, names, fit, o),
                        $"n {n}, min support {minSupport}, {candidates} candidates, both signs {both}");
                }
    }

    /// <summary>A label that only zero rows carry: the non-zeros hold none of it, yet the zeros' block (threshold below 0)
    /// can be its best match, and the counts at that block come from the label's totals minus the non-zeros' counts.</summary>
    [Fact]
    public void A_label_carried_only_by_zero_rows_is_counted_in_the_zeros_block()
    {
        const int n = 400;
        // Unit 0: −1 on the rows without the label, 0 on the rows with it: fires above a negative threshold exactly there.
        var tl = Enumerable.Range(0, n).Select(i => i % 4 == 0 ? new[] { 0 } : []).ToList();
        var fit = Enumerable.Range(0, n).Select(i => i % 8 < 4).ToArray();
        var x = Enumerable.Range(0, n).Select(i => i % 4 == 0 ? 0f : -1f).ToArray();
        var o = new LabelScorerOptions();
        var expected = LabelScorer.Score(x, 1, n, tl, ["q"], fit, o);
        var actual = FromNonZeros(x, n, 1, tl, ["q"], fit, o);
        AssertSame(expected, actual, "zero-row label");
        // Independent expectation: no activation is > 0, so the unit is dead as an SAE feature and gets no label.
        Assert.False(actual[0].Alive);
        Assert.Null(actual[0].Best);
        // Scoring both signs it is alive (non-constant); +a above t ∈ [−1, 0) fires on exactly the label's rows: F1 1.
        var both = FromNonZeros(x, n, 1, tl, ["q"], fit, o with { BothSigns = true })[0];
        AssertSame(LabelScorer.Score(x, 1, n, tl, ["q"], fit, o with { BothSigns = true }), [both], "zero-row label, both signs");
        Assert.Equal(("q", false, 1.0), (both.Best!.Label, both.Best.Negated, both.Best.F1));
        Assert.Equal(-1.0, both.Best.Threshold);
    }

    /// <summary>With a minimum support of 0 every label qualifies even when no token is in the fitting half: no threshold can
    /// be fitted, so no unit gets a label (the dense scorer used to index an empty array here).</summary>
    [Fact]
    public void Without_fitting_tokens_no_unit_gets_a_label()
    {
        const int n = 5, d = Kinds;
        var rng = new Random(9);
        var (tl, _) = Tokens(n, rng, duplicates: false);
        var fit = new bool[n];
        var x = Matrix(n, d, tl, rng);
        foreach (bool both in new[] { false, true })
        {
            var o = new LabelScorerOptions { MinSupport = 0, BothSigns = both };
            var dense = LabelScorer.Score(UnitMajor(x, n, d), d, n, tl, ["a", "b", "c", "zero-rows"], fit, o);
            AssertSame(dense, FromNonZeros(x, n, d, tl, ["a", "b", "c", "zero-rows"], fit, o), $"no fitting token, both signs {both}");
            Assert.All(dense, s => Assert.Null(s.Best));
            Assert.Contains(dense, s => s.Alive);
        }
    }
}
