using SaeSharp.Plots;
using SaeSharp.Training;
using SkiaSharp;

namespace SaeSharp.Tests.Training;

/// <summary><see cref="TrainLogFile"/> and <see cref="TrainingCurves"/> on hand-written logs: each panel's lines hold the
/// values written in the log (finite ones, at the tokens of their lines), one line per SAE.</summary>
public class TrainingCurvesTests : IDisposable
{
    private readonly string _dir = Directory.CreateTempSubdirectory("curves-").FullName;
    public void Dispose() => Directory.Delete(_dir, true);

    private string Log(string name, params string[] lines)
    {
        var path = Path.Combine(_dir, name);
        File.WriteAllText(path, string.Join("\n", lines) + "\n");
        return path;
    }

    private static LinePanel Panel(IReadOnlyList<LinePanel> panels, string title) =>
        panels.SingleOrDefault(p => p.Title == title) ?? throw new Xunit.Sdk.XunitException($"no panel '{title}' in: {string.Join(", ", panels.Select(p => p.Title))}");

    private static LineSeries Line(LinePanel panel, string sae) => panel.Series.Single(s => s.Name == sae);

    private static void Points(LineSeries line, double[] x, double[] y)
    {
        Assert.Equal(x, line.X);
        Assert.Equal(y, line.Y);
    }

    /// <summary>Two SAEs (as <c>--arch topk,relu</c> logs them), each with its own losses; NaN and −Infinity written as
    /// the writer writes them (strings); an event line between.</summary>
    private string MultiSaeLog() => Log("multi.jsonl",
        """{"step":1,"tokens":100,"sae":"topk","lr":0.001,"sparsity_scale":1,"losses":{"overall_loss":10,"mse_loss":9,"auxiliary_reconstruction_loss":1},"l0":8,"dead_fraction":0,"explained_variance":0.5,"rows_per_second":10}""",
        """{"step":1,"tokens":100,"sae":"relu","lr":0.002,"sparsity_scale":0.5,"sparsity_coefficient":0.5,"losses":{"overall_loss":12,"mse_loss":8,"l1_loss":4},"l0":100,"dead_fraction":0.25,"explained_variance":0.6,"rows_per_second":10}""",
        """{"step":1,"sae":"relu","event":"resampled_dead_latents","count":3}""",
        """{"step":2,"tokens":200,"sae":"topk","lr":0.001,"sparsity_scale":1,"losses":{"overall_loss":"NaN","mse_loss":5},"l0":8,"dead_fraction":0.125,"explained_variance":0.75,"rows_per_second":10}""",
        """{"step":2,"tokens":200,"sae":"relu","lr":0.002,"sparsity_scale":1,"sparsity_coefficient":1,"losses":{"overall_loss":11,"mse_loss":0.5,"l1_loss":3},"l0":40,"dead_fraction":0.5,"explained_variance":"-Infinity","rows_per_second":10}""");

    [Fact]
    public void A_multi_sae_log_gives_one_line_per_sae_in_every_panel_with_the_logged_values()
    {
        var path = MultiSaeLog();
        var log = TrainLogFile.Read(path);
        Assert.Equal(["topk", "relu"], log.Saes);
        Assert.Equal($"{path}: 2 SAEs, step 2, 200 tokens; dashed: dead latents resampled (1×)", TrainingCurves.Title(log));
        Assert.True(log.EveryLineHasTokens);
        var panels = TrainingCurves.Panels(log);
        // Loss terms in order of first appearance, then the fixed quantities; λ because relu's changed (0.5 → 1).
        Assert.Equal(["losses/overall_loss", "losses/mse_loss (log scale)", "losses/auxiliary_reconstruction_loss", "losses/l1_loss",
                      "l0 (log scale)", "explained_variance", "dead_fraction", "lr", "sparsity_coefficient",
                      "rows_per_second (the SAEs' shared pass)"], panels.Select(p => p.Title));
        foreach (var p in panels.SkipLast(1)) Assert.Equal(["topk", "relu"], p.Series.Select(s => s.Name));
        // One pass trains both SAEs: its throughput is one line.
        var pass = Assert.Single(panels[^1].Series);
        Points(pass, [100, 200], [10, 10]);
        Assert.True(pass.Shared); // grey, not in either SAE's colour
        // relu's resampling at step 1 (100 tokens) is marked in every panel, in relu's colour.
        foreach (var p in panels) Assert.Equal([new LineMarker("relu", 100)], p.Markers);

        // NaN is not a point: topk's overall loss has step 1 only.
        var overall = Panel(panels, "losses/overall_loss");
        Points(Line(overall, "topk"), [100], [10]);
        Points(Line(overall, "relu"), [100, 200], [12, 11]);
        Assert.False(overall.LogY); // 10 to 12: not a decade
        // mse from 9 down to 0.5 spans more than a decade: a log axis.
        var mse = Panel(panels, "losses/mse_loss (log scale)");
        Assert.True(mse.LogY);
        Points(Line(mse, "topk"), [100, 200], [9, 5]);
        Points(Line(mse, "relu"), [100, 200], [8, 0.5]);
        // A loss one architecture does not log, or logs in some lines only: no points there.
        Points(Line(Panel(panels, "losses/auxiliary_reconstruction_loss"), "topk"), [100], [1]);
        Assert.Empty(Line(Panel(panels, "losses/auxiliary_reconstruction_loss"), "relu").X);
        Assert.Empty(Line(Panel(panels, "losses/l1_loss"), "topk").X);
        Points(Line(Panel(panels, "losses/l1_loss"), "relu"), [100, 200], [4, 3]);

        // L0 from 100 (relu) to 8 (topk): more than a decade.
        Points(Line(Panel(panels, "l0 (log scale)"), "relu"), [100, 200], [100, 40]);
        Points(Line(Panel(panels, "l0 (log scale)"), "topk"), [100, 200], [8, 8]);
        var ev = Panel(panels, "explained_variance");
        Points(Line(ev, "topk"), [100, 200], [0.5, 0.75]);
        Points(Line(ev, "relu"), [100], [0.6]); // −Infinity skipped
        Assert.Equal(1, ev.YMax);
        var dead = Panel(panels, "dead_fraction");
        Assert.Equal((0.0, 1.0), (dead.YMin, dead.YMax));
        Points(Line(dead, "relu"), [100, 200], [0.25, 0.5]);
        Points(Line(Panel(panels, "lr"), "topk"), [100, 200], [0.001, 0.001]);
        Points(Line(Panel(panels, "sparsity_coefficient"), "relu"), [100, 200], [0.5, 1]);
        Assert.Empty(Line(Panel(panels, "sparsity_coefficient"), "topk").X);
    }

    [Fact]
    public void A_coefficient_that_never_changes_gets_no_panel_and_steps_replace_tokens_when_a_line_has_none()
    {
        var log = TrainLogFile.Read(Log("constant.jsonl",
            """{"step":3,"sae":"relu","sparsity_coefficient":2,"losses":{"mse_loss":1},"l0":5}""",
            """{"step":6,"tokens":12,"sae":"relu","sparsity_coefficient":2,"losses":{"mse_loss":2},"l0":4}"""));
        Assert.False(log.EveryLineHasTokens);
        var panels = TrainingCurves.Panels(log);
        Assert.Equal(["losses/mse_loss", "l0"], panels.Select(p => p.Title));
        Points(Line(Panel(panels, "l0"), "relu"), [3, 6], [5, 4]);
    }

    /// <summary>A resumed run re-logs from its checkpoint: a line whose step is not after its SAE's previous line replaces
    /// that SAE's lines of that step and later (another SAE's lines are untouched).</summary>
    [Fact]
    public void A_resumed_runs_lines_replace_the_earlier_lines_of_the_same_and_later_steps()
    {
        var log = TrainLogFile.Read(Log("resumed.jsonl",
            """{"step":10,"tokens":1000,"sae":"a","l0":1}""",
            """{"step":10,"tokens":1000,"sae":"b","l0":100}""",
            """{"step":20,"tokens":2000,"sae":"a","l0":2}""",
            """{"step":30,"tokens":3000,"sae":"a","l0":3}""",
            """{"step":40,"tokens":4000,"sae":"a","l0":4}""",
            // resumed from the checkpoint of step 20: its first logged step is 30 again
            """{"step":30,"tokens":3000,"sae":"a","l0":33}""",
            """{"step":40,"tokens":4000,"sae":"a","l0":44}""",
            """{"step":50,"tokens":5000,"sae":"a","l0":55}""",
            // a repeated step replaces the line of that step itself
            """{"step":50,"tokens":5000,"sae":"a","l0":56}"""));
        var a = log.Series("a", "l0")!;
        Assert.Equal([10L, 20, 30, 40, 50], a.Steps);
        Assert.Equal([1000.0, 2000, 3000, 4000, 5000], a.Tokens);
        Assert.Equal([1.0, 2, 33, 44, 56], a.Values);
        Assert.Equal([100.0], log.Series("b", "l0")!.Values);
        Assert.Equal(9, log.StepLines);
    }

    /// <summary>Event lines: placed at the tokens of their step (proportional to the step between logged lines), those of
    /// steps a resumed run re-ran dropped with the step lines, a resampling of no latent not drawn.</summary>
    [Fact]
    public void Resampling_events_are_placed_at_their_steps_tokens_and_a_resumed_run_drops_the_ones_it_re_ran()
    {
        var log = TrainLogFile.Read(Log("events.jsonl",
            """{"step":10,"tokens":1000,"sae":"a","l0":1}""",
            """{"step":15,"sae":"a","event":"resampled_dead_latents","count":4}""",
            """{"step":20,"tokens":2000,"sae":"a","l0":2}""",
            """{"step":20,"sae":"a","event":"resampled_dead_latents","count":0}""",
            """{"step":30,"tokens":3000,"sae":"a","l0":3}""",
            """{"step":35,"sae":"a","event":"resampled_dead_latents","count":2}""",
            """{"step":40,"tokens":4000,"sae":"a","l0":4}""",
            // resumed from step 20's checkpoint (its first line is step 30 again): step 35's resampling goes with the lines
            """{"step":30,"tokens":3000,"sae":"a","l0":33}""",
            """{"step":45,"sae":"a","event":"resampled_dead_latents","count":7}""",
            """{"step":50,"tokens":5000,"sae":"a","l0":5}"""));
        Assert.Equal([new TrainLogEvent("a", 15, 1500, "resampled_dead_latents", 4), new TrainLogEvent("a", 20, 2000, "resampled_dead_latents", 0),
                      new TrainLogEvent("a", 45, 4500, "resampled_dead_latents", 7)], log.Events);
        // Step 45 lies between the lines of steps 30 and 50: 5000 × 45 / 50 tokens. The count-0 resampling moved nothing and
        // is not drawn.
        Assert.Equal([new LineMarker("a", 1500), new LineMarker("a", 4500)], TrainingCurves.Panels(log)[0].Markers);
        Assert.EndsWith("; dashed: dead latents resampled (2×)", TrainingCurves.Title(log));
    }

    /// <summary>The dashed line of a resampling in the PNG: against the same log with a resampling of no latent (not
    /// drawn), the pixels that differ below the title are one narrow vertical band per panel, at the event's x (half-way
    /// along the x axis here), spanning most of the panel's height.</summary>
    [Fact]
    public void A_resampling_is_a_vertical_line_at_its_tokens_in_each_panel_of_the_png()
    {
        string Events(int count) => Log($"png{count}.jsonl",
            """{"step":10,"tokens":1000,"sae":"a","l0":5,"lr":0.001}""",
            """{"step":20,"tokens":2000,"sae":"a","l0":4,"lr":0.001}""",
            $$"""{"step":20,"sae":"a","event":"resampled_dead_latents","count":{{count}}}""",
            """{"step":30,"tokens":3000,"sae":"a","l0":3,"lr":0.0005}""");
        using var with = SKBitmap.Decode(TrainingCurves.Render(TrainLogFile.Read(Events(5)), 1000, 500));
        using var without = SKBitmap.Decode(TrainingCurves.Render(TrainLogFile.Read(Events(0)), 1000, 500));
        var columns = new SortedDictionary<int, (int Top, int Bottom)>();
        for (int y = 60; y < 500; y++)
            for (int x = 0; x < 1000; x++)
                if (with.GetPixel(x, y) != without.GetPixel(x, y))
                    columns[x] = columns.TryGetValue(x, out var r) ? (Math.Min(r.Top, y), Math.Max(r.Bottom, y)) : (y, y);
        // Runs of adjacent columns: one per panel (two panels side by side), each at most 4 pixels wide.
        var runs = new List<List<int>>();
        foreach (var x in columns.Keys)
            if (runs.Count > 0 && x - runs[^1][^1] <= 1) runs[^1].Add(x); else runs.Add([x]);
        Assert.Equal(2, runs.Count);
        foreach (var run in runs)
        {
            Assert.InRange(run.Count, 1, 4);
            Assert.True(columns[run[0]].Bottom - columns[run[0]].Top > 200, $"the line at x={run[0]} spans {columns[run[0]]}");
        }
        // Each at the middle of its panel's data area (the x axis runs from 1000 to 3000 tokens, 2 % padded each side).
        Assert.InRange(runs[0][0], 250, 300);
        Assert.InRange(runs[1][0], 750, 800);
    }

    [Fact]
    public void A_quantity_logged_only_as_nan_still_gets_its_panel_and_draws()
    {
        var path = Log("nan.jsonl",
            """{"step":1,"tokens":10,"sae":"topk","losses":{"mse_loss":"NaN"},"l0":4,"explained_variance":"NaN"}""",
            """{"step":2,"tokens":20,"sae":"topk","losses":{"mse_loss":"Infinity"},"l0":4,"explained_variance":"NaN"}""");
        var log = TrainLogFile.Read(path);
        Assert.Null(log.Series("topk", "losses/mse_loss"));
        var panels = TrainingCurves.Panels(log);
        Assert.Empty(Line(Panel(panels, "losses/mse_loss"), "topk").X);
        Assert.Empty(Line(Panel(panels, "explained_variance"), "topk").X);
        using var png = SKBitmap.Decode(TrainingCurves.Render(log, 800, 500));
        Assert.Equal((800, 500), (png.Width, png.Height));
    }

    [Fact]
    public void A_last_line_cut_short_is_skipped_and_a_corrupt_line_elsewhere_is_an_error_naming_the_file_and_line()
    {
        var torn = Path.Combine(_dir, "torn.jsonl");
        File.WriteAllText(torn, """{"step":1,"tokens":10,"sae":"s","l0":4}""" + "\n" + """{"step":2,"tokens":20,"sae":"s","l0":""");
        var log = TrainLogFile.Read(torn);
        Assert.Equal(1, log.TornLines);
        Assert.Equal($"{torn}: s, step 1, 10 tokens (a cut-short last line skipped)", TrainingCurves.Title(log));
        Assert.Equal([4.0], log.Series("s", "l0")!.Values);

        var corrupt = Log("corrupt.jsonl", """{"step":1,"tokens":10,"sae":"s","l0":4}""", """{"step":2,"tok""", """{"step":3,"tokens":30,"sae":"s","l0":4}""");
        var e = Assert.Throws<SaeSharpException>(() => TrainLogFile.Read(corrupt));
        Assert.StartsWith($"{corrupt} line 2: not JSON", e.Message);
        // The same cut line ended by a newline was written whole: not a torn write, an error.
        var ended = Log("ended.jsonl", """{"step":1,"tokens":10,"sae":"s","l0":4}""", """{"step":2,"tok""");
        Assert.StartsWith($"{ended} line 2: not JSON", Assert.Throws<SaeSharpException>(() => TrainLogFile.Read(ended)).Message);

        var noStep = Log("nostep.jsonl", """{"step":1,"tokens":10,"sae":"s","l0":4}""", """{"tokens":10,"sae":"s","l0":4}""");
        Assert.Equal($"{noStep} line 2: no integer \"step\"", Assert.Throws<SaeSharpException>(() => TrainLogFile.Read(noStep)).Message);
        var badLoss = Log("badloss.jsonl", """{"step":1,"tokens":10,"sae":"s","losses":{"mse_loss":"x"}}""");
        Assert.Equal($"{badLoss} line 1: \"losses\".\"mse_loss\" is not a number", Assert.Throws<SaeSharpException>(() => TrainLogFile.Read(badLoss)).Message);

        var empty = Path.Combine(_dir, "empty.jsonl");
        File.WriteAllText(empty, "");
        Assert.Equal($"{empty}: empty: no logged steps", Assert.Throws<SaeSharpException>(() => TrainLogFile.Read(empty)).Message);
        var eventsOnly = Log("events.jsonl", """{"step":1,"sae":"s","event":"resampled_dead_latents","count":3}""");
        Assert.Equal($"{eventsOnly}: no logged steps in its 1 lines", Assert.Throws<SaeSharpException>(() => TrainLogFile.Read(eventsOnly)).Message);
    }

    /// <summary>A running trainer holds the log open for writing (sharing reads only) with a line half written: the log
    /// reads beside it, that line skipped as cut short.</summary>
    [Fact]
    public void A_log_a_running_trainer_is_writing_reads_up_to_its_line_in_progress()
    {
        var path = Path.Combine(_dir, "running.jsonl");
        using var writer = new StreamWriter(new FileStream(path, FileMode.Append, FileAccess.Write, FileShare.Read));
        writer.Write("""{"step":1,"tokens":10,"sae":"s","l0":4}""" + "\n" + """{"step":2,"tokens":20,"sae":"s","l0":3}""" + "\r\n" + """{"step":3,"tok""");
        writer.Flush();
        var log = TrainLogFile.Read(path);
        Assert.Equal([4.0, 3], log.Series("s", "l0")!.Values);
        Assert.Equal(1, log.TornLines);
    }

    [Fact]
    public void The_png_has_the_requested_size_or_a_row_height_per_row_of_panels_and_is_not_blank()
    {
        var log = TrainLogFile.Read(MultiSaeLog());
        using var sized = SKBitmap.Decode(TrainingCurves.Render(log, 1000, 700));
        Assert.NotNull(sized);
        Assert.Equal((1000, 700), (sized.Width, sized.Height));
        // Ten panels, three a row: four rows of 320 pixels under the title and the legend.
        using var auto = SKBitmap.Decode(TrainingCurves.Render(log));
        Assert.Equal(TrainingCurves.DefaultWidth, auto.Width);
        Assert.InRange(auto.Height, 4 * LinePanelsPlot.PanelHeight, 4 * LinePanelsPlot.PanelHeight + 120);
        // The lines are drawn in the first two colours of the palette (Category10: #1f77b4, #ff7f0e).
        int blue = 0, orange = 0;
        for (int y = 0; y < auto.Height; y++)
            for (int x = 0; x < auto.Width; x++)
            {
                var c = auto.GetPixel(x, y);
                if (Near(c, 0x1f, 0x77, 0xb4)) blue++;
                if (Near(c, 0xff, 0x7f, 0x0e)) orange++;
            }
        Assert.True(blue > 500 && orange > 500, $"{blue} blue and {orange} orange pixels");
    }

    private static bool Near(SKColor c, int r, int g, int b) => Math.Abs(c.Red - r) < 24 && Math.Abs(c.Green - g) < 24 && Math.Abs(c.Blue - b) < 24;

    [Fact]
    public void Save_writes_beside_the_log_of_a_run_folder_and_a_sub_folder_of_a_multi_sae_run_names_the_runs_log()
    {
        var run = Path.Combine(_dir, "run");
        Directory.CreateDirectory(Path.Combine(run, "topk"));
        File.Copy(MultiSaeLog(), Path.Combine(run, TrainLogFile.FileName));
        var png = TrainingCurves.Save(run);
        Assert.Equal(Path.Combine(Path.GetFullPath(run), TrainingCurves.FileName), png);
        Assert.NotNull(SKBitmap.Decode(png));
        var e = Assert.Throws<SaeSharpException>(() => TrainLogFile.Locate(Path.Combine(run, "topk")));
        Assert.Contains($"no {TrainLogFile.FileName} in this folder (a run of several SAEs keeps one log in the run's folder: {Path.Combine(Path.GetFullPath(run), TrainLogFile.FileName)})", e.Message);
    }
}
