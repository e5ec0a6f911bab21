using System.Diagnostics;

namespace SaeSharp.Saes;

/// <summary>
/// What the per-step pass switches (<see cref="SparsePassSwitch"/>, <see cref="CandidatePassSwitch"/>) measure: the time of
/// the pass a training step took, from the choice in the forward until the SAE's <see cref="Sae.BeforeOptimizerStep"/>
/// (so the backward pass is included), with the first step of each pass not counted (JIT compilation, first
/// allocations), folded into exponential averages that follow the machine's speed.
/// </summary>
internal sealed class PassClock(int passes)
{
    /// <summary>Weight of the old average when a new time comes in.</summary>
    public const double Keep = 0.7;

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

    /// <summary>The exponential average <paramref name="average"/> (NaN before the first value) with <paramref name="value"/> added.</summary>
    public static double Average(double average, double value) =>
        double.IsNaN(average) ? value : Keep * average + (1 - Keep) * value;
}
