using System.Diagnostics;

namespace SaeSharp;

/// <summary>
/// Progress of a long operation (a pass over a dataset, pages written, steps), reported through
/// <see cref="IProgress{T}"/>: units done, the total when known, and the time so far; the rate and ETA follow from them.
/// Library code reports it; the CLI draws it on a terminal and stays quiet in pipes.
/// </summary>
/// <param name="Unit">What is counted: "tokens", "windows", "pages", "steps".</param>
/// <param name="Done">Units done so far (never decreasing within one operation).</param>
/// <param name="Total">Units in the whole operation, when known in advance.</param>
/// <param name="Elapsed">Time since the operation started.</param>
public sealed record WorkProgress(string Unit, long Done, long? Total, TimeSpan Elapsed)
{
    /// <summary>Units per second so far.</summary>
    public double PerSecond => Elapsed.TotalSeconds > 0 ? Done / Elapsed.TotalSeconds : 0;

    /// <summary>Time to the total at the average rate so far; null while the total or the rate is unknown.</summary>
    public TimeSpan? Eta => Total is long t && Done > 0 && t >= Done && Elapsed > TimeSpan.Zero
        ? TimeSpan.FromSeconds(Elapsed.TotalSeconds * (t - Done) / Done)
        : null;
}

/// <summary>Counts the units of one operation and reports each change as a <see cref="WorkProgress"/> (the clock starts
/// at construction). A null sink makes it a no-op.</summary>
public sealed class ProgressCounter(IProgress<WorkProgress>? sink, string unit, long? total = null)
{
    private readonly Stopwatch _clock = Stopwatch.StartNew();

    /// <summary>Units done so far.</summary>
    public long Done { get; private set; }
    /// <summary>The expected total; may be set once it becomes known.</summary>
    public long? Total { get; set; } = total;

    /// <summary>Adds <paramref name="units"/> done and reports.</summary>
    public void Add(long units)
    {
        Done += units;
        sink?.Report(new WorkProgress(unit, Done, Total, _clock.Elapsed));
    }
}
