using SaeSharp.Interop;
using SaeSharp.Interventions;
using SaeSharp.IO;
using SaeSharp.Models;
using SaeSharp.Saes;
using SaeSharp.Tests.Interventions;
using SaeSharp.Tests.Models;
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
    private static (long[] Tokens, Tensor Logits) HandGreedy(HookedTransformer model, Tensor prompt, Func<Tensor, long, Tensor> edit)
    {
        var seq = prompt.clone();
        var steps = new List<Tensor>();
        using (no_grad())
            for (int t = 0; t < N; t++)
            {
                long len = seq.shape[1];
                using var logits = model.Run(seq, new RunOptions { Hooks = [(Hook, y => edit(y, len))] }).Logits!;
                var last = logits[0, -1].clone();
                steps.Add(last);
                long next = last.argmax().item<long>();
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
        var (modelDir, _) = TinyGpt2WithText();
        using (var s0 = InterventionTests.RandomSae(Hook, 16, 32, 5))
            SaeLensFormat.Save(s0, Sub("sae"));
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
        var (modelDir, _) = TinyGpt2WithText();
        using (var s0 = InterventionTests.RandomSae(Hook, 16, 32, 5))
            SaeLensFormat.Save(s0, Sub("sae"));
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
        Assert.Contains("feature 32 is out of range for an SAE with d_sae=32", Error("--sae", Sub("sae"), "--generate", "3", "--clamp", "32:1"));
        Assert.Contains($"--positions {p + 3}: the prompt ({p} tokens) and its continuation have {p + 3} tokens, so positions run 0..{p + 2}",
            Error("--sae", Sub("sae"), "--generate", "3", "--steer", "1:2", "--positions", $"{p + 3}"));
        Assert.Contains("blocks.5.hook_resid_post", Error("--sae", Sub("deep"), "--generate", "3"));
        // Beyond the model's context (64 positions): the generation fails before the prompt's run is written.
        Assert.Contains("exceeds the context length n_ctx=64", Error("--sae", Sub("sae"), "--generate", "70"));
        Assert.Contains("give --sae (a plain continuation: sae model generate)", Error("--generate", "3"));
        using (var two = tensor(new long[] { 5, 9, 2, 7 }).reshape(2, 2))
            SafeTensors.Save(Sub("two.safetensors"), new Dictionary<string, Tensor> { ["tokens"] = two });
        var (exit2, _, err2) = CliRunner.Run("model", "run", "--model", modelDir, "--sae", Sub("sae"), "--input", Sub("two.safetensors"), "--generate", "3", "--out", Sub("x.safetensors"));
        Assert.NotEqual(0, exit2);
        Assert.Contains("--generate continues one prompt, but the input 'tokens' has 2 rows", err2);
        // sae model generate points to it rather than ignoring --sae.
        var (exit3, _, err3) = CliRunner.Run("model", "generate", "--model", modelDir, "--prompt", prompt, "--sae", Sub("sae"));
        Assert.NotEqual(0, exit3);
        Assert.Contains("sae model run --model M --sae SAE --prompt TEXT --generate N", err3.ReplaceLineEndings(" "));
    }
}
