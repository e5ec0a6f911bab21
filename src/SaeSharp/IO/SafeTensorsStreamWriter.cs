using System.Text;
using System.Text.Json;
using System.Text.Json.Nodes;
using TorchSharp;
using static TorchSharp.torch;

namespace SaeSharp.IO;

/// <summary>
/// Writes a safetensors file whose tensors are produced a block of rows at a time (e.g. encoding an activation file
/// larger than memory). The header is fixed up front from the declared shapes; rows go straight to their offsets in a
/// temporary file that <see cref="Commit"/> renames into place, so a failed run leaves no partial file behind.
/// </summary>
public sealed class SafeTensorsStreamWriter : IDisposable
{
    private readonly string _path;
    private readonly string _tmp;
    private readonly FileStream _stream;
    private readonly long _dataStart;
    private readonly Dictionary<string, (ScalarType Dtype, long[] Shape, long Begin, long RowBytes)> _entries = new(StringComparer.Ordinal);
    private bool _committed;

    /// <summary>Creates the temporary file and writes the header for <paramref name="tensors"/> (name, dtype, shape [rows, ...]) in the given order; their rows are then written with <see cref="WriteRows"/>.</summary>
    public SafeTensorsStreamWriter(string path, IEnumerable<(string Name, ScalarType Dtype, long[] Shape)> tensors)
    {
        _path = Path.GetFullPath(path);
        _tmp = AtomicFile.TemporaryFor(_path);
        var header = new JsonObject();
        long offset = 0;
        foreach (var (name, dtype, shape) in tensors)
        {
            string ds = SafeTensors.ToDtypeString(dtype);
            long elementSize = SafeTensorsFile.ElementSize(ds)!.Value;
            long numel = shape.Aggregate(1L, (a, b) => a * b);
            long rowBytes = shape.Length == 0 ? numel * elementSize : shape.Skip(1).Aggregate(1L, (a, b) => a * b) * elementSize;
            header[name] = new JsonObject
            {
                ["dtype"] = ds,
                ["shape"] = new JsonArray(shape.Select(d => (JsonNode)JsonValue.Create(d)!).ToArray()),
                ["data_offsets"] = new JsonArray(JsonValue.Create(offset), JsonValue.Create(offset + numel * elementSize)),
            };
            _entries[name] = (dtype, shape, offset, rowBytes);
            offset += numel * elementSize;
        }
        var headerBytes = Encoding.UTF8.GetBytes(header.ToJsonString());
        int pad = (8 - headerBytes.Length % 8) % 8;
        _stream = new FileStream(_tmp, FileMode.CreateNew, FileAccess.ReadWrite, FileShare.None, 1 << 20);
        _stream.Write(BitConverter.GetBytes((ulong)(headerBytes.Length + pad)));
        _stream.Write(headerBytes);
        for (int i = 0; i < pad; i++) _stream.WriteByte((byte)' ');
        _dataStart = _stream.Position;
        _stream.SetLength(_dataStart + offset);
    }

    /// <summary>Writes <paramref name="rows"/> (shape [n, ...rest]) at row <paramref name="startRow"/> of tensor <paramref name="name"/>.</summary>
    public void WriteRows(string name, long startRow, Tensor rows)
    {
        if (!_entries.TryGetValue(name, out var e)) throw new SaeSharpException($"{_path}: no tensor '{name}' declared");
        if (!rows.shape.Skip(1).SequenceEqual(e.Shape.Skip(1)) || startRow < 0 || startRow + rows.shape[0] > e.Shape[0])
            throw new SaeSharpException($"{_path}: rows [{string.Join(", ", rows.shape)}] at {startRow} do not fit tensor '{name}' [{string.Join(", ", e.Shape)}]");
        using var c = rows.detach().cpu().to(e.Dtype).contiguous();
        _stream.Seek(_dataStart + e.Begin + startRow * e.RowBytes, SeekOrigin.Begin);
        NativeBytes.Visit(c, span => _stream.Write(span));
    }

    /// <summary>Flushes and renames the file into place.</summary>
    public void Commit()
    {
        _stream.Flush(flushToDisk: true);
        _stream.Dispose();
        File.Move(_tmp, _path, overwrite: true);
        _committed = true;
    }

    /// <summary>Closes the file and, unless <see cref="Commit"/> ran, deletes the temporary.</summary>
    public void Dispose()
    {
        _stream.Dispose();
        if (!_committed)
            try { File.Delete(_tmp); } catch (IOException) { }
    }
}
