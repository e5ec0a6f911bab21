using TorchSharp;
using SaeSharp.Saes;
using SaeSharp.Analysis;
using SaeSharp.Data;
using SaeSharp.Tokenizers;

namespace SaeSharp.Pipelines;

/// <summary>
/// The analysis commands over files and folders: load the SAE (any format, or a release id) and the model it was trained
/// on, processed as its cfg asks (<see cref="ModelForSae"/>), then run <c>Analysis/</c> on the model. Analysis/ itself
/// works on loaded models and SAEs.
/// </summary>
public static class AnalysisPipeline
{
    /// <summary>
    /// <c>sae features --sae DIR --model M --dataset D</c>: loads the SAE (any format) and its model (processed as its cfg
    /// asks), makes the windows as training did (the SAE's context size and prepend_bos unless <paramref name="data"/> says
    /// otherwise, its disable_concat_sequences and sequence_separator_token), counts the positions its seqpos_slice
    /// kept, runs the pass and decodes the token strings.
    /// </summary>
    public static FeatureReport Features(string saePath, ModelDataOptions data, FeatureAnalysisOptions options)
    {
        ArgumentNullException.ThrowIfNull(data);
        var (sae, pm) = ModelForSae.LoadWithSae(saePath, data.ModelPath, data.ModelDtype);
        using (sae)
        using (pm)
        {
            var meta = sae.Cfg.Metadata;
            var tokenizer = Tokenizer.FromFolder(data.TokenizerPath ?? data.ModelPath);
            int ctx = data.ContextSize ?? meta.ContextSize ?? 128;
            bool bos = data.PrependBos ?? meta.PrependBos;
            var exclude = ModelPipeline.ExclusionOf(data, meta, saePath);
            var slice = meta.SeqposSlice();
            var windows = ModelPipeline.Windows(tokenizer, data.DatasetPath, ctx, bos, data.TextField,
                meta.DisableConcatSequences() ?? false, meta.SequenceSeparatorToken());
            var report = FeatureAnalysis.Run(pm.Model, sae, windows, ForRun(options, data, pm, tokenizer, exclude, ctx, slice));
            report.Source = report.Source with { Sae = saePath, Dataset = data.DatasetPath, PrependBos = bos };
            report.DecodeTokens(tokenizer);
            return report;
        }
    }

    /// <summary>
    /// <c>sae features --sae CROSSCODER --model M --dataset D</c>: a crosscoder over several hooks of one model (the hooks it
    /// records), run as <see cref="FeatureAnalysis.Run(Models.HookedTransformer, CrossCoder, IReadOnlyList{string}, IEnumerable{long[]}, FeatureAnalysisOptions)"/>
    /// on windows of <paramref name="data"/> (context size default 128, prepend_bos default true; a crosscoder records
    /// neither). A model-diffing crosscoder (slots from two models) and one that records no hooks are refused.
    /// </summary>
    public static FeatureReport CrossCoderFeatures(string path, ModelDataOptions data, FeatureAnalysisOptions options)
    {
        ArgumentNullException.ThrowIfNull(data);
        ArgumentNullException.ThrowIfNull(options);
        using var cc = Interop.CrossCoderFormat.Load(path, out var sources);
        cc.eval();
        if (sources.ModelNames is { } models && models.Distinct().Count() > 1)
            throw new SaeSharpException($"{path}: its slots read {string.Join(" and ", models.Distinct())} (model diffing); sae features runs one model, so it takes a crosscoder over hooks of one model");
        var hooks = sources.HookNames ?? throw new SaeSharpException($"{path}: the crosscoder records no hooks (it was trained on plain activation files without --hooks), so sae features cannot tell which activations to read");
        var tokenizer = Tokenizer.FromFolder(data.TokenizerPath ?? data.ModelPath);
        using var pm = ModelForSae.Load(data.ModelPath, data.Processing, data.ModelDtype ?? TorchSharp.torch.ScalarType.Float32);
        int ctx = data.ContextSize ?? 128;
        bool bos = data.PrependBos ?? true;
        var exclude = ModelPipeline.ExclusionOf(data, new SaeMetadata(), path);
        var windows = ModelPipeline.Windows(tokenizer, data.DatasetPath, ctx, bos, data.TextField, data.DisableConcatSequences ?? false, data.SequenceSeparatorToken);
        var report = FeatureAnalysis.Run(pm.Model, cc, hooks, windows, ForRun(options, data, pm, tokenizer, exclude, ctx, options.SeqposSlice ?? data.SeqposSlice));
        report.Source = report.Source with { Sae = path, Dataset = data.DatasetPath, PrependBos = bos };
        report.DecodeTokens(tokenizer);
        return report;
    }

    /// <summary>
    /// <c>sae features --sae CLT_FOLDER --model M --dataset D</c>: loads the whole cross-layer transcoder (a local folder or
    /// <c>hf:ORG/REPO[/PATH]</c>, <see cref="Interop.CrossLayerTranscoderLoader.Load(string, Hub.HfHubOptions?, TorchSharp.torch.ScalarType)"/>) and the
    /// model (processed as <paramref name="data"/> says, in its dtype; a CLT records no processing), makes the windows as
    /// <c>sae eval</c> of a CLT does (context size default 128, prepend_bos default true), and runs
    /// <see cref="FeatureAnalysis.Run(Models.HookedTransformer, CrossLayerTranscoder, IEnumerable{long[]}, FeatureAnalysisOptions, IReadOnlyList{int}?)"/>
    /// on <paramref name="layers"/> (null: all). <paramref name="featureSpec"/> (<see cref="FeatureSelection.Parse"/>, against
    /// d_transcoder) chooses the features when <see cref="FeatureAnalysisOptions.Features"/> is null; <paramref name="layerSpec"/>
    /// likewise the layers when <paramref name="layers"/> is null. One report per layer, token strings decoded.
    /// </summary>
    public static IReadOnlyList<(int Layer, FeatureReport Report)> CrossLayerFeatures(string cltPath, ModelDataOptions data, FeatureAnalysisOptions options,
        IReadOnlyList<int>? layers = null, string? featureSpec = null, string? layerSpec = null, Hub.HfHubOptions? hub = null)
    {
        ArgumentNullException.ThrowIfNull(cltPath);
        ArgumentNullException.ThrowIfNull(data);
        ArgumentNullException.ThrowIfNull(options);
        using var clt = Interop.CrossLayerTranscoderLoader.Load(cltPath, hub, Interop.CrossLayerTranscoderLoader.ForModel(data.ModelDtype));
        if (options.Features is null && featureSpec is not null) options = options with { Features = FeatureSelection.Parse(featureSpec, clt.Cfg.DTranscoder) };
        if (layers is null && layerSpec is not null) layers = FeatureSelection.Parse(layerSpec, clt.Cfg.NLayers, "layers");
        var tokenizer = Tokenizer.FromFolder(data.TokenizerPath ?? data.ModelPath);
        using var pm = ModelForSae.Load(data.ModelPath, data.Processing, data.ModelDtype ?? TorchSharp.torch.ScalarType.Float32);
        if (data.Device.type != TorchSharp.DeviceType.CPU)
        {
            pm.Model.to(data.Device);
            clt.to(data.Device);
        }
        int ctx = data.ContextSize ?? 128;
        bool bos = data.PrependBos ?? true;
        var exclude = ModelPipeline.ExclusionOf(data, new SaeMetadata(), cltPath);
        var windows = ModelPipeline.Windows(tokenizer, data.DatasetPath, ctx, bos, data.TextField, data.DisableConcatSequences ?? false, data.SequenceSeparatorToken);
        var reports = FeatureAnalysis.Run(pm.Model, clt, windows, ForRun(options, data, pm, tokenizer, exclude, ctx, options.SeqposSlice ?? data.SeqposSlice), layers);
        foreach (var (_, report) in reports)
        {
            report.Source = report.Source with { Sae = cltPath, Dataset = data.DatasetPath, PrependBos = bos };
            report.DecodeTokens(tokenizer);
        }
        return reports;
    }

    /// <summary>Loads the SAE (folder or release id), the model it was trained on and its tokenizer, and scores both on the labelled corpus at <paramref name="datasetPath"/>.</summary>
    public static LabelScoringReport ScoreLabels(string saePath, string modelFolder, string datasetPath, LabelScoringOptions options)
    {
        var (sae, pm) = ModelForSae.LoadWithSae(saePath, modelFolder);
        using (sae)
        using (pm)
            return LabelScoring.Run(sae, pm.Model, pm.Hooks, Tokenizer.FromFolder(options.TokenizerPath ?? modelFolder), datasetPath, options);
    }

    /// <summary><paramref name="options"/> completed for one pass of the model over <paramref name="data"/>'s windows of
    /// <paramref name="ctx"/> tokens at the positions of <paramref name="slice"/>: the batch size, the contexts that make
    /// <c>--tokens</c>, the excluded token ids, the model's hooks and the vocabulary the logit tables read (each unless
    /// the options already say it).</summary>
    private static FeatureAnalysisOptions ForRun(FeatureAnalysisOptions options, ModelDataOptions data, Models.ProcessedModel pm, ITextTokenizer tokenizer,
        (bool Special, long[]? Ids, string Origin) exclude, int ctx, SeqposSlice? slice) => options with
    {
        BatchSizePrompts = data.BatchSizePrompts,
        MaxContexts = options.MaxContexts ?? ModelPipeline.ContextsFor(data.Tokens, slice?.Positions(ctx).Length ?? ctx),
        SeqposSlice = slice,
        ExcludeTokenIds = options.ExcludeTokenIds ?? ExcludedTokens.Resolve(exclude.Special, exclude.Ids, tokenizer, exclude.Origin),
        ModelHooks = pm.Hooks,
        VocabSize = options.VocabSize ?? Math.Min(tokenizer.VocabSize, pm.Model.Config.DVocab),
    };
}
