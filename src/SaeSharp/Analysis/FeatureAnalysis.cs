using System.Diagnostics;
using SaeSharp.Activations;
using SaeSharp.Evaluation;
using SaeSharp.Interop;
using SaeSharp.Models;
using SaeSharp.Saes;
using SaeSharp.Tokenizers;
using TorchSharp;
using static TorchSharp.torch;

namespace SaeSharp.Analysis;

/// <summary>Settings of <see cref="FeatureAnalysis.Run(HookedTransformer, Sae, IEnumerable{long[]}, FeatureAnalysisOptions)"/>.</summary>
public sealed record FeatureAnalysisOptions
{
    /// <summary>Features to analyse, in output order (null: all). See <see cref="FeatureSelection.Parse"/>.</summary>
    public IReadOnlyList<int>? Features { get; init; }
    /// <summary>What the collector keeps per feature (top examples, their context, activation intervals).</summary>
    public FeatureStatisticsOptions Statistics { get; init; } = new();
    /// <summary>Context windows per model run.</summary>
    public int BatchSizePrompts { get; init; } = 8;
    /// <summary>Use at most this many windows; null: all.</summary>
    public long? MaxContexts { get; init; }
    /// <summary>Token ids whose positions are not counted (BOS etc. with <c>exclude_special_tokens</c>).</summary>
    public IReadOnlyCollection<long>? ExcludeTokenIds { get; init; }
    /// <summary>The positions of each window counted (SAELens's <c>seqpos_slice</c>); null: all.</summary>
    public Saes.SeqposSlice? SeqposSlice { get; init; }
    /// <summary>Hooks completing the model's weight processing (<see cref="ProcessedModel.Hooks"/>).</summary>
    public IReadOnlyList<(string Name, Func<Tensor, Tensor?> Fn)>? ModelHooks { get; init; }
    /// <summary>Hook the SAE reads; null: <c>cfg.metadata.hook_name</c>.</summary>
    public string? Hook { get; init; }
    /// <summary>Tokens listed at each end of a feature's logit effect W_dec[i]·W_U (top and bottom).</summary>
    public int TopLogits { get; init; } = 10;
    /// <summary>Features listed with the most similar decoder rows (cosine).</summary>
    public int SimilarFeatures { get; init; } = 5;
    /// <summary>Neurons listed with the most aligned output weights (MLP hooks only).</summary>
    public int AlignedNeurons { get; init; } = 5;
    /// <summary>Logit columns that are real tokens (the tokenizer's vocabulary size); null: all of W_U.</summary>
    public int? VocabSize { get; init; }
    /// <summary>Called after each model batch.</summary>
    public Action<FeatureProgress>? Progress { get; init; }
}

/// <summary>Progress of a feature pass: tokens so far, the expected total when known, and elapsed time.</summary>
public sealed record FeatureProgress(long Tokens, long? TotalTokens, TimeSpan Elapsed)
{
    /// <summary>Throughput so far (0 before any time has elapsed).</summary>
    public double TokensPerSecond => Elapsed.TotalSeconds > 0 ? Tokens / Elapsed.TotalSeconds : 0;
}

/// <summary>Where a feature report's activations came from (written to <c>summary.json</c>).</summary>
public sealed record FeatureSource
{
    /// <summary>The SAE's path or release id.</summary>
    public string? Sae { get; init; }
    /// <summary>The SAE's architecture name as in its cfg.json (<c>standard</c>, <c>topk</c>, <c>jumprelu</c>, ...).</summary>
    public string? Architecture { get; init; }
    /// <summary>Number of SAE features (SAELens <c>d_sae</c>).</summary>
    public int DSae { get; init; }
    /// <summary>The model's name or folder.</summary>
    public string? Model { get; init; }
    /// <summary>TransformerLens hook name the SAE reads.</summary>
    public string? Hook { get; init; }
    /// <summary>The head of <see cref="Hook"/> an SAE of one head reads (SAELens <c>hook_head_index</c>), else null.</summary>
    public int? HookHeadIndex { get; init; }
    /// <summary>The dataset the context windows came from.</summary>
    public string? Dataset { get; init; }
    /// <summary>Tokens per context window.</summary>
    public int ContextSize { get; init; }
    /// <summary>Whether the windows start with BOS.</summary>
    public bool PrependBos { get; init; }
    /// <summary>SAELens / Neuronpedia id of the SAE (<c>neuronpedia_id</c> in its cfg), for links to neuronpedia.org.</summary>
    public string? NeuronpediaId { get; init; }
    /// <summary>Whether the SAE's decoder norms were folded before the pass (<c>sae features --fold-w-dec-norm</c>, SAELens's
    /// <c>fold_W_dec_norm</c>): activations are then ‖W_dec[i]‖ times the SAE's own, as SAEDashboard's runners report them.</summary>
    public bool FoldedWDecNorm { get; init; }

    /// <summary>Throws when this report is recorded as another SAE's than <paramref name="cfg"/> at <paramref name="hook"/>:
    /// another d_sae, hook or head (what is not recorded is not compared). <paramref name="use"/> says what the report's
    /// numbers would have been used for ("its densities", "its max activations").</summary>
    public void RefuseOtherSae(SaeConfig cfg, string hook, string use)
    {
        ArgumentNullException.ThrowIfNull(cfg);
        int? head = cfg.Metadata.HookHeadIndex;
        if ((DSae != 0 && DSae != cfg.DSae) || (Hook is { } h && h != hook) || (HookHeadIndex is int statsHead && head is int && statsHead != head))
            throw new SaeSharpException($"the feature report of {Sae ?? "an SAE"} (d_sae {DSae}, hook {SaeMetadata.SiteOf(Hook ?? "?", HookHeadIndex)}) " +
                $"is not of this SAE (d_sae {cfg.DSae}, hook {cfg.Metadata.Site(hook)}): {use} are another SAE's; give a `sae features` folder of this SAE");
    }
}

/// <summary>A model a crosscoder's slots read in <c>sae features</c>, with the hooks its processing adds to every run (null: none).</summary>
/// <param name="Model">The model.</param>
/// <param name="Hooks">Its processing hooks (<see cref="ProcessedModel.Hooks"/>).</param>
public sealed record CrossCoderSlotModel(HookedTransformer Model, IReadOnlyList<(string Name, Func<Tensor, Tensor?> Fn)>? Hooks);

/// <summary>
/// <c>sae features</c>: one streaming pass of a model over context windows that feeds the SAE's feature activations to a
/// <see cref="FeatureStatisticsCollector"/>, followed by the weight-based effects of <see cref="FeatureWeights"/>.
/// </summary>
public static class FeatureAnalysis
{
    /// <summary>Runs <paramref name="model"/> on <paramref name="windows"/> (equal lengths) and collects the statistics of the
    /// SAE's features at its hook. The report's <see cref="FeatureReport.TokenStrings"/> are left empty (no tokenizer here).</summary>
    public static FeatureReport Run(HookedTransformer model, Sae sae, IEnumerable<long[]> windows, FeatureAnalysisOptions options)
    {
        ArgumentNullException.ThrowIfNull(model);
        ArgumentNullException.ThrowIfNull(sae);
        ArgumentNullException.ThrowIfNull(windows);
        ArgumentNullException.ThrowIfNull(options);
        if (options.BatchSizePrompts <= 0) throw new SaeSharpException($"batch size in prompts must be positive, got {options.BatchSizePrompts}");
        string hook = model.HookPoints.Resolve(sae.Cfg.Metadata.HookOr(options.Hook));
        var encoder = new SaeEncoder(model, sae, hook, options.ModelHooks);
        var collector = new FeatureStatisticsCollector(sae.Cfg.DSae, options.Features, options.Statistics);
        var exclude = options.ExcludeTokenIds ?? [];
        int ctx = CollectPass(windows, options, [collector], sae.Cfg.DSae, group =>
        {
            var (acts, _, tokens, rows) = encoder.EncodeWithInput(group);          // [b, s, d_sae], [b, s], [b, s]
            return [(acts, ModelActivationHarvester.KeepMask(tokens, exclude, options.SeqposSlice).logical_and(rows))];
        });
        var stats = collector.Result();
        FeatureWeights.Fill(stats, model, sae, hook, options.TopLogits, options.SimilarFeatures, options.AlignedNeurons, options.VocabSize);
        FeatureWeights.FillNeuronAlignment(stats, sae);
        return new FeatureReport
        {
            Source = new FeatureSource
            {
                Architecture = sae.Cfg.Architecture, DSae = sae.Cfg.DSae, Model = model.Config.ModelName, Hook = hook,
                HookHeadIndex = sae.Cfg.Metadata.HookHeadIndex, ContextSize = ctx, PrependBos = sae.Cfg.Metadata.PrependBos, NeuronpediaId = NeuronpediaId(sae.Cfg),
            },
            Tokens = collector.Tokens,
            Windows = collector.Windows,
            Features = stats,
        };
    }

    /// <summary>The folder of layer <paramref name="layer"/>'s report in a whole CLT's <c>sae features</c> output:
    /// <c>layer_N</c> (SAELens's per-layer CLT entries are <c>layer_N</c>; circuit-tracer numbers its files the same).</summary>
    public static string CrossLayerFolder(int layer) => $"layer_{layer}";

    /// <summary>
    /// <c>sae features</c> of a whole cross-layer transcoder: one pass of <paramref name="model"/> over
    /// <paramref name="windows"/> that caches every chosen layer's input hook (<see cref="CrossLayerTranscoder.InputHook"/>),
    /// encodes it with that layer's encoder (<see cref="CrossLayerTranscoder.EncodeLayer"/>, as the replacement model does)
    /// and feeds one <see cref="FeatureStatisticsCollector"/> per layer; then each layer's weight-based tables from
    /// <see cref="CrossLayerTranscoder.LayerTranscoder"/> (its decoders summed: the logit effect Σ_j W_dec[l][i, j]·W_U is
    /// the direct effect of everything the feature writes; similar features and neuron alignment on that summed row; aligned
    /// MLP neurons of its own layer). One ordinary report per layer, in <paramref name="layers"/>' order (null: every
    /// layer); <see cref="FeatureAnalysisOptions.Features"/> applies to each. <see cref="FeatureAnalysisOptions.Hook"/> must
    /// be null: the CLT names its hooks.
    /// </summary>
    public static IReadOnlyList<(int Layer, FeatureReport Report)> Run(HookedTransformer model, CrossLayerTranscoder clt, IEnumerable<long[]> windows,
        FeatureAnalysisOptions options, IReadOnlyList<int>? layers = null)
    {
        ArgumentNullException.ThrowIfNull(model);
        ArgumentNullException.ThrowIfNull(clt);
        ArgumentNullException.ThrowIfNull(windows);
        ArgumentNullException.ThrowIfNull(options);
        if (options.BatchSizePrompts <= 0) throw new SaeSharpException($"batch size in prompts must be positive, got {options.BatchSizePrompts}");
        if (options.Hook is not null) throw new SaeSharpException($"hook '{options.Hook}': a cross-layer transcoder reads the hooks its files name");
        var (inputs, outputs) = clt.Hooks(model);
        var chosen = layers ?? Enumerable.Range(0, clt.Cfg.NLayers).ToList();
        if (chosen.Count == 0) throw new SaeSharpException("no layers of the cross-layer transcoder chosen");
        foreach (int l in chosen)
            if (l < 0 || l >= clt.Cfg.NLayers) throw new SaeSharpException($"layer {l}: the cross-layer transcoder has layers 0..{clt.Cfg.NLayers - 1}");
        if (chosen.Distinct().Count() != chosen.Count) throw new SaeSharpException($"layers {string.Join(",", chosen)}: a layer is listed twice");
        var collectors = chosen.Select(_ => new FeatureStatisticsCollector(clt.Cfg.DTranscoder, options.Features, options.Statistics)).ToList();
        var hooks = chosen.Select(l => inputs[l]).ToList();
        int? stop = model.HookPoints.StopAtLayerFor(hooks);
        var exclude = options.ExcludeTokenIds ?? [];
        int ctx = CollectPass(windows, options, collectors, clt.Cfg.DTranscoder, group =>
        {
            var tokens = WindowTensor(group);
            var (logits, cache) = model.Run(tokens, new RunOptions { StopAtLayer = stop, Hooks = options.ModelHooks, CacheNames = hooks });
            logits?.Dispose();
            using (cache!)
            {
                var keep = ModelActivationHarvester.KeepMask(tokens, exclude, options.SeqposSlice);
                return chosen.Select((l, i) => (clt.EncodeLayer(cache![hooks[i]], l), keep)).ToList();   // [b, s, d_transcoder] each
            }
        });
        var reports = new List<(int, FeatureReport)>();
        for (int i = 0; i < chosen.Count; i++)
        {
            int l = chosen[i];
            var stats = collectors[i].Result();
            using (var sae = clt.LayerTranscoder(l))
            {
                // The decoder writes at the output hook (an MLP output: logit effects through the residual stream, aligned
                // neurons of that MLP).
                FeatureWeights.Fill(stats, model, sae, outputs[l], options.TopLogits, options.SimilarFeatures, options.AlignedNeurons, options.VocabSize);
                FeatureWeights.FillNeuronAlignment(stats, sae);
            }
            reports.Add((l, new FeatureReport
            {
                Source = new FeatureSource
                {
                    Architecture = CrossLayerArchitecture, DSae = clt.Cfg.DTranscoder, Model = model.Config.ModelName, Hook = inputs[l],
                    ContextSize = ctx,
                },
                Tokens = collectors[i].Tokens,
                Windows = collectors[i].Windows,
                Features = stats,
            }));
        }
        return reports;
    }

    /// <summary>
    /// <c>sae features</c> of a crosscoder over L hooks of one model: one pass of <paramref name="model"/> over
    /// <paramref name="windows"/> caching <paramref name="hooks"/> (the crosscoder's slots, in order), the reported latents
    /// f·c (<see cref="CrossCoder.GetActivations"/>, the fork's <c>get_activations</c>) of each position collected as an SAE's
    /// features are. The weight-based tables (logit effects, similar features, aligned neurons) come from the last slot's
    /// decoder rows W_dec[L−1] at the last hook (<see cref="LastSlotSae"/>): what the latent writes there, not the sum over
    /// slots. One ordinary report, whose hook is the last slot's.
    /// </summary>
    public static FeatureReport Run(HookedTransformer model, CrossCoder cc, IReadOnlyList<string> hooks, IEnumerable<long[]> windows, FeatureAnalysisOptions options)
    {
        ArgumentNullException.ThrowIfNull(model);
        ArgumentNullException.ThrowIfNull(hooks);
        ArgumentNullException.ThrowIfNull(options);
        return Run([new CrossCoderSlotModel(model, options.ModelHooks)], cc, hooks, [.. hooks.Select(_ => 0)], windows, options);
    }

    /// <summary>
    /// <c>sae features</c> of a crosscoder whose slots read several models (model diffing: slot 0 the base model, slot 1 the
    /// chat model, at one hook): every model of <paramref name="models"/> runs on the same <paramref name="windows"/> (one
    /// tokenization), slot l reads <paramref name="hooks"/>[l] of <paramref name="models"/>[<paramref name="slotModels"/>[l]],
    /// and the latents f·c of each position are collected as for one model. The weight-based tables come from the last slot's
    /// decoder rows through the last slot's model (its unembedding for the logit effects). Each feature also records the last
    /// slot's relative decoder norm and Δnorm (<see cref="CrossCoderDecoderNorms"/>). The report's model is the last slot's.
    /// </summary>
    public static FeatureReport Run(IReadOnlyList<CrossCoderSlotModel> models, CrossCoder cc, IReadOnlyList<string> hooks, IReadOnlyList<int> slotModels,
        IEnumerable<long[]> windows, FeatureAnalysisOptions options)
    {
        ArgumentNullException.ThrowIfNull(cc);
        cc.CheckReconstructsInput("crosscoder features");
        ArgumentNullException.ThrowIfNull(models);
        ArgumentNullException.ThrowIfNull(cc);
        ArgumentNullException.ThrowIfNull(hooks);
        ArgumentNullException.ThrowIfNull(slotModels);
        ArgumentNullException.ThrowIfNull(windows);
        ArgumentNullException.ThrowIfNull(options);
        if (options.BatchSizePrompts <= 0) throw new SaeSharpException($"batch size in prompts must be positive, got {options.BatchSizePrompts}");
        if (hooks.Count != cc.Cfg.NumLayers)
            throw new SaeSharpException($"the crosscoder has {cc.Cfg.NumLayers} layer slots but {hooks.Count} hooks were named");
        if (slotModels.Count != hooks.Count || slotModels.Any(m => m < 0 || m >= models.Count))
            throw new SaeSharpException($"each of the crosscoder's {hooks.Count} slots needs one of the {models.Count} models");
        var names = hooks.Select((h, l) => models[slotModels[l]].Model.HookPoints.Resolve(h)).ToList();
        for (int l = 0; l < names.Count; l++)
        {
            var m = models[slotModels[l]].Model;
            if (m.HookWidth(names[l]) != cc.Cfg.ActivationDim)
                throw new SaeSharpException($"{names[l]} of {m.Config.ModelName} has width {m.HookWidth(names[l])} but the crosscoder reads activation_dim {cc.Cfg.ActivationDim}");
        }
        var collector = new FeatureStatisticsCollector(cc.Cfg.DictSize, options.Features, options.Statistics);
        var exclude = options.ExcludeTokenIds ?? [];
        int ctx = CollectPass(windows, options, [collector], cc.Cfg.DictSize, group =>
        {
            var tokens = WindowTensor(group);
            long b = tokens.shape[0], s = tokens.shape[1];
            var slots = new Tensor[names.Count];
            for (int mi = 0; mi < models.Count; mi++)
            {
                var own = Enumerable.Range(0, names.Count).Where(l => slotModels[l] == mi).ToList();
                if (own.Count == 0) continue;
                var model = models[mi].Model;
                var cacheNames = own.Select(l => names[l]).Distinct().ToList();
                var (logits, cache) = model.Run(tokens, new RunOptions { StopAtLayer = model.HookPoints.StopAtLayerFor(cacheNames), Hooks = models[mi].Hooks, CacheNames = cacheNames });
                logits?.Dispose();
                using (cache!)
                    foreach (var l in own) slots[l] = cache![names[l]].reshape(b * s, cc.Cfg.ActivationDim).to(ScalarType.Float32, copy: true);
            }
            var x = stack(slots, 1); // [b·s, L, d]
            var f = cc.GetActivations(x).view(b, s, cc.Cfg.DictSize);
            return [(f, ModelActivationHarvester.KeepMask(tokens, exclude, options.SeqposSlice))];
        });
        var stats = collector.Result();
        var lastModel = models[slotModels[^1]].Model;
        using (var sae = LastSlotSae(cc, names[^1], lastModel.Config.ModelName))
        {
            FeatureWeights.Fill(stats, lastModel, sae, names[^1], options.TopLogits, options.SimilarFeatures, options.AlignedNeurons, options.VocabSize);
            FeatureWeights.FillNeuronAlignment(stats, sae);
        }
        var norms = CrossCoderDecoderNorms.Of(cc);
        int last = cc.Cfg.NumLayers - 1;
        foreach (var st in stats)
            if (!double.IsNaN(norms.RelativeNorm[last][st.Feature]))
            {
                st.RelativeDecoderNorm = norms.RelativeNorm[last][st.Feature];
                st.DeltaNorm = norms.DeltaNorm[last][st.Feature];
            }
        return new FeatureReport
        {
            Source = new FeatureSource
            {
                Architecture = cc.Cfg.Architecture, DSae = cc.Cfg.DictSize, Model = lastModel.Config.ModelName, Hook = names[^1], ContextSize = ctx,
            },
            Tokens = collector.Tokens,
            Windows = collector.Windows,
            Features = stats,
        };
    }

    /// <summary>The crosscoder's last slot as a standard SAE at <paramref name="hook"/> (W_enc = encoder[L−1], b_enc,
    /// W_dec = decoder[L−1], b_dec = decoder bias[L−1]), for the weight-based tables of <c>sae features</c>: its decoder rows
    /// are what each latent writes into the last slot.</summary>
    public static Sae LastSlotSae(CrossCoder cc, string hook, string? modelName = null)
    {
        ArgumentNullException.ThrowIfNull(cc);
        return SlotSae(cc, cc.Cfg.NumLayers - 1, hook, modelName);
    }

    /// <summary>Slot <paramref name="last"/> of the crosscoder as a standard SAE at <paramref name="hook"/> (as
    /// <see cref="LastSlotSae"/> makes the last): its decoder rows are what each latent writes into that slot (raw rows,
    /// in the normalised scale when the checkpoint has a normaliser).</summary>
    public static Sae SlotSae(CrossCoder cc, int last, string hook, string? modelName = null)
    {
        ArgumentNullException.ThrowIfNull(cc);
        if (last < 0 || last >= cc.Cfg.NumLayers) throw new SaeSharpException($"crosscoder slot {last}: give 0..{cc.Cfg.NumLayers - 1}");
        var cfg = new SaeConfig
        {
            Architecture = SaeArchitectures.Standard, DIn = cc.Cfg.ActivationDim, DSae = cc.Cfg.DictSize, ApplyBDecToInput = false,
            Metadata = new SaeMetadata { ModelName = modelName, HookName = hook },
        };
        using var scope = NewDisposeScope();
        using var _ = no_grad();
        // With encoder_layers the encoder row of the last slot is where that slot sits in the list (zero if it is not read).
        int encRow = cc.Cfg.EncoderLayers is { } el ? el.ToList().IndexOf(last) : last;
        var wEnc = encRow >= 0 ? cc.Encoder.Weight[encRow].to(ScalarType.Float32) : zeros(cc.Cfg.ActivationDim, cc.Cfg.DictSize);
        var weights = new Dictionary<string, Tensor>(StringComparer.Ordinal)
        {
            ["W_enc"] = wEnc, ["b_enc"] = cc.Encoder.Bias.to(ScalarType.Float32),
            ["W_dec"] = cc.Decoder.Weight[last].to(ScalarType.Float32), ["b_dec"] = cc.Decoder.Bias[last].to(ScalarType.Float32),
        };
        const string where = "crosscoder last slot";
        return SaeWeights.Create(cfg, weights, where, where);
    }

    /// <summary>The <see cref="FeatureSource.Architecture"/> of a whole CLT's per-layer reports.</summary>
    public const string CrossLayerArchitecture = "cross_layer_transcoder";

    /// <summary>Equal-length token windows as one [windows, positions] tensor.</summary>
    internal static Tensor WindowTensor(IReadOnlyList<long[]> windows)
    {
        int b = windows.Count, s = windows[0].Length;
        var flat = new long[(long)b * s];
        for (int i = 0; i < b; i++) Array.Copy(windows[i], 0, flat, (long)i * s, s);
        return tensor(flat).view(b, s);
    }

    /// <summary>The cfg's <c>neuronpedia_id</c> (top level or in metadata), or null.</summary>
    public static string? NeuronpediaId(SaeConfig cfg)
    {
        ArgumentNullException.ThrowIfNull(cfg);
        foreach (var extra in new[] { cfg.Extra, cfg.Metadata.Extra })
            if (extra?.TryGetValue("neuronpedia_id", out var v) == true && v.ValueKind == System.Text.Json.JsonValueKind.String)
                return v.GetString();
        return null;
    }

    /// <summary>The pass every form of <c>sae features</c> shares: <paramref name="windows"/> in groups of
    /// <see cref="FeatureAnalysisOptions.BatchSizePrompts"/> (at most <see cref="FeatureAnalysisOptions.MaxContexts"/>),
    /// without gradients and under one dispose scope per group; <paramref name="encode"/> gives each group's activations
    /// [b, s, <paramref name="dSae"/>] and kept positions [b, s], one pair per collector, whose chosen features are added.
    /// Returns the context size; an empty dataset is an error.</summary>
    private static int CollectPass(IEnumerable<long[]> windows, FeatureAnalysisOptions options, List<FeatureStatisticsCollector> collectors,
        int dSae, Func<List<long[]>, IReadOnlyList<(Tensor Acts, Tensor Keep)>> encode)
    {
        var features = collectors[0].Features;
        bool all = features.Count == dSae && IsIdentity(features);
        using var featureIndex = tensor(features.Select(i => (long)i).ToArray());
        var clock = Stopwatch.StartNew();
        int ctx = 0;
        long? total = null;
        using var _ = no_grad();
        foreach (var group in Groups(windows, options.BatchSizePrompts, options.MaxContexts))
        {
            using var scope = NewDisposeScope();
            if (ctx == 0)
            {
                ctx = group[0].Length;
                total = options.MaxContexts * ctx;
            }
            var encoded = encode(group);
            for (int i = 0; i < collectors.Count; i++)
                collectors[i].Add(group, all ? encoded[i].Acts : encoded[i].Acts.index_select(2, featureIndex), encoded[i].Keep);
            options.Progress?.Invoke(new FeatureProgress(collectors[0].Tokens, total, clock.Elapsed));
        }
        if (collectors[0].Windows == 0) throw new SaeSharpException("the dataset gave no context windows (is it shorter than one context?)");
        return ctx;
    }

    private static bool IsIdentity(IReadOnlyList<int> xs)
    {
        for (int i = 0; i < xs.Count; i++) if (xs[i] != i) return false;
        return true;
    }

    private static IEnumerable<List<long[]>> Groups(IEnumerable<long[]> windows, int size, long? max)
    {
        var group = new List<long[]>(size);
        long n = 0;
        foreach (var w in windows)
        {
            if (max is long m && n >= m) break;
            if (group.Count > 0 && w.Length != group[0].Length)
                throw new SaeSharpException($"context window {n} has {w.Length} tokens, expected {group[0].Length}");
            group.Add(w);
            n++;
            if (group.Count == size)
            {
                yield return group;
                group = new List<long[]>(size);
            }
        }
        if (group.Count > 0) yield return group;
    }
}

/// <summary>
/// Runs a model on token windows and encodes the SAE's hook activation: [windows, pos, d_sae] feature activations.
/// Handles <c>hook_head_index</c> (one attention head of <c>attn.hook_z</c>).
/// </summary>
internal sealed class SaeEncoder
{
    private readonly HookedTransformer _model;
    private readonly Sae _sae;
    private readonly IReadOnlyList<(string Name, Func<Tensor, Tensor?> Fn)>? _hooks;
    private readonly int? _stop;

    public SaeEncoder(HookedTransformer model, Sae sae, string hook, IReadOnlyList<(string Name, Func<Tensor, Tensor?> Fn)>? modelHooks)
    {
        _model = model;
        _sae = sae;
        Hook = model.CheckSaeFits(sae, hook);
        _hooks = modelHooks;
        _stop = model.HookPoints.StopAtLayerFor([Hook]);
    }

    public string Hook { get; }

    /// <summary>Feature activations [b, s, d_sae] and the hook activation [b, s, d] of equal-length windows, their tokens
    /// [b, s], and [b, s] bool the positions that are rows of the hook: at an expert's hook the tokens routed to the expert
    /// (<see cref="ModelActivationHarvester.KeepRouted"/>; the others hold zeros), elsewhere every position.</summary>
    public (Tensor Feats, Tensor Input, Tensor Tokens, Tensor Rows) EncodeWithInput(IReadOnlyList<long[]> windows)
    {
        int b = windows.Count, s = windows[0].Length;
        var tokens = FeatureAnalysis.WindowTensor(windows);
        var (logits, cache) = _model.Run(tokens, new RunOptions
        {
            StopAtLayer = _stop, Hooks = _hooks, CacheNames = [Hook, .. ModelActivationHarvester.RoutingHooks(_model.HookPoints, [Hook])],
        });
        logits?.Dispose();
        using (cache!)
        {
            var act = cache![Hook];
            if (act.dim() == 4 && _sae.Cfg.Metadata.HookHeadIndex is int h) act = act.select(2, h);
            var x = ModelActivationHarvester.Rows(act, b, s);
            if (x.shape[1] != _sae.Cfg.DIn)
                throw new SaeSharpException($"the SAE has d_in = {_sae.Cfg.DIn} but hook '{Hook}' gives {x.shape[1]} values per token");
            var rows = ModelActivationHarvester.KeepRouted(ones_like(tokens, ScalarType.Bool), _model.HookPoints, [Hook], cache);
            // Encoded as the sequences they are (a temporal SAE reads each token's earlier tokens, at an expert's hook the
            // earlier tokens routed to the expert; the others encode per row).
            Tensor f;
            if (_sae is TemporalSae t)
            {
                var (novel, pred) = t.EncodeWithPredictions(x.view(b, s, -1), rows);
                pred.Dispose();
                f = novel;
            }
            else f = _sae.Encode(x.view(b, s, -1));
            return (f.view(b, s, -1), x.view(b, s, -1), tokens, rows);
        }
    }
}
