using System.Buffers.Binary;
using System.Text;
using static TorchSharp.torch;

namespace SaeSharp.IO;

/// <summary>
/// Writes a state dict as <c>torch.save(state_dict, path)</c> does (PyTorch's zip serialization), so that
/// <c>torch.load(path, weights_only=True)</c> and <see cref="TorchPickle"/> read it. Layout, as written by PyTorch 2.x
/// (<c>torch/serialization.py</c> <c>_save</c>, <c>caffe2/serialize/inline_container.cc</c>):
/// <c>&lt;stem&gt;/data.pkl</c> (pickle protocol 2: a <c>collections.OrderedDict</c> of
/// <c>torch._utils._rebuild_tensor_v2</c> calls whose storages are persistent ids
/// <c>('storage', torch.FloatStorage, '0', 'cpu', numel)</c>), <c>&lt;stem&gt;/byteorder</c> (<c>little</c>),
/// <c>&lt;stem&gt;/data/0</c>, <c>data/1</c>, ... (raw little-endian storages, in torch's string order of the keys) and
/// <c>&lt;stem&gt;/version</c> (<c>3</c>). Entries are stored uncompressed with a data descriptor, each one's data
/// aligned to 64 bytes by a <c>FB</c> padding extra field, and the archive ends with zip64 end records, as miniz writes
/// them for torch. Not written: torch ≥ 2.2's <c>.data/serialization_id</c> (a random identifier no loader needs).
/// </summary>
public static class TorchSave
{
    /// <summary>Writes <paramref name="stateDict"/> (name → tensor, in order) to <paramref name="path"/>, replacing it
    /// atomically. Tensors may be float32, float64, bfloat16, float16, int64, int32, int16, int8, uint8 or bool, of any
    /// shape including 0-d; they are copied to contiguous CPU memory. <paramref name="modulePrefixes"/>, when given, become
    /// the state dict's <c>_metadata</c> (module prefix → <c>{'version': 1}</c>), as <c>nn.Module.state_dict()</c>
    /// attaches it: <c>""</c> for the root module, then <c>"encoder"</c>, ... for submodules. The zip folder name is
    /// the file's stem (<c>ae</c> for <c>ae.pt</c>), as torch names it.</summary>
    public static void SaveStateDict(string path, IReadOnlyList<KeyValuePair<string, Tensor>> stateDict,
        IReadOnlyList<string>? modulePrefixes = null, AtomicFileGroup? group = null)
    {
        ArgumentNullException.ThrowIfNull(path);
        ArgumentNullException.ThrowIfNull(stateDict);
        string archive = ArchiveName(path);
        void Write(Stream s) => TorchSave.Write(s, archive, stateDict, modulePrefixes);
        if (group is null) AtomicFile.Write(path, Write);
        else group.Write(path, Write);
    }

    /// <summary>The folder name torch gives the archive written to <paramref name="path"/>: the file name without its
    /// last extension (<c>ae.pt</c> → <c>ae</c>); <c>archive</c> when that is empty or not ASCII (torch then writes
    /// through a Python stream, which it names <c>archive</c>).</summary>
    public static string ArchiveName(string path)
    {
        string stem = Path.GetFileNameWithoutExtension(path);
        return stem.Length == 0 || stem.Any(c => c > 127) ? "archive" : stem;
    }

    /// <summary>Writes the archive to <paramref name="stream"/> (need not be seekable). <paramref name="byteOrderRecord"/>
    /// false leaves out the <c>byteorder</c> entry, as PyTorch before 2.1 did; <paramref name="zip64Threshold"/> is the
    /// size or offset from which zip64 fields are used (4 GiB − 1; lowered only by tests); <paramref name="plainDict"/>
    /// pickles a plain <c>dict</c> instead of an <c>OrderedDict</c> (what <c>torch.save({...})</c> writes).</summary>
    internal static void Write(Stream stream, string archiveName, IReadOnlyList<KeyValuePair<string, Tensor>> stateDict,
        IReadOnlyList<string>? modulePrefixes, bool byteOrderRecord = true, long zip64Threshold = uint.MaxValue, bool plainDict = false)
    {
        if (!BitConverter.IsLittleEndian)
            throw new SaeSharpException("writing torch.save files is supported on little-endian machines only.");
        using var scope = NewDisposeScope();
        var storages = new List<Tensor>();
        foreach (var (name, t) in stateDict)
        {
            if (t.IsInvalid) throw new SaeSharpException($"state dict entry '{name}' is a disposed tensor.");
            StorageTypeName(t.dtype, name);
            storages.Add(t.detach().cpu().contiguous());
        }
        byte[] pickle = PickleStateDict(stateDict.Select(kv => (kv.Key, kv.Value)).ToList(), modulePrefixes, plainDict);
        var zip = new TorchZipWriter(stream, archiveName, zip64Threshold);
        zip.WriteRecord("data.pkl", pickle);
        if (byteOrderRecord) zip.WriteRecord("byteorder", "little"u8.ToArray());
        // torch.save writes storages sorted by key as strings: 0, 1, 10, 11, ..., 2, ...
        foreach (int i in Enumerable.Range(0, storages.Count).OrderBy(i => i.ToString(System.Globalization.CultureInfo.InvariantCulture), StringComparer.Ordinal))
            zip.WriteRecord("data/" + i.ToString(System.Globalization.CultureInfo.InvariantCulture), storages[i]);
        zip.WriteRecord("version", "3\n"u8.ToArray());
        zip.Finish();
    }

    /// <summary>The <c>data.pkl</c> bytes Python's pickler (protocol 2) writes for the state dict, with storage keys
    /// <c>"0"</c>, <c>"1"</c>, ... in order.</summary>
    internal static byte[] PickleStateDict(IReadOnlyList<(string Name, Tensor Tensor)> stateDict, IReadOnlyList<string>? modulePrefixes, bool plainDict = false)
    {
        if (plainDict && modulePrefixes is not null) throw new ArgumentException("a plain dict carries no _metadata", nameof(modulePrefixes));
        var p = new Pickler();
        p.Proto();
        if (plainDict)
        {
            p.EmptyDict();
        }
        else
        {
            p.Global("collections", "OrderedDict");
            p.EmptyTupleReduce();
        }
        p.SetItems(stateDict.Count, i =>
        {
            var (name, t) = stateDict[i];
            p.Str(name);
            p.Tensor(t, i);
        });
        if (modulePrefixes is not null)
        {
            p.EmptyDict();
            p.Str("_metadata");
            p.Global("collections", "OrderedDict");
            p.EmptyTupleReduce();
            p.SetItems(modulePrefixes.Count, i =>
            {
                p.Str(modulePrefixes[i]);
                p.EmptyDict();
                p.Str("version");
                p.Int(1);
                p.Op('s'); // SETITEM
            });
            p.Op('s'); // SETITEM
            p.Op('b'); // BUILD
        }
        p.Op('.'); // STOP
        return p.ToArray();
    }

    /// <summary>torch's storage class for a dtype (<c>FloatStorage</c>, ...); refuses the others naming the entry.</summary>
    internal static string StorageTypeName(ScalarType dtype, string entry) => dtype switch
    {
        ScalarType.Float32 => "FloatStorage",
        ScalarType.Float64 => "DoubleStorage",
        ScalarType.Float16 => "HalfStorage",
        ScalarType.BFloat16 => "BFloat16Storage",
        ScalarType.Int64 => "LongStorage",
        ScalarType.Int32 => "IntStorage",
        ScalarType.Int16 => "ShortStorage",
        ScalarType.Int8 => "CharStorage",
        ScalarType.Byte => "ByteStorage",
        ScalarType.Bool => "BoolStorage",
        _ => throw new SaeSharpException($"state dict entry '{entry}' has dtype {dtype}, which torch.save files of SaeSharp do not support."),
    };

    /// <summary>Python's <c>pickle.Pickler</c> (protocol 2) for the few objects a state dict holds, memo included: every
    /// string, global, non-empty tuple, dict and reduced object gets a memo slot; a repeated string or global is fetched
    /// from the memo (strings by value: torch's repeated <c>'storage'</c>, <c>'cpu'</c> and <c>'version'</c> are one
    /// Python object each).</summary>
    [System.Diagnostics.CodeAnalysis.SuppressMessage("Reliability", "CA1001", Justification = "a MemoryStream holds no unmanaged resource")]
    private sealed class Pickler
    {
        readonly MemoryStream _out = new();
        readonly Dictionary<string, int> _memo = new(StringComparer.Ordinal);
        int _next;

        public byte[] ToArray() => _out.ToArray();
        public void Op(char c) => _out.WriteByte((byte)c);
        public void Proto() { _out.WriteByte(0x80); _out.WriteByte(2); }

        void Memoize(string? key)
        {
            int id = _next++;
            if (key is not null) _memo[key] = id;
            if (id < 256) { Op('q'); _out.WriteByte((byte)id); }
            else { Op('r'); WriteInt32(id); }
        }

        bool FromMemo(string key)
        {
            if (!_memo.TryGetValue(key, out int id)) return false;
            if (id < 256) { Op('h'); _out.WriteByte((byte)id); }
            else { Op('j'); WriteInt32(id); }
            return true;
        }

        void WriteInt32(int v)
        {
            Span<byte> b = stackalloc byte[4];
            BinaryPrimitives.WriteInt32LittleEndian(b, v);
            _out.Write(b);
        }

        public void Global(string module, string name)
        {
            string key = "g:" + module + "." + name;
            if (FromMemo(key)) return;
            Op('c');
            _out.Write(Encoding.ASCII.GetBytes(module + "\n" + name + "\n"));
            Memoize(key);
        }

        public void Str(string s)
        {
            string key = "s:" + s;
            if (FromMemo(key)) return;
            var bytes = Encoding.UTF8.GetBytes(s);
            Op('X');
            WriteInt32(bytes.Length);
            _out.Write(bytes);
            Memoize(key);
        }

        public void Int(long v)
        {
            if (v is >= 0 and <= 0xff) { Op('K'); _out.WriteByte((byte)v); }
            else if (v is >= 0 and <= 0xffff) { Op('M'); _out.WriteByte((byte)v); _out.WriteByte((byte)(v >> 8)); }
            else if (v is >= int.MinValue and <= int.MaxValue) { Op('J'); WriteInt32((int)v); }
            else
            {
                // LONG1: the shortest two's-complement little-endian encoding
                var bytes = new System.Numerics.BigInteger(v).ToByteArray();
                _out.WriteByte(0x8a);
                _out.WriteByte((byte)bytes.Length);
                _out.Write(bytes);
            }
        }

        public void EmptyDict() { Op('}'); Memoize(null); }

        /// <summary>EMPTY_TUPLE, REDUCE and the memo slot of the result: a call with no arguments.</summary>
        public void EmptyTupleReduce() { Op(')'); Op('R'); Memoize(null); }

        /// <summary>Python's <c>_batch_setitems</c>: MARK … SETITEMS per 1000 items, a lone item with SETITEM.</summary>
        public void SetItems(int count, Action<int> item)
        {
            for (int start = 0; start < count; start += 1000)
            {
                int n = Math.Min(1000, count - start);
                if (n > 1) Op('(');
                for (int i = start; i < start + n; i++) item(i);
                Op(n > 1 ? 'u' : 's');
            }
        }

        /// <summary>A tuple of ints as <c>save_tuple</c> writes it.</summary>
        void IntTuple(long[] values)
        {
            if (values.Length == 0) { Op(')'); return; }
            if (values.Length > 3) Op('(');
            foreach (long v in values) Int(v);
            Op(values.Length switch { 1 => '\x85', 2 => '\x86', 3 => '\x87', _ => 't' });
            Memoize(null);
        }

        /// <summary><c>torch._utils._rebuild_tensor_v2(storage, 0, size, stride, False, OrderedDict())</c> over the
        /// contiguous storage <c>key</c>.</summary>
        public void Tensor(Tensor t, int key)
        {
            Global("torch._utils", "_rebuild_tensor_v2");
            Op('(');
            // persistent id ('storage', torch.<Type>Storage, key, 'cpu', numel), then BINPERSID
            Op('(');
            Str("storage");
            Global("torch", StorageTypeName(t.dtype, key.ToString(System.Globalization.CultureInfo.InvariantCulture)));
            Str(key.ToString(System.Globalization.CultureInfo.InvariantCulture));
            Str("cpu");
            Int(t.numel());
            Op('t');
            Memoize(null);
            Op('Q');
            Int(0);
            var size = t.shape;
            IntTuple(size);
            var stride = new long[size.Length];
            long s = 1;
            for (int d = size.Length - 1; d >= 0; d--)
            {
                stride[d] = s;
                s = checked(s * Math.Max(1, size[d]));
            }
            IntTuple(stride);
            _out.WriteByte(0x89); // NEWFALSE: requires_grad
            Global("collections", "OrderedDict");
            EmptyTupleReduce(); // backward_hooks
            Op('t');
            Memoize(null);
            Op('R');
            Memoize(null);
        }
    }
}
