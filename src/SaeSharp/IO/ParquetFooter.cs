namespace SaeSharp.IO;

/// <summary>
/// Checks the Thrift metadata of a Parquet file (the footer's <c>FileMetaData</c> and the page headers of a row group)
/// the way Parquet.Net 6.1.0 will read it, before Parquet.Net does. Parquet.Net's Thrift reader does not stop at the
/// end of its input (a byte read past the end is 0xFF, so a varint or a struct never ends), reads each known field id
/// with the type it expects whatever type the bytes declare, skips an unknown struct by reading only its field
/// headers, and sizes lists by the count the bytes declare; fuzzed files made it spin for minutes. The walk here
/// follows the same field ids with the same types (parquet.thrift, as generated into Parquet.Net's <c>Meta/Parquet.cs</c>)
/// and refuses, with one <see cref="SaeSharpException"/> naming the file: a known field or list element whose declared
/// type is not the expected one, any read past the end, a list declaring more elements than bytes left, varints longer
/// than an i32/i64 takes, nesting deeper than <see cref="MaxDepth"/>, and unknown fields Parquet.Net cannot skip.
/// Thrift compact protocol: https://github.com/apache/thrift/blob/master/doc/specs/thrift-compact-protocol.md
/// </summary>
internal sealed class ParquetFooter
{
    /// <summary>Deepest nesting of structs and lists accepted (Parquet's metadata nests about 7 deep).</summary>
    public const int MaxDepth = 64;

    /// <summary>A page may decompress to at most this many times its stored size (deflate's limit is 1,032), or
    /// <see cref="MinPageBudget"/>, whichever is larger: Parquet.Net allocates the declared uncompressed size.</summary>
    public const long MaxPageRatio = 1100;

    /// <summary>The uncompressed size any page may declare regardless of its stored size.</summary>
    public const long MinPageBudget = 64L << 20;

    readonly string _path;
    readonly long _footerStart;
    readonly Node _meta;

    ParquetFooter(string path, long footerStart, Node meta)
    {
        _path = path;
        _footerStart = footerStart;
        _meta = meta;
    }

    /// <summary>Checks the footer of the Parquet file open in <paramref name="stream"/> (seekable); restores the position.</summary>
    public static ParquetFooter Check(Stream stream, string path)
    {
        long start = stream.Position;
        try
        {
            long length = stream.Length;
            if (length < 12) throw Corrupt(path, "footer", $"{length} bytes is too short for a Parquet file");
            Span<byte> tail = stackalloc byte[8];
            stream.Seek(-8, SeekOrigin.End);
            stream.ReadExactly(tail);
            int footerLength = BitConverter.ToInt32(tail[..4]);
            if (footerLength <= 0 || footerLength > length - 12)
                throw Corrupt(path, "footer", $"the footer length {footerLength} does not fit a {length}-byte file");
            var footer = new byte[footerLength];
            long footerStart = length - 8 - footerLength;
            stream.Seek(footerStart, SeekOrigin.Begin);
            stream.ReadExactly(footer);
            var walker = new Walker(footer, 0, path, "footer");
            var meta = walker.Struct(Schema.FileMetaData, 0);
            return new ParquetFooter(path, footerStart, meta);
        }
        catch (EndOfWindow e)
        {
            throw new SaeSharpException(e.Message);
        }
        finally
        {
            stream.Position = start;
        }
    }

    /// <summary>Checks the page headers of every column chunk of row group <paramref name="group"/> as Parquet.Net will
    /// walk them (from the smallest non-zero page offset, page after page, until the chunk's value count is reached):
    /// each header within the data (before the footer), page sizes non-negative and within the data, uncompressed sizes
    /// bounded, and data pages declaring at least one value. Restores the stream position.</summary>
    public void CheckPages(Stream stream, int group)
    {
        if (_meta.Get(4) is not List<object?> groups || group < 0 || group >= groups.Count || groups[group] is not Node rg) return;
        if (rg.Get(1) is not List<object?> chunks) return;
        long start = stream.Position;
        try
        {
            for (int c = 0; c < chunks.Count; c++)
                if (chunks[c] is Node { } chunk && chunk.Get(3) is Node meta) CheckChunk(stream, group, c, meta);
        }
        finally
        {
            stream.Position = start;
        }
    }

    void CheckChunk(Stream stream, int group, int column, Node meta)
    {
        string where = $"row group {group} column {column}";
        int total = (int)meta.Long(5); // Parquet.Net: (int)NumValues
        if (total <= 0) return;
        long[] offsets = [meta.Long(11), meta.Long(9), meta.Long(10)];
        long offset = offsets.Where(o => o != 0).DefaultIfEmpty(0).Min();
        long values = 0;
        while (values < total)
        {
            if (offset < 4 || offset >= _footerStart)
                throw Corrupt(_path, where, $"a page at byte {offset} lies outside the data (4..{_footerStart})");
            var (header, end) = ReadPageHeader(stream, offset, where);
            long stored = header.Long(3), size = header.Long(2);
            if (stored < 0 || stored > _footerStart - end)
                throw Corrupt(_path, where, $"the page at byte {offset} declares {stored} stored bytes, past the data");
            if (size < 0 || size > Math.Max(MinPageBudget, stored * MaxPageRatio))
                throw Corrupt(_path, where, $"the page at byte {offset} declares {size} uncompressed bytes from {stored} stored");
            if (meta.Long(4) == SnappyCodec) CheckSnappyLength(stream, header, offset, end, stored, size, where);
            switch (header.Long(1))
            {
                case 2: break; // DICTIONARY_PAGE: no values
                case 0 or 3:   // DATA_PAGE (DataPageHeader.num_values) or DATA_PAGE_V2 (DataPageHeaderV2.num_values)
                    long n = (header.Get(header.Long(1) == 0 ? (short)5 : (short)8) as Node)?.Long(1) ?? 0;
                    if (n <= 0) throw Corrupt(_path, where, $"the data page at byte {offset} declares {n} values");
                    values += n;
                    break;
                default: return; // Parquet.Net refuses other page types itself
            }
            offset = end + stored;
        }
    }

    /// <summary>Parquet's codec id of Snappy (CompressionCodec.SNAPPY).</summary>
    const long SnappyCodec = 1;

    /// <summary>Snappy data starts with its own uncompressed length (a varint), which Snappier allocates as given,
    /// ignoring the page header's: it must not exceed the page's declared uncompressed size (already bounded). For a
    /// DATA_PAGE_V2 the compressed part follows the uncompressed level bytes, and may be stored uncompressed.</summary>
    void CheckSnappyLength(Stream stream, Node header, long offset, long end, long stored, long size, string where)
    {
        long at = end, limit = size;
        if (header.Long(1) == 3 && header.Get(8) is Node v2)
        {
            if (v2.Get(7) is long compressed && compressed == 0) return;
            long levels = v2.Long(5) + v2.Long(6);
            if (levels < 0 || levels > stored) throw Corrupt(_path, where, $"the page at byte {offset} declares {levels} level bytes of {stored} stored");
            at += levels;
            limit = size - levels;
        }
        if (at >= end + stored) return;
        var bytes = new byte[Math.Min(5, end + stored - at)];
        stream.Seek(at, SeekOrigin.Begin);
        stream.ReadExactly(bytes);
        ulong declared = 0;
        for (int i = 0; i < bytes.Length; i++)
        {
            declared |= (ulong)(bytes[i] & 0x7F) << (7 * i);
            if ((bytes[i] & 0x80) == 0) break;
        }
        if (declared > (ulong)Math.Max(0, limit))
            throw Corrupt(_path, where, $"the snappy data of the page at byte {offset} declares {declared} bytes, more than the page's {limit} uncompressed");
    }

    /// <summary>Reads the page header at <paramref name="offset"/> through a window that grows until the header fits
    /// (page headers carry statistics, so they are usually small but not bounded).</summary>
    (Node Header, long End) ReadPageHeader(Stream stream, long offset, string where)
    {
        long available = Math.Min(_footerStart - offset, MaxPageHeader);
        for (long window = Math.Min(available, 4096); ; window = Math.Min(available, window * 8))
        {
            var bytes = new byte[window];
            stream.Seek(offset, SeekOrigin.Begin);
            stream.ReadExactly(bytes);
            try
            {
                var walker = new Walker(bytes, offset, _path, where);
                var header = walker.Struct(Schema.PageHeader, 0);
                return (header, offset + walker.Position);
            }
            catch (EndOfWindow) when (window < available)
            {
            }
            catch (EndOfWindow)
            {
                throw Corrupt(_path, where, $"the page header at byte {offset} runs into the footer or past {MaxPageHeader >> 20} MiB");
            }
        }
    }

    /// <summary>The largest page header read (headers carry min/max statistics; real ones are far smaller).</summary>
    const long MaxPageHeader = 64L << 20;

    /// <summary>Opens a Parquet file for Parquet.Net behind <see cref="EndGuard"/>.</summary>
    public static Stream Open(string path) => new EndGuard(File.OpenRead(path), path);

    /// <summary>A read-only file stream whose single-byte read past the end is an error: Parquet.Net's Thrift reader
    /// casts the -1 that marks the end to the byte 0xFF and reads on (a varint or a struct that never ends), so any
    /// page header it reads past what <see cref="CheckPages"/> predicted still stops at the end of the file.</summary>
    sealed class EndGuard(FileStream inner, string path) : Stream
    {
        public override int ReadByte()
        {
            int b = inner.ReadByte();
            return b >= 0 ? b : throw new SaeSharpException($"{path}: not a readable Parquet file (the reader ran past the end of the file at byte {inner.Position}, corrupt metadata)");
        }

        public override int Read(byte[] buffer, int offset, int count) => inner.Read(buffer, offset, count);
        public override int Read(Span<byte> buffer) => inner.Read(buffer);
        public override Task<int> ReadAsync(byte[] buffer, int offset, int count, CancellationToken cancellationToken) =>
            inner.ReadAsync(buffer, offset, count, cancellationToken);
        public override ValueTask<int> ReadAsync(Memory<byte> buffer, CancellationToken cancellationToken = default) =>
            inner.ReadAsync(buffer, cancellationToken);
        public override long Seek(long offset, SeekOrigin origin) => inner.Seek(offset, origin);
        public override bool CanRead => true;
        public override bool CanSeek => true;
        public override bool CanWrite => false;
        public override long Length => inner.Length;
        public override long Position { get => inner.Position; set => inner.Position = value; }
        public override void Flush() { }
        public override void SetLength(long value) => throw new NotSupportedException();
        public override void Write(byte[] buffer, int offset, int count) => throw new NotSupportedException();

        protected override void Dispose(bool disposing)
        {
            if (disposing) inner.Dispose();
            base.Dispose(disposing);
        }
    }

    static SaeSharpException Corrupt(string path, string where, string why) =>
        new($"{path}: not a readable Parquet file (corrupt {where}: {why})");

    /// <summary>A read past the end of the bytes at hand; for a page header read through a window, a cue to widen it.</summary>
    sealed class EndOfWindow(string message) : SaeSharpException(message);

    /// <summary>A parsed struct: field id to value (long for integers and bools, <see cref="Node"/>, a list, or null
    /// for binary values, which are not kept).</summary>
    sealed class Node
    {
        readonly Dictionary<short, object?> _fields = [];
        public void Set(short id, object? value) => _fields[id] = value;
        public object? Get(short id) => _fields.GetValueOrDefault(id);
        public long Long(short id) => _fields.GetValueOrDefault(id) is long v ? v : 0;
    }

    /// <summary>Compact-protocol type codes.</summary>
    enum T : byte { Bool = 1, BoolFalse = 2, Byte = 3, I16 = 4, I32 = 5, I64 = 6, Double = 7, Binary = 8, List = 9, Set = 10, Map = 11, Struct = 12 }

    /// <summary>One field as Parquet.Net reads it: its type, and for a list the element type, for a struct (or a list of
    /// structs) its schema.</summary>
    readonly record struct Field(T Type, T Element, StructSchema? Struct);

    sealed class StructSchema(string name)
    {
        public string Name { get; } = name;
        public Dictionary<short, Field> Fields { get; } = [];
        public StructSchema F(short id, T type, StructSchema? s = null) { Fields[id] = new Field(type, default, s); return this; }
        public StructSchema L(short id, T element, StructSchema? s = null) { Fields[id] = new Field(T.List, element, s); return this; }
    }

    /// <summary>The structs Parquet.Net 6.1.0 reads from a footer and a page header, with the field ids and types it
    /// reads them with (parquet.thrift; enums are i32). Empty structs (StringType, …) have every field skipped.</summary>
    static class Schema
    {
        static StructSchema Empty(string name) => new(name);

        static readonly StructSchema KeyValue = new StructSchema("KeyValue").F(1, T.Binary).F(2, T.Binary);
        static readonly StructSchema Statistics = new StructSchema("Statistics")
            .F(1, T.Binary).F(2, T.Binary).F(3, T.I64).F(4, T.I64).F(5, T.Binary).F(6, T.Binary).F(7, T.Bool).F(8, T.Bool);
        static readonly StructSchema SizeStatistics = new StructSchema("SizeStatistics").F(1, T.I64).L(2, T.I64).L(3, T.I64);
        static readonly StructSchema BoundingBox = new StructSchema("BoundingBox")
            .F(1, T.Double).F(2, T.Double).F(3, T.Double).F(4, T.Double).F(5, T.Double).F(6, T.Double).F(7, T.Double).F(8, T.Double);
        static readonly StructSchema GeospatialStatistics = new StructSchema("GeospatialStatistics").F(1, T.Struct, BoundingBox).L(2, T.I32);
        static readonly StructSchema TimeUnit = new StructSchema("TimeUnit")
            .F(1, T.Struct, Empty("MilliSeconds")).F(2, T.Struct, Empty("MicroSeconds")).F(3, T.Struct, Empty("NanoSeconds"));
        static readonly StructSchema LogicalType = new StructSchema("LogicalType")
            .F(1, T.Struct, Empty("StringType")).F(2, T.Struct, Empty("MapType")).F(3, T.Struct, Empty("ListType"))
            .F(4, T.Struct, Empty("EnumType")).F(5, T.Struct, new StructSchema("DecimalType").F(1, T.I32).F(2, T.I32))
            .F(6, T.Struct, Empty("DateType")).F(7, T.Struct, new StructSchema("TimeType").F(1, T.Bool).F(2, T.Struct, TimeUnit))
            .F(8, T.Struct, new StructSchema("TimestampType").F(1, T.Bool).F(2, T.Struct, TimeUnit))
            .F(10, T.Struct, new StructSchema("IntType").F(1, T.Byte).F(2, T.Bool)).F(11, T.Struct, Empty("NullType"))
            .F(12, T.Struct, Empty("JsonType")).F(13, T.Struct, Empty("BsonType")).F(14, T.Struct, Empty("UUIDType"))
            .F(15, T.Struct, Empty("Float16Type")).F(16, T.Struct, new StructSchema("VariantType").F(1, T.Byte))
            .F(17, T.Struct, new StructSchema("GeometryType").F(1, T.Binary))
            .F(18, T.Struct, new StructSchema("GeographyType").F(1, T.Binary).F(2, T.I32));
        static readonly StructSchema SchemaElement = new StructSchema("SchemaElement")
            .F(1, T.I32).F(2, T.I32).F(3, T.I32).F(4, T.Binary).F(5, T.I32).F(6, T.I32).F(7, T.I32).F(8, T.I32).F(9, T.I32)
            .F(10, T.Struct, LogicalType);
        static readonly StructSchema PageEncodingStats = new StructSchema("PageEncodingStats").F(1, T.I32).F(2, T.I32).F(3, T.I32);
        static readonly StructSchema ColumnMetaData = new StructSchema("ColumnMetaData")
            .F(1, T.I32).L(2, T.I32).L(3, T.Binary).F(4, T.I32).F(5, T.I64).F(6, T.I64).F(7, T.I64).L(8, T.Struct, KeyValue)
            .F(9, T.I64).F(10, T.I64).F(11, T.I64).F(12, T.Struct, Statistics).L(13, T.Struct, PageEncodingStats)
            .F(14, T.I64).F(15, T.I32).F(16, T.Struct, SizeStatistics).F(17, T.Struct, GeospatialStatistics);
        static readonly StructSchema ColumnCryptoMetaData = new StructSchema("ColumnCryptoMetaData")
            .F(1, T.Struct, Empty("EncryptionWithFooterKey"))
            .F(2, T.Struct, new StructSchema("EncryptionWithColumnKey").L(1, T.Binary).F(2, T.Binary));
        static readonly StructSchema ColumnChunk = new StructSchema("ColumnChunk")
            .F(1, T.Binary).F(2, T.I64).F(3, T.Struct, ColumnMetaData).F(4, T.I64).F(5, T.I32).F(6, T.I64).F(7, T.I32)
            .F(8, T.Struct, ColumnCryptoMetaData).F(9, T.Binary);
        static readonly StructSchema SortingColumn = new StructSchema("SortingColumn").F(1, T.I32).F(2, T.Bool).F(3, T.Bool);
        static readonly StructSchema RowGroup = new StructSchema("RowGroup")
            .L(1, T.Struct, ColumnChunk).F(2, T.I64).F(3, T.I64).L(4, T.Struct, SortingColumn).F(5, T.I64).F(6, T.I64).F(7, T.I16);
        static readonly StructSchema ColumnOrder = new StructSchema("ColumnOrder").F(1, T.Struct, Empty("TypeDefinedOrder"));
        static StructSchema Aes(string name) => new StructSchema(name).F(1, T.Binary).F(2, T.Binary).F(3, T.Bool);
        static readonly StructSchema EncryptionAlgorithm = new StructSchema("EncryptionAlgorithm")
            .F(1, T.Struct, Aes("AesGcmV1")).F(2, T.Struct, Aes("AesGcmCtrV1"));

        public static readonly StructSchema FileMetaData = new StructSchema("FileMetaData")
            .F(1, T.I32).L(2, T.Struct, SchemaElement).F(3, T.I64).L(4, T.Struct, RowGroup).L(5, T.Struct, KeyValue)
            .F(6, T.Binary).L(7, T.Struct, ColumnOrder).F(8, T.Struct, EncryptionAlgorithm).F(9, T.Binary);

        public static readonly StructSchema PageHeader = new StructSchema("PageHeader")
            .F(1, T.I32).F(2, T.I32).F(3, T.I32).F(4, T.I32)
            .F(5, T.Struct, new StructSchema("DataPageHeader").F(1, T.I32).F(2, T.I32).F(3, T.I32).F(4, T.I32).F(5, T.Struct, Statistics))
            .F(6, T.Struct, Empty("IndexPageHeader"))
            .F(7, T.Struct, new StructSchema("DictionaryPageHeader").F(1, T.I32).F(2, T.I32).F(3, T.Bool))
            .F(8, T.Struct, new StructSchema("DataPageHeaderV2").F(1, T.I32).F(2, T.I32).F(3, T.I32).F(4, T.I32).F(5, T.I32)
                .F(6, T.I32).F(7, T.Bool).F(8, T.Struct, Statistics));
    }

    /// <summary>Reads <paramref name="bytes"/> (which start at file byte <paramref name="origin"/>) as Parquet.Net's
    /// generated reader does, with every bound checked.</summary>
    ref struct Walker(byte[] bytes, long origin, string path, string where)
    {
        int _pos;
        public readonly int Position => _pos;

        readonly long At => origin + _pos;

        SaeSharpException Fail(string why) => Corrupt(path, where, why);

        byte Byte()
        {
            if (_pos >= bytes.Length) throw new EndOfWindow(Corrupt(path, where, $"it ends inside a value (byte {At})").Message);
            return bytes[_pos++];
        }

        ulong Varint(int maxBytes)
        {
            ulong value = 0;
            for (int i = 0; i < maxBytes; i++)
            {
                byte b = Byte();
                value |= (ulong)(b & 0x7F) << (7 * i);
                if ((b & 0x80) == 0) return value;
            }
            throw Fail($"a varint at byte {At} is longer than {maxBytes} bytes");
        }

        long I32() { uint n = (uint)Varint(5); return (int)(n >> 1) ^ -(int)(n & 1); }
        long I64() { ulong n = Varint(10); return (long)(n >> 1) ^ -(long)(n & 1); }

        void Skip(long n)
        {
            if (n > bytes.Length - _pos)
                throw new EndOfWindow(Corrupt(path, where, $"a value of {n} bytes at byte {At} runs past the end").Message);
            _pos += (int)n;
        }

        void Binary()
        {
            long n = (int)(uint)Varint(5); // Parquet.Net: (int)ReadVarInt32()
            if (n < 0) throw Fail($"a binary value at byte {At} declares {n} bytes");
            Skip(n);
        }

        /// <summary>A list header: the element count (at most one element per byte left) and the element type.</summary>
        (int Count, int Element) ListHeader()
        {
            byte h = Byte();
            long n = (h >> 4) & 0x0F;
            if (n == 15) n = (int)(uint)Varint(5);
            if (n < 0 || n > bytes.Length - _pos) throw Fail($"a list at byte {At} declares {n} elements");
            return ((int)n, h & 0x0F);
        }

        /// <summary>A struct as Parquet.Net's generated <c>Read</c> reads it: known ids with their expected type (the
        /// declared type must agree), other ids skipped.</summary>
        public Node Struct(StructSchema schema, int depth)
        {
            if (depth > MaxDepth) throw Fail($"nesting deeper than {MaxDepth}");
            var node = new Node();
            short last = 0;
            while (true)
            {
                int fieldAt = _pos;
                byte header = Byte();
                if (header == 0) return node;
                int delta = header >> 4, type = header & 0x0F;
                short id = delta == 0 ? (short)I32() : (short)(last + delta);
                last = id;
                if (!schema.Fields.TryGetValue(id, out var field))
                {
                    SkipUnknown(type, depth + 1);
                    continue;
                }
                if (!Matches(type, field.Type))
                    throw Fail($"{schema.Name} field {id} at byte {origin + fieldAt} declares type {type}, expected {(int)field.Type}");
                node.Set(id, Value(field.Type, field, type, depth));
            }
        }

        static bool Matches(int declared, T expected) =>
            expected == T.Bool ? declared is 1 or 2 : declared == (int)expected;

        object? Value(T type, Field field, int declared, int depth)
        {
            switch (type)
            {
                case T.Bool: return declared == 1 ? 1L : 0L; // in a field header the type is the value
                case T.Byte: return (long)(sbyte)Byte();
                case T.I16 or T.I32: return I32();
                case T.I64: return I64();
                case T.Double: Skip(8); return null;
                case T.Binary: Binary(); return null;
                case T.Struct: return Struct(field.Struct!, depth + 1);
                case T.List:
                    {
                        if (depth + 1 > MaxDepth) throw Fail($"nesting deeper than {MaxDepth}");
                        var (count, element) = ListHeader();
                        if (!Matches(element, field.Element))
                            throw Fail($"a list at byte {At} declares elements of type {element}, expected {(int)field.Element}");
                        var list = new List<object?>(count);
                        for (int i = 0; i < count; i++)
                            list.Add(field.Element == T.Bool ? (Byte() == 1 ? 1L : 0L) : Value(field.Element, field, element, depth + 1));
                        return list;
                    }
                default: throw new InvalidOperationException($"no reader for type {type}");
            }
        }

        /// <summary>Skips a value of an unknown field as Parquet.Net's <c>SkipField</c> does: a struct by its field
        /// headers only (not their values), nothing for a bool. Types it cannot skip (set, map) are refused here.</summary>
        void SkipUnknown(int type, int depth)
        {
            if (depth > MaxDepth) throw Fail($"nesting deeper than {MaxDepth}");
            switch ((T)type)
            {
                case T.Bool or T.BoolFalse: break;
                case T.Byte: Skip(1); break;
                case T.I16 or T.I32: Varint(5); break;
                case T.I64: Varint(10); break;
                case T.Double: Skip(8); break;
                case T.Binary: Binary(); break;
                case T.Struct:
                    while (true)
                    {
                        byte header = Byte();
                        if (header == 0) break;
                        if ((header >> 4) == 0) Varint(5);
                    }
                    break;
                case T.List:
                    {
                        var (count, element) = ListHeader();
                        // Parquet.Net skips a bool element without reading a byte: a long list of them costs time, not bytes.
                        if (count > 0 && element is 1 or 2) throw Fail($"an unknown list of bools at byte {At}");
                        for (int i = 0; i < count; i++) SkipUnknown(element, depth + 1);
                        break;
                    }
                default: throw Fail($"a value of Thrift type {type} at byte {At} that the Parquet reader cannot skip");
            }
        }
    }
}
