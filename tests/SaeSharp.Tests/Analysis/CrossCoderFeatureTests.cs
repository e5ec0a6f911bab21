using SaeSharp.Analysis;
using SaeSharp.Interop;
using SaeSharp.Models;
using SaeSharp.Pipelines;
using SaeSharp.Saes;
using SaeSharp.Tests.Cli;
using SaeSharp.Tokenizers;
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
    public void AModelDiffingCrossCoderWithoutBothModelsOrOneWithoutHooksIsRefused()
    {
        var (model, data) = TinyGpt2WithText();
        var opts = new ModelDataOptions { ModelPath = model, DatasetPath = data, ContextSize = 16, Tokens = 64 };
        using (var cc = RandomCrossCoder())
        {
            CrossCoderFormat.Save(cc, Sub("diff"), new CrossCoderSources { HookNames = [Hooks[1], Hooks[1]], ModelNames = ["base", "chat"] });
            CrossCoderFormat.Save(cc, Sub("plain"));
            CrossCoderFormat.Save(cc, Sub("layers"), new CrossCoderSources { HookNames = Hooks, ModelNames = ["m"] });
        }
        Assert.Equal($"{Sub("diff")}: its slots read base and chat (model diffing): give both models, --model and --diff-model",
            Assert.Throws<SaeSharpException>(() => AnalysisPipeline.CrossCoderFeatures(Sub("diff"), opts, new FeatureAnalysisOptions())).Message);
        Assert.StartsWith($"{Sub("plain")}: the crosscoder records no hooks",
            Assert.Throws<SaeSharpException>(() => AnalysisPipeline.CrossCoderFeatures(Sub("plain"), opts, new FeatureAnalysisOptions())).Message);
        Assert.Equal($"--diff-model: {Sub("layers")} reads one model (its slots are hooks of it); --diff-model is for a model-diffing crosscoder",
            Assert.Throws<SaeSharpException>(() => AnalysisPipeline.CrossCoderFeatures(Sub("layers"), opts, new FeatureAnalysisOptions(), model)).Message);
    }

    /// <summary>A model-diffing crosscoder (slot 0 the base model, slot 1 the chat model, one hook) saved with the models it
    /// records.</summary>
    private string SaveDiffingCrossCoder(string name, IReadOnlyList<string> models)
    {
        using var cc = RandomCrossCoder();
        CrossCoderFormat.Save(cc, Sub(name), new CrossCoderSources { HookNames = [Hooks[1], Hooks[1]], ModelNames = models });
        return Sub(name);
    }

    [Fact]
    public void ModelDiffingFeaturesRunBothModelsOnTheSameWindows()
    {
        var (b, c, data) = TwoModelsOneTokenizer();
        string path = SaveDiffingCrossCoder("cc", [ModelLoader.NameOf(b), ModelLoader.NameOf(c)]);
        var opts = new ModelDataOptions { ModelPath = b, DatasetPath = data, ContextSize = 16, Tokens = 64, BatchSizePrompts = 3 };
        var report = AnalysisPipeline.CrossCoderFeatures(path, opts, new FeatureAnalysisOptions { Statistics = new FeatureStatisticsOptions { TopExamples = 3 } }, c);
        // Independently: the first 4 windows, each model on its own at the hook, stacked [tokens, 2 (base, chat), 16].
        var windows = ModelPipeline.Windows(Tokenizer.FromFolder(b), data, 16, prependBos: true).Take(4).ToArray();
        using var tokens = Tokens(windows);
        using var baseModel = ModelLoader.FromPretrained(b);
        using var chatModel = ModelLoader.FromPretrained(c);
        var parts = new List<Tensor>();
        foreach (var m in new[] { baseModel, chatModel })
        {
            var (logits, cache) = m.RunWithCache(tokens, [Hooks[1]]);
            logits?.Dispose();
            using (cache) parts.Add(cache[Hooks[1]].reshape(-1, 16).clone());
        }
        using var x = stack(parts, 1);
        foreach (var p in parts) p.Dispose();
        using var cc = CrossCoderFormat.Load(path);
        using var f = cc.GetActivations(x);
        var fa = f.contiguous().data<float>().ToArray();
        using var wDec = cc.Decoder.Weight.detach().to(ScalarType.Float64);
        var w = wDec.contiguous().data<double>().ToArray(); // [2, 12, 16]
        // The chat model's unembedding with its final norm's scale (GPT-2: ln_f.weight ⊙ wte), by hand.
        var prm = chatModel.named_parameters().ToDictionary(kv => kv.name, kv => kv.parameter);
        using var wu = (prm["transformer.wte.weight"] * prm["transformer.ln_f.weight"].unsqueeze(0)).to(ScalarType.Float64);
        Assert.Equal(64, report.Tokens);
        Assert.Equal(ModelLoader.NameOf(c), report.Source.Model);
        int checkedTop = 0;
        for (int i = 0; i < 12; i++)
        {
            // The argmax over the 64 positions by a plain loop: the top example's window and position.
            int best = -1;
            for (int r = 0; r < 64; r++) if (fa[r * 12 + i] > 0 && (best < 0 || fa[r * 12 + i] > fa[best * 12 + i])) best = r;
            var st = report.Features[i];
            Assert.Equal(fa.Where((_, k) => k % 12 == i).Count(v => v > 0), st.Firings);
            if (best >= 0)
            {
                Assert.Equal(best / 16, st.TopExamples[0].Window);
                Assert.Equal(best % 16, st.TopExamples[0].Position);
                Assert.Equal(fa[best * 12 + i], st.TopExamples[0].Activation, 5);
                checkedTop++;
            }
            // Relative decoder norm of the chat slot, by hand.
            double n0 = Math.Sqrt(Enumerable.Range(0, 16).Sum(e => w[(0 * 12 + i) * 16 + e] * w[(0 * 12 + i) * 16 + e]));
            double n1 = Math.Sqrt(Enumerable.Range(0, 16).Sum(e => w[(1 * 12 + i) * 16 + e] * w[(1 * 12 + i) * 16 + e]));
            Assert.Equal(n1 / (n0 + n1), st.RelativeDecoderNorm!.Value, 9);
            Assert.Equal(0.5 * ((n1 - n0) / Math.Max(n0, n1) + 1), st.DeltaNorm!.Value, 9);
            // The top logit: the chat slot's decoder row through the chat model's unembedding.
            using var row = wDec[1, i];
            using var logitsOfRow = wu.matmul(row);
            Assert.Equal(logitsOfRow.argmax().item<long>(), st.TopLogits[0].Token);
        }
        Assert.True(checkedTop >= 6, $"only {checkedTop} latents fired");
    }

    [Fact]
    public void SaeFeaturesOfAModelDiffingCrossCoderTakesItsRecordedModelsOrBothFlags()
    {
        var (b, c, data) = TwoModelsOneTokenizer();
        string[] common = ["--dataset", data, "--context-size", "16", "--tokens", "32", "--top", "2"];
        // Recorded as model folders: no --model needed.
        string byPath = SaveDiffingCrossCoder("cc-paths", [b, c]);
        var (exit, stdout, err) = CliRunner.Run(["features", "--sae", byPath, "--out", Sub("out1"), "--html", Sub("site"), .. common]);
        Assert.True(exit == 0, err + stdout);
        var loaded = FeatureReport.Load(Sub("out1"));
        Assert.Equal(12, loaded.Features.Count);
        Assert.All(loaded.Features, f => Assert.InRange(f.DeltaNorm!.Value, 0, 1));
        Assert.Contains("delta_norm", File.ReadAllText(Path.Combine(Sub("out1"), FeatureReport.FeaturesFile)));
        Assert.Contains("id=\"delta-norm\"", File.ReadAllText(Path.Combine(Sub("site"), "features", "0.html")));
        // Recorded by name only: both flags needed, and named in the error.
        string byName = SaveDiffingCrossCoder("cc-names", ["tiny-base", "tiny-chat"]);
        (exit, _, err) = CliRunner.Run(["features", "--sae", byName, "--out", Sub("out2"), .. common]);
        Assert.NotEqual(0, exit);
        Assert.Contains($"{byName} diffs the models tiny-base (base) and tiny-chat (chat), which are not model folders here: give them as --model BASE --diff-model CHAT", err);
        (exit, stdout, err) = CliRunner.Run(["features", "--sae", byName, "--model", b, "--diff-model", c, "--out", Sub("out2"), .. common]);
        Assert.True(exit == 0, err + stdout);
        // Swapped models are refused; --diff-model of a one-model crosscoder and an SAE without --model too.
        string named = SaveDiffingCrossCoder("cc-named", [b, c]);
        (exit, _, err) = CliRunner.Run(["features", "--sae", named, "--model", c, "--diff-model", b, "--out", Sub("out3"), .. common]);
        Assert.NotEqual(0, exit);
        Assert.Contains("swap them (--model is the base model, slot 0)", err);
        using (var cc = RandomCrossCoder()) CrossCoderFormat.Save(cc, Sub("layers"), new CrossCoderSources { HookNames = Hooks, ModelNames = ["m"] });
        (exit, _, err) = CliRunner.Run(["features", "--sae", Sub("layers"), "--model", b, "--diff-model", c, "--out", Sub("out4"), .. common]);
        Assert.NotEqual(0, exit);
        Assert.Contains("--diff-model: only for a model-diffing crosscoder", err);
        (exit, _, err) = CliRunner.Run(["features", "--sae", Sub("layers"), "--out", Sub("out4"), .. common]);
        Assert.NotEqual(0, exit);
        Assert.Contains("--model is required (only a model-diffing crosscoder can take the models it records)", err);
        // SAEDashboard's decoder-norm fold is an SAE's (a crosscoder's latents have one decoder row per slot).
        (exit, _, err) = CliRunner.Run(["features", "--sae", Sub("layers"), "--model", b, "--fold-w-dec-norm", "--out", Sub("out5"), .. common]);
        Assert.NotEqual(0, exit);
        Assert.Contains($"--fold-w-dec-norm: only for an SAE; {Sub("layers")} is a crosscoder", err);
        Assert.False(Directory.Exists(Sub("out5")));
    }
}
