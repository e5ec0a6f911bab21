using System.Text.Json;
using System.Text.Json.Nodes;

namespace SaeSharp.Evaluation;

/// <summary>
/// SAEBench core eval's <c>misc_metrics</c> (<c>calculate_misc_metrics</c> in <c>sae_bench/evals/core/main.py</c>), from
/// the per-feature densities dᵢ and max cosine similarities of a <see cref="FeatureMetrics"/>.
/// </summary>
/// <param name="FreqOver1Percent">Fraction of features with dᵢ &gt; 0.01.</param>
/// <param name="FreqOver10Percent">Fraction of features with dᵢ &gt; 0.1.</param>
/// <param name="NormalizedFreqOver1Percent">Σ_{dᵢ &gt; 0.01} dᵢ / Σ dᵢ (0 when Σ dᵢ = 0): the share of all firings made by those features.</param>
/// <param name="NormalizedFreqOver10Percent">Σ_{dᵢ &gt; 0.1} dᵢ / Σ dᵢ (0 when Σ dᵢ = 0).</param>
/// <param name="AverageMaxEncoderCosineSim">Mean over features of <see cref="FeatureMetrics.MaxEncoderCosineSim"/> (NaN when not computed).</param>
/// <param name="AverageMaxDecoderCosineSim">Mean over features of <see cref="FeatureMetrics.MaxDecoderCosineSim"/> (NaN when not computed).</param>
/// <param name="FracAlive">Fraction of features with dᵢ &gt; 0.</param>
public sealed record SaeBenchMiscMetrics(double FreqOver1Percent, double FreqOver10Percent, double NormalizedFreqOver1Percent,
    double NormalizedFreqOver10Percent, double AverageMaxEncoderCosineSim, double AverageMaxDecoderCosineSim, double FracAlive)
{
    /// <summary>The misc metrics of <paramref name="features"/>.</summary>
    public static SaeBenchMiscMetrics From(FeatureMetrics features)
    {
        ArgumentNullException.ThrowIfNull(features);
        var d = features.FeatureDensity;
        if (d.Count == 0) throw new SaeSharpException("misc metrics: no features");
        double n = d.Count, total = d.Sum();
        double Share(double above) => total > 0 ? d.Where(v => v > above).Sum() / total : 0;
        static double Mean(IReadOnlyList<double>? v) => v is { Count: > 0 } ? v.Average() : double.NaN;
        return new SaeBenchMiscMetrics(
            d.Count(v => v > 0.01) / n, d.Count(v => v > 0.1) / n, Share(0.01), Share(0.1),
            Mean(features.MaxEncoderCosineSim), Mean(features.MaxDecoderCosineSim), d.Count(v => v > 0) / n);
    }
}

/// <summary>
/// What SAEBench's core output records about a run besides the metrics: <see cref="SaeBenchRun"/> and the dataset
/// (<c>eval_config.dataset</c>).
/// </summary>
public sealed record SaeBenchCoreRun : SaeBenchRun
{
    /// <summary><c>eval_config.model_name</c> (required for the core output).</summary>
    public required new string ModelName { get => base.ModelName; init => base.ModelName = value; }
    /// <summary><c>eval_config.dataset</c>: the dataset as given.</summary>
    public required string Dataset { get; init; }
}

/// <summary>
/// Writes one SAE's <see cref="DownstreamMetrics"/> as SAEBench's core eval output (<c>CoreEvalOutput</c> of
/// <c>sae_bench/evals/core/eval_output.py</c>, SAEBench commit 8042bb3): the keys, groups and order its
/// <c>to_json_file</c> writes, NaN as −1 (its <c>replace_nans_with_negative_one</c>), per-feature details rounded to 10
/// decimals; the numbers from SAEBench's procedure (<see cref="SaeBenchCoreEvaluator"/>). What still differs is in
/// docs/metrics.md ("SAEBench core output").
/// </summary>
public static class SaeBenchCoreOutput
{
    /// <summary>SAEBench's <c>EVAL_TYPE_ID_CORE</c>.</summary>
    public const string EvalTypeId = "core";

    /// <summary>The SAEBench commit whose core eval this output follows (written as <c>sae_bench_commit_hash</c>).</summary>
    public const string SaeBenchCommit = SaeBenchEnvelope.SaeBenchCommit;

    /// <summary>SAEBench's results file name for an SAE: <c>{release}_{id}_eval_results.json</c>, '/' replaced by '_'
    /// (<c>get_results_filepath</c>).</summary>
    public static string ResultsFileName(string release, string saeId) => $"{release}_{saeId}_eval_results.json".Replace('/', '_');

    /// <summary>Writes the output object of <paramref name="result"/> (from <see cref="SaeBenchCoreEvaluator"/>, SAEBench's
    /// procedure). The d_sae feature details are streamed.</summary>
    public static void Write(Utf8JsonWriter writer, SaeBenchCoreResult result, SaeBenchCoreRun run)
    {
        ArgumentNullException.ThrowIfNull(writer);
        ArgumentNullException.ThrowIfNull(result);
        ArgumentNullException.ThrowIfNull(run);
        var (m, features, cfg, c) = (result.Metrics, result.Features, result.Cfg, result.Config);

        var config = new JsonObject
        {
            ["model_name"] = run.ModelName,
            ["llm_dtype"] = run.LlmDtype,
            ["batch_size_prompts"] = c.BatchSizePrompts,
            ["n_eval_reconstruction_batches"] = c.NEvalReconstructionBatches,
            ["n_eval_sparsity_variance_batches"] = c.NEvalSparsityVarianceBatches,
            ["dataset"] = run.Dataset,
            ["context_size"] = c.ContextSize,
            ["compute_kl"] = true,
            ["compute_ce_loss"] = true,
            ["compute_l2_norms"] = true,
            ["compute_sparsity_metrics"] = true,
            ["compute_variance_metrics"] = true,
            ["compute_featurewise_density_statistics"] = c.ComputeFeaturewiseDensityStatistics,
            ["compute_featurewise_weight_based_metrics"] = c.ComputeFeaturewiseWeightBasedMetrics,
            ["exclude_special_tokens_from_reconstruction"] = c.ExcludeSpecialTokensFromReconstruction,
            ["verbose"] = c.Verbose,
        };
        var unstructured = new JsonObject
        {
            ["producer"] = SaeBenchEnvelope.Producer,
            // The positions the means are over (token_stats' nominal counts less the ignored tokens' positions).
            ["counted_tokens_eval_reconstruction"] = m.ReconstructionPositions,
            ["counted_tokens_eval_sparsity_variance"] = m.SparsityVariancePositions,
            ["ignore_tokens"] = new JsonArray([.. result.IgnoreTokens.Select(t => JsonValue.Create(t))]),
            ["folded_W_dec_norm"] = result.FoldedDecoderNorms,
        };
        SaeBenchEnvelope.Write(writer, EvalTypeId, config, run, writer => WriteResults(writer, result), unstructured, run.SaeCfgDict ?? JsonNode.Parse(cfg.ToJson()));
    }

    private static void WriteResults(Utf8JsonWriter writer, SaeBenchCoreResult result)
    {
        var (m, features, c) = (result.Metrics, result.Features, result.Config);
        var misc = SaeBenchMiscMetrics.From(features);
        writer.WritePropertyName("eval_result_metrics");
        new JsonObject
        {
            ["model_behavior_preservation"] = new JsonObject
            {
                ["kl_div_score"] = Num(m.KlDivScore),
                ["kl_div_with_ablation"] = Num(m.KlDivWithAblation),
                ["kl_div_with_sae"] = Num(m.KlDivWithSae),
            },
            ["model_performance_preservation"] = new JsonObject
            {
                ["ce_loss_score"] = Num(m.CeLossScore),
                ["ce_loss_with_ablation"] = Num(m.CeLossWithAblation),
                ["ce_loss_with_sae"] = Num(m.CeLossWithSae),
                ["ce_loss_without_sae"] = Num(m.CeLossWithoutSae),
            },
            ["reconstruction_quality"] = new JsonObject
            {
                ["explained_variance"] = Num(m.ExplainedVariance),
                ["explained_variance_legacy"] = Num(m.ExplainedVarianceLegacy),
                ["mse"] = Num(m.Mse),
                ["cossim"] = Num(m.Cossim),
            },
            ["shrinkage"] = new JsonObject
            {
                ["l2_norm_in"] = Num(m.L2NormIn),
                ["l2_norm_out"] = Num(m.L2NormOut),
                ["l2_ratio"] = Num(m.L2Ratio),
                ["relative_reconstruction_bias"] = Num(m.RelativeReconstructionBias),
            },
            ["sparsity"] = new JsonObject { ["l0"] = Num(m.L0), ["l1"] = Num(m.L1) },
            // SAEBench's nominal counts: windows × context size, special tokens included.
            ["token_stats"] = new JsonObject
            {
                ["total_tokens_eval_reconstruction"] = (long)c.ContextSize * c.NEvalReconstructionBatches * c.BatchSizePrompts,
                ["total_tokens_eval_sparsity_variance"] = (long)c.ContextSize * c.NEvalSparsityVarianceBatches * c.BatchSizePrompts,
            },
            ["misc_metrics"] = new JsonObject
            {
                ["freq_over_1_percent"] = Num(misc.FreqOver1Percent),
                ["freq_over_10_percent"] = Num(misc.FreqOver10Percent),
                ["normalized_freq_over_1_percent"] = Num(misc.NormalizedFreqOver1Percent),
                ["normalized_freq_over_10_percent"] = Num(misc.NormalizedFreqOver10Percent),
                ["average_max_encoder_cosine_sim"] = Num(misc.AverageMaxEncoderCosineSim),
                ["average_max_decoder_cosine_sim"] = Num(misc.AverageMaxDecoderCosineSim),
                ["frac_alive"] = Num(misc.FracAlive),
            },
        }.WriteTo(writer);

        writer.WriteStartArray("eval_result_details");
        int dSae = features.FeatureDensity.Count;
        for (int i = 0; i < dSae; i++)
        {
            writer.WriteStartObject();
            writer.WriteNumber("index", i);
            Detail(writer, "feature_density", features.FeatureDensity, i);
            Detail(writer, "consistent_activation_heuristic", features.ConsistentActivationHeuristic, i);
            // b_enc; a gated SAE's b_mag; 0 for an SAE with neither, as SAEBench writes.
            SaeBenchEnvelope.WriteMetric(writer, "encoder_bias", (features.EncoderBias ?? features.MagnitudeBias) is { } b ? Round(b[i]) : 0);
            Detail(writer, "encoder_norm", features.EncoderNorm, i);
            Detail(writer, "encoder_decoder_cosine_sim", features.EncoderDecoderCosineSim, i);
            Detail(writer, "max_decoder_cosine_sim", features.MaxDecoderCosineSim, i);
            Detail(writer, "max_encoder_cosine_sim", features.MaxEncoderCosineSim, i);
            writer.WriteEndObject();
        }
        writer.WriteEndArray();
    }

    private static JsonNode Num(double v) => SaeBenchEnvelope.Metric(v);

    /// <summary>SAEBench's <c>round(v, DEFAULT_FLOAT_PRECISION)</c> (10 decimals), NaN as −1.</summary>
    private static double Round(double v) => double.IsFinite(v) ? Math.Round(v, 10, MidpointRounding.ToEven) : -1;

    /// <summary>Feature <paramref name="i"/> of <paramref name="list"/> rounded, or −1 when SaeSharp has no such list
    /// (a transcoder's cosine, which SAEBench's own code cannot compute either).</summary>
    private static void Detail(Utf8JsonWriter writer, string key, IReadOnlyList<double>? list, int i) =>
        SaeBenchEnvelope.WriteMetric(writer, key, list is null ? -1 : Round(list[i]));
}
