using System.Text.Json.Nodes;
using PuppeteerSharp;
using SaeSharp.Analysis;
using SaeSharp.Models;
using SaeSharp.Tests.Cli;
using SaeSharp.Tests.Models;
using static TorchSharp.torch;

namespace SaeSharp.Tests.Analysis;

/// <summary><c>sae model attention</c> with several prompts (repeatable <c>--prompt</c>, rows of <c>--input</c>): one page whose
/// embedded data hold each prompt's tokens and every section's <c>hook_pattern</c> exactly as a cached run of that prompt,
/// and in headless Chromium a prompt selector that switches every section to the picked prompt's tokens and patterns.</summary>
public class AttentionPagesTests : ModelTestBase
{
    private static readonly string[] Prompts = ["the cat sat on the mat", "Tom gave Anna </b> a ball and then a cup", "hi"];

    private string Model()
    {
        string dir = TinyModels.WriteGpt2(Sub("m"), seed: 11, nLayer: 2, nEmbd: 16, nHead: 4, vocab: 50257, nPositions: 64);
        AddGpt2Tokenizer(dir);
        return dir;
    }

    private static JsonNode EmbeddedData(string html) => AttentionPageTests.EmbeddedData(html);

    /// <summary>One prompt of the page's data against a cached run of <paramref name="tokens"/>: its tokens and each layer's
    /// every head (float32, exactly).</summary>
    private static void AssertPrompt(JsonNode prompt, HookedTransformer model, Tensor tokens, int[] layers, int[] heads)
    {
        Assert.Equal(model.ToStringTokens(tokens).Select(DashboardWriter.Display), prompt["tokens"]!.AsArray().Select(t => t!.GetValue<string>()));
        var hooks = layers.Select(l => $"blocks.{l}.attn.hook_pattern").ToArray();
        using var run = model.RunWithCache(tokens, hooks);
        var sections = prompt["layers"]!.AsArray();
        Assert.Equal(layers, sections.Select(l => l!["layer"]!.GetValue<int>()));
        int n = (int)tokens.shape[1];
        for (int i = 0; i < layers.Length; i++)
        {
            Assert.Equal(heads, sections[i]!["heads"]!.AsArray().Select(h => h!.GetValue<int>()));
            var expected = run.Cache[hooks[i]][0].data<float>().ToArray();   // [head, q, k]
            var shown = sections[i]!["patterns"]!.AsArray();
            Assert.Equal(heads.Length, shown.Count);
            for (int x = 0; x < heads.Length; x++)
            {
                Assert.Equal(n, shown[x]!.AsArray().Count);
                for (int q = 0; q < n; q++)
                    for (int k = 0; k < n; k++)
                        Assert.Equal(expected[(heads[x] * n + q) * n + k], shown[x]![q]![k]!.GetValue<float>());
            }
        }
    }

    [Fact]
    public void Several_prompts_give_one_page_whose_data_equal_each_prompts_patterns()
    {
        string dir = Model();
        string path = Sub("prompts.html");
        var (exit, output, err) = CliRunner.Run(["model", "attention", "--model", dir, .. Prompts.SelectMany(p => new[] { "--prompt", p }),
            "--layer", "1,0", "--head", "3", "--head", "1", "--html", path]);
        Assert.True(exit == 0, err);
        using var model = ModelLoader.FromPretrained(dir);
        var tokens = Prompts.Select(p => model.ToTokens(p)).ToList();
        var lengths = tokens.Select(t => t.shape[1]).ToList();
        Assert.Contains($"(2 layers × 2 heads, 3 prompts of {lengths.Min()} to {lengths.Max()} tokens,", output);
        string html = File.ReadAllText(path);
        Assert.Contains("id=\"prompt-pick\"", html);
        Assert.Equal(2, html.Split("</script>").Length - 1);   // "</b>" in a prompt stays data
        var prompts = EmbeddedData(html)["prompts"]!.AsArray();
        Assert.Equal(Prompts, prompts.Select(p => p!["label"]!.GetValue<string>()));
        for (int i = 0; i < Prompts.Length; i++) AssertPrompt(prompts[i]!, model, tokens[i], [1, 0], [3, 1]);

        // Rows of --input: a prompt each, labelled by its row.
        string ids = Sub("ids.safetensors");
        using var flipped = tokens[0].flip(1);
        using (var rows = cat([tokens[0], flipped], 0))
            SaeSharp.IO.SafeTensors.Save(ids, new Dictionary<string, Tensor> { ["tokens"] = rows });
        string fromRows = Sub("rows.html");
        var (rowsExit, rowsOut, rowsErr) = CliRunner.Run("model", "attention", "--model", dir, "--input", ids, "--layer", "0", "--html", fromRows);
        Assert.True(rowsExit == 0, rowsErr);
        Assert.Contains($"(4 heads, 2 prompts of {lengths[0]} tokens,", rowsOut);
        var rowPrompts = EmbeddedData(File.ReadAllText(fromRows))["prompts"]!.AsArray();
        Assert.Equal([$"{ids} row 0", $"{ids} row 1"], rowPrompts.Select(p => p!["label"]!.GetValue<string>()));
        AssertPrompt(rowPrompts[0]!, model, tokens[0], [0], [0, 1, 2, 3]);
        AssertPrompt(rowPrompts[1]!, model, flipped, [0], [0, 1, 2, 3]);

        // One prompt keeps the single-prompt page: no selector, {tokens, layers}.
        string single = Sub("single.html");
        Assert.Equal(0, CliRunner.Run("model", "attention", "--model", dir, "--prompt", Prompts[0], "--layer", "0", "--html", single).Exit);
        string singleHtml = File.ReadAllText(single);
        Assert.DoesNotContain("id=\"prompt-pick\"", singleHtml);
        AssertPrompt(EmbeddedData(singleHtml), model, tokens[0], [0], [0, 1, 2, 3]);

        // Too large a page of several prompts is refused naming them, before anything is written.
        string never = Sub("never.html");
        var (big, _, bigErr) = CliRunner.Run(["model", "attention", "--model", dir, .. Prompts.SelectMany(p => new[] { "--prompt", p }),
            "--layer", "all", "--max-page-mb", "0.0001", "--html", never]);
        Assert.NotEqual(0, big);
        Assert.Contains($"× up to {lengths.Max()}² tokens, 3 prompts); narrow it with --layer, --head or fewer or shorter prompts", bigErr.ReplaceLineEndings(" "));
        Assert.False(File.Exists(never));
        foreach (var t in tokens) t.Dispose();
    }

    [Fact]
    public async Task In_chromium_the_prompt_selector_switches_every_section_to_that_prompts_tokens()
    {
        string dir = Model();
        string path = Sub("switch.html");
        var prompts = new List<AttentionPrompt>();
        using (var model = ModelLoader.FromPretrained(dir))
            foreach (var p in Prompts)
                using (var tokens = model.ToTokens(p))
                    prompts.Add(new AttentionPrompt(p, AttentionPage.Collect(model, tokens, [0, 1])));
        AttentionPage.Write(path, prompts, "tiny: 3 prompts");

        await using var browser = await DashboardBrowserTests.Launch(Path.Combine(Dir, "profile"));
        await using var page = await browser.NewPageAsync();
        var errors = new List<string>();
        page.PageError += (_, e) => errors.Add(e.Message);
        await page.GoToAsync(new Uri(path).AbsoluteUri);
        await page.WaitForSelectorAsync("section.layer:nth-of-type(2) .grid td.c");
        Assert.Equal(3, await page.EvaluateExpressionAsync<int>("document.querySelectorAll('#prompt-pick option').length"));
        async Task<string[]> Shown(int section) =>
            await page.EvaluateExpressionAsync<string[]>($"[...document.querySelectorAll('section.layer:nth-of-type({section}) .tokens span')].map(s => s.textContent)");
        string[] Tokens(int p) => [.. prompts[p].Layers[0].Tokens.Select(DashboardWriter.Display)];
        Assert.Equal(Tokens(0), await Shown(1));
        Assert.Equal(Tokens(0), await Shown(2));

        // Pick head L1H2 in the second section, then switch to prompt 2: both sections show its tokens and the grid its size,
        // the picked head is kept, and hovering a token shades by the new prompt's pattern.
        const string second = "section.layer:nth-of-type(2)";
        await page.ClickAsync($"{second} .heads .head:nth-child(3)");
        await page.SelectAsync("#prompt-pick", "1");
        int n = prompts[1].Layers[0].Tokens.Count;
        Assert.NotEqual(Tokens(0).Length, n);
        Assert.Equal(Tokens(1), await Shown(1));
        Assert.Equal(Tokens(1), await Shown(2));
        Assert.Equal(n * n, await page.EvaluateExpressionAsync<int>($"document.querySelectorAll('{second} .grid td.c').length"));
        Assert.Equal(4, await page.EvaluateExpressionAsync<int>($"document.querySelectorAll('{second} .heads .head').length"));
        Assert.Equal("2", await page.EvaluateExpressionAsync<string>($"document.querySelector('{second} select.pick').value"));
        await page.HoverAsync($"{second} .tokens span:nth-child(4)");
        for (int j = 0; j < n; j++)
        {
            string values = await page.EvaluateExpressionAsync<string>($"document.querySelectorAll('{second} .tokens span')[{j}].dataset.values");
            Assert.Equal(prompts[1].Layers[1].Patterns[2][3][j], (float)double.Parse(values, System.Globalization.CultureInfo.InvariantCulture));
        }
        Assert.StartsWith($"What “{Tokens(1)[3]}” (3) attends to, head L1H2", await page.EvaluateExpressionAsync<string>($"document.querySelector('{second} .info').textContent"));
        await page.ScreenshotAsync(Path.Combine(DashboardBrowserTests.ScreenshotDir(), "attention-pages-prompt-2.png"), new ScreenshotOptions { FullPage = true });

        // "all heads" is kept too: on the shortest prompt every token holds each head's value of what its last token attends to.
        await page.SelectAsync($"{second} select.pick", "all");
        await page.SelectAsync("#prompt-pick", "2");
        Assert.Equal(Tokens(2), await Shown(1));
        Assert.Equal("all", await page.EvaluateExpressionAsync<string>($"document.querySelector('{second} select.pick').value"));
        int last = Tokens(2).Length - 1;
        for (int j = 0; j <= last; j++)
        {
            string values = await page.EvaluateExpressionAsync<string>($"document.querySelectorAll('{second} .tokens span')[{j}].dataset.values");
            Assert.Equal(Enumerable.Range(0, 4).Select(h => prompts[2].Layers[1].Patterns[h][last][j]),
                values.Split(',').Select(v => (float)double.Parse(v, System.Globalization.CultureInfo.InvariantCulture)));
        }
        await page.ScreenshotAsync(Path.Combine(DashboardBrowserTests.ScreenshotDir(), "attention-pages-prompt-3-all-heads.png"), new ScreenshotOptions { FullPage = true });
        // Back to the first: the first prompt's tokens again.
        await page.SelectAsync("#prompt-pick", "0");
        Assert.Equal(Tokens(0), await Shown(2));
        Assert.Empty(errors);
    }
}
