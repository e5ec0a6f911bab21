using System.Text.RegularExpressions;
using SaeSharp.Bench;

namespace SaeSharp.Tests.Cli;

/// <summary>Every bench command line recorded in BENCHMARKS.md, README.md and docs/*.md (<c>dotnet run --project
/// bench/SaeSharp.Bench -- CMD ...</c>, <c>dotnet bench/.../SaeSharp.Bench.dll CMD ...</c>, <c>.../SaeSharp.Bench CMD</c>
/// and <c>dotnet $B CMD</c>, in code blocks with their <c>\</c> continuations and in inline code; in inline code also
/// <c>bench CMD ...</c> and <c>CMD --...</c> for a sub-command the sae CLI does not have) names a bench sub-command
/// and only options that sub-command takes, checked by the bench's own parser and option table
/// (bench/SaeSharp.Bench/BenchCommands.cs). Optional parts written <c>[--autocast]</c> are checked as if given. A figure
/// whose recorded command no longer parses cannot be re-run as recorded.</summary>
public sealed class BenchCommandLineTests
{
    private static readonly Regex Invocation = new(
        @"(?:--project bench/SaeSharp\.Bench --|SaeSharp\.Bench(?:\.dll)?|\$B)\s+(?<command>[a-z][a-z0-9-]*(?:\s[^`]*)?)", RegexOptions.CultureInvariant);

    public static TheoryData<string> Documents() => ReadmeCommandLineTests.Documents();

    [Theory]
    [MemberData(nameof(Documents))]
    public void Every_bench_command_line_parses(string document)
    {
        string markdown = File.ReadAllText(Path.Combine(AppContext.BaseDirectory, "readme", document));
        var lines = CommandLines(markdown);
        if (document == "BENCHMARKS.md") Assert.True(lines.Count >= 50, $"only {lines.Count} bench command lines found");
        var bad = lines.Select(l => (Line: l, Error: ParseError(l))).Where(p => p.Error is not null)
            .Select(p => $"{p.Line}\n    {p.Error}").ToList();
        Assert.True(bad.Count == 0, string.Join("\n", bad));
    }

    [Fact]
    public void Every_sub_command_of_the_table_is_dispatched_and_in_the_usage_line()
    {
        string program = File.ReadAllText(Path.Combine(LibraryLayeringTests.RepositoryRoot(), "bench", "SaeSharp.Bench", "Program.cs"));
        var cases = Regex.Matches(program, @"case ""([a-z0-9-]+)"":").Select(m => m.Groups[1].Value).Order(StringComparer.Ordinal).ToList();
        Assert.Equal(BenchCommands.Options.Keys.Order(StringComparer.Ordinal), cases);
        string usage = program[program.IndexOf("usage: ", StringComparison.Ordinal)..];
        Assert.All(BenchCommands.Options.Keys, c => Assert.Contains($"bench {c}", usage, StringComparison.Ordinal));
    }

    [Fact]
    public void The_extraction_finds_each_invocation_form_and_drops_the_shell_around_it()
    {
        const string md = "```sh\nB=bench/SaeSharp.Bench/bin/Release/net10.0/SaeSharp.Bench.dll\n" +
                          "nice -n 5 dotnet $B train --arch topk \\\n   --steps 3   # a comment\n" +
                          "dotnet run -c Release --project bench/SaeSharp.Bench -- harvest | tail -3\n" +
                          "bench/SaeSharp.Bench/bin/Release/net10.0/SaeSharp.Bench probe [--dense]\n```\n" +
                          "Command: `dotnet bench/SaeSharp.Bench/bin/Release/net10.0/SaeSharp.Bench.dll sparse --repeats 9` (then).\n" +
                          "`bench fork-join`, `relu-run --crossover [--densities 0.1]`, `relu-run --write d ...`; `train --k 4` may be sae's, `probe` a word.\n";
        Assert.Equal(["train --arch topk --steps 3", "harvest", "probe --dense", "sparse --repeats 9", "fork-join", "relu-run --crossover --densities 0.1", "relu-run --write d"],
            CommandLines(md));
    }

    [Fact]
    public void An_unknown_command_or_option_is_caught_and_alternatives_and_optional_parts_are_not()
    {
        Assert.Null(ParseError("train --arch topk --steps 3 --candidate-pass on|off"));
        Assert.Null(ParseError("relu-run --activations a.npy --arch topk --k 32 --crossover"));
        Assert.Null(ParseError("machine"));
        Assert.Equal("unknown option --no-such-flag", ParseError("train --no-such-flag 3"));
        Assert.Equal("unknown option --rounds", ParseError("harvest --rounds 3"));
        Assert.Equal("unknown command no-such-bench", ParseError("no-such-bench --steps 3"));
        Assert.Equal("--steps needs a value", ParseError("train --steps"));
    }

    /// <summary>What the bench would say of <paramref name="line"/> (its sub-command and arguments), or null if it parses.</summary>
    private static string? ParseError(string line)
    {
        string[] words = ReadmeCommandLineTests.ShellWords(line);
        try
        {
            BenchArgs.For(words[0], words[1..]);
            return null;
        }
        catch (BenchUsageException e)
        {
            return e.Message;
        }
    }

    /// <summary>The sub-command and arguments of each bench invocation in <paramref name="markdown"/>: in fenced blocks
    /// (continuations joined, a trailing <c># comment</c> and anything after a pipe, <c>&amp;&amp;</c>, <c>;</c> or a
    /// redirection dropped) and in inline code spans, optional parts given.</summary>
    private static List<string> CommandLines(string markdown)
    {
        var found = new List<string>();
        foreach (var (line, fenced) in ReadmeCommandLineTests.LogicalLines(markdown))
            foreach (string code in fenced ? [line] : Regex.Matches(line, "`([^`]+)`").Select(m => m.Groups[1].Value))
            {
                if (Invocation.Match(code) is { Success: true } m) found.Add(ReadmeCommandLineTests.CommandOnly(m.Groups["command"].Value));
                else if (!fenced && BenchFragment(code) is { } fragment) found.Add(ReadmeCommandLineTests.CommandOnly(fragment));
            }
        return found;
    }

    /// <summary>An inline span that names a bench sub-command without the invocation before it: <c>bench relu-run ...</c>,
    /// or <c>relu-run --crossover</c> where the sae CLI has no command of that name (<c>train ...</c> alone may be either);
    /// an elided part (<c>...</c>) is left out.</summary>
    private static string? BenchFragment(string code)
    {
        bool bench = code.StartsWith("bench ", StringComparison.Ordinal);
        string rest = bench ? code["bench ".Length..] : code;
        string command = rest.Split(' ')[0];
        if (!BenchCommands.Options.ContainsKey(command)) return null;
        if (!bench && (!rest.Contains(" --", StringComparison.Ordinal) || SaeCommands.Contains(command))) return null;
        return rest.Replace(" ...", "", StringComparison.Ordinal).Replace(" …", "", StringComparison.Ordinal);   // elided parts
    }

    private static readonly HashSet<string> SaeCommands = [.. SaeSharp.Cli.Cli.Build().Subcommands.Select(c => c.Name)];
}
