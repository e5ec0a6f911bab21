namespace SaeSharp;

/// <summary>A user-facing error: bad input file, wrong shape, missing hook, NaN in training.
/// The message is one line naming the file, key or value and what was expected: line breaks and other control
/// characters (which a hostile file can smuggle into a quoted name or value) become spaces, and a message longer than
/// <see cref="MaxLength"/> characters is cut.</summary>
public class SaeSharpException : Exception
{
    /// <summary>The longest message kept; a quoted file fragment cannot make an error fill the terminal.</summary>
    public const int MaxLength = 2000;

    /// <summary>An error naming the problem (file, field, value).</summary>
    public SaeSharpException(string message) : base(OneLine(message)) { }
    /// <summary>An error naming the problem, wrapping the exception that revealed it.</summary>
    public SaeSharpException(string message, Exception inner) : base(OneLine(message), inner) { }

    private static string OneLine(string message)
    {
        if (message.Length > MaxLength) message = message[..MaxLength] + "…";
        if (!message.Any(char.IsControl)) return message;
        var chars = message.Select(c => char.IsControl(c) ? ' ' : c).ToArray();
        return new string(chars);
    }
}
