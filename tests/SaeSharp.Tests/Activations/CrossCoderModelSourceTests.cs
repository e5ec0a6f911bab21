using SaeSharp.Activations;
using SaeSharp.Models;
using SaeSharp.Pipelines;
using SaeSharp.Saes;
using SaeSharp.Tests.Cli;
using SaeSharp.Tests.Models;
using SaeSharp.Tokenizers;
using SaeSharp.Training;
using static TorchSharp.torch;

namespace SaeSharp.Tests.Activations;

/// <summary>
/// Crosscoder rows harvested from model runs (<see cref="HarvestSpec.ForCrossCoder"/> through
/// <see cref="ModelActivationSource"/>): several hooks of one model, or one hook of two models on the same windows (model
/// diffing), each row the slots side by side. Expectations come from separate <c>RunWithCache</c> calls per model.
/// </summary>
public class CrossCoderModelSourceTests : ModelTestBase
{
    private static Tensor DrainRows(ModelActivationSource src, int batch = 7)
    {
        var parts = new List<Tensor>();
        while (src.Next(batch) is { } b) parts.Add(b.Input.DetachFromDisposeScope());
        var rows = cat(parts, 0);
        foreach (var p in parts) p.Dispose();
        return rows;
    }

    /// <summary>[windows·pos, L·d]: each hook's activations from its own RunWithCache, side by side.</summary>
    private static Tensor Expected(IReadOnlyList<(HookedTransformer Model, string Hook)> slots, Tensor tokens)
    {
        var parts = new List<Tensor>();
        foreach (var (model, hook) in slots)
        {
            var (logits, cache) = model.RunWithCache(tokens, [hook]);
            logits?.Dispose();
            using (cache) parts.Add(cache[hook].reshape(tokens.numel(), -1).clone());
        }
        return cat(parts, 1);
    }

    [Fact]
    public void TwoHooksOfOneModelAreTheHooksActivationsSideBySideRowForRow()
    {
        using var model = Gpt2();
        var windows = ModelActivationSourceTests.Windows(5, 8);
        var spec = HarvestSpec.ForCrossCoder([model.HookPoints], ["blocks.0.hook_resid_post", "blocks.1.hook_mlp_out"]);
        using var src = new ModelActivationSource(model, spec, () => windows,
            new ModelActivationSourceOptions { ContextSize = 8, BatchSizePrompts = 2, BufferContexts = 2, Shuffle = false });
        Assert.Equal(16, src.SlotWidth);
        Assert.Equal(32, src.DIn);
        using var got = DrainRows(src);
        using var expected = Expected([(model, "blocks.0.hook_resid_post"), (model, "blocks.1.hook_mlp_out")], Tokens([.. windows]));
        Assert.Equal(40, got.shape[0]);
        AssertAllClose(expected, got, 1e-6, "slots side by side");
    }

    [Fact]
    public void TheShuffleKeepsEachTokensSlotsTogether()
    {
        using var model = Gpt2();
        var windows = ModelActivationSourceTests.Windows(6, 8);
        var spec = HarvestSpec.ForCrossCoder([model.HookPoints], ["blocks.0.hook_resid_pre", "blocks.1.hook_resid_post"]);
        using var src = new ModelActivationSource(model, spec, () => windows,
            new ModelActivationSourceOptions { ContextSize = 8, BatchSizePrompts = 2, BufferContexts = 4, Seed = 3 });
        using var got = DrainRows(src, 5);
        using var expected = Expected([(model, "blocks.0.hook_resid_pre"), (model, "blocks.1.hook_resid_post")], Tokens([.. windows]));
        Assert.Equal(expected.shape[0], got.shape[0]);
        Assert.False(got.allclose(expected), "the rows were shuffled");
        // Each served row is a whole harvested row (a row whose slots came from two tokens would match none)...
        using var d = cdist(got, expected);
        using var nearest = d.argmin(1);
        AssertAllClose(expected.index_select(0, nearest), got, 1e-6, "both slots of the same token");
        // ...and the served rows are the harvested rows as a multiset (equal rows: the same token at position 0).
        using var servedCopies = d.lt(1e-3).sum(0);
        using var harvestedCopies = cdist(expected, expected).lt(1e-3).sum(0);
        Assert.True(servedCopies.eq(harvestedCopies).all().item<bool>(), "every harvested row served once");
    }

    [Fact]
    public void ModelDiffingRunsBothModelsOnTheSameWindowsAtTheHook()
    {
        var (b, c, data) = TwoModelsOneTokenizer();
        var opts = new ModelDataOptions { ModelPath = b, DatasetPath = data, ContextSize = 16, Tokens = 160, ActivationsMixingFraction = 0 };
        using var src = ModelPipeline.OpenCrossCoderSource(opts, ["blocks.1.hook_resid_post"], [c], bufferContexts: 2, seed: 1);
        Assert.Equal(["blocks.1.hook_resid_post", "blocks.1.hook_resid_post"], src.Spec.LayerHooks);
        Assert.Equal([0, 1], src.Spec.LayerModels);
        using var got = DrainRows(src);
        // The same windows, tokenized separately, through each model on its own.
        var tokenizer = Tokenizer.FromFolder(b);
        var windows = ModelPipeline.Windows(tokenizer, data, 16, prependBos: true).Take(10).ToArray();
        using var tokens = Tokens(windows);
        using var baseModel = ModelLoader.FromPretrained(b);
        using var chatModel = ModelLoader.FromPretrained(c);
        using var expected = Expected([(baseModel, "blocks.1.hook_resid_post"), (chatModel, "blocks.1.hook_resid_post")], tokens);
        Assert.Equal(160, got.shape[0]);
        AssertAllClose(expected, got, 1e-5, "base slot then chat slot");
        // Different random weights: the two slots differ.
        Assert.True(got.narrow(1, 0, 16).sub(got.narrow(1, 16, 16)).abs().max().item<float>() > 0.1f);
    }

    [Fact]
    public void ModelsWithDifferentTokenizersAreRefusedByName()
    {
        var (b, c, data) = TwoModelsOneTokenizer();
        // The chat model's vocabulary swaps two tokens: same size, different ids.
        var vocabPath = Path.Combine(c, "vocab.json");
        var vocab = System.Text.Json.JsonSerializer.Deserialize<Dictionary<string, int>>(File.ReadAllText(vocabPath))!;
        (vocab["the"], vocab["fox"]) = (vocab["fox"], vocab["the"]);
        File.WriteAllText(vocabPath, System.Text.Json.JsonSerializer.Serialize(vocab));
        var opts = new ModelDataOptions { ModelPath = b, DatasetPath = data, ContextSize = 16, Tokens = 64 };
        var e = Assert.Throws<SaeSharpException>(() => ModelPipeline.OpenCrossCoderSource(opts, ["blocks.0.hook_resid_post"], [c]));
        int lo = Math.Min(vocab["the"], vocab["fox"]);
        Assert.StartsWith($"{ModelLoader.NameOf(c)}'s tokenizer differs from {ModelLoader.NameOf(b)}'s (token {lo}: ", e.Message);
        Assert.EndsWith("a model-diffing crosscoder runs both models on the same token windows, so they need one tokenizer", e.Message);
    }

    [Fact]
    public void SlotsOfDifferentWidthsAndASingleSlotAreRefused()
    {
        using var model = Gpt2();
        Assert.Equal("a crosscoder reads at least two layer slots: give two hooks or two models (got only 'blocks.0.hook_resid_post')",
            Assert.Throws<SaeSharpException>(() => HarvestSpec.ForCrossCoder([model.HookPoints], ["blocks.0.hook_resid_post"])).Message);
        Assert.Equal("hook 'blocks.0.hook_resid_post' is named twice: each layer slot of a crosscoder reads a different hook",
            Assert.Throws<SaeSharpException>(() => HarvestSpec.ForCrossCoder([model.HookPoints], ["blocks.0.hook_resid_post", "blocks.0.hook_resid_post"])).Message);
        var spec = HarvestSpec.ForCrossCoder([model.HookPoints], ["blocks.0.hook_resid_post", "blocks.0.mlp.hook_post"]);
        var e = Assert.Throws<SaeSharpException>(() => new ModelActivationSource(model, spec, () => ModelActivationSourceTests.Windows(2, 8),
            new ModelActivationSourceOptions { ContextSize = 8 }));
        Assert.Contains("blocks.0.mlp.hook_post of ", e.Message);
        Assert.EndsWith("has width 64 but blocks.0.hook_resid_post of " + model.Config.ModelName + " has 16: a crosscoder's layer slots share one width", e.Message);
    }

    [Fact]
    public void StreamingTrainingLeavesNoLiveTensors()
    {
        using var model = Gpt2();
        var spec = HarvestSpec.ForCrossCoder([model.HookPoints], ["blocks.0.hook_resid_post", "blocks.1.hook_resid_post"]);
        long leaked = LiveTensors.Leaked(() =>
        {
            using var src = new ModelActivationSource(model, spec, () => ModelActivationSourceTests.Windows(6, 8),
                new ModelActivationSourceOptions { ContextSize = 8, BatchSizePrompts = 2, BufferContexts = 2, Seed = 1 });
            using var cc = new CrossCoder(new CrossCoderConfig { ActivationDim = 16, DictSize = 24, NumLayers = 2, K = 3 });
            using (var g = new Generator(1)) cc.InitializeWeights(g, 1.0);
            var logs = CrossCoderTrainer.Train(cc, src, new CrossCoderTrainerOptions { Steps = 4, WarmupSteps = 1, ThresholdStartStep = 1 }, 8);
            Assert.Equal(4, logs.Count);
        });
        Assert.Equal(0, leaked);
    }

    [Fact]
    public void StreamingTrainingStopsWhenTheSourceRunsOutAndRefusesAnotherWidth()
    {
        using var model = Gpt2();
        var spec = HarvestSpec.ForCrossCoder([model.HookPoints], ["blocks.0.hook_resid_post", "blocks.1.hook_resid_post"]);
        using var src = new ModelActivationSource(model, spec, () => ModelActivationSourceTests.Windows(2, 8),
            new ModelActivationSourceOptions { ContextSize = 8, BatchSizePrompts = 2, BufferContexts = 2 });
        using var cc = new CrossCoder(new CrossCoderConfig { ActivationDim = 16, DictSize = 24, NumLayers = 2 });
        using (var g = new Generator(1)) cc.InitializeWeights(g, null);
        // 16 rows in batches of 6: 6, 6, 4, then the source is empty.
        var logs = CrossCoderTrainer.Train(cc, src, new CrossCoderTrainerOptions { Steps = 10, WarmupSteps = 0 }, 6);
        Assert.Equal(3, logs.Count);
        using var three = new CrossCoder(new CrossCoderConfig { ActivationDim = 16, DictSize = 24, NumLayers = 3 });
        Assert.Equal("crosscoder training: the source's rows have width 32 but the crosscoder reads 3 layers × 16 = 48",
            Assert.Throws<SaeSharpException>(() => CrossCoderTrainer.Train(three, src, new CrossCoderTrainerOptions { Steps = 1 }, 6)).Message);
    }
    [Fact]
    public void SaeTrainHarvestsTwoHooksOrTwoModelsAndRecordsThem()
    {
        var (b, c, data) = TwoModelsOneTokenizer();
        string[] common = ["--dataset", data, "--context-size", "16", "--tokens", "400", "--arch", "batchtopk_crosscoder", "--k", "2", "--d-sae", "32",
            "--batch-size", "32", "--steps", "6", "--eval-rows", "64"];
        var diff = Sub("cc-diff");
        var (exit, stdout, err) = CliRunner.Run(["train", "--model", b, "--diff-model", c, "--hook", "blocks.1.hook_resid_post", "--out", diff, .. common]);
        Assert.True(exit == 0, err + stdout);
        using (var cc = SaeSharp.Interop.CrossCoderFormat.Load(diff, out var sources))
        {
            Assert.Equal(2, cc.Cfg.NumLayers);
            Assert.Equal(16, cc.Cfg.ActivationDim);
            Assert.Equal(["blocks.1.hook_resid_post", "blocks.1.hook_resid_post"], sources.HookNames);
            Assert.Equal([ModelLoader.NameOf(b), ModelLoader.NameOf(c)], sources.ModelNames);
        }
        var metrics = System.Text.Json.Nodes.JsonNode.Parse(File.ReadAllText(Path.Combine(diff, "metrics.json")))!;
        Assert.Equal(64, metrics["rows"]!.GetValue<long>());
        // The dataset's first ⌈64 / 16⌉ = 4 windows, which training skipped (as for an SAE).
        Assert.True(metrics["eval_held_out"]!.GetValue<bool>());
        Assert.Equal((4, 64L), (metrics["eval_contexts"]!.GetValue<int>(), metrics["eval_tokens"]!.GetValue<long>()));
        Assert.Contains("steps", stdout);

        var layers = Sub("cc-layers");
        (exit, stdout, err) = CliRunner.Run(["train", "--model", b, "--hooks", "blocks.0.hook_resid_post,blocks.1.hook_resid_post", "--out", layers, .. common]);
        Assert.True(exit == 0, err + stdout);
        using (var cc = SaeSharp.Interop.CrossCoderFormat.Load(layers, out var sources))
        {
            Assert.Equal(["blocks.0.hook_resid_post", "blocks.1.hook_resid_post"], sources.HookNames);
            Assert.Equal([ModelLoader.NameOf(b)], sources.ModelNames);
        }

        // Bad requests named: no hooks, --hook beside --hooks, --diff-model without --model.
        (exit, _, err) = CliRunner.Run(["train", "--model", b, "--out", Sub("x"), .. common]);
        Assert.Contains("give --hooks A,B (the layer slots), or --hook H with --diff-model, with --model", err);
        (exit, _, err) = CliRunner.Run(["train", "--model", b, "--hook", "blocks.0.hook_resid_post", "--hooks", "blocks.0.hook_resid_post,blocks.1.hook_resid_post", "--out", Sub("y"), .. common]);
        Assert.Contains("give --hook (one hook, with --diff-model) or --hooks A,B, not both", err);
        (exit, _, err) = CliRunner.Run("train", "--arch", "crosscoder", "--activations", "a.npy,b.npy", "--diff-model", c, "--out", Sub("z"));
        Assert.NotEqual(0, exit);
        Assert.Contains("--diff-model", err);
    }

    [Fact]
    public void SaeEvalSplicesAModelDiffingCrosscoderIntoBothModels()
    {
        var (b, c, data) = TwoModelsOneTokenizer();
        const string hook = "blocks.1.hook_resid_post";
        string folder = Sub("cc-exact");
        using (var exact = SaeSharp.Tests.Evaluation.CrossCoderDownstreamTests.Identity(2, 16))
            SaeSharp.Interop.CrossCoderFormat.Save(exact, folder, new SaeSharp.Interop.CrossCoderSources { HookNames = [hook, hook], ModelNames = [ModelLoader.NameOf(b), ModelLoader.NameOf(c)] });
        string json = Sub("eval.json");
        var (exit, stdout, err) = CliRunner.Run(["eval", "--sae", folder, "--model", b, "--diff-model", c, "--dataset", data, "--context-size", "16", "--tokens", "64", "--json", json]);
        Assert.True(exit == 0, err + stdout);
        var o = System.Text.Json.Nodes.JsonNode.Parse(File.ReadAllText(json))!;
        Assert.Equal(64, o["rows"]!.GetValue<long>());
        Assert.Equal(1.0, o["layers"]![1]!["explained_variance"]!.GetValue<double>(), 1e-9);
        var models = o["models"]!.AsArray();
        Assert.Equal([ModelLoader.NameOf(b), ModelLoader.NameOf(c)], models.Select(m => m!["model"]!.GetValue<string>()));
        foreach (var m in models)
        {
            var ce = m!["model_performance_preservation"]!;
            // The exact crosscoder changes neither model.
            Assert.Equal(ce["ce_loss_without_sae"]!.GetValue<double>(), ce["ce_loss_with_sae"]!.GetValue<double>(), 1e-6);
            Assert.Equal(1.0, ce["ce_loss_score"]!.GetValue<double>(), 1e-5);
            Assert.Equal([hook], m["hook_names"]!.AsArray().Select(h => h!.GetValue<string>()));
        }
        Assert.NotEqual(models[0]!["model_performance_preservation"]!["ce_loss_without_sae"]!.GetValue<double>(),
            models[1]!["model_performance_preservation"]!["ce_loss_without_sae"]!.GetValue<double>());
        Assert.Contains("ce loss with crosscoder", stdout);
        Assert.True(File.Exists(Sub("eval_relative_decoder_norm.png")));

        // A crosscoder of two models needs the second; --diff-model is for crosscoders and model runs only.
        (exit, _, err) = CliRunner.Run(["eval", "--sae", folder, "--model", b, "--dataset", data, "--context-size", "16", "--tokens", "32"]);
        Assert.NotEqual(0, exit);
        Assert.Contains($"reads 2 models ({ModelLoader.NameOf(b)}, {ModelLoader.NameOf(c)}): give the second as --diff-model", err);
        (exit, _, err) = CliRunner.Run(["eval", "--sae", folder, "--activations", "a.npy", "--diff-model", c]);
        Assert.NotEqual(0, exit);
        Assert.Contains("--diff-model", err);
    }

    [Fact]
    public void SaeSteerAndAblateTakeAModelDiffingCrosscoder()
    {
        var (b, c, data) = TwoModelsOneTokenizer();
        const string hook = "blocks.1.hook_resid_post";
        string folder = Sub("cc-random");
        using (var cc = SaeSharp.Tests.Evaluation.CrossCoderDownstreamTests.Random(2, 16, 12, seed: 2))
            SaeSharp.Interop.CrossCoderFormat.Save(cc, folder, new SaeSharp.Interop.CrossCoderSources { HookNames = [hook, hook], ModelNames = [ModelLoader.NameOf(b), ModelLoader.NameOf(c)] });
        var (exit, stdout, err) = CliRunner.Run(["steer", "--sae", folder, "--model", b, "--diff-model", c, "--feature", "3", "--scale", "40",
            "--prompt", "the quick brown fox", "--max-new-tokens", "4", "--temperature", "0", "--runs", "1"]);
        Assert.True(exit == 0, err + stdout);
        Assert.Contains($"slot 1 {hook}", stdout);
        (exit, stdout, err) = CliRunner.Run(["ablate", "--sae", folder, "--model", b, "--diff-model", c, "--slot", "0", "--features", "0,1,2,3",
            "--prompt", "the quick brown fox jumps", "--mode", "mean"]);
        Assert.True(exit == 0, err + stdout);
        Assert.Contains("mean-ablation of 4 latent(s) at slot 0 " + hook, stdout);
        Assert.Contains("CE loss ablated", stdout);
        (exit, _, err) = CliRunner.Run(["ablate", "--sae", folder, "--model", b, "--features", "0", "--prompt", "the fox"]);
        Assert.NotEqual(0, exit);
        Assert.Contains("give the second as --diff-model", err);
        (exit, _, err) = CliRunner.Run(["ablate", "--sae", folder, "--model", b, "--diff-model", c, "--slot", "2", "--features", "0", "--prompt", "the fox"]);
        Assert.NotEqual(0, exit);
        Assert.Contains("--slot 2: give 0..1", err);
    }

    [Fact]
    public void LatentScalingFromTheModelRunsEqualsLatentScalingOnCachesOfThem()
    {
        var (b, c, data) = TwoModelsOneTokenizer();
        const string hook = "blocks.1.hook_resid_post";
        string folder = Sub("cc-scaling");
        using (var cc = SaeSharp.Tests.Evaluation.CrossCoderDownstreamTests.Random(2, 16, 12, seed: 5))
            SaeSharp.Interop.CrossCoderFormat.Save(cc, folder, new SaeSharp.Interop.CrossCoderSources { HookNames = [hook, hook], ModelNames = [ModelLoader.NameOf(b), ModelLoader.NameOf(c)] });
        string[] windows = ["--dataset", data, "--context-size", "16", "--tokens", "96"];
        foreach (var (model, name) in new[] { (b, "base"), (c, "chat") })
        {
            var (code, so, se) = CliRunner.Run(["cache", "--model", model, "--hook", hook, "--out", Sub("cache-" + name), .. windows]);
            Assert.True(code == 0, se + so);
        }
        string filesJson = Sub("files.json"), modelJson = Sub("model.json");
        var (exit, stdout, err) = CliRunner.Run("eval", "--sae", folder, "--activations", Sub("cache-base") + "," + Sub("cache-chat"),
            "--latent-scaling", "--latents", "all", "--json", filesJson);
        Assert.True(exit == 0, err + stdout);
        (exit, stdout, err) = CliRunner.Run(["eval", "--sae", folder, "--model", b, "--diff-model", c, .. windows, "--latent-scaling", "--latents", "all", "--json", modelJson]);
        Assert.True(exit == 0, err + stdout);
        Assert.Contains("latent scaling (ν = β", stdout);
        Assert.True(File.Exists(Sub("model_latent_scaling.png")));
        var fromFiles = System.Text.Json.Nodes.JsonNode.Parse(File.ReadAllText(filesJson))!["latent_scaling"]!;
        var fromModels = System.Text.Json.Nodes.JsonNode.Parse(File.ReadAllText(modelJson))!["latent_scaling"]!;
        Assert.Equal(96, fromFiles["rows"]!.GetValue<long>());
        Assert.Equal(96, fromModels["rows"]!.GetValue<long>());
        var lf = fromFiles["latents"]!.AsArray();
        var lm = fromModels["latents"]!.AsArray();
        Assert.Equal(12, lm.Count);
        int compared = 0;
        for (int i = 0; i < 12; i++)
        {
            Assert.Equal(lf[i]!["count_active"]!.GetValue<long>(), lm[i]!["count_active"]!.GetValue<long>());
            foreach (var key in new[] { "beta_activation_base", "beta_activation_chat", "beta_reconstruction_base", "beta_reconstruction_chat",
                         "beta_error_base", "beta_error_chat", "beta_ratio_error", "beta_ratio_reconstruction" })
            {
                if (lf[i]![key] is null) { Assert.Null(lm[i]![key]); continue; }
                double want = lf[i]![key]!.GetValue<double>(), got = lm[i]![key]!.GetValue<double>();
                Assert.True(Math.Abs(want - got) <= 1e-6 * Math.Max(1, Math.Abs(want)), $"latent {i} {key}: files {want}, model runs {got}");
                compared++;
            }
        }
        Assert.True(compared >= 40, $"only {compared} finite betas compared: too few latents fired");
        // --latents without --latent-scaling is refused with --model too; --latent-scaling is for crosscoders.
        (exit, _, err) = CliRunner.Run(["eval", "--sae", folder, "--model", b, "--diff-model", c, .. windows, "--latents", "1"]);
        Assert.NotEqual(0, exit);
        Assert.Contains("--latents: only with --latent-scaling", err);
    }

    [Fact]
    public void TrainFromModelRunsWithTheNormalizerTakesTheFirstTokensStatisticsAndResumesExactly()
    {
        var (b, c, data) = TwoModelsOneTokenizer();
        const string hook = "blocks.1.hook_resid_post";
        string outDir = Sub("cc-norm");
        string[] args = ["train", "--arch", "batchtopk_crosscoder", "--model", b, "--diff-model", c, "--hook", hook, "--dataset", data, "--context-size", "16",
            "--tokens", "400", "--k", "2", "--d-sae", "24", "--batch-size", "32", "--steps", "7", "--checkpoint-every", "3", "--eval-rows", "32",
            "--activation-normalizer", "--target-rms", "2", "--normalizer-tokens", "48", "--out", outDir];
        var (exit, stdout, err) = CliRunner.Run(args);
        Assert.True(exit == 0, err + stdout);
        var first = SaeSharp.IO.SafeTensors.Load(Path.Combine(outDir, SaeSharp.Interop.CrossCoderFormat.WeightsFile));
        using (var scope = NewDisposeScope())
        {
            // The first 48 tokens training reads (3 windows of 16 after the 2 held out by --eval-rows 32) through each model
            // on its own; the mean and Bessel std in float64 by hand.
            var windows = ModelPipeline.Windows(Tokenizer.FromFolder(b), data, 16, prependBos: true).Skip(2).Take(3).ToArray();
            using var baseModel = ModelLoader.FromPretrained(b);
            using var chatModel = ModelLoader.FromPretrained(c);
            var rows = Expected([(baseModel, hook), (chatModel, hook)], Tokens(windows)).view(48, 2, 16).to(ScalarType.Float64);
            var a = rows.contiguous().data<double>().ToArray();
            var mean = new double[32];
            var std = new double[32];
            for (int j = 0; j < 32; j++)
            {
                for (int r = 0; r < 48; r++) mean[j] += a[r * 32 + j] / 48;
                for (int r = 0; r < 48; r++) std[j] += (a[r * 32 + j] - mean[j]) * (a[r * 32 + j] - mean[j]) / 47;
                std[j] = Math.Sqrt(std[j]);
            }
            var gotMean = first["activation_mean"].to(ScalarType.Float64).contiguous().data<double>().ToArray();
            var gotStd = first["activation_std"].to(ScalarType.Float64).contiguous().data<double>().ToArray();
            for (int j = 0; j < 32; j++)
            {
                Assert.True(Math.Abs(gotMean[j] - mean[j]) <= 1e-5 * Math.Max(1, Math.Abs(mean[j])), $"activation_mean[{j}]: {gotMean[j]} vs {mean[j]}");
                Assert.True(Math.Abs(gotStd[j] - std[j]) <= 1e-5 * Math.Max(1, std[j]), $"activation_std[{j}]: {gotStd[j]} vs {std[j]}");
            }
            // The fork's global scale per slot: target_rms / √(Σ_d std² + 1e-8).
            var scale = first["activation_global_scale"].to(ScalarType.Float64).data<double>().ToArray();
            for (int l = 0; l < 2; l++)
                Assert.Equal(2 / Math.Sqrt(std.Skip(16 * l).Take(16).Sum(v => v * v) + 1e-8), scale[l], 1e-5);
        }
        // Resumed from step 6 (the last checkpoint removed): the same weights, bit for bit, as the run straight through.
        Directory.Delete(Path.Combine(outDir, "checkpoints", "step_000000007"), recursive: true);
        (exit, stdout, err) = CliRunner.Run([.. args, "--resume"]);
        Assert.True(exit == 0, err + stdout);
        var second = SaeSharp.IO.SafeTensors.Load(Path.Combine(outDir, SaeSharp.Interop.CrossCoderFormat.WeightsFile));
        foreach (var (key, t) in first)
            Assert.True(t.eq(second[key]).all().item<bool>(), $"{key} differs after --resume");
        // Another hold-out on --resume would train on windows the first part evaluated on: refused, naming both counts.
        var otherHoldOut = args.ToArray();
        otherHoldOut[Array.IndexOf(otherHoldOut, "--eval-rows") + 1] = "64";
        (exit, stdout, err) = CliRunner.Run([.. otherHoldOut, "--resume"]);
        Assert.NotEqual(0, exit);
        Assert.Contains("skipped the first 2 context windows", err);
        Assert.Contains("skips 4", err);
        // More --normalizer-tokens than the training windows hold: the statistics of those there are, said in a note.
        var many = args.ToArray();
        many[Array.IndexOf(many, "--normalizer-tokens") + 1] = "1000000";
        many[Array.IndexOf(many, "--out") + 1] = Sub("cc-many");
        (exit, stdout, err) = CliRunner.Run(many);
        Assert.True(exit == 0, err + stdout);
        Assert.Contains("note: the activation normaliser's statistics come from", err);
        Assert.Contains("not the 1000000 of --normalizer-tokens", err);
        // --normalizer-tokens needs the normaliser and a model run.
        (exit, _, err) = CliRunner.Run(["train", "--arch", "crosscoder", "--model", b, "--hooks", "blocks.0.hook_resid_post,blocks.1.hook_resid_post", "--dataset", data,
            "--normalizer-tokens", "48", "--out", Sub("cc-x")]);
        Assert.NotEqual(0, exit);
        Assert.Contains("--normalizer-tokens is for --activation-normalizer with --model", err);
    }

    [Fact]
    public void SaeAblateClampsACrosscoderLatentAsAHandWrittenHookDoes()
    {
        var (b, c, data) = TwoModelsOneTokenizer();
        const string hook = "blocks.1.hook_resid_post";
        const string prompt = "the quick brown fox jumps";
        string folder = Sub("cc-clamp");
        using (var cc = SaeSharp.Tests.Evaluation.CrossCoderDownstreamTests.Random(2, 16, 12, seed: 3))
            SaeSharp.Interop.CrossCoderFormat.Save(cc, folder, new SaeSharp.Interop.CrossCoderSources { HookNames = [hook, hook], ModelNames = [ModelLoader.NameOf(b), ModelLoader.NameOf(c)] });
        var (exit, stdout, err) = CliRunner.Run(["ablate", "--sae", folder, "--model", b, "--diff-model", c, "--clamp", "3:2.5", "--clamp", "7:0", "--prompt", prompt]);
        Assert.True(exit == 0, err + stdout);
        Assert.Contains("latent 3 clamped to 2.5, latent 7 clamped to 0 at slot 1 " + hook, stdout);

        // By hand: f of the clean activations of both models, latents 3 and 7 set, and the chat model run with a hook adding
        // Decode(f') − Decode(f) of slot 1 at every position; the mean next-token CE of that run.
        using var scope = NewDisposeScope();
        using var cc2 = SaeSharp.Interop.CrossCoderFormat.Load(folder);
        cc2.eval();
        var ids = Tokenizer.FromFolder(b).EncodePrompt(prompt, true);
        var tokens = tensor(ids).unsqueeze(0);
        long n = ids.Length;
        using var baseModel = ModelLoader.FromPretrained(b);
        using var chatModel = ModelLoader.FromPretrained(c);
        Tensor Acts(HookedTransformer m)
        {
            var (logits, cache) = m.RunWithCache(tokens, [hook]);
            logits?.Dispose();
            using (cache) return cache[hook].reshape(n, 16).clone();
        }
        Tensor delta;
        using (no_grad())
        {
            var x = stack([Acts(baseModel), Acts(chatModel)], 1);
            var f = cc2.Encode(x);
            var edited = f.clone();
            edited[TensorIndex.Colon, 3] = tensor(2.5f);
            edited[TensorIndex.Colon, 7] = tensor(0f);
            delta = (cc2.Decode(edited) - cc2.Decode(f)).select(1, 1);
        }
        Assert.True(delta.abs().max().item<float>() > 1e-3f, "the clamp changes nothing: pick another latent");
        double Ce(Tensor logits)
        {
            var lp = logits[0].narrow(0, 0, n - 1).to(ScalarType.Float64).log_softmax(-1);
            return -lp.gather(1, tokens[0].narrow(0, 1, n - 1).unsqueeze(1)).mean().item<double>();
        }
        double clean, clamped;
        using (no_grad())
        {
            clean = Ce(chatModel.Run(tokens, new RunOptions()).Logits!);
            clamped = Ce(chatModel.Run(tokens, new RunOptions { Hooks = [(hook, y => y + delta.view(1, n, 16).to(y.dtype))] }).Logits!);
        }
        Assert.Matches($@"CE loss clean\s+│?\s*{clean.ToString("F4", System.Globalization.CultureInfo.InvariantCulture)}", stdout);
        Assert.Matches($@"CE loss ablated\s+│?\s*{clamped.ToString("F4", System.Globalization.CultureInfo.InvariantCulture)}", stdout);
        Assert.NotEqual(clean.ToString("F4"), clamped.ToString("F4"));

        // Nothing to do, a bad form and a latent out of range are named.
        (exit, _, err) = CliRunner.Run(["ablate", "--sae", folder, "--model", b, "--diff-model", c, "--prompt", prompt]);
        Assert.Contains("give --features (to ablate), --clamp F:V, or both", err);
        (exit, _, err) = CliRunner.Run(["ablate", "--sae", folder, "--model", b, "--diff-model", c, "--clamp", "3", "--prompt", prompt]);
        Assert.Contains("--clamp '3': expected F:V", err);
        (exit, _, err) = CliRunner.Run(["ablate", "--sae", folder, "--model", b, "--diff-model", c, "--clamp", "12:1", "--prompt", prompt]);
        Assert.NotEqual(0, exit);
        Assert.Contains("12", err);
    }

    [Fact]
    public void SaeSteerOfACrosscoderPrintsTheLatentsTopLogitTokensThroughTheSteeredModel()
    {
        var (b, c, _) = TwoModelsOneTokenizer();
        const string hook = "blocks.1.hook_resid_post";
        string folder = Sub("cc-steer");
        using (var cc = SaeSharp.Tests.Evaluation.CrossCoderDownstreamTests.Random(2, 16, 12, seed: 4))
            SaeSharp.Interop.CrossCoderFormat.Save(cc, folder, new SaeSharp.Interop.CrossCoderSources { HookNames = [hook, hook], ModelNames = [ModelLoader.NameOf(b), ModelLoader.NameOf(c)] });
        using var scope = NewDisposeScope();
        using var cc2 = SaeSharp.Interop.CrossCoderFormat.Load(folder);
        var tok = Tokenizer.FromFolder(b);
        foreach (var (slot, modelPath) in new[] { (1, c), (0, b) })
        {
            var (exit, stdout, err) = CliRunner.Run(["steer", "--sae", folder, "--model", b, "--diff-model", c, "--slot", slot.ToString(), "--feature", "5", "--scale", "10",
                "--prompt", "the quick brown fox", "--max-new-tokens", "2", "--temperature", "0", "--runs", "1"]);
            Assert.True(exit == 0, err + stdout);
            Assert.Contains("feature 5: top logit tokens", stdout);
            // By hand: slot's decoder row of latent 5 times the steered model's unembedding with ln_f's scale folded in.
            using var model = ModelLoader.FromPretrained(modelPath);
            var p = model.named_parameters().ToDictionary(kv => kv.name, kv => kv.parameter);
            var wu = (p.TryGetValue("lm_head.weight", out var head) ? head : p["transformer.wte.weight"]).detach().to(ScalarType.Float64);
            var gamma = p["transformer.ln_f.weight"].detach().to(ScalarType.Float64);
            var row = cc2.Decoder.Weight[slot][5].detach().to(ScalarType.Float64);
            var logits = (wu * gamma.unsqueeze(0)).matmul(row);
            var (values, ids) = logits.topk(3);
            for (int k = 0; k < 3; k++)
            {
                string text = SaeSharp.Analysis.DashboardWriter.Quote(tok.TokenText((int)ids[k].item<long>()));
                string value = values[k].item<double>().ToString("F3", System.Globalization.CultureInfo.InvariantCulture);
                Assert.Matches(System.Text.RegularExpressions.Regex.Escape(text) + @"\s*│?\s*" + System.Text.RegularExpressions.Regex.Escape(value), stdout);
            }
        }
    }
}
