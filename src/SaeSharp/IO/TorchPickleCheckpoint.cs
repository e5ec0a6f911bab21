using static TorchSharp.torch;

namespace SaeSharp.IO;

/// <summary>The content of a <c>torch.save</c> checkpoint as read by <see cref="TorchPickle.Load"/>.
/// Python values map to: tensor → <see cref="Tensor"/> (CPU, contiguous), None → null, bool, int → long
/// (or BigInteger), float → double, str → string, bytes → byte[], tuple → object?[],
/// list → List&lt;object?&gt;, dict / OrderedDict → OrderedDictionary&lt;object, object?&gt;,
/// set → HashSet&lt;object&gt;, torch dtype → <see cref="ScalarType"/>.
/// Disposing the checkpoint disposes every tensor in it.</summary>
public sealed class TorchPickleCheckpoint : IDisposable
{
    readonly IReadOnlyList<Tensor> _allTensors;
    OrderedDictionary<string, object?>? _entries;

    internal TorchPickleCheckpoint(string path, object? root, IReadOnlyList<Tensor> allTensors)
    {
        Path = path;
        Root = root;
        _allTensors = allTensors;
    }

    /// <summary>The file this checkpoint was read from.</summary>
    public string Path { get; }

    /// <summary>The unpickled top-level object (usually a state_dict dictionary).</summary>
    public object? Root { get; }

    /// <summary>The top-level dictionary with string keys, in file order (tensors and plain values).</summary>
    public IReadOnlyDictionary<string, object?> Entries => _entries ??= BuildEntries();

    /// <summary>The tensor-valued top-level entries, in file order.</summary>
    public IReadOnlyDictionary<string, Tensor> Tensors
    {
        get
        {
            var result = new OrderedDictionary<string, Tensor>();
            foreach (var (k, v) in Entries)
            {
                if (v is Tensor t) result[k] = t;
            }
            return result;
        }
    }

    /// <summary>The top-level entries that are not tensors (e.g. OpenAI's <c>activation</c> name).</summary>
    public IReadOnlyDictionary<string, object?> Values
    {
        get
        {
            var result = new OrderedDictionary<string, object?>();
            foreach (var (k, v) in Entries)
            {
                if (v is not Tensor) result[k] = v;
            }
            return result;
        }
    }

    /// <summary>The tensor stored under <paramref name="key"/>; throws naming the file when it is absent
    /// or not a tensor.</summary>
    public Tensor GetTensor(string key) =>
        Entries.TryGetValue(key, out var v)
            ? v as Tensor ?? throw new SaeSharpException($"{Path}: entry '{key}' is {TorchPickleLoader.Describe(v)}, expected a tensor.")
            : throw new SaeSharpException($"{Path}: no entry '{key}' (entries: {string.Join(", ", Entries.Keys)}).");

    /// <summary>Every tensor anywhere in the checkpoint, nested ones included.</summary>
    internal IReadOnlyList<Tensor> AllTensors => _allTensors;

    /// <summary>Disposes every tensor of the checkpoint.</summary>
    public void Dispose()
    {
        foreach (var t in _allTensors) t.Dispose();
    }

    OrderedDictionary<string, object?> BuildEntries()
    {
        if (Root is not OrderedDictionary<object, object?> dict)
            throw new SaeSharpException($"{Path}: top-level object is {TorchPickleLoader.Describe(Root)}, expected a dictionary (state_dict).");
        var entries = new OrderedDictionary<string, object?>();
        foreach (var (k, v) in dict)
        {
            if (k is not string key)
                throw new SaeSharpException($"{Path}: top-level key {TorchPickleLoader.Describe(k)} is not a string.");
            entries[key] = v;
        }
        return entries;
    }

    /// <summary>Walks the unpickled object graph: returns every distinct tensor, turns dtype markers into
    /// <see cref="ScalarType"/> values and rejects internal objects that cannot be plain data.</summary>
    internal static List<Tensor> CollectTensors(object? root, string path)
    {
        var tensors = new List<Tensor>();
        var seen = new HashSet<object>(ReferenceEqualityComparer.Instance);
        var pending = new Stack<object?>();
        pending.Push(root);

        object? Plain(object? value) => value switch
        {
            PickleMarker { Payload: ScalarType dtype } m when !m.QualifiedName.EndsWith("Storage", StringComparison.Ordinal) => dtype,
            PickleMarker or PickleCallable => throw new SaeSharpException($"{path}: global {TorchPickleLoader.Describe(value)} appears as a value; only data can be loaded."),
            TorchStorageRef s => throw new SaeSharpException($"{path}: bare storage '{s.Key}' outside a tensor is not supported."),
            _ => value,
        };

        while (pending.Count > 0)
        {
            var o = pending.Pop();
            if (o is null || !seen.Add(o)) continue;
            switch (o)
            {
                case Tensor t:
                    tensors.Add(t);
                    break;
                case object?[] tuple:
                    for (int i = 0; i < tuple.Length; i++) pending.Push(tuple[i] = Plain(tuple[i]));
                    break;
                case List<object?> list:
                    for (int i = 0; i < list.Count; i++) pending.Push(list[i] = Plain(list[i]));
                    break;
                case OrderedDictionary<object, object?> dict:
                    for (int i = 0; i < dict.Count; i++)
                    {
                        var (k, v) = dict.GetAt(i);
                        if (Plain(k) is not { } key || !ReferenceEquals(key, k))
                            throw new SaeSharpException($"{path}: dictionary key {TorchPickleLoader.Describe(k)} is not plain data.");
                        var plain = Plain(v);
                        dict.SetAt(i, plain);
                        pending.Push(k);
                        pending.Push(plain);
                    }
                    break;
                case HashSet<object> set:
                    foreach (var item in set)
                    {
                        if (!ReferenceEquals(Plain(item), item))
                            throw new SaeSharpException($"{path}: set member {TorchPickleLoader.Describe(item)} is not plain data.");
                        pending.Push(item);
                    }
                    break;
                default:
                    _ = Plain(o);
                    break;
            }
        }
        return tensors;
    }
}
