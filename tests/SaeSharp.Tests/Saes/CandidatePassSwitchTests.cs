using SaeSharp.Kernels;
using SaeSharp.Saes;
using SaeSharp.Tests.Kernels;
using static TorchSharp.torch;
using static SaeSharp.Tests.Saes.SaeTestUtil;

namespace SaeSharp.Tests.Saes;

/// <summary><c>--candidate-pass auto</c>: the TopK family's measured choice between the exact candidate pass and the plain
/// encoder (<see cref="CandidatePassSwitch"/>).</summary>
[Collection(KernelPathCollection.Name)]
public class CandidatePassSwitchTests
{
    /// <summary>Feeds the switch one step of whatever it chooses, timed at <paramref name="plainMs"/> or <paramref name="candidateMs"/>.</summary>
    private static bool Step(CandidatePassSwitch s, double plainMs, double candidateMs)
    {
        bool c = s.PredictCandidate();
        s.Choose();
        s.Record(c, c ? candidateMs : plainMs);
        return c;
    }

    [Theory]
    [InlineData(100, 60, true)]
    [InlineData(100, 140, false)]
    public void The_trials_alternate_then_the_faster_pass_runs(double plainMs, double candidateMs, bool candidateWins)
    {
        var s = new CandidatePassSwitch();
        var trial = new List<bool>();
        // Warm-up of each pass, then TimedTrials timed steps of each, alternating, the plain encoder first.
        for (int i = 0; i < 2 * (CandidatePassSwitch.TimedTrials + 1); i++)
        {
            Assert.False(s.Decided);
            trial.Add(Step(s, plainMs, candidateMs));
        }
        Assert.Equal(Enumerable.Range(0, trial.Count).Select(i => i % 2 == 1), trial);
        Assert.True(s.Decided);
        Assert.Equal(plainMs, s.PlainMs, 9);
        Assert.Equal(candidateMs, s.CandidateMs, 9);
        for (int i = 0; i < CandidatePassSwitch.RecheckSteps; i++) Assert.Equal(candidateWins, Step(s, plainMs, candidateMs));
        // Then RecheckTrials steps of the other pass, to follow the machine, and the faster one again.
        for (int i = 0; i < CandidatePassSwitch.RecheckTrials; i++) Assert.Equal(!candidateWins, Step(s, plainMs, candidateMs));
        Assert.Equal(candidateWins, Step(s, plainMs, candidateMs));
        Assert.Equal(candidateWins, Step(s, plainMs, candidateMs));
    }

    /// <summary>A recheck that finds the other pass faster on all its steps switches to it; one fast step among slow
    /// ones (the host's noise) does not.</summary>
    [Fact]
    public void A_recheck_decides_on_the_median_of_its_steps()
    {
        var s = new CandidatePassSwitch();
        while (!s.Decided) Step(s, 100, 80);
        Assert.True(s.PredictCandidate());
        for (int i = 1; i < CandidatePassSwitch.RecheckSteps; i++) Step(s, 100, 80);
        Assert.True(Step(s, 100, 80));
        // The recheck: the plain encoder once fast (a quiet moment), then at its usual time: the candidate pass stays.
        var recheck = new[] { 50.0, 100, 100 };
        foreach (double ms in recheck) Assert.False(Step(s, ms, 80));
        Assert.True(s.PredictCandidate());
        // The next recheck finds the plain encoder faster on every step: it takes over.
        for (int i = 0; i < CandidatePassSwitch.RecheckSteps; i++) Assert.True(Step(s, 60, 80));
        for (int i = 0; i < CandidatePassSwitch.RecheckTrials; i++) Assert.False(Step(s, 60, 80));
        Assert.False(s.PredictCandidate());
    }

    /// <summary>After the first decision the other pass takes over only when its median is 5 % lower.</summary>
    [Fact]
    public void Passes_within_the_margin_do_not_swap()
    {
        var s = new CandidatePassSwitch();
        while (!s.Decided) Step(s, 100, 80);
        for (int i = 0; i < 5; i++) Assert.True(Step(s, 100, 98));  // 2 % faster than the plain encoder's 100
        for (int i = 0; i < 3; i++) Step(s, 100, 103);              // 3 % slower: the median 103 is within the margin
        Assert.True(s.PredictCandidate());
        for (int i = 0; i < 3; i++) Step(s, 100, 110);              // 10 % slower: the plain encoder takes over
        Assert.False(s.PredictCandidate());
    }

    [Fact]
    public void Warm_up_steps_do_not_count_and_a_recheck_can_change_the_choice()
    {
        var s = new CandidatePassSwitch();
        s.Record(false, 10_000); // JIT: ignored
        s.Record(true, 20_000);
        s.Record(false, 100); s.Record(false, 100); s.Record(false, 100);
        s.Record(true, 80); s.Record(true, 80); s.Record(true, 80);
        Assert.True(s.Decided);
        Assert.True(s.PredictCandidate());
        // The candidate pass gets slower (a busy minute): its median passes the plain one's and the choice follows.
        for (int i = 0; i < 3; i++) s.Record(true, 200);
        Assert.False(s.PredictCandidate());
        var lines = new List<string>();
        CpuKernels.VerboseLog = lines.Add;
        try
        {
            s.Record(true, 50); s.Record(true, 50); s.Record(true, 50);
            Assert.True(s.PredictCandidate());
            Assert.Single(lines);
            Assert.Contains("candidate pass", lines[0].Split(':')[^1]);
        }
        finally { CpuKernels.VerboseLog = null; }
    }

    /// <summary>With <c>auto</c>, a TopK SAE runs both selections during its trial steps, and every step selects the latents
    /// (and values) of the plain float32 encoder.</summary>
    [Fact]
    public void Auto_tries_both_passes_and_every_step_selects_the_float32_latents()
    {
        const int dIn = 64, dSae = 256, k = 8, n = 48;
        if (!CandidateEncoder.Applies(CpuKernels.Path, dSae)) return; // no candidate path on this CPU: auto is plain float32
        using var scope = NewDisposeScope();
        var sae = (TopKFamilySae)Make(new SaeConfig { Architecture = SaeArchitectures.TopK, DIn = dIn, DSae = dSae, K = k }, seed: 3);
        var x = randn(n, dIn, generator: new Generator(4)) * 3;
        for (int step = 0; step < 2 * (CandidatePassSwitch.TimedTrials + 1); step++)
        {
            using var stepScope = NewDisposeScope();
            var ctx = new SaeTrainContext { Step = step };
            sae.Training.CandidatePass = CandidatePass.Off;
            var plain = F(sae.TrainingForward(x, x, ctx).FeatureActs);
            sae.Training.CandidatePass = CandidatePass.Auto;
            sae.zero_grad();
            var o = sae.TrainingForward(x, x, ctx);
            o.Loss.backward();
            sae.BeforeOptimizerStep(ctx);
            var acts = F(o.FeatureActs);
            for (int e = 0; e < acts.Length; e++)
            {
                Assert.Equal(plain[e] != 0, acts[e] != 0);
                Assert.Equal(plain[e], acts[e], 1e-4f);
            }
        }
        Assert.True(sae.CandidateSwitch.Decided);
        Assert.False(double.IsNaN(sae.CandidateSwitch.CandidateMs));
        Assert.False(double.IsNaN(sae.CandidateSwitch.PlainMs));
    }
}
