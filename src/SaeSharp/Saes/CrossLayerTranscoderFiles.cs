using SaeSharp.IO;
using static TorchSharp.torch;

namespace SaeSharp.Saes;

/// <summary>
/// Where a lazily loaded <see cref="CrossLayerTranscoder"/>'s decoders (and, optionally, encoders) lie in its per-layer
/// safetensors files, read on demand as circuit-tracer's <c>lazy_decoder</c> / <c>lazy_encoder</c> do: decoder rows of the
/// active features only, an encoder one layer at a time. Each file's size and modification time are recorded when loaded;
/// a file changed since is an error naming it, never a read of other bytes.
/// </summary>
internal sealed class CrossLayerTranscoderFiles : IDisposable
{
    /// <summary>A weight tensor in a file. Decoder: [d_transcoder, k, d_model] whose slice s is output layer
    /// <paramref name="FirstOutput"/> + s, or [d_transcoder, d_model] (k = 1). Encoder: [d_transcoder, d_model], or
    /// [d_model, d_transcoder] when <paramref name="Transposed"/> (Gemma Scope 2's <c>w_enc</c>).</summary>
    internal sealed record Source(string File, string Key, int FirstOutput = 0, bool Transposed = false);

    private readonly Source[]? _decoders;
    private readonly Source[]? _encoders;
    private readonly ScalarType _dtype;
    private readonly long _dTranscoder, _dModel;
    private readonly Dictionary<string, (long Length, DateTime Written)> _stamps = new(StringComparer.Ordinal);
    private readonly Dictionary<string, SafeTensorsFile> _open = new(StringComparer.Ordinal);

    /// <summary>Lazy decoders (one per layer) and / or encoders (one per layer) of a CLT of <paramref name="dTranscoder"/>
    /// features and width <paramref name="dModel"/>, read as <paramref name="dtype"/>. Every tensor's header shape is checked
    /// now (each file's header only is read).</summary>
    public CrossLayerTranscoderFiles(Source[]? decoders, Source[]? encoders, int nLayers, bool perLayer, long dTranscoder, long dModel, ScalarType dtype)
    {
        _decoders = decoders;
        _encoders = encoders;
        _dtype = dtype;
        (_dTranscoder, _dModel) = (dTranscoder, dModel);
        try
        {
            for (int i = 0; i < (decoders?.Length ?? 0); i++)
            {
                var s = decoders![i];
                var shape = Open(s.File).Info(s.Key).Shape;
                long k = shape.Length == 3 ? shape[1] : 1;
                bool ok = shape.Length is 2 or 3 && shape[0] == dTranscoder && shape[^1] == dModel
                    && s.FirstOutput <= i && s.FirstOutput + k >= (perLayer ? i + 1 : nLayers);
                if (!ok)
                    throw new SaeSharpException($"{s.File}: tensor '{s.Key}' has shape [{string.Join(", ", shape)}], which does not hold layer {i}'s decoders " +
                        $"(d_transcoder = {dTranscoder}, d_model = {dModel}, output layers {i}..{(perLayer ? i : nLayers - 1)})");
            }
            foreach (var s in encoders ?? [])
            {
                var shape = Open(s.File).Info(s.Key).Shape;
                long[] want = s.Transposed ? [dModel, dTranscoder] : [dTranscoder, dModel];
                if (!shape.SequenceEqual(want))
                    throw new SaeSharpException($"{s.File}: tensor '{s.Key}' has shape [{string.Join(", ", shape)}], expected [{string.Join(", ", want)}]");
            }
        }
        catch
        {
            Dispose();
            throw;
        }
    }

    /// <summary>Whether the decoders are read on demand.</summary>
    public bool LazyDecoder => _decoders is not null;
    /// <summary>Whether the encoders are read on demand.</summary>
    public bool LazyEncoder => _encoders is not null;

    /// <summary>Decoder rows [n, d_model] of <paramref name="features"/> of layer <paramref name="layer"/> into output layer
    /// <paramref name="output"/>: only those rows' bytes are read.</summary>
    public Tensor DecoderRows(int layer, int output, IReadOnlyList<long> features)
    {
        var s = _decoders![layer];
        return File(s.File).ReadGathered(s.Key, features, (output - s.FirstOutput) * _dModel, _dModel, _dtype);
    }

    /// <summary>Layer <paramref name="layer"/>'s decoders summed over its output layers [d_transcoder, d_model]
    /// (<c>W_dec[layer].sum(1)</c>), read a block of rows at a time.</summary>
    public Tensor DecoderSum(int layer, int firstOutput, int outputs)
    {
        var s = _decoders![layer];
        var file = File(s.File);
        long rowsPerBlock = Math.Max(1, (1L << 26) / (outputs * _dModel));
        var sum = empty(_dTranscoder, _dModel, dtype: _dtype);
        for (long start = 0; start < _dTranscoder; start += rowsPerBlock)
        {
            using var scope = NewDisposeScope();
            long count = Math.Min(rowsPerBlock, _dTranscoder - start);
            var block = file.ReadRows(s.Key, start, count, _dtype);
            var slices = block.view(count, -1, _dModel).narrow(1, firstOutput - s.FirstOutput, outputs).contiguous();
            sum.narrow(0, start, count).copy_(slices.sum(1));
        }
        return sum;
    }

    /// <summary>Layer <paramref name="layer"/>'s encoder [d_transcoder, d_model] (contiguous), read whole.</summary>
    public Tensor Encoder(int layer)
    {
        var s = _encoders![layer];
        var w = File(s.File).Read(s.Key, _dtype);
        if (!s.Transposed) return w;
        using (w) return w.t().contiguous();
    }

    /// <summary>Encoder rows [n, d_model] of <paramref name="features"/> of layer <paramref name="layer"/>: only those rows'
    /// bytes are read (the whole encoder when it is stored transposed).</summary>
    public Tensor EncoderRows(int layer, IReadOnlyList<long> features)
    {
        var s = _encoders![layer];
        if (!s.Transposed) return File(s.File).ReadGathered(s.Key, features, 0, _dModel, _dtype);
        using var w = Encoder(layer);
        using var ids = tensor(features.ToArray());
        return w.index_select(0, ids);
    }

    /// <summary>The open file at <paramref name="path"/> after checking it is unchanged since it was first opened.</summary>
    private SafeTensorsFile File(string path)
    {
        lock (_open)
        {
            var (length, written) = _stamps[path];
            var now = new FileInfo(path);
            if (!now.Exists)
                throw new SaeSharpException($"{path}: deleted since the cross-layer transcoder was loaded lazily (its weights are read on demand): reload it");
            if (now.Length != length || now.LastWriteTimeUtc != written)
                throw new SaeSharpException($"{path}: changed since the cross-layer transcoder was loaded lazily ({length} bytes, written {written:O}; " +
                    $"now {now.Length} bytes, written {now.LastWriteTimeUtc:O}): its weights are read on demand, so reload it (or load it with lazy off)");
            return _open[path];
        }
    }

    private SafeTensorsFile Open(string path)
    {
        lock (_open)
        {
            if (_open.TryGetValue(path, out var f)) return f;
            var info = new FileInfo(path);
            _stamps[path] = (info.Length, info.LastWriteTimeUtc);
            return _open[path] = SafeTensorsFile.Open(path);
        }
    }

    /// <summary>Closes the files.</summary>
    public void Dispose()
    {
        lock (_open)
        {
            foreach (var f in _open.Values) f.Dispose();
            _open.Clear();
        }
    }
}
