using SaeSharp.Kernels;
using SaeSharp.Saes;
using TorchSharp;
using static TorchSharp.torch;
using static SaeSharp.Tests.Saes.SaeTestUtil;

namespace SaeSharp.Tests.Saes;

/// <summary>Invariants every architecture must satisfy.</summary>
public class SaeArchitectureTests
{
    /// <summary>The trainable architectures (the inference-only temporal SAE: TemporalSaeTests).</summary>
    public static TheoryData<string> Architectures => new(SaeArchitectures.All.Where(a => !SaeArchitectures.Get(a).InferenceOnly));

    private static SaeConfig Cfg(string arch) => new()
    {
        Architecture = arch,
        DIn = 4,
        DSae = 8,
        K = arch.Contains("topk") ? 2 : null,
        MatryoshkaWidths = arch == SaeArchitectures.MatryoshkaBatchTopK ? [3, 8] : null,
    };

    /// <summary>SAELens state_dict keys and shapes (SAELens v6 inference SAEs; BatchTopK-family as saved: JumpReLU).</summary>
    [Theory]
    [MemberData(nameof(Architectures))]
    public void StateDictKeysAndShapesAreSaeLens(string arch)
    {
        var expected = new Dictionary<string, long[]>
        {
            ["W_enc"] = [4, 8], ["W_dec"] = [8, 4], ["b_dec"] = [4],
        };
        if (arch == SaeArchitectures.Gated) { expected["b_gate"] = [8]; expected["r_mag"] = [8]; expected["b_mag"] = [8]; }
        else expected["b_enc"] = [8];
        if (arch is SaeArchitectures.JumpReLU or SaeArchitectures.BatchTopK or SaeArchitectures.MatryoshkaBatchTopK or SaeArchitectures.JumpReluSkipTranscoder)
            expected["threshold"] = [8];
        // SAELens's skip_transcoder and (6.37) jumprelu_skip_transcoder: W_skip [d_out, d_in]
        if (arch is SaeArchitectures.SkipTranscoder or SaeArchitectures.JumpReluSkipTranscoder) expected["W_skip"] = [4, 4];
        // SAELens 6.37's matching_pursuit is tied (encoder W_decᵀ): its state_dict is W_dec and b_dec only.
        if (arch == SaeArchitectures.MatchingPursuit) { expected.Remove("W_enc"); expected.Remove("b_enc"); }
        var sd = SaeFactory.Create(Cfg(arch)).state_dict();
        Assert.Equal(expected.Keys.OrderBy(k => k, StringComparer.Ordinal), sd.Keys.OrderBy(k => k, StringComparer.Ordinal));
        foreach (var (key, shape) in expected) Assert.Equal(shape, sd[key].shape);
    }

    [Theory]
    [MemberData(nameof(Architectures))]
    public void FoldingTheActivationScaleGivesIdenticalOutputsOnRawInputs(string arch)
    {
        var sae = Make(Cfg(arch), seed: 11);
        if (sae is JumpReluSae j) using (no_grad()) j.Threshold.fill_(0.02f);
        if (sae is BatchTopKSae b) using (no_grad()) b.Threshold.fill_(0.02f);
        var x = randn(6, 4, generator: new Generator(12)) * 10;
        const double s = 0.37;
        var (yScaled, fScaled) = sae.Run(x * s);
        sae.FoldActivationScale(s, s);
        var (yRaw, fRaw) = sae.Run(x);
        // Matching pursuit's encoder is W_decᵀ, so no fold keeps its features: they scale with the input (the residual
        // threshold is scaled with it, so each row stops where it did).
        AssertClose(arch == SaeArchitectures.MatchingPursuit ? fScaled / s : fScaled, fRaw, rtol: 1e-4, atol: 1e-5, what: "features");
        AssertClose(yScaled / s, yRaw, rtol: 1e-4, atol: 1e-4, what: "reconstruction");
        Assert.True(fRaw.abs().sum().item<float>() > 0, "no feature active: the test would be vacuous");
    }

    [Theory]
    [MemberData(nameof(Architectures))]
    public void TrainingStepLeavesNoLiveTensorsBehind(string arch)
    {
        var sae = Make(Cfg(arch), seed: 13);
        var x = randn(5, 4, generator: new Generator(14));
        var dead = ones(8, dtype: ScalarType.Bool);
        void Step()
        {
            using var scope = NewDisposeScope();
            var ctx = new SaeTrainContext { DeadMask = dead, Step = 5000 };
            var o = sae.TrainingForward(x, x, ctx);
            o.Loss.backward();
            sae.BeforeOptimizerStep(ctx);
            sae.AfterOptimizerStep(ctx);
            sae.zero_grad();
        }
        Step(); // grads allocated once
        Assert.Equal(0, LiveTensors.Leaked(Step));
    }

    [Theory]
    [MemberData(nameof(Architectures))]
    public void LossIsFiniteAndDecreasesOverAFewAdamSteps(string arch)
    {
        var sae = Make(Cfg(arch), seed: 15);
        sae.Training.SparsityCoefficient = 1e-3;
        var (b1, b2) = sae.DefaultAdamBetas;
        using var opt = new AdamOptimizer(sae.named_parameters().Select(np => (np.name, np.parameter)), b1, b2);
        var x = randn(32, 4, generator: new Generator(16));
        float first = 0, last = 0;
        for (int step = 0; step < 30; step++)
        {
            using var scope = NewDisposeScope();
            var ctx = new SaeTrainContext { Step = step };
            sae.zero_grad();
            var o = sae.TrainingForward(x, x, ctx);
            o.Loss.backward();
            sae.BeforeOptimizerStep(ctx);
            opt.Step(1e-2);
            sae.AfterOptimizerStep(ctx);
            float mse = o.Losses["mse_loss"].item<float>();
            if (step == 0) first = mse;
            last = mse;
        }
        Assert.True(float.IsFinite(last) && last < first, $"mse {first} -> {last}");
    }
}
