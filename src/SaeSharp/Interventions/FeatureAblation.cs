using SaeSharp.Hooks;
using SaeSharp.Saes;
using static TorchSharp.torch;

namespace SaeSharp.Interventions;

/// <summary>One feature's ablation in <see cref="FeatureAblation.Sweep"/>: its activation summed over the ablated tokens,
/// the metric with it ablated, and the change from the unablated run.</summary>
public readonly record struct FeatureAblationEffect(int Feature, double Activation, double Metric, double Delta);

/// <summary>
/// A metric under ablations (SAELens <c>Hooked_SAE_Transformer_Demo</c>: each live feature ablated at one position with
/// <c>run_with_hooks_with_saes</c>, and the change in the IOI logit difference per feature; the error node ablated).
/// <code>
/// var (clean, effects) = FeatureAblation.Sweep(hooked, sae, tokens, AttributionMetric.LogitDiff(mary, john), positions: [10]);
/// </code>
/// </summary>
public static class FeatureAblation
{
    /// <summary>The value of <paramref name="metric"/> on a run of <paramref name="hooked"/> with <paramref name="edits"/> applied.</summary>
    public static double Metric(HookedSaeTransformer hooked, Tensor tokens, AttributionMetric metric, IEnumerable<Intervention>? edits = null)
    {
        ArgumentNullException.ThrowIfNull(hooked);
        ArgumentNullException.ThrowIfNull(metric);
        using var _ = no_grad();
        using var scope = NewDisposeScope();
        return metric.Evaluate(hooked.RunWithHooks(tokens, edits), tokens).to(ScalarType.Float64).item<double>();
    }

    /// <summary>
    /// Ablates each live feature of <paramref name="sae"/> (spliced in <paramref name="hooked"/>) on its own at
    /// <paramref name="positions"/> (null: every position) and evaluates <paramref name="metric"/>: zero ablation, or mean
    /// ablation with <paramref name="means"/> [d_sae]. Live: a feature nonzero at one of those positions of some row in
    /// the unablated run; <paramref name="features"/> (null: all) restricts the candidates. Returns the unablated metric
    /// and one effect per live feature, largest |Δ| first.
    /// </summary>
    public static (double Clean, IReadOnlyList<FeatureAblationEffect> Effects) Sweep(HookedSaeTransformer hooked, Sae sae, Tensor tokens,
        AttributionMetric metric, IReadOnlyCollection<long>? positions = null, IReadOnlyList<int>? features = null, Tensor? means = null,
        string? hook = null, IProgress<WorkProgress>? progress = null)
    {
        ArgumentNullException.ThrowIfNull(hooked);
        ArgumentNullException.ThrowIfNull(sae);
        ArgumentNullException.ThrowIfNull(metric);
        var probe = new Ablation(sae, features ?? [0], means, hook) { Positions = positions };   // checks the features, and that the SAE is spliced at the hook
        var (actsPost, _) = probe.ToHook(hooked.Model, hooked.Saes);
        var at = positions?.ToArray();
        double[] activation = [];
        double clean;
        using (no_grad())
        using (var scope = NewDisposeScope())
        {
            var logits = hooked.RunWithHooks(tokens, null, (actsPost, f =>
            {
                var mask = Steering.AtPositions(ones_like(f), at);
                activation = (f * mask).to(ScalarType.Float64).sum([0, 1]).cpu().data<double>().ToArray();
                var live = (f.abs() * mask).amax([0, 1]).cpu();
                var nonzero = live.to(ScalarType.Float64).data<double>().ToArray();
                for (int i = 0; i < nonzero.Length; i++) if (nonzero[i] == 0) activation[i] = double.NaN;   // NaN: not live
                return null;
            }));
            clean = metric.Evaluate(logits, tokens).to(ScalarType.Float64).item<double>();
        }
        var candidates = (features ?? Enumerable.Range(0, sae.Cfg.DSae).ToList()).Distinct()
            .Where(f => !double.IsNaN(activation[f])).ToList();
        var counter = new ProgressCounter(progress, "features", candidates.Count);
        var effects = new List<FeatureAblationEffect>(candidates.Count);
        foreach (int f in candidates)
        {
            double m = Metric(hooked, tokens, metric, [new Ablation(sae, [f], means, hook) { Positions = positions }]);
            effects.Add(new FeatureAblationEffect(f, activation[f], m, m - clean));
            counter.Add(1);
        }
        return (clean, effects.OrderByDescending(e => Math.Abs(e.Delta)).ThenBy(e => e.Feature).ToList());
    }
}
