using Apache.Arrow;
using Apache.Arrow.Ipc;
using Apache.Arrow.Types;
using SaeSharp.Data;
using SaeSharp.IO;
using TorchSharp;
using static TorchSharp.torch;

namespace SaeSharp.Activations;

/// <summary>
/// One shard (<c>data-NNNNN-of-NNNNN.arrow</c>, an Arrow IPC stream) of a SAELens activation cache seen as rows: each
/// window's [context_size, d_in] matrix is context_size rows. Opening walks the stream's messages and records where each
/// record batch's offsets and values lie; a read fetches only the bytes of the rows asked for (a shard is up to 2 GB),
/// after checking that their list offsets are the regular ones of [context_size, d_in] matrices.
/// </summary>
internal sealed class ArrowActivationRowFile : ActivationRowFile
{
    private readonly record struct Batch(long FirstRow, long Rows, long OuterOffsets, long InnerOffsets, long Values, long ValueBytes, long TokenValues);
    /// <summary>Where the <c>token_ids</c> column (<c>fixed_size_list&lt;int32 or int64&gt;[context_size]</c>) sits in a
    /// record batch: its first field node and buffer, and the bytes of one id.</summary>
    private readonly record struct TokenColumn(int Node, int Buffer, int ItemSize);

    private readonly FileStream _stream;
    private readonly SaeLensCacheColumn _column;
    private readonly Batch[] _batches;
    private readonly ScalarType _dtype;
    private readonly TokenColumn? _tokens;

    public ArrowActivationRowFile(string path, SaeLensCacheColumn column)
    {
        Path = path;
        _column = column;
        _dtype = column.Dtype switch { "float16" => ScalarType.Float16, "float64" => ScalarType.Float64, _ => ScalarType.Float32 };
        if (!File.Exists(path)) throw new SaeSharpException($"{path}: activation shard does not exist");
        _stream = new FileStream(path, FileMode.Open, FileAccess.Read, FileShare.Read, 1 << 16, FileOptions.RandomAccess);
        try
        {
            Span<byte> magic = stackalloc byte[8];
            int n = _stream.ReadAtLeast(magic, 8, throwOnEndOfStream: false);
            if (n < 8) throw new SaeSharpException($"{path}: {_stream.Length} bytes, too short for an Arrow IPC stream (empty or truncated file)");
            long start = magic[..6].SequenceEqual("ARROW1"u8) ? 8 : 0;
            HfDiskDataset.CheckMessages(_stream, start, path);
            _stream.Position = start;
            Schema schema;
            try
            {
                using var reader = new ArrowStreamReader(_stream, leaveOpen: true);
                schema = reader.Schema;
            }
            catch (Exception e) when (e is not SaeSharpException and not OutOfMemoryException)
            {
                throw new SaeSharpException($"{path}: not a readable Arrow IPC stream, it is corrupt or truncated ({e.GetType().Name}: {e.Message})", e);
            }
            var (node, buffer) = Locate(schema, column);
            _tokens = LocateTokens(schema);
            _batches = ReadBatches(start, node, buffer);
            Rows = _batches.Length == 0 ? 0 : _batches[^1].FirstRow + _batches[^1].Rows;
        }
        catch
        {
            _stream.Dispose();
            throw;
        }
    }

    public override string Path { get; }
    public override long Rows { get; }
    public override int InputWidth => _column.DIn;
    public override int? TargetWidth => null;
    public override string InputName => _column.Name;
    public override string? TargetName => null;

    public override string Describe(string tensorName) => $"{Path}: column '{tensorName}'";

    public override bool HasTokenIds => _tokens is not null;

    /// <summary>The <c>token_ids</c> column's node and buffer; null when the shard has none. Another type than datasets'
    /// <c>Sequence(Value("int32"), length=context_size)</c> storage is an error naming it.</summary>
    private TokenColumn? LocateTokens(Schema schema)
    {
        var fields = schema.FieldsList.ToList();
        int index = fields.FindIndex(f => f.Name == SaeLensActivationCache.TokenIdsColumn);
        if (index < 0) return null;
        var type = fields[index].DataType;
        if (type is not FixedSizeListType { ValueDataType: var leaf } list || list.ListSize != _column.ContextSize || leaf.TypeId is not (ArrowTypeId.Int32 or ArrowTypeId.Int64))
            throw new SaeSharpException($"{Path}: column '{SaeLensActivationCache.TokenIdsColumn}' is {Describe(type)}; SAELens stores fixed_size_list<int32>[{_column.ContextSize}] (a token id per row of a window)");
        int node = 0, buffer = 0;
        for (int i = 0; i < index; i++) Count(fields[i].DataType, ref node, ref buffer);
        return new TokenColumn(node, buffer, leaf.TypeId == ArrowTypeId.Int32 ? 4 : 8);
    }

    public override long[] ReadTokenIds(long start, long count)
    {
        if (_tokens is not { } tokens) throw new InvalidOperationException($"{Path} has no token ids");
        if (start < 0 || count < 0 || start + count > Rows)
            throw new SaeSharpException($"{Path}: rows [{start}, {start + count}) out of range 0..{Rows}");
        var ids = new long[count];
        long done = 0;
        int b = count == 0 ? 0 : System.Array.FindLastIndex(_batches, x => x.FirstRow <= start);
        while (done < count)
        {
            var batch = _batches[b++];
            long r0 = start + done - batch.FirstRow, n = Math.Min(count - done, batch.Rows - r0);
            _stream.Position = batch.TokenValues + r0 * tokens.ItemSize;
            if (tokens.ItemSize == 8) _stream.ReadExactly(System.Runtime.InteropServices.MemoryMarshal.AsBytes(ids.AsSpan((int)done, (int)n)));
            else
            {
                var narrow = new int[n];
                _stream.ReadExactly(System.Runtime.InteropServices.MemoryMarshal.AsBytes(narrow.AsSpan()));
                for (long k = 0; k < n; k++) ids[done + k] = narrow[k];
            }
            done += n;
        }
        return ids;
    }

    /// <summary>The index of the column's first field node and buffer in each record batch (Arrow's depth-first order of
    /// fields), after checking its type is Array2D's storage of the declared dtype.</summary>
    private (int Node, int Buffer) Locate(Schema schema, SaeLensCacheColumn column)
    {
        var fields = schema.FieldsList.ToList();
        int index = fields.FindIndex(f => f.Name == column.Name);
        if (index < 0)
            throw new SaeSharpException($"{Path}: no column '{column.Name}' (columns: {string.Join(", ", fields.Select(f => f.Name))}); the shard does not match dataset_info.json");
        var type = fields[index].DataType;
        IArrowType expected = column.Dtype switch { "float16" => HalfFloatType.Default, "float64" => DoubleType.Default, _ => FloatType.Default };
        if (type is not ListType { ValueDataType: ListType { ValueDataType: var leaf } } || leaf.TypeId != expected.TypeId)
            throw new SaeSharpException($"{Path}: column '{column.Name}' is {Describe(type)}; datasets stores Array2D({column.Dtype}) as list<list<{expected.Name}>>");
        int node = 0, buffer = 0;
        for (int i = 0; i < index; i++) Count(fields[i].DataType, ref node, ref buffer);
        return (node, buffer);
    }

    private static string Describe(IArrowType t) => t switch
    {
        ListType l => $"list<{Describe(l.ValueDataType)}>",
        LargeListType l => $"large_list<{Describe(l.ValueDataType)}>",
        FixedSizeListType l => $"fixed_size_list<{Describe(l.ValueDataType)}>[{l.ListSize}]",
        _ => t.Name,
    };

    /// <summary>Adds the field nodes and buffers a field of type <paramref name="t"/> takes in an IPC record batch.</summary>
    private void Count(IArrowType t, ref int nodes, ref int buffers)
    {
        nodes++;
        switch (t)
        {
            case ListType or LargeListType or MapType:
                buffers += 2;
                Count(((NestedType)t).Fields[0].DataType, ref nodes, ref buffers);
                break;
            case FixedSizeListType f:
                buffers += 1;
                Count(f.ValueDataType, ref nodes, ref buffers);
                break;
            case StructType s:
                buffers += 1;
                foreach (var c in s.Fields) Count(c.DataType, ref nodes, ref buffers);
                break;
            case StringType or BinaryType or LargeStringType or LargeBinaryType:
                buffers += 3;
                break;
            case NullType:
                break;
            case FixedWidthType:
                buffers += 2;
                break;
            default:
                throw new SaeSharpException($"{Path}: a column of type {t.Name} precedes the activations; SaeSharp reads SAELens caches (hook columns and token_ids)");
        }
    }

    private SaeSharpException Corrupt(string what) => new($"{Path}: {what}: the file is corrupt");

    /// <summary>Walks the stream's messages (already bounds-checked) and records each record batch's rows and the file
    /// positions of the column's outer offsets, inner offsets and values.</summary>
    private Batch[] ReadBatches(long start, int node, int buffer)
    {
        var batches = new List<Batch>();
        long pos = start, len = _stream.Length, rows = 0;
        var word = new byte[4];
        while (true)
        {
            _stream.Position = pos;
            _stream.ReadExactly(word);
            int metaLen = BitConverter.ToInt32(word);
            pos += 4;
            if (metaLen == -1)
            {
                _stream.ReadExactly(word);
                metaLen = BitConverter.ToInt32(word);
                pos += 4;
            }
            if (metaLen == 0) break;
            var meta = new byte[metaLen];
            _stream.ReadExactly(meta);
            var fb = new FlatBuffer(meta, () => Corrupt($"malformed message metadata at byte {pos}"));
            int message = fb.Root();
            long body = fb.Long(message, 3);
            byte headerType = fb.Byte(message, 1);
            long bodyStart = pos + metaLen;
            if (headerType == 2) throw new SaeSharpException($"{Path}: holds a dictionary batch; datasets' Array2D columns are not dictionary-encoded");
            if (headerType == 3)
            {
                int rb = fb.Table(message, 2);
                long length = fb.Long(rb, 0);
                if (fb.Table(rb, 3) != 0) throw new SaeSharpException($"{Path}: a record batch is compressed; datasets writes uncompressed Arrow streams");
                var (nodes, nodeCount) = fb.Vector(rb, 1, 16);
                var (buffers, bufferCount) = fb.Vector(rb, 2, 16);
                if (node + 3 > nodeCount || buffer + 6 > bufferCount) throw Corrupt($"a record batch has {nodeCount} field nodes and {bufferCount} buffers, too few for the schema");
                long NodeLength(int i) => fb.LongAt(nodes + 16 * (node + i));
                long NodeNulls(int i) => fb.LongAt(nodes + 16 * (node + i) + 8);
                (long Off, long Len) Buf(int i) => (fb.LongAt(buffers + 16 * (buffer + i)), fb.LongAt(buffers + 16 * (buffer + i) + 8));
                long ctx = _column.ContextSize, d = _column.DIn;
                if (NodeLength(0) != length || NodeLength(1) != length * ctx || NodeLength(2) != length * ctx * d)
                    throw new SaeSharpException($"{Path}: column '{_column.Name}' holds {NodeLength(0)} windows of {NodeLength(1)} rows and {NodeLength(2)} values in a batch of {length}; " +
                                                $"dataset_info.json declares shape [{ctx}, {d}] (context_size, d_in)");
                if (NodeNulls(0) != 0 || NodeNulls(1) != 0 || NodeNulls(2) != 0)
                    throw new SaeSharpException($"{Path}: column '{_column.Name}' has null values; activations must all be present");
                long Checked(int i, long need)
                {
                    var (off, blen) = Buf(i);
                    if (off < 0 || blen < need || off + blen > body) throw Corrupt($"column '{_column.Name}': buffer {buffer + i} (offset {off}, {blen} bytes) is too short for {need} bytes or lies outside the message body");
                    return bodyStart + off;
                }
                long valueBytes = length * ctx * d * _column.ItemSize;
                long tokenValues = -1;
                if (_tokens is { } tok)
                {
                    if (tok.Node + 2 > nodeCount || tok.Buffer + 3 > bufferCount) throw Corrupt($"a record batch has {nodeCount} field nodes and {bufferCount} buffers, too few for the schema");
                    long TokNode(int i) => fb.LongAt(nodes + 16 * (tok.Node + i));
                    if (TokNode(0) != length || TokNode(1) != length * ctx || fb.LongAt(nodes + 16 * tok.Node + 8) != 0 || fb.LongAt(nodes + 16 * (tok.Node + 1) + 8) != 0)
                        throw new SaeSharpException($"{Path}: column '{SaeLensActivationCache.TokenIdsColumn}' holds {TokNode(1)} ids (or nulls) in a batch of {length} windows of {ctx} rows; the file is corrupt");
                    long off = fb.LongAt(buffers + 16 * (tok.Buffer + 2)), blen = fb.LongAt(buffers + 16 * (tok.Buffer + 2) + 8);
                    if (off < 0 || blen < length * ctx * tok.ItemSize || off + blen > body)
                        throw Corrupt($"column '{SaeLensActivationCache.TokenIdsColumn}': its values buffer (offset {off}, {blen} bytes) is too short or lies outside the message body");
                    tokenValues = bodyStart + off;
                }
                batches.Add(new Batch(rows * ctx, length * ctx,
                    Checked(1, length == 0 ? 0 : (length + 1) * 4), Checked(3, length == 0 ? 0 : (length * ctx + 1) * 4), Checked(5, valueBytes), valueBytes, tokenValues));
                rows += length;
            }
            pos = bodyStart + body;
            if (pos > len) throw Corrupt("a message body runs past the end of the file");
        }
        return batches.Where(b => b.Rows > 0).ToArray();
    }

    private int[] ReadInts(long position, long count)
    {
        var values = new int[count];
        _stream.Position = position;
        _stream.ReadExactly(System.Runtime.InteropServices.MemoryMarshal.AsBytes(values.AsSpan()));
        return values;
    }

    protected override Tensor ReadInputRaw(long start, long count)
    {
        if (start < 0 || count < 0 || start + count > Rows)
            throw new SaeSharpException($"{Path}: rows [{start}, {start + count}) out of range 0..{Rows}");
        var result = torch.empty([count, _column.DIn], _dtype);
        try
        {
            long done = 0, ctx = _column.ContextSize, d = _column.DIn;
            int b = System.Array.FindLastIndex(_batches, x => x.FirstRow <= start);
            while (done < count)
            {
                var batch = _batches[b++];
                long r0 = start + done - batch.FirstRow, n = Math.Min(count - done, batch.Rows - r0);
                long e0 = r0 / ctx, e1 = (r0 + n - 1) / ctx + 1;
                int first = ReadInts(batch.OuterOffsets, 1)[0];
                var outer = ReadInts(batch.OuterOffsets + e0 * 4, e1 - e0 + 1);
                for (long k = 0; k < outer.Length; k++)
                    if (outer[k] != first + (e0 + k) * ctx)
                        throw new SaeSharpException($"{Path}: column '{_column.Name}': window {batch.FirstRow / ctx + e0 + k} does not hold {ctx} rows (list offsets); the file is corrupt or not [context_size, d_in] = [{ctx}, {d}]");
                var inner = ReadInts(batch.InnerOffsets + (first + r0) * 4, n + 1);
                for (long k = 0; k < n; k++)
                    if (inner[k + 1] - inner[k] != d)
                        throw new SaeSharpException($"{Path}: column '{_column.Name}': row {batch.FirstRow + r0 + k} holds {inner[k + 1] - inner[k]} values, not d_in = {d}; the file is corrupt");
                long from = (long)inner[0] * _column.ItemSize, bytes = n * d * _column.ItemSize;
                if (inner[0] < 0 || from + bytes > batch.ValueBytes)
                    throw new SaeSharpException($"{Path}: column '{_column.Name}': list offsets point past the values; the file is corrupt");
                // Rows of a contiguous tensor: the values are read straight into place.
                using (var piece = result.narrow(0, done, n))
                {
                    _stream.Position = batch.Values + from;
                    NativeBytes.Fill(piece, span => _stream.ReadExactly(span));
                }
                done += n;
            }
            return result;
        }
        catch
        {
            result.Dispose();
            throw;
        }
    }

    protected override Tensor ReadTargetRaw(long start, long count) => throw new InvalidOperationException($"{Path} has no target column");

    public override void Dispose() => _stream.Dispose();

    /// <summary>Bounds-checked reads of an IPC message's flatbuffer.</summary>
    private readonly struct FlatBuffer(byte[] data, Func<Exception> bad)
    {
        private int Int(long at) => at >= 0 && at + 4 <= data.Length ? BitConverter.ToInt32(data, (int)at) : throw bad();
        public long LongAt(long at) => at >= 0 && at + 8 <= data.Length ? BitConverter.ToInt64(data, (int)at) : throw bad();
        public int Root() => Int(0);

        /// <summary>The position of field <paramref name="id"/> of the table at <paramref name="table"/>, 0 when absent.</summary>
        private int Field(int table, int id)
        {
            long vtable = table - (long)Int(table);
            if (vtable < 0 || vtable + 4 > data.Length) throw bad();
            int size = BitConverter.ToUInt16(data, (int)vtable);
            int entry = 4 + 2 * id;
            if (entry + 2 > size) return 0;
            if (vtable + entry + 2 > data.Length) throw bad();
            int off = BitConverter.ToUInt16(data, (int)vtable + entry);
            return off == 0 ? 0 : table + off;
        }

        public long Long(int table, int id) => Field(table, id) is var f and not 0 ? LongAt(f) : 0;
        public byte Byte(int table, int id) => Field(table, id) is var f and not 0 ? (f < data.Length ? data[f] : throw bad()) : (byte)0;

        /// <summary>The table a field refers to, 0 when absent.</summary>
        public int Table(int table, int id)
        {
            int f = Field(table, id);
            if (f == 0) return 0;
            long t = f + (long)Int(f);
            return t > 0 && t < data.Length ? (int)t : throw bad();
        }

        /// <summary>The first element's position and the length of a vector of <paramref name="size"/>-byte structs.</summary>
        public (int Start, int Count) Vector(int table, int id, int size)
        {
            int f = Field(table, id);
            if (f == 0) return (0, 0);
            long v = f + (long)Int(f);
            int n = Int(v);
            if (n < 0 || v + 4 + (long)n * size > data.Length) throw bad();
            return ((int)v + 4, n);
        }
    }
}
