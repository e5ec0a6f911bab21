using System.Text.Json;
using SaeSharp.Activations;
using SaeSharp.IO;
using SaeSharp.Synthetic;
using static TorchSharp.torch;

namespace SaeSharp.Tests.Synthetic;

public class SyntheticTests : IDisposable
{
    private readonly string _dir = Directory.CreateTempSubdirectory("synth-").FullName;
    public void Dispose() => Directory.Delete(_dir, true);

    /// <summary><c>sae synth</c> without sizes writes what its help (and the README) states: --d-in 64, --features 256,
    /// --rows 100,000, --eval-rows 10,000, and --seed 0 and --noise 0 (the same files as given explicitly); feature i
    /// fires with probability 0.1·(i+1)^−0.5.</summary>
    [Fact]
    public void Synth_without_sizes_writes_the_defaults_its_help_states()
    {
        var help = System.Text.RegularExpressions.Regex.Replace(SaeSharp.Tests.Cli.CliRunner.Run("synth", "--help").Out, @"\s+", " ");
        foreach (var stated in new[]
                 {
                     "Activation width [default: 64]", "superposition) [default: 256]", "Training rows [default: 100000]",
                     "no eval.safetensors) [default: 10000]", "Seed [default: 0]", "noise std [default: 0]",
                     "probability 0.1·(i+1)^−0.5", "uniform in [0, 1)",
                 })
            Assert.Contains(stated, help);

        void Synth(params string[] args)
        {
            var r = SaeSharp.Tests.Cli.CliRunner.Run(["synth", .. args]);
            Assert.True(r.Exit == 0, r.Err);
        }
        long[] Shape(string dir, string file, string tensor)
        {
            var t = SafeTensors.Load(Path.Combine(_dir, dir, file));
            try { return t[tensor].shape; }
            finally { foreach (var v in t.Values) v.Dispose(); }
        }

        Synth("--out", Path.Combine(_dir, "a"), "--rows", "100", "--eval-rows", "10");
        Assert.Equal(new long[] { 100, 64 }, Shape("a", "train.safetensors", "activations"));
        Assert.Equal(new long[] { 256, 64 }, Shape("a", "features.safetensors", "features"));
        var freq = SafeTensors.Load(Path.Combine(_dir, "a", "features.safetensors"));
        try
        {
            var p = freq["frequencies"].data<float>().ToArray();
            Assert.Equal(256, p.Length);
            Assert.Equal(0.1, p[0], 6);
            Assert.Equal(0.05, p[3], 6);     // 0.1 · 4^−0.5
            Assert.Equal(0.01, p[99], 6);    // 0.1 · 100^−0.5
        }
        finally { foreach (var v in freq.Values) v.Dispose(); }

        Synth("--out", Path.Combine(_dir, "b"), "--d-in", "4", "--features", "8");
        Assert.Equal(new long[] { 100_000, 4 }, Shape("b", "train.safetensors", "activations"));
        Assert.Equal(new long[] { 10_000, 4 }, Shape("b", "eval.safetensors", "activations"));
        Synth("--out", Path.Combine(_dir, "c"), "--d-in", "4", "--features", "8", "--seed", "0", "--noise", "0");
        foreach (var f in new[] { "train.safetensors", "eval.safetensors", "features.safetensors" })
            Assert.Equal(File.ReadAllBytes(Path.Combine(_dir, "c", f)), File.ReadAllBytes(Path.Combine(_dir, "b", f)));
        Synth("--out", Path.Combine(_dir, "d"), "--d-in", "4", "--features", "8", "--seed", "1");
        Assert.NotEqual(File.ReadAllBytes(Path.Combine(_dir, "d", "train.safetensors")), File.ReadAllBytes(Path.Combine(_dir, "b", "train.safetensors")));
    }

    [Fact]
    public void DirectionsAreUnitNorm()
    {
        using var g = new SyntheticGenerator(new SyntheticOptions { DIn = 8, NFeatures = 40, Seed = 1 });
        Assert.Equal(new long[] { 40, 8 }, g.Features.shape);
        var norms = g.Features.norm(1).data<float>().ToArray();
        Assert.All(norms, n => Assert.Equal(1.0, n, 5));
    }

    [Fact]
    public void FiringFrequenciesFollowThePowerLaw()
    {
        const int n = 32, rows = 40_000;
        const double alpha = 1.0, pMax = 0.5;
        using var g = new SyntheticGenerator(new SyntheticOptions { DIn = 8, NFeatures = n, MaxFrequency = pMax, FrequencyExponent = alpha, Seed = 7 });
        var (acts, _) = g.Sample(rows);
        var fired = acts.gt(0).sum([0], type: ScalarType.Int64).data<long>().ToArray();
        var xs = new List<double>();
        var ys = new List<double>();
        for (int i = 0; i < n; i++)
        {
            double p = pMax * Math.Pow(i + 1, -alpha);
            double pHat = fired[i] / (double)rows;
            Assert.True(Math.Abs(pHat - p) < 5 * Math.Sqrt(p * (1 - p) / rows), $"feature {i}: frequency {pHat} vs {p}");
            xs.Add(Math.Log(i + 1));
            ys.Add(Math.Log(pHat));
        }
        // Least-squares slope of log frequency against log rank is −α.
        double mx = xs.Average(), my = ys.Average();
        double slope = xs.Zip(ys).Sum(t => (t.First - mx) * (t.Second - my)) / xs.Sum(v => (v - mx) * (v - mx));
        Assert.Equal(-alpha, slope, 1);
        Assert.True(Math.Abs(slope + alpha) < 0.05, $"slope {slope}");
    }

    [Fact]
    public void MagnitudesAndNoiseHaveTheRequestedDistributions()
    {
        var o = new SyntheticOptions { DIn = 16, NFeatures = 24, MaxFrequency = 0.5, FrequencyExponent = 0, Magnitude = MagnitudeDistribution.Exponential, MagnitudeMean = 2.0, NoiseStd = 0.1, Seed = 3 };
        using var g = new SyntheticGenerator(o);
        var (acts, x) = g.Sample(5000);
        Assert.True(acts.ge(0).all().item<bool>());
        var active = acts.masked_select(acts.gt(0));
        Assert.Equal(2.0, active.mean().item<float>(), 1);               // exponential mean
        Assert.Equal(0.5, acts.gt(0).to(ScalarType.Float32).mean().item<float>(), 1);
        var noise = x - acts.matmul(g.Features);
        Assert.Equal(0.1, noise.std().item<float>(), 2);
        Assert.Equal(0.0, noise.mean().item<float>(), 2);

        using var u = new SyntheticGenerator(o with { Magnitude = MagnitudeDistribution.Uniform, MagnitudeLow = 1, MagnitudeHigh = 3, NoiseStd = 0 });
        var (ua, ux) = u.Sample(3000);
        var uActive = ua.masked_select(ua.gt(0));
        Assert.True(uActive.min().item<float>() >= 1 && uActive.max().item<float>() < 3);
        Assert.Equal(2.0, uActive.mean().item<float>(), 1);
        Assert.True(ux.allclose(ua.matmul(u.Features), 1e-5, 1e-5));
    }

    [Fact]
    public void GroupedFeaturesCoFire()
    {
        using var g = new SyntheticGenerator(new SyntheticOptions { DIn = 8, NFeatures = 20, CorrelatedGroups = 3, GroupSize = 3, MaxFrequency = 0.4, Seed = 11 });
        Assert.Equal(3, g.Groups.Count);
        Assert.Equal(9, g.Groups.SelectMany(m => m).Distinct().Count());
        var (acts, _) = g.Sample(4000);
        var fire = acts.gt(0);
        var p = g.Frequencies.data<double>().ToArray();
        foreach (var members in g.Groups)
        {
            var first = fire[.., members[0]];
            foreach (var m in members.Skip(1)) Assert.True(fire[.., m].equal(first).all().item<bool>());
            double q = p[members[0]];
            Assert.All(members, m => Assert.Equal(q, p[m]));
            // A group fires at the mean of its members' power-law frequencies 0.4·(rank)^−0.5 (the default exponent).
            Assert.Equal(members.Average(m => 0.4 * Math.Pow(m + 1, -0.5)), q, 12);
            double observed = first.to(ScalarType.Float32).mean().item<float>();
            Assert.True(Math.Abs(observed - q) < 5 * Math.Sqrt(q * (1 - q) / 4000));
        }
        // An ungrouped pair fires together only at the rate of independent events.
        var free = Enumerable.Range(0, 20).Except(g.Groups.SelectMany(m => m)).Take(2).ToArray();
        Assert.All(Enumerable.Range(0, 20).Except(g.Groups.SelectMany(m => m)), i => Assert.Equal(0.4 * Math.Pow(i + 1, -0.5), p[i], 12));
        double both = (fire[.., free[0]] & fire[.., free[1]]).to(ScalarType.Float32).mean().item<float>();
        Assert.True(Math.Abs(both - p[free[0]] * p[free[1]]) < 0.02);
    }

    [Fact]
    public void SameSeedSameDataOtherSeedOtherData()
    {
        var o = new SyntheticOptions { DIn = 4, NFeatures = 10, Seed = 5 };
        using var a = new SyntheticGenerator(o);
        using var b = new SyntheticGenerator(o);
        using var c = new SyntheticGenerator(o with { Seed = 6 });
        Assert.True(a.SampleActivations(50, chunkRows: 16).equal(b.SampleActivations(50, chunkRows: 16)).all().item<bool>());
        Assert.False(a.Features.allclose(c.Features));
    }

    [Fact]
    public void WritesTrainEvalAndFeatureFiles()
    {
        var o = new SyntheticOptions { DIn = 6, NFeatures = 15, TrainRows = 300, EvalRows = 50, Seed = 2 };
        var files = SyntheticDataset.Write(_dir, o);
        Assert.Equal(Path.Combine(_dir, "train.safetensors"), files.TrainPath);
        using (var st = SafeTensorsFile.Open(files.TrainPath))
        {
            Assert.Equal(new long[] { 300, 6 }, st.Info("activations").Shape);
            Assert.Equal(o, JsonSerializer.Deserialize<SyntheticOptions>(st.Metadata["synthetic_options"]));
        }
        using (var st = SafeTensorsFile.Open(files.EvalPath!))
            Assert.Equal(new long[] { 50, 6 }, st.Info("activations").Shape);
        var features = SyntheticDataset.ReadFeatures(files.FeaturesPath);
        using var g = new SyntheticGenerator(o);
        Assert.True(features.equal(g.Features).all().item<bool>());
        var train = SafeTensors.Load(files.TrainPath)["activations"];
        Assert.True(train.equal(g.SampleActivations(300)).all().item<bool>());

        // The file source reads it as a dataset.
        using var src = new ActivationFileSource(files.TrainPath, new() { ExpectedDIn = 6, ChunkRows = 64 });
        Assert.Equal(300, src.Rows);
    }

    [Fact]
    public void InvalidOptionsAreNamed()
    {
        Assert.Contains("max_frequency", Assert.Throws<SaeSharpException>(() => new SyntheticOptions { MaxFrequency = 1.5 }.Validate()).Message);
        Assert.Contains("n_features is 5", Assert.Throws<SaeSharpException>(() => new SyntheticOptions { NFeatures = 5, DIn = 2, CorrelatedGroups = 3, GroupSize = 2 }.Validate()).Message);
    }
}
