using System.Text.Json.Nodes;
using SaeSharp.Activations;
using SaeSharp.Evaluation;
using SaeSharp.Saes;
using SaeSharp.Synthetic;
using SaeSharp.Tests.Tokenizers;
using static TorchSharp.torch;

namespace SaeSharp.Tests.Evaluation;

/// <summary>SAELens 6.37.6's SynthSAEBench metrics (<see cref="SyntheticMetricsAccumulator"/>, <see cref="FeatureMatching"/>)
/// on hand-computed cases and against SAELens's own functions (tests/data/synthetic_evals).</summary>
public class SyntheticMetricsTests : IDisposable
{
    private readonly string _dir = Directory.CreateTempSubdirectory("synth-metrics-").FullName;
    public void Dispose() => Directory.Delete(_dir, true);

    [Fact]
    public void ClassificationCountsOfConstructedLatents()
    {
        // Two features along the axes; latents 0 and 2 point at feature 0, latent 1 at feature 1.
        var gt = tensor(new float[,] { { 1, 0 }, { 0, 1 } });
        var dec = tensor(new float[,] { { 1, 0 }, { 0, 1 }, { 1, 0.1f } });
        // Feature 0 fires on rows 0-2, feature 1 on rows 3-4; row 5 has none.
        var acts = tensor(new float[,] { { 1, 0 }, { 2, 0 }, { 0.5f, 0 }, { 0, 1 }, { 0, 3 }, { 0, 0 } });
        // Latent 0 fires exactly with feature 0 (precision = recall = 1); latent 1 on rows 3 and 5 (TP 1, FP 1, FN 1, TN 3);
        // latent 2 never (TP 0, FN 3, TN 3); negative values do not count as firing.
        var lat = tensor(new float[,] { { 1, 0, 0 }, { 1, 0, -1 }, { 1, 0, 0 }, { 0, 2, 0 }, { -1, 0, 0 }, { 0, 1, 0 } });
        var x = acts.matmul(gt);
        var acc = new SyntheticMetricsAccumulator(dec, gt);
        acc.Add(x.narrow(0, 0, 4), x.narrow(0, 0, 4), lat.narrow(0, 0, 4), acts.narrow(0, 0, 4));
        acc.Add(x.narrow(0, 4, 2), x.narrow(0, 4, 2), lat.narrow(0, 4, 2), acts.narrow(0, 4, 2));
        var r = acc.AddTo(new SaeEvalResult());
        Assert.Equal(0.5, r.ClassificationPrecision!.Value, 12);       // (1 + 0.5 + 0) / 3
        Assert.Equal(0.5, r.ClassificationRecall!.Value, 12);
        Assert.Equal(0.5, r.ClassificationF1Score!.Value, 12);
        Assert.Equal((1 + 4.0 / 6 + 0.5) / 3, r.ClassificationAccuracy!.Value, 12);
        Assert.Equal(5.0 / 6, r.TrueL0!.Value, 12);
        Assert.Equal(5.0 / 6, r.SaeL0!.Value, 12);
        Assert.Equal(1, r.DeadLatents);
        // x̂ = x on every row; row 5 has ‖x‖ = 0 and is skipped.
        Assert.Equal(1.0, r.Shrinkage!.Value, 12);
    }

    [Fact]
    public void ALatentFiringExactlyWithItsFeatureIsAPerfectDetector()
    {
        var gt = tensor(new float[,] { { 0.6f, 0.8f } });
        var acts = tensor(new float[,] { { 0 }, { 1.5f }, { 0 }, { 0.2f } });
        var x = acts.matmul(gt);
        var acc = new SyntheticMetricsAccumulator(gt * -2, gt);
        acc.Add(x, x * 0.5f, acts * 3, acts);
        var r = acc.AddTo(new SaeEvalResult());
        Assert.Equal(1.0, r.ClassificationPrecision!.Value);
        Assert.Equal(1.0, r.ClassificationRecall!.Value);
        Assert.Equal(1.0, r.ClassificationF1Score!.Value);
        Assert.Equal(1.0, r.ClassificationAccuracy!.Value);
        Assert.Equal(0.5, r.Shrinkage!.Value, 6);
        Assert.Equal(0, r.DeadLatents);
    }

    [Fact]
    public void WithoutGroundTruthActivationsTrueL0AndClassificationAreLeftOut()
    {
        var gt = tensor(new float[,] { { 1, 0 }, { 0, 1 } });
        var acc = new SyntheticMetricsAccumulator(gt, gt);
        acc.Add(gt, gt, gt, null);
        var r = acc.AddTo(new SaeEvalResult());
        Assert.Null(r.TrueL0);
        Assert.Null(r.ClassificationF1Score);
        Assert.Equal(1.0, r.SaeL0);
        var json = JsonNode.Parse(r.ToJson())!.AsObject();
        Assert.False(json.ContainsKey("true_l0"));
        Assert.False(json.ContainsKey("classification/precision"));
        Assert.True(json.ContainsKey("sae_l0"));
    }

    [Fact]
    public void AgreesWithSaeLensOnTheReferenceInput()
    {
        // bench/reference/synthetic_evals_fixture.py ran SAELens 6.37.6's calculators on these tensors in two batches.
        var j = JsonNode.Parse(File.ReadAllText(TestPaths.Data("synthetic_evals", "reference.json")))!;
        Tensor T(string name) => tensor(j[name]!.AsArray().SelectMany(r => r!.AsArray().Select(v => v!.GetValue<float>())).ToArray(),
            [j[name]!.AsArray().Count, j[name]![0]!.AsArray().Count]);
        var (gt, dec, acts, x, xHat, lat) = (T("gt_features"), T("w_dec"), T("feature_acts"), T("x"), T("x_hat"), T("latents"));
        Assert.Equal(j["best_matches"]!.AsArray().Select(v => v!.GetValue<long>()), FeatureMatching.BestMatches(dec, gt));
        var acc = new SyntheticMetricsAccumulator(dec, gt);
        var ev = new SaeMetricsAccumulator((int)x.shape[1], (int)lat.shape[1]);
        long start = 0;
        foreach (var b in j["batch_rows"]!.AsArray().Select(v => v!.GetValue<long>()))
        {
            acc.Add(x.narrow(0, start, b), xHat.narrow(0, start, b), lat.narrow(0, start, b), acts.narrow(0, start, b));
            ev.Add(x.narrow(0, start, b), xHat.narrow(0, start, b), lat.narrow(0, start, b));
            start += b;
        }
        var r = acc.AddTo(ev.Result()) with
        {
            Mcc = FeatureMatching.MeanCorrelationCoefficient(dec, gt),
            Uniqueness = FeatureMatching.FeatureUniqueness(dec, gt),
        };
        var ours = JsonNode.Parse(r.ToJson())!.AsObject();
        var expected = j["expected"]!.AsObject();
        Assert.Equal(11, expected.Count);
        foreach (var (key, value) in expected)
        {
            Assert.True(ours.ContainsKey(key), key);
            // SAELens sums in float32; ours in float64.
            Assert.True(Math.Abs(value!.GetValue<double>() - ours[key]!.GetValue<double>()) < 2e-6, $"{key}: SAELens {value} vs {ours[key]}");
        }
    }

    [Fact]
    public void SparseFeatureActivationsRoundTripAndReadRowsAcrossFiles()
    {
        var a = tensor(new float[,] { { 0, 1.5f, 0 }, { 0, 0, 0 }, { 2, 0, 0.25f } });
        var b = tensor(new float[,] { { 0, 0, 7 }, { 1, 1, 1 } });
        var sa = SparseFeatureActivations.FromDense(a);
        Assert.Equal(3, sa.NonZero);
        Assert.True(sa.Dense(0, 3).equal(a).all().item<bool>());
        Assert.True(sa.Dense(2, 1).equal(a.narrow(0, 2, 1)).all().item<bool>());
        // Selected columns (a feature may be taken twice), as dense[:, columns].
        long[] columns = [2, 0, 2];
        Assert.True(sa.Dense(0, 3, columns).equal(a.index_select(1, tensor(columns))).all().item<bool>());
        Assert.Equal(3, sa.CountPositive(0, 3));
        Assert.Equal(2, sa.CountPositive(1, 2));
        var paths = new List<string>();
        foreach (var (name, t) in new[] { ("a", a), ("b", b) })
        {
            var path = Path.Combine(_dir, name + ".safetensors");
            var tensors = SparseFeatureActivations.FromDense(t).ToTensors();
            tensors["activations"] = t;
            SaeSharp.IO.SafeTensors.Save(path, tensors);
            paths.Add(path);
        }
        var rows = SparseFeatureActivations.ReadRows(paths, 1, 3, 3)!;
        Assert.True(rows.Dense(0, 3).equal(cat([a.narrow(0, 1, 2), b.narrow(0, 0, 1)])).all().item<bool>());
        // A file without them: null.
        var plain = Path.Combine(_dir, "plain.safetensors");
        SaeSharp.IO.SafeTensors.Save(plain, new Dictionary<string, Tensor> { ["activations"] = a });
        Assert.Null(SparseFeatureActivations.ReadRows([plain], 0, 2, 3));
    }

    [Fact]
    public void SynthWritesEachRowsGroundTruthActivations()
    {
        var o = new SyntheticOptions { DIn = 8, NFeatures = 12, TrainRows = 300, EvalRows = 100, Seed = 4, NoiseStd = 0.01 };
        var files = SyntheticDataset.Write(_dir, o);
        // The same seed draws the same rows: train first, then eval (each under 8192 rows, so one draw each).
        using var gen = new SyntheticGenerator(o);
        var (trainActs, trainX) = gen.Sample(o.TrainRows);
        var (evalActs, evalX) = gen.Sample(o.EvalRows);
        var train = SparseFeatureActivations.ReadRows([files.TrainPath], 0, o.TrainRows, o.NFeatures)!;
        var eval = SparseFeatureActivations.ReadRows([files.EvalPath!], 0, o.EvalRows, o.NFeatures)!;
        Assert.True(train.Dense(0, o.TrainRows).equal(trainActs).all().item<bool>());
        Assert.True(eval.Dense(0, o.EvalRows).equal(evalActs).all().item<bool>());
        using var f = SaeSharp.IO.SafeTensorsFile.Open(files.EvalPath!);
        Assert.True(f.Read("activations").equal(evalX).all().item<bool>());
        Assert.Equal("I32", f.Info(SparseFeatureActivations.IndicesTensor).Dtype);
        Assert.Equal(new long[] { o.EvalRows + 1 }, f.Info(SparseFeatureActivations.IndptrTensor).Shape);
        _ = trainX;
    }

    [Fact]
    public void TrueDictionaryScoresMccOneAndARandomSaeScoresLow()
    {
        var o = new SyntheticOptions { DIn = 16, NFeatures = 32, TrainRows = 64, EvalRows = 2000, Seed = 11 };
        var files = SyntheticDataset.Write(_dir, o);
        var truth = SyntheticDataset.ReadFeatures(files.FeaturesPath);
        var eval = SparseFeatureActivations.ReadRows([files.EvalPath!], 0, o.EvalRows, o.NFeatures)!;
        double trueL0 = eval.Dense(0, o.EvalRows).gt(0).sum().item<long>() / (double)o.EvalRows;

        // An SAE whose encoder and decoder are the true directions: its latents are ReLU(x·Wᵀ), which for nearly
        // orthogonal directions fire mostly with their feature.
        using var perfect = new StandardSae(new SaeConfig { DIn = 16, DSae = 32 });
        perfect.InitializeWeights(new Generator(1));
        using (no_grad())
        {
            perfect.WDec.copy_(truth);
            perfect.WEnc.copy_(truth.t());
            perfect.BEnc.fill_(-0.3);
            perfect.BDec.zero_();
        }
        using var source = ActivationSplit.EvalFiles([files.EvalPath!], new() { ExpectedDIn = 16, ChunkRows = 300 });
        var r = SaeEvaluator.Evaluate(perfect, source, maxRows: 5000, batchSize: 512, groundTruthFeatures: truth);
        Assert.Equal(1.0, r.Mcc!.Value, 5);
        Assert.Equal(1.0, r.Uniqueness!.Value);
        Assert.Equal(trueL0, r.TrueL0!.Value, 12);
        Assert.True(r.ClassificationRecall > 0.6, r.ToJson());

        using var random = new StandardSae(new SaeConfig { DIn = 16, DSae = 32 });
        random.InitializeWeights(new Generator(2));
        using var source2 = ActivationSplit.EvalFiles([files.EvalPath!], new() { ExpectedDIn = 16 });
        var rr = SaeEvaluator.Evaluate(random, source2, maxRows: 5000, groundTruthFeatures: truth);
        Assert.True(rr.Mcc < 0.7, rr.ToJson());
        Assert.True(rr.ClassificationF1Score < r.ClassificationF1Score, rr.ToJson());
    }
}
