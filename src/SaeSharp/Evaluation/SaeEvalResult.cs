using System.Text.Json;
using System.Text.Json.Serialization;

namespace SaeSharp.Evaluation;

/// <summary>
/// Reconstruction and sparsity metrics of an SAE over a set of rows; formulas and the peer library each matches are in
/// docs/metrics.md. <see cref="ToJson"/> writes the keys mse, mse_loss, l1, l0, fvu, explained_variance, cosine,
/// l2_ratio, relative_reconstruction_bias, l2_norm_in, l2_norm_out, explained_variance_legacy, alive_fraction,
/// dead_fraction, n_rows (and mmcs, recovered_fraction and SAELens's synthetic-data keys sae_l0, dead_latents,
/// shrinkage, mcc, uniqueness when ground-truth features were given; true_l0 and classification/* also need the rows'
/// ground-truth activations). <see cref="WriteJson"/> adds SAELens's per-feature <c>feature_metrics</c>
/// (<see cref="FeatureMetrics"/>) after them.
/// </summary>
public sealed record SaeEvalResult
{
    /// <summary>Mean squared error per element: Σ‖x−x̂‖² / (N·d_out) (PyTorch's <c>F.mse_loss</c>).</summary>
    [JsonPropertyName("mse")] public double Mse { get; init; }
    /// <summary>Mean over rows of the squared error summed over dimensions: Σ‖x−x̂‖² / N (SAELens's training <c>mse_loss</c>).</summary>
    [JsonPropertyName("mse_loss")] public double MseLoss { get; init; }
    /// <summary>Mean over rows of Σ|f|.</summary>
    [JsonPropertyName("l1")] public double L1 { get; init; }
    /// <summary>Mean over rows of the number of non-zero features.</summary>
    [JsonPropertyName("l0")] public double L0 { get; init; }
    /// <summary>Fraction of variance unexplained: Σ‖x−x̂‖² / Σ‖x−x̄‖², x̄ the per-dimension mean over the evaluated rows.</summary>
    [JsonPropertyName("fvu")] public double Fvu { get; init; }
    /// <summary>1 − fvu.</summary>
    [JsonPropertyName("explained_variance")] public double ExplainedVariance { get; init; }
    /// <summary>Mean over rows of the cosine similarity of x and x̂.</summary>
    [JsonPropertyName("cosine")] public double Cosine { get; init; }
    /// <summary>Mean over rows of ‖x̂‖/‖x‖.</summary>
    [JsonPropertyName("l2_ratio")] public double L2Ratio { get; init; }
    /// <summary>E[‖x̂‖²] / E[⟨x, x̂⟩] (Rajamanoharan et al. 2024, eq. 10): below 1 means shrinkage.</summary>
    [JsonPropertyName("relative_reconstruction_bias")] public double RelativeReconstructionBias { get; init; }
    /// <summary>Mean over rows of ‖x‖ (SAELens's <c>l2_norm_in</c>).</summary>
    [JsonPropertyName("l2_norm_in")] public double L2NormIn { get; init; }
    /// <summary>Mean over rows of ‖x̂‖ (SAELens's <c>l2_norm_out</c>).</summary>
    [JsonPropertyName("l2_norm_out")] public double L2NormOut { get; init; }
    /// <summary>SAELens's <c>explained_variance_legacy</c>: mean over rows of 1 − ‖x−x̂‖² / ‖x − x̄_b‖², x̄_b the per-dimension
    /// mean of the row's evaluation batch. A mean of per-row ratios, which depends on the batching; not 1 − fvu.</summary>
    [JsonPropertyName("explained_variance_legacy")] public double ExplainedVarianceLegacy { get; init; }
    /// <summary>SAELens's (and SAEBench core's) evaluation <c>mse</c>: mean over rows of ‖x−x̂‖² / B, B the number of rows
    /// in the row's evaluation batch (for equal batches, <see cref="MseLoss"/> / B). Depends on the batching; not in
    /// <see cref="ToJson"/> (docs/metrics.md, "SAELens's evaluation mse"); SAEBench's core output writes it.</summary>
    [JsonIgnore] public double SaeLensEvalMse { get; init; } = double.NaN;
    /// <summary>Fraction of features that fired (≠ 0) on at least one evaluated row.</summary>
    [JsonPropertyName("alive_fraction")] public double AliveFraction { get; init; }
    /// <summary>1 − alive_fraction.</summary>
    [JsonPropertyName("dead_fraction")] public double DeadFraction { get; init; }
    /// <summary>Rows evaluated.</summary>
    [JsonPropertyName("n_rows")] public long Rows { get; init; }
    /// <summary>The spread of the per-row L0 behind <see cref="L0"/> (<see cref="L0Distribution"/> of <see cref="L0Rows"/>);
    /// not written for a result without them.</summary>
    [JsonPropertyName("l0_distribution")][JsonIgnore(Condition = JsonIgnoreCondition.WhenWritingNull)]
    public L0Distribution? L0Distribution => L0Distribution.FromCounts(L0Rows);

    /// <summary>Mean max cosine similarity of the true features with the decoder rows (synthetic data only).</summary>
    [JsonPropertyName("mmcs")][JsonIgnore(Condition = JsonIgnoreCondition.WhenWritingNull)] public double? Mmcs { get; init; }
    /// <summary>Fraction of true features whose max cosine with a decoder row exceeds the threshold (0.9).</summary>
    [JsonPropertyName("recovered_fraction")][JsonIgnore(Condition = JsonIgnoreCondition.WhenWritingNull)] public double? RecoveredFraction { get; init; }

    // SAELens 6.37.6's SyntheticDataEvalResult (sae_lens/synthetic/evals.py), under its to_log_dict() keys (no prefix);
    // its explained_variance is the one above (1 − Σ‖x−x̂‖² / Σ‖x−x̄‖²). Written when ground-truth features were given.
    /// <summary>Mean over rows of the number of ground-truth features &gt; 0 (SAELens's <c>true_l0</c>); only when the rows'
    /// ground-truth activations are known.</summary>
    [JsonPropertyName("true_l0")][JsonIgnore(Condition = JsonIgnoreCondition.WhenWritingNull)] public double? TrueL0 { get; init; }
    /// <summary>Mean over rows of the number of latents &gt; 0 (SAELens's <c>sae_l0</c>; <see cref="L0"/> counts ≠ 0).</summary>
    [JsonPropertyName("sae_l0")][JsonIgnore(Condition = JsonIgnoreCondition.WhenWritingNull)] public double? SaeL0 { get; init; }
    /// <summary>Number of latents never &gt; 0 on the evaluated rows (SAELens's <c>dead_latents</c>).</summary>
    [JsonPropertyName("dead_latents")][JsonIgnore(Condition = JsonIgnoreCondition.WhenWritingNull)] public int? DeadLatents { get; init; }
    /// <summary>Mean of ‖x̂‖/‖x‖ over rows with ‖x‖ &gt; 1e-6 (SAELens's <c>shrinkage</c>; 1 = none).</summary>
    [JsonPropertyName("shrinkage")][JsonIgnore(Condition = JsonIgnoreCondition.WhenWritingNull)] public double? Shrinkage { get; init; }
    /// <summary>Mean Correlation Coefficient: mean |cosine| of the optimal one-to-one matching of decoder rows with true
    /// features (SAELens's <c>mcc</c>, Hungarian matching).</summary>
    [JsonPropertyName("mcc")][JsonIgnore(Condition = JsonIgnoreCondition.WhenWritingNull)] public double? Mcc { get; init; }
    /// <summary>Distinct true features that are some latent's best |cosine| match, over d_sae (SAELens's <c>uniqueness</c>).</summary>
    [JsonPropertyName("uniqueness")][JsonIgnore(Condition = JsonIgnoreCondition.WhenWritingNull)] public double? Uniqueness { get; init; }
    /// <summary>Mean over latents of TP/(TP+FP), each latent a detector of its best-matching true feature (SAELens's
    /// <c>classification/precision</c>); only with ground-truth activations.</summary>
    [JsonPropertyName("classification/precision")][JsonIgnore(Condition = JsonIgnoreCondition.WhenWritingNull)] public double? ClassificationPrecision { get; init; }
    /// <summary>Mean over latents of TP/(TP+FN) (SAELens's <c>classification/recall</c>).</summary>
    [JsonPropertyName("classification/recall")][JsonIgnore(Condition = JsonIgnoreCondition.WhenWritingNull)] public double? ClassificationRecall { get; init; }
    /// <summary>Mean over latents of the F1 score (SAELens's <c>classification/f1_score</c>).</summary>
    [JsonPropertyName("classification/f1_score")][JsonIgnore(Condition = JsonIgnoreCondition.WhenWritingNull)] public double? ClassificationF1Score { get; init; }
    /// <summary>Mean over latents of (TP+TN)/rows (SAELens's <c>classification/accuracy</c>).</summary>
    [JsonPropertyName("classification/accuracy")][JsonIgnore(Condition = JsonIgnoreCondition.WhenWritingNull)] public double? ClassificationAccuracy { get; init; }

    /// <summary>Per feature: fraction of evaluated rows on which it fired, fᵢ ≠ 0 (SAELens's <c>feature_density</c>, which
    /// tests fᵢ &gt; 0: the same for non-negative activations). <see cref="FeatureMetrics"/> holds the same array.</summary>
    [JsonIgnore] public double[] FeatureFrequency { get; init; } = [];

    /// <summary>The per-row L0 histogram: element l is the number of evaluated rows with exactly l features ≠ 0, up to the
    /// largest L0 seen (empty for a result built by hand). <see cref="SaveL0Histogram"/> draws it.</summary>
    [JsonIgnore] public long[] L0Rows { get; init; } = [];

    /// <summary>Per-feature metrics (SAELens's <c>feature_metrics</c>): the feature density and, for rows from a model,
    /// the consistent-activation heuristic; with the encoder's norms, encoder-decoder cosines and biases when the
    /// evaluator had the SAE (<see cref="SaeEvaluator"/>, <see cref="DownstreamEvaluator"/>). Null for a result built by
    /// hand. Not in <see cref="ToJson"/>; <see cref="WriteJson"/> writes it.</summary>
    [JsonIgnore] public FeatureMetrics? FeatureMetrics { get; init; }

    private static readonly JsonSerializerOptions JsonOptions = new()
    {
        WriteIndented = true,
        NumberHandling = JsonNumberHandling.AllowNamedFloatingPointLiterals,
    };

    /// <summary>Writes the log10 feature-density histogram of <see cref="FeatureFrequency"/> as a PNG (see <see cref="FeatureDensityHistogram"/>).</summary>
    public void SaveDensityHistogram(string path) => FeatureDensityHistogram.Save(path, FeatureFrequency, Rows);

    /// <summary>Writes the per-token L0 histogram of <see cref="L0Rows"/> as a PNG (see <see cref="L0Histogram"/>).</summary>
    public void SaveL0Histogram(string path) => L0Histogram.Save(path, L0Rows);

    /// <summary>The scalar metrics as a JSON object (NaN written as "NaN" when a metric is undefined, e.g. fvu of constant data).</summary>
    public string ToJson() => JsonSerializer.Serialize(this, JsonOptions);

    /// <summary>Writes <see cref="ToJson"/>'s object, indented, with <see cref="FeatureMetrics"/> (when set) under
    /// <c>feature_metrics</c> as its last key (non-finite elements as "NaN", as the scalars), streamed to
    /// <paramref name="stream"/> (<c>sae eval --activations ... --json</c>).</summary>
    public void WriteJson(Stream stream)
    {
        ArgumentNullException.ThrowIfNull(stream);
        using var writer = new Utf8JsonWriter(stream, new JsonWriterOptions { Indented = true });
        writer.WriteStartObject();
        foreach (var property in JsonSerializer.SerializeToElement(this, JsonOptions).EnumerateObject()) property.WriteTo(writer);
        if (FeatureMetrics is { } features)
        {
            writer.WritePropertyName("feature_metrics");
            features.WriteTo(writer, FeatureMetrics.NonFinite.NamedLiteral);
        }
        writer.WriteEndObject();
    }
}
