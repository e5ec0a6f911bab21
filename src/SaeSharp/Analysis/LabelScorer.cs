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
    /// on the non-zeros of an [n, units] matrix (SAE features of n tokens): each unit's column is spread into a buffer of n
    /// values of its worker thread, scored as the dense column is, and cleared, so memory is the non-zeros' column form
    /// plus one n-vector per thread, not units × n.</summary>
    internal static UnitLabelScore[] Score(SparseColumns acts, IReadOnlyList<int[]> tokenLabels, IReadOnlyList<string> labels,
        bool[] fit, LabelScorerOptions? options = null)
    {
        int n = acts.Rows;
        var s = new Split(n, tokenLabels, labels, fit, options ?? new LabelScorerOptions());
        var result = new UnitLabelScore[acts.Columns];
        Parallel.For(0, acts.Columns, new ParallelOptions { MaxDegreeOfParallelism = Environment.ProcessorCount }, () => new float[n], (u, _, column) =>
        {
            var (rows, values) = acts.Column(u);
            var r = rows.Span;
            var v = values.Span;
            for (int e = 0; e < r.Length; e++) column[r[e]] = (float)v[e];
            result[u] = ScoreUnit(u, column, s);
            foreach (int i in r) column[i] = 0;
            return column;
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
        public readonly int[] Eligible, FitIdx, EvalIdx;

        public Split(int n, IReadOnlyList<int[]> tokenLabels, IReadOnlyList<string> labels, bool[] fit, LabelScorerOptions o)
        {
            if (tokenLabels.Count != n || fit.Length != n) throw new SaeSharpException($"{tokenLabels.Count} label lists and {fit.Length} split flags for {n} tokens");
            (N, TokenLabels, Labels, Options) = (n, tokenLabels, labels, o);
            int nl = labels.Count;
            FitSupport = new long[nl];
            EvalSupport = new long[nl];
            for (int i = 0; i < n; i++)
                foreach (int l in tokenLabels[i]) (fit[i] ? FitSupport : EvalSupport)[l]++;
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
        bestFitF1 = -1;
        int bestLabel = -1;
        double bestT = 0;
        foreach (int l in eligible)
        {
            long fired = 0, tp = 0;
            for (int k = 0; k < K; k++)
            {
                fired += firedAt[k];
                tp += tpAt[k * labels.Count + l];
                if (fired == 0) continue;
                double f1 = 2.0 * tp / (fired + fitSupport[l]);
                if (f1 > bestFitF1)
                {
                    bestFitF1 = f1;
                    bestLabel = l;
                    bestT = t[k];
                }
            }
        }
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

    private static int Bucket(float[] descending, float a)
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
