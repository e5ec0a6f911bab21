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
        var reference = Reference(dictClass);
        using var _ = torch.no_grad();
        var (xHat, f) = sae.Run(reference["x"]);
        AssertClose(reference["f"], f);
        AssertClose(reference["x_hat"], xHat);
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
    public void Folder_detection_needs_both_files()
    {
        Assert.True(DictionaryLearning.IsDictionaryLearningPath(Path.Combine(Fixtures, "AutoEncoder")));
        Assert.True(DictionaryLearning.IsDictionaryLearningPath(Path.Combine(Fixtures, "AutoEncoder", "ae.pt")));
        File.Copy(Path.Combine(Fixtures, "AutoEncoder", "ae.pt"), Path.Combine(_dir, "ae.pt"));
        Assert.False(DictionaryLearning.IsDictionaryLearningPath(_dir));
        var e = Assert.Throws<SaeSharpException>(() => DictionaryLearning.ReadCheckpoint(_dir));
        Assert.Contains("config.json", e.Message);
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

    [Fact]
    public void TopK_k_disagreeing_with_the_config_is_refused()
    {
        var dir = CopyWithConfig("AutoEncoderTopK", t => t["k"] = 16);
        var e = Assert.Throws<SaeSharpException>(() => DictionaryLearning.ReadCheckpoint(dir));
        Assert.Contains("k = 8 disagrees with trainer.k = 16", e.Message);
    }
}
