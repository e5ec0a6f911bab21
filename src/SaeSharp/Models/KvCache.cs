using static TorchSharp.torch;

namespace SaeSharp.Models;

/// <summary>
/// Keys and values of the tokens processed so far (per layer, [batch, head, pos, d_head]) and their
/// attention mask, for incremental decoding. Owns its tensors.
/// </summary>
internal sealed class KvCache : IDisposable
{
    private readonly Tensor?[] _k;
    private readonly Tensor?[] _v;

    internal KvCache(int nLayers)
    {
        _k = new Tensor?[nLayers];
        _v = new Tensor?[nLayers];
    }

    /// <summary>Tokens already in the cache.</summary>
    public long Length { get; private set; }

    /// <summary>[batch, Length] attention mask of the cached tokens (1 = real token), or null before the first step.</summary>
    internal Tensor? Mask { get; private set; }

    internal void SetMask(Tensor mask)
    {
        Mask?.Dispose();
        Mask = mask.alias().DetachFromDisposeScope();
    }

    /// <summary>Appends this step's keys and values for one layer; returns all keys and values so far.</summary>
    internal (Tensor K, Tensor V) Append(int layer, Tensor k, Tensor v)
    {
        Tensor kAll = _k[layer] is { } pk ? cat([pk, k], 2) : k.alias();
        Tensor vAll = _v[layer] is { } pv ? cat([pv, v], 2) : v.alias();
        _k[layer]?.Dispose();
        _v[layer]?.Dispose();
        _k[layer] = kAll.alias().DetachFromDisposeScope();
        _v[layer] = vAll.alias().DetachFromDisposeScope();
        return (kAll, vAll);
    }

    internal void Advance(long n) => Length += n;

    public void Dispose()
    {
        for (int i = 0; i < _k.Length; i++)
        {
            _k[i]?.Dispose();
            _v[i]?.Dispose();
            _k[i] = _v[i] = null;
        }
        Mask?.Dispose();
        Mask = null;
    }
}
