using SaeSharp.Activations;
using SaeSharp.Hooks;
using SaeSharp.Kernels;
using SaeSharp.Models;
using SaeSharp.Saes;
using TorchSharp;
using static TorchSharp.torch;

namespace SaeSharp.Evaluation;

/// <summary>Settings of <see cref="DownstreamEvaluator.Evaluate"/>.</summary>
public sealed record DownstreamEvalOptions
{
    /// <summary>Context windows per model run (SAELens <c>eval_batch_size_prompts</c>).</summary>
    public int BatchSizePrompts { get; init; } = 8;
    /// <summary>Evaluate at most this many windows (a token budget N is ⌈N / context length⌉ windows); null: all given.</summary>
    public long? MaxContexts { get; init; }
    /// <summary>Token ids whose positions are left out (SAELens <c>exclude_special_tokens</c> / <c>ignore_tokens</c>):
    /// the SAE is not spliced there (the zero and mean ablations still replace them, as SAELens's) and they do not count in
    /// any metric; for CE the position that predicts from them is dropped.</summary>
    public IReadOnlyCollection<long>? ExcludeTokenIds { get; init; }
    /// <summary>SAELens's <c>seqpos_slice</c> of the SAEs: only these positions of each window are spliced and counted, as
    /// excluded tokens are not (the ablations still replace every position); null: all.</summary>
    public Saes.SeqposSlice? SeqposSlice { get; init; }
    /// <summary>Also run with the hook mean-ablated: every position replaced by the mean over the batch's counted positions.</summary>
    public bool MeanAblation { get; init; } = true;
    /// <summary>Also run with the SAE's error term added back (a check: it must match the clean run).</summary>
    public bool ErrorTerm { get; init; } = true;
    /// <summary>Hooks applied on every model run (<see cref="SaeSharp.Models.ProcessedModel.Hooks"/>), before the harvest reads.</summary>
    public IReadOnlyList<(string Name, Func<Tensor, Tensor?> Fn)>? ModelHooks { get; init; }
    /// <summary>Positions unembedded at a time when computing CE and KL; null: as many as fit 2²³ logits (32 MB in float32).</summary>
    public int? LogitChunkPositions { get; init; }
    /// <summary>Also compute each SAE's per-feature max encoder and decoder cosine similarities (SAEBench's
    /// <see cref="FeatureMetrics.MaxEncoderCosineSim"/>, <see cref="FeatureMetrics.MaxDecoderCosineSim"/>; d_sae² · d work).</summary>
    public bool MaxCosineSims { get; init; }
    /// <summary>Tokens evaluated, after each batch (the total is <see cref="MaxContexts"/> × the positions kept per window when set).</summary>
    public IProgress<WorkProgress>? Progress { get; init; }
}

/// <summary>
/// An SAE to evaluate and where it sits: its input hook (<c>cfg.metadata.hook_name</c> by default) and, for a transcoder,
/// the hook whose activation it replaces (<c>hook_name_out</c> in the cfg metadata, or given here).
/// </summary>
public sealed record DownstreamTarget(Sae Sae, string? Hook = null, string? OutputHook = null, string? Name = null)
{
    internal string InputHook => Hook ?? Sae.Cfg.Metadata.HookName
        ?? throw new SaeSharpException((Name is null ? "" : $"SAE {Name}: ") + SaeMetadata.NoHook);

    internal string? TranscoderOutHook => OutputHook ?? Sae.Cfg.Metadata.HookNameOut;
}

/// <summary>
/// Splices SAEs into a language model and measures what they cost downstream (SAELens <c>get_recons_loss</c> /
/// <c>get_downstream_reconstruction_metrics</c>), with reconstruction and sparsity metrics over the same tokens.
/// Several SAEs are evaluated in one pass over the data: per batch one clean run caches every hook needed, then each
/// SAE gets its spliced (and error-term) run, and each distinct hook its zero- and mean-ablated runs.
/// </summary>
public static partial class DownstreamEvaluator
{
    /// <summary>Evaluates each target on <paramref name="windows"/> (token windows of equal length).</summary>
    public static IReadOnlyList<DownstreamMetrics> Evaluate(HookedTransformer model, IReadOnlyList<DownstreamTarget> targets,
        IEnumerable<long[]> windows, DownstreamEvalOptions? options = null)
    {
        ArgumentNullException.ThrowIfNull(model);
        ArgumentNullException.ThrowIfNull(targets);
        ArgumentNullException.ThrowIfNull(windows);
        var o = options ?? new DownstreamEvalOptions();
        if (targets.Count == 0) throw new SaeSharpException("no SAE to evaluate");
        if (o.LogitChunkPositions is <= 0) throw new SaeSharpException($"logit chunk must be positive, got {o.LogitChunkPositions}");
        if (o.BatchSizePrompts <= 0) throw new SaeSharpException($"batch size in prompts must be positive, got {o.BatchSizePrompts}");
        var exclude = (o.ExcludeTokenIds ?? []).Distinct().ToArray();

        var plans = targets.Select((t, i) => new Plan(model, t, i)).ToList();
        var sites = plans.Select(p => p.Ablated).Distinct().ToList();
        var cacheHooks = plans.SelectMany(p => new[] { p.InputHook, p.SiteHook }).Distinct().ToList();
        cacheHooks.AddRange(ModelActivationHarvester.RoutingHooks(model.HookPoints, cacheHooks).ToList());
        var ablation = sites.ToDictionary(h => h, _ => new Sums());
        var meanAblation = sites.ToDictionary(h => h, _ => new Sums());
        var clean = new Sums();

        var (contexts, contextSize) = ForEachBatch(windows, o, clean, batch => RunBatch(model, batch, exclude, plans, cacheHooks, sites, clean, ablation, meanAblation, o));
        return plans.Select(p =>
        {
            var m = p.Finish(model.HookPoints, clean, ablation[p.Ablated], o.MeanAblation ? meanAblation[p.Ablated] : null, o.MaxCosineSims);
            m.Contexts = contexts;
            m.ContextSize = contextSize;
            m.BatchSizePrompts = o.BatchSizePrompts;
            m.ExcludedTokenIds = exclude;
            return m;
        }).ToList();
    }

    /// <summary>Feeds <paramref name="windows"/> to <paramref name="runBatch"/> in batches of
    /// <see cref="DownstreamEvalOptions.BatchSizePrompts"/> (at most <see cref="DownstreamEvalOptions.MaxContexts"/>
    /// windows), counting progress in evaluated positions; refuses a pass in which <paramref name="clean"/> counted none.
    /// Returns the number of windows run and their length.</summary>
    private static (long Windows, int Length) ForEachBatch(IEnumerable<long[]> windows, DownstreamEvalOptions o, Sums clean, Action<List<long[]>> runBatch)
    {
        long taken = 0;
        int length = 0;
        var batch = new List<long[]>();
        var progress = new ProgressCounter(o.Progress, "tokens");
        void Run()
        {
            length = batch[0].Length;
            int positions = o.SeqposSlice?.Positions(batch[0].Length).Length ?? batch[0].Length;
            progress.Total ??= o.MaxContexts * positions;
            runBatch(batch);
            progress.Add((long)batch.Count * positions);
            batch.Clear();
        }
        foreach (var w in windows)
        {
            if (o.MaxContexts is long max && taken >= max) break;
            batch.Add(w);
            taken++;
            if (batch.Count == o.BatchSizePrompts) Run();
        }
        if (batch.Count > 0) Run();
        if (clean.Positions == 0) throw new SaeSharpException("no tokens were evaluated (empty dataset, or every position excluded)");
        return (taken, length);
    }

    private static void RunBatch(HookedTransformer model, List<long[]> windows, long[] exclude, List<Plan> plans,
        List<string> cacheHooks, List<AblatedSite> sites, Sums clean, Dictionary<AblatedSite, Sums> ablation, Dictionary<AblatedSite, Sums> meanAblation,
        DownstreamEvalOptions o)
    {
        int b = windows.Count, s = windows[0].Length;
        using var scope = NewDisposeScope();
        using var _ = no_grad();
        var tokens = BatchTokens(model, windows);
        var keep = ModelActivationHarvester.KeepMask(tokens, exclude, o.SeqposSlice);   // [b, s]

        // The clean pass caches every hook an SAE reads or replaces and the residual stream entering each site's block,
        // and returns the final-normalised residual: no logits yet.
        var starts = sites.Select(a => a.Hook).Distinct().ToDictionary(h => h, h => StartLayer(model, h), StringComparer.Ordinal);
        var residualHooks = starts.Values.OfType<int>().Select(model.ResidualHookEntering);
        var (cleanOut, cache) = model.Run(tokens, new RunOptions
        {
            CacheNames = cacheHooks.Concat(residualHooks).Distinct().ToList(), Hooks = o.ModelHooks, ReturnNormalized = true,
        });
        using var c = cache!;

        // Each variant runs from the block of the hook it changes, on the residual stream the clean pass cached there.
        var variants = new List<(Sums Sums, Tensor Normalized)>();
        Tensor RunVariant(string site, Func<Tensor, Tensor?> fn)
        {
            int? start = starts[site];
            // Model hooks before the start already shaped the cached residual (and those on it, which the block fires again).
            var hooks = (o.ModelHooks ?? []).Where(h => start is not int l ||
                (model.HookPoints.LayerOf(h.Name) >= l && model.HookPoints.Resolve(h.Name) != model.ResidualHookEntering(l))).ToList();
            hooks.Add((site, fn));
            return model.Run(tokens, new RunOptions
            {
                StartAtLayer = start, Residual = start is int l ? c[model.ResidualHookEntering(l)] : null,
                Hooks = hooks, ReturnNormalized = true,
            }).Logits!;
        }

        // Ablation replaces every position, excluded ones too (SAELens's zero-ablation hook); an SAE on one head
        // (hook_head_index) has only that head ablated. The mean is over the counted positions.
        foreach (var site in sites)
        {
            variants.Add((ablation[site], RunVariant(site.Hook, x => site.Replace(x, zeros_like(site.Part(x))))));
            if (o.MeanAblation)
            {
                var act = site.Part(c[site.Hook]);
                var k = ModelActivationHarvester.KeepRouted(keep, model.HookPoints, [site.Hook], c).to(act.dtype).view(new long[] { b, s }.Concat(Enumerable.Repeat(1L, (int)act.dim() - 2)).ToArray());
                // No counted row in the batch (every position excluded, or an expert no token chose): 0, not NaN; nothing
                // measured depends on it.
                var mean = (act * k).sum([0, 1]) / k.sum().clamp_min(TorchScalars.One);
                variants.Add((meanAblation[site], RunVariant(site.Hook, x => site.Replace(x, mean.expand_as(site.Part(x))))));
            }
        }

        foreach (var p in plans)
        {
            var input = c[p.InputHook];
            var site = c[p.SiteHook];
            // A temporal SAE at an expert's hook reads the routed tokens only as context, the rows TransformerLens fires it with.
            using var context = ModelActivationHarvester.RoutedRows(model.HookPoints, p.InputHook, c);
            var (recon, feats) = p.Reconstruct(input, site, context);   // recon shaped as the site activation
            // At an expert's hook only the tokens routed to the expert are rows and are spliced (the others' rows are zeros
            // the model drops); the CE and KL below still count every position.
            var rows = ModelActivationHarvester.KeepRouted(keep, model.HookPoints, [p.InputHook, p.SiteHook], c);
            p.AddReconstruction(site, recon, feats, rows);
            var spliced = Where(rows, recon, site);
            variants.Add((p.Spliced, RunVariant(p.SiteHook, _ => spliced)));
            if (o.ErrorTerm)
            {
                var withError = Where(rows, recon.add(site - recon, TorchScalars.One), site);
                variants.Add((p.ErrorTerm, RunVariant(p.SiteHook, _ => withError)));
            }
        }

        Measure(model, tokens, keep, cleanOut!, clean, variants, o.LogitChunkPositions);
    }

    /// <summary>The windows of a batch as tokens [batch, pos] on the model's device (equal lengths, at least 2 tokens).</summary>
    private static Tensor BatchTokens(HookedTransformer model, List<long[]> windows)
    {
        int b = windows.Count, s = windows[0].Length;
        if (s < 2) throw new SaeSharpException($"context windows need at least 2 tokens for next-token loss, got {s}");
        var flat = new long[(long)b * s];
        for (int i = 0; i < b; i++)
        {
            if (windows[i].Length != s) throw new SaeSharpException($"context windows differ in length: {windows[i].Length} vs {s}");
            Array.Copy(windows[i], 0, flat, (long)i * s, s);
        }
        return tensor(flat).view(b, s).to(model.Device);
    }

    /// <summary>The block a run that changes <paramref name="site"/> can start at (null: the embeddings, a full run).</summary>
    private static int? StartLayer(HookedTransformer model, string site)
    {
        int l = model.HookPoints.LayerOf(site);
        return l <= 0 ? null : l;
    }

    /// <summary>
    /// Adds the next-token CE of the clean pass and each variant's CE and KL(clean ‖ variant) over the counted positions.
    /// The logits are computed a chunk of positions at a time from the final-normalised residuals, so that no
    /// [tokens, vocab] matrix exists, and the clean chunk's logits and probabilities are shared by every variant.
    /// </summary>
    private static void Measure(HookedTransformer model, Tensor tokens, Tensor keep, Tensor cleanNormalized, Sums clean,
        List<(Sums Sums, Tensor Normalized)> variants, int? chunkPositions)
    {
        long b = tokens.shape[0], s = tokens.shape[1], d = cleanNormalized.shape[^1];
        var rows = keep.reshape(-1).nonzero().squeeze(1);               // counted positions
        long n = rows.shape[0];
        if (n == 0) return;
        // Next token of each position, and whether that position counts for CE (the last one predicts nothing).
        var next = cat([tokens.narrow(1, 1, s - 1), zeros(b, 1, dtype: ScalarType.Int64, device: tokens.device)], 1).reshape(-1).index_select(0, rows);
        using var positions = s.ToScalar();
        using var last = (s - 1).ToScalar();
        var predicts = TorchScalars.Arange(positions, device: tokens.device).lt(last).unsqueeze(0).expand(b, s).reshape(-1).index_select(0, rows);
        long cePositions = predicts.sum().item<long>();

        var cleanRows = cleanNormalized.reshape(-1, d).index_select(0, rows);
        var variantRows = variants.Select(v => v.Normalized.reshape(-1, d).index_select(0, rows)).ToList();
        long chunk = chunkPositions ?? Math.Max(1, LogitChunkElements / model.Config.DVocab);
        double cleanCe = 0;
        var ce = new double[variants.Count];
        var kl = new double[variants.Count];
        for (long r0 = 0; r0 < n; r0 += chunk)
        {
            using var inner = NewDisposeScope();
            long r = Math.Min(chunk, n - r0);
            var nx = next.narrow(0, r0, r).unsqueeze(1);
            var pr = predicts.narrow(0, r0, r).to(ScalarType.Float64);
            // Per row: CE = lse − l[next]; KL = Σ p_c·(l_c − l_v) + (lse_v − lse_c)·Σ p_c.
            var lc = model.LogitsOf(cleanRows.narrow(0, r0, r));
            Tensor lseC, pC, pSum;
            bool kernels = LogitKernels.Applies(lc);
            if (kernels)
            {
                pC = empty_like(lc);
                var (lse, ps) = LogitKernels.Clean(lc, pC);
                (lseC, pSum) = (tensor(lse, device: lc.device), tensor(ps, device: lc.device));
            }
            else (lseC, pC, pSum) = LogitKernels.TorchClean(lc);
            cleanCe += ((lseC - lc.gather(1, nx).squeeze(1).to(ScalarType.Float64)) * pr).sum().item<double>();
            for (int v = 0; v < variants.Count; v++)
            {
                using var vs = NewDisposeScope();
                var lv = model.LogitsOf(variantRows[v].narrow(0, r0, r));
                Tensor lseV, dot;
                if (kernels)
                {
                    var (lse, dt) = LogitKernels.Variant(lv, lc, pC);
                    (lseV, dot) = (tensor(lse, device: lv.device), tensor(dt, device: lv.device));
                }
                else (lseV, dot) = LogitKernels.TorchVariant(lv, lc, pC);
                ce[v] += ((lseV - lv.gather(1, nx).squeeze(1).to(ScalarType.Float64)) * pr).sum().item<double>();
                kl[v] += dot.add((lseV - lseC) * pSum, TorchScalars.One).sum().item<double>();
            }
        }
        clean.Add(cleanCe, 0, n, cePositions);
        for (int v = 0; v < variants.Count; v++) variants[v].Sums.Add(ce[v], kl[v], n, cePositions);
    }

    /// <summary>Elements of one [positions, vocab] logit chunk (32 MB in float32).</summary>
    private const long LogitChunkElements = 1L << 23;

    private static List<(string Name, Func<Tensor, Tensor?> Fn)> With(DownstreamEvalOptions o, (string Name, Func<Tensor, Tensor?> Fn) hook) =>
        [.. o.ModelHooks ?? [], hook];

    /// <summary>where(keep[b, s], a, b) broadcast over the activation's trailing dimensions.</summary>
    private static Tensor Where(Tensor keep, Tensor a, Tensor x)
    {
        var k = keep.view(keep.shape.Concat(Enumerable.Repeat(1L, (int)x.dim() - 2)).ToArray());
        return torch.where(k, a, x);
    }

    /// <summary>What an ablation run replaces: a hook, or one head of it (<paramref name="Head"/>, an SAE's hook_head_index).</summary>
    private readonly record struct AblatedSite(string Hook, int? Head)
    {
        /// <summary>The ablated part of the hook's activation: the head's slice, else all of it.</summary>
        public Tensor Part(Tensor x) => Head is int h && x.dim() == 4 ? x.select(2, h) : x;

        /// <summary>The activation with its ablated part replaced by <paramref name="part"/>.</summary>
        public Tensor Replace(Tensor x, Tensor part)
        {
            if (Head is not int h || x.dim() != 4) return part;
            var heads = x.unbind(2).ToArray();
            heads[h] = part;
            return stack(heads, 2);
        }
    }

    /// <summary>Sums of CE and KL over counted positions.</summary>
    private sealed class Sums
    {
        public double Ce, Kl;
        public long Positions, CePositions;

        public void Add(double ce, double kl, long positions, long cePositions)
        {
            Ce += ce;
            Kl += kl;
            Positions += positions;
            CePositions += cePositions;
        }

        public double MeanCe => Ce / CePositions;
        public double MeanKl => Kl / Positions;
    }

    /// <summary>One SAE's hooks, reshaping and running sums.</summary>
    private sealed class Plan
    {
        private readonly DownstreamTarget _t;
        private readonly int? _head;
        /// <summary>The SAE as every model run attaches it (a transcoder from <see cref="InputHook"/> to <see cref="SiteHook"/>).</summary>
        private readonly AttachedSae _attached;
        private SaeMetricsAccumulator? _acc;

        public string Name { get; }
        public string InputHook { get; }
        /// <summary>The hook whose activation is replaced: the input hook, or a transcoder's output hook.</summary>
        public string SiteHook { get; }
        /// <summary>What the zero and mean ablations replace: the site hook, or the SAE's head of it.</summary>
        public AblatedSite Ablated => new(SiteHook, SiteHook == InputHook ? _head : null);
        public Sums Spliced { get; } = new();
        public Sums ErrorTerm { get; } = new();

        public Plan(HookedTransformer model, DownstreamTarget t, int index)
        {
            _t = t;
            Name = t.Name ?? t.Sae.Cfg.Metadata.HookName ?? $"sae_{index}";
            InputHook = model.CheckSaeFits(t.Sae, t.InputHook);
            SiteHook = t.TranscoderOutHook is { } oh ? model.HookPoints.Resolve(oh) : InputHook;
            _head = t.Sae.Cfg.Metadata.HookHeadIndex;
            // Checks a transcoder's output hook as every run does (exists, fires after the input hook, gives d_out). Every
            // position is reconstructed: the evaluation picks the counted ones (its own SeqposSlice) itself.
            _attached = model.Attach(t.Sae, InputHook, outputHook: SiteHook) with { SeqposSlice = Saes.SeqposSlice.All };
        }

        /// <summary>SAE reconstruction of the input activation, shaped as the site activation; and the latents [rows, d_sae].
        /// Spliced as every model run splices it (<see cref="SaeSplice"/>): an SAE at its hook, a transcoder encoding
        /// <paramref name="input"/> and replacing <paramref name="site"/> (its output hook's activation). <paramref name="context"/>
        /// [batch, pos]: the tokens a temporal SAE reads as context (null: all).</summary>
        public (Tensor Recon, Tensor Feats) Reconstruct(Tensor input, Tensor site, Tensor? context)
        {
            if (!_attached.IsTranscoder) return SaeSplice.Splice(_attached, input, HookRunner.None, context);
            using var e = SaeSplice.Begin(_attached, input, HookRunner.None, context);
            var recon = SaeSplice.Finish(_attached, e, site, HookRunner.None);
            return (recon, e.Clean.reshape(-1, _t.Sae.Cfg.DSae));
        }

        public void AddReconstruction(Tensor site, Tensor recon, Tensor feats, Tensor keep)
        {
            using var scope = NewDisposeScope();
            long b = site.shape[0], s = site.shape[1];
            var idx = keep.reshape(-1).nonzero().squeeze(1);
            Tensor target = site.dim() == 4 && _head is int h ? site.select(2, h) : site;
            Tensor rec = recon.dim() == 4 && _head is int h2 ? recon.select(2, h2) : recon;
            if (SiteHook != InputHook && recon.reshape(b, s, -1).shape[^1] != site.reshape(b, s, -1).shape[^1])
                throw new SaeSharpException($"transcoder {Name}: d_out = {recon.reshape(b, s, -1).shape[^1]} but hook '{SiteHook}' gives {site.reshape(b, s, -1).shape[^1]} values per token");
            var x = target.reshape(b * s, -1).index_select(0, idx);
            var y = rec.reshape(b * s, -1).index_select(0, idx);
            var f = feats.index_select(0, idx);
            _acc ??= new SaeMetricsAccumulator((int)x.shape[1], _t.Sae.Cfg.DSae);
            // Each counted position's window: the consistent-activation heuristic counts windows, as SAELens counts prompts.
            using var positions = s.ToScalar();
            _acc.Add(x, y, f, prompt: idx.div(positions, rounding_mode: RoundingMode.floor).cpu());
        }

        /// <summary>The accumulated reconstruction metrics, with the SAE's weight-based feature metrics.</summary>
        private SaeEvalResult ReconstructionResult(bool maxCosineSims)
        {
            var r = (_acc ?? throw new SaeSharpException($"SAE {Name}: no tokens evaluated")).Result();
            var features = r.FeatureMetrics!.WithWeights(_t.Sae);
            return r with { FeatureMetrics = maxCosineSims ? features.WithMaxCosineSims(_t.Sae) : features };
        }

        /// <summary>The metrics of an SAE at an MoE expert's hook that no evaluated token was routed to: NaN but the clean CE
        /// (splicing and ablating an expert that is never computed change nothing), and <see cref="DownstreamMetrics.NoRows"/>
        /// saying why. The other SAEs of the run keep their results.</summary>
        private DownstreamMetrics Unrouted(HookPoints hookPoints, Sums clean)
        {
            var routing = hookPoints.ExpertRouting(InputHook) ?? hookPoints.ExpertRouting(SiteHook);
            string hook = hookPoints.ExpertRouting(InputHook) is null ? SiteHook : InputHook;
            string expert = routing is var (_, e) ? $"expert {e} of layer {hookPoints.LayerOf(hook)}" : "its hook";
            var nan = Enumerable.Repeat(double.NaN, _t.Sae.Cfg.DSae).ToArray();
            var empty = new SaeEvalResult
            {
                Mse = double.NaN, MseLoss = double.NaN, L1 = double.NaN, L0 = double.NaN, Fvu = double.NaN, ExplainedVariance = double.NaN,
                Cosine = double.NaN, L2Ratio = double.NaN, RelativeReconstructionBias = double.NaN, L2NormIn = double.NaN,
                L2NormOut = double.NaN, ExplainedVarianceLegacy = double.NaN, AliveFraction = double.NaN, DeadFraction = double.NaN,
                Rows = 0, FeatureFrequency = nan, FeatureMetrics = new FeatureMetrics { FeatureDensity = nan }.WithWeights(_t.Sae),
            };
            return new DownstreamMetrics
            {
                Name = Name, HookName = InputHook, OutputHookName = SiteHook == InputHook ? null : SiteHook,
                Reconstruction = empty, Cfg = _t.Sae.Cfg.Clone(),
                NoRows = $"SAE {Name} at '{hook}': none of the {clean.Positions.ToString("N0", System.Globalization.CultureInfo.InvariantCulture)} tokens evaluated was routed to {expert}, so it has " +
                         "no metrics; evaluate more tokens (--tokens) to reach it",
                CeLossWithoutSae = clean.MeanCe, CeLossWithSae = double.NaN, CeLossWithAblation = double.NaN,
                KlDivWithSae = double.NaN, KlDivWithAblation = double.NaN,
                Tokens = clean.Positions, CeTokens = clean.CePositions,
            };
        }

        public DownstreamMetrics Finish(HookPoints hookPoints, Sums clean, Sums ablation, Sums? meanAblation, bool maxCosineSims)
        {
            if (_acc is not { Rows: > 0 }) return Unrouted(hookPoints, clean);
            return new DownstreamMetrics
            {
                Name = Name, HookName = InputHook, OutputHookName = SiteHook == InputHook ? null : SiteHook,
                Reconstruction = ReconstructionResult(maxCosineSims), Cfg = _t.Sae.Cfg.Clone(),
                CeLossWithoutSae = clean.MeanCe, CeLossWithSae = Spliced.MeanCe, CeLossWithAblation = ablation.MeanCe,
                CeLossWithMeanAblation = meanAblation?.MeanCe ?? double.NaN,
                CeLossWithErrorTerm = ErrorTerm.CePositions > 0 ? ErrorTerm.MeanCe : double.NaN,
                KlDivWithSae = Spliced.MeanKl, KlDivWithAblation = ablation.MeanKl,
                KlDivWithMeanAblation = meanAblation?.MeanKl ?? double.NaN,
                KlDivWithErrorTerm = ErrorTerm.Positions > 0 ? ErrorTerm.MeanKl : double.NaN,
                Tokens = clean.Positions, CeTokens = clean.CePositions,
            };
        }
    }
}
