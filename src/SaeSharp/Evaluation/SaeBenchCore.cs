using System.Text.Json;
using System.Text.Json.Serialization;
using SaeSharp.Hooks;
using SaeSharp.Models;
using SaeSharp.Saes;
using TorchSharp;
using static TorchSharp.torch;

namespace SaeSharp.Evaluation;

/// <summary>
/// SAEBench's <c>CoreEvalConfig</c> (<c>sae_bench/evals/core/eval_config.py</c>), every field: those that decide its core eval's numbers,
/// with the defaults of its script (<c>sae_bench/evals/core/main.py</c>): 16 windows per batch, 10 batches for CE/KL, then
/// 1 batch for everything else, 128-token windows, the SAE spliced at special tokens too. The fields that name the run
/// (<c>model_name</c>, <c>llm_dtype</c>, <c>dataset</c>) are checked against it (<see cref="CheckRun"/>); the
/// <c>compute_*</c> switches SaeSharp cannot turn off must be true; <c>verbose</c> is free.
/// </summary>
public sealed record SaeBenchCoreConfig
{
    /// <summary><c>batch_size_prompts</c>: context windows per batch.</summary>
    [JsonPropertyName("batch_size_prompts")] public int BatchSizePrompts { get; init; } = 16;
    /// <summary><c>n_eval_reconstruction_batches</c>: batches for the CE and KL metrics.</summary>
    [JsonPropertyName("n_eval_reconstruction_batches")] public int NEvalReconstructionBatches { get; init; } = 10;
    /// <summary><c>n_eval_sparsity_variance_batches</c>: the following batches, for every other metric.</summary>
    [JsonPropertyName("n_eval_sparsity_variance_batches")] public int NEvalSparsityVarianceBatches { get; init; } = 1;
    /// <summary><c>context_size</c>: tokens per window.</summary>
    [JsonPropertyName("context_size")] public int ContextSize { get; init; } = 128;
    /// <summary><c>exclude_special_tokens_from_reconstruction</c>: leave BOS/EOS/pad positions unspliced in the CE/KL runs
    /// (they are left out of every metric either way).</summary>
    [JsonPropertyName("exclude_special_tokens_from_reconstruction")] public bool ExcludeSpecialTokensFromReconstruction { get; init; }
    /// <summary><c>compute_featurewise_density_statistics</c>: feature density and the consistent-activation heuristic.</summary>
    [JsonPropertyName("compute_featurewise_density_statistics")] public bool ComputeFeaturewiseDensityStatistics { get; init; } = true;
    /// <summary><c>compute_featurewise_weight_based_metrics</c>: encoder norms and biases, cosines, max cosines.</summary>
    [JsonPropertyName("compute_featurewise_weight_based_metrics")] public bool ComputeFeaturewiseWeightBasedMetrics { get; init; } = true;

    /// <summary><c>model_name</c>: accepted when it names the model the run uses (the SAE's <c>model_name</c>, else the
    /// model folder's name); null: not given.</summary>
    [JsonPropertyName("model_name")] public string? ModelName { get; init; }
    /// <summary><c>llm_dtype</c>: accepted when it is the dtype the model runs in (<c>--dtype</c>, else the SAE's); null: not given.</summary>
    [JsonPropertyName("llm_dtype")] public string? LlmDtype { get; init; }
    /// <summary><c>dataset</c>: accepted when it is the <c>--dataset</c> given (an <c>hf:</c> prefix aside); null: not given.</summary>
    [JsonPropertyName("dataset")] public string? Dataset { get; init; }
    /// <summary><c>compute_kl</c>: SaeSharp always computes the KL metrics; false is refused.</summary>
    [JsonPropertyName("compute_kl")] public bool ComputeKl { get; init; } = true;
    /// <summary><c>compute_ce_loss</c>: always computed; false is refused.</summary>
    [JsonPropertyName("compute_ce_loss")] public bool ComputeCeLoss { get; init; } = true;
    /// <summary><c>compute_l2_norms</c>: always computed; false is refused.</summary>
    [JsonPropertyName("compute_l2_norms")] public bool ComputeL2Norms { get; init; } = true;
    /// <summary><c>compute_sparsity_metrics</c>: always computed; false is refused.</summary>
    [JsonPropertyName("compute_sparsity_metrics")] public bool ComputeSparsityMetrics { get; init; } = true;
    /// <summary><c>compute_variance_metrics</c>: always computed; false is refused.</summary>
    [JsonPropertyName("compute_variance_metrics")] public bool ComputeVarianceMetrics { get; init; } = true;
    /// <summary><c>verbose</c>: SAEBench's extra printing; changes no number, accepted either way and written back.</summary>
    [JsonPropertyName("verbose")] public bool Verbose { get; init; }

    /// <summary>Every field name <see cref="Parse"/> accepts: all of SAEBench's <c>CoreEvalConfig</c>.</summary>
    public static IReadOnlyList<string> FieldNames { get; } = [.. typeof(SaeBenchCoreConfig).GetProperties().Select(JsonName).OfType<string>()];

    private static string? JsonName(System.Reflection.PropertyInfo p) =>
        p.GetCustomAttributes(typeof(JsonPropertyNameAttribute), false).OfType<JsonPropertyNameAttribute>().FirstOrDefault()?.Name;

    /// <summary>Throws when <see cref="ModelName"/>, <see cref="LlmDtype"/> or <see cref="Dataset"/> is given and differs
    /// from what the run uses (<paramref name="modelName"/>, <paramref name="llmDtype"/>, <paramref name="dataset"/>),
    /// naming the field, both values and how to make them agree.</summary>
    public void CheckRun(string modelName, string llmDtype, string dataset)
    {
        ArgumentNullException.ThrowIfNull(dataset);
        if (ModelName is { } m && m != modelName)
            throw new SaeSharpException($"--saebench-config: model_name '{m}', but the SAE is evaluated on '{modelName}'; give that model, or remove model_name");
        if (LlmDtype is { } d && !string.Equals(d, llmDtype, StringComparison.OrdinalIgnoreCase))
            throw new SaeSharpException($"--saebench-config: llm_dtype '{d}', but the model runs in {llmDtype}; give --dtype {d}, or remove llm_dtype");
        static string Bare(string p) => p.StartsWith("hf:", StringComparison.Ordinal) ? p[3..] : p;
        if (Dataset is { } ds && Bare(ds) != Bare(dataset))
            throw new SaeSharpException($"--saebench-config: dataset '{ds}', but --dataset is '{dataset}'; give --dataset {(ds.Contains('/', StringComparison.Ordinal) && !File.Exists(ds) && !Directory.Exists(ds) ? "hf:" + ds : ds)}, or remove dataset");
    }

    /// <summary>What a field's value must be, for the JSON path (<c>$.batch_size_prompts</c>) of a value that did not convert.</summary>
    private static string ValueError(string? path)
    {
        string? name = path is { Length: > 2 } && path.StartsWith("$.", StringComparison.Ordinal) ? path[2..] : null;
        var type = typeof(SaeBenchCoreConfig).GetProperties().FirstOrDefault(p => JsonName(p) == name)?.PropertyType;
        string expected = type == typeof(int) ? "a whole number" : type == typeof(bool) ? "true or false" : "a string or null";
        return name is null || type is null ? $"not a valid CoreEvalConfig object ({path})" : $"{name}: expected {expected}";
    }

    private static readonly JsonSerializerOptions Strict = new() { UnmappedMemberHandling = JsonUnmappedMemberHandling.Disallow };

    /// <summary>Reads <paramref name="jsonOrPath"/> (a JSON object, or a file holding one) over the defaults, with
    /// <paramref name="contextSize"/> as the context size when it names none; an unknown field or a non-positive count is an
    /// error naming it.</summary>
    public static SaeBenchCoreConfig Parse(string jsonOrPath, int? contextSize = null)
    {
        ArgumentNullException.ThrowIfNull(jsonOrPath);
        string text = jsonOrPath.TrimStart().StartsWith('{') ? jsonOrPath : File.Exists(jsonOrPath) ? File.ReadAllText(jsonOrPath)
            : throw new SaeSharpException($"--saebench-config {jsonOrPath}: neither a JSON object nor an existing file");
        SaeBenchCoreConfig c;
        try
        {
            var node = System.Text.Json.Nodes.JsonNode.Parse(text) as System.Text.Json.Nodes.JsonObject
                ?? throw new SaeSharpException($"--saebench-config: expected a JSON object, got {text}");
            if (node.Select(kv => kv.Key).FirstOrDefault(k => !FieldNames.Contains(k)) is { } unknown)
                throw new SaeSharpException($"--saebench-config: unknown field '{unknown}'{NameSuggestion.WithKnown(unknown, FieldNames, "SAEBench's CoreEvalConfig fields")}");
            if (contextSize is int ctx && !node.ContainsKey("context_size")) node["context_size"] = ctx;
            c = node.Deserialize<SaeBenchCoreConfig>(Strict)
                ?? throw new SaeSharpException("--saebench-config: null");
        }
        catch (JsonException e)
        {
            throw new SaeSharpException($"--saebench-config: {ValueError(e.Path)}");
        }
        foreach (var (name, on) in new[] { ("compute_kl", c.ComputeKl), ("compute_ce_loss", c.ComputeCeLoss), ("compute_l2_norms", c.ComputeL2Norms),
                     ("compute_sparsity_metrics", c.ComputeSparsityMetrics), ("compute_variance_metrics", c.ComputeVarianceMetrics) })
            if (!on) throw new SaeSharpException($"--saebench-config: {name} false: SaeSharp always computes these metrics and writes them; set it true or remove it");
        foreach (var (name, v) in new[] { ("batch_size_prompts", c.BatchSizePrompts), ("n_eval_reconstruction_batches", c.NEvalReconstructionBatches),
                     ("n_eval_sparsity_variance_batches", c.NEvalSparsityVarianceBatches), ("context_size", c.ContextSize) })
            if (v <= 0) throw new SaeSharpException($"--saebench-config: {name} must be positive, got {v}");
        if (c.ContextSize < 2) throw new SaeSharpException($"--saebench-config: context_size must be at least 2 (next-token loss), got {c.ContextSize}");
        return c;
    }
}

/// <summary>SAEBench core eval's scalar metrics and per-feature density statistics, aggregated as its <c>main.py</c> does.</summary>
public sealed record SaeBenchCoreMetrics
{
    /// <summary><c>kl_div_with_sae</c>, <c>kl_div_with_ablation</c>, <c>kl_div_score</c>.</summary>
    public double KlDivWithSae { get; init; }
    /// <summary>Mean KL(clean ‖ zero-ablated) over the counted positions.</summary>
    public double KlDivWithAblation { get; init; }
    /// <summary>(KL ablated − KL SAE) / KL ablated.</summary>
    public double KlDivScore => (KlDivWithAblation - KlDivWithSae) / KlDivWithAblation;
    /// <summary><c>ce_loss_with_sae</c>.</summary>
    public double CeLossWithSae { get; init; }
    /// <summary><c>ce_loss_without_sae</c>.</summary>
    public double CeLossWithoutSae { get; init; }
    /// <summary><c>ce_loss_with_ablation</c>.</summary>
    public double CeLossWithAblation { get; init; }
    /// <summary>(CE ablated − CE SAE) / (CE ablated − CE clean).</summary>
    public double CeLossScore => (CeLossWithAblation - CeLossWithSae) / (CeLossWithAblation - CeLossWithoutSae);
    /// <summary><c>l2_norm_in</c>: mean ‖x‖ per counted token.</summary>
    public double L2NormIn { get; init; }
    /// <summary><c>l2_norm_out</c>: mean ‖x̂‖.</summary>
    public double L2NormOut { get; init; }
    /// <summary><c>l2_ratio</c>: mean ‖x̂‖/‖x‖ (‖x‖ &lt; 10⁻⁴ taken as 1).</summary>
    public double L2Ratio { get; init; }
    /// <summary><c>relative_reconstruction_bias</c>: the mean over batches of mean‖x̂‖² / mean⟨x, x̂⟩.</summary>
    public double RelativeReconstructionBias { get; init; }
    /// <summary><c>l0</c>: mean count of non-zero latents.</summary>
    public double L0 { get; init; }
    /// <summary><c>l1</c>: mean sum of the latents (signed, as SAEBench sums them).</summary>
    public double L1 { get; init; }
    /// <summary><c>explained_variance</c>: 1 − mean‖x−x̂‖² / (E‖x‖² − (E‖x‖²/d)²), each mean over batches of per-batch means.</summary>
    public double ExplainedVariance { get; init; }
    /// <summary><c>explained_variance_legacy</c>: mean of 1 − ‖x−x̂‖² / ‖x − x̄_batch‖².</summary>
    public double ExplainedVarianceLegacy { get; init; }
    /// <summary><c>mse</c>: mean of ‖x−x̂‖² / (the batch's counted tokens).</summary>
    public double Mse { get; init; }
    /// <summary><c>cossim</c>: mean cosine of x and x̂ (no epsilon: a zero row gives NaN, as SAEBench).</summary>
    public double Cossim { get; init; }
    /// <summary>Per feature: tokens where it is &gt; 0 over counted tokens (NaN when not computed, as SAEBench's 0/0).</summary>
    public required double[] FeatureDensity { get; init; }
    /// <summary>Per feature: tokens where it is &gt; 0 over windows where it is (0/0 = NaN; NaN when not computed).</summary>
    public required double[] ConsistentActivationHeuristic { get; init; }
    /// <summary>Counted positions of the CE/KL batches (KL's count; CE drops each window's last).</summary>
    public long ReconstructionPositions { get; init; }
    /// <summary>Counted positions of the sparsity/variance batches.</summary>
    public long SparsityVariancePositions { get; init; }
}

/// <summary>One SAE's SAEBench core evaluation: the metrics, the per-feature metrics (densities from <paramref name="Metrics"/>,
/// weight-based ones and max cosines from the SAE as evaluated: SAEBench's <c>get_featurewise_weight_based_metrics</c>), its
/// cfg, the config used, whether its decoder norms were folded first, and the ignored token ids.</summary>
public sealed record SaeBenchCoreResult(SaeBenchCoreMetrics Metrics, FeatureMetrics Features, SaeConfig Cfg, SaeBenchCoreConfig Config,
    bool FoldedDecoderNorms, IReadOnlyList<long> IgnoreTokens);

/// <summary>
/// SAEBench core eval's aggregation (<c>get_downstream_reconstruction_metrics</c> and <c>get_sparsity_and_variance_metrics</c> of
/// <c>sae_bench/evals/core/main.py</c>), batch by batch: positions whose token is in the ignore set (BOS, EOS, pad) count in
/// no metric; per-token metrics are means over all counted tokens, while <c>relative_reconstruction_bias</c>,
/// <c>mse</c>, <c>explained_variance</c> and <c>explained_variance_legacy</c> depend on the batches as SAEBench's do.
/// </summary>
public sealed class SaeBenchCoreAccumulator
{
    private readonly int _dSae;
    private readonly long[] _ignore;
    private double _klSae, _klZero, _ceSae, _ceClean, _ceZero, _l2In, _l2Out, _ratio, _l0, _l1, _legacy, _mse, _cos;
    private long _klN, _ceN, _n;
    private readonly List<double> _rrb = [], _meanSumSq = [], _meanActSq = [], _meanResid = [];
    private readonly double[] _acts, _prompts;

    /// <summary>An empty accumulator for an SAE of <paramref name="dSae"/> latents; <paramref name="ignoreTokens"/>: SAEBench's
    /// <c>ignore_tokens</c>.</summary>
    public SaeBenchCoreAccumulator(int dSae, IEnumerable<long> ignoreTokens)
    {
        ArgumentNullException.ThrowIfNull(ignoreTokens);
        _dSae = dSae;
        _ignore = ignoreTokens.Distinct().ToArray();
        _acts = new double[dSae];
        _prompts = new double[dSae];
    }

    /// <summary>Positions whose token is not ignored, bool [b, s].</summary>
    public Tensor Keep(Tensor tokens)
    {
        var keep = ones_like(tokens, ScalarType.Bool);
        foreach (long t in _ignore)
        {
            using var s = t.ToScalar();
            keep = keep.logical_and(tokens.ne(s));
        }
        return keep;
    }

    /// <summary>One CE/KL batch: per-token CE [b, s−1] clean, spliced and zero-ablated, and KL [b, s] spliced and ablated.</summary>
    public void AddReconstruction(Tensor tokens, Tensor ceClean, Tensor ceSae, Tensor ceZero, Tensor klSae, Tensor klZero)
    {
        using var scope = NewDisposeScope();
        var keep = Keep(tokens.cpu());
        var ceKeep = keep.narrow(1, 0, tokens.shape[1] - 1);
        double Sum(Tensor v, Tensor k) => v.cpu().to(ScalarType.Float64).masked_select(k).sum().item<double>();
        _klSae += Sum(klSae, keep);
        _klZero += Sum(klZero, keep);
        _ceClean += Sum(ceClean, ceKeep);
        _ceSae += Sum(ceSae, ceKeep);
        _ceZero += Sum(ceZero, ceKeep);
        _klN += keep.sum().item<long>();
        _ceN += ceKeep.sum().item<long>();
    }

    /// <summary>One sparsity/variance batch: the SAE's input x and output x̂ [b, s, d], its latents f [b, s, d_sae].</summary>
    public void AddSparsityVariance(Tensor tokens, Tensor x, Tensor xHat, Tensor f)
    {
        using var scope = NewDisposeScope();
        using var _ = no_grad();
        var keep = Keep(tokens.cpu());
        var flat = keep.reshape(-1);
        long d = x.shape[^1];
        var xi = x.detach().cpu().to(ScalarType.Float64).reshape(-1, d)[flat];
        var xo = xHat.detach().cpu().to(ScalarType.Float64).reshape(-1, d)[flat];
        var ff = f.detach().cpu().to(ScalarType.Float64);
        var fa = ff.reshape(-1, _dSae)[flat];
        long n = xi.shape[0];
        var two = TorchScalars.Of(2);
        var inN = xi.norm(1);
        var outN = xo.norm(1);
        _l2In += inN.sum().item<double>();
        _l2Out += outN.sum().item<double>();
        _ratio += (outN / torch.where(inN.abs() < TorchScalars.Of(1e-4), ones_like(inN), inN)).sum().item<double>();
        _rrb.Add(outN.pow(two).mean().item<double>() / (xi * xo).sum(-1).mean().item<double>());
        _l0 += fa.ne(TorchScalars.Of(0)).sum().item<long>();
        _l1 += fa.sum().item<double>();
        var rss = (xi - xo).pow(two).sum(-1);
        // Σ rss/n over the batch; Σ (1 − rss/var) = n − Σ rss/var.
        _mse += rss.sum().item<double>() / n;
        _legacy += n - (rss / (xi - xi.mean([0])).pow(two).sum(-1)).sum().item<double>();
        _meanSumSq.Add(xi.pow(two).sum(-1).mean().item<double>());
        _meanActSq.Add(xi.pow(two).mean().item<double>());
        _meanResid.Add(rss.mean().item<double>());
        _cos += ((xi / xi.norm(1, keepdim: true)) * (xo / xo.norm(1, keepdim: true))).sum(-1).sum().item<double>();
        var fired = (ff * keep.unsqueeze(-1)).gt(TorchScalars.Of(0)).to(ScalarType.Float64);   // [b, s, d_sae]
        var acts = fired.sum([0, 1]).data<double>().ToArray();
        var prompts = fired.sum([1]).gt(TorchScalars.Of(0)).sum([0]).to(ScalarType.Float64).data<double>().ToArray();
        for (int i = 0; i < _dSae; i++) { _acts[i] += acts[i]; _prompts[i] += prompts[i]; }
        _n += n;
    }

    /// <summary>The metrics of the batches added (NaN for a group with no batch).</summary>
    public SaeBenchCoreMetrics Result(bool densityStatistics = true)
    {
        double n = _n;
        double meanActSq = _meanActSq.Count > 0 ? _meanActSq.Average() : double.NaN;
        double totalVariance = (_meanSumSq.Count > 0 ? _meanSumSq.Average() : double.NaN) - meanActSq * meanActSq;
        return new SaeBenchCoreMetrics
        {
            KlDivWithSae = _klSae / _klN, KlDivWithAblation = _klZero / _klN,
            CeLossWithSae = _ceSae / _ceN, CeLossWithoutSae = _ceClean / _ceN, CeLossWithAblation = _ceZero / _ceN,
            L2NormIn = _l2In / n, L2NormOut = _l2Out / n, L2Ratio = _ratio / n,
            RelativeReconstructionBias = _rrb.Count > 0 ? _rrb.Average() : double.NaN,
            L0 = _l0 / n, L1 = _l1 / n,
            ExplainedVariance = 1 - (_meanResid.Count > 0 ? _meanResid.Average() : double.NaN) / totalVariance,
            ExplainedVarianceLegacy = _legacy / n, Mse = _mse / n, Cossim = _cos / n,
            // Without density statistics SAEBench's totals stay 0 and it divides anyway: 0/0, NaN for every feature.
            FeatureDensity = densityStatistics ? _acts.Select(a => a / n).ToArray() : Enumerable.Repeat(double.NaN, _dSae).ToArray(),
            ConsistentActivationHeuristic = densityStatistics ? _acts.Zip(_prompts, (a, p) => a / p).ToArray() : Enumerable.Repeat(double.NaN, _dSae).ToArray(),
            ReconstructionPositions = _klN, SparsityVariancePositions = _n,
        };
    }
}

/// <summary>
/// SAEBench's core eval procedure on a SaeSharp model (<c>run_evals</c> of <c>sae_bench/evals/core/main.py</c>): the first
/// <c>n_eval_reconstruction_batches</c> batches of windows give CE and KL (the SAE spliced, and the hook zero-ablated, at
/// every position, or with <c>exclude_special_tokens_from_reconstruction</c> not at ignored tokens), the next
/// <c>n_eval_sparsity_variance_batches</c> batches everything else; the windows start over when the data runs out, as
/// SAELens's activation store does.
/// </summary>
public static class SaeBenchCoreEvaluator
{
    /// <summary>Evaluates <paramref name="sae"/> at its hook (<paramref name="hook"/> or its cfg's). <paramref name="windows"/>
    /// is enumerated afresh when exhausted. <paramref name="modelHooks"/>: hooks on every run (the model's processing).</summary>
    public static SaeBenchCoreResult Evaluate(HookedTransformer model, Sae sae, Func<IEnumerable<long[]>> windows, SaeBenchCoreConfig config,
        IReadOnlyList<long> ignoreTokens, string? hook = null, IReadOnlyList<(string Name, Func<Tensor, Tensor?> Fn)>? modelHooks = null,
        IProgress<WorkProgress>? progress = null, bool foldedDecoderNorms = false)
    {
        ArgumentNullException.ThrowIfNull(ignoreTokens);
        ArgumentNullException.ThrowIfNull(model);
        ArgumentNullException.ThrowIfNull(sae);
        ArgumentNullException.ThrowIfNull(windows);
        ArgumentNullException.ThrowIfNull(config);
        var attached = model.Attach(sae, hook) with { SeqposSlice = SeqposSlice.All };
        if (attached.IsTranscoder)
            throw new SaeSharpException("--saebench-json: SAEBench's core procedure is implemented here for an SAE that reconstructs its own hook " +
                "(not a transcoder)");
        // An SAE of one head (hook_head_index) is spliced into its head's slice, zero ablation zeroes that head alone and the
        // sparsity and variance read the head's slice, as SAELens's evals (single_head_replacement_hook,
        // single_head_zero_ablate_hook, x[:, :, head]) and sae eval's downstream metrics.
        int? head = attached.HeadIndex;
        var acc = new SaeBenchCoreAccumulator(sae.Cfg.DSae, ignoreTokens);
        var counter = new ProgressCounter(progress, "tokens")
        {
            Total = (long)(config.NEvalReconstructionBatches + config.NEvalSparsityVarianceBatches) * config.BatchSizePrompts * config.ContextSize,
        };
        using var source = new Cycle(windows);
        var hooks = modelHooks ?? [];
        for (int batch = 0; batch < config.NEvalReconstructionBatches + config.NEvalSparsityVarianceBatches; batch++)
        {
            using var scope = NewDisposeScope();
            using var _ = no_grad();
            var rows = Enumerable.Range(0, config.BatchSizePrompts).Select(_ => source.Next(config.ContextSize)).ToArray();
            var tokens = tensor(rows.SelectMany(r => r).ToArray()).view(rows.Length, config.ContextSize).to(model.Device);
            var keep = acc.Keep(tokens);
            string at = attached.Hook!;
            if (batch < config.NEvalReconstructionBatches)
            {
                var splice = config.ExcludeSpecialTokensFromReconstruction ? keep : ones_like(keep);
                Tensor Run(Func<Tensor, Tensor?>? fn) => model.Run(tokens, new RunOptions
                {
                    Hooks = fn is null ? hooks : [.. hooks, (at, fn)], ReturnNormalized = true,
                }).Logits!;
                var clean = Run(null);
                var spliced = Run(x =>
                {
                    var (recon, _) = SaeSplice.Splice(attached, x, HookRunner.None);
                    var at4 = x.dim() == 4 ? splice.unsqueeze(-1).unsqueeze(-1) : splice.unsqueeze(-1);
                    return torch.where(at4, recon.to(x.dtype), x);
                });
                var zero = Run(x =>
                {
                    if (head is not int h || x.dim() != 4) return zeros_like(x);
                    var z = x.clone();
                    z.select(2, h).fill_(TorchScalars.Of(0));
                    return z;
                });
                // One window's logits at a time: no [batch, pos, vocab] tensor.
                var ce = new List<Tensor>[3] { [], [], [] };
                var kl = new List<Tensor>[2] { [], [] };
                for (int w = 0; w < rows.Length; w++)
                {
                    // Each window's [1, pos, vocab] logits and log-probabilities are freed before the next.
                    using var windowScope = NewDisposeScope();
                    var t = tokens.narrow(0, w, 1);
                    var lc = TokenLosses.LogProbs(model.LogitsOf(clean.narrow(0, w, 1)));
                    var ls = TokenLosses.LogProbs(model.LogitsOf(spliced.narrow(0, w, 1)));
                    var lz = TokenLosses.LogProbs(model.LogitsOf(zero.narrow(0, w, 1)));
                    ce[0].Add(TokenLosses.NextTokenLoss(lc, t).MoveToOuterDisposeScope());
                    ce[1].Add(TokenLosses.NextTokenLoss(ls, t).MoveToOuterDisposeScope());
                    ce[2].Add(TokenLosses.NextTokenLoss(lz, t).MoveToOuterDisposeScope());
                    kl[0].Add(TokenLosses.Kl(lc, ls).MoveToOuterDisposeScope());
                    kl[1].Add(TokenLosses.Kl(lc, lz).MoveToOuterDisposeScope());
                }
                acc.AddReconstruction(tokens, cat(ce[0]), cat(ce[1]), cat(ce[2]), cat(kl[0]), cat(kl[1]));
            }
            else
            {
                var (_, cache) = model.Run(tokens, new RunOptions { CacheNames = [at], Hooks = hooks, StopAtLayer = model.HookPoints.LayerOf(at) + 1 });
                using var c = cache!;
                var x = c[at];
                var (recon, feats) = SaeSplice.Splice(attached, x, HookRunner.None);
                acc.AddSparsityVariance(tokens, SaeSplice.HeadSlice(x, head), SaeSplice.HeadSlice(recon, head), feats.reshape(rows.Length, config.ContextSize, -1));
            }
            counter.Add((long)rows.Length * config.ContextSize);
        }
        var m = acc.Result(config.ComputeFeaturewiseDensityStatistics);
        var features = new FeatureMetrics { FeatureDensity = m.FeatureDensity, ConsistentActivationHeuristic = m.ConsistentActivationHeuristic }
            .WithWeights(sae).WithMaxCosineSims(sae);
        return new SaeBenchCoreResult(m, features, sae.Cfg.Clone(), config, foldedDecoderNorms, ignoreTokens);
    }

    /// <summary>Windows of a fixed length, started over from the beginning when they run out (SAELens's store does so silently).</summary>
    private sealed class Cycle(Func<IEnumerable<long[]>> windows) : IDisposable
    {
        private IEnumerator<long[]>? _e;

        public long[] Next(int length)
        {
            for (int attempt = 0; attempt < 2; attempt++)
            {
                _e ??= windows().GetEnumerator();
                if (_e.MoveNext())
                {
                    if (_e.Current.Length != length)
                        throw new SaeSharpException($"SAEBench core: a context window has {_e.Current.Length} tokens, expected context_size {length}");
                    return _e.Current;
                }
                _e.Dispose();
                _e = null;
            }
            throw new SaeSharpException($"SAEBench core: the dataset gives no window of {length} tokens");
        }

        public void Dispose() => _e?.Dispose();
    }
}
