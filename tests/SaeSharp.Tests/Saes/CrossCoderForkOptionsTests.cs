using System.Text.Json.Nodes;
using SaeSharp.Evaluation;
using SaeSharp.Interop;
using SaeSharp.Saes;
using SaeSharp.Tests.Tokenizers;
using SaeSharp.Training;
using static SaeSharp.Tests.Saes.CrossCoderTests;
using static TorchSharp.torch;

namespace SaeSharp.Tests.Saes;

/// <summary>
/// The fork's remaining crosscoder options against bench/reference/crosscoder_fixture.py (reference.json and the
/// checkpoints it wrote): k annealing with the activation normaliser in BatchTopK training, <c>encoder_layers</c> and
/// <c>num_decoder_layers</c> (load, forward, loss, save), and the refusals that stay (<c>latent_processor</c>, a normaliser
/// on a decoder of another slot count).
/// </summary>
public sealed class CrossCoderForkOptionsTests : TempDirTestBase
{
    private static CrossCoder WithParams(CrossCoderConfig cfg, JsonNode p)
    {
        var cc = new CrossCoder(cfg);
        using var _ = no_grad();
        cc.Encoder.Weight.copy_(CrossCoderTests.Json(p["encoder.weight"]!));
        cc.Encoder.Bias.copy_(CrossCoderTests.Json(p["encoder.bias"]!));
        cc.Decoder.Weight.copy_(CrossCoderTests.Json(p["decoder.weight"]!));
        cc.Decoder.Bias.copy_(CrossCoderTests.Json(p["decoder.bias"]!));
        return cc;
    }

    [Fact]
    public void KAnnealingFollowsTheForkSchedule()
    {
        using var cc = new CrossCoder(new CrossCoderConfig { ActivationDim = 4, DictSize = 6, NumLayers = 2, K = 1 });
        // k_max 4 → k 1 over 4 steps: 4 − 3·s/4 = 4, 3.25, 2.5, 1.75, then k. Python's round(2.5) is 2 (half to even).
        using (var t = new CrossCoderTrainer(cc, new CrossCoderTrainerOptions { Steps = 10, KMax = 4, KAnnealingSteps = 4 }))
            Assert.Equal([4, 3, 2, 2, 1, 1], Enumerable.Range(0, 6).Select(s => t.KAt(s)));
        // k_max without annealing steps: the fork builds its crosscoder with k_max and keeps it.
        using (var t = new CrossCoderTrainer(cc, new CrossCoderTrainerOptions { Steps = 10, KMax = 3 }))
            Assert.Equal([3, 3, 3], Enumerable.Range(0, 3).Select(s => t.KAt(s)));
        Assert.Contains("k_max", Assert.Throws<SaeSharpException>(() => new CrossCoderTrainer(cc, new CrossCoderTrainerOptions { Steps = 10, KAnnealingSteps = 3 })).Message);
        using var l1 = new CrossCoder(new CrossCoderConfig { ActivationDim = 4, DictSize = 6, NumLayers = 2 });
        Assert.Contains("BatchTopK", Assert.Throws<SaeSharpException>(() => new CrossCoderTrainer(l1, new CrossCoderTrainerOptions { Steps = 10, KMax = 3 })).Message);
    }

    [Fact]
    public void AnnealedStepsWithTheNormalizerMatchTheFork()
    {
        var r = Reference;
        var t = r["anneal_train"]!;
        var batches = t["batches"]!.AsArray().Select(b => CrossCoderTests.Json(b!)).ToList();
        using var cc = WithParams(new CrossCoderConfig { ActivationDim = 4, DictSize = 6, NumLayers = 3, K = 2, NormalizerBuffers = true }, r["params"]!);
        // The statistics as the fork's caches compute them: per slot the mean and the Bessel-corrected std over all rows.
        using (var all = cat(batches, 0))
        {
            var (mean, std) = CrossCoderTrainer.ActivationStatistics(all);
            AssertClose(CrossCoderTests.Json(t["activation_mean"]!), mean, "activation_mean");
            AssertClose(CrossCoderTests.Json(t["activation_std"]!), std, "activation_std");
            cc.SetActivationNormalizer(mean, std);
            mean.Dispose();
            std.Dispose();
        }
        Assert.True(cc.HasActivationNormalizer);
        using var trainer = new CrossCoderTrainer(cc, new CrossCoderTrainerOptions
        {
            Steps = 4, Lr = 1e-2, WarmupSteps = 1, ThresholdStartStep = 0, DeadFeatureThreshold = 5, KMax = 5, KAnnealingSteps = 3,
        });
        for (int s = 0; s < 4; s++)
        {
            var expected = t["steps"]![s]!;
            int k = expected["k"]!.GetValue<int>();
            Assert.Equal(k, trainer.KAt(s));
            using var xn = cc.NormalizeActivations(batches[s]); // as CrossCoderTrainer.Train feeds every batch
            var log = trainer.Step(s, xn);
            Assert.Equal(k, cc.KBuffer!.item<int>());
            Assert.Equal(expected["dead"]!.GetValue<int>(), log.DeadLatents);
            Assert.Equal(expected["auxk_loss"]!.GetValue<double>(), log.AuxkLoss, 4);
            Assert.Equal(expected["loss"]!.GetValue<double>(), log.Loss, 4);
            Assert.Equal(expected["threshold"]!.GetValue<double>(), cc.Threshold!.item<float>(), 4);
            var p = expected["params"]!;
            AssertClose(CrossCoderTests.Json(p["encoder.weight"]!), cc.Encoder.Weight, $"step {s} encoder.weight", 1e-4);
            AssertClose(CrossCoderTests.Json(p["decoder.weight"]!), cc.Decoder.Weight, $"step {s} decoder.weight", 1e-4);
            AssertClose(CrossCoderTests.Json(p["decoder.bias"]!), cc.Decoder.Bias, $"step {s} decoder.bias", 1e-4);
        }
        foreach (var b in batches) b.Dispose();
    }

    [Fact]
    public void TrainedWithTheNormalizerSavesAndReloadsTheForksForward()
    {
        using var scope = NewDisposeScope();
        using var g = new Generator(3);
        var data = randn([64, 2, 4], generator: g) * tensor(new float[] { 3, 0.5f }).view(1, 2, 1) + 2;
        using var cc = new CrossCoder(new CrossCoderConfig { ActivationDim = 4, DictSize = 8, NumLayers = 2, K = 2, NormalizerBuffers = true, TargetRms = 2.0 });
        cc.InitializeWeights(g, 1.0);
        var (mean, std) = CrossCoderTrainer.ActivationStatistics(data);
        cc.SetActivationNormalizer(mean, std);
        CrossCoderTrainer.Train(cc, data, new CrossCoderTrainerOptions { Steps = 6, WarmupSteps = 1, ThresholdStartStep = 1, KMax = 4, KAnnealingSteps = 4 }, 16, seed: 1);
        Assert.Equal(2, cc.KBuffer!.item<int>()); // annealed down to k
        // After normalising, each slot's rows have mean squared norm target_rms²·(N − 1)/N (the std is Bessel-corrected; the fork's keep_relative_variance).
        var xn = cc.NormalizeActivations(data);
        var msq = xn.pow(2).sum(-1).mean([0]);
        AssertClose(tensor(new float[] { 4, 4 }), msq * (64f / 63f), "normalised squared norm", 1e-4);
        CrossCoderFormat.Save(cc, Path.Combine(_dir, "hub"));
        CrossCoderFormat.SaveAePt(cc, Path.Combine(_dir, "aept"));
        foreach (var dir in new[] { "hub", "aept" })
        {
            using var loaded = CrossCoderFormat.Load(Path.Combine(_dir, dir));
            Assert.True(loaded.HasActivationNormalizer, dir);
            Assert.Equal(2.0, loaded.Cfg.TargetRms);
            AssertClose(cc.forward(data), loaded.forward(data), $"{dir} forward");
            // The fork's forward: x̂ = denormalize(decode(encode(normalize(x)))).
            var f = loaded.EncodePostRelu(xn);
            f = f * (f * loaded.CodeNormalizationWeights()).gt(loaded.Threshold!);
            var expected = (loaded.DecodeNoBias(f) + loaded.Decoder.Bias) / loaded.NormalizeActivations(ones(1, 2, 4)).sub(loaded.NormalizeActivations(zeros(1, 2, 4))) + mean;
            AssertClose(expected, loaded.forward(data), $"{dir} forward by hand", 1e-4);
        }
    }

    [Fact]
    public void EncoderLayersLoadAndForwardAsTheFork()
    {
        var r = Reference;
        var e = r["encoder_layers"]!;
        using var cc = CrossCoderFormat.Load(TestPaths.Data("crosscoder", "cc_encoder_layers"));
        Assert.Equal(new[] { 0, 2 }, cc.Cfg.EncoderLayers!);
        Assert.Equal(3, cc.Cfg.NumLayers);
        Assert.Equal([2L, 4, 6], cc.Encoder.Weight.shape);
        using var x = CrossCoderTests.Json(r["x"]!);
        using var f = cc.Encode(x);
        AssertClose(CrossCoderTests.Json(e["f"]!), f, "f");
        using var xHat = cc.forward(x);
        AssertClose(CrossCoderTests.Json(e["x_hat"]!), xHat, "x_hat");
        using var loss = cc.L1Loss(x, 0.1);
        Assert.Equal(e["loss"]!.GetValue<double>(), loss.Loss.item<float>(), 4);
        // Slot 1 is not read: changing it leaves the latents as they were.
        using var x2 = x.clone();
        x2.select(1, 1).add_(TorchScalars.Of(100.0), TorchScalars.One);
        using var f2 = cc.Encode(x2);
        AssertClose(f, f2, "f with slot 1 changed");
        // Saved in both forms and loaded again: the same encoder_layers and forward.
        CrossCoderFormat.Save(cc, Path.Combine(_dir, "hub"));
        var config = JsonNode.Parse(File.ReadAllText(Path.Combine(_dir, "hub", "config.json")))!;
        Assert.Equal("[0,2]", config["encoder_layers"]!.ToJsonString());
        Assert.False(config["init_with_transpose"]!.GetValue<bool>());
        Assert.Equal(3, config["num_layers"]!.GetValue<int>());
        CrossCoderFormat.SaveAePt(cc, Path.Combine(_dir, "aept"));
        foreach (var dir in new[] { "hub", "aept" })
        {
            using var back = CrossCoderFormat.Load(Path.Combine(_dir, dir));
            Assert.Equal(new[] { 0, 2 }, back.Cfg.EncoderLayers!);
            using var y = back.forward(x);
            AssertClose(xHat, y, $"{dir} forward");
        }
        // Trainable (the decoder writes every slot): the step's loss, before its update, is the fork's.
        using var trainer = new CrossCoderTrainer(cc, new CrossCoderTrainerOptions { Steps = 2, WarmupSteps = 0, Lr = 1e-3 });
        var log = trainer.Step(0, x);
        Assert.Equal(e["loss"]!.GetValue<double>(), log.Loss, 4);
    }

    [Fact]
    public void BatchTopKEncoderLayersRoundTripThroughTheTrainerConfig()
    {
        // The BatchTopK trainer's config.json keeps dict_class_kwargs as str(v): "[0, 2]".
        using var cc = new CrossCoder(new CrossCoderConfig { ActivationDim = 4, DictSize = 6, NumLayers = 3, K = 2, EncoderLayers = [2, 0] });
        using (var g = new Generator(4)) cc.InitializeWeights(g, 1.0);
        Assert.Equal([3L, 6, 4], cc.Decoder.Weight.shape);
        CrossCoderFormat.SaveAePt(cc, _dir);
        var trainer = JsonNode.Parse(File.ReadAllText(Path.Combine(_dir, "config.json")))!["trainer"]!;
        Assert.Equal("[2, 0]", trainer["dict_class_kwargs"]!["encoder_layers"]!.GetValue<string>());
        using var back = CrossCoderFormat.Load(_dir);
        Assert.Equal(new[] { 2, 0 }, back.Cfg.EncoderLayers!);
        using var x = randn(5, 3, 4);
        // x[:, [2, 0]]: slot 2 goes through encoder.weight[0].
        using var byHand = nn.functional.relu(einsum("bd,dn->bn", x.select(1, 2), cc.Encoder.Weight[0]) + einsum("bd,dn->bn", x.select(1, 0), cc.Encoder.Weight[1]) + cc.Encoder.Bias);
        using var f = back.EncodePostRelu(x);
        AssertClose(byHand, f, "encode of x[:, [2, 0]]");
    }

    [Fact]
    public void NumDecoderLayersDecodesItsOwnSlotsAndIsRefusedWhereXHatMeetsX()
    {
        var r = Reference;
        var e = r["num_decoder_layers"]!;
        using var cc = CrossCoderFormat.Load(TestPaths.Data("crosscoder", "cc_num_decoder_layers"));
        Assert.Equal(2, cc.Cfg.NumDecoderLayers);
        using var x = CrossCoderTests.Json(r["x"]!);
        using var xHat = cc.forward(x);
        AssertClose(CrossCoderTests.Json(e["x_hat"]!), xHat, "x_hat [batch, 2, d]");
        using var c = cc.CodeNormalizationWeights();
        AssertClose(CrossCoderTests.Json(e["c"]!), c, "c over the decoder's 2 slots");
        CrossCoderFormat.Save(cc, _dir);
        using (var back = CrossCoderFormat.Load(_dir))
        {
            Assert.Equal(2, back.Cfg.NumDecoderLayers);
            using var y = back.forward(x);
            AssertClose(xHat, y, "reloaded forward");
        }
        // Where x̂ is compared with x slot by slot (the fork's trainers assert the shapes agree): refused, naming both counts.
        Assert.Contains("num_decoder_layers", Assert.Throws<SaeSharpException>(() => CrossCoderEvaluator.Evaluate(cc, x)).Message);
        Assert.Contains("num_decoder_layers", Assert.Throws<SaeSharpException>(() => new CrossCoderTrainer(cc, new CrossCoderTrainerOptions { Steps = 1 })).Message);
        // A normaliser needs one statistic per decoded slot for x̂'s denormalisation.
        using var withNorm = new CrossCoder(new CrossCoderConfig { ActivationDim = 4, DictSize = 6, NumLayers = 3, NumDecoderLayers = 2, NormalizerBuffers = true });
        using var m = zeros(3, 4);
        using var s = ones(3, 4);
        Assert.Contains("num_decoder_layers 2", Assert.Throws<SaeSharpException>(() => withNorm.SetActivationNormalizer(m, s)).Message);
    }

    [Fact]
    public void DecoupledBatchTopKEncodesDecodesAndReportsAsTheFork()
    {
        var r = Reference;
        var e = r["decoupled"]!;
        using var cc = CrossCoderFormat.Load(TestPaths.Data("crosscoder", "cc_decoupled", "ae.pt"));
        Assert.True(cc.DecoupledCodes);
        AssertClose(CrossCoderTests.Json(e["threshold"]!), cc.Threshold!, "threshold [L]");
        using var x = CrossCoderTests.Json(r["x"]!);
        using var f = cc.Encode(x);
        AssertClose(CrossCoderTests.Json(e["f_threshold"]!), f, "f [batch, L, dict_size]");
        using var acts = cc.GetActivations(x);
        AssertClose(CrossCoderTests.Json(e["activations"]!), acts, "get_activations: Σ_l f_l·c_l");
        using var xHat = cc.forward(x);
        AssertClose(CrossCoderTests.Json(e["x_hat"]!), xHat, "x_hat: each slot decodes its own codes");
        var (fTop, _, _) = cc.EncodeBatchTopK(x, 2);
        using (fTop)
        {
            AssertClose(CrossCoderTests.Json(e["f_topk"]!), fTop, "per-slot batch top-k");
            // k·batch entries kept per slot (all positive here or zero where ReLU gave 0).
            Assert.True(fTop.gt(0).sum([0, 2]).le(10).all().item<bool>());
        }
        // Evaluation counts a latent active where any slot kept it.
        var m = CrossCoderEvaluator.Evaluate(cc, x);
        using (var expected = CrossCoderTests.Json(e["f_threshold"]!))
            Assert.Equal(expected.amax([1]).gt(0).sum(-1).to(ScalarType.Float64).mean().item<double>(), m.L0, 9);
        // Saved and loaded again: the per-slot thresholds survive both forms.
        CrossCoderFormat.Save(cc, Path.Combine(_dir, "hub"));
        CrossCoderFormat.SaveAePt(cc, Path.Combine(_dir, "aept"));
        foreach (var dir in new[] { "hub", "aept" })
        {
            using var back = CrossCoderFormat.Load(Path.Combine(_dir, dir));
            AssertClose(cc.Threshold!, back.Threshold!, $"{dir} threshold");
            using var y = back.forward(x);
            AssertClose(xHat, y, $"{dir} forward");
        }
        // Edits and Latent Scaling need one code per latent: refused by name.
        using var clean = zeros(1, 1, 3, 4);
        Assert.Contains("DECOUPLED", Assert.Throws<SaeSharpException>(() =>
            SaeSharp.Interventions.CrossCoderInterventions.EditLatents(cc, clean, [(0, "h")], f2 => f2)).Message);
    }

    [Fact]
    public void DecoupledBatchTopKStepsMatchTheFork()
    {
        var r = Reference;
        var t = r["decoupled"]!;
        using var cc = WithParams(new CrossCoderConfig { ActivationDim = 4, DictSize = 6, NumLayers = 3, K = 2, CodeNormalization = CodeNormalization.Decoupled }, r["params"]!);
        using var trainer = new CrossCoderTrainer(cc, new CrossCoderTrainerOptions { Steps = 3, Lr = 1e-2, WarmupSteps = 1, ThresholdStartStep = 0, DeadFeatureThreshold = 5 });
        var batches = r["train_batches"]!.AsArray();
        for (int s = 0; s < 3; s++)
        {
            var expected = t["steps"]![s]!;
            using var x = CrossCoderTests.Json(batches[s]!);
            var log = trainer.Step(s, x);
            Assert.Equal(expected["dead"]!.GetValue<int>(), log.DeadLatents);
            Assert.Equal(expected["auxk_loss"]!.GetValue<double>(), log.AuxkLoss, 4);
            Assert.Equal(expected["loss"]!.GetValue<double>(), log.Loss, 4);
            AssertClose(CrossCoderTests.Json(expected["threshold"]!), cc.Threshold!, $"step {s} thresholds", 1e-4);
            var p = expected["params"]!;
            AssertClose(CrossCoderTests.Json(p["encoder.weight"]!), cc.Encoder.Weight, $"step {s} encoder.weight", 1e-4);
            AssertClose(CrossCoderTests.Json(p["encoder.bias"]!), cc.Encoder.Bias, $"step {s} encoder.bias", 1e-4);
            AssertClose(CrossCoderTests.Json(p["decoder.weight"]!), cc.Decoder.Weight, $"step {s} decoder.weight", 1e-4);
            AssertClose(CrossCoderTests.Json(p["decoder.bias"]!), cc.Decoder.Bias, $"step {s} decoder.bias", 1e-4);
        }
    }

    [Fact]
    public void LatentProcessorAndInconsistentLayersAreRefused()
    {
        foreach (var f in Directory.GetFiles(TestPaths.Data("crosscoder", "cc_encoder_layers"))) File.Copy(f, Path.Combine(_dir, Path.GetFileName(f)));
        var configPath = Path.Combine(_dir, "config.json");
        var original = File.ReadAllText(configPath);
        var config = JsonNode.Parse(original)!;
        config["latent_processor"] = "<function relu at 0x7f>";
        File.WriteAllText(configPath, config.ToJsonString());
        Assert.Contains("latent_processor", Assert.Throws<SaeSharpException>(() => CrossCoderFormat.Load(_dir)).Message);
        config = JsonNode.Parse(original)!;
        config["encoder_layers"] = new JsonArray(0, 1, 2);
        File.WriteAllText(configPath, config.ToJsonString());
        Assert.Contains("num_layers = 3, but the weights have num_layers = 2", Assert.Throws<SaeSharpException>(() => CrossCoderFormat.Load(_dir)).Message);
        config = JsonNode.Parse(original)!;
        config["encoder_layers"] = new JsonArray(0, 3);
        File.WriteAllText(configPath, config.ToJsonString());
        Assert.Contains("encoder_layers [0, 3]", Assert.Throws<SaeSharpException>(() => CrossCoderFormat.Load(_dir)).Message);
    }
}
