namespace SaeSharp.Bench;

/// <summary>The benches' command-line options: <c>--name value</c> pairs and bare <c>--flag</c>s, each checked against
/// the names the bench knows.</summary>
internal sealed class BenchArgs
{
    private readonly Dictionary<string, string?> _values = new(StringComparer.Ordinal);

    /// <summary>The arguments after the sub-command's name, checked against its row of <see cref="BenchCommands.Options"/>.</summary>
    public static BenchArgs For(string command, string[] args) =>
        BenchCommands.Options.TryGetValue(command, out var options)
            ? new BenchArgs(args, options.Values, options.Flags)
            : throw new BenchUsageException($"unknown command {command}");

    private BenchArgs(string[] args, IEnumerable<string> valueOptions, IEnumerable<string>? flags = null)
    {
        var takesValue = valueOptions.ToHashSet(StringComparer.Ordinal);
        var isFlag = (flags ?? []).ToHashSet(StringComparer.Ordinal);
        for (int i = 0; i < args.Length; i++)
        {
            if (isFlag.Contains(args[i])) _values[args[i]] = null;
            else if (takesValue.Contains(args[i]))
                _values[args[i]] = i + 1 < args.Length ? args[++i] : throw new BenchUsageException($"{args[i]} needs a value");
            else throw new BenchUsageException($"unknown option {args[i]}");
        }
    }

    public int Int(string name, int fallback) => _values.TryGetValue(name, out var v) && v is not null ? int.Parse(v) : fallback;

    public string Value(string name, string fallback) => _values.TryGetValue(name, out var v) && v is not null ? v : fallback;

    public bool Flag(string name) => _values.ContainsKey(name);

    public List<string> List(string name, IEnumerable<string> fallback) =>
        _values.TryGetValue(name, out var v) && v is not null ? v.Split(',', StringSplitOptions.RemoveEmptyEntries).ToList() : fallback.ToList();
}

/// <summary>A bench invoked with options it does not take: Program prints the message, not a stack trace.</summary>
internal sealed class BenchUsageException(string message) : Exception(message);
