using static TorchSharp.torch;

namespace SaeSharp.IO;

/// <summary>Copies between streams and a contiguous CPU tensor's memory in chunks below 2 GiB
/// (TorchSharp exposes a tensor's memory as one <see cref="Span{T}"/>, which cannot be larger).</summary>
internal static class NativeBytes
{
    private const long ChunkBytes = 1L << 28;

    /// <summary>Fills <paramref name="t"/> (contiguous, CPU) from <paramref name="read"/>, chunk by chunk.</summary>
    public static void Fill(Tensor t, Action<Span<byte>> read) => ForEachChunk(t, read);

    /// <summary>Hands the bytes of <paramref name="t"/> (contiguous, CPU) to <paramref name="write"/>, chunk by chunk.</summary>
    public static void Visit(Tensor t, Action<ReadOnlySpan<byte>> write) => ForEachChunk(t, span => write(span));

    /// <summary>Hands each chunk's bytes to <paramref name="action"/>; the chunk (a view holding the storage) is a
    /// <c>using</c> local, so it stays reachable while the span is used (TensorLifetimeSourceTests).</summary>
    private static void ForEachChunk(Tensor t, Action<Span<byte>> action)
    {
        long numel = t.numel();
        if (numel == 0) return;
        long chunkElements = Math.Max(1, ChunkBytes / t.element_size());
        using var flat = t.view(-1);
        for (long start = 0; start < numel; start += chunkElements)
        {
            using var chunk = flat.narrow(0, start, Math.Min(chunkElements, numel - start));
            action(chunk.bytes);
        }
    }
}
