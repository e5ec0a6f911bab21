using SaeSharp.Training;
using SkiaSharp;

namespace SaeSharp.Tests.Cli;

/// <summary><c>sae train</c> draws OUT/training_curves.png; <c>sae plot-log</c> draws any run's log, and its errors are
/// one line naming the file (and the line).</summary>
public class PlotLogCommandTests : IDisposable
{
    private readonly string _dir = Directory.CreateTempSubdirectory("cli-plot-log-").FullName;
    public void Dispose() => Directory.Delete(_dir, true);

    private string P(params string[] parts) => Path.Combine([_dir, .. parts]);

    private static void Ok((int Exit, string Out, string Err) r) => Assert.True(r.Exit == 0, r.Err + r.Out);

    private static SKBitmap Png(string path)
    {
        Assert.True(File.Exists(path), path);
        return SKBitmap.Decode(path) ?? throw new Xunit.Sdk.XunitException($"{path} is not a picture SkiaSharp decodes");
    }

    /// <summary><c>sae plot-log RUN</c> names the picture as <c>sae train --out RUN</c> does: RUN as given joined with
    /// training_curves.png (it printed the full path, with a relative or "..". RUN given, where train printed RUN's form).</summary>
    [Fact]
    public void Plot_log_prints_the_curves_path_as_train_does()
    {
        Ok(CliRunner.Run("synth", "--out", P("data"), "--d-in", "8", "--features", "16", "--rows", "1000", "--eval-rows", "0"));
        string run = Path.Combine(P("data"), "..", "run");   // not the full path's form
        string expected = Path.Combine(run, TrainingCurves.FileName);
        var r = CliRunner.Run("train", "--activations", P("data", "train.safetensors"), "--arch", "topk", "--k", "2", "--dict-size", "16",
            "--steps", "5", "--batch-size", "32", "--out", run, "--eval-rows", "64");
        Ok(r);
        Assert.Contains($"training curves: {expected}", r.Out.ReplaceLineEndings("\n").Split('\n'));
        r = CliRunner.Run("plot-log", run);
        Ok(r);
        Assert.Equal($"wrote {expected}", r.Out.Trim());
        r = CliRunner.Run("plot-log", Path.Combine(run, TrainLogFile.FileName));
        Ok(r);
        Assert.Equal($"wrote {expected}", r.Out.Trim());
    }

    [Fact]
    public void Train_writes_the_curves_of_a_multi_sae_run_and_plot_log_redraws_them_at_a_requested_size()
    {
        Ok(CliRunner.Run("synth", "--out", P("data"), "--d-in", "16", "--features", "32", "--rows", "4000", "--eval-rows", "0"));
        var r = CliRunner.Run("train", "--activations", P("data", "train.safetensors"), "--arch", "topk,relu", "--k", "2", "--dict-size", "32",
            "--steps", "20", "--batch-size", "64", "--out", P("run"), "--eval-rows", "256");
        Ok(r);
        Assert.Contains($"training curves: {P("run", TrainingCurves.FileName)}", r.Out);
        using (var png = Png(P("run", TrainingCurves.FileName)))
            Assert.Equal(TrainingCurves.DefaultWidth, png.Width);
        // The picture's lines are the log's: one per SAE.
        Assert.Equal(["topk", "relu"], TrainLogFile.Read(P("run", TrainLogFile.FileName)).Saes);

        r = CliRunner.Run("plot-log", P("run", TrainLogFile.FileName), "--out", P("pictures", "c.png"), "--width", "900", "--height", "600");
        Ok(r);
        Assert.Equal($"wrote {P("pictures", "c.png")}", r.Out.Trim());
        using (var png = Png(P("pictures", "c.png")))
            Assert.Equal((900, 600), (png.Width, png.Height));
    }

    [Fact]
    public void A_missing_or_corrupt_log_is_a_one_line_error_naming_the_file_and_line()
    {
        var r = CliRunner.Run("plot-log", P("nowhere"));
        Assert.Equal(1, r.Exit);
        Assert.Equal($"error: {P("nowhere")}: no such file or folder", r.Err.Trim());

        Directory.CreateDirectory(P("run"));
        r = CliRunner.Run("plot-log", P("run"));
        Assert.Equal(1, r.Exit);
        Assert.Equal($"error: {P("run")}: no {TrainLogFile.FileName} in this folder", r.Err.Trim());

        File.WriteAllText(P("run", TrainLogFile.FileName), """{"step":1,"tokens":8,"sae":"s","l0":4}""" + "\nnot json\n");
        r = CliRunner.Run("plot-log", P("run"));
        Assert.Equal(1, r.Exit);
        Assert.StartsWith($"error: {P("run", TrainLogFile.FileName)} line 2: not JSON", r.Err.Trim());
        Assert.Single(r.Err.Trim().Split('\n'));
        Assert.False(File.Exists(P("run", TrainingCurves.FileName)));

        File.WriteAllText(P("run", TrainLogFile.FileName), "");
        r = CliRunner.Run("plot-log", P("run"));
        Assert.Equal($"error: {P("run", TrainLogFile.FileName)}: empty: no logged steps", r.Err.Trim());

        // --out may not replace the log it reads.
        File.WriteAllText(P("run", TrainLogFile.FileName), """{"step":1,"tokens":8,"sae":"s","l0":4}""" + "\n");
        r = CliRunner.Run("plot-log", P("run"), "--out", P("run", TrainLogFile.FileName));
        Assert.Equal(1, r.Exit);
        Assert.Contains("would replace RUN", r.Err);
        Assert.Equal("""{"step":1,"tokens":8,"sae":"s","l0":4}""" + "\n", File.ReadAllText(P("run", TrainLogFile.FileName)));
    }
}
