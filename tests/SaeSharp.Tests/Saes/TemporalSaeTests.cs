using System.Text.Json.Nodes;
using SaeSharp.Interop;
using SaeSharp.Saes;
using SaeSharp.Tests.Tokenizers;
using static TorchSharp.torch;

namespace SaeSharp.Tests.Saes;

/// <summary>
/// SAELens 6.37.6's temporal SAE against SAELens's own outputs (tests/data/temporal_sae, written by
/// bench/reference/temporal_sae_fixture.py from SAELens's temporal_sae.py), and its invariants checked by hand.
/// </summary>
public sealed class TemporalSaeTests
{
    public static TheoryData<string> Variants => new(["tied_topk", "untied_relu"]);

    internal static string Fixture(params string[] parts) => TestPaths.Data(["temporal_sae", .. parts]);

    /// <summary>A nested JSON list of numbers as a float32 tensor of its shape.</summary>
    internal static Tensor FromJson(JsonNode node)
    {
        var shape = new List<long>();
        for (var n = node; n is JsonArray a; n = a[0]) shape.Add(a.Count);
        var values = new List<float>();
        void Walk(JsonNode n)
        {
            if (n is JsonArray a) foreach (var e in a) Walk(e!);
            else values.Add((float)n.GetValue<double>());
        }
        Walk(node);
        return tensor(values.ToArray()).view([.. shape]);
    }

    internal static JsonObject Expected(string variant) => JsonNode.Parse(File.ReadAllText(Fixture(variant, "expected.json")))!.AsObject();

    internal static void AssertMatchesSaeLens(Sae loaded, string variant)
    {
        var sae = Assert.IsType<TemporalSae>(loaded);
        var e = Expected(variant);
        using var scope = NewDisposeScope();
        var x = FromJson(e["x"]!);
        var (novel, pred) = sae.EncodeWithPredictions(x);
        SaeTestUtil.AssertClose(FromJson(e["z_novel"]!), novel, rtol: 1e-5, atol: 1e-5, what: "z_novel");
        SaeTestUtil.AssertClose(FromJson(e["z_pred"]!), pred, rtol: 1e-5, atol: 1e-5, what: "z_pred");
        SaeTestUtil.AssertClose(FromJson(e["z_novel"]!), sae.Encode(x), rtol: 1e-5, atol: 1e-5, what: "encode");
        SaeTestUtil.AssertClose(FromJson(e["forward"]!), sae.forward(x), rtol: 1e-5, atol: 1e-4, what: "forward");
        var (y, f) = sae.Run(x);
        SaeTestUtil.AssertClose(FromJson(e["forward"]!), y, rtol: 1e-5, atol: 1e-4, what: "Run output");
        SaeTestUtil.AssertClose(FromJson(e["z_novel"]!), f, rtol: 1e-5, atol: 1e-5, what: "Run features");
        var x2 = FromJson(e["x_changed"]!);
        SaeTestUtil.AssertClose(FromJson(e["forward_changed"]!), sae.forward(x2), rtol: 1e-5, atol: 1e-4, what: "forward, a token changed");
        SaeTestUtil.AssertClose(FromJson(e["z_novel_changed"]!), sae.Encode(x2), rtol: 1e-5, atol: 1e-5, what: "z_novel, a token changed");
    }

    [Theory]
    [MemberData(nameof(Variants))]
    public void A_SAELens_folder_loads_and_matches_SAELens_outputs(string variant)
    {
        using var sae = SaeLensFormat.Load(Fixture(variant, "saelens"));
        var t = Assert.IsType<TemporalSae>(sae);
        Assert.Equal(SaeArchitectures.Temporal, sae.Cfg.Architecture);
        Assert.Equal(variant == "tied_topk", t.TiedWeights);
        Assert.Equal(variant == "tied_topk" ? "topk" : "relu", t.SaeDiffType);
        Assert.Equal(variant == "tied_topk" ? 0.5 : 2.0, t.NormalizationFactor);
        Assert.Equal(variant == "tied_topk" ? 1 : 2, t.NAttnLayers);
        // The state_dict keys are SAELens's, exactly: no b_enc, W_enc only when untied.
        var keys = Expected(variant)["state_dict_keys"]!.AsArray().Select(k => k!.GetValue<string>()).ToList();
        Assert.Equal(keys, sae.state_dict().Keys.OrderBy(k => k, StringComparer.Ordinal).ToList());
        AssertMatchesSaeLens(sae, variant);
    }

    [Theory]
    [MemberData(nameof(Variants))]
    public void Saving_in_SAELens_format_round_trips(string variant)
    {
        string dir = TestPaths.TempDir();
        try
        {
            using (var sae = SaeLensFormat.Load(Fixture(variant, "saelens")))
                SaeLensFormat.Save(sae, dir);
            var cfg = JsonNode.Parse(File.ReadAllText(Path.Combine(dir, "cfg.json")))!.AsObject();
            var original = JsonNode.Parse(File.ReadAllText(Fixture(variant, "saelens", "cfg.json")))!.AsObject();
            foreach (var key in new[] { "architecture", "normalize_activations", "n_heads", "n_attn_layers", "bottleneck_factor", "sae_diff_type", "kval_topk", "tied_weights", "activation_normalization_factor", "apply_b_dec_to_input" })
                Assert.True(JsonNode.DeepEquals(original[key], cfg[key]), $"{key}: {original[key]?.ToJsonString()} vs {cfg[key]?.ToJsonString()}");
            using var again = SaeLensFormat.Load(dir);
            AssertMatchesSaeLens(again, variant);
        }
        finally
        {
            Directory.Delete(dir, recursive: true);
        }
    }

    [Fact]
    public void Decode_alone_is_the_novel_part_as_in_SAELens()
    {
        using var loaded = SaeLensFormat.Load(Fixture("untied_relu", "saelens"));
        var sae = (TemporalSae)loaded;
        using var scope = NewDisposeScope();
        var x = FromJson(Expected("untied_relu")["x"]!);
        var (novel, pred) = sae.EncodeWithPredictions(x);
        // ((z_novel + z_pred)·W_dec + b_dec)/factor − (z_novel·W_dec + b_dec)/factor = z_pred·W_dec/factor
        var full = sae.forward(x);
        var novelOnly = sae.Decode(novel);
        SaeTestUtil.AssertClose(pred.matmul(sae.WDec) / 2.0, full - novelOnly, rtol: 1e-5, atol: 1e-4, what: "forward − decode");
    }

    [Theory]
    [MemberData(nameof(Variants))]
    public void A_token_sees_only_the_tokens_before_it(string variant)
    {
        using var loaded = SaeLensFormat.Load(Fixture(variant, "saelens"));
        var sae = (TemporalSae)loaded;
        using var scope = NewDisposeScope();
        var x = FromJson(Expected(variant)["x"]!);
        var (novel, pred) = sae.EncodeWithPredictions(x);
        var y = sae.forward(x);
        // Changing token 4 leaves positions 0..3 exactly as they were.
        var x2 = x.clone();
        x2[TensorIndex.Colon, 4] = x2[TensorIndex.Colon, 4] + 3.0;
        var (novel2, pred2) = sae.EncodeWithPredictions(x2);
        Assert.True(novel.narrow(1, 0, 4).eq(novel2.narrow(1, 0, 4)).all().item<bool>());
        Assert.True(pred.narrow(1, 0, 4).eq(pred2.narrow(1, 0, 4)).all().item<bool>());
        Assert.True(y.narrow(1, 0, 4).eq(sae.forward(x2).narrow(1, 0, 4)).all().item<bool>());
        Assert.False(y.narrow(1, 4, 1).eq(sae.forward(x2).narrow(1, 4, 1)).all().item<bool>());
        // Position 0's prediction comes from the zero context alone: not zero in general (the attention layers' biases),
        // but the same as for the one-token sequence x[:, :1].
        var (_, pred0) = sae.EncodeWithPredictions(x.narrow(1, 0, 1));
        SaeTestUtil.AssertClose(pred0, pred.narrow(1, 0, 1), rtol: 1e-6, atol: 1e-6, what: "z_pred at position 0");
        // Each sequence of the batch is its own context.
        var (novelB1, _) = sae.EncodeWithPredictions(x.narrow(0, 1, 1));
        SaeTestUtil.AssertClose(novel.narrow(0, 1, 1), novelB1, rtol: 1e-6, atol: 1e-6, what: "batch row 1 alone");
    }

    [Fact]
    public void Top_k_keeps_at_most_k_novel_codes_per_token()
    {
        using var loaded = SaeLensFormat.Load(Fixture("tied_topk", "saelens"));
        using var scope = NewDisposeScope();
        var x = randn(3, 7, 8) * 20;
        var f = loaded.Encode(x);
        Assert.True(f.ne(0).sum(-1).le(3).all().item<bool>());
        Assert.True(f.ge(0).all().item<bool>());
        Assert.True(f.ne(0).sum(-1).eq(3).any().item<bool>());
    }

    [Fact]
    public void Padding_on_the_left_does_not_reach_the_real_tokens()
    {
        using var loaded = SaeLensFormat.Load(Fixture("untied_relu", "saelens"));
        var sae = (TemporalSae)loaded;
        using var scope = NewDisposeScope();
        var x = FromJson(Expected("untied_relu")["x"]!).narrow(0, 0, 1);             // [1, 6, 8]
        var (novel, pred) = sae.EncodeWithPredictions(x);
        var padded = cat([randn(1, 3, 8) * 50, x], 1);                                // 3 pad positions first
        var mask = cat([zeros(1, 3), ones(1, 6)], 1);
        var (novelP, predP) = sae.EncodeWithPredictions(padded, mask);
        SaeTestUtil.AssertClose(novel, novelP.narrow(1, 3, 6), rtol: 1e-5, atol: 1e-5, what: "z_novel behind padding");
        SaeTestUtil.AssertClose(pred, predP.narrow(1, 3, 6), rtol: 1e-5, atol: 1e-5, what: "z_pred behind padding");
        // Without the mask the pads are context: the real tokens change.
        var (novelU, _) = sae.EncodeWithPredictions(padded);
        Assert.False(novelU.narrow(1, 3, 6).allclose(novel, 1e-5, 1e-5));
    }

    [Fact]
    public void Rows_are_refused_naming_the_problem()
    {
        using var loaded = SaeLensFormat.Load(Fixture("tied_topk", "saelens"));
        using var scope = NewDisposeScope();
        var rows = randn(10, 8);
        foreach (var call in new Action[] { () => loaded.Encode(rows), () => loaded.forward(rows), () => loaded.Run(rows), () => loaded.HiddenPre(rows) })
        {
            var e = Assert.Throws<SaeSharpException>(call);
            Assert.Contains("temporal SAEs encode a token from the earlier tokens of its context", e.Message);
            Assert.Contains("--model", e.Message);
        }
    }

    [Fact]
    public void Folding_and_training_are_refused_as_in_SAELens()
    {
        using var loaded = SaeLensFormat.Load(Fixture("tied_topk", "saelens"));
        Assert.Contains("not supported for temporal SAEs", Assert.Throws<SaeSharpException>(() => loaded.FoldWDecNorm()).Message);
        Assert.Contains("not supported for temporal SAEs", Assert.Throws<SaeSharpException>(() => loaded.FoldActivationScale(2, 2)).Message);
        Assert.Contains("inference only", Assert.Throws<SaeSharpException>(() => loaded.InitializeWeights()).Message);
        Assert.Contains("no W_enc", Assert.Throws<SaeSharpException>(() => loaded.WEnc).Message);
    }

    [Fact]
    public void A_config_SAELens_would_refuse_is_refused()
    {
        var cfg = new SaeConfig { Architecture = "temporal", DIn = 8, DSae = 32 };      // defaults: 8 heads × bottleneck 64
        Assert.Contains("multiple of bottleneck_factor", Assert.Throws<SaeSharpException>(() => cfg.Validate()).Message);
        var ok = SaeConfig.FromJson("""{"architecture": "temporal", "d_in": 8, "d_sae": 32, "n_heads": 2, "bottleneck_factor": 8, "normalize_activations": "constant_scalar_rescale", "activation_normalization_factor": 0.5}""");
        ok.Validate();
        var bad = SaeConfig.FromJson("""{"architecture": "temporal", "d_in": 8, "d_sae": 32, "n_heads": 2, "bottleneck_factor": 8, "sae_diff_type": "jumprelu"}""");
        Assert.Contains("sae_diff_type", Assert.Throws<SaeSharpException>(() => bad.Validate()).Message);
        // constant_scalar_rescale is the temporal SAE's only: other architectures keep refusing it.
        var standard = new SaeConfig { DIn = 8, DSae = 32, NormalizeActivations = "constant_scalar_rescale" };
        Assert.Contains("normalize_activations", Assert.Throws<SaeSharpException>(() => standard.Validate()).Message);
    }
}
