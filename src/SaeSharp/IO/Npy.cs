using System.IO.Compression;
using TorchSharp;
using static TorchSharp.torch;

namespace SaeSharp.IO;

/// <summary>NumPy <c>.npy</c> / <c>.npz</c> reading and writing (little-endian, C order; dtypes
/// <c>&lt;f4 &lt;f2 &lt;f8 &lt;i8 &lt;i4 &lt;i2 |i1 |u1 |b1</c>). Used for activation caches and for
/// Gemma Scope's <c>params.npz</c> (W_enc, W_dec, b_enc, b_dec, threshold).</summary>
public static class Npy
{
    /// <summary>Reads only the header of <paramref name="path"/>.</summary>
    public static NpyHeader ReadHeader(string path)
    {
        using var reader = NpyReader.Open(path);
        return reader.Header;
    }

    /// <summary>Loads the whole array as a CPU tensor of its dtype and shape.</summary>
    public static Tensor Load(string path)
    {
        using var reader = NpyReader.Open(path);
        return reader.ReadAll();
    }

    /// <summary>Reads rows [<paramref name="start"/>, <paramref name="start"/> + <paramref name="count"/>)
    /// along the first axis, seeking past the others (the file is not loaded whole).</summary>
    public static Tensor ReadRows(string path, long start, long count)
    {
        using var reader = NpyReader.Open(path);
        return reader.ReadRows(start, count);
    }

    /// <summary>Writes <paramref name="tensor"/> as a version-1 .npy file, byte-identical to <c>numpy.save</c>
    /// (float32 and the other supported dtypes; bfloat16 has no NumPy dtype and is refused), atomically: a failure
    /// leaves a previous file unchanged.</summary>
    public static void Save(string path, Tensor tensor) => AtomicFile.Write(path, stream => Write(stream, tensor));

    /// <summary>Writes <paramref name="tensor"/> in .npy format to <paramref name="stream"/>.</summary>
    internal static void Write(Stream stream, Tensor tensor)
    {
        stream.Write(NpyHeader.Format(tensor.dtype, tensor.shape));
        using var cpu = tensor.device_type == DeviceType.CPU ? tensor.alias() : tensor.cpu();
        using var contiguous = cpu.contiguous();
        NativeBytes.Visit(contiguous, span => stream.Write(span));
    }

    /// <summary>Fills the contiguous CPU tensor <paramref name="target"/> with raw bytes from <paramref name="stream"/>;
    /// a stream that ends early is reported as a truncated file.</summary>
    internal static void ReadData(Stream stream, Tensor target, string source)
    {
        long done = 0;
        NativeBytes.Fill(target, span =>
        {
            int got = stream.ReadAtLeast(span, span.Length, throwOnEndOfStream: false);
            if (got < span.Length)
                throw new SaeSharpException($"{source}: data ends after {done + got} of {target.numel() * target.element_size()} bytes (truncated file).");
            done += got;
        });
    }

    /// <summary>Loads every <c>name.npy</c> entry of an <c>.npz</c> archive (stored or deflated, as written
    /// by <c>numpy.savez</c> / <c>savez_compressed</c>) into tensors keyed by <c>name</c>, in archive order.
    /// The caller owns the tensors.</summary>
    public static IReadOnlyDictionary<string, Tensor> LoadNpz(string path)
    {
        if (!File.Exists(path)) throw new SaeSharpException($"{path}: .npz file not found.");
        using var scope = torch.NewDisposeScope();
        var result = new OrderedDictionary<string, Tensor>();
        try
        {
            using var zip = new ZipArchive(File.OpenRead(path), ZipArchiveMode.Read);
            foreach (var entry in zip.Entries)
            {
                if (!entry.FullName.EndsWith(".npy", StringComparison.Ordinal)) continue;
                string name = entry.FullName[..^4];
                string source = $"{path} ({entry.FullName})";
                using var stream = entry.Open();
                var header = NpyHeader.Read(stream, source);
                CheckLoadable(header, source);
                if (entry.Length < header.DataOffset + header.DataBytes)
                    throw new SaeSharpException($"{source}: entry holds {entry.Length} bytes but its header needs {header.DataOffset + header.DataBytes} (truncated array).");
                var t = torch.empty(header.Shape, dtype: header.DType);
                ReadData(stream, t, source);
                result[name] = t;
            }
        }
        catch (InvalidDataException e)
        {
            throw new SaeSharpException($"{path}: not a readable .npz (zip) archive, the file is truncated or corrupt ({e.Message}).", e);
        }
        if (result.Count == 0) throw new SaeSharpException($"{path}: .npz archive contains no .npy entries.");
        foreach (var t in result.Values) t.MoveToOuterDisposeScope();
        return result;
    }

    internal static void CheckLoadable(NpyHeader header, string source)
    {
        if (header.FortranOrder)
            throw new SaeSharpException($"{source}: array is stored in Fortran (column-major) order; only C order is supported (save it with numpy.ascontiguousarray).");
    }
}
