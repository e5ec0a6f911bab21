using System.Text.Json.Nodes;
using TorchSharp;
using static TorchSharp.torch;

namespace SaeSharp.Activations;

/// <summary>
/// Activation rows held in memory: an input tensor [N, d_in] and optionally a target tensor [N, d_out]. Each pass emits
/// every row once, in a fresh random order when shuffling; a batch that crosses the end of a pass (when looping) is
/// completed from the next pass. Used by tests, synthetic data and small experiments.
/// </summary>
public sealed class TensorActivationSource : IActivationSource
{
    private readonly Tensor _input;
    private readonly Tensor? _target;
    private readonly bool _shuffle;
    private readonly bool _loop;
    private SeededRandom _rng;
    private ulong[] _epochStartRng;
    private long[] _order;
    private long _cursor;
    private long _epoch;

    /// <param name="input">[N, d_in] rows (converted to float32; the source keeps its own copy).</param>
    /// <param name="target">[N, d_out] targets with the same rows, or null to reconstruct the input.</param>
    /// <param name="shuffle">Emit each pass in a random order.</param>
    /// <param name="loop">Start another pass instead of returning null when the rows are used up.</param>
    /// <param name="seed">Seed of the shuffling.</param>
    /// <param name="name">Names the data in error messages.</param>
    public TensorActivationSource(Tensor input, Tensor? target = null, bool shuffle = true, bool loop = false, ulong seed = 0, string name = "in-memory activations")
    {
        if (input.dim() != 2) throw new SaeSharpException($"{name}: input has shape [{string.Join(", ", input.shape)}]; expected [N, d_in]");
        if (input.shape[0] == 0) throw new SaeSharpException($"{name}: no rows");
        if (target is not null && (target.dim() != 2 || target.shape[0] != input.shape[0]))
            throw new SaeSharpException($"{name}: target has shape [{string.Join(", ", target.shape)}]; expected [{input.shape[0]}, d_out]");
        // The copies belong to the source, not to a dispose scope the caller may have open; detach() is a temporary.
        using (NewDisposeScope())
        {
            _input = input.detach().to(ScalarType.Float32, copy: true).DetachFromDisposeScope();
            _target = target?.detach().to(ScalarType.Float32, copy: true).DetachFromDisposeScope();
        }
        try
        {
            ActivationRowFile.CheckFinite(_input, $"{name}: input", 0);
            if (_target is not null) ActivationRowFile.CheckFinite(_target, $"{name}: target", 0);
        }
        catch
        {
            Dispose();
            throw;
        }
        _shuffle = shuffle;
        _loop = loop;
        _rng = new SeededRandom(seed);
        _epochStartRng = _rng.GetState();
        _order = NewOrder();
    }

    /// <inheritdoc/>
    public int DIn => (int)_input.shape[1];
    /// <inheritdoc/>
    public int DOut => _target is null ? DIn : (int)_target.shape[1];
    /// <inheritdoc/>
    public long? Rows => _input.shape[0];
    /// <summary>Number of completed passes.</summary>
    public long Epoch => _epoch;

    private long[] NewOrder()
    {
        long n = _input.shape[0];
        if (!_shuffle)
        {
            var o = new long[n];
            for (long i = 0; i < n; i++) o[i] = i;
            return o;
        }
        return _rng.Permutation(n);
    }

    /// <inheritdoc/>
    public ActivationBatch? Next(int batchSize)
    {
        if (batchSize <= 0) throw new ArgumentOutOfRangeException(nameof(batchSize), batchSize, "must be positive");
        var idx = new List<long>(batchSize);
        while (idx.Count < batchSize)
        {
            if (_cursor == _order.Length)
            {
                if (!_loop) break;
                _epoch++;
                _cursor = 0;
                _epochStartRng = _rng.GetState();
                _order = NewOrder();
            }
            long m = Math.Min(batchSize - idx.Count, _order.Length - _cursor);
            for (long i = 0; i < m; i++) idx.Add(_order[_cursor + i]);
            _cursor += m;
        }
        if (idx.Count == 0) return null;
        using var rows = torch.tensor(idx.ToArray());
        return new ActivationBatch(_input.index_select(0, rows), _target?.index_select(0, rows));
    }

    /// <inheritdoc/>
    public JsonNode SaveState() => new JsonObject
    {
        ["kind"] = nameof(TensorActivationSource),
        ["rows"] = Rows,
        ["epoch"] = _epoch,
        ["cursor"] = _cursor,
        ["rng"] = new JsonArray(_epochStartRng.Select(s => (JsonNode)JsonValue.Create(s.ToString(System.Globalization.CultureInfo.InvariantCulture))).ToArray()),
    };

    /// <inheritdoc/>
    public void LoadState(JsonNode state)
    {
        try
        {
            if (state["kind"]?.GetValue<string>() != nameof(TensorActivationSource))
                throw new SaeSharpException($"activation source state is not a {nameof(TensorActivationSource)} state");
            long rows = state["rows"]!.GetValue<long>();
            if (rows != Rows) throw new SaeSharpException($"activation source state is for {rows} rows, but this source has {Rows}");
            long cursor = state["cursor"]!.GetValue<long>();
            if (cursor < 0 || cursor > rows) throw new SaeSharpException($"activation source state has an invalid cursor {cursor}");
            var rng = state["rng"]!.AsArray().Select(n => ulong.Parse(n!.GetValue<string>(), System.Globalization.CultureInfo.InvariantCulture)).ToArray();
            _epoch = state["epoch"]!.GetValue<long>();
            _rng = SeededRandom.FromState(rng);
            _epochStartRng = _rng.GetState();
            _order = NewOrder();
            _cursor = cursor;
        }
        catch (Exception e) when (e is InvalidOperationException or FormatException or NullReferenceException or System.Text.Json.JsonException)
        {
            throw new SaeSharpException($"activation source state is malformed ({e.Message})");
        }
    }

    /// <summary>Frees the source's copies of the input and target.</summary>
    public void Dispose()
    {
        _input.Dispose();
        _target?.Dispose();
    }
}
