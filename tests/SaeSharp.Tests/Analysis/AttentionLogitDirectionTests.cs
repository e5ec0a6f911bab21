using SaeSharp.Analysis;
using SaeSharp.IO;
using SaeSharp.LanguageModels;
using SaeSharp.Models;
using SaeSharp.Saes;
using static TorchSharp.torch;

namespace SaeSharp.Tests.Analysis;

/// <summary>Logit effects of SAEs inside attention on the built-in model, whose n_heads·d_head equals d_model (as GPT-2's,
/// Pythia's and Llama's): an <c>attn.hook_z</c> SAE writes through W_O (read here from the checkpoint file), not as if its
/// rows were residual directions; a q/k/v SAE of the same width has no residual direction and is refused.</summary>
public class AttentionLogitDirectionTests
{
    [Fact]
    public void A_hook_z_sae_as_wide_as_the_residual_stream_writes_through_w_o_and_a_hook_q_one_is_refused()
    {
        using var scope = NewDisposeScope();
        using var model = ModelLoader.FromPretrained(BuiltinModel.Folder);
        Assert.Equal(model.Config.DModel, model.Config.NHeads * model.Config.DHead);
        var dense = SafeTensors.Load(Path.Combine(BuiltinModel.Folder, "model.safetensors"))["gpt_neox.layers.1.attention.dense.weight"]; // Linear [d_model, h·d_head]
        using var sae = SaeFactory.Create(new SaeConfig { Architecture = SaeArchitectures.Standard, DIn = model.Config.DModel, DSae = 4 });
        using (no_grad())
        {
            using var g = new Generator(11);
            sae.WDec.copy_(randn(4, model.Config.DModel, generator: g));
        }
        var rows = sae.WDec.detach().index_select(0, tensor(new long[] { 1, 3 }));
        var dirs = FeatureWeights.ResidualDirections(model, sae, "blocks.1.attn.hook_z", [1, 3]);
        Assert.True(dirs.allclose(rows.matmul(dense.t()), rtol: 1e-5, atol: 1e-6));
        Assert.False(dirs.allclose(rows, rtol: 1e-2, atol: 1e-3));                                   // not the rows themselves
        // At the residual stream the rows are the directions.
        Assert.True(FeatureWeights.ResidualDirections(model, sae, "blocks.1.hook_resid_post", [1, 3]).allclose(rows, rtol: 0, atol: 0));
        foreach (var hook in new[] { "blocks.1.attn.hook_q", "blocks.1.attn.hook_v" })
            Assert.Contains("cannot be written into the residual stream",
                Assert.Throws<SaeSharpException>(() => FeatureWeights.ResidualDirections(model, sae, hook, [1])).Message);
    }

    /// <summary>A block's LayerNorm output (ln1/ln2.hook_normalized) is d_model wide but never added to the residual stream:
    /// refused, naming why. ln_final.hook_normalized feeds the unembedding (its rows are the directions the folded W_U
    /// reads), and a transcoder reading ln2.hook_normalized writes its rows into its output hook: rows as they are.</summary>
    [Fact]
    public void A_block_layernorm_output_sae_is_refused_but_ln_final_and_a_transcoder_reading_it_keep_their_rows()
    {
        using var scope = NewDisposeScope();
        using var model = ModelLoader.FromPretrained(BuiltinModel.Folder);
        using var sae = SaeFactory.Create(new SaeConfig { Architecture = SaeArchitectures.Standard, DIn = model.Config.DModel, DSae = 4 });
        using (no_grad())
        {
            using var g = new Generator(5);
            sae.WDec.copy_(randn(4, model.Config.DModel, generator: g));
        }
        var rows = sae.WDec.detach().index_select(0, tensor(new long[] { 2 }));
        foreach (var hook in new[] { "blocks.0.ln1.hook_normalized", "blocks.1.ln2.hook_normalized" })
            Assert.Contains("a block's LayerNorm output feeds attention or the MLP",
                Assert.Throws<SaeSharpException>(() => FeatureWeights.ResidualDirections(model, sae, hook, [2])).Message);
        Assert.True(FeatureWeights.ResidualDirections(model, sae, "ln_final.hook_normalized", [2]).allclose(rows, rtol: 0, atol: 0));
        using var transcoder = SaeFactory.Create(new SaeConfig
        {
            Architecture = SaeArchitectures.Standard, DIn = model.Config.DModel, DSae = 4, Metadata = new SaeMetadata { HookNameOut = "blocks.1.hook_mlp_out" },
        });
        using (no_grad()) transcoder.WDec.copy_(sae.WDec);
        Assert.True(FeatureWeights.ResidualDirections(model, transcoder, "blocks.1.ln2.hook_normalized", [2]).allclose(rows, rtol: 0, atol: 0));
    }
}
