using SaeSharp.Models;
using static TorchSharp.torch;

namespace SaeSharp.Tests.Models;

/// <summary>Autograd through the model on request: gradients against central finite differences in float64.</summary>
public class AutogradTests : ModelTestBase
{
    private IEnumerable<HookedTransformer> Float64Models()
    {
        yield return ModelLoader.FromPretrained(TinyModels.WriteGpt2(Sub("gpt2"), 3, 2, 16, 4, 50, 32), ScalarType.Float64);
        yield return ModelLoader.FromPretrained(TinyModels.WriteNeoX(Sub("neox"), 4, 2, 16, 2, 50, 64, 0.5, false, 24), ScalarType.Float64);
    }

    /// <summary>A scalar of the logits that depends on every position: a logit difference plus the mean log-probability.</summary>
    private static Tensor Metric(Tensor logits) =>
        logits[0, -1, 3] - logits[0, -1, 7] + logits.log_softmax(-1)[.., .., 5].mean();

    [Fact]
    public void GradientThroughAHookedActivationMatchesFiniteDifferences()
    {
        var tokens = Tokens([5, 11, 23, 42, 7], [1, 2, 3, 4, 6]);
        foreach (var model in Float64Models())
        {
            using (model)
            {
                string hook = "blocks.0.hook_resid_post";
                var gen = new Generator(7);
                var delta = zeros([2, 5, 16], dtype: ScalarType.Float64).requires_grad_(true);
                var logits = model.Run(tokens, new RunOptions { Grad = true, Hooks = [(hook, x => x + delta)] }).Logits!;
                Assert.True(logits.requires_grad);
                Metric(logits).backward();
                var grad = delta.grad!.clone();

                double Eval(Tensor d) => Metric(model.RunWithHooks(tokens, (hook, x => x + d))).item<double>();
                for (int trial = 0; trial < 3; trial++)
                {
                    var u = randn([2, 5, 16], dtype: ScalarType.Float64, generator: gen);
                    double h = 1e-5;
                    double fd = (Eval(u * h) - Eval(u * -h)) / (2 * h);
                    double analytic = (grad * u).sum().item<double>();
                    Assert.True(Math.Abs(fd - analytic) <= 1e-6 * Math.Max(1, Math.Abs(fd)), $"{model.Config.Architecture}: autograd {analytic} vs finite difference {fd}");
                }
            }
        }
    }

    [Fact]
    public void WeightGradientsMatchFiniteDifferencesAndDefaultRunsRecordNoGraph()
    {
        var tokens = Tokens([5, 11, 23, 42, 7]);
        foreach (var model in Float64Models())
        {
            using (model)
            {
                Assert.All(model.parameters(), p => Assert.False(p.requires_grad));
                model.SetRequiresGrad(true);
                // Inference stays gradient-free even with trainable weights.
                Assert.False(model.Forward(tokens).requires_grad);
                Assert.False(model.RunWithHooks(tokens).requires_grad);

                Metric(model.Run(tokens, new RunOptions { Grad = true }).Logits!).backward();
                var ps = model.parameters().ToList();
                Assert.All(ps, p => Assert.NotNull(p.grad));
                var gen = new Generator(9);
                var dirs = ps.Select(p => randn(p.shape, dtype: ScalarType.Float64, generator: gen)).ToList();
                double analytic = ps.Zip(dirs).Sum(z => (z.First.grad! * z.Second).sum().item<double>());

                double Shifted(double h)
                {
                    using (no_grad())
                        foreach (var (p, d) in ps.Zip(dirs)) p.add_(d * h, TorchScalars.One);
                    double m = Metric(model.Forward(tokens)).item<double>();
                    using (no_grad())
                        foreach (var (p, d) in ps.Zip(dirs)) p.sub_(d * h);
                    return m;
                }
                double step = 1e-6;
                double fd = (Shifted(step) - Shifted(-step)) / (2 * step);
                Assert.True(Math.Abs(fd - analytic) <= 1e-5 * Math.Max(1, Math.Abs(fd)), $"{model.Config.Architecture}: autograd {analytic} vs finite difference {fd}");
                model.SetRequiresGrad(false);
                Assert.All(model.parameters(), p => Assert.False(p.requires_grad));
            }
        }
    }
}
