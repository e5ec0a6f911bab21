using System.Text;
using System.Text.RegularExpressions;

namespace SaeSharp.Tokenizers;

/// <summary>One pre-tokenizer step of tokenizer.json, applied to the list of pieces in place.</summary>
internal abstract class PreTokenizerStep
{
    /// <param name="pieces">Pieces split so far, replaced in place.</param>
    /// <param name="atStart">The text being split begins the input (no added token before it).</param>
    public abstract void Apply(List<string> pieces, bool atStart);
}

/// <summary>tokenizer.json <c>ByteLevel</c>: optional prefix space, optional GPT-2 split.
/// (The byte mapping itself happens in BPE.)</summary>
internal sealed class ByteLevelStep(bool addPrefixSpace, bool useRegex) : PreTokenizerStep
{
    public override void Apply(List<string> pieces, bool atStart)
    {
        var output = new List<string>(pieces.Count * 4);
        foreach (var p in pieces)
        {
            string s = addPrefixSpace && p.Length > 0 && !p.StartsWith(' ') ? " " + p : p;
            if (useRegex) ByteLevel.SplitGpt2(s, output);
            else output.Add(s);
        }
        pieces.Clear();
        pieces.AddRange(output);
    }
}

/// <summary>How a <c>Split</c> pre-tokenizer treats its matches (tokenizer.json <c>behavior</c>).</summary>
internal enum SplitBehavior { Isolated, Removed, MergedWithPrevious, MergedWithNext }

/// <summary>tokenizer.json <c>Split</c>: matches kept as their own pieces (<c>Isolated</c>), dropped (<c>Removed</c>) or
/// joined to the piece before / after them. The regex runs on <see cref="RegexText"/>, so that <c>\p{L}</c> and
/// <c>\p{N}</c> see a character outside the BMP as one letter / number, as the Rust regex of Hugging Face does.</summary>
internal sealed class SplitStep(Regex pattern, SplitBehavior behavior) : PreTokenizerStep
{
    public override void Apply(List<string> pieces, bool atStart)
    {
        var output = new List<string>(pieces.Count * 4);
        foreach (var p in pieces)
        {
            var (mapped, starts) = RegexText.Map(p);
            int last = 0;
            string? pendingNext = null;
            void Emit(string s)
            {
                if (pendingNext is not null) { s = pendingNext + s; pendingNext = null; }
                if (s.Length > 0) output.Add(s);
            }
            foreach (Match m in pattern.Matches(mapped))
            {
                if (m.Length == 0) continue;
                int ms = starts[m.Index], me = starts[m.Index + m.Length];
                string gap = p.Substring(last, ms - last), match = p.Substring(ms, me - ms);
                switch (behavior)
                {
                    case SplitBehavior.Isolated: Emit(gap); Emit(match); break;
                    case SplitBehavior.Removed: Emit(gap); break;
                    case SplitBehavior.MergedWithPrevious: Emit(gap + match); break;
                    case SplitBehavior.MergedWithNext: Emit(gap); pendingNext = (pendingNext ?? "") + match; break;
                }
                last = me;
            }
            Emit(p.Substring(last));
            if (pendingNext is not null) output.Add(pendingNext);
        }
        pieces.Clear();
        pieces.AddRange(output);
    }
}

/// <summary>tokenizer.json <c>Metaspace</c> pre-tokenizer: spaces → <c>▁</c>, <c>▁</c> prepended (prepend_scheme
/// always, or first for the text that begins the input), then optionally split before each <c>▁</c>.</summary>
internal sealed class MetaspaceStep(string replacement, string prependScheme, bool split) : PreTokenizerStep
{
    public override void Apply(List<string> pieces, bool atStart)
    {
        var output = new List<string>(pieces.Count * 4);
        foreach (var p in pieces)
        {
            string s = p.Replace(" ", replacement, StringComparison.Ordinal);
            if ((prependScheme == "always" || (prependScheme == "first" && atStart)) && !s.StartsWith(replacement, StringComparison.Ordinal))
                s = replacement + s;
            if (!split) { if (s.Length > 0) output.Add(s); continue; }
            int start = 0;
            for (int i = 1; i <= s.Length; i++)
            {
                if (i < s.Length && string.CompareOrdinal(s, i, replacement, 0, replacement.Length) != 0) continue;
                if (i > start) output.Add(s[start..i]);
                start = i;
            }
        }
        pieces.Clear();
        pieces.AddRange(output);
    }
}

/// <summary>
/// .NET regexes see UTF-16 units, so a letter outside the BMP (𝐀) is two surrogates that <c>\p{L}</c> does not match.
/// <see cref="Map"/> replaces each such character with one BMP stand-in of the same class (letter, number, other) and
/// keeps where each stand-in came from.
/// </summary>
internal static class RegexText
{
    public static (string Mapped, int[] Starts) Map(string text)
    {
        bool astral = false;
        foreach (char c in text) if (char.IsSurrogate(c)) { astral = true; break; }
        if (!astral)
        {
            var identity = new int[text.Length + 1];
            for (int i = 0; i <= text.Length; i++) identity[i] = i;
            return (text, identity);
        }
        var sb = new StringBuilder(text.Length);
        var starts = new List<int>(text.Length + 1);
        int pos = 0;
        while (pos < text.Length)
        {
            starts.Add(pos);
            if (Rune.DecodeFromUtf16(text.AsSpan(pos), out Rune r, out int width) != System.Buffers.OperationStatus.Done)
            {
                sb.Append('\u00A4');
                pos += 1;
                continue;
            }
            if (width == 1) sb.Append(text[pos]);
            else sb.Append(Rune.IsLetter(r) ? '\u00AA' : Rune.IsNumber(r) ? '\u00B2' : '\u00A4'); // ª (Lo), ² (No), ¤ (Sc)
            pos += width;
        }
        starts.Add(text.Length);
        return (sb.ToString(), starts.ToArray());
    }
}
