namespace SaeSharp;

/// <summary>A user-facing error: bad input file, wrong shape, missing hook, NaN in training.
/// The message is one line naming the file, key or value and what was expected.</summary>
public class SaeSharpException : Exception
{
    public SaeSharpException(string message) : base(message) { }
    public SaeSharpException(string message, Exception inner) : base(message, inner) { }
}
