using SaeSharp.Analysis;
using SaeSharp.IO;
using SaeSharp.Models;
using SaeSharp.Saes;
using SaeSharp.Tests.Tokenizers;
using static TorchSharp.torch;

namespace SaeSharp.Tests.Analysis;

/// <summary>Logit effects of SAEs on the MLP neurons of the newer MoE families: each decoder row goes into the residual
/// stream through the output weights of the MLP whose neurons the hook holds, read here straight from the checkpoint file.</summary>
public class MoeLogitDirectionTests
{
    private static string Folder(string name) => TestPaths.Data("hf_models", name);
    private static Dictionary<string, Tensor> File(string name) => SafeTensors.Load(Path.Combine(Folder(name), "model.safetensors"));

    private static Tensor Rows(Sae sae, long[] features) => sae.WDec.detach().index_select(0, tensor(features)).to(ScalarType.Float32);

    /// <summary>A standard SAE whose decoder rows are standard normal (seeded).</summary>
    private static Sae RandomSae(int dIn)
    {
        var sae = SaeFactory.Create(new SaeConfig { Architecture = SaeArchitectures.Standard, DIn = dIn, DSae = 4 });
        using var _ = no_grad();
        using var g = new TorchSharp.torch.Generator(7);
        using var rows = randn(4, dIn, generator: g);
        sae.WDec.copy_(rows);
        return sae;
    }

    [Fact]
    public void A_gpt_oss_expert_writes_through_its_slice_of_the_fused_down_proj()
    {
        using var scope = NewDisposeScope();
        using var model = ModelLoader.FromPretrained(Folder("gpt_oss"));
        var w = File("gpt_oss");
        var downProj = w["model.layers.1.mlp.experts.down_proj"];                    // [experts, d_mlp, d_model], used as x·down_proj[e]
        using var sae = RandomSae((int)downProj.shape[1]);
        var dirs = FeatureWeights.ResidualDirections(model, sae, "blocks.1.mlp.experts.2.hook_post", [0, 3]);
        var expected = Rows(sae, [0, 3]).matmul(downProj[2]);
        Assert.True(dirs.allclose(expected, rtol: 1e-6, atol: 1e-7));
        Assert.False(dirs.allclose(Rows(sae, [0, 3]).matmul(downProj[1]), rtol: 1e-3, atol: 1e-4));   // not another expert's
    }

    [Fact]
    public void DeepSeek_experts_shared_experts_and_dense_layers_write_through_their_own_down_proj()
    {
        using var scope = NewDisposeScope();
        using var model = ModelLoader.FromPretrained(Folder("deepseek_v3"));
        var w = File("deepseek_v3");
        foreach (var (hook, weight) in new[]
        {
            ("blocks.1.mlp.experts.5.hook_post", "model.layers.1.mlp.experts.5.down_proj.weight"),         // moe_intermediate_size wide
            ("blocks.1.mlp.shared_expert.hook_post", "model.layers.1.mlp.shared_experts.down_proj.weight"),  // DeepSeek's plural module
            ("blocks.0.mlp.hook_post", "model.layers.0.mlp.down_proj.weight"),                              // first_k_dense_replace: dense
        })
        {
            var wOut = w[weight];                                                                            // Linear [d_model, d_mlp]
            using var sae = RandomSae((int)wOut.shape[1]);
            var dirs = FeatureWeights.ResidualDirections(model, sae, hook, [1, 2]);
            Assert.True(dirs.allclose(Rows(sae, [1, 2]).matmul(wOut.t()), rtol: 1e-6, atol: 1e-7), hook);
        }
        // The dense layer has neurons to align hook_mlp_out features with; a sparse layer has none of its own.
        Assert.True(FeatureWeights.MlpOut(model, 0).allclose(w["model.layers.0.mlp.down_proj.weight"].t()));
        Assert.Contains("mixture of 8 experts", Assert.Throws<SaeSharpException>(() => FeatureWeights.MlpOut(model, 1)).Message);
        // A decoder of the dense width at an expert's hook is named as not fitting, with the expert's neuron count.
        using var wide = RandomSae(48);
        Assert.Contains("16 neurons", Assert.Throws<SaeSharpException>(() => FeatureWeights.ResidualDirections(model, wide, "blocks.1.mlp.experts.0.hook_post", [0])).Message);
    }
}
