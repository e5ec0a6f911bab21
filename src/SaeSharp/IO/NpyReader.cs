using TorchSharp;
using static TorchSharp.torch;

namespace SaeSharp.IO;

/// <summary>An open <c>.npy</c> file for repeated row reads (e.g. an activation cache of shape
/// [tokens, d_model]). The header is validated against the file size when opened.</summary>
public sealed class NpyReader : IDisposable
{
    readonly FileStream _stream;
    readonly string _path;

    NpyReader(FileStream stream, string path, NpyHeader header)
    {
        _stream = stream;
        _path = path;
        Header = header;
    }

    /// <summary>The file's header.</summary>
    public NpyHeader Header { get; }

    /// <summary>Number of rows (length of the first axis).</summary>
    public long RowCount => Header.Shape.Length > 0 ? Header.Shape[0] : throw new SaeSharpException($"{_path}: 0-d array has no rows.");

    /// <summary>Opens <paramref name="path"/> and checks that the file holds all the data its header promises.</summary>
    public static NpyReader Open(string path)
    {
        if (!File.Exists(path)) throw new SaeSharpException($"{path}: .npy file not found.");
        var stream = new FileStream(path, FileMode.Open, FileAccess.Read, FileShare.Read, bufferSize: 1 << 16);
        try
        {
            var header = NpyHeader.Read(stream, path);
            Npy.CheckLoadable(header, path);
            long needed = header.DataOffset + header.DataBytes;
            if (stream.Length < needed)
                throw new SaeSharpException($"{path}: truncated .npy file: header promises {header.DataBytes} data bytes (shape ({string.Join(", ", header.Shape)}) {header.Descr}) ending at byte {needed}, but the file has {stream.Length} bytes.");
            return new NpyReader(stream, path, header);
        }
        catch
        {
            stream.Dispose();
            throw;
        }
    }

    /// <summary>The whole array as a CPU tensor.</summary>
    public Tensor ReadAll()
    {
        _stream.Position = Header.DataOffset;
        return Fill(Header.Shape);
    }

    /// <summary>Rows [<paramref name="start"/>, <paramref name="start"/> + <paramref name="count"/>) of the
    /// first axis: a tensor of shape [count, ...rest of the shape].</summary>
    public Tensor ReadRows(long start, long count)
    {
        long rows = RowCount;
        if (start < 0 || count < 0 || start > rows - count)
            throw new SaeSharpException($"{_path}: rows [{start}, {start + count}) are outside the array's {rows} rows.");
        var shape = (long[])Header.Shape.Clone();
        shape[0] = count;
        _stream.Position = Header.DataOffset + start * Header.RowBytes;
        return Fill(shape);
    }

    Tensor Fill(long[] shape)
    {
        var t = torch.empty(shape, dtype: Header.DType);
        try
        {
            Npy.ReadData(_stream, t, _path);
            return t;
        }
        catch
        {
            t.Dispose();
            throw;
        }
    }

    /// <summary>Closes the file.</summary>
    public void Dispose() => _stream.Dispose();
}
