using System.Text.Json.Nodes;
using SaeSharp.Interop;
using SaeSharp.IO;
using SaeSharp.Saes;
using static TorchSharp.torch;

namespace SaeSharp.Tests.Interop;

/// <summary>SAELens folders as SAELens writes them, checked against numbers computed in Python (torch 1.13) with
/// SAELens's own formulas: <c>read_sae_components_from_disk</c>'s <c>scaling_factor</c>, <c>handle_pre_6_0_config</c>'s
/// renames and <c>constant_norm_rescale</c>.</summary>
public sealed class SaeLensPythonParityTests : IDisposable
{
    private readonly string _dir = Directory.CreateTempSubdirectory("saelens-py-").FullName;
    public void Dispose() => Directory.Delete(_dir, true);

    // d_in 4, d_sae 6, three rows (torch.manual_seed(42), rounded to two decimals).
    private static readonly float[] WEnc = [1.15999997f, 0.889999986f, 0.540000021f, -1.25999999f, 0.409999996f, -0.74000001f, -0.0299999993f, -0.959999979f, 0.209999993f, -0.409999996f, -0.300000012f, 0.140000001f, -0.670000017f, 0.0500000007f, -1.38999999f, -0.129999995f, -0.189999998f, -0.239999995f, 0.479999989f, -0.370000005f, -0.360000014f, -0.0399999991f, -0.5f, 0.200000003f];
    private static readonly float[] BEnc = [0.810000002f, 0.409999996f, -0.200000003f, 0.479999989f, 0.170000002f, 0.0299999993f];
    private static readonly float[] WDec = [-0.289999992f, 0.709999979f, -0.49000001f, -0.439999998f, -0.5f, -0.550000012f, 1.09000003f, 0.100000001f, 0.119999997f, -0.689999998f, 0.200000003f, 1.01999998f, 0.00999999978f, -0.200000003f, -0.800000012f, -0.349999994f, -0.340000004f, 0.629999995f, -0.879999995f, 0.860000014f, 0.449999988f, -0.289999992f, -0.629999995f, 0.360000014f];
    private static readonly float[] BDec = [-0.209999993f, 0.180000007f, -0.409999996f, -0.680000007f];
    private static readonly float[] X = [-0.569999993f, -2.19000006f, 2.26999998f, 1.51999998f, -7.19000006f, 0.0399999991f, 0.209999993f, 1.91999996f, -1.13f, -1.13999999f, 3.20000005f, 0.219999999f];
    private static readonly float[] Scale = [0.660000026f, 0.709999979f, 0.829999983f, 0.610000014f, 1.41999996f, 0.899999976f];

    /// <summary>f = ReLU((x − b_dec)·W_enc + b_enc), x̂ = f·W_dec + b_dec.</summary>
    private static readonly float[] FPlain = [0f, 1.68479991f, 0f, 1.46889997f, 0f, 0f, 0f, 0f, 0f, 9.14759922f, 0f, 5.54680061f, 0f, 0.705899954f, 0f, 1.67509985f, 0f, 0f];
    private static readonly float[] YPlain = [-1.03771091f, -1.04042006f, 0.251311988f, -1.025635f, 2.37753606f, -3.25809193f, -11.2225637f, -1.8848114f, -0.546198964f, -0.543264925f, -0.980648875f, -1.19569492f];
    /// <summary>SAELens before 6.0 with finetuning_scaling_factor: x̂ = (f·s)·W_dec + b_dec.</summary>
    private static readonly float[] YFinetune = [-0.799143612f, -0.657120109f, 0.177043408f, -0.873989344f, 2.0922544f, -2.38372207f, -8.0190649f, -0.835849106f, -0.450376332f, -0.300016105f, -0.681152821f, -0.987514913f];
    /// <summary>constant_norm_rescale: c = √d_in/‖x‖, f = ReLU((c·x − b_dec)·W_enc + b_enc), x̂ = (f·W_dec + b_dec)/c.</summary>
    private static readonly float[] FCnr = [0.328839391f, 1.18481338f, 0f, 0.919185102f, 0f, 0f, 0f, 0f, 0f, 2.61001229f, 0f, 1.40742719f, 0f, 0.631887317f, 0f, 1.02637219f, 0f, 0f];
    private static readonly float[] YCnr = [-1.57608712f, -0.748523831f, -0.0266639423f, -1.82324493f, 1.67305207f, -2.79246163f, -12.5995255f, -4.04573298f, -0.924812019f, -0.668595791f, -0.972624779f, -1.75041699f];

    /// <summary>TopK (k 2) with rescale_acts_by_decoder_norm: f = TopK(pre·‖W_dec‖), x̂ = (f/‖W_dec‖)·W_dec + b_dec.</summary>
    private static readonly float[] FRescale = [0f, 2.22916293f, 0f, 1.31595731f, 0f, 0f, 0f, 0f, 0f, 8.19514656f, 0f, 5.00166416f, 0f, 0.933977962f, 0f, 1.50068748f, 0f, 0f];
    private static readonly float[] YRescale = [-1.03771091f, -1.04042006f, 0.251311988f, -1.025635f, 2.37753606f, -3.25809193f, -11.2225637f, -1.8848114f, -0.546198964f, -0.543264925f, -0.980648875f, -1.19569492f];

    private void WriteWeights(float[]? scalingFactor = null)
    {
        var w = new Dictionary<string, Tensor>
        {
            ["W_enc"] = tensor(WEnc, [4, 6]), ["b_enc"] = tensor(BEnc), ["W_dec"] = tensor(WDec, [6, 4]), ["b_dec"] = tensor(BDec),
        };
        if (scalingFactor is not null) w["scaling_factor"] = tensor(scalingFactor);
        SafeTensors.Save(Path.Combine(_dir, "sae_weights.safetensors"), w);
        foreach (var t in w.Values) t.Dispose();
    }

    private static void AssertClose(float[] expected, Tensor actual)
    {
        var got = actual.detach().reshape(-1).data<float>().ToArray();
        Assert.Equal(expected.Length, got.Length);
        for (int i = 0; i < got.Length; i++) Assert.Equal(expected[i], got[i], 4);
    }

    private const string Pre6Cfg = """
        {"d_in": 4, "d_sae": 6, "dtype": "torch.float32", "device": "cpu", "model_name": "gpt2-small",
         "hook_point": "blocks.2.attn.hook_z", "hook_point_layer": 2, "hook_point_head_index": 3, "activation_fn_str": "relu",
         "apply_b_dec_to_input": true, "context_size": 128, "prepend_bos": true, "normalize_activations": false%FT%}
        """;

    [Fact]
    public void Pre6ScalingFactorOfOnesIsDroppedAndHeadIndexIsRenamed()
    {
        File.WriteAllText(Path.Combine(_dir, "cfg.json"), Pre6Cfg.Replace("%FT%", ""));
        WriteWeights([1, 1, 1, 1, 1, 1]);
        using var sae = SaeLoader.Load(_dir);
        // handle_pre_6_0_config: hook_point_head_index → hook_head_index; a hook_z hook reshapes.
        Assert.Equal((3, "hook_z"), (sae.Cfg.Metadata.HookHeadIndex, sae.Cfg.ReshapeActivations));
        Assert.DoesNotContain("scaling_factor", sae.state_dict().Keys);
        using var x = tensor(X, [3, 4]);
        var (y, f) = sae.Run(x);
        AssertClose(FPlain, f);
        AssertClose(YPlain, y);
    }

    [Fact]
    public void Pre6FinetuningScalingFactorIsFoldedIntoTheDecoderAndRoundTrips()
    {
        File.WriteAllText(Path.Combine(_dir, "cfg.json"), Pre6Cfg.Replace("%FT%", ", \"finetuning_scaling_factor\": true"));
        WriteWeights(Scale);
        using var sae = SaeLoader.Load(_dir);
        using var x = tensor(X, [3, 4]);
        var (y, f) = sae.Run(x);
        AssertClose(FPlain, f);
        AssertClose(YFinetune, y);

        string saved = Path.Combine(_dir, "saved");
        SaeLensFormat.Save(sae, saved);
        Assert.False(JsonNode.Parse(File.ReadAllText(Path.Combine(saved, "cfg.json")))!.AsObject().ContainsKey("finetuning_scaling_factor"));
        using var again = SaeLoader.Load(saved);
        var (y2, f2) = again.Run(x);
        Assert.True(y2.equal(y).all().item<bool>() && f2.equal(f).all().item<bool>());
    }

    [Fact]
    public void ScalingFactorNotAllOnesWithoutFinetuningFlagIsRefused()
    {
        File.WriteAllText(Path.Combine(_dir, "cfg.json"), Pre6Cfg.Replace("%FT%", ""));
        WriteWeights(Scale);
        var e = Assert.Throws<SaeSharpException>(() => SaeLoader.Load(_dir));
        Assert.Contains("sae_weights.safetensors: 'scaling_factor' is not all ones", e.Message);
        Assert.Contains("finetuning_scaling_factor", e.Message);
    }

    [Fact]
    public void ConstantNormRescaleMatchesSaeLensAndRoundTrips()
    {
        File.WriteAllText(Path.Combine(_dir, "cfg.json"), """
            {"architecture": "standard", "d_in": 4, "d_sae": 6, "dtype": "float32", "device": "cpu", "apply_b_dec_to_input": true,
             "normalize_activations": "constant_norm_rescale", "reshape_activations": "none",
             "metadata": {"sae_lens_version": "6.5.0", "hook_name": "blocks.3.hook_resid_pre", "model_name": "gpt2"}}
            """);
        WriteWeights();
        using var sae = SaeLoader.Load(_dir);
        using var x = tensor(X, [3, 4]);
        var (y, f) = sae.Run(x);
        AssertClose(FCnr, f);
        AssertClose(YCnr, y);
        using var fwd = sae.forward(x);
        AssertClose(YCnr, fwd);

        string saved = Path.Combine(_dir, "saved");
        SaeLensFormat.Save(sae, saved);
        using var again = SaeLoader.Load(saved);
        Assert.Equal("constant_norm_rescale", again.Cfg.NormalizeActivations);
        var (y2, f2) = again.Run(x);
        Assert.True(y2.equal(y).all().item<bool>() && f2.equal(f).all().item<bool>());
    }

    [Fact]
    public void TopKWithRescaleActsByDecoderNormMatchesSaeLensAndRoundTrips()
    {
        File.WriteAllText(Path.Combine(_dir, "cfg.json"), """
            {"architecture": "topk", "d_in": 4, "d_sae": 6, "k": 2, "rescale_acts_by_decoder_norm": true, "dtype": "float32",
             "device": "cpu", "apply_b_dec_to_input": true, "normalize_activations": "none", "reshape_activations": "none",
             "metadata": {"sae_lens_version": "6.12.0", "hook_name": "blocks.3.hook_resid_pre", "model_name": "gpt2"}}
            """);
        WriteWeights();
        using var sae = SaeLoader.Load(_dir);
        using var x = tensor(X, [3, 4]);
        var (y, f) = sae.Run(x);
        AssertClose(FRescale, f);
        AssertClose(YRescale, y);

        string saved = Path.Combine(_dir, "saved");
        SaeLensFormat.Save(sae, saved);
        using var again = SaeLoader.Load(saved);
        var (y2, f2) = again.Run(x);
        Assert.True(y2.equal(y).all().item<bool>() && f2.equal(f).all().item<bool>());
    }

    [Theory]
    [InlineData("\"normalize_activations\": \"none\"", "\"normalize_activations\": \"bogus\"", "normalize_activations must be none, expected_average_only_in, constant_norm_rescale or layer_norm, got 'bogus'")]
    [InlineData("\"dtype\": \"float32\"", "\"dtype\": \"int8\"", "unsupported SAE dtype 'int8'")]
    public void UnknownNormalisationOrDtypeIsRefusedNamingTheCfg(string from, string to, string message)
    {
        string cfg = """
            {"architecture": "standard", "d_in": 4, "d_sae": 6, "dtype": "float32", "device": "cpu", "apply_b_dec_to_input": true,
             "normalize_activations": "none", "metadata": {"hook_name": "blocks.3.hook_resid_pre"}}
            """;
        File.WriteAllText(Path.Combine(_dir, "cfg.json"), cfg.Replace(from, to));
        WriteWeights();
        var e = Assert.Throws<SaeSharpException>(() => SaeLoader.Load(_dir));
        Assert.Contains(Path.Combine(_dir, "cfg.json") + ": " + message, e.Message);
    }
}
