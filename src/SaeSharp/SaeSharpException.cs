namespace SaeSharp;

/// <summary>A user-facing error: bad input file, wrong shape, missing hook, NaN in training.
/// The message is one line naming the file, key or value and what was expected: line breaks and other control
/// characters (which a hostile file can smuggle into a quoted name or value) become spaces, and a message longer than
/// <see cref="MaxLength"/> characters is cut. <see cref="Lines"/> makes the one exception: a message of several lines (a
/// short list under its first line), each line cleaned the same way.</summary>
public class SaeSharpException : Exception
{
    /// <summary>The longest message kept; a quoted file fragment cannot make an error fill the terminal.</summary>
    public const int MaxLength = 2000;

    /// <summary>An error naming the problem (file, field, value).</summary>
    public SaeSharpException(string message) : base(OneLine(message)) { }
    /// <summary>An error naming the problem, wrapping the exception that revealed it.</summary>
    public SaeSharpException(string message, Exception inner) : base(OneLine(message), inner) { }

    private SaeSharpException(IEnumerable<string> lines, bool _) : base(string.Join("\n", lines.Select(OneLine))) { }

    /// <summary>An error of several lines, joined with <c>\n</c> (what was found, then a list of what was expected, so it
    /// reads at 80 columns); each line is cleaned as a one-line message is.</summary>
    public static SaeSharpException Lines(IEnumerable<string> lines) => new(lines, false);

    private static string OneLine(string message)
    {
        if (message.Length > MaxLength) message = message[..MaxLength] + "…";
        if (!message.Any(char.IsControl)) return message;
        var chars = message.Select(c => char.IsControl(c) ? ' ' : c).ToArray();
        return new string(chars);
    }
}
