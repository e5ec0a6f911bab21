using System.Text.Json.Nodes;
using SaeSharp.Interop;
using SaeSharp.IO;
using SaeSharp.Saes;
using TorchSharp;
using static TorchSharp.torch;

namespace SaeSharp.Tests.Interop;

public sealed class DictionaryLearningTests : IDisposable
{
    static readonly string Fixtures = Path.Combine(SaeSharp.Tests.Tokenizers.TestPaths.Data(), "dictionary_learning");
    readonly string _dir = Directory.CreateTempSubdirectory("saesharp-dl-").FullName;

    public void Dispose() => Directory.Delete(_dir, recursive: true);


    static Dictionary<string, Tensor> Reference(string arch) =>
        SafeTensors.Load(Path.Combine(Fixtures, arch, "reference.safetensors"));

    static void AssertClose(Tensor expected, Tensor actual, double tol = 1e-5)
    {
        Assert.Equal(expected.shape, actual.shape);
        double maxDiff = (expected - actual).abs().max().ToDouble();
        Assert.True(maxDiff <= tol, $"max |difference| {maxDiff} exceeds {tol}");
    }

    /// <summary><paramref name="sae"/>'s features and reconstruction of the reference input of <paramref name="dictClass"/> are
    /// dictionary_learning's own (its reference.safetensors).</summary>
    static void AssertReproducesReference(Sae sae, string dictClass)
    {
        var reference = Reference(dictClass);
        using var _ = torch.no_grad();
        var (xHat, f) = sae.Run(reference["x"]);
        AssertClose(reference["f"], f);
        AssertClose(reference["x_hat"], xHat);
    }

    /// <summary>dictionary_learning's formulas written out with the SAELens names of the converted weights.</summary>
    static Tensor EncodeByFormula(string architecture, SaeConfig cfg, IReadOnlyDictionary<string, Tensor> w, Tensor x)
    {
        var xIn = cfg.ApplyBDecToInput ? x - w["b_dec"] : x;
        switch (architecture)
        {
            case SaeArchitectures.Standard:
                return nn.functional.relu(xIn.matmul(w["W_enc"]) + w["b_enc"]);
            case SaeArchitectures.Gated:
                {
                    var xe = xIn.matmul(w["W_enc"]);
                    var gate = (xe + w["b_gate"]).gt(0).to_type(ScalarType.Float32);
                    return gate * nn.functional.relu(w["r_mag"].exp() * xe + w["b_mag"]);
                }
            case SaeArchitectures.JumpReLU:
            case SaeArchitectures.BatchTopK:
                {
                    var pre = xIn.matmul(w["W_enc"]) + w["b_enc"];
                    return nn.functional.relu(pre) * pre.gt(w["threshold"]).to_type(ScalarType.Float32);
                }
            case SaeArchitectures.TopK:
                {
                    var post = nn.functional.relu(xIn.matmul(w["W_enc"]) + w["b_enc"]);
                    var (values, indices) = post.topk(cfg.K!.Value, dim: -1);
                    return torch.zeros_like(post).scatter(-1, indices, values);
                }
            default:
                throw new InvalidOperationException(architecture);
        }
    }

    [Theory]
    [InlineData("AutoEncoder", SaeArchitectures.Standard, true)]
    [InlineData("GatedAutoEncoder", SaeArchitectures.Gated, true)]
    [InlineData("JumpReluAutoEncoder", SaeArchitectures.JumpReLU, false)]
    [InlineData("AutoEncoderTopK", SaeArchitectures.TopK, true)]
    [InlineData("BatchTopKSAE", SaeArchitectures.BatchTopK, true)]
    public void Converted_weights_reproduce_the_reference_features_and_reconstruction(string dictClass, string architecture, bool applyBDec)
    {
        using var scope = torch.NewDisposeScope();
        using var ckpt = DictionaryLearning.ReadCheckpoint(Path.Combine(Fixtures, dictClass));
        Assert.Equal(dictClass, ckpt.DictClass);
        Assert.Equal(architecture, ckpt.Cfg.Architecture);
        Assert.Equal(applyBDec, ckpt.Cfg.ApplyBDecToInput);
        Assert.Equal(32, ckpt.Cfg.DIn);
        Assert.Equal(128, ckpt.Cfg.DSae);
        Assert.Equal(new long[] { 32, 128 }, ckpt.Weights["W_enc"].shape);
        Assert.Equal(new long[] { 128, 32 }, ckpt.Weights["W_dec"].shape);

        var reference = Reference(dictClass);
        var f = EncodeByFormula(architecture, ckpt.Cfg, ckpt.Weights, reference["x"]);
        AssertClose(reference["f"], f);
        AssertClose(reference["x_hat"], f.matmul(ckpt.Weights["W_dec"]) + ckpt.Weights["b_dec"]);
    }

    [Fact]
    public void TopK_takes_k_from_the_checkpoint_buffer()
    {
        using var ckpt = DictionaryLearning.ReadCheckpoint(Path.Combine(Fixtures, "AutoEncoderTopK", "ae.pt"));
        Assert.Equal(8, ckpt.Cfg.K);
        Assert.DoesNotContain("threshold", ckpt.Weights.Keys);
    }

    [Fact]
    public void BatchTopK_keeps_k_and_its_scalar_threshold_becomes_a_per_latent_threshold()
    {
        using var ckpt = DictionaryLearning.ReadCheckpoint(Path.Combine(Fixtures, "BatchTopKSAE"));
        Assert.Equal(8, ckpt.Cfg.K);
        var threshold = ckpt.Weights["threshold"];
        Assert.Equal(new long[] { 128 }, threshold.shape);
        Assert.Equal(0.15f, threshold.min().ToSingle());
        Assert.Equal(0.15f, threshold.max().ToSingle());
    }

    [Theory]
    [InlineData("AutoEncoder", typeof(StandardSae))]
    [InlineData("GatedAutoEncoder", typeof(GatedSae))]
    [InlineData("JumpReluAutoEncoder", typeof(JumpReluSae))]
    [InlineData("AutoEncoderTopK", typeof(TopKSae))]
    [InlineData("BatchTopKSAE", typeof(BatchTopKSae))]
    public void Loaded_sae_reproduces_the_reference_features_and_reconstruction(string dictClass, Type saeType)
    {
        using var scope = torch.NewDisposeScope();
        using var sae = DictionaryLearning.Load(Path.Combine(Fixtures, dictClass, "ae.pt"));
        Assert.IsType(saeType, sae);
        AssertReproducesReference(sae, dictClass);
    }

    [Fact]
    public void Config_metadata_names_the_model_and_the_TransformerLens_hook()
    {
        using var ckpt = DictionaryLearning.ReadCheckpoint(Path.Combine(Fixtures, "AutoEncoder"));
        Assert.Equal("EleutherAI/pythia-70m-deduped", ckpt.Cfg.Metadata.ModelName);
        Assert.Equal("blocks.3.hook_mlp_out", ckpt.Cfg.Metadata.HookName);
        Assert.Equal(128, ckpt.Cfg.Metadata.ContextSize);
    }

    [Theory]
    [InlineData("resid_post_layer_3", "out", "blocks.3.hook_resid_post")]
    [InlineData("attn_out_layer11", null, "blocks.11.hook_attn_out")]
    [InlineData("mlp_out_layer3", "in", null)]
    [InlineData("embed", "out", null)]
    public void Submodule_names_map_to_hook_names(string submodule, string? io, string? expected) =>
        Assert.Equal(expected, DictionaryLearning.HookName(submodule, io));

    [Fact]
    public void Folder_or_ae_pt_is_detected_with_or_without_config()
    {
        Assert.True(DictionaryLearning.IsDictionaryLearningPath(Path.Combine(Fixtures, "AutoEncoder")));
        Assert.True(DictionaryLearning.IsDictionaryLearningPath(Path.Combine(Fixtures, "AutoEncoder", "ae.pt")));
        Assert.False(DictionaryLearning.IsDictionaryLearningPath(_dir));
        File.Copy(Path.Combine(Fixtures, "AutoEncoder", "ae.pt"), Path.Combine(_dir, "ae.pt"));
        Assert.True(DictionaryLearning.IsDictionaryLearningPath(_dir));
        File.Copy(Path.Combine(Fixtures, "AutoEncoder", "ae.pt"), Path.Combine(_dir, "other.pt"));
        Assert.False(DictionaryLearning.IsDictionaryLearningPath(Path.Combine(_dir, "other.pt")));
    }

    [Fact]
    public void Step_checkpoint_reads_the_runs_config_one_folder_up()
    {
        // trainSAE(save_steps=[100]) writes trainer_0/checkpoints/ae_100.pt beside trainer_0/config.json: read alone, a
        // BatchTopKSAE state_dict would pass for AutoEncoderTopK (same keys) and lose its hook; with the run's config
        // it is the BatchTopKSAE the run trained, with its threshold and hook.
        string run = Path.Combine(_dir, "trainer_0");
        Directory.CreateDirectory(Path.Combine(run, "checkpoints"));
        File.Copy(Path.Combine(Fixtures, "BatchTopKSAE", "config.json"), Path.Combine(run, "config.json"));
        string step = Path.Combine(run, "checkpoints", "ae_100.pt");
        File.Copy(Path.Combine(Fixtures, "BatchTopKSAE", "ae.pt"), step);
        Assert.True(DictionaryLearning.IsDictionaryLearningPath(step));
        using var sae = SaeLoader.Load(step);
        Assert.IsType<BatchTopKSae>(sae);
        Assert.Equal("blocks.3.hook_mlp_out", sae.Cfg.Metadata.HookName);
        using (var scope = torch.NewDisposeScope()) AssertReproducesReference(sae, "BatchTopKSAE");
        // Only checkpoints/ae_{digits}.pt is a step checkpoint.
        foreach (var name in new[] { "ae_.pt", "ae_1x.pt", "ae_100.pth" })
        {
            File.Copy(step, Path.Combine(run, "checkpoints", name));
            Assert.False(DictionaryLearning.IsDictionaryLearningPath(Path.Combine(run, "checkpoints", name)));
        }
        File.Copy(step, Path.Combine(run, "ae_100.pt"));
        Assert.False(DictionaryLearning.IsDictionaryLearningPath(Path.Combine(run, "ae_100.pt")));
        Assert.Equal("a/config.json", DictionaryLearning.ConfigPathOf("a/checkpoints/ae_7.pt"));
        Assert.Equal("config.json", DictionaryLearning.ConfigPathOf("checkpoints/ae_7.pt"));
        Assert.Equal("a/checkpoints/config.json", DictionaryLearning.ConfigPathOf("a/checkpoints/ae.pt"));
    }

    /// <summary>A published zip's folder (<c>10_32768/ae.pt</c>, no config.json) holding the fixture's state_dict.</summary>
    string Bare(string dictClass)
    {
        string folder = Path.Combine(_dir, dictClass, "10_32768");
        Directory.CreateDirectory(folder);
        File.Copy(Path.Combine(Fixtures, dictClass, "ae.pt"), Path.Combine(folder, "ae.pt"));
        return folder;
    }

    [Theory]
    [InlineData("AutoEncoder", null, typeof(StandardSae))]
    [InlineData("GatedAutoEncoder", null, typeof(GatedSae))]
    [InlineData("JumpReluAutoEncoder", null, typeof(JumpReluSae))]
    [InlineData("AutoEncoderTopK", null, typeof(TopKSae))]
    [InlineData("BatchTopKSAE", "batchtopk", typeof(BatchTopKSae))]
    [InlineData("AutoEncoderTopK", "topk", typeof(TopKSae))]
    public void Bare_ae_pt_loads_with_sizes_from_the_tensors_and_class_from_the_keys_or_arch(string dictClass, string? arch, Type saeType)
    {
        using var scope = torch.NewDisposeScope();
        string folder = Bare(dictClass);
        using var sae = SaeLoader.Load(folder, new SaeLoadOptions { Architecture = arch });
        Assert.IsType(saeType, sae);
        Assert.Equal((32, 128), (sae.Cfg.DIn, sae.Cfg.DSae));
        Assert.Null(sae.Cfg.Metadata.HookName);
        AssertReproducesReference(sae, dictClass);
    }

    [Fact]
    public void Bare_BatchTopK_state_dict_reads_as_TopK_unless_named()
    {
        // AutoEncoderTopK and BatchTopKSAE save the same keys (k, threshold, encoder.*, decoder.weight, b_dec).
        using var ckpt = DictionaryLearning.ReadCheckpoint(Bare("BatchTopKSAE"));
        Assert.Equal("AutoEncoderTopK", ckpt.DictClass);
        Assert.Equal(SaeArchitectures.TopK, ckpt.Cfg.Architecture);
        var e = Assert.Throws<SaeSharpException>(() => DictionaryLearning.ReadCheckpoint(Path.Combine(_dir, "BatchTopKSAE", "10_32768"), "crosscoder"));
        Assert.Contains("--arch crosscoder", e.Message);
        var wrong = Assert.Throws<SaeSharpException>(() => DictionaryLearning.ReadCheckpoint(Path.Combine(_dir, "BatchTopKSAE", "10_32768"), "gated"));
        Assert.Contains("GatedAutoEncoder checkpoint has no", wrong.Message);
    }

    [Theory]
    [InlineData(new[] { "encoder.weight", "encoder.bias", "decoder.weight", "bias" }, "AutoEncoder")]
    [InlineData(new[] { "encoder.weight", "encoder.bias", "decoder.weight", "decoder.bias" }, "AutoEncoderNew")]
    [InlineData(new[] { "encoder.weight", "decoder.weight", "decoder_bias", "r_mag", "gate_bias", "mag_bias" }, "GatedAutoEncoder")]
    [InlineData(new[] { "W_enc", "b_enc", "W_dec", "b_dec", "threshold" }, "JumpReluAutoEncoder")]
    [InlineData(new[] { "encoder.weight", "encoder.bias", "decoder.weight", "b_dec", "k", "threshold" }, "AutoEncoderTopK")]
    [InlineData(new[] { "W_enc", "b_enc", "W_dec", "b_dec", "k", "threshold", "group_sizes" }, "MatryoshkaBatchTopKSAE")]
    [InlineData(new[] { "W", "b" }, null)]
    public void Class_is_inferred_from_the_state_dict_keys(string[] keys, string? expected) =>
        Assert.Equal(expected, DictionaryLearning.InferClass(keys));

    [Fact]
    public void Bare_matryoshka_ae_pt_loads_with_widths_from_group_sizes_and_encodes_like_dictionary_learning()
    {
        using var scope = torch.NewDisposeScope();
        var g = new Generator(7);
        var wEnc = randn(6, 10, generator: g);
        var bEnc = randn(10, generator: g) * 0.1;
        var wDec = randn(10, 6, generator: g);
        var bDec = randn(6, generator: g) * 0.1;
        string path = Path.Combine(_dir, "mat", "ae.pt");
        OpenAiSaeTests.WriteCheckpoint(path, new Dictionary<string, Tensor>
        {
            ["W_enc"] = wEnc, ["b_enc"] = bEnc, ["W_dec"] = wDec, ["b_dec"] = bDec,
            ["k"] = tensor(3L), ["threshold"] = tensor(0.2f), ["group_sizes"] = tensor(new long[] { 2, 3, 5 }),
        }, activation: null, postact: null);
        using var sae = SaeLoader.Load(path);
        Assert.IsType<MatryoshkaBatchTopKSae>(sae);
        Assert.Equal(new[] { 2, 5, 10 }, sae.Cfg.MatryoshkaWidths);
        Assert.Equal(3, sae.Cfg.K);

        // dictionary_learning's MatryoshkaBatchTopKSAE.encode(use_threshold=True), decode, elementwise in double.
        var x = randn(5, 6, generator: g);
        var xd = x.to_type(ScalarType.Float64);
        var pre = nn.functional.relu((xd - bDec.to_type(ScalarType.Float64)).matmul(wEnc.to_type(ScalarType.Float64)) + bEnc.to_type(ScalarType.Float64));
        var f = pre * pre.gt(0.2).to_type(ScalarType.Float64);
        var y = f.matmul(wDec.to_type(ScalarType.Float64)) + bDec.to_type(ScalarType.Float64);
        using var _ = torch.no_grad();
        var (xHat, feats) = sae.Run(x);
        AssertClose(f.to_type(ScalarType.Float32), feats);
        AssertClose(y.to_type(ScalarType.Float32), xHat, 1e-4);
    }

    [Fact]
    public void Bare_AutoEncoderNew_ae_pt_keeps_the_decoder_bias_out_of_the_encoder()
    {
        using var scope = torch.NewDisposeScope();
        var g = new Generator(3);
        var encW = randn(12, 4, generator: g);
        var encB = randn(12, generator: g) * 0.1;
        var decW = randn(4, 12, generator: g);
        var decB = randn(4, generator: g);
        string folder = Path.Combine(_dir, "new");
        OpenAiSaeTests.WriteCheckpoint(Path.Combine(folder, "ae.pt"), new Dictionary<string, Tensor>
        {
            ["encoder.weight"] = encW, ["encoder.bias"] = encB, ["decoder.weight"] = decW, ["decoder.bias"] = decB,
        }, activation: null, postact: null);
        using var sae = SaeLoader.Load(folder);
        Assert.IsType<StandardSae>(sae);
        Assert.False(sae.Cfg.ApplyBDecToInput);
        // AutoEncoderNew: f = ReLU(encoder(x)), x̂ = decoder(f) (nn.Linear: y = x·Wᵀ + b).
        var x = randn(7, 4, generator: g);
        var f = nn.functional.relu(x.matmul(encW.t()) + encB);
        using var _ = torch.no_grad();
        var (xHat, feats) = sae.Run(x);
        AssertClose(f, feats);
        AssertClose(f.matmul(decW.t()) + decB, xHat, 1e-4);
    }

    string CopyWithConfig(string arch, Action<JsonObject> edit)
    {
        File.Copy(Path.Combine(Fixtures, arch, "ae.pt"), Path.Combine(_dir, "ae.pt"), overwrite: true);
        var config = JsonNode.Parse(File.ReadAllText(Path.Combine(Fixtures, arch, "config.json")))!.AsObject();
        edit(config["trainer"]!.AsObject());
        File.WriteAllText(Path.Combine(_dir, "config.json"), config.ToJsonString());
        return _dir;
    }

    [Fact]
    public void Dict_size_disagreeing_with_the_weights_is_reported_with_both_shapes()
    {
        var dir = CopyWithConfig("AutoEncoder", t => t["dict_size"] = 64);
        var e = Assert.Throws<SaeSharpException>(() => DictionaryLearning.ReadCheckpoint(dir));
        Assert.Contains("'encoder.weight' has shape [128, 32], expected [64, 32]", e.Message);
    }

    [Fact]
    public void Unknown_dict_class_is_refused_by_name()
    {
        var dir = CopyWithConfig("AutoEncoder", t => t["dict_class"] = "CrossCoder");
        var e = Assert.Throws<SaeSharpException>(() => DictionaryLearning.ReadCheckpoint(dir));
        Assert.Contains("'CrossCoder'", e.Message);
    }

    [Fact]
    public void Class_that_does_not_match_the_state_dict_is_refused()
    {
        var dir = CopyWithConfig("AutoEncoder", t => t["dict_class"] = "GatedAutoEncoder");
        var e = Assert.Throws<SaeSharpException>(() => DictionaryLearning.ReadCheckpoint(dir));
        Assert.Contains("GatedAutoEncoder checkpoint has no", e.Message);
    }

    /// <summary><c>--arch</c> names the class of an ae.pt without config.json; against a config.json that names another
    /// class it is an error naming both (a BatchTopK read as TopK loses its threshold), and the same class is accepted.</summary>
    [Fact]
    public void Arch_disagreeing_with_config_dict_class_is_refused()
    {
        var dir = Path.Combine(Fixtures, "BatchTopKSAE");
        var e = Assert.Throws<SaeSharpException>(() => DictionaryLearning.ReadCheckpoint(dir, "topk"));
        Assert.Contains("--arch topk names AutoEncoderTopK", e.Message);
        Assert.Contains("trainer.dict_class is BatchTopKSAE", e.Message);
        using var same = DictionaryLearning.ReadCheckpoint(dir, "batchtopk");
        Assert.Equal("BatchTopKSAE", same.DictClass);
    }

    [Fact]
    public void TopK_k_disagreeing_with_the_config_is_refused()
    {
        var dir = CopyWithConfig("AutoEncoderTopK", t => t["k"] = 16);
        var e = Assert.Throws<SaeSharpException>(() => DictionaryLearning.ReadCheckpoint(dir));
        Assert.Contains("k = 8 disagrees with trainer.k = 16", e.Message);
    }
}
