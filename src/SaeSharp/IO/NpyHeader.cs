using System.Buffers.Binary;
using System.Globalization;
using System.Text;
using static TorchSharp.torch;

namespace SaeSharp.IO;

/// <summary>The header of a NumPy <c>.npy</c> file: format version, dtype descriptor (e.g. <c>&lt;f4</c>),
/// memory order, shape, and the byte offset where the raw little-endian data starts.</summary>
public sealed record NpyHeader(int Version, string Descr, ScalarType DType, bool FortranOrder, long[] Shape, long DataOffset)
{
    static readonly byte[] Magic = [0x93, (byte)'N', (byte)'U', (byte)'M', (byte)'P', (byte)'Y'];

    /// <summary>Number of elements (product of the shape; 1 for a 0-d array).</summary>
    public long ElementCount => Shape.Aggregate(1L, (a, b) => checked(a * b));

    /// <summary>Bytes of one element.</summary>
    public int ElementSize => Descr[^1] - '0';

    /// <summary>Bytes of data following the header.</summary>
    public long DataBytes => checked(ElementCount * ElementSize);

    /// <summary>Bytes of one row: one index along the first axis.</summary>
    public long RowBytes => Shape.Length == 0 ? ElementSize : Shape.Skip(1).Aggregate((long)ElementSize, (a, b) => checked(a * b));

    /// <summary>Parses the header at the current position of <paramref name="stream"/>, leaving the stream
    /// at the start of the data. <paramref name="source"/> names the file in error messages.</summary>
    internal static NpyHeader Read(Stream stream, string source)
    {
        Span<byte> pre = stackalloc byte[12];
        ReadExactly(stream, pre[..8], source, "magic and version");
        if (!pre[..6].SequenceEqual(Magic))
            throw new SaeSharpException($"{source}: not a .npy file (missing the \\x93NUMPY magic).");
        int major = pre[6];
        long headerLen;
        int prefix;
        switch (major)
        {
            case 1:
                ReadExactly(stream, pre[8..10], source, "header length");
                headerLen = BinaryPrimitives.ReadUInt16LittleEndian(pre[8..10]);
                prefix = 10;
                break;
            case 2:
            case 3:
                ReadExactly(stream, pre[8..12], source, "header length");
                headerLen = BinaryPrimitives.ReadUInt32LittleEndian(pre[8..12]);
                prefix = 12;
                break;
            default:
                throw new SaeSharpException($"{source}: .npy format version {major}.{pre[7]} is not supported (expected 1, 2 or 3).");
        }
        if (headerLen > 1 << 24)
            throw new SaeSharpException($"{source}: .npy header claims {headerLen} bytes, which is not plausible.");
        var text = new byte[headerLen];
        ReadExactly(stream, text, source, "header");
        string header = (major == 3 ? Encoding.UTF8 : Encoding.Latin1).GetString(text);
        var dict = new LiteralParser(header, source).ParseHeaderDict();

        string descr = dict.TryGetValue("descr", out var d) && d is string ds ? ds
            : throw new SaeSharpException($"{source}: .npy header has no string 'descr' (only simple dtypes are supported): {header.Trim()}");
        bool fortran = dict.TryGetValue("fortran_order", out var f) && f is bool fb ? fb
            : throw new SaeSharpException($"{source}: .npy header has no boolean 'fortran_order': {header.Trim()}");
        long[] shape = dict.TryGetValue("shape", out var s) && s is long[] sl ? sl
            : throw new SaeSharpException($"{source}: .npy header has no integer tuple 'shape': {header.Trim()}");
        if (shape.Any(x => x < 0)) throw new SaeSharpException($"{source}: negative dimension in shape ({string.Join(", ", shape)}).");

        return new NpyHeader(major, descr, ParseDescr(descr, source), fortran, shape, prefix + headerLen);
    }

    /// <summary>The header bytes NumPy writes for <paramref name="dtype"/> and <paramref name="shape"/>:
    /// version 1 (2 when the header exceeds 64 KiB), padded with spaces to a multiple of 64 bytes.</summary>
    internal static byte[] Format(ScalarType dtype, long[] shape)
    {
        string shapeText = shape.Length == 1 ? $"({shape[0]},)" : "(" + string.Join(", ", shape) + ")";
        string dict = $"{{'descr': '{DescrOf(dtype)}', 'fortran_order': False, 'shape': {shapeText}, }}";
        int version = 1, prefix = 10;
        int total = (prefix + dict.Length + 1 + 63) / 64 * 64;
        if (total - prefix > ushort.MaxValue)
        {
            version = 2;
            prefix = 12;
            total = (prefix + dict.Length + 1 + 63) / 64 * 64;
        }
        string padded = dict.PadRight(total - prefix - 1) + "\n";
        var bytes = new byte[total];
        Magic.CopyTo(bytes, 0);
        bytes[6] = (byte)version;
        if (version == 1) BinaryPrimitives.WriteUInt16LittleEndian(bytes.AsSpan(8), (ushort)padded.Length);
        else BinaryPrimitives.WriteUInt32LittleEndian(bytes.AsSpan(8), (uint)padded.Length);
        Encoding.ASCII.GetBytes(padded, bytes.AsSpan(prefix));
        return bytes;
    }

    static string DescrOf(ScalarType dtype) => dtype switch
    {
        ScalarType.Float32 => "<f4",
        ScalarType.Float16 => "<f2",
        ScalarType.Float64 => "<f8",
        ScalarType.Int64 => "<i8",
        ScalarType.Int32 => "<i4",
        ScalarType.Int16 => "<i2",
        ScalarType.Int8 => "|i1",
        ScalarType.Byte => "|u1",
        ScalarType.Bool => "|b1",
        ScalarType.BFloat16 => throw new SaeSharpException("bfloat16 has no NumPy dtype; convert the tensor to float32 before saving it as .npy."),
        _ => throw new SaeSharpException($"dtype {dtype} cannot be saved as .npy."),
    };

    static ScalarType ParseDescr(string descr, string source)
    {
        if (descr.Length < 3) throw new SaeSharpException($"{source}: unsupported .npy dtype '{descr}'.");
        char order = descr[0];
        string kind = descr[1..];
        bool singleByte = kind is "i1" or "u1" or "b1";
        if (order == '>' && !singleByte)
            throw new SaeSharpException($"{source}: big-endian .npy dtype '{descr}' is not supported; only little-endian ('<') data can be read.");
        if (order is not ('<' or '|' or '=' or '>') || (order == '|' && !singleByte) || (order == '=' && !BitConverter.IsLittleEndian))
            throw new SaeSharpException($"{source}: unsupported .npy dtype '{descr}'.");
        return kind switch
        {
            "f4" => ScalarType.Float32,
            "f2" => ScalarType.Float16,
            "f8" => ScalarType.Float64,
            "i8" => ScalarType.Int64,
            "i4" => ScalarType.Int32,
            "i2" => ScalarType.Int16,
            "i1" => ScalarType.Int8,
            "u1" => ScalarType.Byte,
            "b1" => ScalarType.Bool,
            _ => throw new SaeSharpException($"{source}: unsupported .npy dtype '{descr}' (supported: <f4, <f2, <f8, <i8, <i4, <i2, |i1, |u1, |b1)."),
        };
    }

    static void ReadExactly(Stream stream, Span<byte> buffer, string source, string what)
    {
        if (stream.ReadAtLeast(buffer, buffer.Length, throwOnEndOfStream: false) < buffer.Length)
            throw new SaeSharpException($"{source}: file ends inside the .npy {what} (truncated file).");
    }

    /// <summary>Parses the Python dict literal of a .npy header: string keys; values that are strings,
    /// True/False/None or tuples of integers.</summary>
    sealed class LiteralParser(string text, string source)
    {
        int _pos;

        public Dictionary<string, object?> ParseHeaderDict()
        {
            var result = new Dictionary<string, object?>();
            Expect('{');
            while (true)
            {
                SkipSpace();
                if (Peek() == '}') { _pos++; break; }
                string key = ParseString();
                Expect(':');
                result[key] = ParseValue(key);
                SkipSpace();
                if (Peek() == ',') { _pos++; continue; }
                Expect('}');
                break;
            }
            return result;
        }

        object? ParseValue(string key)
        {
            SkipSpace();
            char c = Peek();
            if (c is '\'' or '"') return ParseString();
            if (c == '(') return ParseIntTuple();
            if (c is '[' or '{')
                throw Error($"'{key}' is a structured or nested value, which is not supported (only simple dtypes)");
            string word = ParseWord();
            return word switch
            {
                "True" => true,
                "False" => false,
                "None" => null,
                _ => throw Error($"unexpected value '{word}' for '{key}'"),
            };
        }

        long[] ParseIntTuple()
        {
            Expect('(');
            var items = new List<long>();
            while (true)
            {
                SkipSpace();
                if (Peek() == ')') { _pos++; break; }
                string word = ParseWord();
                if (word.EndsWith('L')) word = word[..^1]; // Python 2 longs: (3L, 4L)
                if (!long.TryParse(word, NumberStyles.AllowLeadingSign, CultureInfo.InvariantCulture, out long v))
                    throw Error($"shape element '{word}' is not an integer");
                items.Add(v);
                SkipSpace();
                if (Peek() == ',') { _pos++; continue; }
                Expect(')');
                break;
            }
            return items.ToArray();
        }

        string ParseString()
        {
            SkipSpace();
            char quote = Peek();
            if (quote is not ('\'' or '"')) throw Error("expected a quoted string");
            int end = text.IndexOf(quote, _pos + 1);
            if (end < 0) throw Error("unterminated string");
            string s = text[(_pos + 1)..end];
            _pos = end + 1;
            return s;
        }

        string ParseWord()
        {
            int start = _pos;
            while (_pos < text.Length && (char.IsLetterOrDigit(text[_pos]) || text[_pos] is '-' or '+' or '_')) _pos++;
            if (_pos == start) throw Error($"unexpected character '{Peek()}'");
            return text[start.._pos];
        }

        void Expect(char c)
        {
            SkipSpace();
            if (Peek() != c) throw Error($"expected '{c}'");
            _pos++;
        }

        char Peek() => _pos < text.Length ? text[_pos] : throw Error("header ends early");

        void SkipSpace()
        {
            while (_pos < text.Length && char.IsWhiteSpace(text[_pos])) _pos++;
        }

        SaeSharpException Error(string what) =>
            new($"{source}: malformed .npy header, {what} at character {_pos}: {text.Trim()}");
    }
}
