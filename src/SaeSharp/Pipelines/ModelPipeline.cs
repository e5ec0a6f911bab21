using SaeSharp.Activations;
using SaeSharp.Data;
using SaeSharp.Evaluation;
using SaeSharp.Hub;
using SaeSharp.Interop;
using SaeSharp.LanguageModels;
using SaeSharp.Models;
using SaeSharp.Saes;
using SaeSharp.Tokenizers;
using TorchSharp;
using static TorchSharp.torch;

namespace SaeSharp.Pipelines;

/// <summary>Library entry points behind the CLI commands that run a language model on text.</summary>
public static class ModelPipeline
{
    /// <summary>The local folder of a model named as <c>--model</c> takes it: <c>builtin</c> (the shipped model), a local
    /// folder, or a Hugging Face repo id whose config, weights and tokenizer are in the hub cache or downloaded,
    /// at <paramref name="revision"/> (a branch, tag or commit of a hub repo,
    /// e.g. Pythia's training checkpoint <c>step1000</c>, as TransformerLens's <c>checkpoint_value</c> loads it); a revision other than
    /// <c>main</c> of the builtin model or a local folder is an error naming both.</summary>
    public static string ResolveModelFolder(string model, string revision = "main")
    {
        ArgumentNullException.ThrowIfNull(revision);
        bool local = BuiltinModel.IsBuiltin(model) || Directory.Exists(model);
        if (local && revision != "main")
            throw new SaeSharpException($"revision '{revision}': '{model}' is {(BuiltinModel.IsBuiltin(model) ? "the builtin model" : "a local folder")}; a revision is of a Hugging Face model id");
        return BuiltinModel.IsBuiltin(model) ? BuiltinModel.Folder : HfHub.ResolveModel(model, ModelLoader.CheckSupported, revision);
    }

    /// <summary>Context windows of the dataset (SAELens tokenize-and-concatenate, or pre-tokenized rows); re-enumerable.
    /// <paramref name="disableConcatSequences"/> and <paramref name="sequenceSeparatorToken"/> (null: "bos") are SAELens's
    /// (<see cref="TokenWindows.TokenizeAndConcatenate"/>).</summary>
    public static IEnumerable<long[]> Windows(ITextTokenizer tokenizer, string datasetPath, int contextSize, bool prependBos, string? textField = null,
        bool disableConcatSequences = false, PretokenizeToken? sequenceSeparatorToken = null) =>
        TokenWindows.FromPath(datasetPath, tokenizer, contextSize, prependBos, textField, disableConcatSequences: disableConcatSequences,
            sequenceSeparatorToken: sequenceSeparatorToken);

    /// <summary>The windows a training source or cache reads for <paramref name="data"/>: its context size (default 128),
    /// prepend_bos, disable_concat_sequences and sequence_separator_token.</summary>
    private static IEnumerable<long[]> Windows(ITextTokenizer tokenizer, ModelDataOptions data) =>
        Windows(tokenizer, data.DatasetPath, data.ContextSize ?? 128, data.PrependBos ?? true, data.TextField, data.DisableConcatSequences ?? false,
            data.SequenceSeparatorToken);

    /// <summary>Contexts for a token budget: ⌈tokens / positions per window⌉ (<paramref name="positionsPerWindow"/>: the context
    /// size, or the positions SAELens's <c>seqpos_slice</c> keeps of it, its <c>training_context_size</c>).</summary>
    public static long? ContextsFor(long? tokens, int positionsPerWindow) =>
        tokens is long n ? (n <= 0 ? throw new SaeSharpException($"token budget must be positive, got {n}") : (n + positionsPerWindow - 1) / positionsPerWindow) : null;

    /// <summary>SAELens's <c>training_context_size</c>: the positions of a <paramref name="contextSize"/>-token window that
    /// <paramref name="slice"/> keeps (all when null); a slice that keeps none is an error naming it.</summary>
    public static int TrainingContextSize(int contextSize, SeqposSlice? slice) => slice?.Positions(contextSize).Length ?? contextSize;

    /// <summary>
    /// The context windows at the start of <paramref name="data"/>'s dataset that a run on a model holds out of training for
    /// its end-of-run evaluation (<c>sae train --model</c>: the training source skips them in every pass; metrics.json is
    /// computed on them): ⌈<paramref name="evalTokens"/> / positions kept per window⌉, at least one. Without
    /// <paramref name="evalTokens"/> it is the windows of <see cref="ActivationSplit.DefaultEvalRows"/> tokens, but at most a
    /// tenth of the dataset's windows (at least one), as <see cref="ActivationSplit.DefaultEvalRowsFor"/> holds out rows of
    /// activation files; <paramref name="note"/> then says when the tenth applied. A dataset of fewer than two windows, or
    /// an <paramref name="evalTokens"/> whose windows leave none to train on, is an error naming the numbers. Only the
    /// windows needed to decide are tokenized (at most ten times the default's); no model is run.
    /// </summary>
    public static int HeldOutContexts(ModelDataOptions data, long? evalTokens, out string? note)
    {
        ArgumentNullException.ThrowIfNull(data);
        note = null;
        if (evalTokens is <= 0) throw new SaeSharpException($"--eval-rows must be positive, got {evalTokens}");
        int ctx = data.ContextSize ?? 128;
        int positions = TrainingContextSize(ctx, data.SeqposSlice);
        long asked = ContextsFor(evalTokens ?? ActivationSplit.DefaultEvalRows, positions)!.Value;
        if (asked > int.MaxValue / 10) throw new SaeSharpException($"--eval-rows {evalTokens}: {asked} context windows are too many to hold out");
        var tokenizer = Tokenizer.FromFolder(data.TokenizerPath ?? data.ModelPath);
        string windowsOf = $"{positions} token{(positions == 1 ? "" : "s")}" + (positions == ctx ? "" : $" kept of {ctx}");
        long need = evalTokens is null ? 10 * asked : asked + 1;
        long count = Windows(tokenizer, data).Take((int)need).LongCount();
        if (count < 2)
            throw new SaeSharpException($"{data.DatasetPath} yields {count} context window{(count == 1 ? "" : "s")} of {ctx} tokens; a run on a model needs at least 2 " +
                                        "(one held out for the end-of-run evaluation, one to train on): use more data or a smaller --context-size");
        if (evalTokens is long given)
        {
            if (count <= asked)
                throw new SaeSharpException($"--eval-rows {given} holds out the first {asked} context window{(asked == 1 ? "" : "s")} ({windowsOf} each) of {data.DatasetPath} " +
                                            $"for the end-of-run evaluation, but it yields only {count}, leaving none to train on: give at most {(count - 1) * positions} " +
                                            "(or leave --eval-rows out to hold out a tenth of a small dataset), or use more data");
            return (int)asked;
        }
        if (count >= need) return (int)asked;
        int tenth = (int)Math.Max(1, count / 10);
        note = $"{data.DatasetPath} yields {count} context windows: the end-of-run evaluation holds out a tenth of them, the first {tenth} " +
               $"({tenth * positions} tokens), not the {asked} of the default --eval-rows {ActivationSplit.DefaultEvalRows}; training reads the other {count - tenth}";
        return tenth;
    }

    /// <summary>
    /// <c>sae train --model M --hook H --dataset D --tokens N</c>: loads the model (processed as <paramref name="data"/> says)
    /// and tokenizer and returns a shuffling, resumable source of the hook's activations. The source owns the model. Its
    /// shuffle buffer holds <paramref name="bufferContexts"/> context windows, else <see cref="ModelDataOptions.BufferContexts"/>.
    /// <paramref name="hookHeadIndex"/>: one head of an attention hook (SAELens's <c>hook_head_index</c>).
    /// <paramref name="heldOutContexts"/>: the dataset's first windows, never read (<see cref="HeldOutContexts"/>).
    /// </summary>
    public static ModelActivationSource OpenSource(ModelDataOptions data, string hook, HarvestMode mode = HarvestMode.Out,
        string? targetHook = null, int? bufferContexts = null, ulong seed = 0, int? hookHeadIndex = null, int heldOutContexts = 0)
    {
        ArgumentNullException.ThrowIfNull(data);
        var tokenizer = Tokenizer.FromFolder(data.TokenizerPath ?? data.ModelPath);
        // The model harvests on the device; the rows come back to the CPU, where SaeTrainer trains.
        var pm = LoadModel(data);
        try
        {
            int ctx = data.ContextSize ?? 128;
            var spec = HarvestSpec.Resolve(pm.Model.HookPoints, hook, mode, targetHook, hookHeadIndex);
            int positions = TrainingContextSize(ctx, data.SeqposSlice);
            _ = TokenWindows.SequenceSeparatorId(data.SequenceSeparatorToken, tokenizer); // a separator the tokenizer lacks: an error before any model run
            var src = new ModelActivationSource(pm.Model, spec, () => Windows(tokenizer, data),
                new ModelActivationSourceOptions
                {
                    ContextSize = ctx, BatchSizePrompts = data.BatchSizePrompts, BufferContexts = Math.Max(bufferContexts ?? data.BufferContexts, data.BatchSizePrompts),
                    ExcludeTokenIds = ExcludedTokens.Resolve(data.ExcludeSpecialTokens, data.ExcludeTokenIds, tokenizer, DataOrigin),
                    Seed = seed, MaxContexts = ContextsFor(data.Tokens, positions), ModelHooks = pm.Hooks, Epochs = data.Epochs,
                    MixingFraction = data.ActivationsMixingFraction ?? 0.5, SeqposSlice = data.SeqposSlice, HeldOutContexts = heldOutContexts,
                });
            src.Owned = pm;
            src.Metadata = TrainingPlan.MetadataOf(data, spec.InputHook, spec.TargetHook);
            src.Metadata.HookHeadIndex = spec.HeadIndex;
            return src;
        }
        catch
        {
            pm.Dispose();
            throw;
        }
    }

    /// <summary>
    /// <c>sae train --arch crosscoder --model M [--diff-model M2] --hooks A,B --dataset D</c>: a shuffling source of crosscoder
    /// rows [L·d] (<see cref="HarvestSpec.ForCrossCoder"/>): every hook of <paramref name="hooks"/> in <paramref name="data"/>'s
    /// model and then in each of <paramref name="otherModelPaths"/> (model diffing), all run on the same windows of the first
    /// model's tokenizer, which every other model's tokenizer must equal (<see cref="CheckSameTokenizer"/>). The rows go
    /// through the same buffer as an SAE's (<see cref="OpenSource"/>), a token's slots kept together. The source owns the models.
    /// <paramref name="heldOutContexts"/>: the dataset's first windows, never read (<see cref="HeldOutContexts"/>).
    /// </summary>
    public static ModelActivationSource OpenCrossCoderSource(ModelDataOptions data, IReadOnlyList<string> hooks, IReadOnlyList<string>? otherModelPaths = null,
        int? bufferContexts = null, ulong seed = 0, int heldOutContexts = 0)
    {
        ArgumentNullException.ThrowIfNull(data);
        ArgumentNullException.ThrowIfNull(hooks);
        var tokenizer = Tokenizer.FromFolder(data.TokenizerPath ?? data.ModelPath);
        foreach (var other in otherModelPaths ?? [])
            CheckSameTokenizer(tokenizer, ModelLoader.NameOf(data.ModelPath), Tokenizer.FromFolder(other), ModelLoader.NameOf(other));
        var models = new List<ProcessedModel>();
        try
        {
            foreach (var path in (IEnumerable<string>)[data.ModelPath, .. otherModelPaths ?? []])
                models.Add(LoadModel(data, path));
            int ctx = data.ContextSize ?? 128;
            var spec = HarvestSpec.ForCrossCoder(models.Select(m => m.Model.HookPoints).ToList(), hooks);
            int positions = TrainingContextSize(ctx, data.SeqposSlice);
            _ = TokenWindows.SequenceSeparatorId(data.SequenceSeparatorToken, tokenizer);
            var src = new ModelActivationSource(models[0].Model, spec, () => Windows(tokenizer, data),
                new ModelActivationSourceOptions
                {
                    ContextSize = ctx, BatchSizePrompts = data.BatchSizePrompts, BufferContexts = Math.Max(bufferContexts ?? data.BufferContexts, data.BatchSizePrompts),
                    ExcludeTokenIds = ExcludedTokens.Resolve(data.ExcludeSpecialTokens, data.ExcludeTokenIds, tokenizer, DataOrigin),
                    Seed = seed, MaxContexts = ContextsFor(data.Tokens, positions), ModelHooks = models[0].Hooks, Epochs = data.Epochs,
                    MixingFraction = data.ActivationsMixingFraction ?? 0.5, SeqposSlice = data.SeqposSlice, HeldOutContexts = heldOutContexts,
                    OtherModels = models.Skip(1).Select(m => (m.Model, (IReadOnlyList<(string Name, Func<Tensor, Tensor?> Fn)>?)m.Hooks)).ToList(),
                });
            src.Owned = new OwnedModels(models);
            return src;
        }
        catch
        {
            foreach (var m in models) m.Dispose();
            throw;
        }
    }

    private sealed class OwnedModels(List<ProcessedModel> models) : IDisposable
    {
        public void Dispose()
        {
            foreach (var m in models) m.Dispose();
        }
    }

    /// <summary>
    /// Model diffing runs two models on one tokenization: <paramref name="other"/> must have <paramref name="first"/>'s
    /// vocabulary size, BOS, EOS and PAD ids and the same token string at every id; otherwise a <see cref="SaeSharpException"/>
    /// names both models and the first difference.
    /// </summary>
    public static void CheckSameTokenizer(ITextTokenizer first, string firstName, ITextTokenizer other, string otherName)
    {
        ArgumentNullException.ThrowIfNull(first);
        ArgumentNullException.ThrowIfNull(other);
        string? diff = first.VocabSize != other.VocabSize ? $"vocabulary sizes {first.VocabSize} and {other.VocabSize}"
            : first.BosTokenId != other.BosTokenId ? $"BOS ids {Id(first.BosTokenId)} and {Id(other.BosTokenId)}"
            : first.EosTokenId != other.EosTokenId ? $"EOS ids {Id(first.EosTokenId)} and {Id(other.EosTokenId)}"
            : first.PadTokenId != other.PadTokenId ? $"PAD ids {Id(first.PadTokenId)} and {Id(other.PadTokenId)}"
            : null;
        static string Id(int? id) => id?.ToString(System.Globalization.CultureInfo.InvariantCulture) ?? "none";
        for (int id = 0; diff is null && id < first.VocabSize; id++)
            if (first.IdToToken(id) != other.IdToToken(id))
                diff = $"token {id}: '{first.IdToToken(id)}' and '{other.IdToToken(id)}'";
        if (diff is not null)
            throw new SaeSharpException($"{otherName}'s tokenizer differs from {firstName}'s ({diff}): a model-diffing crosscoder runs both models on the same token windows, so they need one tokenizer");
    }

    /// <summary>The model of <paramref name="data"/> (or the one at <paramref name="modelPath"/>), processed as
    /// <paramref name="data"/> says (<see cref="ModelDataOptions.Processing"/>), in its dtype (float32 unless given), on its device.</summary>
    private static ProcessedModel LoadModel(ModelDataOptions data, string? modelPath = null)
    {
        var pm = ModelForSae.Load(modelPath ?? data.ModelPath, data.Processing, data.ModelDtype ?? ScalarType.Float32);
        try
        {
            if (data.Device.type != DeviceType.CPU) pm.Model.to(data.Device);
            return pm;
        }
        catch
        {
            pm.Dispose();
            throw;
        }
    }

    /// <summary>The hooks a cache harvests, with <paramref name="checkDIn"/> given the input hook's width before any run.</summary>
    private static HarvestSpec CacheSpec(ProcessedModel pm, ModelDataOptions data, string hook, HarvestMode mode, string? targetHook, Action<int, string>? checkDIn)
    {
        var spec = HarvestSpec.Resolve(pm.Model.HookPoints, hook, mode, targetHook);
        checkDIn?.Invoke(pm.Model.HookWidth(spec.InputHook), $"the model {ModelLoader.NameOf(data.ModelPath)} at {spec.InputHook}");
        return spec;
    }

    /// <summary><c>sae cache --model M --hook H --dataset D --tokens N --out DIR</c>: writes (or resumes) an activation cache.
    /// <paramref name="checkDIn"/> gets the hook's width and a description of it before anything is harvested (a config's d_in).</summary>
    public static ActivationCacheManifest WriteCache(ModelDataOptions data, string hook, string outDir, HarvestMode mode = HarvestMode.Out,
        string? targetHook = null, int contextsPerShard = 64, ScalarType? dtype = null, Action<ActivationCacheManifest>? onShard = null,
        IProgress<WorkProgress>? progress = null, Action<int, string>? checkDIn = null)
    {
        ArgumentNullException.ThrowIfNull(data);
        var tokenizer = Tokenizer.FromFolder(data.TokenizerPath ?? data.ModelPath);
        using var pm = LoadModel(data);
        int ctx = data.ContextSize ?? 128;
        bool bos = data.PrependBos ?? true;
        var spec = CacheSpec(pm, data, hook, mode, targetHook, checkDIn);
        return ActivationCacheFolder.Write(outDir, pm.Model, spec, Windows(tokenizer, data),
            new ActivationCacheOptions
            {
                ContextSize = ctx, SeqposSlice = data.SeqposSlice, DisableConcatSequences = data.DisableConcatSequences ?? false,
                SequenceSeparatorToken = data.SequenceSeparatorToken ?? PretokenizeToken.Bos, BatchSizePrompts = data.BatchSizePrompts, ContextsPerShard = contextsPerShard, MaxTokens = data.Tokens,
                ExcludeTokenIds = ExcludedTokens.Resolve(data.ExcludeSpecialTokens, data.ExcludeTokenIds, tokenizer, DataOrigin),
                ExcludeTokenIdsListed = data.ExcludeTokenIds is not null,
                Dtype = dtype ?? ScalarType.Float32, DatasetPath = data.DatasetPath, PrependBos = bos,
                ModelFromPretrainedKwargs = data.Processing.ToKwargs(), ModelRevision = data.Revision, ModelHooks = pm.Hooks, Progress = progress,
            }, onShard);
    }

    /// <summary><c>sae cache --format saelens ... --out DIR</c>: writes SAELens's activation cache layout
    /// (<see cref="SaeLensActivationCache.Write"/>) to an empty or new folder; <paramref name="checkDIn"/> as in <see cref="WriteCache"/>.</summary>
    public static SaeLensActivationCache WriteSaeLensCache(ModelDataOptions data, string hook, string outDir, HarvestMode mode = HarvestMode.Out,
        string? targetHook = null, double bufferSizeGb = 2.0, ScalarType? dtype = null, IProgress<WorkProgress>? progress = null,
        Action<int, string>? checkDIn = null)
    {
        ArgumentNullException.ThrowIfNull(data);
        if (data.ExcludeSpecialTokens == true || data.ExcludeTokenIds is { Count: > 0 })
            throw new SaeSharpException("a SAELens activation cache stores every position of each window ([context_size, d_in]); exclude_special_tokens needs the SaeSharp cache format");
        if (data.DisableConcatSequences == true || (data.SequenceSeparatorToken is { } sep && sep != PretokenizeToken.Bos))
            throw new SaeSharpException("SAELens's CacheActivationsRunnerConfig has no disable_concat_sequences or sequence_separator_token (its windows are packed, BOS between documents); " +
                                        "--disable-concat-sequences and --sequence-separator-token need the SaeSharp cache format");
        var tokenizer = Tokenizer.FromFolder(data.TokenizerPath ?? data.ModelPath);
        using var pm = LoadModel(data);
        int ctx = data.ContextSize ?? 128;
        bool bos = data.PrependBos ?? true;
        var spec = CacheSpec(pm, data, hook, mode, targetHook, checkDIn);
        return SaeLensActivationCache.Write(outDir, pm.Model, spec, Windows(tokenizer, data.DatasetPath, ctx, bos, data.TextField),
            new SaeLensCacheOptions
            {
                ContextSize = ctx, BatchSizePrompts = data.BatchSizePrompts, MaxTokens = data.Tokens, BufferSizeGb = bufferSizeGb,
                Dtype = dtype ?? ScalarType.Float32, DatasetPath = data.DatasetPath, PrependBos = bos, SeqposSlice = data.SeqposSlice,
                ModelFromPretrainedKwargs = data.Processing.ToKwargs(), ModelRevision = data.Revision, ModelHooks = pm.Hooks, Progress = progress,
            });
    }

    /// <summary>
    /// <c>sae eval --sae DIR [--sae DIR2 ...] --model M --dataset D [--tokens N]</c>: loads the SAEs and the model (processed
    /// as the SAEs' <c>model_from_pretrained_kwargs</c> ask; they must agree), and evaluates them, one pass over the data
    /// for the SAEs that share a context size, prepend_bos, exclude_special_tokens, seqpos_slice, disable_concat_sequences and
    /// sequence_separator_token (each SAE's metadata unless <paramref name="data"/> sets them; results in the order of
    /// <paramref name="saePaths"/>). An SAE is spliced in, and measured, only at the positions its seqpos_slice keeps. Each SAE is evaluated at its
    /// cfg <c>hook_name</c> (as SAELens does); <paramref name="hook"/> gives the hook of an SAE without one, and naming a
    /// different hook from an SAE's <c>hook_name</c> is a <see cref="SaeSharpException"/> naming both.
    /// <paramref name="maxCosineSims"/> adds SAEBench's per-feature max cosine similarities (<see cref="DownstreamEvalOptions.MaxCosineSims"/>).
    /// </summary>
    public static IReadOnlyList<DownstreamMetrics> Evaluate(IReadOnlyList<string> saePaths, ModelDataOptions data, bool meanAblation = true,
        SaeLoadOptions? saeOptions = null, IProgress<WorkProgress>? progress = null, string? hook = null, bool maxCosineSims = false)
    {
        ArgumentNullException.ThrowIfNull(saePaths);
        ArgumentNullException.ThrowIfNull(data);
        if (saePaths.Count == 0) throw new SaeSharpException("give at least one SAE to evaluate");
        var saes = new List<Sae>();
        try
        {
            foreach (var p in saePaths) saes.Add(SaeLoader.Load(p, saeOptions));
            var processing = ModelForSae.SharedOptions(saes.Select(s => s.Cfg));
            var tokenizer = Tokenizer.FromFolder(data.TokenizerPath ?? data.ModelPath);
            using var pm = ModelForSae.Load(data.ModelPath, processing, data.ModelDtype ?? ModelForSae.SharedDtype(saes, saePaths));
            if (data.Device.type != DeviceType.CPU)
            {
                pm.Model.to(data.Device);
                foreach (var s in saes) s.to(data.Device);
            }
            string? at = hook is null ? null : pm.Model.HookPoints.Resolve(hook);
            for (int i = 0; i < saes.Count; i++)
                if (at is not null && saes[i].Cfg.Metadata.HookName is { } own && pm.Model.HookPoints.Resolve(own) != at)
                    throw new SaeSharpException($"hook '{hook}' is not the hook SAE {saePaths[i]} was trained at ('{own}', its cfg hook_name): "
                        + "an SAE is evaluated at its own hook; leave the hook out");
            // Each SAE on the windows it was trained on (its context_size, prepend_bos, exclude_special_tokens, seqpos_slice,
            // disable_concat_sequences, sequence_separator_token, unless given): SAEs that agree share one pass over the data.
            var results = new DownstreamMetrics[saes.Count];
            var groups = Enumerable.Range(0, saes.Count).GroupBy(i =>
            {
                var m = saes[i].Cfg.Metadata;
                var exclude = ExclusionOf(data, m, saePaths[i]);
                // A listed id beyond this tokenizer's vocabulary is an error naming the SAE (or the option) it came from.
                _ = ExcludedTokens.Resolve(exclude.Special, exclude.Ids, tokenizer, exclude.Origin);
                return new EvalWindows(data.ContextSize ?? m.ContextSize ?? 128, data.PrependBos ?? m.PrependBos,
                    exclude.Special, exclude.Ids is null ? null : string.Join(",", exclude.Ids), data.SeqposSlice ?? m.SeqposSlice(),
                    data.DisableConcatSequences ?? m.DisableConcatSequences() ?? false, data.SequenceSeparatorToken ?? m.SequenceSeparatorToken());
            });
            foreach (var g in groups)
            {
                var w = g.Key;
                var targets = g.Select(i => new DownstreamTarget(saes[i], Hook: at, Name: saePaths[i])).ToList();
                var metrics = DownstreamEvaluator.Evaluate(pm.Model, targets,
                    Windows(tokenizer, data.DatasetPath, w.Ctx, w.Bos, data.TextField, w.DisableConcat, w.Separator),
                    new DownstreamEvalOptions
                    {
                        BatchSizePrompts = data.BatchSizePrompts, MaxContexts = ContextsFor(data.Tokens, TrainingContextSize(w.Ctx, w.Slice)),
                        ExcludeTokenIds = ExcludedTokens.Resolve(w.Exclude, w.ExcludeIds is null ? null : w.ExcludeIds.Length == 0 ? [] : ExcludedTokens.Parse(w.ExcludeIds, "exclude_special_tokens"), tokenizer),
                        MeanAblation = meanAblation, ModelHooks = pm.Hooks, MaxCosineSims = maxCosineSims,
                        Progress = progress, SeqposSlice = w.Slice,
                    });
                foreach (var (i, m) in g.Zip(metrics)) results[i] = m;
            }
            return results;
        }
        finally
        {
            foreach (var s in saes) s.Dispose();
        }
    }

    /// <summary>SAEBench's <c>model_name</c> of a run of the SAE with config <paramref name="cfg"/> on the model at
    /// <paramref name="modelPath"/>: the SAE's <c>model_name</c>, else the model folder's name.</summary>
    public static string SaeBenchModelName(SaeConfig cfg, string modelPath)
    {
        ArgumentNullException.ThrowIfNull(cfg);
        return cfg.Metadata.ModelName ?? Path.GetFileName(Path.TrimEndingDirectorySeparator(modelPath));
    }

    /// <summary>SAEBench's <c>sae_lens_release_id</c> and <c>sae_lens_id</c> of the SAE given as <paramref name="spec"/>: a
    /// SAELens release's names, else the path and "custom_sae" (SAEBench's names of an SAE of one's own).</summary>
    public static (string Release, string Id) SaeBenchIds(string spec) =>
        SaeReleases.Lookup(spec) is { } found ? (found.Release.Release, found.Sae.Id) : (spec, "custom_sae");

    /// <summary>SAEBench's <c>llm_dtype</c> of such a run: <see cref="ModelDataOptions.ModelDtype"/>, else the dtype the SAE records.</summary>
    public static string SaeBenchLlmDtype(SaeConfig cfg, ModelDataOptions data)
    {
        ArgumentNullException.ThrowIfNull(data);
        return SaeConfig.DtypeName(data.ModelDtype ?? ModelForSae.RecordedDtype(cfg));
    }

    /// <summary>
    /// <c>sae eval --model ... --saebench-json</c>: each SAE by SAEBench's core procedure (<see cref="SaeBenchCoreEvaluator"/>)
    /// on windows of <paramref name="config"/>'s context size made as SAELens's <c>ActivationsStore.from_sae</c> makes them
    /// (the SAE's prepend_bos unless <paramref name="data"/> gives one; documents concatenated with BOS between them), with
    /// SAEBench's <c>ignore_tokens</c> = the tokenizer's BOS, EOS and pad. <paramref name="foldDecoderNorms"/>[i]: fold SAE i's
    /// decoder norms first (SAEBench does for a SAELens release's SAE; an SAE that refuses the fold is evaluated as loaded, as
    /// SAEBench goes on when SAELens refuses it). The weight-based feature metrics come with the max cosines.
    /// </summary>
    public static IReadOnlyList<SaeBenchCoreResult> EvaluateSaeBenchCore(IReadOnlyList<string> saePaths, IReadOnlyList<bool> foldDecoderNorms,
        ModelDataOptions data, SaeBenchCoreConfig config, SaeLoadOptions? saeOptions = null, IProgress<WorkProgress>? progress = null, string? hook = null)
    {
        ArgumentNullException.ThrowIfNull(saePaths);
        ArgumentNullException.ThrowIfNull(foldDecoderNorms);
        ArgumentNullException.ThrowIfNull(data);
        ArgumentNullException.ThrowIfNull(config);
        if (!config.ComputeFeaturewiseWeightBasedMetrics)
            throw new SaeSharpException("--saebench-config: compute_featurewise_weight_based_metrics false: SAEBench's core eval cannot write its output " +
                "without them (its convert_feature_metrics reads encoder_bias), so neither does SaeSharp");
        var saes = new List<Sae>();
        try
        {
            foreach (var p in saePaths) saes.Add(SaeLoader.Load(p, saeOptions));
            foreach (var s in saes) config.CheckRun(SaeBenchModelName(s.Cfg, data.ModelPath), SaeBenchLlmDtype(s.Cfg, data), data.DatasetPath);
            var tokenizer = Tokenizer.FromFolder(data.TokenizerPath ?? data.ModelPath);
            var ignore = new[] { tokenizer.BosTokenId, tokenizer.EosTokenId, tokenizer.PadTokenId }.OfType<int>().Select(i => (long)i).Distinct().ToArray();
            using var pm = ModelForSae.Load(data.ModelPath, ModelForSae.SharedOptions(saes.Select(s => s.Cfg)), data.ModelDtype ?? ModelForSae.SharedDtype(saes, saePaths));
            if (data.Device.type != DeviceType.CPU)
            {
                pm.Model.to(data.Device);
                foreach (var s in saes) s.to(data.Device);
            }
            var results = new List<SaeBenchCoreResult>();
            for (int i = 0; i < saes.Count; i++)
            {
                var sae = saes[i];
                bool folded = false;
                if (foldDecoderNorms[i])
                {
                    try { sae.FoldWDecNorm(); folded = true; }
                    catch (SaeSharpException) { /* SAEBench prints "Failed to fold W_dec norm" and evaluates the SAE as loaded */ }
                }
                bool bos = data.PrependBos ?? sae.Cfg.Metadata.PrependBos;
                results.Add(SaeBenchCoreEvaluator.Evaluate(pm.Model, sae,
                    () => Windows(tokenizer, data.DatasetPath, config.ContextSize, bos, data.TextField), config, ignore, hook, pm.Hooks, progress, folded));
            }
            return results;
        }
        finally
        {
            foreach (var s in saes) s.Dispose();
        }
    }

    /// <summary>
    /// <c>sae eval --model M --dataset D --sae CLT_FOLDER</c>: loads the whole cross-layer transcoder at
    /// <paramref name="cltPath"/> (a local folder or <c>hf:ORG/REPO[/PATH]</c>, downloaded with <paramref name="hub"/>'s
    /// endpoint and cache: <see cref="Interop.CrossLayerTranscoderLoader.Load(string, Hub.HfHubOptions?, TorchSharp.torch.ScalarType)"/>) and the model (processed as
    /// <paramref name="data"/> says; a CLT records no processing), and evaluates the replacement model
    /// (<see cref="DownstreamEvaluator.EvaluateReplacement"/>) on the dataset's windows (context size default 128,
    /// prepend_bos default true, excluded tokens as <paramref name="data"/> gives them). <paramref name="loading"/>: what stays in
    /// the CLT's files (null: circuit-tracer's defaults, lazy decoders, in the dtype <see cref="Interop.CrossLayerTranscoderLoader.ForModel"/>
    /// gives beside the model).
    /// </summary>
    public static CrossLayerTranscoderMetrics EvaluateReplacement(string cltPath, ModelDataOptions data, bool meanAblation = true,
        IProgress<WorkProgress>? progress = null, Hub.HfHubOptions? hub = null, Interop.CrossLayerTranscoderLoadOptions? loading = null)
    {
        ArgumentNullException.ThrowIfNull(cltPath);
        ArgumentNullException.ThrowIfNull(data);
        using var clt = Interop.CrossLayerTranscoderLoader.Load(cltPath,
            loading ?? new Interop.CrossLayerTranscoderLoadOptions { Dtype = Interop.CrossLayerTranscoderLoader.ForModel(data.ModelDtype) }, hub);
        var tokenizer = Tokenizer.FromFolder(data.TokenizerPath ?? data.ModelPath);
        using var pm = LoadModel(data);
        if (data.Device.type != DeviceType.CPU) clt.to(data.Device);
        int ctx = data.ContextSize ?? 128;
        var exclude = ExclusionOf(data, new SaeMetadata(), cltPath);
        return DownstreamEvaluator.EvaluateReplacement(pm.Model, clt,
            Windows(tokenizer, data.DatasetPath, ctx, data.PrependBos ?? true, data.TextField, data.DisableConcatSequences ?? false, data.SequenceSeparatorToken),
            new DownstreamEvalOptions
            {
                BatchSizePrompts = data.BatchSizePrompts, MaxContexts = ContextsFor(data.Tokens, TrainingContextSize(ctx, data.SeqposSlice)),
                ExcludeTokenIds = ExcludedTokens.Resolve(exclude.Special, exclude.Ids, tokenizer, exclude.Origin),
                MeanAblation = meanAblation, ModelHooks = pm.Hooks, Progress = progress, SeqposSlice = data.SeqposSlice,
            });
    }

    /// <summary>
    /// <c>sae eval --sae CROSSCODER --model M [--diff-model M2] --dataset D</c>: loads the crosscoder at <paramref name="ccPath"/>
    /// (the fork's format, <see cref="CrossCoderFormat"/>), the model and, for model diffing, <paramref name="diffModelPath"/>
    /// (same tokenizer: <see cref="CheckSameTokenizer"/>), both processed as <paramref name="data"/> says, and evaluates it
    /// inside them (<see cref="DownstreamEvaluator.EvaluateCrossCoder"/>) on the dataset's windows (context size default 128,
    /// prepend_bos default true). The slots' hooks are <paramref name="hooks"/>, else the first L / (number of models) hooks
    /// the crosscoder recorded when SaeSharp saved it (<see cref="CrossCoderSources.HookNames"/>); a crosscoder recorded as
    /// reading two models needs <paramref name="diffModelPath"/>. <paramref name="sources"/> gets what it recorded.
    /// <paramref name="countedRows"/>, when given, is called once with the loaded crosscoder (on the device) and returns what
    /// receives each batch's counted rows x [n, L, d] in the same pass (<see cref="DownstreamEvaluator.EvaluateCrossCoder"/>):
    /// <c>sae eval --latent-scaling</c> hands them to a <see cref="CrossCoderLatentScalingAccumulator"/> built on it.
    /// </summary>
    public static CrossCoderDownstreamMetrics EvaluateCrossCoder(string ccPath, ModelDataOptions data, string? diffModelPath, IReadOnlyList<string>? hooks,
        out CrossCoderSources sources, IProgress<WorkProgress>? progress = null, Func<CrossCoder, Action<Tensor>>? countedRows = null)
    {
        ArgumentNullException.ThrowIfNull(ccPath);
        ArgumentNullException.ThrowIfNull(data);
        using var cc = CrossCoderFormat.Load(ccPath, out sources);
        cc.eval();
        var recorded = sources;
        var slotHooks = CrossCoderHooks(cc, recorded, ccPath, diffModelPath is null ? 1 : 2, hooks);
        var tokenizer = Tokenizer.FromFolder(data.TokenizerPath ?? data.ModelPath);
        if (diffModelPath is not null)
            CheckSameTokenizer(tokenizer, ModelLoader.NameOf(data.ModelPath), Tokenizer.FromFolder(diffModelPath), ModelLoader.NameOf(diffModelPath));
        var models = new List<ProcessedModel>();
        try
        {
            foreach (var path in (IEnumerable<string>)[data.ModelPath, .. diffModelPath is null ? [] : new[] { diffModelPath }])
            {
                var pm = ModelForSae.Load(path, data.Processing, data.ModelDtype ?? ScalarType.Float32);
                models.Add(pm);
                if (data.Device.type != DeviceType.CPU) pm.Model.to(data.Device);
            }
            if (data.Device.type != DeviceType.CPU) cc.to(data.Device);
            int ctx = data.ContextSize ?? 128;
            var exclude = ExclusionOf(data, new SaeMetadata(), ccPath);
            var paths = new[] { data.ModelPath, diffModelPath };
            var onRows = countedRows?.Invoke(cc);
            return DownstreamEvaluator.EvaluateCrossCoder(cc,
                models.Select((m, i) => new CrossCoderModelRun(m.Model, m.Hooks, ModelLoader.NameOf(paths[i]!))).ToList(), slotHooks,
                Windows(tokenizer, data.DatasetPath, ctx, data.PrependBos ?? true, data.TextField, data.DisableConcatSequences ?? false, data.SequenceSeparatorToken),
                new DownstreamEvalOptions
                {
                    BatchSizePrompts = data.BatchSizePrompts, MaxContexts = ContextsFor(data.Tokens, TrainingContextSize(ctx, data.SeqposSlice)),
                    ExcludeTokenIds = ExcludedTokens.Resolve(exclude.Special, exclude.Ids, tokenizer, exclude.Origin),
                    Progress = progress, SeqposSlice = data.SeqposSlice,
                }, onRows);
        }
        finally
        {
            foreach (var m in models) m.Dispose();
        }
    }

    /// <summary>
    /// The hooks each of <paramref name="modelCount"/> models gives a crosscoder's slots (model-major, as
    /// <see cref="HarvestSpec.ForCrossCoder"/> harvests them): <paramref name="hooks"/> when given, else the first
    /// L / <paramref name="modelCount"/> of the hooks it recorded (<see cref="CrossCoderSources.HookNames"/>). A crosscoder
    /// recorded as reading two models (its hooks repeated) run with one model is an error asking for <c>--diff-model</c>, and
    /// one recorded as reading one model at several hooks run with two is an error.
    /// </summary>
    public static IReadOnlyList<string> CrossCoderHooks(CrossCoder cc, CrossCoderSources sources, string ccPath, int modelCount, IReadOnlyList<string>? hooks)
    {
        ArgumentNullException.ThrowIfNull(cc);
        ArgumentNullException.ThrowIfNull(sources);
        int L = cc.Cfg.NumLayers;
        int recordedModels = sources.HookNames is { Count: > 0 } rh && rh.Count == L ? L / rh.Distinct().Count()
            : sources.ModelNames is { } rm && rm.Distinct().Count() > 1 ? rm.Distinct().Count() : 1;
        if (modelCount == 1 && recordedModels > 1)
        {
            string names = sources.ModelNames is { } mn && mn.Count == L ? $" ({string.Join(", ", mn.Where((_, j) => j % (L / recordedModels) == 0))})" : "";
            throw new SaeSharpException($"{ccPath} reads {recordedModels} models{names}: give the second as --diff-model");
        }
        if (L % modelCount != 0)
            throw new SaeSharpException($"{ccPath} has {L} layer slots, which {modelCount} models cannot share");
        // Several models read the same hooks in turn: recorded hooks that differ between the models' slots mean the
        // crosscoder read one model at several hooks, and a second model would get the first model's hooks for them.
        if (hooks is null && modelCount > 1 && sources.HookNames is { } recorded && recorded.Count == L
            && Enumerable.Range(0, L).Any(j => recorded[j] != recorded[j % (L / modelCount)]))
            throw new SaeSharpException($"{ccPath} reads one model at {L} hooks ({string.Join(", ", recorded)}), not {modelCount} models at the same hooks: " +
                                        "--diff-model does not apply to it");
        return hooks ?? (sources.HookNames is { } h && h.Count == L ? h.Take(L / modelCount).ToList()
            : throw new SaeSharpException($"{ccPath} does not record the hooks of its layer slots: give them (--hook)"));
    }

    /// <summary>The windows an SAE is evaluated on (a group of SAEs that share them is evaluated in one pass).</summary>
    private sealed record EvalWindows(int Ctx, bool Bos, bool Exclude, string? ExcludeIds, SeqposSlice? Slice, bool DisableConcat, PretokenizeToken? Separator);

    /// <summary>SAELens's exclude_special_tokens for an SAE run on <paramref name="data"/>: the options' boolean or list
    /// when they give one, else the SAE's metadata (a boolean, a list, or absent: false).</summary>
    internal static (bool Special, long[]? Ids, string Origin) ExclusionOf(ModelDataOptions data, SaeMetadata meta, string saePath)
    {
        if (data.ExcludeTokenIds is { } ids) return (false, [.. ids], DataOrigin);
        if (data.ExcludeSpecialTokens is bool special) return (special, null, DataOrigin);
        return meta.ExcludeTokenIds is { } own ? (false, own, $"{saePath}: cfg.json metadata exclude_special_tokens") : (meta.ExcludeSpecialTokens ?? false, null, DataOrigin);
    }

    /// <summary>Where a list of <see cref="ModelDataOptions.ExcludeTokenIds"/> comes from, for errors.</summary>
    private const string DataOrigin = "exclude_special_tokens (--exclude-token-ids or the --config file)";
}
