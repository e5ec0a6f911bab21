using System.Text.Json.Nodes;

namespace SaeSharp.Evaluation;

/// <summary>
/// The next-token CE and KL of a model with something spliced in (one SAE's reconstruction, or a whole cross-layer
/// transcoder's replacement of every covered output) against the clean model and against zero and mean ablation of
/// the same activations, with SAELens <c>evals.py</c>'s names (<c>ce_loss_score</c>, <c>kl_div_score</c>, ...; the
/// mean-ablation and error-term variants carry suffixes).
/// </summary>
public abstract class SpliceLossMetrics
{
    /// <summary>Mean next-token cross-entropy (nats) of the clean model.</summary>
    public double CeLossWithoutSae { get; internal set; }
    /// <summary>Mean CE (nats) with the reconstruction spliced in.</summary>
    public double CeLossWithSae { get; internal set; }
    /// <summary>Mean CE (nats) with the spliced activations replaced by zeros at every position.</summary>
    public double CeLossWithAblation { get; internal set; }
    /// <summary>Mean CE (nats) with the spliced activations replaced by their mean over the counted positions (NaN when not run).</summary>
    public double CeLossWithMeanAblation { get; internal set; } = double.NaN;
    /// <summary>Mean CE (nats) with the reconstruction plus its error term (equals the clean CE; NaN when not run).</summary>
    public double CeLossWithErrorTerm { get; internal set; } = double.NaN;
    /// <summary>Mean KL(clean ‖ spliced) of the next-token distributions over counted positions.</summary>
    public double KlDivWithSae { get; internal set; }
    /// <summary>Mean KL(clean ‖ zero-ablated).</summary>
    public double KlDivWithAblation { get; internal set; }
    /// <summary>Mean KL(clean ‖ mean-ablated) (NaN when not run).</summary>
    public double KlDivWithMeanAblation { get; internal set; } = double.NaN;
    /// <summary>Mean KL(clean ‖ spliced + error term) (≈ 0; NaN when not run).</summary>
    public double KlDivWithErrorTerm { get; internal set; } = double.NaN;

    /// <summary>Fraction of CE loss recovered against zero ablation: (CE_abl − CE_sae) / (CE_abl − CE_clean).</summary>
    public double CeLossScore => (CeLossWithAblation - CeLossWithSae) / (CeLossWithAblation - CeLossWithoutSae);
    /// <summary>As <see cref="CeLossScore"/> against mean ablation.</summary>
    public double CeLossScoreMeanAblation => (CeLossWithMeanAblation - CeLossWithSae) / (CeLossWithMeanAblation - CeLossWithoutSae);
    /// <summary>(KL_abl − KL_sae) / KL_abl with zero ablation.</summary>
    public double KlDivScore => (KlDivWithAblation - KlDivWithSae) / KlDivWithAblation;
    /// <summary>As <see cref="KlDivScore"/> against mean ablation.</summary>
    public double KlDivScoreMeanAblation => (KlDivWithMeanAblation - KlDivWithSae) / KlDivWithMeanAblation;

    /// <summary>|CE zero-ablated − CE clean| under this share of CE clean makes <see cref="CeLossScore"/> a ratio of small
    /// differences (<see cref="SmallAblationNote"/>).</summary>
    public const double SmallAblationShare = 0.01;

    /// <summary>A one-line note when zero-ablating the hook barely changes the loss (|CE zero-ablated − CE clean| under
    /// <see cref="SmallAblationShare"/> of CE clean, both finite): <see cref="CeLossScore"/>'s denominator is then tiny and
    /// the score can leave [0, 1] by noise (hook_mlp_in of a parallel block). Null otherwise.</summary>
    public string? SmallAblationNote()
    {
        double gap = Math.Abs(CeLossWithAblation - CeLossWithoutSae);
        if (!double.IsFinite(gap) || gap == 0 || gap >= SmallAblationShare * Math.Abs(CeLossWithoutSae)) return null;
        static string V(double v, int decimals = 4) => v.ToString("F" + decimals, System.Globalization.CultureInfo.InvariantCulture);
        return $"note: zero ablation barely changes the loss (CE clean {V(CeLossWithoutSae)}, zero-ablated {V(CeLossWithAblation)}, " +
               $"{V(100 * gap / Math.Abs(CeLossWithoutSae), 2)} % of clean), so % CE loss recovered divides by a tiny difference: read it with the KL";
    }

    /// <summary>Positions counted in the KL means and in the reconstruction metrics (at an MoE expert's hook only the
    /// tokens routed to the expert are reconstruction rows: <see cref="SaeEvalResult.Rows"/>).</summary>
    public long Tokens { get; internal set; }
    /// <summary>Positions counted in the CE means (positions predicting from an excluded token are left out).</summary>
    public long CeTokens { get; internal set; }

    /// <summary>SAELens's <c>model_behavior_preservation</c> group (the KL values and scores).</summary>
    internal JsonObject BehaviorPreservationJson(bool keepNonFinite = false) => new()
    {
        ["kl_div_score"] = Num(KlDivScore, keepNonFinite),
        ["kl_div_with_ablation"] = Num(KlDivWithAblation, keepNonFinite),
        ["kl_div_with_sae"] = Num(KlDivWithSae, keepNonFinite),
        ["kl_div_score_mean_ablation"] = Num(KlDivScoreMeanAblation, keepNonFinite),
        ["kl_div_with_mean_ablation"] = Num(KlDivWithMeanAblation, keepNonFinite),
        ["kl_div_with_error_term"] = Num(KlDivWithErrorTerm, keepNonFinite),
    };

    /// <summary>SAELens's <c>model_performance_preservation</c> group (the CE values and scores).</summary>
    internal JsonObject PerformancePreservationJson(bool keepNonFinite = false) => new()
    {
        ["ce_loss_score"] = Num(CeLossScore, keepNonFinite),
        ["ce_loss_with_ablation"] = Num(CeLossWithAblation, keepNonFinite),
        ["ce_loss_with_sae"] = Num(CeLossWithSae, keepNonFinite),
        ["ce_loss_without_sae"] = Num(CeLossWithoutSae, keepNonFinite),
        ["ce_loss_score_mean_ablation"] = Num(CeLossScoreMeanAblation, keepNonFinite),
        ["ce_loss_with_mean_ablation"] = Num(CeLossWithMeanAblation, keepNonFinite),
        ["ce_loss_with_error_term"] = Num(CeLossWithErrorTerm, keepNonFinite),
    };

    /// <summary>A finite number, or JSON null (JSON has no NaN); with <paramref name="keepNonFinite"/> NaN and ±∞ too, as
    /// that double (<see cref="SaeLensEvalsOutput"/> writes them as Python's json does).</summary>
    internal static JsonNode? Num(double v, bool keepNonFinite = false) => double.IsFinite(v) || keepNonFinite ? JsonValue.Create(v) : null;
}
