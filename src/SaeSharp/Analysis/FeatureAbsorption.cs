using System.Text.Json.Nodes;
using static TorchSharp.torch;

namespace SaeSharp.Analysis;

/// <summary>Options of <see cref="FeatureAbsorption"/>; the thresholds are SAEBench's constants (absorption eval).</summary>
public sealed record AbsorptionOptions
{
    /// <summary>Parent labels to measure (each a category over several words); null: those of <see cref="DefaultLabels"/>
    /// that have enough tokens.</summary>
    public IReadOnlyList<string>? Labels { get; init; }
    /// <summary>The labels measured when none are given: categories of the built-in corpus with a word per child.</summary>
    public static IReadOnlyList<string> DefaultLabels { get; } = ["cat:colour", "cat:animal", "cat:number_word", "cat:place", "cat:food", "cat:person_name"];
    /// <summary>k-sparse probes for k = 1..MaxK (SAEBench's <c>max_k_value</c>).</summary>
    public int MaxK { get; init; } = 10;
    /// <summary>A k-sparse probe's features are main latents while each k raises the test F1 by more than this
    /// (SAEBench's <c>f1_jump_threshold</c>).</summary>
    public double F1JumpThreshold { get; init; } = 0.03;
    /// <summary>Labels whose model probe has a test F1 at most this are left out of the means (SAEBench's <c>min_GT_probe_f1</c>).</summary>
    public double MinProbeF1 { get; init; } = 0.6;
    /// <summary>Full absorption: the top projecting latent's decoder cosine with the probe is at least this.</summary>
    public double FullAbsorptionCosThreshold { get; init; } = 0.025;
    /// <summary>Absorption fraction: a potential absorbing latent's decoder cosine with the probe is at least this.</summary>
    public double FractionCosThreshold { get; init; } = 0.1;
    /// <summary>Both metrics: the absorbing latents' probe projection is at least this share of the activation's.</summary>
    public double ProjectionProportionThreshold { get; init; } = 0.4;
    /// <summary>Absorption fraction: at most this many absorbing latents are summed.</summary>
    public int MaxAbsorbingLatents { get; init; } = 3;
    /// <summary>A label is measured when it has this many tokens with and without it in each half.</summary>
    public int MinPositives { get; init; } = 50;
    /// <summary>λ of the L1 probe whose largest weights pick each k-sparse probe's latents (SAEBench's <c>k_sparse_probe_l1_decay</c>).</summary>
    public double L1Decay { get; init; } = 0.01;
    /// <summary>Inverse L2 strength of the probes (sklearn's <c>C</c>).</summary>
    public double C { get; init; } = 1.0;
}

/// <summary>Absorption of one parent label.</summary>
/// <param name="Label">The label.</param>
/// <param name="ProbeF1">Test F1 of the model probe (score &gt; 0) over every evaluation-half token.</param>
/// <param name="MainLatents">The main latents (SAEBench's <c>split_feats</c>): the features of the k-sparse probe at the last k of the F1 jumps.</param>
/// <param name="SparseF1">Test F1 of the k-sparse probe for k = 1..MaxK.</param>
/// <param name="ProbeTruePositives">Evaluation-half tokens with the label on which the model probe scores &gt; 0.</param>
/// <param name="MeanAbsorptionFraction">Σ absorption fraction over the probe's true positives / their number.</param>
/// <param name="FullAbsorptions">True positives fully absorbed.</param>
/// <param name="FullAbsorptionRate">FullAbsorptions / ProbeTruePositives.</param>
/// <param name="Included">ProbeF1 &gt; MinProbeF1: counted in the means.</param>
/// <param name="TopAbsorbers">The latents that are the top projecting latent of full absorptions, most often first, with their counts.</param>
public sealed record AbsorptionLabelResult(string Label, double ProbeF1, IReadOnlyList<int> MainLatents, IReadOnlyList<double> SparseF1,
    int ProbeTruePositives, double MeanAbsorptionFraction, int FullAbsorptions, double FullAbsorptionRate, bool Included,
    IReadOnlyList<(int Latent, int Count)> TopAbsorbers);

/// <summary>Feature absorption per label and the means over labels (SAEBench's <c>mean_absorption_fraction_score</c>,
/// <c>mean_full_absorption_score</c>, <c>mean_num_split_features</c>).</summary>
/// <param name="Labels">One entry per label measured.</param>
public sealed record AbsorptionReport(IReadOnlyList<AbsorptionLabelResult> Labels)
{
    private IEnumerable<AbsorptionLabelResult> Included => Labels.Where(l => l.Included);
    /// <summary>Mean of <see cref="AbsorptionLabelResult.MeanAbsorptionFraction"/> over included labels (NaN when none).</summary>
    public double MeanAbsorptionFractionScore => Included.Select(l => l.MeanAbsorptionFraction).DefaultIfEmpty(double.NaN).Average();
    /// <summary>Mean of <see cref="AbsorptionLabelResult.FullAbsorptionRate"/> over included labels (NaN when none).</summary>
    public double MeanFullAbsorptionScore => Included.Select(l => l.FullAbsorptionRate).DefaultIfEmpty(double.NaN).Average();
    /// <summary>Mean number of main latents over included labels (NaN when none).</summary>
    public double MeanNumSplitFeatures => Included.Select(l => (double)l.MainLatents.Count).DefaultIfEmpty(double.NaN).Average();

    internal JsonObject ToJson()
    {
        static JsonNode? Num(double v) => double.IsNaN(v) ? null : v;
        return new JsonObject
        {
            ["eval_result_metrics"] = new JsonObject
            {
                ["mean"] = new JsonObject
                {
                    ["mean_absorption_fraction_score"] = Num(MeanAbsorptionFractionScore), ["mean_full_absorption_score"] = Num(MeanFullAbsorptionScore),
                    ["mean_num_split_features"] = Num(MeanNumSplitFeatures),
                },
            },
            ["eval_result_details"] = new JsonArray([.. Labels.Select(l => (JsonNode)new JsonObject
            {
                ["label"] = l.Label, ["probe_f1"] = l.ProbeF1, ["included"] = l.Included,
                ["split_feats"] = new JsonArray([.. l.MainLatents.Select(f => (JsonNode)f)]),
                ["num_split_feats"] = l.MainLatents.Count,
                ["sparse_f1"] = new JsonArray([.. l.SparseF1.Select(f => (JsonNode)f)]),
                ["num_probe_true_positives"] = l.ProbeTruePositives,
                ["mean_absorption_fraction"] = l.MeanAbsorptionFraction, ["num_full_absorption"] = l.FullAbsorptions,
                ["full_absorption_rate"] = l.FullAbsorptionRate,
                ["top_absorbers"] = new JsonArray([.. l.TopAbsorbers.Select(a => (JsonNode)new JsonObject { ["latent"] = a.Latent, ["count"] = a.Count })]),
            })]),
        };
    }
}

/// <summary>
/// SAEBench's feature absorption (Chanin et al. 2024) with a token label in place of a first letter. For a label L: a
/// logistic-regression probe for L on the model activation (every training-half token, classes weighted to balance, as
/// SAEBench's <c>pos_weight</c> and <c>class_weight="balanced"</c>); k-sparse probes on the SAE
/// features for k = 1..MaxK, each on the k features with the largest weights of an L1-regularised probe (<see cref="L1Order"/>), the main latents being those at the last k whose test F1 beat the best before it by more
/// than the jump threshold; then, on every evaluation-half token with L that the model probe scores positive, the
/// absorption fraction and whether it is a full absorption, exactly as SAEBench's <c>FeatureAbsorptionCalculator</c>
/// computes them. The formulas are in docs/labels.md.
/// </summary>
public static class FeatureAbsorption
{
    private const double Eps = 1e-8;

    /// <summary>Measures absorption on given activations: <paramref name="features"/> [n, d_sae], <paramref name="modelActs"/>
    /// [n, d], the SAE's decoder <paramref name="wDec"/> [d_sae, d]; <paramref name="fit"/>[i] true for the training half.</summary>
    public static AbsorptionReport Evaluate(Tensor features, Tensor modelActs, Tensor wDec, IReadOnlyList<int[]> tokenLabels,
        IReadOnlyList<string> labelNames, bool[] fit, AbsorptionOptions options)
    {
        if (features.dim() != 2) throw new SaeSharpException($"absorption: features must be [n, d_sae], got [{string.Join(", ", features.shape)}]");
        return EvaluateSparse(SparseRows.FromDense(features), modelActs, wDec, tokenLabels, labelNames, fit, options);
    }

    /// <summary><see cref="Evaluate(Tensor, Tensor, Tensor, IReadOnlyList{int[]}, IReadOnlyList{string}, bool[], AbsorptionOptions)"/> on the features' non-zeros: the L1 probe on the dense slice of the columns that fire in
    /// the training half, the k-sparse probes on dense [n, k] slices, each true positive's row spread into one d_sae vector
    /// in turn.</summary>
    internal static AbsorptionReport EvaluateSparse(SparseRows features, Tensor modelActs, Tensor wDec, IReadOnlyList<int[]> tokenLabels,
        IReadOnlyList<string> labelNames, bool[] fit, AbsorptionOptions options)
    {
        int n = tokenLabels.Count;
        if (modelActs.dim() != 2 || wDec.dim() != 2 || features.Rows != n || modelActs.shape[0] != n
            || wDec.shape[0] != features.Columns || wDec.shape[1] != modelActs.shape[1] || fit.Length != n)
            throw new SaeSharpException($"absorption: features [{features.Rows}, {features.Columns}], activations [{string.Join(", ", modelActs.shape)}], " +
                                        $"W_dec [{string.Join(", ", wDec.shape)}] and {n} tokens do not fit together");
        if (options.MaxK < 1) throw new SaeSharpException($"absorption: MaxK must be at least 1, got {options.MaxK}");
        var asked = options.Labels ?? AbsorptionOptions.DefaultLabels.Where(labelNames.Contains).ToArray();
        var labels = options.Labels is null
            ? SparseProbing.TaskLabels(tokenLabels, labelNames, fit, options.MinPositives, null).Where(l => asked.Contains(labelNames[l])).ToArray()
            : SparseProbing.TaskLabels(tokenLabels, labelNames, fit, options.MinPositives, asked);
        var trainRows = Enumerable.Range(0, n).Where(i => fit[i]).Select(i => (long)i).ToArray();
        var evalRows = Enumerable.Range(0, n).Where(i => !fit[i]).Select(i => (long)i).ToArray();
        var results = new List<AbsorptionLabelResult>();
        using var scope = NewDisposeScope();
        var ev = tensor(evalRows);
        var xEval = modelActs.index_select(0, ev).to(ScalarType.Float64);
        var fEval = features.Select(evalRows);
        var fTrain = features.Select(trainRows);
        var decNorm = wDec.to(ScalarType.Float64).norm(1, true).clamp_min(TorchScalars.Of(Eps));
        var decUnit = wDec.to(ScalarType.Float64).div(decNorm);
        foreach (int l in labels)
        {
            bool[] yTrain = [.. trainRows.Select(i => tokenLabels[(int)i].Contains(l))];
            var weights = LogisticRegression.BalancedWeights(yTrain);
            bool[] yEval = [.. evalRows.Select(i => tokenLabels[(int)i].Contains(l))];
            using var task = NewDisposeScope();
            var tr = tensor(trainRows);
            var probe = LogisticRegression.Fit(modelActs.index_select(0, tr), yTrain, options.C, sampleWeight: weights);
            var probeScores = probe.DecisionFunction(xEval);
            double probeF1 = F1(probeScores, yEval);
            // k-sparse probes on the features with the largest weights of an L1 probe (SAEBench's train_k_sparse_probes).
            var order = L1Order(fTrain, yTrain, options.L1Decay);
            var sparseF1 = new List<double>();
            int[] main = [];
            double prevBest = -100;
            bool jumping = true;
            for (int k = 1; k <= Math.Min(options.MaxK, order.Length); k++)
            {
                var ids = order.Take(k).ToArray();
                using var ks = NewDisposeScope();
                var kp = LogisticRegression.Fit(fTrain.Dense(ids), yTrain, options.C, sampleWeight: weights);
                double f1 = F1(kp.DecisionFunction(fEval.Dense(ids)), yEval);
                sparseF1.Add(f1);
                if (jumping && f1 > prevBest + options.F1JumpThreshold)
                {
                    prevBest = f1;
                    main = ids;
                }
                else jumping = false;
            }
            // The probe's true positives on the evaluation half.
            var tp = Enumerable.Range(0, evalRows.Length).Where(j => yEval[j] && probeScores[j] > 0).Select(j => (long)j).ToArray();
            var dir = tensor(probe.Coef);
            dir = dir.div(dir.norm().clamp_min(TorchScalars.Of(Eps)));
            var cos = decUnit.mv(dir).data<double>().ToArray();
            double fractionSum = 0;
            int full = 0;
            var absorbers = new Dictionary<int, int>();
            if (tp.Length > 0)
            {
                var actProj = xEval.index_select(0, tensor(tp)).mv(dir).data<double>().ToArray();
                var row = new double[features.Columns];
                for (int r = 0; r < tp.Length; r++)
                {
                    var (cols, vals) = fEval.Row((int)tp[r]);
                    for (int e = 0; e < cols.Length; e++) row[cols[e]] = vals[e];
                    var (fraction, isFull, top) = Score(row, cos, actProj[r], main, options);
                    foreach (int j in cols) row[j] = 0;
                    fractionSum += fraction;
                    if (isFull)
                    {
                        full++;
                        absorbers[top] = absorbers.GetValueOrDefault(top) + 1;
                    }
                }
            }
            int nTp = tp.Length;
            results.Add(new AbsorptionLabelResult(labelNames[l], probeF1, main, sparseF1, nTp, nTp == 0 ? 0 : fractionSum / nTp, full,
                nTp == 0 ? 0 : (double)full / nTp, probeF1 > options.MinProbeF1,
                [.. absorbers.OrderByDescending(kv => kv.Value).ThenBy(kv => kv.Key).Take(5).Select(kv => (kv.Key, kv.Value))]));
        }
        return new AbsorptionReport(results);
    }

    /// <summary>SAEBench's choice of a k-sparse probe's latents: the SAE features ordered by their weight in an L1-regularised
    /// probe (<see cref="LogisticRegression.FitL1(SparseRows, bool[], double, double[], int, double)"/> with SAEBench's <c>pos_weight</c>), largest first — signed, as its
    /// <c>weights.topk(k)</c>, so features with negative weight come after those with none; ties by index. The probe is
    /// fitted on the features' non-zeros (a feature that never fires in <paramref name="x"/> keeps weight 0).</summary>
    internal static int[] L1Order(SparseRows x, bool[] y, double lambda)
    {
        var weights = LogisticRegression.FitL1(x, y, lambda, LogisticRegression.PosWeights(y)).Coef;
        return [.. Enumerable.Range(0, weights.Length).OrderByDescending(j => weights[j]).ThenBy(j => j)];
    }

    /// <summary>
    /// SAEBench's per-token scores. <paramref name="acts"/>: the SAE's feature activations on the token; <paramref name="cos"/>:
    /// each latent's decoder cosine with the probe direction; <paramref name="actProj"/>: the model activation's projection
    /// on the unit probe direction. Returns the absorption fraction, whether it is a full absorption, and the top projecting latent.
    /// </summary>
    internal static (double Fraction, bool Full, int Top) Score(ReadOnlySpan<double> acts, double[] cos, double actProj, int[] main, AbsorptionOptions o)
    {
        // probe projection of latent j: acts[j] · cos[j]
        double mainProj = 0;
        foreach (int m in main) mainProj += acts[m] * cos[m];
        var candidates = new List<double>();
        int top = -1;
        double topProj = double.NegativeInfinity;
        for (int j = 0; j < acts.Length; j++)
        {
            double proj = acts[j] * cos[j];
            if (proj > topProj || (proj == topProj && top < 0)) { topProj = proj; top = j; }
            if (main.Contains(j)) continue;
            if (cos[j] >= o.FractionCosThreshold && proj > 0) candidates.Add(proj);
        }
        double absorbers = candidates.OrderByDescending(v => v).Take(o.MaxAbsorbingLatents).Sum();
        double fraction;
        if (mainProj >= actProj || absorbers / actProj < o.ProjectionProportionThreshold) fraction = 0;
        else if (mainProj <= 0) fraction = 1;
        else
        {
            double absorbed = Math.Min(absorbers, actProj - mainProj);
            fraction = Math.Clamp(absorbed / (absorbed + mainProj), 0, 1);
        }
        bool mainSilent = true;
        foreach (int m in main) mainSilent &= acts[m] < Eps;
        bool full = mainSilent && cos[top] >= o.FullAbsorptionCosThreshold && actProj >= 0
                    && topProj / actProj >= o.ProjectionProportionThreshold;
        return (fraction, full, top);
    }

    /// <summary>F1 of "score &gt; 0" against <paramref name="y"/> (0 when there are no true positives).</summary>
    internal static double F1(double[] scores, bool[] y)
    {
        long tp = 0, fp = 0, fn = 0;
        for (int i = 0; i < y.Length; i++)
        {
            bool p = scores[i] > 0;
            if (p && y[i]) tp++;
            else if (p) fp++;
            else if (y[i]) fn++;
        }
        return tp == 0 ? 0 : 2.0 * tp / (2 * tp + fp + fn);
    }
}
