using System.CommandLine;
using SaeSharp.Training;

namespace SaeSharp.Cli.Commands;

/// <summary><c>sae plot-log RUN|train_log.jsonl [--out PNG]</c>: draws a run's training log as
/// <c>training_curves.png</c> (<see cref="TrainingCurves"/>), as <c>sae train</c> does at the end of a run.</summary>
internal static class PlotLogCommand
{
    public static Command Create()
    {
        var run = new Argument<string>("run") { Description = "A run's output folder (sae train --out) or its train_log.jsonl" };
        var output = new Option<string?>("--out") { Description = "PNG to write (default: training_curves.png beside the log)" };
        var width = new Option<int>("--width") { Description = "Width in pixels", DefaultValueFactory = _ => TrainingCurves.DefaultWidth }.Positive();
        var height = new Option<int?>("--height") { Description = "Height in pixels (default: 320 per row of panels, plus the title and legend)" }.Positive();
        var command = new Command("plot-log", "Draw a training run's train_log.jsonl as curves (losses, L0, explained variance, dead fraction, lr, λ, rows/s; resamplings dashed) over training tokens")
            { run, output, width, height };
        Cli.SetAction(command, parse =>
        {
            var log = TrainLogFile.Locate(parse.GetValue(run)!);
            if (parse.GetValue(output) is { } o) OutputGuard.RefuseReplacingInput("--out", o, new CommandInput("RUN", log, InputKind.Whole));
            var png = TrainingCurves.Save(log, parse.GetValue(output), parse.GetValue(width), parse.GetValue(height));
            Console.WriteLine($"wrote {png}");
            return 0;
        });
        return command;
    }
}
