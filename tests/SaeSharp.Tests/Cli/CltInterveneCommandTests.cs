using System.Globalization;
using SaeSharp.Interop;
using SaeSharp.Interventions;
using SaeSharp.IO;
using SaeSharp.Models;
using SaeSharp.Tests.Saes;
using static TorchSharp.torch;

namespace SaeSharp.Tests.Cli;

/// <summary><c>sae intervene</c> against <see cref="CltInterventions"/>, and <c>sae model run --sae CLT</c>'s pointer to it.</summary>
public class CltInterveneCommandTests : IDisposable
{
    private readonly string _dir = Directory.CreateTempSubdirectory("cli-cltinterv-").FullName;
    public void Dispose() => Directory.Delete(_dir, true);

    private string P(string name) => Path.Combine(_dir, name);

    private (string Model, Tensor Tokens) Setup()
    {
        var model = TinyModels.WriteGpt2(P("m"), seed: 3, nLayer: 2, nEmbd: 16, nHead: 4, vocab: 64);
        var r = CltReference.Random(2, 12, 16, 5, threshold: true, skip: true);
        r.ScaleThresholds(0.2);
        r.WriteCircuitTracerLn2(P("clt"));
        var tokens = tensor(new long[] { 5, 9, 2, 7, 7, 3 }).reshape(1, 6);
        SafeTensors.Save(P("one.safetensors"), new Dictionary<string, Tensor> { ["tokens"] = tokens });
        return (model, tokens);
    }

    /// <summary>The rows of the TSV table whose header line is <paramref name="header"/>.</summary>
    private static List<string[]> Table(string output, string header)
    {
        var lines = output.Split('\n').Select(l => l.TrimEnd('\r')).ToList();
        int at = lines.IndexOf(header);
        Assert.True(at >= 0, $"no table headed '{header}' in:\n{output}");
        return lines.Skip(at + 1).TakeWhile(l => l.Contains('\t', StringComparison.Ordinal) && !l.StartsWith("rank", StringComparison.Ordinal)).Select(l => l.Split('\t')).ToList();
    }

    [Theory]
    [InlineData(false)]
    [InlineData(true)]
    public void InterveneShowsTheLibrarysPredictionsBeforeAndAfter(bool direct)
    {
        var (model, tokens) = Setup();
        string[] extra = direct ? ["--direct-effects"] : [];
        var (exit, output, err) = CliRunner.Run(["intervene", "--model", model, "--sae", P("clt"), "--input", P("one.safetensors"),
            "--set", "0:3:4.5@2", "--set", "1:7:-2@4-", "--top", "5", .. extra]);
        Assert.True(exit == 0, err);

        using var m = ModelLoader.FromPretrained(model);
        using var clt = CrossLayerTranscoderLoader.Load(P("clt"));
        var options = new CltInterventionOptions { DirectEffects = direct };
        using var clean = CltInterventions.FeatureIntervention(m, clt, tokens, [], options);
        using var after = CltInterventions.FeatureIntervention(m, clt, tokens, [new(0, 2, 3, 4.5), new(1, 4, 7, -2, Onward: true)], options);
        var set = Table(output, "layer\tfeature\tposition\ttoken\tclean\tset");
        Assert.Equal(2, set.Count);
        Assert.Equal(["0", "3", "2", "2"], set[0].Take(4));
        Assert.Equal(clean.Activations[0, 2, 3].item<float>(), double.Parse(set[0][4], CultureInfo.InvariantCulture), 4);
        Assert.Equal(["1", "7", "4-", "", "", "-2.0000"], set[1]);
        var rows = Table(output, "rank\tclean\tp clean\tintervened\tp after");
        Assert.Equal(5, rows.Count);
        var (pc, ic) = softmax(clean.Logits[0, -1].to(ScalarType.Float64), 0).topk(5);
        var (pa, ia) = softmax(after.Logits[0, -1].to(ScalarType.Float64), 0).topk(5);
        for (int i = 0; i < 5; i++)
        {
            Assert.Equal(ic[i].item<long>().ToString(CultureInfo.InvariantCulture), rows[i][1]);
            Assert.Equal(pc[i].item<double>(), double.Parse(rows[i][2], CultureInfo.InvariantCulture), 4);
            Assert.Equal(ia[i].item<long>().ToString(CultureInfo.InvariantCulture), rows[i][3]);
            Assert.Equal(pa[i].item<double>(), double.Parse(rows[i][4], CultureInfo.InvariantCulture), 4);
        }
        Assert.True((after.Logits - clean.Logits).abs().max().item<float>() > 1e-3, "the interventions changed nothing");
    }

    [Fact]
    public void A_multiplier_sets_the_feature_to_that_multiple_of_its_clean_value_at_the_position()
    {
        var (model, tokens) = Setup();
        using var m = ModelLoader.FromPretrained(model);
        using var clt = CrossLayerTranscoderLoader.Load(P("clt"));
        using var clean = CltInterventions.FeatureIntervention(m, clt, tokens, []);
        // The most active layer-0 feature at position 2 (a zero clean value would make the multiple a no-op).
        int f = (int)clean.Activations[0, 2].argmax().item<long>();
        double a = clean.Activations[0, 2, f].to(ScalarType.Float64).item<double>();
        Assert.True(a > 0);
        var (exit, output, err) = CliRunner.Run("intervene", "--model", model, "--sae", P("clt"), "--input", P("one.safetensors"),
            "--set", $"0:{f}:x-2@2", "--top", "3");
        Assert.True(exit == 0, err);
        var set = Table(output, "layer\tfeature\tposition\ttoken\tclean\tset");
        Assert.Equal(a, double.Parse(set[0][4], CultureInfo.InvariantCulture), 4);
        Assert.Equal(-2 * a, double.Parse(set[0][5], CultureInfo.InvariantCulture), 4);
        using var after = CltInterventions.FeatureIntervention(m, clt, tokens, [new(0, 2, f, -2 * a)]);
        var (pa, ia) = softmax(after.Logits[0, -1].to(ScalarType.Float64), 0).topk(3);
        var rows = Table(output, "rank\tclean\tp clean\tintervened\tp after");
        for (int i = 0; i < 3; i++)
        {
            Assert.Equal(ia[i].item<long>().ToString(CultureInfo.InvariantCulture), rows[i][3]);
            Assert.Equal(pa[i].item<double>(), double.Parse(rows[i][4], CultureInfo.InvariantCulture), 4);
        }
        foreach (var bad in new[] { $"0:{f}:x2", $"0:{f}:x2@2-" })
        {
            var (code, _, error) = CliRunner.Run("intervene", "--model", model, "--sae", P("clt"), "--input", P("one.safetensors"), "--set", bad);
            Assert.NotEqual(0, code);
            Assert.Contains("xM multiplies the clean value at each position", error);
        }
    }

    [Fact]
    public void A_multiplier_over_a_list_of_positions_sets_each_position_to_that_multiple_of_its_own_clean_value()
    {
        var (model, tokens) = Setup();
        using var m = ModelLoader.FromPretrained(model);
        using var clt = CrossLayerTranscoderLoader.Load(P("clt"));
        using var clean = CltInterventions.FeatureIntervention(m, clt, tokens, []);
        // The feature active at most of the positions (nonzero at several of them, so the multiples differ).
        int[] at = [1, 3, 4, 5];
        var counts = clean.Activations.index_select(1, tensor(at.Select(p => (long)p).ToArray())).gt(0).sum(1);   // [L, F]
        int best = (int)counts.flatten().argmax().item<long>(), layer = best / (int)counts.shape[1], f = best % (int)counts.shape[1];
        var a = at.Select(p => clean.Activations[layer, p, f].to(ScalarType.Float64).item<double>()).ToArray();
        Assert.True(a.Count(v => v > 0) >= 2, "the feature is active at fewer than two of the positions");
        var (exit, output, err) = CliRunner.Run("intervene", "--model", model, "--sae", P("clt"), "--input", P("one.safetensors"),
            "--set", $"{layer}:{f}:x3@1,3-5", "--top", "3");
        Assert.True(exit == 0, err);
        var set = Table(output, "layer\tfeature\tposition\ttoken\tclean\tset");
        Assert.Equal(at.Select(p => p.ToString(CultureInfo.InvariantCulture)), set.Select(r => r[2]));
        for (int i = 0; i < at.Length; i++)
        {
            Assert.Equal(a[i], double.Parse(set[i][4], CultureInfo.InvariantCulture), 4);
            Assert.Equal(3 * a[i], double.Parse(set[i][5], CultureInfo.InvariantCulture), 4);
        }
        using var after = CltInterventions.FeatureIntervention(m, clt, tokens,
            CltFeatureIntervention.AtPositions(layer, f, at, p => 3 * clean.Activations[layer, p, f].to(ScalarType.Float64).item<double>()));
        var (pa, ia) = softmax(after.Logits[0, -1].to(ScalarType.Float64), 0).topk(3);
        var rows = Table(output, "rank\tclean\tp clean\tintervened\tp after");
        for (int i = 0; i < 3; i++)
        {
            Assert.Equal(ia[i].item<long>().ToString(CultureInfo.InvariantCulture), rows[i][3]);
            Assert.Equal(pa[i].item<double>(), double.Parse(rows[i][4], CultureInfo.InvariantCulture), 4);
        }
    }

    [Fact]
    public void Generation_stops_at_eos_as_sae_steer_and_circuit_tracers_generate_do()
    {
        // A random CLT over the built-in model (3 layers, d_model 128): the clean continuation is the model's own, which
        // ends a story with <|endoftext|>; the next story must not follow it.
        var r = CltReference.Random(3, 8, 128, 5, threshold: true, skip: false);
        r.ScaleThresholds(0.2);
        r.WriteCircuitTracerLn2(P("bclt"));
        var (exit, output, err) = CliRunner.Run("intervene", "--model", "builtin", "--sae", P("bclt"),
            "--prompt", "Sara has a white fox called Luna. The end", "--set", "0:1:0@1", "--generate", "12");
        Assert.True(exit == 0, err);
        var rows = output.Split('\n').Select(l => l.TrimEnd('\r').Split('\t')).Where(c => c.Length == 2 && c[0] is "clean" or "intervened").ToList();
        Assert.Equal(2, rows.Count);
        Assert.EndsWith("<|endoftext|>", rows[0][1]);
        Assert.Matches(@"note: clean: stopped at EOS after \d+ of 12 new tokens", err.ReplaceLineEndings(" "));
        Assert.Single(System.Text.RegularExpressions.Regex.Matches(rows[0][1], "<\\|endoftext\\|>"));
        var words = rows[1][1].Split(' ', StringSplitOptions.RemoveEmptyEntries);
        Assert.True(words[^1] == "<|endoftext|>" || !rows[1][1].Contains("<|endoftext|>", StringComparison.Ordinal), rows[1][1]);
    }

    /// <summary>A tiny GPT-2 (2 layers, d_model 16) with GPT-2's tokenizer, for --prompt and the continuations' text, and the CLT of <see cref="Setup"/>.</summary>
    private string SetupWithTokenizer()
    {
        Setup();
        string model = TinyModels.WriteGpt2(P("mt"), seed: 4, nLayer: 2, nEmbd: 16, nHead: 4, vocab: 50257, nPositions: 64);
        SaeSharp.Tests.Models.ModelTestBase.AddGpt2Tokenizer(model);
        return model;
    }

    private const long Eos = 50256;   // <|endoftext|>

    /// <summary>By hand: each step runs <paramref name="step"/> on the whole sequence so far and draws the next token from its
    /// last row by <see cref="Generation.Sample"/> with one generator seeded <c>sampling.Seed</c>, stopping at EOS; the new tokens.</summary>
    private static long[] HandSample(Tensor prompt, int n, GenerationOptions sampling, Func<Tensor, Tensor> step)
    {
        var seq = prompt.clone();
        using var gen = new Generator(sampling.Seed!.Value);
        for (int t = 0; t < n; t++)
        {
            using var logits = step(seq);
            // The penalties' token counts of the sequence so far.
            using var counts = zeros(1, logits.shape[^1]).scatter_add(1, seq, ones(seq.shape, dtype: ScalarType.Float32));
            using var drawn = Generation.Sample(logits[0, -1].unsqueeze(0), sampling, gen, counts);
            var longer = cat([seq, drawn.reshape(1, 1)], 1);
            seq.Dispose();
            seq = longer;
            if (drawn.item<long>() == Eos) break;
        }
        using (seq) return seq[0].narrow(0, prompt.shape[1], seq.shape[1] - prompt.shape[1]).data<long>().ToArray();
    }

    /// <summary>The continuation texts of the rows labelled <paramref name="run"/>, in order (one per prompt).</summary>
    internal static List<string> Rows(string stdout, string run) =>
        stdout.Split('\n').Select(l => l.TrimEnd('\r').Split('\t')).Where(c => c.Length == 2 && c[0] == run).Select(c => c[1]).ToList();

    [Fact]
    public void Sampled_generation_equals_a_hand_loop_of_whole_sequence_interventions_with_the_same_seed()
    {
        string model = SetupWithTokenizer();
        string prompt = "The quick brown fox";
        using var m = ModelLoader.FromPretrained(model);
        using var clt = CrossLayerTranscoderLoader.Load(P("clt"));
        var tok = SaeSharp.Tokenizers.Tokenizer.FromFolder(model);
        using var tokens = SaeSharp.Cli.Commands.InterventionCommands.PromptTokens(tok, prompt, true);
        string[] common = ["intervene", "--model", model, "--sae", P("clt"), "--prompt", prompt, "--top", "3", "--generate", "6"];
        (string Clean, string Intervened, string Stdout) Cli(params string[] args)
        {
            var (exit, stdout, err) = CliRunner.Run([.. common, .. args]);
            Assert.True(exit == 0, err + stdout);
            return (Rows(stdout, "clean").Single(), Rows(stdout, "intervened").Single(), stdout);
        }
        string Text(long[] ids) => tok.Decode(ids.Select(v => (int)v));

        // Nothing frozen: every step is the intervened whole-sequence run of prompt + generated[:t] (the open-ended setting
        // from position 3 on reaching each new token), the token drawn from a generator seeded 3; the clean continuation
        // draws from its own generator of the same seed.
        string[] edits = ["--set", "0:3:4.5@2", "--set", "1:7:-3@3-", "--no-freeze-attention"];
        var sampled = Cli([.. edits, "--temperature", "0.9", "--seed", "3"]);
        Assert.Contains("sampled (temperature 0.9, seed 3) continuation (up to 6 tokens, to EOS)", sampled.Stdout);
        var sampling = new GenerationOptions { Temperature = 0.9, Seed = 3 };
        var options = new CltInterventionOptions { FreezeAttention = false, ZeroBos = true };
        CltFeatureIntervention[] set = [new(0, 2, 3, 4.5), new(1, 3, 7, -3, Onward: true)];
        Assert.Equal(Text(HandSample(tokens, 6, sampling, seq => m.Forward(seq))), sampled.Clean);
        Assert.Equal(Text(HandSample(tokens, 6, sampling, seq =>
        {
            using var r = CltInterventions.FeatureIntervention(m, clt, seq, set, options);
            return r.Logits.clone();
        })), sampled.Intervened);
        Assert.NotEqual(sampled.Clean, sampled.Intervened);
        // Reproducible from the seed; another seed draws other tokens.
        Assert.Equal(sampled, Cli([.. edits, "--temperature", "0.9", "--seed", "3"]));
        Assert.NotEqual(sampled.Clean, Cli([.. edits, "--temperature", "0.9", "--seed", "4"]).Clean);

        // Greedy as the temperature goes to 0, and at top-k 1.
        var greedy = Cli(edits);
        Assert.Contains("greedy continuation", greedy.Stdout);
        Assert.NotEqual((greedy.Clean, greedy.Intervened), (sampled.Clean, sampled.Intervened));
        foreach (string[] limit in new[] { new[] { "--temperature", "1", "--top-k", "1", "--seed", "8" }, ["--temperature", "0.0001", "--seed", "8"] })
            Assert.Equal((greedy.Clean, greedy.Intervened), Cli([.. edits, .. limit]) is var l ? (l.Clean, l.Intervened) : default);

        // Penalties (greedy): the clean and the intervened continuation both penalised, as the hand loop penalises each step.
        var penalised = Cli([.. edits, "--repetition-penalty", "1.8", "--freq-penalty", "0.7"]);
        Assert.Contains("greedy (repetition penalty 1.8, frequency penalty 0.7) continuation", penalised.Stdout);
        var pen = new GenerationOptions { Seed = 0, RepetitionPenalty = 1.8, FreqPenalty = 0.7 };
        Assert.Equal(Text(HandSample(tokens, 6, pen, seq => m.Forward(seq))), penalised.Clean);
        Assert.Equal(Text(HandSample(tokens, 6, pen, seq =>
        {
            using var r = CltInterventions.FeatureIntervention(m, clt, seq, set, options);
            return r.Logits.clone();
        })), penalised.Intervened);
        Assert.NotEqual(greedy.Clean, penalised.Clean);

        // Features set to their own clean values (x1) change nothing: the two continuations draw the same numbers, so at
        // temperature 1.5 they sample the same tokens, with --seed and without (the seed drawn is shown).
        foreach (string[] seed in new[] { new[] { "--seed", "5" }, [] })
        {
            var zero = Cli(["--set", "0:3:x1@1,2", "--set", "1:5:x1@3", "--temperature", "1.5", .. seed]);
            Assert.Equal(zero.Clean, zero.Intervened);
            Assert.Matches(@"sampled \(temperature 1\.5, seed \d+\)", zero.Stdout);
        }
    }

    [Fact]
    public void Several_prompts_are_each_intervened_on_and_continued_as_alone()
    {
        string model = SetupWithTokenizer();
        string[] prompts = ["The quick brown fox", "Sara has a white fox called Luna"];
        // The layer-0 feature most active at position 1 of both prompts (its clean values differ between them).
        var tok = SaeSharp.Tokenizers.Tokenizer.FromFolder(model);
        using var m = ModelLoader.FromPretrained(model);
        using var clt = CrossLayerTranscoderLoader.Load(P("clt"));
        var at1 = prompts.Select(text =>
        {
            using var t = SaeSharp.Cli.Commands.InterventionCommands.PromptTokens(tok, text, true);
            using var clean = CltInterventions.FeatureIntervention(m, clt, t, []);
            return clean.Activations[0, 1].clone();
        }).ToList();
        int f = (int)minimum(at1[0], at1[1]).argmax().item<long>();
        Assert.True(minimum(at1[0], at1[1])[f].item<float>() > 0, "no layer-0 feature is active at position 1 of both prompts");
        // A multiple of the clean value (each prompt's own), a fixed position and an open-ended one; sampled from one seed.
        string[] flags = ["--model", model, "--sae", P("clt"), "--set", $"0:{f}:x2@1", "--set", "1:7:-3@2-", "--set", "1:2:1.5@4", "--top", "4",
            "--generate", "6", "--temperature", "0.8", "--seed", "9"];
        var (exit, both, err) = CliRunner.Run(["intervene", "--prompt", prompts[0], "--prompt", prompts[1], .. flags]);
        Assert.True(exit == 0, err + both);
        Assert.Contains("prompt 1: Sara has a white fox called Luna", both);
        Assert.Contains("prompt 1: \"Sara has a white fox called Luna\"", both);   // its continuations' table
        Assert.Contains("sampled (temperature 0.8, seed 9) continuations", both);
        var sets = Tables(both, "layer\tfeature\tposition\ttoken\tclean\tset");
        var nexts = Tables(both, "rank\tclean\tp clean\tintervened\tp after");
        Assert.Equal(2, sets.Count);
        Assert.Equal(2, nexts.Count);
        for (int i = 0; i < 2; i++)
        {
            var (code, alone, error) = CliRunner.Run(["intervene", "--prompt", prompts[i], .. flags]);
            Assert.True(code == 0, error + alone);
            Assert.Equal(Tables(alone, "layer\tfeature\tposition\ttoken\tclean\tset").Single(), sets[i]);
            Assert.Equal(Tables(alone, "rank\tclean\tp clean\tintervened\tp after").Single(), nexts[i]);
            Assert.Equal(Rows(alone, "clean").Single(), Rows(both, "clean")[i]);
            Assert.Equal(Rows(alone, "intervened").Single(), Rows(both, "intervened")[i]);
        }
        // The prompts' clean values differ, so each multiple is its own prompt's.
        Assert.NotEqual(sets[0][0][4], sets[1][0][4]);

        // A position beyond a shorter prompt is an error naming that prompt, before anything is shown.
        var (bad, stdout, e) = CliRunner.Run(["intervene", "--prompt", prompts[1], "--prompt", "Hi", .. flags]);
        Assert.NotEqual(0, bad);
        Assert.Contains("--set '1:2:1.5@4': position 4 is outside prompt 1 (\"Hi\"): it has 2 tokens (positions 0..1)", e.ReplaceLineEndings(" "));
        Assert.DoesNotContain("interventions", stdout);
    }

    /// <summary>Every TSV table headed <paramref name="header"/>, in order.</summary>
    internal static List<List<string[]>> Tables(string output, string header)
    {
        var lines = output.Split('\n').Select(l => l.TrimEnd('\r')).ToList();
        return lines.Select((l, i) => (l, i)).Where(x => x.l == header)
            .Select(x => lines.Skip(x.i + 1).TakeWhile(l => l.Contains('\t', StringComparison.Ordinal) && !l.StartsWith("rank", StringComparison.Ordinal)).Select(l => l.Split('\t')).ToList())
            .ToList();
    }

    [Fact]
    public void BadSettingsAndSaeCommandsOnACltAreNamed()
    {
        var (model, _) = Setup();
        string[] baseArgs = ["intervene", "--model", model, "--sae", P("clt"), "--input", P("one.safetensors")];
        var (exit, _, err) = CliRunner.Run([.. baseArgs, "--set", "0:3"]);
        Assert.NotEqual(0, exit);
        Assert.Contains("expected L:F:V", err);
        (exit, _, err) = CliRunner.Run([.. baseArgs, "--set", "0:3:1@x"]);
        Assert.NotEqual(0, exit);
        Assert.Contains("the position 'x' must be an integer P (negative: from the prompt's end, -1 its last token), a range A-B or P-", err);
        // A value or multiplier that is not a finite number is named as such (was the generic "expected L:F:V").
        foreach (var (spec, what, given) in new[] { ("0:3:NaN@2", "value", "NaN"), ("0:3:x-Infinity@2", "multiplier", "x-Infinity") })
        {
            (exit, _, err) = CliRunner.Run([.. baseArgs, "--set", spec]);
            Assert.NotEqual(0, exit);
            Assert.Contains($"--set '{spec}': the {what} must be a finite number, got {given}", err);
        }
        (exit, _, err) = CliRunner.Run([.. baseArgs, "--set", "0:3:1@4-2"]);
        Assert.NotEqual(0, exit);
        Assert.Contains("the range 4-2 is empty", err);
        (exit, _, err) = CliRunner.Run([.. baseArgs, "--set", "0:3:1@2,1-3"]);
        Assert.NotEqual(0, exit);
        Assert.Contains("position 2 is given twice", err);
        (exit, _, err) = CliRunner.Run([.. baseArgs, "--set", "0:3:x2@4-9"]);
        Assert.NotEqual(0, exit);
        Assert.Contains("the prompt has 6 tokens", err);
        (exit, _, err) = CliRunner.Run([.. baseArgs, "--set", "0:3:1@6"]);
        Assert.NotEqual(0, exit);
        Assert.Contains("--set '0:3:1@6': position 6 is outside the prompt: the prompt has 6 tokens (positions 0..5)", err.ReplaceLineEndings(" "));
        // Sampling options: refused without --generate and at temperature 0, by name.
        (exit, _, err) = CliRunner.Run([.. baseArgs, "--set", "0:3:1", "--temperature", "1"]);
        Assert.NotEqual(0, exit);
        Assert.Contains("--temperature: how --generate chooses the new tokens", err.ReplaceLineEndings(" "));
        (exit, _, err) = CliRunner.Run([.. baseArgs, "--set", "0:3:1", "--generate", "3", "--top-k", "2", "--seed", "1"]);
        Assert.NotEqual(0, exit);
        Assert.Contains("--top-k, --seed: sampling options; --temperature 0", err.ReplaceLineEndings(" "));
        (exit, _, err) = CliRunner.Run([.. baseArgs, "--set", "0:30:1"]);
        Assert.NotEqual(0, exit);
        Assert.Contains("feature 30 is outside 0..11", err);
        (exit, _, err) = CliRunner.Run("intervene", "--model", model, "--sae", P("nope"), "--input", P("one.safetensors"), "--set", "0:3:1");
        Assert.NotEqual(0, exit);
        Assert.Contains($"--sae '{P("nope")}': no such folder", err);
        // Echoed as written: no @ is every position, not "@0-".
        (exit, _, err) = CliRunner.Run([.. baseArgs, "--set", "5:3:1"]);
        Assert.NotEqual(0, exit);
        Assert.Contains("CLT intervention 5:3:1: layer 5 is outside 0..1", err);
        (exit, _, err) = CliRunner.Run([.. baseArgs, "--set", "0:3:1", "--constrained-layers", "1-0"]);
        Assert.NotEqual(0, exit);
        Assert.Contains("expected A-B", err);
        // Constrained layers always freeze the patterns (circuit-tracer's setup_intervention_with_freeze): an option that
        // would be ignored is refused.
        foreach (var constrainedArgs in new[] { new[] { "--direct-effects" }, ["--constrained-layers", "1-1"] })
        {
            (exit, _, err) = CliRunner.Run([.. baseArgs, "--set", "0:3:1", "--no-freeze-attention", .. constrainedArgs]);
            Assert.NotEqual(0, exit);
            Assert.Contains($"{constrainedArgs[0]}: constrained layers freeze the attention patterns", err.ReplaceLineEndings(" "));
        }
        (exit, _, err) = CliRunner.Run([.. baseArgs, "--set", "0:3:1", "--constrained-layers", "0-7"]);
        Assert.NotEqual(0, exit);
        Assert.Contains("--constrained-layers 0-7: the transcoders span layers 0-1", err);
        (exit, _, err) = CliRunner.Run(["model", "run", "--model", model, "--input", P("one.safetensors"), "--sae", P("clt"), "--out", P("o.safetensors")]);
        Assert.NotEqual(0, exit);
        Assert.Contains("sae intervene", err);
        Assert.False(File.Exists(P("o.safetensors")));
    }
}
