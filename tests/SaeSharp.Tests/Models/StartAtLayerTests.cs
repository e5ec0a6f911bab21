using SaeSharp.Models;
using static TorchSharp.torch;

namespace SaeSharp.Tests.Models;

/// <summary><see cref="RunOptions.StartAtLayer"/> and <see cref="RunOptions.ReturnNormalized"/> against full runs.</summary>
public class StartAtLayerTests : ModelTestBase
{
    [Fact]
    public void Starting_from_a_cached_residual_equals_the_full_run_with_the_same_hook()
    {
        foreach (var model in AllKinds())
        {
            using (model)
            {
                var tokens = Tokens([1, 5, 9, 3, 7, 2], [4, 4, 8, 0, 11, 6]);
                var bump = full(model.Config.DModel, 0.5f);
                (string, Func<Tensor, Tensor?>) hook = ("blocks.1.hook_mlp_out", x => x + bump);
                var expected = model.RunWithHooks(tokens, hook);
                var (_, cache) = model.RunWithCache(tokens, [model.ResidualHookEntering(1)]);
                var started = model.Run(tokens, new RunOptions { StartAtLayer = 1, Residual = cache["blocks.1.hook_resid_pre"], Hooks = [hook] }).Logits!;
                AssertAllClose(expected, started, 1e-5, model.Config.Architecture);

                // From the last block's output: only ln_final and the unembedding run.
                var (_, c2) = model.RunWithCache(tokens, [model.ResidualHookEntering(model.Config.NLayers)]);
                var fromEnd = model.Run(tokens, new RunOptions { StartAtLayer = model.Config.NLayers, Residual = c2["blocks.1.hook_resid_post"] }).Logits!;
                AssertAllClose(model.Forward(tokens), fromEnd, 1e-5, model.Config.Architecture);

                // Normalised output then LogitsOf in two chunks of rows = the logits.
                var normalized = model.Run(tokens, new RunOptions { ReturnNormalized = true }).Logits!;
                Assert.Equal(new long[] { 2, 6, model.Config.DModel }, normalized.shape);
                var rows = normalized.reshape(-1, model.Config.DModel);
                var chunked = cat([model.LogitsOf(rows.narrow(0, 0, 5)), model.LogitsOf(rows.narrow(0, 5, 7))], 0).view(2, 6, -1);
                AssertAllClose(model.Forward(tokens), chunked, 1e-6, model.Config.Architecture);

                var ex = Assert.Throws<SaeSharpException>(() => model.Run(tokens, new RunOptions
                {
                    StartAtLayer = 1, Residual = cache["blocks.1.hook_resid_pre"], Hooks = [("blocks.0.hook_mlp_out", x => x)],
                }));
                Assert.Contains("never fires with startAtLayer 1", ex.Message);
                ex = Assert.Throws<SaeSharpException>(() => model.Run(tokens, new RunOptions { StartAtLayer = 1 }));
                Assert.Contains("needs the residual stream entering block 1 (blocks.1.hook_resid_pre)", ex.Message);
                ex = Assert.Throws<SaeSharpException>(() => model.Run(tokens, new RunOptions { StartAtLayer = 1, Residual = zeros(2, 5, model.Config.DModel) }));
                Assert.Contains("expected [2, 6,", ex.Message);
                cache.Dispose();
                c2.Dispose();
            }
        }
    }
}
