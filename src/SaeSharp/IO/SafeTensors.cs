using System.Text;
using System.Text.Json;
using System.Text.Json.Nodes;
using TorchSharp;
using static TorchSharp.torch;

namespace SaeSharp.IO;

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
        // Holds the detached, CPU and contiguous wrappers (and whatever a lazy sequence makes) until the file is written.
        using var scope = NewDisposeScope();
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

    /// <summary>Writes <paramref name="tensors"/> and string <paramref name="metadata"/> to <paramref name="path"/> atomically, in the dictionary's order.</summary>
    public static void Save(string path, IReadOnlyDictionary<string, Tensor> tensors, IReadOnlyDictionary<string, string>? metadata = null) =>
        Save(path, (IEnumerable<KeyValuePair<string, Tensor>>)tensors, metadata);

    internal static ScalarType ToScalarType(string dtype) => dtype switch
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

    internal static string ToDtypeString(ScalarType t) => t switch
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
