using System.CommandLine;
using System.CommandLine.Parsing;
using System.Globalization;
using System.Numerics;
using SaeSharp.Cli.Commands;
using Spectre.Console;

namespace SaeSharp.Cli;

/// <summary>The <c>sae</c> command line: a thin layer over the SaeSharp library.</summary>
internal static partial class Cli
{
    public static readonly Option<bool> Verbose = new("--verbose") { Description = "Print the CPU kernel path chosen, and stack traces of errors", Recursive = true };

    public static RootCommand Build()
    {
        var root = new RootCommand("SaeSharp: sparse autoencoders on neural-network activations");
        root.Options.Add(Verbose);
        foreach (var command in new[]
                 {
                     InfoCommand.Create(),
                     ModelCommands.Create(),
                     InterventionCommands.Steer(),
                     InterventionCommands.Ablate(),
                     InterventionCommands.Attribute(),
                     InterventionCommands.Graph(),
                     CltInterveneCommand.Create(),
                     TrainCommand.Create(),
                     PlotLogCommand.Create(),
                     SaeCommands.Eval(),
                     SaeCommands.Encode(),
                     SaeCommands.Synth(),
                     ConvertCommand.Create(),
                     CacheCommand.Create(),
                     PretokenizeCommand.Create(),
                     AnalysisCommands.Features(),
                     AnalysisCommands.Dashboard(),
                     AnalysisCommands.Neuronpedia(),
                     AnalysisCommands.Inspect(),
                     LogitStatsCommand.Create(),
                     DemoCommand.Create(),
                     CorpusCommand.Create(),
                     LmCommand.Create(),
                     ScoreLabelsCommand.Create(),
                     ProbeCommand.Create(),
                     ReleasesCommand.Create(),
                 })
            root.Subcommands.Add(command);
        ModelSource.AddRevisionOptions(root);
        return root;
    }

    public static int Run(string[] args)
    {
        // Numbers on the terminal and in the files the commands write read the same on every machine ("0.5", never "0,5").
        CultureInfo.DefaultThreadCurrentCulture = CultureInfo.CurrentCulture = CultureInfo.InvariantCulture;
        // In a pipe or file a line stays one line (Spectre would wrap markup at 80 columns), for grep and cut.
        if (Console.IsOutputRedirected) AnsiConsole.Profile.Width = PipeWidth;
        // A dataset made for other settings (a pretokenized dataset's sae_lens.json): one line on stderr, once.
        var warned = new HashSet<string>(StringComparer.Ordinal);
        var previous = Data.DatasetWarnings.Handler;
        Data.DatasetWarnings.Handler = w => { if (warned.Add(w)) CliProgress.Warn($"warning: {w}"); };
        try
        {
            var parse = Build().Parse(args);
            if (parse.Errors.Count > 0 && (parse.CommandResult.Command.Subcommands.Count == 0 || parse.UnmatchedTokens.Count > 0))
            {
                ErrorLine($"error: {ParseErrorLine(parse)}");
                return 1;
            }
            return parse.Invoke();
        }
        finally { Data.DatasetWarnings.Handler = previous; }
    }

    /// <summary>A line for the user on stderr (an error, a warning, a note). On a terminal it is wrapped at the terminal's
    /// width between words, continuation lines indented by two spaces (the terminal would break words); into a pipe or
    /// file it stays one line, for grep. A message of several lines (a list under its first line) is wrapped line by
    /// line, a continuation indented two spaces past its line's own indent.</summary>
    public static void ErrorLine(string line)
    {
        int width = 0;
        if (!Console.IsErrorRedirected)
            try { width = Console.WindowWidth; } catch (IOException) { /* no terminal size: leave the line as it is */ }
        Console.Error.WriteLine(width > 0
            ? string.Join(Environment.NewLine, line.Split('\n').Select(l => Wrap(l, width, " ", new string(' ', l.Length - l.TrimStart(' ').Length + 2))))
            : line);
    }

    /// <summary>A line of <c>name value</c> items separated by two spaces on stdout (<c>  mse 0.70  fvu 0.24  l0 16.0</c>):
    /// on a terminal wrapped between items, never inside one, continuation lines indented by <paramref name="indent"/>;
    /// in a pipe one line.</summary>
    public static void ItemsLine(string line, string indent = "    ") => WrappedLine(line, "  ", indent);

    /// <summary>A sentence on stdout (<c>metrics on 16,384 held-out tokens: ...</c>): on a terminal wrapped between words,
    /// never inside one (a long path stays whole on a line of its own), continuation lines indented by
    /// <paramref name="indent"/>; in a pipe one line.</summary>
    public static void TextLine(string line, string indent = "  ") => WrappedLine(line, " ", indent);

    private static void WrappedLine(string line, string separator, string indent)
    {
        int width = 0;
        if (!Console.IsOutputRedirected)
            try { width = Console.WindowWidth; } catch (IOException) { /* no terminal size: leave the line as it is */ }
        Console.WriteLine(width > 0 ? Wrap(line, width, separator, indent) : line);
    }

    /// <summary><paramref name="line"/> broken between words (the parts between <paramref name="separator"/>s) into lines of
    /// at most <paramref name="width"/> characters, each after the first indented by <paramref name="indent"/>; a word
    /// longer than a line stays whole on a line of its own.</summary>
    internal static string Wrap(string line, int width, string separator = " ", string indent = "  ")
    {
        if (line.Length <= width || width <= indent.Length + 10) return line;
        var lines = new List<string>();
        var current = new System.Text.StringBuilder();
        bool empty = true;                                                  // no word on the current line yet
        string lead = line[..(line.Length - line.TrimStart(' ').Length)];
        foreach (string word in line[lead.Length..].Split(separator))
        {
            if (!empty && current.Length + separator.Length + word.Length > width)
            {
                lines.Add(current.ToString());
                current.Clear().Append(indent);
                empty = true;
            }
            if (empty && lines.Count == 0) current.Append(lead);
            if (!empty) current.Append(separator);
            current.Append(word);
            empty = false;
        }
        lines.Add(current.ToString());
        return string.Join(Environment.NewLine, lines);
    }

    /// <summary>A command line the parser refused, as one line: each unknown option with the nearest option of the
    /// command (<c>--featurs: not an option of sae dashboard (did you mean '--features'?)</c>), a value that is not a
    /// number named with its option, the other errors as the parser words them; then where the options are listed. An
    /// unknown command is named with the nearest command; a command group given no command (<c>sae</c>, <c>sae model</c>)
    /// shows the parser's help instead.</summary>
    internal static string ParseErrorLine(ParseResult parse)
    {
        var command = parse.CommandResult.Command;
        string path = string.Join(' ', CommandPath(parse.CommandResult).Prepend("sae"));
        var options = command.Options.Concat(command.Parents.OfType<Command>().SelectMany(c => c.Options).Where(o => o.Recursive))
            .SelectMany(o => o.Aliases.Prepend(o.Name)).Distinct().ToList();
        var parts = new List<string>();
        if (command.Subcommands.Count > 0)
        {
            string first = parse.UnmatchedTokens[0];
            return $"'{first}': not a command of {path}{NameSuggestion.For(first, command.Subcommands.Select(c => c.Name))} ({path} --help lists the commands)";
        }
        bool afterUnknownOption = false;
        foreach (string token in parse.UnmatchedTokens)
        {
            if (token.StartsWith('-') && token.Length > 1 && !double.TryParse(token, NumberStyles.Float, CultureInfo.InvariantCulture, out _))
            {
                parts.Add($"{token}: not an option of {path}{NameSuggestion.For(token, options)}");
                afterUnknownOption = true;
            }
            else if (!afterUnknownOption) parts.Add($"'{token}': an argument {path} does not take");
            else afterUnknownOption = false;                                       // the unknown option's value
        }
        foreach (var error in parse.Errors)
        {
            if (error.Message.StartsWith("Unrecognized command or argument", StringComparison.Ordinal)) continue;
            var m = System.Text.RegularExpressions.Regex.Match(error.Message, @"^Cannot parse argument '(.*)' for option '(.*)' as expected type '(.*)'\.?$");
            var required = System.Text.RegularExpressions.Regex.Match(error.Message, @"^Option '(.*)' is required\.?$");
            var among = System.Text.RegularExpressions.Regex.Match(error.Message, @"^Argument '(.*)' not recognized\. Must be one of:(.*)$",
                System.Text.RegularExpressions.RegexOptions.Singleline);
            var missing = System.Text.RegularExpressions.Regex.Match(error.Message, @"^Required argument missing for option: '(.*)'\.?$");
            var twice = System.Text.RegularExpressions.Regex.Match(error.Message, @"^Option '(.*)' expects a single argument but (\d+) were provided\.?$");
            string? option = (error.SymbolResult as OptionResult ?? error.SymbolResult?.Parent as OptionResult)?.Option.Name;
            parts.Add(m.Success ? $"{m.Groups[2].Value} {m.Groups[1].Value}: expected {TypeWord(m.Groups[3].Value, m.Groups[1].Value)}"
                : required.Success ? $"{required.Groups[1].Value} is required"
                : among.Success && option is not null ? AmongError(option, among.Groups[1].Value,
                    System.Text.RegularExpressions.Regex.Matches(among.Groups[2].Value, "'([^']*)'").Select(v => v.Groups[1].Value).ToList())
                : missing.Success ? $"{missing.Groups[1].Value}: give a value after it"
                : twice.Success ? $"{twice.Groups[1].Value} given {twice.Groups[2].Value} times: give it once"
                : string.Join(' ', error.Message.Split((char[])['\n', '\r', '\t'], StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries)).TrimEnd('.'));
        }
        return $"{string.Join("; ", parts.Distinct())} ({path} --help lists the options)";
    }

    /// <summary>A value outside an option's choices: the choices, and the nearest (<c>--to dictionary-learning</c>).</summary>
    private static string AmongError(string option, string value, List<string> values) =>
        $"{option} {value}: expected {OneOf(values)}{NameSuggestion.For(value, values)}";

    private static string OneOf(List<string> values) =>
        values.Count < 2 ? string.Concat(values) : $"{string.Join(", ", values.SkipLast(1))} or {values[^1]}";

    private static List<string> CommandPath(SymbolResult? result)
    {
        var names = new List<string>();
        for (var r = result; r is not null; r = r.Parent)
            if (r is CommandResult c && c.Command is not RootCommand) names.Insert(0, c.Command.Name);
        return names;
    }

    /// <summary>What an option of <paramref name="clrType"/> expects, as said of <paramref name="value"/>: "a finite number" for
    /// inf, -inf or nan written as Python writes them (which do not parse as numbers here).</summary>
    private static string TypeWord(string clrType, string value) => clrType.TrimEnd('?') switch
    {
        "System.Int32" or "System.Int64" or "System.Nullable`1[System.Int32]" or "System.Nullable`1[System.Int64]" => "an integer",
        "System.Double" or "System.Single" or "System.Nullable`1[System.Double]" or "System.Nullable`1[System.Single]"
            when value.TrimStart('+', '-').ToLowerInvariant() is "inf" or "infinity" or "nan" => "a finite number",
        "System.Double" or "System.Single" or "System.Nullable`1[System.Double]" or "System.Nullable`1[System.Single]" => "a number",
        "System.Boolean" => "true or false",
        _ => $"a value of type {clrType}",
    };

    /// <summary>Runs a command body: a <see cref="SaeSharpException"/> (or other error) becomes one line on stderr and exit code 1.</summary>
    public static void SetAction(Command command, Func<ParseResult, int> body)
    {
        command.SetAction(parse =>
        {
            try
            {
                if (parse.GetValue(Verbose)) Kernels.CpuKernels.LogOnce(line => Console.Error.WriteLine(line));
                return body(parse);
            }
            catch (Exception e) when (e is SaeSharpException or IOException or UnauthorizedAccessException or OperationCanceledException || e.InnerException is SaeSharpException)
            {
                ReportError(parse, e);
                return 1;
            }
            catch (Exception e)
            {
                ReportError(parse, e);
                return 2;
            }
        });
    }

    private static void ReportError(ParseResult parse, Exception e)
    {
        var inner = e is not SaeSharpException && e.InnerException is SaeSharpException s ? s : e;
        ErrorLine($"error: {MessageOf(inner)}");
        if (parse.GetValue(Verbose)) Console.Error.WriteLine(e.ToString());
    }

    /// <summary>An error's message for the one line on stderr: libtorch's errors (<see cref="System.Runtime.InteropServices.ExternalException"/>)
    /// without the C++ stack it appends ("Exception raised from …", "frame #0: …"; <c>--verbose</c> prints it), and its
    /// allocator's out-of-memory error with what to make smaller.</summary>
    internal static string MessageOf(Exception e)
    {
        if (e is not System.Runtime.InteropServices.ExternalException) return e.Message;
        string m = e.Message;
        int cut = m.IndexOf("Exception raised from", StringComparison.Ordinal);
        if (cut >= 0) m = m[..cut];
        m = m.Trim();
        if (m.Contains("not enough memory", StringComparison.OrdinalIgnoreCase))
            m += " (out of memory: use a smaller --batch-size, --context-size or model, or fewer tokens at once)";
        return m;
    }

    /// <summary>The options of <paramref name="options"/> given on the command line (not left to their defaults), by name.</summary>
    public static IReadOnlyList<string> Given(ParseResult parse, IEnumerable<Option> options) =>
        options.Where(o => parse.GetResult(o) is { Implicit: false }).Select(o => o.Name).ToList();

    /// <summary>Refuses options that would have no effect in the mode the command runs in: when any of
    /// <paramref name="options"/> is given, one error naming them, then <paramref name="why"/> (what applies instead):
    /// <c>--dataset, --tokens: the text comes from --prompt; ...</c>. A flag silently ignored reads as if it had worked.</summary>
    public static void RefuseGiven(ParseResult parse, string why, params IEnumerable<Option> options)
    {
        if (Given(parse, options) is [_, ..] given) throw new SaeSharpException($"{string.Join(", ", given)}: {why}");
    }

    /// <summary>Refuses zero and negative values of <paramref name="option"/> when the command line is parsed, before the
    /// command runs: <c>--batch-size 0: expected a positive number</c>.</summary>
    public static Option<T> Positive<T>(this Option<T> option) where T : struct, INumber<T> =>
        Check(option, v => v is T x && x <= T.Zero, "a positive number");

    /// <inheritdoc cref="Positive{T}(Option{T})"/>
    public static Option<T?> Positive<T>(this Option<T?> option) where T : struct, INumber<T> =>
        Check(option, v => v is T x && x <= T.Zero, "a positive number");

    /// <summary>Refuses odd values of <paramref name="option"/> when the command line is parsed: <c>--intervals 3: expected an even number</c>.</summary>
    public static Option<T> Even<T>(this Option<T> option) where T : struct, INumber<T> =>
        Check(option, v => v is T x && !T.IsEvenInteger(x), "an even number");

    /// <summary>Refuses negative values of <paramref name="option"/> when the command line is parsed: <c>--ig-steps -1: expected 0 or more</c>.</summary>
    public static Option<T> NonNegative<T>(this Option<T> option) where T : struct, INumber<T> =>
        Check(option, v => v is T x && x < T.Zero, "0 or more");

    /// <inheritdoc cref="NonNegative{T}(Option{T})"/>
    public static Option<T?> NonNegative<T>(this Option<T?> option) where T : struct, INumber<T> =>
        Check(option, v => v is T x && x < T.Zero, "0 or more");

    private static Option<TValue> Check<TValue>(Option<TValue> option, Func<TValue?, bool> bad, string expected)
    {
        option.Validators.Add(result =>
        {
            if (result.Implicit || result.Tokens.Count == 0) return; // the default value
            TValue? value;
            try { value = result.GetValueOrDefault<TValue>(); }
            catch (InvalidOperationException) { return; } // not a number: the parser reports it
            if (bad(value))
                result.AddError($"{option.Name} {string.Format(CultureInfo.InvariantCulture, "{0}", value)}: expected {expected}");
        });
        return option;
    }

    /// <summary>A value whose size varies by decades (a KL of 0.09 beside one of 3e-6) for a table: <paramref name="digits"/>
    /// significant digits on a terminal (<c>0.0905</c>, <c>3.1e-06</c>), every digit in a pipe (round-trip form).</summary>
    public static string Significant(double value, int digits) =>
        Console.IsOutputRedirected ? value.ToString("R", CultureInfo.InvariantCulture)
            : value.ToString("G" + digits.ToString(CultureInfo.InvariantCulture), CultureInfo.InvariantCulture).Replace("E", "e", StringComparison.Ordinal);

    /// <summary><paramref name="value"/> with <paramref name="decimals"/> places (invariant culture), without the minus
    /// sign of a value that rounds to zero: a KL of −3e-9 (float rounding) or a JumpReLU's −0 shows as <c>0.0000</c>,
    /// not <c>-0.0000</c>.</summary>
    public static string Fixed(double value, int decimals)
    {
        string s = value.ToString("F" + decimals.ToString(CultureInfo.InvariantCulture), CultureInfo.InvariantCulture);
        return s.StartsWith('-') && s.AsSpan(1).IndexOfAnyExcept('0', '.') < 0 ? s[1..] : s;
    }

    /// <summary>An integer for a <see cref="WriteTable"/> row: digit-grouped on a terminal (<c>1,234,567</c>); in a pipe,
    /// where the value is read by programs, plain digits (<c>1234567</c>).</summary>
    public static string Integer(long value) =>
        value.ToString(Console.IsOutputRedirected ? "D" : "N0", CultureInfo.InvariantCulture);

    /// <summary>How the user started the CLI, for a command line printed to copy: the <c>./sae</c> script passes its own
    /// path as written (<c>./sae</c>, <c>sae</c> on the PATH) in <c>SAE_LAUNCHER</c>; "sae" otherwise.</summary>
    public static string Launcher => Environment.GetEnvironmentVariable("SAE_LAUNCHER") is { Length: > 0 } l ? l : "sae";

    /// <summary>A fraction (0.995) for a table cell or a report line, named <paramref name="name"/> (the row's or column's
    /// name): <c>99.50 %</c> on a terminal, with <paramref name="decimals"/> places. In a pipe, a plain number in the unit the
    /// name says: the number of percent without the sign when the name has a "%" (<c>% alive over N tokens</c>, <c>dead %</c>),
    /// otherwise the fraction itself (SAELens's names: alive_fraction, dead_fraction, ce_loss_score). Both are printed
    /// round-trip ("R"): the double the library computed, or that double times 100, so a program reads back what the JSON
    /// outputs hold.</summary>
    public static string Percent(string name, double fraction, int decimals)
    {
        if (!Console.IsOutputRedirected) return fraction.ToString("P" + decimals.ToString(CultureInfo.InvariantCulture), CultureInfo.InvariantCulture);
        return (name.Contains('%') ? fraction * 100 : fraction).ToString("R", CultureInfo.InvariantCulture);
    }

    /// <summary>Spectre's line width when standard output is redirected: wide enough that no line is wrapped.</summary>
    private const int PipeWidth = 1 << 14;

    /// <summary>A line of Spectre markup indented by <paramref name="indent"/> columns; on a terminal, wrapped at its width
    /// with every continuation line indented as well (not back at column 0).</summary>
    public static void WriteIndented(string markup, int indent)
    {
        AnsiConsole.Write(new Padder(new Markup(markup), new Padding(indent, 0, 0, 0)));
    }

    /// <summary>Plain text indented by <paramref name="indent"/> columns and wrapped at the terminal's width between
    /// words, its continuation lines <paramref name="hang"/> columns further in, so that a wrapped item does not read as
    /// the start of the next.</summary>
    public static void WriteHanging(string text, int indent, int hang = 2)
    {
        var lines = WrapWords(text.Split(' '), AnsiConsole.Profile.Width - indent - hang);
        WriteIndented(string.Join("\n", lines.Select((l, i) => (i == 0 ? "" : new string(' ', hang)) + Markup.Escape(l))), indent);
    }

    /// <summary><paramref name="words"/> (each may hold spaces, as a quoted token <c>" They"</c> does) joined by spaces
    /// into lines of at most <paramref name="width"/> characters (one column each), broken only between words (a word wider than a line gets
    /// a line of its own, the first word always starts the first line).</summary>
    public static IReadOnlyList<string> WrapWords(IReadOnlyList<string> words, int width)
    {
        var lines = new List<string>();
        var line = new System.Text.StringBuilder();
        foreach (var word in words)
        {
            if (line.Length > 0 && line.Length + 1 + word.Length > width)
            {
                lines.Add(line.ToString());
                line.Clear();
            }
            if (line.Length > 0) line.Append(' ');
            line.Append(line.Length == 0 && lines.Count > 0 ? word.TrimStart() : word);
        }
        if (line.Length > 0 || lines.Count == 0) lines.Add(line.ToString());
        return lines;
    }

    /// <summary>A cell as one field of a tab-separated line: a tab, newline or carriage return in it (a token, a decoded
    /// context) written <c>\t</c>, <c>\n</c>, <c>\r</c>, so every line keeps its fields.</summary>
    private static string Field(string cell) => cell.Replace("\t", "\\t").Replace("\n", "\\n").Replace("\r", "\\r");

    /// <summary>Name/value rows under a title: a Spectre table on a terminal; in a pipe, the title line, then one
    /// <c>name&lt;TAB&gt;value</c> line per row (for grep and cut). Integers in either go through <see cref="Integer"/>,
    /// percentages through <see cref="Percent"/>.</summary>
    public static void WriteTable(string title, IEnumerable<(string Name, string Value)> rows)
    {
        if (Console.IsOutputRedirected && !TerminalTables.Value)
        {
            Console.WriteLine(Field(title));
            foreach (var (name, value) in rows) Console.WriteLine($"{Field(name)}\t{Field(value)}");
            return;
        }
        var list = rows.ToList();
        var valueColumn = new TableColumn("value");
        if (MostlyNumbers(list.Select(r => r.Value))) valueColumn.RightAligned();
        var table = new Table().Title(Markup.Escape(title)).AddColumn("metric").AddColumn(valueColumn);
        foreach (var (name, value) in list) table.AddRow(Markup.Escape(name), Markup.Escape(value));
        int natural = list.Select(r => r.Name.Length).Append("metric".Length).Max() + 3 + list.Select(r => r.Value.Length).Append("value".Length).Max() + 3 + 1;
        WidenToTitle(table, title, natural);
        AnsiConsole.Write(table);
    }

    /// <summary>Whether at least two thirds of <paramref name="cells"/> read as numbers ("1,024", "-0.0128", "99.5 %",
    /// "1.2e-05", "NaN", or "-" for none): such a value column is right-aligned so digits line up; a column of mostly
    /// words and paths (sae info's) is left-aligned.</summary>
    internal static bool MostlyNumbers(IEnumerable<string> cells)
    {
        int numbers = 0, all = 0;
        foreach (var cell in cells)
        {
            all++;
            if (NumberCell().IsMatch(cell.Trim())) numbers++;
        }
        return 3 * numbers >= 2 * all;
    }

    [System.Text.RegularExpressions.GeneratedRegex(@"^(?:[-+−]?(?:\d[\d,]*(?:\.\d+)?|\.\d+)(?:[eE][-+]?\d+)?(?: ?%)?|[-+]?(?:NaN|∞|Infinity)|-|—)$")]
    private static partial System.Text.RegularExpressions.Regex NumberCell();

    /// <summary>Spectre wraps a title to its table's width: a table narrower than its title (<paramref name="natural"/>
    /// columns wide) is widened to the title instead, up to the terminal's width.</summary>
    private static void WidenToTitle(Table table, string? title, int natural)
    {
        if (title is not null && title.Length + 2 > natural) table.Width = Math.Min(title.Length + 2, AnsiConsole.Profile.Width);
    }

    /// <summary>Set by tests (on their own flow) to have <see cref="WriteColumns"/> and <see cref="WriteTable"/> draw their terminal tables into
    /// <see cref="AnsiConsole"/> although the test host's stdout is redirected.</summary>
    internal static readonly AsyncLocal<bool> TerminalTables = new();

    /// <summary>
    /// A table of several columns (cells are plain text, never Spectre markup): a Spectre table on a terminal. In a pipe,
    /// tab-separated lines for programs: the title line (when there is one; on stderr with <paramref name="titleOnStderr"/>,
    /// for a command whose stdout is only this table, which then reads as a TSV file), a header line of the column names,
    /// then one line per row, every line with as many fields as there are columns. Integers go through
    /// <see cref="Integer"/>, percentages through <see cref="Percent"/>.
    /// </summary>
    /// <para>With <paramref name="recordsWhenNarrow"/>, a table wider than the terminal is drawn as one block per row
    /// instead (its first cell, then a "column value" line per other column), for lists of names and paths that squeezed
    /// columns would break every few characters.</para>
    public static void WriteColumns(string? title, IReadOnlyList<Column> columns, IEnumerable<IReadOnlyList<string>> rows, bool titleOnStderr = false,
        bool recordsWhenNarrow = false)
    {
        if (Console.IsOutputRedirected && !TerminalTables.Value)
        {
            if (title is not null) (titleOnStderr ? Console.Error : Console.Out).WriteLine(Field(title));
            Console.WriteLine(string.Join('\t', columns.Select(c => Field(c.Name))));
            foreach (var row in rows) Console.WriteLine(string.Join('\t', Cells(row).Select(Field)));
            return;
        }
        var cells = rows.Select(Cells).ToList();
        int natural = columns.Select((c, i) => cells.Select(r => r[i].Length).Append((c.Heading ?? c.Name).Split('\n').Max(l => l.Length)).Max() + 3).Sum() + 1;
        // One row wider than the terminal would wrap every header: draw it as metric/value rows instead.
        if (cells.Count == 1 && natural > AnsiConsole.Profile.Width)
        {
            var valueColumn = new TableColumn("value");
            if (MostlyNumbers(cells[0])) valueColumn.RightAligned();
            var vertical = new Table().AddColumn("metric").AddColumn(valueColumn);
            if (title is not null) vertical.Title(Markup.Escape(title));
            for (int i = 0; i < columns.Count; i++) vertical.AddRow(Markup.Escape(columns[i].Name), Markup.Escape(cells[0][i]));
            AnsiConsole.Write(vertical);
            return;
        }
        if (recordsWhenNarrow && natural > AnsiConsole.Profile.Width)
        {
            if (title is not null) WriteIndented($"[bold]{Markup.Escape(title)}[/]", 0);
            int nameWidth = columns.Skip(1).Select(c => c.Name.Length).DefaultIfEmpty(0).Max();
            foreach (var row in cells)
            {
                WriteIndented($"[bold]{Markup.Escape(row[0])}[/]", 0);
                for (int i = 1; i < columns.Count; i++) WriteIndented(Markup.Escape(columns[i].Name.PadRight(nameWidth) + "  " + row[i]), 2);
            }
            return;
        }
        var table = new Table();
        if (title is not null) table.Title(Markup.Escape(title));
        foreach (var c in columns)
        {
            var column = new TableColumn(Markup.Escape(c.Heading ?? c.Name));
            if (c.Right) column.RightAligned();
            if (c.NoWrap) column.NoWrap();
            table.AddColumn(column);
        }
        foreach (var row in cells) table.AddRow(row.Select(Markup.Escape).ToArray());
        WidenToTitle(table, title, natural);
        AnsiConsole.Write(table);

        IReadOnlyList<string> Cells(IReadOnlyList<string> row) => row.Count == columns.Count ? row
            : throw new InvalidOperationException($"a row of {row.Count} cells in a table of {columns.Count} columns");
    }
}

/// <summary>A column of <see cref="Cli.WriteColumns"/>: on a terminal, right-aligned (numbers) or never wrapped (names a
/// user copies), headed by <see cref="Heading"/> when given (e.g. over two lines to fit 80 columns; the tab-separated header
/// of a pipe keeps <see cref="Name"/>); a string converts to a plain column.</summary>
internal readonly record struct Column(string Name, bool Right = false, bool NoWrap = false, string? Heading = null)
{
    /// <summary>A left-aligned column named <paramref name="name"/>.</summary>
    public static implicit operator Column(string name) => new(name);
}
