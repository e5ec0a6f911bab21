using System.Globalization;
using SaeSharp.Analysis;
using SaeSharp.Interop;
using SaeSharp.IO;
using SaeSharp.Tests.Cli;
using static TorchSharp.torch;

namespace SaeSharp.Tests.Analysis;

/// <summary><c>sae logit-stats</c>: its table, CSV and pictures, and a token set it cannot score refused before anything is written.</summary>
public class LogitStatsCliTests : IDisposable
{
    private readonly AnalysisFixture _fx = new();

    public void Dispose() => _fx.Dispose();

    [Fact]
    public void Csv_has_every_feature_and_the_table_ranks_the_most_skewed_first()
    {
        string csv = Path.Combine(_fx.Dir, "stats.csv");
        var (exit, stdout, err) = CliRunner.Run("logit-stats", "--sae", _fx.SaeDir, "--model", _fx.ModelDir, "--top", "3",
            "--token-set", "space=Ġ", "--token-words", "animals=cat,dog", "--csv", csv, "--plot", Path.Combine(_fx.Dir, "plots"));
        Assert.True(exit == 0, err);
        foreach (var (name, w, h) in new[]
        {
            (LogitStatsPlots.SkewnessFile, LogitStatsPlots.HistogramWidth, LogitStatsPlots.HistogramHeight),
            (LogitStatsPlots.KurtosisFile, LogitStatsPlots.HistogramWidth, LogitStatsPlots.HistogramHeight),
            (LogitStatsPlots.ScatterFile, LogitStatsPlots.ScatterWidth, LogitStatsPlots.ScatterHeight),
            (LogitStatsPlots.ManhattanFile, LogitStatsPlots.ManhattanWidth, LogitStatsPlots.ManhattanHeight),
        })
        {
            using var png = SkiaSharp.SKBitmap.Decode(Path.Combine(_fx.Dir, "plots", name));
            Assert.True(png is not null, name);
            Assert.Equal((w, h), (png.Width, png.Height));
        }
        Assert.Contains("4 pictures: ", stdout);
        var lines = File.ReadAllLines(csv);
        Assert.Equal("feature,mean,std,skewness,kurtosis,space,animals", lines[0]);
        Assert.Equal(AnalysisFixture.DSae + 1, lines.Length);
        var rows = lines.Skip(1).Select(l => l.Split(',')).ToList();
        Assert.Equal(Enumerable.Range(0, AnalysisFixture.DSae).Select(i => i.ToString(CultureInfo.InvariantCulture)), rows.Select(r => r[0]));
        foreach (var r in rows)
        {
            double kurt = double.Parse(r[4], CultureInfo.InvariantCulture), skew = double.Parse(r[3], CultureInfo.InvariantCulture);
            Assert.True(kurt >= skew * skew + 1 - 1e-9, $"feature {r[0]}: kurtosis {kurt} below skewness² + 1 (Pearson's inequality)");
            foreach (var e in r[5..]) Assert.InRange(double.Parse(e, CultureInfo.InvariantCulture), 0, 1);
        }
        // In a pipe: the title, the header, then the 3 most skewed features in descending order.
        var table = stdout.Split('\n').SkipWhile(l => !l.StartsWith("feature\tstd", StringComparison.Ordinal)).Skip(1).Take(3)
            .Select(l => l.Split('\t')).ToList();
        var expected = rows.OrderByDescending(r => double.Parse(r[3], CultureInfo.InvariantCulture)).Take(3).Select(r => r[0]);
        Assert.Equal(expected, table.Select(t => t[0]));
        Assert.Contains("enrichment: animals", stdout);
    }

    [Fact]
    public void A_sparsity_file_beside_the_SAE_is_its_log_feature_sparsity_in_the_csv_and_info()
    {
        // SAELens's from_pretrained_with_cfg_and_sparsity: sparsity.safetensors, key 'sparsity', log10 firing frequency.
        // Absent: no column, and info says so.
        string csv = Path.Combine(_fx.Dir, "none.csv");
        var (exit, stdout, err) = CliRunner.Run("logit-stats", "--sae", _fx.SaeDir, "--model", _fx.ModelDir, "--top", "2", "--csv", csv);
        Assert.True(exit == 0, err);
        Assert.Equal("feature,mean,std,skewness,kurtosis", File.ReadLines(csv).First());
        (exit, stdout, err) = CliRunner.Run("info", _fx.SaeDir);
        Assert.True(exit == 0, err);
        Assert.Contains("log_feature_sparsity\tnone (no sparsity.safetensors)", stdout);

        // Feature i at log10 frequency −i/2, feature 11 never firing (−inf): min −5 and median −2.5 of the 11 finite values.
        float[] log = [.. Enumerable.Range(0, AnalysisFixture.DSae).Select(i => i == 11 ? float.NegativeInfinity : -i / 2f)];
        using (var t = tensor(log)) SafeTensors.Save(Path.Combine(_fx.SaeDir, "sparsity.safetensors"), new Dictionary<string, Tensor> { ["sparsity"] = t });
        using (var sae = SaeLoader.Load(_fx.SaeDir)) Assert.Equal(log, sae.LogFeatureSparsity);
        csv = Path.Combine(_fx.Dir, "with.csv");
        (exit, _, err) = CliRunner.Run("logit-stats", "--sae", _fx.SaeDir, "--model", _fx.ModelDir, "--top", "2", "--token-words", "animals=cat,dog", "--csv", csv);
        Assert.True(exit == 0, err);
        var lines = File.ReadAllLines(csv);
        Assert.Equal("feature,mean,std,skewness,kurtosis,log_feature_sparsity,animals", lines[0]);
        foreach (var r in lines.Skip(1).Select(l => l.Split(',')))
        {
            int f = int.Parse(r[0], CultureInfo.InvariantCulture);
            Assert.Equal(f == 11 ? "-Infinity" : (-f / 2.0).ToString("R", CultureInfo.InvariantCulture), r[5]);
        }
        (exit, stdout, err) = CliRunner.Run("info", _fx.SaeDir);
        Assert.True(exit == 0, err);
        Assert.Contains("log_feature_sparsity\tmin -5, median -2.5, 1 not finite (sparsity.safetensors)", stdout);

        // A file of another size is an error naming it.
        using (var t = tensor(new float[] { -1, -2 })) SafeTensors.Save(Path.Combine(_fx.SaeDir, "sparsity.safetensors"), new Dictionary<string, Tensor> { ["sparsity"] = t });
        (exit, _, err) = CliRunner.Run("info", _fx.SaeDir);
        Assert.Equal(1, exit);
        Assert.Contains("sparsity.safetensors: tensor 'sparsity' has shape [2], expected [12] (d_sae)", err);
    }

    [Fact]
    public void A_token_set_without_tokens_is_refused_naming_it_before_anything_is_written()
    {
        string csv = Path.Combine(_fx.Dir, "none.csv");
        string plots = Path.Combine(_fx.Dir, "none-plots");
        var (exit, stdout, err) = CliRunner.Run("logit-stats", "--sae", _fx.SaeDir, "--model", _fx.ModelDir, "--token-set", "nothing=zzzz", "--csv", csv,
            "--plot", plots);
        Assert.Equal(1, exit);
        Assert.Contains("token set 'nothing': 0 of", err);
        Assert.DoesNotContain("skewness", stdout);
        Assert.False(File.Exists(csv));
        Assert.False(Directory.Exists(plots));
        (exit, _, err) = CliRunner.Run("logit-stats", "--sae", _fx.SaeDir, "--model", _fx.ModelDir, "--token-set", "novalue");
        Assert.Equal(1, exit);
        Assert.Contains("--token-set novalue: expected NAME=VALUE", err);
        // A crosscoder is named as one, not "not a recognised SAE" with the list of SAE formats.
        string cc = SaeSharp.Tests.Tokenizers.TestPaths.Data("crosscoder", "cc_hub");
        (exit, _, err) = CliRunner.Run("logit-stats", "--sae", cc, "--model", _fx.ModelDir);
        Assert.Equal(1, exit);
        Assert.Contains($"--sae {cc}: a crosscoder; sae logit-stats takes an SAE", err);
        // --csv naming a folder: the suggested file is a .csv in it.
        (exit, _, err) = CliRunner.Run("logit-stats", "--sae", _fx.SaeDir, "--model", _fx.ModelDir, "--csv", _fx.Dir);
        Assert.Equal(1, exit);
        Assert.Contains($"--csv {_fx.Dir}: is a folder; give a file path (e.g. {Path.Combine(_fx.Dir, "out.csv")})", err);
    }
}
