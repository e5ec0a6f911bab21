using System.Text;
using System.Text.Json;
using System.Text.Json.Nodes;
using TorchSharp;
using static TorchSharp.torch;

namespace SaeSharp.IO;

/// <summary>One tensor's entry in a safetensors header: dtype, shape and byte range within the data section.</summary>
public sealed record SafeTensorInfo(string Name, string Dtype, long[] Shape, long Begin, long End)
{
    /// <summary>Number of elements (the product of the shape; 1 for a scalar).</summary>
    public long NumElements => Shape.Aggregate(1L, (a, b) => a * b);
    /// <summary>The TorchSharp dtype of <see cref="Dtype"/> (F32 → Float32, BF16 → BFloat16, ...).</summary>
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

    /// <summary>The file's path as given to <see cref="Open"/>.</summary>
    public string Path { get; }
    /// <summary>Every tensor's header entry, by name.</summary>
    public IReadOnlyDictionary<string, SafeTensorInfo> Tensors { get; }
    /// <summary>Names in the order of their data offsets.</summary>
    public IReadOnlyList<string> Names { get; }
    /// <summary>The header's <c>__metadata__</c> strings (empty when there are none).</summary>
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

    /// <summary>Opens <paramref name="path"/> and validates its header against the file size; a missing file or a bad header is a <see cref="SaeSharpException"/> naming the file and the field.</summary>
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
            root = StrictJson.Parse(Encoding.UTF8.GetString(headerBytes).TrimEnd(' ')) as JsonObject
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
            string dtype = entry["dtype"] is JsonValue dv && dv.TryGetValue(out string? ds) ? ds
                : throw new SaeSharpException($"{path}: tensor '{name}': missing dtype, or not a string");
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
            long numel = 1, expectedBytes;
            try
            {
                foreach (var d in shape) numel = checked(numel * d);
                expectedBytes = checked(numel * elementSize);
            }
            catch (OverflowException)
            {
                throw new SaeSharpException($"{path}: tensor '{name}': shape [{string.Join(", ", shape)}] is too large");
            }
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

    /// <summary>The header entry of tensor <paramref name="name"/>; a missing name is a <see cref="SaeSharpException"/> listing the file's tensors.</summary>
    public SafeTensorInfo Info(string name) =>
        Tensors.TryGetValue(name, out var info)
            ? info
            : throw new SaeSharpException($"{Path}: no tensor named '{name}' (has: {string.Join(", ", Names)})");

    /// <summary>True when the file holds a tensor named <paramref name="name"/>.</summary>
    public bool Contains(string name) => Tensors.ContainsKey(name);

    /// <summary>Reads a whole tensor in its stored dtype, or converted to <paramref name="dtype"/>.</summary>
    public Tensor Read(string name, ScalarType? dtype = null)
    {
        var info = Info(name);
        CheckFloat8(info, dtype);
        var t = ReadBytes(info, info.Begin, info.Shape);
        return Convert(t, dtype);
    }

    /// <summary>Reads rows [start, start+count) of a tensor along its first dimension.</summary>
    public Tensor ReadRows(string name, long start, long count, ScalarType? dtype = null) => ReadRows(name, start, count, dtype, rowDims: 1);

    /// <summary>Reads rows [start, start+count) of a tensor seen as a matrix [product of all dimensions but the last, last
    /// dimension]: a [batch, seq, d] tensor (a hook activation of <c>sae model run</c>) gives rows of d, position by position.</summary>
    public Tensor ReadMatrixRows(string name, long start, long count, ScalarType? dtype = null) =>
        ReadRows(name, start, count, dtype, rowDims: Math.Max(1, Info(name).Shape.Length - 1));

    /// <summary>Rows along the first <paramref name="rowDims"/> dimensions taken as one (row-major, so a row range is one byte range).</summary>
    private Tensor ReadRows(string name, long start, long count, ScalarType? dtype, int rowDims)
    {
        var info = Info(name);
        CheckFloat8(info, dtype);
        if (info.Shape.Length == 0) throw new SaeSharpException($"{Path}: tensor '{name}' is a scalar; it has no rows");
        long rows = info.Shape.Take(rowDims).Aggregate(1L, (a, b) => a * b);
        if (start < 0 || count < 0 || start + count > rows)
            throw new SaeSharpException($"{Path}: tensor '{name}': rows [{start}, {start + count}) out of range 0..{rows}");
        long rowElements = info.Shape.Skip(rowDims).Aggregate(1L, (a, b) => a * b);
        long rowBytes = rowElements * ElementSize(info.Dtype)!.Value;
        long[] shape = [count, .. info.Shape.Skip(rowDims)];
        var t = ReadBytes(info, info.Begin + start * rowBytes, shape);
        return Convert(t, dtype);
    }

    /// <summary>
    /// Reads, for each row index in <paramref name="rows"/> (any order, repeats allowed) of a tensor's first dimension, the
    /// elements [<paramref name="innerStart"/>, +<paramref name="innerCount"/>) of that row (flattened): a [rows.Length,
    /// innerCount] tensor, in the stored dtype or converted to <paramref name="dtype"/>. Only those bytes are read (safetensors'
    /// <c>get_slice(name)[rows]</c>, and one output layer of a CLT decoder row [L − i, d_model] with innerStart = k·d_model).
    /// </summary>
    public Tensor ReadGathered(string name, IReadOnlyList<long> rows, long innerStart, long innerCount, ScalarType? dtype = null)
    {
        ArgumentNullException.ThrowIfNull(rows);
        var info = Info(name);
        CheckFloat8(info, dtype);
        if (info.Shape.Length == 0) throw new SaeSharpException($"{Path}: tensor '{name}' is a scalar; it has no rows");
        long rowElements = info.Shape.Skip(1).Aggregate(1L, (a, b) => a * b);
        if (innerStart < 0 || innerCount < 0 || innerStart + innerCount > rowElements)
            throw new SaeSharpException($"{Path}: tensor '{name}': elements [{innerStart}, {innerStart + innerCount}) of a row lie outside its {rowElements}");
        foreach (long r in rows)
            if (r < 0 || r >= info.Shape[0])
                throw new SaeSharpException($"{Path}: tensor '{name}': row {r} out of range 0..{info.Shape[0] - 1}");
        int size = ElementSize(info.Dtype)!.Value;
        long chunkBytes = innerCount * size;
        var t = torch.empty([rows.Count, innerCount], IsFloat8(info.Dtype) ? ScalarType.Byte : info.ScalarType);
        if (rows.Count == 0 || innerCount == 0) return Convert(t, dtype);
        try
        {
            lock (_stream)
            {
                long perBlock = Math.Max(1, (1L << 28) / chunkBytes);   // a span is below 2 GiB
                for (long b = 0; b < rows.Count; b += perBlock)
                {
                    long n = Math.Min(perBlock, rows.Count - b);
                    using var block = t.narrow(0, b, n);
                    var span = block.bytes;
                    for (long i = 0; i < n; i++)
                    {
                        _stream.Seek(_dataStart + info.Begin + (rows[(int)(b + i)] * rowElements + innerStart) * size, SeekOrigin.Begin);
                        _stream.ReadExactly(span.Slice((int)(i * chunkBytes), (int)chunkBytes));
                    }
                }
            }
        }
        catch (EndOfStreamException)
        {
            t.Dispose();
            throw new SaeSharpException($"{Path}: tensor '{info.Name}': file ended while reading its data (truncated)");
        }
        return Convert(t, dtype);
    }

    /// <summary>True for the float8 dtypes (F8_E4M3, F8_E5M2), which TorchSharp has no type for: they are read only as their
    /// raw bytes (dtype Byte), for a caller that decodes them (DeepSeek-V3's block-quantised weights).</summary>
    internal static bool IsFloat8(string dtype) => dtype is "F8_E4M3" or "F8_E5M2";

    private void CheckFloat8(SafeTensorInfo info, ScalarType? dtype)
    {
        if (IsFloat8(info.Dtype) && dtype != ScalarType.Byte)
            throw new SaeSharpException($"{Path}: tensor '{info.Name}' is {info.Dtype} (float8), which is read only where a block scale " +
                                        $"'{info.Name}_scale_inv' dequantises it (DeepSeek-V3's quantization_config fp8)");
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
        var t = torch.empty(shape, IsFloat8(info.Dtype) ? ScalarType.Byte : info.ScalarType);
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

    /// <summary>Closes the file.</summary>
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
