using SaeSharp.Models;
using SaeSharp.Tests.Models;
using static TorchSharp.torch;

namespace SaeSharp.Tests.Hooks;

/// <summary>What the cache holds at a hook point that a hook also edits.</summary>
public class HookCacheOrderTests : ModelTestBase
{
    [Fact]
    public void The_cache_holds_the_activation_as_the_hooks_left_it_which_is_what_the_model_reads_on()
    {
        // As TransformerLens run_with_cache under fwd_hooks: the user's hook fires first, the caching hook sees its result.
        // Doubling blocks.0.hook_resid_post: the cache there holds twice the clean value, and blocks.1.hook_resid_pre
        // (the same tensor read by the next block) holds it too.
        foreach (var model in AllKinds())
        {
            using (model)
            {
                var toks = Tokens([5, 11, 23, 42, 7], [19, 3, 30, 8, 2]);
                string hook = "blocks.0.hook_resid_post";
                var (_, clean) = model.RunWithCache(toks, [hook]);
                Tensor x;
                using (clean) x = clean![hook].clone();
                var (_, cache) = model.Run(toks, new RunOptions { Hooks = [(hook, a => a * 2)], CacheNames = [hook, "blocks.1.hook_resid_pre"] });
                using (cache)
                {
                    AssertAllClose(x * 2, cache![hook], 1e-5, $"{model.Config.Architecture}: cached at the edited hook");
                    AssertAllClose(x * 2, cache["blocks.1.hook_resid_pre"], 1e-5, $"{model.Config.Architecture}: read by the next block");
                }
            }
        }
    }
}
