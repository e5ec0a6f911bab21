using System.Text.Json.Nodes;
using SaeSharp.Analysis;
using SaeSharp.Tests.Cli;

namespace SaeSharp.Tests.Analysis;

public class AnalysisCliTests : IDisposable
{
    private readonly AnalysisFixture _fx = new();

    public void Dispose() => _fx.Dispose();

    // sae inspect --stats of another SAE's `sae features` folder showed that SAE's densities beside this SAE's features
    // (the README walk: runs/builtin-sae, d_sae 1024, with the demo's d_sae-256 features folder).
    [Fact]
    public void Inspect_refuses_stats_of_another_sae_before_writing_anything()
    {
        string stats = Path.Combine(_fx.Dir, "other-features"), json = Path.Combine(_fx.Dir, "other.json");
        new FeatureReport
        {
            Source = new FeatureSource { Sae = "other-sae", DSae = AnalysisFixture.DSae + 4, Hook = "hook_embed" },
            Tokens = 10, Windows = 1,
            Features = [new FeatureStatistics { Feature = 0, Density = 0.5, MaxActivation = 1, MeanNonzero = 1, Firings = 5, TopExamples = [], Intervals = [], Histogram = new([], []) }],
        }.Save(stats);
        var (exit, stdout, err) = CliRunner.Run("inspect", "--sae", _fx.SaeDir, "--model", _fx.ModelDir, "--prompt", " cat sat", "--stats", stats, "--json", json);
        Assert.Equal(1, exit);
        Assert.Contains($"other-sae (d_sae {AnalysisFixture.DSae + 4}, hook hook_embed) is not of this SAE (d_sae {AnalysisFixture.DSae}", err);
        Assert.DoesNotContain("feature 0", stdout);
        Assert.False(File.Exists(json));
    }

    // walk11: --prompt "" showed a view of BOS alone (every feature's sum 0 below the BOS-only ones), as if the prompt were text.
    // (Whitespace is text to this byte-level tokenizer; the built-in word tokenizer gives no token for it: the same error.)
    [Fact]
    public void Inspect_refuses_a_prompt_without_tokens_naming_it_before_writing_anything()
    {
        const string empty = "";
        string json = Path.Combine(_fx.Dir, "empty.json");
        var (exit, stdout, err) = CliRunner.Run("inspect", "--sae", _fx.SaeDir, "--model", _fx.ModelDir, "--prompt", " cat sat", "--prompt", empty, "--json", json);
        Assert.Equal(1, exit);
        Assert.Contains($"the prompt \"{empty}\" has no tokens", err);
        Assert.DoesNotContain("feature", stdout);
        Assert.False(File.Exists(json));
    }

    [Fact]
    public void Inspect_json_has_the_closed_form_activations_of_a_constructed_prompt()
    {
        string json = Path.Combine(_fx.Dir, "view.json");
        var (exit, stdout, err) = CliRunner.Run("inspect", "--sae", _fx.SaeDir, "--model", _fx.ModelDir, "--prompt", " cat sat on the mat",
            "--top", "3", "--neurons", "--json", json);
        Assert.True(exit == 0, err);
        Assert.Contains("feature 0", stdout);
        var view = JsonNode.Parse(File.ReadAllText(json))!;
        var tokens = view["tokens"]!.AsArray().Select(t => (int)t!).ToArray();
        string[] words = ["Ġcat", "Ġsat", "Ġon", "Ġthe", "Ġmat"];
        Assert.Equal(new[] { _fx.Bos }.Concat(words.Select(w => _fx.Vocab[w])), tokens);          // BOS first (the SAE's prepend_bos)
        Assert.Equal(["<|endoftext|>", " cat", " sat", " on", " the", " mat"], view["token_strs"]!.AsArray().Select(t => (string)t!));
        var expected = _fx.ExpectedActs();
        // Ranking: activation summed over the prompt's tokens, BOS left out.
        var sums = Enumerable.Range(0, AnalysisFixture.DSae).Select(i => (I: i, S: tokens.Skip(1).Sum(t => expected[i, t])))
            .OrderByDescending(x => x.S).Take(3).ToList();
        var feats = view["features"]!.AsArray();
        Assert.Equal(sums.Select(x => x.I), feats.Select(f => (int)f!["feature"]!));
        Assert.Equal(0, (int)feats[0]!["feature"]!);                                             // the " cat" feature leads
        foreach (var (f, s) in feats.Zip(sums))
        {
            Assert.Equal(s.S, (double)f!["sum"]!, 4);
            var acts = f["acts"]!.AsArray().Select(a => (double)a!).ToArray();
            for (int p = 0; p < tokens.Length; p++) Assert.Equal(expected[s.I, tokens[p]], acts[p], 4);
        }
        // Neurons of hook_embed: the embedding's coordinates.
        var e = _fx.Embedding();
        var nsum = Enumerable.Range(0, 16).Select(k => (K: k, S: tokens.Skip(1).Sum(t => (double)e[t, k]))).OrderByDescending(x => x.S).Take(3).ToList();
        var neurons = view["neurons"]!.AsArray();
        Assert.Equal(nsum.Select(x => x.K), neurons.Select(n => (int)n!["neuron"]!));
        Assert.Equal(e[tokens[2], nsum[0].K], (double)neurons[0]!["acts"]![2]!, 5);

        // Two prompts without BOS: "prompts" holds each view (no BOS first), "shared" the features in the top lists of
        // both, "specific" each prompt's features in no other prompt's top list.
        string two = Path.Combine(_fx.Dir, "two.json");
        (exit, _, err) = CliRunner.Run("inspect", "--sae", _fx.SaeDir, "--model", _fx.ModelDir, "--prompt", " cat sat on", "--prompt", " the mat",
            "--top", "4", "--no-prepend-bos", "--json", two);
        Assert.True(exit == 0, err);
        var both = JsonNode.Parse(File.ReadAllText(two))!;
        var prompts = both["prompts"]!.AsArray();
        Assert.Equal(new[] { _fx.Vocab["Ġcat"], _fx.Vocab["Ġsat"], _fx.Vocab["Ġon"] }, prompts[0]!["tokens"]!.AsArray().Select(t => (int)t!));
        Assert.Equal(new[] { _fx.Vocab["Ġthe"], _fx.Vocab["Ġmat"] }, prompts[1]!["tokens"]!.AsArray().Select(t => (int)t!));
        var top = prompts.Select(v => v!["features"]!.AsArray().Select(f => (int)f!["feature"]!).ToHashSet()).ToList();
        var shared = top[0].Intersect(top[1]).Order().ToList();
        Assert.Equal(shared, both["shared"]!.AsArray().Select(i => (int)i!).Order());
        for (int i = 0; i < 2; i++)
            Assert.Equal(top[i].Except(top[1 - i]).Order(), both["specific"]![i]!.AsArray().Select(f => (int)f!).Order());
        Assert.NotEmpty(top[0].Except(top[1]));
    }

    [Fact]
    public void Features_then_dashboard_commands_write_the_documented_files()
    {
        string outDir = Path.Combine(_fx.Dir, "feat"), site = Path.Combine(_fx.Dir, "site");
        var (exit, stdout, err) = CliRunner.Run("features", "--sae", _fx.SaeDir, "--model", _fx.ModelDir, "--dataset", _fx.DataPath,
            "--tokens", "200", "--out", outDir, "--features", "0-4,9", "--top", "5", "--context", "4", "--batch-size", "2", "--png");
        Assert.True(exit == 0, err);
        Assert.Contains("6 features over 208 tokens", stdout);                          // ⌈200/16⌉ = 13 windows of 16
        var lines = File.ReadAllLines(Path.Combine(outDir, "features.jsonl"));
        Assert.Equal([0, 1, 2, 3, 4, 9], lines.Select(l => (int)JsonNode.Parse(l)!["feature"]!));
        var top = JsonNode.Parse(lines[0])!["top_examples"]!.AsArray();
        Assert.Equal(5, top.Count);
        Assert.True(top.Select(t => (double)t!["activation"]!).Zip(top.Skip(1).Select(t => (double)t!["activation"]!)).All(p => p.First >= p.Second));
        // --context 4: an example shows at most 4 tokens on each side of its own (windows of 16 allow more), all 4 when its
        // position leaves room for them.
        var examples = lines.SelectMany(l => JsonNode.Parse(l)!["top_examples"]!.AsArray()).ToList();
        Assert.All(examples, e => Assert.Equal(Math.Min((int)e!["position"]!, 4) + 1 + Math.Min(15 - (int)e["position"]!, 4), e["context_tokens"]!.AsArray().Count));
        Assert.True(File.Exists(Path.Combine(outDir, "summary.json")) && File.Exists(Path.Combine(outDir, "tokens.json")));
        // One activation-histogram PNG per feature that fired (all six here).
        var pngs = Directory.GetFiles(Path.Combine(outDir, "histograms"), "*.png");
        Assert.Equal(6, pngs.Length);
        using (var bmp = SkiaSharp.SKBitmap.Decode(Path.Combine(outDir, "histograms", "0.png")))
            Assert.Equal((640, 360), (bmp.Width, bmp.Height));
        File.Copy(Path.Combine(outDir, "histograms", "0.png"), Path.Combine(DashboardBrowserTests.ScreenshotDir(), "feature-0-histogram.png"), true);

        (exit, stdout, err) = CliRunner.Run("dashboard", "--features", outDir, "--out", site);
        Assert.True(exit == 0, err);
        Assert.True(File.Exists(Path.Combine(site, "index.html")));
        Assert.Equal(6, Directory.GetFiles(Path.Combine(site, "features"), "*.html").Length);
        Assert.DoesNotContain("http://", File.ReadAllText(Path.Combine(site, "index.html")));   // nothing fetched from a network

        // --exclude-special-tokens leaves out the BOS/EOS/pad positions of the 13 windows (counted here from their ids).
        var tok = SaeSharp.Tokenizers.Tokenizer.FromFolder(_fx.ModelDir);
        int special = SaeSharp.Pipelines.ModelPipeline.Windows(tok, _fx.DataPath, 16, prependBos: true).Take(13)
            .Sum(w => w.Count(id => id == tok.BosTokenId || id == tok.EosTokenId || id == tok.PadTokenId));
        Assert.True(special >= 13, $"{special} special tokens");
        (exit, stdout, err) = CliRunner.Run("features", "--sae", _fx.SaeDir, "--model", _fx.ModelDir, "--dataset", _fx.DataPath,
            "--tokens", "200", "--out", Path.Combine(_fx.Dir, "feat-nobos"), "--features", "0", "--exclude-special-tokens");
        Assert.True(exit == 0, err);
        Assert.Contains($"1 features over {208 - special} tokens", stdout);

        (exit, _, err) = CliRunner.Run("features", "--sae", _fx.SaeDir, "--model", _fx.ModelDir, "--dataset", _fx.DataPath, "--out", outDir, "--features", "3-40");
        Assert.Equal(1, exit);
        Assert.Contains("outside 0..11", err);
        (exit, _, err) = CliRunner.Run("dashboard", "--features", _fx.Dir, "--out", site);
        Assert.Equal(1, exit);
        Assert.Contains("no features.jsonl", err);
    }
}
