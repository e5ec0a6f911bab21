using System.Text;
using System.Text.RegularExpressions;

namespace SaeSharp.Tokenizers;

/// <summary>One decoder of tokenizer.json applied to the list of token strings.</summary>
internal abstract class DecoderStep
{
    public abstract List<string> Apply(List<string> tokens);
}

/// <summary><c>Replace</c>: a literal string replaced in every token (▁ → space).</summary>
internal sealed class ReplaceDecoder(string pattern, string content) : DecoderStep
{
    public override List<string> Apply(List<string> tokens) => tokens.Select(t => t.Replace(pattern, content, StringComparison.Ordinal)).ToList();
}

/// <summary><c>ByteFallback</c>: runs of <c>&lt;0xXX&gt;</c> tokens become the text of their UTF-8 bytes (invalid bytes → U+FFFD).</summary>
internal sealed class ByteFallbackDecoder : DecoderStep
{
    public override List<string> Apply(List<string> tokens)
    {
        var output = new List<string>(tokens.Count);
        var bytes = new List<byte>();
        foreach (var t in tokens)
        {
            if (t.Length == 6 && t.StartsWith("<0x", StringComparison.Ordinal) && t[5] == '>'
                && byte.TryParse(t.AsSpan(3, 2), System.Globalization.NumberStyles.HexNumber, null, out byte b))
            {
                bytes.Add(b);
                continue;
            }
            if (bytes.Count > 0) { output.Add(Encoding.UTF8.GetString(bytes.ToArray())); bytes.Clear(); }
            output.Add(t);
        }
        if (bytes.Count > 0) output.Add(Encoding.UTF8.GetString(bytes.ToArray()));
        return output;
    }
}

/// <summary><c>Fuse</c>: all tokens joined into one.</summary>
internal sealed class FuseDecoder : DecoderStep
{
    public override List<string> Apply(List<string> tokens) => [string.Concat(tokens)];
}

/// <summary><c>Strip</c>: up to <c>start</c> leading and <c>stop</c> trailing <c>content</c> chars removed from each token.</summary>
internal sealed class StripDecoder(char content, int start, int stop) : DecoderStep
{
    public override List<string> Apply(List<string> tokens) => tokens.Select(t =>
    {
        int a = 0, e = t.Length;
        while (a < start && a < t.Length && t[a] == content) a++;
        for (int i = 0; i < stop && e > a && t[e - 1] == content; i++) e--;
        return t[a..e];
    }).ToList();
}

/// <summary><c>Metaspace</c> decoder: ▁ → space, and the first token's leading space dropped unless prepend_scheme is never.</summary>
internal sealed class MetaspaceDecoder(string replacement, bool stripFirst) : DecoderStep
{
    public override List<string> Apply(List<string> tokens) => tokens.Select((t, i) =>
    {
        var r = t.Replace(replacement, " ", StringComparison.Ordinal);
        return stripFirst && i == 0 && r.StartsWith(' ') ? r[1..] : r;
    }).ToList();
}
