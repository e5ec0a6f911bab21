using TorchSharp;

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
        var given = paths.ToList();
        var files = ActivationFileSource.ExpandPaths(given);
        long total = ActivationFileSource.CountRows(files, options);
        if (evalRows <= 0 || evalRows >= total)
            throw new SaeSharpException($"--eval-rows must be between 1 and {total - 1} (the files hold {total} rows), got {evalRows}; leave it out to hold out a tenth of a small file");
        var train = new ActivationFileSource(files, options with { RowStart = 0, RowCount = total - evalRows });
        try
        {
            var eval = new ActivationFileSource(files, EvalOptions(options) with { RowStart = total - evalRows, RowCount = evalRows });
            try
            {
                CheckReadable(eval);
            }
            catch
            {
                eval.Dispose();
                throw;
            }
            train.Metadata = eval.Metadata = ActivationFileSource.CacheFolderMetadata(given);
            return (train, eval);
        }
        catch
        {
            train.Dispose();
            throw;
        }
    }

    /// <summary>Reads every held-out row once and rewinds: a NaN/Inf, a truncated shard or a file changed since it was
    /// opened in the held-out rows is an error naming the file and row before training starts, not after its last step
    /// (the rows are at most <see cref="DefaultEvalRows"/> unless asked for, so this costs one read of them).</summary>
    private static void CheckReadable(ActivationFileSource eval)
    {
        var start = eval.SaveState();
        while (true)
        {
            using var scope = torch.NewDisposeScope();
            using var batch = eval.Next(eval.Options.ChunkRows);
            if (batch is null) break;
        }
        eval.LoadState(start);
    }

    /// <summary>The held-out rows used when none are asked for: 16,384 rows (SAELens-sized eval), but never more than a
    /// tenth of the data, and at least one row when there are two or more, so a newcomer's small file still trains.</summary>
    public const long DefaultEvalRows = 16384;

    /// <summary>The held-out share for <paramref name="total"/> rows: min(<see cref="DefaultEvalRows"/>, total / 10), at least 1.</summary>
    public static long DefaultEvalRowsFor(long total) => total < 2 ? 0 : Math.Max(1, Math.Min(DefaultEvalRows, total / 10));

    /// <summary>
    /// <see cref="HoldOutLastRows"/> with <paramref name="evalRows"/> given by the user, or, when null, a held-out share
    /// that fits the data (<see cref="DefaultEvalRowsFor"/>). An explicit count that leaves no training rows is an error.
    /// </summary>
    public static (ActivationFileSource Train, ActivationFileSource Eval) HoldOut(
        IEnumerable<string> paths, long? evalRows, ActivationFileSourceOptions? options = null)
    {
        options ??= new ActivationFileSourceOptions();
        var given = paths.ToList();
        var files = ActivationFileSource.ExpandPaths(given);
        long total = ActivationFileSource.CountRows(files, options);
        if (evalRows is null && total < 2)
            throw new SaeSharpException($"the activation files hold {total} row(s); training needs at least 2 (one to train on, one held out)");
        var (train, eval) = HoldOutLastRows(files, evalRows ?? DefaultEvalRowsFor(total), options);
        train.Metadata = eval.Metadata = ActivationFileSource.CacheFolderMetadata(given);
        return (train, eval);
    }

    /// <summary>An evaluation source over separate files (every row, in order, no looping).</summary>
    public static ActivationFileSource EvalFiles(IEnumerable<string> paths, ActivationFileSourceOptions? options = null) =>
        new(paths, EvalOptions(options ?? new ActivationFileSourceOptions()) with { RowStart = 0, RowCount = null });

    private static ActivationFileSourceOptions EvalOptions(ActivationFileSourceOptions o) => o with { Shuffle = false, Loop = false };
}
