using SaeSharp.Interop;
using SaeSharp.IO;
using SaeSharp.Saes;
using SaeSharp.Tests.Tokenizers;
using static SaeSharp.Tests.Saes.SaeTestUtil;
using TorchSharp;
using static TorchSharp.torch;

namespace SaeSharp.Tests.Saes;

/// <summary>SAELens 6.37's matching_pursuit SAE: hand-computed pursuits, SAELens's own outputs and gradients
/// (tests/data/matching_pursuit, bench/reference/matching_pursuit_fixture.py), its file format and the refusals.</summary>
public class MatchingPursuitSaeTests
{
    private static MatchingPursuitSae Make(int dIn, int dSae, double? threshold = 1e-8, int? maxIterations = null, bool? stopOnDuplicate = null,
        bool applyBDec = true) =>
        new(new SaeConfig
        {
            Architecture = SaeArchitectures.MatchingPursuit, DIn = dIn, DSae = dSae, ResidualThreshold = threshold,
            MaxIterations = maxIterations, StopOnDuplicateSupport = stopOnDuplicate, ApplyBDecToInput = applyBDec,
        });

    private static void Set(Sae sae, Tensor wDec, Tensor? bDec = null)
    {
        using var _ = no_grad();
        sae.WDec.copy_(wDec);
        if (bDec is not null) sae.BDec.copy_(bDec);
    }

    [Fact]
    public void StateDictHasOnlyWDecAndBDecAndWEncIsRefusedNamingTheArchitecture()
    {
        using var sae = Make(4, 6);
        Assert.Equal(["W_dec", "b_dec"], sae.state_dict().Keys.Order(StringComparer.Ordinal));
        Assert.Equal(["W_dec", "b_dec"], sae.named_parameters().Select(p => p.name).Order(StringComparer.Ordinal));
        Assert.False(sae.HasEncoderWeights);
        Assert.False(sae.HasEncoderBias);
        var e = Assert.Throws<SaeSharpException>(() => sae.WEnc);
        Assert.Contains("matching_pursuit SAE has no W_enc", e.Message);
        // Every other architecture keeps W_enc.
        using var relu = SaeFactory.Create(new SaeConfig { DIn = 4, DSae = 6 });
        Assert.True(relu.HasEncoderWeights);
        Assert.Contains("W_enc", relu.state_dict().Keys);
    }

    [Fact]
    public void AnOrthonormalDictionaryRecoversASparsePositiveCombinationExactly()
    {
        // W_dec rows = a random orthonormal basis of R^6; x = b_dec + Σ c_j W_dec[j] with c ≥ 0 and 3 nonzero.
        using var scope = NewDisposeScope();
        var g = new Generator(3);
        var (q, _) = linalg.qr(randn(6, 6, generator: g));
        var b = randn(6, generator: g) * 0.3;
        using var sae = Make(6, 6);
        Set(sae, q.t(), b);
        var c = zeros(4, 6);
        c[0, 1] = 2.0f; c[0, 4] = 0.5f; c[0, 5] = 1.25f;
        c[1, 0] = 3.0f;
        c[2, 2] = 0.7f; c[2, 3] = 0.2f;
        // row 3: x = b_dec, nothing to select
        var x = c.matmul(q.t()) + b;
        var f = sae.Encode(x);
        AssertClose(c, f, 1e-5, 1e-5, "feature_acts");
        AssertClose(x, sae.forward(x), 1e-5, 1e-5, "reconstruction");
    }

    [Fact]
    public void ARowWhoseCorrelationsAreAllNonPositiveGetsZeroActs()
    {
        using var scope = NewDisposeScope();
        using var sae = Make(2, 2);
        Set(sae, tensor(new float[,] { { 1, 0 }, { 0, 1 } }));
        var f = sae.Encode(tensor(new float[,] { { -1, -2 }, { 0, 0 }, { -3, 0 } }));
        Assert.Equal(new float[6], F(f));
    }

    [Fact]
    public void ResidualThresholdStopsARowAndMaxIterationsCapsIt()
    {
        // Atoms e0, e1 and u = (e0+e1)/√2. x = (3, 1): picks e0 (3 > 4/√2 ≈ 2.83) → residual (0, 1), norm 1; then e1 → 0.
        using var scope = NewDisposeScope();
        var w = tensor(new float[,] { { 1, 0 }, { 0, 1 }, { 1 / MathF.Sqrt(2), 1 / MathF.Sqrt(2) } });
        var x = tensor(new float[,] { { 3, 1 } });
        using (var full = Make(2, 3, threshold: 1e-6)) { Set(full, w); Assert.Equal(new[] { 3f, 1f, 0f }, F(full.Encode(x))); }
        // A threshold above 1 stops the row after its first pick (residual norm 1 < 1.5).
        using (var loose = Make(2, 3, threshold: 1.5)) { Set(loose, w); Assert.Equal(new[] { 3f, 0f, 0f }, F(loose.Encode(x))); }
        // max_iterations 1 stops it too, even with no threshold.
        using (var capped = Make(2, 3, threshold: 0, maxIterations: 1)) { Set(capped, w); Assert.Equal(new[] { 3f, 0f, 0f }, F(capped.Encode(x))); }
    }

    [Fact]
    public void ALatentPickedTwiceAccumulatesAndDuplicateSupportStopsTheRow()
    {
        // Atoms a = e0 and b = (cos 30°, sin 30°). x = (1, 0.2): it 1: <x,a> = 1 > <x,b> = 0.966 → a, v 1, r = (0, 0.2);
        // it 2: <r,a> = 0, <r,b> = 0.1 → b, v 0.1, r = (−0.0866, 0.15); it 3: <r,a> = −0.0866, <r,b> = 0 → nothing
        // positive, the support {a, b} is unchanged → done. acts (1, 0.1).
        using var scope = NewDisposeScope();
        double s30 = Math.Sin(Math.PI / 6), c30 = Math.Cos(Math.PI / 6);
        var w = tensor(new float[,] { { 1, 0 }, { (float)c30, (float)s30 } });
        using var sae = Make(2, 2, threshold: 0, maxIterations: 10, stopOnDuplicate: true);
        Set(sae, w);
        var f = F(sae.Encode(tensor(new float[,] { { 1, 0.2f } })));
        Assert.Equal(1.0, f[0], 5);
        Assert.Equal(0.1, f[1], 5);

        // Atoms e0 and (cos 120°, sin 120°), x = (0.2, 1): each pick leaves the residual positively correlated with the
        // other atom (they are obtuse), so pursuit alternates 1, 0, 1, 0, … and each latent's values accumulate.
        double a = 120 * Math.PI / 180;
        var w2 = tensor(new float[,] { { 1, 0 }, { (float)Math.Cos(a), (float)Math.Sin(a) } });
        var x2 = tensor(new float[,] { { 0.2f, 1 } });
        // Hand computation of the first four iterations (no duplicate-support stop, so it keeps going).
        var atoms = new[] { new[] { 1.0, 0.0 }, new[] { Math.Cos(a), Math.Sin(a) } };
        // The pursuit by hand on x = (0.2, 1): per iteration the atom of the larger correlation, its ReLU'd value added.
        double[] ByHand(int iterations)
        {
            var r = new[] { 0.2, 1.0 };
            var acts = new double[2];
            for (int it = 0; it < iterations; it++)
            {
                double d0 = r[0] * atoms[0][0] + r[1] * atoms[0][1], d1 = r[0] * atoms[1][0] + r[1] * atoms[1][1];
                int j = d1 > d0 ? 1 : 0;
                double v = Math.Max(0, Math.Max(d0, d1));
                acts[j] += v;
                r[0] -= v * atoms[j][0];
                r[1] -= v * atoms[j][1];
            }
            return acts;
        }
        var expected = ByHand(4);
        Assert.True(expected[0] > 0 && expected[1] > 0);
        using var again = Make(2, 2, threshold: 0, maxIterations: 4, stopOnDuplicate: false);
        Set(again, w2);
        var f2 = F(again.Encode(x2));
        Assert.Equal(expected[0], f2[0], 5);
        Assert.Equal(expected[1], f2[1], 5);
        // With the duplicate-support stop (the default) the row stops at iteration 3, which re-picks an active latent
        // and so leaves the support unchanged: the values of iterations 1 to 3, not 4.
        using var stops = Make(2, 2, threshold: 0, maxIterations: 4, stopOnDuplicate: true);
        Set(stops, w2);
        var f3 = F(stops.Encode(x2));
        var two = ByHand(3);
        // Iteration 3 still adds its value (the row becomes done after adding it), as SAELens's loop does.
        Assert.True(two[0] > 0 && two[1] > 0);
        Assert.Equal(two[0], f3[0], 5);
        Assert.Equal(two[1], f3[1], 5);
        Assert.True(f3[0] < f2[0] || f3[1] < f2[1]);
    }

    [Fact]
    public void DecodeAddsBDecOnlyWhenItWasSubtracted()
    {
        using var scope = NewDisposeScope();
        var w = randn(3, 4, generator: new Generator(1));
        var b = randn(4, generator: new Generator(2));
        var f = rand(2, 3, generator: new Generator(4));
        using var with = Make(4, 3);
        Set(with, w, b);
        AssertClose(f.matmul(w) + b, with.Decode(f), what: "apply_b_dec_to_input true");
        using var without = Make(4, 3, applyBDec: false);
        Set(without, w, b);
        AssertClose(f.matmul(w), without.Decode(f), what: "apply_b_dec_to_input false");
    }

    public static TheoryData<string> Cases => new() { "a", "b", "c" };

    private static Dictionary<string, Tensor> Reference(string c) => SafeTensors.Load(TestPaths.Data("matching_pursuit", $"reference_{c}.safetensors"));

    [Theory]
    [MemberData(nameof(Cases))]
    public void SaeLensSavedSaeLoadsAndEncodesAsSaeLens(string c)
    {
        using var scope = NewDisposeScope();
        var r = Reference(c);
        using var sae = SaeLensFormat.Load(TestPaths.Data("matching_pursuit", c));
        var mp = Assert.IsType<MatchingPursuitSae>(sae);
        Assert.Equal(c == "b" ? 1.5 : 0.01, mp.ResidualThreshold);
        Assert.Equal(c switch { "a" => 8, "b" => 3, _ => 5 }, mp.MaxIterations);
        Assert.Equal(c != "b", mp.StopOnDuplicateSupport);
        Assert.Equal(c != "b", sae.Cfg.ApplyBDecToInput);
        Assert.Equal(c == "c", sae.UsesLayerNorm);
        using (no_grad())
        {
            AssertClose(r["feature_acts"], sae.Encode(r["x"]), 1e-5, 1e-6, "feature_acts");
            AssertClose(r["sae_out"], sae.forward(r["x"]), 1e-5, 1e-6, "sae_out");
        }
    }

    [Theory]
    [MemberData(nameof(Cases))]
    public void TrainingForwardMatchesSaeLensLossMetricsAndGradients(string c)
    {
        using var scope = NewDisposeScope();
        var r = Reference(c);
        using var sae = SaeLensFormat.Load(TestPaths.Data("matching_pursuit", c));
        var x = r["x"];
        foreach (var p in sae.parameters()) p.requires_grad_(true);
        var o = sae.TrainingForward(x, x, new SaeTrainContext());
        o.Loss.backward();
        AssertClose(r["train_feature_acts"], o.FeatureActs, 1e-5, 1e-6, "train feature_acts");
        AssertClose(r["train_sae_out"], o.SaeOut, 1e-5, 1e-6, "train sae_out");
        AssertClose(r["loss"], o.Loss.reshape(1), 1e-5, 1e-7, "loss");
        AssertClose(r["loss"], o.Losses["mse_loss"].reshape(1), 1e-5, 1e-7, "mse_loss");
        Assert.Single(o.Losses);
        foreach (var m in new[] { "max_l0", "min_l0", "residual_norm", "residual_threshold_converged_portion" })
            AssertClose(r["metric_" + m], o.Metrics[m].reshape(1), 1e-5, 1e-6, m);
        AssertClose(r["grad_W_dec"], sae.WDec.grad!, 1e-5, 1e-6, "dL/dW_dec");
        // Without apply_b_dec_to_input, b_dec is not used: SAELens's gradient is b_dec·False's, zero; SaeSharp's none.
        AssertClose(r["grad_b_dec"], sae.BDec.grad ?? zeros_like(sae.BDec), 1e-5, 1e-6, "dL/db_dec");
        Assert.Equal(c == "b", sae.BDec.grad is null);
    }

    [Fact]
    public void SaeLensKeysAreInTheFixtureAndASaveHasExactlyThem()
    {
        using var f = SafeTensorsFile.Open(TestPaths.Data("matching_pursuit", "reference_a.safetensors"));
        Assert.Equal("W_dec,b_dec", f.Metadata["state_dict_keys"]);
        using var sae = SaeLensFormat.Load(TestPaths.Data("matching_pursuit", "b"));
        var dir = Directory.CreateTempSubdirectory("mp-save-").FullName;
        try
        {
            SaeLensFormat.Save(sae, dir);
            using var saved = SafeTensorsFile.Open(Path.Combine(dir, SaeLensFormat.WeightsFile));
            Assert.Equal(["W_dec", "b_dec"], saved.Names.Order(StringComparer.Ordinal));
            var cfg = System.Text.Json.Nodes.JsonNode.Parse(File.ReadAllText(Path.Combine(dir, SaeLensFormat.CfgFile)))!;
            Assert.Equal("matching_pursuit", (string?)cfg["architecture"]);
            Assert.Equal(1.5, (double)cfg["residual_threshold"]!);
            Assert.Equal(3, (int)cfg["max_iterations"]!);
            Assert.False((bool)cfg["stop_on_duplicate_support"]!);
            using var back = SaeLensFormat.Load(dir);
            using var _ = NewDisposeScope();
            var x = Reference("b")["x"];
            using (no_grad()) AssertClose(sae.Encode(x), back.Encode(x), 0, 0, "reloaded");
        }
        finally
        {
            Directory.Delete(dir, true);
        }
    }

    [Fact]
    public void AFileWithWEncOrAWrongShapeIsRefusedClearly()
    {
        using var scope = NewDisposeScope();
        var dir = Directory.CreateTempSubdirectory("mp-bad-").FullName;
        try
        {
            File.Copy(TestPaths.Data("matching_pursuit", "a", "cfg.json"), Path.Combine(dir, "cfg.json"));
            var w = SafeTensors.Load(TestPaths.Data("matching_pursuit", "a", "sae_weights.safetensors"));
            SafeTensors.Save(Path.Combine(dir, SaeLensFormat.WeightsFile), new Dictionary<string, Tensor>(w) { ["W_enc"] = w["W_dec"].t().contiguous() });
            var e = Assert.Throws<SaeSharpException>(() => SaeLensFormat.Load(dir));
            Assert.Contains("unexpected tensor 'W_enc' for architecture 'matching_pursuit'", e.Message);
            Assert.Contains("tied", e.Message);

            SafeTensors.Save(Path.Combine(dir, SaeLensFormat.WeightsFile), new Dictionary<string, Tensor> { ["W_dec"] = zeros(24, 7), ["b_dec"] = zeros(8) });
            e = Assert.Throws<SaeSharpException>(() => SaeLensFormat.Load(dir));
            Assert.Contains("'W_dec'", e.Message);
            Assert.Contains("[24, 8]", e.Message);

            SafeTensors.Save(Path.Combine(dir, SaeLensFormat.WeightsFile), new Dictionary<string, Tensor> { ["W_dec"] = zeros(24, 8), ["b_dec"] = zeros(9) });
            e = Assert.Throws<SaeSharpException>(() => SaeLensFormat.Load(dir));
            Assert.Contains("'b_dec'", e.Message);
        }
        finally
        {
            Directory.Delete(dir, true);
        }
    }

    [Fact]
    public void FoldWDecNormIsRefusedAndTheActivationScaleFoldIsExact()
    {
        using var scope = NewDisposeScope();
        using var sae = SaeLensFormat.Load(TestPaths.Data("matching_pursuit", "a"));
        var e = Assert.Throws<SaeSharpException>(sae.FoldWDecNorm);
        Assert.Contains("not safe for MatchingPursuit", e.Message);

        // Trained on s·x: folding s makes the SAE on raw x give the trained SAE's reconstruction / s and latents / s.
        const double s = 3.0;
        var x = Reference("a")["x"] / 3.0;
        Tensor fScaled, yScaled;
        using (no_grad()) (yScaled, fScaled) = sae.Run(x * 3.0);
        var wBefore = sae.WDec.detach().clone();
        sae.FoldActivationScale(s, s);
        Assert.Equal(0.01 / 3, ((MatchingPursuitSae)sae).ResidualThreshold, 12);
        AssertClose(wBefore, sae.WDec, 0, 0, "W_dec unchanged");
        using (no_grad())
        {
            var (y, f) = sae.Run(x);
            AssertClose(fScaled / 3.0, f, 1e-5, 1e-6, "latents / s");
            AssertClose(yScaled / 3.0, y, 1e-5, 1e-6, "reconstruction / s");
        }
        Assert.Throws<SaeSharpException>(() => sae.FoldActivationScale(2, 3));
    }

    [Fact]
    public void ConfigChecksNameTheField()
    {
        var e = Assert.Throws<SaeSharpException>(() => Make(4, 6, maxIterations: 0));
        Assert.Contains("max_iterations 0", e.Message);
        e = Assert.Throws<SaeSharpException>(() => new MatchingPursuitSae(new SaeConfig { Architecture = "matching_pursuit", DIn = 4, DSae = 6, DOut = 5, ApplyBDecToInput = false }));
        Assert.Contains("d_out must equal d_in", e.Message);
        e = Assert.Throws<SaeSharpException>(() => Make(4, 6, threshold: double.NaN));
        Assert.Contains("residual_threshold", e.Message);
        // SAELens's defaults are written into the config.
        using var sae = Make(4, 6, threshold: null);
        Assert.Equal(0.01, sae.Cfg.ResidualThreshold);
        Assert.True(sae.Cfg.StopOnDuplicateSupport);
        Assert.Null(sae.Cfg.MaxIterations);
        Assert.Equal(4, sae.MaxIterations);
    }

    [Fact]
    public void ThreeDimensionalInputsEncodeAsTheirRowsAndNoTensorLeaks()
    {
        using var sae = SaeLensFormat.Load(TestPaths.Data("matching_pursuit", "a"));
        using var scope = NewDisposeScope();
        var x = randn(3, 4, 8, generator: new Generator(5));
        using (no_grad())
        {
            var f3 = sae.Encode(x);
            Assert.Equal(new long[] { 3, 4, 24 }, f3.shape);
            AssertClose(sae.Encode(x.reshape(12, 8)), f3.reshape(12, 24), 0, 0, "3-D");
        }
        foreach (var p in sae.parameters()) p.requires_grad_(true);
        long before = DisposeScopeManager.Statistics.ThreadTotalLiveCount;
        using (var inner = NewDisposeScope())
        {
            using (no_grad()) sae.Encode(x);
            var o = sae.TrainingForward(x.reshape(12, 8), x.reshape(12, 8), new SaeTrainContext());
            o.Loss.backward();
            _ = o.FeatureActs;
        }
        sae.zero_grad(set_to_none: true);
        Assert.Equal(before, DisposeScopeManager.Statistics.ThreadTotalLiveCount);
    }
}
