using SaeSharp.Interop;
using SaeSharp.Interventions;
using SaeSharp.IO;
using SaeSharp.Models;
using SaeSharp.Saes;
using SaeSharp.Tests.Interventions;
using SaeSharp.Tests.Models;
using SaeSharp.Cli.Commands;
using SaeSharp.Tokenizers;
using static TorchSharp.torch;

namespace SaeSharp.Tests.Cli;

/// <summary><c>sae model run --sae SAE --generate N</c> against a greedy loop written here in which every step is a
/// whole-sequence run of prompt + generated[:t] with the SAE's splice and edits written as plain forward hooks: the
/// command's continuations (tokens) and <see cref="HookedSaeTransformer.Generate"/>'s step logits (1e-4) equal the loop's.</summary>
public class SaeModelRunGenerateTests : ModelTestBase
{
    private const string Hook = "blocks.0.hook_resid_post";
    private const long Eos = 50256;   // <|endoftext|>
    private const int N = 6;

    /// <summary>f = ReLU((x − b_dec)·W_enc + b_enc), by hand.</summary>
    private static Tensor Encode(Sae sae, Tensor x) => (matmul(x - sae.BDec, sae.WEnc) + sae.BEnc).relu();

    /// <summary>x̂ = f·W_dec + b_dec, by hand.</summary>
    private static Tensor Decode(Sae sae, Tensor f) => matmul(f, sae.WDec) + sae.BDec;

    /// <summary>Greedy by hand: each step runs the whole sequence so far with <see cref="Hook"/> replaced by
    /// <paramref name="edit"/>(y, sequence length), takes the argmax of the last position, stops at EOS. Returns the new
    /// tokens and each step's last-position logits [steps, d_vocab].</summary>
    private static (long[] Tokens, Tensor Logits) HandGreedy(HookedTransformer model, Tensor prompt, Func<Tensor, long, Tensor> edit) =>
        HandGenerate(model, prompt, [(Hook, edit)]);

    /// <summary>As <see cref="HandGreedy"/> with every hook of <paramref name="hooks"/> (name, edit(y, sequence length)) on each
    /// whole-sequence run; with <paramref name="sampling"/> each step's token is drawn by <see cref="Generation.Sample"/> from
    /// one generator seeded with its seed (its penalties given the token counts of the sequence so far), else the argmax of
    /// the logits penalised by hand with <paramref name="penalties"/> (<see cref="GenerationPenaltyTests.HandPenalised"/>).</summary>
    private static (long[] Tokens, Tensor Logits) HandGenerate(HookedTransformer model, Tensor prompt,
        IReadOnlyList<(string Hook, Func<Tensor, long, Tensor> Edit)> hooks, GenerationOptions? sampling = null, int n = N,
        (double Repetition, double Frequency)? penalties = null)
    {
        var seq = prompt.clone();
        var steps = new List<Tensor>();
        using var gen = sampling is null ? null : new Generator(sampling.Seed!.Value);
        using (no_grad())
            for (int t = 0; t < n; t++)
            {
                long len = seq.shape[1];
                using var logits = model.Run(seq, new RunOptions { Hooks = hooks.Select(h => (h.Hook, (Func<Tensor, Tensor?>)(y => h.Edit(y, len)))).ToList() }).Logits!;
                var last = logits[0, -1].clone();
                steps.Add(last);
                long next;
                if (sampling is null && penalties is var (rep, freq))
                    next = GenerationPenaltyTests.ArgMax(GenerationPenaltyTests.HandPenalised(last.data<float>().ToArray(), seq[0].data<long>().ToArray(), rep, freq, 0));
                else if (sampling is null) next = last.argmax().item<long>();
                else
                {
                    using var counts = zeros(1, last.shape[0]).scatter_add(1, seq, ones(seq.shape, dtype: ScalarType.Float32));
                    using var drawn = Generation.Sample(last.unsqueeze(0), sampling, gen, counts);
                    next = drawn.item<long>();
                }
                var longer = cat([seq, tensor(new[] { next }).reshape(1, 1)], 1);
                seq.Dispose();
                seq = longer;
                if (next == Eos) break;
            }
        var all = stack(steps);
        foreach (var s in steps) s.Dispose();
        using (seq) return (seq[0].narrow(0, prompt.shape[1], seq.shape[1] - prompt.shape[1]).data<long>().ToArray(), all);
    }

    private static string Row(string stdout, string run) =>
        stdout.Split('\n').Select(l => l.TrimEnd('\r').Split('\t')).Single(c => c.Length == 2 && c[0] == run)[1];

    private static void Close(Tensor expected, Tensor actual, double tol, string what)
    {
        Assert.Equal(expected.shape, actual.shape);
        double diff = (expected.to(ScalarType.Float64) - actual.to(ScalarType.Float64)).abs().max().item<double>();
        Assert.True(diff < tol, $"{what}: max |diff| {diff}");
    }

    [Fact]
    public void Generate_with_an_sae_spliced_and_edited_equals_the_whole_sequence_run_at_every_step()
    {
        string modelDir = ModelWithSae();
        using var sae = SaeLensFormat.Load(Sub("sae"));
        sae.eval();
        using var model = ModelLoader.FromPretrained(modelDir);
        var tok = Tokenizer.FromFolder(modelDir);
        string prompt = "The quick brown fox";
        string[] common = ["model", "run", "--model", modelDir, "--sae", Sub("sae"), "--prompt", prompt, "--generate", $"{N}"];
        string Text(long[] ids) => tok.Decode(ids.Select(v => (int)v));

        // The clean continuation, and the plain splice (no edit, no error term): the hook replaced by x̂ at every step.
        var (exit, stdout, err) = CliRunner.Run([.. common, "--out", Sub("p.safetensors")]);
        Assert.True(exit == 0, err + stdout);
        Assert.Contains($"SAE spliced at {Hook} of ", stdout);
        using var tokens = SafeTensors.Load(Sub("p.safetensors"))["tokens"];
        long p = tokens.shape[1];
        var (cleanIds, cleanLogits) = HandGreedy(model, tokens, (y, _) => y.alias());
        using (cleanLogits) Assert.Equal(Text(cleanIds), Row(stdout, "clean"));
        var (splicedIds, splicedLogits) = HandGreedy(model, tokens, (y, _) => Decode(sae, Encode(sae, y)));
        using (splicedLogits) Assert.Equal(Text(splicedIds), Row(stdout, "spliced"));
        Assert.NotEqual(Row(stdout, "clean"), Row(stdout, "spliced"));

        // The prompt's busiest feature, for the ablation.
        int busiest;
        using (var cache = model.RunWithCache(tokens, [Hook]).Cache)
        using (var fp = Encode(sae, cache[Hook]))
            busiest = (int)fp.gt(0).sum([0, 1]).argmax().item<long>();

        // Each case: its flags, the library interventions the command stands for, and the hook written by hand.
        var cases = new List<(string Name, string[] Flags, bool ErrorTerm, Func<Intervention[]> Edits, Func<Tensor, long, Tensor> Hand)>
        {
            ("clamp, error term", ["--error-term", "--clamp", "7:20"], true, () => [new Clamp(sae, 7, 20)],
                (y, _) => y + (20 - Encode(sae, y)[.., .., 7]).unsqueeze(-1) * sae.WDec[7]),
            ("clamp", ["--clamp", "7:20"], false, () => [new Clamp(sae, 7, 20)],
                (y, _) => { var f = Encode(sae, y); f[.., .., 7] = tensor(20f); return Decode(sae, f); }),
            ("ablation, error term", ["--error-term", "--ablate", $"{busiest}"], true, () => [new Ablation(sae, [busiest])],
                (y, _) => y - Encode(sae, y)[.., .., busiest].unsqueeze(-1) * sae.WDec[busiest]),
            ("ablation", ["--ablate", $"{busiest}"], false, () => [new Ablation(sae, [busiest])],
                (y, _) => { var f = Encode(sae, y); f[.., .., busiest] = tensor(0f); return Decode(sae, f); }),
            // Steering at a new token's position (p + 1), which the prompt's saved run does not reach, on the clamped splice.
            ("clamp and steering at a new token", ["--clamp", "7:20", "--steer", "3:30", "--positions", $"{p + 1}"], false,
                () => [new Steering(sae, 3, 30) { Positions = [p + 1] }, new Clamp(sae, 7, 20)],
                (y, len) =>
                {
                    var f = Encode(sae, y);
                    f[.., .., 7] = tensor(20f);
                    var at = zeros(1, len, 1);
                    if (len > p + 1) at[0, p + 1, 0] = tensor(1f);
                    return Decode(sae, f) + at * (sae.WDec[3] * 30f);
                }),
            ("steering alone at a new token, error term", ["--error-term", "--steer", "3:30", "--positions", $"{p + 1}"], true,
                () => [new Steering(sae, 3, 30) { Positions = [p + 1] }],
                (y, len) =>
                {
                    var at = zeros(1, len, 1);
                    if (len > p + 1) at[0, p + 1, 0] = tensor(1f);
                    return y + at * (sae.WDec[3] * 30f);
                }),
        };
        foreach (var (name, flags, errorTerm, edits, hand) in cases)
        {
            (exit, stdout, err) = CliRunner.Run([.. common, .. flags, "--out", Sub("e.safetensors")]);
            Assert.True(exit == 0, name + ": " + err + stdout);
            var (ids, logits) = HandGreedy(model, tokens, hand);
            using (logits)
            {
                Assert.Equal(Text(ids), Row(stdout, "edited"));
                // The library generation the command runs (KV-cached), step by step: tokens and logits.
                var hooked = new HookedSaeTransformer(model);
                hooked.AddSae(sae, useErrorTerm: errorTerm);
                using var g = hooked.Generate(tokens, N, new GenerationOptions { EosTokenId = Eos, ReturnLogits = true }, edits());
                Assert.Equal(ids, g.Tokens[0].narrow(0, p, g.Tokens.shape[1] - p).data<long>().ToArray());
                Close(logits, g.Logits![0], 1e-4, name);
            }
            if (name.StartsWith("clamp", StringComparison.Ordinal)) Assert.NotEqual(Row(stdout, "clean"), Row(stdout, "edited"));
        }
        // The saved run of the steering case covers the prompt: the steering at p + 1 lies beyond it, so it is the error-term splice = clean.
        using (var saved = SafeTensors.Load(Sub("e.safetensors"))["logits"])
        using (var clean = model.Forward(tokens))
            Close(clean, saved, 1e-4, "saved prompt run");

        // No edit with the error term: the plain generation, logits included.
        (exit, stdout, err) = CliRunner.Run([.. common, "--error-term", "--out", Sub("k.safetensors")]);
        Assert.True(exit == 0, err + stdout);
        Assert.Equal(Row(stdout, "clean"), Row(stdout, "spliced"));
        Assert.Contains("(error term kept)", stdout);
        var kept = new HookedSaeTransformer(model);
        kept.AddSae(sae, useErrorTerm: true);
        using (var g = kept.Generate(tokens, N, new GenerationOptions { EosTokenId = Eos, ReturnLogits = true }))
        using (var plain = model.Generate(tokens, N, new GenerationOptions { EosTokenId = Eos, ReturnLogits = true }))
        {
            Assert.Equal(plain.Tokens.data<long>().ToArray(), g.Tokens.data<long>().ToArray());
            Close(plain.Logits!, g.Logits!, 1e-4, "error term, no edit");
        }
    }

    [Fact]
    public void Generate_with_an_sae_refuses_bad_input_by_name_and_writes_nothing()
    {
        string modelDir = ModelWithSae();
        using (var s1 = InterventionTests.RandomSae("blocks.5.hook_resid_post", 16, 32, 5))
            SaeLensFormat.Save(s1, Sub("deep"));
        string prompt = "The quick brown fox";
        string[] common = ["model", "run", "--model", modelDir, "--prompt", prompt, "--out", Sub("x.safetensors")];
        long p = Tokenizer.FromFolder(modelDir).EncodePrompt(prompt, true).Length;

        string Error(params string[] args)
        {
            var (exit, stdout, err) = CliRunner.Run([.. common, .. args]);
            Assert.True(exit != 0, stdout);
            Assert.False(File.Exists(Sub("x.safetensors")));
            return err.ReplaceLineEndings(" ");
        }
        // The refusal names the option and the value as typed (d_sae 32: features 0..31).
        Assert.Contains("--clamp 32:1: feature 32 is out of range for an SAE with d_sae=32", Error("--sae", Sub("sae"), "--generate", "3", "--clamp", "32:1"));
        Assert.Contains("--steer 40:2: feature 40 is out of range", Error("--sae", Sub("sae"), "--generate", "3", "--steer", "40:2"));
        Assert.Contains("--ablate 33: feature 33 is out of range", Error("--sae", Sub("sae"), "--generate", "3", "--ablate", "1,33"));
        Assert.Contains($"--positions {p + 3}: the prompt ({p} tokens) and its continuation have {p + 3} tokens, so positions run 0..{p + 2}",
            Error("--sae", Sub("sae"), "--generate", "3", "--steer", "1:2", "--positions", $"{p + 3}"));
        Assert.Contains("blocks.5.hook_resid_post", Error("--sae", Sub("deep"), "--generate", "3"));
        // Beyond the model's context (64 learned positions): refused naming --generate and how many fit, before the prompt's run is written.
        Assert.Contains($"--generate 70: the prompt's {p} tokens and 70 new ones exceed the context of 64 tokens", Error("--sae", Sub("sae"), "--generate", "70"));
        Assert.Contains("give --sae (a plain continuation: sae model generate)", Error("--generate", "3"));
        // Penalties: a repetition penalty > 0 and finite, a finite frequency penalty, both only with --generate.
        foreach (var bad in new[] { "0", "-1.5", "Infinity" })
            Assert.Contains($"--repetition-penalty {bad}: expected a finite number > 0", Error("--sae", Sub("sae"), "--generate", "3", "--repetition-penalty", bad));
        Assert.Contains("--freq-penalty NaN: expected a finite number", Error("--sae", Sub("sae"), "--generate", "3", "--freq-penalty", "NaN"));
        Assert.Contains("--freq-penalty, --repetition-penalty: how --generate chooses the new tokens",
            Error("--sae", Sub("sae"), "--freq-penalty", "0.5", "--repetition-penalty", "1.2"));
        // sae model generate points to it rather than ignoring --sae.
        var (exit3, _, err3) = CliRunner.Run("model", "generate", "--model", modelDir, "--prompt", prompt, "--sae", Sub("sae"));
        Assert.NotEqual(0, exit3);
        Assert.Contains("sae model run --model M --sae SAE --prompt TEXT --generate N", err3.ReplaceLineEndings(" "));
    }

    /// <summary>Every clean and edited row of <c>sae model run --generate</c>'s tables, in order (one table per prompt).</summary>
    private static List<string> Rows(string stdout, string run) =>
        stdout.Split('\n').Select(l => l.TrimEnd('\r').Split('\t')).Where(c => c.Length == 2 && c[0] == run).Select(c => c[1]).ToList();

    private const string Ln2 = "blocks.0.ln2.hook_normalized";
    private const string MlpOut = "blocks.0.hook_mlp_out";
    private const string Hook1 = "blocks.1.hook_resid_post";

    [Fact]
    public void Generate_with_mean_ablation_a_transcoder_and_several_saes_equals_the_whole_sequence_run_at_every_step()
    {
        string modelDir = ModelWithSae();
        using (var s1 = InterventionTests.RandomSae(Hook1, 16, 24, 6))
            SaeLensFormat.Save(s1, Sub("sae1"));
        using (var t0 = Hooks.TranscoderSpliceTests.RandomTranscoder(Ln2, MlpOut, 16, 16, 24, 7, dtype: ScalarType.Float32))
            SaeLensFormat.Save(t0, Sub("tc"));
        using var sae = SaeLensFormat.Load(Sub("sae"));
        using var sae1 = SaeLensFormat.Load(Sub("sae1"));
        using var tc = SaeLensFormat.Load(Sub("tc"));
        foreach (var s in new[] { sae, sae1, tc }) s.eval();
        using var model = ModelLoader.FromPretrained(modelDir);
        var tok = Tokenizer.FromFolder(modelDir);
        string prompt = "The quick brown fox";
        string Text(long[] ids) => tok.Decode(ids.Select(v => (int)v));
        using var tokens = InterventionCommands.PromptTokens(tok, prompt, true);

        // The prompt's busiest feature and its mean over the prompt's tokens, by hand.
        int busiest;
        float mean;
        using (var cache = model.RunWithCache(tokens, [Hook]).Cache)
        using (var fp = Encode(sae, cache[Hook]))
        {
            busiest = (int)fp.gt(0).sum([0, 1]).argmax().item<long>();
            mean = fp[.., .., busiest].mean().item<float>();
        }
        Assert.True(mean > 0);
        // The transcoder's features of the step's x_in, kept from its input hook for its output hook.
        Tensor? tcFeatures = null;
        Tensor EncodeTc(Tensor x) => (matmul(x, tc.WEnc) + tc.BEnc).relu();

        var cases = new List<(string Name, string[] Flags, Func<HookedSaeTransformer> Hooked, Func<Intervention[]> Edits, (string, Func<Tensor, long, Tensor>)[] Hand)>
        {
            ("mean ablation, error term", ["--sae", Sub("sae"), "--error-term", "--ablate", $"{busiest}", "--ablate-mode", "mean"],
                () => Hooked(model, (sae, true)), () => [new Ablation(sae, [busiest], MeansOf(sae.Cfg.DSae, busiest, mean))],
                [(Hook, (y, _) => y - (Encode(sae, y)[.., .., busiest] - mean).unsqueeze(-1) * sae.WDec[busiest])]),
            ("mean ablation", ["--sae", Sub("sae"), "--ablate", $"{busiest}", "--ablate-mode", "mean"],
                () => Hooked(model, (sae, false)), () => [new Ablation(sae, [busiest], MeansOf(sae.Cfg.DSae, busiest, mean))],
                [(Hook, (y, _) => { var f = Encode(sae, y); f[.., .., busiest] = tensor(mean); return Decode(sae, f); })]),
            // A transcoder: encodes ln2's output, replaces the MLP's output by its reconstruction, feature 3 clamped to 6.
            ("transcoder, clamp", ["--sae", Sub("tc"), "--clamp", "3:6"],
                () => Hooked(model, (tc, false)), () => [new Clamp(tc, 3, 6)],
                [(Ln2, (y, _) => { tcFeatures?.Dispose(); tcFeatures = EncodeTc(y); return y.alias(); }),
                 (MlpOut, (y, _) => { var f = tcFeatures!.clone(); f[.., .., 3] = tensor(6f); return matmul(f, tc.WDec) + tc.BDec; })]),
            // Two SAEs spliced at once, the second's feature 5 clamped to 10 (--sae-index 1).
            ("two SAEs, clamp on the second", ["--sae", Sub("sae"), "--sae", Sub("sae1"), "--clamp", "5:10", "--sae-index", "1"],
                () => Hooked(model, (sae, false), (sae1, false)), () => [new Clamp(sae1, 5, 10)],
                [(Hook, (y, _) => Decode(sae, Encode(sae, y))),
                 (Hook1, (y, _) => { var f = Encode(sae1, y); f[.., .., 5] = tensor(10f); return Decode(sae1, f); })]),
        };
        foreach (var (name, flags, hookedOf, edits, hand) in cases)
        {
            var (exit, stdout, err) = CliRunner.Run(["model", "run", "--model", modelDir, "--prompt", prompt, "--generate", $"{N}", .. flags, "--out", Sub("e.safetensors")]);
            Assert.True(exit == 0, name + ": " + err + stdout);
            var (ids, logits) = HandGenerate(model, tokens, hand);
            using (logits)
            {
                Assert.Equal(Text(ids), Row(stdout, "edited"));
                Assert.NotEqual(Row(stdout, "clean"), Row(stdout, "edited"));
                // The library generation the command runs (KV-cached), step by step: tokens and logits.
                using var g = hookedOf().Generate(tokens, N, new GenerationOptions { EosTokenId = Eos, ReturnLogits = true }, edits());
                Assert.Equal(ids, g.Tokens[0].narrow(0, tokens.shape[1], g.Tokens.shape[1] - tokens.shape[1]).data<long>().ToArray());
                Close(logits, g.Logits![0], 1e-4, name);
            }
        }
        tcFeatures?.Dispose();
    }

    private static HookedSaeTransformer Hooked(HookedTransformer model, params (Sae Sae, bool ErrorTerm)[] saes)
    {
        var hooked = new HookedSaeTransformer(model);
        foreach (var (s, e) in saes) hooked.AddSae(s, useErrorTerm: e);
        return hooked;
    }

    /// <summary>The tiny GPT-2 with text (its folder returned) and a random SAE at <see cref="Hook"/> saved in Sub("sae").</summary>
    private string ModelWithSae()
    {
        var (modelDir, _) = TinyGpt2WithText();
        using (var s0 = InterventionTests.RandomSae(Hook, 16, 32, 5))
            SaeLensFormat.Save(s0, Sub("sae"));
        return modelDir;
    }

    /// <summary>Runs <paramref name="aloneArgs"/> (item <paramref name="i"/> alone, saved to <paramref name="outPath"/>) and
    /// asserts its clean and edited rows and every saved tensor (<paramref name="keys"/>) equal item i of the several-item
    /// run (<paramref name="stdout"/>, <paramref name="both"/>'s "{key}.{i}"); returns the alone run's stdout and tensors.</summary>
    private static (string Stdout, Dictionary<string, Tensor> Saved) AssertEachAsAlone(string[] aloneArgs, string outPath, int i, string stdout,
        Dictionary<string, Tensor> both, string[] keys)
    {
        var (exit, alone, err) = CliRunner.Run(aloneArgs);
        Assert.True(exit == 0, err + alone);
        Assert.Equal(Row(alone, "clean"), Rows(stdout, "clean")[i]);
        Assert.Equal(Row(alone, "edited"), Rows(stdout, "edited")[i]);
        var one = SafeTensors.Load(outPath);
        Assert.Equal(keys, one.Keys.Order(StringComparer.Ordinal));
        foreach (var (key, t) in one)
        {
            Assert.Equal(t.shape, both[$"{key}.{i}"].shape);
            Assert.True(t.eq(both[$"{key}.{i}"]).all().item<bool>(), $"{key}.{i}");
        }
        return (alone, one);
    }

    private static Tensor MeansOf(long dSae, int feature, float mean)
    {
        var m = zeros(dSae);
        m[feature] = tensor(mean);
        return m;
    }

    [Fact]
    public void Sampled_generation_draws_the_same_numbers_clean_and_edited_and_equals_the_whole_sequence_run()
    {
        string modelDir = ModelWithSae();
        using var sae = SaeLensFormat.Load(Sub("sae"));
        sae.eval();
        using var model = ModelLoader.FromPretrained(modelDir);
        var tok = Tokenizer.FromFolder(modelDir);
        string prompt = "The quick brown fox";
        string Text(long[] ids) => tok.Decode(ids.Select(v => (int)v));
        using var tokens = InterventionCommands.PromptTokens(tok, prompt, true);
        string[] common = ["model", "run", "--model", modelDir, "--sae", Sub("sae"), "--prompt", prompt, "--generate", $"{N}", "--out", Sub("s.safetensors")];
        (string Clean, string Edited, string Stdout) Cli(params string[] args)
        {
            var (exit, stdout, err) = CliRunner.Run([.. common, .. args]);
            Assert.True(exit == 0, err + stdout);
            return (Row(stdout, "clean"), Rows(stdout, "edited").Concat(Rows(stdout, "spliced")).Single(), stdout);
        }

        // Clamp with the error term, sampled at temperature 0.9 from seed 3: each continuation is the whole-sequence run
        // of the sequence so far, its token drawn from its own generator seeded 3.
        var sampling = new GenerationOptions { Temperature = 0.9, Seed = 3 };
        var clamped = Cli("--error-term", "--clamp", "7:20", "--temperature", "0.9", "--seed", "3");
        Assert.Contains("sampled (temperature 0.9, seed 3) continuation", clamped.Stdout);
        var (cleanIds, l1) = HandGenerate(model, tokens, [(Hook, (y, _) => y.alias())], sampling);
        l1.Dispose();
        Assert.Equal(Text(cleanIds), clamped.Clean);
        var (editedIds, l2) = HandGenerate(model, tokens, [(Hook, (y, _) => y + (20 - Encode(sae, y)[.., .., 7]).unsqueeze(-1) * sae.WDec[7])], sampling);
        l2.Dispose();
        Assert.Equal(Text(editedIds), clamped.Edited);
        // Reproducible from the seed; another seed draws other tokens.
        Assert.Equal(clamped, Cli("--error-term", "--clamp", "7:20", "--temperature", "0.9", "--seed", "3"));
        Assert.NotEqual(clamped.Clean, Cli("--error-term", "--clamp", "7:20", "--temperature", "0.9", "--seed", "4").Clean);

        // Greedy as temperature goes to 0, and at top-k 1.
        var greedy = Cli("--error-term", "--clamp", "7:20");
        Assert.Contains("greedy continuation", greedy.Stdout);
        Assert.Equal((greedy.Clean, greedy.Edited), (Cli("--error-term", "--clamp", "7:20", "--temperature", "1", "--top-k", "1", "--seed", "8") is var k1 ? (k1.Clean, k1.Edited) : default));
        Assert.Equal((greedy.Clean, greedy.Edited), (Cli("--error-term", "--clamp", "7:20", "--temperature", "0.0001", "--seed", "8") is var t0 ? (t0.Clean, t0.Edited) : default));

        // A zero edit (steering by 0 adds exactly 0 to the raw activation): the two runs draw the same numbers, so at
        // temperature 1.5 (near-random tokens) they sample the same continuation, with --seed and without.
        foreach (string[] seed in new[] { new[] { "--seed", "5" }, [] })
        {
            var zero = Cli(["--steer", "3:0", "--temperature", "1.5", .. seed]);
            Assert.Equal(zero.Clean, zero.Edited);
            Assert.Matches(@"sampled \(temperature 1\.5, seed \d+\)", zero.Stdout);   // the seed drawn is shown
        }

        // Sampling options are refused at temperature 0 and without --generate, by name, writing nothing.
        foreach (var (args, expected) in new (string[], string)[]
        {
            ([.. common, "--seed", "3"], "--seed: sampling options; --temperature 0"),
            (["model", "run", "--model", modelDir, "--sae", Sub("sae"), "--prompt", prompt, "--temperature", "1", "--out", Sub("x.safetensors")], "--temperature: how --generate chooses"),
        })
        {
            var (exit, stdout, err) = CliRunner.Run(args);
            Assert.True(exit != 0, stdout);
            Assert.Contains(expected, err.ReplaceLineEndings(" "));
        }
        Assert.False(File.Exists(Sub("x.safetensors")));
    }

    [Fact]
    public void Several_prompts_are_each_continued_as_alone_and_saved_per_prompt()
    {
        string modelDir = ModelWithSae();
        var tok = Tokenizer.FromFolder(modelDir);
        string[] prompts = ["The quick brown fox", "Sara has a white fox called Luna"];
        // Mean ablation takes each prompt's own means; sampled from one seed.
        string[] flags = ["--sae", Sub("sae"), "--error-term", "--ablate", "3,7", "--ablate-mode", "mean", "--steer", "2:30",
            "--generate", $"{N}", "--temperature", "0.8", "--seed", "9", "--hooks", Hook];
        var (exit, stdout, err) = CliRunner.Run(["model", "run", "--model", modelDir, "--prompt", prompts[0], "--prompt", prompts[1], .. flags, "--out", Sub("both.safetensors")]);
        Assert.True(exit == 0, err + stdout);
        Assert.Contains("prompt 1: \"Sara has a white fox called Luna\"", stdout);
        var both = SafeTensors.Load(Sub("both.safetensors"));
        Assert.Equal(2 * 5, both.Count);
        for (int i = 0; i < 2; i++)
        {
            var (alone, one) = AssertEachAsAlone(["model", "run", "--model", modelDir, "--prompt", prompts[i], .. flags, "--out", Sub($"p{i}.safetensors")],
                Sub($"p{i}.safetensors"), i, stdout, both, [Hook, "generated_clean", "generated_edited", "logits", "tokens"]);
            // The saved continuation is the prompt and the tokens shown.
            long p = one["tokens"].shape[1];
            using var gen = one["generated_edited"];
            Assert.True(gen[0].narrow(0, 0, p).eq(one["tokens"][0]).all().item<bool>());
            Assert.Equal(Row(alone, "edited"), tok.Decode(gen[0].narrow(0, p, gen.shape[1] - p).data<long>().Select(v => (int)v)));
        }
    }

    [Fact]
    public void Penalised_generation_penalises_clean_and_edited_alike_and_equals_the_whole_sequence_run()
    {
        string modelDir = ModelWithSae();
        using var sae = SaeLensFormat.Load(Sub("sae"));
        sae.eval();
        using var model = ModelLoader.FromPretrained(modelDir);
        var tok = Tokenizer.FromFolder(modelDir);
        string prompt = "The quick brown fox";
        string Text(long[] ids) => tok.Decode(ids.Select(v => (int)v));
        using var tokens = InterventionCommands.PromptTokens(tok, prompt, true);
        string[] common = ["model", "run", "--model", modelDir, "--sae", Sub("sae"), "--prompt", prompt, "--generate", $"{N}", "--out", Sub("s.safetensors"),
            "--error-term", "--clamp", "7:20"];
        Func<Tensor, long, Tensor> clamp = (y, _) => y + (20 - Encode(sae, y)[.., .., 7]).unsqueeze(-1) * sae.WDec[7];
        (string Clean, string Edited, string Stdout) Cli(params string[] args)
        {
            var (exit, stdout, err) = CliRunner.Run([.. common, .. args]);
            Assert.True(exit == 0, err + stdout);
            return (Row(stdout, "clean"), Row(stdout, "edited"), stdout);
        }

        // Greedy: each step's argmax of the logits penalised by hand over the prompt and the tokens so far.
        var greedy = Cli("--repetition-penalty", "1.8", "--freq-penalty", "0.7");
        Assert.Contains("greedy (repetition penalty 1.8, frequency penalty 0.7) continuation", greedy.Stdout);
        var (cleanIds, l1) = HandGenerate(model, tokens, [(Hook, (y, _) => y.alias())], penalties: (1.8, 0.7));
        l1.Dispose();
        Assert.Equal(Text(cleanIds), greedy.Clean);
        var (editedIds, l2) = HandGenerate(model, tokens, [(Hook, clamp)], penalties: (1.8, 0.7));
        l2.Dispose();
        Assert.Equal(Text(editedIds), greedy.Edited);
        // The penalties change both continuations of this model.
        var plain = Cli();
        Assert.NotEqual(plain.Clean, greedy.Clean);
        Assert.NotEqual(plain.Edited, greedy.Edited);

        // Sampled (temperature 0.9, seed 3) with both penalties: each token drawn as the whole-sequence loop draws it.
        var sampling = new GenerationOptions { Temperature = 0.9, Seed = 3, RepetitionPenalty = 1.5, FreqPenalty = 0.3 };
        var sampled = Cli("--temperature", "0.9", "--seed", "3", "--repetition-penalty", "1.5", "--freq-penalty", "0.3");
        Assert.Contains("sampled (temperature 0.9, repetition penalty 1.5, frequency penalty 0.3, seed 3) continuation", sampled.Stdout);
        var (sc, l3) = HandGenerate(model, tokens, [(Hook, (y, _) => y.alias())], sampling);
        l3.Dispose();
        Assert.Equal(Text(sc), sampled.Clean);
        var (se, l4) = HandGenerate(model, tokens, [(Hook, clamp)], sampling);
        l4.Dispose();
        Assert.Equal(Text(se), sampled.Edited);
    }

    [Fact]
    public void Several_input_rows_are_each_continued_as_alone_and_saved_per_row()
    {
        string modelDir = ModelWithSae();
        var tok = Tokenizer.FromFolder(modelDir);
        using var a = InterventionCommands.PromptTokens(tok, "The quick brown fox jumps", true);
        using var b = InterventionCommands.PromptTokens(tok, "Sara has a white fox called Luna", true);
        long len = Math.Min(a.shape[1], b.shape[1]);
        using var rows = cat([a.narrow(1, 0, len), b.narrow(1, 0, len)], 0);
        SafeTensors.Save(Sub("two.safetensors"), new Dictionary<string, Tensor> { ["tokens"] = rows });
        for (int i = 0; i < 2; i++)
            SafeTensors.Save(Sub($"r{i}.safetensors"), new Dictionary<string, Tensor> { ["tokens"] = rows.narrow(0, i, 1).clone() });
        string[] flags = ["--sae", Sub("sae"), "--error-term", "--clamp", "7:20", "--generate", $"{N}", "--temperature", "0.8", "--seed", "9",
            "--repetition-penalty", "1.3", "--hooks", Hook];
        var (exit, stdout, err) = CliRunner.Run(["model", "run", "--model", modelDir, "--input", Sub("two.safetensors"), .. flags, "--out", Sub("both.safetensors")]);
        Assert.True(exit == 0, err + stdout);
        Assert.Contains($"row 1: \"{tok.Decode(rows[1].data<long>().Select(v => (int)v))}\"", stdout);
        var both = SafeTensors.Load(Sub("both.safetensors"));
        Assert.Equal(2 * 4, both.Count);
        for (int i = 0; i < 2; i++)
        {
            var (_, one) = AssertEachAsAlone(["model", "run", "--model", modelDir, "--input", Sub($"r{i}.safetensors"), .. flags, "--out", Sub($"p{i}.safetensors")],
                Sub($"p{i}.safetensors"), i, stdout, both, [Hook, "generated_clean", "generated_edited", "logits"]);
            Assert.True(one["generated_clean"][0].narrow(0, 0, len).eq(rows[i]).all().item<bool>());
        }
    }
}
