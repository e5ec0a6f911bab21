using System.Globalization;
using System.Text.Json.Nodes;
using SaeSharp.IO;
using SaeSharp.Models;
using SaeSharp.Tests.Analysis;
using SaeSharp.Tests.Tokenizers;
using SaeSharp.Tokenizers;
using static TorchSharp.torch;

namespace SaeSharp.Tests.Cli;

/// <summary>
/// The tables of <c>sae eval</c>, <c>sae ablate</c>, <c>sae steer</c> and <c>sae attribute</c> in a pipe (a child process):
/// a title line, a header of column names, then rows with as many tab-separated fields; numbers that parse with the
/// invariant culture, percentages in the unit their name says (a <c>*_fraction</c> row the fraction, a "%" name the number
/// of percent) equal to the JSON output or values recomputed here; no box drawing anywhere.
/// </summary>
public sealed class PipeTableTests : IClassFixture<PipeTableTests.Fixture>
{
    /// <summary>The tiny word-level model and its embedding SAE (<see cref="AnalysisFixture"/>), and a temporary folder.</summary>
    public sealed class Fixture : IDisposable
    {
        internal AnalysisFixture Analysis { get; } = new();
        public string Dir { get; } = Directory.CreateTempSubdirectory("pipe-tables-").FullName;

        public void Dispose()
        {
            Analysis.Dispose();
            try { Directory.Delete(Dir, recursive: true); } catch (IOException) { /* best effort */ }
        }
    }

    private readonly Fixture _fx;
    public PipeTableTests(Fixture fx) => _fx = fx;

    private static readonly CultureInfo Inv = CultureInfo.InvariantCulture;

    /// <summary>Runs the CLI in a child process (stdout a pipe); its stdout lines, after checking it succeeded and that
    /// nothing it printed (stdout or stderr) draws a box.</summary>
    private static List<string> Run(params string[] args)
    {
        using var process = new CliProcess(args);
        int exit = process.WaitForExit(TimeSpan.FromMinutes(3));
        Assert.True(exit == 0, string.Join("\n", process.Lines));
        Assert.DoesNotContain(process.Lines, l => l.Any(c => c is >= '\u2500' and <= '\u257F'));
        return process.Output.ToList();
    }

    /// <summary>The rows of the table titled <paramref name="title"/>: its next line must be exactly
    /// <paramref name="header"/>, and the <paramref name="rows"/> lines after it each have the header's field count.</summary>
    private static List<string[]> Table(List<string> lines, string title, string[] header, int rows)
    {
        int at = lines.IndexOf(title);
        Assert.True(at >= 0, $"no title '{title}' in:\n{string.Join("\n", lines)}");
        Assert.Equal(string.Join('\t', header), lines[at + 1]);
        var table = lines.Skip(at + 2).Take(rows).Select(l => l.Split('\t')).ToList();
        Assert.Equal(rows, table.Count);
        Assert.All(table, r => Assert.Equal(header.Length, r.Length));
        return table;
    }

    private static double Num(string s) => double.Parse(s, NumberStyles.Float, Inv);

    private static string Value(List<string> lines, string name) =>
        lines.Single(l => l.StartsWith(name + "\t", StringComparison.Ordinal))[(name.Length + 1)..];

    /// <summary>On activations: 3 random rows through a BatchTopK SAE leave some of its 128 latents dead; alive_fraction
    /// and dead_fraction read back as the very doubles of the --json file, and as dead latents counted here from the
    /// encoded activations.</summary>
    [Fact]
    public void Eval_on_activations_prints_fractions_equal_to_its_json()
    {
        string acts = Path.Combine(_fx.Dir, "acts.safetensors"), json = Path.Combine(_fx.Dir, "eval.json");
        string sae = TestPaths.Data("dictionary_learning", "BatchTopKSAE");
        using var x = randn(3, 32, generator: new Generator(5));
        SafeTensors.Save(acts, new Dictionary<string, Tensor> { ["activations"] = x });
        var lines = Run("eval", "--sae", sae, "--activations", acts, "--json", json);
        var j = JsonNode.Parse(File.ReadAllText(json))!;
        double alive = Num(Value(lines, "alive_fraction")), dead = Num(Value(lines, "dead_fraction"));
        Assert.Equal(j["alive_fraction"]!.GetValue<double>(), alive);
        Assert.Equal(j["dead_fraction"]!.GetValue<double>(), dead);
        using var model = SaeSharp.Interop.SaeLoader.Load(sae);
        using var grad = no_grad();
        using var f = model.Encode(x);
        long deadLatents = f.ne(0).any(0).logical_not().sum().item<long>();
        Assert.True(deadLatents > 0 && deadLatents < 128, $"{deadLatents} dead latents: the test needs some dead and some alive");
        Assert.Equal(deadLatents / 128.0, dead, 12);
        Assert.Equal(1 - deadLatents / 128.0, alive, 12);
        Assert.Equal("3", Value(lines, "rows"));
    }

    /// <summary>Inside the model: "% alive over N tokens" and "% CE loss recovered" are the JSON's alive_fraction and
    /// ce_loss_score times 100 (read back exactly), dead_fraction the JSON's dead latents over d_sae, the four CE losses
    /// and the zero-ablated KL rows of their own, and the scores SAELens's formulas of those losses.</summary>
    [Fact]
    public void Eval_in_the_model_prints_percent_rows_as_percent_and_fraction_rows_as_fractions()
    {
        var a = _fx.Analysis;
        string json = Path.Combine(_fx.Dir, "eval-model.json");
        var lines = Run("eval", "--sae", a.SaeDir, "--model", a.ModelDir, "--dataset", a.DataPath, "--tokens", "256", "--context-size", "16", "--json", json);
        var j = JsonNode.Parse(File.ReadAllText(json))!;
        Assert.Contains($"metrics JSON: {json}", lines);                  // where the --json file went
        long tokens = j["token_stats"]!["total_tokens_eval_reconstruction"]!.GetValue<long>();
        Assert.Equal(j["sparsity"]!["alive_fraction"]!.GetValue<double>() * 100, Num(Value(lines, $"% alive over {tokens} tokens")));
        Assert.Equal(j["model_performance_preservation"]!["ce_loss_score"]!.GetValue<double>() * 100, Num(Value(lines, "% CE loss recovered (zero ablation)")));
        Assert.Equal(j["sparsity"]!["dead_latents"]!.GetValue<int>() / (double)AnalysisFixture.DSae, Num(Value(lines, "dead_fraction")), 12);
        var perf = j["model_performance_preservation"]!;
        Assert.Equal(perf["ce_loss_without_sae"]!.GetValue<double>(), Num(Value(lines, "ce loss clean")), 4);
        Assert.Equal(perf["ce_loss_with_sae"]!.GetValue<double>(), Num(Value(lines, "ce loss with SAE")), 4);
        Assert.Equal(perf["ce_loss_with_ablation"]!.GetValue<double>(), Num(Value(lines, "ce loss zero-ablated")), 4);
        double meanAblated = perf["ce_loss_with_mean_ablation"]!.GetValue<double>();
        Assert.Equal(meanAblated, Num(Value(lines, "ce loss mean-ablated")), 4);
        var kl = j["model_behavior_preservation"]!;
        Assert.Equal(kl["kl_div_with_ablation"]!.GetValue<double>(), Num(Value(lines, "kl div zero-ablated")), 4);
        // Both scores from the JSON's losses by SAELens's formulas: (ablated - with SAE) / (ablated - clean), and for KL
        // (ablated - with SAE) / ablated.
        double clean = perf["ce_loss_without_sae"]!.GetValue<double>(), withSae = perf["ce_loss_with_sae"]!.GetValue<double>();
        Assert.Equal((meanAblated - withSae) / (meanAblated - clean), Num(Value(lines, "% CE loss recovered (mean ablation)")) / 100, 10);
        double klZero = kl["kl_div_with_ablation"]!.GetValue<double>();
        Assert.Equal((klZero - kl["kl_div_with_sae"]!.GetValue<double>()) / klZero, kl["kl_div_score"]!.GetValue<double>(), 10);
    }

    /// <summary>sae eval --model with two --sae and --json: each SAE gets its own density histogram beside the JSON,
    /// <c>NAME_sae0_feature_density.png</c> and <c>NAME_sae1_...</c>, and the JSON is an array of one object per SAE; with
    /// --histogram H.png they are H_sae0.png and H_sae1.png. The per-token L0 histograms (<c>NAME_sae0_l0.png</c>,
    /// --l0-histogram L.png: L_sae0.png) follow the same rule.</summary>
    [Fact]
    public void Eval_of_two_saes_writes_a_histogram_for_each()
    {
        var a = _fx.Analysis;
        string json = Path.Combine(_fx.Dir, "two.json");
        var (exit, _, err) = CliRunner.Run("eval", "--sae", a.SaeDir, "--sae", a.SaeDir, "--model", a.ModelDir, "--dataset", a.DataPath,
            "--tokens", "64", "--context-size", "16", "--json", json);
        Assert.True(exit == 0, err);
        Assert.Equal(2, JsonNode.Parse(File.ReadAllText(json))!.AsArray().Count);
        Assert.True(File.Exists(Path.Combine(_fx.Dir, "two_sae0_feature_density.png")));
        Assert.True(File.Exists(Path.Combine(_fx.Dir, "two_sae1_feature_density.png")));
        Assert.False(File.Exists(Path.Combine(_fx.Dir, "two_feature_density.png")));
        // The per-token L0 histograms by the same rule.
        Assert.True(File.Exists(Path.Combine(_fx.Dir, "two_sae0_l0.png")));
        Assert.True(File.Exists(Path.Combine(_fx.Dir, "two_sae1_l0.png")));
        Assert.False(File.Exists(Path.Combine(_fx.Dir, "two_l0.png")));
        // Rows from prompts: each SAE's density vs consistent-activation-heuristic scatter, beside --json only.
        Assert.True(File.Exists(Path.Combine(_fx.Dir, "two_sae0_density_vs_cah.png")));
        Assert.True(File.Exists(Path.Combine(_fx.Dir, "two_sae1_density_vs_cah.png")));
        // --histogram given: its name with the same suffix (as --saebench-json), not the --json name.
        string png = Path.Combine(_fx.Dir, "dens.png");
        var given = CliRunner.Run("eval", "--sae", a.SaeDir, "--sae", a.SaeDir, "--model", a.ModelDir, "--dataset", a.DataPath,
            "--tokens", "64", "--context-size", "16", "--json", Path.Combine(_fx.Dir, "three.json"), "--histogram", png,
            "--l0-histogram", Path.Combine(_fx.Dir, "l0.png"));
        Assert.True(given.Exit == 0, given.Err);
        Assert.True(File.Exists(Path.Combine(_fx.Dir, "l0_sae0.png")));
        Assert.True(File.Exists(Path.Combine(_fx.Dir, "l0_sae1.png")));
        Assert.False(File.Exists(Path.Combine(_fx.Dir, "three_sae0_l0.png")));
        Assert.True(File.Exists(Path.Combine(_fx.Dir, "dens_sae0.png")));
        Assert.True(File.Exists(Path.Combine(_fx.Dir, "dens_sae1.png")));
        Assert.False(File.Exists(Path.Combine(_fx.Dir, "three_sae0_feature_density.png")));
    }

    /// <summary>sae ablate on one prompt: the per-position table has a row per token with the clean next-token loss
    /// recomputed here from the model's logits; the most-changed table's "clean %" is the top probability (times 100) at
    /// one of the positions; the summary rows are name/value lines.</summary>
    [Fact]
    public void Ablate_prints_its_three_tables_as_tab_separated_lines()
    {
        var a = _fx.Analysis;
        const string prompt = "the cat sat on the mat and the dog ran";
        var lines = Run("ablate", "--model", a.ModelDir, "--sae", a.SaeDir, "--features", "0,1,5", "--prompt", prompt, "--top", "4");
        var tok = Tokenizer.FromFolder(a.ModelDir);
        var ids = tok.EncodePrompt(prompt, prependBos: true);
        using var m = ModelLoader.FromPretrained(a.ModelDir);
        using var logProbs = m.Forward(tensor(ids).unsqueeze(0))[0].log_softmax(-1);
        using var probs = logProbs.exp();

        var positions = Table(lines, "per position", ["pos", "token", "next", "CE clean", "CE ablated", "ΔCE", "KL"], ids.Length);
        for (int p = 0; p < ids.Length; p++)
        {
            var row = positions[p];
            Assert.Equal(p, int.Parse(row[0], Inv));
            if (p + 1 == ids.Length) { Assert.Equal("", row[3]); continue; }
            Assert.Equal(-logProbs[p, ids[p + 1]].item<float>(), Num(row[3]), 3);
            Assert.Equal(Num(row[4]) - Num(row[3]), Num(row[5]), 3);
            Assert.True(Num(row[6]) >= 0);
        }

        var top = probs.max(-1).values.data<float>().ToArray();
        var most = Table(lines, "next-token predictions that change most", ["context", "clean top", "clean %", "ablated top", "ablated %", "KL"], 4);
        foreach (var row in most)
        {
            double clean = Num(row[2]), ablated = Num(row[4]);
            Assert.Contains(top, t => Math.Abs(t * 100.0 - clean) < 1e-3);
            Assert.InRange(ablated, 0, 100);
            Assert.True(Num(row[5]) >= 0);
        }
        // The most-changed rows are the positions of largest KL, largest first: the first is the per-position table's largest KL.
        var kls = most.Select(r => Num(r[5])).ToList();
        Assert.Equal(kls.OrderByDescending(k => k), kls);
        Assert.Equal(positions.Max(r => Num(r[6])), kls[0], 4);
        Assert.Equal(ids.Length.ToString(Inv), Value(lines, "positions"));
        double meanCe = Enumerable.Range(0, ids.Length - 1).Average(p => -(double)logProbs[p, ids[p + 1]].item<float>());
        Assert.Equal(meanCe, Num(Value(lines, "CE loss clean")), 3);
        // ΔCE loss is the ablated loss minus the clean one (positive: the ablation hurts), as in the per-position rows.
        double meanAblated = positions.Take(ids.Length - 1).Average(r => Num(r[4]));
        Assert.Equal(meanAblated, Num(Value(lines, "CE loss ablated")), 3);
        Assert.Equal(meanAblated - meanCe, Num(Value(lines, "ΔCE loss")), 3);
    }

    /// <summary>sae steer, greedy: a row per seed whose unsteered continuation is the library's greedy continuation of
    /// the same prompt, then the feature's top logit tokens with numbers in the logit column.</summary>
    [Fact]
    public void Steer_prints_its_continuations_and_logits_as_tab_separated_lines()
    {
        var a = _fx.Analysis;
        const string prompt = "the cat sat";
        var lines = Run("steer", "--model", a.ModelDir, "--sae", a.SaeDir, "--feature", "2", "--scale", "3", "--prompt", prompt,
            "--runs", "2", "--max-new-tokens", "5", "--temperature", "0");
        var tok = Tokenizer.FromFolder(a.ModelDir);
        var ids = tok.EncodePrompt(prompt, prependBos: true);
        using var m = ModelLoader.FromPretrained(a.ModelDir);
        using var g = m.Generate(tensor(ids).unsqueeze(0), 5, new GenerationOptions { EosTokenId = tok.EosTokenId });
        string expected = tok.Decode(g.Tokens[0].data<long>().Skip(ids.Length).Select(v => (int)v));

        Assert.Contains($"prompt: {prompt}", lines);
        var runs = Table(lines, "feature 2 × 3 at hook_embed", ["seed", "unsteered", "steered"], 2);
        Assert.Equal(["0", "1"], runs.Select(r => r[0]));
        Assert.All(runs, r => Assert.Equal(expected.Replace("\n", "\\n").Replace("\t", "\\t"), r[1]));
        var logits = Table(lines, "feature 2: top logit tokens", ["token", "logit"], 10);
        var values = logits.Select(r => Num(r[1])).ToList();
        Assert.Equal(values.OrderByDescending(v => v), values);
    }

    /// <summary>sae attribute: the top attributions table holds the --json file's top rows, field for field.</summary>
    [Fact]
    public void Attribute_prints_its_table_as_the_json_top_rows()
    {
        var a = _fx.Analysis;
        string json = Path.Combine(_fx.Dir, "attr.json");
        var lines = Run("attribute", "--model", a.ModelDir, "--sae", a.SaeDir, "--prompt", "the cat sat on the mat", "--metric", "loss",
            "--top", "5", "--json", json);
        var top = JsonNode.Parse(File.ReadAllText(json))!["top"]!.AsArray();
        string title = lines.Single(l => l.EndsWith(": top attributions", StringComparison.Ordinal));
        var rows = Table(lines, title, ["sae", "batch", "pos", "token", "feature", "activation", "attribution"], top.Count);
        for (int i = 0; i < top.Count; i++)
        {
            var e = top[i]!;
            Assert.Equal(e["sae"]!.GetValue<int>(), int.Parse(rows[i][0], Inv));
            Assert.Equal(e["batch"]!.GetValue<int>(), int.Parse(rows[i][1], Inv));
            Assert.Equal(e["position"]!.GetValue<int>(), int.Parse(rows[i][2], Inv));
            Assert.Equal(e["feature"]!.GetValue<int>(), int.Parse(rows[i][4], Inv));
            Assert.Equal(e["activation"]!.GetValue<double>(), Num(rows[i][5]), 4);
            Assert.Equal(e["attribution"]!.GetValue<double>(), Num(rows[i][6]), 4);
        }
    }
}
