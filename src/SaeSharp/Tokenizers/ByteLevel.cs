using System.Globalization;
using System.Text;

namespace SaeSharp.Tokenizers;

/// <summary>GPT-2's byte-to-unicode table and its pre-tokenizer split, shared by every byte-level BPE.</summary>
internal static class ByteLevel
{
    /// <summary>Byte value -> the printable char GPT-2 uses for it in vocab.json (bytes_to_unicode).</summary>
    public static readonly char[] ByteToChar = BuildByteToChar();

    /// <summary>Printable char -> byte value; -1 for chars that are not in the table.</summary>
    public static readonly short[] CharToByte = BuildCharToByte();

    private static char[] BuildByteToChar()
    {
        var map = new char[256];
        var assigned = new bool[256];
        for (int b = '!'; b <= '~'; b++) { map[b] = (char)b; assigned[b] = true; }
        for (int b = 0xA1; b <= 0xAC; b++) { map[b] = (char)b; assigned[b] = true; }
        for (int b = 0xAE; b <= 0xFF; b++) { map[b] = (char)b; assigned[b] = true; }
        int n = 0;
        for (int b = 0; b < 256; b++)
        {
            if (assigned[b]) continue;
            map[b] = (char)(256 + n);
            n++;
        }
        return map;
    }

    private static short[] BuildCharToByte()
    {
        var inv = new short[512];
        Array.Fill(inv, (short)-1);
        for (int b = 0; b < 256; b++) inv[ByteToChar[b]] = (short)b;
        return inv;
    }

    /// <summary>Maps the UTF-8 bytes of <paramref name="text"/> to GPT-2's printable chars.</summary>
    public static string MapUtf8(string text)
    {
        byte[] bytes = Encoding.UTF8.GetBytes(text);
        return string.Create(bytes.Length, bytes, static (span, b) =>
        {
            for (int i = 0; i < b.Length; i++) span[i] = ByteToChar[b[i]];
        });
    }

    /// <summary>Appends the bytes a vocabulary token stands for. A token with a char outside the table
    /// (an added token such as a run of plain spaces) contributes its own UTF-8 bytes, as HF's decoder does.</summary>
    public static void AppendTokenBytes(string token, List<byte> output)
    {
        foreach (char c in token)
        {
            if (c >= CharToByte.Length || CharToByte[c] < 0)
            {
                output.AddRange(Encoding.UTF8.GetBytes(token));
                return;
            }
        }
        foreach (char c in token) output.Add((byte)CharToByte[c]);
    }

    private enum Kind { Letter, Number, Space, Other }

    private static Kind Classify(string s, int i, out int width)
    {
        if (Rune.DecodeFromUtf16(s.AsSpan(i), out Rune r, out width) != System.Buffers.OperationStatus.Done)
        {
            width = 1;
            return Kind.Other; // unpaired surrogate
        }
        if (Rune.IsWhiteSpace(r)) return Kind.Space;
        if (Rune.IsLetter(r)) return Kind.Letter;
        if (Rune.IsNumber(r)) return Kind.Number;
        return Kind.Other;
    }

    /// <summary>
    /// Splits text exactly as GPT-2's pattern
    /// <c>'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+</c>
    /// does, on Unicode code points (so astral letters and emoji are classified correctly).
    /// </summary>
    public static void SplitGpt2(string text, List<string> output)
    {
        int i = 0, n = text.Length;
        while (i < n)
        {
            int end = MatchAt(text, i);
            output.Add(text.Substring(i, end - i));
            i = end;
        }
    }

    private static int MatchAt(string s, int i)
    {
        int n = s.Length;
        // 1. contractions (case-sensitive, in the pattern's order)
        if (s[i] == '\'' && i + 1 < n)
        {
            char c1 = s[i + 1];
            if (c1 is 's' or 't' or 'm' or 'd') return i + 2;
            if (i + 2 < n)
            {
                char c2 = s[i + 2];
                if ((c1 == 'r' && c2 == 'e') || (c1 == 'v' && c2 == 'e') || (c1 == 'l' && c2 == 'l')) return i + 3;
            }
        }
        // 2-4. optional single space, then a run of one class
        int start = i;
        if (s[i] == ' ' && i + 1 < n)
        {
            Kind next = Classify(s, i + 1, out _);
            if (next != Kind.Space) start = i + 1;
        }
        Kind k = Classify(s, start, out int w);
        if (k != Kind.Space)
        {
            int j = start + w;
            while (j < n)
            {
                Kind kj = Classify(s, j, out int wj);
                if (kj != k) break;
                j += wj;
            }
            return j;
        }
        // 5. \s+(?!\S)  6. \s+
        int e = i;
        int lastWidth = 0;
        while (e < n)
        {
            Kind ke = Classify(s, e, out int we);
            if (ke != Kind.Space) break;
            lastWidth = we;
            e += we;
        }
        if (e == n) return e;             // run reaches the end: no \S follows
        int shortened = e - lastWidth;    // give back the last space so that no \S follows
        return shortened > i ? shortened : e;
    }

    /// <summary>The <c>normalizer</c> of tokenizer.json applied in order; identity when empty.</summary>
    public static string Normalize(string text, IReadOnlyList<NormalizationStep> steps)
    {
        foreach (var step in steps)
        {
            text = step.Kind switch
            {
                "NFC" => text.Normalize(NormalizationForm.FormC),
                "NFD" => text.Normalize(NormalizationForm.FormD),
                "NFKC" => text.Normalize(NormalizationForm.FormKC),
                "NFKD" => text.Normalize(NormalizationForm.FormKD),
                "Lowercase" => text.ToLower(CultureInfo.InvariantCulture),
                // HF Prepend leaves an empty string empty.
                "Prepend" => text.Length == 0 ? text : step.A + text,
                "Replace" => text.Replace(step.A, step.B, StringComparison.Ordinal),
                _ => text,
            };
        }
        return text;
    }
}

/// <summary>One step of a tokenizer.json normalizer: NFC, NFD, NFKC, NFKD, Lowercase, Prepend (A), Replace (A → B).</summary>
internal sealed record NormalizationStep(string Kind, string A = "", string B = "")
{
    public static readonly NormalizationStep Nfc = new("NFC"), Nfd = new("NFD"), Nfkc = new("NFKC"), Nfkd = new("NFKD"),
        Lowercase = new("Lowercase");
}
