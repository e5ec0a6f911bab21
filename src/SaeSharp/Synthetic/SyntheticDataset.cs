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

    private static void WriteRows(SyntheticGenerator gen, string path, long rows, Dictionary<string, string> meta)
    {
        var (x, featureActs) = gen.SampleActivationsWithFeatures(rows);
        var tensors = featureActs.ToTensors();
        try
        {
            tensors[ActivationsTensor] = x;
            SafeTensors.Save(path, tensors, meta);
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
