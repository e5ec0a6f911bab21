using SaeSharp.Cli;
using SaeSharp.Cli.Commands;
using SaeSharp.Training;
using Spectre.Console;

namespace SaeSharp.Tests.Cli;

/// <summary>How lines fit a narrow terminal: wrapped lines keep their indent; the live training line is shorter than the
/// logged one and keeps what the log line says.</summary>
public sealed class TerminalLayoutTests
{
    /// <summary>What <paramref name="write"/> prints on a 40-column terminal without colours.</summary>
    private static string At40Columns(Action write) => AtColumns(40, write);

    /// <summary>What <paramref name="write"/> prints on a terminal <paramref name="width"/> columns wide without colours.</summary>
    private static string AtColumns(int width, Action write)
    {
        lock (CliRunner.Gate)
        {
            var saved = AnsiConsole.Console;
            var writer = new StringWriter();
            var console = AnsiConsole.Create(new AnsiConsoleSettings
            {
                Out = new AnsiConsoleOutput(writer), Ansi = AnsiSupport.No, ColorSystem = ColorSystemSupport.NoColors,
            });
            console.Profile.Width = width;
            AnsiConsole.Console = console;
            try { write(); }
            finally { AnsiConsole.Console = saved; }
            return writer.ToString();
        }
    }

    [Fact]
    public void An_indented_line_wraps_at_the_terminal_width_with_every_line_indented()
    {
        var words = Enumerable.Range(0, 30).Select(i => $"word{i}").ToList();
        string output = At40Columns(() => SaeSharp.Cli.Cli.WriteIndented(string.Join(' ', words), 4));
        var lines = output.Split('\n').Select(l => l.TrimEnd('\r', ' ')).Where(l => l.Length > 0).ToList();
        Assert.True(lines.Count >= 5, output); // 30 words of 5–6 characters in 36 columns
        Assert.All(lines, l => Assert.StartsWith("    word", l));
        Assert.All(lines, l => Assert.True(l.Length <= 40, $"'{l}' is wider than 40 columns"));
        Assert.Equal(words, lines.SelectMany(l => l.Split(' ', StringSplitOptions.RemoveEmptyEntries)));
    }

    [Fact]
    public void The_live_training_line_is_the_log_line_shortened()
    {
        var p = new TrainingProgress
        {
            Step = 120, TotalSteps = 300, MeanRowsPerSecond = 41_000, Eta = TimeSpan.FromSeconds(75),
            Saes = [new SaeProgress { Name = "topk", Losses = new Dictionary<string, double> { ["overall_loss"] = 5.178 }, L0 = 16, DeadFraction = 0.02 }],
        };
        string log = TrainCommand.Describe(p), live = TrainCommand.Describe(p, live: true);
        Assert.Contains("topk: loss 5.178 L0 16.0 dead_fraction ", log);
        Assert.Contains("ETA 00:01:15", log);
        Assert.Contains("| loss 5.178 L0 16.0 unfired ", live);
        Assert.Contains("ETA 1:15", live);
        Assert.True(live.Length < log.Length);
        // At 80 columns (66 characters of description) a long step count drops the rate, never the unfired share.
        var longer = new TrainingProgress { Step = 12_000, TotalSteps = 30_000, MeanRowsPerSecond = 141_000, Eta = p.Eta, Saes = p.Saes };
        string narrow = TrainCommand.Describe(longer, live: true, room: 66);
        Assert.Matches(@"^step 12000/30000 ETA 1:15 \| loss 5\.178 L0 16\.0 unfired (2 %|0\.02)$", narrow);
        Assert.True(narrow.Length <= 66, narrow);
        // With two SAEs each keeps its name.
        var two = new TrainingProgress { Step = p.Step, TotalSteps = p.TotalSteps, Saes = [p.Saes[0], new SaeProgress { Name = "relu", Losses = p.Saes[0].Losses }] };
        Assert.Contains("topk: loss", TrainCommand.Describe(two, live: true));
        Assert.Contains("relu: loss", TrainCommand.Describe(two, live: true));
    }

    [Fact]
    public void Live_lines_give_an_ETA_as_a_clock_reads()
    {
        Assert.Equal("1:15", CliProgress.Eta(TimeSpan.FromSeconds(75)));
        Assert.Equal("0:00", CliProgress.Eta(TimeSpan.Zero));
        Assert.Equal("1:02:05", CliProgress.Eta(TimeSpan.FromSeconds(3725)));
        Assert.Equal("26:00:00", CliProgress.Eta(TimeSpan.FromHours(26)));
        // "eval in model: 16,384 / 16,384 tokens, 4,518 tokens/s, ETA 00:00:…" was cut at 80 columns (66 characters).
        string eval = CliProgress.Describe("eval in model", new WorkProgress("tokens", 16_384, 16_384, TimeSpan.FromSeconds(16_384.0 / 4_518)));
        Assert.Equal("eval in model: 16,384 / 16,384 tokens, 4,518 tokens/s, ETA 0:00", eval);
        Assert.True(eval.Length <= 66);
    }

    [Fact]
    public void Several_SAEs_keep_each_L0_on_a_narrow_live_line()
    {
        // At 80 columns the live description has 66 characters (80 − bar 10 − spinner 2 − 2): three SAEs' full parts
        // were cut after the first one's, so batchtopk's and relu's L0 never showed.
        SaeProgress Sae(string name, double l0, double dead) =>
            new() { Name = name, Losses = new Dictionary<string, double> { ["overall_loss"] = 19.75 }, L0 = l0, DeadFraction = dead };
        var p = new TrainingProgress
        {
            Step = 22, TotalSteps = 73, MeanRowsPerSecond = 7_978, Eta = TimeSpan.FromSeconds(26),
            Saes = [Sae("topk", 16, 0), Sae("batchtopk", 16, 0.25), Sae("relu", 85.25, 0.5)],
        };
        string wide = TrainCommand.Describe(p, live: true, room: 200);
        Assert.Contains("batchtopk: loss 19.75 L0 16.0 unfired ", wide);
        string medium = TrainCommand.Describe(p, live: true, room: 125);
        // The dead share reads "25 %" on a terminal, "0.25" when the test's output is redirected (Cli.Percent).
        Assert.Matches(@"^step 22/73 7,978 rows/s ETA 0:26 \| topk L0 16\.0 unfired 0( %)? \| batchtopk L0 16\.0 unfired (25 %|0\.25) \| relu L0 85\.2 unfired (50 %|0\.5)$", medium);
        Assert.True(medium.Length <= 125, medium);
        string medium2 = TrainCommand.Describe(p, live: true, room: 90);
        Assert.Equal("step 22/73 7,978 rows/s ETA 0:26 | topk L0 16.0 | batchtopk L0 16.0 | relu L0 85.2", medium2);
        string narrow = TrainCommand.Describe(p, live: true, room: 66);
        Assert.Equal("step 22/73 ETA 0:26 | L0 topk 16.0 batchtopk 16.0 relu 85.2", narrow);
        // The log line (pipes, files) is never shortened.
        Assert.Contains("relu: loss 19.75 L0 85.2 dead_fraction", TrainCommand.Describe(p, room: 66));
    }

    [Fact]
    public void The_prompt_view_wraps_a_long_feature_line_with_its_indent()
    {
        // sae inspect printed its lines with MarkupLine, so on an 80-column terminal a feature's line of top logits
        // broke at column 0 (`"<|endoftext|>" " 15"` under the `  feature` lines).
        string[] tokens = ["<|endoftext|>", " The", " cat", " sat", " on", " the", " mat"];
        var view = new SaeSharp.Analysis.PromptView
        {
            Prompt = "The cat sat on the mat", Tokens = [0, 1, 2, 3, 4, 5, 6], TokenStrings = tokens,
            Features = [new SaeSharp.Analysis.UnitActivations(22, 4.686, [0, 1, 0, 2, 0, 0, 3])],
            Neurons = [new SaeSharp.Analysis.UnitActivations(43, 12.8, [0, 1, 1, 1, 1, 1, 1])],
        };
        var notes = new Dictionary<int, SaeSharp.Analysis.FeatureNote>
        {
            [22] = new(0.031, [" there", " colour", " were", "<|endoftext|>", " 15", " Tuesday", " Sunday", " replies"]),
        };
        string output = At40Columns(() => AnalysisCommands.Print([view], notes, null, "blocks.1.hook_resid_post"));
        var lines = output.Split('\n').Select(l => l.TrimEnd('\r', ' ')).Where(l => l.Length > 0).ToList();
        Assert.All(lines, l => Assert.True(l.Length <= 40, $"'{l}' is wider than 40 columns"));
        // Below the prompt's title every line, the feature's wrapped logit list among them, keeps an indent.
        int first = lines.FindIndex(l => l.StartsWith("  feature 22 sum 4.686", StringComparison.Ordinal));
        Assert.True(first > 0, output);
        Assert.All(lines.Skip(first), l => Assert.StartsWith("  ", l));
        Assert.True(lines.Count(l => l.StartsWith("    ", StringComparison.Ordinal)) >= 2, output); // the two shaded token lines
        Assert.Contains(lines, l => l.StartsWith("  neuron 43 sum 12.8", StringComparison.Ordinal));
    }

    [Fact]
    public void A_wrapped_logit_list_never_splits_a_quoted_token()
    {
        // walk11: at 80 columns `sae inspect` wrapped `... " He" " They"` between the quote and the word (`"` at the end of
        // one line, `They"` starting the next).
        string[] logits = [" The", " Mia", " Anna", " He", " They", " cake", " banana", " pear", " carrot", " plum"];
        var view = new SaeSharp.Analysis.PromptView
        {
            Prompt = "The", Tokens = [0, 1], TokenStrings = ["<|endoftext|>", " The"],
            Features = [new SaeSharp.Analysis.UnitActivations(114, 15.013, [0, 1])], Neurons = [],
        };
        var notes = new Dictionary<int, SaeSharp.Analysis.FeatureNote> { [114] = new(0.079, logits) };
        string output = At40Columns(() => AnalysisCommands.Print([view], notes, null, "blocks.1.hook_resid_post"));
        var lines = output.Split('\n').Select(l => l.TrimEnd('\r', ' ')).Where(l => l.Length > 0).ToList();
        Assert.True(lines.Count >= 4, output);
        Assert.All(lines, l => Assert.True(l.Length <= 40, $"'{l}' is wider than 40 columns"));
        int first = lines.FindIndex(l => l.StartsWith("  feature 114 sum 15.013  density ", StringComparison.Ordinal));
        Assert.True(first > 0, output);
        foreach (var t in logits) Assert.Single(lines, l => l.Contains($"\"{t}\"", StringComparison.Ordinal));
        Assert.All(lines.Skip(first), l => Assert.StartsWith("  ", l));
    }

    [Fact]
    public void A_wrapped_score_labels_example_hangs_under_its_first_line()
    {
        // walk11: at 80 columns `sae score-labels` wrapped "...; best neuron for it: 8" / "F1 0.73" with both lines at
        // indent 2, so the continuation read as the next item.
        const string item = "feature 192 ≈ cat:person_word (F1 0.95, P 1.00, R 0.90); best neuron for it: 8 F1 0.73";
        string output = At40Columns(() => SaeSharp.Cli.Cli.WriteHanging(item, 2));
        var lines = output.Split('\n').Select(l => l.TrimEnd('\r', ' ')).Where(l => l.Length > 0).ToList();
        Assert.True(lines.Count >= 3, output);
        Assert.StartsWith("  feature 192", lines[0]);
        Assert.All(lines.Skip(1), l => Assert.Matches("^    [^ ]", l));
        Assert.All(lines, l => Assert.True(l.Length <= 40, $"'{l}' is wider than 40 columns"));
        Assert.Equal(item, string.Join(' ', lines.Select(l => l.Trim())));
    }

    /// <summary>sae steer's logit table is as wide as its cells (and its short title), not stretched to a long title.</summary>
    [Fact]
    public void The_steer_logit_table_is_as_narrow_as_its_cells()
    {
        string output = At40Columns(() =>
        {
            SaeSharp.Cli.Cli.TerminalTables.Value = true;
            try { InterventionCommands.WriteFeatureLogits(69, [(" grey", 1.155), (" purple", 1.142)]); }
            finally { SaeSharp.Cli.Cli.TerminalTables.Value = false; }
        });
        var lines = output.Split('\n').Select(l => l.TrimEnd('\r', ' ')).Where(l => l.Length > 0).ToList();
        Assert.Equal("feature 69: top logit tokens", lines[0].Trim()); // the title on one line
        // Columns: "\" purple\"" (9) and "W_dec[F]·W_U" (12), each padded by 3, plus the last border: 28; the title's 28 + 2.
        var table = lines.Skip(1).ToList();
        Assert.All(table, l => Assert.True(l.Length <= 30, $"'{l}' is wider than the cells need"));
        Assert.Contains(table, l => l.Contains("\" purple\"", StringComparison.Ordinal) && l.Contains("1.142", StringComparison.Ordinal));
    }

    /// <summary>A name/value table under a title longer than the table (sae ablate's "zero-ablation of 2 feature(s) at
    /// HOOK") keeps its title on one line: the table is widened to it, as WriteColumns' tables are.</summary>
    [Fact]
    public void A_name_value_table_is_widened_to_a_title_that_fits_the_terminal()
    {
        const string title = "zero-ablation of 2 feature(s) at L1"; // 35 columns: fits 40 with its borders
        string output = At40Columns(() =>
        {
            SaeSharp.Cli.Cli.TerminalTables.Value = true;
            try { SaeSharp.Cli.Cli.WriteTable(title, [("CE loss clean", "4.5551"), ("positions", "9")]); }
            finally { SaeSharp.Cli.Cli.TerminalTables.Value = false; }
        });
        var lines = output.Split('\n').Select(l => l.TrimEnd('\r', ' ')).Where(l => l.Length > 0).ToList();
        Assert.Equal(title, lines[0].Trim());
        Assert.Equal(37, lines[1].Length); // the top border: the title's 35 columns + 2 (the cells need 27)
        Assert.Contains(lines, l => l.Contains("CE loss clean", StringComparison.Ordinal) && l.Contains("4.5551", StringComparison.Ordinal));
    }

    /// <summary>sae ablate's per-position table fits 80 columns with a row of GPT-2's &lt;|endoftext|&gt; and losses of
    /// two integer digits and a negative ΔCE: every row on one line.</summary>
    [Fact]
    public void The_ablate_per_position_table_keeps_each_row_on_one_line_at_80_columns()
    {
        string output = AtColumns(80, () =>
        {
            SaeSharp.Cli.Cli.TerminalTables.Value = true;
            try
            {
                InterventionCommands.WritePerPosition([["0", "\"<|endoftext|>\"", "\" Mia\"", "14.6964", "14.6964", "0.0000", "0.0000"],
                                                       ["6", "\" the\"", "\" kitchen\"", "2.4816", "2.9392", "-0.0128", "0.2072"]]);
            }
            finally { SaeSharp.Cli.Cli.TerminalTables.Value = false; }
        });
        var lines = output.Split('\n').Select(l => l.TrimEnd('\r', ' ')).Where(l => l.Length > 0).ToList();
        Assert.All(lines, l => Assert.True(l.Length <= 80, $"'{l}' is wider than 80 columns"));
        Assert.True(lines.Any(l => l.Contains("\"<|endoftext|>\"", StringComparison.Ordinal)), output);
        Assert.Single(lines, l => l.Contains("\"<|endoftext|>\"", StringComparison.Ordinal) && l.Contains("14.6964", StringComparison.Ordinal));
        Assert.Single(lines, l => l.Contains("\" kitchen\"", StringComparison.Ordinal) && l.Contains("-0.0128", StringComparison.Ordinal));
    }

    [Fact]
    public void The_probe_table_keeps_each_row_on_one_line_at_80_columns()
    {
        int[] ks = [1, 2, 5, 10, 20, 50];
        var top = ks.ToDictionary(k => k, k => 0.9746);
        var report = new SaeSharp.Analysis.SparseProbingReport("blocks.1.hook_resid_post", 5000, ks,
            [new("ctx:plural_subject", 100, 20, 1.0, top, top, [3], 0.99951, 7), new("tense:past", 100, 20, 0.5, top, top, [3], null, 3000)], Pooling: "mean");
        string output = AtColumns(80, () =>
        {
            SaeSharp.Cli.Cli.TerminalTables.Value = true;
            try { ProbeCommand.Print(report); }
            finally { SaeSharp.Cli.Cli.TerminalTables.Value = false; }
        });
        var lines = output.Split('\n').Select(l => l.TrimEnd('\r', ' ')).Where(l => l.Length > 0).ToList();
        Assert.All(lines, l => Assert.True(l.Length <= 80, $"'{l}' is wider than 80 columns"));
        // Percent with one decimal: 0.9746 → 97.5, 0.99951 → 100, 1.0 → 100, a missing sae_test_accuracy → -.
        Assert.Single(lines, l => System.Text.RegularExpressions.Regex.IsMatch(l, @"ctx:plural_subject\s*│\s*100 │\s*100 │(\s*97\.5 │){5}\s*97\.5 │"));
        Assert.Single(lines, l => System.Text.RegularExpressions.Regex.IsMatch(l, @"tense:past\s*│\s*50\.0 │\s*- │"));
        Assert.Contains("mean-pooled", output);
    }

    /// <summary>A name/value table of numbers right-aligns them so the digits line up; one of mostly words and paths
    /// (sae info's) reads left-aligned.</summary>
    [Fact]
    public void A_value_column_is_right_aligned_only_when_it_holds_numbers()
    {
        string Draw((string, string)[] rows) => AtColumns(80, () =>
        {
            SaeSharp.Cli.Cli.TerminalTables.Value = true;
            try { SaeSharp.Cli.Cli.WriteTable("t", rows); }
            finally { SaeSharp.Cli.Cli.TerminalTables.Value = false; }
        });
        string Row(string output, string name) =>
            output.Split('\n').Single(l => l.Contains("│ " + name + " ", StringComparison.Ordinal)).TrimEnd('\r');

        string numbers = Draw([("d_sae", "16,384"), ("fvu", "0.5"), ("dead", "2.5 %"), ("kl", "-")]);
        // right-aligned: the shorter value ends where the longer one does, before the last border
        Assert.EndsWith("│    0.5 │", Row(numbers, "fvu"));
        Assert.EndsWith("│ 16,384 │", Row(numbers, "d_sae"));
        Assert.EndsWith("│      - │", Row(numbers, "kl  "));

        string words = Draw([("format", "SAELens"), ("hook_name", "blocks.1.hook_resid_post"), ("d_in", "128"), ("dtype", "float32")]);
        // left-aligned: each value starts right after the column border
        Assert.Contains("│ SAELens  ", Row(words, "format   "));
        Assert.Contains("│ 128  ", Row(words, "d_in     "));
        Assert.Contains("│ blocks.1.hook_resid_post │", Row(words, "hook_name"));
    }

    [Theory]
    [InlineData("1,024", true)]
    [InlineData("-0.0128", true)]
    [InlineData("99.5 %", true)]
    [InlineData("1.2e-05", true)]
    [InlineData("NaN", true)]
    [InlineData("-", true)]
    [InlineData("true", false)]
    [InlineData("blocks.1.hook_resid_post", false)]
    [InlineData("float32", false)]
    [InlineData("1-2", false)]
    public void A_cell_reads_as_a_number_by_its_text(string cell, bool number) =>
        Assert.Equal(number, SaeSharp.Cli.Cli.MostlyNumbers([cell]));

    /// <summary>sae model head-scores of a GPT-2-sized model (12 layers × 12 heads, abs scores below zero) fits 80 columns:
    /// each score's heads split evenly over two tables (H0–H5, H6–H11), every layer's row on one line.</summary>
    [Fact]
    public void Head_scores_of_twelve_heads_fit_80_columns()
    {
        var v = new double[12, 12];
        for (int l = 0; l < 12; l++) for (int h = 0; h < 12; h++) v[l, h] = (l * 12 + h) / 72.0 - 1;   // −1 .. 0.99
        var scores = new SaeSharp.Analysis.HeadScores(v, v, v);
        string output = AtColumns(80, () =>
        {
            SaeSharp.Cli.Cli.TerminalTables.Value = true;
            try { ModelCommands.WriteHeadScores(scores, "test", 5); }
            finally { SaeSharp.Cli.Cli.TerminalTables.Value = false; }
        });
        var lines = output.Split('\n').Select(l => l.TrimEnd('\r', ' ')).Where(l => l.Length > 0).ToList();
        Assert.All(lines, l => Assert.True(l.Length <= 80, $"'{l}' is wider than 80 columns"));
        Assert.Equal(3, lines.Count(l => l.Contains("heads 0–5", StringComparison.Ordinal)));
        Assert.Equal(3, lines.Count(l => l.Contains("heads 6–11", StringComparison.Ordinal)));
        // L11's row of the second table: H6..H11 = (132 + h) / 72 − 1.
        Assert.Equal(3, lines.Count(l => l.Contains("L11 ", StringComparison.Ordinal) && l.Contains("0.92", StringComparison.Ordinal) && l.Contains("0.99", StringComparison.Ordinal)));   // one per score
        Assert.Contains(lines, l => l.Contains("L11H11 0.99", StringComparison.Ordinal));
    }
}
