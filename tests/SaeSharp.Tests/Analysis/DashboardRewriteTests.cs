using SaeSharp.Analysis;
using SaeSharp.Pipelines;

namespace SaeSharp.Tests.Analysis;

/// <summary>Writing a dashboard (and histogram PNGs) over an earlier, larger one: the earlier per-feature files go, the
/// user's own files stay.</summary>
public class DashboardRewriteTests : IDisposable
{
    private readonly AnalysisFixture _fx = new();
    public void Dispose() => _fx.Dispose();

    [Fact]
    public void A_smaller_site_over_a_larger_one_removes_the_stale_pages_and_keeps_other_files()
    {
        var data = new ModelDataOptions { ModelPath = _fx.ModelDir, DatasetPath = _fx.DataPath, Tokens = 200 };
        var all = AnalysisPipeline.Features(_fx.SaeDir, data, new FeatureAnalysisOptions { Statistics = new FeatureStatisticsOptions { TopExamples = 3, Context = 4 } });
        Assert.Equal(AnalysisFixture.DSae, all.Features.Count);
        string site = Path.Combine(_fx.Dir, "site"), pages = Path.Combine(site, "features"), pngs = Path.Combine(_fx.Dir, "histograms");
        DashboardWriter.Write(all, site);
        Assert.Equal(AnalysisFixture.DSae, FeatureFileNumbers(pages, "*.html").Count);
        int fired = FeatureHistograms.Save(all, pngs);
        Assert.True(fired > 4, $"{fired} features fired");
        // The user's own files, beside and inside the folders the writers use.
        string[] mine = [Path.Combine(site, "notes.txt"), Path.Combine(pages, "overview.html"), Path.Combine(pages, "07.html"), Path.Combine(pngs, "my-plot.png")];
        foreach (var f in mine) File.WriteAllText(f, "mine");

        int[] kept = [1, 3, 5, 8];
        var fewer = new FeatureReport { Source = all.Source, Tokens = all.Tokens, Windows = all.Windows, TokenStrings = all.TokenStrings,
            Features = all.Features.Where(f => kept.Contains(f.Feature)).ToList() };
        string index = DashboardWriter.Write(fewer, site);
        FeatureHistograms.Save(fewer, pngs);

        Assert.Equal(kept, FeatureFileNumbers(pages, "*.html"));
        Assert.Equal(kept.Where(i => all.Features[i].Firings > 0), FeatureFileNumbers(pngs, "*.png"));
        foreach (var f in mine) Assert.Equal("mine", File.ReadAllText(f));
        Assert.True(File.Exists(index) && File.Exists(Path.Combine(site, "assets", "dashboard.css")));
    }

    [Fact]
    public void Pages_name_a_release_sae_by_its_whole_id_and_a_folder_by_its_name()
    {
        var data = new ModelDataOptions { ModelPath = _fx.ModelDir, DatasetPath = _fx.DataPath, Tokens = 100 };
        var r = AnalysisPipeline.Features(_fx.SaeDir, data, new FeatureAnalysisOptions { Statistics = new FeatureStatisticsOptions { TopExamples = 2, Context = 3 } });
        Assert.Contains($"<b>SAE</b> {Path.GetFileName(_fx.SaeDir)}</span>", File.ReadAllText(DashboardWriter.Write(r, Path.Combine(_fx.Dir, "local"))));
        const string release = "gemma-scope-2b-pt-res-canonical/layer_0/width_16k/canonical";   // was shown as "canonical"
        var named = new FeatureReport { Source = r.Source with { Sae = release }, Tokens = r.Tokens, Windows = r.Windows, TokenStrings = r.TokenStrings, Features = r.Features };
        string index = DashboardWriter.Write(named, Path.Combine(_fx.Dir, "release"));
        Assert.Contains($"<b>SAE</b> {release}</span>", File.ReadAllText(index));
        Assert.Contains($"<b>SAE</b> {release}</span>", File.ReadAllText(Path.Combine(_fx.Dir, "release", "features", "0.html")));
        Assert.Equal("hf:someone/saes/layer_3", DashboardWriter.SaeLabel("hf:someone/saes/layer_3"));
    }

    /// <summary>The feature indices of the files named &lt;i&gt;.ext in a folder, in order.</summary>
    private static List<int> FeatureFileNumbers(string dir, string pattern) =>
        Directory.GetFiles(dir, pattern).Select(Path.GetFileNameWithoutExtension)
            .Where(s => s!.Length > 0 && s.All(char.IsAsciiDigit) && (s == "0" || s[0] != '0')).Select(s => int.Parse(s!)).Order().ToList();
}
