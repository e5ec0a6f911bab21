using System.Text.Json.Nodes;
using SaeSharp.Activations;
using static TorchSharp.torch;

namespace SaeSharp.Tests.Training;

/// <summary>Rows of an in-memory tensor, looping forever, in a fixed (seeded) shuffled order per pass.</summary>
internal sealed class InMemorySource : IActivationSource
{
    private readonly Tensor _data;
    private readonly Tensor? _target;
    private readonly long _seed;
    private long _cursor;
    private long _epoch;
    private long[] _order;

    public InMemorySource(Tensor data, Tensor? target = null, long seed = 0)
    {
        _data = data.DetachFromDisposeScope();
        _target = target?.DetachFromDisposeScope();
        _seed = seed;
        _order = Order(0);
    }

    public int DIn => (int)_data.shape[1];
    public int DOut => (int)(_target ?? _data).shape[1];
    public long? Rows => _data.shape[0];
    public int BatchesServed { get; private set; }

    private long[] Order(long epoch)
    {
        using var g = new Generator((ulong)(_seed * 1000 + epoch + 1));
        using var p = randperm(_data.shape[0], generator: g);
        return p.data<long>().ToArray();
    }

    public ActivationBatch? Next(int batchSize)
    {
        var idx = new long[batchSize];
        for (int i = 0; i < batchSize; i++)
        {
            if (_cursor == _data.shape[0])
            {
                _epoch++;
                _cursor = 0;
                _order = Order(_epoch);
            }
            idx[i] = _order[_cursor++];
        }
        BatchesServed++;
        using var ix = tensor(idx);
        var input = _data.index_select(0, ix);
        return new ActivationBatch(input, _target?.index_select(0, ix));
    }

    public JsonNode SaveState() => new JsonObject { ["cursor"] = _cursor, ["epoch"] = _epoch };

    public void LoadState(JsonNode state)
    {
        _cursor = state["cursor"]!.GetValue<long>();
        _epoch = state["epoch"]!.GetValue<long>();
        _order = Order(_epoch);
    }

    public void Dispose()
    {
        _data.Dispose();
        _target?.Dispose();
    }
}
