using System.IO.Compression;
using System.Text;
using TorchSharp;
using static TorchSharp.torch;

namespace SaeSharp.IO;

/// <summary>Reads PyTorch checkpoints written by <c>torch.save</c> (the zip format of PyTorch ≥ 1.6),
/// such as dictionary_learning's <c>ae.pt</c> or OpenAI sparse_autoencoder state dicts, without
/// executing anything: the pickle is interpreted by a restricted unpickler that follows torch's
/// <c>weights_only=True</c> rules. Only plain data, <c>collections.OrderedDict</c>, tensors
/// (<c>torch._utils._rebuild_tensor_v2</c> and friends), storage types and dtypes are accepted; any
/// other global (<c>os.system</c>, <c>builtins.eval</c>, arbitrary classes) is refused with a
/// <see cref="SaeSharpException"/> before the rest of the file is read.</summary>
public static class TorchPickle
{
    /// <summary>Loads the whole checkpoint. Tensors are CPU tensors with the checkpoint's dtype,
    /// contiguous, little-endian; the caller owns them (dispose the returned checkpoint). The pickle, the storages
    /// and the copies of non-contiguous views together get at most <paramref name="maxBytes"/> bytes (default
    /// <see cref="DefaultByteBudget"/>): a hostile file cannot make SaeSharp allocate gigabytes from a small
    /// compressed entry or a stride-0 view.</summary>
    public static TorchPickleCheckpoint Load(string path, long? maxBytes = null)
    {
        using var scope = torch.NewDisposeScope();
        object? root = new TorchPickleLoader(path, maxBytes ?? DefaultByteBudget(path)).Load();
        var tensors = TorchPickleCheckpoint.CollectTensors(root, path);
        foreach (var t in tensors) t.MoveToOuterDisposeScope();
        return new TorchPickleCheckpoint(path, root, tensors);
    }

    /// <summary>The default allocation budget for a checkpoint file: four times its size plus 16 MiB. torch.save stores
    /// its entries uncompressed, so a real file's tensors fit in its own size, with room for a few views that need
    /// a contiguous copy (a tied W and W.T).</summary>
    public static long DefaultByteBudget(string path) =>
        File.Exists(path) ? 4 * new FileInfo(path).Length + (16L << 20) : 16L << 20;

    /// <summary>True for a <c>torch.save</c> zip whose pickle mentions every one of <paramref name="names"/> (a cheap
    /// probe of a state dict's keys: only the small pickle entry is read, nothing is unpickled); false for any other file.</summary>
    public static bool Mentions(string path, params string[] names)
    {
        ArgumentNullException.ThrowIfNull(names);
        if (!File.Exists(path)) return false;
        try
        {
            using var zip = ZipFile.OpenRead(path);
            var entry = zip.Entries.FirstOrDefault(e => e.FullName.EndsWith("data.pkl", StringComparison.Ordinal));
            if (entry is null || entry.Length > 1 << 24) return false;
            using var stream = entry.Open();
            using var ms = new MemoryStream();
            stream.CopyTo(ms);
            string text = Encoding.Latin1.GetString(ms.GetBuffer(), 0, (int)ms.Length);
            return names.All(n => text.Contains(n, StringComparison.Ordinal));
        }
        catch (Exception e) when (e is InvalidDataException or IOException or UnauthorizedAccessException)
        {
            return false;
        }
    }

    /// <summary>Loads a checkpoint whose top level is a dictionary (a <c>state_dict</c>) and returns its
    /// tensor entries in file order; non-tensor entries are dropped (use <see cref="Load"/> to read them).</summary>
    public static IReadOnlyDictionary<string, Tensor> LoadStateDict(string path)
    {
        var checkpoint = Load(path);
        var result = new OrderedDictionary<string, Tensor>();
        try
        {
            foreach (var (key, t) in checkpoint.Tensors) result[key] = t;
        }
        catch
        {
            checkpoint.Dispose();
            throw;
        }
        // The caller owns the returned tensors; dispose the others (nested tensors, if any).
        var kept = new HashSet<Tensor>(result.Values, ReferenceEqualityComparer.Instance);
        foreach (var t in checkpoint.AllTensors)
        {
            if (!kept.Contains(t)) t.Dispose();
        }
        return result;
    }
}

/// <summary>A storage reference produced by persistent_load: the bytes of <c>&lt;prefix&gt;/data/&lt;Key&gt;</c>.</summary>
internal sealed record TorchStorageRef(string Key, ScalarType DType, long Numel, string Location);

/// <summary>The zip container and the torch-specific allow-list around <see cref="TorchPickleUnpickler"/>.</summary>
[System.Diagnostics.CodeAnalysis.SuppressMessage("Reliability", "CA1001", Justification = "_zip lives only inside Load, which disposes it")]
internal sealed class TorchPickleLoader(string path, long maxBytes)
{
    static readonly Dictionary<string, ScalarType> StorageTypes = new()
    {
        ["FloatStorage"] = ScalarType.Float32,
        ["DoubleStorage"] = ScalarType.Float64,
        ["HalfStorage"] = ScalarType.Float16,
        ["BFloat16Storage"] = ScalarType.BFloat16,
        ["LongStorage"] = ScalarType.Int64,
        ["IntStorage"] = ScalarType.Int32,
        ["ShortStorage"] = ScalarType.Int16,
        ["CharStorage"] = ScalarType.Int8,
        ["ByteStorage"] = ScalarType.Byte,
        ["BoolStorage"] = ScalarType.Bool,
        ["UntypedStorage"] = ScalarType.Byte,
    };

    static readonly Dictionary<string, ScalarType> DTypes = new()
    {
        ["float32"] = ScalarType.Float32,
        ["float"] = ScalarType.Float32,
        ["float64"] = ScalarType.Float64,
        ["double"] = ScalarType.Float64,
        ["float16"] = ScalarType.Float16,
        ["half"] = ScalarType.Float16,
        ["bfloat16"] = ScalarType.BFloat16,
        ["int64"] = ScalarType.Int64,
        ["long"] = ScalarType.Int64,
        ["int32"] = ScalarType.Int32,
        ["int"] = ScalarType.Int32,
        ["int16"] = ScalarType.Int16,
        ["short"] = ScalarType.Int16,
        ["int8"] = ScalarType.Int8,
        ["uint8"] = ScalarType.Byte,
        ["bool"] = ScalarType.Bool,
    };

    readonly Dictionary<(string Key, ScalarType DType), Tensor> _storages = new();
    ZipArchive? _zip;
    string _prefix = "";
    long _allocated;

    /// <summary>Counts <paramref name="bytes"/> against the budget before they are allocated.</summary>
    void Allocate(long bytes, string what)
    {
        if (bytes < 0 || bytes > maxBytes - _allocated)
            throw new SaeSharpException(
                $"{path}: {what} needs {bytes} bytes, beyond the budget of {maxBytes} bytes for this {new FileInfo(path).Length}-byte file (a compressed or expanded entry far larger than the file; pass a larger budget if the file is genuine).");
        _allocated += bytes;
    }

    /// <summary>Opens the archive, unpickles <c>data.pkl</c> and returns the root object. Tensors are
    /// created in the caller's dispose scope.</summary>
    public object? Load()
    {
        if (!File.Exists(path)) throw new SaeSharpException($"{path}: checkpoint file not found.");
        using var stream = File.OpenRead(path);
        CheckMagic(stream);
        try
        {
            _zip = new ZipArchive(stream, ZipArchiveMode.Read);
        }
        catch (InvalidDataException e)
        {
            throw new SaeSharpException($"{path}: not a readable zip archive, the file is truncated or corrupt ({e.Message}).", e);
        }
        using (_zip)
        {
            var pickle = FindPickle(_zip);
            _prefix = pickle.FullName[..^"data.pkl".Length];
            CheckByteOrder(_zip);
            byte[] data = ReadAll(pickle);
            var unpickler = new TorchPickleUnpickler(data, $"{path} ({pickle.FullName})", ResolveGlobal, PersistentLoad);
            return unpickler.Load();
        }
    }

    void CheckMagic(Stream stream)
    {
        Span<byte> head = stackalloc byte[2];
        int n = stream.ReadAtLeast(head, 2, throwOnEndOfStream: false);
        stream.Position = 0;
        if (n == 2 && head[0] == (byte)'P' && head[1] == (byte)'K') return;
        if (n >= 1 && head[0] == 0x80)
            throw new SaeSharpException($"{path}: legacy (pre-1.6, non-zip) torch.save format is not supported; re-save it with a current PyTorch (torch.save(torch.load(f), f)).");
        throw new SaeSharpException($"{path}: not a PyTorch zip checkpoint (no zip signature at the start of the file).");
    }

    ZipArchiveEntry FindPickle(ZipArchive zip)
    {
        List<ZipArchiveEntry> candidates;
        try
        {
            candidates = zip.Entries
                .Where(e => e.FullName.EndsWith("/data.pkl", StringComparison.Ordinal) && e.FullName.IndexOf('/') == e.FullName.Length - "/data.pkl".Length)
                .ToList();
        }
        catch (InvalidDataException e)
        {
            throw new SaeSharpException($"{path}: corrupt zip directory ({e.Message}).", e);
        }
        return candidates.Count switch
        {
            1 => candidates[0],
            0 => throw new SaeSharpException($"{path}: zip archive has no '<name>/data.pkl' entry; it is not a torch.save checkpoint."),
            _ => throw new SaeSharpException($"{path}: zip archive has {candidates.Count} '<name>/data.pkl' entries, expected one."),
        };
    }

    void CheckByteOrder(ZipArchive zip)
    {
        var entry = zip.GetEntry(_prefix + "byteorder");
        if (entry is null) return; // written since PyTorch 2.1; older files are little-endian
        string order = Encoding.ASCII.GetString(ReadAll(entry)).Trim();
        if (order != "little")
            throw new SaeSharpException($"{path}: tensors are stored with byte order '{order}', only 'little' is supported.");
    }

    byte[] ReadAll(ZipArchiveEntry entry)
    {
        if (entry.Length > 1L << 30)
            throw new SaeSharpException($"{path}: entry '{entry.FullName}' is {entry.Length} bytes, too large for a pickle.");
        Allocate(entry.Length, $"entry '{entry.FullName}'");
        try
        {
            using var s = entry.Open();
            var buffer = new byte[entry.Length];
            s.ReadExactly(buffer);
            return buffer;
        }
        catch (Exception e) when (e is InvalidDataException or EndOfStreamException)
        {
            throw new SaeSharpException($"{path}: entry '{entry.FullName}' cannot be read, the archive is corrupt ({e.Message}).", e);
        }
    }

    object? ResolveGlobal(string module, string name)
    {
        string q = module + "." + name;
        switch (q)
        {
            case "collections.OrderedDict":
                return new PickleCallable(q, MakeOrderedDict);
            case "torch._utils._rebuild_tensor":
                return new PickleCallable(q, a => RebuildTensor(q, a, 4, dtype: null));
            case "torch._utils._rebuild_tensor_v2":
                return new PickleCallable(q, a => RebuildTensor(q, a, 6, dtype: null));
            case "torch._utils._rebuild_tensor_v3":
                return new PickleCallable(q, a => RebuildTensor(q, a, 7, dtype: DTypeArg(q, a, 6)));
            case "torch._utils._rebuild_parameter":
            case "torch._utils._rebuild_parameter_with_state":
                return new PickleCallable(q, a => a.Length >= 1 && a[0] is Tensor t ? t : throw Bad(q, "expected a tensor as the first argument"));
            case "torch._tensor._rebuild_from_type_v2":
                return new PickleCallable(q, a => a.Length >= 3 && a[0] is PickleCallable f && a[2] is object?[] args
                    ? f.Invoke(args) : throw Bad(q, "expected (function, type, args, state)"));
            case "torch.Tensor":
            case "torch.nn.parameter.Parameter":
                return new PickleMarker(q, null);
            case "torch.Size":
                return new PickleCallable(q, a => a.Length == 1 && a[0] is object?[] or List<object?> ? ToTuple(a[0]) : throw Bad(q, "expected one tuple"));
            case "torch.device":
                return new PickleCallable(q, a => string.Join(":", a.Select(x => Convert.ToString(x, System.Globalization.CultureInfo.InvariantCulture))));
            case "builtins.set":
            case "builtins.frozenset":
                return new PickleCallable(q, MakeSet);
            case "_codecs.encode":
                return new PickleCallable(q, Encode);
        }
        if (module == "torch" && StorageTypes.TryGetValue(name, out var storageDtype))
            return new PickleMarker(q, storageDtype);
        if (module == "torch" && DTypes.TryGetValue(name, out var dtype))
            return new PickleMarker(q, dtype);
        return null;
    }

    TorchStorageRef PersistentLoad(object? pid)
    {
        // ('storage', storage_type, key, location, numel)
        if (pid is not object?[] { Length: 5 } t || t[0] is not "storage")
            throw new SaeSharpException($"{path}: unsupported persistent id {Describe(pid)}, expected ('storage', type, key, location, numel).");
        if (t[1] is not PickleMarker { Payload: ScalarType dtype } marker || !StorageTypes.ContainsKey(marker.QualifiedName["torch.".Length..]))
            throw new SaeSharpException($"{path}: persistent id names storage type {Describe(t[1])}, expected a torch.*Storage type.");
        if (t[2] is not string key || t[3] is not string location || t[4] is not long numel || numel < 0)
            throw new SaeSharpException($"{path}: malformed storage persistent id {Describe(pid)}.");
        return new TorchStorageRef(key, dtype, numel, location);
    }

    Tensor RebuildTensor(string q, object?[] a, int minArgs, ScalarType? dtype)
    {
        if (a.Length < minArgs) throw Bad(q, $"expected at least {minArgs} arguments, got {a.Length}");
        if (a[0] is not TorchStorageRef storage) throw Bad(q, $"first argument is {Describe(a[0])}, expected a storage");
        if (a[1] is not long offset || offset < 0) throw Bad(q, $"storage offset {Describe(a[1])} is not a non-negative int");
        long[] size = LongTuple(q, "size", a[2]);
        long[] stride = LongTuple(q, "stride", a[3]);
        if (size.Length != stride.Length) throw Bad(q, $"size has {size.Length} dimensions but stride has {stride.Length}");
        var type = dtype ?? storage.DType;
        var flat = Storage(storage, type);
        long storageNumel = flat.shape[0];
        bool empty = false;
        long maxIndex = offset;
        for (int i = 0; i < size.Length; i++)
        {
            if (size[i] < 0 || stride[i] < 0) throw Bad(q, $"negative size or stride ({string.Join(",", size)} / {string.Join(",", stride)})");
            if (size[i] == 0) empty = true;
            else maxIndex = checked(maxIndex + (size[i] - 1) * stride[i]);
        }
        if (empty) return torch.empty(size, dtype: type);
        if (maxIndex >= storageNumel)
            throw Bad(q, $"view (offset {offset}, size [{string.Join(",", size)}], stride [{string.Join(",", stride)}]) reaches element {maxIndex} of storage '{storage.Key}', which has only {storageNumel}");
        var view = flat.as_strided(size, stride, offset);
        if (view.is_contiguous()) return view;
        // A copy: with stride 0 (an expanded view) it can be far larger than the storage it reads.
        long numel = 1;
        foreach (long d in size) numel = checked(numel * d);
        Allocate(checked(numel * ElementSize(type)), $"the contiguous copy of a [{string.Join(",", size)}] view of storage '{storage.Key}'");
        return view.contiguous();
    }

    /// <summary>The typed 1-D tensor over storage <paramref name="s"/>, read once per (key, dtype).</summary>
    Tensor Storage(TorchStorageRef s, ScalarType dtype)
    {
        if (_storages.TryGetValue((s.Key, dtype), out var cached)) return cached;
        string name = _prefix + "data/" + s.Key;
        var entry = _zip!.GetEntry(name)
            ?? throw new SaeSharpException($"{path}: storage '{name}' referenced by data.pkl is missing from the archive.");
        long expectedBytes = checked(s.Numel * ElementSize(s.DType));
        if (entry.Length != expectedBytes)
            throw new SaeSharpException($"{path}: storage '{name}' holds {entry.Length} bytes, expected {expectedBytes} ({s.Numel} × {s.DType}).");
        long elem = ElementSize(dtype);
        if (expectedBytes % elem != 0)
            throw new SaeSharpException($"{path}: storage '{name}' of {expectedBytes} bytes cannot be viewed as {dtype}.");
        // The declared size is the attacker's too (a deflate bomb declares gigabytes in a few kilobytes).
        Allocate(expectedBytes, $"storage '{name}'");
        var flat = torch.empty(expectedBytes / elem, dtype: dtype);
        try
        {
            using var stream = entry.Open();
            NativeBytes.Fill(flat, span => stream.ReadExactly(span));
        }
        catch (Exception e) when (e is InvalidDataException or EndOfStreamException)
        {
            throw new SaeSharpException($"{path}: storage '{name}' cannot be read, the archive is corrupt ({e.Message}).", e);
        }
        _storages[(s.Key, dtype)] = flat;
        return flat;
    }

    static long ElementSize(ScalarType dtype)
    {
        using var probe = torch.empty(0, dtype: dtype);
        return probe.element_size();
    }

    OrderedDictionary<object, object?> MakeOrderedDict(object?[] a)
    {
        var dict = new OrderedDictionary<object, object?>(PickleKeyComparer.Instance);
        if (a.Length == 0) return dict;
        if (a.Length != 1 || a[0] is not List<object?> and not object?[])
            throw Bad("collections.OrderedDict", "expected no arguments or one list of pairs");
        foreach (var item in (IEnumerable<object?>)a[0]!)
        {
            var pair = ToTuple(item);
            if (pair.Length != 2 || pair[0] is null) throw Bad("collections.OrderedDict", "expected (key, value) pairs");
            dict[pair[0]!] = pair[1];
        }
        return dict;
    }

    HashSet<object> MakeSet(object?[] a)
    {
        var set = new HashSet<object>(PickleKeyComparer.Instance);
        if (a.Length == 0) return set;
        if (a.Length != 1 || a[0] is not IEnumerable<object?> items) throw Bad("builtins.set", "expected one list");
        foreach (var item in items) set.Add(item ?? throw Bad("builtins.set", "None as a set member is not supported"));
        return set;
    }

    byte[] Encode(object?[] a)
    {
        // protocol-2 pickles store bytes as _codecs.encode(text, 'latin1')
        if (a.Length != 2 || a[0] is not string text || a[1] is not string encoding)
            throw Bad("_codecs.encode", "expected (str, encoding)");
        return encoding.ToLowerInvariant() switch
        {
            "latin1" or "latin-1" or "iso-8859-1" => Encoding.Latin1.GetBytes(text),
            "utf8" or "utf-8" => Encoding.UTF8.GetBytes(text),
            "ascii" => Encoding.ASCII.GetBytes(text),
            _ => throw Bad("_codecs.encode", $"unsupported encoding '{encoding}'"),
        };
    }

    ScalarType DTypeArg(string q, object?[] a, int index) =>
        a.Length > index && a[index] is PickleMarker { Payload: ScalarType dt } m && DTypes.ContainsKey(m.QualifiedName["torch.".Length..])
            ? dt
            : throw Bad(q, $"argument {index} is {Describe(a.Length > index ? a[index] : null)}, expected a torch dtype");

    long[] LongTuple(string q, string what, object? o)
    {
        var items = ToTuple(o);
        var result = new long[items.Length];
        for (int i = 0; i < items.Length; i++)
            result[i] = items[i] is long v ? v : throw Bad(q, $"{what} element {i} is {Describe(items[i])}, expected an int");
        return result;
    }

    static object?[] ToTuple(object? o) => o switch
    {
        object?[] t => t,
        List<object?> l => l.ToArray(),
        _ => throw new InvalidCastException($"expected a tuple, got {Describe(o)}"),
    };

    SaeSharpException Bad(string q, string what) => new($"{path}: bad call to {q}: {what}.");

    /// <summary>A short description of an unpickled value for an error message: nested tuples are shown two levels
    /// deep and eight items wide, strings cut at 60 characters, so a hostile value cannot blow up the message.</summary>
    internal static string Describe(object? o) => Describe(o, 2);

    static string Describe(object? o, int depth) => o switch
    {
        null => "None",
        string s => s.Length <= 60 ? $"'{s}'" : $"'{s[..60]}…'",
        long or double or bool => Convert.ToString(o, System.Globalization.CultureInfo.InvariantCulture)!,
        object?[] t when depth <= 0 => t.Length == 0 ? "()" : "(…)",
        object?[] t => "(" + string.Join(", ", t.Take(8).Select(x => Describe(x, depth - 1))) + (t.Length > 8 ? ", …" : "") + ")",
        PickleCallable c => c.QualifiedName,
        PickleMarker m => m.QualifiedName,
        Tensor => "a tensor",
        TorchStorageRef s => $"storage '{s.Key}'",
        _ => "a " + o.GetType().Name,
    };
}
