using SaeSharp.Kernels;
using SaeSharp.Saes;
using SaeSharp.Training;
using static TorchSharp.torch;

namespace SaeSharp.Tests.Saes;

/// <summary>bfloat16 training passes (<see cref="SaeTrainingOptions.Autocast"/>) of the dense architectures, against
/// float32 autograd references.</summary>
public class DenseAutocastTests
{
    private const ScalarType Bf16 = ScalarType.BFloat16;
    private const ScalarType F32 = ScalarType.Float32;

    /// <summary>Rounded to bfloat16 and back, as float32.</summary>
    internal static Tensor R(Tensor t) => t.detach().to(Bf16).to(F32);

    /// <summary>‖a − b‖ / ‖b‖ in float64.</summary>
    internal static double RelErr(Tensor a, Tensor b)
    {
        using var scope = NewDisposeScope();
        var a64 = a.detach().to(ScalarType.Float64);
        var b64 = b.detach().to(ScalarType.Float64);
        return (a64 - b64).norm().item<double>() / Math.Max(b64.norm().item<double>(), 1e-30);
    }

    internal static void AssertRel(Tensor actual, Tensor expected, double tol, string what)
    {
        Assert.Equal(expected.shape, actual.shape);
        double e = RelErr(actual, expected);
        Assert.True(e < tol, $"{what}: relative error {e:G3} ≥ {tol}");
    }

    internal static Tensor Leaf(Tensor t) => t.detach().clone().requires_grad_(true);

    private static (Tensor Loss, Dictionary<string, Tensor> Grads, SaeTrainOutput Out) LossAndGrads(Sae sae, Tensor x, bool autocast)
    {
        sae.Training.Autocast = autocast;
        sae.zero_grad();
        var o = sae.TrainingForward(x, x, new SaeTrainContext { SparsityScale = 0.8 });
        o.Loss.backward();
        var grads = sae.named_parameters().ToDictionary(p => p.name, p => p.parameter.grad!.clone());
        return (o.Loss.detach(), grads, o);
    }

    /// <summary>Loss, reconstruction, losses and feature activations within <paramref name="tol"/> of float32 (relative
    /// norm error); gradients within <paramref name="gradTol"/>: they are sums over rows of bfloat16-rounded terms that
    /// partly cancel (reconstruction against sparsity gradient), which amplifies the rounding.</summary>
    private static void AssertAutocastMatchesFloat32(Sae sae, Tensor x, double tol = 3e-2, double gradTol = 5e-2, double? featureTol = null)
    {
        var (loss32, grads32, out32) = LossAndGrads(sae, x, false);
        var (loss16, grads16, out16) = LossAndGrads(sae, x, true);
        AssertRel(loss16, loss32, tol / 3, "loss");
        foreach (var (name, g32) in grads32) AssertRel(grads16[name], g32, gradTol, $"grad {name}");
        AssertRel(out16.SaeOut, out32.SaeOut, tol / 3, "reconstruction");
        var f16 = out16.FeatureActs;
        Assert.Equal(F32, f16.dtype);
        AssertRel(f16, out32.FeatureActs, featureTol ?? tol, "feature activations");
        foreach (var (k, v) in out32.Losses) AssertRel(out16.Losses[k], v, tol, k);
        // The firing counts the trainer reads are those of the bfloat16 code.
        var counts = Assert.IsAssignableFrom<Tensor>(out16.ActiveCounts);
        Assert.True(counts.Same(f16.ne(0).sum(0L)), "active counts");
    }

    [Theory]
    [InlineData(SparsityPenalty.L1, false, 5e-2)]
    [InlineData(SparsityPenalty.L1DecoderNorm, false, 5e-2)]
    [InlineData(SparsityPenalty.Entropy, false, 0.2)] // the entropy gradient cancels against the reconstruction's
    [InlineData(SparsityPenalty.L1, true, 0.1)]
    public void StandardDensePassMatchesFloat32(SparsityPenalty penalty, bool layerNorm, double gradTol)
    {
        var sae = (StandardSae)SaeTestUtil.Make(new SaeConfig { DIn = 24, DSae = 40, NormalizeActivations = layerNorm ? "layer_norm" : "none" }, seed: 3);
        sae.Training.Penalty = penalty;
        sae.Training.SparsityCoefficient = 0.3;
        sae.SparseTrainingDensity = 0;
        AssertAutocastMatchesFloat32(sae, randn(64, 24, generator: new Generator(4)), gradTol: gradTol);
    }

    [Fact]
    public void StandardSparsePassRecomputesValuesInFloat32()
    {
        var sae = (StandardSae)SaeTestUtil.Make(new SaeConfig { DIn = 24, DSae = 40 }, seed: 5);
        sae.SparseTrainingDensity = 1; // always the sparse pass
        var x = randn(64, 24, generator: new Generator(6));
        var (loss32, grads32, out32) = LossAndGrads(sae, x, false);
        var (loss16, grads16, out16) = LossAndGrads(sae, x, true);
        Assert.NotNull(out16.ActiveCounts);
        // Same active set unless a pre-activation is within bfloat16 rounding of 0; the values are float32-exact.
        var f32 = out32.FeatureActs;
        var f16 = out16.FeatureActs;
        var differ = f32.gt(0).ne(f16.gt(0));
        Assert.True(differ.sum().item<long>() <= 2, $"{differ.sum().item<long>()} entries differ in sign");
        var both = f32.gt(0).logical_and(f16.gt(0));
        Assert.True(f16.masked_select(both).allclose(f32.masked_select(both), rtol: 1e-6, atol: 1e-7), "values recomputed in float32");
        AssertRel(loss16, loss32, 1e-4, "loss");
        // An entry within rounding of 0 changes the gradient's mask: the gradients agree to bfloat16 accuracy.
        foreach (var (name, g32) in grads32) AssertRel(grads16[name], g32, 5e-2, $"grad {name}");
    }

    [Theory]
    [InlineData(JumpReluPenalty.L0)]
    [InlineData(JumpReluPenalty.TargetL0)]
    public void JumpReluPassMatchesFloat32(JumpReluPenalty penalty)
    {
        var sae = (JumpReluSae)SaeTestUtil.Make(new SaeConfig { Architecture = "jumprelu", DIn = 24, DSae = 40 }, seed: 7);
        sae.Training.JumpReluPenalty = penalty;
        sae.Training.TargetL0 = 10;
        sae.Training.Bandwidth = 0.05;
        sae.Training.SparsityCoefficient = 0.01;
        using (no_grad()) sae.Threshold.copy_(rand(40, generator: new Generator(8)) * 0.2);
        // θ's gradient counts the pre-activations within ε/2 of θ, a set bfloat16 rounding changes at its edges.
        AssertAutocastMatchesFloat32(sae, randn(64, 24, generator: new Generator(9)), tol: 5e-2, gradTol: 0.1);
    }

    [Theory]
    [InlineData(false)]
    [InlineData(true)]
    public void GatedPassMatchesFloat32(bool detachAux)
    {
        var sae = SaeTestUtil.Make(new SaeConfig { Architecture = "gated", DIn = 24, DSae = 40 }, seed: 10);
        sae.Training.GatedAuxDetachDecoder = detachAux;
        sae.Training.SparsityCoefficient = 0.2;
        // A gate pre-activation within bfloat16 rounding of 0 switches a whole magnitude on or off.
        AssertAutocastMatchesFloat32(sae, randn(64, 24, generator: new Generator(11)), featureTol: 0.1);
    }

    [Theory]
    [InlineData("standard", 0.0)]
    [InlineData("standard", 1.0)]
    [InlineData("jumprelu", 0.0)]
    [InlineData("gated", 0.0)]
    public void TrainingStepLeavesNoLiveTensors(string arch, double sparseDensity)
    {
        var sae = SaeTestUtil.Make(new SaeConfig { Architecture = arch, DIn = 24, DSae = 40 }, seed: 14);
        sae.Training.Autocast = true;
        if (sae is StandardSae s) s.SparseTrainingDensity = sparseDensity;
        var x = randn(32, 24, generator: new Generator(15));
        void Step()
        {
            using var scope = NewDisposeScope();
            var o = sae.TrainingForward(x, x, new SaeTrainContext());
            o.Loss.backward();
            _ = o.FeatureActs.sum().item<float>();
            _ = o.ActiveCounts!.sum().item<long>();
        }
        Step(); // creates the parameters' gradients
        Assert.Equal(0, LiveTensors.Leaked(Step));
    }

    [Theory]
    [InlineData("standard")]
    [InlineData("jumprelu")]
    [InlineData("gated")]
    public void InferenceIgnoresTheFlag(string arch)
    {
        var sae = SaeTestUtil.Make(new SaeConfig { Architecture = arch, DIn = 24, DSae = 40 }, seed: 12);
        var x = randn(16, 24, generator: new Generator(13));
        using var _ = no_grad();
        var before = sae.Encode(x);
        var y = sae.forward(x);
        sae.Training.Autocast = true;
        Assert.Equal(F32, sae.Encode(x).dtype);
        Assert.True(sae.Encode(x).Same(before));
        Assert.True(sae.forward(x).Same(y));
    }

    [Theory]
    [InlineData("standard")]
    [InlineData("jumprelu")]
    [InlineData("gated")]
    public void ShortTrainingReachesTheFloat32Fvu(string arch)
    {
        using var data = Training.TrainerTestKit.SparseData(2048, 16, 24, 0.08, seed: 1);
        double Fvu(bool autocast)
        {
            var sae = SaeFactory.Create(new SaeConfig { Architecture = arch, DIn = 16, DSae = 40 });
            sae.InitializeWeights(new Generator(2));
            sae.Training.Autocast = autocast;
            sae.Training.SparsityCoefficient = arch == "jumprelu" ? 1e-3 : 0.05;
            var (b1, b2) = sae.DefaultAdamBetas;
            using var opt = new AdamOptimizer(sae.named_parameters().Select(p => (p.name, p.parameter)).ToList(), b1, b2);
            for (int step = 0; step < 300; step++)
            {
                using var scope = NewDisposeScope();
                var batch = data.narrow(0, step * 64 % 2048, 64);
                var ctx = new SaeTrainContext { Step = step };
                sae.zero_grad();
                sae.TrainingForward(batch, batch, ctx).Loss.backward();
                sae.BeforeOptimizerStep(ctx);
                opt.Step(3e-3);
                sae.AfterOptimizerStep(ctx);
            }
            using var _ = no_grad();
            var y = sae.forward(data);
            return ((y - data).pow(2).sum() / (data - data.mean([0], keepdim: true)).pow(2).sum()).item<float>();
        }
        double fp32 = Fvu(false), bf16 = Fvu(true);
        Assert.True(fp32 < 0.3, $"float32 training learns: FVU {fp32}");
        Assert.True(Math.Abs(bf16 - fp32) < 0.02 + 0.1 * fp32, $"FVU bf16 {bf16} vs float32 {fp32}");
    }
}

internal static class TensorSameExtension
{
    /// <summary>Same shape and dtype and every element equal.</summary>
    public static bool Same(this Tensor a, Tensor b) =>
        a.dtype == b.dtype && a.shape.SequenceEqual(b.shape) && a.eq(b).all().item<bool>();
}
