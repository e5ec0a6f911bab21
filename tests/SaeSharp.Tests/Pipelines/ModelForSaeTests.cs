using System.Text.Json;
using SaeSharp.Models;
using SaeSharp.Pipelines;
using SaeSharp.Saes;
using SaeSharp.Tests.Models;

namespace SaeSharp.Tests.Pipelines;

public class ModelForSaeTests : ModelTestBase
{
    [Fact]
    public void The_sae_cfg_kwargs_choose_the_model_processing_and_must_agree_across_saes()
    {
        var kw = JsonSerializer.Deserialize<Dictionary<string, JsonElement>>("""{"center_writing_weights": true, "dtype": "float32"}""")!;
        string folder = TinyModels.WriteGpt2(Sub("m"), 1, 2, 16, 4, 50, 32);
        var cfg = new SaeConfig { DIn = 16, DSae = 32 };
        cfg.Metadata.ModelFromPretrainedKwargs = kw;
        using var pm = ModelForSae.Load(folder, cfg);
        Assert.True(pm.Options.CenterWritingWeights);
        Assert.False(pm.Options.FoldLn);
        var tokens = Tokens([49, 3, 17, 8, 22, 5, 40, 11], [1, 2, 3, 4, 5, 6, 7, 8]);
        var (_, cache) = pm.Model.Run(tokens, new RunOptions { CacheNames = ["blocks.1.hook_resid_post"], Hooks = pm.Hooks });
        using (var c = cache!)
            // center_writing_weights: every write to the residual stream has zero mean over d_model.
            Assert.True(c["blocks.1.hook_resid_post"].mean([-1]).abs().max().item<float>() < 1e-5);
        var cfg2 = new SaeConfig { DIn = 16, DSae = 32 };
        Assert.Throws<SaeSharpException>(() => ModelForSae.SharedOptions([cfg, cfg2]));
        Assert.Equal(WeightProcessingOptions.FromKwargs(kw, out _), ModelForSae.SharedOptions([cfg, cfg.Clone()]));
    }

    /// <summary>An SAE trained on the model in bfloat16 records TransformerLens's dtype keyword in
    /// model_from_pretrained_kwargs; the model loaded for it runs in that dtype unless the caller names one (SAELens:
    /// from_pretrained_no_processing(model_name, **model_from_pretrained_kwargs)), and in float32 when none is recorded.</summary>
    [Fact]
    public void The_model_runs_in_the_dtype_the_sae_cfg_records_unless_one_is_given()
    {
        string folder = TinyModels.WriteGpt2(Sub("m"), 1, 2, 16, 4, 50, 32);
        var cfg = new SaeConfig { DIn = 16, DSae = 32 };
        cfg.Metadata.ModelFromPretrainedKwargs = JsonSerializer.Deserialize<Dictionary<string, JsonElement>>("""{"dtype": "bfloat16"}""")!;
        using (var pm = ModelForSae.Load(folder, cfg))
            Assert.All(pm.Model.parameters(), p => Assert.Equal(TorchSharp.torch.ScalarType.BFloat16, p.dtype));
        using (var pm = ModelForSae.Load(folder, cfg, TorchSharp.torch.ScalarType.Float32))
            Assert.All(pm.Model.parameters(), p => Assert.Equal(TorchSharp.torch.ScalarType.Float32, p.dtype));
        using (var pm = ModelForSae.Load(folder, new SaeConfig { DIn = 16, DSae = 32 }))
            Assert.All(pm.Model.parameters(), p => Assert.Equal(TorchSharp.torch.ScalarType.Float32, p.dtype));
    }
}
