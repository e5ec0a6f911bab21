using System.Text.Json.Nodes;
using SaeSharp.Interop;
using SaeSharp.IO;
using SaeSharp.Saes;
using SaeSharp.Tests.Tokenizers;
using TorchSharp;
using static TorchSharp.torch;

namespace SaeSharp.Tests.Saes;

/// <summary>
/// The crosscoder against the science-of-finetuning fork's formulas: hand-computed small cases, and
/// tests/data/crosscoder/reference.json (bench/reference/crosscoder_fixture.py, the fork's encode, code normalisations,
/// L1 loss, BatchTopK encode and normaliser transcribed and run in PyTorch 1.13) on the checkpoints that script wrote with
/// torch.save and as save_pretrained's model.safetensors + config.json.
/// </summary>
public class CrossCoderTests
{
    internal static JsonNode Reference => JsonNode.Parse(File.ReadAllText(TestPaths.Data("crosscoder", "reference.json")))!;

    /// <summary>A float32 tensor of any rank from nested JSON lists (a bare number: a scalar).</summary>
    internal static Tensor Json(JsonNode node)
    {
        var shape = new List<long>();
        for (var n = node; n is JsonArray a; n = a[0]!) shape.Add(a.Count);
        var values = new List<float>();
        void Walk(JsonNode n)
        {
            if (n is JsonArray a) foreach (var e in a) Walk(e!);
            else values.Add(n.GetValue<float>());
        }
        Walk(node);
        return tensor(values.ToArray(), shape.ToArray());
    }

    internal static void AssertClose(Tensor expected, Tensor actual, string what, double tol = 1e-5)
    {
        using var scope = NewDisposeScope();
        Assert.True(expected.shape.SequenceEqual(actual.shape), $"{what}: shape [{string.Join(", ", actual.shape)}], expected [{string.Join(", ", expected.shape)}]");
        double scale = Math.Max(1.0, expected.abs().max().item<float>());
        double diff = (expected - actual.to(ScalarType.Float32)).abs().max().item<float>();
        Assert.True(diff <= tol * scale, $"{what}: max |diff| {diff:G3} (scale {scale:G3})");
    }

    internal static CrossCoder FromReference(JsonNode r, CodeNormalization norm, int? k = null)
    {
        var cc = new CrossCoder(new CrossCoderConfig { ActivationDim = 4, DictSize = 6, NumLayers = 3, CodeNormalization = norm, K = k });
        using var _ = no_grad();
        cc.Encoder.Weight.copy_(Json(r["params"]!["encoder.weight"]!));
        cc.Encoder.Bias.copy_(Json(r["params"]!["encoder.bias"]!));
        cc.Decoder.Weight.copy_(Json(r["params"]!["decoder.weight"]!));
        cc.Decoder.Bias.copy_(Json(r["params"]!["decoder.bias"]!));
        return cc;
    }

    [Fact]
    public void HandComputedTwoLayerCase()
    {
        // L 2, d 2, dict 2. W_enc[0] = I, W_enc[1] = 2I, b_enc = (0, -10): f_0 = x_00 + 2·x_10, f_1 = ReLU(x_01 + 2·x_11 − 10).
        // W_dec[0] = [[3, 4], [0, 0]], W_dec[1] = [[0, 1], [1, 0]]: latent 0's CROSSCODER weight is ‖(3,4)‖ + ‖(0,1)‖ = 6,
        // its SAE weight √(9 + 16 + 1) = √26; latent 1's are 0 + 1 = 1 and 1.
        using var cc = new CrossCoder(new CrossCoderConfig { ActivationDim = 2, DictSize = 2, NumLayers = 2 });
        using (no_grad())
        {
            cc.Encoder.Weight.copy_(tensor(new float[] { 1, 0, 0, 1, 2, 0, 0, 2 }, [2, 2, 2]));
            cc.Encoder.Bias.copy_(tensor(new float[] { 0, -10 }));
            cc.Decoder.Weight.copy_(tensor(new float[] { 3, 4, 0, 0, 0, 1, 1, 0 }, [2, 2, 2]));
            cc.Decoder.Bias.copy_(tensor(new float[] { 0.5f, 0, 0, -0.5f }, [2, 2]));
        }
        using var x = tensor(new float[] { 1, 1, 2, 1 }, [1, 2, 2]); // x_0 = (1, 1), x_1 = (2, 1)
        using var f = cc.Encode(x);
        Assert.Equal(new[] { 5f, 0f }, f.data<float>().ToArray()); // 1 + 2·2 = 5; 1 + 2·1 − 10 < 0
        using var xHat = cc.Decode(f);
        // x̂_0 = 5·(3, 4) + (0.5, 0) = (15.5, 20); x̂_1 = 5·(0, 1) + (0, −0.5) = (0, 4.5).
        Assert.Equal(new[] { 15.5f, 20f, 0f, 4.5f }, xHat.data<float>().ToArray());
        using var c = cc.CodeNormalizationWeights();
        Assert.Equal(new[] { 6f, 1f }, c.data<float>().ToArray());
        using var acts = cc.GetActivations(x);
        Assert.Equal(new[] { 30f, 0f }, acts.data<float>().ToArray());
        // Loss: e_0 = (1 − 15.5, 1 − 20) → ‖·‖ = √(14.5² + 19²); e_1 = (2, 1 − 4.5) → √(4 + 12.25).
        using var loss = cc.L1Loss(x, 0.1);
        double n0 = Math.Sqrt(14.5 * 14.5 + 19 * 19), n1 = Math.Sqrt(4 + 12.25);
        Assert.Equal((n0 + n1) / 2, loss.L2Loss.item<float>(), 4);
        Assert.Equal((14.5 * 14.5 + 19 * 19 + 4 + 12.25) / 2, loss.MseLoss.item<float>(), 3);
        Assert.Equal(30.0, loss.SparsityLoss.item<float>(), 4);
        Assert.Equal((n0 + n1) / 2 + 3.0, loss.Loss.item<float>(), 4);
    }

    [Theory]
    [InlineData("CROSSCODER")]
    [InlineData("SAE")]
    [InlineData("MIXED")]
    [InlineData("NONE")]
    [InlineData("DECOUPLED")]
    public void MatchesTheForkForEveryCodeNormalization(string name)
    {
        var r = Reference;
        var expected = r["norms"]![name]!;
        using var cc = FromReference(r, CrossCoder.ParseCodeNormalization(name, "test"));
        using var x = Json(r["x"]!);
        using var c = cc.CodeNormalizationWeights();
        using var cExpected = Json(expected["c"]!);
        AssertClose(cExpected, c, $"{name} c");
        using var f = cc.Encode(x);
        AssertClose(Json(expected["f"]!), f, $"{name} f");
        using var acts = cc.GetActivations(x);
        AssertClose(Json(expected["activations"]!), acts, $"{name} activations");
        using var xHat = cc.forward(x);
        AssertClose(Json(expected["x_hat"]!), xHat, $"{name} x_hat");
        using var loss = cc.L1Loss(x, 0.1);
        Assert.Equal(expected["loss"]!.GetValue<double>(), loss.Loss.item<float>(), 4);
        Assert.Equal(expected["l2_loss"]!.GetValue<double>(), loss.L2Loss.item<float>(), 4);
        Assert.Equal(expected["mse_loss"]!.GetValue<double>(), loss.MseLoss.item<float>(), 3);
        Assert.Equal(expected["sparsity_loss"]!.GetValue<double>(), loss.SparsityLoss.item<float>(), 4);
    }

    [Fact]
    public void BatchTopKEncodesAsTheFork()
    {
        var r = Reference;
        using var cc = FromReference(r, CodeNormalization.Crosscoder, k: 2);
        using (no_grad()) cc.Threshold!.fill_(0.3f);
        using var x = Json(r["x"]!);
        using var fThr = cc.Encode(x);
        AssertClose(Json(r["batchtopk"]!["f_threshold"]!), fThr, "threshold encode");
        var (f, post, scaled) = cc.EncodeBatchTopK(x, 2);
        using (f) using (post) using (scaled)
        {
            AssertClose(Json(r["batchtopk"]!["f_topk"]!), f, "batch top-k encode");
            // Invariant: exactly k·batch = 10 entries kept, and every kept f·c is at least every dropped one.
            Assert.Equal(10, f.gt(0).sum().item<long>());
            using var keptMin = scaled.masked_select(f.gt(0)).min();
            using var droppedMax = scaled.masked_select(f.le(0)).max();
            Assert.True(keptMin.item<float>() >= droppedMax.item<float>());
        }
    }

    [Fact]
    public void LoadsTheForksAePtAndHubFilesAndMatchesItsNumbers()
    {
        var r = Reference;
        using var x = Json(r["x"]!);
        foreach (var folder in new[] { "cc_crosscoder", "cc_hub" })
        {
            using var cc = CrossCoderFormat.Load(TestPaths.Data("crosscoder", folder));
            Assert.Equal((3, 4, 6), (cc.Cfg.NumLayers, cc.Cfg.ActivationDim, cc.Cfg.DictSize));
            Assert.Equal(CodeNormalization.Crosscoder, cc.Cfg.CodeNormalization);
            Assert.Null(cc.Cfg.K);
            using var xHat = cc.forward(x);
            AssertClose(Json(r["norms"]!["CROSSCODER"]!["x_hat"]!), xHat, folder);
        }
        // BatchTopK with the normaliser: x is normalised before encoding and x̂ denormalised.
        using var b = CrossCoderFormat.Load(TestPaths.Data("crosscoder", "cc_batchtopk", "ae.pt"));
        Assert.Equal(2, b.Cfg.K);
        Assert.True(b.HasActivationNormalizer);
        var n = r["normalizer"]!;
        using var xn = b.NormalizeActivations(x);
        AssertClose(Json(n["x_normalized"]!), xn, "normalized x");
        using var f = b.Encode(x);
        AssertClose(Json(n["f"]!), f, "normalized f");
        using var xHatB = b.Decode(f);
        AssertClose(Json(n["x_hat"]!), xHatB, "denormalized x_hat");
    }

    [Fact]
    public void SaveAePtWritesTheForksTrainerOutputAndLoadsBackEqual()
    {
        var dir = Path.Combine(Path.GetTempPath(), "saesharp-ccpt-" + Guid.NewGuid().ToString("N"));
        try
        {
            foreach (var source in new[] { "cc_crosscoder", "cc_batchtopk" })
            {
                string original = TestPaths.Data("crosscoder", source, "ae.pt");
                using var cc = CrossCoderFormat.Load(original);
                var sources = new CrossCoderSources { HookNames = ["blocks.2.hook_resid_post", "blocks.2.hook_resid_post", "blocks.2.hook_resid_post"], ModelNames = ["m"] };
                CrossCoderFormat.SaveAePt(cc, dir, sources);
                string written = Path.Combine(dir, "ae.pt");
                using var back = CrossCoderFormat.Load(written);
                Assert.Equal(cc.Cfg, back.Cfg);

                // Every tensor of the fork's file, bit for bit and with its dtype, under the same key; the root buffers
                // first, as the fork's state_dict() orders them.
                using (var scope = NewDisposeScope())
                {
                    using var a = TorchPickle.Load(original);
                    using var b = TorchPickle.Load(written);
                    Assert.Equal(a.Tensors.Keys.Order(), b.Tensors.Keys.Order());
                    Assert.Equal(a.Tensors.Keys.Where(k => !k.Contains('.')).Concat(a.Tensors.Keys.Where(k => k.Contains('.'))), b.Tensors.Keys);
                    foreach (var (key, t) in a.Tensors)
                    {
                        Assert.Equal(t.dtype, b.Tensors[key].dtype);
                        Assert.Equal(t.shape, b.Tensors[key].shape);
                        Assert.True(t.eq(b.Tensors[key]).all().item<bool>() || (t.isnan().all().item<bool>() && b.Tensors[key].isnan().all().item<bool>()), key);
                    }
                }
                var trainer = JsonNode.Parse(File.ReadAllText(Path.Combine(dir, CrossCoderFormat.ConfigFile)))!["trainer"]!;
                Assert.Equal(cc.Cfg.DictClass, trainer["dict_class"]!.GetValue<string>());
                Assert.Equal(cc.Cfg.K is null ? "CrossCoderTrainer" : "BatchTopKCrossCoderTrainer", trainer["trainer_class"]!.GetValue<string>());
                Assert.Equal("CodeNormalization.CROSSCODER", trainer["code_normalization"]!.GetValue<string>()); // str() of the fork's enum
                Assert.Equal(2, trainer["layer"]!.GetValue<int>());
                Assert.Equal("m", trainer["lm_name"]!.GetValue<string>());
            }
            // Settings that live in config.json only (alphas, target_rms) come back from it.
            using var mixed = new CrossCoder(new CrossCoderConfig
            {
                ActivationDim = 4, DictSize = 6, NumLayers = 2, CodeNormalization = CodeNormalization.Mixed,
                CodeNormalizationAlphaSae = 0.7, CodeNormalizationAlphaCc = 0.2, TargetRms = 3.0, K = 2,
            });
            CrossCoderFormat.SaveAePt(mixed, dir);
            using var mixedBack = CrossCoderFormat.Load(dir);
            Assert.Equal(mixed.Cfg, mixedBack.Cfg);
        }
        finally
        {
            Directory.Delete(dir, true);
        }
    }

    [Fact]
    public void SaveThenLoadRoundTripsKeysShapesDtypesAndValues()
    {
        var dir = Path.Combine(Path.GetTempPath(), "saesharp-cc-" + Guid.NewGuid().ToString("N"));
        try
        {
            foreach (var source in new[] { "cc_crosscoder/ae.pt", "cc_batchtopk/ae.pt", "cc_hub" })
            {
                using var cc = CrossCoderFormat.Load(TestPaths.Data(["crosscoder", .. source.Split('/')]));
                var sources = new CrossCoderSources { HookNames = ["blocks.0.hook_resid_post", "blocks.1.hook_resid_post", "blocks.2.hook_resid_post"] };
                CrossCoderFormat.Save(cc, dir, sources);
                using var back = CrossCoderFormat.Load(dir, out var readSources);
                Assert.Equal(sources.HookNames, readSources.HookNames);
                var a = cc.state_dict();
                var bsd = back.state_dict();
                Assert.Equal(a.Keys.Order(), bsd.Keys.Order());
                foreach (var (key, t) in a)
                {
                    Assert.Equal(t.dtype, bsd[key].dtype);
                    Assert.Equal(t.shape, bsd[key].shape);
                    Assert.True(t.eq(bsd[key]).all().item<bool>() || (t.isnan().all().item<bool>() && bsd[key].isnan().all().item<bool>()), key);
                }
                // The file holds exactly the fork's keys, with its dtypes: code_normalization_id int64, k int32.
                using var st = SafeTensorsFile.Open(Path.Combine(dir, CrossCoderFormat.WeightsFile));
                Assert.Equal("I64", st.Tensors["code_normalization_id"].Dtype);
                if (cc.Cfg.K is not null) Assert.Equal("I32", st.Tensors["k"].Dtype);
                var cfg = JsonNode.Parse(File.ReadAllText(Path.Combine(dir, CrossCoderFormat.ConfigFile)))!;
                Assert.Equal(cc.Cfg.DictClass, cfg["dict_class"]!.GetValue<string>());
                Assert.Equal("CROSSCODER", cfg["code_normalization"]!.GetValue<string>());
            }
        }
        finally
        {
            Directory.Delete(dir, true);
        }
    }

    [Fact]
    public void RefusesBadInputByName()
    {
        using var cc = new CrossCoder(new CrossCoderConfig { ActivationDim = 4, DictSize = 6, NumLayers = 3 });
        using var wrongLayers = zeros(5, 2, 4);
        Assert.Contains("num_layers = 3", Assert.Throws<SaeSharpException>(() => cc.Encode(wrongLayers)).Message);
        using var flat = zeros(5, 12);
        Assert.Contains("expected [batch, num_layers", Assert.Throws<SaeSharpException>(() => cc.Encode(flat)).Message);
        using var wrongLatents = zeros(5, 7);
        Assert.Contains("dict_size = 6", Assert.Throws<SaeSharpException>(() => cc.Decode(wrongLatents)).Message);
        Assert.Contains("unknown code_normalization 'L2'", Assert.Throws<SaeSharpException>(() => CrossCoder.ParseCodeNormalization("L2", "config.json")).Message);
        using (var decoupled = new CrossCoder(new CrossCoderConfig
        { ActivationDim = 4, DictSize = 6, NumLayers = 3, K = 2, CodeNormalization = CodeNormalization.Decoupled, NormalizerBuffers = true }))
        using (var m = zeros(3, 4))
        using (var sd = ones(3, 4))
            Assert.Contains("DECOUPLED with an activation normaliser", Assert.Throws<SaeSharpException>(() => decoupled.SetActivationNormalizer(m, sd)).Message);

        var dir = Path.Combine(Path.GetTempPath(), "saesharp-cc-bad-" + Guid.NewGuid().ToString("N"));
        Directory.CreateDirectory(dir);
        try
        {
            File.Copy(TestPaths.Data("crosscoder", "cc_hub", "model.safetensors"), Path.Combine(dir, "model.safetensors"));
            File.WriteAllText(Path.Combine(dir, "config.json"), """{"activation_dim": 4, "dict_size": 6, "num_layers": 2, "code_normalization": "CROSSCODER"}""");
            Assert.Contains("num_layers = 2, but the weights have num_layers = 3", Assert.Throws<SaeSharpException>(() => CrossCoderFormat.Load(dir)).Message);
            File.WriteAllText(Path.Combine(dir, "config.json"), """{"activation_dim": 4, "dict_size": 6, "num_layers": 3, "code_normalization": "BOGUS"}""");
            Assert.Contains("unknown code_normalization 'BOGUS'", Assert.Throws<SaeSharpException>(() => CrossCoderFormat.Load(dir)).Message);
            // An unknown code_normalization_id in the weights.
            var sd = SafeTensors.Load(Path.Combine(dir, "model.safetensors"));
            sd["code_normalization_id"] = tensor(9L);
            File.Delete(Path.Combine(dir, "config.json"));
            SafeTensors.Save(Path.Combine(dir, "model.safetensors"), sd);
            Assert.Contains("unknown code_normalization_id 9", Assert.Throws<SaeSharpException>(() => CrossCoderFormat.Load(dir)).Message);
            // A decoder of the wrong shape.
            sd["code_normalization_id"] = tensor(1L);
            sd["decoder.weight"] = zeros(3, 5, 4);
            SafeTensors.Save(Path.Combine(dir, "model.safetensors"), sd);
            Assert.Contains("'decoder.weight' has shape [3, 5, 4], expected [3, 6, 4]", Assert.Throws<SaeSharpException>(() => CrossCoderFormat.Load(dir)).Message);
        }
        finally
        {
            Directory.Delete(dir, true);
        }
    }

    [Fact]
    public void InitializationIsTheForks()
    {
        using var cc = new CrossCoder(new CrossCoderConfig { ActivationDim = 8, DictSize = 16, NumLayers = 2, K = 4 });
        using var g = new Generator(3);
        cc.InitializeWeights(g, normInitScale: 1.0);
        using var scope = NewDisposeScope();
        // norm_init_scale 1: every W_enc[l, :, i] has norm 1; W_dec[l] = W_enc[l]ᵀ; biases 0.
        AssertClose(ones(2, 16), TorchScalars.VectorNorm(cc.Encoder.Weight, 2, [1]), "encoder column norms");
        Assert.True(cc.Decoder.Weight.eq(cc.Encoder.Weight.permute(0, 2, 1)).all().item<bool>());
        Assert.Equal(0, cc.Encoder.Bias.abs().sum().item<float>());
        // Without rescaling: kaiming_uniform bound √6/√(d·dict_size) = √6/√128.
        using var plain = new CrossCoder(new CrossCoderConfig { ActivationDim = 8, DictSize = 16, NumLayers = 2 });
        plain.InitializeWeights(g, normInitScale: null);
        double bound = Math.Sqrt(6.0 / 128);
        Assert.True(plain.Encoder.Weight.abs().max().item<float>() <= bound);
        Assert.True(plain.Encoder.Weight.abs().max().item<float>() > 0.8 * bound);
    }

    [Fact]
    public void ForwardLeavesNoTensors()
    {
        var r = Reference;
        using var cc = FromReference(r, CodeNormalization.Crosscoder);
        using var x = Json(r["x"]!);
        Assert.Equal(0, LiveTensors.Leaked(() =>
        {
            using var y = cc.forward(x);
            using var loss = cc.L1Loss(x, 0.1);
        }));
    }
}
