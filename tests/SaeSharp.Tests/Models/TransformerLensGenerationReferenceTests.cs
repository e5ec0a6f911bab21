using SaeSharp.IO;
using SaeSharp.Models;
using SaeSharp.Tests.Tokenizers;
using static TorchSharp.torch;

namespace SaeSharp.Tests.Models;

/// <summary>
/// <see cref="HookedTransformer.Generate"/> (greedy, KV-cached) against TransformerLens's own <c>model.generate(tokens,
/// max_new_tokens=8, do_sample=False, use_past_kv_cache=True, stop_at_eos=False)</c> (v2.12.0; bench/reference/
/// tl_reference_fixture.py wrote tests/data/tl_reference/generate_*) on the unprocessed tiny checkpoints: GPT-2 (learned
/// positions), Llama 3 (rotary, grouped-query), BLOOM (ALiBi) and Phi-3 (a sliding window), from the reference tokens; and
/// a left-padded batch of each (TransformerLens's padding_side="left": leading pad tokens masked, each row's positions,
/// learned or rotary, counted from its first real token).
/// </summary>
public class TransformerLensGenerationReferenceTests
{
    [Theory]
    [InlineData("gpt2")]
    [InlineData("llama3")]
    [InlineData("bloom")]
    [InlineData("phi3")]
    public void Greedy_kv_cached_generation_equals_TransformerLens(string family)
    {
        using var scope = NewDisposeScope();
        var r = Npy.LoadNpz(TestPaths.Data("tl_reference", $"generate_{family}.npz"));
        using var model = ModelLoader.FromPretrained(TestPaths.Data("hf_models", family));
        // TransformerLens's cached and uncached runs agree: the reference is the model's, not the cache's.
        Assert.Equal(r["greedy"].data<long>().ToArray(), r["greedy_no_cache"].data<long>().ToArray());
        using var cached = model.Generate(r["prompt"], 8, new GenerationOptions());
        Assert.Equal(r["greedy"].shape, cached.Tokens.shape);
        Assert.Equal(r["greedy"].data<long>().ToArray(), cached.Tokens.data<long>().ToArray());
        using var full = model.Generate(r["prompt"], 8, new GenerationOptions { UseKvCache = false });
        Assert.Equal(r["greedy"].data<long>().ToArray(), full.Tokens.data<long>().ToArray());
    }

    [Theory]
    [InlineData("gpt2")]
    [InlineData("llama3")]
    [InlineData("bloom")]
    [InlineData("phi3")]
    public void Left_padded_greedy_generation_equals_TransformerLens(string family)
    {
        using var scope = NewDisposeScope();
        var r = Npy.LoadNpz(TestPaths.Data("tl_reference", $"generate_{family}.npz"));
        using var model = ModelLoader.FromPretrained(TestPaths.Data("hf_models", family));
        using var result = model.Generate(r["padded_prompt"], 8, new GenerationOptions { AttentionMask = r["padded_mask"] });
        Assert.Equal(r["padded_greedy"].shape, result.Tokens.shape);
        Assert.Equal(r["padded_greedy"].data<long>().ToArray(), result.Tokens.data<long>().ToArray());
        // The unpadded row is the unpadded batch's row (a padded neighbour changes nothing).
        Assert.Equal(r["greedy"][0].data<long>().ToArray(), result.Tokens[0].data<long>().ToArray());
    }
}
