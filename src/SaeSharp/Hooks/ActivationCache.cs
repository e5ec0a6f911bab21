using System.Collections;
using System.Diagnostics.CodeAnalysis;
using static TorchSharp.torch;

namespace SaeSharp.Hooks;

/// <summary>
/// Activations recorded by a forward pass, keyed by TransformerLens hook name (the TransformerLens
/// <c>ActivationCache</c>). The cache owns its tensors (views of the forward's activations, no copies):
/// dispose it to free them. Lookups also accept aliases (<c>gpt_neox.layers.1.mlp</c>).
/// </summary>
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

    public Tensor this[string key] =>
        TryGetValue(key, out var t) ? t
        : throw new SaeSharpException($"activation cache has no '{key}' (has: {string.Join(", ", _tensors.Keys)})");

    public IEnumerable<string> Keys => _tensors.Keys;
    public IEnumerable<Tensor> Values => _tensors.Values;
    public int Count => _tensors.Count;

    public bool ContainsKey(string key) => TryGetValue(key, out _);

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

    public IEnumerator<KeyValuePair<string, Tensor>> GetEnumerator() => _tensors.GetEnumerator();
    IEnumerator IEnumerable.GetEnumerator() => GetEnumerator();

    public void Dispose()
    {
        foreach (var t in _tensors.Values) t.Dispose();
        _tensors.Clear();
    }
}
