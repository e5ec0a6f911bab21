namespace SaeSharp.Saes;

/// <summary>
/// The per-step choice of a ReLU SAE between its dense and its sparse training pass, from their measured cost at the run's
/// shape (docs/relu-training.md). Both passes start with the same encoder product and ReLU; what follows costs, for
/// the dense pass, four GEMMs of N·d_sae·d whatever the sparsity (a time D), and for the sparse pass a scan of the
/// [N, d_sae] matrix plus work proportional to the nnz positive entries (a time s·nnz). The switch times that remainder of
/// every step (from the choice until <see cref="Stop"/>, which the SAE calls before the optimizer step, so the backward
/// pass is included) and takes the sparse pass when s·nnz &lt; D. D and s are medians of each pass's last
/// <see cref="Window"/> times, none older than <see cref="RecheckSteps"/> steps before the newest (<see cref="RecentTimes"/>).
/// Until a sparse step has been timed, s is the prior κ·D/(N·d_sae) with κ = <see cref="PriorCostRatio"/>: the sparse
/// pass is first tried at density 1/κ, or after <see cref="RecheckSteps"/> dense steps below density 2/κ (the prior is
/// a guess: with the source-blocked kernels the crossover at d_in 512 lies near 13 %). A sparse time measured long ago
/// is re-measured (one sparse step) every <see cref="RecheckSteps"/> steps while the estimate is within a factor two of D.
/// The first step of each pass is not counted (JIT compilation): <see cref="PassClock"/>.
/// </summary>
internal sealed class SparsePassSwitch
{
    /// <summary>The prior ratio of the sparse pass's cost per positive entry to the dense pass's cost per matrix entry.
    /// Measured on the AVX-512 machine (BENCHMARKS.md, crossover table): 16 at 1 % density, 17 at 5 %, 31 at 10 %.</summary>
    public const double PriorCostRatio = 20;

    /// <summary>The density at which the prior tries the sparse pass first (1/κ): the fixed threshold of deterministic runs.</summary>
    public const double PriorDensity = 1 / PriorCostRatio;

    /// <summary>Steps after which a sparse time is measured again.</summary>
    public const int RecheckSteps = 50;

    /// <summary>Times per pass the estimates are the median of.</summary>
    public const int Window = 5;

    private readonly PassClock _clock = new(2);
    private readonly RecentTimes _dense = new(Window, RecheckSteps), _sparse = new(Window, RecheckSteps);
    private long _recorded;
    private long _stepsSinceSparseMeasured;

    /// <summary>Median dense remainder in ms (NaN before the first dense step was timed).</summary>
    public double DenseMs => _dense.Median;

    /// <summary>Median sparse remainder per positive entry in ms (NaN before the first sparse step was timed).</summary>
    public double SparseMsPerEntry => _sparse.Median;

    /// <summary>Whether a step with <paramref name="positive"/> positive entries of <paramref name="entries"/> = N·d_sae
    /// should take the sparse pass; starts timing the chosen pass.</summary>
    public bool Choose(long positive, long entries)
    {
        bool sparse = PredictSparse(positive, entries);
        _clock.Start(sparse ? 1 : 0, Math.Max(1, positive));
        return sparse;
    }

    /// <summary>The choice for these counts from the current estimates, without timing anything.</summary>
    public bool PredictSparse(long positive, long entries)
    {
        if (positive == 0) return true;
        if (double.IsNaN(DenseMs)) return positive * PriorCostRatio <= entries;
        double perEntry = double.IsNaN(SparseMsPerEntry) ? PriorCostRatio * DenseMs / entries : SparseMsPerEntry;
        double sparseMs = perEntry * positive;
        if (sparseMs < DenseMs) return true;
        // Measure an old sparse estimate, or the untried prior, that is not far off.
        return _stepsSinceSparseMeasured >= RecheckSteps && sparseMs < 2 * DenseMs;
    }

    /// <summary>Ends the timing started by <see cref="Choose"/> (the step's backward pass is done); a no-op when nothing is timed.</summary>
    public void Stop()
    {
        if (_clock.Stop() is { } t) Record(t.Pass == 1, t.Ms, t.Work);
    }

    /// <summary>Adds one measured remainder: <paramref name="ms"/> of a dense or sparse pass with <paramref name="positive"/> entries.</summary>
    public void Record(bool sparse, double ms, long positive)
    {
        if (!_clock.Counts(sparse ? 1 : 0)) return;
        long step = ++_recorded;
        if (sparse)
        {
            _sparse.Add(step, ms / Math.Max(1, positive));
            _stepsSinceSparseMeasured = 0;
        }
        else
        {
            _dense.Add(step, ms);
            _stepsSinceSparseMeasured++;
        }
    }
}
