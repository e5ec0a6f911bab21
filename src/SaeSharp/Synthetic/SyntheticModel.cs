using SaeSharp.IO;
using TorchSharp;
using static TorchSharp.torch;

namespace SaeSharp.Synthetic;

/// <summary>
/// A SAELens 6.37.6 <c>SyntheticModel</c> (the SynthSAEBench generator, <c>sae_lens/synthetic/</c>) loaded from the folder
/// its <c>save()</c> writes, sampled as its <c>sample_with_features</c> samples:
/// <list type="number">
/// <item>firing: feature i fires independently with probability pᵢ (<c>firing_probabilities</c>), or, with a low-rank
/// correlation (F = <c>correlation_factor</c> [n, r], d = <c>correlation_diag</c> [n]), where the Gaussian
/// z = ε·Fᵀ + η·√d (ε ~ N(0, I_r), η ~ N(0, I_n)) exceeds √2·erfinv(1 − 2pᵢ) (a Gaussian copula);</item>
/// <item>magnitude of a firing feature: relu(meanᵢ + stdᵢ·N(0, 1)), meanᵢ and stdᵢ from the config's magnitude
/// generators (SAELens regenerates them from the config on loading, as here);</item>
/// <item>the hierarchy in <c>hierarchy.json</c>, if any (<see cref="SyntheticHierarchy"/>), then relu;</item>
/// <item>hidden = feature_acts · <c>feature_vectors</c> + <c>bias</c> (SAELens's <c>FeatureDictionary</c>).</item>
/// </list>
/// The deterministic parts (vectors, bias, probabilities, thresholds, magnitude vectors) equal SAELens's; the draws come
/// from a TorchSharp generator, so samples agree with SAELens's in distribution, not row for row.
/// </summary>
public sealed partial class SyntheticModel : IDisposable
{
    /// <summary>File name of the weights SAELens writes.</summary>
    public const string WeightsFileName = "synthetic_model.safetensors";

    /// <summary>The config (<c>synthetic_model_config.json</c>).</summary>
    public SyntheticModelConfig Config { get; }
    /// <summary>Feature vectors [n_features, hidden_dim], float32 (SAELens's are unit norm).</summary>
    public Tensor FeatureVectors { get; }
    /// <summary>Bias [hidden_dim], float32 (zeros without bias).</summary>
    public Tensor Bias { get; }
    /// <summary>Firing probabilities pᵢ [n_features], float32, as saved (after any hierarchy compensation).</summary>
    public Tensor FiringProbabilities { get; }
    /// <summary>Mean firing magnitudes [n_features], float32.</summary>
    public Tensor MeanMagnitudes { get; }
    /// <summary>Standard deviations of the firing magnitudes [n_features], float32.</summary>
    public Tensor StdMagnitudes { get; }
    /// <summary>Low-rank correlation factor [n_features, rank], or null for independent firing.</summary>
    public Tensor? CorrelationFactor { get; }
    /// <summary>Diagonal term of the correlation [n_features], or null.</summary>
    public Tensor? CorrelationDiag { get; }
    /// <summary>Copula thresholds √2·erfinv(1 − 2pᵢ) [n_features], or null without correlation.</summary>
    public Tensor? Thresholds { get; }
    /// <summary>The hierarchy, or null.</summary>
    public SyntheticHierarchy? Hierarchy { get; }

    /// <summary>Number of features.</summary>
    public int NumFeatures => Config.NumFeatures;
    /// <summary>Width of the hidden activations.</summary>
    public int HiddenDim => Config.HiddenDim;

    private readonly Tensor? _diagSqrt;

    private SyntheticModel(SyntheticModelConfig config, Tensor vectors, Tensor bias, Tensor probs, Tensor? factor, Tensor? diag, SyntheticHierarchy? hierarchy, Generator? magnitudeFallback)
    {
        Config = config;
        FeatureVectors = vectors;
        Bias = bias;
        FiringProbabilities = probs;
        CorrelationFactor = factor;
        CorrelationDiag = diag;
        Hierarchy = hierarchy;
        // As SyntheticModel._create_activation_generator: std with seed + 1, mean with seed + 2.
        StdMagnitudes = config.StdFiringMagnitudes.Generate(config.NumFeatures, config.Seed + 1, magnitudeFallback).DetachFromDisposeScope();
        MeanMagnitudes = config.MeanFiringMagnitudes.Generate(config.NumFeatures, config.Seed + 2, magnitudeFallback).DetachFromDisposeScope();
        if (factor is not null && diag is not null)
        {
            _diagSqrt = diag.sqrt().DetachFromDisposeScope();
            using var scope = NewDisposeScope();
            using var sqrt2 = Math.Sqrt(2).ToScalar();
            Thresholds = probs.mul(TorchScalars.Of(-2)).add(TorchScalars.One, TorchScalars.One).erfinv().mul(sqrt2).DetachFromDisposeScope();
        }
        if (hierarchy is not null)
        {
            foreach (var p in hierarchy.RescalingParents)
                if (!Check(() => MeanMagnitudes[p].gt(TorchScalars.Of(0))))
                    throw new SaeSharpException($"mean_firing_magnitudes must be > 0 for parents with scale_children_by_parent (feature {p})");
        }
    }

    private static bool Check(Func<Tensor> condition)
    {
        using var scope = NewDisposeScope();
        return condition().item<bool>();
    }

    /// <summary>
    /// Loads the folder SAELens's <c>SyntheticModel.save()</c> writes: <c>synthetic_model_config.json</c>,
    /// <c>synthetic_model.safetensors</c> (<c>feature_vectors</c>, <c>bias</c>, <c>firing_probabilities</c>, and
    /// <c>correlation_factor</c> and <c>correlation_diag</c> with a correlation) and, with a hierarchy,
    /// <c>hierarchy.json</c>. Shapes are checked against the config before any tensor is read; non-finite weights,
    /// probabilities outside [0, 1] and non-positive correlation diagonals are refused; every error names the file and
    /// the field. <paramref name="seed"/> only matters for a <c>folded_normal</c> magnitude in a config without a seed.
    /// </summary>
    public static SyntheticModel Load(string dir, ulong seed = 0)
    {
        if (!Directory.Exists(dir)) throw new SaeSharpException($"{dir}: folder not found");
        var config = SyntheticModelConfig.Load(Path.Combine(dir, SyntheticModelConfig.FileName));
        var weightsPath = Path.Combine(dir, WeightsFileName);
        if (!File.Exists(weightsPath)) throw new SaeSharpException($"{weightsPath}: file not found (SAELens's SyntheticModel.save() writes it beside {SyntheticModelConfig.FileName})");
        int n = config.NumFeatures, h = config.HiddenDim;
        var owned = new List<IDisposable>();
        try
        {
            using var file = SafeTensorsFile.Open(weightsPath);
            Tensor Read(string name, params long[] shape)
            {
                if (!file.Contains(name)) throw new SaeSharpException($"{weightsPath}: tensor '{name}' missing");
                var info = file.Info(name);
                if (!info.Shape.SequenceEqual(shape))
                    throw new SaeSharpException($"{weightsPath}: tensor '{name}' has shape [{string.Join(", ", info.Shape)}], expected [{string.Join(", ", shape)}] (num_features {n}, hidden_dim {h})");
                if (info.ScalarType is not (ScalarType.Float32 or ScalarType.Float64 or ScalarType.Float16 or ScalarType.BFloat16))
                    throw new SaeSharpException($"{weightsPath}: tensor '{name}' has dtype {info.Dtype}, expected a float");
                var t = file.Read(name, ScalarType.Float32);
                owned.Add(t);
                if (!Check(() => t.isfinite().all())) throw new SaeSharpException($"{weightsPath}: tensor '{name}' holds NaN or infinite values");
                return t;
            }
            long rank = -1;
            bool hasFactor = file.Contains("correlation_factor"), hasDiag = file.Contains("correlation_diag");
            if (hasFactor != hasDiag)
                throw new SaeSharpException($"{weightsPath}: tensor '{(hasFactor ? "correlation_diag" : "correlation_factor")}' missing (a correlation needs both correlation_factor and correlation_diag)");
            if (hasFactor)
            {
                var fi = file.Info("correlation_factor");
                if (fi.Shape.Length != 2 || fi.Shape[0] != n || fi.Shape[1] < 1)
                    throw new SaeSharpException($"{weightsPath}: tensor 'correlation_factor' has shape [{string.Join(", ", fi.Shape)}], expected [{n}, rank]");
                rank = fi.Shape[1];
            }
            var vectors = Read("feature_vectors", n, h);
            var bias = Read("bias", h);
            var probs = Read("firing_probabilities", n);
            if (Check(() => probs.lt(TorchScalars.Of(0)).logical_or(probs.gt(TorchScalars.One)).any())) throw new SaeSharpException($"{weightsPath}: tensor 'firing_probabilities' has values outside [0, 1]");
            Tensor? factor = null, diag = null;
            if (hasFactor)
            {
                factor = Read("correlation_factor", n, rank);
                diag = Read("correlation_diag", n);
                if (Check(() => diag.le(TorchScalars.Of(0)).any())) throw new SaeSharpException($"{weightsPath}: tensor 'correlation_diag' must be positive everywhere");
            }
            SyntheticHierarchy? hierarchy = null;
            var hierarchyPath = Path.Combine(dir, SyntheticHierarchy.FileName);
            if (File.Exists(hierarchyPath))
            {
                hierarchy = SyntheticHierarchy.Load(hierarchyPath, n);
                owned.Add(hierarchy);
                if (hierarchy.Roots.Count == 0) { hierarchy.Dispose(); hierarchy = null; }
            }
            using var fallback = new Generator(seed);
            try
            {
                return new SyntheticModel(config, vectors, bias, probs, factor, diag, hierarchy, fallback);
            }
            catch (SaeSharpException e) { throw new SaeSharpException($"{dir}: {e.Message}"); }
        }
        catch
        {
            foreach (var d in owned) d.Dispose();
            throw;
        }
    }

    /// <summary>
    /// Saves the model in SAELens 6.37.6's layout, the files its <c>SyntheticModel.save()</c> writes, so that SAELens's
    /// <c>SyntheticModel.load_from_disk</c> (and <see cref="Load"/>) reloads it: <c>synthetic_model_config.json</c>
    /// (<see cref="SyntheticModelConfig.ToSaeLensJson"/>), <c>synthetic_model.safetensors</c> (float32
    /// <c>feature_vectors</c> [n, h], <c>bias</c> [h], <c>firing_probabilities</c> [n], and with a correlation
    /// <c>correlation_factor</c> [n, rank] and <c>correlation_diag</c> [n]; no metadata, tensors in safetensors's order) and,
    /// with a hierarchy, <c>hierarchy.json</c> (<see cref="SyntheticHierarchy.ToSaeLensJson"/>). The files are written to
    /// temporaries and renamed into place together. A folder that already holds files is refused unless
    /// <paramref name="overwrite"/>; then a <c>hierarchy.json</c> left there by an earlier model is deleted when this one
    /// has none (SAELens's loader would read it).
    /// </summary>
    public void Save(string dir, bool overwrite = false)
    {
        if (File.Exists(dir)) throw new SaeSharpException($"{dir}: exists and is a file; give a folder");
        if (Directory.Exists(dir) && Directory.EnumerateFileSystemEntries(dir).Any() && !overwrite)
            throw new SaeSharpException($"{dir}: folder is not empty (overwrite it explicitly, or choose an empty or new folder)");
        Directory.CreateDirectory(dir);
        var tensors = new List<KeyValuePair<string, Tensor>> { new("bias", Bias) };
        if (CorrelationFactor is not null && CorrelationDiag is not null)
        {
            tensors.Add(new("correlation_diag", CorrelationDiag));
            tensors.Add(new("correlation_factor", CorrelationFactor));
        }
        tensors.Add(new("feature_vectors", FeatureVectors));
        tensors.Add(new("firing_probabilities", FiringProbabilities));
        var hierarchyPath = Path.Combine(dir, SyntheticHierarchy.FileName);
        using (var group = new AtomicFileGroup())
        {
            group.WriteAllText(Path.Combine(dir, SyntheticModelConfig.FileName), Config.ToSaeLensJson());
            SafeTensors.Save(Path.Combine(dir, WeightsFileName), tensors, metadata: null, group);
            if (Hierarchy is not null) group.WriteAllText(hierarchyPath, Hierarchy.ToSaeLensJson());
            group.Commit();
        }
        if (Hierarchy is null && File.Exists(hierarchyPath)) File.Delete(hierarchyPath);
    }

    /// <summary>Draws the feature activations of <paramref name="rows"/> rows [rows, n_features] (float32, non-negative)
    /// as SAELens's <c>ActivationGenerator.sample</c>, from <paramref name="generator"/>.</summary>
    public Tensor SampleFeatures(long rows, Generator? generator)
    {
        using var scope = NewDisposeScope();
        int n = NumFeatures;
        Tensor fire;
        if (CorrelationFactor is not null)
        {
            var eps = randn(rows, CorrelationFactor.shape[1], generator: generator);
            var eta = randn(rows, n, generator: generator);
            var z = eps.matmul(CorrelationFactor.t()).add(eta * _diagSqrt!, TorchScalars.One);
            fire = z.gt(Thresholds!.unsqueeze(0));
        }
        else
        {
            fire = bernoulli(FiringProbabilities.unsqueeze(0).expand(rows, n), generator: generator).to(ScalarType.Bool);
        }
        // As SAELens: a magnitude is drawn only where a feature fires.
        var firing = fire.nonzero();
        var row = firing.select(1, 0);
        var feature = firing.select(1, 1);
        var magnitude = randn(firing.shape[0], generator: generator).mul(StdMagnitudes.index_select(0, feature))
            .add(MeanMagnitudes.index_select(0, feature), TorchScalars.One).relu();
        var acts = zeros(rows, n);
        acts.index_put_(magnitude, row, feature);
        if (Hierarchy is not null)
        {
            acts = acts.contiguous();
            Hierarchy.Apply(acts, MeanMagnitudes, generator);
            acts = acts.relu();
        }
        return acts.MoveToOuterDisposeScope();
    }

    /// <summary>hidden = <paramref name="featureActs"/> · <see cref="FeatureVectors"/> + <see cref="Bias"/> [rows, hidden_dim]
    /// (as a sum over the non-zero activations when fewer than a tenth are non-zero, which is the same up to float
    /// rounding and far cheaper for thousands of features).</summary>
    public Tensor Hidden(Tensor featureActs)
    {
        using var scope = NewDisposeScope();
        var nz = featureActs.nonzero();
        if (nz.shape[0] * 10 >= featureActs.numel())
            return featureActs.matmul(FeatureVectors).add(Bias, TorchScalars.One).MoveToOuterDisposeScope();
        var row = nz.select(1, 0);
        var feature = nz.select(1, 1);
        var values = featureActs.index(row, feature).unsqueeze(1);
        var hidden = Bias.unsqueeze(0).expand(featureActs.shape[0], HiddenDim).clone();
        hidden.index_add_(0, row, FeatureVectors.index_select(0, feature).mul(values), TorchScalars.One);
        return hidden.MoveToOuterDisposeScope();
    }

    /// <summary>As SAELens's <c>sample_with_features</c>: the hidden activations [rows, hidden_dim] and the feature
    /// activations [rows, n_features] they were made from.</summary>
    public (Tensor Hidden, Tensor FeatureActs) SampleWithFeatures(long rows, Generator? generator)
    {
        using var scope = NewDisposeScope();
        var acts = SampleFeatures(rows, generator);
        var hidden = Hidden(acts);
        return (hidden.MoveToOuterDisposeScope(), acts.MoveToOuterDisposeScope());
    }

    /// <summary>Disposes the tensors.</summary>
    public void Dispose()
    {
        FeatureVectors.Dispose();
        Bias.Dispose();
        FiringProbabilities.Dispose();
        MeanMagnitudes.Dispose();
        StdMagnitudes.Dispose();
        CorrelationFactor?.Dispose();
        CorrelationDiag?.Dispose();
        Thresholds?.Dispose();
        _diagSqrt?.Dispose();
        Hierarchy?.Dispose();
    }
}
