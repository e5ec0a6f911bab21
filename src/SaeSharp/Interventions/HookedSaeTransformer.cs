using SaeSharp.Hooks;
using SaeSharp.Models;
using SaeSharp.Saes;
using static TorchSharp.torch;

namespace SaeSharp.Interventions;

/// <summary>
/// A model with SAEs attached at its hooks (SAELens <c>HookedSAETransformer</c>): runs, cached runs and generation
/// with the SAEs spliced in and interventions applied, and feature attribution. Owns neither the model nor the SAEs.
/// <code>
/// var hooked = new HookedSaeTransformer(model);
/// hooked.AddSae(sae, useErrorTerm: true);
/// using var run = hooked.RunWithCache(tokens, interventions: [new Clamp(sae, feature: 3, value: 5)]);
/// </code>
/// </summary>
public sealed class HookedSaeTransformer(HookedTransformer model)
{
    private readonly List<AttachedSae> _saes = [];

    /// <summary>The wrapped model (not owned).</summary>
    public HookedTransformer Model { get; } = model ?? throw new ArgumentNullException(nameof(model));
    /// <summary>The attached SAEs, in the order added.</summary>
    public IReadOnlyList<AttachedSae> Saes => _saes;
    /// <summary>Hooks every run and generation applies before the interventions: the weight processing's
    /// (<see cref="ProcessedModel.Hooks"/>, GPT-2's <c>center_writing_weights</c> at <c>hook_embed</c>).</summary>
    public IReadOnlyList<(string Name, Func<Tensor, Tensor?> Fn)> ModelHooks { get; init; } = [];

    /// <summary>Splices <paramref name="sae"/> at <paramref name="hook"/> (default: its <c>metadata.hook_name</c>); a transcoder
    /// reads there and replaces <paramref name="outputHook"/> (default: its <c>metadata.hook_name_out</c>). An SAE whose
    /// d_in (or a transcoder whose d_out) does not fit its hook, or a transcoder whose output hook fires first, is a
    /// <see cref="SaeSharpException"/> (<see cref="HookedTransformer.Attach"/>).</summary>
    public AttachedSae AddSae(Sae sae, string? hook = null, bool useErrorTerm = false, string? outputHook = null)
    {
        var a = Model.Attach(sae, hook, useErrorTerm, outputHook);
        if (_saes.Any(s => s.Hook == a.Hook)) throw new SaeSharpException($"an SAE is already attached at '{a.Hook}'");
        if (_saes.FirstOrDefault(s => s.WriteHook == a.WriteHook) is { } other)
            throw new SaeSharpException($"the SAE reading '{other.Hook}' already replaces '{a.WriteHook}'");
        _saes.Add(a);
        return a;
    }

    /// <summary>Detaches every SAE (SAELens <c>reset_saes</c>).</summary>
    public void ResetSaes() => _saes.Clear();

    /// <summary>
    /// Parses a hook list as <c>sae model run --hooks</c> takes it: <c>all</c> (the model's default hooks,
    /// <see cref="HookPoints.DefaultNames"/>, with the opt-in hooks an SAE is attached at, then every attached SAE's hook points), or names and aliases separated by commas, SAE hook points included. TransformerLens names, no duplicates.
    /// </summary>
    public IReadOnlyList<string> SelectHooks(string spec)
    {
        if (string.IsNullOrWhiteSpace(spec)) throw new SaeSharpException("empty hook list: give 'all' or hook names separated by commas");
        if (spec.Trim() == "all")
            return [.. Model.HookNames.Where(InDefaultSet), .. _saes.SelectMany(a => SaeHookPoints.Suffixes
                .Where(s => s != SaeHookPoints.Error || a.UseErrorTerm).Select(a.HookName))];
        return spec.Split(',', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries)
            .Select(n => Model.ResolveHook(n, _saes, null)).Distinct().ToList();
    }

    /// <summary>A model hook TransformerLens caches by default (not opt-in, <see cref="HookPoints.IsOptIn"/>), or the opt-in hook
    /// an attached SAE sits at (TransformerLens would have to turn it on for the SAE).</summary>
    private bool InDefaultSet(string hook) => !HookPoints.IsOptIn(hook) || _saes.Any(a => a.Hook == hook || a.OutputHook == hook);

    /// <summary>The hook functions of <paramref name="interventions"/> in this model with the attached SAEs.</summary>
    public List<(string Name, Func<Tensor, Tensor?> Fn)> HooksFor(IEnumerable<Intervention>? interventions) =>
        interventions?.Select(i => i.ToHook(Model, _saes)).ToList() ?? [];

    /// <summary>A forward pass with the SAEs spliced and the interventions applied (before <paramref name="options"/>'s hooks).</summary>
    public (Tensor? Logits, ActivationCache? Cache) Run(Tensor tokens, RunOptions? options = null, IEnumerable<Intervention>? interventions = null)
    {
        var o = options ?? new RunOptions();
        var hooks = new List<(string Name, Func<Tensor, Tensor?> Fn)>(ModelHooks);
        hooks.AddRange(HooksFor(interventions));
        if (o.Hooks is not null) hooks.AddRange(o.Hooks);
        return Model.Run(tokens, new RunOptions
        {
            AttentionMask = o.AttentionMask, StopAtLayer = o.StopAtLayer, Hooks = hooks, CacheNames = o.CacheNames,
            CacheFilter = o.CacheFilter, Grad = o.Grad, Saes = [.. _saes, .. o.Saes ?? []], Capture = o.Capture,
            FreezeAttentionAndNorms = o.FreezeAttentionAndNorms, FrozenValues = o.FrozenValues,
        });
    }

    /// <summary>Logits with the SAEs spliced and the given hooks applied (TransformerLens / SAELens
    /// <c>run_with_hooks(tokens, fwd_hooks=[(name, fn)])</c>; SAE hook points such as
    /// <c>attached.HookName(SaeHookPoints.ActsPost)</c> included). A hook returns the replacement or null.</summary>
    public Tensor RunWithHooks(Tensor tokens, params (string Name, Func<Tensor, Tensor?> Fn)[] hooks) =>
        RunWithHooks(tokens, null, hooks);

    /// <summary>Logits with the SAEs spliced, the interventions and the given hooks applied.</summary>
    public Tensor RunWithHooks(Tensor tokens, IEnumerable<Intervention>? interventions = null, params (string Name, Func<Tensor, Tensor?> Fn)[] hooks) =>
        Run(tokens, new RunOptions { Hooks = hooks }, interventions).Logits!;

    /// <summary><c>run_with_cache</c> with the SAEs spliced: caches the named hooks (SAE hook points included), or those
    /// whose TransformerLens name passes <paramref name="namesFilter"/> (TransformerLens <c>names_filter</c> as a function);
    /// neither: every hook but the opt-in ones no SAE sits at (<see cref="HookPoints.DefaultNames"/>). Both is a <see cref="SaeSharpException"/>. Dispose the result (<see cref="CachedRun"/>).</summary>
    public CachedRun RunWithCache(Tensor tokens, IEnumerable<string>? names = null,
        IEnumerable<Intervention>? interventions = null, Tensor? attentionMask = null, Func<string, bool>? namesFilter = null)
    {
        if (names is not null && namesFilter is not null)
            throw new SaeSharpException("RunWithCache: give the hook names or a names filter, not both");
        var o = names is null
            ? new RunOptions { AttentionMask = attentionMask, CacheFilter = namesFilter ?? InDefaultSet }
            : new RunOptions { AttentionMask = attentionMask, CacheNames = names.ToList() };
        return HookedTransformer.Cached(Run(tokens, o, interventions));
    }

    /// <summary>
    /// SAELens <c>run_with_saes(tokens, saes=[...])</c>: logits with <paramref name="saes"/> spliced for this call only, each
    /// at its <c>metadata.hook_name</c> (replacing for the call an SAE attached there), on top of the attached SAEs, with the
    /// interventions and hooks applied. <see cref="Saes"/> is the same afterwards, also when the run throws.
    /// </summary>
    public Tensor RunWithSaes(Tensor tokens, IEnumerable<Sae> saes, bool useErrorTerm = false,
        IEnumerable<Intervention>? interventions = null, params (string Name, Func<Tensor, Tensor?> Fn)[] hooks) =>
        WithSaes(saes, useErrorTerm, () => RunWithHooks(tokens, interventions, hooks));

    /// <summary>SAELens <c>run_with_cache_with_saes(tokens, saes=[...])</c>: <see cref="RunWithCache"/> with
    /// <paramref name="saes"/> spliced for this call only, as <see cref="RunWithSaes"/> splices them.</summary>
    public CachedRun RunWithCacheWithSaes(Tensor tokens, IEnumerable<Sae> saes, IEnumerable<string>? names = null, bool useErrorTerm = false,
        IEnumerable<Intervention>? interventions = null, Tensor? attentionMask = null, Func<string, bool>? namesFilter = null) =>
        WithSaes(saes, useErrorTerm, () => RunWithCache(tokens, names, interventions, attentionMask, namesFilter));

    /// <summary>Runs <paramref name="run"/> with <paramref name="saes"/> attached, then restores the attached SAEs (SAELens's
    /// <c>saes()</c> context manager).</summary>
    private T WithSaes<T>(IEnumerable<Sae> saes, bool useErrorTerm, Func<T> run)
    {
        ArgumentNullException.ThrowIfNull(saes);
        var attached = _saes.ToList();
        try
        {
            foreach (var sae in saes)
            {
                var a = Model.Attach(sae, null, useErrorTerm);
                _saes.RemoveAll(s => s.Hook == a.Hook && attached.Contains(s));
                AddSae(sae, a.Hook, useErrorTerm, a.OutputHook);
            }
            return run();
        }
        finally
        {
            _saes.Clear();
            _saes.AddRange(attached);
        }
    }

    /// <summary>Generation with the KV cache, the SAEs spliced and the interventions applied on every step. Sampling with
    /// <see cref="GenerationOptions.Seed"/> draws from a generator of its own seeded with it, so the clean
    /// <see cref="HookedTransformer.Generate"/> with the same options draws the same random numbers at every step (the two
    /// continuations differ only through the SAEs and edits).</summary>
    public GenerationResult Generate(Tensor tokens, int maxNewTokens, GenerationOptions? options = null, IEnumerable<Intervention>? interventions = null)
    {
        var o = options ?? new GenerationOptions();
        var hooks = new List<(string Name, Func<Tensor, Tensor?> Fn)>(ModelHooks);
        hooks.AddRange(HooksFor(interventions));
        if (o.Hooks is not null) hooks.AddRange(o.Hooks);
        return Model.Generate(tokens, maxNewTokens, o with { Hooks = hooks, Saes = [.. _saes, .. o.Saes ?? []] });
    }

    /// <summary>Attribution patching to the features of every attached SAE (<see cref="FeatureAttribution"/>);
    /// <paramref name="integrateErrors"/>: integrated gradients scale each SAE's error term with its features (Marks et al.).</summary>
    public AttributionResult Attribute(Tensor tokens, AttributionMetric metric, int integratedGradientSteps = 0,
        IProgress<WorkProgress>? progress = null, bool freezeAttentionAndNorms = false, bool integrateErrors = false) =>
        FeatureAttribution.Run(this, tokens, metric, integratedGradientSteps, freezeAttentionAndNorms, integrateErrors, progress);
}
