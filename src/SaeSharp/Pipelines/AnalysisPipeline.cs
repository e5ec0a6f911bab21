using TorchSharp;
using SaeSharp.Saes;
using SaeSharp.Analysis;
using SaeSharp.Data;
using SaeSharp.Evaluation;
using SaeSharp.Tokenizers;

namespace SaeSharp.Pipelines;

/// <summary>
/// The analysis commands over files and folders: load the SAE (any format, or a release id) and the model it was trained
/// on, processed as its cfg asks (<see cref="ModelForSae"/>), then run <c>Analysis/</c> on the model. Analysis/ itself
/// works on loaded models and SAEs.
/// </summary>
public static class AnalysisPipeline
{
    /// <summary>SAELens's <c>find_max_activation</c> (the steering tutorial): the largest activation of <paramref name="feature"/>
    /// over <paramref name="data"/>'s windows, measured as <see cref="Features"/> measures it for <c>sae features</c>'
    /// <c>max_activation</c> (the same windows, excluded tokens and seqpos slice).</summary>
    public static float MaxActivation(string saePath, int feature, ModelDataOptions data) =>
        Features(saePath, data, new FeatureAnalysisOptions { Features = [feature] }).Features.Single().MaxActivation;

    /// <summary>
    /// <c>sae features --sae DIR --model M --dataset D</c>: loads the SAE (any format) and its model (processed as its cfg
    /// asks), makes the windows as training did (the SAE's context size and prepend_bos unless <paramref name="data"/> says
    /// otherwise, its disable_concat_sequences and sequence_separator_token), counts the positions its seqpos_slice
    /// kept, runs the pass and decodes the token strings. With <paramref name="foldWDecNorm"/> the SAE's decoder norms are
    /// folded first (<see cref="Sae.FoldWDecNorm"/>, as SAEDashboard's runners do): each feature's activations are then
    /// multiplied by ‖W_dec[i]‖ and its weight-based tables read the unit-norm row.
    /// </summary>
    public static FeatureReport Features(string saePath, ModelDataOptions data, FeatureAnalysisOptions options, bool foldWDecNorm = false)
    {
        ArgumentNullException.ThrowIfNull(data);
        var (sae, pm) = ModelForSae.LoadWithSae(saePath, data.ModelPath, data.ModelDtype);
        using (sae)
        using (pm)
        {
            if (foldWDecNorm)
            {
                try { sae.FoldWDecNorm(); }
                catch (SaeSharpException e) { throw new SaeSharpException($"--fold-w-dec-norm: {saePath}: {e.Message} (SAEDashboard's NeuronpediaRunner leaves topk and temporal SAEs unfolded: leave out the flag)"); }
            }
            var meta = sae.Cfg.Metadata;
            var tokenizer = Tokenizer.FromFolder(data.TokenizerPath ?? data.ModelPath);
            int ctx = data.ContextSize ?? meta.ContextSize ?? 128;
            bool bos = data.PrependBos ?? meta.PrependBos;
            var exclude = ModelPipeline.ExclusionOf(data, meta, saePath);
            var slice = meta.SeqposSlice();
            var windows = ModelPipeline.Windows(tokenizer, data.DatasetPath, ctx, bos, data.TextField,
                meta.DisableConcatSequences() ?? false, meta.SequenceSeparatorToken());
            var report = FeatureAnalysis.Run(pm.Model, sae, windows, ForRun(options, data, pm, tokenizer, exclude, ctx, slice));
            report.Source = report.Source with { Sae = saePath, Dataset = data.DatasetPath, PrependBos = bos, FoldedWDecNorm = foldWDecNorm };
            report.DecodeTokens(tokenizer);
            return report;
        }
    }

    /// <summary>
    /// <c>sae features --sae CROSSCODER --model M --dataset D</c>: a crosscoder over several hooks of one model (the hooks it
    /// records), run as <see cref="FeatureAnalysis.Run(Models.HookedTransformer, CrossCoder, IReadOnlyList{string}, IEnumerable{long[]}, FeatureAnalysisOptions)"/>
    /// on windows of <paramref name="data"/> (context size default 128, prepend_bos default true; a crosscoder records
    /// neither). A model-diffing crosscoder (slots from two models, <see cref="IsModelDiffing"/>) runs
    /// <paramref name="data"/>'s model for its first model's slots and <paramref name="diffModelPath"/> for the other's, on the
    /// same windows (the tokenizers must agree, <see cref="ModelPipeline.CheckSameTokenizer"/>), as
    /// <see cref="FeatureAnalysis.Run(IReadOnlyList{CrossCoderSlotModel}, CrossCoder, IReadOnlyList{string}, IReadOnlyList{int}, IEnumerable{long[]}, FeatureAnalysisOptions)"/>.
    /// A crosscoder that records no hooks is refused.
    /// </summary>
    public static FeatureReport CrossCoderFeatures(string path, ModelDataOptions data, FeatureAnalysisOptions options, string? diffModelPath = null)
    {
        ArgumentNullException.ThrowIfNull(data);
        ArgumentNullException.ThrowIfNull(options);
        using var cc = Interop.CrossCoderFormat.Load(path, out var sources);
        cc.eval();
        bool diffing = IsModelDiffing(sources);
        if (diffing && diffModelPath is null)
            throw new SaeSharpException($"{path}: its slots read {string.Join(" and ", DiffedModelNames(sources))} (model diffing): give both models, --model and --diff-model");
        if (!diffing && diffModelPath is not null)
            throw new SaeSharpException($"--diff-model: {path} reads one model (its slots are hooks of it); --diff-model is for a model-diffing crosscoder");
        var hooks = sources.HookNames ?? throw new SaeSharpException($"{path}: the crosscoder records no hooks (it was trained on plain activation files without --hooks), so sae features cannot tell which activations to read");
        // Slots are model-major (HarvestSpec.ForCrossCoder): the first model's hooks, then the second's, the same hooks.
        int perModel = hooks.Distinct().Count();
        if (diffing && (hooks.Count != 2 * perModel || Enumerable.Range(0, hooks.Count).Any(l => hooks[l] != hooks[l % perModel])))
            throw new SaeSharpException($"{path}: its slots' hooks ({string.Join(", ", hooks)}) are not the same hooks of two models in turn");
        var slotModels = hooks.Select((_, l) => diffing ? l / perModel : 0).ToList();
        var tokenizer = Tokenizer.FromFolder(data.TokenizerPath ?? data.ModelPath);
        var paths = new List<string> { data.ModelPath };
        if (diffModelPath is not null)
        {
            ModelPipeline.CheckSameTokenizer(tokenizer, Models.ModelLoader.NameOf(data.ModelPath), Tokenizer.FromFolder(diffModelPath), Models.ModelLoader.NameOf(diffModelPath));
            paths.Add(diffModelPath);
        }
        var loaded = new List<Models.ProcessedModel>();
        try
        {
            foreach (var p in paths) loaded.Add(ModelForSae.Load(p, data.Processing, data.ModelDtype ?? TorchSharp.torch.ScalarType.Float32));
            int ctx = data.ContextSize ?? 128;
            bool bos = data.PrependBos ?? true;
            var exclude = ModelPipeline.ExclusionOf(data, new SaeMetadata(), path);
            var windows = ModelPipeline.Windows(tokenizer, data.DatasetPath, ctx, bos, data.TextField, data.DisableConcatSequences ?? false, data.SequenceSeparatorToken);
            var runOptions = ForRun(options, data, loaded[0], tokenizer, exclude, ctx, options.SeqposSlice ?? data.SeqposSlice);
            var report = FeatureAnalysis.Run(loaded.Select(m => new CrossCoderSlotModel(m.Model, m.Hooks)).ToList(), cc, hooks, slotModels, windows, runOptions);
            report.Source = report.Source with { Sae = path, Dataset = data.DatasetPath, PrependBos = bos };
            report.DecodeTokens(tokenizer);
            return report;
        }
        finally
        {
            foreach (var m in loaded) m.Dispose();
        }
    }

    /// <summary>True when the crosscoder's slots read two models (model diffing: slot 0 base, slot 1 chat): they record
    /// different models, or one hook twice (one model's slots read different hooks; two models may record one name).</summary>
    public static bool IsModelDiffing(Interop.CrossCoderSources sources)
    {
        ArgumentNullException.ThrowIfNull(sources);
        return (sources.ModelNames is { } models && models.Distinct().Count() > 1)
            || (sources.HookNames is { } hooks && hooks.Distinct().Count() < hooks.Count);
    }

    /// <summary>The base and chat model names a model-diffing crosscoder records (its first and last slot's), or "?".</summary>
    private static IReadOnlyList<string> DiffedModelNames(Interop.CrossCoderSources sources) =>
        sources.ModelNames is { Count: > 0 } m ? [m[0], m[^1]] : ["?", "?"];

    /// <summary>
    /// The two models of a model-diffing crosscoder for <c>sae features</c>: <paramref name="model"/> and
    /// <paramref name="diffModel"/> when given, else the models the crosscoder records (first the base, then the chat) when
    /// each is a local model folder or a Hugging Face repo id (ORG/NAME, <see cref="ModelPipeline.ResolveModelFolder"/>);
    /// otherwise an error naming both. Given models the crosscoder records in the other order are refused as swapped.
    /// </summary>
    public static (string Base, string Chat) DiffingModels(string path, Interop.CrossCoderSources sources, string? model, string? diffModel)
    {
        ArgumentNullException.ThrowIfNull(sources);
        if (!IsModelDiffing(sources)) throw new SaeSharpException($"{path} is not a model-diffing crosscoder (its slots do not record two models)");
        if (sources.ModelNames is { } all && all.Distinct().Count() > 2)
            throw new SaeSharpException($"{path}: its slots read {all.Distinct().Count()} models ({string.Join(", ", all.Distinct())}); sae features takes a crosscoder of two (base, chat)");
        var names = DiffedModelNames(sources);
        // Two models recorded under one name cannot be told apart by it.
        bool usable = names[0] != names[1];
        string Resolve(string? given, string recorded, string flag)
        {
            if (given is not null) return ResolveModelFolderOrThrow(given, flag);
            if (!usable) throw Missing(null);
            if (Directory.Exists(recorded)) return recorded;
            if (recorded.Contains('/', StringComparison.Ordinal) && !Path.IsPathRooted(recorded))
            {
                try { return ModelPipeline.ResolveModelFolder(recorded); }
                catch (SaeSharpException e) { throw Missing(e.Message); }
            }
            throw Missing(null);
        }
        SaeSharpException Missing(string? why) => new($"{path} diffs the models {names[0]} (base) and {names[1]} (chat), which are not model folders here"
            + (why is null ? "" : $" ({why})") + ": give them as --model BASE --diff-model CHAT");
        var (b, c) = (Resolve(model, names[0], "--model"), Resolve(diffModel, names[1], "--diff-model"));
        static bool Is(string folder, string recorded) => Models.ModelLoader.NameOf(folder) == recorded
            || (Directory.Exists(recorded) && Path.GetFullPath(folder).TrimEnd('/', '\\') == Path.GetFullPath(recorded).TrimEnd('/', '\\'));
        if (usable && Is(b, names[1]) && Is(c, names[0]))
            throw new SaeSharpException($"--model {model ?? b} is {names[1]}, the crosscoder's chat slot, and --diff-model {diffModel ?? c} its base slot: swap them (--model is the base model, slot 0)");
        return (b, c);
    }

    private static string ResolveModelFolderOrThrow(string model, string flag)
    {
        try { return ModelPipeline.ResolveModelFolder(model); }
        catch (SaeSharpException e) { throw new SaeSharpException($"{flag} {model}: {e.Message}", e); }
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
    /// <paramref name="loading"/>: what stays in the CLT's files (null: circuit-tracer's defaults, lazy decoders, in the dtype
    /// <see cref="Interop.CrossLayerTranscoderLoader.ForModel"/> gives beside the model).
    /// </summary>
    public static IReadOnlyList<(int Layer, FeatureReport Report)> CrossLayerFeatures(string cltPath, ModelDataOptions data, FeatureAnalysisOptions options,
        IReadOnlyList<int>? layers = null, string? featureSpec = null, string? layerSpec = null, Hub.HfHubOptions? hub = null,
        Interop.CrossLayerTranscoderLoadOptions? loading = null)
    {
        ArgumentNullException.ThrowIfNull(cltPath);
        ArgumentNullException.ThrowIfNull(data);
        ArgumentNullException.ThrowIfNull(options);
        using var clt = Interop.CrossLayerTranscoderLoader.Load(cltPath,
            loading ?? new Interop.CrossLayerTranscoderLoadOptions { Dtype = Interop.CrossLayerTranscoderLoader.ForModel(data.ModelDtype) }, hub);
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

    /// <summary><c>sae probe</c>: loads the SAE and its model, then <c>SparseProbing.Run</c> on token labels (with
    /// absorption when <paramref name="absorption"/> is given), or, with <paramref name="text"/>, <c>TextProbing.Run</c>
    /// on mean-pooled texts.</summary>
    public static SparseProbingReport Probe(string saePath, string modelFolder, string datasetPath, LabelScoringOptions harvest,
        SparseProbingOptions options, AbsorptionOptions? absorption = null, TextProbingOptions? text = null, Action<SaeBenchRun>? loaded = null) =>
        Probe([saePath], modelFolder, datasetPath, harvest, options, absorption, text, loaded is null ? null : runs => loaded(runs[0]))[0];

    /// <summary><c>sae probe --sae A --sae B ...</c>: loads the SAEs (all at one hook, of one d_in: else an error naming the
    /// SAE) and their model once, runs the model once over the data and evaluates every SAE on those activations; one report
    /// per SAE, in order. <paramref name="loaded"/> receives each SAE's <see cref="SaeBenchRun"/>.</summary>
    public static IReadOnlyList<SparseProbingReport> Probe(IReadOnlyList<string> saePaths, string modelFolder, string datasetPath, LabelScoringOptions harvest,
        SparseProbingOptions options, AbsorptionOptions? absorption = null, TextProbingOptions? text = null, Action<IReadOnlyList<SaeBenchRun>>? loaded = null,
        ProbeArtifacts? artifacts = null)
    {
        if (text is not null && absorption is not null)
            throw new SaeSharpException("feature absorption is measured on token labels; it cannot be combined with mean pooling");
        return WithSaes(saePaths, modelFolder, loaded, artifacts, (saes, pm) =>
        {
            var tokenizer = Tokenizer.FromFolder(harvest.TokenizerPath ?? modelFolder);
            return text is null
                ? SparseProbing.Run(saes, pm.Model, pm.Hooks, tokenizer, datasetPath, harvest, options, absorption, saePaths, artifacts)
                : TextProbing.Run(saes, pm.Model, pm.Hooks, tokenizer, datasetPath, text, options, saePaths, artifacts);
        });
    }

    /// <summary><c>sae probe --pooling mean</c> over several datasets (<c>--dataset</c> repeated, <c>--saebench-defaults</c>):
    /// loads the SAEs and their model once, then <c>TextProbing.RunSuite</c> (every dataset read before the first model pass,
    /// each dataset's texts through the model once); one suite report per SAE, in order.</summary>
    public static IReadOnlyList<SparseProbingSuiteReport> ProbeSuite(IReadOnlyList<string> saePaths, string modelFolder, IReadOnlyList<SparseProbingDataset> datasets,
        TextProbingOptions text, SparseProbingOptions options, string? tokenizerPath = null, Action<IReadOnlyList<SaeBenchRun>>? loaded = null,
        ProbeArtifacts? artifacts = null) =>
        WithSaes(saePaths, modelFolder, loaded, artifacts, (saes, pm) =>
            TextProbing.RunSuite(saes, pm.Model, pm.Hooks, Tokenizer.FromFolder(tokenizerPath ?? modelFolder), datasets, text, options, names: saePaths,
                artifacts: artifacts));

    /// <summary>Loads the SAEs at <paramref name="saePaths"/> and, once, the model they share (<see cref="ModelForSae.Load(string, IReadOnlyList{Sae}, IReadOnlyList{string})"/>),
    /// checks they read one hook with one d_in, binds <paramref name="artifacts"/> to the model, tells <paramref name="loaded"/>
    /// their runs and calls <paramref name="run"/>.</summary>
    private static T WithSaes<T>(IReadOnlyList<string> saePaths, string modelFolder, Action<IReadOnlyList<SaeBenchRun>>? loaded, ProbeArtifacts? artifacts,
        Func<IReadOnlyList<Sae>, Models.ProcessedModel, T> run)
    {
        ArgumentNullException.ThrowIfNull(saePaths);
        if (saePaths.Count == 0) throw new SaeSharpException("sae probe: give at least one --sae");
        foreach (var g in saePaths.GroupBy(p => p).Where(g => g.Count() > 1))
            throw new SaeSharpException($"--sae {g.Key} is given {g.Count()} times; give each SAE once");
        var saes = new List<Sae>();
        try
        {
            foreach (var p in saePaths) saes.Add(Interop.SaeLoader.Load(p));
            using var pm = ModelForSae.Load(modelFolder, saes, saePaths);
            ProbeSaes.HookGroups(pm.Model, saes, saePaths);
            artifacts?.ForModel(modelFolder, pm);
            loaded?.Invoke([.. saes.Select((s, i) => SaeBenchRunOf(s.Cfg, saePaths[i], modelFolder))]);
            return run(saes, pm);
        }
        finally
        {
            foreach (var s in saes) s.Dispose();
        }
    }

    /// <summary><c>sae probe --pooling mean --tpp</c>: loads the SAE and its model, then <c>TargetedProbePerturbation.Run</c>
    /// on the texts of <paramref name="datasetPath"/>.</summary>
    public static TppReport Tpp(string saePath, string modelFolder, string datasetPath, TextProbingOptions text, SparseProbingOptions options,
        TppOptions tpp, string? tokenizerPath = null) =>
        TppSuite([saePath], modelFolder, [new TppDataset(datasetPath, datasetPath, text.TextField, text.LabelField, text.Classes)], text, options, tpp, tokenizerPath)[0].Runs[0].Report;

    /// <summary><c>sae probe --pooling mean --tpp</c> over several datasets and SAEs (all at one hook): loads the SAEs and
    /// their model once, then <c>TargetedProbePerturbation.RunSuite</c> (each dataset's texts through the model once);
    /// one suite report per SAE, in order.</summary>
    public static IReadOnlyList<TppSuiteReport> TppSuite(IReadOnlyList<string> saePaths, string modelFolder, IReadOnlyList<TppDataset> datasets, TextProbingOptions text,
        SparseProbingOptions options, TppOptions tpp, string? tokenizerPath = null, Action<IReadOnlyList<SaeBenchRun>>? loaded = null, ProbeArtifacts? artifacts = null) =>
        WithSaes(saePaths, modelFolder, loaded, artifacts, (saes, pm) =>
            TargetedProbePerturbation.RunSuite(saes, pm.Model, pm.Hooks, Tokenizer.FromFolder(tokenizerPath ?? modelFolder), datasets, text, options, tpp, names: saePaths,
                artifacts: artifacts));

    /// <summary><c>sae probe --pooling mean --scr</c>: loads the SAE and its model, then <c>SpuriousCorrelationRemoval.Run</c>
    /// on the texts of <paramref name="datasetPath"/>.</summary>
    public static ScrReport Scr(string saePath, string modelFolder, string datasetPath, TextProbingOptions text, ScrOptions scr, string? tokenizerPath = null) =>
        ScrSuite([saePath], modelFolder, [new ScrDataset(datasetPath, datasetPath, text.TextField, scr, [scr.Column1Vals])], text, tokenizerPath)[0].Runs[0].Report;

    /// <summary><c>sae probe --pooling mean --scr</c> over several datasets, value pairs and SAEs (all at one hook): loads the
    /// SAEs and their model once, then <c>SpuriousCorrelationRemoval.RunSuite</c>; one suite report per SAE, in order.</summary>
    public static IReadOnlyList<ScrSuiteReport> ScrSuite(IReadOnlyList<string> saePaths, string modelFolder, IReadOnlyList<ScrDataset> datasets, TextProbingOptions text,
        string? tokenizerPath = null, Action<IReadOnlyList<SaeBenchRun>>? loaded = null, ProbeArtifacts? artifacts = null) =>
        WithSaes(saePaths, modelFolder, loaded, artifacts, (saes, pm) =>
            SpuriousCorrelationRemoval.RunSuite(saes, pm.Model, pm.Hooks, Tokenizer.FromFolder(tokenizerPath ?? modelFolder), datasets, text, names: saePaths,
                artifacts: artifacts));

    /// <summary>What SAEBench's outputs record of a run of the SAE at <paramref name="saePath"/> (config <paramref name="cfg"/>)
    /// on the model at <paramref name="modelFolder"/> in the dtype the SAE records: the model's name, the dtype, the SAELens
    /// release and id of a release's SAE (else the path and "custom_sae", as SAEBench names an SAE of one's own) and the
    /// SAE's cfg.json.</summary>
    public static SaeBenchRun SaeBenchRunOf(SaeConfig cfg, string saePath, string modelFolder)
    {
        ArgumentNullException.ThrowIfNull(cfg);
        var (release, id) = ModelPipeline.SaeBenchIds(saePath);
        return new SaeBenchRun
        {
            ModelName = ModelPipeline.SaeBenchModelName(cfg, modelFolder),
            LlmDtype = SaeConfig.DtypeName(ModelForSae.RecordedDtype(cfg)),
            SaeLensReleaseId = release, SaeLensId = id,
            SaeCfgDict = System.Text.Json.Nodes.JsonNode.Parse(cfg.ToJson())!.AsObject(),
        };
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
