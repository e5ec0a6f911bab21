namespace SaeSharp.IO;

/// <summary>
/// A bounds check of a Parquet file's footer (its Thrift compact-protocol <c>FileMetaData</c>) before Parquet.Net
/// parses it. Parquet.Net's Thrift reader runs past the end of a truncated or corrupt footer without stopping (a
/// varint read at the end of the buffer never ends; a list may declare two billion elements), which made a 320-byte
/// fuzzed file spin for minutes. The walk here reads every value the footer declares, refuses lists, sets and maps
/// longer than the bytes left (each element takes at least one byte), nesting deeper than <see cref="MaxDepth"/>,
/// varints longer than 10 bytes and any read past the end, and throws a <see cref="SaeSharpException"/> naming the file.
/// Thrift compact protocol: https://github.com/apache/thrift/blob/master/doc/specs/thrift-compact-protocol.md
/// </summary>
internal static class ParquetFooter
{
    /// <summary>Deepest nesting of structs and containers accepted (Parquet's metadata nests about 6 deep).</summary>
    public const int MaxDepth = 64;

    /// <summary>Checks the footer of the Parquet file open in <paramref name="stream"/> (seekable); restores the position.</summary>
    public static void Check(Stream stream, string path)
    {
        long start = stream.Position;
        try
        {
            long length = stream.Length;
            if (length < 12) throw Corrupt(path, $"{length} bytes is too short for a Parquet file");
            Span<byte> tail = stackalloc byte[8];
            stream.Seek(-8, SeekOrigin.End);
            stream.ReadExactly(tail);
            int footerLength = BitConverter.ToInt32(tail[..4]);
            if (footerLength <= 0 || footerLength > length - 12)
                throw Corrupt(path, $"the footer length {footerLength} does not fit a {length}-byte file");
            var footer = new byte[footerLength];
            stream.Seek(-8 - footerLength, SeekOrigin.End);
            stream.ReadExactly(footer);
            var walker = new Walker(footer, path);
            walker.Struct(0);
        }
        finally
        {
            stream.Position = start;
        }
    }

    static SaeSharpException Corrupt(string path, string why) =>
        new($"{path}: not a readable Parquet file (corrupt footer: {why})");

    ref struct Walker(byte[] bytes, string path)
    {
        int _pos;

        byte Byte()
        {
            if (_pos >= bytes.Length) throw Corrupt(path, "it ends inside a value");
            return bytes[_pos++];
        }

        ulong Varint()
        {
            ulong value = 0;
            for (int shift = 0; shift < 70; shift += 7)
            {
                byte b = Byte();
                value |= (ulong)(b & 0x7F) << shift;
                if ((b & 0x80) == 0) return value;
            }
            throw Corrupt(path, $"a varint at byte {_pos} is longer than 10 bytes");
        }

        void Skip(long n)
        {
            if (n < 0 || n > bytes.Length - _pos) throw Corrupt(path, $"a value of {n} bytes at byte {_pos} runs past its end");
            _pos += (int)n;
        }

        /// <summary>Element count of a container: at most one element per remaining byte.</summary>
        int Count(ulong n)
        {
            if (n > (ulong)(bytes.Length - _pos)) throw Corrupt(path, $"a container at byte {_pos} declares {n} elements");
            return (int)n;
        }

        public void Struct(int depth)
        {
            if (depth > MaxDepth) throw Corrupt(path, $"nesting deeper than {MaxDepth}");
            while (true)
            {
                byte header = Byte();
                if (header == 0) return;
                if ((header >> 4) == 0) Varint(); // a field id that is not a delta: zigzag i16
                Value(header & 0x0F, depth, inList: false);
            }
        }

        void Value(int type, int depth, bool inList)
        {
            switch (type)
            {
                case 1 or 2: // bool: the type in a field header, one byte in a container
                    if (inList) Byte();
                    break;
                case 3: Byte(); break;
                case 4 or 5 or 6: Varint(); break;
                case 7: Skip(8); break;
                case 8: Skip((long)Math.Min(Varint(), (ulong)int.MaxValue)); break;
                case 9 or 10:
                    {
                        if (depth + 1 > MaxDepth) throw Corrupt(path, $"nesting deeper than {MaxDepth}");
                        byte h = Byte();
                        ulong n = (ulong)(h >> 4);
                        if (n == 15) n = Varint();
                        int count = Count(n), element = h & 0x0F;
                        for (int i = 0; i < count; i++) Value(element, depth + 1, inList: true);
                        break;
                    }
                case 11:
                    {
                        if (depth + 1 > MaxDepth) throw Corrupt(path, $"nesting deeper than {MaxDepth}");
                        int count = Count(Varint());
                        if (count == 0) break;
                        byte kv = Byte();
                        for (int i = 0; i < count; i++)
                        {
                            Value(kv >> 4, depth + 1, inList: true);
                            Value(kv & 0x0F, depth + 1, inList: true);
                        }
                        break;
                    }
                case 12: Struct(depth + 1); break;
                default: throw Corrupt(path, $"unknown Thrift type {type} at byte {_pos}");
            }
        }
    }
}
