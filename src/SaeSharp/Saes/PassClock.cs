using System.Diagnostics;

namespace SaeSharp.Saes;

/// <summary>
/// What the per-step pass switches (<see cref="SparsePassSwitch"/>, <see cref="CandidatePassSwitch"/>) measure: the time of
/// the pass a training step took, from the choice in the forward until the SAE's <see cref="Sae.BeforeOptimizerStep"/>
/// (so the backward pass is included), with the first step of each pass not counted (JIT compilation, first
/// allocations), kept per pass in <see cref="RecentTimes"/>.
/// </summary>
internal sealed class PassClock(int passes)
{
    private readonly Stopwatch _clock = new();
    private readonly bool[] _warm = new bool[passes];
    private int _timing = -1;
    private long _work;

    /// <summary>Starts timing <paramref name="pass"/> with <paramref name="work"/> units of work (restarts a timing left open).</summary>
    public void Start(int pass, long work = 1)
    {
        _timing = pass;
        _work = work;
        _clock.Restart();
    }

    /// <summary>Ends the timing started by <see cref="Start"/>: the pass, its milliseconds and work; null when nothing is timed.</summary>
    public (int Pass, double Ms, long Work)? Stop()
    {
        if (_timing < 0) return null;
        var r = (_timing, _clock.Elapsed.TotalMilliseconds, _work);
        _timing = -1;
        return r;
    }

    /// <summary>Whether a time of <paramref name="pass"/> counts: false for the first one of each pass (its warm-up).</summary>
    public bool Counts(int pass)
    {
        if (_warm[pass]) return true;
        _warm[pass] = true;
        return false;
    }
}

/// <summary>
/// One pass's recent times for the pass switches: the median of the last <paramref name="window"/> values, none recorded
/// more than <paramref name="maxAge"/> steps before the newest. One or two slow steps (a garbage collection, another process
/// on the machine) do not move it, and a pass timed again after a pause is judged by its new times alone.
/// </summary>
internal sealed class RecentTimes(int window, long maxAge)
{
    private readonly Queue<(long Step, double Value)> _times = new();

    /// <summary>The median (NaN before the first value).</summary>
    public double Median { get; private set; } = double.NaN;

    /// <summary>Adds <paramref name="value"/> recorded at <paramref name="step"/> (non-decreasing).</summary>
    public void Add(long step, double value)
    {
        while (_times.Count > 0 && (_times.Count >= window || _times.Peek().Step < step - maxAge)) _times.Dequeue();
        _times.Enqueue((step, value));
        var sorted = _times.Select(t => t.Value).Order().ToArray();
        int m = sorted.Length / 2;
        Median = sorted.Length % 2 == 1 ? sorted[m] : (sorted[m - 1] + sorted[m]) / 2;
    }
}
