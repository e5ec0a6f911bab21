using SaeSharp.Saes;
using static TorchSharp.torch;

namespace SaeSharp.Tests.Saes;

/// <summary>The per-step choice between the dense and the sparse ReLU training pass (<see cref="SparsePassSwitch"/>).</summary>
public class SparsePassSwitchTests
{
    [Fact]
    public void Before_any_timing_the_prior_switches_at_density_one_over_kappa()
    {
        var s = new SparsePassSwitch();
        long entries = 1_000_000;
        Assert.True(s.PredictSparse(0, entries));
        Assert.True(s.PredictSparse(1_000, entries));                        // 0.1 %
        Assert.True(s.PredictSparse((long)(entries / SparsePassSwitch.PriorCostRatio), entries));
        Assert.False(s.PredictSparse((long)(entries / SparsePassSwitch.PriorCostRatio) + 10, entries));
        Assert.False(s.PredictSparse(500_000, entries));                     // 50 %
    }

    [Fact]
    public void Measured_costs_decide_where_the_passes_break_even()
    {
        var s = new SparsePassSwitch();
        long entries = 1_000_000;
        s.Record(sparse: false, 500, 300_000);   // warm-up step: not counted
        s.Record(sparse: false, 100, 300_000);
        Assert.Equal(100, s.DenseMs);
        s.Record(sparse: true, 1_000, 20_000);   // warm-up step: not counted
        s.Record(sparse: true, 20, 20_000);      // 1 µs per entry: breaks even at 100,000 entries (10 %)
        Assert.Equal(0.001, s.SparseMsPerEntry, 12);
        Assert.True(s.PredictSparse(1_000, entries));
        Assert.True(s.PredictSparse(99_000, entries));
        Assert.False(s.PredictSparse(101_000, entries));
        Assert.False(s.PredictSparse(500_000, entries));
        // The averages follow the machine: the sparse pass gets 4× dearer, the break-even moves down.
        for (int i = 0; i < 30; i++) s.Record(sparse: true, 80, 20_000);
        Assert.True(s.PredictSparse(20_000, entries));
        Assert.False(s.PredictSparse(30_000, entries));
    }

    [Fact]
    public void An_old_sparse_estimate_within_a_factor_two_is_measured_again()
    {
        var s = new SparsePassSwitch();
        s.Record(false, 1, 1); s.Record(false, 100, 1);
        s.Record(true, 1, 1); s.Record(true, 30, 10_000);       // 3 µs per entry
        long entries = 1_000_000, nnz = 50_000;                  // predicted 150 ms against 100 ms dense
        Assert.False(s.PredictSparse(nnz, entries));
        for (int i = 0; i < SparsePassSwitch.RecheckSteps; i++) s.Record(false, 100, nnz);
        Assert.True(s.PredictSparse(nnz, entries));              // one step to re-measure
        Assert.False(s.PredictSparse(200_000, entries));         // 600 ms: not worth a look
    }

    [Fact]
    public void An_untried_sparse_pass_below_twice_the_prior_density_is_tried_after_a_while()
    {
        var s = new SparsePassSwitch();
        long entries = 1_000_000;
        long near = (long)(1.6 / SparsePassSwitch.PriorCostRatio * entries);  // prior: 1.6·D
        long far = (long)(2.4 / SparsePassSwitch.PriorCostRatio * entries);   // prior: 2.4·D
        s.Record(false, 1, near); s.Record(false, 100, near);                 // D = 100 ms
        for (int i = 1; i < SparsePassSwitch.RecheckSteps; i++)
        {
            Assert.False(s.PredictSparse(near, entries));
            s.Record(false, 100, near);
        }
        Assert.True(s.PredictSparse(near, entries));   // one look at the sparse pass
        Assert.False(s.PredictSparse(far, entries));   // too far off to be worth one
        // Its measured time then decides: 1.5 µs per entry at 80,000 entries is 120 ms, dearer than D.
        s.Record(true, 1, near); s.Record(true, 1.5 * near / 1000, near);
        Assert.False(s.PredictSparse(near, entries));
    }

    [Fact]
    public void One_slow_sparse_step_does_not_send_the_run_dense()
    {
        var s = new SparsePassSwitch();
        long entries = 1_000_000, nnz = 10_000;
        s.Record(false, 1, nnz); s.Record(false, 100, nnz);     // D = 100 ms
        s.Record(true, 1, nnz);                                  // warm-up
        for (int i = 0; i < 4; i++) s.Record(true, 10, nnz);     // 10 ms a sparse step
        s.Record(true, 500, nnz);                                // a garbage collection or a busy neighbour
        Assert.Equal(0.001, s.SparseMsPerEntry, 12);
        Assert.True(s.PredictSparse(nnz, entries));
        // An exponential average (weight 0.3) would have put the sparse step at 157 ms, above D, and the run dense.
        s.Record(true, 500, nnz);
        Assert.True(s.PredictSparse(nnz, entries));              // two of five slow: the median is still 10 ms
    }

    [Fact]
    public void A_sparse_pass_measured_again_after_a_pause_is_judged_by_its_new_time()
    {
        var s = new SparsePassSwitch();
        long entries = 1_000_000, nnz = 10_000;
        s.Record(false, 1, nnz); s.Record(false, 100, nnz);
        s.Record(true, 1, nnz);
        for (int i = 0; i < 3; i++) s.Record(true, 150, nnz);    // a slow spell: 150 ms against D = 100
        Assert.False(s.PredictSparse(nnz, entries));
        for (int i = 0; i < SparsePassSwitch.RecheckSteps; i++) s.Record(false, 100, nnz);
        Assert.True(s.PredictSparse(nnz, entries));              // the re-measurement
        s.Record(true, 10, nnz);                                 // the machine is quiet again
        Assert.Equal(0.001, s.SparseMsPerEntry, 12);             // the slow spell's times are too old to count
        Assert.True(s.PredictSparse(nnz, entries));
    }

    /// <summary>At the extremes a ReLU SAE at its default (measured) switch takes the right pass, step after step:
    /// 1 % positive pre-activations sparse, half of them dense.</summary>
    [Theory]
    [InlineData(0.01, true)]
    [InlineData(0.5, false)]
    public void A_standard_sae_takes_the_right_pass_at_the_extremes(double density, bool sparse)
    {
        using var scope = NewDisposeScope();
        const int n = 256, dIn = 32, dSae = 512;
        var sae = new StandardSae(new SaeConfig { DIn = dIn, DSae = dSae });
        Assert.True(double.IsNaN(sae.SparseTrainingDensity));
        sae.InitializeWeights(new Generator(1));
        var x = randn(n, dIn, generator: new Generator(2));
        using (no_grad())
        {
            var pre = sae.HiddenPre(x);
            sae.BEnc.sub_(pre.kthvalue((long)Math.Round(n * (1 - density)), 0).values); // each latent positive on `density` of the rows
        }
        for (int step = 0; step < 4; step++)
        {
            using var stepScope = NewDisposeScope();
            sae.zero_grad();
            var ctx = new SaeTrainContext { Step = step };
            sae.TrainingForward(x, x, ctx).Loss.backward();
            sae.BeforeOptimizerStep(ctx);
            Assert.Equal(sparse, sae.LastTrainingPassSparse);
        }
    }
}
