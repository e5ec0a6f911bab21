using System.Collections;
using System.Diagnostics.CodeAnalysis;
using static TorchSharp.torch;

namespace SaeSharp.Hooks;

/// <summary>
/// Activations recorded by a forward pass, keyed by TransformerLens hook name (the TransformerLens
/// <c>ActivationCache</c>). The cache owns its tensors (views of the forward's activations, no copies):
/// dispose it to free them. Lookups also accept aliases (<c>gpt_neox.layers.1.mlp</c>).
/// </summary>
[System.Diagnostics.CodeAnalysis.SuppressMessage("Naming", "CA1710", Justification = "TransformerLens's name (ActivationCache), which its users look for")]
public sealed class ActivationCache : IReadOnlyDictionary<string, Tensor>, IDisposable
{
    private readonly Dictionary<string, Tensor> _tensors = new(StringComparer.Ordinal);
    private readonly HookPoints _points;
    private bool _disposed;

    internal ActivationCache(HookPoints points) => _points = points;

    internal void Set(string name, Tensor t)
    {
        if (_tensors.Remove(name, out var old)) old.Dispose();
        _tensors[name] = t;
    }

    /// <summary>The activation at hook <paramref name="key"/>: a hook name, an alias, or TransformerLens's
    /// <c>get_act_name</c> shorthand (<c>cache["embed"]</c>, <c>cache["normalized"]</c>, <c>cache["k6"]</c>;
    /// <see cref="HookPoints.ActName"/>); a missing hook is a <see cref="SaeSharpException"/> listing the cached ones.</summary>
    public Tensor this[string key] =>
        TryGetValue(key, out var t) ? t
        : TryGetValue(HookPoints.ActName(key), out t) ? t
        : throw Missing(key, HookPoints.ActName(key));

    /// <summary>
    /// TransformerLens <c>cache["resid_post", 1]</c>: the activation at <see cref="HookPoints.ActName"/>(<paramref name="name"/>,
    /// <paramref name="layer"/>): <c>cache["resid_post", 1]</c> is <c>blocks.1.hook_resid_post</c>, <c>cache["q", 0]</c>
    /// <c>blocks.0.attn.hook_q</c>, <c>cache["pattern", 0]</c> <c>blocks.0.attn.hook_pattern</c>. A negative layer counts
    /// from the end (-1: the last block), as in TransformerLens.
    /// </summary>
    public Tensor this[string name, int layer] => this[name, layer, null];

    /// <summary>TransformerLens <c>cache["normalized", 3, "ln2"]</c>: the activation at <see cref="HookPoints.ActName"/>(name,
    /// layer, layerType) (<c>blocks.3.ln2.hook_normalized</c>); a negative layer counts from the end.</summary>
    public Tensor this[string name, int layer, string? layerType]
    {
        get
        {
            int l = layer < 0 ? _points.NLayers + layer : layer;
            string full = HookPoints.ActName(name, l, layerType);
            return _tensors.TryGetValue(full, out var t) ? t : throw Missing($"{name}, {layer}{(layerType is null ? "" : ", " + layerType)}", full);
        }
    }

    /// <summary>
    /// TransformerLens <c>cache.stack_activation(name)</c>: the activation <paramref name="name"/> of every block
    /// (<c>cache["resid_post", l]</c> for l = 0 … <paramref name="layers"/> - 1; all blocks when null) stacked on a new
    /// first dimension, [layers, ...]. A new tensor: the caller disposes it (the cache keeps its own).
    /// </summary>
    public Tensor Stack(string name, int? layers = null, string? layerType = null)
    {
        int n = layers ?? _points.NLayers;
        if (n <= 0 || n > _points.NLayers) throw new SaeSharpException($"Stack: layers must be 1..{_points.NLayers}, got {n}");
        var parts = Enumerable.Range(0, n).Select(l => this[name, l, layerType]).ToArray();
        using var scope = NewDisposeScope();
        return stack(parts, 0).MoveToOuterDisposeScope();
    }

    private SaeSharpException Missing(string asked, string resolved) => _disposed
        ? new($"activation cache: '{asked}' asked for after the cache was disposed (its tensors are freed; read them before disposing it)")
        : new($"activation cache has no '{asked}'{(asked == resolved ? "" : $" ({resolved})")} (has: {string.Join(", ", _tensors.Keys)})");

    /// <summary>The cached hook names, in the order they were recorded.</summary>
    public IEnumerable<string> Keys => _tensors.Keys;
    /// <summary>The cached activations, in the order of <see cref="Keys"/>.</summary>
    public IEnumerable<Tensor> Values => _tensors.Values;
    /// <summary>Number of cached hooks.</summary>
    public int Count => _tensors.Count;

    /// <summary>True when the hook (or the hook an alias resolves to) was cached.</summary>
    public bool ContainsKey(string key) => TryGetValue(key, out _);

    /// <summary>The activation at hook <paramref name="key"/> (a hook name or an alias), if cached.</summary>
    public bool TryGetValue(string key, [MaybeNullWhen(false)] out Tensor value)
    {
        if (_tensors.TryGetValue(key, out value)) return true;
        try
        {
            return _tensors.TryGetValue(_points.Resolve(key), out value);
        }
        catch (SaeSharpException)
        {
            value = null;
            return false;
        }
    }

    /// <summary>The (hook name, activation) pairs in recording order.</summary>
    public IEnumerator<KeyValuePair<string, Tensor>> GetEnumerator() => _tensors.GetEnumerator();
    IEnumerator IEnumerable.GetEnumerator() => GetEnumerator();

    /// <summary>Disposes every cached tensor.</summary>
    public void Dispose()
    {
        foreach (var t in _tensors.Values) t.Dispose();
        _tensors.Clear();
        _disposed = true;
    }
}
