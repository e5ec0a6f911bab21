namespace SaeSharp.Activations;

/// <summary>Held-out evaluation data: the last rows of a dataset, kept out of training.</summary>
public static class ActivationSplit
{
    /// <summary>
    /// Splits the concatenated files into a training source (all rows but the last <paramref name="evalRows"/>, with
    /// <paramref name="options"/>' shuffling and looping) and an evaluation source over the last <paramref name="evalRows"/>
    /// rows, read in order without looping.
    /// </summary>
    public static (ActivationFileSource Train, ActivationFileSource Eval) HoldOutLastRows(
        IEnumerable<string> paths, long evalRows, ActivationFileSourceOptions? options = null)
    {
        options ??= new ActivationFileSourceOptions();
        var files = ActivationFileSource.ExpandPaths(paths);
        long total = ActivationFileSource.CountRows(files, options);
        if (evalRows <= 0 || evalRows >= total)
            throw new SaeSharpException($"held-out rows must be between 1 and {total - 1} (the files hold {total} rows), got {evalRows}");
        var train = new ActivationFileSource(files, options with { RowStart = 0, RowCount = total - evalRows });
        try
        {
            var eval = new ActivationFileSource(files, EvalOptions(options) with { RowStart = total - evalRows, RowCount = evalRows });
            return (train, eval);
        }
        catch
        {
            train.Dispose();
            throw;
        }
    }

    /// <summary>An evaluation source over separate files (every row, in order, no looping).</summary>
    public static ActivationFileSource EvalFiles(IEnumerable<string> paths, ActivationFileSourceOptions? options = null) =>
        new(paths, EvalOptions(options ?? new ActivationFileSourceOptions()) with { RowStart = 0, RowCount = null });

    private static ActivationFileSourceOptions EvalOptions(ActivationFileSourceOptions o) => o with { Shuffle = false, Loop = false };
}
