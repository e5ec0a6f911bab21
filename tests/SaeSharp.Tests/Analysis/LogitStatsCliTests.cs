using System.Globalization;
using SaeSharp.Tests.Cli;

namespace SaeSharp.Tests.Analysis;

/// <summary><c>sae logit-stats</c>: its table and CSV, and a token set it cannot score refused before anything is written.</summary>
public class LogitStatsCliTests : IDisposable
{
    private readonly AnalysisFixture _fx = new();

    public void Dispose() => _fx.Dispose();

    [Fact]
    public void Csv_has_every_feature_and_the_table_ranks_the_most_skewed_first()
    {
        string csv = Path.Combine(_fx.Dir, "stats.csv");
        var (exit, stdout, err) = CliRunner.Run("logit-stats", "--sae", _fx.SaeDir, "--model", _fx.ModelDir, "--top", "3",
            "--token-set", "space=Ġ", "--token-words", "animals=cat,dog", "--csv", csv);
        Assert.True(exit == 0, err);
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
    public void A_token_set_without_tokens_is_refused_naming_it_before_anything_is_written()
    {
        string csv = Path.Combine(_fx.Dir, "none.csv");
        var (exit, stdout, err) = CliRunner.Run("logit-stats", "--sae", _fx.SaeDir, "--model", _fx.ModelDir, "--token-set", "nothing=zzzz", "--csv", csv);
        Assert.Equal(1, exit);
        Assert.Contains("token set 'nothing': 0 of", err);
        Assert.DoesNotContain("skewness", stdout);
        Assert.False(File.Exists(csv));
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
