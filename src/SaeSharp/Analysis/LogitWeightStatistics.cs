using SaeSharp.Models;
using SaeSharp.Saes;
using static TorchSharp.torch;

namespace SaeSharp.Analysis;

/// <summary>The moments of one feature's logit weight distribution W_dec[i]·W_U over the vocabulary (one row of
/// SAELens's <c>get_stats_df</c>): population standard deviation, skewness E[z³] and kurtosis E[z⁴] (not excess).</summary>
/// <param name="Feature">Feature index.</param>
/// <param name="Mean">Mean over the vocabulary (0 up to rounding without cosine similarity: W_U is centred, as TransformerLens's).</param>
/// <param name="Std">Square root of the mean squared deviation.</param>
/// <param name="Skewness">Mean of z³, z = (value − mean) / std.</param>
/// <param name="Kurtosis">Mean of z⁴ (3 for a normal distribution).</param>
public sealed record LogitWeightMoments(int Feature, double Mean, double Std, double Skewness, double Kurtosis);

/// <summary>
/// The logit-lens analysis of SAELens's tutorial <c>tutorials/logits_lens_with_features.ipynb</c>: per feature the
/// statistics of its logit weights W_dec[i]·W_U (<c>get_W_U_W_dec_stats_df</c> / <c>get_stats_df</c> in that notebook)
/// and token set enrichment scores (<c>sae_lens/tutorial/tsea.py</c>, <c>calculate_batch_enrichment_scores</c>).
/// W_U is TransformerLens's <c>model.W_U</c> of <c>HookedTransformer.from_pretrained</c>: the final norm's scale folded
/// in (<c>fold_ln</c>) and centred over the vocabulary (<c>center_unembed</c>). Decoder rows of a hook outside the
/// residual stream are first written into it (<see cref="FeatureWeights.ResidualDirections"/>).
/// </summary>
public static class LogitWeightStatistics
{
    /// <summary>Features per chunk of the [features, vocab] products (bounds memory).</summary>
    private const int Chunk = 256;

    /// <summary>TransformerLens's W_U [d_model, d_vocab] float32: <see cref="FeatureWeights.FoldedUnembed"/> minus its
    /// mean over the vocabulary; with <paramref name="cosineSim"/> each token's column divided by its norm (the
    /// notebook's <c>W_U / W_U.norm(dim=0, keepdim=True)</c>; the decoder rows stay as they are).</summary>
    public static Tensor Unembed(HookedTransformer model, bool cosineSim = false)
    {
        using var scope = NewDisposeScope();
        using var _ = no_grad();
        var wu = FeatureWeights.FoldedUnembed(model);
        wu = wu - wu.mean([1], keepdim: true);
        if (cosineSim) wu = wu / TorchScalars.VectorNorm(wu, 2, [0], keepdim: true);
        return wu.MoveToOuterDisposeScope();
    }

    /// <summary>The logit weights of <paramref name="features"/>, [n, d_vocab] float32: their residual-stream decoder
    /// rows times <paramref name="unembed"/> (from <see cref="Unembed"/>): the notebook's <c>dec_projection_onto_W_U</c> rows.</summary>
    public static Tensor Projections(HookedTransformer model, Sae sae, string hook, IReadOnlyList<int> features, Tensor unembed)
    {
        using var scope = NewDisposeScope();
        using var _ = no_grad();
        return FeatureWeights.ResidualDirections(model, sae, hook, features).matmul(unembed).MoveToOuterDisposeScope();
    }

    /// <summary>The moments of each row of <paramref name="projection"/> [n, vocab], in float64, as <c>get_stats_df</c>:
    /// mean, std = √mean((x − mean)²), skewness = mean(z³), kurtosis = mean(z⁴). Returns [n, 4].</summary>
    public static Tensor Moments(Tensor projection)
    {
        using var scope = NewDisposeScope();
        var x = projection.to(ScalarType.Float64);
        var mean = x.mean([1], keepdim: true);
        var diffs = x - mean;
        var std = (diffs * diffs).mean([1], keepdim: true).sqrt();
        var z = diffs / std;
        var z2 = z * z;
        var skew = (z2 * z).mean([1], keepdim: true);
        var kurt = (z2 * z2).mean([1], keepdim: true);
        return cat([mean, std, skew, kurt], 1).MoveToOuterDisposeScope();
    }

    /// <summary>Every feature's <see cref="LogitWeightMoments"/>, in feature order, chunk by chunk (memory bounded by
    /// 256 × d_vocab). <paramref name="unembed"/>: from <see cref="Unembed"/>.</summary>
    public static IReadOnlyList<LogitWeightMoments> AllMoments(HookedTransformer model, Sae sae, string hook, Tensor unembed)
    {
        ArgumentNullException.ThrowIfNull(sae);
        int dSae = (int)sae.WDec.shape[0];
        var result = new List<LogitWeightMoments>(dSae);
        for (int start = 0; start < dSae; start += Chunk)
        {
            using var scope = NewDisposeScope();
            var ids = Enumerable.Range(start, Math.Min(Chunk, dSae - start)).ToList();
            var m = Moments(Projections(model, sae, hook, ids, unembed)).contiguous().data<double>().ToArray();
            for (int r = 0; r < ids.Count; r++)
                result.Add(new LogitWeightMoments(ids[r], m[4 * r], m[4 * r + 1], m[4 * r + 2], m[4 * r + 3]));
        }
        return result;
    }

    /// <summary>
    /// Token set enrichment scores [sets, n] of the rows of <paramref name="scores"/> [n, vocab], as
    /// <c>calculate_batch_enrichment_scores</c> (<c>sae_lens/tutorial/tsea.py</c>): each row's tokens sorted by score,
    /// descending; walking down that ranking a running sum gains 1/|S| at a token of the set S and loses 1/(vocab − |S|)
    /// at any other; the score is the largest |running sum| (a Kolmogorov–Smirnov statistic, in [0, 1]; the
    /// notebook plots −ln(1 − score)). Computed at the set's ranks only (the extremes of the walk lie just after a hit
    /// or just before one), in float64. A set that is empty, holds every token or an id outside [0, vocab) is an error.
    /// </summary>
    public static Tensor EnrichmentScores(Tensor scores, IReadOnlyList<TokenSet> sets)
    {
        ArgumentNullException.ThrowIfNull(scores);
        ArgumentNullException.ThrowIfNull(sets);
        long vocab = scores.shape[1];
        using var scope = NewDisposeScope();
        var order = scores.argsort(1, descending: true);
        var ranks = order.argsort(1);                                                 // ranks[r, token] = position of token in row r's ranking
        var rows = new List<Tensor>();
        foreach (var set in sets)
        {
            set.CheckFor(vocab);
            var ids = set.TokenIds;
            double n = ids.Count, hit = 1 / n, miss = 1 / (vocab - n);
            var (pos, _) = ranks.index_select(1, tensor(ids.Select(i => (long)i).ToArray())).to(ScalarType.Float64).sort(1); // [rows, n] ascending
            var k = TorchScalars.Arange(ids.Count, ScalarType.Float64).add(TorchScalars.One, TorchScalars.One).unsqueeze(0);  // 1..n
            // after the k-th hit at position p: k hits, p + 1 − k misses; just before it: k − 1 hits, p − k + 1 misses
            var missesAfter = (pos - k).add(TorchScalars.One, TorchScalars.One);
            var after = k * TorchScalars.Of(hit) - missesAfter * TorchScalars.Of(miss);
            var before = k.sub(TorchScalars.One) * TorchScalars.Of(hit) - missesAfter * TorchScalars.Of(miss);
            rows.Add(maximum(after.abs(), before.abs()).amax([1]));
        }
        return stack(rows).MoveToOuterDisposeScope();
    }

    /// <summary>The enrichment scores [sets, features.Count] of <paramref name="features"/>' logit weights (the
    /// notebook's <c>get_enrichment_df</c> on <c>dec_projection_onto_W_U</c>), chunk by chunk.</summary>
    public static double[,] Enrichment(HookedTransformer model, Sae sae, string hook, IReadOnlyList<int> features, IReadOnlyList<TokenSet> sets, Tensor unembed)
    {
        ArgumentNullException.ThrowIfNull(features);
        ArgumentNullException.ThrowIfNull(sets);
        var result = new double[sets.Count, features.Count];
        for (int start = 0; start < features.Count; start += Chunk)
        {
            using var scope = NewDisposeScope();
            var ids = features.Skip(start).Take(Chunk).ToList();
            var e = EnrichmentScores(Projections(model, sae, hook, ids, unembed), sets).contiguous().data<double>().ToArray();
            for (int s = 0; s < sets.Count; s++)
                for (int r = 0; r < ids.Count; r++) result[s, start + r] = e[s * ids.Count + r];
        }
        return result;
    }

    /// <summary>The notebook's plotted enrichment: −ln(1 − score) (infinite for a score of 1).</summary>
    public static double NegLogOneMinus(double score) => -Math.Log(1 - score);
}
