using System.Text.Json;
using SaeSharp.IO;
using static TorchSharp.torch;

namespace SaeSharp.Synthetic;

/// <summary>Paths written by <see cref="SyntheticDataset.Write"/>.</summary>
public sealed record SyntheticDatasetFiles(string TrainPath, string? EvalPath, string FeaturesPath);

/// <summary>
/// Writes a synthetic superposition dataset (used by <c>sae synth</c>): <c>train.safetensors</c> and
/// <c>eval.safetensors</c> with tensor <c>activations</c> [rows, d_in] and each row's ground-truth feature activations
/// (sparse, see <see cref="SparseFeatureActivations"/>), and <c>features.safetensors</c> with the true
/// directions <c>features</c> [n_features, d_in] and their firing probabilities <c>frequencies</c> [n_features]; the
/// options are stored as JSON in each file's metadata under <c>synthetic_options</c>.
/// </summary>
public static class SyntheticDataset
{
    /// <summary>File name of the training rows.</summary>
    public const string TrainFile = "train.safetensors";
    /// <summary>File name of the evaluation rows.</summary>
    public const string EvalFile = "eval.safetensors";
    /// <summary>File name of the true feature directions and their frequencies.</summary>
    public const string FeaturesFile = "features.safetensors";
    /// <summary>Tensor name of the rows [rows, d_in] in the train and eval files.</summary>
    public const string ActivationsTensor = "activations";
    /// <summary>Tensor name of the unit-norm true directions [n_features, d_in].</summary>
    public const string FeaturesTensor = "features";
    /// <summary>Tensor name of the firing probabilities [n_features].</summary>
    public const string FrequenciesTensor = "frequencies";
    /// <summary>Metadata key under which each file stores the <see cref="SyntheticOptions"/> as JSON.</summary>
    public const string OptionsMetadataKey = "synthetic_options";

    /// <summary>Generates the dataset into <paramref name="dir"/> (created if needed). The eval rows are drawn after the
    /// training rows from the same seeded stream, so they are fresh samples of the same distribution.</summary>
    public static SyntheticDatasetFiles Write(string dir, SyntheticOptions options)
    {
        options.Validate();
        Directory.CreateDirectory(dir);
        var meta = new Dictionary<string, string> { [OptionsMetadataKey] = JsonSerializer.Serialize(options) };
        using var gen = new SyntheticGenerator(options);

        var featuresPath = Path.Combine(dir, FeaturesFile);
        using (var freq = gen.Frequencies.to(ScalarType.Float32))
            SafeTensors.Save(featuresPath, new Dictionary<string, Tensor> { [FeaturesTensor] = gen.Features, [FrequenciesTensor] = freq }, meta);

        var trainPath = Path.Combine(dir, TrainFile);
        WriteRows(gen, trainPath, options.TrainRows, meta);

        string? evalPath = null;
        if (options.EvalRows > 0)
        {
            evalPath = Path.Combine(dir, EvalFile);
            WriteRows(gen, evalPath, options.EvalRows, meta);
        }
        return new SyntheticDatasetFiles(trainPath, evalPath, featuresPath);
    }

    /// <summary>Metadata key under which <see cref="WriteFrom"/> stores the SAELens <c>synthetic_model_config.json</c> text.</summary>
    public const string SaeLensConfigMetadataKey = "saelens_synthetic_model_config";
    /// <summary>Metadata key under which <see cref="WriteFrom"/> stores its seed.</summary>
    public const string SeedMetadataKey = "seed";

    /// <summary>
    /// Writes the same three files as <see cref="Write"/> from a SAELens <see cref="SyntheticModel"/>: rows drawn with
    /// <see cref="SyntheticModel.SampleWithFeatures"/> (train first, then eval, from one generator seeded with
    /// <paramref name="seed"/>), their ground-truth feature activations, and in <c>features.safetensors</c> the model's
    /// <c>feature_vectors</c> as <c>features</c> and its <c>firing_probabilities</c> as <c>frequencies</c> (before any
    /// hierarchy, which lowers the rates of children). The config JSON and the seed are stored in each file's metadata.
    /// </summary>
    public static SyntheticDatasetFiles WriteFrom(string dir, SyntheticModel model, long trainRows, long evalRows, ulong seed, string? configJson = null)
    {
        if (trainRows <= 0) throw new SaeSharpException($"synthetic data: train rows must be positive, got {trainRows}");
        if (evalRows < 0) throw new SaeSharpException($"synthetic data: eval rows must not be negative, got {evalRows}");
        Directory.CreateDirectory(dir);
        var meta = new Dictionary<string, string> { [SeedMetadataKey] = seed.ToString(System.Globalization.CultureInfo.InvariantCulture) };
        if (configJson is not null) meta[SaeLensConfigMetadataKey] = configJson;
        using var gen = new Generator(seed);
        var featuresPath = Path.Combine(dir, FeaturesFile);
        SafeTensors.Save(featuresPath, new Dictionary<string, Tensor> { [FeaturesTensor] = model.FeatureVectors, [FrequenciesTensor] = model.FiringProbabilities }, meta);
        // Chunks of at most 2^24 feature activations (64 MB), 256 to 8192 rows.
        int chunk = (int)Math.Clamp((1L << 24) / model.NumFeatures, 256, 8192);
        var trainPath = Path.Combine(dir, TrainFile);
        WriteRows(model.NumFeatures, model.HiddenDim, n => model.SampleWithFeatures(n, gen), trainPath, trainRows, chunk, meta);
        string? evalPath = null;
        if (evalRows > 0)
        {
            evalPath = Path.Combine(dir, EvalFile);
            WriteRows(model.NumFeatures, model.HiddenDim, n => model.SampleWithFeatures(n, gen), evalPath, evalRows, chunk, meta);
        }
        return new SyntheticDatasetFiles(trainPath, evalPath, featuresPath);
    }

    private static void WriteRows(int nFeatures, int dIn, Func<long, (Tensor X, Tensor FeatureActs)> sample, string path, long rows, int chunkRows, Dictionary<string, string> meta)
    {
        var (x, featureActs) = SampleInChunks(rows, dIn, nFeatures, chunkRows, sample, keepFeatures: true);
        using (x) Save(path, x, featureActs!, meta);
    }

    /// <summary>
    /// <paramref name="rows"/> rows [rows, d_in] drawn <paramref name="chunkRows"/> at a time by <paramref name="sample"/>
    /// (rows and their dense feature activations), so the [rows, n_features] activations never exist at once; with
    /// <paramref name="keepFeatures"/> also every row's feature activations, kept sparse.
    /// </summary>
    internal static (Tensor X, SparseFeatureActivations? FeatureActs) SampleInChunks(long rows, int dIn, int nFeatures, int chunkRows,
        Func<long, (Tensor X, Tensor FeatureActs)> sample, bool keepFeatures)
    {
        var x = empty(rows, dIn, ScalarType.Float32);
        var parts = keepFeatures ? new List<SparseFeatureActivations>() : null;
        try
        {
            for (long start = 0; start < rows; start += chunkRows)
            {
                long n = Math.Min(chunkRows, rows - start);
                var (chunk, acts) = sample(n);
                using (acts)
                using (chunk)
                using (var slice = x.narrow(0, start, n))
                {
                    slice.copy_(chunk);
                    parts?.Add(SparseFeatureActivations.FromDense(acts));
                }
            }
            return (x, parts is null ? null : SparseFeatureActivations.Concat(parts, nFeatures));
        }
        catch
        {
            x.Dispose();
            throw;
        }
    }

    private static void WriteRows(SyntheticGenerator gen, string path, long rows, Dictionary<string, string> meta)
    {
        var (x, featureActs) = gen.SampleActivationsWithFeatures(rows);
        using (x) Save(path, x, featureActs, meta);
    }

    private static void Save(string path, Tensor x, SparseFeatureActivations featureActs, Dictionary<string, string> meta)
    {
        var tensors = featureActs.ToTensors();
        try
        {
            SafeTensors.Save(path, tensors.Append(new(ActivationsTensor, x)), meta);
        }
        finally
        {
            foreach (var t in tensors.Values) t.Dispose();
        }
    }

    /// <summary>Reads the true feature directions [n_features, d_in] from a <c>features.safetensors</c> file.</summary>
    public static Tensor ReadFeatures(string path)
    {
        using var f = SafeTensorsFile.Open(path);
        return f.Read(FeaturesTensor, ScalarType.Float32);
    }
}
