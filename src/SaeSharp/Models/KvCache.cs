using static TorchSharp.torch;

namespace SaeSharp.Models;

/// <summary>
/// Keys and values of the tokens processed so far (per layer, [batch, head, pos, d_head]) and their
/// attention mask, for incremental decoding. Owns its tensors. A sliding-window layer keeps only the keys its next query
/// can see (HF's sliding-window cache), so its memory stays bounded in long generations.
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

    /// <summary>Appends this step's keys and values for one layer; returns the layer's cached keys and values followed
    /// by this step's (the last positions of the sequence; all of them unless the layer keeps a window). With
    /// <paramref name="keepLast"/> (a sliding window of w keeps w − 1: the keys the next token can attend to) only that
    /// many of the newest positions stay cached.</summary>
    internal (Tensor K, Tensor V) Append(int layer, Tensor k, Tensor v, long? keepLast = null)
    {
        Tensor kAll = _k[layer] is { } pk ? cat([pk, k], 2) : k.alias();
        Tensor vAll = _v[layer] is { } pv ? cat([pv, v], 2) : v.alias();
        _k[layer]?.Dispose();
        _v[layer]?.Dispose();
        long n = kAll.shape[2];
        long keep = keepLast is long w ? Math.Min(w, n) : n;
        _k[layer] = kAll.narrow(2, n - keep, keep).DetachFromDisposeScope();
        _v[layer] = vAll.narrow(2, n - keep, keep).DetachFromDisposeScope();
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
