using SaeSharp.Interop;
using SaeSharp.Models;
using SaeSharp.Saes;
using static TorchSharp.torch;

namespace SaeSharp.Pipelines;

/// <summary>Loads a model the way an SAE expects it: with the weight processing of its <c>model_from_pretrained_kwargs</c>.</summary>
public static class ModelForSae
{
    /// <summary>Loads <paramref name="modelFolder"/> processed as <paramref name="cfg"/>'s metadata asks
    /// (SAELens: <c>from_pretrained_no_processing(model_name, **model_from_pretrained_kwargs)</c>), in
    /// <paramref name="dtype"/> or, when null, the dtype the SAE was trained with (<see cref="RecordedDtype"/>).</summary>
    public static ProcessedModel Load(string modelFolder, SaeConfig cfg, ScalarType? dtype = null)
    {
        ArgumentNullException.ThrowIfNull(cfg);
        return Load(modelFolder, WeightProcessingOptions.FromKwargs(cfg.Metadata.ModelFromPretrainedKwargs, out _), dtype ?? RecordedDtype(cfg));
    }

    /// <summary>The model dtype <paramref name="cfg"/> records: TransformerLens's <c>dtype</c> keyword in
    /// <c>model_from_pretrained_kwargs</c> (written by a run on a model in another dtype than float32), else float32.</summary>
    public static ScalarType RecordedDtype(SaeConfig cfg)
    {
        ArgumentNullException.ThrowIfNull(cfg);
        return cfg.Metadata.ModelFromPretrainedKwargs is { } kw && kw.TryGetValue("dtype", out var d) && d.ValueKind == System.Text.Json.JsonValueKind.String
            ? ModelLoader.ParseDtype(d.GetString()!) : ScalarType.Float32;
    }

    /// <summary>Loads the SAE at <paramref name="saePath"/> and its model.</summary>
    public static (Sae Sae, ProcessedModel Model) LoadWithSae(string saePath, string modelFolder, ScalarType? dtype = null)
    {
        var sae = SaeLoader.Load(saePath);
        try
        {
            return (sae, Load(modelFolder, sae.Cfg, dtype));
        }
        catch
        {
            sae.Dispose();
            throw;
        }
    }

    /// <summary>Loads <paramref name="modelFolder"/> and applies <paramref name="options"/>.</summary>
    public static ProcessedModel Load(string modelFolder, WeightProcessingOptions options, ScalarType dtype = ScalarType.Float32)
    {
        var model = ModelLoader.FromPretrained(modelFolder, dtype);
        try
        {
            var pm = WeightProcessing.Apply(model, options);
            foreach (var w in pm.Warnings) Data.DatasetWarnings.Report(w);   // a step TransformerLens skips for this model: once on stderr
            return pm;
        }
        catch
        {
            model.Dispose();
            throw;
        }
    }

    /// <summary>Loads <paramref name="modelFolder"/> once for several SAEs (<paramref name="names"/>: their paths, for
    /// errors): with the processing they share (<see cref="SharedOptions"/>), in the dtype they record
    /// (<see cref="SharedDtype"/>).</summary>
    public static ProcessedModel Load(string modelFolder, IReadOnlyList<Sae> saes, IReadOnlyList<string> names)
    {
        ArgumentNullException.ThrowIfNull(saes);
        return Load(modelFolder, SharedOptions(saes.Select(s => s.Cfg)), SharedDtype(saes, names));
    }

    /// <summary>The model dtype the SAEs were trained with (<see cref="RecordedDtype(SaeConfig)"/>); SAEs that disagree
    /// need an explicit dtype.</summary>
    public static ScalarType SharedDtype(IReadOnlyList<Sae> saes, IReadOnlyList<string> names)
    {
        ArgumentNullException.ThrowIfNull(saes);
        ArgumentNullException.ThrowIfNull(names);
        var recorded = saes.Select(s => RecordedDtype(s.Cfg)).ToList();
        if (recorded.Distinct().Count() > 1)
            throw new SaeSharpException("the SAEs were trained on the model in different dtypes (" +
                string.Join(", ", recorded.Select((d, i) => $"{names[i]}: {SaeConfig.DtypeName(d)}")) + "): run them separately, or together with sae eval --model --dtype");
        return recorded.Count > 0 ? recorded[0] : ScalarType.Float32;
    }

    /// <summary>The processing shared by several SAEs (one model for all of them); differing kwargs are an error.</summary>
    public static WeightProcessingOptions SharedOptions(IEnumerable<SaeConfig> cfgs)
    {
        WeightProcessingOptions? shared = null;
        foreach (var c in cfgs)
        {
            var o = WeightProcessingOptions.FromKwargs(c.Metadata.ModelFromPretrainedKwargs, out _);
            if (shared is not null && shared != o)
                throw new SaeSharpException($"SAEs need different model processing ({string.Join(", ", shared.ToKwargs().Keys)} vs {string.Join(", ", o.ToKwargs().Keys)}); run them separately");
            shared = o;
        }
        return shared ?? new WeightProcessingOptions();
    }
}
