using System.Text;
using System.Text.RegularExpressions;

namespace SaeSharp.Tests.Cli;

/// <summary>Every <c>./sae ...</c> command line of the README, BENCHMARKS.md and docs/*.md (code blocks, with their <c>\</c>
/// continuations, and inline code) parses: each command and option it names exists and takes the value given. In a
/// doc's code block <c>sae ...</c> counts as well. Inline fragments such as <c>`sae train --arch NAME`</c> (README and docs)
/// name placeholders rather than values, so of those only the commands and options must exist. A renamed or removed flag left
/// in an example fails here rather than for the newcomer who copies it.</summary>
public sealed class ReadmeCommandLineTests
{
    /// <summary>README.md, BENCHMARKS.md and every docs/*.md, as copied next to the test binaries (paths relative to <c>readme/</c>).</summary>
    public static TheoryData<string> Documents()
    {
        var data = new TheoryData<string> { "README.md", "BENCHMARKS.md" };
        foreach (string doc in Directory.GetFiles(Path.Combine(AppContext.BaseDirectory, "readme", "docs"), "*.md").Order(StringComparer.Ordinal))
            data.Add("docs/" + Path.GetFileName(doc));
        return data;
    }

    [Fact]
    public void Every_doc_of_the_repository_is_checked()
    {
        string docs = Path.Combine(AppContext.BaseDirectory, "readme", "docs");
        Assert.True(Directory.Exists(docs), $"{docs} missing: the .csproj copies docs/*.md there");
        Assert.True(Directory.GetFiles(docs, "*.md").Length >= 10, "docs/*.md not copied next to the test binaries");
    }

    [Theory]
    [MemberData(nameof(Documents))]
    public void Every_command_line_parses(string document)
    {
        string markdown = File.ReadAllText(Path.Combine(AppContext.BaseDirectory, "readme", document));
        bool readme = document == "README.md";
        var lines = CommandLines(markdown, bareSaeInBlocks: !readme);
        if (readme) Assert.True(lines.Count >= 30, $"only {lines.Count} command lines found");
        var bad = lines.Select(l => (Line: l, Parse: SaeSharp.Cli.Cli.Build().Parse(ShellWords(l))))
            .Where(p => p.Parse.Errors.Count > 0)
            .Select(p => $"{p.Line}\n    {SaeSharp.Cli.Cli.ParseErrorLine(p.Parse)}").ToList();
        bad.AddRange(InlineFragments(markdown).Select(l => (Line: l, Unknown: UnknownNames(l)))
            .Where(p => p.Unknown.Count > 0)
            .Select(p => $"`sae {p.Line}`\n    not a command or option: {string.Join(", ", p.Unknown)}"));
        Assert.True(bad.Count == 0, string.Join("\n", bad));
    }

    // The built-in model's block is the one a newcomer runs top to bottom with nothing of their own: every SAE and dataset
    // it reads is written by a line above it (its sweep line read runs/builtin-sae-k32, which no line trained).
    [Fact]
    public void The_builtin_model_block_runs_top_to_bottom_on_what_it_writes()
    {
        string markdown = File.ReadAllText(Path.Combine(AppContext.BaseDirectory, "readme", "README.md"));
        int start = markdown.IndexOf("### The built-in model, its labelled corpus, and label scores", StringComparison.Ordinal);
        Assert.True(start >= 0, "section not found");
        int end = markdown.IndexOf("\n#", start + 4, StringComparison.Ordinal);
        var written = new HashSet<string>(StringComparer.Ordinal);
        var lines = CommandLines(markdown[start..end], bareSaeInBlocks: false);
        Assert.True(lines.Count >= 5, $"only {lines.Count} command lines");
        foreach (string line in lines)
        {
            string[] words = ShellWords(line);
            for (int i = 0; i + 1 < words.Length; i++)
                if (words[i] is "--sae" or "--dataset" or "--corpus")
                    Assert.True(written.Contains(words[i + 1]), $"{words[i]} {words[i + 1]} in `./sae {line}` is written by no line above it");
            for (int i = 0; i + 1 < words.Length; i++)
                if (words[i] == "--out") written.Add(words[i + 1]);
        }
    }

    [Fact]
    public void The_extraction_joins_continuations_and_drops_comments_and_the_shell_around_the_command()
    {
        const string md = "```sh\n./sae train --k 4 \\\n    --out runs/x   # a comment\n./sae releases | cut -f1\nls\nsae info x\n```\n" +
                          "Inline: `./sae info runs/x` and `./sae model run --prompt \"a # b\"`, `sae train --arch NAME`'s.\n";
        Assert.Equal(["train --k 4 --out runs/x", "releases", "info runs/x", "model run --prompt \"a # b\""], CommandLines(md, bareSaeInBlocks: false));
        Assert.Equal(["train --k 4 --out runs/x", "releases", "info x", "info runs/x", "model run --prompt \"a # b\""], CommandLines(md, bareSaeInBlocks: true));
        Assert.Equal(["train --arch NAME"], InlineFragments(md));
        Assert.Equal(["graph --out g.json --max-features 256 --no-lazy"], CommandLines("`./sae graph --out g.json [--max-features 256] [--no-lazy | --lazy]`", bareSaeInBlocks: false));
        Assert.Equal(["model", "run", "--prompt", "a # b", "--x", "it's"], ShellWords("model run --prompt \"a # b\" --x 'it'\\''s'"));
    }

    [Fact]
    public void A_fragment_naming_an_unknown_option_or_command_is_caught_and_placeholders_are_not()
    {
        Assert.Empty(UnknownNames("train --candidate-pass auto|on|off"));
        Assert.Empty(UnknownNames("synth --from"));
        Assert.Empty(UnknownNames("train --model --tokens N"));                        // options named without values
        Assert.Empty(UnknownNames("features --sae CC --model M [--html SITE]"));       // [optional] parts
        Assert.Empty(UnknownNames("eval --json/--histogram"));                          // alternative options
        Assert.Empty(UnknownNames("model run / generate / tokenize / info"));           // alternative subcommands
        Assert.Empty(UnknownNames("train ... &"));
        Assert.Empty(UnknownNames("…"));
        Assert.Equal(["--no-such-flag"], UnknownNames("train --no-such-flag 3"));
        Assert.Equal(["--nope"], UnknownNames("eval --json/--nope"));
        Assert.Equal(["no-such-command"], UnknownNames("no-such-command --k 3"));
        Assert.Equal(["model nope"], UnknownNames("model run / nope"));
    }

    /// <summary>The commands and options an inline fragment names that the CLI does not have. The fragment names
    /// placeholders (<c>N</c>, <c>...</c>), optional parts in brackets, alternatives (<c>--json/--histogram</c>,
    /// <c>model run / generate</c>): every word starting with <c>--</c> must be an option of the command the leading words
    /// name, and every alternative after <c> / </c> a sibling subcommand.</summary>
    private static List<string> UnknownNames(string fragment)
    {
        var root = SaeSharp.Cli.Cli.Build();
        var unknown = new List<string>();
        string[] alternatives = fragment.Split(" / ");
        var words = ShellWords(alternatives[0].Replace("[", " ").Replace("]", " "));
        System.CommandLine.Command command = root, parent = root;
        int i = 0;
        for (; i < words.Length && !words[i].StartsWith('-'); i++)
        {
            if (words[i] is "..." or "…") break;
            if (command.Subcommands.FirstOrDefault(c => c.Name == words[i] || c.Aliases.Contains(words[i])) is { } sub) { parent = command; command = sub; }
            else
            {
                if (command == root) return [words[i]];   // its options cannot be checked
                break;
            }
        }
        foreach (string alternative in alternatives.Skip(1).Select(a => a.Trim()))
            if (!parent.Subcommands.Any(c => c.Name == alternative))
                unknown.Add(string.Join(" ", CommandPath(parent, root).Append(alternative)));
        var options = new HashSet<string>(StringComparer.Ordinal) { "--help", "-h" };
        for (var c = command; c is not null; c = c.Parents.OfType<System.CommandLine.Command>().FirstOrDefault())
            foreach (var o in c.Options.Where(o => c == command || o.Recursive))
            {
                options.Add(o.Name);
                foreach (string a in o.Aliases) options.Add(a);
            }
        foreach (string word in words.Skip(i).Where(w => w.StartsWith("--", StringComparison.Ordinal)))
            foreach (string name in word.Split('/').Select(n => n.Split('=')[0]))
                if (!options.Contains(name)) unknown.Add(name);
        return unknown;
    }

    private static IEnumerable<string> CommandPath(System.CommandLine.Command command, System.CommandLine.Command root)
    {
        var names = new List<string>();
        for (var c = command; c is not null && c != root; c = c.Parents.OfType<System.CommandLine.Command>().FirstOrDefault()) names.Insert(0, c.Name);
        return names;
    }

    /// <summary>The arguments after <c>sae </c> of each inline code span of <paramref name="markdown"/> that starts with
    /// <c>sae </c> (not <c>./sae </c>: those are whole command lines), outside code blocks.</summary>
    private static List<string> InlineFragments(string markdown)
    {
        var found = new List<string>();
        bool fenced = false;
        foreach (string raw in markdown.Split('\n'))
        {
            string line = raw.TrimEnd('\r');
            if (line.TrimStart().StartsWith("```", StringComparison.Ordinal)) { fenced = !fenced; continue; }
            if (fenced) continue;
            foreach (Match m in Regex.Matches(line, @"`sae ([^`]+)`")) found.Add(Arguments("./sae " + m.Groups[1].Value));
        }
        return found;
    }

    /// <summary>The arguments after <c>./sae</c> of each command line in <paramref name="markdown"/>: fenced blocks' lines
    /// (continuations joined, a trailing <c># comment</c> and anything after a pipe or <c>&amp;&amp;</c> dropped; with
    /// <paramref name="bareSaeInBlocks"/> also those starting <c>sae </c>) and inline code spans that start with
    /// <c>./sae </c>.</summary>
    private static List<string> CommandLines(string markdown, bool bareSaeInBlocks)
    {
        var found = new List<string>();
        foreach (var (line, fenced) in LogicalLines(markdown))
        {
            if (fenced)
            {
                string command = line.TrimStart();
                if (command.StartsWith("./sae ", StringComparison.Ordinal)) found.Add(Arguments(command));
                else if (bareSaeInBlocks && command.StartsWith("sae ", StringComparison.Ordinal)) found.Add(Arguments("./" + command));
                continue;
            }
            foreach (Match m in Regex.Matches(line, @"`\./sae ([^`]+)`")) found.Add(Arguments("./sae " + m.Groups[1].Value));
        }
        return found;
    }

    /// <summary>The lines of <paramref name="markdown"/> outside fenced blocks as they are, and those inside as the shell
    /// reads them: <c>\</c> continuations joined, a trailing <c># comment</c> dropped.</summary>
    internal static IEnumerable<(string Line, bool Fenced)> LogicalLines(string markdown)
    {
        bool fenced = false;
        var pending = new StringBuilder();
        foreach (string raw in markdown.Split('\n'))
        {
            string line = raw.TrimEnd('\r');
            if (line.TrimStart().StartsWith("```", StringComparison.Ordinal)) { fenced = !fenced; pending.Clear(); continue; }
            if (!fenced)
            {
                yield return (line, false);
                continue;
            }
            string part = StripComment(line).TrimEnd();
            bool continues = part.EndsWith('\\');
            pending.Append(continues ? part[..^1] : part).Append(' ');
            if (continues) continue;
            yield return (pending.ToString(), true);
            pending.Clear();
        }
    }

    private static string Arguments(string command) => CommandOnly(command.Trim()["./sae".Length..]);

    /// <summary>The arguments of a shell command line without what follows a pipe, <c>&amp;&amp;</c>, <c>;</c> or a
    /// redirection, optional parts given (<see cref="OptionalPartsGiven"/>), white space collapsed.</summary>
    internal static string CommandOnly(string arguments)
    {
        string s = OptionalPartsGiven(arguments);
        foreach (string stop in new[] { " | ", " && ", " ; ", " > ", " 2>" })
            if (s.IndexOf(stop, StringComparison.Ordinal) is int i and >= 0) s = s[..i];
        return Regex.Replace(s.Trim(), @"\s+", " ");
    }

    /// <summary><paramref name="line"/> with each optional part written <c>[--x V]</c> given as <c>--x V</c>, and of
    /// alternatives <c>[--lazy | --no-lazy]</c> the first.</summary>
    internal static string OptionalPartsGiven(string line) => Regex.Replace(line, @"\[(--[^\]|]*?)\s*(?:\|[^\]]*)?\]", "$1");

    /// <summary>The line without a <c>#</c> comment outside quotes.</summary>
    internal static string StripComment(string line)
    {
        char quote = '\0';
        for (int i = 0; i < line.Length; i++)
        {
            char c = line[i];
            if (quote != '\0') { if (c == quote) quote = '\0'; }
            else if (c is '"' or '\'') quote = c;
            else if (c == '#' && (i == 0 || char.IsWhiteSpace(line[i - 1]))) return line[..i];
        }
        return line;
    }

    /// <summary>POSIX shell word splitting for the quoting the README uses: single quotes, double quotes, backslash.</summary>
    internal static string[] ShellWords(string line)
    {
        var words = new List<string>();
        var word = new StringBuilder();
        bool inWord = false;
        char quote = '\0';
        for (int i = 0; i < line.Length; i++)
        {
            char c = line[i];
            if (quote == '\'') { if (c == '\'') quote = '\0'; else word.Append(c); continue; }
            if (quote == '"')
            {
                if (c == '"') quote = '\0';
                else if (c == '\\' && i + 1 < line.Length && line[i + 1] is '"' or '\\' or '$' or '`') word.Append(line[++i]);
                else word.Append(c);
                continue;
            }
            if (char.IsWhiteSpace(c))
            {
                if (inWord) { words.Add(word.ToString()); word.Clear(); inWord = false; }
                continue;
            }
            inWord = true;
            if (c is '\'' or '"') quote = c;
            else if (c == '\\' && i + 1 < line.Length) word.Append(line[++i]);
            else word.Append(c);
        }
        if (inWord) words.Add(word.ToString());
        return [.. words];
    }
}
