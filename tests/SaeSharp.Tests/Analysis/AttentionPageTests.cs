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

    /// <summary>The JSON the page embeds (also read by <see cref="AttentionPagesTests"/>).</summary>
    internal static JsonNode EmbeddedData(string html)
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
        var layer = data["layers"]![0]!;
        Assert.Equal([0, 1, 2, 3], layer["heads"]!.AsArray().Select(h => h!.GetValue<int>()));
        int n = strTokens.Count;
        for (int h = 0; h < 4; h++)
        {
            var expected = run.Cache["pattern", 1][0, h].data<float>().ToArray();
            var rows = layer["patterns"]![h]!.AsArray();
            Assert.Equal(n, rows.Count);
            for (int q = 0; q < n; q++)
                for (int k = 0; k < n; k++)
                    Assert.Equal(expected[q * n + k], rows[q]![k]!.GetValue<float>());
        }

        // One head; bad layers and heads are refused before anything is written.
        string one = Path.Combine(Dir, "one.html");
        Assert.Equal(0, CliRunner.Run("model", "attention", "--model", dir, "--prompt", Prompt, "--layer", "0", "--head", "2", "--html", one).Exit);
        Assert.Equal([2], EmbeddedData(File.ReadAllText(one))["layers"]![0]!["heads"]!.AsArray().Select(h => h!.GetValue<int>()));
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
        Assert.Contains("note: 301 tokens exceed n_ctx=256 of builtin, the context it was trained on; rotary positions run on past it", err.ReplaceLineEndings(" "));
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
            AttentionPage.Write(path, [patterns], "tiny: " + Prompt);
        }
        int n = patterns.Tokens.Count;
        await using var browser = await DashboardBrowserTests.Launch(Path.Combine(Dir, "profile"));
        await using var page = await browser.NewPageAsync();
        var errors = new List<string>();
        page.PageError += (_, e) => errors.Add(e.Message);
        await page.GoToAsync(new Uri(path).AbsoluteUri);
        await page.WaitForSelectorAsync(".grid td.c");
        Assert.Equal(4, await page.EvaluateExpressionAsync<int>("document.querySelectorAll('.heads .head canvas').length"));
        Assert.Equal(n * n, await page.EvaluateExpressionAsync<int>("document.querySelectorAll('.grid td.c').length"));
        // The token that spells HTML is text, not markup.
        Assert.Equal(0, await page.EvaluateExpressionAsync<int>("document.querySelectorAll('.grid b, .tokens b').length"));

        // Hovering query row 3's token shades every token j by pattern[3][j] of the picked head (white → blue).
        static string Colour(float v)
        {
            int f = (int)Math.Round(255 * (1 - 0.85 * Math.Clamp(v, 0, 1)), MidpointRounding.AwayFromZero);
            return $"rgb({f}, {f}, 255)";
        }
        await page.ClickAsync("section .heads .head:nth-child(3)");
        await page.HoverAsync(".grid tr:nth-child(5) th.q");
        Assert.StartsWith($"What “{patterns.Tokens[3]}” (3) attends to, head L1H2", await page.EvaluateExpressionAsync<string>("document.querySelector('.info').textContent"));
        for (int j = 0; j < n; j++)
            Assert.Equal(Colour(patterns.Patterns[2][3][j]), await page.EvaluateExpressionAsync<string>($"document.querySelectorAll('.tokens span')[{j}].style.background"));
        // A column's token: what attends to it (pattern[q][1] down the column).
        await page.HoverAsync(".grid tr:nth-child(1) th.k:nth-child(3)");
        for (int q = 0; q < n; q++)
            Assert.Equal(Colour(patterns.Patterns[2][q][1]), await page.EvaluateExpressionAsync<string>($"document.querySelectorAll('.tokens span')[{q}].style.background"));
        // A cell shows its value.
        await page.HoverAsync($".grid tr:nth-child({n + 1}) td.c:nth-child(2)");
        string cellInfo = await page.EvaluateExpressionAsync<string>("document.querySelector('.info').textContent");
        Assert.Equal(patterns.Patterns[2][n - 1][0], double.Parse(cellInfo[(cellInfo.LastIndexOf(' ') + 1)..], System.Globalization.CultureInfo.InvariantCulture), 5.1e-5);
        await page.ScreenshotAsync(Path.Combine(DashboardBrowserTests.ScreenshotDir(), "attention-page.png"), new ScreenshotOptions { FullPage = true });
        Assert.Empty(errors);
    }

    /// <summary>Reads the page's attention data of a run of <c>sae model attention</c> and checks every layer's every head
    /// against <c>hook_pattern</c> of a cached run of the model (float32 values, exactly).</summary>
    private static void AssertLayersEmbedded(JsonNode data, HookedTransformer model, Tensor tokens, int[] layers)
    {
        var hooks = layers.Select(l => $"blocks.{l}.attn.hook_pattern").ToArray();
        using var run = model.RunWithCache(tokens, hooks);
        var sections = data["layers"]!.AsArray();
        Assert.Equal(layers, sections.Select(l => l!["layer"]!.GetValue<int>()));
        int n = (int)tokens.shape[1];
        for (int i = 0; i < layers.Length; i++)
        {
            Assert.Equal(hooks[i], sections[i]!["hook"]!.GetValue<string>());
            var expected = run.Cache[hooks[i]][0].data<float>().ToArray();   // [head, q, k]
            var heads = sections[i]!["patterns"]!.AsArray();
            Assert.Equal(model.Config.NHeads, heads.Count);
            for (int h = 0; h < heads.Count; h++)
                for (int q = 0; q < n; q++)
                    for (int k = 0; k < n; k++)
                        Assert.Equal(expected[(h * n + q) * n + k], heads[h]![q]![k]!.GetValue<float>());
        }
    }

    [Fact]
    public void Several_layers_and_token_ids_from_input_give_one_section_per_layer_each_embedding_hook_pattern_exactly()
    {
        string dir = Model();
        using var model = ModelLoader.FromPretrained(dir);
        using var tokens = model.ToTokens(Prompt);
        string two = Path.Combine(Dir, "two.html");
        var (exit, output, err) = CliRunner.Run("model", "attention", "--model", dir, "--prompt", Prompt, "--layer", "1,0", "--html", two);
        Assert.True(exit == 0, err);
        Assert.Contains("(2 layers × 4 heads,", output);
        string html = File.ReadAllText(two);
        AssertLayersEmbedded(EmbeddedData(html), model, tokens, [1, 0]);
        Assert.Equal(2, html.Split("<section class=\"layer\"").Length - 1);

        // The same ids from a safetensors file (as sae model run --input takes them), every layer.
        string ids = Path.Combine(Dir, "ids.safetensors");
        SaeSharp.IO.SafeTensors.Save(ids, new Dictionary<string, Tensor> { ["tokens"] = tokens });
        string all = Path.Combine(Dir, "all.html");
        var (exitAll, _, errAll) = CliRunner.Run("model", "attention", "--model", dir, "--input", ids, "--layer", "all", "--html", all);
        Assert.True(exitAll == 0, errAll);
        var data = EmbeddedData(File.ReadAllText(all));
        AssertLayersEmbedded(data, model, tokens, [0, 1]);
        Assert.Equal(model.ToStringTokens(tokens).Select(DashboardWriter.Display), data["tokens"]!.AsArray().Select(t => t!.GetValue<string>()));

        // Neither or both of --prompt and --input, --no-prepend-bos with --input, a bad --layer: refused, nothing written.
        string never = Path.Combine(Dir, "never.html");
        foreach (var (args, message) in new (string[], string)[]
        {
            (["--layer", "0"], "give either --prompt (text) or --input"),
            (["--layer", "0", "--prompt", "x", "--input", ids], "give either --prompt (text) or --input"),
            (["--layer", "0", "--input", ids, "--no-prepend-bos"], "--no-prepend-bos"),
            (["--layer", "0,x", "--prompt", "x"], "--layer '0,x': write a layer, layers separated by commas (0,1,5) or all"),
            (["--layer", "0,2", "--prompt", "x"], "--layer 2: the model has layers 0..1"),
        })
        {
            var (bad, _, badErr) = CliRunner.Run(["model", "attention", "--model", dir, "--html", never, .. args]);
            Assert.NotEqual(0, bad);
            Assert.Contains(message, badErr.ReplaceLineEndings(" "));
        }
        Assert.False(File.Exists(never));
    }

    /// <summary>A page over --max-page-mb is refused with its size and the options that narrow it, before the run when even
    /// its least size (2 bytes a number) is over, else once drawn; nothing is written, an older page is kept.</summary>
    [Fact]
    public void A_page_over_the_size_limit_is_refused_naming_its_size_and_what_narrows_it()
    {
        string dir = Model();
        string path = Path.Combine(Dir, "big.html");
        File.WriteAllText(path, "older page");
        // 2 layers × 4 heads × n² numbers; at 2 bytes each at least 8·16·n² bytes.
        var (exit, _, err) = CliRunner.Run("model", "attention", "--model", dir, "--prompt", Prompt, "--layer", "all", "--html", path, "--max-page-mb", "0.0001");
        Assert.NotEqual(0, exit);
        Assert.Contains("--max-page-mb 0.0001: the attention page would be at least", err);
        Assert.Contains("(2 layers × 4 heads ×", err);
        Assert.Contains("narrow it with --layer, --head or a shorter prompt, or raise --max-page-mb", err.ReplaceLineEndings(" "));
        Assert.Equal("older page", File.ReadAllText(path));

        // Just over the least size but under the drawn page's: refused after drawing, with its exact size.
        using var model = ModelLoader.FromPretrained(dir);
        using var tokens = model.ToTokens(Prompt);
        long n = tokens.shape[1];
        var patterns = AttentionPage.Collect(model, tokens, [0, 1]);
        double mb = 1.5 * AttentionPage.MinimumBytes(2, 4, n) / (1024.0 * 1024);
        var e = Assert.Throws<SaeSharp.SaeSharpException>(() => AttentionPage.Write(path, patterns, "t", mb));
        Assert.Contains("the attention page would be ", e.Message);
        Assert.DoesNotContain("at least", e.Message);
        Assert.Equal("older page", File.ReadAllText(path));
        AttentionPage.Write(path, patterns, "t");   // the default limit takes it
        Assert.NotEqual("older page", File.ReadAllText(path));
        // GPT-2 small's 12 layers × 12 heads × 128 tokens fits the default limit even at 12 bytes a number.
        Assert.True(6 * AttentionPage.MinimumBytes(12, 12, 128) < AttentionPage.DefaultMaxMegabytes * 1024 * 1024);
    }

    /// <summary>circuitsvis <c>attention_patterns</c>: with "all heads" each token holds every head's value (what the held
    /// token attends to, or what attends to it) and is coloured by the heads' colours mixed by those values; a clicked token
    /// stays held while others are hovered; each layer's section works on its own layer.</summary>
    [Fact]
    public async Task In_chromium_all_heads_colour_the_tokens_by_every_head_and_a_clicked_token_is_held()
    {
        string dir = Model();
        string path = Path.Combine(Dir, "att2.html");
        IReadOnlyList<AttentionPatterns> layers;
        using (var model = ModelLoader.FromPretrained(dir))
        using (var tokens = model.ToTokens(Prompt))
        {
            layers = AttentionPage.Collect(model, tokens, [0, 1]);
            AttentionPage.Write(path, layers, "tiny: " + Prompt);
        }
        int n = layers[0].Tokens.Count;
        await using var browser = await DashboardBrowserTests.Launch(Path.Combine(Dir, "profile"));
        await using var page = await browser.NewPageAsync();
        var errors = new List<string>();
        page.PageError += (_, e) => errors.Add(e.Message);
        await page.GoToAsync(new Uri(path).AbsoluteUri);
        await page.WaitForSelectorAsync("section.layer:nth-of-type(2) .grid td.c");
        Assert.Equal(2, await page.EvaluateExpressionAsync<int>("document.querySelectorAll('section.layer').length"));

        // d3 category10's first four colours; white minus v·(255 − colour) per head, channel by channel.
        int[][] palette = [[0x1f, 0x77, 0xb4], [0xff, 0x7f, 0x0e], [0x2c, 0xa0, 0x2c], [0xd6, 0x27, 0x28]];
        static double Clamp(float v) => Math.Clamp(v, 0, 1);
        string Mix(float[] vs)
        {
            var c = new double[] { 255, 255, 255 };
            for (int h = 0; h < vs.Length; h++)
                for (int ch = 0; ch < 3; ch++) c[ch] -= Clamp(vs[h]) * (255 - palette[h][ch]);
            return $"rgb({string.Join(", ", c.Select(x => (int)Math.Round(Math.Max(0, x), MidpointRounding.AwayFromZero)))})";
        }
        async Task<float[]> Values(string section, int j) =>
            (await page.EvaluateExpressionAsync<string>($"document.querySelectorAll('{section} .tokens span')[{j}].dataset.values"))
                .Split(',').Select(v => (float)double.Parse(v, System.Globalization.CultureInfo.InvariantCulture)).ToArray();

        const string second = "section.layer:nth-of-type(2)";   // layer 1: the second section element
        await page.SelectAsync($"{second} select.pick", "all");
        await page.ClickAsync($"{second} .tokens span:nth-child(3)");           // hold token 2
        await page.HoverAsync($"{second} .tokens span:nth-child(5)");           // hovering another changes nothing
        Assert.Contains("(held", await page.EvaluateExpressionAsync<string>($"document.querySelector('{second} .info').textContent"));
        for (int j = 0; j < n; j++)
        {
            var expected = Enumerable.Range(0, 4).Select(h => layers[1].Patterns[h][2][j]).ToArray();
            Assert.Equal(expected, await Values(second, j));
            Assert.Equal(Mix(expected), await page.EvaluateExpressionAsync<string>($"document.querySelectorAll('{second} .tokens span')[{j}].style.background"));
        }
        // "attended by" with the token still held: what attends to token 2, pattern[h][q][2].
        await page.ClickAsync($"{second} input.mode[value=by]");
        for (int q = 0; q < n; q++)
            Assert.Equal(Enumerable.Range(0, 4).Select(h => layers[1].Patterns[h][q][2]).ToArray(), await Values(second, q));
        // Letting go: hovering token 4 shows what attends to it.
        await page.ClickAsync($"{second} .tokens span:nth-child(3)");
        await page.HoverAsync($"{second} .tokens span:nth-child(5)");
        Assert.Equal(Enumerable.Range(0, 4).Select(h => layers[1].Patterns[h][n - 1][4]).ToArray(), await Values(second, n - 1));
        // The first section is layer 0's, one head (the first by default): what the last token attends to.
        for (int j = 0; j < n; j++)
            Assert.Equal([layers[0].Patterns[0][n - 1][j]], await Values("section.layer:nth-of-type(1)", j));
        await page.ScreenshotAsync(Path.Combine(DashboardBrowserTests.ScreenshotDir(), "attention-page-all-heads.png"), new ScreenshotOptions { FullPage = true });
        Assert.Empty(errors);
    }
}
