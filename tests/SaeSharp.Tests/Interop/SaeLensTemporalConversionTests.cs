using SaeSharp.Hub;
using SaeSharp.Interop;
using SaeSharp.Saes;
using SaeSharp.Tests.Hub;
using SaeSharp.Tests.Saes;

namespace SaeSharp.Tests.Interop;

/// <summary>
/// SAELens's <c>temporal</c> conversion (canrager/temporalSAEs: conf.yaml + latest_ckpt.safetensors per SAE folder) from
/// the files SAELens's own TemporalSAE was saved to in canrager's layout (tests/data/temporal_sae/*/canrager), loaded by
/// release name through the fake hub exactly as a download, and from a local folder; the outputs are SAELens's.
/// </summary>
public sealed class SaeLensTemporalConversionTests : FakeHubTestBase
{
    private SaeLoadOptions Options => new() { Hub = Hub };

    [Theory]
    [MemberData(nameof(TemporalSaeTests.Variants), MemberType = typeof(TemporalSaeTests))]
    public void The_gemma_release_loads_from_canragers_layout_and_matches_SAELens(string variant)
    {
        // temporal-sae-gemma-2-2b: repo canrager/temporalSAEs, path gemma-2-2B/layer_12/temporal, config_overrides
        // {model_name gemma-2-2b, hook_name blocks.12.hook_resid_post, dataset_path monology/pile-uncopyrighted}.
        Serve("canrager/temporalSAEs", "gemma-2-2B/layer_12/temporal", TemporalSaeTests.Fixture(variant, "canrager", "layer_3", "temporal"),
            SaeLensConversions.TemporalConfigFile, SaeLensConversions.TemporalWeightsFile);
        var resolved = SaeSource.Resolve("temporal-sae-gemma-2-2b/blocks.12.hook_resid_post", Hub);
        Assert.Equal("temporal", SaeLoader.DetectFormat(resolved));
        using var sae = SaeLoader.Load(resolved, Options);
        var c = sae.Cfg;
        Assert.Equal(SaeArchitectures.Temporal, c.Architecture);
        Assert.Equal((8, 32), (c.DIn, c.DSae));
        Assert.Equal("constant_scalar_rescale", c.NormalizeActivations);
        Assert.True(c.ApplyBDecToInput);
        Assert.Equal("blocks.12.hook_resid_post", c.Metadata.HookName);
        Assert.Equal("gemma-2-2b", c.Metadata.ModelName);
        Assert.Equal("monology/pile-uncopyrighted", c.Metadata.DatasetPath);
        // The factor is conf.yaml's sae.scaling_factor, not the table's norm_scaling_factor (0.00666666667).
        Assert.Equal(variant == "tied_topk" ? 0.5 : 2.0, ((TemporalSae)sae).NormalizationFactor);
        TemporalSaeTests.AssertMatchesSaeLens(sae, variant);
    }

    [Fact]
    public void The_llama_release_takes_the_hook_from_the_layer_in_its_path()
    {
        // temporal-sae-llama-3.1-8b has no hook_name override: blocks.26.hook_resid_post from llama-3.1-8B/layer_26/temporal.
        Serve("canrager/temporalSAEs", "llama-3.1-8B/layer_26/temporal", TemporalSaeTests.Fixture("untied_relu", "canrager", "layer_3", "temporal"),
            SaeLensConversions.TemporalConfigFile, SaeLensConversions.TemporalWeightsFile);
        using var sae = SaeLoader.Load("temporal-sae-llama-3.1-8b/blocks.26.hook_resid_post", Options);
        Assert.Equal("blocks.26.hook_resid_post", sae.Cfg.Metadata.HookName);
        Assert.Equal("meta-llama/Llama-3.1-8B", sae.Cfg.Metadata.ModelName);
        Assert.Equal("llama3.1-8b/26-temporal-res", sae.Cfg.Metadata.Extra!["neuronpedia_id"].GetString());
        TemporalSaeTests.AssertMatchesSaeLens(sae, "untied_relu");
    }

    [Theory]
    [MemberData(nameof(TemporalSaeTests.Variants), MemberType = typeof(TemporalSaeTests))]
    public void A_local_canrager_folder_loads_and_saves_as_SAELens_loads_it(string variant)
    {
        string folder = TemporalSaeTests.Fixture(variant, "canrager", "layer_3", "temporal");
        using var sae = SaeLoader.Load(folder);
        Assert.Equal("blocks.3.hook_resid_post", sae.Cfg.Metadata.HookName);
        TemporalSaeTests.AssertMatchesSaeLens(sae, variant);
        string saved = Path.Combine(_work, variant);
        SaeLensFormat.Save(sae, saved);
        using var again = SaeLoader.Load(saved);
        TemporalSaeTests.AssertMatchesSaeLens(again, variant);
    }
}
