using SaeSharp.Hooks;
using SaeSharp.Tests.Models;
using static TorchSharp.torch;

namespace SaeSharp.Tests.Hooks;

/// <summary>TransformerLens's <c>get_act_name</c> shorthand on <see cref="ActivationCache"/> and <c>stack_activation</c>.</summary>
public class ActivationCacheTests : ModelTestBase
{
    // The examples of TransformerLens's get_act_name docstring (transformer_lens/utils.py), and its alias tables.
    [Theory]
    [InlineData("embed", null, null, "hook_embed")]
    [InlineData("k", 6, "a", "blocks.6.attn.hook_k")]
    [InlineData("scale", 4, "ln1", "blocks.4.ln1.hook_scale")]
    [InlineData("pre", 5, "mlp", "blocks.5.mlp.hook_pre")]
    [InlineData("normalized", 27, "ln2", "blocks.27.ln2.hook_normalized")]
    [InlineData("k6", null, null, "blocks.6.attn.hook_k")]
    [InlineData("scale4ln1", null, null, "blocks.4.ln1.hook_scale")]
    [InlineData("pre5", null, null, "blocks.5.mlp.hook_pre")]
    [InlineData("resid_post", 1, null, "blocks.1.hook_resid_post")]
    [InlineData("q", 0, null, "blocks.0.attn.hook_q")]
    [InlineData("attn", 0, null, "blocks.0.attn.hook_pattern")]
    [InlineData("attn_logits", 2, null, "blocks.2.attn.hook_attn_scores")]
    [InlineData("mlp_post", 1, null, "blocks.1.mlp.hook_post")]
    [InlineData("pre_linear", 1, null, "blocks.1.mlp.hook_pre_linear")]
    [InlineData("normalized", null, null, "ln_final.hook_normalized")]
    [InlineData("scale", null, null, "ln_final.hook_scale")]
    [InlineData("ln_final.hook_normalized", null, null, "ln_final.hook_normalized")]
    [InlineData("hook_pos_embed", null, null, "hook_pos_embed")]
    [InlineData("resid_pre", 3, "b", "blocks.3.hook_resid_pre")]
    [InlineData("normalized", 0, "ln1", "blocks.0.ln1.hook_normalized")]
    public void ActName_is_transformer_lens_get_act_name(string name, int? layer, string? layerType, string expected) =>
        Assert.Equal(expected, HookPoints.ActName(name, layer, layerType));

    [Fact]
    public void Cache_indexers_take_the_shorthand_and_stack_stacks_every_layer()
    {
        using var model = Gpt2(nLayer: 2);
        using var tokens = Tokens([1, 2, 3, 4], [5, 6, 7, 8]);
        var (logits, cache) = model.RunWithCache(tokens);
        using var _ = logits;
        using (cache)
        {
            Assert.Same(cache["blocks.1.hook_resid_post"], cache["resid_post", 1]);
            Assert.Same(cache["blocks.1.hook_resid_post"], cache["resid_post", -1]);
            Assert.Same(cache["blocks.0.attn.hook_q"], cache["q", 0]);
            Assert.Same(cache["blocks.0.attn.hook_pattern"], cache["pattern", 0]);
            Assert.Same(cache["blocks.0.attn.hook_pattern"], cache["attn", 0]);
            Assert.Same(cache["blocks.1.ln2.hook_normalized"], cache["normalized", 1, "ln2"]);
            Assert.Same(cache["hook_embed"], cache["embed"]);
            Assert.Same(cache["ln_final.hook_normalized"], cache["normalized"]);
            Assert.Same(cache["blocks.1.mlp.hook_post"], cache["post1"]);

            using var stacked = cache.Stack("resid_post");
            Assert.Equal(new long[] { 2, 2, 4, 16 }, stacked.shape);
            Assert.True(stacked[0].allclose(cache["blocks.0.hook_resid_post"], 0, 0));
            Assert.True(stacked[1].allclose(cache["blocks.1.hook_resid_post"], 0, 0));
            using var first = cache.Stack("pattern", layers: 1);
            Assert.Equal(new long[] { 1, 2, 4, 4, 4 }, first.shape);

            var e = Assert.Throws<SaeSharpException>(() => cache["resid_post", 5]);
            Assert.Contains("blocks.5.hook_resid_post", e.Message, StringComparison.Ordinal);
            Assert.Contains("blocks.1.hook_resid_post", e.Message, StringComparison.Ordinal); // what the cache has
        }
    }

    [Fact]
    public void A_lookup_after_dispose_says_the_cache_was_disposed()
    {
        using var model = Gpt2(nLayer: 2);
        using var tokens = Tokens([1, 2, 3, 4]);
        var (logits, cache) = model.RunWithCache(tokens, ["blocks.1.hook_resid_post"]);
        logits!.Dispose();
        cache.Dispose();
        foreach (Func<Tensor> lookup in new Func<Tensor>[] { () => cache["resid_post", 1], () => cache["blocks.1.hook_resid_post"], () => cache.Stack("resid_post") })
        {
            var e = Assert.Throws<SaeSharpException>(lookup);
            Assert.Contains("disposed", e.Message, StringComparison.Ordinal);
        }
    }
}
