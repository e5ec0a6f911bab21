using SaeSharp.Hooks;
using SaeSharp.Models;
using TorchSharp;
using static TorchSharp.torch;

namespace SaeSharp.Activations;

/// <summary>What is harvested from a model: <c>out</c> (a hook's activation), <c>in</c> (a module's input) or
/// <c>in_to_out</c> (a module's input as SAE input and its output as target, for transcoders).</summary>
public enum HarvestMode
{
    /// <summary>The hook's activation (or a module's output).</summary>
    Out,
    /// <summary>A module's input (<c>blocks.0.mlp</c> → <c>blocks.0.ln2.hook_normalized</c>).</summary>
    In,
    /// <summary>A module's input as SAE input, its output as the reconstruction target.</summary>
    InToOut,
}

/// <summary>
/// The hooks a harvest reads, as TransformerLens names: <see cref="InputHook"/> feeds
/// <see cref="ActivationBatch.Input"/>, <see cref="TargetHook"/> (transcoders) feeds <see cref="ActivationBatch.Target"/>.
/// </summary>
public sealed record HarvestSpec(string InputHook, string? TargetHook = null)
{
    /// <summary>SAELens's <c>hook_head_index</c>: the input is this head of <see cref="InputHook"/>, an attention hook
    /// [batch, pos, n_heads, d_head] (d_in = d_head); null: the whole hook, heads flattened.</summary>
    public int? HeadIndex { get; init; }

    /// <summary>
    /// Resolves a CLI-style hook request. <paramref name="hook"/> is a hook name or a module path (TransformerLens or
    /// Hugging Face). <c>out</c>: the hook / module output; <c>in</c>: the module's input; <c>in_to_out</c>: the module's
    /// input and output, or, when <paramref name="targetHook"/> is given, <paramref name="hook"/> and that hook.
    /// </summary>
    /// <paramref name="headIndex"/>: one head of the hook (<see cref="HeadIndex"/>; mode <c>out</c> only).
    public static HarvestSpec Resolve(HookPoints hookPoints, string hook, HarvestMode mode = HarvestMode.Out, string? targetHook = null, int? headIndex = null)
    {
        ArgumentNullException.ThrowIfNull(hookPoints);
        if (headIndex is int h)
        {
            if (mode != HarvestMode.Out)
                throw new SaeSharpException($"hook_head_index {h} picks a head of the hook's activation: it takes --mode out, not {mode.ToString().ToLowerInvariant()}");
            return Resolve(hookPoints, hook) with { HeadIndex = h };
        }
        switch (mode)
        {
            case HarvestMode.Out:
                if (targetHook is not null) throw new SaeSharpException($"a target hook ('{targetHook}') needs mode in_to_out");
                return new HarvestSpec(hookPoints.Resolve(hook, HookKind.Out));
            case HarvestMode.In:
                if (targetHook is not null) throw new SaeSharpException($"a target hook ('{targetHook}') needs mode in_to_out");
                return new HarvestSpec(hookPoints.Resolve(hook, HookKind.In));
            default:
                if (targetHook is not null)
                    return new HarvestSpec(hookPoints.Resolve(hook, HookKind.Out), hookPoints.Resolve(targetHook, HookKind.Out));
                if (hookPoints.Contains(hook.Trim()))
                    throw new SaeSharpException($"in_to_out needs a module path (such as blocks.0.mlp) or a target hook; '{hook}' is a hook name");
                return new HarvestSpec(hookPoints.Resolve(hook, HookKind.In), hookPoints.Resolve(hook, HookKind.Out));
        }
    }

    /// <summary>Parses <c>out</c>, <c>in</c>, <c>in_to_out</c> (case-insensitive).</summary>
    public static HarvestMode ParseMode(string mode) => mode.Trim().ToLowerInvariant() switch
    {
        "out" => HarvestMode.Out,
        "in" => HarvestMode.In,
        "in_to_out" or "in-to-out" => HarvestMode.InToOut,
        _ => throw new SaeSharpException($"hook mode '{mode}' is not one of out, in, in_to_out"),
    };

    /// <summary>
    /// A crosscoder's layer slots in order (null: one hook, <see cref="InputHook"/>): slot l is hook <c>LayerHooks[l]</c> of
    /// model <c>LayerModels[l]</c> (0: the harvest's model, 1, 2, …: the other models given to the source, run on the same
    /// windows). A harvested row holds the slots side by side, [L·d], so that a shuffle keeps a token's slots together;
    /// view it as [L, d]. <see cref="InputHook"/> is the first slot's hook.
    /// </summary>
    public IReadOnlyList<string>? LayerHooks { get; init; }
    /// <summary>The model of each of <see cref="LayerHooks"/> (null: all from model 0).</summary>
    public IReadOnlyList<int>? LayerModels { get; init; }

    /// <summary>
    /// The spec of a crosscoder harvest: every hook of <paramref name="hooks"/> (names or module paths, resolved against
    /// each model's hook points) in each of <paramref name="models"/> (model 0 first), model-major: slots
    /// (model 0, hook 0), (model 0, hook 1), …, (model 1, hook 0), …
    /// </summary>
    public static HarvestSpec ForCrossCoder(IReadOnlyList<HookPoints> models, IReadOnlyList<string> hooks)
    {
        ArgumentNullException.ThrowIfNull(models);
        ArgumentNullException.ThrowIfNull(hooks);
        if (models.Count == 0 || hooks.Count == 0) throw new SaeSharpException("a crosscoder harvest needs at least one model and one hook");
        var names = new List<string>();
        var modelOf = new List<int>();
        for (int m = 0; m < models.Count; m++)
            foreach (var h in hooks)
            {
                names.Add(models[m].Resolve(h, HookKind.Out));
                modelOf.Add(m);
            }
        var dup = names.Select((n, i) => (n, modelOf[i])).GroupBy(x => x).FirstOrDefault(g => g.Count() > 1);
        if (dup is not null) throw new SaeSharpException($"hook '{dup.Key.n}' is named twice: each layer slot of a crosscoder reads a different hook");
        if (names.Count < 2) throw new SaeSharpException($"a crosscoder reads at least two layer slots: give two hooks or two models (got only '{names[0]}')");
        return new HarvestSpec(names[0]) { LayerHooks = names, LayerModels = modelOf };
    }

    internal IEnumerable<string> Hooks => LayerHooks is { } lh ? HooksOf(0) : TargetHook is null ? [InputHook] : [InputHook, TargetHook];

    /// <summary>The hooks model <paramref name="model"/> is run for (all of <see cref="Hooks"/> for model 0 without slots).</summary>
    internal IReadOnlyList<string> HooksOf(int model) => LayerHooks is { } lh
        ? lh.Where((_, i) => (LayerModels?[i] ?? 0) == model).Distinct().ToList()
        : model == 0 ? Hooks.ToList() : [];

    /// <summary>The models the slots read (1 without slots).</summary>
    internal int ModelCount => LayerModels is { Count: > 0 } lm ? lm.Max() + 1 : 1;
}

/// <summary>Rows harvested from a group of context windows: activations, targets, row ids (window·ctx + pos), tokens.</summary>
internal sealed class HarvestedRows : IDisposable
{
    public required Tensor Input { get; init; }
    public Tensor? Target { get; init; }
    /// <summary>window index · context size + position, per row.</summary>
    public required long[] Ids { get; init; }
    /// <summary>[rows] int64 token at each row's position.</summary>
    public required Tensor TokenIds { get; init; }
    public long Rows => Ids.Length;

    public void Dispose()
    {
        Input.Dispose();
        Target?.Dispose();
        TokenIds.Dispose();
    }
}

/// <summary>
/// Runs a model on context windows under no_grad, stopping after the last block the hooks need, and returns the hooks'
/// activations as float32 rows [windows·pos, d] (heads flattened) of the positions SAELens's <c>seqpos_slice</c> keeps,
/// without the positions of excluded tokens and, at an expert's hook, only the tokens routed to that expert
/// (<see cref="KeepRouted"/>).
/// </summary>
internal sealed class ModelActivationHarvester
{
    private readonly HookedTransformer _model;
    private readonly long[] _exclude;
    private readonly IReadOnlyList<(string Name, Func<Tensor, Tensor?> Fn)>? _hooks;
    private readonly Saes.SeqposSlice? _slice;

    public HarvestSpec Spec { get; }
    public HookPoints HookPoints => _model.HookPoints;
    public int ContextSize { get; }
    /// <summary>Positions of a window harvested (SAELens's <c>training_context_size</c>), before token exclusion.</summary>
    public int TrainingContextSize { get; }
    public int? StopAtLayer { get; }
    public int DIn { get; }
    public int DOut { get; }

    /// <summary>A harvester of <paramref name="spec"/> from <paramref name="model"/> (and, for a crosscoder spec's
    /// <see cref="HarvestSpec.LayerModels"/> 1, 2, …, from <paramref name="otherModels"/>, each with its own run hooks, on
    /// the same windows).</summary>
    public ModelActivationHarvester(HookedTransformer model, HarvestSpec spec, int contextSize, IEnumerable<long>? excludeTokenIds,
        IReadOnlyList<(string Name, Func<Tensor, Tensor?> Fn)>? modelHooks = null, Saes.SeqposSlice? seqposSlice = null,
        IReadOnlyList<(HookedTransformer Model, IReadOnlyList<(string Name, Func<Tensor, Tensor?> Fn)>? Hooks)>? otherModels = null)
    {
        _model = model;
        _hooks = modelHooks;
        Spec = spec;
        _runs = [(model, modelHooks), .. otherModels ?? []];
        if (spec.ModelCount != _runs.Count)
            throw new SaeSharpException($"the harvest's layer slots read {spec.ModelCount} model(s) but {_runs.Count} were given");
        if (contextSize <= 0) throw new SaeSharpException($"context size must be positive, got {contextSize}");
        _slice = seqposSlice;
        TrainingContextSize = seqposSlice?.Positions(contextSize).Length ?? contextSize;
        if (contextSize > model.Config.NCtx && model.LearnedPositions)
            throw new SaeSharpException($"context size {contextSize} exceeds the model's n_ctx={model.Config.NCtx} ({model.Config.ModelName})");
        ContextSize = contextSize;
        _exclude = excludeTokenIds?.Distinct().ToArray() ?? [];
        StopAtLayer = model.HookPoints.StopAtLayerFor(spec.Hooks);
        DIn = model.HookWidth(spec.InputHook);
        if (spec.HeadIndex is int h)
        {
            if (model.HeadsAt(spec.InputHook) is not int heads)
                throw new SaeSharpException($"hook_head_index {h}: '{spec.InputHook}' has no head dimension (hook_head_index picks a head of an attention hook: attn.hook_z, hook_q, hook_k, hook_v)");
            if (h < 0 || h >= heads)
                throw new SaeSharpException($"hook_head_index {h}: '{spec.InputHook}' of {model.Config.ModelName} has {heads} heads (0..{heads - 1})");
            DIn /= heads;   // d_head, or d_model for attn.hook_result and the per-head inputs hook_attn_in, hook_q/k/v_input
        }
        DOut = spec.TargetHook is { } t ? model.HookWidth(t) : DIn;
        if (spec.LayerHooks is { } slots)
        {
            if (spec.TargetHook is not null || spec.HeadIndex is not null)
                throw new SaeSharpException("a crosscoder harvest reads whole hooks: no target hook or head index");
            int d = -1;
            for (int i = 0; i < slots.Count; i++)
            {
                var m = _runs[spec.LayerModels?[i] ?? 0].Model;
                if (contextSize > m.Config.NCtx && m.LearnedPositions)
                    throw new SaeSharpException($"context size {contextSize} exceeds the model's n_ctx={m.Config.NCtx} ({m.Config.ModelName})");
                int w = m.HookWidth(slots[i]);
                if (d >= 0 && w != d)
                    throw new SaeSharpException($"{slots[i]} of {m.Config.ModelName} has width {w} but {slots[0]} of {_runs[spec.LayerModels?[0] ?? 0].Model.Config.ModelName} has {d}: a crosscoder's layer slots share one width");
                d = w;
            }
            SlotWidth = d;
            DIn = DOut = d * slots.Count;
        }
        else SlotWidth = DIn;
    }

    private readonly List<(HookedTransformer Model, IReadOnlyList<(string Name, Func<Tensor, Tensor?> Fn)>? Hooks)> _runs;

    /// <summary>Width d of one layer slot (a crosscoder harvest's rows are [L·d]); <see cref="DIn"/> otherwise.</summary>
    public int SlotWidth { get; }

    /// <summary>Harvests <paramref name="windows"/> (equal lengths) whose first window has global index <paramref name="firstWindow"/>.</summary>
    public HarvestedRows Harvest(IReadOnlyList<long[]> windows, long firstWindow)
    {
        int b = windows.Count, s = ContextSize;
        var flat = new long[(long)b * s];
        for (int i = 0; i < b; i++)
        {
            if (windows[i].Length != s)
                throw new SaeSharpException($"context window {firstWindow + i} has {windows[i].Length} tokens, expected {s}");
            Array.Copy(windows[i], 0, flat, (long)i * s, s);
        }
        using var scope = NewDisposeScope();
        using var _ = no_grad();
        // The model runs on its device; the harvested rows come back to the CPU (caches, shuffle buffers).
        var tokens = tensor(flat).view(b, s);
        if (Spec.LayerHooks is not null) return HarvestSlots(tokens, b, s, firstWindow);
        var onDevice = tokens.to(_model.Device);
        var (logits, cache) = _model.Run(onDevice, new RunOptions
        {
            StopAtLayer = StopAtLayer, Hooks = _hooks, CacheNames = Spec.Hooks.Concat(RoutingHooks(HookPoints, Spec.Hooks)).ToList(),
        });
        logits?.Dispose();
        var c = cache!;
        using (c)
        {
            var keep = KeepRouted(KeepMask(tokens, _exclude, _slice), HookPoints, Spec.Hooks, c).reshape(-1);
            var idx = keep.nonzero().squeeze(1);
            var input = Rows(Spec.HeadIndex is int head ? c[Spec.InputHook].select(2, head) : c[Spec.InputHook], b, s).cpu().index_select(0, idx);
            var target = Spec.TargetHook is { } th ? Rows(c[th], b, s).cpu().index_select(0, idx) : null;
            var tok = tokens.reshape(-1).index_select(0, idx);
            var kept = idx.data<long>().ToArray();
            var ids = new long[kept.Length];
            for (int i = 0; i < kept.Length; i++) ids[i] = firstWindow * s + kept[i];
            CheckFinite(input, Spec.InputHook, ids, s);
            if (target is not null) CheckFinite(target, Spec.TargetHook!, ids, s);
            return new HarvestedRows
            {
                Input = input.MoveToOuterDisposeScope(),
                Target = target?.MoveToOuterDisposeScope(),
                Ids = ids,
                TokenIds = tok.MoveToOuterDisposeScope(),
            };
        }
    }

    /// <summary>A crosscoder harvest: each model run once on <paramref name="tokens"/> (stopping after its last slot's block),
    /// the rows kept where no model's routing or the exclusion drops them, the slots side by side [rows, L·d].</summary>
    private HarvestedRows HarvestSlots(Tensor tokens, int b, int s, long firstWindow)
    {
        var slots = Spec.LayerHooks!;
        var caches = new ActivationCache[_runs.Count];
        try
        {
            var keep = KeepMask(tokens, _exclude, _slice);
            for (int m = 0; m < _runs.Count; m++)
            {
                var (model, hooks) = _runs[m];
                var names = Spec.HooksOf(m);
                var (logits, cache) = model.Run(tokens.to(model.Device), new RunOptions
                {
                    StopAtLayer = model.HookPoints.StopAtLayerFor(names), Hooks = hooks,
                    CacheNames = names.Concat(RoutingHooks(model.HookPoints, names)).ToList(),
                });
                logits?.Dispose();
                caches[m] = cache!;
                keep = KeepRouted(keep, model.HookPoints, names, caches[m]);
            }
            var idx = keep.reshape(-1).nonzero().squeeze(1);
            var kept = idx.data<long>().ToArray();
            var ids = new long[kept.Length];
            for (int i = 0; i < kept.Length; i++) ids[i] = firstWindow * s + kept[i];
            var parts = new List<Tensor>(slots.Count);
            for (int l = 0; l < slots.Count; l++)
            {
                int m = Spec.LayerModels?[l] ?? 0;
                var rows = Rows(caches[m][slots[l]], b, s).cpu().index_select(0, idx);
                CheckFinite(rows, slots[l], ids, s, _runs[m].Model);
                parts.Add(rows);
            }
            return new HarvestedRows { Input = cat(parts, 1).MoveToOuterDisposeScope(), Ids = ids, TokenIds = tokens.reshape(-1).index_select(0, idx).MoveToOuterDisposeScope() };
        }
        finally
        {
            foreach (var c in caches) c?.Dispose();
        }
    }

    /// <summary>NaN or Inf in the rows of <paramref name="hook"/> (row i from window·ctx + pos = <paramref name="ids"/>[i]) is
    /// an error naming the hook, the window and the position: the model, not the data, produced it.</summary>
    private void CheckFinite(Tensor rows, string hook, long[] ids, int contextSize, HookedTransformer? model = null)
    {
        if (ActivationRowFile.FirstNonFinite(rows) is not var (row, col, v)) return;
        throw new SaeSharpException($"{hook} of {(model ?? _model).Config.ModelName}: context window {ids[row] / contextSize}, position {ids[row] % contextSize} " +
                                    $"holds {ActivationRowFile.Describe(v)} (dimension {col}); the model's activations must be finite " +
                                    "(NaN or Inf in its weights, or an overflow in its dtype)");
    }

    /// <summary>The router hooks (<c>mlp.hook_expert_indices</c>) that decide which tokens reach the expert hooks among
    /// <paramref name="hooks"/>, to cache with them for <see cref="KeepRouted"/>; none when no hook is an expert's.</summary>
    internal static IEnumerable<string> RoutingHooks(HookPoints hookPoints, IEnumerable<string> hooks) =>
        hooks.Select(hookPoints.ExpertRouting).OfType<(string IndicesHook, int Expert)>().Select(r => r.IndicesHook).Distinct();

    /// <summary>
    /// <paramref name="keep"/> [batch, pos] and, for each expert hook among <paramref name="hooks"/>
    /// (<c>mlp.experts.{e}.hook_*</c>), the tokens routed to that expert in the run that filled <paramref name="cache"/>
    /// (their <c>hook_expert_indices</c> row holds e; the cache must hold <see cref="RoutingHooks"/>). TransformerLens computes
    /// an expert on its routed tokens only, so an SAE there sees those rows only, not the zero rows of the others.
    /// <paramref name="keep"/> itself when no hook is an expert's.
    /// </summary>
    internal static Tensor KeepRouted(Tensor keep, HookPoints hookPoints, IEnumerable<string> hooks, ActivationCache cache)
    {
        foreach (var hook in hooks.Distinct())
            if (RoutedRows(hookPoints, hook, cache) is { } routed)
                keep = keep.logical_and(routed.to(keep.device));
        return keep;
    }

    /// <summary>[batch, pos] bool, the tokens routed to the expert of <paramref name="hook"/> in the run that filled
    /// <paramref name="cache"/> (which must hold <see cref="RoutingHooks"/>); null when the hook is not an expert's.</summary>
    internal static Tensor? RoutedRows(HookPoints hookPoints, string hook, ActivationCache cache) =>
        hookPoints.ExpertRouting(hook) is var (indices, expert) ? cache[indices].eq(TorchScalars.Of(expert)).any(-1) : null;

    /// <summary>[batch, pos] bool: true where the token is not excluded.</summary>
    public Tensor KeepMask(Tensor tokens) => KeepMask(tokens, _exclude);

    /// <summary>[batch, pos] bool: true at the positions <paramref name="slice"/> keeps (all when null) whose token is not excluded.</summary>
    internal static Tensor KeepMask(Tensor tokens, IReadOnlyCollection<long> exclude, Saes.SeqposSlice? slice)
    {
        var keep = KeepMask(tokens, exclude);
        if (slice is null || slice.IsAll) return keep;
        using var scope = NewDisposeScope();
        var positions = new bool[tokens.shape[1]];
        foreach (int p in slice.Positions(positions.Length)) positions[p] = true;
        return keep.logical_and(tensor(positions, device: tokens.device).unsqueeze(0)).MoveToOuterDisposeScope();
    }

    internal static Tensor KeepMask(Tensor tokens, IReadOnlyCollection<long> exclude)
    {
        if (exclude.Count == 0) return ones_like(tokens, ScalarType.Bool);
        using var scope = NewDisposeScope();
        var drop = zeros_like(tokens, ScalarType.Bool);
        foreach (var t in exclude)
        {
            using var id = t.ToScalar();
            drop = drop.logical_or(tokens.eq(id));
        }
        return drop.logical_not().MoveToOuterDisposeScope();
    }

    /// <summary>[batch, pos, ...] → [batch·pos, d] float32 (head dimensions flattened).</summary>
    internal static Tensor Rows(Tensor act, long b, long s) => act.reshape(b * s, -1).to(ScalarType.Float32);
}
