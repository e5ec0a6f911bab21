using System.Text.Json;
using TorchSharp;
using static TorchSharp.torch;

namespace SaeSharp.Synthetic;

/// <summary>
/// A per-feature magnitude vector as SAELens 6.37.6 describes it (<c>sae_lens/synthetic/firing_magnitudes.py</c>): a
/// number (the same value for every feature) or an object with <c>generator_name</c> <c>constant</c> (<c>value</c>),
/// <c>linear</c> (<c>start</c>, <c>end</c>), <c>exponential</c> (<c>start</c>, <c>end</c>) or <c>folded_normal</c>
/// (<c>mean</c>, <c>std</c>, <c>min_value</c>, <c>max_value</c>).
/// </summary>
public sealed record MagnitudeSpec(string Generator, double Value, double Start, double End, double Mean, double Std, double? MinValue, double? MaxValue)
{
    /// <summary>The same value for every feature (<c>{"generator_name": "constant", "value": ...}</c>).</summary>
    public static MagnitudeSpec Constant(double value) => new("constant", value, 0, 0, 0, 0, null, null);

    /// <summary>The same value for every feature, written as a plain number (SAELens's <c>float</c> form).</summary>
    public static MagnitudeSpec Number(double value) => Constant(value) with { IsNumber = true };

    /// <summary>The config gave a plain number rather than an object; <see cref="ToSaeLens"/> writes it back so.</summary>
    public bool IsNumber { get; init; }

    /// <summary>The value SAELens's <c>SyntheticModelConfig.to_dict</c> writes: a float, or the generator's
    /// <c>to_dict</c> (its dataclass fields in order, then <c>generator_name</c>).</summary>
    internal object ToSaeLens()
    {
        if (IsNumber && Generator == "constant") return Value;
        var o = new PythonJson.Object();
        switch (Generator)
        {
            case "constant": o.Add("value", Value); break;
            case "linear" or "exponential": o.Add("start", Start); o.Add("end", End); break;
            case "folded_normal": o.Add("mean", Mean); o.Add("std", Std); o.Add("min_value", MinValue); o.Add("max_value", MaxValue); break;
            default: throw new SaeSharpException($"magnitude generator '{Generator}' is not one of constant, linear, exponential, folded_normal");
        }
        o.Add("generator_name", Generator);
        return o;
    }

    /// <summary>The values for <paramref name="numFeatures"/> features, float32, computed with SAELens's operations
    /// (<c>torch.full</c>, <c>torch.linspace</c>, <c>start·(end/start)^linspace(0,1)</c>, |mean + std·randn| clamped, the
    /// randn from a generator seeded with <paramref name="seed"/>; exponential values can differ from SAELens's under PyTorch
    /// 1.13 by 1 ulp); null <paramref name="seed"/> draws from
    /// <paramref name="fallback"/>.</summary>
    public Tensor Generate(int numFeatures, long? seed, Generator? fallback = null)
    {
        using var scope = NewDisposeScope();
        Tensor t;
        switch (Generator)
        {
            case "constant":
            {
                using var value = Value.ToScalar();
                t = full(numFeatures, value, ScalarType.Float32);
                break;
            }
            case "linear":
                t = numFeatures == 1 ? tensor(new[] { (float)Start }) : linspace(Start, End, numFeatures, ScalarType.Float32);
                break;
            case "exponential":
            {
                using var ratio = tensor(End / Start); // a 0-dim float64 tensor: the result stays float32
                using var start = Start.ToScalar();
                t = numFeatures == 1 ? tensor(new[] { (float)Start }) : pow(ratio, linspace(0, 1, numFeatures, ScalarType.Float32)).mul(start);
                break;
            }
            case "folded_normal":
            {
                using var g = seed is long s ? new Generator((ulong)s) : null;
                using var std = Std.ToScalar();
                using var mean = Mean.ToScalar();
                t = randn(numFeatures, ScalarType.Float32, generator: g ?? fallback).mul(std).add(mean, TorchScalars.One).abs();
                if (MinValue is not null || MaxValue is not null)
                {
                    using var lo = MinValue is double l ? l.ToScalar() : null;
                    using var hi = MaxValue is double h ? h.ToScalar() : null;
                    t = t.clamp(lo, hi);
                }
                break;
            }
            default:
                throw new SaeSharpException($"magnitude generator '{Generator}' is not one of constant, linear, exponential, folded_normal");
        }
        return t.MoveToOuterDisposeScope();
    }

    internal static MagnitudeSpec Parse(JsonElement e, string field)
    {
        if (e.ValueKind == JsonValueKind.Number) return Number(e.GetDouble());
        if (e.ValueKind != JsonValueKind.Object)
            throw new SaeSharpException($"{field}: expected a number or an object with generator_name, got {e.ValueKind}");
        var name = SynthJson.String(e, "generator_name", field);
        switch (name)
        {
            case "constant":
                return Constant(SynthJson.Number(e, "value", field, 1.0));
            case "linear":
            case "exponential":
            {
                double start = SynthJson.Number(e, "start", field), end = SynthJson.Number(e, "end", field);
                if (!(start > 0 && end > 0)) throw new SaeSharpException($"{field}: start and end must be positive, got {start}, {end}");
                return new MagnitudeSpec(name, 0, start, end, 0, 0, null, null);
            }
            case "folded_normal":
            {
                double mean = SynthJson.Number(e, "mean", field, 0.0), std = SynthJson.Number(e, "std", field, 0.1);
                double? min = SynthJson.OptionalNumber(e, "min_value", field), max = SynthJson.OptionalNumber(e, "max_value", field);
                if (!(std > 0)) throw new SaeSharpException($"{field}: std must be positive, got {std}");
                if (min < 0) throw new SaeSharpException($"{field}: min_value must be non-negative, got {min}");
                if (max <= 0) throw new SaeSharpException($"{field}: max_value must be positive, got {max}");
                if (min > max) throw new SaeSharpException($"{field}: min_value must be ≤ max_value, got {min} > {max}");
                return new MagnitudeSpec(name, 0, 0, 0, mean, std, min, max);
            }
            default:
                throw new SaeSharpException($"{field}.generator_name: '{name}' is not one of constant, linear, exponential, folded_normal");
        }
    }
}

/// <summary>
/// Firing probabilities as SAELens 6.37.6 describes them (<c>sae_lens/synthetic/firing_probabilities.py</c>):
/// <c>generator_name</c> <c>zipfian</c> (<c>exponent</c>, <c>max_prob</c>, <c>min_prob</c>), <c>linear</c>,
/// <c>random</c> (<c>max_prob</c>, <c>min_prob</c>) or <c>constant</c> (<c>probability</c>).
/// </summary>
public sealed record FiringProbabilitySpec(string Generator, double Exponent, double MaxProb, double MinProb, double Probability)
{
    /// <summary>The probabilities for <paramref name="numFeatures"/> features, float32, with SAELens's operations (zipfian
    /// values can differ from SAELens's under PyTorch 1.13 by 1–2 ulp, as its float32 kernels round differently): zipfian
    /// r^−exponent (r = 1..n) rescaled linearly onto [min_prob, max_prob]; linear <c>linspace(max_prob, min_prob)</c>;
    /// random min + (max − min)·U from a generator seeded with <paramref name="seed"/>; constant.</summary>
    public Tensor Generate(int numFeatures, long? seed)
    {
        using var scope = NewDisposeScope();
        Tensor t;
        switch (Generator)
        {
            case "zipfian":
            {
                if (numFeatures == 1) { t = tensor(new[] { (float)MaxProb }); break; }
                using var exponent = Exponent.ToScalar();
                using var range = (MaxProb - MinProb).ToScalar();
                using var min = MinProb.ToScalar();
                var ranks = tensor(Enumerable.Range(1, numFeatures).Select(i => (float)i).ToArray());
                var probs = ranks.pow(exponent).reciprocal();
                var pmin = probs.min();
                var pmax = probs.max();
                t = probs.sub(pmin).div(pmax.sub(pmin)).mul(range).add(min, TorchScalars.One);
                break;
            }
            case "linear":
                t = numFeatures == 1 ? tensor(new[] { (float)MaxProb }) : linspace(MaxProb, MinProb, numFeatures, ScalarType.Float32);
                break;
            case "random":
            {
                // An unseeded torch.Generator() starts from torch's default seed, 67280421310721.
                using var g = new Generator(seed is long s ? (ulong)s : 67280421310721UL);
                using var range = (MaxProb - MinProb).ToScalar();
                using var min = MinProb.ToScalar();
                t = rand(numFeatures, ScalarType.Float32, generator: g).mul(range).add(min, TorchScalars.One);
                break;
            }
            case "constant":
            {
                using var value = Probability.ToScalar();
                t = full(numFeatures, value, ScalarType.Float32);
                break;
            }
            default:
                throw new SaeSharpException($"firing probability generator '{Generator}' is not one of zipfian, linear, random, constant");
        }
        return t.MoveToOuterDisposeScope();
    }

    /// <summary>SAELens's <c>FiringProbabilityConfig.to_dict</c>: the dataclass fields in order, then <c>generator_name</c>.</summary>
    internal PythonJson.Object ToSaeLens()
    {
        var o = new PythonJson.Object();
        switch (Generator)
        {
            case "zipfian": o.Add("exponent", Exponent); o.Add("max_prob", MaxProb); o.Add("min_prob", MinProb); break;
            case "linear" or "random": o.Add("max_prob", MaxProb); o.Add("min_prob", MinProb); break;
            case "constant": o.Add("probability", Probability); break;
            default: throw new SaeSharpException($"firing probability generator '{Generator}' is not one of zipfian, linear, random, constant");
        }
        o.Add("generator_name", Generator);
        return o;
    }

    internal static FiringProbabilitySpec Parse(JsonElement e, string field)
    {
        if (e.ValueKind != JsonValueKind.Object) throw new SaeSharpException($"{field}: expected an object with generator_name, got {e.ValueKind}");
        var name = SynthJson.String(e, "generator_name", field);
        switch (name)
        {
            case "zipfian":
            {
                double exponent = SynthJson.Number(e, "exponent", field, 1.0), max = SynthJson.Number(e, "max_prob", field, 0.3), min = SynthJson.Number(e, "min_prob", field, 0.01);
                if (!(exponent > 0)) throw new SaeSharpException($"{field}.exponent must be positive, got {exponent}");
                if (!(0 < min && min < max && max <= 1)) throw new SaeSharpException($"{field}: need 0 < min_prob < max_prob ≤ 1, got {min}, {max}");
                return new(name, exponent, max, min, 0);
            }
            case "linear":
            case "random":
            {
                double max = SynthJson.Number(e, "max_prob", field, name == "linear" ? 0.3 : 0.5), min = SynthJson.Number(e, "min_prob", field, 0.01);
                bool ok = name == "linear" ? 0 < min && min <= max && max <= 1 : 0 < min && min < max && max <= 1;
                if (!ok) throw new SaeSharpException($"{field}: need 0 < min_prob {(name == "linear" ? "≤" : "<")} max_prob ≤ 1, got {min}, {max}");
                return new(name, 0, max, min, 0);
            }
            case "constant":
                return new(name, 0, 0, 0, SynthJson.Number(e, "probability", field, 0.1));
            default:
                throw new SaeSharpException($"{field}.generator_name: '{name}' is not one of zipfian, linear, random, constant");
        }
    }
}

/// <summary>SAELens's <c>HierarchyConfig</c>: how a hierarchy forest is generated from the config.</summary>
public sealed record SyntheticHierarchyConfig(int TotalRootNodes, int BranchingMin, int BranchingMax, bool BranchingIsRange, int MaxDepth,
    double MutuallyExclusivePortion, int MutuallyExclusiveMinDepth, int? MutuallyExclusiveMaxDepth, bool CompensateProbabilities, bool ScaleChildrenByParent);

/// <summary>SAELens's <c>LowRankCorrelationConfig</c>.</summary>
public sealed record LowRankCorrelationConfig(int Rank, double CorrelationScale, long? Seed);

/// <summary>SAELens's <c>OrthogonalizationConfig</c>.</summary>
public sealed record OrthogonalizationConfig(int NumSteps, double Lr, int ChunkSize);

/// <summary>
/// SAELens 6.37.6's <c>SyntheticModelConfig</c> as written to <c>synthetic_model_config.json</c> by
/// <c>SyntheticModel.save()</c> (<c>sae_lens/synthetic/synthetic_model.py</c>). Missing optional keys take SAELens's
/// defaults.
/// </summary>
public sealed record SyntheticModelConfig
{
    /// <summary>File name SAELens writes the config to.</summary>
    public const string FileName = "synthetic_model_config.json";

    /// <summary>Number of ground-truth features.</summary>
    public required int NumFeatures { get; init; }
    /// <summary>Width of the hidden activations.</summary>
    public required int HiddenDim { get; init; }
    /// <summary>Firing probability generator (default zipfian(1, 0.3, 0.01)).</summary>
    public FiringProbabilitySpec FiringProbability { get; init; } = new("zipfian", 1.0, 0.3, 0.01, 0);
    /// <summary>Hierarchy generation settings, or null.</summary>
    public SyntheticHierarchyConfig? Hierarchy { get; init; }
    /// <summary>Orthogonalisation settings, or null.</summary>
    public OrthogonalizationConfig? Orthogonalization { get; init; }
    /// <summary>Low-rank correlation settings, or null (independent firing).</summary>
    public LowRankCorrelationConfig? Correlation { get; init; }
    /// <summary>Standard deviation of a firing magnitude, per feature (default 0).</summary>
    public MagnitudeSpec StdFiringMagnitudes { get; init; } = MagnitudeSpec.Number(0);
    /// <summary>Mean of a firing magnitude, per feature (default 1).</summary>
    public MagnitudeSpec MeanFiringMagnitudes { get; init; } = MagnitudeSpec.Number(1);
    /// <summary>Norm of the feature dictionary's bias (0 for none; JSON true is 1).</summary>
    public double BiasNorm { get; init; } = 1.0;
    /// <summary>The config gave <c>bias</c> as true or false (not a number); <see cref="ToSaeLensJson"/> writes it back so
    /// (when <see cref="BiasNorm"/> is 0 or 1).</summary>
    public bool BiasIsBoolean { get; init; }
    /// <summary>Tensor dtype; SaeSharp supports SAELens's default, float32.</summary>
    public string Dtype { get; init; } = "float32";
    /// <summary>Global seed (null: unseeded).</summary>
    public long? Seed { get; init; }

    /// <summary>Reads and validates <paramref name="path"/> (a <c>synthetic_model_config.json</c>); every error names the
    /// file and the field.</summary>
    public static SyntheticModelConfig Load(string path)
    {
        if (!File.Exists(path)) throw new SaeSharpException($"{path}: file not found (a SAELens SyntheticModel folder holds {FileName}, synthetic_model.safetensors and optionally hierarchy.json)");
        JsonDocument doc;
        try { doc = JsonDocument.Parse(File.ReadAllText(path)); }
        catch (JsonException e) { throw new SaeSharpException($"{path}: not valid JSON ({e.Message})"); }
        using (doc)
        {
            try { return Parse(doc.RootElement); }
            catch (SaeSharpException e) { throw new SaeSharpException($"{path}: {e.Message}"); }
        }
    }

    /// <summary>Parses a config object (see <see cref="Load"/>).</summary>
    public static SyntheticModelConfig Parse(JsonElement root)
    {
        if (root.ValueKind != JsonValueKind.Object) throw new SaeSharpException("expected a JSON object");
        int n = SynthJson.Int(root, "num_features", "config");
        int h = SynthJson.Int(root, "hidden_dim", "config");
        if (n < 1) throw new SaeSharpException($"num_features must be at least 1, got {n}");
        if (h < 1) throw new SaeSharpException($"hidden_dim must be at least 1, got {h}");
        if (!root.TryGetProperty("firing_probability", out var fp)) throw new SaeSharpException("firing_probability: missing");
        var cfg = new SyntheticModelConfig
        {
            NumFeatures = n,
            HiddenDim = h,
            FiringProbability = FiringProbabilitySpec.Parse(fp, "firing_probability"),
            StdFiringMagnitudes = SynthJson.Has(root, "std_firing_magnitudes", out var std) ? MagnitudeSpec.Parse(std, "std_firing_magnitudes") : MagnitudeSpec.Number(0),
            MeanFiringMagnitudes = SynthJson.Has(root, "mean_firing_magnitudes", out var mean) ? MagnitudeSpec.Parse(mean, "mean_firing_magnitudes") : MagnitudeSpec.Number(1),
            BiasNorm = !SynthJson.Has(root, "bias", out var b) ? 1.0
                : b.ValueKind switch
                {
                    JsonValueKind.True => 1.0,
                    JsonValueKind.False => 0.0,
                    JsonValueKind.Number => b.GetDouble(),
                    _ => throw new SaeSharpException($"bias: expected true, false or a number, got {b.ValueKind}"),
                },
            BiasIsBoolean = SynthJson.Has(root, "bias", out var bb) && bb.ValueKind is JsonValueKind.True or JsonValueKind.False,
            Dtype = SynthJson.Has(root, "dtype", out var dt) ? (dt.ValueKind == JsonValueKind.String ? dt.GetString()! : throw new SaeSharpException("dtype: expected a string")) : "float32",
            Seed = SynthJson.Has(root, "seed", out var s) ? (s.TryGetInt64(out var sv) ? sv : throw new SaeSharpException($"seed: expected an integer or null, got {s}")) : null,
            Correlation = SynthJson.Has(root, "correlation", out var c) ? ParseCorrelation(c) : null,
            Orthogonalization = SynthJson.Has(root, "orthogonalization", out var o)
                ? new OrthogonalizationConfig(SynthJson.Int(o, "num_steps", "orthogonalization", 200), SynthJson.Number(o, "lr", "orthogonalization", 0.01), SynthJson.Int(o, "chunk_size", "orthogonalization", 1024))
                : null,
            Hierarchy = SynthJson.Has(root, "hierarchy", out var hc) ? ParseHierarchy(hc) : null,
        };
        if (cfg.Dtype is not ("float32" or "torch.float32"))
            throw new SaeSharpException($"dtype: '{cfg.Dtype}' is not supported (SaeSharp samples SyntheticModels in float32, SAELens's default)");
        return cfg;
    }

    /// <summary>
    /// The config as SAELens's <c>SyntheticModelConfig.to_dict()</c> serialises it and <c>SyntheticModel.save()</c>
    /// writes it (<c>json.dump(..., indent=2)</c>, byte for byte): every field in the dataclass's order
    /// (<c>num_features</c>, <c>hidden_dim</c>, <c>firing_probability</c>, <c>hierarchy</c>, <c>orthogonalization</c>,
    /// <c>correlation</c>, <c>std_firing_magnitudes</c>, <c>mean_firing_magnitudes</c>, <c>bias</c>, <c>dtype</c>,
    /// <c>seed</c>), absent ones null, floats as Python writes them. A number given as an integer where SAELens keeps a
    /// float field is written as a float (<c>1.0</c> for <c>1</c>): the same value to <c>from_dict</c>.
    /// </summary>
    public string ToSaeLensJson()
    {
        var o = new PythonJson.Object
        {
            { "num_features", NumFeatures },
            { "hidden_dim", HiddenDim },
            { "firing_probability", FiringProbability.ToSaeLens() },
        };
        if (Hierarchy is { } h)
            o.Add("hierarchy", new PythonJson.Object
            {
                { "total_root_nodes", h.TotalRootNodes },
                { "branching_factor", h.BranchingIsRange ? new object[] { h.BranchingMin, h.BranchingMax } : h.BranchingMin },
                { "max_depth", h.MaxDepth },
                { "mutually_exclusive_portion", h.MutuallyExclusivePortion },
                { "mutually_exclusive_min_depth", h.MutuallyExclusiveMinDepth },
                { "mutually_exclusive_max_depth", h.MutuallyExclusiveMaxDepth },
                { "compensate_probabilities", h.CompensateProbabilities },
                { "scale_children_by_parent", h.ScaleChildrenByParent },
            });
        else o.Add("hierarchy", null);
        o.Add("orthogonalization", Orthogonalization is { } orth
            ? new PythonJson.Object { { "num_steps", orth.NumSteps }, { "lr", orth.Lr }, { "chunk_size", orth.ChunkSize } }
            : null);
        o.Add("correlation", Correlation is { } c
            ? new PythonJson.Object { { "rank", c.Rank }, { "correlation_scale", c.CorrelationScale }, { "seed", c.Seed } }
            : null);
        o.Add("std_firing_magnitudes", StdFiringMagnitudes.ToSaeLens());
        o.Add("mean_firing_magnitudes", MeanFiringMagnitudes.ToSaeLens());
        o.Add("bias", BiasIsBoolean && BiasNorm is 0 or 1 ? BiasNorm == 1 : BiasNorm);
        o.Add("dtype", Dtype);
        o.Add("seed", Seed);
        return PythonJson.Dump(o);
    }

    private static LowRankCorrelationConfig ParseCorrelation(JsonElement c)
    {
        int rank = SynthJson.Int(c, "rank", "correlation", 32);
        double scale = SynthJson.Number(c, "correlation_scale", "correlation", 0.1);
        if (rank <= 0) throw new SaeSharpException($"correlation.rank must be positive, got {rank}");
        if (scale < 0) throw new SaeSharpException($"correlation.correlation_scale must be non-negative, got {scale}");
        long? seed = SynthJson.Has(c, "seed", out var s) ? (s.TryGetInt64(out var v) ? v : throw new SaeSharpException("correlation.seed: expected an integer or null")) : null;
        return new LowRankCorrelationConfig(rank, scale, seed);
    }

    private static SyntheticHierarchyConfig ParseHierarchy(JsonElement e)
    {
        const string f = "hierarchy";
        int roots = SynthJson.Int(e, "total_root_nodes", f, 100);
        int bmin, bmax;
        bool range = false;
        if (!SynthJson.Has(e, "branching_factor", out var bf)) bmin = bmax = 100;
        else if (bf.ValueKind == JsonValueKind.Array && bf.GetArrayLength() == 2 && bf[0].TryGetInt32(out bmin) && bf[1].TryGetInt32(out bmax)) range = true;
        else if (bf.TryGetInt32(out bmin)) bmax = bmin;
        else throw new SaeSharpException($"{f}.branching_factor: expected an integer or [min, max], got {bf}");
        int depth = SynthJson.Int(e, "max_depth", f, 2);
        double portion = SynthJson.Number(e, "mutually_exclusive_portion", f, 0.0);
        int meMin = SynthJson.Int(e, "mutually_exclusive_min_depth", f, 0);
        int? meMax = SynthJson.Has(e, "mutually_exclusive_max_depth", out var mm) ? (mm.TryGetInt32(out var v) ? v : throw new SaeSharpException($"{f}.mutually_exclusive_max_depth: expected an integer or null")) : null;
        if (roots <= 0) throw new SaeSharpException($"{f}.total_root_nodes must be positive, got {roots}");
        if (bmin < 2) throw new SaeSharpException($"{f}.branching_factor must be at least 2, got {bmin}");
        if (bmin > bmax) throw new SaeSharpException($"{f}.branching_factor: min {bmin} > max {bmax}");
        if (depth < 1) throw new SaeSharpException($"{f}.max_depth must be at least 1, got {depth}");
        if (!(portion >= 0 && portion <= 1)) throw new SaeSharpException($"{f}.mutually_exclusive_portion must be in [0, 1], got {portion}");
        if (meMin < 0) throw new SaeSharpException($"{f}.mutually_exclusive_min_depth must be non-negative, got {meMin}");
        if (meMax < meMin) throw new SaeSharpException($"{f}.mutually_exclusive_max_depth must be ≥ mutually_exclusive_min_depth");
        return new SyntheticHierarchyConfig(roots, bmin, bmax, range, depth, portion, meMin, meMax,
            SynthJson.Bool(e, "compensate_probabilities", f, false), SynthJson.Bool(e, "scale_children_by_parent", f, false));
    }
}

/// <summary>Small JSON readers whose errors name the field.</summary>
internal static class SynthJson
{
    public static bool Has(JsonElement e, string name, out JsonElement value) =>
        e.TryGetProperty(name, out value) && value.ValueKind != JsonValueKind.Null;

    public static string String(JsonElement e, string name, string field) =>
        Has(e, name, out var v) && v.ValueKind == JsonValueKind.String ? v.GetString()! : throw new SaeSharpException($"{field}.{name}: missing or not a string");

    public static double Number(JsonElement e, string name, string field, double? fallback = null)
    {
        if (!Has(e, name, out var v))
            return fallback ?? throw new SaeSharpException($"{field}.{name}: missing");
        if (v.ValueKind != JsonValueKind.Number) throw new SaeSharpException($"{field}.{name}: expected a number, got {v.ValueKind}");
        var d = v.GetDouble();
        if (!double.IsFinite(d)) throw new SaeSharpException($"{field}.{name}: not finite");
        return d;
    }

    public static double? OptionalNumber(JsonElement e, string name, string field) =>
        Has(e, name, out _) ? Number(e, name, field) : null;

    public static int Int(JsonElement e, string name, string field, int? fallback = null)
    {
        if (!Has(e, name, out var v))
            return fallback ?? throw new SaeSharpException($"{field}.{name}: missing");
        return v.ValueKind == JsonValueKind.Number && v.TryGetInt32(out var i) ? i : throw new SaeSharpException($"{field}.{name}: expected an integer, got {v}");
    }

    public static bool Bool(JsonElement e, string name, string field, bool fallback)
    {
        if (!Has(e, name, out var v)) return fallback;
        return v.ValueKind switch
        {
            JsonValueKind.True => true,
            JsonValueKind.False => false,
            _ => throw new SaeSharpException($"{field}.{name}: expected true or false, got {v}"),
        };
    }
}
