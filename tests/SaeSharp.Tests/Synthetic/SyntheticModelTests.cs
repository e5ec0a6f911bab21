using System.Text.Json.Nodes;
using SaeSharp.IO;
using SaeSharp.Synthetic;
using SaeSharp.Tests.Tokenizers;
using static TorchSharp.torch;

namespace SaeSharp.Tests.Synthetic;

/// <summary>
/// <see cref="SyntheticModel"/> against SAELens 6.37.6's own SyntheticModel on the folders in tests/data/synthetic_model
/// (written by SAELens's save(); stats.json holds what SAELens derives on loading and statistics of 200,000 rows its
/// sample_with_features drew; bench/reference/synthetic_model_fixture.py). Deterministic values must agree exactly; the
/// sampled statistics of 200,000 SaeSharp rows must agree within 5 standard errors of the difference of two independent
/// estimates (binomial for rates, CLT with the sample's own fourth moment for magnitudes, batch means for correlations).
/// 5σ makes a false alarm over the ~700 comparisons below about 4·10⁻⁴ likely, while a wrong threshold, magnitude or
/// hierarchy rule moves some statistic by tens of σ (the seeds are fixed, so the test is deterministic anyway).
/// </summary>
public class SyntheticModelTests : IDisposable
{
    private readonly string _dir = Directory.CreateTempSubdirectory("synthetic-model-").FullName;
    public void Dispose() => Directory.Delete(_dir, true);

    public static TheoryData<string> Models => new() { "plain", "correlated", "hierarchy", "hierarchy_rescale" };

    private static string ModelDir(string name) => TestPaths.Data("synthetic_model", name);
    private static JsonNode Stats(string name) => JsonNode.Parse(File.ReadAllText(Path.Combine(ModelDir(name), "stats.json")))!;
    private static bool Same(Tensor a, Tensor b)
    {
        using var scope = NewDisposeScope();
        return a.shape.SequenceEqual(b.shape) && a.dtype == b.dtype && a.eq(b).all().item<bool>();
    }

    /// <summary>Equal, or with <paramref name="ulps"/> &gt; 0 at most that many float32 steps apart.</summary>
    private static void Close(float[] expected, float[] actual, string what, int ulps = 0)
    {
        Assert.Equal(expected.Length, actual.Length);
        var diffs = Enumerable.Range(0, expected.Length).Where(i => Math.Abs(BitConverter.SingleToInt32Bits(actual[i]) - BitConverter.SingleToInt32Bits(expected[i])) > ulps)
            .Select(i => $"{i}: {expected[i]:R} vs {actual[i]:R} ({(BitConverter.SingleToInt32Bits(actual[i]) - BitConverter.SingleToInt32Bits(expected[i]))} ulp)").ToList();
        Assert.True(diffs.Count == 0, what + "\n" + string.Join("\n", diffs.Take(12)));
    }

    private static float[] Floats(JsonNode? n) => n!.AsArray().Select(v => (float)v!.GetValue<double>()).ToArray();
    private static double[] Doubles(JsonNode? n) => n!.AsArray().Select(v => v!.GetValue<double>()).ToArray();

    [Theory]
    [MemberData(nameof(Models))]
    public void Loading_gives_SAELens_weights_probabilities_thresholds_and_magnitudes_exactly(string name)
    {
        using var model = SyntheticModel.Load(ModelDir(name));
        var stats = Stats(name);
        var file = SafeTensors.Load(Path.Combine(ModelDir(name), SyntheticModel.WeightsFileName));
        try
        {
            Assert.True(Same(model.FeatureVectors, file["feature_vectors"]), "feature_vectors bit-exact");
            Assert.True(Same(model.Bias, file["bias"]), "bias bit-exact");
            Assert.True(Same(model.FiringProbabilities, file["firing_probabilities"]), "firing_probabilities bit-exact");
            if (file.TryGetValue("correlation_factor", out var factor))
            {
                Assert.True(Same(model.CorrelationFactor!, factor));
                Assert.True(Same(model.CorrelationDiag!, file["correlation_diag"]));
            }
            else Assert.Null(model.CorrelationFactor);
        }
        finally { foreach (var t in file.Values) t.Dispose(); }

        // stats.json stores float32 values to 9 significant digits, which round-trip exactly.
        Close(Floats(stats["firing_probabilities"]), model.FiringProbabilities.data<float>().ToArray(), "firing_probabilities");
        // Constant and folded-normal (TorchSharp's randn from the same seed gives torch 1.13's draws) magnitudes are
        // bit-exact; the correlated model's exponential means (float32 pow) and linear stds (linspace) are within 1 ulp,
        // as libtorch 2.x's kernels round a few elements differently from torch 1.13's.
        Close(Floats(stats["mean_firing_magnitudes"]), model.MeanMagnitudes.data<float>().ToArray(), "mean magnitudes", name == "correlated" ? 1 : 0);
        Close(Floats(stats["std_firing_magnitudes"]), model.StdMagnitudes.data<float>().ToArray(), "std magnitudes", name == "correlated" ? 1 : 0);
        if (stats["thresholds"] is JsonArray thresholds)
        {
            var ours = model.Thresholds!.data<float>().ToArray();
            var theirs = Floats(thresholds);
            for (int i = 0; i < ours.Length; i++) Assert.True(Math.Abs(ours[i] - theirs[i]) <= 2e-6, $"threshold {i}: {ours[i]} vs SAELens {theirs[i]}");
        }
        else Assert.Null(model.Thresholds);
        // The config's own generator (before SAELens's hierarchy compensation; sampling uses the saved probabilities
        // above): within 2 ulp (torch 1.13's and libtorch 2.x's float32 pow and linspace round a few elements differently).
        using var generated = model.Config.FiringProbability.Generate(model.NumFeatures, model.Config.Seed);
        Close(Floats(stats["config_firing_probabilities"]), generated.data<float>().ToArray(), "config firing probabilities", PowUlps);
        Assert.Equal(name.StartsWith("hierarchy", StringComparison.Ordinal), model.Hierarchy is not null);
    }

    [Fact]
    public void Hierarchy_json_is_read_as_SAELens_wrote_it()
    {
        using var model = SyntheticModel.Load(ModelDir("hierarchy"));
        var h = model.Hierarchy!;
        // 4 roots with 3 children each, each with 3 children (52 features); SAELens counted the same edges and groups.
        Assert.Equal(4, h.Roots.Count);
        Assert.Equal(Stats("hierarchy")["hierarchy_edges"]!.GetValue<int>(), h.Edges.Count);
        Assert.Equal(Stats("hierarchy")["mutually_exclusive_groups"]!.GetValue<int>(), h.MutuallyExclusiveGroups.Count);
        Assert.All(h.MutuallyExclusiveGroups, g => Assert.Equal(3, g.Length));
        Assert.Empty(h.RescalingParents);
        using var rescale = SyntheticModel.Load(ModelDir("hierarchy_rescale"));
        Assert.NotEmpty(rescale.Hierarchy!.RescalingParents);
        Assert.Equal(Stats("hierarchy_rescale")["hierarchy_edges"]!.GetValue<int>(), rescale.Hierarchy.Edges.Count);
    }

    /// <summary>Generating from the config alone rebuilds what SAELens built from it (and saved): the hierarchy exactly
    /// (Python's Mersenne Twister reproduced), the randn vectors, bias and correlation factor from the same seeds, and
    /// the probabilities with the hierarchy compensation.</summary>
    [Theory]
    [MemberData(nameof(Models))]
    public void Generating_from_the_config_rebuilds_SAELens_model(string name)
    {
        using var saved = SyntheticModel.Load(ModelDir(name));
        using var generated = SyntheticModel.FromConfig(saved.Config);
        if (saved.Hierarchy is { } h)
        {
            Assert.Equal(Describe(h.Roots), Describe(generated.Hierarchy!.Roots));
            Assert.Equal(h.Edges, generated.Hierarchy.Edges);
        }
        else Assert.Null(generated.Hierarchy);
        // float32 pow rounds differently per libtorch version and per CPU kind (its vector kernels): 2 ulp on the Intel
        // Xeons, 6 on an AMD Zen 4; a wrong formula or rank is off by far more.
        var maxProbUlps = MaxUlps(saved.FiringProbabilities, generated.FiringProbabilities);
        Assert.True(maxProbUlps <= PowUlps, $"firing probabilities differ by up to {maxProbUlps} ulp");
        if (saved.Config.Orthogonalization is null)
        {
            Assert.True(Same(saved.FeatureVectors, generated.FeatureVectors), "feature vectors bit-exact");
        }
        else
        {
            // 50 Adam steps from the same start: float rounding of torch 1.13 and libtorch 2.x differs (measured 1.8·10⁻⁷).
            using var diff = saved.FeatureVectors.sub(generated.FeatureVectors).abs().max();
            Assert.True(diff.item<float>() < 1e-5, $"orthogonalised vectors differ by up to {diff.item<float>()}");
        }
        var biasUlps = MaxUlps(saved.Bias, generated.Bias);
        Assert.True(biasUlps <= 1, $"bias differs by up to {biasUlps} ulp");
        if (saved.CorrelationFactor is not null)
        {
            var factorUlps = MaxUlps(saved.CorrelationFactor, generated.CorrelationFactor!);
            Assert.True(factorUlps <= 1, $"correlation_factor differs by up to {factorUlps} ulp");
            // diag = 1 − Σ factor² cancels: its rounding is that of numbers near 1 (128 ulp of a small diag on an AMD Zen 4
            // is 2 ulp of 1), so it is compared on that scale.
            using var diagDiff = saved.CorrelationDiag!.sub(generated.CorrelationDiag!).abs().max();
            Assert.True(diagDiff.item<float>() <= 4 * (MathF.BitIncrement(1f) - 1f), $"correlation_diag differs by up to {diagDiff.item<float>()}");
        }
        else Assert.Null(generated.CorrelationFactor);
    }

    private static string Describe(IEnumerable<HierarchyNode> nodes) =>
        string.Join(",", nodes.Select(n => $"{n.FeatureIndex}{(n.MutuallyExclusiveChildren ? "x" : "")}{(n.ScaleChildrenByParent ? "R" : "")}({Describe(n.Children)})"));

    /// <summary>How far float32 pow may round from torch 1.13's on the fixtures' machine (libtorch version and CPU kind).</summary>
    private const int PowUlps = 8;

    private static long MaxUlps(Tensor a, Tensor b)
    {
        Assert.Equal(a.shape, b.shape);
        var x = a.data<float>().ToArray();
        var y = b.data<float>().ToArray();
        return x.Length == 0 ? 0 : x.Zip(y).Max(p => Math.Abs((long)BitConverter.SingleToInt32Bits(p.First) - BitConverter.SingleToInt32Bits(p.Second)));
    }

    private sealed class Tally(int n)
    {
        public long Rows;
        public readonly long[] Fires = new long[n];
        public readonly double[] S1 = new double[n], S2 = new double[n], S3 = new double[n], S4 = new double[n];
        public readonly long[,] Both = new long[n, n];
        public long ChildWithoutParent, MutualExclusionConflicts;
        /// <summary>Per 10,000-row batch, the firing correlation of each pair asked for.</summary>
        public readonly List<double[]> BatchCorrelations = [];
        public double MaxHiddenError;
    }

    private static double Phi(double pi, double pj, double pij) => (pij - pi * pj) / Math.Sqrt(pi * (1 - pi) * pj * (1 - pj));

    private static Tally Sample(SyntheticModel model, long rows, ulong seed, (int I, int J)[] pairs)
    {
        int n = model.NumFeatures;
        var t = new Tally(n);
        using var gen = new TorchSharp.torch.Generator(seed);
        using var w = model.FeatureVectors.to(ScalarType.Float64);
        using var b = model.Bias.to(ScalarType.Float64);
        for (long done = 0; done < rows; done += 10_000)
        {
            using var scope = NewDisposeScope();
            var (hidden, acts) = model.SampleWithFeatures(10_000, gen);
            // hidden = acts · W + b, recomputed in float64.
            var reference = acts.to(ScalarType.Float64).matmul(w).add(b, TorchScalars.One);
            t.MaxHiddenError = Math.Max(t.MaxHiddenError, hidden.to(ScalarType.Float64).sub(reference).abs().max().item<double>());
            var a = acts.data<float>().ToArray();
            var batch = new long[pairs.Length, 3];
            for (int r = 0; r < 10_000; r++)
            {
                for (int q = 0; q < pairs.Length; q++)
                {
                    bool fi = a[r * n + pairs[q].I] > 0, fj = a[r * n + pairs[q].J] > 0;
                    if (fi) batch[q, 0]++;
                    if (fj) batch[q, 1]++;
                    if (fi && fj) batch[q, 2]++;
                }
                var row = new ArraySegment<float>(a, r * n, n);
                for (int i = 0; i < n; i++)
                {
                    if (!(row[i] > 0)) continue;
                    double v = row[i];
                    t.Fires[i]++;
                    t.S1[i] += v;
                    t.S2[i] += v * v;
                    t.S3[i] += v * v * v;
                    t.S4[i] += v * v * v * v;
                    for (int j = i + 1; j < n; j++) if (row[j] > 0) t.Both[i, j]++;
                }
                if (model.Hierarchy is { } h)
                {
                    foreach (var (parent, child) in h.Edges)
                        if (row[child] > 0 && !(row[parent] > 0)) t.ChildWithoutParent++;
                    foreach (var g in h.MutuallyExclusiveGroups)
                        if (g.Count(f => row[f] > 0) > 1) t.MutualExclusionConflicts++;
                }
            }
            t.BatchCorrelations.Add(Enumerable.Range(0, pairs.Length).Select(q => Phi(batch[q, 0] / 1e4, batch[q, 1] / 1e4, batch[q, 2] / 1e4)).ToArray());
        }
        t.Rows = rows;
        return t;
    }

    [Theory]
    [MemberData(nameof(Models))]
    public void Sampled_rows_match_SAELens_statistics_and_obey_the_hierarchy(string name)
    {
        using var model = SyntheticModel.Load(ModelDir(name));
        var stats = Stats(name);
        const double Z = 5;
        long rows = 200_000, theirRows = stats["rows"]!.GetValue<long>();
        var pairs = stats["pairs"]!.AsArray().Select(p => (p!["i"]!.GetValue<int>(), p["j"]!.GetValue<int>())).ToArray();
        var t = Sample(model, rows, seed: 11, pairs);
        var rate = Doubles(stats["firing_rate"]);
        var mean = Doubles(stats["magnitude_mean"]);
        var std = Doubles(stats["magnitude_std"]);
        var failures = new List<string>();
        for (int i = 0; i < model.NumFeatures; i++)
        {
            double ours = (double)t.Fires[i] / rows;
            // Binomial: the SE of the difference of two independent rates, at the pooled rate (at least 10/N, where the
            // normal approximation of a handful of events would be too tight).
            double pooled = Math.Max((ours * rows + rate[i] * theirRows) / (rows + theirRows), 10.0 / rows);
            double se = Math.Sqrt(pooled * (1 - pooled) * (1.0 / rows + 1.0 / theirRows));
            if (Math.Abs(ours - rate[i]) > Z * se) failures.Add($"feature {i}: firing rate {ours:G5} vs SAELens {rate[i]:G5} (±{Z}·{se:G3})");
            long nOurs = t.Fires[i], nTheirs = (long)Math.Round(rate[i] * theirRows);
            if (nOurs < 100 || nTheirs < 100) continue;
            double m = t.S1[i] / nOurs, v = Math.Max(t.S2[i] / nOurs - m * m, 0), s = Math.Sqrt(v);
            // CLT: mean ± s/√n; the standard deviation ± √((μ₄ − σ⁴) / (4σ²n)), μ₄ the fourth central moment estimated here.
            double seMean = s * Math.Sqrt(1.0 / nOurs + 1.0 / nTheirs);
            if (Math.Abs(m - mean[i]) > Z * seMean + 1e-6) failures.Add($"feature {i}: mean magnitude {m:G5} vs SAELens {mean[i]:G5} (±{Z}·{seMean:G3})");
            if (v > 1e-10)
            {
                double mu4 = t.S4[i] / nOurs - 4 * m * t.S3[i] / nOurs + 6 * m * m * t.S2[i] / nOurs - 3 * m * m * m * m;
                double seStd = Math.Sqrt(Math.Max(mu4 - v * v, 0) / (4 * v) * (1.0 / nOurs + 1.0 / nTheirs));
                if (Math.Abs(s - std[i]) > Z * seStd + 1e-6) failures.Add($"feature {i}: magnitude std {s:G5} vs SAELens {std[i]:G5} (±{Z}·{seStd:G3})");
            }
            else if (Math.Abs(s - std[i]) > 1e-4) failures.Add($"feature {i}: magnitude std {s:G5} vs SAELens {std[i]:G5}");
        }
        for (int q = 0; q < pairs.Length; q++)
        {
            var pair = stats["pairs"]![q]!;
            var (i, j) = pairs[q];
            double r = pair["firing_correlation"]!.GetValue<double>(), both = pair["both_rate"]!.GetValue<double>();
            double pi = (double)t.Fires[i] / rows, pj = (double)t.Fires[j] / rows, pij = (double)t.Both[i, j] / rows;
            // Both firing: binomial, as the rates.
            double pooled = Math.Max((pij * rows + both * theirRows) / (rows + theirRows), 10.0 / rows);
            double seBoth = Math.Sqrt(pooled * (1 - pooled) * (1.0 / rows + 1.0 / theirRows));
            if (Math.Abs(pij - both) > Z * seBoth) failures.Add($"features {i},{j}: both fire in {pij:G5} vs SAELens {both:G5} (±{Z}·{seBoth:G3})");
            // The correlation of two indicators is not bivariate normal ((1 − r²)/√N is too tight for a parent and its
            // child): its standard error comes from the spread of the 20 batch correlations (batch means), the same for
            // SAELens's 200,000 rows, so the difference has √2 times that.
            double ours = Phi(pi, pj, pij);
            var batches = t.BatchCorrelations.Select(b => b[q]).ToArray();
            double batchMean = batches.Average();
            double se = Math.Sqrt(2 * batches.Sum(b => (b - batchMean) * (b - batchMean)) / (batches.Length - 1) / batches.Length);
            if (Math.Abs(ours - r) > Z * se + 1e-9) failures.Add($"features {i},{j}: firing correlation {ours:F4} vs SAELens {r:F4} (±{Z}·{se:G3})");
            if (Math.Abs(r) > 0.05 && Math.Sign(ours) != Math.Sign(r)) failures.Add($"features {i},{j}: correlation sign {ours:F4} vs SAELens {r:F4}");
        }
        Assert.True(failures.Count == 0, string.Join("\n", failures));
        // Correlated models have strongly correlated pairs, which the copula must reproduce (independent firing gives ~0).
        if (name is "correlated" or "hierarchy_rescale")
            Assert.Contains(stats["pairs"]!.AsArray(), p => Math.Abs(p!["firing_correlation"]!.GetValue<double>()) > 0.25);
        Assert.Equal(0, stats["child_without_parent"]!.GetValue<long>());
        Assert.Equal(0, t.ChildWithoutParent);
        Assert.Equal(0, t.MutualExclusionConflicts);
        Assert.True(t.MaxHiddenError < 1e-5, $"hidden − (acts·W + b) up to {t.MaxHiddenError}");
    }
}

/// <summary>Malformed SyntheticModel folders: each refused with an error naming the file and the field.</summary>
public class SyntheticModelFileErrorTests : IDisposable
{
    private readonly string _dir = Directory.CreateTempSubdirectory("synthetic-model-bad-").FullName;
    public void Dispose() => Directory.Delete(_dir, true);

    /// <summary>A copy of the plain model (or, with <paramref name="source"/>, another) to break.</summary>
    private string Copy(string name, string source = "plain")
    {
        var dir = Path.Combine(_dir, name);
        Directory.CreateDirectory(dir);
        foreach (var f in Directory.GetFiles(TestPaths.Data("synthetic_model", source)))
            File.Copy(f, Path.Combine(dir, Path.GetFileName(f)));
        return dir;
    }

    private static void Fails(string dir, params string[] fragments)
    {
        var e = Assert.Throws<SaeSharpException>(() => SyntheticModel.Load(dir).Dispose());
        foreach (var f in fragments) Assert.Contains(f, e.Message);
    }

    /// <summary>Rewrites the weights with <paramref name="edit"/> applied to the tensors.</summary>
    private static void EditWeights(string dir, Action<Dictionary<string, Tensor>> edit)
    {
        var path = Path.Combine(dir, SyntheticModel.WeightsFileName);
        var t = SafeTensors.Load(path);
        try
        {
            edit(t);
            SafeTensors.Save(path, t);
        }
        finally { foreach (var v in t.Values) v.Dispose(); }
    }

    private static void EditConfig(string dir, Func<string, string> edit)
    {
        var path = Path.Combine(dir, SyntheticModelConfig.FileName);
        File.WriteAllText(path, edit(File.ReadAllText(path)));
    }

    [Fact]
    public void Missing_files_are_named()
    {
        Fails(Path.Combine(_dir, "nowhere"), "nowhere", "not found");
        var noConfig = Copy("no-config");
        File.Delete(Path.Combine(noConfig, SyntheticModelConfig.FileName));
        Fails(noConfig, SyntheticModelConfig.FileName, "not found");
        var noWeights = Copy("no-weights");
        File.Delete(Path.Combine(noWeights, SyntheticModel.WeightsFileName));
        Fails(noWeights, SyntheticModel.WeightsFileName, "not found");
        var noTensor = Copy("no-bias");
        EditWeights(noTensor, t => { t["bias"].Dispose(); t.Remove("bias"); });
        Fails(noTensor, SyntheticModel.WeightsFileName, "'bias' missing");
        var halfCorrelation = Copy("half-correlation", "correlated");
        EditWeights(halfCorrelation, t => { t["correlation_diag"].Dispose(); t.Remove("correlation_diag"); });
        Fails(halfCorrelation, "'correlation_diag' missing");
    }

    [Fact]
    public void Wrong_shapes_and_bad_values_are_refused_before_use()
    {
        var shape = Copy("shape");
        EditWeights(shape, t => { var old = t["feature_vectors"]; t["feature_vectors"] = old.narrow(1, 0, 8).contiguous(); old.Dispose(); });
        Fails(shape, SyntheticModel.WeightsFileName, "'feature_vectors' has shape [64, 8], expected [64, 16]");
        var nan = Copy("nan");
        EditWeights(nan, t => t["feature_vectors"][3, 5] = float.NaN);
        Fails(nan, "'feature_vectors' holds NaN");
        var prob = Copy("prob");
        EditWeights(prob, t => t["firing_probabilities"][0] = 1.5f);
        Fails(prob, "'firing_probabilities' has values outside [0, 1]");
        var diag = Copy("diag", "correlated");
        EditWeights(diag, t => t["correlation_diag"][2] = -0.1f);
        Fails(diag, "'correlation_diag' must be positive");
    }

    [Fact]
    public void Malformed_configs_name_the_field()
    {
        var noFeatures = Copy("no-features");
        EditConfig(noFeatures, s => s.Replace("\"num_features\": 64,", ""));
        Fails(noFeatures, SyntheticModelConfig.FileName, "num_features: missing");
        var generator = Copy("generator");
        EditConfig(generator, s => s.Replace("\"zipfian\"", "\"lognormal\""));
        Fails(generator, "firing_probability.generator_name", "lognormal");
        var dtype = Copy("dtype");
        EditConfig(dtype, s => s.Replace("\"float32\"", "\"float64\""));
        Fails(dtype, "dtype", "float64");
        var json = Copy("json");
        EditConfig(json, s => s[..^3]);
        Fails(json, SyntheticModelConfig.FileName, "not valid JSON");
    }

    [Fact]
    public void Malformed_hierarchies_name_the_node()
    {
        var range = Copy("range", "hierarchy");
        var path = Path.Combine(range, SyntheticHierarchy.FileName);
        File.WriteAllText(path, File.ReadAllText(path).Replace("\"feature_index\": 16,", "\"feature_index\": 99,"));
        Fails(range, SyntheticHierarchy.FileName, "feature_index 99 is out of range 0..63");
        var twice = Copy("twice", "hierarchy");
        path = Path.Combine(twice, SyntheticHierarchy.FileName);
        File.WriteAllText(path, File.ReadAllText(path).Replace("\"feature_index\": 16,", "\"feature_index\": 0,"));
        Fails(twice, "feature_index 0 appears more than once");
        var lonely = Copy("lonely", "hierarchy");
        File.WriteAllText(Path.Combine(lonely, SyntheticHierarchy.FileName),
            """{"roots": [{"feature_index": 0, "mutually_exclusive_children": true, "children": [{"feature_index": 1}]}]}""");
        Fails(lonely, "feature_index=0", "at least 2 children");
        var notArray = Copy("not-array", "hierarchy");
        File.WriteAllText(Path.Combine(notArray, SyntheticHierarchy.FileName), """{"roots": {}}""");
        Fails(notArray, SyntheticHierarchy.FileName, "roots");
    }
}
