using System.Text.Json.Nodes;
using PuppeteerSharp;
using SaeSharp.Analysis;
using SaeSharp.Models;
using SaeSharp.Tests.Cli;
using SaeSharp.Tests.Models;
using static TorchSharp.torch;

namespace SaeSharp.Tests.Analysis;

/// <summary><see cref="AttentionPage"/> and <c>sae model attention</c>: the page embeds <c>hook_pattern</c> exactly and its
/// tokens as data (a token that spells HTML stays text), and in headless Chromium it draws a thumbnail per head, the picked
/// head's pattern cell by cell, and shades the tokens by what a hovered token attends to.</summary>
public class AttentionPageTests : ModelTestBase
{
    private const string Prompt = "Tom </script><b>bold</b> & Tom";

    private string Model()
    {
        string dir = TinyModels.WriteGpt2(Sub("m"), seed: 7, nLayer: 2, nEmbd: 16, nHead: 4, vocab: 50257, nPositions: 64);
        AddGpt2Tokenizer(dir);
        return dir;
    }

    private static JsonNode EmbeddedData(string html)
    {
        const string open = "<script id=\"attention-data\" type=\"application/json\">";
        int start = html.IndexOf(open, StringComparison.Ordinal) + open.Length;
        int end = html.IndexOf("</script>", start, StringComparison.Ordinal);
        return JsonNode.Parse(html[start..end])!;
    }

    [Fact]
    public void The_page_embeds_hook_pattern_and_the_tokens_as_data()
    {
        string dir = Model();
        string path = Path.Combine(Dir, "att.html");
        var (exit, output, err) = CliRunner.Run("model", "attention", "--model", dir, "--prompt", Prompt, "--layer", "1", "--html", path);
        Assert.True(exit == 0, err);
        Assert.Contains("(4 heads,", output);
        string html = File.ReadAllText(path);
        // The prompt in the heading is escaped; the only script elements are the page's two.
        Assert.Contains("&lt;/script&gt;&lt;b&gt;bold", html);
        Assert.Equal(2, html.Split("</script>").Length - 1);
        var data = EmbeddedData(html);

        using var model = ModelLoader.FromPretrained(dir);
        using var tokens = model.ToTokens(Prompt);
        using var run = model.RunWithCache(tokens, ["blocks.1.attn.hook_pattern"]);
        var strTokens = model.ToStringTokens(tokens);
        Assert.Equal(strTokens.Select(DashboardWriter.Display), data["tokens"]!.AsArray().Select(t => t!.GetValue<string>()));
        Assert.Contains(strTokens, t => t.Contains('<'));
        Assert.Equal([0, 1, 2, 3], data["heads"]!.AsArray().Select(h => h!.GetValue<int>()));
        int n = strTokens.Count;
        for (int h = 0; h < 4; h++)
        {
            var expected = run.Cache["pattern", 1][0, h].data<float>().ToArray();
            var rows = data["patterns"]![h]!.AsArray();
            Assert.Equal(n, rows.Count);
            for (int q = 0; q < n; q++)
                for (int k = 0; k < n; k++)
                    Assert.Equal(expected[q * n + k], rows[q]![k]!.GetValue<float>());
        }

        // One head; bad layers and heads are refused before anything is written.
        string one = Path.Combine(Dir, "one.html");
        Assert.Equal(0, CliRunner.Run("model", "attention", "--model", dir, "--prompt", Prompt, "--layer", "0", "--head", "2", "--html", one).Exit);
        Assert.Equal([2], EmbeddedData(File.ReadAllText(one))["heads"]!.AsArray().Select(h => h!.GetValue<int>()));
        string never = Path.Combine(Dir, "never.html");
        var (badLayer, _, layerErr) = CliRunner.Run("model", "attention", "--model", dir, "--prompt", Prompt, "--layer", "2", "--html", never);
        Assert.NotEqual(0, badLayer);
        Assert.Contains("--layer 2: the model has layers 0..1", layerErr);
        var (badHead, _, headErr) = CliRunner.Run("model", "attention", "--model", dir, "--prompt", Prompt, "--layer", "0", "--head", "4", "--html", never);
        Assert.NotEqual(0, badHead);
        Assert.Contains("--head 4: the model has heads 0..3", headErr);
        // -1 was taken for "none bad" and then shown as the last head under the label H-1.
        var (negative, _, negativeErr) = CliRunner.Run("model", "attention", "--model", dir, "--prompt", Prompt, "--layer", "0", "--head", "-1", "--html", never);
        Assert.NotEqual(0, negative);
        Assert.Contains("--head -1: the model has heads 0..3", negativeErr);
        Assert.False(File.Exists(never));
    }

    /// <summary>A prompt past a rotary model's n_ctx (the built-in model's 256) runs, as sae model run does, with the same
    /// note; the page's size is said, since it holds heads × tokens² numbers.</summary>
    [Fact]
    public void A_prompt_past_n_ctx_is_noted_and_the_page_size_said()
    {
        string html = Path.Combine(Dir, "long.html");
        string prompt = string.Join(" ", Enumerable.Repeat("the cat", 150));
        var (exit, output, err) = CliRunner.Run("model", "attention", "--model", "builtin", "--prompt", prompt, "--layer", "0", "--head", "1", "--html", html);
        Assert.True(exit == 0, err);
        var patterns = EmbeddedData(File.ReadAllText(html));
        Assert.Equal(301, patterns["tokens"]!.AsArray().Count);   // BOS and 300 words
        Assert.Contains($"wrote {html} (1 head, 301 tokens, {SaeSharp.HostMemory.Format(new FileInfo(html).Length)})", output.ReplaceLineEndings(" "));
        Assert.Contains("note: 301 tokens exceed n_ctx=256 of builtin; rotary positions run on past it", err.ReplaceLineEndings(" "));
    }

    [Fact]
    public async Task In_chromium_the_page_draws_each_head_and_shades_what_a_hovered_token_attends_to()
    {
        string dir = Model();
        string path = Path.Combine(Dir, "att.html");
        AttentionPatterns patterns;
        using (var model = ModelLoader.FromPretrained(dir))
        using (var tokens = model.ToTokens(Prompt))
        {
            patterns = AttentionPage.Collect(model, tokens, 1);
            AttentionPage.Write(path, patterns, "tiny: " + Prompt);
        }
        int n = patterns.Tokens.Count;
        await using var browser = await DashboardBrowserTests.Launch(Path.Combine(Dir, "profile"));
        await using var page = await browser.NewPageAsync();
        var errors = new List<string>();
        page.PageError += (_, e) => errors.Add(e.Message);
        await page.GoToAsync(new Uri(path).AbsoluteUri);
        await page.WaitForSelectorAsync("#grid td.c");
        Assert.Equal(4, await page.EvaluateExpressionAsync<int>("document.querySelectorAll('#heads .head canvas').length"));
        Assert.Equal(n * n, await page.EvaluateExpressionAsync<int>("document.querySelectorAll('#grid td.c').length"));
        // The token that spells HTML is text, not markup.
        Assert.Equal(0, await page.EvaluateExpressionAsync<int>("document.querySelectorAll('#grid b, #tokens b').length"));

        // Hovering query row 3's token shades every token j by pattern[3][j] of the picked head (white → blue).
        static string Colour(float v)
        {
            int f = (int)Math.Round(255 * (1 - 0.85 * Math.Clamp(v, 0, 1)), MidpointRounding.AwayFromZero);
            return $"rgb({f}, {f}, 255)";
        }
        await page.ClickAsync("#heads .head:nth-child(3)");
        await page.HoverAsync("#grid tr:nth-child(5) th.q");
        Assert.StartsWith($"What “{patterns.Tokens[3]}” (3) attends to, head L1H2", await page.EvaluateExpressionAsync<string>("document.getElementById('info').textContent"));
        for (int j = 0; j < n; j++)
            Assert.Equal(Colour(patterns.Patterns[2][3][j]), await page.EvaluateExpressionAsync<string>($"document.querySelectorAll('#tokens span')[{j}].style.background"));
        // A column's token: what attends to it (pattern[q][1] down the column).
        await page.HoverAsync("#grid tr:nth-child(1) th.k:nth-child(3)");
        for (int q = 0; q < n; q++)
            Assert.Equal(Colour(patterns.Patterns[2][q][1]), await page.EvaluateExpressionAsync<string>($"document.querySelectorAll('#tokens span')[{q}].style.background"));
        // A cell shows its value.
        await page.HoverAsync($"#grid tr:nth-child({n + 1}) td.c:nth-child(2)");
        string cellInfo = await page.EvaluateExpressionAsync<string>("document.getElementById('info').textContent");
        Assert.Equal(patterns.Patterns[2][n - 1][0], double.Parse(cellInfo[(cellInfo.LastIndexOf(' ') + 1)..], System.Globalization.CultureInfo.InvariantCulture), 5.1e-5);
        await page.ScreenshotAsync(Path.Combine(DashboardBrowserTests.ScreenshotDir(), "attention-page.png"), new ScreenshotOptions { FullPage = true });
        Assert.Empty(errors);
    }
}
