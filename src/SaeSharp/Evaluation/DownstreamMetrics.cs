using System.Text.Json;
using System.Text.Json.Nodes;

namespace SaeSharp.Evaluation;

/// <summary>
/// Downstream and reconstruction metrics of one SAE over the evaluated tokens. Names follow SAELens
/// <c>evals.py</c> (<c>ce_loss_score</c>, <c>kl_div_score</c>, ... with zero ablation); the mean-ablation and
/// error-term variants carry suffixes.
/// </summary>
public sealed class DownstreamMetrics : SpliceLossMetrics
{
    /// <summary>Display name: the target's <see cref="DownstreamTarget.Name"/>, else the cfg's <c>hook_name</c>, else <c>sae_i</c>.</summary>
    public required string Name { get; init; }
    /// <summary>TransformerLens hook the SAE reads (SAELens <c>hook_name</c>).</summary>
    public required string HookName { get; init; }
    /// <summary>For a transcoder, the hook whose activation its output replaces (<c>hook_name_out</c>); else null.</summary>
    public string? OutputHookName { get; init; }

    /// <summary>A copy of the evaluated SAE's config (its cfg.json as SaeSharp loaded it); null for metrics built by hand.</summary>
    public Saes.SaeConfig? Cfg { get; init; }
    /// <summary>Context windows evaluated (SAELens's prompts; the last batch may hold fewer than
    /// <see cref="BatchSizePrompts"/>); 0 for metrics built by hand.</summary>
    public long Contexts { get; internal set; }
    /// <summary>Tokens per context window (before any seqpos slice).</summary>
    public int ContextSize { get; internal set; }
    /// <summary>Windows per model run (SAELens's <c>eval_batch_size_prompts</c>).</summary>
    public int BatchSizePrompts { get; internal set; }
    /// <summary>Token ids whose positions were left out (<see cref="DownstreamEvalOptions.ExcludeTokenIds"/>).</summary>
    public IReadOnlyList<long> ExcludedTokenIds { get; internal set; } = [];

    /// <summary>Reconstruction and sparsity metrics over the counted positions (the acts helper's accumulator:
    /// FVU about the mean, cosine, L0/L1, alive fraction, ...).</summary>
    public required SaeEvalResult Reconstruction { get; init; }
    /// <summary>Mean squared error per element (not SAELens's <c>mse</c>, which divides by the batch's token count: docs/metrics.md).</summary>
    public double Mse => Reconstruction.Mse;
    /// <summary>1 − FVU, with the variance taken about the mean (SAELens's key; its 6.18 value is another formula: docs/metrics.md).</summary>
    public double ExplainedVariance => Reconstruction.ExplainedVariance;
    /// <summary>Mean cosine similarity of input and reconstruction (SAELens <c>cossim</c>).</summary>
    public double CosSim => Reconstruction.Cosine;
    /// <summary>Mean number of non-zero latents per token (SAELens <c>l0</c>).</summary>
    public double L0 => Reconstruction.L0;
    /// <summary>Mean L1 norm of the latents per token (SAELens <c>l1</c>).</summary>
    public double L1 => Reconstruction.L1;
    /// <summary>Share of latents that fired at least once on the evaluated tokens.</summary>
    public double AliveFraction => Reconstruction.AliveFraction;
    /// <summary>Latents that never fired on the evaluated tokens.</summary>
    public long DeadLatents => Reconstruction.FeatureFrequency.LongCount(f => f == 0);

    /// <summary>Per-feature metrics over the counted positions (SAELens's <c>feature_metrics</c>): feature density,
    /// consistent-activation heuristic (each context window a prompt), encoder norms, encoder-decoder cosines, encoder
    /// biases. The same object as <see cref="SaeEvalResult.FeatureMetrics"/> of <see cref="Reconstruction"/>; null only for
    /// metrics built by hand.</summary>
    public FeatureMetrics? FeatureMetrics => Reconstruction.FeatureMetrics;

    /// <summary>Why this SAE has no metrics, or null: at an MoE expert's hook, no evaluated token was routed to the expert
    /// (the message names the SAE, the hook, the expert and the tokens evaluated). Every metric but the clean CE is then
    /// NaN; the other SAEs evaluated in the same pass keep theirs.</summary>
    public string? NoRows { get; init; }

    /// <summary>One line per NaN or infinite headline metric (CE losses, MSE/FVU, the CE and KL scores), naming it and its
    /// cause: the model's own logits, the SAE's reconstruction, or a zero denominator. Empty when they are all finite;
    /// <see cref="NoRows"/> alone when the SAE has no metrics.</summary>
    public IReadOnlyList<string> NonFiniteNotes()
    {
        var notes = new List<string>();
        if (NoRows is not null) return [NoRows];
        static string V(double v) => v.ToString("G4", System.Globalization.CultureInfo.InvariantCulture);
        if (!double.IsFinite(CeLossWithoutSae))
        {
            notes.Add($"ce loss clean is {V(CeLossWithoutSae)}: the model's own logits are not finite on the evaluated tokens (NaN or Inf in its " +
                      $"weights, or an overflow in its dtype), so every CE and KL metric is NaN with it" +
                      (double.IsFinite(Mse) ? "" : $", and mse too if the activations at {HookName} are not finite"));
            return notes;
        }
        if (!double.IsFinite(Mse))
            notes.Add($"mse and fvu are {V(Mse)}: the SAE's reconstruction of the activations at {HookName} is not finite " +
                      "(weights too large for float32, as after a diverged training run)");
        if (!double.IsFinite(CeLossWithSae))
            notes.Add($"ce loss with SAE is {V(CeLossWithSae)}: the model's logits with the reconstruction spliced in at {HookName} are not finite");
        else if (!double.IsFinite(CeLossScore) && double.IsFinite(CeLossWithAblation))
            notes.Add($"ce loss score is {V(CeLossScore)}: zero-ablating {HookName} leaves the loss unchanged " +
                      $"(CE clean {V(CeLossWithoutSae)} = zero-ablated {V(CeLossWithAblation)}), so there is no loss to recover");
        if (double.IsFinite(KlDivWithSae) && !double.IsFinite(KlDivScore) && KlDivWithAblation == 0)
            notes.Add($"kl div score is {V(KlDivScore)}: zero-ablating {HookName} leaves the next-token distributions unchanged (KL 0)");
        return notes;
    }

    /// <summary>Writes <see cref="ToJson()"/>'s object with <see cref="FeatureMetrics"/> (when set) under
    /// <c>feature_metrics</c> as its last key (non-finite elements null, as the scalars), as SAELens's eval files hold
    /// <c>metrics</c> and <c>feature_metrics</c> side by side. The per-feature lists are streamed, not built as a tree.</summary>
    public void WriteJson(Utf8JsonWriter writer)
    {
        ArgumentNullException.ThrowIfNull(writer);
        writer.WriteStartObject();
        foreach (var (key, value) in ToJson())
        {
            writer.WritePropertyName(key);
            if (value is null) writer.WriteNullValue();
            else value.WriteTo(writer);
        }
        if (FeatureMetrics is { } features)
        {
            writer.WritePropertyName("feature_metrics");
            features.WriteTo(writer, FeatureMetrics.NonFinite.Null);
        }
        writer.WriteEndObject();
    }

    /// <summary>The scalar metrics grouped as SAELens <c>run_evals</c> groups them (its first return value; the
    /// per-feature lists are <see cref="FeatureMetrics"/>, written by <see cref="WriteJson"/>).</summary>
    public JsonObject ToJson() => ToJson(keepNonFinite: false);

    /// <summary><see cref="ToJson()"/>; with <paramref name="keepNonFinite"/> a NaN or infinite metric is kept as that double
    /// (for a writer that spells them, as SAELens's evals output does) instead of null.</summary>
    internal JsonObject ToJson(bool keepNonFinite)
    {
        var json = new JsonObject
        {
            ["name"] = Name,
            ["hook_name"] = HookName,
            ["hook_name_out"] = OutputHookName,
            ["model_behavior_preservation"] = BehaviorPreservationJson(keepNonFinite),
            ["model_performance_preservation"] = PerformancePreservationJson(keepNonFinite),
            ["reconstruction_quality"] = ReconstructionQualityJson(Reconstruction, keepNonFinite),
            ["shrinkage"] = ShrinkageJson(Reconstruction, keepNonFinite),
            ["sparsity"] = SparsityJson(Reconstruction, NoRows is null ? DeadLatents : null, keepNonFinite),
            ["token_stats"] = new JsonObject
            {
                ["total_tokens_eval_reconstruction"] = Reconstruction.Rows > 0 ? Reconstruction.Rows : Tokens,
                ["total_tokens_eval_ce_loss"] = CeTokens,
            },
        };
        if (NoRows is not null) json["no_rows"] = NoRows;
        return json;
    }

    /// <summary>SAELens's <c>reconstruction_quality</c> group of <paramref name="r"/>.</summary>
    internal static JsonObject ReconstructionQualityJson(SaeEvalResult r, bool keepNonFinite = false) => new()
    {
        ["explained_variance"] = Num(r.ExplainedVariance, keepNonFinite),
        ["explained_variance_legacy"] = Num(r.ExplainedVarianceLegacy, keepNonFinite),
        ["fvu"] = Num(r.Fvu, keepNonFinite),
        ["mse"] = Num(r.Mse, keepNonFinite),
        ["mse_loss"] = Num(r.MseLoss, keepNonFinite),
        ["cossim"] = Num(r.Cosine, keepNonFinite),
    };

    /// <summary>SAELens's <c>shrinkage</c> group of <paramref name="r"/>.</summary>
    internal static JsonObject ShrinkageJson(SaeEvalResult r, bool keepNonFinite = false) => new()
    {
        ["l2_norm_in"] = Num(r.L2NormIn, keepNonFinite),
        ["l2_norm_out"] = Num(r.L2NormOut, keepNonFinite),
        ["l2_ratio"] = Num(r.L2Ratio, keepNonFinite),
        ["relative_reconstruction_bias"] = Num(r.RelativeReconstructionBias, keepNonFinite),
    };

    /// <summary>SAELens's <c>sparsity</c> group of <paramref name="r"/> (with SaeSharp's alive fraction).</summary>
    internal static JsonObject SparsityJson(SaeEvalResult r, long? deadLatents, bool keepNonFinite = false)
    {
        var json = new JsonObject
        {
            ["l0"] = Num(r.L0, keepNonFinite),
            ["l1"] = Num(r.L1, keepNonFinite),
            ["dead_latents"] = deadLatents,
            ["alive_fraction"] = Num(r.AliveFraction, keepNonFinite),
        };
        // SaeSharp's: the spread of the per-token L0 behind l0 (SAELens's tutorial draws its histogram).
        if (r.L0Distribution is { } d) json["l0_distribution"] = JsonSerializer.SerializeToNode(d);
        return json;
    }
}
