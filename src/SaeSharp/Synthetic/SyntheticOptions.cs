using System.Text.Json.Serialization;

namespace SaeSharp.Synthetic;

/// <summary>Distribution of a firing feature's magnitude.</summary>
[JsonConverter(typeof(JsonStringEnumConverter<MagnitudeDistribution>))]
public enum MagnitudeDistribution
{
    /// <summary>Uniform on [<see cref="SyntheticOptions.MagnitudeLow"/>, <see cref="SyntheticOptions.MagnitudeHigh"/>).</summary>
    Uniform,
    /// <summary>Exponential with mean <see cref="SyntheticOptions.MagnitudeMean"/>.</summary>
    Exponential,
}

/// <summary>
/// A toy model of superposition: <see cref="NFeatures"/> random unit directions in <see cref="DIn"/> dimensions, feature i
/// firing with probability <c>MaxFrequency · (i+1)^(−FrequencyExponent)</c> (a power law in the frequency rank) with a
/// non-negative random magnitude; a row is the sum of its firing features' magnitude × direction, plus optional
/// Gaussian noise. Optional groups of features fire together.
/// </summary>
public sealed record SyntheticOptions
{
    /// <summary>Dimension of the activations (the SAE's d_in).</summary>
    [JsonPropertyName("d_in")] public int DIn { get; init; } = 64;
    /// <summary>Number of true features (directions); more than <see cref="DIn"/> puts them in superposition.</summary>
    [JsonPropertyName("n_features")] public int NFeatures { get; init; } = 256;
    /// <summary>Rows written to the training file.</summary>
    [JsonPropertyName("train_rows")] public long TrainRows { get; init; } = 100_000;
    /// <summary>Rows written to the evaluation file.</summary>
    [JsonPropertyName("eval_rows")] public long EvalRows { get; init; } = 10_000;
    /// <summary>Firing probability of the most frequent feature (rank 0).</summary>
    [JsonPropertyName("max_frequency")] public double MaxFrequency { get; init; } = 0.1;
    /// <summary>Power-law exponent α of the frequencies p_i = MaxFrequency · (i+1)^−α (0 makes all equal).</summary>
    [JsonPropertyName("frequency_exponent")] public double FrequencyExponent { get; init; } = 0.5;
    /// <summary>Distribution of a firing feature's magnitude.</summary>
    [JsonPropertyName("magnitude")] public MagnitudeDistribution Magnitude { get; init; } = MagnitudeDistribution.Uniform;
    /// <summary>Lower bound of the uniform magnitude.</summary>
    [JsonPropertyName("magnitude_low")] public double MagnitudeLow { get; init; }
    /// <summary>Upper bound of the uniform magnitude.</summary>
    [JsonPropertyName("magnitude_high")] public double MagnitudeHigh { get; init; } = 1.0;
    /// <summary>Mean of the exponential magnitude.</summary>
    [JsonPropertyName("magnitude_mean")] public double MagnitudeMean { get; init; } = 1.0;
    /// <summary>Standard deviation of isotropic Gaussian noise added to every row (0 for none).</summary>
    [JsonPropertyName("noise_std")] public double NoiseStd { get; init; }
    /// <summary>Number of groups of co-firing features (disjoint, members chosen at random). A group fires with the mean
    /// probability of its members, and then all its members fire (each with its own magnitude).</summary>
    [JsonPropertyName("correlated_groups")] public int CorrelatedGroups { get; init; }
    /// <summary>Features per co-firing group.</summary>
    [JsonPropertyName("group_size")] public int GroupSize { get; init; } = 2;
    /// <summary>Seed of every random draw (directions, frequencies, groups, rows); the same options give the same files.</summary>
    [JsonPropertyName("seed")] public ulong Seed { get; init; }

    /// <summary>Throws a <see cref="SaeSharpException"/> naming the first invalid option.</summary>
    public void Validate()
    {
        if (DIn <= 0) throw new SaeSharpException($"synthetic data: d_in must be positive, got {DIn}");
        if (NFeatures <= 0) throw new SaeSharpException($"synthetic data: n_features must be positive, got {NFeatures}");
        if (TrainRows <= 0) throw new SaeSharpException($"synthetic data: train_rows must be positive, got {TrainRows}");
        if (EvalRows < 0) throw new SaeSharpException($"synthetic data: eval_rows must not be negative, got {EvalRows}");
        if (!(MaxFrequency > 0 && MaxFrequency <= 1)) throw new SaeSharpException($"synthetic data: max_frequency must be in (0, 1], got {MaxFrequency}");
        if (!(FrequencyExponent >= 0)) throw new SaeSharpException($"synthetic data: frequency_exponent must be ≥ 0, got {FrequencyExponent}");
        if (Magnitude == MagnitudeDistribution.Uniform && !(MagnitudeLow >= 0 && MagnitudeHigh > MagnitudeLow))
            throw new SaeSharpException($"synthetic data: uniform magnitudes need 0 ≤ magnitude_low < magnitude_high, got [{MagnitudeLow}, {MagnitudeHigh})");
        if (Magnitude == MagnitudeDistribution.Exponential && !(MagnitudeMean > 0))
            throw new SaeSharpException($"synthetic data: magnitude_mean must be positive, got {MagnitudeMean}");
        if (!(NoiseStd >= 0)) throw new SaeSharpException($"synthetic data: noise_std must be ≥ 0, got {NoiseStd}");
        if (CorrelatedGroups < 0) throw new SaeSharpException($"synthetic data: correlated_groups must not be negative, got {CorrelatedGroups}");
        if (CorrelatedGroups > 0 && GroupSize < 2) throw new SaeSharpException($"synthetic data: group_size must be at least 2, got {GroupSize}");
        if ((long)CorrelatedGroups * GroupSize > NFeatures)
            throw new SaeSharpException($"synthetic data: {CorrelatedGroups} groups of {GroupSize} need {CorrelatedGroups * GroupSize} features, but n_features is {NFeatures}");
    }
}
