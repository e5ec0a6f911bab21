using SaeSharp.Hooks;
using SaeSharp.Interventions;
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
    /// <summary>Hook functions (name or alias, fn): fn reads the activation and returns a replacement of the same shape, or null.</summary>
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
    /// </summary>
    public IReadOnlyList<AttachedSae>? Saes { get; init; }
    /// <summary>Set by the attribution pass (<see cref="FeatureAttribution"/>).</summary>
    internal AttributionCapture? Capture { get; init; }
}

/// <summary>
/// A causal transformer language model with TransformerLens hook points, loaded from a Hugging Face folder
/// (<see cref="ModelLoader.FromPretrained"/>). Inputs are token ids [batch, pos] int64; logits are float32
/// [batch, pos, d_vocab] (float64 for a float64 model). Runs are inference runs (no gradients) unless <see cref="RunOptions.Grad"/> asks for autograd.
/// </summary>
public abstract class HookedTransformer : nn.Module
{
    public TransformerConfig Config { get; }
    public HookPoints HookPoints { get; }
    /// <summary>Every hook name of this model in firing order (for <c>sae model info</c>).</summary>
    public IReadOnlyList<string> HookNames => HookPoints.Names;

    private protected HookedTransformer(string name, TransformerConfig config, HookPoints hookPoints) : base(name)
    {
        Config = config;
        HookPoints = hookPoints;
    }

    /// <summary>Logits [batch, pos, d_vocab] float32.</summary>
    public Tensor Forward(Tensor tokens, Tensor? attentionMask = null)
    {
        using var _ = no_grad();
        return ForwardCore(tokens, attentionMask, HookRunner.None, null, null)!;
    }

    /// <summary>General forward pass: hooks, cache and stop-at-layer together. Dispose the result's cache.</summary>
    public (Tensor? Logits, ActivationCache? Cache) Run(Tensor tokens, RunOptions options)
    {
        int? stop = NormalizeStop(options.StopAtLayer);
        var saes = ResolveSaes(options.Saes);
        var hooks = options.Hooks?.Select(h => (ResolveHook(h.Name, saes, stop), h.Fn)).ToList();
        Func<string, bool>? filter = options.CacheFilter;
        if (filter is null && options.CacheNames is not null)
        {
            var set = options.CacheNames.Select(n => ResolveHook(n, saes, stop)).ToHashSet(StringComparer.Ordinal);
            filter = set.Contains;
        }
        var cache = filter is null ? null : new ActivationCache(HookPoints);
        try
        {
            using var _ = options.Grad ? enable_grad() : no_grad();
            var runner = new HookRunner(hooks, filter, cache, saes, options.Capture);
            var logits = ForwardCore(tokens, options.AttentionMask, runner, stop, null);
            return (logits, cache);
        }
        catch
        {
            cache?.Dispose();
            throw;
        }
    }

    /// <summary>
    /// TransformerLens <c>run_with_cache</c>: caches the named hooks (names or aliases; null = all), returns logits
    /// (null when <paramref name="stopAtLayer"/> is set) and the cache, which the caller disposes.
    /// </summary>
    public (Tensor? Logits, ActivationCache Cache) RunWithCache(Tensor tokens, IEnumerable<string>? hooks = null,
        int? stopAtLayer = null, Tensor? attentionMask = null)
    {
        var opts = hooks is null
            ? new RunOptions { AttentionMask = attentionMask, StopAtLayer = stopAtLayer, CacheFilter = _ => true }
            : new RunOptions { AttentionMask = attentionMask, StopAtLayer = stopAtLayer, CacheNames = hooks.ToList() };
        var (logits, cache) = Run(tokens, opts);
        return (logits, cache!);
    }

    /// <summary><c>run_with_cache</c> with a filter on TransformerLens hook names (<c>names_filter</c>).</summary>
    public (Tensor? Logits, ActivationCache Cache) RunWithCache(Tensor tokens, Func<string, bool> filter,
        int? stopAtLayer = null, Tensor? attentionMask = null)
    {
        var (logits, cache) = Run(tokens, new RunOptions { AttentionMask = attentionMask, StopAtLayer = stopAtLayer, CacheFilter = filter });
        return (logits, cache!);
    }

    /// <summary>TransformerLens <c>run_with_hooks</c>: each fn reads or replaces its activation (null = unchanged).</summary>
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
    /// logit-lens readouts such as a feature's top tokens (W_dec[F]·W_U). A view of the weight, without gradient.
    /// </summary>
    public Tensor UnembedWeight()
    {
        var sd = state_dict();
        foreach (var key in new[] { "lm_head.weight", "embed_out.weight", "transformer.wte.weight", "model.embed_tokens.weight" })
            if (sd.TryGetValue(key, out var w)) return w.detach();
        throw new SaeSharpException($"{Config.ModelName}: no unembedding weight found (looked for lm_head, embed_out and tied embeddings)");
    }

    private int? NormalizeStop(int? stop)
    {
        if (stop is not int s) return null;
        int l = s < 0 ? Config.NLayers + s : s;
        if (l < 0 || l > Config.NLayers)
            throw new SaeSharpException($"stopAtLayer {s} is out of range for a model with {Config.NLayers} layers (use -{Config.NLayers}..{Config.NLayers})");
        return l;
    }

    /// <summary>The attached SAEs with their hooks as TransformerLens names of this model.</summary>
    internal IReadOnlyList<AttachedSae>? ResolveSaes(IReadOnlyList<AttachedSae>? saes) =>
        saes?.Select(a => a.ResolvedFor(HookPoints)).ToList();

    /// <summary>A hook name or alias as a TransformerLens name; SAE hook points (<c>&lt;hook&gt;.hook_sae_*</c>) need an SAE at that hook.</summary>
    internal string ResolveHook(string name, IReadOnlyList<AttachedSae>? saes, int? stop)
    {
        if (name is not null && SaeHookPoints.TrySplit(name.Trim(), out var site, out var suffix))
        {
            var hook = HookPoints.Resolve(site);
            if (saes?.Any(a => a.Hook == hook) != true)
                throw new SaeSharpException($"hook '{name}': no SAE is attached at '{hook}'" +
                    (saes is { Count: > 0 } ? $" (SAEs are attached at: {string.Join(", ", saes.Select(a => a.Hook))})" : ""));
            CheckFires(hook, stop);
            return SaeHookPoints.Name(hook, suffix);
        }
        return CheckFires(HookPoints.Resolve(name!), stop);
    }

    private string CheckFires(string hook, int? stop)
    {
        if (stop is int s && HookPoints.LayerOf(hook) >= s)
            throw new SaeSharpException($"hook '{hook}' never fires with stopAtLayer {s} (only blocks < {s} run; use stopAtLayer {HookPoints.LayerOf(hook) + 1} or more, or none for ln_final)");
        return hook;
    }

    internal Tensor? ForwardCore(Tensor tokens, Tensor? attentionMask, HookRunner hooks, int? stopAtLayer, KvCache? kv)
    {
        if (tokens.dim() != 2)
            throw new SaeSharpException($"tokens must be [batch, pos], got shape [{string.Join(", ", tokens.shape)}]");
        if (tokens.dtype is not (ScalarType.Int64 or ScalarType.Int32 or ScalarType.Int16 or ScalarType.Byte))
            throw new SaeSharpException($"tokens must be integer ids, got dtype {tokens.dtype}");
        long b = tokens.shape[0], s = tokens.shape[1];
        if (s == 0 || b == 0) throw new SaeSharpException($"tokens must be non-empty, got shape [{b}, {s}]");
        long past = kv?.Length ?? 0;

        using var scope = NewDisposeScope();
        var ids = tokens.to(ScalarType.Int64);
        long min = ids.min().item<long>(), max = ids.max().item<long>();
        if (min < 0 || max >= Config.DVocab)
            throw new SaeSharpException($"token id {(min < 0 ? min : max)} is outside the vocabulary 0..{Config.DVocab - 1} of {Config.ModelName}");

        Tensor newMask;
        if (attentionMask is null) newMask = ones(b, s, dtype: ScalarType.Bool);
        else
        {
            if (attentionMask.dim() != 2 || attentionMask.shape[0] != b || attentionMask.shape[1] != s)
                throw new SaeSharpException($"attention mask has shape [{string.Join(", ", attentionMask.shape)}] but tokens are [{b}, {s}]");
            newMask = attentionMask.ne(0);
        }
        var full = kv?.Mask is { } pm ? cat([pm, newMask], 1) : newMask;
        long total = past + s;
        // Positions as HF computes them for padded batches: cumulative count of real tokens, minus one.
        var positions = (full.to(ScalarType.Int64).cumsum(1) - 1).clamp_min(0).narrow(1, past, s);
        if (Config.RotaryDim == 0 && positions.max().item<long>() >= Config.NCtx)
            throw new SaeSharpException($"sequence of {positions.max().item<long>() + 1} tokens exceeds the context length n_ctx={Config.NCtx} of {Config.ModelName}");
        var causal = arange(total).unsqueeze(0).le((arange(s) + past).unsqueeze(1)); // [s, total]
        var allowed = causal.unsqueeze(0).unsqueeze(0).logical_and(full.unsqueeze(1).unsqueeze(1)); // [b, 1, s, total]
        kv?.SetMask(full);

        var ctx = new ForwardContext { Hooks = hooks, Allowed = allowed, Positions = positions, Kv = kv };
        var outerPositions = HookRunner.CurrentPositions;
        HookRunner.CurrentPositions = positions;
        try
        {
            var resid = Embed(ids, ctx);
            int n = stopAtLayer ?? Config.NLayers;
            for (int i = 0; i < n; i++)
            {
                using var blockScope = NewDisposeScope();
                resid = RunBlock(i, resid, ctx).MoveToOuterDisposeScope();
            }
            kv?.Advance(s);
            if (stopAtLayer is not null) return null;
            var logitType = Config.Dtype == ScalarType.Float64 ? ScalarType.Float64 : ScalarType.Float32;
            return Unembed(resid, ctx).to(logitType).MoveToOuterDisposeScope();
        }
        finally
        {
            HookRunner.CurrentPositions = outerPositions;
        }
    }

    /// <summary>Embeddings (firing hook_embed / hook_pos_embed); returns the residual stream [batch, pos, d_model].</summary>
    private protected abstract Tensor Embed(Tensor tokens, ForwardContext ctx);

    /// <summary>Block <paramref name="layer"/> with its hooks, resid_pre in, resid_post out.</summary>
    private protected abstract Tensor RunBlock(int layer, Tensor resid, ForwardContext ctx);

    /// <summary>Final layer norm (ln_final.hook_normalized) and unembedding.</summary>
    private protected abstract Tensor Unembed(Tensor resid, ForwardContext ctx);
}
