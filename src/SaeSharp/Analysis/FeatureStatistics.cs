namespace SaeSharp.Analysis;

/// <summary>
/// One token where a feature fired, with its context: <see cref="ContextTokens"/> are the tokens from
/// <see cref="Position"/> − context to <see cref="Position"/> + context inside window <see cref="Window"/> (cut at the
/// window's edges), <see cref="ContextActs"/> the feature's activation on each of them, and
/// <c>ContextTokens[Index] == Token</c>, <c>ContextActs[Index] == Activation</c>.
/// </summary>
public sealed record ActivationExample(float Activation, int Token, int Index, int[] ContextTokens, float[] ContextActs, long Window, int Position);

/// <summary>
/// A SAEDashboard-style interval of activations [<see cref="Lower"/>, <see cref="Upper"/>): <see cref="Count"/> firings
/// fell in it (<see cref="Share"/> of all firings of the feature) and <see cref="Samples"/> are drawn uniformly from them
/// (sorted by activation, descending).
/// </summary>
public sealed record ActivationInterval(double Lower, double Upper, long Count, double Share, IReadOnlyList<ActivationExample> Samples);

/// <summary>A histogram: <c>Counts[i]</c> values fell in [<c>Edges[i]</c>, <c>Edges[i+1]</c>).</summary>
public sealed record Histogram(double[] Edges, long[] Counts)
{
    /// <summary>An equal-width histogram of <paramref name="values"/> over [min, max] (the max goes into the last bin).</summary>
    public static Histogram Of(ReadOnlySpan<float> values, int bins)
    {
        if (bins <= 0) throw new ArgumentOutOfRangeException(nameof(bins), bins, "must be positive");
        if (values.Length == 0) return new Histogram([], []);
        double lo = double.PositiveInfinity, hi = double.NegativeInfinity;
        foreach (var v in values) { lo = Math.Min(lo, v); hi = Math.Max(hi, v); }
        if (hi <= lo) hi = lo + 1e-6;
        double w = (hi - lo) / bins;
        var edges = new double[bins + 1];
        for (int i = 0; i <= bins; i++) edges[i] = lo + i * w;
        edges[bins] = hi;
        var counts = new long[bins];
        foreach (var v in values) counts[Math.Clamp((int)((v - lo) / w), 0, bins - 1)]++;
        return new Histogram(edges, counts);
    }
}

/// <summary>SAEDashboard's histograms (<c>HistogramData.from_data</c>).</summary>
public static class DashboardHistogram
{
    /// <summary>SAEDashboard's bin count (<c>LogitsHistogramConfig.n_bins</c>, <c>ActsHistogramConfig.n_bins</c>).</summary>
    public const int Bins = 50;

    /// <summary>
    /// <c>HistogramData.from_data</c> on a 1-D float32 tensor: edges <c>torch.linspace(min, max, bins + 1)</c> (float32),
    /// counts <c>torch.histc(data, bins)</c>. All values equal (no width): <see cref="Histogram.Of"/>'s bins instead.
    /// </summary>
    public static Histogram FromData(TorchSharp.torch.Tensor data, int bins = Bins)
    {
        ArgumentNullException.ThrowIfNull(data);
        if (bins <= 0) throw new ArgumentOutOfRangeException(nameof(bins), bins, "must be positive");
        if (data.numel() == 0) return new Histogram([], []);
        using var scope = TorchSharp.torch.NewDisposeScope();
        var x = data.detach().to(TorchSharp.torch.ScalarType.Float32).flatten();
        float lo = x.min().item<float>(), hi = x.max().item<float>();
        if (!(hi > lo)) return Histogram.Of(x.data<float>().ToArray(), bins);
        var edges = TorchSharp.torch.linspace(lo, hi, bins + 1, TorchSharp.torch.ScalarType.Float32).data<float>().ToArray();
        var counts = x.histc(bins).data<float>().ToArray();
        return new Histogram(edges.Select(e => (double)e).ToArray(), counts.Select(c => (long)c).ToArray());
    }
}

/// <summary>A token and a value (a logit effect).</summary>
public sealed record TokenValue(int Token, float Value);

/// <summary>Another feature (or a model neuron) and its cosine similarity with this feature's decoder row.</summary>
public sealed record Similarity(int Index, float Cosine);

/// <summary>One row of SAEDashboard's neuron alignment table: dimension <see cref="Neuron"/> of the hook's basis, the
/// decoder row's entry there (<see cref="Value"/>) and its share of the row's L1 norm (<see cref="L1"/>).</summary>
public sealed record NeuronAlignment(int Neuron, float Value, float L1);

/// <summary>
/// Everything the dashboard shows for one feature: statistics over the corpus (<see cref="Density"/> is the share of
/// counted tokens with activation &gt; 0) and effects computed from the weights (<see cref="TopLogits"/>: the largest
/// entries of W_dec[i]·W_U with the final layer norm's scale folded into W_U).
/// </summary>
public sealed class FeatureStatistics
{
    /// <summary>Feature index (0 ≤ index &lt; d_sae).</summary>
    public required int Feature { get; init; }
    /// <summary>Share of counted tokens on which the feature's activation is &gt; 0.</summary>
    public required double Density { get; init; }
    /// <summary>Largest activation seen (0 when the feature never fired).</summary>
    public required float MaxActivation { get; init; }
    /// <summary>Mean of the non-zero activations (0 when the feature never fired).</summary>
    public required double MeanNonzero { get; init; }
    /// <summary>Counted tokens on which the feature fired.</summary>
    public required long Firings { get; init; }
    /// <summary>Sorted by activation, descending (ties: earlier in the corpus first).</summary>
    public required IReadOnlyList<ActivationExample> TopExamples { get; init; }
    /// <summary>SAEDashboard-style equal-width activation intervals from 0 upwards, each with its count and sampled examples.</summary>
    public required IReadOnlyList<ActivationInterval> Intervals { get; init; }
    /// <summary>Histogram of the non-zero activations (equal-width bins from 0).</summary>
    public required Histogram Histogram { get; init; }
    /// <summary>Tokens with the largest entries of W_dec[i]·W_U (the feature's promoted tokens), largest first.</summary>
    public IReadOnlyList<TokenValue> TopLogits { get; set; } = [];
    /// <summary>Tokens with the smallest entries of W_dec[i]·W_U (the feature's suppressed tokens), smallest first.</summary>
    public IReadOnlyList<TokenValue> BottomLogits { get; set; } = [];
    /// <summary>Histogram of W_dec[i]·W_U over the vocabulary.</summary>
    public Histogram? LogitHistogram { get; set; }
    /// <summary>Features whose decoder rows are most similar (cosine, descending).</summary>
    public IReadOnlyList<Similarity> SimilarFeatures { get; set; } = [];
    /// <summary>For an MLP hook: the model's neurons most aligned with the decoder row (cosine, or the decoder weight itself for <c>mlp.hook_post</c>).</summary>
    public IReadOnlyList<Similarity> AlignedNeurons { get; set; } = [];
    /// <summary>SAEDashboard's neuron alignment table: the 3 largest entries of the decoder row in the hook's basis
    /// (<see cref="FeatureWeights.NeuronAlignments"/>), largest first.</summary>
    public IReadOnlyList<NeuronAlignment> NeuronAlignment { get; set; } = [];
    /// <summary>A crosscoder's latent: its last slot's relative decoder norm n_last / Σ_l n_l (for a model-diffing
    /// crosscoder, the chat slot's; <see cref="Evaluation.CrossCoderDecoderNorms"/>); null otherwise or for a zero decoder.</summary>
    public double? RelativeDecoderNorm { get; set; }
    /// <summary>A crosscoder's latent: its last slot's Δnorm (above 0.9: only in that slot; 0.4 to 0.6: shared); null otherwise.</summary>
    public double? DeltaNorm { get; set; }
}
