using SaeSharp.Hooks;
using SaeSharp.Interventions;
using SaeSharp.Tests.Interventions;
using SaeSharp.Tests.Models;
using static TorchSharp.torch;

namespace SaeSharp.Tests.Hooks;

/// <summary>Splicing an SAE trained on one attention head (hook_head_index).</summary>
public class PerHeadSpliceTests : ModelTestBase
{
    [Fact]
    public void A_per_head_sae_replaces_its_own_head_of_hook_z_by_the_reconstruction_and_leaves_the_others()
    {
        using var model = Gpt2();
        string hook = "blocks.0.attn.hook_z";
        const int head = 2;
        using var sae = InterventionTests.RandomSae(hook, model.Config.DHead, 8, 11);
        sae.Cfg.Metadata.HookHeadIndex = head;
        var toks = Tokens([5, 11, 23, 42, 7], [19, 3, 30, 8, 2]);
        // Expected: z with head 2 replaced by x̂ = ReLU((z_2 − b_dec)·W_enc + b_enc)·W_dec + b_dec, written out here.
        var wDec = sae.WDec.detach().to(ScalarType.Float64);
        var bDec = sae.BDec.detach().to(ScalarType.Float64);
        var expected = model.RunWithHooks(toks, (hook, z =>
        {
            var edited = z.clone();
            var zh = z.select(2, head);
            edited[.., .., head] = (matmul(InterventionTests.HandFeatures(sae, zh), wDec) + bDec).to(z.dtype);
            return edited;
        }));
        var hooked = new HookedSaeTransformer(model);
        hooked.AddSae(sae);
        AssertAllClose(expected, hooked.RunWithHooks(toks), 1e-4, "logits with head 2 spliced");
    }
}
