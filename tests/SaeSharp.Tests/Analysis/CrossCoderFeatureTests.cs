using SaeSharp.Analysis;
using SaeSharp.Interop;
using SaeSharp.Models;
using SaeSharp.Pipelines;
using SaeSharp.Saes;
using SaeSharp.Tests.Activations;
using SaeSharp.Tests.Models;
using static TorchSharp.torch;

namespace SaeSharp.Tests.Analysis;

/// <summary><c>sae features</c> of a crosscoder over two hooks of one model: the statistics of f·c computed independently
/// from each hook's RunWithCache, and the weight tables from the last slot's decoder.</summary>
public class CrossCoderFeatureTests : ModelTestBase
{
    private static readonly string[] Hooks = ["blocks.0.hook_resid_post", "blocks.1.hook_resid_post"];

    private static CrossCoder RandomCrossCoder()
    {
        var cc = new CrossCoder(new CrossCoderConfig { ActivationDim = 16, DictSize = 12, NumLayers = 2 });
        using (var g = new Generator(5)) cc.InitializeWeights(g, null);
        using (no_grad()) cc.Encoder.Bias.fill_(-0.2); // some latents stay silent at some positions
        cc.eval();
        return cc;
    }

    [Fact]
    public void DensityMaxAndFiringsAreThoseOfTheReportedActivationsAtBothHooks()
    {
        using var model = Gpt2();
        using var cc = RandomCrossCoder();
        var windows = ModelActivationSourceTests.Windows(5, 8);
        var report = FeatureAnalysis.Run(model, cc, Hooks, windows, new FeatureAnalysisOptions { BatchSizePrompts = 2 });
        // Independently: each hook's cache, stacked [tokens, 2, 16], through GetActivations (f·c).
        using var tokens = Tokens([.. windows]);
        var parts = new List<Tensor>();
        foreach (var h in Hooks)
        {
            var (logits, cache) = model.RunWithCache(tokens, [h]);
            logits?.Dispose();
            using (cache) parts.Add(cache[h].reshape(-1, 16).clone());
        }
        using var x = stack(parts, 1);
        using var f = cc.GetActivations(x);
        Assert.Equal(40, report.Tokens);
        Assert.Equal("blocks.1.hook_resid_post", report.Source.Hook);
        Assert.Equal(12, report.Features.Count);
        for (int i = 0; i < 12; i++)
        {
            using var col = f.select(1, i);
            long firings = col.gt(0).sum().item<long>();
            Assert.Equal(firings, report.Features[i].Firings);
            Assert.Equal(firings / 40.0, report.Features[i].Density, 12);
            Assert.Equal(col.max().item<float>(), report.Features[i].MaxActivation, 5);
        }
        Assert.Contains(report.Features, s => s.Firings > 0 && s.Firings < 40);
        foreach (var p in parts) p.Dispose();
    }

    [Fact]
    public void TheWeightTablesReadTheLastSlotsDecoderRows()
    {
        using var cc = RandomCrossCoder();
        using var sae = FeatureAnalysis.LastSlotSae(cc, "blocks.1.hook_resid_post");
        Assert.True(sae.WDec.eq(cc.Decoder.Weight[1]).all().item<bool>());
        Assert.Equal("blocks.1.hook_resid_post", sae.Cfg.Metadata.HookName);
    }

    [Fact]
    public void AModelDiffingCrossCoderOrOneWithoutHooksIsRefused()
    {
        var (model, data) = TinyGpt2WithText();
        var opts = new ModelDataOptions { ModelPath = model, DatasetPath = data, ContextSize = 16, Tokens = 64 };
        using (var cc = RandomCrossCoder())
        {
            CrossCoderFormat.Save(cc, Sub("diff"), new CrossCoderSources { HookNames = [Hooks[1], Hooks[1]], ModelNames = ["base", "chat"] });
            CrossCoderFormat.Save(cc, Sub("plain"));
        }
        Assert.Equal($"{Sub("diff")}: its slots read base and chat (model diffing); sae features runs one model, so it takes a crosscoder over hooks of one model",
            Assert.Throws<SaeSharpException>(() => AnalysisPipeline.CrossCoderFeatures(Sub("diff"), opts, new FeatureAnalysisOptions())).Message);
        Assert.StartsWith($"{Sub("plain")}: the crosscoder records no hooks",
            Assert.Throws<SaeSharpException>(() => AnalysisPipeline.CrossCoderFeatures(Sub("plain"), opts, new FeatureAnalysisOptions())).Message);
    }
}
