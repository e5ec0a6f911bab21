using System.Buffers.Binary;
using System.Text;
using static TorchSharp.torch;

namespace SaeSharp.IO;

/// <summary>
/// The zip container of <c>torch.save</c>, byte for byte as PyTorch's <c>PyTorchFileWriter</c> (miniz) writes it:
/// entries <c>&lt;archive&gt;/&lt;name&gt;</c> stored uncompressed, local headers with zero time, date, CRC and sizes
/// (general-purpose flags 0x0808: data descriptor, UTF-8 names) and an extra field <c>FB</c> + length + <c>Z</c>
/// padding that puts each entry's data at a multiple of 64 bytes; a data descriptor after the data; the central
/// directory; then a zip64 end record, its locator and the classic end record (miniz writes the zip64 ones always).
/// Sizes and offsets at or above 4 GiB − 1 get zip64 extra fields.
/// </summary>
internal sealed class TorchZipWriter(Stream stream, string archiveName, long zip64Threshold = uint.MaxValue)
{
    private const int Alignment = 64;
    private readonly List<(byte[] Name, uint Crc, long Size, long Offset)> _entries = [];
    private long _position;

    /// <summary>Writes one entry holding <paramref name="data"/>.</summary>
    public void WriteRecord(string name, byte[] data) =>
        WriteRecord(name, data.LongLength, write => write(data));

    /// <summary>Writes one entry holding the bytes of the contiguous CPU tensor <paramref name="t"/>.</summary>
    public void WriteRecord(string name, Tensor t) =>
        WriteRecord(name, t.numel() * t.element_size(), write => NativeBytes.Visit(t, span => write(span)));

    private delegate void ChunkWriter(ReadOnlySpan<byte> chunk);

    private void WriteRecord(string name, long size, Action<ChunkWriter> content)
    {
        byte[] fullName = Encoding.UTF8.GetBytes(archiveName + "/" + name);
        long offset = _position;
        bool bigSize = size >= zip64Threshold, bigOffset = offset >= zip64Threshold;
        int zip64Length = (bigSize ? 16 : 0) + (bigOffset ? 8 : 0);
        int zip64Extra = zip64Length > 0 ? 4 + zip64Length : 0;
        long start = offset + 30 + fullName.Length + zip64Extra + 4;
        int padding = (int)((Alignment - start % Alignment) % Alignment);

        var header = new byte[30 + fullName.Length + zip64Extra + 4 + padding];
        var h = header.AsSpan();
        BinaryPrimitives.WriteUInt32LittleEndian(h, 0x04034b50);
        BinaryPrimitives.WriteUInt16LittleEndian(h[4..], zip64Extra > 0 ? (ushort)45 : (ushort)0);
        BinaryPrimitives.WriteUInt16LittleEndian(h[6..], 0x0808);
        // method, time, date, crc: 0; sizes: 0 (in the data descriptor) or 0xFFFFFFFF (in the zip64 field)
        if (bigSize)
        {
            BinaryPrimitives.WriteUInt32LittleEndian(h[18..], uint.MaxValue);
            BinaryPrimitives.WriteUInt32LittleEndian(h[22..], uint.MaxValue);
        }
        BinaryPrimitives.WriteUInt16LittleEndian(h[26..], (ushort)fullName.Length);
        BinaryPrimitives.WriteUInt16LittleEndian(h[28..], (ushort)(zip64Extra + 4 + padding));
        fullName.CopyTo(h[30..]);
        var extra = h[(30 + fullName.Length)..];
        if (zip64Extra > 0)
        {
            BinaryPrimitives.WriteUInt16LittleEndian(extra, 0x0001);
            BinaryPrimitives.WriteUInt16LittleEndian(extra[2..], (ushort)zip64Length);
            int at = 4;
            if (bigSize)
            {
                BinaryPrimitives.WriteInt64LittleEndian(extra[at..], size);
                BinaryPrimitives.WriteInt64LittleEndian(extra[(at + 8)..], size);
                at += 16;
            }
            if (bigOffset) BinaryPrimitives.WriteInt64LittleEndian(extra[at..], offset);
            extra = extra[zip64Extra..];
        }
        extra[0] = (byte)'F';
        extra[1] = (byte)'B';
        BinaryPrimitives.WriteUInt16LittleEndian(extra[2..], (ushort)padding);
        extra[4..].Fill((byte)'Z');
        Write(header);

        uint crc = Crc32.Initial;
        long written = 0;
        content(chunk =>
        {
            crc = Crc32.Update(crc, chunk);
            written += chunk.Length;
            Write(chunk);
        });
        if (written != size) throw new InvalidOperationException($"entry {name}: wrote {written} bytes, declared {size}");
        crc = Crc32.Final(crc);

        bool wideDescriptor = zip64Extra > 0;
        var descriptor = new byte[wideDescriptor ? 24 : 16];
        BinaryPrimitives.WriteUInt32LittleEndian(descriptor, 0x08074b50);
        BinaryPrimitives.WriteUInt32LittleEndian(descriptor.AsSpan(4), crc);
        if (wideDescriptor)
        {
            BinaryPrimitives.WriteInt64LittleEndian(descriptor.AsSpan(8), size);
            BinaryPrimitives.WriteInt64LittleEndian(descriptor.AsSpan(16), size);
        }
        else
        {
            BinaryPrimitives.WriteUInt32LittleEndian(descriptor.AsSpan(8), (uint)size);
            BinaryPrimitives.WriteUInt32LittleEndian(descriptor.AsSpan(12), (uint)size);
        }
        Write(descriptor);
        _entries.Add((fullName, crc, size, offset));
    }

    /// <summary>Writes the central directory and the end records.</summary>
    public void Finish()
    {
        long cdOffset = _position;
        foreach (var (name, crc, size, offset) in _entries)
        {
            bool bigSize = size >= zip64Threshold, bigOffset = offset >= zip64Threshold;
            int zip64Length = (bigSize ? 16 : 0) + (bigOffset ? 8 : 0);
            int extraLength = zip64Length > 0 ? 4 + zip64Length : 0;
            var e = new byte[46 + name.Length + extraLength];
            var s = e.AsSpan();
            BinaryPrimitives.WriteUInt32LittleEndian(s, 0x02014b50);
            BinaryPrimitives.WriteUInt16LittleEndian(s[6..], extraLength > 0 ? (ushort)45 : (ushort)0);
            BinaryPrimitives.WriteUInt16LittleEndian(s[8..], 0x0808);
            BinaryPrimitives.WriteUInt32LittleEndian(s[16..], crc);
            BinaryPrimitives.WriteUInt32LittleEndian(s[20..], bigSize ? uint.MaxValue : (uint)size);
            BinaryPrimitives.WriteUInt32LittleEndian(s[24..], bigSize ? uint.MaxValue : (uint)size);
            BinaryPrimitives.WriteUInt16LittleEndian(s[28..], (ushort)name.Length);
            BinaryPrimitives.WriteUInt16LittleEndian(s[30..], (ushort)extraLength);
            BinaryPrimitives.WriteUInt32LittleEndian(s[42..], bigOffset ? uint.MaxValue : (uint)offset);
            name.CopyTo(s[46..]);
            if (extraLength > 0)
            {
                var x = s[(46 + name.Length)..];
                BinaryPrimitives.WriteUInt16LittleEndian(x, 0x0001);
                BinaryPrimitives.WriteUInt16LittleEndian(x[2..], (ushort)zip64Length);
                int at = 4;
                if (bigSize)
                {
                    BinaryPrimitives.WriteInt64LittleEndian(x[at..], size);
                    BinaryPrimitives.WriteInt64LittleEndian(x[(at + 8)..], size);
                    at += 16;
                }
                if (bigOffset) BinaryPrimitives.WriteInt64LittleEndian(x[at..], offset);
            }
            Write(e);
        }
        long cdSize = _position - cdOffset;
        long zip64EndOffset = _position;
        int count = _entries.Count;

        var end = new byte[56 + 20 + 22];
        var z = end.AsSpan();
        BinaryPrimitives.WriteUInt32LittleEndian(z, 0x06064b50);
        BinaryPrimitives.WriteInt64LittleEndian(z[4..], 44);
        BinaryPrimitives.WriteUInt16LittleEndian(z[12..], 0x031e);
        BinaryPrimitives.WriteUInt16LittleEndian(z[14..], 0x002d);
        BinaryPrimitives.WriteInt64LittleEndian(z[24..], count);
        BinaryPrimitives.WriteInt64LittleEndian(z[32..], count);
        BinaryPrimitives.WriteInt64LittleEndian(z[40..], cdSize);
        BinaryPrimitives.WriteInt64LittleEndian(z[48..], cdOffset);
        var locator = z[56..];
        BinaryPrimitives.WriteUInt32LittleEndian(locator, 0x07064b50);
        BinaryPrimitives.WriteInt64LittleEndian(locator[8..], zip64EndOffset);
        BinaryPrimitives.WriteUInt32LittleEndian(locator[16..], 1);
        var eocd = z[76..];
        BinaryPrimitives.WriteUInt32LittleEndian(eocd, 0x06054b50);
        ushort count16 = count >= 0xffff ? (ushort)0xffff : (ushort)count;
        BinaryPrimitives.WriteUInt16LittleEndian(eocd[8..], count16);
        BinaryPrimitives.WriteUInt16LittleEndian(eocd[10..], count16);
        BinaryPrimitives.WriteUInt32LittleEndian(eocd[12..], cdSize >= zip64Threshold ? uint.MaxValue : (uint)cdSize);
        BinaryPrimitives.WriteUInt32LittleEndian(eocd[16..], cdOffset >= zip64Threshold ? uint.MaxValue : (uint)cdOffset);
        Write(end);
        stream.Flush();
    }

    private void Write(ReadOnlySpan<byte> bytes)
    {
        stream.Write(bytes);
        _position += bytes.Length;
    }
}

/// <summary>CRC-32 (IEEE 802.3, the zip checksum), table-driven.</summary>
internal static class Crc32
{
    private static readonly uint[] Table = BuildTable();

    /// <summary>The running value before the first byte.</summary>
    public const uint Initial = 0xFFFFFFFFu;

    /// <summary>Folds <paramref name="bytes"/> into the running value.</summary>
    public static uint Update(uint crc, ReadOnlySpan<byte> bytes)
    {
        foreach (byte b in bytes) crc = Table[(crc ^ b) & 0xff] ^ (crc >> 8);
        return crc;
    }

    /// <summary>The checksum from the running value.</summary>
    public static uint Final(uint crc) => ~crc;

    /// <summary>The checksum of <paramref name="bytes"/>.</summary>
    public static uint Compute(ReadOnlySpan<byte> bytes) => Final(Update(Initial, bytes));

    private static uint[] BuildTable()
    {
        var table = new uint[256];
        for (uint i = 0; i < 256; i++)
        {
            uint c = i;
            for (int k = 0; k < 8; k++) c = (c & 1) != 0 ? 0xEDB88320u ^ (c >> 1) : c >> 1;
            table[i] = c;
        }
        return table;
    }
}
