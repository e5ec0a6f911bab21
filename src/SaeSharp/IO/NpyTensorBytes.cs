using TorchSharp;
using static TorchSharp.torch;

namespace SaeSharp.IO;

/// <summary>Raw little-endian byte transfer between streams and contiguous CPU tensors, in chunks so
/// that tensors larger than 2 GiB work too. Shared by the .npy and torch checkpoint readers.</summary>
internal static class NpyTensorBytes
{
    const long ChunkBytes = 1 << 26;

    /// <summary>Byte size of one element of <paramref name="dtype"/>.</summary>
    public static int ElementSize(ScalarType dtype) => dtype switch
    {
        ScalarType.Float64 or ScalarType.Int64 => 8,
        ScalarType.Float32 or ScalarType.Int32 => 4,
        ScalarType.Float16 or ScalarType.BFloat16 or ScalarType.Int16 => 2,
        ScalarType.Int8 or ScalarType.Byte or ScalarType.Bool => 1,
        _ => throw new SaeSharpException($"Unsupported tensor dtype {dtype}."),
    };

    /// <summary>Creates a 1-D tensor of <paramref name="numel"/> elements filled with exactly
    /// numel × element-size bytes from <paramref name="source"/>. <paramref name="what"/> names the
    /// source in the error raised when the stream ends early.</summary>
    public static Tensor Read(Stream source, ScalarType dtype, long numel, string what)
    {
        var flat = torch.empty(numel, dtype: dtype);
        try
        {
            Fill(source, flat, what);
            return flat;
        }
        catch
        {
            flat.Dispose();
            throw;
        }
    }

    /// <summary>Fills the contiguous CPU tensor <paramref name="target"/> from <paramref name="source"/>.</summary>
    public static void Fill(Stream source, Tensor target, string what)
    {
        long elem = target.element_size();
        long numel = target.numel();
        long perChunk = Math.Max(1, ChunkBytes / elem);
        using var flat = target.view(numel);
        for (long start = 0; start < numel; start += perChunk)
        {
            long n = Math.Min(perChunk, numel - start);
            using var part = flat.narrow(0, start, n);
            var span = part.bytes;
            int read = 0;
            while (read < span.Length)
            {
                int got = source.Read(span[read..]);
                if (got == 0)
                {
                    long have = start * elem + read;
                    throw new SaeSharpException($"{what}: data ends after {have} bytes, expected {numel * elem}.");
                }
                read += got;
            }
        }
    }

    /// <summary>Writes the bytes of <paramref name="tensor"/> (made contiguous on the CPU) to <paramref name="target"/>.</summary>
    public static void Write(Stream target, Tensor tensor)
    {
        using var cpu = tensor.device_type == DeviceType.CPU ? tensor.alias() : tensor.cpu();
        using var contiguous = cpu.contiguous();
        long numel = contiguous.numel();
        long elem = contiguous.element_size();
        long perChunk = Math.Max(1, ChunkBytes / elem);
        using var flat = contiguous.view(numel);
        for (long start = 0; start < numel; start += perChunk)
        {
            long n = Math.Min(perChunk, numel - start);
            using var part = flat.narrow(0, start, n);
            target.Write(part.bytes);
        }
    }
}
