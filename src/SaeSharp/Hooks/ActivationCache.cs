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

    internal ActivationCache(HookPoints points) => _points = points;

    internal void Set(string name, Tensor t)
    {
        if (_tensors.Remove(name, out var old)) old.Dispose();
        _tensors[name] = t;
    }

    /// <summary>The activation at hook <paramref name="key"/> (a hook name or an alias); a missing hook is a <see cref="SaeSharpException"/> listing the cached ones.</summary>
    public Tensor this[string key] =>
        TryGetValue(key, out var t) ? t
        : throw new SaeSharpException($"activation cache has no '{key}' (has: {string.Join(", ", _tensors.Keys)})");

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
    }
}
