using SaeSharp.Evaluation;
using SaeSharp.Saes;
using SaeSharp.Training;
using TorchSharp;
using static TorchSharp.torch;
using static SaeSharp.Tests.Training.TrainerTestKit;

namespace SaeSharp.Tests.Training;

/// <summary>Training skip transcoders (<c>skip_transcoder</c>, <c>jumprelu_skip_transcoder</c>): the gradient of W_skip,
/// what a run learns on data with a linear part, the recipes' refusal of a plain SAE run, and a bit-exact resume.</summary>
public class SkipTranscoderTrainingTests
{
    private static Sae Create(string recipe, int dIn, int dSae, int dOut) => SaeRecipes.Create(recipe, dIn, dSae, dOut: dOut);

    /// <summary>The loss is mean_n ‖ŷ_n − y_n‖² + (a penalty free of W_skip) with ŷ = f·W_dec + b_dec + x·W_skipᵀ, so
    /// dL/dW_skip = (2/N)·(ŷ − y)ᵀ·x. ŷ is computed here by hand in float64 from the parameters (ReLU, or JumpReLU with the
    /// thresholds), not taken from the SAE.</summary>
    [Theory]
    [InlineData("skip_transcoder")]
    [InlineData("jumprelu_skip_transcoder")]
    public void TheGradientOfWSkipIsTwoOverNTimesTheResidualTimesTheInput(string recipe)
    {
        const int n = 20, dIn = 6, dSae = 10, dOut = 5;
        using var sae = Create(recipe, dIn, dSae, dOut);
        using var g = new Generator(11);
        using (no_grad())
        {
            sae.WEnc.copy_(randn(dIn, dSae, generator: g));
            sae.BEnc.copy_(randn(dSae, generator: g) * 0.5);
            sae.WDec.copy_(randn(dSae, dOut, generator: g));
            sae.BDec.copy_(randn(dOut, generator: g));
            sae.WSkip.copy_(randn(dOut, dIn, generator: g));
            if (sae is JumpReluSae jr) jr.Threshold.copy_(rand(dSae, generator: g));
        }
        using var x = randn(n, dIn, generator: g);
        using var y = randn(n, dOut, generator: g);
        using (var forward = NewDisposeScope()) sae.TrainingForward(x, y, new SaeTrainContext()).Loss.backward();

        using var _ = no_grad();
        using var scope = NewDisposeScope();
        var x64 = x.to(ScalarType.Float64);
        var pre = x64.matmul(sae.WEnc.to(ScalarType.Float64)) + sae.BEnc.to(ScalarType.Float64);
        var f = pre.relu();
        if (sae is JumpReluSae j) f = f * pre.gt(j.Threshold.to(ScalarType.Float64)).to(ScalarType.Float64);
        var yHat = f.matmul(sae.WDec.to(ScalarType.Float64)) + sae.BDec.to(ScalarType.Float64) + x64.matmul(sae.WSkip.to(ScalarType.Float64).t());
        var expected = (yHat - y.to(ScalarType.Float64)).t().matmul(x64) * (2.0 / n);
        var grad = sae.WSkip.grad!.to(ScalarType.Float64);
        double error = (grad - expected).abs().max().item<double>(), size = expected.abs().max().item<double>();
        Assert.True(error <= 1e-5 * size, $"dL/dW_skip differs from (2/N)(ŷ − y)ᵀx by {error} (largest entry {size})");
    }

    /// <summary>x = g + Σ_j s_j·e_j (dense Gaussian g, sparse s_j of random sign), y = A·x + Σ_j |s_j|·d_j: the best linear
    /// map from x to y is A (|s_j| is uncorrelated with x, its mean goes to b_dec), and the rest is a sparse code of x.</summary>
    private static (Tensor X, Tensor Y, Tensor A) LinearPlusSparse(int rows, long seed, Tensor? a = null)
    {
        const int d = 16, features = 8;
        using var scope = NewDisposeScope();
        using var g = new Generator((ulong)seed);
        using var fixedDirections = new Generator(77);
        var e = randn(features, d, generator: fixedDirections);
        e = e / e.norm(1, keepdim: true);
        var dirs = randn(features, d, generator: fixedDirections);
        dirs = dirs / dirs.norm(1, keepdim: true) * 0.5;
        var map = a?.alias() ?? randn(d, d, generator: fixedDirections) / Math.Sqrt(d);
        var on = rand(rows, features, generator: g).lt(0.08).to(ScalarType.Float32);
        var s = on * (rand(rows, features, generator: g) + 1) * 10 * randn(rows, features, generator: g).sign();
        var x = randn(rows, d, generator: g) + s.matmul(e);
        var y = x.matmul(map.t()) + s.abs().matmul(dirs);
        return (x.MoveToOuterDisposeScope(), y.MoveToOuterDisposeScope(), map.MoveToOuterDisposeScope());
    }

    /// <summary>Trained by its recipe on <see cref="LinearPlusSparse"/> data, a skip transcoder's W_skip approaches A, and its
    /// held-out FVU is less than half that of the same run without the skip connection (relu-april / jumprelu transcoders),
    /// which must spend latents on the dense linear part. The run normalises its activations as <c>sae train</c> does, so
    /// the W_skip compared is the one folded back to raw units. (Measured: ‖W_skip − A‖/‖A‖ 0.016 for skip_transcoder and
    /// 0.16 for jumprelu_skip_transcoder, whose L0 penalty does not price the magnitudes its active latents carry of the
    /// linear part; FVU 0.2 and 0.12 of the run without.)</summary>
    [Theory]
    [InlineData("skip_transcoder", "relu-april", 0.05)]
    [InlineData("jumprelu_skip_transcoder", "jumprelu", 0.25)]
    public void ARunLearnsTheLinearPartInWSkipAndReconstructsFarBetterThanWithoutIt(string recipe, string withoutSkip, double maxRelativeError)
    {
        var (x, y, a) = LinearPlusSparse(8192, seed: 1);
        var (xEval, yEval, _) = LinearPlusSparse(2048, seed: 2, a);
        using (x) using (y) using (a) using (xEval) using (yEval)
        {
            double Fvu(string r, out Tensor? wSkip)
            {
                using var source = new InMemorySource(x.clone(), y.clone(), seed: 3);
                var config = SaeRecipes.RunConfig(r, Config(1000, batch: 128), 32, new HashSet<string> { "lr" });
                config.Lr = 1e-2;
                config.NormalizeActivations = "expected_average_only_in"; // as sae train: W_skip is folded back to raw units at the end
                using var trainer = new SaeTrainer(config, source, [new SaeSlot(r, Create(r, 16, 32, 16))]);
                using var result = trainer.Run();
                var sae = result.Saes[0].Sae;
                wSkip = sae.HasSkip ? sae.WSkip.detach().clone() : null;
                using var eval = new InMemorySource(xEval.clone(), yEval.clone());
                return SaeEvaluator.Evaluate(sae, eval, 2048).Fvu;
            }
            double fvu = Fvu(recipe, out var learned);
            double fvuWithout = Fvu(withoutSkip, out _);
            using (learned)
            {
                double relative = ((learned! - a).norm().item<float>()) / a.norm().item<float>();
                Assert.True(relative < maxRelativeError, $"{recipe}: ‖W_skip − A‖/‖A‖ = {relative:F3}");
            }
            Assert.True(fvu < 0.5 * fvuWithout, $"{recipe}: FVU {fvu:F4}, without the skip connection ({withoutSkip}) {fvuWithout:F4}");
        }
    }

    /// <summary>On a plain SAE run (no targets: d_out not given) the skip-transcoder recipes are refused, naming the flag.</summary>
    [Theory]
    [InlineData("skip_transcoder")]
    [InlineData("jumprelu_skip_transcoder")]
    public void ASkipTranscoderRecipeWithoutTargetsIsRefusedNamingTheFlag(string recipe)
    {
        var e = Assert.Throws<SaeSharpException>(() => SaeRecipes.Create(recipe, 8, 16));
        Assert.Contains($"--arch {recipe} trains a transcoder", e.Message);
        Assert.Contains("--mode in_to_out", e.Message);
    }

    /// <summary>The recipes save under SAELens's names and train as their encoder's family: the ReLU one with relu-april's
    /// penalty, λ and lr, the JumpReLU one as jumprelu, whose <c>--target-l0</c> form it takes.</summary>
    [Fact]
    public void TheRecipesTrainAsRelUAprilAndJumpReluAndKeepSaeLensNames()
    {
        using var relu = Create("skip_transcoder", 8, 16, 8);
        using var jr = Create("jumprelu_skip_transcoder", 8, 16, 8);
        Assert.Equal(("skip_transcoder", "jumprelu_skip_transcoder"), (relu.Cfg.Architecture, jr.Cfg.Architecture));
        Assert.Equal(("standard", "jumprelu"), (SaeArchitectures.TrainsAs(relu.Cfg.Architecture), SaeArchitectures.TrainsAs(jr.Cfg.Architecture)));
        Assert.True(relu.HasSkip && jr.HasSkip);
        Assert.Equal((8, false), (relu.Cfg.DOut, relu.Cfg.ApplyBDecToInput));
        Assert.Equal(SparsityPenalty.L1DecoderNorm, relu.Training.Penalty);
        Assert.Equal(SaeRecipes.DefaultSparsityCoefficient("relu-april", 8), relu.Training.SparsityCoefficient);
        Assert.Equal(SaeRecipes.DefaultLearningRate("relu-april", 16, 100_000), SaeRecipes.DefaultLearningRate("skip_transcoder", 16, 100_000));
        Assert.Equal(SaeRecipes.DefaultSparsityCoefficient("jumprelu", 8), jr.Training.SparsityCoefficient);
        Assert.Equal(SaeRecipes.DefaultLearningRate("jumprelu", 16, 100_000), SaeRecipes.DefaultLearningRate("jumprelu_skip_transcoder", 16, 100_000));

        SaeRecipes.AdaptToTargetL0(jr, 4);
        Assert.Equal(JumpReluPenalty.TargetL0, jr.Training.JumpReluPenalty);
        Assert.True(TargetL0Control.IsTwoSided(jr.Training, jr.Cfg));
        SaeRecipes.AdaptToTargetL0(relu, 4);
        Assert.True(relu.Training.AdaptToTargetL0);
    }

    /// <summary>A run stopped at a checkpoint and resumed ends with the weights, W_skip included, and the Adam moments of
    /// the uninterrupted run, bit for bit.</summary>
    [Fact]
    public void AResumeFromACheckpointRestoresWSkipAndItsAdamMomentsBitExactly()
    {
        var (x, y, _) = LinearPlusSparse(600, seed: 5);
        using (x) using (y)
        {
            var cfg = Config(20);
            cfg.NormalizeActivations = "expected_average_only_in";
            cfg.NBatchesForNormEstimate = 3;
            cfg.LogEverySteps = 5;
            SaeSlot[] Slots() => [new("skip", Create("skip_transcoder", 16, 32, 16)), new("jr", Create("jumprelu_skip_transcoder", 16, 32, 16))];
            var dirA = TempDir();
            var dirB = TempDir();
            try
            {
                cfg.CheckpointPath = dirA;
                using var srcA = new InMemorySource(x.clone(), y.clone(), seed: 9);
                using var a = new SaeTrainer(cfg, srcA, Slots());
                using var resA = a.Run();

                cfg.CheckpointPath = dirB;
                using (var srcB = new InMemorySource(x.clone(), y.clone(), seed: 9))
                using (var b1 = new SaeTrainer(cfg, srcB, Slots()))
                using (b1.Run(stopAtStep: 10)) { }
                using var srcB2 = new InMemorySource(x.clone(), y.clone(), seed: 9);
                using var b2 = SaeTrainer.Resume(dirB, srcB2);
                Assert.Equal(10, b2.Step);
                using var resB = b2.Run();
                for (int i = 0; i < 2; i++)
                {
                    string name = i == 0 ? "skip" : "jr";
                    Assert.True(b2.Saes[i].HasSkip);
                    Assert.False(BitEqual(a.Saes[i].WSkip, zeros_like(a.Saes[i].WSkip)), $"{name}: W_skip did not train");
                    var wa = a.Saes[i].state_dict();
                    var wb = b2.Saes[i].state_dict();
                    Assert.Contains("W_skip", wa.Keys);
                    foreach (var (k, t) in wa) Assert.True(BitEqual(t, wb[k]), $"{name}.{k} differs after resume");
                    var adamA = a.Optimizer(name).StateTensors().ToList();
                    Assert.Contains(adamA, kv => kv.Key.Contains("W_skip", StringComparison.Ordinal));
                    foreach (var (k, t) in adamA)
                        Assert.True(BitEqual(t, b2.Optimizer(name).StateTensors().Single(kv => kv.Key == k).Value), $"{name} adam {k} differs");
                }
            }
            finally
            {
                Directory.Delete(dirA, true);
                Directory.Delete(dirB, true);
            }
        }
    }
}
