using SaeSharp.Hooks;
using SaeSharp.Saes;
using TorchSharp;
using static TorchSharp.torch;

namespace SaeSharp.Models;

/// <summary>Options of one forward pass: attention mask, stop-at-layer, hook functions, activations to cache.</summary>
public sealed class RunOptions
{
    /// <summary>
    /// [batch, pos] 1 for real tokens, 0 for padding (left or right). Null: all real. Positions count real tokens
    /// only (as HF generate computes position ids), so real tokens get the activations of an unpadded run.
    /// </summary>
    public Tensor? AttentionMask { get; init; }
    /// <summary>TransformerLens <c>stop_at_layer</c>: run only blocks &lt; L (negative counts from the end) and return no logits.</summary>
    public int? StopAtLayer { get; init; }
    /// <summary>
    /// TransformerLens <c>start_at_layer</c>: run only blocks ≥ L, starting from <see cref="Residual"/>, the residual stream
    /// entering block L (<c>blocks.L.hook_resid_pre</c>, or the last block's <c>hook_resid_post</c> for L = n_layers) of
    /// an earlier run on the same tokens. Hooks before block L do not fire; the tokens still give positions and attention.
    /// </summary>
    public int? StartAtLayer { get; init; }
    /// <summary>The residual stream [batch, pos, d_model] that block <see cref="StartAtLayer"/> starts from.</summary>
    public Tensor? Residual { get; init; }
    /// <summary>
    /// Return the final-normalised residual (<c>ln_final.hook_normalized</c>, [batch, pos, d_model]) instead of the logits:
    /// <see cref="HookedTransformer.LogitsOf"/> unembeds it, a few rows at a time when the vocabulary is large.
    /// </summary>
    public bool ReturnNormalized { get; init; }
    /// <summary>
    /// Hook functions (name or alias, fn): fn reads the activation and returns a replacement of the same shape, or null
    /// (an in-place edit of the activation also counts). fn runs inside the forward pass's dispose scope: the activation it
    /// is given, the replacement and every tensor fn makes are freed when the layer returns, so fn disposes nothing, and a
    /// tensor it keeps for later must leave the scope, <c>store.Add(act.clone().DetachFromDisposeScope())</c> (then the
    /// caller disposes it), or be cached instead (<see cref="CacheNames"/>).
    /// </summary>
    public IReadOnlyList<(string Name, Func<Tensor, Tensor?> Fn)>? Hooks { get; init; }
    /// <summary>Hooks whose activations are cached (names or aliases). Ignored when <see cref="CacheFilter"/> is set.</summary>
    public IEnumerable<string>? CacheNames { get; init; }
    /// <summary>Caches every hook whose TransformerLens name passes the filter.</summary>
    public Func<string, bool>? CacheFilter { get; init; }
    /// <summary>
    /// Record the autograd graph (default false: runs are inference runs under <c>no_grad</c>). Gradients then reach
    /// whatever requires them: tensors a hook mixes in, the returned and cached activations (<c>retain_grad</c>), and the
    /// weights after <see cref="HookedTransformer.SetRequiresGrad"/>.
    /// </summary>
    public bool Grad { get; init; }
    /// <summary>
    /// SAEs spliced into the run (SAELens <c>HookedSAETransformer</c>): each replaces its hook's activation by its
    /// reconstruction (plus the error term when asked), and its hook points <c>&lt;hook&gt;.hook_sae_*</c>
    /// (<see cref="SaeHookPoints"/>) can be hooked and cached. The hook's own name keeps the activation entering the SAE.
    /// A transcoder (<see cref="AttachedSae.OutputHook"/>) reads its hook and replaces its output hook's activation.
    /// </summary>
    public IReadOnlyList<AttachedSae>? Saes { get; init; }
    /// <summary>Set by the attribution pass (<c>Interventions/FeatureAttribution</c>).</summary>
    internal ISaeSpliceCapture? Capture { get; init; }
    /// <summary>
    /// In a <see cref="Grad"/> run, treat every attention pattern (<c>attn.hook_pattern</c>, detached after the other hooks
    /// there) and every norm's scale (LayerNorm's σ, RMSNorm's root mean square) as constants of the backward, as
    /// circuit-tracer's replacement model does (its <c>stop_gradient</c> on <c>hook_pattern</c> and <c>hook_scale</c>).
    /// The forward values are unchanged.
    /// </summary>
    public bool FreezeAttentionAndNorms { get; init; }
    /// <summary>With <see cref="FreezeAttentionAndNorms"/>: records this run's patterns and scales, or replays a recorded
    /// run's (integrated gradients on the frozen replacement model; <c>Interventions/FeatureAttribution</c>).</summary>
    internal FrozenValues? FrozenValues { get; init; }
    /// <summary>Keys and values of the tokens this model ran on before (a KV-cached run that follows a generation step by
    /// step: <c>CrossCoderInterventions.Generate</c>'s clean runs); the run appends its tokens to it.</summary>
    internal KvCache? KvCache { get; init; }
}

/// <summary>
/// A causal transformer language model with TransformerLens hook points, loaded from a Hugging Face folder
/// (<see cref="ModelLoader.FromPretrained"/>). Inputs are token ids [batch, pos] int64; logits are float32
/// [batch, pos, d_vocab] (float64 for a float64 model). Runs are inference runs (no gradients) unless <see cref="RunOptions.Grad"/> asks for autograd.
/// </summary>
[System.Diagnostics.CodeAnalysis.SuppressMessage("Naming", "CA1708", Justification = "forward is TorchSharp's override (lower case by its convention); Forward(tokens, mask) is the SaeSharp entry point callers use")]
public abstract partial class HookedTransformer : nn.Module<Tensor, Tensor>
{
    /// <summary>The model's shape in TransformerLens terms (n_layers, d_model, d_vocab, ...).</summary>
    public TransformerConfig Config { get; }
    /// <summary>The model's hook names and their aliases (Hugging Face module paths).</summary>
    public HookPoints HookPoints { get; }
    /// <summary>Every hook name of this model in firing order (for <c>sae model info</c>).</summary>
    public IReadOnlyList<string> HookNames => HookPoints.Names;
    /// <summary>The model adds learned position embeddings (W_pos: GPT-2, GPT-Neo, OPT), so it has no position past
    /// n_ctx; rotary (Llama, Qwen, NeoX, Gemma, Phi, GPT-J) and ALiBi (BLOOM) positions run on past it, as Hugging Face's
    /// models do. Every check of a sequence against n_ctx asks this.</summary>
    public bool LearnedPositions => HookPoints.HasPosEmbed;

    private protected HookedTransformer(string name, TransformerConfig config, HookPoints hookPoints) : base(name)
    {
        Config = config;
        HookPoints = hookPoints;
    }

    private bool _disposed;

    /// <summary>Frees the weights; a run after it is an <see cref="ObjectDisposedException"/>.</summary>
    protected override void Dispose(bool disposing)
    {
        _disposed = true;
        base.Dispose(disposing);
    }

    /// <summary>The device the weights are on (<c>model.to(device)</c> moves them); runs take their tokens there.</summary>
    public Device Device => parameters().FirstOrDefault()?.device ?? CPU;

    /// <summary>
    /// TorchSharp's <c>forward</c>, run by <c>model.call(tokens)</c> (which also fires TorchSharp module hooks): the logits
    /// [batch, pos, d_vocab] of <paramref name="tokens"/> [batch, pos] int64, an inference run without hooks or mask, as
    /// <see cref="Forward"/>. <see cref="Run"/> takes every option (<see cref="RunOptions"/>: hooks, cache, SAEs, ...).
    /// </summary>
    public override Tensor forward(Tensor tokens) => Forward(tokens);

    /// <summary>Logits [batch, pos, d_vocab] float32 of <paramref name="tokens"/> [batch, pos] int64 (an inference run
    /// without hooks); <paramref name="attentionMask"/> [batch, pos] marks real tokens 1 and padding 0.</summary>
    public Tensor Forward(Tensor tokens, Tensor? attentionMask = null)
    {
        using var _ = no_grad();
        return ForwardCore(tokens, attentionMask, HookRunner.None, null, null)!;
    }

    /// <summary>General forward pass: hooks, cache and stop-at-layer together. Dispose the result's cache.</summary>
    public (Tensor? Logits, ActivationCache? Cache) Run(Tensor tokens, RunOptions options)
    {
        int? stop = NormalizeStop(options.StopAtLayer);
        var start = NormalizeStart(options.StartAtLayer, options.Residual, stop);
        var saes = ResolveSaes(options.Saes);
        var hooks = options.Hooks?.Select(h => (ResolveHook(h.Name, saes, stop, start?.Layer), h.Fn)).ToList();
        if (options.FreezeAttentionAndNorms)
        {
            hooks ??= [];
            hooks.AddRange(HookPoints.Names.Where(n => n.EndsWith(".attn.hook_pattern", StringComparison.Ordinal))
                .Select(n => (n, (Func<Tensor, Tensor?>)(p => options.FrozenValues?.Take(p.detach(), $"'{n}'") ?? p.detach()))));
        }
        Func<string, bool>? filter = options.CacheFilter;
        if (filter is null && options.CacheNames is not null)
        {
            var set = options.CacheNames.Select(n => ResolveHook(n, saes, stop, start?.Layer)).ToHashSet(StringComparer.Ordinal);
            filter = set.Contains;
        }
        if (start is not null && saes is not null)
            foreach (var a in saes) CheckFires(a.Hook, stop, start.Value.Layer);
        var cache = filter is null ? null : new ActivationCache(HookPoints);
        try
        {
            using var _ = options.Grad ? enable_grad() : no_grad();
            using var runner = new HookRunner(hooks, filter, cache, saes, options.Capture);
            bool frozen = NormScales.Frozen;
            var values = NormScales.Values;
            NormScales.Frozen = options.FreezeAttentionAndNorms;
            NormScales.Values = options.FreezeAttentionAndNorms ? options.FrozenValues : null;
            try
            {
                var logits = ForwardCore(tokens, options.AttentionMask, runner, stop, options.KvCache, start, options.ReturnNormalized);
                return (logits, cache);
            }
            finally
            {
                NormScales.Frozen = frozen;
                NormScales.Values = values;
            }
        }
        catch
        {
            cache?.Dispose();
            throw;
        }
    }

    /// <summary>
    /// TransformerLens <c>run_with_cache</c>: caches the named hooks (names or aliases; null = TransformerLens's default set,
    /// <see cref="HookPoints.DefaultNames"/>: the opt-in hooks such as <c>attn.hook_result</c> only when named), returns logits
    /// (null when <paramref name="stopAtLayer"/> is set) and the cache in a <see cref="CachedRun"/>, which the caller
    /// disposes (<c>using var run = model.RunWithCache(...); var (logits, cache) = run;</c>).
    /// </summary>
    public CachedRun RunWithCache(Tensor tokens, IEnumerable<string>? hooks = null,
        int? stopAtLayer = null, Tensor? attentionMask = null)
    {
        var opts = hooks is null
            ? new RunOptions { AttentionMask = attentionMask, StopAtLayer = stopAtLayer, CacheFilter = n => !HookPoints.IsOptIn(n) }
            : new RunOptions { AttentionMask = attentionMask, StopAtLayer = stopAtLayer, CacheNames = hooks.ToList() };
        return Cached(Run(tokens, opts));
    }

    /// <summary><c>run_with_cache</c> with a filter on TransformerLens hook names (<c>names_filter</c>).</summary>
    public CachedRun RunWithCache(Tensor tokens, Func<string, bool> filter,
        int? stopAtLayer = null, Tensor? attentionMask = null) =>
        Cached(Run(tokens, new RunOptions { AttentionMask = attentionMask, StopAtLayer = stopAtLayer, CacheFilter = filter }));

    /// <summary><c>run_with_cache</c> inside TransformerLens's <c>hooks(fwd_hooks=...)</c>: <paramref name="options"/> with its
    /// <see cref="RunOptions.Hooks"/> and what to cache (<see cref="RunOptions.CacheNames"/>, possibly empty, or
    /// <see cref="RunOptions.CacheFilter"/>).</summary>
    public CachedRun RunWithCache(Tensor tokens, RunOptions options)
    {
        ArgumentNullException.ThrowIfNull(options);
        if (options.CacheNames is null && options.CacheFilter is null)
            throw new ArgumentException("RunWithCache: the options name no hook to cache (set CacheNames, possibly empty, or CacheFilter)", nameof(options));
        return Cached(Run(tokens, options));
    }

    /// <summary>A cached run's result as a <see cref="CachedRun"/> (the options asked for a cache).</summary>
    internal static CachedRun Cached((Tensor? Logits, ActivationCache? Cache) run) => new(run.Logits, run.Cache!);

    /// <summary>TransformerLens <c>run_with_hooks</c>: each fn reads or replaces its activation (null = unchanged). The
    /// tensors a hook sees and makes are freed when its layer returns (<see cref="RunOptions.Hooks"/> says how to keep one);
    /// the logits are the caller's to dispose.</summary>
    public Tensor RunWithHooks(Tensor tokens, params (string Name, Func<Tensor, Tensor?> Fn)[] hooks) =>
        Run(tokens, new RunOptions { Hooks = hooks }).Logits!;

    /// <summary><c>run_with_hooks</c> with an attention mask and stop-at-layer (then the result is null).</summary>
    public Tensor? RunWithHooks(Tensor tokens, Tensor? attentionMask, int? stopAtLayer, params (string Name, Func<Tensor, Tensor?> Fn)[] hooks) =>
        Run(tokens, new RunOptions { AttentionMask = attentionMask, StopAtLayer = stopAtLayer, Hooks = hooks }).Logits;

    /// <summary>
    /// Greedy or sampled continuation of <paramref name="tokens"/> with a KV cache; hooks in the options stay active
    /// on every step (steering). Pad batched prompts on the left and pass their attention mask.
    /// </summary>
    public GenerationResult Generate(Tensor tokens, int maxNewTokens, GenerationOptions? options = null) =>
        Generation.Run(this, tokens, maxNewTokens, options ?? new GenerationOptions());

    /// <summary>
    /// Turns gradients on or off for every weight (all off after loading). With them on, a <see cref="RunOptions.Grad"/>
    /// run followed by <c>backward()</c> fills each weight's <c>grad</c>, as for training the model.
    /// </summary>
    public HookedTransformer SetRequiresGrad(bool requiresGrad)
    {
        foreach (var p in parameters()) p.requires_grad = requiresGrad;
        return this;
    }

    /// <summary>
    /// The unembedding W_Uᵀ, [d_vocab, d_model] (HF <c>lm_head</c> / <c>embed_out</c>, or the tied input embedding), for
    /// logit-lens readouts such as a feature's top tokens (W_dec[F]·W_U). A view of the weight, without gradient: a new
    /// handle the caller disposes (which leaves the weight alone).
    /// </summary>
    public Tensor UnembedWeight()
    {
        var sd = state_dict();
        foreach (var key in new[] { "lm_head.weight", "embed_out.weight", "transformer.wte.weight", "model.embed_tokens.weight" })
            if (sd.TryGetValue(key, out var w)) return w.detach();
        throw new SaeSharpException($"{Config.ModelName}: no unembedding weight found (looked for lm_head, embed_out and tied embeddings)");
    }

    /// <summary>
    /// Logits of final-normalised rows (<see cref="RunOptions.ReturnNormalized"/>), [..., d_model] → [..., d_vocab] float32
    /// (float64 for a float64 model): the unembedding with its bias and soft cap, as the last step of a full run.
    /// </summary>
    public Tensor LogitsOf(Tensor normalized)
    {
        using var _ = no_grad();
        using var scope = NewDisposeScope();
        if (normalized.shape[^1] != Config.DModel)
            throw new SaeSharpException($"LogitsOf: rows have {normalized.shape[^1]} values, but d_model is {Config.DModel}");
        return UnembedNormalized(normalized).to(LogitType).MoveToOuterDisposeScope();
    }

    private ScalarType LogitType => Config.Dtype == ScalarType.Float64 ? ScalarType.Float64 : ScalarType.Float32;

    /// <summary>The residual stream that block <paramref name="layer"/> starts from: its hook_resid_pre, or the last block's hook_resid_post.</summary>
    public string ResidualHookEntering(int layer)
    {
        if (layer < 0 || layer > Config.NLayers)
            throw new SaeSharpException($"layer {layer} is out of range for a model with {Config.NLayers} layers");
        return layer < Config.NLayers ? HookPoints.Blocks[layer].ResidPre : HookPoints.Blocks[layer - 1].ResidPost;
    }

    private (int Layer, Tensor Residual)? NormalizeStart(int? start, Tensor? residual, int? stop)
    {
        if (start is not int s)
        {
            if (residual is not null) throw new SaeSharpException("a residual to start from was given without StartAtLayer");
            return null;
        }
        int l = s < 0 ? Config.NLayers + s : s;
        if (l < 0 || l > Config.NLayers)
            throw new SaeSharpException($"startAtLayer {s} is out of range for a model with {Config.NLayers} layers (use -{Config.NLayers}..{Config.NLayers})");
        if (stop is int st && st < l) throw new SaeSharpException($"startAtLayer {l} is after stopAtLayer {st}");
        if (residual is null) throw new SaeSharpException($"startAtLayer {l} needs the residual stream entering block {l} ({ResidualHookEntering(l)})");
        return (l, residual);
    }

    private int? NormalizeStop(int? stop)
    {
        if (stop is not int s) return null;
        int l = s < 0 ? Config.NLayers + s : s;
        if (l < 0 || l > Config.NLayers)
            throw new SaeSharpException($"stopAtLayer {s} is out of range for a model with {Config.NLayers} layers (use -{Config.NLayers}..{Config.NLayers})");
        return l;
    }

    /// <summary>
    /// Values per token at <paramref name="hook"/> (a hook name or alias), heads flattened: d_mlp for <c>mlp.hook_pre/post</c>
    /// and a mixture of experts' <c>mlp.experts.{e}.hook_*</c>, num_experts for <c>mlp.hook_expert_weights</c>, experts_per_token
    /// for <c>mlp.hook_expert_indices</c>, the shared expert's width for <c>mlp.shared_expert.hook_*</c> and 1 for
    /// <c>mlp.hook_shared_expert_gate</c> and the norms' <c>hook_scale</c>, heads·d_head for the attention's q/k/v/z (key-value heads for k and v),
    /// heads·d_model for attn.hook_result, hook_attn_in and hook_q/k/v_input, word_embed_proj_dim for hook_embed and
    /// ln_final.hook_normalized of facebook/opt-350m (<see cref="TransformerConfig.WordEmbedProjDim"/>), d_model for the rest.
    /// An attention pattern or its scores have no per-token width (a <see cref="SaeSharpException"/>).
    /// </summary>
    public int HookWidth(string hook)
    {
        string name = HookPoints.Resolve(hook);
        var c = Config;
        if (name.EndsWith("attn.hook_pattern", StringComparison.Ordinal) || name.EndsWith("attn.hook_attn_scores", StringComparison.Ordinal))
            throw new SaeSharpException($"hook '{name}' holds attention {(name.EndsWith("pattern", StringComparison.Ordinal) ? "patterns" : "scores")} [batch, head, query, key], not per-token activations");
        if (name.EndsWith(".hook_scale", StringComparison.Ordinal)) return 1;
        if (c.WordEmbedProjDim is int wordEmbed && name is HookPoints.Embed or HookPoints.LnFinal) return wordEmbed;
        if (name.Contains(".mlp.experts.", StringComparison.Ordinal)) return c.MoeDMlp ?? c.DMlp;
        if (name.EndsWith("mlp.hook_pre", StringComparison.Ordinal) || name.EndsWith("mlp.hook_post", StringComparison.Ordinal)
            || name.EndsWith("mlp.hook_pre_linear", StringComparison.Ordinal)) return c.DMlp;
        if (name.EndsWith("attn.hook_kv_latent", StringComparison.Ordinal)) return c.KvLoraRank;
        if (name.EndsWith("attn.hook_q_latent", StringComparison.Ordinal)) return c.QLoraRank ?? 0;
        if (c.DHeadQk is int dq && (name.EndsWith("attn.hook_q", StringComparison.Ordinal) || name.EndsWith("attn.hook_k", StringComparison.Ordinal)
            || name.EndsWith("attn.hook_rot_q", StringComparison.Ordinal) || name.EndsWith("attn.hook_rot_k", StringComparison.Ordinal))) return c.NHeads * dq;
        if (name.Contains(".mlp.shared_expert.", StringComparison.Ordinal)) return c.SharedExpertDMlp;
        if (name.EndsWith("mlp.hook_shared_expert_gate", StringComparison.Ordinal)) return 1;
        if (name.EndsWith("mlp.hook_expert_weights", StringComparison.Ordinal)) return c.NumExperts;
        if (name.EndsWith("mlp.hook_expert_indices", StringComparison.Ordinal)) return c.ExpertsPerToken;
        bool perHeadDModel = PerHeadDModel(name);
        return HeadsAt(name) is int heads ? heads * (perHeadDModel ? c.DModel : c.DHead) : c.DModel;
    }

    /// <summary>The shape of what <paramref name="hook"/> (a name or alias) holds, as TransformerLens's cache gives it:
    /// <c>[batch, pos, 4, 32]</c> for an attention hook's heads, <c>[batch, 4, query_pos, key_pos]</c> for
    /// <c>hook_attn_scores</c> and <c>hook_pattern</c>, <c>[batch, pos, width]</c> (<see cref="HookWidth"/>) for the rest.</summary>
    public string HookShape(string hook)
    {
        string name = HookPoints.Resolve(hook);
        if (name.EndsWith("attn.hook_pattern", StringComparison.Ordinal) || name.EndsWith("attn.hook_attn_scores", StringComparison.Ordinal))
            return $"[batch, {Config.NHeads}, query_pos, key_pos]";
        int width = HookWidth(name);
        return HeadsAt(name) is int heads ? $"[batch, pos, {heads}, {width / heads}]" : $"[batch, pos, {width}]";
    }

    /// <summary>A per-head hook of d_model values per head: <c>attn.hook_result</c>, <c>hook_attn_in</c>, <c>hook_q/k/v_input</c>.</summary>
    private static bool PerHeadDModel(string name) =>
        name.EndsWith("attn.hook_result", StringComparison.Ordinal) || name.EndsWith(".hook_attn_in", StringComparison.Ordinal)
        || name.EndsWith(".hook_q_input", StringComparison.Ordinal) || name.EndsWith(".hook_k_input", StringComparison.Ordinal)
        || name.EndsWith(".hook_v_input", StringComparison.Ordinal);

    /// <summary>The number of heads of an attention hook [batch, pos, head, d_head] (or [batch, pos, head, d_model]: attn.hook_result,
    /// hook_attn_in, hook_q/k/v_input), or null for any other hook.</summary>
    internal int? HeadsAt(string name)
    {
        if (name.EndsWith(".attn.hook_k", StringComparison.Ordinal) || name.EndsWith(".attn.hook_v", StringComparison.Ordinal)
            || name.EndsWith(".attn.hook_rot_k", StringComparison.Ordinal) || name.EndsWith(".hook_k_input", StringComparison.Ordinal)
            || name.EndsWith(".hook_v_input", StringComparison.Ordinal)) return Config.NKvHeads;
        if (name.EndsWith(".hook_attn_in", StringComparison.Ordinal) || name.EndsWith(".hook_q_input", StringComparison.Ordinal)) return Config.NHeads;
        return name.Contains(".attn.hook_", StringComparison.Ordinal) && !name.EndsWith("attn.hook_pattern", StringComparison.Ordinal)
            && !name.EndsWith("attn.hook_attn_scores", StringComparison.Ordinal)
            && !name.EndsWith("_latent", StringComparison.Ordinal) ? Config.NHeads : null;
    }

    /// <summary>
    /// Checks, before any run, that <paramref name="sae"/> can read <paramref name="hook"/> (null: its <c>metadata.hook_name</c>):
    /// the hook exists and gives d_in values per token (d_head of the SAE's <c>hook_head_index</c> head on an attention hook).
    /// Returns the hook's TransformerLens name; a misfit is a <see cref="SaeSharpException"/> naming both widths.
    /// Every splice, intervention and encoder of an SAE in a model checks through this.
    /// </summary>
    public string CheckSaeFits(Sae sae, string? hook = null)
    {
        ArgumentNullException.ThrowIfNull(sae);
        string given = sae.Cfg.Metadata.HookOr(hook);
        string name = HookPoints.Resolve(given);
        if (name.EndsWith("mlp.hook_expert_indices", StringComparison.Ordinal))
            throw new SaeSharpException($"hook '{name}' holds the indices of the experts chosen (integers), not activations an SAE can read " +
                "(the router's weights are mlp.hook_expert_weights)");
        int width = HookWidth(name);
        string what = "";
        if (sae.Cfg.Metadata.HookHeadIndex is int h && HeadsAt(name) is int heads)
        {
            if (h < 0 || h >= heads)
                throw new SaeSharpException($"SAE at '{name}' reads head {h} (hook_head_index), but the hook has {heads} heads (0..{heads - 1})");
            width /= heads;
            what = $" (head {h}, {(PerHeadDModel(name) ? "d_model" : "d_head")})";
        }
        if (width != sae.Cfg.DIn)
        {
            string trained = sae.Cfg.Metadata.HookName is { } t && t != given && t != name ? $"; the SAE's cfg hook_name is '{t}'" : "";
            string perHead = sae.Cfg.Metadata.HookHeadIndex is null && HeadsAt(name) is not null && sae.Cfg.DIn == Config.DHead
                ? $"; d_in is d_head={Config.DHead}: an SAE of one head gives it in metadata.hook_head_index" : "";
            throw new SaeSharpException($"SAE at '{name}' has d_in={sae.Cfg.DIn} but the hook gives {width} values per token{what}{trained}{perHead}");
        }
        if (sae.Cfg.Metadata.HookHeadIndex is int head && HeadsAt(name) is null)
            throw new SaeSharpException($"SAE at '{name}' reads head {head} (hook_head_index), but '{name}' has no head dimension " +
                "(hook_head_index picks a head of an attention hook such as attn.hook_z)");
        return name;
    }

    /// <summary>The attached SAEs with their hooks as TransformerLens names of this model (a transcoder's output hook
    /// checked: <see cref="CheckOutputFits"/>).</summary>
    internal IReadOnlyList<AttachedSae>? ResolveSaes(IReadOnlyList<AttachedSae>? saes) =>
        saes?.Select(CheckOutputFits).ToList();

    /// <summary>
    /// <paramref name="sae"/> attached at <paramref name="hook"/> (null: its <c>metadata.hook_name</c>) and, for a transcoder,
    /// replacing <paramref name="outputHook"/> (null: its <c>metadata.hook_name_out</c>), checked against this model before
    /// any run: the input as <see cref="CheckSaeFits"/>; a transcoder's output hook exists, fires after the input hook and
    /// gives d_out values per token. Hooks are returned as TransformerLens names; a misfit is a <see cref="SaeSharpException"/>.
    /// </summary>
    public AttachedSae Attach(Sae sae, string? hook = null, bool useErrorTerm = false, string? outputHook = null) =>
        CheckOutputFits(new AttachedSae(sae, hook, useErrorTerm, outputHook) { Hook = CheckSaeFits(sae, hook) });

    /// <summary><paramref name="a"/> with its hooks resolved; a transcoder's output hook checked (exists, fires after the
    /// input hook, width d_out); an SAE with d_out ≠ d_in and no output hook refused.</summary>
    private AttachedSae CheckOutputFits(AttachedSae a)
    {
        var r = a.ResolvedFor(HookPoints);
        int dOut = r.Sae.Cfg.DOutOrIn;
        if (!r.IsTranscoder)
        {
            if (dOut != r.Sae.Cfg.DIn)
                throw new SaeSharpException($"SAE at '{r.Hook}' has d_out={dOut} != d_in={r.Sae.Cfg.DIn} but no output hook: a transcoder is " +
                    "spliced from its input hook to its output hook (metadata.hook_name_out, or the output hook given when attaching it)");
            return r;
        }
        int width = HookWidth(r.OutputHook!);
        if (width != dOut)
            throw new SaeSharpException($"transcoder reading '{r.Hook}' and replacing '{r.OutputHook}' has d_out={dOut} but '{r.OutputHook}' gives {width} values per token");
        return r;
    }

    /// <summary>A hook name or alias as a TransformerLens name; SAE hook points (<c>&lt;hook&gt;.hook_sae_*</c>) need an SAE at that hook.</summary>
    internal string ResolveHook(string name, IReadOnlyList<AttachedSae>? saes, int? stop, int? start = null)
    {
        if (name is not null && SaeHookPoints.TrySplit(name.Trim(), out var site, out var suffix))
        {
            var hook = HookPoints.Resolve(site);
            var at = saes?.FirstOrDefault(a => a.Hook == hook)
                ?? throw new SaeSharpException($"hook '{name}': no SAE is attached at '{hook}'" +
                    (saes is { Count: > 0 } ? $" (SAEs are attached at: {string.Join(", ", saes.Select(a => a.Hook))})" : ""));
            CheckFires(at.FiresAt(suffix), stop, start);
            return SaeHookPoints.Name(hook, suffix);
        }
        return CheckFires(HookPoints.Resolve(name!), stop, start);
    }

    private string CheckFires(string hook, int? stop, int? start)
    {
        if (stop is int s && HookPoints.LayerOf(hook) >= s)
            throw new SaeSharpException($"hook '{hook}' never fires with stopAtLayer {s} (only blocks < {s} run; use stopAtLayer {HookPoints.LayerOf(hook) + 1} or more, or none for ln_final)");
        if (start is int st && HookPoints.LayerOf(hook) < st)
            throw new SaeSharpException($"hook '{hook}' never fires with startAtLayer {st} (only blocks ≥ {st} run)");
        return hook;
    }

    internal Tensor? ForwardCore(Tensor tokens, Tensor? attentionMask, HookRunner hooks, int? stopAtLayer, KvCache? kv,
        (int Layer, Tensor Residual)? start = null, bool returnNormalized = false)
    {
        ArgumentNullException.ThrowIfNull(tokens);
        ObjectDisposedException.ThrowIf(_disposed, this);
        NativeRuntime.EnsureSignalStack();
        if (tokens.IsInvalid) throw new SaeSharpException("tokens: the tensor has been disposed");
        if (tokens.dim() != 2)
            throw new SaeSharpException($"tokens must be [batch, pos], got shape [{string.Join(", ", tokens.shape)}]");
        if (tokens.dtype is not (ScalarType.Int64 or ScalarType.Int32 or ScalarType.Int16 or ScalarType.Byte))
            throw new SaeSharpException($"tokens must be integer ids, got dtype {tokens.dtype}");
        long b = tokens.shape[0], s = tokens.shape[1];
        if (s == 0 || b == 0) throw new SaeSharpException($"tokens must be non-empty, got shape [{b}, {s}]");
        long past = kv?.Length ?? 0;

        using var scope = NewDisposeScope();
        var dev = Device;
        var ids = tokens.to(ScalarType.Int64).to(dev);
        long min = ids.min().item<long>(), max = ids.max().item<long>();
        if (min < 0 || max >= Config.DVocab)
            throw new SaeSharpException($"token id {(min < 0 ? min : max)} is outside the vocabulary 0..{Config.DVocab - 1} of {Config.ModelName}");

        Tensor newMask;
        if (attentionMask is null) newMask = ones(b, s, dtype: ScalarType.Bool, device: dev);
        else
        {
            if (attentionMask.dim() != 2 || attentionMask.shape[0] != b || attentionMask.shape[1] != s)
                throw new SaeSharpException($"attention mask has shape [{string.Join(", ", attentionMask.shape)}] but tokens are [{b}, {s}]");
            newMask = attentionMask.ne(TorchScalars.Of(0)).to(dev);
        }
        var full = kv?.Mask is { } pm ? cat([pm, newMask], 1) : newMask;
        long total = past + s;
        // Positions as HF computes them for padded batches: cumulative count of real tokens, minus one.
        var positions = (full.to(ScalarType.Int64).cumsum(1) - TorchScalars.Of(1)).clamp_min(TorchScalars.Of(0)).narrow(1, past, s);
        if (LearnedPositions && positions.max().item<long>() >= Config.NCtx)
            throw new SaeSharpException($"sequence of {positions.max().item<long>() + 1} tokens exceeds the context length n_ctx={Config.NCtx} of {Config.ModelName}");
        using Scalar totalScalar = total.ToScalar(), sScalar = s.ToScalar(), pastScalar = past.ToScalar();
        var causal = TorchScalars.Arange(totalScalar, device: dev).unsqueeze(0).le(TorchScalars.Arange(sScalar, device: dev).add(pastScalar, TorchScalars.One).unsqueeze(1)); // [s, total]
        var allowed = causal.unsqueeze(0).unsqueeze(0).logical_and(full.unsqueeze(1).unsqueeze(1)); // [b, 1, s, total]
        kv?.SetMask(full);

        var ctx = new ForwardContext { Hooks = hooks, Allowed = allowed, Positions = positions, Kv = kv };
        var outerPositions = HookRunner.CurrentPositions;
        var outerMask = HookRunner.CurrentMask;
        long outerPast = HookRunner.CurrentPast;
        HookRunner.CurrentPositions = positions;
        HookRunner.CurrentMask = newMask;
        HookRunner.CurrentPast = past;
        try
        {
            Tensor resid;
            int first = 0;
            if (start is var (layer, r))
            {
                if (kv is not null) throw new SaeSharpException("startAtLayer cannot be used with a KV cache");
                if (r.dim() != 3 || r.shape[0] != b || r.shape[1] != s || r.shape[2] != Config.DModel)
                    throw new SaeSharpException($"the residual to start from has shape [{string.Join(", ", r.shape)}], expected [{b}, {s}, {Config.DModel}]");
                // The embedding step also sets the rotary tables: run it without hooks and drop its output.
                var embedCtx = new ForwardContext { Hooks = HookRunner.None, Allowed = allowed, Positions = positions };
                Embed(ids, embedCtx);
                ctx.RotaryCos = embedCtx.RotaryCos;
                ctx.RotarySin = embedCtx.RotarySin;
                ctx.LocalRotary = embedCtx.LocalRotary;
                resid = r.to(Config.Dtype).alias();
                first = layer;
            }
            else resid = Embed(ids, ctx);
            int n = stopAtLayer ?? Config.NLayers;
            for (int i = first; i < n; i++)
            {
                using var blockScope = NewDisposeScope();
                resid = RunBlock(i, resid, ctx).MoveToOuterDisposeScope();
            }
            kv?.Advance(s);
            if (stopAtLayer is not null) return null;
            var normalized = FinalNorm(resid, ctx);
            if (returnNormalized) return normalized.MoveToOuterDisposeScope();
            return UnembedNormalized(normalized).to(LogitType).MoveToOuterDisposeScope();
        }
        finally
        {
            HookRunner.CurrentPositions = outerPositions;
            HookRunner.CurrentMask = outerMask;
            HookRunner.CurrentPast = outerPast;
        }
    }

    /// <summary>Embeddings (firing hook_embed / hook_pos_embed); returns the residual stream [batch, pos, d_model].</summary>
    private protected abstract Tensor Embed(Tensor tokens, ForwardContext ctx);

    /// <summary>Block <paramref name="layer"/> with its hooks, resid_pre in, resid_post out.</summary>
    private protected abstract Tensor RunBlock(int layer, Tensor resid, ForwardContext ctx);

    /// <summary>Final layer norm, firing ln_final.hook_normalized.</summary>
    private protected abstract Tensor FinalNorm(Tensor resid, ForwardContext ctx);

    /// <summary>Unembedding of final-normalised rows (bias and soft cap included), in the model's dtype or float32.</summary>
    private protected abstract Tensor UnembedNormalized(Tensor x);

    /// <summary>Gives a model whose unembedding is its token embedding an <c>lm_head</c> of its own (a copy), so weight
    /// processing changes W_U without W_E, as TransformerLens's separate <c>unembed.W_U</c>; nothing where W_U is its own.</summary>
    internal virtual void UntieEmbeddings()
    {
    }
}
