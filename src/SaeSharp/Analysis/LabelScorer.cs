namespace SaeSharp.Analysis;

/// <summary>How well "unit fires" (activation &gt; threshold) predicts "token has label" on the evaluation half.</summary>
/// <param name="Label">The label.</param>
/// <param name="Threshold">Activation threshold chosen on the fitting half to maximise F1.</param>
/// <param name="Precision">TP / (TP + FP) on the evaluation half.</param>
/// <param name="Recall">TP / (TP + FN) on the evaluation half.</param>
/// <param name="F1">2·P·R / (P + R) on the evaluation half.</param>
/// <param name="Support">Tokens with the label in the evaluation half.</param>
/// <param name="Negated">For a model dimension: the score is of −activation (the dimension encodes the label by going negative).</param>
public sealed record LabelMatch(string Label, double Threshold, double Precision, double Recall, double F1, long Support, bool Negated = false);

/// <summary>One unit (SAE feature or model dimension): its best label (chosen on the fitting half) and how often it fired.</summary>
/// <param name="Index">Feature or dimension index.</param>
/// <param name="Alive">Fired (activation &gt; 0 for features; non-constant for dimensions) on some scored token.</param>
/// <param name="FireRate">Share of scored tokens where activation &gt; 0.</param>
/// <param name="Best">Best label: highest F1 on the fitting half, scored on the evaluation half; null when dead or no label qualifies.</param>
public sealed record UnitLabelScore(int Index, bool Alive, double FireRate, LabelMatch? Best);

/// <summary>Options of <see cref="LabelScorer"/>.</summary>
public sealed record LabelScorerOptions
{
    /// <summary>Labels with fewer tokens than this in either half are not scored.</summary>
    public int MinSupport { get; init; } = 10;
    /// <summary>Candidate thresholds per unit: activations at evenly spaced ranks of the fitting half (and the 16 largest), plus 0.</summary>
    public int Candidates { get; init; } = 256;
    /// <summary>Also score −activation (for model dimensions, which are signed; SAE features are not).</summary>
    public bool BothSigns { get; init; }
}

/// <summary>
/// Label-based interpretability scores. Tokens are split into a fitting half and an evaluation half. For each unit and
/// label, the threshold t maximising F1 of [a &gt; t] against [token has label] on the fitting half is chosen among the
/// candidates; the unit's best label is the one with the highest fitting F1; precision, recall and F1 are then measured
/// on the evaluation half with that threshold. See docs/labels.md.
/// </summary>
public static class LabelScorer
{
    /// <summary>
    /// Scores <paramref name="units"/> units over <paramref name="n"/> tokens. <paramref name="acts"/> is unit-major
    /// (acts[u·n + i]); <paramref name="tokenLabels"/>[i] lists the label ids of token i; <paramref name="fit"/>[i] puts
    /// token i in the fitting half (else the evaluation half).
    /// </summary>
    public static UnitLabelScore[] Score(float[] acts, int units, int n, IReadOnlyList<int[]> tokenLabels, IReadOnlyList<string> labels,
        bool[] fit, LabelScorerOptions? options = null)
    {
        if (acts.LongLength != (long)units * n) throw new SaeSharpException($"activations hold {acts.LongLength} values, expected {units} units × {n} tokens");
        var s = new Split(n, tokenLabels, labels, fit, options ?? new LabelScorerOptions());
        var result = new UnitLabelScore[units];
        Parallel.For(0, units, new ParallelOptions { MaxDegreeOfParallelism = Environment.ProcessorCount },
            u => result[u] = ScoreUnit(u, new ReadOnlySpan<float>(acts, u * n, n), s));
        return result;
    }

    /// <summary><see cref="Score(float[], int, int, IReadOnlyList{int[]}, IReadOnlyList{string}, bool[], LabelScorerOptions?)"/>
    /// on the non-zeros of an [n, units] matrix (SAE features of n tokens), with the same results: a column's zeros are one
    /// tie block of the sorted fitting half, so its candidate thresholds and the counts at each come from its non-zeros,
    /// sorted, and the halves' label totals (<see cref="ScoreNonZeros"/>). Time is the non-zeros' sort plus the candidates
    /// × labels table per unit, not units × n log n; memory is the column form plus small buffers per thread.</summary>
    internal static UnitLabelScore[] Score(SparseColumns acts, IReadOnlyList<int[]> tokenLabels, IReadOnlyList<string> labels,
        bool[] fit, LabelScorerOptions? options = null)
    {
        var s = new Split(acts.Rows, tokenLabels, labels, fit, options ?? new LabelScorerOptions());
        var result = new UnitLabelScore[acts.Columns];
        Parallel.For(0, acts.Columns, new ParallelOptions { MaxDegreeOfParallelism = Environment.ProcessorCount }, () => new NonZeroBuffers(), (u, _, buffers) =>
        {
            var (rows, values) = acts.Column(u);
            result[u] = ScoreNonZeros(u, rows.Span, values.Span, s, buffers);
            return buffers;
        }, _ => { });
        return result;
    }

    /// <summary>The tokens' halves and label supports, shared by every unit.</summary>
    private sealed class Split
    {
        public readonly int N;
        public readonly IReadOnlyList<int[]> TokenLabels;
        public readonly IReadOnlyList<string> Labels;
        public readonly LabelScorerOptions Options;
        public readonly long[] FitSupport, EvalSupport;
        /// <summary>Tokens of the evaluation half whose list holds each label (a repeated label counted once).</summary>
        public readonly long[] EvalTokens;
        public readonly int[] Eligible, FitIdx, EvalIdx;
        public readonly bool[] Fit;

        public Split(int n, IReadOnlyList<int[]> tokenLabels, IReadOnlyList<string> labels, bool[] fit, LabelScorerOptions o)
        {
            if (tokenLabels.Count != n || fit.Length != n) throw new SaeSharpException($"{tokenLabels.Count} label lists and {fit.Length} split flags for {n} tokens");
            (N, TokenLabels, Labels, Options, Fit) = (n, tokenLabels, labels, o, fit);
            int nl = labels.Count;
            FitSupport = new long[nl];
            EvalSupport = new long[nl];
            EvalTokens = new long[nl];
            for (int i = 0; i < n; i++)
                foreach (int l in tokenLabels[i]) (fit[i] ? FitSupport : EvalSupport)[l]++;
            for (int i = 0; i < n; i++)
                if (!fit[i])
                    foreach (int l in tokenLabels[i].Distinct()) EvalTokens[l]++;
            Eligible = EligibleLabels(tokenLabels, nl, fit, o.MinSupport);
            FitIdx = Enumerable.Range(0, n).Where(i => fit[i]).ToArray();
            EvalIdx = Enumerable.Range(0, n).Where(i => !fit[i]).ToArray();
        }
    }

    /// <summary>Unit <paramref name="u"/> with activations <paramref name="a"/> (one per token).</summary>
    private static UnitLabelScore ScoreUnit(int u, ReadOnlySpan<float> a, Split s)
    {
        var o = s.Options;
        int fired = 0;
        float min = float.PositiveInfinity, max = float.NegativeInfinity;
        foreach (float v in a)
        {
            if (v > 0) fired++;
            if (v < min) min = v;
            if (v > max) max = v;
        }
        bool alive = o.BothSigns ? max > min : fired > 0;
        LabelMatch? best = null;
        if (alive && s.Eligible.Length > 0)
        {
            best = BestLabel(a, s, negate: false, out double fitF1);
            if (o.BothSigns)
            {
                var neg = BestLabel(a, s, negate: true, out double negF1);
                if (negF1 > fitF1) best = neg;
            }
        }
        return new UnitLabelScore(u, alive, (double)fired / s.N, best);
    }

    private static LabelMatch? BestLabel(ReadOnlySpan<float> acts, Split s, bool negate, out double bestFitF1)
    {
        var (fitIdx, evalIdx, tokenLabels, labels, eligible, fitSupport, evalSupport, o) =
            (s.FitIdx, s.EvalIdx, s.TokenLabels, s.Labels, s.Eligible, s.FitSupport, s.EvalSupport, s.Options);
        float sign = negate ? -1f : 1f;
        // Candidate thresholds, descending: activations at chosen ranks of the fitting half, and 0.
        var sorted = new float[fitIdx.Length];
        for (int j = 0; j < fitIdx.Length; j++) sorted[j] = sign * acts[fitIdx[j]];
        Array.Sort(sorted);
        Array.Reverse(sorted);
        var cands = new SortedSet<float>(Comparer<float>.Create((x, y) => y.CompareTo(x)));
        for (int r = 1; r <= Math.Min(16, sorted.Length); r++) cands.Add(sorted[r - 1]);
        if (sorted.Length > 0) // no fitting token: no threshold can be fitted
            for (int k = 1; k <= o.Candidates; k++) cands.Add(sorted[(int)Math.Min(sorted.Length - 1, (long)k * sorted.Length / (o.Candidates + 1))]);
        cands.Add(0f);
        var t = cands.ToArray(); // descending
        // bucket(a) = first k with a > t[k]; the unit fires at threshold t[k] on every token with bucket <= k.
        int K = t.Length;
        var firedAt = new long[K + 1];
        var tpAt = new long[(K + 1) * labels.Count];
        foreach (int i in fitIdx)
        {
            int b = Bucket(t, sign * acts[i]);
            firedAt[b]++;
            foreach (int l in tokenLabels[i]) tpAt[b * labels.Count + l]++;
        }
        var (bestLabel, bestT) = BestFit(eligible, t, firedAt, tpAt, labels.Count, fitSupport, out bestFitF1);
        if (bestLabel < 0) return null;
        long eTp = 0, eFired = 0;
        foreach (int i in evalIdx)
        {
            if (sign * acts[i] <= bestT) continue;
            eFired++;
            if (tokenLabels[i].Contains(bestLabel)) eTp++;
        }
        double p = eFired == 0 ? 0 : (double)eTp / eFired;
        double rc = (double)eTp / evalSupport[bestLabel];
        double f = eTp == 0 ? 0 : 2 * p * rc / (p + rc);
        return new LabelMatch(labels[bestLabel], sign * bestT, p, rc, f, evalSupport[bestLabel], negate);
    }

    /// <summary>Per-thread buffers of <see cref="ScoreNonZeros"/>, grown as needed.</summary>
    private sealed class NonZeroBuffers
    {
        public float[] Sorted = [], Thresholds = [];
        public long[] FiredAt = [], TpAt = [];
        public float[]? Column;

        public static T[] AtLeast<T>(ref T[] buffer, long length)
        {
            if (buffer.Length < length) buffer = new T[Math.Max(length, Math.Min(Array.MaxLength, 2L * buffer.Length))];
            return buffer;
        }
    }

    /// <summary><see cref="ScoreUnit"/> of a unit given by its non-zeros (<paramref name="rows"/> ascending, <paramref name="values"/>),
    /// the others zero, with identical results; a column holding NaN is spread into a dense buffer and scored by ScoreUnit.</summary>
    private static UnitLabelScore ScoreNonZeros(int u, ReadOnlySpan<int> rows, ReadOnlySpan<double> values, Split s, NonZeroBuffers b)
    {
        var o = s.Options;
        int fired = 0;
        float min = float.PositiveInfinity, max = float.NegativeInfinity;
        foreach (double d in values)
        {
            float v = (float)d;
            if (float.IsNaN(v)) return ScoreSpread(u, rows, values, s, b);
            if (v > 0) fired++;
            if (v < min) min = v;
            if (v > max) max = v;
        }
        if (rows.Length < s.N)
        {
            min = Math.Min(min, 0f);
            max = Math.Max(max, 0f);
        }
        bool alive = o.BothSigns ? max > min : fired > 0;
        LabelMatch? best = null;
        if (alive && s.Eligible.Length > 0)
        {
            best = BestLabelNonZeros(rows, values, s, negate: false, b, out double fitF1);
            if (o.BothSigns)
            {
                var neg = BestLabelNonZeros(rows, values, s, negate: true, b, out double negF1);
                if (negF1 > fitF1) best = neg;
            }
        }
        return new UnitLabelScore(u, alive, (double)fired / s.N, best);
    }

    /// <summary>The unit's column written densely into the thread's n-vector, scored by <see cref="ScoreUnit"/>, cleared.</summary>
    private static UnitLabelScore ScoreSpread(int u, ReadOnlySpan<int> rows, ReadOnlySpan<double> values, Split s, NonZeroBuffers b)
    {
        var column = b.Column ??= new float[s.N];
        for (int e = 0; e < rows.Length; e++) column[rows[e]] = (float)values[e];
        var result = ScoreUnit(u, column, s);
        foreach (int i in rows) column[i] = 0;
        return result;
    }

    /// <summary>
    /// <see cref="BestLabel"/> from the non-zeros. The fitting half sorted descending is its positive non-zeros, then its
    /// z zeros (one tie block, ±0 as the dense scorer writes sign × 0), then its negative non-zeros: the value at any rank,
    /// hence the candidate thresholds, comes from the non-zeros sorted. The zeros fall in one bucket, the one after the
    /// candidate 0; there they count z fired tokens and, per label, the label's fitting total less its count on the
    /// non-zeros. On the evaluation half the zeros fire only at a negative threshold, with the label's tokens less those
    /// among the non-zeros. The F1 scan over candidates and labels is BestLabel's, so ties resolve the same way.
    /// </summary>
    private static LabelMatch? BestLabelNonZeros(ReadOnlySpan<int> rows, ReadOnlySpan<double> values, Split s, bool negate,
        NonZeroBuffers b, out double bestFitF1)
    {
        var (fitFlag, tokenLabels, labels, eligible, fitSupport, evalSupport, o) =
            (s.Fit, s.TokenLabels, s.Labels, s.Eligible, s.FitSupport, s.EvalSupport, s.Options);
        float sign = negate ? -1f : 1f, zero = sign * 0f;
        int m = s.FitIdx.Length, nl = labels.Count;
        // The fitting half's non-zeros, ascending: [negatives …, positives …].
        int nz = 0;
        var sorted = NonZeroBuffers.AtLeast(ref b.Sorted, rows.Length);
        for (int e = 0; e < rows.Length; e++)
            if (fitFlag[rows[e]]) sorted[nz++] = sign * (float)values[e];
        var asc = sorted.AsSpan(0, nz);
        asc.Sort();
        int zeros = m - nz, positive = 0;
        while (positive < nz && asc[nz - 1 - positive] > 0) positive++;
        float AtRank(Span<float> a, int r) => r < positive ? a[nz - 1 - r] : r < positive + zeros ? zero : a[nz - 1 - r + zeros];
        // Candidates, descending and distinct: the values at ranks 0 … 15 and at the evenly spaced ranks (both in rank
        // order, so their values do not increase), then 0 unless a zero is already there.
        var t = NonZeroBuffers.AtLeast(ref b.Thresholds, Math.Min(16L + Math.Max(0, o.Candidates), m) + 2);
        int K = 0, top = Math.Min(16, m), r0 = 0;
        long k1 = 1;
        while (true)
        {
            long spaced = m > 0 && k1 <= o.Candidates ? Math.Min(m - 1, k1 * m / (o.Candidates + 1)) : long.MaxValue;
            int r;
            if (r0 < top && r0 <= spaced) r = r0++;
            else if (spaced != long.MaxValue) { r = (int)spaced; k1++; }
            else break;
            float v = AtRank(asc, r);
            if (K == 0 || v != t[K - 1]) t[K++] = v;
        }
        int k0 = 0;
        while (k0 < K && t[k0] > 0) k0++;
        if (k0 == K || t[k0] != 0)
        {
            Array.Copy(t, k0, t, k0 + 1, K - k0);
            t[k0] = 0f;
            K++;
        }
        var thresholds = t.AsSpan(0, K);
        // Fired tokens and label counts per bucket; the zeros' bucket is k0 + 1 (the first k with 0 > t[k]).
        int zb = k0 + 1;
        var firedAt = NonZeroBuffers.AtLeast(ref b.FiredAt, K + 1);
        var tpAt = NonZeroBuffers.AtLeast(ref b.TpAt, (long)(K + 1) * nl);
        Array.Clear(firedAt, 0, K + 1);
        Array.Clear(tpAt, 0, (K + 1) * nl);
        firedAt[zb] = zeros;
        Array.Copy(fitSupport, 0, tpAt, zb * nl, nl);
        for (int e = 0; e < rows.Length; e++)
        {
            int i = rows[e];
            if (!fitFlag[i]) continue;
            int bucket = Bucket(thresholds, sign * (float)values[e]);
            firedAt[bucket]++;
            foreach (int l in tokenLabels[i])
            {
                tpAt[bucket * nl + l]++;
                tpAt[zb * nl + l]--;
            }
        }
        var (bestLabel, bestT) = BestFit(eligible, thresholds, firedAt, tpAt, nl, fitSupport, out bestFitF1);
        if (bestLabel < 0) return null;
        long eTp = 0, eFired = 0, eNonZeros = 0, eNonZerosWithLabel = 0;
        for (int e = 0; e < rows.Length; e++)
        {
            int i = rows[e];
            if (fitFlag[i]) continue;
            eNonZeros++;
            bool has = tokenLabels[i].Contains(bestLabel);
            if (has) eNonZerosWithLabel++;
            if (sign * (float)values[e] <= bestT) continue;
            eFired++;
            if (has) eTp++;
        }
        if (!(zero <= bestT)) // the zeros fire too
        {
            eFired += s.EvalIdx.Length - eNonZeros;
            eTp += s.EvalTokens[bestLabel] - eNonZerosWithLabel;
        }
        double p = eFired == 0 ? 0 : (double)eTp / eFired;
        double rc = (double)eTp / evalSupport[bestLabel];
        double f = eTp == 0 ? 0 : 2 * p * rc / (p + rc);
        return new LabelMatch(labels[bestLabel], sign * bestT, p, rc, f, evalSupport[bestLabel], negate);
    }

    /// <summary>The label and threshold of the best fitting-half F1 (the first label in order wins ties, then the highest
    /// threshold): the unit fires at <paramref name="thresholds"/>[k] (descending) on the tokens of buckets ≤ k, with
    /// <paramref name="firedAt"/>[k] tokens and <paramref name="tpAt"/>[k · nl + l] of them carrying label l in bucket k.</summary>
    private static (int Label, double Threshold) BestFit(int[] eligible, ReadOnlySpan<float> thresholds, long[] firedAt, long[] tpAt, int nl,
        long[] fitSupport, out double bestFitF1)
    {
        bestFitF1 = -1;
        int bestLabel = -1;
        double bestT = 0;
        foreach (int l in eligible)
        {
            long fired = 0, tp = 0;
            for (int k = 0; k < thresholds.Length; k++)
            {
                fired += firedAt[k];
                tp += tpAt[k * nl + l];
                if (fired == 0) continue;
                double f1 = 2.0 * tp / (fired + fitSupport[l]);
                if (f1 > bestFitF1)
                {
                    bestFitF1 = f1;
                    bestLabel = l;
                    bestT = thresholds[k];
                }
            }
        }
        return (bestLabel, bestT);
    }

    private static int Bucket(ReadOnlySpan<float> descending, float a)
    {
        int lo = 0, hi = descending.Length; // first k with a > descending[k]
        while (lo < hi)
        {
            int mid = (lo + hi) >> 1;
            if (a > descending[mid]) hi = mid;
            else lo = mid + 1;
        }
        return lo;
    }

    /// <summary>Labels with at least <paramref name="minSupport"/> tokens in each half.</summary>
    public static int[] EligibleLabels(IReadOnlyList<int[]> tokenLabels, int labelCount, bool[] fit, int minSupport)
    {
        var f = new long[labelCount];
        var e = new long[labelCount];
        for (int i = 0; i < tokenLabels.Count; i++)
            foreach (int l in tokenLabels[i]) (fit[i] ? f : e)[l]++;
        return Enumerable.Range(0, labelCount).Where(l => f[l] >= minSupport && e[l] >= minSupport).ToArray();
    }

    /// <summary>Summary of a set of unit scores: shares of alive units whose best F1 reaches 0.8 and 0.5, and label coverage.</summary>
    public static LabelScoreSummary Summarise(IReadOnlyList<UnitLabelScore> scores, int labelCount)
    {
        var alive = scores.Where(s => s.Alive).ToList();
        double Share(double th) => alive.Count == 0 ? 0 : (double)alive.Count(s => s.Best is { } b && b.F1 >= th) / alive.Count;
        var covered = alive.Where(s => s.Best is { F1: >= 0.8 }).Select(s => s.Best!.Label).Distinct().Count();
        return new LabelScoreSummary(scores.Count, alive.Count, Share(0.8), Share(0.5),
            alive.Count == 0 ? 0 : alive.Average(s => s.Best?.F1 ?? 0), covered, labelCount);
    }
}

/// <summary>Summary of <see cref="LabelScorer"/> results for one kind of unit.</summary>
/// <param name="Units">Units scored.</param>
/// <param name="Alive">Units alive on the scored tokens.</param>
/// <param name="ShareF1AtLeast08">Share of alive units whose best label's F1 ≥ 0.8.</param>
/// <param name="ShareF1AtLeast05">Share of alive units whose best label's F1 ≥ 0.5.</param>
/// <param name="MeanBestF1">Mean best F1 over alive units.</param>
/// <param name="LabelsCovered">Labels that some unit captures with F1 ≥ 0.8 (coverage).</param>
/// <param name="LabelsScored">Labels with enough support to be scored.</param>
public sealed record LabelScoreSummary(int Units, int Alive, double ShareF1AtLeast08, double ShareF1AtLeast05, double MeanBestF1,
    int LabelsCovered, int LabelsScored);
