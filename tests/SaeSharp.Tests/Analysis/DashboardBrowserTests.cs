using PuppeteerSharp;
using SaeSharp.Activations;
using SaeSharp.Analysis;
using SaeSharp.Models;
using SaeSharp.Pipelines;
using SaeSharp.Tokenizers;

namespace SaeSharp.Tests.Analysis;

/// <summary>
/// The dashboard and the prompt view loaded from the file system in headless Chromium (Debian's <c>chromium</c>, installed
/// by scripts/setup-browser.sh), asserting on the rendered DOM. Screenshots go to .build/test-results/screenshots.
/// </summary>
public class DashboardBrowserTests : IDisposable
{
    private readonly AnalysisFixture _fx = new();

    public void Dispose() => _fx.Dispose();

    public const string ChromiumPath = "/usr/bin/chromium";

    internal static string ScreenshotDir()
    {
        for (var dir = new DirectoryInfo(AppContext.BaseDirectory); dir is not null; dir = dir.Parent)
            if (File.Exists(Path.Combine(dir.FullName, "SaeSharp.sln")))
            {
                string s = Path.Combine(dir.FullName, ".build", "test-results", "screenshots");
                Directory.CreateDirectory(s);
                return s;
            }
        return Directory.CreateTempSubdirectory("screenshots-").FullName;
    }

    internal static async Task<IBrowser> Launch(string profileDir)
    {
        Assert.True(File.Exists(ChromiumPath), $"{ChromiumPath} is missing: run scripts/setup-browser.sh (installs Debian's chromium)");
        return await Puppeteer.LaunchAsync(new LaunchOptions
        {
            ExecutablePath = ChromiumPath,
            Headless = true,
            UserDataDir = profileDir,
            Args =
            [
                "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
                "--disable-component-update", "--disable-sync", "--allow-file-access-from-files",
            ],
            DefaultViewport = new PuppeteerSharp.ViewPortOptions { Width = 1400, Height = 1000 },
            Timeout = 60_000,
        });
    }

    private FeatureReport Report()
    {
        var data = new ModelDataOptions { ModelPath = _fx.ModelDir, DatasetPath = _fx.DataPath, BatchSizePrompts = 4 };
        return AnalysisPipeline.Features(_fx.SaeDir, data, new FeatureAnalysisOptions { Statistics = new FeatureStatisticsOptions { TopExamples = 10, Context = 6, Intervals = 6, SamplesPerInterval = 3 } });
    }

    [Fact]
    public async Task Dashboard_index_and_feature_page_render_in_chromium()
    {
        var report = Report();
        string site = Path.Combine(_fx.Dir, "site");
        string index = DashboardWriter.Write(report, site);
        string shots = ScreenshotDir();
        await using var browser = await Launch(Path.Combine(_fx.Dir, "profile"));
        await using var page = await browser.NewPageAsync();
        var errors = new List<string>();
        page.PageError += (_, e) => errors.Add(e.Message);

        await page.GoToAsync(new Uri(index).AbsoluteUri);
        await page.WaitForSelectorAsync("#features tbody tr");
        Assert.Equal(AnalysisFixture.DSae, await page.EvaluateExpressionAsync<int>("document.querySelectorAll('#features tbody tr').length"));
        Assert.Contains($"{AnalysisFixture.DSae} of {AnalysisFixture.DSae} features", await page.EvaluateExpressionAsync<string>("document.getElementById('count').textContent"));
        Assert.True(await page.EvaluateExpressionAsync<int>("document.querySelectorAll('svg.density-chart rect.bar').length") > 0, "density overview histogram drawn");
        await page.ScreenshotAsync(Path.Combine(shots, "dashboard-index.png"), new ScreenshotOptions { FullPage = true });

        // Sorting by density (descending on first click) puts the densest feature first.
        await page.ClickAsync("th[data-key=d]");
        int densest = report.Features.OrderByDescending(f => f.Density).ThenBy(f => f.Feature).First().Feature;
        Assert.Equal(densest.ToString(), await page.EvaluateExpressionAsync<string>("document.querySelector('#features tbody tr').dataset.feature"));

        // Search over top tokens: " dog" is feature 1's top token; the rows left are those listing it.
        await page.TypeAsync("#search", "dog");
        int expected = report.Features.Count(f => f.TopExamples.Select(e => report.TokenString(e.Token)).Distinct().Take(6)
            .Concat(f.TopLogits.Take(5).Select(t => report.TokenString(t.Token))).Any(s => s.Contains("dog", StringComparison.OrdinalIgnoreCase)));
        Assert.True(expected >= 1);
        Assert.Equal(expected, await page.EvaluateExpressionAsync<int>("document.querySelectorAll('#features tbody tr').length"));
        Assert.True(await page.EvaluateExpressionAsync<bool>("[...document.querySelectorAll('#features tbody tr')].some(r => r.dataset.feature === '1')"));

        // Feature page: the chosen word " cat" is feature 0's top token, shaded; histograms drawn; Neuronpedia link.
        await page.GoToAsync(new Uri(Path.Combine(site, "features", "0.html")).AbsoluteUri);
        Assert.Equal("Feature 0", await page.EvaluateExpressionAsync<string>("document.querySelector('h1').textContent"));
        Assert.Equal(" cat", await page.EvaluateExpressionAsync<string>("document.querySelector('.top-examples .tok.hl').textContent"));
        string bg = await page.EvaluateExpressionAsync<string>("getComputedStyle(document.querySelector('.top-examples .tok.hl')).backgroundColor");
        Assert.StartsWith("rgba(255, 80, 0", bg);                     // the max activation: the strongest shade
        Assert.Equal(10, await page.EvaluateExpressionAsync<int>("document.querySelectorAll('.top-examples .example').length"));
        Assert.True(await page.EvaluateExpressionAsync<int>("document.querySelectorAll('svg.act-hist rect.bar').length") > 0, "activation histogram drawn");
        Assert.True(await page.EvaluateExpressionAsync<int>("document.querySelectorAll('svg.logit-hist rect.bar').length") > 0, "logit histogram drawn");
        Assert.Equal(10, await page.EvaluateExpressionAsync<int>("document.querySelectorAll('.logits.pos tr').length"));
        Assert.Equal("https://www.neuronpedia.org/tiny-neox/0-embed/0", await page.EvaluateExpressionAsync<string>("document.querySelector('a.np').href"));
        Assert.True(await page.EvaluateExpressionAsync<int>("document.querySelectorAll('.interval').length") >= 1);
        // Hover shows the token and its value.
        await page.HoverAsync(".top-examples .tok.hl");
        string tip = await page.EvaluateExpressionAsync<string>("document.getElementById('tip').textContent");
        Assert.Contains("\" cat\"", tip);
        Assert.Contains(report.Features[0].MaxActivation.ToString("0.####", System.Globalization.CultureInfo.InvariantCulture), tip);
        await page.ScreenshotAsync(Path.Combine(shots, "dashboard-feature-0.png"), new ScreenshotOptions { FullPage = true });
        Assert.Empty(errors);
    }

    // walk11: at a narrow window (a phone, a split screen) the feature page's 440 px first column and the prompt view's two
    // columns pushed the examples and the neurons off the page to the right, and the index table widened the whole page.
    [Fact]
    public async Task At_a_narrow_window_nothing_is_off_the_page_to_the_right()
    {
        var report = Report();
        string site = Path.Combine(_fx.Dir, "narrow-site");
        string index = DashboardWriter.Write(report, site);
        string prompt = Path.Combine(_fx.Dir, "narrow-prompt.html");
        var (sae, pm) = ModelForSae.LoadWithSae(_fx.SaeDir, _fx.ModelDir);
        using (sae)
        using (pm)
        {
            var inspector = new PromptInspector(pm.Model, sae, Tokenizer.FromFolder(_fx.ModelDir), pm.Hooks);
            var views = new[] { inspector.Inspect("the cat sat on the mat", top: 4, neurons: true) };
            DashboardWriter.WritePromptView(prompt, views, inspector.Notes(views[0].Features.Select(u => u.Index)), PromptInspector.Compare(views), inspector.Hook);
        }
        await using var browser = await Launch(Path.Combine(_fx.Dir, "profile3"));
        await using var page = await browser.NewPageAsync();
        await page.SetViewportAsync(new PuppeteerSharp.ViewPortOptions { Width = 420, Height = 900 });
        const string pageWidth = "document.documentElement.scrollWidth";
        string shots = ScreenshotDir();

        await page.GoToAsync(new Uri(index).AbsoluteUri);
        await page.WaitForSelectorAsync("#features tbody tr");
        Assert.True(await page.EvaluateExpressionAsync<int>(pageWidth) <= 420, "the index is wider than the window");
        // The table's last column is reached by scrolling the table itself.
        Assert.True(await page.EvaluateExpressionAsync<bool>("(t => t.scrollWidth > t.clientWidth && getComputedStyle(t).overflowX === 'auto')(document.getElementById('features'))"));
        await page.ScreenshotAsync(Path.Combine(shots, "dashboard-index-420.png"), new ScreenshotOptions { FullPage = true });

        await page.GoToAsync(new Uri(Path.Combine(site, "features", "0.html")).AbsoluteUri);
        Assert.True(await page.EvaluateExpressionAsync<int>(pageWidth) <= 420, "the feature page is wider than the window");
        Assert.True(await page.EvaluateExpressionAsync<double>("document.querySelector('.top-examples').getBoundingClientRect().left") < 60,
            "the examples are not below the statistics");
        await page.ScreenshotAsync(Path.Combine(shots, "dashboard-feature-0-420.png"), new ScreenshotOptions { FullPage = true });

        await page.GoToAsync(new Uri(prompt).AbsoluteUri);
        Assert.True(await page.EvaluateExpressionAsync<int>(pageWidth) <= 420, "the prompt view is wider than the window");
        Assert.True(await page.EvaluateExpressionAsync<double>("document.querySelector('.neuron-unit').getBoundingClientRect().left") < 60,
            "the neurons are not below the features");
        await page.ScreenshotAsync(Path.Combine(shots, "prompt-view-420.png"), new ScreenshotOptions { FullPage = true });
    }

    [Fact]
    public async Task Prompt_view_html_renders_in_chromium()
    {
        var (sae, pm) = ModelForSae.LoadWithSae(_fx.SaeDir, _fx.ModelDir);
        using (sae)
        using (pm)
        {
            var tok = Tokenizer.FromFolder(_fx.ModelDir);
            var inspector = new PromptInspector(pm.Model, sae, tok, pm.Hooks);
            var views = new[] { "the cat sat on the mat", "a dog ran to the park" }.Select(p => inspector.Inspect(p, top: 4, neurons: true)).ToList();
            // Notes with top-logit tokens as GPT-2 spells them (a leading space each), wider together than the name column.
            var notes = inspector.Notes(views.SelectMany(v => v.Features.Select(u => u.Index)))
                .ToDictionary(kv => kv.Key, kv => kv.Value with { TopLogits = [" showcased", " Discover", " misdemeanor", " Historical", " medication"] });
            string html = Path.Combine(_fx.Dir, "prompt.html");
            DashboardWriter.WritePromptView(html, views, notes, PromptInspector.Compare(views), inspector.Hook);
            await using var browser = await Launch(Path.Combine(_fx.Dir, "profile2"));
            await using var page = await browser.NewPageAsync();
            await page.GoToAsync(new Uri(html).AbsoluteUri);
            Assert.Equal(8, await page.EvaluateExpressionAsync<int>("document.querySelectorAll('.feature-unit').length"));
            Assert.Equal(8, await page.EvaluateExpressionAsync<int>("document.querySelectorAll('.neuron-unit').length"));
            // Feature 0 points at " cat": it is the first feature of prompt 1 and its " cat" token is shaded.
            Assert.Equal("0", await page.EvaluateExpressionAsync<string>("document.querySelector('.feature-unit').dataset.feature"));
            Assert.True(await page.EvaluateExpressionAsync<bool>(
                "[...document.querySelector('.feature-unit').querySelectorAll('.tok')].some(t => t.textContent === ' cat' && getComputedStyle(t).backgroundColor !== 'rgba(0, 0, 0, 0)')"));
            // The name column keeps its width (logit chips wrap inside it), so every row's tokens start at the same place.
            var widths = await page.EvaluateExpressionAsync<double[]>("[...document.querySelectorAll('.unit .name')].map(n => n.getBoundingClientRect().width)");
            Assert.All(widths, w => Assert.Equal(180, w, 0.5));
            var lefts = await page.EvaluateExpressionAsync<double[]>("[...document.querySelectorAll('.feature-unit .toks')].map(t => t.getBoundingClientRect().left)");
            Assert.All(lefts, l => Assert.Equal(lefts[0], l, 0.5));
            await page.ScreenshotAsync(Path.Combine(ScreenshotDir(), "prompt-view.png"), new ScreenshotOptions { FullPage = true });
        }
    }
}
