using SaeSharp.Kernels;

namespace SaeSharp.Saes;

/// <summary>
/// <see cref="CandidatePass.Auto"/> for the TopK family: whether a training step selects its latents through the exact
/// candidate pass (<see cref="CandidateEncoder"/>) or through the plain encoder (float32, or bfloat16 with autocast),
/// from their measured cost on this machine at the run's shape. The first steps alternate between the two, starting with
/// the plain encoder, until each has <see cref="TimedTrials"/> timed steps after its warm-up step (<see cref="PassClock"/>:
/// from the choice until the optimizer step, backward included, as <see cref="SparsePassSwitch"/> times the ReLU passes);
/// then the one with the lower median of its last <see cref="Window"/> times runs (<see cref="RecentTimes"/>: one slow trial
/// step does not decide), and the other is timed again for <see cref="RecheckTrials"/> steps every
/// <see cref="RecheckSteps"/> steps, so a slow minute during the trials does not decide the whole run. Both choose the same latents (the candidate
/// pass is exact), so the switch changes only the speed. The decision, and any later change, goes to
/// <see cref="CpuKernels.VerboseLog"/> (the CLI's <c>--verbose</c>).
/// </summary>
internal sealed class CandidatePassSwitch
{
    /// <summary>Timed steps of each pass before the first decision (after one warm-up step each).</summary>
    public const int TimedTrials = 3;

    /// <summary>Times per pass the choice compares the medians of.</summary>
    public const int Window = 5;

    /// <summary>Steps of the chosen pass after which the other one is timed again.</summary>
    public const int RecheckSteps = 250;

    /// <summary>Consecutive steps of the other pass at a recheck, after which the medians decide again. Its older times
    /// have expired by then, so with one step its median was that step's time alone, and the choice flipped at most
    /// rechecks of a run whose two passes were within the host's noise (BENCHMARKS.md, "TopK at d_in 128").</summary>
    public const int RecheckTrials = 3;

    private const int Plain = 0, Candidate = 1;
    private readonly PassClock _clock = new(2);
    private readonly int[] _timed = new int[2];
    private readonly RecentTimes _plain = new(Window, RecheckSteps), _candidate = new(Window, RecheckSteps);
    private int _trialSteps;
    private long _recorded;
    private long _sinceOther;
    private int _recheckLeft;
    private bool _choice;
    private bool? _logged;

    /// <summary>Median time of a step through the plain encoder in ms (NaN before one was timed).</summary>
    public double PlainMs => _plain.Median;

    /// <summary>Median time of a step through the candidate pass in ms (NaN before one was timed).</summary>
    public double CandidateMs => _candidate.Median;

    /// <summary>The kernel path named in the log line.</summary>
    public KernelPath Path { get; set; } = CpuKernels.Path;

    /// <summary>Whether the trials are over (<see cref="TimedTrials"/> timed steps of each pass).</summary>
    public bool Decided => _timed[Plain] >= TimedTrials && _timed[Candidate] >= TimedTrials;

    /// <summary>Whether this step should take the candidate pass; starts timing the chosen pass.</summary>
    public bool Choose()
    {
        bool candidate = PredictCandidate();
        if (!Decided) _trialSteps++;
        _clock.Start(candidate ? Candidate : Plain);
        return candidate;
    }

    /// <summary>The choice for the next step from the measurements so far, without timing anything.</summary>
    public bool PredictCandidate()
    {
        if (!Decided) return _trialSteps % 2 == 1;
        return _recheckLeft > 0 ? !_choice : _choice;
    }

    /// <summary>Ends the timing started by <see cref="Choose"/> (called before the optimizer step); a no-op when nothing is timed.</summary>
    public void Stop()
    {
        if (_clock.Stop() is { } t) Record(t.Pass == Candidate, t.Ms);
    }

    /// <summary>The choice after <paramref name="current"/>: the other pass once its median is <see cref="Margin"/> below
    /// the current one's (equal passes within the host's noise do not swap at every step).</summary>
    private bool Keep(bool current)
    {
        double mine = current ? CandidateMs : PlainMs, other = current ? PlainMs : CandidateMs;
        return other < mine * (1 - Margin) ? !current : current;
    }

    /// <summary>How much faster (relative median) the other pass must be to take over after the first decision.</summary>
    public const double Margin = 0.05;

    /// <summary>Adds one measured step: <paramref name="ms"/> through the candidate pass or the plain encoder.</summary>
    public void Record(bool candidate, double ms)
    {
        int pass = candidate ? Candidate : Plain;
        if (!_clock.Counts(pass)) return;
        bool wasDecided = Decided;
        (candidate ? _candidate : _plain).Add(++_recorded, ms);
        _timed[pass]++;
        if (!Decided) return;
        if (wasDecided && candidate == _choice && ++_sinceOther >= RecheckSteps)
        {
            (_recheckLeft, _sinceOther) = (RecheckTrials, 0);
            return;
        }
        if (wasDecided && candidate != _choice && _recheckLeft > 0 && --_recheckLeft > 0) return;
        bool chosen = _choice = wasDecided ? Keep(_choice) : CandidateMs < PlainMs;
        if (_logged == chosen) return;
        _logged = chosen;
        CpuKernels.VerboseLog?.Invoke(
            $"TopK selection: candidate pass ({CpuKernels.Name(Path)}) {CandidateMs:F0} ms/step, plain encoder {PlainMs:F0} ms/step "
            + $"(medians of timed steps after a warm-up each): {(chosen ? "candidate pass" : "plain encoder")}");
    }
}
