using System.Text;
using System.Text.Json;
using System.Text.Json.Nodes;
using TorchSharp;
using static TorchSharp.torch;

namespace SaeSharp.IO;

/// <summary>One tensor's entry in a safetensors header: dtype, shape and byte range within the data section.</summary>
public sealed record SafeTensorInfo(string Name, string Dtype, long[] Shape, long Begin, long End)
{
    public long NumElements => Shape.Aggregate(1L, (a, b) => a * b);
    public ScalarType ScalarType => SafeTensors.ToScalarType(Dtype);
}

/// <summary>
/// Reader of a <c>.safetensors</c> file. The header (length, JSON, dtypes, shapes, offsets) is validated
/// against the file size when the file is opened, before any tensor data is read; tensors are then read
/// one at a time (or a range of rows at a time), so files larger than memory work.
/// </summary>
public sealed class SafeTensorsFile : IDisposable
{
    /// <summary>Headers above this size are refused: real files stay far below it.</summary>
    public const long MaxHeaderBytes = 100_000_000;

    private readonly FileStream _stream;
    private readonly long _dataStart;

    public string Path { get; }
    public IReadOnlyDictionary<string, SafeTensorInfo> Tensors { get; }
    /// <summary>Names in the order of their data offsets.</summary>
    public IReadOnlyList<string> Names { get; }
    public IReadOnlyDictionary<string, string> Metadata { get; }

    private SafeTensorsFile(string path, FileStream stream, long dataStart,
        Dictionary<string, SafeTensorInfo> tensors, Dictionary<string, string> metadata)
    {
        Path = path;
        _stream = stream;
        _dataStart = dataStart;
        Tensors = tensors;
        Names = tensors.Values.OrderBy(t => t.Begin).ThenBy(t => t.Name, StringComparer.Ordinal).Select(t => t.Name).ToList();
        Metadata = metadata;
    }

    public static SafeTensorsFile Open(string path)
    {
        if (!File.Exists(path)) throw new SaeSharpException($"{path}: file not found");
        var stream = new FileStream(path, FileMode.Open, FileAccess.Read, FileShare.Read, 1 << 16, FileOptions.RandomAccess);
        try
        {
            long fileLength = stream.Length;
            if (fileLength < 8) throw new SaeSharpException($"{path}: not a safetensors file: {fileLength} bytes, shorter than the 8-byte header length");
            Span<byte> lenBytes = stackalloc byte[8];
            stream.ReadExactly(lenBytes);
            ulong headerLen = BitConverter.ToUInt64(lenBytes);
            if (headerLen > MaxHeaderBytes)
                throw new SaeSharpException($"{path}: safetensors header length {headerLen} exceeds the limit of {MaxHeaderBytes} bytes (corrupt or not a safetensors file)");
            if ((long)headerLen > fileLength - 8)
                throw new SaeSharpException($"{path}: safetensors header length {headerLen} exceeds the file's remaining {fileLength - 8} bytes (truncated or corrupt)");
            var headerBytes = new byte[headerLen];
            stream.ReadExactly(headerBytes);
            long dataStart = 8 + (long)headerLen;
            long dataLength = fileLength - dataStart;
            var (tensors, metadata) = ParseHeader(path, headerBytes, dataLength);
            return new SafeTensorsFile(path, stream, dataStart, tensors, metadata);
        }
        catch
        {
            stream.Dispose();
            throw;
        }
    }

    private static (Dictionary<string, SafeTensorInfo>, Dictionary<string, string>) ParseHeader(string path, byte[] headerBytes, long dataLength)
    {
        JsonObject root;
        try
        {
            root = JsonNode.Parse(Encoding.UTF8.GetString(headerBytes).TrimEnd(' ')) as JsonObject
                   ?? throw new SaeSharpException($"{path}: safetensors header is not a JSON object");
        }
        catch (JsonException e)
        {
            throw new SaeSharpException($"{path}: safetensors header is not valid JSON ({e.Message})");
        }

        var tensors = new Dictionary<string, SafeTensorInfo>(StringComparer.Ordinal);
        var metadata = new Dictionary<string, string>(StringComparer.Ordinal);
        foreach (var (name, node) in root)
        {
            if (name == "__metadata__")
            {
                if (node is JsonObject meta)
                    foreach (var (k, v) in meta)
                        metadata[k] = v is JsonValue jv && jv.TryGetValue(out string? s) ? s : v?.ToJsonString() ?? "";
                continue;
            }
            if (node is not JsonObject entry)
                throw new SaeSharpException($"{path}: tensor '{name}': header entry is not an object");
            string dtype = entry["dtype"]?.GetValue<string>() ?? throw new SaeSharpException($"{path}: tensor '{name}': missing dtype");
            int elementSize = ElementSize(dtype) ?? throw new SaeSharpException($"{path}: tensor '{name}': unsupported dtype '{dtype}'");
            var shapeNode = entry["shape"] as JsonArray ?? throw new SaeSharpException($"{path}: tensor '{name}': missing shape");
            var offsetsNode = entry["data_offsets"] as JsonArray ?? throw new SaeSharpException($"{path}: tensor '{name}': missing data_offsets");
            long[] shape;
            long begin, end;
            try
            {
                shape = shapeNode.Select(n => n!.GetValue<long>()).ToArray();
                if (offsetsNode.Count != 2) throw new FormatException();
                begin = offsetsNode[0]!.GetValue<long>();
                end = offsetsNode[1]!.GetValue<long>();
            }
            catch (Exception e) when (e is FormatException or InvalidOperationException or NullReferenceException)
            {
                throw new SaeSharpException($"{path}: tensor '{name}': shape and data_offsets must be arrays of non-negative integers");
            }
            if (shape.Any(d => d < 0) || begin < 0 || end < begin)
                throw new SaeSharpException($"{path}: tensor '{name}': negative dimension or inverted data_offsets [{begin}, {end}]");
            long numel = 1;
            foreach (var d in shape) numel = checked(numel * d);
            long expectedBytes = checked(numel * elementSize);
            if (end - begin != expectedBytes)
                throw new SaeSharpException($"{path}: tensor '{name}': shape [{string.Join(", ", shape)}] of {dtype} needs {expectedBytes} bytes but data_offsets [{begin}, {end}] hold {end - begin}");
            if (end > dataLength)
                throw new SaeSharpException($"{path}: tensor '{name}': data_offsets end {end} lies beyond the {dataLength} bytes of data in the file (truncated)");
            tensors[name] = new SafeTensorInfo(name, dtype, shape, begin, end);
        }

        // Byte ranges may not overlap.
        long prevEnd = 0;
        string? prevName = null;
        foreach (var t in tensors.Values.OrderBy(t => t.Begin).ThenBy(t => t.End))
        {
            if (t.Begin < prevEnd && t.End > t.Begin)
                throw new SaeSharpException($"{path}: tensors '{prevName}' and '{t.Name}' have overlapping data_offsets");
            prevEnd = Math.Max(prevEnd, t.End);
            prevName = t.Name;
        }
        return (tensors, metadata);
    }

    public SafeTensorInfo Info(string name) =>
        Tensors.TryGetValue(name, out var info)
            ? info
            : throw new SaeSharpException($"{Path}: no tensor named '{name}' (has: {string.Join(", ", Names)})");

    public bool Contains(string name) => Tensors.ContainsKey(name);

    /// <summary>Reads a whole tensor in its stored dtype, or converted to <paramref name="dtype"/>.</summary>
    public Tensor Read(string name, ScalarType? dtype = null)
    {
        var info = Info(name);
        var t = ReadBytes(info, info.Begin, info.Shape);
        return Convert(t, dtype);
    }

    /// <summary>Reads rows [start, start+count) of a tensor along its first dimension.</summary>
    public Tensor ReadRows(string name, long start, long count, ScalarType? dtype = null)
    {
        var info = Info(name);
        if (info.Shape.Length == 0) throw new SaeSharpException($"{Path}: tensor '{name}' is a scalar; it has no rows");
        if (start < 0 || count < 0 || start + count > info.Shape[0])
            throw new SaeSharpException($"{Path}: tensor '{name}': rows [{start}, {start + count}) out of range 0..{info.Shape[0]}");
        long rowElements = info.Shape.Skip(1).Aggregate(1L, (a, b) => a * b);
        long rowBytes = rowElements * ElementSize(info.Dtype)!.Value;
        var shape = (long[])info.Shape.Clone();
        shape[0] = count;
        var t = ReadBytes(info, info.Begin + start * rowBytes, shape);
        return Convert(t, dtype);
    }

    private static Tensor Convert(Tensor t, ScalarType? dtype)
    {
        if (dtype is null || t.dtype == dtype) return t;
        var c = t.to(dtype.Value);
        t.Dispose();
        return c;
    }

    private Tensor ReadBytes(SafeTensorInfo info, long offset, long[] shape)
    {
        var t = torch.empty(shape, info.ScalarType);
        lock (_stream)
        {
            _stream.Seek(_dataStart + offset, SeekOrigin.Begin);
            try
            {
                NativeBytes.Fill(t, span => _stream.ReadExactly(span));
            }
            catch (EndOfStreamException)
            {
                t.Dispose();
                throw new SaeSharpException($"{Path}: tensor '{info.Name}': file ended while reading its data (truncated)");
            }
        }
        return t;
    }

    public void Dispose() => _stream.Dispose();

    internal static int? ElementSize(string dtype) => dtype switch
    {
        "F64" or "I64" or "U64" => 8,
        "F32" or "I32" or "U32" => 4,
        "F16" or "BF16" or "I16" or "U16" => 2,
        "I8" or "U8" or "BOOL" or "F8_E4M3" or "F8_E5M2" => 1,
        _ => null,
    };
}

/// <summary>Reading and writing of the safetensors format (https://github.com/huggingface/safetensors).</summary>
public static class SafeTensors
{
    /// <summary>Reads every tensor of a file into memory.</summary>
    public static Dictionary<string, Tensor> Load(string path, ScalarType? dtype = null)
    {
        using var file = SafeTensorsFile.Open(path);
        return file.Names.ToDictionary(n => n, n => file.Read(n, dtype), StringComparer.Ordinal);
    }

    /// <summary>
    /// Writes tensors to <paramref name="path"/> atomically (a temporary file renamed into place), so an
    /// existing file is never left half-written. Tensor data are written in the order given.
    /// </summary>
    public static void Save(string path, IEnumerable<KeyValuePair<string, Tensor>> tensors, IReadOnlyDictionary<string, string>? metadata = null) =>
        Save(path, tensors, metadata, group: null);

    /// <summary><see cref="Save(string, IEnumerable{KeyValuePair{string, Tensor}}, IReadOnlyDictionary{string, string}?)"/>
    /// as part of <paramref name="group"/> (renamed into place by its commit), or on its own when null.</summary>
    public static void Save(string path, IEnumerable<KeyValuePair<string, Tensor>> tensors, IReadOnlyDictionary<string, string>? metadata, AtomicFileGroup? group)
    {
        var list = tensors.ToList();
        var header = new JsonObject();
        if (metadata is { Count: > 0 })
        {
            var meta = new JsonObject();
            foreach (var (k, v) in metadata) meta[k] = v;
            header["__metadata__"] = meta;
        }
        long offset = 0;
        var contiguous = new List<Tensor>(list.Count);
        try
        {
            foreach (var (name, tensor) in list)
            {
                var c = tensor.detach().cpu().contiguous();
                contiguous.Add(c);
                long n = c.numel() * c.element_size();
                var entry = new JsonObject
                {
                    ["dtype"] = ToDtypeString(c.dtype),
                    ["shape"] = new JsonArray(c.shape.Select(d => (JsonNode)JsonValue.Create(d)!).ToArray()),
                    ["data_offsets"] = new JsonArray(JsonValue.Create(offset), JsonValue.Create(offset + n)),
                };
                header[name] = entry;
                offset += n;
            }
            var headerBytes = Encoding.UTF8.GetBytes(header.ToJsonString());
            int pad = (8 - headerBytes.Length % 8) % 8;
            var padded = new byte[headerBytes.Length + pad];
            headerBytes.CopyTo(padded, 0);
            for (int i = headerBytes.Length; i < padded.Length; i++) padded[i] = (byte)' ';

            Action<Stream> write = stream =>
            {
                stream.Write(BitConverter.GetBytes((ulong)padded.Length));
                stream.Write(padded);
                foreach (var c in contiguous)
                    NativeBytes.Visit(c, span => stream.Write(span));
            };
            if (group is null) AtomicFile.Write(path, write);
            else group.Write(path, write);
        }
        finally
        {
            foreach (var c in contiguous) c.Dispose();
        }
    }

    public static void Save(string path, IReadOnlyDictionary<string, Tensor> tensors, IReadOnlyDictionary<string, string>? metadata = null) =>
        Save(path, (IEnumerable<KeyValuePair<string, Tensor>>)tensors, metadata);

    public static ScalarType ToScalarType(string dtype) => dtype switch
    {
        "F64" => ScalarType.Float64,
        "F32" => ScalarType.Float32,
        "F16" => ScalarType.Float16,
        "BF16" => ScalarType.BFloat16,
        "I64" => ScalarType.Int64,
        "I32" => ScalarType.Int32,
        "I16" => ScalarType.Int16,
        "I8" => ScalarType.Int8,
        "U8" => ScalarType.Byte,
        "BOOL" => ScalarType.Bool,
        _ => throw new SaeSharpException($"safetensors dtype '{dtype}' is not supported"),
    };

    public static string ToDtypeString(ScalarType t) => t switch
    {
        ScalarType.Float64 => "F64",
        ScalarType.Float32 => "F32",
        ScalarType.Float16 => "F16",
        ScalarType.BFloat16 => "BF16",
        ScalarType.Int64 => "I64",
        ScalarType.Int32 => "I32",
        ScalarType.Int16 => "I16",
        ScalarType.Int8 => "I8",
        ScalarType.Byte => "U8",
        ScalarType.Bool => "BOOL",
        _ => throw new SaeSharpException($"dtype {t} cannot be written to safetensors"),
    };
}

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

    public SafeTensorsStreamWriter(string path, IEnumerable<(string Name, ScalarType Dtype, long[] Shape)> tensors)
    {
        _path = Path.GetFullPath(path);
        var dir = Path.GetDirectoryName(_path)!;
        Directory.CreateDirectory(dir);
        _tmp = Path.Combine(dir, $".{Path.GetFileName(_path)}.{Environment.ProcessId}.{Guid.NewGuid():N}.tmp");
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

    public void Dispose()
    {
        _stream.Dispose();
        if (!_committed)
            try { File.Delete(_tmp); } catch (IOException) { }
    }
}
