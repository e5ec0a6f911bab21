using System.Globalization;
using SaeSharp.Interop;
using SaeSharp.IO;
using SaeSharp.Models;
using SaeSharp.Saes;
using SaeSharp.Tests.Models;
using static TorchSharp.torch;

namespace SaeSharp.Tests.Cli;

/// <summary><c>sae model run --sae CROSSCODER</c> against splices written here with plain forward hooks: the error term gives
/// the clean logits back, without it each hook holds its slot's reconstruction, and latent clamps change each hook by
/// (v − f)·W_dec[latent, slot].</summary>
public class CrossCoderModelRunTests : ModelTestBase
{
    private const int D = 16;
    private static readonly string[] Hooks = ["blocks.0.hook_resid_post", "blocks.1.hook_resid_post"];

    private static CrossCoder RandomCrossCoder()
    {
        var cc = new CrossCoder(new CrossCoderConfig { ActivationDim = D, DictSize = 12, NumLayers = 2 });
        using (var g = new Generator(7)) cc.InitializeWeights(g, null);
        using (no_grad()) cc.Encoder.Bias.fill_(-0.1);
        cc.eval();
        return cc;
    }

    /// <summary>The activations at <paramref name="hooks"/> of each model's clean run, as crosscoder rows [tokens, L, d].</summary>
    private static Tensor CleanRows(IReadOnlyList<(HookedTransformer Model, string Hook)> slots, Tensor tokens) =>
        stack(slots.Select(s =>
        {
            var (logits, cache) = s.Model.RunWithCache(tokens, [s.Hook]);
            logits?.Dispose();
            using (cache) return cache[s.Hook].reshape(-1, D).clone();
        }).ToArray(), 1);

    private static Tensor Logits(HookedTransformer m, Tensor tokens, IEnumerable<(string, Func<Tensor, Tensor?>)> hooks) =>
        m.Run(tokens, new RunOptions { Hooks = hooks.ToList() }).Logits!;

    private static Dictionary<string, Tensor> Run(params string[] args)
    {
        var (exit, stdout, err) = CliRunner.Run(args);
        Assert.True(exit == 0, err + stdout);
        return SafeTensors.Load(args[Array.IndexOf(args, "--out") + 1]);
    }

    private static void Close(Tensor expected, Tensor actual, double tol, string what)
    {
        Assert.Equal(expected.shape, actual.shape);
        double diff = (expected.to(ScalarType.Float64) - actual.to(ScalarType.Float64)).abs().max().item<double>();
        Assert.True(diff < tol, $"{what}: max |diff| {diff}");
    }

    /// <summary>A model-diffing crosscoder: <see cref="RandomCrossCoder"/> saved as folder "diff" reading the base and the
    /// chat model of <see cref="ModelTestBase.TwoModelsOneTokenizer"/> at <c>Hooks[1]</c>, loaded back, with both models loaded.</summary>
    private sealed record DiffSetup(string Base, string Chat, string Hook, CrossCoder Cc, HookedTransformer BaseModel, HookedTransformer ChatModel) : IDisposable
    {
        public void Dispose()
        {
            Cc.Dispose();
            BaseModel.Dispose();
            ChatModel.Dispose();
        }
    }

    private DiffSetup DiffCrossCoder()
    {
        var (b, c, _) = TwoModelsOneTokenizer();
        string hook = Hooks[1];
        using (var cc0 = RandomCrossCoder())
            CrossCoderFormat.Save(cc0, Sub("diff"), new CrossCoderSources { HookNames = [hook, hook], ModelNames = [b, c] });
        return new DiffSetup(b, c, hook, CrossCoderFormat.Load(Sub("diff"), out _), ModelLoader.FromPretrained(b), ModelLoader.FromPretrained(c));
    }

    [Fact]
    public void A_crosscoder_over_two_hooks_is_spliced_clamped_and_ablated_at_both()
    {
        string modelDir = TinyModels.WriteGpt2(Sub("m"), seed: 4, nLayer: 2, nEmbd: D, nHead: 4, vocab: 50);
        using var cc = RandomCrossCoder();
        CrossCoderFormat.Save(cc, Sub("cc"), new CrossCoderSources { HookNames = Hooks, ModelNames = ["m"] });
        using var tokens = tensor(new long[] { 5, 9, 2, 7, 7, 3, 1, 4, 8, 8, 6, 0 }).reshape(2, 6);
        SafeTensors.Save(Sub("in.safetensors"), new Dictionary<string, Tensor> { ["tokens"] = tokens });
        using var model = ModelLoader.FromPretrained(modelDir);
        using var x = CleanRows([(model, Hooks[0]), (model, Hooks[1])], tokens);   // [12, 2, d]
        using var f = cc.Encode(x);
        using var xHat = cc.Decode(f);
        string[] common = ["model", "run", "--model", modelDir, "--input", Sub("in.safetensors"), "--sae", Sub("cc"), "--hooks", Hooks[0]];

        // With the error term and no edit: the clean run.
        using var clean = model.Forward(tokens);
        var kept = Run([.. common, "--error-term", "--out", Sub("kept.safetensors")]);
        Close(clean, kept["logits"], 1e-5, "error term");

        // Without it: each hook replaced by its slot's reconstruction, by hand.
        using var spliced = Logits(model, tokens, Hooks.Select((h, l) => (h, (Func<Tensor, Tensor?>)(y => xHat.select(1, l).reshape(y.shape).clone()))));
        var run = Run([.. common, "--out", Sub("spliced.safetensors")]);
        Close(spliced, run["logits"], 1e-5, "splice");
        Close(xHat.select(1, 0).reshape(2, 6, D), run[Hooks[0]], 1e-5, "slot 0's hook holds x̂");
        Assert.True((spliced - clean).abs().max().item<float>() > 1e-3, "the splice changed nothing");

        // Clamping the busiest latent to 0 with the error term: each hook changes by −f·W_dec[latent, slot].
        int latent = (int)f.gt(0).sum(0).argmax().item<long>();
        using var fi = f[.., latent].unsqueeze(1);
        Assert.True(fi.abs().max().item<float>() > 1e-3, "the latent fires");
        using var zeroed = Logits(model, tokens, Hooks.Select((h, l) => (h, (Func<Tensor, Tensor?>)(y => y - (fi * cc.Decoder.Weight[l, latent]).reshape(y.shape)))));
        var clamped = Run([.. common, "--error-term", "--clamp", $"{latent}:0", "--out", Sub("clamp0.safetensors")]);
        Close(zeroed, clamped["logits"], 1e-5, "clamp to 0");
        using var x0 = x.select(1, 0).reshape(2, 6, D);
        Close(x0 - (fi * cc.Decoder.Weight[0, latent]).reshape(2, 6, D), clamped[Hooks[0]], 1e-5, "slot 0's hook after the clamp");
        // --ablate of the same latent is the same edit.
        var ablated = Run([.. common, "--error-term", "--ablate", $"{latent}", "--out", Sub("ablate.safetensors")]);
        Close(zeroed, ablated["logits"], 1e-5, "ablate");

        // --steer I:A with the error term adds A·W_dec[l, I] at each slot's hook (positions 1 and 3 only with --positions).
        using var mask = zeros(1, 6, 1);
        mask[0, 1, 0] = tensor(1f);
        mask[0, 3, 0] = tensor(1f);
        using var steered = Logits(model, tokens, Hooks.Select((h, l) => (h, (Func<Tensor, Tensor?>)(y => y + mask * (cc.Decoder.Weight[l, 4] * 2.5f)))));
        var steer = Run([.. common, "--error-term", "--steer", "4:2.5", "--positions", "1,3", "--out", Sub("steer.safetensors")]);
        Close(steered, steer["logits"], 1e-5, "steer");
        // -3 counts from the end of the 6-token rows: position 3, the same run.
        var fromEnd = Run([.. common, "--error-term", "--steer", "4:2.5", "--positions", "1,-3", "--out", Sub("steer-end.safetensors")]);
        Assert.True(fromEnd["logits"].eq(steer["logits"]).all().item<bool>(), "--positions 1,-3 differs from 1,3");

        // Clamping a latent to its own value (one token, so one value) changes nothing.
        using var one = tensor(new long[] { 9 }).reshape(1, 1);
        SafeTensors.Save(Sub("one.safetensors"), new Dictionary<string, Tensor> { ["tokens"] = one });
        using var x1 = CleanRows([(model, Hooks[0]), (model, Hooks[1])], one);
        using var f1 = cc.Encode(x1);
        int own = (int)f1[0].argmax().item<long>();
        double value = f1[0, own].to(ScalarType.Float64).item<double>();
        Assert.True(value > 0);
        using var cleanOne = model.Forward(one);
        var same = Run("model", "run", "--model", modelDir, "--input", Sub("one.safetensors"), "--sae", Sub("cc"), "--error-term",
            "--clamp", $"{own}:{value.ToString("R", CultureInfo.InvariantCulture)}", "--out", Sub("own.safetensors"));
        Close(cleanOne, same["logits"], 1e-5, "clamp to its own value");

        // A crosscoder of one model at two hooks with --diff-model: its second slot would read the second model at the
        // first hook, so it is refused (in ModelPipeline.CrossCoderHooks, which eval, steer and ablate share too), and nothing is written.
        var (exit, _, err) = CliRunner.Run("model", "run", "--model", modelDir, "--diff-model", modelDir, "--input", Sub("one.safetensors"),
            "--sae", Sub("cc"), "--out", Sub("diff.safetensors"));
        Assert.NotEqual(0, exit);
        Assert.Contains("reads one model at 2 hooks (blocks.0.hook_resid_post, blocks.1.hook_resid_post), not 2 models at the same hooks: --diff-model does not apply", err);
        Assert.False(File.Exists(Sub("diff.safetensors")));
    }

    [Fact]
    public void A_model_diffing_crosscoder_runs_the_model_of_the_slot_encoded_from_both()
    {
        using var setup = DiffCrossCoder();
        var (b, c, hook, cc, baseModel, chatModel) = setup;
        string prompt = "The quick brown fox";
        string[] common = ["model", "run", "--model", b, "--diff-model", c, "--sae", Sub("diff"), "--prompt", prompt];
        var chat = Run([.. common, "--out", Sub("chat.safetensors")]);
        using var tokens = chat["tokens"];
        using var x = CleanRows([(baseModel, hook), (chatModel, hook)], tokens);
        using var xHat = cc.Decode(cc.Encode(x));
        // Default: the last slot's model (chat), its hook replaced by slot 1's x̂ (encoded from both models).
        using var handChat = Logits(chatModel, tokens, [(hook, y => xHat.select(1, 1).reshape(y.shape).clone())]);
        Close(handChat, chat["logits"], 1e-5, "chat spliced");
        var baseRun = Run([.. common, "--slot", "0", "--out", Sub("base.safetensors")]);
        using var handBase = Logits(baseModel, tokens, [(hook, y => xHat.select(1, 0).reshape(y.shape).clone())]);
        Close(handBase, baseRun["logits"], 1e-5, "base spliced");
        var kept = Run([.. common, "--error-term", "--out", Sub("kept.safetensors")]);
        using var cleanChat = chatModel.Forward(tokens);
        Close(cleanChat, kept["logits"], 1e-5, "error term");

        // Refusals: no --diff-model for a diffing crosscoder, crosscoder flags without one, a second --sae.
        var (exit, _, err) = CliRunner.Run("model", "run", "--model", b, "--sae", Sub("diff"), "--prompt", prompt, "--out", Sub("x.safetensors"));
        Assert.NotEqual(0, exit);
        Assert.Contains("--diff-model", err);
        (exit, _, err) = CliRunner.Run("model", "run", "--model", b, "--prompt", prompt, "--slot", "0", "--out", Sub("x.safetensors"));
        Assert.NotEqual(0, exit);
        Assert.Contains("for a crosscoder", err);
        (exit, _, err) = CliRunner.Run([.. common, "--sae", Sub("diff"), "--out", Sub("x.safetensors")]);
        Assert.NotEqual(0, exit);
        Assert.Contains("spliced alone", err);
        Assert.False(File.Exists(Sub("x.safetensors")));
    }
    /// <summary>Greedy continuation by hand, each step a whole-sequence run: the crosscoder encodes the clean rows of both
    /// models on the sequence so far, and <paramref name="hook"/> of the chat model gets <paramref name="edit"/>(y, f, seq).</summary>
    private static long[] HandGreedy(HookedTransformer baseModel, HookedTransformer chat, string hook, CrossCoder cc, Tensor prompt, int n,
        Func<Tensor, Tensor, long, Tensor> edit, GenerationOptions? sampling = null)
    {
        var seq = prompt.clone();
        // Sampling: each step's token drawn by Generation.Sample from one generator seeded with the options' seed.
        using var gen = sampling is null ? null : new Generator(sampling.Seed!.Value);
        for (int t = 0; t < n; t++)
        {
            using var x = CleanRows([(baseModel, hook), (chat, hook)], seq);
            using var f = cc.Encode(x);
            long len = seq.shape[1];
            using var logits = Logits(chat, seq, [(hook, y => edit(y, f, len))]);
            long next;
            if (sampling is null) next = logits[0, -1].argmax().item<long>();
            else using (var drawn = Generation.Sample(logits[0, -1].unsqueeze(0), sampling, gen)) next = drawn.item<long>();
            var longer = cat([seq, tensor(new[] { next }).reshape(1, 1)], 1);
            seq.Dispose();
            seq = longer;
            if (next == 50256) break;   // <|endoftext|>
        }
        using (seq) return seq[0].narrow(0, prompt.shape[1], seq.shape[1] - prompt.shape[1]).data<long>().ToArray();
    }

    private static string Row(string stdout, string run) =>
        stdout.Split('\n').Select(l => l.TrimEnd('\r').Split('\t')).Single(c => c.Length == 2 && c[0] == run)[1];

    [Fact]
    public void Generate_continues_the_chat_model_with_the_edits_of_the_whole_sequence_run_at_every_step()
    {
        using var setup = DiffCrossCoder();
        var (b, c, hook, cc, baseModel, chatModel) = setup;
        var tok = SaeSharp.Tokenizers.Tokenizer.FromFolder(c);
        string prompt = "The quick brown fox";
        string[] common = ["model", "run", "--model", b, "--diff-model", c, "--sae", Sub("diff"), "--prompt", prompt, "--generate", "6"];
        var (exit, stdout, err) = CliRunner.Run([.. common, "--out", Sub("p.safetensors")]);
        Assert.True(exit == 0, err + stdout);
        using var tokens = SafeTensors.Load(Sub("p.safetensors"))["tokens"];
        long p = tokens.shape[1];
        using var clean = chatModel.Generate(tokens, 6, new GenerationOptions { EosTokenId = 50256 });
        Assert.Equal(tok.Decode(clean.Tokens[0].narrow(0, p, clean.Tokens.shape[1] - p).data<long>().Select(v => (int)v)), Row(stdout, "clean"));
        // Without an edit or the error term: the chat hook replaced by slot 1's x̂ of both models' clean rows, at every step.
        var spliced = HandGreedy(baseModel, chatModel, hook, cc, tokens, 6, (y, f, _) => cc.Decode(f).select(1, 1).reshape(y.shape));
        Assert.Equal(tok.Decode(spliced.Select(v => (int)v)), Row(stdout, "spliced"));
        Assert.NotEqual(Row(stdout, "clean"), Row(stdout, "spliced"));
        string cleanText = Row(stdout, "clean");

        // Clamping the prompt's busiest latent to 0 with the error term: y − f·W_dec[latent, 1] at every step; and steering
        // latent 4 at a position of the new tokens (p + 1), which the prompt's saved run does not reach.
        using var x = CleanRows([(baseModel, hook), (chatModel, hook)], tokens);
        using var fp = cc.Encode(x);
        int latent = (int)fp.gt(0).sum(0).argmax().item<long>();
        (exit, stdout, err) = CliRunner.Run([.. common, "--error-term", "--clamp", $"{latent}:0", "--steer", "4:40", "--positions", $"{p + 1}", "--out", Sub("e.safetensors")]);
        Assert.True(exit == 0, err + stdout);
        var edited = HandGreedy(baseModel, chatModel, hook, cc, tokens, 6, (y, f, len) =>
        {
            var steer = zeros(1, len, 1);
            if (len > p + 1) steer[0, p + 1, 0] = tensor(1f);
            return y - (f[.., latent].unsqueeze(1) * cc.Decoder.Weight[1, latent]).reshape(y.shape) + steer * (cc.Decoder.Weight[1, 4] * 40f);
        });
        Assert.Equal(tok.Decode(edited.Select(v => (int)v)), Row(stdout, "edited"));
        Assert.NotEqual(cleanText, Row(stdout, "edited"));
        // The saved prompt run is the whole-sequence clamp (the steering position lies beyond it).
        using var handPrompt = Logits(chatModel, tokens, [(hook, y => y - (fp[.., latent].unsqueeze(1) * cc.Decoder.Weight[1, latent]).reshape(y.shape))]);
        using (var saved = SafeTensors.Load(Sub("e.safetensors"))["logits"]) Close(handPrompt, saved, 1e-5, "saved prompt run");

        // Refusals, each named, nothing written: a position beyond the prompt and its continuation, a slot out of range.
        (exit, _, err) = CliRunner.Run([.. common, "--steer", "4:3", "--positions", $"{p + 6}", "--out", Sub("x.safetensors")]);
        Assert.NotEqual(0, exit);
        Assert.Contains($"--positions {p + 6}: the prompt ({p} tokens) and its continuation have {p + 6} tokens, so positions run 0..{p + 5}", err);
        (exit, _, err) = CliRunner.Run([.. common, "--slot", "2", "--out", Sub("x.safetensors")]);
        Assert.NotEqual(0, exit);
        Assert.Contains("--slot 2: give 0..1", err);
        using var two = tensor(new long[] { 5, 9, 2, 7 }).reshape(2, 2);
        SafeTensors.Save(Sub("two.safetensors"), new Dictionary<string, Tensor> { ["tokens"] = two });
        // Several --input rows: each continued as it is alone (as SaeModelRunGenerateTests checks for an SAE), keys ending in the row.
        string[] rowArgs = ["model", "run", "--model", b, "--diff-model", c, "--sae", Sub("diff"), "--clamp", "4:3", "--generate", "3"];
        (exit, var rowsOut, err) = CliRunner.Run([.. rowArgs, "--input", Sub("two.safetensors"), "--out", Sub("rows.safetensors")]);
        Assert.True(exit == 0, err);
        Assert.Contains("row 1: ", rowsOut);
        var both = SafeTensors.Load(Sub("rows.safetensors"));
        for (int i = 0; i < 2; i++)
        {
            using (var row = two.narrow(0, i, 1).clone())
                SafeTensors.Save(Sub($"row{i}.safetensors"), new Dictionary<string, Tensor> { ["tokens"] = row });
            (exit, _, err) = CliRunner.Run([.. rowArgs, "--input", Sub($"row{i}.safetensors"), "--out", Sub($"row{i}.out.safetensors")]);
            Assert.True(exit == 0, err);
            foreach (var (key, t) in SafeTensors.Load(Sub($"row{i}.out.safetensors")))
                Assert.True(t.shape.SequenceEqual(both[$"{key}.{i}"].shape) && t.eq(both[$"{key}.{i}"]).all().item<bool>(), $"{key}.{i}");
        }
        // Beyond the models' context (64 positions): the generation fails before the prompt's run is written.
        (exit, _, err) = CliRunner.Run([.. common[..^1], "70", "--out", Sub("x.safetensors")]);
        Assert.NotEqual(0, exit);
        Assert.Contains("--generate 70: the prompt's 5 tokens and 70 new ones exceed the context of 64 tokens", err);
        Assert.Contains("(learned positions)", err);
        Assert.False(File.Exists(Sub("x.safetensors")));
    }

    [Fact]
    public void Sampled_generation_and_several_prompts_with_a_crosscoder()
    {
        using var setup = DiffCrossCoder();
        var (b, c, hook, cc, baseModel, chatModel) = setup;
        var tok = SaeSharp.Tokenizers.Tokenizer.FromFolder(c);
        string[] prompts = ["The quick brown fox", "Sara has a white fox"];
        string[] common = ["model", "run", "--model", b, "--diff-model", c, "--sae", Sub("diff"), "--generate", "6"];
        List<string> Rows(string stdout, string run) =>
            stdout.Split('\n').Select(l => l.TrimEnd('\r').Split('\t')).Where(r => r.Length == 2 && r[0] == run).Select(r => r[1]).ToList();

        // Latent 2 clamped to 3 with the error term, sampled at temperature 0.9 from seed 3: both continuations equal the
        // whole-sequence runs of the sequence so far, each drawing from its own generator seeded 3.
        var sampling = new GenerationOptions { Temperature = 0.9, Seed = 3 };
        var (exit, stdout, err) = CliRunner.Run([.. common, "--prompt", prompts[0], "--error-term", "--clamp", "2:3", "--temperature", "0.9", "--seed", "3", "--out", Sub("s.safetensors")]);
        Assert.True(exit == 0, err + stdout);
        Assert.Contains("sampled (temperature 0.9, seed 3) continuation", stdout);
        using var tokens = SafeTensors.Load(Sub("s.safetensors"))["tokens"];
        var clean = HandGreedy(baseModel, chatModel, hook, cc, tokens, 6, (y, _, _) => y.alias(), sampling);
        Assert.Equal(tok.Decode(clean.Select(v => (int)v)), Row(stdout, "clean"));
        var edited = HandGreedy(baseModel, chatModel, hook, cc, tokens, 6,
            (y, f, _) => y + ((3 - f[.., 2]).unsqueeze(1) * cc.Decoder.Weight[1, 2]).reshape(y.shape), sampling);
        Assert.Equal(tok.Decode(edited.Select(v => (int)v)), Row(stdout, "edited"));

        // No edit with the error term writes D(f) − D(f) = 0: both runs draw the same numbers and sample the same continuation.
        (exit, stdout, err) = CliRunner.Run([.. common, "--prompt", prompts[0], "--error-term", "--temperature", "1.5", "--seed", "5", "--out", Sub("z.safetensors")]);
        Assert.True(exit == 0, err + stdout);
        Assert.Equal(Row(stdout, "clean"), Row(stdout, "spliced"));

        // Two prompts: each continued (and mean-ablated with its own means) as alone, saved with the suffixes .0 and .1.
        string[] flags = ["--error-term", "--ablate", "2,5", "--ablate-mode", "mean", "--temperature", "0.8", "--seed", "9"];
        (exit, stdout, err) = CliRunner.Run([.. common, "--prompt", prompts[0], "--prompt", prompts[1], .. flags, "--out", Sub("both.safetensors")]);
        Assert.True(exit == 0, err + stdout);
        var both = SafeTensors.Load(Sub("both.safetensors"));
        Assert.Equal(8, both.Count);
        for (int i = 0; i < 2; i++)
        {
            (exit, var alone, err) = CliRunner.Run([.. common, "--prompt", prompts[i], .. flags, "--out", Sub($"p{i}.safetensors")]);
            Assert.True(exit == 0, err + alone);
            Assert.Equal(Row(alone, "clean"), Rows(stdout, "clean")[i]);
            Assert.Equal(Row(alone, "edited"), Rows(stdout, "edited")[i]);
            foreach (var (key, t) in SafeTensors.Load(Sub($"p{i}.safetensors")))
                Assert.True(t.shape.SequenceEqual(both[$"{key}.{i}"].shape) && t.eq(both[$"{key}.{i}"]).all().item<bool>(), $"{key}.{i}");
        }
    }
}
