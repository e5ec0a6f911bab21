using System.Security.Cryptography;
using System.Text.Json;
using System.Text.Json.Nodes;
using Apache.Arrow;
using Apache.Arrow.Ipc;
using Apache.Arrow.Types;
using Parquet;
using Parquet.Schema;
using Field = Apache.Arrow.Field;
using SaeSharp.IO;

namespace SaeSharp.Data;

/// <summary>
/// Hugging Face <c>datasets</c>' <c>Dataset.save_to_disk</c> folder, the layout SAELens's <c>PretokenizeRunner</c> writes
/// to <c>save_path</c>: <c>data-NNNNN-of-NNNNN.arrow</c> shards in the Arrow IPC streaming format (record batches of up
/// to 1,000 rows, the features in the schema's <c>huggingface</c> metadata), <c>dataset_info.json</c> (the
/// <c>DatasetInfo</c>, its features) and <c>state.json</c> (the shard files, split, fingerprint and format). A folder
/// <c>datasets.load_from_disk</c> reads. The ids are <c>list&lt;int32&gt;</c>, declared <c>Sequence(Value("int32"))</c>:
/// what <c>datasets</c> stores for SAELens's <c>input_ids</c> (its writer narrows an int64 <c>input_ids</c> column to
/// int32, <c>arrow_writer.py: OptimizedTypedSequence</c>).
/// </summary>
public static class HfDiskDataset
{
    /// <summary><c>datasets</c>' state file of a saved dataset.</summary>
    public const string StateFile = "state.json";
    /// <summary><c>datasets</c>' info file of a saved dataset.</summary>
    public const string InfoFile = "dataset_info.json";

    /// <summary>The most bytes of ids in one shard: <c>datasets</c>' <c>MAX_SHARD_SIZE</c> (500 MB).</summary>
    public const long MaxShardBytes = 500L * 1000 * 1000;

    /// <summary>Rows per Arrow record batch (<c>datasets</c>' <c>DEFAULT_MAX_BATCH_SIZE</c>).</summary>
    public const int RecordBatchRows = 1000;

    /// <summary>The column the token rows are written to.</summary>
    public const string Column = "input_ids";

    /// <summary>The features of a pretokenized dataset, serialised as <c>datasets</c> 3 writes them (<c>"_type": "Sequence"</c>):
    /// datasets 4 and 5 write <c>"List"</c> but read <c>"Sequence"</c> as a List, while datasets 3 (SAELens 6.37 allows
    /// <c>datasets&gt;=3.1</c>) cannot read <c>"List"</c>; this form loads in every version SAELens supports.</summary>
    internal static JsonObject Features() => new()
    {
        [Column] = new JsonObject { ["feature"] = new JsonObject { ["dtype"] = "int32", ["_type"] = "Value" }, ["_type"] = "Sequence" },
    };

    /// <summary>The schema's <c>huggingface</c> metadata, as <c>ArrowWriter._build_metadata</c> writes it (Python's
    /// <c>json.dumps</c>, its separators included).</summary>
    internal const string SchemaMetadata =
        """{"info": {"features": {"input_ids": {"feature": {"dtype": "int32", "_type": "Value"}, "_type": "Sequence"}}}}""";

    /// <summary>The shard count <c>save_to_disk</c> picks: one per 500 MB of data, at most one per row.</summary>
    public static int ShardCount(long rows, int contextSize)
    {
        long bytes = rows * ((long)contextSize * 4 + 4);
        return (int)Math.Min(rows, bytes / MaxShardBytes + 1);
    }

    /// <summary>The shard file names of a dataset of <paramref name="shards"/> shards.</summary>
    public static IReadOnlyList<string> ShardNames(int shards) =>
        Enumerable.Range(0, shards).Select(i => $"data-{i:D5}-of-{shards:D5}.arrow").ToList();

    /// <summary>
    /// Writes <paramref name="rows"/> (each one row of ids) into the folder <paramref name="dir"/> (created; the files are
    /// added to it) as <c>save_to_disk</c> lays them out, in the shard count it picks, with state.json's format
    /// <c>torch</c> on <c>input_ids</c> (SAELens's <c>set_format</c>) and split <paramref name="split"/>. The fingerprint is
    /// a hash of the rows. Returns the shard file names.
    /// </summary>
    public static IReadOnlyList<string> Write(string dir, IReadOnlyList<int[]> rows, int contextSize, string? split)
    {
        ArgumentNullException.ThrowIfNull(rows);
        if (rows.Count == 0) throw new SaeSharpException("no rows to write");
        Directory.CreateDirectory(dir);
        int shards = ShardCount(rows.Count, contextSize);
        var names = ShardNames(shards);
        using var hash = IncrementalHash.CreateHash(HashAlgorithmName.SHA256);
        long div = rows.Count / shards, mod = rows.Count % shards;
        for (int s = 0; s < shards; s++)
        {
            long start = div * s + Math.Min(s, mod), count = div + (s < mod ? 1 : 0);
            using var file = new FileStream(Path.Combine(dir, names[s]), FileMode.CreateNew, FileAccess.Write, FileShare.None, 1 << 20);
            WriteArrowStream(file, rows, (int)start, (int)count, hash);
            file.Flush(flushToDisk: true);
        }
        string fingerprint = Convert.ToHexStringLower(hash.GetHashAndReset())[..16];
        var state = new JsonObject
        {
            ["_data_files"] = new JsonArray(names.Select(n => (JsonNode)new JsonObject { ["filename"] = n }).ToArray()),
            ["_fingerprint"] = fingerprint,
            ["_format_columns"] = new JsonArray(Column),
            ["_format_kwargs"] = new JsonObject(),
            ["_format_type"] = "torch",
            ["_output_all_columns"] = false,
            ["_split"] = split,
        };
        File.WriteAllText(Path.Combine(dir, StateFile), state.ToJsonString(Indented));
        long bytes = rows.Sum(r => (long)r.Length * 4 + 4);
        var info = new JsonObject
        {
            ["citation"] = "",
            ["dataset_size"] = bytes,
            ["description"] = "",
            ["features"] = Features(),
            ["homepage"] = "",
            ["license"] = "",
            ["size_in_bytes"] = bytes,
        };
        File.WriteAllText(Path.Combine(dir, InfoFile), info.ToJsonString(Indented));
        return names;
    }

    private static readonly JsonSerializerOptions Indented = new() { WriteIndented = true };

    /// <summary>Writes rows <paramref name="start"/>.. of <paramref name="rows"/> as one Arrow IPC stream (schema with the
    /// <c>huggingface</c> features metadata, record batches of <see cref="RecordBatchRows"/>, end-of-stream marker).</summary>
    internal static void WriteArrowStream(Stream stream, IReadOnlyList<int[]> rows, int start, int count, IncrementalHash? hash = null)
    {
        var schema = new Schema.Builder()
            .Field(new Field(Column, new ListType(new Field("item", Int32Type.Default, true)), true))
            .Metadata("huggingface", SchemaMetadata)
            .Build();
        using var writer = new ArrowStreamWriter(stream, schema, leaveOpen: true);
        for (int b = 0; b < count; b += RecordBatchRows)
        {
            int n = Math.Min(RecordBatchRows, count - b);
            var builder = new ListArray.Builder(new Field("item", Int32Type.Default, true));
            var values = (Int32Array.Builder)builder.ValueBuilder;
            for (int r = start + b; r < start + b + n; r++)
            {
                builder.Append();
                values.AppendRange(rows[r]);
                hash?.AppendData(System.Runtime.InteropServices.MemoryMarshal.AsBytes(rows[r].AsSpan()));
            }
            using var batch = new RecordBatch(schema, [builder.Build()], n);
            writer.WriteRecordBatch(batch);
        }
        writer.WriteEnd();
    }

    /// <summary>Writes <paramref name="rows"/> as SAELens's hub upload lays them out (<c>push_to_hub</c>):
    /// <c>data/{split}-NNNNN-of-NNNNN.parquet</c> with an <c>input_ids</c> list&lt;int32&gt; column, in
    /// <paramref name="dir"/>. Returns the files written (paths from <paramref name="dir"/>).</summary>
    public static IReadOnlyList<string> WriteParquet(string dir, IReadOnlyList<int[]> rows, int contextSize, string? split)
    {
        ArgumentNullException.ThrowIfNull(rows);
        if (rows.Count == 0) throw new SaeSharpException("no rows to write");
        int shards = ShardCount(rows.Count, contextSize);
        long div = rows.Count / shards, mod = rows.Count % shards;
        var files = new List<string>();
        Directory.CreateDirectory(Path.Combine(dir, "data"));
        for (int s = 0; s < shards; s++)
        {
            string name = $"data/{split ?? "train"}-{s:D5}-of-{shards:D5}.parquet";
            long start = div * s + Math.Min(s, mod), count = div + (s < mod ? 1 : 0);
            using var file = new FileStream(Path.Combine(dir, name), FileMode.CreateNew, FileAccess.Write, FileShare.None, 1 << 20);
            WriteParquetRows(file, rows, (int)start, (int)count).GetAwaiter().GetResult();
            file.Flush(flushToDisk: true);
            files.Add(name);
        }
        return files;
    }

    private static async Task WriteParquetRows(Stream stream, IReadOnlyList<int[]> rows, int start, int count)
    {
        var item = new DataField<int>("element");
        var schema = new ParquetSchema(new ListField(Column, item));
        await using var writer = await ParquetWriter.CreateAsync(schema, stream).ConfigureAwait(false);
        const int GroupRows = 10_000;
        for (int g = 0; g < count; g += GroupRows)
        {
            int n = Math.Min(GroupRows, count - g);
            long total = 0;
            for (int r = start + g; r < start + g + n; r++) total += Math.Max(rows[r].Length, 1);
            var values = new int[total];
            var rep = new int[total];
            var def = new int[total];
            int k = 0, present = item.MaxDefinitionLevel;
            for (int r = start + g; r < start + g + n; r++)
            {
                var row = rows[r];
                if (row.Length == 0) throw new SaeSharpException("an empty row cannot be written");
                for (int j = 0; j < row.Length; j++, k++)
                {
                    values[k] = row[j];
                    rep[k] = j == 0 ? 0 : 1;
                    def[k] = present;
                }
            }
            using var group = writer.CreateRowGroup();
            await group.WriteAllPartsAsync(item, new ReadOnlyMemory<int>(values), new ReadOnlyMemory<int>(def), new ReadOnlyMemory<int>(rep), default).ConfigureAwait(false);
        }
    }

    /// <summary>True when <paramref name="dir"/> is a <c>save_to_disk</c> folder (has state.json).</summary>
    public static bool IsSavedDataset(string dir) => Directory.Exists(dir) && File.Exists(Path.Combine(dir, StateFile));

    /// <summary>The data files of a <c>save_to_disk</c> folder, in state.json's <c>_data_files</c> order; a file it lists that
    /// is missing, or a state.json that is not one, is an error naming it.</summary>
    public static IReadOnlyList<string> DataFiles(string dir)
    {
        string state = Path.Combine(dir, StateFile);
        JsonNode? root;
        try
        {
            root = JsonNode.Parse(File.ReadAllText(state));
        }
        catch (JsonException e)
        {
            throw new SaeSharpException($"{state}: invalid JSON ({e.Message})", e);
        }
        if (root is not JsonObject o || o["_data_files"] is not JsonArray files)
            throw new SaeSharpException($"{state}: no '_data_files' list (not a datasets save_to_disk state file; a DatasetDict folder holds one per split: name the split's folder)");
        var paths = new List<string>();
        foreach (var f in files)
        {
            string? name = (f as JsonObject)?["filename"]?.GetValueKind() == JsonValueKind.String ? f!["filename"]!.GetValue<string>() : null;
            if (name is null || name.Contains('/') || name.Contains('\\') || name.StartsWith('.'))
                throw new SaeSharpException($"{state}: a '_data_files' entry is not {{\"filename\": \"data-….arrow\"}} ({f?.ToJsonString()})");
            string path = Path.Combine(dir, name);
            if (!File.Exists(path)) throw new SaeSharpException($"{state} lists {name}, which is missing: the dataset is incomplete");
            paths.Add(path);
        }
        if (paths.Count == 0) throw new SaeSharpException($"{state}: '_data_files' is empty (a dataset with no rows)");
        return paths;
    }

    /// <summary>The top-level column names of an Arrow file; with <paramref name="withRows"/>, null when it holds no row.</summary>
    internal static List<string>? Columns(string path, bool withRows)
    {
        using var reader = Open(path, out var stream);
        using (stream)
        {
            var schema = Guard(path, () => reader.Schema);
            if (withRows)
            {
                bool any = false;
                while (!any && Guard(path, () => reader.ReadNextRecordBatch()) is { } batch)
                    using (batch)
                        any = batch.Length > 0;
                if (!any) return null;
            }
            return schema.FieldsList.Select(f => f.Name).ToList();
        }
    }

    /// <summary>Token rows from the integer-list column <paramref name="column"/> ("tokens" or "input_ids" when null) of an
    /// Arrow IPC file (stream or file format): list or large_list of int8–int64 / uint8–uint32. A null row or id, a
    /// truncated or corrupt file, is an error naming the file.</summary>
    public static IEnumerable<long[]> ReadTokenRows(string path, string? column = null)
    {
        var reader = Open(path, out var stream);
        try
        {
            var schema = Guard(path, () => reader.Schema);
            var names = schema.FieldsList.Select(f => f.Name).ToList();
            column ??= TextDataset.DatasetColumns.Where(c => c.Tokenized).Select(c => c.Name).FirstOrDefault(names.Contains)
                       ?? throw new SaeSharpException($"{path}: no 'tokens' or 'input_ids' column (columns: {string.Join(", ", names)})");
            int index = names.IndexOf(column);
            if (index < 0) throw new SaeSharpException($"{path}: no column '{column}' (columns: {string.Join(", ", names)})");
            long row = 0;
            while (Guard(path, () => reader.ReadNextRecordBatch()) is { } batch)
            {
                List<long[]> rows;
                using (batch) rows = Guard(path, () => ListRows(batch.Column(index), path, column, row));
                row += rows.Count;
                foreach (var r in rows) yield return r;
            }
        }
        finally
        {
            reader.Dispose();
            stream.Dispose();
        }
    }

    /// <summary>The strings of column <paramref name="column"/> of an Arrow IPC file (a saved text dataset).</summary>
    public static IEnumerable<string> ReadStrings(string path, string column = "text")
    {
        var reader = Open(path, out var stream);
        try
        {
            var names = Guard(path, () => reader.Schema).FieldsList.Select(f => f.Name).ToList();
            int index = names.IndexOf(column);
            if (index < 0) throw new SaeSharpException($"{path}: no column '{column}' (columns: {string.Join(", ", names)})");
            long row = 0;
            while (Guard(path, () => reader.ReadNextRecordBatch()) is { } batch)
            {
                var texts = new List<string>();
                using (batch)
                {
                    var a = batch.Column(index);
                    for (int i = 0; i < a.Length; i++, row++)
                    {
                        if (a.IsNull(i)) throw new SaeSharpException($"{path}: column '{column}' is null in row {row}");
                        texts.Add(a switch
                        {
                            StringArray s => s.GetString(i),
                            LargeStringArray s => s.GetString(i),
                            StringViewArray s => s.GetString(i),
                            _ => throw new SaeSharpException($"{path}: column '{column}' holds {a.Data.DataType.Name}, expected strings"),
                        });
                    }
                }
                foreach (var t in texts) yield return t;
            }
        }
        finally
        {
            reader.Dispose();
            stream.Dispose();
        }
    }

    private static List<long[]> ListRows(IArrowArray array, string path, string column, long firstRow)
    {
        IArrowArray values;
        Func<int, (long Start, long End)> span;
        switch (array)
        {
            case ListArray l:
                values = l.Values;
                span = i => (l.ValueOffsets[i], l.ValueOffsets[i + 1]);
                break;
            case LargeListArray l:
                values = l.Values;
                span = i => (l.ValueOffsets[i], l.ValueOffsets[i + 1]);
                break;
            case FixedSizeListArray f:
                values = f.Values;
                int size = ((FixedSizeListType)f.Data.DataType).ListSize;
                span = i => ((long)(i + f.Offset) * size, (long)(i + f.Offset + 1) * size);
                break;
            default:
                throw new SaeSharpException($"{path}: column '{column}' holds {array.Data.DataType.Name}, expected a list of integer token ids");
        }
        Func<int, long> get = values switch
        {
            Int64Array v => i => v.GetValue(i)!.Value,
            Int32Array v => i => v.GetValue(i)!.Value,
            Int16Array v => i => v.GetValue(i)!.Value,
            Int8Array v => i => v.GetValue(i)!.Value,
            UInt32Array v => i => v.GetValue(i)!.Value,
            UInt16Array v => i => v.GetValue(i)!.Value,
            UInt8Array v => i => v.GetValue(i)!.Value,
            _ => throw new SaeSharpException($"{path}: column '{column}' is a list of {values.Data.DataType.Name}, expected integer token ids"),
        };
        int width = ((FixedWidthType)values.Data.DataType).BitWidth / 8;
        if (values.Data.Buffers.Length < 2 || values.Data.Buffers[1].Length < ((long)values.Offset + values.Length) * width)
            throw new SaeSharpException($"{path}: column '{column}' declares {values.Length} ids, more than its buffer holds: the file is corrupt");
        var rows = new List<long[]>();
        for (int i = 0; i < array.Length; i++)
        {
            long row = firstRow + i;
            if (array.IsNull(i)) throw new SaeSharpException($"{path}: row {row}: column '{column}' is null (no token list)");
            var (start, end) = span(i);
            if (start < 0 || end < start || end > values.Length)
                throw new SaeSharpException($"{path}: row {row}: list offsets {start}..{end} outside the {values.Length} values; the file is corrupt");
            var ids = new long[end - start];
            for (long j = start; j < end; j++)
            {
                if (values.IsNull((int)j)) throw new SaeSharpException($"{path}: row {row}: token {j - start} of column '{column}' is null");
                long id = get((int)j);
                if (id < 0) throw new SaeSharpException($"{path}: row {row}: token {j - start} of column '{column}' is {id}, not a token id");
                ids[j - start] = id;
            }
            rows.Add(ids);
        }
        return rows;
    }

    private static SaeSharpException Truncated(string path) =>
        new($"{path}: the Arrow stream has no end-of-stream marker: the file is truncated (an interrupted write or copy)");

    /// <summary>
    /// Opens an Arrow IPC file for <see cref="ArrowStreamReader"/> after walking its messages (<see cref="CheckMessages"/>).
    /// A file in the IPC file format (<c>ARROW1</c>) is read as the stream it embeds after its 8-byte header, its footer
    /// not used.
    /// </summary>
    private static ArrowStreamReader Open(string path, out FileStream stream)
    {
        if (!File.Exists(path)) throw new SaeSharpException($"dataset file '{path}' does not exist");
        stream = File.OpenRead(path);
        try
        {
            Span<byte> magic = stackalloc byte[8];
            int n = stream.ReadAtLeast(magic, 8, throwOnEndOfStream: false);
            long start = n >= 6 && magic[..6].SequenceEqual("ARROW1"u8) ? 8 : 0;
            if (n < 8) throw new SaeSharpException($"{path}: {stream.Length} bytes, too short for an Arrow IPC stream (empty or truncated file)");
            CheckMessages(stream, start, path);
            stream.Position = start;
            return new ArrowStreamReader(stream, leaveOpen: true);
        }
        catch
        {
            stream.Dispose();
            throw;
        }
    }

    /// <summary>
    /// Walks the IPC stream's messages from <paramref name="start"/> to its end-of-stream marker before Apache.Arrow reads
    /// any: each message's metadata length and its flatbuffer's <c>bodyLength</c> must lie inside the file (Apache.Arrow
    /// allocates what they declare: a flipped byte would ask for gigabytes), and the marker must be there (a file cut at
    /// a batch boundary reads as whole otherwise).
    /// </summary>
    internal static void CheckMessages(Stream stream, long start, string path)
    {
        long len = stream.Length, pos = start;
        Span<byte> word = stackalloc byte[4];
        while (true)
        {
            if (pos + 4 > len) throw Truncated(path);
            stream.Position = pos;
            stream.ReadExactly(word);
            int metaLen = BitConverter.ToInt32(word);
            pos += 4;
            if (metaLen == -1) // continuation marker, then the length
            {
                if (pos + 4 > len) throw Truncated(path);
                stream.ReadExactly(word);
                metaLen = BitConverter.ToInt32(word);
                pos += 4;
            }
            if (metaLen == 0) return; // end of stream
            if (metaLen < 0 || metaLen > len - pos)
                throw new SaeSharpException($"{path}: the message at byte {pos - 4} declares {metaLen} bytes of metadata, past the file's end ({len} bytes): the file is corrupt or truncated");
            var meta = new byte[metaLen];
            stream.ReadExactly(meta);
            long body = BodyLength(meta, path, pos);
            pos += metaLen;
            if (body < 0 || body > len - pos)
                throw new SaeSharpException($"{path}: the message at byte {pos - metaLen} declares a body of {body} bytes, past the file's end ({len} bytes): the file is corrupt or truncated");
            pos += body;
        }
    }

    /// <summary>The <c>bodyLength</c> (field 3, int64) of an IPC <c>Message</c> flatbuffer, every offset bounds-checked.</summary>
    private static long BodyLength(ReadOnlySpan<byte> m, string path, long at)
    {
        SaeSharpException Bad() => new($"{path}: the message at byte {at} has malformed metadata: the file is corrupt");
        if (m.Length < 8) throw Bad();
        int table = BitConverter.ToInt32(m);
        if (table < 4 || table > m.Length - 4) throw Bad();
        long vtable = table - (long)BitConverter.ToInt32(m[table..]);
        if (vtable < 0 || vtable > m.Length - 4) throw Bad();
        int vtSize = BitConverter.ToUInt16(m[(int)vtable..]);
        if (vtSize < 4 || vtable + vtSize > m.Length) throw Bad();
        const int Entry = 4 + 2 * 3;
        if (Entry + 2 > vtSize) return 0;
        int off = BitConverter.ToUInt16(m[((int)vtable + Entry)..]);
        if (off == 0) return 0;
        if ((long)table + off + 8 > m.Length) throw Bad();
        return BitConverter.ToInt64(m[(table + off)..]);
    }

    /// <summary>Runs a read of Apache.Arrow, turning its errors on a corrupt or truncated file into one-line SaeSharp errors.</summary>
    private static T Guard<T>(string path, Func<T> read)
    {
        try
        {
            return read();
        }
        catch (Exception e) when (e is not SaeSharpException and not OutOfMemoryException)
        {
            throw new SaeSharpException($"{path}: not a readable Arrow IPC file, it is corrupt or truncated ({e.GetType().Name}: {e.Message})", e);
        }
    }

}
