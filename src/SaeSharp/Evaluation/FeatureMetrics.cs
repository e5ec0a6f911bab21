using System.Text.Json;
using System.Text.Json.Nodes;
using SaeSharp.Saes;
using TorchSharp;
using static TorchSharp.torch;

namespace SaeSharp.Evaluation;

/// <summary>
/// Per-feature metrics, one value per latent: SAELens 6.37.6's <c>feature_metrics</c> (the second value
/// <c>run_evals</c> returns; its eval CLI writes it beside the scalar metrics). Formulas and SAELens correspondences in
/// docs/metrics.md. A list SaeSharp cannot define for an evaluation or an SAE is null (and left out of the JSON, as
/// SAELens leaves out <c>encoder_bias</c> for an SAE without one); an element that is undefined (0/0) is NaN.
/// </summary>
public sealed record FeatureMetrics
{
    /// <summary>Per feature: the fraction of evaluated rows (counted positions) on which it fired, fᵢ ≠ 0
    /// (SAELens's <c>feature_density</c>, which tests fᵢ &gt; 0: the same for non-negative activations). The same array as
    /// <see cref="SaeEvalResult.FeatureFrequency"/>.</summary>
    public required IReadOnlyList<double> FeatureDensity { get; init; }

    /// <summary>Per feature: rows on which it fired over the number of prompts (context windows) in which it fired at
    /// least once at a counted position (SAELens's <c>consistent_activation_heuristic</c>); NaN for a feature that never
    /// fired. Null when the rows carried no prompt (activation files).</summary>
    public IReadOnlyList<double>? ConsistentActivationHeuristic { get; init; }

    /// <summary>Per feature: ‖W_enc[:, i]‖ (SAELens's <c>encoder_norm</c>); W_enc = W_decᵀ for an SAE without its own
    /// W_enc (matching_pursuit, a tied temporal SAE). Null until <see cref="WithWeights(Sae)"/>.</summary>
    public IReadOnlyList<double>? EncoderNorm { get; init; }

    /// <summary>Per feature: cos(W_enc[:, i], W_dec[i, :]) (SAELens's <c>encoder_decoder_cosine_sim</c>); NaN when either is
    /// zero. Null for a transcoder with d_out ≠ d_in (the two vectors live in different spaces; SAELens raises there).</summary>
    public IReadOnlyList<double>? EncoderDecoderCosineSim { get; init; }

    /// <summary>Per feature: b_enc[i] (SAELens's <c>encoder_bias</c>); null for an SAE without b_enc (gated,
    /// matching_pursuit, temporal).</summary>
    public IReadOnlyList<double>? EncoderBias { get; init; }

    /// <summary>Per feature: the largest cosine similarity of W_enc[:, i] with any other feature's encoder column
    /// (SAEBench's <c>max_encoder_cosine_sim</c>); null until <see cref="WithMaxCosineSims(Sae)"/>.</summary>
    public IReadOnlyList<double>? MaxEncoderCosineSim { get; init; }

    /// <summary>Per feature: the largest cosine similarity of W_dec[i] with any other feature's decoder row (SAEBench's
    /// <c>max_decoder_cosine_sim</c>); null until <see cref="WithMaxCosineSims(Sae)"/>.</summary>
    public IReadOnlyList<double>? MaxDecoderCosineSim { get; init; }

    /// <summary>Per feature: a gated SAE's b_mag[i], which SAEBench's core output writes as <c>encoder_bias</c> (SAELens's
    /// <c>feature_metrics</c> has no <c>encoder_bias</c> for it); null for other architectures and until
    /// <see cref="WithMaxCosineSims(Sae)"/>.</summary>
    public IReadOnlyList<double>? MagnitudeBias { get; init; }

    /// <summary>These metrics with the weight-based lists (<see cref="EncoderNorm"/>, <see cref="EncoderDecoderCosineSim"/>,
    /// <see cref="EncoderBias"/>) of <paramref name="sae"/>, computed in float64 (SAELens's
    /// <c>get_featurewise_weight_based_metrics</c>).</summary>
    public FeatureMetrics WithWeights(Sae sae) => WithWeights(sae, 1L << 22);

    /// <summary><see cref="WithWeights(Sae)"/> with the features taken in chunks of at most
    /// <paramref name="chunkValues"/> values per matrix (a test seam for the chunk boundaries).</summary>
    internal FeatureMetrics WithWeights(Sae sae, long chunkValues)
    {
        ArgumentNullException.ThrowIfNull(sae);
        int dSae = sae.Cfg.DSae;
        if (FeatureDensity.Count != dSae)
            throw new SaeSharpException($"feature metrics of {FeatureDensity.Count} features, but the SAE has d_sae = {dSae}");
        bool cosine = sae.Cfg.DOutOrIn == sae.Cfg.DIn;
        var norms = new double[dSae];
        var cos = cosine ? new double[dSae] : null;
        using (no_grad())
        {
            // [d_in, d_sae]; an SAE whose encoder is tied to its decoder encodes with W_decᵀ (SAELens's matching_pursuit
            // W_enc property; its temporal SAE has no W_enc attribute when tied, and raises).
            var enc = sae.HasEncoderWeights ? sae.WEnc : null;
            // Features a chunk at a time in float64 (2²² values per matrix, 32 MB): a 65k-feature SAE on a 2,304-wide
            // model would need 1.2 GB for each float64 copy of the whole matrices.
            int chunk = (int)Math.Max(1, Math.Min(dSae, chunkValues / Math.Max(sae.Cfg.DIn, sae.Cfg.DOutOrIn)));
            for (int start = 0; start < dSae; start += chunk)
            {
                using var scope = NewDisposeScope();
                int n = Math.Min(chunk, dSae - start);
                var dec = sae.WDec.detach().narrow(0, start, n).to(ScalarType.Float64, CPU);                  // [n, d_out]
                var e = enc is null ? dec : enc.detach().narrow(1, start, n).t().to(ScalarType.Float64, CPU);  // [n, d_in]
                var en = e.norm(1);
                en.data<double>().CopyTo(norms.AsSpan(start, n));
                // ⟨e, d⟩ / (‖e‖‖d‖): 0/0 = NaN for a zero vector, as SAELens's division by the norm before its cosine.
                if (cos is not null) ((e * dec).sum(1) / (en * dec.norm(1))).data<double>().CopyTo(cos.AsSpan(start, n));
            }
        }
        double[]? bias = null;
        if (sae.HasEncoderBias)
        {
            using var scope = NewDisposeScope();
            bias = sae.BEnc.detach().to(ScalarType.Float64, CPU).data<double>().ToArray();
        }
        return this with { EncoderNorm = norms, EncoderDecoderCosineSim = cos, EncoderBias = bias };
    }

    /// <summary>These metrics with <see cref="MaxEncoderCosineSim"/> and <see cref="MaxDecoderCosineSim"/> of
    /// <paramref name="sae"/> (SAEBench's <c>get_featurewise_weight_based_metrics</c>; W_enc = W_decᵀ for an SAE without
    /// its own W_enc, as <see cref="WithWeights(Sae)"/>), and a gated SAE's <see cref="MagnitudeBias"/>. Costs d_sae² · d dot products per matrix, so only SAEBench's
    /// output asks for it.</summary>
    public FeatureMetrics WithMaxCosineSims(Sae sae)
    {
        ArgumentNullException.ThrowIfNull(sae);
        if (FeatureDensity.Count != sae.Cfg.DSae)
            throw new SaeSharpException($"feature metrics of {FeatureDensity.Count} features, but the SAE has d_sae = {sae.Cfg.DSae}");
        using var scope = NewDisposeScope();
        using var _ = no_grad();
        var dec = MaxCosineSims(sae.WDec.detach());
        var enc = sae.HasEncoderWeights ? MaxCosineSims(sae.WEnc.detach().t()) : dec;
        var magnitudeBias = sae is GatedSae g ? g.BMag.detach().to(ScalarType.Float64, CPU).data<double>().ToArray() : null;
        return this with { MaxEncoderCosineSim = enc, MaxDecoderCosineSim = dec, MagnitudeBias = magnitudeBias };
    }

    /// <summary>For each row i of <paramref name="vectors"/> [n, d]: max over j ≠ i of cos(vᵢ, vⱼ), SAEBench's
    /// <c>calculate_max_cosine_sim</c> (on the columns of its [d, n] argument): rows normalised as
    /// <c>F.normalize</c> does (divided by max(‖v‖, 10⁻¹²), so a zero row has cosine 0 with every row), self-similarity
    /// excluded, −∞ for a single row. Computed in float32 (at least) on the tensor's device, a block of rows at a time
    /// against all of them (no n × n matrix).</summary>
    public static double[] MaxCosineSims(Tensor vectors) => MaxCosineSims(vectors, 1L << 22);

    /// <summary><see cref="MaxCosineSims(Tensor)"/> with at most <paramref name="chunkValues"/> similarities per block (a test seam).</summary>
    internal static double[] MaxCosineSims(Tensor vectors, long chunkValues)
    {
        ArgumentNullException.ThrowIfNull(vectors);
        if (vectors.dim() != 2) throw new SaeSharpException($"max cosine similarity: expected [n, d] vectors, got shape [{string.Join(", ", vectors.shape)}]");
        long n = vectors.shape[0];
        var result = new double[n];
        using var scope = NewDisposeScope();
        using var _ = no_grad();
        var v = vectors.dtype == ScalarType.Float64 ? vectors : vectors.to(ScalarType.Float32);
        var unit = v / v.norm(1, keepdim: true).clamp_min(TorchScalars.Of(1e-12));
        long chunk = Math.Max(1, Math.Min(n, chunkValues / Math.Max(1, n)));
        for (long start = 0; start < n; start += chunk)
        {
            using var inner = NewDisposeScope();
            long c = Math.Min(chunk, n - start);
            var sims = unit.narrow(0, start, c).matmul(unit.t());                             // [c, n]
            using var offset = start.ToScalar();
            using var count = c.ToScalar();
            var rows = TorchScalars.Arange(count, ScalarType.Int64, sims.device);
            sims.index_put_(TorchScalars.Of(double.NegativeInfinity), rows, rows.add(offset, TorchScalars.One));  // self excluded
            var max = sims.max(1).values.to(ScalarType.Float64, CPU);
            max.data<double>().CopyTo(result.AsSpan((int)start, (int)c));
        }
        return result;
    }

    /// <summary>How <see cref="WriteTo"/> writes a NaN or infinite element.</summary>
    public enum NonFinite
    {
        /// <summary>As null (SaeSharp's in-model JSON).</summary>
        Null,
        /// <summary>As the strings "NaN", "Infinity", "-Infinity" (System.Text.Json's named literals: the activation-file JSON).</summary>
        NamedLiteral,
    }

    /// <summary>Writes the lists as a JSON object under SAELens's keys, in its order (<c>feature_density</c>,
    /// <c>consistent_activation_heuristic</c>, <c>encoder_norm</c>, <c>encoder_decoder_cosine_sim</c>, <c>encoder_bias</c>),
    /// then SAEBench's <c>max_encoder_cosine_sim</c>, <c>max_decoder_cosine_sim</c>; a null list left out. Streams the numbers: no string or node tree of the whole lists is built.</summary>
    public void WriteTo(Utf8JsonWriter writer, NonFinite nonFinite = NonFinite.Null)
    {
        ArgumentNullException.ThrowIfNull(writer);
        writer.WriteStartObject();
        foreach (var (key, values) in Lists())
        {
            writer.WriteStartArray(key);
            foreach (var v in values)
            {
                if (double.IsFinite(v)) writer.WriteNumberValue(v);
                else if (nonFinite == NonFinite.Null) writer.WriteNullValue();
                else writer.WriteStringValue(double.IsNaN(v) ? "NaN" : v > 0 ? "Infinity" : "-Infinity");
            }
            writer.WriteEndArray();
        }
        writer.WriteEndObject();
    }

    /// <summary>The lists as a JSON object (<see cref="WriteTo"/>'s keys; non-finite elements null). For small SAEs and
    /// tests: <see cref="WriteTo"/> writes a file without building the tree.</summary>
    public JsonObject ToJson()
    {
        var o = new JsonObject();
        foreach (var (key, values) in Lists())
            o[key] = new JsonArray(values.Select(v => double.IsFinite(v) ? JsonValue.Create(v) : null).ToArray<JsonNode?>());
        return o;
    }

    /// <summary>The non-null lists under their SAELens (then SAEBench) keys, in SAELens's order.</summary>
    internal IEnumerable<(string Key, IReadOnlyList<double> Values)> Lists()
    {
        yield return ("feature_density", FeatureDensity);
        if (ConsistentActivationHeuristic is { } cah) yield return ("consistent_activation_heuristic", cah);
        if (EncoderNorm is { } norm) yield return ("encoder_norm", norm);
        if (EncoderDecoderCosineSim is { } cos) yield return ("encoder_decoder_cosine_sim", cos);
        if (EncoderBias is { } bias) yield return ("encoder_bias", bias);
        if (MaxEncoderCosineSim is { } maxEnc) yield return ("max_encoder_cosine_sim", maxEnc);
        if (MaxDecoderCosineSim is { } maxDec) yield return ("max_decoder_cosine_sim", maxDec);
    }
}
