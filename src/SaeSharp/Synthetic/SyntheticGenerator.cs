using TorchSharp;
using static TorchSharp.torch;

namespace SaeSharp.Synthetic;

/// <summary>
/// Draws rows from the toy model of superposition described by <see cref="SyntheticOptions"/>. Construction draws the
/// feature directions and groups from the seed; <see cref="Sample"/> then draws rows from the same seeded stream, so the
/// whole sequence of samples is reproducible.
/// </summary>
public sealed class SyntheticGenerator : IDisposable
{
    private readonly Generator _gen;
    private readonly Tensor _groupOf;     // [n_features] int64: group index, or -1
    private readonly Tensor _isGrouped;   // [n_features] bool
    private readonly Tensor _groupProb;   // [groups] float32

    /// <summary>The (validated) options the generator was built from.</summary>
    public SyntheticOptions Options { get; }
    /// <summary>Unit-norm feature directions [n_features, d_in], float32.</summary>
    public Tensor Features { get; }
    /// <summary>Firing probability of each feature [n_features], float64 (the power law; grouped features fire with their group's probability).</summary>
    public Tensor Frequencies { get; }
    /// <summary>The groups of co-firing features (empty without groups).</summary>
    public IReadOnlyList<int[]> Groups { get; }

    /// <summary>Validates <paramref name="options"/> and draws the feature directions, frequencies and groups from its seed.</summary>
    public SyntheticGenerator(SyntheticOptions options)
    {
        options.Validate();
        Options = options;
        _gen = new Generator(options.Seed);
        using (NewDisposeScope())
        {
            var dirs = randn(options.NFeatures, options.DIn, generator: _gen);
            Features = (dirs / dirs.norm(1, keepdim: true)).DetachFromDisposeScope();
        }

        var p = new double[options.NFeatures];
        for (int i = 0; i < p.Length; i++) p[i] = options.MaxFrequency * Math.Pow(i + 1, -options.FrequencyExponent);

        var groupOf = Enumerable.Repeat(-1L, options.NFeatures).ToArray();
        var groups = new List<int[]>();
        var groupProb = new float[options.CorrelatedGroups];
        if (options.CorrelatedGroups > 0)
        {
            long[] order;
            using (var perm = randperm(options.NFeatures, generator: _gen)) order = perm.data<long>().ToArray();
            for (int g = 0; g < options.CorrelatedGroups; g++)
            {
                var members = order.Skip(g * options.GroupSize).Take(options.GroupSize).Select(i => (int)i).Order().ToArray();
                double q = members.Average(m => p[m]);
                foreach (var m in members) { groupOf[m] = g; p[m] = q; }
                groupProb[g] = (float)q;
                groups.Add(members);
            }
        }
        Groups = groups;
        Frequencies = tensor(p).DetachFromDisposeScope();
        _groupOf = tensor(groupOf).DetachFromDisposeScope();
        _isGrouped = _groupOf.ge(TorchScalars.Of(0)).DetachFromDisposeScope();
        _groupProb = tensor(groupProb).DetachFromDisposeScope();
    }

    /// <summary>Draws <paramref name="rows"/> rows: the feature activations [rows, n_features] (non-negative, mostly zero)
    /// and the activations x = featureActs · Features + noise [rows, d_in].</summary>
    public (Tensor FeatureActs, Tensor X) Sample(long rows)
    {
        using var scope = NewDisposeScope();
        var o = Options;
        var fire = rand(rows, o.NFeatures, generator: _gen).lt(Frequencies.to(ScalarType.Float32));
        if (o.CorrelatedGroups > 0)
        {
            var groupFire = rand(rows, o.CorrelatedGroups, generator: _gen).lt(_groupProb);
            var fromGroup = groupFire.index_select(1, _groupOf.clamp_min(TorchScalars.Of(0)));
            fire = where(_isGrouped, fromGroup, fire);
        }
        var u = rand(rows, o.NFeatures, generator: _gen);
        using var magnitudeRange = ((float)(o.MagnitudeHigh - o.MagnitudeLow)).ToScalar();
        using var magnitudeLow = ((float)o.MagnitudeLow).ToScalar();
        using var magnitudeMean = ((float)o.MagnitudeMean).ToScalar();
        var mag = o.Magnitude switch
        {
            MagnitudeDistribution.Uniform => (u * magnitudeRange).add(magnitudeLow, TorchScalars.One),
            _ => TorchScalars.OneMinus(u).log().neg() * magnitudeMean,
        };
        var acts = mag * fire.to(ScalarType.Float32);
        var x = acts.matmul(Features);
        if (o.NoiseStd > 0)
        {
            using var noiseStd = ((float)o.NoiseStd).ToScalar();
            x = x.add(randn(rows, o.DIn, generator: _gen) * noiseStd, TorchScalars.One);
        }
        return (acts.MoveToOuterDisposeScope(), x.MoveToOuterDisposeScope());
    }

    /// <summary>Draws <paramref name="rows"/> activation rows [rows, d_in] in chunks of <paramref name="chunkRows"/>
    /// (so the [rows, n_features] activations never exist at once).</summary>
    public Tensor SampleActivations(long rows, int chunkRows = 8192) => SampleInChunks(rows, chunkRows, keepFeatures: false).X;

    /// <summary>As <see cref="SampleActivations(long, int)"/> (the same draws), also returning each row's ground-truth
    /// feature activations, kept sparse.</summary>
    public (Tensor X, SparseFeatureActivations FeatureActs) SampleActivationsWithFeatures(long rows, int chunkRows = 8192)
    {
        var (x, acts) = SampleInChunks(rows, chunkRows, keepFeatures: true);
        return (x, acts!);
    }

    private (Tensor X, SparseFeatureActivations? FeatureActs) SampleInChunks(long rows, int chunkRows, bool keepFeatures) =>
        SyntheticDataset.SampleInChunks(rows, Options.DIn, Options.NFeatures, chunkRows, n =>
        {
            var (acts, x) = Sample(n);
            return (x, acts);
        }, keepFeatures);

    /// <summary>Disposes the feature tensors and the generator.</summary>
    public void Dispose()
    {
        Features.Dispose();
        Frequencies.Dispose();
        _groupOf.Dispose();
        _isGrouped.Dispose();
        _groupProb.Dispose();
        _gen.Dispose();
    }
}
