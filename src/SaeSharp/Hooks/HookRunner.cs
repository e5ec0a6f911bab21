using static TorchSharp.torch;

namespace SaeSharp.Hooks;

/// <summary>
/// Fires the hooks of one forward pass: user functions first (in the order given), then caching, then the transcoder
/// whose output hook it is (if any) replaces the activation, then the SAE attached at the hook (if any) reads it; their
/// own hook points fire through this runner. A transcoder's encoding is held from its input hook to its output hook;
/// <see cref="Dispose"/> frees any a pass left (one that stopped before the output hook).
/// </summary>
internal sealed class HookRunner : IDisposable
{
    public static readonly HookRunner None = new(null, null, null);

    private readonly Dictionary<string, List<Func<Tensor, Tensor?>>>? _fns;
    private readonly Func<string, bool>? _cacheFilter;
    private readonly ActivationCache? _cache;
    private readonly Dictionary<string, AttachedSae>? _saes;
    /// <summary>Transcoders by output hook.</summary>
    private readonly Dictionary<string, AttachedSae>? _outputs;
    /// <summary>Transcoders' encodings between their input and output hooks, by input hook.</summary>
    private Dictionary<string, SaeSplice.Encoding>? _pending;

    public HookRunner(IReadOnlyList<(string Name, Func<Tensor, Tensor?> Fn)>? hooks, Func<string, bool>? cacheFilter, ActivationCache? cache,
        IReadOnlyList<AttachedSae>? saes = null, ISaeSpliceCapture? capture = null)
    {
        if (hooks is { Count: > 0 })
        {
            _fns = new Dictionary<string, List<Func<Tensor, Tensor?>>>(StringComparer.Ordinal);
            foreach (var (name, fn) in hooks)
            {
                if (!_fns.TryGetValue(name, out var list)) _fns[name] = list = new();
                list.Add(fn);
            }
        }
        _cacheFilter = cacheFilter;
        _cache = cache;
        if (saes is { Count: > 0 })
        {
            _saes = new Dictionary<string, AttachedSae>(StringComparer.Ordinal);
            foreach (var s in saes)
                if (!_saes.TryAdd(s.Hook, s)) throw new SaeSharpException($"two SAEs are attached at '{s.Hook}'; attach one SAE per hook");
            var writers = new Dictionary<string, AttachedSae>(StringComparer.Ordinal);
            foreach (var s in saes)
                if (!writers.TryAdd(s.WriteHook, s))
                    throw new SaeSharpException($"two SAEs replace '{s.WriteHook}' (the SAEs reading '{writers[s.WriteHook].Hook}' and '{s.Hook}'); attach one SAE per hook");
            if (saes.Any(s => s.IsTranscoder))
                _outputs = saes.Where(s => s.IsTranscoder).ToDictionary(s => s.OutputHook!, StringComparer.Ordinal);
        }
        Capture = capture;
    }

    /// <summary>Set during an attribution pass: the SAE splices hand their features and errors to it.</summary>
    public ISaeSpliceCapture? Capture { get; }

    public bool IsEmpty => _fns is null && _cache is null && _saes is null;

    /// <summary>True when firing <paramref name="name"/> can do anything (a hook function, caching, or an SAE reads or
    /// replaces it): an activation that costs work to build need not be built otherwise.</summary>
    public bool Wants(string name) =>
        _fns?.ContainsKey(name) == true || (_cache is not null && _cacheFilter!(name)) || _saes?.ContainsKey(name) == true
        || _outputs?.ContainsKey(name) == true;

    /// <summary>True when firing <paramref name="name"/> may replace the activation (a hook function, or an SAE or transcoder
    /// there), not only read it (caching).</summary>
    public bool MayReplace(string name) =>
        _fns?.ContainsKey(name) == true || _saes?.ContainsKey(name) == true || _outputs?.ContainsKey(name) == true;

    /// <summary>Runs the hooks on <paramref name="name"/>; returns the (possibly replaced) activation.</summary>
    public Tensor Fire(string name, Tensor x)
    {
        if (_fns is not null && _fns.TryGetValue(name, out var list))
        {
            foreach (var fn in list)
            {
                var r = fn(x);
                if (r is null) continue;
                if (!r.shape.SequenceEqual(x.shape))
                    throw new SaeSharpException($"hook '{name}' returned shape [{string.Join(", ", r.shape)}] but the activation has shape [{string.Join(", ", x.shape)}]");
                // A new handle owned by the forward's scope: the caller's tensor is never disposed by us.
                x = r.dtype == x.dtype && r.device == x.device ? r.alias() : r.to(x.dtype, x.device);
            }
        }
        if (_cache is not null && _cacheFilter!(name))
            _cache.Set(name, x.alias().DetachFromDisposeScope());
        if (_outputs is not null && _outputs.TryGetValue(name, out var transcoder))
        {
            if (_pending?.Remove(transcoder.Hook, out var encoding) != true)
                throw new SaeSharpException($"transcoder reading '{transcoder.Hook}' and replacing '{name}': '{name}' fired before '{transcoder.Hook}'");
            using (encoding) x = SaeSplice.Finish(transcoder, encoding!, x, this);
        }
        if (_saes is not null && _saes.TryGetValue(name, out var sae))
        {
            if (!sae.IsTranscoder) x = SaeSplice.Run(sae, x, this);
            else
            {
                var begun = SaeSplice.Begin(sae, x, this);
                _pending ??= new(StringComparer.Ordinal);
                if (_pending.Remove(sae.Hook, out var stale)) stale.Dispose();
                _pending[sae.Hook] = begun;
            }
        }
        return x;
    }

    /// <summary>Frees the encodings of transcoders whose output hook did not fire.</summary>
    public void Dispose()
    {
        if (_pending is null) return;
        foreach (var e in _pending.Values) e.Dispose();
        _pending.Clear();
    }

    /// <summary>[batch, pos] positions of the tokens in the forward pass running on this thread (padding-aware, and
    /// counting the tokens already in a KV cache), for hooks that act at given positions.</summary>
    [ThreadStatic] internal static Tensor? CurrentPositions;

    /// <summary>[batch, pos] real-token mask (true: real, false: padding) of the new tokens of the forward pass running on
    /// this thread, for SAEs that read a token's context (temporal: padding is kept out of it); null outside a pass.</summary>
    [ThreadStatic] internal static Tensor? CurrentMask;

    /// <summary>[batch, pos] bool while an MoE expert's hook fires on this thread: the tokens routed to the expert, the
    /// rows TransformerLens fires the hook with (the others hold zeros the model drops); null while any other hook fires.
    /// A temporal SAE there reads only these tokens as its context (<see cref="SaeSplice"/>).</summary>
    [ThreadStatic] internal static Tensor? CurrentRows;

    /// <summary>Tokens already in the KV cache of the forward pass running on this thread (0 without a cache).</summary>
    [ThreadStatic] internal static long CurrentPast;

    /// <summary>During generation on this thread: the longest prompt's real tokens plus the new tokens asked for, the
    /// positions the generated sequence can reach (for hooks that act at given positions); null outside generation.</summary>
    [ThreadStatic] internal static long? GenerationLength;

    /// <summary>During generation on this thread: each row's real prompt tokens, which negative steering positions count
    /// back from (<see cref="Interventions.Steering.Positions"/>); null outside generation.</summary>
    [ThreadStatic] internal static long[]? PromptLengths;
}
